/* manifest.json: the commit record of a checkpoint. Builds the per-shard
 * index each rank writes and assembles them into the manifest at commit,
 * sealed with a checksum over its own bytes; parses a manifest from memory
 * and rejects anything inconsistent, edited or damaged; and the step-N
 * names. Layer 3 of ckpt/ (ckpt_int.h): uses codec.c and sys.c only.
 *
 * The seal (format 2): the file is one JSON object on one line whose last
 * field is "manifest_xxh3", then "\n":
 *     {...,"manifest_xxh3":"<16 lowercase hex>"}\n
 * The hex is xxh3-64 of every byte before ,"manifest_xxh3" -- the rest of
 * the file, exactly as stored. Any edit of the hashed bytes changes the hash;
 * any edit of the fixed-shape tail breaks its shape, and a manifest without
 * the tail must say format 1 (written before the seal existed). */
#include "ckpt_int.h"
#include "util/util.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- names ---- */

int ckpt_name_step(const char *name, int64_t *step)
{
    const char *p = name + 5;
    int64_t v = 0;
    int digits = 0;
    if (strncmp(name, "step-", 5) != 0)
        return -1;
    while (*p >= '0' && *p <= '9' && digits < 18) {
        v = v * 10 + (*p++ - '0');
        digits++;
    }
    if (digits < 8)
        return -1;
    *step = v;
    if (*p == 0)
        return 0;
    size_t l = strlen(p);
    return l >= 4 && strcmp(p + l - 4, ".tmp") == 0 ? 1 : -1;
}

/* ---- parsing ---- */

static int ckpt_bad(ckpt_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int ckpt_bad(ckpt_reader *r, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(r->err, sizeof r->err, "checkpoint %.400s: manifest.json: %s", r->dir, msg);
    return ST_DATA;
}

static json_object *ckpt_field(json_object *o, const char *key, json_type t)
{
    json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
        return NULL;
    return json_object_is_type(v, t) ? v : NULL;
}

static int ckpt_get_u64(ckpt_reader *r, json_object *o, const char *key, uint64_t max, uint64_t *out)
{
    json_object *v = ckpt_field(o, key, json_type_int);
    if (!v)
        return ckpt_bad(r, "field \"%s\" missing or not an integer", key);
    int64_t x = json_object_get_int64(v);
    if (x < 0 || (uint64_t)x > max)
        return ckpt_bad(r, "field \"%s\" = %" PRId64 " out of range [0, %" PRIu64 "]", key, x, max);
    *out = (uint64_t)x;
    return ST_OK;
}

static int ckpt_get_i64(ckpt_reader *r, json_object *o, const char *key, int64_t lo, int64_t hi, int64_t *out)
{
    json_object *v = ckpt_field(o, key, json_type_int);
    if (!v)
        return ckpt_bad(r, "field \"%s\" missing or not an integer", key);
    int64_t x = json_object_get_int64(v);
    if (x < lo || x > hi)
        return ckpt_bad(r, "field \"%s\" = %" PRId64 " out of range [%" PRId64 ", %" PRId64 "]", key, x, lo, hi);
    *out = x;
    return ST_OK;
}

static int ckpt_get_f64(ckpt_reader *r, json_object *o, const char *key, double *out)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v) ||
        !(json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int)))
        return ckpt_bad(r, "field \"%s\" missing or not a number", key);
    double x = json_object_get_double(v);
    if (!isfinite(x))
        return ckpt_bad(r, "field \"%s\" is not finite", key);
    *out = x;
    return ST_OK;
}

static const char *ckpt_get_str(ckpt_reader *r, json_object *o, const char *key)
{
    json_object *v = ckpt_field(o, key, json_type_string);
    if (!v)
        ckpt_bad(r, "field \"%s\" missing or not a string", key);
    return v ? json_object_get_string(v) : NULL;
}

static int ckpt_hex64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (!s || strlen(s) != 16)
        return -1;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

static int ckpt_parse_model(ckpt_reader *r, json_object *root)
{
    json_object *m = ckpt_field(root, "model", json_type_object);
    model_shape *s = &r->info.model;
    struct { const char *key; int64_t *dst; int64_t lo, hi; } dims[] = {
        {"dim", &s->dim, 1, 1 << 20},         {"n_layers", &s->n_layers, 1, 4096},
        {"n_heads", &s->n_heads, 1, 1 << 16}, {"n_kv_heads", &s->n_kv_heads, 1, 1 << 16},
        {"head_dim", &s->head_dim, 2, 1 << 16}, {"ffn_dim", &s->ffn_dim, 1, 1 << 22},
        {"vocab", &s->vocab, 1, 1 << 24},     {"seq_len", &s->seq_len, 1, 1 << 24}};
    if (!m)
        return ckpt_bad(r, "field \"model\" missing or not an object");
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (ckpt_get_i64(r, m, dims[i].key, dims[i].lo, dims[i].hi, dims[i].dst) != ST_OK)
            return ST_DATA;
    if (ckpt_get_f64(r, m, "rope_theta", &s->rope_theta) || ckpt_get_f64(r, m, "norm_eps", &s->norm_eps))
        return ST_DATA;
    /* What export writes into config.json must describe one attention layout. */
    if (s->n_heads * s->head_dim != s->dim || s->n_heads % s->n_kv_heads != 0 || s->head_dim % 2)
        return ckpt_bad(r, "model dims disagree (dim %" PRId64 ", heads %" PRId64 "/%" PRId64 ", head_dim %" PRId64 ")",
                        s->dim, s->n_heads, s->n_kv_heads, s->head_dim);
    return ST_OK;
}

