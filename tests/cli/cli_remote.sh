#!/bin/sh
# Checkpoints uploaded to object storage by the trainer: moto's server from
# build/venv on 127.0.0.1 stands in for S3, boto3 (an independent client)
# lists and downloads what spotrain uploaded and compares it with the local
# checkpoint byte for byte; `ckpt verify` re-checks every chunk of what was
# downloaded. Faults come from tests/cli/s3_fault_proxy.py in front of moto.
# Option strings like $F are word-split on purpose.
# shellcheck disable=SC2086
# module: ckpt s3
. tests/cli/lib.sh
S=$SPOTRAIN
t_s3_servers cli_remote
ROOT=$PWD
cd "$T_TMP" || exit 1
export AWS_SHARED_CREDENTIALS_FILE=$T_TMP/no-credentials
ctl() { "$PY" -c "import urllib.request as u; u.urlopen('$PROXY/_control?$1').read()"; }
pstate() { "$PY" -c "import json,urllib.request as u; print(json.load(u.urlopen('$PROXY/_state'))['$1'])"; }

# rb OP PREFIX ...: boto3's view of the bucket, independent of spotrain.
#   complete PREFIX          steps with a manifest object, ascending
#   steps PREFIX             steps with any object
#   same PREFIX STEP DIR     "same" when the step's objects are exactly DIR's files, byte for byte
#   get PREFIX STEP DIR      downloads the step's objects into DIR
#   uploads                  multipart uploads left open
rb() {
    "$PY" - "$MOTO" "$@" <<'PY'
import boto3, hashlib, os, re, sys
url, op = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
B = "spotrain-ckpt"
def objs(prefix):
    out = {}
    for pg in s3.get_paginator("list_objects_v2").paginate(Bucket=B, Prefix=prefix + "/"):
        for o in pg.get("Contents", []):
            m = re.match(re.escape(prefix) + r"/step-(\d{8})/(.+)$", o["Key"])
            if m:
                out.setdefault(int(m.group(1)), []).append(m.group(2))
    return out
if op == "mb":
    s3.create_bucket(Bucket=B)
elif op == "complete":
    print(" ".join(str(s) for s, n in sorted(objs(sys.argv[3]).items()) if "manifest.json" in n))
elif op == "steps":
    print(" ".join(str(s) for s in sorted(objs(sys.argv[3]))))
elif op in ("same", "get"):
    prefix, step, d = sys.argv[3], int(sys.argv[4]), sys.argv[5]
    names = sorted(objs(prefix).get(step, []))
    key = lambda n: "%s/step-%08d/%s" % (prefix, step, n)
    if op == "get":
        os.makedirs(d, exist_ok=True)
        for n in names:
            open(os.path.join(d, n), "wb").write(s3.get_object(Bucket=B, Key=key(n))["Body"].read())
    else:
        local = sorted(os.listdir(d))
        bad = [n for n in names if n in local and hashlib.sha256(open(os.path.join(d, n), "rb").read()).digest()
               != hashlib.sha256(s3.get_object(Bucket=B, Key=key(n))["Body"].read()).digest()]
        print("same" if names == local and not bad else "remote %s local %s differ %s" % (names, local, bad))
elif op == "uploads":
    print(len(s3.list_multipart_uploads(Bucket=B).get("Uploads", [])))
PY
}
# Every checkpoint the remote lists as complete downloads and verifies
# (each chunk's checksum); prints the failures.
remote_verify() {
    for s in $(rb complete "$1"); do
        d=$T_TMP/dl-$1-$s/step-$(printf %08d "$s")
        rm -rf "$d"
        rb get "$1" "$s" "$d"
        "$S" ckpt verify "$d" >/dev/null 2>&1 || echo "step $s of $1 does not verify"
    done
}
check_verify() {
    bad=$(remote_verify "$2")
    if [ -z "$bad" ] && [ -n "$(rb complete "$2")" ]; then t_ok "$1"; else t_bad "$1" "${bad:-nothing complete}"; fi
}
# Every checkpoint complete under PREFIX is byte-identical to RUN's local
# copy (when that still exists), and FINAL is among them. Which earlier
# checkpoints were uploaded depends on speed (the uploader takes the newest
# commit when it is free), so only the final one is asked for by step.
check_same() {
    name=$1 run=$2 prefix=$3 final=$4
    got="" n=0
    for s in $(rb complete "$prefix"); do
        d=$run/ckpt/step-$(printf %08d "$s")
        [ -d "$d" ] || continue
        n=$((n + 1))
        r=$(rb same "$prefix" "$s" "$d")
        [ "$r" = same ] || got="$got step $s: $r;"
    done
    if [ -z "$got" ] && [ "$n" -gt 0 ] && rb complete "$prefix" | tr ' ' '\n' | grep -qx "$final"; then t_ok "$name"
    else t_bad "$name" "complete remotely: $(rb complete "$prefix"), wanted $final among them; $got"; fi
}
field() { t_events "$1/events.jsonl" "$2" "$3" | tr '\n' ' ' | sed 's/ $//'; }

