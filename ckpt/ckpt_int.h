/* Private to ckpt/: the parsed manifest (chunk index per shard), the chunk
 * codecs, limits a hostile manifest is checked against, and small file
 * helpers shared by the writer, reader, store and CLI. */
#ifndef SPOTRAIN_CKPT_INT_H
#define SPOTRAIN_CKPT_INT_H

#include "ckpt.h"

#include <stdint.h>
#include <stddef.h>

#define CKPT_FORMAT_VERSION 1
#define CKPT_MAX_CHUNK ((uint64_t)64 << 20)   /* raw bytes per chunk */
#define CKPT_MIN_CHUNK 4
#define CKPT_MAX_FLOATS ((uint64_t)1 << 40)   /* 4 TiB per array: far above 67B */
#define CKPT_MAX_WORLD 65536
#define CKPT_MAX_PARAMS 1000000
#define CKPT_MAX_DIM ((int64_t)1 << 24)
#define CKPT_ERR 1024

typedef struct {
    int array, codec;
    uint64_t lo, n;          /* flat float index and count */
    uint64_t off, stored;    /* byte offset and length in the shard file */
    uint64_t h_stored, h_raw;
} ckpt_chunk;

/* Codec work space, one per thread. */
typedef struct {
    void *cctx, *dctx;
    uint8_t *tmp;
    size_t tmp_cap;
} ckpt_codec_ws;

/* What reading one chunk needs: its stored bytes, decoded bytes, codec scratch. */
typedef struct {
    uint8_t *sbuf, *rbuf;
    size_t scap, rcap;
    ckpt_codec_ws ws;
} ckpt_cbuf;

typedef struct {
    int rank;
    uint64_t lo, hi, file_bytes;
    ckpt_chunk *chunks;
    size_t n_chunks;
    int fd;                  /* opened on first read; -1 before */
} ckpt_shard;

struct ckpt_reader {
    char dir[4096];
    ckpt_info info;
    uint64_t chunk_bytes;
    model_param *params;
    int n_params;
    ckpt_shard *shards;
    int n_shards;
    ckpt_cbuf cb;                 /* buffers of the serial reads */
    int threads;                  /* chunk verification threads; <= 1: serial */
    char err[CKPT_ERR];
};

const char *ckpt_codec_name(int codec);
const char *ckpt_array_name(int array);
/* Largest stored size a chunk of raw_len bytes may have under codec. */
size_t ckpt_codec_bound(int codec, size_t raw_len);
/* Encodes raw (raw_len a multiple of 4) into out (cap >= bound). Sets
 * *used_codec: a chunk that would not shrink is stored as CKPT_CODEC_NONE. */
int ckpt_codec_encode(ckpt_codec_ws *ws, int codec, int level, const void *raw, size_t raw_len,
                      void *out, size_t cap, size_t *out_len, int *used_codec);
/* Decodes exactly raw_len bytes; returns 0, or -1 with why in err. */
int ckpt_codec_decode(ckpt_codec_ws *ws, int codec, const void *in, size_t in_len, void *raw,
                      size_t raw_len, char *err, size_t errcap);
void ckpt_codec_ws_free(ckpt_codec_ws *ws);
uint64_t ckpt_hash(const void *p, size_t n);

/* Manifest: parse and validate from memory (fills r, or r->err + ST_DATA). */
int ckpt_manifest_parse(ckpt_reader *r, const char *text, size_t len);
void ckpt_reader_reset(ckpt_reader *r);
/* Opening and checking without printing: the message lands in err. */
int ckpt_open_quiet(ckpt_reader **r, const char *step_dir, char *err, size_t errcap);
int ckpt_verify_quiet(ckpt_reader *r);
int ckpt_read_range_quiet(ckpt_reader *r, int array, size_t lo, size_t hi, float *out);
int ckpt_verify_digest(ckpt_reader *r, char dig[CKPT_N_ARRAYS][17]);
/* Threads for a foreground verify (inspect, verify, resume): OpenMP's
 * default, i.e. OMP_NUM_THREADS or every core. */
int ckpt_threads_all(void);

/* Directory helpers. */
/* "step-00000012" -> 12 (kind 0), "step-00000012.tmp"/"step-...*.tmp" -> kind 1; -1 if neither. */
int ckpt_name_step(const char *name, int64_t *step);
int ckpt_rm_rf(const char *path);
/* Committed steps under ckpt_dir, ascending; *n set. Caller frees. */
int ckpt_list_steps(const char *ckpt_dir, int64_t **steps, int *n);
/* Removes leftover *.tmp directories whose step is below below (all when
 * below < 0) and those left by an interrupted delete. */
void ckpt_clean_tmp(const char *ckpt_dir, int64_t below);
/* Deletes what keep_last/keep_every drop, never the only checkpoint that
 * verifies. fresh: the step this process just committed (trusted while its
 * manifest parses and file sizes match), or -1 to verify everything. */
int ckpt_rotate(const char *ckpt_dir, int64_t keep_last, int64_t keep_every, int64_t fresh);
int ckpt_write_file(const char *path, const void *buf, size_t len, char *err, size_t errcap);


/* What one rank's save records, copied at submit (the writer owns it). */
typedef struct {
    int64_t step;
    uint64_t tokens;
    double elapsed_seconds, loss_scale, lr;
    int world, rank;
    char *config_text;
    model_shape shape;
    uint64_t n_floats, lo, hi;
    int codec, level;
    uint64_t chunk_bytes;
} ckpt_save_desc;

/* Per-shard index (shard-RRRRR.json) text; caller frees. */
char *ckpt_shard_index_text(const ckpt_save_desc *d, const ckpt_chunk *chunks, size_t n, uint64_t file_bytes);
/* Assembles manifest.json text from the world shard indexes in tmp_dir. */
int ckpt_manifest_assemble(const char *tmp_dir, int world, char **text, char *err, size_t errcap);
/* Commit protocol on rank 0: manifest, fsyncs, rename. Fills res. */
int ckpt_store_commit(const char *ckpt_dir, int64_t step, int world, ckpt_result *res, char *err, size_t errcap);
void ckpt_run_on_save(const char *cmd, const char *path, int64_t step);

#endif
