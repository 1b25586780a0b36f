/* Option parsing for every command: getopt_long in argument order, exact
 * long names, "--" ending the options, and one line on stderr for each kind
 * of mistake (unknown option, missing value, value where none is taken). */
#include "cli.h"

#include <stdio.h>
#include <string.h>

#include "util/util.h"

void cli_args_init(cli_args *a, const char *cmd, int argc, char **argv, const struct option *longopts,
                   const char *shortopts)
{
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    a->longopts = longopts;
    a->argc = argc;
    a->argv = argv;
    /* '-': operands come back in order (never permuted, whatever
     * POSIXLY_CORRECT says, so MPI sees argv as given); ':': a missing value
     * is told apart from an unknown option. */
    snprintf(a->shortopts, sizeof a->shortopts, "-:%s", shortopts ? shortopts : "");
    /* 0, not 1: glibc then forgets the previous parse's mode and position. */
    optind = 0;
    opterr = 0;
}

int cli_args_unexpected(const cli_args *a, const char *arg)
{
    return util_fail(ST_USAGE, "%s: unexpected argument '%s' (see spotrain %s --help)", a->cmd, arg, a->cmd);
}

/* The long option whose name is s's text up to '=' (s without "--"). */
static const struct option *cli_args_find(const cli_args *a, const char *s)
{
    size_t n = strcspn(s, "=");
    for (const struct option *o = a->longopts; o && o->name; o++)
        if (strlen(o->name) == n && !strncmp(o->name, s, n))
            return o;
    return NULL;
}

/* '?' or ':' from getopt: say which mistake, about which argument. */
static void cli_args_say(const cli_args *a, int c, const char *elem)
{
    char name[80];
    int is_long = !strncmp(elem, "--", 2);
    if (is_long)
        snprintf(name, sizeof name, "%.*s", (int)strcspn(elem, "="), elem);
    else
        snprintf(name, sizeof name, "-%c", optopt);
    const struct option *o = is_long ? cli_args_find(a, elem + 2) : NULL;
    if (c == ':')
        util_fail(ST_USAGE, "%s: %s needs a value (see spotrain %s --help)", a->cmd, name, a->cmd);
    else if (o && o->has_arg == no_argument && strchr(elem, '='))
        util_fail(ST_USAGE, "%s: %s takes no value (got %s; see spotrain %s --help)", a->cmd, name, elem, a->cmd);
    else
        util_fail(ST_USAGE, "%s: unexpected argument '%s': unknown option (see spotrain %s --help)", a->cmd,
                  is_long ? elem : name, a->cmd);
}

int cli_args_next(cli_args *a)
{
    if (a->rest) {
        if (a->rest >= a->argc)
            return CLI_END;
        a->arg = a->argv[a->rest++];
        return CLI_OPERAND;
    }
    int at = optind ? optind : 1, li = -1;
    int c = getopt_long(a->argc, a->argv, a->shortopts, a->longopts, &li);
    a->arg = optarg;
    if (c == -1) {
        if (optind >= a->argc)
            return CLI_END;
        a->rest = optind;   /* "--" came: the rest are operands */
        return cli_args_next(a);
    }
    /* getopt_long takes any unambiguous prefix; a command takes only names. */
    if (li >= 0 && cli_args_find(a, a->argv[at] + 2) != &a->longopts[li])
        c = '?';
    if (c == '?' || c == ':') {
        cli_args_say(a, c, at < a->argc ? a->argv[at] : "");
        return CLI_FAIL;
    }
    return c;
}
