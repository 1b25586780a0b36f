/* MPI data-parallel collectives with deterministic summation order, and the
 * single-process fallback used when built with MPI=0. */
#include "comm.h"
#include "util/util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef SPOTRAIN_MPI
#include <mpi.h>
#endif

static int comm_world = 1, comm_me = 0, comm_hosts = 1;

/* Ranges are whole 64-element units (aligned vector loads, device GEMMs);
 * the last rank's range ends at n. */
void comm_range(size_t n, int r, int world, size_t *lo, size_t *hi)
{
    size_t units = (n + COMM_ALIGN - 1) / COMM_ALIGN;
    size_t a = (size_t)((unsigned __int128)units * (unsigned)r / (unsigned)world) * COMM_ALIGN;
    size_t b = (size_t)((unsigned __int128)units * (unsigned)(r + 1) / (unsigned)world) * COMM_ALIGN;
    *lo = a < n ? a : n;
    *hi = b < n ? b : n;
}

/* Floats per message of the chunked collectives: bounds the receive buffer
 * to (world - 1) chunks and keeps every MPI count far below 2^31. */
static size_t comm_chunk = COMM_CHUNK_DEFAULT;

void comm_set_chunk(size_t floats) { comm_chunk = floats >= COMM_ALIGN ? floats / COMM_ALIGN * COMM_ALIGN : COMM_ALIGN; }
size_t comm_get_chunk(void) { return comm_chunk; }

size_t comm_rounds(size_t n, int world, size_t chunk)
{
    size_t most = 0;
    for (int r = 0; r < world; r++) {
        size_t a, b;
        comm_range(n, r, world, &a, &b);
        most = b - a > most ? b - a : most;
    }
    return (most + chunk - 1) / chunk;
}

void comm_piece(size_t n, int r, int world, size_t chunk, size_t round, size_t *off, size_t *count)
{
    size_t a, b;
    comm_range(n, r, world, &a, &b);
    size_t start = a + round * chunk;
    *off = start < b ? start : b;
    *count = start < b ? (b - start < chunk ? b - start : chunk) : 0;
}

size_t comm_span_rounds(size_t n, size_t a, size_t b, int world, size_t chunk)
{
    size_t most = 0;
    for (int r = 0; r < world; r++) {
        size_t lo, hi;
        comm_range(n, r, world, &lo, &hi);
        lo = lo > a ? lo : a;
        hi = hi < b ? hi : b;
        most = hi > lo && hi - lo > most ? hi - lo : most;
    }
    return (most + chunk - 1) / chunk;
}

void comm_span_piece(size_t n, size_t a, size_t b, int r, int world, size_t chunk, size_t round, size_t *off,
                     size_t *count)
{
    size_t lo, hi;
    comm_range(n, r, world, &lo, &hi);
    lo = lo > a ? lo : a;
    hi = hi < b ? hi : b;
    hi = hi > lo ? hi : lo;
    size_t start = lo + round * chunk;
    *off = start < hi ? start : hi;
    *count = start < hi ? (hi - start < chunk ? hi - start : chunk) : 0;
}

/* Owner r's part of the span [a, b) (empty: lo == hi). */
static void comm_part(size_t n, size_t a, size_t b, int r, int world, size_t *lo, size_t *hi)
{
    comm_range(n, r, world, lo, hi);
    *lo = *lo > a ? *lo : a;
    *hi = *hi < b ? *hi : b;
    *hi = *hi > *lo ? *hi : *lo;
}

size_t comm_chain_size(size_t n, size_t a, size_t b, int world, size_t chunk)
{
    size_t most = 0;
    for (int r = 0; r < world; r++) {
        size_t lo, hi;
        comm_part(n, a, b, r, world, &lo, &hi);
        most = hi - lo > most ? hi - lo : most;
    }
    size_t want = (most + COMM_CHAIN_PIECES - 1) / COMM_CHAIN_PIECES;
    want = (want + COMM_ALIGN - 1) / COMM_ALIGN * COMM_ALIGN;
    want = want > COMM_CHAIN_MIN ? want : COMM_CHAIN_MIN;
    want = want < chunk ? want : chunk;
    return want > 0 ? want : 1;
}

size_t comm_chain_chunks(size_t n, size_t a, size_t b, int world, size_t chunk)
{
    size_t P = comm_chain_size(n, a, b, world, chunk), J = 0;
    for (int r = 0; r < world; r++) {
        size_t lo, hi;
        comm_part(n, a, b, r, world, &lo, &hi);
        J += (hi - lo + P - 1) / P;
    }
    return J;
}

void comm_chain_chunk(size_t n, size_t a, size_t b, int world, size_t chunk, size_t j, size_t *off, size_t *count,
                      int *owner)
{
    size_t P = comm_chain_size(n, a, b, world, chunk);
    *off = b, *count = 0, *owner = world - 1;
    for (int r = 0; r < world; r++) {
        size_t lo, hi;
        comm_part(n, a, b, r, world, &lo, &hi);
        size_t k = (hi - lo + P - 1) / P;
        if (j < k) {
            *off = lo + j * P;
            *count = hi - *off < P ? hi - *off : P;
            *owner = r;
            return;
        }
        j -= k;
    }
}

