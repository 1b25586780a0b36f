/* `spotrain cost estimate`: on-demand vs spot hours and dollars for a planned
 * run from [cost] and [price.*], the Young/Daly checkpoint interval, a
 * plausibility check of the budget, and whether the training state fits. */
#include "cost.h"

#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "util/util.h"

#define COST_GIB 1073741824.0

double cost_gpu_peak_tflops(const char *gpu)
{
    if (!strcmp(gpu, "a100"))
        return 312;
    if (!strcmp(gpu, "h100") || !strcmp(gpu, "h200"))
        return 989;
    return 0;
}

double cost_gpu_memory_gib(const char *gpu)
{
    if (!strcmp(gpu, "a100") || !strcmp(gpu, "h100"))
        return 80;
    if (!strcmp(gpu, "h200"))
        return 140;
    return 0;
}

double cost_young_daly(double ckpt_cost, double mtbf)
{
    if (isinf(mtbf))
        return INFINITY;
    return sqrt(2.0 * ckpt_cost * mtbf);
}

void cost_fleet_hourly(const cost_opts *o, int64_t nodes, double *ondemand, double *spot)
{
    double od = 0, sp = 0;
    if (nodes <= 0)
        nodes = o->nodes;
    int64_t odn = o->ondemand_nodes < nodes ? o->ondemand_nodes : nodes;
    for (int i = 0; i < o->n_prices; i++) {
        od += o->prices[i].ondemand;
        sp += o->prices[i].spot;
    }
    *ondemand = od * (double)nodes;
    *spot = od * (double)odn + sp * (double)(nodes - odn);
}

void cost_memory(const cost_opts *o, double gpu_gib, cost_memfit *m)
{
    memset(m, 0, sizeof *m);
    m->gpu_gib = gpu_gib;
    m->fits = -1;
    if (!o->have_mem || o->mem_status != ST_OK)
        return;
    m->planned = 1;
    m->per_gpu_gib = (double)o->mem.total / COST_GIB;
    if (gpu_gib > 0)
        m->fits = m->per_gpu_gib <= gpu_gib;
    if (m->fits == 0)
        memplan_advice(&o->mem_cfg, &o->mem, m->advice, sizeof m->advice);
}

static void cost_overheads(const cost_opts *o, cost_plan *p)
{
    p->stall_h = o->ckpt_stall_seconds / 3600.0;
    p->restart_h = o->restart_minutes / 60.0;
    /* Losing any spot node stops the data-parallel job, so the job's rate is
     * the per-node rate times the spot nodes. */
    p->int_rate = o->interruptions_per_hour * (double)p->spot_nodes;
    p->young_daly_h = cost_young_daly(p->stall_h, p->int_rate > 0 ? 1 / p->int_rate : INFINITY);
    p->interval_optimal = !(o->ckpt_interval_minutes > 0);
    p->interval_h = p->interval_optimal ? p->young_daly_h : o->ckpt_interval_minutes / 60.0;
    int finite = isfinite(p->interval_h);
    double stall_frac = finite && p->interval_h > 0 ? p->stall_h / p->interval_h : 0;
    double half = finite ? p->interval_h / 2 : 0;

    if (p->spot_nodes == 0) {
        p->spot_method = "no spot nodes";
        p->spot_hours = p->od_hours;
    } else if (o->spot_hours > 0) {
        p->spot_method = "given";
        p->spot_hours = o->spot_hours;
    } else if (o->throughput_ratio > 0) {
        p->spot_method = "throughput_ratio";
        p->spot_hours = p->od_hours / o->throughput_ratio;
    } else {
        /* Each hour of spot wall time loses int_rate * (restart + half an
         * interval of redone work); each interval of work adds one stall:
         * T_spot = T_od (1 + stall/interval) / (1 - rate (restart + interval/2)). */
        double lossfrac = p->int_rate * (p->restart_h + half);
        p->spot_method = "model";
        if (lossfrac >= 1) {
            p->never_finishes = 1;
            p->spot_hours = INFINITY;
        } else {
            p->spot_hours = p->od_hours * (1 + stall_frac) / (1 - lossfrac);
        }
    }
    p->interruptions = p->int_rate * p->spot_hours;
    p->lost_h = p->interruptions * half;
    p->restart_total_h = p->interruptions * p->restart_h;
    p->stall_total_h = p->od_hours * stall_frac;
}

