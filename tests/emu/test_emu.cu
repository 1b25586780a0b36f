/* The emulator's own checks (tests/emu): launches in every form the
 * rewriter must handle, block-wide reductions over several warps and 2-D
 * blocks, the fp16 conversion's edge cases, a missing barrier showing as
 * NaN (shared memory is poisoned per block), and each misuse it must turn
 * into a launch failure (deadlock, a barrier some threads skip, a shuffle
 * in a partial warp, a host pointer as a kernel argument, a bad
 * configuration, a copy in the wrong direction, two streams touching the
 * same memory unordered), the last one sticky as on a GPU; and what
 * orders two streams (events, host waits) not reported as a hazard; the
 * warp matrix operations (wmma) against a plain product in every operand
 * layout, a store read by another lane before __syncwarp showing as NaN,
 * and a wmma call some lanes skip or make with other arguments failing;
 * a 128-bit load or store (cuda/common.cuh) through a pointer not 16-byte
 * aligned failing the launch in every build; dynamic shared memory over 48
 * KiB refused until cudaFuncSetAttribute raised the kernel's limit, and
 * that limit held to the device's opt-in maximum.
 * module: cuda */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#include "cuda/common.cuh"

extern "C" {
#include "tests/harness.h"
}

template <typename A> __device__ A emu_t_block_sum(A v, A *sh)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    int w = (int)(threadIdx.x + threadIdx.y * blockDim.x) / 32, l = (int)(threadIdx.x + threadIdx.y * blockDim.x) % 32;
    int nw = (int)(blockDim.x * blockDim.y) / 32;
    __syncthreads();
    if (l == 0)
        sh[w] = v;
    __syncthreads();
    v = l < nw ? sh[l] : (A)0;
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* out[block] = sum of (block, thread) ids over a 2-D block; every thread
 * checks it got the same total. */
template <typename A> __global__ void emu_t_sum_k(A *out, int *disagree)
{
    __shared__ A sh[32];
    unsigned t = threadIdx.x + threadIdx.y * blockDim.x;
    A v = (A)(blockIdx.x * 1000 + t);
    A s = emu_t_block_sum(v, sh);
    __shared__ A first;
    if (t == 0)
        first = s;
    __syncthreads();
    if (s != first)
        *disagree += 1;   /* one OS thread: no race in the emulator */
    if (t == 0)
        out[blockIdx.x] = s;
}

static void test_reduce(void)
{
    double *d = NULL;
    int *dis = NULL, h_dis = -1;
    double h[3];
    EXPECT(cudaMalloc((void **)&d, 3 * sizeof(double)) == cudaSuccess);
    EXPECT(cudaMalloc((void **)&dis, sizeof(int)) == cudaSuccess);
    EXPECT(cudaMemset(dis, 0, sizeof(int)) == cudaSuccess);
    emu_t_sum_k<double>
        <<<3, dim3(32, 8)>>>(d, dis);
    EXPECT(cudaGetLastError() == cudaSuccess);
    EXPECT(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
    EXPECT(cudaMemcpy(&h_dis, dis, sizeof h_dis, cudaMemcpyDeviceToHost) == cudaSuccess);
    for (int b = 0; b < 3; b++)
        EXPECT(h[b] == 256.0 * 1000 * b + 255.0 * 256 / 2);
    EXPECT(h_dis == 0);
    cudaFree(d);
    cudaFree(dis);
}

__global__ void emu_t_index_k(int *out, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n)
        out[i] = i;
}

