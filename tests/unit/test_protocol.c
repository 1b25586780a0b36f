/* The checkpoint and stop protocol (train/protocol.c) driven directly, one
 * rank, against a real writer in a scratch directory: each transition of the
 * state machine, what a stop decides with and without time, and the
 * invariants. The multi-rank agreement is covered by tests/cli/cli_mpi.sh.
 * module: train */
#include "tests/harness.h"
#include "model/model.h"
#include "train/protocol.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static model_layout L;
static ckpt_table table;
static float *state;                 /* params | m | v, world 1: the whole vector */
static ckpt_host_arrays host;
static int64_t commits[16];
static int n_commits;

static void tp_on_commit(void *arg, const ckpt_result *r)
{
    (void)arg;
    if (n_commits < 16)
        commits[n_commits++] = r->step;
}

static ckpt_meta tp_meta(int64_t step)
{
    size_t n = L.n_floats;
    ckpt_meta m = {.step = step, .tokens = (uint64_t)step * 64, .elapsed_seconds = (double)step, .loss_scale = 1,
                   .lr = 1e-3, .world_size = 1, .rank = 0, .config_text = "[train]\nseed = 1\n", .table = &table,
                   .lo = 0, .hi = n};
    for (int a = 0; a < CKPT_N_ARRAYS; a++) {
        state[(size_t)a * n] = (float)step;   /* each step's snapshot differs */
        host.arrays[a] = state + (size_t)a * n;
    }
    host.base = 0;
    m.src = (ckpt_source){.fill = ckpt_host_fill, .arg = &host};
    return m;
}

static int tp_open(proto *p, ckpt_writer **w, char *dir, size_t cap)
{
    snprintf(dir, cap, "/tmp/spotrain-test-proto-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    ckpt_opts o = {.codec = CKPT_CODEC_ZSTD, .level = 1, .chunk_bytes = 1 << 16, .threads = 1, .keep_last = 10,
                   .busy_wait = 0};
    if (ckpt_writer_open(w, dir, &o, 0, 1, 0, L.n_floats) != ST_OK)
        return -1;
    proto_init(p, *w, 0, 1, 0, -1);
    p->on_commit = tp_on_commit;
    n_commits = 0;
    return 0;
}

static void tp_close(ckpt_writer *w, const char *dir)
{
    char cmd[300];
    ckpt_writer_close(w);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "    could not remove %s\n", dir);
}

/* IDLE -> SNAPSHOT -> WRITTEN -> COMMITTING -> DURABLE, one call each. */
static void test_transitions(void)
{
    proto p;
    ckpt_writer *w = NULL;
    char dir[64];
    int64_t flags[PROTO_N] = {0}, failed = 0;
    int skipped = 1;
    if (tp_open(&p, &w, dir, sizeof dir) != 0) {
        EXPECT(0);
        return;
    }
    ckpt_meta m = tp_meta(10);
    EXPECT(proto_submit(&p, &m, &skipped) == ST_OK && !skipped);
    EXPECT(p.inflight == 10 && p.durable == -1 && proto_check(&p) == ST_OK);
    EXPECT(ckpt_writer_drain(w, 30) == ST_OK);
    proto_flags(&p, flags);
    EXPECT(flags[PROTO_NOT_WRITTEN] == 0 && flags[PROTO_FAILED] == 0);   /* WRITTEN */
    EXPECT(proto_advance(&p, flags, &failed) == ST_OK && failed == -1);  /* COMMITTING */
    EXPECT(p.inflight == -1);
    EXPECT(ckpt_writer_drain(w, 30) == ST_OK);
    proto_collect(&p);                                                   /* DURABLE */
    EXPECT(p.durable == 10 && n_commits == 1 && commits[0] == 10);
    proto_collect(&p);
    EXPECT(n_commits == 1);   /* told once */
    EXPECT(ckpt_count(dir) == 1);
    tp_close(w, dir);
}

/* A failed write drops the step and keeps durable; required makes it fatal. */
static void test_failed_write(void)
{
    proto p;
    ckpt_writer *w = NULL;
    char dir[64];
    int64_t flags[PROTO_N] = {0, 0, 0, 1}, failed = -1;
    if (tp_open(&p, &w, dir, sizeof dir) != 0) {
        EXPECT(0);
        return;
    }
    p.durable = 4;
    p.inflight = 7;
    EXPECT(proto_advance(&p, flags, &failed) == ST_OK && failed == 7 && p.inflight == -1 && p.durable == 4);
    p.inflight = 8;
    p.required = 1;
    EXPECT(proto_advance(&p, flags, &failed) == ST_IOERR && failed == 8);
    tp_close(w, dir);
}

