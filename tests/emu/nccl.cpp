/* Emulation of libnccl.so.2 (tests/emu): exactly the calls cuda/nccl.cu
 * makes, over MPI point-to-point in the same processes (the trainer has
 * called MPI_Init, mpirun started them). Built as a shared library with
 * the soname libnccl.so.2, which emu.cpp preloads, so nccl.cu's
 * dlopen("libnccl.so.2") finds it. Also the faults tests inject
 * (SPOTRAIN_EMU_NCCL_FAULT, below).
 *
 * Streams: NCCL queues a group's sends and receives on their stream, to
 * run after the work queued there before and before the work queued
 * after. Here ncclGroupEnd queues a gate on each stream the group names
 * (emu_stream_gate): when the stream reaches it, everything queued before
 * has run and the group's MPI_Irecv/MPI_Isend are posted; the stream
 * passes it only once they completed (or the communicator was aborted),
 * so a kernel queued after the group sees the bytes and an event recorded
 * after it is not ready before. MPI_THREAD_FUNNELED allows MPI only on the
 * thread that initialised it, while the emulator runs queued work on
 * whichever host thread waits (the checkpoint writer's cudaFree drains
 * every stream): so only that thread posts and tests requests (in
 * ncclGroupEnd, ncclCommGetAsyncError, and at a gate it reaches itself);
 * on another thread a gate only reads the group's state, and the wait
 * polls until the NCCL thread has made progress.
 *
 * Blocking communicators (config->blocking != 0, or no config) finish
 * init and every group before the call returns. Non-blocking ones
 * (blocking = 0) answer ncclInProgress from ncclCommInitRankConfig,
 * ncclGroupEnd and ncclCommFinalize, and ncclCommGetAsyncError says
 * ncclInProgress until the operation has completed (real NCCL: until it
 * was launched; this is stricter), then ncclSuccess or the error. Init is
 * nonblocking MPI too (MPI_Comm_idup, Ibcast, Iallreduce), so a peer that
 * never joins leaves it in progress, not blocked. A call on a communicator
 * while it is in progress is ncclInvalidUsage, as is any use after
 * ncclCommAbort or ncclCommDestroy (the handle stays valid memory here so
 * that is caught). ncclCommAbort returns at once: pending receives are
 * cancelled, requests freed, the gates opened (the kernels ended).
 *
 * Without MPI (EMU_NCCL_MPI unset, or MPI not initialised) one rank
 * works: a send to itself is a copy.
 *
 * Faults, for tests only: SPOTRAIN_EMU_NCCL_FAULT=KIND@RANK:N makes the
 * N-th group (1-based, counted per communicator) on NCCL rank RANK fail
 * asynchronously once its transfers completed, with KIND remote
 * (ncclRemoteError), system (ncclSystemError) or internal
 * (ncclInternalError), or never complete (hang: nothing is posted), or
 * have its first ncclSend or ncclRecv fail at the call (call:
 * ncclInternalError; the group then ends with that error and moves
 * nothing, as any group holding a failed call). N = init does the same to
 * the communicator's init (not call). */
#include "nccl.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <atomic>
#include <vector>

#ifdef EMU_NCCL_MPI
#include <mpi.h>
#endif

/* emu.cpp hands over its stream drain, its device-memory check and its
 * gates after loading this library (a test program is not linked
 * -rdynamic). */
typedef int (*emu_flush_fn)(cudaStream_t s);
typedef int (*emu_is_device_fn)(const void *p, size_t bytes);
typedef void (*emu_gate_fn)(cudaStream_t s, int (*open)(void *), void *arg, void (*release)(void *),
                            const void *const *ptrs, const int *writes, int n);
static emu_flush_fn emu_flush;
static emu_is_device_fn emu_dev_check;
static emu_gate_fn emu_gate;
extern "C" void emu_nccl_bind(emu_flush_fn f, emu_is_device_fn d, emu_gate_fn g)
{
    emu_flush = f;
    emu_dev_check = d;
    emu_gate = g;
}

