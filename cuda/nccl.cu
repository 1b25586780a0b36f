/* The NCCL data plane (nccl.cuh): libnccl opened with dlopen, a
 * non-blocking communicator bootstrapped over MPI, grouped send/receive
 * rounds from xfer.c's schedules (the chain reduce-scatter and its add
 * kernel; the all-gather), ncclReduceScatter for [comm] reduce = nccl, and waits that
 * poll the communicator so a vanished peer aborts it (exit 86) instead of
 * hanging. Also the device data plane `selftest comm` drives (cuda.h). */
#include "common.cuh"
#include "nccl.cuh"

#include <dlfcn.h>
#include <nccl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

extern "C" {
#include "comm/xfer.h"
#include "comm/comm.h"
}

static_assert((int)ncclSuccess == CUDA_NCCL_SUCCESS && (int)ncclUnhandledCudaError == CUDA_NCCL_UNHANDLED_CUDA &&
                  (int)ncclSystemError == CUDA_NCCL_SYSTEM && (int)ncclInternalError == CUDA_NCCL_INTERNAL &&
                  (int)ncclInvalidArgument == CUDA_NCCL_INVALID_ARGUMENT &&
                  (int)ncclInvalidUsage == CUDA_NCCL_INVALID_USAGE && (int)ncclRemoteError == CUDA_NCCL_REMOTE &&
                  (int)ncclInProgress == CUDA_NCCL_IN_PROGRESS,
              "xfer.h's NCCL result numbers match nccl.h");

#define CUDA_NCCL_FINALIZE_TIMEOUT 30.0

typedef struct {
    void *so;
    decltype(&ncclGetVersion) get_version;
    decltype(&ncclGetUniqueId) get_unique_id;
    decltype(&ncclCommInitRankConfig) init_rank_config;
    decltype(&ncclCommGetAsyncError) async_error;
    decltype(&ncclCommFinalize) finalize;
    decltype(&ncclCommDestroy) destroy;
    decltype(&ncclCommAbort) abort;
    decltype(&ncclGetErrorString) error_string;
    decltype(&ncclGetLastError) last_error;
    decltype(&ncclGroupStart) group_start;
    decltype(&ncclGroupEnd) group_end;
    decltype(&ncclSend) send;
    decltype(&ncclRecv) recv;
    decltype(&ncclReduceScatter) reduce_scatter;   /* NULL when absent: only [comm] reduce = nccl needs it */
} cuda_nccl_api;

struct cuda_nccl {
    cuda_nccl_api api;
    ncclComm_t comm;
    int rank, world;
    size_t chunk;            /* elements per rank per round (comm_get_chunk) */
    int reduce;              /* COMM_REDUCE_CHAIN | COMM_REDUCE_NCCL (comm_get_reduce at open) */
    float *recv;             /* chain: CUDA_XFER_CHAIN_SLOTS x chunk floats; nccl: world x chunk staging */
    cuda_xfer_op *ops;       /* world - 1 (the all-gather) */
    cudaEvent_t done;
    cudaEvent_t gathered;    /* after the started gather (cuda_nccl_allgather_span_start) */
    int gathering;           /* one is started and not yet waited for */
    char version[64];
    char log_path[128];      /* NCCL's INFO log while log_transport; "" otherwise */
};

/* ---- library ----------------------------------------------------------- */

static int cuda_nccl_load(cuda_nccl_api *a, char *version, size_t cap)
{
    memset(a, 0, sizeof *a);
    a->so = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!a->so)
        return util_fail(ST_UNAVAILABLE, "the NCCL data plane (more than one rank, or SPOTRAIN_NCCL=1) needs libnccl.so.2, which was not "
                         "found (%s); install NCCL 2.14 or newer or add its directory to LD_LIBRARY_PATH",
                         dlerror());
