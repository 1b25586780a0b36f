/* SwiGLU, elementwise over the fused gate | up rows: forward h = silu(g) u,
 * backward through elem_swiglu_bwd (the CPU backend's math). */
#ifndef SPOTRAIN_CUDA_SWIGLU_CUH
#define SPOTRAIN_CUDA_SWIGLU_CUH

#include "common.cuh"

template <typename T> __global__ void cuda_swiglu_forward_k(T *h, const T *gu, int64_t N, int64_t F)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * F)
        return;
    int64_t n = i / F, j = i % F;
    const T *g = gu + n * 2 * F;
    h[i] = cuda_st<T>(elem_swiglu(cuda_f(g[j]), cuda_f(g[F + j])));
}

template <typename T> __global__ void cuda_swiglu_backward_k(T *dgu, const float *dh, const T *gu, int64_t N, int64_t F)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * F)
        return;
    int64_t n = i / F, j = i % F;
    const T *g = gu + n * 2 * F;
    float dg, du;
    elem_swiglu_bwd(cuda_f(g[j]), cuda_f(g[F + j]), dh[i], &dg, &du);
    dgu[n * 2 * F + j] = cuda_st<T>(dg);
    dgu[n * 2 * F + F + j] = cuda_st<T>(du);
}

template <typename T> static int cuda_swiglu_forward(cudaStream_t s, T *h, const T *gu, int64_t N, int64_t F)
{
    int rc = ST_OK;
    cuda_swiglu_forward_k<T><<<cuda_blocks(N * F, 256), 256, 0, s>>>(h, gu, N, F);
    CU_LAUNCHED();
exit:
    return rc;
}

template <typename T>
static int cuda_swiglu_backward(cudaStream_t s, T *dgu, const float *dh, const T *gu, int64_t N, int64_t F)
{
    int rc = ST_OK;
    cuda_swiglu_backward_k<T><<<cuda_blocks(N * F, 256), 256, 0, s>>>(dgu, dh, gu, N, F);
    CU_LAUNCHED();
exit:
    return rc;
}

#endif