size_t comm_chain_largest(size_t n, size_t a, size_t b, int world, size_t chunk)
{
    size_t P = comm_chain_size(n, a, b, world, chunk), most = 0;
    for (int r = 0; r < world; r++) {
        size_t lo, hi;
        comm_part(n, a, b, r, world, &lo, &hi);
        size_t c = hi - lo < P ? hi - lo : P;
        most = c > most ? c : most;
    }
    return most;
}

double comm_chain_send_bytes(size_t n, size_t a, size_t b, int r, int world)
{
    if (world < 2)
        return 0;
    if (r < world - 1)
        return 4.0 * (double)(b - a);
    size_t lo, hi;
    comm_part(n, a, b, r, world, &lo, &hi);
    return 4.0 * (double)(b - a - (hi - lo));
}

double comm_flat_send_bytes(size_t n, size_t a, size_t b, int r, int world)
{
    size_t lo, hi;
    comm_part(n, a, b, r, world, &lo, &hi);
    return world < 2 ? 0 : 4.0 * (double)(b - a - (hi - lo));
}

void comm_sum_pieces(float *out, const float *pieces, size_t stride, int world, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        float s = pieces[i];
        for (int r = 1; r < world; r++)
            s += pieces[(size_t)r * stride + i];
        out[i] = s;
    }
}

static int comm_reduce = COMM_REDUCE_CHAIN;

int comm_reduce_parse(const char *s)
{
    return !s ? -1 : !strcmp(s, "chain") ? COMM_REDUCE_CHAIN : !strcmp(s, "nccl") ? COMM_REDUCE_NCCL : -1;
}
const char *comm_reduce_name(int reduce) { return reduce == COMM_REDUCE_NCCL ? "nccl" : "chain"; }
void comm_set_reduce(int reduce) { comm_reduce = reduce == COMM_REDUCE_NCCL ? COMM_REDUCE_NCCL : COMM_REDUCE_CHAIN; }
int comm_get_reduce(void) { return comm_reduce; }

/* [comm] overlap: on by default, as in sample.ini. */
static int comm_overlap = 1;
void comm_set_overlap(int on) { comm_overlap = on != 0; }
int comm_get_overlap(void) { return comm_overlap; }

static double comm_timeout;

double comm_set_timeout(double seconds)
{
    double old = comm_timeout;
    comm_timeout = seconds > 0 ? seconds : 0;
    return old;
}
double comm_get_timeout(void) { return comm_timeout; }

/* The agreement the ranks are in, for the one line a timeout prints. */
static const char *comm_agreement = "training step";

const char *comm_phase(const char *agreement)
{
    const char *old = comm_agreement;
    comm_agreement = agreement ? agreement : "training step";
    return old;
}

/* The first failed wait: every later one fails at once with its code, and
 * comm_finalize will not join peers that stopped answering. Atomic: the
 * comm worker may set it while the main thread's protocol checks read it. */
static _Atomic int comm_broken;
static comm_failure comm_why = {"", -1, 0, 0};

int comm_failed(const comm_failure **why)
{
    if (why)
        *why = &comm_why;
    return comm_broken;
}

const char *comm_note_timeout(const char *what, int peer, double waited)
{
    comm_why.peer = peer < 0 && comm_world == 2 ? 1 - comm_me : peer;   /* of two, the other one */
    snprintf(comm_why.agreement, sizeof comm_why.agreement, "%s (%s)", comm_agreement, what);
    comm_why.waited = waited;
    comm_why.timeout = comm_timeout;
    comm_broken = ST_WATCHDOG;
    return comm_why.agreement;
}

/* Test hook, for tests/cli/cli_mpi_vanish.sh and tests/emu/cli_nccl_fail_emu.sh
 * only: SPOTRAIN_TEST_FREEZE=POINT@RANK
 * makes that rank stop itself (SIGSTOP, as a hung node would) when it reaches
 * the named protocol point, so a test can freeze a peer at a place no
 * signal sent from outside could hit reliably. */
void comm_test_freeze(const char *point)
{
    const char *e = getenv("SPOTRAIN_TEST_FREEZE"), *n = getenv("SPOTRAIN_TEST_NOTICE");
    static int noticed;
    char want[64];
    snprintf(want, sizeof want, "%s@%d", point, comm_me);
    if (n && !noticed && !strcmp(n, want)) {
        noticed = 1;   /* once: a notice the stop protocol then carries */
        raise(SIGUSR1);
    }
    if (e && !strcmp(e, want))
        raise(SIGSTOP);
}

/* Test hook, as above: SPOTRAIN_TEST_SLOW=POINT@RANK:SECONDS makes that
 * rank take SECONDS longer at the point (a slow disk, not a silent peer). */
void comm_test_slow(const char *point)
{
    const char *e = getenv("SPOTRAIN_TEST_SLOW");
    char want[64];
    size_t n = (size_t)snprintf(want, sizeof want, "%s@%d:", point, comm_me);
    if (!e || strncmp(e, want, n))
        return;
    double s = strtod(e + n, NULL);
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    if (s > 0)
        nanosleep(&ts, NULL);
}

int comm_rank(void) { return comm_me; }
int comm_size(void) { return comm_world; }
int comm_nodes(void) { return comm_hosts; }
int comm_is_mpi(void) { return comm_world > 1; }

