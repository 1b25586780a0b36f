/* The pollers' one HTTP exchange with a link-local cloud metadata service:
 * plain HTTP to the configured base only, a deadline per request, capped
 * headers and body, no redirects. libcurl does the wire (spot/fetch.c);
 * a build without it (DEVICE=1) has spot/fetch_off.c, which refuses. */
#ifndef SPOTRAIN_SPOT_FETCH_H
#define SPOTRAIN_SPOT_FETCH_H

#include <stddef.h>

#define SPOT_FETCH_MAX_HEAD (16 * 1024)   /* status line + headers */
#define SPOT_FETCH_MAX_BODY (64 * 1024)   /* body */
#define SPOT_FETCH_MAX_HEADERS 8          /* request header lines */

typedef struct {
    const char *method;      /* GET, PUT, POST */
    const char *url;         /* http://host[:port]/path?query */
    const char *headers[SPOT_FETCH_MAX_HEADERS]; /* "Name: value" lines, NULL-terminated */
    const char *body;        /* may be NULL */
    double timeout;          /* seconds for the whole exchange, connect included */
} spot_fetch_req;

typedef struct {
    int status;              /* 100..599 */
    char *body;              /* NUL-terminated (malloc'd; may hold NULs) */
    size_t body_len;
    const char *why;         /* static text: why the exchange failed */
} spot_fetch_resp;

/* ST_OK when this build can ask metadata services; otherwise one line on
 * stderr naming `provider` and what to use instead, and ST_UNAVAILABLE. */
int spot_fetch_ready(const char *provider);
/* One exchange. ST_OK with r filled for any well-formed answer (check
 * r->status; free with spot_fetch_free); ST_UNAVAILABLE when nothing answered
 * in time or the answer broke a bound or was not HTTP; ST_USAGE for a bad
 * URL. r->why says why on failure. Never raises SIGPIPE. */
int spot_fetch(const spot_fetch_req *req, spot_fetch_resp *r);
void spot_fetch_free(spot_fetch_resp *r);

#endif
