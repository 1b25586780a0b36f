/* Byte-level BPE from a Hugging Face tokenizer.json: loading (and refusing
 * what we cannot reproduce), added-token splitting, the pre-tokenizer
 * pipeline (Split steps, then ByteLevel), the merge loop with the library's
 * priority order, a per-thread word cache, and decoding to bytes. */
#include "tokenizer.h"
#include "regex.h"
#include "util/util.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define TOK_MAX_STEPS 16
#define TOK_CACHE_BITS 16
#define TOK_CACHE_MAX_WORD 128

/* The ByteLevel pre-tokenizer's default pattern (GPT-2). */
static const char tok_gpt2_re[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

enum { SPLIT_ISOLATED, SPLIT_REMOVED, SPLIT_PREV, SPLIT_NEXT, SPLIT_CONTIGUOUS };

typedef struct {
    rx *re;
    int behavior, invert;
    int bytelevel, prefix_space;   /* a ByteLevel step: re may be NULL (use_regex false) */
} tok_step;

typedef struct {
    uint32_t off, len, id;         /* string in t->arena */
} tok_str;

typedef struct {
    uint64_t key;                  /* (a << 32 | b) + 1; 0 = empty slot */
    uint32_t rank, id;
} tok_merge;

typedef struct {
    uint32_t off, len, id;
    int normalized, special;
} tok_added;

struct tok {
    char name[512];
    char *arena;
    size_t arena_len, arena_cap;
    tok_str *vocab;                /* hash table of vocabulary strings */
    size_t vocab_mask;
    tok_merge *merges;
    size_t merge_mask;
    uint32_t nvocab;               /* one past the largest id */
    uint32_t *dec_off, *dec_len;   /* decoded bytes of each id, in arena */
    uint8_t *dec_set;
    uint32_t byte_id[256];
    uint32_t byte_cp[256];         /* ByteLevel: byte -> code point */
    int ignore_merges;
    tok_added *added;
    int nadded;
    uint8_t added_first[2][256];   /* [normalized][first byte] any token starts so */
    tok_step steps[TOK_MAX_STEPS];
    int nsteps;
    int64_t eos;
};

typedef struct {
    uint32_t pos, rank, id;
} tok_heap_item;

typedef struct {
    size_t s, e;
    int match;
} tok_span;

typedef struct {
    uint64_t hash;                 /* 0 = empty */
    uint32_t off, len, nids;       /* word bytes then ids in the cache arena */
} tok_cache_slot;

struct tok_enc {
    const tok *t;
    rx_stack st;
    tok_span *spans[TOK_MAX_STEPS];
    size_t span_cap[TOK_MAX_STEPS];
    uint8_t *pbuf[TOK_MAX_STEPS];
    size_t pbuf_cap[TOK_MAX_STEPS];
    uint32_t *sym, *prev, *next, *live;
    size_t sym_cap;
    tok_heap_item *heap;
    size_t heap_cap;
    tok_cache_slot *cache;
    uint8_t *carena;
    size_t carena_len, carena_cap, cache_used;
    uint32_t **ids;
    size_t *len, *cap;
    int oom;
    int special_as_text;           /* special tokens' text goes through the BPE */
    uint64_t specials;             /* special-token literals found in the text */
};

/* --- tables ---------------------------------------------------------------- */

static uint64_t tok_hash(const void *p, size_t n) { return XXH3_64bits(p, n); }

static int tok_arena_add(tok *t, const void *p, size_t n, uint32_t *off)
{
    if (t->arena_len + n + 1 > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap : 1 << 16;
        while (cap < t->arena_len + n + 1)
            cap *= 2;
        char *na = realloc(t->arena, cap);
        if (!na)
            return -1;
        t->arena = na;
        t->arena_cap = cap;
    }
    if (t->arena_len + n > UINT32_MAX)
        return -1;
    *off = (uint32_t)t->arena_len;
    if (n)
        memcpy(t->arena + t->arena_len, p, n);
    t->arena_len += n;
    return 0;
}

static tok_str *tok_vocab_slot(const tok *t, const char *s, size_t n)
{
    size_t i = (size_t)tok_hash(s, n) & t->vocab_mask;
    for (;; i = (i + 1) & t->vocab_mask) {
        tok_str *v = &t->vocab[i];
        if (!v->len)
            return v;
        if (v->len == n && !memcmp(t->arena + v->off, s, n))
            return v;
    }
}

static int64_t tok_vocab_get(const tok *t, const char *s, size_t n)
{
    if (!t->vocab || !n)
        return -1;
    tok_str *v = tok_vocab_slot(t, s, n);
    return v->len ? (int64_t)v->id : -1;
}

static tok_merge *tok_merge_slot(const tok *t, uint64_t key)
{
    size_t i = (size_t)(key * 0x9E3779B97F4A7C15ULL >> 20) & t->merge_mask;
    for (;; i = (i + 1) & t->merge_mask)
        if (!t->merges[i].key || t->merges[i].key == key)
            return &t->merges[i];
}

static inline const tok_merge *tok_merge_get(const tok *t, uint32_t a, uint32_t b)
{
    if (!t->merges)
        return NULL;
    const tok_merge *m = tok_merge_slot(t, ((uint64_t)a << 32 | b) + 1);
    return m->key ? m : NULL;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 maps to itself, the rest to
 * 256, 257, ... in byte order. */
static void tok_bytelevel_map(uint32_t map[256])
{
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        map[b] = keep ? b : 256 + n++;
    }
}

static size_t tok_utf8(uint32_t cp, char *out)
{
    if (cp < 0x80)
        return out[0] = (char)cp, 1;
    if (cp < 0x800)
        return out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 63)), 2;
    out[0] = (char)(0xE0 | cp >> 12);
    out[1] = (char)(0x80 | ((cp >> 6) & 63));
    out[2] = (char)(0x80 | (cp & 63));
    return 3;
}