rb mb
F="--set model.dim=32 --set model.n_layers=1 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.ffn_dim=64 --set model.seq_len=16 --set train.global_batch=4 --set train.micro_batch=4 --set train.val_every=0 --set train.threads=1 --set checkpoint.interval_steps=0 --set train.log_every=1 --quiet"
R() { echo "--set train.run_dir=$T_TMP/$1 --set checkpoint.remote=s3://spotrain-ckpt/$2 --set checkpoint.endpoint=$3"; }

# A run to the end: exit 0 only with the final checkpoint on the remote.
# A shard over one part (12 MB raw, 5 MiB parts) goes up as a multipart upload.
BIG="--set model.dim=128 --set model.n_layers=4 --set model.n_heads=4 --set model.n_kv_heads=2 --set model.ffn_dim=512 --set checkpoint.codec=none --set checkpoint.remote_part_mib=5"
t_exit "remote: a finished run exits 0 with its final checkpoint uploaded" 0 "" \
    "$S" train /dev/null $F $BIG --set train.max_steps=3 $(R big big "$MOTO")
check_same "remote: boto3 finds step 3 byte-identical to the local files (multipart shard)" big big 3
check_verify "remote: the downloaded checkpoint verifies chunk by chunk" big
if [ "$(field big upload rank | tr ' ' '\n' | sort -u | tr '\n' ' ')" = "0 all " ] &&
   [ "$(t_events big/events.jsonl upload bytes | tail -n 1)" -gt 12000000 ] &&
   t_events big/events.jsonl upload mb_s | awk '$1 <= 0 { bad = 1 } END { exit bad }'; then
    t_ok "remote: the ledger has an upload record per rank and for the checkpoint, with bytes and MB/s"
else
    t_bad "remote: the ledger has an upload record per rank and for the checkpoint, with bytes and MB/s" \
        "$(grep '"upload"' big/events.jsonl)"
fi
if [ "$(rb uploads)" = 0 ]; then t_ok "remote: no multipart upload left open"; else t_bad "remote: no multipart upload left open"; fi

