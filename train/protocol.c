/* The checkpoint and stop protocol. Every rank runs the same transitions at
 * the same step; only rank 0 commits, and decisions that depend on what
 * rank 0 alone knows are broadcast, so ranks never diverge.
 *
 * A checkpoint of step N moves through these states:
 *
 *   IDLE        nothing in flight (inflight = -1)
 *   SNAPSHOT    proto_submit: the backend's state of step N is copied into
 *               the writer's buffer (the only stall) and the shard write is
 *               queued; inflight = N
 *   WRITTEN     the writer thread of every rank finished its shard of N
 *               (seen through proto_flags in the per-step agreement)
 *   COMMITTING  proto_advance on rank 0 (after the agreement shows every
 *               rank WRITTEN): manifest, rename step-N.tmp -> step-N, fsync,
 *               queued on rank 0's writer thread; inflight = -1
 *   DURABLE     proto_collect on rank 0 sees the commit; durable = N on
 *               rank 0, on the others after proto_sync_durable
 *
 * A failed write (any rank) drops N in proto_advance: IDLE again, durable
 * unchanged (checkpoint.required turns it into an error instead).
 * proto_commit_step drives SNAPSHOT -> DURABLE synchronously (stop, last
 * step, busy = wait); proto_save_now adds the SNAPSHOT of the current step.
 * Their waits for WRITTEN and DURABLE are rounds of a tiny agreement every
 * 50 ms (proto_drain_all), not one long collective, so a rank waiting on a
 * peer's slow disk still hears from it and spot.comm_timeout_seconds can
 * bound them without mistaking a slow disk for a vanished peer.
 *
 * The stop:
 *
 *   RUNNING     every step proto_flags/comm_max combine the ranks' flags
 *   AGREED      a rank's flag was set: every rank enters proto_stop at the
 *               same step with the earliest deadline of any rank
 *   FLUSH       a checkpoint in flight is committed (proto_commit_step)
 *   DECIDED     rank 0 decides: the step is durable already (NOT_NEEDED),
 *               a final save fits before the deadline (SAVE), or it does
 *               not (SKIPPED); broadcast
 *   SAVED       proto_save_now for SAVE: OK or FAILED
 *   EXIT        the caller exits 75; what is durable is p->durable
 *
 * The remote copy (checkpoint.remote set; p->up). A durable step N moves on:
 *
 *   LOCAL       committed locally; rank 0 puts N into PROTO_COMMITTED of
 *               the per-step agreement, so every rank learns of it at the
 *               same step
 *   SHARDS      proto_upload_advance, when no upload is in progress and N
 *               is newer than the last one started: every rank opens its
 *               shard files of N (a barrier follows, so rank 0's rotation
 *               cannot remove them first) and its uploader thread sends them
 *   SENT        the agreement shows no rank busy (PROTO_UP_BUSY): the ranks
 *               sum their results (bytes, seconds, status) in one allreduce
 *   MANIFEST    all succeeded: rank 0's uploader sends manifest.json, then
 *               rotates the remote copy
 *   REMOTE      rank 0's result is broadcast; remote = N on every rank
 *
 * A failure in SHARDS or MANIFEST drops N (nothing is deleted; the next
 * commit starts afresh), or stops the run when checkpoint.required = 1.
 * Why the agreement rides on the per-step flags: the decision to start or
 * finish a phase then falls on the same step for every rank with no extra
 * message per step, and only the two phase ends cost a collective of their
 * own. One upload at a time: a commit that lands while one runs waits, and
 * the uploader takes the newest commit when it is free (intermediate ones
 * are not uploaded), so memory stays one part buffer set per rank.
 * proto_upload_flush drives the same transitions in a loop (exit, stop).
 *
 * Invariants (proto_check): -1 <= durable; inflight is -1 or > durable. */
#include "protocol.h"
#include "comm/comm.h"
#include "spot/spot.h"
#include "util/util.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

void proto_init(proto *p, ckpt_writer *w, int rank, int world, int required, int64_t durable)
{
    memset(p, 0, sizeof *p);
    p->w = w;
    p->rank = rank;
    p->world = world;
    p->required = required;
    p->durable = durable;
    p->inflight = -1;
    p->remote = -1;
    p->up_target = -1;
    p->up_started = -1;
}