/* --- loading --------------------------------------------------------------- */

#define TOK_FAIL(code, ...) (rc = util_fail(code, __VA_ARGS__))

static int tok_bool(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && json_object_get_boolean(v);
}

static const char *tok_type(json_object *o)
{
    json_object *v;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, "type", &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static int tok_add_step(tok *t, tok_step **st)
{
    if (t->nsteps >= TOK_MAX_STEPS)
        return util_fail(ST_CONFIG, "%s: pre_tokenizer has more than %d steps; not supported", t->name,
                         TOK_MAX_STEPS);
    *st = &t->steps[t->nsteps++];
    memset(*st, 0, sizeof **st);
    return ST_OK;
}

static int tok_compile(tok *t, const char *pat, size_t n, rx **out, const char *what)
{
    char err[256];
    if (rx_compile(out, pat, n, err, sizeof err))
        return util_fail(ST_CONFIG, "%s: %s regex: %s; spotrain cannot match it exactly, so it refuses "
                         "this tokenizer", t->name, what, err);
    return ST_OK;
}

static int tok_parse_pretok(tok *t, json_object *p, int depth)
{
    const char *type = tok_type(p);
    tok_step *st = NULL;
    json_object *v;
    int rc = ST_OK;
    if (!type)
        return util_fail(ST_CONFIG, "%s: pre_tokenizer is missing or has no type; spotrain reads byte-level "
                         "BPE tokenizers (ByteLevel pre-tokenizer)", t->name);
    if (t->nsteps && t->steps[t->nsteps - 1].bytelevel)
        return util_fail(ST_CONFIG, "%s: pre_tokenizer step %s after ByteLevel is not supported", t->name, type);
    if (!strcmp(type, "Sequence")) {
        if (depth > 8 || !json_object_object_get_ex(p, "pretokenizers", &v) ||
            !json_object_is_type(v, json_type_array))
            return util_fail(ST_DATA, "%s: pre_tokenizer Sequence without a pretokenizers list", t->name);
        for (size_t i = 0; i < json_object_array_length(v) && rc == ST_OK; i++)
            rc = tok_parse_pretok(t, json_object_array_get_idx(v, i), depth + 1);
        return rc;
    }
    if (!strcmp(type, "ByteLevel")) {
        if ((rc = tok_add_step(t, &st)) != ST_OK)
            return rc;
        st->bytelevel = 1;
        st->prefix_space = tok_bool(p, "add_prefix_space");
        st->behavior = SPLIT_ISOLATED;
        int use_regex = !json_object_object_get_ex(p, "use_regex", &v) || json_object_get_boolean(v);
        return use_regex ? tok_compile(t, tok_gpt2_re, strlen(tok_gpt2_re), &st->re, "ByteLevel") : ST_OK;
    }
    if (strcmp(type, "Split"))
        return util_fail(ST_CONFIG, "%s: pre_tokenizer type %s is not supported (spotrain reads Split and "
                         "ByteLevel)", t->name, type);
    json_object *pat, *pv;
    if ((rc = tok_add_step(t, &st)) != ST_OK)
        return rc;
    if (!json_object_object_get_ex(p, "pattern", &pat) || !json_object_is_type(pat, json_type_object))
        return util_fail(ST_DATA, "%s: Split pre-tokenizer without a pattern", t->name);
    const char *beh = json_object_object_get_ex(p, "behavior", &v) ? json_object_get_string(v) : "";
    static const char *behs[] = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    st->behavior = -1;
    for (int i = 0; i < 5; i++)
        if (beh && !strcmp(beh, behs[i]))
            st->behavior = i;
    if (st->behavior < 0)
        return util_fail(ST_CONFIG, "%s: Split behavior '%s' is not supported", t->name, beh ? beh : "");
    st->invert = tok_bool(p, "invert");
    if (json_object_object_get_ex(pat, "Regex", &pv) && json_object_is_type(pv, json_type_string))
        return tok_compile(t, json_object_get_string(pv), (size_t)json_object_get_string_len(pv), &st->re,
                           "Split");
    if (json_object_object_get_ex(pat, "String", &pv) && json_object_is_type(pv, json_type_string)) {
        /* A literal: escape every byte that is special to the regex parser. */
        const char *s = json_object_get_string(pv);
        size_t n = (size_t)json_object_get_string_len(pv);
        char *esc = malloc(2 * n + 1);
        size_t k = 0;
        if (!esc)
            return util_fail(ST_SOFTWARE, "out of memory");
        for (size_t i = 0; i < n; i++) {
            if (strchr("\\^$.|?*+()[]{}", s[i]) && s[i])
                esc[k++] = '\\';
            esc[k++] = s[i];
        }
        if (n == 0)
            rc = util_fail(ST_CONFIG, "%s: Split with an empty String pattern is not supported", t->name);
        else
            rc = tok_compile(t, esc, k, &st->re, "Split");
        free(esc);
        return rc;
    }
    return util_fail(ST_DATA, "%s: Split pattern is neither {\"Regex\": ...} nor {\"String\": ...}", t->name);
}

static int tok_vocab_build(tok *t, json_object *vocab)
{
    size_t n = (size_t)json_object_object_length(vocab), cap = 16;
    while (cap < 2 * n + 16)
        cap *= 2;
    t->vocab = calloc(cap, sizeof *t->vocab);
    if (!t->vocab)
        return util_fail(ST_SOFTWARE, "out of memory");
    t->vocab_mask = cap - 1;
    json_object_object_foreach(vocab, key, val)
    {
        size_t kl = strlen(key);
        if (!json_object_is_type(val, json_type_int) || json_object_get_int64(val) < 0 ||
            json_object_get_int64(val) >= (1 << 30))
            return util_fail(ST_DATA, "%s: vocab entry '%.40s' has no id from 0 to 2^30", t->name, key);
        if (!kl)
            return util_fail(ST_DATA, "%s: vocab holds an empty token", t->name);
        tok_str *v = tok_vocab_slot(t, key, kl);
        uint32_t id = (uint32_t)json_object_get_int64(val);
        if (!v->len && tok_arena_add(t, key, kl, &v->off))
            return util_fail(ST_SOFTWARE, "out of memory");
        v->len = (uint32_t)kl;
        v->id = id;
        if (id + 1 > t->nvocab)
            t->nvocab = id + 1;
    }
    return ST_OK;
}

/* "a b" or ["a", "b"]; *a and *b point into the JSON object's strings. */
static int tok_merge_parts(json_object *m, const char **a, size_t *al, const char **b, size_t *bl)
{
    if (json_object_is_type(m, json_type_string)) {
        const char *s = json_object_get_string(m), *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return -1;
        *a = s, *al = (size_t)(sp - s), *b = sp + 1, *bl = strlen(sp + 1);
        return 0;
    }
    if (!json_object_is_type(m, json_type_array) || json_object_array_length(m) != 2)
        return -1;
    json_object *x = json_object_array_get_idx(m, 0), *y = json_object_array_get_idx(m, 1);
    if (!json_object_is_type(x, json_type_string) || !json_object_is_type(y, json_type_string))
        return -1;
    *a = json_object_get_string(x), *al = (size_t)json_object_get_string_len(x);
    *b = json_object_get_string(y), *bl = (size_t)json_object_get_string_len(y);
    return 0;
}

static int tok_merges_build(tok *t, json_object *merges)
{
    size_t n = json_object_array_length(merges), cap = 16;
    char buf[1024];
    while (cap < 2 * n + 16)
        cap *= 2;
    t->merges = calloc(cap, sizeof *t->merges);
    if (!t->merges)
        return util_fail(ST_SOFTWARE, "out of memory");
    t->merge_mask = cap - 1;
    for (size_t i = 0; i < n; i++) {
        const char *a, *b;
        size_t al, bl;
        if (tok_merge_parts(json_object_array_get_idx(merges, i), &a, &al, &b, &bl))
            return util_fail(ST_DATA, "%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", t->name, i);
        int64_t ia = tok_vocab_get(t, a, al), ib = tok_vocab_get(t, b, bl);
        if (al + bl > sizeof buf)
            return util_fail(ST_DATA, "%s: merge %zu is too long", t->name, i);
        memcpy(buf, a, al);
        memcpy(buf + al, b, bl);
        int64_t ic = tok_vocab_get(t, buf, al + bl);
        if (ia < 0 || ib < 0 || ic < 0)
            return util_fail(ST_DATA, "%s: merge %zu ('%.*s' + '%.*s') uses a token missing from the vocab",
                             t->name, i, (int)(al > 40 ? 40 : al), a, (int)(bl > 40 ? 40 : bl), b);
        tok_merge *m = tok_merge_slot(t, ((uint64_t)ia << 32 | (uint64_t)ib) + 1);
        m->key = ((uint64_t)ia << 32 | (uint64_t)ib) + 1;
        m->rank = (uint32_t)i;   /* a repeated pair keeps its last rank, as the library's map does */
        m->id = (uint32_t)ic;
    }
    return ST_OK;
}

static int tok_parse_model(tok *t, json_object *model)
{
    json_object *v, *vocab, *merges;
    const char *type = tok_type(model);
    if (!model || !json_object_is_type(model, json_type_object))
        return util_fail(ST_DATA, "%s: no model object; is it a tokenizer.json?", t->name);
    if (type && strcmp(type, "BPE"))
        return util_fail(ST_CONFIG, "%s: model type %s is not supported (spotrain reads BPE)", t->name, type);
    if (json_object_object_get_ex(model, "dropout", &v) && v && json_object_get_double(v) != 0)
        return util_fail(ST_CONFIG, "%s: BPE dropout is not supported (encoding would be random)", t->name);
    static const char *strs[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++)
        if (json_object_object_get_ex(model, strs[i], &v) && v && json_object_get_string_len(v) > 0)
            return util_fail(ST_CONFIG, "%s: BPE %s is not supported", t->name, strs[i]);
    if (tok_bool(model, "byte_fallback"))
        return util_fail(ST_CONFIG, "%s: BPE byte_fallback is not supported (not a byte-level BPE)", t->name);
    t->ignore_merges = tok_bool(model, "ignore_merges");
    if (!json_object_object_get_ex(model, "vocab", &vocab) || !json_object_is_type(vocab, json_type_object))
        return util_fail(ST_DATA, "%s: model.vocab is missing or not an object", t->name);
    if (!json_object_object_get_ex(model, "merges", &merges) || !json_object_is_type(merges, json_type_array))
        return util_fail(ST_DATA, "%s: model.merges is missing or not a list", t->name);
    int rc = tok_vocab_build(t, vocab);
    return rc == ST_OK ? tok_merges_build(t, merges) : rc;
}

static int tok_parse_added(tok *t, json_object *arr)
{
    if (!arr)
        return ST_OK;
    if (!json_object_is_type(arr, json_type_array))
        return util_fail(ST_DATA, "%s: added_tokens is not a list", t->name);
    size_t n = json_object_array_length(arr);
    t->added = calloc(n + 1, sizeof *t->added);
    if (!t->added)
        return util_fail(ST_SOFTWARE, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_object *a = json_object_array_get_idx(arr, i), *id, *content;
        if (!json_object_is_type(a, json_type_object) || !json_object_object_get_ex(a, "id", &id) ||
            !json_object_is_type(id, json_type_int) || json_object_get_int64(id) < 0 ||
            json_object_get_int64(id) >= (1 << 30) || !json_object_object_get_ex(a, "content", &content) ||
            !json_object_is_type(content, json_type_string) || json_object_get_string_len(content) < 1)
            return util_fail(ST_DATA, "%s: added_tokens[%zu] needs an id from 0 to 2^30 and non-empty content",
                             t->name, i);
        static const char *flags[] = {"single_word", "lstrip", "rstrip"};
        for (int f = 0; f < 3; f++)
            if (tok_bool(a, flags[f]))
                return util_fail(ST_CONFIG, "%s: added token '%s' sets %s, which is not supported", t->name,
                                 json_object_get_string(content), flags[f]);
        tok_added *ad = &t->added[t->nadded++];
        ad->len = (uint32_t)json_object_get_string_len(content);
        if (tok_arena_add(t, json_object_get_string(content), ad->len, &ad->off))
            return util_fail(ST_SOFTWARE, "out of memory");
        ad->id = (uint32_t)json_object_get_int64(id);
        ad->normalized = tok_bool(a, "normalized");
        ad->special = tok_bool(a, "special");
        t->added_first[ad->normalized][(uint8_t)t->arena[ad->off]] = 1;
        if (ad->id + 1 > t->nvocab)
            t->nvocab = ad->id + 1;
    }
    return ST_OK;
}

/* Decoded bytes of every id: chars mapped back through ByteLevel when all
 * of them are in its table, else the token's own UTF-8 (as the library's
 * ByteLevel decoder does). */
static int tok_build_decode(tok *t)
{
    uint32_t inv[324];
    memset(inv, 0xff, sizeof inv);
    for (uint32_t b = 0; b < 256; b++)
        inv[t->byte_cp[b]] = b;
    t->dec_off = calloc(t->nvocab, sizeof *t->dec_off);
    t->dec_len = calloc(t->nvocab, sizeof *t->dec_len);
    t->dec_set = calloc(t->nvocab, 1);
    if (!t->dec_off || !t->dec_len || !t->dec_set)
        return util_fail(ST_SOFTWARE, "out of memory");
    uint8_t *buf = NULL;
    size_t bufcap = 0;
    int rc = ST_OK;
    for (int pass = 0; pass < 2 && rc == ST_OK; pass++) {
        size_t n = pass == 0 ? t->vocab_mask + 1 : (size_t)t->nadded;
        for (size_t i = 0; i < n && rc == ST_OK; i++) {
            uint32_t off, len, id;
            if (pass == 0) {
                if (!t->vocab[i].len)
                    continue;
                off = t->vocab[i].off, len = t->vocab[i].len, id = t->vocab[i].id;
            } else {
                off = t->added[i].off, len = t->added[i].len, id = t->added[i].id;
            }
            if (len > bufcap) {
                uint8_t *nb = realloc(buf, len);
                if (!nb) {
                    rc = util_fail(ST_SOFTWARE, "out of memory");
                    break;
                }
                buf = nb, bufcap = len;
            }
            const uint8_t *s = (const uint8_t *)t->arena + off;
            size_t k = 0;
            int all = 1;
            for (size_t p = 0; p < len && all;) {
                int cl;
                uint32_t cp = rx_decode(s, len, p, &cl);
                if (cp < 324 && inv[cp] != 0xffffffffu)
                    buf[k++] = (uint8_t)inv[cp];
                else
                    all = 0;
                p += (size_t)cl;
            }
            if (!all) {
                t->dec_off[id] = off, t->dec_len[id] = len;
            } else if (tok_arena_add(t, buf, k, &t->dec_off[id])) {
                rc = util_fail(ST_SOFTWARE, "out of memory");
            } else {
                t->dec_len[id] = (uint32_t)k;
            }
            t->dec_set[id] = 1;
        }
    }
    free(buf);
    return rc;
}

static int tok_check_decoder(tok *t, json_object *d)
{
    const char *type = tok_type(d);
    if (type && !strcmp(type, "ByteLevel"))
        return ST_OK;
    if (type && !strcmp(type, "Sequence")) {
        json_object *v;
        if (json_object_object_get_ex(d, "decoders", &v) && json_object_is_type(v, json_type_array) &&
            json_object_array_length(v) == 1)
            return tok_check_decoder(t, json_object_array_get_idx(v, 0));
    }
    return util_fail(ST_CONFIG, "%s: decoder %s is not supported (spotrain decodes ByteLevel)", t->name,
                     type ? type : "null");
}

static int64_t tok_eos_guess(const tok *t)
{
    static const char *names[] = {"<|endoftext|>", "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                  "<|end_of_text|>", "</s>", "<eos>", "<|eos|>"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int64_t id = tok_id(t, names[i]);
        if (id >= 0)
            return id;
    }
    return -1;
}

/* eos_token of a tokenizer_config.json beside the file, if there is one. */
static int64_t tok_eos_config(const tok *t)
{
    char path[600], *text = NULL;
    const char *slash = strrchr(t->name, '/');
    int dl = slash ? (int)(slash - t->name) + 1 : 0;
    if (util_fmt(path, sizeof path, "%.*stokenizer_config.json", dl, t->name) < 0)
        return -1;
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fclose(f);
    if (util_read_file(path, &text, NULL) != ST_OK)
        return -1;
    int64_t id = -1;
    json_object *o = json_tokener_parse(text), *e, *c;
    if (o && json_object_object_get_ex(o, "eos_token", &e)) {
        if (json_object_is_type(e, json_type_object) && json_object_object_get_ex(e, "content", &c))
            e = c;
        if (json_object_is_type(e, json_type_string))
            id = tok_id(t, json_object_get_string(e));
    }
    json_object_put(o);
    free(text);
    return id;
}

int tok_load_text(tok **out, const char *name, const char *json, size_t len)
{
    int rc = ST_OK;
    json_object *root = NULL, *v;
    *out = NULL;
    tok *t = calloc(1, sizeof *t);
    if (!t)
        return util_fail(ST_SOFTWARE, "out of memory");
    snprintf(t->name, sizeof t->name, "%s", name);
    json_tokener *jt = json_tokener_new_ex(64);
    if (!jt) {
        TOK_FAIL(ST_SOFTWARE, "out of memory");
        goto out;
    }
    root = len > INT32_MAX ? NULL : json_tokener_parse_ex(jt, json, (int)len);
    if (!root || json_tokener_get_error(jt) != json_tokener_success ||
        jt->char_offset != (int)len || !json_object_is_type(root, json_type_object)) {
        while (len && jt->char_offset == (int)len - 1 && strchr(" \t\r\n", json[len - 1]))
            len--;
        if (!root || !json_object_is_type(root, json_type_object) || jt->char_offset < (int)len) {
            TOK_FAIL(ST_DATA, "%s: not a JSON object (%s); is it a tokenizer.json?", name,
                     json_tokener_error_desc(json_tokener_get_error(jt)));
            goto out;
        }
    }
    static const char *refused[] = {"truncation", "padding"};
    for (int i = 0; i < 2; i++)
        if (json_object_object_get_ex(root, refused[i], &v) && v) {
            TOK_FAIL(ST_CONFIG, "%s: %s is set; spotrain does not truncate or pad (set it to null)", name,
                     refused[i]);
            goto out;
        }
    if (json_object_object_get_ex(root, "normalizer", &v) && v) {
        const char *type = tok_type(v);
        json_object *list;
        if (!type || strcmp(type, "Sequence") || !json_object_object_get_ex(v, "normalizers", &list) ||
            json_object_array_length(list) != 0) {
            TOK_FAIL(ST_CONFIG, "%s: normalizer %s is not supported (byte-level BPE has none)", name,
                     type ? type : "?");
            goto out;
        }
    }
    if ((rc = tok_parse_model(t, json_object_object_get_ex(root, "model", &v) ? v : NULL)) != ST_OK)
        goto out;
    if ((rc = tok_parse_pretok(t, json_object_object_get_ex(root, "pre_tokenizer", &v) ? v : NULL, 0)) != ST_OK)
        goto out;
    if (!t->nsteps || !t->steps[t->nsteps - 1].bytelevel) {
        TOK_FAIL(ST_CONFIG, "%s: the pre_tokenizer has no ByteLevel step; spotrain reads byte-level BPE only",
                 name);
        goto out;
    }
    if ((rc = tok_check_decoder(t, json_object_object_get_ex(root, "decoder", &v) ? v : NULL)) != ST_OK)
        goto out;
    if ((rc = tok_parse_added(t, json_object_object_get_ex(root, "added_tokens", &v) ? v : NULL)) != ST_OK)
        goto out;
    tok_bytelevel_map(t->byte_cp);
    for (int b = 0; b < 256; b++) {
        char u[4];
        int64_t id = tok_vocab_get(t, u, tok_utf8(t->byte_cp[b], u));
        if (id < 0) {
            TOK_FAIL(ST_CONFIG, "%s: the vocab lacks the ByteLevel symbol of byte 0x%02x, so some text would be "
                     "dropped or become unk; not supported", name, b);
            goto out;
        }
        t->byte_id[b] = (uint32_t)id;
    }
    if ((rc = tok_build_decode(t)) != ST_OK)
        goto out;
    t->eos = tok_eos_config(t);
    if (t->eos < 0)
        t->eos = tok_eos_guess(t);
out:
    if (jt)
        json_tokener_free(jt);
    json_object_put(root);
    if (rc != ST_OK)
        tok_free(t);
    else
        *out = t;
    return rc;
}

int tok_load(tok **out, const char *path)
{
    char *text = NULL;
    size_t len = 0;
    *out = NULL;
    int rc = util_read_file(path, &text, &len);
    if (rc != ST_OK)
        return rc;
    rc = tok_load_text(out, path, text, len);
    free(text);
    return rc;
}

void tok_free(tok *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->nsteps; i++)
        rx_free(t->steps[i].re);
    free(t->arena);
    free(t->vocab);
    free(t->merges);
    free(t->dec_off);
    free(t->dec_len);
    free(t->dec_set);
    free(t->added);
    free(t);
}

