#!/bin/sh
# Training-step throughput, spotrain's CPU backend against PyTorch eager, on
# the same two models under the same conditions (same machine, same moment,
# kernels chosen by CPU detection for both): spotrain with every
# matrix-product library that loads (train.cpu_gemm) on 1 and 2 threads,
# PyTorch on 1 and 2 threads; then each side's best, the issue's targets
# against what was measured, and the per-part profile of spotrain's best.
# Reports; never fails on a target. BENCH_SCALE multiplies the timed steps;
# BENCH_REPEAT runs each setting of both sides that many times and keeps the best
# (a shared machine's neighbours only ever slow a run down); BENCH_MODELS
# picks the models ("A B"). The 1-thread runs of both sides are pinned to
# one CPU with taskset where it works, and PyTorch runs each thread count in
# a fresh process with its thread variables set to it (bench_torch.py):
# its "1 thread" is then one core, which torch.set_num_threads(1) alone is
# not (the "old style" line shows that figure and its cores busy).
# BENCH_PIN=0 leaves them unpinned: on a machine shared with other jobs a
# pinned run cannot move off a busy CPU, so its wall time is luck.
BUILD=${BUILD:-build}
SCALE=${BENCH_SCALE:-1}
REPEAT=${BENCH_REPEAT:-1}
BIN="$BUILD/bench/bench_step"
PY=${SPOTRAIN_PYTHON:-/usr/bin/python3}
if [ ! -x "$BIN" ]; then
    echo "throughput: $BIN is missing; run make bench" >&2
    exit 66
fi
# OPENBLAS_CORETYPE pins slower kernels on some machines; both sides run
# with autodetection so the comparison is like for like.
RUN="env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE -u DNNL_MAX_CPU_ISA"
TMP=$(mktemp -d) || exit 70
trap 'rm -rf "$TMP"' EXIT
# taskset -c CPU: the first CPU this shell may run on (BENCH_PIN=0: none).
PIN1=""
unset BENCH_PIN1
cpu0=$(taskset -pc $$ 2>/dev/null | sed -n 's/.*: *\([0-9]*\).*/\1/p')
if [ "${BENCH_PIN:-1}" = 1 ] && [ -n "$cpu0" ] && taskset -c "$cpu0" true 2>/dev/null; then
    PIN1="taskset -c $cpu0"
    export BENCH_PIN1=1
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
threads="1"
[ "$(nproc)" -ge 2 ] && threads="1 2"
libs=""
for lib in openblas onednn blis; do
    if $RUN "$BIN" --gemm "$lib" --model none >/dev/null 2>"$TMP/err"; then libs="$libs $lib"
    else echo "spotrain  cpu_gemm $lib skipped: $(cat "$TMP/err")"; fi
