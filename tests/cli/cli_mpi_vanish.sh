#!/bin/sh
# A peer that vanishes mid-run under `mpirun -np 2` ends the job with a
# bounded wait, never a hang:
#   a frozen peer (SIGSTOP: a hung node, a network that drops packets without
#   a reset) -> the survivor's collective times out after
#   spot.comm_timeout_seconds, it writes the exit record and mpirun exits 86;
#   with comm_timeout_seconds = 0 the same job is still running after the
#   timeout would have fired (the hang the timeout removes);
#   a killed peer (SIGKILL) -> mpirun itself aborts the job (non-zero);
#   a peer frozen outside the step -- at start-up, on resume, in a
#   checkpoint commit, in the stop after SIGTERM, at the exit barrier -> the
#   same 86 within the timeout, the agreement named on stderr and in the
#   ledger's comm_timeout record; a slow commit or start decision is not
#   mistaken for a vanished peer. Rank 1 freezes itself at the named point
#   (SPOTRAIN_TEST_FREEZE=POINT@1, comm/comm.c), which no signal sent from
#   outside could hit reliably; rank 0 survives and writes the ledger.
# Every wait is bounded: a job still alive after its bound is killed and the
# test fails, so this script cannot hang either.
# shellcheck disable=SC2086
# module: comm
. tests/cli/lib.sh
S=$SPOTRAIN
cd "$T_TMP" || exit 1
: >empty.ini
t_need_mpi "mpi vanish tests"
M="mpirun -np 2 --oversubscribe"
F="--set model.dim=32 --set model.n_layers=2 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.ffn_dim=64 --set model.seq_len=16 --set train.global_batch=6 --set train.micro_batch=3 --set train.val_every=0 --set train.threads=1 --set train.log_every=1 --set train.max_steps=10000000 --set checkpoint.interval_steps=0 --set spot.provider=none --quiet"

# Every process under PID (mpirun, and under Open MPI 5 its prte daemon).
tree() {
    ps -e -o pid=,ppid= | awk -v root="$1" '{ p[$1] = $2 } END {
        n = 1; want[root] = 1
        while (n) { n = 0; for (k in p) if (!(k in want) && (p[k] in want)) { want[k] = 1; n = 1 } }
        for (k in want) if (k != root) print k }'
}
# The pid of MPI rank R under mpirun PID (from its environment).
rank_pid() {
    for p in $(tree "$1"); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
            echo "$p"
            return 0
        fi
    done
    return 1
}
# Waits up to $2 s for pid $1 (in steps of 0.1 s); on timeout kills the
# job's whole tree and returns 124.
wait_for() {
    _i=0
    while kill -0 "$1" 2>/dev/null && [ $_i -lt $(($2 * 10)) ]; do sleep 0.1; _i=$((_i + 1)); done
    if kill -0 "$1" 2>/dev/null; then
        for p in $(tree "$1"); do kill -KILL "$p" 2>/dev/null; done
        kill -KILL "$1" 2>/dev/null
        wait "$1" 2>/dev/null
        return 124
    fi
    wait "$1"
}
# Starts the job in DIR with extra options, waits for 3 logged steps, and
# sets JOB (mpirun) and R1 (rank 1).
start() {
    dir=$1
    shift
    $M "$S" train empty.ini $F --set train.run_dir="$dir" "$@" >"$dir.log" 2>&1 &
    JOB=$!
    t_wait_steps "$dir" 3 "$JOB"
    R1=$(rank_pid "$JOB" 1)
}

# Frozen peer, timeout 2 s: exit 86 well within the bound.
start frozen --set spot.comm_timeout_seconds=2
if [ -z "$R1" ] || [ "$(t_steps frozen)" -lt 3 ]; then
    t_bad "frozen peer: the job started" "$(tail -n 5 frozen.log)"
    wait_for "$JOB" 1
else
    kill -STOP "$R1"
    wait_for "$JOB" 60
    rc=$?
    t_exit "frozen peer: mpirun exits 86 (not a hang)" 0 "" test "$rc" -eq 86
    t_exit "frozen peer: the survivor says why, in one line" 0 "^spotrain: training step \((gradient exchange|parameter gather|sum|allreduce)\): rank 0 of 2 waited [0-9]+ s for rank 1 \(spot.comm_timeout_seconds = 2\); a peer vanished or hung; exiting 86" cat frozen.log
    t_exit "frozen peer: the ledger's exit record carries 86" 0 "" test "$(t_events frozen/events.jsonl exit code | tail -n 1)" = 86
