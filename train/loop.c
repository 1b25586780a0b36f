/* The training loop: start or resume, the data-parallel step (forward/
 * backward, deterministic gradient reduction, clipping, sharded AdamW),
 * validation, checkpoint agreement and commit, and the collective stop. */
#include "train.h"
#include "backend.h"
#include "comm.h"
#include "data.h"
#include "../util/events.h"
#include "optim.h"
#include "../ckpt/ckpt.h"
#include "../spot/cost.h"
#include "../spot/metrics.h"
#include "../spot/spot.h"
#include "../util/util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const cfg *c;
    model_layout L;
    backend *b;
    data *d;
    events_log ev;
    ckpt_writer *w;
    ckpt_opts copts;
    optim_hparams h;
    float *m, *v;            /* Adam moments of this rank's range */
    int32_t *rows;           /* micro_batch rows of seq_len+1 tokens */
    size_t lo, hi;
    int rank, world, tty;
    int64_t step;            /* optimizer steps completed */
    int64_t rows_per_rank;
    uint64_t tokens;
    double train_seconds;    /* over all segments of the run */
    double last_ckpt_wall;   /* rank 0's clock of the last checkpoint trigger */
    double last_write_s;     /* duration of the newest background write */
    int64_t durable;         /* step of the newest committed checkpoint, -1 none */
    int64_t inflight;        /* step being written, -1 none */
    char ckpt_dir[CFG_STR + 16];
    char *config_text;
    char resumed_from[CFG_STR + 64];
    /* Prometheus textfile inputs (rank 0, metrics.textfile set). */
    ckpt_result last_ckpt;
    uint64_t checkpoints, notices;
    int interruptions;
    double spend_before, fleet_spot, segment_wall, last_loss;
} trainer;

/* Flags every rank contributes to the per-step agreement (element-wise max). */
enum { AGREE_STOP, AGREE_DUE, AGREE_NOT_WRITTEN, AGREE_FAILED, AGREE_N };

static int trainer_is_root(const trainer *t) { return t->rank == 0; }

static void trainer_log(const trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void trainer_log(const trainer *t, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    if (!trainer_is_root(t) || util_quiet)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s%s\n", t->tty ? "\r\033[K" : "", line);
}

static void trainer_hparams(trainer *t)
{
    const cfg *c = t->c;
    t->h = (optim_hparams){c->lr, c->min_lr, c->warmup_steps, c->weight_decay, c->beta1,
                           c->beta2, c->adam_eps, c->grad_clip, c->max_steps};
    t->copts.codec = ckpt_codec_from_name(c->ckpt_codec);   /* the key table admits only known names */
    t->copts.level = (int)c->ckpt_level;
    t->copts.chunk_bytes = (size_t)c->ckpt_chunk_kib * 1024;
    t->copts.threads = (int)c->ckpt_threads;
    t->copts.keep_last = c->ckpt_keep_last;
    t->copts.keep_every = c->ckpt_keep_every;
    t->copts.busy_wait = !strcmp(c->ckpt_busy, "wait");
    snprintf(t->copts.on_save, sizeof t->copts.on_save, "%s", c->ckpt_on_save);
}

/* --- start: fresh or from the newest checkpoint that verifies ------------ */

static int trainer_alloc(trainer *t)
{
    size_t mine = t->hi - t->lo;
    t->m = calloc(mine ? mine : 1, sizeof(float));
    t->v = calloc(mine ? mine : 1, sizeof(float));
    t->rows = malloc((size_t)t->c->micro_batch * (size_t)(t->c->seq_len + 1) * sizeof(int32_t));
    if (!t->m || !t->v || !t->rows)
        return util_fail(ST_SOFTWARE, "out of memory for optimizer state (%zu floats)", 2 * mine);
    return ST_OK;
}

/* Lists keys whose value differs between the checkpoint's config and ours. */
static void trainer_report_changes(const trainer *t, const char *old_text)
{
    char section[64] = "", line[CFG_STR + 128];
    const char *p = old_text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len >= sizeof line)
            len = sizeof line - 1;
        memcpy(line, p, len);
        line[len] = 0;
        p += len + (nl ? 1 : 0);
        if (line[0] == '[') {
            snprintf(section, sizeof section, "%.*s", (int)strcspn(line + 1, "]"), line + 1);
            continue;
        }
        char *eq = strstr(line, " = ");
        if (!eq)
            continue;
        *eq = 0;
        char now[CFG_STR + 64];
        if (cfg_value_string(t->c, section, line, now, sizeof now) != 0)
            continue;
        if (strcmp(now, eq + 3))
            trainer_log(t, "resume: %s.%s changed from '%s' to '%s'%s", section, line, eq + 3, now,
                        !strcmp(section, "data") || !strcmp(line, "seed") || !strcmp(line, "global_batch")
                            ? " (the data order changes)" : "");
    }
}

