/* The S3 client's network side: one libcurl easy handle per request over a
 * shared connection cache, SigV4 signing by libcurl itself, credentials
 * (env, file, IMDSv2) refreshed before expiry, the retry loop, and the
 * operations including the parallel multipart upload from a file range. */
#include "s3.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/util.h"

#define S3_MAX_XML (16u << 20)   /* error and list answers; a list page is ~1 MB */
#define S3_MAX_PARTS 10000       /* S3's limit on parts per upload */
#define S3_REFRESH_AHEAD 300.0   /* renew temporary credentials this long before expiry */
#define S3_CLEANUP_MS 3000L      /* a clean-up request after s3_cancel: one attempt this long */

struct s3_client {
    s3_opts o;
    s3_url u;
    char base[1200];     /* URL up to and including the bucket, no trailing '/' */
    char sigv4[128];     /* "aws:amz:REGION:s3" */
    CURLSH *share;
    pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];
    pthread_mutex_t mu;  /* creds, stats, rng */
    s3_creds cr;
    unsigned gen;        /* bumped on each credential refresh */
    s3_stats st;
    uint64_t rng;
    atomic_int cancelled; /* s3_cancel: every request ends at its next check */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_init_rc;
static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1; }

static void share_lock(CURL *h, curl_lock_data d, curl_lock_access a, void *p)
{
    s3_client *c = p;
    pthread_mutex_lock(&c->share_mu[d]);
}
static void share_unlock(CURL *h, curl_lock_data d, void *p)
{
    s3_client *c = p;
    pthread_mutex_unlock(&c->share_mu[d]);
}

/* ---- credentials ---- */

typedef struct {
    char *buf;
    size_t len, cap;
} membuf;

static size_t membuf_write(char *p, size_t sz, size_t n, void *ud)
{
    membuf *m = ud;
    size_t k = sz * n;
    if (m->len + k + 1 > m->cap)
        return 0;   /* over the bound: curl fails the transfer with a write error */
    memcpy(m->buf + m->len, p, k);
    m->len += k;
    m->buf[m->len] = 0;
    return k;
}

/* One short plain-HTTP exchange with the metadata service. Returns the HTTP
 * status (0 when nothing answered). Never through a proxy: the address is
 * link-local by design. */
static int imds_do(const char *method, const char *url, const char *header, char *out, size_t cap)
{
    membuf m = {out, 0, cap};
    out[0] = 0;
    CURL *h = curl_easy_init();
    if (!h)
        return 0;
    struct curl_slist *hl = header ? curl_slist_append(NULL, header) : NULL;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "PUT") == 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, membuf_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &m);
    long status = 0;
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    return (int)status;
}

/* IMDSv2: a session token by PUT, the role name, then the role's keys. */
static int creds_imds(const char *base, s3_creds *out)
{
    char url[1024], tok[256], hdr[512], role[256], body[16384];
    int rc = ST_UNAVAILABLE;
    if (util_fmt(url, sizeof url, "%s/latest/api/token", base) < 0)
        return ST_CONFIG;
    if (imds_do("PUT", url, "X-aws-ec2-metadata-token-ttl-seconds: 21600", tok, sizeof tok) != 200 || !tok[0])
        return rc;
    snprintf(hdr, sizeof hdr, "X-aws-ec2-metadata-token: %s", tok);
    snprintf(url, sizeof url, "%s/latest/meta-data/iam/security-credentials/", base);
    if (imds_do("GET", url, hdr, role, sizeof role) != 200)
        return rc;
    role[strcspn(role, "\r\n")] = 0;
    if (!role[0] || strchr(role, '/'))
        return rc;
    if (util_fmt(url, sizeof url, "%s/latest/meta-data/iam/security-credentials/%s", base, role) < 0)
        return ST_CONFIG;
    if (imds_do("GET", url, hdr, body, sizeof body) != 200)
        return rc;
    return s3_creds_parse_imds(body, strlen(body), out);
}

