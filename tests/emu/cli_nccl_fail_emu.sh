#!/bin/sh
# The NCCL data plane's failure paths (cuda/nccl.cu) on 2 ranks under
# mpirun, on the emulated backend (make test-emu; BUILD=build/emu): the
# emulated libnccl.so.2 (tests/emu/nccl.cpp) with non-blocking
# communicators, over MPI -- not NCCL's own transports.
#   a peer frozen (SIGSTOP, SPOTRAIN_TEST_FREEZE) in the middle of the
#   gradient reduce-scatter (stage 1's, and a ZeRO 2/3 bucket's on the
#   comm stream), in the parameter all-gather, at communicator
#   init, and in `selftest comm`: the survivor aborts the communicator,
#   prints the one line, writes the ledger's comm_timeout and exit records,
#   and mpirun exits 86 within a bound; nothing is left running; a restart
#   resumes from the last checkpoint;
#   an asynchronous NCCL error (SPOTRAIN_EMU_NCCL_FAULT): one line naming
#   the operation, the rank, ncclGetErrorString's and ncclGetLastError's
#   text, and its exit code (remote and system: 86; internal: 70); a group
#   that never completes; a call inside a group that fails (70).
# Every job runs under `timeout`, and every process it started (found by a
# tag in its environment) is killed at the end of its check, so a frozen
# rank never outlives the script.
# shellcheck disable=SC2086
# module: cuda comm
. tests/cli/lib.sh
B=$SPOTRAIN
cd "$T_TMP" || exit 1
t_need_mpi "nccl failure tests"
M="mpirun -np 2 --oversubscribe"
S="--set model.dim=32 --set model.n_layers=2 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.ffn_dim=64 \
--set model.vocab_size=256 --set model.seq_len=32 --set train.global_batch=4 --set train.micro_batch=2 \
--set checkpoint.interval_steps=2 --set spot.provider=none --set train.log_every=1 --set data.synthetic_samples=500 \
--set train.threads=1 --set train.val_every=0 --set train.backend=cuda --set train.precision=fp32 --quiet"
TO=2        # spot.comm_timeout_seconds
BOUND=60    # seconds a failing job may take, start-up included, on a loaded 2-core machine
KILL=150    # past this the job is killed (the check fails)

# Processes still carrying tag $1 in their environment. The tag holds this
# script's pid: another copy of this script running at the same time (a
# second checkout's make test-emu) has its own jobs with the same names,
# which this one must neither count nor kill.
tagged() { grep -l "NCCLFAIL_TAG=$$-$1\$" /proc/[0-9]*/environ 2>/dev/null | sed 's|/proc/\([0-9]*\)/environ|\1|'; }
# Kills what is left of job $1 (a frozen rank is killed as well: SIGKILL ends a stopped process).
reap() { for p in $(tagged "$1"); do kill -KILL "$p" 2>/dev/null; done; }
trap 'for t in $TAGS; do reap $t; done; t_cleanup' EXIT
TAGS=""

# job TAG LOG CMD...: runs CMD under mpirun (tagged), sets RC and SECS; then
# LEFT to the processes of the job still alive 2 s after mpirun ended.
job() {
    tag=$1 log=$2
    shift 2
    TAGS="$TAGS $tag"
    t0=$(date +%s)
    NCCLFAIL_TAG=$$-$tag timeout -s KILL $KILL $M -x NCCLFAIL_TAG "$@" >"$log" 2>&1
    RC=$?
    SECS=$(($(date +%s) - t0))
    sleep 2
    LEFT=$(tagged "$tag" | tr '\n' ' ')
    reap "$tag"
}
# bounded NAME: exit 86 within BOUND, nothing left behind.
bounded() {
    if [ "$RC" -eq 86 ] && [ "$SECS" -le $BOUND ] && [ -z "$LEFT" ]; then
        t_ok "$1: mpirun exits 86 after ${SECS} s (bound $BOUND), no process left"
    else
        t_bad "$1: mpirun exits 86 within $BOUND s, no process left" "exit $RC after $SECS s, left: '$LEFT'"
    fi
}
# said NAME LOG REGEX: the log holds a line matching REGEX.
said() {
    if grep -Eq -- "$3" "$2"; then
        t_ok "$1: $(grep -E -- "$3" "$2" | head -n 1 | cut -c 1-150)..."
    else
        t_bad "$1: a line matching /$3/" "$(grep -v '^ *$' "$2" | tail -n 4)"
    fi
}
line="rank 0 of 2 waited [0-9]+ s for a peer \(spot.comm_timeout_seconds = $TO\); a peer vanished or hung; communicator aborted, exiting 86 so the job is restarted"

