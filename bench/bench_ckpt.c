/* Checkpoint benchmark: the submit stall (the first save's and later ones')
 * against a plain memcpy of the same bytes, background write throughput per
 * codec, and the compression ratio of each array (params, adam_m, adam_v)
 * per codec on a given checkpoint's state (a trained one from bench/ckpt.sh)
 * or on synthetic values. */
#include "ckpt/ckpt_int.h"
#include "model/model.h"
#include "util/util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static model_layout bc_L;
static ckpt_table bc_tab;
static float *bc_arr[CKPT_N_ARRAYS];

static int bc_load(const char *step_dir)
{
    ckpt_reader *r = NULL;
    int rc = ckpt_open(&r, step_dir);
    if (rc != ST_OK)
        return rc;
    if ((rc = model_layout_init(&bc_L, &ckpt_get_info(r)->model)) == ST_OK)
        for (int a = 0; a < CKPT_N_ARRAYS && rc == ST_OK; a++) {
            bc_arr[a] = malloc(bc_L.n_floats * sizeof(float));
            rc = bc_arr[a] ? ckpt_read_range(r, a, 0, bc_L.n_floats, bc_arr[a]) : ST_SOFTWARE;
        }
    ckpt_close(r);
    return rc;
}

/* Synthetic stand-in: weights N(0, 0.02), m N(0, 1e-3), v = (1e-3 g)^2. */
static int bc_synth(int64_t dim, int64_t layers)
{
    model_shape s = {.dim = dim, .n_layers = layers, .n_heads = dim / 64, .n_kv_heads = dim / 64, .head_dim = 64,
                     .ffn_dim = dim * 8 / 3 / 64 * 64, .vocab = 32000, .seq_len = 1024, .rope_theta = 1e4, .norm_eps = 1e-6};
    uint64_t x = 0x9e3779b97f4a7c15ull;
    if (model_layout_init(&bc_L, &s) != ST_OK)
        return ST_SOFTWARE;
    for (int a = 0; a < CKPT_N_ARRAYS; a++) {
        bc_arr[a] = malloc(bc_L.n_floats * sizeof(float));
        for (size_t i = 0; i < bc_L.n_floats; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            double u1 = ((double)(x >> 11) + 0.5) / 9007199254740992.0;
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            double u2 = ((double)(x >> 11) + 0.5) / 9007199254740992.0;
            double g = sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
            bc_arr[a][i] = (float)(a == 0 ? 0.02 * g : a == 1 ? 1e-3 * g : 1e-6 * g * g);
        }
    }
    return ST_OK;
}

static void bc_ratios(void)
{
    size_t chunk = 4 << 20, bound = ckpt_codec_bound(CKPT_CODEC_ZSTD, chunk) + 64;
    uint8_t *out = malloc(bound);
    ckpt_codec_ws ws = {0};
    printf("compression ratio (raw/stored, level 3, 4 MiB chunks) over %zu floats per array:\n", bc_L.n_floats);
    printf("  %-14s %8s %8s %8s %8s %9s\n", "codec", "params", "adam_m", "adam_v", "all", "MB/s/core");
    for (int c = CKPT_CODEC_ZSTD; c < CKPT_N_CODECS; c++) {
        uint64_t raw_all = 0, st_all = 0;
        double t0 = util_now();
        printf("  %-14s", ckpt_codec_name(c));
        for (int a = 0; a < CKPT_N_ARRAYS; a++) {
            uint64_t raw = 0, st = 0;
            for (size_t lo = 0; lo < bc_L.n_floats; lo += chunk / 4) {
                size_t n = bc_L.n_floats - lo < chunk / 4 ? bc_L.n_floats - lo : chunk / 4, got = 0;
                int used;
                if (ckpt_codec_encode(&ws, c, 3, bc_arr[a] + lo, n * 4, out, bound, &got, &used) != 0)
                    got = n * 4;
                raw += n * 4;
                st += got;
            }
            printf(" %7.3fx", (double)raw / (double)st);
            raw_all += raw;
            st_all += st;
        }
        double dt = util_now() - t0;
        printf(" %7.3fx %9.0f\n", (double)raw_all / (double)st_all, (double)raw_all / dt / 1e6);
    }
    ckpt_codec_ws_free(&ws);
    free(out);
}

/* The disk's own speed for these bytes, measured like `dd bs=1M
 * conv=fdatasync` but from the same memory and into the same directory, right
 * before each save so both see the same moment of a shared, noisy disk. */
static double bc_raw_write(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/raw.bin", dir);
    double t0 = util_now();
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644), ok = fd >= 0;
    for (int a = 0; a < CKPT_N_ARRAYS && ok; a++)
        for (size_t off = 0; off < bc_L.n_floats * 4 && ok; off += 1 << 20) {
            size_t n = bc_L.n_floats * 4 - off < (1 << 20) ? bc_L.n_floats * 4 - off : (1 << 20);
            ok = write(fd, (const char *)bc_arr[a] + off, n) == (ssize_t)n;
        }
    ok = ok && fdatasync(fd) == 0;
    double dt = util_now() - t0;
    if (fd >= 0)
        close(fd);
    unlink(path);
    return ok ? dt : -1;
}

typedef struct {
    double first_stall_ms, stall_ms, write_s, raw_s;   /* stall_ms, write_s, raw_s: means over later saves */
} bc_series;

