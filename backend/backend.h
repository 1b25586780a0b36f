/* The compute backend interface. The backend owns the training state: the
 * full fp32 parameter vector (the master copy, Hugging Face order), the
 * gradients, and Adam m/v of this rank's ZeRO-1 range [lo, hi). The loop
 * holds scalars and the protocol and calls the operations below; nothing
 * outside a backend touches its memory, so a device backend keeps the
 * state on the device and syncs with the host once per step (the loss). */
#ifndef SPOTRAIN_BACKEND_H
#define SPOTRAIN_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include "model/model.h"
#include "model/optim.h"
#include "backend/gemm.h"

/* The arrays a backend holds; the numbering matches CKPT_PARAMS/ADAM_M/V. */
enum { BK_PARAMS = 0, BK_ADAM_M = 1, BK_ADAM_V = 2, BK_GRADS = 3 };

typedef struct {
    const char *name;       /* "auto" | "cpu" | "cuda" */
    const char *precision;  /* "fp32" | "tf32" | "bf16" | "fp16"; NULL = the backend's default */
    int threads;            /* CPU compute threads; <= 0 = all cores */
    int rank, world;        /* data-parallel position; the backend's range is comm_range's */
    int flush_denormals;    /* cpu: subnormal floats as zero in every compute thread (FTZ/DAZ) */
    int recompute;          /* train.recompute: 0 none, 1 layers (each layer's backward reruns its forward
                             * from the kept layer input; bitwise the same results) */
    int zero;               /* train.zero: ZeRO stage 1, 2 or 3 (0 reads as 1) */
    int cpu_gemm;           /* cpu: gemm_lib of the matrix products (0 = OpenBLAS); auto is resolved before */
} backend_opts;

typedef struct backend backend;
struct backend {
    const char *name;       /* "cpu", "cuda" */
    const char *precision;  /* compute precision in use */
    char device[128];       /* the model: a CPU's model name, "NVIDIA H200" (recorded in checkpoints) */
    char libraries[256];    /* versions of the numeric libraries in use (recorded in checkpoints) */
    char warning[320];      /* one line the trainer logs at start ("" = none): a slow set-up */
    const model_layout *L;
    size_t lo, hi;          /* this rank's range of the flat vector */
    int rank, world;
    void *impl;

    /* B rows of seq_len+1 ids (inputs row[0..T), targets row[1..T]). Adds
     * grad_scale * d(sum of token losses)/dparams to the gradients and the
     * summed loss (nats, unscaled) to an accumulator inside the backend.
     * grad_scale carries the loss scale (lscale.h): it seeds the backward
     * at the loss, before anything is stored in 16 bits, and gradients
     * that overflow must come out non-finite (never saturated), so that
     * grad_sumsq sees the overflow; the loop then skips adamw and divides
     * the scale out through its clip_scale. */
    int (*fwd_bwd)(backend *b, const int32_t *tokens, int64_t B, float grad_scale);
    /* The loss accumulated since the last call, then resets it: the one
     * device-to-host sync of a step. */
    int (*take_loss)(backend *b, double *loss_sum);
    /* Same rows, loss only (validation); adds to *loss_sum. */
    int (*eval)(backend *b, const int32_t *tokens, int64_t B, double *loss_sum);
    /* One sequence of 1 <= T <= seq_len ids; the vocab logits of its last
     * position into out (host). */
    int (*logits)(backend *b, const int32_t *tokens, int64_t T, float *out);
    int (*zero_grads)(backend *b);
    /* After it, grads[lo,hi) holds the sum over ranks, added in rank order.
     * (Under ZeRO 2 and 3 the backward has already reduced each layer's
     * bucket as it finished: nothing is left to do.) */
    int (*reduce_grads)(backend *b);
    /* Sum of squares of grads[lo,hi), in a fixed order (double). */
    int (*grad_sumsq)(backend *b, double *out);
    /* AdamW on [lo,hi): params, m, v (and any working copy). step is
     * 1-based; clip_scale multiplies the gradients first. */
    int (*adamw)(backend *b, const optim_hparams *h, double lr, double clip_scale, int64_t step);
    /* Every rank's range of the parameters to every rank. */
    int (*gather_params)(backend *b);
    /* Host -> backend: n floats of array at flat offset off. BK_PARAMS takes
     * any range of the full vector; BK_ADAM_M/V only inside [lo,hi). Used at
     * start (fresh init, resume, init_from). */
    int (*load)(backend *b, int array, size_t off, size_t n, const float *src);
    /* Backend -> host, same ranges as load (BK_GRADS too): read-back for
     * tests, sampling and export. Synchronous. */
    int (*read)(backend *b, int array, size_t off, size_t n, float *dst);
    /* params | m | v of [lo,hi) back to back into dst (3 * (hi-lo) floats),
     * for the checkpoint writer. May only start the copy; snapshot_wait is
     * the fence the writer waits on before reading dst. The next adamw
     * waits for the copy to finish. */
    int (*snapshot)(backend *b, float *dst);
    int (*snapshot_wait)(backend *b);
    /* Optional (may be NULL): page-locks a host buffer the backend copies
     * into (the writer's snapshot buffer), once at start. */
    int (*pin)(backend *b, void *host, size_t bytes);
    void (*destroy)(backend *b);
};

