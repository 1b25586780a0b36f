/* The money side seen from outside: `cost estimate` (plan a run from
 * cost_opts), `cost report` (what a run cost, from its events.jsonl), their
 * printers, and the helpers the training loop uses to price its spend. */
#ifndef SPOTRAIN_COST_H
#define SPOTRAIN_COST_H

#include <stddef.h>
#include <stdint.h>

#include "commcost.h"
#include "price.h"
#include "model/memplan.h"

/* Everything cost needs, filled by the config code (cost has no
 * idea what an INI file or a model is). */
typedef struct {
    char source[1024];            /* where these came from, for messages; "" = defaults */
    int64_t nodes, ondemand_nodes, gpus_per_node;
    char gpu[32];                 /* a100 | h100 | h200 | custom */
    double peak_tflops, mfu, tokens, ondemand_hours, spot_hours, throughput_ratio;
    double interruptions_per_hour, restart_minutes, ckpt_stall_seconds, ckpt_interval_minutes;
    double gpu_memory_gib;
    double network_gbps;          /* per node; 0 = unknown (no communication share) */
    cost_price prices[COST_MAX_PRICES];
    int n_prices;
    /* 0 when gpu and gpus_per_node are built-in defaults rather than the
     * user's: the estimate then says nothing about GPUs, work or memory. */
    int hardware_given;
    /* 0 when the interruption rate, restart time and stall are all defaults. */
    int overheads_given;
    /* The model, as the trainer computes it; params 0 = the input names no model. */
    char model[32];
    uint64_t params;
    double flops_per_token;
    double tokens_per_step;       /* global batch x sequence length */
    int64_t global_batch, micro_batch; /* sequences per step, and per piece of a rank's share */
    /* The one memory model's per-GPU plan of this run (model/memplan.h),
     * computed by the config side: mem_status ST_OK, else mem_why says why
     * there is none (the printer shows it). */
    int have_mem, mem_status;
    memplan_cfg mem_cfg;
    memplan_bytes mem;
    char mem_why[256];
} cost_opts;

/* Dense bf16 peak TFLOP/s of a GPU name (a100 312, h100/h200 989); 0 unknown. */
double cost_gpu_peak_tflops(const char *gpu);
/* Memory per GPU in GiB of a GPU name (a100 80, h100 80, h200 140); 0 unknown. */
double cost_gpu_memory_gib(const char *gpu);

/* Young/Daly optimal checkpoint interval sqrt(2 * C * MTBF), in the unit of
 * its arguments; INFINITY when mtbf is infinite (no interruptions). */
double cost_young_daly(double ckpt_cost, double mtbf);

/* $ per hour of the whole fleet: all nodes on-demand, and the mixed fleet
 * (ondemand_nodes on-demand, the rest spot). nodes <= 0 takes cost.nodes. */
void cost_fleet_hourly(const cost_opts *o, int64_t nodes, double *ondemand, double *spot);

/* Whether the planned per-GPU bytes (cost_opts.mem, the trainer's own
 * memory model) fit the GPU's memory. */
typedef struct {
    int planned;                  /* cost_opts carried a plan */
    double per_gpu_gib, gpu_gib;  /* gpu_gib 0 = unknown */
    int fits;                     /* 1, 0, or -1 when the GPU memory is unknown */
    char advice[640];             /* what shrinks the plan, when it does not fit */
} cost_memfit;
void cost_memory(const cost_opts *o, double gpu_gib, cost_memfit *m);

typedef struct {
    int64_t nodes, spot_nodes, gpus;
    double peak_tflops, mfu;
    double node_od, node_spot;    /* sums of the price items per node-hour */
    double fleet_od, fleet_spot;  /* $ per hour of the whole fleet */

    int have_model;               /* the input names a model */
    int have_hardware;            /* ... and the GPUs (else no work or memory figures) */
    int have_work;                /* ondemand_hours or tokens given (else prices only) */
    uint64_t params;
    double flops_per_token;

    int hours_derived;            /* ondemand_hours came from tokens */
    double od_hours, spot_hours, od_cost, spot_cost;
    const char *spot_method;      /* "given" | "throughput_ratio" | "model" */
    int never_finishes;           /* overheads eat all progress */

    double int_rate;              /* job interruptions per hour */
    double stall_h, restart_h, interval_h;  /* checkpoint stall, restart, interval (hours) */
    int interval_optimal;         /* interval_h is Young/Daly (not configured) */
    double young_daly_h;
    double interruptions, lost_h, restart_total_h, stall_total_h;

    double budget_tokens;         /* tokens od_hours train at mfu; 0 n/a */
    double needed_mfu;            /* MFU that tokens in od_hours needs; 0 n/a */
    int implausible;

    cost_memfit mem;

    /* One step's gradient reduce-scatter and parameter all-gather over
     * gpus ranks (commcost.h, bf16 gather); comm.share only with
     * network_gbps and a step's compute known. */
    int have_comm;
    double step_compute_s;
    cost_comm_out comm;             /* the planned stage (mem_cfg's; 1 without a plan) */
    cost_comm_out comm_stage[4];    /* [1..3]: each ZeRO stage */
    int comm_zero, comm_reduce;     /* the planned stage, COMM_REDUCE_* */
    int64_t micro_steps;            /* micro-batches per rank per step */
} cost_plan;

/* Pure computation. ST_OK (with have_work 0 when only prices are known) or
 * ST_CONFIG (one line). */
int cost_estimate(const cost_opts *o, cost_plan *p);

enum { COST_TABLE, COST_JSON, COST_CSV };
/* The estimate as a table (with what to add for the figures it cannot
 * give), JSON or CSV on stdout. */
void cost_estimate_print(const cost_opts *o, const cost_plan *p, int format);

/* What a run has cost, from its events.jsonl (report.c). */
typedef struct {
    int segments, finished, killed, exits_75, notices, restarts, bad_lines, partial_last;
    int interruptions;            /* segments ended by exit 75 or with no exit record */
    int earlier_runs;             /* fresh starts before the newest one, ignored */
    int failed_starts;            /* refused starts (ledger "failed": true): not segments */
    double first_ts, last_ts;
    double run_hours, node_hours, downtime_hours;
    int64_t nodes;                /* of the newest segment */
    int64_t first_step, step, max_steps, tokens_per_step;
    int64_t lost_steps;
    double lost_hours, stall_hours;
    int checkpoints;
    double train_seconds;         /* newest cumulative training seconds */
    double steps_per_hour;        /* net progress per running hour, all overheads included */
    double hours_left;            /* at steps_per_hour; 0 when finished, INFINITY unknown */
    int have_prices;
    double spend, cost_left, projected_total;
    double ondemand_so_far, ondemand_total;  /* same progress on on-demand nodes, no overheads */
    double spot_hourly, ondemand_hourly;     /* of the newest segment's nodes */
} cost_report;

/* Parses a ledger's text (a torn last line is ignored) and prices it with o
 * (NULL: hours only). The run starts at the newest fresh start (a start
 * record with "resumed_from":null): records of an earlier run the same
 * run_dir held (train --force) are not this run's. ST_OK, or ST_DATA when
 * there is no start record. */
int cost_report_compute(const char *text, size_t len, const cost_opts *o, cost_report *r);
/* prices_from names where the prices came from (table output). */
void cost_report_print(const char *run_dir, const char *prices_from, const cost_report *r, int format,
                       int csv_header);

#endif
