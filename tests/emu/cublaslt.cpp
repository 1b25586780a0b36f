/* A reference cuBLASLt for the emulated build (make test-emu): the entry
 * points cuda/gemm.cuh opens with dlopen, written from cuBLASLt's
 * documentation rather than from what gemm.cuh expects, so the products
 * are checked independently. Column-major matrices; D = alpha op(A) op(B)
 * + beta C per batch entry (strided batches); C is not read when beta is
 * 0; fp32 accumulation in k order; A and B in fp32, fp16 or bf16, C and D
 * in fp32 or the A/B type, as the documented type table allows; FAST_TF32
 * rounds fp32 inputs to TF32. Each attribute must come with its
 * documented size. Anything else the real library would refuse
 * (mismatched shapes, ld smaller than rows, misaligned pointers against the
 * preference, D overlapping A or B or its own batch entries, operands
 * outside device memory) fails with a status and a line on stderr. */
#include "cublasLt.h"
#include "cuda_bf16.h"
#include "cuda_fp16.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The emulator's allocation table and stream queue, when the program
 * exports them (the emulated build does): products run in stream order. */
extern "C" int emu_is_device(const void *p, size_t bytes) __attribute__((weak));
/* ptrs[i]: what the product touches, written when writes[i] (the stream
 * hazard check). */
extern "C" void emu_enqueue(cudaStream_t s, void (*fn)(void *), void *arg, const void *const *ptrs, const int *writes,
                            int n) __attribute__((weak));

enum : unsigned { LT_HANDLE = 0x4c544831u, LT_DESC = 0x4c544432u, LT_LAYOUT = 0x4c544c33u, LT_PREF = 0x4c545034u,
                  LT_ALGO = 0x4c544135u, LT_NALGO = 3 };

struct emu_lt_handle {
    unsigned magic;
};
struct emu_lt_desc {
    unsigned magic;
    int32_t compute, scale, pointer_mode, ta, tb;
};
struct emu_lt_layout {
    unsigned magic;
    int32_t type, order, batch;
    uint64_t rows, cols;
    int64_t ld, stride;
};
struct emu_lt_pref {
    unsigned magic;
    uint32_t search, scheme, align[4];
    uint64_t workspace;
};

static cublasStatus_t lt_fail(cublasStatus_t st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static cublasStatus_t lt_fail(cublasStatus_t st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("emulated cuBLASLt: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return st;
}

static size_t lt_size(int32_t type)
{
    return type == CUDA_R_32F ? 4 : type == CUDA_R_16F || type == CUDA_R_16BF ? 2 : 0;
}

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h)
{
    if (!h)
        return CUBLAS_STATUS_INVALID_VALUE;
    *h = (cublasLtHandle_t)calloc(1, sizeof **h);
    if (!*h)
        return CUBLAS_STATUS_ALLOC_FAILED;
    (*h)->magic = LT_HANDLE;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t h)
{
    if (!h || h->magic != LT_HANDLE)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    h->magic = 0;
    free(h);
    return CUBLAS_STATUS_SUCCESS;
}

size_t cublasLtGetVersion(void) { return 130000; }

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute, cudaDataType_t scale)
{
    if (!d)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_PEDANTIC &&
        compute != CUBLAS_COMPUTE_32F_FAST_TF32)
        return lt_fail(CUBLAS_STATUS_NOT_SUPPORTED, "compute type %d is not emulated", (int)compute);
    if (scale != CUDA_R_32F)
        return lt_fail(CUBLAS_STATUS_NOT_SUPPORTED, "scale type %d with a 32F compute type", (int)scale);
    *d = (cublasLtMatmulDesc_t)calloc(1, sizeof **d);
    if (!*d)
        return CUBLAS_STATUS_ALLOC_FAILED;
    (*d)->magic = LT_DESC;
    (*d)->compute = compute;
    (*d)->scale = scale;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d)
{
    if (!d || d->magic != LT_DESC)
        return CUBLAS_STATUS_INVALID_VALUE;
    d->magic = 0;
    free(d);
    return CUBLAS_STATUS_SUCCESS;
}

