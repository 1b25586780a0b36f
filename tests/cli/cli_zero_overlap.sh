#!/bin/sh
# [comm] overlap: ZeRO 2 and 3 queue each bucket's exchange on the comm
# worker while the backward (and, at 3, the next layer's compute) goes on.
# Overlap on and off give the same bits (the chain's order is the same) at
# 2 and 3 ranks, with and without accumulation; a reclaim notice that
# arrives mid-step, while a bucket exchange is queued, still ends in a
# verified checkpoint and exit 75, and that checkpoint resumes to the
# straight run's bits. A peer frozen in a queued exchange: cli_mpi_vanish.sh.
# module: comm backend
# Option strings like $F are word-split on purpose.
# shellcheck disable=SC2086
. tests/cli/lib.sh
S=$SPOTRAIN
cd "$T_TMP" || exit 1
t_need_mpi "overlap tests"
F="--set model.dim=32 --set model.n_layers=3 --set model.n_heads=4 --set model.n_kv_heads=2 --set model.ffn_dim=64 --set model.seq_len=16 --set train.val_every=3 --set train.threads=1 --set train.log_every=1 --set checkpoint.interval_steps=0 --set spot.provider=none --quiet"
# A chunk smaller than a layer: buckets take several rounds.
export SPOTRAIN_COMM_CHUNK=128
# Layer buckets are 9280 floats. On 3 ranks a vocabulary of 512 makes the
# embedding and norm + lm_head buckets 16384 and 16416: too big for the
# second (layer-sized) buffers, they take the first, after its exchange.
wide() { [ "$1" -eq 3 ] && echo "--set model.vocab_size=512"; }

for np in 2 3; do
    M="mpirun -np $np --oversubscribe"
    B="--set train.global_batch=6 --set train.micro_batch=$((6 / np)) --set train.max_steps=3 $(wide $np)"
    A="--set train.global_batch=12 --set train.micro_batch=$((6 / np)) --set train.max_steps=3 $(wide $np)"
    $M "$S" train /dev/null $F $B --set train.zero=1 --set train.run_dir=n$np-z1 >/dev/null 2>&1
    for z in 2 3; do
        for o in true false; do
            $M "$S" train /dev/null $F $B --set train.zero=$z --set comm.overlap=$o \
                --set train.run_dir=n$np-z$z-$o >/dev/null 2>&1
            $M "$S" train /dev/null $F $A --set train.zero=$z --set comm.overlap=$o \
                --set train.run_dir=acc$np-z$z-$o >/dev/null 2>&1
        done
        t_same_run "$np ranks, zero $z: overlap on == off, bitwise" n$np-z$z-false n$np-z$z-true 3
        t_same_run "$np ranks, zero $z, accumulation: overlap on == off, bitwise" acc$np-z$z-false acc$np-z$z-true 3
        t_same_run "$np ranks, zero $z, overlap on == zero 1, bitwise" n$np-z1 n$np-z$z-true 3
    done
done
# The worker runs (rank 0 says so once) with overlap on, not with it off.
V=${F% --quiet}
for o in true false; do
    $M "$S" train /dev/null $V $B --set train.zero=2 --set comm.overlap=$o --set train.run_dir=said-$o >said-$o.log 2>&1
done
t_exit "overlap on: rank 0 says the exchanges run on the comm worker" 0 "" \
    grep -qx "spotrain: comm.overlap: the bucket exchanges run on a comm worker thread" said-true.log
t_exit "overlap off: no worker" 1 "" grep -q "comm worker" said-false.log
# zero 3 with recompute: the recompute forward regathers each layer while
# the next one's gather is queued.
M="mpirun -np 2 --oversubscribe"
B="--set train.global_batch=6 --set train.micro_batch=3 --set train.max_steps=3"
$M "$S" train /dev/null $F $B --set train.zero=3 --set train.recompute=layers --set train.run_dir=rl >/dev/null 2>&1
t_same_run "2 ranks, zero 3, recompute layers, overlap on == zero 1, bitwise" n2-z1 rl 3
M="mpirun -np 3 --oversubscribe"
B="--set train.global_batch=6 --set train.micro_batch=2 --set train.max_steps=3 $(wide 3)"
$M "$S" train /dev/null $F $B --set train.zero=3 --set train.recompute=layers --set train.run_dir=rl3 >/dev/null 2>&1
t_same_run "3 ranks, wide vocabulary, zero 3, recompute layers, overlap on == zero 1, bitwise" n3-z1 rl3 3

# A notice mid-step: rank 0 gets SIGUSR1 as it queues the step's first
# gradient bucket (zero 2) or parameter gather (zero 3); the ranks agree to
# stop at the step's end, checkpoint it and exit 75. The notice comes in
# step 1, so 20 steps bound a run whose hook did not fire: it ends with 0
# at step 20, and only a stop on the notice, before then, passes.
B="--set train.global_batch=6 --set train.micro_batch=3"
for z in 2 3; do
    point=bucket
    [ $z -eq 3 ] && point=layer
    for o in true false; do
        d=stop-z$z-$o
        SPOTRAIN_TEST_NOTICE=$point@0 $M "$S" train /dev/null $F $B --set train.max_steps=20 \
            --set train.zero=$z --set comm.overlap=$o --set train.run_dir=$d >$d.log 2>&1
        rc=$?
        s=$(t_events "$d/events.jsonl" stop step | tail -n 1)
        n=$(grep -c '"event":"notice"' "$d/events.jsonl" 2>/dev/null)
        t_exit "zero $z, overlap $o: a notice mid-step exits 75 at step 1 (rc $rc, stop step $s, notices $n)" 0 "" \
            test "$rc" -eq 75 -a "${n:-0}" -ge 1 -a "${s:-0}" -eq 1
        t_exit "zero $z, overlap $o: the stop checkpoint (step $s) verifies" 0 "" \
            "$S" ckpt verify "$(printf '%s/ckpt/step-%08d' "$d" "${s:-0}")"
    done
    # ... and resumes to the straight run's bits.
    $M "$S" train /dev/null $F $B --set train.max_steps=3 --set train.zero=$z --set train.run_dir=straight$z \
        >/dev/null 2>&1
    $M "$S" resume /dev/null $F $B --set train.max_steps=3 --set train.zero=$z --set train.run_dir=stop-z$z-true \
        >/dev/null 2>&1
    a=$(t_digest straight$z/ckpt/step-00000003 2>/dev/null)
    b=$(t_digest stop-z$z-true/ckpt/step-00000003 2>/dev/null)
    t_exit "zero $z: stopped mid-step, resumed == straight ($a)" 0 "" test -n "$a" -a "$a" = "$b"
done
t_end
