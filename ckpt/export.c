/* `spotrain ckpt export`: one checkpoint's parameters as a Hugging Face
 * LlamaForCausalLM directory (model.safetensors, fp32, plus config.json),
 * named and shaped by the tensor table its manifest records. */
#include "ckpt_int.h"
#include "../util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* safetensors: u64 LE header length, JSON header padded with spaces to a
 * multiple of 8, then the tensors back to back in header order. */
static char *ckpt_st_header(const ckpt_reader *r, size_t *len)
{
    json_object *h = json_object_new_object(), *meta = json_object_new_object();
    json_object_object_add(meta, "format", json_object_new_string("pt"));
    json_object_object_add(h, "__metadata__", meta);
    for (int i = 0; i < r->n_tensors; i++) {
        const ckpt_tensor *p = &r->tensors[i];
        json_object *t = json_object_new_object(), *shape = json_object_new_array(), *off = json_object_new_array();
        for (int d = 0; d < p->ndim; d++)
            json_object_array_add(shape, json_object_new_int64(p->shape[d]));
        json_object_array_add(off, json_object_new_int64((int64_t)p->offset * 4));
        json_object_array_add(off, json_object_new_int64((int64_t)(p->offset + p->numel) * 4));
        json_object_object_add(t, "dtype", json_object_new_string("F32"));
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

static char *ckpt_hf_config(const ckpt_info *in)
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
    json_object_object_add(c, "max_position_embeddings", json_object_new_int64(s->seq_len));
    json_object_object_add(c, "rms_norm_eps", json_object_new_double(s->norm_eps));
    json_object_object_add(c, "rope_theta", json_object_new_double(s->rope_theta));
    json_object_object_add(c, "hidden_act", json_object_new_string("silu"));
    json_object_object_add(c, "tie_word_embeddings", json_object_new_boolean(0));
    json_object_object_add(c, "attention_bias", json_object_new_boolean(0));
    json_object_object_add(c, "torch_dtype", json_object_new_string("float32"));
    const char *t = json_object_to_json_string_ext(c, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED);
    char *out = malloc(strlen(t) + 2);
    if (out)
        sprintf(out, "%s\n", t);
    json_object_put(c);
    return out;
}

int ckpt_export(const char *step_dir, const char *out_dir)
{
    ckpt_reader *r = NULL;
    char path[4300], tmp[4400], err[CKPT_ERR];
    char *hdr = NULL, *cfg = NULL;
    float *buf = NULL;
    size_t hlen = 0;
    int fd = -1, rc = ckpt_open(&r, step_dir);
    if (rc != ST_OK)
        return rc;
    if ((rc = util_mkdirs(out_dir)) != ST_OK)
        goto out;
    hdr = ckpt_st_header(r, &hlen);
    cfg = ckpt_hf_config(&r->info);
    size_t step = r->chunk_bytes / 4 ? (size_t)(r->chunk_bytes / 4) : 1;
    buf = malloc(step * sizeof(float));
    if (!hdr || !cfg || !buf) {
        rc = util_fail(ST_SOFTWARE, "out of memory exporting %s", step_dir);
        goto out;
    }
    /* Written under a temporary name and renamed, so a failed export never
     * leaves a plausible-looking partial model.safetensors. */
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    fd = ckpt_os->open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = util_fail(ST_IOERR, "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    if (ckpt_os->write(fd, hdr, hlen) != (ssize_t)hlen) {
        rc = util_fail(ST_IOERR, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    for (uint64_t lo = 0; lo < r->info.n_floats; lo += step) {
        size_t n = r->info.n_floats - lo < step ? (size_t)(r->info.n_floats - lo) : step;
        if ((rc = ckpt_read_range(r, CKPT_PARAMS, (size_t)lo, (size_t)lo + n, buf)) != ST_OK)
            goto out;
        if (ckpt_os->write(fd, buf, n * 4) != (ssize_t)(n * 4)) {
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
    if (ckpt_os->rename(tmp, path) != 0) {
        rc = util_fail(ST_IOERR, "cannot rename %s: %s", tmp, strerror(errno));
        goto out;
    }
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    if ((rc = ckpt_write_file(path, cfg, strlen(cfg), err, sizeof err)) != ST_OK) {
        util_fail(rc, "%s", err);
        goto out;
    }
    printf("exported step %" PRId64 " (%" PRIu64 " parameters) to %s\n", r->info.step, r->info.n_floats, out_dir);
out:
    if (fd >= 0) {
        ckpt_os->close(fd);
        ckpt_os->unlink(tmp);
    }
    free(hdr);
    free(cfg);
    free(buf);
    ckpt_close(r);
    return rc;
}
