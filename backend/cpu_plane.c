/* The cpu backend's data plane on its own (backend_plane, for `selftest
 * comm`): MPI point-to-point collectives on host vectors through comm/,
 * timed from the call to its return. */
#include "backend.h"
#include "comm/comm.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef SPOTRAIN_MPI
#include <mpi.h>
#endif

static int cpu_plane_rs(backend_plane *p, float *v, size_t n, double *seconds)
{
    double t0 = util_now();
    int rc = comm_reduce_scatter(v, n);
    *seconds = util_now() - t0;
    return rc;
}

static int cpu_plane_ag(backend_plane *p, float *v, size_t n, double *seconds)
{
    double t0 = util_now();
    int rc = comm_allgather(v, n);
    *seconds = util_now() - t0;
    return rc;
}

static void cpu_plane_describe(backend_plane *p, char *out, size_t cap)
{
#ifdef SPOTRAIN_MPI
    char lib[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    int len = 0;
    if (comm_is_mpi()) {
        MPI_Get_library_version(lib, &len);
        lib[strcspn(lib, ",\n")] = 0;
    }
    snprintf(out, cap, "MPI point-to-point (%s), %d rank%s on %d node%s, %zu-float message rounds",
             comm_is_mpi() ? lib : "single process, no messages", comm_size(), comm_size() == 1 ? "" : "s",
             comm_nodes(), comm_nodes() == 1 ? "" : "s", comm_get_chunk());
#else
    snprintf(out, cap, "none (built with MPI=0: one process)");
#endif
}

static void cpu_plane_close(backend_plane *p) { free(p); }

int backend_cpu_plane_open(backend_plane **out)
{
    backend_plane *p = calloc(1, sizeof *p);
    *out = NULL;
    if (!p)
        return util_fail(ST_SOFTWARE, "selftest comm: out of host memory");
    p->reduce_scatter = cpu_plane_rs;
    p->allgather = cpu_plane_ag;
    p->describe = cpu_plane_describe;
    p->close = cpu_plane_close;
    *out = p;
    return ST_OK;
}
