/* Remote checkpoints: a step's objects in S3-compatible storage read as its
 * directory would be (manifest by GET, chunks by ranged GETs, sizes by
 * HEAD), the listing of committed remote steps, and the order resume tries
 * local and remote checkpoints in. */
#include "ckpt_int.h"
#include "util/util.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ckpt_remote_fail(ckpt_reader *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int ckpt_remote_fail(ckpt_reader *r, int code, const char *fmt, ...)
{
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(r->err, sizeof r->err, "checkpoint %.300s: %s", r->dir, msg);
    return code;
}

int ckpt_s3_split(const char *url, char *run, size_t cap, int64_t *step)
{
    *step = -1;
    if (strncmp(url, "s3://", 5) != 0)
        return -1;
    size_t l = strlen(url), runlen;
    while (l > 5 && url[l - 1] == '/')
        l--;
    runlen = l;
    const char *last = url + l;
    while (last > url + 5 && last[-1] != '/')
        last--;
    /* Only a component after the bucket can name a step. */
    if (last > url + 5 && (size_t)(url + l - last) < 32) {
        char comp[32];
        int64_t s;
        memcpy(comp, last, (size_t)(url + l - last));
        comp[url + l - last] = 0;
        if (ckpt_name_step(comp, &s) == 0) {
            *step = s;
            runlen = (size_t)(last - url);
            while (runlen > 5 && url[runlen - 1] == '/')
                runlen--;
        }
    }
    if (runlen >= cap)
        return -1;
    memcpy(run, url, runlen);
    run[runlen] = 0;
    return 0;
}

int ckpt_remote_key_step(const char *rest, int64_t *step, int *manifest)
{
    const char *q = rest;
    int64_t v = 0;
    while (*q >= '0' && *q <= '9' && q - rest < 18)
        v = v * 10 + (*q++ - '0');
    if (q - rest < 8 || *q != '/' || !q[1])
        return -1;
    *step = v;
    *manifest = strcmp(q + 1, "manifest.json") == 0;
    return 0;
}

int ckpt_remote_manifest_step(const char *prefix, const char *key, int64_t *step)
{
    size_t pl = strlen(prefix);
    int manifest = 0;
    if (pl) {
        if (strncmp(key, prefix, pl) != 0 || key[pl] != '/')
            return -1;
        key += pl + 1;
    }
    if (strncmp(key, "step-", 5) != 0 || ckpt_remote_key_step(key + 5, step, &manifest) != 0 || !manifest)
        return -1;
    return 0;
}

typedef struct {
    const char *prefix;
    int64_t *v;
    int n, cap;
} ckpt_steps_acc;

static int ckpt_on_key(void *ctx, const s3_object *o)
{
    ckpt_steps_acc *a = ctx;
    int64_t s;
    if (ckpt_remote_manifest_step(a->prefix, o->key, &s) != 0)
        return 0;
    if (a->n == a->cap) {
        int64_t *nv = realloc(a->v, (size_t)(a->cap = a->cap ? 2 * a->cap : 16) * sizeof *nv);
        if (!nv)
            return ST_SOFTWARE;
        a->v = nv;
    }
    a->v[a->n++] = s;
    return 0;
}

