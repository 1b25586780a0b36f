# spotrain-run's exit-code policy, restart budget, backoff, events records,
# hostfile regeneration and signal forwarding, driven by a fake command that
# follows a plan of exit codes (one per launch).
. tests/cli/lib.sh
RUN=$PWD/spot/spotrain-run
FAKE=$T_TMP/fake.sh
cat >"$FAKE" <<'EOF'
#!/bin/sh
n=$(cat "$FAKE_COUNT" 2>/dev/null || echo 0)
echo $((n + 1)) >"$FAKE_COUNT"
echo "$OMPI_MCA_odls_base_sigkill_timeout attempt=$SPOTRAIN_ATTEMPT" >"$FAKE_ENV"
code=$(sed -n "$((n + 1))p" "$FAKE_PLAN")
case $code in
    KILL) kill -KILL $$ ;;
    TERM) kill -TERM $$ ;;
    WAITUSR1)
        trap 'echo usr1 >>"$FAKE_LOG"; exit 75' USR1
        touch "$FAKE_READY"
        while :; do sleep 0.05; done ;;
    '') exit 99 ;;
    *) exit "$code" ;;
esac
EOF
chmod +x "$FAKE"
export FAKE_COUNT="$T_TMP/count" FAKE_PLAN="$T_TMP/plan" FAKE_ENV="$T_TMP/env" FAKE_LOG="$T_TMP/log"
export FAKE_READY="$T_TMP/ready"
EV=$T_TMP/events.jsonl

# plan CODES...: the fake command's exit codes, one launch each.
plan() { rm -f "$FAKE_COUNT" "$EV" "$FAKE_LOG" "$FAKE_READY"; printf '%s\n' "$@" >"$FAKE_PLAN"; }
launches() { cat "$FAKE_COUNT" 2>/dev/null || echo 0; }
expect_launches() {
    if [ "$(launches)" -eq "$2" ]; then t_ok "$1"; else t_bad "$1" "launched $(launches) times, wanted $2"; fi
}

plan 0
t_exit "exit 0 ends the loop" 0 "finished" "$RUN" --backoff 0 -- "$FAKE"
expect_launches "exit 0 runs once" 1

plan 75 75 0
t_exit "75 restarts until 0" 0 "restart 2 of 100" "$RUN" --backoff 0 --events "$EV" -- "$FAKE"
expect_launches "75 75 0 launches three times" 3
if [ "$(grep -c '"event":"restart"' "$EV")" -eq 2 ] && grep -q '"attempt":2,"exit_code":75,"signal":null' "$EV" &&
    python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "$EV"; then
    t_ok "restart records are valid JSON lines"
else
    t_bad "restart records are valid JSON lines" "$(cat "$EV")"
fi

for code in 64 65 66 69 70 74 78 130; do
    plan "$code" 0
    t_exit "exit $code is not restarted" "$code" "cannot fix" "$RUN" --backoff 0 -- "$FAKE"
    expect_launches "exit $code runs once" 1
done

# 88: the trainer started under a termination notice already due; restarting
# on this node would repeat that until the budget runs out.
plan 88 0
t_exit "exit 88 (notice already due at start) is not restarted here" 88 \
    "exit 88 \(started under a termination notice already due\): this node is being reclaimed; not restarting" \
    "$RUN" --backoff 0 --events "$EV" -- "$FAKE"
expect_launches "exit 88 runs once" 1
if grep -q '"event":"restart"' "$EV" 2>/dev/null; then t_bad "exit 88 records no restart" "$(cat "$EV")"
else t_ok "exit 88 records no restart"; fi
plan 88 0
t_exit "--retry-on 88 restarts it anyway" 0 "" "$RUN" --backoff 0 --retry-on 88 -- "$FAKE"
expect_launches "--retry-on 88: two launches" 2

plan KILL TERM 86 1 0
# --max-stalls 0: this fake writes no ledger, so no attempt shows progress.
t_exit "SIGKILL, SIGTERM, watchdog 86 and unknown codes restart" 0 "killed by SIGKILL" \
    "$RUN" --backoff 0 --max-stalls 0 --events "$EV" -- "$FAKE"
expect_launches "four failures then success" 5
if grep -q '"exit_code":137,"signal":"SIGKILL"' "$EV" && grep -q '"exit_code":143,"signal":"SIGTERM"' "$EV"; then
    t_ok "signal deaths recorded with the signal's name"
else
    t_bad "signal deaths recorded with the signal's name" "$(cat "$EV")"
fi

plan 75 75 75 75
t_exit "restart budget" 75 "budget of 2 used up" "$RUN" --backoff 0 --max-restarts 2 -- "$FAKE"
expect_launches "budget 2 means three launches" 3

