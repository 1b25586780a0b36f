/* Tokenizer throughput: encodes a text file with a tokenizer.json on one
 * core (one encoder, its word cache warm after the first pass) and prints
 * MB/s, plus a check that decoding gives the text back.
 * usage: bench_tok tokenizer.json text.txt [passes] */
#include "tok/tokenizer.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    tok *t = NULL;
    tok_enc *e = NULL;
    char *text = NULL;
    size_t n = 0, len = 0, cap = 0;
    uint32_t *ids = NULL;
    int passes = argc > 3 ? atoi(argv[3]) : 3;
    if (argc < 3)
        return fputs("usage: bench_tok tokenizer.json text.txt [passes]\n", stderr), ST_USAGE;
    int rc = tok_load(&t, argv[1]);
    if (rc == ST_OK)
        rc = util_read_file(argv[2], &text, &n);
    if (rc == ST_OK)
        rc = tok_enc_new(&e, t);
    double best = 0;
    for (int p = 0; p < passes && rc == ST_OK; p++) {
        double t0 = util_now();
        len = 0;
        /* Documents of up to 64 KiB, cut at a newline, as a shard job sees them. */
        for (size_t at = 0; at < n && rc == ST_OK;) {
            size_t end = at + 65536 < n ? at + 65536 : n;
            while (end < n && text[end - 1] != '\n')
                end++;
            rc = tok_encode(e, (const uint8_t *)text + at, end - at, &ids, &len, &cap);
            at = end;
        }
        double mbs = (double)n / 1e6 / (util_now() - t0);
        if (mbs > best)
            best = mbs;
    }
    size_t back = 0;
    int same = 1;
    for (size_t i = 0; i < len && rc == ST_OK && same; i++) {
        size_t bl;
        const uint8_t *b = tok_bytes(t, ids[i], &bl);
        same = b && back + bl <= n && !memcmp(b, text + back, bl);
        back += bl;
    }
    if (rc == ST_OK)
        printf("spotrain  tokenizer encode: %.1f MB/s on one core (%.1f MB, %zu tokens, %.2f bytes/token, "
               "best of %d passes); decode(encode(x)) == x: %s\n", best, (double)n / 1e6, len,
               (double)n / (double)(len ? len : 1), passes, same && back == n ? "yes" : "NO");
    free(ids);
    free(text);
    tok_enc_free(e);
    tok_free(t);
    return rc;
}
