/* Spot resilience seen from the training loop: the stop flag set by signals
 * and by the provider notice poller thread, the deadline of the newest notice,
 * and the progress watchdog. Nothing here knows about tensors. */
#ifndef SPOTRAIN_SPOT_H
#define SPOTRAIN_SPOT_H

#include <stdint.h>

struct cfg;

typedef struct {
    int pending;              /* a stop was requested */
    char source[32];          /* "SIGTERM", "SIGUSR1", "aws", "gcp", "file", ... */
    char detail[256];         /* e.g. the action and time from the provider */
    double deadline;          /* wall-clock seconds by which we must be gone (0 = unknown) */
} spot_notice;

/* Installs SIGTERM/SIGINT/SIGUSR1/SIGUSR2 handlers (a second SIGINT exits 130
 * at once). Safe to call once per process. */
int spot_signals_install(double grace_seconds);
/* Starts the provider poller thread per [spot]; provider none starts nothing.
 * run_dir is where `notice` events are appended (may be NULL). */
int spot_start(const struct cfg *c, const char *run_dir);
void spot_stop(void);
/* Non-blocking: 1 and fills n when a stop was requested by a signal or a
 * notice, else 0. Also reports a rebalance recommendation once via
 * *early_warning (may be NULL). */
int spot_poll(spot_notice *n, int *early_warning);

/* Watchdog: the loop calls spot_watchdog_kick() every step; if no kick
 * arrives for watchdog_seconds the process logs it and _exits ST_WATCHDOG. */
int spot_watchdog_start(double watchdog_seconds);
void spot_watchdog_kick(void);
void spot_watchdog_stop(void);

#endif
