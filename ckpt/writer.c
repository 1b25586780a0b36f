/* The asynchronous checkpoint writer: submit snapshots this rank's range into
 * a reused host buffer (the only stall); a background thread compresses the
 * chunks in parallel, checksums and writes them, and on rank 0 commits. */
#include "ckpt_int.h"
#include "../util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CKPT_MAX_COMMITS 64

struct ckpt_writer {
    char dir[4096];
    ckpt_opts o;
    int rank, world, lock_fd;
    pthread_t th;
    int th_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    float *buf;                  /* snapshot: params, m, v of [lo,hi) back to back */
    size_t buf_floats;
    uint8_t **slots;             /* compressed chunks waiting to be written */
    size_t n_slots, slot_cap;
    ckpt_save_desc desc;
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

static const float *ckpt_chunk_src(const ckpt_writer *w, const ckpt_chunk *c)
{
    size_t span = (size_t)(w->desc.hi - w->desc.lo);
    return w->buf + (size_t)c->array * span + (size_t)(c->lo - w->desc.lo);
}

static void *ckpt_worker(void *arg)
{
    ckpt_job *j = arg;
    ckpt_writer *w = j->w;
    ckpt_codec_ws ws = {0};
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
            bad = ckpt_codec_encode(&ws, w->desc.codec, w->desc.level, src, (size_t)c->n * 4, w->slots[slot],
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
    ckpt_codec_ws_free(&ws);
    return NULL;
}

static int ckpt_pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t k = pwrite(fd, p, n, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            if (k == 0)
                errno = ENOSPC;
            return -1;
        }
        p += k, n -= (size_t)k, off += (uint64_t)k;
    }
    return 0;
}

/* Streaming writeback. A shard written into the page cache and fsynced at
 * the end costs copy time plus disk time, one after the other, and leaves
 * gigabytes dirty (throttling every other writer on the node). Instead the
 * writer hands each written stretch to the disk at once and, a fixed lag
 * behind, waits for it and drops it from the cache; a helper thread
 * fdatasyncs every CKPT_FLUSH_BYTES settled, because under a VM (and on disks
 * with a volatile cache) the device only drains on a flush: left to the
 * final fsync that is a second, serial pass over the whole shard. */
#define CKPT_WRITE_MAX ((size_t)16 << 20)     /* largest single pwrite of contiguous raw chunks */
#define CKPT_KICK_BYTES ((uint64_t)8 << 20)   /* start writeback every this much */
#define CKPT_LAG_BYTES ((uint64_t)64 << 20)   /* in flight before the writer waits for the oldest */
#define CKPT_FLUSH_BYTES ((uint64_t)64 << 20) /* settled bytes between background flushes */

typedef struct {
    int fd, hints;               /* hints: 0 once the file system refuses sync_file_range */
    uint64_t kicked, settled;    /* writeback started below kicked; finished and dropped below settled */
    pthread_t th;
    int live, th_started, stop, flush_err;
    uint64_t flush_to, flushed;  /* the flusher's target and progress */
    pthread_mutex_t mu;
    pthread_cond_t cv;
} ckpt_stream;

static void *ckpt_flusher(void *arg)
{
    ckpt_stream *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stop && s->flush_to <= s->flushed)
            pthread_cond_wait(&s->cv, &s->mu);
        if (s->stop)
            break;
        uint64_t to = s->flush_to;
        pthread_mutex_unlock(&s->mu);
        int e = fdatasync(s->fd) != 0 && errno != EINVAL ? errno : 0;
        pthread_mutex_lock(&s->mu);
        if (e && !s->flush_err)
            s->flush_err = e;
        s->flushed = to;
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void ckpt_stream_start(ckpt_stream *s, int fd)
{
    *s = (ckpt_stream){.fd = fd, .hints = 1, .live = 1};
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->th_started = pthread_create(&s->th, NULL, ckpt_flusher, s) == 0;  /* without it, the final fsync does it all */
}

/* Stops the flusher; -1 with errno set when one of its flushes failed. */
static int ckpt_stream_stop(ckpt_stream *s)
{
    if (!s->live)
        return s->flush_err ? (errno = s->flush_err, -1) : 0;
    if (s->th_started) {
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->th, NULL);
        s->th_started = 0;
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    s->live = 0;
    errno = s->flush_err;
    return s->flush_err ? -1 : 0;
}