/* The same model as --dry-run (commcost.h): one rank per GPU, bf16
 * parameter gather, a step's compute at the planned MFU; the planned
 * stage and [comm] reduce, and every stage for the table. */
static void cost_step_comm(const cost_opts *o, cost_plan *p)
{
    double rate = (double)p->gpus * p->peak_tflops * 1e12 * p->mfu;
    p->comm_zero = o->have_mem && o->mem_cfg.zero >= 1 && o->mem_cfg.zero <= 3 ? o->mem_cfg.zero : 1;
    p->comm_reduce = o->have_mem ? o->mem_cfg.reduce : COMM_REDUCE_CHAIN;
    p->micro_steps = cost_micro_steps(o->global_batch, p->gpus, o->micro_batch);
    /* GPUs: the CUDA backend's comm stream overlaps stages 2-3's bucket
     * exchanges under [comm] overlap (the default without a config). */
    const model_shape *s = &o->mem_cfg.shape;
    double emb = o->have_mem && p->params ? (double)s->vocab * (double)s->dim / (double)p->params : 0;
    int ov = o->have_mem ? o->mem_cfg.overlap : 1;
    cost_comm_in in = {p->params, p->gpus, o->gpus_per_node, 2.0, o->network_gbps, 0, 1, p->comm_zero,
                       p->comm_reduce, p->micro_steps, ov, emb};
    if (rate > 0 && o->tokens_per_step > 0) {
        in.compute_seconds = o->tokens_per_step * p->flops_per_token / rate;
        in.last_micro_fraction = cost_last_micro_fraction(o->global_batch, p->gpus, o->micro_batch);
    }
    cost_comm(&in, &p->comm);
    for (int z = 1; z <= 3; z++) {
        in.zero = z;
        cost_comm(&in, &p->comm_stage[z]);
    }
    p->step_compute_s = in.compute_seconds;
    p->have_comm = o->network_gbps > 0 && in.compute_seconds > 0;
}

int cost_estimate(const cost_opts *o, cost_plan *p)
{
    const char *f = o->source[0] ? o->source : "config";
    memset(p, 0, sizeof *p);
    if (o->n_prices == 0)
        return util_fail(ST_CONFIG, "%s: no [price.NAME] sections; add e.g. [price.node] ondemand = 32.77, spot = 9.83 ($ per node-hour)", f);
    p->nodes = o->nodes;
    p->spot_nodes = o->nodes - (o->ondemand_nodes < o->nodes ? o->ondemand_nodes : o->nodes);
    p->gpus = o->nodes * o->gpus_per_node;
    p->peak_tflops = o->peak_tflops > 0 ? o->peak_tflops : cost_gpu_peak_tflops(o->gpu);
    p->mfu = o->mfu;
    for (int i = 0; i < o->n_prices; i++) {
        p->node_od += o->prices[i].ondemand;
        p->node_spot += o->prices[i].spot;
    }
    cost_fleet_hourly(o, o->nodes, &p->fleet_od, &p->fleet_spot);
    p->spot_method = "none";
    p->have_model = o->params > 0;
    p->have_hardware = o->hardware_given;
    p->params = o->params;
    p->flops_per_token = o->flops_per_token;
    /* Work from tokens means FLOPs of a model on GPUs the user named;
     * built-in defaults would price some other run. */
    if (o->tokens > 0 && o->ondemand_hours <= 0 && !(p->have_model && p->have_hardware))
        return util_fail(ST_CONFIG, "%s: cost.tokens needs the model and the GPUs: add [model] preset (or its shape) and cost.gpu, cost.gpus_per_node; or give cost.ondemand_hours", f);
    if (o->ondemand_hours <= 0 && o->tokens <= 0)
        return ST_OK;   /* prices only: the printer says what to add */
    p->have_work = 1;
    if (!(p->have_model && p->have_hardware))
        p->have_model = p->have_hardware = 0;
    double flops_per_hour = (double)p->gpus * p->peak_tflops * 1e12 * p->mfu * 3600.0;

    if (o->ondemand_hours > 0) {
        p->od_hours = o->ondemand_hours;
    } else if (o->tokens > 0) {
        if (!(flops_per_hour > 0))
            return util_fail(ST_CONFIG, "%s: deriving hours from cost.tokens needs cost.mfu > 0 and a known cost.gpu or cost.peak_tflops", f);
        p->hours_derived = 1;
        p->od_hours = o->tokens * p->flops_per_token / flops_per_hour;
    }
    if (p->have_model && flops_per_hour > 0) {
        p->budget_tokens = p->od_hours * flops_per_hour / p->flops_per_token;
        if (o->tokens > 0 && !p->hours_derived)
            p->needed_mfu = o->tokens * p->flops_per_token /
                            (p->od_hours * 3600.0 * (double)p->gpus * p->peak_tflops * 1e12);
        /* Best published large-scale MFUs are around 0.5-0.6; a budget
         * that cannot show the model even one token per parameter is not a
         * training run either. */
        p->implausible = p->needed_mfu > 0.75 ||
                         (o->tokens <= 0 && p->budget_tokens < (double)p->params);
    }
    cost_overheads(o, p);
    p->od_cost = p->od_hours * p->fleet_od;
    p->spot_cost = p->spot_hours * p->fleet_spot;
    if (p->have_model) {
        double gib = o->gpu_memory_gib > 0 ? o->gpu_memory_gib : cost_gpu_memory_gib(o->gpu);
        cost_memory(o, gib, &p->mem);
        cost_step_comm(o, p);
    }
    return ST_OK;
}

