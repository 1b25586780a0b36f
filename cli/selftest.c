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

/* Rank r's contribution to element i: a 20-bit mantissa scaled by 2^0 ..
 * 2^-12, so sums round and a different order changes bits, while a lost
 * message changes more than the last one. */
static float selftest_value(int r, size_t i)
{
    uint32_t h = (uint32_t)(i * 2654435761u) ^ (uint32_t)((size_t)r * 2246822519u + 374761393u);
    h ^= h >> 15;
    h *= 2654435761u;
    h ^= h >> 13;
    float m = (float)((int)(h & 0xfffff) - 0x80000);
    return ldexpf(m, -19 - (int)((h >> 20) % 13));
}

static float selftest_sum(int world, size_t i)
{
    float s = selftest_value(0, i);
    for (int r = 1; r < world; r++)
        s += selftest_value(r, i);
    return s;
}

typedef struct {
    size_t n;
    int flat_ok;            /* the chain left the flat exchange's bits (MPI only) */
    double rs_s, ag_s;      /* best seconds of the reduce-scatter and the all-gather */
    int rs_ok, ag_ok;
} selftest_row;

/* The flat exchange the chain replaced, on the host over MPI: its bits
 * must be the plane's (each element summed alone in rank order). */
static int selftest_flat(const float *v, float *ref, size_t n, int *ok)
{
    int me = comm_rank(), W = comm_size(), rc = ST_OK;
    size_t lo, hi;
    comm_range(n, me, W, &lo, &hi);
    for (size_t i = 0; i < n; i++)
        ref[i] = selftest_value(me, i);
    if ((rc = comm_barrier()) == ST_OK)
        rc = comm_reduce_scatter_flat_span(ref, n, 0, n);
    for (size_t i = lo; i < hi && rc == ST_OK; i++)
        if (memcmp(&v[i], &ref[i], sizeof(float))) {
            *ok = 0;
            break;
        }
    return rc;
}

