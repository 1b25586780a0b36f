/* Data tests: the keyed permutation is a bijection, batches are a pure
 * function of (seed, step) however rows are split, shard validation, the
 * synthetic corpus and its held-out split.
 * module: data */
#include "tests/harness.h"
#include "config/config.h"
#include "data/data.h"
#include "model/rng.h"
#include "util/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static char tmpdir[] = "/tmp/spotrain-data-XXXXXX";

static void test_permutation_bijective(void)
{
    uint64_t sizes[] = {1, 2, 3, 7, 16, 17, 1000, 4097};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        uint64_t n = sizes[k];
        unsigned char *seen = calloc(n, 1);
        for (uint64_t i = 0; i < n; i++) {
            uint64_t j = rng_permute(i, n, 42, 3);
            EXPECT(j < n);
            if (j < n) {
                EXPECT(!seen[j]);
                seen[j] = 1;
            }
        }
        free(seen);
    }
    /* Different epochs give different orders. */
    int differ = 0;
    for (uint64_t i = 0; i < 100; i++)
        differ += rng_permute(i, 100, 42, 0) != rng_permute(i, 100, 42, 1);
    EXPECT(differ > 50);
}

static int load(cfg *c, char **sets, int n)
{
    util_quiet = 1;
    return cfg_load(c, NULL, sets, n);
}

/* The rows of a step do not depend on how they are split over ranks. */
static void test_order_independent_of_split(void)
{
    cfg c;
    data *d = NULL;
    EXPECT(load(&c, NULL, 0) == ST_OK);
    EXPECT(data_open(&d, &c) == ST_OK);
    if (!d)
        return;
    int64_t G = 12, T = c.seq_len;
    int32_t *whole = malloc((size_t)(G * (T + 1)) * sizeof(int32_t));
    int32_t *parts = malloc((size_t)(G * (T + 1)) * sizeof(int32_t));
    for (int64_t step = 0; step < 5; step++) {
        data_train_rows(d, 7, step, G, 0, G, whole);
        for (int64_t r = 0; r < G; r += 5)
            data_train_rows(d, 7, step, G, r, r + 5 <= G ? 5 : G - r, parts + r * (T + 1));
        EXPECT(!memcmp(whole, parts, (size_t)(G * (T + 1)) * sizeof(int32_t)));
    }
    data_train_rows(d, 8, 0, G, 0, G, parts);
    data_train_rows(d, 7, 0, G, 0, G, whole);
    EXPECT(memcmp(whole, parts, (size_t)(G * (T + 1)) * sizeof(int32_t)));
    free(whole);
    free(parts);
    data_close(d);
}

/* Every line of the synthetic corpus is a correct sum, and no validation
 * problem appears in training. */
static void test_synthetic_corpus(void)
{
    cfg c;
    data *d = NULL;
    EXPECT(load(&c, NULL, 0) == ST_OK);
    EXPECT(data_open(&d, &c) == ST_OK);
    if (!d)
        return;
    for (int split = 0; split < 2; split++) {
        const char *p = data_synthetic_text(d, split);
        int lines = 0, bad = 0;
        unsigned a, b, s;
        while (*p) {
            if (sscanf(p, "%u+%u=%u", &a, &b, &s) != 3 || a + b != s || a > 99 || b > 99)
                bad++;
            else if (split == 0) {
                char probe[32];
                snprintf(probe, sizeof probe, "\n%u+%u=", a, b);
                bad += strstr(data_synthetic_text(d, 1), probe) != NULL;
            }
            lines++;
            p = strchr(p, '\n') + 1;
        }
        EXPECT(bad == 0);
        EXPECT(lines > 100);
    }
    EXPECT(data_windows(d, DATA_TRAIN) > 1000);
    EXPECT(data_windows(d, DATA_VAL) > 10);
    data_close(d);
}

