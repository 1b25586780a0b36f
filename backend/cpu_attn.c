/* Tiled causal attention for the CPU backend (cpu_attn.h): per tile, the
 * scores and products are single-threaded OpenBLAS calls over the strided
 * q/k/v columns of the fused qkv rows (K/V of a group read in place, never
 * copied); the softmax rows are vectorised loops over elem.h's exp. */
#include "backend/cpu_attn.h"
#include "model/elem.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>

/* Floats of a [TILE, hd] block's rows, rounded up to keep blocks 64-byte
 * aligned. */
static size_t cpu_attn_width(int64_t hd) { return (size_t)(hd + 15) / 16 * 16; }

/* [TILE, w] sum blocks: one per head of the group (forward), at least the
 * backward's two (dk, dv). */
static size_t cpu_attn_sums(int64_t group) { return group > 2 ? (size_t)group : 2; }

/* The score tile and its gradient, the key tile's K^T and V^T, the sum
 * blocks, and each of the group's heads' running max and sum per row; each
 * piece 64-byte aligned. */
size_t cpu_attn_scratch_floats(int64_t hd, int64_t group)
{
    size_t t = CPU_ATTN_TILE, w = cpu_attn_width(hd);
    return 2 * t * t + (2 + cpu_attn_sums(group)) * t * w + 2 * (size_t)group * t + 16;
}

typedef struct {
    float *s, *dp, *kt, *vt, *acc, *m, *l;   /* acc: group x [TILE, w]; m, l: group x TILE */
    size_t w;
} cpu_attn_scr;

static cpu_attn_scr cpu_attn_scratch(float *base, int64_t hd, int64_t group)
{
    size_t t = CPU_ATTN_TILE, w = cpu_attn_width(hd);
    float *p = base + (size_t)omp_get_thread_num() * cpu_attn_scratch_floats(hd, group);
    /* Aligned from wherever malloc put the block: the +16 covers it. */
    p += (16 - ((uintptr_t)p / sizeof(float)) % 16) % 16;
    cpu_attn_scr r = {.s = p, .dp = p + t * t, .kt = p + 2 * t * t, .w = w};
    r.vt = r.kt + t * w;
    r.acc = r.vt + t * w;
    r.m = r.acc + cpu_attn_sums(group) * t * w;
    r.l = r.m + (size_t)group * t;
    return r;
}

/* Eight interleaved partial sums in a fixed order (vectorisable, the same
 * bits on every run). */
static float cpu_attn_sum(const float *restrict a, int64_t n)
{
    float acc[8] = {0};
    int64_t i = 0;
    /* The pragma makes the eight lanes one vector (without it GCC keeps
     * them scalar); each lane's sum is the same either way. */
    for (; i + 8 <= n; i += 8)
#pragma omp simd
        for (int k = 0; k < 8; k++)
            acc[k] += a[i + k];
    for (; i < n; i++)
        acc[0] += a[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

static float cpu_attn_dot(const float *restrict a, const float *restrict b, int64_t n)
{
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
#pragma omp simd
        for (int k = 0; k < 8; k++)
            acc[k] = fmaf(a[i + k], b[i + k], acc[k]);
    for (; i < n; i++)
        acc[0] = fmaf(a[i], b[i], acc[0]);
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

static int64_t cpu_attn_min(int64_t a, int64_t b) { return a < b ? a : b; }

/* Keys a row of a tile sees: all n, or on the diagonal tile (query and key
 * tiles start at the same token) those up to the row's own. */
static int64_t cpu_attn_seen(int diag, int64_t r, int64_t n) { return diag ? cpu_attn_min(r + 1, n) : n; }

/* t[c][r] = a[r][c] for m rows of n (strides lda and ldt), in 8 x 8
 * blocks that stay in registers. The products then take every operand
 * untransposed, which OpenBLAS runs without packing (a transposed operand
 * made it pack both: a sixth of attention's time). */
static void cpu_attn_transpose(const float *restrict a, int64_t lda, float *restrict t, int64_t ldt, int64_t m,
                               int64_t n)
{
    for (int64_t r0 = 0; r0 < m; r0 += 8)
        for (int64_t c0 = 0; c0 < n; c0 += 8) {
            int64_t r1 = cpu_attn_min(r0 + 8, m), c1 = cpu_attn_min(c0 + 8, n);
            for (int64_t c = c0; c < c1; c++)
                for (int64_t r = r0; r < r1; r++)
                    t[c * ldt + r] = a[r * lda + c];
        }
}

/* S = scale * q k^T for m query rows and n key rows, k given as kt =
 * k^T [hd, TILE]. */
static void cpu_attn_scores(const float *q, int64_t ld, const float *kt, int64_t m, int64_t n, int64_t hd,
                            float scale, float *s)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)hd, scale, q, (int)ld, kt,
                CPU_ATTN_TILE, 0.0f, s, CPU_ATTN_TILE);
}

