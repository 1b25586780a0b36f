/* The uploader: a thread per rank that copies this rank's files of a
 * committed step directory to object storage byte for byte, rank 0's
 * manifest last, and the rotation of the remote copy (manifest first). */
#include "upload.h"
#include "ckpt.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { UP_IDLE, UP_SHARDS, UP_MANIFEST, UP_QUIT };
enum { UP_BIN, UP_MANI, UP_NFILES };

struct ckpt_uploader {
    s3_client *c;
    char dir[4096];
    int rank;
    pthread_t th;
    int th_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;            /* job queued, or job finished */
    int job;                      /* UP_*: what the thread is asked to do */
    int running;                  /* a job is queued or in progress */
    int64_t step;
    int64_t keep_last, keep_every;
    int fd[UP_NFILES];            /* -1: not open */
    uint64_t size[UP_NFILES];
    int already;                  /* this rank's shard phase found the same manifest remotely */
    ckpt_upload_result res;
};

static const char *const up_names[UP_NFILES] = {"shard-%05d.bin", "manifest.json"};

static void up_close_files(ckpt_uploader *u)
{
    for (int i = 0; i < UP_NFILES; i++) {
        if (u->fd[i] >= 0)
            close(u->fd[i]);
        u->fd[i] = -1;
        u->size[i] = 0;
    }
}

static void up_name(const ckpt_uploader *u, int i, char *out, size_t cap)
{
    snprintf(out, cap, up_names[i], u->rank);
}

static int up_key(const ckpt_uploader *u, int64_t step, const char *name, char *out, size_t cap)
{
    if (s3_ckpt_key(s3_client_url(u->c), step, name, out, cap) != 0)
        return util_fail(ST_CONFIG, "object key of %s in step %" PRId64 " is too long; use a shorter prefix",
                         name, step);
    return ST_OK;
}

/* Reads a whole small file at offset 0 (a manifest: kilobytes). */
static int up_read_small(int fd, uint64_t len, char **out)
{
    char *buf = malloc(len + 1);
    size_t got = 0;
    if (!buf)
        return util_fail(ST_SOFTWARE, "upload: out of memory");
    while (got < len) {
        ssize_t k = pread(fd, buf + got, len - got, (off_t)got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            free(buf);
            return util_fail(ST_IOERR, "upload: cannot read the local manifest: %s", k ? strerror(errno) : "short");
        }
        got += (size_t)k;
    }
    buf[len] = 0;
    *out = buf;
    return ST_OK;
}

/* The same manifest bytes remotely mean the same checkpoint, complete
 * there (a manifest object is written only after every shard object): a
 * resumed run does not send it again. A different manifest under this
 * step (an earlier run's, say) is deleted first, so it never describes
 * shard objects this upload is replacing. */
static int up_check_remote(ckpt_uploader *u, const char *mkey, int *same)
{
    s3_object obj;
    char *local = NULL, *remote = NULL;
    *same = 0;
    if (u->fd[UP_MANI] < 0)
        return ST_OK;
    int rc = s3_head_object(u->c, mkey, &obj);
    if (rc == ST_NOINPUT)
        return ST_OK;
    if (rc != ST_OK)
        return rc;
    if (obj.size == u->size[UP_MANI]) {
        remote = malloc(obj.size + 1);
        rc = remote ? ST_OK : util_fail(ST_SOFTWARE, "upload: out of memory");
        if (rc == ST_OK)
            rc = s3_get_range(u->c, mkey, 0, (size_t)obj.size, remote);
        if (rc == ST_OK)
            rc = up_read_small(u->fd[UP_MANI], u->size[UP_MANI], &local);
        if (rc == ST_OK)
            *same = memcmp(local, remote, (size_t)obj.size) == 0;
    }
    if (rc == ST_OK && !*same)
        rc = s3_delete_object(u->c, mkey);
    free(local);
    free(remote);
    return rc;
}

static int up_send(ckpt_uploader *u, int i, uint64_t *bytes)
{
    char name[64], key[2200];
    up_name(u, i, name, sizeof name);
    int rc = up_key(u, u->step, name, key, sizeof key);
    if (rc == ST_OK)
        rc = s3_upload_fd(u->c, key, u->fd[i], 0, u->size[i]);
    if (rc == ST_OK)
        *bytes += u->size[i];
    return rc;
}

