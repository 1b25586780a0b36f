/* The backend-neutral helpers: the continuity comparison behind the
 * resume warning, the device-name override, and the CPU backend being
 * truthful about its precision and device.
 * module: backend */
#include "tests/harness.h"
#include "backend/backend.h"
#include "util/util.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

static backend test_be(const char *name, const char *prec, const char *dev)
{
    backend b;
    memset(&b, 0, sizeof b);
    b.name = name;
    b.precision = prec;
    snprintf(b.device, sizeof b.device, "%s", dev);
    return b;
}

static void test_continuity(void)
{
    backend b = test_be("cuda", "bf16", "NVIDIA H200");
    char why[256];
    EXPECT(backend_continuity(&b, "cuda", "bf16", "NVIDIA H200", NULL, why, sizeof why) == 0 && !why[0]);
    EXPECT(backend_continuity(&b, "cuda", "fp16", "NVIDIA H200", NULL, why, sizeof why) == 1);
    EXPECT(!strcmp(why, "precision fp16 -> bf16"));
    EXPECT(backend_continuity(&b, "cpu", "fp32", "AMD EPYC 7R13 Processor", NULL, why, sizeof why) == 3);
    EXPECT(!strcmp(why, "backend cpu -> cuda, precision fp32 -> bf16, device AMD EPYC 7R13 Processor -> NVIDIA H200"));
    /* Not recorded (a checkpoint older than the fields): nothing to compare. */
    EXPECT(backend_continuity(&b, "", "", "", "", why, sizeof why) == 0);
    EXPECT(backend_continuity(&b, NULL, NULL, "NVIDIA A100-SXM4-80GB", NULL, why, sizeof why) == 1);
    EXPECT(!strcmp(why, "device NVIDIA A100-SXM4-80GB -> NVIDIA H200"));
    /* Another matrix-product library or kernel (train.cpu_gemm) breaks
     * the bits as surely as another device. */
    backend c = test_be("cpu", "fp32", "AMD EPYC");
    snprintf(c.libraries, sizeof c.libraries, "OpenBLAS 0.3.21; cpu_gemm onednn 2.6.3 avx512_core_bf16");
    EXPECT(backend_continuity(&c, "cpu", "fp32", "AMD EPYC", "OpenBLAS 0.3.21; cpu_gemm onednn 2.6.3 avx512_core_bf16",
                              why, sizeof why) == 0);
    EXPECT(backend_continuity(&c, "cpu", "fp32", "AMD EPYC", "OpenBLAS 0.3.21; cpu_gemm openblas 0.3.21 Cooperlake",
                              why, sizeof why) == 1);
    EXPECT(!strcmp(why, "libraries OpenBLAS 0.3.21; cpu_gemm openblas 0.3.21 Cooperlake -> OpenBLAS 0.3.21; "
                        "cpu_gemm onednn 2.6.3 avx512_core_bf16"));
    /* A short buffer truncates, never overruns. */
    char small[12];
    memset(small, 'x', sizeof small);
    EXPECT(backend_continuity(&b, "cpu", "fp32", "other", NULL, small, sizeof small) == 3);
    EXPECT(memchr(small, 0, sizeof small) != NULL);
}

static void test_override(void)
{
    backend b = test_be("cpu", "fp32", "Intel Xeon");
    unsetenv("SPOTRAIN_DEVICE_NAME");
    backend_device_override(&b);
    EXPECT(!strcmp(b.device, "Intel Xeon"));
    setenv("SPOTRAIN_DEVICE_NAME", "", 1);
    backend_device_override(&b);
    EXPECT(!strcmp(b.device, "Intel Xeon"));
    setenv("SPOTRAIN_DEVICE_NAME", "Frobnicator 9000", 1);
    backend_device_override(&b);
    EXPECT(!strcmp(b.device, "Frobnicator 9000"));
    unsetenv("SPOTRAIN_DEVICE_NAME");
}

static model_shape test_tiny_shape(void)
{
    return (model_shape){.dim = 8, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1, .head_dim = 4, .ffn_dim = 16,
                         .vocab = 16, .seq_len = 4, .rope_theta = 10000, .norm_eps = 1e-6};
}

static void test_cpu_precision(void)
{
    model_shape s = test_tiny_shape();
    model_layout L;
    EXPECT(model_layout_init(&L, &s) == ST_OK);
    const char *refused[] = {"bf16", "fp16", "tf32"};
    for (size_t i = 0; i < 3; i++) {
        backend *b = NULL;
        backend_opts o = {"cpu", refused[i], 1, 0, 1, 0, 0, 1, 0};
        EXPECT(backend_create(&b, &L, &o) == ST_CONFIG && b == NULL);
        EXPECT(strstr(util_last_error(), "fp32 only") != NULL);
    }
    const char *taken[] = {NULL, "fp32"};
    for (size_t i = 0; i < 2; i++) {
        backend *b = NULL;
        backend_opts o = {"cpu", taken[i], 1, 0, 1, 0, 0, 1, 0};
        EXPECT(backend_create(&b, &L, &o) == ST_OK && b);
        if (!b)
            continue;
        EXPECT(!strcmp(b->precision, "fp32") && b->device[0] && !strncmp(b->libraries, "OpenBLAS", 8));
        b->destroy(b);
    }
    model_layout_free(&L);
}

