/* What every CUDA file of the backend shares: the C headers it includes,
 * the one-line error check (a status and a goto exit, never an abort), the
 * compute-type loads and round-to-nearest-even stores, and deterministic
 * block reductions (fixed tree for a fixed block size: same bits every run). */
#ifndef SPOTRAIN_CUDA_COMMON_CUH
#define SPOTRAIN_CUDA_COMMON_CUH

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

extern "C" {
#include "util/util.h"
#include "backend/backend.h"
#include "model/elem.h"
#include "model/optim.h"
#include "plan.h"
#include "cuda.h"
}

/* Checks a CUDA runtime call inside a function with `int rc` and an `exit:`
 * label: one line naming the call, the file and line, and the error. */
#define CU_TRY(call)                                                                                   \
    do {                                                                                               \
        cudaError_t cu_e_ = (call);                                                                    \
        if (cu_e_ != cudaSuccess) {                                                                    \
            rc = util_fail(ST_SOFTWARE, "cuda: %s failed at %s:%d: %s; check the GPU (nvidia-smi) and " \
                           "the driver", #call, __FILE__, __LINE__, cudaGetErrorString(cu_e_));         \
            goto exit;                                                                                 \
        }                                                                                              \
    } while (0)

/* After a kernel launch: launch errors (bad configuration) surface here. */
#define CU_LAUNCHED() CU_TRY(cudaGetLastError())

#define CU_OK(expr)                                                                                    \
    do {                                                                                               \
        rc = (expr);                                                                                   \
        if (rc != ST_OK)                                                                               \
            goto exit;                                                                                 \
    } while (0)

/* ---- the kernel-class profile (SPOTRAIN_CUDA_PROFILE=2) ------------------
 * Each launching wrapper marks its class on its stream (cuda_kp_enter /
 * cuda_kp_leave): an event is recorded where the class changes, and the
 * time between two events is the earlier one's class. A GEMM inside a
 * marked section counts as that section (softmax is fused in attention);
 * time between marked sections (memsets, copies, host gaps) is "other".
 * Read back once per step (cuda_kp_flush: one sync), so it is for a
 * device check's profile, not for training. */
enum { CUDA_K_GEMM, CUDA_K_ATTN, CUDA_K_SOFTMAX, CUDA_K_ELEM, CUDA_K_CLS, CUDA_K_OPT, CUDA_K_COMM, CUDA_K_OTHER,
       CUDA_K_COUNT, CUDA_KP_EVENTS = 4096 };

typedef struct {
    int on, n, depth, cur;
    cudaStream_t stream;
    cudaEvent_t ev[CUDA_KP_EVENTS];
    int cls[CUDA_KP_EVENTS];
    double ms[CUDA_K_COUNT];
} cuda_kprof;

/* One per process (C++17 inline variable: one copy across the files). */
inline cuda_kprof *cuda_kp = NULL;

static inline const char *cuda_kp_name(int k)
{
    static const char *names[CUDA_K_COUNT] = {"GEMM", "attention", "softmax", "norms/elementwise",
                                              "classifier", "optimizer", "communication", "other"};
    return k >= 0 && k < CUDA_K_COUNT ? names[k] : "?";
}

/* Adds the recorded intervals to ms[] and starts over (waits for the last
 * event). */
static inline void cuda_kp_flush(void)
{
    cuda_kprof *p = cuda_kp;
    if (!p || p->n == 0)
        return;
    cudaEventSynchronize(p->ev[p->n - 1]);
    for (int i = 0; i + 1 < p->n; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, p->ev[i], p->ev[i + 1]) == cudaSuccess)
            p->ms[p->cls[i]] += ms;
    }
    p->n = 0;
}

static inline void cuda_kp_mark(cudaStream_t s, int k)
{
    cuda_kprof *p = cuda_kp;
    if (p->n == CUDA_KP_EVENTS)
        cuda_kp_flush();
    if (p->n > 0 && p->cls[p->n - 1] == k)
        return;
    if (cudaEventRecord(p->ev[p->n], s) == cudaSuccess)
        p->cls[p->n++] = k;
}

/* The outermost section's class, except that only a GEMM defers to it. */
static inline int cuda_kp_enter(cudaStream_t s, int k)
{
    cuda_kprof *p = cuda_kp;
    if (!p || !p->on)
        return 0;
    int prev = p->cur;
    if (p->depth++ == 0 || k != CUDA_K_GEMM) {
        p->cur = k;
        cuda_kp_mark(s, k);
    }
    return prev;
}

static inline void cuda_kp_leave(cudaStream_t s, int prev)
{
    cuda_kprof *p = cuda_kp;
    if (!p || !p->on)
        return;
    if (--p->depth == 0)
        prev = CUDA_K_OTHER;
    if (prev != p->cur) {
        p->cur = prev;
        cuda_kp_mark(s, prev);
    }
}

/* CU_OK with the call's time counted as class k. */
#define CU_OK_AS(s, k, expr)                                                                           \
    do {                                                                                               \
        int kp_prev_ = cuda_kp_enter((s), (k));                                                        \
        rc = (expr);                                                                                   \
        cuda_kp_leave((s), kp_prev_);                                                                  \
        if (rc != ST_OK)                                                                               \
            goto exit;                                                                                 \
    } while (0)

/* Grid size from a shape: ceil(n / per_block). Never from the SM count. */
static inline unsigned cuda_blocks(int64_t n, int64_t per_block)
{
    return (unsigned)((n + per_block - 1) / per_block);
}