/* ---- output ---- */

/* 337920 -> "337,920"; cents when decimals is 2. */
static void cost_money(char *out, size_t cap, double v, int decimals)
{
    char digits[64], tmp[96];
    if (!isfinite(v)) {
        snprintf(out, cap, "never");
        return;
    }
    snprintf(digits, sizeof digits, "%.*f", decimals, fabs(v));
    char *dot = strchr(digits, '.');
    size_t ilen = dot ? (size_t)(dot - digits) : strlen(digits), o = 0;
    if (v < 0 && strspn(digits, "0.") != strlen(digits))
        tmp[o++] = '-';
    for (size_t i = 0; i < ilen; i++) {
        if (i > 0 && (ilen - i) % 3 == 0)
            tmp[o++] = ',';
        tmp[o++] = digits[i];
    }
    snprintf(tmp + o, sizeof tmp - o, "%s", dot ? dot : "");
    snprintf(out, cap, "%s", tmp);
}

static void cost_hours(char *out, size_t cap, double h)
{
    if (!isfinite(h))
        snprintf(out, cap, "never");
    else if (h >= 100)
        snprintf(out, cap, "%.0f", h);
    else
        snprintf(out, cap, "%.1f", h);
}

static double cost_saving(double od, double sp)
{
    return od > 0 ? 100.0 * (1 - sp / od) : 0;
}

