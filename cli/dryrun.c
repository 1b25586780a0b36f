/* --dry-run: the resolved configuration, the parameter count and what one
 * process will hold in memory, computed from the shape alone so 7B/67B plans
 * print on a laptop; then what can be checked without training (the data
 * opens, the plan fits this machine). */
#include "cli.h"
#include "model/model.h"
#include "config/opts.h"
#include "backend/backend.h"
#include "backend/cpu_attn.h"
#include "comm/comm.h"
#include "data/data.h"
#include "money/commcost.h"
#include "cuda/plan.h"
#include "hf/hf.h"
#include "money/cost.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void dryrun_line(const char *what, double bytes)
{
    printf("  %-28s %12.3f GiB\n", what, bytes / (1024.0 * 1024.0 * 1024.0));
}

/* Under the activations: which train.recompute the figure is for, and what
 * the other setting would hold. */
/* zero = auto: which stage memplan_choose_zero took here, and why. */
static void dryrun_zero(const cfg *c, const memplan_cfg *mc, const memplan_bytes *m)
{
    uint64_t avail = memplan_host_available();
    if (strcmp(c->zero, "auto") != 0)
        return;
    if (avail == 0)
        printf("  (zero auto: stage 1 on this machine: MemAvailable unknown)\n");
    else
        printf("  (zero auto: stage %d on this machine, one rank: %s %.3f GiB available)\n", mc->zero,
               m->total <= avail ? "the lowest whose plan fits" : "the smallest plan; none fits", (double)avail /
               (1024.0 * 1024.0 * 1024.0));
}

static void dryrun_recompute(const cfg *c, const memplan_cfg *mc, const memplan_bytes *m)
{
    int layers = mc->recompute == MEMPLAN_RECOMPUTE_LAYERS;
    if (!strcmp(c->recompute, "auto"))
        printf("  (recompute auto: %s on this machine, one rank: %.3f GiB available, %.3f GiB with none)\n",
               layers ? "layers" : "none", (double)memplan_host_available() / (1024.0 * 1024.0 * 1024.0),
               (double)(m->total - (layers ? m->act_layers : m->act_none) + m->act_none) /
                   (1024.0 * 1024.0 * 1024.0));
    printf("  (recompute %s: %s; recompute %s would hold %.3f GiB)\n", layers ? "layers" : "none",
           layers ? "layer inputs and one layer's activations, each layer's forward rerun in its backward"
                  : "every layer's activations kept for the backward",
           layers ? "none" : "layers", (double)(layers ? m->act_none : m->act_layers) / (1024.0 * 1024.0 * 1024.0));
}

/* Under the GPU's activations: the recompute setting they are for (auto:
 * the choice against the GPU's size) and what the other would hold. */
static void dryrun_gpu_recompute(const memplan_cfg *mc, const memplan_bytes *g, int autorc, double gib)
{
    int layers = mc->recompute == MEMPLAN_RECOMPUTE_LAYERS;
    const double G = 1024.0 * 1024.0 * 1024.0;
    if (autorc && gib <= 0)
        printf("  (recompute auto: none; GPU memory unknown, pass --gpu-memory GiB or set cost.gpu)\n");
    else if (autorc)
        printf("  (recompute auto: %s against a %.0f GiB GPU: %.3f GiB with none)\n", layers ? "layers" : "none",
               gib, (double)(g->total - (layers ? g->act_layers : g->act_none) + g->act_none) / G);
    printf("  (recompute %s: %s; recompute %s would hold %.3f GiB)\n", layers ? "layers" : "none",
           layers ? "every layer's input and one layer's activations, each layer's forward rerun in its backward"
                  : "every layer's activations kept for the backward",
           layers ? "none" : "layers", (double)(layers ? g->act_none : g->act_layers) / G);
}

/* backend cuda: what one GPU holds at the configured precision (the memory
 * model over cuda/plan.c's arena), and whether that fits the GPU memory
 * given by --gpu-memory or the cost section (cost.gpu_memory_gib, else
 * cost.gpu's size). */
