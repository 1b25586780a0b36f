#!/bin/sh
# S3 client throughput against moto_server on 127.0.0.1 (build/venv): one
# multipart upload and one whole-object ranged GET of S3_BENCH_MB (default
# 256) MiB, with S3_PARALLEL parts of S3_PART_BYTES in flight. moto is one
# Python process that keeps objects in memory and hashes every part, so the
# figure bounds moto's request handling, not the client or a real S3.
# Then the trainer's own upload of a ~47 MiB checkpoint (1 rank, and 2 under
# mpirun), from its events ledger: MB/s per rank and for the checkpoint.
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

# The trainer's own upload: a run with checkpoint.remote to the same moto,
# one rank and (with mpirun) two; the ledger's "upload" records give each
# rank's MB/s and the whole checkpoint's (until its manifest landed).
S=$PWD/$BUILD/spotrain
M=${S3_BENCH_MODEL:-"--set model.dim=256 --set model.n_layers=4 --set model.n_heads=4 --set model.n_kv_heads=2 --set model.ffn_dim=1024"}
# shellcheck disable=SC2086
train() {
    run=$tmp/$1
    shift
    "$@" "$S" train /dev/null $M --set model.seq_len=16 --set train.global_batch=4 --set train.micro_batch=2 \
        --set train.val_every=0 --set train.max_steps=2 --set checkpoint.interval_steps=0 --set checkpoint.codec=none \
        --set train.run_dir="$run" --set checkpoint.remote="s3://spotrain-bench/$(basename "$run")" \
        --set checkpoint.endpoint="http://127.0.0.1:$port" --set checkpoint.remote_part_mib=$((S3_PART_BYTES / 1048576)) \
        --set checkpoint.remote_parallel="$S3_PARALLEL" --quiet || { echo "s3 bench: train run failed"; return; }
    /usr/bin/python3 - "$run/events.jsonl" <<'PY'
import json, sys
for r in map(json.loads, open(sys.argv[1])):
    if r.get("event") == "upload":
        who = "total (%d ranks)" % r["ranks"] if r["rank"] == "all" else "rank %d" % r["rank"]
        print("trainer upload %-16s %7.1f MiB in %6.2f s = %7.1f MB/s (%s)" % (who, r["bytes"] / 1048576, r["seconds"], r["mb_s"], r["status"]))
PY
}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
train one env
if command -v mpirun >/dev/null 2>&1 && "$S" --version | grep -q "mpi: yes"; then
    train two mpirun -np 2 --oversubscribe -x AWS_ACCESS_KEY_ID -x AWS_SECRET_ACCESS_KEY -x no_proxy
fi

# Resume downloads: a checkpoint of S3_BENCH_LAYERS (default 4) layers at
# dim 512 (~150 MB raw) uploaded as spotrain lays it out, then resumed on an
# empty run_dir by 1 rank and, with MPI, 2 ranks; MB/s from each run's
# "download" ledger records (per rank: its own bytes over its own seconds;
# total: every rank's bytes over the slowest rank's seconds). Seconds cover
# the whole restore: GETs, checksums, decoding, loading. moto answers each
# ranged GET by reading the whole object (a 100-byte range of a 130 MB
# object takes ~0.2 s here), so these figures bound moto, not the reader.
S=$PWD/$BUILD/spotrain
PYB=$PWD/$VENV/bin/python
RF="--set model.dim=512 --set model.n_layers=${S3_BENCH_LAYERS:-4} --set model.n_heads=8 --set model.n_kv_heads=8 --set model.ffn_dim=1376 --set model.seq_len=64 --set train.global_batch=2 --set train.micro_batch=1 --set train.max_steps=1 --set train.val_every=0 --set checkpoint.interval_steps=1"
if [ -x "$S" ] && (cd "$tmp" && "$S" train /dev/null $RF --set train.run_dir=src --quiet >train.log 2>&1); then
    for f in "$tmp"/src/ckpt/step-00000001/shard-*.bin "$tmp"/src/ckpt/step-00000001/manifest.json; do
        "$TOOL" put "ckptrun/step-00000001/$(basename "$f")" "$f" 2>/dev/null || echo "s3 bench: upload of $f failed"
    done
    echo "resume download: $("$S" ckpt inspect "$tmp/src/ckpt/step-00000001" --json | "$VENV/bin/python" -c 'import json,sys; d=json.load(sys.stdin); print("%.1f MB stored in %d-byte chunks" % (d["stored_bytes"]/1e6, d["chunk_bytes"]))'), $("$S" --version | head -n 1)"
    report() {
        "$PYB" - "$1" "$2" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if '"event":"download"' in l]
per = ", ".join("rank %d %.1f MB/s (%.1f MB in %.2f s)" % (r["rank"], r["mb_s"], r["bytes"] / 1e6, r["seconds"])
                for r in recs if "rank" in r)
tot = [r for r in recs if "ranks" in r]
if tot:
    t = tot[-1]
    print("  %s: total %.1f MB/s (%.1f MB in %.2f s); %s" % (sys.argv[2], t["mb_s"], t["bytes"] / 1e6, t["seconds"], per))
else:
    print("  %s: no download record (see the run's log)" % sys.argv[2])
PY
    }
    cd "$tmp" || exit 0
    "$S" resume /dev/null $RF --set train.run_dir=r1 --set checkpoint.remote=s3://spotrain-bench/ckptrun \
        --set checkpoint.endpoint="$S3_ENDPOINT" --quiet >r1.log 2>&1
    report r1/events.jsonl "1 rank "
    if command -v mpirun >/dev/null 2>&1 && "$S" --version | grep -q "mpi: yes"; then
        OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np 2 --oversubscribe "$S" resume /dev/null $RF \
            --set train.run_dir=r2 --set checkpoint.remote=s3://spotrain-bench/ckptrun \
            --set checkpoint.endpoint="$S3_ENDPOINT" --quiet >r2.log 2>&1
        report r2/events.jsonl "2 ranks"
    fi
else
    echo "s3 bench: resume download skipped (no $S, or the source run failed)"
fi
