/* Kernel checks: thin host wrappers that run one layer's kernels on host
 * arrays for tests/unit/test_cuda_kernels.c (outputs NaN-poisoned before the
 * launch, so an element a kernel forgets shows up). Not used in training. */
#include "common.cuh"
#include "gemm.cuh"
#include "encoder.cuh"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "attention.cuh"
#include "swiglu.cuh"
#include "classifier.cuh"
#include "adamw.cuh"

#include <stdlib.h>

/* Device buffers of one check, freed together. */
typedef struct {
    void *p[32];
    int n;
} cuda_chk;

static void *cuda_chk_alloc(cuda_chk *k, size_t bytes)
{
    void *p = NULL;
    if (k->n == 32 || cudaMalloc(&p, bytes ? bytes : 16) != cudaSuccess)
        return NULL;
    cudaMemset(p, 0xff, bytes ? bytes : 16);   /* NaN in fp32, bf16 and fp16 */
    k->p[k->n++] = p;
    return p;
}

static void cuda_chk_free(cuda_chk *k)
{
    cudaDeviceSynchronize();
    for (int i = 0; i < k->n; i++)
        cudaFree(k->p[i]);
    k->n = 0;
}

static __global__ void cuda_chk_to_f32_k(float *dst, const __nv_bfloat16 *b, const __half *h, const float *f, int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        dst[i] = b ? __bfloat162float(b[i]) : h ? __half2float(h[i]) : f[i];
}

static size_t cuda_chk_ct(int prec) { return cuda_prec_bytes((cuda_prec)prec); }

/* Host fp32 -> device buffer of the compute type (or fp32 when ct32). */
static void *cuda_chk_up(cuda_chk *k, int prec, const float *h, size_t n, int ct32)
{
    float *f = (float *)cuda_chk_alloc(k, n * 4);
    if (!f || cudaMemcpy(f, h, n * 4, cudaMemcpyHostToDevice) != cudaSuccess)
        return NULL;
    if (ct32 || cuda_chk_ct(prec) == 4)
        return f;
    void *d = cuda_chk_alloc(k, n * 2);
    if (!d)
        return NULL;
    int rc = prec == CUDA_BF16 ? cuda_convert<__nv_bfloat16>(0, (__nv_bfloat16 *)d, f, (int64_t)n)
                               : cuda_convert<__half>(0, (__half *)d, f, (int64_t)n);
    return rc == ST_OK ? d : NULL;
}

static int cuda_chk_down(cuda_chk *k, int prec, float *h, const void *d, size_t n, int ct32)
{
    int rc = ST_OK;
    float *f = (float *)d;
    if (!ct32 && cuda_chk_ct(prec) == 2) {
        f = (float *)cuda_chk_alloc(k, n * 4);
        if (!f)
            return util_fail(ST_SOFTWARE, "cuda check: out of device memory");
        cuda_chk_to_f32_k<<<cuda_blocks((int64_t)n, 256), 256>>>(
            f, prec == CUDA_BF16 ? (const __nv_bfloat16 *)d : NULL, prec == CUDA_FP16 ? (const __half *)d : NULL,
            NULL, (int64_t)n);
        CU_LAUNCHED();
    }
    CU_TRY(cudaMemcpy(h, f, n * 4, cudaMemcpyDeviceToHost));
exit:
    return rc;
}

#define CUDA_CHK_NN(x)                                                                                 \
    do {                                                                                               \
        if (!(x)) {                                                                                    \
            rc = util_fail(ST_SOFTWARE, "cuda check: out of device memory at %s:%d", __FILE__, __LINE__); \
            goto exit;                                                                                 \
        }                                                                                              \
    } while (0)

#define CUDA_CHK_T(prec, f, ...)                                                                       \
    ((prec) == CUDA_BF16 ? f<__nv_bfloat16>(__VA_ARGS__) : (prec) == CUDA_FP16 ? f<__half>(__VA_ARGS__) \
                                                                                : f<float>(__VA_ARGS__))

