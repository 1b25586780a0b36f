#!/bin/sh
# The proof on one machine (issue 23, item 7): the largest deepseek-shaped
# model (LLaMA-style: DeepSeek's vocabulary of 102400, 128-wide heads, ffn
# 8/3 of dim; dim 1536, 12 heads, ffn 4096, as many layers as fit) whose
# train.zero = 3, recompute = layers plan fits NP CPU ranks under mpirun in
# this machine's MemAvailable (checkpoint snapshot and writer buffers
# included) trains PROOF_STEPS steps and writes a checkpoint; zero = 1 for
# the same model is refused at start by the trainer's own memory check
# (exit 78, one line, nothing written) instead of meeting the OOM killer;
# then the plan and every rank's measured peak (VmHWM) side by side.
# Exits 0 when all of that held, 1 when a part did not. The start check
# sees MemAvailable at start only: memory other processes take while the
# ranks grow toward their plan is not theirs to protect against.
# Minutes, and most of the machine's memory: `make proof`, not part of
# `make bench`. Refuses to start (one line, exit 75) when MemAvailable is
# below what the smallest proof model (PROOF_MIN_LAYERS) needs, rather than
# thrash. PROOF_LAYERS: a fixed depth instead of the largest that fits;
# PROOF_NP (4), PROOF_STEPS (2), PROOF_SEQ (128), PROOF_RESERVE_MIB (512:
# left free for mpirun, the shell and the page cache).
# Option strings like $C are word-split on purpose.
# shellcheck disable=SC2086
BUILD=${BUILD:-build}
S=$PWD/$BUILD/spotrain
NP=${PROOF_NP:-4}
STEPS=${PROOF_STEPS:-2}
SEQ=${PROOF_SEQ:-128}
MIN_LAYERS=${PROOF_MIN_LAYERS:-8}
RESERVE=$((${PROOF_RESERVE_MIB:-512} * 1048576))
if [ ! -x /usr/bin/time ] || [ ! -x "$S" ] || ! command -v mpirun >/dev/null 2>&1; then
    echo "proof: needs /usr/bin/time, mpirun and $S" >&2
    exit 66
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
dir=$(mktemp -d "${PROOF_DIR:-/tmp}/spotrain-proof.XXXXXX")
trap 'rm -rf "$dir"' EXIT
shape() {
    echo "--set model.dim=1536 --set model.n_layers=$1 --set model.n_heads=12 --set model.n_kv_heads=12
          --set model.ffn_dim=4096 --set model.vocab_size=102400 --set model.seq_len=$SEQ"
}
# comm.overlap = false: the overlap's second buffers (a layer each, 0.2 GiB
# a rank here) buy speed with memory; the largest model is the lean plan's.
C="--set train.backend=cpu --set train.threads=1 --set train.micro_batch=1 --set train.global_batch=$NP
   --set comm.overlap=false --set train.recompute=layers --set train.max_steps=$STEPS --set train.val_every=0 --set train.log_every=1
   --set checkpoint.interval_steps=0 --set checkpoint.threads=1"
# plan LAYERS ZERO: --dry-run's per-process total for NP ranks, bytes.
plan() {
    # shellcheck disable=SC2046,SC2086
    "$S" train /dev/null $(shape "$1") $C --set train.zero="$2" --dry-run --world "$NP" 2>/dev/null |
        sed -n 's/^  per-process total: \([0-9]*\) bytes/\1/p'
}
avail=$(awk '/^MemAvailable:/ { printf "%.0f", $2 * 1024 }' /proc/meminfo)
room=$((avail - RESERVE))
L=${PROOF_LAYERS:-}
if [ -z "$L" ]; then
    L=$MIN_LAYERS
    while [ "$L" -lt 64 ] && [ "$(($(plan $((L + 1)) 3) * NP))" -le "$room" ]; do
        L=$((L + 1))
    done
fi
p3=$(plan "$L" 3)
p1=$(plan "$L" 1)
if [ -z "$p3" ] || [ -z "$p1" ]; then
    echo "proof: no plan for $L layers (run $S train /dev/null $(shape "$L" | tr -s ' \n' '  ') $C --dry-run to see why)" >&2
    exit 70
