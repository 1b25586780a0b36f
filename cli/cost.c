/* `spotrain cost estimate|report`: their options and usage, and the INI
 * loading (a CONFIG, or RUN_DIR/config.ini) before money/cost.c and
 * money/report.c compute and print. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config/opts.h"
#include "money/cost.h"
#include "util/util.h"

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

enum { COST_OPT_JSON = CLI_LONG, COST_OPT_CSV, COST_OPT_SET, COST_OPT_HEADER, COST_OPT_CONFIG };

static const struct option cost_estimate_opts[] = {
    {"json", no_argument, NULL, COST_OPT_JSON},
    {"csv", no_argument, NULL, COST_OPT_CSV},
    {"set", required_argument, NULL, COST_OPT_SET},
    CLI_OPT_HELP,
    {0}};

static const struct option cost_report_opts[] = {
    {"json", no_argument, NULL, COST_OPT_JSON},
    {"csv", no_argument, NULL, COST_OPT_CSV},
    {"header", no_argument, NULL, COST_OPT_HEADER},
    {"config", required_argument, NULL, COST_OPT_CONFIG},
    CLI_OPT_HELP,
    {0}};

/* --json or --csv into *format; they exclude each other. */
static int cost_cli_format(const char *cmd, int opt, int *format)
{
    int f = opt == COST_OPT_JSON ? COST_JSON : COST_CSV;
    if (*format != COST_TABLE && *format != f)
        return util_fail(ST_USAGE, "%s: --json and --csv exclude each other", cmd);
    *format = f;
    return ST_OK;
}

typedef struct {
    const char *path;       /* CONFIG or RUN_DIR */
    const char *config;     /* report --config FILE */
    char **sets;
    int n_sets, format, header, help;
} cost_cli_args;

/* The options of estimate (report: 1 for report's) into o. */
static int cost_cli_parse(int argc, char **argv, int report, cost_cli_args *o)
{
    const char *cmd = report ? "cost report" : "cost estimate", *what = report ? "RUN_DIR" : "CONFIG";
    cli_args a;
    int opt, rc = ST_OK;
    cli_args_init(&a, cmd, argc, argv, report ? cost_report_opts : cost_estimate_opts, "h");
    while (rc == ST_OK && !o->help && (opt = cli_args_next(&a)) != CLI_END) {
        if (opt == COST_OPT_JSON || opt == COST_OPT_CSV)
            rc = cost_cli_format(cmd, opt, &o->format);
        else if (opt == COST_OPT_SET)
            o->sets[o->n_sets++] = a.arg;
        else if (opt == COST_OPT_HEADER)
            o->header = 1;
        else if (opt == COST_OPT_CONFIG)
            o->config = a.arg;
        else if (opt == 'h')
            o->help = 1;
        else if (opt == CLI_OPERAND && !o->path)
            o->path = a.arg;
        else if (opt == CLI_OPERAND)
            rc = util_fail(ST_USAGE, "%s: one %s only (got %s and %s)", cmd, what, o->path, a.arg);
        else
            rc = ST_USAGE;
    }
    if (rc != ST_OK || o->help)
        return rc;
    if (!o->path)
        return report ? util_fail(ST_USAGE, "cost report: missing RUN_DIR; usage: spotrain cost report RUN_DIR "
                                  "[--config FILE] [--json|--csv [--header]]")
                      : util_fail(ST_USAGE, "cost estimate: missing CONFIG; usage: spotrain cost estimate CONFIG "
                                  "[--json|--csv]");
    if (o->header && o->format != COST_CSV)
        return util_fail(ST_USAGE, "cost report: --header goes with --csv");
    return ST_OK;
}

static int cost_cli_estimate(int argc, char **argv)
{
    cost_cli_args a = {.format = COST_TABLE};
    int rc;
    a.sets = calloc((size_t)argc + 1, sizeof *a.sets);
    cfg *c = calloc(1, sizeof *c);
    cost_opts *o = calloc(1, sizeof *o);
    cost_plan p;
    if (!a.sets || !c || !o) {
        rc = util_fail(ST_SOFTWARE, "out of memory");
        goto out;
    }
    rc = cost_cli_parse(argc, argv, 0, &a);
    if (rc == ST_OK && a.help) {
        cost_cli_estimate_usage();
        goto out;
    }
    if (rc == ST_OK)
        rc = cfg_load(c, a.path, a.sets, a.n_sets);
    if (rc == ST_OK)
        rc = cfg_cost_opts(c, o);
    if (rc == ST_OK)
        rc = cost_estimate(o, &p);
    if (rc == ST_OK)
        cost_estimate_print(o, &p, a.format);
out:
    free(a.sets);
    free(c);
    free(o);
    return rc;
}

static int cost_cli_report(int argc, char **argv)
{
    cost_cli_args a = {.format = COST_TABLE};
    const char *dir, *cfgpath;
    int rc;
    char path[4096], cfgbuf[4096];
    char *text = NULL;
    size_t len = 0;
    cfg *c = NULL;
    cost_opts *o = NULL;
    cost_report r;
    rc = cost_cli_parse(argc, argv, 1, &a);
    if (rc != ST_OK || a.help)
        return rc == ST_OK ? (cost_cli_report_usage(), ST_OK) : rc;
    dir = a.path;
    cfgpath = a.config;
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
        cost_report_print(dir, cfgpath ? cfgpath : "RUN_DIR/config.ini", &r, a.format, a.header);
out:
    free(text);
    free(c);
    free(o);
    return rc;
}

int cli_cost(int argc, char **argv)
{
    if (argc < 2)
        return util_fail(ST_USAGE, "cost: which one? spotrain cost estimate|report (see spotrain --help)");
    const char *verb = argv[1];
    if (!strcmp(verb, "--help") || !strcmp(verb, "-h") || !strcmp(verb, "help")) {
        cost_cli_usage();
        return ST_OK;
    }
    if (!strcmp(verb, "estimate"))
        return cost_cli_estimate(argc - 1, argv + 1);
    if (!strcmp(verb, "report"))
        return cost_cli_report(argc - 1, argv + 1);
    return util_fail(ST_USAGE, "cost: unknown subcommand '%s' (estimate | report)", verb);
}
