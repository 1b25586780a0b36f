#!/bin/sh
# Remote restore under an object store's latency: the resume reader
# (`spotrain ckpt verify s3://...`: every chunk by ranged GET, checked) on a
# checkpoint of realistic chunk count, served by bench/s3sink with a
# per-request delay, jitter and a slow tail (loopback alone has none).
#   sh bench/s3lat.sh                         this build's reader
#   S3LAT_OLD=DIR/spotrain sh bench/s3lat.sh  and another binary's, back to back
# Knobs: S3LAT_LAYERS (checkpoint size, default 16: ~610 MB, 147 chunks of
# 4 MiB), S3LAT_REPS (runs per figure, median; default 3), S3LAT_PROFILES
# ("DELAY_MS JITTER_MS TAIL_EVERY TAIL_MS" separated by commas).
# The machine is shared and noisy: compare the ratio, not MB/s across runs.
BUILD=${BUILD:-build}
TOOL=$PWD/$BUILD/tests/s3tool
SINK=$PWD/$BUILD/bench/s3sink
S=$PWD/$BUILD/spotrain
OLD=${S3LAT_OLD:-}
REPS=${S3LAT_REPS:-3}
PROFILES=${S3LAT_PROFILES:-"0 0 0 0,20 0 0 0,50 0 0 0,20 30 0 0,20 10 16 300"}
for need in "$TOOL" "$SINK" "$S" ${OLD:+"$OLD"}; do
    if [ ! -x "$need" ]; then
        echo "bench/s3lat.sh: skipped: needs $need (make bench builds it)"
        exit 0
    fi
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/spotrain-s3lat.XXXXXX")
spid=
trap 'kill $spid 2>/dev/null; rm -rf "$tmp"' EXIT
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3
export no_proxy=127.0.0.1 AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1
export S3_PART_BYTES=16777216 S3_PARALLEL=4

RF="--set model.dim=512 --set model.n_layers=${S3LAT_LAYERS:-16} --set model.n_heads=8 --set model.n_kv_heads=8 --set model.ffn_dim=1376 --set model.seq_len=64 --set train.global_batch=2 --set train.micro_batch=1 --set train.max_steps=1 --set train.val_every=0 --set checkpoint.interval_steps=1"
# shellcheck disable=SC2086
if ! (cd "$tmp" && "$S" train /dev/null $RF --set checkpoint.codec=none --set train.run_dir=raw --quiet >raw.log 2>&1); then
    echo "s3lat bench: the source run failed: $(tail -n 1 "$tmp/raw.log")"
    exit 0
fi
STEP=$tmp/raw/ckpt/step-00000001
BYTES=$(du -cb "$STEP"/* | tail -n 1 | cut -f1)
echo "s3lat bench: $(awk -v b="$BYTES" 'BEGIN {printf "%.0f MB", b / 1e6}') checkpoint," \
    "$("$S" ckpt verify "$STEP" | sed -n 's/.*(\(.*\))/\1/p'); $REPS runs per figure (median)${OLD:+, binaries alternating}"

# secs CMD...: wall seconds of CMD, or "fail".
secs() {
    t0=$(date +%s.%N)
    if "$@" >"$tmp/run.log" 2>&1; then
        t1=$(date +%s.%N)
        awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}'
    else
        echo "fail: $(tail -n 1 "$tmp/run.log")" >&2
        echo fail
    fi
}
median() { tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -g | awk '{v[NR] = $1} END {print (NR ? (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) : 0)}'; }
mbs() { awk -v b="$BYTES" -v s="$1" 'BEGIN {printf "%7.1f", (s > 0 ? b / s / 1e6 : 0)}'; }

echo "$PROFILES" | tr ',' '\n' | while read -r delay jitter every tail; do
    rm -f "$tmp/sink.port"
    "$SINK" 0 "$delay" "$jitter" "$every" "$tail" >"$tmp/sink.port" 2>"$tmp/sink.log" &
    spid=$!
    i=0
    until [ -s "$tmp/sink.port" ]; do i=$((i + 1)); [ $i -gt 50 ] && break; sleep 0.1; done
    EP=http://127.0.0.1:$(cat "$tmp/sink.port")
    export S3_ENDPOINT="$EP" S3_REMOTE=s3://spotrain-lat/x
    "$TOOL" mb >/dev/null 2>&1
    for f in "$STEP"/shard-*.bin "$STEP"/manifest.json; do
        "$TOOL" put "ckpt/step-00000001/$(basename "$f")" "$f" >/dev/null 2>&1 || echo "s3lat bench: upload of $f failed"
    done
    new="" old=""
    r=0
    while [ $r -lt "$REPS" ]; do
        new="$new $(secs "$S" ckpt verify s3://spotrain-lat/ckpt/step-00000001 --endpoint "$EP")"
        [ -n "$OLD" ] && old="$old $(secs "$OLD" ckpt verify s3://spotrain-lat/ckpt/step-00000001 --endpoint "$EP")"
        r=$((r + 1))
    done
    kill "$spid" 2>/dev/null
    wait "$spid" 2>/dev/null
    what="${delay} ms"
    [ "$jitter" != 0 ] && what="$what + 0-${jitter} ms"
    [ "$every" != 0 ] && what="$what, every ${every}th ${tail} ms"
    mn=$(echo "$new" | median)
    line=$(printf "latency %-34s this build %s MB/s (%5.2f s)" "$what:" "$(mbs "$mn")" "$mn")
    if [ -n "$OLD" ]; then
        mo=$(echo "$old" | median)
        line="$line | old $(mbs "$mo") MB/s ($(printf %5.2f "$mo") s) | new/old $(awk -v a="$mn" -v b="$mo" 'BEGIN {printf "%.2fx", (a > 0 ? b / a : 0)}')"
    fi
    echo "$line"
done
