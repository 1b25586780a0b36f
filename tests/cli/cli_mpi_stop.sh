#!/bin/sh
# Stopping under `mpirun -np 2` in each launch shape docs/spot.md documents:
# what status reaches the scheduler, and how soon the ranks start saving
# (the ledger's first notice/checkpoint/stop record after the signal).
#   plain mpirun + SIGUSR1         75, saving at once
#   plain mpirun + SIGTERM         1, saving only after odls_base_sigkill_timeout:
#                                  the limitation docs/spot.md states (checked,
#                                  so docs/spot.md stays true)
#   spotrain-run + SIGTERM to the wrapper, to its process group, to every
#   process of the job (systemd control-group, Slurm scancel), and a provider
#   notice: 75 / a prompt restart, saving at once, although --grace 120 makes
#   mpirun linger 240 s after the ranks exit.
# Option strings like $F are word-split on purpose.
# shellcheck disable=SC2086
# module: comm spot train
. tests/cli/lib.sh
S=$SPOTRAIN
RUN=$PWD/spot/spotrain-run
cd "$T_TMP" || exit 1
t_need_mpi "mpi stop tests"
M="mpirun -np 2 --oversubscribe"
F="--set model.dim=32 --set model.n_layers=2 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.ffn_dim=64 --set model.seq_len=16 --set train.global_batch=6 --set train.micro_batch=3 --set train.val_every=0 --set train.threads=1 --set train.log_every=100 --set train.max_steps=10000000 --set checkpoint.interval_steps=0 --quiet"