# Rotation on the remote: keep_last = 1, keep_every = 4, runs ending at 2, 4, 6.
ROT="--set checkpoint.keep_last=1 --set checkpoint.keep_every=4"
"$S" train /dev/null $F $ROT --set train.max_steps=2 $(R rot rot "$MOTO") 2>/dev/null
"$S" resume /dev/null $F $ROT --set train.max_steps=4 $(R rot rot "$MOTO") 2>/dev/null
# Left-overs the rotation clears (an abandoned step's shard) or must not
# touch (an object that is no step's).
echo x >orphan
"$PY" -c "import boto3; c = boto3.client('s3', endpoint_url='$MOTO', region_name='us-east-1')
c.upload_file('orphan', 'spotrain-ckpt', 'rot/step-00000003/shard-00000.bin')
c.upload_file('orphan', 'spotrain-ckpt', 'rot/notes.txt')"
t_exit "remote: resume of a run with a remote exits 0" 0 "" "$S" resume /dev/null $F $ROT --set train.max_steps=6 $(R rot rot "$MOTO")
if [ "$(rb steps rot)" = "4 6" ]; then t_ok "remote: rotation removed step 2 (every object), kept 4 (keep_every) and 6"
else t_bad "remote: rotation removed step 2 (every object), kept 4 (keep_every) and 6" "steps: $(rb steps rot)"; fi
check_same "remote: the rotated remote matches the rotated local copy" rot rot 6
if "$PY" -c "import boto3; c = boto3.client('s3', endpoint_url='$MOTO', region_name='us-east-1'); c.head_object(Bucket='spotrain-ckpt', Key='rot/notes.txt')" 2>/dev/null; then
    t_ok "remote: rotation leaves objects outside step directories alone"
else
    t_bad "remote: rotation leaves objects outside step directories alone"
fi
if field rot upload status | grep -q already; then t_ok "remote: a resumed run does not upload its starting checkpoint again"
else t_bad "remote: a resumed run does not upload its starting checkpoint again" "$(field rot upload status)"; fi

# A fresh `train` into a prefix that holds checkpoints (steps 4 and 6 of
# the run above) is refused like a used run_dir (64), and so is --force,
# which moves local checkpoints aside but never deletes remote objects:
# nothing moves, locally or remotely.
t_exit "remote: train into a prefix holding checkpoints: refused (64) naming it and what to do" 64 \
    "s3://spotrain-ckpt/rot already holds 2 checkpoints \(newest: step 6\); use .spotrain resume.*another checkpoint.remote prefix.*aws s3 rm --recursive s3://spotrain-ckpt/rot/" \
    "$S" train /dev/null $F $ROT --set train.max_steps=2 $(R fresh rot "$MOTO")
t_exit "remote: train --force into that prefix: refused too, --force never deletes remote objects" 64 \
    "already holds 2 checkpoints.*--force never deletes remote objects" \
    "$S" train /dev/null $F $ROT --set train.max_steps=2 --force $(R rot rot "$MOTO")
if [ "$(rb steps rot)" = "4 6" ] && [ -z "$(ls -d rot/ckpt.old-* 2>/dev/null)" ] && [ -d rot/ckpt/step-00000006 ] &&
   [ ! -d fresh/ckpt/step-00000002 ]; then
    t_ok "remote: the refused starts changed nothing (remote steps 4 6, local checkpoints in place, none written)"
else
    t_bad "remote: the refused starts changed nothing" "remote $(rb steps rot); $(ls rot fresh/ckpt 2>&1 | tr '\n' ' ')"
fi

# SIGTERM mid-run, gated on logged steps: 75 only once the final checkpoint
# is complete on the remote, and the stop record says the remote copy is durable.
"$S" train /dev/null $(echo $F | sed 's/--quiet//') --set train.max_steps=100000000 --set checkpoint.interval_steps=5 \
    $(R term term "$MOTO") 2>term.err &
pid=$!
t_wait_steps term 12 "$pid"
kill -TERM "$pid"
wait "$pid"
rc=$?
d=$(field term stop durable_step)
if [ "$rc" = 75 ] && [ "$(field term stop durable_copy)" = remote ] && [ "$(field term stop remote_step)" = "$d" ] &&
   rb complete term | tr ' ' '\n' | grep -qx "$d"; then
    t_ok "remote: SIGTERM exits 75 with the final checkpoint (step $d) complete on the remote"
else
    t_bad "remote: SIGTERM exits 75 with the final checkpoint complete on the remote" \
        "rc $rc durable $d copy $(field term stop durable_copy) remote $(rb complete term); $(tail -n 3 term.err)"
