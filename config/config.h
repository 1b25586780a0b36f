/* The resolved run configuration: one plain struct filled from the embedded
 * sample.ini defaults, then the user's INI file, then --set overrides. The key
 * table in config.c is the single list of every key, its type and range. */
#ifndef SPOTRAIN_CONFIG_H
#define SPOTRAIN_CONFIG_H

#include <stdint.h>

#include "money/price.h"
#include "s3/s3.h"

#define CFG_STR 1024
/* The stored value of a number key set to auto. */
#define CFG_AUTO (-1.0)
#define CFG_MAX_KEYS 128

typedef struct cfg {
    char path[CFG_STR];             /* the INI file the user gave */

    /* [model] */
    char preset[32];                /* tiny | small | deepseek-7b | deepseek-67b */
    int64_t dim, n_layers, n_heads, n_kv_heads, ffn_dim, vocab_size, seq_len;
    double rope_theta, norm_eps, init_std;
    char init_from[CFG_STR];        /* Hugging Face model directory to start from, or empty */
    int64_t max_position_embeddings; /* for exports; 0 = init_from's, else seq_len */
    int64_t bos_token_id, eos_token_id; /* for exports; -1 = init_from's, else the tokenizer's */
    int shape_from_ckpt;            /* resume: init_from's part came from a checkpoint (not a key) */

    /* [data] */
    char source[16];                /* synthetic | text | shards */
    char train_path[CFG_STR];       /* file (text) or glob (shards) */
    char val_path[CFG_STR];         /* optional held-out glob/file */
    double val_fraction;            /* held out from train when val_path empty */
    int64_t synthetic_digits, synthetic_samples;
    char tokenizer[CFG_STR];        /* tokenizer.json for sample and export, or empty */

    /* [train] */
    char run_dir[CFG_STR];
    char backend[16];               /* auto | cpu | cuda */
    char precision[8];              /* auto | fp32 | tf32 | bf16 | fp16 (auto: fp32 on cpu, bf16 on cuda) */
    double loss_scale;              /* fp16: 0 = dynamic, N = fixed */
    double loss_scale_init;         /* dynamic scaler's first scale; 0 = 65536 under fp16, no scaling otherwise */
    int64_t loss_scale_window;      /* clean steps that double a dynamic scale */
    int64_t seed, max_steps, global_batch, micro_batch, threads;
    int64_t flush_denormals;   /* cpu backend: subnormal floats flushed to zero (FTZ/DAZ) */
    char zero[8];                   /* ZeRO stage 1 | 2 | 3 | auto (the lowest whose memory plan fits) */
    char cpu_gemm[16];              /* auto | openblas | onednn | blis (cpu backend's matrix-product library; auto: the fastest on the model's shapes, timed at start and cached in the run directory) */
    char recompute[8];              /* none | layers | auto (rerun each layer's forward in its backward; auto: layers when the memory plan with none does not fit) */
    double lr, min_lr, warmup_steps, weight_decay, beta1, beta2, adam_eps, grad_clip;
    int min_lr_auto;                /* min_lr was auto: resolved to lr / 10 (a number from here on) */
    int64_t val_every, val_batches, log_every;

    /* [checkpoint] */
    int64_t ckpt_interval_steps, ckpt_keep_last, ckpt_keep_every, ckpt_level, ckpt_chunk_kib;
    double ckpt_interval_seconds;   /* CFG_AUTO: Young/Daly from what the run observes */
    double ckpt_min_seconds, ckpt_max_seconds;   /* bounds of auto */
    double ckpt_overhead_percent;                /* auto: saves this cheap are taken anyway */
    char ckpt_codec[16];            /* none | zstd | shuffle-zstd | planes-zstd */
    char ckpt_busy[8];              /* skip | wait */
    char ckpt_on_save[CFG_STR];
    int64_t ckpt_required, ckpt_threads;
    char ckpt_remote[CFG_STR];      /* s3://bucket/prefix; empty = local only */
    char ckpt_endpoint[CFG_STR];    /* S3-compatible service (path-style); empty = AWS */
    int64_t ckpt_remote_retries, ckpt_remote_part_mib, ckpt_remote_parallel;
    double ckpt_remote_stall_seconds; /* a request moving < 1 KiB/s this long is retried */
    char ckpt_region[64];           /* empty = AWS_REGION, AWS_DEFAULT_REGION, else us-east-1 */

    /* [spot] */
    char provider[16];              /* auto | aws | gcp | azure | alibaba | file | none */
    double poll_seconds, grace_seconds, watchdog_seconds;
    double comm_timeout_seconds;    /* a collective waiting longer on a peer exits 86; 0 = forever */
    char metadata_url[CFG_STR];
    char notice_file[CFG_STR];
    char vm_name[256];              /* azure: this VM's name; empty = ask IMDS */

    /* [comm] */
    char comm_overlap[8];           /* true | false: ZeRO 2-3 bucket exchanges on a comm worker thread */
    char comm_reduce[8];            /* chain | nccl (cuda only: ncclReduceScatter, not bitwise the CPU's) */

    /* [cost] */
    int64_t nodes, ondemand_nodes, gpus_per_node;
    char gpu[32];                   /* a100 | h100 | h200 | custom */
    double peak_tflops, mfu, tokens, ondemand_hours, spot_hours, throughput_ratio;
    double interruptions_per_hour, restart_minutes, ckpt_stall_seconds, ckpt_interval_minutes;
    double gpu_memory_gib;
    double network_gbps;            /* per node, for the communication share of a step; 0 = unknown */

    /* [price.NAME] */
    cost_price prices[COST_MAX_PRICES];
    int n_prices;

    /* [metrics] */
    char textfile[CFG_STR];
    int64_t metrics_every;

    /* 1 per key of the table that the file or --set gave (not a default). */
    unsigned char given[CFG_MAX_KEYS];
} cfg;

