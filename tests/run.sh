#!/bin/sh
# Runs every unit-test binary and every CLI test script, adds up their
# "N passed, N failed" lines and ends with the total in the same form.
BUILD=${BUILD:-build}
export BUILD
# Sanitizer builds: Open MPI's own leaks are not ours; fail on the first UB.
LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0"
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# Full unwinding so suppressions can see the Open MPI frames.
ASAN_OPTIONS="fast_unwind_on_malloc=0"
export ASAN_OPTIONS
export LSAN_OPTIONS UBSAN_OPTIONS
# The CPU backend runs OpenBLAS single-threaded inside its own OpenMP pool
# anyway; without OpenBLAS's idle start-up pool, LeakSanitizer's exit check
# cannot race a thread that is still starting.
case "$BUILD" in */san*) OPENBLAS_NUM_THREADS=1; export OPENBLAS_NUM_THREADS ;; esac
pass=0
fail=0
log=$(mktemp)
# RUN_ONLY: these programs instead of every test (make test-emu).
if [ -n "$RUN_ONLY" ]; then
    set -- $RUN_ONLY
else
    set -- "$BUILD"/tests/test_* tests/cli/cli_*.sh
fi
for t in "$@"; do
    [ -e "$t" ] || continue
    case "$t" in *.d) continue ;; esac
    echo "== $t"
    case "$t" in
        *.sh) sh "$t" >"$log" 2>&1 ;;
        *) "$t" >"$log" 2>&1 ;;
    esac
    rc=$?
    grep -E '^(ok|FAIL|SKIP) ' "$log"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    if [ -z "$line" ]; then
        echo "FAIL $t: exited $rc without a summary line; its output:"
        tail -n 30 "$log"
        fail=$((fail + 1))
        continue
    fi
    p=$(echo "$line" | sed 's/ passed.*//')
    f=$(echo "$line" | sed 's/.*passed, \([0-9]*\) failed.*/\1/')
    if [ "$f" -gt 0 ] || [ "$rc" -ne 0 ]; then
        grep -v -E '^(ok|SKIP) ' "$log" | tail -n 40
    fi
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    pass=$((pass + p))
    fail=$((fail + f))
done
rm -f "$log"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
