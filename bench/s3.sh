#!/bin/sh
# S3 client throughput against moto_server on 127.0.0.1 (build/venv): one
# multipart upload and one whole-object ranged GET of S3_BENCH_MB (default
# 256) MiB, with S3_PARALLEL parts of S3_PART_BYTES in flight. moto is one
# Python process that keeps objects in memory and hashes every part, so the
# figure bounds moto's request handling, not the client or a real S3.
BUILD=${BUILD:-build}
VENV=${VENV:-build/venv}
MB=${S3_BENCH_MB:-256}
TOOL=$PWD/$BUILD/tests/s3tool
if [ ! -x "$VENV/bin/moto_server" ] || [ ! -x "$TOOL" ]; then
    echo "bench/s3.sh: skipped: needs $VENV/bin/moto_server (sh tests/deps.sh test) and $TOOL (make test-build)"
    exit 0
fi
tmp=$(mktemp -d /tmp/spotrain-s3bench.XXXXXX)
port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$tmp/moto.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT
i=0
until "$VENV/bin/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/')" 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 100 ] && break; sleep 0.2
done
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY AWS_PROFILE AWS_SESSION_TOKEN
export no_proxy=127.0.0.1 AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
export S3_REMOTE=s3://spotrain-bench/run S3_ENDPOINT=http://127.0.0.1:$port
export S3_PART_BYTES=${S3_PART_BYTES:-16777216} S3_PARALLEL=${S3_PARALLEL:-4}
head -c $((MB * 1048576)) /dev/urandom >"$tmp/big"
"$TOOL" mb 2>/dev/null
echo "s3 bench: ${MB} MiB, parts of $S3_PART_BYTES bytes, $S3_PARALLEL in flight, moto $("$VENV/bin/python" -c 'import moto; print(moto.__version__)') on 127.0.0.1"
"$TOOL" put run/big "$tmp/big" 2>&1 | sed -n 's/^s3tool: /upload:   /p'
"$TOOL" get run/big 0 $((MB * 1048576)) "$tmp/back" 2>&1 | sed -n 's/^s3tool: /download: /p'
cmp -s "$tmp/big" "$tmp/back" && echo "s3 bench: bytes round-trip intact" || echo "s3 bench: BYTES DIFFER"