uint32_t tok_vocab_size(const tok *t) { return t->nvocab; }
int64_t tok_eos(const tok *t) { return t->eos; }

int64_t tok_id(const tok *t, const char *content)
{
    size_t n = strlen(content);
    for (int i = 0; i < t->nadded; i++)
        if (t->added[i].len == n && !memcmp(t->arena + t->added[i].off, content, n))
            return t->added[i].id;
    return tok_vocab_get(t, content, n);
}

const uint8_t *tok_bytes(const tok *t, uint32_t id, size_t *len)
{
    if (id >= t->nvocab || !t->dec_set[id])
        return NULL;
    *len = t->dec_len[id];
    return (const uint8_t *)t->arena + t->dec_off[id];
}

/* --- encoding -------------------------------------------------------------- */

int tok_enc_new(tok_enc **out, const tok *t)
{
    tok_enc *e = calloc(1, sizeof *e);
    *out = NULL;
    if (!e || !(e->cache = calloc((size_t)1 << TOK_CACHE_BITS, sizeof *e->cache))) {
        free(e);
        return util_fail(ST_SOFTWARE, "out of memory");
    }
    e->t = t;
    *out = e;
    return ST_OK;
}

void tok_enc_free(tok_enc *e)
{
    if (!e)
        return;
    rx_stack_free(&e->st);
    for (int i = 0; i < TOK_MAX_STEPS; i++) {
        free(e->spans[i]);
        free(e->pbuf[i]);
    }
    free(e->sym);
    free(e->prev);
    free(e->next);
    free(e->live);
    free(e->heap);
    free(e->cache);
    free(e->carena);
    free(e);
}

