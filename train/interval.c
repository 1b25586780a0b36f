/* The online checkpoint interval (checkpoint.interval_seconds = auto):
 * measures C, estimates M, and keeps sqrt(2 C M) within the configured
 * bounds. Pure arithmetic plus a ledger scan, so it is unit-tested alone. */
#include "interval.h"

#include <math.h>
#include <string.h>

double interval_rate(int n, double hours, double prior_rate)
{
    if (n <= 0 || hours <= 0)
        return prior_rate;
    return ((double)n * ((double)n / hours) + prior_rate) / ((double)n + 1.0);
}

double interval_young_daly(double cost_s, double mtbf_s, double lo, double hi)
{
    double t = cost_s > 0 && mtbf_s > 0 && isfinite(mtbf_s) ? sqrt(2.0 * cost_s * mtbf_s) : hi;
    return t < lo ? lo : t > hi ? hi : t;
}

double interval_save_cost(double stall_s, double write_s, double idle_ms, double busy_ms)
{
    double slow = idle_ms > 0 && busy_ms > idle_ms ? 1.0 - idle_ms / busy_ms : 0.0;
    return stall_s + write_s * slow;
}

/* The value of "key": in one JSON line, as the start of a string. */
static const char *interval_field(const char *line, const char *end, const char *key)
{
    size_t k = strlen(key);
    for (const char *p = line; p + k <= end; p++)
        if (!memcmp(p, key, k))
            return p + k;
    return NULL;
}

int interval_ledger_failures(const char *text, size_t len)
{
    int n = 0, open = 0;   /* open: a segment started and has not exited yet */
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        /* A start that failed is followed by its exit record like any
         * segment, so it opens and closes like one. */
        if (interval_field(p, e, "\"event\":\"start\"")) {
            n += open;     /* the previous segment never wrote its exit */
            open = 1;
        } else if (interval_field(p, e, "\"event\":\"exit\"")) {
            open = 0;
        } else if (interval_field(p, e, "\"event\":\"stop\"")) {
            const char *f = interval_field(p, e, "\"final_checkpoint\":\"");
            if (f && (!strncmp(f, "failed", 6) || !strncmp(f, "skipped", 7)))
                n++;
        }
        p = e + 1;
    }
    return n;
}

void interval_init(interval_auto *a, double lo, double hi, double prior_rate, double prior_cost_s)
{
    memset(a, 0, sizeof *a);
    a->lo = lo;
    a->hi = hi;
    a->prior_rate = prior_rate;
    a->prior_cost_s = prior_cost_s;
    a->cost_s = -1;
    a->interval_s = hi;
}

/* Exponentially weighted means over the newest ~20 steps of each kind: step
 * times drift (data, other tenants), the comparison must be recent. */
static void interval_ewma(double *mean, int *n, double x)
{
    *mean = *n == 0 ? x : *mean + (x - *mean) / (*n < 20 ? (double)(*n + 1) : 20.0);
    (*n)++;
}

void interval_step(interval_auto *a, double ms, int writer_busy)
{
    if (writer_busy)
        interval_ewma(&a->busy_ms, &a->n_busy, ms);
    else
        interval_ewma(&a->idle_ms, &a->n_idle, ms);
}

void interval_saved(interval_auto *a, double stall_s, double write_s)
{
    a->cost_s = interval_save_cost(stall_s, write_s, a->idle_ms, a->busy_ms);
}

int interval_update(interval_auto *a, double hours_now, double *cost_s, double *mtbf_s)
{
    double c = a->cost_s >= 0 ? a->cost_s : a->prior_cost_s;
    double rate = interval_rate(a->hard_failures, a->hours_before + hours_now, a->prior_rate);
    double m = rate > 0 ? 3600.0 / rate : INFINITY;
    double t = interval_young_daly(c, m, a->lo, a->hi);
    int moved = fabs(t - a->interval_s) > 0.1 * a->interval_s;
    *cost_s = c;
    *mtbf_s = m;
    if (moved || a->interval_s <= 0)
        a->interval_s = t;
    return moved;
}
