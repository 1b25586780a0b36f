/* Emulation shim (tests/emu): bfloat16 storage and the conversions the
 * kernels use. Round to nearest even, NaN kept a (quiet) NaN. */
#ifndef SPOTRAIN_EMU_CUDA_BF16_H
#define SPOTRAIN_EMU_CUDA_BF16_H

#include <stdint.h>
#include <string.h>
#include "emu.h"

struct __nv_bfloat16_raw {
    unsigned short x;
};

struct __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(const __nv_bfloat16_raw &r) : __x(r.x) {}
    operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
};

inline float __bfloat162float(__nv_bfloat16 h)
{
    uint32_t u = (uint32_t)h.__x << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

inline __nv_bfloat16 __float2bfloat16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    __nv_bfloat16_raw r;
    if ((u & 0x7fffffffu) > 0x7f800000u)
        r.x = (unsigned short)((u >> 16) | 0x40u);
    else
        r.x = (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    return __nv_bfloat16(r);
}

#endif
