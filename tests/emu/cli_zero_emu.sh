#!/bin/sh
# ZeRO stages 1-3 on the CUDA backend (emulated, make test-emu) over 2
# ranks under mpirun: with no gradient accumulation every stage ends on the
# same bits (fp32 and bf16, also in 256-float message rounds); fp32 losses
# match the CPU backend's 2-rank run within 1e-5 (today's tolerance); a
# checkpoint written under one stage resumes under another on the same
# bits, and on 1 rank under stage 3 (with accumulation) it learns like the
# 2-rank run; each rank's peak of tracked device allocations is within 5%
# of the plan's per-GPU total less the context estimate (and of the part
# of it besides the fixed cuBLASLt workspace), and within 1% of that part
# (the plan counts each bucket buffer: one 8 Ki-float bucket is ~4% here).
# Stages 2-3 reduce every bucket on the backend's comm stream while the
# backward goes on (SPOTRAIN_CUDA_OVERLAP counts them: L + 2 per backward);
# with [comm] overlap = false each exchange is waited for before the next
# bucket opens: the same bits, none overlapped, one gradient bucket less
# in the plan and the peak; the second gradient bucket holds a layer, the
# embedding and lm_head buckets take the first (vocab 512 makes them the
# larger: the same bits, the plan and peak a layer over overlap = false);
# the emulator runs each stream's work only when something waits for it and
# checks every cross-stream access is ordered by an event or a host wait,
# so dropping the wait for a free gradient bucket must fail (the test hook
# SPOTRAIN_TEST_CUDA_UNORDERED=1; SPOTRAIN_CUDA_OVERLAP drops nothing).
# Option strings like $S are word-split on purpose.
# shellcheck disable=SC2086
# module: cuda comm
. tests/cli/lib.sh
B=$SPOTRAIN
cd "$T_TMP" || exit 1
t_need_mpi "zero emulation tests"
M="mpirun -np 2 --oversubscribe"
S="--set model.dim=32 --set model.n_layers=2 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.ffn_dim=64 \
--set model.vocab_size=256 --set model.seq_len=32 --set train.global_batch=4 --set train.micro_batch=2 \
--set checkpoint.interval_steps=3 --set spot.provider=none --set train.log_every=1 --set data.synthetic_samples=500 \
--set train.threads=1 --set train.val_every=3 --quiet"
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
print("OK %d losses" % len(g) if len(g) == len(c) and len(g) >= 6 and not bad else "differ: %s" % (bad or (len(g), len(c))))
PY
}
# peakcheck PEAKFILE PLANBYTES: every rank's peak within 5% of the plan less
# the context (1 GiB), and within 1% of that less its fixed parts (the 32
# MiB cuBLASLt workspace, the chain's two 4 Mi-float chunks): the part the
# stage and the shape size.
peakcheck() {
    /usr/bin/python3 - "$1" "$2" <<'PY' 2>&1
import sys
peaks = [int(l.split()[1]) for l in open(sys.argv[1]) if l.startswith("peak ")]
plan = int(sys.argv[2]) - (1 << 30)
ws = (32 << 20) + 2 * 4 * (4 << 20)
bad = [p for p in peaks if abs(p - plan) > 0.05 * plan or abs(p - plan) > 0.01 * (plan - ws)]
print(("OK" if len(peaks) == 2 and not bad else "BAD") + " peaks %s vs plan %d (%.3f%% of the %d bytes besides the "
      "fixed buffers)" % (peaks, plan, 100.0 * max(abs(p - plan) for p in peaks) / (plan - ws) if peaks else 0, plan - ws))
PY
}
plan() {
    "$B" train /dev/null $S --set train.backend=cuda "$@" --dry-run --world 2 2>/dev/null |
        sed -n 's/.*per-GPU total: \([0-9]*\) bytes.*/\1/p'
}