# --- a peer frozen mid-reduce-scatter; then the restart ---------------------
# 4 steps with checkpoints at 2 and 4; the resume freezes rank 1 half-way
# through its first reduce-scatter (256-float rounds: ~70 of them).
timeout $KILL $M "$B" train /dev/null $S --set train.max_steps=4 --set train.run_dir=rs >rs0.log 2>&1
r0=$?
job rs rs.log -x SPOTRAIN_TEST_FREEZE=nccl-reduce@1 -x SPOTRAIN_COMM_CHUNK=256 "$B" resume /dev/null $S \
    --set train.max_steps=8 --set train.run_dir=rs --set spot.comm_timeout_seconds=$TO
if [ $r0 -ne 0 ]; then
    t_bad "frozen in the reduce-scatter: the first 4 steps ran" "exit $r0: $(tail -n 3 rs0.log)"
fi
bounded "frozen in the reduce-scatter"
said "frozen in the reduce-scatter: the survivor's one line" rs.log \
    "^spotrain: training step \(NCCL gradient reduce-scatter\): $line"
ag=$(t_events rs/events.jsonl comm_timeout agreement | tail -n 1)
code=$(t_events rs/events.jsonl exit code | tail -n 1)
peer=$(t_events rs/events.jsonl comm_timeout peer | tail -n 1)
if [ "$ag" = "training step (NCCL gradient reduce-scatter)" ] && [ "$peer" = 1 ] && [ "$code" = 86 ]; then
    t_ok "frozen in the reduce-scatter: ledger comm_timeout '$ag' peer $peer, exit 86"
else
    t_bad "frozen in the reduce-scatter: ledger records" "agreement '$ag' peer '$peer' exit '$code'"
fi
timeout $KILL $M "$B" resume /dev/null $S --set train.max_steps=8 --set train.run_dir=rs >rs2.log 2>&1
r2=$?
from=$(t_events rs/events.jsonl start resumed_from | tail -n 1)
last=$(t_events rs/events.jsonl step step | tail -n 1)
if [ $r2 -eq 0 ] && [ "$from" = "rs/ckpt/step-00000004" ] && [ "$last" = 8 ]; then
    t_ok "frozen in the reduce-scatter: the restart resumes from $from and reaches step $last"
else
    t_bad "frozen in the reduce-scatter: the restart resumes from step 4" "exit $r2, from '$from', last step '$last' $(tail -n 2 rs2.log)"
fi

# --- a peer frozen mid-all-gather (fp32: the master copy) --------------------
job ag ag.log -x SPOTRAIN_TEST_FREEZE=nccl-gather@1 -x SPOTRAIN_COMM_CHUNK=256 "$B" train /dev/null $S \
    --set train.max_steps=4 --set train.run_dir=ag --set spot.comm_timeout_seconds=$TO
bounded "frozen in the all-gather"
said "frozen in the all-gather: the survivor's one line" ag.log "^spotrain: training step \(NCCL parameter all-gather\): $line"
code=$(t_events ag/events.jsonl exit code | tail -n 1)
ag=$(t_events ag/events.jsonl comm_timeout agreement | tail -n 1)
t_exit "frozen in the all-gather: ledger comm_timeout and exit 86" 0 "" \
    test "$ag" = "training step (NCCL parameter all-gather)" -a "$code" = 86

# --- a peer frozen in a ZeRO bucket's reduce-scatter -------------------------
# Stages 2-3 queue each bucket's reduce-scatter on the comm stream without
# waiting (the backward goes on); the waits that remain are bounded all
# the same: the survivor exits 86 naming the reduce-scatter.
for z in 2 3; do
    job zb$z zb$z.log -x SPOTRAIN_TEST_FREEZE=bucket@1 "$B" train /dev/null $S --set train.zero=$z \
        --set train.max_steps=4 --set train.run_dir=zb$z --set spot.comm_timeout_seconds=$TO
    bounded "zero $z, frozen in a bucket's reduce-scatter"
    said "zero $z, frozen in a bucket's reduce-scatter: the survivor's one line" zb$z.log \
        "^spotrain: training step \(NCCL gradient reduce-scatter\): $line"
done

# --- a peer frozen at communicator init --------------------------------------
job init init.log -x SPOTRAIN_TEST_FREEZE=nccl-init@1 "$B" train /dev/null $S --set train.max_steps=4 \
    --set train.run_dir=init --set spot.comm_timeout_seconds=$TO
