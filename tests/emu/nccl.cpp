/* Emulation of libnccl.so.2 (tests/emu): exactly the calls cuda/nccl.cu
 * makes, over MPI point-to-point in the same processes (the trainer has
 * called MPI_Init, mpirun started them). Built as a shared library with
 * the soname libnccl.so.2, which emu.cpp preloads, so nccl.cu's
 * dlopen("libnccl.so.2") finds it.
 *
 * Streams: NCCL queues a group's sends and receives on their stream, to
 * run after the work queued there before and before the work queued
 * after. The emulator runs queued work on whichever host thread waits for
 * it, and a drain of every stream (a cudaFree, cudaFreeHost or
 * cudaHostUnregister on the checkpoint writer's thread) would then run
 * MPI on a thread other than the one that initialised it, which
 * MPI_THREAD_FUNNELED forbids. So a group runs eagerly at ncclGroupEnd on
 * the calling thread: first the emulator drains each stream the group
 * names up to its last queued operation (emu_stream_flush), then all of
 * the group's MPI_Irecv and MPI_Isend are posted and waited for together
 * (matching rounds on two ranks cannot deadlock). For one stream that is
 * the same order as a GPU's: everything queued before the group has run,
 * nothing queued after it has. What differs is only when: the bytes are
 * there when ncclGroupEnd returns, earlier than on a GPU. Every MPI call
 * checks MPI_Is_thread_main and fails with ncclInvalidUsage otherwise.
 *
 * Without MPI (EMU_NCCL_MPI unset, or MPI not initialised) one rank
 * works: a send to itself is a copy. */
#include "nccl.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <vector>

#ifdef EMU_NCCL_MPI
#include <mpi.h>
#endif

/* emu.cpp hands over its stream drain and its device-memory check after
 * loading this library (a test program is not linked -rdynamic). */
typedef int (*emu_flush_fn)(cudaStream_t s);
typedef int (*emu_is_device_fn)(const void *p, size_t bytes);
static emu_flush_fn emu_flush;
static emu_is_device_fn emu_dev_check;
extern "C" void emu_nccl_bind(emu_flush_fn f, emu_is_device_fn d)
{
    emu_flush = f;
    emu_dev_check = d;
}

struct emu_nccl_comm {
    int rank, world;
    int aborted;
    ncclResult_t async;
    char last[256];
#ifdef EMU_NCCL_MPI
    MPI_Comm mc;
#endif
};

struct emu_nccl_op {
    int send;
    void *buf;
    size_t bytes;
    int peer;
    ncclComm_t comm;
    cudaStream_t s;
};

static thread_local int emu_depth;                      /* ncclGroupStart nesting */
static thread_local std::vector<emu_nccl_op> emu_ops;   /* the open group's */
static thread_local char emu_last[256];

