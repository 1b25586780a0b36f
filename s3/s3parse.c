/* The S3 client's pure parts, with no network: default options, s3:// URLs, checkpoint object
 * keys, the credentials file (through inih) and IMDS JSON, the retry schedule, and the XML
 * answers (error, multipart, ListObjectsV2). Kept apart so it can be fuzzed. */
#include "s3.h"

#include <ctype.h>
#include <ini.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The longest credentials-file line read whole: a session token (up to
 * s3_creds.token) with its key, blanks and line end. */
#define S3_INI_MAX_LINE 4400

#include "util/util.h"

void s3_opts_default(s3_opts *o)
{
    memset(o, 0, sizeof *o);
    o->connect_timeout = 10;
    o->low_speed_seconds = 30;
    o->request_timeout = 0;
    o->retries = 8;
    o->backoff_base = 0.2;
    o->backoff_max = 20;
    o->part_bytes = 16u << 20;
    o->parallel = 4;
}

int s3_url_parse(const char *url, s3_url *out)
{
    memset(out, 0, sizeof *out);
    if (strncmp(url, "s3://", 5) != 0)
        return util_fail(ST_CONFIG, "remote '%s': not an s3:// URL; write s3://BUCKET/PREFIX", url);
    const char *b = url + 5, *slash = strchr(b, '/');
    size_t bl = slash ? (size_t)(slash - b) : strlen(b);
    /* S3's bucket rules: 3-63 of lowercase letters, digits, '.', '-', starting
     * and ending with a letter or digit. Anything else would be sent in a
     * path and fail later with a less clear answer. */
    if (bl < 3 || bl > 63)
        return util_fail(ST_CONFIG, "remote '%s': bucket name must be 3 to 63 characters", url);
    for (size_t i = 0; i < bl; i++) {
        char ch = b[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '-';
        if (!ok || ((i == 0 || i == bl - 1) && (ch == '.' || ch == '-')))
            return util_fail(ST_CONFIG,
                             "remote '%s': bucket may hold only a-z, 0-9, '.', '-' and must start and "
                             "end with a letter or digit",
                             url);
    }
    memcpy(out->bucket, b, bl);
    const char *p = slash ? slash + 1 : "";
    while (*p == '/')
        p++;
    size_t pl = strlen(p);
    while (pl > 0 && p[pl - 1] == '/')
        pl--;
    if (pl >= sizeof out->prefix)
        return util_fail(ST_CONFIG, "remote '%s': prefix longer than %zu bytes", url, sizeof out->prefix - 1);
    for (size_t i = 0; i < pl; i++) {
        unsigned char ch = (unsigned char)p[i];
        /* Control bytes and "//" make keys that tools show differently from
         * what was stored; refuse them up front. */
        if (ch < 0x20 || ch == 0x7f || (ch == '/' && p[i + 1] == '/'))
            return util_fail(ST_CONFIG, "remote '%s': prefix has a control byte or an empty path segment", url);
    }
    memcpy(out->prefix, p, pl);
    return ST_OK;
}

int s3_ckpt_key(const s3_url *u, int64_t step, const char *name, char *out, size_t cap)
{
    if (step < 0)
        return -1;
    return util_fmt(out, cap, "%s%sstep-%08" PRId64 "/%s", u->prefix, u->prefix[0] ? "/" : "", step, name) < 0
               ? -1
               : 0;
}

/* inih's reader for the shared credentials file and ~/.aws/config. */
typedef struct {
    const char *profile;
    s3_creds *out;
    int found;
} s3_ini;

/* The section's profile name: "[name]" in the credentials file, "[profile
 * name]" in ~/.aws/config, blanks around either ignored; 1 when it is ours. */
static int s3_ini_section_is(const char *section, const char *profile)
{
    const char *b = section, *e;
    while (*b == ' ' || *b == '\t')
        b++;
    if (strncmp(b, "profile ", 8) == 0 || strncmp(b, "profile\t", 8) == 0)
        for (b += 8; *b == ' ' || *b == '\t';)
            b++;
    e = b + strlen(b);
    while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    return (size_t)(e - b) == strlen(profile) && strncmp(b, profile, (size_t)(e - b)) == 0;
}

static int s3_ini_handler(void *user, const char *section, const char *name, const char *value)
{
    s3_ini *st = user;
    if (!s3_ini_section_is(section, st->profile))
        return 1;
    st->found = 1;
    /* A value that does not fit leaves the field empty: refused as missing. */
    if (strcasecmp(name, "aws_access_key_id") == 0)
        (void)util_fmt(st->out->key_id, sizeof st->out->key_id, "%s", value);
    else if (strcasecmp(name, "aws_secret_access_key") == 0)
        (void)util_fmt(st->out->secret, sizeof st->out->secret, "%s", value);
    else if (strcasecmp(name, "aws_session_token") == 0)
        (void)util_fmt(st->out->token, sizeof st->out->token, "%s", value);
    return 1;
}

/* inih splits lines longer than ini_max_line (200 by default); a session
 * token alone is often over 1000 bytes. A larger buffer changes nothing for
 * the other INI readers, which refuse long lines themselves. */
static void s3_ini_widen(void)
{
    if (ini_max_line < S3_INI_MAX_LINE)
        ini_max_line = S3_INI_MAX_LINE;
}

int s3_creds_parse_file(const char *text, const char *profile, s3_creds *out)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    s3_ini st = {profile, out, 0};
    memset(out, 0, sizeof *out);
    pthread_once(&once, s3_ini_widen);
    /* Lines inih cannot read (no '=', a stray word) are skipped, as the
     * AWS tools skip them; a negative answer is out of memory. */
    if (ini_parse_string(text, s3_ini_handler, &st) < 0)
        return util_fail(ST_SOFTWARE, "out of memory reading the AWS credentials file");
    if (!st.found)
        return ST_NOINPUT;
    if (!out->key_id[0] || !out->secret[0])
        return ST_CONFIG;
    snprintf(out->source, sizeof out->source, "file");
    return ST_OK;
}

