/* The checkpoint directory: the atomic commit, rotation (keep_last +
 * keep_every, never the only good one), leftover .tmp cleanup, the
 * newest-that-verifies search, and the on_save hook. Layer 6 of ckpt/
 * (ckpt_int.h): verifies through reader.c. */
#include "ckpt_int.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int ckpt_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)ftw;
    int bad = flag == FTW_DP ? ckpt_os->rmdir(path) : ckpt_os->unlink(path);
    return bad != 0 && errno != ENOENT ? -1 : 0;
}

int ckpt_rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    return nftw(path, ckpt_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int ckpt_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int ckpt_list_steps(const char *ckpt_dir, int64_t **steps, int *n)
{
    DIR *d = ckpt_os->opendir(ckpt_dir);
    int64_t *v = NULL, s;
    int cnt = 0, cap = 0;
    struct dirent *e;
    *steps = NULL;
    *n = 0;
    if (!d)
        return errno == ENOENT || errno == ENOTDIR ? ST_NOINPUT : ST_IOERR;
    while ((e = readdir(d))) {
        if (ckpt_name_step(e->d_name, &s) != 0)
            continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            int64_t *nv = realloc(v, (size_t)cap * sizeof *v);
            if (!nv) {
                free(v);
                closedir(d);
                return ST_SOFTWARE;
            }
            v = nv;
        }
        v[cnt++] = s;
    }
    closedir(d);
    if (cnt)
        qsort(v, (size_t)cnt, sizeof *v, ckpt_cmp_i64);
    *steps = v;
    *n = cnt;
    return ST_OK;
}

void ckpt_clean_tmp(const char *ckpt_dir, int64_t below)
{
    DIR *d = ckpt_os->opendir(ckpt_dir);
    struct dirent *e;
    int64_t s;
    char path[4200];
    if (!d)
        return;
    while ((e = readdir(d))) {
        if (ckpt_name_step(e->d_name, &s) != 1)
            continue;
        if (below >= 0 && s >= below && !strstr(e->d_name, ".del."))
            continue;
        snprintf(path, sizeof path, "%s/%s", ckpt_dir, e->d_name);
        if (ckpt_rm_rf(path) == 0)
            util_log("removed leftover %s", path);
    }
    closedir(d);
}

static int ckpt_step_path(char *out, size_t cap, const char *dir, int64_t step, const char *suffix)
{
    return util_fmt(out, cap, "%s/step-%08" PRId64 "%s", dir, step, suffix) < 0 ? -1 : 0;
}

/* threads > 1 only in the foreground: in the background it would take
 * cores from training. */
int ckpt_good_ex(const char *ckpt_dir, int64_t step, int threads, int *unsealed, char *err, size_t errcap)
{
    char path[4200];
    ckpt_reader *r = NULL;
    ckpt_step_path(path, sizeof path, ckpt_dir, step, "");
    int rc = ckpt_open_quiet(&r, path, err, errcap);
    if (rc == ST_OK)
        r->threads = threads;
    if (rc == ST_OK && (rc = ckpt_verify_quiet(r)) != ST_OK)
        snprintf(err, errcap, "%.800s", r->err);
    *unsealed = rc == ST_OK && r->info.unsealed;
    ckpt_close(r);
    return rc;
}

static int ckpt_good(const char *ckpt_dir, int64_t step, int threads, char *err, size_t errcap)
{
    int unsealed = 0;
    return ckpt_good_ex(ckpt_dir, step, threads, &unsealed, err, errcap);
}

/* Every shard file the manifest names exists with the size it records. */
static int ckpt_sizes_match(const ckpt_reader *r, char *err, size_t errcap)
{
    for (int i = 0; i < r->n_shards; i++) {
        char path[4200];
        struct stat st;
        snprintf(path, sizeof path, "%s/shard-%05d.bin", r->dir, r->shards[i].rank);
        int e = stat(path, &st) != 0 ? errno : 0;
        if (e || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != r->shards[i].file_bytes) {
            snprintf(err, errcap, "%.800s: %s, manifest says %" PRIu64 " bytes", path,
                     e ? strerror(e) : "not a file of that size", r->shards[i].file_bytes);
            return ST_DATA;
        }
    }
    return ST_OK;
}

