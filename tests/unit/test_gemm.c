/* The CPU matrix-product layer: every library that loads on this machine
 * computes the products the model asks for (all transposes, beta 0 and 1,
 * strided leading dimensions), bitwise the same on 1, 2 and 3 threads and
 * call after call; and cpu_gemm = auto's cache answers without timing.
 * module: backend */
#include "tests/harness.h"
#include "backend/gemm.h"
#include "util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static float test_val(uint64_t seed, size_t i)
{
    uint64_t x = (seed + 1) * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 32;
    return (float)(x % 2001) / 1000.0f - 1.0f;
}

/* One product through lib on nt threads against a double reference. */
static void test_product(int lib, int ta, int tb, int64_t M, int64_t N, int64_t K, float beta)
{
    int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 7;
    size_t na = (size_t)((ta ? K : M) * lda), nb = (size_t)((tb ? N : K) * ldb), nc = (size_t)(M * ldc);
    float *A = malloc(na * sizeof *A), *B = malloc(nb * sizeof *B), *C[3];
    for (size_t i = 0; i < na; i++)
        A[i] = test_val(1, i);
    for (size_t i = 0; i < nb; i++)
        B[i] = test_val(2, i);
    for (int t = 0; t < 3; t++) {
        C[t] = malloc(nc * sizeof *C[t]);
        for (size_t i = 0; i < nc; i++)
            C[t][i] = test_val(3, i);
        gemm_run(lib, t + 1, ta, tb, M, N, K, A, lda, B, ldb, beta, C[t], ldc);
    }
    double worst = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double ref = beta * test_val(3, (size_t)(i * ldc + j));
            for (int64_t l = 0; l < K; l++)
                ref += (double)(ta ? A[l * lda + i] : A[i * lda + l]) * (tb ? B[j * ldb + l] : B[l * ldb + j]);
            double e = fabs(C[0][i * ldc + j] - ref);
            worst = e > worst ? e : worst;
        }
    /* Padding between rows is never written. */
    int pad_kept = 1;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = N; j < ldc; j++)
            pad_kept &= C[0][i * ldc + j] == test_val(3, (size_t)(i * ldc + j));
    EXPECT(worst < 1e-4 * (double)K);
    EXPECT(pad_kept);
    EXPECT(!memcmp(C[0], C[1], nc * sizeof(float)) && !memcmp(C[0], C[2], nc * sizeof(float)));
    /* Again: the same bits (no state carried between calls). */
    for (size_t i = 0; i < nc; i++)
        C[1][i] = test_val(3, i);
    gemm_run(lib, 2, ta, tb, M, N, K, A, lda, B, ldb, beta, C[1], ldc);
    EXPECT(!memcmp(C[0], C[1], nc * sizeof(float)));
    if (worst >= 1e-4 * (double)K)
        fprintf(stderr, "  %s ta=%d tb=%d %lldx%lldx%lld beta %g: worst error %g\n", gemm_name(lib), ta, tb,
                (long long)M, (long long)N, (long long)K, beta, worst);
    free(A);
    free(B);
    for (int t = 0; t < 3; t++)
        free(C[t]);
}

static void test_libraries(void)
{
    EXPECT(gemm_open(GEMM_OPENBLAS, NULL, 0) == ST_OK && gemm_kernel(GEMM_OPENBLAS)[0]);
    for (int lib = 0; lib < GEMM_LIBS; lib++) {
        char why[200] = "";
        if (gemm_open(lib, why, sizeof why) != ST_OK) {
            /* Missing is one line naming what to install. */
#ifdef __SANITIZE_ADDRESS__
            EXPECT(why[0] && strstr(why, "sanitizer build") && !strchr(why, '\n'));
#else
            EXPECT(why[0] && strstr(why, "apt-get install") && !strchr(why, '\n'));
#endif
            printf("  (%s not loaded here: %s)\n", gemm_name(lib), why);
            continue;
        }
        char d[160];
        gemm_describe(lib, d, sizeof d);
        EXPECT(!strncmp(d, gemm_name(lib), strlen(gemm_name(lib))) && strstr(d, gemm_kernel(lib)));
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                /* 200 rows: several chunks and a short last one. */
                test_product(lib, ta, tb, 200, 48, 72, 0.0f);
                test_product(lib, ta, tb, 200, 33, 17, 1.0f);
                test_product(lib, ta, tb, 5, 7, 130, 1.0f);
            }
    }
}

static void test_parse(void)
{
    EXPECT(gemm_parse("auto") == GEMM_AUTO);
    EXPECT(gemm_parse("openblas") == GEMM_OPENBLAS && gemm_parse("onednn") == GEMM_ONEDNN);
    EXPECT(gemm_parse("blis") == GEMM_BLIS && gemm_parse("mkl") == GEMM_BAD && gemm_parse(NULL) == GEMM_BAD);
    for (int lib = 0; lib < GEMM_LIBS; lib++)
        EXPECT(gemm_parse(gemm_name(lib)) == lib);
}

/* auto: a cache line with this key is the answer, untimed; another key
 * (other shapes) is timed and rewrites the line. */
static void test_pick_cache(void)
{
    char dir[] = "/tmp/spotrain-gemm-XXXXXX", path[64], note[600];
    EXPECT(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/cpu_gemm.cache", dir);
    gemm_shape s[2] = {{0, 1, 128, 64, 32, 0.0f, 3}, {1, 0, 64, 32, 128, 1.0f, 3}};
    int lib = GEMM_BAD;
    EXPECT(gemm_pick(s, 2, 2, "test cpu", path, &lib, note, sizeof note) == ST_OK && lib >= 0 && lib < GEMM_LIBS);
    EXPECT(strstr(note, "openblas") && strstr(note, " ms") && !strstr(note, "cached"));
    FILE *f = fopen(path, "r");
    char line[1200] = "";
    EXPECT(f && fgets(line, sizeof line, f));
    if (f)
        fclose(f);
    EXPECT(!strncmp(line, gemm_name(lib), strlen(gemm_name(lib))) && strstr(line, "cpu=test cpu threads=2"));
    /* Whatever the line names (a loaded library) is taken as is. */
    f = fopen(path, "w");
    if (f) {
        fprintf(f, "openblas\t%s", strchr(line, '\t') + 1);
        fclose(f);
    }
    int again = GEMM_BAD;
    EXPECT(gemm_pick(s, 2, 2, "test cpu", path, &again, note, sizeof note) == ST_OK && again == GEMM_OPENBLAS);
    EXPECT(strstr(note, "cached") != NULL);
    /* Another thread count is another key: timed again. */
    EXPECT(gemm_pick(s, 2, 1, "test cpu", path, &again, note, sizeof note) == ST_OK && !strstr(note, "cached"));
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    harness_run("gemm: names parse both ways", test_parse);
    harness_run("gemm: every loaded library right, same bits on 1-3 threads", test_libraries);
    harness_run("gemm: auto's cache answers without timing", test_pick_cache);
    return harness_end();
}
