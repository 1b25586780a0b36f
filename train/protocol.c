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
 * Invariants (proto_check): -1 <= durable; inflight is -1 or > durable. */
#include "protocol.h"
#include "comm.h"
#include "../util/util.h"

#include <math.h>
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
    *skipped = 0;
    int rc = ckpt_writer_submit(p->w, m);
    if (rc == 1) {
        *skipped = 1;
        return ST_OK;
    }
    if (rc == ST_OK)
        p->inflight = m->step;
    return rc;
}

void proto_flags(proto *p, int64_t flags[PROTO_N])
{
    int err = 0;
    int64_t written = ckpt_writer_written(p->w, &err);
    flags[PROTO_NOT_WRITTEN] = p->inflight >= 0 && written != p->inflight;
    flags[PROTO_FAILED] = err != 0;
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

int proto_commit_step(proto *p, int64_t step, double timeout_s)
{
    int rc = ckpt_writer_drain(p->w, timeout_s), err = 0;
    int64_t flags[PROTO_N] = {0};
    int64_t written = ckpt_writer_written(p->w, &err);
    flags[PROTO_NOT_WRITTEN] = rc != ST_OK || err || written != step;
    if (comm_max(flags, PROTO_N) != ST_OK)
        return ST_IOERR;
    p->inflight = -1;
    if (flags[PROTO_NOT_WRITTEN])
        return rc != ST_OK ? rc : util_fail(ST_IOERR, "checkpoint of step %lld was not written (see above); "
                                             "the newest durable one is kept", (long long)step);
    if (p->rank == 0) {
        rc = ckpt_writer_commit(p->w, step);
        if (rc == ST_OK)
            rc = ckpt_writer_drain(p->w, timeout_s);
        if (rc == ST_OK)
            proto_collect(p);
        if (rc == ST_OK && p->durable != step)
            rc = util_fail(ST_IOERR, "commit of checkpoint step %lld did not complete", (long long)step);
    }
    int64_t st = rc;
    comm_max(&st, 1);
    return (int)st;
}

int proto_save_now(proto *p, const ckpt_meta *m, double timeout_s)
{
    int rc = ST_OK, skipped = 0;
    if (p->inflight >= 0 && p->inflight != m->step)
        rc = proto_commit_step(p, p->inflight, timeout_s);
    /* A commit rank 0 queued earlier must finish before the writer takes a
     * new save; otherwise busy = skip would drop this one. */
    if (rc == ST_OK && (rc = ckpt_writer_drain(p->w, timeout_s)) == ST_OK)
        proto_collect(p);
    if (rc == ST_OK)
        rc = proto_sync_durable(p);
    if (rc == ST_OK && p->durable != m->step && p->inflight != m->step)
        rc = proto_submit(p, m, &skipped);
    if (rc == ST_OK && p->durable != m->step)
        rc = proto_commit_step(p, m->step, timeout_s);
    return rc;
}

int proto_stop(proto *p, const ckpt_meta *m, double deadline, proto_final *final, char *why, size_t cap)
{
    char d[32];
    int rc = ST_OK;
    if (p->inflight >= 0)
        rc = proto_commit_step(p, p->inflight, fmax(deadline - util_wall(), 1));
    proto_collect(p);
    proto_sync_durable(p);
    /* Rank 0 decides, so no rank can start a save the others skip. A write
     * takes about as long as the last one did, with a margin. */
    double need = p->last_write_s > 0 ? 1.5 * p->last_write_s + 1 : 5;
    int64_t plan = p->durable >= m->step ? PROTO_FINAL_NOT_NEEDED
                   : util_wall() + need < deadline ? PROTO_FINAL_OK : PROTO_FINAL_SKIPPED;
    comm_bcast(&plan, sizeof plan, 0);
    *final = (proto_final)plan;
    if (plan == PROTO_FINAL_NOT_NEEDED) {
        snprintf(why, cap, "state of step %lld is durable", (long long)m->step);
    } else if (plan == PROTO_FINAL_OK) {
        rc = proto_save_now(p, m, deadline - util_wall());
        if (rc != ST_OK)
            *final = PROTO_FINAL_FAILED;
        snprintf(why, cap, rc == ST_OK ? "final checkpoint at step %lld" : "final checkpoint at step %lld failed",
                 (long long)m->step);
    } else {
        snprintf(why, cap, "no time for a final checkpoint (%.0f s left, a write takes ~%.0f s)",
                 deadline - util_wall(), need);
    }
    if (p->durable < m->step)
        snprintf(why + strlen(why), cap - strlen(why), "; the newest durable checkpoint: %s",
                 proto_step_name(p->durable, d, sizeof d));
    return rc;
}