now() { date +%s.%N; }
wait_steps() {
    i=0
    while ! grep -q '"event":"step"' "$1/events.jsonl" 2>/dev/null && [ $i -lt 600 ]; do
        sleep 0.05
        i=$((i + 1))
    done
    sleep 0.3
}
# Seconds from T0 to the first notice/checkpoint/stop record after it.
first_save() {
    /usr/bin/python3 - "$1" "$2" <<'PY'
import json, sys
t0 = float(sys.argv[2])
ts = [r["ts"] for r in map(json.loads, open(sys.argv[1]))
      if r.get("event") in ("notice", "checkpoint", "stop") and r["ts"] >= t0 - 0.05]
print("%.2f" % (min(ts) - t0) if ts else "none")
PY
}
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "none" && a + 0 < b + 0) }'; }
# Every process under PID (the job's tree: wrapper, mpirun, ranks).
tree() {
    ps -e -o pid=,ppid= | awk -v root="$1" '{ p[$1] = $2 } END {
        n = 1; want[root] = 1
        while (n) { n = 0; for (k in p) if (!(k in want) && (p[k] in want)) { want[k] = 1; n = 1 } }
        for (k in want) print k }'
}
# Waits up to $2 s for pid $1; kills its tree and returns 124 on timeout.
wait_for() {
    i=0
    while kill -0 "$1" 2>/dev/null && [ $i -lt $(($2 * 10)) ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$1" 2>/dev/null; then
        for p in $(tree "$1"); do kill -KILL "$p" 2>/dev/null; done
        wait "$1" 2>/dev/null
        return 124
    fi
    wait "$1"
}
ckpt_of_stop() {
    s=$(t_events "$1/events.jsonl" stop step | tail -n 1)
    [ -n "$s" ] && "$S" ckpt verify "$(printf '%s/ckpt/step-%08d' "$1" "$s")" >/dev/null 2>&1
}
# check NAME DIR RC WANT_RC T0 ELAPSED MAX_ELAPSED
check() {
    fs=$(first_save "$2/events.jsonl" "$5")
    if [ "$3" -eq "$4" ] && lt "$fs" 1.0 && lt "$6" "$7" && ckpt_of_stop "$2"; then
        t_ok "$1: exit $3, saving began ${fs}s after the signal, done in ${6}s"
    else
        t_bad "$1" "exit $3 (want $4), saving began after ${fs}s (want < 1), done in ${6}s (want < $7), stop checkpoint verifies: $(ckpt_of_stop "$2" && echo yes || echo no)"
    fi
}
el() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Plain mpirun, SIGUSR1: forwarded at once, mpirun exits with the ranks' 75.
$M "$S" train /dev/null $F --set train.run_dir=usr1 >usr1.log 2>&1 &
pid=$!
wait_steps usr1
t0=$(now)
kill -USR1 "$pid"
wait_for "$pid" 30
rc=$?
check "plain mpirun, SIGUSR1 to mpirun" usr1 "$rc" 75 "$t0" "$(el "$t0")" 10

# Plain mpirun, SIGTERM: mpirun sends SIGCONT, waits odls_base_sigkill_timeout,
# then SIGTERM, waits again, then SIGKILL; and exits 1 whatever the ranks did.
$M --mca odls_base_sigkill_timeout 3 "$S" train /dev/null $F --set train.run_dir=term >term.log 2>&1 &
pid=$!
wait_steps term
t0=$(now)
kill -TERM "$pid"
wait_for "$pid" 30
rc=$?
fs=$(first_save term/events.jsonl "$t0")
code=$(t_events term/events.jsonl exit code | tail -n 1)
if [ "$rc" -eq 1 ] && [ "$code" = 75 ] && ! lt "$fs" 2.5 && lt "$fs" 4; then
    t_ok "plain mpirun, SIGTERM (timeout 3 s): ranks start saving after ${fs}s and exit 75, mpirun exits 1 (as docs/spot.md warns)"
else
    t_bad "plain mpirun, SIGTERM: docs/spot.md's account" "mpirun exit $rc, ranks' exit $code, saving began after ${fs}s (docs/spot.md says ~3)"
fi

# spotrain-run around mpirun; --grace 120 makes mpirun linger 240 s after the
# ranks exit 75, --linger 2 ends that.
W="$RUN --backoff 0 --grace 120 --linger 2 --max-restarts 0"

$W --events wrap/events.jsonl -- $M "$S" resume /dev/null $F --set train.run_dir=wrap >wrap.log 2>&1 &
wpid=$!
wait_steps wrap
t0=$(now)
kill -TERM "$wpid"
wait_for "$wpid" 40
rc=$?
check "spotrain-run -- mpirun, SIGTERM to the wrapper" wrap "$rc" 75 "$t0" "$(el "$t0")" 15

# The wrapper leads its own process group (as a shell's foreground job, or
# under setsid); the group signal (Ctrl-C, kill -TERM -PGID) reaches the
# wrapper only, not mpirun, which runs in a session of its own.
setsid $W --events group/events.jsonl -- $M "$S" resume /dev/null $F --set train.run_dir=group >group.log 2>&1 &
wpid=$!
wait_steps group
t0=$(now)
/bin/kill -TERM -- "-$wpid"   # dash's kill takes no process group
wait_for "$wpid" 40
rc=$?
check "spotrain-run -- mpirun, SIGTERM to the wrapper's process group" group "$rc" 75 "$t0" "$(el "$t0")" 15

# Every process at once (systemd KillMode=control-group, Slurm scancel):
# the ranks get SIGTERM directly; mpirun got it too and will exit 1.
$W --events all/events.jsonl -- $M "$S" resume /dev/null $F --set train.run_dir=all >all.log 2>&1 &
wpid=$!
wait_steps all
pids=$(tree "$wpid")
t0=$(now)
for p in $pids; do kill -TERM "$p" 2>/dev/null; done
wait_for "$wpid" 40
rc=$?
check "spotrain-run -- mpirun, SIGTERM to every process of the job" all "$rc" 75 "$t0" "$(el "$t0")" 15

# A provider notice (file): the ranks exit 75, the wrapper restarts without
# waiting for mpirun's 240 s; then SIGTERM ends the second attempt.
$RUN --backoff 0 --grace 120 --linger 2 --max-restarts 1 --events notice/events.jsonl -- \
    $M "$S" resume /dev/null $F --set train.run_dir=notice --set spot.provider=file \
    --set spot.notice_file="$T_TMP/reclaim" --set spot.poll_seconds=0.2 >notice.log 2>&1 &
wpid=$!
wait_steps notice
t0=$(now)
echo preempt >"$T_TMP/reclaim"
i=0
while [ "$(grep -c '"event":"start"' notice/events.jsonl)" -lt 2 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
t_restart=$(el "$t0")
sleep 1
kill -TERM "$wpid"
wait_for "$wpid" 40
rc=$?
starts=$(grep -c '"event":"start"' notice/events.jsonl)
if [ "$starts" -eq 2 ] && lt "$t_restart" 12 && [ "$rc" -eq 75 ]; then
    t_ok "spotrain-run -- mpirun, provider notice: restarted ${t_restart}s after the notice (not 2 x --grace), then exit 75"
else
    t_bad "spotrain-run -- mpirun, provider notice: prompt restart" "starts=$starts after ${t_restart}s, exit $rc: $(tail -n 3 notice.log)"
fi

t_end
