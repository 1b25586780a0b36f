/* The asynchronous checkpoint writer: submit fills the snapshot buffer
 * reserved at open through the caller's source (the only stall); the writer
 * thread waits for the source's fence, feeds the chunks to a persistent
 * compression pool, checksums them, appends them to the writeback stream,
 * and on rank 0 commits. */
#include "ckpt_int.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CKPT_MAX_COMMITS 64

struct ckpt_writer {
    char dir[4096];
    ckpt_opts o;
    int rank, world, lock_fd;
    size_t lo, hi;               /* this rank's range */
    pthread_t th;
    int th_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    float *buf;                  /* snapshot: params, m, v of [lo,hi) back to back */
    size_t buf_bytes;
    ckpt_pool *pool;             /* compression workers, alive as long as the writer */
    ckpt_codec_ws *ws;           /* one per pool worker slot, reused across saves */
    uint8_t **slots;             /* compressed chunks waiting to be written */
    size_t n_slots, slot_cap;
    ckpt_save_desc desc;
    int (*fence)(void *arg);     /* of the queued save's source */
    void *fence_arg;
    int save_queued, saving, committing, stop;
    double stall_ms, submit_end;
    int64_t commits[CKPT_MAX_COMMITS];
    int n_commits;
    int64_t written, committed;
    int err;
    ckpt_result res;
    int64_t last_step;           /* the save the timings below belong to */
    double last_stall_ms, last_write_ms;
};

/* One save's chunk pipeline: workers claim chunks in order and compress
 * into a window of slots; the writer thread writes them in order. */
typedef struct {
    ckpt_writer *w;
    ckpt_chunk *chunks;
    size_t n, next, written;
    size_t *len;
    const uint8_t **ptr;         /* what to write for a slot: it, or the snapshot itself */
    int *done;
    int abort, fail;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} ckpt_job;

/* What one pool job gets: the save's pipeline and its own codec space. */
typedef struct {
    ckpt_job *j;
    ckpt_codec_ws *ws;
} ckpt_worker_arg;

int ckpt_host_fill(void *arg, float *dst, size_t lo, size_t hi)
{
    const ckpt_host_arrays *h = arg;
    size_t n = hi - lo;
    for (int a = 0; a < CKPT_N_ARRAYS; a++)
        memcpy(dst + (size_t)a * n, h->arrays[a] + (lo - h->base), n * sizeof *dst);
    return ST_OK;
}

static const float *ckpt_chunk_src(const ckpt_writer *w, const ckpt_chunk *c)
{
    size_t span = (size_t)(w->desc.hi - w->desc.lo);
    return w->buf + (size_t)c->array * span + (size_t)(c->lo - w->desc.lo);
}

static void ckpt_worker(void *arg)
{
    ckpt_worker_arg *wa = arg;
    ckpt_job *j = wa->j;
    ckpt_writer *w = j->w;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        while (!j->abort && j->next < j->n && j->next >= j->written + w->n_slots)
            pthread_cond_wait(&j->cv, &j->mu);
        if (j->abort || j->next >= j->n) {
            pthread_mutex_unlock(&j->mu);
            break;
        }
        size_t i = j->next++;
        pthread_mutex_unlock(&j->mu);
        ckpt_chunk *c = &j->chunks[i];
        size_t slot = i % w->n_slots, out = 0;
        const float *src = ckpt_chunk_src(w, c);
        int used = 0;
        int bad = 0;
        if (w->desc.codec == CKPT_CODEC_NONE)
            out = (size_t)c->n * 4, used = CKPT_CODEC_NONE;  /* written straight from the snapshot */
        else
            bad = ckpt_codec_encode(wa->ws, w->desc.codec, w->desc.level, src, (size_t)c->n * 4, w->slots[slot],
                                    w->slot_cap, &out, &used);
        if (!bad) {
            c->codec = used;
            c->stored = out;
            c->h_raw = ckpt_hash(src, (size_t)c->n * 4);
            c->h_stored = used == CKPT_CODEC_NONE ? c->h_raw : ckpt_hash(w->slots[slot], out);
        }
        pthread_mutex_lock(&j->mu);
        j->fail |= bad;
        j->len[slot] = out;
        j->ptr[slot] = used == CKPT_CODEC_NONE ? (const uint8_t *)src : w->slots[slot];
        j->done[slot] = 1;
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
    }
}