fi
if grep -q "step $d is complete on the remote.*step $d, remote)" term.err; then t_ok "remote: the stop line names the remote copy"
else t_bad "remote: the stop line names the remote copy" "$(tail -n 2 term.err)"; fi
check_verify "remote: every complete checkpoint after the stop verifies" term

# A stop whose upload cannot finish before the deadline (every request
# answered 5 s late, 2 s of grace): 75 at the deadline, the upload
# cancelled, and the stop record says only the local copy is durable.
# late_stop NAME [ARGS]: a run on the proxy with 2 s of grace, SIGTERMed
# once a checkpoint is committed locally (its ledger record written) and its
# upload has begun: on a busy machine 12 steps can pass before the first
# local commit, and a stop then had no durable copy at all. Its exit status
# in rc, stderr in NAME.err.
late_stop() {
    n=$1
    shift
    s0=$(pstate slowed)
    "$S" train /dev/null $(echo $F | sed 's/--quiet//') "$@" --set train.max_steps=100000000 \
        --set checkpoint.interval_steps=5 --set spot.grace_seconds=2 $(R "$n" "$n" "$PROXY") 2>"$n.err" &
    pid=$!
    t_wait_steps "$n" 12 "$pid"
    _w=0
    until grep -q '"event":"checkpoint"' "$n/events.jsonl" 2>/dev/null && [ "$(pstate slowed)" -gt "$s0" ]; do
        kill -0 "$pid" 2>/dev/null && [ $_w -lt 600 ] || break
        sleep 0.1
        _w=$((_w + 1))
    done
    kill -TERM "$pid"
    wait "$pid"
    rc=$?
}
ctl "slow=5"
late_stop late
ctl "slow=0"
if [ "$rc" = 75 ] && [ "$(field late stop durable_copy)" = local ] && grep -q "deadline passed.*local only" late.err; then
    t_ok "remote: an upload that misses the deadline: exit 75, the durable copy is local only"
else
    t_bad "remote: an upload that misses the deadline: exit 75, the durable copy is local only" \
        "rc $rc copy $(field late stop durable_copy); $(grep -v '^step' late.err | tail -n 2)"
fi
if [ -z "$(rb complete late)" ]; then t_ok "remote: the cancelled upload left nothing listed complete"
else t_bad "remote: the cancelled upload left nothing listed complete" "$(rb complete late)"; fi

# The same stop with multipart shards whose parts are answered 20 s late
# (their CreateMultipartUpload is not): the upload cancelled at the
# deadline is aborted, so boto3 finds no multipart upload left open.
ctl "match=partNumber&slow=20"
a0=$(pstate aborts)
late_stop mlate $BIG
ctl "match=&slow=0"
aborts=$(($(pstate aborts) - a0))
if [ "$rc" = 75 ] && [ "$(field mlate stop durable_copy)" = local ] && [ "$aborts" -ge 1 ] && [ "$(rb uploads)" = 0 ]; then
    t_ok "remote: a multipart upload cancelled at the deadline is aborted ($aborts abort), none left open"
else
    t_bad "remote: a multipart upload cancelled at the deadline is aborted" \
        "rc $rc copy $(field mlate stop durable_copy), $aborts aborts, $(rb uploads) open; $(grep -v '^step' mlate.err | tail -n 2)"
fi

# Parts that keep failing (the upload's creation does not): given up after
# the retries, aborted, and the ledger and the exit line carry the part's
# own failure, which a part thread saw.
ctl "match=partNumber&fail=100000&status=500"
a0=$(pstate aborts)
t_exit "remote: multipart parts that keep failing: exit 75 naming the part's HTTP 500" 75 "did not complete \(rank 0: s3: PUT .*HTTP 500" \
    "$S" train /dev/null $F $BIG --set train.max_steps=2 --set checkpoint.remote_retries=1 $(R mfail mfail "$PROXY")
