/* Backend selection by name: "cpu" always, "cuda" in builds made with CUDA=1
 * when a device, its driver and cuBLASLt are present, and "auto" (the
 * default) picking CUDA when it can start and the CPU otherwise. Also the
 * bounded checkpoint -> backend loader every backend shares. */
#include "backend.h"
#include "ckpt/ckpt.h"
#include "cuda/cuda.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int backend_create_named(backend **out, const model_layout *L, const backend_opts *o);

int backend_create(backend **out, const model_layout *L, const backend_opts *o)
{
    int rc = backend_create_named(out, L, o);
    if (rc == ST_OK)
        backend_device_override(*out);
    return rc;
}

static int backend_create_named(backend **out, const model_layout *L, const backend_opts *o)
{
    *out = NULL;
    const char *name = o && o->name ? o->name : "auto";
    if (strcmp(name, "cpu") == 0)
        return backend_cpu_create(out, L, o);
    if (strcmp(name, "cuda") != 0 && strcmp(name, "auto") != 0)
        return util_fail(ST_CONFIG, "unknown backend '%s': use auto, cpu or cuda", name);
#ifdef SPOTRAIN_CUDA
    char why[256];
    int probe = cuda_probe(why, sizeof why);
    if (probe == CUDA_PROBE_OK)
        return backend_cuda_create(out, L, o);
    if (strcmp(name, "cuda") == 0)
        return util_fail(ST_UNAVAILABLE, "backend cuda: %s; use backend = cpu or auto", why);
    /* A GPU is here but cannot run the backend: say so once, then train on
     * the CPU (no GPU at all is the expected CPU case: no line). */
    if (probe == CUDA_PROBE_UNUSABLE)
        util_log("backend auto: %s; training on the CPU", why);
#else
    if (strcmp(name, "cuda") == 0)
        return util_fail(ST_UNAVAILABLE, "backend cuda: this spotrain was built without CUDA support "
                         "(rebuild with nvcc on the PATH, or CUDA=1); use backend = cpu or auto");
#endif
    return backend_cpu_create(out, L, o);
}

int backend_set_recompute(backend *b, int recompute)
{
#ifdef SPOTRAIN_CUDA
    if (strcmp(b->name, "cuda") == 0)
        return backend_cuda_set_recompute(b, recompute);
#endif
    return backend_cpu_set_recompute(b, recompute);
}

uint64_t backend_device_bytes(const backend *b)
{
    /* Tests stand in for the GPU's size (bytes) to see both choices. */
    const char *e = getenv("SPOTRAIN_TEST_GPU_MEMORY");
    if (strcmp(b->name, "cpu") != 0 && e && *e)
        return (uint64_t)strtoull(e, NULL, 10);
#ifdef SPOTRAIN_CUDA
    size_t used = 0, total = 0;
    if (strcmp(b->name, "cuda") == 0 && backend_cuda_memory(b, &used, &total) == ST_OK)
        return (uint64_t)total;
#endif
    return 0;
}

int backend_resolves_cpu(const char *name)
{
    if (!name || strcmp(name, "auto") != 0)
        return name && strcmp(name, "cpu") == 0;
#ifdef SPOTRAIN_CUDA
    char why[256];
    return !cuda_available(why, sizeof why);
#else
    return 1;
#endif
}

uint64_t backend_gpu_memory(const char *name)
{
#ifdef SPOTRAIN_CUDA
    char why[256];
    if (!backend_resolves_cpu(name) && cuda_available(why, sizeof why))
        return cuda_device_memory();
#else
    (void)name;
#endif
    return 0;
}

int backend_plane_open(backend_plane **out, const char *name, size_t max_floats)
{
    *out = NULL;
    if (strcmp(name, "cuda") != 0 && strcmp(name, "auto") != 0)
        return backend_cpu_plane_open(out);
#ifdef SPOTRAIN_CUDA
    char why[256];
    if (cuda_available(why, sizeof why))
        return backend_cuda_plane_open(out, max_floats);
    if (strcmp(name, "cuda") == 0)
        return util_fail(ST_UNAVAILABLE, "selftest comm: backend cuda: %s; --set train.backend=cpu tests the MPI "
                         "data plane", why);
#else
    if (strcmp(name, "cuda") == 0)
        return util_fail(ST_UNAVAILABLE, "selftest comm: this spotrain was built without CUDA (make CUDA=1); "
                         "--set train.backend=cpu tests the MPI data plane");
#endif
    return backend_cpu_plane_open(out);
}

void backend_device_override(backend *b)
{
    const char *e = getenv("SPOTRAIN_DEVICE_NAME");
    if (e && e[0])
        snprintf(b->device, sizeof b->device, "%s", e);
}

int backend_continuity(const backend *b, const char *backend_was, const char *precision_was,
                       const char *device_was, const char *libraries_was, char *why, size_t cap)
{
    const char *what[4] = {"backend", "precision", "device", "libraries"};
    const char *was[4] = {backend_was, precision_was, device_was, libraries_was};
    const char *now[4] = {b->name, b->precision, b->device, b->libraries};
    int n = 0;
    size_t len = 0;
    if (cap)
        why[0] = 0;
    for (int k = 0; k < 4; k++) {
        if (!was[k] || !was[k][0] || !strcmp(was[k], now[k]))
            continue;
        int w = snprintf(why + len, cap > len ? cap - len : 0, "%s%s %s -> %s", n ? ", " : "", what[k], was[k],
                         now[k]);
        if (w > 0)
            len = len + (size_t)w < cap ? len + (size_t)w : cap;
        n++;
    }
    return n;
}

int backend_check_tokens(const backend *b, const int32_t *tokens, int64_t n)
{
    int64_t V = b->L->s.vocab;
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return util_fail(ST_DATA, "token id %lld at position %lld is outside the vocabulary [0, %lld); "
                             "check model.vocab_size against the tokenizer of the data",
                             (long long)tokens[i], (long long)i, (long long)V);
    return ST_OK;
}

typedef struct {
    backend *b;
    int array;
} backend_sink_arg;

static int backend_sink(void *arg, size_t off, size_t n, const float *src)
{
    backend_sink_arg *a = arg;
    return a->b->load(a->b, a->array, off, n, src);
}

/* The reader hands over one verified chunk at a time from its own buffers:
 * loading never needs a second copy of the model in host memory. */
int backend_load_ckpt(backend *b, ckpt_reader *r, int array, size_t lo, size_t hi)
{
    backend_sink_arg a = {b, array};
    return ckpt_read_each(r, array, lo, hi, backend_sink, &a);
}
