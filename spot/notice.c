/* Cloud termination-notice pollers: a background thread that asks the
 * provider's link-local metadata service (AWS, GCP, Azure, Alibaba) or watches
 * a notice file every poll_seconds, and posts what it finds to the stop flag. */
#include "spot.h"

#include "util/util.h"
#include "http.h"

#include <ctype.h>
#include <errno.h>
#include <json-c/json.h>
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

/* One request to the provider's service; ST_OK with r filled, else r->why. */
static int spot_http(int kind, const char *method, const char *path, const char *headers,
                     const char *body, double timeout, http_response *r)
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
    http_request req = {.method = method, .url = url, .headers = headers, .body = body,
                        .body_len = body ? strlen(body) : 0, .timeout = timeout};
    return http_do(&req, r);
}

/* Body with surrounding whitespace removed, into out; -1 when it does not
 * fit or holds bytes that are not printable ASCII. */
static int spot_trimmed(const http_response *r, char *out, size_t cap)
{
    const char *p = r->body;
    size_t n = r->body_len;
    while (n && isspace((unsigned char)*p))
        p++, n--;
    while (n && isspace((unsigned char)p[n - 1]))
        n--;
    if (n + 1 > cap)
        return -1;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] >= 0x7f)
            return -1;
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

/* ---- time formats ---- */

/* timegm with a round trip, so 31 February is refused rather than rolled over. */
static int spot_timegm(int y, int mo, int d, int h, int mi, int s, double *out)
{
    struct tm tm, back;
    if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60)
        return -1;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s == 60 ? 59 : s;
    time_t t = timegm(&tm);
    if (t == (time_t)-1 || !gmtime_r(&t, &back) || back.tm_mday != d || back.tm_mon != mo - 1)
        return -1;
    *out = (double)t + (s == 60 ? 1 : 0);
    return 0;
}

int spot_parse_iso8601(const char *s, double *out)
{
    /* Provider deadlines are full date-times with a zone; anything less is
     * a malformed answer, not a local time to guess at. */
    size_t n = strlen(s);
    if (n < 20 || (s[10] != 'T' && s[10] != 't') ||
        !(s[n - 1] == 'Z' || s[n - 1] == 'z' || (n >= 25 && (s[n - 6] == '+' || s[n - 6] == '-'))))
        return -1;
    return util_parse_time(s, out);
}

int spot_parse_http_date(const char *s, double *out)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    int d, y, h, mi, sec, mo = 0;
    /* "Mon, 19 Sep 2016 18:29:47 GMT" */
    if (strlen(s) != 29 || !isalpha((unsigned char)s[0]) || !isalpha((unsigned char)s[1]) ||
        !isalpha((unsigned char)s[2]) || s[3] != ',' || s[4] != ' ' || util_digits(s + 5, 2, &d) ||
        s[7] != ' ' || s[11] != ' ' || util_digits(s + 12, 4, &y) || s[16] != ' ' ||
        util_digits(s + 17, 2, &h) || s[19] != ':' || util_digits(s + 20, 2, &mi) ||
        s[22] != ':' || util_digits(s + 23, 2, &sec) || strcmp(s + 25, " GMT") != 0)
        return -1;
    for (int i = 0; i < 12; i++)
        if (strncmp(s + 8, months + 3 * i, 3) == 0)
            mo = i + 1;
    if (!mo)
        return -1;
    return spot_timegm(y, mo, d, h, mi, sec, out);
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
    http_response r;
    int ok = 0;
    snprintf(hdr, sizeof hdr, "%s: %d\r\n", ttl_header, SPOT_TOKEN_TTL);
    if (spot_http(kind, "PUT", "/latest/api/token", hdr, NULL, timeout, &r) != ST_OK)
        return 0;
    if (r.status == 200 && spot_trimmed(&r, tok, sizeof tok) == 0 && spot_token_ok(tok)) {
        snprintf(sp.token, sizeof sp.token, "%s", tok);
        sp.token_until = util_now() + SPOT_TOKEN_TTL - 60;
        ok = 1;
    } else if (r.status == 200) {
        spot_bad("token", "not a plausible token");
    }
    http_response_free(&r);
    return ok;
}