template <typename T>
static int cuda_chk_rmsnorm_t(void *out, float *rs, const float *x, const float *w, float *dx, void *dxct, float *dw,
                              double *part, const float *dy, int64_t N, int64_t D, double eps)
{
    int rc = cuda_rmsnorm_forward<T>(0, (T *)out, rs, x, w, N, D, eps);
    if (rc == ST_OK)
        rc = cuda_rmsnorm_backward<T>(0, dx, (T *)dxct, dw, part, dy, x, rs, w, N, D, 7, 1);
    return rc;
}

extern "C" int cuda_check_rmsnorm(int prec, int64_t N, int64_t D, double eps, const float *x, const float *w,
                                  const float *dy, float *out, float *rs, float *dx, float *dw)
{
    cuda_chk k = {{0}, 0};
    int rc = ST_OK;
    size_t nd = (size_t)(N * D);
    float *dxh = (float *)cuda_chk_up(&k, prec, x, nd, 1), *dwh = (float *)cuda_chk_up(&k, prec, w, (size_t)D, 1);
    float *dyh = (float *)cuda_chk_up(&k, prec, dy, nd, 1), *ddx = (float *)cuda_chk_up(&k, prec, dx, nd, 1);
    float *ddw = (float *)cuda_chk_up(&k, prec, dw, (size_t)D, 1), *drs = (float *)cuda_chk_alloc(&k, (size_t)N * 4);
    void *dout = cuda_chk_alloc(&k, nd * cuda_chk_ct(prec)), *dxct = cuda_chk_alloc(&k, nd * cuda_chk_ct(prec));
    double *part = (double *)cuda_chk_alloc(&k, (size_t)((N + 6) / 7 * D) * 8);
    CUDA_CHK_NN(dxh && dwh && dyh && ddx && ddw && drs && dout && dxct && part);
    CU_OK(CUDA_CHK_T(prec, cuda_chk_rmsnorm_t, dout, drs, dxh, dwh, ddx, dxct, ddw, part, dyh, N, D, eps));
    CU_OK(cuda_chk_down(&k, prec, out, dout, nd, 0));
    CU_OK(cuda_chk_down(&k, prec, rs, drs, (size_t)N, 1));
    CU_OK(cuda_chk_down(&k, prec, dx, ddx, nd, 1));
    CU_OK(cuda_chk_down(&k, prec, dw, ddw, (size_t)D, 1));
exit:
    cuda_chk_free(&k);
    return rc;
}

template <typename T>
static int cuda_chk_rope_t(void *q, void *k, void *v, void *qkv, void *back, const float *cs, const float *sn,
                           const cuda_dims *d)
{
    int rc = cuda_rope_forward<T>(0, (T *)q, (T *)k, (T *)v, (const T *)qkv, cs, sn, d);
    if (rc == ST_OK)
        rc = cuda_rope_backward<T>(0, (T *)back, (const T *)q, (const T *)k, (const T *)v, cs, sn, d);
    return rc;
}

