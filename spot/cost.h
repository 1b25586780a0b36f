/* The money side seen from outside: `cost estimate` (plan a run from the
 * [cost] and [price.*] config), `cost report` (what a run cost, from its
 * events.jsonl) and the helpers the training loop uses to price its spend. */
#ifndef SPOTRAIN_COST_H
#define SPOTRAIN_COST_H

#include <stddef.h>
#include <stdint.h>

struct cfg;

/* Dense bf16 peak TFLOP/s of a GPU name (a100 312, h100/h200 989); 0 unknown. */
double cost_gpu_peak_tflops(const char *gpu);
/* Memory per GPU in GiB of a GPU name (a100 80, h100 80, h200 140); 0 unknown. */
double cost_gpu_memory_gib(const char *gpu);

/* Young/Daly optimal checkpoint interval sqrt(2 * C * MTBF), in the unit of
 * its arguments; INFINITY when mtbf is infinite (no interruptions). */
double cost_young_daly(double ckpt_cost, double mtbf);

/* $ per hour of the whole fleet: all nodes on-demand, and the mixed fleet
 * (ondemand_nodes on-demand, the rest spot). nodes <= 0 takes cost.nodes. */
void cost_fleet_hourly(const struct cfg *c, int64_t nodes, double *ondemand, double *spot);

/* Training-state memory per GPU: bf16 weights 2 + bf16 grads 2 + fp32
 * master 4 + Adam m 4 + Adam v 4 = 16 bytes per parameter (the ZeRO paper's
 * mixed-precision accounting); activations and buffers are not counted. */
enum { COST_DP, COST_ZERO1, COST_ZERO2, COST_ZERO3, COST_NSTAGES };
typedef struct {
    double bytes_per_param;       /* 16 */
    double total_gib;             /* whole training state */
    double per_gpu_gib[COST_NSTAGES];
    double gpu_gib;
    int64_t gpus;                 /* data-parallel GPUs the state is sharded over */
    int stage;                    /* lowest stage that fits, -1 none */
    int64_t zero3_min_gpus;       /* GPUs ZeRO-3 needs to fit */
} cost_memfit;
void cost_memory(uint64_t params, int64_t gpus, double gpu_gib, cost_memfit *m);

typedef struct {
    int64_t nodes, spot_nodes, gpus;
    double peak_tflops, mfu;
    double node_od, node_spot;    /* sums of the price items per node-hour */
    double fleet_od, fleet_spot;  /* $ per hour of the whole fleet */

    int have_model;
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
} cost_plan;

/* Pure computation from a loaded config. ST_OK or ST_CONFIG (one line). */
int cost_estimate(const struct cfg *c, cost_plan *p);

/* What a run has cost, from its events.jsonl (report.c). */
typedef struct {
    int segments, finished, killed, exits_75, notices, restarts, bad_lines, partial_last;
    int interruptions;            /* segments ended by exit 75 or with no exit record */
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
} cost_report;

/* Parses a ledger's text (a torn last line is ignored) and prices it with c
 * (NULL: hours only). ST_OK, or ST_DATA when there is no start record. */
int cost_report_compute(const char *text, size_t len, const struct cfg *c, cost_report *r);

/* `spotrain cost estimate|report ...`: argv[0] is "estimate" or "report". */
int cost_cli(int argc, char **argv);
/* `spotrain cost report` (report.c). */
int cost_report_cli(int argc, char **argv);

#endif
