/* The one memory model (memplan.h): what a rank holds, category by
 * category, from the configuration alone. The CPU activation terms are the
 * CPU backend's allocation; the CUDA ones are cuda/plan.c's arena. */
#include "model/memplan.h"
#include "backend/backend.h"
#include "backend/cpu_attn.h"
#include "ckpt/ckpt.h"
#include "comm/comm.h"
#include "comm/xfer.h"
#include "cuda/plan.h"
#include "util/util.h"

#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MEMPLAN_GIB (1024.0 * 1024.0 * 1024.0)

/* The context, cuBLASLt handles and kernels: measured contexts take 0.5-1
 * GiB; plan for the upper end. */
static const uint64_t memplan_cuda_context = 1ull << 30;

int memplan_recompute_parse(const char *s)
{
    if (s && !strcmp(s, "none"))
        return MEMPLAN_RECOMPUTE_NONE;
    if (s && !strcmp(s, "layers"))
        return MEMPLAN_RECOMPUTE_LAYERS;
    return -1;
}

/* The gradient reduction's buffers, in bytes. CPU (comm.c's chain): a
 * rank other than 0 holds COMM_CHAIN_SLOTS chunks of the largest chain
 * chunk; stage 1 reduces the vector, stages 2-3 each bucket, so both are
 * exact (the largest over the buckets). CUDA (nccl.cu, sized at open, before any
 * vector is known): CUDA_XFER_CHAIN_SLOTS whole chunks for the chain, one
 * per rank for ncclReduceScatter's staging (reduce = nccl). */
static void memplan_span_of(const model_param *const *ps, int k, size_t *a, size_t *b)
{
    *a = ps[0]->offset;
    *b = ps[0]->offset + ps[0]->numel;
    for (int i = 1; i < k; i++) {
        *a = ps[i]->offset < *a ? ps[i]->offset : *a;
        *b = ps[i]->offset + ps[i]->numel > *b ? ps[i]->offset + ps[i]->numel : *b;
    }
}

/* Stages 2-3 on the CPU reduce bucket by bucket (backend/cpu.c's spans:
 * the embedding, each decoder layer, the final norm with lm_head), and the
 * chain sizes its slots per bucket: the largest chain chunk of any bucket
 * (about an eighth of its largest owner part, not the whole part). 0 when
 * the layout cannot be built. */
static uint64_t memplan_bucket_chain_largest(const memplan_cfg *c, size_t n)
{
    model_layout L;
    if (model_layout_init(&L, &c->shape) != ST_OK)
        return 0;
    uint64_t most = 0;
    for (int64_t k = -1; k <= c->shape.n_layers; k++) {
        const model_param *ps[MODEL_PER_LAYER];
        int m = 0;
        size_t a, b;
        if (k < 0)
            ps[m++] = model_embed(&L);
        else if (k >= c->shape.n_layers) {
            ps[m++] = model_final_norm(&L);
            ps[m++] = model_lm_head(&L);
        } else
            for (int i = 0; i < MODEL_PER_LAYER; i++)
                ps[m++] = model_layer(&L, k, i);
        memplan_span_of(ps, m, &a, &b);
        uint64_t s = (uint64_t)comm_chain_largest(n, a, b, c->world, c->comm_chunk);
        most = s > most ? s : most;
    }
    model_layout_free(&L);
    return most;
}

static uint64_t memplan_comm(const memplan_cfg *c, uint64_t n, uint64_t R, uint64_t K)
{
    uint64_t C = (uint64_t)c->comm_chunk;
    if (c->world < 2)
        return 0;
    if (c->backend == MEMPLAN_CUDA)
        return 4 * C * (c->reduce == COMM_REDUCE_NCCL ? (uint64_t)c->world : CUDA_XFER_CHAIN_SLOTS);
    if (c->zero == MEMPLAN_ZERO1)
        return 4 * COMM_CHAIN_SLOTS * (uint64_t)comm_chain_largest((size_t)n, 0, (size_t)n, c->world, (size_t)C);
    uint64_t largest = memplan_bucket_chain_largest(c, (size_t)n);
    if (largest)
        return 4 * COMM_CHAIN_SLOTS * largest;
    uint64_t part = K < R ? K : R;   /* no layout: the bound */
    return 4 * COMM_CHAIN_SLOTS * (C < part ? C : part);
}

