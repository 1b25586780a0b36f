/* Checkpoint tests: round trips for every codec and odd chunk sizes, multi-
 * rank saves read back with other splits, corruption and fallback, hostile
 * manifests, rotation, leftover .tmp, disk full, on_save.
 * module: ckpt */
#include "ckpt/ckpt_int.h"
#include "model/model.h"
#include "util/util.h"
#include "tests/harness.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

static model_layout L;
static ckpt_table tab;
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
    model_ckpt_table_free(&tab);
    for (int a = 0; a < CKPT_N_ARRAYS; a++)
        free(arr[a]);
    EXPECT(model_layout_init(&L, &s) == ST_OK);
    EXPECT(model_to_ckpt_table(&L, &tab) == ST_OK);
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

/* When set, test_save records these (backend, precision, device,
 * libraries, loss scaling) in every rank's meta. */
static const ckpt_meta *test_who;

/* Saves step with world = n_cuts+1 ranks split at cuts, in one process. */
static int test_save(const char *dir, const ckpt_opts *o, int64_t step, const size_t *cuts, int n_cuts)
{
    int world = n_cuts + 1, rc = ST_OK;
    ckpt_writer *w[8] = {0};
    ckpt_host_arrays host[8];
    for (int r = 0; r < world && rc == ST_OK; r++) {
        size_t lo = r ? cuts[r - 1] : 0, hi = r < n_cuts ? cuts[r] : L.n_floats;
        rc = ckpt_writer_open(&w[r], dir, o, r, world, lo, hi);
    }
    for (int r = 0; r < world && rc == ST_OK; r++) {
        size_t lo = r ? cuts[r - 1] : 0, hi = r < n_cuts ? cuts[r] : L.n_floats;
        int skipped = 1;
        ckpt_meta m = {.step = step, .tokens = (uint64_t)step * 64, .elapsed_seconds = 1.5 * (double)step,
                       .loss_scale = 1, .lr = 3e-4, .world_size = world, .rank = r,
                       .config_text = "[train]\nlr = 3e-4\n", .table = &tab, .lo = lo, .hi = hi};
        host[r] = (ckpt_host_arrays){{arr[0] + lo, arr[1] + lo, arr[2] + lo}, lo};
        m.src = (ckpt_source){.fill = ckpt_host_fill, .arg = &host[r]};
        if (test_who) {
            m.backend = test_who->backend;
            m.precision = test_who->precision;
            m.device = test_who->device;
            m.libraries = test_who->libraries;
            m.loss_scale = test_who->loss_scale;
            m.loss_scaling = test_who->loss_scaling;
            m.loss_scale_clean = test_who->loss_scale_clean;
        }
        rc = ckpt_writer_submit(w[r], &m, &skipped);
        if (rc == ST_OK && skipped)
            rc = ST_SOFTWARE;
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
            EXPECT(in->model.dim == L.s.dim && in->model.vocab == L.s.vocab && in->format_version == 2 && !in->unsealed);
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
    EXPECT(ckpt_writer_open(&w, dir, &bad, 0, 1, 0, L.n_floats) == ST_CONFIG);
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

/* The manifest's JSON without its seal: the text up to ,"manifest_xxh3"
 * and a closing brace. Caller frees. */
static char *test_unseal(const char *text)
{
    const char *at = strstr(text, ",\"manifest_xxh3\":");
    size_t n = at ? (size_t)(at - text) : 0;
    char *out = malloc(n + 2);
    if (out && at)
        snprintf(out, n + 2, "%.*s}", (int)n, text);
    else if (out)
        out[0] = 0;
    return out;
}

/* Replaces the first occurrence of from by to in the sealed manifest text,
 * seals the result again when reseal is set (so the checks behind the seal
 * are what is tested), and parses it. */
static int test_parse_edit_ex(const char *text, const char *from, const char *to, int reseal, char *err, size_t cap)
{
    ckpt_reader r = {0};
    char *body = reseal ? test_unseal(text) : strdup(text);
    size_t n = strlen(body) + strlen(to) + 1;
    char *buf = malloc(n), *sealed = NULL;
    const char *at = strstr(body, from);
    int rc = -1;
    snprintf(err, cap, "pattern %s not found", from);
    if (at) {
        snprintf(buf, n, "%.*s%s%s", (int)(at - body), body, to, at + strlen(from));
        sealed = reseal ? ckpt_manifest_seal(buf, strlen(buf)) : strdup(buf);
        snprintf(r.dir, sizeof r.dir, "edited");
        rc = sealed ? ckpt_manifest_parse(&r, sealed, strlen(sealed)) : -1;
        snprintf(err, cap, "%s", sealed ? r.err : "cannot seal");
        ckpt_reader_reset(&r);
    }
    free(body);
    free(buf);
    free(sealed);
    return rc;
}

static int test_parse_edit(const char *text, const char *from, const char *to, char *err, size_t cap)
{
    return test_parse_edit_ex(text, from, to, 1, err, cap);
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
        {"\"format_version\":2", "\"format_version\":3", "format_version"},
        {"\"format_version\":2", "\"format_version\":1", "format_version"},
        {"\"format_version\":2", "\"format_version\":\"2\"", "format_version"},
        {"\"name\":\"lm_head.weight\"", "\"name\":\"model.norm.weight\"", "twice"},
        {"\"name\":\"lm_head.weight\"", "\"name\":\"\"", "params"},
        {"\"offset\":0", "\"offset\":1", "offset"},
        {"\"shape\":[11,8]", "\"shape\":[11,9]", "offset"},
        {"\"shape\":[11,8]", "\"shape\":[11,0]", "params"},
        {"\"shape\":[11,8]", "\"shape\":[11,8,1]", "params"},
        {"\"params\":[", "\"params\":[{\"name\":\"x\",\"shape\":[1],\"offset\":0},", "params"},
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
        /* 2 threads, 6 chunks ahead: the same digests and the same error. */
        char e1w[CKPT_ERR], dw[CKPT_N_ARRAYS][17];
        snprintf(e1w, sizeof e1w, "%s", r1->err);
        r4->threads = 2;
        r4->window = 6;
        r4->err[0] = 0;
        EXPECT(ckpt_verify_digest(r4, dw) == c1 && strcmp(r4->err, e1w) == 0);
        for (int a = 0; !damaged && a < CKPT_N_ARRAYS; a++)
            EXPECT(strcmp(dw[a], d1[a]) == 0);
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

/* ckpt_read_each: chunks loaded several at a time hand over the same
 * floats, in flat order, as one at a time; the first bad chunk in flat
 * order is the one named; a failing sink stops the read. */
typedef struct {
    float *out;
    size_t lo, next, calls, stop_after;
} test_sink_state;

static int test_sink(void *arg, size_t off, size_t n, const float *src)
{
    test_sink_state *s = arg;
    if (off != s->next || n == 0)
        return ST_SOFTWARE;
    memcpy(s->out + (off - s->lo), src, n * sizeof(float));
    s->next = off + n;
    return ++s->calls == s->stop_after ? ST_IOERR : ST_OK;
}

static void test_parallel_read(void)
{
    char dir[300], step[340], p[400], err[CKPT_ERR];
    test_path(dir, sizeof dir, "parread");
    ckpt_opts o = test_opts(CKPT_CODEC_PLANES_ZSTD, 4 * 16);
    size_t cuts[] = {97, 301};
    EXPECT(test_save(dir, &o, 1, cuts, 2) == ST_OK);
    test_step_dir(step, sizeof step, dir, 1);
    float *buf = malloc(L.n_floats * sizeof(float));
    static const size_t ranges[][2] = {{0, 0}, {0, 1}, {5, 300}, {96, 302}, {0, 0}};
    /* threads, window: serial; window = threads; a window wider than the
     * threads (a remote reader's shape), so chunks wait their turn. */
    static const int shapes[][2] = {{1, 0}, {5, 0}, {2, 7}};
    for (int sh = 0; sh < 3; sh++) {
        ckpt_reader *r = NULL;
        EXPECT(ckpt_open_quiet(&r, step, err, sizeof err) == ST_OK);
        if (!r)
            break;
        r->threads = shapes[sh][0];
        r->window = shapes[sh][1];
        for (int a = 0; a < CKPT_N_ARRAYS; a++)
            for (size_t k = 0; k < sizeof ranges / sizeof ranges[0]; k++) {
                size_t lo = ranges[k][0], hi = k == 4 ? L.n_floats : ranges[k][1];
                test_sink_state st = {buf, lo, lo, 0, 0};
                memset(buf, 0xff, L.n_floats * sizeof(float));
                EXPECT(ckpt_read_each(r, a, lo, hi, test_sink, &st) == ST_OK);
                EXPECT(st.next == hi && memcmp(buf, arr[a] + lo, (hi - lo) * sizeof(float)) == 0);
                EXPECT(hi - lo < 64 || st.calls > 3);
            }
        test_sink_state st = {buf, 0, 0, 0, 3};
        EXPECT(ckpt_read_each(r, CKPT_ADAM_M, 0, L.n_floats, test_sink, &st) == ST_IOERR && st.calls == 3);
        EXPECT(ckpt_bytes_read(r) > 0);
        ckpt_close(r);
    }
    /* Damage two chunks of adam_v in shard 1: serial and parallel name the first. */
    ckpt_reader *r = NULL;
    size_t bad = 0;
    char e1[CKPT_ERR] = "", e5[CKPT_ERR] = "";
    if (ckpt_open_quiet(&r, step, err, sizeof err) == ST_OK) {
        ckpt_shard *sh = &r->shards[1];
        size_t first = sh->n_chunks, second = sh->n_chunks;
        for (size_t ci = 0; ci < sh->n_chunks; ci++)
            if (sh->chunks[ci].array == CKPT_ADAM_V) {
                if (first == sh->n_chunks)
                    first = ci;
                second = ci;
            }
        snprintf(p, sizeof p, "%s/shard-00001.bin", step);
        EXPECT(first + 2 <= second);
        test_flip_byte(p, (long)sh->chunks[second].off);
        test_flip_byte(p, (long)sh->chunks[first + 1].off + 1);
        bad = first + 1;
    }
    ckpt_close(r);
    for (int k = 0; k < 3; k++) {
        r = NULL;
        EXPECT(ckpt_open_quiet(&r, step, err, sizeof err) == ST_OK);
        if (!r)
            break;
        r->threads = shapes[k][0];
        r->window = shapes[k][1];
        EXPECT(ckpt_read_range_quiet(r, CKPT_ADAM_V, 0, L.n_floats, buf) == ST_DATA);
        if (k == 0)
            snprintf(e1, CKPT_ERR, "%s", r->err);
        else
            EXPECT(strcmp(e1, r->err) == 0);
        snprintf(e5, CKPT_ERR, "%s", r->err);
        EXPECT(ckpt_read_range_quiet(r, CKPT_ADAM_M, 0, L.n_floats, buf) == ST_OK);
        EXPECT(memcmp(buf, arr[CKPT_ADAM_M], L.n_floats * sizeof(float)) == 0);
        ckpt_close(r);
    }
    char want[64];
    snprintf(want, sizeof want, "shard-00001.bin chunk %zu ", bad);
    EXPECT(strstr(e1, want) != NULL && strcmp(e1, e5) == 0);
    free(buf);
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
    EXPECT(ckpt_writer_open(&w, dir, &o, 0, 1, 0, L.n_floats) == ST_OK);
    EXPECT(!test_exists(dir, 6, ".tmp"));
    ckpt_writer *w2 = NULL;
    EXPECT(ckpt_writer_open(&w2, dir, &o, 0, 1, 0, L.n_floats) == ST_IOERR); /* one writer per rank and dir */
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
    EXPECT(ckpt_writer_open(&w, dir, &o, 0, 1, 0, L.n_floats) != ST_OK);
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

/* ---- the manifest seal ---- */

static int test_write_text(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t n = fwrite(text, 1, len, f);
    return fclose(f) == 0 && n == len ? 0 : -1;
}

/* Every single-byte change of a real manifest is refused: 200 random
 * offsets and values, each alone, through open + verify from disk. */
static void test_seal_flips(void)
{
    char dir[300], step[340], p[400], err[CKPT_ERR], latest[400];
    char *text = NULL;
    size_t len = 0, cuts[] = {300};
    test_path(dir, sizeof dir, "seal-flips");
    ckpt_opts o = test_opts(CKPT_CODEC_ZSTD, 4 * 100);
    EXPECT(test_save(dir, &o, 3, cuts, 1) == ST_OK);
    EXPECT(test_save(dir, &o, 4, cuts, 1) == ST_OK);
    test_step_dir(step, sizeof step, dir, 4);
    snprintf(p, sizeof p, "%s/manifest.json", step);
    EXPECT(util_read_file(p, &text, &len) == ST_OK);
    if (!text)
        return;
    int missed = 0;
    for (int i = 0; i < 200; i++) {
        size_t off = (size_t)(test_uniform() * (double)len);
        char was = text[off], now = (char)(1 + (int)(test_uniform() * 255.0));
        if (now == was)
            now = (char)(was ^ 0x20);
        text[off] = now;
        EXPECT(test_write_text(p, text, len) == 0);
        int rc = test_check(step, err, sizeof err);
        if (rc != ST_DATA || !strstr(err, "step-00000004")) {
            missed++;
            fprintf(stderr, "    byte %zu: 0x%02x -> 0x%02x not detected (rc %d: %s)\n", off, (unsigned char)was,
                    (unsigned char)now, rc, err);
        }
        text[off] = was;
    }
    EXPECT(missed == 0);
    /* The last bytes of the file (the seal itself) one by one, too. */
    for (size_t off = len - 40; off < len; off++) {
        char was = text[off];
        text[off] = (char)(was == '0' ? '1' : '0');
        EXPECT(test_write_text(p, text, len) == 0);
        EXPECT(test_check(step, err, sizeof err) == ST_DATA);
        text[off] = was;
    }
    EXPECT(test_write_text(p, text, len) == 0);
    EXPECT(test_check(step, err, sizeof err) == ST_OK);
    EXPECT(test_write_text(p, text, len - 1) == 0);      /* the final newline gone */
    EXPECT(test_check(step, err, sizeof err) == ST_DATA);
    EXPECT(ckpt_find_latest(dir, latest, sizeof latest) == ST_OK && strstr(latest, "step-00000003"));
    free(text);
}

/* Edits a user might make by hand: each is refused with the checksum named;
 * with the checksum recomputed, a step that disagrees with the directory
 * name still is. */
/* Backend, precision, device, libraries and the scaler round-trip; a
 * manifest without them (every earlier checkpoint) reads as not recorded;
 * a bad loss_scaling behind a valid seal is refused. */
static void test_who_fields(void)
{
    char dir[300], step[340], p[400], err[CKPT_ERR];
    ckpt_opts o = test_opts(CKPT_CODEC_NONE, 4 * 100);
    ckpt_meta who = {.backend = "cuda", .precision = "fp16", .device = "NVIDIA H200",
                     .libraries = "cuda runtime 12.8 (static), driver 12.8, cublasLt 120804, nccl none",
                     .loss_scale = 0x1p20, .loss_scaling = CKPT_SCALING_DYNAMIC, .loss_scale_clean = 1234};
    size_t cuts[1];
    test_path(dir, sizeof dir, "who");
    cuts[0] = L.n_floats / 2;
    test_who = &who;
    EXPECT(test_save(dir, &o, 3, cuts, 1) == ST_OK);
    test_who = NULL;
    test_step_dir(step, sizeof step, dir, 3);
    ckpt_reader *r = NULL;
    EXPECT(ckpt_open(&r, step) == ST_OK);
    if (r) {
        const ckpt_info *in = ckpt_get_info(r);
        EXPECT(!strcmp(in->backend, "cuda") && !strcmp(in->precision, "fp16") && !strcmp(in->device, "NVIDIA H200"));
        EXPECT(!strcmp(in->libraries, who.libraries));
        EXPECT(in->loss_scale == 0x1p20 && in->loss_scaling == CKPT_SCALING_DYNAMIC && in->loss_scale_clean == 1234);
        ckpt_close(r);
        r = NULL;
    }
    EXPECT(test_save(dir, &o, 4, NULL, 0) == ST_OK);
    test_step_dir(step, sizeof step, dir, 4);
    EXPECT(ckpt_open(&r, step) == ST_OK);
    if (r) {
        const ckpt_info *in = ckpt_get_info(r);
        EXPECT(!in->backend[0] && !in->precision[0] && !in->device[0] && !in->libraries[0]);
        EXPECT(in->loss_scaling == CKPT_SCALING_OFF && in->loss_scale == 1);
        ckpt_close(r);
    }
    char *text = NULL;
    size_t len = 0;
    test_step_dir(step, sizeof step, dir, 3);
    snprintf(p, sizeof p, "%s/manifest.json", step);
    EXPECT(util_read_file(p, &text, &len) == ST_OK);
    if (!text)
        return;
    EXPECT(test_parse_edit_ex(text, "\"dynamic\"", "\"sometimes\"", 1, err, sizeof err) == ST_DATA &&
           strstr(err, "loss_scaling"));
    EXPECT(test_parse_edit_ex(text, "\"loss_scale_clean\":1234", "\"loss_scale_clean\":-1", 1, err, sizeof err) ==
           ST_DATA);
    EXPECT(test_parse_edit_ex(text, "\"device\":\"NVIDIA H200\"", "\"device\":7", 1, err, sizeof err) == ST_DATA &&
           strstr(err, "device"));
    EXPECT(test_parse_edit_ex(text, "\"device\":\"NVIDIA H200\"", "\"device\":\"a\\nb\"", 1, err, sizeof err) ==
           ST_DATA);
    /* Resealed and still well-formed: parses. */
    EXPECT(test_parse_edit_ex(text, "\"device\":\"NVIDIA H200\"", "\"device\":\"NVIDIA H100\"", 1, err, sizeof err) ==
           ST_OK);
    free(text);
}

static void test_seal_edits(void)
{
    char dir[300], step[340], p[400], err[CKPT_ERR];
    char *text = NULL;
    size_t len = 0;
    test_path(dir, sizeof dir, "seal-edits");
    ckpt_opts o = test_opts(CKPT_CODEC_NONE, 4 * 100);
    EXPECT(test_save(dir, &o, 6, NULL, 0) == ST_OK);
    test_step_dir(step, sizeof step, dir, 6);
    snprintf(p, sizeof p, "%s/manifest.json", step);
    EXPECT(util_read_file(p, &text, &len) == ST_OK);
    if (!text)
        return;
    struct { const char *from, *to; } edits[] = {
        {"\"step\":6", "\"step\":7"}, {"\"tokens\":384", "\"tokens\":385"}, {"\"lr\":", "\"lr\":1"},
        {"lr = 3e-4", "lr = 3e-3"}, {"\"elapsed_seconds\":9", "\"elapsed_seconds\":8"}};
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        int rc = test_parse_edit_ex(text, edits[i].from, edits[i].to, 0, err, sizeof err);
        EXPECT(rc == ST_DATA && strstr(err, "checksum mismatch"));
        if (rc != ST_DATA || !strstr(err, "checksum mismatch"))
            fprintf(stderr, "    edit %s: rc %d: %s\n", edits[i].to, rc, err);
    }
    /* Resealed: the seal passes, the directory name does not. */
    ckpt_reader r = {0};
    char *body = test_unseal(text), *at = strstr(body, "\"step\":6");
    EXPECT(at != NULL);
    if (at) {
        at[7] = '7';
        char *sealed = ckpt_manifest_seal(body, strlen(body));
        snprintf(r.dir, sizeof r.dir, "%s", step);
        EXPECT(sealed && ckpt_manifest_parse(&r, sealed, strlen(sealed)) == ST_DATA);
        EXPECT(strstr(r.err, "directory name") != NULL);
        ckpt_reader_reset(&r);
        snprintf(r.dir, sizeof r.dir, "%s/step-00000007.tmp", dir);   /* the name of its own step: fine */
        EXPECT(sealed && ckpt_manifest_parse(&r, sealed, strlen(sealed)) == ST_OK);
        ckpt_reader_reset(&r);
        free(sealed);
    }
    free(body);
    /* A checkpoint copied under another step's name is refused. */
    char copy[400], cmd[900];
    snprintf(copy, sizeof copy, "%s/step-00000009", dir);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", step, copy);
    EXPECT(system(cmd) == 0);
    EXPECT(test_check(copy, err, sizeof err) == ST_DATA && strstr(err, "directory name"));
    free(text);
}

/* A format 1 manifest (no seal) still opens, marked unsealed, so a run that
 * upgrades spotrain mid-way resumes; a seal on format 1, or format 2 without
 * one, is refused. */
static void test_seal_format1(void)
{
    char dir[300], step[340], p[400], err[CKPT_ERR], latest[400];
    char *text = NULL;
    size_t len = 0;
    test_path(dir, sizeof dir, "format1");
    ckpt_opts o = test_opts(CKPT_CODEC_SHUFFLE_ZSTD, 4 * 100);
    EXPECT(test_save(dir, &o, 2, NULL, 0) == ST_OK);
    test_step_dir(step, sizeof step, dir, 2);
    snprintf(p, sizeof p, "%s/manifest.json", step);
    EXPECT(util_read_file(p, &text, &len) == ST_OK);
    if (!text)
        return;
    char *body = test_unseal(text), *v = strstr(body, "\"format_version\":2");
    EXPECT(v != NULL);
    if (v) {
        v[17] = '1';
        size_t n = strlen(body);
        body[n] = '\n';                                 /* the format 1 writer ended with a newline */
        EXPECT(test_write_text(p, body, n + 1) == 0);
        body[n] = 0;
        ckpt_reader *r = NULL;
        EXPECT(ckpt_open_quiet(&r, step, err, sizeof err) == ST_OK);
        EXPECT(r && r->info.unsealed && r->info.format_version == 1 && r->info.step == 2);
        EXPECT(r && ckpt_verify_quiet(r) == ST_OK);
        ckpt_close(r);
        EXPECT(ckpt_find_latest(dir, latest, sizeof latest) == ST_OK && strcmp(latest, step) == 0);
        char *sealed = ckpt_manifest_seal(body, n);      /* sealed but saying 1 */
        EXPECT(sealed && test_write_text(p, sealed, strlen(sealed)) == 0);
        EXPECT(test_check(step, err, sizeof err) == ST_DATA && strstr(err, "format_version"));
        free(sealed);
        v[17] = '2';                                    /* 2 without the seal */
        EXPECT(test_write_text(p, body, strlen(body)) == 0);
        EXPECT(test_check(step, err, sizeof err) == ST_DATA && strstr(err, "no checksum"));
    }
    free(body);
    free(text);
}

/* ---- fault injection through ckpt_os ---- */

static atomic_int fault_pwrite_at, fault_fsync_at, fault_rename_at;
static atomic_int fault_fsync_calls;

/* Counts down; the call that reaches zero fails. */
static int test_fault_now(atomic_int *at)
{
    return atomic_load(at) > 0 && atomic_fetch_sub(at, 1) == 1;
}

static ssize_t test_fake_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (test_fault_now(&fault_pwrite_at)) {
        /* Half the bytes land first, as when a disk fills mid-write. */
        if (n > 1)
            ckpt_sys_real.pwrite(fd, buf, n / 2, off);
        errno = ENOSPC;
        return -1;
    }
    return ckpt_sys_real.pwrite(fd, buf, n, off);
}

static int test_fake_fsync(int fd)
{
    atomic_fetch_add(&fault_fsync_calls, 1);
    if (test_fault_now(&fault_fsync_at)) {
        errno = EIO;
        return -1;
    }
    return ckpt_sys_real.fsync(fd);
}

static int test_fake_rename(const char *from, const char *to)
{
    if (test_fault_now(&fault_rename_at)) {
        errno = EIO;
        return -1;
    }
    return ckpt_sys_real.rename(from, to);
}

static ckpt_sys test_faulty;

/* stderr into a file while a fault runs, so its message can be checked. */
static int test_stderr_to(FILE *f)
{
    fflush(stderr);
    int saved = dup(2);
    dup2(fileno(f), 2);
    return saved;
}

static void test_stderr_back(int saved, FILE *f, char *out, size_t cap)
{
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    fclose(f);
}

static int test_count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static int test_any_tmp(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int any = 0;
    while (d && (e = readdir(d)))
        any |= strstr(e->d_name, ".tmp") != NULL;
    if (d)
        closedir(d);
    return any;
}

/* One save of step under a fault: ST_IOERR, one line naming what failed,
 * step not committed, and the previous one is what resume would take. */
static void test_fault_save(const char *dir, int64_t good, int64_t step, const size_t *cuts, int n_cuts,
                            const char *want, int *failed)
{
    char msg[4096], latest[400], prev[340], err[CKPT_ERR];
    ckpt_opts o = test_opts(CKPT_CODEC_ZSTD, 4 * 64);
    FILE *f = tmpfile();
    int saved = test_stderr_to(f);
    ckpt_sys_replace(&test_faulty);
    int rc = test_save(dir, &o, step, cuts, n_cuts);
    ckpt_sys_replace(NULL);
    test_stderr_back(saved, f, msg, sizeof msg);
    *failed = rc != ST_OK;
    if (rc == ST_OK)
        return;
    EXPECT(rc == ST_IOERR);
    EXPECT(test_count_lines(msg) == 1 && strstr(msg, "abandoned") && strstr(msg, want));
    if (rc != ST_IOERR || test_count_lines(msg) != 1 || !strstr(msg, want))
        fprintf(stderr, "    rc %d, wanted one line with '%s': %s", rc, want, msg);
    EXPECT(!test_exists(dir, step, ""));
    test_step_dir(prev, sizeof prev, dir, good);
    EXPECT(test_check(prev, err, sizeof err) == ST_OK);
    EXPECT(ckpt_find_latest(dir, latest, sizeof latest) == ST_OK && strcmp(latest, prev) == 0);
}

static void test_faults(void)
{
    char dir[300];
    size_t cuts[] = {400};
    int failed = 0, points = 0;
    test_faulty = ckpt_sys_real;
    test_faulty.pwrite = test_fake_pwrite;
    test_faulty.fsync = test_fake_fsync;
    test_faulty.rename = test_fake_rename;
    test_path(dir, sizeof dir, "faults");
    ckpt_opts o = test_opts(CKPT_CODEC_ZSTD, 4 * 64);
    EXPECT(test_save(dir, &o, 1, cuts, 1) == ST_OK);
    /* ENOSPC on a shard write, after half its bytes landed. */
    atomic_store(&fault_pwrite_at, 1);
    test_fault_save(dir, 1, 2, NULL, 0, "No space left on device", &failed);
    EXPECT(failed && !test_exists(dir, 2, ".tmp"));
    atomic_store(&fault_pwrite_at, 0);
    /* A failing rename: the commit is torn between two names. */
    atomic_store(&fault_rename_at, 1);
    test_fault_save(dir, 1, 2, cuts, 1, "cannot rename", &failed);
    EXPECT(failed && !test_exists(dir, 2, ".tmp"));
    atomic_store(&fault_rename_at, 0);
    /* EIO from each fsync of a two-rank save in turn (shards, indexes,
     * directories, manifest), until a save makes it through. */
    for (int k = 1; k <= 40; k++) {
        atomic_store(&fault_fsync_at, k);
        test_fault_save(dir, 1, 2, cuts, 1, "Input/output error", &failed);
        atomic_store(&fault_fsync_at, 0);
        if (!failed)
            break;
        points++;
    }
    EXPECT(points >= 7 && !failed);
    EXPECT(test_exists(dir, 2, ""));
    /* Whatever a failure left behind goes with the next commit. */
    EXPECT(test_save(dir, &o, 3, cuts, 1) == ST_OK);
    EXPECT(!test_any_tmp(dir));
}

/* fill only starts a copy; fence finishes it on the writer thread before
 * anything is read; with busy = skip a second submit is skipped, not an error. */
typedef struct {
    ckpt_writer *w;
    size_t lo, hi;
    pthread_t submitter;
    atomic_int fenced_elsewhere;
} test_device;

static int test_dev_fill(void *arg, float *dst, size_t lo, size_t hi)
{
    (void)arg, (void)lo, (void)hi;
    memset(dst, 0xff, (hi - lo) * 3 * sizeof *dst);   /* what the host sees before the copy lands */
    return ST_OK;
}

static int test_dev_fence(void *arg)
{
    test_device *d = arg;
    size_t bytes = 0, n = d->hi - d->lo;
    float *buf = ckpt_writer_buffer(d->w, &bytes);
    usleep(100 * 1000);
    for (int a = 0; a < CKPT_N_ARRAYS; a++)
        memcpy(buf + (size_t)a * n, arr[a] + d->lo, n * sizeof *buf);
    atomic_store(&d->fenced_elsewhere, !pthread_equal(pthread_self(), d->submitter));
    return bytes == n * 3 * sizeof *buf ? ST_OK : ST_SOFTWARE;
}

static void test_source_fence(void)
{
    char dir[300], step[340];
    test_device d = {.lo = 0, .hi = L.n_floats, .submitter = pthread_self()};
    ckpt_opts o = test_opts(CKPT_CODEC_PLANES_ZSTD, 4 * 128);
    o.busy_wait = 0;
    test_path(dir, sizeof dir, "fence");
    EXPECT(ckpt_writer_open(&d.w, dir, &o, 0, 1, d.lo, d.hi) == ST_OK);
    if (!d.w)
        return;
    ckpt_meta m = {.step = 5, .loss_scale = 1, .world_size = 1, .config_text = "", .table = &tab, .lo = d.lo,
                   .hi = d.hi, .src = {test_dev_fill, test_dev_fence, &d}};
    int skipped = 1, err = 0;
    EXPECT(ckpt_writer_submit(d.w, &m, &skipped) == ST_OK && skipped == 0);
    m.step = 6;
    EXPECT(ckpt_writer_submit(d.w, &m, &skipped) == ST_OK && skipped == 1);
    m.lo = 1;                                            /* not the range it was opened for */
    EXPECT(ckpt_writer_submit(d.w, &m, &skipped) == ST_SOFTWARE);
    EXPECT(ckpt_writer_drain(d.w, 60) == ST_OK && ckpt_writer_written(d.w, &err) == 5 && err == 0);
    EXPECT(ckpt_writer_commit(d.w, 5) == ST_OK && ckpt_writer_drain(d.w, 60) == ST_OK);
    EXPECT(atomic_load(&d.fenced_elsewhere) == 1);
    ckpt_writer_close(d.w);
    test_step_dir(step, sizeof step, dir, 5);
    EXPECT(test_matches(step, 1));
}

static atomic_int pool_count;
static void test_pool_job(void *arg)
{
    atomic_fetch_add(&pool_count, *(int *)arg);
}

/* The same workers run job after job: wait is a barrier each time. */
static void test_pool(void)
{
    ckpt_pool *p = ckpt_pool_create(3);
    int one = 1;
    EXPECT(p != NULL && ckpt_pool_size(p) == 3);
    for (int round = 1; p && round <= 3; round++) {
        for (int i = 0; i < 1000; i++)
            EXPECT(ckpt_pool_add(p, test_pool_job, &one) == 0);
        ckpt_pool_wait(p);
        EXPECT(atomic_load(&pool_count) == 1000 * round);
    }
    ckpt_pool_free(p);
}

/* The train side's table passes the checkpoint's checks and compares equal
 * to its own layout only. */
static void test_table(void)
{
    char why[256];
    EXPECT(ckpt_table_check(tab.tensors, tab.n, tab.n_floats, why, sizeof why) == 0);
    EXPECT(model_ckpt_table_same(&L, tab.tensors, tab.n));
    EXPECT(!model_ckpt_table_same(&L, tab.tensors, tab.n - 1));
    ckpt_tensor *t = malloc((size_t)tab.n * sizeof *t);
    memcpy(t, tab.tensors, (size_t)tab.n * sizeof *t);
    t[1].name[0] = 'X';
    EXPECT(!model_ckpt_table_same(&L, t, tab.n));
    EXPECT(ckpt_table_check(t, tab.n, tab.n_floats, why, sizeof why) == 0);
    memcpy(t[1].name, t[2].name, sizeof t[1].name);
    EXPECT(ckpt_table_check(t, tab.n, tab.n_floats, why, sizeof why) != 0 && strstr(why, "twice"));
    EXPECT(ckpt_table_check(tab.tensors, tab.n, tab.n_floats + 1, why, sizeof why) != 0);
    free(t);
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
    harness_run("read_each: parallel chunk loads = serial, in flat order", test_parallel_read);
    harness_run("large streamed saves", test_large_stream);
    harness_run("leftover .tmp ignored and cleaned", test_leftover_tmp);
    harness_run("on_save hook", test_on_save);
    harness_run("disk full abandons cleanly", test_disk_full);
    harness_run("unwritable directory", test_unwritable);
    harness_run("tensor table: train side vs checks", test_table);
    harness_run("worker pool reused across rounds", test_pool);
    harness_run("source: fill starts, fence finishes; busy skip", test_source_fence);
    harness_run("manifest: 200 random byte flips all detected", test_seal_flips);
    harness_run("manifest: edits of step/tokens/lr/config refused", test_seal_edits);
    harness_run("manifest: format 1 opens unsealed", test_seal_format1);
    harness_run("manifest: backend, precision, device, scaler; absent = not recorded", test_who_fields);
    harness_run("faults: ENOSPC, EIO on every fsync, failing rename", test_faults);
    model_layout_free(&L);
    model_ckpt_table_free(&tab);
    for (int a = 0; a < CKPT_N_ARRAYS; a++)
        free(arr[a]);
    ckpt_rm_rf(root);
    return harness_end();
}
