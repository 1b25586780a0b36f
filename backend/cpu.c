/* The CPU compute backend: forward and backward of the Llama / DeepSeek-LLM
 * decoder over the flat parameter vector: OpenBLAS for the matrix products,
 * OpenMP loops with fixed chunking and reduction orders for the rest, so
 * results are bitwise reproducible whatever the thread count. ZeRO 2 and 3:
 * gradients (and parameters) held as the rank's range, moved bucket by
 * bucket of whole layers through comm's span collectives. */
#include "backend.h"
#include "backend/cpu_attn.h"
#include "backend/gemm.h"
#include "comm/comm.h"
#include "model/elem.h"
#include "model/memplan.h"
#include "util/util.h"

#include <cblas.h>
#if defined(__x86_64__) || defined(__i386__)
#include <pmmintrin.h>
#include <xmmintrin.h>
#endif
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { CPU_P_GEMM, CPU_P_HEAD, CPU_P_XENT, CPU_P_ATTN, CPU_P_NORM, CPU_P_SWIGLU, CPU_P_ROPE, CPU_P_EMBED,
       CPU_P_OPTIM, CPU_P_COMM, CPU_PARTS };
static const char *const cpu_part_names[CPU_PARTS] = {
    "gemm (layers)", "classifier gemm", "cross-entropy", "attention", "rmsnorm", "swiglu", "rope", "embedding",
    "optimizer", "comm"};

/* Activations one layer keeps for its backward pass. With recompute =
 * layers only one set exists: each layer's backward (but the last layer's,
 * which finds the forward's set still there) first reruns that layer's
 * forward into it from the layer's kept input. */
typedef struct {
    float *xn1, *rs1;   /* input_layernorm output and its 1/rms per row */
    float *qkv;         /* [N, qd+2kvd]: q | k | v, rope applied to q and k */
    float *lse;         /* [B, H, T] attention log-sum-exp per query row */
    float *ao;          /* [N, qd] attention output before o_proj */
    float *mid;         /* [N, D] residual after attention */
    float *xn2, *rs2;   /* post_attention_layernorm output, 1/rms */
    float *gu;          /* [N, 2F]: gate | up */
    float *h;           /* [N, F] silu(gate) * up */
} cpu_layer;

/* The per-part profile (backend_cpu_profile): seconds and floating-point
 * operations of each part of the step, on the calling thread's clock. */
typedef struct {
    double sec[CPU_PARTS], flops[CPU_PARTS];
} cpu_prof;

typedef struct {
    model_shape s;
    int nt;
    cpu_prof *prof;         /* NULL unless profiling */
    int gemm;               /* gemm_lib of every matrix product */
    float *params, *grads;  /* full flat vectors; [lo,hi) only: grads from ZeRO 2, params at 3 */
    float *m, *v;           /* Adam moments of [lo,hi) */
    int zero;               /* ZeRO stage 1, 2 or 3 */
    /* Where cpu_w reads and cpu_g writes: the full vectors, or a bucket of
     * whole layers starting at flat offset woff / goff. */
    const float *wbase;
    float *gbase;
    size_t woff, goff;
    /* ZeRO 2+: gradient buckets; 3: gathered parameter buckets. Two of
     * each with [comm] overlap over 2+ ranks: the next bucket fills one
     * while the comm worker moves the other. The second holds a layer
     * only: the embedding and lm_head (with a large vocabulary several
     * layers each) take the first, whose exchange they wait for. */
    float *gbuf[2], *wbuf[2];
    int ng, nw;             /* buckets of each kind: 1 or 2 */
    int gcur;               /* the gradient bucket the kernels write */
    long gticket[2];        /* its queued reduce-scatter (comm_async_*) */
    struct cpu_gadd {       /* what the worker adds into the range after it */
        float *dst;
        const float *src;
        size_t n;
        int add;
    } gadd[2];
    int wcur;               /* the parameter bucket cpu_w reads */
    int64_t wk[2];          /* the bucket a queued, unclaimed gather fills; CPU_NO_BUCKET none */
    long wticket[2];
    size_t cap[2];          /* floats of each: [0] the largest span, [1] the largest layer's */
    int reduced;            /* ZeRO 2+: a micro-batch was reduced into grads since zero_grads */
    double loss_acc;        /* summed loss since the last take_loss */
    int64_t cap_b;          /* rows of seq_len tokens the buffers hold */
    int recompute;          /* 1: one cpu_layer set, refilled by each layer's backward */
    size_t act_floats;      /* what cpu_reserve holds, in floats (a double counts 2) */
    int64_t qd, kvd, qkvd;  /* widths of q, of k (= of v), and of the fused qkv */
    float *rope_cos, *rope_sin;  /* [seq_len, head_dim/2] */
    float **res;            /* n_layers+1 residual streams [N, D] */
    cpu_layer *ly;
    float *rsf, *xnf;       /* final norm */
    float *logits;          /* [N, V]; turned into dlogits in place */
    double *rowloss;        /* [N] */
    /* backward scratch */
    float *dres, *dxn, *dqkv, *dao, *dgu, *dh;
    float *scratch;         /* per thread: attention's tiles (cpu_attn_scratch_floats) */
} cpu_impl;

/* C[M,N] = op(A) op(B) + beta C, row-major; ta: A is stored [K,M]. Fixed
 * row chunks of single-threaded calls of the library picked (gemm.c): the
 * bits depend on the library and its kernel, never on the thread count.
 * backend_cpu_gemm_shapes lists these calls for cpu_gemm = auto's timing. */
static void cpu_prof_add(const cpu_impl *c, int part, double t0, double flops)
{
    if (c->prof) {
        c->prof->sec[part] += util_now() - t0;
        c->prof->flops[part] += flops;
    }
}
/* Runs call, booked to part when profiling. */
#define CPU_PROF(c, part, flops, call)                                                                         \
    do {                                                                                                       \
        double t0_ = (c)->prof ? util_now() : 0.0;                                                            \
        call;                                                                                                  \
        cpu_prof_add((c), (part), t0_, (flops));                                                               \
    } while (0)

