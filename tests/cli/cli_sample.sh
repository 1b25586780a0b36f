#!/bin/sh
# `spotrain sample`: its options parse as getopt_long does (--opt=value,
# --opt value, --), and generation stops at the tokenizer's end-of-text token
# unless --ignore-eos. The end-of-text token is made to be the byte the model
# greedily emits first, so the stop is certain on any machine.
# module: cli tok
. "$(dirname "$0")/lib.sh"
S=$SPOTRAIN
cd "$T_TMP" || exit 1

t_byte_tokenizer tokenizer.json
cat > a.ini <<EOF
[data]
tokenizer = tokenizer.json
[train]
run_dir = a
max_steps = 2
global_batch = 4
micro_batch = 4
val_every = 0
[checkpoint]
interval_steps = 2
EOF
"$S" train a.ini --quiet || t_bad "train the run to sample from"

# The first greedy byte after the prompt, with no end-of-text token.
first=$("$S" sample a --tokens 1 --prompt 12+34= 2>/dev/null | /usr/bin/python3 -c '
import sys; d = sys.stdin.buffer.read(); print(d[6] if len(d) > 6 else -1)')
if [ "$first" -ge 33 ] 2>/dev/null && [ "$first" -le 126 ]; then
    t_ok "greedy first byte is printable ($first)"
    /usr/bin/python3 -c "import json,sys; json.dump({'eos_token': chr($first)}, open('tokenizer_config.json', 'w'))"
    t_exit "sample stops at the end-of-text token and says so" 0 "stopped at the end-of-text token .* after 0 tokens" \
        "$S" sample a --tokens 5 --prompt 12+34=
    out=$("$S" sample a --tokens 5 --prompt 12+34= 2>/dev/null)
    [ "$out" = "12+34=" ] && t_ok "the end-of-text token is not printed" || t_bad "eos printed" "stdout '$out'"
    out=$("$S" sample a --tokens 5 --prompt 12+34= --ignore-eos 2>&1)
    n=$(printf '%s' "$out" | head -n 1 | wc -c)
    if [ "$n" -eq 11 ] && ! echo "$out" | grep -q stopped; then t_ok "--ignore-eos goes on for all 5 tokens"
    else t_bad "--ignore-eos" "output '$out'"; fi
    rm -f tokenizer_config.json
else
    t_bad "greedy first byte" "got '$first'; the test needs a printable byte to make the end-of-text token"
fi

# Option syntax: the three spellings give the same output.
a=$("$S" sample a --tokens 3 --prompt 12+34= --seed 5 --temperature 0.7 2>&1)
b=$("$S" sample --tokens=3 --prompt=12+34= --seed=5 --temperature=0.7 a 2>&1)
c=$("$S" sample --tokens 3 --prompt 12+34= --seed=5 --temperature 0.7 -- a 2>&1)
if [ -n "$a" ] && [ "$a" = "$b" ] && [ "$a" = "$c" ]; then t_ok "--opt=value, --opt value and -- agree"
else t_bad "option spellings" "'$a' / '$b' / '$c'"; fi
mkdir -p ./-a && cp -r a/ckpt ./-a/
t_exit "after --, a run directory may start with a dash" 0 "^12\\+34=" "$S" sample --tokens 2 --prompt 12+34= -- -a
t_exit "an unknown option is named" 64 "unknown option '--frobnicate'" "$S" sample a --frobnicate
t_exit "a missing value is named" 64 "--tokens needs a value" "$S" sample a --tokens
t_exit "a bad value is named" 64 "--tokens: 'x' is not a count" "$S" sample a --tokens=x
t_exit "a second path is refused" 64 "unexpected argument 'b'" "$S" sample a b
t_exit "no path" 64 "which run" "$S" sample --tokens 2
t_exit "--help" 0 "--ignore-eos" "$S" sample --help
t_end
