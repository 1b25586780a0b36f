/* Split-half RoPE (Hugging Face rotate-half, elem_rope) fused with the
 * layout change attention wants: the qkv GEMM's rows [N, q | k | v] become
 * q [B, H, T, hd] and k, v [B, KV, T, hd]; backward rotates the gradients
 * back and writes them as rows again. A thread takes E pairs: 16 bytes of
 * each half (E = 4 fp32, 8 bf16/fp16) with 128-bit accesses when hd/2 is a
 * multiple of E and every base is 16-byte aligned, one pair (E = 1)
 * otherwise; the same elem_rope on the same values either way. */
#ifndef SPOTRAIN_CUDA_ROPE_CUH
#define SPOTRAIN_CUDA_ROPE_CUH

#include "common.cuh"

/* Head h of q | k | v (h < H + 2 KV) of row n = b T + t, in its layout. */
template <typename T>
__device__ __forceinline__ T *cuda_rope_head(T *q, T *k, T *v, int64_t n, int64_t h, int64_t T_, int64_t H,
                                             int64_t KV, int64_t hd)
{
    int64_t b = n / T_, t = n % T_;
    if (h < H)
        return q + ((b * H + h) * T_ + t) * hd;
    if (h < H + KV)
        return k + ((b * KV + (h - H)) * T_ + t) * hd;
    return v + ((b * KV + (h - H - KV)) * T_ + t) * hd;
}

/* One thread per (row, head of q|k|v, E pairs from p < hd/2). dir: +1
 * forward (rows -> heads, rotate by +theta), -1 backward (heads -> rows,
 * rotate by -theta). v is copied, not rotated. */
template <typename T, int E>
static __global__ void cuda_rope_k(T *rows, T *q, T *k, T *v, const float *cs, const float *sn, int64_t N,
                                   int64_t T_, int64_t H, int64_t KV, int64_t hd, int dir)
{
    int64_t half = hd / 2, heads = H + 2 * KV, per = half / E;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * heads * per)
        return;
    int64_t p = (i % per) * E, h = (i / per) % heads, n = i / (per * heads), t = n % T_;
    T *row = rows + n * heads * hd + h * hd, *hp = cuda_rope_head(q, k, v, n, h, T_, H, KV, hd);
    const T *src = dir > 0 ? row : hp;
    T *dst = dir > 0 ? hp : row;
    T a[E], c[E];
    cuda_ldv<E>(a, src + p);
    cuda_ldv<E>(c, src + p + half);
    if (h >= H + KV) {
        cuda_stv<E>(dst + p, a);
        cuda_stv<E>(dst + p + half, c);
        return;
    }
    float cv[E], sv[E];
    cuda_ldv<E>(cv, cs + t * half + p);
    cuda_ldv<E>(sv, sn + t * half + p);
CUDA_UNROLL
    for (int e = 0; e < E; e++) {
        float x = cuda_f(a[e]), y = cuda_f(c[e]);
        elem_rope(&x, &y, cv[e], dir > 0 ? sv[e] : -sv[e]);
        a[e] = cuda_st<T>(x);
        c[e] = cuda_st<T>(y);
    }
    cuda_stv<E>(dst + p, a);
    cuda_stv<E>(dst + p + half, c);
}

template <typename T>
static int cuda_rope_launch(cudaStream_t s, T *rows, T *q, T *k, T *v, const float *cs, const float *sn,
                            const cuda_dims *d, int dir)
{
    constexpr int E = cuda_vec_n<T>::n;
    int rc = ST_OK, kp_ = cuda_kp_enter(s, CUDA_K_ELEM);
    int64_t half = d->hd / 2, pairs = d->N * (d->H + 2 * d->KV) * half;
    int vec = half % E == 0 && cuda_aligned16(rows) && cuda_aligned16(q) && cuda_aligned16(k) &&
              cuda_aligned16(v) && cuda_aligned16(cs) && cuda_aligned16(sn);
    if (vec)
        cuda_rope_k<T, E><<<cuda_blocks(pairs / E, 256), 256, 0, s>>>(rows, q, k, v, cs, sn, d->N, d->T, d->H,
                                                                        d->KV, d->hd, dir);
    else
        cuda_rope_k<T, 1><<<cuda_blocks(pairs, 256), 256, 0, s>>>(rows, q, k, v, cs, sn, d->N, d->T, d->H, d->KV,
                                                                    d->hd, dir);
    CU_LAUNCHED();
exit:
    cuda_kp_leave(s, kp_);
    return rc;
}

template <typename T>
static int cuda_rope_forward(cudaStream_t s, T *q, T *k, T *v, const T *qkv, const float *cs, const float *sn,
                             const cuda_dims *d)
{
    return cuda_rope_launch<T>(s, const_cast<T *>(qkv), q, k, v, cs, sn, d, 1);
}

template <typename T>
static int cuda_rope_backward(cudaStream_t s, T *dqkv, const T *dq, const T *dk, const T *dv, const float *cs,
                              const float *sn, const cuda_dims *d)
{
    return cuda_rope_launch<T>(s, dqkv, const_cast<T *>(dq), const_cast<T *>(dk), const_cast<T *>(dv), cs, sn, d,
                               -1);
}

#endif
