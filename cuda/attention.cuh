/* Causal attention with GQA as flash attention (the FlashAttention-2
 * algorithm): tiles of queries and keys in shared memory, an online softmax,
 * key tiles above the diagonal skipped, and only each row's log-sum-exp kept
 * for the backward, so nothing is quadratic in T. bf16/fp16 products run on
 * tensor cores (wmma, fp32 accumulators); fp32/tf32 on a plain FMA path.
 * The backward has no atomics: one kernel per key tile sums dK/dV over the
 * group's query heads and the query tiles in a fixed order, another per
 * query tile sums dQ over the key tiles. Checked on the emulator only. */
#ifndef SPOTRAIN_CUDA_ATTENTION_CUH
#define SPOTRAIN_CUDA_ATTENTION_CUH

#include <mma.h>
#include "common.cuh"

/* Largest head_dim: the tiles of one block fit the 48 KiB of static shared
 * memory. 128 threads = 4 warps a block. */
enum { CUDA_FA_HMAX = 128, CUDA_FA_THREADS = 128, CUDA_FA_WARPS = CUDA_FA_THREADS / 32 };

/* Rows of a query or key tile: 32 with 16-bit operands, 16 with fp32 (four
 * bytes an element), so the tiles of each kernel fit 48 KiB. */
template <typename T> struct cuda_fa_cfg {
    enum { BR = 32 };
};
template <> struct cuda_fa_cfg<float> {
    enum { BR = 16 };
};

/* ---- one warp, one 16x16 fp32 tile: acc += op(A)[16,K] op(B)[K,16] ------- */

/* A(i,k) is A[i*lda + k], or A[k*lda + i] when TA; B(k,n) is B[k*ldb + n],
 * or B[n*ldb + k] when TB. K a multiple of 16, operands in shared memory. */
template <int TR> struct cuda_mma_layout {
    typedef nvcuda::wmma::row_major type;
};
template <> struct cuda_mma_layout<1> {
    typedef nvcuda::wmma::col_major type;
};

template <typename T> struct cuda_mma {
    typedef nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> acc;
    static __device__ __forceinline__ void zero(acc &a) { nvcuda::wmma::fill_fragment(a, 0.0f); }
    template <int TA, int TB>
    static __device__ __forceinline__ void run(acc &a, const T *A, int lda, const T *B, int ldb, int K)
    {
        nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, T, typename cuda_mma_layout<TA>::type> fa;
        nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, T, typename cuda_mma_layout<TB>::type> fb;
        for (int k = 0; k < K; k += 16) {
            nvcuda::wmma::load_matrix_sync(fa, A + (TA ? k * lda : k), (unsigned)lda);
            nvcuda::wmma::load_matrix_sync(fb, B + (TB ? k : k * ldb), (unsigned)ldb);
            nvcuda::wmma::mma_sync(a, fa, fb, a);
        }
    }
    static __device__ __forceinline__ void load(acc &a, const float *p, int ld)
    {
        nvcuda::wmma::load_matrix_sync(a, p, (unsigned)ld, nvcuda::wmma::mem_row_major);
    }
    static __device__ __forceinline__ void store(float *p, int ld, const acc &a)
    {
        nvcuda::wmma::store_matrix_sync(p, a, (unsigned)ld, nvcuda::wmma::mem_row_major);
    }
};

/* fp32: lane l owns elements l, l+32, ... of the row-major 16x16 tile and
 * sums in k order (no tensor cores; tf32 runs this too). */
template <> struct cuda_mma<float> {
    struct acc {
        float v[8];
    };
    static __device__ __forceinline__ void zero(acc &a)
    {
        for (int e = 0; e < 8; e++)
            a.v[e] = 0.0f;
    }
    template <int TA, int TB>
    static __device__ __forceinline__ void run(acc &a, const float *A, int lda, const float *B, int ldb, int K)
    {
        int l = (int)threadIdx.x % 32;
        for (int e = 0; e < 8; e++) {
            int i = (l + 32 * e) / 16, n = (l + 32 * e) % 16;
            float s = a.v[e];
            for (int k = 0; k < K; k++)
                s += (TA ? A[k * lda + i] : A[i * lda + k]) * (TB ? B[n * ldb + k] : B[k * ldb + n]);
            a.v[e] = s;
        }
    }
    static __device__ __forceinline__ void load(acc &a, const float *p, int ld)
    {
        int l = (int)threadIdx.x % 32;
        for (int e = 0; e < 8; e++)
            a.v[e] = p[(l + 32 * e) / 16 * ld + (l + 32 * e) % 16];
    }
    static __device__ __forceinline__ void store(float *p, int ld, const acc &a)
    {
        int l = (int)threadIdx.x % 32;
        for (int e = 0; e < 8; e++)
            p[(l + 32 * e) / 16 * ld + (l + 32 * e) % 16] = a.v[e];
    }
};