#define CUDA_NCCL_SYM(field, name)                                                                     \
    do {                                                                                               \
        *(void **)&a->field = dlsym(a->so, name);                                                      \
        if (!a->field) {                                                                               \
            dlclose(a->so);                                                                            \
            a->so = NULL;                                                                              \
            return util_fail(ST_UNAVAILABLE, "backend cuda: libnccl.so.2 lacks %s: NCCL is too old; "  \
                             "install 2.14 or newer", name);                                           \
        }                                                                                              \
    } while (0)
    CUDA_NCCL_SYM(get_version, "ncclGetVersion");
    CUDA_NCCL_SYM(get_unique_id, "ncclGetUniqueId");
    CUDA_NCCL_SYM(init_rank_config, "ncclCommInitRankConfig");
    CUDA_NCCL_SYM(async_error, "ncclCommGetAsyncError");
    CUDA_NCCL_SYM(finalize, "ncclCommFinalize");
    CUDA_NCCL_SYM(destroy, "ncclCommDestroy");
    CUDA_NCCL_SYM(abort, "ncclCommAbort");
    CUDA_NCCL_SYM(error_string, "ncclGetErrorString");
    CUDA_NCCL_SYM(last_error, "ncclGetLastError");
    CUDA_NCCL_SYM(group_start, "ncclGroupStart");
    CUDA_NCCL_SYM(group_end, "ncclGroupEnd");
    CUDA_NCCL_SYM(send, "ncclSend");
    CUDA_NCCL_SYM(recv, "ncclRecv");
#undef CUDA_NCCL_SYM
    *(void **)&a->reduce_scatter = dlsym(a->so, "ncclReduceScatter");
    int v = 0;
    a->get_version(&v);
    snprintf(version, cap, "NCCL %d.%d.%d (libnccl.so.2)", v / 10000, v / 100 % 100, v % 100);
    return ST_OK;
}

/* ---- failing loudly ---------------------------------------------------- */

/* Aborting frees the communicator and ends its kernels, so the streams
 * the backend later synchronises cannot hang on a dead peer. */
static void cuda_nccl_abort(cuda_nccl *x)
{
    if (x->comm) {
        x->api.abort(x->comm);
        x->comm = NULL;
    }
}

static int cuda_nccl_fail(cuda_nccl *x, const char *what, ncclResult_t r)
{
    char last[256];
    snprintf(last, sizeof last, "%s", x->comm ? x->api.last_error(x->comm) : "");
    cuda_nccl_abort(x);
    return util_fail(cuda_xfer_status(r), "NCCL %s failed on rank %d of %d: %s%s%s%s; %s", what, x->rank, x->world,
                     x->api.error_string(r), last[0] ? " (" : "", last, last[0] ? ")" : "", cuda_xfer_advice(r));
}

/* A non-blocking communicator answers ncclInProgress for work it has taken. */
static int cuda_nccl_taken(ncclResult_t r) { return r == ncclSuccess || r == ncclInProgress; }

/* Polls until the communicator is idle (ev NULL: after init, group end,
 * finalize) or the event has completed, through xfer.c's state machine. */
static int cuda_nccl_wait(cuda_nccl *x, cudaEvent_t ev, double timeout, const char *what)
{
    cuda_xfer_wait w;
    long pause_ns = 0;
    cuda_xfer_wait_begin(&w, util_now(), timeout);
    for (;;) {
        ncclResult_t a = ncclSuccess;
        if (!x->comm)
            return util_fail(ST_SOFTWARE, "NCCL %s: the communicator was aborted earlier", what);
        ncclResult_t q = x->api.async_error(x->comm, &a);
        if (q != ncclSuccess)
            a = q;
        int done = a == ncclSuccess;
        if (ev) {
            cudaError_t e = cudaEventQuery(ev);
            if (e != cudaSuccess && e != cudaErrorNotReady) {
                cuda_nccl_abort(x);
                return util_fail(ST_SOFTWARE, "NCCL %s: cuda: %s; check the GPU (nvidia-smi) and the driver", what,
                                 cudaGetErrorString(e));
            }
            done = e == cudaSuccess;
        }
        switch (cuda_xfer_wait_poll(&w, util_now(), (int)a, done)) {
        case CUDA_XW_DONE:
            return ST_OK;
        case CUDA_XW_FAILED:
            return cuda_nccl_fail(x, what, (ncclResult_t)w.err);
        case CUDA_XW_TIMED_OUT: {
            cuda_nccl_abort(x);
            char op[96];
            snprintf(op, sizeof op, "NCCL %s", what);
            double waited = util_now() - w.start;
            /* As an MPI wait's timeout: the ledger's comm_timeout record, and MPI_Abort at the exit. */
            const char *agreement = comm_note_timeout(op, -1, waited);
            return util_fail(ST_WATCHDOG, "%s: rank %d of %d waited %.0f s for a peer (spot.comm_timeout_seconds "
                             "= %g); a peer vanished or hung; communicator aborted, exiting %d so the job is "
                             "restarted", agreement, x->rank, x->world, waited, timeout, ST_WATCHDOG);
        }
        default:
            break;
        }
        util_poll_pause(&pause_ns);
    }
}