enum { EMU_MAX_STREAMS = 4 };                      /* distinct streams in one group */
enum { G_QUEUED, G_POSTED, G_DONE, G_FAILED, G_HUNG, G_ABORTED };

struct emu_nccl_op {
    int send;
    void *buf;
    size_t bytes;
    int peer;
    ncclComm_t comm;
    cudaStream_t s;
};

/* One ncclGroupEnd's transfers. Held by its communicator's list and by
 * each gate; state and reached are read by gates on any thread. */
struct emu_group {
    std::atomic<int> refs, state;
    std::atomic<int> reached[EMU_MAX_STREAMS];
    cudaStream_t streams[EMU_MAX_STREAMS];
    int nstreams;
    ncclComm_t comm;              /* NULL once the communicator is gone */
    std::vector<emu_nccl_op> ops;
#ifdef EMU_NCCL_MPI
    std::vector<MPI_Request> req;
#endif
    ncclResult_t fault;           /* an injected failure at completion */
    char fault_msg[160];
};

struct emu_gate_arg {
    emu_group *g;
    int i;                        /* which of g's streams */
};

struct emu_nccl_comm {
    int rank, world, blocking;
    int dead;                     /* aborted or destroyed: the handle stays, any use is an error */
    int init;                     /* init steps left to complete (0: ready) */
    int init_hang, finalizing, groups_ended;
    ncclResult_t async;
    char last[256];
    std::vector<emu_group *> groups;   /* not yet completed, in order */
    ncclUniqueId id, root;
    int same, all;
#ifdef EMU_NCCL_MPI
    MPI_Comm mc;
    MPI_Request init_req;
#endif
};

static thread_local int emu_depth;                      /* ncclGroupStart nesting */
static thread_local std::vector<emu_nccl_op> emu_ops;   /* the open group's */
static thread_local char emu_last[256];
static thread_local ncclResult_t emu_group_err;         /* a call inside the open group failed */
/* aborted and destroyed handles, kept (never destroyed: reachable at exit) */
static std::vector<ncclComm_t> *emu_gone = new std::vector<ncclComm_t>;
static pthread_t emu_mpi_thread;                        /* where MPI may be called */
static int emu_mpi_thread_set;

