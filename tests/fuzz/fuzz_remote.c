/* libFuzzer target for the parsers of remote checkpoint names: s3:// URLs
 * given on the command line (run prefix and step) and object keys from a
 * listing (which are committed steps). Checks the answers agree with each
 * other: a step found is one that s3_ckpt_key would name.
 * fuzz-sources: ckpt/*.c s3/*.c util/util.c
 * fuzz-max-len: 2048
 * module: ckpt s3 */
#include "ckpt/ckpt_int.h"
#include "s3/s3.h"
#include "util/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    util_quiet = 1;
    char *z = malloc(size + 1);
    if (!z)
        return 0;
    memcpy(z, data, size);
    z[size] = 0;
    char run[1100];
    int64_t step = -2;
    if (ckpt_s3_split(z, run, sizeof run, &step) == 0) {
        /* The run prefix is a prefix of the URL; a step lies after it. */
        if (strncmp(z, run, strlen(run)) != 0 || step < -1)
            abort();
    }
    /* The first line is a prefix, the rest a key. */
    char *nl = strchr(z, '\n');
    if (nl) {
        *nl = 0;
        s3_url u;
        if (ckpt_remote_manifest_step(z, nl + 1, &step) == 0 && strlen(z) < sizeof u.prefix) {
            char key[2200];
            memset(&u, 0, sizeof u);
            memcpy(u.prefix, z, strlen(z));
            /* A step named with more than 8 digits reads back the same. */
            if (s3_ckpt_key(&u, step, "manifest.json", key, sizeof key) == 0 && step < 100000000 &&
                strcmp(key, nl + 1) != 0 && strlen(nl + 1) == strlen(key))
                abort();
        }
    }
    free(z);
    return 0;
}