/* ---- bootstrap --------------------------------------------------------- */

static const char *cuda_nccl_getenv(const char *k) { return getenv(k); }

int cuda_nccl_pick_device(int world, int *dev, char *desc, size_t cap)
{
    int local = 0, ndev = 0;
    const char *from = NULL;
    char why[256] = "";
    int got = cuda_xfer_local_rank(cuda_nccl_getenv, &local, &from, why, sizeof why);
    if (got < 0)
        return util_fail(ST_CONFIG, "backend cuda: %s", why);
    if (got == 0) {
        local = comm_local_rank();
        from = world > 1 ? "MPI shared-memory split" : "one process";
    }
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess)
        return util_fail(ST_UNAVAILABLE, "backend cuda: no usable GPU (cudaGetDeviceCount: %s)", cudaGetErrorString(e));
    *dev = cuda_xfer_pick_device(local, ndev, why, sizeof why);
    if (*dev < 0)
        return util_fail(ST_UNAVAILABLE, "backend cuda: %s", why);
    snprintf(desc, cap, "GPU %d of %d (local rank %d from %s)", *dev, ndev, local, from);
    return ST_OK;
}

/* NCCL reads its debug settings at its first call: set them before. */
static void cuda_nccl_log_to_file(cuda_nccl *x)
{
    if (getenv("NCCL_DEBUG"))
        return;   /* the user's own settings win; their log says the same */
    snprintf(x->log_path, sizeof x->log_path, "/tmp/spotrain-nccl-%d.log", (int)getpid());
    unlink(x->log_path);
    setenv("NCCL_DEBUG", "INFO", 1);
    setenv("NCCL_DEBUG_SUBSYS", "INIT,P2P,NET", 1);
    setenv("NCCL_DEBUG_FILE", x->log_path, 1);
}

int cuda_nccl_open(cuda_nccl **out, int rank, int world, int log_transport)
{
    *out = NULL;
    cuda_nccl *x = (cuda_nccl *)calloc(1, sizeof *x);
    ncclUniqueId id;
    int rc = ST_OK;
    if (!x)
        return util_fail(ST_SOFTWARE, "backend cuda: out of host memory");
    x->rank = rank;
    x->world = world;
    x->chunk = comm_get_chunk();
    x->reduce = comm_get_reduce();
    if (log_transport)
        cuda_nccl_log_to_file(x);
    CU_OK(cuda_nccl_load(&x->api, x->version, sizeof x->version));
    memset(&id, 0, sizeof id);
    /* Every rank reaches the broadcast, so a failed id is broadcast too
     * (all zeros) and every rank fails the same way instead of waiting. */
    if (rank == 0 && x->api.get_unique_id(&id) != ncclSuccess)
        memset(&id, 0, sizeof id);
    CU_OK(comm_bcast(&id, sizeof id, 0));
    {
        static const ncclUniqueId zero = {};
        if (!memcmp(&id, &zero, sizeof id)) {
            rc = util_fail(ST_UNAVAILABLE, "NCCL: rank 0 could not create the communicator id (ncclGetUniqueId); "
                           "run with NCCL_DEBUG=INFO to see why");
            goto exit;
        }
    }
    {
        ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
        cfg.blocking = 0;   /* every wait is ours to bound */
        comm_test_freeze("nccl-init");
        ncclResult_t r = x->api.init_rank_config(&x->comm, world, id, rank, &cfg);
        if (!cuda_nccl_taken(r)) {
            x->comm = NULL;
            rc = util_fail(cuda_xfer_status(r), "NCCL communicator init failed on rank %d of %d: %s; %s", rank, world,
                           x->api.error_string(r), cuda_xfer_advice(r));
            goto exit;
        }
        /* Bounded like every other wait for peers (0: forever, as they are). */
        CU_OK(cuda_nccl_wait(x, NULL, comm_get_timeout(), "communicator init"));
    }
    if (x->reduce == COMM_REDUCE_NCCL && !x->api.reduce_scatter) {
        rc = util_fail(ST_UNAVAILABLE, "comm.reduce = nccl needs ncclReduceScatter, which %s lacks; use comm.reduce "
                       "= chain", x->version);
        goto exit;
    }
    if (world > 1) {
        size_t slots = x->reduce == COMM_REDUCE_NCCL ? (size_t)world : CUDA_XFER_CHAIN_SLOTS;
        if (cudaMalloc((void **)&x->recv, slots * x->chunk * sizeof(float)) != cudaSuccess) {
            cudaGetLastError();
            rc = util_fail(ST_SOFTWARE, "backend cuda: out of device memory for the gradient buffer (%zu x %zu "
                           "floats); lower SPOTRAIN_COMM_CHUNK", slots, x->chunk);
            goto exit;
        }
        x->ops = (cuda_xfer_op *)malloc((size_t)(world - 1) * sizeof *x->ops);
        if (!x->ops) {
            rc = util_fail(ST_SOFTWARE, "backend cuda: out of host memory");
            goto exit;
        }
    }
    CU_TRY(cudaEventCreateWithFlags(&x->done, cudaEventDisableTiming));
    CU_TRY(cudaEventCreateWithFlags(&x->gathered, cudaEventDisableTiming));
    *out = x;
    return ST_OK;
exit:
    cuda_nccl_close(x);
    return rc;
}

