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
    out->rs_seconds = out->seconds * 4.0 / (4.0 + in->gather_bytes);
    double f = in->last_micro_fraction > 0 && in->last_micro_fraction < 1 ? in->last_micro_fraction : 1;
    double bwd = in->compute_seconds * f * 2.0 / 3.0;
    out->overlap_max = bwd < out->rs_seconds ? bwd : out->rs_seconds;
}

double cost_last_micro_fraction(int64_t global_batch, int64_t world, int64_t micro_batch)
{
    int64_t per = world > 0 ? global_batch / world : global_batch;
    if (per <= 0 || micro_batch <= 0)
        return 1;
    int64_t last = per % micro_batch ? per % micro_batch : micro_batch;
    return last >= per ? 1 : (double)last / (double)per;
}