static int ckpt_cmp_name(const void *a, const void *b)
{
    return strcmp((*(const ckpt_tensor *const *)a)->name, (*(const ckpt_tensor *const *)b)->name);
}

/* Names go into safetensors headers and log lines: a narrow alphabet keeps
 * both unsurprising. */
static int ckpt_name_ok(const char *s)
{
    if (!s[0])
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '.' && *s != '_' && *s != '-')
            return 0;
    return 1;
}

int ckpt_table_check(const ckpt_tensor *t, int n, uint64_t n_floats, char *err, size_t errcap)
{
    uint64_t off = 0;
    int rc = 0;
    if (n < 1 || n > CKPT_MAX_PARAMS) {
        snprintf(err, errcap, "%d tensors (1 to %d allowed)", n, CKPT_MAX_PARAMS);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const ckpt_tensor *p = &t[i];
        uint64_t d0 = (uint64_t)p->shape[0], d1 = (uint64_t)p->shape[1];
        if (!memchr(p->name, 0, sizeof p->name) || !ckpt_name_ok(p->name)) {
            snprintf(err, errcap, "tensor %d: name empty, too long or not [A-Za-z0-9._-]", i);
            return -1;
        }
        if ((p->ndim != 1 && p->ndim != 2) || p->shape[0] < 1 || p->shape[1] < 1 || (p->ndim == 1 && d1 != 1) ||
            d0 > CKPT_MAX_FLOATS || d1 > CKPT_MAX_FLOATS / d0 || d0 * d1 != p->numel) {
            snprintf(err, errcap, "tensor %d (%.96s): shape does not give its %" PRIu64 " elements", i, p->name, p->numel);
            return -1;
        }
        if (p->offset != off || p->numel > n_floats - off) {
            snprintf(err, errcap, "tensor %d (%.96s): offset %" PRIu64 " (+%" PRIu64 "), expected %" PRIu64
                     " within %" PRIu64 " floats", i, p->name, p->offset, p->numel, off, n_floats);
            return -1;
        }
        off += p->numel;
    }
    if (off != n_floats) {
        snprintf(err, errcap, "the tensors hold %" PRIu64 " floats but n_floats is %" PRIu64, off, n_floats);
        return -1;
    }
    const ckpt_tensor **by = malloc((size_t)n * sizeof *by);
    if (!by) {
        snprintf(err, errcap, "out of memory checking %d tensor names", n);
        return -1;
    }
    for (int i = 0; i < n; i++)
        by[i] = &t[i];
    qsort(by, (size_t)n, sizeof *by, ckpt_cmp_name);
    for (int i = 1; i < n && !rc; i++)
        if (strcmp(by[i - 1]->name, by[i]->name) == 0) {
            snprintf(err, errcap, "tensor name %.96s appears twice", by[i]->name);
            rc = -1;
        }
    free(by);
    return rc;
}

static int ckpt_parse_tensor(ckpt_reader *r, json_object *p, size_t i, ckpt_tensor *out)
{
    json_object *shape = ckpt_field(p, "shape", json_type_array);
    const char *name = ckpt_get_str(r, p, "name");
    uint64_t off = 0;
    size_t nd = shape ? json_object_array_length(shape) : 0;
    if (!name || !shape || ckpt_get_u64(r, p, "offset", CKPT_MAX_FLOATS, &off) != ST_OK || nd < 1 || nd > 2 ||
        util_fmt(out->name, sizeof out->name, "%s", name) < 0)
        return ckpt_bad(r, "params[%zu]: needs a name (under 96 bytes), a shape of 1 or 2 dims and an offset", i);
    out->ndim = (int)nd;
    out->shape[1] = 1;
    for (size_t d = 0; d < nd; d++) {
        json_object *x = json_object_array_get_idx(shape, d);
        int64_t v = json_object_is_type(x, json_type_int) ? json_object_get_int64(x) : 0;
        if (v < 1 || (uint64_t)v > CKPT_MAX_FLOATS)
            return ckpt_bad(r, "params[%zu] (%.96s): shape[%zu] is not a positive integer", i, name, d);
        out->shape[d] = v;
    }
    out->offset = off;
    out->numel = (uint64_t)out->shape[0] * (uint64_t)out->shape[1];
    return ST_OK;
}

/* The table must tile the flat vector exactly; which names and shapes a
 * model needs is the caller's business (resume compares it to its own). */