static void cost_print_comm(const cost_opts *o, const cost_plan *p)
{
    printf("communication per step over %lld GPUs, %lld per node (fp32 gradients by %s, bf16 all-gather; ZeRO "
           "stage %d):\n"
           "  each GPU sends and receives %.3f GiB; %.3f GiB leave each node\n", (long long)p->gpus,
           (long long)o->gpus_per_node, p->comm_reduce == COMM_REDUCE_NCCL ? "ncclReduceScatter" : "the rank-order chain",
           p->comm_zero, p->comm.rank_bytes / COST_GIB, p->comm.node_bytes / COST_GIB);
    if (p->gpus <= 1)
        printf("  one GPU: nothing to exchange\n");
    else if (p->comm.node_bytes == 0)
        printf("  all of it stays inside the node (NVLink, taken as free): 0%% of a step\n");
    else if (p->have_comm)
        printf("  at %g Gbit/s per node: %.2f s of network against %.2f s of compute per step (%.0f tokens):\n"
               "  %.1f%% of a step when not overlapped\n", o->network_gbps, p->comm.seconds, p->step_compute_s,
               o->tokens_per_step, 100 * p->comm.share);
    else if (o->network_gbps <= 0)
        printf("  set cost.network_gbps (per node) for the communication share of a step\n");
    if (p->have_comm && p->gpus > 1 && p->comm.node_bytes > 0 && p->comm_zero == 1)
        printf("  stage 1 reduces once, after the backward pass: nothing overlaps it (an overlap with the\n"
               "  last micro-batch's backward, not built, could hide at most %.2f s of the %.2f s reduce-scatter)\n",
               p->comm.overlap_max, p->comm.rs_seconds);
    else if (p->have_comm && p->gpus > 1 && p->comm.node_bytes > 0 && p->comm.overlapped)
        printf("  overlapped ([comm] overlap; on GPUs the comm stream, unverified on a GPU): about %.2f s of it\n"
               "  hidden behind compute, %.2f s exposed: %.1f%% of a step\n", p->comm.hidden, p->comm.exposed,
               100 * p->comm.exposed_share);
    else if (p->have_comm && p->gpus > 1 && p->comm.node_bytes > 0)
        printf("  not overlapped ([comm] overlap = false): overlapped, the bucket exchanges would hide about\n"
               "  %.2f s of it\n", p->comm.overlap_could);
    if (p->gpus <= 1)
        return;
    printf("  per ZeRO stage, leaving each node per step (%lld micro-batch%s a GPU):\n", (long long)p->micro_steps,
           p->micro_steps == 1 ? "" : "es");
    for (int z = 1; z <= 3; z++) {
        const cost_comm_out *c = &p->comm_stage[z];
        printf("    zero %d: %.3f GiB = gradients %g x %.3f GiB + parameter gathers %g x %.3f GiB; overlap: %s%s\n",
               z, c->node_bytes / COST_GIB, c->reduces, c->reduces > 0 ? c->rs_node_bytes / c->reduces / COST_GIB : 0,
               c->gathers, c->gathers > 0 ? (c->node_bytes - c->rs_node_bytes) / c->gathers / COST_GIB : 0,
               z == 1            ? "none (one reduction after the backward pass)"
               : !c->overlapped  ? "none ([comm] overlap = false: each bucket's exchange blocks between layers)"
               : z == 2          ? "each bucket's reduce-scatter behind the backward of the following buckets"
                                 : "each bucket's reduce-scatter behind the backward of the following buckets, each "
                                   "layer's gather behind the previous layer's compute",
               z >= 2 && c->overlapped ? "; on GPUs the comm stream, unverified on a GPU" : "");
    }
    if (p->comm_reduce == COMM_REDUCE_CHAIN && p->comm.flat_rs_node_bytes > p->comm.rs_node_bytes)
        printf("  (the flat all-to-all exchange the chain replaced sent %.3f GiB of gradients from each node)\n",
               p->comm.flat_rs_node_bytes / COST_GIB);
}

static const char *cost_prec_name(memplan_prec p)
{
    static const char *names[] = {"fp32", "tf32", "bf16", "fp16"};
    return (int)p >= 0 && (int)p < 4 ? names[p] : "?";
}

/* The trainer's own per-GPU plan (the figure --dry-run prints), and the fit. */
static void cost_print_memory(const cost_opts *o, const cost_plan *p)
{
    const cost_memfit *m = &p->mem;
    if (!m->planned) {
        printf("memory: not planned (%s)\n", o->mem_why[0] ? o->mem_why : "no model");
        return;
    }
    const memplan_bytes *b = &o->mem;
    int z = o->mem_cfg.zero, half = o->mem_cfg.precision == MEMPLAN_BF16 || o->mem_cfg.precision == MEMPLAN_FP16;
    /* [comm] overlap over 2+ GPUs: a second gradient bucket (memplan_cuda_params). */
    int two = o->mem_cfg.overlap && p->gpus > 1;
    printf("memory per GPU (backend cuda, %s, micro_batch %lld%s; ZeRO stage %d: Adam m and v%s sharded over %lld "
           "GPUs,\n  %s on every GPU): %.1f GiB\n"
           "  master %.1f + working %.1f + gradients %.1f + Adam %.1f + activations %.1f + workspace,\n"
           "  context and buffers %.1f GiB\n", cost_prec_name(o->mem_cfg.precision),
           (long long)o->mem_cfg.micro_batch,
           o->mem_cfg.recompute == MEMPLAN_RECOMPUTE_LAYERS ? ", recompute layers" : "", z,
           z >= 3 ? ", master, parameters and gradients" : z == 2 ? (half ? ", fp32 master and gradients" : ", gradients")
                  : half ? " and the fp32 master" : "",
           (long long)p->gpus,
           z >= 3 ? (two ? "two gathered layer buckets and two gradient buckets"
                         : "two gathered layer buckets and one gradient bucket")
           : z == 2 ? (two ? "the full working copy and two gradient buckets" : "the full working copy and one gradient bucket")
                    : "the full working copy and gradients",
           m->per_gpu_gib,
           (double)b->master / COST_GIB, (double)b->working / COST_GIB, (double)b->grads / COST_GIB,
           (double)b->adam / COST_GIB, (double)(b->activations + b->attn_scratch) / COST_GIB,
           (double)(b->workspace + b->context + b->comm + b->buckets) / COST_GIB);
    if (m->fits < 0)
        printf("  unknown GPU memory; set cost.gpu_memory_gib\n");
    else if (m->fits)
        printf("  fits in %.0f GiB per GPU (%.1f GiB spare)\n", m->gpu_gib, m->gpu_gib - m->per_gpu_gib);
    else
        printf("  does NOT fit in %.0f GiB per GPU: %s\n", m->gpu_gib, m->advice);
}

