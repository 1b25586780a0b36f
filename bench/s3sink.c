/* A fast in-memory S3 subset on 127.0.0.1 for bench/s3.sh, so the client's
 * own cost is measured rather than moto's: PUT bucket/object/part, multipart
 * create/complete/abort, HEAD, ranged GET, DELETE, ListObjectsV2 (one page).
 * No auth, no checksums, one thread per connection; not for real data.
 * Optionally a real object store's first-byte latency (bench/s3lat.sh):
 * every request waits DELAY ms plus up to JITTER ms (a fixed pseudo-random
 * sequence), and every TAIL_EVERY-th request TAIL ms instead (the long tail).
 *   s3sink [PORT [DELAY JITTER [TAIL_EVERY TAIL]]]
 * prints the port it listens on, then serves until killed. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SINK_HDR_MAX 16384
#define SINK_MAX_PARTS 10000

typedef struct sink_obj {
    char *key;              /* "bucket/key", decoded */
    char *data;
    size_t len;
    struct sink_obj *next;
} sink_obj;

typedef struct sink_upload {
    unsigned id;
    char *key;
    char **part;            /* index = part number - 1 */
    size_t *plen;
    struct sink_upload *next;
} sink_upload;

static pthread_mutex_t sink_mu = PTHREAD_MUTEX_INITIALIZER;
static sink_obj *sink_objs;
static sink_upload *sink_ups;
static unsigned sink_next_id = 1;
static long sink_delay_ms, sink_jitter_ms, sink_tail_every, sink_tail_ms;
static uint64_t sink_served;   /* requests so far, under sink_mu: picks the delay */

typedef struct {
    char method[16];
    char path[4096];        /* decoded, without the leading '/' */
    char query[4096];       /* raw */
    size_t clen;
    int has_range, expect, close_after, chunked;
    uint64_t r0, r1;        /* inclusive; r1 = UINT64_MAX: to the end */
} sink_req;

static int sink_hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes [s, s+n) into out (cap bytes); -1 when it does not fit. */
static int sink_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%' && i + 2 < n && sink_hex(s[i + 1]) >= 0 && sink_hex(s[i + 2]) >= 0) {
            c = sink_hex(s[i + 1]) * 16 + sink_hex(s[i + 2]);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = 0;
    return 0;
}

/* The decoded value of query parameter name ("" present without value);
 * 0 when present. */
static int sink_param(const char *q, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *p = q; *p;) {
        const char *e = strchr(p, '&');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l >= nl && strncmp(p, name, nl) == 0 && (l == nl || p[nl] == '=')) {
            const char *v = l == nl ? p + l : p + nl + 1;
            return sink_decode(v, (size_t)(p + l - v), out, cap);
        }
        p += l;
        if (*p == '&')
            p++;
    }
    return -1;
}

static int sink_send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int sink_reply(int fd, int status, const char *extra, const char *body, size_t blen)
{
    char h[1024];
    const char *why = status == 200 ? "OK" : status == 204 ? "No Content" : status == 206 ? "Partial Content"
                    : status == 404 ? "Not Found" : status == 416 ? "Range Not Satisfiable" : "Error";
    int n = snprintf(h, sizeof h, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s\r\n", status, why, blen,
                     extra ? extra : "");
    if (sink_send_all(fd, h, (size_t)n) != 0)
        return -1;
    return blen ? sink_send_all(fd, body, blen) : 0;
}

static int sink_error(int fd, int status, const char *code)
{
    char b[256];
    int n = snprintf(b, sizeof b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code>"
                                  "<Message>%s</Message></Error>", code, code);
    return sink_reply(fd, status, "Content-Type: application/xml\r\n", b, (size_t)n);
}