static ncclResult_t emu_fail(ncclComm_t c, ncclResult_t r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static ncclResult_t emu_fail(ncclComm_t c, ncclResult_t r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(emu_last, sizeof emu_last, fmt, ap);
    va_end(ap);
    fprintf(stderr, "nccl emulator: %s\n", emu_last);
    if (c) {
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

/* Collective over all ranks, as NCCL's: the id every rank passes must be
 * the one rank 0 made (the trainer broadcast it), checked here. */
ncclResult_t ncclCommInitRankConfig(ncclComm_t *out, int nranks, ncclUniqueId id, int rank, ncclConfig_t *config)
{
    (void)config;   /* blocking or not: init is done when this returns (ncclSuccess) */
    *out = NULL;
    if (nranks < 1 || rank < 0 || rank >= nranks)
        return emu_fail(NULL, ncclInvalidArgument, "ncclCommInitRankConfig: rank %d of %d", rank, nranks);
    emu_nccl_comm *c = (emu_nccl_comm *)calloc(1, sizeof *c);
    if (!c)
        return emu_fail(NULL, ncclSystemError, "out of host memory");
    c->rank = rank;
    c->world = nranks;
    if (emu_mpi_on()) {
#ifdef EMU_NCCL_MPI
        int size = 0, main = 0;
        MPI_Is_thread_main(&main);
        if (!main) {
            free(c);
            return emu_fail(NULL, ncclInvalidUsage, "ncclCommInitRankConfig off the thread that initialised MPI");
        }
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        if (size != nranks) {
            free(c);
            return emu_fail(NULL, ncclInvalidArgument, "ncclCommInitRankConfig: %d ranks, but MPI has %d", nranks,
                            size);
        }
        /* ranks in NCCL's order, on a communicator of their own */
        MPI_Comm_split(MPI_COMM_WORLD, 0, rank, &c->mc);
        ncclUniqueId root = id;
        MPI_Bcast(&root, (int)sizeof root, MPI_BYTE, 0, c->mc);
        int same = !memcmp(&root, &id, sizeof id), all = 0;
        MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_LAND, c->mc);
        if (!all) {
            MPI_Comm_free(&c->mc);
            free(c);
            return emu_fail(NULL, ncclInvalidUsage, "ncclCommInitRankConfig: the ranks passed different ids");
        }
#endif
    } else if (nranks != 1) {
        free(c);
        return emu_fail(NULL, ncclSystemError, "ncclCommInitRankConfig: %d ranks need MPI (run under mpirun with an "
                        "MPI build)", nranks);
    }
    emu_log_connections(c);
    *out = c;
    return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *async_error)
{
    if (!comm)
        return ncclInvalidArgument;
    *async_error = comm->async;
    return ncclSuccess;
}

/* Every group completed at its ncclGroupEnd: nothing is left to flush. */
ncclResult_t ncclCommFinalize(ncclComm_t comm) { return comm ? ncclSuccess : ncclInvalidArgument; }

static void emu_comm_free(ncclComm_t comm, int collective)
{
#ifdef EMU_NCCL_MPI
    if (comm->world > 1 && emu_mpi_on()) {
        if (collective)
            MPI_Comm_free(&comm->mc);
        /* an abort leaves it: its peer may be gone */
    }
#endif
    (void)collective;
    free(comm);
}

ncclResult_t ncclCommDestroy(ncclComm_t comm)
{
    if (!comm)
        return ncclInvalidArgument;
    emu_comm_free(comm, 1);
    return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm)
{
    if (comm)
        emu_comm_free(comm, 0);
    return ncclSuccess;
}

ncclResult_t ncclGroupStart(void)
{
    emu_depth++;
    return ncclSuccess;
}

/* Runs the group's operations: each stream drained, then all receives and
 * sends posted, then waited for together. */
static ncclResult_t emu_run_ops(std::vector<emu_nccl_op> &ops)
{
    ncclResult_t rc = ncclSuccess;
    for (size_t i = 0; i < ops.size(); i++) {
        int seen = 0;
        for (size_t j = 0; j < i; j++)
            seen |= ops[j].s == ops[i].s;
        if (!seen && emu_flush && emu_flush(ops[i].s) != 0)
            return emu_fail(ops[i].comm, ncclUnhandledCudaError, "the stream's earlier work failed");
    }
    for (size_t i = 0; i < ops.size(); i++)
        if (ops[i].comm->aborted || ops[i].comm->async != ncclSuccess)
            return emu_fail(ops[i].comm, ncclInvalidUsage, "the communicator failed earlier");
#ifdef EMU_NCCL_MPI
    if (emu_mpi_on()) {
        int main = 0;
        MPI_Is_thread_main(&main);
        if (!main)
            return emu_fail(ops.empty() ? NULL : ops[0].comm, ncclInvalidUsage,
                            "a group ran off the thread that initialised MPI (MPI_THREAD_FUNNELED)");
        std::vector<MPI_Request> req(ops.size(), MPI_REQUEST_NULL);
        /* receives first, then sends: per (peer, direction) in call order, as NCCL's */
        for (int pass = 0; pass < 2; pass++)
            for (size_t i = 0; i < ops.size(); i++) {
                emu_nccl_op *o = &ops[i];
                if (o->send != pass)
                    continue;
                if (o->bytes > (size_t)INT32_MAX)
                    return emu_fail(o->comm, ncclInvalidArgument, "a message of %zu bytes (the emulator's limit is "
                                    "2^31 - 1)", o->bytes);
                int e = o->send ? MPI_Isend(o->buf, (int)o->bytes, MPI_BYTE, o->peer, 0, o->comm->mc, &req[i])
                                : MPI_Irecv(o->buf, (int)o->bytes, MPI_BYTE, o->peer, 0, o->comm->mc, &req[i]);
                if (e != MPI_SUCCESS)
                    rc = emu_fail(o->comm, ncclSystemError, "MPI_%s to/from %d failed", o->send ? "Isend" : "Irecv",
                                  o->peer);
            }
        if (MPI_Waitall((int)req.size(), req.data(), MPI_STATUSES_IGNORE) != MPI_SUCCESS)
            rc = emu_fail(ops[0].comm, ncclRemoteError, "MPI_Waitall failed");
        return rc;
    }
#endif
    /* one rank: a send to itself meets the receive in order */
    std::vector<emu_nccl_op *> sends;
    for (size_t i = 0; i < ops.size(); i++)
        if (ops[i].send)
            sends.push_back(&ops[i]);
    size_t k = 0;
    for (size_t i = 0; i < ops.size(); i++) {
        if (ops[i].send)
            continue;
        if (k == sends.size() || sends[k]->bytes != ops[i].bytes)
            return emu_fail(ops[i].comm, ncclInvalidUsage, "a receive with no matching send of the same size");
        memmove(ops[i].buf, sends[k++]->buf, ops[i].bytes);
    }
    return k == sends.size() ? rc : emu_fail(ops[0].comm, ncclInvalidUsage, "a send with no matching receive");
}

ncclResult_t ncclGroupEnd(void)
{
    if (emu_depth == 0)
        return emu_fail(NULL, ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
    if (--emu_depth > 0)
        return ncclSuccess;
    std::vector<emu_nccl_op> ops;
    ops.swap(emu_ops);
    return ops.empty() ? ncclSuccess : emu_run_ops(ops);
}

static ncclResult_t emu_p2p(int send, void *buf, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                            cudaStream_t s)
{
    if (!comm || comm->aborted)
        return emu_fail(comm, ncclInvalidArgument, "a send or receive on no communicator");
    if (type != ncclUint8 && type != ncclInt8)
        return emu_fail(comm, ncclInvalidArgument, "data type %d (the emulator moves bytes only)", (int)type);
    if (peer < 0 || peer >= comm->world)
        return emu_fail(comm, ncclInvalidArgument, "peer %d of %d", peer, comm->world);
    if (count && emu_dev_check && !emu_dev_check(buf, count))
        return emu_fail(comm, ncclInvalidArgument, "%s buffer %p (%zu bytes) is not device memory",
                        send ? "send" : "receive", buf, count);
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

ncclResult_t ncclSend(const void *buf, size_t count, ncclDataType_t type, int peer, ncclComm_t comm, cudaStream_t s)
{
    return emu_p2p(1, (void *)buf, count, type, peer, comm, s);
}

ncclResult_t ncclRecv(void *buf, size_t count, ncclDataType_t type, int peer, ncclComm_t comm, cudaStream_t s)
{
    return emu_p2p(0, buf, count, type, peer, comm, s);
}

}   /* extern "C" */
