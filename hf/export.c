/* `spotrain ckpt export`: one checkpoint's parameters as a Hugging Face
 * LlamaForCausalLM directory (model.safetensors in f32 or bf16, optionally
 * sharded with an index, config.json and generation_config.json with the
 * source's context length and token ids, and the run's tokenizer). */
#include "ckpt/ckpt_int.h"
#include "hf/hf.h"
#include "tok/tokenizer.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* safetensors: u64 LE header length, JSON header padded with spaces to a
 * multiple of 8, then the tensors back to back in header order. */
static char *ckpt_st_header(const ckpt_reader *r, int p0, int p1, int es, size_t *len)
{
    json_object *h = json_object_new_object(), *meta = json_object_new_object();
    json_object_object_add(meta, "format", json_object_new_string("pt"));
    json_object_object_add(h, "__metadata__", meta);
    size_t base = r->tensors[p0].offset;
    for (int i = p0; i < p1; i++) {
        const ckpt_tensor *p = &r->tensors[i];
        json_object *t = json_object_new_object(), *shape = json_object_new_array(), *off = json_object_new_array();
        for (int d = 0; d < p->ndim; d++)
            json_object_array_add(shape, json_object_new_int64(p->shape[d]));
        json_object_array_add(off, json_object_new_int64((int64_t)(p->offset - base) * es));
        json_object_array_add(off, json_object_new_int64((int64_t)(p->offset - base + p->numel) * es));
        json_object_object_add(t, "dtype", json_object_new_string(es == 2 ? "BF16" : "F32"));
        json_object_object_add(t, "shape", shape);
        json_object_object_add(t, "data_offsets", off);
        json_object_object_add(h, p->name, t);
    }
    const char *s = json_object_to_json_string_ext(h, JSON_C_TO_STRING_PLAIN);
    size_t n = strlen(s), padded = (n + 7) / 8 * 8;
    char *out = malloc(8 + padded);
    if (out) {
        uint64_t v = padded;
        for (int b = 0; b < 8; b++)
            out[b] = (char)(v >> (8 * b));
        memcpy(out + 8, s, n);
        memset(out + 8 + n, ' ', padded - n);
        *len = 8 + padded;
    }
    json_object_put(h);
    return out;
}

/* What config.json carries besides the shape, from the run's resolved
 * config ([model] max_position_embeddings, bos/eos_token_id; [data]
 * tokenizer, and init_from for checkpoints older than those keys). */
typedef struct {
    char tokenizer[4096], init_from[4096];
    int64_t max_pos, bos, eos;
    int has_ids;     /* the config names the token id keys */
} ckpt_hf_meta;

static int ckpt_ini_meta(void *user, const char *section, const char *name, const char *value)
{
    ckpt_hf_meta *m = user;
    if (!strcmp(section, "data") && !strcmp(name, "tokenizer"))
        snprintf(m->tokenizer, sizeof m->tokenizer, "%s", value);
    if (strcmp(section, "model"))
        return 1;
    if (!strcmp(name, "init_from"))
        snprintf(m->init_from, sizeof m->init_from, "%s", value);
    else if (!strcmp(name, "max_position_embeddings"))
        m->max_pos = strtoll(value, NULL, 10);
    else if (!strcmp(name, "bos_token_id"))
        m->bos = strtoll(value, NULL, 10), m->has_ids = 1;
    else if (!strcmp(name, "eos_token_id"))
        m->eos = strtoll(value, NULL, 10), m->has_ids = 1;
    return 1;
}

/* The bos_token of a tokenizer_config.json beside the tokenizer, else a
 * well-known begin-of-text name; -1 if neither. */
