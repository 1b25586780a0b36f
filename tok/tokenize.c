/* `spotrain data tokenize`: text files, JSON lines or stdin -> llm.c token
 * shards (train_NNNNNN.bin, val_NNNNNN.bin), documents encoded in parallel
 * batches and written in input order, each preceded by the end-of-text id. */
#include "train/train.h"
#include "tokenizer.h"
#include "util/util.h"

#include <errno.h>
#include <glob.h>
#include <json-c/json.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TKZ_BATCH_BYTES (32u << 20)
#define TKZ_BATCH_DOCS 65536

static const char tkz_usage[] =
    "usage: spotrain data tokenize --tokenizer tokenizer.json [--eos ID] [--val-fraction F]\n"
    "                              [--format auto|text|jsonl] [--shard-tokens N] [--threads N]\n"
    "                              [--force] -o DIR FILE...\n"
    "  Encodes documents with a Hugging Face byte-level BPE tokenizer.json into llm.c shards:\n"
    "  DIR/train_000000.bin, ... and DIR/val_000000.bin, ... (header of 256 int32; uint16\n"
    "  tokens, magic 20240520 version 1, when the vocabulary fits, else uint32, 20240801/7).\n"
    "  Every document is preceded by the end-of-text token, as llm.c's scripts do.\n"
    "  FILE        a text file (one document), a .jsonl/.ndjson file (one document per line,\n"
    "              its \"text\" field), or - for standard input (one text document)\n"
    "  --eos ID    end-of-text id (default: the tokenizer's eos / end-of-text special token)\n"
    "  --val-fraction F  share of whole documents for validation (default 0; e.g. 0.01)\n"
    "  --format    how to read FILEs (default auto: by extension)\n"
    "  --shard-tokens N  tokens per shard (default 100000000)\n"
    "  --force     overwrite shards already in DIR\n"
    "  Train on them with [data] source = shards, train_path = DIR/train_*.bin,\n"
    "  val_path = DIR/val_*.bin, model.vocab_size >= the tokenizer's vocabulary.\n";

typedef struct {
    FILE *f;
    char path[4200], tmp[4300];
    int index;
    uint64_t count, total;
} tkz_shard;

typedef struct {
    const tok *t;
    tok_enc **enc;
    int nthreads, width;
    uint32_t eos;
    double val_fraction;
    uint64_t shard_tokens;
    const char *dir;
    tkz_shard out[2];
    /* the batch */
    char **bufs;                  /* owned buffers the documents point into */
    int nbufs, capbufs;
    const uint8_t **doc;
    size_t *doclen;
    int ndocs;
    size_t batch_bytes;
    uint32_t **ids;
    size_t *nids, *capids;
    /* progress */
    uint64_t docs_done, bytes_done, g;
    double t0, last;
    int tty;
} tkz;

static int tkz_close_shard(tkz *z, int split)
{
    tkz_shard *s = &z->out[split];
    int rc = ST_OK;
    if (!s->f)
        return ST_OK;
    int32_t hdr[256] = {0};
    hdr[0] = z->width == 2 ? 20240520 : 20240801;
    hdr[1] = z->width == 2 ? 1 : 7;
    hdr[2] = (int32_t)s->count;
    if (fseek(s->f, 0, SEEK_SET) != 0 || fwrite(hdr, sizeof hdr, 1, s->f) != 1 || fflush(s->f) != 0 ||
        fsync(fileno(s->f)) != 0)
        rc = util_fail(ST_IOERR, "cannot write %s: %s", s->tmp, strerror(errno));
    if (fclose(s->f) != 0 && rc == ST_OK)
        rc = util_fail(ST_IOERR, "cannot close %s: %s", s->tmp, strerror(errno));
    s->f = NULL;
    if (rc == ST_OK && rename(s->tmp, s->path) != 0)
        rc = util_fail(ST_IOERR, "cannot rename %s: %s", s->tmp, strerror(errno));
    s->index++;
    s->count = 0;
    return rc;
}