static int trainer_check_shape(const trainer *t, const ckpt_info *in, const char *path)
{
    const ckpt_model *a = &in->model;
    const model_shape *b = &t->L.s;
    if (a->dim != b->dim || a->n_layers != b->n_layers || a->n_heads != b->n_heads ||
        a->n_kv_heads != b->n_kv_heads || a->ffn_dim != b->ffn_dim || a->vocab != b->vocab ||
        in->n_floats != t->L.n_floats)
        return util_fail(ST_CONFIG, "%s holds a model of dim %lld, %lld layers, %lld/%lld heads, ffn %lld, "
                         "vocab %lld, but %s asks for %lld, %lld, %lld/%lld, %lld, %lld; resume with the "
                         "checkpoint's shape or train into a new run_dir", path,
                         (long long)a->dim, (long long)a->n_layers, (long long)a->n_heads,
                         (long long)a->n_kv_heads, (long long)a->ffn_dim, (long long)a->vocab,
                         t->c->path, (long long)b->dim, (long long)b->n_layers, (long long)b->n_heads,
                         (long long)b->n_kv_heads, (long long)b->ffn_dim, (long long)b->vocab);
    if (a->seq_len != b->seq_len || a->rope_theta != b->rope_theta)
        trainer_log(t, "resume: seq_len/rope_theta differ from the checkpoint (%lld/%g -> %lld/%g)",
                    (long long)a->seq_len, a->rope_theta, (long long)b->seq_len, b->rope_theta);
    return ST_OK;
}

static int trainer_restore(trainer *t, const char *path)
{
    ckpt_reader *r = NULL;
    int rc = ckpt_open(&r, path);
    if (rc != ST_OK)
        return rc;
    const ckpt_info *in = ckpt_get_info(r);
    int n_tensors = 0;
    const ckpt_tensor *tensors = ckpt_get_tensors(r, &n_tensors);
    rc = trainer_check_shape(t, in, path);
    if (rc == ST_OK && !model_ckpt_table_same(&t->L, tensors, n_tensors))
        rc = util_fail(ST_CONFIG, "%s: its tensor table (names, shapes, offsets) is not the one this spotrain lays "
                       "out for the same dims; export it with the spotrain that wrote it, or train into a new run_dir",
                       path);
    if (rc == ST_OK)
        rc = ckpt_read_range(r, CKPT_PARAMS, 0, t->L.n_floats, t->b->params);
    if (rc == ST_OK)
        rc = ckpt_read_range(r, CKPT_ADAM_M, t->lo, t->hi, t->m);
    if (rc == ST_OK)
        rc = ckpt_read_range(r, CKPT_ADAM_V, t->lo, t->hi, t->v);
    if (rc == ST_OK) {
        t->step = in->step;
        t->tokens = in->tokens;
        t->train_seconds = in->elapsed_seconds;
        t->durable = in->step;
        if (trainer_is_root(t)) {
            trainer_log(t, "resuming from %s (step %lld, saved by %d rank%s)", path, (long long)in->step,
                        in->world_size, in->world_size == 1 ? "" : "s");
            trainer_report_changes(t, in->config_text);
        }
    }
    ckpt_close(r);
    if (rc == ST_OK)
        rc = t->b->sync_params(t->b);
    return rc;
}