/* Every attribute has its documented type: sizes must match. */
#define LT_SET(field, type)                                                                            \
    do {                                                                                               \
        if (size != sizeof(type))                                                                      \
            return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "%s: attribute %d takes %zu bytes, got %zu",  \
                           __func__, (int)attr, sizeof(type), size);                                   \
        type v_;                                                                                       \
        memcpy(&v_, buf, sizeof v_);                                                                   \
        field = v_;                                                                                    \
    } while (0)

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size)
{
    if (!d || d->magic != LT_DESC || !buf)
        return CUBLAS_STATUS_INVALID_VALUE;
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_POINTER_MODE:
        LT_SET(d->pointer_mode, int32_t);
        return d->pointer_mode == 0 ? CUBLAS_STATUS_SUCCESS
                                    : lt_fail(CUBLAS_STATUS_NOT_SUPPORTED, "only host alpha and beta are emulated");
    case CUBLASLT_MATMUL_DESC_TRANSA:
        LT_SET(d->ta, int32_t);
        break;
    case CUBLASLT_MATMUL_DESC_TRANSB:
        LT_SET(d->tb, int32_t);
        break;
    default:
        return lt_fail(CUBLAS_STATUS_NOT_SUPPORTED, "matmul descriptor attribute %d is not emulated", (int)attr);
    }
    if ((d->ta != CUBLAS_OP_N && d->ta != CUBLAS_OP_T) || (d->tb != CUBLAS_OP_N && d->tb != CUBLAS_OP_T))
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "transa %d transb %d: N or T for real types", d->ta, d->tb);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type, uint64_t rows, uint64_t cols,
                                          int64_t ld)
{
    if (!l)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!lt_size(type))
        return lt_fail(CUBLAS_STATUS_NOT_SUPPORTED, "data type %d is not emulated", (int)type);
    /* column order: a column's stride must cover its rows */
    if (ld < 0 || (uint64_t)ld < rows || rows > INT32_MAX || cols > INT32_MAX)
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "layout %llu x %llu with ld %lld", (unsigned long long)rows,
                       (unsigned long long)cols, (long long)ld);
    *l = (cublasLtMatrixLayout_t)calloc(1, sizeof **l);
    if (!*l)
        return CUBLAS_STATUS_ALLOC_FAILED;
    (*l)->magic = LT_LAYOUT;
    (*l)->type = type;
    (*l)->rows = rows;
    (*l)->cols = cols;
    (*l)->ld = ld;
    (*l)->batch = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(const cublasLtMatrixLayout_t l)
{
    if (!l || l->magic != LT_LAYOUT)
        return CUBLAS_STATUS_INVALID_VALUE;
    l->magic = 0;
    free(l);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t attr,
                                                const void *buf, size_t size)
{
    if (!l || l->magic != LT_LAYOUT || !buf)
        return CUBLAS_STATUS_INVALID_VALUE;
    switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_ORDER:
        LT_SET(l->order, int32_t);
        return l->order == 0 ? CUBLAS_STATUS_SUCCESS
                             : lt_fail(CUBLAS_STATUS_NOT_SUPPORTED, "only column order is emulated");
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT:
        LT_SET(l->batch, int32_t);
        return l->batch >= 1 ? CUBLAS_STATUS_SUCCESS
                             : lt_fail(CUBLAS_STATUS_INVALID_VALUE, "batch count %d", (int)l->batch);
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET:
        LT_SET(l->stride, int64_t);
        return CUBLAS_STATUS_SUCCESS;
    default:
        return lt_fail(CUBLAS_STATUS_NOT_SUPPORTED, "layout attribute %d is not emulated", (int)attr);
    }
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p)
{
    if (!p)
        return CUBLAS_STATUS_INVALID_VALUE;
    *p = (cublasLtMatmulPreference_t)calloc(1, sizeof **p);
    if (!*p)
        return CUBLAS_STATUS_ALLOC_FAILED;
    (*p)->magic = LT_PREF;
    (*p)->scheme = CUBLASLT_REDUCTION_SCHEME_MASK;
    for (int i = 0; i < 4; i++)
        (*p)->align[i] = 256;   /* the documented default */
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p)
{
    if (!p || p->magic != LT_PREF)
        return CUBLAS_STATUS_INVALID_VALUE;
    p->magic = 0;
    free(p);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                                                    size_t size)
{
    if (!p || p->magic != LT_PREF || !buf)
        return CUBLAS_STATUS_INVALID_VALUE;
    switch (attr) {
    case CUBLASLT_MATMUL_PREF_SEARCH_MODE:
        LT_SET(p->search, uint32_t);
        break;
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
        LT_SET(p->workspace, uint64_t);
        break;
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK:
        LT_SET(p->scheme, uint32_t);
        break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
        LT_SET(p->align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES], uint32_t);
        break;
    default:
        return lt_fail(CUBLAS_STATUS_NOT_SUPPORTED, "preference attribute %d is not emulated", (int)attr);
    }
    return CUBLAS_STATUS_SUCCESS;
}

} /* extern "C" */

