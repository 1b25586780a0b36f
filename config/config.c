/* INI configuration: the table of every key (section, name, type, range),
 * loading defaults from the embedded sample.ini, the user's file and --set
 * overrides, with one-line errors naming file:line and key. */
#include "config.h"
#include "hf/hf.h"
#include "model/lscale.h"
#include "util/util.h"

#include <ini.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* K_AUTO: a number, or the word auto (stored as CFG_AUTO). */
enum { K_INT, K_F64, K_STR, K_AUTO };

#define CFG_MAX_FILE_BYTES (1 << 20)

typedef struct {
    const char *section, *key;
    int type;
    size_t off, cap;        /* cap: string buffer size */
    double lo, hi;          /* numeric range, inclusive */
    const char *choices;    /* "a|b|c" for strings with a fixed set */
} cfg_key;

#define KI(s, k, f, lo, hi) {s, k, K_INT, offsetof(cfg, f), 0, lo, hi, NULL}
#define KF(s, k, f, lo, hi) {s, k, K_F64, offsetof(cfg, f), 0, lo, hi, NULL}
#define KA(s, k, f, lo, hi) {s, k, K_AUTO, offsetof(cfg, f), 0, lo, hi, NULL}
#define KS(s, k, f, ch) {s, k, K_STR, offsetof(cfg, f), sizeof(((cfg *)0)->f), 0, 0, ch}

