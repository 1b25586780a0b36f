#!/bin/bash
# `make device-rehearsal`: tests/device_check.sh run with DC_EMU=1 from a
# copy of the tree as the device tool carries it (tracked and untracked,
# not ignored, files plus build/device.tar.xz, here a bundle of the CUDA
# emulator's binaries built like the device ones, MPI=0), so the unpack,
# the library search, every GB=cuda section, $OUT and the summary run for
# real. Proves the script and the CUDA code paths on the emulator, nothing
# about a GPU. Usage: tests/device_rehearsal.sh EMU_BUILD_DIR
# ok and bad return 0, so "check && ok || bad" is an if-then-else.
# shellcheck disable=SC2015
cd "$(dirname "$0")/.." || exit 1
E=${1:-build/emu-device}
PASS=0
FAILS=0
ok() { PASS=$((PASS + 1)); echo "ok   $1"; }
bad() { FAILS=$((FAILS + 1)); echo "FAIL $1"; }
D=$(mktemp -d "${TMPDIR:-/tmp}/spotrain-rehearsal.XXXXXX")
trap 'rm -rf "$D"' EXIT

for f in spotrain tests/test_cuda_kernels tests/test_cuda_parity emu-lib/libcublasLt.so.13 emu-lib/libnccl.so.2; do
    [ -e "$E/$f" ] || { echo "device_rehearsal: $E/$f missing (make device-rehearsal builds it)" >&2; exit 1; }
done
# The tree as the device tool copies it; no build/ of ours goes along.
mkdir -p "$D/tree/build" "$D/stage/tests" "$D/out"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z -co --exclude-standard | tar --null -T - --ignore-failed-read -cf - 2>/dev/null
else   # an unpacked source tarball: everything but build outputs
    tar --exclude=./build --exclude=./.git -cf - .
fi | tar -C "$D/tree" -xf - || { echo "device_rehearsal: could not copy the tree" >&2; exit 1; }
# The bundle, laid out as `make device-bundle` lays it out; xz -0 because
# speed matters here and the unpack does not care about the level.
cp "$E/spotrain" "$D/stage/" && cp "$E/tests/test_cuda_kernels" "$E/tests/test_cuda_parity" "$D/stage/tests/" &&
    tar -C "$D/stage" -cf - spotrain tests/test_cuda_kernels tests/test_cuda_parity | xz -0 -T2 >"$D/tree/build/device.tar.xz" ||
    { echo "device_rehearsal: could not pack the bundle" >&2; exit 1; }
rm -rf "$D/stage"

t0=$(date +%s)
# TMPDIR: the script's work dir goes with ours.
TMPDIR="$D" OUT="$D/out" DC_EMU=1 DC_EMU_LIB="$PWD/$E/emu-lib" OMP_WAIT_POLICY=passive bash "$D/tree/tests/device_check.sh" \
    >"$D/stdout.txt" 2>"$D/stderr.txt"
rc=$?
cat "$D/stdout.txt"
echo "(device_check.sh: exit $rc after $(( $(date +%s) - t0 )) s)"

[ $rc -eq 0 ] && ok "device_check.sh DC_EMU=1 exits 0" ||
    { bad "device_check.sh DC_EMU=1 exits $rc (want 0); its stderr ends:"; tail -n 25 "$D/stderr.txt"; }
[ -x "$D/tree/build/device/spotrain" ] && [ -x "$D/tree/build/device/tests/test_cuda_parity" ] &&
    ok "the script unpacked build/device.tar.xz in a tree without build/device" ||
    bad "the script did not unpack build/device.tar.xz"
# Found only in the site-packages tree, opened by soname, and the emulated
# ones (this machine's loader cache may hold real CUDA libraries, which
# report other versions than the emulator's, read from its default mode).
want_lt=$("$E/spotrain" --version 2>/dev/null | sed -n 's/^cublasLt: \([0-9]*\) .*/\1/p')
want_nccl=$("$E/spotrain" --version 2>/dev/null | sed -n 's/^nccl: \([0-9.]*\) .*/\1/p')
grep -q "cuBLASLt dir: $D/spotrain-dc\.[^/]*/site/nvidia/cublas/lib; NCCL dir: $D/spotrain-dc\.[^/]*/site/nvidia/nccl/lib$" \
    "$D/stdout.txt" && grep -q "^  (rehearsal, the emulator's) cublasLt: $want_lt (libcublasLt.so.13)$" "$D/stdout.txt" &&
    grep -q "^  (rehearsal, the emulator's) nccl: $want_nccl (libnccl.so.2)$" "$D/stdout.txt" &&
    ok "the emulated cuBLASLt $want_lt and NCCL $want_nccl found in the python site-packages tree, opened by soname" ||
    bad "library search: $(grep -m1 'cuBLASLt dir' "$D/stdout.txt"); $(grep -m2 '  cublasLt:\|  nccl:' "$D/stdout.txt" | tr '\n' ' ')"
# Each section said something: none may be missing from the summary.
for want in "^ok   kernels: " "^ok   parity: " "^ok   determinism" "^ok   SIGTERM" "^ok   cross-backend" \
    "^ok   fp16 dynamic loss scaling" "^ok   fp16 loss scaling: resumed" "^ok   manifest: cuda fp16 dynamic" \
    "^ok   fp16 checkpoint resumed in bf16" "^ok   fp16 train.loss_scale = 128" "^ok   NCCL path at world 1" \
    "^ok   ZeRO 2 and 3 at world 1 through NCCL: .*buckets reduced on the comm stream: zero 2 [1-9][0-9]*, zero 3 [1-9]" \
    "^ok   selftest comm on cuda" "^ok   recompute layers: 30 steps" "^ok   recompute device memory vs plan" \
    "^SKIP compute-sanitizer (rehearsal" "^REHEARSAL, not a measurement: bench" \
    "pytorch .* eager" "^  profile, kernel classes per step over [0-9]* steps: GEMM .*; other " \
    "^ok   bench first loss " "^ok   device memory allocated since the context .* vs the --dry-run plan .* within 10%" \
    "^ok   production shapes (a small stand-in for 2 layers, dim 4096" \
    "^target  MFU >= 45% of spec peak .*: measured [0-9.]*% (rehearsal: no verdict)" \
    "^target  tokens/s >= 1.3x PyTorch eager: measured [0-9.]*x .*(rehearsal: no verdict)" \
    "^target  a 16K-context step .*: measured ran (2 steps" "^not testable on one GPU: NCCL between GPUs"; do
    grep -q -- "$want" "$D/stdout.txt" && ok "summary: /$want/" || bad "summary lacks /$want/"
done
grep -q "^(finished in [0-9]*s; exit $rc)" "$D/out/summary.txt" 2>/dev/null &&
    ok "\$OUT/summary.txt written with the exit" || bad "\$OUT/summary.txt: $(tail -n 1 "$D/out/summary.txt" 2>&1)"
n=$(tar -tzf "$D/out/logs.tar.gz" 2>/dev/null | grep -c '\.err$')
[ "${n:-0}" -ge 5 ] && ok "\$OUT/logs.tar.gz holds $n .err logs" || bad "\$OUT/logs.tar.gz holds ${n:-no} .err logs"
echo "$PASS passed, $FAILS failed"
[ $FAILS -eq 0 ]
