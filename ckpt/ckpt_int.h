/* Private to ckpt/: the parsed manifest (chunk index per shard), the chunk
 * codecs, limits a hostile manifest is checked against, the replaceable
 * file-system calls, the writeback stream, the worker pool, the reader's
 * input interface, and small file helpers shared by the writer, reader,
 * store and CLI.
 *
 * The files of ckpt/ call each other in one direction only: a file uses
 * files of lower layers, never its own layer's or a higher one's
 * (tests/cli/cli_layers.sh checks it on the objects' symbols):
 *   1. sys.c                    the file-system table
 *   2. codec.c pool.c writeback.c  codecs, workers, streaming writes
 *   3. manifest.c               names (step-N) and the manifest format:
 *                               build, seal, parse
 *   4. input.c                  a step directory as a reader input
 *   5. reader.c                 reads and verifies through any ckpt_input,
 *                               never knowing which
 *   6. store.c                  the directory: commit, rotation, the newest
 *                               that verifies
 *   7. writer.c remote.c        the asynchronous writer; object storage (the
 *                               S3 input, remote steps, resume's candidates)
 *   8. upload.c                 the uploader (its own header)
 * Only remote.c and upload.c include s3/; nothing here includes model/
 * beyond model/shape.h, nor spot/, money/ or train/. */
#ifndef SPOTRAIN_CKPT_INT_H
#define SPOTRAIN_CKPT_INT_H

#include "ckpt.h"

#include <stdint.h>
#include <stddef.h>
#include <dirent.h>
#include <pthread.h>
#include <sys/types.h>

/* 2: manifest.json ends with its own checksum (see manifest.c). 1 is still
 * read, with a note that its manifest is unprotected. */
#define CKPT_FORMAT_VERSION 2
#define CKPT_FORMAT_UNSEALED 1
#define CKPT_MAX_CHUNK ((uint64_t)64 << 20)   /* raw bytes per chunk */
#define CKPT_MIN_CHUNK 4
#define CKPT_MAX_FLOATS ((uint64_t)1 << 40)   /* 4 TiB per array: far above 67B */
#define CKPT_MAX_WORLD 65536
#define CKPT_MAX_PARAMS 1000000
#define CKPT_MAX_DIM ((int64_t)1 << 24)
#define CKPT_MAX_READ_THREADS 64    /* a reader's loading threads, whatever the core count */

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
} ckpt_shard;

/* Where a reader's bytes come from, chosen once when it opens: the files
 * of a step directory (input.c) or the objects of a remote step (remote.c).
 * The reading counterpart of the writer's ckpt_source. Each call returns
 * ST_* and, on failure, why in why[] without the checkpoint's name (the
 * reader prefixes it). */
typedef struct {
    /* manifest.json's text (caller frees); *counted: the bytes of it that
     * count as read (ckpt_bytes_read: a download counts, a local file not). */
    int (*manifest)(void *ctx, char **text, size_t *len, uint64_t *counted, char *why, size_t cap);
    /* Makes shard rank readable; on the reader's own thread, before any
     * fetch from that shard. */
    int (*open_shard)(void *ctx, int rank, char *why, size_t cap);
    /* Exactly len bytes of shard rank from off (ST_DATA when it holds
     * fewer); called from several reader threads at once. */
    int (*fetch)(void *ctx, int rank, uint64_t off, size_t len, void *buf, char *why, size_t cap);
    /* ST_DATA when shard rank is not bytes long (or missing). */
    int (*check_size)(void *ctx, int rank, uint64_t bytes, char *why, size_t cap);
    void (*close)(void *ctx);
    /* 1: a verify checks every size before reading any chunk (a size is
     * one cheap request, a chunk a download); 0: each shard's after its
     * chunks. */
    int sizes_first;
} ckpt_input_ops;

typedef struct {
    const ckpt_input_ops *ops;
    void *ctx;
} ckpt_input;

/* The files of step directory dir (input.c). ST_SOFTWARE when out of memory. */
int ckpt_input_dir(ckpt_input *in, const char *dir);

