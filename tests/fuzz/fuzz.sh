#!/bin/sh
# make fuzz: builds each tests/fuzz/fuzz_*.c given as an argument with libFuzzer,
# ASan and UBSan (clang) into $BUILD, runs it for $FUZZ_SECONDS, fails on any
# crash or leak, and ends with "N passed, N failed". A target names the
# library sources it needs in a "fuzz-sources:" comment line (default:
# util/*.c) and may set "fuzz-max-len:" (default 65536).
# The committed corpus tests/fuzz/corpus/NAME/ seeds each run read-only; new
# inputs go to $BUILD/NAME.corpus, never the repo. A crash's input, once the
# bug is fixed, belongs in tests/fuzz/corpus/NAME/: make test replays every
# file there (tests/fuzz/replay.c) from then on.
BUILD=${BUILD:-build/fuzz}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
CC=${FUZZ_CC:-clang}
pass=0
fail=0
if ! command -v "$CC" >/dev/null 2>&1; then
    echo "SKIP fuzz: $CC not found (libFuzzer needs clang)"
    echo "0 passed, 0 failed"
    exit 0
fi
mkdir -p "$BUILD"
for src in "$@"; do
    name=$(basename "$src" .c)
    srcs=$(sed -n 's/^.*fuzz-sources:[[:space:]]*//p' "$src" | head -n 1)
    [ -n "$srcs" ] || srcs="util/*.c"
    # s3/s3_off.c stands in for s3/s3.c in builds without libcurl only.
    # shellcheck disable=SC2086
    srcs=$(for f in $srcs; do [ "$f" = s3/s3_off.c ] || echo "$f"; done)
    maxlen=$(sed -n 's/^.*fuzz-max-len:[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$src" | head -n 1)
    [ -n "$maxlen" ] || maxlen=65536
    bin="$BUILD/$name"
    # The glob in $srcs must expand here.
    # shellcheck disable=SC2086
    if ! "$CC" -std=c11 -D_GNU_SOURCE -I. -O1 -g -fsanitize=fuzzer,address,undefined \
        -fno-sanitize-recover=undefined -fno-omit-frame-pointer -Wall -Wno-unused-parameter \
        -o "$bin" "$src" $srcs -lzstd -ljson-c -lxxhash -linih -lcurl -lm -lpthread >"$BUILD/$name.build.log" 2>&1; then
        echo "FAIL $name: build failed"
        tail -n 20 "$BUILD/$name.build.log"
        fail=$((fail + 1))
        continue
    fi
    corpus="$BUILD/$name.corpus"
    mkdir -p "$corpus"
    seeds=tests/fuzz/corpus/$name
    [ -d "$seeds" ] || seeds=
    # The first directory is the one libFuzzer writes to.
    # shellcheck disable=SC2086
    if "$bin" -max_total_time="$FUZZ_SECONDS" -max_len="$maxlen" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$BUILD/$name-" "$corpus" $seeds >"$BUILD/$name.log" 2>&1; then
        runs=$(grep -o 'Done [0-9]* runs' "$BUILD/$name.log" | tail -n 1)
        echo "ok   $name ($runs in ${FUZZ_SECONDS}s)"
        pass=$((pass + 1))
    else
        echo "FAIL $name: see $BUILD/$name.log"
        grep -E 'ERROR|SUMMARY|leak' "$BUILD/$name.log" | head -n 5
        for a in "$BUILD/$name"-crash-* "$BUILD/$name"-leak-* "$BUILD/$name"-timeout-* "$BUILD/$name"-oom-*; do
            [ -e "$a" ] || continue
            echo "     input: $a; reproduce: $bin $a"
            echo "     once fixed: cp $a tests/fuzz/corpus/$name/ (make test replays it from then on)"
        done
        fail=$((fail + 1))
    fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
