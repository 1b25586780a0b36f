#!/bin/sh
# The S3 client (s3/s3.c through build/tests/s3tool) against a real
# S3-compatible server: moto_server from build/venv on 127.0.0.1, checked
# with boto3 independently; faults from tests/cli/s3_fault_proxy.py in between.
# shellcheck source=tests/cli/lib.sh
# module: s3
. tests/cli/lib.sh
TOOL=$PWD/$BUILD/tests/s3tool
t_s3_servers cli_s3
export S3_REMOTE=s3://spotrain-test/run S3_ENDPOINT=http://127.0.0.1:$MOTO_PORT S3_PART_BYTES=5242880 S3_PARALLEL=3
ctl() { "$PY" -c "import urllib.request as u; u.urlopen('$PROXY/_control?$1').read()"; }
# boto3 KEY -> sha256 and size of the object, read independently of spotrain.
b3() {
    "$PY" - "$MOTO_PORT" "$@" <<'PY'
import boto3, hashlib, sys
port, op = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:%s" % port, region_name="us-east-1")
if op == "sum":
    b = s3.get_object(Bucket="spotrain-test", Key=sys.argv[3])["Body"].read()
    print(hashlib.sha256(b).hexdigest(), len(b))
elif op == "put":
    s3.put_object(Bucket="spotrain-test", Key=sys.argv[3], Body=open(sys.argv[4], "rb").read())
elif op == "uploads":
    print(len(s3.list_multipart_uploads(Bucket="spotrain-test").get("Uploads", [])))
elif op == "keys":
    p = s3.get_paginator("list_objects_v2")
    print(sum(len(pg.get("Contents", [])) for pg in p.paginate(Bucket="spotrain-test", Prefix=sys.argv[3])))
PY
}
fsum() { "$PY" -c "import hashlib,sys; b=open(sys.argv[1],'rb').read(); print(hashlib.sha256(b).hexdigest(), len(b))" "$1"; }

t_exit "s3 create bucket" 0 "" "$TOOL" mb
head -c 23000000 /dev/urandom >"$T_TMP/big"
head -c 1000 /dev/urandom >"$T_TMP/small"
t_exit "s3 multipart upload (5 parts, 3 in flight)" 0 "requests=7 retries=0" "$TOOL" put run/step-00000001/shard-00000.bin "$T_TMP/big"
if [ "$(b3 sum run/step-00000001/shard-00000.bin)" = "$(fsum "$T_TMP/big")" ]; then t_ok "s3 boto3 reads the multipart object bytes back"; else t_bad "s3 boto3 reads the multipart object bytes back"; fi
t_exit "s3 small put" 0 "requests=1 " "$TOOL" put run/step-00000001/manifest.json "$T_TMP/small"
if [ "$(b3 sum run/step-00000001/manifest.json)" = "$(fsum "$T_TMP/small")" ]; then t_ok "s3 boto3 reads the small object back"; else t_bad "s3 boto3 reads the small object back"; fi
# A source file shorter than the length asked for: the file, not the
# network, so one I/O error at once (no retries), and no object left behind.
t_exit "s3 a source file that ends early: single PUT fails at once" 74 "source file at byte 1000: file ends early" \
    "$TOOL" put run/short1 "$T_TMP/small" 4000
t_exit "s3 a source file that ends early: multipart fails without retries" 74 "put rc=74 requests=[0-9]+ retries=0 " \
    "$TOOL" put run/short2 "$T_TMP/big" 30000000
t_exit "s3 a source file that ends early leaves no object" 66 "" "$TOOL" head run/short2
if [ "$(b3 uploads)" = 0 ]; then t_ok "s3 a source file that ends early: the multipart upload was aborted"
else t_bad "s3 a source file that ends early: the multipart upload was aborted" "$(b3 uploads) left"; fi
b3 put run/other.bin "$T_TMP/small"
t_exit "s3 ranged get" 0 "" "$TOOL" get run/step-00000001/shard-00000.bin 7000000 3000000 "$T_TMP/range"
tail -c +7000001 "$T_TMP/big" | head -c 3000000 >"$T_TMP/range.want"
if cmp -s "$T_TMP/range" "$T_TMP/range.want"; then t_ok "s3 ranged get bytes match"; else t_bad "s3 ranged get bytes match"; fi
t_exit "s3 get past the end is bad data" 65 "shorter than the manifest" "$TOOL" get run/step-00000001/manifest.json 500 1000 "$T_TMP/x"
t_exit "s3 head" 0 "run/other.bin 1000 \"" "$TOOL" head run/other.bin
t_exit "s3 head of a missing key" 66 "" "$TOOL" head run/nope
t_exit "s3 get of a missing key names it" 66 "NoSuchKey.*after 1 attempt" "$TOOL" get run/nope 0 10 "$T_TMP/x"
# More keys than one list page holds (1000), so continuation is exercised.
"$PY" - "$MOTO_PORT" <<'PY'
import boto3, sys
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:%s" % sys.argv[1], region_name="us-east-1")
for i in range(1005):
    s3.put_object(Bucket="spotrain-test", Key="many/k%05d" % i, Body=b"x")
