/* The optimizer's device side: AdamW over the rank's range (elem_adamw,
 * the per-tensor decay from the segment table) writing master, m, v and
 * the compute-precision working copy in one pass; the deterministic sum of
 * squares of the gradients (fixed blocks, then the block sums in order);
 * and the master -> working copy conversion used after a load. */
#ifndef SPOTRAIN_CUDA_ADAMW_CUH
#define SPOTRAIN_CUDA_ADAMW_CUH

#include "common.cuh"

template <typename T>
static __global__ void cuda_adamw_k(float *p, T *work, const float *g, float *m, float *v, const cuda_adamw_seg *seg,
                             int nseg, int64_t n, elem_adamw_k k, double lr, double wd)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    int a = 0, b = nseg - 1;   /* the last segment starting at or before i */
    while (a < b) {
        int mid = (a + b + 1) / 2;
        if (seg[mid].off <= i)
            a = mid;
        else
            b = mid - 1;
    }
    double keep = 1.0 - lr * (seg[a].decay ? wd : 0.0);
    float pi = p[i], mi = m[i], vi = v[i];
    elem_adamw(&k, keep, &pi, g[i], &mi, &vi);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
    if (work)
        work[i] = cuda_st<T>(pi);
}

enum { CUDA_SUMSQ_BLOCK = 8192, CUDA_SUMSQ_THREADS = 256 };

static __global__ void cuda_sumsq_part_k(double *part, const float *g, int64_t n)
{
    __shared__ double sh[32];
    int64_t lo = (int64_t)blockIdx.x * CUDA_SUMSQ_BLOCK, hi = lo + CUDA_SUMSQ_BLOCK < n ? lo + CUDA_SUMSQ_BLOCK : n;
    double s = 0.0;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x)
        s += (double)g[i] * (double)g[i];
    s = cuda_block_sum(s, sh);
    if (threadIdx.x == 0)
        part[blockIdx.x] = s;
}

static __global__ void __launch_bounds__(1024) cuda_sumsq_total_k(double *out, const double *part, int64_t nparts)
{
    __shared__ double sh[32];
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < nparts; i += blockDim.x)
        s += part[i];
    s = cuda_block_sum(s, sh);
    if (threadIdx.x == 0)
        out[0] = s;
}

template <typename T> __global__ void cuda_convert_k(T *dst, const float *src, int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        dst[i] = cuda_st<T>(src[i]);
}

template <typename T>
static int cuda_adamw(cudaStream_t s, float *p, T *work, const float *g, float *m, float *v,
                      const cuda_adamw_seg *seg, int nseg, int64_t n, const elem_adamw_k *k, double lr, double wd)
{
    int rc = ST_OK, kp_ = cuda_kp_enter(s, CUDA_K_OPT);
    if (n > 0) {
        cuda_adamw_k<T><<<cuda_blocks(n, 256), 256, 0, s>>>(p, work, g, m, v, seg, nseg, n, *k, lr, wd);
        CU_LAUNCHED();
    }
exit:
    cuda_kp_leave(s, kp_);
    return rc;
}

/* part holds ceil(n / CUDA_SUMSQ_BLOCK) doubles; out one. */
static int cuda_sumsq(cudaStream_t s, double *out, double *part, const float *g, int64_t n)
{
    int rc = ST_OK, kp_ = cuda_kp_enter(s, CUDA_K_OPT);
    unsigned nb = cuda_blocks(n, CUDA_SUMSQ_BLOCK);
    if (nb > 0) {
        cuda_sumsq_part_k<<<nb, CUDA_SUMSQ_THREADS, 0, s>>>(part, g, n);
        CU_LAUNCHED();
    }
    cuda_sumsq_total_k<<<1, 1024, 0, s>>>(out, part, (int64_t)nb);
    CU_LAUNCHED();
exit:
    cuda_kp_leave(s, kp_);
    return rc;
}

template <typename T> static int cuda_convert(cudaStream_t s, T *dst, const float *src, int64_t n)
{
    int rc = ST_OK, kp_ = cuda_kp_enter(s, CUDA_K_OPT);
    if (n > 0) {
        cuda_convert_k<T><<<cuda_blocks(n, 256), 256, 0, s>>>(dst, src, n);
        CU_LAUNCHED();
    }
exit:
    cuda_kp_leave(s, kp_);
    return rc;
}

#endif
