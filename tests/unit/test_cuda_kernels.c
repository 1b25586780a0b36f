/* Every CUDA kernel against the CPU backend's formulas (backend/cpu.c,
 * model/elem.h, model/optim.c) on random inputs, outputs NaN-poisoned
 * before each launch: fp32 near-exact (1e-5 relative to the tensor's
 * largest entry; AdamW and the embedding bitwise), bf16 within 1e-2 with
 * inputs rounded as the upload rounds them. Needs a GPU: elsewhere it says
 * why it skips and passes nothing.
 * module: cuda */
#include "tests/harness.h"
#include "cuda/cuda.h"
#include "cuda/plan.h"
#include "model/elem.h"
#include "model/optim.h"
#include "util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef SPOTRAIN_CUDA

static uint64_t kc_state = 0x9E3779B97F4A7C15ull;
static float kc_rand(void)
{
    kc_state ^= kc_state << 13;
    kc_state ^= kc_state >> 7;
    kc_state ^= kc_state << 17;
    return (float)((double)(kc_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *kc_rnd(size_t n, float scale)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; p && i < n; i++)
        p[i] = kc_rand() * scale;
    return p;
}

static float *kc_zeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

/* What the device sees of a compute-type input. */
static void kc_round(int prec, float *a, size_t n)
{
    if (prec == CUDA_BF16)
        for (size_t i = 0; i < n; i++)
            a[i] = elem_bf16_float(elem_bf16(a[i]));
}

static float kc_r(int prec, float x) { return prec == CUDA_BF16 ? elem_bf16_float(elem_bf16(x)) : x; }

static double kc_rel(const float *got, const float *want, size_t n)
{
    double d = 0, m = 1e-30;
    for (size_t i = 0; i < n; i++) {
        if (got[i] != got[i] && want[i] == want[i])
            return INFINITY;
        d = fmax(d, fabs((double)got[i] - want[i]));
        m = fmax(m, fabs((double)want[i]));
    }
    return d / m;
}

static int kc_prec = CUDA_FP32;
static double kc_tol(void) { return kc_prec == CUDA_BF16 ? 1e-2 : 1e-5; }

static void kc_expect(const char *what, double rel)
{
    if (!(rel <= kc_tol()))
        fprintf(stderr, "    %s %s: relative difference %.3g\n", cuda_prec_name((cuda_prec)kc_prec), what, rel);
    EXPECT(rel <= kc_tol());
}

/* D = 200 and 5000: the fused backward (256 and 640 threads, 1 and 8
 * columns per thread) and the forward's 128-bit path; 8200: wider than
 * 8 x 1024, the three-kernel backward. */
static void kc_rmsnorm(int64_t N, int64_t D)
{
    size_t nd = (size_t)(N * D);
    float *x = kc_rnd(nd, 2), *w = kc_rnd((size_t)D, 1), *dy = kc_rnd(nd, 1), *dx = kc_rnd(nd, 1), *dw = kc_rnd((size_t)D, 1);
    float *out = kc_zeros(nd), *rs = kc_zeros((size_t)N), *rdx = malloc(nd * 4), *rdw = malloc((size_t)D * 4);
    float *rout = kc_zeros(nd), *rrs = kc_zeros((size_t)N);
    memcpy(rdx, dx, nd * 4);
    memcpy(rdw, dw, (size_t)D * 4);
    EXPECT(cuda_check_rmsnorm(kc_prec, N, D, 1e-5, x, w, dy, out, rs, dx, dw) == ST_OK);
    double *acc = calloc((size_t)D, sizeof *acc);
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * D, *g = dy + n * D;
        double ss = 0, dot = 0;
        for (int64_t j = 0; j < D; j++)
            ss += (double)xr[j] * xr[j];
        float r = elem_rms_scale(ss, D, 1e-5);
        rrs[n] = r;
        for (int64_t j = 0; j < D; j++) {
            rout[n * D + j] = kc_r(kc_prec, (xr[j] * r) * w[j]);
            dot += (double)(g[j] * w[j]) * (double)xr[j];
            acc[j] += (double)(g[j] * xr[j]) * (double)r;
        }
        float k = (float)((double)r * r * r * dot / (double)D);
        for (int64_t j = 0; j < D; j++)
            rdx[n * D + j] += r * (g[j] * w[j]) - xr[j] * k;
    }
    for (int64_t j = 0; j < D; j++)
        rdw[j] += (float)acc[j];
    kc_expect("rmsnorm out", kc_rel(out, rout, nd));
    EXPECT(kc_rel(rs, rrs, (size_t)N) <= 1e-6);
    EXPECT(kc_rel(dx, rdx, nd) <= 1e-5);   /* fp32 in every precision */
    EXPECT(kc_rel(dw, rdw, (size_t)D) <= 1e-5);
    free(x); free(w); free(dy); free(dx); free(dw); free(out); free(rs); free(rdx); free(rdw); free(rout); free(rrs);
    free(acc);
}

