/* Token embedding: forward gathers rows of the table (the fp32 master, or
 * the 2-byte working copy under bf16/fp16: what every rank holds whole
 * after the parameter all-gather) into the fp32 residual stream, with
 * 128-bit accesses where the rows allow; backward
 * adds gradient rows into the table's gradient per distinct token (the host-built index of cuda_embed_index), each
 * token's rows in order: the CPU backend's sums, bit for bit, no atomics. */
#ifndef SPOTRAIN_CUDA_ENCODER_CUH
#define SPOTRAIN_CUDA_ENCODER_CUH

#include "common.cuh"

/* Row n of the micro-batch reads token tokens[(n / T) * stride + n % T]. */
__device__ __forceinline__ int64_t cuda_tok(const int32_t *tokens, int64_t n, int64_t T, int64_t stride, int64_t shift)
{
    return (int64_t)tokens[(n / T) * stride + n % T + shift];
}

/* Each thread copies CUDA_ENC_VEC elements of a row; with vec (D a
 * multiple of it, both bases 16-byte aligned) through 128-bit accesses. */
enum { CUDA_ENC_VEC = 8 };

template <typename W>
static __global__ void cuda_encoder_forward_k(float *out, const W *emb, const int32_t *tokens, int64_t N,
                                              int64_t T, int64_t stride, int64_t D, int vec)
{
    constexpr int E = CUDA_ENC_VEC;
    int64_t i0 = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * E;
    if (i0 >= N * D)
        return;
    if (vec) {
        int64_t n = i0 / D, j = i0 % D;
        W e[E];
        float o[E];
        cuda_ld128<E>(e, emb + cuda_tok(tokens, n, T, stride, 0) * D + j);
        CUDA_UNROLL
        for (int k = 0; k < E; k++)
            o[k] = cuda_f(e[k]);
        cuda_st128<E>(out + i0, o);
        return;
    }
    for (int64_t i = i0; i < i0 + E && i < N * D; i++) {
        int64_t n = i / D, j = i % D;
        out[i] = cuda_f(emb[cuda_tok(tokens, n, T, stride, 0) * D + j]);
    }
}

/* idx: [U, tok[U], start[U+1], rows[N]]; block b: token b / nbj, columns
 * of slice b % nbj. */
static __global__ void cuda_encoder_backward_k(float *__restrict__ gemb, const float *__restrict__ dres,
                                               const int32_t *__restrict__ idx, int64_t U, int64_t D, int64_t nbj)
{
    int64_t u = blockIdx.x / nbj, j = (int64_t)(blockIdx.x % nbj) * blockDim.x + threadIdx.x;
    if (j >= D)
        return;
    const int32_t *tok = idx + 1, *start = tok + U, *rows = start + U + 1;
    float *g = gemb + (int64_t)tok[u] * D + j;
    float acc = *g;
    for (int64_t k = start[u]; k < start[u + 1]; k++)
        acc += dres[(int64_t)rows[k] * D + j];
    *g = acc;
}

template <typename W>
static int cuda_encoder_forward(cudaStream_t s, float *out, const W *emb, const int32_t *tokens, int64_t N,
                                int64_t T, int64_t stride, int64_t D)
{
    int rc = ST_OK, kp_ = cuda_kp_enter(s, CUDA_K_ELEM);
    int vec = D % CUDA_ENC_VEC == 0 && cuda_aligned16(out) && cuda_aligned16(emb);
    cuda_encoder_forward_k<W><<<cuda_blocks(N * D, 256 * CUDA_ENC_VEC), 256, 0, s>>>(out, emb, tokens, N, T, stride,
                                                                                    D, vec);
    CU_LAUNCHED();
exit:
    cuda_kp_leave(s, kp_);
    return rc;
}

/* idx (device) from cuda_embed_index; U its distinct-token count. */
static int cuda_encoder_backward(cudaStream_t s, float *gemb, const float *dres, const int32_t *idx, int64_t U,
                                 int64_t D)
{
    int rc = ST_OK, kp_ = cuda_kp_enter(s, CUDA_K_ELEM);
    int64_t nbj = cuda_blocks(D, 256);
    if (U > 0) {
        cuda_encoder_backward_k<<<(unsigned)(U * nbj), 256, 0, s>>>(gemb, dres, idx, U, D, nbj);
        CU_LAUNCHED();
    }
exit:
    cuda_kp_leave(s, kp_);
    return rc;
}

#endif