static size_t memplan_largest_range(size_t n, int world)
{
    size_t most = 0;
    for (int r = 0; r < world; r++) {
        size_t lo, hi;
        comm_range(n, r, world, &lo, &hi);
        most = hi - lo > most ? hi - lo : most;
    }
    return most;
}

static int memplan_threads(int threads) { return threads > 0 ? threads : omp_get_num_procs(); }

/* The CPU process's own bytes, measured as VmHWM on this project's build
 * (Debian 12: glibc 2.36, Open MPI 4.1.4 on one node, OpenBLAS and libgomp
 * linked statically) in runs whose training state is a few KiB; the
 * memplan test holds a whole run to the plan and fails when a term goes
 * missing, bench/memplan.sh prints the terms measured again. */
#define MEMPLAN_MIB(x) ((uint64_t)((x) * 1048576.0))
/* The binary and its libraries resident: `spotrain --version`. */
static const uint64_t memplan_cpu_image = MEMPLAN_MIB(10.1);
/* What the first steps add: OpenBLAS's and libgomp's first use, the data
 * reader, the writer's and watchdog's thread stacks, malloc's arenas. */
static const uint64_t memplan_cpu_first_use = MEMPLAN_MIB(2.6);
/* Each compute thread: its stack and OpenBLAS packing pages. */
static const uint64_t memplan_cpu_per_thread = MEMPLAN_MIB(0.25);
/* MPI_Init and its shared-memory transport: 7.4 MiB at 2 ranks, 10.8 at
 * 3 and 4, 10.9 at 8 (measured; the step between 2 and 3 is Open MPI's). */
static const uint64_t memplan_cpu_mpi_two = MEMPLAN_MIB(7.4), memplan_cpu_mpi_more = MEMPLAN_MIB(10.7);
static const uint64_t memplan_cpu_mpi_per_rank = MEMPLAN_MIB(0.025);

uint64_t memplan_cpu_runtime_bytes(int world, int threads)
{
    uint64_t mpi = world <= 1 ? 0 : world == 2 ? memplan_cpu_mpi_two
                                 : memplan_cpu_mpi_more + memplan_cpu_mpi_per_rank * (uint64_t)world;
    return memplan_cpu_image + memplan_cpu_first_use + memplan_cpu_per_thread * (uint64_t)memplan_threads(threads) +
           mpi;
}

/* Tiles per thread, whatever T (backend/cpu_attn.c). */
uint64_t memplan_cpu_attn_scratch_bytes(const model_shape *s, int threads)
{
    return 4 * (uint64_t)memplan_threads(threads) * (uint64_t)cpu_attn_scratch_floats(s->head_dim, s->n_heads / s->n_kv_heads);
}

/* What backend/cpu.c's cpu_reserve allocates for B rows, in floats: layer
 * inputs, the per-layer sets (one under recompute), head, backward, and
 * the attention scratch (test_model.c holds the two equal). */
uint64_t memplan_cpu_activation_bytes(const model_shape *s, int64_t B, int recompute, int threads)
{
    uint64_t N = (uint64_t)(B * s->seq_len), D = (uint64_t)s->dim, F = (uint64_t)s->ffn_dim;
    uint64_t qd = (uint64_t)(s->n_heads * s->head_dim), qkvd = qd + 2 * (uint64_t)(s->n_kv_heads * s->head_dim);
    /* The attention keeps one log-sum-exp per query row and head: linear in T. */
    uint64_t layer = 3 * N * D + 2 * N + N * qkvd + N * (uint64_t)s->n_heads + N * qd + 3 * N * F;
    uint64_t res = ((uint64_t)s->n_layers + 1) * N * D;
    uint64_t head = 3 * N + N * D + N * (uint64_t)s->vocab;
    uint64_t bwd = 2 * N * D + N * qkvd + N * qd + 3 * N * F;
    uint64_t sets = recompute ? 1 : (uint64_t)s->n_layers;
    return 4 * (res + sets * layer + head + bwd) + memplan_cpu_attn_scratch_bytes(s, threads);
}