extern "C" int cuda_check_rope(int prec, const model_shape *s, int64_t B, const float *qkv, float *q, float *k,
                               float *v, float *back)
{
    cuda_chk c = {{0}, 0};
    cuda_dims d;
    int rc = ST_OK;
    cuda_dims_init(&d, s, B);
    int64_t half = d.hd / 2;
    size_t ct = cuda_chk_ct(prec), nq = (size_t)(d.N * d.qd), nk = (size_t)(d.N * d.kvd), nr = (size_t)(d.N * d.qkvd);
    float *cs = (float *)malloc((size_t)(d.T * half) * 4), *sn = (float *)malloc((size_t)(d.T * half) * 4);
    void *dq = cuda_chk_alloc(&c, nq * ct), *dk = cuda_chk_alloc(&c, nk * ct), *dv = cuda_chk_alloc(&c, nk * ct);
    void *dqkv = cuda_chk_up(&c, prec, qkv, nr, 0), *dback = cuda_chk_alloc(&c, nr * ct);
    float *dcs = NULL, *dsn = NULL;
    CUDA_CHK_NN(cs && sn && dq && dk && dv && dqkv && dback);
    for (int64_t t = 0; t < d.T; t++)
        for (int64_t i = 0; i < half; i++) {
            double inv = pow(s->rope_theta, -(double)(2 * i) / (double)s->head_dim);
            cs[t * half + i] = (float)cos((double)t * inv);
            sn[t * half + i] = (float)sin((double)t * inv);
        }
    dcs = (float *)cuda_chk_up(&c, prec, cs, (size_t)(d.T * half), 1);
    dsn = (float *)cuda_chk_up(&c, prec, sn, (size_t)(d.T * half), 1);
    CUDA_CHK_NN(dcs && dsn);
    CU_OK(CUDA_CHK_T(prec, cuda_chk_rope_t, dq, dk, dv, dqkv, dback, dcs, dsn, &d));
    CU_OK(cuda_chk_down(&c, prec, q, dq, nq, 0));
    CU_OK(cuda_chk_down(&c, prec, k, dk, nk, 0));
    CU_OK(cuda_chk_down(&c, prec, v, dv, nk, 0));
    CU_OK(cuda_chk_down(&c, prec, back, dback, nr, 0));
exit:
    free(cs);
    free(sn);
    cuda_chk_free(&c);
    return rc;
}

template <typename T>
static int cuda_chk_attention_t(const cuda_dims *d, const cuda_attn_scratch *w, void *ao, float *lse, const void *q,
                                const void *k, const void *v, const void *dao)
{
    int rc = cuda_attention_forward<T>(0, d, (T *)ao, lse, (const T *)q, (const T *)k, (const T *)v);
    if (rc == ST_OK)
        rc = cuda_attention_backward<T>(0, d, w, (const T *)dao, (const T *)ao, lse, (const T *)q, (const T *)k,
                                        (const T *)v);
    return rc;
}

extern "C" int cuda_check_attention(int prec, const model_shape *s, int64_t B, const float *q, const float *k,
                                    const float *v, const float *dao, float *ao, float *lse, float *dq, float *dk,
                                    float *dv)
{
    cuda_chk c = {{0}, 0};
    cuda_dims d;
    int rc = ST_OK;
    cuda_dims_init(&d, s, B);
    size_t ct = cuda_chk_ct(prec), nq = (size_t)(d.N * d.qd), nk = (size_t)(d.N * d.kvd), nr = (size_t)(d.B * d.H * d.T);
    void *dq_in = cuda_chk_up(&c, prec, q, nq, 0), *dk_in = cuda_chk_up(&c, prec, k, nk, 0);
    void *dv_in = cuda_chk_up(&c, prec, v, nk, 0), *ddao = cuda_chk_up(&c, prec, dao, nq, 0);
    void *dao_out = cuda_chk_alloc(&c, nq * ct);
    float *dlse = (float *)cuda_chk_alloc(&c, nr * 4), *delta = (float *)cuda_chk_alloc(&c, nr * 4);
    cuda_attn_scratch w = {cuda_chk_alloc(&c, nq * ct), cuda_chk_alloc(&c, nk * ct), cuda_chk_alloc(&c, nk * ct), delta};
    CUDA_CHK_NN(dq_in && dk_in && dv_in && ddao && dao_out && dlse && delta && w.dq && w.dk && w.dv);
    CU_OK(CUDA_CHK_T(prec, cuda_chk_attention_t, &d, &w, dao_out, dlse, dq_in, dk_in, dv_in, ddao));
    CU_OK(cuda_chk_down(&c, prec, ao, dao_out, nq, 0));
    CU_OK(cuda_chk_down(&c, prec, lse, dlse, nr, 1));
    CU_OK(cuda_chk_down(&c, prec, dq, w.dq, nq, 0));
    CU_OK(cuda_chk_down(&c, prec, dk, w.dk, nk, 0));
    CU_OK(cuda_chk_down(&c, prec, dv, w.dv, nk, 0));
exit:
    cuda_chk_free(&c);
    return rc;
}