#define CKPT_WRITE_MAX ((size_t)16 << 20)     /* largest single write of contiguous raw chunks */

static int ckpt_make_chunks(const ckpt_save_desc *d, ckpt_chunk **out, size_t *n)
{
    uint64_t span = d->hi - d->lo, per = d->chunk_bytes / 4;
    uint64_t each = span ? (span + per - 1) / per : 0;
    ckpt_chunk *c = calloc(each ? each * CKPT_N_ARRAYS : 1, sizeof *c);
    size_t k = 0;
    if (!c)
        return -1;
    for (int a = 0; a < CKPT_N_ARRAYS; a++)
        for (uint64_t lo = d->lo; lo < d->hi; lo += per)
            c[k++] = (ckpt_chunk){.array = a, .lo = lo, .n = d->hi - lo < per ? d->hi - lo : per};
    *out = c;
    *n = k;
    return 0;
}

/* Raw chunks lie back to back in the snapshot, as in the file, so runs of
 * them go out as one large write; a compressed chunk is written on its own
 * because its slot is reused as soon as it is released. Returns 0, -1 with
 * errno set on a write failure, or 1 when compression failed. */
static int ckpt_write_chunks(ckpt_writer *w, ckpt_job *j, ckpt_wb *st, size_t *bad_chunk)
{
    const uint8_t *run = NULL;   /* raw bytes not yet written, contiguous in the snapshot */
    size_t run_len = 0;
    for (size_t i = 0; i < j->n; i++) {
        size_t slot = i % w->n_slots;
        pthread_mutex_lock(&j->mu);
        while (!j->done[slot])
            pthread_cond_wait(&j->cv, &j->mu);
        int fail = j->fail;
        pthread_mutex_unlock(&j->mu);
        if (fail) {
            *bad_chunk = i;
            return 1;
        }
        const uint8_t *p = j->ptr[slot];
        size_t len = j->len[slot];
        int raw = p != w->slots[slot];
        if (run_len > 0 && (!raw || p != run + run_len || run_len + len > CKPT_WRITE_MAX)) {
            if (ckpt_wb_write(st, run, run_len) != 0)
                return -1;
            run_len = 0;
        }
        j->chunks[i].off = st->pos + run_len;
        if (raw) {
            run = run_len ? run : p;
            run_len += len;
        } else if (ckpt_wb_write(st, p, len) != 0) {
            return -1;
        }
        pthread_mutex_lock(&j->mu);
        j->done[slot] = 0;
        j->written++;
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
    }
    return run_len > 0 ? ckpt_wb_write(st, run, run_len) : 0;
}

/* Compresses and writes shard-RRRRR.bin, then its index; ST_IOERR on any
 * write failure, with err filled. */