static void tok_emit(tok_enc *e, const uint32_t *ids, size_t n)
{
    if (e->oom)
        return;
    if (*e->len + n > *e->cap) {
        size_t cap = *e->cap ? *e->cap : 1024;
        while (cap < *e->len + n)
            cap *= 2;
        uint32_t *ni = realloc(*e->ids, cap * sizeof *ni);
        if (!ni) {
            e->oom = 1;
            return;
        }
        *e->ids = ni;
        *e->cap = cap;
    }
    memcpy(*e->ids + *e->len, ids, n * sizeof *ids);
    *e->len += n;
}

static int tok_heap_less(const tok_heap_item *a, const tok_heap_item *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void tok_heap_push(tok_enc *e, size_t *n, uint32_t pos, uint32_t rank, uint32_t id)
{
    size_t i = (*n)++;
    e->heap[i] = (tok_heap_item){pos, rank, id};
    while (i && tok_heap_less(&e->heap[i], &e->heap[(i - 1) / 2])) {
        tok_heap_item x = e->heap[i];
        e->heap[i] = e->heap[(i - 1) / 2];
        e->heap[(i - 1) / 2] = x;
        i = (i - 1) / 2;
    }
}

static tok_heap_item tok_heap_pop(tok_enc *e, size_t *n)
{
    tok_heap_item top = e->heap[0];
    e->heap[0] = e->heap[--(*n)];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && tok_heap_less(&e->heap[l], &e->heap[m]))
            m = l;
        if (r < *n && tok_heap_less(&e->heap[r], &e->heap[m]))
            m = r;
        if (m == i)
            break;
        tok_heap_item x = e->heap[i];
        e->heap[i] = e->heap[m];
        e->heap[m] = x;
        i = m;
    }
    return top;
}