/* Rank 0 decides fresh/resume and what to resume from; everyone follows. */
static int trainer_pick_start(trainer *t, int mode, int force, char *path, size_t cap)
{
    int64_t st[2] = {ST_OK, 0};   /* status, 1 = resume from path */
    path[0] = 0;
    if (trainer_is_root(t)) {
        int n = ckpt_count(t->ckpt_dir);
        if (mode == TRAIN_FRESH && n > 0 && !force) {
            st[0] = util_fail(ST_USAGE, "%s already holds %d checkpoint%s; use `spotrain resume` to "
                              "continue, or `train --force` to start over (old checkpoints are moved "
                              "aside)", t->ckpt_dir, n, n == 1 ? "" : "s");
        } else if (mode == TRAIN_FRESH && n > 0) {
            char aside[CFG_STR + 64];
            /* A unique name: two --force starts can fall in one second. */
            for (int k = 0; k < 1000; k++) {
                snprintf(aside, sizeof aside, "%s.old-%lld%s%.0d", t->ckpt_dir, (long long)util_wall(),
                         k ? "." : "", k);
                if (access(aside, F_OK) != 0)
                    break;
            }
            if (rename(t->ckpt_dir, aside) != 0)
                st[0] = util_fail(ST_IOERR, "cannot move %s aside to %s", t->ckpt_dir, aside);
            else if ((st[0] = util_mkdirs(t->ckpt_dir)) == ST_OK)
                trainer_log(t, "--force: moved the old checkpoints to %s", aside);
        } else if (mode == TRAIN_RESUME) {
            int rc = ckpt_find_latest(t->ckpt_dir, path, cap);
            if (rc == ST_OK)
                st[1] = 1;
            else if (rc == ST_NOINPUT)
                trainer_log(t, "no checkpoint under %s that verifies: starting fresh", t->ckpt_dir);
            else
                st[0] = rc;
        }
    }
    if (comm_bcast(st, sizeof st, 0) != ST_OK || comm_bcast(path, cap, 0) != ST_OK)
        return ST_IOERR;
    return st[1] ? trainer_restore(t, path) : (int)st[0] == ST_OK ? 1 : (int)st[0];
}

static int trainer_fresh(trainer *t)
{
    model_init_weights(&t->L, t->b->params, (uint64_t)t->c->seed, t->c->init_std);
    return t->b->sync_params(t->b);
}

/* --- one optimizer step ------------------------------------------------ */

static int trainer_step(trainer *t, double *loss, double *gnorm, double *lr)
{
    const cfg *c = t->c;
    int64_t T = c->seq_len, row0 = (int64_t)t->rank * t->rows_per_rank;
    float scale = (float)(1.0 / ((double)c->global_batch * (double)T));
    double sums[2] = {0, 0};   /* loss sum, then squared-gradient sum */
    int rc = ST_OK;
    t->b->zero_grads(t->b);
    for (int64_t r = 0; r < t->rows_per_rank && rc == ST_OK; r += c->micro_batch) {
        int64_t n = t->rows_per_rank - r < c->micro_batch ? t->rows_per_rank - r : c->micro_batch;
        data_train_rows(t->d, (uint64_t)c->seed, t->step, c->global_batch, row0 + r, n, t->rows);
        rc = t->b->fwd_bwd(t->b, t->rows, n, scale, &sums[0]);
    }
    if (rc == ST_OK)
        rc = comm_reduce_scatter(t->b->grads, t->L.n_floats);
    if (rc != ST_OK)
        return rc;
    sums[1] = optim_sumsq(t->b->grads + t->lo, t->hi - t->lo);
    if ((rc = comm_sum(sums, 2)) != ST_OK)
        return rc;
    *loss = sums[0] / ((double)c->global_batch * (double)T);
    *gnorm = sqrt(sums[1]);
    if (!isfinite(*loss) || !isfinite(*gnorm))
        return util_fail(ST_DATA, "step %lld: loss %g, gradient norm %g are not finite; lower train.lr "
                         "or resume from an earlier checkpoint", (long long)t->step + 1, *loss, *gnorm);
    *lr = optim_lr(&t->h, t->step);
    optim_adamw(&t->h, &t->L, t->lo, t->hi, t->b->params + t->lo, t->b->grads + t->lo, t->m, t->v,
                *lr, optim_clip_scale(&t->h, *gnorm), t->step + 1);
    if ((rc = comm_allgather(t->b->params, t->L.n_floats)) != ST_OK)
        return rc;
    return t->b->sync_params(t->b);
}

/* Validation loss over val_batches * global_batch held-out rows, split over
 * ranks: the same rows whatever the world size. */
static int trainer_eval(trainer *t, double *val)
{
    const cfg *c = t->c;
    int64_t total = c->val_batches * c->global_batch, per = total / t->world, row0 = per * t->rank;
    double s[2] = {0, 0};
    int rc = ST_OK;
    if (t->rank == t->world - 1)
        per = total - row0;
    for (int64_t r = 0; r < per && rc == ST_OK; r += c->micro_batch) {
        int64_t n = per - r < c->micro_batch ? per - r : c->micro_batch;
        data_val_rows(t->d, row0 + r, n, t->rows);
        rc = t->b->eval(t->b, t->rows, n, &s[0]);
        s[1] += (double)(n * c->seq_len);
    }
    if (rc == ST_OK)
        rc = comm_sum(s, 2);
    *val = s[0] / s[1];
    return rc;
}