static void test_launch_forms(void)
{
    int *d = NULL, h[300];
    cudaStream_t s;
    EXPECT(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
    EXPECT(cudaMalloc((void **)&d, sizeof h) == cudaSuccess);
    emu_t_index_k<<<3, 128, 0>>>(d, 300);
    EXPECT(cudaGetLastError() == cudaSuccess);
    /* both launches write d, from two streams the host must order */
    EXPECT(cudaDeviceSynchronize() == cudaSuccess);
    emu_t_index_k<<<dim3(2, 1, 1), 256, 0, s>>>(
        d,
        300);
    EXPECT(cudaGetLastError() == cudaSuccess);
    EXPECT(cudaMemcpyAsync(h, d, sizeof h, cudaMemcpyDeviceToHost, s) == cudaSuccess);
    EXPECT(cudaStreamSynchronize(s) == cudaSuccess);
    int ok = 1;
    for (int i = 0; i < 300; i++)
        ok &= h[i] == i;
    EXPECT(ok);
    cudaFree(d);
    cudaStreamDestroy(s);
}

static void test_half(void)
{
    struct {
        float in;
        unsigned short want;
    } c[] = {{0.0f, 0x0000}, {-0.0f, 0x8000}, {1.0f, 0x3c00}, {65504.0f, 0x7bff}, {65519.0f, 0x7bff},
             {65520.0f, 0x7c00}, {1e9f, 0x7c00}, {-1e9f, 0xfc00}, {INFINITY, 0x7c00},
             {5.9604644775390625e-8f, 0x0001},   /* 2^-24, the smallest subnormal */
             {2.98023223876953125e-8f, 0x0000},  /* 2^-25: a tie, to even (0) */
             {8.940696716308594e-8f, 0x0002},    /* 1.5 * 2^-24: a tie, to even (2) */
             {4.4703483581542969e-8f, 0x0001},   /* 0.75 * 2^-24: up to 1 */
             {6.103515625e-5f, 0x0400},          /* 2^-14, the smallest normal */
             {1.0009765625f, 0x3c01}, {1.00048828125f, 0x3c00} /* a tie between 0x3c00 and 0x3c01 */};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        __half h = __float2half_rn(c[i].in);
        if (h.__x != c[i].want)
            fprintf(stderr, "    half(%g) = 0x%04x, want 0x%04x\n", (double)c[i].in, h.__x, c[i].want);
        EXPECT(h.__x == c[i].want);
    }
    struct {
        unsigned short in;
        float want;
    } r[] = {{0x7bff, 65504.0f}, {0x0001, 5.9604644775390625e-8f}, {0x3555, 0.333251953125f}, {0xfc00, -INFINITY},
             {0x8400, -6.103515625e-5f}, {0x03ff, 6.0975551605224609e-5f}};
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
        __half_raw raw = {r[i].in};
        EXPECT(__half2float(__half(raw)) == r[i].want);
    }
    EXPECT(isnan(__half2float(__float2half_rn(NAN))));
    /* every half survives the round trip */
    int same = 1;
    for (unsigned u = 0; u < 0x10000u; u++) {
        __half_raw raw = {(unsigned short)u};
        float f = __half2float(__half(raw));
        if (f == f)
            same &= __float2half_rn(f).__x == u;
    }
    EXPECT(same);
}

/* A missing barrier: each thread reads its neighbour's shared slot. Shared
 * memory is NaN before a block writes it, and the thread that writes the
 * slot runs after the reader (forward order for i + 1, reverse for i - 1),
 * so the race shows as NaN. */
__global__ void emu_t_no_barrier_k(float *out, int step)
{
    __shared__ float sh[64];
    unsigned i = threadIdx.x;
    sh[i] = (float)i;
    out[i] = sh[(i + (unsigned)step) % 64];
}

