/* What `spotrain bid` computes: reads spot price histories (AWS and Alibaba
 * JSON, CSV), summarises each zone/instance type as a step function of time,
 * picks a zone and a max-price cap with the persistent-request bid model,
 * and prints the table or JSON. Its options and usage are cli/bid.c's. */
#include "bid.h"

#include <ctype.h>
#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "util/util.h"

/* ---- history ---- */

static int bid_add(bid_history *h, const char *zone, const char *type, const char *product,
                   double ts, double price, double origin)
{
    int i;
    for (i = h->n - 1; i >= 0; i--) {
        bid_series *s = &h->s[i];
        if (!strcmp(s->zone, zone) && !strcmp(s->type, type) && !strcmp(s->product, product) &&
            !strcmp(s->currency, h->currency))
            break;
    }
    if (i < 0) {
        if (h->n >= BID_MAX_SERIES)
            return -2;
        if (h->n == h->cap) {
            int cap = h->cap ? h->cap * 2 : 8;
            bid_series *ns = realloc(h->s, (size_t)cap * sizeof *ns);
            if (!ns)
                return -1;
            h->s = ns;
            h->cap = cap;
        }
        i = h->n++;
        bid_series *s = &h->s[i];
        memset(s, 0, sizeof *s);
        snprintf(s->zone, sizeof s->zone, "%s", zone);
        snprintf(s->type, sizeof s->type, "%s", type);
        snprintf(s->product, sizeof s->product, "%s", product);
        snprintf(s->currency, sizeof s->currency, "%s", h->currency);
        snprintf(s->source, sizeof s->source, "%s", h->source);
    }
    /* Most files are grouped by series: move the hit to the end so the next
     * lookup (which scans from the end) finds it at once. */
    if (i != h->n - 1) {
        bid_series t = h->s[i];
        memmove(&h->s[i], &h->s[i + 1], (size_t)(h->n - 1 - i) * sizeof t);
        h->s[h->n - 1] = t;
        i = h->n - 1;
    }
    bid_series *s = &h->s[i];
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 64;
        bid_point *np = realloc(s->pts, (size_t)cap * sizeof *np);
        if (!np)
            return -1;
        s->pts = np;
        s->cap = cap;
    }
    s->pts[s->n++] = (bid_point){ts, price, origin, h->seq++};
    return 0;
}

static int bid_add_checked(bid_history *h, const char *where, const char *zone, const char *type,
                           const char *product, double ts, double price, double origin)
{
    int r = bid_add(h, zone, type, product, ts, price, origin);
    if (r == -2)
        return util_fail(ST_DATA, "%s: more than %d zone/instance-type series; split the input",
                         where, BID_MAX_SERIES);
    if (r)
        return util_fail(ST_SOFTWARE, "%s: out of memory", where);
    return ST_OK;
}

void bid_history_free(bid_history *h)
{
    for (int i = 0; i < h->n; i++)
        free(h->s[i].pts);
    free(h->s);
    memset(h, 0, sizeof *h);
}

static int bid_point_cmp(const void *a, const void *b)
{
    const bid_point *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int bid_series_cmp(const void *a, const void *b)
{
    const bid_series *x = a, *y = b;
    int c = strcmp(x->zone, y->zone);
    if (!c)
        c = strcmp(x->type, y->type);
    if (!c)
        c = strcmp(x->product, y->product);
    return c ? c : strcmp(x->currency, y->currency);
}

int bid_finish(bid_history *h)
{
    long total = 0;
    for (int i = 0; i < h->n; i++) {
        bid_series *s = &h->s[i];
        /* Histories come newest first (AWS) or in any order: sort, and let
         * the record read last win where two share a timestamp. */
        qsort(s->pts, (size_t)s->n, sizeof *s->pts, bid_point_cmp);
        int k = 0;
        for (int j = 0; j < s->n; j++) {
            if (k > 0 && s->pts[k - 1].ts == s->pts[j].ts)
                s->pts[k - 1] = s->pts[j];
            else
                s->pts[k++] = s->pts[j];
        }
        s->n = k;
        total += k;
    }
    if (total == 0)
        return util_fail(ST_DATA, "no price records in the history files; check the query that produced them");
    qsort(h->s, (size_t)h->n, sizeof *h->s, bid_series_cmp);
    return ST_OK;
}

/* ---- JSON ---- */

/* Sets the currency of the records that follow: "" or three letters. */
static int bid_currency(bid_history *h, const char *where, const char *cur)
{
    size_t n = strlen(cur);
    int ok = n == 0 || n == 3;
    for (size_t i = 0; i < n && ok; i++)
        ok = isalpha((unsigned char)cur[i]);
    if (!ok)
        return util_fail(ST_DATA, "%s: currency '%.20s' is not a three-letter code such as USD or CNY", where, cur);
    for (size_t i = 0; i <= n; i++)
        h->currency[i] = (char)toupper((unsigned char)cur[i]);
    return ST_OK;
}

static int bid_json_str(json_object *o, const char *key, const char **out)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return -1;
    *out = json_object_get_string(v);
    return strlen(*out) < 64 ? 0 : -1;
}

/* A price: a JSON number or a numeric string (AWS sends strings). */
static int bid_json_price(json_object *o, const char *key, double *out)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v))
        return -1;
    if (json_object_is_type(v, json_type_string)) {
        if (util_parse_f64(json_object_get_string(v), out) != 0)
            return -1;
    } else if (json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int)) {
        *out = json_object_get_double(v);
    } else {
        return -1;
    }
    return isfinite(*out) && *out >= 0 ? 0 : -1;
}

