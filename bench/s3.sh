#!/bin/sh
# Remote checkpoint throughput, and whether the network or our code limits
# it. Two servers on 127.0.0.1: moto_server (build/venv; one Python process
# that reads a whole object for every ranged GET, so it bounds everything
# sent to it) and bench/s3sink.c (in memory, C, one thread per connection).
#  1. The same checkpoint files through spotrain's client and through boto3's
#     transfer manager to each server (bench/s3ab.py): MB/s side by side and
#     the ratio. spotrain at or above boto3 on moto = the server is the limit.
#  2. CPU seconds per GB of our process against the sink: the code's ceiling
#     per busy core, next to what a 10-25 Gbit/s cloud NIC carries.
#  3. The trainer end to end from its events ledger: upload of a checkpoint
#     by 1 rank and 2 ranks (mpirun), resume download by 1 and 2 ranks.
# Figures come from one run (the machine is shared and noisy: compare the
# ratios, not the absolute MB/s with another run's).
BUILD=${BUILD:-build}
VENV=${VENV:-build/venv}
TOOL=$PWD/$BUILD/tests/s3tool
SINK=$PWD/$BUILD/bench/s3sink
S=$PWD/$BUILD/spotrain
PYB=$PWD/$VENV/bin/python
for need in "$VENV/bin/moto_server" "$TOOL" "$SINK" "$S"; do
    if [ ! -x "$need" ]; then
        echo "bench/s3.sh: skipped: needs $need (sh tests/deps.sh test; make bench builds the rest)"
        exit 0
    fi
