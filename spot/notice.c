/* Cloud termination-notice pollers: a background thread that asks the
 * provider's link-local metadata service (AWS, GCP, Azure, Alibaba) or watches
 * a notice file every poll_seconds, and posts what it finds to the stop flag. */
#include "spot.h"

#include "util/util.h"
#include "body.h"
#include "fetch.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

enum { SK_NONE, SK_AWS, SK_GCP, SK_AZURE, SK_ALIBABA, SK_FILE, SK_AUTO };
static const char *const spot_kind_names[] = {"none", "aws", "gcp", "azure", "alibaba", "file", "auto"};

/* GCP's metadata.google.internal is 169.254.169.254 as well; using the address
 * avoids a DNS lookup that has no timeout. Alibaba's service lives elsewhere. */
#define SPOT_BASE_DEFAULT "http://169.254.169.254"
#define SPOT_BASE_ALIBABA "http://100.100.100.200"
#define SPOT_TIMEOUT 1.0
#define SPOT_PROBE_TIMEOUT 0.5
#define SPOT_TOKEN_TTL 21600

/* How long each provider gives between its notice and the end, when the
 * notice itself carries no time. */
#define SPOT_WINDOW_AWS 120.0
#define SPOT_WINDOW_GCP 30.0
#define SPOT_WINDOW_AZURE 30.0
#define SPOT_WINDOW_ALIBABA 300.0

typedef struct {
    int kind;
    char url[1024];             /* metadata_url; "" = the provider's default */
    double poll, grace;
    char vm_name[256];
    char notice_file[1024];
    char token[512];            /* AWS IMDSv2 / Alibaba hardened-mode token */
    double token_until;         /* monotonic seconds */
    int warned_rebalance, warned_maint, warned_noname;
    int file_stale;             /* the file existed at start: wait for a change */
    struct timespec file_mtime;
    char azure_event[128];      /* guarded by mu: EventId to acknowledge */
    int bad_count;
    pthread_t th;
    int running, quit;          /* quit guarded by mu */
    int first_done;             /* guarded by mu: the first round is over */
    int in_first;               /* the thread is in its first round */
    pthread_mutex_t mu;
    pthread_cond_t cv;
} spot_poller;

static spot_poller sp = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
/* Points at a string literal, so a reader never sees a half-written name. */
static const char *volatile spot_active = "none";

const char *spot_provider_name(void)
{
    return spot_active;
}

/* Hostile or broken answers are logged, rate-limited, and otherwise ignored:
 * only a well-formed notice may stop training. */
static void spot_bad(const char *what, const char *why)
{
    sp.bad_count++;
    if (sp.bad_count <= 3 || sp.bad_count % 100 == 0)
        util_log("ignoring a malformed answer from the %s metadata service (%s: %s; %d so far)",
                 spot_kind_names[sp.kind], what, why, sp.bad_count);
}

static const char *spot_base(int kind)
{
    if (sp.url[0])
        return sp.url;
    return kind == SK_ALIBABA ? SPOT_BASE_ALIBABA : SPOT_BASE_DEFAULT;
}

/* One request to the provider's service; ST_OK with r filled, else r->why.
 * hdr: up to two "Name: value" lines (NULL for none). */
static int spot_http(int kind, const char *method, const char *path, const char *hdr, const char *hdr2,
                     const char *body, double timeout, spot_fetch_resp *r)
{
    char url[1024 + 256];
    const char *base = spot_base(kind);
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/')
        bl--;
    if (snprintf(url, sizeof url, "%.*s%s", (int)bl, base, path) >= (int)sizeof url) {
        memset(r, 0, sizeof *r);
        r->why = "URL too long";
        return ST_USAGE;
    }
    spot_fetch_req req = {.method = method, .url = url, .headers = {hdr, hdr2, NULL}, .body = body,
                          .timeout = timeout};
    return spot_fetch(&req, r);
}

