#!/bin/sh
# CLI tests of the option rules every command shares (cli/args.c): --opt=value
# and --opt value are the same, "--" ends the options, a mistake is exit 64
# with one line, long names are whole words, and `spotrain SUB --help` works
# for every command in main.c's table.
# module: cli
. tests/cli/lib.sh
S=$SPOTRAIN
ROOT=$PWD
cd "$T_TMP" || exit 1
# --dry-run prints zero/recompute auto's choice against MemAvailable, which
# moves between two runs: a fixed figure keeps the compared outputs equal.
SPOTRAIN_TEST_MEM_AVAILABLE=$((16 * 1024 * 1024 * 1024))
export SPOTRAIN_TEST_MEM_AVAILABLE

# t_same NAME CODE PATTERN "CMD A" "CMD B": both command lines exit CODE,
# print the same (stdout and stderr), and that output matches PATTERN, so
# two spellings that both fail the same way do not pass.
t_same() {
    name=$1 want=$2 pat=$3
    sh -c "$4" >a.out 2>&1
    ra=$?
    sh -c "$5" >b.out 2>&1
    rb=$?
    if [ "$ra" -ne "$want" ] || [ "$rb" -ne "$want" ]; then
        t_bad "$name" "exits $ra and $rb, wanted $want; $(tail -n 2 a.out) | $(tail -n 2 b.out)"
    elif ! cmp -s a.out b.out; then
        t_bad "$name" "outputs differ: $(diff a.out b.out | head -n 4)"
    elif ! grep -Eq -- "$pat" a.out; then
        t_bad "$name" "output does not match /$pat/: $(tail -n 3 a.out)"
    else
        t_ok "$name"
    fi
}

# t_line NAME CODE PATTERN CMD...: exit CODE, exactly one line of output
# (nothing on stdout), and it matches PATTERN.
t_line() {
    name=$1 want=$2 pat=$3
    shift 3
    "$@" >o.out 2>e.out
    got=$?
    if [ "$got" -ne "$want" ]; then
        t_bad "$name" "exit $got, wanted $want: $(cat e.out o.out | tail -n 2)"
    elif [ -s o.out ] || [ "$(wc -l <e.out)" -ne 1 ]; then
        t_bad "$name" "wanted one line on stderr, got: $(cat o.out e.out | head -n 4)"
    elif ! grep -Eq -- "$pat" e.out; then
        t_bad "$name" "line does not match /$pat/: $(cat e.out)"
    else
        t_ok "$name"
    fi
}

cat >plan.ini <<'EOT'
[model]
preset = deepseek-7b
[cost]
nodes = 1
gpus_per_node = 8
gpu = a100
ondemand_hours = 100
spot_hours = 110
[price.node]
ondemand = 48
spot = 20
EOT
mkdir run
printf '[price.node]\nondemand = 10\nspot = 4\n' >prices.ini
cat >run/events.jsonl <<'EOT'
{"ts":1000.0,"event":"start","step":0,"world":2,"nodes":2,"resumed_from":null,"tokens_per_step":1000,"max_steps":1000,"config":"x.ini","backend":"cpu","params":100}
{"ts":1360.0,"event":"step","step":100,"loss":2.0,"lr":0.001,"grad_norm":1,"tokens":100000,"tok_per_s":300,"ms":3600,"train_seconds":360}
EOT
printf '0,z1,p5,1.0\n36000,z1,p5,3.0\n72000,z1,p5,1.0\n0,z2,p5,1.5\n' >h.csv

# --- --opt=value is --opt value ---------------------------------------------
t_same "train --set=k=v is --set k=v" 0 "max_steps = 7" \
    "'$S' train /dev/null --dry-run --set=train.max_steps=7" "'$S' train /dev/null --dry-run --set train.max_steps=7"
t_same "train --world=4 is --world 4" 0 "with 4 ranks" \
    "'$S' train /dev/null --dry-run --world=4" "'$S' train /dev/null --dry-run --world 4"
t_same "train --gpu-memory=GiB is --gpu-memory GiB" 0 "resolved configuration" \
    "'$S' train /dev/null --dry-run --gpu-memory=40" "'$S' train /dev/null --dry-run --gpu-memory 40"
t_same "resume --set=k=v is --set k=v" 0 "max_steps = 9" \
    "'$S' resume /dev/null --dry-run --set=train.max_steps=9" "'$S' resume /dev/null --dry-run --set train.max_steps=9"
t_same "cost estimate --set=k=v is --set k=v" 0 "run hours +100 -> " \
    "'$S' cost estimate plan.ini --set=cost.ondemand_hours=100" "'$S' cost estimate plan.ini --set cost.ondemand_hours=100"
t_same "cost report --config=FILE is --config FILE" 0 "prices.ini" \
    "'$S' cost report run --config=prices.ini" "'$S' cost report run --config prices.ini"
t_same "bid --hours=H is --hours H" 0 "job: 10.0 running hours" \
    "'$S' bid --history h.csv --hours=10" "'$S' bid --history h.csv --hours 10"
