#!/bin/sh
# Measured against planned: the peak RSS (VmHWM, via time -f %M) of each
# rank of one training step of a 110M-parameter model on the CPU backend,
# at world 1 and world 2 (mpirun), beside the memory model's per-process
# total from --dry-run. The binary's fixed overhead (`spotrain --version`,
# the same binary doing nothing) is shown and subtracted. Reports; never
# fails on a target. MEMPLAN_MB: the micro-batch (default 2); MEMPLAN_WORLDS
# (default "1 2").
BUILD=${BUILD:-build}
S=$PWD/$BUILD/spotrain
MB=${MEMPLAN_MB:-2}
WORLDS=${MEMPLAN_WORLDS:-1 2}
if [ ! -x /usr/bin/time ] || [ ! -x "$S" ]; then
    echo "memplan: needs /usr/bin/time and $S" >&2
    exit 66
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
dir=$(mktemp -d /tmp/spotrain-memplan.XXXXXX)
trap 'rm -rf "$dir"' EXIT
# 12 layers of 768, vocab 16384, 256 positions: 110,119,680 parameters.
F="--set model.preset=small --set model.dim=768 --set model.n_layers=12 --set model.n_heads=12 --set model.n_kv_heads=12
   --set model.ffn_dim=2048 --set model.vocab_size=16384 --set model.seq_len=256 --set train.backend=cpu
   --set train.threads=1 --set train.micro_batch=$MB --set train.max_steps=1 --set train.val_every=0
   --set checkpoint.interval_steps=0 --quiet"
/usr/bin/time -o "$dir/base" -f "%M" "$S" --version >/dev/null 2>&1
base=$(cat "$dir/base")
echo "memplan: 110M parameters, micro_batch $MB, 1 step, threads 1; fixed overhead (spotrain --version) $((base / 1024)) MiB"
for W in $WORLDS; do
    # shellcheck disable=SC2086
    plan=$("$S" train /dev/null $F --set train.global_batch=$((MB * W)) --dry-run --world "$W" 2>/dev/null |
        sed -n 's/^  per-process total: \([0-9]*\) bytes/\1/p')
    if [ "$W" -gt 1 ] && ! command -v mpirun >/dev/null 2>&1; then
        echo "  world $W: SKIP (no mpirun)"
        continue
    fi
    launch=""
    [ "$W" -gt 1 ] && launch="mpirun -np $W"
    # shellcheck disable=SC2086,SC2016
    $launch sh -c '/usr/bin/time -o "$0.${OMPI_COMM_WORLD_RANK:-0}" -f "%M" "$@"' "$dir/rss$W" \
        "$S" train /dev/null $F --set train.global_batch=$((MB * W)) --set train.run_dir="$dir/run$W" \
        >/dev/null 2>&1 || echo "  world $W: the run exited $?"
    for f in "$dir/rss$W".*; do
        [ -f "$f" ] || continue
        awk -v k="$(tail -n 1 "$f")" -v b="$base" -v p="$plan" -v r="${f##*.}" -v w="$W" 'BEGIN {
            m = k * 1024; o = b * 1024
            printf "  world %s rank %s: plan %.1f MiB, VmHWM %.1f MiB (%+.1f%%), minus overhead %.1f MiB (%+.1f%%)\n",
                   w, r, p / 1048576, m / 1048576, 100 * (m - p) / p, (m - o) / 1048576, 100 * (m - o - p) / p
        }'
    done
done
