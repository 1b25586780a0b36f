/* `spotrain train|resume CONFIG`: their options and usage, the config load,
 * and the start-up order a run needs (signal handlers before anything can
 * block, the peer timeout before the first wait, MPI last); --dry-run goes
 * to cli/dryrun.c instead. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "spot/spot.h"
#include "train/train.h"
#include "util/util.h"

static const char train_usage[] =
    "usage: spotrain train CONFIG [--set section.key=value]... [--force] [--dry-run [--world N] [--gpu-memory GiB]] [--quiet]\n"
    "       spotrain resume CONFIG [--set section.key=value]... [--fresh-if-corrupt] [--quiet]\n"
    "  train starts fresh and refuses a run_dir that holds checkpoints unless --force\n"
    "  (which moves them aside to RUN_DIR/ckpt.old-TIME). resume continues from the newest\n"
    "  checkpoint that verifies (those that do not are moved to RUN_DIR/ckpt.bad/), or starts\n"
    "  fresh when there is none; when there are checkpoints and none verifies it exits 65\n"
    "  naming each, unless --fresh-if-corrupt (local ones moved to ckpt.bad/); with checkpoint.remote\n"
    "  it looks at the local and the remote ones (each rank downloads only its own range,\n"
    "  every chunk verified as it arrives). Under mpirun every\n"
    "  rank runs the same command. Exits 75 after a signal or provider notice once the\n"
    "  newest state is durable; 86 when no step completes for spot.watchdog_seconds or a\n"
    "  peer stays silent past spot.comm_timeout_seconds (restart the job).\n"
    "  --set k=v   override any INI key (repeatable), e.g. --set train.max_steps=100\n"
    "  --dry-run   print the resolved config, parameter count and per-process memory\n"
    "              plan (for --world N ranks, default 1) and exit; with backend auto or cuda\n"
    "              also the per-GPU plan and whether it fits --gpu-memory GiB (default: cost.gpu);\n"
    "              the communication per step, and with cost.network_gbps its share of a step\n"
    "              and how much of it the overlap with compute hides ([comm] overlap:\n"
    "              ZeRO 2-3; the CUDA comm stream's not yet timed on a GPU)\n"
    "  --quiet     no log lines on stderr (errors still print)\n";

enum { TRAIN_OPT_FORCE = CLI_LONG, TRAIN_OPT_SET, TRAIN_OPT_DRY_RUN, TRAIN_OPT_WORLD, TRAIN_OPT_GPU_MEMORY };

/* resume takes the same options but --force, and --fresh-if-corrupt in its
 * place: both set the force field (start fresh rather than stop). */
static const struct option train_opts[] = {
    {"force", no_argument, NULL, TRAIN_OPT_FORCE},
    {"set", required_argument, NULL, TRAIN_OPT_SET},
    {"dry-run", no_argument, NULL, TRAIN_OPT_DRY_RUN},
    {"world", required_argument, NULL, TRAIN_OPT_WORLD},
    {"gpu-memory", required_argument, NULL, TRAIN_OPT_GPU_MEMORY},
    {"quiet", no_argument, NULL, 'q'},
    CLI_OPT_HELP,
    {0}};
static const struct option resume_opts[] = {
    {"fresh-if-corrupt", no_argument, NULL, TRAIN_OPT_FORCE},
    {"set", required_argument, NULL, TRAIN_OPT_SET},
    {"dry-run", no_argument, NULL, TRAIN_OPT_DRY_RUN},
    {"world", required_argument, NULL, TRAIN_OPT_WORLD},
    {"gpu-memory", required_argument, NULL, TRAIN_OPT_GPU_MEMORY},
    {"quiet", no_argument, NULL, 'q'},
    CLI_OPT_HELP,
    {0}};

typedef struct {
    const char *config;
    char **sets;
    int nsets, force, dry_run, world, help;
    double gpu_memory;      /* --gpu-memory GiB for the --dry-run fit check; 0: from the config */
} train_args;

