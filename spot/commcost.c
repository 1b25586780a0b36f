/* Per-step communication volume and time of the data-parallel scheme
 * (chunked all-to-all reduce-scatter + all-gather), for --dry-run and
 * cost estimate. */
#include "commcost.h"

void cost_comm(const cost_comm_in *in, cost_comm_out *out)
{
    double W = in->world > 0 ? (double)in->world : 1, g = in->ranks_per_node > 0 ? (double)in->ranks_per_node : 1;
    double n = (double)in->params;
    if (g > W)
        g = W;
    out->rank_bytes = W > 1 ? (W - 1) / W * n * (4.0 + in->gather_bytes) : 0;
    /* A rank's traffic is spread evenly over its W-1 peers. */
    out->node_bytes = W > 1 ? g * out->rank_bytes * (W - g) / (W - 1) : 0;
    out->seconds = in->network_gbps > 0 ? out->node_bytes / (in->network_gbps * 1e9 / 8) : 0;
    double total = out->seconds + in->compute_seconds;
    out->share = total > 0 ? out->seconds / total : 0;
}
