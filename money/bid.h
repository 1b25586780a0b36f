/* Spot price history -> where and how much: parsers for AWS and Alibaba
 * price-history JSON and CSV, per zone/instance-type statistics, and the
 * persistent-request bid model, and the recommendation `spotrain bid` prints
 * (its options and usage are cli/bid.c's). */
#ifndef SPOTRAIN_BID_H
#define SPOTRAIN_BID_H

#include <stddef.h>

/* Larger inputs are refused (ST_DATA) rather than read into memory. */
#define BID_MAX_FILE_BYTES (256u << 20)
#define BID_MAX_SERIES 4096

typedef struct {
    double ts;          /* epoch seconds */
    double price;       /* $ per instance-hour */
    double origin;      /* on-demand price from the file (Alibaba OriginPrice), 0 = none */
    long seq;           /* input order, so equal timestamps keep the later record */
} bid_point;

typedef struct {
    char zone[64];
    char type[64];
    char product[64];   /* AWS ProductDescription; empty for CSV and Alibaba */
    char currency[8];   /* AWS USD; Alibaba the response's Currency; CSV its 5th column; "" unknown */
    char source[8];     /* aws | alibaba | csv: what the file was */
    bid_point *pts;
    int n, cap;
} bid_series;

typedef struct {
    bid_series *s;
    int n, cap;
    long seq;
    char currency[8];   /* while parsing: the file's currency */
    char source[8];     /* while parsing: the file's format */
} bid_history;

/* Parses one file's text (format detected: AWS JSON, Alibaba JSON or CSV)
 * and adds its records to h. name is used in error lines. ST_OK or ST_DATA. */
int bid_parse(bid_history *h, const char *name, const char *buf, size_t len);
/* Sorts every series by time and drops records superseded at the same
 * timestamp. ST_DATA when h holds no records at all. */
int bid_finish(bid_history *h);
void bid_history_free(bid_history *h);


typedef struct {
    int samples;
    double t0, t1;          /* first record, end of the observed window */
    double hours;           /* t1 - t0 */
    double mean;            /* time-weighted */
    double p50, p95, max, min;  /* time-weighted quantiles */
    double last;            /* price in effect at the end */
    double trend_per_day;   /* least-squares slope over the trend window */
    int trend_points;
    double origin;          /* newest on-demand price seen in the file, 0 = none */
} bid_stats;

/* The series as a step function on [first record, end]: each price holds
 * until the next record; the last holds until end. ST_OK or ST_SOFTWARE. */
int bid_series_stats(const bid_series *s, double end, double trend_days, bid_stats *st);
/* Fraction of time in [first record, end] the price was above cap. */
double bid_frac_above(const bid_series *s, double end, double cap);

typedef struct {
    double cap;
    double avail;           /* F(cap): fraction of time price <= cap */
    double upcross_per_hour;/* up-crossings of cap per hour of history */
    double int_per_run_hour;/* interruptions per hour of running */
    double mean_paid;       /* E[price | price <= cap] */
    double run_hours;       /* billed hours incl. recovery; INFINITY if never finishes */
    double wall_hours;      /* run_hours / avail */
    double interruptions;   /* expected count */
    double cost;            /* mean_paid * run_hours */
} bid_eval;

/* Evaluates a persistent request with max price cap for a job needing hours
 * of work and restart_hours of recovery per interruption. */
void bid_eval_cap(const bid_series *s, double end, double cap, double hours,
                  double restart_hours, bid_eval *e);
/* Cheapest cap among the observed prices (the cost is a step function of the
 * cap, so an optimum is always at one of them). deadline_hours > 0 drops caps
 * whose expected wall time exceeds it. Returns 0, or -1 when none qualifies. */
int bid_best_cap(const bid_series *s, double end, double hours, double restart_hours,
                 double deadline_hours, bid_eval *best);

/* GPUs of a well-known instance type (p4d.24xlarge 8, ...); 0 unknown. */
int bid_type_gpus(const char *type);

#define BID_MAX_GPU_ARGS 64

/* What to recommend for, and how to print it. */
typedef struct {
    const char **files;     /* price histories, n_files of them */
    int n_files;
    double hours;           /* running hours the job needs */
    double restart_minutes; /* recovery per interruption */
    double ondemand;        /* $ per hour to compare with; 0: the file's, if any */
    double trend_days, deadline, alert_above;
    const char *type;       /* only this instance type; NULL: all */
    int json, have_alert, per_gpu;
    const char *gpu_type[BID_MAX_GPU_ARGS];   /* instance type gpu_type[i] has gpu_count[i] GPUs */
    int gpu_count[BID_MAX_GPU_ARGS];
    int n_gpu;
} bid_opts;

/* Reads the files, ranks zones and caps, prints table or JSON on stdout.
 * ST_OK; ST_ALERT when a recommended zone's price is above alert_above;
 * ST_USAGE, ST_DATA, ST_NOINPUT, ST_IOERR with one line on stderr. */
int bid_run(const bid_opts *o);

#endif
