#!/bin/sh
# Loss scaling, the precisions the CPU backend accepts, what the manifest
# records about the backend, and the continuity warning on resume. The CPU
# computes in fp32, where a power-of-two scale divides out exactly, so a
# scaled run must equal an unscaled one bit for bit; an overflow is forced
# honestly with a huge first scale on weights large enough (init_std = 1)
# that the scaled gradients pass fp32's range.
# Option strings like $FAST are word-split on purpose.
# shellcheck disable=SC2086
# module: train backend ckpt
. tests/cli/lib.sh
S=$SPOTRAIN
cd "$T_TMP" || exit 1
FAST="--set model.dim=32 --set model.n_layers=1 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.ffn_dim=64 --set model.seq_len=16 --set train.global_batch=4 --set train.micro_batch=4 --set train.val_every=0 --set checkpoint.interval_steps=0 --set train.threads=1 --set train.log_every=1 --set spot.provider=none"
OVER="--set model.init_std=1 --set train.loss_scale_init=0x1p127 --set train.loss_scale_window=3"
ins() { "$S" ckpt inspect "$1" --json; }
field() { /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); d=d[0] if isinstance(d,list) else d; print(d[sys.argv[1]])' "$1"; }
digest() { ins "$1" | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); d=d[0] if isinstance(d,list) else d; print(d["digest"]["params"], d["digest"]["adam_m"], d["digest"]["adam_v"])'; }

# --- precision on the CPU: fp32 only, said in one line ------------------------
for p in bf16 fp16 tf32; do
    t_exit "cpu refuses precision $p, exit 78" 78 "train.precision = $p: the cpu backend computes in fp32 only" \
        "$S" train /dev/null $FAST --set train.backend=cpu --set train.precision=$p --set train.run_dir=p-$p
    n=$(ls p-$p/ckpt 2>/dev/null | wc -l)
    [ "$n" -eq 0 ] && t_ok "refused $p left no checkpoint" || t_bad "refused $p left no checkpoint" "$n entries"
done
t_exit "cpu takes precision fp32" 0 "" "$S" train /dev/null $FAST --set train.backend=cpu --set train.precision=fp32 \
    --set train.max_steps=2 --set train.run_dir=p-fp32
t_exit "train.loss_scale on fp32 is said to be unused" 0 "train.loss_scale = 128 applies to fp16 only" \
    "$S" train /dev/null $FAST --set train.loss_scale=128 --set train.max_steps=1 --set train.run_dir=unused
t_exit "loss_scale_init must be a power of two, exit 78" 78 "train.loss_scale_init = 1000 must be 0 or a power of two" \
    "$S" train /dev/null $FAST --set train.loss_scale_init=1000 --set train.run_dir=bad1
t_exit "loss_scale with loss_scale_init, exit 78" 78 "set one of them" \
    "$S" train /dev/null $FAST --set train.loss_scale=128 --set train.loss_scale_init=1024 --set train.run_dir=bad2

# --- the manifest records backend, precision, device, libraries ----------------
"$S" train /dev/null $FAST --set train.max_steps=4 --set train.run_dir=plain --quiet
c=plain/ckpt/step-00000004
[ "$(ins $c | field backend)" = cpu ] && [ "$(ins $c | field precision)" = fp32 ] \
    && t_ok "manifest: backend cpu, precision fp32" || t_bad "manifest: backend cpu, precision fp32" "$(ins $c)"
want=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
[ -n "$want" ] || want=cpu
[ "$(ins $c | field device)" = "$want" ] && t_ok "manifest: device is the CPU model ($want)" \
    || t_bad "manifest: device is the CPU model" "got '$(ins $c | field device)', wanted '$want'"
ins $c | field libraries | grep -q '^OpenBLAS [0-9]' && t_ok "manifest: OpenBLAS version" \
    || t_bad "manifest: OpenBLAS version" "$(ins $c | field libraries)"
[ "$(ins $c | field loss_scaling)" = off ] && t_ok "fp32 without loss_scale_init: no loss scaling" \
    || t_bad "fp32 without loss_scale_init: no loss scaling"
"$S" ckpt inspect $c | grep -qF "computed by cpu fp32 on $want; OpenBLAS" && t_ok "inspect prints backend, precision, device" \
    || t_bad "inspect prints backend, precision, device" "$("$S" ckpt inspect $c)"

# --- a scale that never overflows changes no bit --------------------------------
"$S" train /dev/null $FAST --set train.max_steps=4 --set train.run_dir=scaled --set train.loss_scale_init=65536 --quiet
s=scaled/ckpt/step-00000004
[ "$(digest $s)" = "$(digest $c)" ] && t_ok "dynamic scale 65536 in fp32: digests equal the unscaled run" \
    || t_bad "dynamic scale 65536 in fp32: digests equal the unscaled run" "$(digest $s) vs $(digest $c)"
[ "$(ins $s | field loss_scaling)" = dynamic ] && [ "$(ins $s | field loss_scale)" = 65536.0 ] \
    && [ "$(ins $s | field loss_scale_clean)" = 4 ] && t_ok "manifest: dynamic, scale 65536, 4 clean steps" \
    || t_bad "manifest: dynamic, scale 65536, 4 clean steps" "$(ins $s)"
[ "$(t_events scaled/events.jsonl step loss_scale | sort -u)" = 65536 ] && t_ok "step records carry loss_scale" \
    || t_bad "step records carry loss_scale" "$(t_events scaled/events.jsonl step loss_scale)"

# --- overflow: skip, halve, double after the window ----------------------------
"$S" train /dev/null $FAST $OVER --set train.max_steps=20 --set checkpoint.interval_steps=8 \
    --set checkpoint.keep_last=10 --set train.run_dir=over > over.log 2>&1
