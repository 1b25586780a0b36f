#!/bin/sh
# The numerics guard: digests of short tiny-preset runs (1 rank, 2 ranks, and
# 2 ranks resumed on 1) must equal the ones recorded before any change to the
# numerics path. A digest depends on the library of the matrix products
# (train.cpu_gemm) and the kernel it runs, so the recorded values are keyed
# by both: OpenBLAS's by `openblas_get_corename()` alone ("SkylakeX"),
# oneDNN's by its ISA and OpenBLAS's kernel, which still runs attention's
# products ("onednn:avx512_core_bf16/Cooperlake"). When this machine's key
# has no record, the runs are made under OPENBLAS_CORETYPE=Haswell (and
# DNNL_MAX_CPU_ISA=AVX2 for oneDNN), which every x86-64-v3 machine (what the
# build targets) can run, and compared with that record: every x86-64
# machine checks the numerics. Only a machine that cannot do that reports
# SKIP; oneDNN's runs are made where oneDNN loads.
# Record this machine's digests (on a tree whose numerics are trusted):
#   sh tests/cli/cli_golden.sh --record >> tests/cli/golden.txt
#   (GOLDEN_FALLBACK=1 records the Haswell / AVX2 keys instead; GOLDEN_ONLY=onednn
#   runs one library only)
# shellcheck disable=SC2086
# module: model backend train
. tests/cli/lib.sh
S=$SPOTRAIN
GOLDEN=$PWD/tests/cli/golden.txt
RECORD=${1:-}
cd "$T_TMP" || exit 1
F="--set model.preset=tiny --set train.global_batch=16 --set train.micro_batch=4 --set train.val_every=0 \
--set checkpoint.interval_steps=10 --set train.threads=2 --set train.log_every=1000 --quiet"
digest() { t_digest "$1"; }
have_mpi=0
command -v mpirun >/dev/null 2>&1 && "$S" --version | grep -q "mpi: yes" && have_mpi=1
# key LIB: the golden.txt key of LIB's runs under the present environment.
key() {
    core=$("$S" --version | sed -n 's/.*cpu (OpenBLAS \([^)]*\)).*/\1/p')
    if [ "$1" = openblas ]; then echo "$core"; return; fi
    isa=$("$S" --version | sed -n "s/^cpu_gemm:.* $1 [0-9.]* \([A-Za-z0-9_]*\).*/\1/p")
    [ -n "$isa" ] && echo "$1:$isa/$core"
}
recorded() { awk -v k="$1" '$1 == k { f = 1 } END { exit !f }' "$GOLDEN"; }
check() {
    want=$(awk -v k="$k" -v n="$1" '$1 == k && $2 == n { print $3, $4, $5 }' "$GOLDEN")
    if [ -z "$want" ]; then
        echo "SKIP golden $1: no digests recorded for '$k' (record them with --record on a trusted tree)"
    elif [ "$want" = "$2" ]; then
        t_ok "golden $1 ($k): $2"
    else
        t_bad "golden $1 ($k)" "got '$2', recorded '$want'"
    fi
}
# golden LIB FULL: LIB's runs (FULL=1: with the resume and the chunked
# collectives) checked against, or recorded as, LIB's key.
golden() {
    lib=$1 full=$2
    export SPOTRAIN_CPU_GEMM="$lib"
    unset OPENBLAS_CORETYPE DNNL_MAX_CPU_ISA
    k=$(key "$lib")
    # A key with no record: Haswell's / AVX2's instead (see the top).
    if { [ "${GOLDEN_FALLBACK:-}" = 1 ] || { [ "$RECORD" != --record ] && ! recorded "$k"; }; } &&
       [ "$(uname -m)" = x86_64 ]; then
        echo "golden: no digests recorded for '$k'; running under OPENBLAS_CORETYPE=Haswell DNNL_MAX_CPU_ISA=AVX2"
        own=$k
        export OPENBLAS_CORETYPE=Haswell DNNL_MAX_CPU_ISA=AVX2
        k=$(key "$lib")
        case $k in Haswell | "$lib:avx2/Haswell") ;;
            *) t_bad "golden: the Haswell / AVX2 kernels are honoured on this '$own' machine" "got '$k'" ;; esac
    fi
    rm -rf one two res chunked
    "$S" train /dev/null $F --set train.max_steps=50 --set train.run_dir=one >/dev/null 2>&1
    got_one=$(digest one/ckpt/step-00000050)
    got_two="" got_resume="" got_chunked=""
    if [ $have_mpi = 1 ]; then
        mpirun -np 2 "$S" train /dev/null $F --set train.max_steps=50 --set train.run_dir=two >/dev/null 2>&1
        got_two=$(digest two/ckpt/step-00000050)
    fi
    if [ $have_mpi = 1 ] && [ "$full" = 1 ]; then
        mpirun -np 2 "$S" train /dev/null $F --set train.max_steps=50 --set train.run_dir=res \
            --set train.max_steps=25 >/dev/null 2>&1
        "$S" resume /dev/null $F --set train.max_steps=50 --set train.run_dir=res >/dev/null 2>&1
        got_resume=$(digest res/ckpt/step-00000050)
        # The same run with the collectives cut into 1000-float messages (804
        # rounds a step instead of one): the transfer plan must not change a bit.
        SPOTRAIN_COMM_CHUNK=1000 mpirun -np 2 "$S" train /dev/null $F --set train.max_steps=50 \
            --set train.run_dir=chunked >/dev/null 2>&1
        got_chunked=$(digest chunked/ckpt/step-00000050)
    fi
    if [ "$RECORD" = --record ]; then
        echo "$k one $got_one"
        [ $have_mpi = 1 ] && echo "$k two $got_two"
        [ $have_mpi = 1 ] && [ "$full" = 1 ] && echo "$k resume-2-1 $got_resume"
        return 0
    fi
    check one "$got_one"
    if [ $have_mpi = 0 ]; then
        echo "SKIP golden two, resume-2-1 ($k): no mpirun or built with MPI=0"
        return 0
    fi
    check two "$got_two"
    [ "$full" = 1 ] || return 0
    check resume-2-1 "$got_resume"
    if [ -n "$got_two" ] && [ "$got_chunked" = "$got_two" ]; then
        t_ok "2 ranks in 1000-float message rounds == one round: $got_chunked"
    else
        t_bad "2 ranks in 1000-float message rounds" "got '$got_chunked', one round gave '$got_two'"
    fi
}
# GOLDEN_ONLY=onednn (or openblas): one library's runs (to record them).
[ "${GOLDEN_ONLY:-openblas}" = openblas ] && golden openblas 1
if [ "${GOLDEN_ONLY:-onednn}" != onednn ]; then
    :
elif "$S" --version | grep "^cpu_gemm:" | grep -q "onednn [0-9]"; then
    golden onednn 0
else
    echo "SKIP golden onednn: oneDNN does not load here ($("$S" --version | grep "^cpu_gemm:"))"
fi
[ "$RECORD" = --record ] && exit 0
t_end