/* The forward into h; the backward into dgu, and again with h into hb and
 * dgub (the rerun's fused form). */
template <typename T>
static int cuda_chk_swiglu_t(void *h, void *dgu, void *hb, void *dgub, const void *gu, const float *dh, int64_t N,
                             int64_t F)
{
    int rc = cuda_swiglu_forward<T>(0, (T *)h, (const T *)gu, N, F);
    if (rc == ST_OK)
        rc = cuda_swiglu_backward<T>(0, (T *)dgu, (T *)NULL, dh, (const T *)gu, N, F);
    if (rc == ST_OK)
        rc = cuda_swiglu_backward<T>(0, (T *)dgub, (T *)hb, dh, (const T *)gu, N, F);
    return rc;
}

extern "C" int cuda_check_swiglu(int prec, int64_t N, int64_t F, const float *gu, const float *dh, float *h,
                                 float *dgu, float *hb, float *dgub)
{
    cuda_chk c = {{0}, 0};
    int rc = ST_OK;
    size_t n = (size_t)(N * F), ct = cuda_chk_ct(prec);
    void *dgu_in = cuda_chk_up(&c, prec, gu, 2 * n, 0), *dh_ = cuda_chk_up(&c, prec, dh, n, 1);
    void *dhh = cuda_chk_alloc(&c, n * ct), *ddgu = cuda_chk_alloc(&c, 2 * n * ct);
    void *dhb = cuda_chk_alloc(&c, n * ct), *ddgub = cuda_chk_alloc(&c, 2 * n * ct);
    CUDA_CHK_NN(dgu_in && dh_ && dhh && ddgu && dhb && ddgub);
    CU_OK(CUDA_CHK_T(prec, cuda_chk_swiglu_t, dhh, ddgu, dhb, ddgub, dgu_in, (const float *)dh_, N, F));
    CU_OK(cuda_chk_down(&c, prec, h, dhh, n, 0));
    CU_OK(cuda_chk_down(&c, prec, dgu, ddgu, 2 * n, 0));
    CU_OK(cuda_chk_down(&c, prec, hb, dhb, n, 0));
    CU_OK(cuda_chk_down(&c, prec, dgub, ddgub, 2 * n, 0));
exit:
    cuda_chk_free(&c);
    return rc;
}

template <typename T>
static int cuda_chk_ce_t(double *rowloss, void *dz, const float *z, const int32_t *tok, int64_t N, int64_t T_,
                         int64_t V, float gs, double *acc)
{
    int rc = cuda_crossentropy<T>(0, rowloss, (T *)dz, z, tok, 0, N, T_, V, gs, 1);
    if (rc == ST_OK)
        rc = cuda_loss_sum(0, acc, rowloss, N);
    return rc;
}

extern "C" int cuda_check_crossentropy(int prec, int64_t B, int64_t T, int64_t V, const float *z,
                                       const int32_t *tokens, float grad_scale, double *rowloss, double *loss_sum,
                                       float *dz)
{
    cuda_chk c = {{0}, 0};
    int rc = ST_OK;
    size_t N = (size_t)(B * T), n = N * (size_t)V;
    float *dz_in = (float *)cuda_chk_up(&c, prec, z, n, 1);
    void *ddz = cuda_chk_alloc(&c, n * cuda_chk_ct(prec));
    int32_t *dtok = (int32_t *)cuda_chk_alloc(&c, (size_t)(B * (T + 1)) * 4);
    double *drow = (double *)cuda_chk_alloc(&c, N * 8), *acc = (double *)cuda_chk_alloc(&c, 8);
    CUDA_CHK_NN(dz_in && ddz && dtok && drow && acc);
    CU_TRY(cudaMemcpy(dtok, tokens, (size_t)(B * (T + 1)) * 4, cudaMemcpyHostToDevice));
    CU_TRY(cudaMemset(acc, 0, 8));
    CU_OK(CUDA_CHK_T(prec, cuda_chk_ce_t, drow, ddz, dz_in, dtok, (int64_t)N, T, V, grad_scale, acc));
    CU_TRY(cudaMemcpy(rowloss, drow, N * 8, cudaMemcpyDeviceToHost));
    CU_TRY(cudaMemcpy(loss_sum, acc, 8, cudaMemcpyDeviceToHost));
    CU_OK(cuda_chk_down(&c, prec, dz, ddz, n, 0));
exit:
    cuda_chk_free(&c);
    return rc;
}

