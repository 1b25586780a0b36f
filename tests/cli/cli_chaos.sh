#!/bin/sh
# Chaos: spotrain-run keeps a training run going while a driver SIGTERMs the
# trainer at random moments and SIGKILLs it now and then; the run must finish,
# every committed checkpoint must verify, and the final weights and Adam state
# must be bitwise identical to an uninterrupted run's.
# CHAOS_ROUNDS (default 6; `make chaos` uses 40), CHAOS_SEED (default 1).
# module: spot train ckpt
. tests/cli/lib.sh
S=$SPOTRAIN
RUN=$PWD/spot/spotrain-run
cd "$T_TMP" || exit 1
ROUNDS=${CHAOS_ROUNDS:-6}
SEED=${CHAOS_SEED:-1}
# The driver uses at most about 200 steps a round (below), so the run outlasts it.
STEPS=$((300 * ROUNDS + 300))
F="--set model.dim=64 --set model.n_layers=2 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.ffn_dim=128 --set model.seq_len=32 --set train.global_batch=8 --set train.micro_batch=8 --set train.val_every=0 --set train.log_every=5 --set checkpoint.interval_steps=100 --set checkpoint.keep_last=1000 --set train.max_steps=$STEPS --quiet"

# shellcheck disable=SC2086
t_exit "uninterrupted reference run ($STEPS steps)" 0 "" "$S" train /dev/null $F --set train.run_dir=ref

# --max-stalls 0: a SIGTERM that lands in start-up, before a new checkpoint,
# is a restart without progress; several in a row are this test's doing.
# shellcheck disable=SC2086
"$RUN" --backoff 0 --max-restarts $((ROUNDS * 2 + 10)) --max-stalls 0 --events chaos/events.jsonl -- \
    "$S" resume /dev/null $F --set train.run_dir=chaos >chaos.log 2>&1 &
wpid=$!
n_term=0
n_kill=0
r=0
while [ $r -lt "$ROUNDS" ] && kill -0 "$wpid" 2>/dev/null; do
    # A quarter of the rounds strike after a short sleep (often in start-up);
    # the rest wait for up to 200 more trained steps (40 ledger records), then
    # strike 0-0.1 s later: mid-step or mid-checkpoint. Waiting on progress
    # rather than the clock keeps the run longer than the driver on any
    # machine speed.
    set -- $(awk -v s=$((SEED * 1000 + r)) 'BEGIN { srand(s); u = rand(); printf "%d %.2f %.2f", (u < 0.25) ? 0 : int(rand() * 40) + 1, rand() * 0.1, 0.05 + rand() * 0.25 }')
    if [ "$1" -eq 0 ]; then
        sleep "$3"
    else
        t_wait_steps chaos $(($(t_steps chaos) + $1)) "$wpid"
        sleep "$2"
    fi
    cpid=$(pgrep -P "$wpid" | head -n 1)
    [ -n "$cpid" ] || continue
    if [ $((r % 5)) -eq 4 ]; then
        kill -KILL "$cpid" 2>/dev/null && n_kill=$((n_kill + 1))
    else
        kill -TERM "$cpid" 2>/dev/null && n_term=$((n_term + 1))
    fi
    r=$((r + 1))
done
wait "$wpid"
rc=$?
echo "chaos: $n_term SIGTERM and $n_kill SIGKILL sent; $(grep -c '"event":"restart"' chaos/events.jsonl 2>/dev/null || echo 0) restarts"
if [ "$rc" -eq 0 ]; then
    t_ok "run completes under chaos ($n_term SIGTERM, $n_kill SIGKILL)"
else
    t_bad "run completes under chaos ($n_term SIGTERM, $n_kill SIGKILL)" "spotrain-run exit $rc: $(tail -n 3 chaos.log)"
fi
want_term=$((ROUNDS * 4 / 5))
if [ "$n_term" -ge "$want_term" ]; then t_ok "at least $want_term SIGTERMs landed"; else t_bad "at least $want_term SIGTERMs landed" "only $n_term"; fi

bad=0
n=0
for d in chaos/ckpt/step-*; do
    case $d in *.tmp) continue ;; esac
    [ -d "$d" ] || continue
    n=$((n + 1))
    if ! "$S" ckpt verify "$d" >/dev/null 2>&1; then
        bad=$((bad + 1))
        echo "    $d does not verify"
    fi
done
if [ "$n" -gt 0 ] && [ "$bad" -eq 0 ]; then t_ok "all $n committed checkpoints verify"; else t_bad "all $n committed checkpoints verify" "$bad bad"; fi

last=$(printf 'step-%08d' "$STEPS")
digest() { "$S" ckpt inspect --json "$1" | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["digest"], sort_keys=True))'; }
a=$(digest "ref/ckpt/$last")
b=$(digest "chaos/ckpt/$last")
if [ -n "$a" ] && [ "$a" = "$b" ]; then
    t_ok "final params/adam_m/adam_v digests identical to the uninterrupted run"
else
    t_bad "final params/adam_m/adam_v digests identical to the uninterrupted run" "ref $a chaos $b"
fi
t_end
