/* The metadata exchange over libcurl: one easy handle per request, plain
 * HTTP only, no proxy, no redirects, the deadline and size bounds of
 * spot/fetch.h enforced in the callbacks and by curl's own limits. */
#include "fetch.h"

#include "util/util.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *buf;
    size_t len;
    size_t head;      /* header bytes seen so far */
    int over;         /* which bound was broken: 1 head, 2 body */
} spot_fetch_sink;

static pthread_once_t spot_fetch_once = PTHREAD_ONCE_INIT;
static int spot_fetch_init_rc;

/* curl_global_init is reference-counted and (curl >= 7.84) thread-safe, so
 * the S3 client initialising it too is fine. */
static void spot_fetch_init(void)
{
    spot_fetch_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

int spot_fetch_ready(const char *provider)
{
    pthread_once(&spot_fetch_once, spot_fetch_init);
    if (spot_fetch_init_rc != 0)
        return util_fail(ST_UNAVAILABLE, "spot.provider = %s: libcurl failed to initialise; check the libcurl4 "
                         "installation or use spot.provider = file or none", provider);
    /* 7.85 brought CURLOPT_PROTOCOLS_STR, which keeps the exchange plain HTTP. */
    curl_version_info_data *vi = curl_version_info(CURLVERSION_NOW);
    if (vi->version_num < 0x075500)
        return util_fail(ST_UNAVAILABLE, "spot.provider = %s: libcurl %s is too old; install libcurl 7.85 or newer, "
                         "or use spot.provider = file or none", provider, vi->version);
    return ST_OK;
}

static size_t spot_fetch_body(char *p, size_t sz, size_t n, void *ud)
{
    spot_fetch_sink *k = ud;
    size_t add = sz * n;
    if (add > SPOT_FETCH_MAX_BODY - k->len) {
        k->over = 2;
        return 0;   /* curl ends the transfer with a write error */
    }
    memcpy(k->buf + k->len, p, add);
    k->len += add;
    k->buf[k->len] = '\0';
    return add;
}

static size_t spot_fetch_head(char *p, size_t sz, size_t n, void *ud)
{
    spot_fetch_sink *k = ud;
    size_t add = sz * n;
    /* Interim 1xx answers count too: a server sending them forever is
     * refused like one sending endless headers. */
    if (add > SPOT_FETCH_MAX_HEAD - k->head) {
        k->over = 1;
        return 0;
    }
    k->head += add;
    return add;
}

static const char *spot_fetch_why(CURLcode rc, const spot_fetch_sink *k)
{
    if (k->over == 1)
        return "headers over 16 KiB";
    if (k->over == 2 || rc == CURLE_FILESIZE_EXCEEDED)
        return "body over 64 KiB";
    if (rc == CURLE_OPERATION_TIMEDOUT)
        return "no answer before the deadline";
    return curl_easy_strerror(rc);
}

/* Everything that bounds the exchange; 0 or -1 when curl refused an option. */
static int spot_fetch_setup(CURL *h, const spot_fetch_req *req, struct curl_slist *hl, spot_fetch_sink *k)
{
    long ms = req->timeout > 0 ? (long)(req->timeout * 1000) : 1000;
    int bad = 0;
    bad |= curl_easy_setopt(h, CURLOPT_URL, req->url) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http") != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_NOPROXY, "*") != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, ms) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, ms) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)SPOT_FETCH_MAX_BODY) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, spot_fetch_body) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_WRITEDATA, k) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, spot_fetch_head) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_HEADERDATA, k) != CURLE_OK;
    if (strcmp(req->method, "GET") != 0) {
        /* PUT and POST send their (possibly empty) body in one piece. */
        const char *b = req->body ? req->body : "";
        bad |= curl_easy_setopt(h, CURLOPT_POSTFIELDS, b) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(b)) != CURLE_OK;
    }
    return bad ? -1 : 0;
}

int spot_fetch(const spot_fetch_req *req, spot_fetch_resp *r)
{
    spot_fetch_sink k = {0};
    struct curl_slist *hl = NULL;
    CURL *h = NULL;
    int rc = ST_UNAVAILABLE;
    memset(r, 0, sizeof *r);
    r->why = "out of memory";
    pthread_once(&spot_fetch_once, spot_fetch_init);
    if (spot_fetch_init_rc != 0) {
        r->why = "libcurl failed to initialise";
        return ST_UNAVAILABLE;
    }
    k.buf = malloc(SPOT_FETCH_MAX_BODY + 1);
    if (!k.buf)
        goto out;
    k.buf[0] = '\0';
    /* No "Expect: 100-continue" wait before a POST body. */
    hl = curl_slist_append(NULL, "Expect:");
    for (int i = 0; hl && i < SPOT_FETCH_MAX_HEADERS && req->headers[i]; i++) {
        struct curl_slist *more = curl_slist_append(hl, req->headers[i]);
        if (!more)
            goto out;
        hl = more;
    }
    h = curl_easy_init();
    if (!h || !hl)
        goto out;
    if (spot_fetch_setup(h, req, hl, &k) != 0) {
        r->why = "libcurl refused an option (7.85 or newer is needed)";
        goto out;
    }
    CURLcode c = curl_easy_perform(h);
    long status = 0;
    if (c == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (c != CURLE_OK || status < 100 || status > 599) {
        r->why = c == CURLE_OK ? "not an HTTP answer" : spot_fetch_why(c, &k);
        rc = c == CURLE_URL_MALFORMAT || c == CURLE_UNSUPPORTED_PROTOCOL ? ST_USAGE : ST_UNAVAILABLE;
        goto out;
    }
    r->status = (int)status;
    r->body = k.buf;
    r->body_len = k.len;
    r->why = NULL;
    k.buf = NULL;
    rc = ST_OK;
out:
    free(k.buf);
    curl_slist_free_all(hl);
    if (h)
        curl_easy_cleanup(h);
    return rc;
}

void spot_fetch_free(spot_fetch_resp *r)
{
    free(r->body);
    r->body = NULL;
    r->body_len = 0;
}