/* One online-softmax step of a score row: folds the row's visible part
 * into the running max *mx and sum *l (first: no earlier tile), leaves
 * exp(s - new max) in the row (0 where masked) and returns the factor the
 * earlier output is rescaled by. */
static float cpu_attn_online_row(float *restrict s, int64_t seen, int64_t n, int first, float *mx, float *l)
{
    float tmax = s[0];
#pragma omp simd reduction(max : tmax)
    for (int64_t c = 1; c < seen; c++)
        tmax = s[c] > tmax ? s[c] : tmax;
    float mnew = first || tmax > *mx ? tmax : *mx;
    float alpha = first ? 0.0f : elem_exp(*mx - mnew);
#pragma omp simd
    for (int64_t c = 0; c < n; c++)
        s[c] = c < seen ? elem_exp(s[c] - mnew) : 0.0f;
    *l = (first ? 0.0f : *l * alpha) + cpu_attn_sum(s, seen);
    *mx = mnew;
    return alpha;
}

/* One key tile's step for the m query rows q of the group's head g: the
 * scores against kt, the online softmax, and acc = acc * alpha + p v. */
static void cpu_attn_fwd_step(const cpu_attn_shape *a, const float *q, const float *v, cpu_attn_scr *w, int64_t g,
                              int64_t m, int64_t n, int diag, int first)
{
    int64_t hd = a->hd;
    float scale = (float)(1.0 / sqrt((double)hd));
    float *acc = w->acc + (size_t)g * CPU_ATTN_TILE * w->w;
    cpu_attn_scores(q, a->ld, w->kt, m, n, hd, scale, w->s);
    for (int64_t r = 0; r < m; r++) {
        float alpha = cpu_attn_online_row(w->s + r * CPU_ATTN_TILE, cpu_attn_seen(diag, r, n), n, first,
                                          &w->m[g * CPU_ATTN_TILE + r], &w->l[g * CPU_ATTN_TILE + r]);
        float *restrict row = acc + r * hd;
        if (!first && alpha != 1.0f)
#pragma omp simd
            for (int64_t d = 0; d < hd; d++)
                row[d] *= alpha;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)hd, (int)n, 1.0f, w->s, CPU_ATTN_TILE, v,
                (int)a->ld, first ? 0.0f : 1.0f, acc, (int)hd);
}

/* Query tile i of the heads of kv head kh in sequence b: every key tile up
 * to the diagonal (later ones are all masked and skipped), its K^T made
 * once for the whole group, then each head's normalised output and
 * log-sum-exp per row. */
