/* RMSNorm forward (one block per row, 128-bit accesses where the row
 * allows) and backward, with the CPU backend's
 * formulas (backend/cpu.c) and elem_rms_scale: sums of squares in double.
 * The weight w is W: fp32, or the 2-byte working copy under bf16/fp16.
 * Backward is one kernel: a block takes a fixed chunk of rows, one row at
 * a time, and writes dx (and its compute-type copy) while it keeps the
 * chunk's weight-gradient partial sums in registers (each thread its own
 * columns, rows in order); a second small kernel adds the chunks' partials
 * in order. No atomics, the same bits every run, and dy and x are read
 * once. Rows wider than CUDA_NORM_COLS x CUDA_NORM_BWD_MAX (8192) take the
 * three-kernel path.
 * The residual adds stay where they are, in the products before the norms
 * (beta = 1 with the fp32 residual as C) and in the backward's accumulate:
 * a kernel reading the residual and the branch output and writing the new
 * residual and the normalised row (llm.c's fused residual + norm) moves
 * the same bytes per token in bf16, 14D (the product writes a 2D branch,
 * the kernel reads 4D + 2D and writes 4D + 2D; today the product reads and
 * writes the 4D residual, the norm reads it and writes 2D), more in fp32
 * (20D against 16D), and would round the branch to bf16 before the add. */
#ifndef SPOTRAIN_CUDA_RMSNORM_CUH
#define SPOTRAIN_CUDA_RMSNORM_CUH

#include "common.cuh"

enum { CUDA_NORM_THREADS = 256 };

/* vec: D a multiple of CUDA_NORM_VEC and x, w, out 16-byte aligned: each
 * thread moves CUDA_NORM_VEC elements at a time with 128-bit accesses. */
enum { CUDA_NORM_VEC = 8 };

template <typename T, typename W>
static __global__ void cuda_rmsnorm_forward_k(T *out, float *rs, const float *x, const W *w, int64_t D, double eps,
                                              int vec)
{
    __shared__ double sh[32];
    constexpr int E = CUDA_NORM_VEC;
    int64_t n = blockIdx.x;
    const float *xr = x + n * D;
    double ss = 0.0;
    if (vec) {
        for (int64_t j = (int64_t)threadIdx.x * E; j < D; j += (int64_t)blockDim.x * E) {
            float xv[E];
            cuda_ld128<E>(xv, xr + j);
            CUDA_UNROLL
            for (int k = 0; k < E; k++)
                ss += (double)xv[k] * (double)xv[k];
        }
    } else {
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
            ss += (double)xr[j] * (double)xr[j];
    }
    ss = cuda_block_sum(ss, sh);
    float r = elem_rms_scale(ss, D, eps);
    if (threadIdx.x == 0)
        rs[n] = r;
    if (vec) {
        for (int64_t j = (int64_t)threadIdx.x * E; j < D; j += (int64_t)blockDim.x * E) {
            float xv[E];
            W wv[E];
            T o[E];
            cuda_ld128<E>(xv, xr + j);
            cuda_ld128<E>(wv, w + j);
            CUDA_UNROLL
            for (int k = 0; k < E; k++)
                o[k] = cuda_st<T>((xv[k] * r) * cuda_f(wv[k]));
            cuda_st128<E>(out + n * D + j, o);
        }
        return;
    }
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
        out[n * D + j] = cuda_st<T>((xr[j] * r) * cuda_f(w[j]));
}

/* dx (+)= r (dy w) - x k with k = r^3 (sum dy w x) / D; also the compute
 * type copy of dx (the next products' operand). */
template <typename T, typename W>
static __global__ void cuda_rmsnorm_backward_k(float *dx, T *dx_ct, const float *dy, const float *x, const float *rs,
                                        const W *w, int64_t D, int accumulate)
{
    __shared__ double sh[32];
    int64_t n = blockIdx.x;
    const float *xr = x + n * D, *g = dy + n * D;
    double dot = 0.0;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
        dot += (double)(g[j] * cuda_f(w[j])) * (double)xr[j];
    dot = cuda_block_sum(dot, sh);
    float r = rs[n];
    float k = (float)((double)r * r * r * dot / (double)D);
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
        float d = r * (g[j] * cuda_f(w[j])) - xr[j] * k;
        if (accumulate)
            d = dx[n * D + j] + d;
        dx[n * D + j] = d;
        dx_ct[n * D + j] = cuda_st<T>(d);
    }
}

/* part[p][j] = sum over rows [p*rows, ...) of (dy x)(r), in row order. */
static __global__ void cuda_rmsnorm_dw_part_k(double *part, const float *dy, const float *x, const float *rs, int64_t N,
                                       int64_t D, int64_t rows)
{
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, p = blockIdx.y;
    if (j >= D)
        return;
    int64_t n0 = p * rows, n1 = n0 + rows < N ? n0 + rows : N;
    double acc = 0.0;
    for (int64_t n = n0; n < n1; n++)
        acc += (double)(dy[n * D + j] * x[n * D + j]) * (double)rs[n];
    part[p * D + j] = acc;
}

static __global__ void cuda_rmsnorm_dw_sum_k(float *dw, const double *part, int64_t nparts, int64_t D)
{
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= D)
        return;
    double acc = 0.0;
    for (int64_t p = 0; p < nparts; p++)
        acc += part[p * D + j];
    dw[j] += (float)acc;
}

/* Columns each thread of the fused backward keeps in registers (dy, x and
 * the double partial: within the 64 registers 1024 threads a block allow),
 * so rows up to 8 x 1024 = 8192 wide. */
