/* The CUDA backend: device-resident training state (fp32 master, gradients,
 * Adam m/v, the compute-precision working copy), sharded by ZeRO stage and
 * moved bucket by bucket (a layer, the embedding, or norm + lm_head) under
 * 2 and 3; the forward and backward of the decoder over the layer files in
 * cuda/ (one .cuh per layer), the optimizer, and the checkpoint snapshot on
 * a copy stream. Also what --version and backend = auto ask: is a device
 * usable here, and which libraries. */
#include "common.cuh"
#include "gemm.cuh"
#include "encoder.cuh"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "attention.cuh"
#include "swiglu.cuh"
#include "classifier.cuh"
#include "adamw.cuh"
#include "nccl.cuh"

#include <dlfcn.h>
#include <stdlib.h>

extern "C" {
#include "comm/comm.h"
}

enum { CUDA_MAX_PINNED = 8 };
static const int64_t CUDA_NO_BUCKET = INT32_MIN;   /* no bucket (buckets are -1..n_layers) */
static_assert((int)CUDA_PLAN_SUMSQ_BLOCK == (int)CUDA_SUMSQ_BLOCK, "the memory plan sizes the norm partials");

typedef struct {
    cuda_prec prec;
    int dev;
    model_shape s;
    cudaStream_t stream, copy;
    cudaEvent_t ev_ready, ev_snap0, ev_snap, ev_stall0, ev_stall1, ev_tokens;
    cuda_gemm_ctx gemm;
    /* Each array holds the full vector or [lo,hi) (its offset then lo):
     * master [lo,hi) under a 16-bit working copy (only the range is ever
     * read) and at stage 3; work (2-byte types) [lo,hi) at stage 3; grads
     * [lo,hi) from stage 2. m, v: [lo,hi) always. */
    float *master, *grads, *m, *v;
    void *work;                      /* compute-precision copy (2-byte types); NULL: GEMMs read master */
    size_t moff, mlen, woff, goff, glen;
    int zero;                        /* ZeRO stage 1, 2 or 3 */
    /* Stages 2-3, [comm] overlap over 2+ ranks (two): two fp32 gradient
     * buckets: the backward adds into gbuf[gcur] (gbucket) while the comm
     * stream reduce-scatters the one closed before it; gbuf[1] holds
     * gcap[1] floats, a decoder layer, so the embedding and lm_head
     * buckets (gcap[0], up to 3 GiB at 67B) always take gbuf[0], after
     * its exchange; else one, gbuf[0], each bucket's exchange waited for
     * before the next opens. ga, wa:
     * flat offset of the open gradient bucket's and of the current
     * parameter bucket's first element. ev_closed: the
     * compute stream's end of the bucket just closed; ev_gfree[i]: the
     * comm stream's last use of gbuf[i]; ev_reduced: the comm stream's end
     * of a backward's exchanges. exchanges, gathers: buckets reduced and
     * gathered on the comm stream, overlapped: exchanges queued while two
     * buffers exist (one that took gbuf[0] right before a bucket too big
     * for gbuf[1] is waited for all the same; logged at the end under SPOTRAIN_CUDA_OVERLAP,
     * which tests/emu/cli_zero_emu.sh counts). */
    float *gbucket, *gbuf[2];
    int gcur, two;
    cudaEvent_t ev_closed, ev_gfree[2], ev_reduced;
    int64_t exchanges, gathers, overlapped;
    int overlap;                     /* SPOTRAIN_CUDA_OVERLAP=1: log the counts above at exit */
    /* Test hook, SPOTRAIN_TEST_CUDA_UNORDERED=1: drop the wait for a free
     * gradient bucket, so the emulator's hazard check can prove it matters. */
    int unordered;
    void *wbucket;                   /* the bucket cuda_w reads: wbuf[wcur] */
    size_t bucket_cap, gcap[2], ga, wa;
    /* Stage 3: two parameter buffers, the current one and the one the next
     * bucket is gathered into on the comm stream meanwhile; wk: the bucket
     * each holds (CUDA_NO_BUCKET: none); pend: the bucket being gathered;
     * ev_free[i]: the compute stream's last use of buffer i. */
    void *wbuf[2];
    int64_t wk[2], pend;
    int wcur;
    /* The one stream every ZeRO collective of stages 2-3 is queued on
     * (the stage-3 gathers and the stage 2-3 bucket reductions), in the
     * same program order on every rank: NCCL wants one communicator's
     * operations in one order everywhere, never two at once from two
     * streams. Stage 1's whole-vector collectives run on the compute
     * stream while this one is idle (the backward waited for it). */
    cudaStream_t comm;
    cudaEvent_t ev_free[2], ev_gathered;
    int training;                    /* the forward in flight is fwd_bwd's: its backward gathers next */
    int reduced;                     /* stage 2+: a micro-batch was reduced into grads since zero_grads */
    float *rope_cos, *rope_sin;      /* [seq_len, head_dim/2] */
    cuda_adamw_seg *seg;
    int nseg;
    /* More than one rank (or SPOTRAIN_NCCL=1): the NCCL data plane. */
    cuda_nccl *nccl;
    double *loss_acc, *eval_acc, *sumsq, *sumsq_part;
    double *h_scalar;                /* pinned: one double read back */
    int32_t *h_tokens;               /* pinned staging: a micro-batch's ids, then its embedding index */
    int64_t h_tokens_cap;
    int32_t *h_cnt;                  /* [vocab] scratch of cuda_embed_index */
    int64_t emb_u;                   /* distinct tokens of the micro-batch in flight */
    char *arena;
    cuda_arena plan;
    int recompute;                   /* train.recompute = layers: the arena keeps layer inputs + one set */
    size_t used0;                    /* device bytes in use once the context existed, before any allocation */
    int64_t cap_b;
    int snap_recorded, stall_armed, stall_pending, snaps;
    double snap_bytes, snap_ms, stall_ms;
    void *pinned[CUDA_MAX_PINNED];
    int npinned;
    /* zero_grads zeroed only what no product overwrites (the embedding,
     * the norm weights); the next fwd_bwd's weight-gradient products write
     * the rest with beta 0. Anything else that reads or adds to the
     * gradients first zeroes them all (cuda_grads_settle). */
    int grads_fresh;
    /* SPOTRAIN_CUDA_PROFILE=1: events around the phases of a step, read
     * back after each (a sync per phase: for benchmarks, not training). */
    int profile;
    cudaEvent_t ev_ph[6];
    double ph_ms[4];
    int64_t ph_steps;
} cuda_impl;

static void cuda_prof_mark(cuda_impl *c, int i)
{
    if (c->profile)
        cudaEventRecord(c->ev_ph[i], c->stream);
}

static double cuda_prof_ms(cuda_impl *c, int a, int b)
{
    float ms = 0;
    cudaEventSynchronize(c->ev_ph[b]);
    return cudaEventElapsedTime(&ms, c->ev_ph[a], c->ev_ph[b]) == cudaSuccess ? ms : 0.0;
}

/* SPOTRAIN_CUDA_PROFILE=2: the kernel-class profile (common.cuh) of this
 * process's one backend; its split is logged at destroy, per step. */
static int cuda_kprof_open(cuda_impl *c)
{
    int rc = ST_OK;
    if (cuda_kp)
        return ST_OK;
    cuda_kprof *p = (cuda_kprof *)calloc(1, sizeof *p);
    if (!p)
        return util_fail(ST_SOFTWARE, "backend cuda: out of host memory");
    for (int i = 0; i < CUDA_KP_EVENTS; i++)
        if (cudaEventCreate(&p->ev[i]) != cudaSuccess) {
            for (int j = 0; j < i; j++)
                cudaEventDestroy(p->ev[j]);
            free(p);
            return util_fail(ST_SOFTWARE, "backend cuda: could not create the profile's events");
        }
    p->on = 1;
    p->cur = CUDA_K_OTHER;
    p->stream = c->stream;
    cuda_kp = p;
    return rc;
}

static void cuda_kprof_close(cuda_impl *c)
{
    cuda_kprof *p = cuda_kp;
    if (!p || !c->profile)
        return;
    cuda_kp_flush();
    double all = 0;
    for (int k = 0; k < CUDA_K_COUNT; k++)
        all += p->ms[k];
    if (c->ph_steps > 0 && all > 0) {
        char line[768];
        int o = snprintf(line, sizeof line, "backend cuda: kernel classes per step over %lld steps:",
                         (long long)c->ph_steps);
        for (int k = 0; k < CUDA_K_COUNT && o > 0 && (size_t)o < sizeof line; k++)
            o += snprintf(line + o, sizeof line - (size_t)o, "%s %s %.2f ms (%.1f%%)", k ? ";" : "", cuda_kp_name(k),
                          p->ms[k] / (double)c->ph_steps, 100.0 * p->ms[k] / all);
        util_log("%s", line);
    }
    for (int i = 0; i < CUDA_KP_EVENTS; i++)
        cudaEventDestroy(p->ev[i]);
    free(p);
    cuda_kp = NULL;
}

/* ---- probing ----------------------------------------------------------- */

static int cuda_driver_present(char *why, size_t cap)
{
    void *so = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!so) {
        snprintf(why, cap, "no NVIDIA driver (libcuda.so.1 not found)");
        return 0;
    }
    dlclose(so);
    return 1;
}

/* Compute capability 8.0 (Ampere) or newer: bf16 tensor cores and
 * cuBLASLt's bf16 products, and the oldest architecture this binary is
 * compiled for (sm_80). */
enum { CUDA_MIN_CC = 80 };

