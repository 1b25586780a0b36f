/* spotrain's entry point: the command table that dispatch, --help and the
 * unknown-command error all read, and the one place where a status becomes
 * the process's exit code. Each command's options live in cli/NAME.c. */
#include "backend/backend.h"
#include "cli/cli.h"
#include "cli/data.h"
#include "tok/regex.h"
#include "cuda/cuda.h"
#include "train/train.h"
#include "util/util.h"

#include <cblas.h>
#include <stdio.h>
#include <string.h>

/* What a command needs before it can work, for --help's margin notes. */
enum {
    MAIN_NEEDS_NOTHING = 0,
    MAIN_NEEDS_CONFIG = 1,   /* reads an INI CONFIG (--set overrides its keys) */
    MAIN_NEEDS_MPI = 2       /* joins the ranks: launched like training, under mpirun */
};

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);   /* argv[0] is name */
    const char *args;      /* after the name; one line per form ("\n"-separated) */
    const char *summary;   /* what it does, one line */
    int needs;             /* MAIN_NEEDS_* */
} main_cmd;

static int main_help(int argc, char **argv);
static int main_version(int argc, char **argv);

static const main_cmd main_cmds[] = {
    {"train", cli_train, "CONFIG [--set k=v]... [--force] [--dry-run [--world N] [--gpu-memory GiB]] [--quiet]",
     "start a run (--force: move old checkpoints aside)", MAIN_NEEDS_CONFIG | MAIN_NEEDS_MPI},
    {"resume", cli_resume, "CONFIG [--set k=v]... [--fresh-if-corrupt] [--quiet]",
     "continue from the newest good checkpoint (local or remote)", MAIN_NEEDS_CONFIG | MAIN_NEEDS_MPI},
    {"ckpt", cli_ckpt,
     "inspect PATH [--json]\nverify PATH\nexport PATH -o DIR [--dtype f32|bf16] [--max-shard-size SIZE]",
     "describe, re-read (exit 0 or 65) or export to Hugging Face safetensors + config.json; "
     "PATH may be s3://bucket/prefix[/step-N]", MAIN_NEEDS_NOTHING},
    {"cost", cli_cost, "estimate CONFIG [--set k=v]... [--json|--csv]\n"
     "report RUN_DIR [--config FILE] [--json|--csv [--header]]",
     "spot vs on-demand cost of a plan; spend so far from RUN_DIR/events.jsonl", MAIN_NEEDS_CONFIG},
    {"bid", cli_bid, "--history FILE... [--hours H] [--restart-minutes M] [--ondemand PRICE]\n"
     "    [--instance-type T] [--per-gpu] [--gpus TYPE=N]... [--trend-days D]\n"
     "    [--deadline H] [--alert-above PRICE] [--json]",
     "spot price history -> zone and cap", MAIN_NEEDS_NOTHING},
    {"sample", train_sample_cli, "CONFIG|RUN_DIR|CKPT [--prompt S] [--tokens N] [--temperature T] [--seed N] [--ignore-eos]",
     "continue a prompt", MAIN_NEEDS_NOTHING},
    {"init", cli_init, "[FILE] [--force]", "the commented sample configuration (stdout without FILE)",
     MAIN_NEEDS_NOTHING},
    {"data", data_cli, "tokenize --tokenizer tokenizer.json -o DIR FILE... [--eos ID] [--val-fraction F] [--special-as-text] [--force]",
     "text -> llm.c token shards", MAIN_NEEDS_NOTHING},
    {"selftest", cli_selftest, "comm CONFIG [--set k=v]...",
     "data plane over all ranks: bitwise check + bandwidth", MAIN_NEEDS_CONFIG | MAIN_NEEDS_MPI},
    {"version", main_version, "", "version, backends (BLAS, CUDA) and MPI of this binary (also --version)",
     MAIN_NEEDS_NOTHING},
    {"help", main_help, "", "this text (also --help, -h); `spotrain COMMAND --help` explains each command",
     MAIN_NEEDS_NOTHING},
};
#define MAIN_N_CMDS (sizeof main_cmds / sizeof main_cmds[0])

