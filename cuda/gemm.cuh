/* Matrix products through cuBLASLt, opened with dlopen so the binary starts
 * where the library is missing. Runs one planned product (cuda/plan.h) on
 * device pointers; descriptors and the heuristic's algorithms (several, in
 * its order: one it offers may still be refused at the first product) are
 * cached per shape, with one fixed workspace and the one compute stream,
 * and split-K schemes that reduce in place with atomics are excluded: same
 * GPU model, same library, same algorithm, same bits. */
#ifndef SPOTRAIN_CUDA_GEMM_CUH
#define SPOTRAIN_CUDA_GEMM_CUH

#include "common.cuh"
#include <cublasLt.h>
#include <dlfcn.h>

typedef struct {
    void *so;
    char path[256];
    size_t version;
    decltype(&cublasLtCreate) create;
    decltype(&cublasLtDestroy) destroy;
    decltype(&cublasLtGetVersion) get_version;
    decltype(&cublasLtMatmulDescCreate) desc_create;
    decltype(&cublasLtMatmulDescDestroy) desc_destroy;
    decltype(&cublasLtMatmulDescSetAttribute) desc_set;
    decltype(&cublasLtMatrixLayoutCreate) layout_create;
    decltype(&cublasLtMatrixLayoutDestroy) layout_destroy;
    decltype(&cublasLtMatrixLayoutSetAttribute) layout_set;
    decltype(&cublasLtMatmulPreferenceCreate) pref_create;
    decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy;
    decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set;
    decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic;
    decltype(&cublasLtMatmul) matmul;
} cuda_lt_api;

/* Opens cuBLASLt: $SPOTRAIN_CUBLASLT if set, else the sonames the dynamic
 * loader finds (LD_LIBRARY_PATH, ldconfig). 0 or -1 with why[] filled. */