static int tok_grow(tok_enc *e, size_t n)
{
    if (n <= e->sym_cap)
        return 0;
    size_t cap = e->sym_cap ? e->sym_cap : 256;
    while (cap < n)
        cap *= 2;
    uint32_t *a = realloc(e->sym, cap * 4), *b = a ? realloc(e->prev, cap * 4) : NULL;
    if (a)
        e->sym = a;
    if (b)
        e->prev = b;
    uint32_t *c = b ? realloc(e->next, cap * 4) : NULL;
    if (c)
        e->next = c;
    uint32_t *d = c ? realloc(e->live, cap * 4) : NULL;
    if (d)
        e->live = d;
    tok_heap_item *h = d ? realloc(e->heap, 4 * cap * sizeof *h) : NULL;
    if (h)
        e->heap = h;
    if (!h)
        return -1;
    e->sym_cap = cap;
    e->heap_cap = 4 * cap;
    return 0;
}

/* The library's Word::merge_all: pop the lowest (rank, position) pair,
 * skip entries that went stale, push the two new neighbour pairs. */
static size_t tok_bpe(tok_enc *e, const uint8_t *w, size_t n)
{
    const tok *t = e->t;
    uint32_t NONE = UINT32_MAX;
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        e->sym[i] = t->byte_id[w[i]];
        e->prev[i] = i ? (uint32_t)i - 1 : NONE;
        e->next[i] = i + 1 < n ? (uint32_t)i + 1 : NONE;
        e->live[i] = 1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        const tok_merge *m = tok_merge_get(t, e->sym[i], e->sym[i + 1]);
        if (m)
            tok_heap_push(e, &hn, (uint32_t)i, m->rank, m->id);
    }
    while (hn) {
        tok_heap_item top = tok_heap_pop(e, &hn);
        uint32_t p = top.pos;
        if (!e->live[p] || e->next[p] == NONE)
            continue;
        uint32_t q = e->next[p];
        const tok_merge *m = tok_merge_get(t, e->sym[p], e->sym[q]);
        if (!m || m->id != top.id)
            continue;
        e->sym[p] = top.id;
        e->live[q] = 0;
        e->next[p] = e->next[q];
        if (e->next[q] != NONE)
            e->prev[e->next[q]] = p;
        /* The heap holds at most one entry per merge plus the initial pairs,
         * so it never outgrows 4n; checked anyway. */
        if (hn + 2 > e->heap_cap)
            continue;
        if (e->prev[p] != NONE && (m = tok_merge_get(t, e->sym[e->prev[p]], e->sym[p])))
            tok_heap_push(e, &hn, e->prev[p], m->rank, m->id);
        if (e->next[p] != NONE && (m = tok_merge_get(t, e->sym[p], e->sym[e->next[p]])))
            tok_heap_push(e, &hn, p, m->rank, m->id);
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (e->live[i])
            e->sym[k++] = e->sym[i];
    return k;
}

