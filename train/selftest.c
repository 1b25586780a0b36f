/* `spotrain selftest comm CONFIG`: the data plane over all ranks before a
 * week of training trusts it. Known patterns are reduced and gathered in
 * every message size up to the model's vector, checked bitwise against the
 * host rule (rank-order sums), and timed: bus bandwidth per size. */
#include "train.h"
#include "backend.h"
#include "comm.h"
#include "../util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef SPOTRAIN_MPI
#include <mpi.h>
#endif

/* Rank r's contribution to element i: exact small multiples of 1/8, so a
 * wrong order or a lost message changes bits, never only the last one. */
static float selftest_value(int r, size_t i) { return (float)((int)((i * 2654435761u + (size_t)r * 97u) % 1021u) - 510) / 8.0f; }

static float selftest_sum(int world, size_t i)
{
    float s = selftest_value(0, i);
    for (int r = 1; r < world; r++)
        s += selftest_value(r, i);
    return s;
}

typedef struct {
    size_t n;
    double rs_s, ag_s;      /* best seconds of the reduce-scatter and the all-gather */
    int rs_ok, ag_ok;
} selftest_row;

static int selftest_size(float *v, size_t n, int reps, selftest_row *row)
{
    int me = comm_rank(), W = comm_size(), rc = ST_OK;
    size_t lo, hi;
    comm_range(n, me, W, &lo, &hi);
    row->n = n;
    row->rs_s = row->ag_s = INFINITY;
    row->rs_ok = row->ag_ok = 1;
    for (int k = 0; k < reps && rc == ST_OK; k++) {
        for (size_t i = 0; i < n; i++)
            v[i] = selftest_value(me, i);
        if ((rc = comm_barrier()) != ST_OK)
            break;
        double t0 = util_now();
        rc = comm_reduce_scatter(v, n);
        double dt = util_now() - t0;
        row->rs_s = dt < row->rs_s ? dt : row->rs_s;
        /* Fault injection for the test that proves a wrong bit is caught. */
        if (getenv("SPOTRAIN_SELFTEST_FAULT") && me == W - 1 && hi > lo)
            v[lo] += 1.0f;
        for (size_t i = lo; i < hi && rc == ST_OK; i++)
            if (v[i] != selftest_sum(W, i)) {
                row->rs_ok = 0;
                break;
            }
        for (size_t i = 0; i < n; i++)
            v[i] = i >= lo && i < hi ? selftest_value(1, i) : NAN;
        if (rc == ST_OK && (rc = comm_barrier()) == ST_OK) {
            t0 = util_now();
            rc = comm_allgather(v, n);
            dt = util_now() - t0;
            row->ag_s = dt < row->ag_s ? dt : row->ag_s;
        }
        for (size_t i = 0; i < n && rc == ST_OK; i++)
            if (v[i] != selftest_value(1, i)) {
                row->ag_ok = 0;
                break;
            }
    }
    /* Every rank's verdict counts: rank 0 prints what the slowest and the
     * worst rank saw. */
    double t[2] = {row->rs_s, row->ag_s};
    int64_t bad[2] = {!row->rs_ok, !row->ag_ok};
    for (int i = 0; i < 2 && rc == ST_OK; i++) {
        int64_t ms = (int64_t)(t[i] * 1e9);
        rc = comm_max(&ms, 1);
        t[i] = (double)ms / 1e9;
    }
    if (rc == ST_OK)
        rc = comm_max(bad, 2);
    row->rs_s = t[0], row->ag_s = t[1];
    row->rs_ok = !bad[0], row->ag_ok = !bad[1];
    return rc;
}

static void selftest_transport(void)
{
#ifdef SPOTRAIN_MPI
    char lib[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    int len = 0;
    if (comm_is_mpi()) {
        MPI_Get_library_version(lib, &len);
        lib[strcspn(lib, ",\n")] = 0;
    }
    printf("data plane: MPI point-to-point (%s), %d rank%s on %d node%s, %zu-float message rounds\n",
           comm_is_mpi() ? lib : "single process, no messages", comm_size(), comm_size() == 1 ? "" : "s",
           comm_nodes(), comm_nodes() == 1 ? "" : "s", comm_get_chunk());
#else
    printf("data plane: none (built with MPI=0: one process)\n");
#endif
}

int train_selftest_comm(const cfg *c)
{
    model_shape s;
    model_layout L;
    int rc = model_shape_from_cfg(&s, c);
    if (rc != ST_OK || (rc = model_layout_init(&L, &s)) != ST_OK)
        return rc;
    if (strcmp(c->backend, "cuda") == 0) {
        model_layout_free(&L);
        return util_fail(ST_UNAVAILABLE, "selftest comm: the CUDA data plane (NCCL) is not built yet; run with "
                         "--set train.backend=cpu to test the MPI data plane");
    }
    comm_set_timeout(c->comm_timeout_seconds);
    /* Sizes up to the model's vector, capped so the test takes seconds. */
    size_t top = L.n_floats < ((size_t)64 << 20) ? L.n_floats : ((size_t)64 << 20);
    model_layout_free(&L);
    float *v = malloc((top ? top : 1) * sizeof(float));
    if (!v)
        return util_fail(ST_SOFTWARE, "selftest comm: out of memory for %zu floats", top);
    int W = comm_size(), bad = 0;
    if (comm_rank() == 0) {
        selftest_transport();
        printf("%12s %12s %14s %14s %14s %14s  %s\n", "floats", "bytes", "rs algbw GB/s", "rs busbw GB/s",
               "ag algbw GB/s", "ag busbw GB/s", "bitwise");
    }
    for (size_t n = 4096; rc == ST_OK; n = n * 4 < top ? n * 4 : top) {
        selftest_row row;
        rc = selftest_size(v, n, n < ((size_t)1 << 20) ? 5 : 2, &row);
        if (rc != ST_OK)
            break;
        /* nccl-tests' convention: bus bandwidth = algbw * (W-1)/W for both. */
        double bytes = 4.0 * (double)n, f = W > 1 ? (double)(W - 1) / W : 1.0;
        bad |= !row.rs_ok || !row.ag_ok;
        const char *verdict = row.rs_ok && row.ag_ok ? "ok" : !row.rs_ok ? "REDUCE-SCATTER WRONG" : "ALL-GATHER WRONG";
        if (comm_rank() == 0 && W == 1)   /* nothing moves: a bandwidth would be a memcpy's */
            printf("%12zu %12.0f %14s %14s %14s %14s  %s\n", n, bytes, "-", "-", "-", "-", verdict);
        else if (comm_rank() == 0)
            printf("%12zu %12.0f %14.3f %14.3f %14.3f %14.3f  %s\n", n, bytes, bytes / row.rs_s / 1e9,
                   bytes / row.rs_s / 1e9 * f, bytes / row.ag_s / 1e9, bytes / row.ag_s / 1e9 * f, verdict);
        if (n >= top)
            break;
    }
    free(v);
    if (rc == ST_OK && bad)
        rc = util_fail(ST_SOFTWARE, "selftest comm: the data plane returned wrong bits (see the table); do not "
                       "train on this cluster until it is fixed");
    if (rc == ST_OK && comm_rank() == 0)
        printf("selftest comm: every size bitwise right on %d rank%s\n", W, W == 1 ? "" : "s");
    return rc;
}