static void dryrun_gpu(const cfg *c, const model_shape *s, int world)
{
    memplan_cfg mc;
    memplan_bytes g;
    double gib = c->gpu_memory_gib > 0 ? c->gpu_memory_gib : cost_gpu_memory_gib(c->gpu);
    /* zero = auto and recompute = auto: what the trainer picks against the
     * GPU's memory (here the configured size: no GPU is asked). */
    int autorc = !strcmp(c->recompute, "auto");
    int autoz = !strcmp(c->zero, "auto") && gib > 0;
    int prc = cfg_memplan_gpu(c, s, world, gib, &mc, &g);
    if (prc != ST_OK) {
        printf("per-GPU memory with backend cuda: not planned (%s)\n", util_last_error());
        return;
    }
    int half = mc.precision == MEMPLAN_BF16 || mc.precision == MEMPLAN_FP16;
    printf("per-GPU memory with backend cuda, precision %s, %d rank%s (ZeRO stage %d%s: Adam m and v%s sharded):\n",
           cuda_prec_name((cuda_prec)mc.precision), world, world == 1 ? "" : "s", mc.zero,
           autoz ? ", zero auto" : "",
           mc.zero >= 3 ? ", master, parameters and gradients" : mc.zero == 2 ? (half ? ", master and gradients"
                                                                                   : ", gradients")
           : half ? " and the fp32 master" : "");
    dryrun_line(half ? "fp32 master (range)" : mc.zero >= 3 ? "weights (range + 2 buckets)" : "weights (fp32 master)",
                (double)g.master);
    dryrun_line(!half ? "weights (no working copy)" : mc.zero >= 3 ? "working (range + 2 buckets)"
                                                                   : "weights (working copy)",
                (double)g.working);
    int two = mc.overlap && world > 1;   /* the second gradient bucket, a layer's (memplan_cuda_params) */
    dryrun_line(mc.zero >= 2 ? (two ? "gradients (range+bucket+layer)" : "gradients (range + 1 bucket)")
                             : "gradients (fp32)",
                (double)g.grads);
    dryrun_line("adam m+v (this rank's range)", (double)g.adam);
    char act[64];
    snprintf(act, sizeof act, "activations (micro_batch %lld)", (long long)c->micro_batch);
    dryrun_line(act, (double)g.activations);
    dryrun_line("attention scratch", (double)g.attn_scratch);
    dryrun_gpu_recompute(&mc, &g, autorc, gib);
    dryrun_line("cuBLASLt workspace", (double)g.workspace);
    if (g.comm > 0)
        dryrun_line("NCCL gradient buffers", (double)g.comm);
    dryrun_line("CUDA context (estimate)", (double)g.context);
    dryrun_line("total", (double)g.total);
    printf("  per-GPU total: %llu bytes (host RAM besides: %.3f GiB checkpoint snapshot)\n",
           (unsigned long long)g.total, (double)g.host / (1024.0 * 1024.0 * 1024.0));
    double need = (double)g.total / (1024.0 * 1024.0 * 1024.0);
    char advice[640];
    if (gib <= 0) {
        printf("GPU memory unknown: pass --gpu-memory GiB or set cost.gpu to check the fit\n");
    } else if (need <= gib) {
        printf("fits a %.0f GiB GPU (%.1f GiB needed, %.1f GiB spare)\n", gib, need, gib - need);
    } else {
        memplan_advice(&mc, &g, advice, sizeof advice);
        printf("DOES NOT FIT a %.0f GiB GPU: %.1f GiB needed; %s\n", gib, need, advice);
    }
}

/* The network side of a step on [cost]'s GPUs (ranks per node:
 * cost.gpus_per_node): the volume of the gradient reduction and the
 * all-gathers per ZeRO stage (commcost.h) and, with network_gbps, its
 * share of a step and what the bucket overlap hides of it ([comm] overlap:
 * the CPU's comm worker, the CUDA backend's comm stream). */