const char *cuda_nccl_version(const cuda_nccl *x) { return x->version; }

void cuda_nccl_close(cuda_nccl *x)
{
    if (!x)
        return;
    /* Non-blocking: finalize answers "in progress" and completes in the
     * background. Nothing is in flight at a clean end, so a finalize that
     * takes long means a peer is gone (an error path): abort it. */
    if (x->comm) {
        ncclResult_t r = x->api.finalize(x->comm);
        if (!cuda_nccl_taken(r))
            cuda_nccl_abort(x);
    }
    if (x->comm && cuda_nccl_wait(x, NULL, CUDA_NCCL_FINALIZE_TIMEOUT, "communicator finalize") != ST_OK)
        util_log("%s", util_last_error());
    if (x->comm)
        x->api.destroy(x->comm);
    if (x->recv)
        cudaFree(x->recv);
    if (x->done)
        cudaEventDestroy(x->done);
    if (x->gathered)
        cudaEventDestroy(x->gathered);
    if (x->log_path[0])
        unlink(x->log_path);
    if (x->api.so)
        dlclose(x->api.so);
    free(x->ops);
    free(x);
}

/* ---- the collectives --------------------------------------------------- */

#define CUDA_NCCL_RS "gradient reduce-scatter"

/* dst[i] = partial[i] + own[i]: the chain's step, the bits of the CPU's
 * s += g_r (comm/comm.c). One element per thread. */
__global__ void cuda_chain_add_kernel(float *dst, const float *partial, const float *own, size_t cnt)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < cnt)
        dst[i] = partial[i] + own[i];
}

/* One round's sends and receives as a group, then wait until NCCL has
 * taken them (non-blocking group end), so the next call is legal. A group
 * once started must end, even after a failed call inside, and before the
 * communicator is aborted: abort frees it, and a group left open would
 * hold the thread's next NCCL call. */
static int cuda_nccl_round(cuda_nccl *x, const char *src, char *dst, size_t esize, int nops, cudaStream_t s,
                           double timeout, const char *what)
{
    ncclResult_t bad = x->api.group_start();
    if (bad != ncclSuccess)
        return cuda_nccl_fail(x, what, bad);
    for (int i = 0; i < nops && cuda_nccl_taken(bad); i++) {
        const cuda_xfer_op *o = &x->ops[i];
        if (o->send_count)
            bad = x->api.send(src + o->send_off * esize, o->send_count * esize, ncclUint8, o->peer, x->comm, s);
        if (cuda_nccl_taken(bad) && o->recv_count)
            bad = x->api.recv(dst + o->recv_off * esize, o->recv_count * esize, ncclUint8, o->peer, x->comm, s);
    }
    ncclResult_t r = x->api.group_end();
    if (cuda_nccl_taken(bad))
        bad = r;
    if (!cuda_nccl_taken(bad))
        return cuda_nccl_fail(x, what, bad);
    return cuda_nccl_wait(x, NULL, timeout, what);
}

