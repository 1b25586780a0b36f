/* Communication between data-parallel ranks (MPI, or a single process when
 * built with MPI=0). Every reduction that feeds the weights sums in rank
 * order, never in message-arrival order, so results are reproducible. */
#ifndef SPOTRAIN_COMM_H
#define SPOTRAIN_COMM_H

#include <stddef.h>
#include <stdint.h>

int comm_init(int *argc, char ***argv);
/* After a failed wait for a peer: MPI_Abort(86), since MPI_Finalize would
 * wait for that peer. Otherwise MPI_Finalize, bounded by
 * spot.comm_timeout_seconds: past it the process ends with rc (86 when rc
 * is 0: mpirun fails a rank that did not finish MPI_Finalize anyway). */
void comm_finalize(int rc);
/* Ends every rank with code (MPI_Abort): for errors that leave peers
 * blocked in a collective. Only main.c calls it. */
void comm_abort(int code);
int comm_rank(void);
int comm_size(void);
int comm_nodes(void);            /* distinct host names among the ranks */
int comm_is_mpi(void);           /* launched with more than one rank */
/* This rank's index among the ranks on its host (MPI's shared-memory
 * split; 0 without MPI). A collective: every rank calls it. */
int comm_local_rank(void);

/* Range boundaries are multiples of this many elements. */
#define COMM_ALIGN 64
/* Default floats per rank per message round (16 MiB). */
#define COMM_CHUNK_DEFAULT ((size_t)4 << 20)

/* The contiguous range of n elements that rank r owns: boundaries are
 * multiples of COMM_ALIGN, the last range ends at n. */
void comm_range(size_t n, int r, int world, size_t *lo, size_t *hi);

/* The transfer plan of the chunked collectives: how many rounds a vector of
 * n floats takes at `chunk` floats per rank per round, and rank r's piece of
 * round k (offset into the flat vector, count; count 0 once r's range is
 * exhausted). Pure functions, so tests check them for any W in-process. */
size_t comm_rounds(size_t n, int world, size_t chunk);
void comm_piece(size_t n, int r, int world, size_t chunk, size_t round, size_t *off, size_t *count);
/* The same plan over a span [a, b) of the n-element vector (a bucket of
 * whole layers): rank r's part of the span is its range cut to [a, b),
 * moved in rounds of at most `chunk`. With a = 0 and b = n these are
 * comm_rounds and comm_piece. */
size_t comm_span_rounds(size_t n, size_t a, size_t b, int world, size_t chunk);
void comm_span_piece(size_t n, size_t a, size_t b, int r, int world, size_t chunk, size_t round, size_t *off,
                     size_t *count);
/* out[i] = in[0][i] + in[1][i] + ... + in[W-1][i], left to right in rank
 * order (in[r] = pieces + r * stride): the one sum every reduce-scatter
 * makes, so the fake ranks of the unit tests add exactly as MPI ranks do. */
void comm_sum_pieces(float *out, const float *pieces, size_t stride, int world, size_t count);
/* The chain reduce-scatter's plan over the span [a, b): the span is cut
 * into chunks (each owner's part of it, comm_range cut to [a, b), in pieces
 * of comm_chain_size floats, numbered in vector order); each chunk's
 * partial sum travels rank 0 -> 1 -> ... -> W-1, every rank adding its own
 * part ((g0 + g1) + g2) + ..., the order comm_sum_pieces adds in, and rank
 * W-1 sends the sum to the chunk's owner. Different chunks are at
 * different ranks at once, so every link is busy; with ranks numbered node
 * by node, each node sends about one vector's worth across the network
 * (the flat exchange sends ranks-per-node times that). */
#define COMM_CHAIN_SLOTS 3         /* chunk buffers a rank of the MPI chain holds */
#define COMM_CHAIN_PIECES 8        /* chunks per owner part it aims at (pipeline depth) */
#define COMM_CHAIN_MIN 16384       /* floats: smaller messages cost more than they overlap */
/* Floats per chunk: at most `chunk`, about 1/COMM_CHAIN_PIECES of the
 * largest owner part, not below COMM_CHAIN_MIN (nor above that part). */
