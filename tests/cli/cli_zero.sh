#!/bin/sh
# train.zero shards more of the state, never changes a bit where it promises
# not to: under 2 and 3 ranks with one micro-batch per rank a step (no
# accumulation) zero = 1, 2 and 3 end with the same checkpoint digests and
# losses; with accumulation each stage repeats itself bitwise (2 and 3
# reduce per micro-batch, so they agree with each other, not with 1); a
# zero = 2 checkpoint resumes under zero = 1 and 3 on other world sizes, as
# a zero = 1 run resumed there would; CUDA is refused at start; auto takes
# the lowest stage whose memory plan fits the rank's share of MemAvailable.
# module: backend comm train config
# Option strings like $F are word-split on purpose.
# shellcheck disable=SC2086
. tests/cli/lib.sh
S=$SPOTRAIN
cd "$T_TMP" || exit 1
F="--set model.dim=32 --set model.n_layers=3 --set model.n_heads=4 --set model.n_kv_heads=2 --set model.ffn_dim=64 --set model.seq_len=16 --set train.val_every=3 --set train.threads=1 --set train.log_every=1 --set checkpoint.interval_steps=0 --quiet"
# differ NAME DIR_A DIR_B STEP: the runs took different paths (so a t_same_run
# above is not two identical no-ops).
differ() {
    a=$(t_digest "$2/ckpt/$(printf 'step-%08d' "$4")" 2>/dev/null)
    b=$(t_digest "$3/ckpt/$(printf 'step-%08d' "$4")" 2>/dev/null)
    if [ -n "$a" ] && [ -n "$b" ] && [ "$a" != "$b" ]; then t_ok "$1"; else t_bad "$1" "digests '$a' vs '$b'"; fi
}

# zero = auto: the plan against SPOTRAIN_TEST_MEM_AVAILABLE (bytes). On one
# rank 2 and 3 only add buckets, so 1 is the smallest plan whatever fits.
V=${F% --quiet}
G="--set train.global_batch=2 --set train.micro_batch=1 --set train.max_steps=1"
t_exit "zero = auto, 1 rank, plenty: stage 1" 0 "zero auto: 1; plan .* GiB headroom$" \
    env SPOTRAIN_TEST_MEM_AVAILABLE=100000000000 "$S" train /dev/null $V --set train.zero=auto \
    $G --set train.run_dir=auto1
# Nothing fits: auto says which plan was the smallest, and the start is
# refused (78) on the plan's line before anything is written.
t_exit "zero = auto, 1 rank, nothing fits: the smallest plan, stage 1" 78 "zero auto: 1; .*no stage fits" \
    env SPOTRAIN_TEST_MEM_AVAILABLE=1000 "$S" train /dev/null $V --set train.zero=auto $G --set train.run_dir=auto-small
t_exit "zero = auto, 1 rank, nothing fits: refused, exit 78" 78 \
    "memory plan needs .* GiB per process [(]ZeRO stage 1, recompute none, 1 rank[)].*not starting" \
    env SPOTRAIN_TEST_MEM_AVAILABLE=1000 "$S" train /dev/null $V --set train.zero=auto --set train.recompute=none $G \
    --set train.run_dir=auto-small
t_exit "a refused start writes nothing" 0 "" test ! -e auto-small
t_exit "zero = auto with recompute = auto, nothing fits: stage 1 and layers, refused" 78 \
    "ZeRO stage 1, recompute layers" env SPOTRAIN_TEST_MEM_AVAILABLE=1000 "$S" train \
    /dev/null $V --set train.zero=auto --set train.recompute=auto $G --set train.run_dir=auto-both
t_exit "zero = 1 that does not fit: refused with the plan's line" 78 \
    "memory plan needs .* GiB per process [(]ZeRO stage 1, recompute none, 1 rank[)] and each of the 1 rank" \
    env SPOTRAIN_TEST_MEM_AVAILABLE=1000 "$S" train /dev/null $V --set train.zero=1 --set train.recompute=none $G \
    --set train.run_dir=z1-small
t_exit "... and writes nothing" 0 "" test ! -e z1-small
t_exit "zero = auto, MemAvailable unknown: stage 1" 0 "zero auto: 1 [(]MemAvailable unknown[)]" \
    env SPOTRAIN_TEST_MEM_AVAILABLE=0 "$S" train /dev/null $V --set train.zero=auto \
    $G --set train.run_dir=auto-unknown
# --dry-run --world 2 makes the trainer's choice for one of 2 ranks.
# plan ARGS...: --dry-run's per-process total in bytes.
plan() { "$S" train /dev/null "$@" --dry-run | sed -n 's/^  per-process total: \([0-9]*\) bytes$/\1/p'; }
t2=$(plan $F --set train.zero=2 --world 2)
# The variable expands in the inner shell: single quotes on purpose.
# shellcheck disable=SC2016
t_exit "zero = auto --dry-run --world 2: stage 2 when 2's plan fits exactly" 0 \
    "ZeRO stage 2[)]:.*zero auto: stage 2 on this machine, one rank: the lowest whose plan fits" \
    sh -c 'env SPOTRAIN_TEST_MEM_AVAILABLE="$0" "$@" | tr "\n" " "' "$t2" "$S" train /dev/null $F \
    --set train.zero=auto --dry-run --world 2