static int cuda_nccl_finish(cuda_nccl *x, cudaStream_t s, double timeout, const char *what)
{
    int rc = ST_OK;
    CU_TRY(cudaEventRecord(x->done, s));
    rc = cuda_nccl_wait(x, x->done, timeout, what);
exit:
    return rc;
}

/* A chain message's buffer: the vector, or a slot of x->recv. */
static char *cuda_nccl_msg_buf(cuda_nccl *x, float *g, const cuda_xfer_msg *m)
{
    return m->slot < 0 ? (char *)(g + m->off) : (char *)(x->recv + (size_t)m->slot * x->chunk);
}

/* One round of the chain (xfer.c's plan) as a group, then the add. */
static int cuda_nccl_chain_round(cuda_nccl *x, float *g, const cuda_xfer_chain_round *st, cudaStream_t s,
                                 double timeout, const char *what)
{
    int rc = ST_OK;
    if (st->send.peer >= 0 || st->recv.peer >= 0 || st->fin.peer >= 0) {
        ncclResult_t bad = x->api.group_start();
        if (bad != ncclSuccess)
            return cuda_nccl_fail(x, what, bad);
        if (st->send.peer >= 0)
            bad = x->api.send(cuda_nccl_msg_buf(x, g, &st->send), st->send.count * sizeof(float), ncclUint8, st->send.peer,
                              x->comm, s);
        if (cuda_nccl_taken(bad) && st->recv.peer >= 0)
            bad = x->api.recv(cuda_nccl_msg_buf(x, g, &st->recv), st->recv.count * sizeof(float), ncclUint8, st->recv.peer,
                              x->comm, s);
        if (cuda_nccl_taken(bad) && st->fin.peer >= 0)
            bad = x->api.recv(cuda_nccl_msg_buf(x, g, &st->fin), st->fin.count * sizeof(float), ncclUint8, st->fin.peer, x->comm,
                              s);
        ncclResult_t r = x->api.group_end();
        if (cuda_nccl_taken(bad))
            bad = r;
        if (!cuda_nccl_taken(bad))
            return cuda_nccl_fail(x, what, bad);
        CU_OK(cuda_nccl_wait(x, NULL, timeout, what));
    }
    if (st->add) {
        float *slot = x->recv + (size_t)st->add_slot * x->chunk, *own = g + st->add_off;
        cuda_chain_add_kernel<<<cuda_blocks((int64_t)st->add_count, 256), 256, 0, s>>>(
            st->add_into_vector ? own : slot, slot, own, st->add_count);
        CU_LAUNCHED();
    }
exit:
    return rc;
}

/* The chain over the span [a, b): comm.h's plan, rounds from xfer.c; the
 * bits of the CPU. g + x is element x (the span's buffer less a). freeze:
 * the test hook's name at the middle round, or NULL. */
static int cuda_nccl_rs_chain(cuda_nccl *x, float *g, size_t n, size_t a, size_t b, cudaStream_t s, double timeout,
                              const char *what, const char *freeze)
{
    size_t T = cuda_xfer_chain_rounds(n, a, b, x->world, x->chunk);
    int rc = ST_OK;
    for (size_t t = 0; t < T && rc == ST_OK; t++) {
        cuda_xfer_chain_round st;
        cuda_xfer_chain_round_plan(n, a, b, x->rank, x->world, x->chunk, t, &st);
        if (freeze && t == T / 2)
            comm_test_freeze(freeze);   /* mid-reduction: the peers have started it */
        rc = cuda_nccl_chain_round(x, g, &st, s, timeout, what);
    }
    return rc;
}

