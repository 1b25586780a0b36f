/* The loss-scale state machine (see lscale.h). Dynamic scaling keeps the
 * scale a power of two so that multiplying the loss seed and dividing the
 * gradients back are exact whenever nothing overflows: a scaled step then
 * produces the same bits as an unscaled one. */
#include "lscale.h"

#include <math.h>

int lscale_pow2(double x)
{
    int e = 0;
    return isfinite(x) && x > 0 && frexp(x, &e) == 0.5;
}

static int lscale_in_range(double scale)
{
    return lscale_pow2(scale) && scale >= LSCALE_MIN && scale <= LSCALE_MAX;
}

int lscale_init(lscale *s, int mode, double scale, int64_t window)
{
    *s = (lscale){LSCALE_OFF, 1.0, 0, window > 0 ? window : LSCALE_DEFAULT_WINDOW};
    if (mode == LSCALE_OFF)
        return 0;
    if (mode == LSCALE_FIXED && !(isfinite(scale) && scale > 0))
        return -1;
    if (mode == LSCALE_DYNAMIC && !lscale_in_range(scale))
        return -1;
    if (mode != LSCALE_FIXED && mode != LSCALE_DYNAMIC)
        return -1;
    s->mode = mode;
    s->scale = scale;
    return 0;
}

int lscale_restore(lscale *s, double scale, int64_t clean)
{
    if (s->mode != LSCALE_DYNAMIC || !lscale_in_range(scale) || clean < 0 || clean >= s->window)
        return -1;
    s->scale = scale;
    s->clean = clean;
    return 0;
}

float lscale_seed(const lscale *s, float base)
{
    return s->mode == LSCALE_OFF ? base : (float)s->scale * base;
}

int lscale_update(lscale *s, int finite)
{
    if (s->mode == LSCALE_OFF)
        return finite ? LSCALE_APPLY : LSCALE_FATAL;
    if (s->mode == LSCALE_FIXED)
        return finite ? LSCALE_APPLY : LSCALE_SKIP;
    if (!finite) {
        /* At the floor the gradients are non-finite unscaled: a real
         * divergence that skipping steps would only hide. */
        if (s->scale <= LSCALE_MIN)
            return LSCALE_FATAL;
        s->scale *= 0.5;
        s->clean = 0;
        return LSCALE_SKIP;
    }
    if (++s->clean < s->window)
        return LSCALE_APPLY;
    s->clean = 0;
    if (s->scale >= LSCALE_MAX)
        return LSCALE_APPLY;
    s->scale *= 2.0;
    return LSCALE_GREW;
}

const char *lscale_mode_name(int mode)
{
    return mode == LSCALE_FIXED ? "fixed" : mode == LSCALE_DYNAMIC ? "dynamic" : "off";
}