static ncclResult_t emu_fail(ncclComm_t c, ncclResult_t r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static ncclResult_t emu_fail(ncclComm_t c, ncclResult_t r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(emu_last, sizeof emu_last, fmt, ap);
    va_end(ap);
    fprintf(stderr, "nccl emulator: %s\n", emu_last);
    if (c && !c->dead) {
        snprintf(c->last, sizeof c->last, "%s", emu_last);
        c->async = r;
    }
    return r;
}

static int emu_mpi_on(void)
{
#ifdef EMU_NCCL_MPI
    int on = 0, off = 0;
    MPI_Initialized(&on);
    MPI_Finalized(&off);
    return on && !off;
#else
    return 0;
#endif
}

/* May this thread call MPI (or, without MPI, make progress at all)? */
static int emu_on_nccl_thread(void)
{
    return !emu_mpi_thread_set || pthread_equal(pthread_self(), emu_mpi_thread);
}

static void emu_pause(void)
{
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
}

/* ---- injected faults ---------------------------------------------------- */

/* SPOTRAIN_EMU_NCCL_FAULT=KIND@RANK:N for this rank's N-th group (n >= 1)
 * or its init (n == 0): the result to fail with (ncclInProgress: hang),
 * or ncclSuccess when none applies. */
static ncclResult_t emu_fault(int rank, int n, char *msg, size_t cap)
{
    const char *e = getenv("SPOTRAIN_EMU_NCCL_FAULT");
    char kind[16], at[16];
    int r = -1;
    if (!e || sscanf(e, "%15[a-z]@%d:%15s", kind, &r, at) != 3 || r != rank)
        return ncclSuccess;
    if (n == 0 ? strcmp(at, "init") != 0 : atoi(at) != n)
        return ncclSuccess;
    snprintf(msg, cap, "emulated fault SPOTRAIN_EMU_NCCL_FAULT=%s (%s %s on rank %d)", e,
             !strcmp(kind, "hang") ? "never completes" : "fails", n == 0 ? "init" : "this group", rank);
    if (!strcmp(kind, "remote"))
        return ncclRemoteError;
    if (!strcmp(kind, "system"))
        return ncclSystemError;
    if (!strcmp(kind, "internal"))
        return ncclInternalError;
    if (!strcmp(kind, "hang"))
        return ncclInProgress;
    if (!strcmp(kind, "call") && n > 0)
        return ncclUnhandledCudaError;   /* a marker: emu_p2p fails the call with ncclInternalError */
    fprintf(stderr, "nccl emulator: SPOTRAIN_EMU_NCCL_FAULT=%s: KIND is remote, system, internal or hang\n", e);
    return ncclSuccess;
}

extern "C" {

ncclResult_t ncclGetVersion(int *version)
{
    *version = 22605;   /* says 2.26.5: what the loader's version line prints */
    return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    memset(id, 0, sizeof *id);
    snprintf(id->internal, sizeof id->internal, "emu-nccl %d %ld.%09ld", (int)getpid(), (long)ts.tv_sec,
             (long)ts.tv_nsec);
    return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t r)
{
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    }
    return "unknown result code";
}

const char *ncclGetLastError(ncclComm_t comm) { return comm && comm->last[0] ? comm->last : emu_last; }

}   /* extern "C" */

/* NCCL_DEBUG=INFO with NCCL_DEBUG_FILE (what `selftest comm` sets to
 * name the transports): the connection lines NCCL writes, saying MPI. */
static void emu_log_connections(const emu_nccl_comm *c)
{
    const char *dbg = getenv("NCCL_DEBUG"), *path = getenv("NCCL_DEBUG_FILE");
    if (!dbg || strcasecmp(dbg, "INFO") || !path || !*path)
        return;
    FILE *f = fopen(path, "w");
    if (!f)
        return;
    fprintf(f, "emu:%d:%d [0] NCCL INFO Using network MPI (emulated NCCL)\n", (int)getpid(), (int)getpid());
    for (int p = 0; p < c->world; p++)
        if (p != c->rank)
            fprintf(f, "emu:%d:%d [0] NCCL INFO Channel 00/0 : %d[0] -> %d[0] via NET/emulated-MPI/0\n", (int)getpid(),
                    (int)getpid(), c->rank, p);
    fclose(f);
}

/* ---- init --------------------------------------------------------------- */

/* One step of init on the NCCL thread: a duplicate of MPI_COMM_WORLD
 * (NCCL ranks are MPI's), rank 0's id broadcast, then an agreement that
 * every rank passed that id. Each step is a nonblocking collective,
 * tested, never waited for. */