static void test_rmsnorm(void)
{
    kc_rmsnorm(37, 200);
    kc_rmsnorm(19, 5000);
    kc_rmsnorm(5, 8200);
    kc_rmsnorm(11, 203);   /* not a multiple of 8: the forward element by element */
}

/* Bitwise: the kernel and this loop run the same elem_rope on the same
 * floats, and round once. */
static void kc_rope(int64_t hd, int64_t H, int64_t KV)
{
    model_shape s = {.dim = H * hd, .n_layers = 1, .n_heads = H, .n_kv_heads = KV, .head_dim = hd, .ffn_dim = 64,
                     .vocab = 10, .seq_len = 24, .rope_theta = 10000, .norm_eps = 1e-5};
    int64_t B = 2, T = s.seq_len, half = hd / 2, heads = H + 2 * KV, N = B * T;
    size_t nr = (size_t)(N * heads * hd), nq = (size_t)(N * H * hd), nk = (size_t)(N * KV * hd);
    float *qkv = kc_rnd(nr, 1), *q = kc_zeros(nq), *k = kc_zeros(nk), *v = kc_zeros(nk), *back = kc_zeros(nr);
    float *rq = kc_zeros(nq), *rk = kc_zeros(nk), *rv = kc_zeros(nk), *rback = kc_zeros(nr);
    kc_round(kc_prec, qkv, nr);
    EXPECT(cuda_check_rope(kc_prec, &s, B, qkv, q, k, v, back) == ST_OK);
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t i = 0; i < half; i++) {
                int64_t b = n / T, t = n % T;
                double inv = pow(s.rope_theta, -(double)(2 * i) / (double)hd);
                float cs = (float)cos((double)t * inv), sn = (float)sin((double)t * inv);
                float a = qkv[(n * heads + h) * hd + i], c = qkv[(n * heads + h) * hd + i + half];
                float *dst;
                if (h < H)
                    dst = rq + ((b * H + h) * T + t) * hd;
                else if (h < H + KV)
                    dst = rk + ((b * KV + h - H) * T + t) * hd;
                else
                    dst = rv + ((b * KV + h - H - KV) * T + t) * hd;
                if (h < H + KV)
                    elem_rope(&a, &c, cs, sn);
                a = kc_r(kc_prec, a), c = kc_r(kc_prec, c);
                dst[i] = a, dst[i + half] = c;
                if (h < H + KV)
                    elem_rope(&a, &c, cs, -sn);
                rback[(n * heads + h) * hd + i] = kc_r(kc_prec, a);
                rback[(n * heads + h) * hd + i + half] = kc_r(kc_prec, c);
            }
    EXPECT(!memcmp(q, rq, nq * 4));
    EXPECT(!memcmp(k, rk, nk * 4));
    EXPECT(!memcmp(v, rv, nk * 4));
    EXPECT(!memcmp(back, rback, nr * 4));
    free(qkv); free(q); free(k); free(v); free(back); free(rq); free(rk); free(rv); free(rback);
}

/* hd/2 = 8: 128-bit in fp32 (4 pairs a thread) and bf16 (8); 16: two
 * vectors a half in bf16; 6: not a whole vector, pair by pair. */
static void test_rope(void)
{
    kc_rope(16, 6, 2);
    kc_rope(32, 4, 1);
    kc_rope(12, 6, 2);
}

/* Plain causal GQA attention in double: the forward's output rows and
 * log-sum-exp, and the gradients, from the definition. */