static const cfg_key cfg_keys[] = {
    KS("model", "preset", preset, "tiny|small|deepseek-7b|deepseek-67b"),
    KI("model", "dim", dim, 0, 65536),
    KI("model", "n_layers", n_layers, 0, 1024),
    KI("model", "n_heads", n_heads, 0, 1024),
    KI("model", "n_kv_heads", n_kv_heads, 0, 1024),
    KI("model", "ffn_dim", ffn_dim, 0, 1 << 20),
    KI("model", "vocab_size", vocab_size, 0, 1 << 24),
    KI("model", "seq_len", seq_len, 0, 1 << 20),
    KF("model", "rope_theta", rope_theta, 1, 1e12),
    KF("model", "norm_eps", norm_eps, 1e-12, 1),
    KF("model", "init_std", init_std, 0, 10),
    KS("model", "init_from", init_from, NULL),
    KI("model", "max_position_embeddings", max_position_embeddings, 0, 1 << 24),
    KI("model", "bos_token_id", bos_token_id, -1, 1 << 30),
    KI("model", "eos_token_id", eos_token_id, -1, 1 << 30),

    KS("data", "source", source, "synthetic|text|shards"),
    KS("data", "train_path", train_path, NULL),
    KS("data", "val_path", val_path, NULL),
    KF("data", "val_fraction", val_fraction, 0, 0.5),
    KI("data", "synthetic_digits", synthetic_digits, 1, 9),
    KI("data", "synthetic_samples", synthetic_samples, 16, 100000000),
    KS("data", "tokenizer", tokenizer, NULL),

    KS("train", "run_dir", run_dir, NULL),
    KS("train", "backend", backend, "auto|cpu|cuda"),
    KS("train", "precision", precision, "auto|fp32|tf32|bf16|fp16"),
    KF("train", "loss_scale", loss_scale, 0, 1e30),
    KF("train", "loss_scale_init", loss_scale_init, 0, LSCALE_MAX),
    KI("train", "loss_scale_window", loss_scale_window, 1, 1e9),
    KI("train", "seed", seed, 0, 9.0e15),
    KI("train", "max_steps", max_steps, 1, 1e15),
    KI("train", "global_batch", global_batch, 1, 1 << 24),
    KI("train", "micro_batch", micro_batch, 1, 1 << 20),
    KI("train", "threads", threads, 0, 4096),
    KI("train", "flush_denormals", flush_denormals, 0, 1),
    KS("train", "zero", zero, "auto|1|2|3"),
    KS("train", "recompute", recompute, "none|layers|auto"),
    KS("train", "cpu_gemm", cpu_gemm, "auto|openblas|onednn|blis"),
    KF("train", "lr", lr, 0, 10),
    KA("train", "min_lr", min_lr, 0, 10),
    KF("train", "warmup_steps", warmup_steps, 0, 1e15),
    KF("train", "weight_decay", weight_decay, 0, 10),
    KF("train", "beta1", beta1, 0, 0.999999),
    KF("train", "beta2", beta2, 0, 0.999999999),
    KF("train", "adam_eps", adam_eps, 1e-30, 1),
    KF("train", "grad_clip", grad_clip, 0, 1e9),
    KI("train", "val_every", val_every, 0, 1e15),
    KI("train", "val_batches", val_batches, 1, 1 << 20),
    KI("train", "log_every", log_every, 1, 1e15),

    KI("checkpoint", "interval_steps", ckpt_interval_steps, 0, 1e15),
    KA("checkpoint", "interval_seconds", ckpt_interval_seconds, 0, 1e9),
    KF("checkpoint", "min_seconds", ckpt_min_seconds, 0.1, 1e9),
    KF("checkpoint", "max_seconds", ckpt_max_seconds, 0.1, 1e9),
    KF("checkpoint", "overhead_percent", ckpt_overhead_percent, 0, 50),
    KI("checkpoint", "keep_last", ckpt_keep_last, 1, 1 << 20),
    KI("checkpoint", "keep_every", ckpt_keep_every, 0, 1e15),
    KS("checkpoint", "codec", ckpt_codec, "none|zstd|shuffle-zstd|planes-zstd"),
    KI("checkpoint", "level", ckpt_level, 1, 19),
    KI("checkpoint", "chunk_kib", ckpt_chunk_kib, 4, 1 << 20),
    KS("checkpoint", "busy", ckpt_busy, "skip|wait"),
    KS("checkpoint", "on_save", ckpt_on_save, NULL),
    KI("checkpoint", "required", ckpt_required, 0, 1),
    KI("checkpoint", "threads", ckpt_threads, 0, 256),
    KS("checkpoint", "remote", ckpt_remote, NULL),
    KS("checkpoint", "endpoint", ckpt_endpoint, NULL),
    KS("checkpoint", "region", ckpt_region, NULL),
    KI("checkpoint", "remote_retries", ckpt_remote_retries, 0, 100),
    KI("checkpoint", "remote_part_mib", ckpt_remote_part_mib, 5, 5120),
    KI("checkpoint", "remote_parallel", ckpt_remote_parallel, 1, 64),
    KF("checkpoint", "remote_stall_seconds", ckpt_remote_stall_seconds, 1, 3600),

    KS("spot", "provider", provider, "auto|aws|gcp|azure|alibaba|file|none"),
    KF("spot", "poll_seconds", poll_seconds, 0.05, 3600),
    KF("spot", "grace_seconds", grace_seconds, 0, 86400),
    KF("spot", "watchdog_seconds", watchdog_seconds, 0, 1e7),
    KF("spot", "comm_timeout_seconds", comm_timeout_seconds, 0, 1e7),
    KS("spot", "metadata_url", metadata_url, NULL),
    KS("spot", "notice_file", notice_file, NULL),
    KS("spot", "vm_name", vm_name, NULL),

    KS("comm", "reduce", comm_reduce, "chain|nccl"),
    KS("comm", "overlap", comm_overlap, "true|false"),

    KI("cost", "nodes", nodes, 1, 1 << 20),
    KI("cost", "ondemand_nodes", ondemand_nodes, 0, 1 << 20),
    KI("cost", "gpus_per_node", gpus_per_node, 1, 1024),
    KS("cost", "gpu", gpu, "a100|h100|h200|custom"),
    KF("cost", "peak_tflops", peak_tflops, 0, 1e9),
    KF("cost", "mfu", mfu, 0, 1),
    KF("cost", "tokens", tokens, 0, 1e18),
    KF("cost", "ondemand_hours", ondemand_hours, 0, 1e12),
    KF("cost", "spot_hours", spot_hours, 0, 1e12),
    KF("cost", "throughput_ratio", throughput_ratio, 0, 1),
    KF("cost", "interruptions_per_hour", interruptions_per_hour, 0, 1000),
    KF("cost", "restart_minutes", restart_minutes, 0, 1e6),
    KF("cost", "ckpt_stall_seconds", ckpt_stall_seconds, 0, 1e6),
    KF("cost", "ckpt_interval_minutes", ckpt_interval_minutes, 0, 1e6),
    KF("cost", "gpu_memory_gib", gpu_memory_gib, 0, 1e6),
    KF("cost", "network_gbps", network_gbps, 0, 1e6),

    KS("metrics", "textfile", textfile, NULL),
    KI("metrics", "every", metrics_every, 1, 1e15),
};
#define CFG_NKEYS (sizeof cfg_keys / sizeof cfg_keys[0])
_Static_assert(CFG_NKEYS <= CFG_MAX_KEYS, "raise CFG_MAX_KEYS");

/* Shapes of the presets; a shape key left at 0 takes the preset's value. */
typedef struct {
    const char *name;
    int64_t dim, n_layers, n_heads, n_kv_heads, ffn_dim, vocab_size, seq_len;
} cfg_preset;

