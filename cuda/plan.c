/* Host-side plans of the CUDA backend: GEMM shapes and their column-major
 * form, the activation arena, AdamW segments and the memory plan. Pure
 * functions of the model shape, micro-batch and precision, compiled by cc
 * so tests/unit/test_cuda_plan.c checks them without a GPU. */
#include "plan.h"
#include "backend/backend.h"
#include "comm/comm.h"
#include "model/memplan.h"
#include "util/util.h"

#include <stdlib.h>
#include <string.h>

int cuda_prec_parse(const char *s, cuda_prec *out)
{
    static const char *names[] = {"fp32", "tf32", "bf16", "fp16"};
    if (!s || !strcmp(s, "auto")) {
        *out = CUDA_BF16;
        return 0;
    }
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, names[i])) {
            *out = (cuda_prec)i;
            return 0;
        }
    return -1;
}

const char *cuda_prec_name(cuda_prec p)
{
    static const char *names[] = {"fp32", "tf32", "bf16", "fp16"};
    return (int)p >= 0 && (int)p < 4 ? names[p] : "?";
}

size_t cuda_prec_bytes(cuda_prec p) { return p == CUDA_BF16 || p == CUDA_FP16 ? 2 : 4; }

/* A chunk of classifier rows holds its fp32 logits in about this many
 * bytes: large enough for an efficient GEMM, small enough that vocab 102400
 * never needs the full [N, V] tensor. */
enum { CUDA_CHUNK_BYTES = 256 << 20, CUDA_NORM_ROWS = 64 };

void cuda_dims_init(cuda_dims *d, const model_shape *s, int64_t B)
{
    memset(d, 0, sizeof *d);
    d->B = B;
    d->T = s->seq_len;
    d->N = B * s->seq_len;
    d->D = s->dim;
    d->F = s->ffn_dim;
    d->V = s->vocab;
    d->H = s->n_heads;
    d->KV = s->n_kv_heads;
    d->hd = s->head_dim;
    d->grp = s->n_kv_heads > 0 ? s->n_heads / s->n_kv_heads : 1;
    d->qd = s->n_heads * s->head_dim;
    d->kvd = s->n_kv_heads * s->head_dim;
    d->qkvd = d->qd + 2 * d->kvd;
    d->L = s->n_layers;
    int64_t r = d->V > 0 ? (int64_t)CUDA_CHUNK_BYTES / (4 * d->V) : d->N;
    r = r / 64 * 64;
    if (r < 64)
        r = 64;
    /* Tests only: SPOTRAIN_CUDA_CHUNK_ROWS=64 cuts a small vocabulary's
     * classifier into chunks too (the emulator cannot afford a real one). */
    const char *cr = getenv("SPOTRAIN_CUDA_CHUNK_ROWS");
    if (cr && atoll(cr) > 0)
        r = atoll(cr);
    d->chunk_rows = r < d->N ? r : d->N;
    d->norm_rows = CUDA_NORM_ROWS;
}

static cuda_gemm cuda_g(const char *name, int ta, int tb, int64_t M, int64_t N, int64_t K, int64_t lda,
                        int64_t ldb, int64_t ldc, float beta, int out_f32)
{
    cuda_gemm g = {name, ta, tb, M, N, K, lda, ldb, ldc, 1, 0, 0, 0, 1.0f, beta, out_f32};
    return g;
}

