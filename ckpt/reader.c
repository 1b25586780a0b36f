/* The paranoid checkpoint reader: opens a step through its manifest, reads
 * any flat range of an array across shards, verifies every chunk's
 * checksums, and digests arrays in flat order. Its bytes come through the
 * ckpt_input it was opened with (a directory, input.c; object storage,
 * remote.c), so nothing here knows where they are stored. Layer 5 of ckpt/
 * (ckpt_int.h): uses manifest.c, codec.c and the input it is given. */
#include "ckpt_int.h"
#include "util/util.h"

#include <pthread.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <xxhash.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int ckpt_rfail(ckpt_reader *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int ckpt_rfail(ckpt_reader *r, int code, const char *fmt, ...)
{
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* A long message (an object store's error) gets less of the name. */
    snprintf(r->err, sizeof r->err, "checkpoint %.*s: %s", strlen(msg) < 512 ? 400 : 300, r->dir, msg);
    return code;
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
    char *text = NULL, why[700];
    size_t len = 0;
    uint64_t counted = 0;
    int rc = r->in.ops->manifest(r->in.ctx, &text, &len, &counted, why, sizeof why);
    if (rc != ST_OK)
        ckpt_rfail(r, rc, "%s", why);
    r->fetched += counted;
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
    if (rc == ST_OK && ckpt_input_dir(&(*out)->in, (*out)->dir) != ST_OK) {
        snprintf(err, errcap, "out of memory opening %s", step_dir);
        ckpt_close(*out);
        *out = NULL;
        return ST_SOFTWARE;
    }
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

const char *ckpt_reader_name(const ckpt_reader *r) { return r->dir; }

size_t ckpt_read_span(const ckpt_reader *r)
{
    size_t chunk = r->chunk_bytes / 4 ? (size_t)(r->chunk_bytes / 4) : 1;
    return r->window > 1 ? chunk * (size_t)r->window : chunk;
}

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
    if (r->in.ops)
        r->in.ops->close(r->in.ctx);
    ckpt_reader_reset(r);
    ckpt_cbuf_free(&r->cb);
    for (int k = 0; k < r->n_slots; k++)
        free(r->slots[k]);
    free(r->slots);
    for (int k = 0; k < r->n_work; k++)
        ckpt_cbuf_free(&r->work[k]);
    free(r->work);
    free(r);
}

/* Makes shard sh readable through the input; the error in r->err. */
static int ckpt_shard_open(ckpt_reader *r, const ckpt_shard *sh)
{
    char why[700];
    int rc = r->in.ops->open_shard(r->in.ctx, sh->rank, why, sizeof why);
    return rc == ST_OK ? rc : ckpt_rfail(r, rc, "%s", why);
}

static int ckpt_shard_size(ckpt_reader *r, const ckpt_shard *sh)
{
    char why[700];
    int rc = r->in.ops->check_size(r->in.ctx, sh->rank, sh->file_bytes, why, sizeof why);
    return rc == ST_OK ? rc : ckpt_rfail(r, rc, "%s", why);
}

int ckpt_check_sizes(ckpt_reader *r)
{
    int rc = ST_OK;
    for (int i = 0; i < r->n_shards && rc == ST_OK; i++)
        rc = ckpt_shard_size(r, &r->shards[i]);
    return rc;
}

/* Stored-bytes buffer (and, with raw, a decoded one) of b, allocated on first use. */
static int ckpt_cbuf_ready(ckpt_cbuf *b, uint64_t chunk_bytes, int raw)
{
    if (!b->sbuf) {
        b->scap = ckpt_codec_bound(CKPT_CODEC_ZSTD, chunk_bytes) + 64;
        b->sbuf = malloc(b->scap);
    }
    if (raw && !b->rbuf) {
        b->rcap = chunk_bytes;
        b->rbuf = malloc(b->rcap);
    }
    if (!b->sbuf || (raw && !b->rbuf)) {
        ckpt_cbuf_free(b);
        return ST_SOFTWARE;
    }
    return ST_OK;
}

/* Reads, checks and decodes one chunk of an opened shard into out (r->chunk_bytes long), with b's stored
 * bytes buffer and codec scratch; on failure why says which chunk and what.
 * Touches nothing shared, so chunks load in parallel with one b each. */
static int ckpt_chunk_load(const ckpt_reader *r, const ckpt_shard *sh, size_t ci, ckpt_cbuf *b, uint8_t *out,
                           char *why, size_t cap)
{
    const ckpt_chunk *c = &sh->chunks[ci];
    size_t raw = (size_t)c->n * 4;
    char what[256];
    if (ckpt_cbuf_ready(b, r->chunk_bytes, 0) != ST_OK) {
        snprintf(why, cap, "out of memory for chunk buffers");
        return ST_SOFTWARE;
    }
#define CKPT_WHERE "shard-%05d.bin chunk %zu (%s floats [%" PRIu64 ",%" PRIu64 "))"
#define CKPT_WHERE_ARGS sh->rank, ci, ckpt_array_name(c->array), c->lo, c->lo + c->n
    if (c->stored > b->scap || raw > r->chunk_bytes) {
        snprintf(why, cap, CKPT_WHERE ": sizes exceed the chunk limit", CKPT_WHERE_ARGS);
        return ST_DATA;
    }
    int rc = r->in.ops->fetch(r->in.ctx, sh->rank, c->off, c->stored, b->sbuf, what, sizeof what);
    if (rc != ST_OK) {
        snprintf(why, cap, CKPT_WHERE ": %s", CKPT_WHERE_ARGS, what);
        return rc;
    }
    if (ckpt_hash(b->sbuf, c->stored) != c->h_stored) {
        snprintf(why, cap, CKPT_WHERE ": stored checksum mismatch (damaged); use an older checkpoint", CKPT_WHERE_ARGS);
        return ST_DATA;
    }
    if (ckpt_codec_decode(&b->ws, c->codec, b->sbuf, c->stored, out, raw, what, sizeof what) != 0) {
        snprintf(why, cap, CKPT_WHERE ": cannot decode: %s", CKPT_WHERE_ARGS, what);
        return ST_DATA;
    }
    if (ckpt_hash(out, raw) != c->h_raw) {
        snprintf(why, cap, CKPT_WHERE ": decoded checksum mismatch; use an older checkpoint", CKPT_WHERE_ARGS);
        return ST_DATA;
    }
    return ST_OK;
}

/* One chunk into r->cb.rbuf, the error in r->err. */
static int ckpt_load_chunk(ckpt_reader *r, ckpt_shard *sh, size_t ci)
{
    char why[400];
    int rc = ckpt_shard_open(r, sh);
    if (rc == ST_OK && ckpt_cbuf_ready(&r->cb, r->chunk_bytes, 1) != ST_OK)
        rc = ckpt_rfail(r, ST_SOFTWARE, "out of memory for chunk buffers");
    if (rc == ST_OK && (rc = ckpt_chunk_load(r, sh, ci, &r->cb, r->cb.rbuf, why, sizeof why)) != ST_OK)
        ckpt_rfail(r, rc, "%s", why);
    if (rc == ST_OK)
        r->fetched += sh->chunks[ci].stored;
    return rc;
}

/* ---- the sliding window ----
 * A run hands on a list of chunks strictly in list order, each verified,
 * while up to `threads` workers load the chunks after it. A worker takes
 * the next chunk not yet started as soon as it is free, so one slow GET
 * holds up only its own chunk, not a whole batch. Chunk i loads into slot
 * i % slots and may start only once chunk i - slots has been handed on:
 * memory is `slots` decoded chunks plus each worker's stored bytes and
 * codec scratch, however long the list. The caller's thread hands on (the sink runs there,
 * as before); the first failing chunk in list order is the error reported,
 * the chunks after it are abandoned, and the run returns only after every
 * worker has stopped touching the buffers.
 *   slot free --worker starts chunk i--> loading --done--> ready
 *   ready --caller hands chunk i on--> free (chunk i + slots may start) */

typedef struct {
    ckpt_shard *sh;
    size_t ci;
} ckpt_pick;

/* Hands one verified chunk on: c from the manifest, raw its decoded bytes. */
typedef int (*ckpt_take_fn)(ckpt_reader *r, void *arg, const ckpt_chunk *c, const uint8_t *raw);

typedef struct {
    int ready, code;
    char why[400];
} ckpt_slot;

typedef struct {
    ckpt_reader *r;
    const ckpt_pick *list;
    size_t n, next, head;        /* next: first chunk not started; head: first not handed on */
    int slots, stop, joined;     /* joined: workers started, each one's index in r->work */
    ckpt_slot *slot;
    pthread_mutex_t mu;
    pthread_cond_t freed, loaded;
} ckpt_win;

/* Workers, then slots (decoded chunks in flight or waiting to be handed
 * on), bounded so that their buffers (one chunk a slot; stored bytes and
 * codec scratch, two chunks, a worker) stay under 1 GiB. A remote reader
 * keeps more slots than GETs in flight, so that a slow answer at the head
 * does not stop the GETs behind it at once. */
static void ckpt_window_size(const ckpt_reader *r, int *threads, int *slots)
{
    uint64_t cb = r->chunk_bytes ? r->chunk_bytes : 1, budget = (uint64_t)1 << 30;
    int t = r->threads > 1 ? r->threads : 1;
    int s = r->window > t ? r->window : t;
    if ((uint64_t)t > budget / (3 * cb))
        t = budget / (3 * cb) ? (int)(budget / (3 * cb)) : 1;
    if (s < t)
        s = t;
    uint64_t fit = (budget - 2 * (uint64_t)t * cb) / cb;
    if ((uint64_t)s > fit)
        s = fit > (uint64_t)t ? (int)fit : t;
    *threads = t;
    *slots = s;
}

static void *ckpt_win_worker(void *arg)
{
    ckpt_win *w = arg;
    char why[400];
    pthread_mutex_lock(&w->mu);
    ckpt_cbuf *b = &w->r->work[w->joined++];   /* this worker's stored bytes and codec scratch */
    for (;;) {
        while (!w->stop && w->next < w->n && w->next >= w->head + (size_t)w->slots)
            pthread_cond_wait(&w->freed, &w->mu);
        if (w->stop || w->next >= w->n)
            break;
        size_t i = w->next++;
        int s = (int)(i % (size_t)w->slots);
        pthread_mutex_unlock(&w->mu);
        why[0] = 0;
        int code = ckpt_chunk_load(w->r, w->list[i].sh, w->list[i].ci, b, w->r->slots[s], why, sizeof why);
        pthread_mutex_lock(&w->mu);
        w->slot[s].code = code;
        memcpy(w->slot[s].why, why, sizeof why);
        w->slot[s].ready = 1;
        pthread_cond_broadcast(&w->loaded);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* The caller's side: waits for each chunk in order and hands it on. */
static int ckpt_win_drain(ckpt_win *w, ckpt_take_fn take, void *arg)
{
    ckpt_reader *r = w->r;
    int rc = ST_OK;
    for (size_t i = 0; i < w->n && rc == ST_OK; i++) {
        int s = (int)(i % (size_t)w->slots);
        pthread_mutex_lock(&w->mu);
        while (!w->slot[s].ready)
            pthread_cond_wait(&w->loaded, &w->mu);
        pthread_mutex_unlock(&w->mu);
        if (w->slot[s].code != ST_OK)
            rc = ckpt_rfail(r, w->slot[s].code, "%s", w->slot[s].why);
        else
            rc = take(r, arg, &w->list[i].sh->chunks[w->list[i].ci], r->slots[s]);
        pthread_mutex_lock(&w->mu);
        w->slot[s].ready = 0;
        w->head = i + 1;
        pthread_cond_broadcast(&w->freed);
        pthread_mutex_unlock(&w->mu);
    }
    return rc;
}

/* One chunk at a time on the caller's thread: a reader with threads <= 1
 * (a background check must not take cores from training). */
static int ckpt_win_serial(ckpt_reader *r, const ckpt_pick *list, size_t n, ckpt_take_fn take, void *arg)
{
    char why[400];
    int rc = ST_OK;
    if (n && ckpt_cbuf_ready(&r->cb, r->chunk_bytes, 1) != ST_OK)
        return ckpt_rfail(r, ST_SOFTWARE, "out of memory for chunk buffers");
    for (size_t i = 0; i < n && rc == ST_OK; i++) {
        if ((rc = ckpt_chunk_load(r, list[i].sh, list[i].ci, &r->cb, r->cb.rbuf, why, sizeof why)) != ST_OK)
            rc = ckpt_rfail(r, rc, "%s", why);
        else
            rc = take(r, arg, &list[i].sh->chunks[list[i].ci], r->cb.rbuf);
    }
    return rc;
}

/* One slot's buffer. Chunks of 2 MiB and more get transparent huge pages
 * where the kernel offers them: a remote reader's 32 slots are 128 MiB
 * touched once, and in 4 KiB pages that first touch cost a restore of
 * 600 MB at zero latency ~10% (bench/s3lat.sh, 25k more page faults). */
static uint8_t *ckpt_slot_alloc(uint64_t chunk_bytes)
{
    const size_t huge = (size_t)2 << 20;
    void *p = NULL;
    if (chunk_bytes < huge)
        return malloc(chunk_bytes ? chunk_bytes : 1);
    size_t len = (chunk_bytes + huge - 1) / huge * huge;
    if (posix_memalign(&p, huge, len) != 0)
        return NULL;
    (void)madvise(p, len, MADV_HUGEPAGE);   /* a hint: refused, the pages are small */
    return p;
}

/* r->slots and r->work grow to what a run needs and stay for the reader's
 * next run (resume reads three arrays, verify each shard), so buffers are
 * allocated and first touched once. */
static int ckpt_win_bufs(ckpt_reader *r, int slots, int threads)
{
    if (r->n_work < threads) {
        ckpt_cbuf *m = realloc(r->work, (size_t)threads * sizeof *m);
        if (!m)
            return ckpt_rfail(r, ST_SOFTWARE, "out of memory");
        memset(m + r->n_work, 0, (size_t)(threads - r->n_work) * sizeof *m);
        r->work = m;
        r->n_work = threads;
    }
    if (r->n_slots >= slots)
        return ST_OK;
    uint8_t **m = realloc(r->slots, (size_t)slots * sizeof *m);
    if (!m)
        return ckpt_rfail(r, ST_SOFTWARE, "out of memory");
    r->slots = m;
    for (; r->n_slots < slots; r->n_slots++)
        if (!(r->slots[r->n_slots] = ckpt_slot_alloc(r->chunk_bytes)))
            return ckpt_rfail(r, ST_SOFTWARE, "out of memory for chunk buffers");
    return ST_OK;
}

static int ckpt_window_run(ckpt_reader *r, const ckpt_pick *list, size_t n, ckpt_take_fn take, void *arg)
{
    int threads, slots, started = 0, rc;
    ckpt_window_size(r, &threads, &slots);
    if (threads > 1 && (size_t)threads > n)
        threads = n > 1 ? (int)n : 1;
    if (threads <= 1 || n < 2)
        return ckpt_win_serial(r, list, n, take, arg);
    if ((size_t)slots > n)
        slots = (int)n;
    pthread_t th[CKPT_MAX_READ_THREADS];
    if (threads > CKPT_MAX_READ_THREADS)
        threads = CKPT_MAX_READ_THREADS;
    ckpt_win w = {.r = r, .list = list, .n = n, .slots = slots};
    if ((rc = ckpt_win_bufs(r, slots, threads)) != ST_OK)
        return rc;
    if (!(w.slot = calloc((size_t)slots, sizeof *w.slot)))
        return ckpt_rfail(r, ST_SOFTWARE, "out of memory");
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.freed, NULL);
    pthread_cond_init(&w.loaded, NULL);
    for (; started < threads; started++)
        if (pthread_create(&th[started], NULL, ckpt_win_worker, &w) != 0)
            break;
    if (started == 0)
        rc = ckpt_rfail(r, ST_SOFTWARE, "cannot start a reader thread");
    else
        rc = ckpt_win_drain(&w, take, arg);
    pthread_mutex_lock(&w.mu);
    w.stop = 1;
    pthread_cond_broadcast(&w.freed);
    pthread_mutex_unlock(&w.mu);
    for (int k = 0; k < started; k++)
        pthread_join(th[k], NULL);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.freed);
    pthread_cond_destroy(&w.loaded);
    free(w.slot);
    return rc;
}

typedef struct {
    size_t lo, hi;
    ckpt_sink fn;
    void *arg;
} ckpt_each_to;

static int ckpt_take_range(ckpt_reader *r, void *arg, const ckpt_chunk *c, const uint8_t *raw)
{
    ckpt_each_to *e = arg;
    r->fetched += c->stored;
    uint64_t a = c->lo > e->lo ? c->lo : e->lo, b = c->lo + c->n < e->hi ? c->lo + c->n : e->hi;
    /* A sink that fails has said why itself. */
    return e->fn(e->arg, (size_t)a, (size_t)(b - a), (const float *)(const void *)(raw + (a - c->lo) * 4));
}

/* The chunks of array that overlap [lo,hi), in flat order. */
static int ckpt_pick_range(ckpt_reader *r, int array, size_t lo, size_t hi, ckpt_pick **out, size_t *n)
{
    size_t cap = 0;
    int rc = ST_OK;
    *out = NULL;
    *n = 0;
    for (int s = 0; s < r->n_shards && rc == ST_OK; s++) {
        ckpt_shard *sh = &r->shards[s];
        if (sh->hi <= lo || sh->lo >= hi)
            continue;
        rc = ckpt_shard_open(r, sh);
        for (size_t ci = 0; ci < sh->n_chunks && rc == ST_OK; ci++) {
            const ckpt_chunk *c = &sh->chunks[ci];
            if (c->array != array || c->lo + c->n <= lo || c->lo >= hi)
                continue;
            if (*n == cap) {
                ckpt_pick *m = realloc(*out, (cap = cap ? 2 * cap : 64) * sizeof **out);
                if (!m)
                    return ckpt_rfail(r, ST_SOFTWARE, "out of memory");
                *out = m;
            }
            (*out)[(*n)++] = (ckpt_pick){sh, ci};
        }
    }
    return rc;
}

int ckpt_read_each_quiet(ckpt_reader *r, int array, size_t lo, size_t hi, ckpt_sink fn, void *arg)
{
    if (array < 0 || array >= CKPT_N_ARRAYS || lo > hi || hi > r->info.n_floats)
        return ckpt_rfail(r, ST_USAGE, "read of array %d range [%zu,%zu) outside [0,%" PRIu64 ")", array, lo, hi,
                          r->info.n_floats);
    ckpt_pick *list = NULL;
    size_t n = 0;
    ckpt_each_to e = {lo, hi, fn, arg};
    int rc = ckpt_pick_range(r, array, lo, hi, &list, &n);
    if (rc == ST_OK)
        rc = ckpt_window_run(r, list, n, ckpt_take_range, &e);
    free(list);
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

static int ckpt_take_digest(ckpt_reader *r, void *arg, const ckpt_chunk *c, const uint8_t *raw)
{
    XXH3_state_t **st = arg;
    r->fetched += c->stored;
    if (st)
        XXH3_64bits_update(st[c->array], raw, (size_t)c->n * 4);
    return ST_OK;
}

/* Every chunk of one shard in file order through the window, then its
 * size (unless the input checks sizes first). */
static int ckpt_verify_shard(ckpt_reader *r, ckpt_shard *sh, XXH3_state_t **st)
{
    ckpt_pick *list = malloc((sh->n_chunks ? sh->n_chunks : 1) * sizeof *list);
    int rc = list ? ckpt_shard_open(r, sh) : ckpt_rfail(r, ST_SOFTWARE, "out of memory");
    for (size_t ci = 0; rc == ST_OK && ci < sh->n_chunks; ci++)
        list[ci] = (ckpt_pick){sh, ci};
    if (rc == ST_OK)
        rc = ckpt_window_run(r, list, sh->n_chunks, ckpt_take_digest, st);
    free(list);
    if (rc == ST_OK && !r->in.ops->sizes_first)
        rc = ckpt_shard_size(r, sh);
    return rc;
}

/* One pass over every chunk in file order; with dig, also the per-array
 * digests (chunks of an array come in flat order within and across shards).
 * With r->threads > 1 chunks load in parallel through the window and are
 * handed on in file order, so the digests and the error reported (the
 * first bad chunk in file order) are those of a serial pass. */
int ckpt_verify_digest(ckpt_reader *r, char dig[CKPT_N_ARRAYS][17])
{
    XXH3_state_t *st[CKPT_N_ARRAYS] = {0};
    int rc = ST_OK;
    if (r->in.ops->sizes_first)
        rc = ckpt_check_sizes(r);
    for (int a = 0; dig && a < CKPT_N_ARRAYS && rc == ST_OK; a++)
        if (!(st[a] = XXH3_createState()) || XXH3_64bits_reset(st[a]) != XXH_OK)
            rc = ckpt_rfail(r, ST_SOFTWARE, "out of memory");
    for (int s = 0; s < r->n_shards && rc == ST_OK; s++)
        rc = ckpt_verify_shard(r, &r->shards[s], dig ? st : NULL);
    for (int a = 0; dig && a < CKPT_N_ARRAYS; a++) {
        if (rc == ST_OK)
            snprintf(dig[a], 17, "%016" PRIx64, (uint64_t)XXH3_64bits_digest(st[a]));
        XXH3_freeState(st[a]);
    }
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
