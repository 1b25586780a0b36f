/* The NCCL data plane's host-side decisions in plain C, so they are tested
 * without a GPU (tests/unit/test_cuda_xfer.c): which device a rank drives, the
 * send/receive schedule of the chain reduce-scatter and the all-gather, the
 * wait-with-timeout state machine, what an NCCL status means for the job,
 * and which transport NCCL chose (from its INFO log). cuda/nccl.cu acts. */
#ifndef SPOTRAIN_CUDA_XFER_H
#define SPOTRAIN_CUDA_XFER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- device selection ------------------------------------------------- */

/* The launcher's local rank: OMPI_COMM_WORLD_LOCAL_RANK (Open MPI),
 * SLURM_LOCALID (srun), MPI_LOCALRANKID (MPICH/Hydra), in that order,
 * read through get (getenv in the backend, a table in tests). 1 and *local
 * and the variable's name in *from when one is set to a non-negative
 * integer; 0 when none is set (the caller asks MPI: a shared-memory split);
 * -1 with a message in why when one is set to something else. */
int cuda_xfer_local_rank(const char *(*get)(const char *), int *local, const char **from, char *why, size_t cap);

/* The device of local rank `local` on a node with ndev visible GPUs:
 * local itself; device 0 when only one is visible (the launcher bound one
 * GPU per rank, e.g. Slurm's --gpus-per-task, so every local rank sees its
 * own as 0). -1 with why when local >= ndev > 1: more ranks than GPUs on
 * the node, and two ranks on one GPU would halve both. */
int cuda_xfer_pick_device(int local, int ndev, char *why, size_t cap);

/* ---- transfer schedule ------------------------------------------------ */

/* One point-to-point transfer of an all-gather round, in elements. */
typedef struct {
    int peer;
    size_t send_off, send_count;   /* from the vector, to peer */
    size_t recv_off, recv_count;   /* into the vector, from peer */
} cuda_xfer_op;

/* Round k of the all-gather: my piece to every peer, every peer's piece
 * into its place. */
int cuda_xfer_ag_round(size_t n, int me, int W, size_t chunk, size_t k, cuda_xfer_op *ops);

/* The same over the span [a, b) of the n-element vector (a bucket of whole
 * layers, comm_span_piece's pieces, the CPU's bucket rule): every offset is
 * relative to a (the buffer holds the span). */
int cuda_xfer_ag_span_round(size_t n, size_t a, size_t b, int me, int W, size_t chunk, size_t k, cuda_xfer_op *ops);

/* ---- the chain reduce-scatter on NCCL ---------------------------------- */

/* comm.h's chain over [a, b) as lock-step rounds of one stream: in round t
 * rank r sends chunk t - r (rank 0 from the vector, the others from the
 * slot that holds their partial sum; rank W-1 sends the finished sum to
 * the chunk's owner) and receives chunk t - r + 1 from r - 1 into a slot;
 * after the round a kernel adds r's own part to what came in (into the
 * vector when rank W-1 owns the chunk). The owner receives its sum of
 * chunk t - (W-1) straight into the vector. Every link carries one chunk
 * a round; a chunk's slot is t - r + 1 mod CUDA_XFER_CHAIN_SLOTS, so the
 * slot being sent from is never the one being received into. */
#define CUDA_XFER_CHAIN_SLOTS 2

typedef struct {
    int peer;              /* -1: nothing */
    int slot;              /* -1: the vector at off; else a slot of the chain buffer */
    size_t off, count;     /* off: into the vector (element a is buf[0] of the span) */
} cuda_xfer_msg;

typedef struct {
    cuda_xfer_msg send, recv, fin;   /* fin: the owner's sum from rank W-1, into the vector */
    int add;                         /* after the round: slot add_slot += vector[add_off ..] */
    int add_slot, add_into_vector;   /* into_vector: vector = slot + vector (rank W-1 owns it) */
    size_t add_off, add_count;
} cuda_xfer_chain_round;

/* Rounds the chain takes: chunks + W - 1 (0 on one rank). */
size_t cuda_xfer_chain_rounds(size_t n, size_t a, size_t b, int W, size_t chunk);
/* Rank me's part of round t. */
void cuda_xfer_chain_round_plan(size_t n, size_t a, size_t b, int me, int W, size_t chunk, size_t t,
                                cuda_xfer_chain_round *out);

/* ---- waiting with a timeout ------------------------------------------- */

/* A wait on the device and the communicator:
 *   WAITING --stream done------------------------> DONE
 *   WAITING --async error (not in progress)------> FAILED   (abort, one line)
 *   WAITING --now - start > timeout (timeout > 0)-> TIMED_OUT (abort, exit 86)
 * An error seen in the same poll as the timeout wins: it says more. */
enum { CUDA_XW_WAITING, CUDA_XW_DONE, CUDA_XW_FAILED, CUDA_XW_TIMED_OUT };
typedef struct {
    double start, timeout;
    int state;
    int err;        /* the NCCL result that failed it */
} cuda_xfer_wait;

void cuda_xfer_wait_begin(cuda_xfer_wait *w, double now, double timeout);
/* One poll: async is ncclCommGetAsyncError's result (0 success, 7 in
 * progress), done whether the work has finished. Returns the new state
 * (terminal states stay). */
int cuda_xfer_wait_poll(cuda_xfer_wait *w, double now, int async, int done);

/* ---- NCCL results ----------------------------------------------------- */

/* ncclResult_t values (nccl.h; nccl.cu asserts they match). */
enum {
    CUDA_NCCL_SUCCESS = 0, CUDA_NCCL_UNHANDLED_CUDA = 1, CUDA_NCCL_SYSTEM = 2, CUDA_NCCL_INTERNAL = 3,
    CUDA_NCCL_INVALID_ARGUMENT = 4, CUDA_NCCL_INVALID_USAGE = 5, CUDA_NCCL_REMOTE = 6, CUDA_NCCL_IN_PROGRESS = 7
};
/* The exit status a failed NCCL call means: a remote or system (network)
 * error is a peer gone, ST_WATCHDOG (86: restart the job); a CUDA error
 * ST_SOFTWARE; bad arguments and usage are our bug, ST_SOFTWARE. */
int cuda_xfer_status(int nccl_result);
/* What to do about it, for the one line. */
const char *cuda_xfer_advice(int nccl_result);

/* ---- transport -------------------------------------------------------- */

typedef struct {
    int p2p, shm, ib, socket, other_net, channels;
    char other_name[32];   /* e.g. "AWS Libfabric", "OFI" */
    char network[32];      /* "Using network X" */
} cuda_xfer_transports;

/* Counts the connections in NCCL's INFO log text ("Channel 00/0 : 0[0] ->
 * 1[1] via P2P/CUMEM/read", "... via NET/Socket/0", "Using network IB"). */
void cuda_xfer_transport_scan(const char *text, size_t len, cuda_xfer_transports *t);
/* One line for people: "NET/IB between nodes (16 connections), P2P inside
 * nodes (28)"; sockets are called out: "fell back to sockets (NET/Socket:
 * 16 connections) ...". Returns 1 when it fell back to sockets. */
int cuda_xfer_transport_line(const cuda_xfer_transports *t, char *out, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