static int spot_trimmed(const spot_fetch_resp *r, char *out, size_t cap)
{
    return spot_body_trimmed(r->body, r->body_len, out, cap);
}

/* A provider-given deadline in the past (clock skew, a stale notice) still
 * means "now"; none at all means the provider's usual window. */
static double spot_deadline(double given, double window)
{
    double now = util_wall();
    if (given <= 0)
        return now + window;
    return given < now ? now : given;
}

/* Posts a provider notice; given is the provider's time (0 = none). */
static void spot_post(int kind, const char *detail, double given, double window)
{
    spot_notice_post_timed(spot_kind_names[kind], detail, spot_deadline(given, window), given, sp.in_first);
}

/* ---- AWS (IMDSv2) and Alibaba (hardened mode) session tokens ---- */

static int spot_token_ok(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > 400)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)t[i]) && !strchr("+/=-_.", t[i]))
            return 0;
    return 1;
}

/* PUT /latest/api/token; ttl_header names the provider's TTL header. */
static int spot_token_fetch(int kind, const char *ttl_header, double timeout)
{
    char hdr[128], tok[512];
    spot_fetch_resp r;
    int ok = 0;
    snprintf(hdr, sizeof hdr, "%s: %d", ttl_header, SPOT_TOKEN_TTL);
    if (spot_http(kind, "PUT", "/latest/api/token", hdr, NULL, NULL, timeout, &r) != ST_OK)
        return 0;
    if (r.status == 200 && spot_trimmed(&r, tok, sizeof tok) == 0 && spot_token_ok(tok)) {
        snprintf(sp.token, sizeof sp.token, "%s", tok);
        sp.token_until = util_now() + SPOT_TOKEN_TTL - 60;
        ok = 1;
    } else if (r.status == 200) {
        spot_bad("token", "not a plausible token");
    }
    spot_fetch_free(&r);
    return ok;
}

/* GET with the session token, renewing it once when the service says 401. */
static int spot_get_with_token(int kind, const char *path, spot_fetch_resp *r)
{
    const char *ttl = kind == SK_AWS ? "X-aws-ec2-metadata-token-ttl-seconds"
                                     : "X-aliyun-ecs-metadata-token-ttl-seconds";
    const char *name = kind == SK_AWS ? "X-aws-ec2-metadata-token" : "X-aliyun-ecs-metadata-token";
    char hdr[600];
    for (int attempt = 0; attempt < 2; attempt++) {
        if ((!sp.token[0] || util_now() > sp.token_until) && !spot_token_fetch(kind, ttl, SPOT_TIMEOUT))
            return -1;
        snprintf(hdr, sizeof hdr, "%s: %s", name, sp.token);
        if (spot_http(kind, "GET", path, hdr, NULL, NULL, SPOT_TIMEOUT, r) != ST_OK)
            return -1;
        if (r->status != 401 || attempt == 1)
            return 0;
        util_log("%s metadata token rejected (expired?); renewing it", spot_kind_names[kind]);
        spot_fetch_free(r);
        sp.token[0] = '\0';
    }
    return -1;
}

/* ---- providers: each returns 1 when it posted a stop notice ---- */

static int spot_poll_aws(void)
{
    spot_fetch_resp r;
    spot_body b;
    int found = 0;
    if (spot_get_with_token(SK_AWS, "/latest/meta-data/spot/instance-action", &r) != 0)
        return 0;
    if (r.status == 200) {
        found = spot_body_aws(r.body, r.body_len, &b) == SPOT_BODY_NOTICE;
        if (b.bad)
            spot_bad("spot/instance-action", b.bad);
        if (found)
            spot_post(SK_AWS, b.detail, b.time, SPOT_WINDOW_AWS);
    } else if (r.status != 404) {
        spot_bad("spot/instance-action", "unexpected status");
    }
    spot_fetch_free(&r);
    if (found || sp.warned_rebalance)
        return found;
    if (spot_get_with_token(SK_AWS, "/latest/meta-data/events/recommendations/rebalance", &r) != 0)
        return 0;
    if (r.status == 200) {
        spot_body_aws_rebalance(r.body, r.body_len, &b);
        spot_warning_post("aws", b.detail);
        sp.warned_rebalance = 1;
    }
    spot_fetch_free(&r);
    return 0;
}

