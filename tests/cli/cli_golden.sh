#!/bin/sh
# The numerics guard: digests of short tiny-preset runs (1 rank, 2 ranks, and
# 2 ranks resumed on 1) must equal the ones recorded before any change to the
# numerics path. A digest depends on the OpenBLAS kernel that ran, so the
# recorded values are keyed by `openblas_get_corename()`. When the kernel
# this machine picks has no record (say Cooperlake), the runs are made
# under OPENBLAS_CORETYPE=Haswell, which every x86-64-v3 machine (what the
# build targets) can run, and compared with Haswell's record: every x86-64
# machine checks the numerics. Only a machine that cannot do that reports SKIP.
# Record a kernel's digests (on a tree whose numerics are trusted):
#   sh tests/cli/cli_golden.sh --record >> tests/cli/golden.txt
# shellcheck disable=SC2086
# module: model backend train
. tests/cli/lib.sh
S=$SPOTRAIN
GOLDEN=$PWD/tests/cli/golden.txt
RECORD=${1:-}
cd "$T_TMP" || exit 1
core=$("$S" --version | sed -n 's/.*cpu (OpenBLAS \([^)]*\)).*/\1/p')
F="--set model.preset=tiny --set train.global_batch=16 --set train.micro_batch=4 --set train.val_every=0 \
--set checkpoint.interval_steps=10 --set train.threads=2 --set train.log_every=1000 --quiet"
digest() { "$S" ckpt inspect "$1" --json | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); d=d[0] if isinstance(d,list) else d; print(d["digest"]["params"], d["digest"]["adam_m"], d["digest"]["adam_v"])'; }
have_mpi=0
command -v mpirun >/dev/null 2>&1 && "$S" --version | grep -q "mpi: yes" && have_mpi=1

# A kernel with no record: Haswell's instead (see the top).
if [ "$RECORD" != --record ] && ! awk -v k="$core" '$1 == k { f = 1 } END { exit !f }' "$GOLDEN" &&
   [ "$(uname -m)" = x86_64 ]; then
    echo "golden: no digests recorded for OpenBLAS kernel '$core'; running under OPENBLAS_CORETYPE=Haswell"
    own=$core
    export OPENBLAS_CORETYPE=Haswell
    core=$("$S" --version | sed -n 's/.*cpu (OpenBLAS \([^)]*\)).*/\1/p')
    [ "$core" = Haswell ] || t_bad "golden: OPENBLAS_CORETYPE=Haswell is honoured on this '$own' machine" "OpenBLAS picked '$core'"
fi
"$S" train /dev/null $F --set train.max_steps=50 --set train.run_dir=one >/dev/null 2>&1
got_one=$(digest one/ckpt/step-00000050)
got_two="" got_resume=""
if [ $have_mpi = 1 ]; then
    mpirun -np 2 "$S" train /dev/null $F --set train.max_steps=50 --set train.run_dir=two >/dev/null 2>&1
    got_two=$(digest two/ckpt/step-00000050)
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
    echo "$core one $got_one"
    [ $have_mpi = 1 ] && echo "$core two $got_two" && echo "$core resume-2-1 $got_resume"
    exit 0
fi
check() {
    want=$(awk -v k="$core" -v n="$1" '$1 == k && $2 == n { print $3, $4, $5 }' "$GOLDEN")
    if [ -z "$want" ]; then
        echo "SKIP golden $1: no digests recorded for OpenBLAS kernel '$core' (record them with --record on a trusted tree)"
    elif [ "$want" = "$2" ]; then
        t_ok "golden $1 ($core): $2"
    else
        t_bad "golden $1 ($core)" "got '$2', recorded '$want'"
    fi
}
check one "$got_one"
if [ $have_mpi = 1 ]; then
    check two "$got_two"
    check resume-2-1 "$got_resume"
    if [ -n "$got_two" ] && [ "$got_chunked" = "$got_two" ]; then
        t_ok "2 ranks in 1000-float message rounds == one round: $got_chunked"
    else
        t_bad "2 ranks in 1000-float message rounds" "got '$got_chunked', one round gave '$got_two'"
    fi
else
    echo "SKIP golden two, resume-2-1: no mpirun or built with MPI=0"
fi
t_end