extern "C" int cuda_check_encoder(int64_t B, int64_t T, int64_t D, int64_t V, const float *emb, const int32_t *tokens,
                                  const float *dres, float *out, float *gemb)
{
    cuda_chk c = {{0}, 0};
    int rc = ST_OK;
    size_t N = (size_t)(B * T);
    float *demb = (float *)cuda_chk_up(&c, 0, emb, (size_t)(V * D), 1);
    float *dres_ = (float *)cuda_chk_up(&c, 0, dres, N * (size_t)D, 1);
    float *dg = (float *)cuda_chk_up(&c, 0, gemb, (size_t)(V * D), 1);
    float *dout = (float *)cuda_chk_alloc(&c, N * (size_t)D * 4);
    int32_t *dtok = (int32_t *)cuda_chk_alloc(&c, (size_t)(B * (T + 1)) * 4);
    int32_t *didx = (int32_t *)cuda_chk_alloc(&c, (3 * N + 2) * 4);
    int32_t *idx = (int32_t *)malloc((3 * N + 2) * 4), *cnt = (int32_t *)malloc((size_t)V * 4);
    int64_t U = 0;
    CUDA_CHK_NN(demb && dres_ && dg && dout && dtok && didx && idx && cnt);
    U = cuda_embed_index(tokens, B, T, T + 1, V, cnt, idx);
    CU_TRY(cudaMemcpy(dtok, tokens, (size_t)(B * (T + 1)) * 4, cudaMemcpyHostToDevice));
    CU_TRY(cudaMemcpy(didx, idx, (3 * N + 2) * 4, cudaMemcpyHostToDevice));
    CU_OK(cuda_encoder_forward(0, dout, demb, dtok, (int64_t)N, T, T + 1, D));
    CU_OK(cuda_encoder_backward(0, dg, dres_, didx, U, D));
    CU_TRY(cudaMemcpy(out, dout, N * (size_t)D * 4, cudaMemcpyDeviceToHost));
    CU_TRY(cudaMemcpy(gemb, dg, (size_t)(V * D) * 4, cudaMemcpyDeviceToHost));
exit:
    free(idx);
    free(cnt);
    cuda_chk_free(&c);
    return rc;
}

/* n fp32 values at element skew of a fresh device buffer. */
static float *cuda_chk_up_at(cuda_chk *k, const float *h, size_t n, int skew)
{
    float *f = (float *)cuda_chk_alloc(k, (n + (size_t)skew) * 4);
    if (!f || cudaMemcpy(f + skew, h, n * 4, cudaMemcpyHostToDevice) != cudaSuccess)
        return NULL;
    return f + skew;
}