/* The product's shape from the descriptors, checked as cuBLASLt does. */
struct lt_shape {
    uint64_t m, n, k;
    int32_t batch;
};

static int lt_layout_ok(cublasLtMatrixLayout_t l) { return l && l->magic == LT_LAYOUT; }

static cublasStatus_t lt_check(cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                               cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d, lt_shape *s)
{
    if (!op || op->magic != LT_DESC || !lt_layout_ok(a) || !lt_layout_ok(b) || !lt_layout_ok(c) || !lt_layout_ok(d))
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "an invalid or destroyed descriptor");
    uint64_t m = op->ta == CUBLAS_OP_N ? a->rows : a->cols, ka = op->ta == CUBLAS_OP_N ? a->cols : a->rows;
    uint64_t kb = op->tb == CUBLAS_OP_N ? b->rows : b->cols, n = op->tb == CUBLAS_OP_N ? b->cols : b->rows;
    if (ka != kb || c->rows != m || c->cols != n || d->rows != m || d->cols != n)
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "shapes do not chain: op(A) %llux%llu, op(B) %llux%llu, C %llux%llu, "
                       "D %llux%llu", (unsigned long long)m, (unsigned long long)ka, (unsigned long long)kb,
                       (unsigned long long)n, (unsigned long long)c->rows, (unsigned long long)c->cols,
                       (unsigned long long)d->rows, (unsigned long long)d->cols);
    if (a->batch != d->batch || b->batch != d->batch || c->batch != d->batch)
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "batch counts A %d B %d C %d D %d", a->batch, b->batch, c->batch,
                       d->batch);
    if (c->type != d->type || c->ld != d->ld || (c->batch > 1 && c->stride != d->stride))
        return lt_fail(CUBLAS_STATUS_NOT_SUPPORTED, "C and D layouts differ (type, ld or batch stride)");
    /* the documented type table for the 32F compute types */
    int ok;
    if (op->compute == CUBLAS_COMPUTE_32F_FAST_TF32)
        ok = a->type == CUDA_R_32F && b->type == CUDA_R_32F && c->type == CUDA_R_32F;
    else if (a->type != b->type)
        ok = 0;
    else if (a->type == CUDA_R_32F)
        ok = c->type == CUDA_R_32F;
    else
        ok = c->type == CUDA_R_32F || c->type == a->type;
    if (!ok)
        return lt_fail(CUBLAS_STATUS_NOT_SUPPORTED, "types A %d B %d C/D %d under compute type %d", a->type, b->type,
                       c->type, op->compute);
    /* batch entries of D must not overlap: they would be written at once */
    if (d->batch > 1 && (uint64_t)(d->stride < 0 ? -d->stride : d->stride) < (uint64_t)d->ld * (d->cols - 1) + d->rows)
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "D's %d batch entries overlap (stride %lld, ld %lld, %llu columns)",
                       d->batch, (long long)d->stride, (long long)d->ld, (unsigned long long)d->cols);
    s->m = m;
    s->n = n;
    s->k = ka;
    s->batch = d->batch;
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t op,
                                                         cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                                         cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                                         cublasLtMatmulPreference_t pref, int requested,
                                                         cublasLtMatmulHeuristicResult_t results[], int *returned)
{
    lt_shape s;
    if (!h || h->magic != LT_HANDLE)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!pref || pref->magic != LT_PREF || requested < 1 || !results || !returned)
        return CUBLAS_STATUS_INVALID_VALUE;
    *returned = 0;
    cublasStatus_t st = lt_check(op, a, b, c, d, &s);
    if (st != CUBLAS_STATUS_SUCCESS)
        return st;
    /* The emulated algorithms (LT_NALGO of them, told apart by data[5])
     * need no workspace and never reduce split-K partial sums in place;
     * each records the alignments it was chosen for. With
     * SPOTRAIN_EMU_LT_FAIL=state the first comes back marked unusable, with
     * =matmul cublasLtMatmul refuses it (NOT_SUPPORTED, as a real library
     * may for an algorithm its heuristic offered): gemm.cuh must go on to
     * the next. */
    int n = requested < (int)LT_NALGO ? requested : (int)LT_NALGO;
    const char *fail = getenv("SPOTRAIN_EMU_LT_FAIL");
    for (int r = 0; r < n; r++) {
        memset(&results[r], 0, sizeof results[r]);
        results[r].algo.data[0] = LT_ALGO;
        for (int i = 0; i < 4; i++)
            results[r].algo.data[1 + i] = pref->align[i];
        results[r].algo.data[5] = (uint64_t)r;
        results[r].workspaceSize = 0;
        results[r].state = r == 0 && fail && !strcmp(fail, "state") ? CUBLAS_STATUS_NOT_SUPPORTED
                                                                     : CUBLAS_STATUS_SUCCESS;
        results[r].wavesCount = 1.0f;
    }
    *returned = n;
    return CUBLAS_STATUS_SUCCESS;
}