/* --- checkpoints ---------------------------------------------------------- */

static int trainer_submit(trainer *t)
{
    ckpt_meta m = {0};
    ckpt_table table;
    ckpt_host_arrays host = {{t->b->params + t->lo, t->m, t->v}, t->lo};
    int skipped = 0, rc = model_to_ckpt_table(&t->L, &table);
    if (rc != ST_OK)
        return rc;
    m.step = t->step;
    m.tokens = t->tokens;
    m.elapsed_seconds = t->train_seconds;
    m.loss_scale = 1.0;
    m.lr = optim_lr(&t->h, t->step);
    m.world_size = t->world;
    m.rank = t->rank;
    m.config_text = t->config_text;
    m.table = &table;
    m.lo = t->lo;
    m.hi = t->hi;
    m.src = (ckpt_source){.fill = ckpt_host_fill, .arg = &host};
    rc = ckpt_writer_submit(t->w, &m, &skipped);
    model_ckpt_table_free(&table);
    if (rc == ST_OK && !skipped)
        t->inflight = t->step;
    else if (rc == ST_OK)
        trainer_log(t, "step %lld: checkpoint skipped, the previous one is still being written "
                    "(checkpoint.busy = skip)", (long long)t->step);
    return rc;
}

/* Rank 0 records a finished commit; returns the writer's error if any. */
static int trainer_collect_commit(trainer *t)
{
    ckpt_result res;
    int64_t s = ckpt_writer_committed(t->w, &res);
    if (s > t->durable) {
        char q[CFG_STR + 64];
        t->durable = s;
        t->last_write_s = res.write_ms / 1000.0;
        t->last_ckpt = res;
        t->checkpoints++;
        events_quote(res.path, q, sizeof q);
        events_write(&t->ev, "checkpoint", "\"step\":%lld,\"path\":%s,\"raw_bytes\":%llu,"
                     "\"stored_bytes\":%llu,\"stall_ms\":%.3f,\"write_ms\":%.3f", (long long)s, q,
                     (unsigned long long)res.raw_bytes, (unsigned long long)res.stored_bytes,
                     res.stall_ms, res.write_ms);
        trainer_log(t, "checkpoint step %lld committed: %.1f MiB -> %.1f MiB, stall %.1f ms, write %.0f ms",
                    (long long)s, res.raw_bytes / 1048576.0, res.stored_bytes / 1048576.0, res.stall_ms,
                    res.write_ms);
    }
    return ST_OK;
}

static int trainer_writer_failed(trainer *t)
{
    if (t->c->ckpt_required)
        return util_fail(ST_IOERR, "checkpoint of step %lld failed and checkpoint.required = 1; stopping "
                         "(the newest durable checkpoint is step %lld)", (long long)t->inflight,
                         (long long)t->durable);
    trainer_log(t, "checkpoint of step %lld abandoned; training goes on, the newest durable "
                "checkpoint is step %lld", (long long)t->inflight, (long long)t->durable);
    t->inflight = -1;
    return ST_OK;
}

/* Drains this rank's writer, agrees that every rank wrote `step`, and has
 * rank 0 commit it and wait for the commit. Collective. */
static int trainer_commit_step(trainer *t, int64_t step, double timeout_s)
{
    int rc = ckpt_writer_drain(t->w, timeout_s), err = 0;
    int64_t flags[AGREE_N] = {0};
    int64_t written = ckpt_writer_written(t->w, &err);
    flags[AGREE_NOT_WRITTEN] = rc != ST_OK || err || written != step;
    if (comm_max(flags, AGREE_N) != ST_OK)
        return ST_IOERR;
    t->inflight = -1;
    if (flags[AGREE_NOT_WRITTEN])
        return rc != ST_OK ? rc : util_fail(ST_IOERR, "checkpoint of step %lld was not written (see above); "
                                             "the newest durable one is kept",
                                             (long long)step);
    if (trainer_is_root(t)) {
        rc = ckpt_writer_commit(t->w, step);
        if (rc == ST_OK)
            rc = ckpt_writer_drain(t->w, timeout_s);
        if (rc == ST_OK)
            rc = trainer_collect_commit(t);
        if (rc == ST_OK && t->durable != step)
            rc = util_fail(ST_IOERR, "commit of checkpoint step %lld did not complete", (long long)step);
    }
    int64_t st = rc;
    comm_max(&st, 1);
    return (int)st;
}