enum { CUDA_NORM_COLS = 8, CUDA_NORM_BWD_MAX = 1024 };

/* Block p: rows [p*rows, ...): dx as cuda_rmsnorm_backward_k; part[p][j]
 * as cuda_rmsnorm_dw_part_k (the same sum, the same order, so the same
 * bits). Thread t owns columns t + c*blockDim, c < CUDA_NORM_COLS. */
template <typename T, typename W>
static __global__ void __launch_bounds__(CUDA_NORM_BWD_MAX)
    cuda_rmsnorm_backward_fused_k(float *dx, T *dx_ct, double *part, const float *dy, const float *x,
                                  const float *rs, const W *w, int64_t N, int64_t D, int64_t rows, int accumulate)
{
    __shared__ double sh[32];
    int64_t p = blockIdx.x, n0 = p * rows, n1 = n0 + rows < N ? n0 + rows : N;
    double acc[CUDA_NORM_COLS];
    float gj[CUDA_NORM_COLS], xj[CUDA_NORM_COLS];
    CUDA_UNROLL
    for (int c = 0; c < CUDA_NORM_COLS; c++)
        acc[c] = 0.0;
    for (int64_t n = n0; n < n1; n++) {
        const float *xr = x + n * D, *g = dy + n * D;
        double dot = 0.0;
        CUDA_UNROLL
        for (int c = 0; c < CUDA_NORM_COLS; c++) {
            int64_t j = threadIdx.x + (int64_t)c * blockDim.x;
            gj[c] = j < D ? g[j] : 0.0f;
            xj[c] = j < D ? xr[j] : 0.0f;
            if (j < D)
                dot += (double)(gj[c] * cuda_f(w[j])) * (double)xj[c];
        }
        dot = cuda_block_sum(dot, sh);
        float r = rs[n];
        float k = (float)((double)r * r * r * dot / (double)D);
        CUDA_UNROLL
        for (int c = 0; c < CUDA_NORM_COLS; c++) {
            int64_t j = threadIdx.x + (int64_t)c * blockDim.x;
            if (j >= D)
                continue;
            float d = r * (gj[c] * cuda_f(w[j])) - xj[c] * k;   /* w: a cache hit, row after row */
            if (accumulate)
                d = dx[n * D + j] + d;
            dx[n * D + j] = d;
            dx_ct[n * D + j] = cuda_st<T>(d);
            acc[c] += (double)(gj[c] * xj[c]) * (double)r;
        }
    }
    CUDA_UNROLL
    for (int c = 0; c < CUDA_NORM_COLS; c++) {
        int64_t j = threadIdx.x + (int64_t)c * blockDim.x;
        if (j < D)
            part[p * D + j] = acc[c];
    }
}

/* Threads for the fused backward: a whole number of warps, at least 256,
 * enough that CUDA_NORM_COLS columns each cover the row; 0 when a row is
 * too wide for CUDA_NORM_BWD_MAX of them. */
static inline unsigned cuda_norm_bwd_threads(int64_t D)
{
    int64_t t = (D + CUDA_NORM_COLS - 1) / CUDA_NORM_COLS;
    t = (t + 31) / 32 * 32;
    if (t < CUDA_NORM_THREADS)
        t = CUDA_NORM_THREADS;
    return t > CUDA_NORM_BWD_MAX ? 0u : (unsigned)t;
}

template <typename T, typename W>
static int cuda_rmsnorm_forward(cudaStream_t s, T *out, float *rs, const float *x, const W *w, int64_t N,
                                int64_t D, double eps)
{
    int rc = ST_OK, kp_ = cuda_kp_enter(s, CUDA_K_ELEM);
    int vec = D % CUDA_NORM_VEC == 0 && cuda_aligned16(out) && cuda_aligned16(x) && cuda_aligned16(w);
    cuda_rmsnorm_forward_k<T, W><<<(unsigned)N, CUDA_NORM_THREADS, 0, s>>>(out, rs, x, w, D, eps, vec);
    CU_LAUNCHED();
exit:
    cuda_kp_leave(s, kp_);
    return rc;
}

template <typename T, typename W>
static int cuda_rmsnorm_backward(cudaStream_t s, float *dx, T *dx_ct, float *dw, double *part, const float *dy,
                                 const float *x, const float *rs, const W *w, int64_t N, int64_t D,
                                 int64_t rows, int accumulate)
{
    int rc = ST_OK, kp_ = cuda_kp_enter(s, CUDA_K_ELEM);
    unsigned nparts = cuda_blocks(N, rows), nt = cuda_norm_bwd_threads(D);
    if (nt > 0) {
        cuda_rmsnorm_backward_fused_k<T, W><<<nparts, nt, 0, s>>>(dx, dx_ct, part, dy, x, rs, w, N, D, rows,
                                                                   accumulate);
        CU_LAUNCHED();
    } else {
        cuda_rmsnorm_dw_part_k<<<dim3(cuda_blocks(D, 128), nparts), 128, 0, s>>>(part, dy, x, rs, N, D, rows);
        CU_LAUNCHED();
        cuda_rmsnorm_backward_k<T, W><<<(unsigned)N, CUDA_NORM_THREADS, 0, s>>>(dx, dx_ct, dy, x, rs, w, D,
                                                                                accumulate);
        CU_LAUNCHED();
    }
    cuda_rmsnorm_dw_sum_k<<<cuda_blocks(D, 128), 128, 0, s>>>(dw, part, nparts, D);
    CU_LAUNCHED();
exit:
    cuda_kp_leave(s, kp_);
    return rc;
}

#endif
