/* The CPU backend's causal attention with grouped K/V heads (GQA): tiled,
 * with an online softmax (the FlashAttention-2 algorithm), so neither pass
 * holds a [T, T] matrix: the forward keeps the output and each row's
 * log-sum-exp, the backward recomputes each tile's probabilities from them. */
#ifndef SPOTRAIN_CPU_ATTN_H
#define SPOTRAIN_CPU_ATTN_H

#include <stddef.h>
#include <stdint.h>

/* Query and key rows per tile: a 64 x 64 fp32 tile is 16 KiB, so the
 * score tile, its gradient and the q/k/v rows they read stay in L2. */
enum { CPU_ATTN_TILE = 64 };

typedef struct {
    int64_t B, T;       /* sequences, tokens per sequence */
    int64_t H, KV, hd;  /* query heads, key/value heads (H % KV == 0), head width */
    int64_t ld;         /* floats per row of qkv and dqkv: q (H*hd) | k (KV*hd) | v (KV*hd) */
    int threads;
} cpu_attn_shape;

/* Floats of scratch each thread needs for head width hd and group query
 * heads per kv head (H / KV): independent of T. */
size_t cpu_attn_scratch_floats(int64_t hd, int64_t group);

/* o [B*T, H*hd] = softmax(q k^T / sqrt(hd), causal) v; lse [B, H, T] the
 * natural log-sum-exp of each row's scaled scores. scratch: threads *
 * cpu_attn_scratch_floats(hd, H / KV) floats. */
void cpu_attn_fwd(const cpu_attn_shape *a, const float *qkv, float *o, float *lse, float *scratch);

/* From o, lse and do_ (both [B*T, H*hd]): writes dq, dk and dv into the
 * q | k | v columns of dqkv (overwritten, not added). Each (sequence, kv
 * head) is one task summing in a fixed tile order, so the result does not
 * depend on the thread count. */
void cpu_attn_bwd(const cpu_attn_shape *a, const float *qkv, const float *o, const float *lse,
                  const float *do_, float *dqkv, float *scratch);

#endif
