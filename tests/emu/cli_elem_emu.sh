#!/bin/sh
# The CUDA backend's elementwise and classifier choices in the trainer, on
# the emulator (make test-emu; BUILD=build/emu): zero_grads zeroes only the
# gradients no product overwrites, and the run ends on the same bits as with
# the whole vector zeroed (SPOTRAIN_CUDA_ZERO_ALL=1), over steps of two
# micro-batches each (a wrong first write would add the previous step's
# gradients); the classifier cut into chunks, with the dlogits kept whole
# and per chunk, gives the losses of the unchunked run; the kernel-class
# profile (SPOTRAIN_CUDA_PROFILE=2) names every class and its shares add up.
# Option strings like $S are word-split on purpose.
# shellcheck disable=SC2086
# module: cuda
. tests/cli/lib.sh
B=$SPOTRAIN
cd "$T_TMP" || exit 1
S="--set model.dim=32 --set model.n_layers=2 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.ffn_dim=64 \
--set model.vocab_size=256 --set model.seq_len=16 --set train.global_batch=4 --set train.micro_batch=2 \
--set checkpoint.interval_steps=3 --set spot.provider=none --set train.log_every=1 --set data.synthetic_samples=200 \
--set train.threads=1 --set train.max_steps=3 --set train.val_every=0 --set train.backend=cuda --quiet"
digest() { t_digest "$1" 2>/dev/null; }
losses() {
    /usr/bin/python3 -c 'import json,sys; print(" ".join(repr(o["loss"]) for o in map(json.loads, open(sys.argv[1])) if o["event"] == "step"))' "$1" 2>/dev/null
}

for p in bf16 fp32; do
    "$B" train /dev/null $S --set train.precision=$p --set train.run_dir=z-$p 2>z-$p.err
    r1=$?
    SPOTRAIN_CUDA_ZERO_ALL=1 "$B" train /dev/null $S --set train.precision=$p --set train.run_dir=za-$p 2>za-$p.err
    r2=$?
    d1=$(digest z-$p/ckpt/step-00000003) d2=$(digest za-$p/ckpt/step-00000003)
    if [ $r1 -eq 0 ] && [ $r2 -eq 0 ] && [ -n "$d1" ] && [ "$d1" = "$d2" ]; then
        t_ok "$p: gradients zeroed only where not overwritten = whole vector zeroed, bitwise ($d1)"
    else
        t_bad "$p: gradients zeroed only where not overwritten = whole vector zeroed, bitwise" \
            "exits $r1 $r2, digests '$d1' vs '$d2': $(tail -n 2 z-$p.err za-$p.err)"
    fi
done

l0=$(losses z-fp32/events.jsonl)
for whole in 1 0; do
    SPOTRAIN_CUDA_CHUNK_ROWS=8 SPOTRAIN_CUDA_DLOGITS_WHOLE=$whole "$B" train /dev/null $S --set train.precision=fp32 \
        --set train.run_dir=ch$whole 2>ch$whole.err
    r=$?
    l=$(losses ch$whole/events.jsonl)
    ok=$(/usr/bin/python3 -c 'import sys; a=sys.argv[1].split(); b=sys.argv[2].split(); print(int(len(a)==3 and len(a)==len(b) and all(abs(float(x)-float(y))<=1e-6*abs(float(y)) for x,y in zip(a,b))))' "$l" "$l0" 2>/dev/null)
    if [ $r -eq 0 ] && [ "$ok" = 1 ]; then
        t_ok "classifier in 8-row chunks (dlogits whole: $whole): the unchunked losses ($l)"
    else
        t_bad "classifier in 8-row chunks (dlogits whole: $whole): the unchunked losses" \
            "exit $r, losses '$l' vs '$l0': $(tail -n 2 ch$whole.err)"
    fi
done
# Not --quiet: the profile is a log line at exit.
LOUD=$(echo "$S" | sed 's/--quiet//')
SPOTRAIN_CUDA_PROFILE=2 "$B" train /dev/null $LOUD --set train.precision=bf16 \
    --set train.run_dir=prof 2>prof.err
r=$?
chk=$(grep -o "kernel classes per step.*" prof.err | /usr/bin/python3 -c '
import re, sys
line = sys.stdin.read()
want = ["GEMM", "attention", "softmax", "norms/elementwise", "classifier", "optimizer", "communication", "other"]
got = dict((k, float(p)) for k, p in re.findall(r"([a-zA-Z/]+) [0-9.]+ ms \(([0-9.]+)%\)", line))
bad = [k for k in want if k not in got]
total = sum(got.values())
busy = [k for k in ("GEMM", "attention", "norms/elementwise", "classifier", "optimizer") if got.get(k, 0) <= 0]
print("OK" if not bad and abs(total - 100) < 0.5 and not busy else "bad: missing %s, total %.1f, idle %s" % (bad, total, busy))
' 2>&1)
if [ $r -eq 0 ] && [ "$chk" = OK ]; then
    t_ok "SPOTRAIN_CUDA_PROFILE=2: every kernel class with its share, 100% in all"
else
    t_bad "SPOTRAIN_CUDA_PROFILE=2: every kernel class with its share" "exit $r: $chk; $(grep -o 'kernel classes.*' prof.err)"
fi
t_end