/* For the step this writer just committed: every chunk was checksummed in
 * memory as it was written and fsynced, and the manifest passed the reader's
 * checks and the size check at commit, so re-reading it all would only
 * re-prove that; the manifest and the file sizes are checked again in case
 * something touched it since. */
static int ckpt_good_fresh(const char *ckpt_dir, int64_t step, char *err, size_t errcap)
{
    char path[4200];
    ckpt_reader *r = NULL;
    ckpt_step_path(path, sizeof path, ckpt_dir, step, "");
    int rc = ckpt_open_quiet(&r, path, err, errcap);
    if (rc == ST_OK)
        rc = ckpt_sizes_match(r, err, errcap);
    ckpt_close(r);
    return rc;
}

/* A delete is a rename to *.del.tmp first, so a crash half way leaves a
 * name every reader ignores rather than a broken committed checkpoint. */
static int ckpt_delete_step(const char *ckpt_dir, int64_t step)
{
    char from[4200], to[4200];
    if (ckpt_step_path(from, sizeof from, ckpt_dir, step, "") || ckpt_step_path(to, sizeof to, ckpt_dir, step, ".del.tmp"))
        return -1;
    char err[CKPT_ERR];
    if (ckpt_os->rename(from, to) != 0)
        return -1;
    ckpt_sync_dir(ckpt_dir, err, sizeof err);   /* a crash before it is harmless: the old name was good */
    return ckpt_rm_rf(to);
}

int ckpt_set_aside(const char *ckpt_dir, int64_t step, char *to, size_t cap)
{
    char from[4200], bad[4200];
    if (ckpt_step_path(from, sizeof from, ckpt_dir, step, "") || util_fmt(bad, sizeof bad, "%s.bad", ckpt_dir) < 0)
        return util_fail(ST_USAGE, "checkpoint path under %s too long", ckpt_dir);
    if (mkdir(bad, 0755) != 0 && errno != EEXIST)
        return util_fail(ST_IOERR, "cannot create %s: %s", bad, strerror(errno));
    /* A unique name: the same step can go bad again after a resume. */
    for (int k = 0; k < 1000; k++)
        if (util_fmt(to, cap, "%s/step-%08" PRId64 "%s%.0d", bad, step, k ? "." : "", k) < 0 || access(to, F_OK) != 0)
            break;
    if (ckpt_os->rename(from, to) != 0)
        return util_fail(ST_IOERR, "cannot move %s to %s: %s", from, to, strerror(errno));
    char err[CKPT_ERR];
    ckpt_sync_dir(ckpt_dir, err, sizeof err);   /* lost in a crash: it is found bad again next time */
    return ST_OK;
}

int ckpt_rotate(const char *ckpt_dir, int64_t keep_last, int64_t keep_every, int64_t fresh)
{
    int64_t *steps = NULL;
    int n = 0, rc = ckpt_list_steps(ckpt_dir, &steps, &n);
    char err[CKPT_ERR];
    if (rc != ST_OK || keep_last <= 0 || n <= keep_last) {
        free(steps);
        return rc == ST_NOINPUT ? ST_OK : rc;
    }
    char *keep = calloc((size_t)n, 1);
    if (!keep) {
        free(steps);
        return ST_SOFTWARE;
    }
    int n_drop = 0;
    for (int i = 0; i < n; i++) {
        keep[i] = i >= n - keep_last || (keep_every > 0 && steps[i] % keep_every == 0);
        n_drop += !keep[i];
    }
    /* Deleting is only safe while some kept checkpoint verifies; otherwise
     * spare the newest droppable one that does. The one just committed here
     * counts as verified while its manifest parses and its sizes hold; if
     * they do not, it is fully verified like any other. */
    int safe = 0;
    for (int i = n - 1; i >= 0 && n_drop > 0 && !safe; i--)
        if (keep[i])
            safe = (steps[i] == fresh && ckpt_good_fresh(ckpt_dir, steps[i], err, sizeof err) == ST_OK) ||
                   ckpt_good(ckpt_dir, steps[i], 1, err, sizeof err) == ST_OK;
    for (int i = n - 1; i >= 0 && n_drop > 0 && !safe; i--)
        if (!keep[i] && ckpt_good(ckpt_dir, steps[i], 1, err, sizeof err) == ST_OK) {
            keep[i] = 1;
            safe = 1;
            util_log("rotation keeps step %" PRId64 ": it is the only checkpoint that verifies", steps[i]);
        }
    for (int i = 0; i < n; i++)
        if (!keep[i] && ckpt_delete_step(ckpt_dir, steps[i]) != 0)
            util_log("rotation could not delete step %" PRId64 " under %s: %s", steps[i], ckpt_dir, strerror(errno));
    free(keep);
    free(steps);
    return ST_OK;
}

