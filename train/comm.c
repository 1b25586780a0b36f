/* MPI data-parallel collectives with deterministic summation order, and the
 * single-process fallback used when built with MPI=0. */
#include "comm.h"
#include "../util/util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef SPOTRAIN_MPI
#include <mpi.h>
#endif

static int comm_world = 1, comm_me = 0, comm_hosts = 1;

void comm_range(size_t n, int r, int world, size_t *lo, size_t *hi)
{
    *lo = (size_t)((unsigned __int128)n * (unsigned)r / (unsigned)world);
    *hi = (size_t)((unsigned __int128)n * (unsigned)(r + 1) / (unsigned)world);
}

int comm_rank(void) { return comm_me; }
int comm_size(void) { return comm_world; }
int comm_nodes(void) { return comm_hosts; }
int comm_is_mpi(void) { return comm_world > 1; }

#ifdef SPOTRAIN_MPI

static int comm_check(int err, const char *what)
{
    if (err == MPI_SUCCESS)
        return ST_OK;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(err, msg, &len);
    return util_fail(ST_IOERR, "MPI %s failed on rank %d: %s", what, comm_me, msg);
}

static int comm_count_hosts(void)
{
    char name[MPI_MAX_PROCESSOR_NAME] = {0};
    int len = 0;
    MPI_Get_processor_name(name, &len);
    char *all = calloc((size_t)comm_world, MPI_MAX_PROCESSOR_NAME);
    if (!all)
        return util_fail(ST_SOFTWARE, "out of memory");
    int rc = comm_check(MPI_Allgather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all,
                                      MPI_MAX_PROCESSOR_NAME, MPI_CHAR, MPI_COMM_WORLD), "allgather");
    comm_hosts = 0;
    for (int i = 0; i < comm_world && rc == ST_OK; i++) {
        int seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = !strcmp(all + (size_t)i * MPI_MAX_PROCESSOR_NAME, all + (size_t)j * MPI_MAX_PROCESSOR_NAME);
        comm_hosts += !seen;
    }
    free(all);
    return rc;
}

/* Started by mpirun, srun or another PMI launcher? A lone process skips
 * MPI_Init: a singleton start costs ~0.4 s, paid again on every restart. */
static int comm_launched(void)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE",
                                 "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

static int comm_mpi_on;

int comm_init(int *argc, char ***argv)
{
    int provided;
    if (!comm_launched())
        return ST_OK;
    comm_mpi_on = 1;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return util_fail(ST_UNAVAILABLE, "MPI_Init failed; run under mpirun or build with MPI=0");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_size(MPI_COMM_WORLD, &comm_world);
    MPI_Comm_rank(MPI_COMM_WORLD, &comm_me);
    return comm_count_hosts();
}

void comm_finalize(void)
{
    if (comm_mpi_on)
        MPI_Finalize();
}

void comm_abort(int code)
{
    if (comm_mpi_on)
        MPI_Abort(MPI_COMM_WORLD, code);
}

int comm_reduce_scatter(float *g, size_t n)
{
    if (comm_world == 1)
        return ST_OK;
    int W = comm_world, rc;
    size_t lo, hi;
    comm_range(n, comm_me, W, &lo, &hi);
    size_t mine = hi - lo;
    int *scount = malloc(4 * (size_t)W * sizeof(int)), *sdisp = scount + W, *rcount = sdisp + W,
        *rdisp = rcount + W;
    float *recv = malloc((mine ? mine : 1) * (size_t)W * sizeof(float));
    if (!scount || !recv) {
        rc = util_fail(ST_SOFTWARE, "out of memory in gradient reduction");
        goto out;
    }
    /* MPI counts and displacements are int: one message per step caps the
     * flat vector at 2^31 floats per collective. */
    if (n > (size_t)2147483647) {
        rc = util_fail(ST_SOFTWARE, "%zu parameters exceed the 2^31 limit of one MPI collective", n);
        goto out;
    }
    for (int r = 0; r < W; r++) {
        size_t a, b;
        comm_range(n, r, W, &a, &b);
        scount[r] = (int)(b - a);
        sdisp[r] = (int)a;
        rcount[r] = (int)mine;
        rdisp[r] = (int)(mine * (size_t)r);
    }
    rc = comm_check(MPI_Alltoallv(g, scount, sdisp, MPI_FLOAT, recv, rcount, rdisp, MPI_FLOAT,
                                  MPI_COMM_WORLD), "gradient all-to-all");
    if (rc != ST_OK)
        goto out;
    for (size_t i = 0; i < mine; i++) {
        float s = recv[i];
        for (int r = 1; r < W; r++)
            s += recv[(size_t)r * mine + i];
        g[lo + i] = s;
    }
out:
    free(scount);
    free(recv);
    return rc;
}

int comm_allgather(float *p, size_t n)
{
    if (comm_world == 1)
        return ST_OK;
    int W = comm_world, rc;
    int *count = malloc(2 * (size_t)W * sizeof(int)), *disp = count ? count + W : NULL;
    if (!count)
        return util_fail(ST_SOFTWARE, "out of memory in parameter gather");
    if (n > (size_t)2147483647) {
        free(count);
        return util_fail(ST_SOFTWARE, "%zu parameters exceed the 2^31 limit of one MPI collective", n);
    }
    for (int r = 0; r < W; r++) {
        size_t a, b;
        comm_range(n, r, W, &a, &b);
        count[r] = (int)(b - a);
        disp[r] = (int)a;
    }
    rc = comm_check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, p, count, disp, MPI_FLOAT,
                                   MPI_COMM_WORLD), "parameter all-gather");
    free(count);
    return rc;
}

int comm_sum(double *v, int k)
{
    if (comm_world == 1)
        return ST_OK;
    double *all = malloc((size_t)k * (size_t)comm_world * sizeof *all);
    if (!all)
        return util_fail(ST_SOFTWARE, "out of memory");
    int rc = comm_check(MPI_Allgather(v, k, MPI_DOUBLE, all, k, MPI_DOUBLE, MPI_COMM_WORLD), "allgather");
    for (int i = 0; i < k && rc == ST_OK; i++) {
        double s = 0;
        for (int r = 0; r < comm_world; r++)
            s += all[(size_t)r * (size_t)k + (size_t)i];
        v[i] = s;
    }
    free(all);
    return rc;
}

int comm_max(int64_t *v, int k)
{
    if (comm_world == 1)
        return ST_OK;
    return comm_check(MPI_Allreduce(MPI_IN_PLACE, v, k, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD), "allreduce");
}

int comm_bcast(void *buf, size_t bytes, int root)
{
    if (comm_world == 1)
        return ST_OK;
    return comm_check(MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, MPI_COMM_WORLD), "broadcast");
}

int comm_barrier(void)
{
    if (comm_world == 1)
        return ST_OK;
    return comm_check(MPI_Barrier(MPI_COMM_WORLD), "barrier");
}

#else /* single process */

int comm_init(int *argc, char ***argv) { return ST_OK; }
void comm_finalize(void) {}
void comm_abort(int code) {}
int comm_reduce_scatter(float *g, size_t n) { return ST_OK; }
int comm_allgather(float *p, size_t n) { return ST_OK; }
int comm_sum(double *v, int k) { return ST_OK; }
int comm_max(int64_t *v, int k) { return ST_OK; }
int comm_bcast(void *buf, size_t bytes, int root) { return ST_OK; }
int comm_barrier(void) { return ST_OK; }

#endif