static void test_shared_poison(void)
{
    float *d = NULL, h[64];
    EXPECT(cudaMalloc((void **)&d, sizeof h) == cudaSuccess);
    const char *o = getenv("SPOTRAIN_EMU_ORDER");
    int step = o && !strcmp(o, "reverse") ? 63 : 1;   /* reads i - 1, or i + 1 */
    emu_t_no_barrier_k<<<1, 64>>>(d, step);
    EXPECT(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
    int nan = 0;
    for (int i = 0; i < 64; i++)
        nan += h[i] != h[i];
    EXPECT(nan >= 63);
    cudaFree(d);
}

/* Streams run when the host waits: a result read before the wait is not
 * there yet (as on a slow GPU), and an event's time is not ready. */
static void test_streams_lazy(void)
{
    int *d = NULL, *h = NULL;
    cudaStream_t s;
    cudaEvent_t a, b;
    float ms = 0;
    EXPECT(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
    EXPECT(cudaEventCreate(&a) == cudaSuccess && cudaEventCreate(&b) == cudaSuccess);
    EXPECT(cudaMalloc((void **)&d, 64 * sizeof(int)) == cudaSuccess);
    EXPECT(cudaMallocHost((void **)&h, 64 * sizeof(int)) == cudaSuccess);
    memset(h, 0, 64 * sizeof(int));
    EXPECT(cudaEventRecord(a, s) == cudaSuccess);
    emu_t_index_k<<<1, 64, 0, s>>>(d, 64);
    EXPECT(cudaMemcpyAsync(h, d, 64 * sizeof(int), cudaMemcpyDeviceToHost, s) == cudaSuccess);
    EXPECT(cudaEventRecord(b, s) == cudaSuccess);
    int lazy = !(getenv("SPOTRAIN_EMU_STREAMS") && !strcmp(getenv("SPOTRAIN_EMU_STREAMS"), "sync"));
    if (lazy) {
        EXPECT(h[63] == 0);   /* not yet */
        EXPECT(cudaEventElapsedTime(&ms, a, b) == cudaErrorNotReady);
        cudaGetLastError();
    }
    EXPECT(cudaEventSynchronize(b) == cudaSuccess);
    EXPECT(h[63] == 63);
    EXPECT(cudaEventElapsedTime(&ms, a, b) == cudaSuccess && ms >= 0);
    /* a second stream waits for the first through an event */
    cudaStream_t s2;
    EXPECT(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking) == cudaSuccess);
    EXPECT(cudaMemsetAsync(d, 0, 64 * sizeof(int), s) == cudaSuccess);
    EXPECT(cudaEventRecord(a, s) == cudaSuccess);
    EXPECT(cudaStreamWaitEvent(s2, a, 0) == cudaSuccess);
    EXPECT(cudaMemcpyAsync(h, d, 64 * sizeof(int), cudaMemcpyDeviceToHost, s2) == cudaSuccess);
    EXPECT(cudaStreamSynchronize(s2) == cudaSuccess);
    EXPECT(h[63] == 0);
    cudaFreeHost(h);
    cudaFree(d);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    cudaStreamDestroy(s);
    cudaStreamDestroy(s2);
}

/* dst[i] = src[i] + 1: reads src (a pointer to const), writes dst */
__global__ void emu_t_inc_k(int *dst, const int *src, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n)
        dst[i] = src[i] + 1;
}

/* Two streams sharing memory with what orders them: an event, the host's
 * wait, or only reads; none of it is a hazard (run_failure has the
 * unordered ones). */
static void test_stream_hazards(void)
{
    int *d = NULL, *d2 = NULL, *d3 = NULL, h[64];
    cudaStream_t s1, s2;
    cudaEvent_t a, b;
    EXPECT(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking) == cudaSuccess);
    EXPECT(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking) == cudaSuccess);
    EXPECT(cudaEventCreate(&a) == cudaSuccess && cudaEventCreate(&b) == cudaSuccess);
    EXPECT(cudaMalloc((void **)&d, sizeof h) == cudaSuccess);
    EXPECT(cudaMalloc((void **)&d2, sizeof h) == cudaSuccess);
    EXPECT(cudaMalloc((void **)&d3, sizeof h) == cudaSuccess);
    /* write on s1, read on s2 after an event */
    emu_t_index_k<<<1, 64, 0, s1>>>(d, 64);
    EXPECT(cudaEventRecord(a, s1) == cudaSuccess);
    EXPECT(cudaStreamWaitEvent(s2, a, 0) == cudaSuccess);
    emu_t_inc_k<<<1, 64, 0, s2>>>(d2, d, 64);
    /* both read d at once: no conflict */
    emu_t_inc_k<<<1, 64, 0, s1>>>(d3, d, 64);
    /* s1 overwrites d only after s2's read, through an event */
    EXPECT(cudaEventRecord(b, s2) == cudaSuccess);
    EXPECT(cudaStreamWaitEvent(s1, b, 0) == cudaSuccess);
    EXPECT(cudaMemsetAsync(d, 0, sizeof h, s1) == cudaSuccess);
    /* the host waits for s1, so what it queues on s2 comes after */
    EXPECT(cudaStreamSynchronize(s1) == cudaSuccess);
    EXPECT(cudaMemcpyAsync(d3, d, sizeof h, cudaMemcpyDeviceToDevice, s2) == cudaSuccess);
    EXPECT(cudaMemcpyAsync(h, d2, sizeof h, cudaMemcpyDeviceToHost, s2) == cudaSuccess);
    EXPECT(cudaStreamSynchronize(s2) == cudaSuccess);
    EXPECT(cudaGetLastError() == cudaSuccess);
    EXPECT(h[0] == 1 && h[63] == 64);
    cudaFree(d);
    cudaFree(d2);
    cudaFree(d3);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    cudaStreamDestroy(s1);
    cudaStreamDestroy(s2);
}

