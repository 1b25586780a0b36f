/* The config side of spot/: cfg -> spot_opts and cost_opts, and the
 * `spotrain cost estimate|report` commands (argument parsing and the INI
 * loading; money/cost.c and money/report.c compute and print). */
#include "cost.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util/util.h"
#include "model/model.h"
#include "train/train.h"

void cfg_spot_opts(const cfg *c, spot_opts *o)
{
    memset(o, 0, sizeof *o);
    snprintf(o->provider, sizeof o->provider, "%s", c->provider);
    o->poll_seconds = c->poll_seconds;
    o->grace_seconds = c->grace_seconds;
    snprintf(o->metadata_url, sizeof o->metadata_url, "%s", c->metadata_url);
    snprintf(o->notice_file, sizeof o->notice_file, "%s", c->notice_file);
    snprintf(o->vm_name, sizeof o->vm_name, "%s", c->vm_name);
}

/* The per-GPU plan --dry-run --world nodes*gpus_per_node prints for this
 * config: the same input (train_memplan_cfg) through the same model. */
static void cfg_cost_memplan(const cfg *c, const model_shape *s, cost_opts *o)
{
    int64_t gpus = c->nodes * c->gpus_per_node;
    o->have_mem = 1;
    o->mem_status = train_memplan_cfg(c, s, 1, gpus > 0 && gpus <= INT32_MAX ? (int)gpus : 1, &o->mem_cfg);
    if (o->mem_status == ST_OK)
        o->mem_status = memplan_compute(&o->mem_cfg, &o->mem);
    if (o->mem_status != ST_OK)
        snprintf(o->mem_why, sizeof o->mem_why, "%s", util_last_error());
}

int cfg_cost_opts(const cfg *c, cost_opts *o)
{
    _Static_assert(CFG_MAX_PRICES <= COST_MAX_PRICES, "cost_opts holds every [price.*]");
    memset(o, 0, sizeof *o);
    snprintf(o->source, sizeof o->source, "%s", c->path);
    o->nodes = c->nodes;
    o->ondemand_nodes = c->ondemand_nodes;
    o->gpus_per_node = c->gpus_per_node;
    snprintf(o->gpu, sizeof o->gpu, "%s", c->gpu);
    o->peak_tflops = c->peak_tflops;
    o->mfu = c->mfu;
    o->tokens = c->tokens;
    o->ondemand_hours = c->ondemand_hours;
    o->spot_hours = c->spot_hours;
    o->throughput_ratio = c->throughput_ratio;
    o->interruptions_per_hour = c->interruptions_per_hour;
    o->restart_minutes = c->restart_minutes;
    o->ckpt_stall_seconds = c->ckpt_stall_seconds;
    o->ckpt_interval_minutes = c->ckpt_interval_minutes;
    o->gpu_memory_gib = c->gpu_memory_gib;
    o->network_gbps = c->network_gbps;
    for (int i = 0; i < c->n_prices; i++) {
        snprintf(o->prices[i].name, sizeof o->prices[i].name, "%s", c->prices[i].name);
        o->prices[i].ondemand = c->prices[i].ondemand;
        o->prices[i].spot = c->prices[i].spot;
    }
    o->n_prices = c->n_prices;
    /* The defaults (8 h100, the tiny preset) describe no one's plan. */
    o->hardware_given = cfg_is_given(c, "cost", "gpu") || cfg_is_given(c, "cost", "gpus_per_node") ||
                        cfg_is_given(c, "cost", "peak_tflops");
    o->overheads_given = cfg_is_given(c, "cost", "interruptions_per_hour") ||
                         cfg_is_given(c, "cost", "restart_minutes") ||
                         cfg_is_given(c, "cost", "ckpt_stall_seconds");
    if (cfg_is_given(c, "model", NULL)) {
        model_shape s;
        int rc = model_shape_from_cfg(&s, c);
        if (rc)
            return rc;
        snprintf(o->model, sizeof o->model, "%s", c->preset);
        o->params = model_count_params(&s);
        o->flops_per_token = model_flops_per_token(&s);
        o->tokens_per_step = (double)c->global_batch * (double)s.seq_len;
        o->global_batch = c->global_batch;
        o->micro_batch = c->micro_batch;
        cfg_cost_memplan(c, &s, o);
    }
    return ST_OK;
}