#ifdef SPOTRAIN_MPI

/* ---- the guard of blocking MPI calls ------------------------------------
 * MPI_Init_thread, MPI_Comm_split_type and MPI_Finalize wait for every peer
 * and have no form that can be polled or cancelled. A thread watches the
 * one in progress; past spot.comm_timeout_seconds it prints the timeout
 * line and ends the process (the main thread is inside MPI, and no MPI
 * call may be made from here), and mpirun then ends the other ranks. */
static pthread_mutex_t comm_guard_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t comm_guard_cv = PTHREAD_COND_INITIALIZER;
static int comm_guard_started;
static long comm_guard_armed;   /* generation of the armed call; 0 = none */
static const char *comm_guard_what;
static int comm_guard_code;
static double comm_guard_t0, comm_guard_limit;
static pthread_t comm_guard_th;

static void comm_guard_fire(double waited)
{
    char msg[400];
    int n = snprintf(msg, sizeof msg,
                     "spotrain: %s: rank %d of %d waited %.0f s for the other ranks (spot.comm_timeout_seconds "
                     "= %g); a peer vanished or hung; exiting %d so the job is restarted\n",
                     comm_guard_what, comm_me, comm_world, waited, comm_guard_limit, comm_guard_code);
    ssize_t w = write(STDERR_FILENO, msg, n > 0 ? (size_t)n : 0);
    (void)w;
    _exit(comm_guard_code);   /* exit() would run atexit handlers that call into MPI */
}

static void *comm_guard_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&comm_guard_mu);
    for (;;) {
        while (!comm_guard_armed)
            pthread_cond_wait(&comm_guard_cv, &comm_guard_mu);
        long gen = comm_guard_armed;
        double end = comm_guard_t0 + comm_guard_limit;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);   /* the condition variable's clock */
        double at = (double)ts.tv_sec + ts.tv_nsec * 1e-9 + (end - util_now());
        ts.tv_sec = (time_t)at;
        ts.tv_nsec = (long)((at - (double)ts.tv_sec) * 1e9);
        int e = 0;
        while (comm_guard_armed == gen && e != ETIMEDOUT)
            e = pthread_cond_timedwait(&comm_guard_cv, &comm_guard_mu, &ts);
        double waited = util_now() - comm_guard_t0;
        if (comm_guard_armed == gen && waited >= comm_guard_limit)
            comm_guard_fire(waited);
    }
    return NULL;
}

/* Starts watching a blocking call (with no timeout set, nothing). A guard
 * that cannot start leaves the call unbounded, as it was: not an error. */
static void comm_guard_arm(const char *what, int code)
{
    static long generation;
    if (comm_timeout <= 0)
        return;
    pthread_mutex_lock(&comm_guard_mu);
    if (!comm_guard_started) {
        sigset_t all, old;
        sigfillset(&all);   /* signals stay with the main thread (spot's handlers) */
        pthread_sigmask(SIG_BLOCK, &all, &old);
        comm_guard_started = pthread_create(&comm_guard_th, NULL, comm_guard_thread, NULL) == 0;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (comm_guard_started)
            pthread_detach(comm_guard_th);
    }
    comm_guard_what = what;
    comm_guard_code = code;
    comm_guard_limit = comm_timeout;
    comm_guard_t0 = util_now();
    comm_guard_armed = ++generation;
    pthread_cond_signal(&comm_guard_cv);
    pthread_mutex_unlock(&comm_guard_mu);
}

static void comm_guard_disarm(void)
{
    pthread_mutex_lock(&comm_guard_mu);
    comm_guard_armed = 0;
    pthread_cond_signal(&comm_guard_cv);
    pthread_mutex_unlock(&comm_guard_mu);
}

/* The launcher's rank and size before MPI_Init (first variable set). */
static const char *const comm_rank_vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID", NULL};
static const char *const comm_size_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS", NULL};

static int comm_launcher_int(const char *const *vars, int fallback)
{
    for (int i = 0; vars[i]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return atoi(v);
    }
    return fallback;
}

static int comm_check(int err, const char *what)
{
    if (err == MPI_SUCCESS)
        return ST_OK;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(err, msg, &len);
    return util_fail(ST_IOERR, "MPI %s failed on rank %d: %s", what, comm_me, msg);
}

/* The first peer whose request is still pending: one that did not answer. */
static int comm_timed_out(MPI_Request *req, const int *peer, int n, const char *what, double waited)
{
    char who[64] = "a peer";
    int silent = -1;
    for (int i = 0; peer && i < n && silent < 0; i++) {
        int flag = 1;
        if (peer[i] >= 0 && MPI_Request_get_status(req[i], &flag, MPI_STATUS_IGNORE) == MPI_SUCCESS && !flag)
            silent = peer[i];
    }
    const char *agreement = comm_note_timeout(what, silent, waited);
    if (comm_why.peer >= 0)
        snprintf(who, sizeof who, "rank %d", comm_why.peer);
    return util_fail(ST_WATCHDOG, "%s: rank %d of %d waited %.0f s for %s (spot.comm_timeout_seconds = %g); a peer "
                     "vanished or hung; exiting %d so the job is restarted", agreement, comm_me, comm_world,
                     waited, who, comm_timeout, ST_WATCHDOG);
}