/* ncclReduceScatter in rounds: each rank's piece k of the span
 * (comm_span_piece; ranges differ in size, NCCL's blocks do not) copied
 * into slot r of the staging buffer, reduced into this rank's slot in
 * NCCL's order, copied back. g + x is element x. */
static int cuda_nccl_rs_nccl(cuda_nccl *x, float *g, size_t n, size_t a, size_t b, cudaStream_t s, double timeout,
                             const char *what, const char *freeze)
{
    size_t rounds = comm_span_rounds(n, a, b, x->world, x->chunk), C = x->chunk;
    int rc = ST_OK;
    for (size_t k = 0; k < rounds && rc == ST_OK; k++) {
        for (int r = 0; r < x->world; r++) {
            size_t off, cnt;
            comm_span_piece(n, a, b, r, x->world, C, k, &off, &cnt);
            if (cnt)
                CU_TRY(cudaMemcpyAsync(x->recv + (size_t)r * C, g + off, cnt * sizeof(float),
                                       cudaMemcpyDeviceToDevice, s));
        }
        if (freeze && k == rounds / 2)
            comm_test_freeze(freeze);
        float *mine = x->recv + (size_t)x->rank * C;
        ncclResult_t r = x->api.reduce_scatter(x->recv, mine, C, ncclFloat32, ncclSum, x->comm, s);
        if (!cuda_nccl_taken(r))
            return cuda_nccl_fail(x, what, r);
        CU_OK(cuda_nccl_wait(x, NULL, timeout, what));
        size_t off, cnt;
        comm_span_piece(n, a, b, x->rank, x->world, C, k, &off, &cnt);
        if (cnt)
            CU_TRY(cudaMemcpyAsync(g + off, mine, cnt * sizeof(float), cudaMemcpyDeviceToDevice, s));
    }
exit:
    return rc;
}

/* The span [a, b) of the n-element vector, held in buf (buf[0] is element
 * a), by the chain (or ncclReduceScatter under [comm] reduce = nccl):
 * every round queued on s, not waited for. Two in a row on one stream
 * share x->recv safely: the stream runs them one after the other. */
static int cuda_nccl_rs_rounds(cuda_nccl *x, float *buf, size_t n, size_t a, size_t b, cudaStream_t s,
                               const char *freeze)
{
    double timeout = comm_get_timeout();
    float *g = buf - a;   /* g + x: element x of the vector */
    if (!x->comm)
        return util_fail(ST_SOFTWARE, "NCCL %s: the communicator was aborted earlier", CUDA_NCCL_RS);
    if (x->world < 2)
        return ST_OK;
    return x->reduce == COMM_REDUCE_NCCL ? cuda_nccl_rs_nccl(x, g, n, a, b, s, timeout, CUDA_NCCL_RS, freeze)
                                         : cuda_nccl_rs_chain(x, g, n, a, b, s, timeout, CUDA_NCCL_RS, freeze);
}

static int cuda_nccl_rs(cuda_nccl *x, float *buf, size_t n, size_t a, size_t b, cudaStream_t s, const char *freeze)
{
    int rc = cuda_nccl_rs_rounds(x, buf, n, a, b, s, freeze);
    return rc == ST_OK ? cuda_nccl_finish(x, s, comm_get_timeout(), CUDA_NCCL_RS) : rc;
}

/* Queues every round of the gather on s; each returns once NCCL has
 * taken it (the group's launch). The caller waits for the bytes. */
static int cuda_nccl_ag_rounds(cuda_nccl *x, void *p, size_t n, size_t a, size_t b, size_t esize, cudaStream_t s,
                               const char *freeze)
{
    const char *what = esize == 4 ? "parameter all-gather" : "parameter all-gather (working copy)";
    double timeout = comm_get_timeout();
    size_t rounds = x->world > 1 ? comm_span_rounds(n, a, b, x->world, x->chunk) : 0;
    int rc = ST_OK;
    if (!x->comm)
        return util_fail(ST_SOFTWARE, "NCCL %s: the communicator was aborted earlier", what);
    for (size_t k = 0; k < rounds && rc == ST_OK; k++) {
        int nops = cuda_xfer_ag_span_round(n, a, b, x->rank, x->world, x->chunk, k, x->ops);
        if (freeze && k == rounds / 2)
            comm_test_freeze(freeze);
        if (nops > 0)
            rc = cuda_nccl_round(x, (const char *)p, (char *)p, esize, nops, s, timeout, what);
    }
    return rc;
}