int s3_creds_load(const s3_opts *o, s3_creds *out)
{
    memset(out, 0, sizeof *out);
    const char *id = getenv("AWS_ACCESS_KEY_ID"), *sec = getenv("AWS_SECRET_ACCESS_KEY");
    if (id && *id && sec && *sec) {
        const char *tok = getenv("AWS_SESSION_TOKEN");
        if (util_fmt(out->key_id, sizeof out->key_id, "%s", id) < 0 ||
            util_fmt(out->secret, sizeof out->secret, "%s", sec) < 0 ||
            util_fmt(out->token, sizeof out->token, "%s", tok ? tok : "") < 0)
            return util_fail(ST_CONFIG, "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_SESSION_TOKEN is too long");
        snprintf(out->source, sizeof out->source, "env");
        return ST_OK;
    }
    char path[1100];
    const char *env_file = getenv("AWS_SHARED_CREDENTIALS_FILE"), *home = getenv("HOME");
    if (o->credentials_file[0])
        snprintf(path, sizeof path, "%s", o->credentials_file);
    else if (env_file && *env_file)
        snprintf(path, sizeof path, "%s", env_file);
    else
        snprintf(path, sizeof path, "%s/.aws/credentials", home ? home : "");
    const char *profile = o->profile[0] ? o->profile : getenv("AWS_PROFILE");
    if (!profile || !*profile)
        profile = "default";
    char *text = NULL;
    size_t len;
    /* No file is the usual case with an instance role: not worth a line on
     * every start and every refresh. */
    if (access(path, F_OK) == 0 && util_read_file(path, &text, &len) == ST_OK) {
        int rc = s3_creds_parse_file(text, profile, out);
        free(text);
        if (rc == ST_OK)
            return rc;
        if (rc == ST_CONFIG)
            return util_fail(ST_CONFIG, "%s: profile [%s] lacks aws_access_key_id or aws_secret_access_key; add both",
                             path, profile);
    }
    if (strcmp(o->metadata_url, "off") != 0) {
        const char *base = o->metadata_url[0] ? o->metadata_url : "http://169.254.169.254";
        if (creds_imds(base, out) == ST_OK)
            return ST_OK;
    }
    return util_fail(ST_CONFIG,
                     "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, add profile [%s] to %s, "
                     "or run on an instance with an IAM role",
                     profile, path);
}

/* Copies the current credentials, renewing them first when they expire
 * within S3_REFRESH_AHEAD or when force_gen still names the generation a
 * request was refused with. */
/* Holds c->mu across a reload (an IMDS round trip of at most a few seconds)
 * on purpose: the other part threads would need the new keys anyway. */
static int creds_current(s3_client *c, unsigned force_gen, int force, s3_creds *out, unsigned *gen)
{
    int rc = ST_OK;
    pthread_mutex_lock(&c->mu);
    int due = c->cr.expires > 0 && c->cr.expires - util_wall() < S3_REFRESH_AHEAD;
    if (due || (force && force_gen == c->gen)) {
        s3_creds fresh;
        rc = s3_creds_load(&c->o, &fresh);
        if (rc == ST_OK) {
            c->cr = fresh;
            c->gen++;
            c->st.refreshes++;
        }
    }
    *out = c->cr;
    *gen = c->gen;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ---- client ---- */

int s3_open(s3_client **cp, const s3_opts *o)
{
    *cp = NULL;
    int rc = ST_OK;
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != 0)
        return util_fail(ST_UNAVAILABLE, "libcurl failed to initialise; check the libcurl4 installation");
    curl_version_info_data *vi = curl_version_info(CURLVERSION_NOW);
    /* 7.75 brought CURLOPT_AWS_SIGV4, 7.85 CURLOPT_PROTOCOLS_STR; Debian 12 has 7.88. */
    if (vi->version_num < 0x075500)
        return util_fail(ST_UNAVAILABLE, "libcurl %s is too old (no SigV4 signing); install libcurl 7.85 or newer",
                         vi->version);
    if (o->part_bytes < 1 || o->parallel < 1 || o->retries < 0)
        return util_fail(ST_CONFIG, "s3: part size and parallel parts must be positive, retries not negative");
    s3_client *c = calloc(1, sizeof *c);
    if (!c)
        return util_fail(ST_SOFTWARE, "s3: out of memory");
    c->o = *o;
    pthread_mutex_init(&c->mu, NULL);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&c->share_mu[i], NULL);
    if ((rc = s3_url_parse(o->remote, &c->u)) != ST_OK)
        goto fail;
    const char *region = o->region;
    if (!region[0])
        region = getenv("AWS_REGION");
    if (!region || !region[0])
        region = getenv("AWS_DEFAULT_REGION");
    if (!region || !region[0])
        region = "us-east-1";
    snprintf(c->o.region, sizeof c->o.region, "%s", region);
    snprintf(c->sigv4, sizeof c->sigv4, "aws:amz:%s:s3", c->o.region);
    if (o->endpoint[0]) {
        /* Path-style for every S3-compatible service: the bucket is a path
         * segment, so no wildcard DNS or certificate is needed. */
        size_t el = strlen(o->endpoint);
        while (el > 0 && o->endpoint[el - 1] == '/')
            el--;
        if (strncmp(o->endpoint, "http://", 7) != 0 && strncmp(o->endpoint, "https://", 8) != 0) {
            rc = util_fail(ST_CONFIG, "endpoint '%s': not an http:// or https:// URL", o->endpoint);
            goto fail;
        }
        if (util_fmt(c->base, sizeof c->base, "%.*s/%s", (int)el, o->endpoint, c->u.bucket) < 0) {
            rc = util_fail(ST_CONFIG, "endpoint '%s' is too long", o->endpoint);
            goto fail;
        }
    } else if (strchr(c->u.bucket, '.')) {
        /* A dotted bucket does not match *.s3 certificates; path-style it. */
        snprintf(c->base, sizeof c->base, "https://s3.%s.amazonaws.com/%s", c->o.region, c->u.bucket);
    } else {
        snprintf(c->base, sizeof c->base, "https://%s.s3.%s.amazonaws.com", c->u.bucket, c->o.region);
    }
    if ((rc = s3_creds_load(&c->o, &c->cr)) != ST_OK)
        goto fail;
    c->share = curl_share_init();
    if (!c->share) {
        rc = util_fail(ST_SOFTWARE, "s3: curl_share_init failed");
        goto fail;
    }
    curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    c->rng = (uint64_t)(util_wall() * 1e6) ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)c;
    *cp = c;
    return ST_OK;