ctl "match=&fail=0"
aborts=$(($(pstate aborts) - a0))
if [ "$aborts" -ge 1 ] && [ "$(rb uploads)" = 0 ] && t_events mfail/events.jsonl upload reason | grep -q "HTTP 500"; then
    t_ok "remote: the failed multipart upload was aborted ($aborts aborts, none open); the ledger has the part's reason"
else
    t_bad "remote: the failed multipart upload was aborted" "$aborts aborts, $(rb uploads) open; $(t_events mfail/events.jsonl upload reason | head -n 2)"
fi

# Faults through the proxy: the run goes on and finishes with its final
# checkpoint remote; nothing incomplete is listed.
ctl "fail=4&status=503"
t_exit "remote: 503 SlowDown answers are retried; exit 0" 0 "" \
    "$S" train /dev/null $F --set train.max_steps=4 --set checkpoint.interval_steps=2 $(R f503 f503 "$PROXY")
if [ "$(pstate failed)" -ge 4 ]; then t_ok "remote: the proxy did fail 4 requests"; else t_bad "remote: the proxy did fail 4 requests"; fi
check_same "remote: after 503s the remote copy is byte-identical" f503 f503 4
ctl "fail=3&status=500"
t_exit "remote: 500 InternalError answers are retried; exit 0" 0 "" \
    "$S" train /dev/null $F $BIG --set train.max_steps=2 $(R f500 f500 "$PROXY")
check_verify "remote: after 500s the checkpoint verifies" f500
ctl "drop=3"
t_exit "remote: connections dropped mid-upload are retried; exit 0" 0 "" \
    "$S" train /dev/null $F $BIG --set train.max_steps=2 $(R fdrop fdrop "$PROXY")
if [ "$(pstate dropped)" -ge 3 ]; then t_ok "remote: the proxy did drop 3 connections"; else t_bad "remote: the proxy did drop 3 connections"; fi
check_same "remote: after dropped connections the remote copy is byte-identical" fdrop fdrop 2
ctl "slow=0.3"
t_exit "remote: slow answers only slow the upload; exit 0" 0 "" \
    "$S" train /dev/null $F --set train.max_steps=6 --set checkpoint.interval_steps=2 $(R fslow fslow "$PROXY")
ctl "slow=0"
if [ "$(t_steps fslow)" = 6 ]; then t_ok "remote: training ran every step while uploads were slow"; else t_bad "remote: training ran every step while uploads were slow" "$(t_steps fslow) steps"; fi
check_verify "remote: after slow answers every complete checkpoint verifies" fslow

# A remote that keeps failing: training goes on, the local checkpoints
# stay, the ledger says why, nothing is listed complete; the finished run
# exits 75 and a resume, with the remote back, uploads the final step.
ctl "fail=100000&status=500"
t_exit "remote: a failing remote does not stop training; the finish exits 75 and says why" 75 "did not complete.*resume" \
    "$S" train /dev/null $F --set train.max_steps=6 --set checkpoint.interval_steps=2 --set checkpoint.remote_retries=1 \
    $(R down down "$PROXY")
ctl "fail=0"
if [ "$(t_steps down)" = 6 ] && "$S" ckpt verify down/ckpt/step-00000006 >/dev/null 2>&1; then
    t_ok "remote: every step ran and the local checkpoint of step 6 verifies"
else
    t_bad "remote: every step ran and the local checkpoint of step 6 verifies" "$(t_steps down) steps"
fi
if field down upload status | grep -q failed && t_events down/events.jsonl upload reason | grep -q "HTTP 500"; then
    t_ok "remote: the ledger records the failed upload with its reason"
else
    t_bad "remote: the ledger records the failed upload with its reason" "$(grep '"upload"' down/events.jsonl | head -n 2)"
fi
if [ -z "$(rb complete down)" ]; then t_ok "remote: no checkpoint listed complete after failed uploads"
else t_bad "remote: no checkpoint listed complete after failed uploads" "$(rb complete down)"; fi
t_exit "remote: resume of the finished run uploads its final checkpoint and exits 0" 0 "uploaded to" \
    "$S" resume /dev/null $(echo $F | sed 's/--quiet//') --set train.max_steps=6 $(R down down "$PROXY")