extern "C" int cuda_probe(char *why, size_t cap)
{
    int n = 0, dv = 0;
    if (!cuda_driver_present(why, cap))
        return CUDA_PROBE_NONE;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaErrorInsufficientDriver) {
        cudaDriverGetVersion(&dv);
        snprintf(why, cap, "the NVIDIA driver (CUDA %d.%d) is older than this build's CUDA runtime %d.%d; update "
                 "the driver", dv / 1000, dv % 1000 / 10, CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
        return CUDA_PROBE_UNUSABLE;
    }
    if (e != cudaSuccess) {
        snprintf(why, cap, "no usable GPU (cudaGetDeviceCount: %s)", cudaGetErrorString(e));
        return CUDA_PROBE_NONE;
    }
    if (n < 1) {
        snprintf(why, cap, "no CUDA device found");
        return CUDA_PROBE_NONE;
    }
    for (int i = 0; i < n; i++) {
        cudaDeviceProp p;
        if ((e = cudaGetDeviceProperties(&p, i)) != cudaSuccess) {
            snprintf(why, cap, "GPU %d: cudaGetDeviceProperties: %s", i, cudaGetErrorString(e));
            return CUDA_PROBE_UNUSABLE;
        }
        if (p.major * 10 + p.minor < CUDA_MIN_CC) {
            snprintf(why, cap, "GPU %d (%.100s) has compute capability %d.%d; the CUDA backend needs %d.%d or newer "
                     "(A100, A10, L4, H100...)", i, p.name, p.major, p.minor, CUDA_MIN_CC / 10, CUDA_MIN_CC % 10);
            return CUDA_PROBE_UNUSABLE;
        }
    }
    cuda_lt_api a;
    if (cuda_lt_open(&a, why, cap))
        return CUDA_PROBE_UNUSABLE;
    cuda_lt_close(&a);
    return CUDA_PROBE_OK;
}

extern "C" int cuda_available(char *why, size_t cap)
{
    return cuda_probe(why, cap) == CUDA_PROBE_OK;
}

extern "C" uint64_t cuda_device_memory(void)
{
    cudaDeviceProp p;
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1 || cudaGetDeviceProperties(&p, 0) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return (uint64_t)p.totalGlobalMem;
}

/* NCCL's version code (e.g. 22605 for 2.26.5), 0 when libnccl.so.2 does
 * not load. */
static int cuda_nccl_version(void)
{
    void *nccl = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    int v = 0;
    if (!nccl)
        return 0;
    int (*ver)(int *) = (int (*)(int *))dlsym(nccl, "ncclGetVersion");
    if (!ver || ver(&v) != 0)
        v = 0;
    dlclose(nccl);
    return v;
}

extern "C" void cuda_describe(FILE *f)
{
    static const int archs[] = {__CUDA_ARCH_LIST__};
    char why[256];
    fprintf(f, "cuda: compiled for");
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        fprintf(f, " sm_%d", archs[i] / 10);
    fprintf(f, " (+PTX); CUDA runtime %d.%d, static\n", CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
    if (!cuda_driver_present(why, sizeof why)) {
        fprintf(f, "cuda driver: %s\ndevices: none\n", why);
        return;
    }
    int dv = 0, n = 0;
    cudaDriverGetVersion(&dv);
    fprintf(f, "cuda driver: %d.%d\n", dv / 1000, dv % 1000 / 10);
    cuda_lt_api a;
    if (cuda_lt_open(&a, why, sizeof why) == 0) {
        fprintf(f, "cublasLt: %zu (%s)\n", a.version, a.path);
        cuda_lt_close(&a);
    } else {
        fprintf(f, "cublasLt: %s\n", why);
    }
    int nv = cuda_nccl_version();
    if (nv > 0) {
        fprintf(f, "nccl: %d.%d.%d (libnccl.so.2)\n", nv / 10000, nv / 100 % 100, nv % 100);
    } else {
        fprintf(f, "nccl: not found (libnccl.so.2; needed only for more than one GPU per job)\n");
    }
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        fprintf(f, "devices: none (%s)\n", cudaGetErrorString(e));
        return;
    }
    fprintf(f, "devices: %d\n", n);
    for (int i = 0; i < n; i++) {
        cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, i) == cudaSuccess)
            fprintf(f, "  %d: %s, %.1f GiB, sm_%d%d\n", i, p.name, (double)p.totalGlobalMem / (1 << 30), p.major,
                    p.minor);
    }
}

extern "C" void cuda_library_versions(char *out, size_t cap)
{
    int dv = 0;
    char why[256];
    size_t lt = 0;
    cuda_lt_api a;
    cudaDriverGetVersion(&dv);
    if (cuda_lt_open(&a, why, sizeof why) == 0) {
        lt = a.version;
        cuda_lt_close(&a);
    }
    int nv = cuda_nccl_version();
    char nccl[32] = "none";
    if (nv > 0)
        snprintf(nccl, sizeof nccl, "%d.%d.%d", nv / 10000, nv / 100 % 100, nv % 100);
    snprintf(out, cap, "cuda runtime %d.%d (static), driver %d.%d, cublasLt %zu, nccl %s", CUDART_VERSION / 1000,
             CUDART_VERSION % 1000 / 10, dv / 1000, dv % 1000 / 10, lt, nccl);
}

/* ---- buffers ----------------------------------------------------------- */

#define CUDA_ABUF(c, kind, layer) ((void *)((c)->arena + (c)->plan.off[cuda_arena_layer(&(c)->plan, layer, kind)]))
#define CUDA_GBUF(c, kind) ((void *)((c)->arena + (c)->plan.off[cuda_arena_global(&(c)->plan, kind)]))

static int cuda_reserve(cuda_impl *c, int64_t B)
{
    int rc = ST_OK;
    if (B <= c->cap_b)
        return ST_OK;
    if (c->arena) {
        CU_TRY(cudaStreamSynchronize(c->stream));
        cudaFree(c->arena);
        c->arena = NULL;
    }
    cuda_arena_free(&c->plan);
    c->cap_b = 0;
    CU_OK(cuda_arena_plan_rc(&c->plan, &c->s, B, c->prec, c->recompute));
    if (cudaMalloc((void **)&c->arena, c->plan.total) != cudaSuccess) {
        size_t fr = 0, tot = 0;
        cudaGetLastError();
        cudaMemGetInfo(&fr, &tot);
        rc = util_fail(ST_SOFTWARE, "backend cuda: %.2f GiB of activations for micro-batch %lld do not fit "
                       "(%.2f GiB free of %.2f); lower train.micro_batch (spotrain train --dry-run shows the plan)",
                       (double)c->plan.total / (1 << 30), (long long)B, (double)fr / (1 << 30),
                       (double)tot / (1 << 30));
        goto exit;
    }
    {
        int64_t need = B * (c->s.seq_len + 1) + 3 * B * c->s.seq_len + 2;
        if (need > c->h_tokens_cap) {
            CU_TRY(cudaEventSynchronize(c->ev_tokens));
            if (c->h_tokens)
                cudaFreeHost(c->h_tokens);
            c->h_tokens = NULL;
            c->h_tokens_cap = 0;
            CU_TRY(cudaMallocHost((void **)&c->h_tokens, (size_t)need * sizeof(int32_t)));
            c->h_tokens_cap = need;
        }
    }
    c->cap_b = B;
exit:
    return rc;
}

/* Host ids -> the arena, through the pinned staging buffer (waits for the
 * previous upload from it to finish before overwriting it). Training also
 * uploads the embedding backward's index of the B rows of T (+1) ids. */
static int cuda_upload_tokens(cuda_impl *c, const int32_t *tokens, int64_t B, int64_t T, int64_t stride, int index)
{
    int rc = ST_OK;
    size_t n = (size_t)(B * stride);
    CU_TRY(cudaEventSynchronize(c->ev_tokens));
    memcpy(c->h_tokens, tokens, n * sizeof *tokens);
    CU_TRY(cudaMemcpyAsync(CUDA_GBUF(c, CA_TOKENS), c->h_tokens, n * sizeof *tokens, cudaMemcpyHostToDevice,
                           c->stream));
    if (index) {
        int32_t *idx = c->h_tokens + n;
        c->emb_u = cuda_embed_index(tokens, B, T, stride, c->s.vocab, c->h_cnt, idx);
        size_t len = (size_t)(1 + 2 * c->emb_u + 1 + B * T);
        CU_TRY(cudaMemcpyAsync(CUDA_GBUF(c, CA_EMBIDX), idx, len * sizeof *idx, cudaMemcpyHostToDevice, c->stream));
    }
    CU_TRY(cudaEventRecord(c->ev_tokens, c->stream));
exit:
    return rc;
}

/* ---- the model --------------------------------------------------------- */

static size_t cuda_off(const backend *be, int64_t l, int kind) { return model_layer(be->L, l, kind)->offset; }

/* Where the GEMMs read parameter `flat offset` at: base + offset. Stage 3:
 * the gathered bucket (valid until the next gather). */
template <typename T> static T *cuda_w(cuda_impl *c)
{
    if (c->wbucket)
        return (T *)c->wbucket - c->wa;
    return c->work ? (T *)c->work : (T *)(void *)c->master;
}

/* Where the backward adds gradient `flat offset` at: the full vector, or
 * from stage 2 the open bucket. */
static float *cuda_g(cuda_impl *c) { return c->gbucket ? c->gbucket - c->ga : c->grads; }

/* ---- ZeRO buckets ------------------------------------------------------ */

/* This rank's range cut to [a, b); empty when they do not meet. */
static void cuda_cut(const backend *be, size_t a, size_t b, size_t *x, size_t *y)
{
    *x = be->lo > a ? be->lo : a;
    *y = be->hi < b ? be->hi : b;
    *y = *y > *x ? *y : *x;
}

/* Stage 3: bucket k's span [a, b) into buffer i: this rank's part copied
 * in from the shard, the rest gathered from the peers (pure data
 * movement), started on stream s (cuda_gather_wait waits for it). */
static int cuda_fill_bucket(backend *be, int64_t k, int i, cudaStream_t s)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    size_t a, b, x, y, es = c->work ? cuda_prec_bytes(c->prec) : sizeof(float);
    const char *src = c->work ? (const char *)c->work : (const char *)c->master;
    char *dst = (char *)c->wbuf[i];
    int rc = ST_OK;
    model_bucket_span(be->L, k, &a, &b);
    cuda_cut(be, a, b, &x, &y);
    if (y > x)
        CU_TRY(cudaMemcpyAsync(dst + (x - a) * es, src + (x - be->lo) * es, (y - x) * es, cudaMemcpyDeviceToDevice,
                               s));
    c->wk[i] = k;
    if (c->nccl)
        rc = cuda_nccl_allgather_span_start(c->nccl, dst, be->L->n_floats, a, b, es, s);
    else
        CU_TRY(cudaEventRecord(c->ev_gathered, s));
    c->gathers++;
