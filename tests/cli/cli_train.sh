#!/bin/sh
# CLI tests of train/resume: help and usage, bad configs and bad shards with
# their exit codes and messages, --dry-run plans, refusing a used run_dir,
# and the demo configuration actually learning.
# Option strings like $F are word-split on purpose.
# shellcheck disable=SC2086
# module: train config data cli
. tests/cli/lib.sh
S=$SPOTRAIN
SRC=$PWD
cd "$T_TMP" || exit 1
# Small and fast: what every training test here uses.
FAST="--set train.max_steps=6 --set model.dim=32 --set model.n_layers=1 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.ffn_dim=64 --set model.seq_len=16 --set train.global_batch=4 --set train.micro_batch=4 --set train.val_every=0 --set checkpoint.interval_steps=0 --quiet"

t_exit "--help" 0 "usage: spotrain" "$S" --help
t_exit "--version names backends" 0 "backends: cpu" "$S" --version
t_exit "no command" 64 "" "$S"
t_exit "unknown command" 64 "unknown command 'frobnicate'" "$S" frobnicate
t_exit "train --help" 0 "--dry-run" "$S" train --help
t_exit "train without config" 64 "which config" "$S" train

printf '[train]\nmax_stepz = 3\n' > unknown.ini
t_exit "unknown key: file:line and key, exit 78" 78 "unknown.ini:2: unknown key 'max_stepz' in \[train\]" "$S" train unknown.ini
printf '[train]\nlr = fast\n' > badval.ini
t_exit "bad value, exit 78" 78 "badval.ini:2: train.lr = 'fast' is not a number" "$S" train badval.ini
printf '[train]\nmax_steps = -4\n' > range.ini
t_exit "out of range, exit 78" 78 "range.ini:2: train.max_steps = -4 is out of range" "$S" train range.ini
{ printf '[train]\nrun_dir = '; head -c 300 /dev/zero | tr '\0' 'a'; printf '\n'; } > long.ini
t_exit "long line refused, exit 78" 78 "long.ini:2: line is [0-9]+ bytes long" "$S" train long.ini
t_exit "missing config, exit 66" 66 "nope.ini" "$S" train nope.ini
t_exit "bad --set, exit 78" 78 "--set train.bogus" "$S" train /dev/null --set train.bogus=1

# llm.c shards: header magic/version, size, token range.
/usr/bin/python3 - <<'PY'
import struct
def shard(name, magic, ver, count, width, ntok, top):
    with open(name, "wb") as f:
        f.write(struct.pack("<256i", magic, ver, count, *([0] * 253)))
        fmt = "<H" if width == 2 else "<I"
        for i in range(ntok):
            f.write(struct.pack(fmt, top if i == ntok - 1 else i % 200))
shard("good.bin", 20240520, 1, 4000, 2, 4000, 255)
shard("badmagic.bin", 20240521, 1, 4000, 2, 4000, 255)
shard("trunc.bin", 20240520, 1, 4000, 2, 3000, 255)
shard("bigtok.bin", 20240801, 7, 4000, 4, 4000, 300)
PY
SH="--set data.source=shards --set model.vocab_size=256"
t_exit "bad shard magic, exit 65" 65 "badmagic.bin: bad header" "$S" train /dev/null $SH --set data.train_path=badmagic.bin $FAST
t_exit "truncated shard, exit 65" 65 "trunc.bin: size .* truncated" "$S" train /dev/null $SH --set data.train_path=trunc.bin $FAST
t_exit "token >= vocab, exit 65" 65 "bigtok.bin: token 3999 is id 300" "$S" train /dev/null $SH --set data.train_path=bigtok.bin $FAST
t_exit "no shard matches, exit 66" 66 "no data shards match" "$S" train /dev/null $SH --set "data.train_path=zz*.bin" $FAST
t_exit "good shard trains" 0 "" "$S" train /dev/null $SH --set data.train_path=good.bin --set train.run_dir=r-shard $FAST

