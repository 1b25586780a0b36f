/* Host-side plans of the CUDA backend, in plain C so CPU tests cover them:
 * the shape of every matrix product (row-major, as the CPU backend writes
 * it, and the column-major call cuBLASLt gets), the activation arena, the
 * AdamW segment table and the per-GPU memory plan. */
#ifndef SPOTRAIN_CUDA_PLAN_H
#define SPOTRAIN_CUDA_PLAN_H

#include <stddef.h>
#include <stdint.h>
#include "model/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Compute precision: GEMM operand and activation storage. Master weights,
 * gradients and Adam state are fp32 in all four. */
typedef enum { CUDA_FP32 = 0, CUDA_TF32 = 1, CUDA_BF16 = 2, CUDA_FP16 = 3 } cuda_prec;

/* NULL or "auto" -> bf16. -1 for an unknown name. */
int cuda_prec_parse(const char *s, cuda_prec *out);
const char *cuda_prec_name(cuda_prec p);
/* Bytes per element of the working copy and of activations. */
size_t cuda_prec_bytes(cuda_prec p);

/* Every size the kernels and GEMMs are launched with, from the shape and the
 * micro-batch alone (never from the device). */
typedef struct {
    int64_t B, T, N;            /* sequences, positions, rows N = B*T */
    int64_t D, F, V, H, KV, hd, grp, qd, kvd, qkvd, L;
    int64_t chunk_rows;         /* classifier + cross-entropy rows per chunk */
    int64_t norm_rows;          /* rows per partial sum of a norm weight's gradient */
} cuda_dims;

void cuda_dims_init(cuda_dims *d, const model_shape *s, int64_t B);

/* The matrix products, forward then backward. Attention itself is not
 * here: cuda/attention.cuh's flash kernels do its products (q permuted to
 * [B, H, T, hd], k and v to [B, KV, T, hd]). */
enum {
    CUDA_G_QKV,        /* qkv[N,qkvd]   = xn1[N,D] Wqkv^T                       */
    CUDA_G_O,          /* mid[N,D]      = res + ao[N,qd] Wo^T                   */
    CUDA_G_GU,         /* gu[N,2F]      = xn2 Wgu^T                             */
    CUDA_G_DOWN,       /* res'[N,D]     = mid + h[N,F] Wd^T                     */
    CUDA_G_LOGITS,     /* z[r,V]        = xnf[r,D] Wlm^T        (r = chunk)     */
    CUDA_G_DXNF,       /* dxn[r,D]      = dz[r,V] Wlm                           */
    CUDA_G_DWLM,       /* dWlm[V,D]    += dz^T xnf                              */
    CUDA_G_DH,         /* dh[N,F]       = dres Wd                               */
    CUDA_G_DWD,        /* dWd[D,F]     += dres^T h                              */
    CUDA_G_DWGU,       /* dWgu[2F,D]   += dgu^T xn2                             */
    CUDA_G_DXN2,       /* dxn[N,D]      = dgu Wgu                               */
    CUDA_G_DAO,        /* dao[N,qd]     = dres Wo                               */
    CUDA_G_DWO,        /* dWo[D,qd]    += dres^T ao                             */
    CUDA_G_DWQKV,      /* dWqkv[qkvd,D]+= dqkv^T xn1                            */
    CUDA_G_DXN1,       /* dxn[N,D]      = dqkv Wqkv                             */
    CUDA_G_COUNT
};

/* One product in row-major terms (as cpu.c's cblas calls): C[M,N] =
 * alpha op(A) op(B) + beta C, op transposing when ta/tb; per batch item the
 * operands advance by sa, sb, sc elements. out_f32: C is fp32 (gradients,
 * residual stream, scores, logits), else the compute precision. */
typedef struct {
    const char *name;
    int ta, tb;
    int64_t M, N, K, lda, ldb, ldc;
    int64_t batch, sa, sb, sc;
    float alpha, beta;
    int out_f32;
} cuda_gemm;

