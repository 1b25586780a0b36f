#!/bin/sh
# Data-parallel runs under mpirun: two ranks agree with themselves bitwise
# when interrupted and resumed, a 2-rank checkpoint resumes on 1 and 3
# ranks (elastic), and a 2-rank run learns like a 1-rank one.
# Option strings like $F are word-split on purpose.
# shellcheck disable=SC2086
# module: comm train
. tests/cli/lib.sh
S=$SPOTRAIN
cd "$T_TMP" || exit 1
t_need_mpi "mpi tests"
M="mpirun -np 2 --oversubscribe"
F="--set model.dim=32 --set model.n_layers=2 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.ffn_dim=64 --set model.seq_len=16 --set train.global_batch=6 --set train.micro_batch=3 --set train.val_every=0 --set train.threads=1 --set train.log_every=1 --quiet"
digest() { t_digest "$1"; }

$M "$S" train /dev/null $F --set train.max_steps=12 --set train.run_dir=straight --set checkpoint.interval_steps=0 >/dev/null 2>&1
t_exit "2 ranks: 12 steps straight" 0 "" test -d straight/ckpt/step-00000012
$M "$S" train /dev/null $F --set train.max_steps=5 --set train.run_dir=split --set checkpoint.interval_steps=0 >/dev/null 2>&1
$M "$S" resume /dev/null $F --set train.max_steps=9 --set train.run_dir=split --set checkpoint.interval_steps=0 >/dev/null 2>&1
$M "$S" resume /dev/null $F --set train.max_steps=12 --set train.run_dir=split --set checkpoint.interval_steps=0 >/dev/null 2>&1
a=$(digest straight/ckpt/step-00000012)
b=$(digest split/ckpt/step-00000012)
if [ -n "$a" ] && [ "$a" = "$b" ]; then t_ok "2 ranks: stopped/resumed twice == straight (digests $a)"; else t_bad "2 ranks: resumed == straight" "$a vs $b"; fi
la=$(t_events straight/events.jsonl step loss | tail -n 3 | tr '\n' ' ')
lb=$(t_events split/events.jsonl step loss | tail -n 3 | tr '\n' ' ')
if [ "$la" = "$lb" ]; then t_ok "2 ranks: identical logged losses"; else t_bad "2 ranks: identical logged losses" "$la / $lb"; fi

# Elastic: what 2 ranks saved, 1 and 3 ranks continue.
cp -r split one
t_exit "2-rank checkpoint resumes on 1 rank" 0 "" "$S" resume /dev/null $F --set train.max_steps=14 --set train.run_dir=one
cp -r split three
t_exit "2-rank checkpoint resumes on 3 ranks" 0 "" mpirun -np 3 --oversubscribe "$S" resume /dev/null $F --set train.max_steps=14 --set train.run_dir=three
t_exit "1-rank continuation verifies" 0 "" "$S" ckpt verify one/ckpt/step-00000014
t_exit "3-rank continuation verifies" 0 "" "$S" ckpt verify three/ckpt/step-00000014
# Same global batch and data order: 1 and 3 ranks reach nearly the same
# weights (only the summation order differs).
l1=$(t_events one/events.jsonl step loss | tail -n 1)
l3=$(t_events three/events.jsonl step loss | tail -n 1)
if awk -v a="$l1" -v b="$l3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 1e-3 * a) }'; then
    t_ok "1 vs 3 ranks from one checkpoint: loss $l1 vs $l3"
else
    t_bad "1 vs 3 ranks from one checkpoint" "loss $l1 vs $l3"
fi
# A stop seen by one rank only (rank 1 gets SIGUSR1): both ranks agree on
# the step, rank 0 commits a checkpoint of it, and the job exits 75.
# The run directory by its full path: pgrep then finds this job's rank 1,
# never one of another copy of this script running at the same time.
$M "$S" train /dev/null $F --set train.max_steps=100000 --set train.log_every=1000 --set train.run_dir="$PWD/peer" \
    --set checkpoint.interval_steps=0 >peer.log 2>&1 &