static const cfg_preset cfg_presets[] = {
    {"tiny", 128, 4, 4, 2, 352, 256, 64},
    {"small", 512, 8, 8, 4, 1408, 8192, 256},
    {"deepseek-7b", 4096, 30, 32, 32, 11008, 102400, 4096},
    {"deepseek-67b", 8192, 95, 64, 8, 22016, 102400, 4096},
};

typedef struct {
    cfg *c;
    const char *file;      /* for messages */
    unsigned char seen[CFG_NKEYS];
    int n_price_keys;
    char err[512];
} cfg_parse;

static const cfg_key *cfg_find(const char *section, const char *key)
{
    for (size_t i = 0; i < CFG_NKEYS; i++)
        if (!strcmp(cfg_keys[i].section, section) && !strcmp(cfg_keys[i].key, key))
            return &cfg_keys[i];
    return NULL;
}

static int cfg_section_known(const char *section)
{
    for (size_t i = 0; i < CFG_NKEYS; i++)
        if (!strcmp(cfg_keys[i].section, section))
            return 1;
    return 0;
}

static int cfg_choice_ok(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, v, n))
            return 1;
        if (!bar)
            break;
        p = bar + 1;
    }
    return 0;
}

/* Sets one table key from text; fills err and returns -1 on a bad value. */
static int cfg_set_key(cfg *c, const cfg_key *k, const char *v, char *err, size_t cap)
{
    char *base = (char *)c + k->off;
    if (k->type == K_STR) {
        if (strlen(v) >= k->cap) {
            snprintf(err, cap, "%s.%s is too long (at most %zu bytes)", k->section, k->key, k->cap - 1);
            return -1;
        }
        if (k->choices && !cfg_choice_ok(k->choices, v)) {
            snprintf(err, cap, "%s.%s = '%s' is not one of %s", k->section, k->key, v, k->choices);
            return -1;
        }
        strcpy(base, v);
        return 0;
    }
    if (k->type == K_INT) {
        int64_t x;
        if (util_parse_i64(v, &x) != 0) {
            snprintf(err, cap, "%s.%s = '%s' is not an integer", k->section, k->key, v);
            return -1;
        }
        if ((double)x < k->lo || (double)x > k->hi) {
            snprintf(err, cap, "%s.%s = %lld is out of range [%.17g, %.17g]", k->section, k->key,
                     (long long)x, k->lo, k->hi);
            return -1;
        }
        memcpy(base, &x, sizeof x);
        return 0;
    }
    double d;
    if (k->type == K_AUTO && !strcmp(v, "auto")) {
        d = CFG_AUTO;
        memcpy(base, &d, sizeof d);
        return 0;
    }
    if (util_parse_f64(v, &d) != 0) {
        snprintf(err, cap, "%s.%s = '%s' is not a number%s", k->section, k->key, v,
                 k->type == K_AUTO ? " or auto" : "");
        return -1;
    }
    if (d < k->lo || d > k->hi) {
        snprintf(err, cap, "%s.%s = %g is out of range [%g, %g]", k->section, k->key, d, k->lo, k->hi);
        return -1;
    }
    memcpy(base, &d, sizeof d);
    return 0;
}

static cost_price *cfg_price_slot(cfg *c, const char *name, char *err, size_t cap)
{
    for (int i = 0; i < c->n_prices; i++)
        if (!strcmp(c->prices[i].name, name))
            return &c->prices[i];
    if (c->n_prices >= COST_MAX_PRICES) {
        snprintf(err, cap, "too many [price.*] sections (at most %d)", COST_MAX_PRICES);
        return NULL;
    }
    if (!*name || strlen(name) >= sizeof c->prices[0].name) {
        snprintf(err, cap, "[price.%s]: the item name must be 1 to %zu characters", name,
                 sizeof c->prices[0].name - 1);
        return NULL;
    }
    cost_price *p = &c->prices[c->n_prices++];
    memset(p, 0, sizeof *p);
    p->ondemand = p->spot = -1;
    strcpy(p->name, name);
    return p;
}

static int cfg_set_price(cfg *c, const char *name, const char *key, const char *v, char *err,
                         size_t cap)
{
    double d;
    cost_price *p = cfg_price_slot(c, name, err, cap);
    if (!p)
        return -1;
    if (strcmp(key, "ondemand") && strcmp(key, "spot")) {
        snprintf(err, cap, "unknown key '%s' in [price.%s] (expected ondemand, spot)", key, name);
        return -1;
    }
    if (util_parse_f64(v, &d) != 0 || d < 0) {
        snprintf(err, cap, "price.%s.%s = '%s' is not a non-negative number ($ per node-hour)", name, key, v);
        return -1;
    }
    if (!strcmp(key, "ondemand"))
        p->ondemand = d;
    else
        p->spot = d;
    return 0;
}

