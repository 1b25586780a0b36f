/* spotrain's entry point: the subcommand table, --help and --version, and
 * the one place where a status becomes the process's exit code. */
#include "comm/comm.h"
#include "config/config.h"
#include "train/train.h"
#include "ckpt/ckpt.h"
#include "money/bid.h"
#include "money/cost.h"
#include "cli/cost.h"
#include "cli/data.h"
#include "cli/init.h"
#include "tok/regex.h"
#include "spot/spot.h"
#include "util/util.h"
#include "cuda/cuda.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char main_usage[] =
    "usage: spotrain COMMAND [ARGS]\n"
    "Train DeepSeek-architecture language models on interruptible (spot) machines.\n"
    "\n"
    "  train  CONFIG [--set k=v]... [--force] [--dry-run [--world N]] [--quiet]\n"
    "                                start a run (--force: move old checkpoints aside)\n"
    "  resume CONFIG [--set k=v]... [--quiet]\n"
    "                                continue from the newest good checkpoint (local or remote)\n"
    "  ckpt inspect PATH [--json]    describe checkpoints (PATH may be s3://bucket/prefix[/step-N])\n"
    "  ckpt verify  PATH             re-read every byte; exit 0 or 65\n"
    "  ckpt export  PATH -o DIR      Hugging Face safetensors + config.json\n"
    "  cost estimate CONFIG [--set k=v]... [--json|--csv]\n"
    "                                spot vs on-demand cost of a plan\n"
    "  cost report RUN_DIR [--config FILE] [--json|--csv [--header]]\n"
    "                                spend so far, from events.jsonl\n"
    "  bid --history FILE... [--hours H] [--restart-minutes M] [--ondemand PRICE]\n"
    "      [--instance-type T] [--per-gpu] [--gpus TYPE=N]... [--trend-days D]\n"
    "      [--deadline H] [--alert-above PRICE] [--json]\n"
    "                                spot price history -> zone and cap\n"
    "  sample CONFIG|RUN_DIR|CKPT [--prompt S] [--tokens N] [--temperature T] [--seed N]\n"
    "                                continue a prompt\n"
    "  init [FILE] [--force]         the commented sample configuration (stdout without FILE)\n"
    "  data tokenize --tokenizer tokenizer.json -o DIR FILE... [--eos ID] [--val-fraction F] [--force]\n"
    "                                text -> llm.c token shards\n"
    "  selftest comm CONFIG [--set k=v]...\n"
    "                                data plane over all ranks: bitwise check + bandwidth\n"
    "\n"
    "  --help, --version; `spotrain COMMAND --help` explains each command's options.\n"
    "Exit codes: 0 done, 64 usage, 65 bad data, 66 missing input, 69 backend unavailable,\n"
    "70 internal error, 74 I/O error, 75 stopped after a durable checkpoint (restart me;\n"
    "also a resume whose checkpoint.remote stayed unreachable, nothing trained),\n"
    "78 bad config, 86 watchdog (no progress), 3 bid --alert-above crossed.\n";

static const char main_train_usage[] =
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
    "  newest state is durable.\n"
    "  --set k=v   override any INI key (repeatable), e.g. --set train.max_steps=100\n"
    "  --dry-run   print the resolved config, parameter count and per-process memory\n"
    "              plan (for --world N ranks, default 1) and exit; with backend auto or cuda\n"
    "              also the per-GPU plan and whether it fits --gpu-memory GiB (default: cost.gpu);\n"
    "              the communication per step, and with cost.network_gbps its share of a step\n"
    "              and the most an overlap with the backward pass (not built) could hide\n"
    "  --quiet     no log lines on stderr (errors still print)\n";

static int main_version(void)
{
    printf("spotrain %s\n", SPOTRAIN_VERSION);
    printf("backends: cpu (OpenBLAS %s)%s\n", openblas_get_corename(),
#ifdef SPOTRAIN_CUDA
           ", cuda"
#else
           ""
#endif
    );
    char advice[320];
    if (backend_cpu_blas_check(advice, sizeof advice))
        printf("warning: %s\n", advice);
#ifdef SPOTRAIN_CUDA
    cuda_describe(stdout);
#else
    printf("cuda: not compiled in (built without nvcc)\n");
#endif
#ifdef SPOTRAIN_MPI
    printf("mpi: yes\n");
#else
    printf("mpi: no (single process)\n");
#endif
    printf("tokenizer: Unicode %s categories, case folding %s\n", rx_unicode_version(), rx_fold_version());
    return ST_OK;
}

typedef struct {
    const char *config;
    char **sets;
    int nsets, force, dry_run, world;
    double gpu_memory;      /* --gpu-memory GiB for the --dry-run fit check; 0: from the config */
} main_train_args;

