/* Hugging Face model directories in: config.json -> model_shape, safetensors
 * headers and the shard index parsed and checked, tensors read with pread
 * in bounded pieces and converted to fp32 for a sink (the backend's load). */
#include "hf.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HF_PIECE (1u << 20)            /* floats per sink call */
#define HF_MAX_HEADER (100u << 20)     /* the safetensors spec's limit */
#define HF_MAX_FILES 4096

static json_object *hf_parse_json(const char *name, const char *text, size_t len, int *rc)
{
    json_tokener *jt = json_tokener_new();
    json_object *o = NULL;
    if (!jt) {
        *rc = util_fail(ST_SOFTWARE, "out of memory");
        return NULL;
    }
    if (len < INT32_MAX)
        o = json_tokener_parse_ex(jt, text, (int)len);
    if (!o || !json_object_is_type(o, json_type_object)) {
        *rc = util_fail(ST_DATA, "%s: not a JSON object (%s)", name,
                        json_tokener_error_desc(json_tokener_get_error(jt)));
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(jt);
    return o;
}

/* --- config.json ----------------------------------------------------------- */

static int hf_int(json_object *o, const char *key, int64_t *out, int required, const char *path)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) {
        if (required)
            return util_fail(ST_DATA, "%s: no %s; is it a Llama-architecture config.json?", path, key);
        return ST_OK;
    }
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) <= 0 ||
        json_object_get_int64(v) > (1LL << 40))
        return util_fail(ST_DATA, "%s: %s is not a positive integer", path, key);
    *out = json_object_get_int64(v);
    return ST_OK;
}

/* A token id: an integer, or a list's first (eos_token_id may list several). */
static int64_t hf_token_id(json_object *o, const char *key)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v))
        return -1;
    if (json_object_is_type(v, json_type_array) && json_object_array_length(v) > 0)
        v = json_object_array_get_idx(v, 0);
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0 ||
        json_object_get_int64(v) > (1LL << 30))
        return -1;
    return json_object_get_int64(v);
}