static void dryrun_comm(const cfg *c, const model_shape *s, int world, int zero)
{
    double peak = c->peak_tflops > 0 ? c->peak_tflops : cost_gpu_peak_tflops(c->gpu);
    double tokens = (double)c->global_batch * (double)s->seq_len;
    int reduce = comm_reduce_parse(c->comm_reduce) == COMM_REDUCE_NCCL ? COMM_REDUCE_NCCL : COMM_REDUCE_CHAIN;
    int64_t micro = cost_micro_steps(c->global_batch, world, c->micro_batch);
    uint64_t n = model_count_params(s);
    int off = strcmp(c->comm_overlap, "true") != 0, ov = !off, gpu = strcmp(c->backend, "cpu") != 0;
    /* Not yet timed on a GPU (the emulator proves the order, not the
     * overlap): said wherever the GPU's overlap is counted. */
    const char *unv = gpu ? "; on GPUs the comm stream, unverified on a GPU" : "";
    cost_comm_in in = {n, world, c->gpus_per_node, 2.0, c->network_gbps, 0, 1, zero, reduce,
                       micro, ov, n ? (double)s->vocab * (double)s->dim / (double)n : 0};
    if (peak > 0 && c->mfu > 0)
        in.compute_seconds = tokens * model_flops_per_token(s) / ((double)world * peak * 1e12 * c->mfu);
    in.last_micro_fraction = cost_last_micro_fraction(c->global_batch, world, c->micro_batch);
    cost_comm_out out;
    cost_comm(&in, &out);
    printf("communication per step (%d rank%s, %lld per node; %s gradient reduction, bf16 gather on GPUs; "
           "ZeRO stage %d):\n", world, world == 1 ? "" : "s", (long long)c->gpus_per_node,
           reduce == COMM_REDUCE_NCCL ? "ncclReduceScatter" : "chain (rank-order)", zero);
    printf("  each rank sends and receives  %12.3f GiB\n", out.rank_bytes / 1073741824.0);
    printf("  leaving each node             %12.3f GiB\n", out.node_bytes / 1073741824.0);
    if (c->network_gbps > 0 && in.compute_seconds > 0)
        printf("  at %g Gbit/s per node: %.2f s of network per step against %.2f s of compute (%s %g TFLOP/s x "
               "MFU %g): %.0f%% of a step when not overlapped\n", c->network_gbps, out.seconds, in.compute_seconds,
               c->gpu, peak, c->mfu, 100 * out.share);
    else
        printf("  set [cost] network_gbps (and gpu, mfu) for the communication share of a step\n");
    if (c->network_gbps > 0 && in.compute_seconds > 0 && out.node_bytes > 0) {
        if (zero == 1)
            printf("  stage 1 reduces once, after the backward pass: nothing overlaps it (an overlap with the last "
                   "micro-batch's backward, not built, could hide at most %.2f s of the %.2f s reduce-scatter; "
                   "stages 2 and 3 overlap bucket by bucket)\n", out.overlap_max, out.rs_seconds);
        else if (out.overlapped)
            printf("  overlapped ([comm] overlap%s): about %.2f s of it hidden behind compute, %.2f s exposed: "
                   "%.0f%% of a step\n", unv, out.hidden, out.exposed, 100 * out.exposed_share);
        else
            printf("  not overlapped (%s): overlapped, the bucket exchanges would hide about %.2f s\n",
                   off ? "[comm] overlap = false" : "one rank", out.overlap_could);
    }
    printf("  per ZeRO stage, leaving each node per step (%lld micro-batch%s a rank):\n", (long long)micro,
           micro == 1 ? "" : "es");
    const char *none = off ? "none ([comm] overlap = false: each bucket's exchange blocks between layers)"
                           : "none (one rank)";
    for (int z = 1; z <= 3; z++) {
        cost_comm_out o;
        in.zero = z;
        cost_comm(&in, &o);
        printf("    zero %d: %.3f GiB = gradients %g x %.3f GiB + parameter gathers %g x %.3f GiB; overlap: %s%s\n", z,
               o.node_bytes / 1073741824.0, o.reduces, o.reduces > 0 ? o.rs_node_bytes / o.reduces / 1073741824.0 : 0,
               o.gathers, o.gathers > 0 ? (o.node_bytes - o.rs_node_bytes) / o.gathers / 1073741824.0 : 0,
               z == 1        ? "none (one reduction after the backward pass)"
               : !o.overlapped ? none
               : z == 2        ? "each bucket's reduce-scatter behind the backward of the following buckets"
                               : "each bucket's reduce-scatter behind the backward of the following buckets, each "
                                 "layer's gather behind the previous layer's compute",
               z >= 2 && o.overlapped ? unv : "");
    }
    if (out.flat_rs_node_bytes > out.rs_node_bytes && reduce == COMM_REDUCE_CHAIN)
        printf("  (the flat all-to-all exchange the chain replaced sent %.3f GiB of gradients from each node)\n",
               out.flat_rs_node_bytes / 1073741824.0);
}

