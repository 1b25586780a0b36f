/* `spotrain cost report RUN_DIR`: running segments, interruptions, lost work,
 * checkpoint stall and spend of a run from its events.jsonl, and what
 * finishing it will cost at the observed pace. Safe to run from cron. */
#include "cost.h"

#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util/util.h"

typedef struct {
    double t0, t1;
    int64_t step0, step_last, nodes, max_steps, tokens_per_step;
    int has_exit, exit_code;
} report_seg;

static double report_num(json_object *o, const char *key, double dflt)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v))
        return dflt;
    if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
        return dflt;
    double d = json_object_get_double(v);
    return isfinite(d) ? d : dflt;
}

/* Applies one record; returns 0, or -1 when it is not a ledger record.
 * *refused is set by a start that failed (a refused resume, a bad config)
 * and cleared by the next start: that attempt trained nothing, so neither
 * it nor its exit record is a segment of the run. */
static int report_record(json_object *o, report_seg **segs, int *n, int *cap, cost_report *r, int *refused)
{
    json_object *ev;
    if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, "event", &ev) ||
        !json_object_is_type(ev, json_type_string))
        return -1;
    const char *e = json_object_get_string(ev);
    double ts = report_num(o, "ts", NAN);
    if (isnan(ts))
        return -1;
    if (r->first_ts == 0 || ts < r->first_ts)
        r->first_ts = ts;
    if (ts > r->last_ts)
        r->last_ts = ts;
    if (!strcmp(e, "start")) {
        json_object *from, *failed;
        *refused = json_object_object_get_ex(o, "failed", &failed) && json_object_get_boolean(failed);
        if (*refused) {
            r->failed_starts++;
            return 0;
        }
        if (json_object_object_get_ex(o, "resumed_from", &from) && from == NULL && *n > 0) {
            /* A fresh start (train --force, or a new run in an old run_dir):
             * what came before belongs to another run. */
            int bad = r->bad_lines, earlier = r->earlier_runs + 1, refusals = r->failed_starts;
            memset(r, 0, sizeof *r);
            r->bad_lines = bad;
            r->earlier_runs = earlier;
            r->failed_starts = refusals;
            r->first_ts = r->last_ts = ts;
            *n = 0;
        }
        if (*n == *cap) {
            int nc = *cap ? *cap * 2 : 16;
            report_seg *ns = realloc(*segs, (size_t)nc * sizeof *ns);
            if (!ns)
                return -2;
            *segs = ns;
            *cap = nc;
        }
        report_seg *s = &(*segs)[(*n)++];
        memset(s, 0, sizeof *s);
        s->t0 = s->t1 = ts;
        s->step0 = s->step_last = (int64_t)report_num(o, "step", 0);
        s->nodes = (int64_t)report_num(o, "nodes", 1);
        if (s->nodes < 1)
            s->nodes = 1;
        s->max_steps = (int64_t)report_num(o, "max_steps", 0);
        s->tokens_per_step = (int64_t)report_num(o, "tokens_per_step", 0);
        return 0;
    }
    if (*refused)
        return 0;
    if (!strcmp(e, "notice")) {
        r->notices++;
    } else if (!strcmp(e, "restart")) {
        r->restarts++;
        return 0;   /* written by the wrapper between segments */
    }
    if (*n == 0)
        return 0;   /* before any start: nothing to attribute it to */
    report_seg *s = &(*segs)[*n - 1];
    if (ts > s->t1)
        s->t1 = ts;
    double step = report_num(o, "step", NAN);
    if (!isnan(step) && (int64_t)step > s->step_last)
        s->step_last = (int64_t)step;
    if (!strcmp(e, "step")) {
        double tsec = report_num(o, "train_seconds", NAN);
        if (!isnan(tsec))
            r->train_seconds = tsec;
    } else if (!strcmp(e, "checkpoint")) {
        r->checkpoints++;
        r->stall_hours += report_num(o, "stall_ms", 0) / 3.6e6;
    } else if (!strcmp(e, "exit")) {
        s->has_exit = 1;
        s->exit_code = (int)report_num(o, "code", 0);
    }
    return 0;
}

