/* Checkpoint tests: round trips for every codec and odd chunk sizes, multi-
 * rank saves read back with other splits, corruption and fallback, hostile
 * manifests, rotation, leftover .tmp, disk full, on_save. */
#include "../ckpt/ckpt_int.h"
#include "../util/util.h"
#include "harness.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

static model_layout L;
static float *arr[CKPT_N_ARRAYS];
static char root[256];

static uint64_t rng_state = 88172645463325252ull;
static double test_uniform(void)
{
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return ((double)(rng_state >> 11) + 0.5) / 9007199254740992.0;
}
static double test_normal(void)
{
    return sqrt(-2.0 * log(test_uniform())) * cos(6.283185307179586 * test_uniform());
}

static void test_setup_layout(int64_t vocab, int64_t dim)
{
    model_shape s = {.dim = dim, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1, .head_dim = dim / 2,
                     .ffn_dim = 2 * dim, .vocab = vocab, .seq_len = 8, .rope_theta = 10000, .norm_eps = 1e-6};
    model_layout_free(&L);
    for (int a = 0; a < CKPT_N_ARRAYS; a++)
        free(arr[a]);
    EXPECT(model_layout_init(&L, &s) == ST_OK);
    for (int a = 0; a < CKPT_N_ARRAYS; a++) {
        arr[a] = malloc(L.n_floats * sizeof(float));
        for (size_t i = 0; i < L.n_floats; i++) {
            double g = test_normal();
            arr[a][i] = (float)(a == 0 ? 0.02 * g : a == 1 ? 1e-3 * g : 1e-6 * g * g);
        }
    }
}

static ckpt_opts test_opts(int codec, size_t chunk)
{
    ckpt_opts o = {.codec = codec, .level = 3, .chunk_bytes = chunk, .threads = 2, .keep_last = 100,
                   .keep_every = 0, .busy_wait = 1};
    return o;
}

/* Saves step with world = n_cuts+1 ranks split at cuts, in one process. */
static int test_save(const char *dir, const ckpt_opts *o, int64_t step, const size_t *cuts, int n_cuts)
{
    int world = n_cuts + 1, rc = ST_OK;
    ckpt_writer *w[8] = {0};
    for (int r = 0; r < world && rc == ST_OK; r++)
        rc = ckpt_writer_open(&w[r], dir, o, r, world);
    for (int r = 0; r < world && rc == ST_OK; r++) {
        size_t lo = r ? cuts[r - 1] : 0, hi = r < n_cuts ? cuts[r] : L.n_floats;
        ckpt_meta m = {.step = step, .tokens = (uint64_t)step * 64, .elapsed_seconds = 1.5 * (double)step,
                       .loss_scale = 1, .lr = 3e-4, .world_size = world, .rank = r,
                       .config_text = "[train]\nlr = 3e-4\n", .layout = &L, .lo = lo, .hi = hi};
        for (int a = 0; a < CKPT_N_ARRAYS; a++)
            m.arrays[a] = arr[a] + lo;
        rc = ckpt_writer_submit(w[r], &m);
    }
    for (int r = 0; r < world && rc == ST_OK; r++) {
        int err = 0;
        ckpt_writer_drain(w[r], 60);
        if (ckpt_writer_written(w[r], &err) != step || err)
            rc = err ? err : ST_SOFTWARE;
    }
    if (rc == ST_OK) {
        rc = ckpt_writer_commit(w[0], step);
        ckpt_writer_drain(w[0], 60);
        ckpt_result res;
        int err = 0;
        ckpt_writer_written(w[0], &err);
        if (rc == ST_OK && (ckpt_writer_committed(w[0], &res) != step || err))
            rc = err ? err : ST_SOFTWARE;
    }
    for (int r = 0; r < world; r++)
        ckpt_writer_close(w[r]);
    return rc;
}

static void test_path(char *out, size_t cap, const char *sub)
{
    snprintf(out, cap, "%s/%s", root, sub);
}

static void test_step_dir(char *out, size_t cap, const char *dir, int64_t step)
{
    snprintf(out, cap, "%s/step-%08lld", dir, (long long)step);
}