/* MPI_Waitall blocks forever on a peer that froze or whose node dropped off
 * the network without a TCP reset; with a timeout, test and back off (up to
 * 1 ms between polls, so a live exchange loses little latency) until the
 * deadline. peer[i] (NULL: none known, as in a collective) is the rank
 * request i waits on, so the line can name a peer that did not answer. The
 * requests are left pending: the caller's error path ends in MPI_Abort,
 * which is the only way out of a collective a peer never joins. */
static int comm_waitall(MPI_Request *req, const int *peer, int n, const char *what)
{
    if (comm_broken)   /* said once already; the requests stay pending for MPI_Abort */
        return comm_broken;
    if (comm_timeout <= 0) {
        int rc = comm_check(MPI_Waitall(n, req, MPI_STATUSES_IGNORE), what);
        comm_broken = rc;
        return rc;
    }
    double t0 = util_now();
    long pause_ns = 0;
    for (;;) {
        int done = 0;
        int rc = comm_check(MPI_Testall(n, req, &done, MPI_STATUSES_IGNORE), what);
        if (rc != ST_OK || done)
            return comm_broken = rc;
        double waited = util_now() - t0;
        if (waited > comm_timeout)
            return comm_timed_out(req, peer, n, what, waited);
        util_poll_pause(&pause_ns);
    }
}

static int comm_count_hosts(void)
{
    char name[MPI_MAX_PROCESSOR_NAME] = {0};
    int len = 0;
    MPI_Get_processor_name(name, &len);
    char *all = calloc((size_t)comm_world, MPI_MAX_PROCESSOR_NAME);
    MPI_Request req;
    if (!all)
        return util_fail(ST_SOFTWARE, "out of memory");
    const char *was = comm_phase("start-up: host count");
    int rc = comm_check(MPI_Iallgather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all, MPI_MAX_PROCESSOR_NAME,
                                       MPI_CHAR, MPI_COMM_WORLD, &req), "allgather");
    if (rc == ST_OK)
        rc = comm_waitall(&req, NULL, 1, "allgather");
    comm_phase(was);
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
static int comm_thread_level = -1;   /* MPI's provided level, -1 before comm_init */

int comm_local_rank(void)
{
    MPI_Comm node;
    int local = 0;
    if (comm_world == 1)
        return 0;
    /* MPI has no non-blocking split: the guard bounds it. Only the CUDA
     * backend calls it, and only when the launcher set no local rank. */
    comm_guard_arm("start-up: local rank (MPI_Comm_split_type)", ST_WATCHDOG);
    int err = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, comm_me, MPI_INFO_NULL, &node);
    comm_guard_disarm();
    if (err != MPI_SUCCESS)
        return 0;
    MPI_Comm_rank(node, &local);
    MPI_Comm_free(&node);
    return local;
}