/* One GCP question; 1 when it posted a stop notice. */
static int spot_gcp_ask(const char *path, int maintenance)
{
    spot_fetch_resp r;
    spot_body b;
    int found = 0;
    if (spot_http(SK_GCP, "GET", path, "Metadata-Flavor: Google", NULL, NULL, SPOT_TIMEOUT, &r) != ST_OK)
        return 0;
    int v = r.status == 200 ? spot_body_gcp(r.body, r.body_len, maintenance, &b) : SPOT_BODY_BAD;
    if (v == SPOT_BODY_NOTICE) {
        spot_post(SK_GCP, b.detail, 0, SPOT_WINDOW_GCP);
        found = 1;
    } else if (v == SPOT_BODY_WARNING && !sp.warned_maint) {
        spot_warning_post("gcp", b.detail);
        sp.warned_maint = 1;
    } else if (v == SPOT_BODY_BAD && !maintenance) {
        spot_bad("instance/preempted", r.status == 200 ? b.bad : "unexpected status");
    }
    spot_fetch_free(&r);
    return found;
}

static int spot_poll_gcp(void)
{
    return spot_gcp_ask("/computeMetadata/v1/instance/preempted", 0) ||
           spot_gcp_ask("/computeMetadata/v1/instance/maintenance-event", 1);
}

static int spot_azure_name(double timeout)
{
    spot_fetch_resp r;
    char name[256];
    int ok = 0;
    if (sp.vm_name[0])
        return 1;
    if (spot_http(SK_AZURE, "GET", "/metadata/instance/compute/name?api-version=2021-02-01&format=text",
                  "Metadata: true", NULL, NULL, timeout, &r) != ST_OK)
        return 0;
    if (r.status == 200 && spot_trimmed(&r, name, sizeof name) == 0 && name[0]) {
        snprintf(sp.vm_name, sizeof sp.vm_name, "%s", name);
        ok = 1;
    }
    spot_fetch_free(&r);
    return ok;
}

static int spot_poll_azure(void)
{
    spot_fetch_resp r;
    spot_body b;
    int found = 0;
    if (!spot_azure_name(SPOT_TIMEOUT)) {
        if (!sp.warned_noname)
            util_log("azure: this VM's name is unknown (set spot.vm_name); cannot match scheduled events yet");
        sp.warned_noname = 1;
    }
    if (spot_http(SK_AZURE, "GET", "/metadata/scheduledevents?api-version=2020-07-01", "Metadata: true", NULL,
                  NULL, SPOT_TIMEOUT, &r) != ST_OK)
        return 0;
    int v = r.status == 200 ? spot_body_azure(r.body, r.body_len, sp.vm_name, &b) : SPOT_BODY_BAD;
    if (r.status != 200)
        spot_bad("scheduledevents", "unexpected status");
    else if (b.bad)
        spot_bad("scheduledevents", b.bad);
    if (v == SPOT_BODY_WARNING && !sp.warned_maint) {
        spot_warning_post("azure", b.detail);
        sp.warned_maint = 1;
    } else if (v == SPOT_BODY_NOTICE) {
        pthread_mutex_lock(&sp.mu);
        snprintf(sp.azure_event, sizeof sp.azure_event, "%s", b.event_id);
        pthread_mutex_unlock(&sp.mu);
        spot_post(SK_AZURE, b.detail, b.time, SPOT_WINDOW_AZURE);
        found = 1;
    }
    spot_fetch_free(&r);
    return found;
}

