/* Model shapes and the one flat fp32 parameter vector: every weight's Hugging
 * Face name, shape and offset, in canonical order. Checkpoints, export, the
 * optimizer and every backend address parameters through this table. */
#ifndef SPOTRAIN_MODEL_H
#define SPOTRAIN_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include "ckpt/ckpt.h"
#include "model/shape.h"

struct cfg;

typedef struct {
    char name[96];
    int ndim;             /* 1 or 2 */
    int64_t shape[2];     /* Hugging Face shape: [out, in] for linears */
    size_t offset;        /* in floats, into the flat vector */
    size_t numel;
} model_param;

/* Per-layer parameter kinds, in canonical order within a layer. */
enum {
    MODEL_Q, MODEL_K, MODEL_V, MODEL_O, MODEL_GATE, MODEL_UP, MODEL_DOWN,
    MODEL_LN1, MODEL_LN2, MODEL_PER_LAYER
};

typedef struct {
    model_shape s;
    model_param *params;  /* embed, layers (MODEL_PER_LAYER each), norm, lm_head */
    int n_params;
    size_t n_floats;
} model_layout;

/* Validates the shape (divisibility, ranges) and builds the table.
 * Returns ST_OK or ST_CONFIG with one line naming the problem. */
int model_layout_init(model_layout *L, const model_shape *s);
void model_layout_free(model_layout *L);

int model_shape_from_cfg(model_shape *s, const struct cfg *c);

/* Index helpers into L->params. */
const model_param *model_embed(const model_layout *L);
const model_param *model_layer(const model_layout *L, int64_t layer, int kind);
const model_param *model_final_norm(const model_layout *L);
const model_param *model_lm_head(const model_layout *L);
/* The buckets ZeRO 2 and 3 move at once, on every backend: k = -1 the
 * embedding, 0..n_layers-1 a decoder layer, n_layers the final norm with
 * lm_head; [*a, *b) is the flat span of their parameters. */
void model_bucket_span(const model_layout *L, int64_t k, size_t *a, size_t *b);

/* Floats of one decoder layer: the span of each of buckets 0..n_layers-1
 * (a second CUDA gradient bucket is sized by it, not by the embedding's). */
uint64_t model_layer_floats(const model_shape *s);
/* Parameter count of a shape without building the table (for 67B plans). */
uint64_t model_count_params(const model_shape *s);
/* FLOPs per token for forward+backward: 6*N (matmul weights) + attention. */
double model_flops_per_token(const model_shape *s);

/* The checkpoint's view of a layout: its dims and tensor table. Allocates
 * t->tensors; free it with model_ckpt_table_free. ST_OK or ST_SOFTWARE. */
int model_to_ckpt_table(const model_layout *L, ckpt_table *t);
void model_ckpt_table_free(ckpt_table *t);
/* 1 when a checkpoint's table is exactly this layout's (names, shapes and
 * offsets, in order), else 0. */
int model_ckpt_table_same(const model_layout *L, const ckpt_tensor *t, int n);

/* Initialises weights deterministically from seed: normals with std init_std
 * (output projections scaled by 1/sqrt(2*n_layers)), norms to 1. */
void model_init_weights(const model_layout *L, float *params, uint64_t seed, double init_std);
/* The same weights' elements [off, off+n) of the flat vector into out: a
 * fresh start streams into a backend in bounded pieces. */
void model_init_range(const model_layout *L, uint64_t seed, double init_std, size_t off, size_t n, float *out);

#endif