static void cost_print_table(const cost_opts *o, const cost_plan *p)
{
    char a[64], b[64];
    printf("cost estimate: %s\n", o->source[0] ? o->source : "(defaults)");
    printf("fleet: %lld node%s (%lld spot, %lld on-demand)", (long long)p->nodes, p->nodes == 1 ? "" : "s",
           (long long)p->spot_nodes, (long long)(p->nodes - p->spot_nodes));
    if (p->have_hardware)
        printf(" x %lld %s GPUs = %lld GPUs", (long long)o->gpus_per_node, o->gpu, (long long)p->gpus);
    printf("\n\n");
    printf("per node-hour            on-demand -> spot       saving\n");
    for (int i = 0; i < o->n_prices; i++) {
        cost_money(a, sizeof a, o->prices[i].ondemand, 2);
        cost_money(b, sizeof b, o->prices[i].spot, 2);
        printf("  %-20s %10s -> %-10s %5.1f%%\n", o->prices[i].name, a, b,
               cost_saving(o->prices[i].ondemand, o->prices[i].spot));
    }
    cost_money(a, sizeof a, p->node_od, 2);
    cost_money(b, sizeof b, p->node_spot, 2);
    printf("  %-20s %10s -> %-10s saving %.1f%%\n", "total", a, b, cost_saving(p->node_od, p->node_spot));
    if (p->nodes != 1 || p->spot_nodes != p->nodes) {
        cost_money(a, sizeof a, p->fleet_od, 2);
        cost_money(b, sizeof b, p->fleet_spot, 2);
        printf("  %-20s %10s -> %-10s saving %.1f%%\n", "fleet per hour", a, b,
               cost_saving(p->fleet_od, p->fleet_spot));
    }
    printf("\n");
    if (!p->have_work) {
        printf("run hours and cost: add cost.ondemand_hours (wall hours on on-demand nodes), or cost.tokens\n"
               "  with the model ([model] preset) and the GPUs (cost.gpu, cost.gpus_per_node)\n");
        return;
    }
    cost_hours(a, sizeof a, p->od_hours);
    cost_hours(b, sizeof b, p->spot_hours);
    printf("run hours   %s -> %s", a, b);
    if (isfinite(p->spot_hours))
        printf("   time %+.1f%%", 100.0 * (p->spot_hours / p->od_hours - 1));
    printf("   (on-demand %s; spot %s)\n", p->hours_derived ? "from cost.tokens" : "given",
           !strcmp(p->spot_method, "model") ? "from the overhead model" : p->spot_method);
    cost_money(a, sizeof a, p->od_cost, p->od_cost >= 1000 ? 0 : 2);
    cost_money(b, sizeof b, p->spot_cost, p->spot_cost >= 1000 ? 0 : 2);
    printf("run cost    %s -> %s", a, b);
    if (isfinite(p->spot_cost))
        printf("   saving %.1f%%", cost_saving(p->od_cost, p->spot_cost));
    printf("\n");
    if (p->never_finishes)
        printf("  the spot run never finishes: %.3f interruptions/hour x (restart %.2f h + half an interval %.2f h) "
               "loses more than an hour per hour; checkpoint more often or use on-demand nodes\n",
               p->int_rate, p->restart_h, p->interval_h / 2);
    printf("\n");

    printf("spot overheads (%.3f interruptions per spot node-hour x %lld spot node%s = %.3f/h)%s:\n",
           o->interruptions_per_hour, (long long)p->spot_nodes, p->spot_nodes == 1 ? "" : "s", p->int_rate,
           strcmp(p->spot_method, "model") ? ";\n  spot hours were given, so these are the model's figures for the same inputs" : "");
    printf("  expected interruptions %.1f\n", p->interruptions);
    printf("  lost work              %.1f h (half a checkpoint interval redone per interruption)\n", p->lost_h);
    printf("  restarts               %.1f h (%.0f min each)\n", p->restart_total_h, o->restart_minutes);
    printf("  checkpoint stalls      %.1f h (%.0f s each)\n", p->stall_total_h, o->ckpt_stall_seconds);
    if (isfinite(p->young_daly_h))
        printf("  Young/Daly interval    sqrt(2 x %.0f s x %.1f h MTBF) = %.1f min%s\n", o->ckpt_stall_seconds,
               1 / p->int_rate, p->young_daly_h * 60,
               p->interval_optimal ? " (used)" : "");
    else
        printf("  Young/Daly interval    none needed (no spot interruptions expected)\n");
    if (!p->interval_optimal)
        printf("  checkpoint interval    %.1f min (configured)\n", o->ckpt_interval_minutes);
    if (!o->overheads_given)
        printf("  (built-in defaults: set cost.interruptions_per_hour, cost.restart_minutes and\n"
               "  cost.ckpt_stall_seconds for your fleet)\n");
    printf("\n");

    if (!p->have_model) {
        printf("work and memory: add the model ([model] preset or its shape) and the GPUs (cost.gpu,\n"
               "  cost.gpus_per_node) to check the plan's tokens and whether it fits\n");
        return;
    }
    cost_money(a, sizeof a, (double)p->params, 0);
    printf("model: %s, %s parameters, %.3g FLOPs/token (6N + attention)\n", o->model, a,
           p->flops_per_token);
    if (p->budget_tokens > 0) {
        cost_hours(a, sizeof a, p->od_hours);
        printf("work: %s h x %lld GPUs x %.0f TFLOP/s x MFU %.2f = %.3g tokens (%.1f per parameter)\n",
               a, (long long)p->gpus, p->peak_tflops,
               p->mfu, p->budget_tokens, p->budget_tokens / (double)p->params);
        if (p->needed_mfu > 0)
            printf("  %.3g tokens in %s h needs MFU %.2f\n", o->tokens, a, p->needed_mfu);
        if (p->implausible)
            printf("  IMPLAUSIBLE: %s; at MFU %.2f this budget trains %.3g tokens\n",
                   p->needed_mfu > 1 ? "that MFU exceeds the GPUs' peak"
                   : p->needed_mfu > 0.75 ? "that MFU is beyond what large runs achieve (~0.4-0.6)"
                                           : "fewer tokens than parameters (compute-optimal is ~20 per parameter)",
                   p->mfu, p->budget_tokens);
    } else {
        printf("work: unknown peak for gpu '%s'; set cost.peak_tflops to check the plan\n", o->gpu);
    }
    cost_print_comm(o, p);
    cost_print_memory(o, p);
}