/* Reads the head of one request; leftover body bytes stay in buf[*used..*have). */
static int sink_read_head(int fd, char *buf, size_t *have, size_t *used, sink_req *r)
{
    char *end = NULL;
    for (;;) {
        buf[*have] = 0;
        if ((end = strstr(buf, "\r\n\r\n")))
            break;
        if (*have >= SINK_HDR_MAX - 1)
            return -1;
        ssize_t k = recv(fd, buf + *have, SINK_HDR_MAX - 1 - *have, 0);
        if (k <= 0)
            return -1;
        *have += (size_t)k;
    }
    *used = (size_t)(end + 4 - buf);
    memset(r, 0, sizeof *r);
    char target[8192];
    if (sscanf(buf, "%15s %8191s", r->method, target) != 2)
        return -1;
    char *q = strchr(target, '?');
    if (q) {
        *q++ = 0;
        snprintf(r->query, sizeof r->query, "%s", q);
    }
    const char *t = target[0] == '/' ? target + 1 : target;
    if (sink_decode(t, strlen(t), r->path, sizeof r->path) != 0)
        return -1;
    for (char *line = strstr(buf, "\r\n") + 2; line < end; line = strstr(line, "\r\n") + 2) {
        char *eol = strstr(line, "\r\n");
        *eol = 0;   /* restored below: the next search needs the CRLF */
        if (strncasecmp(line, "Content-Length:", 15) == 0)
            r->clen = strtoull(line + 15, NULL, 10);
        else if (strncasecmp(line, "Expect:", 7) == 0 && strstr(line, "100-continue"))
            r->expect = 1;
        else if (strncasecmp(line, "Connection:", 11) == 0 && strncasecmp(line + 11, " close", 6) == 0)
            r->close_after = 1;
        else if (strncasecmp(line, "Transfer-Encoding:", 18) == 0)
            r->chunked = 1;
        else if (strncasecmp(line, "Range:", 6) == 0) {
            unsigned long long a = 0, b = 0;
            int n = sscanf(line + 6, " bytes=%llu-%llu", &a, &b);
            if (n >= 1) {
                r->has_range = 1;
                r->r0 = a;
                r->r1 = n == 2 ? b : UINT64_MAX;
            }
        }
        *eol = '\r';
    }
    return 0;
}

/* The request body, malloc'ed (NULL and 0 when empty); receives straight
 * into it, so the only copy is the kernel's. */
static int sink_read_body(int fd, char *buf, size_t *have, size_t *used, const sink_req *r, char **out)
{
    *out = NULL;
    if (r->expect && sink_send_all(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25) != 0)
        return -1;
    if (!r->clen)
        return 0;
    char *b = malloc(r->clen);
    if (!b)
        return -1;
    size_t got = *have - *used;
    if (got > r->clen)
        got = r->clen;
    memcpy(b, buf + *used, got);
    *used += got;
    while (got < r->clen) {
        ssize_t k = recv(fd, b + got, r->clen - got, 0);
        if (k <= 0) {
            free(b);
            return -1;
        }
        got += (size_t)k;
    }
    *out = b;
    return 0;
}

/* Under sink_mu. */
static sink_obj *sink_find(const char *key)
{
    for (sink_obj *o = sink_objs; o; o = o->next)
        if (strcmp(o->key, key) == 0)
            return o;
    return NULL;
}

static void sink_store(const char *key, char *data, size_t len)
{
    pthread_mutex_lock(&sink_mu);
    sink_obj *o = sink_find(key);
    if (!o && (o = calloc(1, sizeof *o)) && (o->key = strdup(key))) {
        o->next = sink_objs;
        sink_objs = o;
    } else if (o) {
        free(o->data);
    }
    if (o) {
        o->data = data;
        o->len = len;
    } else {
        free(data);
    }
    pthread_mutex_unlock(&sink_mu);
}

/* Under sink_mu. */
static sink_upload *sink_find_upload(const char *q, int unlink)
{
    char id[32];
    if (sink_param(q, "uploadId", id, sizeof id) != 0)
        return NULL;
    unsigned v = (unsigned)strtoul(id, NULL, 10);
    for (sink_upload **p = &sink_ups; *p; p = &(*p)->next)
        if ((*p)->id == v) {
            sink_upload *u = *p;
            if (unlink)
                *p = u->next;
            return u;
        }
    return NULL;
}

static void sink_free_upload(sink_upload *u)
{
    for (int i = 0; i < SINK_MAX_PARTS; i++)
        free(u->part[i]);
    free(u->part);
    free(u->plen);
    free(u->key);
    free(u);
}

static int sink_list(int fd, const char *bucket, const char *q)
{
    char prefix[2048] = "";
    sink_param(q, "prefix", prefix, sizeof prefix);
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    if (!b)
        return -1;
    n += (size_t)snprintf(b, cap, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult><Name>%s</Name>"
                                  "<Prefix>%s</Prefix><IsTruncated>false</IsTruncated>", bucket, prefix);
    pthread_mutex_lock(&sink_mu);
    size_t bl = strlen(bucket);
    for (sink_obj *o = sink_objs; o; o = o->next) {
        const char *k = o->key + bl + 1;
        if (strncmp(o->key, bucket, bl) != 0 || o->key[bl] != '/' || strncmp(k, prefix, strlen(prefix)) != 0)
            continue;
        if (n + strlen(k) + 256 > cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb)
                break;
            b = nb;
        }
        n += (size_t)snprintf(b + n, cap - n, "<Contents><Key>%s</Key><Size>%zu</Size><ETag>\"e%zu\"</ETag>"
                                              "</Contents>", k, o->len, o->len);
    }
    pthread_mutex_unlock(&sink_mu);
    n += (size_t)snprintf(b + n, cap - n, "</ListBucketResult>");
    int rc = sink_reply(fd, 200, "Content-Type: application/xml\r\n", b, n);
    free(b);
    return rc;
}

