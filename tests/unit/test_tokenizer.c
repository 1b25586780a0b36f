/* Unit tests of the regex subset and the byte-level BPE tokenizer on a
 * tokenizer.json built here; with paths as arguments, also decode(encode(x))
 * == x on random bytes for those files (tests/cli/cli_tokenize.sh passes the
 * tokenizers it trained).
 * module: tok */
#include "tests/harness.h"
#include "tok/regex.h"
#include "tok/tokenizer.h"
#include "util/util.h"

#include <stdlib.h>
#include <string.h>

static char *mini_json(const char *model_extra, const char *pretok, const char *normalizer)
{
    static char buf[65536];
    size_t n = 0;
    uint32_t map[256], k = 0;
    for (uint32_t b = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        map[b] = keep ? b : 256 + k++;
    }
    n += (size_t)snprintf(buf + n, sizeof buf - n,
                          "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":["
                          "{\"id\":259,\"content\":\"<|endoftext|>\",\"single_word\":false,\"lstrip\":false,"
                          "\"rstrip\":false,\"normalized\":false,\"special\":true}],"
                          "\"normalizer\":%s,\"pre_tokenizer\":%s,\"post_processor\":null,"
                          "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",%s\"vocab\":{",
                          normalizer, pretok, model_extra);
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t cp = map[b];
        char u[4];
        int ul;
        if (cp == '"' || cp == '\\')
            u[0] = '\\', u[1] = (char)cp, ul = 2;
        else if (cp < 0x80)
            u[0] = (char)cp, ul = 1;
        else
            u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 63)), ul = 2;
        n += (size_t)snprintf(buf + n, sizeof buf - n, "\"%.*s\":%u,", ul, u, b);
    }
    /* Ġ is the ByteLevel symbol of the space byte. */
    n += (size_t)snprintf(buf + n, sizeof buf - n,
                          "\"\xc4\xa0t\":256,\"he\":257,\"\xc4\xa0the\":258},\"merges\":["
                          "\"\xc4\xa0 t\",[\"h\",\"e\"],\"\xc4\xa0t he\"]}}");
    return buf;
}

#define BL "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}"

static tok *mini(void)
{
    tok *t = NULL;
    const char *j = mini_json("", BL, "null");
    EXPECT(tok_load_text(&t, "mini", j, strlen(j)) == ST_OK);
    return t;
}

static size_t enc(tok *t, const char *s, size_t n, uint32_t **ids)
{
    tok_enc *e = NULL;
    size_t len = 0, cap = 0;
    *ids = NULL;
    EXPECT(tok_enc_new(&e, t) == ST_OK);
    EXPECT(tok_encode(e, (const uint8_t *)s, n, ids, &len, &cap) == ST_OK);
    tok_enc_free(e);
    return len;
}

static void test_merges(void)
{
    tok *t = mini();
    uint32_t *ids;
    if (!t)
        return;
    size_t n = enc(t, " the", 4, &ids);
    EXPECT(n == 1 && ids[0] == 258);
    free(ids);
    n = enc(t, "the theme", 9, &ids);
    /* t he | Ġthe m e */
    EXPECT(n == 5 && ids[0] == 't' && ids[1] == 257 && ids[2] == 258 && ids[3] == 'm' && ids[4] == 'e');
    free(ids);
    EXPECT(tok_vocab_size(t) == 260);
    EXPECT(tok_eos(t) == 259);
    EXPECT(tok_id(t, "he") == 257);
    tok_free(t);
}

static void test_added_tokens(void)
{
    tok *t = mini();
    uint32_t *ids;
    if (!t)
        return;
    const char *s = "a<|endoftext|><|endoftext|> the";
    size_t n = enc(t, s, strlen(s), &ids);
    EXPECT(n == 4 && ids[0] == 'a' && ids[1] == 259 && ids[2] == 259 && ids[3] == 258);
    free(ids);
    size_t bl;
    const uint8_t *b = tok_bytes(t, 259, &bl);
    EXPECT(b && bl == 13 && !memcmp(b, "<|endoftext|>", 13));
    EXPECT(tok_bytes(t, 100000, &bl) == NULL);
    tok_free(t);
}