fail:
    s3_close(c);
    return rc;
}

void s3_close(s3_client *c)
{
    if (!c)
        return;
    if (c->share)
        curl_share_cleanup(c->share);
    pthread_mutex_destroy(&c->mu);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&c->share_mu[i]);
    memset(&c->cr, 0, sizeof c->cr);
    free(c);
}

const s3_url *s3_client_url(const s3_client *c) { return &c->u; }

void s3_get_stats(s3_client *c, s3_stats *out)
{
    pthread_mutex_lock(&c->mu);
    *out = c->st;
    pthread_mutex_unlock(&c->mu);
}

static double rng_unit(s3_client *c)
{
    pthread_mutex_lock(&c->mu);
    /* xorshift64*: jitter only needs to spread clients apart. */
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    uint64_t v = c->rng * 2685821657736338717ull;
    pthread_mutex_unlock(&c->mu);
    return (double)(v >> 11) / 9007199254740992.0;
}

/* ---- one request, with retries ---- */

typedef struct {
    const char *method;   /* GET PUT POST HEAD DELETE */
    const char *key;      /* "" = the bucket itself */
    const char *query;    /* sorted, encoded, every name with '=' (SigV4 canonical form) */
    const char *range;    /* "bytes=a-b" or NULL */
    const void *body;
    size_t body_len;
    int from_fd;          /* PUT body read from src_fd at src_off instead of body */
    int src_fd;
    uint64_t src_off;
    void *dst;            /* GET: successful body goes here, at most dst_cap bytes */
    size_t dst_cap;
    /* results */
    long status;
    membuf xml;           /* error bodies, and successful bodies when dst is NULL */
    size_t got;
    char etag[128];
    int64_t length;       /* Content-Length of the answer, -1 unknown */
    int overflow;
    /* A clean-up (AbortMultipartUpload) that still runs after s3_cancel, as
     * one short attempt: it frees what the cancelled transfer left behind. */
    int cleanup;
    int read_errno;       /* from_fd: the source file failed (-1: it ended early) */
    uint64_t read_at;
} s3_req;

typedef struct {
    s3_req *r;
    CURL *h;
    s3_client *c;
    size_t body_pos;
    int decided, to_dst;
} xfer;

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    xfer *x = ud;
    size_t k = sz * n;
    if (!x->decided) {
        long st = 0;
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &st);
        x->to_dst = x->r->dst && st >= 200 && st < 300;
        x->decided = 1;
    }
    if (x->to_dst) {
        if (x->r->got + k > x->r->dst_cap) {
            x->r->overflow = 1;
            return 0;
        }
        memcpy((char *)x->r->dst + x->r->got, p, k);
        x->r->got += k;
        return k;
    }
    return membuf_write(p, sz, n, &x->r->xml);
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    xfer *x = ud;
    size_t k = sz * n;
    if (k > 5 && strncasecmp(p, "ETag:", 5) == 0) {
        const char *v = p + 5;
        while (*v == ' ' && v < p + k)
            v++;
        size_t l = (size_t)(p + k - v);
        while (l > 0 && (v[l - 1] == '\r' || v[l - 1] == '\n' || v[l - 1] == ' '))
            l--;
        if (l < sizeof x->r->etag) {
            memcpy(x->r->etag, v, l);
            x->r->etag[l] = 0;
        }
    } else if (k > 15 && strncasecmp(p, "Content-Length:", 15) == 0) {
        x->r->length = strtoll(p + 15, NULL, 10);
    } else if (k > 5 && strncmp(p, "HTTP/", 5) == 0) {
        /* A new status line (after 100-continue or a retry): forget old values. */
        x->r->etag[0] = 0;
        x->r->length = -1;
    }
    return k;
}