static int64_t ckpt_tok_bos(const tok *t, const char *tk_path)
{
    static const char *names[] = {"<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                  "<|begin_of_text|>", "<s>", "<bos>"};
    char path[4300], *text = NULL;
    const char *slash = strrchr(tk_path, '/');
    int64_t id = -1;
    snprintf(path, sizeof path, "%.*stokenizer_config.json", slash ? (int)(slash - tk_path) + 1 : 0, tk_path);
    if (access(path, R_OK) == 0 && util_read_file(path, &text, NULL) == ST_OK) {
        json_object *o = json_tokener_parse(text), *b, *c;
        if (o && json_object_object_get_ex(o, "bos_token", &b)) {
            if (json_object_is_type(b, json_type_object) && json_object_object_get_ex(b, "content", &c))
                b = c;
            if (json_object_is_type(b, json_type_string))
                id = tok_id(t, json_object_get_string(b));
        }
        json_object_put(o);
        free(text);
    }
    for (size_t i = 0; id < 0 && i < sizeof names / sizeof names[0]; i++)
        id = tok_id(t, names[i]);
    return id;
}

/* The token ids: the run's config (init_from's, resolved when it started),
 * the init_from directory for older checkpoints, else the tokenizer's. */
static int ckpt_hf_meta_read(const ckpt_reader *r, ckpt_hf_meta *m)
{
    memset(m, 0, sizeof *m);
    m->bos = m->eos = -1;
    if (r->info.config_text && ini_parse_string(r->info.config_text, ckpt_ini_meta, m) < 0)
        return util_fail(ST_DATA, "%s: the checkpoint's config does not parse", r->dir);
    if (!m->has_ids && m->init_from[0]) {
        model_shape s;
        hf_meta hm;
        int q = util_quiet;
        util_quiet = 1;   /* a directory gone since is no error here */
        if (hf_read_config(m->init_from, &s, &hm) == ST_OK)
            m->bos = hm.bos, m->eos = hm.eos, m->max_pos = s.seq_len;
        util_quiet = q;
    }
    if ((m->bos >= 0 && m->eos >= 0) || !m->tokenizer[0])
        return ST_OK;
    tok *t = NULL;
    int rc = tok_load(&t, m->tokenizer);
    if (rc != ST_OK)
        return rc;
    if (m->eos < 0)
        m->eos = tok_eos(t);
    if (m->bos < 0)
        m->bos = ckpt_tok_bos(t, m->tokenizer);
    tok_free(t);
    return ST_OK;
}

static void ckpt_json_id(json_object *o, const char *key, int64_t id)
{
    json_object_object_add(o, key, id >= 0 ? json_object_new_int64(id) : NULL);
}

static char *ckpt_json_text(json_object *o)
{
    const char *t = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED);
    char *out = malloc(strlen(t) + 2);
    if (out)
        sprintf(out, "%s\n", t);
    json_object_put(o);
    return out;
}

static char *ckpt_hf_config(const ckpt_info *in, const ckpt_hf_meta *m, int bf16)
{
    const ckpt_model *s = &in->model;
    json_object *c = json_object_new_object(), *arch = json_object_new_array();
    json_object_array_add(arch, json_object_new_string("LlamaForCausalLM"));
    json_object_object_add(c, "architectures", arch);
    json_object_object_add(c, "model_type", json_object_new_string("llama"));
    json_object_object_add(c, "hidden_size", json_object_new_int64(s->dim));
    json_object_object_add(c, "intermediate_size", json_object_new_int64(s->ffn_dim));
    json_object_object_add(c, "num_hidden_layers", json_object_new_int64(s->n_layers));
    json_object_object_add(c, "num_attention_heads", json_object_new_int64(s->n_heads));
    json_object_object_add(c, "num_key_value_heads", json_object_new_int64(s->n_kv_heads));
    json_object_object_add(c, "head_dim", json_object_new_int64(s->head_dim));
    json_object_object_add(c, "vocab_size", json_object_new_int64(s->vocab));
    /* The source's context length: training on shorter sequences does not
     * shorten what the model was built for. */
    json_object_object_add(c, "max_position_embeddings", json_object_new_int64(m->max_pos > 0 ? m->max_pos : s->seq_len));
    json_object_object_add(c, "rms_norm_eps", json_object_new_double(s->norm_eps));
    json_object_object_add(c, "rope_theta", json_object_new_double(s->rope_theta));
    json_object_object_add(c, "hidden_act", json_object_new_string("silu"));
    json_object_object_add(c, "tie_word_embeddings", json_object_new_boolean(0));
    json_object_object_add(c, "attention_bias", json_object_new_boolean(0));
    /* Without them transformers assumes 1 and 2 (2 is a padding token in
     * DeepSeek's vocabulary): generate() would never stop. */
    ckpt_json_id(c, "bos_token_id", m->bos);
    ckpt_json_id(c, "eos_token_id", m->eos);
    json_object_object_add(c, "torch_dtype", json_object_new_string(bf16 ? "bfloat16" : "float32"));
    return ckpt_json_text(c);
}

