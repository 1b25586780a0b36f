/* The optimizer's device side: AdamW over the rank's range (elem_adamw,
 * the per-tensor decay from the segment table) writing master, m, v and
 * the compute-precision working copy in one pass, 128-bit accesses from
 * the first index where every stream aligns; the deterministic sum of
 * squares of the gradients (fixed blocks, then the block sums in order);
 * and the master -> working copy conversion used after a load. */
#ifndef SPOTRAIN_CUDA_ADAMW_CUH
#define SPOTRAIN_CUDA_ADAMW_CUH

#include "common.cuh"

/* Elements per thread of the vector path: 32 bytes of each fp32 stream
 * (two 128-bit words) and 16 bytes of a 2-byte working copy. */
enum { CUDA_ADAMW_VEC = 8 };

/* The last segment starting at or before i (seg[0].off is 0). */
__device__ __forceinline__ int cuda_adamw_seg_of(const cuda_adamw_seg *seg, int nseg, int64_t i)
{
    int a = 0, b = nseg - 1;
    while (a < b) {
        int mid = (a + b + 1) / 2;
        if (seg[mid].off <= i)
            a = mid;
        else
            b = mid - 1;
    }
    return a;
}

/* Threads [0, nv) take CUDA_ADAMW_VEC elements each from head on (every
 * stream 16-byte aligned there); the threads after them take the head
 * [0, head) and the tail [head + nv E, n) one element each. A vector may
 * straddle two tensors: each element takes its own segment's decay. */
template <typename T>
static __global__ void cuda_adamw_k(float *p, T *work, const float *g, float *m, float *v, const cuda_adamw_seg *seg,
                                    int nseg, int64_t n, int64_t head, int64_t nv, elem_adamw_k k, double lr,
                                    double wd)
{
    constexpr int E = CUDA_ADAMW_VEC;
    int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t < nv) {
        int64_t i0 = head + t * E;
        float pv[E], gv[E], mv[E], vv[E];
        T wv[E];
        cuda_ld128<E>(pv, p + i0);
        cuda_ld128<E>(gv, g + i0);
        cuda_ld128<E>(mv, m + i0);
        cuda_ld128<E>(vv, v + i0);
        int a = cuda_adamw_seg_of(seg, nseg, i0);
CUDA_UNROLL
        for (int e = 0; e < E; e++) {
            while (a + 1 < nseg && seg[a + 1].off <= i0 + e)
                a++;
            double keep = 1.0 - lr * (seg[a].decay ? wd : 0.0);
            elem_adamw(&k, keep, &pv[e], gv[e], &mv[e], &vv[e]);
            wv[e] = cuda_st<T>(pv[e]);
        }
        cuda_st128<E>(p + i0, pv);
        cuda_st128<E>(m + i0, mv);
        cuda_st128<E>(v + i0, vv);
        if (work)
            cuda_st128<E>(work + i0, wv);
        return;
    }
    int64_t j = t - nv, i = j < head ? j : head + nv * E + (j - head);
    if (i >= n)
        return;
    int a = cuda_adamw_seg_of(seg, nseg, i);
    double keep = 1.0 - lr * (seg[a].decay ? wd : 0.0);
    float pi = p[i], mi = m[i], vi = v[i];
    elem_adamw(&k, keep, &pi, g[i], &mi, &vi);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
    if (work)
        work[i] = cuda_st<T>(pi);
}

/* The first index from which every stream is 16-byte aligned, or n when
 * none is below CUDA_ADAMW_VEC (streams at different phases: a ZeRO range
 * of the whole master against the rank's own m and v); all scalar then. */
template <typename T>
static int64_t cuda_adamw_head(const float *p, const T *work, const float *g, const float *m, const float *v,
                               int64_t n)
{
    for (int64_t h = 0; h < CUDA_ADAMW_VEC && h < n; h++)
        if (cuda_aligned16(p + h) && cuda_aligned16(g + h) && cuda_aligned16(m + h) && cuda_aligned16(v + h) &&
            (!work || cuda_aligned16(work + h)))
            return h;
    return n;
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
        int64_t head = cuda_adamw_head<T>(p, work, g, m, v, n), nv = (n - head) / CUDA_ADAMW_VEC;
        int64_t threads = nv + (n - nv * CUDA_ADAMW_VEC);
        cuda_adamw_k<T><<<cuda_blocks(threads, 256), 256, 0, s>>>(p, work, g, m, v, seg, nseg, n, head, nv, *k, lr,
                                                                   wd);
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
