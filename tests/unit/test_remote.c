/* Unit tests of ckpt/remote.c's pure parts: splitting s3:// checkpoint URLs,
 * recognising committed steps among listed keys, and the order resume tries
 * local and remote checkpoints in. The network side is tested against a
 * real server in tests/cli/cli_remote_read.sh.
 * module: ckpt */
#include "ckpt/ckpt.h"
#include "util/util.h"
#include "tests/harness.h"

#include <stdlib.h>
#include <string.h>

static void test_split(void)
{
    char run[64];
    int64_t step = 0;
    EXPECT(ckpt_s3_split("s3://b/run/step-00000040", run, sizeof run, &step) == 0 && step == 40 &&
           !strcmp(run, "s3://b/run"));
    EXPECT(ckpt_s3_split("s3://b/a/b/step-123456789//", run, sizeof run, &step) == 0 && step == 123456789 &&
           !strcmp(run, "s3://b/a/b"));
    EXPECT(ckpt_s3_split("s3://b/step-00000007", run, sizeof run, &step) == 0 && step == 7 && !strcmp(run, "s3://b"));
    EXPECT(ckpt_s3_split("s3://b/run/", run, sizeof run, &step) == 0 && step == -1 && !strcmp(run, "s3://b/run"));
    /* A bucket is never a step; nor a short, .tmp or longer name. */
    EXPECT(ckpt_s3_split("s3://step-00000001", run, sizeof run, &step) == 0 && step == -1);
    EXPECT(ckpt_s3_split("s3://b/step-0001", run, sizeof run, &step) == 0 && step == -1);
    EXPECT(ckpt_s3_split("s3://b/step-00000001.tmp", run, sizeof run, &step) == 0 && step == -1);
    EXPECT(ckpt_s3_split("s3://b/step-00000001x", run, sizeof run, &step) == 0 && step == -1);
    EXPECT(ckpt_s3_split("/local/step-00000001", run, sizeof run, &step) == -1);
    EXPECT(ckpt_s3_split("s3://bucket/a-prefix-far-too-long-for-the-buffer-given/x/y/z", run, 16, &step) == -1);
}

static void test_key_step(void)
{
    int64_t s = 0;
    EXPECT(ckpt_remote_manifest_step("run", "run/step-00000040/manifest.json", &s) == 0 && s == 40);
    EXPECT(ckpt_remote_manifest_step("", "step-00000002/manifest.json", &s) == 0 && s == 2);
    EXPECT(ckpt_remote_manifest_step("a/b", "a/b/step-00000003/manifest.json", &s) == 0 && s == 3);
    EXPECT(ckpt_remote_manifest_step("run", "run/step-00000040/shard-00000.bin", &s) == -1);
    EXPECT(ckpt_remote_manifest_step("run", "run/step-00000040/manifest.json.tmp", &s) == -1);
    EXPECT(ckpt_remote_manifest_step("run", "run/step-00000040.tmp/manifest.json", &s) == -1);
    EXPECT(ckpt_remote_manifest_step("run", "run/x/step-00000040/manifest.json", &s) == -1);
    EXPECT(ckpt_remote_manifest_step("run", "runner/step-00000040/manifest.json", &s) == -1);
    EXPECT(ckpt_remote_manifest_step("run", "run2/step-00000040/manifest.json", &s) == -1);
    EXPECT(ckpt_remote_manifest_step("", "run/step-00000040/manifest.json", &s) == -1);
}

static void test_merge(void)
{
    const int64_t loc[] = {4, 8, 12}, rem[] = {8, 16};
    ckpt_cand *c = NULL;
    int n = 0;
    EXPECT(ckpt_cands_merge(loc, 3, rem, 2, &c, &n) == ST_OK && n == 5);
    /* Newest first; step 8 in both places: local before remote. */
    const ckpt_cand want[] = {{16, 1}, {12, 0}, {8, 0}, {8, 1}, {4, 0}};
    for (int i = 0; c && i < 5 && i < n; i++)
        EXPECT(c[i].step == want[i].step && c[i].remote == want[i].remote);
    free(c);
    EXPECT(ckpt_cands_merge(NULL, 0, NULL, 0, &c, &n) == ST_OK && n == 0);
    free(c);
    EXPECT(ckpt_cands_merge(NULL, 0, rem, 2, &c, &n) == ST_OK && n == 2 && c[0].step == 16 && c[1].remote);
    free(c);
    EXPECT(ckpt_cands_merge(loc, 3, NULL, 0, &c, &n) == ST_OK && n == 3 && c[0].step == 12 && !c[2].remote);
    free(c);
}

int main(void)
{
    util_quiet = 1;
    harness_run("s3:// URL -> run prefix and step", test_split);
    harness_run("listed key -> committed step (manifest.json only)", test_key_step);
    harness_run("candidates: newest first, local before remote on a tie", test_merge);
    return harness_end();
}
