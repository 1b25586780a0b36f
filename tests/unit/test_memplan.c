/* Unit tests of the one memory model (model/memplan.c): categories add up,
 * CPU activations are the CPU backend's own sizing, CUDA activations are
 * cuda/plan.c's arena, more ranks shrink only the sharded categories, ZeRO
 * stages 2-3 are the CPU backend's range + bucket bytes, and a stage a
 * backend lacks is refused rather than computed.
 * module: model */
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu_attn.h"
#include "ckpt/ckpt.h"
#include "ckpt/ckpt_int.h"
#include "comm/comm.h"
#include "comm/xfer.h"
#include "cuda/plan.h"
#include "model/memplan.h"
#include "model/model.h"
#include "util/util.h"
#include "tests/harness.h"

/* Small enough to plan instantly, odd enough that nothing divides evenly. */
static const model_shape small = {.dim = 64, .n_layers = 3, .n_heads = 4, .n_kv_heads = 2, .head_dim = 16,
                                  .ffn_dim = 176, .vocab = 96, .seq_len = 37, .rope_theta = 10000, .norm_eps = 1e-5};
/* deepseek-7b's shape. */
static const model_shape ds7 = {.dim = 4096, .n_layers = 30, .n_heads = 32, .n_kv_heads = 32, .head_dim = 128,
                                .ffn_dim = 11008, .vocab = 102400, .seq_len = 4096, .rope_theta = 10000,
                                .norm_eps = 1e-6};

static memplan_cfg mp_cfg(const model_shape *s, memplan_backend be, memplan_prec p, int world, int64_t B)
{
    memplan_cfg c = {.shape = *s, .backend = be, .precision = p, .world = world, .ranks_per_node = 8,
                     .micro_batch = B, .threads = 3, .recompute = MEMPLAN_RECOMPUTE_NONE, .zero = MEMPLAN_ZERO1,
                     .comm_chunk = COMM_CHUNK_DEFAULT, .ckpt_codec = CKPT_CODEC_SHUFFLE_ZSTD, .ckpt_level = 3,
                     .ckpt_threads = 2, .ckpt_chunk = 4u << 20};
    return c;
}

static uint64_t mp_sum(const memplan_bytes *b)
{
    return b->master + b->working + b->grads + b->adam + b->snapshot + b->buckets + b->activations +
           b->attn_scratch + b->workspace + b->context + b->comm + b->ckpt_io + b->runtime;
}

/* Stages 2-3's chain slots: the largest chain chunk of any bucket, the
 * spans laid out by hand (embedding, n_layers equal layers, final norm
 * with lm_head), as backend/cpu.c reduces them. */
static uint64_t mp_bucket_chain(size_t n, const model_shape *s, int W, size_t C)
{
    size_t D = (size_t)s->dim, qd = (size_t)(s->n_heads * s->head_dim), kvd = (size_t)(s->n_kv_heads * s->head_dim);
    size_t E = (size_t)s->vocab * D, Lf = D * (qd + 2 * kvd) + qd * D + 3 * D * (size_t)s->ffn_dim + 2 * D;
    size_t tail = E + (size_t)s->n_layers * Lf;
    EXPECT(tail + D + E == n);
    uint64_t most = comm_chain_largest(n, 0, E, W, C), t = comm_chain_largest(n, tail, n, W, C);
    most = t > most ? t : most;
    for (int64_t l = 0; l < s->n_layers; l++) {
        uint64_t x = comm_chain_largest(n, E + (size_t)l * Lf, E + (size_t)(l + 1) * Lf, W, C);
        most = x > most ? x : most;
    }
    return most;
}

/* The CPU process's own terms: the writer's slots and codec workspaces as
 * ckpt_writer_io_bytes sizes them for the rank's range, and the runtime,
 * which grows with MPI (2 ranks, then more) and compute threads. CUDA's
 * per-GPU plan holds neither. */
