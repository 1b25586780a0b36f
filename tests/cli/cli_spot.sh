#!/bin/sh
# Stopping a real training run: for each provider's notice (fake metadata
# server), the notice file, SIGTERM and SIGUSR1 the trainer exits 75 soon
# after, leaves a checkpoint of the stop step that verifies, and `resume`
# continues from exactly that step; the same through spotrain-run + mpirun.
. tests/cli/lib.sh
S=$SPOTRAIN
RUN=$PWD/spot/spotrain-run
FAKE_SRV=$PWD/tests/cli/fake_metadata.py
cd "$T_TMP" || exit 1
F="--set model.dim=32 --set model.n_layers=1 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.ffn_dim=64 --set model.seq_len=16 --set train.global_batch=4 --set train.micro_batch=4 --set train.val_every=0 --set train.log_every=5 --quiet"
POLL=0.2

SRV=
python3 "$FAKE_SRV" --port-file port >srv.log 2>&1 &
SRV=$!
trap 'kill "$SRV" 2>/dev/null; t_cleanup' EXIT
i=0
while [ ! -s port ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
PORT=$(cat port)
URL=http://127.0.0.1:$PORT

ctl() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5).read()' "$URL/_control?$1"; }

# jget FILE EVENT FIELD: FIELD of the last EVENT record in an events.jsonl.
jget() {
    python3 - "$@" <<'PY'
import json, sys
v = None
for line in open(sys.argv[1]):
    o = json.loads(line)
    if o.get("event") == sys.argv[2]:
        v = o.get(sys.argv[3])
print("" if v is None else v)
PY
}

# Waits until the run in $1 has logged a training step (the loop is running).
wait_steps() {
    i=0
    while ! grep -q '"event":"step"' "$1/events.jsonl" 2>/dev/null && [ $i -lt 400 ]; do
        sleep 0.05
        i=$((i + 1))
    done
}

now() { python3 -c 'import time; print(time.time())'; }
elapsed_ok() { python3 -c 'import sys; sys.exit(0 if float(sys.argv[2]) - float(sys.argv[1]) < float(sys.argv[3]) else 1)' "$@"; }

# case NAME SOURCE TRIGGER SETTINGS...: trains until TRIGGER (a shell command,
# $pid is the trainer) and checks the whole stop/verify/resume story.
stop_case() {
    # Not "name": t_exit in lib.sh uses that variable.
    c_name=$1 source=$2 trigger=$3
    shift 3
    dir=run-$c_name
    # shellcheck disable=SC2086
    "$S" train /dev/null $F --set train.max_steps=100000 --set checkpoint.interval_steps=0 \
        --set train.run_dir="$dir" --set spot.poll_seconds=$POLL "$@" >"$dir.log" 2>&1 &
    pid=$!
    wait_steps "$dir"
    t0=$(now)
    eval "$trigger"
    wait "$pid"
    rc=$?
    t1=$(now)
    if [ "$rc" -eq 75 ] && elapsed_ok "$t0" "$t1" 5; then
        t_ok "$c_name: exit 75 within 5 s of the notice"
    else
        t_bad "$c_name: exit 75 within 5 s of the notice" "rc=$rc after $t0..$t1: $(tail -n 3 "$dir.log")"
        return
    fi
    got=$(jget "$dir/events.jsonl" notice source)
    if [ "$got" = "$source" ]; then
        t_ok "$c_name: notice recorded from $source"
    else
        t_bad "$c_name: notice recorded from $source" "source '$got'"
    fi
    step=$(jget "$dir/events.jsonl" stop step)
    ck=$(printf '%s/ckpt/step-%08d' "$dir" "$step")
    t_exit "$c_name: checkpoint of stop step $step verifies" 0 "" "$S" ckpt verify "$ck"
    # shellcheck disable=SC2086
    t_exit "$c_name: resume finishes" 0 "" "$S" resume /dev/null $F --set train.max_steps=$((step + 5)) \
        --set checkpoint.interval_steps=0 --set train.run_dir="$dir"
    first=$(jget "$dir/events.jsonl" start step)
    last=$(jget "$dir/events.jsonl" exit step)
    if [ "$first" = "$step" ] && [ "$last" = "$((step + 5))" ]; then
        t_ok "$c_name: resume continued from exactly step $step"
    else
        t_bad "$c_name: resume continued from exactly step $step" "start $first, end $last"
    fi
}