static int bid_json_records(bid_history *h, const char *name, json_object *arr, const char *path,
                            int alibaba)
{
    size_t n = json_object_array_length(arr);
    if (n == 0)
        return util_fail(ST_DATA, "%s: %s is empty: no price records (widen the query's time range or filters)",
                         name, path);
    for (size_t i = 0; i < n; i++) {
        json_object *r = json_object_array_get_idx(arr, i);
        const char *zone, *type, *stamp, *product = "";
        double price, origin = 0, ts;
        char where[512];
        snprintf(where, sizeof where, "%s: %s[%zu]", name, path, i);
        if (!json_object_is_type(r, json_type_object))
            return util_fail(ST_DATA, "%s is not an object", where);
        if (bid_json_str(r, alibaba ? "ZoneId" : "AvailabilityZone", &zone) ||
            bid_json_str(r, "InstanceType", &type))
            return util_fail(ST_DATA, "%s: missing or non-string %s/InstanceType (at most 63 characters)",
                             where, alibaba ? "ZoneId" : "AvailabilityZone");
        if (bid_json_str(r, "Timestamp", &stamp) || util_parse_time(stamp, &ts))
            return util_fail(ST_DATA, "%s: Timestamp missing or not ISO 8601 (e.g. 2024-05-01T12:00:00Z)", where);
        if (bid_json_price(r, "SpotPrice", &price))
            return util_fail(ST_DATA, "%s: SpotPrice missing, not a number, negative or not finite", where);
        if (alibaba) {
            json_object *v;
            if (json_object_object_get_ex(r, "OriginPrice", &v) && bid_json_price(r, "OriginPrice", &origin))
                return util_fail(ST_DATA, "%s: OriginPrice is not a non-negative number", where);
        } else {
            json_object *v;
            if (json_object_object_get_ex(r, "ProductDescription", &v) &&
                bid_json_str(r, "ProductDescription", &product))
                return util_fail(ST_DATA, "%s: ProductDescription is not a string (at most 63 characters)", where);
        }
        int rc = bid_add_checked(h, where, zone, type, product, ts, price, origin);
        if (rc)
            return rc;
    }
    return ST_OK;
}

static int bid_parse_json(bid_history *h, const char *name, const char *buf, size_t len)
{
    int rc = ST_OK;
    json_object *root = NULL, *arr, *sp;
    json_tokener *tok = json_tokener_new();
    if (!tok)
        return util_fail(ST_SOFTWARE, "%s: out of memory", name);
    root = json_tokener_parse_ex(tok, buf, (int)len);
    enum json_tokener_error err = json_tokener_get_error(tok);
    if (!root || err != json_tokener_success) {
        rc = util_fail(ST_DATA, "%s: not valid JSON near byte %zu (%s); is the file truncated?", name,
                       json_tokener_get_parse_end(tok),
                       err == json_tokener_continue ? "unexpected end" : json_tokener_error_desc(err));
        goto out;
    }
    for (size_t i = json_tokener_get_parse_end(tok); i < len; i++) {
        if (!isspace((unsigned char)buf[i])) {
            rc = util_fail(ST_DATA, "%s: trailing data after the JSON document at byte %zu", name, i);
            goto out;
        }
    }
    if (json_object_is_type(root, json_type_object) &&
        json_object_object_get_ex(root, "SpotPriceHistory", &arr)) {
        if (!json_object_is_type(arr, json_type_array)) {
            rc = util_fail(ST_DATA, "%s: SpotPriceHistory is not an array", name);
            goto out;
        }
        snprintf(h->source, sizeof h->source, "aws");
        snprintf(h->currency, sizeof h->currency, "USD");   /* AWS prices only in USD */
        rc = bid_json_records(h, name, arr, "SpotPriceHistory", 0);
    } else if (json_object_is_type(root, json_type_object) &&
               json_object_object_get_ex(root, "SpotPrices", &sp)) {
        if (!json_object_is_type(sp, json_type_object) ||
            !json_object_object_get_ex(sp, "SpotPriceType", &arr) ||
            !json_object_is_type(arr, json_type_array)) {
            rc = util_fail(ST_DATA, "%s: SpotPrices.SpotPriceType is not an array", name);
            goto out;
        }
        json_object *cur;
        const char *cs = "";
        /* The response says its currency (CNY on the China site, USD on the
         * international one); without it the prices compare with nothing. */
        if (json_object_object_get_ex(root, "Currency", &cur) && json_object_is_type(cur, json_type_string))
            cs = json_object_get_string(cur);
        if (bid_currency(h, name, cs) != ST_OK) {
            rc = ST_DATA;
            goto out;
        }
        snprintf(h->source, sizeof h->source, "alibaba");
        rc = bid_json_records(h, name, arr, "SpotPrices.SpotPriceType", 1);
    } else {
        rc = util_fail(ST_DATA, "%s: JSON without SpotPriceHistory (AWS describe-spot-price-history) "
                       "or SpotPrices.SpotPriceType (Alibaba DescribeSpotPriceHistory)", name);
    }
out:
    json_object_put(root);
    json_tokener_free(tok);
    return rc;
}

/* ---- CSV: timestamp,zone,instance_type,price ---- */

static char *bid_trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = 0;
    if (e - s >= 2 && s[0] == '"' && e[-1] == '"') {
        e[-1] = 0;
        s++;
    }
    return s;
}