/* Reads the whole checkpoint back in n_parts ranges and compares bitwise. */
static int test_matches(const char *step_dir, int n_parts)
{
    ckpt_reader *r = NULL;
    int same = 1;
    if (ckpt_open(&r, step_dir) != ST_OK)
        return 0;
    float *buf = malloc(L.n_floats * sizeof(float));
    for (int a = 0; a < CKPT_N_ARRAYS; a++) {
        memset(buf, 0xff, L.n_floats * sizeof(float));
        for (int p = 0; p < n_parts; p++) {
            size_t lo = L.n_floats * (size_t)p / (size_t)n_parts, hi = L.n_floats * (size_t)(p + 1) / (size_t)n_parts;
            same &= ckpt_read_range(r, a, lo, hi, buf + lo) == ST_OK;
        }
        same &= memcmp(buf, arr[a], L.n_floats * sizeof(float)) == 0;
        char d[17], want[17];
        snprintf(want, sizeof want, "%016llx", (unsigned long long)XXH3_64bits(arr[a], L.n_floats * sizeof(float)));
        same &= ckpt_digest(r, a, d) == ST_OK && strcmp(d, want) == 0;
    }
    same &= ckpt_verify(r) == ST_OK;
    free(buf);
    ckpt_close(r);
    return same;
}

static void test_roundtrip_codecs(void)
{
    const char *names[] = {"none", "zstd", "shuffle-zstd", "planes-zstd"};
    for (int c = 0; c < CKPT_N_CODECS; c++) {
        char dir[300], step[340];
        snprintf(dir, sizeof dir, "%s/codec-%d", root, c);
        ckpt_opts o = test_opts(ckpt_codec_from_name(names[c]), 4 * 1024);
        EXPECT(o.codec == c);
        EXPECT(test_save(dir, &o, 7, NULL, 0) == ST_OK);
        test_step_dir(step, sizeof step, dir, 7);
        EXPECT(test_matches(step, 1));
        ckpt_reader *r = NULL;
        EXPECT(ckpt_open(&r, step) == ST_OK);
        if (r) {
            const ckpt_info *in = ckpt_get_info(r);
            EXPECT(in->step == 7 && in->tokens == 7 * 64 && in->world_size == 1 && in->codec == c);
            EXPECT(in->n_floats == L.n_floats && in->raw_bytes == 12 * L.n_floats);
            EXPECT(strcmp(in->config_text, "[train]\nlr = 3e-4\n") == 0 && in->elapsed_seconds == 10.5);
            EXPECT(in->shape.dim == L.s.dim && in->shape.vocab == L.s.vocab);
            if (c >= CKPT_CODEC_SHUFFLE_ZSTD)
                EXPECT(in->stored_bytes < in->raw_bytes);
            else if (c == CKPT_CODEC_NONE)
                EXPECT(in->stored_bytes == in->raw_bytes);
        }
        ckpt_close(r);
    }
    EXPECT(ckpt_codec_from_name("lz4") == -1);
}

static void test_odd_chunks(void)
{
    size_t sizes[] = {4, 28, 4 * 1000, 1 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char dir[300], step[340];
        snprintf(dir, sizeof dir, "%s/chunk-%zu", root, sizes[i]);
        ckpt_opts o = test_opts(CKPT_CODEC_PLANES_ZSTD, sizes[i]);
        EXPECT(test_save(dir, &o, 1, NULL, 0) == ST_OK);
        test_step_dir(step, sizeof step, dir, 1);
        EXPECT(test_matches(step, 3));
    }
    ckpt_writer *w = NULL;
    ckpt_opts bad = test_opts(CKPT_CODEC_ZSTD, 6);
    char dir[300];
    test_path(dir, sizeof dir, "chunk-bad");
    EXPECT(ckpt_writer_open(&w, dir, &bad, 0, 1) == ST_CONFIG);
}

