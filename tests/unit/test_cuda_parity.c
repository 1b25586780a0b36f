/* The CUDA backend against the CPU backend, through the backend interface:
 * fp32 loss, every gradient tensor, logits and the weights after 3 AdamW
 * steps within 1e-5 relative at the tiny preset and a second GQA shape;
 * bf16 and tf32 within tolerance; two identical bf16 runs bitwise equal;
 * recompute = layers bitwise equal to none; the activation arena against
 * the memory plan.
 * Needs a GPU: elsewhere it says why it skips and passes nothing.
 * module: cuda backend */
#include "tests/harness.h"
#include "backend/backend.h"
#include "model/optim.h"
#include "model/rng.h"
#include "cuda/cuda.h"
#include "model/memplan.h"
#include "util/util.h"

#include <dlfcn.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    model_shape s;
    int64_t B;
} cp_case;

static const cp_case cp_full[] = {
    {"tiny", {128, 4, 4, 2, 32, 352, 256, 64, 10000.0, 1e-5}, 3},
    {"gqa3", {192, 2, 6, 2, 32, 512, 1000, 48, 500000.0, 1e-6}, 2},
};
/* SPOTRAIN_PARITY_SHAPES=small: the same checks on shapes the CUDA
 * emulator runs in seconds (tests/device_check.sh's DC_EMU=1 rehearsal,
 * which exercises the script, not the numerics `make test-emu` covers at
 * the full shapes). Still GQA and several heads, at batch 2;
 * seq_len above the 17-token logits check. */
static const cp_case cp_small[] = {
    {"tiny-small", {32, 2, 4, 2, 8, 64, 256, 20, 10000.0, 1e-5}, 2},
    {"gqa3-small", {48, 1, 6, 2, 8, 96, 300, 18, 500000.0, 1e-6}, 2},
};
static const cp_case *cp_cases = cp_full;

/* A small learning rate: Adam divides each entry by its own gradient's
 * magnitude, so entries whose gradient nearly cancels move by about lr
 * whatever tiny rounding difference decided their sign (tests/unit/test_model.c
 * measured 5e-5 at lr 3e-3 between fp32 and float64). At 3e-4 that
 * amplification stays below the 1e-5 the backends must agree to. */
static optim_hparams cp_h(void)
{
    optim_hparams h = {.lr = 3e-4, .min_lr = 3e-5, .warmup_steps = 1, .weight_decay = 0.1, .beta1 = 0.9,
                       .beta2 = 0.95, .eps = 1e-8, .grad_clip = 1.0, .max_steps = 10};
    return h;
}

static float *cp_weights(const model_layout *L)
{
    float *p = malloc(L->n_floats * sizeof *p);
    if (!p)
        return NULL;
    model_init_weights(L, p, 1234, 0.05);
    for (int i = 0; i < L->n_params; i++)   /* norms off 1.0 so their paths matter */
        if (L->params[i].ndim == 1)
            for (size_t j = 0; j < L->params[i].numel; j++)
                p[L->params[i].offset + j] = (float)(1.0 + 0.2 * (rng_unit(99, (uint64_t)i, j) - 0.5));
    return p;
}

static int cp_backend_rc(const char *name, const char *prec, const model_layout *L, const float *w, int recompute,
                         backend **be)
{
    int rc = backend_create(be, L, &(backend_opts){name, prec, 0, 0, 1, 0, recompute, 1});
    if (rc == ST_OK)
        rc = (*be)->load(*be, BK_PARAMS, 0, L->n_floats, w);
    if (rc == ST_OK)
        rc = (*be)->zero_grads(*be);
    return rc;
}

static int cp_backend(const char *name, const char *prec, const model_layout *L, const float *w, backend **be)
{
    return cp_backend_rc(name, prec, L, w, 0, be);
}

/* steps = 0: one forward/backward, gradients kept. Else that many full
 * optimizer steps. Returns the last loss. */
static int cp_run(backend *be, const int32_t *tok, int64_t B, int64_t T, int steps, double *loss)
{
    optim_hparams h = cp_h();
    int rc = ST_OK;
    for (int s = 0; s <= steps && rc == ST_OK; s++) {
        double l = 0, ss = 0;
        rc = be->zero_grads(be);
        if (rc == ST_OK)
            rc = be->fwd_bwd(be, tok + (size_t)s * (size_t)(B * (T + 1)) % (size_t)(4 * B * (T + 1)), B,
                             (float)(1.0 / (double)(B * T)));
        if (rc == ST_OK)
            rc = be->take_loss(be, &l);
        *loss = l / (double)(B * T);
        if (steps == 0 || s == steps || rc != ST_OK)
            break;
        if (rc == ST_OK)
            rc = be->grad_sumsq(be, &ss);
        if (rc == ST_OK)
            rc = be->adamw(be, &h, optim_lr(&h, s), optim_clip_scale(&h, sqrt(ss)), s + 1);
    }
    return rc;
}