t_exit "dry-run 7B: exact parameter count" 0 "parameters: 6910365696 " "$S" train /dev/null --set model.preset=deepseek-7b --dry-run
t_exit "dry-run 67B over 64 ranks" 0 "parameters: 674[0-9]{8} " "$S" train /dev/null --set model.preset=deepseek-67b --dry-run --world 64
t_exit "dry-run 7B over 8 ranks: per-rank range and buffers" 0 "this rank's range: 863795712 parameters" "$S" train /dev/null --set model.preset=deepseek-7b --dry-run --world 8
t_exit "dry-run 7B: says it does not fit this machine" 0 "warning: .* GiB per process does not fit this machine" "$S" train /dev/null --set model.preset=deepseek-7b --dry-run
t_exit "dry-run tiny: fits" 0 "fits this machine" "$S" train /dev/null --dry-run
t_exit "dry-run: communication share of a step on 8 x A100 nodes at 200 Gbit/s" 0 \
    "4.98 s of network per step against 49.58 s of compute .*: 9% of a step" \
    "$S" train "$OLDPWD/examples/spot-8xa100.ini" --dry-run --world 64 --set cost.network_gbps=200 --set train.global_batch=2304 \
    --set train.zero=1 --set train.recompute=none
t_exit "dry-run: a data glob that matches nothing is an error" 66 "no data shards match" "$S" train /dev/null --dry-run --set data.source=shards --set "data.train_path=$T_TMP/none/*.bin"
t_exit "cuda backend unavailable, exit 69" 69 "cuda" "$S" train /dev/null --set train.backend=cuda --set train.run_dir=r-cuda $FAST

t_exit "train writes a run" 0 "" "$S" train /dev/null --set train.run_dir=r1 $FAST
t_exit "train refuses a run_dir with checkpoints" 64 "already holds 2 checkpoints" "$S" train /dev/null --set train.run_dir=r1 $FAST
t_exit "train --force moves them aside" 0 "" "$S" train /dev/null --set train.run_dir=r1 --force $FAST
if ls -d r1/ckpt.old-* >/dev/null 2>&1; then t_ok "old checkpoints kept aside"; else t_bad "old checkpoints kept aside"; fi
t_exit "resume reports a safe change" 0 "train.max_steps changed from '6' to '8'" "$S" resume /dev/null $(echo "$FAST" | sed 's/--quiet//') --set train.run_dir=r1 --set train.max_steps=8
cp r1/config.ini r1-config.before
t_exit "resume with another model shape: exit 78" 78 "holds a model of dim 32.*asks for 48" "$S" resume /dev/null $FAST --set train.run_dir=r1 --set model.dim=48 --set train.max_steps=10
if cmp -s r1/config.ini r1-config.before; then t_ok "a refused resume leaves config.ini as it was"
else t_bad "a refused resume leaves config.ini as it was" "$(diff r1-config.before r1/config.ini | head -n 4)"; fi
t_exit "train into a used run_dir without --force: refused" 64 "already holds" "$S" train /dev/null $FAST --set train.run_dir=r1 --set model.dim=48
if cmp -s r1/config.ini r1-config.before; then t_ok "a refused train leaves config.ini as it was"
else t_bad "a refused train leaves config.ini as it was" "$(diff r1-config.before r1/config.ini | head -n 4)"; fi
reason=$(/usr/bin/python3 -c 'import json,sys
r=[json.loads(l) for l in open(sys.argv[1])]
s=[x for x in r if x.get("event")=="start"]
print(s[-1].get("failed"), s[-1].get("code"), s[-1].get("reason",""))' r1/events.jsonl)
case "$reason" in
    "True 64 "*"already holds"*) t_ok "a start that failed is in the ledger with its reason" ;;
    *) t_bad "a start that failed is in the ledger with its reason" "last start record: $reason" ;;
esac
if grep -q '"event":"start"' r1/events.jsonl && grep -q '"event":"exit"' r1/events.jsonl; then
    t_ok "events.jsonl has start and exit"
else
    t_bad "events.jsonl has start and exit"
fi

