/* The shape of a model: the one definition of its dimensions, plain data
 * with no dependencies, so the checkpoint format, export, cost and every
 * backend can name it without pulling in the parameter table (model.h). */
#ifndef SPOTRAIN_MODEL_SHAPE_H
#define SPOTRAIN_MODEL_SHAPE_H

#include <stdint.h>

typedef struct {
    int64_t dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, vocab, seq_len;
    double rope_theta, norm_eps;
} model_shape;

#endif