static void cpu_gemm_as(const cpu_impl *c, int part, int ta, int tb, int64_t M, int64_t N, int64_t K,
                        const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    CPU_PROF(c, part, 2.0 * (double)M * (double)N * (double)K,
             gemm_run(c->gemm, c->nt, ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc));
}
static void cpu_gemm(const cpu_impl *c, int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A,
                     int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    cpu_gemm_as(c, CPU_P_GEMM, ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

int backend_cpu_gemm_shapes(const model_shape *s, int64_t B, gemm_shape *out, int cap)
{
    int64_t N = B * s->seq_len, D = s->dim, F = s->ffn_dim, V = s->vocab, Ly = s->n_layers;
    int64_t qd = s->n_heads * s->head_dim, qkvd = qd + 2 * s->n_kv_heads * s->head_dim;
    const gemm_shape all[] = {
        /* cpu_layer_fwd */
        {0, 1, N, qkvd, D, 0.0f, Ly}, {0, 1, N, D, qd, 1.0f, Ly}, {0, 1, N, 2 * F, D, 0.0f, Ly},
        {0, 1, N, D, F, 1.0f, Ly},
        /* cpu_head, and its backward in cpu_trunk_bwd */
        {0, 1, N, V, D, 0.0f, 1}, {1, 0, V, D, N, 1.0f, 1}, {0, 0, N, D, V, 0.0f, 1},
        /* cpu_trunk_bwd, per layer */
        {0, 0, N, F, D, 0.0f, Ly}, {1, 0, D, F, N, 1.0f, Ly}, {1, 0, 2 * F, D, N, 1.0f, Ly},
        {0, 0, N, D, 2 * F, 0.0f, Ly}, {0, 0, N, qd, D, 0.0f, Ly}, {1, 0, D, qd, N, 1.0f, Ly},
        {1, 0, qkvd, D, N, 1.0f, Ly}, {0, 0, N, D, qkvd, 0.0f, Ly},
    };
    int n = (int)(sizeof all / sizeof all[0]);
    for (int i = 0; i < n && i < cap; i++)
        out[i] = all[i];
    return n;
}

/* cpu_layer sets held: every layer's, or the one that recompute refills. */
static int64_t cpu_layer_sets(const cpu_impl *c) { return c->recompute ? 1 : c->s.n_layers; }

/* The layer's set of saved activations. */
static cpu_layer *cpu_ly(const cpu_impl *c, int64_t l) { return &c->ly[c->recompute ? 0 : l]; }

static void cpu_free_acts(cpu_impl *c)
{
    if (c->res)
        for (int64_t l = 0; l <= c->s.n_layers; l++)
            free(c->res[l]);
    free(c->res);
    c->res = NULL;
    if (c->ly) {
        for (int64_t l = 0; l < cpu_layer_sets(c); l++) {
            cpu_layer *y = &c->ly[l];
            free(y->xn1); free(y->rs1); free(y->qkv); free(y->lse); free(y->ao);
            free(y->mid); free(y->xn2); free(y->rs2); free(y->gu); free(y->h);
        }
    }
    free(c->ly);
    c->ly = NULL;
    free(c->rsf); free(c->xnf); free(c->logits); free(c->rowloss);
    free(c->dres); free(c->dxn); free(c->dqkv); free(c->dao); free(c->dgu); free(c->dh);
    free(c->scratch);
    c->rsf = c->xnf = c->logits = c->dres = c->dxn = c->dqkv = c->dao = c->dgu = c->dh = c->scratch = NULL;
    c->rowloss = NULL;
    c->cap_b = 0;
    c->act_floats = 0;
}

/* Counts what it hands out in c->act_floats: the figure the memory plan
 * (backend_cpu_activation_bytes) is tested against. */
static float *cpu_alloc(cpu_impl *c, size_t n, int *ok)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p)
        *ok = 0;
    c->act_floats += n;
    return p;
}

/* Grows the activation buffers to hold B rows; contents are not kept. */
static int cpu_reserve(cpu_impl *c, int64_t B)
{
    if (B <= c->cap_b)
        return ST_OK;
    cpu_free_acts(c);
    const model_shape *s = &c->s;
    size_t N = (size_t)(B * s->seq_len), D = (size_t)s->dim, F = (size_t)s->ffn_dim;
    size_t T = (size_t)s->seq_len, H = (size_t)s->n_heads, V = (size_t)s->vocab;
    int ok = 1;
    c->res = calloc((size_t)s->n_layers + 1, sizeof *c->res);
    c->ly = calloc((size_t)cpu_layer_sets(c), sizeof *c->ly);
    if (!c->res || !c->ly) {
        cpu_free_acts(c);
        return util_fail(ST_SOFTWARE, "cpu backend: out of memory for activations (micro-batch %lld)",
                         (long long)B);
    }
    for (int64_t l = 0; l <= s->n_layers; l++)
        c->res[l] = cpu_alloc(c, N * D, &ok);
    for (int64_t l = 0; l < cpu_layer_sets(c) && ok; l++) {
        cpu_layer *y = &c->ly[l];
        y->xn1 = cpu_alloc(c, N * D, &ok);
        y->rs1 = cpu_alloc(c, N, &ok);
        y->qkv = cpu_alloc(c, N * (size_t)c->qkvd, &ok);
        y->lse = cpu_alloc(c, (size_t)B * H * T, &ok);
        y->ao = cpu_alloc(c, N * (size_t)c->qd, &ok);
        y->mid = cpu_alloc(c, N * D, &ok);
        y->xn2 = cpu_alloc(c, N * D, &ok);
        y->rs2 = cpu_alloc(c, N, &ok);
        y->gu = cpu_alloc(c, N * 2 * F, &ok);
        y->h = cpu_alloc(c, N * F, &ok);
    }
    c->rsf = cpu_alloc(c, N, &ok);
    c->xnf = cpu_alloc(c, N * D, &ok);
    c->logits = cpu_alloc(c, N * V, &ok);
    c->rowloss = malloc(N * sizeof(double));
    c->act_floats += 2 * N;
    if (!c->rowloss)
        ok = 0;
    c->dres = cpu_alloc(c, N * D, &ok);
    c->dxn = cpu_alloc(c, N * D, &ok);
    c->dqkv = cpu_alloc(c, N * (size_t)c->qkvd, &ok);
    c->dao = cpu_alloc(c, N * (size_t)c->qd, &ok);
    c->dgu = cpu_alloc(c, N * 2 * F, &ok);
    c->dh = cpu_alloc(c, N * F, &ok);
    c->scratch = cpu_alloc(c, (size_t)c->nt * cpu_attn_scratch_floats(s->head_dim, s->n_heads / s->n_kv_heads), &ok);
    if (!ok) {
        cpu_free_acts(c);
        return util_fail(ST_SOFTWARE, "cpu backend: out of memory for activations (micro-batch %lld); "
                         "lower train.micro_batch", (long long)B);
    }
    c->cap_b = B;
    return ST_OK;
}

/* The memory model owns the sizing (model/memplan.c mirrors cpu_reserve
 * term by term; test_model.c holds the two equal). */
size_t backend_cpu_activation_bytes(const model_shape *s, int64_t micro_batch, int recompute, int threads)
{
    return (size_t)memplan_cpu_activation_bytes(s, micro_batch, recompute, threads);
}

int backend_cpu_set_recompute(backend *be, int recompute)
{
    cpu_impl *c = be->impl;
    if (c->cap_b > 0)
        return util_fail(ST_SOFTWARE, "cpu backend: recompute set after the activations were allocated");
    c->recompute = recompute != 0;
    return ST_OK;
}

size_t backend_cpu_activation_held(const backend *be)
{
    return sizeof(float) * ((const cpu_impl *)be->impl)->act_floats;
}

/* ---- elementwise pieces ------------------------------------------------ */

/* y += a * x; restrict lets the compiler vectorise it. */
static inline void cpu_axpy(float *restrict y, float a, const float *restrict x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = fmaf(a, x[i], y[i]);
}

static double cpu_dot64(const float *a, const float *b, int64_t n)
{
    double acc[4] = {0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++)
            acc[k] += (double)a[i + k] * (double)b[i + k];
    for (; i < n; i++)
        acc[0] += (double)a[i] * (double)b[i];
    return (acc[0] + acc[2]) + (acc[1] + acc[3]);
}

static void cpu_rmsnorm_fwd(const cpu_impl *c, float *out, float *rs, const float *x, const float *w,
                            int64_t N)
{
    int64_t D = c->s.dim;
    double eps = c->s.norm_eps;
#pragma omp parallel for schedule(static) num_threads(c->nt)
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * D;
        float *o = out + n * D;
        double ss = cpu_dot64(xr, xr, D);
        float r = elem_rms_scale(ss, D, eps);
        rs[n] = r;
        for (int64_t j = 0; j < D; j++)
            o[j] = (xr[j] * r) * w[j];
    }
}