exit:
    return rc;
}

/* Stage 3: the compute stream's work queued from now on comes after the
 * gather just started on the comm stream: a bounded host wait through
 * NCCL (as every wait for peers), or an event without peers. */
static int cuda_gather_wait(cuda_impl *c)
{
    int rc = ST_OK;
    if (c->nccl)
        CU_OK(cuda_nccl_allgather_span_wait(c->nccl));
    else
        CU_TRY(cudaStreamWaitEvent(c->stream, c->ev_gathered, 0));
exit:
    return rc;
}

/* Stage 3: makes bucket k the one cuda_w reads (until the next call), and
 * starts gathering bucket `next` (CUDA_NO_BUCKET: none) into the other of
 * the two buffers on the comm stream, so that it moves while the compute
 * stream runs bucket k's kernels. The other buffer is overwritten only
 * after the compute stream is done with what it queued on it (ev_free).
 * A started gather is waited for (bounded, as every wait for peers) when
 * its bucket is asked for; one that was started for a bucket not asked
 * for next is waited for and dropped. Every rank makes the same calls in
 * the same order, so NCCL sees the same sequence of collectives. */
static int cuda_gather_bucket(backend *be, int64_t k, int64_t next)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    int rc = ST_OK, other;
    size_t a, b;
    if (c->zero < 3)
        return ST_OK;
    /* Everything queued so far read the current buffer. */
    CU_TRY(cudaEventRecord(c->ev_free[c->wcur], c->stream));
    if (c->pend != CUDA_NO_BUCKET) {
        CU_OK(cuda_gather_wait(c));
        if (c->pend == k)
            c->wcur ^= 1;
        c->pend = CUDA_NO_BUCKET;
    }
    if (c->wk[c->wcur] != k) {
        /* Not prefetched: gathered now, on the comm stream too (NCCL's one
         * stream), after the work queued so far on the other buffer, and
         * waited for at once. */
        other = c->wcur ^ 1;
        CU_TRY(cudaEventRecord(c->ev_free[other], c->stream));
        CU_TRY(cudaStreamWaitEvent(c->comm, c->ev_free[other], 0));
        CU_OK(cuda_fill_bucket(be, k, other, c->comm));
        CU_OK(cuda_gather_wait(c));
        c->wcur = other;
    }
    model_bucket_span(be->L, k, &a, &b);
    c->wa = a;
    c->wbucket = c->wbuf[c->wcur];
    if (next == CUDA_NO_BUCKET)
        goto exit;
    other = c->wcur ^ 1;
    CU_TRY(cudaStreamWaitEvent(c->comm, c->ev_free[other], 0));
    CU_OK(cuda_fill_bucket(be, next, other, c->comm));
    c->pend = next;
exit:
    return rc;
}

/* Stage 2+: bucket k's gradients go into a zeroed gradient bucket (as
 * stage 1's zeroed full vector), so every kernel adds the same floats:
 * once the comm stream is done with the bucket the buffer held: with two,
 * the other one (the bucket closed two buckets ago, whose exchange ran
 * while the backward went on); with one ([comm] overlap = false, or one
 * rank), the same one, so the bucket just closed blocks this one. */
static int cuda_open_bucket(backend *be, int64_t k)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    size_t a, b;
    int rc = ST_OK;
    if (c->zero < 2)
        return ST_OK;
    model_bucket_span(be->L, k, &a, &b);
    c->gcur ^= c->two;
    if (b - a > c->gcap[c->gcur])
        c->gcur = 0;   /* the embedding or lm_head: gbuf[0] once its exchange is done, below */
    c->gbucket = c->gbuf[c->gcur];
    /* SPOTRAIN_TEST_CUDA_UNORDERED=1 drops this wait: the emulator's
     * stream-hazard check must then fail the run (a test proves it). */
    if (!c->unordered)
        CU_TRY(cudaStreamWaitEvent(c->stream, c->ev_gfree[c->gcur], 0));
    CU_TRY(cudaMemsetAsync(c->gbucket, 0, (b - a) * sizeof(float), c->stream));
    c->ga = a;
exit:
    return rc;
}

__global__ void cuda_add_kernel(float *dst, const float *src, size_t n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        dst[i] += src[i];
}

/* Stage 2+: bucket k reduce-scattered in rank order (the CPU rule); this
 * rank's part lands in its range of grads: copied by the step's first
 * micro-batch (stage 1's value exactly), added by later ones. Queued on
 * the comm stream after the compute stream's last write to the bucket,
 * not waited for: the backward goes on into the other buffer meanwhile.
 * The same kernels in the same order as on one stream: the same bits.
 * On the emulator (tests/emu) streams run only when something waits for
 * them, and each NCCL round completes before the host goes on (its
 * ncclCommGetAsyncError is stricter than NCCL's), so no overlap shows
 * there; its stream-hazard check proves the events order every access
 * across the two streams (tests/emu/cli_zero_emu.sh drops one wait and
 * expects the failure). */
static int cuda_close_bucket(backend *be, int64_t k)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    size_t a, b, x, y;
    int rc = ST_OK;
    if (c->zero < 2)
        return ST_OK;
    model_bucket_span(be->L, k, &a, &b);
    CU_TRY(cudaEventRecord(c->ev_closed, c->stream));
    CU_TRY(cudaStreamWaitEvent(c->comm, c->ev_closed, 0));
    if (c->nccl)
        CU_OK(cuda_nccl_reduce_scatter_span_start(c->nccl, c->gbucket, be->L->n_floats, a, b, c->comm));
    cuda_cut(be, a, b, &x, &y);
    if (y > x && !c->reduced) {
        CU_TRY(cudaMemcpyAsync(c->grads + (x - be->lo), c->gbucket + (x - a), (y - x) * sizeof(float),
                               cudaMemcpyDeviceToDevice, c->comm));
    } else if (y > x) {
        cuda_add_kernel<<<cuda_blocks((int64_t)(y - x), 256), 256, 0, c->comm>>>(c->grads + (x - be->lo),
                                                                              c->gbucket + (x - a), y - x);
        CU_LAUNCHED();
    }
    CU_TRY(cudaEventRecord(c->ev_gfree[c->gcur], c->comm));
    c->exchanges++;
    c->overlapped += c->two;
exit:
    return rc;
}

/* Stage 2+, after the backward's last bucket: the compute stream (the
 * optimizer, the norm, the next micro-batch) comes after every exchange;
 * with peers the host also waits for them, bounded by the comm timeout,
 * so a vanished peer ends in exit 86 here, not in an unbounded sync. */
static int cuda_buckets_drain(cuda_impl *c)
{
    int rc = ST_OK;
    if (c->zero < 2)
        return ST_OK;
    if (c->nccl)
        CU_OK(cuda_nccl_stream_wait(c->nccl, c->comm, "gradient reduce-scatter"));
    CU_TRY(cudaEventRecord(c->ev_reduced, c->comm));
    CU_TRY(cudaStreamWaitEvent(c->stream, c->ev_reduced, 0));
exit:
    return rc;
}

/* Layer l's forward from its input CA_RES(l) into its activations; next
 * (the layer's output, the next layer's input) is written unless NULL: the
 * backward's rerun under recompute needs everything but the output and
 * SwiGLU's h, which the SwiGLU backward writes from the gate and up values
 * it loads anyway (cuda/swiglu.cuh). The same kernels on the same
 * input: the same bits as the first pass. */
template <typename T>
static int cuda_layer_forward(backend *be, const cuda_dims *d, int64_t l, float *next)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    cudaStream_t s = c->stream;
    cuda_gemm_ctx *x = &c->gemm;
    T *W = cuda_w<T>(c);
    T *qkv = (T *)CUDA_GBUF(c, CA_QKV);
    float *res = (float *)CUDA_ABUF(c, CA_RES, l), *mid = (float *)CUDA_ABUF(c, CA_MID, l);
    T *xn1 = (T *)CUDA_ABUF(c, CA_XN1, l), *xn2 = (T *)CUDA_ABUF(c, CA_XN2, l), *ao = (T *)CUDA_ABUF(c, CA_AO, l);
    T *q = (T *)CUDA_ABUF(c, CA_Q, l), *k = (T *)CUDA_ABUF(c, CA_K, l), *v = (T *)CUDA_ABUF(c, CA_V, l);
    T *gu = (T *)CUDA_ABUF(c, CA_GU, l), *h = (T *)CUDA_ABUF(c, CA_H, l);
    cuda_gemm g;
    int rc = ST_OK;
    CU_OK(cuda_rmsnorm_forward<T>(s, xn1, (float *)CUDA_ABUF(c, CA_RS1, l), res, W + cuda_off(be, l, MODEL_LN1),
                                  d->N, d->D, c->s.norm_eps));
    g = cuda_gemm_plan(d, CUDA_G_QKV, 0);
    CU_OK(cuda_gemm_run(x, &g, xn1, W + cuda_off(be, l, MODEL_Q), NULL, qkv));
    CU_OK(cuda_rope_forward<T>(s, q, k, v, qkv, c->rope_cos, c->rope_sin, d));
    CU_OK_AS(s, CUDA_K_ATTN, cuda_attention_forward<T>(s, d, ao, (float *)CUDA_ABUF(c, CA_LSE, l), q, k, v));
    g = cuda_gemm_plan(d, CUDA_G_O, 0);
    CU_OK(cuda_gemm_run(x, &g, ao, W + cuda_off(be, l, MODEL_O), res, mid));
    CU_OK(cuda_rmsnorm_forward<T>(s, xn2, (float *)CUDA_ABUF(c, CA_RS2, l), mid, W + cuda_off(be, l, MODEL_LN2),
                                  d->N, d->D, c->s.norm_eps));
    g = cuda_gemm_plan(d, CUDA_G_GU, 0);
    CU_OK(cuda_gemm_run(x, &g, xn2, W + cuda_off(be, l, MODEL_GATE), NULL, gu));
    if (next) {
        CU_OK(cuda_swiglu_forward<T>(s, h, gu, d->N, d->F));
        g = cuda_gemm_plan(d, CUDA_G_DOWN, 0);
        CU_OK(cuda_gemm_run(x, &g, h, W + cuda_off(be, l, MODEL_DOWN), mid, next));
    }