/* ---- block-wide pieces ------------------------------------------------- */

/* C[M,N] (fp32, ldc) = op(A) op(B) over K, plus C itself when add; the
 * warps take the 16x16 tiles in turn. */
template <typename T, int TA, int TB>
__device__ void cuda_fa_gemm(float *C, int ldc, const T *A, int lda, const T *B, int ldb, int M, int N, int K, int add)
{
    typedef cuda_mma<T> mm;
    int nt = (M / 16) * (N / 16);
    for (int t = (int)threadIdx.x / 32; t < nt; t += CUDA_FA_WARPS) {
        int i0 = t / (N / 16) * 16, j0 = t % (N / 16) * 16;
        typename mm::acc a;
        if (add)
            mm::load(a, C + i0 * ldc + j0, ldc);
        else
            mm::zero(a);
        mm::template run<TA, TB>(a, A + (TA ? i0 : i0 * lda), lda, B + (TB ? j0 * ldb : j0), ldb, K);
        mm::store(C + i0 * ldc + j0, ldc, a);
    }
}

/* Accumulators that live across a loop: the 16x16 tiles of an [R, hp]
 * result (R = the tile rows, hp <= HMAX), tile w + 4j held by warp w. */
template <typename T, int R> struct cuda_fa_accs {
    enum { N = (R / 16) * (CUDA_FA_HMAX / 16) / CUDA_FA_WARPS };
    typename cuda_mma<T>::acc a[N];
};

template <typename T, int R> __device__ void cuda_fa_accs_zero(cuda_fa_accs<T, R> &x)
{
    for (int j = 0; j < cuda_fa_accs<T, R>::N; j++)
        cuda_mma<T>::zero(x.a[j]);
}

/* x += op(A)[R,K] B[K,hp] (B row-major, ldb). */
template <typename T, int R, int TA>
__device__ void cuda_fa_accs_add(cuda_fa_accs<T, R> &x, const T *A, int lda, const T *B, int ldb, int hp, int K)
{
    int w = (int)threadIdx.x / 32, nc = hp / 16;
    for (int j = 0; j < cuda_fa_accs<T, R>::N; j++) {
        int t = w + CUDA_FA_WARPS * j;
        if (t >= (R / 16) * nc)
            break;
        int i0 = t / nc * 16, j0 = t % nc * 16;
        cuda_mma<T>::template run<TA, 0>(x.a[j], A + (TA ? i0 : i0 * lda), lda, B + j0, ldb, K);
    }
}

/* out rows row0.. of [T_, hd] (row stride hd) = x * mul, rows past T_ and
 * columns past hd left out; stage: 256 floats per warp of shared memory. */
template <typename T, int R>
__device__ void cuda_fa_accs_store(T *out, const cuda_fa_accs<T, R> &x, float *stage, int64_t row0, int64_t T_,
                                   int hd, int hp, float mul)
{
    int w = (int)threadIdx.x / 32, l = (int)threadIdx.x % 32, nc = hp / 16;
    float *st = stage + 256 * w;
    for (int j = 0; j < cuda_fa_accs<T, R>::N; j++) {
        int t = w + CUDA_FA_WARPS * j;
        if (t >= (R / 16) * nc)
            break;
        int i0 = t / nc * 16, j0 = t % nc * 16;
        cuda_mma<T>::store(st, 16, x.a[j]);
        __syncwarp();
        for (int e = l; e < 256; e += 32) {
            int64_t r = row0 + i0 + e / 16;
            int c = j0 + e % 16;
            if (r < T_ && c < hd)
                out[r * hd + c] = cuda_st<T>(st[e] * mul);
        }
        __syncwarp();
    }
}

/* dst[R, hp] = rows row0.. of src (row r at src + r * rs, hd wide), zero
 * past T_ and past hd. */