static void test_process_terms(void)
{
    const model_shape *shapes[] = {&small, &ds7};
    for (int si = 0; si < 2; si++)
        for (int W = 1; W <= 4; W++) {
            memplan_cfg c = mp_cfg(shapes[si], MEMPLAN_CPU, MEMPLAN_FP32, W, 1);
            memplan_bytes b, none, g;
            EXPECT(memplan_compute(&c, &b) == ST_OK);
            ckpt_opts o = {.codec = c.ckpt_codec, .level = 3, .chunk_bytes = c.ckpt_chunk, .threads = 2};
            EXPECT(b.ckpt_io == ckpt_writer_io_bytes(&o, b.range));
            /* 2 threads: 5 slots, each as big as the largest chunk it holds,
             * and 2 workspaces (shuffle buffer and zstd) for the largest. */
            uint64_t R4 = 4 * (uint64_t)b.range;
            if (R4 <= c.ckpt_chunk)   /* one chunk per array: 3 of the 5 slots */
                EXPECT(b.ckpt_io == 3 * R4 + 2 * ckpt_codec_ws_bytes(c.ckpt_codec, 3, R4));
            else if (R4 >= 5 * (uint64_t)c.ckpt_chunk)   /* every slot sees a whole chunk */
                EXPECT(b.ckpt_io == 5 * (uint64_t)c.ckpt_chunk + 2 * ckpt_codec_ws_bytes(c.ckpt_codec, 3, c.ckpt_chunk));
            EXPECT(ckpt_codec_ws_bytes(c.ckpt_codec, 3, c.ckpt_chunk) > c.ckpt_chunk);
            EXPECT(b.runtime == memplan_cpu_runtime_bytes(W, 3));
            c.ckpt_codec = CKPT_CODEC_NONE;   /* written from the snapshot: no slots, no codec */
            EXPECT(memplan_compute(&c, &none) == ST_OK && none.ckpt_io == 0 && none.total == b.total - b.ckpt_io);
            c = mp_cfg(shapes[si], MEMPLAN_CUDA, MEMPLAN_BF16, W, 1);
            EXPECT(memplan_compute(&c, &g) == ST_OK && g.ckpt_io == 0 && g.runtime == 0);
        }
    /* 6 MiB arrays in 4 MiB chunks 4,2 4,2 4,2: slots 0-4 hold 4,2,4,2,4 MiB (slot 0 then 2). */
    ckpt_opts o = {.codec = CKPT_CODEC_SHUFFLE_ZSTD, .level = 3, .chunk_bytes = 4u << 20, .threads = 2};
    EXPECT(ckpt_writer_io_bytes(&o, (6u << 20) / 4) ==
           (16u << 20) + 2 * (uint64_t)ckpt_codec_ws_bytes(CKPT_CODEC_SHUFFLE_ZSTD, 3, 4u << 20));
    o.codec = CKPT_CODEC_NONE;
    EXPECT(ckpt_writer_io_bytes(&o, (6u << 20) / 4) == 0);
    uint64_t one = memplan_cpu_runtime_bytes(1, 1);
    EXPECT(one > (10u << 20) && one < (16u << 20));
    EXPECT(memplan_cpu_runtime_bytes(2, 1) > one + (5u << 20));
    EXPECT(memplan_cpu_runtime_bytes(4, 1) > memplan_cpu_runtime_bytes(2, 1));
    EXPECT(memplan_cpu_runtime_bytes(1, 8) > one);
}

/* The largest rank's range: [lo, hi) = [largest's lo, lo + largest). */
static void mp_range(size_t n, int W, size_t *lo, size_t *hi)
{
    size_t most = 0;
    *lo = *hi = 0;
    for (int r = 0; r < W; r++) {
        size_t a, b;
        comm_range(n, r, W, &a, &b);
        if (b - a > most) {
            most = b - a;
            *lo = a;
            *hi = b;
        }
    }
}

