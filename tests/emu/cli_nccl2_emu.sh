#!/bin/sh
# The CUDA backend's NCCL data plane (cuda/nccl.cu) on 2 ranks under
# mpirun, on the emulated backend (make test-emu; BUILD=build/emu): the
# emulated libnccl.so.2 (tests/emu/nccl.cpp) moves the bytes over MPI.
# fp32: the losses of the CPU backend's 2-rank run within 1e-5, and two
# runs (one in 256-float message rounds) end on the same digests; bf16: a
# 2-rank run resumed from its middle checkpoint (each rank loads only its
# range of the master, the all-gather makes the working copy whole) ends
# on the bits of an uninterrupted one; a 2-rank fp32 checkpoint continued
# on 1 rank of the CPU backend learns like the 2-rank emulated run;
# [comm] reduce = nccl refused where NCCL lacks ncclReduceScatter, recorded
# in the manifest, and a resume across a change warned about; selftest
# comm over the device data plane in many rounds, bitwise, and
# against the flat host exchange on 2, 3 and 4 ranks.
# Option strings like $S are word-split on purpose.
# shellcheck disable=SC2086
# module: cuda comm
. tests/cli/lib.sh
B=$SPOTRAIN
cd "$T_TMP" || exit 1
t_need_mpi "nccl emulation tests"
M="mpirun -np 2 --oversubscribe"
S="--set model.dim=32 --set model.n_layers=2 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.ffn_dim=64 \
--set model.vocab_size=256 --set model.seq_len=32 --set train.global_batch=4 --set train.micro_batch=2 \
--set checkpoint.interval_steps=3 --set spot.provider=none --set train.log_every=1 --set data.synthetic_samples=500 \
--set train.threads=1 --quiet"
digest() { t_digest "$1" 2>/dev/null; }
# losses A B TOL: step and validation losses of two runs, equal within TOL (relative)
losses() {
    /usr/bin/python3 - "$1" "$2" "$3" <<'PY' 2>&1
import json, sys
def losses(p):
    return [(o["event"], o["step"], o.get("loss", o.get("val_loss"))) for o in map(json.loads, open(p))
            if o["event"] in ("step", "eval")]
g, c, tol = losses(sys.argv[1]), losses(sys.argv[2]), float(sys.argv[3])
bad = [(a, b) for a, b in zip(g, c) if a[:2] != b[:2] or abs(a[2] - b[2]) > tol * abs(b[2])]
print("OK %d losses, %d of them validation" % (len(g), sum(e == "eval" for e, _, _ in g))
      if len(g) == len(c) and len(g) >= 6 and not bad else "differ: %s" % (bad or (len(g), len(c))))
PY
}
world() { sed -n 's/.*"event":"start".*"world":\([0-9]*\).*"libraries":"[^"]*nccl \([0-9.]*\).*/\1 \2/p' "$1" | head -n 1; }

# --- fp32: the CPU backend's losses; two runs, the same bits -----------------
$M "$B" train /dev/null $S --set train.val_every=3 --set train.backend=cuda --set train.precision=fp32 \
    --set train.max_steps=6 --set train.run_dir=g32 2>g32.err
rg=$?
$M "$B" train /dev/null $S --set train.val_every=3 --set train.backend=cpu --set train.max_steps=6 \
    --set train.run_dir=c32 2>c32.err
rc=$?
cmp=$(losses g32/events.jsonl c32/events.jsonl 1e-5)
w=$(world g32/events.jsonl)
if [ $rg -eq 0 ] && [ $rc -eq 0 ] && [ "$w" = "2 2.26.5" ] && echo "$cmp" | grep -q "^OK"; then
    t_ok "fp32 2 ranks, cuda (emulated NCCL) = cpu within 1e-5: $cmp"
else
    t_bad "fp32 2 ranks, cuda (emulated NCCL) = cpu within 1e-5" \
        "exits $rg $rc, world/nccl '$w': $cmp $(tail -n 3 g32.err)"
fi
# the second in 256-float rounds (~70 per collective): the same bits
SPOTRAIN_COMM_CHUNK=256 $M -x SPOTRAIN_COMM_CHUNK "$B" train /dev/null $S --set train.val_every=3 \
    --set train.backend=cuda --set train.precision=fp32 --set train.max_steps=6 --set train.run_dir=g32b 2>g32b.err
rb=$?
da=$(digest g32/ckpt/step-00000006)
db=$(digest g32b/ckpt/step-00000006)
if [ $rg -eq 0 ] && [ $rb -eq 0 ] && [ -n "$da" ] && [ "$da" = "$db" ]; then
    t_ok "fp32 2 ranks: two runs (one in 256-float rounds) end on the same digests ($da)"
else
    t_bad "fp32 2 ranks: two runs (one in 256-float rounds) end on the same digests" "exits $rg $rb, '$da' vs '$db'"
fi

# --- bf16: resumed from step 3 on 2 ranks, the same bits ---------------------
$M "$B" train /dev/null $S --set train.val_every=0 --set train.backend=cuda --set train.max_steps=6 \
    --set train.run_dir=b1 2>b1.err
