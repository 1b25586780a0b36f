/* The CPU matrix products behind one interface: OpenBLAS (linked), oneDNN
 * and BLIS (dlopen), each called single-threaded inside fixed row chunks of
 * our own OpenMP loop; and the timing and cache of train.cpu_gemm = auto. */
#include "backend/gemm.h"
#include "util/util.h"

#include <cblas.h>
#include <dlfcn.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* dnnl_sgemm: row-major, dims int64 (dnnl_dim_t), returns dnnl_status_t. */
typedef int (*gemm_dnnl_fn)(char, char, int64_t, int64_t, int64_t, float, const float *, int64_t, const float *,
                            int64_t, float, float *, int64_t);
typedef struct {
    int major, minor, patch;
    const char *hash;
    unsigned cpu_runtime, gpu_runtime;
} gemm_dnnl_version;
/* bli_sgemm: BLIS's typed API, any row and column strides; dim_t and inc_t
 * are 64-bit, trans_t an enum (0: no, 8: BLIS_TRANSPOSE). */
typedef void (*gemm_blis_fn)(int, int, int64_t, int64_t, int64_t, const float *, const float *, int64_t, int64_t,
                             const float *, int64_t, int64_t, const float *, float *, int64_t, int64_t);
enum { GEMM_BLIS_TRANS = 8 };
#ifdef __SANITIZE_ADDRESS__
enum { GEMM_SANITIZED = 1 };
#else
enum { GEMM_SANITIZED = 0 };
#endif

/* Process-wide: a library is opened once and kept (dlclose would pull
 * code from under a later backend). */
static struct {
    int state[GEMM_LIBS];   /* 0 not tried, 1 loaded, -1 missing */
    char why[GEMM_LIBS][200];
    char kernel[GEMM_LIBS][48];
    char version[GEMM_LIBS][32];
    gemm_dnnl_fn dnnl;
    void (*dnnl_omp_set)(int);   /* libgomp.so.1's, when oneDNN binds to it rather than to ours */
    gemm_blis_fn blis;
} gemm_g;

int gemm_parse(const char *name)
{
    static const char *const names[GEMM_LIBS] = {"openblas", "onednn", "blis"};
    if (name && !strcmp(name, "auto"))
        return GEMM_AUTO;
    for (int i = 0; name && i < GEMM_LIBS; i++)
        if (!strcmp(name, names[i]))
            return i;
    return GEMM_BAD;
}

const char *gemm_name(int lib)
{
    return lib == GEMM_ONEDNN ? "onednn" : lib == GEMM_BLIS ? "blis" : "openblas";
}

static const char *gemm_dnnl_isa(int isa)
{
    /* dnnl_cpu_isa_t values of oneDNN 2.x (dnnl_types.h). */
    static const struct {
        int v;
        const char *s;
    } t[] = {{0x1, "sse41"}, {0x3, "avx"}, {0x7, "avx2"}, {0x407, "avx2_vnni"}, {0xf, "avx512_mic"},
             {0x1f, "avx512_mic_4ops"}, {0x27, "avx512_core"}, {0x67, "avx512_core_vnni"},
             {0xe7, "avx512_core_bf16"}, {0x3e7, "avx512_core_amx"}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (t[i].v == isa)
            return t[i].s;
    return "unknown-isa";
}

static int gemm_open_dnnl(void)
{
    void *so = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!so) {
        snprintf(gemm_g.why[GEMM_ONEDNN], sizeof gemm_g.why[0],
                 "oneDNN not found (libdnnl.so.2); install it with: apt-get install libdnnl2");
        return -1;
    }
    const gemm_dnnl_version *(*ver)(void) = (const gemm_dnnl_version *(*)(void))dlsym(so, "dnnl_version");
    int (*isa)(void) = (int (*)(void))dlsym(so, "dnnl_get_effective_cpu_isa");
    gemm_g.dnnl = (gemm_dnnl_fn)dlsym(so, "dnnl_sgemm");
    /* Found in oneDNN's own dependency, libgomp.so.1: oneDNN uses it only
     * where this binary does not export its linked-in OpenMP runtime. */
    gemm_g.dnnl_omp_set = (void (*)(int))dlsym(so, "omp_set_num_threads");
    if (gemm_g.dnnl_omp_set == omp_set_num_threads)
        gemm_g.dnnl_omp_set = NULL;
    if (!ver || !isa || !gemm_g.dnnl) {
        snprintf(gemm_g.why[GEMM_ONEDNN], sizeof gemm_g.why[0],
                 "libdnnl.so.2 lacks dnnl_sgemm or dnnl_version; install oneDNN 2.x (apt-get install libdnnl2)");
        return -1;
    }
    const gemm_dnnl_version *v = ver();
    snprintf(gemm_g.version[GEMM_ONEDNN], sizeof gemm_g.version[0], "%d.%d.%d", v->major, v->minor, v->patch);
    snprintf(gemm_g.kernel[GEMM_ONEDNN], sizeof gemm_g.kernel[0], "%s", gemm_dnnl_isa(isa()));
    return 1;
}

