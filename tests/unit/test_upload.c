/* Unit tests of the uploader's pure parts: which listed keys belong to a
 * step directory, and which steps the remote rotation deletes. The
 * transfers themselves are tested against moto in tests/cli/cli_remote.sh.
 * module: ckpt */
#include <string.h>

#include "ckpt/ckpt.h"
#include "ckpt/upload.h"
#include "util/util.h"
#include "tests/harness.h"

static void t_key_step(void)
{
    int64_t s = -1;
    int m = -1;
    EXPECT(ckpt_remote_key_step("00001200/manifest.json", &s, &m) == 0 && s == 1200 && m == 1);
    EXPECT(ckpt_remote_key_step("00000007/shard-00001.bin", &s, &m) == 0 && s == 7 && m == 0);
    EXPECT(ckpt_remote_key_step("123456789/shard-00000.json", &s, &m) == 0 && s == 123456789);
    EXPECT(ckpt_remote_key_step("0000120/manifest.json", &s, &m) == -1);   /* under 8 digits */
    EXPECT(ckpt_remote_key_step("00001200", &s, &m) == -1);                /* no object name */
    EXPECT(ckpt_remote_key_step("00001200/", &s, &m) == -1);
    EXPECT(ckpt_remote_key_step("00001200.tmp/manifest.json", &s, &m) == -1);
    EXPECT(ckpt_remote_key_step("notes.txt", &s, &m) == -1);
    EXPECT(ckpt_remote_key_step("", &s, &m) == -1);
    EXPECT(ckpt_remote_key_step("0000000000000000000000/x", &s, &m) == -1);   /* too long to be a step */
}

static void plan(const int64_t *steps, const int *complete, int n, int64_t keep_last, int64_t keep_every,
                 int64_t fresh, const char *want)
{
    char drop[16], got[17];
    ckpt_remote_plan(steps, complete, n, keep_last, keep_every, fresh, drop);
    for (int i = 0; i < n; i++)
        got[i] = drop[i] ? 'x' : '.';
    got[n] = 0;
    if (strcmp(got, want))
        fprintf(stderr, "    plan %s, wanted %s\n", got, want);
    EXPECT(strcmp(got, want) == 0);
}

static void t_plan(void)
{
    int64_t st[] = {2, 4, 6, 8, 10};
    int all[] = {1, 1, 1, 1, 1};
    plan(st, all, 5, 2, 0, 10, "xxx..");         /* the newest two */
    plan(st, all, 5, 1, 4, 10, "x.x..");         /* keep_every = 4 keeps 4 and 8 */
    plan(st, all, 5, 0, 0, 10, ".....");         /* keep_last 0: rotation off */
    plan(st, all, 5, 1, 0, 6, "xx...");          /* never the fresh one nor newer ones */
    int holes[] = {1, 0, 1, 0, 1};               /* 4 and 8: failed uploads (no manifest) */
    plan(st, holes, 5, 2, 0, 10, "xx.x.");       /* incomplete steps older than fresh go; complete count only */
    plan(st, holes, 5, 5, 0, 10, ".x.x.");       /* even when every complete one is kept */
    int newer[] = {1, 1, 1, 1, 0};               /* 10 incomplete and newer than fresh 8: left alone */
    plan(st, newer, 5, 1, 0, 8, "xxx..");
}

int main(void)
{
    util_quiet = 1;
    harness_run("remote keys: step directory objects only", t_key_step);
    harness_run("remote rotation plan: keep_last, keep_every, fresh, incomplete steps", t_plan);
    return harness_end();
}