check_same "remote: the late upload is byte-identical" down down 6
ctl "fail=100000&status=500"
t_exit "remote: checkpoint.required = 1 turns a failed upload into exit 74" 74 "upload of checkpoint step [0-9]+ failed and checkpoint.required = 1" \
    "$S" train /dev/null $F --set train.max_steps=6 --set checkpoint.interval_steps=2 --set checkpoint.remote_retries=0 \
    --set checkpoint.required=1 $(R req req "$PROXY")
ctl "fail=0"
ctl "expired_token=OLD"
AWS_SESSION_TOKEN=OLD t_exit "remote: an expired session token fails the upload with its reason; exit 75" 75 "did not complete.*HTTP 403.*credentials" \
    "$S" train /dev/null $F --set train.max_steps=2 $(R exp exp "$PROXY")
ctl "expired_token="
if [ -z "$(rb complete exp)" ] && "$S" ckpt verify exp/ckpt/step-00000002 >/dev/null 2>&1; then
    t_ok "remote: expired token: nothing listed remotely, the local checkpoint verifies"
else
    t_bad "remote: expired token: nothing listed remotely, the local checkpoint verifies" "$(rb complete exp)"
fi
t_exit "remote: no credentials at all is a config error at start" 78 "no S3 credentials" \
    env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY "$S" train /dev/null $F --set train.max_steps=2 \
    --set spot.provider=none $(R nocred nocred "$MOTO")

# spotrain-run around a run whose final upload keeps failing (every PUT
# answered 500): each attempt finishes, saves locally and exits 75 with a
# stop record of source "remote"; the wrapper gives up with 87 once
# --max-stalls attempts in a row brought no newer checkpoint, local or
# remote, and names the remote as the cause.
ctl "match=PUT&fail=100000&status=500"
t_exit "remote: spotrain-run gives up with 87 when the final upload keeps failing, naming the remote" 87 \
    "the remote upload keeps failing: 2 attempts in a row ended with step 4 saved locally" \
    "$ROOT/spot/spotrain-run" --backoff 0 --max-stalls 2 --events "$T_TMP/wrap/events.jsonl" -- \
    "$S" resume /dev/null $F --set train.max_steps=4 --set checkpoint.remote_retries=0 $(R wrap wrap "$PROXY")
ctl "match=&fail=0"
if [ "$(field wrap stop source)" = "remote remote remote" ] && [ "$(field wrap stop durable_copy)" = "local local local" ] &&
   [ "$(field wrap stop durable_step)" = "4 4 4" ] && [ "$(grep -c '"event":"restart"' wrap/events.jsonl)" = 2 ]; then
    t_ok "remote: each of the 3 attempts left a stop record: durable step 4, local copy only"
else
    t_bad "remote: each attempt left a stop record" "$(grep -E '"(stop|restart)"' wrap/events.jsonl | cut -c 1-200)"
fi