rc=$?
[ $rc -eq 0 ] && t_ok "overflowing run finishes" || t_bad "overflowing run finishes" "exit $rc: $(tail -n 3 over.log)"
/usr/bin/python3 - over/events.jsonl > over.check <<'PY'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
over = [e for e in ev if e["event"] == "overflow"]
steps = [e for e in ev if e["event"] == "step"]
out = []
out.append("overflow records: %d" % len(over))
ok_halve = bool(over) and all(e["next_loss_scale"] == e["loss_scale"] / 2 and e["skipped"] for e in over)
out.append("halved: %s" % ok_halve)
first = over[0] if over else None
out.append("first at the initial scale: %s" % (first is not None and first["loss_scale"] == 2.0 ** 127))
skipped = {e["step"] for e in over}
out.append("skipped steps have no norm: %s" % all((s["grad_norm"] is None) == (s["step"] in skipped) for s in steps))
scales = [s["loss_scale"] for s in steps]
out.append("grew: %s" % any(b == 2 * a for a, b in zip(scales, scales[1:])))
out.append("applied steps: %d" % (len(steps) - len(over)))
print("\n".join(out))
PY
grep -q "overflow records: 0" over.check && t_bad "overflow observed" "$(cat over.check)" || t_ok "overflow observed ($(head -n 1 over.check))"
grep -q "halved: True" over.check && t_ok "each overflow skips the step and halves the scale" \
    || t_bad "each overflow skips the step and halves the scale" "$(cat over.check)"
grep -q "first at the initial scale: True" over.check && t_ok "the first overflow is at loss_scale_init" \
    || t_bad "the first overflow is at loss_scale_init" "$(cat over.check)"
grep -q "skipped steps have no norm: True" over.check && t_ok "step records: grad_norm null exactly on skipped steps" \
    || t_bad "step records: grad_norm null exactly on skipped steps" "$(cat over.check)"
grep -q "grew: True" over.check && t_ok "the scale doubles after loss_scale_window clean steps" \
    || t_bad "the scale doubles after loss_scale_window clean steps" "$(cat over.check)"
grep -q "applied steps: 0" over.check && t_bad "some steps were applied" "$(cat over.check)" || t_ok "some steps were applied"
grep -q "gradients overflowed at loss scale 1.70141e+38; step skipped" over.log && t_ok "overflow logged in one line" \
    || t_bad "overflow logged in one line" "$(head -n 3 over.log)"

# --- resume continues the scaler bit for bit ------------------------------------
mkdir -p aside && mv over/ckpt/step-00000016 over/ckpt/step-00000020 aside/
"$S" resume /dev/null $FAST $OVER --set train.max_steps=20 --set checkpoint.interval_steps=8 \
    --set checkpoint.keep_last=10 --set train.run_dir=over > resume.log 2>&1
grep -q "resuming from .*step-00000008 (step 8" resume.log && t_ok "resumed from step 8" \
    || t_bad "resumed from step 8" "$(head -n 3 resume.log)"
[ "$(digest over/ckpt/step-00000020)" = "$(digest aside/step-00000020)" ] \
    && t_ok "overflowing run resumed at step 8 == uninterrupted (digests)" \
    || t_bad "overflowing run resumed at step 8 == uninterrupted (digests)" "$(tail -n 3 resume.log)"
[ "$(ins over/ckpt/step-00000020 | field loss_scale)" = "$(ins aside/step-00000020 | field loss_scale)" ] \
    && [ "$(ins over/ckpt/step-00000020 | field loss_scale_clean)" = "$(ins aside/step-00000020 | field loss_scale_clean)" ] \
    && t_ok "resumed scaler state == uninterrupted" || t_bad "resumed scaler state == uninterrupted"
grep -q "not bitwise continuous" resume.log && t_bad "same machine: no continuity warning" "$(cat resume.log)" \
    || t_ok "same machine: no continuity warning"

# --- continuity: a checkpoint from another device model -------------------------
SPOTRAIN_DEVICE_NAME="Frobnicator 9000" "$S" train /dev/null $FAST --set train.max_steps=3 --set train.run_dir=moved --quiet
[ "$(ins moved/ckpt/step-00000003 | field device)" = "Frobnicator 9000" ] && t_ok "SPOTRAIN_DEVICE_NAME is recorded" \
    || t_bad "SPOTRAIN_DEVICE_NAME is recorded"
"$S" resume /dev/null $FAST --set train.max_steps=5 --set train.run_dir=moved > moved.log 2>&1
n=$(grep -c "warning: resume is not bitwise continuous: device Frobnicator 9000 -> " moved.log)
[ "$n" = 1 ] && t_ok "resume on another device model: one warning line" \
    || t_bad "resume on another device model: one warning line" "$n lines: $(cat moved.log)"
[ "$(t_events moved/events.jsonl continuity changed)" = "device Frobnicator 9000 -> $want" ] \
    && t_ok "continuity ledger record says what changed" \
    || t_bad "continuity ledger record says what changed" "$(grep continuity moved/events.jsonl)"
SPOTRAIN_DEVICE_NAME="$want" "$S" resume /dev/null $FAST --set train.max_steps=7 --set train.run_dir=moved > same.log 2>&1
grep -q "not bitwise continuous" same.log && t_bad "same device again: no warning" "$(cat same.log)" \
    || t_ok "same device again: no warning"
[ "$(grep -c '"event":"continuity"' moved/events.jsonl)" = 1 ] && t_ok "no second continuity record" \
    || t_bad "no second continuity record"
t_end