static int ckpt_parse_params(ckpt_reader *r, json_object *root)
{
    json_object *a = ckpt_field(root, "params", json_type_array);
    char why[256];
    if (!a)
        return ckpt_bad(r, "field \"params\" missing or not an array");
    size_t n = json_object_array_length(a);
    if (n < 1 || n > CKPT_MAX_PARAMS)
        return ckpt_bad(r, "params: %zu entries (1 to %d allowed)", n, CKPT_MAX_PARAMS);
    if (!(r->tensors = calloc(n, sizeof *r->tensors)))
        return ckpt_bad(r, "params: out of memory for %zu entries", n);
    r->n_tensors = (int)n;
    for (size_t i = 0; i < n; i++)
        if (ckpt_parse_tensor(r, json_object_array_get_idx(a, i), i, &r->tensors[i]) != ST_OK)
            return ST_DATA;
    if (ckpt_table_check(r->tensors, r->n_tensors, r->info.n_floats, why, sizeof why) != 0)
        return ckpt_bad(r, "params: %s", why);
    return ST_OK;
}

static int ckpt_parse_chunk(ckpt_reader *r, json_object *c, int si, size_t ci, ckpt_chunk *out)
{
    int64_t v[6];
    uint64_t hs = 0, hr = 0;
    if (!c || !json_object_is_type(c, json_type_array) || json_object_array_length(c) != 8)
        return ckpt_bad(r, "shard %d chunk %zu: expected [array, lo, n, offset, stored, codec, hash, hash]", si, ci);
    for (int i = 0; i < 6; i++) {
        json_object *x = json_object_array_get_idx(c, (size_t)i);
        if (!json_object_is_type(x, json_type_int) || (v[i] = json_object_get_int64(x)) < 0)
            return ckpt_bad(r, "shard %d chunk %zu: element %d is not a non-negative integer", si, ci, i);
    }
    if (ckpt_hex64(json_object_get_string(json_object_array_get_idx(c, 6)), &hs) ||
        ckpt_hex64(json_object_get_string(json_object_array_get_idx(c, 7)), &hr) ||
        !json_object_is_type(json_object_array_get_idx(c, 6), json_type_string) ||
        !json_object_is_type(json_object_array_get_idx(c, 7), json_type_string))
        return ckpt_bad(r, "shard %d chunk %zu: checksums must be 16 hex digits", si, ci);
    if (v[0] >= CKPT_N_ARRAYS || (v[5] != CKPT_CODEC_NONE && v[5] != r->info.codec))
        return ckpt_bad(r, "shard %d chunk %zu: bad array %" PRId64 " or codec %" PRId64, si, ci, v[0], v[5]);
    if (v[2] < 1 || (uint64_t)v[2] * 4 > r->chunk_bytes)
        return ckpt_bad(r, "shard %d chunk %zu: %" PRId64 " floats exceed chunk_bytes %" PRIu64, si, ci, v[2],
                        r->chunk_bytes);
    if (v[4] < 1 || (uint64_t)v[4] > ckpt_codec_bound((int)v[5], (size_t)v[2] * 4))
        return ckpt_bad(r, "shard %d chunk %zu: stored size %" PRId64 " impossible for %s of %" PRId64 " bytes",
                        si, ci, v[4], ckpt_codec_name((int)v[5]), v[2] * 4);
    *out = (ckpt_chunk){.array = (int)v[0], .lo = (uint64_t)v[1], .n = (uint64_t)v[2],
                        .off = (uint64_t)v[3], .stored = (uint64_t)v[4], .codec = (int)v[5],
                        .h_stored = hs, .h_raw = hr};
    return ST_OK;
}