template <typename T>
__device__ void cuda_fa_load(T *dst, int R, int hp, const T *src, int64_t rs, int64_t row0, int64_t T_, int hd)
{
    for (int e = (int)threadIdx.x; e < R * hp; e += CUDA_FA_THREADS) {
        int r = e / hp, c = e % hp;
        dst[e] = row0 + r < T_ && c < hd ? src[(row0 + r) * rs + c] : cuda_st<T>(0.0f);
    }
}

/* lse and delta of rows row0.. into shared memory (0 past T_). */
__device__ __forceinline__ void cuda_fa_load_rows(float *dst, const float *src, int R, int64_t row0, int64_t T_)
{
    for (int r = (int)threadIdx.x; r < R; r += CUDA_FA_THREADS)
        dst[r] = row0 + r < T_ ? src[row0 + r] : 0.0f;
}

/* ---- forward ------------------------------------------------------------ */

/* Block (query tile x, sequence b * H + head h): O and the row's
 * log-sum-exp, keys 0..last query of the tile. ao rows [B*T, H*hd]. */
template <typename T>
static __global__ void __launch_bounds__(CUDA_FA_THREADS)
    cuda_fa_forward_k(T *ao, float *lse, const T *q, const T *k, const T *v, int64_t T_, int H, int KV, int hd,
                      float scale)
{
    enum { BR = cuda_fa_cfg<T>::BR, HM = CUDA_FA_HMAX, TPR = CUDA_FA_THREADS / BR };
    static_assert(sizeof(T) * 3 * BR * HM + (sizeof(T) + 4) * BR * BR + 4 * BR * HM + 12 * BR <= 48 * 1024,
                  "forward tiles exceed 48 KiB of shared memory");
    __shared__ __align__(32) T sq[BR * HM];
    __shared__ __align__(32) T sk[BR * HM];
    __shared__ __align__(32) T sv[BR * HM];
    __shared__ __align__(32) T sp[BR * BR];
    __shared__ __align__(32) float ss[BR * BR];
    __shared__ __align__(32) float so[BR * HM];
    __shared__ float sm[BR], sl[BR];
    int hp = (hd + 15) / 16 * 16, tid = (int)threadIdx.x;
    int64_t i0 = (int64_t)blockIdx.x * BR, bh = blockIdx.y, b = bh / H;
    int h = (int)(bh % H), kvh = h / (H / KV);
    const T *kh = k + (b * KV + kvh) * T_ * hd, *vh = v + (b * KV + kvh) * T_ * hd;
    cuda_fa_load(sq, BR, hp, q + bh * T_ * hd, hd, i0, T_, hd);
    for (int e = tid; e < BR * HM; e += CUDA_FA_THREADS)
        so[e] = 0.0f;
    for (int r = tid; r < BR; r += CUDA_FA_THREADS) {
        sm[r] = -INFINITY;
        sl[r] = 0.0f;
    }
    int64_t last = (i0 + BR < T_ ? i0 + BR : T_) - 1;
    int r = tid / TPR, c0 = tid % TPR;
    int64_t t = i0 + r;
    for (int64_t j0 = 0; j0 <= last; j0 += BR) {
        __syncthreads();
        cuda_fa_load(sk, BR, hp, kh, hd, j0, T_, hd);
        cuda_fa_load(sv, BR, hp, vh, hd, j0, T_, hd);
        __syncthreads();
        cuda_fa_gemm<T, 0, 1>(ss, BR, sq, hp, sk, hp, BR, BR, hp, 0);
        __syncthreads();
        /* TPR threads (neighbouring lanes) per row: its new max, the
         * probabilities against it, and the old sum and output rescaled */
        float mx = -INFINITY, sum = 0.0f;
        for (int c = c0; c < BR; c += TPR)
            if (j0 + c <= t && t < T_)
                mx = fmaxf(mx, ss[r * BR + c] * scale);
        for (int o = TPR / 2; o > 0; o >>= 1)
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        float mo = sm[r], mn = fmaxf(mo, mx);
        for (int c = c0; c < BR; c += TPR) {
            float p = j0 + c <= t && t < T_ ? elem_exp(ss[r * BR + c] * scale - mn) : 0.0f;
            sp[r * BR + c] = cuda_st<T>(p);
            sum += p;
        }
        for (int o = TPR / 2; o > 0; o >>= 1)
            sum += __shfl_xor_sync(0xffffffffu, sum, o);
        float alpha = mo == -INFINITY ? 0.0f : elem_exp(mo - mn);
        for (int c = c0; c < hp; c += TPR)
            so[r * HM + c] *= alpha;
        __syncwarp();   /* every lane of the row has read sm[r] */
        if (c0 == 0) {
            sl[r] = sl[r] * alpha + sum;
            sm[r] = mn;
        }
        __syncthreads();
        cuda_fa_gemm<T, 0, 0>(so, HM, sp, BR, sv, hp, BR, hp, BR, 1);
    }
    __syncthreads();
    for (int e = tid; e < BR * hd; e += CUDA_FA_THREADS) {
        int rr = e / hd, c = e % hd;
        if (i0 + rr < T_)
            ao[((b * T_ + i0 + rr) * H + h) * hd + c] = cuda_st<T>(so[rr * HM + c] * (1.0f / sl[rr]));
    }
    for (int rr = tid; rr < BR; rr += CUDA_FA_THREADS)
        if (i0 + rr < T_)
            lse[bh * T_ + i0 + rr] = sm[rr] + elem_log(sl[rr]);   /* cpu_attn.c's; the device logf differs */
}