/* dx += d(rmsnorm)/dx . dy ; dw += sum over rows of dy * x * r. */
static void cpu_rmsnorm_bwd(const cpu_impl *c, float *dx, float *dw, const float *dy, const float *x,
                            const float *rs, const float *w, int64_t N)
{
    int64_t D = c->s.dim;
#pragma omp parallel for schedule(static) num_threads(c->nt)
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * D, *g = dy + n * D;
        float *d = dx + n * D;
        double dot = 0.0;
        {
            double acc[4] = {0};
            int64_t j = 0;
            for (; j + 4 <= D; j += 4)
                for (int k = 0; k < 4; k++)
                    acc[k] += (double)(g[j + k] * w[j + k]) * (double)xr[j + k];
            for (; j < D; j++)
                acc[0] += (double)(g[j] * w[j]) * (double)xr[j];
            dot = (acc[0] + acc[2]) + (acc[1] + acc[3]);
        }
        float r = rs[n];
        float k = (float)((double)r * r * r * dot / (double)D);
        for (int64_t j = 0; j < D; j++)
            d[j] += r * (g[j] * w[j]) - xr[j] * k;
    }
    /* Columns are split between threads, rows summed in order: the same
     * result for any thread count. */
    enum { CB = 64 };
    int64_t nb = (D + CB - 1) / CB;
#pragma omp parallel for schedule(static) num_threads(c->nt)
    for (int64_t bj = 0; bj < nb; bj++) {
        double acc[CB] = {0};
        int64_t j0 = bj * CB, j1 = j0 + CB < D ? j0 + CB : D;
        for (int64_t n = 0; n < N; n++) {
            const float *xr = x + n * D, *g = dy + n * D;
            double r = rs[n];
            for (int64_t j = j0; j < j1; j++)
                acc[j - j0] += (double)(g[j] * xr[j]) * r;
        }
        for (int64_t j = j0; j < j1; j++)
            dw[j] += (float)acc[j - j0];
    }
}

/* Hugging Face rotate-half RoPE on `nh` heads of each row, in place;
 * dir = -1 applies the transpose (backward). */
static void cpu_rope(const cpu_impl *c, float *base, int64_t ld, int64_t nh, int64_t B, int64_t T, int dir)
{
    int64_t hd = c->s.head_dim, half = hd / 2;
#pragma omp parallel for schedule(static) num_threads(c->nt)
    for (int64_t n = 0; n < B * T; n++) {
        int64_t t = n % T;
        const float *cs = c->rope_cos + t * half, *sn = c->rope_sin + t * half;
        for (int64_t h = 0; h < nh; h++) {
            float *x = base + n * ld + h * hd;
            for (int64_t i = 0; i < half; i++)
                elem_rope(&x[i], &x[i + half], cs[i], dir > 0 ? sn[i] : -sn[i]);
        }
    }
}

static void cpu_swiglu_fwd(const cpu_impl *c, float *h, const float *gu, int64_t N)
{
    int64_t F = c->s.ffn_dim;
#pragma omp parallel for schedule(static) num_threads(c->nt)
    for (int64_t n = 0; n < N; n++) {
        const float *restrict g = gu + n * 2 * F, *restrict u = g + F;
        float *restrict o = h + n * F;
        /* Vectorised (the compiler's alias check gave up on these loops):
         * the same IEEE operations lane by lane, so the same bits. */
#pragma omp simd
        for (int64_t j = 0; j < F; j++)
            o[j] = elem_swiglu(g[j], u[j]);
    }
}

static void cpu_swiglu_bwd(const cpu_impl *c, float *dgu, const float *dh, const float *gu, int64_t N)
{
    int64_t F = c->s.ffn_dim;
#pragma omp parallel for schedule(static) num_threads(c->nt)
    for (int64_t n = 0; n < N; n++) {
        const float *restrict g = gu + n * 2 * F, *restrict u = g + F, *restrict d = dh + n * F;
        float *restrict dg = dgu + n * 2 * F, *restrict du = dg + F;
#pragma omp simd
        for (int64_t j = 0; j < F; j++)
            elem_swiglu_bwd(g[j], u[j], d[j], &dg[j], &du[j]);
    }
}

/* ---- attention --------------------------------------------------------- */

/* Tiled, in cpu_attn.c: memory linear in T. */
static cpu_attn_shape cpu_attn_of(const cpu_impl *c, int64_t B, int64_t T)
{
    return (cpu_attn_shape){.B = B, .T = T, .H = c->s.n_heads, .KV = c->s.n_kv_heads, .hd = c->s.head_dim,
                            .ld = c->qkvd, .threads = c->nt};
}

/* ---- forward / backward ------------------------------------------------ */

static const float *cpu_w(const backend *b, const model_param *p)
{
    const cpu_impl *c = b->impl;
    return c->wbase + (p->offset - c->woff);
}
static float *cpu_g(const backend *b, const model_param *p)
{
    cpu_impl *c = b->impl;
    return c->gbase + (p->offset - c->goff);
}

/* ---- ZeRO buckets ------------------------------------------------------ */

/* The buckets (model_bucket_span): -1 the embedding, 0..n_layers-1 a
 * decoder layer, n_layers the final norm with lm_head. */
static void cpu_span(const backend *be, int64_t k, size_t *a, size_t *b)
{
    model_bucket_span(be->L, k, a, b);
}

static size_t cpu_span_floats(const backend *be, int64_t k)
{
    size_t a, b;
    model_bucket_span(be->L, k, &a, &b);
    return b - a;
}

/* This rank's range cut to [a, b); empty when they do not meet. */
static void cpu_cut(const backend *be, size_t a, size_t b, size_t *x, size_t *y)
{
    *x = be->lo > a ? be->lo : a;
    *y = be->hi < b ? be->hi : b;
    *y = *y > *x ? *y : *x;
}

#define CPU_NO_BUCKET INT64_MIN

/* ZeRO 3: queues bucket k's gather into parameter bucket i (this rank's
 * range copied in first). */
static void cpu_queue_gather(backend *be, int64_t k, int i)
{
    cpu_impl *c = be->impl;
    size_t a, b, x, y;
    cpu_span(be, k, &a, &b);
    cpu_cut(be, a, b, &x, &y);
    if (y > x)
        memcpy(c->wbuf[i] + (x - a), c->params + (x - be->lo), (y - x) * sizeof(float));
    c->wk[i] = k;
    comm_test_freeze("layer");
    c->wticket[i] = comm_async_allgather_span(c->wbuf[i], be->L->n_floats, a, b);
}

/* ZeRO 3 with two parameter buckets: queues bucket k's gather into the one
 * cpu_w does not read, to run while the current bucket computes. Every
 * rank prefetches the same buckets in the same order. */
static int cpu_prefetch(backend *be, int64_t k)
{
    cpu_impl *c = be->impl;
    if (c->zero < 3 || c->nw < 2)
        return ST_OK;
    int j = 1 - c->wcur;
    /* Too big for the other bucket, it waits to be gathered into the one
     * cpu_w still reads (the same on every rank: it depends on the shape). */
    if (cpu_span_floats(be, k) > c->cap[j])
        return ST_OK;
    int rc = comm_async_wait(c->wticket[j]);
    if (rc == ST_OK)
        cpu_queue_gather(be, k, j);
    return rc;
}

