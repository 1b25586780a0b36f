#!/bin/sh
# The trainer on the emulated CUDA backend (make test-emu; BUILD=build/emu):
# what the kernel and parity checks do not reach. fp32 losses and
# validation losses against the CPU backend; a bf16 run resumed from its
# middle checkpoint (and one stopped by SIGTERM: exit 75, snapshot on the
# copy stream) ends on the same bits; fp16 dynamic loss scaling halves on
# overflow and trains on; recompute = layers (and auto on a GPU too small
# for none) ends on the bits and losses of none. A small model: every thread of every block runs
# on one CPU core.
# Option strings like $S are word-split on purpose.
# shellcheck disable=SC2086
# module: cuda train
. tests/cli/lib.sh
B=$SPOTRAIN
cd "$T_TMP" || exit 1
S="--set model.dim=32 --set model.n_layers=2 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.ffn_dim=64 \
--set model.vocab_size=256 --set model.seq_len=32 --set train.global_batch=4 --set train.micro_batch=2 \
--set checkpoint.interval_steps=3 --set spot.provider=none --set train.log_every=1 --set data.synthetic_samples=500 \
--set train.threads=1 --quiet"
digest() { t_digest "$1" 2>/dev/null; }

# --- fp32: the losses of the CPU backend ------------------------------------
"$B" train /dev/null $S --set train.val_every=3 --set train.backend=cuda --set train.precision=fp32 \
    --set train.max_steps=6 --set train.run_dir=g32 2>g32.err
rg=$?
"$B" train /dev/null $S --set train.val_every=3 --set train.backend=cpu --set train.max_steps=6 \
    --set train.run_dir=c32 2>c32.err
rc=$?
cmp=$(/usr/bin/python3 - g32/events.jsonl c32/events.jsonl <<'PY' 2>&1
import json, sys
def losses(p):
    return [(o["event"], o["step"], o.get("loss", o.get("val_loss"))) for o in map(json.loads, open(p))
            if o["event"] in ("step", "eval")]
g, c = losses(sys.argv[1]), losses(sys.argv[2])
bad = [(a, b) for a, b in zip(g, c) if a[:2] != b[:2] or abs(a[2] - b[2]) > 1e-5 * abs(b[2])]
print("OK %d losses, %d of them validation" % (len(g), sum(e == "eval" for e, _, _ in g))
      if len(g) == len(c) and len(g) >= 9 and not bad else "differ: %s" % (bad or (len(g), len(c))))
PY
)
if [ $rg -eq 0 ] && [ $rc -eq 0 ] && echo "$cmp" | grep -q "^OK"; then
    t_ok "fp32 cuda (emulated) = cpu within 1e-5: $cmp"
else
    t_bad "fp32 cuda (emulated) = cpu within 1e-5" "exits $rg $rc: $cmp $(tail -n 2 g32.err)"
fi

# --- bf16: resumed from step 3, and stopped by SIGTERM, the same bits --------
"$B" train /dev/null $S --set train.val_every=0 --set train.backend=cuda --set train.max_steps=6 \
    --set train.run_dir=b1 2>b1.err
r1=$?
d1=$(digest b1/ckpt/step-00000006)
mkdir b2 && cp -r b1/config.ini b1/ckpt b2/ 2>/dev/null && rm -rf b2/ckpt/step-00000006
"$B" resume /dev/null $S --set train.val_every=0 --set train.backend=cuda --set train.max_steps=6 \
    --set train.run_dir=b2 2>b2.err
r2=$?
d2=$(digest b2/ckpt/step-00000006)
if [ $r1 -eq 0 ] && [ $r2 -eq 0 ] && [ -n "$d1" ] && [ "$d1" = "$d2" ]; then
    t_ok "bf16 resumed at step 3 = uninterrupted ($d1)"
else
    t_bad "bf16 resumed at step 3 = uninterrupted" "exits $r1 $r2, digests '$d1' vs '$d2'"
fi
"$B" train /dev/null $S --set train.val_every=0 --set train.backend=cuda --set train.max_steps=6 \
    --set train.run_dir=sig 2>sig.err &
pid=$!
t_wait_steps sig 2 $pid
kill -TERM $pid 2>/dev/null
wait $pid
rs=$?
"$B" resume /dev/null $S --set train.val_every=0 --set train.backend=cuda --set train.max_steps=6 \
    --set train.run_dir=sig 2>>sig.err
rr=$?
ds=$(digest sig/ckpt/step-00000006)
if [ $rs -eq 75 ] && [ $rr -eq 0 ] && [ "$ds" = "$d1" ]; then
    t_ok "bf16 SIGTERM: exit 75, resumed to the same bits"