int ckpt_find_latest(const char *ckpt_dir, char *path, size_t cap)
{
    int64_t *steps = NULL;
    int n = 0, rc = ckpt_list_steps(ckpt_dir, &steps, &n);
    char err[CKPT_ERR];
    if (rc == ST_NOINPUT || (rc == ST_OK && n == 0)) {
        free(steps);
        return ST_NOINPUT;
    }
    if (rc != ST_OK)
        return util_fail(rc, "cannot list checkpoints in %s: %s", ckpt_dir, strerror(errno));
    rc = ST_NOINPUT;
    for (int i = n - 1; i >= 0; i--) {
        int unsealed = 0;
        if (ckpt_good_ex(ckpt_dir, steps[i], ckpt_threads_all(), &unsealed, err, sizeof err) == ST_OK) {
            rc = ckpt_step_path(path, cap, ckpt_dir, steps[i], "") == 0 ? ST_OK
                 : util_fail(ST_USAGE, "checkpoint path under %s too long", ckpt_dir);
            if (rc == ST_OK && unsealed)
                util_log("note: %s has a format %d manifest without a checksum, so edits to it cannot be "
                         "detected; the next save writes format %d", path, CKPT_FORMAT_UNSEALED, CKPT_FORMAT_VERSION);
            break;
        }
        util_log("skipping step %" PRId64 ": %s", steps[i], err);
    }
    if (rc == ST_NOINPUT)
        util_log("none of the %d checkpoints under %s verifies", n, ckpt_dir);
    free(steps);
    return rc;
}

int ckpt_count(const char *ckpt_dir)
{
    int64_t *steps = NULL;
    int n = 0;
    ckpt_list_steps(ckpt_dir, &steps, &n);
    free(steps);
    return n;
}

int ckpt_write_file(const char *path, const void *buf, size_t len, char *err, size_t errcap)
{
    int fd = ckpt_os->open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const char *p = buf;
    if (fd < 0) {
        snprintf(err, errcap, "cannot create %.800s: %.100s", path, strerror(errno));
        return ST_IOERR;
    }
    while (len > 0) {
        ssize_t w = ckpt_os->write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(err, errcap, "cannot write %.800s: %.100s", path, w < 0 ? strerror(errno) : "no progress");
            ckpt_os->close(fd);
            return ST_IOERR;
        }
        p += w;
        len -= (size_t)w;
    }
    if (ckpt_os->fsync(fd) != 0) {
        snprintf(err, errcap, "cannot sync %.800s: %.100s", path, strerror(errno));
        ckpt_os->close(fd);
        return ST_IOERR;
    }
    if (ckpt_os->close(fd) != 0) {
        snprintf(err, errcap, "cannot close %.800s: %.100s", path, strerror(errno));
        return ST_IOERR;
    }
    return ST_OK;
}

int ckpt_sync_dir(const char *dir, char *err, size_t errcap)
{
    int fd = ckpt_os->open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0 || (ckpt_os->fsync(fd) != 0 && errno != EINVAL)) {
        snprintf(err, errcap, "cannot sync directory %.800s: %.100s", dir, strerror(errno));
        if (fd >= 0)
            ckpt_os->close(fd);
        return ST_IOERR;
    }
    ckpt_os->close(fd);
    return ST_OK;
}

/* The ranks' shard indices, once merged into the manifest: a copy kept in
 * the committed directory would be bytes nothing reads and `ckpt verify`
 * does not cover, uploaded and trusted all the same. */
static int ckpt_drop_indices(const char *tmp, int world, char *err, size_t errcap)
{
    char path[4300];
    for (int r = 0; r < world; r++) {
        snprintf(path, sizeof path, "%s/shard-%05d.json", tmp, r);
        if (ckpt_os->unlink(path) != 0 && errno != ENOENT) {
            snprintf(err, errcap, "cannot remove %.800s: %.100s", path, strerror(errno));
            return ST_IOERR;
        }
    }
    return ST_OK;
}

