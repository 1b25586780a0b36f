/* The checkpoint and stop protocol shared by all ranks: when a snapshot is
 * taken, when it counts as written, committed and durable, and how a stop
 * agreed by every rank ends with the newest state durable. The states and
 * their transitions are documented at the top of protocol.c. */
#ifndef SPOTRAIN_PROTOCOL_H
#define SPOTRAIN_PROTOCOL_H

#include <stdint.h>
#include "ckpt/ckpt.h"
#include "ckpt/upload.h"

/* Flags every rank contributes to the per-step agreement (element-wise max). */
enum { PROTO_STOP, PROTO_DUE, PROTO_NOT_WRITTEN, PROTO_FAILED, PROTO_COMMITTED, PROTO_UP_BUSY, PROTO_N };

/* One line of the upload record: a rank's shard phase (rank >= 0) or the
 * whole checkpoint once its manifest landed (rank -1). status: "ok",
 * "already" (the remote held the same checkpoint), "skipped" (rotated away
 * locally first), "failed". */
typedef struct {
    int64_t step;
    int rank, ranks;
    const char *status;
    uint64_t bytes;
    double seconds;
    const char *why;
} proto_upload;

typedef struct {
    ckpt_writer *w;
    int rank, world;
    int required;            /* checkpoint.required: a failed save stops the run */
    int64_t durable;         /* newest committed step every rank knows of, -1 none */
    int64_t inflight;        /* step submitted and not yet committed, -1 none */
    double last_write_s;     /* duration of the newest background write (rank 0's) */
    /* Rank 0: told of each new durable checkpoint (the ledger, the log). */
    void (*on_commit)(void *arg, const ckpt_result *r);
    void *arg;
    /* The remote copy (upload.c does the transfers; up NULL: none). */
    ckpt_uploader *up;
    int64_t keep_last, keep_every;
    int64_t remote;          /* newest step complete on the remote (every rank agrees), -1 none */
    int64_t up_target;       /* step being uploaded, -1 none */
    int up_phase;            /* 0: every rank's shards; 1: rank 0's manifest */
    int64_t up_started;      /* newest step whose upload started, -1 none */
    double up_t0;            /* util_now() when up_target started */
    uint64_t up_bytes;       /* up_target's shard bytes over all ranks */
    double up_last_s;        /* how long the newest complete upload took (0: none yet) */
    char up_why[512];        /* the newest upload failure */
    /* Rank 0: each upload record (the ledger, the log). */
    void (*on_upload)(void *arg, const proto_upload *u);
} proto;

/* What the stop did: the outcome recorded in the ledger. */
typedef enum { PROTO_FINAL_NOT_NEEDED, PROTO_FINAL_OK, PROTO_FINAL_FAILED, PROTO_FINAL_SKIPPED } proto_final;

void proto_init(proto *p, ckpt_writer *w, int rank, int world, int required, int64_t durable);
/* Resumed from this run's remote copy of step: that copy is complete there,
 * and nothing of it needs uploading (the local run_dir may not hold it). */
void proto_remote_known(proto *p, int64_t step);
/* Checks the invariants (tests; and cheap enough to call every step). */
int proto_check(const proto *p);

/* IDLE -> SNAPSHOT: takes the snapshot (the stall) and queues the write. */
int proto_submit(proto *p, const ckpt_meta *m, int *skipped);
/* This rank's part of the per-step agreement. */
void proto_flags(proto *p, int64_t flags[PROTO_N]);
/* After the agreement: WRITTEN -> COMMITTING on rank 0 when every rank wrote
 * the in-flight step; a failure drops it (or, when required, fails). */
int proto_advance(proto *p, const int64_t flags[PROTO_N], int64_t *failed_step);
/* Rank 0: COMMITTING -> DURABLE once the writer reports the commit; calls
 * on_commit for it. */
void proto_collect(proto *p);
/* Every rank takes rank 0's view of durable (before a collective decision). */
int proto_sync_durable(proto *p);
/* Collective: waits for this rank's shard of step, agrees every rank wrote
 * it, has rank 0 commit it and waits for the commit. The waits are short
 * agreements in a loop, so a peer that stops answering ends it within
 * spot.comm_timeout_seconds (comm_failed's code) however slow a disk is. */
int proto_commit_step(proto *p, int64_t step, double timeout_s);
/* Collective, blocking: makes m->step durable (the last step, a stop, busy = wait). */
int proto_save_now(proto *p, const ckpt_meta *m, double timeout_s);
/* Collective: the stop at m->step with the agreed deadline (wall clock).
 * Rank 0 decides whether a final save fits; everyone follows. Fills
 * *final, and why (one line for the log and the ledger). When a peer
 * stopped answering it returns at once with comm_failed's code. */
int proto_stop(proto *p, const ckpt_meta *m, double deadline, proto_final *final, char *why, size_t cap);

const char *proto_final_name(proto_final f);

/* The remote copy, driven by the agreed flags PROTO_COMMITTED (rank 0's
 * durable step) and PROTO_UP_BUSY (a rank's uploader is working). Every
 * rank runs the same transitions. ST_IOERR when an upload failed and
 * checkpoint.required = 1. */
int proto_upload_advance(proto *p, int64_t committed, int busy);
/* Collective, blocking until the newest durable step (rank 0's) is complete
 * on the remote or the deadline (wall clock) passes: ST_OK; ST_TEMPFAIL
 * when it did not complete (why in p->up_why); ST_IOERR when it failed and
 * checkpoint.required = 1. ST_OK at once without a remote. */
int proto_upload_flush(proto *p, double deadline);
/* Seconds a checkpoint's upload is expected to take (0 without a remote). */
double proto_upload_need(const proto *p);

#endif
