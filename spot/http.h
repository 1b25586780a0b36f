/* A deliberately small HTTP/1.1 client for link-local cloud metadata
 * services: plain HTTP, one request per connection, bounded sizes, short
 * deadlines, and a response parser that works on a buffer so it can be fuzzed. */
#ifndef SPOTRAIN_HTTP_H
#define SPOTRAIN_HTTP_H

#include <stddef.h>

#define HTTP_MAX_HEAD (16 * 1024)   /* status line + headers */
#define HTTP_MAX_BODY (64 * 1024)   /* decoded body */
#define HTTP_MAX_HEADERS 64

enum { HTTP_DONE = 0, HTTP_MORE = 1, HTTP_BAD = -1 };

typedef struct {
    int status;          /* 100..599 */
    char *headers;       /* header lines after the status line, NUL-terminated (malloc'd) */
    char *body;          /* decoded body, NUL-terminated (malloc'd; may hold NULs) */
    size_t body_len;
    const char *why;     /* static text: why parsing or the exchange failed */
} http_response;

/* Parses one complete response held in buf[0..len). eof says the peer closed
 * the connection (a body without Content-Length or chunking ends there).
 * Returns HTTP_DONE (r filled, free with http_response_free), HTTP_MORE (the
 * buffer holds a valid prefix; read more), or HTTP_BAD (r->why says why).
 * Interim 1xx responses are skipped. */
int http_parse_response(const char *buf, size_t len, int eof, http_response *r);
void http_response_free(http_response *r);

/* Copies the value of the first header called name (case-insensitive) into
 * out; 0 when found, -1 when absent or too long for cap. */
int http_header_get(const http_response *r, const char *name, char *out, size_t cap);

/* Splits "http://host[:port][/path]" into its parts; the path keeps its
 * leading '/' and is "" when absent. 0 on success, -1 on anything else
 * (https, user info, a port out of range, overlong parts). */
int http_parse_url(const char *url, char *host, size_t host_cap, int *port, char *path,
                   size_t path_cap);

typedef struct {
    const char *method;      /* GET, PUT, POST */
    const char *url;         /* http://host:port/path?query */
    const char *headers;     /* extra header lines, each ending in "\r\n"; may be NULL */
    const char *body;        /* may be NULL */
    size_t body_len;
    double timeout;          /* seconds for the whole exchange, connect included */
} http_request;

/* Performs one exchange. ST_OK with r filled for any well-formed response
 * (check r->status); ST_UNAVAILABLE when nothing answered in time; ST_DATA
 * when the answer was not valid HTTP; ST_USAGE for a bad URL. r->why says
 * why on failure. Never raises SIGPIPE. */
int http_do(const http_request *req, http_response *r);

#endif