# Disk full under a running trainer: a 700 KiB tmpfs holds one checkpoint of
# this model (about 300 KiB) but not the next one beside it.
mkdir full
if [ "$(id -u)" -eq 0 ] && mount -t tmpfs -o size=700k tmpfs full 2>/dev/null; then
    # busy=wait: a loaded machine must not skip the saves that fill the disk.
    FULL="--set train.run_dir=full/run --set train.max_steps=40 --set checkpoint.interval_steps=10 --set checkpoint.codec=none --set checkpoint.busy=wait"
    t_exit "disk full, checkpoint.required=1: exit 74" 74 "No space left on device" "$S" train /dev/null $FAST $FULL --set checkpoint.required=1
    t_exit "disk full: the earlier checkpoint still verifies" 0 "" "$S" ckpt verify full/run/ckpt/step-00000010
    rm -rf full/run
    t_exit "disk full, required=0: training goes on, the end reports 74" 74 "" "$S" train /dev/null $FAST $FULL
    if grep -q '"event":"step","step":40' full/run/events.jsonl; then t_ok "disk full, required=0: all 40 steps trained"; else t_bad "disk full, required=0: all 40 steps trained"; fi
    umount full
else
    echo "SKIP disk-full tests: not root or tmpfs mounts not permitted"
fi

# The demo configuration learns: validation loss falls well below its start.
"$S" train "$OLDPWD/sample.ini" --set train.run_dir=demo --set train.max_steps=150 --set train.val_every=50 --quiet >demo.log 2>&1
vals=$(t_events demo/events.jsonl eval val_loss | tr '\n' ' ')
first=$(echo "$vals" | cut -d' ' -f1)
last=$(echo "$vals" | awk '{print $NF}')
if [ -n "$first" ] && awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < 0.5 * a) }'; then
    t_ok "demo learns: val loss $first -> $last"
else
    t_bad "demo learns" "val losses: $vals; $(tail -n 3 demo.log)"
fi
t_exit "sample continues a prompt" 0 "^12\+34=" "$S" sample demo --prompt "12+34=" --tokens 3
# Export, read back independently: the float64 reference model built from
# model.safetensors + config.json continues a prompt as spotrain does.
t_exit "ckpt export of the demo run" 0 "exported step 150" "$S" ckpt export demo -o hf
a=$("$S" sample demo --prompt "47+25=" --tokens 12 2>&1)
b=$(/usr/bin/python3 "$OLDPWD/tests/ref/export_check.py" hf "47+25=" 12 2>&1)
if [ -n "$a" ] && [ "$a" = "$b" ]; then t_ok "exported weights continue '47+25=' as spotrain does"; else t_bad "export read back" "spotrain '$a' vs reference '$b'"; fi
# checkpoint.interval_seconds = auto (the default with no step interval):
# the first interval comes from the priors, one save a few steps in
# measures C, every change is an "interval" ledger line; a kill is a hard
# failure the next segment counts, and it starts from the measured C.
# lines RUN_DIR PATTERN: how many ledger lines match.
lines() { cat "$1/events.jsonl" 2>/dev/null | grep -c -- "$2"; }
# wait_lines RUN_DIR PATTERN N PID: progress-gated, like t_wait_steps.
wait_lines() {
    _w=0
    while [ "$(lines "$1" "$2")" -lt "$3" ] && kill -0 "$4" 2>/dev/null && [ $_w -lt 3000 ]; do
        sleep 0.02
        _w=$((_w + 1))
    done
}
AUTO=$(echo "$FAST" | sed 's/train.max_steps=6/train.max_steps=100000/')
"$S" train /dev/null $AUTO --set train.run_dir=auto >auto.log 2>&1 &
apid=$!
wait_lines auto '"cost_measured":true' 1 $apid
kill -KILL "$apid"
wait "$apid" 2>/dev/null
iv=$(/usr/bin/python3 -c 'import json,sys,math
r=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
i=[x for x in r if x.get("event")=="interval"]
c=[x for x in r if x.get("event")=="checkpoint"]
m=[x for x in i if x["cost_measured"]][0]
yd, cap = math.sqrt(2 * m["cost_s"] * m["mtbf_s"]), m["cost_s"] / 0.005   # the default overhead_percent 0.5
t, by = (yd, "young_daly") if yd <= cap else (cap, "overhead")
t, by = (10, "min_seconds") if t < 10 else (3600, "max_seconds") if t > 3600 else (t, by)
print(i[0]["seconds"], i[0]["by"], i[0]["cost_s"], i[0]["cost_measured"], i[0]["mtbf_s"], i[0]["hard_failures"],
      c[0]["step"], 0 < m["cost_s"] < 5 and m["mtbf_s"] >= 72000 * 0.999, abs(m["seconds"] - t) < 0.01 and m["by"] == by)' auto/events.jsonl 2>&1)
case "$iv" in
    "848.528 young_daly 5.0 False 72000.0 0 "*) t_ok "auto interval: first value from the priors (C 5 s, M 20 h), in the ledger" ;;
    *) t_bad "auto interval: first value from the priors" "$iv" ;;