static int ckpt_write_shard(ckpt_writer *w, const char *tmp, char *err, size_t errcap)
{
    char bin[4300], idx[4300];
    ckpt_job j = {.w = w};
    ckpt_worker_arg args[64];
    int nth = ckpt_pool_size(w->pool), queued = 0, rc = ST_OK;
    size_t bad_chunk = 0;
    char *text = NULL;
    ckpt_wb st;
    snprintf(bin, sizeof bin, "%s/shard-%05d.bin", tmp, w->rank);
    snprintf(idx, sizeof idx, "%s/shard-%05d.json", tmp, w->rank);
    int fd = ckpt_os->open(bin, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errcap, "cannot create %.800s: %.100s", bin, strerror(errno));
        return ST_IOERR;
    }
    ckpt_wb_open(&st, fd);
    pthread_mutex_init(&j.mu, NULL);
    pthread_cond_init(&j.cv, NULL);
    j.len = calloc(w->n_slots, sizeof *j.len);
    j.done = calloc(w->n_slots, sizeof *j.done);
    j.ptr = calloc(w->n_slots, sizeof *j.ptr);
    if (!j.len || !j.done || !j.ptr || ckpt_make_chunks(&w->desc, &j.chunks, &j.n) != 0) {
        snprintf(err, errcap, "out of memory for the chunk index of %.800s", bin);
        rc = ST_SOFTWARE;
        goto out;
    }
    for (int t = 0; t < nth && (size_t)t < j.n; t++) {
        args[t] = (ckpt_worker_arg){&j, &w->ws[t]};
        if (ckpt_pool_add(w->pool, ckpt_worker, &args[t]) == 0)
            queued++;
    }
    if (j.n > 0 && queued == 0) {
        snprintf(err, errcap, "out of memory queueing compression jobs for %.800s", bin);
        rc = ST_SOFTWARE;
        goto out;
    }
    int wr = ckpt_write_chunks(w, &j, &st, &bad_chunk);
    if (wr > 0) {
        snprintf(err, errcap, "compressing chunk %zu of %.800s failed", bad_chunk, bin);
        rc = ST_SOFTWARE;
    } else if (wr < 0) {
        snprintf(err, errcap, "cannot write %.800s: %.100s", bin, strerror(errno));
        rc = ST_IOERR;
    }
    pthread_mutex_lock(&j.mu);
    j.abort = rc != ST_OK;
    pthread_cond_broadcast(&j.cv);
    pthread_mutex_unlock(&j.mu);
    ckpt_pool_wait(w->pool);
    if (rc != ST_OK)
        goto out;
    if (ckpt_wb_finish(&st) != 0) {
        snprintf(err, errcap, "cannot sync %.800s: %.100s", bin, strerror(errno));
        rc = ST_IOERR;
        goto out;
    }
    text = ckpt_shard_index_text(&w->desc, j.chunks, j.n, st.pos);
    if (!text) {
        snprintf(err, errcap, "out of memory for %.800s", idx);
        rc = ST_SOFTWARE;
        goto out;
    }
    rc = ckpt_write_file(idx, text, strlen(text), err, errcap);
out:
    ckpt_wb_close(&st);
    if (ckpt_os->close(fd) != 0 && rc == ST_OK) {
        snprintf(err, errcap, "cannot close %.800s: %.100s", bin, strerror(errno));
        rc = ST_IOERR;
    }
    if (rc != ST_OK) {
        ckpt_os->unlink(bin);
        ckpt_os->unlink(idx);
    }
    free(text);
    free(j.chunks);
    free(j.len);
    free(j.done);
    free(j.ptr);
    pthread_mutex_destroy(&j.mu);
    pthread_cond_destroy(&j.cv);
    return rc;
}

static int ckpt_do_save(ckpt_writer *w, char *err, size_t errcap)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s/step-%08" PRId64 ".tmp", w->dir, w->desc.step);
    /* A device copy into the buffer may still be running: nothing below
     * reads a byte of it before the fence. */
    if (w->fence) {
        int rc = w->fence(w->fence_arg);
        if (rc != ST_OK) {
            snprintf(err, errcap, "the snapshot copy into host memory failed (status %d)", rc);
            return rc;
        }
    }
    /* Every rank creates the directory; whoever is second finds it there. */
    if (ckpt_os->mkdir(tmp, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errcap, "cannot create %.800s: %.100s", tmp, strerror(errno));
        return ST_IOERR;
    }
    int rc = ckpt_write_shard(w, tmp, err, errcap);
    if (rc == ST_OK)
        rc = ckpt_sync_dir(tmp, err, errcap);
    if (rc != ST_OK)
        ckpt_os->rmdir(tmp);  /* removes it only once no rank's files are left in it */
    return rc;
}

static void ckpt_do_commit(ckpt_writer *w, int64_t step)
{
    char err[CKPT_ERR];
    ckpt_result res = {0};
    double t0 = util_now();
    int rc = ckpt_store_commit(w->dir, step, w->world, &res, err, sizeof err);
    if (rc != ST_OK) {
        util_fail(rc, "checkpoint for step %" PRId64 " abandoned: %s; earlier checkpoints are intact", step, err);
        pthread_mutex_lock(&w->mu);
        if (!w->err)
            w->err = rc;
        pthread_mutex_unlock(&w->mu);
        return;
    }
    ckpt_rotate(w->dir, w->o.keep_last, w->o.keep_every, step);
    ckpt_clean_tmp(w->dir, step);
    pthread_mutex_lock(&w->mu);
    if (w->last_step == step) {
        res.stall_ms = w->last_stall_ms;
        res.write_ms = w->last_write_ms + (util_now() - t0) * 1e3;
    }
    w->res = res;
    w->committed = step;
    pthread_mutex_unlock(&w->mu);
    ckpt_run_on_save(w->o.on_save, res.path, step);
}