static void memplan_cpu(const memplan_cfg *c, memplan_bytes *b)
{
    const model_shape *s = &c->shape;
    b->act_none = memplan_cpu_activation_bytes(s, c->micro_batch, 0, c->threads);
    b->act_layers = memplan_cpu_activation_bytes(s, c->micro_batch, 1, c->threads);
    b->attn_scratch = memplan_cpu_attn_scratch_bytes(s, c->threads);
    b->activations = (c->recompute == MEMPLAN_RECOMPUTE_LAYERS ? b->act_layers : b->act_none) - b->attn_scratch;
    if (c->ckpt_chunk) {
        ckpt_opts o = {.codec = c->ckpt_codec, .level = c->ckpt_level, .chunk_bytes = c->ckpt_chunk,
                       .threads = c->ckpt_threads};
        b->ckpt_io = ckpt_writer_io_bytes(&o, b->range);
    }
    b->runtime = memplan_cpu_runtime_bytes(c->world, c->threads);
    b->total = b->master + b->working + b->grads + b->adam + b->snapshot + b->buckets + b->activations +
               b->attn_scratch + b->workspace + b->context + b->comm + b->ckpt_io + b->runtime;
}

/* The arena's aligned bytes from entry i to the next one. */
static uint64_t memplan_arena_span(const cuda_arena *a, size_t i)
{
    return (uint64_t)((i + 1 < a->n ? a->off[i + 1] : a->total) - a->off[i]);
}

/* The CUDA backend's small device allocations besides the big ones (the
 * RoPE tables, the AdamW segment table, the gradient norm's partial sums,
 * three scalars), as cuda/backend.cu makes them: counted with the
 * cuBLASLt workspace. */
static uint64_t memplan_cuda_tables(const model_shape *s, uint64_t R)
{
    uint64_t rope = 2 * 4 * (uint64_t)s->seq_len * (uint64_t)(s->head_dim / 2);
    uint64_t seg = (uint64_t)cuda_adamw_seg_cap(s) * sizeof(cuda_adamw_seg);
    return rope + seg + (R / CUDA_PLAN_SUMSQ_BLOCK + 1) * 8 + 3 * 8;
}

/* The CUDA parameter and gradient copies by stage. A 16-bit working copy is what the
 * GEMMs read and what is gathered, so the fp32 master is only ever read on
 * this rank's range: it holds [lo,hi) at every stage. fp32/tf32 read the
 * master itself: whole under 1 and 2. Stage 3 shards what the GEMMs read
 * too, plus two bucket buffers: the one the kernels read and the one the
 * next bucket is gathered into meanwhile. */
static void memplan_cuda_params(const memplan_cfg *c, uint64_t n, uint64_t R, uint64_t K, memplan_bytes *b)
{
    int half = c->precision == MEMPLAN_BF16 || c->precision == MEMPLAN_FP16;
    uint64_t shard = c->zero >= MEMPLAN_ZERO3 ? R + 2 * K : n;
    b->master = half ? 4 * R : 4 * shard;
    b->working = half ? 2 * shard : 0;
    /* Stages 2-3, [comm] overlap over 2+ ranks: two gradient buckets, the
     * one the backward fills and the one the comm stream reduce-scatters
     * meanwhile (cuda/backend.cu); the second holds a decoder layer, the
     * embedding and lm_head buckets go into the first. Else one, each
     * exchange waited for. */
    if (c->zero >= MEMPLAN_ZERO2)
        b->grads = 4 * (R + K + (c->overlap && c->world > 1 ? model_layer_floats(&c->shape) : 0));
}

