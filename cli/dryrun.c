/* --dry-run: the resolved configuration, the parameter count and what one
 * process will hold in memory, computed from the shape alone so 7B/67B plans
 * print on a laptop; then what can be checked without training (the data
 * opens, the plan fits this machine). */
#include "cli.h"
#include "model/model.h"
#include "backend/backend.h"
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

typedef struct {
    double params, grads, adam, snapshot, comm, activations, total;
    size_t range;      /* the largest rank's share of the flat vector */
} dryrun_memory;

static void dryrun_memory_plan(const cfg *c, const model_shape *s, int world, dryrun_memory *m)
{
    double n = (double)model_count_params(s), W = world > 0 ? world : 1;
    /* Ranks own 64-aligned ranges; the first ranks' are the largest. */
    size_t lo, hi;
    comm_range((size_t)model_count_params(s), 0, world > 0 ? world : 1, &lo, &hi);
    m->range = hi - lo;
    /* ZeRO 2 keeps the grads' range and one bucket, 3 the params' too. */
    int zero = atoi(c->zero);
    double bucket = 4 * (double)backend_cpu_bucket_floats(s);
    m->params = zero >= 3 ? 4 * (double)m->range + bucket : 4 * n;
    m->grads = zero >= 2 ? 4 * (double)m->range + bucket : 4 * n;   /* 1: full vector, reduce-scatter input */
    m->adam = 2 * 4 * (double)m->range;   /* m and v of this rank's range */
    m->snapshot = 3 * 4 * (double)m->range;   /* checkpoint host buffer */
    /* Chunked collectives: one chunk from every peer, never the vector. */
    m->comm = W > 1 ? 4 * W * (double)comm_get_chunk() : 0;
    /* The CPU backend's own sizing of its buffers, the figure it allocates. */
    m->activations = (double)backend_cpu_activation_bytes(s, c->micro_batch, !strcmp(c->recompute, "layers"),
                                                          (int)c->threads);
    m->total = m->params + m->grads + m->adam + m->snapshot + m->comm + m->activations;
}

static void dryrun_line(const char *what, double bytes)
{
    printf("  %-28s %12.3f GiB\n", what, bytes / (1024.0 * 1024.0 * 1024.0));
}

/* Under the activations: which train.recompute the figure is for, and what
 * the other setting would hold. */
static void dryrun_recompute(const cfg *c, const model_shape *s)
{
    int layers = !strcmp(c->recompute, "layers");
    double other = (double)backend_cpu_activation_bytes(s, c->micro_batch, !layers, (int)c->threads);
    printf("  (recompute %s: %s; recompute %s would hold %.3f GiB)\n", c->recompute,
           layers ? "layer inputs and one layer's activations, each layer's forward rerun in its backward"
                  : "every layer's activations kept for the backward",
           layers ? "none" : "layers", other / (1024.0 * 1024.0 * 1024.0));
}

/* backend cuda (cuda/plan.c): what one GPU holds at the configured
 * precision, and whether that fits the GPU memory given by --gpu-memory or
 * the cost section (cost.gpu_memory_gib, else cost.gpu's size). */
static void dryrun_gpu(const cfg *c, const model_shape *s, int world)
{
    cuda_prec p;
    cuda_memplan g;
    if (cuda_prec_parse(c->precision, &p))
        p = CUDA_BF16;
    cuda_memory_plan(s, c->micro_batch, world, p, &g);
    printf("per-GPU memory with backend cuda, precision %s, %d rank%s:\n", cuda_prec_name(p), world,
           world == 1 ? "" : "s");
    dryrun_line("weights (fp32 master)", g.master);
    dryrun_line(p == CUDA_BF16 || p == CUDA_FP16 ? "weights (working copy)" : "weights (no working copy)", g.working);
    dryrun_line("gradients (fp32)", g.grads);
    dryrun_line("adam m+v (this rank's 1/W)", g.adam);
    char act[64];
    snprintf(act, sizeof act, "activations (micro_batch %lld)", (long long)c->micro_batch);
    dryrun_line(act, g.activations);
    dryrun_line("cuBLASLt workspace", g.workspace);
    if (g.comm > 0)
        dryrun_line("NCCL receive buffer", g.comm);
    dryrun_line("CUDA context (estimate)", g.context);
    dryrun_line("total", g.total);
    double gib = c->gpu_memory_gib > 0 ? c->gpu_memory_gib : cost_gpu_memory_gib(c->gpu);
    double need = g.total / (1024.0 * 1024.0 * 1024.0);
    if (gib <= 0)
        printf("GPU memory unknown: pass --gpu-memory GiB or set cost.gpu to check the fit\n");
    else if (need <= gib)
        printf("fits a %.0f GiB GPU (%.1f GiB needed, %.1f GiB spare)\n", gib, need, gib - need);
    else
        printf("DOES NOT FIT a %.0f GiB GPU: %.1f GiB needed; lower train.micro_batch (activations), or use "
               "more ranks (Adam m and v are split over the ranks)\n", gib, need);
}