int spot_azure_ack(void)
{
    char body[256], id[128];
    spot_fetch_resp r;
    pthread_mutex_lock(&sp.mu);
    snprintf(id, sizeof id, "%s", sp.azure_event);
    pthread_mutex_unlock(&sp.mu);
    if (!id[0])
        return ST_OK;
    snprintf(body, sizeof body, "{\"StartRequests\":[{\"EventId\":\"%s\"}]}", id);
    int rc = spot_http(SK_AZURE, "POST", "/metadata/scheduledevents?api-version=2020-07-01", "Metadata: true",
                       "Content-Type: application/json", body, SPOT_TIMEOUT, &r);
    if (rc != ST_OK)
        return util_fail(ST_UNAVAILABLE, "azure: could not acknowledge event %s (%s)", id, r.why);
    int status = r.status;
    spot_fetch_free(&r);
    if (status != 200)
        return util_fail(ST_UNAVAILABLE, "azure: acknowledging event %s got HTTP %d", id, status);
    util_log("azure: acknowledged scheduled event %s", id);
    return ST_OK;
}

static int spot_poll_alibaba(void)
{
    static const char path[] = "/latest/meta-data/instance/spot/termination-time";
    spot_fetch_resp r;
    spot_body b;
    int found = 0, rc;
    if (sp.token[0])
        rc = spot_get_with_token(SK_ALIBABA, path, &r) == 0 ? ST_OK : ST_UNAVAILABLE;
    else
        rc = spot_http(SK_ALIBABA, "GET", path, NULL, NULL, NULL, SPOT_TIMEOUT, &r);
    if (rc != ST_OK)
        return 0;
    if (r.status == 403 && !sp.token[0]) {
        /* Hardened (token-only) mode: fetch a token and ask again next time. */
        util_log("alibaba: metadata service wants a token (hardened mode); fetching one");
        spot_token_fetch(SK_ALIBABA, "X-aliyun-ecs-metadata-token-ttl-seconds", SPOT_TIMEOUT);
    } else if (r.status == 200) {
        found = spot_body_alibaba(r.body, r.body_len, &b) == SPOT_BODY_NOTICE;
        if (b.bad)
            spot_bad("spot/termination-time", b.bad);
        if (found)
            spot_post(SK_ALIBABA, b.detail, b.time, SPOT_WINDOW_ALIBABA);
    } else if (r.status != 404) {
        spot_bad("spot/termination-time", "unexpected answer");
    }
    spot_fetch_free(&r);
    return found;
}

static void spot_file_start(void)
{
    struct stat st;
    if (stat(sp.notice_file, &st) == 0) {
        sp.file_stale = 1;
        sp.file_mtime = st.st_mtim;
        util_log("notice file %s already exists (left from an earlier stop?); waiting for it to change",
                 sp.notice_file);
    }
}

static int spot_poll_file(void)
{
    struct stat st;
    if (stat(sp.notice_file, &st) != 0) {
        sp.file_stale = 0;
        return 0;
    }
    if (sp.file_stale && st.st_mtim.tv_sec == sp.file_mtime.tv_sec &&
        st.st_mtim.tv_nsec == sp.file_mtime.tv_nsec)
        return 0;
    char detail[256], first[160] = "";
    FILE *f = fopen(sp.notice_file, "r");
    if (f) {
        if (fgets(first, sizeof first, f))
            first[strcspn(first, "\r\n")] = '\0';
        fclose(f);
    }
    snprintf(detail, sizeof detail, "notice file %.80s appeared%s%.150s", sp.notice_file,
             first[0] ? ": " : "", first);
    spot_notice_post("file", detail, util_wall() + sp.grace);
    return 1;
}

/* ---- auto-detection and the thread ---- */