bounded "frozen at NCCL init"
said "frozen at NCCL init: the survivor's one line" init.log "^spotrain: start-up: backend \(NCCL communicator init\): $line"
t_exit "frozen at NCCL init: ledger comm_timeout and exit 86" 0 "" \
    test "$(t_events init/events.jsonl comm_timeout agreement | tail -n 1)" = "start-up: backend (NCCL communicator init)" \
    -a "$(t_events init/events.jsonl exit code | tail -n 1)" = 86
# the same init never completing inside NCCL (nothing frozen): rank 1 waits too
job inith inith.log -x SPOTRAIN_EMU_NCCL_FAULT=hang@1:init "$B" train /dev/null $S --set train.max_steps=4 \
    --set train.run_dir=inith --set spot.comm_timeout_seconds=$TO
bounded "init that never completes (injected on rank 1)"
said "init that never completes: a rank's one line" inith.log "^spotrain: start-up: backend \(NCCL communicator init\): rank [01] of 2 waited"

# --- selftest comm with a frozen peer ---------------------------------------
job st st.log -x SPOTRAIN_TEST_FREEZE=nccl-reduce@1 "$B" selftest comm /dev/null $S --set spot.comm_timeout_seconds=$TO
bounded "selftest comm, frozen peer"
said "selftest comm, frozen peer: the survivor's one line" st.log "^spotrain: selftest comm \(NCCL gradient reduce-scatter\): $line"

# --- asynchronous NCCL errors -------------------------------------------------
# fault KIND CODE ERRSTR: rank 1's first group fails with KIND once its
# transfers completed; rank 1 says so in one line and the job exits CODE.
fault() {
    job "f$1" "f$1.log" -x SPOTRAIN_EMU_NCCL_FAULT="$1@1:1" "$B" train /dev/null $S --set train.max_steps=4 \
        --set train.run_dir="f$1" --set spot.comm_timeout_seconds=$TO
    if [ "$RC" -eq "$2" ] && [ "$SECS" -le $BOUND ] && [ -z "$LEFT" ]; then
        t_ok "async $1 error: mpirun exits $2 after ${SECS} s, no process left"
    else
        t_bad "async $1 error: mpirun exits $2 within $BOUND s, no process left" "exit $RC after $SECS s, left: '$LEFT'"
    fi
    said "async $1 error: one line" "f$1.log" "^spotrain: NCCL gradient reduce-scatter failed on rank 1 of 2: $3 \(emulated fault SPOTRAIN_EMU_NCCL_FAULT=$1@1:1 [^)]*\)\); $4"
}
fault remote 86 "remote process exited or there was a network error" "a peer or the network failed; exiting 86"
fault system 86 "unhandled system error \(run with NCCL_DEBUG=INFO for details\)" "a peer or the network failed; exiting 86"
fault internal 70 "internal error - please report this issue to the NCCL developers" "a bug in spotrain's use of NCCL"

# a group that never completes on rank 1: both ranks' waits run out
job hang hang.log -x SPOTRAIN_EMU_NCCL_FAULT=hang@1:1 "$B" train /dev/null $S --set train.max_steps=4 \
    --set train.run_dir=hang --set spot.comm_timeout_seconds=$TO
bounded "a group that never completes (injected on rank 1)"
said "a group that never completes: a rank's one line" hang.log "^spotrain: training step \(NCCL gradient reduce-scatter\): rank [01] of 2 waited"

# a send that fails inside the group: the group still ends, one line, 70
job call call.log -x SPOTRAIN_EMU_NCCL_FAULT=call@1:1 "$B" train /dev/null $S --set train.max_steps=4 \
    --set train.run_dir=call --set spot.comm_timeout_seconds=$TO
if [ "$RC" -eq 70 ] && [ "$SECS" -le $BOUND ] && [ -z "$LEFT" ]; then
    t_ok "a failed ncclSend inside a group: mpirun exits 70 after ${SECS} s, no process left"
else
    t_bad "a failed ncclSend inside a group: mpirun exits 70 within $BOUND s" "exit $RC after $SECS s, left: '$LEFT'"
fi
said "a failed ncclSend inside a group: one line" call.log \
    "^spotrain: NCCL gradient reduce-scatter failed on rank 1 of 2: internal error .*emulated fault.*a bug in spotrain's use of NCCL"
t_exit "a failed ncclSend inside a group: the group was ended before the abort" 1 "" grep -q "inside an open group" call.log
t_end
