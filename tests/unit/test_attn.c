/* The CPU backend's tiled causal attention (backend/cpu_attn.c) against a
 * float64 PyTorch oracle (tests/ref/attn_torch.py): output, log-sum-exp and
 * the q, k, v gradients at lengths off the tile size, GQA groups of 1 and
 * more; the same bits for any thread count; elem_log against libm.
 * module: backend model */
#include "tests/harness.h"
#include "backend/cpu_attn.h"
#include "model/elem.h"
#include "model/rng.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int64_t B, T, H, KV, hd;
    double amp;   /* inputs uniform in [-amp, amp]: larger is peakier softmax rows */
} ta_case;

typedef struct {
    cpu_attn_shape a;
    size_t nrow, nqkv, no, nlse;
    float *qkv, *dout, *o, *lse, *dqkv, *scratch;
} ta_run;

static const char *ta_python(void)
{
    const char *p = getenv("SPOTRAIN_PYTHON");
    return p && *p ? p : "/usr/bin/python3";
}

static void ta_free(ta_run *r)
{
    free(r->qkv); free(r->dout); free(r->o); free(r->lse); free(r->dqkv); free(r->scratch);
    memset(r, 0, sizeof *r);
}

/* Inputs from the case's seed; outputs zeroed to NaN so an unwritten
 * element shows. */
static int ta_make(ta_run *r, const ta_case *tc, int threads, uint64_t seed)
{
    memset(r, 0, sizeof *r);
    r->a = (cpu_attn_shape){.B = tc->B, .T = tc->T, .H = tc->H, .KV = tc->KV, .hd = tc->hd,
                            .ld = (tc->H + 2 * tc->KV) * tc->hd, .threads = threads};
    r->nrow = (size_t)(tc->B * tc->T);
    r->nqkv = r->nrow * (size_t)r->a.ld;
    r->no = r->nrow * (size_t)(tc->H * tc->hd);
    r->nlse = r->nrow * (size_t)tc->H;
    r->qkv = malloc(r->nqkv * sizeof(float));
    r->dqkv = malloc(r->nqkv * sizeof(float));
    r->dout = malloc(r->no * sizeof(float));
    r->o = malloc(r->no * sizeof(float));
    r->lse = malloc(r->nlse * sizeof(float));
    r->scratch = malloc((size_t)threads * cpu_attn_scratch_floats(tc->hd, tc->H / tc->KV) * sizeof(float));
    if (!r->qkv || !r->dqkv || !r->dout || !r->o || !r->lse || !r->scratch)
        return -1;
    for (size_t i = 0; i < r->nqkv; i++) {
        r->qkv[i] = (float)((2.0 * rng_unit(seed, 1, i) - 1.0) * tc->amp);
        r->dqkv[i] = NAN;
    }
    for (size_t i = 0; i < r->no; i++) {
        r->dout[i] = (float)(2.0 * rng_unit(seed, 2, i) - 1.0);
        r->o[i] = NAN;
    }
    for (size_t i = 0; i < r->nlse; i++)
        r->lse[i] = NAN;
    return 0;
}

static void ta_pass(ta_run *r)
{
    cpu_attn_fwd(&r->a, r->qkv, r->o, r->lse, r->scratch);
    cpu_attn_bwd(&r->a, r->qkv, r->o, r->lse, r->dout, r->dqkv, r->scratch);
}

/* Worst |a - b| over the largest |b| among the columns [c0, c1) of rows
 * of width ld: a scale-free error a single bad element cannot hide in. */
static double ta_err(const float *a, const double *b, size_t rows, int64_t ld, int64_t c0, int64_t c1)
{
    double worst = 0, big = 0;
    for (size_t r = 0; r < rows; r++)
        for (int64_t c = c0; c < c1; c++) {
            size_t i = r * (size_t)ld + (size_t)c;
            double d = fabs((double)a[i] - b[i]);
            worst = d > worst || isnan(d) ? (isnan(d) ? INFINITY : d) : worst;
            big = fabs(b[i]) > big ? fabs(b[i]) : big;
        }
    return big > 0 ? worst / big : worst;
}

static const ta_case ta_cases[] = {
    {.B = 2, .T = 150, .H = 4, .KV = 4, .hd = 16, .amp = 1.0},   /* group 1, three tiles, the last partial */
    {.B = 1, .T = 200, .H = 6, .KV = 2, .hd = 32, .amp = 1.0},   /* group 3 */
    {.B = 2, .T = 64, .H = 2, .KV = 1, .hd = 8, .amp = 2.0},     /* exactly one tile, MQA */
    {.B = 1, .T = 65, .H = 4, .KV = 1, .hd = 64, .amp = 0.5},    /* one row past the tile */
    {.B = 1, .T = 1, .H = 2, .KV = 1, .hd = 8, .amp = 1.0},      /* a single token */
    {.B = 1, .T = 131, .H = 4, .KV = 2, .hd = 8, .amp = 4.0},    /* peaky rows: the running max moves */
};
enum { TA_NCASES = sizeof ta_cases / sizeof *ta_cases };

