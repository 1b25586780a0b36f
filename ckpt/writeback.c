/* The writeback stream under the shard writer: positional writes, writeback
 * started as bytes arrive and settled a fixed lag behind, a background
 * fdatasync, the final fsync. The writer only says "append these bytes". */
#include "ckpt_int.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

/* A shard written into the page cache and fsynced at the end costs copy
 * time plus disk time, one after the other, and leaves gigabytes dirty
 * (throttling every other writer on the node). Instead each written stretch
 * goes to the disk at once and, a fixed lag behind, is waited for and
 * dropped from the cache; a helper thread fdatasyncs every CKPT_FLUSH_BYTES
 * settled, because under a VM (and on disks with a volatile cache) the
 * device only drains on a flush: left to the final fsync that is a second,
 * serial pass over the whole shard. */
#define CKPT_KICK_BYTES ((uint64_t)8 << 20)   /* start writeback every this much */
#define CKPT_LAG_BYTES ((uint64_t)64 << 20)   /* in flight before the writer waits for the oldest */
#define CKPT_FLUSH_BYTES ((uint64_t)64 << 20) /* settled bytes between background flushes */

static void *ckpt_wb_flusher(void *arg)
{
    ckpt_wb *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stop && s->flush_to <= s->flushed)
            pthread_cond_wait(&s->cv, &s->mu);
        if (s->stop)
            break;
        uint64_t to = s->flush_to;
        pthread_mutex_unlock(&s->mu);
        int e = ckpt_os->fdatasync(s->fd) != 0 && errno != EINVAL ? errno : 0;
        pthread_mutex_lock(&s->mu);
        if (e && !s->flush_err)
            s->flush_err = e;
        s->flushed = to;
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

void ckpt_wb_open(ckpt_wb *s, int fd)
{
    *s = (ckpt_wb){.fd = fd, .hints = 1, .live = 1};
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->th_started = pthread_create(&s->th, NULL, ckpt_wb_flusher, s) == 0;  /* without it, the final fsync does it all */
}

void ckpt_wb_close(ckpt_wb *s)
{
    if (!s->live)
        return;
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
}

static int ckpt_wb_pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t k = ckpt_os->pwrite(fd, p, n, (off_t)off);
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

/* sync_file_range's and fdatasync's waits consume a write error that a later
 * fsync on the same descriptor would no longer report, so their failures are
 * write failures. */
static int ckpt_wb_advance(ckpt_wb *s, int final)
{
    uint64_t pos = s->pos;
    if (!s->hints)
        return 0;
    if (pos - s->kicked >= CKPT_KICK_BYTES || (final && pos > s->kicked)) {
        if (ckpt_os->sync_file_range(s->fd, (off_t)s->kicked, (off_t)(pos - s->kicked), SYNC_FILE_RANGE_WRITE) != 0)
            goto refused;
        s->kicked = pos;
    }
    uint64_t upto = final ? s->kicked : s->kicked > CKPT_LAG_BYTES ? s->kicked - CKPT_LAG_BYTES : 0;
    if (upto > s->settled && (final || upto - s->settled >= CKPT_KICK_BYTES)) {
        if (ckpt_os->sync_file_range(s->fd, (off_t)s->settled, (off_t)(upto - s->settled),
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

int ckpt_wb_write(ckpt_wb *s, const void *p, size_t len)
{
    if (ckpt_wb_pwrite_all(s->fd, p, len, s->pos) != 0)
        return -1;
    s->pos += len;
    return ckpt_wb_advance(s, 0);
}

int ckpt_wb_finish(ckpt_wb *s)
{
    if (ckpt_wb_advance(s, 1) != 0)
        return -1;
    ckpt_wb_close(s);
    if (s->flush_err) {
        errno = s->flush_err;
        return -1;
    }
    return ckpt_os->fsync(s->fd);
}