static float lt_load(const void *base, int32_t type, int64_t i, int tf32)
{
    if (type == CUDA_R_16F)
        return __half2float(((const __half *)base)[i]);
    if (type == CUDA_R_16BF)
        return __bfloat162float(((const __nv_bfloat16 *)base)[i]);
    float f = ((const float *)base)[i];
    if (tf32 && isfinite(f)) {
        /* TF32 keeps 10 mantissa bits: round to nearest, ties away */
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        u = (u + 0x1000u) & ~0x1fffu;
        memcpy(&f, &u, sizeof f);
    }
    return f;
}

static void lt_store(void *base, int32_t type, int64_t i, float v)
{
    if (type == CUDA_R_16F)
        ((__half *)base)[i] = __float2half_rn(v);
    else if (type == CUDA_R_16BF)
        ((__nv_bfloat16 *)base)[i] = __float2bfloat16(v);
    else
        ((float *)base)[i] = v;
}

/* Bytes from a matrix's first element to one past its last, all batches. */
static size_t lt_extent(cublasLtMatrixLayout_t l)
{
    if (!l->rows || !l->cols)
        return 0;
    int64_t last = (int64_t)((l->cols - 1) * (uint64_t)l->ld + l->rows);
    if (l->batch > 1)
        last += (int64_t)(l->batch - 1) * l->stride;
    return (size_t)last * lt_size(l->type);
}

static int lt_overlap(const void *p, size_t np, const void *q, size_t nq)
{
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)q;
    return np && nq && a < b + nq && b < a + np;
}

/* One product, its descriptors copied (the caller may destroy them
 * before the stream runs it). */
struct lt_job {
    lt_shape s;
    int32_t ta, tb;
    int tf32;
    emu_lt_layout a, b, c, d;
    const void *A, *B, *C;
    void *D;
    float al, be;
};

static void lt_run(void *p)
{
    lt_job *j = (lt_job *)p;
    const lt_shape s = j->s;
    const emu_lt_layout *a = &j->a, *b = &j->b, *c = &j->c, *d = &j->d;
    const void *A = j->A, *B = j->B, *C = j->C;
    void *D = j->D;
    float al = j->al, be = j->be;
    int tf32 = j->tf32;
    /* op(A) as m rows of k and op(B) as n columns of k, in fp32 (TF32
     * rounded), then every D element is one dot product in k order */
    float *ra = (float *)malloc((s.m * s.k + 1) * sizeof(float)), *rb = (float *)malloc((s.n * s.k + 1) * sizeof(float));
    if (!ra || !rb) {
        fprintf(stderr, "emulated cuBLASLt: out of memory for a product\n");
        abort();
    }
    for (int32_t bi = 0; bi < s.batch; bi++) {
        int64_t oa = bi * a->stride, ob = bi * b->stride, oc = bi * c->stride, od = bi * d->stride;
        for (uint64_t i = 0; i < s.m; i++)
            for (uint64_t p2 = 0; p2 < s.k; p2++)
                ra[i * s.k + p2] = lt_load(A, a->type, oa + (int64_t)(j->ta == CUBLAS_OP_N ? i + p2 * (uint64_t)a->ld
                                                                                           : p2 + i * (uint64_t)a->ld),
                                           tf32);
        for (uint64_t jj = 0; jj < s.n; jj++)
            for (uint64_t p2 = 0; p2 < s.k; p2++)
                rb[jj * s.k + p2] = lt_load(B, b->type, ob + (int64_t)(j->tb == CUBLAS_OP_N ? p2 + jj * (uint64_t)b->ld
                                                                                            : jj + p2 * (uint64_t)b->ld),
                                            tf32);
        for (uint64_t jj = 0; jj < s.n; jj++)
            for (uint64_t i = 0; i < s.m; i++) {
                const float *x = ra + i * s.k, *y = rb + jj * s.k;
                float acc = 0.0f;
                for (uint64_t p2 = 0; p2 < s.k; p2++)
                    acc += x[p2] * y[p2];
                float v = al * acc;
                if (be != 0.0f)
                    v += be * lt_load(C, c->type, oc + (int64_t)(i + jj * (uint64_t)c->ld), 0);
                lt_store(D, d->type, od + (int64_t)(i + jj * (uint64_t)d->ld), v);
            }
    }
    free(ra);
    free(rb);
    free(j);
}

