#!/bin/sh
# make demo: packages (when root), build, train the tiny model of sample.ini
# on the built-in arithmetic corpus, then ask it sums it never saw.
set -eu
sh tests/deps.sh build
make --no-print-directory -j2 >/dev/null
bin=build/spotrain
echo "== training sample.ini (tiny model, synthetic arithmetic) into runs/sample"
$bin train sample.ini --force
echo
echo "== held-out sums (never in the training data), greedy decoding:"
right=0
total=0
for p in 17+58 40+43 91+9 6+77 33+66 72+15 28+28 55+44; do
    out=$($bin sample sample.ini --prompt "$p=" --tokens 4 | head -n 1)
    a=${p%+*}
    b=${p#*+}
    want="$p=$((a + b))"
    total=$((total + 1))
    if [ "$out" = "$want" ]; then right=$((right + 1)); mark=ok; else mark="wrong (want $want)"; fi
    echo "  $out   $mark"
done
echo "$right of $total correct"
