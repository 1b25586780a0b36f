#!/bin/sh
# Goodput under preemption: useful training time / wall time for a run kept
# alive by spotrain-run while (a) a notice (SIGTERM to the trainer) arrives
# every PERIOD seconds, or (b) the trainer is SIGKILLed every PERIOD seconds;
# each for fixed checkpoint intervals (a sweep) and for
# checkpoint.interval_seconds = auto. "Useful" = the train_seconds an
# uninterrupted run of the same steps needs; "own steps" is the same
# ratio with the scenario's own mean step time instead of the reference's,
# for a shared machine whose speed drifts between runs (the mean, not the
# median: step times here are bimodal, and the wall time is their sum, so
# only the mean makes "own steps" the share of the wall spent on steps
# that count); "redone" counts the
# steps trained again after kills (every step is logged), the work lost,
# which no load changes. Full scale by default: the 3.1M
# model A of bench_step (dim 256, 4 layers, seq 256, batch 8), a signal every
# 60 s. SCALE=k divides every time by k (and the steps), for a quick look.
# GOODPUT_FIXED lists the fixed intervals swept (seconds, before scaling);
# GOODPUT_SIGNALS the signals (TERM KILL), e.g. KILL alone for a shorter run;
# GOODPUT_FIXED_TERM, when set, the fixed intervals swept under SIGTERM
# (a notice loses nothing whatever the interval, so one is enough there).
# GOODPUT_PRIOR=R adds an auto run told the rate: [cost]
# interruptions_per_hour = R (per hour, before scaling), which shows what
# the first minutes cost auto when it starts from the default prior.
# At full scale this takes about an hour on 2 cores.
BUILD=${BUILD:-build}
S=${SPOTRAIN:-$PWD/$BUILD/spotrain}
RUN=$PWD/spot/spotrain-run
SCALE=${SCALE:-1}
STEPS=${GOODPUT_STEPS:-$(awk -v s="$SCALE" 'BEGIN { printf "%d", 600 / s }')}
FIXED=${GOODPUT_FIXED:-2 5 10 20}
SIGNALS=${GOODPUT_SIGNALS:-TERM KILL}
TMP=$(mktemp -d /tmp/spotrain-goodput.XXXXXX)
# GOODPUT_KEEP=1 keeps the run directories (their ledgers) and says where.
if [ -n "${GOODPUT_KEEP:-}" ]; then
    echo "run directories kept in $TMP"
else
    trap 'rm -rf "$TMP"' EXIT
fi
cd "$TMP" || exit 1
PERIOD=$(awk -v s="$SCALE" 'BEGIN { printf "%.2f", 60 / s }')
MINS=$(awk -v s="$SCALE" 'BEGIN { printf "%.2f", 1 / s }')
F="--set model.dim=256 --set model.n_layers=4 --set model.n_heads=8 --set model.n_kv_heads=4 --set model.ffn_dim=704 \
--set model.vocab_size=256 --set model.seq_len=256 --set train.global_batch=8 --set train.micro_batch=8 \
--set train.val_every=0 --set train.log_every=1 --set train.max_steps=$STEPS --set spot.grace_seconds=30 --quiet"
now() { date +%s.%N; }

echo "goodput: model A (3.1M), $STEPS steps, a signal every $PERIOD s (SCALE=$SCALE), OpenBLAS $("$S" --version | sed -n 's/.*OpenBLAS \([^)]*\)).*/\1/p')"
t0=$(now)
# shellcheck disable=SC2086
"$S" train /dev/null $F --set checkpoint.interval_steps=0 --set checkpoint.interval_seconds=0 --set train.run_dir=ref || exit 1
t1=$(now)
useful=$(python3 -c 'import json,sys; print(max(json.loads(l).get("train_seconds",0) for l in open(sys.argv[1])))' ref/events.jsonl)
echo "reference: wall $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s, training $useful s"

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
    k=$(grep -c '"event":"checkpoint"' "$name/events.jsonl")
    redone=$(($(grep -c '"event":"step"' "$name/events.jsonl") - STEPS))
    last=$(python3 -c 'import json,sys
r=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
i=[x for x in r if x.get("event")=="interval"]
# the interval in force when each segment ended, then the last C and M
seg, cur = [], None
for x in r:
    if x.get("event") == "start" and cur is not None:
        seg.append(cur)
    if x.get("event") == "interval":
        cur = x["seconds"]
if cur is not None:
    seg.append(cur)
print("auto interval per segment %s s (last C %.3f s, M %.0f s)" % (" ".join("%.1f" % v for v in seg), i[-1]["cost_s"], i[-1]["mtbf_s"]) if i else "")' "$name/events.jsonl")
    mean=$(python3 -c 'import json,sys,statistics
print(statistics.mean(json.loads(l)["ms"] for l in open(sys.argv[1]) if "\"event\":\"step\"" in l))' "$name/events.jsonl")
    awk -v a="$t0" -v b="$t1" -v u="$useful" -v n="$n" -v k="$k" -v d="$redone" -v name="$name" -v rc="$rc" -v x="$last" \
        -v own="$(awk -v m="$mean" -v s="$STEPS" 'BEGIN { print m * s / 1000 }')" \
        'BEGIN { printf "%-16s exit %d, %3d interruptions, %4d checkpoints, %4d steps redone, wall %7.1f s, goodput %5.1f%% (own steps %5.1f%%)  %s\n", name, rc, n, k, d, b - a, 100 * u / (b - a), 100 * own / (b - a), x }'
}
for sig in $SIGNALS; do
    sweep=$FIXED
    [ "$sig" = TERM ] && [ -n "${GOODPUT_FIXED_TERM:-}" ] && sweep=$GOODPUT_FIXED_TERM
    for iv in $sweep; do
        s=$(awk -v s="$SCALE" -v i="$iv" 'BEGIN { printf "%.2f", i / s }')
        scenario "$sig-fixed-$iv" "$sig" --set checkpoint.interval_steps=0 --set checkpoint.interval_seconds="$s"
    done
    scenario "$sig-auto" "$sig" --set checkpoint.interval_steps=0 --set checkpoint.interval_seconds=auto \
        --set checkpoint.min_seconds="$MINS"
    if [ -n "${GOODPUT_PRIOR:-}" ]; then
        scenario "$sig-auto-prior" "$sig" --set checkpoint.interval_steps=0 --set checkpoint.interval_seconds=auto \
            --set checkpoint.min_seconds="$MINS" \
            --set cost.interruptions_per_hour="$(awk -v s="$SCALE" -v r="$GOODPUT_PRIOR" 'BEGIN { print r * s }')"
    fi
done