/* The same product as cuBLAS (column-major) computes it: C^T = op(B)^T
 * op(A)^T, so the operands swap; a = the row-major B, b = the row-major A. */
typedef struct {
    int transa, transb;
    int64_t m, n, k, lda, ldb, ldc;
    int64_t batch, stride_a, stride_b, stride_c;
} cuda_gemm_cm;

/* rows: the classifier chunk's rows for the CUDA_G_LOGITS/DXNF/DWLM
 * products (the last chunk is shorter); ignored by the others. */
cuda_gemm cuda_gemm_plan(const cuda_dims *d, int id, int64_t rows);
cuda_gemm_cm cuda_gemm_colmajor(const cuda_gemm *g);

/* The activation arena: one device allocation, every buffer at an offset
 * aligned to CUDA_ARENA_ALIGN bytes. Per layer: what the backward needs;
 * then the shared scratch. With recompute (train.recompute = layers) only
 * CA_RES, the layer's input, is kept per layer: every other per-layer
 * entry of every layer names the same one set (layer 0's offsets), which
 * the backward refills by rerunning the layer's forward from its input. */
enum { CUDA_ARENA_ALIGN = 256 };
enum {
    CA_RES,    /* f32 [N,D] the layer's input (residual stream)             */
    CA_XN1,    /* ct  [N,D] input_layernorm output                          */
    CA_RS1,    /* f32 [N]   its 1/rms                                       */
    CA_Q,      /* ct  [B,H,T,hd] roped queries                              */
    CA_K,      /* ct  [B,KV,T,hd] roped keys                                */
    CA_V,      /* ct  [B,KV,T,hd] values                                    */
    CA_LSE,    /* f32 [B,H,T] softmax row log-sum-exp: P in the backward    */
    CA_AO,     /* ct  [N,qd] attention output, row layout                   */
    CA_MID,    /* f32 [N,D] residual after attention                        */
    CA_XN2,    /* ct  [N,D]                                                 */
    CA_RS2,    /* f32 [N]                                                   */
    CA_GU,     /* ct  [N,2F] gate | up                                      */
    CA_H,      /* ct  [N,F] silu(gate) * up                                 */
    CA_PER_LAYER
};
enum {
    CA_FINAL_RES,  /* f32 [N,D] output of the last layer                    */
    CA_XNF,        /* ct  [N,D] final norm output                           */
    CA_RSF,        /* f32 [N]                                               */
    CA_QKV,        /* ct  [N,qkvd] qkv GEMM output; dqkv in backward        */
    CA_DELTA,      /* f32 [B,H,T] rowsum(dO O): the attention's scratch     */
    CA_DQ,         /* ct  [B,H,T,hd]                                        */
    CA_DK,         /* ct  [B,KV,T,hd]                                       */
    CA_DV,         /* ct  [B,KV,T,hd]                                       */
    CA_DRES,       /* f32 [N,D] gradient of the residual stream             */
    CA_DRES_CT,    /* ct  [N,D] the same, as a GEMM operand                 */
    CA_DXN,        /* f32 [N,D]                                             */
    CA_DH,         /* f32 [N,F]                                             */
    CA_DGU,        /* ct  [N,2F]                                            */
    CA_DAO,        /* ct  [N,qd]                                            */
    CA_LOGITS,     /* f32 [chunk_rows,V]                                    */
    CA_DLOGITS,    /* ct  [N,V] when cuda_dlogits_whole, else [chunk_rows,V] */
    CA_ROWLOSS,    /* f64 [N]                                               */
    CA_NORMPART,   /* f64 [ceil(N/norm_rows), D] norm-gradient partials     */
    CA_TOKENS,     /* i32 [B,T+1]                                           */
    CA_EMBIDX,     /* i32 [3N+2] the embedding backward's index (below)     */
    CA_GLOBAL_COUNT
};

typedef struct {
    cuda_dims d;
    int recompute;          /* 1: one set of layer activations shared by all layers */
    size_t ct;              /* bytes of the compute type */
    size_t n;               /* entries: L * CA_PER_LAYER + CA_GLOBAL_COUNT */
    size_t *off, *bytes;    /* per entry */
    size_t total;
} cuda_arena;