else
    t_bad "bf16 SIGTERM: exit 75, resumed to the same bits" "exit $rs (want 75), resume $rr, '$ds' vs '$d1'"
fi

# --- fp16: a first scale that overflows, halved until it fits ----------------
"$B" train /dev/null $S --set train.val_every=0 --set train.backend=cuda --set train.precision=fp16 \
    --set train.loss_scale_init=0x1p30 --set train.loss_scale_window=3 --set train.max_steps=14 \
    --set train.run_dir=f16 2>f16.err
rf=$?
chk=$(/usr/bin/python3 - f16/events.jsonl <<'PY' 2>&1
import json, math, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
over = [e for e in ev if e["event"] == "overflow"]
steps = [e for e in ev if e["event"] == "step"]
applied = [s for s in steps if s["step"] not in {e["step"] for e in over}]
bad = []
if not over or over[0]["loss_scale"] != 2.0 ** 30:
    bad.append("the first step did not overflow at 2^30")
if any(e["next_loss_scale"] != e["loss_scale"] / 2 for e in over):
    bad.append("an overflow did not halve the scale")
if len(applied) < 2 or any(s["grad_norm"] is None or not math.isfinite(s["grad_norm"]) for s in applied):
    bad.append("too few applied steps, or one without a finite norm")
if any(not math.isfinite(s["loss"]) for s in steps):
    bad.append("a loss that is not finite")
print("; ".join(bad) if bad else "OK %d overflows, %d applied, loss %.3f -> %.3f" % (
    len(over), len(applied), steps[0]["loss"], steps[-1]["loss"]))
PY
)
if [ $rf -eq 0 ] && echo "$chk" | grep -q "^OK"; then
    t_ok "fp16 loss scaling: $chk"
else
    t_bad "fp16 loss scaling" "exit $rf: $chk $(tail -n 2 f16.err)"
fi
# --- recompute = layers: the bits of none; auto picks it on a small GPU ------
R3="--set model.n_layers=3 --set train.val_every=3 --set train.backend=cuda --set train.max_steps=4"
"$B" train /dev/null $S $R3 --set train.run_dir=rn 2>rn.err
rn=$?
"$B" train /dev/null $S $R3 --set train.recompute=layers --set train.run_dir=rl 2>rl.err
rl=$?
# Not --quiet: the choice is a log line. The GPU's size stands in at one
# byte under the plan with none (--dry-run prints it).
none=$("$B" train /dev/null $S $R3 --set train.recompute=none --set cost.gpu_memory_gib=1000 --dry-run 2>/dev/null |
    sed -n 's/^  per-GPU total: \([0-9]*\) bytes.*/\1/p')
env SPOTRAIN_TEST_GPU_MEMORY=$((none - 1)) "$B" train /dev/null $(echo "$S" | sed 's/--quiet//') $R3 \
    --set train.recompute=auto --set train.run_dir=ra 2>ra.err
ra=$?
dn=$(digest rn/ckpt/step-00000004) dl=$(digest rl/ckpt/step-00000004) da=$(digest ra/ckpt/step-00000004)
ln=$(t_events rn/events.jsonl step loss | tr '\n' ' ')
ll=$(t_events rl/events.jsonl step loss | tr '\n' ' ')
vn=$(t_events rn/events.jsonl eval val_loss | tr '\n' ' ')
vl=$(t_events rl/events.jsonl eval val_loss | tr '\n' ' ')
if [ $rn -eq 0 ] && [ $rl -eq 0 ] && [ -n "$dn" ] && [ "$dn" = "$dl" ] && [ -n "$ln" ] && [ "$ln" = "$ll" ] &&
    [ -n "$vn" ] && [ "$vn" = "$vl" ]; then
    t_ok "bf16 recompute layers = none, bitwise: digests, losses, validation losses ($dn)"
else
    t_bad "bf16 recompute layers = none, bitwise" "exits $rn $rl, digests '$dn' vs '$dl', losses '$ln' vs '$ll'"
fi
if [ -n "$none" ] && [ $ra -eq 0 ] && grep -q "recompute auto: layers; plan .* per GPU against" ra.err &&
    [ "$da" = "$dn" ]; then
    t_ok "recompute auto on a GPU one byte short of none's plan: layers, the same bits"
else
    t_bad "recompute auto picks layers on a small GPU" "plan '$none', exit $ra, digest '$da': $(grep -m1 recompute ra.err)"
fi

t_end