exit:
    return rc;
}

template <typename T>
static int cuda_trunk_forward(backend *be, const cuda_dims *d, int64_t stride)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    const model_layout *L = be->L;
    cudaStream_t s = c->stream;
    T *W = cuda_w<T>(c);
    const int32_t *tok = (const int32_t *)CUDA_GBUF(c, CA_TOKENS);
    int rc = ST_OK;
    CU_OK(cuda_gather_bucket(be, -1, 0));
    W = cuda_w<T>(c);
    CU_OK(cuda_encoder_forward(s, (float *)CUDA_ABUF(c, CA_RES, 0), W + model_embed(L)->offset, tok, d->N,
                               d->T, stride, d->D));
    for (int64_t l = 0; l < d->L; l++) {
        CU_OK(cuda_gather_bucket(be, l, l + 1));
        float *next = l + 1 < d->L ? (float *)CUDA_ABUF(c, CA_RES, l + 1) : (float *)CUDA_GBUF(c, CA_FINAL_RES);
        CU_OK(cuda_layer_forward<T>(be, d, l, next));
    }
    /* The final norm and lm_head stay gathered through the head and its
     * backward. */
    CU_OK(cuda_gather_bucket(be, d->L, c->training && d->L > 0 ? d->L - 1 : CUDA_NO_BUCKET));
    W = cuda_w<T>(c);
    CU_OK(cuda_rmsnorm_forward<T>(s, (T *)CUDA_GBUF(c, CA_XNF), (float *)CUDA_GBUF(c, CA_RSF),
                                  (float *)CUDA_GBUF(c, CA_FINAL_RES), W + model_final_norm(L)->offset, d->N,
                                  d->D, c->s.norm_eps));
exit:
    return rc;
}

/* Classifier + cross-entropy by row chunks; with grad, dlogits feed the
 * lm_head gradient and dxn (the final norm's output gradient): one product
 * each over the whole micro-batch when the arena keeps every row's dlogits
 * (cuda_arena_dlogits_whole), per chunk otherwise. The summed loss is
 * added to acc on the device. */
template <typename T>
static int cuda_head(backend *be, const cuda_dims *d, int grad, float grad_scale, double *acc)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    cuda_gemm_ctx *x = &c->gemm;
    size_t lm = model_lm_head(be->L)->offset;
    T *W = cuda_w<T>(c), *xnf = (T *)CUDA_GBUF(c, CA_XNF), *dz = (T *)CUDA_GBUF(c, CA_DLOGITS);
    float *z = (float *)CUDA_GBUF(c, CA_LOGITS), *dxn = (float *)CUDA_GBUF(c, CA_DXN);
    double *rowloss = (double *)CUDA_GBUF(c, CA_ROWLOSS);
    const int32_t *tok = (const int32_t *)CUDA_GBUF(c, CA_TOKENS);
    int whole = grad && cuda_arena_dlogits_whole(&c->plan, d);
    int rc = ST_OK;
    cuda_gemm g;
    for (int64_t r0 = 0; r0 < d->N; r0 += d->chunk_rows) {
        int64_t rows = d->N - r0 < d->chunk_rows ? d->N - r0 : d->chunk_rows;
        T *dzc = whole ? dz + r0 * d->V : dz;
        g = cuda_gemm_plan(d, CUDA_G_LOGITS, rows);
        CU_OK(cuda_gemm_run(x, &g, xnf + r0 * d->D, W + lm, NULL, z));
        CU_OK(cuda_crossentropy<T>(c->stream, rowloss, dzc, z, tok, r0, rows, d->T, d->V, grad_scale, grad));
        if (!grad || whole)
            continue;
        g = cuda_gemm_plan(d, CUDA_G_DWLM, rows);
        {
            /* after zero_grads the first chunk overwrites, the rest add */
            const char *lo = x->ow_lo;
            if (r0 > 0)
                x->ow_lo = NULL;
            rc = cuda_gemm_run(x, &g, dz, xnf + r0 * d->D, cuda_g(c) + lm, cuda_g(c) + lm);
            x->ow_lo = lo;
            CU_OK(rc);
        }
        g = cuda_gemm_plan(d, CUDA_G_DXNF, rows);
        CU_OK(cuda_gemm_run(x, &g, dz, W + lm, NULL, dxn + r0 * d->D));
    }
    if (whole) {
        g = cuda_gemm_plan(d, CUDA_G_DWLM, d->N);
        CU_OK(cuda_gemm_run(x, &g, dz, xnf, cuda_g(c) + lm, cuda_g(c) + lm));
        g = cuda_gemm_plan(d, CUDA_G_DXNF, d->N);
        CU_OK(cuda_gemm_run(x, &g, dz, W + lm, NULL, dxn));
    }
    CU_OK(cuda_loss_sum(c->stream, acc, rowloss, d->N));
exit:
    return rc;
}

template <typename T>
static int cuda_trunk_backward(backend *be, const cuda_dims *d)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    const model_layout *L = be->L;
    cudaStream_t s = c->stream;
    cuda_gemm_ctx *x = &c->gemm;
    T *W = cuda_w<T>(c);
    float *G = cuda_g(c);
    float *dres = (float *)CUDA_GBUF(c, CA_DRES), *dxn = (float *)CUDA_GBUF(c, CA_DXN), *dh = (float *)CUDA_GBUF(c, CA_DH);
    T *dres_ct = (T *)CUDA_GBUF(c, CA_DRES_CT), *dgu = (T *)CUDA_GBUF(c, CA_DGU), *dao = (T *)CUDA_GBUF(c, CA_DAO);
    T *dqkv = (T *)CUDA_GBUF(c, CA_QKV);
    double *part = (double *)CUDA_GBUF(c, CA_NORMPART);
    cuda_attn_scratch as = {CUDA_GBUF(c, CA_DQ), CUDA_GBUF(c, CA_DK), CUDA_GBUF(c, CA_DV),
                            (float *)CUDA_GBUF(c, CA_DELTA)};
    size_t fn = model_final_norm(L)->offset;
    cuda_gemm g;
    int rc = ST_OK;
    CU_OK(cuda_rmsnorm_backward<T>(s, dres, dres_ct, G + fn, part, dxn, (float *)CUDA_GBUF(c, CA_FINAL_RES),
                                   (float *)CUDA_GBUF(c, CA_RSF), W + fn, d->N, d->D, d->norm_rows, 0));
    CU_OK(cuda_close_bucket(be, d->L));
    for (int64_t l = d->L - 1; l >= 0; l--) {
        CU_OK(cuda_gather_bucket(be, l, l > 0 ? l - 1 : CUDA_NO_BUCKET));
        CU_OK(cuda_open_bucket(be, l));
        W = cuda_w<T>(c);
        G = cuda_g(c);
        size_t od = cuda_off(be, l, MODEL_DOWN), og = cuda_off(be, l, MODEL_GATE), oo = cuda_off(be, l, MODEL_O);
        size_t oq = cuda_off(be, l, MODEL_Q), o1 = cuda_off(be, l, MODEL_LN1), o2 = cuda_off(be, l, MODEL_LN2);
        /* Recompute: the one set holds the last layer's activations from
         * the forward; every other layer's are rebuilt from its input. */
        int rerun = c->plan.recompute && l + 1 < d->L;
        if (rerun)
            CU_OK(cuda_layer_forward<T>(be, d, l, NULL));
        /* MLP; a rerun layer's h comes from the SwiGLU backward, before
         * the down projection's weight gradient reads it */
        g = cuda_gemm_plan(d, CUDA_G_DH, 0);
        CU_OK(cuda_gemm_run(x, &g, dres_ct, W + od, NULL, dh));
        CU_OK(cuda_swiglu_backward<T>(s, dgu, rerun ? (T *)CUDA_ABUF(c, CA_H, l) : (T *)NULL, dh,
                                      (const T *)CUDA_ABUF(c, CA_GU, l), d->N, d->F));
        g = cuda_gemm_plan(d, CUDA_G_DWD, 0);
        CU_OK(cuda_gemm_run(x, &g, dres_ct, CUDA_ABUF(c, CA_H, l), G + od, G + od));
        g = cuda_gemm_plan(d, CUDA_G_DWGU, 0);
        CU_OK(cuda_gemm_run(x, &g, dgu, CUDA_ABUF(c, CA_XN2, l), G + og, G + og));
        g = cuda_gemm_plan(d, CUDA_G_DXN2, 0);
        CU_OK(cuda_gemm_run(x, &g, dgu, W + og, NULL, dxn));
        CU_OK(cuda_rmsnorm_backward<T>(s, dres, dres_ct, G + o2, part, dxn, (float *)CUDA_ABUF(c, CA_MID, l),
                                       (float *)CUDA_ABUF(c, CA_RS2, l), W + o2, d->N, d->D, d->norm_rows, 1));
        /* attention */
        g = cuda_gemm_plan(d, CUDA_G_DAO, 0);
        CU_OK(cuda_gemm_run(x, &g, dres_ct, W + oo, NULL, dao));
        g = cuda_gemm_plan(d, CUDA_G_DWO, 0);
        CU_OK(cuda_gemm_run(x, &g, dres_ct, CUDA_ABUF(c, CA_AO, l), G + oo, G + oo));
        CU_OK_AS(s, CUDA_K_ATTN, cuda_attention_backward<T>(s, d, &as, dao, (const T *)CUDA_ABUF(c, CA_AO, l),
                                         (const float *)CUDA_ABUF(c, CA_LSE, l), (const T *)CUDA_ABUF(c, CA_Q, l),
                                         (const T *)CUDA_ABUF(c, CA_K, l), (const T *)CUDA_ABUF(c, CA_V, l)));
        CU_OK(cuda_rope_backward<T>(s, dqkv, (const T *)as.dq, (const T *)as.dk, (const T *)as.dv, c->rope_cos,
                                    c->rope_sin, d));
        g = cuda_gemm_plan(d, CUDA_G_DWQKV, 0);
        CU_OK(cuda_gemm_run(x, &g, dqkv, CUDA_ABUF(c, CA_XN1, l), G + oq, G + oq));
        g = cuda_gemm_plan(d, CUDA_G_DXN1, 0);
        CU_OK(cuda_gemm_run(x, &g, dqkv, W + oq, NULL, dxn));
        CU_OK(cuda_rmsnorm_backward<T>(s, dres, dres_ct, G + o1, part, dxn, (float *)CUDA_ABUF(c, CA_RES, l),
                                       (float *)CUDA_ABUF(c, CA_RS1, l), W + o1, d->N, d->D, d->norm_rows, 1));
        CU_OK(cuda_close_bucket(be, l));
    }
    CU_OK(cuda_open_bucket(be, -1));
    G = cuda_g(c);
    CU_OK(cuda_encoder_backward(s, G + model_embed(L)->offset, dres, (const int32_t *)CUDA_GBUF(c, CA_EMBIDX),
                                c->emb_u, d->D));
    CU_OK(cuda_close_bucket(be, -1));
    CU_OK(cuda_buckets_drain(c));