static void emu_init_progress(ncclComm_t c)
{
    if (c->init == 0 || c->init_hang || c->async != ncclSuccess)
        return;
#ifdef EMU_NCCL_MPI
    int flag = 0;
    if (c->init_req != MPI_REQUEST_NULL && MPI_Test(&c->init_req, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
        emu_fail(c, ncclSystemError, "ncclCommInitRankConfig: MPI_Test failed");
        return;
    }
    if (c->init_req != MPI_REQUEST_NULL)
        return;
    switch (c->init) {
    case 3:
        c->root = c->id;
        MPI_Ibcast(&c->root, (int)sizeof c->root, MPI_BYTE, 0, c->mc, &c->init_req);
        c->init = 2;
        break;
    case 2:
        c->same = !memcmp(&c->root, &c->id, sizeof c->id);
        MPI_Iallreduce(&c->same, &c->all, 1, MPI_INT, MPI_LAND, c->mc, &c->init_req);
        c->init = 1;
        break;
    case 1:
        c->init = 0;
        if (!c->all)
            emu_fail(c, ncclInvalidUsage, "ncclCommInitRankConfig: the ranks passed different ids");
        else
            emu_log_connections(c);
        break;
    }
#endif
}

extern "C" ncclResult_t ncclCommInitRankConfig(ncclComm_t *out, int nranks, ncclUniqueId id, int rank,
                                               ncclConfig_t *config)
{
    *out = NULL;
    if (nranks < 1 || rank < 0 || rank >= nranks)
        return emu_fail(NULL, ncclInvalidArgument, "ncclCommInitRankConfig: rank %d of %d", rank, nranks);
    emu_nccl_comm *c = new emu_nccl_comm();
    c->rank = rank;
    c->world = nranks;
    c->blocking = !config || config->blocking != 0;
    c->id = id;
    c->async = ncclSuccess;
    char msg[160];
    ncclResult_t f = emu_fault(rank, 0, msg, sizeof msg);
    if (emu_mpi_on()) {
#ifdef EMU_NCCL_MPI
        int size = 0, main = 0, me = -1;
        MPI_Is_thread_main(&main);
        if (!main) {
            delete c;
            return emu_fail(NULL, ncclInvalidUsage, "ncclCommInitRankConfig off the thread that initialised MPI");
        }
        emu_mpi_thread = pthread_self();
        emu_mpi_thread_set = 1;
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        MPI_Comm_rank(MPI_COMM_WORLD, &me);
        if (size != nranks || me != rank) {
            delete c;
            return emu_fail(NULL, ncclInvalidArgument, "ncclCommInitRankConfig: rank %d of %d, but MPI says %d of "
                            "%d (the emulator needs NCCL's ranks to be MPI_COMM_WORLD's)", rank, nranks, me, size);
        }
        c->init_req = MPI_REQUEST_NULL;
        c->init = 3;
        if (f == ncclInProgress)
            c->init_hang = 1;
        else
            MPI_Comm_idup(MPI_COMM_WORLD, &c->mc, &c->init_req);
#endif
    } else if (nranks != 1) {
        delete c;
        return emu_fail(NULL, ncclSystemError, "ncclCommInitRankConfig: %d ranks need MPI (run under mpirun with an "
                        "MPI build)", nranks);
    } else {
        c->init = f == ncclInProgress ? 1 : 0;
        c->init_hang = f == ncclInProgress;
        if (!c->init_hang)
            emu_log_connections(c);
    }
    if (f != ncclSuccess && f != ncclInProgress) {
        /* fails asynchronously: the peers' init still completes or waits */
        snprintf(c->last, sizeof c->last, "%s", msg);
        c->async = f;
    }
    *out = c;
    for (;;) {
        emu_init_progress(c);
        if (c->init == 0 || c->async != ncclSuccess || !c->blocking)
            break;
        emu_pause();
    }
    if (c->blocking && c->async != ncclSuccess) {
        ncclResult_t r = c->async;
        *out = NULL;
        c->dead = 1;
        emu_gone->push_back(c);
        return r;
    }
    return c->init == 0 && c->async == ncclSuccess ? ncclSuccess : ncclInProgress;
}

/* ---- groups ------------------------------------------------------------- */

static void emu_group_unref(emu_group *g)
{
    if (--g->refs == 0)
        delete g;
}

static void emu_gate_release(void *arg)
{
    emu_gate_arg *a = (emu_gate_arg *)arg;
    emu_group_unref(a->g);
    delete a;
}

/* Posts the group's receives, then its sends (per (peer, direction) in
 * call order, as NCCL's); one rank without MPI: copies, done at once. */
static void emu_group_post(emu_group *g)
{
    ncclComm_t c = g->comm;
    if (g->fault == ncclInProgress) {
        g->state = G_HUNG;
        return;
    }
#ifdef EMU_NCCL_MPI
    if (emu_mpi_on()) {
        g->req.assign(g->ops.size(), MPI_REQUEST_NULL);
        for (int pass = 0; pass < 2; pass++)
            for (size_t i = 0; i < g->ops.size(); i++) {
                emu_nccl_op *o = &g->ops[i];
                if (o->send != pass)
                    continue;
                int e = o->send ? MPI_Isend(o->buf, (int)o->bytes, MPI_BYTE, o->peer, 0, c->mc, &g->req[i])
                                : MPI_Irecv(o->buf, (int)o->bytes, MPI_BYTE, o->peer, 0, c->mc, &g->req[i]);
                if (e != MPI_SUCCESS) {
                    emu_fail(c, ncclSystemError, "MPI_%s to/from %d failed", o->send ? "Isend" : "Irecv", o->peer);
                    g->state = G_FAILED;
                    return;
                }
            }
        g->state = G_POSTED;
        return;
    }
#endif
    /* one rank: a send to itself meets the receive in order */
    std::vector<emu_nccl_op *> sends;
    for (size_t i = 0; i < g->ops.size(); i++)
        if (g->ops[i].send)
            sends.push_back(&g->ops[i]);
    size_t k = 0;
    for (size_t i = 0; i < g->ops.size(); i++) {
        if (g->ops[i].send)
            continue;
        if (k == sends.size() || sends[k]->bytes != g->ops[i].bytes) {
            emu_fail(c, ncclInvalidUsage, "a receive with no matching send of the same size");
            g->state = G_FAILED;
            return;
        }
        memmove(g->ops[i].buf, sends[k++]->buf, g->ops[i].bytes);
    }
    if (k != sends.size()) {
        emu_fail(c, ncclInvalidUsage, "a send with no matching receive");
        g->state = G_FAILED;
        return;
    }
    g->state = G_POSTED;
}

/* On the NCCL thread: post once every stream reached its gate, then test. */
static void emu_group_progress(emu_group *g)
{
    if (g->state == G_QUEUED) {
        for (int i = 0; i < g->nstreams; i++)
            if (!g->reached[i])
                return;
        emu_group_post(g);
    }
    if (g->state != G_POSTED)
        return;
    int done = 1;
#ifdef EMU_NCCL_MPI
    if (!g->req.empty() &&
        MPI_Testall((int)g->req.size(), g->req.data(), &done, MPI_STATUSES_IGNORE) != MPI_SUCCESS) {
        emu_fail(g->comm, ncclRemoteError, "MPI_Testall failed");
        g->state = G_FAILED;
        return;
    }
#endif
    if (!done)
        return;
    if (g->fault != ncclSuccess) {
        snprintf(g->comm->last, sizeof g->comm->last, "%s", g->fault_msg);
        g->comm->async = g->fault;
        g->state = G_FAILED;
        return;
    }
    g->state = G_DONE;
}

/* At the gate on stream i: reached; open once done or aborted (failed or
 * hung: closed until the communicator is aborted, as an NCCL kernel). */
static int emu_gate_open(void *arg)
{
    emu_gate_arg *a = (emu_gate_arg *)arg;
    emu_group *g = a->g;
    g->reached[a->i] = 1;
    if (emu_on_nccl_thread() && g->comm && (g->state == G_QUEUED || g->state == G_POSTED))
        emu_group_progress(g);
    return g->state == G_DONE || g->state == G_ABORTED;
}

/* On the NCCL thread: every pending group forward (its streams run up to
 * their gates first), completed ones dropped. */
static void emu_comm_progress(ncclComm_t c)
{
    emu_init_progress(c);
    for (size_t k = 0; k < c->groups.size(); k++) {
        emu_group *g = c->groups[k];
        for (int i = 0; i < g->nstreams && g->state == G_QUEUED; i++)
            if (!g->reached[i] && emu_flush)
                emu_flush(g->streams[i]);
        if (g->state == G_QUEUED || g->state == G_POSTED)
            emu_group_progress(g);
    }
    size_t w = 0;
    for (size_t k = 0; k < c->groups.size(); k++) {
        if (c->groups[k]->state == G_DONE)
            emu_group_unref(c->groups[k]);
        else
            c->groups[w++] = c->groups[k];
    }
    c->groups.resize(w);
}

/* ncclInProgress while init or a group is under way, then the first error
 * or ncclSuccess. */
static ncclResult_t emu_comm_state(ncclComm_t c)
{
    if (c->async != ncclSuccess)
        return c->async;
    return c->init || !c->groups.empty() ? ncclInProgress : ncclSuccess;
}

/* Whether a new call may use c: alive, initialised, idle. */
static ncclResult_t emu_comm_usable(ncclComm_t c, const char *what)
{
    if (!c)
        return emu_fail(NULL, ncclInvalidArgument, "%s on no communicator", what);
    if (c->dead)
        return emu_fail(NULL, ncclInvalidUsage, "%s on a communicator that was aborted or destroyed", what);
    if (c->async != ncclSuccess)
        return emu_fail(c, ncclInvalidUsage, "%s: the communicator failed earlier (%s)", what, c->last);
    if (c->init || !c->groups.empty())
        return emu_fail(NULL, ncclInvalidUsage, "%s while the communicator is still in progress (poll "
                        "ncclCommGetAsyncError until ncclSuccess first)", what);
    return ncclSuccess;
}

/* Ends the group's requests without waiting for a peer: receives
 * cancelled (completed within ~50 ms, else freed), sends freed. */
static void emu_group_cancel(emu_group *g)
{
#ifdef EMU_NCCL_MPI
    if (emu_mpi_on())
        for (size_t i = 0; i < g->req.size(); i++) {
            if (g->req[i] == MPI_REQUEST_NULL)
                continue;
            if (!g->ops[i].send) {
                int flag = 0;
                MPI_Cancel(&g->req[i]);
                for (int t = 0; t < 250 && !flag; t++) {
                    MPI_Test(&g->req[i], &flag, MPI_STATUS_IGNORE);
                    if (!flag)
                        emu_pause();
                }
            }
            if (g->req[i] != MPI_REQUEST_NULL)
                MPI_Request_free(&g->req[i]);
        }
#endif
    g->state = G_ABORTED;
    g->comm = NULL;
}

/* The handle stays (so later use is caught), emptied. */
static void emu_comm_bury(ncclComm_t c)
{
    for (size_t k = 0; k < c->groups.size(); k++) {
        emu_group_cancel(c->groups[k]);
        emu_group_unref(c->groups[k]);
    }
    c->groups.clear();
    c->groups.shrink_to_fit();
    c->dead = 1;
    emu_gone->push_back(c);
}

extern "C" {

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *async_error)
{
    if (!comm)
        return ncclInvalidArgument;
    if (comm->dead)
        return emu_fail(NULL, ncclInvalidUsage, "ncclCommGetAsyncError on a communicator that was aborted or "
                        "destroyed");
    if (!emu_on_nccl_thread())
        return emu_fail(NULL, ncclInvalidUsage, "ncclCommGetAsyncError off the thread that initialised MPI "
                        "(MPI_THREAD_FUNNELED)");
    emu_comm_progress(comm);
    *async_error = emu_comm_state(comm);
    return ncclSuccess;
}

/* Completes what is pending: non-blocking, in progress until then. */
ncclResult_t ncclCommFinalize(ncclComm_t comm)
{
    if (!comm || comm->dead)
        return emu_fail(NULL, ncclInvalidUsage, "ncclCommFinalize on no, an aborted or a destroyed communicator");
    comm->finalizing = 1;
    for (;;) {
        emu_comm_progress(comm);
        ncclResult_t r = emu_comm_state(comm);
        if (r != ncclInProgress)
            return r;
        if (!comm->blocking)
            return ncclInProgress;
        emu_pause();
    }
}

ncclResult_t ncclCommDestroy(ncclComm_t comm)
{
    if (!comm || comm->dead)
        return emu_fail(NULL, ncclInvalidUsage, "ncclCommDestroy on no, an aborted or a destroyed communicator");
#ifdef EMU_NCCL_MPI
    /* MPI_Comm_free completes locally; an init still under way keeps it */
    if (comm->world > 1 && emu_mpi_on() && comm->init == 0)
        MPI_Comm_free(&comm->mc);
#endif
    emu_comm_bury(comm);
    return ncclSuccess;
}

/* Never waits for a peer: the communicator (its MPI duplicate and an init
 * collective a peer never joined included) is left to MPI_Abort. */
ncclResult_t ncclCommAbort(ncclComm_t comm)
{
    if (!comm || comm->dead)
        return emu_fail(NULL, ncclInvalidUsage, "ncclCommAbort on no, an aborted or a destroyed communicator");
    if (!emu_on_nccl_thread())
        return emu_fail(NULL, ncclInvalidUsage, "ncclCommAbort off the thread that initialised MPI");
    /* the group would stay open and swallow this thread's next NCCL calls */
    if (emu_depth > 0)
        fprintf(stderr, "nccl emulator: ncclCommAbort inside an open group (ncclGroupStart without its "
                "ncclGroupEnd)\n");
    emu_comm_bury(comm);
    return ncclSuccess;
}

ncclResult_t ncclGroupStart(void)
{
    emu_depth++;
    return ncclSuccess;
}

}   /* extern "C" */