int hf_read_config(const char *dir, model_shape *s, hf_meta *m)
{
    char path[4200], *text = NULL;
    size_t len = 0;
    int rc;
    json_object *o = NULL, *v;
    memset(s, 0, sizeof *s);
    m->bos = m->eos = -1;
    if (util_fmt(path, sizeof path, "%s/config.json", dir) < 0)
        return util_fail(ST_CONFIG, "model.init_from path too long: %s", dir);
    if ((rc = util_read_file(path, &text, &len)) != ST_OK)
        return rc;
    o = hf_parse_json(path, text, len, &rc);
    if (!o)
        goto out;
    m->bos = hf_token_id(o, "bos_token_id");
    m->eos = hf_token_id(o, "eos_token_id");
    const char *mt = json_object_object_get_ex(o, "model_type", &v) ? json_object_get_string(v) : NULL;
    if (mt && strcmp(mt, "llama")) {
        rc = util_fail(ST_CONFIG, "%s: model_type %s is not supported (spotrain trains the Llama "
                       "architecture: model_type llama)", path, mt);
        goto out;
    }
    static const char *refuse_true[] = {"tie_word_embeddings", "attention_bias", "mlp_bias"};
    for (int i = 0; i < 3; i++)
        if (json_object_object_get_ex(o, refuse_true[i], &v) && json_object_get_boolean(v)) {
            rc = util_fail(ST_CONFIG, "%s: %s = true is not supported by spotrain's model", path, refuse_true[i]);
            goto out;
        }
    if (json_object_object_get_ex(o, "rope_scaling", &v) && v) {
        rc = util_fail(ST_CONFIG, "%s: rope_scaling is not supported by spotrain's model (plain RoPE only)", path);
        goto out;
    }
    if (json_object_object_get_ex(o, "hidden_act", &v) && strcmp(json_object_get_string(v), "silu")) {
        rc = util_fail(ST_CONFIG, "%s: hidden_act %s is not supported (SwiGLU with silu only)", path,
                       json_object_get_string(v));
        goto out;
    }
    if ((rc = hf_int(o, "hidden_size", &s->dim, 1, path)) || (rc = hf_int(o, "intermediate_size", &s->ffn_dim, 1, path)) ||
        (rc = hf_int(o, "num_hidden_layers", &s->n_layers, 1, path)) ||
        (rc = hf_int(o, "num_attention_heads", &s->n_heads, 1, path)) ||
        (rc = hf_int(o, "vocab_size", &s->vocab, 1, path)))
        goto out;
    s->n_kv_heads = s->n_heads;
    s->seq_len = 4096;
    if ((rc = hf_int(o, "num_key_value_heads", &s->n_kv_heads, 0, path)) ||
        (rc = hf_int(o, "max_position_embeddings", &s->seq_len, 0, path)))
        goto out;
    int64_t hd = 0;
    if ((rc = hf_int(o, "head_dim", &hd, 0, path)))
        goto out;
    if (s->dim % s->n_heads || (hd && hd != s->dim / s->n_heads)) {
        rc = util_fail(ST_CONFIG, "%s: head_dim must be hidden_size / num_attention_heads (%lld / %lld)", path,
                       (long long)s->dim, (long long)s->n_heads);
        goto out;
    }
    s->head_dim = s->dim / s->n_heads;
    if (s->n_heads % s->n_kv_heads) {
        rc = util_fail(ST_CONFIG, "%s: num_attention_heads (%lld) must be a multiple of num_key_value_heads (%lld)",
                       path, (long long)s->n_heads, (long long)s->n_kv_heads);
        goto out;
    }
    if (s->head_dim % 2) {
        rc = util_fail(ST_CONFIG, "%s: the head dimension hidden_size / num_attention_heads = %lld must be even "
                       "for RoPE", path, (long long)s->head_dim);
        goto out;
    }
    s->rope_theta = json_object_object_get_ex(o, "rope_theta", &v) ? json_object_get_double(v) : 10000.0;
    s->norm_eps = json_object_object_get_ex(o, "rms_norm_eps", &v) ? json_object_get_double(v) : 1e-6;
    if (!(s->rope_theta >= 1) || !(s->norm_eps > 0 && s->norm_eps < 1))
        rc = util_fail(ST_DATA, "%s: rope_theta or rms_norm_eps out of range", path);
out:
    json_object_put(o);
    free(text);
    return rc;
}

/* --- safetensors ------------------------------------------------------------ */

static int hf_dtype(const char *s)
{
    return !strcmp(s, "F32") ? HF_F32 : !strcmp(s, "BF16") ? HF_BF16 : !strcmp(s, "F16") ? HF_F16 : -1;
}

