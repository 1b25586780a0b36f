#!/bin/sh
# The emulator's checks and every kernel check again with blocks, warps and
# lanes run in descending order (SPOTRAIN_EMU_ORDER=reverse): a kernel that
# relies on the order threads happen to run in (a missing __syncthreads, a
# block reading another block's output) fails in one of the two orders.
# module: cuda
BUILD=${BUILD:-build/emu}
pass=0
fail=0
for t in "$BUILD/tests/test_emu" "$BUILD/tests/test_cuda_kernels"; do
    out=$(SPOTRAIN_EMU_ORDER=reverse "$t" 2>&1)
    rc=$?
    line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    p=$(echo "$line" | sed 's/ passed.*//')
    f=$(echo "$line" | sed 's/.*passed, \([0-9]*\) failed.*/\1/')
    if [ -z "$line" ] || [ "$rc" -ne 0 ] || [ "$f" -ne 0 ]; then
        echo "FAIL ${t##*/} in reverse order (exit $rc)"
        echo "$out" | grep -v '^ok ' | tail -n 20 | sed 's/^/    /'
        fail=$((fail + 1))
    else
        echo "ok   ${t##*/} in reverse order: $p passed"
        pass=$((pass + 1))
    fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