/* One option or operand into t; ST_OK or ST_USAGE (printed). */
static int train_take(const cli_args *a, int opt, train_args *t)
{
    int64_t w;
    switch (opt) {
    case TRAIN_OPT_SET:
        t->sets[t->nsets++] = a->arg;
        return ST_OK;
    case TRAIN_OPT_FORCE:
        t->force = 1;
        return ST_OK;
    case TRAIN_OPT_DRY_RUN:
        t->dry_run = 1;
        return ST_OK;
    case 'q':
        util_quiet = 1;
        return ST_OK;
    case 'h':
        t->help = 1;
        return ST_OK;
    case TRAIN_OPT_WORLD:
        if (util_parse_i64(a->arg, &w) || w < 1 || w > 1000000)
            return util_fail(ST_USAGE, "--world: '%s' is not a rank count", a->arg);
        t->world = (int)w;
        return ST_OK;
    case TRAIN_OPT_GPU_MEMORY:
        if (util_parse_f64(a->arg, &t->gpu_memory) || t->gpu_memory <= 0 || t->gpu_memory > 1e6)
            return util_fail(ST_USAGE, "--gpu-memory: '%s' is not a size in GiB", a->arg);
        return ST_OK;
    case CLI_OPERAND:
        if (t->config)
            return cli_args_unexpected(a, a->arg);
        t->config = a->arg;
        return ST_OK;
    default:
        return ST_USAGE;
    }
}

static int train_parse(int argc, char **argv, int resume, train_args *t)
{
    cli_args a;
    int opt, rc = ST_OK;
    memset(t, 0, sizeof *t);
    t->world = 1;
    /* Every argument could be a --set: no count to check. */
    t->sets = calloc((size_t)argc, sizeof *t->sets);
    if (!t->sets)
        return util_fail(ST_SOFTWARE, "out of memory");
    cli_args_init(&a, argv[0], argc, argv, resume ? resume_opts : train_opts, "qh");
    while (rc == ST_OK && !t->help && (opt = cli_args_next(&a)) != CLI_END)
        rc = train_take(&a, opt, t);
    if (rc == ST_OK && !t->help && !t->config)
        return util_fail(ST_USAGE, "%s: which config? spotrain %s CONFIG (`spotrain init run.ini` writes a "
                         "commented one)", argv[0], argv[0]);
    return rc;
}

/* The run itself, once the config is loaded. */
static int train_start(cfg *c, int argc, char **argv, int resume, int force)
{
    /* As early as possible: a reclaim notice can come during start-up,
     * and an unhandled SIGUSR1 would kill the rank with nothing saved. */
    int rc = spot_signals_install(c->grace_seconds);
    comm_set_timeout(c->comm_timeout_seconds);   /* from the first wait for a peer to the last */
    comm_set_reduce(comm_reduce_parse(c->comm_reduce));
    comm_set_overlap(strcmp(c->comm_overlap, "false") != 0);
    if (rc == ST_OK)
        rc = comm_init(&argc, &argv);
    if (rc != ST_OK)
        return rc;
    rc = train_run(c, resume ? TRAIN_RESUME : TRAIN_FRESH, force);
    /* Peers may be blocked in a collective; only a clean end or the agreed
     * stop can finalize together. */
    if (rc != ST_OK && rc != ST_TEMPFAIL && comm_is_mpi())
        comm_abort(rc);
    comm_finalize(rc);
    return rc;
}

static int train_cli(int argc, char **argv, int resume)
{
    train_args t = {0};
    cfg *c = malloc(sizeof *c);
    int rc = c ? train_parse(argc, argv, resume, &t) : util_fail(ST_SOFTWARE, "out of memory");
    if (rc == ST_OK && t.help) {
        fputs(train_usage, stdout);
        goto out;
    }
    if (rc == ST_OK)
        rc = cfg_load_resume(c, t.config, t.sets, t.nsets, resume ? train_ckpt_config : NULL);
    if (rc == ST_OK && t.dry_run) {
        if (t.gpu_memory > 0)
            c->gpu_memory_gib = t.gpu_memory;
        rc = dryrun_plan(c, t.world);
    } else if (rc == ST_OK) {
        rc = train_start(c, argc, argv, resume, t.force);
    }
out:
    free(t.sets);
    free(c);
    return rc;
}

int cli_train(int argc, char **argv) { return train_cli(argc, argv, 0); }

int cli_resume(int argc, char **argv) { return train_cli(argc, argv, 1); }