int cuda_arena_plan(cuda_arena *a, const model_shape *s, int64_t B, cuda_prec p);
/* The same with recompute 0 (every layer's set) or 1 (inputs + one set). */
int cuda_arena_plan_rc(cuda_arena *a, const model_shape *s, int64_t B, cuda_prec p, int recompute);
void cuda_arena_free(cuda_arena *a);
size_t cuda_arena_layer(const cuda_arena *a, int64_t layer, int kind);  /* entry index */
size_t cuda_arena_global(const cuda_arena *a, int kind);

/* Whole-micro-batch dlogits: the compute-type dlogits of all N rows take at
 * most CUDA_DLOGITS_WHOLE_BYTES, so the arena keeps them all and the
 * lm_head weight gradient (and the final norm's output gradient) is one
 * product per micro-batch: the fp32 [V, D] gradient read and written once,
 * not once per classifier chunk. Larger: per chunk, as before. */
#define CUDA_DLOGITS_WHOLE_BYTES ((size_t)4 << 30)
int cuda_dlogits_whole(const cuda_dims *d, size_t ct);
/* Whether this arena (planned for up to its own B) holds the dlogits of
 * every row of a micro-batch of d's shape. */
int cuda_arena_dlogits_whole(const cuda_arena *a, const cuda_dims *d);

/* The embedding backward's index for N = B*T rows (row n reads token
 * tokens[(n / T) * stride + n % T]): the distinct tokens in increasing order
 * and, per token, its rows in increasing order (a stable counting sort), so
 * one block per token adds its gradient rows in the CPU backend's order
 * without atomics. out: [U, tok[U], start[U+1], rows[N]], at most 3N+2
 * ints; cnt: V ints of scratch. Returns U. */
int64_t cuda_embed_index(const int32_t *tokens, int64_t B, int64_t T, int64_t stride, int64_t V, int32_t *cnt,
                         int32_t *out);

/* AdamW over [lo,hi): pieces with their tensor's weight decay (2-D weights
 * decay, norms do not), neighbours with the same decay merged. off is
 * relative to lo. Returns the count (<= cap) or -1 when cap is too small. */
typedef struct {
    int64_t off, n;
    int decay;
} cuda_adamw_seg;

int cuda_adamw_segments(const model_layout *L, size_t lo, size_t hi, cuda_adamw_seg *seg, int cap);

/* Room for the segments of any range: one per tensor, and one. */
int cuda_adamw_seg_cap(const model_shape *s);
/* Floats per partial sum of the gradient norm (adamw.cuh's
 * CUDA_SUMSQ_BLOCK; backend.cu asserts they agree): the plan sizes the
 * partials' buffer by it. */
enum { CUDA_PLAN_SUMSQ_BLOCK = 8192 };

/* What one GPU holds, in bytes. */
typedef struct {
    double master, working, grads, adam, activations, workspace, context, total;
    double comm;    /* NCCL buffer of the reduce-scatter when world > 1 */
    size_t range;   /* floats of the largest rank's range */
    size_t bucket;  /* stages 2-3: floats of each bucket buffer (parameters at 3: two; gradients: one); else 0 */
    size_t bucket2; /* stages 2-3 under [comm] overlap over 2+ ranks: floats of the second gradient bucket,
                     * the largest decoder layer's (a bigger bucket goes into the first); else 0 */
} cuda_memplan;

/* world: data-parallel ranks (Adam m/v of 1/world); zero: ZeRO stage 1-3.
 * ST_OK, or the memory model's refusal (util_last_error). */
int cuda_memory_plan(const model_shape *s, int64_t micro_batch, int world, cuda_prec p, int zero, cuda_memplan *m);

enum { CUDA_WORKSPACE_BYTES = 32 << 20 };   /* the fixed cuBLASLt workspace */

#ifdef __cplusplus
}
#endif

#endif
