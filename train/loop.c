/* The training loop: start (fresh, or from the newest checkpoint that
 * verifies), the data-parallel step driven through the backend (forward/
 * backward, rank-order gradient reduction, clipping, sharded AdamW, gather),
 * validation, and the calls into the checkpoint/stop protocol (protocol.c)
 * and the ledger (ledger.c). */
#include "train.h"
#include "backend/backend.h"
#include "comm/comm.h"
#include "data/data.h"
#include "hf/hf.h"
#include "interval.h"
#include "ledger.h"
#include "model/lscale.h"
#include "model/optim.h"
#include "config/opts.h"
#include "protocol.h"
#include "ckpt/ckpt.h"
#include "s3/s3.h"
#include "spot/spot.h"
#include "util/util.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const cfg *c;
    model_layout L;
    backend *b;
    data *d;
    ledger lg;
    ckpt_writer *w;
    ckpt_uploader *up;       /* NULL: no checkpoint.remote */
    ckpt_opts copts;
    proto pr;
    optim_hparams h;
    int32_t *rows;           /* micro_batch rows of seq_len+1 tokens */
    ckpt_table table;        /* the checkpoint's view of the layout */
    size_t lo, hi;
    int rank, world, tty;
    int zero;                /* ZeRO stage in force (train.zero, or auto's choice) */
    int64_t step;            /* optimizer steps completed */
    int64_t rows_per_rank;
    uint64_t tokens;
    double train_seconds;    /* over all segments of the run */
    double last_ckpt_wall;   /* rank 0's clock of the last checkpoint trigger */
    char ckpt_dir[CFG_STR + 16];
    char *config_text;
    char resumed_from[CFG_STR + 64];
    double last_loss;
    int auto_interval;       /* checkpoint.interval_seconds = auto is in force */
    interval_auto ia;        /* rank 0's estimate */
    double segment_start;    /* util_now() at the start of this segment */
    lscale ls;               /* loss scaling (off unless fp16 or train.loss_scale_init) */
    char continuity[1200];   /* what changed since the checkpoint we resumed from ("" = nothing) */
    int init_checked;        /* model.init_from's headers passed on every rank */
} trainer;

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

/* The host buffer the loop itself needs: one micro-batch of token rows
 * (the snapshot buffer belongs to the writer). */