static void *ckpt_thread(void *arg)
{
    ckpt_writer *w = arg;
    char err[CKPT_ERR];
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stop && !w->save_queued && w->n_commits == 0)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->n_commits > 0) {
            int64_t step = w->commits[0];
            memmove(w->commits, w->commits + 1, (size_t)--w->n_commits * sizeof *w->commits);
            w->committing = 1;
            pthread_mutex_unlock(&w->mu);
            ckpt_do_commit(w, step);
            pthread_mutex_lock(&w->mu);
            w->committing = 0;
            pthread_cond_broadcast(&w->cv);
            continue;
        }
        if (w->save_queued) {
            w->save_queued = 0;
            w->saving = 1;
            pthread_mutex_unlock(&w->mu);
            int rc = ckpt_do_save(w, err, sizeof err);
            if (rc != ST_OK)
                util_fail(rc, "checkpoint for step %" PRId64 " (rank %d) abandoned: %s; earlier checkpoints are intact",
                          w->desc.step, w->rank, err);
            pthread_mutex_lock(&w->mu);
            w->saving = 0;
            if (rc == ST_OK) {
                w->written = w->desc.step;
                w->last_step = w->desc.step;
                w->last_stall_ms = w->stall_ms;
                w->last_write_ms = (util_now() - w->submit_end) * 1e3;
            } else if (!w->err) {
                w->err = rc;
            }
            pthread_cond_broadcast(&w->cv);
            continue;
        }
        if (w->stop)
            break;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Page-aligned, so a device backend can page-lock it, and every page
 * written once now: a first touch costs a page fault and a page of zeroes,
 * which otherwise land in the first save's stall (measured: 759 ms against
 * ~60 ms for later saves of the same 366 MiB). */
static float *ckpt_reserve(size_t bytes)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t step = page > 0 ? (size_t)page : 4096;
    void *p = NULL;
    if (posix_memalign(&p, step, bytes ? bytes : step) != 0)
        return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);   /* fewer faults and TLB misses in the snapshot copy; a hint only */
#endif
    for (size_t off = 0; off < bytes; off += step)
        ((volatile char *)p)[off] = 0;
    return p;
}

/* threads = 0: all cores; at most 64. */
static int ckpt_writer_threads(int threads)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1)
        threads = cores < 1 ? 1 : (int)cores;
    return threads > 64 ? 64 : threads;
}

/* Raw bytes of the largest chunk that slot j of n_slots ever holds for a
 * range of span floats: chunk i goes through slot i % n_slots
 * (ckpt_make_chunks' order: each array's chunks in turn, the last of each
 * shorter); 0 for a slot no chunk reaches. */
static uint64_t ckpt_writer_slot_bytes(uint64_t per, size_t span, uint64_t n_slots, uint64_t j)
{
    if (span == 0 || per == 0)
        return 0;
    uint64_t each = (span + per - 1) / per, n = each * CKPT_N_ARRAYS, most = 0;
    uint64_t last = span - (each - 1) * per, big = each > 1 ? per : last;
    for (uint64_t i = j; i < n; i += n_slots) {
        uint64_t f = i % each == each - 1 ? last : per;
        most = f > most ? f : most;
        if (most == big)
            break;
    }
    return 4 * most;
}

uint64_t ckpt_writer_io_bytes(const ckpt_opts *o, size_t span)
{
    /* A slot's pages are those of the largest chunk it holds (output that
     * would not shrink is stored raw, so a chunk's raw size bounds it; the
     * writer touches them all at open, whatever the data compresses to).
     * Each compression thread's workspace is sized for the largest chunk. */
    uint64_t T = (uint64_t)ckpt_writer_threads(o->threads), per = o->chunk_bytes / 4;
    if (span == 0 || per == 0)
        return 0;
    uint64_t each = (span + per - 1) / per, n_slots = 2 * T + 1, slots = 0;
    uint64_t big = each > 1 ? per : span - (each - 1) * per;
    for (uint64_t j = 0; j < n_slots && o->codec != CKPT_CODEC_NONE; j++)
        slots += ckpt_writer_slot_bytes(per, span, n_slots, j);
    return slots + T * (uint64_t)ckpt_codec_ws_bytes(o->codec, o->level, (size_t)(4 * big));
}

