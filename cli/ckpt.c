/* `spotrain ckpt inspect|verify|export`: finds the checkpoints a path names
 * (a step directory, a checkpoint directory or a run directory), describes
 * or verifies them, and exports one as Hugging Face safetensors; each verb's
 * options and usage. */
#include "cli.h"
#include "ckpt/ckpt_int.h"
#include "util/util.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CKPT_USAGE_REMOTE \
    "  PATH may also be s3://BUCKET/PREFIX (every checkpoint under the prefix) or\n" \
    "  s3://BUCKET/PREFIX/step-NNNNNNNN, read with ranged GETs, every chunk checked as it\n" \
    "  arrives. --endpoint URL (default $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, else AWS)\n" \
    "  names an S3-compatible service; --region R (default $AWS_REGION, $AWS_DEFAULT_REGION,\n" \
    "  else us-east-1). Credentials as for checkpoint.remote: AWS_ACCESS_KEY_ID and\n" \
    "  AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN), the credentials file, or the instance role.\n" \
    "  AWS_MAX_ATTEMPTS caps the tries per request (default 9).\n"

static const char ckpt_usage_inspect[] =
    "usage: spotrain ckpt inspect PATH [--json] [--endpoint URL] [--region R]\n"
    "  PATH is one checkpoint (RUN_DIR/ckpt/step-NNNNNNNN), a checkpoint directory or a run\n"
    "  directory (its ckpt/ is used). Prints step, tokens, training time, world size, sizes,\n"
    "  ratio, codec, validity (every chunk is re-read) and an xxh3-64 digest of params, adam_m\n"
    "  and adam_v in flat order (the same whatever world size or codec saved them).\n"
    "  Exit 0 when every checkpoint verifies, 65 when one does not, 66 when none is there.\n"
    CKPT_USAGE_REMOTE;
static const char ckpt_usage_verify[] =
    "usage: spotrain ckpt verify PATH [--endpoint URL] [--region R]\n"
    "  Re-reads every chunk of every shard and checks sizes and checksums. PATH as for\n"
    "  inspect (s3:// too). Exit 0 when all verify; 65 with one line naming checkpoint and\n"
    "  chunk if not; 66 when there is no checkpoint (an s3:// step without manifest.json).\n";
static const char ckpt_usage_export[] =
    "usage: spotrain ckpt export PATH -o DIR [--dtype f32|bf16] [--max-shard-size SIZE]\n"
    "                          [--endpoint URL] [--region R]\n"
    "  Writes DIR/model.safetensors and DIR/config.json for transformers'\n"
    "  LlamaForCausalLM from one checkpoint (or the newest that verifies under PATH),\n"
    "  and copies the tokenizer of the run's [data] tokenizer (tokenizer.json and a\n"
    "  tokenizer_config.json beside it), so DIR is a complete model directory.\n"
    "  --dtype f32|bf16        weight type (default f32; bf16 rounds to nearest even)\n"
    "  --max-shard-size SIZE   split into model-0000K-of-0000N.safetensors files of at most\n"
    "                          SIZE bytes (suffix K, M, G: powers of 1000; KiB, MiB, GiB)\n"
    "                          plus model.safetensors.index.json (default: one file)\n"
    "  PATH may be s3:// as for inspect; given a prefix, the newest checkpoint whose manifest\n"
    "  and object sizes check is exported, its chunks verified as they download.\n";

/* "5GB", "500MiB", "1000000" -> bytes; 0 on success. */
static int ckpt_cli_size(const char *s, uint64_t *out)
{
    char *end;
    double v = strtod(s, &end);
    static const struct { const char *suf; double mul; } sufs[] = {
        {"", 1}, {"B", 1}, {"K", 1e3}, {"KB", 1e3}, {"M", 1e6}, {"MB", 1e6}, {"G", 1e9}, {"GB", 1e9},
        {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}};
    if (end == s || !(v > 0))
        return -1;
    for (size_t i = 0; i < sizeof sufs / sizeof sufs[0]; i++)
        if (!strcmp(end, sufs[i].suf) && v * sufs[i].mul < 1e18) {
            *out = (uint64_t)(v * sufs[i].mul);
            return *out ? 0 : -1;
        }
    return -1;
}

