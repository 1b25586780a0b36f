#!/bin/sh
# CLI tests of checkpoints: ckpt help/usage/exit codes; bitwise resume (a run
# stopped by signals and resumed ends with the same digests and losses as a
# straight run); kill -9 during training leaves only checkpoints that
# verify; a corrupted newest checkpoint fails verify with 65 and resume falls
# back to the previous one.
# shellcheck source=tests/cli/lib.sh
# module: ckpt train cli
. tests/cli/lib.sh
S=$SPOTRAIN
cd "$T_TMP" || exit 1
# N steps of about 5 ms: long enough that the signals and kills below land
# mid-run (a run that finished first would make those checks vacuous).
N=600
NDIR=$(printf 'step-%08d' $N)
cat > run.ini <<INI
[model]
dim = 64
n_layers = 2
n_heads = 2
n_kv_heads = 1
ffn_dim = 128
seq_len = 32
[train]
max_steps = $N
global_batch = 8
micro_batch = 8
val_every = 0
log_every = 1
[checkpoint]
interval_steps = 20
keep_last = 3
INI
STEADY="--quiet"

t_exit "ckpt inspect --help" 0 "usage: spotrain ckpt inspect" "$S" ckpt inspect --help
t_exit "ckpt verify --help" 0 "usage: spotrain ckpt verify" "$S" ckpt verify --help
t_exit "ckpt export --help" 0 "usage: spotrain ckpt export" "$S" ckpt export --help
t_exit "ckpt unknown verb" 64 "unknown verb" "$S" ckpt frob
t_exit "ckpt --help lists the verbs" 0 "spotrain ckpt export" "$S" ckpt --help
t_exit "ckpt verify without path" 64 "which checkpoint" "$S" ckpt verify
t_exit "ckpt inspect bad flag" 64 "unexpected argument" "$S" ckpt inspect x --yaml
t_exit "ckpt verify missing path" 66 "nope" "$S" ckpt verify nope
mkdir empty
t_exit "ckpt verify empty dir" 66 "no checkpoints" "$S" ckpt verify empty

# digest RUN_DIR STEP -> "params adam_m adam_v" from inspect --json
digest() {
    "$S" ckpt inspect --json "$1/ckpt/$(printf 'step-%08d' "$2")" 2>/dev/null |
        sed -n 's/^ *"\(params\|adam_m\|adam_v\)": "\([0-9a-f]*\)".*/\2/p' | tr '\n' ' '
}
# losses RUN_DIR -> "step loss" lines, one per step (a re-run step must agree)
losses() {
    sed -n 's/.*"event":"step","step":\([0-9]*\),"loss":\([^,]*\),.*/\1 \2/p' "$1/events.jsonl" | sort -un
}

"$S" train run.ini --set train.run_dir=straight $STEADY >straight.log 2>&1
rc=$?
ref=$(digest straight $N)
if [ $rc -eq 0 ] && [ -n "$ref" ]; then t_ok "straight run: $N steps, digest $ref"; else t_bad "straight run" "exit $rc, digest '$ref'"; fi

# Stops at several moments (SIGUSR1 -> durable checkpoint -> 75), resume
# until done: same digests, same losses.
# Each signal waits for a few more logged steps first, so it lands mid-run
# however fast the machine is; the jitter after it varies the moment (mid-step,
# mid-checkpoint: checkpoints come every 20 steps).
rounds=0
stops=0
cmd=train
while [ $rounds -lt 5 ]; do
    seen=$(t_steps stopped)
    "$S" $cmd run.ini --set train.run_dir=stopped $STEADY >>stopped.log 2>&1 &
    pid=$!
    t_wait_steps stopped $((seen + 5 + rounds * 7)) $pid
    sleep "0.0$(( (rounds * 37 + 3) % 9 ))"
    kill -USR1 $pid 2>/dev/null
    wait $pid
    rc=$?
    rounds=$((rounds + 1))
    [ $rc -eq 75 ] && stops=$((stops + 1))
    cmd=resume
done
"$S" resume run.ini --set train.run_dir=stopped $STEADY >>stopped.log 2>&1
rc=$?
got=$(digest stopped $N)
if [ $stops -eq $rounds ]; then t_ok "$stops stops with exit 75 mid-run"; else t_bad "every stop mid-run exits 75" "only $stops of $rounds rounds"; fi
if [ $rc -eq 0 ] && [ "$got" = "$ref" ]; then t_ok "stopped $stops times and resumed: identical digests"
else t_bad "stop/resume bitwise" "exit $rc after $rounds rounds; digest '$got' vs '$ref'"; fi
if [ "$(losses stopped)" = "$(losses straight)" ] && [ "$(losses straight | wc -l)" -eq $N ]; then
    t_ok "stop/resume: identical losses at every step"
else t_bad "stop/resume losses" "$(diff "$(losses stopped)" "$(losses straight)" 2>&1 | head -n 3)"; fi

# kill -9 at assorted moments: every committed checkpoint verifies, and the
# run still ends with the straight run's state.
# A checkpoint every step, so most kills land inside one.
i=0 bad=0 killed=0
while [ $i -lt "${CKPT_CRASH_ROUNDS:-8}" ]; do
    seen=$(t_steps crash)
    "$S" resume run.ini --set train.run_dir=crash --set checkpoint.interval_steps=1 $STEADY >>crash.log 2>&1 &
    pid=$!
    t_wait_steps crash $((seen + 2 + i % 4 * 3)) $pid
    sleep "0.0$(( (i * 53 + 7) % 9 ))"
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    [ $? -eq 137 ] && killed=$((killed + 1))
    for d in crash/ckpt/step-*; do
        case "$d" in *.tmp|*'*') continue ;; esac
        "$S" ckpt verify "$d" >>crash.log 2>&1 || bad=$((bad + 1))
    done
    i=$((i + 1))