size_t comm_chain_size(size_t n, size_t a, size_t b, int world, size_t chunk);
size_t comm_chain_chunks(size_t n, size_t a, size_t b, int world, size_t chunk);
/* Chunk j: offset into the vector, count, owner rank. */
void comm_chain_chunk(size_t n, size_t a, size_t b, int world, size_t chunk, size_t j, size_t *off, size_t *count,
                      int *owner);
/* The largest chunk (what a chain slot must hold). */
size_t comm_chain_largest(size_t n, size_t a, size_t b, int world, size_t chunk);
/* Bytes rank r sends in one chain reduce-scatter of the span (4 per
 * float): every chunk to r + 1, or from rank W-1 every sum whose owner is
 * another rank. For the cost model and the benchmark. */
double comm_chain_send_bytes(size_t n, size_t a, size_t b, int r, int world);
/* The same for the flat exchange (comm_reduce_scatter_flat_span): every
 * peer its part. */
double comm_flat_send_bytes(size_t n, size_t a, size_t b, int r, int world);

/* Chunk size in floats (rounded down to COMM_ALIGN, at least COMM_ALIGN).
 * The environment variable SPOTRAIN_COMM_CHUNK sets it at comm_init, so a
 * test can run many rounds over a small model. */
void comm_set_chunk(size_t floats);
size_t comm_get_chunk(void);

/* How gradients are reduced ([comm] reduce): the chain (rank-order sums,
 * the CPU's bits) or, on the CUDA backend only, ncclReduceScatter (NCCL's
 * own order: fast, not bitwise the CPU's). Read by cuda/nccl.cu. */
enum { COMM_REDUCE_CHAIN = 0, COMM_REDUCE_NCCL = 1 };
int comm_reduce_parse(const char *s);   /* -1: neither */
const char *comm_reduce_name(int reduce);
void comm_set_reduce(int reduce);
int comm_get_reduce(void);

/* [comm] overlap: whether the span collectives of ZeRO stages 2-3 run on a
 * comm worker thread while the backward (and forward) computes. Set before
 * comm_init, which asks MPI for MPI_THREAD_SERIALIZED when it is on. */
void comm_set_overlap(int on);
int comm_get_overlap(void);

/* The comm worker's queue: span collectives run in the order they were
 * queued (every rank must queue the same ones in the same order), one at a
 * time, on a thread of their own when overlap is on, MPI runs 2+ ranks and
 * provides MPI_THREAD_SERIALIZED (else each runs at once, blocking, and
 * the bits are the same). A ticket names one queued collective;
 * comm_async_wait returns once it is done, with the first failure of any
 * queued collective (a failure makes the later ones fail at once: each is
 * bounded by spot.comm_timeout_seconds as when blocking). `then` runs on
 * the worker right after a successful reduce-scatter (with one process:
 * at once). Every blocking collective in this file drains the queue first,
 * so the main thread never calls MPI while the worker does. */
typedef void (*comm_after)(void *arg);
int comm_async_active(void);   /* a worker thread runs the queue */
long comm_async_reduce_scatter_span(float *buf, size_t n, size_t a, size_t b, comm_after then, void *arg);
long comm_async_allgather_span(float *buf, size_t n, size_t a, size_t b);
int comm_async_wait(long ticket);
int comm_async_drain(void);

/* A wait for peers (every collective below) still waiting after this many
 * seconds gives up with ST_WATCHDOG: a peer vanished or hung, and main's
 * MPI_Abort(86) ends the job instead of a hang. 0 waits forever (the
 * default). Training arms spot.comm_timeout_seconds from start-up to exit;
 * waits on a peer's disk are series of short agreements (protocol.c), so
 * the bound measures a peer's silence, not its disk. Returns the previous
 * value. */
