/* Data sources (llm.c shards, raw bytes, synthetic arithmetic), their
 * validation, the train/val split and the stateless sample order. */
#include "data.h"
#include "config/config.h"
#include "model/rng.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define DATA_SHARD_HEADER 1024
#define DATA_MAX_FILES 4096

typedef struct {
    const uint8_t *base;     /* first token */
    int width;               /* bytes per token: 1, 2 or 4 */
    uint64_t first;          /* index of its first window in the split */
    uint64_t nwin;
} data_seg;

typedef struct {
    data_seg *segs;
    int nseg;
    uint64_t w0, nwin;       /* window range used from the segments */
    uint64_t total;          /* windows the segments hold */
} data_split;

typedef struct {
    void *addr;
    size_t len;
} data_map;

struct data {
    int64_t T;
    data_split split[2];
    data_map maps[DATA_MAX_FILES];
    int nmaps;
    char *text[2];           /* owned buffers: synthetic text, raw file */
};

static int data_add_seg(data_split *sp, const uint8_t *base, int width, uint64_t ntok, int64_t T)
{
    if (ntok < (uint64_t)T + 1)
        return 0;
    data_seg *ns = realloc(sp->segs, (size_t)(sp->nseg + 1) * sizeof *ns);
    if (!ns)
        return -1;
    sp->segs = ns;
    data_seg *s = &sp->segs[sp->nseg++];
    s->base = base;
    s->width = width;
    s->first = sp->total;
    s->nwin = (ntok - 1) / (uint64_t)T;
    sp->total += s->nwin;
    sp->nwin = sp->total;
    return 0;
}

static uint32_t data_token(const data_seg *s, uint64_t i)
{
    if (s->width == 1)
        return s->base[i];
    if (s->width == 2) {
        uint16_t v;
        memcpy(&v, s->base + 2 * i, 2);
        return v;
    }
    uint32_t v;
    memcpy(&v, s->base + 4 * i, 4);
    return v;
}

static void data_window(const data *d, int split, uint64_t w, int32_t *out)
{
    const data_split *sp = &d->split[split];
    w += sp->w0;
    int lo = 0, hi = sp->nseg - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (sp->segs[mid].first <= w)
            lo = mid;
        else
            hi = mid - 1;
    }
    const data_seg *s = &sp->segs[lo];
    uint64_t t0 = (w - s->first) * (uint64_t)d->T;
    for (int64_t i = 0; i <= d->T; i++)
        out[i] = (int32_t)data_token(s, t0 + (uint64_t)i);
}

uint64_t data_windows(const data *d, int split) { return d->split[split].nwin; }

void data_train_rows(const data *d, uint64_t seed, int64_t step, int64_t global_batch,
                     int64_t row0, int64_t n, int32_t *out)
{
    uint64_t N = d->split[DATA_TRAIN].nwin;
    for (int64_t r = 0; r < n; r++) {
        uint64_t p = (uint64_t)step * (uint64_t)global_batch + (uint64_t)(row0 + r);
        uint64_t epoch = p / N, i = p % N;
        data_window(d, DATA_TRAIN, rng_permute(i, N, seed, epoch), out + r * (d->T + 1));
    }
}

void data_val_rows(const data *d, int64_t row0, int64_t n, int32_t *out)
{
    uint64_t N = d->split[DATA_VAL].nwin;
    for (int64_t r = 0; r < n; r++)
        data_window(d, DATA_VAL, (uint64_t)(row0 + r) % N, out + r * (d->T + 1));
}

/* --- llm.c shards --------------------------------------------------------- */

static int data_map_file(data *d, const char *path, const uint8_t **addr, size_t *len)
{
    struct stat st;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return util_fail(errno == ENOENT ? ST_NOINPUT : ST_IOERR, "cannot open data file %s: %s",
                         path, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return util_fail(ST_DATA, "data file %s is not a regular file", path);
    }
    if (d->nmaps >= DATA_MAX_FILES) {
        close(fd);
        return util_fail(ST_DATA, "too many data files (at most %d)", DATA_MAX_FILES);
    }
    void *p = st.st_size ? mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    close(fd);
    if (p == MAP_FAILED)
        return util_fail(ST_IOERR, "cannot map data file %s: %s", path, strerror(errno));
    d->maps[d->nmaps].addr = p;
    d->maps[d->nmaps++].len = (size_t)st.st_size;
    *addr = p;
    *len = (size_t)st.st_size;
    return ST_OK;
}

