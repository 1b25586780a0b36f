/* libFuzzer target for the metadata HTTP response parser: any byte string,
 * whole or cut short, with or without end-of-stream, must parse or be refused
 * without a crash, a leak or a read outside the buffer.
 * fuzz-sources: spot/http.c util/util.c
 */
#include "spot/http.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_http_one(const char *buf, size_t len, int eof)
{
    http_response r;
    char v[64];
    if (http_parse_response(buf, len, eof, &r) != HTTP_DONE)
        return;
    /* A finished parse must hold what it claims. */
    if (r.status < 200 || r.status > 599 || !r.body || !r.headers || r.body_len > HTTP_MAX_BODY ||
        r.body[r.body_len] != '\0')
        abort();
    http_header_get(&r, "Content-Length", v, sizeof v);
    http_response_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size heap copy so ASan sees any read past the end. */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    fuzz_http_one(buf, size, 0);
    fuzz_http_one(buf, size, 1);
    fuzz_http_one(buf, size / 2, 0);
    free(buf);
    return 0;
}