int s3_creds_parse_imds(const char *json, size_t len, s3_creds *out)
{
    memset(out, 0, sizeof *out);
    int rc = ST_DATA;
    struct json_tokener *tok = json_tokener_new();
    json_object *root = tok ? json_tokener_parse_ex(tok, json, (int)(len > INT32_MAX ? INT32_MAX : len)) : NULL;
    json_object *v;
    if (!root || !json_object_is_type(root, json_type_object))
        goto out;
    if (json_object_object_get_ex(root, "Code", &v) && json_object_is_type(v, json_type_string) &&
        strcmp(json_object_get_string(v), "Success") != 0)
        goto out;
    const char *names[3] = {"AccessKeyId", "SecretAccessKey", "Token"};
    char *dst[3] = {out->key_id, out->secret, out->token};
    size_t caps[3] = {sizeof out->key_id, sizeof out->secret, sizeof out->token};
    for (int i = 0; i < 3; i++) {
        if (!json_object_object_get_ex(root, names[i], &v) || !json_object_is_type(v, json_type_string))
            goto out;
        if (util_fmt(dst[i], caps[i], "%s", json_object_get_string(v)) < 0 || !dst[i][0])
            goto out;
    }
    if (!json_object_object_get_ex(root, "Expiration", &v) || !json_object_is_type(v, json_type_string) ||
        util_parse_time(json_object_get_string(v), &out->expires) != 0)
        goto out;
    snprintf(out->source, sizeof out->source, "imds");
    rc = ST_OK;
out:
    if (root)
        json_object_put(root);
    if (tok)
        json_tokener_free(tok);
    return rc;
}

double s3_backoff(int attempt, double base, double max, double u)
{
    if (attempt < 0)
        attempt = 0;
    if (attempt > 30)
        attempt = 30;
    double cap = base * ldexp(1.0, attempt);
    if (cap > max)
        cap = max;
    if (u < 0)
        u = 0;
    if (u >= 1)
        u = 0.999999;
    return cap / 2 + u * cap / 2;
}

int s3_retryable(int http_status)
{
    return http_status == 0 || http_status == 408 || http_status == 429 || (http_status >= 500 && http_status <= 599);
}

/* Finds <name> (exactly that element: not <nameX>) in [from, len); sets the
 * content span [*cb, *ce) and the index after </name>. 0 or -1. A self-closed
 * <name/> has empty content. */