/* ZeRO 3: bucket k's parameters gathered from every rank, where cpu_w then
 * reads them (until the next gather): the prefetched bucket when it is k,
 * else gathered now (a prefetch of another bucket is waited for first, so
 * the collectives stay in the same order on every rank). */
static int cpu_gather_bucket(backend *be, int64_t k)
{
    cpu_impl *c = be->impl;
    if (c->zero < 3)
        return ST_OK;
    int i = -1, rc = ST_OK;
    for (int j = 0; j < c->nw; j++)
        if (c->wk[j] == k)
            i = j;
    if (i < 0) {
        i = c->nw > 1 ? 1 - c->wcur : 0;
        i = cpu_span_floats(be, k) > c->cap[i] ? 0 : i;
        for (int j = 0; j < c->nw && rc == ST_OK; j++)
            rc = comm_async_wait(c->wticket[j]);
        if (rc != ST_OK)
            return rc;
        cpu_queue_gather(be, k, i);
    }
    rc = comm_async_wait(c->wticket[i]);
    c->wk[i] = CPU_NO_BUCKET;   /* claimed: a later gather of k moves it again */
    size_t a, b;
    cpu_span(be, k, &a, &b);
    c->wcur = i;
    c->wbase = c->wbuf[i];
    c->woff = a;
    return rc;
}

/* ZeRO 2+: bucket k's gradients go into a zeroed gradient bucket (as
 * stage 1's zeroed full vector), so every kernel adds the same floats:
 * the other one of two, once its reduce-scatter is done. */
static int cpu_open_bucket(backend *be, int64_t k)
{
    cpu_impl *c = be->impl;
    if (c->zero < 2)
        return ST_OK;
    size_t a, b;
    cpu_span(be, k, &a, &b);
    int i = c->ng > 1 ? 1 - c->gcur : 0;
    i = b - a > c->cap[i] ? 0 : i;   /* the big one, once its exchange is done */
    int rc = comm_async_wait(c->gticket[i]);
    if (rc != ST_OK)
        return rc;
    memset(c->gbuf[i], 0, (b - a) * sizeof(float));
    c->gcur = i;
    c->gbase = c->gbuf[i];
    c->goff = a;
    return ST_OK;
}

/* On the comm worker after a bucket's reduce-scatter: this rank's part
 * into its range of grads, copied by the step's first micro-batch
 * (exactly stage 1's value when there is one micro-batch), added by later
 * ones. Buckets are disjoint ranges, so the order among them is free. */
static void cpu_bucket_into_range(void *arg)
{
    const struct cpu_gadd *g = arg;
    if (!g->add)
        memcpy(g->dst, g->src, g->n * sizeof(float));
    else
        for (size_t i = 0; i < g->n; i++)
            g->dst[i] += g->src[i];
}

/* ZeRO 2+: queues bucket k's reduce-scatter (and the add into the range);
 * the backward goes on into the other bucket. */
static int cpu_close_bucket(backend *be, int64_t k)
{
    cpu_impl *c = be->impl;
    if (c->zero < 2)
        return ST_OK;
    size_t a, b, x, y;
    cpu_span(be, k, &a, &b);
    cpu_cut(be, a, b, &x, &y);
    int i = c->gcur;
    c->gadd[i] = (struct cpu_gadd){c->grads + (x - be->lo), c->gbuf[i] + (x - a), y - x, c->reduced};
    comm_test_freeze("bucket");
    c->gticket[i] = comm_async_reduce_scatter_span(c->gbuf[i], be->L->n_floats, a, b, cpu_bucket_into_range,
                                                   &c->gadd[i]);
    return ST_OK;
}

/* Every queued exchange done: the end of a backward (or its failure, so
 * no worker still writes into a bucket). */
static int cpu_buckets_done(backend *be, int rc)
{
    cpu_impl *c = be->impl;
    int qrc = c->zero >= 2 ? comm_async_drain() : ST_OK;
    for (int j = 0; j < 2; j++)
        c->wk[j] = CPU_NO_BUCKET;
    return rc != ST_OK ? rc : qrc;
}

size_t backend_cpu_bucket_floats(const model_shape *s)
{
    size_t layer = (size_t)model_layer_floats(s), tail = (size_t)s->dim + (size_t)s->vocab * (size_t)s->dim;
    return layer > tail ? layer : tail;
}

/* The largest of buckets k0..k1, in floats. */
static size_t cpu_bucket_floats(const backend *be, int64_t k0, int64_t k1)
{
    size_t most = 0;
    for (int64_t k = k0; k <= k1; k++)
        most = cpu_span_floats(be, k) > most ? cpu_span_floats(be, k) : most;
    return most;
}

/* Attention's products for the profile: QK^T and PV over the full T x T
 * (what the kernels compute); the backward runs twice the forward's. */
/* The causal half only: the tiled attention skips tiles above the diagonal
 * (two T x T x hd products forward, twice that backward). */
static double cpu_attn_flops(const cpu_impl *c, int64_t B, int64_t T, int times)
{
    return 2.0 * times * (double)B * (double)c->s.n_heads * (double)T * (double)(T + 1) * (double)c->s.head_dim;
}

/* Layer l's forward from its input c->res[l] into y. out: where the
 * layer's output goes (c->res[l + 1]); NULL when a backward reruns the
 * layer only for y, which needs no down projection. Every kernel has a
 * fixed reduction order, so a rerun refills y with the same bits. */
static void cpu_layer_fwd(backend *be, int64_t l, cpu_layer *y, int64_t B, int64_t T, float *out)
{
    cpu_impl *c = be->impl;
    const model_layout *L = be->L;
    int64_t D = c->s.dim, F = c->s.ffn_dim, N = B * T;
    const float *x = c->res[l];
    CPU_PROF(c, CPU_P_NORM, 0.0,
             cpu_rmsnorm_fwd(c, y->xn1, y->rs1, x, cpu_w(be, model_layer(L, l, MODEL_LN1)), N));
    /* q, k and v weights are adjacent in the flat vector: one GEMM. */
    cpu_gemm(c, 0, 1, N, c->qkvd, D, y->xn1, D, cpu_w(be, model_layer(L, l, MODEL_Q)), D, 0.0f, y->qkv, c->qkvd);
    CPU_PROF(c, CPU_P_ROPE, 0.0, cpu_rope(c, y->qkv, c->qkvd, c->s.n_heads + c->s.n_kv_heads, B, T, 1));
    cpu_attn_shape as = cpu_attn_of(c, B, T);
    CPU_PROF(c, CPU_P_ATTN, cpu_attn_flops(c, B, T, 1), cpu_attn_fwd(&as, y->qkv, y->ao, y->lse, c->scratch));
    memcpy(y->mid, x, (size_t)(N * D) * sizeof(float));
    cpu_gemm(c, 0, 1, N, D, c->qd, y->ao, c->qd, cpu_w(be, model_layer(L, l, MODEL_O)), c->qd, 1.0f, y->mid, D);
    CPU_PROF(c, CPU_P_NORM, 0.0,
             cpu_rmsnorm_fwd(c, y->xn2, y->rs2, y->mid, cpu_w(be, model_layer(L, l, MODEL_LN2)), N));
    /* gate and up are adjacent too. */
    cpu_gemm(c, 0, 1, N, 2 * F, D, y->xn2, D, cpu_w(be, model_layer(L, l, MODEL_GATE)), D, 0.0f, y->gu, 2 * F);
    CPU_PROF(c, CPU_P_SWIGLU, 0.0, cpu_swiglu_fwd(c, y->h, y->gu, N));
    if (!out)
        return;
    memcpy(out, y->mid, (size_t)(N * D) * sizeof(float));
    cpu_gemm(c, 0, 1, N, D, F, y->h, F, cpu_w(be, model_layer(L, l, MODEL_DOWN)), F, 1.0f, out, D);
}