void proto_remote_known(proto *p, int64_t step)
{
    p->remote = p->up_started = step;
}

int proto_check(const proto *p)
{
    if (p->durable < -1 || (p->inflight != -1 && p->inflight <= p->durable))
        return util_fail(ST_SOFTWARE, "checkpoint protocol: inconsistent state (durable %lld, in flight %lld)",
                         (long long)p->durable, (long long)p->inflight);
    return ST_OK;
}

const char *proto_final_name(proto_final f)
{
    static const char *names[] = {"not_needed", "ok", "failed", "skipped"};
    return names[f];
}

int proto_submit(proto *p, const ckpt_meta *m, int *skipped)
{
    int rc = ckpt_writer_submit(p->w, m, skipped);
    if (rc == ST_OK && !*skipped)
        p->inflight = m->step;
    return rc;
}

void proto_flags(proto *p, int64_t flags[PROTO_N])
{
    int err = 0;
    int64_t written = ckpt_writer_written(p->w, &err);
    flags[PROTO_NOT_WRITTEN] = p->inflight >= 0 && written != p->inflight;
    flags[PROTO_FAILED] = err != 0;
    flags[PROTO_COMMITTED] = p->rank == 0 ? p->durable : -1;
    flags[PROTO_UP_BUSY] = p->up && ckpt_uploader_busy(p->up);
}

void proto_collect(proto *p)
{
    ckpt_result res;
    if (p->rank != 0)
        return;
    int64_t s = ckpt_writer_committed(p->w, &res);
    if (s <= p->durable)
        return;
    p->durable = s;
    p->last_write_s = res.write_ms / 1000.0;
    if (p->on_commit)
        p->on_commit(p->arg, &res);
}

static const char *proto_step_name(int64_t step, char *buf, size_t cap)
{
    if (step < 0)
        snprintf(buf, cap, "none");
    else
        snprintf(buf, cap, "step %lld", (long long)step);
    return buf;
}

int proto_advance(proto *p, const int64_t flags[PROTO_N], int64_t *failed_step)
{
    char d[32];
    int rc = ST_OK;
    *failed_step = -1;
    if (flags[PROTO_FAILED]) {
        *failed_step = p->inflight;
        if (p->required)
            return util_fail(ST_IOERR, "checkpoint of step %lld failed and checkpoint.required = 1; stopping "
                             "(the newest durable checkpoint: %s)", (long long)p->inflight,
                             proto_step_name(p->durable, d, sizeof d));
        p->inflight = -1;
    } else if (p->inflight >= 0 && !flags[PROTO_NOT_WRITTEN]) {
        if (p->rank == 0)
            rc = ckpt_writer_commit(p->w, p->inflight);
        p->inflight = -1;
    }
    proto_collect(p);
    return rc;
}

int proto_sync_durable(proto *p)
{
    double v[2] = {(double)p->durable, p->last_write_s};
    int rc = comm_bcast(v, sizeof v, 0);
    p->durable = (int64_t)v[0];
    p->last_write_s = v[1];
    return rc;
}

/* Waits with every rank until every rank's writer queue is empty (ST_OK)
 * or the deadline passed on some rank (ST_TEMPFAIL on all). The wait for a
 * peer's disk or on_save is a series of short agreements, one per 50 ms,
 * so spot.comm_timeout_seconds measures a peer's silence, never its disk. */
static int proto_drain_all(proto *p, double timeout_s)
{
    double end = util_now() + timeout_s;
    for (;;) {
        double left = end - util_now();
        int64_t f[2];
        f[0] = ckpt_writer_drain(p->w, left < 0.05 ? (left > 0 ? left : 0) : 0.05) != ST_OK;
        f[1] = util_now() >= end;
        int rc = comm_max(f, 2);
        if (rc != ST_OK)
            return rc;
        if (!f[0])
            return ST_OK;
        if (f[1])
            return ST_TEMPFAIL;
    }
}