static int ckpt_parse_shard(ckpt_reader *r, json_object *s, int si, uint64_t expect_lo)
{
    ckpt_shard *sh = &r->shards[si];
    uint64_t rank = 0, pos = 0;
    char want[32];
    if (!s || !json_object_is_type(s, json_type_object))
        return ckpt_bad(r, "shards[%d] is not an object", si);
    if (ckpt_get_u64(r, s, "rank", CKPT_MAX_WORLD, &rank) || ckpt_get_u64(r, s, "lo", r->info.n_floats, &sh->lo) ||
        ckpt_get_u64(r, s, "hi", r->info.n_floats, &sh->hi) ||
        ckpt_get_u64(r, s, "file_bytes", UINT64_MAX >> 1, &sh->file_bytes))
        return ST_DATA;
    const char *file = ckpt_get_str(r, s, "file");
    snprintf(want, sizeof want, "shard-%05d.bin", si);
    if (rank != (uint64_t)si || !file || strcmp(file, want) != 0)
        return ckpt_bad(r, "shards[%d]: rank/file must be %d/%s", si, si, want);
    if (sh->lo != expect_lo || sh->hi < sh->lo)
        return ckpt_bad(r, "shards[%d]: range [%" PRIu64 ",%" PRIu64 ") leaves a hole or overlaps (expected lo %" PRIu64 ")",
                        si, sh->lo, sh->hi, expect_lo);
    sh->rank = si;
    json_object *ch = ckpt_field(s, "chunks", json_type_array);
    if (!ch)
        return ckpt_bad(r, "shards[%d]: field \"chunks\" missing or not an array", si);
    size_t n = json_object_array_length(ch);
    if (n > 3 * (sh->hi - sh->lo))
        return ckpt_bad(r, "shards[%d]: %zu chunks for %" PRIu64 " floats", si, n, sh->hi - sh->lo);
    sh->chunks = calloc(n ? n : 1, sizeof *sh->chunks);
    if (!sh->chunks)
        return ckpt_bad(r, "shards[%d]: out of memory for %zu chunks", si, n);
    sh->n_chunks = n;
    /* Chunks run array by array, each array covering [lo,hi) in order, and
     * lie back to back in the file. */
    int array = 0;
    uint64_t next = sh->lo;
    if (sh->lo == sh->hi)
        array = CKPT_N_ARRAYS;
    for (size_t i = 0; i < n; i++) {
        ckpt_chunk *c = &sh->chunks[i];
        if (ckpt_parse_chunk(r, json_object_array_get_idx(ch, i), si, i, c) != ST_OK)
            return ST_DATA;
        if (array >= CKPT_N_ARRAYS || c->array != array || c->lo != next || c->n > sh->hi - c->lo)
            return ckpt_bad(r, "shard %d chunk %zu: %s [%" PRIu64 ",+%" PRIu64 ") is out of order, overlapping or past the shard",
                            si, i, ckpt_array_name(c->array), c->lo, c->n);
        if (c->off != pos)
            return ckpt_bad(r, "shard %d chunk %zu: file offset %" PRIu64 ", expected %" PRIu64, si, i, c->off, pos);
        pos += c->stored;
        next += c->n;
        if (next == sh->hi) {
            array++;
            next = sh->lo;
        }
    }
    if (array != CKPT_N_ARRAYS)
        return ckpt_bad(r, "shard %d: chunks do not cover all three arrays of [%" PRIu64 ",%" PRIu64 ")", si, sh->lo, sh->hi);
    if (pos != sh->file_bytes)
        return ckpt_bad(r, "shard %d: chunks hold %" PRIu64 " bytes but file_bytes is %" PRIu64, si, pos, sh->file_bytes);
    return ST_OK;
}

void ckpt_reader_reset(ckpt_reader *r)
{
    for (int i = 0; r->shards && i < r->n_shards; i++)
        free(r->shards[i].chunks);
    free(r->shards);
    free(r->tensors);
    free(r->info.config_text);
    r->shards = NULL;
    r->tensors = NULL;
    r->info.config_text = NULL;
    r->n_shards = r->n_tensors = 0;
}

/* A step directory's name is part of the record: a manifest copied or
 * renamed into another step's place must not pass as that step. */
static int ckpt_check_dir_step(ckpt_reader *r)
{
    const char *slash = strrchr(r->dir, '/');
    int64_t named = 0;
    if (ckpt_name_step(slash ? slash + 1 : r->dir, &named) < 0 || named == r->info.step)
        return ST_OK;
    return ckpt_bad(r, "step %" PRId64 " disagrees with the directory name (step %" PRId64 "); the manifest was "
                    "edited or moved, use another checkpoint", r->info.step, named);
}

const char *ckpt_scaling_name(int s)
{
    return s == CKPT_SCALING_FIXED ? "fixed" : s == CKPT_SCALING_DYNAMIC ? "dynamic" : "off";
}

/* Optional since the fields came after format 2: absent = no scaling. */
static int ckpt_parse_scaling(ckpt_reader *r, json_object *root)
{
    ckpt_info *in = &r->info;
    json_object *v = NULL;
    in->loss_scaling = CKPT_SCALING_OFF;
    in->loss_scale_clean = 0;
    if (!json_object_object_get_ex(root, "loss_scaling", &v))
        return ST_OK;
    const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
    if (!strcmp(s, "dynamic"))
        in->loss_scaling = CKPT_SCALING_DYNAMIC;
    else if (!strcmp(s, "fixed"))
        in->loss_scaling = CKPT_SCALING_FIXED;
    else if (strcmp(s, "off"))
        return ckpt_bad(r, "field \"loss_scaling\" is not \"off\", \"fixed\" or \"dynamic\"");
    if (in->loss_scaling == CKPT_SCALING_DYNAMIC &&
        ckpt_get_i64(r, root, "loss_scale_clean", 0, INT64_MAX / 2, &in->loss_scale_clean) != ST_OK)
        return ST_DATA;
    if (in->loss_scaling != CKPT_SCALING_OFF && !(in->loss_scale > 0))
        return ckpt_bad(r, "loss_scale %g is not positive", in->loss_scale);
    return ST_OK;
}