/* sync_file_range's and fdatasync's waits consume a write error that a later
 * fsync on the same descriptor would no longer report, so their failures are
 * write failures. */
static int ckpt_stream_advance(ckpt_stream *s, uint64_t pos, int final)
{
    if (!s->hints)
        return 0;
    if (pos - s->kicked >= CKPT_KICK_BYTES || (final && pos > s->kicked)) {
        if (sync_file_range(s->fd, (off_t)s->kicked, (off_t)(pos - s->kicked), SYNC_FILE_RANGE_WRITE) != 0)
            goto refused;
        s->kicked = pos;
    }
    uint64_t upto = final ? s->kicked : s->kicked > CKPT_LAG_BYTES ? s->kicked - CKPT_LAG_BYTES : 0;
    if (upto > s->settled && (final || upto - s->settled >= CKPT_KICK_BYTES)) {
        if (sync_file_range(s->fd, (off_t)s->settled, (off_t)(upto - s->settled),
                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) != 0)
            goto refused;
        posix_fadvise(s->fd, (off_t)s->settled, (off_t)(upto - s->settled), POSIX_FADV_DONTNEED);
        s->settled = upto;
    }
    pthread_mutex_lock(&s->mu);
    int e = s->flush_err;
    if (!final && s->th_started && s->settled >= s->flush_to + CKPT_FLUSH_BYTES) {
        s->flush_to = s->settled;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    errno = e;
    return e ? -1 : 0;
refused:
    if (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP || errno == ESPIPE) {
        s->hints = 0;            /* not supported here: the final fsync does all the work */
        return 0;
    }
    return -1;
}

/* Writes len bytes at *pos, advances it, and moves the writeback along. */
static int ckpt_stream_write(ckpt_stream *s, const uint8_t *p, size_t len, uint64_t *pos)
{
    if (ckpt_pwrite_all(s->fd, p, len, *pos) != 0)
        return -1;
    *pos += len;
    return ckpt_stream_advance(s, *pos, 0);
}

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

/* Compresses and writes shard-RRRRR.bin, then its index; ST_IOERR on any
 * write failure, with err filled. */
static int ckpt_write_shard(ckpt_writer *w, const char *tmp, char *err, size_t errcap)
{
    char bin[4300], idx[4300];
    ckpt_job j = {.w = w};
    pthread_t th[64];
    int nth = w->o.threads < 1 ? 1 : w->o.threads > 64 ? 64 : w->o.threads, started = 0, rc = ST_OK;
    uint64_t pos = 0;
    const uint8_t *run = NULL;   /* raw bytes not yet written, contiguous in the snapshot */
    size_t run_len = 0;
    char *text = NULL;
    snprintf(bin, sizeof bin, "%s/shard-%05d.bin", tmp, w->rank);
    snprintf(idx, sizeof idx, "%s/shard-%05d.json", tmp, w->rank);
    int fd = open(bin, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errcap, "cannot create %.800s: %.100s", bin, strerror(errno));
        return ST_IOERR;
    }
    ckpt_stream st;
    ckpt_stream_start(&st, fd);
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
    for (int t = 0; t < nth && (size_t)t < j.n; t++)
        if (pthread_create(&th[t], NULL, ckpt_worker, &j) == 0)
            started++;
    if (j.n > 0 && started == 0) {
        snprintf(err, errcap, "cannot start compression threads");
        rc = ST_SOFTWARE;
        goto out;
    }
    /* Raw chunks lie back to back in the snapshot, as in the file, so runs
     * of them go out as one large write; a compressed chunk is written on
     * its own because its slot is reused as soon as it is released. */
    for (size_t i = 0; i < j.n; i++) {
        size_t slot = i % w->n_slots;
        pthread_mutex_lock(&j.mu);
        while (!j.done[slot])
            pthread_cond_wait(&j.cv, &j.mu);
        int fail = j.fail;
        pthread_mutex_unlock(&j.mu);
        if (fail) {
            snprintf(err, errcap, "compressing chunk %zu of %.800s failed", i, bin);
            rc = ST_SOFTWARE;
            break;
        }
        const uint8_t *p = j.ptr[slot];
        size_t len = j.len[slot];
        int raw = p != w->slots[slot], bad = 0;
        if (run_len > 0 && (!raw || p != run + run_len || run_len + len > CKPT_WRITE_MAX)) {
            bad = ckpt_stream_write(&st, run, run_len, &pos);
            run_len = 0;
        }
        j.chunks[i].off = pos + run_len;
        if (!bad && raw) {
            run = run_len ? run : p;
            run_len += len;
        } else if (!bad) {
            bad = ckpt_stream_write(&st, p, len, &pos);
        }
        if (bad) {
            snprintf(err, errcap, "cannot write %.800s: %.100s", bin, strerror(errno));
            rc = ST_IOERR;
            break;
        }
        pthread_mutex_lock(&j.mu);
        j.done[slot] = 0;
        j.written++;
        pthread_cond_broadcast(&j.cv);
        pthread_mutex_unlock(&j.mu);
    }
    if (rc == ST_OK && run_len > 0 && ckpt_stream_write(&st, run, run_len, &pos) != 0) {
        snprintf(err, errcap, "cannot write %.800s: %.100s", bin, strerror(errno));
        rc = ST_IOERR;
    }
    pthread_mutex_lock(&j.mu);
    j.abort = rc != ST_OK;
    pthread_cond_broadcast(&j.cv);
    pthread_mutex_unlock(&j.mu);
    for (int t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    if (rc != ST_OK)
        goto out;
    if (ckpt_stream_advance(&st, pos, 1) != 0 || ckpt_stream_stop(&st) != 0 || fsync(fd) != 0) {
        snprintf(err, errcap, "cannot sync %.800s: %.100s", bin, strerror(errno));
        rc = ST_IOERR;
        goto out;
    }
    text = ckpt_shard_index_text(&w->desc, j.chunks, j.n, pos);
    if (!text) {
        snprintf(err, errcap, "out of memory for %.800s", idx);
        rc = ST_SOFTWARE;
        goto out;
    }
    rc = ckpt_write_file(idx, text, strlen(text), err, errcap);
out:
    ckpt_stream_stop(&st);
    if (close(fd) != 0 && rc == ST_OK) {
        snprintf(err, errcap, "cannot close %.800s: %.100s", bin, strerror(errno));
        rc = ST_IOERR;
    }
    if (rc != ST_OK) {
        unlink(bin);
        unlink(idx);
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
    /* Every rank creates the directory; whoever is second finds it there. */
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errcap, "cannot create %.800s: %.100s", tmp, strerror(errno));
        return ST_IOERR;
    }
    int rc = ckpt_write_shard(w, tmp, err, errcap);
    if (rc == ST_OK) {
        int fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL)) {
            snprintf(err, errcap, "cannot sync directory %.800s: %.100s", tmp, strerror(errno));
            rc = ST_IOERR;
        }
        if (fd >= 0)
            close(fd);
    }
    if (rc != ST_OK)
        rmdir(tmp);  /* removes it only once no rank's files are left in it */
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