int comm_init(int *argc, char ***argv)
{
    int provided;
    if (!comm_launched())
        return ST_OK;
    comm_mpi_on = 1;
    const char *ch = getenv("SPOTRAIN_COMM_CHUNK");
    if (ch && *ch)
        comm_set_chunk((size_t)strtoull(ch, NULL, 10));
    comm_me = comm_launcher_int(comm_rank_vars, 0);   /* for the guard's line and the test hook, until MPI says */
    comm_world = comm_launcher_int(comm_size_vars, 1);
    comm_test_freeze("preinit");
    /* The launcher's start-up exchange waits for every peer to reach it. */
    comm_guard_arm("start-up (MPI_Init)", ST_WATCHDOG);
    /* The comm worker ([comm] overlap) makes MPI calls from a second
     * thread, never at once with the main thread. */
    int err = MPI_Init_thread(argc, argv, comm_overlap ? MPI_THREAD_SERIALIZED : MPI_THREAD_FUNNELED, &provided);
    comm_thread_level = err == MPI_SUCCESS ? provided : -1;
    comm_guard_disarm();
    if (err != MPI_SUCCESS) {
        comm_me = 0;
        comm_world = 1;
        return util_fail(ST_UNAVAILABLE, "MPI_Init failed; run under mpirun or build with MPI=0");
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_size(MPI_COMM_WORLD, &comm_world);
    MPI_Comm_rank(MPI_COMM_WORLD, &comm_me);
    comm_test_freeze("init");
    return comm_count_hosts();
}

/* MPI_Finalize synchronizes with every peer: after a failed wait it would
 * hang on the peer that stopped answering, so the job is aborted instead.
 * Otherwise callers reach it after a bounded exit barrier (train_run), and
 * the guard bounds the moment after it. A run that ended cleanly has
 * nothing left to lose, but mpirun counts a rank that leaves without
 * finishing MPI_Finalize as failed whatever its code, so the guard's code
 * is 86 (restart: the resume finds the run complete); a stop keeps its 75. */
void comm_finalize(int rc)
{
    if (!comm_broken)
        comm_async_drain();   /* a failed wait ended the queue's work already */
    if (comm_mpi_on && comm_broken && comm_world > 1)
        MPI_Abort(MPI_COMM_WORLD, ST_WATCHDOG);
    if (!comm_mpi_on)
        return;
    comm_test_freeze("finalize");
    comm_guard_arm("exit (MPI_Finalize)", rc != ST_OK ? rc : ST_WATCHDOG);
    MPI_Finalize();
    comm_guard_disarm();
}

void comm_abort(int code)
{
    if (comm_mpi_on)
        MPI_Abort(MPI_COMM_WORLD, code);
}

/* In rounds of at most comm_chunk floats per rank: every rank sends each
 * peer that peer's piece of the span and receives its own piece from every
 * peer, then sums the pieces in rank order (its own value in its rank's
 * place). Point-to-point with pointers, so no count or displacement nears
 * 2^31. */
int comm_reduce_scatter_flat_span(float *buf, size_t n, size_t a, size_t b)
{
    if (comm_world == 1)
        return ST_OK;
    int W = comm_world, me = comm_me, rc = comm_async_drain();
    if (rc != ST_OK)
        return rc;
    size_t C = comm_chunk, rounds = comm_span_rounds(n, a, b, W, C);
    /* A bucket smaller than a chunk needs no chunk-sized buffer: the
     * pieces of one round fit its largest part. */
    size_t S = rounds == 1 ? comm_span_rounds(n, a, b, W, 1) : C;
    float *recv = malloc((S ? S : 1) * (size_t)W * sizeof(float));
    MPI_Request *req = malloc(2 * (size_t)W * sizeof *req);
    int *peer = malloc(2 * (size_t)W * sizeof *peer);
    if (!recv || !req || !peer) {
        rc = util_fail(ST_SOFTWARE, "out of memory in gradient reduction (%zu floats)", S * (size_t)W);
        goto out;
    }
    for (size_t k = 0; k < rounds && rc == ST_OK; k++) {
        size_t off, cnt;
        int nr = 0;
        comm_span_piece(n, a, b, me, W, C, k, &off, &cnt);
        for (int r = 0; r < W; r++) {
            size_t po, pc;
            comm_span_piece(n, a, b, r, W, C, k, &po, &pc);
            if (r != me && cnt > 0) {
                peer[nr] = r;
                MPI_Irecv(recv + (size_t)r * S, (int)cnt, MPI_FLOAT, r, 71, MPI_COMM_WORLD, &req[nr++]);
            }
            if (r != me && pc > 0) {
                peer[nr] = r;
                MPI_Isend(buf + (po - a), (int)pc, MPI_FLOAT, r, 71, MPI_COMM_WORLD, &req[nr++]);
            }
        }
        if ((rc = comm_waitall(req, peer, nr, "gradient exchange")) != ST_OK || cnt == 0)
            continue;
        memcpy(recv + (size_t)me * S, buf + (off - a), cnt * sizeof(float));
        comm_sum_pieces(buf + (off - a), recv, S, W, cnt);
    }
out:
    free(recv);
    free(req);
    free(peer);
    return rc;
}

/* The chain's state on one rank: the chunk buffers and their pending
 * sends, the receive of the next partial sum, and the owner's receives of
 * its finished sums (posted as each of its chunks leaves it). */
typedef struct {
    float *slot;                    /* COMM_CHAIN_SLOTS x S floats */
    size_t S;
    MPI_Request send[COMM_CHAIN_SLOTS], recv, *fin;
    int send_peer[COMM_CHAIN_SLOTS], nfin, *fin_peer;
    long sent_chunk[COMM_CHAIN_SLOTS];  /* rank 0: the chunk a send slot carries, -1 none */
} comm_chain;

/* Waits for one request (MPI_REQUEST_NULL: nothing to wait for). */
static int comm_wait1(MPI_Request *r, int peer, const char *what)
{
    if (*r == MPI_REQUEST_NULL)
        return ST_OK;
    return comm_waitall(r, &peer, 1, what);
}

/* The owner of chunk j (not rank W-1, which writes its sums in place)
 * receives the sum from W-1 into its vector; rank 0 only once its own
 * send of that chunk, which reads the same floats, is done. */
static int comm_chain_final(comm_chain *ch, float *buf, size_t n, size_t a, size_t b, size_t C, size_t j)
{
    size_t off, cnt;
    int owner, W = comm_world;
    comm_chain_chunk(n, a, b, W, C, j, &off, &cnt, &owner);
    if (owner != comm_me || owner == W - 1 || cnt == 0)
        return ST_OK;
    ch->fin_peer[ch->nfin] = W - 1;
    return comm_check(MPI_Irecv(buf + (off - a), (int)cnt, MPI_FLOAT, W - 1, 74, MPI_COMM_WORLD,
                                &ch->fin[ch->nfin++]), "receive");
}

/* One chunk on this rank: rank 0 sends its part; a later rank waits for
 * the partial sum, adds its part (partial + g_r, the bits of s += g_r) and
 * passes it on, to r + 1 or, from W-1, to the owner. */
static int comm_chain_step(comm_chain *ch, float *buf, size_t n, size_t a, size_t b, size_t C, size_t j, size_t J)
{
    int W = comm_world, me = comm_me, s = (int)(j % COMM_CHAIN_SLOTS), owner, rc;
    size_t off, cnt;
    comm_chain_chunk(n, a, b, W, C, j, &off, &cnt, &owner);
    float *g = buf + (off - a), *x = ch->slot + (size_t)s * ch->S;
    /* The slot's previous send (chunk j - SLOTS) must be done before reuse. */
    if ((rc = comm_wait1(&ch->send[s], ch->send_peer[s], "gradient exchange")) != ST_OK)
        return rc;
    if (me == 0) {
        if (ch->sent_chunk[s] >= 0 && (rc = comm_chain_final(ch, buf, n, a, b, C, (size_t)ch->sent_chunk[s])) != ST_OK)
            return rc;
        ch->sent_chunk[s] = (long)j;
        ch->send_peer[s] = 1;
        return comm_check(MPI_Isend(g, (int)cnt, MPI_FLOAT, 1, 73, MPI_COMM_WORLD, &ch->send[s]), "send");
    }
    if ((rc = comm_wait1(&ch->recv, me - 1, "gradient exchange")) != ST_OK)
        return rc;
    float *y = ch->slot + (size_t)((j + 1) % COMM_CHAIN_SLOTS) * ch->S;
    /* The next partial goes to the next slot: its send (chunk j + 1 - SLOTS) first. */
    int ns = (int)((j + 1) % COMM_CHAIN_SLOTS);
    if (j + 1 < J && (rc = comm_wait1(&ch->send[ns], ch->send_peer[ns], "gradient exchange")) != ST_OK)
        return rc;
    if (j + 1 < J) {
        size_t o2, c2;
        int w2;
        comm_chain_chunk(n, a, b, W, C, j + 1, &o2, &c2, &w2);
        if ((rc = comm_check(MPI_Irecv(y, (int)c2, MPI_FLOAT, me - 1, 73, MPI_COMM_WORLD, &ch->recv), "receive")) != ST_OK)
            return rc;
    }
    if (me == W - 1 && owner == me) {
        for (size_t i = 0; i < cnt; i++)
            g[i] = x[i] + g[i];
        return ST_OK;
    }
    for (size_t i = 0; i < cnt; i++)
        x[i] = x[i] + g[i];
    if ((rc = comm_chain_final(ch, buf, n, a, b, C, j)) != ST_OK)
        return rc;
    ch->send_peer[s] = me == W - 1 ? owner : me + 1;
    return comm_check(MPI_Isend(x, (int)cnt, MPI_FLOAT, ch->send_peer[s], me == W - 1 ? 74 : 73, MPI_COMM_WORLD,
                                &ch->send[s]), "send");
}

static int comm_rs_span(float *buf, size_t n, size_t a, size_t b)
{
    if (comm_world == 1)
        return ST_OK;
    int W = comm_world, me = comm_me, rc = ST_OK;
    size_t C = comm_chunk, J = comm_chain_chunks(n, a, b, W, C), S = comm_chain_largest(n, a, b, W, C);
    comm_chain ch = {.S = S, .recv = MPI_REQUEST_NULL};
    for (int s = 0; s < COMM_CHAIN_SLOTS; s++)
        ch.send[s] = MPI_REQUEST_NULL, ch.send_peer[s] = -1, ch.sent_chunk[s] = -1;
    ch.slot = me > 0 ? malloc((S ? S : 1) * COMM_CHAIN_SLOTS * sizeof(float)) : NULL;
    ch.fin = malloc((J ? J : 1) * sizeof *ch.fin);
    ch.fin_peer = malloc((J ? J : 1) * sizeof *ch.fin_peer);
    if ((me > 0 && !ch.slot) || !ch.fin || !ch.fin_peer) {
        rc = util_fail(ST_SOFTWARE, "out of memory in gradient reduction (%zu floats)", S * COMM_CHAIN_SLOTS);
        goto out;
    }
    if (me > 0 && J > 0) {
        size_t o0, c0;
        int w0;
        comm_chain_chunk(n, a, b, W, C, 0, &o0, &c0, &w0);
        rc = comm_check(MPI_Irecv(ch.slot, (int)c0, MPI_FLOAT, me - 1, 73, MPI_COMM_WORLD, &ch.recv), "receive");
    }
    for (size_t j = 0; j < J && rc == ST_OK; j++)
        rc = comm_chain_step(&ch, buf, n, a, b, C, j, J);
    /* The last sends, in chunk order: rank 0's finals must be posted in the
     * order rank W-1 sends them. */
    for (size_t j = J > COMM_CHAIN_SLOTS ? J - COMM_CHAIN_SLOTS : 0; j < J && rc == ST_OK; j++) {
        int s = (int)(j % COMM_CHAIN_SLOTS);
        rc = comm_wait1(&ch.send[s], ch.send_peer[s], "gradient exchange");
        if (rc == ST_OK && me == 0 && ch.sent_chunk[s] >= 0)
            rc = comm_chain_final(&ch, buf, n, a, b, C, (size_t)ch.sent_chunk[s]);
    }
    if (rc == ST_OK && ch.nfin > 0)
        rc = comm_waitall(ch.fin, ch.fin_peer, ch.nfin, "gradient exchange");
out:
    free(ch.slot);
    free(ch.fin);
    free(ch.fin_peer);
    return rc;
}

/* In the same rounds: each rank sends its piece to every peer and receives
 * every peer's piece straight into place. */
static int comm_ag_span(float *buf, size_t n, size_t a, size_t b)
{
    if (comm_world == 1)
        return ST_OK;
    int W = comm_world, me = comm_me, rc = ST_OK;
    size_t C = comm_chunk, rounds = comm_span_rounds(n, a, b, W, C);
    MPI_Request *req = malloc(2 * (size_t)W * sizeof *req);
    int *peer = malloc(2 * (size_t)W * sizeof *peer);
    if (!req || !peer) {
        free(req);
        free(peer);
        return util_fail(ST_SOFTWARE, "out of memory in parameter gather");
    }
    for (size_t k = 0; k < rounds && rc == ST_OK; k++) {
        size_t off, cnt;
        int nr = 0;
        comm_span_piece(n, a, b, me, W, C, k, &off, &cnt);
        for (int r = 0; r < W; r++) {
            size_t po, pc;
            comm_span_piece(n, a, b, r, W, C, k, &po, &pc);
            if (r != me && pc > 0) {
                peer[nr] = r;
                MPI_Irecv(buf + (po - a), (int)pc, MPI_FLOAT, r, 72, MPI_COMM_WORLD, &req[nr++]);
            }
            if (r != me && cnt > 0) {
                peer[nr] = r;
                MPI_Isend(buf + (off - a), (int)cnt, MPI_FLOAT, r, 72, MPI_COMM_WORLD, &req[nr++]);
            }
        }
        rc = comm_waitall(req, peer, nr, "parameter gather");
    }
    free(req);
    free(peer);
    return rc;
}

/* ---- the comm worker ([comm] overlap) -----------------------------------
 * One thread runs the queued span collectives in FIFO order while the main
 * thread computes. MPI_THREAD_SERIALIZED is all it needs: the main thread
 * makes no MPI call while the queue holds work, because every public
 * collective below drains the queue first. Every rank queues the same
 * collectives in the same order, so the messages match as when blocking. */
enum { COMM_JOB_RS, COMM_JOB_AG };
typedef struct {
    int kind;
    float *buf;
    size_t n, a, b;
    comm_after then;
    void *arg;
} comm_job;

#define COMM_QUEUE 8
static pthread_mutex_t comm_q_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t comm_q_work = PTHREAD_COND_INITIALIZER, comm_q_done_cv = PTHREAD_COND_INITIALIZER;
static comm_job comm_q[COMM_QUEUE];
static long comm_q_next = 1, comm_q_done;   /* next ticket to give; last ticket finished */
static int comm_q_rc;                        /* the first failed job's code; later jobs do not run */
static int comm_q_thread;                    /* 1: the worker runs; 0: not yet; -1: blocking */

static int comm_job_run(const comm_job *j)
{
    int rc = j->kind == COMM_JOB_RS ? comm_rs_span(j->buf, j->n, j->a, j->b) : comm_ag_span(j->buf, j->n, j->a, j->b);
    if (rc == ST_OK && j->then)
        j->then(j->arg);
    return rc;
}

static void *comm_worker(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&comm_q_mu);
    for (;;) {
        while (comm_q_done + 1 >= comm_q_next)
            pthread_cond_wait(&comm_q_work, &comm_q_mu);
        comm_job j = comm_q[(comm_q_done + 1) % COMM_QUEUE];
        int skip = comm_q_rc;
        pthread_mutex_unlock(&comm_q_mu);
        int rc = skip ? skip : comm_job_run(&j);
        pthread_mutex_lock(&comm_q_mu);
        if (rc != ST_OK && !comm_q_rc)
            comm_q_rc = rc;
        comm_q_done++;
        pthread_cond_broadcast(&comm_q_done_cv);
    }
    return NULL;
}