exit:
    return rc;
}

/* Runs f<T> for the backend's compute type. */
#define CUDA_DISPATCH(c, f, ...)                                                                       \
    ((c)->prec == CUDA_BF16   ? f<__nv_bfloat16>(__VA_ARGS__)                                          \
     : (c)->prec == CUDA_FP16 ? f<__half>(__VA_ARGS__)                                                 \
                              : f<float>(__VA_ARGS__))

template <typename T>
static int cuda_step(backend *be, const cuda_dims *d, int64_t stride, int grad, float grad_scale, double *acc)
{
    int rc = cuda_trunk_forward<T>(be, d, stride);
    if (rc == ST_OK)
        rc = cuda_head<T>(be, d, grad, grad_scale, acc);
    if (rc == ST_OK && grad)
        rc = cuda_trunk_backward<T>(be, d);
    return rc;
}

/* ---- the backend operations ---------------------------------------------- */

static int cuda_fwd_bwd(backend *be, const int32_t *tokens, int64_t B, float grad_scale)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    int64_t T = c->s.seq_len;
    cuda_dims d;
    int rc = ST_OK;
    c->training = 1;
    CU_OK(backend_check_tokens(be, tokens, B * (T + 1)));
    CU_OK(cuda_reserve(c, B));
    CU_OK(cuda_upload_tokens(c, tokens, B, T, T + 1, 1));
    cuda_dims_init(&d, &c->s, B);
    if (c->grads_fresh) {
        c->gemm.ow_lo = (const char *)c->grads;
        c->gemm.ow_hi = (const char *)(c->grads + be->L->n_floats);
        c->grads_fresh = 0;
    }
    cuda_prof_mark(c, 0);
    CU_OK(CUDA_DISPATCH(c, cuda_trunk_forward, be, &d, T + 1));
    cuda_prof_mark(c, 1);
    CU_OK(cuda_open_bucket(be, c->s.n_layers));   /* lm_head's gradient: the head's */
    CU_OK(CUDA_DISPATCH(c, cuda_head, be, &d, 1, grad_scale, c->loss_acc));
    cuda_prof_mark(c, 2);
    CU_OK(CUDA_DISPATCH(c, cuda_trunk_backward, be, &d));
    c->reduced = 1;
    cuda_prof_mark(c, 3);
    if (c->profile) {
        c->ph_ms[0] += cuda_prof_ms(c, 0, 1);
        c->ph_ms[1] += cuda_prof_ms(c, 1, 2);
        c->ph_ms[2] += cuda_prof_ms(c, 2, 3);
    }
exit:
    c->gemm.ow_lo = c->gemm.ow_hi = NULL;
    return rc;
}

static int cuda_take_loss(backend *be, double *loss_sum)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    int rc = ST_OK;
    CU_TRY(cudaMemcpyAsync(c->h_scalar, c->loss_acc, sizeof(double), cudaMemcpyDeviceToHost, c->stream));
    CU_TRY(cudaMemsetAsync(c->loss_acc, 0, sizeof(double), c->stream));
    CU_TRY(cudaStreamSynchronize(c->stream));
    *loss_sum = *c->h_scalar;
    if (c->stall_pending) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, c->ev_stall0, c->ev_stall1) == cudaSuccess)
            c->stall_ms += ms;
        c->stall_pending = 0;
    }
exit:
    return rc;
}

static int cuda_eval(backend *be, const int32_t *tokens, int64_t B, double *loss_sum)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    int64_t T = c->s.seq_len;
    cuda_dims d;
    int rc = ST_OK;
    c->training = 0;
    CU_OK(backend_check_tokens(be, tokens, B * (T + 1)));
    CU_OK(cuda_reserve(c, B));
    CU_OK(cuda_upload_tokens(c, tokens, B, T, T + 1, 0));
    cuda_dims_init(&d, &c->s, B);
    CU_TRY(cudaMemsetAsync(c->eval_acc, 0, sizeof(double), c->stream));
    CU_OK(CUDA_DISPATCH(c, cuda_step, be, &d, T + 1, 0, 0.0f, c->eval_acc));
    CU_TRY(cudaMemcpyAsync(c->h_scalar, c->eval_acc, sizeof(double), cudaMemcpyDeviceToHost, c->stream));
    CU_TRY(cudaStreamSynchronize(c->stream));
    *loss_sum += *c->h_scalar;
exit:
    return rc;
}

template <typename T> static int cuda_last_logits(backend *be, const cuda_dims *d, int64_t T_)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    int rc = cuda_trunk_forward<T>(be, d, T_);
    if (rc != ST_OK)
        return rc;
    cuda_gemm g = cuda_gemm_plan(d, CUDA_G_LOGITS, 1);
    return cuda_gemm_run(&c->gemm, &g, (T *)CUDA_GBUF(c, CA_XNF) + (T_ - 1) * d->D,
                         cuda_w<T>(c) + model_lm_head(be->L)->offset, NULL, CUDA_GBUF(c, CA_LOGITS));
}

static int cuda_logits(backend *be, const int32_t *tokens, int64_t T, float *out)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    int rc = ST_OK;
    if (T < 1 || T > c->s.seq_len)
        return util_fail(ST_CONFIG, "sampling context of %lld tokens is outside 1..model.seq_len (%lld)",
                         (long long)T, (long long)c->s.seq_len);
    c->training = 0;
    CU_OK(backend_check_tokens(be, tokens, T));
    CU_OK(cuda_reserve(c, 1));
    CU_OK(cuda_upload_tokens(c, tokens, 1, T, T, 0));
    {
        model_shape s = c->s;
        s.seq_len = T;
        cuda_dims d;
        cuda_dims_init(&d, &s, 1);
        CU_OK(CUDA_DISPATCH(c, cuda_last_logits, be, &d, T));
    }
    CU_TRY(cudaMemcpyAsync(out, CUDA_GBUF(c, CA_LOGITS), (size_t)c->s.vocab * sizeof(float), cudaMemcpyDeviceToHost,
                           c->stream));
    CU_TRY(cudaStreamSynchronize(c->stream));
exit:
    return rc;
}

/* The gradients a product does not write with beta 0 after zero_grads:
 * the embedding (its backward adds the rows of the tokens seen) and the
 * norm weights (their partial sums are added). Everything else (q, k, v,
 * o, gate, up, down per layer, lm_head) is one product's output. */
static int cuda_zero_grads(backend *be)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    const model_layout *L = be->L;
    const model_param *e = model_embed(L), *f = model_final_norm(L);
    int rc = ST_OK;
    /* Stages 2 and 3 reduce bucket by bucket into a range-sized shard that
     * the reductions add to: zeroed whole, no products left to overwrite. */
    if (c->zero >= 2 || getenv("SPOTRAIN_CUDA_ZERO_ALL")) {   /* the env: tests compare with the whole memset */
        CU_TRY(cudaMemsetAsync(c->grads, 0, c->glen * sizeof(float), c->stream));
        c->grads_fresh = 0;
        c->reduced = 0;
        return ST_OK;
    }
    CU_TRY(cudaMemsetAsync(c->grads + e->offset, 0, e->numel * sizeof(float), c->stream));
    for (int64_t l = 0; l < c->s.n_layers; l++)
        for (int kind = MODEL_LN1; kind <= MODEL_LN2; kind++) {
            const model_param *q = model_layer(L, l, kind);
            CU_TRY(cudaMemsetAsync(c->grads + q->offset, 0, q->numel * sizeof(float), c->stream));
        }
    CU_TRY(cudaMemsetAsync(c->grads + f->offset, 0, f->numel * sizeof(float), c->stream));
    c->grads_fresh = 1;
    c->reduced = 0;
exit:
    return rc;
}

/* Before anything but fwd_bwd touches gradients that zero_grads left to
 * the products: zero them all (a rank with no micro-batch, a test reading
 * them), so they read as zero_grads promised. Stage 1 only (the full
 * vector); stages 2 and 3 never leave any. */
static int cuda_grads_settle(cuda_impl *c)
{
    int rc = ST_OK;
    if (c->grads_fresh) {
        CU_TRY(cudaMemsetAsync(c->grads, 0, c->glen * sizeof(float), c->stream));
        c->grads_fresh = 0;
    }
exit:
    return rc;
}

/* NCCL moves the bytes, the rank-order sum kernel adds (nccl.cu): the CPU
 * rule. One rank without SPOTRAIN_NCCL: its range is the whole vector.
 * From stage 2 the backward has reduced every bucket already. */
