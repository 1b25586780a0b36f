/* Checkpoints: the on-disk format (manifest.json + chunked, checksummed,
 * optionally compressed shard files), the asynchronous writer, commit and
 * rotation, and the paranoid reader used by resume, inspect and verify. */
#ifndef SPOTRAIN_CKPT_H
#define SPOTRAIN_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "model/shape.h"

enum { CKPT_PARAMS = 0, CKPT_ADAM_M = 1, CKPT_ADAM_V = 2, CKPT_N_ARRAYS = 3 };
/* PLANES_ZSTD: rotate each fp32 word left by one bit so the 8 exponent bits
 * fill one byte, split into 4 byte planes, zstd each plane on its own and
 * keep a plane raw when zstd does not shrink it. */
enum { CKPT_CODEC_NONE = 0, CKPT_CODEC_ZSTD = 1, CKPT_CODEC_SHUFFLE_ZSTD = 2, CKPT_CODEC_PLANES_ZSTD = 3,
       CKPT_N_CODECS = 4 };

/* Room for one checkpoint error message (the *_quiet calls' err). */
#define CKPT_ERR 1024

/* Loss scaling a checkpoint records (manifest "loss_scaling"); an older
 * manifest without the field reads as OFF. */
enum { CKPT_SCALING_OFF = 0, CKPT_SCALING_FIXED = 1, CKPT_SCALING_DYNAMIC = 2 };

typedef struct {
    int codec;               /* CKPT_CODEC_* */
    int level;               /* zstd level */
    size_t chunk_bytes;      /* raw bytes per chunk (a multiple of 4) */
    int threads;             /* compression threads for the background writer */
    int64_t keep_last, keep_every;
    int busy_wait;           /* 1: submit waits for the previous save; 0: skip */
    char on_save[1024];      /* shell command run after a commit; "" = none */
} ckpt_opts;

/* One named array of the flat vector (Hugging Face name and shape). */
typedef struct {
    char name[96];
    int ndim;                 /* 1 or 2 */
    int64_t shape[2];         /* shape[1] is 1 when ndim is 1 */
    uint64_t offset, numel;   /* in floats */
} ckpt_tensor;

/* What the flat vector holds: tensors back to back from offset 0 in order,
 * n_floats in all. The caller owns tensors. */
typedef struct {
    model_shape model;        /* the dims export and resume need */
    const ckpt_tensor *tensors;
    int n;
    uint64_t n_floats;
} ckpt_table;

/* Where a save's bytes come from. fill runs on the caller's thread inside
 * submit (the stall) and writes params | m | v of [lo,hi) back to back into
 * dst (3*(hi-lo) floats); a device backend may only start an asynchronous
 * copy there. fence (may be NULL) runs on the writer thread before the first
 * byte of dst is read, and waits for such a copy. Both return ST_*. */
typedef struct {
    int (*fill)(void *arg, float *dst, size_t lo, size_t hi);
    int (*fence)(void *arg);
    void *arg;
} ckpt_source;

/* The common source: three host arrays, each pointing at element base of
 * its flat array. fill = ckpt_host_fill, arg = a ckpt_host_arrays. */
typedef struct {
    const float *arrays[CKPT_N_ARRAYS];
    size_t base;
} ckpt_host_arrays;
int ckpt_host_fill(void *arg, float *dst, size_t lo, size_t hi);

/* What a save records besides the arrays. */
typedef struct {
    int64_t step;
    uint64_t tokens;
    double elapsed_seconds;   /* training time so far, restarts excluded */
    double loss_scale;        /* 1.0 when no loss scaling runs */
    int loss_scaling;         /* CKPT_SCALING_*: how loss_scale moves */
    int64_t loss_scale_clean; /* dynamic: consecutive clean steps toward the next doubling */
    double lr;                /* learning rate at this step (schedule position) */
    int world_size, rank;
    /* What computed the state, for the continuity check on resume (NULL:
     * not recorded): backend, precision, device model, library versions,
     * the gradient reduction ([comm] reduce: "chain" | "nccl"). */
    const char *backend, *precision, *device, *libraries, *reduce;
    const char *config_text;  /* resolved INI text */
    const ckpt_table *table;  /* copied at submit */
    size_t lo, hi;            /* this rank's range: the one the writer was opened with */
    ckpt_source src;
} ckpt_meta;

typedef struct {
    int64_t step;
    double stall_ms, write_ms;
    uint64_t raw_bytes, stored_bytes;
    char path[1024];
} ckpt_result;

typedef struct ckpt_writer ckpt_writer;

/* One writer per rank and checkpoint directory, for this rank's range
 * [lo,hi) of the flat vector. Reserves the snapshot buffer (params | m | v,
 * 3*(hi-lo) floats) and touches every page of it now, so the first save
 * stalls no longer than later ones, and starts the writer thread and the
 * compression workers. */