static void test_categories_add_up(void)
{
    for (int be = 0; be < 2; be++)
        for (int p = MEMPLAN_FP32; p <= MEMPLAN_FP16; p++)
            for (int w = 1; w <= 64; w *= 4) {
                memplan_cfg c = mp_cfg(&ds7, (memplan_backend)be, (memplan_prec)p, w, 2);
                memplan_bytes b;
                EXPECT(memplan_compute(&c, &b) == ST_OK);
                EXPECT(b.total + b.host == mp_sum(&b));
                /* The snapshot is the CUDA rank's host RAM, the CPU rank's own. */
                EXPECT(be == MEMPLAN_CUDA ? b.host == b.snapshot : b.host == 0);
                uint64_t n = model_count_params(&ds7);
                /* CUDA under a 16-bit working copy holds the master's range only. */
                EXPECT(b.master == (be == MEMPLAN_CUDA && p >= MEMPLAN_BF16 ? 4 * (uint64_t)b.range : 4 * n));
                EXPECT(b.grads == 4 * n && b.buckets == 0);
                EXPECT(b.working == (be == MEMPLAN_CUDA && p >= MEMPLAN_BF16 ? 2 * n : 0));
                EXPECT(be == MEMPLAN_CUDA ? b.workspace > 0 && b.context > 0 : b.workspace == 0 && b.context == 0);
            }
}

static void test_cpu_activations(void)
{
    for (int rec = 0; rec < 2; rec++)
        for (int64_t B = 1; B <= 3; B++) {
            memplan_cfg c = mp_cfg(&small, MEMPLAN_CPU, MEMPLAN_FP32, 2, B);
            c.recompute = (memplan_recompute)rec;
            memplan_bytes b;
            EXPECT(memplan_compute(&c, &b) == ST_OK);
            /* backend_cpu_activation_bytes is what cpu_reserve allocates
             * (test_model.c holds that); the plan's two terms make it up. */
            EXPECT(b.activations + b.attn_scratch == backend_cpu_activation_bytes(&small, B, rec, 3));
            EXPECT(b.act_none == backend_cpu_activation_bytes(&small, B, 0, 3));
            EXPECT(b.act_layers == backend_cpu_activation_bytes(&small, B, 1, 3));
            EXPECT(b.attn_scratch == 4ull * 3 * cpu_attn_scratch_floats(small.head_dim, small.n_heads / small.n_kv_heads));
        }
    /* Recompute keeps one layer's set instead of three: the normed inputs
     * and MLP rows alone are B*T*(2D+3F) floats per set. */
    memplan_cfg c = mp_cfg(&small, MEMPLAN_CPU, MEMPLAN_FP32, 1, 2);
    memplan_bytes none, layers;
    EXPECT(memplan_compute(&c, &none) == ST_OK);
    c.recompute = MEMPLAN_RECOMPUTE_LAYERS;
    EXPECT(memplan_compute(&c, &layers) == ST_OK);
    EXPECT(none.total - layers.total == none.act_none - none.act_layers);
    EXPECT(none.act_none - none.act_layers >= 2ull * 4 * 2 * 37 * (2 * 64 + 3 * 176));
}

/* The tiled attention keeps one log-sum-exp per row and head and a fixed
 * scratch per thread: the CPU plan is linear in T (no T^2 term), so long
 * contexts plan at the cost of their rows. */
static void test_cpu_linear_in_T(void)
{
    model_shape s = {.dim = 128, .n_layers = 4, .n_heads = 4, .n_kv_heads = 2, .head_dim = 32, .ffn_dim = 352,
                     .vocab = 256, .seq_len = 16384, .rope_theta = 10000, .norm_eps = 1e-6};
    memplan_bytes b[3];
    for (int rec = 0; rec < 2; rec++) {
        for (int k = 0; k < 3; k++) {
            s.seq_len = 16384 + 8192 * k;
            memplan_cfg c = mp_cfg(&s, MEMPLAN_CPU, MEMPLAN_FP32, 1, 2);
            c.recompute = (memplan_recompute)rec;
            EXPECT(memplan_compute(&c, &b[k]) == ST_OK);
        }
        /* Equal steps in T, equal steps in bytes; the scratch does not move. */
        EXPECT(b[0].activations + b[2].activations == 2 * b[1].activations);
        EXPECT(b[0].attn_scratch == b[2].attn_scratch);
        double ratio = (double)(b[2].activations + b[2].attn_scratch) / (double)(b[0].activations + b[0].attn_scratch);
        EXPECT(ratio > 1.95 && ratio <= 2.0);
        /* 32768 tokens of this model: under 1 GiB per token row of 2, not the
         * 32 GiB one [B, H, T, T] array would take. */
        EXPECT(b[2].activations + b[2].attn_scratch < (4ull << 30));
    }
}