static int cuda_nccl_ag(cuda_nccl *x, void *p, size_t n, size_t a, size_t b, size_t esize, cudaStream_t s,
                        const char *freeze)
{
    const char *what = esize == 4 ? "parameter all-gather" : "parameter all-gather (working copy)";
    int rc = cuda_nccl_ag_rounds(x, p, n, a, b, esize, s, freeze);
    return rc == ST_OK ? cuda_nccl_finish(x, s, comm_get_timeout(), what) : rc;
}

int cuda_nccl_reduce_scatter(cuda_nccl *x, float *g, size_t n, cudaStream_t s)
{
    return cuda_nccl_rs(x, g, n, 0, n, s, "nccl-reduce");
}

int cuda_nccl_allgather(cuda_nccl *x, void *p, size_t n, size_t esize, cudaStream_t s)
{
    return cuda_nccl_ag(x, p, n, 0, n, esize, s, "nccl-gather");
}

int cuda_nccl_reduce_scatter_span(cuda_nccl *x, float *buf, size_t n, size_t a, size_t b, cudaStream_t s)
{
    comm_test_freeze("bucket");
    return cuda_nccl_rs(x, buf, n, a, b, s, NULL);
}

int cuda_nccl_reduce_scatter_span_start(cuda_nccl *x, float *buf, size_t n, size_t a, size_t b, cudaStream_t s)
{
    comm_test_freeze("bucket");
    return cuda_nccl_rs_rounds(x, buf, n, a, b, s, NULL);
}

int cuda_nccl_stream_wait(cuda_nccl *x, cudaStream_t s, const char *what)
{
    if (!x->comm)
        return util_fail(ST_SOFTWARE, "NCCL %s: the communicator was aborted earlier", what);
    return cuda_nccl_finish(x, s, comm_get_timeout(), what);
}

int cuda_nccl_allgather_span(cuda_nccl *x, void *buf, size_t n, size_t a, size_t b, size_t esize, cudaStream_t s)
{
    comm_test_freeze("layer");
    return cuda_nccl_ag(x, buf, n, a, b, esize, s, NULL);
}

int cuda_nccl_allgather_span_start(cuda_nccl *x, void *buf, size_t n, size_t a, size_t b, size_t esize,
                                   cudaStream_t s)
{
    int rc = ST_OK;
    if (x->gathering)
        return util_fail(ST_SOFTWARE, "NCCL parameter all-gather: started while another is in flight");
    comm_test_freeze("layer");
    CU_OK(cuda_nccl_ag_rounds(x, buf, n, a, b, esize, s, NULL));
    CU_TRY(cudaEventRecord(x->gathered, s));
    x->gathering = 1;
exit:
    return rc;
}

int cuda_nccl_allgather_span_wait(cuda_nccl *x)
{
    if (!x->gathering)
        return ST_OK;
    x->gathering = 0;
    return cuda_nccl_wait(x, x->gathered, comm_get_timeout(), "parameter all-gather (prefetch)");
}

int cuda_nccl_transport(cuda_nccl *x, char *out, size_t cap)
{
    char *text = NULL;
    size_t len = 0;
    cuda_xfer_transports t;
    if (!x->log_path[0]) {
        snprintf(out, cap, "not logged (NCCL_DEBUG is set: see NCCL's own \"via\" lines)");
        return 0;
    }
    if (util_read_file(x->log_path, &text, &len) != ST_OK) {
        snprintf(out, cap, "unknown (NCCL wrote no log to %s)", x->log_path);
        return 0;
    }
    cuda_xfer_transport_scan(text, len, &t);
    free(text);
    return cuda_xfer_transport_line(&t, out, cap);
}

/* ---- the device data plane of `selftest comm` (backend_plane) ---------- */

/* The plane's state; p is first so a backend_plane * is a cuda_dp *. */
struct cuda_dp {
    backend_plane p;
    cuda_nccl *x;
    float *buf;
    size_t cap;
    cudaStream_t s;
    char where[256];      /* this rank's GPU and NCCL */
};