static int report_parse(const char *text, size_t len, report_seg **segs, int *n, cost_report *r)
{
    int cap = 0, refused = 0;
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t ll = (nl ? (size_t)(nl - text) : len) - pos;
        const char *line = text + pos;
        pos += ll + 1;
        while (ll > 0 && (line[ll - 1] == '\r' || line[ll - 1] == ' '))
            ll--;
        if (ll == 0)
            continue;
        json_tokener *tok = json_tokener_new();
        if (!tok)
            return util_fail(ST_SOFTWARE, "out of memory reading events");
        json_object *o = ll < (size_t)1 << 30 ? json_tokener_parse_ex(tok, line, (int)ll) : NULL;
        int good = o && json_tokener_get_error(tok) == json_tokener_success &&
                   json_tokener_get_parse_end(tok) == ll;
        int rc = good ? report_record(o, segs, n, &cap, r, &refused) : -1;
        json_object_put(o);
        json_tokener_free(tok);
        if (rc == -2)
            return util_fail(ST_SOFTWARE, "out of memory reading events");
        if (rc < 0) {
            /* The writer may be mid-append: a torn final line is expected. */
            if (!nl)
                r->partial_last = 1;
            else
                r->bad_lines++;
        }
    }
    return ST_OK;
}

int cost_report_compute(const char *text, size_t len, const cost_opts *o, cost_report *r)
{
    report_seg *segs = NULL;
    int n = 0, rc;
    memset(r, 0, sizeof *r);
    rc = report_parse(text, len, &segs, &n, r);
    if (rc)
        goto out;
    if (n == 0) {
        rc = r->failed_starts
                 ? util_fail(ST_DATA, "events.jsonl holds only refused starts (%d): nothing has trained yet; "
                             "see their reasons there", r->failed_starts)
                 : util_fail(ST_DATA, "events.jsonl has no start record; is this a spotrain run directory?");
        goto out;
    }
    r->segments = n;
    const report_seg *last = &segs[n - 1];
    r->nodes = last->nodes;
    r->first_step = segs[0].step0;
    r->step = last->step_last;
    r->max_steps = last->max_steps;
    r->tokens_per_step = last->tokens_per_step;
    double od = 0, sp = 0;
    r->have_prices = o && o->n_prices > 0;
    for (int i = 0; i < n; i++) {
        const report_seg *s = &segs[i];
        double h = (s->t1 - s->t0) / 3600.0;
        r->run_hours += h;
        r->node_hours += h * (double)s->nodes;
        if (i + 1 < n && segs[i + 1].t0 > s->t1)
            r->downtime_hours += (segs[i + 1].t0 - s->t1) / 3600.0;
        if (s->has_exit && s->exit_code == 0)
            r->finished = i == n - 1;
        if (s->has_exit && s->exit_code == ST_TEMPFAIL)
            r->exits_75++;
        if (!s->has_exit && i + 1 < n)
            r->killed++;
        if (i + 1 < n) {
            /* Steps done past the checkpoint the next segment resumed from
             * were trained twice. */
            int64_t lost = s->step_last - segs[i + 1].step0;
            if (lost > 0) {
                r->lost_steps += lost;
                if (s->step_last > s->step0)
                    r->lost_hours += h * (double)lost / (double)(s->step_last - s->step0);
            }
        }
        if (r->have_prices) {
            cost_fleet_hourly(o, s->nodes, &od, &sp);
            r->spend += h * sp;
        }
    }
    r->interruptions = r->exits_75 + r->killed;
    int64_t progress = r->step - r->first_step;
    r->steps_per_hour = r->run_hours > 0 && progress > 0 ? (double)progress / r->run_hours : 0;
    int64_t left = r->max_steps > r->step ? r->max_steps - r->step : 0;
    if (r->finished || left == 0)
        r->hours_left = 0;
    else
        r->hours_left = r->steps_per_hour > 0 ? (double)left / r->steps_per_hour : INFINITY;
    if (r->have_prices) {
        cost_fleet_hourly(o, r->nodes, &od, &sp);
        r->spot_hourly = sp;
        r->ondemand_hourly = od;
        r->cost_left = r->hours_left * sp;
        r->projected_total = r->spend + r->cost_left;
        /* train_seconds counts only steps that were kept, so it is what the
         * same progress takes on nodes that are never reclaimed. */
        r->ondemand_so_far = r->train_seconds / 3600.0 * od;
        r->ondemand_total = r->step > 0 && r->max_steps > 0
                                ? r->ondemand_so_far * (double)r->max_steps / (double)r->step
                                : NAN;
    }
out:
    free(segs);
    return rc;
}

/* ---- the command ---- */

static json_object *report_jnum(double v)
{
    return util_json_num(v);
}