static int ckpt_writer_buffers(ckpt_writer *w)
{
    size_t span = w->hi - w->lo;
    if (span > SIZE_MAX / (CKPT_N_ARRAYS * sizeof(float)))
        return util_fail(ST_SOFTWARE, "checkpoint writer: range of %zu floats is too large", span);
    w->buf_bytes = span * CKPT_N_ARRAYS * sizeof(float);
    if (!(w->buf = ckpt_reserve(w->buf_bytes)))
        return util_fail(ST_SOFTWARE, "out of memory for the checkpoint snapshot buffer (%zu bytes); free host "
                         "memory or run more ranks so each saves a smaller range", w->buf_bytes);
    w->n_slots = 2 * (size_t)w->o.threads + 1;
    w->slot_cap = ckpt_codec_bound(w->o.codec, w->o.chunk_bytes);
    if (w->slot_cap < w->o.chunk_bytes)
        w->slot_cap = w->o.chunk_bytes;
    w->slots = calloc(w->n_slots, sizeof *w->slots);
    w->ws = calloc((size_t)w->o.threads, sizeof *w->ws);
    if (!w->slots || !w->ws)
        return util_fail(ST_SOFTWARE, "out of memory for checkpoint buffers");
    for (size_t i = 0; i < w->n_slots; i++) {
        if (!(w->slots[i] = malloc(w->slot_cap)))
            return util_fail(ST_SOFTWARE, "out of memory for checkpoint buffers");
        /* Touched now up to the largest chunk the slot will hold (what the
         * memory plan counts): compressed output touches only its own
         * pages, so without this a rank's resident memory would follow how
         * well its range compresses (rank 0's embedding rows that no batch
         * reached are zeros) and could grow later, after the fit check. */
        if (w->o.codec != CKPT_CODEC_NONE)
            memset(w->slots[i], 0, (size_t)ckpt_writer_slot_bytes(w->o.chunk_bytes / 4, span, w->n_slots, i));
    }
    return ST_OK;
}