static int ckpt_cmp_step(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int ckpt_remote_steps(s3_client *c, int64_t **steps, int *n)
{
    const s3_url *u = s3_client_url(c);
    char pre[sizeof u->prefix + 8];
    ckpt_steps_acc a = {u->prefix, NULL, 0, 0};
    *steps = NULL;
    *n = 0;
    snprintf(pre, sizeof pre, "%s%sstep-", u->prefix, u->prefix[0] ? "/" : "");
    int rc = s3_list_objects(c, pre, ckpt_on_key, &a);
    if (rc == ST_SOFTWARE)
        rc = util_fail(ST_SOFTWARE, "out of memory listing s3://%s/%s", u->bucket, pre);
    if (rc != ST_OK) {
        free(a.v);
        return rc;
    }
    if (a.n)
        qsort(a.v, (size_t)a.n, sizeof *a.v, ckpt_cmp_step);
    *steps = a.v;
    *n = a.n;
    return ST_OK;
}

int ckpt_open_remote(ckpt_reader **out, s3_client *c, int64_t step, char *err, size_t errcap)
{
    const s3_url *u = s3_client_url(c);
    char dir[sizeof u->prefix + 128];
    snprintf(dir, sizeof dir, "s3://%s%s%s/step-%08" PRId64, u->bucket, u->prefix[0] ? "/" : "", u->prefix, step);
    int rc = ckpt_reader_new(out, dir, err, errcap);
    if (rc != ST_OK)
        return rc;
    ckpt_reader *r = *out;
    r->s3 = c;
    r->threads = CKPT_REMOTE_GETS;
    r->window = CKPT_REMOTE_WINDOW;
    if (s3_ckpt_key(u, step, "", r->key, sizeof r->key) != 0) {
        snprintf(err, errcap, "checkpoint %.300s: key too long", dir);
        ckpt_close(r);
        *out = NULL;
        return ST_USAGE;
    }
    return ckpt_reader_load(out, err, errcap);
}

int ckpt_remote_manifest(ckpt_reader *r, char **text, size_t *len)
{
    char key[sizeof r->key + 32];
    s3_object ob;
    snprintf(key, sizeof key, "%smanifest.json", r->key);
    int rc = s3_head_object(r->s3, key, &ob);
    if (rc == ST_NOINPUT)
        return ckpt_remote_fail(r, ST_NOINPUT, "no manifest.json object, so not a checkpoint (never uploaded, "
                                "or its upload did not finish)");
    if (rc != ST_OK)
        return ckpt_remote_fail(r, rc, "%s", util_last_error());
    if (ob.size == 0 || ob.size > (1u << 30))
        return ckpt_remote_fail(r, ST_DATA, "manifest.json object is %" PRIu64 " bytes, not a manifest; use an "
                                "older checkpoint", ob.size);
    char *buf = malloc((size_t)ob.size + 1);
    if (!buf)
        return ckpt_remote_fail(r, ST_SOFTWARE, "out of memory for manifest.json");
    rc = s3_get_range(r->s3, key, 0, (size_t)ob.size, buf);
    if (rc != ST_OK) {
        free(buf);
        return ckpt_remote_fail(r, rc == ST_NOINPUT ? ST_NOINPUT : rc, "%s", util_last_error());
    }
    buf[ob.size] = 0;
    r->fetched += ob.size;
    *text = buf;
    *len = (size_t)ob.size;
    return ST_OK;
}

int ckpt_remote_fetch(const ckpt_reader *r, int rank, uint64_t off, size_t len, void *buf, char *why, size_t cap)
{
    char key[sizeof r->key + 32];
    snprintf(key, sizeof key, "%sshard-%05d.bin", r->key, rank);
    int rc = s3_get_range(r->s3, key, off, len, buf);
    if (rc == ST_NOINPUT) {
        snprintf(why, cap, "the object is missing; use an older checkpoint");
        return ST_DATA;
    }
    if (rc != ST_OK)
        snprintf(why, cap, "%s", util_last_error());
    return rc;
}

int ckpt_remote_sizes(ckpt_reader *r)
{
    for (int i = 0; i < r->n_shards; i++) {
        char key[sizeof r->key + 32];
        s3_object ob;
        snprintf(key, sizeof key, "%sshard-%05d.bin", r->key, r->shards[i].rank);
        int rc = s3_head_object(r->s3, key, &ob);
        if (rc == ST_NOINPUT)
            return ckpt_remote_fail(r, ST_DATA, "shard-%05d.bin: no such object (upload unfinished or deleted); "
                                    "use an older checkpoint", r->shards[i].rank);
        if (rc != ST_OK)
            return ckpt_remote_fail(r, rc, "%s", util_last_error());
        if (ob.size != r->shards[i].file_bytes)
            return ckpt_remote_fail(r, ST_DATA, "shard-%05d.bin: %" PRIu64 " bytes remotely, manifest says %" PRIu64
                                    " (truncated or replaced); use an older checkpoint",
                                    r->shards[i].rank, ob.size, r->shards[i].file_bytes);
    }
    return ST_OK;
}

int ckpt_cands_merge(const int64_t *local, int nl, const int64_t *remote, int nr, ckpt_cand **out, int *n)
{
    *n = 0;
    *out = malloc((size_t)(nl + nr + 1) * sizeof **out);
    if (!*out)
        return ST_SOFTWARE;
    int i = nl - 1, j = nr - 1, k = 0;
    while (i >= 0 || j >= 0) {
        /* Same step in both places: the local copy first, it costs no download. */
        if (j < 0 || (i >= 0 && local[i] >= remote[j]))
            (*out)[k++] = (ckpt_cand){local[i--], 0};
        else
            (*out)[k++] = (ckpt_cand){remote[j--], 1};
    }
    *n = k;
    return ST_OK;
}

int ckpt_candidates(const char *ckpt_dir, s3_client *c, ckpt_cand **out, int *n)
{
    int64_t *loc = NULL, *rem = NULL;
    int nl = 0, nr = 0;
    int rc = ckpt_list_steps(ckpt_dir, &loc, &nl);
    *out = NULL;
    *n = 0;
    if (rc == ST_NOINPUT)
        rc = ST_OK;
    else if (rc != ST_OK)
        rc = util_fail(rc, "cannot list checkpoints in %s", ckpt_dir);
    if (rc == ST_OK && c)
        rc = ckpt_remote_steps(c, &rem, &nr);
    if (rc == ST_OK && ckpt_cands_merge(loc, nl, rem, nr, out, n) != ST_OK)
        rc = util_fail(ST_SOFTWARE, "out of memory");
    free(loc);
    free(rem);
    return rc;
}

int ckpt_candidate_check(const char *ckpt_dir, s3_client *c, const ckpt_cand *k, char *path, size_t cap, char *err,
                         size_t errcap)
{
    int rc;
    if (!k->remote) {
        int unsealed = 0;
        if (util_fmt(path, cap, "%s/step-%08" PRId64, ckpt_dir, k->step) < 0)
            return util_fail(ST_USAGE, "checkpoint path under %s too long", ckpt_dir);
        if (ckpt_good_ex(ckpt_dir, k->step, ckpt_threads_all(), &unsealed, err, errcap) != ST_OK)
            return ST_DATA;
        if (unsealed)
            util_log("note: %s has a format %d manifest without a checksum, so edits to it cannot be detected; "
                     "the next save writes format %d", path, CKPT_FORMAT_UNSEALED, CKPT_FORMAT_VERSION);
        return ST_OK;
    }
    ckpt_reader *r = NULL;
    rc = ckpt_open_remote(&r, c, k->step, err, errcap);
    if (rc == ST_OK && (rc = ckpt_remote_sizes(r)) != ST_OK)
        snprintf(err, errcap, "%s", r->err);
    if (r && util_fmt(path, cap, "%s", r->dir) < 0)
        rc = util_fail(ST_USAGE, "checkpoint URL %s too long", r->dir);
    ckpt_close(r);
    /* A manifest gone since the listing (rotated away) is simply not there. */
    return rc == ST_NOINPUT ? ST_DATA : rc;
}
