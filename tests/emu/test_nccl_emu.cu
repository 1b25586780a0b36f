/* The emulated NCCL's non-blocking semantics (tests/emu/nccl.cpp) on 2
 * ranks: it starts itself under `mpirun -np 2`. A group a late peer has
 * not joined is in progress, an event recorded after it is not ready and
 * a kernel queued after it sees the received bytes; a blocking
 * communicator finishes before returning; an abort with a peer that never
 * answers returns at once, lets the stream go on and makes later use an
 * error; an injected asynchronous error is reported by
 * ncclCommGetAsyncError and holds the stream until the abort.
 * module: cuda comm */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cuda_runtime.h>
#include <nccl.h>

extern "C" {
#include "tests/harness.h"
}

enum { N = 1 << 16 };   /* 256 KiB: past MPI's eager limit, so a send waits for its receive */
static int me;

__global__ void emu_t_double_k(float *p, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n)
        p[i] *= 2.0f;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Polls until the communicator is no longer in progress (10 s at most). */
static ncclResult_t settle(ncclComm_t c)
{
    ncclResult_t a = ncclInProgress;
    for (double t0 = now(); a == ncclInProgress && now() - t0 < 10; usleep(200))
        if (ncclCommGetAsyncError(c, &a) != ncclSuccess)
            return ncclInternalError;
    return a;
}

static ncclComm_t open_comm(int blocking)
{
    ncclUniqueId id;
    ncclComm_t c = NULL;
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = blocking;
    if (me == 0)
        ncclGetUniqueId(&id);
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    ncclResult_t r = ncclCommInitRankConfig(&c, 2, id, me, &cfg);
    EXPECT(blocking ? r == ncclSuccess : r == ncclSuccess || r == ncclInProgress);
    EXPECT(settle(c) == ncclSuccess);
    return c;
}

struct bufs {
    float *send, *recv, *host;
    cudaStream_t s;
    cudaEvent_t ev;
};