static int main_parse_train(int argc, char **argv, int resume, main_train_args *a)
{
    memset(a, 0, sizeof *a);
    a->world = 1;
    a->sets = calloc((size_t)argc, sizeof *a->sets);
    if (!a->sets)
        return util_fail(ST_SOFTWARE, "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--set") && i + 1 < argc)
            a->sets[a->nsets++] = argv[++i];
        else if (!strncmp(s, "--set=", 6))
            a->sets[a->nsets++] = argv[i] + 6;
        else if ((!strcmp(s, "--force") && !resume) || (!strcmp(s, "--fresh-if-corrupt") && resume))
            a->force = 1;
        else if (!strcmp(s, "--dry-run"))
            a->dry_run = 1;
        else if (!strcmp(s, "--quiet") || !strcmp(s, "-q"))
            util_quiet = 1;
        else if (!strcmp(s, "--world") && i + 1 < argc) {
            int64_t w;
            if (util_parse_i64(argv[++i], &w) || w < 1 || w > 1000000)
                return util_fail(ST_USAGE, "--world: '%s' is not a rank count", argv[i]);
            a->world = (int)w;
        } else if (!strcmp(s, "--gpu-memory") && i + 1 < argc) {
            if (util_parse_f64(argv[++i], &a->gpu_memory) || a->gpu_memory <= 0 || a->gpu_memory > 1e6)
                return util_fail(ST_USAGE, "--gpu-memory: '%s' is not a size in GiB", argv[i]);
        } else if (s[0] == '-' || a->config)
            return util_fail(ST_USAGE, "%s: unexpected argument '%s' (see spotrain %s --help)", argv[0], s, argv[0]);
        else
            a->config = s;
    }
    if (!a->config)
        return util_fail(ST_USAGE, "%s: which config? spotrain %s CONFIG (`spotrain init run.ini` writes a commented one)", argv[0], argv[0]);
    return ST_OK;
}

static int main_train(int argc, char **argv, int resume)
{
    main_train_args a;
    cfg *c = malloc(sizeof *c);
    int rc = c ? main_parse_train(argc, argv, resume, &a) : util_fail(ST_SOFTWARE, "out of memory");
    if (rc == ST_OK)
        rc = cfg_load(c, a.config, a.sets, a.nsets);
    if (rc == ST_OK && a.dry_run) {
        if (a.gpu_memory > 0)
            c->gpu_memory_gib = a.gpu_memory;
        rc = train_plan(c, a.world);
    } else if (rc == ST_OK) {
        /* As early as possible: a reclaim notice can come during start-up,
         * and an unhandled SIGUSR1 would kill the rank with nothing saved. */
        rc = spot_signals_install(c->grace_seconds);
        comm_set_timeout(c->comm_timeout_seconds);   /* from the first wait for a peer to the last */
        if (rc == ST_OK)
            rc = comm_init(&argc, &argv);
        if (rc == ST_OK) {
            rc = train_run(c, resume ? TRAIN_RESUME : TRAIN_FRESH, a.force);
            /* Peers may be blocked in a collective; only a clean end or the
             * agreed stop can finalize together. */
            if (rc != ST_OK && rc != ST_TEMPFAIL && comm_is_mpi())
                comm_abort(rc);
            comm_finalize(rc);
        }
    }
    free(a.sets);
    free(c);
    return rc;
}

static const char main_selftest_usage[] =
    "usage: spotrain selftest comm CONFIG [--set section.key=value]...\n"
    "  Run under the same launcher as training (mpirun -np N ...). Reduces and gathers\n"
    "  known patterns of every message size up to the model's vector over all ranks,\n"
    "  checks each result bitwise against the rank-order rule the trainer relies on,\n"
    "  and prints algorithm and bus bandwidth per size. Exit 0 when every bit is right.\n";

static int main_selftest(int argc, char **argv)
{
    main_train_args a = {0};
    cfg *c = malloc(sizeof *c);
    if (argc < 2 || strcmp(argv[1], "comm")) {
        free(c);
        return util_fail(ST_USAGE, "selftest: which one? spotrain selftest comm CONFIG (see --help)");
    }
    int rc = c ? main_parse_train(argc - 1, argv + 1, 1, &a) : util_fail(ST_SOFTWARE, "out of memory");
    if (rc == ST_OK)
        rc = cfg_load(c, a.config, a.sets, a.nsets);
    if (rc == ST_OK) {
        comm_set_timeout(c->comm_timeout_seconds);   /* comm_init's host count waits for peers too */
        rc = comm_init(&argc, &argv);
    }
    if (rc == ST_OK) {
        rc = train_selftest_comm(c);
        if (rc != ST_OK && comm_is_mpi())
            comm_abort(rc);
        comm_finalize(rc);
    }
    free(a.sets);
    free(c);
    return rc;
}

static int main_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return fputs(main_usage, stderr), ST_USAGE;
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help"))
        return fputs(main_usage, stdout), ST_OK;
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version"))
        return main_version();
    if (!strcmp(cmd, "train") || !strcmp(cmd, "resume")) {
        if (main_wants_help(argc - 1, argv + 1))
            return fputs(main_train_usage, stdout), ST_OK;
        return main_train(argc - 1, argv + 1, !strcmp(cmd, "resume"));
    }
    if (!strcmp(cmd, "ckpt") || !strcmp(cmd, "cost")) {
        if (argc < 3)
            return util_fail(ST_USAGE, "%s: which one? spotrain %s %s (see spotrain --help)", cmd, cmd,
                             !strcmp(cmd, "ckpt") ? "inspect|verify|export" : "estimate|report");
        return !strcmp(cmd, "ckpt") ? ckpt_cli(argc - 2, argv + 2) : cost_cli_main(argc - 2, argv + 2);
    }
    if (!strcmp(cmd, "bid"))
        return bid_cli(argc - 1, argv + 1);
    if (!strcmp(cmd, "data"))
        return data_cli(argc - 1, argv + 1);
    if (!strcmp(cmd, "sample"))
        return train_sample_cli(argc - 1, argv + 1);
    if (!strcmp(cmd, "selftest")) {
        if (main_wants_help(argc - 1, argv + 1))
            return fputs(main_selftest_usage, stdout), ST_OK;
        return main_selftest(argc - 1, argv + 1);
    }
    if (!strcmp(cmd, "init"))
        return cfg_init_cli(argc - 1, argv + 1);
    return util_fail(ST_USAGE, "unknown command '%s' (see spotrain --help)", cmd);
}