/* Where an s3:// PATH is read from: flags, then the AWS CLI's variables. */
typedef struct {
    const char *endpoint, *region;
    s3_client *c;             /* open while the PATH is s3:// */
} ckpt_cli_remote;

enum { CKPT_OPT_JSON = CLI_LONG, CKPT_OPT_ENDPOINT, CKPT_OPT_REGION, CKPT_OPT_DTYPE, CKPT_OPT_MAX_SHARD };

/* Where an s3:// PATH is read from: every verb takes these. */
#define CKPT_OPTS_REMOTE \
    {"endpoint", required_argument, NULL, CKPT_OPT_ENDPOINT}, {"region", required_argument, NULL, CKPT_OPT_REGION}

static const struct option ckpt_opts_inspect[] = {
    {"json", no_argument, NULL, CKPT_OPT_JSON}, CKPT_OPTS_REMOTE, CLI_OPT_HELP, {0}};
static const struct option ckpt_opts_verify[] = {CKPT_OPTS_REMOTE, CLI_OPT_HELP, {0}};
static const struct option ckpt_opts_export[] = {
    {"dtype", required_argument, NULL, CKPT_OPT_DTYPE},
    {"max-shard-size", required_argument, NULL, CKPT_OPT_MAX_SHARD},
    CKPT_OPTS_REMOTE,
    CLI_OPT_HELP,
    {0}};

/* What a verb's command line said. */
typedef struct {
    const char *path, *out, *endpoint, *region;
    int json, help;
    ckpt_export_opts export;
} ckpt_cli_args;

/* One option of any verb (each verb's table admits only its own). */
static int ckpt_cli_take(const cli_args *a, int opt, ckpt_cli_args *o)
{
    switch (opt) {
    case CKPT_OPT_JSON:
        o->json = 1;
        return ST_OK;
    case CKPT_OPT_ENDPOINT:
        o->endpoint = a->arg;
        return ST_OK;
    case CKPT_OPT_REGION:
        o->region = a->arg;
        return ST_OK;
    case 'o':
        o->out = a->arg;
        return ST_OK;
    case 'h':
        o->help = 1;
        return ST_OK;
    case CKPT_OPT_DTYPE:
        if (strcmp(a->arg, "f32") && strcmp(a->arg, "bf16"))
            return util_fail(ST_USAGE, "ckpt export: --dtype '%s' is not f32 or bf16", a->arg);
        o->export.dtype = !strcmp(a->arg, "bf16") ? CKPT_EXPORT_BF16 : CKPT_EXPORT_F32;
        return ST_OK;
    case CKPT_OPT_MAX_SHARD:
        if (ckpt_cli_size(a->arg, &o->export.max_shard_bytes))
            return util_fail(ST_USAGE, "ckpt export: --max-shard-size '%s' is not a size like 5GB", a->arg);
        return ST_OK;
    case CLI_OPERAND:
        if (o->path)
            return cli_args_unexpected(a, a->arg);
        o->path = a->arg;
        return ST_OK;
    default:
        return ST_USAGE;
    }
}

/* argv[0] is the verb ("inspect"); stops early at --help. */
static int ckpt_cli_parse(int argc, char **argv, const char *cmd, const struct option *opts, const char *shortopts,
                          ckpt_cli_args *o)
{
    cli_args a;
    int opt, rc = ST_OK;
    memset(o, 0, sizeof *o);
    o->export.dtype = CKPT_EXPORT_F32;
    cli_args_init(&a, cmd, argc, argv, opts, shortopts);
    while (rc == ST_OK && !o->help && (opt = cli_args_next(&a)) != CLI_END)
        rc = ckpt_cli_take(&a, opt, o);
    return rc;
}

static const char *ckpt_cli_env(const char *a, const char *b)
{
    const char *v = getenv(a);
    if (!v || !*v)
        v = b ? getenv(b) : NULL;
    return v && *v ? v : "";
}