r1=$?
d1=$(digest b1/ckpt/step-00000006)
mkdir b2 && cp -r b1/config.ini b1/ckpt b2/ 2>/dev/null && rm -rf b2/ckpt/step-00000006
$M "$B" resume /dev/null $S --set train.val_every=0 --set train.backend=cuda --set train.max_steps=6 \
    --set train.run_dir=b2 2>b2.err
r2=$?
d2=$(digest b2/ckpt/step-00000006)
if [ $r1 -eq 0 ] && [ $r2 -eq 0 ] && [ -n "$d1" ] && [ "$d1" = "$d2" ]; then
    t_ok "bf16 2 ranks: resumed at step 3 = uninterrupted ($d1)"
else
    t_bad "bf16 2 ranks: resumed at step 3 = uninterrupted" "exits $r1 $r2, digests '$d1' vs '$d2' $(tail -n 2 b2.err)"
fi

# --- fp32: the 2-rank checkpoint of step 3, continued on 1 CPU rank ----------
# The same weights and data order: the step losses of the 1-rank CPU
# continuation match the 2-rank emulated run's (summation order only).
mkdir one && cp -r g32/config.ini g32/ckpt one/ 2>/dev/null && rm -rf one/ckpt/step-00000006
"$B" resume /dev/null $S --set train.val_every=0 --set train.backend=cpu --set train.max_steps=6 \
    --set train.run_dir=one 2>one.err
ro=$?
l2=$(t_events g32/events.jsonl step loss | tail -n 3 | tr '\n' ' ')
l1=$(t_events one/events.jsonl step loss | tail -n 3 | tr '\n' ' ')
if [ $ro -eq 0 ] && [ -n "$l1" ] && /usr/bin/python3 -c '
import sys
a, b = [list(map(float, s.split())) for s in sys.argv[1:3]]
sys.exit(not (len(a) == len(b) == 3 and all(abs(x - y) <= 1e-5 * abs(y) for x, y in zip(a, b))))' "$l2" "$l1"; then
    t_ok "fp32 2-rank checkpoint on 1 CPU rank: losses $l1"
else
    t_bad "fp32 2-rank checkpoint on 1 CPU rank" "exit $ro, losses '$l1' vs 2 ranks '$l2' $(tail -n 2 one.err)"
fi

# --- [comm] reduce = nccl ------------------------------------------------------
# ncclReduceScatter is not emulated: 2 ranks refuse it at start, as with an
# NCCL that lacks it (exit 69). One rank reduces nothing, so it trains; its
# checkpoint records the setting, and 2 CPU ranks continuing it (the chain)
# log the continuity warning naming the change.
t_exit "reduce = nccl on an NCCL without ncclReduceScatter: refused (exit 69)" 69 \
    "comm.reduce = nccl needs ncclReduceScatter" \
    $M "$B" train /dev/null $S --set train.val_every=0 --set train.backend=cuda --set train.precision=fp32 \
    --set comm.reduce=nccl --set train.max_steps=3 --set train.run_dir=rnccl
"$B" train /dev/null $S --set train.val_every=0 --set train.backend=cuda --set train.precision=fp32 \
    --set comm.reduce=nccl --set train.max_steps=3 --set train.run_dir=rn1 >/dev/null 2>&1
t_exit "reduce = nccl: the manifest records it" 0 "" grep -q '"reduce":"nccl"' rn1/ckpt/step-00000003/manifest.json
t_exit "2 CPU ranks continue a 1-rank reduce = nccl checkpoint" 0 "" \
    $M "$B" resume /dev/null $S --set train.val_every=0 --set train.backend=cpu --set train.max_steps=4 \
    --set train.run_dir=rn1
t_exit "a resume across a change of reduce: the continuity record names it" 0 "" \
    grep -Eq '"continuity".*reduce nccl -> chain' rn1/events.jsonl

# --- selftest comm: the device data plane (cuda_dp) in 256-float rounds -----
# Many rounds per collective (training above moves each in one), every size
# bitwise right; a flipped element on one rank is caught (exit 70).
t_exit "selftest comm, cuda data plane, 256-float rounds: bitwise right" 0 \
    "NCCL send/receive.*256-float message rounds" \
    env SPOTRAIN_COMM_CHUNK=256 $M -x SPOTRAIN_COMM_CHUNK "$B" selftest comm /dev/null $S --set train.backend=cuda
# The chain reduce-scatter as NCCL rounds (comm/xfer.c) against the flat
# host exchange, bitwise, on 3 and 4 ranks too (values whose sums round).
for w in 3 4; do
    t_exit "selftest comm, cuda data plane, $w ranks: the chain = the flat exchange, bitwise" 0 \
        "the chain reduce-scatter = the flat exchange, bitwise" \
        env SPOTRAIN_COMM_CHUNK=256 mpirun -np $w --oversubscribe -x SPOTRAIN_COMM_CHUNK "$B" selftest comm /dev/null $S \
        --set train.backend=cuda
done
t_exit "selftest comm, cuda data plane: the transport line from NCCL's INFO log" 0 "transport.*NET/emulated-MPI" \
    $M "$B" selftest comm /dev/null $S --set train.backend=cuda
t_exit "selftest comm, cuda data plane: a wrong bit is caught (exit 70)" 70 "REDUCE-SCATTER WRONG" \
    $M -x SPOTRAIN_SELFTEST_FAULT=1 "$B" selftest comm /dev/null $S --set train.backend=cuda
t_end