/* ---- backward ----------------------------------------------------------- */

/* delta[b,h,t] = sum_i dO O over the row (both rows [B*T, H*hd]). */
template <typename T>
static __global__ void cuda_fa_delta_k(float *delta, const T *dao, const T *ao, int64_t rows, int64_t T_, int H,
                                       int hd)
{
    int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;   /* (b * H + h) * T + t */
    if (n >= rows)
        return;
    int64_t t = n % T_, bh = n / T_, b = bh / H, h = bh % H;
    const T *o = ao + ((b * T_ + t) * H + h) * hd, *d = dao + ((b * T_ + t) * H + h) * hd;
    float s = 0.0f;
    for (int i = 0; i < hd; i++)
        s += cuda_f(d[i]) * cuda_f(o[i]);
    delta[n] = s;
}

/* P and dS of one (query tile, key tile) pair from S and dP: p = exp(s
 * scale - lse), zero where masked; ds = p (dp - delta) scale. */
template <typename T>
__device__ void cuda_fa_ds(T *sp, T *sds, const float *ss, const float *sdp, const float *slse, const float *sdel,
                           int R, int64_t i0, int64_t j0, int64_t T_, float scale)
{
    for (int e = (int)threadIdx.x; e < R * R; e += CUDA_FA_THREADS) {
        int r = e / R, c = e % R;
        int64_t t = i0 + r;
        float p = j0 + c <= t && t < T_ ? elem_exp(ss[e] * scale - slse[r]) : 0.0f;
        if (sp)
            sp[e] = cuda_st<T>(p);
        sds[e] = cuda_st<T>(p * (sdp[e] - sdel[r]) * scale);
    }
}

/* Block (key tile x, b * KV + kv head): dK, dV of the tile, summed over the
 * group's heads in order, then the query tiles from the diagonal down. */