static int memplan_cuda(const memplan_cfg *c, memplan_bytes *b)
{
    cuda_arena a[2];
    /* Both settings: the arena of each (recompute keeps the layer inputs
     * and one layer's set), so either figure can be printed. */
    for (int r = 0; r < 2; r++) {
        int rc = cuda_arena_plan_rc(&a[r], &c->shape, c->micro_batch, (cuda_prec)c->precision, r);
        if (rc != ST_OK) {
            if (r)
                cuda_arena_free(&a[0]);
            return rc;
        }
    }
    const cuda_arena *use = &a[c->recompute == MEMPLAN_RECOMPUTE_LAYERS];
    /* Flash attention (cuda/attention.cuh): the backward's row sums
     * [B,H,T], linear in T; the tiles live in shared memory. */
    b->attn_scratch = memplan_arena_span(use, cuda_arena_global(use, CA_DELTA));
    b->activations = (uint64_t)use->total - b->attn_scratch;
    b->act_none = (uint64_t)a[0].total;
    b->act_layers = (uint64_t)a[1].total;
    cuda_arena_free(&a[0]);
    cuda_arena_free(&a[1]);
    b->workspace = CUDA_WORKSPACE_BYTES + memplan_cuda_tables(&c->shape, (uint64_t)b->range);
    b->context = memplan_cuda_context;
    b->host = b->snapshot;
    b->total = b->master + b->working + b->grads + b->adam + b->buckets + b->activations + b->attn_scratch +
               b->workspace + b->context + b->comm;
    return ST_OK;
}

/* A refusal is kept as util_last_error, not printed: cost estimate and the
 * ledger show it as "not planned (...)"; callers that stop print it. */
