/* `spotrain sample`: load the newest good checkpoint of a run (or a given
 * checkpoint), and continue a prompt, greedily or with a temperature. */
#include "train/train.h"
#include "backend/backend.h"
#include "model/rng.h"
#include "tok/tokenizer.h"
#include "ckpt/ckpt.h"
#include "util/util.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char sample_usage[] =
    "usage: spotrain sample CONFIG|RUN_DIR|CKPT_DIR [--prompt S] [--tokens N] [--temperature T] [--seed N]\n"
    "                       [--ignore-eos]\n"
    "  Continues a prompt with the newest checkpoint that verifies (or the one given).\n"
    "  --prompt S        text for byte-level models and for models with [data] tokenizer;\n"
    "                    token ids (\"1 2 3\") for shard models without a tokenizer\n"
    "                    (default: \"12+34=\" for the synthetic corpus, a newline otherwise)\n"
    "  --tokens N        tokens to generate (default 32)\n"
    "  --temperature T   0 = greedy (default), else sample from softmax(logits / T)\n"
    "  --seed N          seed for sampling (default 1)\n"
    "  --ignore-eos      go on past the tokenizer's end-of-text token; without it, generation\n"
    "                    stops there (the token is not printed) and stderr says so\n"
    "  An option's value follows = or a space (--tokens=8, --tokens 8); -- ends the options.\n"
    "  Output (stdout): the prompt followed by the continuation, then a newline unless the\n"
    "  continuation ended with one. As text for byte-level models and models with a\n"
    "  tokenizer; as space-separated token ids for shard models without one.\n";

static int sample_is_dir(const char *p, const char *child)
{
    char buf[4096];
    struct stat st;
    if (util_fmt(buf, sizeof buf, "%s%s%s", p, child[0] ? "/" : "", child) < 0)
        return 0;
    return stat(buf, &st) == 0 && (child[0] && !strcmp(child, "manifest.json") ? S_ISREG(st.st_mode)
                                                                               : S_ISDIR(st.st_mode));
}

/* PATH -> a checkpoint directory that verifies. */
static int sample_resolve(const char *arg, char *ckpt, size_t cap)
{
    char dir[4096];
    cfg c;
    if (sample_is_dir(arg, "manifest.json"))
        return util_fmt(ckpt, cap, "%s", arg) < 0 ? ST_USAGE : ST_OK;
    if (sample_is_dir(arg, "ckpt")) {
        snprintf(dir, sizeof dir, "%s/ckpt", arg);
    } else if (sample_is_dir(arg, "")) {
        snprintf(dir, sizeof dir, "%s", arg);
    } else {
        int rc = cfg_load(&c, arg, NULL, 0);
        if (rc != ST_OK)
            return rc;
        snprintf(dir, sizeof dir, "%s/ckpt", c.run_dir);
    }
    int rc = ckpt_find_latest(dir, ckpt, cap);
    return rc == ST_NOINPUT ? util_fail(ST_NOINPUT, "no checkpoint that verifies under %s; train first", dir) : rc;
}

static int sample_pick(const float *logits, int64_t vocab, double temp, uint64_t seed, uint64_t i)
{
    int64_t best = 0;
    for (int64_t k = 1; k < vocab; k++)
        if (logits[k] > logits[best])
            best = k;
    if (temp <= 0)
        return (int)best;
    double z = 0, u = rng_unit(seed, 77, i), acc = 0;
    for (int64_t k = 0; k < vocab; k++)
        z += exp((logits[k] - logits[best]) / temp);
    for (int64_t k = 0; k < vocab; k++) {
        acc += exp((logits[k] - logits[best]) / temp) / z;
        if (u < acc)
            return (int)k;
    }
    return (int)best;
}