# --- every stage, fp32 and bf16: the same bits; the plan's peak -------------
for p in fp32 bf16; do
    for z in 1 2 3; do
        SPOTRAIN_EMU_PEAK="$PWD/peak-$p-$z" SPOTRAIN_CUDA_OVERLAP=1 $M -x SPOTRAIN_EMU_PEAK -x SPOTRAIN_CUDA_OVERLAP \
            "$B" train /dev/null $S --set train.backend=cuda --set train.precision=$p --set train.zero=$z \
            --set train.max_steps=6 --set train.run_dir=$p-$z 2>$p-$z.err
        r=$?
        # 6 steps of one micro-batch per rank, 2 layers: 6 x 4 buckets each
        nb=$([ $z -ge 2 ] && echo 24 || echo 0)
        n=$(grep -c "rank [01]: $nb gradient buckets reduced ($nb overlapping the backward)" $p-$z.err)
        if [ $r -eq 0 ] && [ "$n" = 2 ]; then
            t_ok "$p zero $z: each rank reduced $([ $z -ge 2 ] && echo 24 || echo no) buckets on the comm stream"
        else
            t_bad "$p zero $z: buckets reduced on the comm stream" "$(grep "comm stream" $p-$z.err)"
        fi
        d=$(digest $p-$z/ckpt/step-00000006)
        [ $z -eq 1 ] && d1=$d
        if [ $r -eq 0 ] && [ -n "$d" ] && [ "$d" = "$d1" ]; then
            t_ok "$p 2 ranks, zero $z: the bits of zero 1 ($d)"
        else
            t_bad "$p 2 ranks, zero $z: the bits of zero 1" "exit $r, '$d' vs '$d1' $(tail -n 2 $p-$z.err)"
        fi
        pc=$(peakcheck peak-$p-$z "$(plan --set train.precision=$p --set train.zero=$z)")
        if echo "$pc" | grep -q "^OK"; then
            t_ok "$p zero $z: device peak = plan: $pc"
        else
            t_bad "$p zero $z: device peak = plan" "$pc"
        fi
    done
done
echo "peaks (bytes, plan less the context): fp32 $(cat peak-fp32-1 peak-fp32-2 peak-fp32-3 | tr '\n' ' ')"
echo "peaks (bytes, plan less the context): bf16 $(cat peak-bf16-1 peak-bf16-2 peak-bf16-3 | tr '\n' ' ')"

# --- [comm] overlap = false: blocking exchanges, one gradient bucket -------
for p in fp32 bf16; do
    for z in 2 3; do
        SPOTRAIN_EMU_PEAK="$PWD/peak-off-$p-$z" SPOTRAIN_CUDA_OVERLAP=1 $M -x SPOTRAIN_EMU_PEAK -x SPOTRAIN_CUDA_OVERLAP \
            "$B" train /dev/null $S --set train.backend=cuda --set train.precision=$p --set train.zero=$z \
            --set comm.overlap=false --set train.max_steps=6 --set train.run_dir=off-$p-$z 2>off-$p-$z.err
        r=$?
        n=$(grep -c "rank [01]: 24 gradient buckets reduced (0 overlapping the backward)" off-$p-$z.err)
        d=$(digest off-$p-$z/ckpt/step-00000006)
        d1=$(digest $p-1/ckpt/step-00000006)
        if [ $r -eq 0 ] && [ "$n" = 2 ] && [ -n "$d" ] && [ "$d" = "$d1" ]; then
            t_ok "$p zero $z, overlap = false: 24 buckets each, none overlapped, the bits of zero 1"
        else
            t_bad "$p zero $z, overlap = false: blocking, the bits of zero 1" \
                "exit $r, '$d' vs '$d1' $(grep "comm stream" off-$p-$z.err) $(tail -n 2 off-$p-$z.err)"
        fi
        on=$(plan --set train.precision=$p --set train.zero=$z)
        off=$(plan --set train.precision=$p --set train.zero=$z --set comm.overlap=false)
        pc=$(peakcheck peak-off-$p-$z "$off")
        # and off the two-bucket plan by a bucket (~4% here, past the 1%)
        if echo "$pc" | grep -q "^OK" && [ -n "$on" ] && [ "$off" -lt "$on" ] &&
            [ "$(peakcheck peak-off-$p-$z "$on" | cut -c1-2)" = BA ]; then
            t_ok "$p zero $z, overlap = false: plan $off < $on bytes, device peak = plan: $pc"
        else
            t_bad "$p zero $z, overlap = false: one gradient bucket in plan and peak" "plan $off vs $on: $pc"
        fi
    done