mp=$!
r1=""
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    sleep 0.2
    for p in $(pgrep -f "run_dir=$PWD/peer "); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then r1=$p; fi
    done
    [ -n "$r1" ] && [ -d peer/ckpt ] && break
done
sleep 1
[ -n "$r1" ] && kill -USR1 "$r1"
wait $mp
rc=$?
step=$(sed -n 's/.*"event":"stop","step":\([0-9]*\).*/\1/p' peer/events.jsonl | tail -n 1)
if [ "$rc" -eq 75 ] && [ -n "$step" ] && "$S" ckpt verify "peer/ckpt/$(printf 'step-%08d' "$step")" >/dev/null 2>&1; then
    t_ok "stop seen by rank 1 only: exit 75, checkpoint of step $step verifies"
else
    t_bad "stop seen by rank 1 only" "exit $rc, stop step '$step', rank-1 pid '$r1': $(tail -n 3 peer.log)"
fi
t_exit "global_batch not divisible by ranks: exit 78" 78 "multiple of the 4 ranks" mpirun -np 4 --oversubscribe "$S" train /dev/null $F --set train.max_steps=2 --set train.run_dir=four
# selftest comm: the data plane over the ranks, every size bitwise right;
# a flipped element on one rank is caught and fails the test.
t_exit "selftest comm on 3 ranks: every size bitwise right" 0 "every size bitwise right on 3 ranks" \
    mpirun -np 3 --oversubscribe "$S" selftest comm /dev/null $F
t_exit "selftest comm in 256-float rounds" 0 "256-float message rounds" \
    env SPOTRAIN_COMM_CHUNK=256 mpirun -np 2 -x SPOTRAIN_COMM_CHUNK "$S" selftest comm /dev/null $F
# The chain reduce-scatter against the flat exchange it replaced, bitwise,
# in many 256-float chunks (values whose sums round: any other order
# changes bits), on 2, 3 and 4 ranks.
for w in 2 3 4; do
    t_exit "selftest comm on $w ranks: chain = flat exchange, bitwise" 0 "the chain reduce-scatter = the flat exchange, bitwise" \
        env SPOTRAIN_COMM_CHUNK=256 mpirun -np $w --oversubscribe -x SPOTRAIN_COMM_CHUNK "$S" selftest comm /dev/null $F --set model.dim=64
done
t_exit "selftest comm: a wrong bit is caught (exit 70)" 70 "REDUCE-SCATTER WRONG" \
    mpirun -np 2 -x SPOTRAIN_SELFTEST_FAULT=1 "$S" selftest comm /dev/null $F
# [comm] reduce = nccl is ncclReduceScatter: the cpu backend refuses it,
# in one line, before anything runs (and backend auto without a GPU at start).
t_exit "comm.reduce = nccl on backend cpu: exit 78, one line" 78 "^spotrain: .*comm.reduce = nccl needs backend cuda" \
    "$S" train /dev/null $F --set train.backend=cpu --set comm.reduce=nccl --set train.max_steps=1 --set train.run_dir=rn
if "$S" --version | grep -q "not compiled in"; then
    t_exit "comm.reduce = nccl, backend auto on a CPU: exit 78" 78 "comm.reduce = nccl needs backend cuda" \
        "$S" train /dev/null $F --set train.backend=auto --set comm.reduce=nccl --set train.max_steps=1 --set train.run_dir=rn2
fi
t_exit "the manifest records the chain" 0 "" grep -q '"reduce":"chain"' straight/ckpt/step-00000012/manifest.json
t_exit "selftest comm on one process" 0 "every size bitwise right on 1 rank" "$S" selftest comm /dev/null $F
t_exit "selftest: which one?" 64 "selftest comm CONFIG" "$S" selftest
t_end