/* Only rank 0 learns about commits; before a collective decision that
 * depends on them, every rank takes rank 0's view. */
static int trainer_sync_durable(trainer *t)
{
    double v[2] = {(double)t->durable, t->last_write_s};
    int rc = comm_bcast(v, sizeof v, 0);
    t->durable = (int64_t)v[0];
    t->last_write_s = v[1];
    return rc;
}

/* Blocking save of the current step (last step, stop, busy = wait): a save
 * still in flight is committed first, then this step is written. */
static int trainer_save_now(trainer *t, double timeout_s)
{
    int rc = ST_OK;
    if (t->inflight >= 0 && t->inflight != t->step)
        rc = trainer_commit_step(t, t->inflight, timeout_s);
    /* A commit rank 0 queued earlier must finish before the writer takes a
     * new save; otherwise busy = skip would drop this one. */
    if (rc == ST_OK && (rc = ckpt_writer_drain(t->w, timeout_s)) == ST_OK && trainer_is_root(t))
        trainer_collect_commit(t);
    if (rc == ST_OK)
        rc = trainer_sync_durable(t);
    if (rc == ST_OK && t->durable != t->step && t->inflight != t->step)
        rc = trainer_submit(t);
    if (rc == ST_OK && t->durable != t->step)
        rc = trainer_commit_step(t, t->step, timeout_s);
    return rc;
}

/* --- the stop ------------------------------------------------------------ */

static double trainer_deadline(const trainer *t, const spot_notice *n)
{
    double d = n->pending && n->deadline > 0 ? n->deadline : util_wall() + t->c->grace_seconds;
    int64_t ms = -(int64_t)(d * 1000.0);
    comm_max(&ms, 1);   /* the earliest deadline of any rank */
    return -(double)ms / 1000.0;
}

/* Every rank gets here at the same step. Whatever happens, the answer is
 * 75: the newest durable checkpoint (possibly an older one) is the restart
 * point. */
static int trainer_stop(trainer *t, const spot_notice *n)
{
    char src[96], why[512], q[600];
    double deadline = trainer_deadline(t, n);
    int rc = ST_OK;
    events_quote(n->pending ? n->source : "peer", src, sizeof src);
    trainer_log(t, "stop requested (%s%s%s) at step %lld; %.0f s until the deadline",
                n->pending ? n->source : "another rank", n->detail[0] ? ": " : "", n->detail,
                (long long)t->step, deadline - util_wall());
    spot_watchdog_kick();
    if (t->inflight >= 0)
        rc = trainer_commit_step(t, t->inflight, fmax(deadline - util_wall(), 1));
    if (trainer_is_root(t))
        trainer_collect_commit(t);
    trainer_sync_durable(t);
    /* Rank 0 decides, so no rank can start a save the others skip. */
    double need = t->last_write_s > 0 ? 1.5 * t->last_write_s + 1 : 5;
    int64_t plan = t->durable >= t->step ? 0 : util_wall() + need < deadline ? 1 : 2;
    comm_bcast(&plan, sizeof plan, 0);
    if (plan == 0) {
        snprintf(why, sizeof why, "state of step %lld is durable", (long long)t->step);
    } else if (plan == 1) {
        rc = trainer_save_now(t, deadline - util_wall());
        snprintf(why, sizeof why, rc == ST_OK ? "final checkpoint at step %lld" :
                 "final checkpoint at step %lld failed", (long long)t->step);
    } else {
        snprintf(why, sizeof why, "no time for a final checkpoint (%.0f s left, a write takes ~%.0f s)",
                 deadline - util_wall(), need);
    }
    if (rc != ST_OK || t->durable < t->step)
        snprintf(why + strlen(why), sizeof why - strlen(why), "; the newest durable checkpoint is step %lld",
                 (long long)t->durable);
    /* Azure ends the VM early once told we are done; only after durable state. */
    if (trainer_is_root(t) && rc == ST_OK && spot_azure_ack() != ST_OK)
        trainer_log(t, "azure: acknowledgement failed; the VM goes at the event's NotBefore instead");
    trainer_log(t, "%s; exiting 75 so a wrapper restarts the run", why);
    events_quote(why, q, sizeof q);
    events_write(&t->ev, "stop", "\"step\":%lld,\"source\":%s,\"reason\":%s", (long long)t->step, src, q);
    return ST_TEMPFAIL;
}