static void test_multi_shard(void)
{
    char dir[300], step[340], d3[4][17], d1[4][17];
    size_t cuts[] = {100, 501};
    test_path(dir, sizeof dir, "multi");
    ckpt_opts o = test_opts(CKPT_CODEC_SHUFFLE_ZSTD, 4 * 37);
    EXPECT(test_save(dir, &o, 3, cuts, 2) == ST_OK);
    test_step_dir(step, sizeof step, dir, 3);
    EXPECT(test_matches(step, 2));
    EXPECT(test_matches(step, 4));
    ckpt_reader *r = NULL;
    EXPECT(ckpt_open(&r, step) == ST_OK);
    for (int a = 0; r && a < 3; a++)
        EXPECT(ckpt_digest(r, a, d3[a]) == ST_OK);
    EXPECT(r && ckpt_get_info(r)->world_size == 3);
    ckpt_close(r);
    /* World 1 and another codec: same digests. */
    o = test_opts(CKPT_CODEC_NONE, 4 * 1024);
    test_path(dir, sizeof dir, "multi-1");
    EXPECT(test_save(dir, &o, 3, NULL, 0) == ST_OK);
    test_step_dir(step, sizeof step, dir, 3);
    EXPECT(ckpt_open(&r, step) == ST_OK);
    for (int a = 0; r && a < 3; a++)
        EXPECT(ckpt_digest(r, a, d1[a]) == ST_OK && strcmp(d1[a], d3[a]) == 0);
    ckpt_close(r);
    /* More ranks than some ranges: an empty shard is fine. */
    size_t cuts2[] = {0, 776 / 2, 776 / 2};
    test_path(dir, sizeof dir, "multi-empty");
    o = test_opts(CKPT_CODEC_PLANES_ZSTD, 4 * 50);
    EXPECT(test_save(dir, &o, 2, cuts2, 3) == ST_OK);
    test_step_dir(step, sizeof step, dir, 2);
    EXPECT(test_matches(step, 3));
}

/* Runs open+verify quietly; returns the status and leaves the message in err. */
static int test_check(const char *step_dir, char *err, size_t cap)
{
    ckpt_reader *r = NULL;
    int rc = ckpt_open_quiet(&r, step_dir, err, cap);
    if (rc == ST_OK && (rc = ckpt_verify_quiet(r)) != ST_OK)
        snprintf(err, cap, "%s", r->err);
    ckpt_close(r);
    return rc;
}

static void test_flip_byte(const char *path, long off)
{
    FILE *f = fopen(path, "r+b");
    EXPECT(f != NULL);
    if (!f)
        return;
    fseek(f, off, SEEK_SET);
    int c = fgetc(f);
    fseek(f, off, SEEK_SET);
    fputc(c ^ 0x40, f);
    fclose(f);
}