static int gemm_open_blis(void)
{
    void *so = dlopen("libblis.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!so) {
        snprintf(gemm_g.why[GEMM_BLIS], sizeof gemm_g.why[0],
                 "BLIS not found (libblis.so.4); install it with: apt-get install libblis4-serial");
        return -1;
    }
    const char *(*ver)(void) = (const char *(*)(void))dlsym(so, "bli_info_get_version_str");
    int (*arch)(void) = (int (*)(void))dlsym(so, "bli_arch_query_id");
    const char *(*arch_name)(int) = (const char *(*)(int))dlsym(so, "bli_arch_string");
    void (*threads)(int64_t) = (void (*)(int64_t))dlsym(so, "bli_thread_set_num_threads");
    gemm_g.blis = (gemm_blis_fn)dlsym(so, "bli_sgemm");
    if (!ver || !arch || !arch_name || !threads || !gemm_g.blis) {
        snprintf(gemm_g.why[GEMM_BLIS], sizeof gemm_g.why[0],
                 "libblis.so.4 lacks bli_sgemm or its info calls; install BLIS 0.9 (apt-get install libblis4-serial)");
        return -1;
    }
    /* An OpenMP build of BLIS would otherwise follow BLIS_NUM_THREADS. */
    threads(1);
    snprintf(gemm_g.version[GEMM_BLIS], sizeof gemm_g.version[0], "%s", ver());
    snprintf(gemm_g.kernel[GEMM_BLIS], sizeof gemm_g.kernel[0], "%s", arch_name(arch()));
    return 1;
}

int gemm_open(int lib, char *why, size_t cap)
{
    if (lib < 0 || lib >= GEMM_LIBS)
        lib = GEMM_OPENBLAS;
    if (!gemm_g.state[lib]) {
        if (lib == GEMM_OPENBLAS) {
            openblas_set_num_threads(1);
            snprintf(gemm_g.kernel[lib], sizeof gemm_g.kernel[0], "%s", openblas_get_corename());
            /* openblas_get_config(): "OpenBLAS 0.3.21 DYNAMIC_ARCH ..." */
            const char *cfg = openblas_get_config();
            snprintf(gemm_g.version[lib], sizeof gemm_g.version[0], "%.*s", (int)strcspn(cfg + 9, " "),
                     strlen(cfg) > 9 ? cfg + 9 : "?");
            gemm_g.state[lib] = 1;
        } else if (GEMM_SANITIZED) {
            /* LeakSanitizer crashed at exit ("Tracer caught signal 11")
             * once oneDNN and BLIS were loaded: a sanitizer build runs
             * as a machine without them (their tests say SKIP). */
            snprintf(gemm_g.why[lib], sizeof gemm_g.why[0], "%s is not loaded in a sanitizer build (SAN=1)",
                     lib == GEMM_ONEDNN ? "oneDNN" : "BLIS");
            gemm_g.state[lib] = -1;
        } else {
            gemm_g.state[lib] = lib == GEMM_ONEDNN ? gemm_open_dnnl() : gemm_open_blis();
        }
    }
    if (gemm_g.state[lib] > 0)
        return ST_OK;
    if (why && cap)
        snprintf(why, cap, "%s", gemm_g.why[lib]);
    return ST_UNAVAILABLE;
}

const char *gemm_kernel(int lib)
{
    return lib >= 0 && lib < GEMM_LIBS && gemm_g.state[lib] > 0 ? gemm_g.kernel[lib] : "";
}

void gemm_describe(int lib, char *out, size_t cap)
{
    if (lib < 0 || lib >= GEMM_LIBS || gemm_g.state[lib] <= 0)
        snprintf(out, cap, "%s (not loaded)", gemm_name(lib));
    else
        snprintf(out, cap, "%s %.31s %.47s", gemm_name(lib), gemm_g.version[lib], gemm_g.kernel[lib]);
}

void gemm_list(char *out, size_t cap)
{
    size_t len = 0;
    out[0] = 0;
    for (int lib = 0; lib < GEMM_LIBS && len < cap; lib++) {
        char d[320];
        if (gemm_open(lib, NULL, 0) == ST_OK)
            gemm_describe(lib, d, sizeof d);
        else
            snprintf(d, sizeof d, "%s: %.200s", gemm_name(lib), gemm_g.why[lib]);
        int w = snprintf(out + len, cap - len, "%s%s", lib ? "; " : "", d);
        len += w > 0 ? (size_t)w : 0;
    }
}

