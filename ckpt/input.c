/* A reader's input from local files: the files of a step directory behind
 * the ckpt_input interface (ckpt_int.h), read with pread through ckpt_os.
 * The object-storage input is remote.c's; reader.c sees only the interface.
 * Layer 4 of ckpt/ (ckpt_int.h): uses sys.c only. */
#include "ckpt_int.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char dir[4096];
    int *fd;            /* by rank: opened on first use, -1 before */
    int n_fd;
} ckpt_dir_input;

static int ckpt_dir_manifest(void *ctx, char **text, size_t *len, uint64_t *counted, char *why, size_t cap)
{
    ckpt_dir_input *d = ctx;
    char path[4200];
    struct stat st;
    *counted = 0;   /* a local manifest is not counted as read: only chunks are */
    snprintf(path, sizeof path, "%s/manifest.json", d->dir);
    if (stat(d->dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(why, cap, "no such checkpoint directory");
        return ST_NOINPUT;
    }
    int fd = ckpt_os->open(path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, cap, "manifest.json: %s (not committed, or damaged); use an older checkpoint", strerror(errno));
        return errno == ENOENT ? ST_DATA : ST_IOERR;
    }
    int rc = ST_OK;
    char *buf = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (1 << 30)) {
        snprintf(why, cap, "manifest.json is not a regular file under 1 GiB");
        rc = ST_DATA;
        goto out;
    }
    if (!(buf = malloc((size_t)st.st_size + 1))) {
        snprintf(why, cap, "out of memory for manifest.json");
        rc = ST_SOFTWARE;
        goto out;
    }
    ssize_t got = 0, n;
    while (got < st.st_size && (n = pread(fd, buf + got, (size_t)(st.st_size - got), got)) > 0)
        got += n;
    if (got != st.st_size) {
        snprintf(why, cap, "short read on manifest.json");
        rc = ST_IOERR;
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

static int ckpt_dir_open_shard(void *ctx, int rank, char *why, size_t cap)
{
    ckpt_dir_input *d = ctx;
    char path[4200];
    if (rank < 0) {
        snprintf(why, cap, "no shard %d", rank);
        return ST_SOFTWARE;
    }
    if (rank >= d->n_fd) {
        int *m = realloc(d->fd, (size_t)(rank + 1) * sizeof *m);
        if (!m) {
            snprintf(why, cap, "out of memory");
            return ST_SOFTWARE;
        }
        for (int k = d->n_fd; k <= rank; k++)
            m[k] = -1;
        d->fd = m;
        d->n_fd = rank + 1;
    }
    if (d->fd[rank] >= 0)
        return ST_OK;
    snprintf(path, sizeof path, "%s/shard-%05d.bin", d->dir, rank);
    d->fd[rank] = ckpt_os->open(path, O_RDONLY | O_CLOEXEC, 0);
    if (d->fd[rank] < 0) {
        snprintf(why, cap, "shard-%05d.bin: %s; use an older checkpoint", rank, strerror(errno));
        return ST_DATA;
    }
    return ST_OK;
}

static int ckpt_dir_fetch(void *ctx, int rank, uint64_t off, size_t len, void *buf, char *why, size_t cap)
{
    const ckpt_dir_input *d = ctx;
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(d->fd[rank], (char *)buf + got, len - got, (off_t)(off + got));
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

static int ckpt_dir_check_size(void *ctx, int rank, uint64_t bytes, char *why, size_t cap)
{
    ckpt_dir_input *d = ctx;
    struct stat fs;
    int rc = ckpt_dir_open_shard(ctx, rank, why, cap);
    if (rc != ST_OK)
        return rc;
    long long size = fstat(d->fd[rank], &fs) == 0 ? (long long)fs.st_size : -1;
    if (size < 0 || (uint64_t)size != bytes) {
        snprintf(why, cap, "shard-%05d.bin: %lld bytes on disk, manifest says %" PRIu64, rank, size, bytes);
        return ST_DATA;
    }
    return ST_OK;
}

static void ckpt_dir_close(void *ctx)
{
    ckpt_dir_input *d = ctx;
    for (int k = 0; k < d->n_fd; k++)
        if (d->fd[k] >= 0)
            ckpt_os->close(d->fd[k]);
    free(d->fd);
    free(d);
}

/* A file's size is known once its chunks are read; checking it first would
 * only cost a stat. */
static const ckpt_input_ops ckpt_dir_ops = {ckpt_dir_manifest, ckpt_dir_open_shard, ckpt_dir_fetch,
                                            ckpt_dir_check_size, ckpt_dir_close, 0};

int ckpt_input_dir(ckpt_input *in, const char *dir)
{
    ckpt_dir_input *d = calloc(1, sizeof *d);
    if (!d || util_fmt(d->dir, sizeof d->dir, "%s", dir) < 0) {
        free(d);
        return ST_SOFTWARE;
    }
    *in = (ckpt_input){&ckpt_dir_ops, d};
    return ST_OK;
}