for p in aws gcp azure alibaba; do
    ctl "mode=$p&notice=0&time=&notbefore=&event_vm=vm-test"
    stop_case "$p" "$p" "ctl notice=1" --set spot.provider=$p --set spot.metadata_url="$URL"
done
acks=$(python3 -c 'import json, sys, urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1], timeout=5))["acks"])' "$URL/_state")
if [ "${acks:-0}" -ge 1 ]; then t_ok "azure: the event was acknowledged (StartRequests) after the final checkpoint"
else t_bad "azure: event acknowledged after the final checkpoint" "acks=$acks"; fi
ctl "mode=gcp&notice=0"
stop_case auto gcp "ctl notice=1" --set spot.provider=auto --set spot.metadata_url="$URL"
stop_case file file "echo preStop >$T_TMP/notice" --set spot.provider=file --set spot.notice_file="$T_TMP/notice"
# shellcheck disable=SC2016
stop_case SIGTERM SIGTERM 'kill -TERM $pid' --set spot.provider=none
# shellcheck disable=SC2016
stop_case SIGUSR1 SIGUSR1 'kill -USR1 $pid' --set spot.provider=none

# A hostile metadata service never stops training by itself.
ctl "mode=aws&notice=1&garbage=badjson"
# shellcheck disable=SC2086
"$S" train /dev/null $F --set train.max_steps=100000 --set checkpoint.interval_steps=0 \
    --set train.run_dir=run-hostile --set spot.poll_seconds=0.05 --set spot.provider=aws \
    --set spot.metadata_url="$URL" >run-hostile.log 2>&1 &
pid=$!
wait_steps run-hostile
sleep 1
if kill -0 "$pid" 2>/dev/null; then t_ok "garbage from the metadata service is ignored"; else t_bad "garbage from the metadata service is ignored"; fi
kill -TERM "$pid"
wait "$pid"
ctl "garbage=&notice=0"

# Under mpirun via spotrain-run: SIGTERM to the wrapper becomes SIGUSR1 to
# mpirun, which passes it to both ranks without killing them. --grace 3:
# once a rank exits non-zero, mpirun 4.1 waits twice odls_base_sigkill_timeout
# before it exits itself (even when every rank is gone already). No
# periodic saves (auto's probing save at step 3 included): the one
# checkpoint is the stop's.
if command -v mpirun >/dev/null 2>&1 && "$S" --version | grep -q "mpi: yes"; then
    # shellcheck disable=SC2086
    "$RUN" --backoff 0 --grace 3 --events run-mpi/events.jsonl -- mpirun -np 2 --allow-run-as-root --oversubscribe \
        "$S" train /dev/null $F --set train.max_steps=100000 --set checkpoint.interval_steps=0 \
        --set checkpoint.interval_seconds=0 --set train.run_dir=run-mpi >run-mpi.log 2>&1 &
    wpid=$!
    wait_steps run-mpi
    kill -TERM "$wpid"
    wait "$wpid"
    rc=$?
    n_ck=$(find run-mpi/ckpt -maxdepth 1 -name 'step-*' ! -name '*.tmp' | wc -l)
    step=$(jget run-mpi/events.jsonl stop step)
    if [ "$rc" -eq 75 ] && [ "$n_ck" -eq 1 ] && [ -n "$step" ] && ! grep -q '"event":"restart"' run-mpi/events.jsonl; then
        t_ok "mpirun: SIGTERM to spotrain-run -> one checkpoint, exit 75, no restart"
    else
        t_bad "mpirun: SIGTERM to spotrain-run -> one checkpoint, exit 75, no restart" \
            "rc=$rc checkpoints=$n_ck step=$step: $(tail -n 3 run-mpi.log)"
    fi
    t_exit "mpirun: both ranks' shards of step $step verify" 0 "" "$S" ckpt verify "$(printf 'run-mpi/ckpt/step-%08d' "$step")"