static void cuda_dp_close(backend_plane *bp)
{
    cuda_dp *d = (cuda_dp *)bp;
    if (!d)
        return;
    if (d->s)
        cudaStreamSynchronize(d->s);
    cuda_nccl_close(d->x);
    if (d->buf)
        cudaFree(d->buf);
    if (d->s)
        cudaStreamDestroy(d->s);
    free(d);
}

/* Host -> device, the collective (timed: it returns once the device is
 * done), device -> host. */
static int cuda_dp_run(cuda_dp *d, float *v, size_t n, double *seconds, int gather)
{
    int rc = ST_OK;
    if (n > d->cap)
        return util_fail(ST_SOFTWARE, "selftest comm: %zu floats exceed the %zu allocated", n, d->cap);
    CU_TRY(cudaMemcpyAsync(d->buf, v, n * sizeof(float), cudaMemcpyHostToDevice, d->s));
    CU_TRY(cudaStreamSynchronize(d->s));
    {
        double t0 = util_now();
        CU_OK(gather ? cuda_nccl_allgather(d->x, d->buf, n, sizeof(float), d->s)
                     : cuda_nccl_reduce_scatter(d->x, d->buf, n, d->s));
        *seconds = util_now() - t0;
    }
    CU_TRY(cudaMemcpyAsync(v, d->buf, n * sizeof(float), cudaMemcpyDeviceToHost, d->s));
    CU_TRY(cudaStreamSynchronize(d->s));
exit:
    return rc;
}

static int cuda_dp_reduce_scatter(backend_plane *p, float *v, size_t n, double *seconds)
{
    return cuda_dp_run((cuda_dp *)p, v, n, seconds, 0);
}

static int cuda_dp_allgather(backend_plane *p, float *v, size_t n, double *seconds)
{
    return cuda_dp_run((cuda_dp *)p, v, n, seconds, 1);
}

static void cuda_dp_describe(backend_plane *p, char *out, size_t cap)
{
    snprintf(out, cap, "NCCL send/receive + rank-order sum kernel; rank 0 on %s; %d rank%s on %d node%s, "
             "%zu-float message rounds", ((cuda_dp *)p)->where, comm_size(), comm_size() == 1 ? "" : "s",
             comm_nodes(), comm_nodes() == 1 ? "" : "s", comm_get_chunk());
}

static int cuda_dp_transport(backend_plane *p, char *out, size_t cap)
{
    return cuda_nccl_transport(((cuda_dp *)p)->x, out, cap);
}

extern "C" int backend_cuda_plane_open(backend_plane **out, size_t max_floats)
{
    cuda_dp *d = (cuda_dp *)calloc(1, sizeof *d);
    char dev_desc[160] = "";
    int dev = 0, rc = ST_OK;
    *out = NULL;
    if (!d)
        return util_fail(ST_SOFTWARE, "selftest comm: out of host memory");
    CU_OK(cuda_nccl_pick_device(comm_size(), &dev, dev_desc, sizeof dev_desc));
    CU_TRY(cudaSetDevice(dev));
    CU_TRY(cudaStreamCreateWithFlags(&d->s, cudaStreamNonBlocking));
    if (cudaMalloc((void **)&d->buf, (max_floats ? max_floats : 1) * sizeof(float)) != cudaSuccess) {
        cudaGetLastError();
        rc = util_fail(ST_SOFTWARE, "selftest comm: out of device memory for %zu floats", max_floats);
        goto exit;
    }
    d->cap = max_floats;
    CU_OK(cuda_nccl_open(&d->x, comm_rank(), comm_size(), 1));
    snprintf(d->where, sizeof d->where, "%s, %s", dev_desc, cuda_nccl_version(d->x));
    d->p.reduce_scatter = cuda_dp_reduce_scatter;
    d->p.allgather = cuda_dp_allgather;
    d->p.describe = cuda_dp_describe;
    d->p.transport = cuda_dp_transport;
    d->p.close = cuda_dp_close;
    d->p.impl = d;
    *out = &d->p;
    return ST_OK;
exit:
    cuda_dp_close(&d->p);
    return rc;
}