static void cost_cli_usage(void)
{
    printf("usage: spotrain cost estimate CONFIG [--set k=v]... [--json|--csv]\n"
           "       spotrain cost report RUN_DIR [--config FILE] [--json|--csv [--header]]\n"
           "estimate: on-demand vs spot hours and cost of a planned run from [cost] and\n"
           "  [price.NAME] ($ per node-hour), expected interruptions, lost work, the\n"
           "  Young/Daly checkpoint interval, whether the plan is plausible, and whether\n"
           "  the trainer's per-GPU memory plan (as --dry-run prints it) fits. Prints only\n"
           "  what CONFIG determines and says which keys the rest needs.\n"
           "report: what a run has cost so far from RUN_DIR/events.jsonl and the\n"
           "  prices in RUN_DIR/config.ini (or --config), and what finishing will cost,\n"
           "  counted from the newest fresh start (train --force starts a new run).\n"
           "  Safe from cron while training writes; --csv --header prints the header.\n"
           "Exit: 0 ok, 64 usage, 65 bad data, 66 missing input, 78 bad config.\n");
}

static void cost_cli_estimate_usage(void)
{
    printf("usage: spotrain cost estimate CONFIG [--set k=v]... [--json|--csv]\n"
           "  on-demand vs spot hours and cost of a planned run from [cost] and [price.NAME]\n"
           "  ($ per node-hour); prints only what CONFIG determines and says what to add.\n"
           "  With the model and GPUs: the communication per step, and with\n"
           "  cost.network_gbps its share of a step.\n"
           "  --set k=v   override any INI key (repeatable)\n"
           "  --json, --csv   machine-readable output\n"
           "Exit: 0 ok, 64 usage, 66 missing input, 78 bad config.\n");
}

static void cost_cli_report_usage(void)
{
    printf("usage: spotrain cost report RUN_DIR [--config FILE] [--json|--csv [--header]]\n"
           "  spend so far from RUN_DIR/events.jsonl (counted from the newest fresh start) at\n"
           "  the prices in RUN_DIR/config.ini or --config FILE, and the cost to finish.\n"
           "  --csv --header   also print the CSV header (for a new spend.csv)\n"
           "Exit: 0 ok, 64 usage, 65 bad data, 66 missing input, 78 bad config.\n");
}

static int cost_cli_estimate(int argc, char **argv)
{
    const char *path = NULL;
    int format = COST_TABLE, rc;
    char **sets = calloc((size_t)argc + 1, sizeof *sets);
    int n_sets = 0;
    cfg *c = calloc(1, sizeof *c);
    cost_opts *o = calloc(1, sizeof *o);
    cost_plan p;
    if (!sets || !c || !o) {
        rc = util_fail(ST_SOFTWARE, "out of memory");
        goto out;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") || !strcmp(argv[i], "--csv")) {
            int f = argv[i][2] == 'j' ? COST_JSON : COST_CSV;
            if (format != COST_TABLE && format != f) {
                rc = util_fail(ST_USAGE, "cost estimate: --json and --csv exclude each other");
                goto out;
            }
            format = f;
        } else if (!strcmp(argv[i], "--set")) {
            if (i + 1 >= argc) {
                rc = util_fail(ST_USAGE, "--set needs section.key=value");
                goto out;
            }
            sets[n_sets++] = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            rc = util_fail(ST_USAGE, "cost estimate: unknown option %s; see spotrain cost estimate --help", argv[i]);
            goto out;
        } else if (!path) {
            path = argv[i];
        } else {
            rc = util_fail(ST_USAGE, "cost estimate: one CONFIG only (got %s and %s)", path, argv[i]);
            goto out;
        }
    }
    if (!path) {
        rc = util_fail(ST_USAGE, "cost estimate: missing CONFIG; usage: spotrain cost estimate CONFIG [--json|--csv]");
        goto out;
    }
    rc = cfg_load(c, path, sets, n_sets);
    if (rc == ST_OK)
        rc = cfg_cost_opts(c, o);
    if (rc == ST_OK)
        rc = cost_estimate(o, &p);
    if (rc == ST_OK)
        cost_estimate_print(o, &p, format);