static int cuda_reduce_grads(backend *be)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    int rc = cuda_grads_settle(c);
    if (rc != ST_OK)
        return rc;
    if (!c->nccl || c->zero >= 2)
        return ST_OK;
    int kp = cuda_kp_enter(c->stream, CUDA_K_COMM);
    rc = cuda_nccl_reduce_scatter(c->nccl, c->grads, be->L->n_floats, c->stream);
    cuda_kp_leave(c->stream, kp);
    return rc;
}

/* What the next forward reads, whole on every rank: the working copy under
 * bf16/fp16 (half the bytes of fp32; the embedding and norm kernels read
 * it too), the master otherwise. Stage 3 gathers bucket by bucket inside
 * the forward and backward instead. */
static int cuda_gather_params(backend *be)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    if (!c->nccl || c->zero >= 3)
        return ST_OK;
    int kp = cuda_kp_enter(c->stream, CUDA_K_COMM), rc;
    if (c->work) {
        rc = cuda_nccl_allgather(c->nccl, c->work, be->L->n_floats, cuda_prec_bytes(c->prec), c->stream);
    } else {
        rc = cuda_nccl_allgather(c->nccl, c->master, be->L->n_floats, sizeof(float), c->stream);
    }
    cuda_kp_leave(c->stream, kp);
    return rc;
}

static int cuda_grad_sumsq(backend *be, double *out)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    int rc = ST_OK;
    CU_OK(cuda_grads_settle(c));
    cuda_prof_mark(c, 4);
    CU_OK(cuda_sumsq(c->stream, c->sumsq, c->sumsq_part, c->grads + (be->lo - c->goff), (int64_t)(be->hi - be->lo)));
    CU_TRY(cudaMemcpyAsync(c->h_scalar, c->sumsq, sizeof(double), cudaMemcpyDeviceToHost, c->stream));
    CU_TRY(cudaStreamSynchronize(c->stream));
    *out = *c->h_scalar;
exit:
    return rc;
}

static int cuda_adamw_op(backend *be, const optim_hparams *h, double lr, double clip_scale, int64_t step)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    elem_adamw_k k = optim_adamw_consts(h, lr, clip_scale, step);
    size_t lo = be->lo, n = be->hi - be->lo, wl = lo - c->woff;
    float *p = c->master + (lo - c->moff), *g = c->grads + (lo - c->goff);
    int rc = ST_OK;
    CU_OK(cuda_grads_settle(c));
    c->wk[0] = c->wk[1] = CUDA_NO_BUCKET;   /* stage 3: the gathered buckets go stale */
    /* The snapshot copy of the previous state must finish before the
     * update overwrites it; the events time that wait (the compute stall). */
    if (c->snap_recorded) {
        int timed = c->stall_armed;
        if (timed)
            CU_TRY(cudaEventRecord(c->ev_stall0, c->stream));
        CU_TRY(cudaStreamWaitEvent(c->stream, c->ev_snap, 0));
        if (timed) {
            CU_TRY(cudaEventRecord(c->ev_stall1, c->stream));
            c->stall_armed = 0;
            c->stall_pending = 1;
        }
    }
    if (c->prec == CUDA_BF16)
        rc = cuda_adamw<__nv_bfloat16>(c->stream, p, (__nv_bfloat16 *)c->work + wl, g, c->m, c->v, c->seg, c->nseg,
                                       (int64_t)n, &k, lr, h->weight_decay);
    else if (c->prec == CUDA_FP16)
        rc = cuda_adamw<__half>(c->stream, p, (__half *)c->work + wl, g, c->m, c->v, c->seg, c->nseg, (int64_t)n, &k,
                                lr, h->weight_decay);
    else
        rc = cuda_adamw<float>(c->stream, p, (float *)NULL, g, c->m, c->v, c->seg, c->nseg, (int64_t)n, &k, lr,
                               h->weight_decay);
    cuda_prof_mark(c, 5);
    if (c->profile && rc == ST_OK) {
        c->ph_ms[3] += cuda_prof_ms(c, 4, 5);
        c->ph_steps++;
        cuda_kp_flush();
    }
exit:
    return rc;
}

static int cuda_range_ok(const backend *be, int array, size_t off, size_t n, float **base)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    size_t N = be->L->n_floats;
    if (array == BK_PARAMS || array == BK_GRADS) {
        size_t a = array == BK_PARAMS ? c->moff : c->goff, len = array == BK_PARAMS ? c->mlen : c->glen;
        if (off > N || n > N - off)
            return util_fail(ST_SOFTWARE, "backend cuda: range [%zu, +%zu) outside the %zu parameters", off, n, N);
        if (n > 0 && (off < a || off + n > a + len))
            return util_fail(ST_SOFTWARE, "backend cuda: fp32 %s [%zu, +%zu) asked for, but with %d ranks under %s "
                             "and ZeRO stage %d this rank holds [%zu, %zu) only; read a checkpoint instead",
                             array == BK_PARAMS ? "parameters" : "gradients", off, n, be->world,
                             cuda_prec_name(c->prec), c->zero, a, a + len);
        *base = (array == BK_PARAMS ? c->master : c->grads) + (n > 0 ? off - a : 0);
        return ST_OK;
    }
    if ((array != BK_ADAM_M && array != BK_ADAM_V) || off < be->lo || off > be->hi || n > be->hi - off)
        return util_fail(ST_SOFTWARE, "backend cuda: array %d range [%zu, +%zu) outside this rank's [%zu, %zu)",
                         array, off, n, be->lo, be->hi);
    *base = (array == BK_ADAM_M ? c->m : c->v) + (off - be->lo);
    return ST_OK;
}

/* n fp32 values at dst (device) into the working copy at flat offset off. */
static int cuda_to_work(cuda_impl *c, size_t off, const float *dst, size_t n)
{
    char *w = (char *)c->work + (off - c->woff) * cuda_prec_bytes(c->prec);
    if (c->prec == CUDA_BF16)
        return cuda_convert<__nv_bfloat16>(c->stream, (__nv_bfloat16 *)(void *)w, dst, (int64_t)n);
    return cuda_convert<__half>(c->stream, (__half *)(void *)w, dst, (int64_t)n);
}

/* BK_PARAMS takes any range of the full vector: the master keeps what it
 * holds of it; a whole working copy (16-bit, stages 1-2) converts all of
 * it, the part outside the master's range through a staging buffer that
 * is free at load time (the gradients, or the gradient bucket), zeroed
 * after; a sharded one (stage 3) converts its range from the master. */
static int cuda_load_params(backend *be, size_t off, size_t n, const float *src)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    size_t x = off > c->moff ? off : c->moff, y = off + n < c->moff + c->mlen ? off + n : c->moff + c->mlen;
    float *stage = c->gbuf[0] ? c->gbuf[0] : c->grads;
    size_t cap = c->gbuf[0] ? c->bucket_cap : c->glen;
    int rc = ST_OK;
    if (off > be->L->n_floats || n > be->L->n_floats - off)
        return util_fail(ST_SOFTWARE, "backend cuda: range [%zu, +%zu) outside the %zu parameters", off, n,
                         be->L->n_floats);
    c->wk[0] = c->wk[1] = CUDA_NO_BUCKET;
    if (y > x) {
        CU_TRY(cudaMemcpyAsync(c->master + (x - c->moff), src + (x - off), (y - x) * sizeof(float),
                               cudaMemcpyHostToDevice, c->stream));
        if (c->work)
            CU_OK(cuda_to_work(c, x, c->master + (x - c->moff), y - x));
    }
    if (c->work && c->zero < 3) {
        /* Before and after the master's part. */
        size_t part[2][2] = {{off, y > x ? x : off + n}, {y > x ? y : off + n, off + n}};
        for (int i = 0; i < 2; i++)
            for (size_t p = part[i][0], k = 0; p < part[i][1]; p += k) {
                k = part[i][1] - p < cap ? part[i][1] - p : cap;
                CU_TRY(cudaMemcpyAsync(stage, src + (p - off), k * sizeof(float), cudaMemcpyHostToDevice,
                                       c->stream));
                CU_OK(cuda_to_work(c, p, stage, k));
            }
        CU_TRY(cudaMemsetAsync(stage, 0, cap * sizeof(float), c->stream));
    }
    CU_TRY(cudaStreamSynchronize(c->stream));
exit:
    return rc;
}

static int cuda_load(backend *be, int array, size_t off, size_t n, const float *src)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    float *dst = NULL;
    int rc = ST_OK;
    if (array == BK_PARAMS)
        return cuda_load_params(be, off, n, src);
    CU_OK(cuda_range_ok(be, array, off, n, &dst));
    if (array == BK_GRADS)
        CU_OK(cuda_grads_settle(c));
    CU_TRY(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyHostToDevice, c->stream));
    CU_TRY(cudaStreamSynchronize(c->stream));
exit:
    return rc;
}

static int cuda_read(backend *be, int array, size_t off, size_t n, float *dst)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    float *src = NULL;
    int rc = ST_OK;
    CU_OK(cuda_range_ok(be, array, off, n, &src));
    if (array == BK_GRADS)
        CU_OK(cuda_grads_settle(c));
    CU_TRY(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    CU_TRY(cudaStreamSynchronize(c->stream));
exit:
    return rc;
}

/* The copy stream waits for everything queued on the compute stream so far
 * (the optimizer step), then copies params, m, v of the range into dst. */
static int cuda_snapshot(backend *be, float *dst)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    size_t n = be->hi - be->lo, bytes = n * sizeof(float);
    int rc = ST_OK;
    CU_TRY(cudaEventRecord(c->ev_ready, c->stream));
    CU_TRY(cudaStreamWaitEvent(c->copy, c->ev_ready, 0));
    CU_TRY(cudaEventRecord(c->ev_snap0, c->copy));
    CU_TRY(cudaMemcpyAsync(dst, c->master + (be->lo - c->moff), bytes, cudaMemcpyDeviceToHost, c->copy));
    CU_TRY(cudaMemcpyAsync(dst + n, c->m, bytes, cudaMemcpyDeviceToHost, c->copy));
    CU_TRY(cudaMemcpyAsync(dst + 2 * n, c->v, bytes, cudaMemcpyDeviceToHost, c->copy));
    CU_TRY(cudaEventRecord(c->ev_snap, c->copy));
    c->snap_recorded = 1;
    c->stall_armed = 1;
    c->snaps++;
    c->snap_bytes = 3.0 * (double)bytes;
