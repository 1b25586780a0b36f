#!/bin/sh
# Measured against planned: the peak RSS (VmHWM, via time -f %M) of every
# rank of a 2-step run that checkpoints, for a 110M-parameter model on the
# CPU backend at 1, 2 and 4 ranks (mpirun), ZeRO 1/2/3, recompute none and
# layers, beside the memory model's per-process total from --dry-run, each
# rank's own (rank 0, which holds no chain slots, has its own line). The
# plan holds the whole process; nothing is subtracted. Then the process's
# own terms: a 20K-parameter run's VmHWM beside the plan's "process" line.
# Reports; never fails on a target. A row whose ranks' plans together
# exceed MemAvailable, or MEMPLAN_MAX_GIB (a cap for shared machines), is
# skipped and says so. MEMPLAN_MB: the micro-batch (default 1);
# MEMPLAN_WORLDS (default "1 2 4").
BUILD=${BUILD:-build}
S=$PWD/$BUILD/spotrain
MB=${MEMPLAN_MB:-1}
WORLDS=${MEMPLAN_WORLDS:-1 2 4}
if [ ! -x /usr/bin/time ] || [ ! -x "$S" ]; then
    echo "memplan: needs /usr/bin/time and $S" >&2
    exit 66
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
dir=$(mktemp -d /tmp/spotrain-memplan.XXXXXX)
trap 'rm -rf "$dir"' EXIT
avail=$(awk '/^MemAvailable:/ { printf "%.0f", $2 * 1024 }' /proc/meminfo)
cap=$(awk -v g="${MEMPLAN_MAX_GIB:-0}" -v a="$avail" 'BEGIN { c = g * 1073741824; printf "%.0f", (c > 0 && c < a) ? c : a }')
C="--set train.backend=cpu --set train.threads=1 --set train.micro_batch=$MB --set train.max_steps=2
   --set train.val_every=0 --set checkpoint.interval_steps=0 --set checkpoint.threads=1 --quiet"
# 12 layers of 768, vocab 16384, 256 positions: 110,119,680 parameters.
BIG="--set model.preset=small --set model.dim=768 --set model.n_layers=12 --set model.n_heads=12
     --set model.n_kv_heads=12 --set model.ffn_dim=2048 --set model.vocab_size=16384 --set model.seq_len=256"
TINY="--set model.dim=32 --set model.n_layers=2 --set model.n_heads=4 --set model.n_kv_heads=2 --set model.ffn_dim=64
      --set model.vocab_size=256 --set model.seq_len=16"
# row SHAPE W Z R: runs one configuration on W ranks, prints a line per rank.
row() {
    shape=$1 W=$2 z=$3 r=$4
    # shellcheck disable=SC2086
    A="$shape $C --set train.global_batch=$((MB * W)) --set train.zero=$z --set train.recompute=$r"
    # shellcheck disable=SC2086
    "$S" train /dev/null $A --dry-run --world "$W" >"$dir/plan" 2>/dev/null
    plan=$(sed -n 's/^  per-process total: \([0-9]*\) bytes/\1/p' "$dir/plan")
    # Rank 0's own plan (no chain slots) when --dry-run prints one.
    plan0=$(sed -n 's/^  rank 0 per-process total: \([0-9]*\) bytes.*/\1/p' "$dir/plan")
    proc=$(sed -n 's/^  process (binary, libs, MPI) *\([0-9.]*\) GiB/\1/p' "$dir/plan")
    if [ -z "$plan" ]; then
        echo "  world $W zero $z $r: no plan"
        return
    fi
    if [ "$W" -gt 1 ] && ! command -v mpirun >/dev/null 2>&1; then
        echo "  world $W zero $z $r: SKIP (no mpirun)"
        return
    fi
    if [ "$((plan * W))" -gt "$cap" ]; then
        echo "  world $W zero $z $r: SKIP ($W x $((plan / 1048576)) MiB planned; $((cap / 1048576)) MiB allowed here)"
        return
    fi
    launch=""
    [ "$W" -gt 1 ] && launch="mpirun -np $W"
    rm -rf "$dir/run" "$dir/rss".*
    # shellcheck disable=SC2086,SC2016
    $launch sh -c '/usr/bin/time -o "$0.${OMPI_COMM_WORLD_RANK:-0}" -f "%M" "$@"' "$dir/rss" \
        "$S" train /dev/null $A --set train.run_dir="$dir/run" >/dev/null 2>&1 || echo "  world $W zero $z $r: the run exited $?"
    for f in "$dir/rss".*; do
        [ -f "$f" ] || continue
        p=$plan
        [ "${f##*.}" = 0 ] && [ -n "$plan0" ] && p=$plan0
        awk -v k="$(tail -n 1 "$f")" -v p="$p" -v q="$proc" -v r="${f##*.}" -v w="$W" -v z="$z" -v rc="$r" 'BEGIN {
            m = k * 1024
            printf "  %5d %4d %-9s %4s %10.1f %10.1f %+7.1f%%   (process term %.1f MiB)\n", w, z, rc, r,
                   p / 1048576, m / 1048576, 100 * (m - p) / p, q * 1024
        }'
    done
}
echo "memplan: 110M parameters, micro_batch $MB, seq 256, 2 steps and a checkpoint, threads 1, writer threads 1"
echo "  world zero recompute rank   plan MiB  VmHWM MiB    diff"
for W in $WORLDS; do
    for z in 1 2 3; do
        for r in none layers; do
            row "$BIG" "$W" "$z" "$r"
        done
    done
done
/usr/bin/time -o "$dir/base" -f "%M" "$S" --version >/dev/null 2>&1
echo "the process alone: a 20K-parameter model (its plan is almost all the process term); spotrain --version $(($(cat "$dir/base") / 1024)) MiB"
echo "  world zero recompute rank   plan MiB  VmHWM MiB    diff"
for W in $WORLDS; do
    row "$TINY" "$W" 1 none
done
