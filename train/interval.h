/* checkpoint.interval_seconds = auto: the Young/Daly interval sqrt(2 C M)
 * from what the run observes. C is the measured cost of one save to
 * training (the stall plus the slowdown while the writer runs); M the
 * expected time between hard failures (kills, and stops whose final save
 * failed or did not fit), from the run's ledger blended with a prior rate. */
#ifndef SPOTRAIN_INTERVAL_H
#define SPOTRAIN_INTERVAL_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double lo, hi;            /* checkpoint.min_seconds / max_seconds */
    double prior_rate;        /* hard failures per hour assumed before any are seen */
    /* what the ledger of earlier segments showed */
    int hard_failures;
    double hours_before;      /* training hours of earlier segments */
    /* measured in this segment */
    double cost_s;            /* C: newest measured cost of one save, seconds (< 0: none yet) */
    double prior_cost_s;      /* C before the first measurement ([cost] ckpt_stall_seconds) */
    double idle_ms, busy_ms;  /* mean step time with the writer idle / busy (EWMA) */
    int n_idle, n_busy;
    double interval_s;        /* in force */
} interval_auto;

/* Hard failures per hour: the observed rate n / hours and the prior,
 * weighted by the number of failures seen (n = 0: the prior alone). */
double interval_rate(int n, double hours, double prior_rate);
/* sqrt(2 C M) clamped to [lo, hi]. */
double interval_young_daly(double cost_s, double mtbf_s, double lo, double hi);
/* C of one save: its stall plus the write time scaled by how much slower
 * steps run while the writer works (idle_ms, busy_ms mean step times). */
double interval_save_cost(double stall_s, double write_s, double idle_ms, double busy_ms);
/* Hard failures in an events.jsonl text: segments that ended without an
 * exit record (killed) and stops whose final save failed or was skipped. */
int interval_ledger_failures(const char *text, size_t len);

void interval_init(interval_auto *a, double lo, double hi, double prior_rate, double prior_cost_s);
/* One step's time, and whether a background save ran during it. */
void interval_step(interval_auto *a, double ms, int writer_busy);
/* A save finished: its stall and write time. */
void interval_saved(interval_auto *a, double stall_s, double write_s);
/* Recomputes the interval at `hours_now` of training in this segment;
 * returns 1 when it moved by more than 10% (worth a ledger line), and
 * fills C and M (seconds) for that line. */
int interval_update(interval_auto *a, double hours_now, double *cost_s, double *mtbf_s);

#endif
