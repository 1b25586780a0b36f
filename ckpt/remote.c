/* Remote checkpoints: the object-storage input of a reader (a step's
 * objects read as its directory would be: manifest by GET, chunks by ranged
 * GETs, sizes by HEAD), the listing of committed remote steps, and the
 * order resume tries local and remote checkpoints in. The one reader file
 * that knows s3/. Layer 7 of ckpt/ (ckpt_int.h): uses reader.c and store.c. */
#include "ckpt_int.h"
#include "s3/s3.h"
#include "util/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- the object-storage input ---- */

typedef struct {
    s3_client *c;            /* borrowed: open until the reader closes */
    char key[1100];          /* the step's key prefix, ending in '/' */
} ckpt_s3_input;

static int ckpt_s3_manifest(void *ctx, char **text, size_t *len, uint64_t *counted, char *why, size_t cap)
{
    const ckpt_s3_input *in = ctx;
    char key[sizeof in->key + 32];
    s3_object ob;
    *counted = 0;
    snprintf(key, sizeof key, "%smanifest.json", in->key);
    int rc = s3_head_object(in->c, key, &ob);
    if (rc == ST_NOINPUT) {
        snprintf(why, cap, "no manifest.json object, so not a checkpoint (never uploaded, or its upload did not "
                 "finish)");
        return ST_NOINPUT;
    }
    if (rc != ST_OK) {
        snprintf(why, cap, "%s", util_last_error());
        return rc;
    }
    if (ob.size == 0 || ob.size > (1u << 30)) {
        snprintf(why, cap, "manifest.json object is %" PRIu64 " bytes, not a manifest; use an older checkpoint",
                 ob.size);
        return ST_DATA;
    }
    char *buf = malloc((size_t)ob.size + 1);
    if (!buf) {
        snprintf(why, cap, "out of memory for manifest.json");
        return ST_SOFTWARE;
    }
    if ((rc = s3_get_range(in->c, key, 0, (size_t)ob.size, buf)) != ST_OK) {
        free(buf);
        snprintf(why, cap, "%s", util_last_error());
        return rc;
    }
    buf[ob.size] = 0;
    *counted = ob.size;
    *text = buf;
    *len = (size_t)ob.size;
    return ST_OK;
}

/* Objects need no opening: every fetch is its own request. */
static int ckpt_s3_open_shard(void *ctx, int rank, char *why, size_t cap) { return ST_OK; }

static int ckpt_s3_fetch(void *ctx, int rank, uint64_t off, size_t len, void *buf, char *why, size_t cap)
{
    const ckpt_s3_input *in = ctx;
    char key[sizeof in->key + 32];
    snprintf(key, sizeof key, "%sshard-%05d.bin", in->key, rank);
    int rc = s3_get_range(in->c, key, off, len, buf);
    if (rc == ST_NOINPUT) {
        snprintf(why, cap, "the object is missing; use an older checkpoint");
        return ST_DATA;
    }
    if (rc != ST_OK)
        snprintf(why, cap, "%s", util_last_error());
    return rc;
}

static int ckpt_s3_check_size(void *ctx, int rank, uint64_t bytes, char *why, size_t cap)
{
    const ckpt_s3_input *in = ctx;
    char key[sizeof in->key + 32];
    s3_object ob;
    snprintf(key, sizeof key, "%sshard-%05d.bin", in->key, rank);
    int rc = s3_head_object(in->c, key, &ob);
    if (rc == ST_NOINPUT) {
        snprintf(why, cap, "shard-%05d.bin: no such object (upload unfinished or deleted); use an older checkpoint",
                 rank);
        return ST_DATA;
    }
    if (rc != ST_OK) {
        snprintf(why, cap, "%s", util_last_error());
        return rc;
    }
    if (ob.size != bytes) {
        snprintf(why, cap, "shard-%05d.bin: %" PRIu64 " bytes remotely, manifest says %" PRIu64 " (truncated or "
                 "replaced); use an older checkpoint", rank, ob.size, bytes);
        return ST_DATA;
    }
    return ST_OK;
}

static void ckpt_s3_close(void *ctx) { free(ctx); }

/* A size is one HEAD, a chunk a download: a verify checks every size first. */
static const ckpt_input_ops ckpt_s3_ops = {ckpt_s3_manifest, ckpt_s3_open_shard, ckpt_s3_fetch, ckpt_s3_check_size,
                                           ckpt_s3_close, 1};

int ckpt_open_remote(ckpt_reader **out, s3_client *c, int64_t step, char *err, size_t errcap)
{
    const s3_url *u = s3_client_url(c);
    char dir[sizeof u->prefix + 128];
    ckpt_s3_input *in = NULL;
    snprintf(dir, sizeof dir, "s3://%s%s%s/step-%08" PRId64, u->bucket, u->prefix[0] ? "/" : "", u->prefix, step);
    int rc = ckpt_reader_new(out, dir, err, errcap);
    if (rc != ST_OK)
        return rc;
    ckpt_reader *r = *out;
    if (!(in = calloc(1, sizeof *in))) {
        snprintf(err, errcap, "out of memory opening %s", dir);
        rc = ST_SOFTWARE;
        goto fail;
    }
    in->c = c;
    r->in = (ckpt_input){&ckpt_s3_ops, in};
    r->threads = CKPT_REMOTE_GETS;
    r->window = CKPT_REMOTE_WINDOW;
    if (s3_ckpt_key(u, step, "", in->key, sizeof in->key) != 0) {
        snprintf(err, errcap, "checkpoint %.300s: key too long", dir);
        rc = ST_USAGE;
        goto fail;
    }
    return ckpt_reader_load(out, err, errcap);
fail:
    ckpt_close(r);
    *out = NULL;
    return rc;
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
    if (rc == ST_OK && (rc = ckpt_check_sizes(r)) != ST_OK)
        snprintf(err, errcap, "%s", r->err);
    if (r && util_fmt(path, cap, "%s", r->dir) < 0)
        rc = util_fail(ST_USAGE, "checkpoint URL %s too long", r->dir);
    ckpt_close(r);
    /* A manifest gone since the listing (rotated away) is simply not there. */
    return rc == ST_NOINPUT ? ST_DATA : rc;
}