/* A body from a file is read straight into curl's send buffer: no part
 * buffer to fill first, so each byte is copied once less (bench/s3.sh's
 * CPU per GB) and a part in flight costs no memory of its own. */
static size_t on_read(char *p, size_t sz, size_t n, void *ud)
{
    xfer *x = ud;
    s3_req *r = x->r;
    size_t k = sz * n, left = r->body_len - x->body_pos;
    if (k > left)
        k = left;
    if (!r->from_fd) {
        memcpy(p, (const char *)r->body + x->body_pos, k);
        x->body_pos += k;
        return k;
    }
    if (k == 0)
        return 0;
    ssize_t got;
    do
        got = pread(r->src_fd, p, k, (off_t)(r->src_off + x->body_pos));
    while (got < 0 && errno == EINTR);
    if (got <= 0) {
        r->read_errno = got < 0 ? errno : -1;
        r->read_at = r->src_off + x->body_pos;
        return CURL_READFUNC_ABORT;
    }
    x->body_pos += (size_t)got;
    return (size_t)got;
}

static int on_seek(void *ud, curl_off_t off, int origin)
{
    xfer *x = ud;
    if (origin != SEEK_SET || off < 0 || (size_t)off > x->r->body_len)
        return CURL_SEEKFUNC_CANTSEEK;
    x->body_pos = (size_t)off;
    return CURL_SEEKFUNC_OK;
}

/* Percent-encodes everything but RFC 3986 unreserved characters, and '/'
 * when keep_slash: keys in the URL path keep their slashes (what SigV4's
 * canonical URI expects for S3); query values encode them too. */
static int s3_pct_encode(const char *v, int keep_slash, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        int keep = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
                   *p == '_' || *p == '.' || *p == '~' || (keep_slash && *p == '/');
        if (o + 4 >= cap)
            return -1;
        if (keep) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = 0;
    return 0;
}

/* One attempt. Returns the CURLcode; r->status holds the HTTP status. */
/* libcurl asks this during a transfer; non-zero ends it (s3_cancel). */
static int on_progress(void *p, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    xfer *x = p;
    (void)dt, (void)dn, (void)ut, (void)un;
    return !x->r->cleanup && atomic_load(&x->c->cancelled) != 0;
}

void s3_cancel(s3_client *c) { atomic_store(&c->cancelled, 1); }