static int cuda_lt_open(cuda_lt_api *a, char *why, size_t cap)
{
    static const char *names[] = {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"};
    memset(a, 0, sizeof *a);
    const char *env = getenv("SPOTRAIN_CUBLASLT");
    char first[160] = "";   /* the first failure's reason: later tries overwrite dlerror() */
    if (env && *env) {
        a->so = dlopen(env, RTLD_NOW | RTLD_LOCAL);
        snprintf(a->path, sizeof a->path, "%s", env);
        if (!a->so)
            snprintf(first, sizeof first, "%s", dlerror());
    }
    for (size_t i = 0; !a->so && i < sizeof names / sizeof names[0]; i++) {
        a->so = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        snprintf(a->path, sizeof a->path, "%s", names[i]);
        if (!a->so && !first[0])
            snprintf(first, sizeof first, "%s", dlerror());
    }
    if (!a->so) {
        snprintf(why, cap, "cuBLASLt not found (%.160s); add its directory to LD_LIBRARY_PATH or set "
                 "SPOTRAIN_CUBLASLT", first);
        return -1;
    }
#define CUDA_LT_SYM(field, name)                                                                       \
    do {                                                                                               \
        *(void **)&a->field = dlsym(a->so, name);                                                      \
        if (!a->field) {                                                                               \
            snprintf(why, cap, "cuBLASLt at %.150s lacks %s (too old?)", a->path, name);              \
            dlclose(a->so);                                                                            \
            a->so = NULL;                                                                              \
            return -1;                                                                                 \
        }                                                                                              \
    } while (0)
    CUDA_LT_SYM(create, "cublasLtCreate");
    CUDA_LT_SYM(destroy, "cublasLtDestroy");
    CUDA_LT_SYM(get_version, "cublasLtGetVersion");
    CUDA_LT_SYM(desc_create, "cublasLtMatmulDescCreate");
    CUDA_LT_SYM(desc_destroy, "cublasLtMatmulDescDestroy");
    CUDA_LT_SYM(desc_set, "cublasLtMatmulDescSetAttribute");
    CUDA_LT_SYM(layout_create, "cublasLtMatrixLayoutCreate");
    CUDA_LT_SYM(layout_destroy, "cublasLtMatrixLayoutDestroy");
    CUDA_LT_SYM(layout_set, "cublasLtMatrixLayoutSetAttribute");
    CUDA_LT_SYM(pref_create, "cublasLtMatmulPreferenceCreate");
    CUDA_LT_SYM(pref_destroy, "cublasLtMatmulPreferenceDestroy");
    CUDA_LT_SYM(pref_set, "cublasLtMatmulPreferenceSetAttribute");
    CUDA_LT_SYM(heuristic, "cublasLtMatmulAlgoGetHeuristic");
    CUDA_LT_SYM(matmul, "cublasLtMatmul");
#undef CUDA_LT_SYM
    a->version = a->get_version();
    return 0;
}

static void cuda_lt_close(cuda_lt_api *a)
{
    if (a->so)
        dlclose(a->so);
    a->so = NULL;
}

/* A cached product: its key (column-major shape, types, pointer
 * alignments) and the descriptors and algorithm made for it. */
typedef struct {
    cuda_gemm_cm cm;
    int ab_type, c_type, compute, align[4];
    float alpha, beta;
} cuda_gemm_key;

enum { CUDA_GEMM_CACHE = 256, CUDA_GEMM_ALGOS = 8 };

typedef struct {
    cuda_gemm_key key;
    int used;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo[CUDA_GEMM_ALGOS];
    int nalgo, cur;                    /* usable algorithms, the one in use */
} cuda_gemm_entry;

typedef struct {
    cuda_lt_api api;
    cublasLtHandle_t h;
    cudaStream_t stream;
    void *workspace;
    cudaDataType_t ab_type;            /* the compute precision's storage */
    cublasComputeType_t compute;       /* 32F, or 32F_FAST_TF32 for tf32 */
    cuda_gemm_entry cache[CUDA_GEMM_CACHE];
    int next;                          /* round-robin slot when the cache is full */
    int fell_back;                     /* an algorithm was refused (logged once) */
    /* [ow_lo, ow_hi): the gradients right after zero_grads, which were not
     * zeroed where a product writes them: an accumulating product (C == D)
     * whose D lies there runs with beta 0, the first write overwrites. */
    const char *ow_lo, *ow_hi;
} cuda_gemm_ctx;

static int cuda_align_of(const void *p)
{
    uintptr_t u = (uintptr_t)p;
    int a = 256;
    while (a > 1 && u % (uintptr_t)a)
        a /= 2;
    return a;
}

static void cuda_gemm_entry_free(cuda_gemm_ctx *x, cuda_gemm_entry *e)
{
    if (!e->used)
        return;
    if (e->op)
        x->api.desc_destroy(e->op);
    if (e->a)
        x->api.layout_destroy(e->a);
    if (e->b)
        x->api.layout_destroy(e->b);
    if (e->c)
        x->api.layout_destroy(e->c);
    e->used = 0;
}

static int cuda_gemm_layout(cuda_gemm_ctx *x, cublasLtMatrixLayout_t *l, cudaDataType_t t, int64_t rows,
                            int64_t cols, int64_t ld, int64_t batch, int64_t stride)
{
    if (x->api.layout_create(l, t, (uint64_t)rows, (uint64_t)cols, ld) != CUBLAS_STATUS_SUCCESS)
        return -1;
    if (batch > 1) {
        int32_t bc = (int32_t)batch;
        if (x->api.layout_set(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc) != CUBLAS_STATUS_SUCCESS ||
            x->api.layout_set(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride) !=
                CUBLAS_STATUS_SUCCESS)
            return -1;
    }
    return 0;
}

/* Builds descriptors and picks the algorithm for a key. */
static int cuda_gemm_prepare(cuda_gemm_ctx *x, cuda_gemm_entry *e, const char *name)
{
    const cuda_gemm_key *k = &e->key;
    const cuda_gemm_cm *c = &k->cm;
    cublasOperation_t ta = c->transa ? CUBLAS_OP_T : CUBLAS_OP_N, tb = c->transb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res[CUDA_GEMM_ALGOS];
    int found = 0;
    size_t ws = CUDA_WORKSPACE_BYTES;
    uint32_t scheme = CUBLASLT_REDUCTION_SCHEME_MASK & ~(uint32_t)CUBLASLT_REDUCTION_SCHEME_INPLACE;
    e->used = 1;
    e->op = NULL;
    e->a = e->b = e->c = NULL;
    if (x->api.desc_create(&e->op, (cublasComputeType_t)k->compute, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS)
        goto fail;
    if (x->api.desc_set(e->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) != CUBLAS_STATUS_SUCCESS ||
        x->api.desc_set(e->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) != CUBLAS_STATUS_SUCCESS)
        goto fail;
    if (cuda_gemm_layout(x, &e->a, (cudaDataType_t)k->ab_type, c->transa ? c->k : c->m, c->transa ? c->m : c->k,
                         c->lda, c->batch, c->stride_a) ||
        cuda_gemm_layout(x, &e->b, (cudaDataType_t)k->ab_type, c->transb ? c->n : c->k, c->transb ? c->k : c->n,
                         c->ldb, c->batch, c->stride_b) ||
        cuda_gemm_layout(x, &e->c, (cudaDataType_t)k->c_type, c->m, c->n, c->ldc, c->batch, c->stride_c))
        goto fail;
    /* Checked: a library that ignored the reduction mask could pick an
     * in-place (atomic) split-K, and determinism would be lost silently. */
    if (x->api.pref_create(&pref) != CUBLAS_STATUS_SUCCESS ||
        x->api.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws) != CUBLAS_STATUS_SUCCESS ||
        x->api.pref_set(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &scheme, sizeof scheme) !=
            CUBLAS_STATUS_SUCCESS)
        goto fail;
    for (int i = 0; i < 4; i++) {
        uint32_t al = (uint32_t)k->align[i];
        if (x->api.pref_set(pref, (cublasLtMatmulPreferenceAttributes_t)(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES + i),
                            &al, sizeof al) != CUBLAS_STATUS_SUCCESS)
            goto fail;
    }
    /* A returned result is usable only when its own state says so; the
     * rest are kept in the heuristic's order for cuda_gemm_run to fall
     * back on. */
    if (x->api.heuristic(x->h, e->op, e->a, e->b, e->c, e->c, pref, CUDA_GEMM_ALGOS, res, &found) !=
        CUBLAS_STATUS_SUCCESS)
        goto fail;
    e->nalgo = e->cur = 0;
    for (int i = 0; i < found && i < CUDA_GEMM_ALGOS; i++)
        if (res[i].state == CUBLAS_STATUS_SUCCESS && res[i].workspaceSize <= ws)
            e->algo[e->nalgo++] = res[i].algo;
    if (e->nalgo < 1)
        goto fail;
    x->api.pref_destroy(pref);
    return ST_OK;
fail:
    if (pref)
        x->api.pref_destroy(pref);
    return util_fail(ST_SOFTWARE, "cuBLASLt: no algorithm for product %s (m %lld n %lld k %lld batch %lld); "
                     "report this shape", name, (long long)c->m, (long long)c->n, (long long)c->k,
                     (long long)c->batch);
}

/* D = alpha op(A) op(B) + beta C in the plan's row-major terms; A and B in
 * the compute type, C and D fp32 when g->out_f32. C may be D (accumulate)
 * or another buffer of D's layout (residual add: D = res + product). */
static int cuda_gemm_run_(cuda_gemm_ctx *x, const cuda_gemm *g, const void *A, const void *B, const void *C, void *D)
{
    cuda_gemm_key k;
    memset(&k, 0, sizeof k);
    k.cm = cuda_gemm_colmajor(g);
    k.ab_type = (int)x->ab_type;
    k.c_type = g->out_f32 ? (int)CUDA_R_32F : (int)x->ab_type;
    k.compute = (int)x->compute;
    /* cuBLAS's A is the row-major B and its B the row-major A. */
    k.align[0] = cuda_align_of(B);
    k.align[1] = cuda_align_of(A);
    k.align[2] = cuda_align_of(C ? C : D);
    k.align[3] = cuda_align_of(D);
    k.alpha = g->alpha;
    k.beta = g->beta;
    if (C == D && x->ow_lo && (const char *)D >= x->ow_lo && (const char *)D < x->ow_hi)
        k.beta = 0.0f;
    cuda_gemm_entry *e = NULL;
    for (int i = 0; i < CUDA_GEMM_CACHE && !e; i++)
        if (x->cache[i].used && !memcmp(&x->cache[i].key, &k, sizeof k))
            e = &x->cache[i];
    if (!e) {
        for (int i = 0; i < CUDA_GEMM_CACHE && !e; i++)
            if (!x->cache[i].used)
                e = &x->cache[i];
        if (!e) {
            e = &x->cache[x->next];
            x->next = (x->next + 1) % CUDA_GEMM_CACHE;
            cuda_gemm_entry_free(x, e);
        }
        e->key = k;
        int rc = cuda_gemm_prepare(x, e, g->name);
        if (rc != ST_OK) {
            cuda_gemm_entry_free(x, e);
            return rc;
        }
    }
    float alpha = g->alpha, beta = k.beta;
    cublasStatus_t st;
    /* Refusals come back before anything runs (a not-supported or
     * invalid-value status), so the next algorithm may take the product;
     * any other failure may have written D and ends the step. The first
     * that works is kept for the shape: the same algorithm every step. */
    for (;;) {
        st = x->api.matmul(x->h, e->op, &alpha, B, e->a, A, e->b, &beta, C ? C : D, e->c, D, e->c, &e->algo[e->cur],
                           x->workspace, CUDA_WORKSPACE_BYTES, x->stream);
        if (st == CUBLAS_STATUS_SUCCESS ||
            (st != CUBLAS_STATUS_NOT_SUPPORTED && st != CUBLAS_STATUS_INVALID_VALUE) || e->cur + 1 >= e->nalgo)
            break;
        if (!x->fell_back)
            util_log("cuBLASLt: product %s refused algorithm %d of %d (status %d); trying the next (said once)",
                     g->name, e->cur + 1, e->nalgo, (int)st);
        x->fell_back = 1;
        e->cur++;
    }
    if (st != CUBLAS_STATUS_SUCCESS)
        return util_fail(ST_SOFTWARE, "cuBLASLt: product %s failed (status %d, algorithm %d of the %d the heuristic "
                         "offered; m %lld n %lld k %lld); check the GPU and the library version (%s)", g->name,
                         (int)st, e->cur + 1, e->nalgo, (long long)k.cm.m, (long long)k.cm.n, (long long)k.cm.k,
                         x->api.path);
    return ST_OK;
}

/* The product above, its time counted as GEMM in the kernel-class
 * profile (or as the section around it). */
static int cuda_gemm_run(cuda_gemm_ctx *x, const cuda_gemm *g, const void *A, const void *B, const void *C, void *D)
{
    int kp = cuda_kp_enter(x->stream, CUDA_K_GEMM);
    int rc = cuda_gemm_run_(x, g, A, B, C, D);
    cuda_kp_leave(x->stream, kp);
    return rc;
}

static int cuda_gemm_init(cuda_gemm_ctx *x, cudaStream_t stream, cuda_prec p, char *why, size_t cap)
{
    memset(x, 0, sizeof *x);
    if (cuda_lt_open(&x->api, why, cap))
        return ST_UNAVAILABLE;
    if (x->api.create(&x->h) != CUBLAS_STATUS_SUCCESS) {
        snprintf(why, cap, "cublasLtCreate failed (%.200s)", x->api.path);
        cuda_lt_close(&x->api);
        return ST_UNAVAILABLE;
    }
    if (cudaMalloc(&x->workspace, CUDA_WORKSPACE_BYTES) != cudaSuccess) {
        snprintf(why, cap, "no device memory for the %d MiB cuBLASLt workspace", CUDA_WORKSPACE_BYTES >> 20);
        x->api.destroy(x->h);
        cuda_lt_close(&x->api);
        return ST_UNAVAILABLE;
    }
    x->stream = stream;
    x->ab_type = p == CUDA_BF16 ? CUDA_R_16BF : p == CUDA_FP16 ? CUDA_R_16F : CUDA_R_32F;
    x->compute = p == CUDA_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    return ST_OK;
}

static void cuda_gemm_destroy(cuda_gemm_ctx *x)
{
    if (!x->api.so)
        return;
    for (int i = 0; i < CUDA_GEMM_CACHE; i++)
        cuda_gemm_entry_free(x, &x->cache[i]);
    if (x->workspace)
        cudaFree(x->workspace);
    x->api.destroy(x->h);
    cuda_lt_close(&x->api);
}

#endif
