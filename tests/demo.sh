#!/bin/sh
# make demo: packages (when root), build, train the tiny model of sample.ini
# on the built-in arithmetic corpus, then ask it sums it never saw.
set -eu
sh tests/deps.sh build
make --no-print-directory -j2 >/dev/null
bin=build/spotrain
echo "== training sample.ini (tiny model, synthetic arithmetic) into runs/sample"
$bin train sample.ini --force
# events.jsonl accumulates over runs: this run's first eval is the last step-0 one.
first=$(sed -n 's/.*"event":"eval","step":0,"val_loss":\([0-9.]*\).*/\1/p' runs/sample/events.jsonl | tail -n 1)
last=$(sed -n 's/.*"event":"eval".*"val_loss":\([0-9.]*\).*/\1/p' runs/sample/events.jsonl | tail -n 1)
echo
echo "== validation loss on held-out problems (nats per byte): $first at step 0 -> $last at the end"
echo
echo "== held-out sums (never in the training data), greedy decoding:"
right=0
total=0
# Held-out pairs satisfy (7a + 13b) mod 20 = 3 (train/data.c).
pairs=""
for a in 12 27 38 45 56 63 74 81 99 5; do
    b=0
    while [ $(((7 * a + 13 * b) % 20)) -ne 3 ]; do b=$((b + 1)); done
    b=$((b + 3 * a % 5 * 20))
    [ "$b" -gt 99 ] && b=$((b - 80))
    pairs="$pairs $a+$b"
done
for p in $pairs; do
    out=$($bin sample sample.ini --prompt "$p=" --tokens 4 | head -n 1)
    a=${p%+*}
    b=${p#*+}
    want="$p=$((a + b))"
    total=$((total + 1))
    if [ "$out" = "$want" ]; then right=$((right + 1)); mark=ok; else mark="wrong (want $want)"; fi
    echo "  $out   $mark"
done
echo "$right of $total exactly right (train longer for more: --set train.max_steps=N)"