/* Starts the worker on first use: only with MPI over 2+ ranks, overlap on
 * and MPI_THREAD_SERIALIZED provided; otherwise the queue runs each job at
 * once (one line says why when MPI lacks the level). */
static int comm_async_ready(void)
{
    if (comm_q_thread)
        return comm_q_thread > 0;
    comm_q_thread = -1;
    if (!comm_overlap || comm_world < 2 || !comm_mpi_on)
        return 0;
    if (comm_thread_level < MPI_THREAD_SERIALIZED) {
        if (comm_me == 0)
            util_log("comm.overlap: MPI provides no MPI_THREAD_SERIALIZED; the bucket exchanges block");
        return 0;
    }
    pthread_t th;
    sigset_t all, old;
    sigfillset(&all);   /* signals stay with the main thread (spot's handlers) */
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int ok = pthread_create(&th, NULL, comm_worker, NULL) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (ok) {
        pthread_detach(th);
        comm_q_thread = 1;
        if (comm_me == 0)
            util_log("comm.overlap: the bucket exchanges run on a comm worker thread");
    } else if (comm_me == 0) {
        util_log("comm.overlap: no worker thread; the bucket exchanges block");
    }
    return ok;
}

int comm_async_active(void) { return comm_async_ready(); }

static long comm_async_put(const comm_job *j)
{
    if (!comm_async_ready()) {
        long t = comm_q_next++;
        int rc = comm_q_rc ? comm_q_rc : comm_job_run(j);
        if (rc != ST_OK && !comm_q_rc)
            comm_q_rc = rc;
        comm_q_done = t;
        return t;
    }
    pthread_mutex_lock(&comm_q_mu);
    while (comm_q_next - comm_q_done > COMM_QUEUE - 1)
        pthread_cond_wait(&comm_q_done_cv, &comm_q_mu);
    long t = comm_q_next;
    comm_q[t % COMM_QUEUE] = *j;
    comm_q_next++;
    pthread_cond_signal(&comm_q_work);
    pthread_mutex_unlock(&comm_q_mu);
    return t;
}