static void test_cuda_arena(void)
{
    for (int p = MEMPLAN_FP32; p <= MEMPLAN_FP16; p++) {
        memplan_cfg c = mp_cfg(&ds7, MEMPLAN_CUDA, (memplan_prec)p, 8, 2);
        memplan_bytes b;
        cuda_arena a;
        EXPECT(memplan_compute(&c, &b) == ST_OK);
        EXPECT(cuda_arena_plan(&a, &ds7, 2, (cuda_prec)p) == ST_OK);
        EXPECT(b.activations + b.attn_scratch == a.total && b.act_none == a.total);
        /* flash attention: the backward's fp32 row sums [B,H,T], nothing T^2 */
        EXPECT(b.attn_scratch == 4ull * 2 * 32 * 4096);
        /* recompute = layers: the arena keeps every layer's input and one
         * set; the other L - 1 sets (the aligned per-layer entries but the
         * input) are what it saves. */
        cuda_arena r;
        EXPECT(cuda_arena_plan_rc(&r, &ds7, 2, (cuda_prec)p, 1) == ST_OK);
        uint64_t set = 0;
        for (int k = 0; k < CA_PER_LAYER; k++)
            if (k != CA_RES)
                set += (a.bytes[k] + CUDA_ARENA_ALIGN - 1) / CUDA_ARENA_ALIGN * CUDA_ARENA_ALIGN;
        EXPECT(b.act_layers == r.total && a.total - r.total == (uint64_t)(ds7.n_layers - 1) * set);
        /* every layer's set is the one set; inputs stay apart */
        EXPECT(r.off[cuda_arena_layer(&r, 5, CA_GU)] == r.off[cuda_arena_layer(&r, 0, CA_GU)]);
        EXPECT(r.off[cuda_arena_layer(&r, 5, CA_RES)] != r.off[cuda_arena_layer(&r, 4, CA_RES)]);
        c.recompute = MEMPLAN_RECOMPUTE_LAYERS;
        memplan_bytes bl;
        EXPECT(memplan_compute(&c, &bl) == ST_OK);
        EXPECT(bl.activations + bl.attn_scratch == r.total && b.total - bl.total == a.total - r.total);
        cuda_arena_free(&r);
        cuda_arena_free(&a);
        /* cuda_memory_plan is a view of the same figures. */
        cuda_memplan m;
        comm_set_chunk(COMM_CHUNK_DEFAULT);
        EXPECT(cuda_memory_plan(&ds7, 2, 8, (cuda_prec)p, 1, &m) == ST_OK);
        EXPECT(m.total == (double)b.total && m.activations == (double)a.total && m.adam == (double)b.adam);
    }
}

/* More ranks shrink Adam m and v (and the snapshot of the range); the
 * chain's buffers stay a few chunks (CUDA: a chunk per rank with reduce =
 * nccl); nothing else moves. */
