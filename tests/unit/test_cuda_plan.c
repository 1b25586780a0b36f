/* The CUDA backend's host-side plans without a GPU: every matrix product's
 * column-major form run through OpenBLAS against its row-major meaning and
 * against the CPU backend's calls; the arena's offsets and alignment;
 * AdamW segments; the memory plan, its attention scratch linear in T
 * (flash attention; tests/unit/test_cuda_kernels.c checks the kernels).
 * module: cuda */
#include "tests/harness.h"
#include "cuda/plan.h"
#include "backend/backend.h"
#include "model/elem.h"
#include "model/model.h"
#include "comm/comm.h"
#include "model/memplan.h"
#include "comm/xfer.h"
#include "util/util.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static model_shape small_shape(int64_t kv)
{
    model_shape s = {.dim = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = kv, .head_dim = 8, .ffn_dim = 48,
                     .vocab = 40, .seq_len = 8, .rope_theta = 10000, .norm_eps = 1e-5};
    return s;
}

static uint64_t rng_state = 88172645463325252ull;
static float frand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *rnd(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; p && i < n; i++)
        p[i] = frand();
    return p;
}

/* Elements a row-major operand spans: rows x ld, plus the batch strides. */
static size_t span(int64_t rows, int64_t ld, int64_t batch, int64_t stride)
{
    return (size_t)(rows * ld + (batch - 1) * stride);
}

/* The column-major call through OpenBLAS, batch item by batch item. */
static void run_cm(const cuda_gemm *g, const float *A, const float *B, float *C)
{
    cuda_gemm_cm c = cuda_gemm_colmajor(g);
    for (int64_t i = 0; i < c.batch; i++)
        cblas_sgemm(CblasColMajor, c.transa ? CblasTrans : CblasNoTrans, c.transb ? CblasTrans : CblasNoTrans,
                    (int)c.m, (int)c.n, (int)c.k, g->alpha, B + i * c.stride_a, (int)c.lda, A + i * c.stride_b,
                    (int)c.ldb, g->beta, C + i * c.stride_c, (int)c.ldc);
}

/* The row-major meaning, by definition. */
static void run_ref(const cuda_gemm *g, const float *A, const float *B, float *C)
{
    for (int64_t bi = 0; bi < g->batch; bi++)
        for (int64_t i = 0; i < g->M; i++)
            for (int64_t j = 0; j < g->N; j++) {
                double acc = 0;
                for (int64_t k = 0; k < g->K; k++) {
                    float a = g->ta ? A[bi * g->sa + k * g->lda + i] : A[bi * g->sa + i * g->lda + k];
                    float b = g->tb ? B[bi * g->sb + j * g->ldb + k] : B[bi * g->sb + k * g->ldb + j];
                    acc += (double)a * b;
                }
                float *c = &C[bi * g->sc + i * g->ldc + j];
                *c = (float)(g->alpha * acc + g->beta * *c);
            }
}

static void check_all_gemms(int64_t kv, int64_t B)
{
    model_shape s = small_shape(kv);
    cuda_dims d;
    cuda_dims_init(&d, &s, B);
    for (int id = 0; id < CUDA_G_COUNT; id++) {
        cuda_gemm g = cuda_gemm_plan(&d, id, d.chunk_rows);
        EXPECT(strcmp(g.name, "?") != 0);
        size_t na = span(g.ta ? g.K : g.M, g.lda, g.batch, g.sa), nb = span(g.tb ? g.N : g.K, g.ldb, g.batch, g.sb);
        size_t nc = span(g.M, g.ldc, g.batch, g.sc);
        /* a row of each operand fits its leading dimension */
        EXPECT((g.ta ? g.M : g.K) <= g.lda);
        EXPECT((g.tb ? g.K : g.N) <= g.ldb);
        EXPECT(g.N <= g.ldc);
        float *A = rnd(na), *Bm = rnd(nb), *C1 = rnd(nc), *C2 = malloc(nc * sizeof *C2);
        if (!A || !Bm || !C1 || !C2) {
            EXPECT(0);
        } else {
            memcpy(C2, C1, nc * sizeof *C2);
            run_cm(&g, A, Bm, C1);
            run_ref(&g, A, Bm, C2);
            double worst = 0;
            for (size_t i = 0; i < nc; i++)
                worst = fmax(worst, fabs((double)C1[i] - C2[i]));
            if (worst > 1e-4)
                fprintf(stderr, "    gemm %s: max difference %g\n", g.name, worst);
            EXPECT(worst <= 1e-4);
        }
        free(A); free(Bm); free(C1); free(C2);
    }
}