static int sample_encode(const cfg *c, const tok *tk, const char *prompt, int32_t *ids, int64_t cap, int64_t *n)
{
    *n = 0;
    if (tk) {
        uint32_t *v = NULL;
        size_t len = 0, vcap = 0;
        tok_enc *e = NULL;
        int rc = tok_enc_new(&e, tk);
        if (rc == ST_OK)
            rc = tok_encode(e, (const uint8_t *)prompt, strlen(prompt), &v, &len, &vcap);
        /* The model sees the last seq_len tokens of a long prompt. */
        size_t skip = len > (size_t)cap ? len - (size_t)cap : 0;
        for (size_t i = skip; i < len && rc == ST_OK; i++) {
            if (v[i] >= c->vocab_size)
                rc = util_fail(ST_CONFIG, "%s: token id %u of the prompt is outside model.vocab_size %lld; "
                               "is data.tokenizer the model's tokenizer?", c->tokenizer, v[i], (long long)c->vocab_size);
            ids[(*n)++] = (int32_t)v[i];
        }
        free(v);
        tok_enc_free(e);
        return rc;
    }
    if (strcmp(c->source, "shards")) {
        for (const char *p = prompt; *p && *n < cap; p++)
            ids[(*n)++] = (unsigned char)*p;
        return ST_OK;
    }
    for (const char *p = prompt; *p && *n < cap;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p)
            return util_fail(ST_USAGE, "--prompt: '%s' is not a list of token ids (this model reads shards)", prompt);
        if (v < 0 || v >= c->vocab_size)
            return util_fail(ST_USAGE, "--prompt: token id %ld is outside the vocabulary of %lld", v,
                             (long long)c->vocab_size);
        ids[(*n)++] = (int32_t)v;
        p = end + strspn(end, " ,");
    }
    return ST_OK;
}

typedef struct {
    const char *path, *prompt;
    int64_t ntok, seed;
    double temp;
    int ignore_eos;
} sample_opts;

/* Whether generation ends at id: the tokenizer's end-of-text token, unless
 * --ignore-eos. Says so on stderr, since stdout is only the text. */
static int sample_at_eos(const tok *tk, const sample_opts *o, int32_t id, int64_t made)
{
    if (!tk || o->ignore_eos || tok_eos(tk) != id)
        return 0;
    size_t bl = 0;
    const uint8_t *bs = tok_bytes(tk, (uint32_t)id, &bl);
    util_log("sample: stopped at the end-of-text token %.*s (id %d) after %lld token%s; --ignore-eos goes on",
             bs ? (int)bl : 0, bs ? (const char *)bs : "", id, (long long)made, made == 1 ? "" : "s");
    return 1;
}

static int sample_generate(const cfg *c, const tok *tk, backend *b, const sample_opts *o)
{
    int64_t T = c->seq_len, cap = T + o->ntok, n = 0;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
    int rc = !ids || !logits ? util_fail(ST_SOFTWARE, "out of memory") : ST_OK;
    int bytes = strcmp(c->source, "shards") != 0 && !tk, last_nl = 0;
    const char *prompt = o->prompt;
    if (rc == ST_OK)
        rc = sample_encode(c, tk, prompt, ids, T, &n);
    if (rc == ST_OK && n == 0)
        rc = util_fail(ST_USAGE, "--prompt is empty");
    if (rc == ST_OK && (bytes || tk)) {
        fputs(prompt, stdout);
        last_nl = prompt[0] && prompt[strlen(prompt) - 1] == '\n';
    } else if (rc == ST_OK) {
        for (int64_t i = 0; i < n; i++)
            printf("%s%d", i ? " " : "", ids[i]);
    }
    for (int64_t i = 0; i < o->ntok && rc == ST_OK; i++) {
        int64_t ctx = n < T ? n : T;
        rc = b->logits(b, ids + n - ctx, ctx, logits);
        if (rc != ST_OK)
            break;
        ids[n] = sample_pick(logits, c->vocab_size, o->temp, (uint64_t)o->seed, (uint64_t)i);
        if (sample_at_eos(tk, o, ids[n], i))
            break;
        size_t bl = 0;
        const uint8_t *bs = tk ? tok_bytes(tk, (uint32_t)ids[n], &bl) : NULL;
        if (bytes) {
            putchar(ids[n]);
            last_nl = ids[n] == '\n';
        } else if (tk) {
            /* An id the tokenizer lacks (the model's vocabulary may be
             * larger) decodes to nothing, as the library's decode does. */
            if (bs && bl)
                fwrite(bs, 1, bl, stdout), last_nl = bs[bl - 1] == '\n';
        } else {
            printf(" %d", ids[n]);
        }
        n++;
    }
    if (rc == ST_OK && !last_nl)
        putchar('\n');
    free(ids);
    free(logits);
    return rc;
}

enum { SAMPLE_PROMPT = 1, SAMPLE_TOKENS, SAMPLE_TEMP, SAMPLE_SEED, SAMPLE_IGNORE_EOS };