static int sink_get(int fd, const sink_req *r, int head)
{
    pthread_mutex_lock(&sink_mu);
    sink_obj *o = sink_find(r->path);
    /* Sent outside the lock: the bench never overwrites an object while it
     * reads it, and a deleted one is unlinked but kept. */
    const char *data = o ? o->data : NULL;
    size_t len = o ? o->len : 0;
    pthread_mutex_unlock(&sink_mu);
    if (!o)
        return head ? sink_reply(fd, 404, NULL, NULL, 0) : sink_error(fd, 404, "NoSuchKey");
    uint64_t a = 0, b = len ? len - 1 : 0;
    int status = 200;
    char extra[256];
    if (r->has_range) {
        if (r->r0 >= len)
            return sink_error(fd, 416, "InvalidRange");
        a = r->r0;
        b = r->r1 < len ? r->r1 : len - 1;
        status = 206;
    }
    size_t n = len ? (size_t)(b - a + 1) : 0;
    if (status == 206)
        snprintf(extra, sizeof extra, "ETag: \"e%zu\"\r\nContent-Range: bytes %llu-%llu/%zu\r\n", len,
                 (unsigned long long)a, (unsigned long long)b, len);
    else
        snprintf(extra, sizeof extra, "ETag: \"e%zu\"\r\nAccept-Ranges: bytes\r\n", len);
    if (head) {
        char h[512];
        int k = snprintf(h, sizeof h, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n%s\r\n", len, extra);
        return sink_send_all(fd, h, (size_t)k);
    }
    return sink_reply(fd, status, extra, data + a, n);
}

static int sink_post(int fd, const sink_req *r, char *body, size_t blen)
{
    char x[8192];
    int n;
    if (sink_param(r->query, "uploads", x, sizeof x) == 0) {
        sink_upload *u = calloc(1, sizeof *u);
        if (!u || !(u->key = strdup(r->path)) || !(u->part = calloc(SINK_MAX_PARTS, sizeof *u->part)) ||
            !(u->plen = calloc(SINK_MAX_PARTS, sizeof *u->plen))) {
            if (u)
                sink_free_upload(u);
            return sink_error(fd, 500, "InternalError");
        }
        pthread_mutex_lock(&sink_mu);
        u->id = sink_next_id++;
        u->next = sink_ups;
        sink_ups = u;
        pthread_mutex_unlock(&sink_mu);
        const char *k = strchr(r->path, '/');
        n = snprintf(x, sizeof x, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InitiateMultipartUploadResult>"
                                  "<Bucket>b</Bucket><Key>%s</Key><UploadId>%u</UploadId>"
                                  "</InitiateMultipartUploadResult>", k ? k + 1 : "", u->id);
        return sink_reply(fd, 200, "Content-Type: application/xml\r\n", x, (size_t)n);
    }
    (void)body, (void)blen;
    /* Complete: the parts in number order; the body's list is not checked. */
    pthread_mutex_lock(&sink_mu);
    sink_upload *u = sink_find_upload(r->query, 1);
    pthread_mutex_unlock(&sink_mu);
    if (!u)
        return sink_error(fd, 404, "NoSuchUpload");
    size_t total = 0;
    for (int i = 0; i < SINK_MAX_PARTS; i++)
        total += u->plen[i];
    char *data = malloc(total ? total : 1);
    if (!data) {
        sink_free_upload(u);
        return sink_error(fd, 500, "InternalError");
    }
    size_t o = 0;
    for (int i = 0; i < SINK_MAX_PARTS; i++) {
        if (u->part[i])
            memcpy(data + o, u->part[i], u->plen[i]);
        o += u->plen[i];
    }
    sink_store(u->key, data, total);
    sink_free_upload(u);
    n = snprintf(x, sizeof x, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUploadResult>"
                              "<Bucket>b</Bucket><Key>k</Key><ETag>\"e%zu\"</ETag></CompleteMultipartUploadResult>",
                 total);
    return sink_reply(fd, 200, "Content-Type: application/xml\r\n", x, (size_t)n);
}

static int sink_put(int fd, const sink_req *r, char *body, size_t blen)
{
    char pn[32], extra[64];
    if (!strchr(r->path, '/')) {    /* CreateBucket */
        free(body);
        return sink_reply(fd, 200, NULL, NULL, 0);
    }
    snprintf(extra, sizeof extra, "ETag: \"e%zu\"\r\n", blen);
    if (sink_param(r->query, "partNumber", pn, sizeof pn) == 0) {
        long p = strtol(pn, NULL, 10);
        pthread_mutex_lock(&sink_mu);
        sink_upload *u = sink_find_upload(r->query, 0);
        if (u && p >= 1 && p <= SINK_MAX_PARTS) {
            free(u->part[p - 1]);
            u->part[p - 1] = body;
            u->plen[p - 1] = blen;
            body = NULL;
        }
        pthread_mutex_unlock(&sink_mu);
        if (body) {
            free(body);
            return sink_error(fd, 404, "NoSuchUpload");
        }
        return sink_reply(fd, 200, extra, NULL, 0);
    }
    sink_store(r->path, body, blen);
    return sink_reply(fd, 200, extra, NULL, 0);
}

static int sink_delete(int fd, const sink_req *r)
{
    pthread_mutex_lock(&sink_mu);
    sink_upload *u = sink_find_upload(r->query, 1);
    if (!u) {
        for (sink_obj **p = &sink_objs; *p; p = &(*p)->next)
            if (strcmp((*p)->key, r->path) == 0) {
                /* Unlinked but not freed: a GET may still be sending it. */
                *p = (*p)->next;
                break;
            }
    }
    pthread_mutex_unlock(&sink_mu);
    if (u)
        sink_free_upload(u);
    return sink_reply(fd, 204, NULL, NULL, 0);
}

/* Sleeps as the request number's latency says: the same sequence on every
 * run, so an A/B of two clients sees the same tail. */
static void sink_latency(void)
{
    pthread_mutex_lock(&sink_mu);
    uint64_t k = ++sink_served;
    pthread_mutex_unlock(&sink_mu);
    long ms = sink_delay_ms;
    if (sink_jitter_ms > 0) {
        uint64_t x = k * 0x9E3779B97F4A7C15ull;
        x ^= x >> 31;
        ms += (long)((x * 0xBF58476D1CE4E5B9ull) >> 33) % (sink_jitter_ms + 1);
    }
    if (sink_tail_every > 0 && k % (uint64_t)sink_tail_every == 0)
        ms = sink_tail_ms;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (ms > 0 && nanosleep(&ts, &ts) != 0) {
    }
}

static void *sink_conn(void *p)
{
    int fd = (int)(intptr_t)p;
    char *buf = malloc(SINK_HDR_MAX);
    size_t have = 0, used = 0;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    while (buf) {
        sink_req r;
        char *body = NULL;
        if (sink_read_head(fd, buf, &have, &used, &r) != 0)
            break;
        if (r.chunked) {
            sink_error(fd, 501, "NotImplemented");
            break;
        }
        if (sink_read_body(fd, buf, &have, &used, &r, &body) != 0)
            break;
        memmove(buf, buf + used, have - used);
        have -= used;
        used = 0;
        sink_latency();
        int rc;
        char bucket[4096];
        snprintf(bucket, sizeof bucket, "%s", r.path);
        if (strchr(bucket, '/') && !strchr(bucket, '/')[1])
            *strchr(bucket, '/') = 0;   /* "bucket/" is the bucket */
        if (strcmp(r.method, "GET") == 0 && !strchr(bucket, '/')) {
            free(body);
            rc = sink_list(fd, bucket, r.query);
        } else if (strcmp(r.method, "GET") == 0 || strcmp(r.method, "HEAD") == 0) {
            free(body);
            rc = sink_get(fd, &r, r.method[0] == 'H');
        } else if (strcmp(r.method, "PUT") == 0) {
            snprintf(r.path, sizeof r.path, "%s", bucket);
            rc = sink_put(fd, &r, body, r.clen);
        } else if (strcmp(r.method, "POST") == 0) {
            rc = sink_post(fd, &r, body, r.clen);
            free(body);
        } else if (strcmp(r.method, "DELETE") == 0) {
            free(body);
            rc = sink_delete(fd, &r);
        } else {
            free(body);
            rc = sink_error(fd, 405, "MethodNotAllowed");
        }
        if (rc != 0 || r.close_after)
            break;
    }
    free(buf);
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(argc > 1 ? (uint16_t)atoi(argv[1]) : 0)};
    socklen_t al = sizeof a;
    if (argc > 3) {
        sink_delay_ms = atol(argv[2]);
        sink_jitter_ms = atol(argv[3]);
    }
    if (argc > 5) {
        sink_tail_every = atol(argv[4]);
        sink_tail_ms = atol(argv[5]);
    }
    int one = 1, ls = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    signal(SIGPIPE, SIG_IGN);
    if (ls < 0 || setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 128) != 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) != 0) {
        perror("s3sink: cannot listen on 127.0.0.1");
        return 71;
    }
    printf("%d\n", ntohs(a.sin_port));
    fflush(stdout);
    for (;;) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_t th;
        if (pthread_create(&th, NULL, sink_conn, (void *)(intptr_t)fd) != 0) {
            close(fd);
            continue;
        }
        pthread_detach(th);
    }
}
