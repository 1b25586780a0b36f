/* checkpoint.interval_seconds = auto: the Young/Daly interval sqrt(2 C M)
 * from what the run observes. C is the measured cost of one save to
 * training (the stall plus the slowdown while the writer runs); M the
 * expected time between hard failures (kills, and stops whose final save
 * failed or did not fit), from the run's ledger blended with a prior rate. */
#ifndef SPOTRAIN_INTERVAL_H
#define SPOTRAIN_INTERVAL_H

#include <stddef.h>
#include <stdint.h>

/* The spread of the log-normal prior on the rate, in ln units (see
 * interval_rate): one standard deviation is a factor of 12. */
#define INTERVAL_PRIOR_SPREAD 2.5
/* Steps of a segment, after its first (warm-up) step, before the save that
 * measures C when no measured C is known: enough for the step-time mean
 * the slowdown is compared with. */
#define INTERVAL_PROBE_STEPS 3

/* What set the interval in force (the ledger's "by"). */
typedef enum {
    INTERVAL_BY_YOUNG_DALY,   /* sqrt(2 C M) */
    INTERVAL_BY_OVERHEAD,     /* C / overhead: saves cheap enough to take more often */
    INTERVAL_BY_MIN,          /* checkpoint.min_seconds */
    INTERVAL_BY_MAX           /* checkpoint.max_seconds */
} interval_by;

typedef struct {
    double lo, hi;            /* checkpoint.min_seconds / max_seconds */
    double overhead;          /* checkpoint.overhead_percent / 100 */
    double prior_rate;        /* hard failures per hour assumed before any are seen */
    /* what the ledger of earlier segments showed */
    int hard_failures;
    double hours_before;      /* training hours of earlier segments */
    /* measured in this segment, or in an earlier one (from the ledger) */
    double cost_s;            /* C: mean measured cost of the newest saves, seconds (< 0: none yet) */
    int n_saves;              /* measurements in cost_s */
    double prior_cost_s;      /* C before the first measurement ([cost] ckpt_stall_seconds) */
    int cost_logged;          /* a measured C is in the ledger already */
    double idle_ms, busy_ms;  /* mean step time with the writer idle / busy (EWMA) */
    int n_idle, n_busy;
    int steps;                /* in this segment, the warm-up step included */
    int probed;               /* the save that measures C was asked for */
    double interval_s;        /* in force */
    interval_by by;           /* what set it */
} interval_auto;

/* Hard failures per hour: the mean of the posterior of a Poisson rate
 * after n failures in `hours`, from a log-normal prior of mean prior_rate
 * and spread INTERVAL_PRIOR_SPREAD. prior_rate 0: the observed n / hours. */
double interval_rate(int n, double hours, double prior_rate);
/* The interval auto keeps: sqrt(2 C M), or C / overhead where that is
 * shorter (overhead a fraction; 0: never), clamped to [lo, hi]; *by says
 * which of the four set it. */
double interval_choose(double cost_s, double mtbf_s, double overhead, double lo, double hi, interval_by *by);
/* The ledger's name for it: "young_daly", "overhead", "min_seconds", "max_seconds". */
const char *interval_by_name(interval_by by);
/* C of one save: its stall plus the write time scaled by how much slower
 * steps run while the writer works (idle_ms, busy_ms mean step times). */
double interval_save_cost(double stall_s, double write_s, double idle_ms, double busy_ms);
/* Hard failures in an events.jsonl text: segments that ended without an
 * exit record (killed) and stops whose final save failed or was skipped. */
int interval_ledger_failures(const char *text, size_t len);
/* The newest measured C in an events.jsonl text (an interval record with
 * "cost_measured":true), or -1 when there is none. */
double interval_ledger_cost(const char *text, size_t len);

void interval_init(interval_auto *a, double lo, double hi, double overhead, double prior_rate, double prior_cost_s);
/* What earlier segments' ledger showed: hard failures, training hours and
 * the newest measured C (< 0: none; otherwise no probing save). */
void interval_resume(interval_auto *a, int hard_failures, double hours_before, double cost_s);
/* One step's time, and whether a background save ran during it. The
 * segment's first step (allocation, page faults, cold caches) is left out. */
void interval_step(interval_auto *a, double ms, int writer_busy);
/* Whether a save is due `since_s` after the last one: the interval has
 * passed, or C is unknown and this segment has run INTERVAL_PROBE_STEPS
 * steps (asked once). */
int interval_due(interval_auto *a, double since_s);
/* A save finished: its stall and write time. C is the mean over the newest
 * four saves. */
void interval_saved(interval_auto *a, double stall_s, double write_s);
/* Recomputes the interval at `hours_now` of training in this segment;
 * returns 1 when it moved by more than 10% or C was measured for the
 * first time (worth a ledger line), and fills C and M (seconds) and
 * whether C is measured, for that line. */
int interval_update(interval_auto *a, double hours_now, double *cost_s, double *mtbf_s, int *measured);

#endif