static const char *write_shard(const char *name, int32_t magic, int32_t version, int32_t count,
                               int width, int64_t ntok_written, uint32_t max_id)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    int32_t hdr[256] = {0};
    hdr[0] = magic;
    hdr[1] = version;
    hdr[2] = count;
    fwrite(hdr, sizeof hdr, 1, f);
    for (int64_t i = 0; i < ntok_written; i++) {
        uint32_t v = (uint32_t)(i * 7 % (max_id + 1));
        if (i == ntok_written - 1)
            v = max_id;
        if (width == 2) {
            uint16_t h = (uint16_t)v;
            fwrite(&h, 2, 1, f);
        } else {
            fwrite(&v, 4, 1, f);
        }
    }
    fclose(f);
    return path;
}

static int open_shards(const char *glob, int64_t vocab)
{
    cfg c;
    char src[] = "data.source=shards", tp[300], vs[64], sl[] = "model.seq_len=16";
    snprintf(tp, sizeof tp, "data.train_path=%s", glob);
    snprintf(vs, sizeof vs, "model.vocab_size=%lld", (long long)vocab);
    char *sets[] = {src, tp, vs, sl};
    data *d = NULL;
    int rc = load(&c, sets, 4);
    if (rc == ST_OK)
        rc = data_open(&d, &c);
    if (rc == ST_OK) {
        int32_t row[17];
        data_train_rows(d, 1, 0, 1, 0, 1, row);
        for (int i = 0; i < 17; i++)
            if (row[i] < 0 || row[i] >= vocab)
                rc = -1;
    }
    data_close(d);
    return rc;
}

static void test_shards(void)
{
    char glob[300];
    write_shard("a16.bin", 20240520, 1, 1000, 2, 1000, 50000);
    write_shard("a32.bin", 20240801, 7, 1000, 4, 1000, 120000);
    snprintf(glob, sizeof glob, "%s/a16.bin", tmpdir);
    EXPECT(open_shards(glob, 50257) == ST_OK);
    snprintf(glob, sizeof glob, "%s/a32.bin", tmpdir);
    EXPECT(open_shards(glob, 128256) == ST_OK);
    snprintf(glob, sizeof glob, "%s/a*.bin", tmpdir);
    EXPECT(open_shards(glob, 128256) == ST_OK);
    /* token id at the vocabulary edge */
    snprintf(glob, sizeof glob, "%s/a32.bin", tmpdir);
    EXPECT(open_shards(glob, 120000) == ST_DATA);
    write_shard("magic.bin", 12345, 1, 100, 2, 100, 10);
    snprintf(glob, sizeof glob, "%s/magic.bin", tmpdir);
    EXPECT(open_shards(glob, 256) == ST_DATA);
    write_shard("trunc.bin", 20240520, 1, 1000, 2, 999, 10);
    snprintf(glob, sizeof glob, "%s/trunc.bin", tmpdir);
    EXPECT(open_shards(glob, 256) == ST_DATA);
    write_shard("ver.bin", 20240801, 1, 100, 4, 100, 10);
    snprintf(glob, sizeof glob, "%s/ver.bin", tmpdir);
    EXPECT(open_shards(glob, 256) == ST_DATA);
    snprintf(glob, sizeof glob, "%s/none-*.bin", tmpdir);
    EXPECT(open_shards(glob, 256) == ST_NOINPUT);
    write_shard("short.bin", 20240520, 1, 8, 2, 8, 10);
    snprintf(glob, sizeof glob, "%s/short.bin", tmpdir);
    EXPECT(open_shards(glob, 256) == ST_DATA);
}

int main(void)
{
    if (!mkdtemp(tmpdir))
        return 1;
    harness_run("keyed permutation is a bijection", test_permutation_bijective);
    harness_run("batch rows independent of the split over ranks", test_order_independent_of_split);
    harness_run("synthetic corpus correct, validation held out", test_synthetic_corpus);
    harness_run("llm.c shards: uint16, uint32, glob, and bad ones", test_shards);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        return 1;
    return harness_end();
}