/* One section/key/value from any source; 0 ok, -1 with err filled. */
static int cfg_apply(cfg_parse *ps, const char *section, const char *key, const char *v)
{
    if (!strncmp(section, "price.", 6))
        return cfg_set_price(ps->c, section + 6, key, v, ps->err, sizeof ps->err);
    const cfg_key *k = cfg_find(section, key);
    if (!k) {
        if (!cfg_section_known(section))
            snprintf(ps->err, sizeof ps->err, "unknown section [%s] (key %s); sections are model, data, train, checkpoint, spot, comm, cost, price.NAME, metrics", section, key);
        else
            snprintf(ps->err, sizeof ps->err, "unknown key '%s' in [%s]; `spotrain init` writes every key with its meaning", key, section);
        return -1;
    }
    size_t idx = (size_t)(k - cfg_keys);
    if (ps->seen[idx]) {
        snprintf(ps->err, sizeof ps->err,
                 "%s.%s is given twice (an indented line also continues the previous value)", section, key);
        return -1;
    }
    ps->seen[idx] = 1;
    ps->c->given[idx] = 1;
    return cfg_set_key(ps->c, k, v, ps->err, sizeof ps->err);
}

static int cfg_ini_handler(void *user, const char *section, const char *name, const char *value)
{
    cfg_parse *ps = user;
    return cfg_apply(ps, section, name, value) == 0;
}

/* inih r55 splits lines over 200 bytes silently; refuse them up front. */
static int cfg_check_lines(const char *file, const char *text)
{
    int line = 1;
    const char *start = text;
    for (const char *p = text;; p++) {
        if (*p == '\n' || *p == 0) {
            if (p - start > 198)
                return util_fail(ST_CONFIG, "%s:%d: line is %d bytes long; the INI reader takes at most 198",
                                 file, line, (int)(p - start));
            if (!*p)
                break;
            line++;
            start = p + 1;
        } else if (*p == '\r' && p[1] != '\n') {
            return util_fail(ST_CONFIG, "%s:%d: bare carriage return; save the file with Unix line endings",
                             file, line);
        }
    }
    return ST_OK;
}

static int cfg_parse_text(cfg *c, const char *file, const char *text)
{
    cfg_parse *ps = calloc(1, sizeof *ps);
    int rc = ST_OK;
    if (!ps)
        return util_fail(ST_SOFTWARE, "out of memory");
    ps->c = c;
    ps->file = file;
    rc = cfg_check_lines(file, text);
    if (rc != ST_OK)
        goto out;
    int line = ini_parse_string(text, cfg_ini_handler, ps);
    if (line > 0 && ps->err[0])
        rc = util_fail(ST_CONFIG, "%s:%d: %s", file, line, ps->err);
    else if (line > 0)
        rc = util_fail(ST_CONFIG, "%s:%d: not a 'key = value' line or a [section] header", file, line);
    else if (line < 0)
        rc = util_fail(ST_SOFTWARE, "%s: the INI reader ran out of memory", file);
out:
    free(ps);
    return rc;
}

/* "section.key=value"; section may itself contain dots (price.gpu.spot). */
static int cfg_apply_override(cfg *c, const char *ov)
{
    char buf[CFG_STR + 128], err[512] = "";
    const char *eq = strchr(ov, '=');
    if (!eq || util_fmt(buf, sizeof buf, "%s", ov) < 0)
        return util_fail(ST_USAGE, "--set '%s': expected section.key=value", ov);
    buf[eq - ov] = 0;
    char *dot = strrchr(buf, '.');
    if (!dot || dot == buf || !dot[1])
        return util_fail(ST_USAGE, "--set '%s': expected section.key=value", ov);
    *dot = 0;
    const char *section = buf, *key = dot + 1, *val = buf + (eq - ov) + 1;
    int bad;
    if (!strncmp(section, "price.", 6)) {
        bad = cfg_set_price(c, section + 6, key, val, err, sizeof err);
    } else {
        const cfg_key *k = cfg_find(section, key);
        if (!k)
            return util_fail(ST_CONFIG, "--set %s.%s: unknown key (`spotrain init` lists every key)", section, key);
        bad = cfg_set_key(c, k, val, err, sizeof err);
        c->given[k - cfg_keys] = 1;
    }
    return bad ? util_fail(ST_CONFIG, "--set: %s", err) : ST_OK;
}