long comm_async_reduce_scatter_span(float *buf, size_t n, size_t a, size_t b, comm_after then, void *arg)
{
    comm_job j = {COMM_JOB_RS, buf, n, a, b, then, arg};
    return comm_async_put(&j);
}

long comm_async_allgather_span(float *buf, size_t n, size_t a, size_t b)
{
    comm_job j = {COMM_JOB_AG, buf, n, a, b, NULL, NULL};
    return comm_async_put(&j);
}

int comm_async_wait(long ticket)
{
    if (comm_q_thread <= 0)
        return comm_q_rc;
    pthread_mutex_lock(&comm_q_mu);
    while (comm_q_done < ticket)
        pthread_cond_wait(&comm_q_done_cv, &comm_q_mu);
    int rc = comm_q_rc;
    pthread_mutex_unlock(&comm_q_mu);
    return rc;
}

int comm_async_drain(void) { return comm_async_wait(comm_q_next - 1); }

int comm_reduce_scatter_span(float *buf, size_t n, size_t a, size_t b)
{
    int rc = comm_async_drain();
    return rc != ST_OK ? rc : comm_rs_span(buf, n, a, b);
}

int comm_allgather_span(float *buf, size_t n, size_t a, size_t b)
{
    int rc = comm_async_drain();
    return rc != ST_OK ? rc : comm_ag_span(buf, n, a, b);
}