static int up_do_shards(ckpt_uploader *u, ckpt_upload_result *r)
{
    char mkey[2200];
    int same = 0;
    int rc = up_key(u, u->step, "manifest.json", mkey, sizeof mkey);
    if (rc == ST_OK)
        rc = up_check_remote(u, mkey, &same);
    u->already = same;
    r->already = same;
    if (rc != ST_OK || same)
        return rc;
    return up_send(u, UP_BIN, &r->bytes);
}

static int up_do_manifest(ckpt_uploader *u, ckpt_upload_result *r)
{
    int rc = ST_OK, deleted = 0;
    r->already = u->already;
    if (!u->already && (rc = up_send(u, UP_MANI, &r->bytes)) != ST_OK)
        return rc;
    /* A rotation that fails leaves extra checkpoints, never fewer: logged,
     * the upload itself stands. */
    if (ckpt_remote_rotate(u->c, u->keep_last, u->keep_every, u->step, &deleted) != ST_OK)
        util_log("remote rotation after step %" PRId64 " did not finish; it is tried again after the next upload",
                 u->step);
    return ST_OK;
}

static void *up_thread(void *arg)
{
    ckpt_uploader *u = arg;
    pthread_mutex_lock(&u->mu);
    for (;;) {
        while (u->job == UP_IDLE)
            pthread_cond_wait(&u->cv, &u->mu);
        if (u->job == UP_QUIT)
            break;
        int job = u->job;
        pthread_mutex_unlock(&u->mu);
        ckpt_upload_result r = {.step = u->step};
        double t0 = util_now();
        r.status = job == UP_SHARDS ? up_do_shards(u, &r) : up_do_manifest(u, &r);
        r.done_at = util_now();
        r.seconds = r.done_at - t0;
        if (r.status != ST_OK)
            snprintf(r.why, sizeof r.why, "%s", util_last_error());
        pthread_mutex_lock(&u->mu);
        if (job == UP_MANIFEST || r.status != ST_OK)
            up_close_files(u);
        u->res = r;
        if (u->job == job)
            u->job = UP_IDLE;
        u->running = 0;
        pthread_cond_broadcast(&u->cv);
        if (u->job == UP_QUIT)
            break;
    }
    pthread_mutex_unlock(&u->mu);
    return NULL;
}

int ckpt_uploader_open(ckpt_uploader **out, const s3_opts *o, const char *ckpt_dir, int rank)
{
    *out = NULL;
    ckpt_uploader *u = calloc(1, sizeof *u);
    if (!u)
        return util_fail(ST_SOFTWARE, "upload: out of memory");
    for (int i = 0; i < UP_NFILES; i++)
        u->fd[i] = -1;
    u->rank = rank;
    u->res.step = -1;
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    int rc = util_fmt(u->dir, sizeof u->dir, "%s", ckpt_dir) < 0 ? util_fail(ST_CONFIG, "checkpoint dir too long")
                                                                  : s3_open(&u->c, o);
    if (rc == ST_OK && pthread_create(&u->th, NULL, up_thread, u) != 0)
        rc = util_fail(ST_SOFTWARE, "upload: cannot start the uploader thread");
    if (rc != ST_OK) {
        ckpt_uploader_close(u);
        return rc;
    }
    u->th_started = 1;
    *out = u;
    return ST_OK;
}