/* Optional strings naming what computed the state; absent = "". */
static int ckpt_parse_who(ckpt_reader *r, json_object *root)
{
    ckpt_info *in = &r->info;
    struct { const char *key; char *dst; size_t cap; } who[] = {
        {"backend", in->backend, sizeof in->backend}, {"precision", in->precision, sizeof in->precision},
        {"device", in->device, sizeof in->device}, {"libraries", in->libraries, sizeof in->libraries},
        {"reduce", in->reduce, sizeof in->reduce}};
    for (size_t k = 0; k < sizeof who / sizeof who[0]; k++) {
        json_object *v = NULL;
        who[k].dst[0] = 0;
        if (!json_object_object_get_ex(root, who[k].key, &v))
            continue;
        if (!json_object_is_type(v, json_type_string) ||
            util_fmt(who[k].dst, who[k].cap, "%s", json_object_get_string(v)) < 0)
            return ckpt_bad(r, "field \"%s\" is not a string under %zu bytes", who[k].key, who[k].cap);
        for (char *p = who[k].dst; *p; p++)
            if ((unsigned char)*p < 0x20)
                return ckpt_bad(r, "field \"%s\" holds a control character", who[k].key);
    }
    return ST_OK;
}

static int ckpt_parse_root(ckpt_reader *r, json_object *root)
{
    ckpt_info *in = &r->info;
    uint64_t u = 0;
    int64_t i64 = 0;
    const char *s;
    if (!json_object_is_type(root, json_type_object))
        return ckpt_bad(r, "not a JSON object");
    if (!(s = ckpt_get_str(r, root, "format")) || strcmp(s, "spotrain-checkpoint") != 0)
        return ckpt_bad(r, "field \"format\" is not \"spotrain-checkpoint\"");
    if (ckpt_get_i64(r, root, "format_version", 1, 1000, &i64))
        return ST_DATA;
    if (i64 > CKPT_FORMAT_VERSION)
        return ckpt_bad(r, "format_version %" PRId64 " is newer than %d (written by a later spotrain); upgrade "
                        "spotrain to read it", i64, CKPT_FORMAT_VERSION);
    if (in->unsealed && i64 != CKPT_FORMAT_UNSEALED)
        return ckpt_bad(r, "format_version %" PRId64 " but no checksum at the end of the file (truncated or "
                        "edited); use an older checkpoint", i64);
    if (!in->unsealed && i64 != CKPT_FORMAT_VERSION)
        return ckpt_bad(r, "format_version %" PRId64 " is not %d, yet the file carries a checksum", i64,
                        CKPT_FORMAT_VERSION);
    in->format_version = (int)i64;
    if (!(s = ckpt_get_str(r, root, "spotrain_version")))
        return ST_DATA;
    if (util_fmt(in->spotrain_version, sizeof in->spotrain_version, "%s", s) < 0)
        return ckpt_bad(r, "field \"spotrain_version\" too long");
    if (ckpt_get_i64(r, root, "step", 0, INT64_MAX / 2, &in->step) || ckpt_get_u64(r, root, "tokens", UINT64_MAX >> 1, &in->tokens) ||
        ckpt_get_f64(r, root, "elapsed_seconds", &in->elapsed_seconds) ||
        ckpt_get_f64(r, root, "loss_scale", &in->loss_scale) || ckpt_get_f64(r, root, "lr", &in->lr) ||
        ckpt_get_f64(r, root, "saved_at", &in->saved_at) ||
        ckpt_get_i64(r, root, "world_size", 1, CKPT_MAX_WORLD, &i64))
        return ST_DATA;
    in->world_size = (int)i64;
    if (ckpt_parse_scaling(r, root) != ST_OK || ckpt_parse_who(r, root) != ST_OK)
        return ST_DATA;
    if (ckpt_check_dir_step(r) != ST_OK)
        return ST_DATA;
    if (!(s = ckpt_get_str(r, root, "codec")))
        return ST_DATA;
    if ((in->codec = ckpt_codec_from_name(s)) < 0)
        return ckpt_bad(r, "unknown codec \"%.32s\"", s);
    if (ckpt_get_i64(r, root, "level", -131072, 22, &i64))
        return ST_DATA;
    in->level = (int)i64;
    if (ckpt_get_u64(r, root, "chunk_bytes", CKPT_MAX_CHUNK, &r->chunk_bytes))
        return ST_DATA;
    if (r->chunk_bytes < CKPT_MIN_CHUNK || r->chunk_bytes % 4)
        return ckpt_bad(r, "chunk_bytes %" PRIu64 " is not a positive multiple of 4", r->chunk_bytes);
    if (ckpt_get_u64(r, root, "n_floats", CKPT_MAX_FLOATS, &in->n_floats) ||
        ckpt_get_u64(r, root, "raw_bytes", UINT64_MAX >> 1, &in->raw_bytes) ||
        ckpt_get_u64(r, root, "stored_bytes", UINT64_MAX >> 1, &in->stored_bytes))
        return ST_DATA;
    if (in->n_floats == 0 || in->raw_bytes != in->n_floats * 4 * CKPT_N_ARRAYS)
        return ckpt_bad(r, "raw_bytes %" PRIu64 " is not 12 x n_floats (%" PRIu64 ")", in->raw_bytes, in->n_floats);
    if (ckpt_parse_model(r, root) || ckpt_parse_params(r, root))
        return ST_DATA;
    if (!(s = ckpt_get_str(r, root, "config")) || !(in->config_text = strdup(s)))
        return ST_DATA;
    json_object *sh = ckpt_field(root, "shards", json_type_array);
    if (!sh || json_object_array_length(sh) != (size_t)in->world_size)
        return ckpt_bad(r, "field \"shards\" must list world_size (%d) shards", in->world_size);
    r->shards = calloc((size_t)in->world_size, sizeof *r->shards);
    if (!r->shards)
        return ckpt_bad(r, "out of memory");
    r->n_shards = in->world_size;
    uint64_t lo = 0, stored = 0;
    for (int i = 0; i < r->n_shards; i++) {
        if (ckpt_parse_shard(r, json_object_array_get_idx(sh, (size_t)i), i, lo) != ST_OK)
            return ST_DATA;
        lo = r->shards[i].hi;
        stored += r->shards[i].file_bytes;
    }
    if (lo != in->n_floats)
        return ckpt_bad(r, "shards cover [0,%" PRIu64 ") but n_floats is %" PRIu64, lo, in->n_floats);
    if (stored != in->stored_bytes)
        return ckpt_bad(r, "shards hold %" PRIu64 " bytes but stored_bytes is %" PRIu64, stored, in->stored_bytes);
    (void)u;
    return ST_OK;
}