static int hf_cmp_begin(const void *a, const void *b)
{
    const hf_tensor *x = *(const hf_tensor *const *)a, *y = *(const hf_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

int hf_st_parse(const char *name, const char *hdr, size_t hlen, uint64_t data_len, hf_tensor **t, int *n)
{
    int rc = ST_OK, first = *n;
    json_object *o = hf_parse_json(name, hdr, hlen, &rc);
    if (!o)
        return rc;
    json_object_object_foreach(o, key, val)
    {
        if (!strcmp(key, "__metadata__"))
            continue;
        json_object *dt, *shape, *offs;
        if (!json_object_is_type(val, json_type_object) || !json_object_object_get_ex(val, "dtype", &dt) ||
            !json_object_is_type(dt, json_type_string) || !json_object_object_get_ex(val, "shape", &shape) ||
            !json_object_is_type(shape, json_type_array) || !json_object_object_get_ex(val, "data_offsets", &offs) ||
            !json_object_is_type(offs, json_type_array) || json_object_array_length(offs) != 2) {
            rc = util_fail(ST_DATA, "%s: tensor %.100s lacks dtype, shape or data_offsets", name, key);
            break;
        }
        if (strlen(key) >= sizeof((*t)->name)) {
            rc = util_fail(ST_DATA, "%s: tensor name %.100s... is too long", name, key);
            break;
        }
        hf_tensor *nt = realloc(*t, (size_t)(*n + 1) * sizeof *nt);
        if (!nt) {
            rc = util_fail(ST_SOFTWARE, "out of memory");
            break;
        }
        *t = nt;
        hf_tensor *x = &nt[*n];
        memset(x, 0, sizeof *x);
        strcpy(x->name, key);
        x->dtype = hf_dtype(json_object_get_string(dt));
        if (x->dtype < 0) {
            rc = util_fail(ST_CONFIG, "%s: tensor %s has dtype %s; spotrain reads F32, BF16 and F16", name, key,
                           json_object_get_string(dt));
            break;
        }
        size_t nd = json_object_array_length(shape);
        if (nd > 8) {
            rc = util_fail(ST_DATA, "%s: tensor %s has %zu dimensions", name, key, nd);
            break;
        }
        x->ndim = (int)nd;
        uint64_t numel = 1;
        int bad = 0;
        for (size_t d = 0; d < nd; d++) {
            json_object *e = json_object_array_get_idx(shape, d);
            int64_t v = json_object_is_type(e, json_type_int) ? json_object_get_int64(e) : -1;
            if (v < 0 || v > (1LL << 40) || (v && numel > (UINT64_MAX >> 4) / (uint64_t)v))
                bad = 1;
            else
                numel *= (uint64_t)v;
            x->shape[d] = v;
        }
        json_object *b0 = json_object_array_get_idx(offs, 0), *b1 = json_object_array_get_idx(offs, 1);
        int64_t ob = json_object_is_type(b0, json_type_int) ? json_object_get_int64(b0) : -1;
        int64_t oe = json_object_is_type(b1, json_type_int) ? json_object_get_int64(b1) : -1;
        uint64_t esize = x->dtype == HF_F32 ? 4 : 2;
        if (bad || ob < 0 || oe < ob || (uint64_t)oe > data_len || (uint64_t)(oe - ob) != numel * esize) {
            rc = util_fail(ST_DATA, "%s: tensor %s: shape, dtype and data_offsets [%lld, %lld] disagree or run past "
                           "the %llu data bytes", name, key, (long long)ob, (long long)oe, (unsigned long long)data_len);
            break;
        }
        x->begin = (uint64_t)ob;
        x->end = (uint64_t)oe;
        (*n)++;
    }
    /* Tensors must not overlap (the spec also forbids holes; we only read). */
    if (rc == ST_OK && *n - first > 1) {
        int k = *n - first;
        hf_tensor **by = malloc((size_t)k * sizeof *by);
        if (!by) {
            rc = util_fail(ST_SOFTWARE, "out of memory");
        } else {
            for (int i = 0; i < k; i++)
                by[i] = &(*t)[first + i];
            qsort(by, (size_t)k, sizeof *by, hf_cmp_begin);
            for (int i = 1; i < k && rc == ST_OK; i++)
                if (by[i]->begin < by[i - 1]->end)
                    rc = util_fail(ST_DATA, "%s: tensors %s and %s overlap", name, by[i - 1]->name, by[i]->name);
            free(by);
        }
    }
    json_object_put(o);
    return rc;
}

void hf_index_free(char **tensors, char **files, int n)
{
    for (int i = 0; i < n; i++) {
        if (tensors)
            free(tensors[i]);
        if (files)
            free(files[i]);
    }
    free(tensors);
    free(files);
}

int hf_index_parse(const char *name, const char *json, size_t len, char ***tensors, char ***files, int *n)
{
    int rc = ST_OK;
    json_object *wm;
    *tensors = NULL, *files = NULL, *n = 0;
    json_object *o = hf_parse_json(name, json, len, &rc);
    if (!o)
        return rc;
    if (!json_object_object_get_ex(o, "weight_map", &wm) || !json_object_is_type(wm, json_type_object)) {
        json_object_put(o);
        return util_fail(ST_DATA, "%s: no weight_map object", name);
    }
    int cap = json_object_object_length(wm);
    *tensors = calloc((size_t)cap + 1, sizeof **tensors);
    *files = calloc((size_t)cap + 1, sizeof **files);
    if (!*tensors || !*files)
        rc = util_fail(ST_SOFTWARE, "out of memory");
    json_object_object_foreach(wm, key, val)
    {
        if (rc != ST_OK)
            break;
        const char *f = json_object_is_type(val, json_type_string) ? json_object_get_string(val) : NULL;
        if (!f || !*f || strchr(f, '/') || !strcmp(f, ".") || !strcmp(f, "..") ||
            (size_t)json_object_get_string_len(val) != strlen(f)) {
            rc = util_fail(ST_DATA, "%s: weight_map[%.100s] is not a file name in the same directory", name, key);
            break;
        }
        (*tensors)[*n] = strdup(key);
        (*files)[*n] = strdup(f);
        if (!(*tensors)[*n] || !(*files)[*n])
            rc = util_fail(ST_SOFTWARE, "out of memory");
        (*n)++;
    }
    json_object_put(o);
    if (rc != ST_OK) {
        hf_index_free(*tensors, *files, *n);
        *tensors = NULL, *files = NULL, *n = 0;
    }
    return rc;
}

/* --- loading ---------------------------------------------------------------- */

typedef struct {
    char **files;
    int nfiles;
    int *fds;
    uint64_t *data_start;   /* 8 + header length */
    hf_tensor *t;
    int nt;
    char **itens, **ifiles;   /* the index's weight_map, when the index is read */
    int nidx;
    char which[160];          /* what was read, for the caller to say */
} hf_dir;

static int hf_open_file(const char *dir, hf_dir *h, int fi)
{
    char path[4300], *hdr = NULL;
    unsigned char lenb[8];
    struct stat st;
    int rc = ST_OK;
    snprintf(path, sizeof path, "%s/%s", dir, h->files[fi]);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return util_fail(errno == ENOENT ? ST_NOINPUT : ST_IOERR, "cannot open %s: %s", path, strerror(errno));
    h->fds[fi] = fd;
    if (fstat(fd, &st) != 0 || pread(fd, lenb, 8, 0) != 8)
        return util_fail(ST_DATA, "%s: shorter than a safetensors header", path);
    uint64_t hl = 0;
    for (int b = 7; b >= 0; b--)
        hl = hl << 8 | lenb[b];
    if (hl > HF_MAX_HEADER || hl + 8 > (uint64_t)st.st_size)
        return util_fail(ST_DATA, "%s: header length %llu is not plausible for a %lld-byte safetensors file", path,
                         (unsigned long long)hl, (long long)st.st_size);
    if (!(hdr = malloc(hl + 1)))
        return util_fail(ST_SOFTWARE, "out of memory");
    if (pread(fd, hdr, hl, 8) != (ssize_t)hl) {
        free(hdr);
        return util_fail(ST_IOERR, "cannot read %s: %s", path, strerror(errno));
    }
    hdr[hl] = 0;
    h->data_start[fi] = 8 + hl;
    int before = h->nt;
    rc = hf_st_parse(path, hdr, hl, (uint64_t)st.st_size - 8 - hl, &h->t, &h->nt);
    for (int i = before; i < h->nt; i++)
        h->t[i].file = fi;
    free(hdr);
    return rc;
}

static const hf_tensor *hf_find(const hf_dir *h, const char *name)
{
    for (int i = 0; i < h->nt; i++)
        if (!strcmp(h->t[i].name, name))
            return &h->t[i];
    return NULL;
}

static float hf_half(uint16_t x)
{
    uint32_t sign = (uint32_t)(x >> 15) << 31, exp = (x >> 10) & 31, man = x & 1023, u;
    if (exp == 31) {
        u = sign | 0x7F800000u | man << 13;
    } else if (exp) {
        u = sign | (exp + 112) << 23 | man << 13;
    } else if (!man) {
        u = sign;
    } else {
        /* subnormal: renormalise */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 1024));
        u = sign | (uint32_t)(112 - e) << 23 | (man & 1023) << 13;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int hf_stream(const char *dir, const hf_dir *h, const model_layout *L,
                     int (*sink)(void *, size_t, size_t, const float *), void *arg)
{
    float *buf = malloc(HF_PIECE * sizeof *buf);
    uint16_t *raw = malloc(HF_PIECE * sizeof *raw);
    int rc = !buf || !raw ? util_fail(ST_SOFTWARE, "out of memory") : ST_OK;
    for (int i = 0; i < L->n_params && rc == ST_OK; i++) {
        const model_param *p = &L->params[i];
        const hf_tensor *x = hf_find(h, p->name);
        int fd = h->fds[x->file];
        for (size_t done = 0; done < p->numel && rc == ST_OK;) {
            size_t n = p->numel - done < HF_PIECE ? p->numel - done : HF_PIECE;
            size_t es = x->dtype == HF_F32 ? 4 : 2;
            void *dst = x->dtype == HF_F32 ? (void *)buf : (void *)raw;
            off_t at = (off_t)(h->data_start[x->file] + x->begin + done * es);
            ssize_t got = pread(fd, dst, n * es, at);
            if (got != (ssize_t)(n * es)) {
                rc = util_fail(ST_IOERR, "%s/%s: short read of tensor %s: %s", dir, h->files[x->file], p->name,
                               got < 0 ? strerror(errno) : "file truncated?");
                break;
            }
            if (x->dtype == HF_BF16)
                for (size_t k = 0; k < n; k++) {
                    uint32_t u = (uint32_t)raw[k] << 16;
                    memcpy(&buf[k], &u, 4);
                }
            else if (x->dtype == HF_F16)
                for (size_t k = 0; k < n; k++)
                    buf[k] = hf_half(raw[k]);
            rc = sink(arg, p->offset + done, n, buf);
            done += n;
        }
    }
    free(buf);
    free(raw);
    return rc;
}

static int hf_exists(const char *dir, const char *name)
{
    char path[4300];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0;
}

static void hf_dir_close(hf_dir *h)
{
    for (int i = 0; i < h->nfiles; i++) {
        if (h->fds && h->fds[i] >= 0)
            close(h->fds[i]);
        free(h->files[i]);
    }
    free(h->files);
    free(h->fds);
    free(h->data_start);
    free(h->t);
    hf_index_free(h->itens, h->ifiles, h->nidx);
    memset(h, 0, sizeof *h);
}

/* The files to read, as transformers picks them: model.safetensors wins
 * over model.safetensors.index.json when both are there. */
static int hf_pick_files(const char *dir, hf_dir *h)
{
    char path[4300], *text = NULL;
    size_t len;
    struct stat st;
    if (stat(dir, &st) != 0)
        return util_fail(errno == ENOENT ? ST_NOINPUT : ST_IOERR, "model.init_from %s: %s", dir, strerror(errno));
    int rc = ST_OK, single = hf_exists(dir, "model.safetensors");
    int index = hf_exists(dir, "model.safetensors.index.json");
    if (!single && !index) {
        if (hf_exists(dir, "pytorch_model.bin") || hf_exists(dir, "pytorch_model.bin.index.json"))
            return util_fail(ST_NOINPUT, "%s holds pytorch_model.bin, and spotrain reads only safetensors "
                             "(model.safetensors or model.safetensors.index.json); convert it, e.g. with "
                             "transformers' save_pretrained(DIR, safe_serialization=True)", dir);
        return util_fail(ST_NOINPUT, "%s has neither model.safetensors nor model.safetensors.index.json; "
                         "model.init_from needs a Hugging Face safetensors directory", dir);
    }
    snprintf(h->which, sizeof h->which, "%s", single && index ? "model.safetensors (model.safetensors.index.json "
             "beside it is not read, as transformers does)" : single ? "model.safetensors"
             : "model.safetensors.index.json");
    if (single)
        return (h->files[h->nfiles++] = strdup("model.safetensors")) ? ST_OK : util_fail(ST_SOFTWARE, "out of memory");
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if ((rc = util_read_file(path, &text, &len)) == ST_OK)
        rc = hf_index_parse(path, text, len, &h->itens, &h->ifiles, &h->nidx);
    free(text);
    for (int i = 0; i < h->nidx && rc == ST_OK; i++) {
        int k = 0;
        while (k < h->nfiles && strcmp(h->files[k], h->ifiles[i]))
            k++;
        if (k < h->nfiles)
            continue;
        if (h->nfiles == HF_MAX_FILES)
            rc = util_fail(ST_DATA, "%s: more than %d shard files", path, HF_MAX_FILES);
        else if (!(h->files[h->nfiles++] = strdup(h->ifiles[i])))
            rc = util_fail(ST_SOFTWARE, "out of memory");
    }
    return rc;
}

/* Opens the chosen files and parses every header: no tensor data is read. */
static int hf_dir_open(const char *dir, hf_dir *h)
{
    memset(h, 0, sizeof *h);
    h->files = calloc(HF_MAX_FILES, sizeof *h->files);
    h->fds = malloc(HF_MAX_FILES * sizeof *h->fds);
    h->data_start = calloc(HF_MAX_FILES, sizeof *h->data_start);
    if (!h->files || !h->fds || !h->data_start)
        return util_fail(ST_SOFTWARE, "out of memory");
    for (int i = 0; i < HF_MAX_FILES; i++)
        h->fds[i] = -1;
    int rc = hf_pick_files(dir, h);
    for (int i = 0; i < h->nfiles && rc == ST_OK; i++)
        rc = hf_open_file(dir, h, i);
    return rc;
}

/* Names and shapes against the layout, before any byte is delivered. */
static int hf_dir_check(const char *dir, const hf_dir *h, const model_layout *L)
{
    int rc = ST_OK;
    for (int i = 0; i < L->n_params && rc == ST_OK; i++) {
        const model_param *p = &L->params[i];
        const hf_tensor *x = hf_find(h, p->name);
        if (!x) {
            rc = util_fail(ST_DATA, "%s: tensor %s is missing; the model.init_from directory must hold every "
                           "weight of the Llama layout", dir, p->name);
        } else if (x->ndim != p->ndim || x->shape[0] != p->shape[0] || (p->ndim == 2 && x->shape[1] != p->shape[1])) {
            rc = util_fail(ST_DATA, "%s: tensor %s has shape [%lld%s%lld], the model wants [%lld%s%lld]", dir, p->name,
                           (long long)x->shape[0], x->ndim > 1 ? ", " : "", x->ndim > 1 ? (long long)x->shape[1] : 0LL,
                           (long long)p->shape[0], p->ndim > 1 ? ", " : "", p->ndim > 1 ? (long long)p->shape[1] : 0LL);
        } else {
            for (int k = 0; k < h->nidx; k++)
                if (!strcmp(h->itens[k], p->name) && strcmp(h->ifiles[k], h->files[x->file]))
                    rc = util_fail(ST_DATA, "%s: the index puts %s in %s, but it is in %s", dir, p->name,
                                   h->ifiles[k], h->files[x->file]);
        }
    }
    for (int i = 0; i < h->nt && rc == ST_OK; i++) {
        int known = 0;
        for (int k = 0; k < L->n_params && !known; k++)
            known = !strcmp(L->params[k].name, h->t[i].name);
        /* Older exports carry RoPE's inverse frequencies; they are derived. */
        if (!known && !strstr(h->t[i].name, "rotary_emb.inv_freq"))
            rc = util_fail(ST_DATA, "%s: tensor %s is not part of the Llama layout spotrain trains", dir, h->t[i].name);
    }
    return rc;
}

int hf_check(const char *dir, const model_layout *L, char *which, size_t cap)
{
    hf_dir h;
    int rc = hf_dir_open(dir, &h);
    if (rc == ST_OK)
        rc = hf_dir_check(dir, &h, L);
    if (which && cap)
        snprintf(which, cap, "%s", h.which);
    hf_dir_close(&h);
    return rc;
}

int hf_load(const char *dir, const model_layout *L, int (*sink)(void *arg, size_t offset, size_t n, const float *src),
            void *arg)
{
    hf_dir h;
    int rc = hf_dir_open(dir, &h);
    if (rc == ST_OK)
        rc = hf_dir_check(dir, &h, L);
    if (rc == ST_OK)
        rc = hf_stream(dir, &h, L, sink, arg);
    hf_dir_close(&h);
    return rc;
}