/* Runs the decoder stack on B rows of T tokens (row b starts at
 * tokens + b*stride) and leaves the final normed states in c->xnf. */
static int cpu_trunk_fwd(backend *be, const int32_t *tokens, int64_t B, int64_t T, int64_t stride)
{
    cpu_impl *c = be->impl;
    int64_t D = c->s.dim, N = B * T;
    int rc = cpu_gather_bucket(be, -1);
    if (rc == ST_OK)
        rc = cpu_prefetch(be, 0);
    if (rc != ST_OK)
        return cpu_buckets_done(be, rc);
    const float *emb = cpu_w(be, model_embed(be->L));
    double t0 = c->prof ? util_now() : 0.0;
#pragma omp parallel for schedule(static) num_threads(c->nt)
    for (int64_t n = 0; n < N; n++)
        memcpy(c->res[0] + n * D, emb + (int64_t)tokens[(n / T) * stride + n % T] * D, (size_t)D * sizeof(float));
    cpu_prof_add(c, CPU_P_EMBED, t0, 0.0);
    for (int64_t l = 0; l < c->s.n_layers && rc == ST_OK; l++)
        if ((rc = cpu_gather_bucket(be, l)) == ST_OK && (rc = cpu_prefetch(be, l + 1)) == ST_OK)
            cpu_layer_fwd(be, l, cpu_ly(c, l), B, T, c->res[l + 1]);
    /* The final norm and lm_head stay gathered through the head and its
     * backward. */
    if (rc == ST_OK && (rc = cpu_gather_bucket(be, c->s.n_layers)) == ST_OK)
        CPU_PROF(c, CPU_P_NORM, 0.0,
                 cpu_rmsnorm_fwd(c, c->xnf, c->rsf, c->res[c->s.n_layers], cpu_w(be, model_final_norm(be->L)), N));
    return rc != ST_OK ? cpu_buckets_done(be, rc) : rc;
}

/* Logits, per-row cross-entropy into c->rowloss, and with grad_scale != 0
 * the scaled dlogits in place of the logits. */
static double cpu_head(backend *be, const int32_t *tokens, int64_t B, int grad, float grad_scale)
{
    cpu_impl *c = be->impl;
    int64_t D = c->s.dim, V = c->s.vocab, T = c->s.seq_len, N = B * T;
    cpu_gemm_as(c, CPU_P_HEAD, 0, 1, N, V, D, c->xnf, D, cpu_w(be, model_lm_head(be->L)), D, 0.0f, c->logits, V);
    double t0 = c->prof ? util_now() : 0.0;
#pragma omp parallel for schedule(static) num_threads(c->nt)
    for (int64_t n = 0; n < N; n++) {
        float *z = c->logits + n * V;
        int64_t tgt = tokens[(n / T) * (T + 1) + n % T + 1];
        float mx = z[0];
        /* A maximum is exact in any order: vectorised, the same bits. */
#pragma omp simd reduction(max : mx)
        for (int64_t j = 1; j < V; j++)
            mx = z[j] > mx ? z[j] : mx;
        float zt = z[tgt];
        for (int64_t j = 0; j < V; j++)
            z[j] = elem_exp(z[j] - mx);
        double sum = 0.0;
        {
            double acc[4] = {0};
            int64_t j = 0;
            for (; j + 4 <= V; j += 4)
                for (int k = 0; k < 4; k++)
                    acc[k] += (double)z[j + k];
            for (; j < V; j++)
                acc[0] += (double)z[j];
            sum = (acc[0] + acc[2]) + (acc[1] + acc[3]);
        }
        c->rowloss[n] = (double)mx + log(sum) - (double)zt;
        if (grad) {
            float k = (float)(1.0 / sum) * grad_scale;
            for (int64_t j = 0; j < V; j++)
                z[j] *= k;
            z[tgt] -= grad_scale;
        }
    }
    double total = 0.0;
    for (int64_t n = 0; n < N; n++)
        total += c->rowloss[n];
    cpu_prof_add(c, CPU_P_XENT, t0, 0.0);
    return total;
}