static void test_gemm_colmajor_mha(void) { check_all_gemms(4, 2); }
static void test_gemm_colmajor_gqa(void) { check_all_gemms(2, 3); }

/* The row-major descriptions are the CPU backend's cpu_gemm calls
 * (backend/cpu.c), argument for argument: ta, tb, M, N, K, lda, ldb, ldc, beta. */
static void test_gemm_matches_cpu_calls(void)
{
    model_shape s = small_shape(2);
    cuda_dims d;
    cuda_dims_init(&d, &s, 2);
    int64_t N = d.N, D = d.D, F = d.F, V = d.V, qd = d.qd, qkvd = d.qkvd;
    struct { int id; int64_t v[9]; } cpu[] = {
        {CUDA_G_QKV, {0, 1, N, qkvd, D, D, D, qkvd, 0}},
        {CUDA_G_O, {0, 1, N, D, qd, qd, qd, D, 1}},
        {CUDA_G_GU, {0, 1, N, 2 * F, D, D, D, 2 * F, 0}},
        {CUDA_G_DOWN, {0, 1, N, D, F, F, F, D, 1}},
        {CUDA_G_LOGITS, {0, 1, N, V, D, D, D, V, 0}},
        {CUDA_G_DWLM, {1, 0, V, D, N, V, D, D, 1}},
        {CUDA_G_DXNF, {0, 0, N, D, V, V, D, D, 0}},
        {CUDA_G_DH, {0, 0, N, F, D, D, F, F, 0}},
        {CUDA_G_DWD, {1, 0, D, F, N, D, F, F, 1}},
        {CUDA_G_DWGU, {1, 0, 2 * F, D, N, 2 * F, D, D, 1}},
        {CUDA_G_DXN2, {0, 0, N, D, 2 * F, 2 * F, D, D, 0}},
        {CUDA_G_DAO, {0, 0, N, qd, D, D, qd, qd, 0}},
        {CUDA_G_DWO, {1, 0, D, qd, N, D, qd, qd, 1}},
        {CUDA_G_DWQKV, {1, 0, qkvd, D, N, qkvd, D, D, 1}},
        {CUDA_G_DXN1, {0, 0, N, D, qkvd, qkvd, D, D, 0}},
    };
    for (size_t i = 0; i < sizeof cpu / sizeof cpu[0]; i++) {
        cuda_gemm g = cuda_gemm_plan(&d, cpu[i].id, N);
        int64_t got[9] = {g.ta, g.tb, g.M, g.N, g.K, g.lda, g.ldb, g.ldc, (int64_t)g.beta};
        int same = !memcmp(got, cpu[i].v, sizeof got) && g.batch == 1;
        if (!same)
            fprintf(stderr, "    gemm %s differs from the CPU backend's call\n", g.name);
        EXPECT(same);
    }
}

/* ---- arena, segments, memory ------------------------------------------- */

static void test_arena(void)
{
    model_shape s = small_shape(2);
    for (int p = 0; p < 4; p++) {
        cuda_arena a;
        EXPECT(cuda_arena_plan(&a, &s, 3, (cuda_prec)p) == ST_OK);
        EXPECT(a.n == (size_t)(s.n_layers * CA_PER_LAYER + CA_GLOBAL_COUNT));
        for (size_t i = 0; i < a.n; i++) {
            EXPECT(a.off[i] % CUDA_ARENA_ALIGN == 0);
            EXPECT(a.bytes[i] > 0);
            if (i + 1 < a.n)
                EXPECT(a.off[i] + a.bytes[i] <= a.off[i + 1]);
            else
                EXPECT(a.off[i] + a.bytes[i] <= a.total);
        }
        size_t ct = cuda_prec_bytes((cuda_prec)p), N = 3 * 8;
        EXPECT(a.bytes[cuda_arena_layer(&a, 1, CA_XN1)] == ct * N * 32);
        EXPECT(a.bytes[cuda_arena_layer(&a, 1, CA_RES)] == 4 * N * 32);
        EXPECT(a.bytes[cuda_arena_global(&a, CA_DELTA)] == 4 * 3 * 4 * 8);
        EXPECT(a.bytes[cuda_arena_layer(&a, 0, CA_LSE)] == 4 * 3 * 4 * 8);
        EXPECT(a.bytes[cuda_arena_global(&a, CA_ROWLOSS)] == 8 * N);
        EXPECT(a.bytes[cuda_arena_global(&a, CA_TOKENS)] == 4 * 3 * 9);
        cuda_arena_free(&a);
    }
}

