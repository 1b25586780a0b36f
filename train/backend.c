/* Backend selection by name: the CPU backend is always built in; a CUDA
 * backend answers only in builds made with CUDA=1 (and not yet at all). */
#include "backend.h"
#include "../util/util.h"

#include <string.h>

int backend_create(backend **out, const char *name, const model_layout *L, int threads)
{
    *out = NULL;
    if (!name || strcmp(name, "cpu") == 0)
        return backend_cpu_create(out, L, threads);
    if (strcmp(name, "cuda") == 0) {
#ifdef SPOTRAIN_CUDA
        return util_fail(ST_UNAVAILABLE, "backend cuda: this build has CUDA enabled but no CUDA backend "
                         "is implemented yet; use backend = cpu");
#else
        return util_fail(ST_UNAVAILABLE, "backend cuda: this spotrain was built without CUDA support "
                         "(rebuild with CUDA=1 on a machine with nvcc)");
#endif
    }
    return util_fail(ST_CONFIG, "unknown backend '%s': use cpu or cuda", name);
}