cuda_gemm cuda_gemm_plan(const cuda_dims *d, int id, int64_t rows)
{
    int64_t N = d->N, D = d->D, F = d->F, V = d->V, qd = d->qd, qkvd = d->qkvd;
    cuda_gemm g;
    switch (id) {
    case CUDA_G_QKV: return cuda_g("qkv", 0, 1, N, qkvd, D, D, D, qkvd, 0, 0);
    case CUDA_G_O: return cuda_g("o_proj", 0, 1, N, D, qd, qd, qd, D, 1, 1);
    case CUDA_G_GU: return cuda_g("gate_up", 0, 1, N, 2 * F, D, D, D, 2 * F, 0, 0);
    case CUDA_G_DOWN: return cuda_g("down", 0, 1, N, D, F, F, F, D, 1, 1);
    case CUDA_G_LOGITS: return cuda_g("logits", 0, 1, rows, V, D, D, D, V, 0, 1);
    case CUDA_G_DXNF: return cuda_g("d_final_norm_out", 0, 0, rows, D, V, V, D, D, 0, 1);
    case CUDA_G_DWLM: return cuda_g("d_lm_head", 1, 0, V, D, rows, V, D, D, 1, 1);
    case CUDA_G_DH: return cuda_g("d_h", 0, 0, N, F, D, D, F, F, 0, 1);
    case CUDA_G_DWD: return cuda_g("d_down", 1, 0, D, F, N, D, F, F, 1, 1);
    case CUDA_G_DWGU: return cuda_g("d_gate_up", 1, 0, 2 * F, D, N, 2 * F, D, D, 1, 1);
    case CUDA_G_DXN2: return cuda_g("d_xn2", 0, 0, N, D, 2 * F, 2 * F, D, D, 0, 1);
    case CUDA_G_DAO: return cuda_g("d_attn_out", 0, 0, N, qd, D, D, qd, qd, 0, 0);
    case CUDA_G_DWO: return cuda_g("d_o_proj", 1, 0, D, qd, N, D, qd, qd, 1, 1);
    case CUDA_G_DWQKV: return cuda_g("d_qkv_proj", 1, 0, qkvd, D, N, qkvd, D, D, 1, 1);
    case CUDA_G_DXN1: return cuda_g("d_xn1", 0, 0, N, D, qkvd, qkvd, D, D, 0, 1);
    default: break;
    }
    memset(&g, 0, sizeof g);
    g.name = "?";
    return g;
}

cuda_gemm_cm cuda_gemm_colmajor(const cuda_gemm *g)
{
    /* Row-major C[M,N] is column-major C^T[N,M]; C^T = op(B)^T op(A)^T and a
     * row-major matrix read column-major is its transpose, so cuBLAS gets B
     * first with B's transpose flag, then A with A's. */
    cuda_gemm_cm c = {g->tb, g->ta, g->N, g->M, g->K, g->ldb, g->lda, g->ldc, g->batch, g->sb, g->sa, g->sc};
    return c;
}

/* ---- activation arena -------------------------------------------------- */

size_t cuda_arena_layer(const cuda_arena *a, int64_t layer, int kind)
{
    return (size_t)layer * CA_PER_LAYER + (size_t)kind;
}

size_t cuda_arena_global(const cuda_arena *a, int kind)
{
    return (size_t)a->d.L * CA_PER_LAYER + (size_t)kind;
}

int cuda_dlogits_whole(const cuda_dims *d, size_t ct)
{
    /* Tests only: SPOTRAIN_CUDA_DLOGITS_WHOLE=0 keeps the per-chunk path. */
    const char *w = getenv("SPOTRAIN_CUDA_DLOGITS_WHOLE");
    if (w && !strcmp(w, "0"))
        return 0;
    return d->chunk_rows < d->N && (double)ct * (double)d->N * (double)d->V <= (double)CUDA_DLOGITS_WHOLE_BYTES;
}

int cuda_arena_dlogits_whole(const cuda_arena *a, const cuda_dims *d)
{
    return d->chunk_rows < d->N &&
           a->bytes[cuda_arena_global(a, CA_DLOGITS)] >= a->ct * (size_t)d->N * (size_t)d->V;
}

int cuda_arena_plan(cuda_arena *a, const model_shape *s, int64_t B, cuda_prec p)
{
    return cuda_arena_plan_rc(a, s, B, p, 0);
}

