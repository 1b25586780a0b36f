/* Classifier + cross-entropy over fixed chunks of rows (never the full
 * [N, vocab] logits): per chunk the lm_head product gives fp32 logits, one
 * block per row turns them into the row's loss and, when training, the
 * scaled dlogits (the CPU backend's formulas); the caller then runs the two
 * backward products of the chunk. Row losses are summed in a fixed order. */
#ifndef SPOTRAIN_CUDA_CLASSIFIER_CUH
#define SPOTRAIN_CUDA_CLASSIFIER_CUH

#include "common.cuh"
#include "encoder.cuh"

enum { CUDA_CE_THREADS = 1024 };

/* Two passes over a row of logits (llm.c's fused classifier): the first
 * keeps, per thread, a running max and the sum of exponentials relative to
 * it (rescaled when the max grows), the block then merges them; the second
 * writes dlogits. */
template <typename T>
static __global__ void __launch_bounds__(CUDA_CE_THREADS)
    cuda_crossentropy_k(double *rowloss, T *dz, const float *z, const int32_t *tokens, int64_t row0, int64_t T_,
                        int64_t V, float grad_scale, int grad)
{
    __shared__ float shf[32];
    __shared__ double shd[32];
    int64_t r = blockIdx.x, n = row0 + r;
    const float *zr = z + r * V;
    int64_t tgt = cuda_tok(tokens, n, T_, T_ + 1, 1);
    float m = -INFINITY;
    double s = 0.0;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        float v = zr[j];
        if (v > m) {
            s = m == -INFINITY ? 0.0 : s * (double)elem_exp(m - v);
            m = v;
        }
        s += (double)elem_exp(v - m);
    }
    float mx = cuda_block_max(m, shf);
    double sum = cuda_block_sum(m == -INFINITY ? 0.0 : s * (double)elem_exp(m - mx), shd);
    if (threadIdx.x == 0)
        rowloss[n] = (double)mx + log(sum) - (double)zr[tgt];
    if (!grad)
        return;
    float k = (float)(1.0 / sum) * grad_scale;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        float e = elem_exp(zr[j] - mx) * k;
        if (j == tgt)
            e -= grad_scale;
        dz[r * V + j] = cuda_st<T>(e);
    }
}

/* acc[0] += sum of rowloss[0..N), one block, fixed order. */
static __global__ void __launch_bounds__(1024) cuda_loss_sum_k(double *acc, const double *rowloss, int64_t N)
{
    __shared__ double sh[32];
    double s = 0.0;
    for (int64_t n = threadIdx.x; n < N; n += blockDim.x)
        s += rowloss[n];
    s = cuda_block_sum(s, sh);
    if (threadIdx.x == 0)
        acc[0] += s;
}

template <typename T>
static int cuda_crossentropy(cudaStream_t s, double *rowloss, T *dz, const float *z, const int32_t *tokens,
                             int64_t row0, int64_t rows, int64_t T_, int64_t V, float grad_scale, int grad)
{
    int rc = ST_OK, kp_ = cuda_kp_enter(s, CUDA_K_CLS);
    cuda_crossentropy_k<T><<<(unsigned)rows, CUDA_CE_THREADS, 0, s>>>(rowloss, dz, z, tokens, row0, T_, V,
                                                                       grad_scale, grad);
    CU_LAUNCHED();
exit:
    cuda_kp_leave(s, kp_);
    return rc;
}

static int cuda_loss_sum(cudaStream_t s, double *acc, const double *rowloss, int64_t N)
{
    int rc = ST_OK, kp_ = cuda_kp_enter(s, CUDA_K_CLS);
    cuda_loss_sum_k<<<1, 1024, 0, s>>>(acc, rowloss, N);
    CU_LAUNCHED();
exit:
    cuda_kp_leave(s, kp_);
    return rc;
}

#endif
