/* Emulation shim (tests/emu) of the warp matrix operations of <mma.h>
 * (nvcuda::wmma) that cuda/attention.cuh uses: m16n16k16 fragments of
 * bf16/fp16 operands with an fp32 accumulator. Each call is warp-collective
 * as on a GPU: every lane must arrive with the same arguments (emu_warp_op),
 * else the launch fails or deadlocks. The emulated fragment holds the whole
 * tile in each lane, row-major: a kernel must not rely on that (on a GPU a
 * lane holds a few elements in an undocumented order). A store writes from
 * each lane only every 32nd element, so a lane that reads another lane's
 * part before a __syncwarp reads stale memory here too. Products are exact
 * (a 16-bit product fits fp32) and summed in fp32 in k order. */
#ifndef SPOTRAIN_EMU_MMA_H
#define SPOTRAIN_EMU_MMA_H

#include <stdint.h>
#include "emu.h"
#include "cuda_bf16.h"
#include "cuda_fp16.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K> struct emu_dims;
template <int M, int N, int K> struct emu_dims<matrix_a, M, N, K> {
    enum { R = M, C = K };
};
template <int M, int N, int K> struct emu_dims<matrix_b, M, N, K> {
    enum { R = K, C = N };
};
template <int M, int N, int K> struct emu_dims<accumulator, M, N, K> {
    enum { R = M, C = N };
};

template <typename Use, int M, int N, int K, typename T, typename Layout = void> class fragment {
    static_assert(M == 16 && N == 16 && K == 16, "the emulator has the m16n16k16 shape only");

public:
    typedef T element_type;
    enum { rows = emu_dims<Use, M, N, K>::R, cols = emu_dims<Use, M, N, K>::C, num_elements = rows * cols };
    T x[num_elements];
};

inline float emu_wmma_f(float v) { return v; }
inline float emu_wmma_f(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float emu_wmma_f(__half v) { return __half2float(v); }

/* What a GPU requires of every pointer and stride (else undefined): the
 * pointer 256-bit aligned, ldm a multiple of 16 bytes. */
inline void emu_wmma_check(const char *op, const void *p, unsigned ldm, size_t elem)
{
    if ((uintptr_t)p % 32 || (ldm * elem) % 16)
        emu_fail_launch("%s at %p with ldm %u: the pointer must be 32-byte aligned and ldm a multiple of %zu elements",
                        op, p, ldm, 16 / elem);
}

inline uint64_t emu_wmma_key(const void *p, unsigned ldm, int layout)
{
    return (uint64_t)(uintptr_t)p * 31u + (uint64_t)ldm * 7u + (uint64_t)layout;
}

template <typename Use, int M, int N, int K, typename T, typename L>
inline void fill_fragment(fragment<Use, M, N, K, T, L> &f, const T &v)
{
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v < 8 ? sizeof v : 8);
    emu_warp_op("wmma::fill_fragment", bits);
    for (int i = 0; i < f.num_elements; i++)
        f.x[i] = v;
}

template <typename Use, int M, int N, int K, typename T, typename L>
inline void emu_wmma_load(fragment<Use, M, N, K, T, L> &f, const T *p, unsigned ldm, int col)
{
    emu_wmma_check("wmma::load_matrix_sync", p, ldm, sizeof(T));
    emu_warp_op("wmma::load_matrix_sync", emu_wmma_key(p, ldm, col));
    typedef fragment<Use, M, N, K, T, L> F;
    for (int r = 0; r < F::rows; r++)
        for (int c = 0; c < F::cols; c++)
            f.x[r * F::cols + c] = col ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c];
}

template <typename Use, int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<Use, M, N, K, T, row_major> &f, const T *p, unsigned ldm)
{
    emu_wmma_load(f, p, ldm, 0);
}

template <typename Use, int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<Use, M, N, K, T, col_major> &f, const T *p, unsigned ldm)
{
    emu_wmma_load(f, p, ldm, 1);
}

template <int M, int N, int K>
inline void load_matrix_sync(fragment<accumulator, M, N, K, float> &f, const float *p, unsigned ldm, layout_t l)
{
    emu_wmma_load(f, p, ldm, l == mem_col_major);
}

template <int M, int N, int K>
inline void store_matrix_sync(float *p, const fragment<accumulator, M, N, K, float> &f, unsigned ldm, layout_t l)
{
    emu_wmma_check("wmma::store_matrix_sync", p, ldm, sizeof(float));
    emu_warp_op("wmma::store_matrix_sync", emu_wmma_key(p, ldm, l));
    typedef fragment<accumulator, M, N, K, float> F;
    for (int i = (int)emu_lane(); i < F::num_elements; i += 32) {
        int r = i / F::cols, c = i % F::cols;
        p[l == mem_col_major ? (size_t)c * ldm + r : (size_t)r * ldm + c] = f.x[i];
    }
}

template <int M, int N, int K, typename T, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, M, N, K, float> &d, const fragment<matrix_a, M, N, K, T, LA> &a,
                     const fragment<matrix_b, M, N, K, T, LB> &b, const fragment<accumulator, M, N, K, float> &c)
{
    emu_warp_op("wmma::mma_sync", 0);
    float out[M * N];
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = c.x[i * N + j];
            for (int k = 0; k < K; k++)
                s += emu_wmma_f(a.x[i * K + k]) * emu_wmma_f(b.x[k * N + j]);
            out[i * N + j] = s;
        }
    memcpy(d.x, out, sizeof out);
}

}   // namespace wmma
}   // namespace nvcuda

#endif