#define CKPT_SEAL_KEY ",\"manifest_xxh3\":\""
#define CKPT_SEAL_LEN (sizeof CKPT_SEAL_KEY - 1 + 16 + 3)   /* key, hex, "}\n */

/* 1 when text ends with a well-formed seal (hash in *h), else 0. */
static int ckpt_seal_tail(const char *text, size_t len, uint64_t *h)
{
    char hex[17];
    size_t k = sizeof CKPT_SEAL_KEY - 1;
    if (len < CKPT_SEAL_LEN + 1)
        return 0;
    const char *t = text + len - CKPT_SEAL_LEN;
    if (memcmp(t, CKPT_SEAL_KEY, k) != 0 || memcmp(t + k + 16, "\"}\n", 3) != 0)
        return 0;
    memcpy(hex, t + k, 16);
    hex[16] = 0;
    return ckpt_hex64(hex, h) == 0;
}

char *ckpt_manifest_seal(const char *body, size_t len)
{
    if (len < 2 || body[len - 1] != '}')
        return NULL;
    char *out = malloc(len - 1 + CKPT_SEAL_LEN + 1);
    if (!out)
        return NULL;
    memcpy(out, body, len - 1);
    uint64_t h = ckpt_hash(out, len - 1);
    snprintf(out + len - 1, CKPT_SEAL_LEN + 1, CKPT_SEAL_KEY "%016" PRIx64 "\"}\n", h);
    return out;
}

int ckpt_manifest_parse(ckpt_reader *r, const char *text, size_t len)
{
    json_tokener *tok = json_tokener_new_ex(64);
    json_object *root = NULL;
    int rc = ST_DATA;
    uint64_t want = 0;
    if (!tok)
        return ckpt_bad(r, "out of memory");
    if (len > ((size_t)1 << 31) || memchr(text, 0, len)) {
        rc = ckpt_bad(r, "not a JSON text (NUL byte or over 2 GiB)");
        goto out;
    }
    /* The seal first: nothing of an edited manifest is worth parsing. */
    r->info.unsealed = !ckpt_seal_tail(text, len, &want);
    if (!r->info.unsealed && ckpt_hash(text, len - CKPT_SEAL_LEN) != want) {
        rc = ckpt_bad(r, "checksum mismatch: the manifest was edited or damaged after its commit; use an "
                      "older checkpoint");
        goto out;
    }
    root = json_tokener_parse_ex(tok, text, (int)len);
    if (!root || json_tokener_get_error(tok) != json_tokener_success) {
        rc = ckpt_bad(r, "not valid JSON (%s)", json_tokener_error_desc(json_tokener_get_error(tok)));
        goto out;
    }
    for (size_t i = json_tokener_get_parse_end(tok); i < len; i++)
        if (text[i] != ' ' && text[i] != '\n' && text[i] != '\r' && text[i] != '\t') {
            rc = ckpt_bad(r, "text after the JSON object at byte %zu", i);
            goto out;
        }
    rc = ckpt_parse_root(r, root);
out:
    if (rc != ST_OK)
        ckpt_reader_reset(r);
    json_object_put(root);
    json_tokener_free(tok);
    return rc;
}

/* ---- building ---- */

static json_object *ckpt_json_u64(uint64_t v) { return json_object_new_int64((int64_t)v); }

static json_object *ckpt_json_hex(uint64_t v)
{
    char s[17];
    snprintf(s, sizeof s, "%016" PRIx64, v);
    return json_object_new_string(s);
}