/* ---- warp matrix operations ---------------------------------------------- */

using namespace nvcuda;

/* Warp w: D = op(A) op(B) + C over K = 32 (two k steps), A 16x32, B 32x16,
 * layouts by w (bit 0: A column-major, bit 1: B column-major); C loaded
 * from memory, or zero through fill_fragment for warp 0. */
template <typename E, int TA, int TB>
__device__ void emu_t_mma_one(float *d, const E *a, const E *b, const float *c, int zero_c)
{
    typedef typename std::conditional<TA, wmma::col_major, wmma::row_major>::type LA;
    typedef typename std::conditional<TB, wmma::col_major, wmma::row_major>::type LB;
    __shared__ __align__(32) float st[4][256];
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, E, LA> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, E, LB> fb;
    if (zero_c)
        wmma::fill_fragment(acc, 0.0f);
    else
        wmma::load_matrix_sync(acc, c, 16, wmma::mem_row_major);
    for (int k = 0; k < 32; k += 16) {
        /* A 16x32: row-major ld 32, or stored transposed (32x16, ld 16) */
        wmma::load_matrix_sync(fa, TA ? a + k * 16 : a + k, TA ? 16 : 32);
        /* B 32x16: row-major ld 16, or stored transposed (16x32, ld 32) */
        wmma::load_matrix_sync(fb, TB ? b + k : b + k * 16, TB ? 32 : 16);
        wmma::mma_sync(acc, fa, fb, acc);
    }
    int w = (int)threadIdx.x / 32;
    wmma::store_matrix_sync(st[w], acc, 16, wmma::mem_row_major);
    __syncwarp();
    for (int i = (int)threadIdx.x % 32; i < 256; i += 32)
        d[i] = st[w][i];
}

template <typename E> __global__ void emu_t_mma_k(float *d, const E *a, const E *b, const float *c)
{
    int w = (int)threadIdx.x / 32;
    if (w == 0)
        emu_t_mma_one<E, 0, 0>(d, a, b, c, 1);
    else if (w == 1)
        emu_t_mma_one<E, 1, 0>(d + 256, a, b, c, 0);
    else if (w == 2)
        emu_t_mma_one<E, 0, 1>(d + 512, a, b, c, 0);
    else
        emu_t_mma_one<E, 1, 1>(d + 768, a, b, c, 0);
}