static void tok_word(tok_enc *e, const uint8_t *w, size_t n)
{
    const tok *t = e->t;
    tok_cache_slot *slot = NULL;
    uint64_t h = 0;
    if (!n)
        return;
    if (n <= TOK_CACHE_MAX_WORD) {
        h = tok_hash(w, n) | 1;
        size_t mask = ((size_t)1 << TOK_CACHE_BITS) - 1;
        for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
            slot = &e->cache[i];
            if (!slot->hash)
                break;
            if (slot->hash == h && slot->len == n && !memcmp(e->carena + slot->off, w, n)) {
                uint32_t ids[TOK_CACHE_MAX_WORD];
                memcpy(ids, e->carena + slot->off + n, slot->nids * 4);
                tok_emit(e, ids, slot->nids);
                return;
            }
        }
    }
    if (tok_grow(e, n)) {
        e->oom = 1;
        return;
    }
    size_t k = 0;
    if (t->ignore_merges && n <= 256) {
        char u[768];
        size_t ul = 0;
        for (size_t i = 0; i < n; i++)
            ul += tok_utf8(t->byte_cp[w[i]], u + ul);
        int64_t id = tok_vocab_get(t, u, ul);
        if (id >= 0)
            e->sym[0] = (uint32_t)id, k = 1;
    }
    if (!k)
        k = tok_bpe(e, w, n);
    tok_emit(e, e->sym, k);
    if (!slot)
        return;
    /* Cache it; a full cache starts over (cheaper than eviction). */
    size_t need = n + 4 * k;
    if (e->cache_used * 2 > ((size_t)1 << TOK_CACHE_BITS) || e->carena_len + need > ((size_t)64 << 20)) {
        memset(e->cache, 0, ((size_t)1 << TOK_CACHE_BITS) * sizeof *e->cache);
        e->cache_used = 0;
        e->carena_len = 0;
        return;
    }
    if (e->carena_len + need > e->carena_cap) {
        size_t cap = e->carena_cap ? e->carena_cap * 2 : 1 << 20;
        uint8_t *na = realloc(e->carena, cap);
        if (!na)
            return;
        e->carena = na;
        e->carena_cap = cap;
    }
    slot->hash = h;
    slot->off = (uint32_t)e->carena_len;
    slot->len = (uint32_t)n;
    slot->nids = (uint32_t)k;
    memcpy(e->carena + e->carena_len, w, n);
    memcpy(e->carena + e->carena_len + n, e->sym, 4 * k);
    e->carena_len += need;
    e->cache_used++;
}

