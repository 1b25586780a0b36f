/* The run's records: events.jsonl (the ledger people and `cost report`
 * read) and the Prometheus textfile. Written by rank 0; every counter is
 * whole-run, continued from the ledger of earlier segments. */
#ifndef SPOTRAIN_LEDGER_H
#define SPOTRAIN_LEDGER_H

#include <stdint.h>
#include "ckpt/ckpt.h"
#include "util/events.h"
#include "config/config.h"

typedef struct {
    const cfg *c;
    int root;                 /* only rank 0 writes */
    events_log ev;
    /* textfile state */
    uint64_t checkpoints, notices, interruptions;   /* whole run */
    double spend_before;      /* $ of earlier segments */
    double hours_before;      /* training hours of earlier segments */
    int hard_failures;        /* kills and failed final saves of earlier segments */
    double cost_s;            /* newest measured cost of one save of earlier segments; < 0: none */
    double fleet_spot;        /* $ per hour of the fleet actually running */
    double segment_wall;      /* this segment's start, wall clock */
    ckpt_result last_ckpt;
} ledger;

/* Opens RUN_DIR/events.jsonl on rank 0 (ranks > 0 write nothing). */
int ledger_open(ledger *g, const cfg *c, int root);
void ledger_close(ledger *g);

/* Reads what earlier segments recorded (spend, interruptions, notices,
 * checkpoints, hours, hard failures) so the textfile's counters and the
 * automatic interval cover the whole run; nodes is the number of hosts this
 * segment actually runs on. Rank 0 only. */
void ledger_resume_counts(ledger *g, int nodes);

void ledger_start(ledger *g, int64_t step, int world, int nodes, const char *resumed_from,
                  const char *backend, const char *device, const char *precision, const char *libraries,
                  size_t params);
/* A resume read from object storage: one record per rank (bytes, seconds,
 * MB/s) and one for the whole download (bytes of all ranks over the slowest
 * rank's seconds). v holds bytes and seconds of each rank, interleaved. */
void ledger_download(ledger *g, int64_t step, const char *from, const double *v, int world);
/* A start that failed: the record carries the reason, so the ledger shows
 * why a segment did not train. */
void ledger_start_failed(ledger *g, int code, const char *reason);
/* gnorm is the unscaled gradient norm (null when it overflowed);
 * loss_scale the scale that step ran with (1 without loss scaling). */
void ledger_step(ledger *g, int64_t step, double loss, double lr, double gnorm, uint64_t tokens, double tps,
                 double ms, double train_seconds, double loss_scale);
/* A step whose scaled gradients overflowed: no optimizer update; the scale
 * it ran with and the one the next step uses. */
void ledger_overflow(ledger *g, int64_t step, double loss, double loss_scale, double next_scale);
/* Resume from a checkpoint another backend, precision or device model
 * wrote: why says what changed. */
void ledger_continuity(ledger *g, int64_t step, const char *why);
void ledger_eval(ledger *g, int64_t step, double val_loss);
void ledger_checkpoint(ledger *g, const ckpt_result *r);
/* durable < 0 is written as null. final: "ok", "failed", "skipped" (no time)
 * or "not_needed" (the stop step was already durable). remote: the newest
 * step complete on the remote (-1 none), or -2 when no remote is configured
 * (then the record has no remote fields). source: the notice's provider,
 * "peer", or "remote" (a finished run whose final upload did not complete). */
void ledger_stop(ledger *g, int64_t step, int64_t durable, int64_t remote, const char *final, const char *source,
                 const char *reason);
/* An "upload" record: one rank's shard objects (rank >= 0), or the whole
 * checkpoint once its manifest landed (rank < 0, ranks taking part); mb_s
 * is bytes / seconds in 10^6 bytes per second. why: a failure's reason or NULL. */
void ledger_upload(ledger *g, const char *url, int64_t step, int rank, int ranks, const char *status, uint64_t bytes,
                   double seconds, const char *why);
void ledger_exit(ledger *g, int64_t step, int code);
/* A wait for peers timed out (spot.comm_timeout_seconds): which agreement,
 * the rank that did not answer (-1: not known, a collective), seconds. */
void ledger_peer_timeout(ledger *g, int64_t step, const char *agreement, int peer, double waited, double timeout);
/* checkpoint.interval_seconds = auto chose a new interval, and why;
 * measured: cost_s is a measurement, not the prior (a later segment
 * starts from it). */
void ledger_interval(ledger *g, int64_t step, double seconds, const char *by, double cost_s, int measured,
                     double mtbf_s, int hard_failures, double hours);

typedef struct {
    int64_t step, max_steps;
    double loss, tokens_per_second, train_seconds;
    uint64_t tokens;
} ledger_progress;

/* Rewrites the textfile when it is due (every metrics.every steps, the last
 * step) or when force is set (a stop). */
void ledger_metrics(ledger *g, const ledger_progress *p, int force);

#endif