plan 74 0
t_exit "--retry-on adds codes" 0 "" "$RUN" --backoff 0 --retry-on 70,74 -- "$FAKE"

plan 75 75 0
SPOTRAIN_EVENTS=$EV t_exit "backoff doubles" 0 "" "$RUN" --backoff 1 --backoff-max 2 -- "$FAKE"
if grep -q '"attempt":1,.*"backoff_seconds":1}' "$EV" && grep -q '"attempt":2,.*"backoff_seconds":2}' "$EV"; then
    t_ok "backoff 1 then 2 s, events file from SPOTRAIN_EVENTS"
else
    t_bad "backoff 1 then 2 s, events file from SPOTRAIN_EVENTS" "$(cat "$EV" 2>/dev/null)"
fi

plan 75 0
rm -f "$T_TMP/hosts"
t_exit "--hosts-cmd runs before each launch" 0 "" \
    "$RUN" --backoff 0 --hosts-cmd "echo node >>$T_TMP/hosts" -- "$FAKE"
if [ "$(wc -l <"$T_TMP/hosts")" -eq 2 ]; then t_ok "hostfile written twice"; else t_bad "hostfile written twice"; fi
plan 0
t_exit "failing --hosts-cmd counts as a failed attempt" 69 "hosts-cmd failed" \
    "$RUN" --backoff 0 --max-restarts 1 --hosts-cmd "false" -- "$FAKE"
expect_launches "no launch without a hostfile" 0

plan 0
t_exit "grace exported to mpirun" 0 "" "$RUN" --grace 77 -- "$FAKE"
if grep -q '^77 attempt=0' "$FAKE_ENV"; then t_ok "OMPI_MCA_odls_base_sigkill_timeout=77"; else t_bad "OMPI_MCA_odls_base_sigkill_timeout=77" "$(cat "$FAKE_ENV")"; fi

t_exit "no command is a usage error" 64 "no command" "$RUN" --backoff 0
t_exit "unknown option" 64 "unknown option" "$RUN" --frobnicate -- true
t_exit "bad number" 64 "whole seconds" "$RUN" --backoff soon -- true