static int sample_option(int opt, const char *val, sample_opts *o)
{
    switch (opt) {
    case SAMPLE_PROMPT:
        o->prompt = val;
        return ST_OK;
    case SAMPLE_TOKENS:
        if (util_parse_i64(val, &o->ntok) || o->ntok < 1 || o->ntok > 1000000)
            return util_fail(ST_USAGE, "--tokens: '%s' is not a count from 1 to 1000000", val);
        return ST_OK;
    case SAMPLE_TEMP:
        if (util_parse_f64(val, &o->temp) || !(o->temp >= 0))
            return util_fail(ST_USAGE, "--temperature: '%s' is not a number >= 0", val);
        return ST_OK;
    case SAMPLE_SEED:
        if (util_parse_i64(val, &o->seed))
            return util_fail(ST_USAGE, "--seed: '%s' is not an integer", val);
        return ST_OK;
    case SAMPLE_IGNORE_EOS:
        o->ignore_eos = 1;
        return ST_OK;
    }
    return ST_SOFTWARE;
}

/* getopt_long, so --opt=value, --opt value and -- behave as everywhere.
 * *help is set for --help (usage printed, nothing else to do). */
static int sample_parse(int argc, char **argv, sample_opts *o, int *help)
{
    static const struct option longs[] = {
        {"prompt", required_argument, NULL, SAMPLE_PROMPT},
        {"tokens", required_argument, NULL, SAMPLE_TOKENS},
        {"temperature", required_argument, NULL, SAMPLE_TEMP},
        {"seed", required_argument, NULL, SAMPLE_SEED},
        {"ignore-eos", no_argument, NULL, SAMPLE_IGNORE_EOS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt, rc = ST_OK;
    opterr = 0;
    optind = 0;   /* glibc: a full restart, whatever parsed argv before */
    while (rc == ST_OK && (opt = getopt_long(argc, argv, ":h", longs, NULL)) != -1) {
        if (opt == 'h') {
            fputs(sample_usage, stdout);
            *help = 1;
            return ST_OK;
        }
        if (opt == ':')
            return util_fail(ST_USAGE, "sample: %s needs a value (see spotrain sample --help)", argv[optind - 1]);
        if (opt == '?')
            return util_fail(ST_USAGE, "sample: unknown option '%s' (see spotrain sample --help)", argv[optind - 1]);
        rc = sample_option(opt, optarg, o);
    }
    if (rc == ST_OK && optind < argc)
        o->path = argv[optind++];
    if (rc == ST_OK && optind < argc)
        return util_fail(ST_USAGE, "sample: unexpected argument '%s' (see spotrain sample --help)", argv[optind]);
    if (rc == ST_OK && !o->path)
        return util_fail(ST_USAGE, "sample: which run? spotrain sample CONFIG|RUN_DIR|CKPT_DIR (see --help)");
    return rc;
}

int train_sample_cli(int argc, char **argv)
{
    sample_opts o = {.ntok = 32, .seed = 1};
    char ckpt[4096];
    int help = 0;
    int rc = sample_parse(argc, argv, &o, &help);
    if (rc != ST_OK || help)
        return rc;
    const char *path = o.path;
    rc = sample_resolve(path, ckpt, sizeof ckpt);
    if (rc != ST_OK)
        return rc;
    ckpt_reader *r = NULL;
    backend *b = NULL;
    model_layout L = {0};
    model_shape s;
    cfg c;
    tok *tk = NULL;
    if ((rc = ckpt_open(&r, ckpt)) != ST_OK)
        return rc;
    rc = cfg_load_text(&c, ckpt, ckpt_get_info(r)->config_text, NULL, 0);
    if (rc == ST_OK && c.tokenizer[0])
        rc = tok_load(&tk, c.tokenizer);
    if (rc == ST_OK && (rc = model_shape_from_cfg(&s, &c)) == ST_OK)
        rc = model_layout_init(&L, &s);
    /* A named train.cpu_gemm; auto has no timing here: OpenBLAS. */
    backend_opts bo = {"cpu", NULL, (int)c.threads, 0, 1, (int)c.flush_denormals, 0, 1,
                       gemm_parse(c.cpu_gemm) > 0 ? gemm_parse(c.cpu_gemm) : GEMM_OPENBLAS};
    if (rc == ST_OK)
        rc = backend_create(&b, &L, &bo);
    if (rc == ST_OK)
        rc = backend_load_ckpt(b, r, CKPT_PARAMS, 0, L.n_floats);
    if (rc == ST_OK) {
        if (!o.prompt)
            o.prompt = !strcmp(c.source, "synthetic") ? "12+34=" : !strcmp(c.source, "shards") ? "0" : "\n";
        rc = sample_generate(&c, tk, b, &o);
    }
    tok_free(tk);
    if (b)
        b->destroy(b);
    model_layout_free(&L);
    ckpt_close(r);
    return rc;
}