fi
if [ "$((p3 * NP))" -gt "$room" ]; then
    echo "proof: MemAvailable is $((avail / 1048576)) MiB; $L layers on $NP ranks need $((p3 * NP / 1048576)) MiB planned + $((RESERVE / 1048576)) MiB reserve: free memory and rerun (not starting, so nothing swaps)" >&2
    exit 75
fi
# shellcheck disable=SC2046
n=$("$S" train /dev/null $(shape "$L") $C --dry-run 2>/dev/null | sed -n 's/^parameters: \([0-9]*\).*/\1/p')
awk -v n="$n" -v L="$L" -v np="$NP" -v a="$avail" -v p1="$p1" -v p3="$p3" 'BEGIN {
    printf "proof: %.3fB parameters (%d layers of dim 1536, vocab 102400), %d ranks, MemAvailable %.2f GiB (%.2f GiB a rank)\n",
           n / 1e9, L, np, a / 2^30, a / np / 2^30
    printf "  plan per rank: zero 3 + layers %.3f GiB (x%d = %.2f GiB); zero 1 + layers %.3f GiB (x%d = %.2f GiB)\n",
           p3 / 2^30, np, np * p3 / 2^30, p1 / 2^30, np, np * p1 / 2^30 }'

echo "zero = 1: the trainer's start check (expect exit 78, one line, no run directory):"
t0=$(date +%s)
# shellcheck disable=SC2046,SC2086
mpirun -np "$NP" "$S" train /dev/null $(shape "$L") $C --set train.zero=1 --set train.run_dir="$dir/z1" \
    >"$dir/z1.out" 2>&1
rc=$?
ok=1
[ "$rc" -eq 78 ] && [ ! -e "$dir/z1" ] || ok=0
grep '^spotrain: ' "$dir/z1.out" | sort -u | sed 's/^/  /'
echo "  exit $rc after $(($(date +%s) - t0)) s; run directory $([ -e "$dir/z1" ] && echo "WRITTEN (wrong)" || echo "not written")"

echo "zero = 3, recompute = layers: $STEPS steps and a checkpoint"
t0=$(date +%s)
# shellcheck disable=SC2046,SC2016
mpirun -np "$NP" sh -c '/usr/bin/time -o "$0.${OMPI_COMM_WORLD_RANK:-0}" -f "%M %e %x" "$@"' "$dir/rss" \
    "$S" train /dev/null $(shape "$L") $C --set train.zero=3 --set train.run_dir="$dir/z3" >"$dir/z3.out" 2>&1
rc=$?
[ "$rc" -eq 0 ] || ok=0
grep -E '^step [0-9]+/|^zero|^spotrain: ' "$dir/z3.out" | head -n 12 | sed 's/^/  /'
ck="$dir/z3/ckpt/$(printf 'step-%08d' "$STEPS")"
echo "  exit $rc after $(($(date +%s) - t0)) s; checkpoint $([ -d "$ck" ] && du -sh "$ck" | cut -f1 || echo MISSING)"
if [ -d "$ck" ]; then
    if "$S" ckpt verify "$ck" >/dev/null 2>&1; then
        echo "  ckpt verify: ok"
    else
        echo "  ckpt verify: FAILED"
        ok=0
    fi
else
    ok=0
fi
echo "  rank   plan GiB  VmHWM GiB    diff   seconds"
for f in "$dir/rss".*; do
    [ -f "$f" ] || continue
    # `time` writes "Command terminated by signal 9" above the figures when the OOM killer struck.
    grep -q 'signal' "$f" && echo "  rank ${f##*.}: $(head -n 1 "$f")"
    tail -n 1 "$f" | awk -v p="$p3" -v r="${f##*.}" '{ m = $1 * 1024
        printf "  %4s %10.3f %10.3f %+7.1f%% %9.0f\n", r, p / 2^30, m / 2^30, 100 * (m - p) / p, $2 }'
done
# A proof that did not hold exits 1 (the lines above say which part).
[ "$ok" -eq 1 ]