/* GET with the session token, renewing it once when the service says 401. */
static int spot_get_with_token(int kind, const char *path, http_response *r)
{
    const char *ttl = kind == SK_AWS ? "X-aws-ec2-metadata-token-ttl-seconds"
                                     : "X-aliyun-ecs-metadata-token-ttl-seconds";
    const char *name = kind == SK_AWS ? "X-aws-ec2-metadata-token" : "X-aliyun-ecs-metadata-token";
    char hdr[600];
    for (int attempt = 0; attempt < 2; attempt++) {
        if ((!sp.token[0] || util_now() > sp.token_until) && !spot_token_fetch(kind, ttl, SPOT_TIMEOUT))
            return -1;
        snprintf(hdr, sizeof hdr, "%s: %s\r\n", name, sp.token);
        if (spot_http(kind, "GET", path, hdr, NULL, SPOT_TIMEOUT, r) != ST_OK)
            return -1;
        if (r->status != 401 || attempt == 1)
            return 0;
        util_log("%s metadata token rejected (expired?); renewing it", spot_kind_names[kind]);
        http_response_free(r);
        sp.token[0] = '\0';
    }
    return -1;
}

/* ---- providers: each returns 1 when it posted a stop notice ---- */

static const char *spot_json_str(json_object *o, const char *key)
{
    json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static int spot_poll_aws(void)
{
    http_response r;
    int found = 0;
    if (spot_get_with_token(SK_AWS, "/latest/meta-data/spot/instance-action", &r) != 0)
        return 0;
    if (r.status == 200) {
        json_object *o = json_tokener_parse(r.body);
        const char *action = spot_json_str(o, "action"), *when = spot_json_str(o, "time");
        double t = 0;
        if (!action || (strcmp(action, "terminate") && strcmp(action, "stop") &&
                        strcmp(action, "hibernate"))) {
            spot_bad("spot/instance-action", "no terminate|stop|hibernate action");
        } else {
            char detail[200];
            if (!when || spot_parse_iso8601(when, &t) != 0) {
                spot_bad("spot/instance-action", "unreadable time; assuming 120 s");
                t = 0;
            }
            snprintf(detail, sizeof detail, "spot instance-action %s at %.40s", action,
                     when ? when : "(no time)");
            spot_notice_post("aws", detail, spot_deadline(t, SPOT_WINDOW_AWS));
            found = 1;
        }
        json_object_put(o);
    } else if (r.status != 404) {
        spot_bad("spot/instance-action", "unexpected status");
    }
    http_response_free(&r);
    if (found || sp.warned_rebalance)
        return found;
    if (spot_get_with_token(SK_AWS, "/latest/meta-data/events/recommendations/rebalance", &r) != 0)
        return 0;
    if (r.status == 200) {
        json_object *o = json_tokener_parse(r.body);
        const char *when = spot_json_str(o, "noticeTime");
        char detail[160];
        snprintf(detail, sizeof detail, "rebalance recommendation (noticeTime %.40s)",
                 when ? when : "unknown");
        spot_warning_post("aws", detail);
        sp.warned_rebalance = 1;
        json_object_put(o);
    }
    http_response_free(&r);
    return 0;
}

static int spot_poll_gcp(void)
{
    static const char flavor[] = "Metadata-Flavor: Google\r\n";
    http_response r;
    char v[64];
    int found = 0;
    if (spot_http(SK_GCP, "GET", "/computeMetadata/v1/instance/preempted", flavor, NULL,
                  SPOT_TIMEOUT, &r) == ST_OK) {
        if (r.status == 200 && spot_trimmed(&r, v, sizeof v) == 0 &&
            (!strcmp(v, "TRUE") || !strcmp(v, "FALSE"))) {
            if (!strcmp(v, "TRUE")) {
                spot_notice_post("gcp", "instance/preempted is TRUE",
                                 spot_deadline(0, SPOT_WINDOW_GCP));
                found = 1;
            }
        } else {
            spot_bad("instance/preempted", r.status == 200 ? "not TRUE or FALSE" : "unexpected status");
        }
        http_response_free(&r);
    }
    if (found)
        return 1;
    if (spot_http(SK_GCP, "GET", "/computeMetadata/v1/instance/maintenance-event", flavor, NULL,
                  SPOT_TIMEOUT, &r) != ST_OK)
        return 0;
    if (r.status == 200 && spot_trimmed(&r, v, sizeof v) == 0) {
        if (!strcmp(v, "TERMINATE_ON_HOST_MAINTENANCE")) {
            spot_notice_post("gcp", "maintenance-event TERMINATE_ON_HOST_MAINTENANCE",
                             spot_deadline(0, SPOT_WINDOW_GCP));
            found = 1;
        } else if (!strcmp(v, "MIGRATE_ON_HOST_MAINTENANCE") && !sp.warned_maint) {
            spot_warning_post("gcp", "maintenance-event MIGRATE_ON_HOST_MAINTENANCE");
            sp.warned_maint = 1;
        }
    }
    http_response_free(&r);
    return found;
}

static int spot_azure_name(double timeout)
{
    http_response r;
    char name[256];
    int ok = 0;
    if (sp.vm_name[0])
        return 1;
    if (spot_http(SK_AZURE, "GET", "/metadata/instance/compute/name?api-version=2021-02-01&format=text",
                  "Metadata: true\r\n", NULL, timeout, &r) != ST_OK)
        return 0;
    if (r.status == 200 && spot_trimmed(&r, name, sizeof name) == 0 && name[0]) {
        snprintf(sp.vm_name, sizeof sp.vm_name, "%s", name);
        ok = 1;
    }
    http_response_free(&r);
    return ok;
}

/* Is this event about this VM? Azure names are case-insensitive. */
static int spot_azure_mine(json_object *ev)
{
    json_object *res;
    if (!json_object_object_get_ex(ev, "Resources", &res) || !json_object_is_type(res, json_type_array))
        return 0;
    for (size_t i = 0; i < json_object_array_length(res); i++) {
        json_object *x = json_object_array_get_idx(res, i);
        if (json_object_is_type(x, json_type_string) && !strcasecmp(json_object_get_string(x), sp.vm_name))
            return 1;
    }
    return 0;
}

static int spot_poll_azure(void)
{
    http_response r;
    int found = 0;
    if (!spot_azure_name(SPOT_TIMEOUT)) {
        if (!sp.warned_noname)
            util_log("azure: this VM's name is unknown (set spot.vm_name); cannot match scheduled events yet");
        sp.warned_noname = 1;
    }
    if (spot_http(SK_AZURE, "GET", "/metadata/scheduledevents?api-version=2020-07-01",
                  "Metadata: true\r\n", NULL, SPOT_TIMEOUT, &r) != ST_OK)
        return 0;
    json_object *o = r.status == 200 ? json_tokener_parse(r.body) : NULL, *events;
    if (r.status != 200) {
        spot_bad("scheduledevents", "unexpected status");
    } else if (!o || !json_object_object_get_ex(o, "Events", &events) ||
               !json_object_is_type(events, json_type_array)) {
        spot_bad("scheduledevents", "no Events array");
    } else if (sp.vm_name[0]) {
        for (size_t i = 0; i < json_object_array_length(events) && !found; i++) {
            json_object *ev = json_object_array_get_idx(events, i);
            const char *type = spot_json_str(ev, "EventType"), *nb = spot_json_str(ev, "NotBefore");
            const char *id = spot_json_str(ev, "EventId");
            if (!type || !spot_azure_mine(ev))
                continue;
            if (!strcmp(type, "Freeze")) {
                if (!sp.warned_maint)
                    spot_warning_post("azure", "Freeze event scheduled (a pause of a few seconds)");
                sp.warned_maint = 1;
                continue;
            }
            /* Reboot and Redeploy end this process as surely as Preempt. */
            if (strcmp(type, "Preempt") && strcmp(type, "Terminate") && strcmp(type, "Reboot") &&
                strcmp(type, "Redeploy"))
                continue;
            double t = 0;
            if (nb && nb[0] && spot_parse_http_date(nb, &t) != 0) {
                spot_bad("scheduledevents", "unreadable NotBefore; assuming 30 s");
                t = 0;
            }
            char detail[200];
            snprintf(detail, sizeof detail, "scheduled event %.16s for %.64s not before %.40s", type,
                     sp.vm_name, nb && nb[0] ? nb : "(now)");
            pthread_mutex_lock(&sp.mu);
            sp.azure_event[0] = '\0';
            if (id && strlen(id) < sizeof sp.azure_event && strspn(id, "0123456789abcdefABCDEF-") == strlen(id))
                snprintf(sp.azure_event, sizeof sp.azure_event, "%s", id);
            pthread_mutex_unlock(&sp.mu);
            spot_notice_post("azure", detail, spot_deadline(t, SPOT_WINDOW_AZURE));
            found = 1;
        }
    }
    json_object_put(o);
    http_response_free(&r);
    return found;
}

int spot_azure_ack(void)
{
    char body[256], id[128];
    http_response r;
    pthread_mutex_lock(&sp.mu);
    snprintf(id, sizeof id, "%s", sp.azure_event);
    pthread_mutex_unlock(&sp.mu);
    if (!id[0])
        return ST_OK;
    snprintf(body, sizeof body, "{\"StartRequests\":[{\"EventId\":\"%s\"}]}", id);
    int rc = spot_http(SK_AZURE, "POST", "/metadata/scheduledevents?api-version=2020-07-01",
                       "Metadata: true\r\nContent-Type: application/json\r\n", body, SPOT_TIMEOUT, &r);
    if (rc != ST_OK)
        return util_fail(ST_UNAVAILABLE, "azure: could not acknowledge event %s (%s)", id, r.why);
    int status = r.status;
    http_response_free(&r);
    if (status != 200)
        return util_fail(ST_UNAVAILABLE, "azure: acknowledging event %s got HTTP %d", id, status);
    util_log("azure: acknowledged scheduled event %s", id);
    return ST_OK;
}

static int spot_poll_alibaba(void)
{
    static const char path[] = "/latest/meta-data/instance/spot/termination-time";
    http_response r;
    char v[64];
    int found = 0, rc;
    if (sp.token[0])
        rc = spot_get_with_token(SK_ALIBABA, path, &r) == 0 ? ST_OK : ST_UNAVAILABLE;
    else
        rc = spot_http(SK_ALIBABA, "GET", path, NULL, NULL, SPOT_TIMEOUT, &r);
    if (rc != ST_OK)
        return 0;
    if (r.status == 403 && !sp.token[0]) {
        /* Hardened (token-only) mode: fetch a token and ask again next time. */
        util_log("alibaba: metadata service wants a token (hardened mode); fetching one");
        spot_token_fetch(SK_ALIBABA, "X-aliyun-ecs-metadata-token-ttl-seconds", SPOT_TIMEOUT);
    } else if (r.status == 200 && spot_trimmed(&r, v, sizeof v) == 0 && v[0]) {
        double t;
        if (spot_parse_iso8601(v, &t) == 0) {
            char detail[120];
            snprintf(detail, sizeof detail, "spot termination-time %s", v);
            spot_notice_post("alibaba", detail, spot_deadline(t, SPOT_WINDOW_ALIBABA));
            found = 1;
        } else {
            spot_bad("spot/termination-time", "not a UTC time");
        }
    } else if (r.status != 404 && !(r.status == 200 && spot_trimmed(&r, v, sizeof v) == 0)) {
        spot_bad("spot/termination-time", "unexpected answer");
    }
    http_response_free(&r);
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
    http_response r;
    char v[128];
    if (spot_http(kind, method, path, hdr, NULL, SPOT_PROBE_TIMEOUT, &r) != ST_OK)
        return 0;
    int ok = r.status == 200 && spot_trimmed(&r, v, sizeof v) == 0 && v[0];
    if (ok && kind == SK_GCP)
        ok = !strcmp(v, "TRUE") || !strcmp(v, "FALSE");
    http_response_free(&r);
    return ok;
}

/* AWS first: its token PUT is the most specific question; Alibaba last
 * because an AWS service with IMDSv1 on would also answer its probe. */
static int spot_probe(void)
{
    if (spot_token_fetch(SK_AWS, "X-aws-ec2-metadata-token-ttl-seconds", SPOT_PROBE_TIMEOUT))
        return SK_AWS;
    if (spot_probe_ok(SK_GCP, "GET", "/computeMetadata/v1/instance/preempted",
                      "Metadata-Flavor: Google\r\n"))
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

static void *spot_thread(void *arg)
{
    (void)arg;
    if (sp.kind == SK_AUTO) {
        sp.kind = spot_probe();
        if (sp.kind == SK_NONE) {
            util_log("spot: no cloud metadata service answered; stop requests come from signals only");
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
        if (q || spot_poll_once())
            break;
        if (spot_wait(sp.poll))
            break;
    }
    return NULL;
}

int spot_start(const spot_opts *o, const char *run_dir)
{
    int kind = -1;
    char host[256], path[sizeof o->metadata_url];
    int port;
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
    if (o->metadata_url[0] &&
        http_parse_url(o->metadata_url, host, sizeof host, &port, path, sizeof path) != 0)
        return util_fail(ST_CONFIG, "spot.metadata_url = %s is not http://host[:port][/path]",
                         o->metadata_url);
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
    pthread_cond_signal(&sp.cv);
    pthread_mutex_unlock(&sp.mu);
    pthread_join(sp.th, NULL);
    sp.running = 0;
}