static CURLcode attempt(s3_client *c, s3_req *r, const char *url, const s3_creds *cr)
{
    CURL *h = curl_easy_init();
    if (!h)
        return CURLE_OUT_OF_MEMORY;
    xfer x = {r, h, c, 0, 0, 0};
    struct curl_slist *hl = NULL;
    char tokhdr[sizeof cr->token + 32], rangehdr[96];
    /* The payload is not hashed: TLS protects it in flight and the
     * checkpoint's own chunk checksums protect it end to end. */
    hl = curl_slist_append(hl, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
    if (cr->token[0]) {
        snprintf(tokhdr, sizeof tokhdr, "x-amz-security-token: %s", cr->token);
        hl = curl_slist_append(hl, tokhdr);
    }
    /* curl would label a POST body a form, and some servers then parse it
     * as one and lose the XML. */
    if (strcmp(r->method, "POST") == 0)
        hl = curl_slist_append(hl, "Content-Type: application/xml");
    if (r->range) {
        snprintf(rangehdr, sizeof rangehdr, "Range: %s", r->range);
        hl = curl_slist_append(hl, rangehdr);
    }
    r->status = 0;
    r->got = 0;
    r->xml.len = 0;
    if (r->xml.cap)
        r->xml.buf[0] = 0;
    r->etag[0] = 0;
    r->length = -1;
    r->overflow = 0;
    r->read_errno = 0;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_SHARE, c->share);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, c->sigv4);
    curl_easy_setopt(h, CURLOPT_USERNAME, cr->key_id);
    curl_easy_setopt(h, CURLOPT_PASSWORD, cr->secret);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    /* The body goes at once, without waiting for "100 Continue". Not by an
     * empty "Expect:" line: libcurl before 8.3 signs such a removed header
     * (SignedHeaders lists "expect") yet never sends it, and the server
     * rejects the signature. The "Expect: 100-continue" libcurl may still
     * add is unsigned, which SigV4 allows. */
    curl_easy_setopt(h, CURLOPT_EXPECT_100_TIMEOUT_MS, 0L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->o.connect_timeout * 1000));
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)(c->o.low_speed_seconds < 1 ? 1 : c->o.low_speed_seconds));
    if (r->cleanup && atomic_load(&c->cancelled))
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, S3_CLEANUP_MS);
    else if (c->o.request_timeout > 0)
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(c->o.request_timeout * 1000));
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &x);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
    if (strcmp(r->method, "PUT") == 0) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, &x);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, &x);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
    } else if (strcmp(r->method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->body ? (const char *)r->body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    } else if (strcmp(r->method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(r->method, "DELETE") == 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
    }
    CURLcode cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_off_t up = 0, down = 0;
    curl_easy_getinfo(h, CURLINFO_SIZE_UPLOAD_T, &up);
    curl_easy_getinfo(h, CURLINFO_SIZE_DOWNLOAD_T, &down);
    pthread_mutex_lock(&c->mu);
    c->st.requests++;
    c->st.bytes_up += (uint64_t)up;
    c->st.bytes_down += (uint64_t)down;
    pthread_mutex_unlock(&c->mu);
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    return cc;
}

static int is_token_problem(const char *code)
{
    return strcmp(code, "ExpiredToken") == 0 || strcmp(code, "TokenRefreshRequired") == 0 ||
           strcmp(code, "InvalidToken") == 0 || strcmp(code, "RequestExpired") == 0;
}

/* Performs r with retries: backoff with jitter on 5xx, 408, 429, timeouts and
 * dropped connections; one credential refresh on a refused token; no retry on
 * any other 4xx. The failure line names the object and what to do. */
static int s3_do(s3_client *c, s3_req *r)
{
    char ek[3 * 1024 + 8], url[sizeof c->base + sizeof ek + 2100];
    int rc = ST_OK;
    char local[512];
    if (!r->xml.cap) {
        r->xml.buf = local;
        r->xml.cap = sizeof local;
    }
    if (s3_pct_encode(r->key, 1, ek, sizeof ek) < 0 ||
        util_fmt(url, sizeof url, "%s/%s%s%s", c->base, ek, r->query ? "?" : "", r->query ? r->query : "") < 0)
        return util_fail(ST_USAGE, "s3: key '%.200s' or its query is too long", r->key);
    int refreshed = 0;
    unsigned gen = 0;
    for (int att = 0;; att++) {
        s3_creds cr;
        int cancelled = atomic_load(&c->cancelled);
        if (cancelled && !r->cleanup) {
            rc = util_fail(ST_TEMPFAIL, "s3: %s s3://%s/%s cancelled: the run is exiting", r->method, c->u.bucket, r->key);
            goto out;
        }
        rc = creds_current(c, gen, refreshed == 1, &cr, &gen);
        if (refreshed == 1)
            refreshed = 2;
        if (rc != ST_OK)
            goto out;
        CURLcode cc = attempt(c, r, url, &cr);
        int had_token = cr.token[0] != 0;
        memset(&cr, 0, sizeof cr);
        char code[128] = "", msg[256] = "";
        if (cc == CURLE_OK && r->status >= 200 && r->status < 300) {
            /* CompleteMultipartUpload can fail after its 200 header: the
             * error then arrives as the body. */
            if (!(strcmp(r->method, "POST") == 0 && r->xml.len &&
                  s3_xml_text(r->xml.buf, r->xml.len, "Code", code, sizeof code) == 0 &&
                  memmem(r->xml.buf, r->xml.len, "<Error>", 7))) {
                rc = ST_OK;
                goto out;
            }
            r->status = 500;
        }
        if (r->read_errno) {
            /* The local file, not the network: retrying cannot help. */
            rc = util_fail(ST_IOERR, "s3 upload: reading the source file at byte %" PRIu64 ": %s", r->read_at,
                           r->read_errno > 0 ? strerror(r->read_errno) : "file ends early");
            goto out;
        }
        if (r->overflow) {
            rc = util_fail(ST_DATA, "s3: GET s3://%s/%s returned more bytes than the %zu asked for; the object "
                                    "changed or the server ignored the range",
                           c->u.bucket, r->key, r->dst_cap);
            goto out;
        }
        if (cc == CURLE_OK && r->xml.len) {
            s3_xml_text(r->xml.buf, r->xml.len, "Code", code, sizeof code);
            s3_xml_text(r->xml.buf, r->xml.len, "Message", msg, sizeof msg);
        }
        int status = cc == CURLE_OK ? (int)r->status : 0;
        /* A HEAD answer has no body to name the cause: with temporary
         * credentials a refused HEAD is worth one refresh too. */
        int token_refused = is_token_problem(code) || (!code[0] && strcmp(r->method, "HEAD") == 0 && had_token);
        if ((status == 400 || status == 403) && token_refused && refreshed == 0) {
            refreshed = 1;
            pthread_mutex_lock(&c->mu);
            c->st.retries++;
            pthread_mutex_unlock(&c->mu);
            continue;
        }
        if (!s3_retryable(status) || att >= c->o.retries || (r->cleanup && atomic_load(&c->cancelled))) {
            const char *what = cc != CURLE_OK ? curl_easy_strerror(cc) : "";
            const char *hint = status == 403   ? "check the credentials and the bucket policy"
                               : status == 404 ? "check the bucket name and the key"
                               : status == 0   ? "check the endpoint and the network"
                                               : "retry later or check the service's status";
            rc = status == 404 ? ST_NOINPUT : status == 403 ? ST_CONFIG : status == 0 || status >= 500 ? ST_UNAVAILABLE : ST_DATA;
            if (status == 404 && strcmp(r->method, "HEAD") == 0) /* absence is an answer, not an error */
                goto out;
            util_fail(rc, "s3: %s s3://%s/%s: %s%s%d %s%s%s after %d attempt%s; %s", r->method, c->u.bucket, r->key,
                      what, *what ? ", HTTP " : "HTTP ", status, code, *msg ? ": " : "", msg, att + 1,
                      att ? "s" : "", hint);
            goto out;
        }
        double wait = s3_backoff(att, c->o.backoff_base, c->o.backoff_max, rng_unit(c));
        pthread_mutex_lock(&c->mu);
        c->st.retries++;
        pthread_mutex_unlock(&c->mu);
        /* In slices, so a cancel does not wait out a long backoff. */
        for (double left = wait; left > 0 && !atomic_load(&c->cancelled); left -= 0.1) {
            double d = left < 0.1 ? left : 0.1;
            struct timespec ts = {0, (long)(d * 1e9)};
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            }
        }
    }
out:
    if (r->xml.buf == local) {
        r->xml.buf = NULL;
        r->xml.cap = 0;
    }
    return rc;
}