int cuda_arena_plan_rc(cuda_arena *a, const model_shape *s, int64_t B, cuda_prec p, int recompute)
{
    memset(a, 0, sizeof *a);
    cuda_dims_init(&a->d, s, B);
    a->recompute = recompute != 0;
    const cuda_dims *d = &a->d;
    size_t ct = cuda_prec_bytes(p), f = 4, N = (size_t)d->N, D = (size_t)d->D, F = (size_t)d->F;
    size_t BHT = (size_t)(d->B * d->H * d->T), qn = N * (size_t)d->qd, kn = N * (size_t)d->kvd;
    a->ct = ct;
    a->n = (size_t)d->L * CA_PER_LAYER + CA_GLOBAL_COUNT;
    a->off = calloc(a->n, sizeof *a->off);
    a->bytes = calloc(a->n, sizeof *a->bytes);
    if (!a->off || !a->bytes) {
        cuda_arena_free(a);
        return util_fail(ST_SOFTWARE, "out of memory planning the activation arena");
    }
    size_t per[CA_PER_LAYER] = {
        [CA_RES] = f * N * D,  [CA_XN1] = ct * N * D, [CA_RS1] = f * N,      [CA_Q] = ct * qn,
        [CA_K] = ct * kn,      [CA_V] = ct * kn,      [CA_LSE] = f * BHT,
        [CA_AO] = ct * qn,     [CA_MID] = f * N * D,  [CA_XN2] = ct * N * D, [CA_RS2] = f * N,
        [CA_GU] = ct * N * 2 * F, [CA_H] = ct * N * F};
    size_t R = (size_t)d->chunk_rows * (size_t)d->V;
    size_t RZ = cuda_dlogits_whole(d, ct) ? N * (size_t)d->V : R;
    size_t nparts = (N + (size_t)d->norm_rows - 1) / (size_t)d->norm_rows;
    size_t glob[CA_GLOBAL_COUNT] = {
        [CA_FINAL_RES] = f * N * D, [CA_XNF] = ct * N * D,   [CA_RSF] = f * N,
        [CA_QKV] = ct * N * (size_t)d->qkvd, [CA_DELTA] = f * BHT,
        [CA_DQ] = ct * qn,        [CA_DK] = ct * kn,
        [CA_DV] = ct * kn,         [CA_DRES] = f * N * D,    [CA_DRES_CT] = ct * N * D,
        [CA_DXN] = f * N * D,      [CA_DH] = f * N * F,      [CA_DGU] = ct * N * 2 * F,
        [CA_DAO] = ct * qn,        [CA_LOGITS] = f * R,      [CA_DLOGITS] = ct * RZ,
        [CA_ROWLOSS] = 8 * N,      [CA_NORMPART] = 8 * nparts * D,
        [CA_TOKENS] = 4 * (size_t)d->B * (size_t)(d->T + 1), [CA_EMBIDX] = 4 * (3 * N + 2)};
    size_t off = 0;
    for (size_t i = 0; i < a->n; i++) {
        size_t li = (size_t)d->L * CA_PER_LAYER;
        size_t b = i < li ? per[i % CA_PER_LAYER] : glob[i - li];
        a->bytes[i] = b;
        /* Recompute: past layer 0 only the input gets bytes of its own. */
        if (a->recompute && i < li && i >= CA_PER_LAYER && i % CA_PER_LAYER != CA_RES) {
            a->off[i] = a->off[i % CA_PER_LAYER];
            continue;
        }
        a->off[i] = off;
        off += (b + CUDA_ARENA_ALIGN - 1) / CUDA_ARENA_ALIGN * CUDA_ARENA_ALIGN;
    }
    a->total = off;
    return ST_OK;
}

void cuda_arena_free(cuda_arena *a)
{
    free(a->off);
    free(a->bytes);
    a->off = a->bytes = NULL;
    a->n = 0;
}

/* ---- embedding backward index ------------------------------------------ */