static int cpu_trunk_bwd(backend *be, const int32_t *tokens, int64_t B)
{
    cpu_impl *c = be->impl;
    const model_layout *L = be->L;
    int64_t D = c->s.dim, F = c->s.ffn_dim, V = c->s.vocab, T = c->s.seq_len, N = B * T;
    int64_t qd = c->qd, qkvd = c->qkvd;
    const model_param *lm = model_lm_head(L);
    /* The last layer's gather runs while the head's backward computes. */
    int rc = cpu_open_bucket(be, c->s.n_layers);
    if (rc == ST_OK && c->s.n_layers > 0)
        rc = cpu_prefetch(be, c->s.n_layers - 1);
    if (rc != ST_OK)
        return cpu_buckets_done(be, rc);
    cpu_gemm_as(c, CPU_P_HEAD, 1, 0, V, D, N, c->logits, V, c->xnf, D, 1.0f, cpu_g(be, lm), D);
    cpu_gemm_as(c, CPU_P_HEAD, 0, 0, N, D, V, c->logits, V, cpu_w(be, lm), D, 0.0f, c->dxn, D);
    memset(c->dres, 0, (size_t)(N * D) * sizeof(float));
    const model_param *fn = model_final_norm(L);
    CPU_PROF(c, CPU_P_NORM, 0.0,
             cpu_rmsnorm_bwd(c, c->dres, cpu_g(be, fn), c->dxn, c->res[c->s.n_layers], c->rsf, cpu_w(be, fn), N));
    rc = cpu_close_bucket(be, c->s.n_layers);
    for (int64_t l = c->s.n_layers - 1; l >= 0 && rc == ST_OK; l--) {
        cpu_layer *y = cpu_ly(c, l);
        if ((rc = cpu_gather_bucket(be, l)) != ST_OK || (l > 0 && (rc = cpu_prefetch(be, l - 1)) != ST_OK) ||
            (rc = cpu_open_bucket(be, l)) != ST_OK)
            break;
        /* The last layer's set is still the forward's own. */
        if (c->recompute && l < c->s.n_layers - 1)
            cpu_layer_fwd(be, l, y, B, T, NULL);
        const model_param *pd = model_layer(L, l, MODEL_DOWN), *pg = model_layer(L, l, MODEL_GATE);
        const model_param *po = model_layer(L, l, MODEL_O), *pq = model_layer(L, l, MODEL_Q);
        const model_param *n1 = model_layer(L, l, MODEL_LN1), *n2 = model_layer(L, l, MODEL_LN2);
        /* MLP */
        cpu_gemm(c, 0, 0, N, F, D, c->dres, D, cpu_w(be, pd), F, 0.0f, c->dh, F);
        cpu_gemm(c, 1, 0, D, F, N, c->dres, D, y->h, F, 1.0f, cpu_g(be, pd), F);
        CPU_PROF(c, CPU_P_SWIGLU, 0.0, cpu_swiglu_bwd(c, c->dgu, c->dh, y->gu, N));
        cpu_gemm(c, 1, 0, 2 * F, D, N, c->dgu, 2 * F, y->xn2, D, 1.0f, cpu_g(be, pg), D);
        cpu_gemm(c, 0, 0, N, D, 2 * F, c->dgu, 2 * F, cpu_w(be, pg), D, 0.0f, c->dxn, D);
        CPU_PROF(c, CPU_P_NORM, 0.0,
                 cpu_rmsnorm_bwd(c, c->dres, cpu_g(be, n2), c->dxn, y->mid, y->rs2, cpu_w(be, n2), N));
        /* attention */
        cpu_gemm(c, 0, 0, N, qd, D, c->dres, D, cpu_w(be, po), qd, 0.0f, c->dao, qd);
        cpu_gemm(c, 1, 0, D, qd, N, c->dres, D, y->ao, qd, 1.0f, cpu_g(be, po), qd);
        cpu_attn_shape as = cpu_attn_of(c, B, T);
        CPU_PROF(c, CPU_P_ATTN, cpu_attn_flops(c, B, T, 2),
                 cpu_attn_bwd(&as, y->qkv, y->ao, y->lse, c->dao, c->dqkv, c->scratch));
        CPU_PROF(c, CPU_P_ROPE, 0.0,
                 cpu_rope(c, c->dqkv, qkvd, c->s.n_heads + c->s.n_kv_heads, B, T, -1));
        cpu_gemm(c, 1, 0, qkvd, D, N, c->dqkv, qkvd, y->xn1, D, 1.0f, cpu_g(be, pq), D);
        cpu_gemm(c, 0, 0, N, D, qkvd, c->dqkv, qkvd, cpu_w(be, pq), D, 0.0f, c->dxn, D);
        CPU_PROF(c, CPU_P_NORM, 0.0,
                 cpu_rmsnorm_bwd(c, c->dres, cpu_g(be, n1), c->dxn, c->res[l], y->rs1, cpu_w(be, n1), N));
        rc = cpu_close_bucket(be, l);
    }
    if (rc == ST_OK)
        rc = cpu_open_bucket(be, -1);
    if (rc != ST_OK)
        return cpu_buckets_done(be, rc);
    /* Embedding rows in token order: repeated tokens add up deterministically. */
    float *ge = cpu_g(be, model_embed(L));
    int64_t nb = (D + 63) / 64;
    double t0 = c->prof ? util_now() : 0.0;
#pragma omp parallel for schedule(static) num_threads(c->nt)
    for (int64_t bj = 0; bj < nb; bj++) {
        int64_t j0 = bj * 64, j1 = j0 + 64 < D ? j0 + 64 : D;
        for (int64_t n = 0; n < N; n++) {
            float *g = ge + (int64_t)tokens[(n / T) * (T + 1) + n % T] * D;
            const float *d = c->dres + n * D;
            for (int64_t j = j0; j < j1; j++)
                g[j] += d[j];
        }
    }
    cpu_prof_add(c, CPU_P_EMBED, t0, 0.0);
    rc = cpu_close_bucket(be, -1);
    /* Stage 2+: the backward ends when every bucket's exchange has. */
    CPU_PROF(c, CPU_P_COMM, 0.0, rc = cpu_buckets_done(be, rc));
    return rc;
}

/* Checks the ids, sizes the buffers and runs the trunk: shared by training
 * and evaluation. */
static int cpu_forward(backend *be, const int32_t *tokens, int64_t B)
{
    cpu_impl *c = be->impl;
    int64_t T = c->s.seq_len;
    int rc = backend_check_tokens(be, tokens, B * (T + 1));
    if (rc == ST_OK)
        rc = cpu_reserve(c, B);
    return rc == ST_OK ? cpu_trunk_fwd(be, tokens, B, T, T + 1) : rc;
}

static int cpu_fwd_bwd(backend *be, const int32_t *tokens, int64_t B, float grad_scale)
{
    cpu_impl *c = be->impl;
    int rc = cpu_forward(be, tokens, B);
    if (rc != ST_OK)
        return rc;
    c->loss_acc += cpu_head(be, tokens, B, 1, grad_scale);
    rc = cpu_trunk_bwd(be, tokens, B);
    c->reduced = 1;
    return rc;
}

static int cpu_take_loss(backend *be, double *loss_sum)
{
    cpu_impl *c = be->impl;
    *loss_sum = c->loss_acc;
    c->loss_acc = 0.0;
    return ST_OK;
}

static int cpu_eval(backend *be, const int32_t *tokens, int64_t B, double *loss_sum)
{
    int rc = cpu_forward(be, tokens, B);
    if (rc != ST_OK)
        return rc;
    *loss_sum += cpu_head(be, tokens, B, 0, 0.0f);
    return ST_OK;
}

static int cpu_logits(backend *be, const int32_t *tokens, int64_t T, float *out)
{
    cpu_impl *c = be->impl;
    if (T < 1 || T > c->s.seq_len)
        return util_fail(ST_CONFIG, "sampling context of %lld tokens is outside 1..model.seq_len (%lld)",
                         (long long)T, (long long)c->s.seq_len);
    int rc = backend_check_tokens(be, tokens, T);
    if (rc == ST_OK)
        rc = cpu_reserve(c, 1);
    if (rc != ST_OK)
        return rc;
    if ((rc = cpu_trunk_fwd(be, tokens, 1, T, T)) != ST_OK)
        return rc;
    int64_t D = c->s.dim;
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)c->s.vocab, (int)D, 1.0f, cpu_w(be, model_lm_head(be->L)),
                (int)D, c->xnf + (T - 1) * D, 1, 0.0f, out, 1);
    return ST_OK;
}

/* Floats of grads / params this rank holds, and where [lo,hi) starts. */
static size_t cpu_grad_floats(const backend *be)
{
    return ((const cpu_impl *)be->impl)->zero >= 2 ? be->hi - be->lo : be->L->n_floats;
}
static size_t cpu_param_floats(const backend *be)
{
    return ((const cpu_impl *)be->impl)->zero >= 3 ? be->hi - be->lo : be->L->n_floats;
}
static float *cpu_grad_range(const backend *be)
{
    const cpu_impl *c = be->impl;
    return c->grads + (c->zero >= 2 ? 0 : be->lo);
}
static float *cpu_param_range(const backend *be)
{
    const cpu_impl *c = be->impl;
    return c->params + (c->zero >= 3 ? 0 : be->lo);
}

static int cpu_zero_grads(backend *be)
{
    cpu_impl *c = be->impl;
    memset(c->grads, 0, cpu_grad_floats(be) * sizeof(float));
    c->reduced = 0;
    return ST_OK;
}

static int cpu_reduce_grads(backend *be)
{
    cpu_impl *c = be->impl;
    int rc = ST_OK;
    if (c->zero < 2)
        CPU_PROF(c, CPU_P_COMM, 0.0, rc = comm_reduce_scatter(c->grads, be->L->n_floats));
    return rc;
}

/* optim.c's loops take the calling thread's OpenMP default: the
 * backend's thread count for their duration (all cores otherwise, and a
 * 1-thread run then waited on a second thread at every step). Neither
 * result depends on the count. */