t_exit "zero = auto --dry-run --world 2: stage 3 one byte short of 2's plan" 0 "zero auto: stage 3" \
    env SPOTRAIN_TEST_MEM_AVAILABLE=$((t2 - 1)) "$S" train /dev/null $F --set train.zero=auto --dry-run --world 2
t_exit "zero = 3 with backend cuda: planned per GPU (stage 3)" 0 "ZeRO stage 3" \
    "$S" train /dev/null $F --set train.zero=3 --set train.backend=cuda --dry-run --world 2
t_exit "zero = 4 is not a stage: exit 78" 78 "train.zero" \
    "$S" train /dev/null $F --set train.zero=4 --set train.run_dir=four

t_need_mpi "mpi zero tests"
# zero = auto under 2 ranks on this node: each gets half of MemAvailable.
# (Before SPOTRAIN_COMM_CHUNK below: only ranks read it, not --dry-run.)
t2=$(plan $F $G --set train.zero=2 --world 2)
t_exit "zero = auto, 2 ranks: stage 2 when each rank's share fits 2's plan" 0 \
    "zero auto: 2; plan .* 2 ranks on this node" env SPOTRAIN_TEST_MEM_AVAILABLE=$((2 * t2)) \
    mpirun -np 2 --oversubscribe "$S" train /dev/null $V --set train.zero=auto $G --set train.run_dir=auto2

# A chunk smaller than a layer: buckets take several rounds.
export SPOTRAIN_COMM_CHUNK=128

for np in 2 3; do
    M="mpirun -np $np --oversubscribe"
    B="--set train.global_batch=6 --set train.micro_batch=$((6 / np)) --set train.max_steps=4"
    for z in 1 2 3; do
        $M "$S" train /dev/null $F $B --set train.zero=$z --set train.run_dir=n$np-z$z >/dev/null 2>&1
    done
    t_same_run "$np ranks, no accumulation: zero 2 == zero 1, bitwise" n$np-z1 n$np-z2 4
    t_same_run "$np ranks, no accumulation: zero 3 == zero 1, bitwise" n$np-z1 n$np-z3 4
done

# zero 3 regathers each layer for the recompute forward inside its backward.
mpirun -np 2 --oversubscribe "$S" train /dev/null $F --set train.global_batch=6 --set train.micro_batch=3 \
    --set train.max_steps=4 --set train.zero=3 --set train.recompute=layers --set train.run_dir=n2-z3-rl >/dev/null 2>&1
t_same_run "2 ranks: zero 3 with recompute layers == zero 1, bitwise" n2-z1 n2-z3-rl 4

# Accumulation: 3 micro-batches per rank a step.
M="mpirun -np 2 --oversubscribe"
A="--set train.global_batch=12 --set train.micro_batch=2 --set train.max_steps=4"
for z in 1 2 3; do
    for rep in a b; do
        $M "$S" train /dev/null $F $A --set train.zero=$z --set train.run_dir=acc-z$z$rep >/dev/null 2>&1
    done
    t_same_run "accumulation: zero $z repeats itself bitwise" acc-z${z}a acc-z${z}b 4
done
differ "accumulation: zero 2 reduces per micro-batch (not stage 1's order)" acc-z1a acc-z2a 4
t_same_run "accumulation: zero 3 == zero 2, bitwise" acc-z2a acc-z3a 4
# Interrupted and resumed under the same stage == straight.
$M "$S" train /dev/null $F $A --set train.max_steps=2 --set train.zero=2 --set train.run_dir=acc-split >/dev/null 2>&1
$M "$S" resume /dev/null $F $A --set train.zero=2 --set train.run_dir=acc-split >/dev/null 2>&1
t_same_run "accumulation, zero 2: stopped at 2 and resumed == straight" acc-z2a acc-split 4

# A zero = 2 checkpoint on 2 ranks resumes under zero = 1 on 3 ranks and
# under zero = 3 on 1 rank, where zero = 1 checkpoints of the same step go.
cp -r n2-z2 z2to1
cp -r n2-z1 z1to1
E="--set train.global_batch=6 --set train.micro_batch=2 --set train.max_steps=6"
mpirun -np 3 --oversubscribe "$S" resume /dev/null $F $E --set train.zero=1 --set train.run_dir=z2to1 >/dev/null 2>&1
mpirun -np 3 --oversubscribe "$S" resume /dev/null $F $E --set train.zero=1 --set train.run_dir=z1to1 >/dev/null 2>&1
t_same_run "zero 2 on 2 ranks -> zero 1 on 3 ranks == zero 1 throughout" z1to1 z2to1 6
cp -r n2-z2 z2to3
"$S" resume /dev/null $F --set train.global_batch=6 --set train.micro_batch=6 --set train.max_steps=6 --set train.zero=3 --set train.run_dir=z2to3 >/dev/null 2>&1
t_exit "zero 2 on 2 ranks -> zero 3 on 1 rank: verifies" 0 "" "$S" ckpt verify z2to3/ckpt/step-00000006
t_end