static int bc_save_series(const char *dir, int codec, int threads, int saves, bc_series *out)
{
    ckpt_opts o = {.codec = codec, .level = 3, .chunk_bytes = 4 << 20, .threads = threads, .keep_last = 1, .busy_wait = 1};
    ckpt_writer *w = NULL;
    ckpt_host_arrays host = {{bc_arr[0], bc_arr[1], bc_arr[2]}, 0};
    ckpt_rm_rf(dir);
    int rc = ckpt_writer_open(&w, dir, &o, 0, 1, 0, bc_L.n_floats);
    *out = (bc_series){0};
    for (int s = 1; s <= saves && rc == ST_OK; s++) {
        ckpt_meta m = {.step = s, .world_size = 1, .table = &bc_tab, .lo = 0, .hi = bc_L.n_floats, .loss_scale = 1,
                       .config_text = "", .src = {ckpt_host_fill, NULL, &host}};
        int skipped = 0;
        double raw = bc_raw_write(dir);
        if (raw < 0)
            rc = ST_IOERR;
        double t0 = util_now();
        if (rc == ST_OK)
            rc = ckpt_writer_submit(w, &m, &skipped);
        double t1 = util_now();
        if (rc == ST_OK)
            rc = ckpt_writer_drain(w, 600);
        double t2 = util_now();
        int err = 0;
        if (rc == ST_OK && (ckpt_writer_written(w, &err) != s || err))
            rc = ST_IOERR;
        if (rc == ST_OK && (rc = ckpt_writer_commit(w, s)) == ST_OK)
            rc = ckpt_writer_drain(w, 600);
        if (s == 1) {
            out->first_stall_ms = (t1 - t0) * 1e3;
            continue;
        }
        out->stall_ms += (t1 - t0) * 1e3 / (saves - 1);
        out->write_s += (t2 - t1) / (saves - 1);
        out->raw_s += raw / (saves - 1);
    }
    ckpt_writer_close(w);
    return rc;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/tmp/spotrain-bench-ckpt";
    const char *state = argc > 2 ? argv[2] : NULL;
    int rc = state ? bc_load(state) : bc_synth(512, 4);
    if (rc == ST_OK)
        rc = model_to_ckpt_table(&bc_L, &bc_tab);
    if (rc != ST_OK)
        return rc;
    size_t bytes = bc_L.n_floats * 4 * CKPT_N_ARRAYS;
    printf("state: %s, %zu parameters, %.1f MiB (params + adam m + v)\n",
           state ? state : "synthetic (N(0,0.02) weights, N(0,1e-3) m, (1e-3 N)^2 v)", bc_L.n_floats,
           (double)bytes / 1048576.0);
    if (!getenv("BENCH_CKPT_RATIOS") || atoi(getenv("BENCH_CKPT_RATIOS")))
        bc_ratios();
    /* memcpy of the same bytes into a warm buffer: the floor for the stall. */
    float *dst = malloc(bytes);
    double best = 1e9;
    for (int it = 0; it < 4; it++) {
        double t0 = util_now();
        for (int a = 0; a < CKPT_N_ARRAYS; a++)
            memcpy(dst + (size_t)a * bc_L.n_floats, bc_arr[a], bc_L.n_floats * 4);
        double dt = util_now() - t0;
        if (it > 0 && dt < best)
            best = dt;
    }
    printf("memcpy of the state: %.2f ms (%.2f GB/s)\n", best * 1e3, (double)bytes / best / 1e9);
    free(dst);
    int codecs[] = {CKPT_CODEC_NONE, CKPT_CODEC_SHUFFLE_ZSTD, CKPT_CODEC_PLANES_ZSTD};
    int saves = getenv("BENCH_CKPT_SAVES") ? atoi(getenv("BENCH_CKPT_SAVES")) : 4;
    saves = saves < 2 ? 2 : saves;
    const char *only = getenv("BENCH_CKPT_CODECS");   /* e.g. "none": just these save series */
    for (size_t i = 0; i < sizeof codecs / sizeof codecs[0]; i++) {
        bc_series r;
        if (only && !strstr(only, ckpt_codec_name(codecs[i])))
            continue;
        int threads = 2;
        if ((rc = bc_save_series(dir, codecs[i], threads, saves, &r)) != ST_OK)
            return rc;
        printf("%-13s threads %d: first save stall %.2f ms = %.2fx memcpy (target <= 1.5x); later saves %.2f ms = "
               "%.2fx; background write %.2f s = %.0f MB/s of raw state = %.0f%% of a raw 1 MiB write+fdatasync "
               "of the same bytes (%.0f MB/s), mean of %d saves\n",
               ckpt_codec_name(codecs[i]), threads, r.first_stall_ms, r.first_stall_ms / (best * 1e3), r.stall_ms,
               r.stall_ms / (best * 1e3), r.write_s, (double)bytes / r.write_s / 1e6, 100 * r.raw_s / r.write_s,
               (double)bytes / r.raw_s / 1e6, saves - 1);
    }
    for (int a = 0; a < CKPT_N_ARRAYS; a++)
        free(bc_arr[a]);
    model_ckpt_table_free(&bc_tab);
    model_layout_free(&bc_L);
    ckpt_rm_rf(dir);
    return 0;
}