static void cfg_apply_preset(cfg *c)
{
    const cfg_preset *p = &cfg_presets[0];
    for (size_t i = 0; i < sizeof cfg_presets / sizeof cfg_presets[0]; i++)
        if (!strcmp(cfg_presets[i].name, c->preset))
            p = &cfg_presets[i];
    if (!c->dim) c->dim = p->dim;
    if (!c->n_layers) c->n_layers = p->n_layers;
    if (!c->n_heads) c->n_heads = p->n_heads;
    if (!c->n_kv_heads) c->n_kv_heads = p->n_kv_heads;
    if (!c->ffn_dim) c->ffn_dim = p->ffn_dim;
    if (!c->vocab_size) c->vocab_size = p->vocab_size;
    if (!c->seq_len) c->seq_len = p->seq_len;
}

/* Relations between keys that a per-key range cannot express. */
static int cfg_check_relations(const cfg *c)
{
    const char *f = c->path[0] ? c->path : "config";
    if (c->max_position_embeddings && c->seq_len > c->max_position_embeddings)
        return util_fail(ST_CONFIG, "%s: model.seq_len (%lld) exceeds model.max_position_embeddings (%lld)", f,
                         (long long)c->seq_len, (long long)c->max_position_embeddings);
    if (c->min_lr > c->lr)
        return util_fail(ST_CONFIG, "%s: train.min_lr (%g) exceeds train.lr (%g); set a lower min_lr, or "
                         "min_lr = auto (lr / 10)", f, c->min_lr, c->lr);
    if (c->global_batch % c->micro_batch != 0)
        return util_fail(ST_CONFIG, "%s: train.global_batch (%lld) must be a multiple of train.micro_batch (%lld)",
                         f, (long long)c->global_batch, (long long)c->micro_batch);
    if (!strcmp(c->source, "shards") && !c->train_path[0])
        return util_fail(ST_CONFIG, "%s: data.source = shards needs data.train_path (a glob of .bin shards)", f);
    if (!strcmp(c->source, "text") && !c->train_path[0])
        return util_fail(ST_CONFIG, "%s: data.source = text needs data.train_path (a file)", f);
    if (strcmp(c->source, "shards") && c->vocab_size < 256)
        return util_fail(ST_CONFIG, "%s: data.source = %s uses byte tokens; model.vocab_size must be >= 256",
                         f, c->source);
    if (c->ondemand_nodes > c->nodes)
        return util_fail(ST_CONFIG, "%s: cost.ondemand_nodes (%lld) exceeds cost.nodes (%lld)", f,
                         (long long)c->ondemand_nodes, (long long)c->nodes);
    if (!c->run_dir[0])
        return util_fail(ST_CONFIG, "%s: train.run_dir must not be empty", f);
    /* Refused here, before a run directory is made; backend auto that
     * finds a GPU is refused by backend_create. */
    if (!strcmp(c->comm_reduce, "nccl") && !strcmp(c->backend, "cpu"))
        return util_fail(ST_CONFIG, "%s: comm.reduce = nccl needs backend cuda (ncclReduceScatter); the cpu backend "
                         "reduces with the chain: use comm.reduce = chain", f);
    if (c->loss_scale_init != 0 && (!lscale_pow2(c->loss_scale_init) || c->loss_scale_init < LSCALE_MIN))
        return util_fail(ST_CONFIG, "%s: train.loss_scale_init = %g must be 0 or a power of two from 1 to 2^127 "
                         "(e.g. 65536)", f, c->loss_scale_init);
    if (c->loss_scale_init != 0 && c->loss_scale != 0)
        return util_fail(ST_CONFIG, "%s: train.loss_scale = %g fixes the scale, so train.loss_scale_init = %g has "
                         "nothing to start; set one of them", f, c->loss_scale, c->loss_scale_init);
    if (c->ckpt_remote[0]) {
        s3_url u;
        int rc = s3_url_parse(c->ckpt_remote, &u);
        if (rc != ST_OK)
            return rc;
        if (strlen(c->ckpt_endpoint) >= sizeof((s3_opts *)0)->endpoint)
            return util_fail(ST_CONFIG, "%s: checkpoint.endpoint is longer than %zu characters", f,
                             sizeof((s3_opts *)0)->endpoint - 1);
    }
    for (int i = 0; i < c->n_prices; i++)
        if (c->prices[i].ondemand < 0 || c->prices[i].spot < 0)
            return util_fail(ST_CONFIG, "%s: [price.%s] needs both ondemand and spot ($ per node-hour)", f,
                             c->prices[i].name);
    return ST_OK;
}

static int cfg_defaults(cfg *c);

/* A resolved config (RUN_DIR/config.ini, a checkpoint's) parsed but not
 * resolved: it holds every key, and its init_from is never opened. */
static cfg *cfg_parse_resolved(const char *name, const char *text)
{
    cfg *run = malloc(sizeof *run);
    if (run && (cfg_defaults(run) != ST_OK || cfg_parse_text(run, name, text) != ST_OK)) {
        free(run);
        return NULL;
    }
    return run;
}