static void kc_attention_ref(const model_shape *s, int64_t B, const float *q, const float *k, const float *v,
                             const float *dao, float *ao, float *lse, float *dq, float *dk, float *dv)
{
    int64_t T = s->seq_len, H = s->n_heads, KV = s->n_kv_heads, hd = s->head_dim, qd = H * hd;
    double scale = 1.0 / sqrt((double)hd), *p = malloc((size_t)T * sizeof *p), *dp = malloc((size_t)T * sizeof *dp);
    double *gk = calloc((size_t)(B * KV * T * hd), sizeof *gk), *gv = calloc((size_t)(B * KV * T * hd), sizeof *gv);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            int64_t kvh = h / (H / KV);
            const float *qh = q + (b * H + h) * T * hd, *kh = k + (b * KV + kvh) * T * hd, *vh = v + (b * KV + kvh) * T * hd;
            for (int64_t t = 0; t < T; t++) {
                double m = -INFINITY, l = 0, D = 0;
                for (int64_t u = 0; u <= t; u++) {
                    double sc = 0;
                    for (int64_t i = 0; i < hd; i++)
                        sc += (double)qh[t * hd + i] * kh[u * hd + i];
                    p[u] = sc * scale;
                    m = fmax(m, p[u]);
                }
                for (int64_t u = 0; u <= t; u++)
                    l += p[u] = exp(p[u] - m);
                lse[(b * H + h) * T + t] = (float)(m + log(l));
                const float *g = dao + (b * T + t) * qd + h * hd;
                for (int64_t i = 0; i < hd; i++) {
                    double o = 0;
                    for (int64_t u = 0; u <= t; u++)
                        o += p[u] / l * vh[u * hd + i];
                    ao[(b * T + t) * qd + h * hd + i] = (float)o;
                }
                for (int64_t u = 0; u <= t; u++) {
                    p[u] /= l;
                    dp[u] = 0;
                    for (int64_t i = 0; i < hd; i++)
                        dp[u] += (double)g[i] * vh[u * hd + i];
                    D += p[u] * dp[u];
                }
                for (int64_t i = 0; i < hd; i++) {
                    double a = 0;
                    for (int64_t u = 0; u <= t; u++) {
                        double ds = p[u] * (dp[u] - D) * scale;
                        a += ds * kh[u * hd + i];
                        gk[((b * KV + kvh) * T + u) * hd + i] += ds * qh[t * hd + i];
                        gv[((b * KV + kvh) * T + u) * hd + i] += p[u] * g[i];
                    }
                    dq[((b * H + h) * T + t) * hd + i] = (float)a;
                }
            }
        }
    for (int64_t i = 0; i < B * KV * T * hd; i++) {
        dk[i] = (float)gk[i];
        dv[i] = (float)gv[i];
    }
    free(p); free(dp); free(gk); free(gv);
}

/* Flash attention (cuda/attention.cuh) against the definition: T not a
 * multiple of the tile (32 rows in bf16, 16 in fp32), head_dim not a
 * multiple of 16 and the largest (128), GQA groups of 1, 2 and 3; and two
 * runs give the same bits. */
static void kc_attention(int64_t T, int64_t H, int64_t KV, int64_t hd)
{
    model_shape s = {.dim = H * hd, .n_layers = 1, .n_heads = H, .n_kv_heads = KV, .head_dim = hd, .ffn_dim = 32,
                     .vocab = 32, .seq_len = T, .rope_theta = 10000, .norm_eps = 1e-5};
    int64_t B = 2;
    size_t nq = (size_t)(B * T * H * hd), nk = (size_t)(B * T * KV * hd), nr = (size_t)(B * H * T);
    float *q = kc_rnd(nq, 1.5f), *k = kc_rnd(nk, 1.5f), *v = kc_rnd(nk, 1), *dao = kc_rnd(nq, 1);
    float *out[2][5], *ref[5];
    size_t n[5] = {nq, nr, nq, nk, nk};
    const char *what[5] = {"attention out", "attention lse", "attention dq", "attention dk", "attention dv"};
    kc_round(kc_prec, q, nq);
    kc_round(kc_prec, k, nk);
    kc_round(kc_prec, v, nk);
    kc_round(kc_prec, dao, nq);
    for (int i = 0; i < 5; i++) {
        out[0][i] = kc_zeros(n[i]);
        out[1][i] = kc_zeros(n[i]);
        ref[i] = kc_zeros(n[i]);
    }
    for (int r = 0; r < 2; r++)
        EXPECT(cuda_check_attention(kc_prec, &s, B, q, k, v, dao, out[r][0], out[r][1], out[r][2], out[r][3],
                                    out[r][4]) == ST_OK);
    kc_attention_ref(&s, B, q, k, v, dao, ref[0], ref[1], ref[2], ref[3], ref[4]);
    for (int i = 0; i < 5; i++) {
        char label[96];
        snprintf(label, sizeof label, "%s (T %lld, heads %lld/%lld, head_dim %lld)", what[i], (long long)T,
                 (long long)H, (long long)KV, (long long)hd);
        kc_expect(label, kc_rel(out[0][i], ref[i], n[i]));
        if (memcmp(out[0][i], out[1][i], n[i] * sizeof(float)))
            fprintf(stderr, "    %s: two runs differ\n", label);
        EXPECT(!memcmp(out[0][i], out[1][i], n[i] * sizeof(float)));
    }
    for (int i = 0; i < 5; i++) {
        free(out[0][i]); free(out[1][i]); free(ref[i]);
    }
    free(q); free(k); free(v); free(dao);
}