static int up_open_file(ckpt_uploader *u, int64_t step, int i)
{
    char name[64], path[4300];
    struct stat st;
    up_name(u, i, name, sizeof name);
    snprintf(path, sizeof path, "%s/step-%08" PRId64 "/%s", u->dir, step, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? ST_NOINPUT : util_fail(ST_IOERR, "upload: cannot open %s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        close(fd);
        return util_fail(ST_IOERR, "upload: cannot stat %s: %s", path, strerror(errno));
    }
    u->fd[i] = fd;
    u->size[i] = (uint64_t)st.st_size;
    return ST_OK;
}

int ckpt_uploader_start(ckpt_uploader *u, int64_t step)
{
    int rc = ST_OK;
    pthread_mutex_lock(&u->mu);
    if (u->running) {
        pthread_mutex_unlock(&u->mu);
        return util_fail(ST_SOFTWARE, "upload of step %" PRId64 " started while step %" PRId64 " is in progress",
                         step, u->step);
    }
    up_close_files(u);
    u->step = step;
    u->already = 0;
    for (int i = 0; i < UP_NFILES && rc == ST_OK; i++) {
        rc = up_open_file(u, step, i);
        /* Only rank 0 needs the manifest; the others compare with it when
         * they can see it (a shared run_dir), else they just upload. */
        if (i == UP_MANI && u->rank != 0 && rc == ST_NOINPUT)
            rc = ST_OK;
    }
    if (rc != ST_OK) {
        up_close_files(u);
        u->res = (ckpt_upload_result){.step = step, .status = rc == ST_NOINPUT ? ST_OK : rc,
                                      .gone = rc == ST_NOINPUT, .done_at = util_now()};
        if (rc != ST_NOINPUT)
            snprintf(u->res.why, sizeof u->res.why, "%s", util_last_error());
        pthread_mutex_unlock(&u->mu);
        return ST_OK;
    }
    u->job = UP_SHARDS;
    u->running = 1;
    pthread_cond_broadcast(&u->cv);
    pthread_mutex_unlock(&u->mu);
    return ST_OK;
}

int ckpt_uploader_finish(ckpt_uploader *u, int64_t step, int64_t keep_last, int64_t keep_every)
{
    pthread_mutex_lock(&u->mu);
    int bad = u->running || u->step != step || u->fd[UP_MANI] < 0;
    if (!bad) {
        u->keep_last = keep_last;
        u->keep_every = keep_every;
        u->job = UP_MANIFEST;
        u->running = 1;
        pthread_cond_broadcast(&u->cv);
    }
    pthread_mutex_unlock(&u->mu);
    return bad ? util_fail(ST_SOFTWARE, "manifest upload of step %" PRId64 " without its shard phase", step) : ST_OK;
}

int ckpt_uploader_busy(ckpt_uploader *u)
{
    pthread_mutex_lock(&u->mu);
    int b = u->running;
    pthread_mutex_unlock(&u->mu);
    return b;
}

int ckpt_uploader_wait(ckpt_uploader *u, double timeout_s)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double end = (double)ts.tv_sec + ts.tv_nsec / 1e9 + (timeout_s > 0 ? timeout_s : 0);
    if (end > 4e9)
        end = 4e9;
    ts.tv_sec = (time_t)end;
    ts.tv_nsec = (long)((end - (double)ts.tv_sec) * 1e9);
    pthread_mutex_lock(&u->mu);
    int e = 0;
    while (u->running && e != ETIMEDOUT)
        e = pthread_cond_timedwait(&u->cv, &u->mu, &ts);
    int rc = u->running ? ST_TEMPFAIL : ST_OK;
    pthread_mutex_unlock(&u->mu);
    return rc;
}

void ckpt_uploader_result(ckpt_uploader *u, ckpt_upload_result *r)
{
    pthread_mutex_lock(&u->mu);
    *r = u->res;
    pthread_mutex_unlock(&u->mu);
}

void ckpt_uploader_cancel(ckpt_uploader *u)
{
    if (u && u->c)
        s3_cancel(u->c);
}

void ckpt_uploader_close(ckpt_uploader *u)
{
    if (!u)
        return;
    if (u->th_started) {
        ckpt_uploader_cancel(u);
        pthread_mutex_lock(&u->mu);
        u->job = UP_QUIT;
        pthread_cond_broadcast(&u->cv);
        pthread_mutex_unlock(&u->mu);
        pthread_join(u->th, NULL);
    }
    up_close_files(u);
    s3_close(u->c);
    pthread_mutex_destroy(&u->mu);
    pthread_cond_destroy(&u->cv);
    free(u);
}

void ckpt_uploader_url(const ckpt_uploader *u, int64_t step, char *out, size_t cap)
{
    char key[2200] = "";
    const s3_url *url = s3_client_url(u->c);
    s3_ckpt_key(url, step, "", key, sizeof key);
    snprintf(out, cap, "s3://%s/%s", url->bucket, key);
}

