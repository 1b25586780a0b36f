/* Token embedding: forward gathers rows of the fp32 master table into the
 * residual stream; backward adds gradient rows into the table's gradient
 * with one thread per column walking the tokens in order, so repeated
 * tokens add up in the CPU backend's order, without atomics. */
#ifndef SPOTRAIN_CUDA_ENCODER_CUH
#define SPOTRAIN_CUDA_ENCODER_CUH

#include "common.cuh"

/* Row n of the micro-batch reads token tokens[(n / T) * stride + n % T]. */
__device__ __forceinline__ int64_t cuda_tok(const int32_t *tokens, int64_t n, int64_t T, int64_t stride, int64_t shift)
{
    return (int64_t)tokens[(n / T) * stride + n % T + shift];
}

static __global__ void cuda_encoder_forward_k(float *out, const float *emb, const int32_t *tokens, int64_t T,
                                       int64_t stride, int64_t D)
{
    int64_t n = blockIdx.y, j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j < D)
        out[n * D + j] = emb[cuda_tok(tokens, n, T, stride, 0) * D + j];
}

static __global__ void cuda_encoder_backward_k(float *gemb, const float *dres, const int32_t *tokens, int64_t N,
                                        int64_t T, int64_t stride, int64_t D)
{
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= D)
        return;
    for (int64_t n = 0; n < N; n++) {
        float *g = gemb + cuda_tok(tokens, n, T, stride, 0) * D + j;
        *g += dres[n * D + j];
    }
}

static int cuda_encoder_forward(cudaStream_t s, float *out, const float *emb, const int32_t *tokens, int64_t N,
                                int64_t T, int64_t stride, int64_t D)
{
    int rc = ST_OK;
    cuda_encoder_forward_k<<<dim3(cuda_blocks(D, 256), (unsigned)N), 256, 0, s>>>(out, emb, tokens, T, stride, D);
    CU_LAUNCHED();
exit:
    return rc;
}

static int cuda_encoder_backward(cudaStream_t s, float *gemb, const float *dres, const int32_t *tokens, int64_t N,
                                 int64_t T, int64_t stride, int64_t D)
{
    int rc = ST_OK;
    cuda_encoder_backward_k<<<cuda_blocks(D, 64), 64, 0, s>>>(gemb, dres, tokens, N, T, stride, D);
    CU_LAUNCHED();
exit:
    return rc;
}

#endif