static json_object *ckpt_model_json(const model_shape *s)
{
    json_object *m = json_object_new_object();
    json_object_object_add(m, "dim", json_object_new_int64(s->dim));
    json_object_object_add(m, "n_layers", json_object_new_int64(s->n_layers));
    json_object_object_add(m, "n_heads", json_object_new_int64(s->n_heads));
    json_object_object_add(m, "n_kv_heads", json_object_new_int64(s->n_kv_heads));
    json_object_object_add(m, "head_dim", json_object_new_int64(s->head_dim));
    json_object_object_add(m, "ffn_dim", json_object_new_int64(s->ffn_dim));
    json_object_object_add(m, "vocab", json_object_new_int64(s->vocab));
    json_object_object_add(m, "seq_len", json_object_new_int64(s->seq_len));
    json_object_object_add(m, "rope_theta", json_object_new_double(s->rope_theta));
    json_object_object_add(m, "norm_eps", json_object_new_double(s->norm_eps));
    return m;
}

static json_object *ckpt_params_json(const ckpt_tensor *t, int n)
{
    json_object *a = json_object_new_array_ext(n);
    for (int i = 0; i < n; i++) {
        const ckpt_tensor *p = &t[i];
        json_object *e = json_object_new_object(), *shape = json_object_new_array_ext(p->ndim);
        for (int d = 0; d < p->ndim; d++)
            json_object_array_add(shape, json_object_new_int64(p->shape[d]));
        json_object_object_add(e, "name", json_object_new_string(p->name));
        json_object_object_add(e, "shape", shape);
        json_object_object_add(e, "offset", ckpt_json_u64(p->offset));
        json_object_array_add(a, e);
    }
    return a;
}

char *ckpt_shard_index_text(const ckpt_save_desc *d, const ckpt_chunk *chunks, size_t n, uint64_t file_bytes)
{
    json_object *o = json_object_new_object(), *ch = json_object_new_array_ext((int)n);
    char file[32];
    snprintf(file, sizeof file, "shard-%05d.bin", d->rank);
    json_object_object_add(o, "rank", json_object_new_int(d->rank));
    json_object_object_add(o, "world_size", json_object_new_int(d->world));
    json_object_object_add(o, "step", json_object_new_int64(d->step));
    json_object_object_add(o, "tokens", ckpt_json_u64(d->tokens));
    json_object_object_add(o, "elapsed_seconds", json_object_new_double(d->elapsed_seconds));
    json_object_object_add(o, "loss_scale", json_object_new_double(d->loss_scale));
    json_object_object_add(o, "lr", json_object_new_double(d->lr));
    json_object_object_add(o, "loss_scaling", json_object_new_string(ckpt_scaling_name(d->loss_scaling)));
    if (d->loss_scaling == CKPT_SCALING_DYNAMIC)
        json_object_object_add(o, "loss_scale_clean", json_object_new_int64(d->loss_scale_clean));
    static const struct { const char *key; size_t off; } who[] = {
        {"backend", offsetof(ckpt_save_desc, backend)}, {"precision", offsetof(ckpt_save_desc, precision)},
        {"device", offsetof(ckpt_save_desc, device)}, {"libraries", offsetof(ckpt_save_desc, libraries)},
        {"reduce", offsetof(ckpt_save_desc, reduce)}};
    for (size_t k = 0; k < sizeof who / sizeof who[0]; k++) {
        const char *v = (const char *)d + who[k].off;
        if (v[0])
            json_object_object_add(o, who[k].key, json_object_new_string(v));
    }
    json_object_object_add(o, "codec", json_object_new_string(ckpt_codec_name(d->codec)));
    json_object_object_add(o, "level", json_object_new_int(d->level));
    json_object_object_add(o, "chunk_bytes", ckpt_json_u64(d->chunk_bytes));
    json_object_object_add(o, "n_floats", ckpt_json_u64(d->n_floats));
    json_object_object_add(o, "model", ckpt_model_json(&d->model));
    json_object_object_add(o, "params", ckpt_params_json(d->tensors, d->n_tensors));
    json_object_object_add(o, "config", json_object_new_string(d->config_text ? d->config_text : ""));
    json_object_object_add(o, "file", json_object_new_string(file));
    json_object_object_add(o, "lo", ckpt_json_u64(d->lo));
    json_object_object_add(o, "hi", ckpt_json_u64(d->hi));
    json_object_object_add(o, "file_bytes", ckpt_json_u64(file_bytes));
    for (size_t i = 0; i < n; i++) {
        const ckpt_chunk *c = &chunks[i];
        json_object *e = json_object_new_array_ext(8);
        json_object_array_add(e, json_object_new_int(c->array));
        json_object_array_add(e, ckpt_json_u64(c->lo));
        json_object_array_add(e, ckpt_json_u64(c->n));
        json_object_array_add(e, ckpt_json_u64(c->off));
        json_object_array_add(e, ckpt_json_u64(c->stored));
        json_object_array_add(e, json_object_new_int(c->codec));
        json_object_array_add(e, ckpt_json_hex(c->h_stored));
        json_object_array_add(e, ckpt_json_hex(c->h_raw));
        json_object_array_add(ch, e);
    }
    json_object_object_add(o, "chunks", ch);
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    char *out = s ? strdup(s) : NULL;
    json_object_put(o);
    return out;
}

