#!/bin/sh
# The chain reduce-scatter against the flat all-to-all exchange it
# replaced, under mpirun on this machine (bench/bench_reduce.c): seconds
# and bytes per rank for a REDUCE_N-float vector (default 100M = 400 MB a
# rank) on REDUCE_NP ranks (default "2 4"). Reports; never fails on a time.
BUILD=${BUILD:-build}
B=$PWD/$BUILD/bench/bench_reduce
N=${REDUCE_N:-100000000}
if [ ! -x "$B" ] || ! command -v mpirun >/dev/null 2>&1; then
    echo "reduce: needs mpirun and $B (make $BUILD/bench/bench_reduce)" >&2
    exit 66
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
for np in ${REDUCE_NP:-2 4}; do
    mpirun -np "$np" --oversubscribe "$B" "$N" 3 || echo "(bench_reduce on $np ranks exited $?)"
done
