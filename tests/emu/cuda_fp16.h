/* Emulation shim (tests/emu): IEEE binary16 storage and conversions.
 * float -> half rounds to nearest even; beyond the largest finite half
 * (65504, and everything that rounds above it) it is inf, never saturated;
 * subnormal halves are produced and read exactly. */
#ifndef SPOTRAIN_EMU_CUDA_FP16_H
#define SPOTRAIN_EMU_CUDA_FP16_H

#include <stdint.h>
#include <string.h>
#include "emu.h"

struct __half_raw {
    unsigned short x;
};

struct __half {
    unsigned short __x;
    __half() = default;
    __half(const __half_raw &r) : __x(r.x) {}
    operator __half_raw() const { return __half_raw{__x}; }
};

inline float __half2float(__half h)
{
    uint32_t s = (uint32_t)(h.__x & 0x8000u) << 16, e = (h.__x >> 10) & 0x1fu, m = h.__x & 0x3ffu, u;
    if (e == 0x1f) {
        u = s | 0x7f800000u | (m << 13);                         /* inf, NaN */
    } else if (e == 0) {
        float f = (float)m * (1.0f / 16777216.0f);                 /* m * 2^-24, exact */
        memcpy(&u, &f, sizeof u);
        u |= s;
    } else {
        u = s | ((e + 112u) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

inline __half __float2half_rn(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t s = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    __half_raw r;
    if (a > 0x7f800000u) {
        r.x = (unsigned short)(s | 0x7e00u | ((a >> 13) & 0x3ffu));   /* NaN stays NaN */
    } else if (a >= 0x477ff000u) {
        r.x = (unsigned short)(s | 0x7c00u);   /* >= 65520 rounds past 65504: inf */
    } else if (a >= 0x38800000u) {
        /* normal: rebias the exponent, round the 13 dropped bits to even */
        uint32_t v = a - (112u << 23);
        r.x = (unsigned short)(s | ((v + 0xfffu + ((v >> 13) & 1u)) >> 13));
    } else if (a < 0x33000000u) {
        r.x = (unsigned short)s;                /* below half the smallest subnormal: zero */
    } else {
        /* subnormal half: the value in units of 2^-24, rounded to even */
        uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e;              /* 14..24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (q & 1u)))
            q++;
        r.x = (unsigned short)(s | q);
    }
    return __half(r);
}

#endif