static void test_chunks(void)
{
    model_shape s = small_shape(2);
    s.vocab = 102400;
    s.seq_len = 2048;
    cuda_dims d;
    cuda_dims_init(&d, &s, 8);
    EXPECT(d.chunk_rows % 64 == 0);
    EXPECT((double)d.chunk_rows * (double)d.V * 4 <= 256.0 * 1024 * 1024);
    EXPECT(d.chunk_rows < d.N);
    /* The bench shape's bf16 dlogits (3.4 GB) are kept whole, fp32's
     * (6.7 GB) per chunk; an arena planned for 16 sequences per chunk does
     * not hold 8 whole ones, one planned for 8 holds 4. */
    EXPECT(cuda_dlogits_whole(&d, 2));
    EXPECT(!cuda_dlogits_whole(&d, 4));
    cuda_arena a8, a16;
    EXPECT(cuda_arena_plan(&a8, &s, 8, CUDA_BF16) == ST_OK);
    EXPECT(cuda_arena_plan(&a16, &s, 16, CUDA_BF16) == ST_OK);
    EXPECT(a8.bytes[cuda_arena_global(&a8, CA_DLOGITS)] == 2 * (size_t)d.N * (size_t)d.V);
    EXPECT(a16.bytes[cuda_arena_global(&a16, CA_DLOGITS)] == 2 * (size_t)a16.d.chunk_rows * (size_t)d.V);
    EXPECT(cuda_arena_dlogits_whole(&a8, &d));
    EXPECT(!cuda_arena_dlogits_whole(&a16, &d));
    cuda_dims d4;
    cuda_dims_init(&d4, &s, 4);
    EXPECT(cuda_arena_dlogits_whole(&a8, &d4));
    cuda_arena_free(&a8);
    cuda_arena_free(&a16);
    model_shape t = small_shape(2);
    cuda_dims_init(&d, &t, 1);
    EXPECT(d.chunk_rows == d.N);
    EXPECT(!cuda_dlogits_whole(&d, 2));   /* one chunk: nothing to gain */
}

static void test_adamw_segments(void)
{
    model_shape s = small_shape(2);
    model_layout L;
    EXPECT(model_layout_init(&L, &s) == ST_OK);
    size_t ranges[][2] = {{0, L.n_floats}, {100, 5000}, {L.n_floats / 3, L.n_floats / 3 + 1}, {0, 1},
                          {L.n_floats - 33, L.n_floats}};
    cuda_adamw_seg seg[64];
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        size_t lo = ranges[r][0], hi = ranges[r][1];
        int n = cuda_adamw_segments(&L, lo, hi, seg, 64);
        EXPECT(n > 0);
        int64_t at = 0;
        for (int i = 0; i < n; i++) {
            EXPECT(seg[i].off == at);
            EXPECT(seg[i].n > 0);
            if (i > 0)
                EXPECT(seg[i].decay != seg[i - 1].decay);
            for (int64_t e = seg[i].off; e < seg[i].off + seg[i].n; e++) {
                size_t x = lo + (size_t)e;
                int want = -1;
                for (int p = 0; p < L.n_params; p++)
                    if (x >= L.params[p].offset && x < L.params[p].offset + L.params[p].numel)
                        want = L.params[p].ndim == 2;
                EXPECT(want == seg[i].decay);
            }
            at += seg[i].n;
        }
        EXPECT(at == (int64_t)(hi - lo));
    }
    EXPECT(cuda_adamw_segments(&L, 0, L.n_floats, seg, 2) == -1);
    /* full range: embed, then per layer 2-D block and norm pair, final norm, lm_head */
    EXPECT(cuda_adamw_segments(&L, 0, L.n_floats, seg, 64) == (int)(2 * s.n_layers + 1));
    model_layout_free(&L);
}