static int bid_parse_csv(bid_history *h, const char *name, const char *buf, size_t len)
{
    int rc = ST_OK, records = 0, seen_line = 0;
    snprintf(h->source, sizeof h->source, "csv");
    char line[1024];
    size_t pos = 0;
    for (long lineno = 1; pos < len; lineno++) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        size_t n = (nl ? (size_t)(nl - buf) : len) - pos;
        if (n >= sizeof line)
            return util_fail(ST_DATA, "%s:%ld: line longer than %zu bytes; expected timestamp,zone,instance_type,price",
                             name, lineno, sizeof line - 1);
        memcpy(line, buf + pos, n);
        line[n] = 0;
        pos += n + 1;
        char *l = bid_trim(line);
        if (!*l || *l == '#')
            continue;
        char *f[5];
        int nf = 0;
        for (char *p = l; nf < 5;) {
            f[nf++] = p;
            if (nf == 5)
                break;
            char *c = strchr(p, ',');
            if (!c)
                break;
            *c = 0;
            p = c + 1;
        }
        if (nf < 4 || strchr(f[nf - 1], ',')) {
            rc = util_fail(ST_DATA, "%s:%ld: expected 4 or 5 fields timestamp,zone,instance_type,price[,currency]",
                           name, lineno);
            goto out;
        }
        for (int i = 0; i < nf; i++)
            f[i] = bid_trim(f[i]);
        double ts, price;
        int first = !seen_line;
        seen_line = 1;
        if (util_parse_time(f[0], &ts) != 0) {
            if (first && util_parse_f64(f[3], &price) != 0)
                continue;   /* the optional header line */
            rc = util_fail(ST_DATA, "%s:%ld: timestamp '%.40s' is not ISO 8601 or epoch seconds", name, lineno, f[0]);
            goto out;
        }
        if (util_parse_f64(f[3], &price) != 0 || price < 0) {
            rc = util_fail(ST_DATA, "%s:%ld: price '%.40s' is not a non-negative number", name, lineno, f[3]);
            goto out;
        }
        if (!*f[1] || !*f[2] || strlen(f[1]) > 63 || strlen(f[2]) > 63) {
            rc = util_fail(ST_DATA, "%s:%ld: zone and instance type must be 1..63 characters", name, lineno);
            goto out;
        }
        char where[512];
        snprintf(where, sizeof where, "%s:%ld", name, lineno);
        rc = bid_currency(h, where, nf == 5 ? f[4] : "");
        if (rc)
            goto out;
        rc = bid_add_checked(h, where, f[1], f[2], "", ts, price, 0);
        if (rc)
            goto out;
        records++;
    }
    if (records == 0)
        rc = util_fail(ST_DATA, "%s: no price records (expected lines timestamp,zone,instance_type,price)", name);
out:
    return rc;
}

int bid_parse(bid_history *h, const char *name, const char *buf, size_t len)
{
    if (len > BID_MAX_FILE_BYTES)
        return util_fail(ST_DATA, "%s: %zu bytes is more than the %u MiB a price history may have; split it",
                         name, len, BID_MAX_FILE_BYTES >> 20);
    if (memchr(buf, 0, len))
        return util_fail(ST_DATA, "%s: contains NUL bytes; not a JSON or CSV price history", name);
    size_t i = 0;
    while (i < len && isspace((unsigned char)buf[i]))
        i++;
    if (i == len)
        return util_fail(ST_DATA, "%s: empty file; no price records", name);
    if (buf[i] == '{' || buf[i] == '[')
        return bid_parse_json(h, name, buf, len);
    return bid_parse_csv(h, name, buf, len);
}

/* ---- statistics ---- */

/* Time each record's price held: until the next record, the last until end.
 * A history with no extent (one record) weighs every record equally. */
static double bid_durations(const bid_series *s, double end, double *d)
{
    double total = 0;
    for (int i = 0; i < s->n; i++) {
        double next = i + 1 < s->n ? s->pts[i + 1].ts : end;
        d[i] = next > s->pts[i].ts ? next - s->pts[i].ts : 0;
        total += d[i];
    }
    if (total <= 0) {
        for (int i = 0; i < s->n; i++)
            d[i] = 1;
        total = s->n;
    }
    return total;
}

typedef struct {
    double price, w;
} bid_pw;

static int bid_pw_cmp(const void *a, const void *b)
{
    const bid_pw *x = a, *y = b;
    return x->price < y->price ? -1 : x->price > y->price;
}

static double bid_quantile(const bid_pw *pw, int n, double total, double q)
{
    double cum = 0;
    for (int i = 0; i < n; i++) {
        cum += pw[i].w;
        if (cum >= q * total - 1e-9 * total)
            return pw[i].price;
    }
    return pw[n - 1].price;
}

static void bid_trend(const bid_series *s, double end, double days, bid_stats *st)
{
    double w0 = end - days * 86400.0;
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    int n = 0;
    double prev = NAN;
    /* Regress over the step function's corners inside the window: the price
     * in effect when the window opens, every change, and the price at end. */
    for (int i = 0; i < s->n; i++) {
        double t = s->pts[i].ts, y = s->pts[i].price;
        if (t < w0) {
            prev = y;
            continue;
        }
        if (n == 0 && !isnan(prev)) {
            sx += 0;
            sy += prev;
            n++;
        }
        double x = (t - w0) / 86400.0;
        sx += x, sy += y, sxx += x * x, sxy += x * y;
        n++;
    }
    if (n == 0 && !isnan(prev)) {
        sy += prev;
        n++;
    }
    if (end > s->pts[s->n - 1].ts && n > 0) {
        double x = days, y = s->pts[s->n - 1].price;
        sx += x, sy += y, sxx += x * x, sxy += x * y;
        n++;
    }
    double den = n * sxx - sx * sx;
    st->trend_points = n;
    st->trend_per_day = n >= 2 && den > 1e-12 ? (n * sxy - sx * sy) / den : 0;
}

