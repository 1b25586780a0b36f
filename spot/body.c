/* The per-provider notice body parsers: AWS instance-action JSON, GCP's
 * TRUE/FALSE and maintenance words, Azure Scheduled Events JSON, Alibaba's
 * termination time, and the two time formats they carry. Pure functions
 * over a bounded buffer. */
#include "body.h"
#include "spot.h"

#include "util/util.h"

#include <ctype.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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

/* ---- bodies ---- */

int spot_body_trimmed(const char *p, size_t n, char *out, size_t cap)
{
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

static void spot_body_clear(spot_body *b)
{
    memset(b, 0, sizeof *b);
}

/* A JSON object parsed from exactly body[0..len), or NULL. */
static json_object *spot_body_json(const char *body, size_t len)
{
    json_tokener *tok = json_tokener_new();
    if (!tok)
        return NULL;
    json_object *o = json_tokener_parse_ex(tok, body, (int)len);
    if (o && (json_tokener_get_error(tok) != json_tokener_success || !json_object_is_type(o, json_type_object))) {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(tok);
    return o;
}

static const char *spot_body_str(json_object *o, const char *key)
{
    json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

int spot_body_aws(const char *body, size_t len, spot_body *b)
{
    spot_body_clear(b);
    json_object *o = spot_body_json(body, len);
    const char *action = spot_body_str(o, "action"), *when = spot_body_str(o, "time");
    int rc = SPOT_BODY_NOTICE;
    if (!action || (strcmp(action, "terminate") && strcmp(action, "stop") && strcmp(action, "hibernate"))) {
        b->bad = "no terminate|stop|hibernate action";
        rc = SPOT_BODY_BAD;
        goto out;
    }
    if (!when || spot_parse_iso8601(when, &b->time) != 0) {
        b->bad = "unreadable time; assuming 120 s";
        b->time = 0;
    }
    snprintf(b->detail, sizeof b->detail, "spot instance-action %s at %.40s", action, when ? when : "(no time)");
out:
    json_object_put(o);
    return rc;
}

int spot_body_aws_rebalance(const char *body, size_t len, spot_body *b)
{
    spot_body_clear(b);
    json_object *o = spot_body_json(body, len);
    const char *when = spot_body_str(o, "noticeTime");
    snprintf(b->detail, sizeof b->detail, "rebalance recommendation (noticeTime %.40s)", when ? when : "unknown");
    json_object_put(o);
    return SPOT_BODY_WARNING;
}

int spot_body_gcp(const char *body, size_t len, int maintenance, spot_body *b)
{
    char v[64];
    spot_body_clear(b);
    if (spot_body_trimmed(body, len, v, sizeof v) != 0) {
        b->bad = maintenance ? "not a short printable word" : "not TRUE or FALSE";
        return SPOT_BODY_BAD;
    }
    if (!maintenance) {
        if (strcmp(v, "TRUE") && strcmp(v, "FALSE")) {
            b->bad = "not TRUE or FALSE";
            return SPOT_BODY_BAD;
        }
        snprintf(b->detail, sizeof b->detail, "instance/preempted is TRUE");
        return strcmp(v, "TRUE") ? SPOT_BODY_NONE : SPOT_BODY_NOTICE;
    }
    snprintf(b->detail, sizeof b->detail, "maintenance-event %s", v);
    if (!strcmp(v, "TERMINATE_ON_HOST_MAINTENANCE"))
        return SPOT_BODY_NOTICE;
    return strcmp(v, "MIGRATE_ON_HOST_MAINTENANCE") ? SPOT_BODY_NONE : SPOT_BODY_WARNING;
}

/* Is this event about this VM? Azure names are case-insensitive. */
static int spot_body_azure_mine(json_object *ev, const char *vm)
{
    json_object *res;
    if (!vm[0] || !json_object_object_get_ex(ev, "Resources", &res) || !json_object_is_type(res, json_type_array))
        return 0;
    for (size_t i = 0; i < json_object_array_length(res); i++) {
        json_object *x = json_object_array_get_idx(res, i);
        if (json_object_is_type(x, json_type_string) && !strcasecmp(json_object_get_string(x), vm))
            return 1;
    }
    return 0;
}

/* Reboot and Redeploy end this process as surely as Preempt. */
static int spot_body_azure_ends_us(const char *type)
{
    return !strcmp(type, "Preempt") || !strcmp(type, "Terminate") || !strcmp(type, "Reboot") ||
           !strcmp(type, "Redeploy");
}

static void spot_body_azure_notice(json_object *ev, const char *type, const char *vm, spot_body *b)
{
    const char *nb = spot_body_str(ev, "NotBefore"), *id = spot_body_str(ev, "EventId");
    if (nb && nb[0] && spot_parse_http_date(nb, &b->time) != 0) {
        b->bad = "unreadable NotBefore; assuming 30 s";
        b->time = 0;
    }
    snprintf(b->detail, sizeof b->detail, "scheduled event %.16s for %.64s not before %.40s", type, vm,
             nb && nb[0] ? nb : "(now)");
    if (id && strlen(id) < sizeof b->event_id && strspn(id, "0123456789abcdefABCDEF-") == strlen(id))
        snprintf(b->event_id, sizeof b->event_id, "%s", id);
}

int spot_body_azure(const char *body, size_t len, const char *vm, spot_body *b)
{
    spot_body_clear(b);
    json_object *o = spot_body_json(body, len), *events;
    int rc = SPOT_BODY_NONE;
    if (!o || !json_object_object_get_ex(o, "Events", &events) || !json_object_is_type(events, json_type_array)) {
        b->bad = "no Events array";
        rc = SPOT_BODY_BAD;
        goto out;
    }
    for (size_t i = 0; i < json_object_array_length(events); i++) {
        json_object *ev = json_object_array_get_idx(events, i);
        const char *type = spot_body_str(ev, "EventType");
        if (!type || !spot_body_azure_mine(ev, vm))
            continue;
        if (!strcmp(type, "Freeze")) {
            snprintf(b->detail, sizeof b->detail, "Freeze event scheduled (a pause of a few seconds)");
            rc = SPOT_BODY_WARNING;
        } else if (spot_body_azure_ends_us(type)) {
            spot_body_azure_notice(ev, type, vm, b);
            rc = SPOT_BODY_NOTICE;
            break;
        }
    }
out:
    json_object_put(o);
    return rc;
}

int spot_body_alibaba(const char *body, size_t len, spot_body *b)
{
    char v[64];
    spot_body_clear(b);
    if (spot_body_trimmed(body, len, v, sizeof v) != 0) {
        b->bad = "unexpected answer";
        return SPOT_BODY_BAD;
    }
    if (!v[0])
        return SPOT_BODY_NONE;
    if (spot_parse_iso8601(v, &b->time) != 0) {
        b->bad = "not a UTC time";
        b->time = 0;
        return SPOT_BODY_BAD;
    }
    snprintf(b->detail, sizeof b->detail, "spot termination-time %s", v);
    return SPOT_BODY_NOTICE;
}