done

# --- the second gradient bucket holds a layer -------------------------------
# vocab 512: the embedding and lm_head buckets (16 Ki floats and more)
# outweigh a layer (9280 floats), so gbuf[1] is a layer's and those two take
# gbuf[0] (the embedding right after layer 0's bucket there: its exchange
# waited for): the bits of zero 1, the plan a layer over overlap = false's,
# the device peak the plan's.
V="--set model.vocab_size=512"
for z in 1 2 3; do
    SPOTRAIN_EMU_PEAK="$PWD/peak-v-$z" $M -x SPOTRAIN_EMU_PEAK "$B" train /dev/null $S $V --set train.backend=cuda \
        --set train.zero=$z --set train.max_steps=6 --set train.run_dir=v-$z 2>v-$z.err
    r=$?
    d=$(digest v-$z/ckpt/step-00000006)
    [ $z -eq 1 ] && dv=$d
    on=$(plan $V --set train.zero=$z)
    off=$(plan $V --set train.zero=$z --set comm.overlap=false)
    pc=$(peakcheck peak-v-$z "$on")
    want=$([ $z -ge 2 ] && echo $((4 * 9280)) || echo 0)
    if [ $r -eq 0 ] && [ -n "$d" ] && [ "$d" = "$dv" ] && echo "$pc" | grep -q "^OK" && [ -n "$on" ] &&
        [ $((on - off)) = "$want" ]; then
        t_ok "vocab 512, zero $z: the bits of zero 1, plan - overlap off = $want bytes, device peak = plan: $pc"
    else
        t_bad "vocab 512, zero $z: a layer's second gradient bucket" \
            "exit $r, '$d' vs '$dv', plan $on - $off vs $want: $pc $(tail -n 2 v-$z.err)"
    fi
done

# --- the overlap's cross-stream order is checked ----------------------------
# Without the compute stream's wait for the comm stream to free a gradient
# bucket the emulator reports the hazard and the run fails: the order the
# overlap needs is exercised, not hidden by streams that run in lockstep.
for z in 2 3; do
    SPOTRAIN_TEST_CUDA_UNORDERED=1 $M -x SPOTRAIN_TEST_CUDA_UNORDERED "$B" train /dev/null $S --set train.backend=cuda \
        --set train.zero=$z --set train.max_steps=2 --set train.run_dir=un-$z >/dev/null 2>un-$z.err
    r=$?
    if [ $r -ne 0 ] && grep -q "stream hazard: cudaMemsetAsync on stream .* writes .* on stream" un-$z.err; then
        t_ok "zero $z, the bucket wait dropped: the emulator's hazard check fails it (exit $r)"
    else
        t_bad "zero $z, the bucket wait dropped: the emulator's hazard check fails it" "exit $r $(tail -n 3 un-$z.err)"
    fi
done
# The hook's old spelling under the diagnostic's name drops nothing now.
SPOTRAIN_CUDA_OVERLAP=unordered $M -x SPOTRAIN_CUDA_OVERLAP "$B" train /dev/null $S --set train.backend=cuda \
    --set train.zero=2 --set train.max_steps=2 --set train.run_dir=un-old >/dev/null 2>un-old.err
r=$?
if [ $r -eq 0 ] && ! grep -q "stream hazard" un-old.err; then
    t_ok "SPOTRAIN_CUDA_OVERLAP=unordered drops no wait (exit 0, no hazard)"
else
    t_bad "SPOTRAIN_CUDA_OVERLAP=unordered drops no wait" "exit $r $(tail -n 3 un-old.err)"
fi

# --- the gathers and reductions in 256-float rounds: the same bits ---------
SPOTRAIN_COMM_CHUNK=256 $M -x SPOTRAIN_COMM_CHUNK "$B" train /dev/null $S --set train.backend=cuda \
    --set train.precision=bf16 --set train.zero=3 --set train.max_steps=6 --set train.run_dir=bc 2>bc.err