static void test_world_scaling(void)
{
    for (int be = 0; be < 2; be++) {
        memplan_cfg c = mp_cfg(&ds7, (memplan_backend)be, MEMPLAN_BF16, 1, 1);
        memplan_bytes one, w;
        EXPECT(memplan_compute(&c, &one) == ST_OK);
        EXPECT(one.comm == 0 && one.range == model_count_params(&ds7));
        for (int W = 2; W <= 128; W *= 4) {
            c.world = W;
            EXPECT(memplan_compute(&c, &w) == ST_OK);
            size_t lo = 0, hi = 0;
            mp_range(model_count_params(&ds7), W, &lo, &hi);
            EXPECT(w.range == hi - lo && w.adam == 8 * (uint64_t)(hi - lo) && w.snapshot == 12 * (uint64_t)(hi - lo));
            EXPECT(w.adam < one.adam && w.snapshot < one.snapshot);
            uint64_t slots = be == MEMPLAN_CUDA ? CUDA_XFER_CHAIN_SLOTS : COMM_CHAIN_SLOTS;
            uint64_t piece = be == MEMPLAN_CUDA ? COMM_CHUNK_DEFAULT
                             : comm_chain_largest(model_count_params(&ds7), 0, model_count_params(&ds7), W,
                                                  COMM_CHUNK_DEFAULT);
            EXPECT(w.comm == 4 * slots * piece && piece <= COMM_CHUNK_DEFAULT);
            c.reduce = COMM_REDUCE_NCCL;
            memplan_bytes nc;
            EXPECT(memplan_compute(&c, &nc) == ST_OK);
            EXPECT(nc.comm == (be == MEMPLAN_CUDA ? 4ull * (uint64_t)W * COMM_CHUNK_DEFAULT : w.comm));
            c.reduce = COMM_REDUCE_CHAIN;
            /* On CUDA under bf16 the fp32 master is the range's too (the
             * working copy is what is read and gathered); the workspace
             * line holds the norm's partial sums of the range. */
            EXPECT(be == MEMPLAN_CUDA ? w.master == 4 * (uint64_t)(hi - lo) && w.workspace < one.workspace
                                      : w.master == one.master && w.workspace == one.workspace);
            EXPECT(w.working == one.working && w.grads == one.grads &&
                   w.activations == one.activations && w.attn_scratch == one.attn_scratch &&
                   w.context == one.context && w.buckets == one.buckets);
        }
    }
    /* The case: deepseek-7b, bf16, micro_batch 1 over 64 GPUs:
     * with the fp32 master sharded (stage 1) it fits 80 GiB; stages 2
     * and 3 shrink it further. */
    memplan_cfg c = mp_cfg(&ds7, MEMPLAN_CUDA, MEMPLAN_BF16, 64, 1);
    memplan_bytes b, b2, b3;
    EXPECT(memplan_compute(&c, &b) == ST_OK);
    EXPECT(b.total < 80ull << 30 && b.total > 40ull << 30);
    c.zero = 2;
    EXPECT(memplan_compute(&c, &b2) == ST_OK);
    c.zero = 3;
    EXPECT(memplan_compute(&c, &b3) == ST_OK);
    EXPECT(b3.total < b2.total && b2.total < b.total);
    c.zero = 1;
    char adv[640];
    memplan_advice(&c, &b, adv, sizeof adv);
    EXPECT(strstr(adv, "more ranks shrink only Adam m and v, the fp32 master's range") &&
           strstr(adv, "train.zero = 2 shards the gradients"));
    EXPECT(strstr(adv, "micro_batch 1, the smallest") && strstr(adv, "train.recompute = layers holds"));
    c.world = 64;
    EXPECT(memplan_compute(&c, &b) == ST_OK);
    c.backend = MEMPLAN_CPU;
    EXPECT(memplan_compute(&c, &b) == ST_OK);
    memplan_advice(&c, &b, adv, sizeof adv);
    EXPECT(strstr(adv, "train.recompute = layers holds") && strstr(adv, "checkpoint snapshot"));
    EXPECT(strstr(adv, "train.zero = 2 shards the gradients") != NULL);
}

/* Stages 2-3 on the CPU backend, category by category, against the
 * backend's bucket (backend_cpu_bucket_floats) and the comm layer's range
 * (comm_range); the chain's slots hold its largest chunk (stage 1) or at
 * most a chunk of the largest part exchanged (buckets). */