template <typename T>
static __global__ void __launch_bounds__(CUDA_FA_THREADS)
    cuda_fa_dkdv_k(T *dk, T *dv, const T *dao, const float *lse, const float *delta, const T *q, const T *k,
                   const T *v, int64_t T_, int H, int KV, int hd, float scale)
{
    enum { BR = cuda_fa_cfg<T>::BR, HM = CUDA_FA_HMAX, SS = BR * BR > 1024 ? BR * BR : 1024 };
    static_assert(sizeof(T) * (4 * BR * HM + 2 * BR * BR) + 4 * (SS + BR * BR + 2 * BR) <= 48 * 1024,
                  "dK/dV tiles exceed 48 KiB of shared memory");
    __shared__ __align__(32) T sk[BR * HM];
    __shared__ __align__(32) T sv[BR * HM];
    __shared__ __align__(32) T sq[BR * HM];
    __shared__ __align__(32) T sdo[BR * HM];
    __shared__ __align__(32) T sp[BR * BR];
    __shared__ __align__(32) T sds[BR * BR];
    __shared__ __align__(32) float ss[SS];   /* S; at the end the warps' staging */
    __shared__ __align__(32) float sdp[BR * BR];
    __shared__ float slse[BR], sdel[BR];
    int hp = (hd + 15) / 16 * 16, grp = H / KV, qd = H * hd;
    int64_t j0 = (int64_t)blockIdx.x * BR, bk = blockIdx.y, b = bk / KV;
    cuda_fa_load(sk, BR, hp, k + bk * T_ * hd, hd, j0, T_, hd);
    cuda_fa_load(sv, BR, hp, v + bk * T_ * hd, hd, j0, T_, hd);
    cuda_fa_accs<T, BR> gk, gv;
    cuda_fa_accs_zero(gk);
    cuda_fa_accs_zero(gv);
    for (int g = 0; g < grp; g++) {
        int64_t bh = b * H + (bk % KV) * grp + g, h = bh % H;
        for (int64_t i0 = j0; i0 < T_; i0 += BR) {
            __syncthreads();
            cuda_fa_load(sq, BR, hp, q + bh * T_ * hd, hd, i0, T_, hd);
            cuda_fa_load(sdo, BR, hp, dao + b * T_ * qd + h * hd, qd, i0, T_, hd);
            cuda_fa_load_rows(slse, lse + bh * T_, BR, i0, T_);
            cuda_fa_load_rows(sdel, delta + bh * T_, BR, i0, T_);
            __syncthreads();
            cuda_fa_gemm<T, 0, 1>(ss, BR, sq, hp, sk, hp, BR, BR, hp, 0);
            cuda_fa_gemm<T, 0, 1>(sdp, BR, sdo, hp, sv, hp, BR, BR, hp, 0);
            __syncthreads();
            cuda_fa_ds<T>(sp, sds, ss, sdp, slse, sdel, BR, i0, j0, T_, scale);
            __syncthreads();
            cuda_fa_accs_add<T, BR, 1>(gv, sp, BR, sdo, hp, hp, BR);
            cuda_fa_accs_add<T, BR, 1>(gk, sds, BR, sq, hp, hp, BR);
        }
    }
    __syncthreads();
    cuda_fa_accs_store(dk + bk * T_ * hd, gk, ss, j0, T_, hd, hp, 1.0f);
    cuda_fa_accs_store(dv + bk * T_ * hd, gv, ss, j0, T_, hd, hp, 1.0f);
}

/* Block (query tile x, b * H + h): dQ of the tile over the key tiles up to
 * the diagonal, in order. */
template <typename T>
static __global__ void __launch_bounds__(CUDA_FA_THREADS)
    cuda_fa_dq_k(T *dq, const T *dao, const float *lse, const float *delta, const T *q, const T *k, const T *v,
                 int64_t T_, int H, int KV, int hd, float scale)
{
    enum { BR = cuda_fa_cfg<T>::BR, HM = CUDA_FA_HMAX, SS = BR * BR > 1024 ? BR * BR : 1024 };
    static_assert(sizeof(T) * (4 * BR * HM + BR * BR) + 4 * (SS + BR * BR + 2 * BR) <= 48 * 1024,
                  "dQ tiles exceed 48 KiB of shared memory");
    __shared__ __align__(32) T sq[BR * HM];
    __shared__ __align__(32) T sdo[BR * HM];
    __shared__ __align__(32) T sk[BR * HM];
    __shared__ __align__(32) T sv[BR * HM];
    __shared__ __align__(32) T sds[BR * BR];
    __shared__ __align__(32) float ss[SS];
    __shared__ __align__(32) float sdp[BR * BR];
    __shared__ float slse[BR], sdel[BR];
    int hp = (hd + 15) / 16 * 16, qd = H * hd;
    int64_t i0 = (int64_t)blockIdx.x * BR, bh = blockIdx.y, b = bh / H, h = bh % H;
    int kvh = (int)h / (H / KV);
    const T *kh = k + (b * KV + kvh) * T_ * hd, *vh = v + (b * KV + kvh) * T_ * hd;
    cuda_fa_load(sq, BR, hp, q + bh * T_ * hd, hd, i0, T_, hd);
    cuda_fa_load(sdo, BR, hp, dao + b * T_ * qd + h * hd, qd, i0, T_, hd);
    cuda_fa_load_rows(slse, lse + bh * T_, BR, i0, T_);
    cuda_fa_load_rows(sdel, delta + bh * T_, BR, i0, T_);
    cuda_fa_accs<T, BR> gq;
    cuda_fa_accs_zero(gq);
    int64_t last = (i0 + BR < T_ ? i0 + BR : T_) - 1;
    for (int64_t j0 = 0; j0 <= last; j0 += BR) {
        __syncthreads();
        cuda_fa_load(sk, BR, hp, kh, hd, j0, T_, hd);
        cuda_fa_load(sv, BR, hp, vh, hd, j0, T_, hd);
        __syncthreads();
        cuda_fa_gemm<T, 0, 1>(ss, BR, sq, hp, sk, hp, BR, BR, hp, 0);
        cuda_fa_gemm<T, 0, 1>(sdp, BR, sdo, hp, sv, hp, BR, BR, hp, 0);
        __syncthreads();
        cuda_fa_ds<T>(NULL, sds, ss, sdp, slse, sdel, BR, i0, j0, T_, scale);
        __syncthreads();
        cuda_fa_accs_add<T, BR, 0>(gq, sds, BR, sk, hp, hp, BR);
    }
    __syncthreads();
    cuda_fa_accs_store(dq + bh * T_ * hd, gq, ss, i0, T_, hd, hp, 1.0f);
}

