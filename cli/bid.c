/* `spotrain bid --history FILE...`: its options and usage; money/bid.c reads
 * the histories, ranks zones and caps and prints the recommendation. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "money/bid.h"
#include "util/util.h"

static const char bid_usage[] =
    "usage: spotrain bid --history FILE... [options]\n"
    "Reads spot price histories and says which zone to use and what max price to set.\n"
    "  --history FILE...     AWS describe-spot-price-history JSON, Alibaba\n"
    "                        DescribeSpotPriceHistory JSON, or CSV lines\n"
    "                        timestamp,zone,instance_type,price[,currency] (optional header)\n"
    "  --hours H             work the job needs, in running hours (default 24)\n"
    "  --restart-minutes M   recovery time per interruption (default 10)\n"
    "  --ondemand PRICE      on-demand price per hour to compare with (default: Alibaba\n"
    "                        OriginPrice from the file, when present)\n"
    "  --instance-type T     only consider this instance type\n"
    "  --per-gpu             rank different instance types by cost per GPU (GPU counts\n"
    "                        of well-known types are built in; --gpus names the others)\n"
    "  --gpus TYPE=N         instance type TYPE has N GPUs (repeatable)\n"
    "  --trend-days D        window of the least-squares trend (default 7)\n"
    "  --deadline H          drop caps whose expected wall time exceeds H hours\n"
    "  --alert-above PRICE   exit 3 when a recommended zone's current price exceeds PRICE\n"
    "  --json                machine-readable output\n"
    "Every argument that is not an option is a history file too.\n"
    "Only like is compared with like: one recommendation per instance type (or, with\n"
    "--per-gpu, per GPU) and per currency; prices in different currencies are never\n"
    "ranked together. Records are sorted by time per zone/type; where two share a\n"
    "timestamp the one read last wins.\n"
    "Exit: 0 ok, 3 alert, 64 usage, 65 bad history, 66 missing file.\n";

enum {
    BID_OPT_HISTORY = CLI_LONG, BID_OPT_JSON, BID_OPT_PER_GPU, BID_OPT_TYPE, BID_OPT_GPUS, BID_OPT_HOURS,
    BID_OPT_RESTART, BID_OPT_ONDEMAND, BID_OPT_TREND, BID_OPT_DEADLINE, BID_OPT_ALERT
};

/* --history's files are its operands: "--history a b" and "--history=a b"
 * both read a and b. */
static const struct option bid_opts_long[] = {
    {"history", optional_argument, NULL, BID_OPT_HISTORY},
    {"json", no_argument, NULL, BID_OPT_JSON},
    {"per-gpu", no_argument, NULL, BID_OPT_PER_GPU},
    {"instance-type", required_argument, NULL, BID_OPT_TYPE},
    {"gpus", required_argument, NULL, BID_OPT_GPUS},
    {"hours", required_argument, NULL, BID_OPT_HOURS},
    {"restart-minutes", required_argument, NULL, BID_OPT_RESTART},
    {"ondemand", required_argument, NULL, BID_OPT_ONDEMAND},
    {"trend-days", required_argument, NULL, BID_OPT_TREND},
    {"deadline", required_argument, NULL, BID_OPT_DEADLINE},
    {"alert-above", required_argument, NULL, BID_OPT_ALERT},
    CLI_OPT_HELP,
    {0}};

static int bid_num_arg(const char *opt, const char *v, double lo, double *out)
{
    if (util_parse_f64(v, out) != 0 || *out < lo)
        return util_fail(ST_USAGE, "%s needs a number >= %g (got %s); see spotrain bid --help", opt, lo, v);
    return ST_OK;
}

/* --gpus TYPE=N; the type stays in argv, cut at its last '='. */
static int bid_gpus_arg(char *v, bid_opts *o)
{
    char *eq = strrchr(v, '=');
    int64_t n;
    if (!eq || eq == v || util_parse_i64(eq + 1, &n) != 0 || n < 1 || n > 1024)
        return util_fail(ST_USAGE, "--gpus needs TYPE=N with N in 1..1024 (got %s); e.g. --gpus p4d.24xlarge=8", v);
    if (o->n_gpu >= BID_MAX_GPU_ARGS)
        return util_fail(ST_USAGE, "--gpus: at most %d instance types", BID_MAX_GPU_ARGS);
    *eq = 0;
    o->gpu_type[o->n_gpu] = v;
    o->gpu_count[o->n_gpu++] = (int)n;
    return ST_OK;
}

/* One option or operand into o. */
static int bid_take(const cli_args *a, int opt, bid_opts *o)
{
    switch (opt) {
    case BID_OPT_HISTORY:
        if (a->arg)
            o->files[o->n_files++] = a->arg;
        return ST_OK;
    case CLI_OPERAND:
        o->files[o->n_files++] = a->arg;
        return ST_OK;
    case BID_OPT_JSON:
        o->json = 1;
        return ST_OK;
    case BID_OPT_PER_GPU:
        o->per_gpu = 1;
        return ST_OK;
    case BID_OPT_TYPE:
        o->type = a->arg;
        return ST_OK;
    case BID_OPT_GPUS:
        return bid_gpus_arg(a->arg, o);
    case BID_OPT_HOURS:
        return bid_num_arg("--hours", a->arg, 1e-6, &o->hours);
    case BID_OPT_RESTART:
        return bid_num_arg("--restart-minutes", a->arg, 0, &o->restart_minutes);
    case BID_OPT_ONDEMAND:
        return bid_num_arg("--ondemand", a->arg, 0, &o->ondemand);
    case BID_OPT_TREND:
        return bid_num_arg("--trend-days", a->arg, 1e-3, &o->trend_days);
    case BID_OPT_DEADLINE:
        return bid_num_arg("--deadline", a->arg, 1e-6, &o->deadline);
    case BID_OPT_ALERT:
        o->have_alert = 1;
        return bid_num_arg("--alert-above", a->arg, 0, &o->alert_above);
    default:
        return ST_USAGE;
    }
}

int cli_bid(int argc, char **argv)
{
    bid_opts o = {.hours = 24, .restart_minutes = 10, .trend_days = 7};
    cli_args a;
    int opt, rc = ST_OK;
    /* Every argument could be a file: no count to check. */
    o.files = calloc((size_t)argc + 1, sizeof *o.files);
    if (!o.files)
        return util_fail(ST_SOFTWARE, "out of memory");
    cli_args_init(&a, "bid", argc, argv, bid_opts_long, "h");
    while (rc == ST_OK && (opt = cli_args_next(&a)) != CLI_END) {
        if (opt == 'h') {
            fputs(bid_usage, stdout);
            goto out;
        }
        rc = bid_take(&a, opt, &o);
    }
    if (rc == ST_OK && o.n_files == 0)
        rc = util_fail(ST_USAGE, "bid: no history files; use --history FILE... (see spotrain bid --help)");
    if (rc == ST_OK)
        rc = bid_run(&o);
out:
    free(o.files);
    return rc;
}