fi

# The same without a timeout: still waiting 3x past where 2 s would have
# fired (the hang); then ended by the test.
start hang --set spot.comm_timeout_seconds=0
if [ -n "$R1" ]; then
    kill -STOP "$R1"
    # The survivor may finish the step in flight, then logs no more (a hang
    # is checked by waiting: 3x the timeout the other case uses).
    before=$(t_steps hang)
    i=0
    while [ $i -lt 60 ] && kill -0 "$JOB" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    alive=$(kill -0 "$JOB" 2>/dev/null && echo yes || echo no)
    t_exit "no timeout: a frozen peer stalls the job (what the timeout prevents)" 0 "" \
        test "$alive" = yes -a "$(t_steps hang)" -le $((before + 1))
    kill -KILL "$R1" 2>/dev/null
    wait_for "$JOB" 30 >/dev/null 2>&1
else
    t_bad "no timeout: the job started" "$(tail -n 5 hang.log)"
    wait_for "$JOB" 1
fi

# Killed peer: mpirun notices the death and ends the job (no hang), non-zero.
start killed
if [ -n "$R1" ]; then
    kill -KILL "$R1"
    wait_for "$JOB" 60
    rc=$?
    t_exit "killed peer: mpirun ends the job, non-zero (rc $rc)" 0 "" test "$rc" -ne 0 -a "$rc" -ne 124
else
    t_bad "killed peer: the job started" "$(tail -n 5 killed.log)"
    wait_for "$JOB" 1
fi

