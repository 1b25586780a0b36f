/* AdamW exactly as torch.optim.AdamW computes it (decoupled decay, bias
 * correction, eps outside the square root), the warmup + cosine schedule and
 * a deterministic blocked sum of squares for global-norm clipping. */
#include "optim.h"
#include "elem.h"

#include <math.h>
#include <stdlib.h>

double optim_lr(const optim_hparams *h, int64_t step)
{
    if (step < 0)
        step = 0;
    if (h->warmup_steps > 0 && (double)step < h->warmup_steps)
        return h->lr * (double)(step + 1) / h->warmup_steps;
    double span = (double)h->max_steps - h->warmup_steps;
    if (span <= 0)
        return h->min_lr;
    double progress = ((double)step - h->warmup_steps) / span;
    if (progress > 1.0)
        progress = 1.0;
    if (progress < 0.0)
        progress = 0.0;
    return h->min_lr + 0.5 * (h->lr - h->min_lr) * (1.0 + cos(M_PI * progress));
}

/* Blocks of a fixed size summed each in order, then the block sums in
 * order: the association depends on n only, never on the thread count. */
enum { OPTIM_BLOCK = 8192 };

static double optim_block_sumsq(const float *g, size_t n)
{
    double a[4] = {0, 0, 0, 0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++)
            a[k] += (double)g[i + k] * (double)g[i + k];
    for (; i < n; i++)
        a[0] += (double)g[i] * (double)g[i];
    return (a[0] + a[1]) + (a[2] + a[3]);
}

double optim_sumsq(const float *g, size_t n)
{
    size_t nb = (n + OPTIM_BLOCK - 1) / OPTIM_BLOCK;
    double total = 0.0;
    double *part = nb ? malloc(nb * sizeof *part) : NULL;
    if (!part) {
        for (size_t b = 0; b < nb; b++) {
            size_t lo = b * OPTIM_BLOCK, len = n - lo < OPTIM_BLOCK ? n - lo : OPTIM_BLOCK;
            total += optim_block_sumsq(g + lo, len);
        }
        return total;
    }
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * OPTIM_BLOCK, len = n - lo < OPTIM_BLOCK ? n - lo : OPTIM_BLOCK;
        part[b] = optim_block_sumsq(g + lo, len);
    }
    for (size_t b = 0; b < nb; b++)
        total += part[b];
    free(part);
    return total;
}

double optim_clip_scale(const optim_hparams *h, double global_norm)
{
    if (h->grad_clip <= 0)
        return 1.0;
    double s = h->grad_clip / (global_norm + 1e-6);
    return s < 1.0 ? s : 1.0;
}

/* Element by element, so threads and vector lanes cannot change a bit
 * (sqrt and the divisions are correctly rounded in any lane; optim.o is
 * built with -fno-math-errno so that sqrt needs no errno branch). */
static void optim_adamw_span(const elem_adamw_k *k, float *restrict p, const float *restrict g, float *restrict m,
                             float *restrict v, size_t n, double keep)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++)
        elem_adamw(k, keep, &p[i], g[i], &m[i], &v[i]);
}

elem_adamw_k optim_adamw_consts(const optim_hparams *h, double lr, double clip_scale, int64_t step)
{
    double bc1 = 1.0 - pow(h->beta1, (double)step), bc2 = 1.0 - pow(h->beta2, (double)step);
    elem_adamw_k k = {h->beta1, h->beta2, h->eps, lr / bc1, sqrt(bc2), clip_scale};
    return k;
}

void optim_adamw(const optim_hparams *h, const model_layout *L, size_t lo, size_t hi, float *p,
                 const float *g, float *m, float *v, double lr, double clip_scale, int64_t step)
{
    elem_adamw_k k = optim_adamw_consts(h, lr, clip_scale, step);
    /* Walk the parameter table so each piece of [lo,hi) gets its tensor's
     * decay: none for the 1-D norm weights. */
    for (int i = 0; i < L->n_params; i++) {
        const model_param *t = &L->params[i];
        size_t a = t->offset > lo ? t->offset : lo;
        size_t b = t->offset + t->numel < hi ? t->offset + t->numel : hi;
        if (a >= b)
            continue;
        double decay = t->ndim == 2 ? h->weight_decay : 0.0;
        optim_adamw_span(&k, p + (a - lo), g + (a - lo), m + (a - lo), v + (a - lo), b - a, 1.0 - lr * decay);
    }
}