done
tmp=$(mktemp -d /tmp/spotrain-s3bench.XXXXXX)
mport=$("$PYB" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$mport" >"$tmp/moto.log" 2>&1 &
mpid=$!
"$SINK" >"$tmp/sink.port" 2>"$tmp/sink.log" &
spid=$!
trap 'kill $mpid $spid 2>/dev/null; rm -rf "$tmp"' EXIT
i=0
until "$PYB" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$mport/')" 2>/dev/null && [ -s "$tmp/sink.port" ]; do
    i=$((i + 1)); [ $i -gt 100 ] && break; sleep 0.2
done
MOTO=http://127.0.0.1:$mport
SINKURL=http://127.0.0.1:$(cat "$tmp/sink.port")
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3
export no_proxy=127.0.0.1 AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1
export S3_PART_BYTES=${S3_PART_BYTES:-16777216} S3_PARALLEL=${S3_PARALLEL:-4}
for e in "$MOTO" "$SINKURL"; do
    S3_ENDPOINT=$e S3_REMOTE=s3://spotrain-bench/x "$TOOL" mb 2>/dev/null || echo "s3 bench: cannot create the bucket at $e"
done

# 1 and 2: a checkpoint of S3_BENCH_LAYERS (default 4) layers at dim 512,
# stored without compression (~150 MB: the bytes a shard moves, with no
# zstd decoding in the reader's CPU figure).
RF="--set model.dim=512 --set model.n_layers=${S3_BENCH_LAYERS:-4} --set model.n_heads=8 --set model.n_kv_heads=8 --set model.ffn_dim=1376 --set model.seq_len=64 --set train.global_batch=2 --set train.micro_batch=1 --set train.max_steps=1 --set train.val_every=0 --set checkpoint.interval_steps=1"
# shellcheck disable=SC2086
if ! (cd "$tmp" && "$S" train /dev/null $RF --set checkpoint.codec=none --set train.run_dir=raw --quiet >raw.log 2>&1); then
    echo "s3 bench: the source run failed: $(tail -n 1 "$tmp/raw.log")"
    exit 0
fi
STEP=$tmp/raw/ckpt/step-00000001
CHUNK=$("$S" ckpt inspect "$STEP" --json | "$PYB" -c 'import json,sys; print(json.load(sys.stdin)["chunk_bytes"])')
echo "s3 bench: $(du -cb "$STEP"/* | tail -n 1 | awk '{printf "%.1f MB", $1 / 1e6}') checkpoint (codec none, 1 rank);" \
    "spotrain parts of $((S3_PART_BYTES / 1048576)) MiB x $S3_PARALLEL in flight, resume reader $(awk '$1 == "#define" && $2 == "CKPT_REMOTE_GETS" {print $3}' ckpt/ckpt.h) GETs in flight;" \
    "boto3 $("$PYB" -c 'import boto3; print(boto3.__version__)') TransferConfig defaults (8 MiB x 10); moto $("$PYB" -c 'import moto; print(moto.__version__)')"
"$PYB" bench/s3ab.py moto "$MOTO" spotrain-bench "$STEP" "$TOOL" "$S" "${S3_BENCH_REPS_MOTO:-1}" "$tmp/moto.json" "$CHUNK" ||
    echo "s3 bench: the moto A/B failed"
"$PYB" bench/s3ab.py sink "$SINKURL" spotrain-bench "$STEP" "$TOOL" "$S" "${S3_BENCH_REPS_SINK:-3}" "$tmp/sink.json" "$CHUNK" ||
    echo "s3 bench: the sink A/B failed"
"$PYB" - "$tmp/moto.json" "$tmp/sink.json" "$S3_PARALLEL" <<'PY'
import json, sys
try:
    m, s = (json.load(open(p)) for p in sys.argv[1:3])
except (OSError, ValueError):
    sys.exit(0)
par = int(sys.argv[3])
for sp, b3, name in (("sp_up", "b3_up", "upload"), ("sp_down", "b3_down", "download"),
                     ("sp_down", "b3_same", "download, same GET size")):
    r = m[sp]["mb_s"] / m[b3]["mb_s"]
    print("verdict  %-23s on moto spotrain/boto3 = %.2fx: %s" % (name, r, "level with (within 5%) or above the reference client: the server is the limit"
          if r >= 0.95 else "within 20% of the reference client" if r >= 0.8 else "below the reference client on the same server"))
print("note     moto reads the whole object for every ranged GET, so its time grows with the number of GETs: the reader"
      " sends one per stored chunk, boto3 one per 8 MiB part by default")
print("ceiling  CPU-bound rate of our process against the sink (bytes / its CPU seconds), per busy core:")
for k, what in (("sp_up", "upload (s3_upload_fd: read file, send parts)"),
                ("sp_get", "download transport (one ranged GET into memory)"),
                ("sp_down", "download + verify (resume reader: ranged GETs, xxh3 per chunk)")):
    g = 1 / s[k]["cpu_s_per_gb"]
    print("  %-64s %5.2f GB/s = %5.1f Gbit/s per core" % (what, g, 8 * g))
up = 1 / s["sp_up"]["cpu_s_per_gb"]
print("  a 10-25 Gbit/s node NIC carries 1.25-3.1 GB/s: %.1f-%.1f busy cores for our upload (%d part threads can run in"
      " parallel); loopback HTTP, no TLS (HTTPS adds the cipher's cost), not a cloud measurement"
      % (1.25 / up, 3.125 / up, par))
PY

# 3: the trainer's own upload (1 rank, and 2 under mpirun) and resume
# download (1 and 2 ranks) against each server, from the events ledger:
# per rank its own bytes over its own seconds; total: every rank's bytes over
# the slowest rank's seconds (upload: until the manifest landed). Resume
# seconds cover the whole restore: GETs, checksums, zstd decoding, loading.
M="--set model.dim=256 --set model.n_layers=4 --set model.n_heads=4 --set model.n_kv_heads=2 --set model.ffn_dim=1024"
HAVE_MPI=0
command -v mpirun >/dev/null 2>&1 && "$S" --version | grep -q "mpi: yes" && HAVE_MPI=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN="mpirun -np 2 --oversubscribe -x AWS_ACCESS_KEY_ID -x AWS_SECRET_ACCESS_KEY -x no_proxy"
ledger() {
    "$PYB" - "$1" "$2" "$3" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if '"event":"%s"' % sys.argv[2] in l]
per = ", ".join("rank %d %.1f MB/s" % (r["rank"], r["mb_s"]) for r in recs if isinstance(r.get("rank"), int))
tot = [r for r in recs if r.get("rank") == "all" or ("ranks" in r and not isinstance(r.get("rank"), int))]
if tot:
    t = tot[-1]
    print("  %s: total %7.1f MB/s (%.1f MB in %.2f s); %s" % (sys.argv[3], t["mb_s"], t["bytes"] / 1e6, t["seconds"], per))
else:
    print("  %s: no %s record (see the run's log)" % (sys.argv[3], sys.argv[2]))
PY
}
# shellcheck disable=SC2086
train() {   # NAME ENDPOINT [launcher...]
    run=$tmp/$1 ep=$2
    shift 2
    "$@" "$S" train /dev/null $M --set model.seq_len=16 --set train.global_batch=4 --set train.micro_batch=2 \
        --set train.val_every=0 --set train.max_steps=2 --set checkpoint.interval_steps=0 --set checkpoint.codec=none \
        --set train.run_dir="$run" --set checkpoint.remote="s3://spotrain-bench/$(basename "$run")" \
        --set checkpoint.endpoint="$ep" --set checkpoint.remote_part_mib=$((S3_PART_BYTES / 1048576)) \
        --set checkpoint.remote_parallel="$S3_PARALLEL" --quiet >"$run.log" 2>&1 ||
        { echo "  $1: train run failed: $(tail -n 1 "$run.log")"; return; }
}
# shellcheck disable=SC2086
if (cd "$tmp" && "$S" train /dev/null $RF --set train.run_dir=src --quiet >train.log 2>&1); then
    echo "trainer (events ledger): upload of a dim-256 4-layer checkpoint (codec none, ~47 MB) and resume download of a $("$S" ckpt inspect "$tmp/src/ckpt/step-00000001" --json | "$PYB" -c 'import json,sys; d=json.load(sys.stdin); print("%.1f MB (zstd, %d-byte chunks)" % (d["stored_bytes"]/1e6, d["chunk_bytes"]))') checkpoint"
    for srv in moto sink; do
        ep=$MOTO
        [ $srv = sink ] && ep=$SINKURL
        for f in "$tmp"/src/ckpt/step-00000001/shard-*.bin "$tmp"/src/ckpt/step-00000001/manifest.json; do
            S3_ENDPOINT=$ep S3_REMOTE=s3://spotrain-bench/x "$TOOL" put "ckptrun/step-00000001/$(basename "$f")" "$f" 2>/dev/null ||
                echo "s3 bench: upload of $f failed"
        done
        train up1-$srv "$ep" env && ledger "$tmp/up1-$srv/events.jsonl" upload "$srv upload   1 rank "
        [ $HAVE_MPI = 1 ] && train up2-$srv "$ep" $MPIRUN && ledger "$tmp/up2-$srv/events.jsonl" upload "$srv upload   2 ranks"
        (cd "$tmp" && "$S" resume /dev/null $RF --set train.run_dir=r1-$srv --set checkpoint.remote=s3://spotrain-bench/ckptrun \
            --set checkpoint.endpoint="$ep" --quiet >r1-$srv.log 2>&1)
        ledger "$tmp/r1-$srv/events.jsonl" download "$srv download 1 rank "
        if [ $HAVE_MPI = 1 ]; then
            (cd "$tmp" && $MPIRUN "$S" resume /dev/null $RF --set train.run_dir=r2-$srv \
                --set checkpoint.remote=s3://spotrain-bench/ckptrun --set checkpoint.endpoint="$ep" --quiet >r2-$srv.log 2>&1)
            ledger "$tmp/r2-$srv/events.jsonl" download "$srv download 2 ranks"
        fi
    done
else
    echo "s3 bench: trainer runs skipped (the source run failed: $(tail -n 1 "$tmp/train.log"))"
fi
