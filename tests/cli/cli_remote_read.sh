#!/bin/sh
# Reading checkpoints back from S3-compatible storage (moto_server from
# build/venv on 127.0.0.1): remote checkpoints are made by uploading local
# step directories with boto3 (an independent client, the agreed layout
# PREFIX/step-%08d/NAME, manifest last). Then: resume on "a new machine"
# (empty run_dir) continues bitwise like an uninterrupted run, also from 2
# ranks to 1 and 1 to 2; the newest of local and remote wins; damaged
# remote copies (flipped byte, truncated or missing object, no manifest)
# are skipped for the previous one; ckpt inspect|verify|export on s3://;
# faults from tests/cli/s3_fault_proxy.py are retried (slow answers and a
# credential expiring mid-download too); download MB/s recorded.
# Option strings like $F are word-split on purpose.
# shellcheck disable=SC2086
# shellcheck source=tests/cli/lib.sh
# module: ckpt s3
. tests/cli/lib.sh
S=$SPOTRAIN
t_s3_servers cli_remote_read
ROOT=$PWD
cd "$T_TMP" || exit 1
export AWS_SHARED_CREDENTIALS_FILE=$T_TMP/none
B=spotrain-read
ctl() { "$PY" -c "import urllib.request as u; u.urlopen('$PROXY/_control?$1').read()"; }
pstate() { "$PY" -c "import json,urllib.request as u; print(json.load(u.urlopen('$PROXY/_state'))['$1'])"; }
# b3 OP ARGS: boto3 against moto, independent of spotrain.
#   mb | up STEP_DIR PREFIX [skip NAME] | flip KEY OFFSET | trunc KEY BYTES | rm KEY | sum KEY
#   | keys PREFIX (one a line) | keep PREFIX FILE (delete what FILE does not list)
b3() {
    "$PY" - "$MOTO" "$B" "$@" <<'PY'
import boto3, hashlib, os, sys
url, bucket, op, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
if op == "mb":
    s3.create_bucket(Bucket=bucket)
elif op == "up":
    d, prefix = args[0].rstrip("/"), args[1]
    skip = args[3] if len(args) > 3 and args[2] == "skip" else None
    names = sorted(n for n in os.listdir(d) if n != "manifest.json") + ["manifest.json"]
    for n in names:   # the manifest last, as spotrain's uploader does
        if n != skip:
            s3.put_object(Bucket=bucket, Key="%s/%s/%s" % (prefix, os.path.basename(d), n),
                          Body=open(os.path.join(d, n), "rb").read())
elif op == "flip":
    b = bytearray(s3.get_object(Bucket=bucket, Key=args[0])["Body"].read())
    off = int(args[1]) % len(b)
    b[off] ^= 0x10
    s3.put_object(Bucket=bucket, Key=args[0], Body=bytes(b))
elif op == "trunc":
    b = s3.get_object(Bucket=bucket, Key=args[0])["Body"].read()
    s3.put_object(Bucket=bucket, Key=args[0], Body=b[:int(args[1])])
elif op == "rm":
    s3.delete_object(Bucket=bucket, Key=args[0])
elif op in ("keys", "keep"):
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=args[0] + "/"):
        found += [o["Key"] for o in page.get("Contents", [])]
    if op == "keys":
        print("\n".join(found))
    else:
        kept = set(open(args[1]).read().split())
        for k in found:
            if k not in kept:
                s3.delete_object(Bucket=bucket, Key=k)
elif op == "sum":
    print(hashlib.sha256(s3.get_object(Bucket=bucket, Key=args[0])["Body"].read()).hexdigest())
PY
}
digest() {
    p=$1
    shift
    "$S" ckpt inspect "$p" --json "$@" 2>/dev/null | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); d=d[0] if isinstance(d,list) else d; print(d["digest"]["params"], d["digest"]["adam_m"], d["digest"]["adam_v"])' 2>/dev/null
}
s4=step-00000004 s8=step-00000008 s12=step-00000012
F="--set model.dim=32 --set model.n_layers=2 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.ffn_dim=64 --set model.seq_len=16 --set train.global_batch=6 --set train.micro_batch=3 --set train.val_every=0 --set train.threads=1 --set train.log_every=1 --set checkpoint.interval_steps=4 --set checkpoint.keep_last=10 --set checkpoint.chunk_kib=16 --set checkpoint.busy=wait"
# A resume from s3://$B/PREFIX on a machine whose run_dir is DIR.
# The run uploads its own checkpoints there too (steps 8 to 12); they are
# deleted afterwards, so every resume from a prefix sees the same fixture.
R() {
    dir=$1 prefix=$2
    shift 2
    b3 keys "$prefix" >"$T_TMP/keys.$dir"
    "$S" resume /dev/null $F --set train.max_steps=12 --set train.run_dir="$dir" --set checkpoint.remote="s3://$B/$prefix" --set checkpoint.endpoint="${EP:-$MOTO}" "$@"
    _rc=$?
    b3 keep "$prefix" "$T_TMP/keys.$dir"
    return $_rc
}
M="mpirun -np 2 --oversubscribe"
have_mpi=0
if command -v mpirun >/dev/null 2>&1 && "$S" --version | grep -q "mpi: yes"; then have_mpi=1; fi