static void roundtrip(tok *t, int rounds)
{
    uint64_t x = 88172645463325252ULL;
    uint8_t text[300], back[4000];
    tok_enc *e = NULL;
    uint32_t *ids = NULL;
    size_t cap = 0;
    int bad = 0;
    EXPECT(tok_enc_new(&e, t) == ST_OK);
    for (int r = 0; r < rounds && e; r++) {
        size_t n = (size_t)(r % 200) + 1;
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            /* Mostly ASCII and UTF-8 lead/continuation bytes, some anything. */
            text[i] = (uint8_t)(x % 4 == 0 ? x >> 8 : x % 4 == 1 ? 0x20 + (x >> 8) % 95 : x % 4 == 2 ? 0x80 + (x >> 8) % 0x40 : 0xC2 + (x >> 8) % 0x32);
        }
        size_t len = 0, m = 0;
        if (tok_encode(e, text, n, &ids, &len, &cap) != ST_OK)
            bad++;
        for (size_t i = 0; i < len; i++) {
            size_t bl;
            const uint8_t *b = tok_bytes(t, ids[i], &bl);
            if (!b || m + bl > sizeof back) {
                bad++;
                break;
            }
            memcpy(back + m, b, bl);
            m += bl;
        }
        bad += m != n || memcmp(back, text, n) != 0;
    }
    EXPECT(bad == 0);
    free(ids);
    tok_enc_free(e);
}

static void test_roundtrip_bytes(void)
{
    tok *t = mini();
    if (t)
        roundtrip(t, 3000);
    tok_free(t);
}

static int load_status(const char *model_extra, const char *pretok, const char *normalizer)
{
    tok *t = NULL;
    const char *j = mini_json(model_extra, pretok, normalizer);
    int rc = tok_load_text(&t, "x", j, strlen(j));
    tok_free(t);
    return rc;
}

static void test_refusals(void)
{
    util_quiet = 1;
    EXPECT(load_status("", BL, "{\"type\":\"NFC\"}") == ST_CONFIG);
    EXPECT(load_status("\"dropout\":0.1,", BL, "null") == ST_CONFIG);
    EXPECT(load_status("\"byte_fallback\":true,", BL, "null") == ST_CONFIG);
    EXPECT(load_status("\"continuing_subword_prefix\":\"##\",", BL, "null") == ST_CONFIG);
    EXPECT(load_status("", "{\"type\":\"Whitespace\"}", "null") == ST_CONFIG);
    EXPECT(load_status("", "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
                           "{\"Regex\":\"(?<=a)b\"},\"behavior\":\"Isolated\",\"invert\":false}," BL "]}",
                       "null") == ST_CONFIG);
    EXPECT(load_status("", "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
                           "{\"Regex\":\"\\\\p{Greek}\"},\"behavior\":\"Isolated\",\"invert\":false}," BL "]}",
                       "null") == ST_CONFIG);
    EXPECT(load_status("", "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Isolated\"}",
                       "null") == ST_CONFIG);   /* no ByteLevel */
    EXPECT(load_status("", BL, "{\"type\":\"Sequence\",\"normalizers\":[]}") == ST_OK);
    tok *t = NULL;
    EXPECT(tok_load_text(&t, "x", "{\"model\":", 9) == ST_DATA);
    const char *unigram = "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]},\"pre_tokenizer\":" BL "}";
    EXPECT(tok_load_text(&t, "x", unigram, strlen(unigram)) == ST_CONFIG);
    util_quiet = 0;
}

static int search(const char *pat, const char *s, size_t from, size_t *ms, size_t *me)
{
    rx *r = NULL;
    rx_stack st = {0};
    char err[200];
    if (rx_compile(&r, pat, strlen(pat), err, sizeof err))
        return -2;
    int m = rx_search(r, &st, (const uint8_t *)s, strlen(s), from, ms, me);
    rx_free(r);
    rx_stack_free(&st);
    return m;
}

static void test_regex(void)
{
    size_t s, e;
    EXPECT(search("\\s+(?!\\S)|\\s+", "a   b", 0, &s, &e) == 1 && s == 1 && e == 3);
    EXPECT(search("\\s+$", "ab  \ncd", 0, &s, &e) == 1 && s == 2 && e == 4);
    EXPECT(search("\\p{N}{1,3}", "x12345", 0, &s, &e) == 1 && s == 1 && e == 4);
    EXPECT(search("'s|'t| ?\\p{L}+", "it's", 0, &s, &e) == 1 && s == 0 && e == 2);
    EXPECT(search("'s|'t| ?\\p{L}+", "it's", 2, &s, &e) == 1 && s == 2 && e == 4);
    EXPECT(search("[一-龥]+", "ab\xe4\xb8\x9c\xe4\xba\xac!", 0, &s, &e) == 1 && s == 2 && e == 8);
    EXPECT(search(" ?[^\\s\\p{L}\\p{N}]+", "a \xff\xfe", 0, &s, &e) == 1 && s == 1 && e == 4);
    EXPECT(search("\\p{L}", "\xc3\xa9", 0, &s, &e) == 1 && e == 2);
    EXPECT(search("\\s", "\x1c", 0, &s, &e) == 0);       /* not White_Space */
    EXPECT(search("\\s", "\xc2\x85", 0, &s, &e) == 1);   /* NEL is */
    EXPECT(search("a*?", "a", 0, &s, &e) == -2);
    EXPECT(search("(a*)*", "a", 0, &s, &e) == -2);
    EXPECT(search("[z-a]", "a", 0, &s, &e) == -2);
    EXPECT(search("\\bx", "x", 0, &s, &e) == -2);
    EXPECT(rx_category(0x4E00) == 5 && rx_category('A') == 1 && rx_category(0x10FFFF) == 0);
}