/* model.init_from as train checks it before reading a weight: the files,
 * and every safetensors header against the layout (no tensor data). */
static int dryrun_init_from(const cfg *c, const model_shape *s)
{
    model_layout L = {0};
    char which[160] = "";
    if (!c->init_from[0])
        return ST_OK;
    if (c->shape_from_ckpt) {   /* as resume would: the checkpoint has the weights */
        printf("init_from: not read; resume takes the shape and weights from a checkpoint\n");
        return ST_OK;
    }
    int rc = model_layout_init(&L, s);
    if (rc == ST_OK)
        rc = hf_check(c->init_from, &L, which, sizeof which);
    if (rc == ST_OK)
        printf("init_from: %s/%s holds every tensor of the layout with its shape\n", c->init_from, which);
    model_layout_free(&L);
    return rc;
}

/* What a dry run can check here: the data opens (a glob that matches
 * nothing is an error on any machine), init_from's weights match the
 * shape, and the plan fits this machine's memory (a warning: the plan may
 * be for other machines). */
static int dryrun_checks(const cfg *c, const model_shape *s, const memplan_cfg *mc, const memplan_bytes *m)
{
    data *d = NULL;
    int rc = data_open(&d, c);
    data_close(d);
    if (rc != ST_OK)
        return rc;
    printf("data: %s opens\n", c->source);
    if ((rc = dryrun_init_from(c, s)) != ST_OK)
        return rc;
    double mem = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    char advice[640];
    if (mem > 0 && (double)m->total > mem) {
        memplan_advice(mc, m, advice, sizeof advice);
        printf("warning: %.1f GiB per process does not fit this machine's %.1f GiB; on the CPU backend: %s\n",
               (double)m->total / 1073741824.0, mem / 1073741824.0, advice);
    } else if (mem > 0) {
        printf("fits this machine's %.1f GiB of memory\n", mem / 1073741824.0);
    }
    return ST_OK;
}

