/* The optimizer side of a step: warmup + cosine learning-rate schedule,
 * global-norm gradient clipping and AdamW (decoupled weight decay, bias
 * correction) over one contiguous range of the flat vector. */
#ifndef SPOTRAIN_OPTIM_H
#define SPOTRAIN_OPTIM_H

#include <stddef.h>
#include <stdint.h>
#include "model.h"
#include "elem.h"

typedef struct {
    double lr, min_lr, warmup_steps, weight_decay, beta1, beta2, eps, grad_clip;
    int64_t max_steps;
} optim_hparams;

/* Learning rate for 0-based step: linear warmup over warmup_steps, then
 * cosine decay from lr to min_lr at max_steps. */
double optim_lr(const optim_hparams *h, int64_t step);

/* Sum of squares of g[0..n) in double, in a fixed order (deterministic for
 * a given n whatever the thread count). */
double optim_sumsq(const float *g, size_t n);

/* Clip factor for a global norm: min(1, grad_clip / (norm + 1e-6)); 1 when
 * grad_clip <= 0. */
double optim_clip_scale(const optim_hparams *h, double global_norm);

/* The per-step constants of elem_adamw (bias corrections, step size). */
elem_adamw_k optim_adamw_consts(const optim_hparams *h, double lr, double clip_scale, int64_t step);

/* One AdamW update of the range [lo,hi) of the flat vector: p, g point at
 * element lo; m, v hold the range's moments. step is 1-based (bias
 * correction). Weight decay applies only to 2-D weights (not norms). */
void optim_adamw(const optim_hparams *h, const model_layout *L, size_t lo, size_t hi,
                 float *p, const float *g, float *m, float *v, double lr, double clip_scale,
                 int64_t step);

#endif
