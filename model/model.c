/* Model shapes, the canonical flat parameter layout with Hugging Face names,
 * its translation to the checkpoint's tensor table, parameter and FLOP
 * counts, and deterministic weight initialisation. */
#include "model.h"
#include "config/config.h"
#include "util/util.h"
#include "rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int model_shape_from_cfg(model_shape *s, const cfg *c)
{
    memset(s, 0, sizeof *s);
    s->dim = c->dim;
    s->n_layers = c->n_layers;
    s->n_heads = c->n_heads;
    s->n_kv_heads = c->n_kv_heads;
    s->ffn_dim = c->ffn_dim;
    s->vocab = c->vocab_size;
    s->seq_len = c->seq_len;
    s->rope_theta = c->rope_theta;
    s->norm_eps = c->norm_eps;
    if (s->n_heads <= 0 || s->dim % s->n_heads != 0)
        return util_fail(ST_CONFIG, "%s: model.dim (%lld) must be a positive multiple of model.n_heads (%lld)",
                         c->path[0] ? c->path : "config", (long long)s->dim, (long long)s->n_heads);
    s->head_dim = s->dim / s->n_heads;
    if (s->n_kv_heads <= 0 || s->n_heads % s->n_kv_heads != 0)
        return util_fail(ST_CONFIG, "%s: model.n_heads (%lld) must be a multiple of model.n_kv_heads (%lld)",
                         c->path[0] ? c->path : "config", (long long)s->n_heads, (long long)s->n_kv_heads);
    if (s->head_dim % 2 != 0)
        return util_fail(ST_CONFIG, "%s: head dimension model.dim/model.n_heads = %lld must be even for RoPE",
                         c->path[0] ? c->path : "config", (long long)s->head_dim);
    return ST_OK;
}

static int model_add(model_layout *L, int *i, size_t *off, const char *name, int ndim,
                     int64_t d0, int64_t d1)
{
    model_param *p = &L->params[(*i)++];
    if (util_fmt(p->name, sizeof p->name, "%s", name) < 0)
        return ST_SOFTWARE;
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = ndim == 2 ? d1 : 1;
    p->numel = (size_t)d0 * (size_t)p->shape[1];
    p->offset = *off;
    *off += p->numel;
    return ST_OK;
}

int model_layout_init(model_layout *L, const model_shape *s)
{
    static const char *kind_names[MODEL_PER_LAYER] = {
        "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
        "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
        "mlp.down_proj.weight", "input_layernorm.weight", "post_attention_layernorm.weight"};
    int rc = ST_OK, i = 0;
    size_t off = 0;
    char name[96];
    memset(L, 0, sizeof *L);
    L->s = *s;
    int64_t kv = s->n_kv_heads * s->head_dim, q = s->n_heads * s->head_dim;
    int n = 3 + (int)s->n_layers * MODEL_PER_LAYER;
    L->params = calloc((size_t)n, sizeof *L->params);
    if (!L->params)
        return util_fail(ST_SOFTWARE, "out of memory building the parameter table");
    rc = model_add(L, &i, &off, "model.embed_tokens.weight", 2, s->vocab, s->dim);
    for (int64_t l = 0; l < s->n_layers && rc == ST_OK; l++) {
        int64_t shapes[MODEL_PER_LAYER][3] = {
            {2, q, s->dim},          {2, kv, s->dim},         {2, kv, s->dim},
            {2, s->dim, q},          {2, s->ffn_dim, s->dim}, {2, s->ffn_dim, s->dim},
            {2, s->dim, s->ffn_dim}, {1, s->dim, 1},          {1, s->dim, 1}};
        for (int k = 0; k < MODEL_PER_LAYER && rc == ST_OK; k++) {
            snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)l, kind_names[k]);
            rc = model_add(L, &i, &off, name, (int)shapes[k][0], shapes[k][1], shapes[k][2]);
        }
    }
    if (rc == ST_OK)
        rc = model_add(L, &i, &off, "model.norm.weight", 1, s->dim, 1);
    if (rc == ST_OK)
        rc = model_add(L, &i, &off, "lm_head.weight", 2, s->vocab, s->dim);
    L->n_params = i;
    L->n_floats = off;
    if (rc != ST_OK)
        model_layout_free(L);
    return rc;
}

void model_layout_free(model_layout *L)
{
    free(L->params);
    L->params = NULL;
    L->n_params = 0;
}

const model_param *model_embed(const model_layout *L) { return &L->params[0]; }

const model_param *model_layer(const model_layout *L, int64_t layer, int kind)
{
    return &L->params[1 + layer * MODEL_PER_LAYER + kind];
}

const model_param *model_final_norm(const model_layout *L) { return &L->params[L->n_params - 2]; }
const model_param *model_lm_head(const model_layout *L) { return &L->params[L->n_params - 1]; }