static void test_zero_stages(void)
{
    const model_shape *shapes[] = {&small, &ds7};
    for (int si = 0; si < 2; si++)
        for (int W = 1; W <= 64; W = W * 3 + 1) {
            const model_shape *s = shapes[si];
            uint64_t n = model_count_params(s), K = backend_cpu_bucket_floats(s);
            size_t lo = 0, hi = 0;
            mp_range((size_t)n, W, &lo, &hi);
            uint64_t R = hi - lo, C = COMM_CHUNK_DEFAULT;
            memplan_bytes b[4];
            for (int z = 1; z <= 3; z++) {
                memplan_cfg c = mp_cfg(s, MEMPLAN_CPU, MEMPLAN_FP32, W, 1);
                c.zero = z;
                EXPECT(memplan_compute(&c, &b[z]) == ST_OK);
                EXPECT(b[z].total == mp_sum(&b[z]) && b[z].range == R);
                EXPECT(b[z].adam == 8 * R && b[z].snapshot == 12 * R && b[z].buckets == 0);
                EXPECT(b[z].master == (z >= 3 ? 4 * (R + K) : 4 * n));
                EXPECT(b[z].grads == (z >= 2 ? 4 * (R + K) : 4 * n));
                uint64_t piece = z == 1 ? comm_chain_largest((size_t)n, 0, (size_t)n, W, (size_t)C)
                                        : mp_bucket_chain((size_t)n, s, W, (size_t)C);
                EXPECT(b[z].comm == (W == 1 ? 0 : 4 * COMM_CHAIN_SLOTS * piece));
                EXPECT(b[z].activations == b[1].activations && b[z].attn_scratch == b[1].attn_scratch);
            }
            /* One rank: the range is the vector, so 2 and 3 cost a bucket
             * each more than 1; from 2 ranks up they shrink the plan. */
            if (W == 1)
                EXPECT(b[2].total == b[1].total + 4 * K && b[3].total == b[2].total + 4 * K);
            else if (R + K < n)
                EXPECT(b[3].total < b[2].total && b[2].total < b[1].total);
        }
    /* The small preset's case is the one the zero branch measured. */
    memplan_cfg c = mp_cfg(&small, MEMPLAN_CPU, MEMPLAN_FP32, 2, 1);
    c.comm_chunk = 7;   /* a chunk smaller than any bucket: every stage exchanges chunks */
    memplan_bytes b;
    for (c.zero = 1; c.zero <= 3; c.zero++) {
        EXPECT(memplan_compute(&c, &b) == ST_OK);
        EXPECT(b.comm == 4 * COMM_CHAIN_SLOTS * 7);
    }
}

/* zero = auto: the lowest stage whose plan fits, the smallest plan when
 * none does (stage 1 on one rank), 1 on CUDA or when nothing is known. */
/* [comm] overlap over 2+ ranks: a second gradient bucket at stages 2-3 on
 * both backends, and on the CPU a second parameter bucket at 3
 * (backend/cpu.c and cuda/backend.cu allocate them; CUDA's stage 3 holds
 * two parameter buckets either way); none at stage 1 or on one rank. The
 * second buckets hold one decoder layer: with deepseek's vocabulary the
 * embedding and lm_head are twice a layer and wait for the first. */
static void test_overlap_buckets(void)
{
    const model_shape *shapes[] = {&small, &ds7};
    for (int si = 0; si < 2; si++) {
        const model_shape *s = shapes[si];
        uint64_t K = 4 * (uint64_t)backend_cpu_bucket_floats(s), KL = 4 * model_layer_floats(s);
        model_layout L;
        size_t a, b;
        EXPECT(model_layout_init(&L, s) == ST_OK);
        model_bucket_span(&L, s->n_layers - 1, &a, &b);
        EXPECT(KL == 4 * (uint64_t)(b - a));
        model_layout_free(&L);
        EXPECT(si == 0 ? KL == K : 2 * KL < K);
        for (int be = MEMPLAN_CPU; be <= MEMPLAN_CUDA; be++)
            for (int w = 1; w <= 4; w += 3)
                for (int z = MEMPLAN_ZERO1; z <= MEMPLAN_ZERO3; z++) {
                    memplan_cfg c = mp_cfg(s, (memplan_backend)be, be == MEMPLAN_CPU ? MEMPLAN_FP32 : MEMPLAN_BF16, w, 1);
                    memplan_bytes on, off;
                    c.zero = z;
                    c.overlap = 0;
                    EXPECT(memplan_compute(&c, &off) == ST_OK);
                    c.overlap = 1;
                    EXPECT(memplan_compute(&c, &on) == ST_OK);
                    int two = w > 1;
                    EXPECT(on.grads - off.grads == (two && z >= 2 ? KL : 0));
                    EXPECT(on.master - off.master == (two && z >= 3 && be == MEMPLAN_CPU ? KL : 0));
                    EXPECT(on.total - off.total == on.grads - off.grads + on.master - off.master);
                }
    }
}

