/* What the gradient reduce-scatter and parameter all-gather of one step
 * cost on the network, from the volume of spotrain's scheme and a given
 * per-node bandwidth: the communication share of a step in plans. */
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
} cost_comm_in;

typedef struct {
    double rank_bytes;          /* each rank sends (and receives) per step */
    double node_bytes;          /* of which leave the node, per node */
    double seconds;             /* node_bytes at network_gbps */
    double share;               /* seconds / (seconds + compute), no overlap */
    double rs_seconds;          /* of seconds, the gradient reduce-scatter */
    double overlap_max;         /* of rs_seconds, what the last micro-batch's backward could hide */
} cost_comm_out;

/* Reduce-scatter: every rank sends (W-1)/W of its fp32 gradient; all-gather:
 * (W-1)/W of the parameters at gather_bytes each. Of a rank's peers,
 * (W - ranks_per_node) are on other nodes; traffic inside a node is taken
 * as free (NVLink is an order of magnitude faster than the NIC). */
/* overlap_max bounds an overlap of the reduction with the backward pass
 * (not built): only the last micro-batch's backward (2/3 of its compute)
 * runs after some gradients are final, and the all-gather needs the
 * optimizer's result. */
void cost_comm(const cost_comm_in *in, cost_comm_out *out);

/* The last micro-batch's share of a rank's rows, as the training loop cuts
 * them: global_batch / world rows in micro_batch pieces, the rest last. */
double cost_last_micro_fraction(int64_t global_batch, int64_t world, int64_t micro_batch);

#endif