static int ckpt_same(json_object *a, json_object *b, const char *key)
{
    json_object *x = NULL, *y = NULL;
    json_object_object_get_ex(a, key, &x);
    json_object_object_get_ex(b, key, &y);
    return x && y && strcmp(json_object_to_json_string(x), json_object_to_json_string(y)) == 0;
}

int ckpt_manifest_assemble(const char *tmp_dir, int world, char **text, char *err, size_t errcap)
{
    json_object **idx = calloc((size_t)world, sizeof *idx), *man = NULL, *shards = NULL;
    int rc = ST_DATA;
    uint64_t stored = 0;
    *text = NULL;
    if (!idx) {
        snprintf(err, errcap, "out of memory assembling %s/manifest.json", tmp_dir);
        return ST_SOFTWARE;
    }
    for (int r = 0; r < world; r++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/shard-%05d.json", tmp_dir, r);
        idx[r] = json_object_from_file(path);
        json_object *rk = ckpt_field(idx[r], "rank", json_type_int);
        if (!idx[r] || !rk || json_object_get_int64(rk) != r) {
            snprintf(err, errcap, "%s: missing or unreadable shard index (did rank %d finish?)", path, r);
            goto out;
        }
        static const char *same[] = {"world_size", "step", "codec", "level", "chunk_bytes", "n_floats", "model", "params"};
        for (size_t k = 0; r > 0 && k < sizeof same / sizeof same[0]; k++)
            if (!ckpt_same(idx[0], idx[r], same[k])) {
                snprintf(err, errcap, "%s: \"%s\" differs from rank 0's (a stale shard from another save?)", path, same[k]);
                goto out;
            }
        json_object *fb = ckpt_field(idx[r], "file_bytes", json_type_int);
        stored += fb ? (uint64_t)json_object_get_int64(fb) : 0;
    }
    json_object *nf = ckpt_field(idx[0], "n_floats", json_type_int);
    uint64_t n_floats = nf ? (uint64_t)json_object_get_int64(nf) : 0;
    man = json_object_new_object();
    json_object_object_add(man, "format", json_object_new_string("spotrain-checkpoint"));
    json_object_object_add(man, "format_version", json_object_new_int(CKPT_FORMAT_VERSION));
    json_object_object_add(man, "spotrain_version", json_object_new_string(SPOTRAIN_VERSION));
    static const char *copy[] = {"step", "tokens", "elapsed_seconds", "loss_scale", "lr", "world_size",
                                 "codec", "level", "chunk_bytes", "n_floats"};
    for (size_t k = 0; k < sizeof copy / sizeof copy[0]; k++) {
        json_object *v = NULL;
        json_object_object_get_ex(idx[0], copy[k], &v);
        json_object_object_add(man, copy[k], json_object_get(v));
    }
    /* Optional: rank 0's view (every rank computes with the same backend). */
    static const char *maybe[] = {"loss_scaling", "loss_scale_clean", "backend", "precision", "device", "libraries",
                                  "reduce"};
    for (size_t k = 0; k < sizeof maybe / sizeof maybe[0]; k++) {
        json_object *v = NULL;
        if (json_object_object_get_ex(idx[0], maybe[k], &v))
            json_object_object_add(man, maybe[k], json_object_get(v));
    }
    json_object_object_add(man, "saved_at", json_object_new_double(util_wall()));
    json_object_object_add(man, "raw_bytes", ckpt_json_u64(n_floats * 4 * CKPT_N_ARRAYS));
    json_object_object_add(man, "stored_bytes", ckpt_json_u64(stored));
    static const char *whole[] = {"model", "params", "config"};
    for (size_t k = 0; k < sizeof whole / sizeof whole[0]; k++) {
        json_object *v = NULL;
        json_object_object_get_ex(idx[0], whole[k], &v);
        json_object_object_add(man, whole[k], json_object_get(v));
    }
    shards = json_object_new_array_ext(world);
    json_object_object_add(man, "shards", shards);
    for (int r = 0; r < world; r++) {
        json_object *s = json_object_new_object();
        static const char *keys[] = {"rank", "file", "lo", "hi", "file_bytes", "chunks"};
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            json_object *v = NULL;
            json_object_object_get_ex(idx[r], keys[k], &v);
            json_object_object_add(s, keys[k], json_object_get(v));
        }
        json_object_array_add(shards, s);
    }
    const char *s = json_object_to_json_string_ext(man, JSON_C_TO_STRING_PLAIN);
    if (!s || !(*text = ckpt_manifest_seal(s, strlen(s)))) {
        snprintf(err, errcap, "out of memory assembling %s/manifest.json", tmp_dir);
        rc = ST_SOFTWARE;
        goto out;
    }
    rc = ST_OK;
out:
    for (int r = 0; r < world; r++)
        json_object_put(idx[r]);
    free(idx);
    json_object_put(man);
    return rc;
}
