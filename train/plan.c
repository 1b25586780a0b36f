/* --dry-run: the resolved configuration, the parameter count and what one
 * process will hold in memory, computed from the shape alone so 7B/67B plans
 * print on a laptop. */
#include "train.h"
#include "../util/util.h"

#include <stdio.h>
#include <stdlib.h>

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
    return ST_OK;
}