done
tps() { sed -n 's/.*: *\([0-9][0-9]*\) tokens\/s.*/\1/p' "$1" | head -n 1; }
# tokens per CPU-second: what a loaded machine distorts least.
tcpu() { sed -n 's/.* \([0-9][0-9]*\) tokens\/cpu-s.*/\1/p' "$1" | head -n 1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
$RUN "$BIN" --model none | head -n 1
for m in ${BENCH_MODELS:-A B}; do
    best=0 best_t="" best_lib="" eff=0 eff_what=""
    for t in $threads; do
        eval "best_$t=0 cpus_$t=0"
        pin=""
        [ "$t" = 1 ] && pin=$PIN1
        for lib in $libs; do
            r=1
            while [ "$r" -le "$REPEAT" ]; do
                $RUN $pin "$BIN" --model "$m" --scale "$SCALE" --threads "$t" --gemm "$lib" >"$TMP/run" 2>&1
                grep "^spotrain  model" "$TMP/run"
                v=$(tps "$TMP/run")
                [ -n "$v" ] || v=0
                cur=0
                eval "cur=\$best_$t"
                [ "$v" -gt "$cur" ] && eval "best_$t=$v"
                if [ "$v" -gt "$best" ]; then best=$v best_t=$t best_lib=$lib; fi
                c=$(tcpu "$TMP/run")
                [ -n "$c" ] && eval "[ \"$c\" -gt \"\$cpus_$t\" ] && cpus_$t=$c"
                [ -n "$c" ] && [ "$c" -gt "$eff" ] && eff=$c eff_what="$lib, $t thread(s)"
                r=$((r + 1))
            done
        done
    done
    torch_best=0 torch_t=""
    if $RUN "$PY" -c 'import torch' >/dev/null 2>&1; then
        $RUN "$PY" bench/bench_torch.py "$SCALE" "$m" >"$TMP/torch" 2>&1
        cat "$TMP/torch"
        torch_best=$(sed -n 's/^pytorch   model .*: *\([0-9][0-9]*\) tokens\/s.*best with \([0-9]*\) thread.*/\1/p' "$TMP/torch")
        torch_t=$(sed -n 's/^pytorch   model .*best with \([0-9]*\) thread.*/\1/p' "$TMP/torch")
    else
        echo "pytorch   skipped: $PY cannot import torch (install python3-torch)"
    fi
    echo "model $m: spotrain best $best tok/s ($best_lib, $best_t thread(s)); pytorch best ${torch_best:-0} tok/s (${torch_t:-?} thread(s))"
    if [ "${torch_best:-0}" -gt 0 ] && [ "$best" -gt 0 ]; then
        echo "  target >= 1.50x best vs best:      measured $(ratio "$best" "$torch_best")x"
        echo "  target >= 1.00x per thread (bests): measured $(ratio "$(ratio "$best" "$best_t")" "$(ratio "$torch_best" "$torch_t")")x"
        teff=$(sed -n 's/^pytorch   model .* \([0-9][0-9]*\) tokens\/cpu-s.*/\1/p' "$TMP/torch" | sort -n | tail -n 1)
        echo "  tokens per CPU-second (best of each side): spotrain $eff ($eff_what) vs pytorch $teff: $(ratio "$eff" "$teff")x"
        for t in $threads; do
            s=0 sc=0
            eval "s=\$best_$t sc=\$cpus_$t"
            p=$(sed -n "s/^pytorch   model $m at $t threads*: *\([0-9][0-9]*\) tokens\/s.*/\1/p" "$TMP/torch")
            pc=$(sed -n "s/^pytorch   model $m at $t threads*: .* \([0-9][0-9]*\) tokens\/cpu-s.*/\1/p" "$TMP/torch")
            pn=""
            [ "$t" = 1 ] && [ -n "$PIN1" ] && pn=" (both pinned to one CPU)"
            [ -n "$p" ] && echo "  at $t thread(s)$pn: spotrain $s vs pytorch $p tok/s:" \
                "$(ratio "$s" "$p")x; per CPU-second $sc vs $pc: $(ratio "$sc" "$pc")x"
        done
        # What this bench reported before: torch.set_num_threads(1) alone,
        # which keeps more than one core busy.
        o=$(sed -n "s/^pytorch   model $m at 1 thread old style[^:]*: *\([0-9][0-9]*\) tokens\/s.*/\1/p" "$TMP/torch")
        ob=$(sed -n "s/^pytorch   model $m at 1 thread old style.* \([0-9.]*\) cores busy.*/\1/p" "$TMP/torch")
        b1=0
        eval "b1=\$best_1"
        [ -n "$o" ] && echo "  old-style per thread: spotrain 1 thread $b1 vs pytorch set_num_threads(1) $o tok/s" \
            "($ob cores busy): $(ratio "$b1" "$o")x; the true 1-core figure is the line above"
    fi
    if [ -n "$best_lib" ]; then
        echo "  per-part profile of spotrain's best ($best_lib, $best_t thread(s)):"
        $RUN "$BIN" --model "$m" --scale "$SCALE" --threads "$best_t" --gemm "$best_lib" --profile 2>&1 |
            grep -e "^  part" -e "^spotrain  model"
    fi
done