exit:
    return rc;
}

static int cuda_snapshot_wait(backend *be)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    int rc = ST_OK;
    float ms = 0;
    if (!c->snap_recorded)
        return ST_OK;
    /* The checkpoint writer's thread calls this: the current device is per
     * host thread and starts at 0, and the first runtime call would make
     * GPU 0's primary context current there (its memory taken on GPU 0 by
     * every rank of a node). Cheap when already set. */
    CU_TRY(cudaSetDevice(c->dev));
    CU_TRY(cudaEventSynchronize(c->ev_snap));
    if (cudaEventElapsedTime(&ms, c->ev_snap0, c->ev_snap) == cudaSuccess)
        c->snap_ms += ms;
exit:
    return rc;
}

static int cuda_pin(backend *be, void *host, size_t bytes)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    if (c->npinned == CUDA_MAX_PINNED)
        return ST_OK;
    cudaError_t e = cudaHostRegister(host, bytes, cudaHostRegisterDefault);
    if (e != cudaSuccess) {
        cudaGetLastError();
        util_log("backend cuda: could not page-lock the %.1f MiB snapshot buffer (%s); checkpoints copy slower",
                 (double)bytes / (1 << 20), cudaGetErrorString(e));
        return ST_OK;
    }
    c->pinned[c->npinned++] = host;
    return ST_OK;
}

static void cuda_destroy(backend *be)
{
    if (!be)
        return;
    cuda_impl *c = (cuda_impl *)be->impl;
    if (c) {
        /* First: finalizing (or aborting) the communicator frees any NCCL
         * kernel the stream syncs below would otherwise wait on. */
        cuda_nccl_close(c->nccl);
        if (c->stream)
            cudaStreamSynchronize(c->stream);
        if (c->copy)
            cudaStreamSynchronize(c->copy);
        if (c->comm)
            cudaStreamSynchronize(c->comm);
        size_t fr = 0, tot = 0;
        /* Every allocation lives until here, so what this process added
         * since its context is also its peak (tests/device_check.sh sets
         * it against the memory plan). */
        if (c->profile && cudaMemGetInfo(&fr, &tot) == cudaSuccess)
            util_log("backend cuda: device memory in use %.2f GiB of %.2f (arena %.2f GiB); allocated since the "
                     "context %zu bytes, arena %zu bytes", (double)(tot - fr) / (1 << 30), (double)tot / (1 << 30),
                     (double)c->plan.total / (1 << 30), tot - fr - c->used0, c->arena ? c->plan.total : (size_t)0);
        if (c->profile && c->ph_steps > 0) {
            double all = c->ph_ms[0] + c->ph_ms[1] + c->ph_ms[2] + c->ph_ms[3];
            util_log("backend cuda: step time split over %lld steps: forward %.1f ms (%.0f%%), classifier+loss "
                     "%.1f ms (%.0f%%), backward %.1f ms (%.0f%%), optimizer %.1f ms (%.0f%%)", (long long)c->ph_steps,
                     c->ph_ms[0] / c->ph_steps, 100 * c->ph_ms[0] / all, c->ph_ms[1] / c->ph_steps,
                     100 * c->ph_ms[1] / all, c->ph_ms[2] / c->ph_steps, 100 * c->ph_ms[2] / all,
                     c->ph_ms[3] / c->ph_steps, 100 * c->ph_ms[3] / all);
        }
        if (c->snaps > 0)
            util_log("backend cuda: %d checkpoint snapshot%s of %.1f MiB: device->host %.1f ms each (%.2f GB/s), "
                     "compute stalled %.1f ms in all", c->snaps, c->snaps == 1 ? "" : "s", c->snap_bytes / (1 << 20),
                     c->snap_ms / c->snaps, c->snap_ms > 0 ? c->snap_bytes * c->snaps / (c->snap_ms * 1e6) : 0.0,
                     c->stall_ms);
        /* Not util_log: tests read it under --quiet. */
        if (c->overlap)
            fprintf(stderr, "spotrain: backend cuda: rank %d: %lld gradient buckets reduced (%lld overlapping the "
                    "backward) and %lld parameter buckets gathered on the comm stream\n", be->rank,
                    (long long)c->exchanges, (long long)c->overlapped, (long long)c->gathers);
        cuda_kprof_close(c);
        for (int i = 0; i < c->npinned; i++)
            cudaHostUnregister(c->pinned[i]);
        cuda_gemm_destroy(&c->gemm);
        void *dev[] = {c->master, c->grads, c->m, c->v, c->work, c->rope_cos, c->rope_sin, c->seg, c->loss_acc,
                       c->eval_acc, c->sumsq, c->sumsq_part, c->arena, c->gbuf[0], c->gbuf[1], c->wbuf[0], c->wbuf[1]};
        for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
            if (dev[i])
                cudaFree(dev[i]);
        if (c->h_scalar)
            cudaFreeHost(c->h_scalar);
        if (c->h_tokens)
            cudaFreeHost(c->h_tokens);
        free(c->h_cnt);
        cudaEvent_t ev[] = {c->ev_ready, c->ev_snap0, c->ev_snap, c->ev_stall0, c->ev_stall1, c->ev_tokens,
                            c->ev_ph[0], c->ev_ph[1], c->ev_ph[2], c->ev_ph[3], c->ev_ph[4], c->ev_ph[5],
                            c->ev_free[0], c->ev_free[1], c->ev_gathered, c->ev_closed, c->ev_reduced,
                            c->ev_gfree[0], c->ev_gfree[1]};
        for (size_t i = 0; i < sizeof ev / sizeof ev[0]; i++)
            if (ev[i])
                cudaEventDestroy(ev[i]);
        if (c->stream)
            cudaStreamDestroy(c->stream);
        if (c->copy)
            cudaStreamDestroy(c->copy);
        if (c->comm)
            cudaStreamDestroy(c->comm);
        cuda_arena_free(&c->plan);
        free(c);
    }
    free(be);
}

extern "C" int backend_cuda_set_recompute(backend *be, int recompute)
{
    cuda_impl *c = (cuda_impl *)be->impl;
    if (c->cap_b > 0)
        return util_fail(ST_SOFTWARE, "backend cuda: recompute set after the activations were allocated");
    c->recompute = recompute != 0;
    return ST_OK;
}

extern "C" size_t backend_cuda_arena_bytes(const backend *be)
{
    const cuda_impl *c = (const cuda_impl *)be->impl;
    return c->arena ? c->plan.total : 0;
}

extern "C" int backend_cuda_memory(const backend *be, size_t *used, size_t *total)
{
    const cuda_impl *c = (const cuda_impl *)be->impl;
    size_t fr = 0, tot = 0;
    int rc = ST_OK;
    CU_TRY(cudaSetDevice(c->dev));
    CU_TRY(cudaMemGetInfo(&fr, &tot));
    *used = tot - fr;
    *total = tot;
exit:
    return rc;
}

static int cuda_alloc(void **p, size_t bytes, const char *what, int *oom)
{
    if (*oom)
        return ST_OK;
    if (cudaMalloc(p, bytes ? bytes : 16) != cudaSuccess) {
        cudaGetLastError();
        *oom = 1;
        *p = NULL;
        return util_fail(ST_SOFTWARE, "backend cuda: out of device memory for %s (%.2f GiB); a smaller model, "
                         "or spotrain train --dry-run for the memory plan", what, (double)bytes / (1 << 30));
    }
    return ST_OK;
}

