/* Unit tests of the commands' option parser (cli/args.c): operands in
 * order, --opt=value and --opt value, "--", optional values, exact long
 * names, the three kinds of mistake, and a second parse in one process
 * starting clean (a command that parses twice, or a test that calls two). */
#include <string.h>

#include "cli/cli.h"
#include "util/util.h"
#include "tests/harness.h"

enum { OPT_SET = CLI_LONG, OPT_JSON, OPT_FILES };

static const struct option opts[] = {
    {"set", required_argument, NULL, OPT_SET},
    {"json", no_argument, NULL, OPT_JSON},
    {"files", optional_argument, NULL, OPT_FILES},
    {"quiet", no_argument, NULL, 'q'},
    CLI_OPT_HELP,
    {0}};

/* What one parse saw, as text: "S=v J F=- O=x q h E" (E: end, X: fail). */
static void parse(int argc, char **argv, char *out, size_t cap)
{
    cli_args a;
    int opt;
    out[0] = 0;
    cli_args_init(&a, "test", argc, argv, opts, "qho:");
    do {
        char one[160];
        opt = cli_args_next(&a);
        switch (opt) {
        case OPT_SET: snprintf(one, sizeof one, "S=%s ", a.arg); break;
        case OPT_JSON: snprintf(one, sizeof one, "J "); break;
        case OPT_FILES: snprintf(one, sizeof one, "F=%s ", a.arg ? a.arg : "-"); break;
        case CLI_OPERAND: snprintf(one, sizeof one, "O=%s ", a.arg); break;
        case 'o': snprintf(one, sizeof one, "o=%s ", a.arg); break;
        case 'q': snprintf(one, sizeof one, "q "); break;
        case 'h': snprintf(one, sizeof one, "h "); break;
        case CLI_END: snprintf(one, sizeof one, "E"); break;
        default: snprintf(one, sizeof one, "X"); break;
        }
        strncat(out, one, cap - strlen(out) - 1);
    } while (opt != CLI_END && opt != CLI_FAIL);
}

#define PARSE(want, ...)                                             \
    do {                                                             \
        char *argv_[] = {"test", __VA_ARGS__, NULL};                 \
        char got_[512];                                              \
        parse((int)(sizeof argv_ / sizeof argv_[0]) - 1, argv_, got_, sizeof got_); \
        EXPECT(!strcmp(got_, want));                                 \
        if (strcmp(got_, want))                                      \
            fprintf(stderr, "    got '%s', wanted '%s'\n", got_, want); \
    } while (0)

static void test_forms(void)
{
    PARSE("O=a S=x.y=1 S=x.z=2 O=b E", "a", "--set", "x.y=1", "--set=x.z=2", "b");
    PARSE("o=DIR o=D2 q h E", "-o", "DIR", "-oD2", "-qh");
    PARSE("O=- J E", "-", "--json");
    /* negative numbers and option-like values are values */
    PARSE("S=-5 S=--json E", "--set", "-5", "--set", "--json");
}

static void test_dashdash(void)
{
    PARSE("J O=--json O=-q O=x E", "--json", "--", "--json", "-q", "x");
    PARSE("E", "--");
    PARSE("O=a O=-- E", "a", "--", "--");
}

static void test_optional(void)
{
    PARSE("F=- O=a O=b E", "--files", "a", "b");
    PARSE("F=a O=b E", "--files=a", "b");
}

static void test_mistakes(void)
{
    util_quiet = 1;
    PARSE("X", "--bogus");
    PARSE("X", "-z");
    PARSE("q X", "-qz");
    PARSE("X", "--json=1");
    PARSE("X", "--set");
    PARSE("X", "-o");
    PARSE("X", "--js");          /* a prefix of --json: names are whole words */
    PARSE("O=a X", "a", "--sets=1");
    EXPECT(strstr(util_last_error(), "'--sets=1'") && strstr(util_last_error(), "test:"));
    PARSE("X", "--json=1");
    EXPECT(strstr(util_last_error(), "--json takes no value"));
    PARSE("X", "--set");
    EXPECT(strstr(util_last_error(), "--set needs a value"));
}

/* A parse left in the middle (a cluster, an error) must not leak into the next. */
static void test_restart(void)
{
    char *argv1[] = {"test", "-qh", NULL};
    cli_args a;
    cli_args_init(&a, "test", 2, argv1, opts, "qh");
    EXPECT(cli_args_next(&a) == 'q');   /* stop inside the cluster */
    PARSE("O=x J E", "x", "--json");
    PARSE("O=x J E", "x", "--json");
}

int main(void)
{
    harness_run("--opt=value, --opt value, clusters, operands in order", test_forms);
    harness_run("-- ends the options", test_dashdash);
    harness_run("an optional value only with =", test_optional);
    harness_run("mistakes: unknown, missing value, value not taken, prefixes", test_mistakes);
    harness_run("a second parse starts clean", test_restart);
    return harness_end();
}