extern "C" cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t op, const void *alpha,
                                         const void *A, cublasLtMatrixLayout_t a, const void *B,
                                         cublasLtMatrixLayout_t b, const void *beta, const void *C,
                                         cublasLtMatrixLayout_t c, void *D, cublasLtMatrixLayout_t d,
                                         const cublasLtMatmulAlgo_t *algo, void *workspace, size_t workspace_bytes,
                                         cudaStream_t stream)
{
    lt_shape s = {};
    if (!h || h->magic != LT_HANDLE)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    cublasStatus_t st = lt_check(op, a, b, c, d, &s);
    if (st != CUBLAS_STATUS_SUCCESS)
        return st;
    if (!alpha || !beta || !D || (!A && s.k) || (!B && s.k))
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "a NULL operand or scalar");
    if (workspace_bytes && !workspace)
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "workspace size %zu with a NULL workspace", workspace_bytes);
    float al, be;
    memcpy(&al, alpha, sizeof al);
    memcpy(&be, beta, sizeof be);
    if (be != 0.0f && !C)
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "beta %g with a NULL C", (double)be);
    if (algo) {
        if (algo->data[0] != LT_ALGO || algo->data[5] >= LT_NALGO)
            return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "an algorithm the heuristic did not return");
        const char *fail = getenv("SPOTRAIN_EMU_LT_FAIL");
        if (algo->data[5] == 0 && fail && !strcmp(fail, "matmul"))
            return CUBLAS_STATUS_NOT_SUPPORTED;
        const void *ptr[4] = {A, B, C ? C : D, D};
        for (int i = 0; i < 4; i++)
            if ((uintptr_t)ptr[i] % algo->data[1 + i])
                return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "%c at %p is not aligned to the %u bytes the algorithm "
                               "was chosen for", "ABCD"[i], ptr[i], (unsigned)algo->data[1 + i]);
    }
    size_t ea = lt_extent(a), eb = lt_extent(b), ec = be != 0.0f ? lt_extent(c) : 0, ed = lt_extent(d);
    if (emu_is_device) {
        const void *ptr[4] = {A, B, C, D};
        size_t ext[4] = {ea, eb, ec, ed};
        for (int i = 0; i < 4; i++)
            if (ext[i] && !emu_is_device(ptr[i], ext[i]))
                return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "%c: %zu bytes at %p are not inside one device allocation",
                               "ABCD"[i], ext[i], ptr[i]);
    }
    if (lt_overlap(D, ed, A, ea) || lt_overlap(D, ed, B, eb))
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "D overlaps an input (A or B)");
    if (C && C != D && be != 0.0f && lt_overlap(D, ed, C, ec))
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "D partly overlaps C (only C == D is in place)");
    lt_job *j = (lt_job *)malloc(sizeof *j);
    if (!j)
        return CUBLAS_STATUS_ALLOC_FAILED;
    *j = lt_job{s, op->ta, op->tb, op->compute == CUBLAS_COMPUTE_32F_FAST_TF32, *a, *b, *c, *d, A, B, C, D, al, be};
    if (emu_enqueue) {
        /* C is read only at beta != 0; a real cuBLASLt may write its
         * workspace (this one does not use it) */
        const void *ptrs[5] = {A, B, D, be != 0.0f ? C : NULL, workspace_bytes ? workspace : NULL};
        int writes[5] = {0, 0, 1, 0, 1};
        emu_enqueue(stream, lt_run, j, ptrs, writes, 5);   /* when the stream gets there */
    } else {
        lt_run(j);
    }
    return CUBLAS_STATUS_SUCCESS;
}