else
    echo "SKIP mpirun stop test: no mpirun or built with MPI=0"
fi

# A notice whose time is already past (a late poll, a skewed clock) still
# gets a final save in the provider's minimum window; the ledger's stop
# record says what is durable, and the stop line names its source once.
ctl "mode=aws&notice=0&time=2020-01-01T00:00:00Z"
FL=$(echo "$F" | sed 's/ --quiet//')
# shellcheck disable=SC2086
"$S" train /dev/null $FL --set train.max_steps=100000 --set checkpoint.interval_steps=0 --set train.log_every=100000 \
    --set train.run_dir=run-past --set spot.poll_seconds=$POLL --set spot.provider=aws --set spot.metadata_url="$URL" \
    --set metrics.textfile="$T_TMP/past.prom" --set metrics.every=1 >run-past.log 2>&1 &
pid=$!
wait_steps run-past
ctl notice=1
wait "$pid"
rc=$?
step=$(jget run-past/events.jsonl stop step)
durable=$(jget run-past/events.jsonl stop durable_step)
final=$(jget run-past/events.jsonl stop final_checkpoint)
if [ "$rc" -eq 75 ] && [ -n "$step" ] && [ "$durable" = "$step" ] && [ "$final" = ok ]; then
    t_ok "notice time already past: final checkpoint of step $step anyway, durable_step $durable"
else
    t_bad "notice time already past: final checkpoint anyway" "rc=$rc step=$step durable=$durable final=$final: $(tail -n 2 run-past.log)"
fi
if grep -q "stop requested by aws (" run-past.log && ! grep -q "aws: aws" run-past.log; then
    t_ok "the stop line names its source once"
else
    t_bad "the stop line names its source once" "$(grep 'stop requested' run-past.log)"
fi
# ... and names the notice's time as passed, not as "120 s until the deadline".
if grep -q "stop requested by aws (.*at 2020-01-01T00:00:00Z) at step $step; the notice's time passed [0-9]* s ago; 120 s allowed for a final save" run-past.log &&
    ! grep -q "until the deadline" run-past.log; then
    t_ok "a notice time already past is logged as passed"
else
    t_bad "a notice time already past is logged as passed" "$(grep 'stop requested' run-past.log)"
fi
# The textfile is rewritten at the stop and counts this interruption.
ms=$(sed -n 's/^spotrain_step{[^}]*} //p' "$T_TMP/past.prom")
mi=$(sed -n 's/^spotrain_interruptions_total{[^}]*} //p' "$T_TMP/past.prom")
if [ "$ms" = "$step" ] && [ "$mi" = 1 ]; then
    t_ok "metrics textfile rewritten at the stop: step $ms, interruptions 1"
else
    t_bad "metrics textfile rewritten at the stop" "step '$ms' (stop $step), interruptions '$mi'"
fi
# Whole-run counters after a resume: one interruption (not zero), every
# checkpoint of the run.
# shellcheck disable=SC2086
"$S" resume /dev/null $F --set train.max_steps=$((step + 4)) --set checkpoint.interval_steps=2 \
    --set train.run_dir=run-past --set metrics.textfile="$T_TMP/past.prom" --set metrics.every=1 >/dev/null 2>&1