int dryrun_plan(const cfg *c, int world)
{
    model_shape s;
    memplan_cfg mc;
    memplan_bytes m;
    int rc = model_shape_from_cfg(&s, c);
    if (rc == ST_OK)
        rc = cfg_memplan(c, &s, 0, world, &mc);
    /* auto: the choice the trainer would make for one rank on this
     * machine; the stage first (both auto: with none on every stage first). */
    if (rc == ST_OK && !strcmp(c->zero, "auto") &&
        (rc = !strcmp(c->recompute, "auto") ? memplan_choose_zero_recompute(&mc, memplan_host_available(), &m)
                                            : memplan_choose_zero(&mc, memplan_host_available(), &m)) != ST_OK)
        return util_fail(rc, "%s", util_last_error());
    if (rc == ST_OK &&
        (rc = !strcmp(c->recompute, "auto") ? memplan_choose_recompute(&mc, memplan_host_available(), &m)
                                            : memplan_compute(&mc, &m)) != ST_OK)
        return util_fail(rc, "%s", util_last_error());
    if (rc != ST_OK)
        return rc;
    char *text = cfg_render(c);
    if (!text)
        return util_fail(ST_SOFTWARE, "out of memory");
    printf("; resolved configuration (%s)\n%s\n", c->path, text);
    free(text);
    if (c->min_lr_auto) {
        char lr[32], min_lr[32];
        printf("train.min_lr = auto: lr / 10 = %s (lr %s)\n", util_dtoa(c->min_lr, min_lr), util_dtoa(c->lr, lr));
    }
    uint64_t n = model_count_params(&s);
    printf("parameters: %llu (%.3f B)\n", (unsigned long long)n, (double)n / 1e9);
    printf("flops per token (fwd+bwd): %.4g\n", model_flops_per_token(&s));
    printf("memory per process with %d rank%s (fp32 master weights, grads, sharded AdamW: ZeRO stage %d):\n",
           world, world == 1 ? "" : "s", mc.zero);
    /* [comm] overlap over 2+ ranks: a second buffer of each kind, a layer big
     * (the embedding and lm_head buckets always take the first). */
    int two = mc.overlap && world > 1;
    dryrun_line(mc.zero >= 3 ? (two ? "parameters (range+bucket+layer)" : "parameters (range + 1 bucket)")
                             : "parameters (fp32)", (double)m.master);
    dryrun_line(mc.zero >= 2 ? (two ? "gradients (range+bucket+layer)" : "gradients (range + 1 bucket)")
                             : "gradients (fp32)", (double)m.grads);
    printf("  this rank's range: %zu parameters (64-aligned; %.1f%% of the vector)\n", m.range,
           100.0 * (double)m.range / (double)(n ? n : 1));
    dryrun_line("adam m+v (this rank's range)", (double)m.adam);
    dryrun_line("checkpoint snapshot (range)", (double)m.snapshot);
    dryrun_line("gradient exchange buffers", (double)m.comm);
    char act[64];
    snprintf(act, sizeof act, "activations (micro_batch %lld)", (long long)c->micro_batch);
    dryrun_line(act, (double)m.activations);
    /* Per thread, whatever seq_len: the tiled attention's score tiles. */
    dryrun_line("attention scratch (tiles)", (double)m.attn_scratch);
    uint64_t tile = 4 * (uint64_t)cpu_attn_scratch_floats(s.head_dim, s.n_heads / s.n_kv_heads);
    printf("  (attention tiled %dx%d: %llu thread%s x %.1f KiB, whatever seq_len)\n", CPU_ATTN_TILE, CPU_ATTN_TILE,
           (unsigned long long)(m.attn_scratch / tile), m.attn_scratch / tile == 1 ? "" : "s", (double)tile / 1024.0);
    dryrun_line("checkpoint writer I/O", (double)m.ckpt_io);
    dryrun_line("process (binary, libs, MPI)", (double)m.runtime);
    dryrun_zero(c, &mc, &m);
    dryrun_recompute(c, &mc, &m);
    dryrun_line("total", (double)m.total);
    printf("  per-process total: %llu bytes\n", (unsigned long long)m.total);
    /* The line above is the largest rank's (tests and scripts parse it);
     * rank 0's follows only when it differs. */
    uint64_t r0 = memplan_rank_total(&mc, &m, 0);
    if (r0 != m.total)
        printf("  rank 0 per-process total: %llu bytes (%.3f GiB: no chain slots, it sends from its gradients)\n",
               (unsigned long long)r0, (double)r0 / 1073741824.0);
    dryrun_comm(c, &s, world, mc.zero);
    if (strcmp(c->backend, "cpu") != 0)
        dryrun_gpu(c, &s, world);
    return dryrun_checks(c, &s, &mc, &m);
}
