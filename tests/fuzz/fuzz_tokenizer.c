/* libFuzzer target for the tokenizer.json reader and the regex subset: any
 * input must load or be refused with a status, and whatever loads must
 * encode the same input and decode it back to the same bytes (when no
 * added token and no prefix space change it); a third kind of input is a
 * Split pattern plus text that must round-trip.
 * fuzz-sources: tok/tokenizer.c tok/regex.c util/util.c
 * fuzz-max-len: 20000
 * module: tok
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok/regex.h"
#include "tok/tokenizer.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A valid tokenizer.json whose Split pattern is the fuzz input (JSON-escaped),
 * with all 256 byte symbols and a few merges. */
static char *fuzz_json(const uint8_t *pat, size_t n)
{
    size_t cap = 16384 + 6 * n, k = 0;
    char *j = malloc(cap);
    uint32_t map[256], m = 0;
    if (!j)
        return NULL;
    k += (size_t)snprintf(j + k, cap - k, "{\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
                          "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"");
    for (size_t i = 0; i < n; i++)
        k += (size_t)snprintf(j + k, cap - k, pat[i] < 0x20 || pat[i] == '"' || pat[i] == '\\' ? "\\u%04x" : "%c",
                              pat[i]);
    k += (size_t)snprintf(j + k, cap - k, "\"},\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\","
                          "\"use_regex\":%s}]},\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\","
                          "\"vocab\":{", n % 2 ? "true" : "false");
    for (uint32_t b = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        map[b] = keep ? b : 256 + m++;
        k += (size_t)snprintf(j + k, cap - k, "\"\\u%04x\":%u,", map[b], b);
    }
    k += (size_t)snprintf(j + k, cap - k, "\"ab\":256,\"abc\":257,\"\\u0120a\":258},\"merges\":[\"a b\",[\"ab\",\"c\"],"
                          "\"\\u0120 a\"]}}");
    return j;
}

static void fuzz_roundtrip(const uint8_t *data, size_t size)
{
    size_t n = data[0] % 32 < size - 1 ? data[0] % 32 : size - 1;
    char *j = fuzz_json(data + 1, n);
    tok *t = NULL;
    if (j && tok_load_text(&t, "fuzz", j, strlen(j)) == ST_OK) {
        const uint8_t *text = data + 1 + n;
        size_t tn = size - 1 - n, len = 0, cap = 0, at = 0;
        uint32_t *ids = NULL;
        tok_enc *e = NULL;
        if (tok_enc_new(&e, t) == ST_OK && tok_encode(e, text, tn, &ids, &len, &cap) == ST_OK) {
            for (size_t i = 0; i < len; i++) {
                size_t bl;
                const uint8_t *b = tok_bytes(t, ids[i], &bl);
                if (!b || at + bl > tn || memcmp(b, text + at, bl))
                    abort();   /* decode(encode(x)) must give x back */
                at += bl;
            }
            if (at != tn)
                abort();
        }
        free(ids);
        tok_enc_free(e);
    }
    tok_free(t);
    free(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    util_quiet = 1;
    if (size > 1 && (data[0] & 3) == 2) {
        fuzz_roundtrip(data + 1, size - 1);
        return 0;
    }
    /* First half of the inputs: a regex pattern searched over itself. */
    if (size && data[0] & 1) {
        rx *r = NULL;
        rx_stack st = {0};
        char err[200];
        size_t n = size - 1 > 200 ? 200 : size - 1;
        if (rx_compile(&r, (const char *)data + 1, n, err, sizeof err) == 0) {
            size_t ms, me, from = 0;
            const uint8_t *text = data + 1 + n;
            size_t tn = size - 1 - n;
            while (from <= tn && rx_search(r, &st, text, tn, from, &ms, &me) == 1) {
                if (ms < from || me < ms || me > tn)
                    abort();
                from = me > ms ? me : ms + 1;
            }
        }
        rx_free(r);
        rx_stack_free(&st);
        return 0;
    }
    tok *t = NULL;
    if (tok_load_text(&t, "fuzz", (const char *)data, size) != ST_OK)
        return 0;
    tok_enc *e = NULL;
    uint32_t *ids = NULL;
    size_t len = 0, cap = 0;
    if (tok_enc_new(&e, t) == ST_OK && tok_encode(e, data, size, &ids, &len, &cap) == ST_OK) {
        for (size_t i = 0; i < len; i++) {
            size_t bl;
            if (!tok_bytes(t, ids[i], &bl))
                abort();
        }
    }
    free(ids);
    tok_enc_free(e);
    tok_free(t);
    return 0;
}