/* The shape, and what else init_from gave, from a resolved config: keys the
 * user left unset take its values. strict: a shape key the user set must
 * agree (ST_CONFIG: not used); a checkpoint is not strict, since resume
 * names any disagreement itself. */
static int cfg_take_shape(cfg *c, const cfg *run, int strict)
{
    int64_t *keys[] = {&c->dim, &c->n_layers, &c->n_heads, &c->n_kv_heads, &c->ffn_dim, &c->vocab_size,
                       &c->seq_len, &c->max_position_embeddings};
    const int64_t *theirs[] = {&run->dim, &run->n_layers, &run->n_heads, &run->n_kv_heads, &run->ffn_dim,
                               &run->vocab_size, &run->seq_len, &run->max_position_embeddings};
    for (int i = 0; i < 6 && strict; i++)
        if (*keys[i] && *keys[i] != *theirs[i])
            return ST_CONFIG;
    for (int i = 0; i < 8; i++)
        if (!*keys[i])
            *keys[i] = *theirs[i];
    c->rope_theta = run->rope_theta;
    c->norm_eps = run->norm_eps;
    if (c->bos_token_id < 0)
        c->bos_token_id = run->bos_token_id;
    if (c->eos_token_id < 0)
        c->eos_token_id = run->eos_token_id;
    return ST_OK;
}

/* init_from's directory is gone, but the run started from it: its resolved
 * config (RUN_DIR/config.ini, written at every start) keeps the shape, so a
 * resume needs no init_from (a fresh start still fails on the weights,
 * before it writes anything). ST_OK when it was used. */
static int cfg_shape_from_run(cfg *c)
{
    char path[CFG_STR + 16];
    char *text = NULL;
    size_t len = 0;
    int more = 0;
    snprintf(path, sizeof path, "%s/config.ini", c->run_dir);
    if (access(path, R_OK) != 0 || util_read_prefix(path, CFG_MAX_FILE_BYTES, &text, &len, &more) != ST_OK)
        return ST_NOINPUT;
    cfg *run = !more && !memchr(text, 0, len) ? cfg_parse_resolved(path, text) : NULL;
    int rc = run && !strcmp(run->init_from, c->init_from) ? cfg_take_shape(c, run, 1) : ST_CONFIG;
    free(run);
    free(text);
    return rc;
}

/* resume, a checkpoint found: the shape comes from the resolved config it
 * saved, and init_from is not opened at all (its weights are not needed,
 * and a new machine resuming from checkpoint.remote may not have it).
 * ST_NOINPUT: no checkpoint; another error: the source could not say. */
static int cfg_shape_from_ckpt(cfg *c, cfg_ckpt_fn fn)
{
    char *text = NULL, name[64];
    int rc = fn(c, &text, name, sizeof name);
    cfg *run = rc == ST_OK ? cfg_parse_resolved(name, text) : NULL;
    if (rc == ST_OK && !run)
        rc = util_fail(ST_DATA, "%s: its saved config does not parse (the line above says why); resume from "
                       "another checkpoint", name);
    if (rc == ST_OK)
        rc = cfg_take_shape(c, run, 0);
    if (rc == ST_OK && c->seq_len > c->max_position_embeddings)
        rc = util_fail(ST_CONFIG, "%s: model.seq_len = %lld exceeds max_position_embeddings = %lld of model.init_from "
                       "(as %s saved it); RoPE without rope_scaling does not extend past it: lower seq_len",
                       c->path[0] ? c->path : "config", (long long)c->seq_len,
                       (long long)c->max_position_embeddings, name);
    c->shape_from_ckpt = rc == ST_OK;
    free(run);
    free(text);
    return rc;
}

/* model.init_from: the shape comes from its config.json; a shape key that is
 * set must agree. A checkpoint's resolved config names the directory but
 * carries the whole shape, so a directory gone since is no error there. The
 * context length and token ids are carried for exports. */