static int tkz_write(tkz *z, int split, const uint32_t *ids, size_t n)
{
    tkz_shard *s = &z->out[split];
    uint16_t h[4096];
    int rc;
    while (n) {
        if (!s->f) {
            snprintf(s->path, sizeof s->path, "%s/%s_%06d.bin", z->dir, split ? "val" : "train", s->index);
            snprintf(s->tmp, sizeof s->tmp, "%s/%s_%06d.bin.tmp", z->dir, split ? "val" : "train", s->index);
            s->f = fopen(s->tmp, "wb");
            int32_t zero[256] = {0};
            if (!s->f || fwrite(zero, sizeof zero, 1, s->f) != 1)
                return util_fail(ST_IOERR, "cannot create %s: %s", s->tmp, strerror(errno));
        }
        size_t k = n;
        if (k > z->shard_tokens - s->count)
            k = (size_t)(z->shard_tokens - s->count);
        if (k > 4096)
            k = 4096;
        int bad;
        if (z->width == 2) {
            for (size_t i = 0; i < k; i++)
                h[i] = (uint16_t)ids[i];
            bad = fwrite(h, 2, k, s->f) != k;
        } else {
            bad = fwrite(ids, 4, k, s->f) != k;
        }
        if (bad)
            return util_fail(ST_IOERR, "cannot write %s: %s", s->tmp, strerror(errno));
        s->count += k;
        s->total += k;
        ids += k;
        n -= k;
        if (s->count == z->shard_tokens && (rc = tkz_close_shard(z, split)) != ST_OK)
            return rc;
    }
    return ST_OK;
}

static int tkz_is_val(const tkz *z, uint64_t g)
{
    return floor((double)(g + 1) * z->val_fraction) > floor((double)g * z->val_fraction);
}

static void tkz_progress(tkz *z, int final)
{
    double now = util_now();
    if (!z->tty || util_quiet || (!final && now - z->last < 0.5))
        return;
    z->last = now;
    double mb = (double)z->bytes_done / 1e6;
    fprintf(stderr, "\rspotrain: tokenized %.1f MB, %llu documents, %llu tokens (%.1f MB/s)%s", mb,
            (unsigned long long)z->docs_done, (unsigned long long)(z->out[0].total + z->out[1].total),
            mb / (now - z->t0 > 1e-9 ? now - z->t0 : 1e-9), final ? "\n" : "");
}

/* Encodes the batch in parallel, writes it in order, frees its buffers. */
static int tkz_flush(tkz *z)
{
    int rc = ST_OK, bad = 0;
    if (z->ndocs) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(z->nthreads) reduction(| : bad)
        for (int i = 0; i < z->ndocs; i++) {
            z->nids[i] = 0;
            bad |= tok_encode(z->enc[omp_get_thread_num()], z->doc[i], z->doclen[i], &z->ids[i], &z->nids[i],
                              &z->capids[i]) != ST_OK;
        }
        if (bad)
            rc = ST_SOFTWARE;
    }
    for (int i = 0; i < z->ndocs && rc == ST_OK; i++, z->g++) {
        int split = tkz_is_val(z, z->g);
        rc = tkz_write(z, split, &z->eos, 1);
        if (rc == ST_OK)
            rc = tkz_write(z, split, z->ids[i], z->nids[i]);
        z->docs_done++;
        z->bytes_done += z->doclen[i];
    }
    for (int i = 0; i < z->nbufs; i++)
        free(z->bufs[i]);
    z->nbufs = 0;
    z->ndocs = 0;
    z->batch_bytes = 0;
    tkz_progress(z, 0);
    return rc;
}