static void test_corruption(void)
{
    char dir[300], s1[340], s2[340], p[400], err[CKPT_ERR], latest[400];
    test_path(dir, sizeof dir, "corrupt");
    ckpt_opts o = test_opts(CKPT_CODEC_SHUFFLE_ZSTD, 4 * 64);
    size_t cuts[] = {300};
    EXPECT(test_save(dir, &o, 1, cuts, 1) == ST_OK);
    test_step_dir(s1, sizeof s1, dir, 1);
    test_step_dir(s2, sizeof s2, dir, 2);
    for (int kind = 0; kind < 5; kind++) {
        EXPECT(test_save(dir, &o, 2, cuts, 1) == ST_OK);
        EXPECT(test_check(s2, err, sizeof err) == ST_OK);
        snprintf(p, sizeof p, "%s/shard-00001.bin", s2);
        struct stat st;
        stat(p, &st);
        if (kind == 0) {
            test_flip_byte(p, (long)st.st_size / 2);
        } else if (kind == 1) {
            EXPECT(truncate(p, st.st_size - 5) == 0);
        } else if (kind == 2) {
            snprintf(p, sizeof p, "%s/manifest.json", s2);
            EXPECT(unlink(p) == 0);
        } else {
            /* Edit a size in the manifest: the file_bytes of shard 1, or a
             * chunk's stored size. */
            char *text = NULL, key[64];
            size_t len = 0;
            snprintf(p, sizeof p, "%s/manifest.json", s2);
            EXPECT(util_read_file(p, &text, &len) == ST_OK);
            snprintf(key, sizeof key, "\"file_bytes\":%lld", (long long)st.st_size);
            char *at = text ? strstr(text, kind == 3 ? key : "[0,300,64,0,") : NULL;
            EXPECT(at != NULL);
            if (at) {
                char *digit = kind == 3 ? at + strlen(key) - 1 : at + 12;
                *digit = *digit == '9' ? '1' : (char)(*digit + 1);
                FILE *f = fopen(p, "wb");
                fwrite(text, 1, len, f);
                fclose(f);
            }
            free(text);
        }
        int rc = test_check(s2, err, sizeof err);
        EXPECT(rc == ST_DATA);
        EXPECT(strstr(err, "step-00000002") != NULL);
        if (kind < 2)
            EXPECT(strstr(err, "shard-00001.bin chunk") != NULL);
        if (rc != ST_DATA || !strstr(err, "step-00000002"))
            fprintf(stderr, "    kind %d: %s\n", kind, err);
        EXPECT(ckpt_find_latest(dir, latest, sizeof latest) == ST_OK && strcmp(latest, s1) == 0);
        EXPECT(ckpt_rm_rf(s2) == 0);
    }
    /* Nothing verifies: ST_NOINPUT. */
    snprintf(p, sizeof p, "%s/shard-00000.bin", s1);
    test_flip_byte(p, 3);
    EXPECT(ckpt_find_latest(dir, latest, sizeof latest) == ST_NOINPUT);
    test_path(p, sizeof p, "no-such-dir");
    EXPECT(ckpt_find_latest(p, latest, sizeof latest) == ST_NOINPUT);
    EXPECT(ckpt_count(p) == 0);
}