/* --- the loop -------------------------------------------------------------- */

static int trainer_ckpt_due(trainer *t, int early_warning)
{
    const cfg *c = t->c;
    if (early_warning)
        return 1;
    if (c->ckpt_interval_steps > 0 && t->step % c->ckpt_interval_steps == 0)
        return 1;
    if (trainer_is_root(t) && c->ckpt_interval_seconds > 0 &&
        util_now() - t->last_ckpt_wall >= c->ckpt_interval_seconds)
        return 1;
    return 0;
}

static void trainer_progress(trainer *t, double loss, double gnorm, double lr, double ms)
{
    double tps = (double)t->c->global_batch * (double)t->c->seq_len / (ms / 1000.0);
    if (t->step % t->c->log_every == 0 || t->step == t->c->max_steps) {
        trainer_log(t, "step %lld/%lld | loss %.4f | lr %.2e | norm %.3f | %.0f tok/s | %.1f ms",
                    (long long)t->step, (long long)t->c->max_steps, loss, lr, gnorm, tps, ms);
        events_write(&t->ev, "step", "\"step\":%lld,\"loss\":%.6f,\"lr\":%.6g,\"grad_norm\":%.6g,"
                     "\"tokens\":%llu,\"tok_per_s\":%.1f,\"ms\":%.3f,\"train_seconds\":%.3f",
                     (long long)t->step, loss, lr, gnorm, (unsigned long long)t->tokens, tps, ms,
                     t->train_seconds);
    } else if (t->tty && trainer_is_root(t) && !util_quiet) {
        fprintf(stderr, "\r\033[Kstep %lld/%lld | loss %.4f | %.0f tok/s", (long long)t->step,
                (long long)t->c->max_steps, loss, tps);
    }
}

static int trainer_validate(trainer *t)
{
    double val;
    int rc = trainer_eval(t, &val);
    if (rc != ST_OK)
        return rc;
    trainer_log(t, "step %lld | val loss %.4f", (long long)t->step, val);
    events_write(&t->ev, "eval", "\"step\":%lld,\"val_loss\":%.6f", (long long)t->step, val);
    return ST_OK;
}

/* What earlier segments cost, read once from the ledger at start, so the
 * textfile's spend and interruption counters cover the whole run. */
static void trainer_metrics_init(trainer *t)
{
    char path[CFG_STR + 32], *text = NULL;
    size_t len = 0;
    cost_report r;
    double od;
    t->segment_wall = util_wall();
    cost_fleet_hourly(t->c, t->c->nodes, &od, &t->fleet_spot);
    snprintf(path, sizeof path, "%s/events.jsonl", t->c->run_dir);
    if (util_read_file(path, &text, &len) == ST_OK && cost_report_compute(text, len, t->c, &r) == ST_OK) {
        /* This segment's own start record is already in the ledger. */
        t->interruptions = r.interruptions > 0 ? r.interruptions - 1 : 0;
        t->spend_before = r.spend;
    }
    free(text);
}

static void trainer_metrics(trainer *t, double loss, double tps)
{
    const cfg *c = t->c;
    if (!trainer_is_root(t) || !c->textfile[0] || (t->step % c->metrics_every && t->step != c->max_steps))
        return;
    metrics_sample m = {0};
    m.run = c->run_dir;
    m.step = t->step;
    m.max_steps = c->max_steps;
    m.loss = loss;
    m.tokens_per_second = tps;
    m.tokens_total = (double)t->tokens;
    m.train_seconds = t->train_seconds;
    m.ckpt_seconds = (t->last_ckpt.stall_ms + t->last_ckpt.write_ms) / 1000.0;
    m.ckpt_stall_seconds = t->last_ckpt.stall_ms / 1000.0;
    m.ckpt_bytes = (double)t->last_ckpt.stored_bytes;
    m.checkpoints_total = t->checkpoints;
    m.notices_total = t->notices;
    m.interruptions_total = (uint64_t)t->interruptions;
    m.price_per_hour = t->fleet_spot;
    m.spend_dollars = t->spend_before + (util_wall() - t->segment_wall) / 3600.0 * t->fleet_spot;
    if (metrics_write(c->textfile, &m) != ST_OK)
        trainer_log(t, "metrics textfile %s not written; training goes on", c->textfile);
}