static void test_attention(void)
{
    kc_attention(37, 2, 2, 16);   /* group 1 */
    kc_attention(70, 6, 2, 24);   /* group 3, head_dim padded to 32 */
    kc_attention(33, 4, 2, 128);  /* the largest head_dim; one row past a tile */
    /* past the largest head_dim: one line, nothing launched */
    model_shape s = {.dim = 160, .n_layers = 1, .n_heads = 1, .n_kv_heads = 1, .head_dim = 160, .ffn_dim = 32,
                     .vocab = 32, .seq_len = 4, .rope_theta = 10000, .norm_eps = 1e-5};
    float *z = kc_zeros(4 * 160);
    EXPECT(cuda_check_attention(kc_prec, &s, 1, z, z, z, z, z, z, z, z, z) == ST_CONFIG);
    free(z);
}

/* F = 130: the element-by-element path; 128: 16-byte vectors (4 fp32, 8
 * bf16 per thread), the rows a whole number of them. The backward that
 * also writes h (under recompute) gives the forward's h and the plain
 * backward's dgu bit for bit. */
static void kc_swiglu(int64_t F)
{
    int64_t N = 29;
    size_t n = (size_t)(N * F);
    float *gu = kc_rnd(2 * n, 3), *dh = kc_rnd(n, 1), *h = kc_zeros(n), *dgu = kc_zeros(2 * n);
    float *rh = kc_zeros(n), *rdgu = kc_zeros(2 * n), *hb = kc_zeros(n), *dgub = kc_zeros(2 * n);
    kc_round(kc_prec, gu, 2 * n);
    EXPECT(cuda_check_swiglu(kc_prec, N, F, gu, dh, h, dgu, hb, dgub) == ST_OK);
    EXPECT(!memcmp(hb, h, n * 4));
    EXPECT(!memcmp(dgub, dgu, 2 * n * 4));
    for (int64_t r = 0; r < N; r++)
        for (int64_t j = 0; j < F; j++) {
            float g = gu[r * 2 * F + j], u = gu[r * 2 * F + F + j], a, b;
            rh[r * F + j] = kc_r(kc_prec, elem_swiglu(g, u));
            elem_swiglu_bwd(g, u, dh[r * F + j], &a, &b);
            rdgu[r * 2 * F + j] = kc_r(kc_prec, a);
            rdgu[r * 2 * F + F + j] = kc_r(kc_prec, b);
        }
    kc_expect("swiglu", kc_rel(h, rh, n));
    kc_expect("swiglu backward", kc_rel(dgu, rdgu, 2 * n));
    free(gu); free(dh); free(h); free(dgu); free(rh); free(rdgu); free(hb); free(dgub);
}

static void test_swiglu(void)
{
    kc_swiglu(130);
    kc_swiglu(128);
}

static void test_crossentropy(void)
{
    int64_t B = 2, T = 9, V = 3001, N = B * T;
    size_t n = (size_t)(N * V);
    float *z = kc_rnd(n, 6), *dz = kc_zeros(n), *rdz = kc_zeros(n), gs = 0.25f;
    int32_t *tok = malloc((size_t)(B * (T + 1)) * sizeof *tok);
    double *row = calloc((size_t)N, 8), sum = 0, rsum = 0, worst = 0;
    for (int64_t i = 0; i < B * (T + 1); i++)
        tok[i] = (int32_t)((uint64_t)(kc_rand() + 1.0f) * 1000 % (uint64_t)V + (uint64_t)i) % (int32_t)V;
    EXPECT(cuda_check_crossentropy(kc_prec, B, T, V, z, tok, gs, row, &sum, dz) == ST_OK);
    for (int64_t r = 0; r < N; r++) {
        const float *zr = z + r * V;
        int64_t tgt = tok[(r / T) * (T + 1) + r % T + 1];
        float mx = zr[0];
        double s = 0;
        for (int64_t j = 1; j < V; j++)
            mx = fmaxf(mx, zr[j]);
        for (int64_t j = 0; j < V; j++)
            s += (double)elem_exp(zr[j] - mx);
        double loss = (double)mx + log(s) - (double)zr[tgt];
        rsum += loss;
        worst = fmax(worst, fabs(loss - row[r]) / fabs(loss));
        float k = (float)(1.0 / s) * gs;
        for (int64_t j = 0; j < V; j++)
            rdz[r * V + j] = kc_r(kc_prec, elem_exp(zr[j] - mx) * k - (j == tgt ? gs : 0.0f));
    }
    EXPECT(worst <= 1e-9);
    EXPECT(fabs(sum - rsum) <= 1e-9 * fabs(rsum));
    kc_expect("cross-entropy dlogits", kc_rel(dz, rdz, n));
    free(z); free(dz); free(rdz); free(tok); free(row);
}