/* Whether a product below FLT_MIN comes out as zero in every thread of a
 * 2-thread OpenMP team (volatile: computed at run time, under the mode). */
static int test_flushed_everywhere(void)
{
    int zeros = 0;
#pragma omp parallel num_threads(2) reduction(+ : zeros)
    {
        volatile float tiny = 1e-30f, scale = 1e-10f;
        zeros += tiny * scale == 0.0f;
    }
    return zeros;
}

/* train.flush_denormals: off, subnormals are kept (IEEE, as PyTorch); on,
 * the backend puts its compute threads in FTZ/DAZ. Last: the mode stays
 * set in this process's threads. */
static void test_cpu_flush(void)
{
    model_shape s = test_tiny_shape();
    model_layout L;
    backend *b = NULL;
    EXPECT(model_layout_init(&L, &s) == ST_OK);
    EXPECT(backend_create(&b, &L, &(backend_opts){"cpu", NULL, 2, 0, 1, 0, 0, 1, 0}) == ST_OK && b);
    EXPECT(test_flushed_everywhere() == 0);
    if (b)
        b->destroy(b);
    b = NULL;
    EXPECT(backend_create(&b, &L, &(backend_opts){"cpu", NULL, 2, 0, 1, 1, 0, 1, 0}) == ST_OK && b);
#if defined(__x86_64__) || defined(__i386__)
    EXPECT(test_flushed_everywhere() == 2);
#endif
    if (b)
        b->destroy(b);
    model_layout_free(&L);
}

/* The start-up warning when OpenBLAS runs kernels older than the CPU. */
static void test_blas_advice(void)
{
    char out[320];
    EXPECT(backend_cpu_blas_advice("Prescott", 1, 1, 0, out, sizeof out) == 1);
    EXPECT(strstr(out, "Prescott") && strstr(out, "AVX-512") && strstr(out, "OPENBLAS_CORETYPE=SkylakeX"));
    EXPECT(backend_cpu_blas_advice("Sandybridge", 1, 0, 0, out, sizeof out) == 1);
    EXPECT(strstr(out, "OPENBLAS_CORETYPE=Haswell") && !strstr(out, "SkylakeX") && !strstr(out, "AVX-512"));
    EXPECT(backend_cpu_blas_advice("prescott", 1, 0, 0, out, sizeof out) == 1);   /* names vary in case */
    /* Kernels that match the CPU, a CPU that has no AVX2, the user's own choice: silent. */
    EXPECT(backend_cpu_blas_advice("Haswell", 1, 0, 0, out, sizeof out) == 0 && out[0] == 0);
    EXPECT(backend_cpu_blas_advice("SkylakeX", 1, 1, 0, out, sizeof out) == 0 && out[0] == 0);
    EXPECT(backend_cpu_blas_advice("Zen", 1, 0, 0, out, sizeof out) == 0 && out[0] == 0);
    EXPECT(backend_cpu_blas_advice("Prescott", 0, 0, 0, out, sizeof out) == 0 && out[0] == 0);
    EXPECT(backend_cpu_blas_advice("Prescott", 1, 1, 1, out, sizeof out) == 0 && out[0] == 0);
    EXPECT(backend_cpu_blas_advice(NULL, 1, 1, 0, out, sizeof out) == 0 && out[0] == 0);
    /* The backend carries this process's answer for the trainer to log. */
    model_shape s = test_tiny_shape();
    model_layout L;
    backend *b = NULL;
    EXPECT(model_layout_init(&L, &s) == ST_OK);
    EXPECT(backend_create(&b, &L, &(backend_opts){"cpu", NULL, 1, 0, 1, 0, 0, 1, 0}) == ST_OK && b);
    EXPECT(b && backend_cpu_blas_check(out, sizeof out) == (b->warning[0] != 0) && !strcmp(out, b->warning));
    if (b)
        b->destroy(b);
    model_layout_free(&L);
}

int main(void)
{
    harness_run("cpu: a warning when OpenBLAS's kernels are older than the CPU", test_blas_advice);
    harness_run("continuity compares backend, precision, device", test_continuity);
    harness_run("SPOTRAIN_DEVICE_NAME overrides the reported device", test_override);
    harness_run("cpu: fp32 only, device and libraries named", test_cpu_precision);
    harness_run("cpu: flush_denormals puts every compute thread in FTZ/DAZ", test_cpu_flush);
    return harness_end();
}