static void test_memory_plan(void)
{
    model_shape s = {.dim = 2048, .n_layers = 16, .n_heads = 16, .n_kv_heads = 16, .head_dim = 128,
                     .ffn_dim = 5504, .vocab = 102400, .seq_len = 2048, .rope_theta = 10000, .norm_eps = 1e-6};
    cuda_memplan m, m32;
    EXPECT(cuda_memory_plan(&s, 4, 1, CUDA_BF16, 1, &m) == ST_OK);
    EXPECT(cuda_memory_plan(&s, 4, 1, CUDA_FP32, 1, &m32) == ST_OK);
    double n = (double)model_count_params(&s), GiB = 1024.0 * 1024 * 1024;
    EXPECT(m.master == 4 * n && m.grads == 4 * n && m.adam == 8 * n && m.working == 2 * n);
    EXPECT(m32.working == 0);
    EXPECT(m.activations > 5 * GiB && m.activations < 40 * GiB);
    EXPECT(m32.activations > m.activations);
    EXPECT(m.total < 141 * GiB);
    cuda_memplan w8;
    EXPECT(cuda_memory_plan(&s, 4, 8, CUDA_BF16, 1, &w8) == ST_OK);
    EXPECT(w8.adam == m.adam / 8);
    /* The chain's slots: CUDA_XFER_CHAIN_SLOTS 4 Mi-float chunks, none alone. */
    EXPECT(m.comm == 0 && w8.comm == (double)CUDA_XFER_CHAIN_SLOTS * 4 * (double)COMM_CHUNK_DEFAULT);
    EXPECT(w8.total - w8.comm < m.total);
    /* Stages 2 and 3, as the backend allocates them: the fp32 master of
     * the range under bf16 at every stage, two gradient buckets from 2
     * under [comm] overlap over 2+ ranks (the one filled, the one being
     * reduced; one where each exchange blocks), the second only a layer's
     * (deepseek-7b's lm_head bucket is 1.6x one), two parameter buckets
     * (the one read, the one being gathered) at 3. */
    cuda_memplan z2, z3;
    EXPECT(cuda_memory_plan(&s, 4, 8, CUDA_BF16, 2, &z2) == ST_OK);
    EXPECT(cuda_memory_plan(&s, 4, 8, CUDA_BF16, 3, &z3) == ST_OK);
    EXPECT(w8.bucket == 0 && z2.bucket == backend_cpu_bucket_floats(&s) && z3.bucket == z2.bucket);
    EXPECT(w8.bucket2 == 0 && z2.bucket2 == model_layer_floats(&s) && z3.bucket2 == z2.bucket2);
    EXPECT(z2.bucket2 < z2.bucket);
    EXPECT(w8.master == 4.0 * (double)w8.range && z2.master == w8.master && z3.master == w8.master);
    EXPECT(z2.grads == 4.0 * (double)(z2.range + z2.bucket + z2.bucket2) && z2.working == w8.working);
    EXPECT(z3.working == 2.0 * (double)(z3.range + 2 * z3.bucket) && z3.grads == z2.grads);
    EXPECT(z3.total < z2.total && z2.total < w8.total);
    cuda_memplan off, one;
    comm_set_overlap(0);
    EXPECT(cuda_memory_plan(&s, 4, 8, CUDA_BF16, 2, &off) == ST_OK);
    comm_set_overlap(1);
    EXPECT(off.grads == 4.0 * (double)(off.range + off.bucket) && off.total == z2.total - 4.0 * (double)z2.bucket2);
    EXPECT(off.bucket == z2.bucket && off.bucket2 == 0);
    EXPECT(cuda_memory_plan(&s, 4, 1, CUDA_BF16, 2, &one) == ST_OK && one.bucket == z2.bucket && one.bucket2 == 0 &&
           one.grads == 4.0 * (double)(one.range + one.bucket));
    EXPECT(cuda_memory_plan(&s, 4, 8, CUDA_FP32, 3, &z3) == ST_OK && z3.working == 0 &&
           z3.master == 4.0 * (double)(z3.range + 2 * z3.bucket));
    model_shape big = s;   /* deepseek-67b on one 80 GB GPU: does not fit */
    big.dim = 8192; big.n_layers = 95; big.n_heads = 64; big.n_kv_heads = 8; big.ffn_dim = 22016; big.seq_len = 4096;
    EXPECT(cuda_memory_plan(&big, 1, 1, CUDA_BF16, 1, &m) == ST_OK);
    EXPECT(m.total > 80 * GiB);
}