static int xml_find(const char *x, size_t len, size_t from, const char *name, size_t *cb, size_t *ce,
                    size_t *after)
{
    size_t nl = strlen(name);
    for (size_t i = from; i + nl + 2 <= len; i++) {
        if (x[i] != '<' || memcmp(x + i + 1, name, nl) != 0)
            continue;
        size_t j = i + 1 + nl;
        if (j < len && x[j] == '/' && j + 1 < len && x[j + 1] == '>') {
            *cb = *ce = j;
            *after = j + 2;
            return 0;
        }
        if (j >= len || x[j] != '>')
            continue;
        size_t b = j + 1;
        for (size_t k = b; k + nl + 3 <= len; k++) {
            if (x[k] == '<' && x[k + 1] == '/' && memcmp(x + k + 2, name, nl) == 0 && x[k + 2 + nl] == '>') {
                *cb = b;
                *ce = k;
                *after = k + 3 + nl;
                return 0;
            }
        }
        return -1;
    }
    return -1;
}

/* Entity-decodes [b,e) into out (the five named entities and &#N; / &#xN;
 * for ASCII; anything else is kept literally). -1 when it does not fit. */
static int xml_decode(const char *x, size_t b, size_t e, char *out, size_t cap)
{
    static const struct {
        const char *ent;
        char ch;
    } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    size_t o = 0;
    for (size_t i = b; i < e;) {
        char ch = x[i];
        size_t adv = 1;
        if (ch == '&') {
            for (size_t k = 0; k < sizeof ents / sizeof ents[0]; k++) {
                size_t l = strlen(ents[k].ent);
                if (e - i >= l && memcmp(x + i, ents[k].ent, l) == 0) {
                    ch = ents[k].ch;
                    adv = l;
                    break;
                }
            }
            if (adv == 1 && e - i >= 4 && x[i + 1] == '#') {
                int hex = x[i + 2] == 'x';
                size_t k = i + 2 + (size_t)hex;
                unsigned v = 0;
                size_t digits = 0;
                while (k < e && digits < 6 && isxdigit((unsigned char)x[k]) && (hex || isdigit((unsigned char)x[k]))) {
                    v = v * (hex ? 16u : 10u) +
                        (unsigned)(isdigit((unsigned char)x[k]) ? x[k] - '0' : (tolower((unsigned char)x[k]) - 'a' + 10));
                    k++;
                    digits++;
                }
                if (digits > 0 && k < e && x[k] == ';' && v > 0 && v < 0x80) {
                    ch = (char)v;
                    adv = k + 1 - i;
                }
            }
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = ch;
        i += adv;
    }
    out[o] = 0;
    return 0;
}

int s3_xml_text(const char *xml, size_t len, const char *name, char *out, size_t cap)
{
    size_t b, e, after;
    if (cap == 0 || xml_find(xml, len, 0, name, &b, &e, &after) != 0)
        return -1;
    return xml_decode(xml, b, e, out, cap);
}

int s3_xml_list_page(const char *xml, size_t len, s3_list_fn fn, void *ctx, int *truncated,
                     char *next_token, size_t cap)
{
    char flag[16];
    *truncated = s3_xml_text(xml, len, "IsTruncated", flag, sizeof flag) == 0 && strcmp(flag, "true") == 0;
    if (cap)
        next_token[0] = 0;
    if (*truncated && s3_xml_text(xml, len, "NextContinuationToken", next_token, cap) != 0)
        return util_fail(ST_DATA, "S3 list answer is truncated but carries no usable NextContinuationToken");
    if (memmem(xml, len, "ListBucketResult", 16) == NULL)
        return util_fail(ST_DATA, "S3 list answer is not a ListBucketResult");
    size_t pos = 0, b, e, after;
    while (xml_find(xml, len, pos, "Contents", &b, &e, &after) == 0) {
        s3_object o;
        memset(&o, 0, sizeof o);
        char size[32];
        const char *c = xml + b;
        size_t cl = e - b;
        int64_t sz;
        if (s3_xml_text(c, cl, "Key", o.key, sizeof o.key) != 0 ||
            s3_xml_text(c, cl, "Size", size, sizeof size) != 0 || util_parse_i64(size, &sz) != 0 || sz < 0)
            return util_fail(ST_DATA, "S3 list answer has an entry without a usable Key and Size");
        o.size = (uint64_t)sz;
        if (s3_xml_text(c, cl, "ETag", o.etag, sizeof o.etag) != 0)
            o.etag[0] = 0;
        int r = fn(ctx, &o);
        if (r)
            return r;
        pos = after;
    }
    return ST_OK;
}