int ckpt_writer_open(ckpt_writer **out, const char *ckpt_dir, const ckpt_opts *o, int rank, int world)
{
    ckpt_writer *w = NULL;
    char lock[4300];
    int rc = ST_OK;
    *out = NULL;
    if (world < 1 || world > CKPT_MAX_WORLD || rank < 0 || rank >= world)
        return util_fail(ST_SOFTWARE, "checkpoint writer: rank %d of world %d is impossible", rank, world);
    if (o->codec < 0 || o->codec >= CKPT_N_CODECS || o->chunk_bytes < CKPT_MIN_CHUNK || o->chunk_bytes % 4 ||
        o->chunk_bytes > CKPT_MAX_CHUNK)
        return util_fail(ST_CONFIG, "checkpoint: codec %d / chunk of %zu bytes not supported (chunk: a multiple of 4 up to 64 MiB)",
                         o->codec, o->chunk_bytes);
    if (!(w = calloc(1, sizeof *w)))
        return util_fail(ST_SOFTWARE, "out of memory opening the checkpoint writer");
    w->o = *o;
    w->rank = rank;
    w->world = world;
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
    w->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (w->lock_fd < 0) {
        rc = util_fail(ST_IOERR, "cannot create %s: %s; is the checkpoint directory writable?", lock, strerror(errno));
        goto out;
    }
    if (flock(w->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        rc = util_fail(ST_IOERR, "another writer holds %s: two runs must not share a checkpoint directory", lock);
        goto out;
    }
    if (w->o.threads < 1) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);   /* threads = 0: all cores */
        w->o.threads = cores < 1 ? 1 : cores > 64 ? 64 : (int)cores;
    }
    w->n_slots = 2 * (size_t)w->o.threads + 1;
    w->slot_cap = ckpt_codec_bound(o->codec, o->chunk_bytes);
    if (w->slot_cap < o->chunk_bytes)
        w->slot_cap = o->chunk_bytes;
    if (!(w->slots = calloc(w->n_slots, sizeof *w->slots))) {
        rc = util_fail(ST_SOFTWARE, "out of memory for checkpoint buffers");
        goto out;
    }
    for (size_t i = 0; i < w->n_slots; i++)
        if (!(w->slots[i] = malloc(w->slot_cap))) {
            rc = util_fail(ST_SOFTWARE, "out of memory for checkpoint buffers");
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

static int ckpt_check_meta(const ckpt_writer *w, const ckpt_meta *m)
{
    if (!m->layout || m->lo > m->hi || m->hi > m->layout->n_floats || m->world_size != w->world || m->rank != w->rank ||
        m->step < 0 || m->layout->n_floats != model_count_params(&m->layout->s))
        return util_fail(ST_SOFTWARE, "checkpoint submit: bad meta (rank %d/%d, range [%zu,%zu) of %zu floats, step %" PRId64 ")",
                         m->rank, m->world_size, m->lo, m->hi, m->layout ? m->layout->n_floats : 0, m->step);
    for (int a = 0; a < CKPT_N_ARRAYS; a++)
        if (m->hi > m->lo && !m->arrays[a])
            return util_fail(ST_SOFTWARE, "checkpoint submit: array %s missing", ckpt_array_name(a));
    return ST_OK;
}

int ckpt_writer_submit(ckpt_writer *w, const ckpt_meta *m)
{
    double t0 = util_now();
    int rc = ckpt_check_meta(w, m);
    if (rc != ST_OK)
        return rc;
    pthread_mutex_lock(&w->mu);
    if (w->save_queued || w->saving) {
        if (!w->o.busy_wait) {
            pthread_mutex_unlock(&w->mu);
            return 1;
        }
        while (w->save_queued || w->saving)
            pthread_cond_wait(&w->cv, &w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    /* The background thread touches the buffer and desc only while a save
     * is queued or running, so they are ours here. */
    size_t span = m->hi - m->lo, need = span * CKPT_N_ARRAYS;
    if (need > w->buf_floats) {
        free(w->buf);
        w->buf = malloc(need * sizeof(float));
        w->buf_floats = w->buf ? need : 0;
        if (!w->buf)
            return util_fail(ST_SOFTWARE, "out of memory for the checkpoint snapshot (%zu bytes)", need * 4);
    }
    char *cfg = strdup(m->config_text ? m->config_text : "");
    if (!cfg)
        return util_fail(ST_SOFTWARE, "out of memory for the checkpoint config text");
    for (int a = 0; a < CKPT_N_ARRAYS && span; a++)
        memcpy(w->buf + (size_t)a * span, m->arrays[a], span * sizeof(float));
    free(w->desc.config_text);
    w->desc = (ckpt_save_desc){.step = m->step, .tokens = m->tokens, .elapsed_seconds = m->elapsed_seconds,
                               .loss_scale = m->loss_scale, .lr = m->lr, .world = w->world, .rank = w->rank,
                               .config_text = cfg, .shape = m->layout->s, .n_floats = m->layout->n_floats,
                               .lo = m->lo, .hi = m->hi, .codec = w->o.codec, .level = w->o.level,
                               .chunk_bytes = w->o.chunk_bytes};
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

void ckpt_writer_close(ckpt_writer *w)
{
    if (!w)
        return;
    if (w->th_started) {
        pthread_mutex_lock(&w->mu);
        w->stop = 1;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->th, NULL);
    }
    for (size_t i = 0; w->slots && i < w->n_slots; i++)
        free(w->slots[i]);
    free(w->slots);
    free(w->buf);
    free(w->desc.config_text);
    if (w->lock_fd >= 0)
        close(w->lock_fd);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}