# A peer frozen at POINT@RANK (outside the step): the other rank exits 86
# after the 2 s timeout. NAME, POINT@RANK, the agreement's name (a regex),
# the verb, extra options; FREEZE_THEN (optional) runs once the job started.
# Only rank 0 writes the ledger, so it is checked when rank 1 froze.
frozen_at() {
    fz=$1 point=$2 agreement=$3 verb=$4
    shift 4
    dir=fz-${point%@*}-${point#*@}${FZ_TAG:-}   # FZ_TAG: one point frozen in several runs
    frozen=${point#*@}
    survivor=$((1 - frozen))
    SPOTRAIN_TEST_FREEZE=$point $M "$S" "$verb" empty.ini $F --set train.run_dir="$PWD/$dir" \
        --set spot.comm_timeout_seconds=2 "$@" >"$dir.log" 2>&1 &
    JOB=$!
    [ -z "${FREEZE_THEN:-}" ] || $FREEZE_THEN "$dir" "$JOB"
    wait_for "$JOB" 60
    rc=$?
    t_exit "$fz: mpirun exits 86 (rc $rc; 124: still running after 60 s)" 0 "" test "$rc" -eq 86
    t_exit "$fz: one line names the agreement and the peer" 0 \
        "^spotrain: $agreement \([a-z ]+\): rank $survivor of 2 waited 2 s for rank $frozen \(spot.comm_timeout_seconds = 2\); a peer vanished or hung; exiting 86 so the job is restarted$" \
        grep -v "^ *$" "$dir.log"
    [ "$survivor" -ne 0 ] || t_exit "$fz: the ledger's comm_timeout record names it, waited under 2 s + 3 s" 0 "" /usr/bin/python3 -c '
import json, re, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
t = [r for r in recs if r["event"] == "comm_timeout"]
sys.exit(not (len(t) == 1 and re.match(sys.argv[2], t[0]["agreement"]) and t[0]["peer"] == 1
              and 2 <= t[0]["waited_s"] < 5 and recs[-1]["event"] == "exit" and recs[-1]["code"] == 86))
' "$dir/events.jsonl" "$agreement"
    if pgrep -f -- "run_dir=$PWD/$dir " >/dev/null; then
        t_bad "$fz: no rank is left behind" "$(pgrep -a -f -- "run_dir=$PWD/$dir ")"
    else
        t_ok "$fz: no rank is left behind"
    fi
}

# MPI start-up: rank 0 freezes right after MPI_Init, before the host count
# (no ledger yet: rank 1 says why and exits 86, and mpirun ends the job).
frozen_at "frozen after MPI_Init" init@0 "start-up: host count" train --set train.max_steps=3
# selftest comm bounds its start-up the same way (a first run on a new
# cluster is where a node hangs at start).
# The config by its full path: the check below then finds this job's ranks
# only, never those of another copy of this script running at the same time.
SPOTRAIN_TEST_FREEZE=init@0 $M "$S" selftest comm "$PWD/empty.ini" $F --set spot.comm_timeout_seconds=2 >fz-selftest.log 2>&1 &
JOB=$!
wait_for "$JOB" 60
rc=$?
t_exit "selftest comm, rank 0 frozen after MPI_Init: mpirun exits 86 (rc $rc; 124: still running after 60 s)" 0 "" \
    test "$rc" -eq 86
t_exit "selftest comm, frozen: one line names the host count and the peer" 0 \
    "^spotrain: start-up: host count \([a-z ]+\): rank 1 of 2 waited 2 s for rank 0" cat fz-selftest.log
if pgrep -f -- "selftest comm $PWD/empty.ini " >/dev/null; then
    t_bad "selftest comm, frozen: no rank is left behind" "$(pgrep -a -f -- "selftest comm $PWD/empty.ini ")"
else t_ok "selftest comm, frozen: no rank is left behind"; fi
# Start-up: rank 1 freezes before the first agreement (run directory).
frozen_at "frozen at start-up" start@1 "start-up agreement: run directory" train --set train.max_steps=3
# Rank 0 freezes before it broadcasts the start (fresh or which checkpoint):
# rank 1 waits on the broadcast's root, the one wait only a non-root has.
frozen_at "root frozen at the start decision" pick@0 "start agreement: fresh or which checkpoint" train \
    --set train.max_steps=3
# Resume: rank 1 freezes after reading its range of the checkpoint.
$M "$S" train empty.ini $F --set train.run_dir="$PWD/fz-resume-1" --set train.max_steps=3 >fz-resume.log 2>&1 &
wait_for $! 60 || t_bad "resume: the run to resume from finished" "$(tail -n 3 fz-resume.log)"
frozen_at "frozen on resume" resume@1 "resume agreement: every rank read its range" resume --set train.max_steps=6
# The final checkpoint's commit.
# ZeRO 2 and 3 exchange each layer's bucket inside the backward and forward.
# With [comm] overlap (the default) the survivor has queued the exchange
# and computes on: its comm worker's wait times out and the next wait for
# the worker returns the failure; without, the exchange blocks as before.
for o in true false; do
    FZ_TAG=-$o
    frozen_at "zero 2, overlap $o: frozen in a layer's gradient exchange" bucket@1 "training step" train \
        --set train.max_steps=3 --set train.zero=2 --set comm.overlap=$o
    frozen_at "zero 3, overlap $o: frozen in a layer's parameter gather" layer@1 "training step" train \
        --set train.max_steps=3 --set train.zero=3 --set comm.overlap=$o
done
FZ_TAG=
frozen_at "frozen in a commit" commit@1 "final checkpoint commit" train --set train.max_steps=3
# The stop: SIGTERM to rank 0 once 3 steps are logged; rank 1 freezes as
# it enters the stop (rank 0 would otherwise exit 75).
term_rank0() {
    t_wait_steps "$1" 3 "$2"
    kill -TERM "$(rank_pid "$2" 0)"
}
FREEZE_THEN=term_rank0
frozen_at "frozen in the stop" stop@1 "stop agreement" train --set train.max_steps=10000000
FREEZE_THEN=
# After the last step and its checkpoint: the barrier before MPI_Finalize.
frozen_at "frozen at exit" exit@1 "exit agreement" train --set train.max_steps=3

# The MPI calls no wait of ours can poll (comm/comm.c's guard): a peer that
# never reaches MPI_Init, or vanishes between the exit barrier and
# MPI_Finalize, ends the survivor after the timeout instead of a hang.
# NAME, POINT@RANK, the call's name as the line gives it, the exit code
# wanted, extra options.
guarded_at() {
    gz=$1 point=$2 call=$3 gcode=$4
    shift 4
    dir=gd-${point%@*}-$gcode
    frozen=${point#*@}
    survivor=$((1 - frozen))
    SPOTRAIN_TEST_FREEZE=$point $M "$S" train empty.ini $F --set train.run_dir="$PWD/$dir" \
        --set spot.comm_timeout_seconds=2 "$@" >"$dir.log" 2>&1 &
    JOB=$!
    [ -z "${FREEZE_THEN:-}" ] || $FREEZE_THEN "$dir" "$JOB"
    wait_for "$JOB" 60
    rc=$?
    t_exit "$gz: mpirun exits $gcode (rc $rc; 124: still running after 60 s)" 0 "" test "$rc" -eq "$gcode"
    t_exit "$gz: one line names the call and the timeout" 0 \
        "^spotrain: $call: rank $survivor of 2 waited 2 s for the other ranks \(spot.comm_timeout_seconds = 2\); a peer vanished or hung; exiting $gcode so the job is restarted$" \
        cat "$dir.log"
    if pgrep -f -- "run_dir=$PWD/$dir " >/dev/null; then
        t_bad "$gz: no rank is left behind" "$(pgrep -a -f -- "run_dir=$PWD/$dir ")"
    else
        t_ok "$gz: no rank is left behind"
    fi
}
guarded_at "frozen before MPI_Init" preinit@1 "start-up \(MPI_Init\)" 86 --set train.max_steps=3
t_exit "frozen before MPI_Init: nothing was started (no ledger)" 1 "" test -e gd-preinit-86/events.jsonl
guarded_at "frozen before MPI_Finalize" finalize@1 "exit \(MPI_Finalize\)" 86 --set train.max_steps=3
t_exit "frozen before MPI_Finalize: the run itself ended cleanly (exit record 0 at step 3)" 0 "" \
    test "$(t_events gd-finalize-86/events.jsonl exit code | tail -n 1)" = 0 -a "$(t_steps gd-finalize-86)" -eq 3
# What the wrapper's restart then does: the resume finds the run complete.
$M "$S" resume empty.ini $F --set train.run_dir="$PWD/gd-finalize-86" --set train.max_steps=3 >gd-again.log 2>&1 &
wait_for $! 60
rc=$?
t_exit "frozen before MPI_Finalize: the restart finds the run complete and exits 0 (rc $rc)" 0 "" test "$rc" -eq 0
# A stop keeps its 75 past a peer lost at MPI_Finalize.
FREEZE_THEN=term_rank0
guarded_at "stopped, then frozen before MPI_Finalize" finalize@1 "exit \(MPI_Finalize\)" 75 \
    --set train.max_steps=10000000
FREEZE_THEN=

# A slow commit is not a vanished peer: rank 0's on_save takes twice the
# timeout inside the final commit, and rank 1, waiting in short agreements,
# sees rank 0 answer throughout (exit 0, no comm_timeout record).
# These two jobs must not time out, so their timeout (ALIVE_TO) is not the
# 2 s of the frozen jobs above: every wait of the run is bounded by it, and
# on a loaded machine (load 10 on 2 cores) a live rank can fall 2 s behind
# its peer at start-up or in a step, which is then (rightly) a timeout. The
# slowness stays twice the timeout, so an unpolled wait would still fire.
ALIVE_TO=6
$M "$S" train empty.ini $F --set train.run_dir="$PWD/slow" --set spot.comm_timeout_seconds=$ALIVE_TO \
    --set train.max_steps=3 --set checkpoint.on_save="sleep $((2 * ALIVE_TO))" >slow.log 2>&1 &
wait_for $! 90
rc=$?
t_exit "slow commit (on_save $((2 * ALIVE_TO)) s, timeout $ALIVE_TO s): exit 0 (rc $rc)" 0 "" test "$rc" -eq 0
t_exit "slow commit: no comm_timeout record" 1 "" grep -q comm_timeout slow/events.jsonl
# A slow start decision is not a vanished rank 0 either: rank 0 takes twice
# the timeout longer to decide (as when it reads a large checkpoint in
# full) while rank 1 waits (SPOTRAIN_TEST_SLOW, comm/comm.c).
SPOTRAIN_TEST_SLOW=pick@0:$((2 * ALIVE_TO)) $M "$S" train empty.ini $F --set train.run_dir="$PWD/slowpick" \
    --set spot.comm_timeout_seconds=$ALIVE_TO --set train.max_steps=3 >slowpick.log 2>&1 &
wait_for $! 90
rc=$?
t_exit "slow start decision ($((2 * ALIVE_TO)) s, timeout $ALIVE_TO s): exit 0 (rc $rc)" 0 "" test "$rc" -eq 0
t_exit "slow start decision: no comm_timeout record" 1 "" grep -q comm_timeout slowpick/events.jsonl

t_exit "comm_timeout_seconds is in the sample configuration" 0 "^comm_timeout_seconds = 600" cat "$OLDPWD/sample.ini"
t_end