static int cpu_grad_sumsq(backend *be, double *out)
{
    cpu_impl *c = be->impl;
    int was = omp_get_max_threads();
    omp_set_num_threads(c->nt);
    CPU_PROF(c, CPU_P_OPTIM, 0.0, *out = optim_sumsq(cpu_grad_range(be), be->hi - be->lo));
    omp_set_num_threads(was);
    return ST_OK;
}

static int cpu_adamw(backend *be, const optim_hparams *h, double lr, double clip_scale, int64_t step)
{
    cpu_impl *c = be->impl;
    int was = omp_get_max_threads();
    omp_set_num_threads(c->nt);
    CPU_PROF(c, CPU_P_OPTIM, 0.0,
             optim_adamw(h, be->L, be->lo, be->hi, cpu_param_range(be), cpu_grad_range(be), c->m, c->v, lr,
                         clip_scale, step));
    omp_set_num_threads(was);
    return ST_OK;
}

/* ZeRO 3 gathers layer by layer inside the forward and backward instead. */
static int cpu_gather_params(backend *be)
{
    cpu_impl *c = be->impl;
    int rc = ST_OK;
    if (c->zero < 3)
        CPU_PROF(c, CPU_P_COMM, 0.0, rc = comm_allgather(c->params, be->L->n_floats));
    return rc;
}

int backend_cpu_profile(backend *be, int on)
{
    cpu_impl *c = be->impl;
    free(c->prof);
    c->prof = on ? calloc(1, sizeof *c->prof) : NULL;
    return !on || c->prof ? ST_OK : util_fail(ST_SOFTWARE, "cpu backend: out of memory for the profile");
}

int backend_cpu_profile_read(const backend *be, backend_cpu_part *out, int cap)
{
    const cpu_impl *c = be->impl;
    for (int i = 0; i < CPU_PARTS && i < cap; i++) {
        out[i].name = cpu_part_names[i];
        out[i].seconds = c->prof ? c->prof->sec[i] : 0.0;
        out[i].flops = c->prof ? c->prof->flops[i] : 0.0;
    }
    return CPU_PARTS;
}

/* The host array behind a load/read of n floats at flat offset off, or NULL
 * when the range is outside what this rank holds (under ZeRO 2 grads, at 3
 * params too, hold [lo,hi) only). */
static float *cpu_array(backend *be, int array, size_t off, size_t n)
{
    cpu_impl *c = be->impl;
    size_t full = be->L->n_floats;
    int whole = (array == BK_PARAMS && c->zero < 3) || (array == BK_GRADS && c->zero < 2);
    if (whole)
        return off <= full && n <= full - off ? (array == BK_PARAMS ? c->params : c->grads) + off : NULL;
    if (array < BK_PARAMS || array > BK_GRADS || off < be->lo || off > be->hi || n > be->hi - off)
        return NULL;
    float *a[] = {c->params, c->m, c->v, c->grads};
    return a[array] + (off - be->lo);
}

float *backend_cpu_host(backend *be, int array)
{
    cpu_impl *c = be->impl;
    float *a[] = {c->params, c->m, c->v, c->grads};
    return array >= 0 && array < 4 ? a[array] : NULL;
}

static int cpu_load(backend *be, int array, size_t off, size_t n, const float *src)
{
    cpu_impl *c = be->impl;
    size_t full = be->L->n_floats, x, y;
    /* ZeRO 3 takes any range of the full vector too, and keeps its part. */
    if (array == BK_PARAMS && c->zero >= 3 && off <= full && n <= full - off) {
        cpu_cut(be, off, off + n, &x, &y);
        if (y > x)
            memcpy(c->params + (x - be->lo), src + (x - off), (y - x) * sizeof(float));
        return ST_OK;
    }
    float *dst = cpu_array(be, array, off, n);
    if (!dst)
        return util_fail(ST_SOFTWARE, "cpu backend: load of array %d [%zu, %zu) is outside this rank's state",
                         array, off, off + n);
    memcpy(dst, src, n * sizeof(float));
    return ST_OK;
}

static int cpu_read(backend *be, int array, size_t off, size_t n, float *dst)
{
    const float *src = cpu_array(be, array, off, n);
    if (!src)
        return util_fail(ST_SOFTWARE, "cpu backend: read of array %d [%zu, %zu) is outside this rank's state",
                         array, off, off + n);
    memcpy(dst, src, n * sizeof(float));
    return ST_OK;
}

/* The snapshot is a plain copy, complete on return: the fence is empty. */
static int cpu_snapshot(backend *be, float *dst)
{
    cpu_impl *c = be->impl;
    size_t n = be->hi - be->lo;
    memcpy(dst, cpu_param_range(be), n * sizeof(float));
    memcpy(dst + n, c->m, n * sizeof(float));
    memcpy(dst + 2 * n, c->v, n * sizeof(float));
    return ST_OK;
}

static int cpu_snapshot_wait(backend *be) { return ST_OK; }

static void cpu_destroy(backend *be)
{
    if (!be)
        return;
    cpu_impl *c = be->impl;
    if (c) {
        /* First: a queued reduce-scatter's add still writes into grads,
         * and every exchange into a bucket. */
        comm_async_drain();
        cpu_free_acts(c);
        free(c->rope_cos);
        free(c->rope_sin);
        free(c->params);
        free(c->grads);
        free(c->m);
        free(c->v);
        for (int j = 0; j < 2; j++) {
            free(c->gbuf[j]);
            free(c->wbuf[j]);
        }
        free(c->prof);
        free(c);
    }
    free(be);
}

/* The CPU's model name from /proc/cpuinfo ("model name" on x86, else
 * "cpu"): what a checkpoint records as its device. */
static void cpu_model_name(char *out, size_t cap)
{
    char line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    snprintf(out, cap, "cpu");
    while (f && fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon || strncmp(line, "model name", 10))
            continue;
        char *v = colon + 1 + strspn(colon + 1, " \t");
        v[strcspn(v, "\n")] = 0;
        if (v[0])
            snprintf(out, cap, "%s", v);
        break;
    }
    if (f)
        fclose(f);
}

/* Subnormal floats cost an x86 core ~100 cycles per operation, and a model
 * in training makes them: attention probabilities of tokens it has learned
 * to ignore, and their products. Steps of a 3.1M model ran at 0.35 s fresh
 * and 0.68 s by step 600; with FTZ/DAZ they stay near 0.4 s, and there the
 * weights came out bitwise the same (the subnormals were absorbed by larger
 * terms). The mode is per thread: set it in every thread of the OpenMP
 * team the compute loops run on, the calling thread included (threads
 * created later inherit it from there). */
static void cpu_flush_denormals(int nt)
{
#if defined(__x86_64__) || defined(__i386__)
#pragma omp parallel num_threads(nt)
    {
        _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
        _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
    }
#else
    (void)nt;
#endif
}