/* The client for the run prefix of url, and the step url names (-1: none). */
static int ckpt_cli_s3_open(const char *url, ckpt_cli_remote *rm, int64_t *step)
{
    s3_opts o;
    char run[sizeof o.remote];
    s3_opts_default(&o);
    if (ckpt_s3_split(url, run, sizeof run, step) != 0)
        return util_fail(ST_USAGE, "%.200s: URL too long", url);
    snprintf(o.remote, sizeof o.remote, "%s", run);
    snprintf(o.endpoint, sizeof o.endpoint, "%s",
             rm->endpoint ? rm->endpoint : ckpt_cli_env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"));
    snprintf(o.region, sizeof o.region, "%s", rm->region ? rm->region : "");
    const char *att = ckpt_cli_env("AWS_MAX_ATTEMPTS", NULL);
    if (*att) {
        char *end;
        long v = strtol(att, &end, 10);
        if (*end || v < 1 || v > 100)
            return util_fail(ST_USAGE, "AWS_MAX_ATTEMPTS='%s' is not a number of tries from 1 to 100", att);
        o.retries = (int)v - 1;
    }
    return s3_open(&rm->c, &o);
}

/* An s3:// PATH: the step URLs it names, oldest first. */
static int ckpt_cli_resolve_s3(const char *path, ckpt_cli_remote *rm, char ***dirs, int *n)
{
    int64_t step, *steps = NULL;
    int cnt = 0, rc = ckpt_cli_s3_open(path, rm, &step);
    if (rc != ST_OK)
        return rc;
    if (step >= 0) {
        *dirs = calloc(1, sizeof **dirs);
        if (!*dirs || !((*dirs)[0] = strdup(path)))
            return util_fail(ST_SOFTWARE, "out of memory");
        *n = 1;
        return ST_OK;
    }
    if ((rc = ckpt_remote_steps(rm->c, &steps, &cnt)) != ST_OK)
        return rc;
    if (cnt == 0) {
        free(steps);
        return util_fail(ST_NOINPUT, "no checkpoints under %s (no PREFIX/step-NNNNNNNN/manifest.json objects); "
                         "check the bucket, prefix and --endpoint", path);
    }
    const s3_url *u = s3_client_url(rm->c);
    *dirs = calloc((size_t)cnt, sizeof **dirs);
    for (int i = 0; *dirs && i < cnt; i++) {
        char p[sizeof u->prefix + 128];
        snprintf(p, sizeof p, "s3://%s%s%s/step-%08" PRId64, u->bucket, u->prefix[0] ? "/" : "", u->prefix, steps[i]);
        (*dirs)[i] = strdup(p);
    }
    free(steps);
    *n = cnt;
    return *dirs ? ST_OK : util_fail(ST_SOFTWARE, "out of memory");
}

/* Opens one of the paths resolve gave, local or remote, quietly. */
static int ckpt_cli_open(const ckpt_cli_remote *rm, const char *dir, ckpt_reader **r, char *err, size_t errcap)
{
    char run[1200];
    int64_t step = -1;
    if (!rm->c)
        return ckpt_open_quiet(r, dir, err, errcap);
    *r = NULL;
    if (ckpt_s3_split(dir, run, sizeof run, &step) != 0 || step < 0) {
        snprintf(err, errcap, "%.300s: not a checkpoint step URL", dir);
        return ST_USAGE;
    }
    return ckpt_open_remote(r, rm->c, step, err, errcap);
}

/* Foreground checks use every core; a remote reader at least its GETs in flight. */
static void ckpt_cli_threads(ckpt_reader *r)
{
    int all = ckpt_threads_all();
    r->threads = r->s3 && all < CKPT_REMOTE_GETS ? CKPT_REMOTE_GETS : all;
}

/* The step directories PATH names, oldest first. */
static int ckpt_cli_resolve(const char *path, ckpt_cli_remote *rm, char ***dirs, int *n)
{
    struct stat st;
    char probe[4200], base[4200];
    int64_t step, *steps = NULL;
    int cnt = 0;
    *dirs = NULL;
    *n = 0;
    if (!strncmp(path, "s3://", 5))
        return ckpt_cli_resolve_s3(path, rm, dirs, n);
    if (stat(path, &st) != 0)
        return util_fail(ST_NOINPUT, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return util_fail(ST_NOINPUT, "%s is not a directory; give a checkpoint, checkpoint dir or run dir", path);
    snprintf(probe, sizeof probe, "%s/manifest.json", path);
    const char *slash = strrchr(path, '/');
    snprintf(base, sizeof base, "%s", slash && slash[1] ? slash + 1 : path);
    if (stat(probe, &st) == 0 || ckpt_name_step(base, &step) == 0) {
        *dirs = calloc(1, sizeof **dirs);
        if (!*dirs || !((*dirs)[0] = strdup(path)))
            return util_fail(ST_SOFTWARE, "out of memory");
        *n = 1;
        return ST_OK;
    }
    snprintf(probe, sizeof probe, "%s/ckpt", path);
    const char *dir = stat(probe, &st) == 0 && S_ISDIR(st.st_mode) ? probe : path;
    if (ckpt_list_steps(dir, &steps, &cnt) != ST_OK || cnt == 0) {
        free(steps);
        return util_fail(ST_NOINPUT, "no checkpoints under %s", dir);
    }
    *dirs = calloc((size_t)cnt, sizeof **dirs);
    for (int i = 0; *dirs && i < cnt; i++) {
        char p[4300];
        snprintf(p, sizeof p, "%s/step-%08" PRId64, dir, steps[i]);
        (*dirs)[i] = strdup(p);
    }
    free(steps);
    *n = cnt;
    return *dirs ? ST_OK : util_fail(ST_SOFTWARE, "out of memory");
}

static void ckpt_cli_free(char **dirs, int n)
{
    for (int i = 0; dirs && i < n; i++)
        free(dirs[i]);
    free(dirs);
}

static json_object *ckpt_cli_json(const char *dir, const ckpt_reader *r, int rc, const char *err,
                                   char dig[CKPT_N_ARRAYS][17])
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "path", json_object_new_string(dir));
    json_object_object_add(o, "valid", json_object_new_boolean(rc == ST_OK));
    json_object_object_add(o, "error", rc == ST_OK ? NULL : json_object_new_string(err));
    if (!r)
        return o;
    const ckpt_info *in = &r->info;
    json_object_object_add(o, "step", json_object_new_int64(in->step));
    json_object_object_add(o, "tokens", json_object_new_int64((int64_t)in->tokens));
    json_object_object_add(o, "elapsed_seconds", json_object_new_double(in->elapsed_seconds));
    json_object_object_add(o, "saved_at", json_object_new_double(in->saved_at));
    json_object_object_add(o, "world_size", json_object_new_int(in->world_size));
    json_object_object_add(o, "format_version", json_object_new_int(in->format_version));
    json_object_object_add(o, "manifest_sealed", json_object_new_boolean(!in->unsealed));
    json_object_object_add(o, "spotrain_version", json_object_new_string(in->spotrain_version));
    json_object_object_add(o, "codec", json_object_new_string(ckpt_codec_name(in->codec)));
    json_object_object_add(o, "level", json_object_new_int(in->level));
    json_object_object_add(o, "chunk_bytes", json_object_new_int64((int64_t)r->chunk_bytes));
    json_object_object_add(o, "n_floats", json_object_new_int64((int64_t)in->n_floats));
    json_object_object_add(o, "raw_bytes", json_object_new_int64((int64_t)in->raw_bytes));
    json_object_object_add(o, "stored_bytes", json_object_new_int64((int64_t)in->stored_bytes));
    json_object_object_add(o, "ratio", json_object_new_double(in->stored_bytes ? (double)in->raw_bytes / (double)in->stored_bytes : 0));
    json_object_object_add(o, "lr", json_object_new_double(in->lr));
    json_object_object_add(o, "loss_scale", json_object_new_double(in->loss_scale));
    json_object_object_add(o, "loss_scaling", json_object_new_string(ckpt_scaling_name(in->loss_scaling)));
    if (in->loss_scaling == CKPT_SCALING_DYNAMIC)
        json_object_object_add(o, "loss_scale_clean", json_object_new_int64(in->loss_scale_clean));
    /* null when the manifest predates the fields */
    const char *who[][2] = {{"backend", in->backend}, {"precision", in->precision}, {"device", in->device},
                            {"libraries", in->libraries}};
    for (size_t k = 0; k < sizeof who / sizeof who[0]; k++)
        json_object_object_add(o, who[k][0], who[k][1][0] ? json_object_new_string(who[k][1]) : NULL);
    json_object *m = json_object_new_object();
    json_object_object_add(m, "dim", json_object_new_int64(in->model.dim));
    json_object_object_add(m, "n_layers", json_object_new_int64(in->model.n_layers));
    json_object_object_add(m, "n_heads", json_object_new_int64(in->model.n_heads));
    json_object_object_add(m, "n_kv_heads", json_object_new_int64(in->model.n_kv_heads));
    json_object_object_add(m, "ffn_dim", json_object_new_int64(in->model.ffn_dim));
    json_object_object_add(m, "vocab", json_object_new_int64(in->model.vocab));
    json_object_object_add(m, "seq_len", json_object_new_int64(in->model.seq_len));
    json_object_object_add(o, "model", m);
    json_object *d = json_object_new_object();
    for (int a = 0; a < CKPT_N_ARRAYS; a++)
        json_object_object_add(d, ckpt_array_name(a), rc == ST_OK ? json_object_new_string(dig[a]) : NULL);
    json_object_object_add(o, "digest", d);
    return o;
}

