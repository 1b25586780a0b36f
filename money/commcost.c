/* Per-step communication volume and time of the data-parallel scheme
 * (chain reduce-scatter, flat all-gather) per ZeRO stage, for --dry-run
 * and cost estimate. */
#include "commcost.h"
#include "comm/comm.h"

void cost_comm(const cost_comm_in *in, cost_comm_out *out)
{
    double W = in->world > 0 ? (double)in->world : 1, g = in->ranks_per_node > 0 ? (double)in->ranks_per_node : 1;
    double n = (double)in->params, m = in->micro_steps > 0 ? (double)in->micro_steps : 1;
    int zero = in->zero >= 2 && in->zero <= 3 ? in->zero : 1, nccl = in->reduce == COMM_REDUCE_NCCL;
    if (g > W)
        g = W;
    out->reduces = W > 1 ? (zero >= 2 ? m : 1) : 0;
    out->gathers = W > 1 ? (zero >= 3 ? 2 * m : 1) : 0;
    double rs_rank = nccl ? (W - 1) / W * 4 * n : 4 * n;
    double rs_node = W > g ? (nccl ? (W - 1) / W * 4 * n : 4 * n) : 0;
    double ag_rank = W > 1 ? (W - 1) / W * n * in->gather_bytes : 0;
    double ag_node = W > 1 ? g * ag_rank * (W - g) / (W - 1) : 0;
    out->rank_bytes = out->reduces * rs_rank + out->gathers * ag_rank;
    out->rs_node_bytes = out->reduces * rs_node;
    out->flat_rs_node_bytes = out->reduces * g * 4 * n * (W - g) / W;
    out->node_bytes = out->rs_node_bytes + out->gathers * ag_node;
    double bps = in->network_gbps * 1e9 / 8;
    out->seconds = bps > 0 ? out->node_bytes / bps : 0;
    double total = out->seconds + in->compute_seconds;
    out->share = total > 0 ? out->seconds / total : 0;
    out->rs_seconds = bps > 0 ? out->rs_node_bytes / bps : 0;
    double f = in->last_micro_fraction > 0 && in->last_micro_fraction < 1 ? in->last_micro_fraction : 1;
    double bwd = in->compute_seconds * f * 2.0 / 3.0;
    /* stages 2-3 reduce each micro-batch's buckets: only the last one's
     * can hide behind the last backward */
    double last_rs = out->reduces > 0 ? out->rs_seconds / out->reduces : 0;
    out->overlap_max = bwd < last_rs ? bwd : last_rs;
    double e = in->first_bucket > 0 && in->first_bucket < 1 ? in->first_bucket : 0;
    double ag = out->seconds - out->rs_seconds;
    double hideable = out->rs_seconds * (1 - e) + (zero >= 3 ? ag * (1 - e / 2) : 0);
    double behind = in->compute_seconds * (zero >= 3 ? 1.0 : 2.0 / 3.0);
    out->overlap_could = zero >= 2 && W > 1 ? (hideable < behind ? hideable : behind) : 0;
    out->overlapped = in->overlap && zero >= 2 && W > 1;
    out->hidden = out->overlapped ? out->overlap_could : 0;
    out->exposed = out->seconds - out->hidden;
    double busy = out->exposed + in->compute_seconds;
    out->exposed_share = busy > 0 ? out->exposed / busy : 0;
}

double cost_last_micro_fraction(int64_t global_batch, int64_t world, int64_t micro_batch)
{
    int64_t per = world > 0 ? global_batch / world : global_batch;
    if (per <= 0 || micro_batch <= 0)
        return 1;
    int64_t last = per % micro_batch ? per % micro_batch : micro_batch;
    return last >= per ? 1 : (double)last / (double)per;
}

int64_t cost_micro_steps(int64_t global_batch, int64_t world, int64_t micro_batch)
{
    int64_t per = world > 0 ? global_batch / world : global_batch;
    if (per <= 0 || micro_batch <= 0)
        return 1;
    return (per + micro_batch - 1) / micro_batch;
}
