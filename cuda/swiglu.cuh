/* SwiGLU, elementwise over the fused gate | up rows: forward h = silu(g) u,
 * backward through elem_swiglu_bwd (the CPU backend's math). Each thread
 * takes 16 bytes of the compute type (4 fp32, 8 bf16/fp16) with 128-bit
 * loads and stores when the rows allow (ffn_dim a multiple of that, every
 * pointer 16-byte aligned), element by element otherwise: the same values
 * either way. Its neighbours are cuBLASLt products (no SwiGLU epilogue), so
 * the forward stays a kernel of its own that reads and writes each element
 * once. The backward can also write h (elem_swiglu of the g and u it has
 * loaded: the forward's bits), which under recompute takes the place of
 * the rerun's forward kernel: per token and layer, 2-byte types, the rerun
 * forward (read gu 4F, write h 2F) and the backward (read gu 4F and fp32
 * dh 4F, write dgu 4F) move 18F bytes; fused, 14F (the backward plus h). */
#ifndef SPOTRAIN_CUDA_SWIGLU_CUH
#define SPOTRAIN_CUDA_SWIGLU_CUH

#include "common.cuh"

template <typename T> __global__ void cuda_swiglu_forward_k(T *h, const T *gu, int64_t N, int64_t F, int vec)
{
    constexpr int E = cuda_vec_n<T>::n;
    int64_t e0 = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * E;
    if (e0 >= N * F)
        return;
    if (vec) {
        int64_t n = e0 / F, j = e0 % F;
        T g[E], u[E], o[E];
        cuda_ld128<E>(g, gu + n * 2 * F + j);
        cuda_ld128<E>(u, gu + n * 2 * F + F + j);
CUDA_UNROLL
        for (int k = 0; k < E; k++)
            o[k] = h ? cuda_st<T>(elem_swiglu(cuda_f(g[k]), cuda_f(u[k]))) : g[k];
        cuda_st128<E>(h + e0, o);
        return;
    }
    for (int64_t i = e0; i < e0 + E && i < N * F; i++) {
        int64_t n = i / F, j = i % F;
        const T *g = gu + n * 2 * F;
        h[i] = cuda_st<T>(elem_swiglu(cuda_f(g[j]), cuda_f(g[F + j])));
    }
}

template <typename T>
__global__ void cuda_swiglu_backward_k(T *dgu, T *h, const float *dh, const T *gu, int64_t N, int64_t F, int vec)
{
    constexpr int E = cuda_vec_n<T>::n;
    int64_t e0 = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * E;
    if (e0 >= N * F)
        return;
    if (vec) {
        int64_t n = e0 / F, j = e0 % F;
        T g[E], u[E], dg[E], du[E], o[E];
        float d[E];
        cuda_ld128<E>(g, gu + n * 2 * F + j);
        cuda_ld128<E>(u, gu + n * 2 * F + F + j);
        cuda_ld128<E>(d, dh + e0);
CUDA_UNROLL
        for (int k = 0; k < E; k++) {
            float a, b;
            elem_swiglu_bwd(cuda_f(g[k]), cuda_f(u[k]), d[k], &a, &b);
            dg[k] = cuda_st<T>(a);
            du[k] = cuda_st<T>(b);
            o[k] = h ? cuda_st<T>(elem_swiglu(cuda_f(g[k]), cuda_f(u[k]))) : g[k];
        }
        cuda_st128<E>(dgu + n * 2 * F + j, dg);
        cuda_st128<E>(dgu + n * 2 * F + F + j, du);
        if (h)
            cuda_st128<E>(h + e0, o);
        return;
    }
    for (int64_t i = e0; i < e0 + E && i < N * F; i++) {
        int64_t n = i / F, j = i % F;
        const T *g = gu + n * 2 * F;
        float dg, du;
        elem_swiglu_bwd(cuda_f(g[j]), cuda_f(g[F + j]), dh[i], &dg, &du);
        dgu[n * 2 * F + j] = cuda_st<T>(dg);
        dgu[n * 2 * F + F + j] = cuda_st<T>(du);
        if (h)
            h[i] = cuda_st<T>(elem_swiglu(cuda_f(g[j]), cuda_f(g[F + j])));
    }
}

/* 16-byte vectors when F is a whole number of them and the bases align
 * (d may be NULL: not written). */
template <typename T>
static int cuda_swiglu_vec(int64_t F, const void *a, const void *b, const void *c, const void *d)
{
    return F % cuda_vec_n<T>::n == 0 && cuda_aligned16(a) && cuda_aligned16(b) && (!c || cuda_aligned16(c)) &&
           (!d || cuda_aligned16(d));
}

template <typename T> static int cuda_swiglu_forward(cudaStream_t s, T *h, const T *gu, int64_t N, int64_t F)
{
    int rc = ST_OK, kp_ = cuda_kp_enter(s, CUDA_K_ELEM);
    int vec = cuda_swiglu_vec<T>(F, h, gu, NULL, NULL);
    cuda_swiglu_forward_k<T><<<cuda_blocks(N * F, 256 * cuda_vec_n<T>::n), 256, 0, s>>>(h, gu, N, F, vec);
    CU_LAUNCHED();
exit:
    cuda_kp_leave(s, kp_);
    return rc;
}

/* h: also the forward's output (NULL: not). */
template <typename T>
static int cuda_swiglu_backward(cudaStream_t s, T *dgu, T *h, const float *dh, const T *gu, int64_t N, int64_t F)
{
    int rc = ST_OK, kp_ = cuda_kp_enter(s, CUDA_K_ELEM);
    int vec = cuda_swiglu_vec<T>(F, dgu, dh, gu, h);
    cuda_swiglu_backward_k<T><<<cuda_blocks(N * F, 256 * cuda_vec_n<T>::n), 256, 0, s>>>(dgu, h, dh, gu, N, F,
                                                                                          vec);
    CU_LAUNCHED();
exit:
    cuda_kp_leave(s, kp_);
    return rc;
}

#endif