static int spot_probe_ok(int kind, const char *method, const char *path, const char *hdr)
{
    spot_fetch_resp r;
    char v[128];
    if (spot_http(kind, method, path, hdr, NULL, NULL, SPOT_PROBE_TIMEOUT, &r) != ST_OK)
        return 0;
    int ok = r.status == 200 && spot_trimmed(&r, v, sizeof v) == 0 && v[0];
    if (ok && kind == SK_GCP)
        ok = !strcmp(v, "TRUE") || !strcmp(v, "FALSE");
    spot_fetch_free(&r);
    return ok;
}

/* AWS first: its token PUT is the most specific question; Alibaba last
 * because an AWS service with IMDSv1 on would also answer its probe. */
static int spot_probe(void)
{
    if (spot_token_fetch(SK_AWS, "X-aws-ec2-metadata-token-ttl-seconds", SPOT_PROBE_TIMEOUT))
        return SK_AWS;
    if (spot_probe_ok(SK_GCP, "GET", "/computeMetadata/v1/instance/preempted",
                      "Metadata-Flavor: Google"))
        return SK_GCP;
    if (spot_azure_name(SPOT_PROBE_TIMEOUT))
        return SK_AZURE;
    if (spot_probe_ok(SK_ALIBABA, "GET", "/latest/meta-data/instance-id", NULL))
        return SK_ALIBABA;
    return SK_NONE;
}

static int spot_poll_once(void)
{
    switch (sp.kind) {
    case SK_AWS: return spot_poll_aws();
    case SK_GCP: return spot_poll_gcp();
    case SK_AZURE: return spot_poll_azure();
    case SK_ALIBABA: return spot_poll_alibaba();
    case SK_FILE: return spot_poll_file();
    default: return 1;
    }
}

/* Sleeps for s seconds or until spot_stop; 1 when asked to quit. */
static int spot_wait(double s)
{
    struct timespec ts;
    /* The condition variable uses the default (realtime) clock. */
    clock_gettime(CLOCK_REALTIME, &ts);
    double end = (double)ts.tv_sec + ts.tv_nsec * 1e-9 + s;
    ts.tv_sec = (time_t)end;
    ts.tv_nsec = (long)((end - (double)ts.tv_sec) * 1e9);
    pthread_mutex_lock(&sp.mu);
    while (!sp.quit && pthread_cond_timedwait(&sp.cv, &sp.mu, &ts) != ETIMEDOUT)
        ;
    int q = sp.quit;
    pthread_mutex_unlock(&sp.mu);
    return q;
}

/* The end of the first round: spot_first_round stops waiting. */
static void spot_first_over(void)
{
    sp.in_first = 0;
    pthread_mutex_lock(&sp.mu);
    sp.first_done = 1;
    pthread_cond_broadcast(&sp.cv);
    pthread_mutex_unlock(&sp.mu);
}

static void *spot_thread(void *arg)
{
    (void)arg;
    sp.in_first = 1;
    if (sp.kind == SK_AUTO) {
        sp.kind = spot_probe();
        if (sp.kind == SK_NONE) {
            util_log("spot: no cloud metadata service answered; stop requests come from signals only");
            spot_first_over();
            return NULL;
        }
        util_log("spot: detected provider %s", spot_kind_names[sp.kind]);
    }
    spot_active = spot_kind_names[sp.kind];
    if (sp.kind == SK_AZURE) {
        /* The first Scheduled Events call switches the service on for this VM. */
        spot_azure_name(SPOT_TIMEOUT);
    }
    if (sp.kind == SK_FILE)
        spot_file_start();
    for (;;) {
        pthread_mutex_lock(&sp.mu);
        int q = sp.quit;
        pthread_mutex_unlock(&sp.mu);
        int found = !q && spot_poll_once();
        if (sp.in_first)
            spot_first_over();
        if (q || found || spot_wait(sp.poll))
            break;
    }
    return NULL;
}