/* --- remote rotation ---------------------------------------------------- */

typedef struct {
    int64_t step;
    int manifest;
    char *key;
} up_obj;

typedef struct {
    size_t plen;                  /* length of the listed prefix ("PREFIX/step-") */
    up_obj *v;
    int n, cap;
} up_listing;

void ckpt_remote_plan(const int64_t *steps, const int *complete, int n, int64_t keep_last, int64_t keep_every,
                      int64_t fresh, char *drop)
{
    int seen = 0;
    for (int i = n - 1; i >= 0; i--) {
        int64_t s = steps[i];
        int keep = s >= fresh;   /* never the new one, nor anything newer than it */
        if (complete[i]) {
            seen++;
            keep = keep || seen <= keep_last || (keep_every > 0 && s % keep_every == 0);
        }
        drop[i] = keep_last > 0 && !keep;
    }
}

static int up_collect(void *ctx, const s3_object *o)
{
    up_listing *l = ctx;
    int64_t s;
    int manifest;
    if (strlen(o->key) < l->plen || ckpt_remote_key_step(o->key + l->plen, &s, &manifest) != 0)
        return 0;   /* not an object of a step directory: not ours to touch */
    if (l->n == l->cap) {
        int nc = l->cap ? l->cap * 2 : 64;
        up_obj *nv = realloc(l->v, (size_t)nc * sizeof *nv);
        if (!nv)
            return util_fail(ST_SOFTWARE, "remote rotation: out of memory");
        l->v = nv;
        l->cap = nc;
    }
    char *k = strdup(o->key);
    if (!k)
        return util_fail(ST_SOFTWARE, "remote rotation: out of memory");
    l->v[l->n++] = (up_obj){s, manifest, k};
    return 0;
}

static int up_cmp_step(const void *a, const void *b)
{
    const up_obj *x = a, *y = b;
    if (x->step != y->step)
        return x->step < y->step ? -1 : 1;
    return y->manifest - x->manifest;   /* within a step, the manifest first */
}

int ckpt_remote_rotate(s3_client *c, int64_t keep_last, int64_t keep_every, int64_t fresh, int *deleted)
{
    const s3_url *url = s3_client_url(c);
    char prefix[1100];
    up_listing l = {0};
    int64_t *steps = NULL;
    int *complete = NULL, n = 0, rc = ST_OK;
    char *drop = NULL;
    *deleted = 0;
    if (keep_last <= 0)
        return ST_OK;
    snprintf(prefix, sizeof prefix, "%s%sstep-", url->prefix, url->prefix[0] ? "/" : "");
    l.plen = strlen(prefix);
    if ((rc = s3_list_objects(c, prefix, up_collect, &l)) != ST_OK || l.n == 0)
        goto out;
    qsort(l.v, (size_t)l.n, sizeof *l.v, up_cmp_step);
    steps = malloc((size_t)l.n * sizeof *steps);
    complete = malloc((size_t)l.n * sizeof *complete);
    drop = malloc((size_t)l.n);
    if (!steps || !complete || !drop) {
        rc = util_fail(ST_SOFTWARE, "remote rotation: out of memory");
        goto out;
    }
    for (int i = 0; i < l.n; i++) {
        if (n == 0 || steps[n - 1] != l.v[i].step) {
            steps[n] = l.v[i].step;
            complete[n++] = l.v[i].manifest;   /* sorted: a step's manifest comes first */
        }
    }
    ckpt_remote_plan(steps, complete, n, keep_last, keep_every, fresh, drop);
    /* Objects in order, a step's manifest first: from its deletion on, no
     * listing shows the step complete. */
    for (int i = 0, k = 0; i < l.n && rc == ST_OK; i++) {
        while (steps[k] != l.v[i].step)
            k++;
        if (!drop[k])
            continue;
        rc = s3_delete_object(c, l.v[i].key);
        if (rc == ST_OK && l.v[i].manifest)
            (*deleted)++;
    }
out:
    for (int i = 0; i < l.n; i++)
        free(l.v[i].key);
    free(l.v);
    free(steps);
    free(complete);
    free(drop);
    return rc;
}