r=$?
d=$(digest bc/ckpt/step-00000006)
d1=$(digest bf16-1/ckpt/step-00000006)
if [ $r -eq 0 ] && [ -n "$d" ] && [ "$d" = "$d1" ]; then
    t_ok "bf16 zero 3 in 256-float rounds: the bits of zero 1"
else
    t_bad "bf16 zero 3 in 256-float rounds: the bits of zero 1" "exit $r, '$d' vs '$d1' $(tail -n 2 bc.err)"
fi

# --- fp32 against the CPU backend (stage 3 on both) -------------------------
$M "$B" train /dev/null $S --set train.backend=cpu --set train.zero=3 --set train.max_steps=6 \
    --set train.run_dir=cpu 2>cpu.err
r=$?
for z in 1 2 3; do
    cmp=$(losses fp32-$z/events.jsonl cpu/events.jsonl 1e-5)
    if [ $r -eq 0 ] && echo "$cmp" | grep -q "^OK"; then
        t_ok "fp32 zero $z: cuda = cpu within 1e-5: $cmp"
    else
        t_bad "fp32 zero $z: cuda = cpu within 1e-5" "exit $r: $cmp $(tail -n 2 cpu.err)"
    fi
done

# --- a checkpoint of one stage resumed under another -------------------------
for p in fp32 bf16; do
    mkdir r-$p && cp -r $p-1/config.ini $p-1/ckpt r-$p/ 2>/dev/null && rm -rf r-$p/ckpt/step-00000006
    $M "$B" resume /dev/null $S --set train.backend=cuda --set train.precision=$p --set train.zero=3 \
        --set train.max_steps=6 --set train.run_dir=r-$p 2>r-$p.err
    r=$?
    d=$(digest r-$p/ckpt/step-00000006)
    d1=$(digest $p-1/ckpt/step-00000006)
    if [ $r -eq 0 ] && [ -n "$d" ] && [ "$d" = "$d1" ]; then
        t_ok "$p: zero 1's step-3 checkpoint resumed under zero 3 = uninterrupted"
    else
        t_bad "$p: zero 1's step-3 checkpoint resumed under zero 3 = uninterrupted" \
            "exit $r, '$d' vs '$d1' $(tail -n 2 r-$p.err)"
    fi
done

# --- and at another world size: 1 rank, zero 2 (2 micro-batches added) ------
mkdir one && cp -r fp32-3/config.ini fp32-3/ckpt one/ 2>/dev/null && rm -rf one/ckpt/step-00000006
"$B" resume /dev/null $S --set train.backend=cuda --set train.precision=fp32 --set train.zero=2 \
    --set train.val_every=0 --set train.max_steps=6 --set train.run_dir=one 2>one.err
ro=$?
l2=$(t_events fp32-3/events.jsonl step loss | tail -n 3 | tr '\n' ' ')
l1=$(t_events one/events.jsonl step loss | tail -n 3 | tr '\n' ' ')
if [ $ro -eq 0 ] && [ -n "$l1" ] && /usr/bin/python3 -c '
import sys
a, b = [list(map(float, s.split())) for s in sys.argv[1:3]]
sys.exit(not (len(a) == len(b) == 3 and all(abs(x - y) <= 1e-5 * abs(y) for x, y in zip(a, b))))' "$l2" "$l1"; then
    t_ok "fp32 2-rank zero 3 checkpoint on 1 rank, zero 2: losses $l1"
else
    t_bad "fp32 2-rank zero 3 checkpoint on 1 rank, zero 2" "exit $ro, losses '$l1' vs 2 ranks '$l2' $(tail -n 2 one.err)"
fi

# --- zero = auto on a GPU: planned against the device's memory --------------
# shellcheck disable=SC2046
t_exit "zero = auto, backend cuda: the lowest stage that fits the GPU (the emulated 80 GiB)" 0 \
    "zero auto: 1; plan .* GiB per GPU against the GPU's 80.000 GiB: .* GiB headroom" \
    "$B" train /dev/null $(echo "$S" | sed 's/--quiet//') --set train.backend=cuda --set train.zero=auto \
    --set train.max_steps=1 --set train.run_dir=auto
t_end
