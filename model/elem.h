/* Per-element math shared by every backend: the exp and log approximations,
 * SiLU and SwiGLU, the RoPE rotation, the RMS scale, the AdamW element update
 * and bf16 round-to-nearest-even. Compiles as C (static inline) and under nvcc
 * (host and device), so the CPU tests cover what the GPU kernels compute. */
#ifndef SPOTRAIN_ELEM_H
#define SPOTRAIN_ELEM_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define ELEM_FN __host__ __device__ static inline
#else
#define ELEM_FN static inline
#endif

ELEM_FN float elem_bits_float(uint32_t u)
{
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
#endif
}

ELEM_FN uint32_t elem_float_bits(float f)
{
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
#endif
}

/* exp for x <= 88 (Cephes range reduction and polynomial, ~1 ulp), in plain
 * C so the loops around it vectorise; libm's expf would not. Every fused
 * multiply-add is explicit, so the result does not depend on the compiler's
 * contraction choices. */
ELEM_FN float elem_exp(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float n = floorf(fmaf(x, 1.44269504088896341f, 0.5f));
    float r = fmaf(n, -0.693359375f, x);
    r = fmaf(n, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, r * r, r + 1.0f);
    return p * elem_bits_float((uint32_t)(((int32_t)n + 127) << 23));
}

/* Natural log for positive normal x (Cephes range reduction to a mantissa
 * in [sqrt(1/2), sqrt(2)) and polynomial, ~1 ulp); explicit fused
 * multiply-adds as elem_exp, so every backend computes the same bits. */
ELEM_FN float elem_log(float x)
{
    uint32_t u = elem_float_bits(x);
    float e = (float)((int32_t)(u >> 23) - 126);
    float f = elem_bits_float((u & 0x007fffffu) | 0x3f000000u);
    int low = f < 0.707106781186547524f;
    e = low ? e - 1.0f : e;
    f = low ? f + f - 1.0f : f - 1.0f;
    float z = f * f;
    float p = 7.0376836292e-2f;
    p = fmaf(p, f, -1.1514610310e-1f);
    p = fmaf(p, f, 1.1676998740e-1f);
    p = fmaf(p, f, -1.2420140846e-1f);
    p = fmaf(p, f, 1.4249322787e-1f);
    p = fmaf(p, f, -1.6668057665e-1f);
    p = fmaf(p, f, 2.0000714765e-1f);
    p = fmaf(p, f, -2.4999993993e-1f);
    p = fmaf(p, f, 3.3333331174e-1f);
    float y = (p * f) * z;
    y = fmaf(e, -2.12194440e-4f, y);
    y = fmaf(z, -0.5f, y);
    return fmaf(e, 0.693359375f, f + y);
}

/* silu(g) * u, the SwiGLU gate. */
ELEM_FN float elem_swiglu(float g, float u) { return g / (1.0f + elem_exp(-g)) * u; }

/* Backward of elem_swiglu for upstream gradient d. */
ELEM_FN void elem_swiglu_bwd(float g, float u, float d, float *dg, float *du)
{
    float s = 1.0f / (1.0f + elem_exp(-g));
    *du = d * g * s;
    *dg = d * u * (s * (1.0f + g * (1.0f - s)));
}

/* Rotate-half RoPE of the pair (x[i], x[i + head_dim/2]); sn is already
 * negated for the backward (transposed) rotation. */
ELEM_FN void elem_rope(float *a, float *b, float cs, float sn)
{
    float x0 = *a, x1 = *b;
    *a = x0 * cs - x1 * sn;
    *b = x1 * cs + x0 * sn;
}

/* 1/rms of a row from its sum of squares (accumulated in double). */
ELEM_FN float elem_rms_scale(double sumsq, int64_t dim, double eps)
{
    return (float)(1.0 / sqrt(sumsq / (double)dim + eps));
}

/* Per-step AdamW constants, computed once on the host. */
typedef struct {
    double b1, b2, eps;
    double step_size;    /* lr / (1 - beta1^t) */
    double sbc2;         /* sqrt(1 - beta2^t) */
    double clip;         /* gradient multiplier (clipping, loss-scale undo) */
} elem_adamw_k;

/* One AdamW element (torch.optim.AdamW: decoupled decay, bias correction,
 * eps outside the square root); keep = 1 - lr * decay for this tensor. */
ELEM_FN void elem_adamw(const elem_adamw_k *k, double keep, float *p, float g, float *m, float *v)
{
    double gi = (double)g * k->clip;
    double mi = k->b1 * (double)*m + (1.0 - k->b1) * gi;
    double vi = k->b2 * (double)*v + (1.0 - k->b2) * gi * gi;
    *m = (float)mi;
    *v = (float)vi;
    double pi = (double)*p * keep;
    *p = (float)(pi - k->step_size * mi / (sqrt(vi) / k->sbc2 + k->eps));
}

/* fp32 -> bf16, round to nearest, ties to even; NaN stays a quiet NaN. */
ELEM_FN uint16_t elem_bf16(float f)
{
    uint32_t u = elem_float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

ELEM_FN float elem_bf16_float(uint16_t h) { return elem_bits_float((uint32_t)h << 16); }

#endif