/* ---- operations ---- */

int s3_create_bucket(s3_client *c)
{
    s3_req r = {.method = "PUT", .key = "", .body = "", .body_len = 0};
    return s3_do(c, &r);
}

int s3_put_object(s3_client *c, const char *key, const void *buf, size_t len)
{
    s3_req r = {.method = "PUT", .key = key, .body = buf, .body_len = len};
    return s3_do(c, &r);
}

int s3_get_range(s3_client *c, const char *key, uint64_t off, size_t len, void *buf)
{
    if (len == 0)
        return ST_OK;
    char range[96];
    snprintf(range, sizeof range, "bytes=%" PRIu64 "-%" PRIu64, off, off + len - 1);
    s3_req r = {.method = "GET", .key = key, .range = range, .dst = buf, .dst_cap = len};
    int rc = s3_do(c, &r);
    if (rc == ST_OK && (r.got != len || (r.status == 200 && off != 0)))
        rc = util_fail(ST_DATA, "s3: GET s3://%s/%s bytes %" PRIu64 "+%zu: got %zu bytes (HTTP %ld); the object is "
                                "shorter than the manifest says; use an older checkpoint",
                       c->u.bucket, key, off, len, r.got, r.status);
    return rc;
}

int s3_head_object(s3_client *c, const char *key, s3_object *obj)
{
    s3_req r = {.method = "HEAD", .key = key};
    memset(obj, 0, sizeof *obj);
    int rc = s3_do(c, &r);
    if (rc != ST_OK)
        return rc;
    if (r.status == 404)
        return ST_NOINPUT;
    snprintf(obj->key, sizeof obj->key, "%s", key);
    snprintf(obj->etag, sizeof obj->etag, "%s", r.etag);
    obj->size = r.length > 0 ? (uint64_t)r.length : 0;
    return ST_OK;
}

int s3_delete_object(s3_client *c, const char *key)
{
    s3_req r = {.method = "DELETE", .key = key};
    return s3_do(c, &r);
}

