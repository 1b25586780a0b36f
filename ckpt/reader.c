/* The paranoid checkpoint reader: opens a step directory through its
 * manifest, reads any flat range of an array across shards, verifies every
 * chunk's checksums, and digests arrays in flat order. */
#include "ckpt_int.h"
#include "../util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int ckpt_rfail(ckpt_reader *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int ckpt_rfail(ckpt_reader *r, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(r->err, sizeof r->err, "checkpoint %.400s: %s", r->dir, msg);
    return code;
}

static int ckpt_read_manifest(ckpt_reader *r, char **text, size_t *len)
{
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/manifest.json", r->dir);
    if (stat(r->dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return ckpt_rfail(r, ST_NOINPUT, "no such checkpoint directory");
    int fd = ckpt_os->open(path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return ckpt_rfail(r, errno == ENOENT ? ST_DATA : ST_IOERR,
                          "manifest.json: %s (not committed, or damaged); use an older checkpoint", strerror(errno));
    int rc = ST_OK;
    char *buf = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (1 << 30)) {
        rc = ckpt_rfail(r, ST_DATA, "manifest.json is not a regular file under 1 GiB");
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        rc = ckpt_rfail(r, ST_SOFTWARE, "out of memory for manifest.json");
        goto out;
    }
    ssize_t got = 0, n;
    while (got < st.st_size && (n = pread(fd, buf + got, (size_t)(st.st_size - got), got)) > 0)
        got += n;
    if (got != st.st_size) {
        rc = ckpt_rfail(r, ST_IOERR, "short read on manifest.json");
        goto out;
    }
    buf[got] = 0;
    *text = buf;
    *len = (size_t)got;
    buf = NULL;
out:
    free(buf);
    ckpt_os->close(fd);
    return rc;
}

int ckpt_reader_new(ckpt_reader **out, const char *dir, char *err, size_t errcap)
{
    ckpt_reader *r = calloc(1, sizeof *r);
    *out = NULL;
    if (!r) {
        snprintf(err, errcap, "out of memory opening %s", dir);
        return ST_SOFTWARE;
    }
    if (util_fmt(r->dir, sizeof r->dir, "%s", dir) < 0) {
        snprintf(err, errcap, "checkpoint path too long: %.200s...", dir);
        free(r);
        return ST_USAGE;
    }
    size_t dl = strlen(r->dir);
    while (dl > 1 && r->dir[dl - 1] == '/')
        r->dir[--dl] = 0;
    *out = r;
    return ST_OK;
}

/* Parses the manifest r's source holds; on failure r is closed and err says why. */
int ckpt_reader_load(ckpt_reader **rp, char *err, size_t errcap)
{
    ckpt_reader *r = *rp;
    char *text = NULL;
    size_t len = 0;
    int rc = r->s3 ? ckpt_remote_manifest(r, &text, &len) : ckpt_read_manifest(r, &text, &len);
    if (rc == ST_OK)
        rc = ckpt_manifest_parse(r, text, len);
    free(text);
    if (rc != ST_OK) {
        snprintf(err, errcap, "%s", r->err);
        ckpt_close(r);
        *rp = NULL;
    }
    return rc;
}

int ckpt_open_quiet(ckpt_reader **out, const char *step_dir, char *err, size_t errcap)
{
    int rc = ckpt_reader_new(out, step_dir, err, errcap);
    return rc == ST_OK ? ckpt_reader_load(out, err, errcap) : rc;
}

int ckpt_open(ckpt_reader **r, const char *step_dir)
{
    char err[CKPT_ERR];
    int rc = ckpt_open_quiet(r, step_dir, err, sizeof err);
    return rc == ST_OK ? rc : util_fail(rc, "%s", err);
}

const ckpt_info *ckpt_get_info(const ckpt_reader *r) { return &r->info; }

uint64_t ckpt_bytes_read(const ckpt_reader *r) { return r->fetched; }

const ckpt_tensor *ckpt_get_tensors(const ckpt_reader *r, int *n)
{
    *n = r->n_tensors;
    return r->tensors;
}

static void ckpt_cbuf_free(ckpt_cbuf *b)
{
    ckpt_codec_ws_free(&b->ws);
    free(b->sbuf);
    free(b->rbuf);
    *b = (ckpt_cbuf){0};
}

void ckpt_close(ckpt_reader *r)
{
    if (!r)
        return;
    for (int i = 0; r->shards && i < r->n_shards; i++)
        if (r->shards[i].fd >= 0)
            ckpt_os->close(r->shards[i].fd);
    ckpt_reader_reset(r);
    ckpt_cbuf_free(&r->cb);
    for (int k = 0; r->par && k < r->n_par; k++)
        ckpt_cbuf_free(&r->par[k]);
    free(r->par);
    free(r);
}

static int ckpt_shard_fd(ckpt_reader *r, ckpt_shard *sh)
{
    char path[4200];
    if (sh->fd >= 0 || r->s3)
        return ST_OK;
    snprintf(path, sizeof path, "%s/shard-%05d.bin", r->dir, sh->rank);
    sh->fd = ckpt_os->open(path, O_RDONLY | O_CLOEXEC, 0);
    if (sh->fd < 0)
        return ckpt_rfail(r, ST_DATA, "shard-%05d.bin: %s; use an older checkpoint", sh->rank, strerror(errno));
    return ST_OK;
}

/* Exactly len bytes at off of shard sh, from its file or its object. */
static int ckpt_fetch(const ckpt_reader *r, const ckpt_shard *sh, uint64_t off, size_t len, void *buf, char *why,
                      size_t cap)
{
    if (r->s3)
        return ckpt_remote_fetch(r, sh->rank, off, len, buf, why, cap);
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(sh->fd, (char *)buf + got, len - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(why, cap, "read error: %s", strerror(errno));
            return ST_IOERR;
        }
        if (n == 0) {
            snprintf(why, cap, "file ends early (truncated); use an older checkpoint");
            return ST_DATA;
        }
        got += (size_t)n;
    }
    return ST_OK;
}

/* Reads, checks and decodes one chunk of a shard whose file is open (or
 * whose object is remote) into b->rbuf; on failure why says which chunk and
 * what. Touches nothing shared, so chunks load in parallel with one
 * ckpt_cbuf each. */
static int ckpt_chunk_load(const ckpt_reader *r, const ckpt_shard *sh, size_t ci, ckpt_cbuf *b, char *why,
                           size_t cap)
{
    const ckpt_chunk *c = &sh->chunks[ci];
    uint64_t chunk_bytes = r->chunk_bytes;
    size_t raw = (size_t)c->n * 4;
    char what[256];
    if (!b->sbuf) {
        b->scap = ckpt_codec_bound(CKPT_CODEC_ZSTD, chunk_bytes) + 64;
        b->rcap = chunk_bytes;
        b->sbuf = malloc(b->scap);
        b->rbuf = malloc(b->rcap);
        if (!b->sbuf || !b->rbuf) {
            ckpt_cbuf_free(b);
            snprintf(why, cap, "out of memory for chunk buffers");
            return ST_SOFTWARE;
        }
    }
#define CKPT_WHERE "shard-%05d.bin chunk %zu (%s floats [%" PRIu64 ",%" PRIu64 "))"
#define CKPT_WHERE_ARGS sh->rank, ci, ckpt_array_name(c->array), c->lo, c->lo + c->n
    if (c->stored > b->scap || raw > b->rcap) {
        snprintf(why, cap, CKPT_WHERE ": sizes exceed the chunk limit", CKPT_WHERE_ARGS);
        return ST_DATA;
    }
    int rc = ckpt_fetch(r, sh, c->off, c->stored, b->sbuf, what, sizeof what);
    if (rc != ST_OK) {
        snprintf(why, cap, CKPT_WHERE ": %s", CKPT_WHERE_ARGS, what);
        return rc;
    }
    if (ckpt_hash(b->sbuf, c->stored) != c->h_stored) {
        snprintf(why, cap, CKPT_WHERE ": stored checksum mismatch (damaged); use an older checkpoint", CKPT_WHERE_ARGS);
        return ST_DATA;
    }
    if (ckpt_codec_decode(&b->ws, c->codec, b->sbuf, c->stored, b->rbuf, raw, what, sizeof what) != 0) {
        snprintf(why, cap, CKPT_WHERE ": cannot decode: %s", CKPT_WHERE_ARGS, what);
        return ST_DATA;
    }
    if (ckpt_hash(b->rbuf, raw) != c->h_raw) {
        snprintf(why, cap, CKPT_WHERE ": decoded checksum mismatch; use an older checkpoint", CKPT_WHERE_ARGS);
        return ST_DATA;
    }
    return ST_OK;
}

/* One chunk into r->cb.rbuf, the error in r->err. */
static int ckpt_load_chunk(ckpt_reader *r, ckpt_shard *sh, size_t ci)
{
    char why[400];
    int rc = ckpt_shard_fd(r, sh);
    if (rc == ST_OK && (rc = ckpt_chunk_load(r, sh, ci, &r->cb, why, sizeof why)) != ST_OK)
        ckpt_rfail(r, rc, "%s", why);
    if (rc == ST_OK)
        r->fetched += sh->chunks[ci].stored;
    return rc;
}

/* Chunks in flight at once: r->threads, bounded so that their buffers
 * (about three chunks each) stay under 1 GiB. */
static int ckpt_width(const ckpt_reader *r)
{
    uint64_t fit = ((uint64_t)1 << 30) / (3 * (r->chunk_bytes ? r->chunk_bytes : 1));
    int nb = r->threads > 1 ? r->threads : 1;
    return (uint64_t)nb > fit ? (fit ? (int)fit : 1) : nb;
}

typedef struct {
    ckpt_shard *sh;
    size_t ci;
} ckpt_pick;

int ckpt_read_each_quiet(ckpt_reader *r, int array, size_t lo, size_t hi, ckpt_sink fn, void *arg)
{
    if (array < 0 || array >= CKPT_N_ARRAYS || lo > hi || hi > r->info.n_floats)
        return ckpt_rfail(r, ST_USAGE, "read of array %d range [%zu,%zu) outside [0,%" PRIu64 ")", array, lo, hi,
                          r->info.n_floats);
    int nb = ckpt_width(r), rc = ST_OK;
    size_t n = 0, cap = 0;
    ckpt_pick *list = NULL;
    int *codes = calloc((size_t)nb, sizeof *codes);
    char (*why)[400] = calloc((size_t)nb, sizeof *why);
    if (nb > 1 && r->n_par < nb) {   /* first parallel read, or r->threads grew */
        for (int k = 0; k < r->n_par; k++)
            ckpt_cbuf_free(&r->par[k]);
        free(r->par);
        r->par = calloc((size_t)nb, sizeof *r->par);
        r->n_par = r->par ? nb : 0;
    }
    ckpt_cbuf *bufs = nb > 1 ? r->par : &r->cb;
    if (!codes || !why || !bufs || r->n_par < (nb > 1 ? nb : 0)) {
        rc = ckpt_rfail(r, ST_SOFTWARE, "out of memory");
        goto out;
    }
    for (int s = 0; s < r->n_shards && rc == ST_OK; s++) {
        ckpt_shard *sh = &r->shards[s];
        if (sh->hi <= lo || sh->lo >= hi)
            continue;
        rc = ckpt_shard_fd(r, sh);
        for (size_t ci = 0; ci < sh->n_chunks && rc == ST_OK; ci++) {
            const ckpt_chunk *c = &sh->chunks[ci];
            if (c->array != array || c->lo + c->n <= lo || c->lo >= hi)
                continue;
            if (n == cap) {
                ckpt_pick *m = realloc(list, (cap = cap ? 2 * cap : 64) * sizeof *list);
                if (!m) {
                    rc = ckpt_rfail(r, ST_SOFTWARE, "out of memory");
                    break;
                }
                list = m;
            }
            list[n++] = (ckpt_pick){sh, ci};
        }
    }
    /* A batch loads in parallel; its chunks are then handed on in order, so
     * the error reported is the first bad chunk in flat order. */
    for (size_t base = 0; base < n && rc == ST_OK; base += (size_t)nb) {
        int m = n - base < (size_t)nb ? (int)(n - base) : nb;
#pragma omp parallel for num_threads(nb) schedule(dynamic, 1) if (m > 1)
        for (int k = 0; k < m; k++)
            codes[k] = ckpt_chunk_load(r, list[base + (size_t)k].sh, list[base + (size_t)k].ci, &bufs[k], why[k],
                                       sizeof why[k]);
        for (int k = 0; k < m && rc == ST_OK; k++) {
            const ckpt_chunk *c = &list[base + (size_t)k].sh->chunks[list[base + (size_t)k].ci];
            if (codes[k] != ST_OK) {
                rc = ckpt_rfail(r, codes[k], "%s", why[k]);
                break;
            }
            r->fetched += c->stored;
            uint64_t a = c->lo > lo ? c->lo : lo, b = c->lo + c->n < hi ? c->lo + c->n : hi;
            /* A sink that fails has said why itself. */
            rc = fn(arg, (size_t)a, (size_t)(b - a), (const float *)(void *)(bufs[k].rbuf + (a - c->lo) * 4));
        }
    }
out:
    free(list);
    free(codes);
    free(why);
    return rc;
}

typedef struct {
    float *out;
    size_t lo;
} ckpt_copy_to;

static int ckpt_copy_sink(void *arg, size_t off, size_t n, const float *src)
{
    ckpt_copy_to *c = arg;
    memcpy(c->out + (off - c->lo), src, n * sizeof(float));
    return ST_OK;
}

int ckpt_read_range_quiet(ckpt_reader *r, int array, size_t lo, size_t hi, float *out)
{
    ckpt_copy_to c = {out, lo};
    return ckpt_read_each_quiet(r, array, lo, hi, ckpt_copy_sink, &c);
}

int ckpt_read_each(ckpt_reader *r, int array, size_t lo, size_t hi, ckpt_sink fn, void *arg)
{
    r->err[0] = 0;
    int rc = ckpt_read_each_quiet(r, array, lo, hi, fn, arg);
    return rc == ST_OK || !r->err[0] ? rc : util_fail(rc, "%s", r->err);
}

int ckpt_read_range(ckpt_reader *r, int array, size_t lo, size_t hi, float *out)
{
    int rc = ckpt_read_range_quiet(r, array, lo, hi, out);
    return rc == ST_OK ? rc : util_fail(rc, "%s", r->err);
}

/* One pass over every chunk in file order; with dig, also the per-array
 * digests (chunks of an array come in flat order within and across shards).
 * With r->threads > 1, batches of that many chunks load in parallel and are
 * then taken in file order, so the digests and the error reported (the
 * first bad chunk in file order) are those of a serial pass. */
int ckpt_verify_digest(ckpt_reader *r, char dig[CKPT_N_ARRAYS][17])
{
    XXH3_state_t *st[CKPT_N_ARRAYS] = {0};
    int rc = ST_OK, nb = ckpt_width(r);
    ckpt_cbuf *bufs = calloc((size_t)nb, sizeof *bufs);
    int *codes = calloc((size_t)nb, sizeof *codes);
    char (*why)[400] = calloc((size_t)nb, sizeof *why);
    if (!bufs || !codes || !why)
        rc = ckpt_rfail(r, ST_SOFTWARE, "out of memory");
    /* A remote object's size is one HEAD away: check it before the downloads. */
    if (rc == ST_OK && r->s3)
        rc = ckpt_remote_sizes(r);
    for (int a = 0; dig && a < CKPT_N_ARRAYS && rc == ST_OK; a++)
        if (!(st[a] = XXH3_createState()) || XXH3_64bits_reset(st[a]) != XXH_OK)
            rc = ckpt_rfail(r, ST_SOFTWARE, "out of memory");
    for (int s = 0; s < r->n_shards && rc == ST_OK; s++) {
        ckpt_shard *sh = &r->shards[s];
        struct stat fs;
        rc = ckpt_shard_fd(r, sh);
        for (size_t base = 0; base < sh->n_chunks && rc == ST_OK; base += (size_t)nb) {
            int m = sh->n_chunks - base < (size_t)nb ? (int)(sh->n_chunks - base) : nb;
#pragma omp parallel for num_threads(nb) schedule(dynamic, 1) if (m > 1)
            for (int k = 0; k < m; k++)
                codes[k] = ckpt_chunk_load(r, sh, base + (size_t)k, &bufs[k], why[k], sizeof why[k]);
            for (int k = 0; k < m && rc == ST_OK; k++) {
                if (codes[k] != ST_OK)
                    rc = ckpt_rfail(r, codes[k], "%s", why[k]);
                else {
                    const ckpt_chunk *c = &sh->chunks[base + (size_t)k];
                    r->fetched += c->stored;
                    if (dig)
                        XXH3_64bits_update(st[c->array], bufs[k].rbuf, (size_t)c->n * 4);
                }
            }
        }
        if (rc == ST_OK && !r->s3 && (fstat(sh->fd, &fs) != 0 || (uint64_t)fs.st_size != sh->file_bytes))
            rc = ckpt_rfail(r, ST_DATA, "shard-%05d.bin: %lld bytes on disk, manifest says %" PRIu64,
                            sh->rank, (long long)fs.st_size, sh->file_bytes);
    }
    for (int a = 0; dig && a < CKPT_N_ARRAYS; a++) {
        if (rc == ST_OK)
            snprintf(dig[a], 17, "%016" PRIx64, (uint64_t)XXH3_64bits_digest(st[a]));
        XXH3_freeState(st[a]);
    }
    for (int k = 0; bufs && k < nb; k++)
        ckpt_cbuf_free(&bufs[k]);
    free(bufs);
    free(codes);
    free(why);
    return rc;
}

int ckpt_threads_all(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int ckpt_verify_quiet(ckpt_reader *r) { return ckpt_verify_digest(r, NULL); }

int ckpt_verify(ckpt_reader *r)
{
    int rc = ckpt_verify_quiet(r);
    return rc == ST_OK ? rc : util_fail(rc, "%s", r->err);
}

static int ckpt_digest_quiet(ckpt_reader *r, int array, char out[17])
{
    XXH3_state_t *st = XXH3_createState();
    int rc = ST_OK;
    if (!st)
        return ckpt_rfail(r, ST_SOFTWARE, "out of memory");
    if (array < 0 || array >= CKPT_N_ARRAYS) {
        rc = ckpt_rfail(r, ST_USAGE, "no array %d", array);
        goto out;
    }
    XXH3_64bits_reset(st);
    for (int s = 0; s < r->n_shards && rc == ST_OK; s++) {
        ckpt_shard *sh = &r->shards[s];
        for (size_t ci = 0; ci < sh->n_chunks && rc == ST_OK; ci++) {
            if (sh->chunks[ci].array != array)
                continue;
            rc = ckpt_load_chunk(r, sh, ci);
            if (rc == ST_OK)
                XXH3_64bits_update(st, r->cb.rbuf, (size_t)sh->chunks[ci].n * 4);
        }
    }
    if (rc == ST_OK)
        snprintf(out, 17, "%016" PRIx64, (uint64_t)XXH3_64bits_digest(st));
out:
    XXH3_freeState(st);
    return rc;
}

int ckpt_digest(ckpt_reader *r, int array, char out[17])
{
    int rc = ckpt_digest_quiet(r, array, out);
    return rc == ST_OK ? rc : util_fail(rc, "%s", r->err);
}
