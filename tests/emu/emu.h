/* The CPU emulation of the CUDA runtime and device language that the
 * kernels in cuda/ use (and nothing more): built only for the emulated
 * test programs (make test-emu), never for the production binary. Device
 * memory is host memory; work queued on a stream runs when the host waits
 * for it; a kernel's blocks run one after another and the threads of a
 * block run as fibers on one OS thread, switching only at __syncthreads
 * and warp shuffles, where
 * tests/emu/emu.cpp checks that the whole block (or warp) arrives. See
 * cuda/README.md, "Running the kernels on the CPU". */
#ifndef SPOTRAIN_EMU_H
#define SPOTRAIN_EMU_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <tuple>
#include <type_traits>
#include <utility>

/* ---- the language ------------------------------------------------------ */

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
/* Shared memory: a static local is shared by every thread of the kernel's
 * one running block (blocks run one at a time). All of them live in one
 * section, which the emulator fills with 0xff (NaN) before every block:
 * shared memory nothing in this block wrote reads as NaN, as garbage would
 * on a GPU. */
#define __shared__ static __attribute__((section("emu_shared")))

struct uint3 {
    unsigned x, y, z;
};

/* The 128-bit vector types (alignas 16, as the CUDA headers declare them):
 * kernels load and store 16 bytes through them; under SAN=1, UBSan's
 * alignment check catches one used on a pointer not 16-byte aligned. */
struct alignas(16) int4 {
    int x, y, z, w;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) float2 {
    float x, y;
};

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

/* The running thread's coordinates; the scheduler rewrites them on every
 * switch between fibers (switches happen only inside the emu_* calls, so
 * the compiler reloads them after a barrier). */
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
enum { warpSize = 32 };

void __syncthreads(void);

/* Warp exchange of up to 8 bytes: deposit v, wait for the 32 lanes of the
 * warp, return lane src_lane's deposit. */
uint64_t emu_shfl(unsigned mask, uint64_t v, size_t size, int src_lane);

static inline unsigned emu_lane(void) { return threadIdx.x % 32u; }

/* A warp-collective operation (__syncwarp, the wmma calls of mma.h): waits
 * for the 32 lanes of the warp, as a shuffle does, and fails the launch
 * when a lane's key (what it passed: pointer, stride, layout) differs from
 * lane 0's. */
void emu_warp_op(const char *op, uint64_t key);
/* Fails the running launch once its block ends, with this message. */
void emu_fail_launch(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* cuda/common.cuh's 128-bit loads and stores call this: one through a
 * pointer not 16-byte aligned faults on a GPU (misaligned address), so it
 * fails the launch here in every build, not only under SAN=1's UBSan, and
 * returns 0: the access is skipped (made, the alignas(16) int4 could
 * crash the process in an aligned SSE move). */
static inline int emu_check_align16(const void *p, const char *what)
{
    if (!((uintptr_t)p & 15u))
        return 1;
    emu_fail_launch("%s through %p, which is not 16-byte aligned (a misaligned address fault on a GPU); "
                    "take the element-by-element path there", what, p);
    return 0;
}
#define CUDA_EMU_ALIGN16(p, what) emu_check_align16((p), (what))

inline void __syncwarp(unsigned mask = 0xffffffffu)
{
    (void)mask;
    emu_warp_op("__syncwarp", 0);
}

template <typename T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32)
{
    static_assert(sizeof(T) <= 8, "emulated shuffles move at most 8 bytes");
    uint64_t bits = 0;
    T out;
    (void)width;
    memcpy(&bits, &v, sizeof v);
    bits = emu_shfl(mask, bits, sizeof v, (int)(emu_lane() ^ (unsigned)lane_mask));
    memcpy(&out, &bits, sizeof out);
    return out;
}

/* ---- the runtime ------------------------------------------------------- */

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInsufficientDriver = 35,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorNotReady = 600,
    cudaErrorHostMemoryAlreadyRegistered = 712,
    cudaErrorHostMemoryNotRegistered = 713,
    cudaErrorLaunchFailure = 719,
} cudaError_t;

typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
} cudaMemcpyKind;

typedef struct emu_stream *cudaStream_t;
typedef struct emu_event *cudaEvent_t;

enum { cudaStreamDefault = 0, cudaStreamNonBlocking = 1 };
enum { cudaEventDefault = 0, cudaEventBlockingSync = 1, cudaEventDisableTiming = 2 };
enum { cudaHostRegisterDefault = 0 };

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    int major, minor;
    int multiProcessorCount;
};

#ifndef CUDART_VERSION
#define CUDART_VERSION 13000
#endif
#ifndef __CUDA_ARCH_LIST__
#define __CUDA_ARCH_LIST__ 900
#endif

cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev);
cudaError_t cudaDriverGetVersion(int *v);
cudaError_t cudaRuntimeGetVersion(int *v);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total);

cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t bytes);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaHostRegister(void *p, size_t bytes, unsigned flags);
cudaError_t cudaHostUnregister(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s = 0);
cudaError_t cudaMemset(void *p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s = 0);

cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags = 0);
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);

/* The peak of bytes held by cudaMalloc allocations since the last reset
 * (reset: restart it from what is held now); tests find it by dlsym. */
extern "C" size_t emu_device_peak(int reset);

/* 1 when [p, p + bytes) lies inside one cudaMalloc allocation. */
extern "C" int emu_is_device(const void *p, size_t bytes);

/* ---- kernel launches (tests/emu/launch.c writes the calls) -------------- */

struct emu_cfg {
    dim3 grid, block;
    size_t shmem;
    cudaStream_t stream;
};

inline emu_cfg emu_config(dim3 grid, dim3 block, size_t shmem = 0, cudaStream_t s = 0)
{
    emu_cfg c = {grid, block, shmem, s};
    return c;
}

/* What a queued operation touches, for the stream hazard check (emu.cpp,
 * "stream hazards"): the allocation holding p, whole; write 0 reads it. */
struct emu_access {
    const void *p;
    int write;
};

/* Queues body(arg) once per thread of every block of c on c's stream
 * (emu.cpp), then release(arg); a bad configuration fails at once (func:
 * the kernel, whose cudaFuncSetAttribute settings apply). acc: the
 * launch's pointer arguments. */
void emu_run(const emu_cfg *c, const void *func, void (*body)(void *), void *arg, void (*release)(void *),
             const char *kernel, const emu_access *acc, int nacc);

/* Dynamic shared memory (the launch's third argument): over 48 KiB only
 * after cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize,
 * bytes) raised the kernel's limit, which may not pass the emulated
 * device's opt-in maximum (cc 9.0: 227 KiB; 8.0: 163 KiB; other 8.x: 99
 * KiB). A kernel reaches it through cuda/common.cuh's cuda_dyn_smem<T>();
 * it reads as NaN until written, as static shared memory does. */
enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
    cudaFuncAttributePreferredSharedMemoryCarveout = 9
};
cudaError_t emu_func_set_attribute(const void *func, cudaFuncAttribute attr, int value);
template <typename... P> inline cudaError_t cudaFuncSetAttribute(void (*func)(P...), cudaFuncAttribute attr, int value)
{
    return emu_func_set_attribute(reinterpret_cast<const void *>(func), attr, value);
}
void *emu_dyn_smem(void);
#define CUDA_EMU_DYN_SMEM() emu_dyn_smem()

/* A pointer argument of a launch must be NULL or point into device memory
 * (or page-locked host memory, which the device can reach): a host
 * pointer would fault on a GPU. Records a launch failure otherwise. */
void emu_check_pointer(const void *p, const char *kernel, int arg);
template <typename T> inline void emu_check_arg(const T &, const char *, int, emu_access *, int &) {}
/* A launch does not say what a kernel reads or writes: a pointer to const
 * is taken as read, any other pointer as written (a kernel may write
 * through it), so two streams sharing an input through plain pointers
 * would be a false report, and one through a struct member is not seen. */
template <typename T> inline void emu_check_arg(T *const &p, const char *kernel, int arg, emu_access *acc, int &n)
{
    emu_check_pointer((const void *)p, kernel, arg);
    acc[n++] = emu_access{(const void *)p, !std::is_const<T>::value};
}

template <typename... P> struct emu_launcher {
    void (*kernel)(P...);
    emu_cfg cfg;
    const char *name;
    /* The kernel's parameter types: arguments convert as in a launch. */
    void operator()(P... a) const
    {
        int arg = 0, nacc = 0;
        emu_access acc[sizeof...(P) + 1];
        (emu_check_arg(a, name, arg++, acc, nacc), ...);
        /* the arguments are copied at the launch, as a GPU's are */
        struct call {
            void (*k)(P...);
            std::tuple<P...> args;
        };
        call *x = new call{kernel, std::tuple<P...>(a...)};
        emu_run(&cfg, reinterpret_cast<const void *>(kernel), [](void *p) { std::apply(((call *)p)->k, ((call *)p)->args); }, x,
                [](void *p) { delete (call *)p; }, name, acc, nacc);
    }
};

template <typename... P> emu_launcher<P...> emu_launcher_of(void (*k)(P...), const char *name, emu_cfg c)
{
    return emu_launcher<P...>{k, c, name};
}

#endif