b3 mb
"$S" train /dev/null $F --set train.max_steps=12 --set train.run_dir=straight >straight.log 2>&1
ref=$(digest straight/ckpt/$s12)
ref8=$(digest straight/ckpt/$s8)
if [ -n "$ref" ] && [ -d straight/ckpt/$s8 ]; then t_ok "straight 1-rank run: 12 steps, digest $ref"; else t_bad "straight 1-rank run" "$(tail -n 3 straight.log)"; fi
# A dozen chunks per array at 16 KiB, so reads of a range are several GETs.
n_chunks=$("$S" ckpt verify straight/ckpt/$s8 | sed -n 's/.*shard, \([0-9]*\) chunks.*/\1/p')
if [ "${n_chunks:-0}" -ge 9 ]; then t_ok "checkpoint has $n_chunks chunks"; else t_bad "checkpoint has several chunks" "$n_chunks"; fi
b3 up straight/ckpt/$s4 r1
b3 up straight/ckpt/$s8 r1
if [ "$(b3 sum r1/$s8/shard-00000.bin)" = "$(sha256sum straight/ckpt/$s8/shard-00000.bin | cut -d' ' -f1)" ]; then t_ok "boto3 fixture: remote shard bytes equal the local file"; else t_bad "boto3 fixture bytes"; fi