int ckpt_store_commit(const char *ckpt_dir, int64_t step, int world, ckpt_result *res, char *err, size_t errcap)
{
    char tmp[4200], final[4200], mpath[4300];
    char *text = NULL;
    struct stat st;
    ckpt_reader check = {0};
    int rc;
    if (ckpt_step_path(tmp, sizeof tmp, ckpt_dir, step, ".tmp") || ckpt_step_path(final, sizeof final, ckpt_dir, step, "")) {
        snprintf(err, errcap, "checkpoint directory path too long: %.200s", ckpt_dir);
        return ST_USAGE;
    }
    if (stat(final, &st) == 0) {
        /* Same config and step give the same bytes: a good durable copy
         * stays; a damaged one (why we resumed from an older step) goes. */
        if (ckpt_good(ckpt_dir, step, 1, err, errcap) == ST_OK) {
            util_log("%s is already committed; discarding the duplicate save", final);
            ckpt_rm_rf(tmp);
            rc = ST_OK;
            goto done;
        }
        char aside[4300];
        util_log("replacing %s, which does not verify: %s", final, err);
        if (ckpt_set_aside(ckpt_dir, step, aside, sizeof aside) != ST_OK) {
            snprintf(err, errcap, "%.1000s", util_last_error());
            rc = ST_IOERR;
            goto fail;
        }
        util_log("moved the damaged %s to %s", final, aside);
    }
    rc = ckpt_manifest_assemble(tmp, world, &text, err, errcap);
    if (rc != ST_OK)
        goto fail;
    /* The manifest must pass the reader's own checks before it is the record. */
    snprintf(check.dir, sizeof check.dir, "%.4000s", tmp);
    if ((rc = ckpt_manifest_parse(&check, text, strlen(text))) != ST_OK) {
        snprintf(err, errcap, "%.800s", check.err);
        goto fail;
    }
    if ((rc = ckpt_sizes_match(&check, err, errcap)) != ST_OK)
        goto fail;
    res->raw_bytes = check.info.raw_bytes;
    res->stored_bytes = check.info.stored_bytes;
    snprintf(mpath, sizeof mpath, "%s/manifest.json", tmp);
    if ((rc = ckpt_write_file(mpath, text, strlen(text), err, errcap)) != ST_OK ||
        (rc = ckpt_drop_indices(tmp, world, err, errcap)) != ST_OK ||
        (rc = ckpt_sync_dir(tmp, err, errcap)) != ST_OK)
        goto fail;
    if (ckpt_os->rename(tmp, final) != 0) {
        snprintf(err, errcap, "cannot rename %.800s to %.800s: %.100s", tmp, final, strerror(errno));
        rc = ST_IOERR;
        goto fail;
    }
    /* Renamed but not known durable: taken back, so that a failed commit is
     * never left looking committed. */
    if ((rc = ckpt_sync_dir(ckpt_dir, err, errcap)) != ST_OK && ckpt_delete_step(ckpt_dir, step) != 0)
        util_log("could not take back %s after the failed sync: %s", final, strerror(errno));
    goto done;
fail:
    ckpt_rm_rf(tmp);
done:
    if (rc == ST_OK) {
        res->step = step;
        util_fmt(res->path, sizeof res->path, "%s", final);
    }
    ckpt_reader_reset(&check);
    free(text);
    return rc;
}

void ckpt_run_on_save(const char *cmd, const char *path, int64_t step)
{
    size_t n = 0;
    char dir_var[4200], step_var[64];
    pid_t pid;
    int status = 0;
    if (!cmd || !cmd[0])
        return;
    while (environ[n])
        n++;
    char **envp = calloc(n + 3, sizeof *envp);
    if (!envp) {
        util_log("on_save skipped: out of memory");
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "SPOTRAIN_CKPT_DIR=", 18) && strncmp(environ[i], "SPOTRAIN_STEP=", 14))
            envp[k++] = environ[i];
    snprintf(dir_var, sizeof dir_var, "SPOTRAIN_CKPT_DIR=%s", path);
    snprintf(step_var, sizeof step_var, "SPOTRAIN_STEP=%" PRId64, step);
    envp[k++] = dir_var;
    envp[k++] = step_var;
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    int e = posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, envp);
    free(envp);
    if (e != 0) {
        util_log("on_save command could not start: %s", strerror(e));
        return;
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        util_log("on_save command for step %" PRId64 " failed (%s %d); the checkpoint is kept", step,
                 WIFEXITED(status) ? "exit" : "signal", WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}