t_same "bid --history=FILE is --history FILE" 0 "recommendation: z" \
    "'$S' bid --history=h.csv" "'$S' bid --history h.csv"
t_same "bid --gpus=TYPE=N is --gpus TYPE=N" 0 "per GPU of 8" \
    "'$S' bid --history h.csv --per-gpu --gpus=p5=8" "'$S' bid --history h.csv --per-gpu --gpus p5=8"
t_same "ckpt export --dtype=X is --dtype X" 64 "--dtype 'f16' is not f32 or bf16" \
    "'$S' ckpt export nowhere -o out --dtype=f16" "'$S' ckpt export nowhere -o out --dtype f16"
t_same "ckpt export -oDIR is -o DIR" 66 "nowhere" \
    "'$S' ckpt export nowhere -oout" "'$S' ckpt export nowhere -o out"

# --- "--" ends the options ----------------------------------------------------
t_exit "init -- --force writes a file named --force" 0 "" "$S" init -- --force
t_exit "  ... and it is the sample config" 0 "" cmp -s ./--force "$ROOT/sample.ini"
t_exit "init -- --force again refuses: it is FILE, not the flag" 64 "--force exists" "$S" init -- --force
cp plan.ini ./--json
t_exit "cost estimate -- --json reads a config named --json" 0 "run hours" "$S" cost estimate -- --json
t_exit "train --dry-run -- -x.ini reads a config named -x.ini" 0 "resolved configuration \(-x.ini\)" \
    sh -c "cp /dev/null ./-x.ini && '$S' train --dry-run -- -x.ini"
t_exit "ckpt verify -- --json: a path, not the flag (missing input)" 66 "\-\-json" "$S" ckpt verify -- --json
cp h.csv ./-h.csv
t_exit "bid -- -h.csv reads a history named -h.csv" 0 "recommendation: z" "$S" bid --history -- -h.csv
t_exit "options before -- still count" 0 "with 2 ranks" "$S" train --dry-run --world 2 -- /dev/null

# --- mistakes: exit 64, one line naming the command ---------------------------
t_line "train: unknown option" 64 "^spotrain: train: .*'--bogus'.*unknown option" "$S" train /dev/null --bogus
t_line "resume takes no --force" 64 "^spotrain: resume: .*'--force'" "$S" resume /dev/null --force
t_line "ckpt inspect: unknown option" 64 "^spotrain: ckpt inspect: unexpected argument '--yaml'" "$S" ckpt inspect x --yaml
t_line "ckpt export: unknown short option" 64 "'-z'" "$S" ckpt export x -z
t_line "cost estimate: unknown option" 64 "^spotrain: cost estimate: .*unknown option" "$S" cost estimate plan.ini --bogus
t_line "cost report: unknown option" 64 "^spotrain: cost report: " "$S" cost report run --bogus
t_line "bid: unknown option" 64 "^spotrain: bid: " "$S" bid --history h.csv --bogus
t_line "init: unknown option" 64 "^spotrain: init: " "$S" init --bogus
t_line "selftest comm: unknown option" 64 "^spotrain: selftest comm: " "$S" selftest comm /dev/null --bogus
t_line "a value where none is taken" 64 "--json takes no value" "$S" cost estimate plan.ini --json=yes
t_line "a missing value" 64 "train: --world needs a value" "$S" train /dev/null --dry-run --world
t_line "a missing value (short option)" 64 "ckpt export: -o needs a value" "$S" ckpt export x -o
t_line "no abbreviations: --dry is not --dry-run" 64 "'--dry'" "$S" train /dev/null --dry
t_line "no abbreviations: --head is not --header" 64 "'--head'" "$S" cost report run --csv --head
t_line "a second CONFIG" 64 "unexpected argument 'b.ini'" "$S" train a.ini b.ini
t_line "unknown command names the commands" 64 "unknown command 'frob'.*train, resume" "$S" frob

# --- --help for every command in the table ------------------------------------
cmds=$("$S" frob 2>&1 | sed -n 's/.*; one of \(.*\) (see spotrain --help)$/\1/p' | tr -d ',')
t_exit "the table lists the commands" 0 "" sh -c "echo '$cmds' | grep -q 'train resume ckpt cost bid'"
"$S" --help >top.txt
for c in $cmds; do
    t_exit "spotrain $c --help" 0 "." "$S" "$c" --help
    t_exit "spotrain --help lists $c" 0 "" grep -q "^  $c\\b" top.txt
done
for c in "ckpt inspect" "ckpt verify" "ckpt export" "cost estimate" "cost report" "selftest comm" "data tokenize"; do
    # shellcheck disable=SC2086
    t_exit "spotrain $c --help" 0 "usage: spotrain $c" "$S" $c --help
done
t_exit "-h is --help" 0 "usage: spotrain train" "$S" train -h
t_exit "--help stops at once: later mistakes do not matter" 0 "usage: spotrain cost report" \
    "$S" cost report --help --bogus
t_end
