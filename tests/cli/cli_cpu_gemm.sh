#!/bin/sh
# train.cpu_gemm: auto times the model's products once and caches its answer
# in the run directory (a resume reads it back); the choice and its kernel
# are logged and recorded in the checkpoint's libraries; every library that
# loads here gives bitwise the same weights on 1 and 2 threads and across a
# resume; a resume under another library warns that it is not bitwise
# continuous; an unknown value is refused.
# Option strings like $F are word-split on purpose.
# shellcheck disable=SC2086
# module: backend train
. tests/cli/lib.sh
S=$SPOTRAIN
cd "$T_TMP" || exit 1
unset SPOTRAIN_CPU_GEMM
F="--set model.dim=32 --set model.n_layers=2 --set model.n_heads=4 --set model.n_kv_heads=2 --set model.ffn_dim=64 --set model.seq_len=16 --set train.global_batch=6 --set train.micro_batch=3 --set train.val_every=0 --set train.threads=2 --set train.log_every=1 --set checkpoint.interval_steps=0"
digest() { t_digest "$1"; }
same() {
    if [ -n "$2" ] && [ "$2" = "$3" ]; then t_ok "$1 (digests $2)"; else t_bad "$1" "digests '$2' vs '$3'"; fi
}

"$S" train /dev/null $F --set train.max_steps=2 --set train.run_dir=auto >auto.out 2>&1
if grep -q "^cpu_gemm auto: [a-z]* (a step's matrix products on 2 threads: openblas [0-9]* ms.*); kernel: " auto.out; then
    t_ok "auto: the timing's choice and its kernel are logged at start"
else
    t_bad "auto: the timing's choice and its kernel are logged at start" "$(head -n 3 auto.out)"
fi
picked=$(sed -n 's/^cpu_gemm auto: \([a-z]*\) .*/\1/p' auto.out)
if [ -n "$picked" ] && grep -q "^$picked	cpu=" auto/cpu_gemm.cache; then
    t_ok "auto: the choice ($picked) is cached in the run directory"
else
    t_bad "auto: the choice is cached in the run directory" "$(cat auto/cpu_gemm.cache 2>&1)"
fi
"$S" resume /dev/null $F --set train.max_steps=3 --set train.run_dir=auto >auto2.out 2>&1
t_exit "auto: a resume takes the cached answer without timing" 0 "^cpu_gemm auto: $picked \\(cached in " cat auto2.out
if ! grep -q "not bitwise continuous" auto2.out; then t_ok "auto: the resume is continuous"
else t_bad "auto: the resume is continuous" "$(grep continuous auto2.out)"; fi
t_exit "the checkpoint records the library and kernel" 0 "cpu_gemm $picked " \
    sh -c "'$S' ckpt inspect --json auto/ckpt/step-00000003 | grep -o '\"libraries\": *\"[^\"]*\"'"
SPOTRAIN_CPU_GEMM=openblas "$S" train /dev/null $F --set train.max_steps=1 --set train.run_dir=env >env.out 2>&1
t_exit "SPOTRAIN_CPU_GEMM answers auto without timing" 0 "^cpu_gemm auto: openblas \\(SPOTRAIN_CPU_GEMM\\); kernel: openblas" \
    cat env.out

for lib in openblas onednn blis; do
    if ! "$S" --version | grep "^cpu_gemm:" | grep -q "$lib [0-9]"; then
        echo "SKIP $lib: not loaded on this machine ($("$S" --version | grep "^cpu_gemm:"))"
        continue
    fi
    G="$F --set train.cpu_gemm=$lib --quiet"
    "$S" train /dev/null $G --set train.max_steps=4 --set train.run_dir=$lib-2t >/dev/null 2>&1
    "$S" train /dev/null $G --set train.max_steps=4 --set train.run_dir=$lib-1t --set train.threads=1 >/dev/null 2>&1
    "$S" train /dev/null $G --set train.max_steps=2 --set train.run_dir=$lib-res >/dev/null 2>&1
    "$S" resume /dev/null $G --set train.max_steps=4 --set train.run_dir=$lib-res >/dev/null 2>&1
    two=$(digest $lib-2t/ckpt/step-00000004 2>/dev/null)
    same "$lib: 1 thread == 2 threads, bitwise" "$two" "$(digest $lib-1t/ckpt/step-00000004 2>/dev/null)"
    same "$lib: saved at 2, resumed to 4 == straight" "$two" "$(digest $lib-res/ckpt/step-00000004 2>/dev/null)"
done
if "$S" --version | grep "^cpu_gemm:" | grep -q "onednn [0-9]"; then
    "$S" resume /dev/null $F --set train.cpu_gemm=openblas --set train.max_steps=5 --set train.run_dir=onednn-res \
        >switch.out 2>&1
    t_exit "a resume under another library warns: not bitwise continuous" 0 \
        "not bitwise continuous: libraries .*cpu_gemm onednn .* -> .*cpu_gemm openblas " cat switch.out
fi

t_exit "cpu_gemm = mkl is refused: exit 78" 78 "train.cpu_gemm = 'mkl' is not one of auto|openblas|onednn|blis" \
    "$S" train /dev/null $F --set train.cpu_gemm=mkl --set train.run_dir=bad
t_end