PY
n=$("$TOOL" ls many/ 2>/dev/null | wc -l)
if [ "$n" -eq 1005 ]; then t_ok "s3 list follows continuation (1005 keys)"; else t_bad "s3 list follows continuation (1005 keys)" "got $n"; fi
t_exit "s3 delete" 0 "" "$TOOL" rm run/other.bin
t_exit "s3 deleted key is gone" 66 "" "$TOOL" head run/other.bin

# Faults, through the proxy.
export S3_ENDPOINT=$PROXY
ctl "fail=3&status=503"
t_exit "s3 retries 503 SlowDown" 0 "retries=3" "$TOOL" put run/f1 "$T_TMP/small"
ctl "fail=2&status=500"
t_exit "s3 multipart survives 500s" 0 "retries=2" "$TOOL" put run/f2 "$T_TMP/big"
if [ "$(b3 sum run/f2)" = "$(fsum "$T_TMP/big")" ]; then t_ok "s3 bytes intact after 500s"; else t_bad "s3 bytes intact after 500s"; fi
ctl "drop=2"
t_exit "s3 retries dropped connections" 0 "retries=2" "$TOOL" get run/step-00000001/shard-00000.bin 0 23000000 "$T_TMP/all"
if cmp -s "$T_TMP/all" "$T_TMP/big"; then t_ok "s3 bytes intact after dropped connections"; else t_bad "s3 bytes intact after dropped connections"; fi
ctl "fail=100&status=503"
S3_RETRIES=2 t_exit "s3 gives up after its retries with one line" 69 "HTTP 503 SlowDown.*after 3 attempts" "$TOOL" put run/f3 "$T_TMP/big"
ctl "fail=0"
if [ "$(b3 uploads)" = 0 ]; then t_ok "s3 failed multipart upload was aborted"; else t_bad "s3 failed multipart upload was aborted" "$(b3 uploads) left"; fi
t_exit "s3 nothing stored under a failed upload" 66 "" "$TOOL" head run/f3
ctl "slow=3"
S3_LOW_SPEED_SECONDS=1 S3_RETRIES=1 t_exit "s3 slow answers time out and are retried" 69 "after 2 attempts" "$TOOL" head run/f1
ctl "slow=0"
ctl "expired_token=OLD"
AWS_SESSION_TOKEN=OLD t_exit "s3 expired token: one refresh, then a clear failure" 78 "ExpiredToken.*after 2 attempts.*credentials" "$TOOL" get run/f1 0 10 "$T_TMP/x"
AWS_SESSION_TOKEN=OLD t_exit "s3 HEAD refused with a session token: one refresh" 78 "HTTP 403.*after 2 attempts" "$TOOL" head run/f1
ctl "expired_token="

# Instance role credentials from IMDSv2 (tests/cli/fake_metadata.py's IAM block).
python3 tests/cli/fake_metadata.py --mode aws --port-file "$T_TMP/md.port" &
MD_PID=$!
t_cleanup() { kill "$MOTO_PID" "$PROXY_PID" "$MD_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$T_TMP"; }
i=0
until [ -s "$T_TMP/md.port" ]; do i=$((i + 1)); [ $i -gt 50 ] && break; sleep 0.1; done
MD=http://127.0.0.1:$(tr -d '\n' <"$T_TMP/md.port")
mdctl() { "$PY" -c "import urllib.request as u; print(u.urlopen('$MD/$1').read().decode())"; }
issued() { mdctl _state | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["iam_issued"])'; }
imds() { env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY AWS_SHARED_CREDENTIALS_FILE=$T_TMP/none S3_METADATA_URL=$MD "$@"; }
t_exit "s3 credentials from IMDSv2 instance role" 0 "refreshes=0" imds "$TOOL" put run/imds1 "$T_TMP/small"
n=$(issued)
ctl "expired_token=iamtok$((n + 1))"
t_exit "s3 expired role token: refreshed from IMDS, then retried" 0 "refreshes=1" imds "$TOOL" get run/imds1 0 1000 "$T_TMP/x"
ctl "expired_token="
mdctl "_control?iam_ttl=60" >/dev/null
n0=$(issued)
t_exit "s3 role credentials renewed before they expire" 0 "refreshes=[1-9]" imds "$TOOL" put run/imds2 "$T_TMP/big"
if [ "$(issued)" -gt $((n0 + 1)) ]; then t_ok "s3 renewal fetched new role keys"; else t_bad "s3 renewal fetched new role keys"; fi
t_exit "s3 no credentials anywhere: one clear line" 78 "no S3 credentials" env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY AWS_SHARED_CREDENTIALS_FILE=$T_TMP/none S3_METADATA_URL=off "$TOOL" head run/x
printf '[ci]\naws_access_key_id = FILEKEY\naws_secret_access_key = FILESECRET\n' >"$T_TMP/credfile"
t_exit "s3 credentials file profile" 0 "" env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY AWS_SHARED_CREDENTIALS_FILE=$T_TMP/credfile AWS_PROFILE=ci "$TOOL" head run/imds1
t_end
