/* The remote copy of committed checkpoints: one uploader thread per rank
 * that sends this rank's files of a local step directory to object storage
 * (rank 0 also sends manifest.json, last), and the rotation of the remote
 * copy. When to start which phase is the protocol's business (train/). */
#ifndef SPOTRAIN_UPLOAD_H
#define SPOTRAIN_UPLOAD_H

#include <stdint.h>
#include "s3/s3.h"

/* What the newest finished job did. */
typedef struct {
    int64_t step;            /* -1: no job finished yet */
    int status;              /* ST_OK or the failure's code */
    int already;             /* the remote held this checkpoint already (same manifest bytes) */
    int gone;                /* the local files were rotated away before they could be opened */
    uint64_t bytes;          /* payload sent */
    double seconds;          /* the job, from its start to its end */
    double done_at;          /* util_now() at its end */
    char why[512];           /* failure line */
} ckpt_upload_result;

typedef struct ckpt_uploader ckpt_uploader;

/* Opens the S3 client (credentials are looked up now: a missing one is
 * ST_CONFIG here, not a failed upload later) and starts the thread. */
int ckpt_uploader_open(ckpt_uploader **u, const s3_opts *o, const char *ckpt_dir, int rank);
/* Shard phase of committed step: opens this rank's shard-RRRRR.bin and
 * .json (rank 0 also manifest.json) at once, so local rotation cannot take
 * them away, and queues the upload. Files already gone: no job, a result
 * with gone = 1. ST_SOFTWARE while a job runs. Never blocks on the network. */
int ckpt_uploader_start(ckpt_uploader *u, int64_t step);
/* Rank 0, after every rank's shard phase succeeded: manifest.json (held
 * open since start), then the remote rotation with keep_last/keep_every. */
int ckpt_uploader_finish(ckpt_uploader *u, int64_t step, int64_t keep_last, int64_t keep_every);
int ckpt_uploader_busy(ckpt_uploader *u);
/* ST_OK once idle, ST_TEMPFAIL when timeout_s passed first. */
int ckpt_uploader_wait(ckpt_uploader *u, double timeout_s);
void ckpt_uploader_result(ckpt_uploader *u, ckpt_upload_result *r);
/* Ends the request in flight (the run exits at its deadline). */
void ckpt_uploader_cancel(ckpt_uploader *u);
/* Cancels what runs, joins the thread, closes the files and the client. */
void ckpt_uploader_close(ckpt_uploader *u);
/* s3://bucket/prefix/step-%08d/ of step, for log lines. */
void ckpt_uploader_url(const ckpt_uploader *u, int64_t step, char *out, size_t cap);

/* Remote rotation: of the complete checkpoints (those with a manifest
 * object) under the client's prefix, keeps the newest keep_last, every
 * keep_every-th step and fresh; deletes the others manifest first, then
 * the rest of their objects, so a half-deleted checkpoint is never listed as
 * complete. Objects of incomplete steps older than fresh (a failed or
 * abandoned upload) go too. keep_last <= 0: nothing is deleted. *deleted:
 * checkpoints removed. */
int ckpt_remote_rotate(s3_client *c, int64_t keep_last, int64_t keep_every, int64_t fresh, int *deleted);

/* The pure part, for tests (ckpt_remote_key_step, in ckpt.h, parses keys). */
/* steps ascending and distinct, complete[i]: it has a manifest. Sets
 * drop[i] for each step the rotation deletes. */
void ckpt_remote_plan(const int64_t *steps, const int *complete, int n, int64_t keep_last, int64_t keep_every,
                      int64_t fresh, char *drop);

#endif