/* ---- host side ---------------------------------------------------------- */

/* The backward's scratch, from the arena: all linear in T. */
typedef struct {
    void *dq, *dk, *dv;   /* [B,H,T,hd], [B,KV,T,hd] x 2: what rope_backward reads */
    float *delta;         /* [B,H,T] rowsum(dO O) */
} cuda_attn_scratch;

static inline int cuda_attention_check(const cuda_dims *d)
{
    if (d->hd > CUDA_FA_HMAX)
        return util_fail(ST_CONFIG, "cuda attention: head_dim %lld is over the %d the flash kernels' tiles hold; "
                         "use train.backend=cpu", (long long)d->hd, (int)CUDA_FA_HMAX);
    if (d->B * d->H > 65535)
        return util_fail(ST_CONFIG, "cuda attention: micro_batch x n_heads = %lld is over 65535 (the grid's "
                         "second dimension); lower train.micro_batch", (long long)(d->B * d->H));
    return ST_OK;
}

static inline float cuda_attention_scale(const cuda_dims *d) { return (float)(1.0 / sqrt((double)d->hd)); }

/* q [B,H,T,hd], k, v [B,KV,T,hd] -> ao rows [N, qd] and lse [B,H,T]. */
template <typename T>
static int cuda_attention_forward(cudaStream_t s, const cuda_dims *d, T *ao, float *lse, const T *q, const T *k,
                                  const T *v)
{
    int rc = cuda_attention_check(d);
    if (rc != ST_OK)
        return rc;
    dim3 grid(cuda_blocks(d->T, cuda_fa_cfg<T>::BR), (unsigned)(d->B * d->H));
    cuda_fa_forward_k<T><<<grid, CUDA_FA_THREADS, 0, s>>>(ao, lse, q, k, v, d->T, (int)d->H, (int)d->KV, (int)d->hd,
                                                         cuda_attention_scale(d));
    CU_LAUNCHED();
exit:
    return rc;
}

/* dao rows [N, qd] (and the forward's ao, lse) -> dq, dk, dv in w. */
template <typename T>
static int cuda_attention_backward(cudaStream_t s, const cuda_dims *d, const cuda_attn_scratch *w, const T *dao,
                                   const T *ao, const float *lse, const T *q, const T *k, const T *v)
{
    int rc = cuda_attention_check(d);
    if (rc != ST_OK)
        return rc;
    float sc = cuda_attention_scale(d);
    unsigned tiles = cuda_blocks(d->T, cuda_fa_cfg<T>::BR);
    cuda_fa_delta_k<T><<<cuda_blocks(d->B * d->H * d->T, 256), 256, 0, s>>>(w->delta, dao, ao, d->B * d->H * d->T,
                                                                           d->T, (int)d->H, (int)d->hd);
    CU_LAUNCHED();
    cuda_fa_dkdv_k<T><<<dim3(tiles, (unsigned)(d->B * d->KV)), CUDA_FA_THREADS, 0, s>>>(
        (T *)w->dk, (T *)w->dv, dao, lse, w->delta, q, k, v, d->T, (int)d->H, (int)d->KV, (int)d->hd, sc);
    CU_LAUNCHED();
    cuda_fa_dq_k<T><<<dim3(tiles, (unsigned)(d->B * d->H)), CUDA_FA_THREADS, 0, s>>>(
        (T *)w->dq, dao, lse, w->delta, q, k, v, d->T, (int)d->H, (int)d->KV, (int)d->hd, sc);
    CU_LAUNCHED();
exit:
    return rc;
}

#endif