static json_object *cost_jnum(double v)
{
    return util_json_num(v);
}

/* The plan's categories in bytes; null fits when the GPU memory is unknown. */
static json_object *cost_memory_json(const cost_opts *o, const cost_plan *p)
{
    json_object *m = json_object_new_object();
    if (!p->mem.planned) {
        json_object_object_add(m, "planned", json_object_new_boolean(0));
        json_object_object_add(m, "why", json_object_new_string(o->mem_why));
        return m;
    }
    const memplan_bytes *b = &o->mem;
    struct { const char *k; uint64_t v; } cat[] = {
        {"master", b->master},     {"working", b->working},           {"grads", b->grads},
        {"adam", b->adam},         {"buckets", b->buckets},           {"activations", b->activations},
        {"attn_scratch", b->attn_scratch}, {"workspace", b->workspace}, {"context", b->context},
        {"comm", b->comm},         {"host_snapshot", b->snapshot},    {"per_gpu_bytes", b->total}};
    json_object_object_add(m, "planned", json_object_new_boolean(1));
    json_object_object_add(m, "backend", json_object_new_string("cuda"));
    json_object_object_add(m, "precision", json_object_new_string(cost_prec_name(o->mem_cfg.precision)));
    json_object_object_add(m, "zero_stage", json_object_new_int(o->mem_cfg.zero));
    json_object_object_add(m, "micro_batch", json_object_new_int64(o->mem_cfg.micro_batch));
    json_object_object_add(m, "recompute", json_object_new_string(
        o->mem_cfg.recompute == MEMPLAN_RECOMPUTE_LAYERS ? "layers" : "none"));
    for (size_t i = 0; i < sizeof cat / sizeof cat[0]; i++)
        json_object_object_add(m, cat[i].k, json_object_new_int64((int64_t)cat[i].v));
    json_object_object_add(m, "per_gpu_gib", cost_jnum(p->mem.per_gpu_gib));
    json_object_object_add(m, "gpu_gib", cost_jnum(p->mem.gpu_gib));
    json_object_object_add(m, "fits", p->mem.fits < 0 ? NULL : json_object_new_boolean(p->mem.fits));
    if (p->mem.fits == 0)
        json_object_object_add(m, "advice", json_object_new_string(p->mem.advice));
    return m;
}