static int selftest_size(backend_plane *pl, float *v, float *ref, size_t n, int reps, selftest_row *row)
{
    int me = comm_rank(), W = comm_size(), rc = ST_OK;
    size_t lo, hi;
    comm_range(n, me, W, &lo, &hi);
    row->n = n;
    row->rs_s = row->ag_s = INFINITY;
    row->rs_ok = row->ag_ok = row->flat_ok = 1;
    for (int k = 0; k < reps && rc == ST_OK; k++) {
        for (size_t i = 0; i < n; i++)
            v[i] = selftest_value(me, i);
        if ((rc = comm_barrier()) != ST_OK)
            break;
        double dt = 0;
        rc = pl->reduce_scatter(pl, v, n, &dt);
        row->rs_s = dt < row->rs_s ? dt : row->rs_s;
        /* Fault injection for the test that proves a wrong bit is caught. */
        if (getenv("SPOTRAIN_SELFTEST_FAULT") && me == W - 1 && hi > lo)
            v[lo] += 1.0f;
        for (size_t i = lo; i < hi && rc == ST_OK; i++)
            if (v[i] != selftest_sum(W, i)) {
                row->rs_ok = 0;
                break;
            }
        if (rc == ST_OK && ref && k == 0)
            rc = selftest_flat(v, ref, n, &row->flat_ok);
        for (size_t i = 0; i < n; i++)
            v[i] = i >= lo && i < hi ? selftest_value(1, i) : NAN;
        if (rc == ST_OK && (rc = comm_barrier()) == ST_OK) {
            rc = pl->allgather(pl, v, n, &dt);
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
    int64_t bad[3] = {!row->rs_ok, !row->ag_ok, !row->flat_ok};
    for (int i = 0; i < 2 && rc == ST_OK; i++) {
        int64_t ms = (int64_t)(t[i] * 1e9);
        rc = comm_max(&ms, 1);
        t[i] = (double)ms / 1e9;
    }
    if (rc == ST_OK)
        rc = comm_max(bad, 3);
    row->rs_s = t[0], row->ag_s = t[1];
    row->rs_ok = !bad[0], row->ag_ok = !bad[1], row->flat_ok = !bad[2];
    return rc;
}

/* After the first exchange the plane has connected every peer and may say how. */
static void selftest_transport(backend_plane *pl)
{
    char line[512];
    if (!pl->transport)
        return;
    int sockets = pl->transport(pl, line, sizeof line);
    if (comm_rank() == 0)
        printf("transport (rank 0's connections): %s\n", comm_size() == 1 ? "one rank: nothing moves" : line);
    if (sockets && comm_rank() != 0)
        fprintf(stderr, "spotrain: rank %d: NCCL %s\n", comm_rank(), line);
}

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
    /* The plane training would use: auto takes the GPU when there is one. */
    backend_plane *pl = NULL;
    if ((rc = backend_plane_open(&pl, c->backend, top)) != ST_OK)
        return rc;
    float *v = malloc((top ? top : 1) * sizeof(float));
    /* Over MPI the flat exchange is the reference the plane is held to. */
    float *ref = comm_is_mpi() ? malloc((top ? top : 1) * sizeof(float)) : NULL;
    if (!v || (comm_is_mpi() && !ref)) {
        pl->close(pl);
        free(v);
        free(ref);
        return util_fail(ST_SOFTWARE, "selftest comm: out of memory for %zu floats", top);
    }
    int W = comm_size(), bad = 0;
    if (comm_rank() == 0) {
        char what[768];
        pl->describe(pl, what, sizeof what);
        printf("data plane: %s\n", what);
        printf("%12s %12s %14s %14s %14s %14s  %s\n", "floats", "bytes", "rs algbw GB/s", "rs busbw GB/s",
               "ag algbw GB/s", "ag busbw GB/s", "bitwise");
    }
    for (size_t n = 4096; rc == ST_OK; n = n * 4 < top ? n * 4 : top) {
        selftest_row row;
        rc = selftest_size(pl, v, ref, n, n < ((size_t)1 << 20) ? 5 : 2, &row);
        if (rc != ST_OK)
            break;
        /* nccl-tests' convention: bus bandwidth = algbw * (W-1)/W for both. */
        double bytes = 4.0 * (double)n, f = W > 1 ? (double)(W - 1) / W : 1.0;
        bad |= !row.rs_ok || !row.ag_ok || !row.flat_ok;
        const char *verdict = !row.rs_ok ? "REDUCE-SCATTER WRONG" : !row.ag_ok ? "ALL-GATHER WRONG"
                              : !row.flat_ok ? "NOT THE FLAT EXCHANGE'S BITS" : "ok";
        if (comm_rank() == 0 && W == 1)   /* nothing moves: a bandwidth would be a memcpy's */
            printf("%12zu %12.0f %14s %14s %14s %14s  %s\n", n, bytes, "-", "-", "-", "-", verdict);
        else if (comm_rank() == 0)
            printf("%12zu %12.0f %14.3f %14.3f %14.3f %14.3f  %s\n", n, bytes, bytes / row.rs_s / 1e9,
                   bytes / row.rs_s / 1e9 * f, bytes / row.ag_s / 1e9, bytes / row.ag_s / 1e9 * f, verdict);
        if (n >= top)
            break;
    }
    if (rc == ST_OK)
        selftest_transport(pl);
    pl->close(pl);
    free(v);
    free(ref);
    if (rc == ST_OK && bad)
        rc = util_fail(ST_SOFTWARE, "selftest comm: the data plane returned wrong bits (see the table); do not "
                       "train on this cluster until it is fixed");
    if (rc == ST_OK && comm_rank() == 0)
        printf("selftest comm: every size bitwise right on %d rank%s%s\n", W, W == 1 ? "" : "s",
               ref ? " (the chain reduce-scatter = the flat exchange, bitwise)" : "");
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
