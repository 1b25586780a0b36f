/* libFuzzer target for the S3 client's parsers of untrusted answers: the
 * XML of error and ListObjectsV2 responses, the IMDS credentials JSON and
 * the credentials file. Run by `make fuzz`.
 * fuzz-sources: s3/s3parse.c util/util.c
 * module: s3
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "s3/s3.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_obj(void *ctx, const s3_object *o)
{
    size_t *n = ctx;
    *n += strlen(o->key) + o->size % 7;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    util_quiet = 1;
    const char *x = (const char *)data;
    char out[256], tok[1024];
    int more;
    size_t n = 0;
    s3_xml_text(x, size, "Code", out, sizeof out);
    s3_xml_text(x, size, "Message", out, 8);
    s3_xml_list_page(x, size, on_obj, &n, &more, tok, sizeof tok);
    s3_creds c;
    s3_creds_parse_imds(x, size, &c);
    char *z = malloc(size + 1);
    if (z) {
        memcpy(z, data, size);
        z[size] = 0;
        s3_creds_parse_file(z, "default", &c);
        s3_url u;
        s3_url_parse(z, &u);
        free(z);
    }
    return 0;
}