extern "C" int backend_cuda_create(backend **out, const model_layout *L, const backend_opts *o)
{
    *out = NULL;
    cuda_prec prec;
    if (cuda_prec_parse(o ? o->precision : NULL, &prec))
        return util_fail(ST_CONFIG, "train.precision = %s: use auto, fp32, tf32, bf16 or fp16", o->precision);
    int world = o && o->world > 0 ? o->world : 1, rank = o ? o->rank : 0;
    const char *force = getenv("SPOTRAIN_NCCL");
    char dev_desc[160] = "";
    backend *be = (backend *)calloc(1, sizeof *be);
    cuda_impl *c = (cuda_impl *)calloc(1, sizeof *c);
    char why[256] = "";
    int rc = ST_OK, oom = 0;
    size_t n = L->n_floats, ct = cuda_prec_bytes(prec);
    cudaDeviceProp prop;
    cuda_memplan mp;
    if (!be || !c) {
        free(be);
        free(c);
        return util_fail(ST_SOFTWARE, "backend cuda: out of host memory");
    }
    be->impl = c;
    be->name = "cuda";
    be->precision = cuda_prec_name(prec);
    be->L = L;
    be->rank = rank;
    be->world = world;
    comm_range(n, rank, world, &be->lo, &be->hi);
    c->prec = prec;
    c->s = L->s;
    c->recompute = o && o->recompute;
    CU_OK(cuda_nccl_pick_device(world, &c->dev, dev_desc, sizeof dev_desc));
    CU_TRY(cudaSetDevice(c->dev));
    CU_TRY(cudaGetDeviceProperties(&prop, c->dev));
    snprintf(be->device, sizeof be->device, "%.127s", prop.name);
    cuda_library_versions(be->libraries, sizeof be->libraries);
    CU_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    CU_TRY(cudaStreamCreateWithFlags(&c->copy, cudaStreamNonBlocking));
    CU_TRY(cudaStreamCreateWithFlags(&c->comm, cudaStreamNonBlocking));
    CU_TRY(cudaEventCreateWithFlags(&c->ev_closed, cudaEventDisableTiming));
    CU_TRY(cudaEventCreateWithFlags(&c->ev_reduced, cudaEventDisableTiming));
    for (int i = 0; i < 2; i++) {
        CU_TRY(cudaEventCreateWithFlags(&c->ev_free[i], cudaEventDisableTiming));
        CU_TRY(cudaEventCreateWithFlags(&c->ev_gfree[i], cudaEventDisableTiming));
        c->wk[i] = CUDA_NO_BUCKET;
    }
    CU_TRY(cudaEventCreateWithFlags(&c->ev_gathered, cudaEventDisableTiming));
    c->pend = CUDA_NO_BUCKET;
    CU_TRY(cudaEventCreate(&c->ev_ready));
    CU_TRY(cudaEventCreate(&c->ev_snap0));
    CU_TRY(cudaEventCreate(&c->ev_snap));
    CU_TRY(cudaEventCreate(&c->ev_stall0));
    CU_TRY(cudaEventCreate(&c->ev_stall1));
    CU_TRY(cudaEventCreateWithFlags(&c->ev_tokens, cudaEventDisableTiming));
    c->profile = getenv("SPOTRAIN_CUDA_PROFILE") && atoi(getenv("SPOTRAIN_CUDA_PROFILE")) > 0;
    c->overlap = getenv("SPOTRAIN_CUDA_OVERLAP") && atoi(getenv("SPOTRAIN_CUDA_OVERLAP")) > 0;
    c->unordered = getenv("SPOTRAIN_TEST_CUDA_UNORDERED") && atoi(getenv("SPOTRAIN_TEST_CUDA_UNORDERED")) > 0;
    {
        size_t fr = 0, tot = 0;
        CU_TRY(cudaMemGetInfo(&fr, &tot));
        c->used0 = tot - fr;
    }
    for (int i = 0; i < 6; i++)
        CU_TRY(cudaEventCreate(&c->ev_ph[i]));
    if (c->profile && atoi(getenv("SPOTRAIN_CUDA_PROFILE")) >= 2)
        CU_OK(cuda_kprof_open(c));
    if ((rc = cuda_gemm_init(&c->gemm, c->stream, prec, why, sizeof why)) != ST_OK) {
        rc = util_fail(rc, "backend cuda: %s", why);
        goto exit;
    }
    c->zero = o && o->zero > 1 ? o->zero : 1;
    if (c->zero > 3) {
        rc = util_fail(ST_CONFIG, "train.zero = %d: use 1, 2, 3 or auto", c->zero);
        goto exit;
    }
    /* The memory model's plan (model/memplan.c) sizes what follows. */
    CU_OK(cuda_memory_plan(&c->s, 1, world, prec, c->zero, &mp));
    {
        size_t r = be->hi - be->lo;
        int64_t half = c->s.head_dim / 2, T = c->s.seq_len;
        int shard_m = ct == 2 || c->zero >= 3;
        c->moff = shard_m ? be->lo : 0;
        c->mlen = shard_m ? r : n;
        c->woff = c->zero >= 3 ? be->lo : 0;
        c->goff = c->zero >= 2 ? be->lo : 0;
        c->glen = c->zero >= 2 ? r : n;
        c->bucket_cap = mp.bucket;
        c->two = comm_get_overlap() && world > 1;   /* as the plan counts it */
        c->gcap[0] = mp.bucket;
        c->gcap[1] = c->two ? mp.bucket2 : 0;
        for (int64_t k = -1; k <= c->s.n_layers && c->zero >= 2; k++) {
            size_t a, b;
            model_bucket_span(L, k, &a, &b);
            /* A layer must fit either buffer: the alternation gives it both. */
            size_t cap = c->two && k >= 0 && k < c->s.n_layers ? c->gcap[1] : c->bucket_cap;
            if (b - a > c->bucket_cap || b - a > cap) {
                rc = util_fail(ST_SOFTWARE, "backend cuda: bucket %lld holds %zu floats, the plan %zu",
                               (long long)k, b - a, cap < c->bucket_cap ? cap : c->bucket_cap);
                goto exit;
            }
        }
        CU_OK(cuda_alloc((void **)&c->master, c->mlen * 4, "the fp32 parameters", &oom));
        CU_OK(cuda_alloc((void **)&c->grads, c->glen * 4, "the fp32 gradients", &oom));
        CU_OK(cuda_alloc((void **)&c->m, r * 4, "Adam m", &oom));
        CU_OK(cuda_alloc((void **)&c->v, r * 4, "Adam v", &oom));
        if (ct == 2)
            CU_OK(cuda_alloc(&c->work, (c->zero >= 3 ? r : n) * 2, "the working copy of the weights", &oom));
        /* Two under overlap, each its own allocation (the emulator's
         * stream-hazard check sees whole allocations): one filled, one
         * exchanged. */
        for (int i = 0; i < 1 + c->two && c->zero >= 2; i++)
            CU_OK(cuda_alloc((void **)&c->gbuf[i], c->gcap[i] * 4, "the gradient buckets", &oom));
        c->gbucket = c->gbuf[0];
        if (c->zero >= 3)
            for (int i = 0; i < 2; i++)
                CU_OK(cuda_alloc(&c->wbuf[i], c->bucket_cap * ct, "the parameter buckets", &oom));
        CU_OK(cuda_alloc((void **)&c->rope_cos, (size_t)(T * half) * 4, "RoPE tables", &oom));
        CU_OK(cuda_alloc((void **)&c->rope_sin, (size_t)(T * half) * 4, "RoPE tables", &oom));
        CU_OK(cuda_alloc((void **)&c->loss_acc, 8, "the loss", &oom));
        CU_OK(cuda_alloc((void **)&c->eval_acc, 8, "the loss", &oom));
        CU_OK(cuda_alloc((void **)&c->sumsq, 8, "the norm", &oom));
        CU_OK(cuda_alloc((void **)&c->sumsq_part, (r / CUDA_SUMSQ_BLOCK + 1) * 8, "the norm", &oom));
        CU_TRY(cudaMallocHost((void **)&c->h_scalar, sizeof(double)));
        c->h_cnt = (int32_t *)malloc((size_t)(c->s.vocab > 0 ? c->s.vocab : 1) * sizeof(int32_t));
        if (!c->h_cnt) {
            rc = util_fail(ST_SOFTWARE, "backend cuda: out of host memory");
            goto exit;
        }
        CU_TRY(cudaMemsetAsync(c->master, 0, c->mlen * 4, c->stream));
        CU_TRY(cudaMemsetAsync(c->grads, 0, c->glen * 4, c->stream));
        CU_TRY(cudaMemsetAsync(c->m, 0, r * 4, c->stream));
        CU_TRY(cudaMemsetAsync(c->v, 0, r * 4, c->stream));
        if (c->work)
            CU_TRY(cudaMemsetAsync(c->work, 0, (c->zero >= 3 ? r : n) * 2, c->stream));
        CU_TRY(cudaMemsetAsync(c->loss_acc, 0, 8, c->stream));
        /* The CPU backend's tables, computed the same way on the host. */
        float *cs = (float *)malloc((size_t)(T * half + 1) * 4), *sn = (float *)malloc((size_t)(T * half + 1) * 4);
        int cap = cuda_adamw_seg_cap(&c->s);
        cuda_adamw_seg *seg = (cuda_adamw_seg *)malloc((size_t)cap * sizeof *seg);
        if (!cs || !sn || !seg) {
            free(cs);
            free(sn);
            free(seg);
            rc = util_fail(ST_SOFTWARE, "backend cuda: out of host memory");
            goto exit;
        }
        for (int64_t t = 0; t < T; t++)
            for (int64_t i = 0; i < half; i++) {
                double inv = pow(c->s.rope_theta, -(double)(2 * i) / (double)c->s.head_dim);
                cs[t * half + i] = (float)cos((double)t * inv);
                sn[t * half + i] = (float)sin((double)t * inv);
            }
        c->nseg = cuda_adamw_segments(L, be->lo, be->hi, seg, cap);
        cudaError_t e1 = cudaMemcpy(c->rope_cos, cs, (size_t)(T * half) * 4, cudaMemcpyHostToDevice);
        cudaError_t e2 = cudaMemcpy(c->rope_sin, sn, (size_t)(T * half) * 4, cudaMemcpyHostToDevice);
        cudaError_t e3 = cudaSuccess;
        if (c->nseg > 0) {
            e3 = cudaMalloc((void **)&c->seg, (size_t)cap * sizeof *seg);   /* the plan's room */
            if (e3 == cudaSuccess)
                e3 = cudaMemcpy(c->seg, seg, (size_t)c->nseg * sizeof *seg, cudaMemcpyHostToDevice);
        }
        free(cs);
        free(sn);
        free(seg);
        CU_TRY(e1);
        CU_TRY(e2);
        CU_TRY(e3);
        CU_TRY(cudaStreamSynchronize(c->stream));
    }
    /* After the state exists: NCCL's own buffers come out of what is left. */
    if (world > 1 || (force && !strcmp(force, "1"))) {
        CU_OK(cuda_nccl_open(&c->nccl, rank, world, 0));
        if (rank == 0 || world == 1)
            util_log("backend cuda: rank %d of %d on %s; data plane %s", rank, world, dev_desc,
                     cuda_nccl_version(c->nccl));
    }
    be->fwd_bwd = cuda_fwd_bwd;
    be->take_loss = cuda_take_loss;
    be->eval = cuda_eval;
    be->logits = cuda_logits;
    be->zero_grads = cuda_zero_grads;
    be->reduce_grads = cuda_reduce_grads;
    be->grad_sumsq = cuda_grad_sumsq;
    be->adamw = cuda_adamw_op;
    be->gather_params = cuda_gather_params;
    be->load = cuda_load;
    be->read = cuda_read;
    be->snapshot = cuda_snapshot;
    be->snapshot_wait = cuda_snapshot_wait;
    be->pin = cuda_pin;
    be->destroy = cuda_destroy;
    *out = be;
    return ST_OK;
exit:
    cuda_destroy(be);
    return rc;
}