/* Queues the group: one gate per stream it names, then as far forward as
 * it goes now (a blocking communicator: to the end). */
static ncclResult_t emu_run_ops(std::vector<emu_nccl_op> &ops)
{
    ncclComm_t c = ops[0].comm;
    for (size_t i = 1; i < ops.size(); i++)
        if (ops[i].comm != c)
            return emu_fail(c, ncclInvalidUsage, "a group over two communicators (the emulator takes one)");
    ncclResult_t u = emu_comm_usable(c, "ncclGroupEnd");
    if (u != ncclSuccess)
        return u;
    if (emu_mpi_on() && !emu_on_nccl_thread())
        return emu_fail(c, ncclInvalidUsage, "a group ended off the thread that initialised MPI (MPI_THREAD_FUNNELED)");
    emu_group *g = new emu_group();
    g->refs = 1;
    g->state = G_QUEUED;
    g->comm = c;
    g->ops = ops;
    g->nstreams = 0;
    for (size_t i = 0; i < ops.size(); i++) {
        int seen = 0;
        for (int j = 0; j < g->nstreams; j++)
            seen |= g->streams[j] == ops[i].s;
        if (seen)
            continue;
        if (g->nstreams == EMU_MAX_STREAMS) {
            delete g;
            return emu_fail(c, ncclInvalidUsage, "a group on more than %d streams (the emulator's limit)",
                            EMU_MAX_STREAMS);
        }
        g->reached[g->nstreams] = 0;
        g->streams[g->nstreams++] = ops[i].s;
    }
    g->fault = emu_fault(c->rank, ++c->groups_ended, g->fault_msg, sizeof g->fault_msg);
    if (g->fault == ncclUnhandledCudaError)
        g->fault = ncclSuccess;   /* "call" fails a call, not the group (emu_p2p_check) */
    c->groups.push_back(g);
    for (int j = 0; j < g->nstreams; j++) {
        std::vector<const void *> ptrs;
        std::vector<int> writes;
        for (size_t i = 0; i < ops.size(); i++)
            if (ops[i].s == g->streams[j]) {
                ptrs.push_back(ops[i].buf);
                writes.push_back(!ops[i].send);
            }
        g->refs++;
        emu_gate_arg *a = new emu_gate_arg{g, j};
        if (emu_gate)
            emu_gate(g->streams[j], emu_gate_open, a, emu_gate_release, ptrs.data(), writes.data(), (int)ptrs.size());
        else {
            g->reached[j] = 1;   /* no emulator: nothing queued to wait for */
            emu_gate_release(a);
        }
    }
    for (;;) {
        emu_comm_progress(c);
        ncclResult_t r = emu_comm_state(c);
        if (r != ncclInProgress)
            return r;
        if (!c->blocking)
            return ncclInProgress;
        emu_pause();
    }
}

