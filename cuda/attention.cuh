/* Causal attention with GQA, first version: batched cuBLASLt products over
 * (sequence, kv head) with the group's query heads stacked (cuda/plan.h),
 * and a causal softmax kernel. Forward keeps only each row's max and
 * 1/sum; backward recomputes the probabilities bit for bit from them, so
 * saved memory is linear in the layers, not T^2 per layer. */
#ifndef SPOTRAIN_CUDA_ATTENTION_CUH
#define SPOTRAIN_CUDA_ATTENTION_CUH

#include "common.cuh"
#include "gemm.cuh"
#include "rope.cuh"

enum { CUDA_SOFTMAX_THREADS = 256 };

/* Row r of S (T wide) belongs to query position r % T; columns after it are
 * masked. P = exp(s - max) * (1/sum), as the CPU backend computes it;
 * recompute = 1 takes max and 1/sum from the forward instead of reducing. */
template <typename T>
static __global__ void cuda_softmax_forward_k(T *P, float *smax, float *sinv, const float *S, int64_t T_, int recompute)
{
    __shared__ float shf[32];
    int64_t r = blockIdx.x, t = r % T_;
    const float *s = S + r * T_;
    T *p = P + r * T_;
    float mx, inv;
    if (recompute) {
        mx = smax[r];
        inv = sinv[r];
    } else {
        mx = -INFINITY;
        for (int64_t u = threadIdx.x; u <= t; u += blockDim.x)
            mx = fmaxf(mx, s[u]);
        mx = cuda_block_max(mx, shf);
        float sum = 0.0f;
        for (int64_t u = threadIdx.x; u <= t; u += blockDim.x)
            sum += elem_exp(s[u] - mx);
        sum = cuda_block_sum(sum, shf);
        inv = 1.0f / sum;
        if (threadIdx.x == 0) {
            smax[r] = mx;
            sinv[r] = inv;
        }
    }
    for (int64_t u = threadIdx.x; u < T_; u += blockDim.x)
        p[u] = cuda_st<T>(u <= t ? elem_exp(s[u] - mx) * inv : 0.0f);
}

/* dS = P (dP - sum(P dP)) scale, written over P (each thread reads its own
 * elements before writing them; the sum's barrier orders the rest). */
template <typename T> __global__ void cuda_softmax_backward_k(T *P, const float *dP, int64_t T_, float scale)
{
    __shared__ float shf[32];
    int64_t r = blockIdx.x;
    T *p = P + r * T_;
    const float *d = dP + r * T_;
    float dot = 0.0f;
    for (int64_t u = threadIdx.x; u < T_; u += blockDim.x)
        dot += cuda_f(p[u]) * d[u];
    dot = cuda_block_sum(dot, shf);
    for (int64_t u = threadIdx.x; u < T_; u += blockDim.x) {
        float pv = cuda_f(p[u]);
        p[u] = cuda_st<T>(pv * (d[u] - dot) * scale);
    }
}

/* Scratch the attention products use, from the arena. */
typedef struct {
    float *S;       /* [B,H,T,T] scores, then dP */
    void *P;        /* [B,H,T,T] probabilities, then dS */
    void *O;        /* [B,H,T,hd] output per head, then dO */
    void *dq, *dk, *dv;
} cuda_attn_scratch;

/* q [B,H,T,hd], k, v [B,KV,T,hd] -> ao rows [N, qd]; saves max and 1/sum. */
template <typename T>
static int cuda_attention_forward(cuda_gemm_ctx *x, const cuda_dims *d, const cuda_attn_scratch *w, T *ao,
                                  float *smax, float *sinv, const T *q, const T *k, const T *v)
{
    int rc = ST_OK;
    cuda_gemm g = cuda_gemm_plan(d, CUDA_G_ATT_S, 0);
    CU_OK(cuda_gemm_run(x, &g, q, k, NULL, w->S));
    cuda_softmax_forward_k<T><<<(unsigned)(d->B * d->H * d->T), CUDA_SOFTMAX_THREADS, 0, x->stream>>>(
        (T *)w->P, smax, sinv, w->S, d->T, 0);
    CU_LAUNCHED();
    g = cuda_gemm_plan(d, CUDA_G_ATT_O, 0);
    CU_OK(cuda_gemm_run(x, &g, w->P, v, NULL, w->O));
    CU_OK(cuda_permute<T>(x->stream, ao, (const T *)w->O, d, d->H, 0));
exit:
    return rc;
}

/* dao rows [N, qd] -> dq, dk, dv in w (head layouts). */
template <typename T>
static int cuda_attention_backward(cuda_gemm_ctx *x, const cuda_dims *d, const cuda_attn_scratch *w, const T *dao,
                                   const float *smax, const float *sinv, const T *q, const T *k, const T *v)
{
    int rc = ST_OK;
    unsigned rows = (unsigned)(d->B * d->H * d->T);
    cuda_gemm g = cuda_gemm_plan(d, CUDA_G_ATT_S, 0);
    CU_OK(cuda_permute<T>(x->stream, (T *)w->O, dao, d, d->H, 1));
    CU_OK(cuda_gemm_run(x, &g, q, k, NULL, w->S));
    cuda_softmax_forward_k<T><<<rows, CUDA_SOFTMAX_THREADS, 0, x->stream>>>((T *)w->P, (float *)smax,
                                                                             (float *)sinv, w->S, d->T, 1);
    CU_LAUNCHED();
    g = cuda_gemm_plan(d, CUDA_G_ATT_DV, 0);
    CU_OK(cuda_gemm_run(x, &g, w->P, w->O, NULL, w->dv));
    g = cuda_gemm_plan(d, CUDA_G_ATT_DP, 0);
    CU_OK(cuda_gemm_run(x, &g, w->O, v, NULL, w->S));
    cuda_softmax_backward_k<T><<<rows, CUDA_SOFTMAX_THREADS, 0, x->stream>>>((T *)w->P, w->S, d->T,
                                                                              (float)(1.0 / sqrt((double)d->hd)));
    CU_LAUNCHED();
    g = cuda_gemm_plan(d, CUDA_G_ATT_DQ, 0);
    CU_OK(cuda_gemm_run(x, &g, w->P, k, NULL, w->dq));
    g = cuda_gemm_plan(d, CUDA_G_ATT_DK, 0);
    CU_OK(cuda_gemm_run(x, &g, w->P, q, NULL, w->dk));
exit:
    return rc;
}

#endif