static int cfg_from_hf(cfg *c)
{
    const char *f = c->path[0] ? c->path : "config";
    char probe[CFG_STR + 16];
    model_shape s;
    hf_meta m;
    int64_t *keys[] = {&c->dim, &c->n_layers, &c->n_heads, &c->n_kv_heads, &c->ffn_dim, &c->vocab_size,
                       &c->max_position_embeddings};
    const char *names[] = {"dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size",
                           "max_position_embeddings"};
    int all = 1;
    for (int i = 0; i < 6; i++)
        all &= *keys[i] != 0;
    snprintf(probe, sizeof probe, "%s/config.json", c->init_from);
    if (access(probe, F_OK) != 0 && (all || cfg_shape_from_run(c) == ST_OK))
        return ST_OK;
    int rc = hf_read_config(c->init_from, &s, &m);
    if (rc != ST_OK)
        return rc;
    int64_t hf[] = {s.dim, s.n_layers, s.n_heads, s.n_kv_heads, s.ffn_dim, s.vocab, s.seq_len};
    for (int i = 0; i < 7; i++) {
        if (*keys[i] && *keys[i] != hf[i])
            return util_fail(ST_CONFIG, "%s: model.%s = %lld disagrees with %s (%lld); drop the key, the shape "
                             "comes from model.init_from", f, names[i], (long long)*keys[i], probe, (long long)hf[i]);
        *keys[i] = hf[i];
    }
    if (!c->seq_len)
        c->seq_len = s.seq_len;
    /* rope_scaling, the one setting that would extend the context, is
     * refused by hf_read_config: the source's length is the limit. */
    if (c->seq_len > s.seq_len)
        return util_fail(ST_CONFIG, "%s: model.seq_len = %lld exceeds max_position_embeddings = %lld of %s; RoPE "
                         "without rope_scaling does not extend past it: lower seq_len", f, (long long)c->seq_len,
                         (long long)s.seq_len, probe);
    if (c->bos_token_id < 0)
        c->bos_token_id = m.bos;
    if (c->eos_token_id < 0)
        c->eos_token_id = m.eos;
    c->rope_theta = s.rope_theta;
    c->norm_eps = s.norm_eps;
    return ST_OK;
}

/* min_lr = auto: lr / 10, rounded to 15 significant digits, so it is the
 * number a person would write: the default lr 3e-3 gives exactly 3e-4 (the
 * numeric default before auto), where 3e-3 / 10 is 3.0000000000000003e-4. */
static void cfg_resolve_min_lr(cfg *c)
{
    char num[40];
    c->min_lr_auto = c->min_lr == CFG_AUTO;
    if (!c->min_lr_auto)
        return;
    snprintf(num, sizeof num, "%.15g", c->lr / 10);
    c->min_lr = strtod(num, NULL);
}

/* init_from's shape: a checkpoint's (resume, fn set) when one exists, else
 * the directory's. A source that failed for another reason than having no
 * checkpoint (a remote down) leaves the directory to try, and is the error
 * when that fails too. */
static int cfg_resolve_init_from(cfg *c, cfg_ckpt_fn fn)
{
    int src = fn ? cfg_shape_from_ckpt(c, fn) : ST_NOINPUT;
    if (src == ST_OK || src == ST_CONFIG)
        return src;
    int rc = cfg_from_hf(c);
    if (rc != ST_OK && src != ST_NOINPUT)
        rc = util_fail(src, "%s: resume found no checkpoint config it could read (the lines above say why) and "
                       "model.init_from cannot give the shape either; nothing was trained%s",
                       c->path[0] ? c->path : "config", src == ST_TEMPFAIL ? ", exiting 75 so that a restart "
                       "tries again" : "");
    return rc;
}

static int cfg_finish(cfg *c, char **overrides, int n_overrides, cfg_ckpt_fn fn)
{
    int rc = ST_OK;
    for (int i = 0; i < n_overrides && rc == ST_OK; i++)
        rc = cfg_apply_override(c, overrides[i]);
    if (rc == ST_OK && c->init_from[0])
        rc = cfg_resolve_init_from(c, fn);
    if (rc != ST_OK)
        return rc;
    cfg_apply_preset(c);
    cfg_resolve_min_lr(c);
    return cfg_check_relations(c);
}

static int cfg_defaults(cfg *c)
{
    memset(c, 0, sizeof *c);
    int rc = cfg_parse_text(c, "sample.ini (built in)", cfg_sample_ini);
    /* Prices are examples in sample.ini, not defaults a user inherits. */
    c->n_prices = 0;
    memset(c->given, 0, sizeof c->given);
    return rc;
}

int cfg_load_resume(cfg *c, const char *path, char **overrides, int n_overrides, cfg_ckpt_fn fn)
{
    char *text = NULL;
    int rc = cfg_defaults(c);
    if (rc != ST_OK)
        return rc;
    if (path) {
        if (util_fmt(c->path, sizeof c->path, "%s", path) < 0)
            return util_fail(ST_CONFIG, "config path too long: %s", path);
        /* Bounded, so /dev/zero or a wrong huge file is refused, not read. */
        size_t len = 0;
        int more = 0;
        rc = util_read_prefix(path, CFG_MAX_FILE_BYTES, &text, &len, &more);
        if (rc != ST_OK)
            return rc;
        const char *nul = memchr(text, 0, len);
        if (nul)
            rc = util_fail(ST_CONFIG, "%s is not a text file (a NUL byte at offset %zu); give an INI file "
                           "(spotrain init writes a commented one)", path, (size_t)(nul - text));
        else if (more)
            rc = util_fail(ST_CONFIG, "%s is larger than %d KiB; a config is a small INI file", path,
                           CFG_MAX_FILE_BYTES >> 10);
        else
            rc = cfg_parse_text(c, path, text);
        free(text);
        if (rc != ST_OK)
            return rc;
    }
    return cfg_finish(c, overrides, n_overrides, fn);
}

