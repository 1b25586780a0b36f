/* `spotrain selftest comm CONFIG`: the data plane over all ranks before a
 * week of training trusts it. Known patterns are reduced and gathered in
 * every message size up to the model's vector, checked bitwise against the
 * host rule (rank-order sums), and timed: bus bandwidth per size. Its
 * options, usage and start-up (config, peer timeout, MPI) are here too. */
#include "cli.h"
#include "model/model.h"
#include "backend/backend.h"
#include "comm/comm.h"
#include "util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef SPOTRAIN_MPI
#include <mpi.h>
#endif
#ifdef SPOTRAIN_CUDA
#include "cuda/cuda.h"
#endif

/* The data plane under test: MPI on host vectors (cpu backend) or NCCL on
 * device buffers (cuda backend); each call returns once the collective is
 * done and says how long it took. */
typedef struct {
    int (*reduce_scatter)(void *ctx, float *v, size_t n, double *seconds);
    int (*allgather)(void *ctx, float *v, size_t n, double *seconds);
    void *ctx;
} selftest_plane;

static int selftest_mpi_rs(void *ctx, float *v, size_t n, double *seconds)
{
    double t0 = util_now();
    int rc = comm_reduce_scatter(v, n);
    *seconds = util_now() - t0;
    return rc;
}

static int selftest_mpi_ag(void *ctx, float *v, size_t n, double *seconds)
{
    double t0 = util_now();
    int rc = comm_allgather(v, n);
    *seconds = util_now() - t0;
    return rc;
}

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

static int selftest_size(const selftest_plane *pl, float *v, size_t n, int reps, selftest_row *row)
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
        double dt = 0;
        rc = pl->reduce_scatter(pl->ctx, v, n, &dt);
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
            rc = pl->allgather(pl->ctx, v, n, &dt);
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

#ifdef SPOTRAIN_CUDA
static int selftest_cuda_rs(void *ctx, float *v, size_t n, double *seconds)
{
    return cuda_dp_reduce_scatter(ctx, v, n, seconds);
}

static int selftest_cuda_ag(void *ctx, float *v, size_t n, double *seconds)
{
    return cuda_dp_allgather(ctx, v, n, seconds);
}

static int selftest_cuda_open(selftest_plane *pl, size_t top)
{
    char why[256], where[256];
    cuda_dp *d = NULL;
    if (!cuda_available(why, sizeof why))
        return util_fail(ST_UNAVAILABLE, "selftest comm: backend cuda: %s; --set train.backend=cpu tests the MPI "
                         "data plane", why);
    int rc = cuda_dp_open(&d, top, where, sizeof where);
    if (rc != ST_OK)
        return rc;
    pl->reduce_scatter = selftest_cuda_rs;
    pl->allgather = selftest_cuda_ag;
    pl->ctx = d;
    if (comm_rank() == 0)
        printf("data plane: NCCL send/receive + rank-order sum kernel; rank 0 on %s; %d rank%s on %d node%s, "
               "%zu-float message rounds\n", where, comm_size(), comm_size() == 1 ? "" : "s", comm_nodes(),
               comm_nodes() == 1 ? "" : "s", comm_get_chunk());
    return ST_OK;
}

/* After the first exchange NCCL has connected every peer and logged how. */
static void selftest_cuda_transport(selftest_plane *pl)
{
    char line[512];
    int sockets = cuda_dp_transport(pl->ctx, line, sizeof line);
    if (comm_rank() == 0)
        printf("transport (rank 0's connections): %s\n", comm_size() == 1 ? "one rank: nothing moves" : line);
    if (sockets && comm_rank() != 0)
        fprintf(stderr, "spotrain: rank %d: NCCL %s\n", comm_rank(), line);
}

static void selftest_cuda_close(selftest_plane *pl, int cuda)
{
    if (cuda)
        cuda_dp_close(pl->ctx);
}

static int selftest_cuda_present(void)
{
    char why[256];
    return cuda_available(why, sizeof why);
}
#else
static int selftest_cuda_present(void) { return 0; }
static int selftest_cuda_open(selftest_plane *pl, size_t top)
{
    return util_fail(ST_UNAVAILABLE, "selftest comm: this spotrain was built without CUDA (make CUDA=1); "
                     "--set train.backend=cpu tests the MPI data plane");
}
static void selftest_cuda_transport(selftest_plane *pl) {}
static void selftest_cuda_close(selftest_plane *pl, int cuda) {}
#endif

