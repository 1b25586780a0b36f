#!/bin/sh
# What train.zero saves per rank: peak RSS (ru_maxrss = VmHWM, via time -f
# %M around each rank) of two training steps of the small preset (32M
# parameters) under mpirun -np 2 with zero = 1, 2 and 3, beside the
# --dry-run plan of each. Reports; never fails on a target.
# ZERO_NP: ranks (default 2); ZERO_MB: micro-batch (default 1, recompute
# layers, so parameters and gradients are a visible share of the peak).
BUILD=${BUILD:-build}
S=$PWD/$BUILD/spotrain
NP=${ZERO_NP:-2}
MB=${ZERO_MB:-1}
if [ ! -x /usr/bin/time ] || [ ! -x "$S" ] || ! command -v mpirun >/dev/null 2>&1; then
    echo "zero: needs /usr/bin/time, mpirun and $S" >&2
    exit 66
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
dir=$(mktemp -d /tmp/spotrain-zero.XXXXXX)
trap 'rm -rf "$dir"' EXIT
F="--set model.preset=small --set train.backend=cpu --set train.global_batch=$((NP * MB)) --set train.micro_batch=$MB --set train.recompute=layers --set train.threads=1 --set train.max_steps=2 --set train.val_every=0 --set checkpoint.interval_steps=0 --quiet"
echo "small preset (32M params), $NP ranks, micro_batch $MB, recompute layers, 2 steps:"
for z in 1 2 3; do
    # The rank's number is known inside the rank only: single quotes on purpose.
    # shellcheck disable=SC2086,SC2016
    mpirun -np "$NP" --oversubscribe sh -c '/usr/bin/time -o "$0.$OMPI_COMM_WORLD_RANK" -f "%M %e" "$@"' \
        "$dir/z$z" "$S" train /dev/null $F --set train.zero=$z --set train.run_dir="$dir/run$z" >/dev/null 2>&1 ||
        echo "zero: the zero = $z run exited $?"
    # shellcheck disable=SC2086
    plan=$("$S" train /dev/null $F --set train.zero=$z --dry-run --world "$NP" 2>/dev/null |
        awk '/^  (parameters|gradients) \(/ {printf "%s %s GiB; ", $1, $(NF-1)} /^  total/ {printf "total %s GiB", $(NF-1)}')
    rss=""
    r=0
    while [ "$r" -lt "$NP" ]; do
        rss="$rss $(awk '{printf "%.0f MiB (%.1f s)", $1 / 1024, $2}' "$dir/z$z.$r" 2>/dev/null)"
        r=$((r + 1))
    done
    echo "  zero $z: VmHWM per rank:$rss"
    echo "          plan: $plan"
done