/* CPU backend (OpenBLAS + OpenMP). */
int backend_cpu_create(backend **out, const model_layout *L, const backend_opts *o);
/* The CPU backend's host array (BK_*; m and v hold [lo,hi) only): for the
 * numerics tests and benchmarks of this backend, never for the loop. */
float *backend_cpu_host(backend *b, int array);
/* The CPU backend's activation buffers for a micro-batch, in bytes, with
 * recompute 0 (none) or 1 (layers) and threads (<= 0: all cores): the
 * --dry-run figure. _held: what b holds now (its largest micro-batch yet). */
size_t backend_cpu_activation_bytes(const model_shape *s, int64_t micro_batch, int recompute, int threads);
size_t backend_cpu_activation_held(const backend *b);
/* train.recompute = auto: switches a CPU backend to recompute 0|1 before it
 * has allocated activations (its first step); ST_SOFTWARE after. */
int backend_cpu_set_recompute(backend *be, int recompute);
/* train.recompute = auto on any backend: 0|1 before its first step
 * (backend_cpu_set_recompute, or the cuda backend's); ST_SOFTWARE after. */
int backend_set_recompute(backend *b, int recompute);
/* A device backend's memory size in bytes (the GPU's, cudaMemGetInfo);
 * 0 on the CPU or when unknown. SPOTRAIN_TEST_GPU_MEMORY (bytes) stands
 * in for it in tests. */
uint64_t backend_device_bytes(const backend *b);
/* train.cpu_gemm: switch be's products to lib (ST_UNAVAILABLE, one line,
 * when it cannot load); and auto's choice for micro-batches of B rows
 * (gemm_pick on be's shapes, threads and CPU). */
int backend_cpu_set_gemm(backend *be, int lib);
int backend_cpu_gemm_pick(const backend *be, int64_t B, const char *cache, int *lib, char *note, size_t cap);
/* The per-part profile of the CPU backend (make bench): on = 1 starts it
 * at zero, 0 stops it. _read fills up to cap parts (name, wall seconds on
 * the calling thread, floating-point operations of the products; 0 for
 * element-wise parts) and returns how many there are. */
typedef struct {
    const char *name;
    double seconds, flops;
} backend_cpu_part;
int backend_cpu_profile(backend *be, int on);
int backend_cpu_profile_read(const backend *be, backend_cpu_part *out, int cap);
/* The matrix products one micro-batch of B rows runs (forward, backward),
 * for train.cpu_gemm = auto's timing: the shapes of cpu.c's calls. Returns
 * how many (at most cap are written; 15 today). */
int backend_cpu_gemm_shapes(const model_shape *s, int64_t B, gemm_shape *out, int cap);
/* 1 when backend_create would give name ("cpu" | "cuda" | "auto") the CPU
 * backend: cpu, or auto with no usable GPU (train.zero = auto plans the
 * stage before the backend exists). */
int backend_resolves_cpu(const char *name);
/* The memory of the GPU backend name would drive (train.zero = auto on
 * CUDA plans against it), 0 when none or unknown. */
