/* What the gradient reduction and parameter all-gathers of one step cost
 * on the network, from the volume of spotrain's schemes and a given
 * per-node bandwidth: the communication share of a step in plans, per
 * ZeRO stage. The one model --dry-run and cost estimate print. */
#ifndef SPOTRAIN_COMMCOST_H
#define SPOTRAIN_COMMCOST_H

#include <stdint.h>

typedef struct {
    uint64_t params;            /* floats in the flat vector */
    int64_t world;              /* ranks (one per GPU) */
    int64_t ranks_per_node;
    double gather_bytes;        /* bytes per parameter in the all-gather: 4 fp32, 2 bf16 */
    double network_gbps;        /* per node, each direction */
    double compute_seconds;     /* one step's compute at the planned throughput */
    double last_micro_fraction; /* of a rank's step, its last micro-batch (1: no accumulation) */
    int zero;                   /* ZeRO stage 1..3 (0: 1) */
    int reduce;                 /* COMM_REDUCE_CHAIN | COMM_REDUCE_NCCL (comm.h) */
    int64_t micro_steps;        /* micro-batches per rank per step (<= 0: 1) */
    int overlap;                /* the backend overlaps stages 2-3's bucket exchanges ([comm] overlap) */
    double first_bucket;        /* the embedding's share of the parameters: reduced last, gathered first */
} cost_comm_in;

typedef struct {
    double rank_bytes;          /* the busiest rank sends per step */
    double node_bytes;          /* of which leave the node, per node (the busiest node) */
    double rs_node_bytes;       /* of node_bytes, the gradient reduction */
    double flat_rs_node_bytes;  /* what the flat exchange the chain replaced would send, for comparison */
    double reduces, gathers;    /* collectives over the whole vector per step */
    int overlapped;             /* whether stages 2-3's bucket exchanges overlap compute (no: blocking) */
    double seconds;             /* node_bytes at network_gbps */
    double share;               /* seconds / (seconds + compute), no overlap */
    double rs_seconds;          /* of seconds, the gradient reduction */
    double overlap_max;         /* of rs_seconds, what the last micro-batch's backward could hide */
    double overlap_could;       /* stages 2-3: of seconds, what the bucket overlap hides when built and on */
    double hidden;              /* of seconds, what it hides here (0 unless overlapped) */
    double exposed;             /* seconds - hidden: the communication a step waits for */
    double exposed_share;       /* exposed / (exposed + compute) */
} cost_comm_out;

/* Gradient reduction, chain (comm.h): every rank but the last sends each
 * chunk once, 4 bytes a parameter; with ranks numbered node by node each
 * node's last rank carries it to the next node, so 4 bytes a parameter
 * leave a node per reduction (the last node sends the sums back, less).
 * reduce = nccl (a ring reduce-scatter): (W-1)/W of that. The flat
 * exchange it replaced: (W - ranks_per_node)/W of the vector from each of
 * the node's ranks. All-gather (flat): (W-1)/W of the parameters at
 * gather_bytes from each rank, (W - ranks_per_node)/(W-1) of it off-node.
 * Traffic inside a node is taken as free (NVLink is an order of magnitude
 * faster than the NIC). Per step: stage 1 reduces once and gathers once
 * (after the optimizer); stage 2 reduces every micro-batch (bucket by
 * bucket in its backward) and gathers once; stage 3 reduces every
 * micro-batch and gathers every layer before its forward and again before
 * its backward, every micro-batch, and not after the optimizer.
 * Overlap ([comm] overlap: the CPU backend's comm worker, the CUDA
 * backend's comm stream): at stages 2-3 each bucket's reduce-scatter runs behind
 * the backward of the buckets after it, in every micro-batch, all but the
 * embedding's, which is reduced last; at stage 3 each gather also runs
 * behind the compute of the layer before it, all but the forward's first
 * (the embedding). The hidden time is that communication, at most the
 * compute it runs behind (the backward, 2/3 of a step's compute; at stage
 * 3 the whole step's). Stage 1 reduces once, after the backward: nothing
 * overlaps it; overlap_max bounds an overlap of that reduction with the
 * last micro-batch's backward (not built). */
void cost_comm(const cost_comm_in *in, cost_comm_out *out);

/* The last micro-batch's share of a rank's rows, as the training loop cuts
 * them: global_batch / world rows in micro_batch pieces, the rest last. */
double cost_last_micro_fraction(int64_t global_batch, int64_t world, int64_t micro_batch);
/* Micro-batches per rank per step: ceil(global_batch / world / micro_batch). */
int64_t cost_micro_steps(int64_t global_batch, int64_t world, int64_t micro_batch);

#endif