int s3_list_objects(s3_client *c, const char *prefix, s3_list_fn fn, void *ctx)
{
    int rc = ST_OK;
    char *buf = malloc(S3_MAX_XML);
    char tok[1024] = "", etok[3200], epre[3200], q[6600];
    if (!buf)
        return util_fail(ST_SOFTWARE, "s3: out of memory for a list page");
    if (s3_pct_encode(prefix, 0, epre, sizeof epre) < 0) {
        rc = util_fail(ST_USAGE, "s3: list prefix too long");
        goto out;
    }
    for (;;) {
        if (s3_pct_encode(tok, 0, etok, sizeof etok) < 0) {
            rc = util_fail(ST_DATA, "s3: continuation token too long");
            goto out;
        }
        /* Parameters in byte order of their names: SigV4 signs them so. */
        if (tok[0])
            snprintf(q, sizeof q, "continuation-token=%s&list-type=2&prefix=%s", etok, epre);
        else
            snprintf(q, sizeof q, "list-type=2&prefix=%s", epre);
        s3_req r = {.method = "GET", .key = "", .query = q, .xml = {buf, 0, S3_MAX_XML}};
        if ((rc = s3_do(c, &r)) != ST_OK)
            goto out;
        int more = 0;
        if ((rc = s3_xml_list_page(buf, r.xml.len, fn, ctx, &more, tok, sizeof tok)) != ST_OK)
            goto out;
        if (!more)
            break;
    }
out:
    free(buf);
    return rc;
}

int s3_mpu_create(s3_client *c, const char *key, char *upload_id, size_t cap)
{
    char buf[4096];
    s3_req r = {.method = "POST", .key = key, .query = "uploads=", .xml = {buf, 0, sizeof buf}};
    int rc = s3_do(c, &r);
    if (rc != ST_OK)
        return rc;
    if (s3_xml_text(buf, r.xml.len, "UploadId", upload_id, cap) != 0 || !upload_id[0])
        return util_fail(ST_DATA, "s3: CreateMultipartUpload s3://%s/%s: answer without an UploadId", c->u.bucket,
                         key);
    return ST_OK;
}

/* One UploadPart whose body is r's (a buffer or a file range). */
static int s3_part_do(s3_client *c, s3_req *src, const char *upload_id, int part_no, char *etag, size_t cap)
{
    char q[1200], eid[1100];
    const char *key = src->key;
    if (s3_pct_encode(upload_id, 0, eid, sizeof eid) < 0)
        return util_fail(ST_DATA, "s3: upload id too long");
    snprintf(q, sizeof q, "partNumber=%d&uploadId=%s", part_no, eid);
    s3_req r = *src;
    r.method = "PUT";
    r.query = q;
    int rc = s3_do(c, &r);
    if (rc != ST_OK)
        return rc;
    if (!r.etag[0] || util_fmt(etag, cap, "%s", r.etag) < 0)
        return util_fail(ST_DATA, "s3: UploadPart %d of s3://%s/%s: answer without an ETag", part_no, c->u.bucket, key);
    return ST_OK;
}

int s3_mpu_part(s3_client *c, const char *key, const char *upload_id, int part_no, const void *buf, size_t len,
                char *etag, size_t cap)
{
    s3_req r = {.key = key, .body = buf, .body_len = len};
    return s3_part_do(c, &r, upload_id, part_no, etag, cap);
}

int s3_mpu_complete(s3_client *c, const char *key, const char *upload_id, char (*etags)[128], int n_parts)
{
    int rc = ST_OK;
    size_t cap = 64 + (size_t)n_parts * 200;
    char *body = malloc(cap), q[1200], eid[1100], resp[4096];
    if (!body)
        return util_fail(ST_SOFTWARE, "s3: out of memory");
    size_t o = (size_t)snprintf(body, cap, "<CompleteMultipartUpload>");
    for (int i = 0; i < n_parts; i++)
        o += (size_t)snprintf(body + o, cap - o, "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>", i + 1,
                              etags[i]);
    o += (size_t)snprintf(body + o, cap - o, "</CompleteMultipartUpload>");
    if (s3_pct_encode(upload_id, 0, eid, sizeof eid) < 0) {
        rc = util_fail(ST_DATA, "s3: upload id too long");
        goto out;
    }
    snprintf(q, sizeof q, "uploadId=%s", eid);
    s3_req r = {.method = "POST", .key = key, .query = q, .body = body, .body_len = o, .xml = {resp, 0, sizeof resp}};
    rc = s3_do(c, &r);
out:
    free(body);
    return rc;
}

