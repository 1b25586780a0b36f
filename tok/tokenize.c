/* The `data tokenize` pipeline: text files, JSON lines (plain or gzip) or
 * stdin -> llm.c token shards (train_NNNNNN.bin, val_NNNNNN.bin), documents
 * encoded in parallel batches and written in input order, each preceded by
 * the end-of-text id. The command line lives in cli/data.c. */
#include "tokenize.h"
#include "tokenizer.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <json-c/json.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define TKZ_BATCH_BYTES (32u << 20)
#define TKZ_BATCH_DOCS 65536

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

/* Reads a file ("-": standard input) whole; zlib unpacks gzip (concatenated
 * members too) and passes any other bytes through. */
static int tkz_read(const char *path, char **out, size_t *len)
{
    int stdin_ = !strcmp(path, "-"), rc = ST_OK, zerr;
    const char *name = stdin_ ? "standard input" : path;
    int fd = stdin_ ? dup(0) : open(path, O_RDONLY);
    struct stat st = {0};
    size_t cap = 1 << 20, n = 0;
    if (fd < 0)
        return util_fail(errno == ENOENT ? ST_NOINPUT : ST_IOERR, "cannot open %s: %s", name, strerror(errno));
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        return util_fail(ST_NOINPUT, "%s is a directory; give the path of a file", name);
    }
    /* A plain file fits at its size; gzip grows by doubling. */
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size >= cap &&
        (uint64_t)st.st_size < ((uint64_t)1 << 40))
        cap = (size_t)st.st_size + 1;
    gzFile g = gzdopen(fd, "rb");
    char *buf = g ? malloc(cap) : NULL;
    if (!g)
        close(fd);
    if (!buf) {
        rc = util_fail(ST_SOFTWARE, "out of memory reading %s", name);
        goto out;
    }
    gzbuffer(g, 1 << 20);
    for (;;) {
        if (n == cap) {
            char *nb = cap < ((size_t)1 << 40) ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                rc = util_fail(ST_SOFTWARE, "out of memory reading %s (%zu bytes)", name, cap * 2);
                goto out;
            }
            buf = nb;
            cap *= 2;
        }
        size_t want = cap - n < (1u << 30) ? cap - n : (1u << 30);
        int got = gzread(g, buf + n, (unsigned)want);
        if (got < 0) {
            const char *msg = gzerror(g, &zerr);
            rc = zerr == Z_ERRNO ? util_fail(ST_IOERR, "cannot read %s: %s", name, strerror(errno))
                                 : util_fail(ST_DATA, "%s: corrupt or truncated gzip data (%s)", name, msg);
            goto out;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    /* zlib reports a stream cut short only here, after the last read. */
    gzerror(g, &zerr);
    if (zerr == Z_BUF_ERROR)
        rc = util_fail(ST_DATA, "%s: corrupt or truncated gzip data (it ends inside a gzip stream)", name);
out:
    if (g)
        gzclose(g);
    if (rc != ST_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = n;
    return ST_OK;
}

static int tkz_has_bom(const char *p, size_t n) { return n >= 3 && !memcmp(p, "\xef\xbb\xbf", 3); }

static int tkz_hex(char h)
{
    int l = h | 0x20;
    return h >= '0' && h <= '9' ? h - '0' : l >= 'a' && l <= 'f' ? l - 'a' + 10 : -1;
}

/* \uD800-\uDFFF escapes without their other half: json-c turns each into
 * U+FFFD, which the document then holds instead of what was meant. */
static size_t tkz_lone_surrogates(const char *p, size_t n)
{
    size_t count = 0;
    int pending_high = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\\' || i + 1 >= n) {
            count += (size_t)pending_high;
            pending_high = 0;
            continue;
        }
        unsigned v = 0;
        int hex = p[i + 1] == 'u' && i + 6 <= n;
        for (int k = 2; hex && k < 6; k++) {
            int d = tkz_hex(p[i + (size_t)k]);
            hex = d >= 0;
            v = v << 4 | (unsigned)(d & 15);
        }
        if (!hex || v < 0xD800 || v > 0xDFFF) {
            count += (size_t)pending_high;
            pending_high = 0;
            i++;    /* an escape: the next byte is not a backslash that starts one */
            continue;
        }
        int high = v >= 0xD800 && v <= 0xDBFF, low = v >= 0xDC00 && v <= 0xDFFF;
        if (low && pending_high)
            pending_high = 0;
        else {
            count += (size_t)pending_high + (size_t)low;
            pending_high = high;
        }
        i += 5;
    }
    return count + (size_t)pending_high;
}

/* The first line, after an optional BOM and blank lines, is a JSON object
 * with a "text" string. */
static int tkz_looks_jsonl(const char *buf, size_t len)
{
    size_t s = tkz_has_bom(buf, len) ? 3 : 0;
    while (s < len && strchr(" \t\r\n", buf[s]))
        s++;
    if (s >= len || buf[s] != '{')
        return 0;
    const char *nl = memchr(buf + s, '\n', len - s);
    size_t end = nl ? (size_t)(nl - buf) : len;
    if (end - s >= INT32_MAX)
        return 0;
    json_tokener *jt = json_tokener_new();
    json_object *o = jt ? json_tokener_parse_ex(jt, buf + s, (int)(end - s)) : NULL, *v;
    int yes = o && json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, "text", &v) &&
              json_object_is_type(v, json_type_string);
    json_object_put(o);
    if (jt)
        json_tokener_free(jt);
    return yes;
}

static int tkz_ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && !strncasecmp(s + n - k, suffix, k);
}

