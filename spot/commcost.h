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
} cost_comm_in;

typedef struct {
    double rank_bytes;          /* each rank sends (and receives) per step */
    double node_bytes;          /* of which leave the node, per node */
    double seconds;             /* node_bytes at network_gbps */
    double share;               /* seconds / (seconds + compute), no overlap */
} cost_comm_out;

/* Reduce-scatter: every rank sends (W-1)/W of its fp32 gradient; all-gather:
 * (W-1)/W of the parameters at gather_bytes each. Of a rank's peers,
 * (W - ranks_per_node) are on other nodes; traffic inside a node is taken
 * as free (NVLink is an order of magnitude faster than the NIC). */
void cost_comm(const cost_comm_in *in, cost_comm_out *out);

#endif
