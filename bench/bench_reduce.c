/* The gradient reduce-scatter under mpirun: the chain (comm_reduce_scatter)
 * against the flat all-to-all exchange it replaced
 * (comm_reduce_scatter_flat_span) on an n-float vector (argv[1], default
 * 100M), best of argv[2] runs (default 3) each, the bytes each rank sends
 * (the plans' counts) and whether the two left the same bits. Run by
 * bench/reduce.sh; reports, never fails on a time. */
#include "comm/comm.h"
#include "util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Values whose sums round, so another order would show. */
static void bench_fill(float *v, size_t n, int r)
{
    for (size_t i = 0; i < n; i++)
        v[i] = ldexpf((float)((int)((i * 2654435761u + (size_t)r * 40503u) % 1048573u) - 524286),
                      -(int)((i + (size_t)r * 5) % 13) - 19);
}

/* Best seconds of reps runs (every rank's slowest), refilling before each. */
static int bench_time(int flat, float *v, size_t n, int reps, double *best)
{
    int rc = ST_OK;
    *best = INFINITY;
    for (int k = 0; k < reps && rc == ST_OK; k++) {
        bench_fill(v, n, comm_rank());
        if ((rc = comm_barrier()) != ST_OK)
            break;
        double t0 = util_now();
        rc = flat ? comm_reduce_scatter_flat_span(v, n, 0, n) : comm_reduce_scatter(v, n);
        int64_t ns = (int64_t)((util_now() - t0) * 1e9);
        if (rc == ST_OK)
            rc = comm_max(&ns, 1);
        *best = (double)ns / 1e9 < *best ? (double)ns / 1e9 : *best;
    }
    return rc;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 100000000;
    int reps = argc > 2 ? atoi(argv[2]) : 3, rc = comm_init(&argc, &argv);
    int W = comm_size(), me = comm_rank();
    size_t lo, hi;
    comm_range(n, me, W, &lo, &hi);
    float *v = malloc(n * sizeof(float)), *keep = malloc((hi - lo + 1) * sizeof(float));
    if (rc == ST_OK && (!v || !keep))
        rc = util_fail(ST_SOFTWARE, "bench_reduce: out of memory for %zu floats", n);
    double t_flat = 0, t_chain = 0;
    if (rc == ST_OK)
        rc = bench_time(1, v, n, reps, &t_flat);
    if (rc == ST_OK)
        memcpy(keep, v + lo, (hi - lo) * sizeof(float));
    if (rc == ST_OK)
        rc = bench_time(0, v, n, reps, &t_chain);
    int64_t differ = rc == ST_OK && memcmp(keep, v + lo, (hi - lo) * sizeof(float)) != 0;
    if (rc == ST_OK)
        rc = comm_max(&differ, 1);
    if (rc == ST_OK && me == 0) {
        printf("reduce-scatter of %zu floats (%.0f MB) on %d ranks, %d node%s, chunk %zu floats, best of %d:\n", n,
               4e-6 * (double)n, W, comm_nodes(), comm_nodes() == 1 ? "" : "s", comm_get_chunk(), reps);
        printf("  %-28s %10s %14s %14s\n", "", "seconds", "busiest rank", "rank W-1");
        printf("  %-28s %10.3f %11.1f MB %11.1f MB\n", "flat all-to-all (before)", t_flat,
               1e-6 * comm_flat_send_bytes(n, 0, n, 0, W), 1e-6 * comm_flat_send_bytes(n, 0, n, W - 1, W));
        printf("  %-28s %10.3f %11.1f MB %11.1f MB\n", "chain (now)", t_chain,
               1e-6 * comm_chain_send_bytes(n, 0, n, 0, W), 1e-6 * comm_chain_send_bytes(n, 0, n, W - 1, W));
        printf("  sent per rank per reduction (MB, from the plans); chain / flat time %.2f; bits %s\n",
               t_chain / t_flat, differ ? "DIFFER" : "identical");
        /* With ranks numbered node by node, g ranks a node: */
        for (int g = 2; g <= 8; g *= 2)
            if (W >= 2 * g)
                printf("  at %d ranks a node: %.1f MB leave each node with the flat exchange, %.1f MB with the "
                       "chain\n", g, 1e-6 * 4.0 * (double)n * g * (W - g) / W, 4e-6 * (double)n);
    }
    free(v);
    free(keep);
    if (rc != ST_OK && comm_is_mpi())
        comm_abort(rc);
    comm_finalize(rc);
    return rc == ST_OK && !differ ? 0 : 1;
}
