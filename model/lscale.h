/* Loss scaling for fp16 training: the scale the loop multiplies the loss
 * by before backward, and the state machine that moves it (dynamic: halve
 * and skip the step on overflow, double after a window of clean steps).
 * Pure: no backend, no I/O; the loop owns one and checkpoints its state. */
#ifndef SPOTRAIN_LSCALE_H
#define SPOTRAIN_LSCALE_H

#include <stdint.h>

enum { LSCALE_OFF = 0, LSCALE_FIXED = 1, LSCALE_DYNAMIC = 2 };

/* What one step's gradients did to the scaler. */
enum {
    LSCALE_APPLY = 0,   /* finite: run the optimizer step */
    LSCALE_GREW = 1,    /* finite, and the window of clean steps doubled the scale for the next step */
    LSCALE_SKIP = 2,    /* not finite: skip the optimizer step (dynamic: the scale halved) */
    LSCALE_FATAL = 3    /* not finite and nothing a scale can fix: off, or dynamic already at its floor */
};

#define LSCALE_DEFAULT_INIT 65536.0
#define LSCALE_DEFAULT_WINDOW 2000
#define LSCALE_MIN 1.0
#define LSCALE_MAX 0x1p127   /* the largest power of two a float holds */

typedef struct {
    int mode;          /* LSCALE_* */
    double scale;      /* 1 when off */
    int64_t clean;     /* consecutive finite steps since the last change (dynamic) */
    int64_t window;    /* clean steps that double the scale */
} lscale;

/* mode OFF ignores scale. FIXED takes any positive scale; DYNAMIC wants a
 * power of two in [LSCALE_MIN, LSCALE_MAX] (so scaling is exact in binary
 * floating point). Returns 0, or -1 when scale does not fit the mode. */
int lscale_init(lscale *s, int mode, double scale, int64_t window);
/* Continues a checkpointed dynamic scaler: -1 when the pair is not one
 * lscale_update can produce (scale outside the range or not a power of two,
 * clean outside [0, window)). */
int lscale_restore(lscale *s, double scale, int64_t clean);
/* The per-token gradient seed the backend gets: base (1/tokens) times the
 * scale, in float as the backend uses it. Off returns base unchanged. */
float lscale_seed(const lscale *s, float base);
/* Feeds one step's outcome (finite: the summed squared gradient is finite)
 * and returns LSCALE_*. The scale that produced this step's gradients is
 * the one read before the call. */
int lscale_update(lscale *s, int finite);
/* 1 when x is a power of two (2^k, any integer k) */
int lscale_pow2(double x);
const char *lscale_mode_name(int mode);

#endif