/* Replaces the first occurrence of from by to and parses the result. */
static int test_parse_edit(const char *text, const char *from, const char *to, char *err, size_t cap)
{
    ckpt_reader r = {0};
    size_t n = strlen(text) + strlen(to) + 1;
    char *buf = malloc(n);
    const char *at = strstr(text, from);
    if (!at) {
        free(buf);
        snprintf(err, cap, "pattern %s not found", from);
        return -1;
    }
    snprintf(buf, n, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    snprintf(r.dir, sizeof r.dir, "edited");
    int rc = ckpt_manifest_parse(&r, buf, strlen(buf));
    snprintf(err, cap, "%s", r.err);
    ckpt_reader_reset(&r);
    free(buf);
    return rc;
}

static void test_hostile_manifest(void)
{
    char dir[300], step[340], p[400], err[CKPT_ERR];
    char *text = NULL;
    size_t len = 0;
    size_t cuts[] = {200, 400};
    test_path(dir, sizeof dir, "hostile");
    ckpt_opts o = test_opts(CKPT_CODEC_ZSTD, 4 * 100);
    EXPECT(test_save(dir, &o, 4, cuts, 2) == ST_OK);
    test_step_dir(step, sizeof step, dir, 4);
    snprintf(p, sizeof p, "%s/manifest.json", step);
    EXPECT(util_read_file(p, &text, &len) == ST_OK);
    if (!text)
        return;
    EXPECT(test_parse_edit(text, "\"step\"", "\"step\"", err, sizeof err) == ST_OK);
    struct { const char *from, *to, *field; } edits[] = {
        {"\"n_floats\":776", "\"n_floats\":1099511627776000", "n_floats"},
        {"\"n_floats\":776", "\"n_floats\":0", "n_floats"},
        {"\"world_size\":3", "\"world_size\":0", "world_size"},
        {"\"world_size\":3", "\"world_size\":2", "shards"},
        {"\"world_size\":3", "\"world_size\":1000000000", "world_size"},
        {"\"chunk_bytes\":400", "\"chunk_bytes\":0", "chunk_bytes"},
        {"\"chunk_bytes\":400", "\"chunk_bytes\":4", "floats exceed chunk_bytes"},
        {"\"chunk_bytes\":400", "\"chunk_bytes\":1073741824", "chunk_bytes"},
        {"\"format_version\":1", "\"format_version\":2", "format_version"},
        {"\"format_version\":1", "\"format_version\":\"1\"", "format_version"},
        {"\"codec\":\"zstd\"", "\"codec\":\"lz9\"", "codec"},
        {"\"lo\":200", "\"lo\":199", "overlaps"},
        {"\"lo\":200", "\"lo\":201", "hole"},
        {"\"hi\":776", "\"hi\":775", "shard 2"},
        {"\"dim\":8", "\"dim\":16", "model"},
        {"\"vocab\":11", "\"vocab\":99999999999", "vocab"},
        {"\"name\":\"lm_head.weight\"", "\"name\":\"../../etc/passwd\"", "params"},
        {"\"file\":\"shard-00001.bin\"", "\"file\":\"../shard-00001.bin\"", "rank/file"},
        {"\"stored_bytes\":", "\"stored_bytes\":1", "stored_bytes"},
        {"\"raw_bytes\":", "\"raw_bytes\":1", "raw_bytes"},
        {"[0,0,100,0,", "[0,0,100000000,0,", "chunk 0"},
        {"[0,0,100,0,", "[5,0,100,0,", "chunk 0"},
        {"[0,0,100,0,", "[0,0,100,-1,", "chunk 0"},
        {"\"chunks\":[[0,0,100,0,", "\"chunks\":[[0,0,100,0,1,2,3],[0,0,100,0,", "chunk 0"},
        {"\"shards\":[", "\"shards\":[{},", "shards"},
        {"{", "[", "JSON"},
        {"\"format\":", "\"x\":1}", "after the JSON"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        int rc = test_parse_edit(text, edits[i].from, edits[i].to, err, sizeof err);
        EXPECT(rc == ST_DATA);
        EXPECT(strstr(err, edits[i].field) != NULL);
        if (rc != ST_DATA || !strstr(err, edits[i].field))
            fprintf(stderr, "    edit %zu (%s): rc %d: %s\n", i, edits[i].to, rc, err);
    }
    const char *junk[] = {"", "{}", "null", "[]", "{\"format\":\"spotrain-checkpoint\"}", "\x01\x02", "{\"a\":"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        ckpt_reader r = {0};
        EXPECT(ckpt_manifest_parse(&r, junk[i], strlen(junk[i])) == ST_DATA);
        ckpt_reader_reset(&r);
    }
    free(text);
}

static int test_exists(const char *dir, int64_t step, const char *suffix)
{
    char p[400];
    struct stat st;
    snprintf(p, sizeof p, "%s/step-%08lld%s", dir, (long long)step, suffix);
    return stat(p, &st) == 0;
}

static void test_rotation(void)
{
    char dir[300], err[CKPT_ERR];
    test_path(dir, sizeof dir, "rotate");
    ckpt_opts o = test_opts(CKPT_CODEC_PLANES_ZSTD, 4 * 256);
    o.keep_last = 2;
    o.keep_every = 4;
    for (int64_t s = 1; s <= 9; s++)
        EXPECT(test_save(dir, &o, s, NULL, 0) == ST_OK);
    for (int64_t s = 1; s <= 9; s++)
        EXPECT(test_exists(dir, s, "") == (s == 4 || s == 8 || s == 9));
    EXPECT(ckpt_count(dir) == 3);
    /* The newest is damaged and keep_last = 1: the newest good one survives. */
    char p[400], s9[340];
    test_step_dir(s9, sizeof s9, dir, 9);
    snprintf(p, sizeof p, "%s/shard-00000.bin", s9);
    test_flip_byte(p, 1);
    EXPECT(test_check(s9, err, sizeof err) == ST_DATA);
    EXPECT(ckpt_rotate(dir, 1, 0, -1) == ST_OK);
    EXPECT(test_exists(dir, 9, "") && test_exists(dir, 8, "") && !test_exists(dir, 4, ""));
}

/* The step a writer just committed is trusted without a re-read while its
 * manifest parses and its files keep their sizes; anything else is read. */
static void test_rotation_fresh(void)
{
    char dir[300], p[400], s2[340];
    struct stat st;
    test_path(dir, sizeof dir, "rotate-fresh");
    ckpt_opts o = test_opts(CKPT_CODEC_NONE, 4 * 64);
    EXPECT(test_save(dir, &o, 1, NULL, 0) == ST_OK);
    EXPECT(test_save(dir, &o, 2, NULL, 0) == ST_OK);
    test_step_dir(s2, sizeof s2, dir, 2);
    snprintf(p, sizeof p, "%s/shard-00000.bin", s2);
    test_flip_byte(p, 3);                               /* damage the size cannot show */
    EXPECT(ckpt_rotate(dir, 1, 0, -1) == ST_OK);        /* verified: 1 is the only good one */
    EXPECT(test_exists(dir, 1, "") && test_exists(dir, 2, ""));
    EXPECT(ckpt_rotate(dir, 1, 0, 2) == ST_OK);         /* trusted as just committed: 1 goes */
    EXPECT(!test_exists(dir, 1, "") && test_exists(dir, 2, ""));
    o.keep_last = 1;
    EXPECT(test_save(dir, &o, 3, NULL, 0) == ST_OK);    /* the writer's rotation trusts 3 and drops 2 */
    EXPECT(!test_exists(dir, 2, "") && test_exists(dir, 3, ""));
    o.keep_last = 100;
    EXPECT(test_save(dir, &o, 4, NULL, 0) == ST_OK);
    test_step_dir(s2, sizeof s2, dir, 4);
    snprintf(p, sizeof p, "%s/shard-00000.bin", s2);
    EXPECT(stat(p, &st) == 0 && truncate(p, st.st_size - 4) == 0);  /* a size change: fully verified */
    EXPECT(ckpt_rotate(dir, 1, 0, 4) == ST_OK);
    EXPECT(test_exists(dir, 3, "") && test_exists(dir, 4, ""));
    snprintf(p, sizeof p, "%s/manifest.json", s2);
    EXPECT(truncate(p, 10) == 0);                       /* a broken manifest: not trusted either */
    EXPECT(ckpt_rotate(dir, 1, 0, 4) == ST_OK);
    EXPECT(test_exists(dir, 3, "") && test_exists(dir, 4, ""));
}

/* Parallel verify: same digests and, with damage, the same first bad chunk
 * as a serial pass. */
static void test_parallel_verify(void)
{
    char dir[300], step[340], p[400], e1[CKPT_ERR], e4[CKPT_ERR], d1[CKPT_N_ARRAYS][17], d4[CKPT_N_ARRAYS][17];
    test_path(dir, sizeof dir, "parverify");
    ckpt_opts o = test_opts(CKPT_CODEC_SHUFFLE_ZSTD, 4 * 16);
    size_t cuts[] = {200};
    EXPECT(test_save(dir, &o, 1, cuts, 1) == ST_OK);
    test_step_dir(step, sizeof step, dir, 1);
    for (int damaged = 0; damaged < 2; damaged++) {
        ckpt_reader *r1 = NULL, *r4 = NULL;
        EXPECT(ckpt_open_quiet(&r1, step, e1, sizeof e1) == ST_OK && ckpt_open_quiet(&r4, step, e4, sizeof e4) == ST_OK);
        if (!r1 || !r4) {
            ckpt_close(r1);
            ckpt_close(r4);
            return;
        }
        r1->threads = 1;
        r4->threads = 4;
        int c1 = ckpt_verify_digest(r1, d1), c4 = ckpt_verify_digest(r4, d4);
        EXPECT(c1 == (damaged ? ST_DATA : ST_OK) && c4 == c1);
        EXPECT(strcmp(r1->err, r4->err) == 0);
        for (int a = 0; !damaged && a < CKPT_N_ARRAYS; a++) {
            char want[17];
            snprintf(want, sizeof want, "%016llx", (unsigned long long)XXH3_64bits(arr[a], L.n_floats * sizeof(float)));
            EXPECT(strcmp(d1[a], want) == 0 && strcmp(d4[a], want) == 0);
        }
        if (damaged)
            EXPECT(strstr(r4->err, "shard-00001.bin chunk 5 ") != NULL);
        ckpt_close(r1);
        ckpt_close(r4);
        /* Two bad chunks in rank 1's shard, 5 and 9: both passes name 5. */
        snprintf(p, sizeof p, "%s/shard-00001.bin", step);
        ckpt_reader *r = NULL;
        if (!damaged && ckpt_open_quiet(&r, step, e1, sizeof e1) == ST_OK) {
            test_flip_byte(p, (long)r->shards[1].chunks[9].off);
            test_flip_byte(p, (long)r->shards[1].chunks[5].off + 1);
        }
        ckpt_close(r);
    }
}

/* A shard far above the writeback window (and its 16 MiB write runs), with
 * raw and compressed chunks interleaved, reads back bitwise. */
static void test_large_stream(void)
{
    char dir[300], step[340];
    test_setup_layout(32000, 128);                      /* ~8.4M floats: 100 MB of state */
    uint64_t x = 0x2545f4914f6cdd1dull;
    size_t run = (1 << 20) / 4;
    for (size_t lo = 0; lo < L.n_floats; lo += 2 * run)  /* v: 1 MiB of noise, 1 MiB of zeros, ... */
        for (size_t i = lo; i < L.n_floats && i < lo + 2 * run; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            uint32_t bits = i < lo + run ? (uint32_t)x : 0;
            memcpy(&arr[2][i], &bits, 4);
        }
    const int codecs[] = {CKPT_CODEC_NONE, CKPT_CODEC_SHUFFLE_ZSTD};
    for (int k = 0; k < 2; k++) {
        snprintf(dir, sizeof dir, "%s/large-%d", root, k);
        ckpt_opts o = test_opts(codecs[k], 1 << 20);
        EXPECT(test_save(dir, &o, 1, NULL, 0) == ST_OK);
        test_step_dir(step, sizeof step, dir, 1);
        EXPECT(test_matches(step, 2));
    }
    test_setup_layout(11, 8);
}

static void test_leftover_tmp(void)
{
    char dir[300], p[400], latest[400];
    test_path(dir, sizeof dir, "leftover");
    ckpt_opts o = test_opts(CKPT_CODEC_ZSTD, 4 * 256);
    EXPECT(test_save(dir, &o, 5, NULL, 0) == ST_OK);
    snprintf(p, sizeof p, "%s/step-00000006.tmp", dir);
    EXPECT(mkdir(p, 0755) == 0);
    snprintf(p, sizeof p, "%s/step-00000006.tmp/shard-00000.bin", dir);
    FILE *f = fopen(p, "wb");
    fputs("half written", f);
    fclose(f);
    EXPECT(ckpt_count(dir) == 1);
    EXPECT(ckpt_find_latest(dir, latest, sizeof latest) == ST_OK && strstr(latest, "step-00000005"));
    ckpt_writer *w = NULL;
    EXPECT(ckpt_writer_open(&w, dir, &o, 0, 1) == ST_OK);
    EXPECT(!test_exists(dir, 6, ".tmp"));
    ckpt_writer *w2 = NULL;
    EXPECT(ckpt_writer_open(&w2, dir, &o, 0, 1) == ST_IOERR); /* one writer per rank and dir */
    ckpt_writer_close(w);
}

static void test_on_save(void)
{
    char dir[300], out[400], cmd[1024], *text = NULL;
    test_path(dir, sizeof dir, "onsave");
    test_path(out, sizeof out, "onsave.txt");
    ckpt_opts o = test_opts(CKPT_CODEC_ZSTD, 4 * 256);
    snprintf(o.on_save, sizeof o.on_save, "echo \"$SPOTRAIN_STEP $SPOTRAIN_CKPT_DIR\" > '%s'", out);
    EXPECT(test_save(dir, &o, 12, NULL, 0) == ST_OK);
    EXPECT(util_read_file(out, &text, NULL) == ST_OK);
    snprintf(cmd, sizeof cmd, "12 %s/step-00000012\n", dir);
    EXPECT(text && strcmp(text, cmd) == 0);
    free(text);
    snprintf(o.on_save, sizeof o.on_save, "exit 3");
    EXPECT(test_save(dir, &o, 13, NULL, 0) == ST_OK);
    EXPECT(test_exists(dir, 13, ""));
}

static void test_disk_full(void)
{
    char dir[300], ck[340], s1[400], latest[400], err[CKPT_ERR];
    test_path(dir, sizeof dir, "full");
    EXPECT(mkdir(dir, 0755) == 0);
    if (mount("tmpfs", dir, "tmpfs", 0, "size=64k") != 0) {
        printf("SKIP disk_full: cannot mount a small tmpfs (%s); needs root with CAP_SYS_ADMIN\n", strerror(errno));
        return;
    }
    snprintf(ck, sizeof ck, "%s/ckpt", dir);
    ckpt_opts o = test_opts(CKPT_CODEC_NONE, 4 * 256);
    EXPECT(test_save(ck, &o, 1, NULL, 0) == ST_OK);   /* 9 KiB: fits */
    test_setup_layout(512, 16);                        /* ~100 KiB: does not */
    int rc = test_save(ck, &o, 2, NULL, 0);
    EXPECT(rc == ST_IOERR);
    EXPECT(!test_exists(ck, 2, "") && !test_exists(ck, 2, ".tmp"));
    test_step_dir(s1, sizeof s1, ck, 1);
    EXPECT(test_check(s1, err, sizeof err) == ST_OK);
    EXPECT(ckpt_find_latest(ck, latest, sizeof latest) == ST_OK && strcmp(latest, s1) == 0);
    EXPECT(umount(dir) == 0);
    test_setup_layout(11, 8);
}

static void test_unwritable(void)
{
    char file[300], dir[400];
    ckpt_writer *w = NULL;
    test_path(file, sizeof file, "plainfile");
    FILE *f = fopen(file, "w");
    fclose(f);
    snprintf(dir, sizeof dir, "%s/ckpt", file);
    ckpt_opts o = test_opts(CKPT_CODEC_ZSTD, 4 * 256);
    EXPECT(ckpt_writer_open(&w, dir, &o, 0, 1) != ST_OK);
    ckpt_writer_close(w);
    /* /dev/full gives ENOSPC on every write: the shard writer's error path. */
    EXPECT(ckpt_write_file("/dev/full", "x", 1, dir, sizeof dir) == ST_IOERR);
}

static void test_names(void)
{
    int64_t s = 0;
    EXPECT(ckpt_name_step("step-00000012", &s) == 0 && s == 12);
    EXPECT(ckpt_name_step("step-123456789", &s) == 0 && s == 123456789);
    EXPECT(ckpt_name_step("step-00000012.tmp", &s) == 1);
    EXPECT(ckpt_name_step("step-00000012.del.tmp", &s) == 1);
    EXPECT(ckpt_name_step("step-0012", &s) == -1);
    EXPECT(ckpt_name_step("step-00000012x", &s) == -1);
    EXPECT(ckpt_name_step("manifest.json", &s) == -1);
}

int main(void)
{
    util_quiet = 1;
    snprintf(root, sizeof root, "/tmp/spotrain-test-ckpt.%d", (int)getpid());
    mkdir(root, 0755);
    test_setup_layout(11, 8);
    harness_run("names", test_names);
    harness_run("roundtrip every codec", test_roundtrip_codecs);
    harness_run("odd chunk sizes", test_odd_chunks);
    harness_run("3 ranks, read back as 2 and 4", test_multi_shard);
    harness_run("corruption -> ST_DATA, fallback", test_corruption);
    harness_run("hostile manifests rejected", test_hostile_manifest);
    harness_run("rotation keep_last/keep_every", test_rotation);
    harness_run("rotation trusts the step just committed", test_rotation_fresh);
    harness_run("parallel verify = serial verify", test_parallel_verify);
    harness_run("large streamed saves", test_large_stream);
    harness_run("leftover .tmp ignored and cleaned", test_leftover_tmp);
    harness_run("on_save hook", test_on_save);
    harness_run("disk full abandons cleanly", test_disk_full);
    harness_run("unwritable directory", test_unwritable);
    model_layout_free(&L);
    for (int a = 0; a < CKPT_N_ARRAYS; a++)
        free(arr[a]);
    ckpt_rm_rf(root);
    return harness_end();
}