int comm_reduce_scatter(float *g, size_t n) { return comm_reduce_scatter_span(g, n, 0, n); }
int comm_allgather(float *p, size_t n) { return comm_allgather_span(p, n, 0, n); }

int comm_sum(double *v, int k)
{
    if (comm_world == 1)
        return ST_OK;
    int qrc = comm_async_drain();
    if (qrc != ST_OK)
        return qrc;
    double *all = malloc((size_t)k * (size_t)comm_world * sizeof *all);
    if (!all)
        return util_fail(ST_SOFTWARE, "out of memory");
    MPI_Request req;
    int rc = comm_check(MPI_Iallgather(v, k, MPI_DOUBLE, all, k, MPI_DOUBLE, MPI_COMM_WORLD, &req), "allgather");
    if (rc == ST_OK)
        rc = comm_waitall(&req, NULL, 1, "sum");
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
    int qrc = comm_async_drain();
    if (qrc != ST_OK)
        return qrc;
    MPI_Request req;
    int rc = comm_check(MPI_Iallreduce(MPI_IN_PLACE, v, k, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD, &req), "allreduce");
    return rc == ST_OK ? comm_waitall(&req, NULL, 1, "allreduce") : rc;
}

int comm_bcast(void *buf, size_t bytes, int root)
{
    if (comm_world == 1)
        return ST_OK;
    int qrc = comm_async_drain();
    if (qrc != ST_OK)
        return qrc;
    MPI_Request req;
    int peer = root;
    int rc = comm_check(MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, MPI_COMM_WORLD, &req), "broadcast");
    /* Only a waiting non-root knows whom it waits on. */
    return rc == ST_OK ? comm_waitall(&req, comm_me != root ? &peer : NULL, 1, "broadcast") : rc;
}

int comm_barrier(void)
{
    if (comm_world == 1)
        return ST_OK;
    int qrc = comm_async_drain();
    if (qrc != ST_OK)
        return qrc;
    MPI_Request req;
    int rc = comm_check(MPI_Ibarrier(MPI_COMM_WORLD, &req), "barrier");
    return rc == ST_OK ? comm_waitall(&req, NULL, 1, "barrier") : rc;
}

#else /* single process */

int comm_init(int *argc, char ***argv) { return ST_OK; }
int comm_local_rank(void) { return 0; }
void comm_finalize(int rc) { (void)rc; }
void comm_abort(int code) {}
int comm_reduce_scatter(float *g, size_t n) { return ST_OK; }
int comm_reduce_scatter_span(float *buf, size_t n, size_t a, size_t b) { return ST_OK; }
int comm_reduce_scatter_flat_span(float *buf, size_t n, size_t a, size_t b) { return ST_OK; }
int comm_allgather(float *p, size_t n) { return ST_OK; }
int comm_allgather_span(float *buf, size_t n, size_t a, size_t b) { return ST_OK; }
int comm_async_active(void) { return 0; }
/* One process: nothing to exchange; then runs at once, as after a reduce. */
static long comm_q_next = 1;
long comm_async_reduce_scatter_span(float *buf, size_t n, size_t a, size_t b, comm_after then, void *arg)
{
    if (then)
        then(arg);
    return comm_q_next++;
}
long comm_async_allgather_span(float *buf, size_t n, size_t a, size_t b) { return comm_q_next++; }
int comm_async_wait(long ticket) { return ST_OK; }
int comm_async_drain(void) { return ST_OK; }
int comm_sum(double *v, int k) { return ST_OK; }
int comm_max(int64_t *v, int k) { return ST_OK; }
int comm_bcast(void *buf, size_t bytes, int root) { return ST_OK; }
int comm_barrier(void) { return ST_OK; }

#endif