static void ckpt_cli_text(const char *dir, const ckpt_reader *r, int rc, const char *err,
                          char dig[CKPT_N_ARRAYS][17])
{
    if (!r) {
        printf("%s\n  INVALID: %s\n", dir, err);
        return;
    }
    const ckpt_info *in = &r->info;
    char when[48];
    util_iso8601(in->saved_at, when);
    printf("%s\n  step %" PRId64 ", %" PRIu64 " tokens, %.1f s trained, world %d, saved %s\n", dir, in->step,
           in->tokens, in->elapsed_seconds, in->world_size, when);
    printf("  %" PRIu64 " params x 3 arrays: raw %.2f MiB, stored %.2f MiB, ratio %.3fx, codec %s level %d\n",
           in->n_floats, (double)in->raw_bytes / 1048576.0, (double)in->stored_bytes / 1048576.0,
           in->stored_bytes ? (double)in->raw_bytes / (double)in->stored_bytes : 0.0, ckpt_codec_name(in->codec),
           in->level);
    if (in->backend[0] || in->device[0])
        printf("  computed by %s %s on %s%s%s\n", in->backend[0] ? in->backend : "?",
               in->precision[0] ? in->precision : "?", in->device[0] ? in->device : "?",
               in->libraries[0] ? "; " : "", in->libraries);
    else
        printf("  backend, precision and device not recorded (written before spotrain recorded them)\n");
    if (in->loss_scaling == CKPT_SCALING_DYNAMIC)
        printf("  loss scale %g (dynamic, %" PRId64 " clean steps toward the next doubling)\n", in->loss_scale,
               in->loss_scale_clean);
    else if (in->loss_scaling == CKPT_SCALING_FIXED)
        printf("  loss scale %g (fixed)\n", in->loss_scale);
    if (rc == ST_OK)
        printf("  valid; digest params %s adam_m %s adam_v %s\n", dig[0], dig[1], dig[2]);
    else
        printf("  INVALID: %s\n", err);
}