int ckpt_writer_open(ckpt_writer **w, const char *ckpt_dir, const ckpt_opts *o, int rank, int world, size_t lo,
                     size_t hi);
/* The snapshot buffer, so a device backend can page-lock it once. */
float *ckpt_writer_buffer(ckpt_writer *w, size_t *bytes);
/* Snapshots the arrays through m->src.fill (the only stall) and queues the
 * shard write. With a save in flight: waits for it when busy_wait is 1;
 * otherwise returns ST_OK at once with *skipped = 1 (else *skipped = 0). */
int ckpt_writer_submit(ckpt_writer *w, const ckpt_meta *m, int *skipped);
/* Non-blocking: step of the newest shard this rank finished writing (-1 none),
 * and whether the writer failed (then *err holds the status). */
int64_t ckpt_writer_written(ckpt_writer *w, int *err);
int ckpt_writer_busy(ckpt_writer *w);
/* Rank 0, once every rank's shard for step is written: writes the manifest,
 * renames step-N.tmp to step-N, fsyncs, rotates, runs on_save. Queued on the
 * writer thread; ckpt_writer_committed reports completion. */
int ckpt_writer_commit(ckpt_writer *w, int64_t step);
int64_t ckpt_writer_committed(ckpt_writer *w, ckpt_result *res);
/* Blocks until the queue is empty (or timeout_s passes: returns ST_TEMPFAIL). */
int ckpt_writer_drain(ckpt_writer *w, double timeout_s);
/* Ends the writer's thread (after what it is doing), keeping its buffer:
 * a backend that page-locked the buffer unpins it before it is freed. */
void ckpt_writer_stop(ckpt_writer *w);
void ckpt_writer_close(ckpt_writer *w);

/* Reading. */
typedef struct ckpt_reader ckpt_reader;
typedef struct {
    int format_version;
    int unsealed;             /* 1: an older format without the manifest checksum */
    char spotrain_version[32];
    int64_t step;
    uint64_t tokens;
    double elapsed_seconds, loss_scale, lr;
    int loss_scaling;         /* CKPT_SCALING_* */
    int64_t loss_scale_clean;
    int world_size;
    /* "" when the manifest predates them */
    char backend[16], precision[16], device[128], libraries[256], reduce[16];
    uint64_t n_floats;
    model_shape model;
    char *config_text;
    int codec, level;
    uint64_t raw_bytes, stored_bytes;
    double saved_at;          /* wall clock seconds of the commit */
} ckpt_info;

/* Parses and validates manifest.json of one step directory; ST_DATA naming
 * the file and field on anything inconsistent. */
int ckpt_open(ckpt_reader **r, const char *step_dir);
const ckpt_info *ckpt_get_info(const ckpt_reader *r);
/* The tensor table the manifest records (checked to tile [0, n_floats)). */
const ckpt_tensor *ckpt_get_tensors(const ckpt_reader *r, int *n);
/* Reads [lo,hi) of one array, verifying every chunk it touches. */
int ckpt_read_range(ckpt_reader *r, int array, size_t lo, size_t hi, float *out);
/* Hands [lo,hi) of one array to fn piece by piece (each piece within one
 * chunk, in flat order, on the caller's thread), verifying every chunk as it
 * arrives. Chunks load on r's threads through a sliding window (remote
 * readers: CKPT_REMOTE_GETS ranged GETs in flight, CKPT_REMOTE_WINDOW chunks
 * held), so memory stays a few dozen chunks whatever the range. fn returns
 * ST_*; its failure stops the read and is returned (fn says why itself). */
typedef int (*ckpt_sink)(void *arg, size_t off, size_t n, const float *src);
int ckpt_read_each(ckpt_reader *r, int array, size_t lo, size_t hi, ckpt_sink fn, void *arg);
/* Stored bytes this reader has read so far (for a remote one: downloaded). */
uint64_t ckpt_bytes_read(const ckpt_reader *r);
/* The step directory or s3:// URL r reads, for messages. */
const char *ckpt_reader_name(const ckpt_reader *r);
/* Floats one read should ask for so that r keeps its window full (a
 * chunk's floats times the chunks it loads ahead; remote: many). */
size_t ckpt_read_span(const ckpt_reader *r);
/* Reads every chunk of every shard; ST_DATA naming checkpoint and chunk. */
int ckpt_verify(ckpt_reader *r);
/* xxh3-64 of the array's flat fp32 bytes, in flat order: the same whatever
 * the world size or codec that saved it. out gets 16 hex digits. */
int ckpt_digest(ckpt_reader *r, int array, char out[17]);
void ckpt_close(ckpt_reader *r);