extern "C" int cuda_check_adamw(int prec, const model_layout *L, const optim_hparams *h, double lr, double clip,
                                int64_t step, float *params, const float *g, float *m, float *v, float *work,
                                int skew_pgw, int skew_mv)
{
    cuda_chk c = {{0}, 0};
    int rc = ST_OK;
    size_t n = L->n_floats, ct = cuda_chk_ct(prec);
    cuda_adamw_seg *seg = (cuda_adamw_seg *)malloc((size_t)(L->n_params + 1) * sizeof *seg);
    int nseg = seg ? cuda_adamw_segments(L, 0, n, seg, L->n_params + 1) : -1;
    float *dp = cuda_chk_up_at(&c, params, n, skew_pgw), *dg = cuda_chk_up_at(&c, g, n, skew_pgw);
    float *dm = cuda_chk_up_at(&c, m, n, skew_mv), *dv = cuda_chk_up_at(&c, v, n, skew_mv);
    char *dw0 = (char *)cuda_chk_alloc(&c, (n + (size_t)skew_pgw) * ct);
    void *dw = dw0 ? dw0 + (size_t)skew_pgw * ct : NULL;
    cuda_adamw_seg *dseg = (cuda_adamw_seg *)cuda_chk_alloc(&c, (size_t)(nseg > 0 ? nseg : 1) * sizeof *seg);
    elem_adamw_k k = optim_adamw_consts(h, lr, clip, step);
    CUDA_CHK_NN(seg && nseg > 0 && dp && dg && dm && dv && dw && dseg);
    CU_TRY(cudaMemcpy(dseg, seg, (size_t)nseg * sizeof *seg, cudaMemcpyHostToDevice));
    if (prec == CUDA_BF16)
        CU_OK(cuda_adamw<__nv_bfloat16>(0, dp, (__nv_bfloat16 *)dw, dg, dm, dv, dseg, nseg, (int64_t)n, &k, lr,
                                        h->weight_decay));
    else if (prec == CUDA_FP16)
        CU_OK(cuda_adamw<__half>(0, dp, (__half *)dw, dg, dm, dv, dseg, nseg, (int64_t)n, &k, lr, h->weight_decay));
    else
        CU_OK(cuda_adamw<float>(0, dp, (float *)dw, dg, dm, dv, dseg, nseg, (int64_t)n, &k, lr, h->weight_decay));
    CU_OK(cuda_chk_down(&c, prec, params, dp, n, 1));
    CU_OK(cuda_chk_down(&c, prec, m, dm, n, 1));
    CU_OK(cuda_chk_down(&c, prec, v, dv, n, 1));
    CU_OK(cuda_chk_down(&c, prec, work, dw, n, 0));
exit:
    free(seg);
    cuda_chk_free(&c);
    return rc;
}

extern "C" int cuda_check_sumsq(const float *g, int64_t n, double *out)
{
    cuda_chk c = {{0}, 0};
    int rc = ST_OK;
    float *dg = (float *)cuda_chk_up(&c, 0, g, (size_t)n, 1);
    double *part = (double *)cuda_chk_alloc(&c, (size_t)(n / CUDA_SUMSQ_BLOCK + 1) * 8);
    double *dout = (double *)cuda_chk_alloc(&c, 8);
    CUDA_CHK_NN(dg && part && dout);
    CU_OK(cuda_sumsq(0, dout, part, dg, n));
    CU_TRY(cudaMemcpy(out, dout, 8, cudaMemcpyDeviceToHost));
exit:
    cuda_chk_free(&c);
    return rc;
}

extern "C" int cuda_check_gemm(int prec, const model_shape *s, int64_t B, int id, int64_t rows, const float *A,
                               size_t na, const float *Bm, size_t nb, float *C, size_t nc)
{
    cuda_chk c = {{0}, 0};
    cuda_gemm_ctx *x = (cuda_gemm_ctx *)calloc(1, sizeof *x);
    cuda_dims d;
    char why[256];
    int rc = ST_OK;
    cuda_dims_init(&d, s, B);
    cuda_gemm g = cuda_gemm_plan(&d, id, rows);
    void *dA = cuda_chk_up(&c, prec, A, na, 0), *dB = cuda_chk_up(&c, prec, Bm, nb, 0);
    void *dC = cuda_chk_up(&c, prec, C, nc, g.out_f32);
    CUDA_CHK_NN(x && dA && dB && dC);
    if ((rc = cuda_gemm_init(x, 0, (cuda_prec)prec, why, sizeof why)) != ST_OK) {
        rc = util_fail(rc, "cuda check: %s", why);
        goto exit;
    }
    CU_OK(cuda_gemm_run(x, &g, dA, dB, dC, dC));
    CU_OK(cuda_chk_down(&c, prec, C, dC, nc, g.out_f32));
exit:
    if (x)
        cuda_gemm_destroy(x);
    free(x);
    cuda_chk_free(&c);
    return rc;
}