/* The categories of the tokenizers wheel's regex engine: Unicode 16.0. */
static void test_unicode_version(void)
{
    EXPECT(!strcmp(rx_unicode_version(), "16.0.0"));
    EXPECT(rx_category(0x1FAE8) == 22);   /* So, new in 15.0 */
    EXPECT(rx_category(0x1E4D0) == 5);    /* Lo, 15.0 */
    EXPECT(rx_category(0x2FFC) == 22);    /* So, 15.1 */
    EXPECT(rx_category(0x31350) == 5);    /* Lo, 15.1 */
    EXPECT(rx_category(0x1C89) == 1);     /* Lu, 16.0 */
    EXPECT(rx_category(0x10D50) == 1);    /* Lu, 16.0 */
    EXPECT(rx_category(0x1CC00) == 22);   /* So, 16.0 */
    EXPECT(rx_category(0x20C1) == 0);     /* 17.0: not yet assigned */
    size_t s, e;
    EXPECT(search(" ?\\p{L}+| ?[^\\s\\p{L}\\p{N}]+", " \xf0\x9f\xab\xa8", 0, &s, &e) == 1 && s == 0 && e == 5);
}

/* Scoped (?i:...) with Oniguruma's simple case folding, as in Llama 3 and
 * Qwen2 patterns; what the folding cannot answer exactly is refused. */
static void test_regex_icase(void)
{
    const char *llama3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
                         "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    size_t s, e;
    EXPECT(search(llama3, "IT'S", 2, &s, &e) == 1 && s == 2 && e == 4);
    EXPECT(search(llama3, "we'LL", 2, &s, &e) == 1 && s == 2 && e == 5);
    EXPECT(search(llama3, "it'\xc5\xbf", 2, &s, &e) == 1 && s == 2 && e == 5);    /* long s folds to s */
    EXPECT(search("(?i:'s)", "'\xc3\x9f", 0, &s, &e) == 0);         /* sharp s does not */
    EXPECT(search("(?i:k)", "\xe2\x84\xaa", 0, &s, &e) == 1 && e == 3);          /* Kelvin sign */
    EXPECT(search("(?i:\xcf\x83)", "\xcf\x82", 0, &s, &e) == 1);                /* sigma orbit */
    EXPECT(search("(?i:[a-c])x", "Bx", 0, &s, &e) == 1);
    EXPECT(search("(?i:[^s])", "\xc5\xbf", 0, &s, &e) == 0);
    EXPECT(search("(?i:a)(?-i:b)", "AB", 0, &s, &e) == 0);
    EXPECT(search("(?i:a)b", "Ab", 0, &s, &e) == 1);
    EXPECT(search("(?i:a)b", "AB", 0, &s, &e) == 0);
    EXPECT(search("(?i:\\p{Ll})", "A", 0, &s, &e) == 0);   /* categories do not fold */
    EXPECT(search("(?i:ss)", "s", 0, &s, &e) == -2);        /* spells U+00DF's folding */
    EXPECT(search("(?i:\xc3\x9f)", "s", 0, &s, &e) == -2);
    EXPECT(search("(?i:\xe1\xb2\x89)", "s", 0, &s, &e) == -2);   /* U+1C89: case newer than the fold data */
    EXPECT(search("(?i)a", "A", 0, &s, &e) == -2);
}

static const char **harness_files;
static int harness_nfiles;

static void test_files_roundtrip(void)
{
    for (int i = 0; i < harness_nfiles; i++) {
        tok *t = NULL;
        EXPECT(tok_load(&t, harness_files[i]) == ST_OK);
        if (t)
            roundtrip(t, 2000);
        tok_free(t);
    }
}

int main(int argc, char **argv)
{
    harness_files = (const char **)argv + 1;
    harness_nfiles = argc - 1;
    harness_run("regex subset: lookahead, $, {n,m}, classes, invalid bytes, refusals", test_regex);
    harness_run("regex: Unicode 16.0 categories", test_unicode_version);
    harness_run("regex: scoped (?i:...) with simple case folding", test_regex_icase);
    harness_run("tokenizer: merges by rank, eos, vocab size", test_merges);
    harness_run("tokenizer: added tokens split first, decode to content", test_added_tokens);
    harness_run("tokenizer: decode(encode(x)) == x on random bytes", test_roundtrip_bytes);
    harness_run("tokenizer: unsupported features refused by name", test_refusals);
    if (argc > 1)
        harness_run("tokenizer files: decode(encode(x)) == x on random bytes", test_files_roundtrip);
    return harness_end();
}