int proto_commit_step(proto *p, int64_t step, double timeout_s)
{
    comm_test_freeze("commit");
    int rc = proto_drain_all(p, timeout_s), err = 0, crc;
    if (comm_failed(NULL))
        return rc;
    int64_t flags[PROTO_N] = {0};
    int64_t written = ckpt_writer_written(p->w, &err);
    flags[PROTO_NOT_WRITTEN] = rc != ST_OK || err || written != step;
    if ((crc = comm_max(flags, PROTO_N)) != ST_OK)
        return crc;
    p->inflight = -1;
    if (flags[PROTO_NOT_WRITTEN])
        return rc != ST_OK ? rc : util_fail(ST_IOERR, "checkpoint of step %lld was not written (see above); "
                                             "the newest durable one is kept", (long long)step);
    if (p->rank == 0)
        rc = ckpt_writer_commit(p->w, step);
    /* Every rank waits for rank 0's commit in the same short rounds. */
    crc = proto_drain_all(p, timeout_s);
    if (comm_failed(NULL))
        return crc;
    if (rc == ST_OK)
        rc = crc;
    if (p->rank == 0) {
        if (rc == ST_OK)
            proto_collect(p);
        if (rc == ST_OK && p->durable != step)
            rc = util_fail(ST_IOERR, "commit of checkpoint step %lld did not complete", (long long)step);
    }
    int64_t st = rc;
    if ((crc = comm_max(&st, 1)) != ST_OK)
        return crc;
    return (int)st;
}

int proto_save_now(proto *p, const ckpt_meta *m, double timeout_s)
{
    int rc = ST_OK, skipped = 0;
    if (p->inflight >= 0 && p->inflight != m->step)
        rc = proto_commit_step(p, p->inflight, timeout_s);
    /* A commit rank 0 queued earlier must finish before the writer takes a
     * new save; otherwise busy = skip would drop this one. */
    if (rc == ST_OK && (rc = proto_drain_all(p, timeout_s)) == ST_OK)
        proto_collect(p);
    if (rc == ST_OK)
        rc = proto_sync_durable(p);
    if (rc == ST_OK && p->durable != m->step && p->inflight != m->step)
        rc = proto_submit(p, m, &skipped);
    if (rc == ST_OK && p->durable != m->step)
        rc = proto_commit_step(p, m->step, timeout_s);
    return rc;
}

/* The stop with a remote: the newest durable step is uploaded within the
 * deadline if it is not on the remote yet; why says which copy is durable. */
static void proto_stop_remote(proto *p, double deadline, char *why, size_t cap)
{
    char d[32];
    size_t n = strlen(why);
    int rc = proto_upload_flush(p, deadline);
    if (p->durable < 0)
        return;
    if (rc == ST_OK)
        snprintf(why + n, cap - n, "; step %lld is complete on the remote", (long long)p->durable);
    else
        snprintf(why + n, cap - n, "; the remote copy of step %lld did not complete (%s), so the durable copy is "
                 "local only (the remote's newest: %s)", (long long)p->durable, p->up_why,
                 proto_step_name(p->remote, d, sizeof d));
}

