/* Split-half RoPE (Hugging Face rotate-half, elem_rope) fused with the
 * layout change attention wants: the qkv GEMM's rows [N, q | k | v] become
 * q [B, H, T, hd] and k, v [B, KV, T, hd]; backward rotates the gradients
 * back and writes them as rows again. Also the plain head permute between
 * [N, heads*hd] rows and [B, heads, T, hd]. */
#ifndef SPOTRAIN_CUDA_ROPE_CUH
#define SPOTRAIN_CUDA_ROPE_CUH

#include "common.cuh"

/* One thread per (row, head of q|k|v, pair i < hd/2). */
template <typename T>
static __global__ void cuda_rope_forward_k(T *q, T *k, T *v, const T *qkv, const float *cs, const float *sn, int64_t N,
                                    int64_t T_, int64_t H, int64_t KV, int64_t hd)
{
    int64_t half = hd / 2, heads = H + 2 * KV;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * heads * half)
        return;
    int64_t p = i % half, h = (i / half) % heads, n = i / (half * heads);
    int64_t b = n / T_, t = n % T_;
    const T *src = qkv + n * heads * hd + h * hd;
    float a = cuda_f(src[p]), c = cuda_f(src[p + half]);
    T *dst;
    if (h < H) {
        dst = q + ((b * H + h) * T_ + t) * hd;
    } else if (h < H + KV) {
        dst = k + ((b * KV + (h - H)) * T_ + t) * hd;
    } else {
        dst = v + ((b * KV + (h - H - KV)) * T_ + t) * hd;
        dst[p] = src[p];
        dst[p + half] = src[p + half];
        return;
    }
    elem_rope(&a, &c, cs[t * half + p], sn[t * half + p]);
    dst[p] = cuda_st<T>(a);
    dst[p + half] = cuda_st<T>(c);
}

template <typename T>
static __global__ void cuda_rope_backward_k(T *dqkv, const T *dq, const T *dk, const T *dv, const float *cs,
                                     const float *sn, int64_t N, int64_t T_, int64_t H, int64_t KV, int64_t hd)
{
    int64_t half = hd / 2, heads = H + 2 * KV;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * heads * half)
        return;
    int64_t p = i % half, h = (i / half) % heads, n = i / (half * heads);
    int64_t b = n / T_, t = n % T_;
    T *dst = dqkv + n * heads * hd + h * hd;
    const T *src;
    if (h < H) {
        src = dq + ((b * H + h) * T_ + t) * hd;
    } else if (h < H + KV) {
        src = dk + ((b * KV + (h - H)) * T_ + t) * hd;
    } else {
        src = dv + ((b * KV + (h - H - KV)) * T_ + t) * hd;
        dst[p] = src[p];
        dst[p + half] = src[p + half];
        return;
    }
    float a = cuda_f(src[p]), c = cuda_f(src[p + half]);
    elem_rope(&a, &c, cs[t * half + p], -sn[t * half + p]);
    dst[p] = cuda_st<T>(a);
    dst[p + half] = cuda_st<T>(c);
}

/* to_heads: rows [N, nh*hd] -> [B, nh, T, hd]; else the reverse. */
template <typename T>
static __global__ void cuda_permute_k(T *dst, const T *src, int64_t N, int64_t T_, int64_t nh, int64_t hd, int to_heads)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * nh * hd)
        return;
    int64_t e = i % hd, h = (i / hd) % nh, n = i / (hd * nh);
    int64_t b = n / T_, t = n % T_;
    int64_t hp = ((b * nh + h) * T_ + t) * hd + e;
    if (to_heads)
        dst[hp] = src[i];
    else
        dst[i] = src[hp];
}

template <typename T>
static int cuda_rope_forward(cudaStream_t s, T *q, T *k, T *v, const T *qkv, const float *cs, const float *sn,
                             const cuda_dims *d)
{
    int rc = ST_OK, kp_ = cuda_kp_enter(s, CUDA_K_ELEM);
    int64_t n = d->N * (d->H + 2 * d->KV) * (d->hd / 2);
    cuda_rope_forward_k<T><<<cuda_blocks(n, 256), 256, 0, s>>>(q, k, v, qkv, cs, sn, d->N, d->T, d->H, d->KV, d->hd);
    CU_LAUNCHED();
exit:
    cuda_kp_leave(s, kp_);
    return rc;
}

template <typename T>
static int cuda_rope_backward(cudaStream_t s, T *dqkv, const T *dq, const T *dk, const T *dv, const float *cs,
                              const float *sn, const cuda_dims *d)
{
    int rc = ST_OK, kp_ = cuda_kp_enter(s, CUDA_K_ELEM);
    int64_t n = d->N * (d->H + 2 * d->KV) * (d->hd / 2);
    cuda_rope_backward_k<T><<<cuda_blocks(n, 256), 256, 0, s>>>(dqkv, dq, dk, dv, cs, sn, d->N, d->T, d->H, d->KV,
                                                                  d->hd);
    CU_LAUNCHED();
exit:
    cuda_kp_leave(s, kp_);
    return rc;
}

template <typename T>
static int cuda_permute(cudaStream_t s, T *dst, const T *src, const cuda_dims *d, int64_t nh, int to_heads)
{
    int rc = ST_OK, kp_ = cuda_kp_enter(s, CUDA_K_ELEM);
    cuda_permute_k<T><<<cuda_blocks(d->N * nh * d->hd, 256), 256, 0, s>>>(dst, src, d->N, d->T, nh, d->hd, to_heads);
    CU_LAUNCHED();
exit:
    cuda_kp_leave(s, kp_);
    return rc;
}

#endif