struct ckpt_reader {
    char dir[4096];
    ckpt_info info;
    uint64_t chunk_bytes;
    ckpt_tensor *tensors;
    int n_tensors;
    ckpt_shard *shards;
    int n_shards;
    ckpt_cbuf cb;                 /* buffers of the serial reads */
    int threads;                  /* chunk verification threads; <= 1: serial */
    char err[CKPT_ERR];
    ckpt_input in;                /* owned: closed by ckpt_close; ops NULL before it is set */
    int window;                   /* chunks loaded ahead of the one handed on; <= threads: threads */
    uint8_t **slots;              /* the window's decoded chunks (reader.c), kept between reads */
    int n_slots;
    ckpt_cbuf *work;              /* its workers' stored bytes and codec scratch, likewise */
    int n_work;
    uint64_t fetched;             /* stored bytes read so far, manifest included */
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

/* Manifest: parse and validate from memory (fills r, or r->err + ST_DATA).
 * A directory name of the form step-N(.tmp) must agree with the step. */
int ckpt_manifest_parse(ckpt_reader *r, const char *text, size_t len);
/* body (a JSON object, no trailing newline) -> the sealed manifest text:
 * body with its checksum appended as the last field, then "\n". Caller frees. */
char *ckpt_manifest_seal(const char *body, size_t len);
/* The table is usable: names unique, non-empty and [A-Za-z0-9._-]; shapes
 * positive with numel their product; offsets contiguous from 0; the sum is
 * n_floats. 0, or -1 with why in err. */
int ckpt_table_check(const ckpt_tensor *t, int n, uint64_t n_floats, char *err, size_t errcap);
void ckpt_reader_reset(ckpt_reader *r);
/* A fresh reader named dir ("s3://..." for a remote one), without an
 * input yet: its opener sets r->in; ST_USAGE when too long. */
int ckpt_reader_new(ckpt_reader **out, const char *dir, char *err, size_t errcap);
/* Reads and parses the manifest of a new reader's input; on failure closes
 * it (*rp = NULL) with why in err. */
int ckpt_reader_load(ckpt_reader **rp, char *err, size_t errcap);
/* Every shard the manifest names has the size it records; ST_DATA naming
 * the first that does not, in r->err. */
int ckpt_check_sizes(ckpt_reader *r);
/* Full verify of a local step (threads > 1 only in the foreground); why in err. */
int ckpt_good_ex(const char *ckpt_dir, int64_t step, int threads, int *unsealed, char *err, size_t errcap);
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


/* What one rank's save records, copied at submit (the writer owns it). */
typedef struct {
    int64_t step;
    uint64_t tokens;
    double elapsed_seconds, loss_scale, lr;
    int loss_scaling;
    int64_t loss_scale_clean;
    int world, rank;
    char backend[16], precision[16], device[128], libraries[256], reduce[16];
    char *config_text;
    model_shape model;
    ckpt_tensor *tensors;
    int n_tensors;
    uint64_t n_floats, lo, hi;
    int codec, level;
    uint64_t chunk_bytes;
} ckpt_save_desc;

const char *ckpt_scaling_name(int s);
/* Per-shard index (shard-RRRRR.json) text; caller frees. */
char *ckpt_shard_index_text(const ckpt_save_desc *d, const ckpt_chunk *chunks, size_t n, uint64_t file_bytes);
/* Assembles manifest.json text from the world shard indexes in tmp_dir. */
int ckpt_manifest_assemble(const char *tmp_dir, int world, char **text, char *err, size_t errcap);
/* Commit protocol on rank 0: manifest, fsyncs, rename. Fills res. */
int ckpt_store_commit(const char *ckpt_dir, int64_t step, int world, ckpt_result *res, char *err, size_t errcap);
void ckpt_run_on_save(const char *cmd, const char *path, int64_t step);
int ckpt_sync_dir(const char *dir, char *err, size_t errcap);

/* Every file-system call the checkpoint code makes goes through ckpt_os, so
 * tests inject ENOSPC, EIO or a failing rename without root or a special
 * file system (the idea of SQLite's os_unix.c aSyscall[]). */
typedef struct {
    int (*open)(const char *path, int flags, mode_t mode);
    int (*close)(int fd);
    ssize_t (*write)(int fd, const void *buf, size_t n);
    ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
    int (*fsync)(int fd);
    int (*fdatasync)(int fd);
    int (*sync_file_range)(int fd, off_t off, off_t n, unsigned int flags);
    int (*rename)(const char *from, const char *to);
    int (*unlink)(const char *path);
    int (*mkdir)(const char *path, mode_t mode);
    int (*rmdir)(const char *path);
    DIR *(*opendir)(const char *path);
} ckpt_sys;
extern const ckpt_sys *ckpt_os;
/* Tests only: replaces the table (NULL: the real calls again); *with must
 * outlive its use. Call it while no writer thread is inside a save. */
void ckpt_sys_replace(const ckpt_sys *with);
/* The real calls, for a test's fake to forward to. */
extern const ckpt_sys ckpt_sys_real;

/* Writeback (writeback.c): streams a file to disk while it is written, so a
 * shard never sits in the page cache as gigabytes of dirty data and the
 * final fsync finds little left to do. Policy lives here, not in the writer
 * that produces the bytes. */
typedef struct {
    int fd, hints;               /* hints: 0 once the file system refuses sync_file_range */
    uint64_t pos;                /* bytes written so far */
    uint64_t kicked, settled;    /* writeback started below kicked; finished and dropped below settled */
    pthread_t th;
    int live, th_started, stop, flush_err;
    uint64_t flush_to, flushed;  /* the flusher's target and progress */
    pthread_mutex_t mu;
    pthread_cond_t cv;
} ckpt_wb;
/* Starts streaming into fd (opened for writing, at offset 0). */
void ckpt_wb_open(ckpt_wb *s, int fd);
/* Appends len bytes and moves the writeback along; -1 with errno set. */
int ckpt_wb_write(ckpt_wb *s, const void *p, size_t len);
/* The rest to disk, background flusher stopped, fsync; -1 with errno set. */
int ckpt_wb_finish(ckpt_wb *s);
/* Stops the flusher without syncing (after a failure). Idempotent. */
void ckpt_wb_close(ckpt_wb *s);

/* A small pool of persistent workers fed jobs (the idea of zstd's
 * lib/common/pool.c): the compression threads live as long as the writer. */
typedef struct ckpt_pool ckpt_pool;
/* n threads; NULL when not even one could start. */
ckpt_pool *ckpt_pool_create(int n);
int ckpt_pool_size(const ckpt_pool *p);
/* Queues fn(arg) for the next idle worker; -1 when out of memory. */
int ckpt_pool_add(ckpt_pool *p, void (*fn)(void *arg), void *arg);
/* Waits until every queued job has finished. */
void ckpt_pool_wait(ckpt_pool *p);
void ckpt_pool_free(ckpt_pool *p);

#endif
