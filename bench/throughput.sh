#!/bin/sh
# Training-step throughput, spotrain's CPU backend against PyTorch eager, on
# the same two models under the same conditions (same machine, same moment,
# OpenBLAS kernel chosen by CPU detection for both). Reports; never fails on
# a target. BENCH_SCALE multiplies the timed steps.
BUILD=${BUILD:-build}
SCALE=${BENCH_SCALE:-1}
BIN="$BUILD/bench/bench_step"
PY=${SPOTRAIN_PYTHON:-/usr/bin/python3}
if [ ! -x "$BIN" ]; then
    echo "throughput: $BIN is missing; run make bench" >&2
    exit 66
fi
# OPENBLAS_CORETYPE pins slower kernels on some machines; both sides run
# with autodetection so the comparison is like for like.
RUN="env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
for m in A B; do
    # The header lines (kernel, ceiling, torch version) once, before model A.
    if [ "$m" = A ]; then keep="cat"; else keep="grep -v -e OpenBLAS.core -e ^pytorch...torch"; fi
    $RUN "$BIN" --model "$m" --scale "$SCALE" | $keep
    if $RUN "$PY" -c 'import torch' >/dev/null 2>&1; then
        $RUN "$PY" bench/bench_torch.py "$SCALE" "$m" | $keep
    else
        echo "pytorch   skipped: $PY cannot import torch (install python3-torch)"
    fi
done