static void test_choose_zero(void)
{
    /* At 32K context, where layers recompute saves more than zero 3 (the
     * "both auto" order below needs that). */
    model_shape ds7l = ds7;
    ds7l.seq_len = 32768;
    memplan_bytes z[4], b;
    for (int i = 1; i <= 3; i++) {
        memplan_cfg c = mp_cfg(&ds7l, MEMPLAN_CPU, MEMPLAN_FP32, 8, 1);
        c.zero = i;
        EXPECT(memplan_compute(&c, &z[i]) == ST_OK);
    }
    EXPECT(z[3].total < z[2].total && z[2].total < z[1].total);
    uint64_t avails[] = {z[1].total, z[1].total - 1, z[2].total, z[2].total - 1, z[3].total, 1000, 0};
    int want[] = {1, 2, 2, 3, 3, 3, 1};
    for (int i = 0; i < 7; i++) {
        memplan_cfg c = mp_cfg(&ds7l, MEMPLAN_CPU, MEMPLAN_FP32, 8, 1);
        c.zero = 2;
        EXPECT(memplan_choose_zero(&c, avails[i], &b) == ST_OK);
        EXPECT(c.zero == want[i] && b.total == z[want[i]].total);
    }
    memplan_cfg c = mp_cfg(&ds7l, MEMPLAN_CPU, MEMPLAN_FP32, 1, 1);
    EXPECT(memplan_choose_zero(&c, 1000, &b) == ST_OK && c.zero == 1);
    /* CUDA chooses against the GPU's memory the same way. */
    c = mp_cfg(&ds7, MEMPLAN_CUDA, MEMPLAN_BF16, 8, 1);
    EXPECT(memplan_choose_zero(&c, 1000, &b) == ST_OK && c.zero == 3);
    c = mp_cfg(&ds7, MEMPLAN_CUDA, MEMPLAN_BF16, 8, 1);
    EXPECT(memplan_choose_zero(&c, 0, &b) == ST_OK && c.zero == 1);
    /* The recompute setting is planned as given. */
    c = mp_cfg(&ds7l, MEMPLAN_CPU, MEMPLAN_FP32, 8, 1);
    c.recompute = MEMPLAN_RECOMPUTE_LAYERS;
    EXPECT(memplan_choose_zero(&c, z[1].total, &b) == ST_OK && c.zero == 1 &&
           c.recompute == MEMPLAN_RECOMPUTE_LAYERS);
    /* Both auto: every stage with none before any with layers. */
    memplan_bytes l1;
    c = mp_cfg(&ds7l, MEMPLAN_CPU, MEMPLAN_FP32, 8, 1);
    c.recompute = MEMPLAN_RECOMPUTE_LAYERS;
    EXPECT(memplan_compute(&c, &l1) == ST_OK && l1.total < z[3].total);
    memplan_bytes l2;
    c.zero = 2;
    EXPECT(memplan_compute(&c, &l2) == ST_OK && l2.total < l1.total);
    uint64_t both[] = {z[1].total, z[3].total, z[3].total - 1, l1.total, l1.total - 1};
    int want_z[] = {1, 3, 1, 1, 2}, want_r[] = {0, 0, 1, 1, 1};
    for (int i = 0; i < 5; i++) {
        c = mp_cfg(&ds7l, MEMPLAN_CPU, MEMPLAN_FP32, 8, 1);
        EXPECT(memplan_choose_zero_recompute(&c, both[i], &b) == ST_OK);
        EXPECT(c.zero == want_z[i] && (int)c.recompute == want_r[i]);
    }
}