int bid_series_stats(const bid_series *s, double end, double trend_days, bid_stats *st)
{
    memset(st, 0, sizeof *st);
    double *d = malloc((size_t)s->n * sizeof *d);
    bid_pw *pw = malloc((size_t)s->n * sizeof *pw);
    if (!d || !pw) {
        free(d);
        free(pw);
        return util_fail(ST_SOFTWARE, "out of memory summarising %s %s", s->zone, s->type);
    }
    double total = bid_durations(s, end, d), sum = 0;
    for (int i = 0; i < s->n; i++) {
        pw[i] = (bid_pw){s->pts[i].price, d[i]};
        sum += d[i] * s->pts[i].price;
        if (s->pts[i].origin > 0)
            st->origin = s->pts[i].origin;
    }
    qsort(pw, (size_t)s->n, sizeof *pw, bid_pw_cmp);
    st->samples = s->n;
    st->t0 = s->pts[0].ts;
    st->t1 = end > s->pts[s->n - 1].ts ? end : s->pts[s->n - 1].ts;
    st->hours = (st->t1 - st->t0) / 3600.0;
    st->mean = sum / total;
    st->p50 = bid_quantile(pw, s->n, total, 0.50);
    st->p95 = bid_quantile(pw, s->n, total, 0.95);
    st->min = pw[0].price;
    st->max = pw[s->n - 1].price;
    st->last = s->pts[s->n - 1].price;
    bid_trend(s, st->t1, trend_days, st);
    free(d);
    free(pw);
    return ST_OK;
}

double bid_frac_above(const bid_series *s, double end, double cap)
{
    double above = 0, total = 0;
    for (int i = 0; i < s->n; i++) {
        double next = i + 1 < s->n ? s->pts[i + 1].ts : end;
        double dt = next > s->pts[i].ts ? next - s->pts[i].ts : 0;
        total += dt;
        if (s->pts[i].price > cap)
            above += dt;
    }
    if (total <= 0) {
        int k = 0;
        for (int i = 0; i < s->n; i++)
            k += s->pts[i].price > cap;
        return s->n ? (double)k / s->n : 0;
    }
    return above / total;
}

/* The model, given the cap's availability F, up-crossing rate u (per hour of
 * history) and mean price paid while running. Running hours R satisfy
 * R = T + r * (interruptions per running hour) * R, since recovery is billed
 * running time too; the request waits (unbilled) while the price is above
 * the cap, so wall time is R / F. */
static void bid_model(bid_eval *e, double hours, double restart_hours)
{
    if (e->avail <= 0) {
        e->int_per_run_hour = INFINITY;
        e->run_hours = e->wall_hours = e->interruptions = e->cost = INFINITY;
        return;
    }
    e->int_per_run_hour = e->upcross_per_hour / e->avail;
    double overhead = restart_hours * e->int_per_run_hour;
    if (overhead >= 1) {
        e->run_hours = e->wall_hours = e->interruptions = e->cost = INFINITY;
        return;
    }
    e->run_hours = hours / (1 - overhead);
    e->wall_hours = e->run_hours / e->avail;
    e->interruptions = e->run_hours * e->int_per_run_hour;
    e->cost = e->mean_paid * e->run_hours;
}

static double bid_span_hours(const bid_series *s, double end)
{
    double last = end > s->pts[s->n - 1].ts ? end : s->pts[s->n - 1].ts;
    return (last - s->pts[0].ts) / 3600.0;
}

void bid_eval_cap(const bid_series *s, double end, double cap, double hours,
                  double restart_hours, bid_eval *e)
{
    memset(e, 0, sizeof *e);
    e->cap = cap;
    double below = 0, total = 0, paid = 0;
    int ups = 0;
    for (int i = 0; i < s->n; i++) {
        double next = i + 1 < s->n ? s->pts[i + 1].ts : end;
        double dt = next > s->pts[i].ts ? next - s->pts[i].ts : 0;
        total += dt;
        if (s->pts[i].price <= cap) {
            below += dt;
            paid += dt * s->pts[i].price;
        }
        if (i > 0 && s->pts[i - 1].price <= cap && s->pts[i].price > cap)
            ups++;
    }
    if (total <= 0) {   /* one instant of history: trust the price, no rate */
        for (int i = 0; i < s->n; i++)
            if (s->pts[i].price <= cap) {
                below += 1;
                paid += s->pts[i].price;
            }
        total = s->n;
    }
    double span = bid_span_hours(s, end);
    e->avail = below / total;
    e->mean_paid = below > 0 ? paid / below : 0;
    e->upcross_per_hour = span > 0 ? ups / span : 0;
    bid_model(e, hours, restart_hours);
}