static int memplan_refuse(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int memplan_refuse(int code, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    util_keep_error(line);
    return code;
}

static int memplan_check(const memplan_cfg *c)
{
    if (c->backend != MEMPLAN_CPU && c->backend != MEMPLAN_CUDA)
        return memplan_refuse(ST_SOFTWARE, "memplan: backend %d is neither cpu nor cuda", (int)c->backend);
    if ((int)c->precision < MEMPLAN_FP32 || (int)c->precision > MEMPLAN_FP16)
        return memplan_refuse(ST_SOFTWARE, "memplan: precision %d is none of fp32|tf32|bf16|fp16", (int)c->precision);
    if (c->world < 1 || c->micro_batch < 1)
        return memplan_refuse(ST_CONFIG, "memplan: world %d and micro_batch %lld must be at least 1", c->world,
                         (long long)c->micro_batch);
    if (c->zero < MEMPLAN_ZERO1 || c->zero > MEMPLAN_ZERO3)
        return memplan_refuse(ST_CONFIG, "memplan: ZeRO stage %d is not one of 1|2|3", c->zero);
    if (c->recompute != MEMPLAN_RECOMPUTE_NONE && c->recompute != MEMPLAN_RECOMPUTE_LAYERS)
        return memplan_refuse(ST_SOFTWARE, "memplan: recompute %d is neither none nor layers", (int)c->recompute);
    return ST_OK;
}

int memplan_compute(const memplan_cfg *c, memplan_bytes *b)
{
    memset(b, 0, sizeof *b);
    int rc = memplan_check(c);
    if (rc != ST_OK)
        return rc;
    uint64_t n = model_count_params(&c->shape);
    /* Ranks own 64-aligned ranges that differ by a unit of 64 (and the
     * last one's tail): plan for the largest. */
    b->range = memplan_largest_range((size_t)n, c->world);
    /* Stages 2-3: the range plus one bucket of the largest span of whole
     * layers the backend moves at once (the same buckets on both
     * backends), one of each kind at a time where the collectives block
     * (the second buckets under [comm] overlap: below, and in
     * memplan_cuda_params). */
    uint64_t R = (uint64_t)b->range, K = c->zero > MEMPLAN_ZERO1 ? (uint64_t)backend_cpu_bucket_floats(&c->shape) : 0;
    b->master = c->zero >= MEMPLAN_ZERO3 ? 4 * (R + K) : 4 * n;
    b->grads = c->zero >= MEMPLAN_ZERO2 ? 4 * (R + K) : 4 * n;   /* stage 1: full vector, the reduce-scatter's input */
    b->adam = 2 * 4 * R;                     /* m and v of this rank's range */
    b->snapshot = 3 * 4 * R;                 /* parameters, m, v of the range */
    b->buckets = 0;                          /* stages 2-3 count theirs in master and grads, above */
    b->comm = memplan_comm(c, n, R, K);
    if (c->backend == MEMPLAN_CPU) {
        /* [comm] overlap over 2+ ranks: the next bucket fills a second
         * buffer of each kind while the comm worker moves the other,
         * one decoder layer big (backend/cpu.c). */
        if (c->overlap && c->world > 1) {
            uint64_t K2 = K ? model_layer_floats(&c->shape) : 0;
            b->master += c->zero >= MEMPLAN_ZERO3 ? 4 * K2 : 0;
            b->grads += c->zero >= MEMPLAN_ZERO2 ? 4 * K2 : 0;
        }
        memplan_cpu(c, b);
        return ST_OK;
    }
    memplan_cuda_params(c, n, R, K, b);
    return memplan_cuda(c, b);
}

uint64_t memplan_rank_total(const memplan_cfg *c, const memplan_bytes *b, int rank)
{
    /* comm.c's comm_reduce_scatter_span: only ranks 1..W-1 receive partial
     * sums, so only they allocate the slots (measured: rank 0's VmHWM is
     * the others' less the slots, within 1%; cli_memfit). CUDA sizes its
     * slots at open on every rank. */
    if (c->backend == MEMPLAN_CPU && c->world > 1 && rank == 0 && b->total >= b->comm)
        return b->total - b->comm;
    return b->total;
}

int memplan_choose_recompute(memplan_cfg *c, uint64_t avail, memplan_bytes *b)
{
    c->recompute = MEMPLAN_RECOMPUTE_NONE;
    int rc = memplan_compute(c, b);
    if (rc != ST_OK || avail == 0 || b->total <= avail)
        return rc;
    c->recompute = MEMPLAN_RECOMPUTE_LAYERS;
    return memplan_compute(c, b);
}

int memplan_choose_zero(memplan_cfg *c, uint64_t avail, memplan_bytes *b)
{
    c->zero = MEMPLAN_ZERO1;
    int rc = memplan_compute(c, b);
    if (rc != ST_OK || avail == 0 || b->total <= avail)
        return rc;
    /* Each stage past 1 adds collectives per bucket (about 5% step time a
     * stage, measured), so the lowest that fits; when none does, the
     * smallest plan (on one rank that is stage 1: 2 and 3 add buckets). */
    int best = MEMPLAN_ZERO1;
    uint64_t least = b->total;
    for (int z = MEMPLAN_ZERO2; z <= MEMPLAN_ZERO3; z++) {
        c->zero = z;
        if ((rc = memplan_compute(c, b)) != ST_OK || b->total <= avail)
            return rc;
        if (b->total < least) {
            best = z;
            least = b->total;
        }
    }
    c->zero = best;
    return memplan_compute(c, b);
}

int memplan_choose_zero_recompute(memplan_cfg *c, uint64_t avail, memplan_bytes *b)
{
    c->recompute = MEMPLAN_RECOMPUTE_NONE;
    int rc = memplan_choose_zero(c, avail, b);
    if (rc != ST_OK || avail == 0 || b->total <= avail)
        return rc;
    c->recompute = MEMPLAN_RECOMPUTE_LAYERS;
    return memplan_choose_zero(c, avail, b);
}

uint64_t memplan_host_available(void)
{
    /* Tests stand in for the machine's figure (bytes) to see both choices. */
    const char *e = getenv("SPOTRAIN_TEST_MEM_AVAILABLE");
    if (e && *e)
        return (uint64_t)strtoull(e, NULL, 10);
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kib = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return (uint64_t)kib * 1024;
}

int memplan_refusal(const memplan_cfg *c, const memplan_bytes *b, uint64_t avail, int local, char *buf, size_t cap)
{
    if (avail == 0 || b->total <= avail)
        return 0;
    char advice[640];
    memplan_advice(c, b, advice, sizeof advice);
    snprintf(buf, cap, "the memory plan needs %.3f GiB per process (ZeRO stage %d, recompute %s, %d rank%s) and "
             "each of the %d rank%s on this node has %.3f GiB of MemAvailable; not starting (it would swap or meet "
             "the OOM killer): %s", (double)b->total / MEMPLAN_GIB, c->zero,
             c->recompute == MEMPLAN_RECOMPUTE_LAYERS ? "layers" : "none", c->world, c->world == 1 ? "" : "s", local,
             local == 1 ? "" : "s", (double)avail / MEMPLAN_GIB, advice);
    return 1;
}

void memplan_advice(const memplan_cfg *c, const memplan_bytes *b, char *buf, size_t cap)
{
    /* More ranks shrink the sharded categories (the ranges: 4 bytes a float
     * each for the gradients from stage 2, the parameters at 3) and grow
     * the receive buffer. */
    double range = 4.0 * (double)b->range;
    int half = c->backend == MEMPLAN_CUDA && (c->precision == MEMPLAN_BF16 || c->precision == MEMPLAN_FP16);
    double adam = (double)b->adam + (c->backend == MEMPLAN_CPU ? (double)b->snapshot : 0) + (half ? range : 0) +
                  (c->zero >= MEMPLAN_ZERO2 ? range : 0) + (c->zero >= MEMPLAN_ZERO3 ? range : 0);
    double floor_ = (double)b->total - adam;
    double act = (double)(b->activations + b->attn_scratch) / MEMPLAN_GIB;
    int n = snprintf(buf, cap, "more ranks shrink only Adam m and v%s%s%s (%.1f GiB here), never below %.1f GiB per %s; ",
                     half ? ", the fp32 master's range" : "",
                     c->zero >= MEMPLAN_ZERO3 ? ", the parameters' and gradients' ranges"
                     : c->zero == MEMPLAN_ZERO2 ? ", the gradients' range" : "",
                     c->backend == MEMPLAN_CPU ? " and the checkpoint snapshot" : "", adam / MEMPLAN_GIB,
                     floor_ / MEMPLAN_GIB, c->backend == MEMPLAN_CPU ? "process" : "GPU");
    if (n >= 0 && (size_t)n < cap)
        n += c->micro_batch > 1
                 ? snprintf(buf + n, cap - (size_t)n, "lower train.micro_batch (activations %.1f GiB)", act)
                 : snprintf(buf + n, cap - (size_t)n, "activations %.1f GiB at micro_batch 1, the smallest", act);
    if (n < 0 || (size_t)n >= cap)
        return;
    if (c->recompute == MEMPLAN_RECOMPUTE_NONE)
        n += snprintf(buf + n, cap - (size_t)n, "; train.recompute = layers holds %.1f GiB of activations "
                      "instead", (double)b->act_layers / MEMPLAN_GIB);
    if (n < 0 || (size_t)n >= cap)
        return;
    if (c->zero < MEMPLAN_ZERO3)
        snprintf(buf + n, cap - (size_t)n, "; train.zero = %d shards the %s over the ranks", c->zero + 1,
                 c->zero == MEMPLAN_ZERO1 ? "gradients" : "parameters too");
}

_Static_assert((int)MEMPLAN_FP32 == (int)CUDA_FP32 && (int)MEMPLAN_TF32 == (int)CUDA_TF32 &&
               (int)MEMPLAN_BF16 == (int)CUDA_BF16 && (int)MEMPLAN_FP16 == (int)CUDA_FP16,
               "memplan_prec and cuda_prec name the same precisions");