static void bufs_open(bufs *b)
{
    EXPECT(cudaMalloc((void **)&b->send, N * sizeof(float)) == cudaSuccess);
    EXPECT(cudaMalloc((void **)&b->recv, N * sizeof(float)) == cudaSuccess);
    b->host = (float *)malloc(N * sizeof(float));
    for (int i = 0; i < N; i++)
        b->host[i] = (float)(me + 1);
    EXPECT(cudaMemcpy(b->send, b->host, N * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
    EXPECT(cudaStreamCreateWithFlags(&b->s, cudaStreamNonBlocking) == cudaSuccess);
    EXPECT(cudaEventCreateWithFlags(&b->ev, cudaEventDisableTiming) == cudaSuccess);
}

static void bufs_close(bufs *b)
{
    cudaStreamSynchronize(b->s);
    cudaFree(b->send);
    cudaFree(b->recv);
    cudaStreamDestroy(b->s);
    cudaEventDestroy(b->ev);
    free(b->host);
}

static ncclResult_t exchange(bufs *b, ncclComm_t c, int send, int recv)
{
    ncclGroupStart();
    if (send)
        ncclSend(b->send, N * sizeof(float), ncclUint8, 1 - me, c, b->s);
    if (recv)
        ncclRecv(b->recv, N * sizeof(float), ncclUint8, 1 - me, c, b->s);
    return ncclGroupEnd();
}

/* Rank 1 joins 300 ms late: rank 0's group is in progress meanwhile. */
static void test_nonblocking_order(void)
{
    bufs b;
    ncclComm_t c = open_comm(0);
    ncclResult_t a = ncclSuccess;
    bufs_open(&b);
    MPI_Barrier(MPI_COMM_WORLD);
    if (me == 1)
        usleep(300000);
    ncclResult_t r = exchange(&b, c, 1, 1);
    emu_t_double_k<<<N / 256, 256, 0, b.s>>>(b.recv, N);
    EXPECT(cudaEventRecord(b.ev, b.s) == cudaSuccess);
    if (me == 0) {
        EXPECT(r == ncclInProgress);
        EXPECT(ncclCommGetAsyncError(c, &a) == ncclSuccess && a == ncclInProgress);
        EXPECT(cudaEventQuery(b.ev) == cudaErrorNotReady);
        EXPECT(cudaGetLastError() == cudaSuccess);   /* not ready is not an error */
        EXPECT(ncclSend(b.send, 4, ncclUint8, 1, c, b.s) == ncclInvalidUsage);   /* still in progress */
    } else {
        EXPECT(r == ncclInProgress || r == ncclSuccess);
    }
    EXPECT(settle(c) == ncclSuccess);
    EXPECT(cudaEventSynchronize(b.ev) == cudaSuccess);
    EXPECT(cudaMemcpy(b.host, b.recv, N * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
    EXPECT(b.host[0] == 2.0f * (float)(2 - me) && b.host[N - 1] == 2.0f * (float)(2 - me));
    EXPECT(ncclCommFinalize(c) == ncclSuccess || settle(c) == ncclSuccess);
    EXPECT(ncclCommDestroy(c) == ncclSuccess);
    bufs_close(&b);
    MPI_Barrier(MPI_COMM_WORLD);
}

static void test_blocking(void)
{
    bufs b;
    ncclComm_t c = open_comm(1);
    bufs_open(&b);
    EXPECT(exchange(&b, c, 1, 1) == ncclSuccess);
    /* done for NCCL, but a copy on the legacy stream is still unordered
     * after the non-blocking stream's receive (the hazard checker says so) */
    EXPECT(cudaStreamSynchronize(b.s) == cudaSuccess);
    EXPECT(cudaMemcpy(b.host, b.recv, N * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
    EXPECT(b.host[N / 2] == (float)(2 - me));
    EXPECT(ncclCommDestroy(c) == ncclSuccess);
    bufs_close(&b);
    MPI_Barrier(MPI_COMM_WORLD);
}

/* Rank 0 waits for a send rank 1 never makes, then aborts. */
static void test_abort_unanswered(void)
{
    bufs b;
    ncclComm_t c = open_comm(0);
    bufs_open(&b);
    if (me == 0) {
        EXPECT(exchange(&b, c, 0, 1) == ncclInProgress);
        emu_t_double_k<<<N / 256, 256, 0, b.s>>>(b.recv, N);
        usleep(100000);
        ncclResult_t a = ncclSuccess;
        EXPECT(ncclCommGetAsyncError(c, &a) == ncclSuccess && a == ncclInProgress);
        double t0 = now();
        EXPECT(ncclCommAbort(c) == ncclSuccess);
        EXPECT(cudaStreamSynchronize(b.s) == cudaSuccess);   /* the stream goes on */
        EXPECT(now() - t0 < 2.0);
        EXPECT(ncclSend(b.send, 4, ncclUint8, 1, c, b.s) == ncclInvalidUsage);
        EXPECT(ncclCommGetAsyncError(c, &a) == ncclInvalidUsage);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (me == 1)
        EXPECT(ncclCommDestroy(c) == ncclSuccess);
    bufs_close(&b);
}

/* Rank 0's group fails once its transfers completed. */
static void test_async_fault(void)
{
    bufs b;
    ncclComm_t c = open_comm(0);
    bufs_open(&b);
    setenv("SPOTRAIN_EMU_NCCL_FAULT", "remote@0:1", 1);
    exchange(&b, c, 1, 1);
    EXPECT(cudaEventRecord(b.ev, b.s) == cudaSuccess);
    ncclResult_t a = settle(c);
    if (me == 0) {
        EXPECT(a == ncclRemoteError);
        EXPECT(strstr(ncclGetLastError(c), "emulated fault") != NULL);
        EXPECT(cudaEventQuery(b.ev) == cudaErrorNotReady);   /* held, as a failed kernel */
        EXPECT(ncclCommAbort(c) == ncclSuccess);
        EXPECT(cudaEventSynchronize(b.ev) == cudaSuccess);
    } else {
        EXPECT(a == ncclSuccess);
        EXPECT(ncclCommDestroy(c) == ncclSuccess);
    }
    unsetenv("SPOTRAIN_EMU_NCCL_FAULT");
    bufs_close(&b);
    MPI_Barrier(MPI_COMM_WORLD);
}

int main(int argc, char **argv)
{
    int provided = 0;
    if (!getenv("OMPI_COMM_WORLD_SIZE")) {
        /* as tests/cli/lib.sh: mpirun as root in containers and CI */
        setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
        setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
        execlp("mpirun", "mpirun", "-np", "2", "--oversubscribe", argv[0], (char *)NULL);
        printf("SKIP emulated NCCL: no mpirun\n0 passed, 0 failed\n");
        return 0;
    }
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    if (me != 0 && !freopen("/dev/null", "w", stdout))
        return 1;
    harness_run("emu_nccl_nonblocking_order", test_nonblocking_order);
    harness_run("emu_nccl_blocking", test_blocking);
    harness_run("emu_nccl_abort_unanswered", test_abort_unanswered);
    harness_run("emu_nccl_async_fault", test_async_fault);
    int rc = harness_end();
    MPI_Finalize();
    return rc;
}
