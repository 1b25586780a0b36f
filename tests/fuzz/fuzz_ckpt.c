/* libFuzzer target for the checkpoint reader: manifest text parsed from
 * memory, a valid checkpoint with fuzzed edits and truncations opened and
 * verified from disk (any change to the sealed manifest must be refused:
 * the fuzzer aborts if one opens), and every chunk codec's decoder on raw
 * bytes.
 * fuzz-sources: ckpt/*.c s3/*.c util/util.c model/model.c model/rng.c
 * fuzz-max-len: 4096
 * module: ckpt */
#include "ckpt/ckpt_int.h"
#include "model/model.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fz_dir[256], fz_step[300];
static char *fz_manifest, *fz_shard;
static size_t fz_manifest_len, fz_shard_len;

static int fz_slurp(const char *path, char **out, size_t *len)
{
    int q = util_quiet;
    util_quiet = 1;
    int rc = util_read_file(path, out, len);
    util_quiet = q;
    return rc;
}

static void fz_cleanup(void) { ckpt_rm_rf(fz_dir); }

/* Builds one small valid two-rank checkpoint to mutate. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    model_layout L;
    ckpt_table tab;
    model_shape s = {.dim = 8, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1, .head_dim = 4, .ffn_dim = 16,
                     .vocab = 11, .seq_len = 8, .rope_theta = 10000, .norm_eps = 1e-6};
    ckpt_opts o = {.codec = CKPT_CODEC_PLANES_ZSTD, .level = 1, .chunk_bytes = 4 * 200, .threads = 1, .keep_last = 0,
                   .busy_wait = 1};
    ckpt_writer *w[2] = {0};
    char path[400];
    (void)argc, (void)argv;
    util_quiet = 1;
    snprintf(fz_dir, sizeof fz_dir, "/tmp/spotrain-fuzz-ckpt.%d", (int)getpid());
    atexit(fz_cleanup);
    if (model_layout_init(&L, &s) != ST_OK || model_to_ckpt_table(&L, &tab) != ST_OK)
        abort();
    float *a = malloc(L.n_floats * sizeof(float));
    for (size_t i = 0; i < L.n_floats; i++)
        a[i] = (float)((double)(i % 37) * 0.001 - 0.01);
    for (int r = 0; r < 2; r++) {
        size_t lo = r ? 300 : 0, hi = r ? L.n_floats : 300;
        ckpt_host_arrays host = {{a + lo, a + lo, a + lo}, lo};
        ckpt_meta m = {.step = 1, .world_size = 2, .rank = r, .config_text = "x", .table = &tab, .lo = lo, .hi = hi,
                       .src = {ckpt_host_fill, NULL, &host}, .loss_scale = 1024,
                       .loss_scaling = CKPT_SCALING_DYNAMIC, .loss_scale_clean = 7, .backend = "cpu",
                       .precision = "fp32", .device = "d", .libraries = "l"};
        int skipped = 0;
        if (ckpt_writer_open(&w[r], fz_dir, &o, r, 2, lo, hi) != ST_OK ||
            ckpt_writer_submit(w[r], &m, &skipped) != ST_OK || skipped || ckpt_writer_drain(w[r], 30) != ST_OK)
            abort();
    }
    if (ckpt_writer_commit(w[0], 1) != ST_OK || ckpt_writer_drain(w[0], 30) != ST_OK)
        abort();
    ckpt_writer_close(w[0]);
    ckpt_writer_close(w[1]);
    free(a);
    model_ckpt_table_free(&tab);
    model_layout_free(&L);
    snprintf(fz_step, sizeof fz_step, "%s/step-00000001", fz_dir);
    snprintf(path, sizeof path, "%s/manifest.json", fz_step);
    if (fz_slurp(path, &fz_manifest, &fz_manifest_len) != ST_OK)
        abort();
    snprintf(path, sizeof path, "%s/shard-00001.bin", fz_step);
    if (fz_slurp(path, &fz_shard, &fz_shard_len) != ST_OK)
        abort();
    return 0;
}

static void fz_write(const char *name, const char *buf, size_t len)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s", fz_step, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    fwrite(buf, 1, len, f);
    fclose(f);
}

/* Records of 4 bytes: flags (bit 0: shard instead of manifest, bit 1:
 * truncate there instead of setting a byte), offset (16 bits), value. */
static void fz_edited(const uint8_t *d, size_t n)
{
    char *m = malloc(fz_manifest_len + 1), *s = malloc(fz_shard_len + 1);
    size_t ml = fz_manifest_len, sl = fz_shard_len;
    memcpy(m, fz_manifest, ml);
    memcpy(s, fz_shard, sl);
    for (size_t i = 0; i + 4 <= n; i += 4) {
        int shard = d[i] & 1, trunc = d[i] & 2;
        size_t *len = shard ? &sl : &ml;
        char *buf = shard ? s : m;
        if (*len == 0)
            continue;
        size_t off = ((size_t)d[i + 1] | (size_t)d[i + 2] << 8) % *len;
        if (trunc)
            *len = off;
        else
            buf[off] = (char)d[i + 3];
    }
    fz_write("manifest.json", m, ml);
    fz_write("shard-00001.bin", s, sl);
    ckpt_reader *r = NULL;
    char err[CKPT_ERR], dig[CKPT_N_ARRAYS][17];
    int changed = ml != fz_manifest_len || memcmp(m, fz_manifest, ml) != 0;
    if (ckpt_open_quiet(&r, fz_step, err, sizeof err) == ST_OK) {
        if (changed)
            abort();   /* an edited manifest got past its seal */
        float *out = malloc(r->info.n_floats * sizeof(float) + 4);
        ckpt_verify_digest(r, dig);
        ckpt_read_range_quiet(r, CKPT_ADAM_V, 250, (size_t)r->info.n_floats, out);
        free(out);
        ckpt_close(r);
    }
    free(m);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0: {
        ckpt_reader r = {0};
        snprintf(r.dir, sizeof r.dir, "fuzz");
        ckpt_manifest_parse(&r, (const char *)data + 1, size - 1);
        ckpt_reader_reset(&r);
        break;
    }
    case 1:
        fz_edited(data + 1, size - 1);
        break;
    default: {
        if (size < 4)
            return 0;
        size_t raw_len = ((size_t)data[2] | (size_t)data[3] << 8) * 4;
        ckpt_codec_ws ws = {0};
        char err[256];
        void *raw = malloc(raw_len + 4);
        ckpt_codec_decode(&ws, data[1] % (CKPT_N_CODECS + 1), data + 4, size - 4, raw, raw_len, err, sizeof err);
        free(raw);
        ckpt_codec_ws_free(&ws);
        break;
    }
    }
    return 0;
}