int backend_cpu_blas_advice(const char *core, int avx2, int avx512, int forced, char *out, size_t cap)
{
    /* OpenBLAS's x86-64 kernel sets without AVX2 and FMA. */
    static const char *const old[] = {"prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "opteron",
                                      "opteron(sse3)", "barcelona", "bobcat", "sandybridge", "bulldozer",
                                      "piledriver", "katmai", "coppermine", "northwood", "banias", NULL};
    int slow = 0;
    snprintf(out, cap, "%s", "");
    for (int i = 0; core && old[i] && !slow; i++)
        slow = !strcasecmp(core, old[i]);
    if (!slow || !avx2 || forced)
        return 0;
    snprintf(out, cap,
             "OpenBLAS chose its %s kernels, but this CPU has %s; matrix products may run several times slower "
             "(3.6x measured on one such machine); set OPENBLAS_CORETYPE=%s in the environment",
             core, avx512 ? "AVX2 and AVX-512" : "AVX2", avx512 ? "SkylakeX (or Haswell)" : "Haswell");
    return 1;
}

int backend_cpu_blas_check(char *out, size_t cap)
{
    int avx2 = 0, avx512 = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    avx512 = __builtin_cpu_supports("avx512f");
#endif
    return backend_cpu_blas_advice(openblas_get_corename(), avx2, avx512, getenv("OPENBLAS_CORETYPE") != NULL, out,
                                   cap);
}

/* be->libraries: OpenBLAS's configuration (attention's products and the
 * rest) and the library and kernel of cpu_gemm's products. */
static void cpu_libraries(backend *be, int lib)
{
    char d[160];
    gemm_describe(lib, d, sizeof d);
    snprintf(be->libraries, sizeof be->libraries, "%s; cpu_gemm %s", openblas_get_config(), d);
}

int backend_cpu_set_gemm(backend *be, int lib)
{
    char why[200];
    if (gemm_open(lib, why, sizeof why) != ST_OK)
        return util_fail(ST_UNAVAILABLE, "train.cpu_gemm = %s: %s; or use cpu_gemm = openblas (or auto)",
                         gemm_name(lib), why);
    ((cpu_impl *)be->impl)->gemm = lib;
    cpu_libraries(be, lib);
    return ST_OK;
}

int backend_cpu_gemm_pick(const backend *be, int64_t B, const char *cache, int *lib, char *note, size_t cap)
{
    const cpu_impl *c = be->impl;
    gemm_shape s[32];
    int n = backend_cpu_gemm_shapes(&c->s, B, s, 32);
    return gemm_pick(s, n, c->nt, be->device, cache, lib, note, cap);
}

int backend_cpu_create(backend **out, const model_layout *L, const backend_opts *o)
{
    *out = NULL;
    /* The CPU computes in fp32 only: accepting a 16-bit precision would
     * record a precision that never ran. */
    if (o && o->precision && strcmp(o->precision, "fp32"))
        return util_fail(ST_CONFIG, "train.precision = %s: the cpu backend computes in fp32 only; use precision = "
                         "auto or fp32 (tf32, bf16 and fp16 need backend = cuda)", o->precision);
    backend *be = calloc(1, sizeof *be);
    cpu_impl *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return util_fail(ST_SOFTWARE, "cpu backend: out of memory");
    }
    be->impl = c;
    be->name = "cpu";
    be->precision = "fp32";
    cpu_model_name(be->device, sizeof be->device);
    char why[200];
    int gl = o->cpu_gemm > 0 && o->cpu_gemm < GEMM_LIBS ? o->cpu_gemm : GEMM_OPENBLAS;
    if (gemm_open(gl, why, sizeof why) != ST_OK) {
        free(be);
        free(c);
        return util_fail(ST_UNAVAILABLE, "train.cpu_gemm = %s: %s; or use cpu_gemm = openblas (or auto)",
                         gemm_name(gl), why);
    }
    /* The library and kernel of the products: a resume under another one
     * is not bitwise continuous, and backend_continuity says so. */
    cpu_libraries(be, gl);
    c->gemm = gl;
    backend_cpu_blas_check(be->warning, sizeof be->warning);
    be->L = L;
    be->rank = o->rank;
    be->world = o->world > 0 ? o->world : 1;
    comm_range(L->n_floats, be->rank, be->world, &be->lo, &be->hi);
    c->s = L->s;
    c->nt = o->threads > 0 ? o->threads : omp_get_num_procs();
    c->recompute = o->recompute;
    c->zero = o->zero > 1 ? o->zero : 1;
    openblas_set_num_threads(1);   /* attention's own cblas calls run inside our threads too */
    if (o->flush_denormals)
        cpu_flush_denormals(c->nt);
    c->qd = c->s.n_heads * c->s.head_dim;
    c->kvd = c->s.n_kv_heads * c->s.head_dim;
    c->qkvd = c->qd + 2 * c->kvd;
    int64_t half = c->s.head_dim / 2, T = c->s.seq_len;
    size_t mine = be->hi - be->lo;
    size_t np = cpu_param_floats(be), ng = cpu_grad_floats(be);
    c->params = calloc(np ? np : 1, sizeof(float));
    c->grads = calloc(ng ? ng : 1, sizeof(float));
    c->cap[0] = cpu_bucket_floats(be, -1, c->s.n_layers);
    c->cap[1] = cpu_bucket_floats(be, 0, c->s.n_layers - 1);
    /* The second bucket of each kind only where a worker can fill it: as
     * memplan_compute plans them. */
    int two = comm_get_overlap() && be->world > 1;
    c->ng = c->zero >= 2 ? 1 + two : 0;
    c->nw = c->zero >= 3 ? 1 + two : 0;
    int short_of = 0;
    for (int j = 0; j < 2; j++) {
        c->gbuf[j] = j < c->ng ? malloc((c->cap[j] ? c->cap[j] : 1) * sizeof(float)) : NULL;
        c->wbuf[j] = j < c->nw ? malloc((c->cap[j] ? c->cap[j] : 1) * sizeof(float)) : NULL;
        short_of |= (j < c->ng && !c->gbuf[j]) || (j < c->nw && !c->wbuf[j]);
        c->wk[j] = CPU_NO_BUCKET;
    }
    c->wbase = c->params;
    c->gbase = c->grads;
    c->m = calloc(mine ? mine : 1, sizeof(float));
    c->v = calloc(mine ? mine : 1, sizeof(float));
    c->rope_cos = malloc((size_t)(T * half + 1) * sizeof(float));
    c->rope_sin = malloc((size_t)(T * half + 1) * sizeof(float));
    if (!c->params || !c->grads || !c->m || !c->v || !c->rope_cos || !c->rope_sin || short_of) {
        cpu_destroy(be);
        return util_fail(ST_SOFTWARE, "cpu backend: out of memory for %zu parameters and their state",
                         L->n_floats);
    }
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < half; i++) {
            double inv = pow(c->s.rope_theta, -(double)(2 * i) / (double)c->s.head_dim);
            c->rope_cos[t * half + i] = (float)cos((double)t * inv);
            c->rope_sin[t * half + i] = (float)sin((double)t * inv);
        }
    be->fwd_bwd = cpu_fwd_bwd;
    be->take_loss = cpu_take_loss;
    be->eval = cpu_eval;
    be->logits = cpu_logits;
    be->zero_grads = cpu_zero_grads;
    be->reduce_grads = cpu_reduce_grads;
    be->grad_sumsq = cpu_grad_sumsq;
    be->adamw = cpu_adamw;
    be->gather_params = cpu_gather_params;
    be->load = cpu_load;
    be->read = cpu_read;
    be->snapshot = cpu_snapshot;
    be->snapshot_wait = cpu_snapshot_wait;
    be->pin = NULL;
    be->destroy = cpu_destroy;
    *out = be;
    return ST_OK;
}
