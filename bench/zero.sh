#!/bin/sh
# What train.zero saves per rank: peak RSS (ru_maxrss = VmHWM, via time -f
# %M around each rank) of two training steps of the small preset (32M
# parameters) under mpirun -np 2 with zero = 1, 2 and 3, beside the
# --dry-run plan of each. Reports; never fails on a target.
# ZERO_NP: ranks (default 2); ZERO_MB: micro-batch (default 1, recompute
# layers, so parameters and gradients are a visible share of the peak).
# Then the step time with [comm] overlap on and off (ZERO_STEPS, ZERO_REPS).
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

# [comm] overlap: step time of the same model under zero 2 and 3 with the
# bucket exchanges on the comm worker (true) or blocking (false), each
# setting run ZERO_REPS times (default 2) in turn; the median ms of steps
# 2.. of each run (the first step warms the caches). On this 2-core machine
# the worker shares the cores with the ranks' compute, so expect little.
STEPS=${ZERO_STEPS:-8}
O="--set model.preset=small --set train.backend=cpu --set train.global_batch=$((NP * MB)) --set train.micro_batch=$MB --set train.recompute=none --set train.threads=1 --set train.max_steps=$STEPS --set train.val_every=0 --set train.log_every=1 --set checkpoint.interval_steps=0 --set spot.provider=none --quiet"
echo "step time, small preset, $NP ranks, micro_batch $MB, $STEPS steps, 1 thread a rank (median ms of steps 2..):"
for z in 2 3; do
    for rep in $(seq "${ZERO_REPS:-2}"); do
        for o in false true; do
            # shellcheck disable=SC2086
            mpirun -np "$NP" --oversubscribe "$S" train /dev/null $O --set train.zero=$z --set comm.overlap=$o \
                --set train.run_dir="$dir/ov$z$o$rep" >/dev/null 2>&1 || echo "zero: the overlap $o run exited $?"
            ms=$(grep '"event":"step"' "$dir/ov$z$o$rep/events.jsonl" 2>/dev/null | tail -n +2 |
                sed 's/.*"ms":\([0-9.]*\).*/\1/' | sort -n | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]}')
            echo "  zero $z, overlap $o (run $rep): ${ms:-?} ms a step"
        done
    done
done