static void cost_print_json(const cost_opts *o, const cost_plan *p)
{
    json_object *r = json_object_new_object(), *items = json_object_new_array();
    for (int i = 0; i < o->n_prices; i++) {
        json_object *it = json_object_new_object();
        json_object_object_add(it, "name", json_object_new_string(o->prices[i].name));
        json_object_object_add(it, "ondemand", cost_jnum(o->prices[i].ondemand));
        json_object_object_add(it, "spot", cost_jnum(o->prices[i].spot));
        json_object_array_add(items, it);
    }
    json_object_object_add(r, "config", json_object_new_string(o->source));
    json_object_object_add(r, "have_work", json_object_new_boolean(p->have_work));
    json_object_object_add(r, "nodes", json_object_new_int64(p->nodes));
    json_object_object_add(r, "spot_nodes", json_object_new_int64(p->spot_nodes));
    if (p->have_hardware)
        json_object_object_add(r, "gpus", json_object_new_int64(p->gpus));
    json_object_object_add(r, "price_items", items);
    json_object_object_add(r, "node_hour_ondemand", cost_jnum(p->node_od));
    json_object_object_add(r, "node_hour_spot", cost_jnum(p->node_spot));
    json_object_object_add(r, "fleet_hour_ondemand", cost_jnum(p->fleet_od));
    json_object_object_add(r, "fleet_hour_spot", cost_jnum(p->fleet_spot));
    if (!p->have_work)
        goto print;
    json_object_object_add(r, "ondemand_hours", cost_jnum(p->od_hours));
    json_object_object_add(r, "spot_hours", cost_jnum(p->spot_hours));
    json_object_object_add(r, "spot_hours_method", json_object_new_string(p->spot_method));
    json_object_object_add(r, "ondemand_cost", cost_jnum(p->od_cost));
    json_object_object_add(r, "spot_cost", cost_jnum(p->spot_cost));
    json_object_object_add(r, "saving", cost_jnum(p->od_cost > 0 ? 1 - p->spot_cost / p->od_cost : NAN));
    json_object_object_add(r, "interruptions_per_hour", cost_jnum(p->int_rate));
    json_object_object_add(r, "expected_interruptions", cost_jnum(p->interruptions));
    json_object_object_add(r, "lost_work_hours", cost_jnum(p->lost_h));
    json_object_object_add(r, "restart_hours", cost_jnum(p->restart_total_h));
    json_object_object_add(r, "checkpoint_stall_hours", cost_jnum(p->stall_total_h));
    json_object_object_add(r, "young_daly_minutes", cost_jnum(p->young_daly_h * 60));
    json_object_object_add(r, "checkpoint_interval_minutes", cost_jnum(p->interval_h * 60));
    if (!p->have_model)
        goto print;
    json_object_object_add(r, "model", json_object_new_string(o->model));
    json_object_object_add(r, "params", json_object_new_int64((int64_t)p->params));
    json_object_object_add(r, "flops_per_token", cost_jnum(p->flops_per_token));
    json_object_object_add(r, "budget_tokens", cost_jnum(p->budget_tokens));
    if (p->needed_mfu > 0)
        json_object_object_add(r, "needed_mfu", cost_jnum(p->needed_mfu));
    json_object_object_add(r, "implausible", json_object_new_boolean(p->implausible));
    json_object *m = cost_memory_json(o, p);
    json_object_object_add(r, "memory", m);
    json_object *cm = json_object_new_object();
    json_object_object_add(cm, "rank_bytes", cost_jnum(p->comm.rank_bytes));
    json_object_object_add(cm, "node_bytes", cost_jnum(p->comm.node_bytes));
    json_object_object_add(cm, "reduce", json_object_new_string(comm_reduce_name(p->comm_reduce)));
    json_object_object_add(cm, "zero_stage", json_object_new_int(p->comm_zero));
    json_object_object_add(cm, "micro_batches", json_object_new_int64(p->micro_steps));
    json_object_object_add(cm, "reduce_node_bytes", cost_jnum(p->comm.rs_node_bytes));
    json_object_object_add(cm, "flat_reduce_node_bytes", cost_jnum(p->comm.flat_rs_node_bytes));
    json_object *stages = json_object_new_array();
    for (int z = 1; z <= 3; z++) {
        json_object *st = json_object_new_object();
        json_object_object_add(st, "zero", json_object_new_int(z));
        json_object_object_add(st, "node_bytes", cost_jnum(p->comm_stage[z].node_bytes));
        json_object_object_add(st, "reduce_node_bytes", cost_jnum(p->comm_stage[z].rs_node_bytes));
        json_object_object_add(st, "reductions", cost_jnum(p->comm_stage[z].reduces));
        json_object_object_add(st, "gathers", cost_jnum(p->comm_stage[z].gathers));
        json_object_object_add(st, "overlap", json_object_new_boolean(p->comm_stage[z].overlapped));
        json_object_array_add(stages, st);
    }
    json_object_object_add(cm, "stages", stages);
    if (p->have_comm) {
        json_object_object_add(cm, "network_gbps", cost_jnum(o->network_gbps));
        json_object_object_add(cm, "network_seconds", cost_jnum(p->comm.seconds));
        json_object_object_add(cm, "compute_seconds", cost_jnum(p->step_compute_s));
        json_object_object_add(cm, "share", cost_jnum(p->comm.share));
        json_object_object_add(cm, "reduce_scatter_seconds", cost_jnum(p->comm.rs_seconds));
        json_object_object_add(cm, "overlap_max_seconds", cost_jnum(p->comm.overlap_max));
        json_object_object_add(cm, "overlap_hidden_seconds", cost_jnum(p->comm.hidden));
        json_object_object_add(cm, "exposed_seconds", cost_jnum(p->comm.exposed));
    }
    json_object_object_add(r, "comm_per_step", cm);
print:
    printf("%s\n", json_object_to_json_string_ext(r, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(r);
}

static void cost_print_csv(const cost_opts *o, const cost_plan *p)
{
    char x[32], y[32];
    printf("item,ondemand,spot,unit\n");
    for (int i = 0; i < o->n_prices; i++)
        printf("price.%s,%s,%s,$/node-hour\n", o->prices[i].name, util_dtoa(o->prices[i].ondemand, x),
               util_dtoa(o->prices[i].spot, y));
    printf("node_hour,%s,%s,$/node-hour\n", util_dtoa(p->node_od, x), util_dtoa(p->node_spot, y));
    printf("fleet_hour,%s,%s,$/hour\n", util_dtoa(p->fleet_od, x), util_dtoa(p->fleet_spot, y));
    if (!p->have_work)
        return;
    printf("run_hours,%s,%s,hours\n", util_dtoa(p->od_hours, x), util_dtoa(p->spot_hours, y));
    printf("run_cost,%.2f,%.2f,$\n", p->od_cost, p->spot_cost);
    printf("interruptions,0,%s,count\n", util_dtoa(p->interruptions, x));
    printf("lost_work,0,%s,hours\n", util_dtoa(p->lost_h, x));
    if (p->have_comm)
        printf("comm_share,%s,%s,fraction of a step\n", util_dtoa(p->comm.share, x), util_dtoa(p->comm.share, y));
}

void cost_estimate_print(const cost_opts *o, const cost_plan *p, int format)
{
    if (format == COST_JSON)
        cost_print_json(o, p);
    else if (format == COST_CSV)
        cost_print_csv(o, p);
    else
        cost_print_table(o, p);
}