int proto_stop(proto *p, const ckpt_meta *m, double deadline, proto_final *final, char *why, size_t cap)
{
    char d[32];
    int rc = ST_OK, crc;
    if (p->inflight >= 0)
        rc = proto_commit_step(p, p->inflight, fmax(deadline - util_wall(), 1));
    if (comm_failed(NULL))
        return rc;
    proto_collect(p);
    if ((crc = proto_sync_durable(p)) != ST_OK)
        return crc;
    /* Rank 0 decides, so no rank can start a save the others skip. A write
     * takes about as long as the last one did, with a margin. */
    double need = p->last_write_s > 0 ? 1.5 * p->last_write_s + 1 : 5;
    /* With a remote the final save counts once uploaded, after the upload
     * in progress (if any) is out of the way. */
    need += proto_upload_need(p) * (p->up_target >= 0 ? 2 : 1);
    int64_t plan = p->durable >= m->step ? PROTO_FINAL_NOT_NEEDED
                   : util_wall() + need < deadline ? PROTO_FINAL_OK : PROTO_FINAL_SKIPPED;
    if ((crc = comm_bcast(&plan, sizeof plan, 0)) != ST_OK)
        return crc;
    *final = (proto_final)plan;
    if (plan == PROTO_FINAL_NOT_NEEDED) {
        snprintf(why, cap, "state of step %lld is durable", (long long)m->step);
    } else if (plan == PROTO_FINAL_OK) {
        rc = proto_save_now(p, m, deadline - util_wall());
        if (comm_failed(NULL))
            return rc;
        if (rc != ST_OK)
            *final = PROTO_FINAL_FAILED;
        snprintf(why, cap, rc == ST_OK ? "final checkpoint at step %lld" : "final checkpoint at step %lld failed",
                 (long long)m->step);
    } else {
        snprintf(why, cap, "no time for a final checkpoint (%.0f s left, a write%s takes ~%.0f s)",
                 deadline - util_wall(), p->up ? " and its upload" : "", need);
    }
    if (p->up)
        proto_stop_remote(p, deadline, why, cap);
    if (comm_failed(NULL))
        return comm_failed(NULL);
    if (p->durable < m->step)
        snprintf(why + strlen(why), cap - strlen(why), "; the newest durable checkpoint: %s",
                 proto_step_name(p->durable, d, sizeof d));
    return rc;
}

/* --- the remote copy ------------------------------------------------------ */

static void proto_report(proto *p, int rank, const char *status, uint64_t bytes, double seconds, const char *why)
{
    proto_upload u = {p->up_target, rank, p->world, status, bytes, seconds, why};
    if (p->rank == 0 && p->on_upload)
        p->on_upload(p->arg, &u);
}

/* The target failed on some rank (or every rank agreed it is gone): drop
 * it; with required, stop. Nothing remote is deleted. */
static int proto_upload_drop(proto *p, const char *status)
{
    char d[32];
    int64_t step = p->up_target;
    int failed = !strcmp(status, "failed");
    p->up_target = -1;
    if (!failed)
        return ST_OK;
    if (p->required)
        return util_fail(ST_IOERR, "upload of checkpoint step %lld failed and checkpoint.required = 1; stopping "
                         "(%s; the newest remote checkpoint: %s)", (long long)step, p->up_why,
                         proto_step_name(p->remote, d, sizeof d));
    return ST_OK;
}

/* SENT: every rank's shard phase ended; one allreduce carries the results. */
static int proto_upload_shards_done(proto *p)
{
    enum { BYTES, SECS, STATUS, K };   /* status: 0 ok, 1 already, 2 gone, 3 failed */
    ckpt_upload_result r;
    static const char *names[] = {"ok", "already", "skipped", "failed"};
    double *v = calloc((size_t)p->world * K, sizeof *v);
    if (!v)
        return util_fail(ST_SOFTWARE, "out of memory");
    ckpt_uploader_result(p->up, &r);
    int mine = r.step != p->up_target ? 3 : r.status != ST_OK ? 3 : r.gone ? 2 : r.already ? 1 : 0;
    v[p->rank * K + BYTES] = (double)r.bytes;
    v[p->rank * K + SECS] = r.seconds;
    v[p->rank * K + STATUS] = mine;
    int rc = comm_sum(v, p->world * K);
    int worst = 0, first_bad = -1;
    p->up_bytes = 0;
    for (int i = 0; i < p->world && rc == ST_OK; i++) {
        int st = (int)v[i * K + STATUS];
        if (st > worst)
            worst = st;
        if (st == 3 && first_bad < 0)
            first_bad = i;
        p->up_bytes += (uint64_t)v[i * K + BYTES];
    }
    if (rc == ST_OK && first_bad >= 0) {
        /* The first failing rank's reason reaches rank 0's ledger. */
        if (p->rank == first_bad)
            snprintf(p->up_why, sizeof p->up_why, "rank %d: %.400s", p->rank,
                     r.why[0] ? r.why : "its upload did not finish");
        rc = comm_bcast(p->up_why, sizeof p->up_why, first_bad);
    }
    for (int i = 0; i < p->world && rc == ST_OK; i++)
        proto_report(p, i, names[(int)v[i * K + STATUS]], (uint64_t)v[i * K + BYTES], v[i * K + SECS],
                     (int)v[i * K + STATUS] == 3 && i == first_bad ? p->up_why : NULL);
    free(v);
    if (rc != ST_OK)
        return rc;
    if (worst >= 2)
        return proto_upload_drop(p, names[worst]);
    p->up_phase = 1;
    return p->rank == 0 ? ckpt_uploader_finish(p->up, p->up_target, p->keep_last, p->keep_every) : ST_OK;
}