int ckpt_writer_open(ckpt_writer **out, const char *ckpt_dir, const ckpt_opts *o, int rank, int world, size_t lo,
                     size_t hi)
{
    ckpt_writer *w = NULL;
    char lock[4300];
    int rc = ST_OK;
    *out = NULL;
    if (world < 1 || world > CKPT_MAX_WORLD || rank < 0 || rank >= world || lo > hi || hi > CKPT_MAX_FLOATS)
        return util_fail(ST_SOFTWARE, "checkpoint writer: rank %d of world %d with range [%zu,%zu) is impossible",
                         rank, world, lo, hi);
    if (o->codec < 0 || o->codec >= CKPT_N_CODECS || o->chunk_bytes < CKPT_MIN_CHUNK || o->chunk_bytes % 4 ||
        o->chunk_bytes > CKPT_MAX_CHUNK)
        return util_fail(ST_CONFIG, "checkpoint: codec %d / chunk of %zu bytes not supported (chunk: a multiple of 4 up to 64 MiB)",
                         o->codec, o->chunk_bytes);
    if (!(w = calloc(1, sizeof *w)))
        return util_fail(ST_SOFTWARE, "out of memory opening the checkpoint writer");
    w->o = *o;
    w->rank = rank;
    w->world = world;
    w->lo = lo;
    w->hi = hi;
    w->lock_fd = -1;
    w->written = w->committed = w->last_step = -1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (util_fmt(w->dir, sizeof w->dir, "%s", ckpt_dir) < 0) {
        rc = util_fail(ST_CONFIG, "checkpoint directory path too long: %.200s", ckpt_dir);
        goto out;
    }
    if ((rc = util_mkdirs(ckpt_dir)) != ST_OK)
        goto out;
    snprintf(lock, sizeof lock, "%s/.writer-%05d.lock", ckpt_dir, rank);
    w->lock_fd = ckpt_os->open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (w->lock_fd < 0) {
        rc = util_fail(ST_IOERR, "cannot create %s: %s; is the checkpoint directory writable?", lock, strerror(errno));
        goto out;
    }
    if (flock(w->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        rc = util_fail(ST_IOERR, "another writer holds %s: two runs must not share a checkpoint directory", lock);
        goto out;
    }
    w->o.threads = ckpt_writer_threads(w->o.threads);
    if ((rc = ckpt_writer_buffers(w)) != ST_OK)
        goto out;
    if (!(w->pool = ckpt_pool_create(w->o.threads))) {
        rc = util_fail(ST_SOFTWARE, "cannot start the checkpoint compression threads");
        goto out;
    }
    if (rank == 0)
        ckpt_clean_tmp(ckpt_dir, -1);
    if (pthread_create(&w->th, NULL, ckpt_thread, w) != 0) {
        rc = util_fail(ST_SOFTWARE, "cannot start the checkpoint writer thread");
        goto out;
    }
    w->th_started = 1;
    *out = w;
    w = NULL;
out:
    ckpt_writer_close(w);
    return rc;
}

float *ckpt_writer_buffer(ckpt_writer *w, size_t *bytes)
{
    if (bytes)
        *bytes = w->buf_bytes;
    return w->buf;
}

static int ckpt_check_meta(const ckpt_writer *w, const ckpt_meta *m)
{
    char why[256];
    const ckpt_table *t = m->table;
    if (!t || m->lo != w->lo || m->hi != w->hi || m->hi > t->n_floats || m->world_size != w->world ||
        m->rank != w->rank || m->step < 0 || (m->hi > m->lo && !m->src.fill))
        return util_fail(ST_SOFTWARE, "checkpoint submit: bad meta (rank %d/%d, range [%zu,%zu) of %" PRIu64
                         " floats, writer opened for [%zu,%zu), step %" PRId64 ")", m->rank, m->world_size, m->lo,
                         m->hi, t ? t->n_floats : 0, w->lo, w->hi, m->step);
    if (t->n < 1 || t->n > CKPT_MAX_PARAMS || t->n_floats > CKPT_MAX_FLOATS ||
        ckpt_table_check(t->tensors, t->n, t->n_floats, why, sizeof why) != 0)
        return util_fail(ST_SOFTWARE, "checkpoint submit: the tensor table is unusable: %s", why);
    return ST_OK;
}

/* The desc the writer thread works from: plain copies, nothing borrowed. */
static int ckpt_describe(ckpt_writer *w, const ckpt_meta *m, ckpt_save_desc *d)
{
    const ckpt_table *t = m->table;
    *d = (ckpt_save_desc){.step = m->step, .tokens = m->tokens, .elapsed_seconds = m->elapsed_seconds,
                          .loss_scale = m->loss_scale, .lr = m->lr, .world = w->world, .rank = w->rank,
                          .model = t->model, .n_tensors = t->n, .n_floats = t->n_floats, .lo = m->lo, .hi = m->hi,
                          .codec = w->o.codec, .level = w->o.level, .chunk_bytes = w->o.chunk_bytes,
                          .loss_scaling = m->loss_scaling, .loss_scale_clean = m->loss_scale_clean};
    snprintf(d->backend, sizeof d->backend, "%s", m->backend ? m->backend : "");
    snprintf(d->precision, sizeof d->precision, "%s", m->precision ? m->precision : "");
    snprintf(d->device, sizeof d->device, "%s", m->device ? m->device : "");
    snprintf(d->libraries, sizeof d->libraries, "%s", m->libraries ? m->libraries : "");
    snprintf(d->reduce, sizeof d->reduce, "%s", m->reduce ? m->reduce : "");
    d->config_text = strdup(m->config_text ? m->config_text : "");
    d->tensors = malloc((size_t)t->n * sizeof *d->tensors);
    if (!d->config_text || !d->tensors) {
        free(d->config_text);
        free(d->tensors);
        *d = (ckpt_save_desc){0};
        return util_fail(ST_SOFTWARE, "out of memory describing the checkpoint of step %" PRId64, m->step);
    }
    memcpy(d->tensors, t->tensors, (size_t)t->n * sizeof *d->tensors);
    return ST_OK;
}

static void ckpt_desc_free(ckpt_save_desc *d)
{
    free(d->config_text);
    free(d->tensors);
    *d = (ckpt_save_desc){0};
}

int ckpt_writer_submit(ckpt_writer *w, const ckpt_meta *m, int *skipped)
{
    double t0 = util_now();
    ckpt_save_desc d;
    *skipped = 0;
    int rc = ckpt_check_meta(w, m);
    if (rc != ST_OK)
        return rc;
    pthread_mutex_lock(&w->mu);
    if (w->save_queued || w->saving) {
        if (!w->o.busy_wait) {
            pthread_mutex_unlock(&w->mu);
            *skipped = 1;
            return ST_OK;
        }
        while (w->save_queued || w->saving)
            pthread_cond_wait(&w->cv, &w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    /* The background thread touches the buffer and desc only while a save
     * is queued or running, so they are ours here. */
    if ((rc = ckpt_describe(w, m, &d)) != ST_OK)
        return rc;
    if (m->hi > m->lo && (rc = m->src.fill(m->src.arg, w->buf, m->lo, m->hi)) != ST_OK) {
        ckpt_desc_free(&d);
        return util_fail(rc, "checkpoint for step %" PRId64 " (rank %d): the snapshot copy failed; earlier "
                         "checkpoints are intact", m->step, w->rank);
    }
    ckpt_desc_free(&w->desc);
    w->desc = d;
    w->fence = m->src.fence;
    w->fence_arg = m->src.arg;
    pthread_mutex_lock(&w->mu);
    w->submit_end = util_now();
    w->stall_ms = (w->submit_end - t0) * 1e3;
    w->save_queued = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return ST_OK;
}

int64_t ckpt_writer_written(ckpt_writer *w, int *err)
{
    pthread_mutex_lock(&w->mu);
    int64_t s = w->written;
    if (err)
        *err = w->err;
    w->err = 0;
    pthread_mutex_unlock(&w->mu);
    return s;
}

int ckpt_writer_busy(ckpt_writer *w)
{
    pthread_mutex_lock(&w->mu);
    int b = w->save_queued || w->saving || w->n_commits > 0 || w->committing;
    pthread_mutex_unlock(&w->mu);
    return b;
}

int ckpt_writer_commit(ckpt_writer *w, int64_t step)
{
    int rc = ST_OK;
    if (w->rank != 0)
        return util_fail(ST_SOFTWARE, "checkpoint commit called on rank %d; only rank 0 commits", w->rank);
    pthread_mutex_lock(&w->mu);
    if (w->n_commits == CKPT_MAX_COMMITS)
        rc = util_fail(ST_SOFTWARE, "checkpoint commit queue full (step %" PRId64 ")", step);
    else
        w->commits[w->n_commits++] = step;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int64_t ckpt_writer_committed(ckpt_writer *w, ckpt_result *res)
{
    pthread_mutex_lock(&w->mu);
    int64_t s = w->committed;
    if (res)
        *res = w->res;
    pthread_mutex_unlock(&w->mu);
    return s;
}

int ckpt_writer_drain(ckpt_writer *w, double timeout_s)
{
    double end = util_now() + timeout_s;
    int rc = ST_OK;
    pthread_mutex_lock(&w->mu);
    while (w->save_queued || w->saving || w->n_commits > 0 || w->committing) {
        double left = end - util_now();
        if (left <= 0) {
            rc = ST_TEMPFAIL;
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double wake = (double)ts.tv_sec + ts.tv_nsec * 1e-9 + (left < 0.05 ? left : 0.05);
        ts.tv_sec = (time_t)wake;
        ts.tv_nsec = (long)((wake - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void ckpt_writer_stop(ckpt_writer *w)
{
    if (!w || !w->th_started)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->th, NULL);
    w->th_started = 0;
}

void ckpt_writer_close(ckpt_writer *w)
{
    if (!w)
        return;
    ckpt_writer_stop(w);
    ckpt_pool_free(w->pool);
    for (int i = 0; w->ws && i < w->o.threads; i++)
        ckpt_codec_ws_free(&w->ws[i]);
    free(w->ws);
    for (size_t i = 0; w->slots && i < w->n_slots; i++)
        free(w->slots[i]);
    free(w->slots);
    free(w->buf);
    ckpt_desc_free(&w->desc);
    if (w->lock_fd >= 0)
        ckpt_os->close(w->lock_fd);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}