static int tkz_own(tkz *z, char *buf)
{
    if (z->nbufs == z->capbufs) {
        int cap = z->capbufs ? z->capbufs * 2 : 64;
        char **nb = realloc(z->bufs, (size_t)cap * sizeof *nb);
        if (!nb) {
            free(buf);
            return util_fail(ST_SOFTWARE, "out of memory");
        }
        z->bufs = nb;
        z->capbufs = cap;
    }
    z->bufs[z->nbufs++] = buf;
    return ST_OK;
}

static int tkz_add_doc(tkz *z, const char *p, size_t n)
{
    z->doc[z->ndocs] = (const uint8_t *)p;
    z->doclen[z->ndocs++] = n;
    z->batch_bytes += n;
    if (z->ndocs == TKZ_BATCH_DOCS || z->batch_bytes >= TKZ_BATCH_BYTES)
        return tkz_flush(z);
    return ST_OK;
}

static int tkz_read_stdin(char **out, size_t *len)
{
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, stdin);
        n += got;
        if (n < cap) {
            if (ferror(stdin)) {
                free(buf);
                return util_fail(ST_IOERR, "cannot read standard input: %s", strerror(errno));
            }
            break;
        }
        char *nb = realloc(buf, cap * 2);
        if (!nb)
            free(buf);
        buf = nb;
        cap *= 2;
    }
    if (!buf)
        return util_fail(ST_SOFTWARE, "out of memory reading standard input");
    *out = buf;
    *len = n;
    return ST_OK;
}

static int tkz_jsonl(tkz *z, const char *path, char *buf, size_t len)
{
    int rc = ST_OK;
    size_t line = 0;
    json_tokener *jt = json_tokener_new();
    if (!jt)
        return util_fail(ST_SOFTWARE, "out of memory");
    for (size_t i = 0; i < len && rc == ST_OK;) {
        char *nl = memchr(buf + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - buf) : len;
        line++;
        size_t s = i;
        while (s < end && strchr(" \t\r", buf[s]))
            s++;
        if (s < end) {
            json_tokener_reset(jt);
            json_object *o = end - s < INT32_MAX ? json_tokener_parse_ex(jt, buf + s, (int)(end - s)) : NULL, *v;
            if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, "text", &v) ||
                !json_object_is_type(v, json_type_string)) {
                rc = util_fail(ST_DATA, "%s:%zu: not a JSON object with a \"text\" string; expected JSON "
                               "lines like {\"text\": \"...\"}", path, line);
            } else {
                size_t n = (size_t)json_object_get_string_len(v);
                char *copy = malloc(n + 1);
                if (!copy)
                    rc = util_fail(ST_SOFTWARE, "out of memory");
                else if ((rc = tkz_own(z, copy)) == ST_OK) {
                    memcpy(copy, json_object_get_string(v), n);
                    rc = tkz_add_doc(z, copy, n);
                }
            }
            json_object_put(o);
        }
        i = end + 1;
    }
    json_tokener_free(jt);
    free(buf);
    return rc;
}

static int tkz_input(tkz *z, const char *path, const char *format)
{
    char *buf = NULL;
    size_t len = 0;
    int stdin_ = !strcmp(path, "-");
    int rc = stdin_ ? tkz_read_stdin(&buf, &len) : util_read_file(path, &buf, &len);
    if (rc != ST_OK)
        return rc;
    const char *dot = strrchr(path, '.');
    int jsonl = !strcmp(format, "jsonl") ||
                (!strcmp(format, "auto") && !stdin_ && dot && (!strcmp(dot, ".jsonl") || !strcmp(dot, ".ndjson")));
    if (jsonl)
        return tkz_jsonl(z, path, buf, len);
    if ((rc = tkz_own(z, buf)) != ST_OK)
        return rc;
    return tkz_add_doc(z, buf, len);
}

/* Existing shards: refused without --force, removed with it (so no stale
 * higher-numbered shard survives a smaller rerun). */