/* REMOTE, or a failed manifest: rank 0's result decides for everyone. */
static int proto_upload_manifest_done(proto *p)
{
    ckpt_upload_result r = {0};
    double v[3] = {0, 0, 0};   /* ok, bytes, seconds since the target started */
    if (p->rank == 0) {
        ckpt_uploader_result(p->up, &r);
        v[0] = r.step == p->up_target && r.status == ST_OK;
        v[1] = (double)r.bytes;
        v[2] = r.done_at - p->up_t0;
        snprintf(p->up_why, sizeof p->up_why, "manifest: %.400s", r.why[0] ? r.why : "not sent");
    }
    int rc = comm_bcast(v, sizeof v, 0);
    if (rc != ST_OK)
        return rc;
    if (v[0] == 0) {
        proto_report(p, 0, "failed", (uint64_t)v[1], r.seconds, p->up_why);
        return proto_upload_drop(p, "failed");
    }
    p->remote = p->up_target;
    p->up_last_s = v[2];
    proto_report(p, -1, "ok", p->up_bytes + (uint64_t)v[1], v[2], NULL);
    p->up_target = -1;
    return ST_OK;
}

int proto_upload_advance(proto *p, int64_t committed, int busy)
{
    if (!p->up)
        return ST_OK;
    if (p->up_target >= 0) {
        if (busy)
            return ST_OK;
        return p->up_phase == 0 ? proto_upload_shards_done(p) : proto_upload_manifest_done(p);
    }
    if (committed <= p->up_started)
        return ST_OK;
    p->up_target = p->up_started = committed;
    p->up_phase = 0;
    p->up_t0 = util_now();
    p->up_why[0] = 0;
    int rc = ckpt_uploader_start(p->up, committed);
    /* Rank 0 may commit (and rotate locally) right after this agreement;
     * every rank holds its files open before that can happen. */
    int64_t st = rc;
    if ((rc = comm_max(&st, 1)) != ST_OK)
        return rc;
    return (int)st;
}

double proto_upload_need(const proto *p)
{
    if (!p->up)
        return 0;
    return p->up_last_s > 0 ? 1.5 * p->up_last_s + 1 : 5;
}

int proto_upload_flush(proto *p, double deadline)
{
    int rc;
    if (!p->up)
        return ST_OK;
    if ((rc = proto_sync_durable(p)) != ST_OK)
        return rc;
    int64_t want = p->durable;
    /* An earlier attempt at this step failed while training went on: the
     * exit is worth one more. */
    if (want >= 0 && p->remote < want && p->up_target < 0 && p->up_started >= want)
        p->up_started = want - 1;
    while (want >= 0 && p->remote < want) {
        double left = deadline - util_wall();
        ckpt_uploader_wait(p->up, left < 0.05 ? (left > 0 ? left : 0) : 0.05);
        int64_t f[3] = {p->rank == 0 ? p->durable : -1, ckpt_uploader_busy(p->up), util_wall() >= deadline};
        if ((rc = comm_max(f, 3)) != ST_OK)
            return rc;
        spot_watchdog_kick();   /* each round is progress: the uploader's own timeouts bound a hung request */
        if ((rc = proto_upload_advance(p, f[0], (int)f[1])) != ST_OK)
            return rc;
        if (p->remote >= want)
            break;
        if (p->up_target < 0 && f[0] <= p->up_started) {
            if (!p->up_why[0])
                snprintf(p->up_why, sizeof p->up_why, "its local files were rotated away before the upload");
            return ST_TEMPFAIL;
        }
        if (f[2]) {
            ckpt_uploader_cancel(p->up);
            snprintf(p->up_why, sizeof p->up_why, "the deadline passed before the upload finished");
            return ST_TEMPFAIL;
        }
    }
    return ST_OK;
}