# End to end on "a new machine": a run with a remote is stopped by SIGTERM
# mid-run (gated on logged steps), its whole run_dir is deleted, and a
# resume into an empty run_dir continues from the remote copy to the end,
# bitwise identical to an uninterrupted run without a remote.
E2E="--set model.dim=64 --set model.n_layers=2 --set train.max_steps=1500 --set checkpoint.interval_steps=50"
e2e_digest() { "$S" ckpt inspect --json "$1" 2>/dev/null | "$PY" -c 'import json,sys; d=json.load(sys.stdin); d=d[0] if isinstance(d,list) else d; print(d["digest"]["params"], d["digest"]["adam_m"], d["digest"]["adam_v"])' 2>/dev/null; }
"$S" train /dev/null $F $E2E --set train.run_dir="$T_TMP/e2e-ref" >e2e-ref.log 2>&1
"$S" train /dev/null $F $E2E $(R e2e e2e "$MOTO") >e2e.log 2>&1 &
pid=$!
t_wait_steps e2e 30 "$pid"
kill -TERM "$pid"
wait "$pid"
rc=$?
stop=$(field e2e stop durable_step)
rm -rf "$T_TMP/e2e"
"$S" resume /dev/null $F $E2E $(R e2e e2e "$MOTO") >e2e2.log 2>&1
rc2=$?
a=$(e2e_digest e2e-ref/ckpt/step-00001500) b=$(e2e_digest e2e/ckpt/step-00001500)
if [ "$rc" = 75 ] && [ "$rc2" = 0 ] && [ -n "$stop" ] && [ "$stop" != 1500 ] &&
   [ "$(t_events e2e/events.jsonl start resumed_from | tail -n 1)" = "s3://spotrain-ckpt/e2e/step-$(printf %08d "$stop")" ] &&
   [ -n "$a" ] && [ "$a" = "$b" ]; then
    t_ok "remote: SIGTERM at step $stop, run_dir deleted, resumed from the remote on an empty run_dir: bitwise equal to the uninterrupted run"
else
    t_bad "remote: new-machine resume bitwise" "exit $rc then $rc2, stop step '$stop', digest '$b' vs '$a': $(grep -E "resum|skipping" e2e2.log | head -n 3)"
fi

# Under mpirun: each rank uploads its own shard; SIGUSR1 (forwarded by
# mpirun) stops with the final checkpoint on the remote.
if command -v mpirun >/dev/null 2>&1 && "$S" --version | grep -q "mpi: yes"; then
    M="mpirun -np 2 --oversubscribe -x AWS_ACCESS_KEY_ID -x AWS_SECRET_ACCESS_KEY -x AWS_SHARED_CREDENTIALS_FILE -x no_proxy"
    MF="$F --set train.global_batch=6 --set train.micro_batch=3"
    t_exit "remote, 2 ranks: a finished run exits 0" 0 "" \
        $M "$S" train /dev/null $MF --set train.max_steps=4 --set checkpoint.interval_steps=2 $(R mpi mpi "$MOTO")
    check_same "remote, 2 ranks: both shards and the manifest byte-identical" mpi mpi 4
    if t_events mpi/events.jsonl upload rank | grep -qx 1 && rb same mpi 4 mpi/ckpt/step-00000004 | grep -q same &&
       [ -n "$(rb steps mpi)" ]; then
        t_ok "remote, 2 ranks: the ledger has rank 1's upload"
    else
        t_bad "remote, 2 ranks: the ledger has rank 1's upload" "$(grep '"upload"' mpi/events.jsonl)"
    fi
    check_verify "remote, 2 ranks: the downloaded checkpoint verifies" mpi
    $M "$S" train /dev/null $MF --set train.max_steps=100000000 --set checkpoint.interval_steps=5 \
        $(R mstop mstop "$MOTO") 2>mstop.err &
    pid=$!
    t_wait_steps mstop 12 "$pid"
    kill -USR1 "$pid"
    wait "$pid"
    rc=$?
    d=$(field mstop stop durable_step)
    if [ "$rc" = 75 ] && [ "$(field mstop stop durable_copy)" = remote ] && rb complete mstop | tr ' ' '\n' | grep -qx "$d"; then
        t_ok "remote, 2 ranks: SIGUSR1 exits 75 with the final checkpoint (step $d) on the remote"
    else
        t_bad "remote, 2 ranks: SIGUSR1 exits 75 with the final checkpoint on the remote" \
            "rc $rc durable $d copy $(field mstop stop durable_copy) remote $(rb complete mstop); $(grep -E "\"(stop|upload)\"" mstop/events.jsonl); $(grep -v "^ *$" mstop.err | head -n 5)"
    fi
    check_verify "remote, 2 ranks: every complete checkpoint after the stop verifies" mstop
else
    echo "SKIP remote mpirun tests: no mpirun or built with MPI=0"
fi
t_end