esac
case "$iv" in
    *" 4 True True") t_ok "auto interval: the save at step 4 measures C; the interval follows min(sqrt(2 C M), C / 0.5%)" ;;
    *) t_bad "auto interval: early save measures C" "(first checkpoint step, 0 < C < 5 and M >= the prior's, interval matches) $iv" ;;
esac
# The restarted segment: one hard failure in seconds of training moves M
# from 20 h to minutes (the posterior mean of tests/ref/interval_ref.py, an
# independent sum); C is the measured one.
seen=$(lines auto '"event":"checkpoint"')
"$S" resume /dev/null $AUTO --set train.run_dir=auto --set checkpoint.min_seconds=0.3 \
    --set checkpoint.max_seconds=0.3 >auto2.log 2>&1 &
apid=$!
wait_lines auto '"event":"checkpoint"' $((seen + 2)) $apid
kill -TERM "$apid"
wait "$apid"
hf=$(PYTHONPATH=$SRC/tests/ref /usr/bin/python3 -c 'import json,sys,interval_ref
r=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
s=max(k for k, x in enumerate(r) if x.get("event")=="start")
m=[x for x in r[:s] if x.get("event")=="interval" and x["cost_measured"]][-1]
i=[x for x in r[s:] if x.get("event")=="interval"][0]
want=3600 / interval_ref.rate(1, max(i["hours"], 1 / 3600), 0.05)   # under a second counts as one
print(i["hard_failures"], i["cost_measured"], i["cost_s"] == m["cost_s"], i["mtbf_s"] < 3600, abs(i["mtbf_s"] / want - 1) < 0.005,
      i["seconds"])' auto/events.jsonl 2>&1)
if [ "$hf" = "1 True True True True 0.3" ]; then
    t_ok "auto interval: after the kill, 1 hard failure, M under an hour, C carried over from the ledger"
else t_bad "auto interval: after the kill" "(failures, measured, same C, M < 1 h, M formula, interval) $hf"; fi
n=$(($(lines auto '"event":"checkpoint"') - seen))
if [ "$n" -ge 2 ]; then t_ok "auto interval: bounds hold, checkpoints every 0.3 s ($n before the stop)"
else t_bad "auto interval: checkpoints within the bounds" "$n"; fi
t_exit "auto interval: min_seconds above max_seconds is a config error" 78 "min_seconds" "$S" train /dev/null $FAST \
    --set train.run_dir=autobad --set checkpoint.min_seconds=10 --set checkpoint.max_seconds=5
# OpenBLAS kernels older than the CPU (a CPU model OpenBLAS does not know):
# the training log warns exactly when --version does, and a forced
# OPENBLAS_CORETYPE silences both.
want=$("$S" --version | grep "^warning: OpenBLAS chose")
got=$("$S" train /dev/null ${FAST% --quiet} --set train.run_dir=blaswarn --set train.max_steps=1 2>&1 | grep "^warning: OpenBLAS chose")
said=silent
[ -z "$want" ] || said=warned
if [ "$want" = "$got" ]; then t_ok "OpenBLAS kernel warning: the log agrees with --version ($said here)"
else t_bad "OpenBLAS kernel warning: the log agrees with --version" "version: '$want' log: '$got'"; fi
t_exit "OpenBLAS kernel warning: silent with OPENBLAS_CORETYPE set" 1 "" \
    sh -c 'OPENBLAS_CORETYPE=Prescott "$1" --version | grep -q "^warning: OpenBLAS"' sh "$S"
t_end
