/* The loss-scale state machine: dynamic halving with a skip on overflow,
 * doubling after the clean-step window, the floor and ceiling, fixed and
 * off modes, restore checks, and that a power-of-two seed divides out.
 * module: train */
#include "tests/harness.h"
#include "model/lscale.h"

#include <math.h>

static void test_init(void)
{
    lscale s;
    EXPECT(lscale_init(&s, LSCALE_DYNAMIC, LSCALE_DEFAULT_INIT, 0) == 0);
    EXPECT(s.scale == 65536.0 && s.clean == 0 && s.window == LSCALE_DEFAULT_WINDOW);
    EXPECT(lscale_init(&s, LSCALE_DYNAMIC, 1000.0, 0) == -1);        /* not a power of two */
    EXPECT(lscale_init(&s, LSCALE_DYNAMIC, 0.5, 0) == -1);           /* below the floor */
    EXPECT(lscale_init(&s, LSCALE_DYNAMIC, 0x1p128, 0) == -1);       /* above what a float holds */
    EXPECT(lscale_init(&s, LSCALE_DYNAMIC, 0x1p127, 0) == 0);
    EXPECT(lscale_init(&s, LSCALE_FIXED, 128.0, 0) == 0 && s.scale == 128.0);
    EXPECT(lscale_init(&s, LSCALE_FIXED, 100.0, 0) == 0);            /* fixed: any positive value */
    EXPECT(lscale_init(&s, LSCALE_FIXED, 0.0, 0) == -1);
    EXPECT(lscale_init(&s, LSCALE_OFF, 0.0, 0) == 0 && s.scale == 1.0);
    EXPECT(lscale_init(&s, 7, 2.0, 0) == -1);
}

static void test_dynamic(void)
{
    lscale s;
    lscale_init(&s, LSCALE_DYNAMIC, 65536.0, 3);
    EXPECT(lscale_update(&s, 1) == LSCALE_APPLY && s.clean == 1);
    EXPECT(lscale_update(&s, 0) == LSCALE_SKIP && s.scale == 32768.0 && s.clean == 0);
    EXPECT(lscale_update(&s, 1) == LSCALE_APPLY);
    EXPECT(lscale_update(&s, 1) == LSCALE_APPLY);
    EXPECT(lscale_update(&s, 1) == LSCALE_GREW && s.scale == 65536.0 && s.clean == 0);
    /* An overflow right after growth halves again. */
    EXPECT(lscale_update(&s, 0) == LSCALE_SKIP && s.scale == 32768.0);
}

static void test_bounds(void)
{
    lscale s;
    lscale_init(&s, LSCALE_DYNAMIC, 2.0, 2);
    EXPECT(lscale_update(&s, 0) == LSCALE_SKIP && s.scale == 1.0);
    EXPECT(lscale_update(&s, 0) == LSCALE_FATAL && s.scale == 1.0);   /* non-finite unscaled */
    lscale_init(&s, LSCALE_DYNAMIC, LSCALE_MAX, 2);
    EXPECT(lscale_update(&s, 1) == LSCALE_APPLY);
    EXPECT(lscale_update(&s, 1) == LSCALE_APPLY && s.scale == LSCALE_MAX && s.clean == 0);
}

static void test_fixed_off(void)
{
    lscale s;
    lscale_init(&s, LSCALE_FIXED, 128.0, 0);
    EXPECT(lscale_update(&s, 0) == LSCALE_SKIP && s.scale == 128.0);
    for (int i = 0; i < 5000; i++)
        lscale_update(&s, 1);
    EXPECT(s.scale == 128.0);
    lscale_init(&s, LSCALE_OFF, 0, 0);
    EXPECT(lscale_update(&s, 1) == LSCALE_APPLY);
    EXPECT(lscale_update(&s, 0) == LSCALE_FATAL);
    EXPECT(lscale_seed(&s, 0.25f) == 0.25f);
}

static void test_restore(void)
{
    lscale s;
    lscale_init(&s, LSCALE_DYNAMIC, 65536.0, 2000);
    EXPECT(lscale_restore(&s, 1024.0, 1999) == 0 && s.scale == 1024.0 && s.clean == 1999);
    EXPECT(lscale_restore(&s, 1024.0, 2000) == -1);
    EXPECT(lscale_restore(&s, 1000.0, 0) == -1);
    EXPECT(lscale_restore(&s, 1024.0, -1) == -1);
    lscale_init(&s, LSCALE_FIXED, 128.0, 0);
    EXPECT(lscale_restore(&s, 128.0, 0) == -1);   /* only a dynamic scaler has state to continue */
}

/* The loop's arithmetic: seed = scale * base, update multiplier =
 * clip / scale. With a power-of-two scale both are exact, so the product
 * the optimizer sees equals the unscaled one bit for bit. */
static void test_exact(void)
{
    lscale s;
    lscale_init(&s, LSCALE_DYNAMIC, 65536.0, 0);
    float base = (float)(1.0 / (8.0 * 64.0 + 3.0));
    float seed = lscale_seed(&s, base);
    EXPECT((double)seed == (double)base * 65536.0);
    float g = 0.123456789f * base, gs = 0.123456789f * seed;   /* a gradient, unscaled and scaled */
    double clip = 0.7310585786;
    EXPECT((float)((double)g * clip) == (float)((double)gs * (clip / s.scale)));
}

int main(void)
{
    harness_run("init", test_init);
    harness_run("dynamic", test_dynamic);
    harness_run("bounds", test_bounds);
    harness_run("fixed_off", test_fixed_off);
    harness_run("restore", test_restore);
    harness_run("exact", test_exact);
    return harness_end();
}
