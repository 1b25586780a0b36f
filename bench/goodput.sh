#!/bin/sh
# Goodput under preemption: useful training time / wall time for a run kept
# alive by spotrain-run while (a) a notice (SIGTERM to the trainer) arrives
# every PERIOD seconds, and (b) the trainer is SIGKILLed every PERIOD seconds
# with a checkpoint every PERIOD/6 seconds. "Useful" = the train_seconds an
# uninterrupted run of the same steps needs. Scaled down by SCALE (default 10):
# PERIOD = 60/SCALE s, checkpoint every 10/SCALE s, reference run ~60 s.
BUILD=${BUILD:-build}
S=${SPOTRAIN:-$PWD/$BUILD/spotrain}
RUN=$PWD/spot/spotrain-run
SCALE=${SCALE:-10}
STEPS=${GOODPUT_STEPS:-120000}
TMP=$(mktemp -d /tmp/spotrain-goodput.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1
PERIOD=$(awk -v s="$SCALE" 'BEGIN { printf "%.2f", 60 / s }')
CKPT=$(awk -v s="$SCALE" 'BEGIN { printf "%.2f", 10 / s }')
F="--set model.dim=32 --set model.n_layers=1 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.ffn_dim=64 --set model.seq_len=16 --set train.global_batch=4 --set train.micro_batch=4 --set train.val_every=0 --set train.log_every=50 --set train.max_steps=$STEPS --quiet"
now() { date +%s.%N; }

t0=$(now)
# shellcheck disable=SC2086
"$S" train /dev/null $F --set checkpoint.interval_steps=0 --set train.run_dir=ref || exit 1
t1=$(now)
useful=$(python3 -c 'import json,sys; print(max(json.loads(l).get("train_seconds",0) for l in open(sys.argv[1])))' ref/events.jsonl)
echo "reference: $STEPS steps, wall $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s, training $useful s"

# scenario NAME SIGNAL CKPT-SETTINGS...: a background driver signals the
# trainer every PERIOD seconds while the wrapper keeps it going; the wall
# time is the wrapper's, to the moment the run completes.
scenario() {
    name=$1 sig=$2
    shift 2
    t0=$(now)
    # shellcheck disable=SC2086
    "$RUN" --backoff 0 --max-restarts -1 -- "$S" resume /dev/null $F --set train.run_dir="$name" "$@" >"$name.log" 2>&1 &
    w=$!
    (
        while kill -0 "$w" 2>/dev/null; do
            sleep "$PERIOD"
            c=$(pgrep -P "$w" | head -n 1)
            [ -n "$c" ] && kill -"$sig" "$c" 2>/dev/null
        done
    ) &
    driver=$!
    wait "$w"
    rc=$?
    t1=$(now)
    kill "$driver" 2>/dev/null
    wait "$driver" 2>/dev/null
    n=$(($(grep -c '"event":"start"' "$name/events.jsonl") - 1))
    awk -v a="$t0" -v b="$t1" -v u="$useful" -v n="$n" -v name="$name" -v rc="$rc" -v p="$PERIOD" \
        'BEGIN { printf "%s: exit %d, %d interruptions (every %s s), wall %.1f s, goodput %.1f%%\n", name, rc, n, p, b - a, 100 * u / (b - a) }'
}
scenario notice TERM --set checkpoint.interval_steps=0
scenario sigkill KILL --set checkpoint.interval_steps=0 --set checkpoint.interval_seconds="$CKPT"
