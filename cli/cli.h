/* The commands' side of spotrain: each command's entry point (main.c's
 * table calls them) and the one option parser they all use, so --opt=value,
 * --opt value and -- mean the same in every command. */
#ifndef SPOTRAIN_CLI_H
#define SPOTRAIN_CLI_H

#include <getopt.h>

#include "config/config.h"

/* Entry points: argv[0] is the command's name ("train", "ckpt", ...). Each
 * returns a status (util.h's ST_*) that main.c turns into the exit code. */
int cli_train(int argc, char **argv);
int cli_resume(int argc, char **argv);
int cli_ckpt(int argc, char **argv);
int cli_cost(int argc, char **argv);
int cli_bid(int argc, char **argv);
int cli_init(int argc, char **argv);
int cli_selftest(int argc, char **argv);

/* train --dry-run (cli/dryrun.c): resolved config, parameter count, the
 * memory plan for world ranks and the checks that need no training. */
int dryrun_plan(const cfg *c, int world);

/* ---- options ----
 * getopt_long in argument order, with these rules for every command:
 * --opt=value and --opt value are the same; "--" ends the options (what
 * follows is an operand even if it starts with '-'); a long option must be
 * spelled out (no abbreviations, so a name never changes meaning when an
 * option is added); any mistake is one line on stderr naming the command. */

/* Option values above any character, for long options without a short one. */
#define CLI_LONG 256
/* Every command's --help and -h. */
#define CLI_OPT_HELP {"help", no_argument, NULL, 'h'}

enum {
    CLI_END = -1,        /* no more arguments */
    CLI_FAIL = -2,       /* a usage mistake, already printed: return ST_USAGE */
    CLI_OPERAND = 1      /* a plain argument, in a->arg */
};

typedef struct {
    const char *cmd;                  /* "ckpt inspect": names the command in errors */
    const struct option *longopts;    /* {0}-ended */
    int argc;
    char **argv;                      /* argv[0] is the command, options from argv[1] */
    char *arg;                        /* the value of the option, or the operand */
    int rest;                         /* after "--": index of the next operand */
    char shortopts[64];
} cli_args;

/* shortopts in getopt's form ("ho:q"); NULL for none. */
void cli_args_init(cli_args *a, const char *cmd, int argc, char **argv, const struct option *longopts,
                   const char *shortopts);
/* The next option's val (its value, if any, in a->arg), CLI_OPERAND,
 * CLI_END, or CLI_FAIL after printing what was wrong. */
int cli_args_next(cli_args *a);
/* "cmd: unexpected argument 'arg' (see spotrain cmd --help)": ST_USAGE. */
int cli_args_unexpected(const cli_args *a, const char *arg);

#endif
