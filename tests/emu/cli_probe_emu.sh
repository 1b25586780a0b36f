#!/bin/sh
# First runs on machines that cannot run the CUDA backend, on the emulator
# (make test-emu; BUILD=build/emu): a GPU below compute capability 8.0
# (SPOTRAIN_EMU_CC) refused in one line under backend = cuda and trained on
# the CPU with one line under auto; a driver older than the runtime; a
# cuBLASLt that lacks its entry points; and cuBLASLt refusing the first
# algorithm its heuristic offers (SPOTRAIN_EMU_LT_FAIL), which must fall
# back to the next with the same losses.
# Option strings like $S are word-split on purpose.
# shellcheck disable=SC2086
# module: cuda
. tests/cli/lib.sh
B=$SPOTRAIN
cd "$T_TMP" || exit 1
S="--set model.dim=32 --set model.n_layers=2 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.ffn_dim=64 \
--set model.vocab_size=256 --set model.seq_len=16 --set train.global_batch=2 --set train.micro_batch=2 \
--set checkpoint.interval_steps=100 --set spot.provider=none --set train.log_every=1 --set data.synthetic_samples=100 \
--set train.threads=1 --set train.max_steps=2 --set train.val_every=0"
losses() {
    /usr/bin/python3 -c 'import json,sys; print(" ".join(repr(o["loss"]) for o in map(json.loads, open(sys.argv[1])) if o["event"] == "step"))' "$1" 2>/dev/null
}
# one_line FILE PATTERN: FILE holds exactly one line and it matches.
one_line() { [ "$(wc -l <"$1")" -eq 1 ] && grep -q "$2" "$1"; }

# --- compute capability ---------------------------------------------------
SPOTRAIN_EMU_CC=7.5 "$B" train /dev/null $S --set train.backend=cuda --set train.run_dir=cc1 2>cc1.err
r=$?
if [ $r -eq 69 ] && one_line cc1.err "compute capability 7.5.*needs 8.0 or newer"; then
    t_ok "backend = cuda on a 7.5 GPU: exit 69, one line"
else
    t_bad "backend = cuda on a 7.5 GPU: exit 69, one line" "exit $r: $(cat cc1.err)"
fi
SPOTRAIN_EMU_CC=7.5 "$B" train /dev/null $S --set train.backend=auto --set train.run_dir=cc2 2>cc2.err
r=$?
n=$(grep -c "compute capability 7.5" cc2.err)
if [ $r -eq 0 ] && [ "$n" = 1 ] && grep -q "backend auto: .*training on the CPU" cc2.err &&
    grep -q "(cpu backend)" cc2.err; then
    t_ok "backend = auto on a 7.5 GPU: one line, trained on the CPU"
else
    t_bad "backend = auto on a 7.5 GPU: one line, trained on the CPU" "exit $r, $n lines: $(head -n 3 cc2.err)"
fi
SPOTRAIN_EMU_CC=8.0 "$B" train /dev/null $S --set train.backend=auto --set train.run_dir=cc3 2>cc3.err
r=$?
if [ $r -eq 0 ] && grep -q "(cuda backend)" cc3.err && ! grep -q "compute capability" cc3.err; then
    t_ok "backend = auto on an 8.0 GPU: cuda, no line"
else
    t_bad "backend = auto on an 8.0 GPU: cuda, no line" "exit $r: $(head -n 3 cc3.err)"
fi

# --- the driver and the library ---------------------------------------------
SPOTRAIN_EMU_DRIVER=old "$B" train /dev/null $S --set train.backend=cuda --set train.run_dir=drv 2>drv.err
r=$?
if [ $r -eq 69 ] && one_line drv.err "NVIDIA driver .* older than this build's CUDA runtime"; then
    t_ok "driver older than the runtime: exit 69, one line"
else
    t_bad "driver older than the runtime: exit 69, one line" "exit $r: $(cat drv.err)"
fi
# A library that is not cuBLASLt stands for one too old to have its entry points.
NOT_LT=$(ls /usr/lib/x86_64-linux-gnu/libz.so.1 /lib/x86_64-linux-gnu/libz.so.1 /usr/lib64/libz.so.1 2>/dev/null | head -n 1)
SPOTRAIN_EMU_LIBS=given SPOTRAIN_CUBLASLT=$NOT_LT "$B" train /dev/null $S --set train.backend=cuda \
    --set train.run_dir=lt 2>lt.err
r=$?
if [ -n "$NOT_LT" ] && [ $r -eq 69 ] && one_line lt.err "cuBLASLt at .* lacks cublasLtCreate"; then
    t_ok "cuBLASLt without its entry points: exit 69, one line naming it"
else
    t_bad "cuBLASLt without its entry points: exit 69, one line naming it" "exit $r ($NOT_LT): $(cat lt.err)"
fi

# --- cuBLASLt refuses the first algorithm -----------------------------------------
"$B" train /dev/null $S --set train.backend=cuda --set train.precision=fp32 --set train.run_dir=a0 --quiet 2>a0.err
r0=$?
for how in matmul state; do
    SPOTRAIN_EMU_LT_FAIL=$how "$B" train /dev/null $S --set train.backend=cuda --set train.precision=fp32 \
        --set train.run_dir=a-$how 2>a-$how.err
    r=$?
    l0=$(losses a0/events.jsonl) l=$(losses a-$how/events.jsonl)
    n=$(grep -c "refused algorithm" a-$how.err)
    want=1
    [ $how = state ] && want=0   # an algorithm marked unusable is never tried
    if [ $r0 -eq 0 ] && [ $r -eq 0 ] && [ -n "$l" ] && [ "$l" = "$l0" ] && [ "$n" = $want ]; then
        t_ok "cuBLASLt's first algorithm refused ($how): the next one, same losses ($l)"
    else
        t_bad "cuBLASLt's first algorithm refused ($how): the next one, same losses" \
            "exits $r0 $r, losses '$l' vs '$l0', $n log lines: $(tail -n 2 a-$how.err)"
    fi
done
t_end