extern "C" {

ncclResult_t ncclGroupEnd(void)
{
    if (emu_depth == 0)
        return emu_fail(NULL, ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
    if (--emu_depth > 0)
        return ncclSuccess;
    std::vector<emu_nccl_op> ops;
    ops.swap(emu_ops);
    ncclResult_t bad = emu_group_err;
    emu_group_err = ncclSuccess;
    if (bad != ncclSuccess)
        return bad;   /* the failed call said why; nothing of the group moves */
    return ops.empty() ? ncclSuccess : emu_run_ops(ops);
}

}   /* extern "C" */

static ncclResult_t emu_p2p_check(int send, void *buf, size_t count, ncclDataType_t type, int peer,
                                  ncclComm_t comm)
{
    ncclResult_t u = emu_comm_usable(comm, send ? "ncclSend" : "ncclRecv");
    if (u != ncclSuccess)
        return u;
    char msg[160];
    if (emu_depth > 0 && emu_ops.empty() &&
        emu_fault(comm->rank, comm->groups_ended + 1, msg, sizeof msg) == ncclUnhandledCudaError)
        return emu_fail(comm, ncclInternalError, "%s", msg);
    if (type != ncclUint8 && type != ncclInt8)
        return emu_fail(comm, ncclInvalidArgument, "data type %d (the emulator moves bytes only)", (int)type);
    if (peer < 0 || peer >= comm->world)
        return emu_fail(comm, ncclInvalidArgument, "peer %d of %d", peer, comm->world);
    if (count && emu_dev_check && !emu_dev_check(buf, count))
        return emu_fail(comm, ncclInvalidArgument, "%s buffer %p (%zu bytes) is not device memory",
                        send ? "send" : "receive", buf, count);
    if (count > (size_t)INT32_MAX)
        return emu_fail(comm, ncclInvalidArgument, "a message of %zu bytes (the emulator's limit is 2^31 - 1)", count);
    return ncclSuccess;
}

static ncclResult_t emu_p2p(int send, void *buf, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                            cudaStream_t s)
{
    ncclResult_t r = emu_p2p_check(send, buf, count, type, peer, comm);
    if (r != ncclSuccess) {
        if (emu_depth > 0 && emu_group_err == ncclSuccess)
            emu_group_err = r;
        return r;
    }
    emu_nccl_op o = {send, buf, count, peer, comm, s};
    if (count == 0)
        return ncclSuccess;
    if (emu_depth > 0) {
        emu_ops.push_back(o);
        return ncclSuccess;
    }
    std::vector<emu_nccl_op> one(1, o);
    return emu_run_ops(one);
}

extern "C" {

ncclResult_t ncclSend(const void *buf, size_t count, ncclDataType_t type, int peer, ncclComm_t comm, cudaStream_t s)
{
    return emu_p2p(1, (void *)buf, count, type, peer, comm, s);
}

ncclResult_t ncclRecv(void *buf, size_t count, ncclDataType_t type, int peer, ncclComm_t comm, cudaStream_t s)
{
    return emu_p2p(0, buf, count, type, peer, comm, s);
}

}   /* extern "C" */