static void test_stages(void)
{
    memplan_bytes b;
    for (int z = 0; z <= 4; z++) {
        memplan_cfg c = mp_cfg(&small, MEMPLAN_CPU, MEMPLAN_FP32, 4, 1);
        c.zero = z;
        memset(&b, 0xff, sizeof b);
        int rc = memplan_compute(&c, &b);
        EXPECT(z >= 1 && z <= 3 ? rc == ST_OK : rc == ST_CONFIG && b.total == 0);
        /* The CUDA backend has every stage too. */
        c = mp_cfg(&small, MEMPLAN_CUDA, MEMPLAN_BF16, 4, 1);
        c.zero = z;
        memset(&b, 0xff, sizeof b);
        rc = memplan_compute(&c, &b);
        EXPECT(z >= 1 && z <= 3 ? rc == ST_OK : rc == ST_CONFIG && b.total == 0);
    }
    memplan_cfg c = mp_cfg(&small, MEMPLAN_CUDA, MEMPLAN_BF16, 1, 1);
    c.recompute = MEMPLAN_RECOMPUTE_LAYERS;
    EXPECT(memplan_compute(&c, &b) == ST_OK && b.activations + b.attn_scratch == b.act_layers);
    c = mp_cfg(&small, MEMPLAN_CPU, MEMPLAN_FP32, 0, 1);
    EXPECT(memplan_compute(&c, &b) == ST_CONFIG);
    EXPECT(memplan_recompute_parse("none") == 0 && memplan_recompute_parse("layers") == 1 &&
           memplan_recompute_parse("auto") == -1 && memplan_recompute_parse(NULL) == -1);
}

/* Per rank: on the CPU rank 0 of the chain holds no slots (comm.c sends
 * its part from the gradients), every other rank the plan's total, which
 * is the largest; the CUDA chain sizes its slots on every rank. */
static void test_rank_total(void)
{
    memplan_bytes b;
    for (int be = MEMPLAN_CPU; be <= MEMPLAN_CUDA; be++)
        for (int W = 1; W <= 8; W *= 2)
            for (int z = MEMPLAN_ZERO1; z <= MEMPLAN_ZERO3; z++) {
                memplan_cfg c = mp_cfg(&small, (memplan_backend)be, MEMPLAN_FP32, W, 2);
                c.zero = z;
                c.comm_chunk = 1000;   /* several chain chunks per part at every stage */
                EXPECT(memplan_compute(&c, &b) == ST_OK);
                EXPECT(W == 1 ? b.comm == 0 : b.comm > 0);
                uint64_t most = 0;
                for (int r = 0; r < W; r++) {
                    uint64_t t = memplan_rank_total(&c, &b, r);
                    EXPECT(t == (be == MEMPLAN_CPU && r == 0 ? b.total - b.comm : b.total));
                    most = t > most ? t : most;
                }
                EXPECT(most == b.total);   /* the printed total is the largest rank's */
                EXPECT(memplan_rank_total(&c, &b, -1) == b.total && memplan_rank_total(&c, &b, W) == b.total);
            }
    /* The fit check and zero = auto keep the largest: a budget only rank 0
     * fits still moves auto off the stage. */
    memplan_cfg c = mp_cfg(&small, MEMPLAN_CPU, MEMPLAN_FP32, 4, 2);
    c.comm_chunk = 1000;
    EXPECT(memplan_compute(&c, &b) == ST_OK && b.comm > 0);
    uint64_t r0 = memplan_rank_total(&c, &b, 0);
    memplan_bytes a;
    EXPECT(memplan_choose_zero(&c, r0, &a) == ST_OK && c.zero > MEMPLAN_ZERO1);
    char line[1024];
    c.zero = MEMPLAN_ZERO1;
    EXPECT(memplan_refusal(&c, &b, r0, 4, line, sizeof line) == 1);
}

int main(void)
{
    harness_run("categories add up", test_categories_add_up);
    harness_run("cpu activations are the backend's sizing", test_cpu_activations);
    harness_run("cpu activations are linear in T", test_cpu_linear_in_T);
    harness_run("cuda activations are the arena", test_cuda_arena);
    harness_run("world shrinks only the sharded categories", test_world_scaling);
    harness_run("zero 2-3 are range + bucket", test_zero_stages);
    harness_run("zero = auto picks the lowest stage that fits", test_choose_zero);
    harness_run("overlap: a second bucket a layer big on both backends", test_overlap_buckets);
    harness_run("the process: writer I/O and runtime", test_process_terms);
    harness_run("stages 1-3 planned on both backends, others refused", test_stages);
    harness_run("rank 0 holds no chain slots on the cpu", test_rank_total);
    return harness_end();
}
