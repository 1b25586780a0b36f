#!/bin/sh
# Runs every unit-test binary, every CLI test script and every fuzz corpus
# replay, adds up their "N passed, N failed" lines and ends with the total in
# the same form. M="ckpt s3" runs only the tests whose "module:" tag (a line
# of the file's opening comment) names one of those source folders.
#   sh tests/run.sh           run (BUILD, M and RUN_ONLY from the environment)
#   sh tests/run.sh --check   check M and every test file's tag, run nothing
#   sh tests/run.sh --targets what make test-build builds for M: unit tests, replays
BUILD=${BUILD:-build}
export BUILD
# The modules are the Makefile's source folders: one list, never two.
MODULES=$(sed -n 's/^LIB_DIRS[[:space:]]*:=[[:space:]]*//p' Makefile)

# The words of FILE's "module:" tag, from its first 25 lines.
rs_tag() {
    sed -n '1,25s/^[[:space:]#/*]*module:[[:space:]]*\([^*]*\).*/\1/p' "$1" | head -n 1 | sed 's/[[:space:]]*$//'
}

# The first word of $1 that is not a module; empty when all are.
rs_unknown() {
    for w in $1; do
        case " $MODULES " in *" $w "*) ;; *) echo "$w" && return ;; esac
    done
}

# Succeeds when the tag $1 names a module of M (any tag, without M).
rs_wanted() {
    [ -z "$M" ] && return 0
    for w in $1; do
        case " $M " in *" $w "*) return 0 ;; esac
    done
    return 1
}

# The source a test comes from: the script itself, the unit test or
# emulator check a binary is built from, the fuzz target a corpus feeds.
rs_source() {
    case "$1" in
        *.sh) echo "$1" ;;
        */corpus/*) echo "tests/fuzz/$(basename "$1").c" ;;
        *)
            n=$(basename "$1")
            for s in "tests/unit/$n.c" "tests/emu/$n.cu"; do
                [ -e "$s" ] && echo "$s" && return
            done
            ;;
    esac
}

# Empty when SRC has a valid tag, else the one line that says what is wrong.
rs_tag_error() {
    tag=$(rs_tag "$1")
    if [ -z "$tag" ]; then
        echo "$1 has no 'module:' tag; add one to its opening comment naming the source folders it covers (e.g. 'module: ckpt s3')"
    elif [ -n "$(rs_unknown "$tag")" ]; then
        echo "$1: 'module: $tag': '$(rs_unknown "$tag")' is not a module (the source folders: $MODULES)"
    fi
}

# --check: M, and the tag of every test file that exists, corpora included.
rs_check() {
    u=$(rs_unknown "$M")
    if [ -n "$u" ]; then
        echo "tests/run.sh: M=\"$M\": no module '$u'; the modules are the source folders: $MODULES" >&2
        return 64
    fi
    bad=0
    for s in tests/unit/test_*.c tests/emu/test_*.cu tests/cli/cli_*.sh tests/emu/cli_*.sh tests/fuzz/fuzz_*.c; do
        [ -e "$s" ] || continue
        e=$(rs_tag_error "$s")
        [ -z "$e" ] || { echo "$e" >&2; bad=1; }
    done
    for d in tests/fuzz/corpus/*/; do
        [ -d "$d" ] || continue
        s=$(rs_source "${d%/}")
        [ -e "$s" ] || { echo "$d: a corpus without its target $s" >&2; bad=1; }
    done
    return $bad
}

case "$1" in
    --check)
        rs_check
        exit $?
        ;;
    --targets)
        rs_check || exit $?
        for s in tests/unit/test_*.c; do
            rs_wanted "$(rs_tag "$s")" && echo "$BUILD/tests/$(basename "$s" .c)"
        done
        for d in tests/fuzz/corpus/*; do
            [ -d "$d" ] && rs_wanted "$(rs_tag "$(rs_source "$d")")" && echo "$BUILD/tests/replay/$(basename "$d")"
        done
        exit 0
        ;;
esac
rs_check || exit $?

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
    set -- "$BUILD"/tests/test_* tests/cli/cli_*.sh tests/fuzz/corpus/*
fi
for t in "$@"; do
    [ -e "$t" ] || continue
    case "$t" in *.d | *.ii) continue ;; esac
    src=$(rs_source "$t")
    if [ -z "$src" ]; then
        echo "SKIP $t: no source in tests/unit or tests/emu (a stale binary: remove it)"
        continue
    fi
    rs_wanted "$(rs_tag "$src")" || continue
    echo "== $t"
    case "$t" in
        *.sh) sh "$t" >"$log" 2>&1 ;;
        */corpus/*) "$BUILD/tests/replay/$(basename "$t")" "$t" >"$log" 2>&1 ;;
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