static const char main_exit_codes[] =
    "Exit codes: 0 done, 64 usage, 65 bad data, 66 missing input, 69 backend unavailable,\n"
    "70 internal error, 74 I/O error, 75 stopped after a durable checkpoint (restart me;\n"
    "also a resume whose checkpoint.remote stayed unreachable, nothing trained),\n"
    "78 bad config, 86 no progress: the watchdog (spot.watchdog_seconds) or a peer silent\n"
    "past spot.comm_timeout_seconds (restart the job), 88 started under a termination notice\n"
    "whose time had already passed (nothing saved; do not restart on this node),\n"
    "3 bid --alert-above crossed.\n";

/* Column where summaries start; a synopsis that reaches it gets its own line. */
#define MAIN_COL 32
#define MAIN_WIDTH 92

/* text's words from column MAIN_COL, wrapped at MAIN_WIDTH, then tail
 * (never split); col: where the cursor is now. */
static void main_wrap(FILE *f, const char *text, const char *tail, int col)
{
    if (col >= MAIN_COL - 1) {
        fputc('\n', f);
        col = 0;
    }
    fprintf(f, "%*s", MAIN_COL - col, "");
    col = MAIN_COL;
    for (int last = 0; !last;) {
        int n = (int)strcspn(text, " ");
        const char *word = text;
        last = !text[n];
        text += n + !last;
        if (col > MAIN_COL && col + 1 + n > MAIN_WIDTH) {
            fprintf(f, "\n%*s", MAIN_COL, "");
            col = MAIN_COL;
        } else if (col > MAIN_COL) {
            fputc(' ', f);
            col++;
        }
        col += fprintf(f, "%.*s", n, word);
        if (last && *tail) {
            n = (int)strlen(tail);
            if (col + 1 + n > MAIN_WIDTH)
                fprintf(f, "\n%*s%s", MAIN_COL, "", tail);
            else
                fprintf(f, " %s", tail);
        }
    }
    fputc('\n', f);
}

static void main_usage(FILE *f)
{
    fputs("usage: spotrain COMMAND [ARGS]\n"
          "Train DeepSeek-architecture language models on interruptible (spot) machines.\n\n", f);
    for (size_t i = 0; i < MAIN_N_CMDS; i++) {
        const main_cmd *m = &main_cmds[i];
        const char *form = m->args;
        int col = 0;
        do {   /* each form "  name ARGS"; a line that starts with a blank goes on the one above */
            int n = (int)strcspn(form, "\n");
            if (col)
                fputc('\n', f);
            if (*form == ' ')
                col = fprintf(f, "  %*s%.*s", (int)strlen(m->name), "", n, form);
            else
                col = fprintf(f, "  %s%s%.*s", m->name, n ? " " : "", n, form);
            form += n + (form[n] == '\n');
        } while (*form);
        main_wrap(f, m->summary,
                  m->needs & MAIN_NEEDS_MPI ? "[config, mpirun]" : m->needs & MAIN_NEEDS_CONFIG ? "[config]" : "", col);
    }
    fputs("\n[config]: reads an INI file (`spotrain init run.ini` writes one; --set overrides a key).\n"
          "[mpirun]: every rank runs the same command under the launcher, as training does.\n", f);
    fputs(main_exit_codes, f);
}

static int main_help(int argc, char **argv)
{
    main_usage(stdout);
    return ST_OK;
}

static int main_version(int argc, char **argv)
{
    printf("spotrain %s\n", SPOTRAIN_VERSION);
    printf("backends: cpu (OpenBLAS %s)%s\n", openblas_get_corename(),
#ifdef SPOTRAIN_CUDA
           ", cuda"
#else
           ""
#endif
    );
    char libs[700];
    gemm_list(libs, sizeof libs);
    printf("cpu_gemm: %s\n", libs);
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

static const main_cmd *main_find(const char *name)
{
    if (!strcmp(name, "--help") || !strcmp(name, "-h"))
        name = "help";
    else if (!strcmp(name, "--version"))
        name = "version";
    for (size_t i = 0; i < MAIN_N_CMDS; i++)
        if (!strcmp(main_cmds[i].name, name))
            return &main_cmds[i];
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        main_usage(stderr);
        return ST_USAGE;
    }
    const main_cmd *m = main_find(argv[1]);
    if (m)
        return m->run(argc - 1, argv + 1);
    char names[256] = "";
    for (size_t i = 0; i < MAIN_N_CMDS; i++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", main_cmds[i].name);
    return util_fail(ST_USAGE, "unknown command '%s'; one of %s (see spotrain --help)", argv[1], names);
}