void spot_first_round(double timeout)
{
    struct timespec ts;
    if (!sp.running)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    double end = (double)ts.tv_sec + ts.tv_nsec * 1e-9 + timeout;
    ts.tv_sec = (time_t)end;
    ts.tv_nsec = (long)((end - (double)ts.tv_sec) * 1e9);
    pthread_mutex_lock(&sp.mu);
    while (!sp.first_done && pthread_cond_timedwait(&sp.cv, &sp.mu, &ts) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&sp.mu);
}

/* 0 when url is http://host[:port][/path] and nothing else: no https (the
 * services speak plain HTTP on a link-local address), no user info, a port
 * in 1..65535, and a path of printable ASCII without spaces. */
static int spot_url_ok(const char *url)
{
    if (strncmp(url, "http://", 7) != 0)
        return -1;
    const char *h = url + 7;
    size_t hl = strcspn(h, ":/?#");
    if (hl == 0 || hl > 255 || strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") < hl)
        return -1;
    const char *p = h + hl;
    if (*p == ':') {
        size_t d = strspn(p + 1, "0123456789");
        long port = d && d <= 5 ? strtol(p + 1, NULL, 10) : 0;
        if (port < 1 || port > 65535)
            return -1;
        p += 1 + d;
    }
    if (*p && *p != '/' && *p != '?')
        return -1;
    for (; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return -1;
    return 0;
}

int spot_start(const spot_opts *o, const char *run_dir)
{
    int kind = -1;
    spot_events_dir(run_dir);
    for (int i = 0; i < (int)(sizeof spot_kind_names / sizeof spot_kind_names[0]); i++)
        if (!strcmp(o->provider, spot_kind_names[i]))
            kind = i;
    if (kind < 0)
        return util_fail(ST_CONFIG, "spot.provider = %s is not one of auto, aws, gcp, azure, alibaba, file, none",
                         o->provider);
    if (sp.running)
        spot_stop();
    if (kind == SK_NONE)
        return ST_OK;
    if (kind == SK_FILE && !o->notice_file[0])
        return util_fail(ST_CONFIG, "spot.provider = file needs spot.notice_file (the path whose appearance means stop)");
    if (o->metadata_url[0] && spot_url_ok(o->metadata_url) != 0)
        return util_fail(ST_CONFIG, "spot.metadata_url = %s is not http://host[:port][/path]",
                         o->metadata_url);
    if (kind != SK_FILE && spot_fetch_ready(o->provider) != ST_OK)
        return ST_UNAVAILABLE;
    /* Reset everything but the thread primitives. */
    sp.kind = kind;
    snprintf(sp.url, sizeof sp.url, "%s", o->metadata_url);
    sp.poll = o->poll_seconds > 0.01 ? o->poll_seconds : 0.01;
    sp.grace = o->grace_seconds > 0 ? o->grace_seconds : 120.0;
    snprintf(sp.vm_name, sizeof sp.vm_name, "%s", o->vm_name);
    snprintf(sp.notice_file, sizeof sp.notice_file, "%s", o->notice_file);
    sp.token[0] = '\0';
    sp.token_until = 0;
    sp.warned_rebalance = sp.warned_maint = sp.warned_noname = 0;
    sp.file_stale = 0;
    sp.azure_event[0] = '\0';
    sp.bad_count = 0;
    sp.quit = 0;
    sp.first_done = 0;
    /* Signals belong to the main thread; the poller must never run a handler. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int e = pthread_create(&sp.th, NULL, spot_thread, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e != 0)
        return util_fail(ST_SOFTWARE, "cannot start the spot notice thread: %s", strerror(e));
    sp.running = 1;
    return ST_OK;
}

void spot_stop(void)
{
    if (!sp.running)
        return;
    pthread_mutex_lock(&sp.mu);
    sp.quit = 1;
    pthread_cond_broadcast(&sp.cv);
    pthread_mutex_unlock(&sp.mu);
    pthread_join(sp.th, NULL);
    sp.running = 0;
}
