/* The CUDA backend's C entry points: what backend/backend.c and main.c call.
 * Plain C (no CUDA headers), so every file of the tree can include it; the
 * functions exist only in builds made with CUDA=1 (SPOTRAIN_CUDA). */
#ifndef SPOTRAIN_CUDA_H
#define SPOTRAIN_CUDA_H

#include <stddef.h>
#include <stdio.h>
#include "backend/backend.h"
#include "model/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What cuda_probe finds: a usable GPU; no GPU here at all (no driver, no
 * device: the CPU is expected); a GPU that cannot run this backend (compute
 * capability below 8.0, a driver older than the runtime, cuBLASLt missing
 * or too old: worth a line when backend = auto falls back). */
enum { CUDA_PROBE_OK = 0, CUDA_PROBE_NONE = 1, CUDA_PROBE_UNUSABLE = 2 };
int cuda_probe(char *why, size_t cap);

/* 1 when a CUDA backend can start here (cuda_probe says OK). Otherwise 0
 * and why[] is one line naming what is missing or unsupported. */
int cuda_available(char *why, size_t cap);
/* Bytes of memory on the device this process will drive (device 0 when
 * ranks see one each; the node's GPUs are alike), 0 when unknown. */
uint64_t cuda_device_memory(void);

/* --version lines: compiled architectures, CUDA runtime, driver, cuBLASLt
 * and NCCL versions found, and every device. */
void cuda_describe(FILE *f);

/* One line for checkpoint manifests: "cuda runtime 13.0 (static), driver
 * 13.0, cublasLt 130100, nccl 2.26.5" ("nccl none" when it does not load). */
void cuda_library_versions(char *out, size_t cap);

/* The CUDA backend (device-resident state; backend/backend.h). */
int backend_cuda_create(backend **out, const model_layout *L, const backend_opts *o);

/* train.recompute for a cuda backend before its first step (auto); ST_SOFTWARE
 * once the activation arena is allocated. */
int backend_cuda_set_recompute(backend *be, int recompute);
/* The activation arena's bytes as allocated (0 before the first step). */
size_t backend_cuda_arena_bytes(const backend *be);
/* The device's memory in use (by every process on it) and its size,
 * from cudaMemGetInfo. */
int backend_cuda_memory(const backend *be, size_t *used, size_t *total);

/* The cuda backend's data plane on its own (backend_plane, for `selftest
 * comm`): picks this rank's GPU, creates the NCCL communicator over all
 * MPI ranks and sends NCCL's INFO log to a temporary file; collectives
 * time the device part; transport is NCCL's choice once a collective has
 * connected the peers (1: it fell back to sockets). */
int backend_cuda_plane_open(backend_plane **out, size_t max_floats);

/* Kernel checks for tests/unit/test_cuda_kernels.c: each runs one layer's
 * kernels on host arrays (fp32 on the host; the compute type on the device,
 * inputs rounded to nearest even on upload), with every output first
 * poisoned with NaN, and copies the outputs back as fp32. In/out arrays
 * (gradients that accumulate) are read first. ST_* status. */
int cuda_check_rmsnorm(int prec, int64_t N, int64_t D, double eps, const float *x, const float *w, const float *dy,
                       float *out, float *rs, float *dx, float *dw);
int cuda_check_rope(int prec, const model_shape *s, int64_t B, const float *qkv, float *q, float *k, float *v,
                    float *back);
/* Flash attention forward and backward: q [B,H,T,hd], k, v [B,KV,T,hd]
 * (head layouts), dao and ao rows [B*T, H*hd]; lse [B,H,T]; dq, dk, dv in
 * the head layouts of q, k, v. */
int cuda_check_attention(int prec, const model_shape *s, int64_t B, const float *q, const float *k, const float *v,
                         const float *dao, float *ao, float *lse, float *dq, float *dk, float *dv);
/* hb and dgub: the backward that also writes h (the recompute rerun's). */
int cuda_check_swiglu(int prec, int64_t N, int64_t F, const float *gu, const float *dh, float *h, float *dgu,
                      float *hb, float *dgub);
int cuda_check_crossentropy(int prec, int64_t B, int64_t T, int64_t V, const float *z, const int32_t *tokens,
                            float grad_scale, double *rowloss, double *loss_sum, float *dz);
int cuda_check_encoder(int64_t B, int64_t T, int64_t D, int64_t V, const float *emb, const int32_t *tokens,
                       const float *dres, float *out, float *gemb);
/* params, g and the working copy at element skew_pgw of their device
 * buffers, m and v at skew_mv: the vector path's head, tail and fallback. */
int cuda_check_adamw(int prec, const model_layout *L, const optim_hparams *h, double lr, double clip, int64_t step,
                     float *params, const float *g, float *m, float *v, float *work, int skew_pgw, int skew_mv);
int cuda_check_sumsq(const float *g, int64_t n, double *out);
int cuda_check_gemm(int prec, const model_shape *s, int64_t B, int id, int64_t rows, const float *A, size_t na,
                    const float *Bm, size_t nb, float *C, size_t nc);

#ifdef __cplusplus
}
#endif

#endif