int cfg_load(cfg *c, const char *path, char **overrides, int n_overrides)
{
    return cfg_load_resume(c, path, overrides, n_overrides, NULL);
}

int cfg_load_text(cfg *c, const char *name, const char *text, char **overrides, int n_overrides)
{
    int rc = cfg_defaults(c);
    if (rc == ST_OK)
        rc = cfg_parse_text(c, name, text);
    if (rc == ST_OK)
        util_fmt(c->path, sizeof c->path, "%s", name);
    return rc == ST_OK ? cfg_finish(c, overrides, n_overrides, NULL) : rc;
}

static void cfg_format_value(const cfg *c, const cfg_key *k, char *out, int cap)
{
    const char *base = (const char *)c + k->off;
    if (k->type == K_STR) {
        snprintf(out, (size_t)cap, "%s", base);
    } else if (k->type == K_INT) {
        int64_t x;
        memcpy(&x, base, sizeof x);
        snprintf(out, (size_t)cap, "%lld", (long long)x);
    } else {
        double d;
        char num[32];
        memcpy(&d, base, sizeof d);
        /* min_lr = auto stays auto where the config is shown or stored
         * (it follows lr when a checkpoint's config is read back). */
        if (k->type == K_AUTO && (d == CFG_AUTO || (k->off == offsetof(cfg, min_lr) && c->min_lr_auto)))
            snprintf(out, (size_t)cap, "auto");
        else
            snprintf(out, (size_t)cap, "%s", util_dtoa(d, num));
    }
}

int cfg_is_given(const cfg *c, const char *section, const char *key)
{
    for (size_t i = 0; i < CFG_NKEYS; i++)
        if (c->given[i] && !strcmp(cfg_keys[i].section, section) && (!key || !strcmp(cfg_keys[i].key, key)))
            return 1;
    return 0;
}

int cfg_value_string(const cfg *c, const char *section, const char *key, char *out, int cap)
{
    const cfg_key *k = cfg_find(section, key);
    if (!k)
        return -1;
    cfg_format_value(c, k, out, cap);
    return 0;
}

char *cfg_render(const cfg *c)
{
    size_t cap = 262144, len = 0;
    char *s = malloc(cap), val[CFG_STR + 64];
    const char *section = "";
    if (!s)
        return NULL;
    s[0] = 0;
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        const cfg_key *k = &cfg_keys[i];
        if (strcmp(section, k->section)) {
            section = k->section;
            len += (size_t)snprintf(s + len, cap - len, "%s[%s]\n", len ? "\n" : "", section);
        }
        cfg_format_value(c, k, val, sizeof val);
        len += (size_t)snprintf(s + len, cap - len, "%s = %s\n", k->key, val);
    }
    for (int i = 0; i < c->n_prices; i++) {
        char od[32], sp[32];
        len += (size_t)snprintf(s + len, cap - len, "\n[price.%s]\nondemand = %s\nspot = %s\n",
                                c->prices[i].name, util_dtoa(c->prices[i].ondemand, od),
                                util_dtoa(c->prices[i].spot, sp));
    }
    return s;
}

void cfg_s3_opts(const cfg *c, s3_opts *o)
{
    s3_opts_default(o);
    snprintf(o->remote, sizeof o->remote, "%s", c->ckpt_remote);
    snprintf(o->endpoint, sizeof o->endpoint, "%.*s", (int)sizeof o->endpoint - 1, c->ckpt_endpoint);
    snprintf(o->region, sizeof o->region, "%s", c->ckpt_region);
    o->retries = (int)c->ckpt_remote_retries;
    o->part_bytes = (size_t)c->ckpt_remote_part_mib << 20;
    o->parallel = (int)c->ckpt_remote_parallel;
    o->low_speed_seconds = c->ckpt_remote_stall_seconds;
    /* The poller's metadata service is the machine's IMDS: the instance role
     * comes from the same place (tests point both at a local fake). */
    if (!strcmp(c->provider, "aws") || !strcmp(c->provider, "auto"))
        snprintf(o->metadata_url, sizeof o->metadata_url, "%.*s", (int)sizeof o->metadata_url - 1, c->metadata_url);
}