template <typename E> static void emu_t_mma(E (*to)(float), const char *name)
{
    float ha[512], hb[512], hc[256], hd[1024];
    E ea[512], eb[512];
    for (int i = 0; i < 512; i++) {
        ha[i] = (float)((i * 37) % 19 - 9) / 8.0f;   /* exact in bf16 and fp16 */
        hb[i] = (float)((i * 11) % 13 - 6) / 4.0f;
        ea[i] = to(ha[i]);
        eb[i] = to(hb[i]);
    }
    for (int i = 0; i < 256; i++)
        hc[i] = (float)(i % 7) - 3.0f;
    E *da = NULL, *db = NULL;
    float *dc = NULL, *dd = NULL;
    EXPECT(cudaMalloc((void **)&da, sizeof ea) == cudaSuccess && cudaMalloc((void **)&db, sizeof eb) == cudaSuccess);
    EXPECT(cudaMalloc((void **)&dc, sizeof hc) == cudaSuccess && cudaMalloc((void **)&dd, sizeof hd) == cudaSuccess);
    EXPECT(cudaMemcpy(da, ea, sizeof ea, cudaMemcpyHostToDevice) == cudaSuccess);
    EXPECT(cudaMemcpy(db, eb, sizeof eb, cudaMemcpyHostToDevice) == cudaSuccess);
    EXPECT(cudaMemcpy(dc, hc, sizeof hc, cudaMemcpyHostToDevice) == cudaSuccess);
    emu_t_mma_k<E><<<1, 128>>>(dd, da, db, dc);
    EXPECT(cudaMemcpy(hd, dd, sizeof hd, cudaMemcpyDeviceToHost) == cudaSuccess);
    int bad = 0;
    for (int w = 0; w < 4; w++)
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 16; j++) {
                double want = w == 0 ? 0 : hc[i * 16 + j];
                for (int k = 0; k < 32; k++)
                    want += (double)((w & 1) ? ha[k * 16 + i] : ha[i * 32 + k]) *
                            ((w & 2) ? hb[j * 32 + k] : hb[k * 16 + j]);
                bad += hd[w * 256 + i * 16 + j] != (float)want;   /* small integers / 32: exact */
            }
    if (bad)
        fprintf(stderr, "    %s: %d of 1024 products differ\n", name, bad);
    EXPECT(bad == 0);
    cudaFree(da);
    cudaFree(db);
    cudaFree(dc);
    cudaFree(dd);
}

static __nv_bfloat16 emu_t_bf(float x) { return __float2bfloat16(x); }
static __half emu_t_h(float x) { return __float2half_rn(x); }

static void test_wmma(void)
{
    emu_t_mma<__nv_bfloat16>(emu_t_bf, "bf16");
    emu_t_mma<__half>(emu_t_h, "fp16");
}

/* Lane 0 reads element 1 of a stored tile, which lane 1 stores: after a
 * __syncwarp it is there; without one the emulator (each lane storing its
 * share when it runs) shows the race as the shared memory's NaN poison. */
__global__ void emu_t_store_race_k(float *out, int sync)
{
    __shared__ __align__(32) float st[256];
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 2.0f);
    wmma::store_matrix_sync(st, acc, 16, wmma::mem_row_major);
    if (sync)
        __syncwarp();
    if (threadIdx.x == 0)
        out[0] = st[1];
}