out:
    free(sets);
    free(c);
    free(o);
    return rc;
}

static int cost_cli_report(int argc, char **argv)
{
    const char *dir = NULL, *cfgpath = NULL;
    int format = COST_TABLE, header = 0, rc;
    char path[4096], cfgbuf[4096];
    char *text = NULL;
    size_t len = 0;
    cfg *c = NULL;
    cost_opts *o = NULL;
    cost_report r;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") || !strcmp(argv[i], "--csv")) {
            int f = argv[i][2] == 'j' ? COST_JSON : COST_CSV;
            if (format != COST_TABLE && format != f)
                return util_fail(ST_USAGE, "cost report: --json and --csv exclude each other");
            format = f;
        } else if (!strcmp(argv[i], "--header")) {
            header = 1;
        } else if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            cfgpath = argv[++i];
        } else if (!strcmp(argv[i], "--config")) {
            return util_fail(ST_USAGE, "cost report: --config needs a FILE");
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return util_fail(ST_USAGE, "cost report: unknown option %s; see spotrain cost report --help", argv[i]);
        } else if (!dir) {
            dir = argv[i];
        } else {
            return util_fail(ST_USAGE, "cost report: one RUN_DIR only (got %s and %s)", dir, argv[i]);
        }
    }
    if (!dir)
        return util_fail(ST_USAGE, "cost report: missing RUN_DIR; usage: spotrain cost report RUN_DIR [--config FILE] [--json|--csv [--header]]");
    if (header && format != COST_CSV)
        return util_fail(ST_USAGE, "cost report: --header goes with --csv");
    if (util_fmt(path, sizeof path, "%s/events.jsonl", dir) < 0)
        return util_fail(ST_USAGE, "cost report: path too long: %s", dir);
    if (!cfgpath) {
        struct stat st;
        if (util_fmt(cfgbuf, sizeof cfgbuf, "%s/config.ini", dir) >= 0 && stat(cfgbuf, &st) == 0)
            cfgpath = cfgbuf;
    }
    rc = util_read_file(path, &text, &len);
    if (rc)
        goto out;
    if (cfgpath) {
        c = calloc(1, sizeof *c);
        o = calloc(1, sizeof *o);
        if (!c || !o) {
            rc = util_fail(ST_SOFTWARE, "out of memory");
            goto out;
        }
        rc = cfg_load(c, cfgpath, NULL, 0);
        if (rc == ST_OK)
            rc = cfg_cost_opts(c, o);
        if (rc)
            goto out;
    }
    rc = cost_report_compute(text, len, o, &r);
    if (rc == ST_OK)
        cost_report_print(dir, cfgpath ? cfgpath : "RUN_DIR/config.ini", &r, format, header);
out:
    free(text);
    free(c);
    free(o);
    return rc;
}

int cost_cli_main(int argc, char **argv)
{
    int help = 0;
    for (int i = 0; i < argc; i++)
        help |= !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h") || !strcmp(argv[i], "help");
    if (argc < 1 || (help && strcmp(argv[0], "estimate") && strcmp(argv[0], "report"))) {
        cost_cli_usage();
        return argc < 1 ? ST_USAGE : ST_OK;
    }
    if (!strcmp(argv[0], "estimate"))
        return help ? (cost_cli_estimate_usage(), ST_OK) : cost_cli_estimate(argc, argv);
    if (!strcmp(argv[0], "report"))
        return help ? (cost_cli_report_usage(), ST_OK) : cost_cli_report(argc, argv);
    return util_fail(ST_USAGE, "cost: unknown subcommand '%s' (estimate | report)", argv[0]);
}