uint64_t backend_gpu_memory(const char *name);
/* ZeRO 2 and 3: floats in one bucket buffer, the largest span the CPU
 * backend moves at once (norm + lm_head, or one decoder layer). A rank
 * holds one gradient bucket from stage 2 and one parameter bucket at 3,
 * and under [comm] overlap over 2+ ranks a second of each that holds
 * one decoder layer, model_layer_floats (backend/cpu.c). */
size_t backend_cpu_bucket_floats(const model_shape *s);

/* What to tell a user whose OpenBLAS runs kernels older than the CPU:
 * OpenBLAS picks its kernels by CPU model, and a model it does not know
 * (e.g. a cloud's "Intel(R) Xeon(R) Processor") gets Prescott's, SSE3 only,
 * on a CPU with AVX2 or AVX-512. core: openblas_get_corename(); avx2,
 * avx512: what the CPU has; forced: OPENBLAS_CORETYPE is set (the user's
 * choice stands). Writes one line into out and returns 1 when the kernels
 * are older than the CPU, else writes "" and returns 0. */
int backend_cpu_blas_advice(const char *core, int avx2, int avx512, int forced, char *out, size_t cap);
/* The same for this process: its OpenBLAS, its CPU, its environment. */
int backend_cpu_blas_check(char *out, size_t cap);

/* A backend's data plane on its own, without a model: what `selftest comm`
 * checks bitwise and times before a run trusts it. The cpu backend's is MPI
 * on host vectors (comm/), the cuda backend's NCCL on device buffers. Each
 * collective takes a host vector of n <= max_floats floats (in and out,
 * comm_range's ranges) and returns once it is done, with the seconds it
 * took in *seconds. */
typedef struct backend_plane backend_plane;
struct backend_plane {
    int (*reduce_scatter)(backend_plane *p, float *v, size_t n, double *seconds);
    int (*allgather)(backend_plane *p, float *v, size_t n, double *seconds);
    /* What moves the bytes and over how many ranks and nodes (one line,
     * no newline; rank 0's is the one printed). */
    void (*describe)(backend_plane *p, char *out, size_t cap);
    /* Optional (may be NULL): once a collective has connected the peers,
     * how it did; 1 when it fell back to sockets. */
    int (*transport)(backend_plane *p, char *out, size_t cap);
    void (*close)(backend_plane *p);
    void *impl;
};
/* The plane of the backend name picks ("cpu", "cuda", or "auto": cuda
 * when compiled in and a device is present). Failures print one line:
 * ST_UNAVAILABLE when cuda is asked for and cannot start. */
int backend_plane_open(backend_plane **out, const char *name, size_t max_floats);
int backend_cpu_plane_open(backend_plane **out);

/* Picks by o->name: "cpu", "cuda", or "auto" (CUDA when compiled in and a
 * device is present, else CPU). ST_UNAVAILABLE with one line naming what is
 * missing when "cuda" cannot start. */
int backend_create(backend **out, const model_layout *L, const backend_opts *o);

/* Bitwise continuity of a resume: compares what a checkpoint recorded
 * (backend, precision, device model, libraries with the CPU's cpu_gemm
 * library and kernel; "" = not recorded, not compared) with b. Returns the
 * number of differences and describes them in why, e.g. "precision fp32 ->
 * bf16, device NVIDIA A100-SXM4-80GB -> NVIDIA H200". */
int backend_continuity(const backend *b, const char *backend_was, const char *precision_was,
                       const char *device_was, const char *libraries_was, char *why, size_t cap);
/* SPOTRAIN_DEVICE_NAME, when set and not empty, replaces the device name a
 * backend reports (ledger, checkpoints, the continuity check); it changes
 * nothing the backend computes. */
void backend_device_override(backend *b);

/* Every id in [0, vocab), or ST_DATA naming the first one that is not:
 * every backend checks its host rows before they reach a kernel. */
int backend_check_tokens(const backend *b, const int32_t *tokens, int64_t n);

struct ckpt_reader;
/* Reads [lo,hi) of a checkpoint array (CKPT_PARAMS/ADAM_M/ADAM_V, equal to
 * BK_*) into the backend through a bounded host buffer. */
int backend_load_ckpt(backend *b, struct ckpt_reader *r, int array, size_t lo, size_t hi);

#endif
