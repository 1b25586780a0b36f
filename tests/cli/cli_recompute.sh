#!/bin/sh
# train.recompute = layers changes memory, never a bit: runs (3 layers, GQA,
# 2 micro-batches a step) under none and layers end with the same checkpoint
# digests and losses (1 rank and 2 ranks), a checkpoint crosses the setting
# in both directions, an unknown value is refused at start, and the CUDA
# plan takes layers (its bits are tests/emu/cli_train_emu.sh's).
# Option strings like $F are word-split on purpose.
# shellcheck disable=SC2086
# module: train backend
. tests/cli/lib.sh
S=$SPOTRAIN
cd "$T_TMP" || exit 1
F="--set model.dim=32 --set model.n_layers=3 --set model.n_heads=4 --set model.n_kv_heads=2 --set model.ffn_dim=64 --set model.seq_len=16 --set train.global_batch=6 --set train.micro_batch=3 --set train.val_every=3 --set train.threads=2 --set train.log_every=1 --set checkpoint.interval_steps=0 --quiet"
digest() { t_digest "$1"; }
losses() { t_events "$1/events.jsonl" step loss | tr '\n' ' '; }
# same NAME DIR_A DIR_B STEP: digests and logged losses of two runs agree.
same() {
    a=$(digest "$2/ckpt/$(printf 'step-%08d' "$4")" 2>/dev/null)
    b=$(digest "$3/ckpt/$(printf 'step-%08d' "$4")" 2>/dev/null)
    if [ -n "$a" ] && [ "$a" = "$b" ]; then t_ok "$1 (digests $a)"; else t_bad "$1" "digests '$a' vs '$b'"; fi
}

"$S" train /dev/null $F --set train.max_steps=6 --set train.run_dir=none >/dev/null 2>&1
"$S" train /dev/null $F --set train.max_steps=6 --set train.run_dir=layers --set train.recompute=layers >/dev/null 2>&1
same "6 steps: recompute layers == none, bitwise" none layers 6
la=$(losses none)
lb=$(losses layers)
if [ -n "$la" ] && [ "$la" = "$lb" ]; then t_ok "6 steps: identical logged losses"; else t_bad "identical logged losses" "$la / $lb"; fi
vl=$(t_events layers/events.jsonl eval val_loss | tr '\n' ' ')
if [ -n "$vl" ] && [ "$vl" = "$(t_events none/events.jsonl eval val_loss | tr '\n' ' ')" ]; then
    t_ok "identical validation losses"
else
    t_bad "identical validation losses" "$vl"
fi
t_exit "the resolved config records recompute" 0 "recompute = layers" cat layers/config.ini

# A checkpoint does not carry the setting's state: saved under one, resumed
# under the other, equal to the uninterrupted run.
"$S" train /dev/null $F --set train.max_steps=3 --set train.run_dir=n2l >/dev/null 2>&1
"$S" resume /dev/null $F --set train.max_steps=6 --set train.run_dir=n2l --set train.recompute=layers >/dev/null 2>&1
same "saved under none, resumed under layers == straight" none n2l 6
"$S" train /dev/null $F --set train.max_steps=3 --set train.run_dir=l2n --set train.recompute=layers >/dev/null 2>&1
"$S" resume /dev/null $F --set train.max_steps=6 --set train.run_dir=l2n --set train.recompute=none >/dev/null 2>&1
same "saved under layers, resumed under none == straight" none l2n 6

t_exit "recompute = often is refused: exit 78" 78 "train.recompute = 'often' is not one of none\|layers\|auto" \
    "$S" train /dev/null $F --set train.recompute=often --set train.run_dir=auto
# CUDA has recompute too (tests/emu checks its bits): the configuration is
# taken, and only a build or machine without CUDA refuses the backend.
if "$S" --version | grep -q "^cuda: compiled"; then
    t_ok "backend cuda with recompute = layers: this build has CUDA (tests/emu/cli_train_emu.sh runs it)"
else
    t_exit "backend cuda with recompute = layers: taken, only the missing CUDA refused (69)" 69 \
        "^spotrain: backend cuda: this spotrain was built without CUDA" \
        "$S" train /dev/null $F --set train.backend=cuda --set train.recompute=layers --set train.run_dir=cuda
fi
t_exit "dry-run on cuda: the GPU's activations under layers, and none's beside them" 0 \
    "recompute layers: every layer's input and one layer's activations.*recompute none would hold" \
    "$S" train /dev/null --set train.recompute=layers --set train.backend=cuda --dry-run
t_exit "dry-run: the activation figure of layers, and of none beside it" 0 \
    "recompute layers: layer inputs and one layer's activations.*recompute none would hold" \
    "$S" train /dev/null --set train.recompute=layers --set train.backend=cpu --dry-run

if command -v mpirun >/dev/null 2>&1 && "$S" --version | grep -q "mpi: yes"; then
    M="mpirun -np 2 --oversubscribe"
    $M "$S" train /dev/null $F --set train.threads=1 --set train.max_steps=6 --set train.run_dir=mpi-none >/dev/null 2>&1
    $M "$S" train /dev/null $F --set train.threads=1 --set train.max_steps=6 --set train.run_dir=mpi-layers \
        --set train.recompute=layers >/dev/null 2>&1
    same "2 ranks: recompute layers == none, bitwise" mpi-none mpi-layers 6
else
    echo "SKIP 2 ranks: no mpirun or built with MPI=0"
fi
t_end