/* Loads defaults + path (may be NULL: defaults only) + overrides ("sec.key=v").
 * Errors print one line naming file:line and key; returns ST_CONFIG,
 * ST_NOINPUT, or ST_OK. Model shape keys left at 0 are filled from the preset. */
int cfg_load(cfg *c, const char *path, char **overrides, int n_overrides);

/* resume: where a checkpoint exists, its resolved config (malloc'd text,
 * and a name for messages) instead of model.init_from's files. ST_OK;
 * ST_NOINPUT when there is none; another status when it cannot say. */
typedef int (*cfg_ckpt_fn)(const struct cfg *c, char **text, char *name, size_t cap);
/* cfg_load for resume: init_from's shape and [model] keys come from the
 * newest checkpoint fn finds, and then nothing under init_from is opened. */
int cfg_load_resume(cfg *c, const char *path, char **overrides, int n_overrides, cfg_ckpt_fn fn);

/* Same, from INI text in memory (a checkpoint's resolved config); name is
 * used in messages. */
int cfg_load_text(cfg *c, const char *name, const char *text, char **overrides, int n_overrides);

/* Canonical INI text of every key (malloc'd): the resolved config that goes
 * into checkpoints and --dry-run output. */
char *cfg_render(const cfg *c);

/* Section + key lookup for code that needs to print or compare one value. */
int cfg_value_string(const cfg *c, const char *section, const char *key, char *out, int cap);

/* 1 when the user's file or --set gave section.key; key NULL: any key of
 * the section. Lets a command print only what its input determines. */
int cfg_is_given(const cfg *c, const char *section, const char *key);
/* The S3 client's options for [checkpoint] remote (endpoint, region; the
 * instance role from spot.metadata_url when that is set). */
void cfg_s3_opts(const cfg *c, s3_opts *o);

/* The text of sample.ini compiled into the binary (the defaults). */
extern const char cfg_sample_ini[];

#endif