mi=$(sed -n 's/^spotrain_interruptions_total{[^}]*} //p' "$T_TMP/past.prom")
mc=$(sed -n 's/^spotrain_checkpoints_total{[^}]*} //p' "$T_TMP/past.prom")
mn=$(sed -n 's/^spotrain_notices_total{[^}]*} //p' "$T_TMP/past.prom")
nc=$(grep -c '"event":"checkpoint"' run-past/events.jsonl)
if [ "$mi" = 1 ] && [ "$mn" = 1 ] && [ "$mc" = "$nc" ] && [ "$nc" -ge 3 ]; then
    t_ok "metrics after resume count the whole run: 1 interruption, 1 notice, $mc checkpoints"
else
    t_bad "metrics after resume count the whole run" "interruptions '$mi', notices '$mn', checkpoints '$mc' (ledger $nc)"
fi

# A notice whose time had already passed when the trainer started (the
# metadata service keeps serving it to a node being reclaimed): nothing is
# trained or saved, exit 88 with one line that says why; spotrain-run does
# not restart on it.
ctl "mode=aws&notice=1&time=2020-01-01T00:00:00Z"
last=$(jget run-past/events.jsonl exit step)
before=$(find run-past/ckpt -maxdepth 1 -name 'step-*' | sort | tr '\n' ' ')
n_ev=$(grep -c '"event":"checkpoint"' run-past/events.jsonl)
# shellcheck disable=SC2086
"$S" resume /dev/null $F --set train.max_steps=$((last + 50)) --set checkpoint.interval_steps=1 \
    --set train.run_dir=run-past --set spot.poll_seconds=$POLL --set spot.provider=aws \
    --set spot.metadata_url="$URL" >due.out 2>due.err
rc=$?
after=$(find run-past/ckpt -maxdepth 1 -name 'step-*' | sort | tr '\n' ' ')
code=$(jget run-past/events.jsonl exit code)
ex_step=$(jget run-past/events.jsonl exit step)
if [ "$rc" -eq 88 ] && [ "$code" = 88 ] && [ "$ex_step" = "$last" ]; then
    t_ok "notice already due at start: exit 88 at step $last, nothing trained"
else
    t_bad "notice already due at start: exit 88, nothing trained" "rc=$rc ledger exit $code at step $ex_step (start $last): $(tail -n 2 due.err)"
fi
if [ "$before" = "$after" ] && [ "$(grep -c '"event":"checkpoint"' run-past/events.jsonl)" = "$n_ev" ]; then
    t_ok "notice already due at start: nothing new saved"
else
    t_bad "notice already due at start: nothing new saved" "before: $before after: $after"
fi
if [ "$(wc -l <due.err)" -eq 1 ] &&
    grep -q "aws notice (spot instance-action terminate at 2020-01-01T00:00:00Z) names a time that passed [0-9]* s before this start: the node is being reclaimed; nothing trained or saved (newest durable checkpoint: step $last); exiting 88" due.err; then
    t_ok "notice already due at start: one line says why"
else
    t_bad "notice already due at start: one line says why" "$(cat due.err)"
fi
# shellcheck disable=SC2086
"$RUN" --backoff 0 --events run-past/events.jsonl -- "$S" resume /dev/null $F --set train.max_steps=$((last + 50)) \
    --set checkpoint.interval_steps=1 --set train.run_dir=run-past --set spot.poll_seconds=$POLL \
    --set spot.provider=aws --set spot.metadata_url="$URL" >due-run.out 2>due-run.err
rc=$?
starts=$(grep -c '"event":"start"' run-past/events.jsonl)
if [ "$rc" -eq 88 ] && ! grep -q '"event":"restart"' run-past/events.jsonl &&
    grep -q "spotrain-run: exit 88 .*this node is being reclaimed; not restarting on it" due-run.err; then
    t_ok "spotrain-run does not restart a trainer that started under a notice already due ($starts starts in all)"
else
    t_bad "spotrain-run does not restart on exit 88" "rc=$rc: $(tail -n 3 due-run.err)"
fi
ctl "notice=0&time="

t_end
