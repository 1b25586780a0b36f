/* --dry-run: the resolved configuration, the parameter count and what one
 * process will hold in memory, computed from the shape alone so 7B/67B plans
 * print on a laptop. */
#include "train.h"
#include "../cuda/plan.h"
#include "../spot/cost.h"
#include "../util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double params, grads, adam, snapshot, activations, total;
} train_memory;

static void train_memory_plan(const model_shape *s, int64_t micro_batch, int world, train_memory *m)
{
    double n = (double)model_count_params(s), W = world > 0 ? world : 1;
    double B = (double)micro_batch, T = (double)s->seq_len, L = (double)s->n_layers;
    double q = (double)(s->n_heads * s->head_dim), kv = (double)(s->n_kv_heads * s->head_dim);
    /* Saved for backward per token and layer: block input, two norm outputs,
     * q/k/v, attention output, residual, gate/up/activation, and one row of
     * attention probabilities per head. */
    double per_tok_layer = 6 * (double)s->dim + q + 2 * kv + 3 * (double)s->ffn_dim + (double)s->n_heads * T;
    m->params = 4 * n;
    m->grads = 4 * n;                     /* full vector: reduce-scatter input */
    m->adam = 2 * 4 * n / W;              /* m and v of this rank's range */
    m->snapshot = 3 * 4 * n / W;          /* checkpoint host buffer */
    m->activations = 4 * B * T * (L * per_tok_layer + 2 * (double)s->vocab);
    m->total = m->params + m->grads + m->adam + m->snapshot + m->activations;
}

static void plan_line(const char *what, double bytes)
{
    printf("  %-28s %12.3f GiB\n", what, bytes / (1024.0 * 1024.0 * 1024.0));
}

/* backend cuda (cuda/plan.c): what one GPU holds at the configured
 * precision, and whether that fits the GPU memory given by --gpu-memory or
 * the cost section (cost.gpu_memory_gib, else cost.gpu's size). */
static void train_plan_gpu(const cfg *c, const model_shape *s, int world)
{
    cuda_prec p;
    cuda_memplan g;
    if (cuda_prec_parse(c->precision, &p))
        p = CUDA_BF16;
    cuda_memory_plan(s, c->micro_batch, world, p, &g);
    printf("per-GPU memory with backend cuda, precision %s, %d rank%s:\n", cuda_prec_name(p), world,
           world == 1 ? "" : "s");
    plan_line("weights (fp32 master)", g.master);
    plan_line(p == CUDA_BF16 || p == CUDA_FP16 ? "weights (working copy)" : "weights (no working copy)", g.working);
    plan_line("gradients (fp32)", g.grads);
    plan_line("adam m+v (this rank's 1/W)", g.adam);
    char act[64];
    snprintf(act, sizeof act, "activations (micro_batch %lld)", (long long)c->micro_batch);
    plan_line(act, g.activations);
    plan_line("cuBLASLt workspace", g.workspace);
    plan_line("CUDA context (estimate)", g.context);
    plan_line("total", g.total);
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

int train_plan(const cfg *c, int world)
{
    model_shape s;
    train_memory m;
    int rc = model_shape_from_cfg(&s, c);
    if (rc != ST_OK)
        return rc;
    char *text = cfg_render(c);
    if (!text)
        return util_fail(ST_SOFTWARE, "out of memory");
    printf("; resolved configuration (%s)\n%s\n", c->path, text);
    free(text);
    uint64_t n = model_count_params(&s);
    train_memory_plan(&s, c->micro_batch, world, &m);
    printf("parameters: %llu (%.3f B)\n", (unsigned long long)n, (double)n / 1e9);
    printf("flops per token (fwd+bwd): %.4g\n", model_flops_per_token(&s));
    printf("memory per process with %d rank%s (fp32 master weights, grads, sharded AdamW):\n", world,
           world == 1 ? "" : "s");
    plan_line("parameters (fp32)", m.params);
    plan_line("gradients (fp32)", m.grads);
    plan_line("adam m+v (this rank's 1/W)", m.adam);
    plan_line("checkpoint snapshot (1/W)", m.snapshot);
    char act[64];
    snprintf(act, sizeof act, "activations (micro_batch %lld)", (long long)c->micro_batch);
    plan_line(act, m.activations);
    plan_line("total", m.total);
    if (strcmp(c->backend, "cpu") != 0)
        train_plan_gpu(c, &s, world);
    return ST_OK;
}
