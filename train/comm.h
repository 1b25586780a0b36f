/* Communication between data-parallel ranks (MPI, or a single process when
 * built with MPI=0). Every reduction that feeds the weights sums in rank
 * order, never in message-arrival order, so results are reproducible. */
#ifndef SPOTRAIN_COMM_H
#define SPOTRAIN_COMM_H

#include <stddef.h>
#include <stdint.h>

int comm_init(int *argc, char ***argv);
void comm_finalize(void);
/* Ends every rank with code (MPI_Abort): for errors that leave peers
 * blocked in a collective. Only main.c calls it. */
void comm_abort(int code);
int comm_rank(void);
int comm_size(void);
int comm_nodes(void);            /* distinct host names among the ranks */
int comm_is_mpi(void);           /* launched with more than one rank */

/* The contiguous range of n elements that rank r owns. */
void comm_range(size_t n, int r, int world, size_t *lo, size_t *hi);

/* Reduce-scatter: after it, g[lo..hi) of this rank holds the sum over ranks
 * (added in rank order); the rest of g is unspecified. */
int comm_reduce_scatter(float *g, size_t n);
/* All-gather: every rank's owned range of p is copied to all ranks. */
int comm_allgather(float *p, size_t n);
/* Sums k doubles over ranks in rank order. */
int comm_sum(double *v, int k);
/* Element-wise max of k int64 over ranks. */
int comm_max(int64_t *v, int k);
int comm_bcast(void *buf, size_t bytes, int root);
int comm_barrier(void);

#endif