/* Attention needs no [B,H,T,T] buffer: its scratch doubles with T (the
 * deepseek-7b shape at 16K and 32K, where the score matrices were 48 and
 * 192 GiB), and the per-layer activations grow linearly too. */
static void test_attention_scratch_linear(void)
{
    model_shape s = {.dim = 4096, .n_layers = 30, .n_heads = 32, .n_kv_heads = 32, .head_dim = 128,
                     .ffn_dim = 11008, .vocab = 102400, .seq_len = 16384, .rope_theta = 10000, .norm_eps = 1e-6};
    memplan_cfg c = {.shape = s, .backend = MEMPLAN_CUDA, .precision = MEMPLAN_BF16, .world = 1,
                     .ranks_per_node = 1, .micro_batch = 1, .recompute = MEMPLAN_RECOMPUTE_NONE,
                     .zero = MEMPLAN_ZERO1};
    memplan_bytes b16, b32;
    EXPECT(memplan_compute(&c, &b16) == ST_OK);
    c.shape.seq_len = 32768;
    EXPECT(memplan_compute(&c, &b32) == ST_OK);
    EXPECT(b16.attn_scratch == 4ull * 32 * 16384);   /* delta: f32 [B,H,T] */
    EXPECT(b32.attn_scratch == 2 * b16.attn_scratch);
    EXPECT(b32.activations < 2 * b16.activations + (64ull << 20));
}

/* The embedding index lists each distinct token once, in order, with its
 * rows in increasing order, and covers every row exactly once. */
static void test_embed_index(void)
{
    int64_t B = 3, T = 11, V = 9, N = B * T;
    int32_t tok[3 * 12], cnt[9], out[3 * 33 + 2];
    for (int i = 0; i < 36; i++)
        tok[i] = (int32_t)((i * 5 + i / 7) % 7);   /* 0..6: tokens 7, 8 unused */
    int64_t U = cuda_embed_index(tok, B, T, T + 1, V, cnt, out);
    EXPECT(U == out[0] && U == 7);
    const int32_t *u = out + 1, *start = u + U, *rows = start + U + 1;
    EXPECT(start[0] == 0 && start[U] == N);
    int seen[33] = {0};
    for (int64_t k = 0; k < U; k++) {
        if (k > 0)
            EXPECT(u[k] > u[k - 1]);
        EXPECT(start[k + 1] > start[k]);
        for (int32_t r = start[k]; r < start[k + 1]; r++) {
            EXPECT(tok[(rows[r] / T) * (T + 1) + rows[r] % T] == u[k]);
            if (r > start[k])
                EXPECT(rows[r] > rows[r - 1]);
            seen[rows[r]]++;
        }
    }
    for (int n = 0; n < N; n++)
        EXPECT(seen[n] == 1);
}

static void test_precision_names(void)
{
    cuda_prec p;
    EXPECT(cuda_prec_parse(NULL, &p) == 0 && p == CUDA_BF16);
    EXPECT(cuda_prec_parse("auto", &p) == 0 && p == CUDA_BF16);
    EXPECT(cuda_prec_parse("fp16", &p) == 0 && p == CUDA_FP16 && cuda_prec_bytes(p) == 2);
    EXPECT(cuda_prec_parse("tf32", &p) == 0 && p == CUDA_TF32 && cuda_prec_bytes(p) == 4);
    EXPECT(cuda_prec_parse("fp8", &p) == -1);
    EXPECT(!strcmp(cuda_prec_name(CUDA_FP32), "fp32"));
}

int main(void)
{
    openblas_set_num_threads(1);
    harness_run("gemm_colmajor_mha", test_gemm_colmajor_mha);
    harness_run("gemm_colmajor_gqa", test_gemm_colmajor_gqa);
    harness_run("gemm_matches_cpu_calls", test_gemm_matches_cpu_calls);
    harness_run("attention_scratch_linear", test_attention_scratch_linear);
    harness_run("arena", test_arena);
    harness_run("classifier_chunks", test_chunks);
    harness_run("adamw_segments", test_adamw_segments);
    harness_run("memory_plan", test_memory_plan);
    harness_run("embed_index", test_embed_index);
    harness_run("precision_names", test_precision_names);
    return harness_end();
}
