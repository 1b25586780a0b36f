/* libFuzzer target for the metadata answers that are still parsed here
 * (libcurl does the HTTP): every provider's notice body parser must accept
 * or refuse any byte string without a crash, a leak or a read outside it.
 * fuzz-sources: spot/body.c util/util.c
 */
#include "spot/body.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A verdict must hold what it claims: a NOTICE has a detail, BAD a reason. */
static void fuzz_notice_check(int v, const spot_body *b)
{
    if ((v == SPOT_BODY_NOTICE && !b->detail[0]) || (v == SPOT_BODY_BAD && !b->bad) ||
        memchr(b->detail, '\0', sizeof b->detail) == NULL || memchr(b->event_id, '\0', sizeof b->event_id) == NULL ||
        b->time < 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size heap copy (plus the NUL the fetch adds) so ASan sees any
     * read past the end. */
    char *buf = malloc(size + 1);
    spot_body b;
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    fuzz_notice_check(spot_body_aws(buf, size, &b), &b);
    fuzz_notice_check(spot_body_aws_rebalance(buf, size, &b), &b);
    fuzz_notice_check(spot_body_gcp(buf, size, 0, &b), &b);
    fuzz_notice_check(spot_body_gcp(buf, size, 1, &b), &b);
    fuzz_notice_check(spot_body_azure(buf, size, "vm-test", &b), &b);
    fuzz_notice_check(spot_body_azure(buf, size, "", &b), &b);
    fuzz_notice_check(spot_body_alibaba(buf, size, &b), &b);
    free(buf);
    return 0;
}