static int selftest_comm(const cfg *c)
{
    model_shape s;
    model_layout L;
    int rc = model_shape_from_cfg(&s, c);
    if (rc != ST_OK || (rc = model_layout_init(&L, &s)) != ST_OK)
        return rc;
    comm_set_timeout(c->comm_timeout_seconds);
    comm_phase("selftest comm");   /* a timeout's line names this, not a training step */
    /* Sizes up to the model's vector, capped so the test takes seconds. */
    size_t top = L.n_floats < ((size_t)64 << 20) ? L.n_floats : ((size_t)64 << 20);
    model_layout_free(&L);
    selftest_plane pl = {selftest_mpi_rs, selftest_mpi_ag, NULL};
    /* The plane training would use: auto takes the GPU when there is one. */
    int cuda = strcmp(c->backend, "cuda") == 0 || (strcmp(c->backend, "auto") == 0 && selftest_cuda_present());
    if (cuda && (rc = selftest_cuda_open(&pl, top)) != ST_OK)
        return rc;
    float *v = malloc((top ? top : 1) * sizeof(float));
    if (!v) {
        selftest_cuda_close(&pl, cuda);
        return util_fail(ST_SOFTWARE, "selftest comm: out of memory for %zu floats", top);
    }
    int W = comm_size(), bad = 0;
    if (comm_rank() == 0) {
        if (!cuda)
            selftest_transport();
        printf("%12s %12s %14s %14s %14s %14s  %s\n", "floats", "bytes", "rs algbw GB/s", "rs busbw GB/s",
               "ag algbw GB/s", "ag busbw GB/s", "bitwise");
    }
    for (size_t n = 4096; rc == ST_OK; n = n * 4 < top ? n * 4 : top) {
        selftest_row row;
        rc = selftest_size(&pl, v, n, n < ((size_t)1 << 20) ? 5 : 2, &row);
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
    if (cuda && rc == ST_OK)
        selftest_cuda_transport(&pl);
    selftest_cuda_close(&pl, cuda);
    free(v);
    if (rc == ST_OK && bad)
        rc = util_fail(ST_SOFTWARE, "selftest comm: the data plane returned wrong bits (see the table); do not "
                       "train on this cluster until it is fixed");
    if (rc == ST_OK && comm_rank() == 0)
        printf("selftest comm: every size bitwise right on %d rank%s\n", W, W == 1 ? "" : "s");
    return rc;
}

static const char selftest_usage[] =
    "usage: spotrain selftest comm CONFIG [--set section.key=value]... [--quiet]\n"
    "  Run under the same launcher as training (mpirun -np N ...). Reduces and gathers\n"
    "  known patterns of every message size up to the model's vector over all ranks,\n"
    "  checks each result bitwise against the rank-order rule the trainer relies on,\n"
    "  and prints algorithm and bus bandwidth per size. Exit 0 when every bit is right;\n"
    "  86 when a peer stays silent past spot.comm_timeout_seconds.\n";

enum { SELFTEST_OPT_SET = CLI_LONG };

static const struct option selftest_opts[] = {
    {"set", required_argument, NULL, SELFTEST_OPT_SET},
    {"quiet", no_argument, NULL, 'q'},
    CLI_OPT_HELP,
    {0}};

/* argv[0] is "comm": CONFIG and its --set overrides into c; *help when
 * --help came first. */
static int selftest_parse(int argc, char **argv, cfg *c, int *help)
{
    const char *config = NULL;
    char **sets = calloc((size_t)argc, sizeof *sets);
    int n = 0, opt, rc = sets ? ST_OK : util_fail(ST_SOFTWARE, "out of memory");
    cli_args a;
    cli_args_init(&a, "selftest comm", argc, argv, selftest_opts, "qh");
    while (rc == ST_OK && !*help && (opt = cli_args_next(&a)) != CLI_END) {
        if (opt == SELFTEST_OPT_SET)
            sets[n++] = a.arg;
        else if (opt == 'q')
            util_quiet = 1;
        else if (opt == 'h')
            *help = 1;
        else if (opt == CLI_OPERAND && !config)
            config = a.arg;
        else
            rc = opt == CLI_OPERAND ? cli_args_unexpected(&a, a.arg) : ST_USAGE;
    }
    if (rc == ST_OK && !*help && !config)
        rc = util_fail(ST_USAGE, "selftest comm: which config? spotrain selftest comm CONFIG (`spotrain init run.ini` "
                       "writes a commented one)");
    if (rc == ST_OK && !*help)
        rc = cfg_load(c, config, sets, n);
    free(sets);
    return rc;
}

int cli_selftest(int argc, char **argv)
{
    int help = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")), rc;
    if (!help && (argc < 2 || strcmp(argv[1], "comm")))
        return util_fail(ST_USAGE, "selftest: which one? spotrain selftest comm CONFIG (see --help)");
    cfg *c = malloc(sizeof *c);
    rc = c ? ST_OK : util_fail(ST_SOFTWARE, "out of memory");
    if (rc == ST_OK && !help)
        rc = selftest_parse(argc - 1, argv + 1, c, &help);
    if (rc == ST_OK && help) {
        fputs(selftest_usage, stdout);
    } else if (rc == ST_OK) {
        comm_set_timeout(c->comm_timeout_seconds);   /* comm_init's host count waits for peers too */
        rc = comm_init(&argc, &argv);
        if (rc == ST_OK) {
            rc = selftest_comm(c);
            if (rc != ST_OK && comm_is_mpi())
                comm_abort(rc);
            comm_finalize(rc);
        }
    }
    free(c);
    return rc;
}
