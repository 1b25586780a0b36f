#!/bin/sh
# Checkpoint costs: trains a small model for BENCH_CKPT_STEPS steps (a real
# trained AdamW state), then measures compression per array and codec, the
# submit stall against memcpy, and background write throughput against a raw
# sequential write of the same bytes (in process, before each save, and dd
# conv=fdatasync from /dev/zero at the end) on the same disk.
BUILD=${BUILD:-build}
DIR=${BENCH_DIR:-/tmp}/spotrain-bench-ckpt.$$
STEPS=${BENCH_CKPT_STEPS:-200}
S=$PWD/$BUILD/spotrain
mkdir -p "$DIR" || exit 1
trap 'rm -rf "$DIR"' EXIT
make -s "$BUILD/libspotrain.a" "$BUILD/spotrain" || exit 1
# shellcheck disable=SC2046
cc -std=c11 -D_GNU_SOURCE -I. -O2 -o "$DIR/bench_ckpt" bench/bench_ckpt.c "$BUILD/libspotrain.a" -fopenmp \
    -lzstd -ljson-c -lxxhash -linih -lopenblas -lm -lpthread \
    $(command -v mpicc >/dev/null 2>&1 && mpicc -showme:link) || exit 1
echo "training $STEPS steps of a 0.5M-parameter model for a trained state..."
(cd "$DIR" && "$S" train /dev/null --set model.dim=128 --set model.n_layers=2 --set model.n_heads=4 \
    --set model.n_kv_heads=4 --set model.ffn_dim=384 --set model.seq_len=64 --set train.global_batch=8 \
    --set train.micro_batch=8 --set train.val_every=0 --set train.max_steps="$STEPS" \
    --set checkpoint.interval_steps=0 --set checkpoint.codec=none --set train.run_dir=run --quiet) || exit 1
for d in "$DIR"/run/ckpt/step-*; do state=$d; done
"$DIR/bench_ckpt" "$DIR/w" "$state" || exit 1
echo "synthetic 45M-parameter state (larger, to measure the disk):"
"$DIR/bench_ckpt" "$DIR/w" || exit 1
mb=518
dd if=/dev/zero of="$DIR/dd.bin" bs=1M count=$mb conv=fdatasync 2>&1 | tail -n 1 | sed 's/^/raw disk (dd 518 MiB, conv=fdatasync): /'
