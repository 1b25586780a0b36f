/* The online checkpoint interval (checkpoint.interval_seconds = auto):
 * measures C, estimates M, and keeps sqrt(2 C M) within the configured
 * bounds. Pure arithmetic plus a ledger scan, so it is unit-tested alone. */
#include "interval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The rate is unknown and matters only through its mean (the loss per
 * hour, C/T + T·rate/2, is linear in it, so Young/Daly with the posterior
 * mean minimises the expected loss). The prior is log-normal around p, of
 * mean p and spread INTERVAL_PRIOR_SPREAD (ln units): a provider's typical
 * rate is right for a pool only to within an order of magnitude or so, and
 * a heavy tail lets the run's own record override a prior it contradicts
 * (two kills in two minutes against a 20 h prior give M ≈ 3 min) while a
 * prior that nothing contradicts keeps its weight (a told 60/h is still
 * M ≈ 6 min after 30 s without a kill; a Gamma prior light enough to give
 * way to one kill forgets it in a tenth of a second). After n failures in
 * h hours the likelihood is r^n e^(-r h); the posterior has no closed form,
 * so its mean is a sum over a grid in ln r wide enough to hold the prior
 * and the likelihood's peak. */
double interval_rate(int n, double hours, double prior_rate)
{
    if (n < 0)
        n = 0;
    if (hours < 0)
        hours = 0;
    if (prior_rate <= 0)
        return n > 0 && hours > 0 ? (double)n / hours : 0;
    /* Kills before any training time: as if after a second of it, so the
     * likelihood still bounds the rate within the grid. */
    double h = n > 0 && hours < 1.0 / 3600 ? 1.0 / 3600 : hours;
    const double s = INTERVAL_PRIOR_SPREAD;
    double mu = log(prior_rate) - s * s / 2, peak = h > 0 ? log((n + 1.0) / h) : mu;
    double lo = fmin(mu - 8 * s, peak - 12), hi = fmax(mu + 8 * s, peak + 12);
    enum { K = 2048 };
    double top = -INFINITY;
    for (int k = 0; k < K; k++) {
        double x = lo + (hi - lo) * k / (K - 1);
        double lw = n * x - exp(x) * h - (x - mu) * (x - mu) / (2 * s * s);
        top = lw > top ? lw : top;
    }
    double num = 0, den = 0;
    for (int k = 0; k < K; k++) {
        double x = lo + (hi - lo) * k / (K - 1);
        double w = exp(n * x - exp(x) * h - (x - mu) * (x - mu) / (2 * s * s) - top);
        num += w * exp(x);
        den += w;
    }
    return num / den;
}

/* Young/Daly minimises the expected loss for the M it is given, and before
 * a run has seen its first kill that M is only the prior, which can be off
 * by orders of magnitude (20 h assumed, a kill a minute real). Where saves
 * are cheap, insurance against that costs little: saving every C / b
 * spends a fraction b of training on saves and bounds what any kill loses
 * to that interval, whatever M really is. The cap binds only where
 * Young/Daly's own save share C / T is below b, that is where its total
 * loss 2 C / T is below 2 b, so it never costs more than b over the
 * optimum for the M believed; where kills are frequent Young/Daly is
 * shorter and wins. */
double interval_choose(double cost_s, double mtbf_s, double overhead, double lo, double hi, interval_by *by)
{
    double c = cost_s > 0 ? cost_s : 0;
    double t = mtbf_s > 0 && isfinite(mtbf_s) ? sqrt(2.0 * c * mtbf_s) : INFINITY;
    *by = INTERVAL_BY_YOUNG_DALY;
    if (overhead > 0 && c / overhead < t) {
        t = c / overhead;
        *by = INTERVAL_BY_OVERHEAD;
    }
    if (t < lo) {
        t = lo;
        *by = INTERVAL_BY_MIN;
    } else if (t > hi) {
        t = hi;
        *by = INTERVAL_BY_MAX;
    }
    return t;
}

const char *interval_by_name(interval_by by)
{
    switch (by) {
    case INTERVAL_BY_OVERHEAD: return "overhead";
    case INTERVAL_BY_MIN: return "min_seconds";
    case INTERVAL_BY_MAX: return "max_seconds";
    default: return "young_daly";
    }
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
            /* The ledger in memory is not NUL-terminated: compare within the line. */
            if (f && ((e - f >= 6 && !memcmp(f, "failed", 6)) || (e - f >= 7 && !memcmp(f, "skipped", 7))))
                n++;
        }
        p = e + 1;
    }
    return n;
}