/* What generate() reads first: the same token ids. */
static char *ckpt_hf_generation_config(const ckpt_hf_meta *m)
{
    json_object *c = json_object_new_object();
    ckpt_json_id(c, "bos_token_id", m->bos);
    ckpt_json_id(c, "eos_token_id", m->eos);
    return ckpt_json_text(c);
}

/* Round to nearest even; NaN stays a (quiet) NaN. */
static uint16_t ckpt_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)(u >> 16 | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

/* One safetensors file holding params [p0, p1), under a temporary name and
 * renamed, so a failed export never leaves a plausible partial file. */
static int ckpt_export_file(ckpt_reader *r, const char *path, int p0, int p1, int es, float *buf, size_t step)
{
    char tmp[4400];
    size_t hlen = 0;
    char *hdr = ckpt_st_header(r, p0, p1, es, &hlen);
    uint16_t *half = (uint16_t *)buf;
    int rc = ST_OK, fd = -1;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (!hdr)
        return util_fail(ST_SOFTWARE, "out of memory exporting %s", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = util_fail(ST_IOERR, "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    if (ckpt_os->write(fd, hdr, hlen) != (ssize_t)hlen) {
        rc = util_fail(ST_IOERR, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    size_t end = r->tensors[p1 - 1].offset + r->tensors[p1 - 1].numel;
    for (size_t lo = r->tensors[p0].offset; lo < end; lo += step) {
        size_t n = end - lo < step ? end - lo : step;
        if ((rc = ckpt_read_range(r, CKPT_PARAMS, lo, lo + n, buf)) != ST_OK)
            goto out;
        if (es == 2)   /* in place: half[k] is written after buf[k] is read */
            for (size_t k = 0; k < n; k++)
                half[k] = ckpt_bf16(buf[k]);
        if (write(fd, buf, n * (size_t)es) != (ssize_t)(n * (size_t)es)) {
            rc = util_fail(ST_IOERR, "cannot write %s: %s", tmp, strerror(errno));
            goto out;
        }
    }
    if (ckpt_os->fsync(fd) != 0 || ckpt_os->close(fd) != 0) {
        fd = -1;
        rc = util_fail(ST_IOERR, "cannot sync %s: %s", tmp, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0)
        rc = util_fail(ST_IOERR, "cannot rename %s: %s", tmp, strerror(errno));
out:
    if (fd >= 0)
        close(fd);
    if (rc != ST_OK)
        unlink(tmp);
    free(hdr);
    return rc;
}

static int ckpt_copy(const char *from, const char *to)
{
    FILE *f = fopen(from, "rb");
    char err[CKPT_ERR];
    if (!f)
        return util_fail(ST_NOINPUT, "cannot copy %s into the export: %s; fix data.tokenizer or copy it by hand",
                         from, strerror(errno));
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *nb = realloc(buf, cap *= 2);
        if (!nb)
            free(buf);
        buf = nb;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        return util_fail(bad ? ST_IOERR : ST_SOFTWARE, "cannot read %s", from);
    }
    int rc = ckpt_write_file(to, buf, n, err, sizeof err);
    free(buf);
    return rc == ST_OK ? rc : util_fail(rc, "%s", err);
}

/* The run's tokenizer.json (and a tokenizer_config.json beside it). */
static int ckpt_export_tokenizer(const ckpt_hf_meta *m, const char *out_dir)
{
    char path[4300], cfgp[4300];
    const char *tk = m->tokenizer;
    if (!tk[0])
        return ST_OK;
    snprintf(path, sizeof path, "%s/tokenizer.json", out_dir);
    int rc = ckpt_copy(tk, path);
    const char *slash = strrchr(tk, '/');
    snprintf(cfgp, sizeof cfgp, "%.*stokenizer_config.json", slash ? (int)(slash - tk) + 1 : 0, tk);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", out_dir);
    if (rc == ST_OK && access(cfgp, R_OK) == 0)
        rc = ckpt_copy(cfgp, path);
    return rc;
}

int ckpt_export(const char *step_dir, const char *out_dir)
{
    ckpt_export_opts o = {CKPT_EXPORT_F32, 0};
    return ckpt_export_ex(step_dir, out_dir, &o);
}

int ckpt_export_ex(const char *step_dir, const char *out_dir, const ckpt_export_opts *o)
{
    ckpt_reader *r = NULL;
    int rc = ckpt_open(&r, step_dir);
    if (rc == ST_OK)
        rc = ckpt_export_reader(r, out_dir, o);
    ckpt_close(r);
    return rc;
}

int ckpt_export_reader(ckpt_reader *r, const char *out_dir, const ckpt_export_opts *o)
{
    const char *step_dir = r->dir;
    char path[4300], err[CKPT_ERR];
    char *cfg = NULL, *gen = NULL;
    float *buf = NULL;
    ckpt_hf_meta hm;
    int *first = NULL, nshards = 0, es = o->dtype == CKPT_EXPORT_BF16 ? 2 : 4;
    json_object *index = NULL;
    int rc;
    if ((rc = ckpt_hf_meta_read(r, &hm)) != ST_OK || (rc = util_mkdirs(out_dir)) != ST_OK)
        goto out;
    cfg = ckpt_hf_config(&r->info, &hm, es == 2);
    gen = ckpt_hf_generation_config(&hm);
    size_t step = r->chunk_bytes / 4 ? (size_t)(r->chunk_bytes / 4) : 1;
    /* A remote reader fetches a range's chunks through its window: give it
     * a window's worth, so that its GETs rarely wait for the next call. */
    if (r->s3)
        step *= CKPT_REMOTE_WINDOW;
    buf = malloc(step * sizeof(float));
    first = malloc((size_t)(r->n_tensors + 1) * sizeof *first);
    if (!cfg || !gen || !buf || !first || r->n_tensors < 1) {
        rc = util_fail(ST_SOFTWARE, "out of memory exporting %s", step_dir);
        goto out;
    }
    /* Shards break between tensors; a tensor larger than the limit gets one
     * of its own, as transformers' save_pretrained does. */
    uint64_t cur = 0;
    for (int i = 0; i < r->n_tensors; i++) {
        uint64_t b = (uint64_t)r->tensors[i].numel * (uint64_t)es;
        if (i == 0 || (o->max_shard_bytes && cur && cur + b > o->max_shard_bytes)) {
            first[nshards++] = i;
            cur = 0;
        }
        cur += b;
    }
    first[nshards] = r->n_tensors;
    if (nshards > 1) {
        index = json_object_new_object();
        json_object *meta = json_object_new_object(), *wm = json_object_new_object();
        json_object_object_add(meta, "total_size", json_object_new_int64((int64_t)(r->info.n_floats * (uint64_t)es)));
        json_object_object_add(index, "metadata", meta);
        json_object_object_add(index, "weight_map", wm);
        for (int k = 0; k < nshards; k++) {
            char name[64];
            snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k + 1, nshards);
            for (int i = first[k]; i < first[k + 1]; i++)
                json_object_object_add(wm, r->tensors[i].name, json_object_new_string(name));
        }
    }
    for (int k = 0; k < nshards && rc == ST_OK; k++) {
        if (nshards == 1)
            snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
        else
            snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", out_dir, k + 1, nshards);
        rc = ckpt_export_file(r, path, first[k], first[k + 1], es, buf, step);
    }
    if (rc != ST_OK)
        goto out;
    /* A stale file of the other layout would win over the new one. */
    snprintf(path, sizeof path, "%s/%s", out_dir, nshards == 1 ? "model.safetensors.index.json" : "model.safetensors");
    unlink(path);
    if (index) {
        const char *t = json_object_to_json_string_ext(index, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED);
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", out_dir);
        if ((rc = ckpt_write_file(path, t, strlen(t), err, sizeof err)) != ST_OK) {
            util_fail(rc, "%s", err);
            goto out;
        }
    }
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    if ((rc = ckpt_write_file(path, cfg, strlen(cfg), err, sizeof err)) != ST_OK) {
        util_fail(rc, "%s", err);
        goto out;
    }
    snprintf(path, sizeof path, "%s/generation_config.json", out_dir);
    if ((rc = ckpt_write_file(path, gen, strlen(gen), err, sizeof err)) != ST_OK) {
        util_fail(rc, "%s", err);
        goto out;
    }
    if ((rc = ckpt_export_tokenizer(&hm, out_dir)) != ST_OK)
        goto out;
    printf("exported step %" PRId64 " (%" PRIu64 " parameters, %s, %d file%s) to %s\n", r->info.step,
           r->info.n_floats, es == 2 ? "bf16" : "f32", nshards, nshards == 1 ? "" : "s", out_dir);
out:
    json_object_put(index);
    free(cfg);
    free(gen);
    free(buf);
    free(first);
    return rc;
}
