/* The narrow interface every compute backend implements: forward/backward on
 * a batch of token rows, host-visible gradients for the reduction, and the
 * live parameters. The optimizer, comm and checkpoints work on host arrays. */
#ifndef SPOTRAIN_BACKEND_H
#define SPOTRAIN_BACKEND_H

#include <stdint.h>
#include "model.h"

struct cfg;

typedef struct backend backend;
struct backend {
    const char *name;
    const model_layout *L;
    float *params;   /* full flat vector, host memory, L->n_floats */
    float *grads;    /* full flat vector, host memory, accumulated */
    void *impl;

    /* tokens: B rows of seq_len+1 ids (inputs are row[0..T), targets
     * row[1..T]). Adds grad_scale * d(sum of token losses)/dparams to grads
     * and the summed loss (nats, before scaling) to *loss_sum. */
    int (*fwd_bwd)(backend *b, const int32_t *tokens, int64_t B, float grad_scale,
                   double *loss_sum);
    /* Same rows, loss only (validation). */
    int (*eval)(backend *b, const int32_t *tokens, int64_t B, double *loss_sum);
    /* One sequence of T <= seq_len ids; writes the vocab logits of the last
     * position (sampling). */
    int (*logits)(backend *b, const int32_t *tokens, int64_t T, float *out);
    void (*zero_grads)(backend *b);
    /* Called after the host params were changed (optimizer step, restore):
     * a device backend uploads them. */
    int (*sync_params)(backend *b);
    void (*destroy)(backend *b);
};

/* CPU backend (OpenBLAS + OpenMP). threads <= 0 means all cores. */
int backend_cpu_create(backend **out, const model_layout *L, int threads);

/* Picks by name ("cpu", "cuda"); ST_UNAVAILABLE with a clear line when the
 * backend was not compiled in or no device is present. */
int backend_create(backend **out, const char *name, const model_layout *L, int threads);

#endif