/* Checks one shard's header, size and token range; returns the token width. */
static int data_check_shard(const char *path, const uint8_t *p, size_t len, int64_t vocab,
                            int *width, uint64_t *ntok)
{
    int32_t hdr[3];
    if (len < DATA_SHARD_HEADER)
        return util_fail(ST_DATA, "%s: %zu bytes is shorter than the 1024-byte llm.c header; "
                         "is it a token shard?", path, len);
    memcpy(hdr, p, sizeof hdr);
    if (hdr[0] == 20240520 && hdr[1] == 1)
        *width = 2;
    else if (hdr[0] == 20240801 && hdr[1] == 7)
        *width = 4;
    else
        return util_fail(ST_DATA, "%s: bad header (magic %d, version %d); expected llm.c shards "
                         "20240520/1 (uint16) or 20240801/7 (uint32)", path, hdr[0], hdr[1]);
    if (hdr[2] < 0)
        return util_fail(ST_DATA, "%s: negative token count %d in header", path, hdr[2]);
    *ntok = (uint64_t)(uint32_t)hdr[2];
    uint64_t want = DATA_SHARD_HEADER + *ntok * (uint64_t)*width;
    if ((uint64_t)len != want)
        return util_fail(ST_DATA, "%s: size %zu bytes, but the header's %llu tokens need %llu; "
                         "the file is truncated or not a shard", path, len,
                         (unsigned long long)*ntok, (unsigned long long)want);
    const uint8_t *tok = p + DATA_SHARD_HEADER;
    for (uint64_t i = 0; i < *ntok; i++) {
        uint32_t v;
        if (*width == 2) {
            uint16_t h;
            memcpy(&h, tok + 2 * i, 2);
            v = h;
        } else {
            memcpy(&v, tok + 4 * i, 4);
        }
        if ((int64_t)v >= vocab)
            return util_fail(ST_DATA, "%s: token %llu is id %u, not below model.vocab_size %lld",
                             path, (unsigned long long)i, v, (long long)vocab);
    }
    return ST_OK;
}

static int data_open_shards(data *d, int split, const char *pattern, int64_t vocab)
{
    glob_t g;
    int rc = ST_OK;
    int gr = glob(pattern, 0, NULL, &g);
    if (gr == GLOB_NOMATCH)
        return util_fail(ST_NOINPUT, "no data shards match '%s'", pattern);
    if (gr != 0)
        return util_fail(ST_IOERR, "cannot expand data glob '%s'", pattern);
    for (size_t i = 0; i < g.gl_pathc && rc == ST_OK; i++) {
        const uint8_t *p = NULL;
        size_t len = 0;
        int width = 0;
        uint64_t ntok = 0;
        rc = data_map_file(d, g.gl_pathv[i], &p, &len);
        if (rc == ST_OK)
            rc = data_check_shard(g.gl_pathv[i], p, len, vocab, &width, &ntok);
        if (rc == ST_OK && data_add_seg(&d->split[split], p + DATA_SHARD_HEADER, width, ntok, d->T))
            rc = util_fail(ST_SOFTWARE, "out of memory");
    }
    globfree(&g);
    return rc;
}

/* --- synthetic arithmetic -------------------------------------------------- */

/* One operand pair in 20 is validation-only, so the held-out loss measures
 * generalisation, not recall. The rule is simple enough for a shell script
 * (the demo) to pick held-out problems, and carries no hint about the sum. */
static int data_synthetic_is_val(uint64_t a, uint64_t b) { return (a * 7 + b * 13) % 20 == 3; }

static char *data_synthetic(int64_t digits, int64_t count, int val, uint64_t seed)
{
    uint64_t range = 1;
    for (int64_t i = 0; i < digits; i++)
        range *= 10;
    size_t cap = (size_t)count * (size_t)(3 * digits + 8) + 1, len = 0;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    /* Bounded: a tiny operand space may hold few validation problems. */
    uint64_t tries = (uint64_t)count * 100 + 100000;
    for (uint64_t i = 0, made = 0; made < (uint64_t)count && i < tries; i++) {
        uint64_t a = rng_u64(seed, 1, i) % range, b = rng_u64(seed, 2, i) % range;
        if (data_synthetic_is_val(a, b) != val)
            continue;
        len += (size_t)snprintf(s + len, cap - len, "%llu+%llu=%llu\n", (unsigned long long)a,
                                (unsigned long long)b, (unsigned long long)(a + b));
        made++;
    }
    return s;
}