/* One single-threaded call of lib on a chunk. */
static void gemm_call(int lib, int ta, int tb, int64_t m, int64_t n, int64_t k, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    if (lib == GEMM_ONEDNN) {
        /* oneDNN threads with OpenMP, and its omp_* calls bind to the
         * runtime this binary exports (libgomp linked in): in a team of
         * one thread (nt = 1: not an active region) it would start a
         * nested team of all cores. One thread, for fixed bits and no
         * second pool; the setting lasts as long as gemm_run's region. */
        omp_set_num_threads(1);
        if (gemm_g.dnnl_omp_set)
            gemm_g.dnnl_omp_set(1);
        gemm_g.dnnl(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, 1.0f, A, lda, B, ldb, beta, C, ldc);
    } else if (lib == GEMM_BLIS) {
        const float one = 1.0f;
        /* Strides describe the stored matrices, which are row-major
         * [rows, ld] whether transposed or not. */
        gemm_g.blis(ta ? GEMM_BLIS_TRANS : 0, tb ? GEMM_BLIS_TRANS : 0, m, n, k, &one, A, lda, 1, B, ldb, 1, &beta,
                    C, ldc, 1);
    } else {
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n,
                    (int)k, 1.0f, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
    }
}

/* Every matrix product runs as fixed row chunks, each a single-threaded
 * library call inside our own OpenMP loop: one thread pool instead of two
 * fighting over the cores, and chunk boundaries that depend on the shape
 * only, so results are bitwise the same for any thread count (a library's
 * own threading changes the rounding with the thread count). */
enum { GEMM_CHUNKS = 8, GEMM_MIN_ROWS = 64 };

static int64_t gemm_chunk_rows(int64_t M)
{
    int64_t rows = (M + GEMM_CHUNKS - 1) / GEMM_CHUNKS;
    rows = (rows + 15) / 16 * 16;
    return rows < GEMM_MIN_ROWS ? GEMM_MIN_ROWS : rows;
}

void gemm_run(int lib, int nt, int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    int64_t rows = gemm_chunk_rows(M), nch = (M + rows - 1) / rows;
    /* Dynamic: a chunk's result does not depend on which thread runs it, and
     * a core shared with another process then slows only its own chunks. */
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int64_t i = 0; i < nch; i++) {
        int64_t r0 = i * rows, m = M - r0 < rows ? M - r0 : rows;
        const float *a = ta ? A + r0 : A + r0 * lda;
        gemm_call(lib, ta, tb, m, N, K, a, lda, B, ldb, beta, C + r0 * ldc, ldc);
    }
}

/* Seconds of one shape at its full size and count: timed on at most nt
 * chunks of rows (every chunk but the last has the same shape, and each
 * thread gets one), best of reps after a warm-up call. */
static double gemm_time_shape(int lib, int nt, const gemm_shape *s, int reps)
{
    int64_t rows = gemm_chunk_rows(s->M), m = rows * nt < s->M ? rows * nt : s->M;
    size_t na = (size_t)(s->ta ? s->K * s->M : m * s->K), nb = (size_t)(s->K * s->N), nc = (size_t)(m * s->N);
    float *a = malloc(na * sizeof *a), *b = malloc(nb * sizeof *b), *c = malloc(nc * sizeof *c);
    double best = -1;
    if (a && b && c) {
        for (size_t i = 0; i < na; i++)
            a[i] = (float)((i * 7919u) % 1000u) * 1e-3f - 0.5f;
        for (size_t i = 0; i < nb; i++)
            b[i] = (float)((i * 104729u) % 1000u) * 1e-3f - 0.5f;
        memset(c, 0, nc * sizeof *c);
        for (int r = 0; r <= reps; r++) {   /* r = 0 warms up */
            double t0 = util_now();
            gemm_run(lib, nt, s->ta, s->tb, m, s->N, s->K, a, s->ta ? s->M : s->K, b, s->tb ? s->K : s->N, s->beta,
                     c, s->N);
            double dt = util_now() - t0;
            if (r > 0 && (best < 0 || dt < best))
                best = dt;
        }
        /* The full product runs ceil(M / rows) chunks in ceil(chunks / nt) waves. */
        int64_t waves = ((s->M + rows - 1) / rows + nt - 1) / nt, timed = ((m + rows - 1) / rows + nt - 1) / nt;
        best = best * (double)waves / (double)timed * (double)s->count;
    }
    free(a);
    free(b);
    free(c);
    return best;
}

/* Each library's estimate for the shapes: per shape the best of rounds,
 * libraries interleaved shape by shape, so that a neighbour's burst on a
 * shared machine hurts every library alike. t[lib] < 0: not loaded. */