/* One JSON object a line, its "text" string a document; a BOM before the
 * first line is skipped. */
static int tkz_jsonl(tkz *z, const char *path, char *buf, size_t len)
{
    int rc = ST_OK;
    size_t line = 0, lone = 0, lone_line = 0;
    json_tokener *jt = json_tokener_new();
    if (!jt) {
        free(buf);
        return util_fail(ST_SOFTWARE, "out of memory");
    }
    for (size_t i = tkz_has_bom(buf, len) ? 3 : 0; i < len && rc == ST_OK;) {
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
                size_t n = (size_t)json_object_get_string_len(v), k = tkz_lone_surrogates(buf + s, end - s);
                if (k && !lone)
                    lone_line = line;
                lone += k;
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
    if (rc == ST_OK && lone)
        util_log("%s: %zu lone surrogate escape%s (\\ud800-\\udfff without its pair; the first on line %zu) "
                 "replaced by U+FFFD", path, lone, lone == 1 ? "" : "s", lone_line);
    return rc;
}

/* auto: JSON lines by name (.jsonl, .ndjson, any case, also .gz) or by the
 * first line's content; a .json name that is not JSON lines is refused
 * rather than read as one raw document. */
static int tkz_input(tkz *z, const char *path, tkz_format format)
{
    char *buf = NULL;
    size_t len = 0, n = strlen(path);
    int rc = tkz_read(path, &buf, &len);
    if (rc != ST_OK)
        return rc;
    const char *name = strcmp(path, "-") ? path : "standard input";
    if (tkz_ends_with(path, n, ".gz"))
        n -= 3;
    int jsonl = format == TKZ_JSONL;
    if (format == TKZ_AUTO) {
        int by_name = tkz_ends_with(path, n, ".jsonl") || tkz_ends_with(path, n, ".ndjson");
        jsonl = by_name || tkz_looks_jsonl(buf, len);
        if (jsonl && !by_name)
            util_log("%s: reading as JSON lines (its first line is a {\"text\": ...} object); --format text "
                     "reads it as one document", name);
        if (!jsonl && tkz_ends_with(path, n, ".json")) {
            free(buf);
            return util_fail(ST_DATA, "%s: a .json file whose first line is not a {\"text\": ...} object; "
                             "convert it to JSON lines, or pass --format text to read it as one document", name);
        }
    }
    if (jsonl)
        return tkz_jsonl(z, name, buf, len);
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

static void tkz_report_specials(const tkz *z, int as_text)
{
    uint64_t n = 0;
    for (int i = 0; i < z->nthreads; i++)
        n += tok_enc_specials(z->enc[i]);
    if (n && as_text)
        util_log("encoded %llu special-token literal%s found inside documents as plain text (--special-as-text)",
                 (unsigned long long)n, n == 1 ? "" : "s");
    else if (n)
        util_log("%llu special-token literal%s (such as the end-of-text token's text) found inside documents "
                 "became special ids, as the tokenizers library encodes them; --special-as-text encodes them "
                 "as plain text", (unsigned long long)n, n == 1 ? "" : "s");
}

int tkz_run(const tkz_opts *o)
{
    int rc = ST_OK;
    int64_t eos = o->eos;
    tkz z;
    tok *t = NULL;
    memset(&z, 0, sizeof z);
    if ((rc = tok_load(&t, o->tokenizer)) != ST_OK)
        goto out;
    if (eos < 0 && (eos = tok_eos(t)) < 0) {
        rc = util_fail(ST_USAGE, "%s: no end-of-text special token found; pass --eos ID", o->tokenizer);
        goto out;
    }
    if ((uint64_t)eos >= tok_vocab_size(t)) {
        rc = util_fail(ST_USAGE, "--eos %lld is outside the vocabulary of %u", (long long)eos, tok_vocab_size(t));
        goto out;
    }
    if ((rc = tkz_prepare_dir(o->dir, o->force)) != ST_OK)
        goto out;
    z.t = t;
    z.dir = o->dir;
    z.eos = (uint32_t)eos;
    z.val_fraction = o->val_fraction;
    z.shard_tokens = (uint64_t)o->shard_tokens;
    z.width = tok_vocab_size(t) <= 65536 ? 2 : 4;
    z.nthreads = o->threads ? o->threads : omp_get_max_threads();
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
        if ((rc = tok_enc_new(&z.enc[i], t)) == ST_OK)
            tok_enc_special_as_text(z.enc[i], o->special_as_text);
    for (int i = 0; i < o->ninputs && rc == ST_OK; i++)
        rc = tkz_input(&z, o->inputs[i], o->format);
    if (rc == ST_OK)
        rc = tkz_flush(&z);
    for (int s = 0; s < 2 && rc == ST_OK; s++)
        rc = tkz_close_shard(&z, s);
    if (rc == ST_OK && z.out[0].total == 0)
        rc = util_fail(ST_DATA, "no training documents (all %llu went to validation); lower --val-fraction",
                       (unsigned long long)z.docs_done);
    if (rc == ST_OK) {
        tkz_progress(&z, 1);
        tkz_report_specials(&z, o->special_as_text);
        util_log("wrote %d train shard%s (%llu tokens) and %d val shard%s (%llu tokens) to %s; vocabulary %u, "
                 "%s tokens", z.out[0].index, z.out[0].index == 1 ? "" : "s", (unsigned long long)z.out[0].total,
                 z.out[1].index, z.out[1].index == 1 ? "" : "s", (unsigned long long)z.out[1].total, o->dir,
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
    tok_free(t);
    return rc;
}