__device__ __forceinline__ float cuda_f(float x) { return x; }
__device__ __forceinline__ float cuda_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float cuda_f(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T cuda_st(float x);
template <> __device__ __forceinline__ float cuda_st<float>(float x) { return x; }
/* elem_bf16: the same rounding the CPU tests check (ties to even). */
template <> __device__ __forceinline__ __nv_bfloat16 cuda_st<__nv_bfloat16>(float x)
{
    __nv_bfloat16_raw r;
    r.x = elem_bf16(x);
    return __nv_bfloat16(r);
}
template <> __device__ __forceinline__ __half cuda_st<__half>(float x) { return __float2half_rn(x); }

/* Unrolled by nvcc; the emulator's host compiler does without. */
#ifdef __CUDACC__
#define CUDA_UNROLL _Pragma("unroll")
#else
#define CUDA_UNROLL
#endif

/* The emulator (tests/emu/emu.h) defines this to fail the launch on a
 * 128-bit access through a pointer that is not 16-byte aligned (a
 * misaligned-address fault on a GPU; x86 might do it silently, or crash
 * the process) and to skip that access; under nvcc it is 1. */
#ifndef CUDA_EMU_ALIGN16
#define CUDA_EMU_ALIGN16(p, what) 1
#endif

/* The block's dynamic shared memory (the launch's third argument, 16-byte
 * aligned). Over 48 KiB a launch needs cudaFuncSetAttribute(kernel,
 * cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) first, and static
 * plus dynamic must fit the device's opt-in maximum (A100 163 KiB, H100
 * 227 KiB): the emulator holds launches to both. */
#ifdef CUDA_EMU_DYN_SMEM
template <typename T> static inline T *cuda_dyn_smem(void) { return static_cast<T *>(CUDA_EMU_DYN_SMEM()); }
#else
template <typename T> __device__ __forceinline__ T *cuda_dyn_smem(void)
{
    extern __shared__ __align__(16) unsigned char cuda_dyn_smem_[];
    return reinterpret_cast<T *>(cuda_dyn_smem_);
}
#endif

/* 128-bit loads and stores: E elements of U moved as E*sizeof(U)/16
 * int4s (one ld.global.v4 / st.global.v4 each). The caller guarantees the
 * pointer is 16-byte aligned (cuda_aligned16 on the host) and the E
 * elements exist; everything else takes a scalar tail. */
template <int E, typename U> __device__ __forceinline__ void cuda_ld128(U (&dst)[E], const U *p)
{
    static_assert((E * sizeof(U)) % 16 == 0, "a whole number of 16-byte words");
    if (!CUDA_EMU_ALIGN16(p, "cuda_ld128"))
        return;
    const int4 *q = reinterpret_cast<const int4 *>(p);
CUDA_UNROLL
    for (int k = 0; k < (int)(E * sizeof(U) / 16); k++) {
        int4 w = q[k];
        memcpy((char *)dst + 16 * k, &w, 16);
    }
}

template <int E, typename U> __device__ __forceinline__ void cuda_st128(U *p, const U (&src)[E])
{
    static_assert((E * sizeof(U)) % 16 == 0, "a whole number of 16-byte words");
    if (!CUDA_EMU_ALIGN16(p, "cuda_st128"))
        return;
    int4 *q = reinterpret_cast<int4 *>(p);
CUDA_UNROLL
    for (int k = 0; k < (int)(E * sizeof(U) / 16); k++) {
        int4 w;
        memcpy(&w, (const char *)src + 16 * k, 16);
        q[k] = w;
    }
}

/* E elements at p: 128-bit words when E > 1 (the caller guarantees the
 * alignment), one plain access when E == 1, so one kernel body serves a
 * vector path and its element-by-element fallback. */
template <int E, typename U> __device__ __forceinline__ void cuda_ldv(U (&dst)[E], const U *p)
{
    if constexpr (E == 1)
        dst[0] = p[0];
    else
        cuda_ld128<E>(dst, p);
}

template <int E, typename U> __device__ __forceinline__ void cuda_stv(U *p, const U (&src)[E])
{
    if constexpr (E == 1)
        p[0] = src[0];
    else
        cuda_st128<E>(p, src);
}

/* Elements of T in 16 bytes: 4 floats, 8 bf16/fp16. */
template <typename T> struct cuda_vec_n {
    static constexpr int n = (int)(16 / sizeof(T));
};

static inline int cuda_aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* Sum over the block; every thread gets the total. The xor butterfly adds
 * a+b in one lane and b+a in its partner (the same bits), so all lanes
 * agree, and the shape of the tree depends on blockDim only. sh holds 32. */
template <typename A> __device__ A cuda_block_sum(A v, A *sh)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    int w = (int)threadIdx.x / 32, l = (int)threadIdx.x % 32, nw = (int)blockDim.x / 32;
    __syncthreads();
    if (l == 0)
        sh[w] = v;
    __syncthreads();
    v = l < nw ? sh[l] : (A)0;
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float cuda_block_max(float v, float *sh)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int w = (int)threadIdx.x / 32, l = (int)threadIdx.x % 32, nw = (int)blockDim.x / 32;
    __syncthreads();
    if (l == 0)
        sh[w] = v;
    __syncthreads();
    v = l < nw ? sh[l] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#endif