uint64_t model_layer_floats(const model_shape *s)
{
    uint64_t d = (uint64_t)s->dim, hd = (uint64_t)s->head_dim;
    uint64_t q = (uint64_t)s->n_heads * hd, kv = (uint64_t)s->n_kv_heads * hd;
    return d * q + 2 * d * kv + q * d + 3 * d * (uint64_t)s->ffn_dim + 2 * d;
}

uint64_t model_count_params(const model_shape *s)
{
    return 2 * (uint64_t)s->vocab * (uint64_t)s->dim + (uint64_t)s->n_layers * model_layer_floats(s) +
           (uint64_t)s->dim;
}

double model_flops_per_token(const model_shape *s)
{
    /* 6 per weight (fwd 2, bwd 4) for every matmul weight; the embedding
     * lookup is not a matmul. Attention scores and weighted sum: 2 matmuls of
     * T x head_dim per head, causal halves it, x3 for fwd+bwd -> 6*L*T*q/... */
    double n = (double)model_count_params(s) - (double)s->vocab * (double)s->dim;
    double attn = 6.0 * (double)s->n_layers * (double)s->seq_len * (double)(s->n_heads * s->head_dim);
    return 6.0 * n + attn;
}

void model_init_range(const model_layout *L, uint64_t seed, double init_std, size_t off, size_t n, float *out)
{
    double out_std = init_std / sqrt(2.0 * (double)(L->s.n_layers > 0 ? L->s.n_layers : 1));
    for (int i = 0; i < L->n_params; i++) {
        const model_param *p = &L->params[i];
        size_t a = p->offset > off ? p->offset : off;
        size_t b = p->offset + p->numel < off + n ? p->offset + p->numel : off + n;
        if (a >= b)
            continue;
        float *w = out + (a - off);
        if (p->ndim == 1) {
            for (size_t j = 0; j < b - a; j++)
                w[j] = 1.0f;
            continue;
        }
        int is_out = strstr(p->name, "o_proj") || strstr(p->name, "down_proj");
        rng_fill_normal_at(w, a - p->offset, b - a, seed, (uint64_t)i, is_out ? out_std : init_std);
    }
}

void model_init_weights(const model_layout *L, float *params, uint64_t seed, double init_std)
{
    model_init_range(L, seed, init_std, 0, L->n_floats, params);
}

int model_to_ckpt_table(const model_layout *L, ckpt_table *t)
{
    const model_shape *s = &L->s;
    ckpt_tensor *v = calloc((size_t)(L->n_params ? L->n_params : 1), sizeof *v);
    *t = (ckpt_table){0};
    if (!v)
        return util_fail(ST_SOFTWARE, "out of memory for the checkpoint's tensor table (%d tensors)", L->n_params);
    for (int i = 0; i < L->n_params; i++) {
        const model_param *p = &L->params[i];
        memcpy(v[i].name, p->name, sizeof v[i].name);
        v[i].ndim = p->ndim;
        v[i].shape[0] = p->shape[0];
        v[i].shape[1] = p->shape[1];
        v[i].offset = p->offset;
        v[i].numel = p->numel;
    }
    t->model = *s;
    t->tensors = v;
    t->n = L->n_params;
    t->n_floats = L->n_floats;
    return ST_OK;
}

void model_ckpt_table_free(ckpt_table *t)
{
    free((void *)t->tensors);
    *t = (ckpt_table){0};
}

int model_ckpt_table_same(const model_layout *L, const ckpt_tensor *t, int n)
{
    if (n != L->n_params)
        return 0;
    for (int i = 0; i < n; i++) {
        const model_param *p = &L->params[i];
        if (strcmp(p->name, t[i].name) != 0 || p->ndim != t[i].ndim || p->shape[0] != t[i].shape[0] ||
            p->shape[1] != t[i].shape[1] || p->offset != t[i].offset)
            return 0;
    }
    return 1;
}

void model_bucket_span(const model_layout *L, int64_t k, size_t *a, size_t *b)
{
    const model_param *ps[MODEL_PER_LAYER];
    int n = 0;
    if (k < 0)
        ps[n++] = model_embed(L);
    else if (k >= L->s.n_layers) {
        ps[n++] = model_final_norm(L);
        ps[n++] = model_lm_head(L);
    } else
        for (int i = 0; i < MODEL_PER_LAYER; i++)
            ps[n++] = model_layer(L, k, i);
    *a = ps[0]->offset;
    *b = ps[0]->offset + ps[0]->numel;
    for (int i = 1; i < n; i++) {
        *a = ps[i]->offset < *a ? ps[i]->offset : *a;
        *b = ps[i]->offset + ps[i]->numel > *b ? ps[i]->offset + ps[i]->numel : *b;
    }
}