static void report_print_json(const char *dir, const cost_report *r)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "run_dir", json_object_new_string(dir));
    json_object_object_add(o, "segments", json_object_new_int(r->segments));
    json_object_object_add(o, "earlier_runs_ignored", json_object_new_int(r->earlier_runs));
    json_object_object_add(o, "finished", json_object_new_boolean(r->finished));
    json_object_object_add(o, "interruptions", json_object_new_int(r->interruptions));
    json_object_object_add(o, "killed", json_object_new_int(r->killed));
    json_object_object_add(o, "preempted_exits", json_object_new_int(r->exits_75));
    json_object_object_add(o, "notices", json_object_new_int(r->notices));
    json_object_object_add(o, "restarts", json_object_new_int(r->restarts));
    json_object_object_add(o, "nodes", json_object_new_int64(r->nodes));
    json_object_object_add(o, "run_hours", report_jnum(r->run_hours));
    json_object_object_add(o, "node_hours", report_jnum(r->node_hours));
    json_object_object_add(o, "downtime_hours", report_jnum(r->downtime_hours));
    json_object_object_add(o, "step", json_object_new_int64(r->step));
    json_object_object_add(o, "max_steps", json_object_new_int64(r->max_steps));
    json_object_object_add(o, "tokens", json_object_new_int64(r->step * r->tokens_per_step));
    json_object_object_add(o, "lost_steps", json_object_new_int64(r->lost_steps));
    json_object_object_add(o, "lost_hours", report_jnum(r->lost_hours));
    json_object_object_add(o, "checkpoints", json_object_new_int(r->checkpoints));
    json_object_object_add(o, "checkpoint_stall_hours", report_jnum(r->stall_hours));
    json_object_object_add(o, "steps_per_hour", report_jnum(r->steps_per_hour));
    json_object_object_add(o, "hours_left", report_jnum(r->hours_left));
    if (r->have_prices) {
        json_object_object_add(o, "spend", report_jnum(r->spend));
        json_object_object_add(o, "cost_left", report_jnum(r->cost_left));
        json_object_object_add(o, "projected_total", report_jnum(r->projected_total));
        json_object_object_add(o, "ondemand_so_far", report_jnum(r->ondemand_so_far));
        json_object_object_add(o, "ondemand_total", report_jnum(r->ondemand_total));
    }
    json_object_object_add(o, "failed_starts", json_object_new_int(r->failed_starts));
    json_object_object_add(o, "unreadable_lines", json_object_new_int(r->bad_lines));
    json_object_object_add(o, "partial_last_line", json_object_new_boolean(r->partial_last));
    printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
}

static void report_csv_num(double v, int prices_needed, int have)
{
    if ((prices_needed && !have) || !isfinite(v))
        printf(",");
    else
        printf(",%.2f", v);
}

static void report_print_csv(const char *dir, const cost_report *r, int header)
{
    char now[48];
    if (header)
        printf("time,run_dir,segments,interruptions,notices,run_hours,node_hours,step,max_steps,"
               "lost_steps,ckpt_stall_hours,spend,ondemand_so_far,hours_left,cost_left,projected_total,"
               "ondemand_total\n");
    util_iso8601(util_wall(), now);
    /* run_dir is quoted only if it needs it, as CSV does. */
    if (strpbrk(dir, ",\"\n")) {
        printf("%s,\"", now);
        for (const char *p = dir; *p; p++)
            printf(*p == '"' ? "\"\"" : "%c", *p);
        printf("\"");
    } else {
        printf("%s,%s", now, dir);
    }
    printf(",%d,%d,%d,%.4f,%.4f,%lld,%lld,%lld,%.4f", r->segments, r->interruptions, r->notices,
           r->run_hours, r->node_hours, (long long)r->step, (long long)r->max_steps,
           (long long)r->lost_steps, r->stall_hours);
    report_csv_num(r->spend, 1, r->have_prices);
    report_csv_num(r->ondemand_so_far, 1, r->have_prices);
    if (isfinite(r->hours_left))
        printf(",%.4f", r->hours_left);
    else
        printf(",");
    report_csv_num(r->cost_left, 1, r->have_prices);
    report_csv_num(r->projected_total, 1, r->have_prices);
    report_csv_num(r->ondemand_total, 1, r->have_prices);
    printf("\n");
}

/* A duration a reader can see: seconds or minutes for a short run (the
 * demo's whole run is a minute, which 2-decimal hours print as 0.00). */