static int bid_dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int bid_find(const double *v, int n, double x)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (v[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int bid_best_cap(const bid_series *s, double end, double hours, double restart_hours,
                 double deadline_hours, bid_eval *best)
{
    int n = s->n, found = -1;
    double *caps = malloc((size_t)n * sizeof *caps);
    double *below = calloc((size_t)n + 1, sizeof *below);
    double *paid = calloc((size_t)n + 1, sizeof *paid);
    long *ups = calloc((size_t)n + 1, sizeof *ups);
    double *d = malloc((size_t)n * sizeof *d);
    if (!caps || !below || !paid || !ups || !d)
        goto out;
    for (int i = 0; i < n; i++)
        caps[i] = s->pts[i].price;
    qsort(caps, (size_t)n, sizeof *caps, bid_dbl_cmp);
    int m = 0;
    for (int i = 0; i < n; i++)
        if (m == 0 || caps[i] != caps[m - 1])
            caps[m++] = caps[i];
    /* One sweep instead of one pass per cap: time and spend at each distinct
     * price, and each rise a -> b is an up-crossing for every cap in [a, b). */
    double total = bid_durations(s, end, d);
    for (int i = 0; i < n; i++) {
        int k = bid_find(caps, m, s->pts[i].price);
        below[k] += d[i];
        paid[k] += d[i] * s->pts[i].price;
        if (i > 0 && s->pts[i - 1].price < s->pts[i].price) {
            ups[bid_find(caps, m, s->pts[i - 1].price)]++;
            ups[k]--;
        }
    }
    double span = bid_span_hours(s, end), cb = 0, cp = 0;
    long cu = 0;
    for (int k = 0; k < m; k++) {
        bid_eval e = {0};
        cb += below[k];
        cp += paid[k];
        cu += ups[k];
        e.cap = caps[k];
        e.avail = cb / total;
        e.mean_paid = cb > 0 ? cp / cb : 0;
        e.upcross_per_hour = span > 0 ? cu / span : 0;
        bid_model(&e, hours, restart_hours);
        if (!isfinite(e.cost) || (deadline_hours > 0 && e.wall_hours > deadline_hours))
            continue;
        if (found < 0 || e.cost < best->cost * (1 - 1e-12) ||
            (e.cost <= best->cost * (1 + 1e-12) && e.wall_hours < best->wall_hours)) {
            *best = e;
            found = k;
        }
    }
out:
    free(caps);
    free(below);
    free(paid);
    free(ups);
    free(d);
    return found >= 0 ? 0 : -1;
}

/* ---- the recommendation ---- */

/* GPU counts we are sure of; --gpus TYPE=N names the others. */
static const struct {
    const char *type;
    int gpus;
} bid_gpu_table[] = {
    {"p3.2xlarge", 1},      {"p3.8xlarge", 4},    {"p3.16xlarge", 8},   {"p4d.24xlarge", 8},
    {"p4de.24xlarge", 8},   {"p5.48xlarge", 8},   {"g5.xlarge", 1},     {"g5.48xlarge", 8},
    {"ecs.gn7i-c8g1.2xlarge", 1},
};

int bid_type_gpus(const char *type)
{
    for (size_t i = 0; i < sizeof bid_gpu_table / sizeof bid_gpu_table[0]; i++)
        if (!strcmp(bid_gpu_table[i].type, type))
            return bid_gpu_table[i].gpus;
    return 0;
}

static int bid_gpus(const bid_opts *o, const char *type)
{
    for (int i = o->n_gpu - 1; i >= 0; i--)
        if (!strcmp(o->gpu_type[i], type))
            return o->gpu_count[i];
    return bid_type_gpus(type);
}

static int bid_load(bid_history *h, const bid_opts *o)
{
    for (int i = 0; i < o->n_files; i++) {
        struct stat st;
        char *buf = NULL;
        size_t len = 0;
        if (stat(o->files[i], &st) != 0)
            return util_fail(errno == ENOENT ? ST_NOINPUT : ST_IOERR, "cannot read %s: %s",
                             o->files[i], strerror(errno));
        if (!S_ISREG(st.st_mode))
            return util_fail(ST_NOINPUT, "%s is not a regular file", o->files[i]);
        if ((unsigned long long)st.st_size > BID_MAX_FILE_BYTES)
            return util_fail(ST_DATA, "%s: %lld bytes is more than the %u MiB a price history may have; split it",
                             o->files[i], (long long)st.st_size, BID_MAX_FILE_BYTES >> 20);
        int rc = util_read_file(o->files[i], &buf, &len);
        if (!rc)
            rc = bid_parse(h, o->files[i], buf, len);
        free(buf);
        if (rc)
            return rc;
    }
    return bid_finish(h);
}

typedef struct {
    bid_stats st;
    bid_eval best;      /* the cheapest cap */
    bid_eval nocap;     /* cap at the highest price seen: never price-interrupted */
    int ok;             /* best is valid */
    double ondemand;
    int gpus;           /* of the instance type; 0 unknown */
    int group;          /* index into the groups that are ranked apart */
    double rank;        /* expected cost, per GPU with --per-gpu */
} bid_row;

/* Series that may be ranked against each other: one currency, and one
 * instance type unless --per-gpu. best is the cheapest row of the group. */
typedef struct {
    const char *type;       /* NULL with --per-gpu */
    const char *currency;
    int best;
} bid_group;

static const double bid_mults[] = {1.1, 1.25, 1.5, 2.0};
#define BID_NMULT 4
/* Availability under this at the recommended cap is worth a warning. */
#define BID_LOW_AVAIL 0.10

static json_object *bid_jnum(double v)
{
    return util_json_num(v);
}

static void bid_jeval(json_object *o, const bid_eval *e, double last, double ondemand, double hours)
{
    json_object_object_add(o, "cap", bid_jnum(e->cap));
    json_object_object_add(o, "multiplier", bid_jnum(last > 0 ? e->cap / last : NAN));
    json_object_object_add(o, "availability", bid_jnum(e->avail));
    json_object_object_add(o, "interruptions_per_running_hour", bid_jnum(e->int_per_run_hour));
    json_object_object_add(o, "expected_interruptions", bid_jnum(e->interruptions));
    json_object_object_add(o, "mean_price_paid", bid_jnum(e->mean_paid));
    json_object_object_add(o, "running_hours", bid_jnum(e->run_hours));
    json_object_object_add(o, "wall_hours", bid_jnum(e->wall_hours));
    json_object_object_add(o, "expected_cost", bid_jnum(e->cost));
    if (ondemand > 0)
        json_object_object_add(o, "saving_vs_ondemand", bid_jnum(1 - e->cost / (ondemand * hours)));
}

static const char bid_note_aws[] =
    "On AWS since 2017 the spot price no longer depends on bids and interruptions are mostly "
    "capacity-driven: the cap bounds what you spend, it does not buy availability.";

static int bid_has_aws(const bid_history *h)
{
    for (int i = 0; i < h->n; i++)
        if (!strcmp(h->s[i].source, "aws"))
            return 1;
    return 0;
}

/* " USD" or "" (unknown currency, as CSV without the column). */
static const char *bid_cur(const char *c, char buf[16])
{
    snprintf(buf, 16, "%s%s", *c ? " " : "", c);
    return buf;
}

/* Why the recommended cap may not do what one expects; "" when fine. */
static void bid_warning(const bid_row *r, char *out, size_t cap, int which)
{
    out[0] = 0;
    if (which == 0 && r->best.cap < r->st.last)
        snprintf(out, cap, "the cap %.4f is below the current price %.4f: the request would not run now, "
                 "only once the price falls to the cap", r->best.cap, r->st.last);
    else if (which == 1 && r->best.avail < BID_LOW_AVAIL)
        snprintf(out, cap, "at this cap the price was low enough only %.1f%% of the time: expect to wait "
                 "%.1f wall hours", 100 * r->best.avail, r->best.wall_hours);
}

static void bid_print_json(const bid_history *h, const bid_row *rows, const bid_group *g, int ng,
                           const bid_opts *o)
{
    json_object *root = json_object_new_object(), *arr = json_object_new_array();
    json_object *recs = json_object_new_array();
    for (int i = 0; i < h->n; i++) {
        const bid_series *s = &h->s[i];
        const bid_row *r = &rows[i];
        if (!r->st.samples)
            continue;
        json_object *z = json_object_new_object(), *above = json_object_new_array();
        char t0[48], t1[48];
        util_iso8601(r->st.t0, t0);
        util_iso8601(r->st.t1, t1);
        json_object_object_add(z, "zone", json_object_new_string(s->zone));
        json_object_object_add(z, "instance_type", json_object_new_string(s->type));
        if (s->product[0])
            json_object_object_add(z, "product", json_object_new_string(s->product));
        json_object_object_add(z, "currency", s->currency[0] ? json_object_new_string(s->currency) : NULL);
        if (r->gpus > 0)
            json_object_object_add(z, "gpus", json_object_new_int(r->gpus));
        json_object_object_add(z, "samples", json_object_new_int(r->st.samples));
        json_object_object_add(z, "from", json_object_new_string(t0));
        json_object_object_add(z, "to", json_object_new_string(t1));
        json_object_object_add(z, "hours", bid_jnum(r->st.hours));
        json_object_object_add(z, "mean", bid_jnum(r->st.mean));
        json_object_object_add(z, "p50", bid_jnum(r->st.p50));
        json_object_object_add(z, "p95", bid_jnum(r->st.p95));
        json_object_object_add(z, "max", bid_jnum(r->st.max));
        json_object_object_add(z, "last", bid_jnum(r->st.last));
        json_object_object_add(z, "trend_per_day", bid_jnum(r->st.trend_per_day));
        for (int k = 0; k < BID_NMULT; k++) {
            json_object *a = json_object_new_object();
            double cap = r->st.last * bid_mults[k];
            json_object_object_add(a, "cap", bid_jnum(cap));
            json_object_object_add(a, "fraction_above", bid_jnum(bid_frac_above(s, r->st.t1, cap)));
            json_object_array_add(above, a);
        }
        json_object_object_add(z, "time_above_cap", above);
        if (r->ondemand > 0)
            json_object_object_add(z, "ondemand", bid_jnum(r->ondemand));
        if (r->ok) {
            json_object *b = json_object_new_object();
            bid_jeval(b, &r->best, r->st.last, r->ondemand, o->hours);
            json_object_object_add(z, "best_cap", b);
        }
        json_object *nc = json_object_new_object();
        bid_jeval(nc, &r->nocap, r->st.last, r->ondemand, o->hours);
        json_object_object_add(z, "cap_at_max", nc);
        json_object_array_add(arr, z);
    }
    json_object_object_add(root, "hours", bid_jnum(o->hours));
    json_object_object_add(root, "restart_minutes", bid_jnum(o->restart_minutes));
    json_object_object_add(root, "per_gpu", json_object_new_boolean(o->per_gpu));
    json_object_object_add(root, "series", arr);
    for (int k = 0; k < ng; k++) {
        int b = g[k].best;
        if (b < 0)
            continue;
        const bid_row *r = &rows[b];
        json_object *rec = json_object_new_object(), *warn = json_object_new_array();
        json_object_object_add(rec, "zone", json_object_new_string(h->s[b].zone));
        json_object_object_add(rec, "instance_type", json_object_new_string(h->s[b].type));
        json_object_object_add(rec, "currency", h->s[b].currency[0] ? json_object_new_string(h->s[b].currency) : NULL);
        bid_jeval(rec, &r->best, r->st.last, r->ondemand, o->hours);
        json_object_object_add(rec, "current_price", bid_jnum(r->st.last));
        if (o->per_gpu)
            json_object_object_add(rec, "expected_cost_per_gpu", bid_jnum(r->rank));
        for (int w = 0; w < 2; w++) {
            char line[512];
            bid_warning(r, line, sizeof line, w);
            if (line[0])
                json_object_array_add(warn, json_object_new_string(line));
        }
        json_object_object_add(rec, "warnings", warn);
        json_object_array_add(recs, rec);
    }
    /* One comparable group keeps the single "recommendation" older
     * consumers read; "recommendations" has one per group always. */
    if (json_object_array_length(recs) == 1 && ng == 1)
        json_object_object_add(root, "recommendation", json_object_get(json_object_array_get_idx(recs, 0)));
    json_object_object_add(root, "recommendations", recs);
    json_object_object_add(root, "model", json_object_new_string(
        "persistent request (Zheng et al., How to Bid the Cloud, SIGCOMM 2015) on the empirical "
        "price distribution: cost(cap) = E[price | price <= cap] * T / (1 - r * u(cap) / F(cap))"));
    if (bid_has_aws(h))
        json_object_object_add(root, "note", json_object_new_string(bid_note_aws));
    printf("%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(root);
}

static void bid_fmt_h(char *b, size_t n, double v)
{
    if (isfinite(v))
        snprintf(b, n, "%.1f", v);
    else
        snprintf(b, n, "never");
}

static void bid_print_table(const bid_history *h, const bid_row *rows, const bid_group *g, int ng,
                            const bid_opts *o)
{
    char t0[48], t1[48], cb[16];
    double lo = INFINITY, hi = 0;
    for (int i = 0; i < h->n; i++)
        if (rows[i].st.samples) {
            lo = fmin(lo, rows[i].st.t0);
            hi = fmax(hi, rows[i].st.t1);
        }
    util_iso8601(lo, t0);
    util_iso8601(hi, t1);
    printf("spot price history: %d zone/type series, %s .. %s\n\n", h->n, t0, t1);
    printf("%-36s %7s %8s %9s %9s %9s %9s %9s %10s  %% time above last x1.1 x1.25 x1.5 x2\n",
           "zone / instance type", "samples", "hours", "mean", "p50", "p95", "max", "last", "trend/day");
    for (int i = 0; i < h->n; i++) {
        const bid_series *s = &h->s[i];
        const bid_row *r = &rows[i];
        char name[256];
        snprintf(name, sizeof name, "%s %s%s%s%s%s", s->zone, s->type, s->product[0] ? " [" : "",
                 s->product, s->product[0] ? "]" : "", bid_cur(s->currency, cb));
        printf("%-36s %7d %8.1f %9.4f %9.4f %9.4f %9.4f %9.4f %+10.4f ", name, r->st.samples,
               r->st.hours, r->st.mean, r->st.p50, r->st.p95, r->st.max, r->st.last, r->st.trend_per_day);
        for (int k = 0; k < BID_NMULT; k++)
            printf(" %5.1f", 100 * bid_frac_above(s, r->st.t1, r->st.last * bid_mults[k]));
        printf("\n");
    }
    printf("\njob: %.1f running hours, %.0f min recovery per interruption; persistent request model\n"
           "(Zheng et al., SIGCOMM 2015) on each zone's empirical price distribution:\n",
           o->hours, o->restart_minutes);
    printf("%-36s %9s %6s %6s %8s %9s %9s %12s %8s\n", "zone / instance type", "best cap", "x last",
           "avail", "int/run-h", "run h", "wall h", "exp. cost", "saving");
    for (int i = 0; i < h->n; i++) {
        const bid_row *r = &rows[i];
        char name[200], rh[32], wh[32], sv[32] = "-";
        snprintf(name, sizeof name, "%s %s", h->s[i].zone, h->s[i].type);
        if (!r->ok) {
            printf("%-36s no cap finishes the job%s\n", name, o->deadline > 0 ? " by the deadline" : "");
            continue;
        }
        bid_fmt_h(rh, sizeof rh, r->best.run_hours);
        bid_fmt_h(wh, sizeof wh, r->best.wall_hours);
        if (r->ondemand > 0)
            snprintf(sv, sizeof sv, "%.1f%%", 100 * (1 - r->best.cost / (r->ondemand * o->hours)));
        printf("%-36s %9.4f %6.2f %5.1f%% %8.4f %9s %9s %12.2f %8s", name, r->best.cap,
               r->st.last > 0 ? r->best.cap / r->st.last : 0, 100 * r->best.avail,
               r->best.int_per_run_hour, rh, wh, r->best.cost, sv);
        if (o->per_gpu)
            printf("  %.2f per GPU (%d GPUs)", r->rank, r->gpus);
        printf("\n");
    }
    printf("\n");
    if (ng > 1)
        printf("%d groups are ranked apart (%s): no recommendation compares them.\n",
               ng, o->per_gpu ? "one per currency" : "one per instance type and currency; --per-gpu ranks instance types by cost per GPU");
    for (int k = 0; k < ng; k++) {
        int b = g[k].best;
        char gname[96];
        if (ng > 1)
            snprintf(gname, sizeof gname, " for %s%s", g[k].type ? g[k].type : "any type",
                     bid_cur(g[k].currency, cb));
        else
            gname[0] = 0;
        if (b < 0) {
            printf("recommendation%s: none; no zone finishes the job under the model (raise --deadline or\n"
                   "lower --restart-minutes)\n", gname);
            continue;
        }
        const bid_row *r = &rows[b];
        const char *cur = bid_cur(h->s[b].currency, cb);
        printf("recommendation%s: %s %s, max price %.4f%s/h (%.2fx the current %.4f); expected %.2f\n"
               "interruptions, %.1f running hours, %.1f wall hours, cost %.2f%s",
               gname, h->s[b].zone, h->s[b].type, r->best.cap, cur,
               r->st.last > 0 ? r->best.cap / r->st.last : 0, r->st.last, r->best.interruptions,
               r->best.run_hours, r->best.wall_hours, r->best.cost, cur);
        if (o->per_gpu)
            printf(" (%.2f per GPU of %d)", r->rank, r->gpus);
        if (r->ondemand > 0)
            printf(" (saving %.1f%% against on-demand %.4f%s/h = %.2f)",
                   100 * (1 - r->best.cost / (r->ondemand * o->hours)), r->ondemand, cur, r->ondemand * o->hours);
        printf(".\nWith the cap at the highest price seen (%.4f) the job is never price-interrupted:\n"
               "cost %.2f.\n", r->nocap.cap, r->nocap.cost);
        for (int w = 0; w < 2; w++) {
            char line[512];
            bid_warning(r, line, sizeof line, w);
            if (line[0])
                printf("WARNING: %s\n", line);
        }
    }
    if (bid_has_aws(h))
        printf("note: %s\n", bid_note_aws);
}

/* Puts each kept row into its group (same currency, and same instance type
 * unless per_gpu) and finds each group's cheapest. ST_USAGE when --per-gpu
 * meets a type whose GPU count is unknown. */
static int bid_group_rows(const bid_history *h, bid_row *rows, const bid_opts *o, bid_group *g, int *ng)
{
    *ng = 0;
    for (int i = 0; i < h->n; i++) {
        bid_row *r = &rows[i];
        const bid_series *s = &h->s[i];
        r->gpus = bid_gpus(o, s->type);
        if (o->per_gpu && r->gpus <= 0)
            return util_fail(ST_USAGE, "bid --per-gpu: GPUs of instance type %s unknown; pass --gpus %s=N",
                             s->type, s->type);
        r->rank = r->best.cost / (o->per_gpu ? r->gpus : 1);
        int k;
        for (k = 0; k < *ng; k++)
            if (!strcmp(g[k].currency, s->currency) && (o->per_gpu || !strcmp(g[k].type, s->type)))
                break;
        if (k == *ng) {
            g[k].type = o->per_gpu ? NULL : s->type;
            g[k].currency = s->currency;
            g[k].best = -1;
            (*ng)++;
        }
        r->group = k;
        if (r->ok && (g[k].best < 0 || r->rank < rows[g[k].best].rank))
            g[k].best = i;
    }
    return ST_OK;
}

int bid_run(const bid_opts *o)
{
    bid_history h = {0};
    bid_row *rows = NULL;
    bid_group *groups = NULL;
    int rc, ng = 0;
    rc = bid_load(&h, o);
    if (rc)
        goto out;
    if (o->type) {   /* drop the other types from the listing */
        int k = 0;
        for (int i = 0; i < h.n; i++) {
            if (strcmp(h.s[i].type, o->type) != 0)
                free(h.s[i].pts);
            else
                h.s[k++] = h.s[i];
        }
        h.n = k;
        if (!k) {
            rc = util_fail(ST_DATA, "no records for instance type %s in the history files", o->type);
            goto out;
        }
    }
    rows = calloc((size_t)h.n, sizeof *rows);
    groups = calloc((size_t)h.n, sizeof *groups);
    if (!rows || !groups) {
        rc = util_fail(ST_SOFTWARE, "out of memory");
        goto out;
    }
    double end = 0;
    for (int i = 0; i < h.n; i++)
        if (h.s[i].n)
            end = fmax(end, h.s[i].pts[h.s[i].n - 1].ts);
    for (int i = 0; i < h.n; i++) {
        bid_series *s = &h.s[i];
        bid_row *r = &rows[i];
        /* Every series is measured up to the newest record of any file, so
         * zones are compared over the same window. */
        rc = bid_series_stats(s, end, o->trend_days, &r->st);
        if (rc)
            goto out;
        r->ondemand = o->ondemand > 0 ? o->ondemand : r->st.origin;
        bid_eval_cap(s, end, r->st.max, o->hours, o->restart_minutes / 60.0, &r->nocap);
        r->ok = bid_best_cap(s, end, o->hours, o->restart_minutes / 60.0, o->deadline, &r->best) == 0;
    }
    rc = bid_group_rows(&h, rows, o, groups, &ng);
    if (rc)
        goto out;
    if (o->have_alert) {
        for (int k = 1; k < ng; k++)
            if (strcmp(groups[k].currency, groups[0].currency)) {
                rc = util_fail(ST_USAGE, "bid --alert-above: the histories hold prices in %s and %s; "
                               "alert on one currency (--instance-type)", *groups[0].currency ? groups[0].currency : "an unknown currency",
                               *groups[k].currency ? groups[k].currency : "an unknown currency");
                goto out;
            }
    }
    if (o->json)
        bid_print_json(&h, rows, groups, ng, o);
    else
        bid_print_table(&h, rows, groups, ng, o);
    fflush(stdout);
    for (int k = 0; k < ng && o->have_alert && rc == ST_OK; k++) {
        int b = groups[k].best;
        if (b >= 0 && rows[b].st.last > o->alert_above)
            rc = util_fail(ST_ALERT, "alert: current price %.4f of %s %s is above %.4f", rows[b].st.last,
                           h.s[b].zone, h.s[b].type, o->alert_above);
    }
out:
    free(rows);
    free(groups);
    bid_history_free(&h);
    return rc;
}