double comm_set_timeout(double seconds);
double comm_get_timeout(void);
/* Names the agreement the following waits belong to ("resume agreement"),
 * for the line a timeout prints; NULL: the training step. Returns the
 * previous name (a static string). */
const char *comm_phase(const char *agreement);

/* Why the first failed wait failed; later waits fail at once. */
typedef struct {
    char agreement[128];     /* comm_phase's name and the collective */
    int peer;                /* the rank that did not answer, -1 unknown (a collective) */
    double waited, timeout;  /* seconds; timeout 0: an MPI error, not a timeout */
} comm_failure;
/* 0, or the code of the first failed wait (ST_WATCHDOG for a timeout). */
int comm_failed(const comm_failure **why);
/* Records a wait for a peer that ran out (`what`: the collective; peer -1
 * unknown), for a data plane outside this file (NCCL): later waits fail at
 * once, comm_finalize aborts, and the ledger gets its comm_timeout record.
 * Prints nothing; returns the agreement's name for the caller's line. */
const char *comm_note_timeout(const char *what, int peer, double waited);
/* Test hook: SPOTRAIN_TEST_FREEZE=POINT@RANK stops rank RANK (SIGSTOP) at
 * the named point, so tests/cli/cli_mpi_vanish.sh freezes a peer exactly there
 * (tests/emu/cli_nccl_fail_emu.sh: nccl-init, nccl-reduce, nccl-gather in
 * cuda/nccl.cu; bucket and layer in backend/cpu.c: ZeRO's gradient exchange
 * and parameter gather of one bucket). */
void comm_test_freeze(const char *point);
/* The same points, SPOTRAIN_TEST_NOTICE=POINT@RANK: that rank gets SIGUSR1
 * (a reclaim notice) there, once: a notice mid-step, exactly while a
 * bucket exchange is queued (tests/cli/cli_zero_overlap.sh). */
/* Test hook: SPOTRAIN_TEST_SLOW=POINT@RANK:SECONDS delays that rank there. */
void comm_test_slow(const char *point);

/* Reduce-scatter: after it, g[lo..hi) of this rank holds the sum over ranks
 * (added in rank order); the rest of g is unspecified. The pipelined chain
 * (comm_chain_*): no buffer of the vector's size, no 2^31 limit. */
int comm_reduce_scatter(float *g, size_t n);
/* The same over the span [a, b) of an n-element vector: buf holds the
 * span's elements (buf[0] is element a). After it, buf[x - a] for x in this
 * rank's range cut to [a, b) holds the sum over ranks, bitwise what
 * comm_reduce_scatter of the whole vector leaves there (each element is
 * summed alone, in rank order); the rest of buf is unspecified. Reducing a
 * vector bucket by bucket (ZeRO-2) therefore changes no bit. */
int comm_reduce_scatter_span(float *buf, size_t n, size_t a, size_t b);
/* The flat exchange these replaced: every rank sends each peer its part in
 * rounds and sums the W pieces of its own. The same bits, (W-1)/W of the
 * span through every rank's link to every peer; kept as the reference
 * that `selftest comm` and bench/reduce.sh hold the chain against. */
int comm_reduce_scatter_flat_span(float *buf, size_t n, size_t a, size_t b);
/* All-gather: every rank's owned range of p is copied to all ranks. */
int comm_allgather(float *p, size_t n);
/* The same over the span [a, b): buf holds the span (buf[0] is element a)
 * with this rank's range cut to [a, b) filled in; after it, the whole span
 * (ZeRO-3: one layer's parameters gathered before its use). */
int comm_allgather_span(float *buf, size_t n, size_t a, size_t b);
/* Sums k doubles over ranks in rank order. */
int comm_sum(double *v, int k);
/* Element-wise max of k int64 over ranks. */
int comm_max(int64_t *v, int k);
int comm_bcast(void *buf, size_t bytes, int root);
int comm_barrier(void);

#endif