/* D = 70: the forward element by element; 72: 128-bit accesses. */
static void kc_encoder(int64_t D)
{
    int64_t B = 3, T = 17, V = 11, N = B * T;
    float *emb = kc_rnd((size_t)(V * D), 1), *dres = kc_rnd((size_t)(N * D), 1), *out = kc_zeros((size_t)(N * D));
    float *g = kc_rnd((size_t)(V * D), 1), *rg = malloc((size_t)(V * D) * 4);
    int32_t *tok = malloc((size_t)(B * (T + 1)) * sizeof *tok);
    memcpy(rg, g, (size_t)(V * D) * 4);
    for (int64_t i = 0; i < B * (T + 1); i++)
        tok[i] = (int32_t)(i * 7 % 5);   /* many repeats: the order of adds matters */
    EXPECT(cuda_check_encoder(B, T, D, V, emb, tok, dres, out, g) == ST_OK);
    int same = 1;
    for (int64_t n = 0; n < N; n++) {
        int64_t t = tok[(n / T) * (T + 1) + n % T];
        same &= !memcmp(out + n * D, emb + t * D, (size_t)D * 4);
        for (int64_t j = 0; j < D; j++)
            rg[t * D + j] += dres[n * D + j];
    }
    EXPECT(same);
    EXPECT(!memcmp(g, rg, (size_t)(V * D) * 4));   /* token order, as the CPU: bitwise */
    free(emb); free(dres); free(out); free(g); free(rg); free(tok);
}

static void test_encoder(void)
{
    kc_encoder(70);
    kc_encoder(72);
}

/* Streams at element skews of their buffers: (0, 0) 128-bit from the
 * first element with a scalar tail (n is not a multiple of 8); (3, 3) a
 * scalar head up to the first aligned index, vectors straddling tensor
 * boundaries (other decay) after it; (1, 0) phases that never align,
 * element by element. Bitwise against optim_adamw every time. */
static void kc_adamw(int skew_pgw, int skew_mv)
{
    model_shape s = {.dim = 66, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 16, .ffn_dim = 96,
                     .vocab = 51, .seq_len = 8, .rope_theta = 10000, .norm_eps = 1e-5};
    model_layout L;
    EXPECT(model_layout_init(&L, &s) == ST_OK);
    size_t n = L.n_floats;
    optim_hparams h = {.lr = 1e-3, .min_lr = 1e-4, .warmup_steps = 2, .weight_decay = 0.1, .beta1 = 0.9,
                       .beta2 = 0.95, .eps = 1e-8, .grad_clip = 1.0, .max_steps = 10};
    float *p = kc_rnd(n, 1), *g = kc_rnd(n, 1), *m = kc_rnd(n, 0.1f), *v = kc_rnd(n, 0.1f), *w = kc_zeros(n);
    for (size_t i = 0; i < n; i++)
        v[i] = fabsf(v[i]);
    float *rp = malloc(n * 4), *rm = malloc(n * 4), *rv = malloc(n * 4), *rw = malloc(n * 4);
    memcpy(rp, p, n * 4);
    memcpy(rm, m, n * 4);
    memcpy(rv, v, n * 4);
    EXPECT(n % 8 != 0);
    EXPECT(cuda_check_adamw(kc_prec, &L, &h, 7e-4, 0.6, 3, p, g, m, v, w, skew_pgw, skew_mv) == ST_OK);
    optim_adamw(&h, &L, 0, n, rp, g, rm, rv, 7e-4, 0.6, 3);
    for (size_t i = 0; i < n; i++)
        rw[i] = kc_r(kc_prec, rp[i]);
    /* double arithmetic without contraction on both sides: the same bits */
    EXPECT(!memcmp(p, rp, n * 4));
    EXPECT(!memcmp(m, rm, n * 4));
    EXPECT(!memcmp(v, rv, n * 4));
    EXPECT(!memcmp(w, rw, n * 4));
    model_layout_free(&L);
    free(p); free(g); free(m); free(v); free(w); free(rp); free(rm); free(rv); free(rw);
}