static int gemm_estimate_all(const gemm_shape *s, int n, int nt, int rounds, double t[GEMM_LIBS])
{
    for (int l = 0; l < GEMM_LIBS; l++)
        t[l] = gemm_g.state[l] > 0 ? 0 : -1;
    for (int i = 0; i < n; i++) {
        double best[GEMM_LIBS] = {0};
        for (int r = 0; r < rounds; r++)
            for (int l = 0; l < GEMM_LIBS; l++) {
                if (t[l] < 0)
                    continue;
                double e = gemm_time_shape(l, nt, &s[i], 2);
                if (e < 0)
                    return util_fail(ST_SOFTWARE, "cpu_gemm auto: out of memory timing the model's matrix products");
                if (r == 0 || e < best[l])
                    best[l] = e;
            }
        for (int l = 0; l < GEMM_LIBS; l++)
            if (t[l] >= 0)
                t[l] += best[l];
    }
    return ST_OK;
}

/* The cache key: everything the choice depends on, as one line. */
static void gemm_key(const gemm_shape *s, int n, int nt, const char *cpu_model, char *out, size_t cap)
{
    uint64_t h = 1469598103934665603ull;   /* FNV-1a over the shapes */
    for (int i = 0; i < n; i++) {
        int64_t v[7] = {s[i].ta, s[i].tb, s[i].M, s[i].N, s[i].K, (int64_t)s[i].beta, s[i].count};
        const unsigned char *p = (const unsigned char *)v;
        for (size_t j = 0; j < sizeof v; j++)
            h = (h ^ p[j]) * 1099511628211ull;
    }
    char libs[600];
    gemm_list(libs, sizeof libs);
    snprintf(out, cap, "cpu=%s threads=%d shapes=%016llx libs=%s", cpu_model, nt, (unsigned long long)h, libs);
    for (char *q = out; *q; q++)
        if (*q == '\n' || *q == '\t')
            *q = ' ';
}

static int gemm_cached(const char *cache, const char *key)
{
    char line[1200];
    int lib = GEMM_BAD;
    FILE *f = cache && cache[0] ? fopen(cache, "r") : NULL;
    if (!f)
        return GEMM_BAD;
    /* "<lib>\t<key>\n" */
    while (fgets(line, sizeof line, f)) {
        char *tab = strchr(line, '\t');
        if (!tab)
            continue;
        *tab = 0;
        tab[1 + strcspn(tab + 1, "\n")] = 0;
        if (!strcmp(tab + 1, key))
            lib = gemm_parse(line);
    }
    fclose(f);
    return lib >= 0 && gemm_open(lib, NULL, 0) == ST_OK ? lib : GEMM_BAD;
}

int gemm_pick(const gemm_shape *s, int n, int nt, const char *cpu_model, const char *cache, int *lib, char *note,
              size_t cap)
{
    char key[1200];
    gemm_key(s, n, nt, cpu_model, key, sizeof key);
    int got = gemm_cached(cache, key);
    if (got >= 0) {
        *lib = got;
        snprintf(note, cap, "cpu_gemm auto: %s (cached in %s)", gemm_name(got), cache);
        return ST_OK;
    }
    double t[GEMM_LIBS];
    char skipped[400] = "";
    size_t len = 0;
    for (int l = 0; l < GEMM_LIBS; l++) {
        char why[200];
        t[l] = -1;
        if (gemm_open(l, why, sizeof why) != ST_OK) {
            int w = snprintf(skipped + len, sizeof skipped - len, "; %s", why);
            len += w > 0 && (size_t)w < sizeof skipped - len ? (size_t)w : 0;
        }
    }
    int rc = gemm_estimate_all(s, n, nt, 3, t);
    if (rc != ST_OK)
        return rc;
    int best = GEMM_OPENBLAS;
    for (int l = 1; l < GEMM_LIBS; l++)
        if (t[l] > 0 && t[l] < t[best] * (best == GEMM_OPENBLAS ? 1.0 - GEMM_MARGIN : 1.0))
            best = l;
    *lib = best;
    int w = snprintf(note, cap, "cpu_gemm auto: %s (a step's matrix products on %d thread%s: openblas %.0f ms",
                     gemm_name(best), nt, nt == 1 ? "" : "s", t[0] * 1e3);
    for (int l = 1; l < GEMM_LIBS; l++)
        if (t[l] > 0 && w > 0 && (size_t)w < cap)
            w += snprintf(note + w, cap - (size_t)w, ", %s %.0f ms", gemm_name(l), t[l] * 1e3);
    if (w > 0 && (size_t)w < cap)
        snprintf(note + w, cap - (size_t)w, ")%s", skipped);
    FILE *f = cache && cache[0] ? fopen(cache, "w") : NULL;
    if (f) {
        fprintf(f, "%s\t%s\n", gemm_name(best), key);
        fclose(f);
    }
    return ST_OK;
}