/* Agreement after each step: stop?, checkpoint due?, shards written? */
static int trainer_agree(trainer *t, spot_notice *n, int64_t flags[AGREE_N])
{
    int early = 0, err = 0;
    memset(n, 0, sizeof *n);
    flags[AGREE_STOP] = spot_poll(n, &early);
    flags[AGREE_DUE] = trainer_ckpt_due(t, early);
    int64_t written = ckpt_writer_written(t->w, &err);
    flags[AGREE_NOT_WRITTEN] = t->inflight >= 0 && written != t->inflight;
    flags[AGREE_FAILED] = err != 0;
    if (early)
        trainer_log(t, "rebalance recommendation: checkpointing early");
    return comm_max(flags, AGREE_N);
}

static int trainer_loop(trainer *t)
{
    const cfg *c = t->c;
    int rc = ST_OK;
    spot_notice n;
    int64_t flags[AGREE_N];
    if (c->val_every > 0 && t->step == 0 && (rc = trainer_validate(t)) != ST_OK)
        return rc;
    while (t->step < c->max_steps) {
        double t0 = util_now(), loss = 0, gnorm = 0, lr = 0;
        if ((rc = trainer_step(t, &loss, &gnorm, &lr)) != ST_OK)
            return rc;
        t->step++;
        t->tokens += (uint64_t)(c->global_batch * c->seq_len);
        spot_watchdog_kick();
        if ((rc = trainer_agree(t, &n, flags)) != ST_OK)
            return rc;
        if (flags[AGREE_FAILED] && (rc = trainer_writer_failed(t)) != ST_OK)
            return rc;
        if (t->inflight >= 0 && !flags[AGREE_NOT_WRITTEN] && !flags[AGREE_FAILED]) {
            if (trainer_is_root(t) && (rc = ckpt_writer_commit(t->w, t->inflight)) != ST_OK)
                return rc;
            t->inflight = -1;
        }
        if (trainer_is_root(t))
            trainer_collect_commit(t);
        if (c->val_every > 0 && (t->step % c->val_every == 0 || t->step == c->max_steps) &&
            (rc = trainer_validate(t)) != ST_OK)
            return rc;
        double ms = (util_now() - t0) * 1000.0;
        t->train_seconds += ms / 1000.0;
        t->last_loss = loss;
        trainer_progress(t, loss, gnorm, lr, ms);
        trainer_metrics(t, loss, (double)c->global_batch * (double)c->seq_len / (ms / 1000.0));
        if (flags[AGREE_STOP]) {
            t->notices++;
            rc = trainer_stop(t, &n);
            trainer_metrics(t, loss, 0);
            return rc;
        }
        if (flags[AGREE_DUE] && t->step < c->max_steps) {
            t->last_ckpt_wall = util_now();
            if (t->inflight >= 0 && t->copts.busy_wait)
                rc = trainer_commit_step(t, t->inflight, 1e9);
            if (rc == ST_OK)
                rc = trainer_submit(t);
            if (rc != ST_OK)
                return rc;
        }
    }
    rc = trainer_save_now(t, 1e9);
    trainer_metrics(t, t->last_loss, 0);
    return rc;
}

/* --- setup and teardown ---------------------------------------------------- */