static tok_span *tok_span_add(tok_enc *e, int d, size_t *n, size_t s, size_t end, int match)
{
    if (*n == e->span_cap[d]) {
        size_t cap = e->span_cap[d] ? e->span_cap[d] * 2 : 64;
        tok_span *ns = realloc(e->spans[d], cap * sizeof *ns);
        if (!ns) {
            e->oom = 1;
            return NULL;
        }
        e->spans[d] = ns;
        e->span_cap[d] = cap;
    }
    tok_span *sp = &e->spans[d][(*n)++];
    sp->s = s, sp->e = end, sp->match = match;
    return sp;
}

static void tok_pretok(tok_enc *e, const uint8_t *p, size_t n, int d);

/* One Split step over one piece: matches and gaps, merged per behavior,
 * then each non-empty, non-removed piece goes to the next step. */
static void tok_split(tok_enc *e, const tok_step *st, const uint8_t *p, size_t n, int d)
{
    size_t ns = 0, pos = 0, prev = 0, ms, me;
    while (pos <= n && !e->oom) {
        int m = rx_search(st->re, &e->st, p, n, pos, &ms, &me);
        if (m < 0) {
            e->oom = 1;
            return;
        }
        if (!m)
            break;
        if (ms != prev)
            tok_span_add(e, d, &ns, prev, ms, st->invert);
        tok_span_add(e, d, &ns, ms, me, !st->invert);
        prev = me;
        if (me == ms) {
            /* An empty match: step over one character, as the library's
             * iterator does, so the search moves on. */
            if (me >= n)
                break;
            int len;
            rx_decode(p, n, me, &len);
            pos = me + (size_t)len;
        } else {
            pos = me;
        }
    }
    if (prev != n)
        tok_span_add(e, d, &ns, prev, n, st->invert);
    if (e->oom)
        return;
    tok_span *sp = e->spans[d];
    size_t k = 0;
    int prev_match = 0;
    switch (st->behavior) {
    case SPLIT_REMOVED:
        for (size_t i = 0; i < ns; i++)
            if (!sp[i].match)
                sp[k++] = sp[i];
        break;
    case SPLIT_PREV:
        for (size_t i = 0; i < ns; i++) {
            if (sp[i].match && !prev_match && k)
                sp[k - 1].e = sp[i].e;
            else
                sp[k++] = sp[i];
            prev_match = sp[i].match;
        }
        break;
    case SPLIT_NEXT:
        for (size_t i = ns; i-- > 0;) {
            if (sp[i].match && !prev_match && k)
                sp[ns - k].s = sp[i].s;
            else
                sp[ns - ++k] = sp[i];
            prev_match = sp[i].match;
        }
        memmove(sp, sp + ns - k, k * sizeof *sp);
        break;
    case SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < ns; i++) {
            if (sp[i].match && prev_match && k)
                sp[k - 1].e = sp[i].e;
            else
                sp[k++] = sp[i];
            prev_match = sp[i].match;
        }
        break;
    default:
        k = ns;
    }
    /* Children use deeper span lists, so ours stays valid while they run. */
    for (size_t i = 0; i < k && !e->oom; i++)
        if (e->spans[d][i].e > e->spans[d][i].s)
            tok_pretok(e, p + e->spans[d][i].s, e->spans[d][i].e - e->spans[d][i].s, d + 1);
}

