/* The optimizer without PyTorch: schedule values, clipping factor, the
 * deterministic sum of squares, and AdamW's update, decay split and range
 * handling checked against a scalar double-precision transcription.
 * module: model */
#include "tests/harness.h"
#include "model/optim.h"
#include "util/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static optim_hparams to_h(void)
{
    optim_hparams h = {.lr = 1e-3, .min_lr = 1e-4, .warmup_steps = 4, .weight_decay = 0.1, .beta1 = 0.9,
                       .beta2 = 0.95, .eps = 1e-8, .grad_clip = 1.0, .max_steps = 14};
    return h;
}

static int close_to(double a, double b, double tol) { return fabs(a - b) <= tol * fabs(b) + 1e-300; }

static void test_schedule(void)
{
    optim_hparams h = to_h();
    EXPECT(close_to(optim_lr(&h, 0), 0.25e-3, 1e-12));
    EXPECT(close_to(optim_lr(&h, 3), 1e-3, 1e-12));
    EXPECT(close_to(optim_lr(&h, 4), 1e-3, 1e-12));              /* cosine starts at the peak */
    EXPECT(close_to(optim_lr(&h, 9), 0.55e-3, 1e-12));           /* half way: mean of lr and min_lr */
    EXPECT(close_to(optim_lr(&h, 14), 1e-4, 1e-12));
    EXPECT(close_to(optim_lr(&h, 1000), 1e-4, 1e-12));           /* stays at min_lr after max_steps */
    for (int64_t s = 5; s < 14; s++)
        EXPECT(optim_lr(&h, s) < optim_lr(&h, s - 1));
    h.warmup_steps = 0;
    EXPECT(close_to(optim_lr(&h, 0), 1e-3, 1e-12));
}

static void test_clip_scale(void)
{
    optim_hparams h = to_h();
    EXPECT(optim_clip_scale(&h, 0.5) == 1.0);
    EXPECT(close_to(optim_clip_scale(&h, 4.0), 1.0 / (4.0 + 1e-6), 1e-12));
    h.grad_clip = 0;
    EXPECT(optim_clip_scale(&h, 1e9) == 1.0);
}

static void test_sumsq(void)
{
    size_t n = 100003;
    float *g = malloc(n * sizeof *g);
    if (!g) {
        EXPECT(0);
        return;
    }
    long double ref = 0;
    for (size_t i = 0; i < n; i++) {
        g[i] = (float)sin((double)i * 0.37) * (float)(1 + i % 13);
        ref += (long double)g[i] * g[i];
    }
    double a = optim_sumsq(g, n), b = optim_sumsq(g, n);
    EXPECT(a == b);
    EXPECT(close_to(a, (double)ref, 1e-12));
    EXPECT(optim_sumsq(g, 0) == 0.0);
    EXPECT(optim_sumsq(g, 1) == (double)g[0] * g[0]);
    free(g);
}

/* A layout of a 2-D tensor, a 1-D tensor and another 2-D tensor. */
static void to_layout(model_layout *L, model_param *p)
{
    memset(L, 0, sizeof *L);
    memset(p, 0, 3 * sizeof *p);
    p[0] = (model_param){.name = "w0", .ndim = 2, .shape = {3, 4}, .offset = 0, .numel = 12};
    p[1] = (model_param){.name = "norm", .ndim = 1, .shape = {5, 1}, .offset = 12, .numel = 5};
    p[2] = (model_param){.name = "w1", .ndim = 2, .shape = {2, 3}, .offset = 17, .numel = 6};
    L->params = p;
    L->n_params = 3;
    L->n_floats = 23;
}

static void test_adamw_matches_torch_formula(void)
{
    model_layout L;
    model_param tab[3];
    to_layout(&L, tab);
    optim_hparams h = to_h();
    enum { N = 23 };
    float p[N], g[N], m[N] = {0}, v[N] = {0};
    double rp[N], rm[N] = {0}, rv[N] = {0};
    for (int i = 0; i < N; i++) {
        p[i] = (float)(0.1 * (i - 11));
        rp[i] = p[i];
    }
    for (int64_t step = 1; step <= 3; step++) {
        double lr = optim_lr(&h, step - 1), clip = step == 2 ? 0.5 : 1.0;
        for (int i = 0; i < N; i++)
            g[i] = (float)(0.01 * cos(i + 3.0 * (double)step));
        /* Split inside the first tensor and inside the norm, like shards. */
        optim_adamw(&h, &L, 0, 7, p, g, m, v, lr, clip, step);
        optim_adamw(&h, &L, 7, 14, p + 7, g + 7, m + 7, v + 7, lr, clip, step);
        optim_adamw(&h, &L, 14, N, p + 14, g + 14, m + 14, v + 14, lr, clip, step);
        double bc1 = 1 - pow(h.beta1, (double)step), bc2 = 1 - pow(h.beta2, (double)step);
        for (int i = 0; i < N; i++) {
            double wd = (i >= 12 && i < 17) ? 0.0 : h.weight_decay;
            double gi = (double)g[i] * clip;
            rp[i] *= 1 - lr * wd;
            rm[i] = h.beta1 * rm[i] + (1 - h.beta1) * gi;
            rv[i] = h.beta2 * rv[i] + (1 - h.beta2) * gi * gi;
            rp[i] -= lr / bc1 * rm[i] / (sqrt(rv[i]) / sqrt(bc2) + h.eps);
        }
    }
    double worst = 0;
    for (int i = 0; i < N; i++) {
        double e = fabs((double)p[i] - rp[i]);
        worst = e > worst ? e : worst;
    }
    EXPECT(worst < 1e-6);
}

static void test_adamw_decay_only_2d(void)
{
    model_layout L;
    model_param tab[3];
    to_layout(&L, tab);
    optim_hparams h = to_h();
    enum { N = 23 };
    float p[N], g[N] = {0}, m[N] = {0}, v[N] = {0};
    for (int i = 0; i < N; i++)
        p[i] = 1.0f;
    optim_adamw(&h, &L, 0, N, p, g, m, v, 0.5, 1.0, 1);
    for (int i = 0; i < N; i++) {
        if (i >= 12 && i < 17)
            EXPECT(p[i] == 1.0f);
        else
            EXPECT(close_to(p[i], 1.0 - 0.5 * 0.1, 1e-7));
    }
}

int main(void)
{
    harness_run("schedule_warmup_cosine", test_schedule);
    harness_run("clip_scale", test_clip_scale);
    harness_run("sumsq_deterministic_and_exact", test_sumsq);
    harness_run("adamw_matches_torch_formula", test_adamw_matches_torch_formula);
    harness_run("adamw_decay_only_2d", test_adamw_decay_only_2d);
    return harness_end();
}