static const char *report_dur(double hours, char *buf, size_t cap)
{
    double s = hours * 3600.0;
    if (!isfinite(hours))
        snprintf(buf, cap, "unknown");
    else if (s > 0 && s < 1)
        snprintf(buf, cap, "%.1f ms", s * 1000);
    else if (s < 60)
        snprintf(buf, cap, "%.1f s", s);
    else if (s < 3600)
        snprintf(buf, cap, "%.1f min", s / 60);
    else
        snprintf(buf, cap, "%.2f h", hours);
    return buf;
}

/* An amount with two decimals, and two significant digits at least below
 * 1: fractions of a cent for a short run rather than a row of 0.00. */
static const char *report_money(double v, char *buf, size_t cap)
{
    double a = fabs(v);
    int dec = a >= 1 || a == 0 || !isfinite(a) ? 2 : (int)floor(-log10(a)) + 2;
    dec = dec < 2 ? 2 : dec;
    snprintf(buf, cap, "%.*f", dec > 12 ? 12 : dec, v);
    return buf;
}

static void report_print_table(const char *dir, const char *cfgpath, const cost_report *r)
{
    char a[48], b[48], c[48];
    printf("cost report: %s%s\n", dir, r->finished ? " (finished)" : "");
    printf("  segments            %d (%d interruptions: %d preempted exits, %d killed; %d notices, %d restarts)\n",
           r->segments, r->interruptions, r->exits_75, r->killed, r->notices, r->restarts);
    printf("  running             %s on %lld node%s%s, %.4g node-hours; %s between segments\n",
           report_dur(r->run_hours, a, sizeof a), (long long)r->nodes, r->nodes == 1 ? "" : "s",
           r->finished ? "" : " now", r->node_hours, report_dur(r->downtime_hours, b, sizeof b));
    printf("  progress            step %lld of %lld (%lld tokens), %.1f steps per running hour\n",
           (long long)r->step, (long long)r->max_steps, (long long)(r->step * r->tokens_per_step),
           r->steps_per_hour);
    printf("  lost work           %lld steps redone (%s)\n", (long long)r->lost_steps,
           report_dur(r->lost_hours, a, sizeof a));
    printf("  checkpoint stall    %s over %d checkpoints\n", report_dur(r->stall_hours, a, sizeof a), r->checkpoints);
    if (r->finished)
        printf("  time to finish      none left: finished\n");
    else if (isfinite(r->hours_left))
        printf("  time to finish      %s at the observed pace\n", report_dur(r->hours_left, a, sizeof a));
    else
        printf("  time to finish      unknown (no progress observed yet)\n");
    if (r->have_prices) {
        printf("  prices              %s spot, %s on-demand per hour of the %lld node%s (from %s)\n",
               report_money(r->spot_hourly, a, sizeof a), report_money(r->ondemand_hourly, b, sizeof b),
               (long long)r->nodes, r->nodes == 1 ? "" : "s", cfgpath);
        printf("  spend so far        %s", report_money(r->spend, a, sizeof a));
        if (r->step > r->first_step)
            printf(" (%s per step)", report_money(r->spend / (double)(r->step - r->first_step), b, sizeof b));
        printf("\n");
        if (isfinite(r->cost_left) && !r->finished)
            printf("  to finish           %s; projected total %s\n", report_money(r->cost_left, a, sizeof a),
                   report_money(r->projected_total, b, sizeof b));
        printf("  on-demand would be  %s so far", report_money(r->ondemand_so_far, c, sizeof c));
        if (isfinite(r->ondemand_total) && !r->finished)
            printf(", %s for the whole run", report_money(r->ondemand_total, a, sizeof a));
        printf(" (same progress, no interruptions)\n");
    } else {
        printf("  spend               unknown: no [price.*] in %s (pass --config FILE)\n", cfgpath);
    }
    if (r->earlier_runs)
        printf("  note: counted from the newest fresh start; %d earlier run%s in events.jsonl ignored\n",
               r->earlier_runs, r->earlier_runs == 1 ? "" : "s");
    if (r->failed_starts)
        printf("  note: %d start%s refused (bad config or checkpoint) not counted as segments\n",
               r->failed_starts, r->failed_starts == 1 ? "" : "s");
    if (r->bad_lines)
        printf("  note: %d unreadable line%s in events.jsonl skipped\n", r->bad_lines, r->bad_lines == 1 ? "" : "s");
}

void cost_report_print(const char *run_dir, const char *prices_from, const cost_report *r, int format,
                       int csv_header)
{
    if (format == COST_JSON)
        report_print_json(run_dir, r);
    else if (format == COST_CSV)
        report_print_csv(run_dir, r, csv_header);
    else
        report_print_table(run_dir, prices_from, r);
}
