/* `spotrain init [FILE] [--force]`: writes the embedded sample.ini (every key,
 * its meaning and default) to FILE or stdout, so a user starts from the
 * binary's own defaults rather than a copy that may belong to another version. */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "util/util.h"
#include "config/config.h"

static void cfg_init_usage(void)
{
    printf("usage: spotrain init [FILE] [--force]\n"
           "  writes the commented sample configuration (every key with its meaning and\n"
           "  default) to FILE, or to stdout without FILE; refuses to overwrite FILE\n"
           "  unless --force. Then: spotrain train FILE\n"
           "Exit: 0 written, 64 usage or FILE exists, 74 cannot write.\n");
}

enum { INIT_OPT_FORCE = CLI_LONG };

static const struct option init_opts[] = {
    {"force", no_argument, NULL, INIT_OPT_FORCE},
    CLI_OPT_HELP,
    {0}};

int cli_init(int argc, char **argv)
{
    const char *path = NULL;
    int force = 0, opt;
    struct stat st;
    cli_args a;
    cli_args_init(&a, "init", argc, argv, init_opts, "h");
    while ((opt = cli_args_next(&a)) != CLI_END) {
        if (opt == 'h') {
            cfg_init_usage();
            return ST_OK;
        } else if (opt == INIT_OPT_FORCE) {
            force = 1;
        } else if (opt != CLI_OPERAND) {
            return ST_USAGE;
        } else if (path) {
            return util_fail(ST_USAGE, "init: one FILE only (got %s and %s)", path, a.arg);
        } else {
            path = a.arg;
        }
    }
    if (!path || !strcmp(path, "-")) {
        if (fputs(cfg_sample_ini, stdout) == EOF || fflush(stdout) != 0)
            return util_fail(ST_IOERR, "init: cannot write to stdout: %s", strerror(errno));
        return ST_OK;
    }
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return util_fail(ST_USAGE, "init: %s is a directory; give a file name such as %s/run.ini", path, path);
    if (stat(path, &st) == 0 && !force)
        return util_fail(ST_USAGE, "init: %s exists; pass --force to overwrite it", path);
    int rc = util_write_atomic(path, cfg_sample_ini, strlen(cfg_sample_ini));
    if (rc == ST_OK)
        util_log("wrote %s; edit it, then: spotrain train %s", path, path);
    return rc;
}