done
"$S" resume run.ini --set train.run_dir=crash --set checkpoint.interval_steps=1 $STEADY >>crash.log 2>&1
rc=$?
got=$(digest crash $N)
if [ $killed -eq $i ]; then t_ok "$killed of $i kill -9 landed mid-run"; else t_bad "every kill -9 lands mid-run" "only $killed of $i"; fi
if [ $bad -eq 0 ] && [ $rc -eq 0 ] && [ "$got" = "$ref" ]; then t_ok "kill -9 x$killed: committed checkpoints verify, resume reaches the same state"
else t_bad "kill -9 crash safety" "$bad failed verifies, exit $rc, digest '$got' vs '$ref'"; fi

# A committed checkpoint is its manifest and shard data, nothing else: the
# per-rank shard index is merged into the manifest by the commit, and one
# left beside it would be a file that `ckpt verify` does not cover.
newest=straight/ckpt/$NDIR
files=$(ls "$newest" | tr '\n' ' ')
if [ "$files" = "manifest.json shard-00000.bin " ]; then t_ok "a committed checkpoint holds manifest.json and shard-00000.bin only"
else t_bad "a committed checkpoint holds manifest.json and shard-00000.bin only" "$files"; fi

# Corruption through the CLI: flip a byte in the newest shard.
size=$(wc -c <"$newest/shard-00000.bin")
printf 'X' | dd of="$newest/shard-00000.bin" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
t_exit "verify corrupted: exit 65 naming the chunk" 65 "$NDIR: shard-00000.bin chunk [0-9]+" "$S" ckpt verify "$newest"
t_exit "inspect dir with a bad one: exit 65" 65 "INVALID" "$S" ckpt inspect straight
"$S" resume run.ini --set train.run_dir=straight --set train.max_steps=$N >fallback.log 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "skipping step $N" fallback.log && [ "$(digest straight $N)" = "$ref" ]; then
    t_ok "resume skips the corrupt step $N, falls back, recomputes the same state"
else t_bad "resume fallback" "exit $rc, digest '$(digest straight $N)' vs '$ref': $(grep -c "skipping step $N" fallback.log) skip lines"; fi
t_exit "the corrupt step $N was moved to RUN_DIR/ckpt.bad/, not deleted (still fails verify)" 65 "shard-00000.bin chunk" \
    "$S" ckpt verify "straight/ckpt.bad/$NDIR"
for oldest in straight/ckpt/step-*; do break; done
rm -f "$oldest/manifest.json"
t_exit "verify without manifest: exit 65" 65 "$oldest: manifest.json" "$S" ckpt verify "$oldest"

# Checkpoints exist and none verifies: resume must not quietly start again
# from step 0 (and then rotate the damaged ones away). 65 naming each and
# why; --fresh-if-corrupt starts over and keeps them in RUN_DIR/ckpt.bad/.
TINY="--set model.dim=32 --set model.n_layers=1 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.ffn_dim=64 \
--set model.seq_len=16 --set train.global_batch=4 --set train.micro_batch=4 --set checkpoint.interval_steps=2 \
--set checkpoint.keep_last=1 --set train.run_dir=allbad --quiet"
"$S" train /dev/null $TINY --set checkpoint.keep_last=2 --set train.max_steps=4
for d in allbad/ckpt/step-*; do
    size=$(wc -c <"$d/shard-00000.bin")
    printf 'X' | dd of="$d/shard-00000.bin" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
done
n0=$(t_steps allbad)
t_exit "resume, no checkpoint verifies: exit 65 naming each and why, and the way out" 65 \
    "2 checkpoints under .*allbad/ckpt and none verifies; .*--fresh-if-corrupt.* Why each failed: step 4 \(.*shard-00000.bin chunk.*\); step 2 \(" \
    "$S" resume /dev/null $TINY --set train.max_steps=6
if [ -d allbad/ckpt/step-00000002 ] && [ -d allbad/ckpt/step-00000004 ] && [ "$(t_steps allbad)" = "$n0" ]; then
    t_ok "the refused resume trained nothing and left both checkpoints in place"
else t_bad "the refused resume trained nothing and left both checkpoints in place" "$(ls allbad/ckpt)"; fi
t_exit "resume --fresh-if-corrupt starts over from step 0" 0 "" "$S" resume /dev/null $TINY --set train.max_steps=6 --fresh-if-corrupt
if [ "$(ls allbad/ckpt.bad | tr '\n' ' ')" = "step-00000002 step-00000004 " ] && [ "$(ls allbad/ckpt | tr '\n' ' ')" = "step-00000006 " ] &&
   "$S" ckpt verify allbad/ckpt/step-00000006 >/dev/null 2>&1; then
    t_ok "--fresh-if-corrupt moved the damaged ones to RUN_DIR/ckpt.bad/ (rotation spared them), step 6 verifies"
else t_bad "--fresh-if-corrupt moved the damaged ones to RUN_DIR/ckpt.bad/" "ckpt.bad: $(ls allbad/ckpt.bad 2>&1 | tr '\n' ' '); ckpt: $(ls allbad/ckpt | tr '\n' ' ')"; fi
t_exit "train --fresh-if-corrupt is a usage error (resume only)" 64 "unexpected argument" "$S" train /dev/null $TINY --fresh-if-corrupt

# Export: safetensors header and config.json.
t_exit "export" 0 "exported step $N" "$S" ckpt export straight -o hf
if [ -s hf/model.safetensors ] && grep -q '"LlamaForCausalLM"' hf/config.json; then t_ok "export wrote model.safetensors and config.json"
else t_bad "export files"; fi
t_end