double interval_ledger_cost(const char *text, size_t len)
{
    double c = -1;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        const char *f;
        if (interval_field(p, e, "\"event\":\"interval\"") && interval_field(p, e, "\"cost_measured\":true") &&
            (f = interval_field(p, e, "\"cost_s\":"))) {
            /* The line is not NUL-terminated: copy the number out. */
            char num[32];
            size_t k = 0;
            while (f + k < e && k + 1 < sizeof num && f[k] && strchr("0123456789.eE+-", f[k]))
                k++;
            memcpy(num, f, k);
            num[k] = 0;
            char *stop;
            double v = strtod(num, &stop);
            if (stop != num && isfinite(v) && v >= 0)
                c = v;
        }
        p = e + 1;
    }
    return c;
}

void interval_init(interval_auto *a, double lo, double hi, double overhead, double prior_rate, double prior_cost_s)
{
    memset(a, 0, sizeof *a);
    a->lo = lo;
    a->hi = hi;
    a->overhead = overhead;
    a->prior_rate = prior_rate;
    a->prior_cost_s = prior_cost_s;
    a->cost_s = -1;
    a->interval_s = hi;
    a->by = INTERVAL_BY_MAX;
}

/* Exponentially weighted means over the newest ~20 steps of each kind: step
 * times drift (data, other tenants), the comparison must be recent. */
static void interval_ewma(double *mean, int *n, double x)
{
    *mean = *n == 0 ? x : *mean + (x - *mean) / (*n < 20 ? (double)(*n + 1) : 20.0);
    (*n)++;
}

void interval_resume(interval_auto *a, int hard_failures, double hours_before, double cost_s)
{
    a->hard_failures = hard_failures;
    a->hours_before = hours_before;
    if (cost_s >= 0) {
        a->cost_s = cost_s;
        a->n_saves = 1;
        a->cost_logged = 1;
    }
}

void interval_step(interval_auto *a, double ms, int writer_busy)
{
    if (a->steps++ == 0)
        return;
    if (writer_busy)
        interval_ewma(&a->busy_ms, &a->n_busy, ms);
    else
        interval_ewma(&a->idle_ms, &a->n_idle, ms);
}

/* Without a measured C the first interval rests on the prior C, often far
 * off (5 s assumed, milliseconds real on a small model, so an interval of
 * many minutes, and a kill before it loses them all). One save a few steps
 * in measures it: it costs one C and turns the guess into a figure. */
int interval_due(interval_auto *a, double since_s)
{
    if (a->cost_s < 0 && !a->probed && a->n_idle + a->n_busy >= INTERVAL_PROBE_STEPS) {
        a->probed = 1;
        return 1;
    }
    return since_s >= a->interval_s;
}

/* One save's figure swings with the few step times it is compared with
 * (a noisy neighbour, a slow step during the write): the mean of the
 * newest few is the steadier estimate of what a save costs. */
void interval_saved(interval_auto *a, double stall_s, double write_s)
{
    double x = interval_save_cost(stall_s, write_s, a->idle_ms, a->busy_ms);
    a->cost_s = a->n_saves == 0 ? x : a->cost_s + (x - a->cost_s) / (a->n_saves < 4 ? a->n_saves + 1 : 4);
    a->n_saves++;
}

int interval_update(interval_auto *a, double hours_now, double *cost_s, double *mtbf_s, int *measured)
{
    double c = a->cost_s >= 0 ? a->cost_s : a->prior_cost_s;
    double rate = interval_rate(a->hard_failures, a->hours_before + hours_now, a->prior_rate);
    double m = rate > 0 ? 3600.0 / rate : INFINITY;
    interval_by by;
    double t = interval_choose(c, m, a->overhead, a->lo, a->hi, &by);
    int moved = fabs(t - a->interval_s) > 0.1 * a->interval_s;
    /* The first measured C is logged even when the interval barely moves:
     * the next segment starts from it instead of the prior. */
    int first = a->cost_s >= 0 && !a->cost_logged;
    *cost_s = c;
    *mtbf_s = m;
    *measured = a->cost_s >= 0;
    if (*measured)
        a->cost_logged = 1;
    if (moved || a->interval_s <= 0) {
        a->interval_s = t;
        a->by = by;
    }
    return moved || first;
}