/* The network side of a step on [cost]'s GPUs: the volume of the chunked
 * reduce-scatter and all-gather and, with network_gbps, its share of a step
 * (no overlap with compute). */
static void dryrun_comm(const cfg *c, const model_shape *s, int world)
{
    double peak = c->peak_tflops > 0 ? c->peak_tflops : cost_gpu_peak_tflops(c->gpu);
    double tokens = (double)c->global_batch * (double)s->seq_len;
    cost_comm_in in = {model_count_params(s), world, c->gpus_per_node, 2.0, c->network_gbps, 0, 1};
    if (peak > 0 && c->mfu > 0)
        in.compute_seconds = tokens * model_flops_per_token(s) / ((double)world * peak * 1e12 * c->mfu);
    in.last_micro_fraction = cost_last_micro_fraction(c->global_batch, world, c->micro_batch);
    cost_comm_out out;
    cost_comm(&in, &out);
    printf("communication per step (%d rank%s, %lld per node; fp32 gradients, bf16 gather on GPUs):\n", world,
           world == 1 ? "" : "s", (long long)c->gpus_per_node);
    printf("  each rank sends and receives  %12.3f GiB\n", out.rank_bytes / 1073741824.0);
    printf("  leaving each node             %12.3f GiB\n", out.node_bytes / 1073741824.0);
    if (c->network_gbps > 0 && in.compute_seconds > 0)
        printf("  at %g Gbit/s per node: %.2f s of network per step against %.2f s of compute (%s %g TFLOP/s x "
               "MFU %g): %.0f%% of a step when not overlapped\n", c->network_gbps, out.seconds, in.compute_seconds,
               c->gpu, peak, c->mfu, 100 * out.share);
    else
        printf("  set [cost] network_gbps (and gpu, mfu) for the communication share of a step\n");
    if (c->network_gbps > 0 && in.compute_seconds > 0 && out.node_bytes > 0)
        printf("  an overlap with the last micro-batch's backward (not built) could hide at most %.2f s of the "
               "%.2f s reduce-scatter: %.1f%% of a step\n", out.overlap_max, out.rs_seconds,
               100 * out.overlap_max / (out.seconds + in.compute_seconds));
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
static int dryrun_checks(const cfg *c, const model_shape *s, const dryrun_memory *m)
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
    if (mem > 0 && m->total > mem)
        printf("warning: %.1f GiB per process does not fit this machine's %.1f GiB; on the CPU backend lower "
               "train.micro_batch or model size, or spread over more ranks (adam and snapshot shrink with "
               "the world size, parameters and gradients do not)\n", m->total / 1073741824.0, mem / 1073741824.0);
    else if (mem > 0)
        printf("fits this machine's %.1f GiB of memory\n", mem / 1073741824.0);
    return ST_OK;
}

int dryrun_plan(const cfg *c, int world)
{
    model_shape s;
    dryrun_memory m;
    int rc = model_shape_from_cfg(&s, c);
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
    dryrun_memory_plan(c, &s, world, &m);
    printf("parameters: %llu (%.3f B)\n", (unsigned long long)n, (double)n / 1e9);
    printf("flops per token (fwd+bwd): %.4g\n", model_flops_per_token(&s));
    printf("memory per process with %d rank%s (fp32 master weights, grads, sharded AdamW):\n", world,
           world == 1 ? "" : "s");
    int zero = atoi(c->zero);
    dryrun_line(zero >= 3 ? "parameters (range + 1 layer)" : "parameters (fp32)", m.params);
    dryrun_line(zero >= 2 ? "gradients (range + 1 bucket)" : "gradients (fp32)", m.grads);
    printf("  this rank's range: %zu parameters (64-aligned; %.1f%% of the vector)\n", m.range,
           100.0 * (double)m.range / (double)(n ? n : 1));
    dryrun_line("adam m+v (this rank's range)", m.adam);
    dryrun_line("checkpoint snapshot (range)", m.snapshot);
    dryrun_line("gradient exchange buffers", m.comm);
    char act[64];
    snprintf(act, sizeof act, "activations (micro_batch %lld)", (long long)c->micro_batch);
    dryrun_line(act, m.activations);
    dryrun_recompute(c, &s);
    dryrun_line("total", m.total);
    dryrun_comm(c, &s, world);
    if (strcmp(c->backend, "cpu") != 0)
        dryrun_gpu(c, &s, world);
    return dryrun_checks(c, &s, &m);
}