/* ||a - b|| / ||b|| over a tensor (as tests/unit/test_model.c measures); any
 * NaN in a (an output a kernel left unwritten) is infinitely far. */
static double cp_rel(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double x = a[i], y = b[i];
        if (x != x)
            return INFINITY;
        num += (x - y) * (x - y);
        den += y * y;
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static int cp_have_gpu(void)
{
#ifdef SPOTRAIN_CUDA
    char why[256];
    if (cuda_available(why, sizeof why))
        return 1;
    printf("SKIP test_cuda_parity: %s\n", why);
#else
    printf("SKIP test_cuda_parity: built without CUDA\n");
#endif
    return 0;
}

/* Compares cuda(prec) with the CPU: tol for loss, gradients and weights. */
static void cp_compare(const cp_case *k, const char *prec, double tol_loss, double tol_grad, double tol_w)
{
    model_layout L;
    backend *cpu = NULL, *gpu = NULL;
    int64_t B = k->B, T = k->s.seq_len, V = k->s.vocab;
    size_t ntok = (size_t)(4 * B * (T + 1));
    int32_t *tok = malloc(ntok * sizeof *tok);
    float *w = NULL, *a = NULL, *b = NULL, *la = NULL, *lb = NULL;
    if (model_layout_init(&L, &k->s) != ST_OK || !tok) {
        EXPECT(0);
        free(tok);
        return;
    }
    for (size_t i = 0; i < ntok; i++)
        tok[i] = (int32_t)(rng_u64(5, 7, i) % (uint64_t)V);
    w = cp_weights(&L);
    a = malloc(L.n_floats * sizeof *a);
    b = malloc(L.n_floats * sizeof *b);
    la = malloc((size_t)V * sizeof *la);
    lb = malloc((size_t)V * sizeof *lb);
    if (!w || !a || !b || !la || !lb || cp_backend("cpu", NULL, &L, w, &cpu) || cp_backend("cuda", prec, &L, w, &gpu)) {
        EXPECT(0);
        goto done;
    }
    double lc = 0, lg = 0;
    EXPECT(cp_run(cpu, tok, B, T, 0, &lc) == ST_OK);
    EXPECT(cp_run(gpu, tok, B, T, 0, &lg) == ST_OK);
    double rl = fabs(lc - lg) / fabs(lc);
    printf("    %s %s: loss cpu %.9f cuda %.9f (rel %.2e)\n", k->name, prec, lc, lg, rl);
    EXPECT(rl <= tol_loss);
    EXPECT(cpu->read(cpu, BK_GRADS, 0, L.n_floats, a) == ST_OK);
    memset(b, 0xff, L.n_floats * sizeof *b);   /* NaN: what the read must overwrite */
    EXPECT(gpu->read(gpu, BK_GRADS, 0, L.n_floats, b) == ST_OK);
    double worst = 0;
    const char *wn = "";
    for (int i = 0; i < L.n_params; i++) {
        const model_param *p = &L.params[i];
        double r = cp_rel(b + p->offset, a + p->offset, p->numel);
        if (r > worst || r != r)
            worst = r, wn = p->name;
    }
    printf("    %s %s: worst gradient %s (rel %.2e)\n", k->name, prec, wn, worst);
    EXPECT(worst <= tol_grad);
    /* logits of a 17-token prefix */
    memset(lb, 0xff, (size_t)V * sizeof *lb);
    EXPECT(cpu->logits(cpu, tok, 17, la) == ST_OK);
    EXPECT(gpu->logits(gpu, tok, 17, lb) == ST_OK);
    double rlog = cp_rel(lb, la, (size_t)V);
    printf("    %s %s: logits rel %.2e\n", k->name, prec, rlog);
    EXPECT(rlog <= tol_grad * 10);
    /* 3 AdamW steps from the same start */
    EXPECT(cpu->load(cpu, BK_PARAMS, 0, L.n_floats, w) == ST_OK);
    EXPECT(gpu->load(gpu, BK_PARAMS, 0, L.n_floats, w) == ST_OK);
    EXPECT(cp_run(cpu, tok, B, T, 3, &lc) == ST_OK);
    EXPECT(cp_run(gpu, tok, B, T, 3, &lg) == ST_OK);
    EXPECT(cpu->read(cpu, BK_PARAMS, 0, L.n_floats, a) == ST_OK);
    EXPECT(gpu->read(gpu, BK_PARAMS, 0, L.n_floats, b) == ST_OK);
    worst = 0;
    for (int i = 0; i < L.n_params; i++) {
        double r = cp_rel(b + L.params[i].offset, a + L.params[i].offset, L.params[i].numel);
        if (r > worst || r != r)
            worst = r, wn = L.params[i].name;
    }
    printf("    %s %s: after 3 steps loss cpu %.7f cuda %.7f, worst weight %s (rel %.2e)\n", k->name, prec, lc, lg,
           wn, worst);
    EXPECT(worst <= tol_w);
done:
    if (cpu)
        cpu->destroy(cpu);
    if (gpu)
        gpu->destroy(gpu);
    model_layout_free(&L);
    free(tok); free(w); free(a); free(b); free(la); free(lb);
}

static void test_fp32_tiny(void) { cp_compare(&cp_cases[0], "fp32", 1e-5, 1e-5, 1e-5); }
static void test_fp32_gqa(void) { cp_compare(&cp_cases[1], "fp32", 1e-5, 1e-5, 1e-5); }
static void test_tf32_tiny(void) { cp_compare(&cp_cases[0], "tf32", 1e-3, 2e-2, 2e-2); }
static void test_bf16_tiny(void) { cp_compare(&cp_cases[0], "bf16", 1e-2, 1e-1, 5e-2); }
static void test_fp16_gqa(void) { cp_compare(&cp_cases[1], "fp16", 1e-2, 5e-2, 5e-2); }

/* Two bf16 backends, the same 5 steps: the same bits. */
static void test_bf16_deterministic(void)
{
    const cp_case *k = &cp_cases[1];
    model_layout L;
    backend *g1 = NULL, *g2 = NULL;
    int64_t B = k->B, T = k->s.seq_len;
    size_t ntok = (size_t)(4 * B * (T + 1));
    int32_t *tok = malloc(ntok * sizeof *tok);
    EXPECT(model_layout_init(&L, &k->s) == ST_OK);
    float *w = cp_weights(&L), *a = malloc(L.n_floats * 4), *b = malloc(L.n_floats * 4);
    if (!tok || !w || !a || !b || cp_backend("cuda", "bf16", &L, w, &g1) || cp_backend("cuda", "bf16", &L, w, &g2)) {
        EXPECT(0);
        goto done;
    }
    for (size_t i = 0; i < ntok; i++)
        tok[i] = (int32_t)(rng_u64(6, 7, i) % (uint64_t)k->s.vocab);
    double l1 = 0, l2 = 0;
    EXPECT(cp_run(g1, tok, B, T, 5, &l1) == ST_OK);
    EXPECT(cp_run(g2, tok, B, T, 5, &l2) == ST_OK);
    EXPECT(l1 == l2);
    for (int arr = BK_PARAMS; arr <= BK_ADAM_V; arr++) {
        EXPECT(g1->read(g1, arr, 0, L.n_floats, a) == ST_OK);
        EXPECT(g2->read(g2, arr, 0, L.n_floats, b) == ST_OK);
        EXPECT(memcmp(a, b, L.n_floats * 4) == 0);
    }
done:
    if (g1)
        g1->destroy(g1);
    if (g2)
        g2->destroy(g2);
    model_layout_free(&L);
    free(tok); free(w); free(a); free(b);
}


/* train.recompute = layers reruns each layer's forward in its backward
 * from the kept input: the same kernels on the same bits, so losses,
 * gradients, parameters, Adam m and v and logits equal recompute none's
 * bit for bit (4 layers: the rerun covers three of them). */
static void cp_recompute(const char *prec)
{
    const cp_case *k = &cp_cases[0];
    model_layout L;
    backend *g0 = NULL, *g1 = NULL;
    int64_t B = k->B, T = k->s.seq_len, V = k->s.vocab;
    size_t ntok = (size_t)(4 * B * (T + 1));
    int32_t *tok = malloc(ntok * sizeof *tok);
    EXPECT(model_layout_init(&L, &k->s) == ST_OK);
    float *w = cp_weights(&L), *a = malloc(L.n_floats * 4), *b = malloc(L.n_floats * 4);
    float *la = malloc((size_t)V * 4), *lb = malloc((size_t)V * 4);
    if (!tok || !w || !a || !b || !la || !lb || cp_backend_rc("cuda", prec, &L, w, 0, &g0) ||
        cp_backend_rc("cuda", prec, &L, w, 1, &g1)) {
        EXPECT(0);
        goto done;
    }
    for (size_t i = 0; i < ntok; i++)
        tok[i] = (int32_t)(rng_u64(8, 7, i) % (uint64_t)V);
    double l0 = 0, l1 = 0;
    EXPECT(cp_run(g0, tok, B, T, 3, &l0) == ST_OK);
    EXPECT(cp_run(g1, tok, B, T, 3, &l1) == ST_OK);
    printf("    %s: loss after 3 steps, recompute none %.9g, layers %.9g\n", prec, l0, l1);
    EXPECT(memcmp(&l0, &l1, sizeof l0) == 0);
    for (int arr = BK_PARAMS; arr <= BK_GRADS; arr++) {
        memset(b, 0xff, L.n_floats * 4);
        EXPECT(g0->read(g0, arr, 0, L.n_floats, a) == ST_OK);
        EXPECT(g1->read(g1, arr, 0, L.n_floats, b) == ST_OK);
        EXPECT(memcmp(a, b, L.n_floats * 4) == 0);
    }
    memset(lb, 0xff, (size_t)V * 4);
    EXPECT(g0->logits(g0, tok, 17, la) == ST_OK);
    EXPECT(g1->logits(g1, tok, 17, lb) == ST_OK);
    EXPECT(memcmp(la, lb, (size_t)V * 4) == 0);
done:
    if (g0)
        g0->destroy(g0);
    if (g1)
        g1->destroy(g1);
    model_layout_free(&L);
    free(tok); free(w); free(a); free(b); free(la); free(lb);
}

static void test_recompute_fp32(void) { cp_recompute("fp32"); }
static void test_recompute_bf16(void) { cp_recompute("bf16"); }

/* What one training step allocates on the device (the activation arena)
 * against the memory model's activations (scores included), recompute
 * none and layers: the arena is the plan's figure exactly, and the device
 * peak the step reached, above what the state held before it, within 5%
 * of it; the peak from before the backend existed within 5% of the
 * per-GPU total (less the context, which allocates nothing here). The peak is the emulator's counter (tests/emu); on a GPU, whose
 * allocator rounds to pages, tests/device_check.sh measures a bigger
 * model instead. */
static void test_arena_peak(void)
{
#ifdef SPOTRAIN_CUDA
    const cp_case *k = &cp_cases[0];
    size_t (*peak)(int) = (size_t (*)(int))dlsym(RTLD_DEFAULT, "emu_device_peak");
    model_layout L;
    int64_t B = k->B, T = k->s.seq_len;
    size_t ntok = (size_t)(4 * B * (T + 1));
    int32_t *tok = malloc(ntok * sizeof *tok);
    EXPECT(model_layout_init(&L, &k->s) == ST_OK);
    float *w = cp_weights(&L);
    uint64_t act[2] = {0, 0};
    for (size_t i = 0; tok && i < ntok; i++)
        tok[i] = (int32_t)(rng_u64(9, 7, i) % (uint64_t)k->s.vocab);
    for (int r = 0; r < 2 && tok && w; r++) {
        backend *g = NULL;
        memplan_cfg mc = {.shape = k->s, .backend = MEMPLAN_CUDA, .precision = MEMPLAN_BF16, .world = 1,
                          .ranks_per_node = 1, .micro_batch = B, .recompute = (memplan_recompute)r,
                          .zero = MEMPLAN_ZERO1, .comm_chunk = 1 << 20};
        memplan_bytes mb;
        size_t used0 = 0, total = 0;
        double l = 0;
        EXPECT(memplan_compute(&mc, &mb) == ST_OK);
        act[r] = mb.activations + mb.attn_scratch;
        size_t before = 0;   /* what earlier tests left held: nothing */
        if (peak) {
            peak(1);
            before = peak(0);
        }
        if (cp_backend_rc("cuda", "bf16", &L, w, r, &g)) {
            EXPECT(0);
            break;
        }
        EXPECT(backend_cuda_memory(g, &used0, &total) == ST_OK);
        size_t state = peak ? peak(0) : 0;
        EXPECT(cp_run(g, tok, B, T, 1, &l) == ST_OK);
        EXPECT(backend_cuda_arena_bytes(g) == act[r]);
        if (peak) {
            double got = (double)(peak(0) - used0);
            printf("    recompute %s: device peak of the step %.0f bytes above the state, plan's activations %llu "
                   "(ratio %.4f)\n", r ? "layers" : "none", got, (unsigned long long)act[r], got / (double)act[r]);
            EXPECT(got >= 0.95 * (double)act[r] && got <= 1.05 * (double)act[r]);
            /* and the whole: the peak since before the backend existed
             * against the per-GPU total less the context estimate */
            double all = (double)(peak(0) - before), plan = (double)(mb.total - mb.context);
            printf("    recompute %s: device peak %.0f bytes from nothing (%zu before the step), plan %.0f "
                   "(ratio %.4f)\n", r ? "layers" : "none", all, state - before, plan, all / plan);
            EXPECT(all >= 0.95 * plan && all <= 1.05 * plan);
        } else {
            printf("    recompute %s: arena %zu bytes = plan (no peak counter on a GPU)\n", r ? "layers" : "none",
                   backend_cuda_arena_bytes(g));
        }
        g->destroy(g);
    }
    EXPECT(act[1] < act[0]);   /* 4 layers: three sets fewer */
    model_layout_free(&L);
    free(tok);
    free(w);
#endif
}

/* The snapshot equals read-back of params, m and v. */
static void test_snapshot(void)
{
    const cp_case *k = &cp_cases[0];
    model_layout L;
    backend *g = NULL;
    int64_t B = k->B, T = k->s.seq_len;
    size_t ntok = (size_t)(4 * B * (T + 1));
    int32_t *tok = malloc(ntok * sizeof *tok);
    EXPECT(model_layout_init(&L, &k->s) == ST_OK);
    size_t n = L.n_floats;
    float *w = cp_weights(&L), *snap = malloc(3 * n * 4), *a = malloc(n * 4);
    if (!tok || !w || !snap || !a || cp_backend("cuda", "bf16", &L, w, &g)) {
        EXPECT(0);
        goto done;
    }
    for (size_t i = 0; i < ntok; i++)
        tok[i] = (int32_t)(rng_u64(7, 7, i) % (uint64_t)k->s.vocab);
    double l = 0;
    EXPECT(g->pin(g, snap, 3 * n * 4) == ST_OK);
    EXPECT(cp_run(g, tok, B, T, 2, &l) == ST_OK);
    memset(snap, 0xff, 3 * n * 4);
    EXPECT(g->snapshot(g, snap) == ST_OK);
    EXPECT(g->snapshot_wait(g) == ST_OK);
    for (int arr = BK_PARAMS; arr <= BK_ADAM_V; arr++) {
        EXPECT(g->read(g, arr, 0, n, a) == ST_OK);
        EXPECT(memcmp(a, snap + (size_t)arr * n, n * 4) == 0);
    }
    /* the next step waits for the copy and then changes the weights */
    EXPECT(cp_run(g, tok, B, T, 1, &l) == ST_OK);
done:
    if (g)
        g->destroy(g);
    model_layout_free(&L);
    free(tok); free(w); free(snap); free(a);
}

int main(void)
{
    util_quiet = 1;
    const char *shapes = getenv("SPOTRAIN_PARITY_SHAPES");
    if (shapes && !strcmp(shapes, "small"))
        cp_cases = cp_small;
    if (!cp_have_gpu())
        return harness_end();
    harness_run("fp32_tiny_vs_cpu", test_fp32_tiny);
    harness_run("fp32_gqa_vs_cpu", test_fp32_gqa);
    harness_run("tf32_tiny_vs_cpu", test_tf32_tiny);
    harness_run("bf16_tiny_vs_cpu", test_bf16_tiny);
    harness_run("fp16_gqa_vs_cpu", test_fp16_gqa);
    harness_run("bf16_deterministic", test_bf16_deterministic);
    harness_run("snapshot", test_snapshot);
    harness_run("recompute_layers_bitwise_fp32", test_recompute_fp32);
    harness_run("recompute_layers_bitwise_bf16", test_recompute_bf16);
    harness_run("arena_peak_vs_plan", test_arena_peak);
    return harness_end();
}