/* Newest committed checkpoint under ckpt_dir that verifies; logs each one it
 * skipped and why. Returns ST_OK with path filled, ST_NOINPUT when none. */
int ckpt_find_latest(const char *ckpt_dir, char *path, size_t cap);
/* Count of committed step-* directories (for `train` refusing a used dir). */
int ckpt_count(const char *ckpt_dir);
/* Moves step-N, which failed verification, to CKPT_DIR.bad/ (RUN_DIR/ckpt.bad/),
 * out of reach of rotation and of a new commit of that step, kept for a
 * look; the new path in to. ST_IOERR when it cannot. */
int ckpt_set_aside(const char *ckpt_dir, int64_t step, char *to, size_t cap);

/* Remote checkpoints (remote.c): the objects of a step are the files of its
 * directory under PREFIX/step-%08d/ (s3_ckpt_key), manifest.json uploaded
 * last, so a step exists remotely iff its manifest object does. */
typedef struct s3_client s3_client;
#define CKPT_REMOTE_GETS 8   /* ranged GETs in flight per remote reader */
/* Chunks a remote reader holds, in flight or loaded and waiting their turn:
 * more than the GETs, so that one slow answer does not stop the GETs
 * behind it at once (bench/s3lat.sh). */
#define CKPT_REMOTE_WINDOW 32
/* Step `step` under the client's prefix; the reader borrows c (keep it open
 * until ckpt_close). ST_NOINPUT when its manifest.json does not exist. */
int ckpt_open_remote(ckpt_reader **r, s3_client *c, int64_t step, char *err, size_t errcap);
/* Steps under the client's prefix whose manifest.json exists, ascending. */
int ckpt_remote_steps(s3_client *c, int64_t **steps, int *n);
/* "s3://bucket/prefix/step-00000040" -> run "s3://bucket/prefix" and step 40;
 * a URL without a step component -> itself and -1. 0, or -1 when out is too
 * small or url is not s3://. Trailing slashes are ignored. */
int ckpt_s3_split(const char *url, char *run, size_t cap, int64_t *step);
/* A listed key after the "PREFIX/step-" it was listed under -> its step and
 * whether it is the manifest; -1 when the key is no step directory's object
 * (not ours). */
int ckpt_remote_key_step(const char *rest, int64_t *step, int *manifest);
/* An object key -> step when key is PREFIX/step-N/manifest.json (prefix ""
 * means no leading "PREFIX/"): 0, else -1. */
int ckpt_remote_manifest_step(const char *prefix, const char *key, int64_t *step);

/* Where resume looks, newest first: local steps under ckpt_dir and, with a
 * client, remote ones; a step held in both places comes local first (no
 * download). */
typedef struct {
    int64_t step;
    int remote;
} ckpt_cand;
/* Two ascending step lists -> candidates newest first (caller frees). */
int ckpt_cands_merge(const int64_t *local, int nl, const int64_t *remote, int nr, ckpt_cand **out, int *n);
int ckpt_candidates(const char *ckpt_dir, s3_client *c, ckpt_cand **out, int *n);
/* Whether candidate k is worth reading, its path or URL in path: a local
 * step is verified in full (as ckpt_find_latest does); a remote one has its
 * manifest checked and every shard object's size compared with it (each
 * rank then verifies the chunks it downloads). ST_OK; ST_DATA (skip it: err
 * says why); anything else (an unreachable service, refused credentials)
 * is a reason to stop, not to guess. */
int ckpt_candidate_check(const char *ckpt_dir, s3_client *c, const ckpt_cand *k, char *path, size_t cap, char *err,
                         size_t errcap);

/* Hugging Face LlamaForCausalLM: out_dir/model.safetensors + config.json. */
int ckpt_export(const char *step_dir, const char *out_dir);

/* Export options: dtype of the weights (bf16: round to nearest even),
 * shards of at most max_shard_bytes (0: one file) with
 * model.safetensors.index.json, and the tokenizer named by the checkpoint's
 * [data] tokenizer copied beside them (with its tokenizer_config.json). */
enum { CKPT_EXPORT_F32 = 0, CKPT_EXPORT_BF16 = 1 };
typedef struct {
    int dtype;
    uint64_t max_shard_bytes;
} ckpt_export_opts;
int ckpt_export_ex(const char *step_dir, const char *out_dir, const ckpt_export_opts *o);
/* The same from a reader already open (local or remote); r stays open. */
int ckpt_export_reader(ckpt_reader *r, const char *out_dir, const ckpt_export_opts *o);

int ckpt_codec_from_name(const char *name);
/* len bytes to path (created or truncated), fsynced: ST_OK, or ST_IOERR
 * with one line in err (CKPT_ERR bytes is room enough). */
int ckpt_write_file(const char *path, const void *buf, size_t len, char *err, size_t errcap);

#endif