int64_t cuda_embed_index(const int32_t *tokens, int64_t B, int64_t T, int64_t stride, int64_t V, int32_t *cnt,
                         int32_t *out)
{
    int64_t N = B * T, U = 0;
    memset(cnt, 0, (size_t)V * sizeof *cnt);
    for (int64_t n = 0; n < N; n++)
        cnt[tokens[(n / T) * stride + n % T]]++;
    for (int64_t v = 0; v < V; v++)
        if (cnt[v])
            U++;
    int32_t *tok = out + 1, *start = tok + U, *rows = start + U + 1;
    int64_t u = 0, pos = 0;
    for (int64_t v = 0; v < V; v++) {
        if (!cnt[v])
            continue;
        tok[u] = (int32_t)v;
        start[u] = (int32_t)pos;
        pos += cnt[v];
        cnt[v] = start[u];   /* now the token's write cursor */
        u++;
    }
    start[U] = (int32_t)N;
    for (int64_t n = 0; n < N; n++)
        rows[cnt[tokens[(n / T) * stride + n % T]]++] = (int32_t)n;
    out[0] = (int32_t)U;
    return U;
}

/* ---- AdamW segments ---------------------------------------------------- */

int cuda_adamw_segments(const model_layout *L, size_t lo, size_t hi, cuda_adamw_seg *seg, int cap)
{
    int n = 0;
    for (int i = 0; i < L->n_params; i++) {
        const model_param *t = &L->params[i];
        size_t a = t->offset > lo ? t->offset : lo;
        size_t b = t->offset + t->numel < hi ? t->offset + t->numel : hi;
        if (a >= b)
            continue;
        int decay = t->ndim == 2;
        if (n > 0 && seg[n - 1].decay == decay && (size_t)(seg[n - 1].off + seg[n - 1].n) == a - lo) {
            seg[n - 1].n += (int64_t)(b - a);
            continue;
        }
        if (n == cap)
            return -1;
        seg[n].off = (int64_t)(a - lo);
        seg[n].n = (int64_t)(b - a);
        seg[n].decay = decay;
        n++;
    }
    return n;
}

int cuda_adamw_seg_cap(const model_shape *s) { return 3 + (int)s->n_layers * MODEL_PER_LAYER + 1; }

/* ---- memory plan ------------------------------------------------------- */

/* The per-GPU view of the one memory model (model/memplan.c), which sizes
 * the activations with cuda_arena_plan above: no recompute, the current
 * collective chunk and [comm] overlap. The backend allocates by it. */
int cuda_memory_plan(const model_shape *s, int64_t micro_batch, int world, cuda_prec p, int zero, cuda_memplan *m)
{
    memplan_cfg c = {.shape = *s, .backend = MEMPLAN_CUDA, .precision = (memplan_prec)p,
                     .world = world > 0 ? world : 1, .ranks_per_node = 1, .micro_batch = micro_batch,
                     .recompute = MEMPLAN_RECOMPUTE_NONE, .zero = zero > 0 ? zero : MEMPLAN_ZERO1,
                     .comm_chunk = comm_get_chunk(), .reduce = comm_get_reduce(),
                     .overlap = comm_get_overlap()};
    memplan_bytes b;
    memset(m, 0, sizeof *m);
    int rc = memplan_compute(&c, &b);
    if (rc != ST_OK)
        return rc;
    m->master = (double)b.master;
    m->working = (double)b.working;
    m->grads = (double)b.grads;
    m->adam = (double)b.adam;
    m->activations = (double)(b.activations + b.attn_scratch);
    m->workspace = (double)b.workspace;
    m->context = (double)b.context;
    m->comm = (double)b.comm;
    m->total = (double)b.total;
    m->range = b.range;
    m->bucket = c.zero > MEMPLAN_ZERO1 ? backend_cpu_bucket_floats(s) : 0;
    m->bucket2 = c.zero > MEMPLAN_ZERO1 && c.overlap && c.world > 1 ? (size_t)model_layer_floats(s) : 0;
    return ST_OK;
}
