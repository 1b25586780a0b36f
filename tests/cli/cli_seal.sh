#!/bin/sh
# CLI tests of the sealed manifest: hand edits of step, tokens, lr or the
# embedded config fail `ckpt verify` with 65 naming the checksum; resume
# skips an edited newest checkpoint and says why; a checkpoint renamed to
# another step is refused; a format 1 manifest still verifies and resumes,
# with a note that it is unprotected.
# shellcheck source=tests/cli/lib.sh
# module: ckpt
. tests/cli/lib.sh
S=$SPOTRAIN
cd "$T_TMP" || exit 1
cat > run.ini <<INI
[model]
dim = 32
n_layers = 1
n_heads = 2
n_kv_heads = 1
ffn_dim = 64
seq_len = 16
[train]
max_steps = 20
global_batch = 4
micro_batch = 4
val_every = 0
lr = 0.001
[checkpoint]
interval_steps = 10
keep_last = 5
INI
"$S" train run.ini --set train.run_dir=run --quiet >train.log 2>&1
rc=$?
s10=run/ckpt/step-00000010
s20=run/ckpt/step-00000020
if [ $rc -eq 0 ] && [ -f $s10/manifest.json ] && [ -f $s20/manifest.json ]; then t_ok "trained 20 steps, 2 checkpoints"
else t_bad "training" "exit $rc: $(tail -n 3 train.log)"; fi
t_exit "fresh checkpoint verifies" 0 "$s20: ok" "$S" ckpt verify $s20
cp $s20/manifest.json orig.json

# edit NAME SED-EXPRESSION: the edited manifest must change and fail verify.
edit() {
    sed "$2" orig.json > $s20/manifest.json
    if cmp -s orig.json $s20/manifest.json; then t_bad "edit $1" "the sed expression changed nothing"; return; fi
    t_exit "edited $1: verify exits 65 naming the checksum" 65 "step-00000020: manifest.json: checksum mismatch" \
        "$S" ckpt verify $s20
}
edit step 's/"step":20,/"step":21,/'
edit tokens 's/"tokens":\([0-9]*\)/"tokens":1\1/'
edit lr 's/"lr":\([0-9.e-]*\)/"lr":9\1/'
edit config 's/lr = 0.001/lr = 0.01/'
edit "one byte of a chunk hash" 's/\("chunks":\[\[0,0,[0-9]*,0,[0-9]*,[0-9],"\)./\1z/'

# resume after an edit: skips step 20 with the reason, resumes from 10, and
# recomputes the same step 20.
sed 's/"step":20,/"step":21,/' orig.json > $s20/manifest.json
"$S" resume run.ini --set train.run_dir=run >resume.log 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "skipping step 20: .*checksum mismatch" resume.log && grep -q "resuming from .*step-00000010" resume.log
then t_ok "resume skips the edited step 20 with the reason and resumes from step 10"
else t_bad "resume over an edited manifest" "exit $rc: $(grep -E 'skipping|resuming' resume.log | head -n 3)"; fi
t_exit "step 20 rewritten by the resumed run verifies" 0 "$s20: ok" "$S" ckpt verify $s20

# A step directory renamed to another step.
cp -r $s20 run/ckpt/step-00000030
t_exit "checkpoint under another step's name: exit 65" 65 "disagrees with the directory name" \
    "$S" ckpt verify run/ckpt/step-00000030
rm -rf run/ckpt/step-00000030

# Format 1 (before the seal): strip the seal and say version 1.
cp $s20/manifest.json sealed.json
sed -e 's/,"manifest_xxh3":"[0-9a-f]*"}$/}/' -e 's/"format_version":2,/"format_version":1,/' sealed.json > $s20/manifest.json
t_exit "format 1 manifest verifies, with a note that it is unprotected" 0 "ok .*format 1 manifest without a checksum" \
    "$S" ckpt verify $s20
"$S" resume run.ini --set train.run_dir=run --set train.max_steps=30 >resume1.log 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "note: .*step-00000020 has a format 1 manifest" resume1.log && grep -q "resuming from .*step-00000020" resume1.log
then t_ok "resume from a format 1 checkpoint, with the note"
else t_bad "resume from format 1" "exit $rc: $(grep -E 'note|resuming|spotrain' resume1.log | head -n 3)"; fi
t_exit "the next save is format 2 again" 0 '"format_version": 2' "$S" ckpt inspect --json run/ckpt/step-00000030
t_end