int s3_mpu_abort(s3_client *c, const char *key, const char *upload_id)
{
    char q[1200], eid[1100];
    if (s3_pct_encode(upload_id, 0, eid, sizeof eid) < 0)
        return util_fail(ST_DATA, "s3: upload id too long");
    snprintf(q, sizeof q, "uploadId=%s", eid);
    s3_req r = {.method = "DELETE", .key = key, .query = q, .cleanup = 1};
    return s3_do(c, &r);
}

/* After a failed or cancelled multipart upload: aborts it, which frees its
 * parts; no object existed under this upload, so nothing a reader could use
 * is removed. Best effort: a failed abort is logged (the parts then wait for
 * the bucket's lifecycle rule), and the upload's own failure stays the
 * thread's last error for the caller to report. */
static void s3_mpu_cleanup(s3_client *c, const char *key, const char *upload_id)
{
    char why[1024];
    snprintf(why, sizeof why, "%s", util_last_error());
    if (s3_mpu_abort(c, key, upload_id) != ST_OK)
        util_log("the unfinished multipart upload of s3://%s/%s stays open (its parts are billed until a lifecycle "
                 "rule for incomplete multipart uploads removes them)", c->u.bucket, key);
    util_keep_error(why);
}

typedef struct {
    s3_client *c;
    const char *key;
    char upload_id[1024];
    int fd;
    uint64_t off, len;
    int n_parts, next, rc;
    char (*etags)[128];
    char why[1024];      /* the first failing worker's line (util_last_error is per thread) */
    pthread_mutex_t mu;
} mpu_job;

/* A part worker: takes the next part number until none is left or another
 * worker failed, and sends it from the file. */
static void *mpu_worker(void *p)
{
    mpu_job *j = p;
    size_t pb = j->c->o.part_bytes;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        int part = j->rc == ST_OK && j->next < j->n_parts ? ++j->next : 0;
        pthread_mutex_unlock(&j->mu);
        if (!part)
            break;
        uint64_t po = (uint64_t)(part - 1) * pb;
        s3_req r = {.key = j->key, .from_fd = 1, .src_fd = j->fd, .src_off = j->off + po,
                    .body_len = (size_t)(j->len - po < pb ? j->len - po : pb)};
        int rc = s3_part_do(j->c, &r, j->upload_id, part, j->etags[part - 1], sizeof j->etags[0]);
        if (rc != ST_OK) {
            pthread_mutex_lock(&j->mu);
            if (j->rc == ST_OK) {
                j->rc = rc;
                snprintf(j->why, sizeof j->why, "%s", util_last_error());
            }
            pthread_mutex_unlock(&j->mu);
            break;
        }
    }
    return NULL;
}

int s3_upload_fd(s3_client *c, const char *key, int fd, uint64_t off, uint64_t len)
{
    int rc = ST_OK;
    size_t pb = c->o.part_bytes;
    if (len <= pb) {
        s3_req r = {.method = "PUT", .key = key, .from_fd = 1, .src_fd = fd, .src_off = off, .body_len = (size_t)len};
        return s3_do(c, &r);
    }
    uint64_t n = (len + pb - 1) / pb;
    if (n > S3_MAX_PARTS)
        return util_fail(ST_CONFIG, "s3 upload of s3://%s/%s: %" PRIu64 " parts exceed S3's %d; raise the part size",
                         c->u.bucket, key, n, S3_MAX_PARTS);
    mpu_job j = {.c = c, .key = key, .fd = fd, .off = off, .len = len, .n_parts = (int)n};
    pthread_mutex_init(&j.mu, NULL);
    pthread_t th[64];
    int nt = c->o.parallel < (int)n ? c->o.parallel : (int)n, started = 0;
    if (nt > 64)
        nt = 64;
    j.etags = calloc(n, sizeof *j.etags);
    if (!j.etags) {
        rc = util_fail(ST_SOFTWARE, "s3 upload: out of memory");
        goto out;
    }
    if ((rc = s3_mpu_create(c, key, j.upload_id, sizeof j.upload_id)) != ST_OK)
        goto out;
    for (; started < nt; started++)
        if (pthread_create(&th[started], NULL, mpu_worker, &j) != 0)
            break;
    if (started == 0)
        j.rc = util_fail(ST_SOFTWARE, "s3 upload: cannot start a part thread");
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    rc = j.rc;
    if (rc != ST_OK)
        util_keep_error(j.why[0] ? j.why : util_last_error());
    if (rc == ST_OK)
        rc = s3_mpu_complete(c, key, j.upload_id, j.etags, j.n_parts);
    if (rc != ST_OK)
        s3_mpu_cleanup(c, key, j.upload_id);
out:
    free(j.etags);
    pthread_mutex_destroy(&j.mu);
    return rc;
}
