/* Prometheus text exposition of a metrics_sample: gauges for the training
 * state, counters (suffix _total) for checkpoints, notices, interruptions and
 * dollars, written atomically for node_exporter's textfile collector. */
#include "metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} metrics_buf;

static void metrics_put(metrics_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void metrics_put(metrics_buf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        if (b->oom)
            return;
        va_start(ap, fmt);
        int n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n) * 2;
        char *nb = realloc(b->buf, cap);
        if (!nb) {
            b->oom = 1;
            return;
        }
        b->buf = nb;
        b->cap = cap;
    }
}

static void metrics_one(metrics_buf *b, const char *labels, const char *name, const char *type,
                        const char *help, double v)
{
    char val[32];
    util_dtoa(v, val);
    metrics_put(b, "# HELP spotrain_%s %s\n# TYPE spotrain_%s %s\nspotrain_%s%s %s\n", name, help, name,
                type, name, labels, val);
}

char *metrics_render(const metrics_sample *s)
{
    metrics_buf b = {0};
    char labels[1200] = "";
    if (s->run && *s->run) {
        /* Label values escape backslash, quote and newline. */
        size_t o = (size_t)snprintf(labels, sizeof labels, "{run=\"");
        for (const char *p = s->run; *p && o + 8 < sizeof labels; p++) {
            if (*p == '\\' || *p == '"')
                labels[o++] = '\\', labels[o++] = *p;
            else if (*p == '\n')
                labels[o++] = '\\', labels[o++] = 'n';
            else
                labels[o++] = *p;
        }
        snprintf(labels + o, sizeof labels - o, "\"}");
    }
    metrics_one(&b, labels, "step", "gauge", "Optimizer steps completed.", (double)s->step);
    metrics_one(&b, labels, "max_steps", "gauge", "Optimizer steps the run is configured for.", (double)s->max_steps);
    metrics_one(&b, labels, "loss", "gauge", "Training loss of the newest step.", s->loss);
    metrics_one(&b, labels, "tokens_per_second", "gauge", "Training throughput of the newest step.", s->tokens_per_second);
    metrics_one(&b, labels, "tokens_total", "counter", "Tokens trained so far.", s->tokens_total);
    metrics_one(&b, labels, "train_seconds_total", "counter", "Training seconds so far, all segments.", s->train_seconds);
    metrics_one(&b, labels, "checkpoint_seconds", "gauge", "Stall plus write time of the newest checkpoint.", s->ckpt_seconds);
    metrics_one(&b, labels, "checkpoint_stall_seconds", "gauge", "Training stall of the newest checkpoint.", s->ckpt_stall_seconds);
    metrics_one(&b, labels, "checkpoint_bytes", "gauge", "Stored bytes of the newest checkpoint.", s->ckpt_bytes);
    metrics_one(&b, labels, "checkpoints_total", "counter", "Checkpoints committed.", (double)s->checkpoints_total);
    metrics_one(&b, labels, "notices_total", "counter", "Provider notices and stop signals received.", (double)s->notices_total);
    metrics_one(&b, labels, "interruptions_total", "counter", "Segments ended by preemption.", (double)s->interruptions_total);
    metrics_one(&b, labels, "spend_dollars_total", "counter", "Dollars spent at the configured spot prices.", s->spend_dollars);
    metrics_one(&b, labels, "price_dollars_per_hour", "gauge", "Fleet price per hour in use.", s->price_per_hour);
    if (b.oom) {
        free(b.buf);
        return NULL;
    }
    return b.buf;
}

int metrics_write(const char *path, const metrics_sample *s)
{
    char *text = metrics_render(s);
    if (!text)
        return util_fail(ST_SOFTWARE, "out of memory rendering metrics for %s", path);
    int rc = util_write_atomic(path, text, strlen(text));
    free(text);
    return rc;
}