# --- ckpt inspect|verify|export on s3:// ---
"$S" ckpt verify "s3://$B/r1" --endpoint "$MOTO" >v.log 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "^s3://$B/r1/$s4: ok" v.log && grep -q "^s3://$B/r1/$s8: ok" v.log; then t_ok "ckpt verify s3://prefix: every remote checkpoint ok"; else t_bad "ckpt verify s3://prefix" "exit $rc: $(head -n 3 v.log)"; fi
t_exit "ckpt verify s3://.../step: ok, with the download counted" 0 "downloaded [0-9]+ bytes" "$S" ckpt verify "s3://$B/r1/$s8" --endpoint "$MOTO"
if [ "$(digest "s3://$B/r1/$s8" --endpoint "$MOTO")" = "$ref8" ]; then t_ok "ckpt inspect --json s3://: same digests as the local copy"; else t_bad "ckpt inspect s3:// digests" "$(digest "s3://$B/r1/$s8" --endpoint "$MOTO") vs $ref8"; fi
t_exit "endpoint from AWS_ENDPOINT_URL" 0 "step 8" env AWS_ENDPOINT_URL="$MOTO" "$S" ckpt inspect "s3://$B/r1/$s8/"
t_exit "ckpt verify of an empty prefix: 66" 66 "no checkpoints under s3://$B/nothing" "$S" ckpt verify "s3://$B/nothing" --endpoint "$MOTO"
"$S" ckpt export straight/ckpt/$s8 -o exp_local >/dev/null 2>&1
t_exit "ckpt export s3://prefix: newest remote checkpoint" 0 "exported step 8" "$S" ckpt export "s3://$B/r1" --endpoint "$MOTO" -o exp_remote
if cmp -s exp_local/model.safetensors exp_remote/model.safetensors && cmp -s exp_local/config.json exp_remote/config.json; then t_ok "export from s3:// is byte-identical to the local export"; else t_bad "export from s3:// byte-identical"; fi

# --- resume on a new machine ---
R new1 r1 >new1.log 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "resuming from s3://$B/r1/$s8" new1.log && [ "$(digest new1/ckpt/$s12)" = "$ref" ]; then
    t_ok "empty run_dir resumes from the remote step 8, bitwise equal to the straight run"
else t_bad "new machine resume" "exit $rc, $(digest new1/ckpt/$s12) vs $ref: $(tail -n 3 new1.log)"; fi
n=$(t_events new1/events.jsonl download mb_s | wc -l)
tot=$(t_events new1/events.jsonl download from)
if [ "$n" -eq 2 ] && [ "$tot" = "s3://$B/r1/$s8" ] && grep -q "downloaded .* MB/s" new1.log; then
    t_ok "ledger: download record per rank and in total ($(t_events new1/events.jsonl download mb_s | tail -n 1) MB/s)"
else t_bad "ledger download records" "$n records, from '$tot'"; fi
bytes=$(t_events new1/events.jsonl download bytes | tail -n 1)
stored=$(t_events straight/events.jsonl checkpoint stored_bytes | sed -n 2p)
if [ "${bytes:-0}" -ge "${stored:-1}" ]; then t_ok "download bytes ($bytes) cover the checkpoint ($stored stored)"; else t_bad "download bytes" "$bytes vs $stored"; fi

# A fine-tune (model.init_from) resumed on a new machine that has neither
# the init_from directory nor RUN_DIR/config.ini: the shape comes from the
# remote checkpoint's saved config.
"$S" ckpt export straight/ckpt/$s4 -o hfsrc >/dev/null 2>&1
"$S" train /dev/null $F --set train.max_steps=12 --set train.run_dir=ift --set model.init_from=hfsrc >ift.log 2>&1
iref=$(digest ift/ckpt/$s12)
b3 up ift/ckpt/$s8 ift
R newift ift --set model.init_from="$T_TMP/nowhere" >newift.log 2>&1
rc=$?
if [ -n "$iref" ] && [ $rc -eq 0 ] && grep -q "resuming from s3://$B/ift/$s8" newift.log && [ "$(digest newift/ckpt/$s12)" = "$iref" ]; then
    t_ok "a fine-tune resumes from the remote alone, without its init_from directory, bitwise"
else t_bad "remote-only fine-tune resume" "exit $rc, $(digest newift/ckpt/$s12) vs $iref: $(tail -n 3 newift.log)"; fi

# Newest of local and remote: a local step 8 beats a remote step 4, and a
# remote step 8 beats a local step 4.
b3 up straight/ckpt/$s4 r4only
mkdir -p loc8/ckpt && cp -r straight/ckpt/$s8 loc8/ckpt/
R loc8 r4only >loc8.log 2>&1
if grep -q "resuming from loc8/ckpt/$s8" loc8.log && [ "$(digest loc8/ckpt/$s12)" = "$ref" ]; then t_ok "local step 8 is newer than remote step 4: local wins"; else t_bad "local newer wins" "$(grep resum loc8.log)"; fi
mkdir -p loc4/ckpt && cp -r straight/ckpt/$s4 loc4/ckpt/
R loc4 r1 >loc4.log 2>&1
if grep -q "resuming from s3://$B/r1/$s8" loc4.log && [ "$(digest loc4/ckpt/$s12)" = "$ref" ]; then t_ok "remote step 8 is newer than local step 4: remote wins"; else t_bad "remote newer wins" "$(grep resum loc4.log)"; fi

# --- damaged remote copies are skipped for the previous one ---
# A flipped byte inside a chunk: found as that chunk arrives.
b3 up straight/ckpt/$s4 flip && b3 up straight/ckpt/$s8 flip
b3 flip flip/$s8/shard-00000.bin 20000
t_exit "ckpt verify s3:// of a flipped byte: 65 naming the chunk" 65 "checkpoint s3://$B/flip/$s8: shard-00000.bin chunk [0-9]+ .*checksum mismatch" "$S" ckpt verify "s3://$B/flip/$s8" --endpoint "$MOTO"
R newf flip >newf.log 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "checksum mismatch" newf.log && grep -q "skipping s3://$B/flip/$s8" newf.log && grep -q "resuming from s3://$B/flip/$s4" newf.log && [ "$(digest newf/ckpt/$s12)" = "$ref" ]; then
    t_ok "flipped byte in a remote shard: step 8 skipped, step 4 used, bitwise result"
else t_bad "flipped byte skipped" "exit $rc: $(grep -E 'skipping|resuming|mismatch' newf.log | head -n 3)"; fi
# A truncated object: its size disagrees with the manifest.
b3 up straight/ckpt/$s4 trunc && b3 up straight/ckpt/$s8 trunc
b3 trunc trunc/$s8/shard-00000.bin 5000
t_exit "ckpt verify s3:// of a truncated object: 65" 65 "shard-00000.bin: 5000 bytes remotely, manifest says" "$S" ckpt verify "s3://$B/trunc/$s8" --endpoint "$MOTO"
R newt trunc >newt.log 2>&1
if grep -q "skipping step 8: .*5000 bytes remotely" newt.log && grep -q "resuming from s3://$B/trunc/$s4" newt.log && [ "$(digest newt/ckpt/$s12)" = "$ref" ]; then
    t_ok "truncated remote shard: step 8 skipped, step 4 used"
else t_bad "truncated skipped" "$(grep -E 'skipping|resuming' newt.log | head -n 3)"; fi
# A missing shard object.
b3 up straight/ckpt/$s4 miss && b3 up straight/ckpt/$s8 miss skip shard-00000.bin
t_exit "ckpt verify s3:// with a shard missing: 65" 65 "shard-00000.bin: no such object" "$S" ckpt verify "s3://$B/miss/$s8" --endpoint "$MOTO"
R newm miss >newm.log 2>&1
if grep -q "skipping step 8: .*no such object" newm.log && grep -q "resuming from s3://$B/miss/$s4" newm.log; then t_ok "missing remote shard: step 8 skipped"; else t_bad "missing shard skipped" "$(grep -E 'skipping|resuming' newm.log | head -n 3)"; fi
# No manifest: not a checkpoint at all (its upload never finished).
b3 up straight/ckpt/$s4 nomf && b3 up straight/ckpt/$s8 nomf skip manifest.json
t_exit "ckpt verify s3:// of a step without manifest: 66, not a checkpoint" 66 "no manifest.json object, so not a checkpoint" "$S" ckpt verify "s3://$B/nomf/$s8" --endpoint "$MOTO"
t_exit "ckpt verify s3://prefix lists only steps with a manifest" 0 "nomf/$s4: ok" "$S" ckpt verify "s3://$B/nomf" --endpoint "$MOTO"
R newn nomf >newn.log 2>&1
if grep -q "resuming from s3://$B/nomf/$s4" newn.log && ! grep -q "skipping step 8" newn.log; then t_ok "step without manifest is not a candidate: step 4 used"; else t_bad "no-manifest step ignored" "$(grep -E 'skipping|resuming' newn.log | head -n 3)"; fi
# Every remote copy damaged: no quiet start from step 0 (65 naming it), and
# --fresh-if-corrupt refuses too (64), as remote objects are never deleted.
b3 up straight/ckpt/$s8 alldmg && b3 flip alldmg/$s8/shard-00000.bin -100
R newd alldmg --set train.max_steps=4 >newd.log 2>&1
rc=$?
if [ $rc -eq 65 ] && grep -q "1 checkpoint under .* and s3://$B/alldmg and none verifies; .*Why each failed: step 8 on the remote (" newd.log &&
   [ ! -d newd/ckpt/$s4 ]; then
    t_ok "only a damaged remote copy: exit 65 naming it, nothing trained"
else t_bad "only a damaged remote copy: exit 65 naming it" "exit $rc: $(tail -n 2 newd.log)"; fi
R newd alldmg --set train.max_steps=4 --fresh-if-corrupt >newd2.log 2>&1
rc=$?
if [ $rc -eq 64 ] && grep -q "s3://$B/alldmg holds 1 checkpoint that does not verify.*another checkpoint.remote prefix" newd2.log; then
    t_ok "only a damaged remote copy, --fresh-if-corrupt: refused (64), remote objects never deleted"
else t_bad "only a damaged remote copy, --fresh-if-corrupt: refused (64)" "exit $rc: $(tail -n 2 newd2.log)"; fi

# --- faults on the way (tests/cli/s3_fault_proxy.py) ---
ctl "fail=3&status=503"
EP=$PROXY R newp1 r1 >newp1.log 2>&1
if [ $? -eq 0 ] && [ "$(digest newp1/ckpt/$s12)" = "$ref" ]; then t_ok "503 SlowDown during resume: retried, bitwise result"; else t_bad "503 during resume" "$(tail -n 2 newp1.log)"; fi
ctl "fail=2&status=500"
EP=$PROXY R newp2 r1 >newp2.log 2>&1
if [ $? -eq 0 ] && [ "$(digest newp2/ckpt/$s12)" = "$ref" ]; then t_ok "500 during resume: retried, bitwise result"; else t_bad "500 during resume" "$(tail -n 2 newp2.log)"; fi
ctl "cut=3"
EP=$PROXY R newp3 r1 >newp3.log 2>&1
if [ $? -eq 0 ] && [ "$(digest newp3/ckpt/$s12)" = "$ref" ]; then t_ok "connections dropped mid-download: retried, bitwise result"; else t_bad "cut mid-download" "$(tail -n 2 newp3.log)"; fi
state=$("$PY" -c "import urllib.request as u; print(u.urlopen('$PROXY/_state').read().decode())")
if echo "$state" | grep -q '"failed": 5' && echo "$state" | grep -q '"cut": 3'; then t_ok "the proxy did inject the faults ($state)"; else t_bad "faults injected" "$state"; fi
ctl "drop=2"
t_exit "ckpt verify s3:// through dropped connections: retried" 0 "\([1-9][0-9]* retried\)" "$S" ckpt verify "s3://$B/r1/$s8" --endpoint "$PROXY"
ctl "fail=100&status=500"
env AWS_MAX_ATTEMPTS=2 "$S" ckpt verify "s3://$B/r1/$s8" --endpoint "$PROXY" >give.log 2>&1
rc=$?
if [ $rc -eq 69 ] && [ "$(wc -l <give.log)" -eq 1 ] && grep -q "HTTP 500 .*after 2 attempts; retry later" give.log; then
    t_ok "ckpt verify s3:// gives up after AWS_MAX_ATTEMPTS: exit 69, one line"
else t_bad "ckpt verify gives up with one line" "exit $rc: $(cat give.log)"; fi
ctl "fail=0"
ctl "expired_token=OLD"
t_exit "resume with refused credentials stops (78) instead of starting fresh" 78 "ExpiredToken.*credentials" env AWS_SESSION_TOKEN=OLD "$S" resume /dev/null $F --set train.max_steps=12 --set train.run_dir=newc --set checkpoint.remote="s3://$B/r1" --set checkpoint.endpoint="$PROXY"
ctl "expired_token="
if [ ! -e newc/ckpt/$s4 ]; then t_ok "no training after the refused resume"; else t_bad "no training after the refused resume"; fi
# A remote that stays down through the client's retries is an outage, not
# a verdict on the checkpoints: no guessing, nothing trained, exit 75 so a
# restart tries again; spotrain-run gives up with 87 after --max-stalls
# such attempts, naming the cause.
DOWN="--set train.max_steps=12 --set checkpoint.remote=s3://$B/r1 --set checkpoint.endpoint=$PROXY --set checkpoint.remote_retries=1"
ctl "fail=100000&status=503"
"$S" resume /dev/null $F $DOWN --set train.run_dir=downrun >down.log 2>&1
rc=$?
if [ $rc -eq 75 ] && grep -q "looks unreachable.*exiting 75 so that a restart tries again" down.log && [ ! -e downrun/ckpt/$s4 ] &&
    grep '"event":"start"' downrun/events.jsonl | tail -n 1 | grep -q '"failed":true,"code":75,"reason":".*503.*looks unreachable' &&
    tail -n 1 downrun/events.jsonl | grep -q '"event":"exit".*"code":75'; then
    t_ok "resume with the remote down: exit 75, nothing trained, the ledger says why"
else t_bad "resume with the remote down" "exit $rc: $(tail -n 3 down.log) / $(tail -n 2 downrun/events.jsonl 2>&1)"; fi
t_exit "spotrain-run: a remote down at every restart gives up with 87 after --max-stalls, naming the cause" 87 \
    "2 attempts in a row could not start \\(the last: resume: .*503.*looks unreachable" \
    "$ROOT/spot/spotrain-run" --backoff 0 --max-stalls 2 --events "$T_TMP/downrun/events.jsonl" -- \
    "$S" resume /dev/null $F $DOWN --set train.run_dir=downrun
ctl "fail=0"
# The same outage in the middle of the download: the listing and the
# manifest answer, every GET of the shard fails.
ctl "match=GET+/$B/r1/$s8/shard-00000.bin&fail=100000&status=503"
"$S" resume /dev/null $F $DOWN --set train.run_dir=downdl >downdl.log 2>&1
rc=$?
ctl "match=&fail=0"
if [ $rc -eq 75 ] && grep -q "looks unreachable (the line above says why): nothing was trained" downdl.log &&
    [ ! -e downdl/ckpt/$s12 ] &&
    grep '"event":"start"' downdl/events.jsonl | tail -n 1 | grep -q '"code":75,"reason":"resume: a rank could not download s3://'; then
    t_ok "resume with the remote down mid-download: exit 75, nothing trained, the ledger says why"
else t_bad "resume with the remote down mid-download" "exit $rc: $(tail -n 3 downdl.log) / $(tail -n 2 downdl/events.jsonl 2>&1)"; fi
# The same outage at the newest remote candidate's check: the listing
# answers, its manifest never does. An outage, not a damaged checkpoint:
# the check does not skip it for an older one or start fresh.
ctl "match=GET+/$B/r1/$s8/manifest.json&fail=100000&status=503"
"$S" resume /dev/null $F $DOWN --set train.run_dir=downck >downck.log 2>&1
rc=$?
ctl "match=&fail=0"
if [ $rc -eq 75 ] && grep -q "looks unreachable: nothing was trained" downck.log && ! grep -q "skipping step" downck.log &&
    [ ! -e downck/ckpt/$s12 ] &&
    grep '"event":"start"' downck/events.jsonl | tail -n 1 | grep -q '"code":75,"reason":"resume: .*503.*looks unreachable'; then
    t_ok "resume with the remote down at a candidate's check: exit 75, no older candidate, nothing trained"
else t_bad "resume with the remote down at a candidate's check" "exit $rc: $(tail -n 3 downck.log) / $(tail -n 2 downck/events.jsonl 2>&1)"; fi

# Slow answers in the middle of the download. Every ranged GET of the shard
# answered 0.3 s late: the resume only takes longer. Then the first two
# answered 4 s late, past checkpoint.remote_stall_seconds = 1: each is
# abandoned and asked again (two GETs more than the download needs), and the
# resume is still bitwise.
SHARD_GET="GET+/$B/r1/$s8/shard-00000.bin"
ctl "match=$SHARD_GET&slow=0.3&slow_count=-1"
m0=$(pstate matched) w0=$(pstate slowed)
EP=$PROXY R news1 r1 >news1.log 2>&1
rc=$?
gets=$(($(pstate matched) - m0)) slowed=$(($(pstate slowed) - w0))
if [ $rc -eq 0 ] && [ "$gets" -ge 3 ] && [ "$slowed" = "$gets" ] && [ "$(digest news1/ckpt/$s12)" = "$ref" ]; then
    t_ok "slow answers to all $gets ranged GETs of the resume: bitwise result"
else t_bad "slow answers mid-download" "exit $rc, $gets GETs, $slowed slowed: $(tail -n 2 news1.log)"; fi
ctl "slow=4&slow_count=2"
m0=$(pstate matched) w0=$(pstate slowed)
EP=$PROXY R news2 r1 --set checkpoint.remote_stall_seconds=1 >news2.log 2>&1
rc=$?
gets2=$(($(pstate matched) - m0)) slowed=$(($(pstate slowed) - w0))
ctl "match=&slow=0&slow_count=-1"
if [ $rc -eq 0 ] && [ "$slowed" = 2 ] && [ "$gets2" = $((gets + 2)) ] && [ "$(digest news2/ckpt/$s12)" = "$ref" ]; then
    t_ok "two ranged GETs slower than remote_stall_seconds: abandoned, asked again ($gets2 GETs for $gets chunks' worth), bitwise result"
else t_bad "GETs past the stall timeout are retried" "exit $rc, $gets2 GETs (want $((gets + 2))), $slowed slowed: $(tail -n 2 news2.log)"; fi

# GETs that complete out of order: the answer to the shard's first chunk
# held back 1.5 s while the reader's window fetches the chunks after it
# (the proxy counts answers sent while the slow one waited: more than the
# 7 a batch of 8 would allow). The chunks are still handed on in order:
# the digests and the resume are bitwise.
off() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["shards"][0]["chunks"][int(sys.argv[2])][3])' straight/ckpt/$s8/manifest.json "$1"; }
FIRST="shard-00000.bin+bytes%3D0-"
ctl "slow_match=$FIRST&slow=1.5&slow_count=1"
o0=$(pstate overtook)
d=$(digest "s3://$B/r1/$s8" --endpoint "$PROXY")
over=$(($(pstate overtook) - o0))
if [ "$d" = "$ref8" ] && [ "$over" -ge 9 ]; then t_ok "chunks answered out of order ($over overtook the first): handed on in order, same digests"
else t_bad "out-of-order answers, in-order digests" "$over overtook; $d vs $ref8"; fi
ctl "slow_count=1"
o0=$(pstate overtook)
EP=$PROXY R newo r1 >newo.log 2>&1
rc=$?
over=$(($(pstate overtook) - o0))
if [ $rc -eq 0 ] && [ "$over" -ge 3 ] && [ "$(digest newo/ckpt/$s12)" = "$ref" ]; then t_ok "resume with chunks answered out of order ($over overtook): bitwise result"
else t_bad "resume with out-of-order answers" "exit $rc, $over overtook: $(tail -n 2 newo.log)"; fi
# A failure in the middle of the window: chunk 3 always 503 while chunk 0
# is still held back, so chunks behind the failure finish first. Verify
# exits 69 with the client's one line (the service, not the checkpoint, as
# before); a resume names the chunk and is an outage (75).
MID="shard-00000.bin+bytes%3D$(off 3)-"
ctl "match=$MID&fail=100000&status=503&slow_count=1"
env AWS_MAX_ATTEMPTS=2 "$S" ckpt verify "s3://$B/r1/$s8" --endpoint "$PROXY" >mid.log 2>&1
rc=$?
if [ $rc -eq 69 ] && [ "$(wc -l <mid.log)" -eq 1 ] && grep -q "GET s3://$B/r1/$s8/shard-00000.bin: HTTP 503 .*after 2 attempts" mid.log; then
    t_ok "a chunk failing mid-window while an earlier one is slow: verify says so in one line, exit 69"