# SIGTERM to the wrapper: the command gets SIGUSR1, exits 75, and the wrapper
# passes 75 on without restarting. (Not SIGINT here: sh starts background
# jobs with SIGINT ignored, and a shell cannot trap what it inherited ignored.)
for sig in TERM USR1 USR2; do
    plan WAITUSR1 0
    "$RUN" --backoff 0 -- "$FAKE" >"$T_TMP/out" 2>&1 &
    wpid=$!
    i=0
    while [ ! -e "$FAKE_READY" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    kill -"$sig" "$wpid"
    wait "$wpid"
    rc=$?
    if [ "$rc" -eq 75 ] && [ "$(launches)" -eq 1 ] && grep -q usr1 "$FAKE_LOG" 2>/dev/null; then
        t_ok "SIG$sig to the wrapper: USR1 forwarded, exit 75, no restart"
    else
        t_bad "SIG$sig to the wrapper: USR1 forwarded, exit 75, no restart" \
            "rc=$rc launches=$(launches) $(tail -n 2 "$T_TMP/out")"
    fi
done

# While the command runs it is the wrapper's only child: scripts (make demo,
# the chaos test) find the trainer with `pgrep -P`.
plan WAITUSR1 0
"$RUN" --backoff 0 -- "$FAKE" >"$T_TMP/out" 2>&1 &
wpid=$!
i=0
while [ ! -e "$FAKE_READY" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
most=0
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    n=$(pgrep -P "$wpid" | wc -l)
    [ "$n" -le "$most" ] || most=$n
    sleep 0.1
done
kill -TERM "$wpid"
wait "$wpid"
if [ "$most" -eq 1 ]; then t_ok "the command is the wrapper's only child"; else t_bad "the command is the wrapper's only child" "up to $most children"; fi

# SIGTERM to the command (not the wrapper) is a preemption to restart from.
plan WAITUSR1 0
"$RUN" --backoff 0 -- "$FAKE" >"$T_TMP/out" 2>&1 &
wpid=$!
i=0
while [ ! -e "$FAKE_READY" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
cpid=$(pgrep -P "$wpid" | head -n 1)
kill -USR1 "$cpid"
wait "$wpid"
rc=$?
if [ "$rc" -eq 0 ] && [ "$(launches)" -eq 2 ]; then
    t_ok "a stop signal to the command itself is restarted"
else
    t_bad "a stop signal to the command itself is restarted" "rc=$rc launches=$(launches)"
fi

# --- the ledger ---------------------------------------------------------------
# A fake trainer that appends ledger records the way rank 0 does, then exits
# with another code (as mpirun does: 1 after its own SIGTERM). Plan lines:
# "BEGIN CKPT STOP DURABLE FINAL RECORDED EXIT [SLEEP]"; "-" leaves a record or
# field out, BEGIN "new" is a fresh start, DURABLE "null" is no durable state.
LFAKE=$T_TMP/lfake.sh
cat >"$LFAKE" <<'EOF'
#!/bin/sh
n=$(cat "$FAKE_COUNT" 2>/dev/null || echo 0)
echo $((n + 1)) >"$FAKE_COUNT"
set -- $(sed -n "$((n + 1))p" "$FAKE_PLAN")
[ $# -ge 7 ] || exit 99
now() { date +%s.%N; }
case $1 in
    -) ;;
    new) echo "{\"ts\":$(now),\"event\":\"start\",\"step\":0,\"world\":2,\"resumed_from\":null}" >>"$LEDGER" ;;
    *) echo "{\"ts\":$(now),\"event\":\"start\",\"step\":$1,\"world\":2,\"resumed_from\":\"ck/step-$1\"}" >>"$LEDGER" ;;
esac
[ "$2" = - ] || echo "{\"ts\":$(now),\"event\":\"checkpoint\",\"step\":$2,\"path\":\"ck/step-$2\"}" >>"$LEDGER"
if [ "$3" != - ]; then
    extra=
    [ "$4" = - ] || extra="$extra,\"durable_step\":$4"
    [ "$5" = - ] || extra="$extra,\"final_checkpoint\":\"$5\""
    # Field 9: the stop's remote_step (a run with checkpoint.remote); 10: its source.
    [ $# -lt 9 ] || extra="$extra,\"remote_step\":$9"
    echo "{\"ts\":$(now),\"event\":\"stop\",\"step\":$3$extra,\"source\":\"${10:-SIGTERM}\",\"reason\":\"r \\\"step\\\":9\"}" >>"$LEDGER"
fi
[ "$6" = - ] || echo "{\"ts\":$(now),\"event\":\"exit\",\"step\":$3,\"code\":$6,\"reason\":\"x\"}" >>"$LEDGER"
touch "$FAKE_READY"
[ $# -lt 8 ] || [ "$8" = 0 ] || sleep "$8"
exit "$7"
EOF
chmod +x "$LFAKE"
export LEDGER=$T_TMP/run/events.jsonl
lplan() { rm -rf "$T_TMP/run" "$FAKE_COUNT" "$FAKE_READY"; mkdir -p "$T_TMP/run"; printf '%s\n' "$@" >"$FAKE_PLAN"; }

# mpirun exits 1 (it got SIGTERM itself); the trainer recorded 75.
lplan "10 - 20 20 ok 75 1" "20 - - - - 0 0"
t_exit "ledger's exit 75 counts over the command's 1" 0 "the trainer's ledger says 75" \
    "$RUN" --backoff 0 --events "$LEDGER" -- "$LFAKE"
expect_launches "ledger 75 then 0: two launches" 2
lplan "10 - 20 20 ok 75 1 30"
"$RUN" --backoff 0 --events "$LEDGER" -- "$LFAKE" >"$T_TMP/out" 2>&1 &
wpid=$!
i=0
while [ ! -e "$FAKE_READY" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
kill -TERM "$wpid"
wait "$wpid"
rc=$?
if [ "$rc" -eq 75 ] && grep -q "stopped at step 20 (SIGTERM); its state is durable" "$T_TMP/out"; then
    t_ok "SIGTERM to the wrapper, command exits 1, ledger says 75: wrapper exits 75"
else
    t_bad "SIGTERM to the wrapper, command exits 1, ledger says 75: wrapper exits 75" "rc=$rc $(tail -n 2 "$T_TMP/out")"
fi

# mpirun lingers 2 x odls_base_sigkill_timeout after the ranks exit 75.
lplan "10 - 20 20 ok 75 75 60"
t0=$(date +%s)
t_exit "--linger: a command still running after the trainer's exit record is ended" 75 "recorded exit 75 1s ago" \
    "$RUN" --backoff 0 --linger 1 --max-restarts 0 --events "$LEDGER" -- "$LFAKE"
el=$(($(date +%s) - t0))
if [ "$el" -le 10 ]; then t_ok "--linger 1: done in ${el}s, not 60"; else t_bad "--linger 1: done in ${el}s, not 60"; fi

# What the 75 means comes from the stop record (and checkpoints without it).
lplan "10 - 20 null failed 75 75"
t_exit "75 without durable state is reported as such" 75 "stopped at step 20 \(SIGTERM\); newest durable checkpoint: none \(final checkpoint failed\)" \
    "$RUN" --backoff 0 --max-restarts 0 --events "$LEDGER" -- "$LFAKE"
lplan "10 - 20 10 skipped 75 75"
t_exit "75 with an older durable checkpoint names it" 75 "newest durable checkpoint: step 10, steps 11..20 will be redone \(final checkpoint skipped\)" \
    "$RUN" --backoff 0 --max-restarts 0 --events "$LEDGER" -- "$LFAKE"
lplan "10 18 20 - - 75 75"
t_exit "75 from a trainer without durable_step: newest checkpoint record" 75 "newest durable checkpoint: step 18, steps 19..20" \
    "$RUN" --backoff 0 --max-restarts 0 --events "$LEDGER" -- "$LFAKE"
lplan "10 - - - - - 75"
t_exit "75 without a stop record: durable state unknown" 75 "what is durable is unknown" \
    "$RUN" --backoff 0 --max-restarts 0 --events "$LEDGER" -- "$LFAKE"
if ! grep -q "after a durable checkpoint" "$RUN"; then t_ok "no unconditional 'after a durable checkpoint'"; else t_bad "no unconditional 'after a durable checkpoint'"; fi

# Restarts without progress: same durable step three attempts in a row.
lplan "10 - 20 10 skipped 75 75" "10 - 20 10 skipped 75 75" "10 - 20 10 skipped 75 75" "10 - - - - 0 0"
t_exit "no progress in 3 attempts: give up with 87" 87 "3 attempts in a row ended without a newer durable checkpoint \(newest: step 10\); giving up with 87" \
    "$RUN" --backoff 0 --events "$LEDGER" -- "$LFAKE"
expect_launches "gave up after 3 launches" 3
lplan "new - 5 null failed 75 75" "new - 5 null failed 75 75" "10 - - - - 0 0"
t_exit "--max-stalls 2" 87 "2 attempts in a row.*newest: none" \
    "$RUN" --backoff 0 --max-stalls 2 --events "$LEDGER" -- "$LFAKE"
lplan "10 - 20 20 ok 75 75" "20 - 30 30 ok 75 75" "30 40 - - - - 137" "40 - 50 50 ok 75 75" "50 - - - - 0 0"
t_exit "progress every attempt: no give-up" 0 "finished" \
    "$RUN" --backoff 0 --max-stalls 1 --events "$LEDGER" -- "$LFAKE"
expect_launches "five launches with progress" 5
lplan "10 - 20 10 skipped 75 75" "10 - 20 10 skipped 75 75" "10 - - - - 0 0"
t_exit "--max-stalls 0 never gives up" 0 "" "$RUN" --backoff 0 --max-stalls 0 --events "$LEDGER" -- "$LFAKE"

# With checkpoint.remote: a finished run whose final upload keeps failing
# exits 75 with a stop record of source "remote" every time; the wrapper
# gives up with 87 and says it is the remote.
lplan "new - 6 6 ok 75 75 0 null remote" "6 - 6 6 not_needed 75 75 0 null remote" "6 - 6 6 not_needed 75 75 0 null remote" "6 - - - - 0 0"
t_exit "the remote upload keeps failing: 87 after --max-stalls restarts, saying so" 87 \
    "exit 75: the remote upload keeps failing: 2 attempts in a row ended with step 6 saved locally and no newer checkpoint complete on the remote \(newest there: none\); giving up with 87" \
    "$RUN" --backoff 0 --max-stalls 2 --events "$LEDGER" -- "$LFAKE"
expect_launches "remote failing: gave up after 3 launches (the first made progress)" 3
lplan "new - 6 6 ok 75 75 0 null remote" "6 - - - - 0 0"
t_exit "a remote stop is described as such" 0 "training finished at step 6 and is saved locally, but its copy on the remote is not complete \(newest remote copy: none\)" \
    "$RUN" --backoff 0 --events "$LEDGER" -- "$LFAKE"
# A newer checkpoint complete on the remote is progress too (the durable
# step stays 20 while its upload catches up).
lplan "20 - 25 20 skipped 75 75 0 10" "20 - 25 20 skipped 75 75 0 20" "20 - - - - 0 0"
t_exit "a newer remote copy counts as progress" 0 "finished" "$RUN" --backoff 0 --max-stalls 1 --events "$LEDGER" -- "$LFAKE"
lplan "20 - 25 20 skipped 75 75 0 20" "20 - 25 20 skipped 75 75 0 20" "20 - 25 20 skipped 75 75 0 20" "20 - - - - 0 0"
t_exit "the same remote copy again is no progress" 87 "2 attempts in a row ended without a newer durable checkpoint \(newest: step 20\)" \
    "$RUN" --backoff 0 --max-stalls 2 --events "$LEDGER" -- "$LFAKE"

if command -v shellcheck >/dev/null 2>&1; then
    t_exit "spotrain-run is shellcheck-clean" 0 "" shellcheck "$RUN"
else
    echo "SKIP shellcheck: not installed"
fi

t_end
