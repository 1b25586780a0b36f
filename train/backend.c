/* Backend selection by name: "cpu" always, "cuda" in builds made with CUDA=1
 * when a device, its driver and cuBLASLt are present, and "auto" (the
 * default) picking CUDA when it can start and the CPU otherwise. */
#include "backend.h"
#include "../cuda/cuda.h"
#include "../util/util.h"

#include <string.h>

int backend_create(backend **out, const model_layout *L, const backend_opts *o)
{
    *out = NULL;
    const char *name = o && o->name ? o->name : "auto";
    if (strcmp(name, "cpu") == 0)
        return backend_cpu_create(out, L, o);
    if (strcmp(name, "cuda") != 0 && strcmp(name, "auto") != 0)
        return util_fail(ST_CONFIG, "unknown backend '%s': use auto, cpu or cuda", name);
#ifdef SPOTRAIN_CUDA
    char why[256];
    if (cuda_available(why, sizeof why))
        return backend_cuda_create(out, L, o);
    if (strcmp(name, "cuda") == 0)
        return util_fail(ST_UNAVAILABLE, "backend cuda: %s; use backend = cpu or auto", why);
    util_log("backend auto: CPU (%s)", why);
#else
    if (strcmp(name, "cuda") == 0)
        return util_fail(ST_UNAVAILABLE, "backend cuda: this spotrain was built without CUDA support "
                         "(rebuild with nvcc on the PATH, or CUDA=1); use backend = cpu or auto");
#endif
    return backend_cpu_create(out, L, o);
}