static void test_attn_torch(void)
{
    char dirs[TA_NCASES][40];
    ta_run runs[TA_NCASES];
    char cmd[2048];
    int n = snprintf(cmd, sizeof cmd, "%s tests/ref/attn_torch.py", ta_python());
    EXPECT(access("tests/ref/attn_torch.py", R_OK) == 0);
    for (int k = 0; k < TA_NCASES; k++) {
        const ta_case *tc = &ta_cases[k];
        snprintf(dirs[k], sizeof dirs[k], "/tmp/spotrain-test-attn-XXXXXX");
        if (ta_make(&runs[k], tc, 2, 100 + (uint64_t)k) != 0 || !mkdtemp(dirs[k])) {
            EXPECT(0);
            dirs[k][0] = 0;
            continue;
        }
        ta_pass(&runs[k]);
        char text[200];
        int len = snprintf(text, sizeof text, "B=%lld\nT=%lld\nH=%lld\nKV=%lld\nhd=%lld\n", (long long)tc->B,
                           (long long)tc->T, (long long)tc->H, (long long)tc->KV, (long long)tc->hd);
        EXPECT(harness_write(dirs[k], "case.txt", text, (size_t)len) == 0);
        EXPECT(harness_write(dirs[k], "qkv.bin", runs[k].qkv, runs[k].nqkv * sizeof(float)) == 0);
        EXPECT(harness_write(dirs[k], "do.bin", runs[k].dout, runs[k].no * sizeof(float)) == 0);
        n += snprintf(cmd + n, sizeof cmd - (size_t)n, " %s", dirs[k]);
    }
    EXPECT(system(cmd) == 0);
    for (int k = 0; k < TA_NCASES; k++) {
        const ta_case *tc = &ta_cases[k];
        ta_run *r = &runs[k];
        double *ro = harness_read_f64(dirs[k], "ref_o.bin", r->no), *rl = harness_read_f64(dirs[k], "ref_lse.bin", r->nlse);
        double *rd = harness_read_f64(dirs[k], "ref_dqkv.bin", r->nqkv);
        EXPECT(ro && rl && rd);
        if (ro && rl && rd) {
            int64_t qd = tc->H * tc->hd, kvd = tc->KV * tc->hd, ld = r->a.ld;
            /* lse is [B, H, T], torch's too. */
            double eo = ta_err(r->o, ro, r->nrow, qd, 0, qd), el = ta_err(r->lse, rl, r->nlse, 1, 0, 1);
            double eq = ta_err(r->dqkv, rd, r->nrow, ld, 0, qd);
            double ek = ta_err(r->dqkv, rd, r->nrow, ld, qd, qd + kvd);
            double ev = ta_err(r->dqkv, rd, r->nrow, ld, qd + kvd, ld);
            printf("    B=%lld T=%lld H=%lld KV=%lld hd=%lld amp=%g: o %.1e lse %.1e dq %.1e dk %.1e dv %.1e\n",
                   (long long)tc->B, (long long)tc->T, (long long)tc->H, (long long)tc->KV, (long long)tc->hd,
                   tc->amp, eo, el, eq, ek, ev);
            /* fp32 with fp32 sums over at most a few hundred keys: measured
             * at most 1e-6 of the tensor's scale. */
            EXPECT(eo <= 2e-6 && el <= 2e-6 && eq <= 2e-6 && ek <= 2e-6 && ev <= 2e-6);
        }
        free(ro); free(rl); free(rd);
        static const char *files[] = {"case.txt", "qkv.bin", "do.bin", "ref_o.bin", "ref_lse.bin", "ref_dqkv.bin"};
        for (size_t f = 0; dirs[k][0] && f < sizeof files / sizeof *files; f++) {
            char path[512];
            snprintf(path, sizeof path, "%s/%s", dirs[k], files[f]);
            unlink(path);
        }
        if (dirs[k][0])
            rmdir(dirs[k]);
        ta_free(r);
    }
}

/* Every thread count gives the same bits: tasks own their outputs and sum
 * in a fixed tile order. */
static void test_attn_threads(void)
{
    ta_case tc = {.B = 3, .T = 190, .H = 6, .KV = 2, .hd = 16, .amp = 1.0};
    ta_run one, many;
    EXPECT(ta_make(&one, &tc, 1, 7) == 0 && ta_make(&many, &tc, 5, 7) == 0);
    if (!harness_failed_now) {
        ta_pass(&one);
        ta_pass(&many);
        EXPECT(memcmp(one.o, many.o, one.no * sizeof(float)) == 0);
        EXPECT(memcmp(one.lse, many.lse, one.nlse * sizeof(float)) == 0);
        EXPECT(memcmp(one.dqkv, many.dqkv, one.nqkv * sizeof(float)) == 0);
        for (size_t i = 0; i < one.nqkv; i++)
            if (!isfinite(one.dqkv[i])) {
                EXPECT(isfinite(one.dqkv[i]));
                break;
            }
    }
    ta_free(&one);
    ta_free(&many);
}

/* Within an ulp or so of libm over the range the log-sum-exp sees. */
static void test_elem_log(void)
{
    double worst = 0;
    for (float x = 1e-6f; x < 1e30f; x *= 1.001f) {
        double r = log((double)x), e = fabs((double)elem_log(x) - r);
        double ulp = fabs(r) > 1.0 ? fabs(r) * 0x1p-23 : 0x1p-23;
        worst = e / ulp > worst ? e / ulp : worst;
    }
    printf("    elem_log: worst error %.2f ulp\n", worst);
    EXPECT(worst <= 1.0);
    EXPECT(elem_log(1.0f) == 0.0f);
}

int main(void)
{
    harness_run("attn_torch_tiles_and_groups", test_attn_torch);
    harness_run("attn_bitwise_any_threads", test_attn_threads);
    harness_run("elem_log_ulp", test_elem_log);
    return harness_end();
}
