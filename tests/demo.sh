#!/bin/sh
# make demo: what spotrain is for, in about a minute on 2 cores.
#  1. train a small model straight through (the reference);
#  2. train the same run under spotrain-run, interrupted twice: a simulated
#     reclaim notice (the `file` provider) and a kill -9; it restarts itself
#     and finishes;
#  3. check that both end with bitwise identical weights (digests from
#     `spotrain ckpt inspect --json`), print what the interruptions cost
#     (`spotrain cost report`), and show that the model learned its corpus.
set -eu
sh tests/deps.sh build
make --no-print-directory -j2 >/dev/null
bin=build/spotrain
run=spot/spotrain-run
ini=examples/demo/demo.ini
dir=runs/demo
ref=runs/demo-straight
steps=200
T0=$(date +%s)
say() { printf '\n== %s (%ss)\n' "$*" "$(($(date +%s) - T0))"; }
# Newest step logged in a ledger, and the number of times training started.
last_step() { sed -n 's/.*"event":"step","step":\([0-9]*\).*/\1/p' "$1/events.jsonl" 2>/dev/null | tail -n 1; }
starts() {
    if [ -f "$1/events.jsonl" ]; then grep -c '"event":"start"' "$1/events.jsonl" || true; else echo 0; fi
}
wait_until() { # DIR STARTS STEP: until the DIR's run started STARTS times and logged STEP
    i=0
    while [ "$(starts "$1")" -lt "$2" ] || [ "${last:=0}" -lt "$3" ]; do
        last=$(last_step "$1")
        last=${last:-0}
        i=$((i + 1))
        [ "$i" -lt 3000 ] || { echo "demo: run in $1 made no progress in 5 minutes; see $1/events.jsonl" >&2; exit 1; }
        sleep 0.1
    done
    unset last
}
digest() {
    $bin ckpt inspect "$1" --json | /usr/bin/python3 -c 'import json, sys
d = json.load(sys.stdin); d = d[0] if isinstance(d, list) else d
print(" ".join(d["digest"][k] for k in ("params", "adam_m", "adam_v")))'
}

say "1. reference: $steps steps straight through into $ref"
rm -rf "$ref" "$dir"
$bin train "$ini" --set train.run_dir="$ref" --set spot.provider=none --quiet

say "2. the same run under spotrain-run, interrupted twice, into $dir"
mkdir -p "$dir"
mkfifo "$dir/.log"
sed 's/^/   | /' <"$dir/.log" &
$run --backoff 1 --events "$dir/events.jsonl" -- $bin resume "$ini" >"$dir/.log" 2>&1 &
wpid=$!
wait_until "$dir" 1 60
echo "   >> step $(last_step "$dir"): simulated reclaim notice ($dir/reclaim-notice appears)"
echo "AWS: instance-action terminate in 2 minutes" >"$dir/reclaim-notice"
wait_until "$dir" 2 130
pid=$(pgrep -P "$wpid" | head -n 1)   # the trainer: the wrapper's child
[ -n "$pid" ] || { echo "demo: no trainer running under spotrain-run (pid $wpid) at step 130; see $dir/events.jsonl" >&2; exit 1; }
echo "   >> step $(last_step "$dir"): kill -9 $pid (the machine vanishes without notice)"
kill -9 "$pid"
wait
rm -f "$dir/.log"
[ -d "$dir/ckpt/step-$(printf %08d $steps)" ] || { echo "demo: the interrupted run did not finish; see $dir/events.jsonl" >&2; exit 1; }

say "3. bitwise identical?"
a=$(digest "$ref/ckpt/step-$(printf %08d $steps)")
b=$(digest "$dir/ckpt/step-$(printf %08d $steps)")
echo "   straight:    $a"
echo "   interrupted: $b   (params adam_m adam_v)"
if [ "$a" = "$b" ]; then
    echo "   identical: two interruptions cost time, not a single bit"
else
    echo "demo: the interrupted run's weights differ from the straight run's; that is a bug, please report it" >&2
    exit 1
fi

say "4. what it cost: spotrain cost report $dir"
$bin cost report "$dir" | sed 's/^/   /'

say "5. what the model learned (greedy continuation of each prompt)"
right=0
total=0
for p in "wednesday|thursday friday" "march|april may" "earth|mars jupiter" "five|six seven" "yellow|green blue" "october|november december"; do
    prompt=${p%%|*}
    want=${p#*|}
    out=$($bin sample "$dir" --prompt "$prompt " --tokens 24 | head -n 1)
    total=$((total + 1))
    case "$out" in
        "$prompt $want"*) right=$((right + 1)); mark=ok ;;
        *) mark="wrong (want $prompt $want ...)" ;;
    esac
    printf '   %-44s %s\n' "$out" "$mark"
done
v0=$(sed -n 's/.*"event":"eval","step":0,"val_loss":\([0-9.]*\).*/\1/p' "$ref/events.jsonl" | tail -n 1)
v1=$(sed -n 's/.*"event":"eval".*"val_loss":\([0-9.]*\).*/\1/p' "$ref/events.jsonl" | tail -n 1)
echo "   $right of $total continued correctly; validation loss $v0 -> $v1 nats per byte"
say "done"