/* save_now commits what is in flight first, then the current step. */
static void test_save_now(void)
{
    proto p;
    ckpt_writer *w = NULL;
    char dir[64];
    int skipped = 0;
    if (tp_open(&p, &w, dir, sizeof dir) != 0) {
        EXPECT(0);
        return;
    }
    ckpt_meta m10 = tp_meta(10);
    EXPECT(proto_submit(&p, &m10, &skipped) == ST_OK);
    ckpt_meta m20 = tp_meta(20);
    EXPECT(proto_save_now(&p, &m20, 30) == ST_OK);
    EXPECT(p.durable == 20 && p.inflight == -1 && n_commits == 2 && commits[0] == 10 && commits[1] == 20);
    EXPECT(proto_save_now(&p, &m20, 30) == ST_OK && n_commits == 2);   /* already durable: nothing to do */
    tp_close(w, dir);
}

/* The stop: not needed when the step is durable, a final save when the
 * deadline allows, none when it does not (and "none" when nothing is). */
static void test_stop(void)
{
    proto p;
    ckpt_writer *w = NULL;
    char dir[64], why[512];
    proto_final f;
    if (tp_open(&p, &w, dir, sizeof dir) != 0) {
        EXPECT(0);
        return;
    }
    ckpt_meta m5 = tp_meta(5);
    EXPECT(proto_stop(&p, &m5, util_wall() - 1, &f, why, sizeof why) == ST_OK);
    EXPECT(f == PROTO_FINAL_SKIPPED && p.durable == -1 && strstr(why, "durable checkpoint: none"));
    EXPECT(proto_stop(&p, &m5, util_wall() + 60, &f, why, sizeof why) == ST_OK);
    EXPECT(f == PROTO_FINAL_OK && p.durable == 5 && strstr(why, "final checkpoint at step 5"));
    EXPECT(proto_stop(&p, &m5, util_wall() + 60, &f, why, sizeof why) == ST_OK);
    EXPECT(f == PROTO_FINAL_NOT_NEEDED && strstr(why, "durable"));
    /* An in-flight save is flushed before the decision. */
    int skipped = 0;
    ckpt_meta m8 = tp_meta(8), m9 = tp_meta(9);
    EXPECT(proto_submit(&p, &m8, &skipped) == ST_OK && p.inflight == 8);
    EXPECT(proto_stop(&p, &m9, util_wall() - 1, &f, why, sizeof why) == ST_OK);
    EXPECT(f == PROTO_FINAL_SKIPPED && p.durable == 8 && strstr(why, "durable checkpoint: step 8"));
    EXPECT(strcmp(proto_final_name(PROTO_FINAL_SKIPPED), "skipped") == 0);
    tp_close(w, dir);
}

static void test_invariants(void)
{
    proto p;
    proto_init(&p, NULL, 0, 1, 0, 3);
    EXPECT(proto_check(&p) == ST_OK);
    p.inflight = 3;   /* in flight must be newer than durable */
    EXPECT(proto_check(&p) == ST_SOFTWARE);
    p.inflight = -1;
    p.durable = -2;
    EXPECT(proto_check(&p) == ST_SOFTWARE);
}

int main(void)
{
    model_shape s = {.dim = 16, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1, .head_dim = 8, .ffn_dim = 32,
                     .vocab = 64, .seq_len = 8, .rope_theta = 10000, .norm_eps = 1e-6};
    if (model_layout_init(&L, &s) != ST_OK || !(state = calloc(3 * L.n_floats, sizeof(float))) ||
        model_to_ckpt_table(&L, &table) != ST_OK)
        return 1;
    util_quiet = 1;
    harness_run("transitions IDLE..DURABLE", test_transitions);
    harness_run("failed write", test_failed_write);
    harness_run("save_now flushes then saves", test_save_now);
    harness_run("stop decisions", test_stop);
    harness_run("invariants", test_invariants);
    free(state);
    model_ckpt_table_free(&table);
    model_layout_free(&L);
    return harness_end();
}
