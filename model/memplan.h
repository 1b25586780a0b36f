/* The one memory model: per rank, the bytes of every category the trainer
 * holds for a configuration (shape, backend, precision, ZeRO stage,
 * recompute, world). --dry-run, `cost estimate` and the CUDA plan read it. */
#ifndef SPOTRAIN_MEMPLAN_H
#define SPOTRAIN_MEMPLAN_H

#include <stddef.h>
#include <stdint.h>
#include "model/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { MEMPLAN_CPU = 0, MEMPLAN_CUDA = 1 } memplan_backend;
/* The same order and meaning as cuda_prec (cuda/plan.h). */
typedef enum { MEMPLAN_FP32 = 0, MEMPLAN_TF32 = 1, MEMPLAN_BF16 = 2, MEMPLAN_FP16 = 3 } memplan_prec;
typedef enum { MEMPLAN_RECOMPUTE_NONE = 0, MEMPLAN_RECOMPUTE_LAYERS = 1 } memplan_recompute;

/* ZeRO stages. 1: full working copy and full gradients on every rank, Adam
 * m and v sharded by rank range (on CUDA with a 16-bit working copy the
 * fp32 master too: only its range is ever read). 2: as 1, gradients
 * reduce-scattered layer by layer into the rank's range plus one bucket.
 * 3: as 2, working parameters sharded and gathered a bucket at a time into
 * one bucket buffer. Both backends implement all three. With [comm] overlap
 * over 2+ ranks the CPU backend holds two buckets of each kind (the
 * second one decoder layer big), the CUDA backend two gradient buckets (and two parameter buckets at 3 always). */
enum { MEMPLAN_ZERO1 = 1, MEMPLAN_ZERO2 = 2, MEMPLAN_ZERO3 = 3 };

typedef struct {
    model_shape shape;
    memplan_backend backend;
    memplan_prec precision;       /* the CPU backend computes in fp32 whatever this says */
    int world;                    /* data-parallel ranks */
    int ranks_per_node;           /* for the bucket plans of stages 2-3; no byte depends on it yet */
    int64_t micro_batch;          /* sequences per forward/backward */
    int threads;                  /* CPU: attention scratch per thread; <= 0 = every processor */
    memplan_recompute recompute;
    int zero;                     /* MEMPLAN_ZERO1..3 */
    size_t comm_chunk;            /* floats per rank per collective round (comm_get_chunk) */
    int reduce;                   /* COMM_REDUCE_CHAIN (0) | COMM_REDUCE_NCCL ([comm] reduce) */
    int overlap;                  /* [comm] overlap: stages 2-3 hold second buckets (CPU: both kinds; CUDA: gradients) */
    /* The checkpoint writer ([checkpoint] codec, level, chunk_kib, threads;
     * threads 0: every core): chunk 0 plans no writer. */
    int ckpt_codec, ckpt_level, ckpt_threads;
    size_t ckpt_chunk;            /* raw bytes per chunk */
} memplan_cfg;

/* Bytes one rank holds, by category. total is what the rank's own memory
 * holds: the process's RAM on the CPU, the GPU's memory on CUDA; host is
 * what a CUDA rank holds in host RAM besides (the checkpoint snapshot).
 * total + host is the sum of every category but act_none / act_layers,
 * which say what either recompute setting would hold (0: not available). */
typedef struct {
    size_t range;                 /* floats of the largest rank's Adam range */
    uint64_t master;              /* fp32 parameters */
    uint64_t working;             /* 16-bit working copy (cuda bf16/fp16), else 0 */
    uint64_t grads;               /* fp32 gradients */
    uint64_t adam;                /* m and v */
    uint64_t snapshot;            /* checkpoint snapshot buffer (host) */
    uint64_t buckets;             /* 0: stages 2-3 count their one bucket in master / grads */
    uint64_t activations;         /* under the configured recompute, without the attention scratch */
    uint64_t act_none, act_layers;   /* activations + attention scratch under each setting */
    uint64_t attn_scratch;        /* cpu: per-thread score rows; cuda: the arena's scores/probabilities */
    uint64_t workspace;           /* library workspaces (cuBLASLt) */
    uint64_t context;             /* CUDA context, handles and kernels (an estimate) */
    uint64_t comm;                /* gradient reduction buffers: the chain's slots (nccl: a chunk per rank) */
    uint64_t ckpt_io;             /* cpu: the checkpoint writer's output slots and codec workspaces */
    uint64_t runtime;             /* cpu: the process itself: binary, libraries, thread stacks, MPI */
    uint64_t total, host;
} memplan_bytes;