else t_bad "failure mid-window: verify" "exit $rc: $(cat mid.log)"; fi
ctl "slow_count=1"
"$S" resume /dev/null $F $DOWN --set train.run_dir=downmid >downmid.log 2>&1
rc=$?
ctl "match=&fail=0&slow_match=&slow=0&slow_count=-1"
if [ $rc -eq 75 ] && grep -q "shard-00000.bin chunk 3 .*503" downmid.log && grep -q "looks unreachable" downmid.log &&
    [ ! -e downmid/ckpt/$s12 ]; then
    t_ok "a chunk failing mid-window during resume: exit 75, nothing trained"
else t_bad "failure mid-window: resume" "exit $rc: $(tail -n 3 downmid.log)"; fi

# A credential that expires in the middle of the download: the instance
# role's keys (tests/cli/fake_metadata.py, IMDSv2) are refused with 403
# ExpiredToken from the 6th ranged GET on; the reader renews them from the
# metadata service and the resume ends bitwise like the straight run.
python3 "$ROOT/tests/cli/fake_metadata.py" --mode aws --port-file "$T_TMP/md.port" &
MD_PID=$!
t_cleanup() { kill "$MOTO_PID" "$PROXY_PID" "$MD_PID" 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$T_TMP"; }
i=0
until [ -s "$T_TMP/md.port" ]; do i=$((i + 1)); [ $i -gt 50 ] && break; sleep 0.1; done
MD=http://127.0.0.1:$(tr -d '\n' <"$T_TMP/md.port")
issued() { "$PY" -c "import json,urllib.request as u; print(json.load(u.urlopen('$MD/_state'))['iam_issued'])"; }
b3 keys r1 >"$T_TMP/keys.newx"
ctl "expire_after=5"
e0=$(pstate expired_ranged) n0=$(issued)
env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY "$S" resume /dev/null $F --set train.max_steps=12 --set train.run_dir=newx \
    --set checkpoint.remote="s3://$B/r1" --set checkpoint.endpoint="$PROXY" --set spot.provider=aws --set spot.metadata_url="$MD" >newx.log 2>&1
rc=$?
ctl "expire_after=-1"
b3 keep r1 "$T_TMP/keys.newx"
refused=$(($(pstate expired_ranged) - e0)) renewed=$(($(issued) - n0))
if [ $rc -eq 0 ] && [ "$refused" -ge 1 ] && [ "$renewed" -ge 3 ] && grep -q "resuming from s3://$B/r1/$s8" newx.log &&
    [ "$(digest newx/ckpt/$s12)" = "$ref" ]; then
    t_ok "role credentials expiring mid-download ($refused ranged GETs refused): renewed from IMDS, bitwise result"
else t_bad "credential expiring mid-download" "exit $rc, $refused refused, $renewed keys issued: $(grep -E 'resum|ExpiredToken|spotrain:' newx.log | head -n 3)"; fi
# AWS_SHARED_CREDENTIALS_FILE names no file here: with an instance role that
# is normal, not worth an error line at each credentials lookup.
if ! grep -q "cannot open" newx.log; then t_ok "an absent credentials file is no error line"; else t_bad "an absent credentials file is no error line" "$(grep "cannot open" newx.log | head -n 1)"; fi

# --- elastic, under mpirun ---
if [ $have_mpi -eq 1 ]; then
    $M "$S" train /dev/null $F --set train.max_steps=12 --set train.run_dir=straight2 >straight2.log 2>&1
    ref2=$(digest straight2/ckpt/$s12)
    b3 up straight2/ckpt/$s4 r2 && b3 up straight2/ckpt/$s8 r2
    # 2 ranks' checkpoint, 1 rank continues: the same as continuing from the local copy.
    mkdir -p loc21/ckpt && cp -r straight2/ckpt/$s8 loc21/ckpt/
    "$S" resume /dev/null $F --set train.max_steps=12 --set train.run_dir=loc21 >loc21.log 2>&1
    R new21 r2 >new21.log 2>&1
    a=$(digest loc21/ckpt/$s12) b=$(digest new21/ckpt/$s12)
    if grep -q "resuming from s3://$B/r2/$s8 (step 8, saved by 2 ranks)" new21.log && [ -n "$a" ] && [ "$a" = "$b" ]; then
        t_ok "2 ranks -> 1 rank from the remote: bitwise equal to the same continuation from local"
    else t_bad "2 -> 1 from remote" "$a vs $b: $(tail -n 2 new21.log)"; fi
    # 1 rank's checkpoint, 2 ranks continue.
    mkdir -p loc12/ckpt && cp -r straight/ckpt/$s8 loc12/ckpt/
    $M "$S" resume /dev/null $F --set train.max_steps=12 --set train.run_dir=loc12 >loc12.log 2>&1
    b3 keys r1 >"$T_TMP/keys.new12"
    $M "$S" resume /dev/null $F --set train.max_steps=12 --set train.run_dir=new12 --set checkpoint.remote="s3://$B/r1" --set checkpoint.endpoint="$MOTO" >new12.log 2>&1
    b3 keep r1 "$T_TMP/keys.new12"
    a=$(digest loc12/ckpt/$s12) b=$(digest new12/ckpt/$s12)
    if grep -q "resuming from s3://$B/r1/$s8 (step 8, saved by 1 rank)" new12.log && [ -n "$a" ] && [ "$a" = "$b" ]; then
        t_ok "1 rank -> 2 ranks from the remote: bitwise equal to the same continuation from local"
    else t_bad "1 -> 2 from remote" "$a vs $b: $(tail -n 2 new12.log)"; fi
    n=$(t_events new12/events.jsonl download rank | wc -l)
    if [ "$n" -eq 2 ]; then t_ok "2 ranks: a download record for each rank ($(t_events new12/events.jsonl download mb_s | tr '\n' ' ')MB/s)"; else t_bad "2-rank download records" "$n"; fi
    # Node-local disks: rank 0's run_dir still holds step 8, rank 1's (a
    # replaced node) is empty. Rank 1 cannot read the local copy, so every
    # rank takes the remote copy of the same step. (max_steps 8: no new
    # checkpoint, whose shards would land in two run_dirs.)
    # Each rank runs in its own directory, so the same relative run_dir is
    # two different places, as on two machines.
    mkdir -p nodeA/run/ckpt nodeB && cp -r straight2/ckpt/$s8 nodeA/run/ckpt/
    RA="resume /dev/null $F --set train.max_steps=8 --set train.run_dir=run --set checkpoint.remote=s3://$B/r2 --set checkpoint.endpoint=$MOTO"
    mpirun -np 1 -wdir "$T_TMP/nodeA" "$S" $RA : -np 1 -wdir "$T_TMP/nodeB" "$S" $RA >mpmd.log 2>&1
    rc=$?
    if [ $rc -eq 0 ] && grep -q "run/ckpt/$s8: no such checkpoint directory" mpmd.log && grep -q "skipping run/ckpt/$s8: a rank could not read it" mpmd.log &&
        grep -q "resuming from s3://$B/r2/$s8" mpmd.log; then
        t_ok "local copy missing on one node: all ranks take the remote copy of the same step"
    else t_bad "node-local fallback to the remote copy" "exit $rc: $(grep -E 'skipping|resuming|no such' mpmd.log | head -n 3)"; fi
    # 2 ranks resume 2 ranks' checkpoint whose damage only rank 1 reads
    # (Adam v at the end of shard 1): every rank moves to step 4 together.
    b3 up straight2/ckpt/$s4 r2d && b3 up straight2/ckpt/$s8 r2d
    sz=$(stat -c %s straight2/ckpt/$s8/shard-00001.bin)
    b3 flip r2d/$s8/shard-00001.bin $((sz - 100))
    b3 keys r2d >"$T_TMP/keys.new22"
    $M "$S" resume /dev/null $F --set train.max_steps=12 --set train.run_dir=new22 --set checkpoint.remote="s3://$B/r2d" --set checkpoint.endpoint="$MOTO" >new22.log 2>&1
    b3 keep r2d "$T_TMP/keys.new22"
    rc=$?
    if [ $rc -eq 0 ] && grep -q "shard-00001.bin chunk .*adam_v.*mismatch" new22.log && grep -q "skipping s3://$B/r2d/$s8" new22.log &&
        grep -q "resuming from s3://$B/r2d/$s4" new22.log && [ "$(digest new22/ckpt/$s12)" = "$ref2" ]; then
        t_ok "2 ranks, damage seen by rank 1 only: both fall back to step 4, bitwise equal to the straight 2-rank run"
    else t_bad "collective fallback" "exit $rc: $(grep -E 'skipping|resuming|mismatch' new22.log | head -n 4)"; fi
    # 2 ranks, the remote down for rank 1's shard only: an outage on one
    # rank is an outage for the job (exit 75 on every rank, rank 0 says it
    # once), not damage to fall back from.
    ctl "match=GET+/$B/r2/$s8/shard-00001.bin&fail=100000&status=503"
    $M "$S" resume /dev/null $F --set train.max_steps=12 --set train.run_dir=down2 --set checkpoint.remote="s3://$B/r2" \
        --set checkpoint.endpoint="$PROXY" --set checkpoint.remote_retries=1 >down2.log 2>&1
    rc=$?
    ctl "match=&fail=0"
    if [ $rc -eq 75 ] && [ "$(grep -c "looks unreachable" down2.log)" -eq 1 ] && ! grep -q "resuming from s3://$B/r2/$s4" down2.log &&
        [ ! -e down2/ckpt/$s12 ] && grep '"event":"start"' down2/events.jsonl | tail -n 1 | grep -q '"code":75'; then
        t_ok "2 ranks, the remote down for rank 1's shard: exit 75 on every rank, said once, no fallback, nothing trained"
    else t_bad "2-rank outage" "exit $rc: $(grep -E 'unreachable|resuming|skipping' down2.log | head -n 4)"; fi
else
    echo "SKIP elastic remote resume: no mpirun or built with MPI=0"
fi
t_end