static int ckpt_cli_inspect(const ckpt_cli_args *o)
{
    const char *path = o->path;
    int json = o->json, rc = ST_OK, n = 0;
    char **dirs = NULL;
    ckpt_cli_remote rm = {o->endpoint, o->region, NULL};
    if (!path)
        return util_fail(ST_USAGE, "ckpt inspect: which checkpoint? spotrain ckpt inspect PATH [--json]");
    if ((rc = ckpt_cli_resolve(path, &rm, &dirs, &n)) != ST_OK)
        goto out;
    json_object *all = json_object_new_array();
    for (int i = 0; i < n; i++) {
        char err[CKPT_ERR] = "", dig[CKPT_N_ARRAYS][17];
        ckpt_reader *r = NULL;
        int one = ckpt_cli_open(&rm, dirs[i], &r, err, sizeof err);
        if (one == ST_OK)
            ckpt_cli_threads(r);
        if (one == ST_OK && (one = ckpt_verify_digest(r, dig)) != ST_OK)
            snprintf(err, sizeof err, "%s", r->err);
        if (json)
            json_object_array_add(all, ckpt_cli_json(dirs[i], r, one, err, dig));
        else
            ckpt_cli_text(dirs[i], r, one, err, dig);
        if (one != ST_OK && rc == ST_OK)
            rc = one == ST_NOINPUT || one == ST_IOERR || one == ST_UNAVAILABLE || one == ST_CONFIG ? one : ST_DATA;
        ckpt_close(r);
    }
    if (json) {
        json_object *out = n == 1 && ckpt_name_step(strrchr(dirs[0], '/') ? strrchr(dirs[0], '/') + 1 : dirs[0], &(int64_t){0}) == 0 &&
                           strcmp(dirs[0], path) == 0 ? json_object_array_get_idx(all, 0) : all;
        printf("%s\n", json_object_to_json_string_ext(out, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE));
    }
    json_object_put(all);
out:
    ckpt_cli_free(dirs, n);
    s3_close(rm.c);
    return rc;
}