static void cpu_attn_fwd_tile(const cpu_attn_shape *a, const float *qkv, float *o, float *lse, float *scratch,
                              int64_t b, int64_t kh, int64_t i)
{
    int64_t T = a->T, hd = a->hd, ld = a->ld, grp = a->H / a->KV, qd = a->H * hd, kvd = a->KV * hd;
    int64_t r0 = i * CPU_ATTN_TILE, m = cpu_attn_min(CPU_ATTN_TILE, T - r0);
    cpu_attn_scr w = cpu_attn_scratch(scratch, hd, grp);
    for (int64_t j = 0; j <= i; j++) {
        int64_t c0 = j * CPU_ATTN_TILE, n = cpu_attn_min(CPU_ATTN_TILE, T - c0);
        const float *k = qkv + (b * T + c0) * ld + qd + kh * hd;
        cpu_attn_transpose(k, ld, w.kt, CPU_ATTN_TILE, n, hd);
        for (int64_t g = 0; g < grp; g++)
            cpu_attn_fwd_step(a, qkv + (b * T + r0) * ld + (kh * grp + g) * hd, k + kvd, &w, g, m, n, j == i,
                              j == 0);
    }
    for (int64_t g = 0; g < grp; g++) {
        int64_t h = kh * grp + g;
        for (int64_t r = 0; r < m; r++) {
            float l = w.l[g * CPU_ATTN_TILE + r], inv = 1.0f / l;
            const float *restrict acc = w.acc + (size_t)g * CPU_ATTN_TILE * w.w + r * hd;
            float *restrict out = o + (b * T + r0 + r) * qd + h * hd;
#pragma omp simd
            for (int64_t d = 0; d < hd; d++)
                out[d] = acc[d] * inv;
            lse[(b * a->H + h) * T + r0 + r] = w.m[g * CPU_ATTN_TILE + r] + elem_log(l);
        }
    }
}

void cpu_attn_fwd(const cpu_attn_shape *a, const float *qkv, float *o, float *lse, float *scratch)
{
    int64_t nt = (a->T + CPU_ATTN_TILE - 1) / CPU_ATTN_TILE, seqs = a->B * a->KV, tasks = seqs * nt;
    /* Every query tile of a group is its own task (no sums cross tiles);
     * the longest rows (the last tiles) go first so the dynamic schedule
     * ends evenly. */
#pragma omp parallel for schedule(dynamic, 1) num_threads(a->threads)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t i = nt - 1 - t / seqs, bk = t % seqs;
        cpu_attn_fwd_tile(a, qkv, o, lse, scratch, bk / a->KV, bk % a->KV, i);
    }
}

/* Rows r0..r0+m of head h against key tile c0..c0+n: the tile's
 * probabilities recomputed from the log-sum-exp, then dv += p^T do,
 * ds = p (dp - rowsum(do o)) scale, dk += ds^T q, dq += ds k (dq
 * overwritten at the first key tile). acc: whether the dk/dv sums hold
 * earlier terms. */
