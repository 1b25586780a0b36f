/* Backend selection by name: the CPU backend is always built in; "auto"
 * takes CUDA when it is compiled in and a device answers, else the CPU. */
#include "backend.h"
#include "../ckpt/ckpt.h"
#include "../util/util.h"

#include <stdlib.h>

#include <string.h>

int backend_create(backend **out, const model_layout *L, const backend_opts *o)
{
    const char *name = o->name ? o->name : "auto";
    *out = NULL;
    if (strcmp(name, "cpu") == 0 || strcmp(name, "auto") == 0)
        return backend_cpu_create(out, L, o);
    if (strcmp(name, "cuda") == 0)
        return util_fail(ST_UNAVAILABLE, "backend cuda: this spotrain was built without CUDA support "
                         "(rebuild on a machine with nvcc), or use backend = cpu");
    return util_fail(ST_CONFIG, "unknown backend '%s': use auto, cpu or cuda", name);
}

/* Bounded host staging between the checkpoint reader and a backend:
 * loading never needs a second copy of the model in host memory. */
enum { BACKEND_IO_FLOATS = 1 << 20 };

int backend_load_ckpt(backend *b, ckpt_reader *r, int array, size_t lo, size_t hi)
{
    size_t cap = hi - lo < BACKEND_IO_FLOATS ? hi - lo : BACKEND_IO_FLOATS;
    float *buf = malloc((cap ? cap : 1) * sizeof(float));
    int rc = buf ? ST_OK : util_fail(ST_SOFTWARE, "out of memory");
    for (size_t off = lo; off < hi && rc == ST_OK; off += cap) {
        size_t n = hi - off < cap ? hi - off : cap;
        rc = ckpt_read_range(r, array, off, off + n, buf);
        if (rc == ST_OK)
            rc = b->load(b, array, off, n, buf);
    }
    free(buf);
    return rc;
}