static void test_adamw(void)
{
    kc_adamw(0, 0);
    kc_adamw(3, 3);
    kc_adamw(1, 0);
}

static void test_sumsq(void)
{
    int64_t n = 100003;
    float *g = kc_rnd((size_t)n, 3);
    double got = 0, want = optim_sumsq(g, (size_t)n);
    EXPECT(cuda_check_sumsq(g, n, &got) == ST_OK);
    EXPECT(fabs(got - want) <= 1e-12 * want);
    free(g);
}

/* Every planned product on small GQA dims, against the row-major meaning. */
static void test_gemms(void)
{
    model_shape s = {.dim = 64, .n_layers = 1, .n_heads = 4, .n_kv_heads = 2, .head_dim = 16, .ffn_dim = 96,
                     .vocab = 72, .seq_len = 16, .rope_theta = 10000, .norm_eps = 1e-5};
    cuda_dims d;
    cuda_dims_init(&d, &s, 2);
    for (int id = 0; id < CUDA_G_COUNT; id++) {
        cuda_gemm g = cuda_gemm_plan(&d, id, d.chunk_rows);
        size_t na = (size_t)((g.ta ? g.K : g.M) * g.lda + (g.batch - 1) * g.sa);
        size_t nb = (size_t)((g.tb ? g.N : g.K) * g.ldb + (g.batch - 1) * g.sb);
        size_t nc = (size_t)(g.M * g.ldc + (g.batch - 1) * g.sc);
        float *A = kc_rnd(na, 1), *Bm = kc_rnd(nb, 1), *C = kc_rnd(nc, 1), *R = malloc(nc * 4);
        kc_round(kc_prec, A, na);
        kc_round(kc_prec, Bm, nb);
        if (!g.out_f32)
            kc_round(kc_prec, C, nc);
        memcpy(R, C, nc * 4);
        EXPECT(cuda_check_gemm(kc_prec, &s, 2, id, d.chunk_rows, A, na, Bm, nb, C, nc) == ST_OK);
        for (int64_t bi = 0; bi < g.batch; bi++)
            for (int64_t i = 0; i < g.M; i++)
                for (int64_t j = 0; j < g.N; j++) {
                    double acc = 0;
                    for (int64_t k = 0; k < g.K; k++)
                        acc += (double)(g.ta ? A[bi * g.sa + k * g.lda + i] : A[bi * g.sa + i * g.lda + k]) *
                               (g.tb ? Bm[bi * g.sb + j * g.ldb + k] : Bm[bi * g.sb + k * g.ldb + j]);
                    float *r = &R[bi * g.sc + i * g.ldc + j];
                    *r = (float)(g.alpha * acc + g.beta * *r);
                    if (!g.out_f32)
                        *r = kc_r(kc_prec, *r);
                }
        kc_expect(g.name, kc_rel(C, R, nc));
        free(A); free(Bm); free(C); free(R);
    }
}

#endif

int main(void)
{
    util_quiet = 1;
#ifdef SPOTRAIN_CUDA
    char why[256];
    if (!cuda_available(why, sizeof why)) {
        printf("SKIP test_cuda_kernels: %s\n", why);
        return harness_end();
    }
    int precs[] = {CUDA_FP32, CUDA_BF16};
    for (int i = 0; i < 2; i++) {
        kc_prec = precs[i];
        printf("%s:\n", cuda_prec_name((cuda_prec)kc_prec));
        harness_run("rmsnorm", test_rmsnorm);
        harness_run("rope", test_rope);
        harness_run("attention", test_attention);
        harness_run("swiglu", test_swiglu);
        harness_run("crossentropy", test_crossentropy);
        harness_run("encoder", test_encoder);
        harness_run("adamw", test_adamw);
        harness_run("sumsq", test_sumsq);
        harness_run("gemms", test_gemms);
    }
#else
    (void)harness_run;   /* nothing to run without CUDA */
    printf("SKIP test_cuda_kernels: built without CUDA\n");
#endif
    return harness_end();
}