static void test_wmma_store_race(void)
{
    float *d = NULL, h[2];
    EXPECT(cudaMalloc((void **)&d, sizeof h) == cudaSuccess);
    emu_t_store_race_k<<<1, 32>>>(d, 1);
    emu_t_store_race_k<<<1, 32>>>(d + 1, 0);
    EXPECT(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
    EXPECT(h[0] == 2.0f);
    if (!getenv("SPOTRAIN_EMU_ORDER"))   /* lane 0 runs first */
        EXPECT(h[1] != h[1]);
    cudaFree(d);
}

/* wmma misuse: half the warp skips the call; lanes pass other pointers; a
 * pointer not 32-byte aligned. */
__global__ void emu_t_wmma_misuse_k(float *p, int how)
{
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    if (how == 0) {
        if (threadIdx.x < 16)
            wmma::fill_fragment(acc, 1.0f);
        return;
    }
    wmma::fill_fragment(acc, 1.0f);
    if (how == 1)
        wmma::store_matrix_sync(p + (threadIdx.x % 2) * 256, acc, 16, wmma::mem_row_major);
    else
        wmma::store_matrix_sync(p + 4, acc, 16, wmma::mem_row_major);
}

/* ---- misuse: each must fail the launch ---------------------------------- */

__global__ void emu_t_extra_sync_k(void)
{
    if (threadIdx.x == 0)
        __syncthreads();
}

__global__ void emu_t_divergent_sync_k(int *p)
{
    if (threadIdx.x >= 64)
        return;
    __syncthreads();
    p[threadIdx.x] = 1;
}

__global__ void emu_t_partial_warp_k(float *p)
{
    p[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (float)threadIdx.x, 1);
}

/* common.cuh's 128-bit load and store one float past an aligned base: a
 * misaligned-address fault on a GPU, which x86 would do silently */
__global__ void emu_t_misaligned_k(float *p, int store)
{
    float v[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    if (store)
        cuda_st128<4>(p + 1, v);
    else
        cuda_ld128<4>(v, p + 1);
    p[8 + threadIdx.x] = v[0];
}

/* half of warp 0 at a barrier, the other half at a shuffle: deadlock */
__global__ void emu_t_split_k(void)
{
    if (threadIdx.x < 16)
        __syncthreads();
    else
        (void)__shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

/* out[i] = i read back reversed through n floats of dynamic shared memory */
__global__ void emu_t_dyn_k(float *out, int n)
{
    float *sh = cuda_dyn_smem<float>();
    for (int i = (int)threadIdx.x; i < n; i += (int)blockDim.x)
        sh[i] = (float)i;
    __syncthreads();
    for (int i = (int)threadIdx.x; i < n; i += (int)blockDim.x)
        out[i] = sh[n - 1 - i];
}

/* Dynamic shared memory: up to 48 KiB as it is; more only after
 * cudaFuncSetAttribute raised the kernel's limit, and only up to the
 * device's opt-in maximum (227 KiB on the emulated cc 9.0). */
static void test_dyn_smem(void)
{
    enum { BIG = 64 * 1024, N = BIG / 4 };
    float *d = NULL, *h = (float *)malloc(BIG);
    EXPECT(h && cudaMalloc((void **)&d, BIG) == cudaSuccess);
    emu_t_dyn_k<<<1, 128, 1024>>>(d, 256);
    EXPECT(cudaGetLastError() == cudaSuccess);
    emu_t_dyn_k<<<2, 128, BIG>>>(d, N);
    EXPECT(cudaGetLastError() == cudaErrorInvalidConfiguration);   /* not raised: a GPU refuses it */
    EXPECT(cudaFuncSetAttribute(emu_t_dyn_k, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024) ==
           cudaErrorInvalidValue);
    cudaGetLastError();
    EXPECT(cudaFuncSetAttribute(emu_t_dyn_k, cudaFuncAttributeMaxDynamicSharedMemorySize, BIG) == cudaSuccess);
    emu_t_dyn_k<<<2, 128, BIG + 16>>>(d, N);
    EXPECT(cudaGetLastError() == cudaErrorInvalidConfiguration);   /* past the raised limit */
    emu_t_dyn_k<<<2, 128, BIG>>>(d, N);
    EXPECT(cudaGetLastError() == cudaSuccess);
    EXPECT(cudaMemcpy(h, d, BIG, cudaMemcpyDeviceToHost) == cudaSuccess);
    int bad = 0;
    for (int i = 0; i < N; i++)
        bad += h[i] != (float)(N - 1 - i);
    EXPECT(bad == 0);
    cudaFree(d);
    free(h);
}

static void test_misuse(void)
{
    int *d = NULL, h = 0;
    EXPECT(cudaMalloc((void **)&d, 1024 * sizeof(int)) == cudaSuccess);
    emu_t_index_k<<<0, 128>>>(d, 1);
    EXPECT(cudaGetLastError() == cudaErrorInvalidConfiguration);
    emu_t_index_k<<<1, 2048>>>(d, 1);
    EXPECT(cudaGetLastError() == cudaErrorInvalidConfiguration);
    EXPECT(cudaGetLastError() == cudaSuccess);   /* not sticky */
    EXPECT(cudaMemcpy(d, &h, 4, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
    EXPECT(cudaMemcpy(&h, d + 1023, 8, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
    EXPECT(cudaMemset(&h, 0, 4) == cudaErrorInvalidValue);
    EXPECT(cudaFree(&h) == cudaErrorInvalidValue);
    cudaGetLastError();
    EXPECT(cudaMemcpy(&h, d, 4, cudaMemcpyDeviceToHost) == cudaSuccess);
    cudaFree(d);
}

/* Each launch failure is sticky, so one per process: run as
 * `test_emu deadlock` etc. by test_failures below. */
static int run_failure(const char *which)
{
    int *d = NULL, *out = NULL;
    cudaStream_t s1 = NULL, s2 = NULL;
    if (cudaMalloc((void **)&d, 1024 * sizeof(int)) != cudaSuccess)
        return 2;
    if (!strcmp(which, "extra_sync"))
        emu_t_extra_sync_k<<<1, 64>>>();
    else if (!strcmp(which, "divergent_sync"))
        emu_t_divergent_sync_k<<<2, 128>>>(d);
    else if (!strcmp(which, "partial_warp"))
        emu_t_partial_warp_k<<<1, 48>>>((float *)d);
    else if (!strcmp(which, "split"))
        emu_t_split_k<<<1, 64>>>();
    else if (!strncmp(which, "misaligned_", 11))
        emu_t_misaligned_k<<<1, 32>>>((float *)d, !strcmp(which, "misaligned_st"));
    else if (!strncmp(which, "wmma_", 5))
        emu_t_wmma_misuse_k<<<1, 32>>>((float *)d, !strcmp(which, "wmma_partial") ? 0
                                                   : !strcmp(which, "wmma_args") ? 1 : 2);
    else if (!strcmp(which, "host_pointer")) {
        static int host[16];
        emu_t_index_k<<<1, 16>>>(host, 16);
    }
    else if (!strcmp(which, "hazard_read") || !strcmp(which, "hazard_write")) {
        /* one stream writes what another reads, nothing between them: read
         * after write (a kernel) and write after read (a memset, the
         * optimizer overwriting what the snapshot copies) */
        if (cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking) != cudaSuccess ||
            cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking) != cudaSuccess)
            return 2;
        if (which[7] == 'r') {
            if (cudaMalloc((void **)&out, 64 * sizeof(int)) != cudaSuccess)
                return 2;
            emu_t_index_k<<<1, 64, 0, s1>>>(d, 64);
            emu_t_inc_k<<<1, 64, 0, s2>>>(out, d, 64);
        } else {
            static int pinned_host[64];
            if (cudaHostRegister(pinned_host, sizeof pinned_host, cudaHostRegisterDefault) != cudaSuccess ||
                cudaMemcpyAsync(pinned_host, d, sizeof pinned_host, cudaMemcpyDeviceToHost, s2) != cudaSuccess)
                return 2;
            cudaMemsetAsync(d, 0, 64, s1);
        }
    }
    else
        return 2;
    cudaError_t e = cudaDeviceSynchronize();   /* the kernel ran: its error */
    /* sticky: later calls fail too */
    cudaError_t later = cudaMemset(d, 0, 4);
    cudaFree(d);
    cudaFree(out);
    if (s1)
        cudaStreamDestroy(s1);
    if (s2)
        cudaStreamDestroy(s2);
    return e == cudaErrorLaunchFailure && later == cudaErrorLaunchFailure ? 0 : 1;
}

static const char *emu_t_self;

static void test_failures(void)
{
    const char *cases[] = {"extra_sync", "divergent_sync", "partial_warp", "split", "host_pointer", "hazard_read",
                           "hazard_write", "wmma_partial", "wmma_args", "wmma_align", "misaligned_ld",
                           "misaligned_st"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "'%s' %s 2>/dev/null", emu_t_self, cases[i]);
        int rc = system(cmd);
        if (rc != 0)
            fprintf(stderr, "    %s: not reported as a launch failure (%d)\n", cases[i], rc);
        EXPECT(rc == 0);
    }
}

int main(int argc, char **argv)
{
    if (argc == 2)
        return run_failure(argv[1]);
    emu_t_self = argv[0];
    harness_run("emu_reduce", test_reduce);
    harness_run("emu_launch_forms", test_launch_forms);
    harness_run("emu_half", test_half);
    harness_run("emu_shared_poison", test_shared_poison);
    harness_run("emu_streams_lazy", test_streams_lazy);
    harness_run("emu_stream_hazards", test_stream_hazards);
    harness_run("emu_wmma", test_wmma);
    harness_run("emu_wmma_store_race", test_wmma_store_race);
    harness_run("emu_dyn_smem", test_dyn_smem);
    harness_run("emu_misuse", test_misuse);
    harness_run("emu_failures", test_failures);
    return harness_end();
}