static void cpu_attn_bwd_tile(const cpu_attn_shape *a, const float *qkv, const float *o, const float *lse,
                              const float *do_, float *dqkv, cpu_attn_scr *w, int64_t b, int64_t h, int64_t i,
                              int64_t j, int acc)
{
    int64_t T = a->T, hd = a->hd, ld = a->ld, kh = h / (a->H / a->KV), qd = a->H * hd;
    int64_t r0 = i * CPU_ATTN_TILE, m = cpu_attn_min(CPU_ATTN_TILE, T - r0);
    int64_t c0 = j * CPU_ATTN_TILE, n = cpu_attn_min(CPU_ATTN_TILE, T - c0);
    float scale = (float)(1.0 / sqrt((double)hd));
    const float *q = qkv + (b * T + r0) * ld + h * hd;
    const float *k = qkv + (b * T + c0) * ld + qd + kh * hd;
    const float *dO = do_ + (b * T + r0) * qd + h * hd, *O = o + (b * T + r0) * qd + h * hd;
    const float *ls = lse + (b * a->H + h) * T + r0;
    cpu_attn_scores(q, ld, w->kt, m, n, hd, scale, w->s);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)hd, 1.0f, dO, (int)qd, w->vt,
                CPU_ATTN_TILE, 0.0f, w->dp, CPU_ATTN_TILE);
    for (int64_t r = 0; r < m; r++) {
        float *restrict p = w->s + r * CPU_ATTN_TILE, *restrict ds = w->dp + r * CPU_ATTN_TILE;
        int64_t seen = cpu_attn_seen(i == j, r, n);
        float l = ls[r], dsum = cpu_attn_dot(dO + r * qd, O + r * qd, hd);
#pragma omp simd
        for (int64_t c = 0; c < n; c++) {
            float pc = c < seen ? elem_exp(p[c] - l) : 0.0f;
            p[c] = pc;
            ds[c] = pc * (ds[c] - dsum) * scale;
        }
    }
    float beta = acc ? 1.0f : 0.0f;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)hd, (int)m, 1.0f, w->s, CPU_ATTN_TILE, dO,
                (int)qd, beta, w->acc + CPU_ATTN_TILE * w->w, (int)hd);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)hd, (int)m, 1.0f, w->dp, CPU_ATTN_TILE, q,
                (int)ld, beta, w->acc, (int)hd);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)hd, (int)n, 1.0f, w->dp, CPU_ATTN_TILE, k,
                (int)ld, j == 0 ? 0.0f : 1.0f, dqkv + (b * T + r0) * ld + h * hd, (int)ld);
}

/* Sequence b, kv head kh: key tiles in order; for each, the group's heads
 * in order and each head's query tiles from the diagonal on, summing dk
 * and dv of the tile in the scratch and dq of each query tile in place. */
static void cpu_attn_bwd_task(const cpu_attn_shape *a, const float *qkv, const float *o, const float *lse,
                              const float *do_, float *dqkv, float *scratch, int64_t b, int64_t kh)
{
    int64_t T = a->T, hd = a->hd, ld = a->ld, grp = a->H / a->KV, qd = a->H * hd, kvd = a->KV * hd;
    int64_t nt = (T + CPU_ATTN_TILE - 1) / CPU_ATTN_TILE;
    cpu_attn_scr w = cpu_attn_scratch(scratch, hd, grp);
    for (int64_t j = 0; j < nt; j++) {
        int acc = 0;
        int64_t c0 = j * CPU_ATTN_TILE, n = cpu_attn_min(CPU_ATTN_TILE, T - c0);
        /* The key tile's K^T and V^T, for every head of the group. */
        const float *k = qkv + (b * T + c0) * ld + qd + kh * hd;
        cpu_attn_transpose(k, ld, w.kt, CPU_ATTN_TILE, n, hd);
        cpu_attn_transpose(k + kvd, ld, w.vt, CPU_ATTN_TILE, n, hd);
        for (int64_t h = kh * grp; h < (kh + 1) * grp; h++)
            for (int64_t i = j; i < nt; i++, acc = 1)
                cpu_attn_bwd_tile(a, qkv, o, lse, do_, dqkv, &w, b, h, i, j, acc);
        for (int64_t c = 0; c < n; c++) {
            float *dk = dqkv + (b * T + c0 + c) * ld + qd + kh * hd, *dv = dk + kvd;
            for (int64_t d = 0; d < hd; d++) {
                dk[d] = w.acc[c * hd + d];
                dv[d] = w.acc[CPU_ATTN_TILE * w.w + c * hd + d];
            }
        }
    }
}

void cpu_attn_bwd(const cpu_attn_shape *a, const float *qkv, const float *o, const float *lse,
                  const float *do_, float *dqkv, float *scratch)
{
#pragma omp parallel for schedule(dynamic, 1) num_threads(a->threads)
    for (int64_t t = 0; t < a->B * a->KV; t++)
        cpu_attn_bwd_task(a, qkv, o, lse, do_, dqkv, scratch, t / a->KV, t % a->KV);
}
