/* The Prometheus textfile the training loop rewrites every metrics.every
 * steps (for node_exporter's textfile collector): a plain struct the loop
 * fills, written to a temp file and renamed so scrapes never see half. */
#ifndef SPOTRAIN_METRICS_H
#define SPOTRAIN_METRICS_H

#include <stdint.h>

typedef struct {
    const char *run;              /* label value (e.g. the run_dir); may be NULL */
    int64_t step, max_steps;
    double loss;                  /* NaN before the first step */
    double tokens_per_second;
    double tokens_total;
    double train_seconds;         /* cumulative, all segments */
    double ckpt_seconds;          /* stall + write of the newest checkpoint */
    double ckpt_stall_seconds;    /* training stall of the newest checkpoint */
    double ckpt_bytes;            /* stored bytes of the newest checkpoint */
    uint64_t checkpoints_total;
    uint64_t notices_total;       /* provider notices and signals seen */
    uint64_t interruptions_total; /* segments ended by preemption (from the ledger) */
    double spend_dollars;         /* at the [price.*] spot prices, all segments */
    double price_per_hour;        /* $ per hour of the fleet now (spot prices in use) */
} metrics_sample;

/* Writes path atomically (temp + rename). ST_OK or ST_IOERR (one line). */
int metrics_write(const char *path, const metrics_sample *s);
/* The text itself (malloc'd), for tests and for callers that ship it elsewhere. */
char *metrics_render(const metrics_sample *s);

#endif
