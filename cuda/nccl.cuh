/* The NCCL data plane as the backend sees it: a communicator per rank,
 * the deterministic reduce-scatter (NCCL moves bytes, a kernel sums in rank
 * order) and the all-gather of the working copy, each bounded by
 * comm_get_timeout(). Implemented in nccl.cu; plans in xfer.c. */
#ifndef SPOTRAIN_CUDA_NCCL_CUH
#define SPOTRAIN_CUDA_NCCL_CUH

#include <cuda_runtime.h>
#include <stddef.h>

typedef struct cuda_nccl cuda_nccl;

/* The device this rank drives: the launcher's local rank (xfer.c), else
 * MPI's shared-memory split (a collective: every rank calls it). desc
 * says which and why: "GPU 3 of 8 (OMPI_COMM_WORLD_LOCAL_RANK = 3)". */
int cuda_nccl_pick_device(int world, int *dev, char *desc, size_t cap);

/* Opens libnccl.so.2 and the non-blocking communicator of rank/world on the
 * current device: rank 0's ncclGetUniqueId reaches the others over MPI
 * (comm_bcast). log_transport: NCCL's INFO log goes to a temporary file
 * for cuda_nccl_transport (unless the user set NCCL_DEBUG). */
int cuda_nccl_open(cuda_nccl **out, int rank, int world, int log_transport);

/* After it g[lo,hi) holds the rank-order sum over ranks (comm_range's
 * range; the rest of g is unchanged). Queued on s and waited for. */
int cuda_nccl_reduce_scatter(cuda_nccl *x, float *g, size_t n, cudaStream_t s);
/* Every rank's range of the n elements of esize bytes at p to all ranks. */
int cuda_nccl_allgather(cuda_nccl *x, void *p, size_t n, size_t esize, cudaStream_t s);
/* The same two over the span [a, b) of the n-element vector (a ZeRO
 * bucket), held in buf (buf[0] is element a): after the reduce-scatter
 * buf's part in this rank's range holds the rank-order sum; after the
 * gather the whole span is every rank's. Waited for, like the others. */
int cuda_nccl_reduce_scatter_span(cuda_nccl *x, float *buf, size_t n, size_t a, size_t b, cudaStream_t s);
int cuda_nccl_allgather_span(cuda_nccl *x, void *buf, size_t n, size_t a, size_t b, size_t esize, cudaStream_t s);
/* The same gather, queued on s and not waited for: returns once NCCL has
 * taken its rounds, so the caller queues compute meanwhile; _wait waits
 * for the bytes (bounded by comm_get_timeout(), exit 86 past it). One in
 * flight at a time; other collectives may be issued between the two. */
int cuda_nccl_allgather_span_start(cuda_nccl *x, void *buf, size_t n, size_t a, size_t b, size_t esize,
                                   cudaStream_t s);
int cuda_nccl_allgather_span_wait(cuda_nccl *x);

/* The reduce-scatter of the span, queued on s and not waited for (a
 * ZeRO bucket on the communication stream while the backward goes on):
 * returns once NCCL has taken its rounds. Any number may be queued on one
 * stream; cuda_nccl_stream_wait waits (bounded by comm_get_timeout(),
 * exit 86 past it) for everything queued on s so far; what names it. */
int cuda_nccl_reduce_scatter_span_start(cuda_nccl *x, float *buf, size_t n, size_t a, size_t b, cudaStream_t s);
int cuda_nccl_stream_wait(cuda_nccl *x, cudaStream_t s, const char *what);

/* The transport NCCL chose, one line (xfer.c), once a collective has
 * connected the peers; 1 when it fell back to sockets. */
int cuda_nccl_transport(cuda_nccl *x, char *out, size_t cap);
/* "NCCL 2.28.3 (libnccl.so.2)" */
const char *cuda_nccl_version(const cuda_nccl *x);

/* Finalizes (bounded by the timeout; aborts past it) and frees. */
void cuda_nccl_close(cuda_nccl *x);

#endif
