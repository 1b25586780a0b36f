#!/bin/sh
# What train.recompute = layers saves: peak RSS (ru_maxrss, via time -f %M)
# of one training step of the small preset (32M parameters) under none and
# under layers, their ratio, and the --dry-run figures beside them. Reports;
# never fails on a target. RECOMPUTE_MB: the micro-batch (default 8).
BUILD=${BUILD:-build}
S=$PWD/$BUILD/spotrain
MB=${RECOMPUTE_MB:-8}
if [ ! -x /usr/bin/time ] || [ ! -x "$S" ]; then
    echo "recompute: needs /usr/bin/time and $S" >&2
    exit 66
fi
dir=$(mktemp -d /tmp/spotrain-recompute.XXXXXX)
trap 'rm -rf "$dir"' EXIT
F="--set model.preset=small --set train.backend=cpu --set train.global_batch=$MB --set train.micro_batch=$MB --set train.max_steps=1 --set train.val_every=0 --set checkpoint.interval_steps=0 --quiet"
for r in none layers; do
    # shellcheck disable=SC2086
    /usr/bin/time -o "$dir/$r.rss" -f "%M %e" "$S" train /dev/null $F --set train.recompute=$r \
        --set train.run_dir="$dir/$r" >/dev/null 2>&1 || echo "recompute: the $r run exited $?"
    # shellcheck disable=SC2086
    "$S" train /dev/null $F --set train.recompute=$r --dry-run 2>/dev/null |
        sed -n 's/^  activations (micro_batch [0-9]*) *\([0-9.]*\) GiB/\1/p' >"$dir/$r.plan"
done
read -r kn sn <"$dir/none.rss"
read -r kl sl <"$dir/layers.rss"
awk -v kn="$kn" -v kl="$kl" -v sn="$sn" -v sl="$sl" -v pn="$(cat "$dir/none.plan")" -v pl="$(cat "$dir/layers.plan")" \
    -v mb="$MB" -v np="$(nproc)" 'BEGIN {
    printf "small preset (32M params), micro_batch %s, 1 step, %s cores:\n", mb, np
    printf "  peak RSS  none %.0f MiB, layers %.0f MiB: ratio %.2f, %.0f MiB less\n", kn / 1024, kl / 1024, kn / kl, (kn - kl) / 1024
    printf "  dry-run activations  none %.3f GiB, layers %.3f GiB: %.0f MiB less\n", pn, pl, (pn - pl) * 1024
    printf "  wall time (one step plus start-up)  none %.1f s, layers %.1f s\n", sn, sl
}'