static int ckpt_cli_verify(const ckpt_cli_args *o)
{
    const char *path = o->path;
    int rc = ST_OK, n = 0;
    char **dirs = NULL;
    ckpt_cli_remote rm = {o->endpoint, o->region, NULL};
    if (!path)
        return util_fail(ST_USAGE, "ckpt verify: which checkpoint? spotrain ckpt verify PATH");
    if ((rc = ckpt_cli_resolve(path, &rm, &dirs, &n)) != ST_OK)
        goto out;
    for (int i = 0; i < n; i++) {
        char err[CKPT_ERR];
        ckpt_reader *r = NULL;
        s3_stats before = {0};
        if (rm.c)
            s3_get_stats(rm.c, &before);
        int one = ckpt_cli_open(&rm, dirs[i], &r, err, sizeof err);
        if (one == ST_OK)
            ckpt_cli_threads(r);
        if (one == ST_OK && (one = ckpt_verify_quiet(r)) != ST_OK)
            snprintf(err, sizeof err, "%s", r->err);
        if (one == ST_OK) {
            size_t chunks = 0;
            for (int s = 0; s < r->n_shards; s++)
                chunks += r->shards[s].n_chunks;
            printf("%s: ok (%d shard%s, %zu chunks, %" PRIu64 " bytes)%s\n", dirs[i], r->n_shards,
                   r->n_shards == 1 ? "" : "s", chunks, r->info.stored_bytes,
                   r->info.unsealed ? "; note: format 1 manifest without a checksum, edits to it cannot be detected" : "");
            if (rm.c) {
                s3_stats st;
                s3_get_stats(rm.c, &st);
                printf("  downloaded %" PRIu64 " bytes in %" PRIu64 " requests (%" PRIu64 " retried)\n",
                       ckpt_bytes_read(r), st.requests - before.requests, st.retries - before.retries);
            }
        } else if (rm.c && (one == ST_UNAVAILABLE || one == ST_CONFIG)) {
            /* The service, not the checkpoint: the client's line said why,
             * and the next checkpoint would meet the same answer. */
            ckpt_close(r);
            rc = one;
            break;
        } else {
            util_fail(one, "%s", err);
            if (rc == ST_OK)
                rc = one == ST_NOINPUT || one == ST_IOERR ? one : ST_DATA;
        }
        ckpt_close(r);
    }
out:
    ckpt_cli_free(dirs, n);
    s3_close(rm.c);
    return rc;
}

/* export of an s3:// PATH: the step it names, or the newest under the
 * prefix whose manifest and object sizes check. */