static int data_open_synthetic(data *d, const cfg *c)
{
    int64_t nval = c->synthetic_samples / 10 > 64 ? c->synthetic_samples / 10 : 64;
    d->text[0] = data_synthetic(c->synthetic_digits, c->synthetic_samples, 0, 0x5eedULL);
    d->text[1] = data_synthetic(c->synthetic_digits, nval, 1, 0x5eedULL);
    if (!d->text[0] || !d->text[1])
        return util_fail(ST_SOFTWARE, "out of memory generating the synthetic corpus");
    for (int s = 0; s < 2; s++)
        if (data_add_seg(&d->split[s], (const uint8_t *)d->text[s], 1, strlen(d->text[s]), d->T))
            return util_fail(ST_SOFTWARE, "out of memory");
    return ST_OK;
}

const char *data_synthetic_text(const data *d, int split) { return d->text[split]; }

/* --- raw bytes ------------------------------------------------------------- */

static int data_open_text(data *d, int split, const char *path)
{
    const uint8_t *p = NULL;
    size_t len = 0;
    int rc = data_map_file(d, path, &p, &len);
    if (rc != ST_OK)
        return rc;
    if (data_add_seg(&d->split[split], p, 1, len, d->T))
        return util_fail(ST_SOFTWARE, "out of memory");
    return ST_OK;
}

/* Without a val_path the last val_fraction of the training windows is held
 * out; both splits then share the same segments. */
static int data_hold_out(data *d, const cfg *c)
{
    data_split *tr = &d->split[DATA_TRAIN], *va = &d->split[DATA_VAL];
    uint64_t nval = (uint64_t)((double)tr->total * c->val_fraction);
    if (c->val_fraction > 0 && nval == 0)
        nval = 1;
    if (nval >= tr->total)
        return util_fail(ST_DATA, "%s: only %llu windows of %lld+1 tokens; not enough to hold out "
                         "data.val_fraction = %g for validation", c->train_path,
                         (unsigned long long)tr->total, (long long)c->seq_len, c->val_fraction);
    va->segs = malloc((size_t)tr->nseg * sizeof *va->segs);
    if (!va->segs)
        return util_fail(ST_SOFTWARE, "out of memory");
    memcpy(va->segs, tr->segs, (size_t)tr->nseg * sizeof *va->segs);
    va->nseg = tr->nseg;
    va->total = tr->total;
    va->w0 = tr->total - nval;
    va->nwin = nval;
    tr->nwin = tr->total - nval;
    return ST_OK;
}

int data_open(data **out, const cfg *c)
{
    int rc = ST_OK;
    data *d = calloc(1, sizeof *d);
    if (!d)
        return util_fail(ST_SOFTWARE, "out of memory");
    d->T = c->seq_len;
    if (!strcmp(c->source, "synthetic")) {
        rc = data_open_synthetic(d, c);
    } else {
        int shards = !strcmp(c->source, "shards");
        rc = shards ? data_open_shards(d, DATA_TRAIN, c->train_path, c->vocab_size)
                    : data_open_text(d, DATA_TRAIN, c->train_path);
        if (rc == ST_OK && c->val_path[0])
            rc = shards ? data_open_shards(d, DATA_VAL, c->val_path, c->vocab_size)
                        : data_open_text(d, DATA_VAL, c->val_path);
        else if (rc == ST_OK)
            rc = data_hold_out(d, c);
    }
    for (int s = 0; s < 2 && rc == ST_OK; s++)
        if (d->split[s].nwin == 0)
            rc = util_fail(ST_DATA, "%s data (%s) holds no window of seq_len+1 = %lld tokens",
                           s ? "validation" : "training", c->train_path[0] ? c->train_path : c->source,
                           (long long)c->seq_len + 1);
    if (rc != ST_OK) {
        data_close(d);
        return rc;
    }
    *out = d;
    return ST_OK;
}

void data_close(data *d)
{
    if (!d)
        return;
    for (int i = 0; i < d->nmaps; i++)
        if (d->maps[i].addr)
            munmap(d->maps[i].addr, d->maps[i].len);
    for (int s = 0; s < 2; s++) {
        free(d->split[s].segs);
        free(d->text[s]);
    }
    free(d);
}