/* Fills out for cfg. ST_OK, or ST_CONFIG for a stage or recompute setting
 * the backend does not implement, or a bad field: one line, kept as
 * util_last_error and not printed (the caller prints it if it stops). */
int memplan_compute(const memplan_cfg *cfg, memplan_bytes *out);

/* The per-process total of rank `rank` for the b memplan_compute filled
 * from c. b->total is the largest rank's (what zero = auto and the start's
 * fit check compare); on the CPU rank 0 of the chain holds no chain slots
 * (it sends from its gradients), so its total is b->total less b->comm.
 * A rank outside [0, world) gets b->total. */
uint64_t memplan_rank_total(const memplan_cfg *c, const memplan_bytes *b, int rank);

/* The CPU backend's activation buffers for B sequences, term by term as
 * backend/cpu.c allocates them (threads <= 0: every processor). */
uint64_t memplan_cpu_activation_bytes(const model_shape *s, int64_t B, int recompute, int threads);
/* Of those, the per-thread attention scratch. */
uint64_t memplan_cpu_attn_scratch_bytes(const model_shape *s, int threads);

/* train.recompute = auto: plans with none and, when that total exceeds
 * avail bytes (> 0: this process's share of RAM on the CPU backend, the
 * GPU's memory on CUDA), switches to layers; c->recompute and out hold
 * the choice. */
int memplan_choose_recompute(memplan_cfg *c, uint64_t avail, memplan_bytes *out);
/* train.zero = auto: the lowest stage whose plan fits avail bytes (> 0:
 * the process's share of MemAvailable on the CPU, the GPU's memory on
 * CUDA), the smallest plan when none does; avail 0 (unknown) keeps 1.
 * c->zero and out hold the choice; c->recompute is planned as it is. */
int memplan_choose_zero(memplan_cfg *c, uint64_t avail, memplan_bytes *out);
/* Both auto: the lowest stage that fits with recompute none (a stage
 * costs less step time than rerunning every forward); when none does, the
 * lowest that fits with layers, else the smallest plan with layers. */
int memplan_choose_zero_recompute(memplan_cfg *c, uint64_t avail, memplan_bytes *out);
/* The CPU process's fixed bytes (memplan_bytes.runtime) for world ranks
 * and threads compute threads (<= 0: every processor). */
uint64_t memplan_cpu_runtime_bytes(int world, int threads);
/* One line for a start the plan refuses: the plan's per-process total
 * against avail bytes (a rank's share of MemAvailable), what to change.
 * Returns 1 when total exceeds avail (> 0), 0 when it fits or avail is
 * unknown (0); the line is written only then. */
int memplan_refusal(const memplan_cfg *c, const memplan_bytes *b, uint64_t avail, int local, char *buf, size_t cap);
/* This machine's MemAvailable (/proc/meminfo) in bytes; 0 when unknown.
 * SPOTRAIN_TEST_MEM_AVAILABLE (bytes) stands in for it in tests. */
uint64_t memplan_host_available(void);

/* "none" | "layers" -> 0 | 1; -1 otherwise ("auto" is the caller's). */
int memplan_recompute_parse(const char *s);
/* The CPU/CUDA fit advice when total exceeds avail bytes: one line of what
 * actually shrinks the plan, written to buf. */
void memplan_advice(const memplan_cfg *cfg, const memplan_bytes *b, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
