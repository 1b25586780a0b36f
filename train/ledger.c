/* events.jsonl records and the Prometheus textfile, moved out of the loop:
 * the loop says what happened, this file decides how it is written down. */
#include "ledger.h"
#include "config/opts.h"
#include "interval.h"
#include "money/cost.h"
#include "metrics.h"
#include "util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ledger_open(ledger *g, const cfg *c, int root)
{
    memset(g, 0, sizeof *g);
    g->c = c;
    g->root = root;
    g->ev.fd = -1;
    g->cost_s = -1;
    g->segment_wall = util_wall();
    return root ? events_open(&g->ev, c->run_dir) : ST_OK;
}

void ledger_close(ledger *g) { events_close(&g->ev); }

static uint64_t ledger_count(const char *text, const char *needle)
{
    uint64_t n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

void ledger_resume_counts(ledger *g, int nodes)
{
    char path[CFG_STR + 32], *text = NULL;
    size_t len = 0;
    cost_report r;
    cost_opts co;
    double od;
    if (!g->root || cfg_cost_opts(g->c, &co) != ST_OK)
        return;
    cost_fleet_hourly(&co, nodes, &od, &g->fleet_spot);
    snprintf(path, sizeof path, "%s/events.jsonl", g->c->run_dir);
    if (util_read_file(path, &text, &len) != ST_OK)
        return;
    /* This segment's own start record is already there and is neither an
     * interruption nor a stop. */
    if (cost_report_compute(text, len, &co, &r) == ST_OK) {
        g->interruptions = (uint64_t)r.interruptions;
        g->spend_before = r.spend;
        g->hours_before = r.run_hours;
    }
    g->hard_failures = interval_ledger_failures(text, len);
    g->cost_s = interval_ledger_cost(text, len);
    g->notices = ledger_count(text, "\"event\":\"stop\"");
    g->checkpoints = ledger_count(text, "\"event\":\"checkpoint\"");
    free(text);
}

void ledger_start(ledger *g, int64_t step, int world, int nodes, const char *resumed_from,
                  const char *backend, const char *device, const char *precision, const char *libraries,
                  size_t params)
{
    char q[CFG_STR + 128], cq[CFG_STR + 64], dq[300], lq[600];
    events_quote(resumed_from ? resumed_from : "", q, sizeof q);
    events_quote(g->c->path, cq, sizeof cq);
    events_quote(device, dq, sizeof dq);
    events_quote(libraries ? libraries : "", lq, sizeof lq);
    events_write(&g->ev, "start", "\"step\":%lld,\"world\":%d,\"nodes\":%d,\"resumed_from\":%s,"
                 "\"tokens_per_step\":%lld,\"max_steps\":%lld,\"config\":%s,\"backend\":\"%s\","
                 "\"device\":%s,\"precision\":\"%s\",\"libraries\":%s,\"params\":%zu", (long long)step, world,
                 nodes, resumed_from && resumed_from[0] ? q : "null",
                 (long long)(g->c->global_batch * g->c->seq_len), (long long)g->c->max_steps, cq, backend, dq,
                 precision, lq, params);
}

void ledger_download(ledger *g, int64_t step, const char *from, const double *v, int world)
{
    char q[CFG_STR + 128];
    double bytes = 0, secs = 0;
    events_quote(from, q, sizeof q);
    for (int r = 0; r < world; r++) {
        events_write(&g->ev, "download", "\"step\":%lld,\"rank\":%d,\"bytes\":%.0f,\"seconds\":%.3f,\"mb_s\":%.1f",
                     (long long)step, r, v[2 * r], v[2 * r + 1], v[2 * r + 1] > 0 ? v[2 * r] / v[2 * r + 1] / 1e6 : 0.0);
        bytes += v[2 * r];
        secs = v[2 * r + 1] > secs ? v[2 * r + 1] : secs;
    }
    events_write(&g->ev, "download", "\"step\":%lld,\"from\":%s,\"ranks\":%d,\"bytes\":%.0f,\"seconds\":%.3f,"
                 "\"mb_s\":%.1f", (long long)step, q, world, bytes, secs, secs > 0 ? bytes / secs / 1e6 : 0.0);
}

void ledger_start_failed(ledger *g, int code, const char *reason)
{
    char q[1100], cq[CFG_STR + 64];
    events_quote(reason, q, sizeof q);
    events_quote(g->c->path, cq, sizeof cq);
    events_write(&g->ev, "start", "\"step\":null,\"failed\":true,\"code\":%d,\"reason\":%s,\"config\":%s", code, q,
                 cq);
}

void ledger_step(ledger *g, int64_t step, double loss, double lr, double gnorm, uint64_t tokens, double tps,
                 double ms, double train_seconds, double loss_scale)
{
    char gn[32] = "null";   /* JSON has no inf or NaN */
    if (isfinite(gnorm))
        snprintf(gn, sizeof gn, "%.6g", gnorm);
    events_write(&g->ev, "step", "\"step\":%lld,\"loss\":%.6f,\"lr\":%.6g,\"grad_norm\":%s,"
                 "\"tokens\":%llu,\"tok_per_s\":%.1f,\"ms\":%.3f,\"train_seconds\":%.3f,\"loss_scale\":%.17g",
                 (long long)step, loss, lr, gn, (unsigned long long)tokens, tps, ms, train_seconds, loss_scale);
}

void ledger_overflow(ledger *g, int64_t step, double loss, double loss_scale, double next_scale)
{
    events_write(&g->ev, "overflow", "\"step\":%lld,\"loss\":%.6f,\"loss_scale\":%.17g,\"next_loss_scale\":%.17g,"
                 "\"skipped\":true", (long long)step, loss, loss_scale, next_scale);
}

void ledger_continuity(ledger *g, int64_t step, const char *why)
{
    char q[600];
    events_quote(why, q, sizeof q);
    events_write(&g->ev, "continuity", "\"step\":%lld,\"bitwise\":false,\"changed\":%s", (long long)step, q);
}

void ledger_eval(ledger *g, int64_t step, double val_loss)
{
    events_write(&g->ev, "eval", "\"step\":%lld,\"val_loss\":%.6f", (long long)step, val_loss);
}

void ledger_checkpoint(ledger *g, const ckpt_result *r)
{
    char q[CFG_STR + 64];
    g->checkpoints++;
    g->last_ckpt = *r;
    events_quote(r->path, q, sizeof q);
    events_write(&g->ev, "checkpoint", "\"step\":%lld,\"path\":%s,\"raw_bytes\":%llu,"
                 "\"stored_bytes\":%llu,\"stall_ms\":%.3f,\"write_ms\":%.3f", (long long)r->step, q,
                 (unsigned long long)r->raw_bytes, (unsigned long long)r->stored_bytes, r->stall_ms, r->write_ms);
}

void ledger_stop(ledger *g, int64_t step, int64_t durable, int64_t remote, const char *final, const char *source,
                 const char *reason)
{
    char src[96], q[700], d[32], r[96] = "";
    if (strcmp(source, "remote") != 0)   /* the remote copy lagging is no provider notice */
        g->notices++;
    g->interruptions++;
    events_quote(source, src, sizeof src);
    events_quote(reason, q, sizeof q);
    if (durable >= 0)
        snprintf(d, sizeof d, "%lld", (long long)durable);
    else
        snprintf(d, sizeof d, "null");
    /* Which copy a restart can count on: the remote one once it holds the
     * durable step, else only the local disk (gone with the node). */
    if (remote >= 0)
        snprintf(r, sizeof r, ",\"remote_step\":%lld,\"durable_copy\":\"%s\"", (long long)remote,
                 remote >= durable ? "remote" : "local");
    else if (remote == -1)
        snprintf(r, sizeof r, ",\"remote_step\":null,\"durable_copy\":%s", durable >= 0 ? "\"local\"" : "null");
    events_write(&g->ev, "stop", "\"step\":%lld,\"durable_step\":%s,\"final_checkpoint\":\"%s\",\"source\":%s,"
                 "\"reason\":%s%s", (long long)step, d, final, src, q, r);
}

void ledger_upload(ledger *g, const char *url, int64_t step, int rank, int ranks, const char *status, uint64_t bytes,
                   double seconds, const char *why)
{
    char u[1200], w[700] = "", who[48];
    double mbs = seconds > 0 ? (double)bytes / seconds / 1e6 : 0;
    events_quote(url, u, sizeof u);
    if (why) {
        char qw[640];
        events_quote(why, qw, sizeof qw);
        snprintf(w, sizeof w, ",\"reason\":%s", qw);
    }
    if (rank >= 0)
        snprintf(who, sizeof who, "\"rank\":%d", rank);
    else
        snprintf(who, sizeof who, "\"rank\":\"all\",\"ranks\":%d", ranks);
    events_write(&g->ev, "upload", "\"step\":%lld,%s,\"url\":%s,\"status\":\"%s\",\"bytes\":%llu,"
                 "\"seconds\":%.3f,\"mb_s\":%.2f%s", (long long)step, who, u, status, (unsigned long long)bytes,
                 seconds, mbs, w);
}

void ledger_interval(ledger *g, int64_t step, double seconds, const char *by, double cost_s, int measured,
                     double mtbf_s, int hard_failures, double hours)
{
    char m[32];
    if (isfinite(mtbf_s))
        snprintf(m, sizeof m, "%.1f", mtbf_s);
    else
        snprintf(m, sizeof m, "null");
    events_write(&g->ev, "interval", "\"step\":%lld,\"seconds\":%.3f,\"by\":\"%s\",\"cost_s\":%.6f,"
                 "\"cost_measured\":%s,\"mtbf_s\":%s,\"hard_failures\":%d,\"hours\":%.6f", (long long)step,
                 seconds, by, cost_s, measured ? "true" : "false", m, hard_failures, hours);
}

void ledger_exit(ledger *g, int64_t step, int code)
{
    const char *why = code == ST_OK ? "done" : code == ST_TEMPFAIL ? "stopped; restart to continue"
                      : code == ST_WATCHDOG ? "a peer stopped answering; restart the job"
                      : code == ST_RECLAIMED ? "started under a notice already due; do not restart on this node"
                                             : "error";
    events_write(&g->ev, "exit", "\"step\":%lld,\"code\":%d,\"reason\":\"%s\"", (long long)step, code, why);
}

void ledger_peer_timeout(ledger *g, int64_t step, const char *agreement, int peer, double waited, double timeout)
{
    char q[512], who[16] = "null";
    events_quote(agreement, q, sizeof q);
    if (peer >= 0)
        snprintf(who, sizeof who, "%d", peer);
    events_write(&g->ev, "comm_timeout", "\"step\":%lld,\"agreement\":%s,\"peer\":%s,\"waited_s\":%.1f,"
                 "\"timeout_s\":%g", (long long)step, q, who, waited, timeout);
}

void ledger_metrics(ledger *g, const ledger_progress *p, int force)
{
    const cfg *c = g->c;
    if (!g->root || !c->textfile[0])
        return;
    if (!force && p->step % c->metrics_every && p->step != c->max_steps)
        return;
    metrics_sample m = {0};
    m.run = c->run_dir;
    m.step = p->step;
    m.max_steps = c->max_steps;
    m.loss = p->loss;
    m.tokens_per_second = p->tokens_per_second;
    m.tokens_total = (double)p->tokens;
    m.train_seconds = p->train_seconds;
    m.ckpt_seconds = (g->last_ckpt.stall_ms + g->last_ckpt.write_ms) / 1000.0;
    m.ckpt_stall_seconds = g->last_ckpt.stall_ms / 1000.0;
    m.ckpt_bytes = (double)g->last_ckpt.stored_bytes;
    m.checkpoints_total = g->checkpoints;
    m.notices_total = g->notices;
    m.interruptions_total = g->interruptions;
    m.price_per_hour = g->fleet_spot;
    m.spend_dollars = g->spend_before + (util_wall() - g->segment_wall) / 3600.0 * g->fleet_spot;
    if (metrics_write(c->textfile, &m) != ST_OK && !util_quiet)
        fprintf(stderr, "metrics textfile %s not written; training goes on\n", c->textfile);
}
