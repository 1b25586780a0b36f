/* Training-step throughput of the CPU backend (fwd_bwd + global-norm clip +
 * AdamW) on two fixed models, against this machine's fp32 GEMM ceiling
 * measured in the same run. Run by bench/throughput.sh next to PyTorch. */
#include "backend/backend.h"
#include "model/optim.h"
#include "model/rng.h"
#include "util/util.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* CPU seconds of the whole process: on a shared machine tokens per CPU
 * second compares implementations even when wall time is noisy. */
static double bench_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct {
    const char *name;
    model_shape s;
    int64_t batch, steps;
} bench_model;

/* Best of three large square sgemm calls with the backend's thread count. */
static double bench_gemm_ceiling(int threads)
{
    const int n = 2048;
    float *a = malloc((size_t)n * n * sizeof *a), *b = malloc((size_t)n * n * sizeof *b);
    float *c = malloc((size_t)n * n * sizeof *c);
    double best = 0;
    if (!a || !b || !c)
        goto out;
    for (size_t i = 0; i < (size_t)n * n; i++) {
        a[i] = (float)(rng_unit(1, 0, i) - 0.5);
        b[i] = (float)(rng_unit(1, 1, i) - 0.5);
    }
    openblas_set_num_threads(threads);
    for (int r = 0; r < 4; r++) {
        double t = util_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double gf = 2.0 * n * n * (double)n / (util_now() - t) / 1e9;
        if (r > 0 && gf > best)
            best = gf;
    }
out:
    free(a);
    free(b);
    free(c);
    return best;
}

static int bench_run(const bench_model *bm, int threads, int warmup)
{
    /* Measured next to each model: on a shared machine the ceiling moves. */
    double ceiling = bench_gemm_ceiling(threads);
    model_layout L;
    backend *be = NULL;
    int32_t *tok = NULL;
    int rc = model_layout_init(&L, &bm->s);
    if (rc != ST_OK)
        return rc;
    rc = backend_cpu_create(&be, &L, &(backend_opts){"cpu", NULL, threads, 0, 1, 0, 0, 1});
    if (rc != ST_OK)
        goto out;
    size_t ntok = (size_t)(bm->batch * (bm->s.seq_len + 1));
    tok = malloc(ntok * sizeof *tok);
    if (!tok) {
        rc = util_fail(ST_SOFTWARE, "bench: out of memory");
        goto out;
    }
    model_init_weights(&L, backend_cpu_host(be, BK_PARAMS), 1, 0.02);
    optim_hparams h = {.lr = 3e-4, .min_lr = 3e-5, .warmup_steps = 10, .weight_decay = 0.1, .beta1 = 0.9,
                       .beta2 = 0.95, .eps = 1e-8, .grad_clip = 1.0, .max_steps = 1000};
    double t0 = 0, c0 = 0, loss = 0;
    int64_t total = warmup + bm->steps;
    for (int64_t s = 0; s < total; s++) {
        if (s == warmup) {
            t0 = util_now();
            c0 = bench_cpu_seconds();
        }
        for (size_t i = 0; i < ntok; i++)
            tok[i] = (int32_t)(rng_u64(7, (uint64_t)s, i) % (uint64_t)bm->s.vocab);
        be->zero_grads(be);
        loss = 0;
        /* The loop's sequence of backend operations for one rank. */
        double ss = 0;
        rc = be->fwd_bwd(be, tok, bm->batch, (float)(1.0 / (double)(bm->batch * bm->s.seq_len)));
        if (rc == ST_OK)
            rc = be->take_loss(be, &loss);
        if (rc == ST_OK)
            rc = be->reduce_grads(be);
        if (rc == ST_OK)
            rc = be->grad_sumsq(be, &ss);
        if (rc == ST_OK)
            rc = be->adamw(be, &h, optim_lr(&h, s), optim_clip_scale(&h, sqrt(ss)), s + 1);
        if (rc == ST_OK)
            rc = be->gather_params(be);
        if (rc != ST_OK)
            goto out;
            }
    double dt = (util_now() - t0) / (double)bm->steps;
    double cpu = (bench_cpu_seconds() - c0) / (double)bm->steps;
    double tps = (double)(bm->batch * bm->s.seq_len) / dt;
    double gf = model_flops_per_token(&bm->s) * tps / 1e9;
    printf("spotrain  model %s: %.1fM params, micro-batch %lld x %lld: %8.0f tokens/s  %7.1f ms/step  "
           "%6.1f GFLOP/s  %4.0f%% of GEMM ceiling %.0f  %6.0f tokens/cpu-s  (last loss %.3f)\n",
           bm->name, (double)model_count_params(&bm->s) / 1e6, (long long)bm->batch, (long long)bm->s.seq_len,
           tps, dt * 1e3, gf, ceiling > 0 ? 100.0 * gf / ceiling : 0.0, ceiling, (double)(bm->batch * bm->s.seq_len) / cpu,
           loss / (double)(bm->batch * bm->s.seq_len));
    fflush(stdout);
out:
    free(tok);
    if (be)
        be->destroy(be);
    model_layout_free(&L);
    return rc;
}

int main(int argc, char **argv)
{
    int threads = omp_get_num_procs(), scale = 1;
    int64_t seq = 0;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--scale") == 0 && i + 1 < argc)
            scale = atoi(argv[++i]);
        else if (strcmp(argv[i], "--seq") == 0 && i + 1 < argc)
            seq = atoll(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_step [--threads N] [--model A|B] [--scale STEPS_MULTIPLIER] [--seq T]\n");
            return ST_USAGE;
        }
    }
    if (threads < 1 || scale < 1 || seq < 0) {
        fprintf(stderr, "bench_step: --threads, --scale and --seq must be positive\n");
        return ST_USAGE;
    }
    bench_model models[2] = {
        {"A", {.dim = 256, .n_layers = 4, .n_heads = 8, .n_kv_heads = 4, .head_dim = 32, .ffn_dim = 704,
               .vocab = 256, .seq_len = 256, .rope_theta = 10000.0, .norm_eps = 1e-6}, 8, 10},
        {"B", {.dim = 512, .n_layers = 8, .n_heads = 8, .n_kv_heads = 4, .head_dim = 64, .ffn_dim = 1408,
               .vocab = 8192, .seq_len = 256, .rope_theta = 10000.0, .norm_eps = 1e-6}, 8, 4},
    };
    printf("spotrain  OpenBLAS core %s, %d threads; GEMM ceiling = best 2048^3 sgemm GFLOP/s with "
           "OpenBLAS's own threads, measured before each model\n", openblas_get_corename(), threads);
    fflush(stdout);
    for (int i = 0; i < 2; i++) {
        if (only && strcmp(only, models[i].name) != 0)
            continue;
        models[i].steps *= scale;
        /* Longer rows, the same tokens per step (attention's share grows). */
        if (seq > 0) {
            int64_t rows = models[i].batch * models[i].s.seq_len / seq;
            models[i].batch = rows > 0 ? rows : 1;
            models[i].s.seq_len = seq;
        }
        int rc = bench_run(&models[i], threads, 2);
        if (rc != ST_OK)
            return rc;
    }
    return 0;
}