static int tkz_prepare_dir(const char *dir, int force)
{
    static const char *pats[] = {"train_*.bin", "val_*.bin"};
    int rc = util_mkdirs(dir);
    for (int p = 0; p < 2 && rc == ST_OK; p++) {
        char pat[4200];
        glob_t g;
        if (util_fmt(pat, sizeof pat, "%s/%s", dir, pats[p]) < 0)
            return util_fail(ST_USAGE, "output directory name too long: %s", dir);
        if (glob(pat, 0, NULL, &g) != 0)
            continue;
        if (!force)
            rc = util_fail(ST_USAGE, "%s already holds shards (%s); pass --force to overwrite them", dir,
                           g.gl_pathv[0]);
        for (size_t i = 0; i < g.gl_pathc && rc == ST_OK; i++)
            if (unlink(g.gl_pathv[i]) != 0)
                rc = util_fail(ST_IOERR, "cannot remove %s: %s", g.gl_pathv[i], strerror(errno));
        globfree(&g);
    }
    return rc;
}

int data_tokenize_cli(int argc, char **argv)
{
    const char *tokpath = NULL, *dir = NULL, *format = "auto";
    int64_t eos = -1, shard_tokens = 100000000, threads = 0;
    double valf = 0;
    int force = 0, nin = 0, rc = ST_OK;
    const char **inputs = calloc((size_t)argc + 1, sizeof *inputs);
    tkz z;
    tok *t = NULL;
    memset(&z, 0, sizeof z);
    if (!inputs)
        return util_fail(ST_SOFTWARE, "out of memory");
    for (int i = 1; i < argc && rc == ST_OK; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(tkz_usage, stdout);
            free(inputs);
            return ST_OK;
        } else if (!strcmp(a, "--tokenizer") && v) {
            tokpath = v, i++;
        } else if (!strcmp(a, "-o") && v) {
            dir = v, i++;
        } else if (!strcmp(a, "--eos") && v) {
            if (util_parse_i64(v, &eos) || eos < 0)
                rc = util_fail(ST_USAGE, "--eos: '%s' is not a token id", v);
            i++;
        } else if (!strcmp(a, "--val-fraction") && v) {
            if (util_parse_f64(v, &valf) || valf < 0 || valf >= 1)
                rc = util_fail(ST_USAGE, "--val-fraction: '%s' is not a number in [0, 1)", v);
            i++;
        } else if (!strcmp(a, "--shard-tokens") && v) {
            if (util_parse_i64(v, &shard_tokens) || shard_tokens < 1 || shard_tokens > INT32_MAX)
                rc = util_fail(ST_USAGE, "--shard-tokens: '%s' is not a count from 1 to 2^31-1", v);
            i++;
        } else if (!strcmp(a, "--threads") && v) {
            if (util_parse_i64(v, &threads) || threads < 0 || threads > 4096)
                rc = util_fail(ST_USAGE, "--threads: '%s' is not a thread count", v);
            i++;
        } else if (!strcmp(a, "--format") && v) {
            format = v, i++;
            if (strcmp(format, "auto") && strcmp(format, "text") && strcmp(format, "jsonl"))
                rc = util_fail(ST_USAGE, "--format: '%s' is not auto, text or jsonl", format);
        } else if (!strcmp(a, "--force")) {
            force = 1;
        } else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
            util_quiet = 1;
        } else if (a[0] == '-' && a[1]) {
            rc = util_fail(ST_USAGE, "data tokenize: unexpected argument '%s' (see spotrain data tokenize --help)", a);
        } else {
            inputs[nin++] = a;
        }
    }
    if (rc == ST_OK && (!tokpath || !dir || !nin))
        rc = util_fail(ST_USAGE, "data tokenize: needs --tokenizer FILE, -o DIR and at least one input "
                       "(see spotrain data tokenize --help)");
    if (rc == ST_OK)
        rc = tok_load(&t, tokpath);
    if (rc != ST_OK)
        goto out;
    if (eos < 0 && (eos = tok_eos(t)) < 0) {
        rc = util_fail(ST_USAGE, "%s: no end-of-text special token found; pass --eos ID", tokpath);
        goto out;
    }
    if ((uint64_t)eos >= tok_vocab_size(t)) {
        rc = util_fail(ST_USAGE, "--eos %lld is outside the vocabulary of %u", (long long)eos, tok_vocab_size(t));
        goto out;
    }
    if ((rc = tkz_prepare_dir(dir, force)) != ST_OK)
        goto out;
    z.t = t;
    z.dir = dir;
    z.eos = (uint32_t)eos;
    z.val_fraction = valf;
    z.shard_tokens = (uint64_t)shard_tokens;
    z.width = tok_vocab_size(t) <= 65536 ? 2 : 4;
    z.nthreads = threads ? (int)threads : omp_get_max_threads();
    z.t0 = z.last = util_now();
    z.tty = isatty(2);
    z.enc = calloc((size_t)z.nthreads, sizeof *z.enc);
    z.doc = calloc(TKZ_BATCH_DOCS, sizeof *z.doc);
    z.doclen = calloc(TKZ_BATCH_DOCS, sizeof *z.doclen);
    z.ids = calloc(TKZ_BATCH_DOCS, sizeof *z.ids);
    z.nids = calloc(TKZ_BATCH_DOCS, sizeof *z.nids);
    z.capids = calloc(TKZ_BATCH_DOCS, sizeof *z.capids);
    if (!z.enc || !z.doc || !z.doclen || !z.ids || !z.nids || !z.capids) {
        rc = util_fail(ST_SOFTWARE, "out of memory");
        goto out;
    }
    for (int i = 0; i < z.nthreads && rc == ST_OK; i++)
        rc = tok_enc_new(&z.enc[i], t);
    for (int i = 0; i < nin && rc == ST_OK; i++)
        rc = tkz_input(&z, inputs[i], format);
    if (rc == ST_OK)
        rc = tkz_flush(&z);
    for (int s = 0; s < 2 && rc == ST_OK; s++)
        rc = tkz_close_shard(&z, s);
    if (rc == ST_OK && z.out[0].total == 0)
        rc = util_fail(ST_DATA, "no training documents (all %llu went to validation); lower --val-fraction",
                       (unsigned long long)z.docs_done);
    if (rc == ST_OK) {
        tkz_progress(&z, 1);
        util_log("wrote %d train shard%s (%llu tokens) and %d val shard%s (%llu tokens) to %s; vocabulary %u, "
                 "%s tokens", z.out[0].index, z.out[0].index == 1 ? "" : "s", (unsigned long long)z.out[0].total,
                 z.out[1].index, z.out[1].index == 1 ? "" : "s", (unsigned long long)z.out[1].total, dir,
                 tok_vocab_size(t), z.width == 2 ? "uint16" : "uint32");
    }
out:
    for (int s = 0; s < 2; s++)
        if (z.out[s].f) {
            fclose(z.out[s].f);
            unlink(z.out[s].tmp);
        }
    for (int i = 0; i < z.nbufs; i++)
        free(z.bufs[i]);
    free(z.bufs);
    for (int i = 0; z.enc && i < z.nthreads; i++)
        tok_enc_free(z.enc[i]);
    for (int i = 0; z.ids && i < TKZ_BATCH_DOCS; i++)
        free(z.ids[i]);
    free(z.enc);
    free(z.doc);
    free(z.doclen);
    free(z.ids);
    free(z.nids);
    free(z.capids);
    free(inputs);
    tok_free(t);
    return rc;
}

int data_cli(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "tokenize"))
        return argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
                   ? (fputs(tkz_usage, stdout), ST_OK)
                   : util_fail(ST_USAGE, "data: which one? spotrain data tokenize (see spotrain data tokenize --help)");
    return data_tokenize_cli(argc - 1, argv + 1);
}