static void tok_pretok(tok_enc *e, const uint8_t *p, size_t n, int d)
{
    const tok *t = e->t;
    if (d == t->nsteps) {
        tok_word(e, p, n);
        return;
    }
    const tok_step *st = &t->steps[d];
    if (st->bytelevel && st->prefix_space && (n == 0 || p[0] != ' ')) {
        if (n + 1 > e->pbuf_cap[d]) {
            uint8_t *nb = realloc(e->pbuf[d], n + 1);
            if (!nb) {
                e->oom = 1;
                return;
            }
            e->pbuf[d] = nb;
            e->pbuf_cap[d] = n + 1;
        }
        e->pbuf[d][0] = ' ';
        memcpy(e->pbuf[d] + 1, p, n);
        p = e->pbuf[d];
        n++;
    }
    if (st->re)
        tok_split(e, st, p, n, d);
    else
        tok_pretok(e, p, n, d + 1);
}

/* Splits on added tokens of one kind (leftmost, longest); the text between
 * goes to the next kind, then to the pre-tokenizer. */
static void tok_added_split(tok_enc *e, const uint8_t *p, size_t n, int normalized)
{
    const tok *t = e->t;
    size_t start = 0;
    for (size_t i = 0; i < n && !e->oom;) {
        int best = -1;
        if (t->added_first[normalized][p[i]])
            for (int k = 0; k < t->nadded; k++) {
                const tok_added *a = &t->added[k];
                if (a->normalized == normalized && a->len <= n - i && (best < 0 || a->len > t->added[best].len) &&
                    !memcmp(t->arena + a->off, p + i, a->len))
                    best = k;
            }
        if (best < 0) {
            i++;
            continue;
        }
        if (t->added[best].special)
            e->specials++;
        /* As the library's encode_special_tokens: the match stays text and
         * the search goes on after it. */
        if (t->added[best].special && e->special_as_text) {
            i += t->added[best].len;
            continue;
        }
        if (i > start) {
            if (!normalized)
                tok_added_split(e, p + start, i - start, 1);
            else
                tok_pretok(e, p + start, i - start, 0);
        }
        tok_emit(e, &t->added[best].id, 1);
        i += t->added[best].len;
        start = i;
    }
    if (start < n && !e->oom) {
        if (!normalized)
            tok_added_split(e, p + start, n - start, 1);
        else
            tok_pretok(e, p + start, n - start, 0);
    }
}

void tok_enc_special_as_text(tok_enc *e, int on) { e->special_as_text = on; }
uint64_t tok_enc_specials(const tok_enc *e) { return e->specials; }

int tok_encode(tok_enc *e, const uint8_t *text, size_t n, uint32_t **ids, size_t *len, size_t *cap)
{
    e->ids = ids, e->len = len, e->cap = cap;
    e->oom = 0;
    if (n > UINT32_MAX / 2)
        return util_fail(ST_DATA, "a single document of %zu bytes is too long to tokenize (at most 2 GiB)", n);
    tok_added_split(e, text, n, 0);
    return e->oom ? util_fail(ST_SOFTWARE, "out of memory tokenizing") : ST_OK;
}