static int trainer_alloc(trainer *t)
{
    t->rows = malloc((size_t)t->c->micro_batch * (size_t)(t->c->seq_len + 1) * sizeof(int32_t));
    if (!t->rows)
        return util_fail(ST_SOFTWARE, "out of memory for %lld token rows", (long long)t->c->micro_batch);
    return model_to_ckpt_table(&t->L, &t->table);
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
    const model_shape *a = &in->model;
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

/* Host staging of a fresh start: bounded, never a second model copy. */
enum { TRAINER_IO_FLOATS = 1 << 20 };

/* A dynamic scaler continues from the checkpoint's scale and clean-step
 * count, which keeps an interrupted fp16 run bitwise equal to an
 * uninterrupted one. */
/* A change of [comm] reduce since the checkpoint (recorded as "chain" or
 * "nccl"; "" before it was) is a change of the gradients' bits, as a
 * change of backend is, when more than one rank sums them on either side. */
static void trainer_reduce_continuity(trainer *t, const char *was, int world_was)
{
    const char *now = comm_reduce_name(comm_get_reduce());
    size_t len = strlen(t->continuity);
    if (!was || !was[0] || !strcmp(was, now) || (t->world < 2 && world_was < 2))
        return;
    snprintf(t->continuity + len, sizeof t->continuity - len, "%sreduce %s -> %s", len ? ", " : "", was, now);
}

static void trainer_restore_scaler(trainer *t, const ckpt_info *in)
{
    if (t->ls.mode != LSCALE_DYNAMIC)
        return;
    if (in->loss_scaling != CKPT_SCALING_DYNAMIC) {
        trainer_log(t, "resume: the checkpoint ran without dynamic loss scaling; the scale starts at %g",
                    t->ls.scale);
        return;
    }
    /* A smaller loss_scale_window than the checkpoint's: double at once. */
    int64_t clean = in->loss_scale_clean < t->ls.window ? in->loss_scale_clean : t->ls.window - 1;
    if (lscale_restore(&t->ls, in->loss_scale, clean) != 0)
        trainer_log(t, "resume: the checkpoint's loss scale %g is not a power of two from 1 to 2^127; the "
                    "scale starts at %g", in->loss_scale, t->ls.scale);
}

/* Reads the checkpoint at path (a step directory, or an s3:// URL read
 * through s3) into the backend, on every rank together: each rank reads
 * only its own range of params, m and v (every chunk verified as it
 * arrives), then the ranks agree and gather the parameters. Returns ST_DATA
 * on every rank when any rank found damage (that rank said where), another
 * code when any rank met something worse. *bytes: what this rank read. */
static int trainer_restore(trainer *t, const char *path, s3_client *s3, uint64_t *bytes)
{
    ckpt_reader *r = NULL;
    const ckpt_info *in = NULL;
    char err[1024], run[CFG_STR + 64];
    int64_t step = -1;
    int rc = ST_OK, n_tensors = 0;
    if (strncmp(path, "s3://", 5) != 0)
        rc = ckpt_open(&r, path);
    else if (!s3 || ckpt_s3_split(path, run, sizeof run, &step) != 0 || step < 0)
        rc = util_fail(ST_SOFTWARE, "resume: %s is not a remote step this run can read", path);
    else if ((rc = ckpt_open_remote(&r, s3, step, err, sizeof err)) != ST_OK)
        util_fail(rc, "%s", err);
    if (rc == ST_OK) {
        in = ckpt_get_info(r);
        const ckpt_tensor *tensors = ckpt_get_tensors(r, &n_tensors);
        rc = trainer_check_shape(t, in, path);
        if (rc == ST_OK && !model_ckpt_table_same(&t->L, tensors, n_tensors))
            rc = util_fail(ST_CONFIG, "%s: its tensor table (names, shapes, offsets) is not the one this spotrain "
                           "lays out for the same dims; export it with the spotrain that wrote it, or train into a "
                           "new run_dir", path);
    }
    for (int a = CKPT_PARAMS; a <= CKPT_ADAM_V && rc == ST_OK; a++)
        rc = backend_load_ckpt(t->b, r, a, t->lo, t->hi);
    *bytes = r ? ckpt_bytes_read(r) : 0;
    /* Missing on this rank counts as damaged: on node-local disks a
     * replaced node lacks what rank 0 verified, and the remote copy of the
     * same step is the next candidate. */
    if (rc == ST_NOINPUT)
        rc = ST_DATA;
    int64_t v[2] = {rc != ST_OK && rc != ST_DATA ? rc : 0, rc == ST_DATA};
    comm_test_freeze("resume");
    comm_phase("resume agreement: every rank read its range");
    int crc = comm_max(v, 2);
    if (crc != ST_OK)
        rc = crc;
    else
        rc = v[0] ? (int)v[0] : v[1] ? ST_DATA : ST_OK;
    comm_phase("resume: parameter gather");
    if (rc == ST_OK)
        rc = t->b->gather_params(t->b);
    if (rc == ST_OK) {
        t->step = in->step;
        t->tokens = in->tokens;
        t->train_seconds = in->elapsed_seconds;
        t->pr.durable = in->step;
        if (!strncmp(path, "s3://", 5))
            proto_remote_known(&t->pr, in->step);
        trainer_restore_scaler(t, in);
        if (backend_continuity(t->b, in->backend, in->precision, in->device, in->libraries, t->continuity,
                               sizeof t->continuity) == 0)
            t->continuity[0] = 0;
        trainer_reduce_continuity(t, in->reduce, in->world_size);
        if (trainer_is_root(t)) {
            trainer_log(t, "resuming from %s (step %lld, saved by %d rank%s)", path, (long long)in->step,
                        in->world_size, in->world_size == 1 ? "" : "s");
            trainer_report_changes(t, in->config_text);
            if (t->continuity[0])
                trainer_log(t, "warning: resume is not bitwise continuous: %s since the checkpoint; training "
                            "goes on, but its numbers will differ from an uninterrupted run", t->continuity);
        }
    }
    ckpt_close(r);
    return rc;
}

/* Where resume looks: rank 0's candidates, newest first, local and (with
 * checkpoint.remote) remote; every rank's client for the remote. */
typedef struct {
    s3_client *s3;
    ckpt_cand *cands;
    int n, next, listed;
    int tried;                /* a restore failed part way: the moments hold junk */
    int64_t *bad;             /* rank 0: local candidates that failed verification */
    int n_bad, n_bad_remote;
    char bad_why[1280];       /* rank 0: "step N (why); ..." of those that failed (as many as fit) */
} trainer_resume_src;

/* Rank 0: candidate k failed verification (why), for the error when none
 * verifies and for trainer_set_aside. */
static void trainer_note_bad(trainer_resume_src *rs, const ckpt_cand *k, const char *why)
{
    size_t n = strlen(rs->bad_why);
    snprintf(rs->bad_why + n, sizeof rs->bad_why - n, "%sstep %lld%s (%s)", n ? "; " : "", (long long)k->step,
             k->remote ? " on the remote" : "", why);
    if (k->remote) {
        rs->n_bad_remote++;
        return;
    }
    int64_t *p = realloc(rs->bad, (size_t)(rs->n_bad + 1) * sizeof *p);
    if (p) {
        rs->bad = p;
        rs->bad[rs->n_bad++] = k->step;
    }
}

/* Rank 0: checkpoints exist and none verifies. A start from step 0 would
 * look like a resume that worked, and rotation would then delete the
 * damaged ones: 65 naming each, unless the user asked for a fresh start
 * (resume --fresh-if-corrupt), which never touches remote objects. */
static int trainer_none_verifies(trainer *t, const trainer_resume_src *rs, int fresh_ok)
{
    int n = rs->n_bad + rs->n_bad_remote;
    const char *remote = t->c->ckpt_remote;
    if (!fresh_ok)
        return util_fail(ST_DATA, "resume: %d checkpoint%s under %s%s%s and none verifies; repair or remove them, "
                         "or `spotrain resume --fresh-if-corrupt` starts over from step 0 (moving the local ones to "
                         "%s.bad/). Why each failed: %s", n, n == 1 ? "" : "s", t->ckpt_dir, rs->s3 ? " and " : "",
                         rs->s3 ? remote : "", t->ckpt_dir, rs->bad_why);
    if (rs->n_bad_remote)
        return util_fail(ST_USAGE, "resume --fresh-if-corrupt: %s holds %d checkpoint%s that do%s not verify, and "
                         "remote objects are never deleted or moved; use another checkpoint.remote prefix, or "
                         "remove them (e.g. `aws s3 rm --recursive %s/`)", remote, rs->n_bad_remote,
                         rs->n_bad_remote == 1 ? "" : "s", rs->n_bad_remote == 1 ? "es" : "", remote);
    trainer_log(t, "no checkpoint under %s verifies (%s); --fresh-if-corrupt: starting fresh", t->ckpt_dir,
                rs->bad_why);
    return ST_OK;
}

/* Rank 0, once started: the local checkpoints that failed verification go
 * to CKPT_DIR.bad/, where neither rotation nor a new commit of their step
 * removes them. A move that fails is a warning: the run has started on
 * every rank. */
static void trainer_set_aside(trainer *t, const trainer_resume_src *rs)
{
    char to[CFG_STR + 96];
    for (int i = 0; i < rs->n_bad; i++) {
        if (ckpt_set_aside(t->ckpt_dir, rs->bad[i], to, sizeof to) == ST_OK)
            trainer_log(t, "moved step %lld, which does not verify, to %s", (long long)rs->bad[i], to);
        else
            trainer_log(t, "warning: step %lld does not verify and stays in %s (see above); rotation may delete "
                        "it", (long long)rs->bad[i], t->ckpt_dir);
    }
}

/* A remote that stays unreachable through the client's retries is an
 * outage, not a verdict on the checkpoints: no guessing (a newer one may
 * be there) and nothing trained, so the run exits 75 and a wrapper tries
 * again later (spotrain-run's --max-stalls bounds how often). Other codes
 * pass through. `why` was already printed when `printed`; the ledger's
 * start record gets it either way. Every rank meets a failed download;
 * rank 0 alone says so. */
static int trainer_outage(trainer *t, int rc, const char *why, int printed)
{
    if (rc != ST_UNAVAILABLE || !t->c->ckpt_remote[0])
        return rc;
    if (!trainer_is_root(t))
        return ST_TEMPFAIL;
    char line[2048 + CFG_STR];
    /* Composed before util_fail: `why` may be util_last_error()'s text. */
    snprintf(line, sizeof line, "resume: %s; %s looks unreachable: nothing was trained, exiting 75 so that a "
             "restart tries again", why, t->c->ckpt_remote);
    if (!printed)
        return util_fail(ST_TEMPFAIL, "%s", line);
    util_fail(ST_TEMPFAIL, "resume: %s looks unreachable (the line above says why): nothing was trained, exiting "
              "75 so that a restart tries again", t->c->ckpt_remote);
    util_keep_error(line);
    return ST_TEMPFAIL;
}

/* Rank 0: the next candidate that passes its check, logging each skipped
 * one; *found 0 when none is left. */
static int trainer_next_candidate(trainer *t, trainer_resume_src *rs, int fresh_ok, char *path, size_t cap,
                                  int64_t *found)
{
    char err[1024];
    int rc = ST_OK;
    *found = 0;
    if (!rs->listed) {
        rs->listed = 1;
        if ((rc = ckpt_candidates(t->ckpt_dir, rs->s3, &rs->cands, &rs->n)) != ST_OK)
            return trainer_outage(t, rc, util_last_error(), 1);
    }
    while (rs->next < rs->n) {
        const ckpt_cand *k = &rs->cands[rs->next++];
        err[0] = 0;
        rc = ckpt_candidate_check(t->ckpt_dir, rs->s3, k, path, cap, err, sizeof err);
        if (rc == ST_OK) {
            *found = 1;
            return ST_OK;
        }
        if (rc == ST_UNAVAILABLE)
            return trainer_outage(t, rc, err[0] ? err : util_last_error(), !err[0]);
        if (rc != ST_DATA)   /* refused credentials and the like: no guessing */
            return util_fail(rc, "resume: %s; fix it and resume again", err[0] ? err : util_last_error());
        util_log("skipping step %lld: %s", (long long)k->step, err);
        trainer_note_bad(rs, k, err);
    }
    if (rs->n_bad + rs->n_bad_remote > 0)
        return trainer_none_verifies(t, rs, fresh_ok);
    trainer_log(t, "no checkpoint under %s%s%s that verifies: starting fresh", t->ckpt_dir,
                rs->s3 ? " or " : "", rs->s3 ? t->c->ckpt_remote : "");
    return ST_OK;
}

/* Rank 0, fresh start with a remote: the prefix must hold no checkpoint. A
 * fresh run there would upload over another run's steps, its rotation would
 * delete them, and a later resume could take the other run's newest one.
 * Nothing remote is ever deleted, --force included: the user decides. A
 * remote that cannot be listed now is only a warning: a failing remote
 * never stops training (checkpoint.required governs the uploads). */
static int trainer_remote_unused(trainer *t, s3_client *s3, int force)
{
    int64_t *steps = NULL;
    int n = 0, rc = ckpt_remote_steps(s3, &steps, &n);
    if (rc != ST_OK) {
        util_log("could not check whether %s already holds checkpoints (see above); starting anyway",
                 t->c->ckpt_remote);
        rc = ST_OK;
    } else if (n > 0) {
        rc = util_fail(ST_USAGE, "%s already holds %d checkpoint%s (newest: step %lld)%s; use `spotrain resume` to "
                       "continue that run, another checkpoint.remote prefix, or remove the old objects (e.g. `aws s3 "
                       "rm --recursive %s/`)", t->c->ckpt_remote, n, n == 1 ? "" : "s", (long long)steps[n - 1],
                       force ? ", and --force never deletes remote objects" : "", t->c->ckpt_remote);
    }
    free(steps);
    return rc;
}

/* Rank 0, fresh start: refuses a run_dir or remote that already holds
 * checkpoints; --force moves the local ones aside. */
static int trainer_fresh_dir(trainer *t, s3_client *s3, int force)
{
    char aside[CFG_STR + 64];
    int n = ckpt_count(t->ckpt_dir);
    /* The remote first: a refused --force must not have moved anything. */
    int rc = s3 ? trainer_remote_unused(t, s3, force) : ST_OK;
    if (rc != ST_OK || n == 0)
        return rc;
    if (!force)
        return util_fail(ST_USAGE, "%s already holds %d checkpoint%s; use `spotrain resume` to "
                         "continue, or `train --force` to start over (old checkpoints are moved "
                         "aside)", t->ckpt_dir, n, n == 1 ? "" : "s");
    /* A unique name: two --force starts can fall in one second. */
    for (int k = 0; k < 1000; k++) {
        snprintf(aside, sizeof aside, "%s.old-%lld%s%.0d", t->ckpt_dir, (long long)util_wall(),
                 k ? "." : "", k);
        if (access(aside, F_OK) != 0)
            break;
    }
    if (rename(t->ckpt_dir, aside) != 0)
        return util_fail(ST_IOERR, "cannot move %s aside to %s", t->ckpt_dir, aside);
    if ((rc = util_mkdirs(t->ckpt_dir)) == ST_OK)
        trainer_log(t, "--force: moved the old checkpoints to %s", aside);
    return rc;
}

/* Rank 0's start decision: fresh (trainer_fresh_dir), or the newest resume
 * candidate that passes its check. */
typedef struct {
    trainer *t;
    trainer_resume_src *rs;
    int mode, force;
    char *path;
    size_t cap;
    int64_t st[2];            /* status, 1 = resume from path */
    char why[1024];           /* the failure line, for the main thread's ledger */
    atomic_int done;
} trainer_pick_job;

static void *trainer_pick_decide(void *arg)
{
    trainer_pick_job *j = arg;
    trainer *t = j->t;
    int mode = j->mode, force = j->force;
    int64_t *st = j->st;
    comm_test_slow("pick");
    if (mode == TRAIN_FRESH)
        st[0] = trainer_fresh_dir(t, j->rs->s3, force);
    else
        st[0] = trainer_next_candidate(t, j->rs, force, j->path, j->cap, &st[1]);
    snprintf(j->why, sizeof j->why, "%s", st[0] != ST_OK ? util_last_error() : "");
    atomic_store(&j->done, 1);
    return NULL;
}

/* Rank 0 decides fresh/resume and what to resume from; everyone follows.
 * The decision can take minutes (a local candidate is read in full), so
 * rank 0 makes it on a thread while every rank exchanges a tiny agreement
 * every 50 ms: the others hear from rank 0 throughout, and
 * spot.comm_timeout_seconds bounds only its silence, not its disk. */
static int trainer_pick_start(trainer *t, int mode, int force, trainer_resume_src *rs, char *path, size_t cap,
                              int *resume)
{
    trainer_pick_job j = {.t = t, .rs = rs, .mode = mode, .force = force, .path = path, .cap = cap,
                          .st = {ST_OK, 0}};
    pthread_t th;
    int started = 0, rc = ST_OK;
    path[0] = 0;
    atomic_init(&j.done, 0);
    if (trainer_is_root(t) && !(started = pthread_create(&th, NULL, trainer_pick_decide, &j) == 0))
        trainer_pick_decide(&j);   /* no thread to spare: decide here, unpolled */
    comm_test_freeze("pick");
    comm_phase("start agreement: fresh or which checkpoint");
    for (int64_t busy = 1; busy && rc == ST_OK;) {
        double t0 = util_now();
        long pause_ns = 0;
        while (started && !atomic_load(&j.done) && util_now() - t0 < 0.05)
            util_poll_pause(&pause_ns);
        busy = started && !atomic_load(&j.done);
        rc = comm_max(&busy, 1);
    }
    /* Even on a timeout: the thread uses rs and path, which the caller frees. */
    if (started)
        pthread_join(th, NULL);
    if (trainer_is_root(t) && j.st[0] != ST_OK)
        util_keep_error(j.why);
    if (rc != ST_OK || (rc = comm_bcast(j.st, sizeof j.st, 0)) != ST_OK || (rc = comm_bcast(path, cap, 0)) != ST_OK)
        return rc;
    *resume = j.st[1] != 0;
    return (int)j.st[0];
}

static int trainer_hf_sink(void *arg, size_t offset, size_t n, const float *src)
{
    backend *b = arg;
    return b->load(b, BK_PARAMS, offset, n, src);
}

/* model.init_from's files and safetensors headers against the layout, on
 * every rank (each may have its own copy), before a byte of weights. */
static int trainer_check_init(trainer *t)
{
    char which[160] = "";
    if (!t->c->init_from[0] || t->init_checked)
        return ST_OK;
    int64_t st = hf_check(t->c->init_from, &t->L, which, sizeof which);
    comm_phase("start-up agreement: model.init_from");
    int rc = comm_max(&st, 1);
    if (rc != ST_OK)
        return rc;
    if (st == ST_OK)
        trainer_log(t, "init_from: reading %s/%s", t->c->init_from, which);
    t->init_checked = st == ST_OK;
    return (int)st;
}

/* Fresh weights streamed into the backend in bounded pieces (generated, or
 * a Hugging Face model's for fine-tuning); Adam m and v start at zero (the
 * backend's own initial state) and the step at 0. */
static int trainer_fresh(trainer *t)
{
    int rc = trainer_check_init(t);
    if (rc != ST_OK)
        return rc;
    if (t->c->init_from[0])
        return hf_load(t->c->init_from, &t->L, trainer_hf_sink, t->b);
    float *buf = malloc(TRAINER_IO_FLOATS * sizeof(float));
    rc = buf ? ST_OK : util_fail(ST_SOFTWARE, "out of memory");
    for (size_t off = 0; off < t->L.n_floats && rc == ST_OK; off += TRAINER_IO_FLOATS) {
        size_t n = t->L.n_floats - off < TRAINER_IO_FLOATS ? t->L.n_floats - off : TRAINER_IO_FLOATS;
        model_init_range(&t->L, (uint64_t)t->c->seed, t->c->init_std, off, n, buf);
        rc = t->b->load(t->b, BK_PARAMS, off, n, buf);
    }
    free(buf);
    return rc;
}

/* --- one optimizer step ------------------------------------------------ */

/* One step; *skipped is set when the scaled gradients overflowed and no
 * update ran (the step still counts: its batch is consumed, the schedule
 * moves on, so the data order stays a function of the step). */
static int trainer_step(trainer *t, double *loss, double *gnorm, double *lr, int *skipped)
{
    const cfg *c = t->c;
    backend *b = t->b;
    int64_t T = c->seq_len, row0 = (int64_t)t->rank * t->rows_per_rank;
    /* With a power-of-two loss scale the seed, the norm and the update
     * multiplier are all exact rescalings: unscaled bits unless overflow. */
    double used = t->ls.scale;
    float scale = lscale_seed(&t->ls, (float)(1.0 / ((double)c->global_batch * (double)T)));
    double sums[2] = {0, 0};   /* loss sum, then squared-gradient sum */
    int rc = b->zero_grads(b);
    for (int64_t r = 0; r < t->rows_per_rank && rc == ST_OK; r += c->micro_batch) {
        int64_t n = t->rows_per_rank - r < c->micro_batch ? t->rows_per_rank - r : c->micro_batch;
        data_train_rows(t->d, (uint64_t)c->seed, t->step, c->global_batch, row0 + r, n, t->rows);
        rc = b->fwd_bwd(b, t->rows, n, scale);
    }
    if (rc == ST_OK)
        rc = b->take_loss(b, &sums[0]);
    if (rc == ST_OK)
        rc = b->reduce_grads(b);
    if (rc == ST_OK)
        rc = b->grad_sumsq(b, &sums[1]);
    if (rc != ST_OK || (rc = comm_sum(sums, 2)) != ST_OK)
        return rc;
    *loss = sums[0] / ((double)c->global_batch * (double)T);
    *gnorm = t->ls.mode == LSCALE_OFF ? sqrt(sums[1]) : sqrt(sums[1]) / used;
    *lr = optim_lr(&t->h, t->step);
    *skipped = 0;
    /* Every rank holds the same sums, so every rank decides the same. */
    int verdict = isfinite(*loss) ? lscale_update(&t->ls, isfinite(*gnorm)) : LSCALE_FATAL;
    if (verdict == LSCALE_FATAL)
        return util_fail(ST_DATA, "step %lld: loss %g, gradient norm %g are not finite%s; lower train.lr "
                         "or resume from an earlier checkpoint", (long long)t->step + 1, *loss, *gnorm,
                         isfinite(*loss) && t->ls.mode == LSCALE_DYNAMIC ? " at loss scale 1" : "");
    if (verdict == LSCALE_SKIP) {
        *skipped = 1;
        return ST_OK;
    }
    double clip = optim_clip_scale(&t->h, *gnorm);
    if (t->ls.mode != LSCALE_OFF)
        clip /= used;
    rc = b->adamw(b, &t->h, *lr, clip, t->step + 1);
    return rc == ST_OK ? b->gather_params(b) : rc;
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

/* The writer's view of the backend: fill runs inside submit (the stall;
 * a device backend only starts its copy there), fence on the writer thread
 * before it reads the buffer. */
static int trainer_fill(void *arg, float *dst, size_t lo, size_t hi)
{
    backend *b = arg;
    return lo == b->lo && hi == b->hi ? b->snapshot(b, dst)
                                      : util_fail(ST_SOFTWARE, "checkpoint range [%zu, %zu) is not the backend's "
                                                  "[%zu, %zu)", lo, hi, b->lo, b->hi);
}

static int trainer_fence(void *arg)
{
    backend *b = arg;
    return b->snapshot_wait(b);
}

/* What a save of the current step records. */
static void trainer_meta(trainer *t, ckpt_meta *m)
{
    memset(m, 0, sizeof *m);
    m->step = t->step;
    m->tokens = t->tokens;
    m->elapsed_seconds = t->train_seconds;
    m->loss_scale = t->ls.scale;
    m->loss_scaling = t->ls.mode == LSCALE_DYNAMIC ? CKPT_SCALING_DYNAMIC
                      : t->ls.mode == LSCALE_FIXED ? CKPT_SCALING_FIXED : CKPT_SCALING_OFF;
    m->loss_scale_clean = t->ls.clean;
    m->backend = t->b->name;
    m->precision = t->b->precision;
    m->device = t->b->device;
    m->libraries = t->b->libraries;
    m->reduce = comm_reduce_name(comm_get_reduce());
    m->lr = optim_lr(&t->h, t->step);
    m->world_size = t->world;
    m->rank = t->rank;
    m->config_text = t->config_text;
    m->table = &t->table;
    m->lo = t->lo;
    m->hi = t->hi;
    m->src = (ckpt_source){.fill = trainer_fill, .fence = trainer_fence, .arg = t->b};
}

static int trainer_submit(trainer *t)
{
    ckpt_meta m;
    int skipped = 0;
    trainer_meta(t, &m);
    int rc = proto_submit(&t->pr, &m, &skipped);
    if (rc == ST_OK && skipped)
        trainer_log(t, "step %lld: checkpoint skipped, the previous one is still being written "
                    "(checkpoint.busy = skip)", (long long)t->step);
    return rc;
}

static int trainer_save_now(trainer *t, double timeout_s)
{
    ckpt_meta m;
    trainer_meta(t, &m);
    return proto_save_now(&t->pr, &m, timeout_s);
}

/* Rank 0: re-evaluates the automatic interval; a change (or the first
 * value, with force) is a ledger line with the figures behind it. */
static void trainer_interval(trainer *t, int force)
{
    double cost, mtbf;
    int measured;
    if (!trainer_is_root(t) || !t->auto_interval)
        return;
    int moved = interval_update(&t->ia, (util_now() - t->segment_start) / 3600.0, &cost, &mtbf, &measured);
    if (!moved && !force)
        return;
    const char *by = interval_by_name(t->ia.by);
    ledger_interval(&t->lg, t->step, t->ia.interval_s, by, cost, measured, mtbf, t->ia.hard_failures,
                    t->ia.hours_before + (util_now() - t->segment_start) / 3600.0);
    trainer_log(t, "checkpoint interval %.1f s (auto, set by %s: save cost %.3f s %s, %.2f h between hard failures)",
                t->ia.interval_s, by, cost, measured ? "measured" : "assumed", mtbf / 3600.0);
}

/* Rank 0, at start: what earlier segments of the run saw. */
static void trainer_interval_start(trainer *t)
{
    const cfg *c = t->c;
    t->segment_start = util_now();
    t->auto_interval = c->ckpt_interval_seconds == CFG_AUTO && c->ckpt_interval_steps == 0;
    if (!t->auto_interval || !trainer_is_root(t))
        return;
    interval_init(&t->ia, c->ckpt_min_seconds, c->ckpt_max_seconds, c->ckpt_overhead_percent / 100.0,
                  c->interruptions_per_hour, c->ckpt_stall_seconds);
    /* read once, by ledger_resume_counts */
    interval_resume(&t->ia, t->lg.hard_failures, t->lg.hours_before, t->lg.cost_s);
    trainer_interval(t, 1);
}

/* Rank 0, from the protocol: a checkpoint became durable. */
static void trainer_on_commit(void *arg, const ckpt_result *res)
{
    trainer *t = arg;
    ledger_checkpoint(&t->lg, res);
    if (t->auto_interval) {
        interval_saved(&t->ia, res->stall_ms / 1000.0, res->write_ms / 1000.0);
        trainer_interval(t, 0);
    }
    trainer_log(t, "checkpoint step %lld committed: %.1f MiB -> %.1f MiB, stall %.1f ms, write %.0f ms",
                (long long)res->step, res->raw_bytes / 1048576.0, res->stored_bytes / 1048576.0, res->stall_ms,
                res->write_ms);
}

/* Rank 0, from the protocol: one upload record (a rank's shards, or the
 * whole checkpoint once its manifest landed). */
static void trainer_on_upload(void *arg, const proto_upload *u)
{
    trainer *t = arg;
    char url[1200], d[32];
    ckpt_uploader_url(t->up, u->step, url, sizeof url);
    ledger_upload(&t->lg, url, u->step, u->rank, u->ranks, u->status, u->bytes, u->seconds, u->why);
    if (u->rank < 0)
        trainer_log(t, "checkpoint step %lld uploaded to %s: %.1f MiB in %.2f s (%.1f MB/s over %d rank%s)",
                    (long long)u->step, url, u->bytes / 1048576.0, u->seconds,
                    u->seconds > 0 ? u->bytes / u->seconds / 1e6 : 0.0, u->ranks, u->ranks == 1 ? "" : "s");
    else if (!strcmp(u->status, "failed")) {
        if (t->pr.remote >= 0)
            snprintf(d, sizeof d, "step %lld", (long long)t->pr.remote);
        else
            snprintf(d, sizeof d, "none");
        trainer_log(t, "upload of checkpoint step %lld to %s failed (%s); %s, the newest remote checkpoint: %s",
                    (long long)u->step, url, u->why ? u->why : "see above",
                    t->c->ckpt_required ? "stopping (checkpoint.required = 1)" : "training goes on", d);
    } else if (!strcmp(u->status, "skipped") && u->rank == 0)
        trainer_log(t, "checkpoint step %lld not uploaded: rotated away locally before its upload started",
                    (long long)u->step);
}

/* --- the stop ------------------------------------------------------------ */

/* The shortest notice each provider gives; a notice whose time is already
 * past (a late poll, a skewed clock) still gets this long for a final
 * save: the instance is usually there, and trying costs nothing. */
static double trainer_min_window(const trainer *t, const char *source)
{
    static const struct { const char *name; double s; } w[] = {
        {"aws", 120}, {"gcp", 30}, {"azure", 30}, {"alibaba", 300}};
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
        if (!strcmp(source, w[i].name))
            return w[i].s < t->c->grace_seconds ? w[i].s : t->c->grace_seconds;
    return t->c->grace_seconds;
}

static int trainer_deadline(const trainer *t, const spot_notice *n, double *deadline)
{
    double now = util_wall(), d = n->pending && n->deadline > 0 ? n->deadline : now + t->c->grace_seconds;
    if (n->pending && d <= now)
        d = now + trainer_min_window(t, n->source);
    int64_t ms = -(int64_t)(d * 1000.0);
    int rc = comm_max(&ms, 1);   /* the earliest deadline of any rank */
    *deadline = -(double)ms / 1000.0;
    return rc;
}

/* Every rank gets here at the same step. Whatever happens, the answer is
 * 75; the ledger's stop record says what is durable. */
static int trainer_stop(trainer *t, const spot_notice *n)
{
    char why[1024], d[48];
    double deadline;
    proto_final final;
    ckpt_meta m;
    const char *source = n->pending ? n->source : "peer";
    comm_test_freeze("stop");
    comm_phase("stop agreement");
    char left[96];
    int rc = trainer_deadline(t, n, &deadline);
    if (rc != ST_OK)
        return rc;
    double now = util_wall();
    /* A provider time already gone is named as such, not as the minimum
     * window trainer_deadline allows for the final save. */
    if (n->pending && n->given > 0 && n->given <= now)
        snprintf(left, sizeof left, "the notice's time passed %.0f s ago; %.0f s allowed for a final save",
                 now - n->given, deadline - now);
    else
        snprintf(left, sizeof left, "%.0f s until the deadline", deadline - now);
    if (n->pending && n->detail[0] && strncmp(n->detail, n->source, strlen(n->source)))
        trainer_log(t, "stop requested by %s (%s) at step %lld; %s", n->source, n->detail, (long long)t->step, left);
    else
        trainer_log(t, "stop requested by %s at step %lld; %s", n->pending ? n->source : "another rank",
                    (long long)t->step, left);
    spot_watchdog_kick();
    trainer_meta(t, &m);
    /* A peer that stopped answering is 86, not 75: nothing says the stop
     * finished on every rank. */
    if (proto_stop(&t->pr, &m, deadline, &final, why, sizeof why) != ST_OK && comm_failed(NULL))
        return comm_failed(NULL);
    /* Azure ends the VM early once told we are done; only after durable state. */
    if (trainer_is_root(t) && t->pr.durable >= t->step && spot_azure_ack() != ST_OK)
        trainer_log(t, "azure: acknowledgement failed; the VM goes at the event's NotBefore instead");
    if (t->pr.durable >= 0)
        snprintf(d, sizeof d, "step %lld", (long long)t->pr.durable);
    else
        snprintf(d, sizeof d, "none");
    if (t->up && t->pr.durable >= 0)
        snprintf(d + strlen(d), sizeof d - strlen(d), ", %s", t->pr.remote >= t->pr.durable ? "remote" : "local only");
    trainer_log(t, "%s; exiting 75 so a wrapper restarts the run from the newest durable checkpoint (%s)", why, d);
    ledger_stop(&t->lg, t->step, t->pr.durable, t->up ? t->pr.remote : -2, proto_final_name(final), source, why);
    return ST_TEMPFAIL;
}

/* A backstop only: the start waits for the poller's first round to end,
 * and that round (the probes of provider = auto plus one poll) ends by
 * itself, every request bounded by its own deadline. A tight cap here would
 * race the round on a loaded machine and miss a notice already due. */
#define TRAINER_FIRST_POLL_WAIT 60.0

/* A notice whose own time had already passed when this process started
 * (served on and on by a metadata service to a node being reclaimed):
 * every restart here would train a step, save and stop again. So nothing
 * is trained or saved, on any rank, and the exit is ST_RECLAIMED, which
 * tells spotrain-run not to restart on this node. */
static int trainer_due_at_start(trainer *t)
{
    spot_notice n;
    spot_first_round(TRAINER_FIRST_POLL_WAIT);
    memset(&n, 0, sizeof n);
    double now = util_wall();
    int64_t due = spot_poll(&n, NULL) && n.at_start && n.given > 0 && n.given <= now;
    comm_phase("start-up agreement: notice already due");
    int rc = comm_max(&due, 1);
    if (rc != ST_OK || !due)
        return rc;
    if (!trainer_is_root(t))
        return ST_RECLAIMED;
    char d[48];
    if (t->pr.durable >= 0)
        snprintf(d, sizeof d, "step %lld", (long long)t->pr.durable);
    else
        snprintf(d, sizeof d, "none");
    /* Not silenced by --quiet: the exit code alone would not say why. */
    if (n.pending && n.given > 0)
        return util_fail(ST_RECLAIMED, "%s notice (%s) names a time that passed %.0f s before this start: the node is "
                         "being reclaimed; nothing trained or saved (newest durable checkpoint: %s); exiting 88 so "
                         "spotrain-run does not restart here", n.source, n.detail, now - n.given, d);
    return util_fail(ST_RECLAIMED, "another rank started under a notice whose time had passed: its node is being "
                     "reclaimed; nothing trained or saved (newest durable checkpoint: %s); exiting 88 so "
                     "spotrain-run does not restart here", d);
}

/* --- the loop -------------------------------------------------------------- */

static int trainer_ckpt_due(trainer *t, int early_warning)
{
    const cfg *c = t->c;
    double every = c->ckpt_interval_seconds;
    if (early_warning)
        return 1;
    if (c->ckpt_interval_steps > 0 && t->step % c->ckpt_interval_steps == 0)
        return 1;
    if (trainer_is_root(t) && t->auto_interval)
        return interval_due(&t->ia, util_now() - t->last_ckpt_wall);
    if (trainer_is_root(t) && every > 0 && util_now() - t->last_ckpt_wall >= every)
        return 1;
    return 0;
}

/* scale: the loss scale the step ran with. */
static void trainer_progress(trainer *t, double loss, double gnorm, double lr, double ms, double scale)
{
    double tps = (double)t->c->global_batch * (double)t->c->seq_len / (ms / 1000.0);
    if (t->step % t->c->log_every == 0 || t->step == t->c->max_steps) {
        char sc[48] = "";
        if (t->ls.mode != LSCALE_OFF)
            snprintf(sc, sizeof sc, " | scale %g", scale);
        trainer_log(t, "step %lld/%lld | loss %.4f | lr %.2e | norm %.3f%s | %.0f tok/s | %.1f ms",
                    (long long)t->step, (long long)t->c->max_steps, loss, lr, gnorm, sc, tps, ms);
        ledger_step(&t->lg, t->step, loss, lr, gnorm, t->tokens, tps, ms, t->train_seconds, scale);
    } else if (t->tty && trainer_is_root(t) && !util_quiet) {
        fprintf(stderr, "\r\033[Kstep %lld/%lld | loss %.4f | %.0f tok/s", (long long)t->step,
                (long long)t->c->max_steps, loss, tps);
    }
}

/* Rank 0: a step skipped because its scaled gradients overflowed. */
static void trainer_overflow(trainer *t, double loss, double scale)
{
    if (!trainer_is_root(t))
        return;
    trainer_log(t, "step %lld: gradients overflowed at loss scale %g; step skipped (no update), scale now %g",
                (long long)t->step + 1, scale, t->ls.scale);
    ledger_overflow(&t->lg, t->step + 1, loss, scale, t->ls.scale);
}

static int trainer_validate(trainer *t)
{
    double val;
    int rc = trainer_eval(t, &val);
    if (rc != ST_OK)
        return rc;
    trainer_log(t, "step %lld | val loss %.4f", (long long)t->step, val);
    ledger_eval(&t->lg, t->step, val);
    return ST_OK;
}

static void trainer_metrics(trainer *t, double tps, int force)
{
    ledger_progress p = {t->step, t->c->max_steps, t->last_loss, tps, t->train_seconds, t->tokens};
    ledger_metrics(&t->lg, &p, force);
}

/* Agreement after each step: stop?, checkpoint due?, shards written? */
static int trainer_agree(trainer *t, spot_notice *n, int64_t flags[PROTO_N])
{
    int early = 0;
    memset(n, 0, sizeof *n);
    flags[PROTO_STOP] = spot_poll(n, &early);
    flags[PROTO_DUE] = trainer_ckpt_due(t, early);
    proto_flags(&t->pr, flags);
    if (early)
        trainer_log(t, "rebalance recommendation: checkpointing early");
    return comm_max(flags, PROTO_N);
}

/* The agreed flags move the checkpoint in flight along. */
static int trainer_advance(trainer *t, const int64_t flags[PROTO_N])
{
    char d[32];
    int64_t failed = -1;
    /* Before proto_advance: a commit it queues may rotate away local files
     * an upload starting now has to open first. */
    int rc = proto_upload_advance(&t->pr, flags[PROTO_COMMITTED], (int)flags[PROTO_UP_BUSY]);
    if (rc != ST_OK)
        return rc;
    rc = proto_advance(&t->pr, flags, &failed);
    if (rc == ST_OK && failed >= 0) {
        if (t->pr.durable >= 0)
            snprintf(d, sizeof d, "step %lld", (long long)t->pr.durable);
        else
            snprintf(d, sizeof d, "none");
        trainer_log(t, "checkpoint of step %lld abandoned; training goes on, the newest durable checkpoint: %s",
                    (long long)failed, d);
    }
    return rc == ST_OK ? proto_check(&t->pr) : rc;
}

/* A finished run exits 0 only with its final checkpoint complete on the
 * remote. If the upload fails: 74 when checkpoint.required = 1, else 75, so
 * a wrapper restarts it; the resumed run, already at max_steps, trains
 * nothing and only uploads. */
static int trainer_final_upload(trainer *t)
{
    char url[1200], why[2048];
    if (!t->up)
        return ST_OK;
    int rc = proto_upload_flush(&t->pr, INFINITY);
    if (rc != ST_TEMPFAIL)
        return rc;
    ckpt_uploader_url(t->up, t->pr.durable, url, sizeof url);
    snprintf(why, sizeof why, "training finished at step %lld and is saved locally, but its upload to %s did not "
             "complete (%s)", (long long)t->pr.durable, url, t->pr.up_why);
    /* A stop record like a notice's, source "remote": a wrapper sees what is
     * durable where, and that restarts wait on the remote, not on training. */
    ledger_stop(&t->lg, t->step, t->pr.durable, t->pr.remote, proto_final_name(PROTO_FINAL_OK), "remote", why);
    /* Not silenced by --quiet: the exit code alone would not say why. */
    if (trainer_is_root(t))
        return util_fail(ST_TEMPFAIL, "%s; exiting 75: `spotrain resume` with the same run_dir uploads it", why);
    return ST_TEMPFAIL;
}

static int trainer_loop(trainer *t)
{
    const cfg *c = t->c;
    int rc = ST_OK;
    spot_notice n;
    int64_t flags[PROTO_N];
    if ((rc = trainer_due_at_start(t)) != ST_OK)
        return rc;
    comm_phase(NULL);
    if (c->val_every > 0 && t->step == 0 && (rc = trainer_validate(t)) != ST_OK)
        return rc;
    while (t->step < c->max_steps) {
        double t0 = util_now(), loss = 0, gnorm = 0, lr = 0, scale = t->ls.scale;
        int busy = ckpt_writer_busy(t->w), skipped = 0;
        comm_phase(NULL);
        if ((rc = trainer_step(t, &loss, &gnorm, &lr, &skipped)) != ST_OK)
            return rc;
        if (skipped)
            trainer_overflow(t, loss, scale);
        if (t->auto_interval && trainer_is_root(t))
            interval_step(&t->ia, (util_now() - t0) * 1000.0, busy || ckpt_writer_busy(t->w));
        t->step++;
        t->tokens += (uint64_t)(c->global_batch * c->seq_len);
        spot_watchdog_kick();
        if ((rc = trainer_agree(t, &n, flags)) != ST_OK || (rc = trainer_advance(t, flags)) != ST_OK)
            return rc;
        if (c->val_every > 0 && (t->step % c->val_every == 0 || t->step == c->max_steps) &&
            (rc = trainer_validate(t)) != ST_OK)
            return rc;
        double ms = (util_now() - t0) * 1000.0;
        t->train_seconds += ms / 1000.0;
        t->last_loss = loss;
        trainer_progress(t, loss, gnorm, lr, ms, scale);
        trainer_metrics(t, (double)c->global_batch * (double)c->seq_len / (ms / 1000.0), 0);
        if (flags[PROTO_STOP]) {
            rc = trainer_stop(t, &n);
            trainer_metrics(t, 0, 1);
            return rc;
        }
        if (flags[PROTO_DUE] && t->step < c->max_steps) {
            t->last_ckpt_wall = util_now();
            comm_phase("checkpoint commit (busy = wait)");
            if (t->pr.inflight >= 0 && t->copts.busy_wait)
                rc = proto_commit_step(&t->pr, t->pr.inflight, 1e9);
            if (rc == ST_OK)
                rc = trainer_submit(t);
            if (rc != ST_OK)
                return rc;
        }
    }
    comm_phase("final checkpoint commit");
    rc = trainer_save_now(t, 1e9);
    comm_phase("final upload agreement");
    if (rc == ST_OK)
        rc = trainer_final_upload(t);
    trainer_metrics(t, 0, 1);
    return rc;
}

/* --- setup and teardown ---------------------------------------------------- */

/* This rank's share of the node's MemAvailable: the node's ranks split it. */
static uint64_t trainer_mem_share(const trainer *t, int *local)
{
    int nodes = comm_nodes() > 0 ? comm_nodes() : 1;
    *local = t->world / nodes > 0 ? t->world / nodes : 1;
    return memplan_host_available() / (uint64_t)*local;
}

/* train.zero = auto, before the backend exists (it allocates per stage):
 * the lowest stage whose plan fits this rank's share of MemAvailable; with
 * recompute = auto too, every stage with none first (recompute auto then
 * plans at the chosen stage and agrees). On a GPU: against its memory. */
static int trainer_zero_auto(trainer *t, const model_shape *s)
{
    const double gib = 1024.0 * 1024.0 * 1024.0;
    int local = 1, cpu = backend_resolves_cpu(t->c->backend);
    uint64_t avail = cpu ? trainer_mem_share(t, &local) : backend_gpu_memory(t->c->backend);
    /* Every rank must take the same stage (the buckets are collectives):
     * all plan against the smallest memory any rank has (0, unknown, on
     * any rank: unknown for all). */
    int64_t neg = -(int64_t)avail;
    int rc = comm_max(&neg, 1);
    if (rc != ST_OK)
        return rc;
    avail = (uint64_t)-neg;
    memplan_cfg mc;
    memplan_bytes b;
    int both = !strcmp(t->c->recompute, "auto");
    rc = cfg_memplan(t->c, s, !cpu, t->world, &mc);
    if (rc == ST_OK && (rc = both ? memplan_choose_zero_recompute(&mc, avail, &b)
                                  : memplan_choose_zero(&mc, avail, &b)) != ST_OK)
        return util_fail(rc, "%s", util_last_error());
    if (rc != ST_OK)
        return rc;
    t->zero = mc.zero;
    /* GPU memory unknown: the GPU could not be asked (the backend, next,
     * says why in its one line), so stage 1 is kept quietly. */
    if (!cpu && avail == 0)
        return ST_OK;
    if (!cpu)
        trainer_log(t, "zero auto: %d; plan %.3f GiB per GPU against the GPU's %.3f GiB: %.3f GiB headroom%s",
                    t->zero, (double)b.total / gib, (double)avail / gib, ((double)avail - (double)b.total) / gib,
                    (double)b.total > (double)avail ? " (no stage fits: the smallest plan)" : "");
    else if (avail == 0)
        trainer_log(t, "zero auto: 1 (MemAvailable unknown); plan %.3f GiB per process", (double)b.total / gib);
    else
        trainer_log(t, "zero auto: %d; plan %.3f GiB per process against %.3f GiB available to each of %d "
                    "rank%s on this node: %.3f GiB headroom%s", t->zero, (double)b.total / gib,
                    (double)avail / gib, local, local == 1 ? "" : "s", ((double)avail - (double)b.total) / gib,
                    (double)b.total > (double)avail ? " (no stage fits: the smallest plan)" : "");
    return ST_OK;
}

/* train.cpu_gemm on the CPU backend: a named library was opened by the
 * backend; auto has rank 0 time the model's own products (or read the run
 * directory's cache) and every rank take its answer, so that all ranks
 * compute with the same library. The choice and its kernel are logged. */
static int trainer_cpu_gemm(trainer *t)
{
    if (strcmp(t->b->name, "cpu"))
        return ST_OK;
    int lib = gemm_parse(t->c->cpu_gemm), rc = ST_OK;
    char note[600] = "", cache[sizeof t->c->run_dir + 32], desc[160];
    /* SPOTRAIN_CPU_GEMM answers auto without timing: the tests' fixed
     * library, whose bits their comparisons between runs rely on. */
    const char *env = getenv("SPOTRAIN_CPU_GEMM");
    if (lib == GEMM_AUTO && env && gemm_parse(env) >= 0) {
        lib = gemm_parse(env);
        if ((rc = backend_cpu_set_gemm(t->b, lib)) != ST_OK)
            return rc;
        snprintf(note, sizeof note, "cpu_gemm auto: %s (SPOTRAIN_CPU_GEMM)", env);
    } else if (lib == GEMM_AUTO) {
        if (t->rank == 0) {
            snprintf(cache, sizeof cache, "%s/cpu_gemm.cache", t->c->run_dir);
            rc = backend_cpu_gemm_pick(t->b, t->c->micro_batch, cache, &lib, note, sizeof note);
            if (rc != ST_OK)
                lib = GEMM_OPENBLAS;
        }
        int32_t v = lib;
        int brc = comm_bcast(&v, sizeof v, 0);
        if (rc != ST_OK || brc != ST_OK)
            return rc != ST_OK ? rc : brc;
        if ((rc = backend_cpu_set_gemm(t->b, v)) != ST_OK)
            return rc;
        lib = v;
    }
    gemm_describe(lib, desc, sizeof desc);
    if (note[0])
        trainer_log(t, "%s; kernel: %s", note, desc);
    else
        trainer_log(t, "cpu_gemm %s: %s", t->c->cpu_gemm, desc);
    return ST_OK;
}

/* train.recompute = auto: the memory model's plan with none against what
 * a rank has: on the CPU its share of MemAvailable (the node's ranks split
 * it), on a GPU the device's memory; over it, the backend switches to
 * layers before its first step. */
static int trainer_recompute_auto(trainer *t, const model_shape *s)
{
    const double gib = 1024.0 * 1024.0 * 1024.0;
    int local = 1, cuda = strcmp(t->b->name, "cpu") != 0;
    uint64_t avail = cuda ? backend_device_bytes(t->b) : trainer_mem_share(t, &local);
    memplan_cfg mc;
    memplan_bytes b;
    int rc = cfg_memplan(t->c, s, cuda, t->world, &mc);
    mc.zero = t->zero;
    if (rc == ST_OK && (rc = memplan_choose_recompute(&mc, avail, &b)) != ST_OK)
        return util_fail(rc, "%s", util_last_error());
    if (rc == ST_OK && mc.recompute == MEMPLAN_RECOMPUTE_LAYERS)
        rc = backend_set_recompute(t->b, 1);
    if (rc != ST_OK)
        return rc;
    const char *pick = mc.recompute == MEMPLAN_RECOMPUTE_LAYERS ? "layers" : "none";
    if (avail == 0)
        trainer_log(t, "recompute auto: none (%s unknown); plan %.3f GiB per %s", cuda ? "GPU memory" : "MemAvailable",
                    (double)b.total / gib, cuda ? "GPU" : "process");
    else if (cuda)
        trainer_log(t, "recompute auto: %s; plan %.3f GiB per GPU against the GPU's %.3f GiB: %.3f GiB headroom%s",
                    pick, (double)b.total / gib, (double)avail / gib, ((double)avail - (double)b.total) / gib,
                    (double)b.total > (double)avail ? " (does not fit even with layers)" : "");
    else
        trainer_log(t, "recompute auto: %s; plan %.3f GiB per process against %.3f GiB available to each of %d "
                    "rank%s on this node: %.3f GiB headroom%s", pick, (double)b.total / gib,
                    (double)avail / gib, local, local == 1 ? "" : "s", ((double)avail - (double)b.total) / gib,
                    (double)b.total > (double)avail ? " (does not fit even with layers)" : "");
    return ST_OK;
}

/* The CPU backend's start against memory: the plan of the stage and
 * recompute this run takes, against the rank's share of MemAvailable. A
 * plan over it is refused before anything is written or allocated, on
 * every rank together (shares read at different moments may differ), so
 * no run starts to be swapped out or killed by the OOM killer. */
static int trainer_fit_check(trainer *t, const model_shape *s)
{
    if (!backend_resolves_cpu(t->c->backend))
        return ST_OK;
    int local;
    uint64_t avail = trainer_mem_share(t, &local);
    memplan_cfg mc;
    memplan_bytes b;
    char line[1536] = "";
    int rc = cfg_memplan(t->c, s, 0, t->world, &mc);
    mc.zero = t->zero;
    if (rc == ST_OK && (rc = !strcmp(t->c->recompute, "auto") ? memplan_choose_recompute(&mc, avail, &b)
                                                                : memplan_compute(&mc, &b)) != ST_OK)
        return util_fail(rc, "%s", util_last_error());
    if (rc != ST_OK)
        return rc;
    int64_t st = memplan_refusal(&mc, &b, avail, local, line, sizeof line) ? ST_CONFIG : ST_OK;
    comm_phase("start-up agreement: memory plan");
    if ((rc = comm_max(&st, 1)) != ST_OK || st == ST_OK)
        return rc;
    if (!trainer_is_root(t)) {
        util_keep_error(line[0] ? line : "the memory plan does not fit another rank's share of MemAvailable");
        return (int)st;
    }
    if (line[0])
        return util_fail((int)st, "%s", line);
    return util_fail((int)st, "the memory plan (%.3f GiB per process) does not fit another rank's share of "
                     "MemAvailable on its node; not starting", (double)b.total / (1024.0 * 1024.0 * 1024.0));
}

/* fp16 scales the loss (train.loss_scale: 0 dynamic, N fixed); any other
 * precision only when train.loss_scale_init asks for a dynamic scaler. */
static int trainer_scaler(trainer *t)
{
    const cfg *c = t->c;
    int fp16 = !strcmp(t->b->precision, "fp16");
    int mode = LSCALE_OFF;
    double scale = 1.0;
    if (fp16 && c->loss_scale > 0) {
        mode = LSCALE_FIXED;
        scale = c->loss_scale;
    } else if (fp16 || c->loss_scale_init > 0) {
        mode = LSCALE_DYNAMIC;
        scale = c->loss_scale_init > 0 ? c->loss_scale_init : LSCALE_DEFAULT_INIT;
    }
    if (!fp16 && c->loss_scale > 0)
        trainer_log(t, "train.loss_scale = %g applies to fp16 only; this run computes in %s and does not use it",
                    c->loss_scale, t->b->precision);
    if (lscale_init(&t->ls, mode, scale, c->loss_scale_window) != 0)
        return util_fail(ST_CONFIG, "%s: loss scale %g does not fit %s loss scaling", c->path, scale,
                         lscale_mode_name(mode));
    return ST_OK;
}

/* Rank 0 prepares the run directory. config.ini (what `cost report` prices
 * from) is written only once the start is decided, never by a refused one. */
static int trainer_prepare_dir(trainer *t)
{
    int rc = trainer_is_root(t) ? util_mkdirs(t->ckpt_dir) : ST_OK;
    if (rc == ST_OK)
        rc = ledger_open(&t->lg, t->c, trainer_is_root(t));
    int64_t st = rc;
    comm_test_freeze("start");
    comm_phase("start-up agreement: run directory");
    /* ranks > 0 must not race ahead of a failed rank 0 */
    if ((rc = comm_max(&st, 1)) != ST_OK)
        return rc;
    return (int)st;
}

static int trainer_write_config(trainer *t)
{
    char path[CFG_STR + 32];
    if (!trainer_is_root(t))
        return ST_OK;
    snprintf(path, sizeof path, "%s/config.ini", t->c->run_dir);
    return util_write_atomic(path, t->config_text, strlen(t->config_text));
}

/* Every rank's uploader, or none: credentials are found now or the start
 * fails with the reason. */
static int trainer_open_remote(trainer *t)
{
    s3_opts o;
    if (!t->c->ckpt_remote[0])
        return ST_OK;
    cfg_s3_opts(t->c, &o);
    int64_t st = ckpt_uploader_open(&t->up, &o, t->ckpt_dir, t->rank);
    comm_phase("start-up agreement: remote credentials");
    int rc = comm_max(&st, 1);
    if (rc != ST_OK)
        return rc;
    t->pr.up = t->up;
    t->pr.keep_last = t->c->ckpt_keep_last;
    t->pr.keep_every = t->c->ckpt_keep_every;
    t->pr.on_upload = trainer_on_upload;
    return (int)st;
}

static int trainer_open(trainer *t, const cfg *c, int mode)
{
    model_shape s;
    int rc;
    memset(t, 0, sizeof *t);
    t->c = c;
    t->lg.ev.fd = -1;
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
    if (c->ckpt_min_seconds > c->ckpt_max_seconds)
        return util_fail(ST_CONFIG, "%s: checkpoint.min_seconds (%g) is above checkpoint.max_seconds (%g)",
                         c->path, c->ckpt_min_seconds, c->ckpt_max_seconds);
    if (util_fmt(t->ckpt_dir, sizeof t->ckpt_dir, "%s/ckpt", c->run_dir) < 0)
        return util_fail(ST_CONFIG, "train.run_dir is too long");
    if ((rc = model_shape_from_cfg(&s, c)) != ST_OK || (rc = model_layout_init(&t->L, &s)) != ST_OK)
        return rc;
    comm_range(t->L.n_floats, t->rank, t->world, &t->lo, &t->hi);
    if (!(t->config_text = cfg_render(c)))
        return util_fail(ST_SOFTWARE, "out of memory");
    /* A bad init_from is refused before the run directory gets a ledger or
     * a lock: a refused start writes nothing. resume reads init_from only
     * when the config found no checkpoint to take the shape from. */
    if ((mode == TRAIN_FRESH || !c->shape_from_ckpt) && (rc = trainer_check_init(t)) != ST_OK)
        return rc;
    /* The stage and the memory check before the run directory: a start
     * the plan refuses writes nothing. */
    t->zero = atoi(c->zero);
    if (!strcmp(c->zero, "auto") && (rc = trainer_zero_auto(t, &s)) != ST_OK)
        return rc;
    if ((rc = trainer_fit_check(t, &s)) != ST_OK)
        return rc;
    if ((rc = trainer_prepare_dir(t)) != ST_OK)
        return rc;
    /* cuda: train.precision picks the compute type ("auto": the backend's default). */
    comm_phase("start-up: backend");
    backend_opts bo = {c->backend, strcmp(c->precision, "auto") ? c->precision : NULL, (int)c->threads, t->rank,
                       t->world, (int)c->flush_denormals, !strcmp(c->recompute, "layers"), t->zero,
                       gemm_parse(c->cpu_gemm) > 0 ? gemm_parse(c->cpu_gemm) : GEMM_OPENBLAS};
    if ((rc = backend_create(&t->b, &t->L, &bo)) != ST_OK)
        return rc;
    /* backend auto that found no GPU: config refused backend = cpu already */
    if (comm_get_reduce() == COMM_REDUCE_NCCL && strcmp(t->b->name, "cuda"))
        return util_fail(ST_CONFIG, "comm.reduce = nccl needs backend cuda (ncclReduceScatter), but the %s backend "
                         "runs; use comm.reduce = chain", t->b->name);
    if (t->b->warning[0])
        trainer_log(t, "warning: %s", t->b->warning);
    if ((rc = trainer_cpu_gemm(t)) != ST_OK)
        return rc;
    if (!strcmp(c->recompute, "auto") && (rc = trainer_recompute_auto(t, &s)) != ST_OK)
        return rc;
    if ((rc = trainer_scaler(t)) != ST_OK)
        return rc;
    if ((rc = trainer_alloc(t)) != ST_OK)
        return rc;
    if ((rc = data_open(&t->d, c)) != ST_OK)
        return rc;
    if ((rc = ckpt_writer_open(&t->w, t->ckpt_dir, &t->copts, t->rank, t->world, t->lo, t->hi)) != ST_OK)
        return rc;
    if (t->b->pin) {   /* a device backend copies straight into the writer's buffer */
        size_t bytes = 0;
        float *buf = ckpt_writer_buffer(t->w, &bytes);
        if ((rc = t->b->pin(t->b, buf, bytes)) != ST_OK)
            return rc;
    }
    proto_init(&t->pr, t->w, t->rank, t->world, (int)c->ckpt_required, -1);
    t->pr.on_commit = trainer_on_commit;
    t->pr.arg = t;
    return trainer_open_remote(t);
}

static void trainer_close(trainer *t)
{
    ckpt_uploader_close(t->up);
    /* The writer's thread may still wait on the backend's snapshot; the
     * backend unpins the writer's buffer; then the buffer can go. */
    ckpt_writer_stop(t->w);
    if (t->b)
        t->b->destroy(t->b);
    if (t->w)
        ckpt_writer_close(t->w);
    data_close(t->d);
    ledger_close(&t->lg);
    model_layout_free(&t->L);
    free(t->rows);
    model_ckpt_table_free(&t->table);
    free(t->config_text);
}

/* Adam m and v of this rank back to zero after a restore that failed part
 * way, before a fresh start. */
static int trainer_zero_moments(trainer *t)
{
    float *zero = calloc(TRAINER_IO_FLOATS, sizeof(float));
    int rc = zero ? ST_OK : util_fail(ST_SOFTWARE, "out of memory");
    for (int a = BK_ADAM_M; a <= BK_ADAM_V; a++)
        for (size_t off = t->lo; off < t->hi && rc == ST_OK; off += TRAINER_IO_FLOATS)
            rc = t->b->load(t->b, a, off, t->hi - off < TRAINER_IO_FLOATS ? t->hi - off : TRAINER_IO_FLOATS, zero);
    free(zero);
    return rc;
}

/* Picks and reads the checkpoint to start from. A remote candidate is only
 * fully verified as the ranks download it: when any rank finds a damaged
 * chunk, every rank moves on to the next candidate together. */
static int trainer_start_from(trainer *t, int mode, int force, trainer_resume_src *rs, char *path, size_t cap,
                              int *resume, double *dl)
{
    for (;;) {
        uint64_t bytes = 0;
        int rc = trainer_pick_start(t, mode, force, rs, path, cap, resume);
        if (rc != ST_OK)
            return rc;
        if (!*resume) {
            rc = rs->tried ? trainer_zero_moments(t) : ST_OK;
            rc = rc == ST_OK ? trainer_fresh(t) : rc;
            if (rc == ST_OK && trainer_is_root(t))
                trainer_set_aside(t, rs);
            return rc;
        }
        double t0 = util_now();
        rc = trainer_restore(t, path, rs->s3, &bytes);
        dl[0] = (double)bytes;
        dl[1] = util_now() - t0;
        if (rc == ST_OK && trainer_is_root(t))
            trainer_set_aside(t, rs);
        if (rc == ST_UNAVAILABLE) {
            char why[CFG_STR + 128];
            snprintf(why, sizeof why, "a rank could not download %s", path);
            return trainer_outage(t, rc, why, 1);
        }
        if (rc != ST_DATA)
            return rc;
        rs->tried = 1;
        if (trainer_is_root(t)) {
            util_log("skipping %s: a rank could not read it (its line above says why); trying the next newest", path);
            trainer_note_bad(rs, &rs->cands[rs->next - 1], "a rank could not read it");
        }
    }
}

/* The download record: bytes and seconds of every rank (rank 0 writes it). */
static void trainer_download_record(trainer *t, const char *from, const double dl[2])
{
    double *v = calloc((size_t)t->world * 2, sizeof *v);
    if (!v)
        return;
    v[2 * t->rank] = dl[0];
    v[2 * t->rank + 1] = dl[1];
    comm_phase("start-up: download record");
    if (comm_sum(v, 2 * t->world) == ST_OK && trainer_is_root(t)) {
        ledger_download(&t->lg, t->step, from, v, t->world);
        double bytes = 0, secs = 0;
        for (int r = 0; r < t->world; r++) {
            bytes += v[2 * r];
            secs = v[2 * r + 1] > secs ? v[2 * r + 1] : secs;
        }
        trainer_log(t, "downloaded %.1f MiB from %s in %.2f s: %.1f MB/s over %d rank%s (rank 0: %.1f MB/s)",
                    bytes / 1048576.0, from, secs, secs > 0 ? bytes / secs / 1e6 : 0.0, t->world,
                    t->world == 1 ? "" : "s", v[1] > 0 ? v[0] / v[1] / 1e6 : 0.0);
    }
    free(v);
}

static int trainer_begin(trainer *t, int mode, int force)
{
    char path[CFG_STR + 64];
    int resume = 0, rc = ST_OK;
    double dl[2] = {0, 0};
    trainer_resume_src rs = {0};
    if (t->c->ckpt_remote[0]) {
        s3_opts so;
        cfg_s3_opts(t->c, &so);
        int64_t st = s3_open(&rs.s3, &so);
        comm_phase("start-up agreement: remote credentials");
        /* Credentials can fail on one node only (its instance role): all stop. */
        rc = comm_max(&st, 1);
        rc = rc == ST_OK ? (int)st : rc;
    }
    if (rc == ST_OK)
        rc = trainer_start_from(t, mode, force, &rs, path, sizeof path, &resume, dl);
    free(rs.cands);
    free(rs.bad);
    s3_close(rs.s3);
    if (rc == ST_OK && resume)
        snprintf(t->resumed_from, sizeof t->resumed_from, "%s", path);
    if (rc == ST_OK)
        rc = trainer_write_config(t);
    if (rc != ST_OK)
        return rc;
    ledger_start(&t->lg, t->step, t->world, comm_nodes(), t->resumed_from, t->b->name, t->b->device,
                 t->b->precision, t->b->libraries, t->L.n_floats);
    if (t->continuity[0] && trainer_is_root(t))
        ledger_continuity(&t->lg, t->step, t->continuity);
    if (resume && !strncmp(path, "s3://", 5))
        trainer_download_record(t, path, dl);
    ledger_resume_counts(&t->lg, comm_nodes());
    trainer_interval_start(t);
    trainer_log(t, "%s %zu parameters on %d rank%s (%s backend), step %lld of %lld",
                t->resumed_from[0] ? "resumed" : "training", t->L.n_floats, t->world,
                t->world == 1 ? "" : "s", t->b->name, (long long)t->step, (long long)t->c->max_steps);
    return ST_OK;
}

int train_run(const cfg *c, int mode, int force)
{
    trainer t;
    int rc = trainer_open(&t, c, mode);
    int spot_on = 0, started = 0;
    spot_opts so;
    const comm_failure *cf;
    cfg_spot_opts(c, &so);
    if (rc == ST_OK)
        rc = trainer_begin(&t, mode, force);
    started = rc == ST_OK;
    if (rc == ST_OK && (rc = spot_start(&so, trainer_is_root(&t) ? c->run_dir : NULL)) == ST_OK) {
        spot_on = 1;
        rc = spot_watchdog_start(c->watchdog_seconds);
    }
    if (rc == ST_OK)
        rc = trainer_loop(&t);
    /* Bounded, so MPI_Finalize (which cannot be) only ever joins peers
     * that are known to have reached the end too. */
    if ((rc == ST_OK || rc == ST_TEMPFAIL) && !comm_failed(NULL)) {
        comm_test_freeze("exit");
        comm_phase("exit agreement");
        int brc = comm_barrier();
        rc = brc != ST_OK ? brc : rc;
    }
    if (spot_on) {
        spot_watchdog_stop();
        spot_stop();
    }
    /* A failed wait for a peer decides the exit code (86 for a timeout),
     * whatever a caller turned it into on the way up. */
    if (comm_failed(&cf)) {
        rc = comm_failed(NULL);
        if (t.lg.ev.fd >= 0 && cf->timeout > 0)
            ledger_peer_timeout(&t.lg, t.step, cf->agreement, cf->peer, cf->waited, cf->timeout);
    }
    /* A start that failed says why in its own record; the exit record
     * after it carries the code for the wrapper, as after any segment. */
    if (!started && t.lg.ev.fd >= 0)
        ledger_start_failed(&t.lg, rc, util_last_error());
    if (t.lg.ev.fd >= 0)
        ledger_exit(&t.lg, t.step, rc);
    if (rc == ST_OK)
        trainer_log(&t, "done: %lld steps, %.1f s of training", (long long)t.step, t.train_seconds);
    trainer_close(&t);
    return rc;
}