static int ckpt_cli_export_s3(const char *path, const char *out, const ckpt_export_opts *o, ckpt_cli_remote *rm)
{
    char err[CKPT_ERR], url[1200];
    int64_t step, *steps = NULL;
    int n = 0, rc = ckpt_cli_s3_open(path, rm, &step);
    ckpt_reader *r = NULL;
    if (rc == ST_OK && step >= 0) {
        if ((rc = ckpt_open_remote(&r, rm->c, step, err, sizeof err)) != ST_OK)
            util_fail(rc, "%s", err);
    } else if (rc == ST_OK && (rc = ckpt_remote_steps(rm->c, &steps, &n)) == ST_OK) {
        rc = ST_NOINPUT;
        for (int i = n - 1; i >= 0 && rc != ST_OK; i--) {
            ckpt_cand k = {steps[i], 1};
            int one = ckpt_candidate_check(NULL, rm->c, &k, url, sizeof url, err, sizeof err);
            if (one != ST_OK && one != ST_DATA) {
                rc = util_fail(one, "%s", err);
                break;
            }
            if (one == ST_DATA)
                util_log("skipping step %" PRId64 ": %s", steps[i], err);
            else if ((rc = ckpt_open_remote(&r, rm->c, steps[i], err, sizeof err)) != ST_OK)
                util_fail(rc, "%s", err);
        }
        if (rc == ST_NOINPUT && !r)
            util_fail(rc, "no checkpoint under %s whose manifest and objects check", path);
    }
    if (rc == ST_OK)
        rc = ckpt_export_reader(r, out, o);
    ckpt_close(r);
    free(steps);
    return rc;
}

static int ckpt_cli_export(const ckpt_cli_args *a)
{
    const char *path = a->path, *out = a->out;
    char latest[4300];
    struct stat st;
    const ckpt_export_opts o = a->export;
    ckpt_cli_remote rm = {a->endpoint, a->region, NULL};
    if (!path || !out)
        return util_fail(ST_USAGE, "ckpt export: spotrain ckpt export PATH -o DIR");
    if (!strncmp(path, "s3://", 5)) {
        int rc = ckpt_cli_export_s3(path, out, &o, &rm);
        s3_close(rm.c);
        return rc;
    }
    if (stat(path, &st) != 0)
        return util_fail(ST_NOINPUT, "%s: %s", path, strerror(errno));
    char probe[4300];
    snprintf(probe, sizeof probe, "%s/manifest.json", path);
    if (stat(probe, &st) != 0) {
        /* A checkpoint or run directory: the newest that verifies. */
        snprintf(probe, sizeof probe, "%s/ckpt", path);
        const char *dir = stat(probe, &st) == 0 && S_ISDIR(st.st_mode) ? probe : path;
        int64_t s;
        const char *slash = strrchr(path, '/');
        if (ckpt_name_step(slash ? slash + 1 : path, &s) != 0) {
            if (ckpt_find_latest(dir, latest, sizeof latest) != ST_OK)
                return util_fail(ST_NOINPUT, "no checkpoint that verifies under %s", dir);
            path = latest;
        }
    }
    return ckpt_export_ex(path, out, &o);
}

int cli_ckpt(int argc, char **argv)
{
    static const struct {
        const char *verb, *cmd, *usage, *shortopts;
        const struct option *opts;
        int (*fn)(const ckpt_cli_args *);
    } verbs[] = {
        {"inspect", "ckpt inspect", ckpt_usage_inspect, "h", ckpt_opts_inspect, ckpt_cli_inspect},
        {"verify", "ckpt verify", ckpt_usage_verify, "h", ckpt_opts_verify, ckpt_cli_verify},
        {"export", "ckpt export", ckpt_usage_export, "ho:", ckpt_opts_export, ckpt_cli_export}};
    if (argc < 2)
        return util_fail(ST_USAGE, "ckpt: which one? spotrain ckpt inspect|verify|export (see spotrain --help)");
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        for (size_t v = 0; v < sizeof verbs / sizeof verbs[0]; v++)
            fputs(verbs[v].usage, stdout);
        return ST_OK;
    }
    for (size_t v = 0; v < sizeof verbs / sizeof verbs[0]; v++) {
        if (strcmp(argv[1], verbs[v].verb) != 0)
            continue;
        ckpt_cli_args o;
        int rc = ckpt_cli_parse(argc - 1, argv + 1, verbs[v].cmd, verbs[v].opts, verbs[v].shortopts, &o);
        if (rc == ST_OK && o.help)
            return fputs(verbs[v].usage, stdout), ST_OK;
        return rc == ST_OK ? verbs[v].fn(&o) : rc;
    }
    return util_fail(ST_USAGE, "ckpt: unknown verb '%s'; use inspect, verify or export", argv[1]);
}
