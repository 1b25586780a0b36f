#!/bin/sh
# Training throughput with a checkpoint every step against none, on model A
# of bench/throughput.sh (3.1M params), through the real trainer. The cost
# of one checkpoint (stall + background compression competing for the same
# cores) then gives the throughput loss at one checkpoint a minute.
BUILD=${BUILD:-build}
S=${SPOTRAIN:-$PWD/$BUILD/spotrain}
STEPS=${CKPT_TRAIN_STEPS:-30}
TMP=$(mktemp -d /tmp/spotrain-ckpt-train.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
A="--set model.dim=256 --set model.n_layers=4 --set model.n_heads=8 --set model.n_kv_heads=4 --set model.ffn_dim=704 --set model.vocab_size=256 --set model.seq_len=256 --set train.global_batch=8 --set train.micro_batch=8 --set train.val_every=0 --set train.log_every=1 --set train.max_steps=$STEPS --quiet"
# Mean ms of steps 2..N (step 1 warms caches and the thread pool).
mean_ms() {
    sed -n 's/.*"event":"step","step":\([0-9]*\),.*"ms":\([0-9.]*\).*/\1 \2/p' "$1/events.jsonl" |
        awk '$1 > 1 { s += $2; n++ } END { if (n) printf "%.1f", s / n }'
}
run() {
    name=$1
    shift
    # shellcheck disable=SC2086
    "$S" train /dev/null $A --set train.run_dir="$TMP/$name" "$@" || echo "($name exited $?)"
    mean_ms "$TMP/$name"
}
none=$(run none --set checkpoint.interval_steps=0)
wait_ms=$(run every-wait --set checkpoint.interval_steps=1 --set checkpoint.busy=wait)
skip_ms=$(run every-skip --set checkpoint.interval_steps=1 --set checkpoint.busy=skip)
saved=$(grep -c '"event":"checkpoint"' "$TMP/every-skip/events.jsonl")
stall=$(sed -n 's/.*"event":"checkpoint".*"stall_ms":\([0-9.]*\).*/\1/p' "$TMP/every-wait/events.jsonl" |
    awk '{ s += $1; n++ } END { if (n) printf "%.2f", s / n }')
echo "no checkpoints:                       $none ms/step"
echo "checkpoint every step, busy = wait:   $wait_ms ms/step (mean stall $stall ms per checkpoint)"
echo "checkpoint every step, busy = skip:   $skip_ms ms/step ($saved of $STEPS committed)"
awk -v a="$none" -v b="$wait_ms" 'BEGIN {
    c = b - a; if (c < 0) c = 0
    printf "cost of one checkpoint: %.1f ms of training time -> %.3f%% throughput loss at one checkpoint a minute\n", c, 100 * c / 60000 }'