static int trainer_open(trainer *t, const cfg *c)
{
    model_shape s;
    int rc;
    memset(t, 0, sizeof *t);
    t->c = c;
    t->ev.fd = -1;
    t->durable = t->inflight = -1;
    t->rank = comm_rank();
    t->world = comm_size();
    t->tty = isatty(2);
    t->last_ckpt_wall = util_now();
    trainer_hparams(t);
    if (c->global_batch % t->world != 0)
        return util_fail(ST_CONFIG, "%s: train.global_batch (%lld) must be a multiple of the %d ranks; "
                         "pick a global_batch divisible by every world size you resume on",
                         c->path, (long long)c->global_batch, t->world);
    t->rows_per_rank = c->global_batch / t->world;
    if (util_fmt(t->ckpt_dir, sizeof t->ckpt_dir, "%s/ckpt", c->run_dir) < 0)
        return util_fail(ST_CONFIG, "train.run_dir is too long");
    if ((rc = model_shape_from_cfg(&s, c)) != ST_OK || (rc = model_layout_init(&t->L, &s)) != ST_OK)
        return rc;
    comm_range(t->L.n_floats, t->rank, t->world, &t->lo, &t->hi);
    if (!(t->config_text = cfg_render(c)))
        return util_fail(ST_SOFTWARE, "out of memory");
    if (trainer_is_root(t)) {
        char path[CFG_STR + 32];
        if ((rc = util_mkdirs(t->ckpt_dir)) != ST_OK)
            return rc;
        snprintf(path, sizeof path, "%s/config.ini", c->run_dir);
        if ((rc = util_write_atomic(path, t->config_text, strlen(t->config_text))) != ST_OK)
            return rc;
        if ((rc = events_open(&t->ev, c->run_dir)) != ST_OK)
            return rc;
    }
    int64_t st = rc;
    comm_max(&st, 1);   /* ranks > 0 must not race ahead of a failed rank 0 */
    if (st != ST_OK)
        return (int)st;
    if ((rc = backend_create(&t->b, c->backend, &t->L, (int)c->threads)) != ST_OK)
        return rc;
    if ((rc = trainer_alloc(t)) != ST_OK)
        return rc;
    if ((rc = data_open(&t->d, c)) != ST_OK)
        return rc;
    return ckpt_writer_open(&t->w, t->ckpt_dir, &t->copts, t->rank, t->world, t->lo, t->hi);
}

static void trainer_close(trainer *t)
{
    if (t->w)
        ckpt_writer_close(t->w);
    if (t->b)
        t->b->destroy(t->b);
    data_close(t->d);
    events_close(&t->ev);
    model_layout_free(&t->L);
    free(t->m);
    free(t->v);
    free(t->rows);
    free(t->config_text);
}

static int trainer_begin(trainer *t, int mode, int force)
{
    char path[CFG_STR + 64];
    int rc = trainer_pick_start(t, mode, force, path, sizeof path);
    if (rc == 1)
        rc = trainer_fresh(t);
    else if (rc == ST_OK)
        snprintf(t->resumed_from, sizeof t->resumed_from, "%s", path);
    if (rc != ST_OK)
        return rc;
    char q[CFG_STR + 128], cq[CFG_STR + 64];
    events_quote(t->resumed_from, q, sizeof q);
    events_quote(t->c->path, cq, sizeof cq);
    events_write(&t->ev, "start", "\"step\":%lld,\"world\":%d,\"nodes\":%d,\"resumed_from\":%s,"
                 "\"tokens_per_step\":%lld,\"max_steps\":%lld,\"config\":%s,\"backend\":\"%s\","
                 "\"params\":%zu", (long long)t->step, t->world, comm_nodes(),
                 t->resumed_from[0] ? q : "null", (long long)(t->c->global_batch * t->c->seq_len),
                 (long long)t->c->max_steps, cq, t->b->name, t->L.n_floats);
    if (trainer_is_root(t) && t->c->textfile[0])
        trainer_metrics_init(t);
    trainer_log(t, "%s %zu parameters on %d rank%s (%s backend), step %lld of %lld",
                t->resumed_from[0] ? "resumed" : "training", t->L.n_floats, t->world,
                t->world == 1 ? "" : "s", t->b->name, (long long)t->step, (long long)t->c->max_steps);
    return ST_OK;
}

int train_run(const cfg *c, int mode, int force)
{
    trainer t;
    int rc = trainer_open(&t, c);
    int spot_on = 0;
    if (rc == ST_OK)
        rc = trainer_begin(&t, mode, force);
    if (rc == ST_OK && (rc = spot_start(c, trainer_is_root(&t) ? c->run_dir : NULL)) == ST_OK) {
        spot_on = 1;
        rc = spot_watchdog_start(c->watchdog_seconds);
    }
    if (rc == ST_OK)
        rc = trainer_loop(&t);
    if (spot_on) {
        spot_watchdog_stop();
        spot_stop();
    }
    if (t.ev.fd >= 0) {
        const char *why = rc == ST_OK ? "done" : rc == ST_TEMPFAIL ? "stopped; restart to continue" : "error";
        events_write(&t.ev, "exit", "\"step\":%lld,\"code\":%d,\"reason\":\"%s\"", (long long)t.step, rc, why);
    }
    if (rc == ST_OK)
        trainer_log(&t, "done: %lld steps, %.1f s of training", (long long)t.step, t.train_seconds);
    trainer_close(&t);
    return rc;
}
