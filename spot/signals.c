/* The stop flag: signal handlers that only set async-signal-safe flags, the
 * latched notice that pollers post into, spot_poll for the loop, and the
 * one-line `notice` record appended to RUN_DIR/events.jsonl. */
#include "spot.h"
#include "util/events.h"

#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t spot_sig_first;   /* first stop signal seen, 0 = none */
static volatile sig_atomic_t spot_sig_ints;    /* SIGINTs seen */
static double spot_grace = 120.0;
static int spot_sig_installed;

static pthread_mutex_t spot_mu = PTHREAD_MUTEX_INITIALIZER;
static spot_notice spot_latched;               /* guarded by spot_mu */
static int spot_sig_recorded;                  /* the signal became a notice */
static int spot_warn_pending;
static char spot_run_dir[1024];

/* A second Ctrl-C means "quit now". _exit rather than exit: exit() runs atexit
 * handlers and flushes stdio, neither async-signal-safe (a handler that
 * interrupted malloc or printf could deadlock). Quitting here is safe for the
 * data: checkpoints commit by rename, so the newest committed one is intact
 * and a half-written step-N.tmp/ is ignored on restore. */
static void spot_on_signal(int sig)
{
    if (sig == SIGINT) {
        if (spot_sig_ints >= 1) {
            static const char msg[] = "spotrain: second SIGINT, exiting now without a checkpoint\n";
            ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
            (void)w;
            _exit(130);
        }
        spot_sig_ints = spot_sig_ints + 1;
    }
    if (!spot_sig_first)
        spot_sig_first = sig;
}

int spot_signals_install(double grace_seconds)
{
    static const int sigs[] = {SIGTERM, SIGINT, SIGUSR1, SIGUSR2};
    struct sigaction sa;
    if (grace_seconds > 0)
        spot_grace = grace_seconds;
    if (spot_sig_installed)
        return ST_OK;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = spot_on_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaddset(&sa.sa_mask, sigs[i]);
    /* SA_RESTART: a blocking read in the data loader or MPI must not fail
     * with EINTR just because a stop was requested. */
    sa.sa_flags = SA_RESTART;
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        if (sigaction(sigs[i], &sa, NULL) != 0)
            return util_fail(ST_SOFTWARE, "cannot install the handler for signal %d: %s", sigs[i],
                             strerror(errno));
    spot_sig_installed = 1;
    return ST_OK;
}

static const char *spot_signal_name(int sig)
{
    switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    default: return "signal";
    }
}

int spot_events_append_notice(const char *run_dir, const spot_notice *n)
{
    char src[80], det[600];
    events_log ev;
    if (!run_dir || !run_dir[0])
        return ST_OK;
    int rc = events_open(&ev, run_dir);
    if (rc != ST_OK)
        return rc;
    events_quote(n->source, src, sizeof src);
    events_quote(n->detail, det, sizeof det);
    rc = events_write(&ev, "notice", "\"source\":%s,\"detail\":%s,\"deadline\":%.3f", src, det, n->deadline);
    events_close(&ev);
    return rc;
}

void spot_events_dir(const char *run_dir)
{
    pthread_mutex_lock(&spot_mu);
    snprintf(spot_run_dir, sizeof spot_run_dir, "%s", run_dir ? run_dir : "");
    pthread_mutex_unlock(&spot_mu);
}

/* Latches n (caller holds spot_mu); the first notice is logged and recorded. */
static void spot_latch(const spot_notice *n)
{
    if (!spot_latched.pending) {
        spot_latched = *n;
        spot_latched.pending = 1;
        util_log("stop requested by %s: %s", n->source, n->detail);
        spot_events_append_notice(spot_run_dir, &spot_latched);
        return;
    }
    if (n->deadline > 0 && (spot_latched.deadline <= 0 || n->deadline < spot_latched.deadline)) {
        util_log("%s moves the stop deadline earlier: %s", n->source, n->detail);
        spot_latched.deadline = n->deadline;
    }
}

void spot_notice_post(const char *source, const char *detail, double deadline)
{
    spot_notice_post_timed(source, detail, deadline, 0, 0);
}

void spot_notice_post_timed(const char *source, const char *detail, double deadline, double given, int at_start)
{
    spot_notice n;
    memset(&n, 0, sizeof n);
    snprintf(n.source, sizeof n.source, "%s", source);
    snprintf(n.detail, sizeof n.detail, "%s", detail);
    n.deadline = deadline;
    n.given = given;
    n.at_start = at_start;
    pthread_mutex_lock(&spot_mu);
    spot_latch(&n);
    pthread_mutex_unlock(&spot_mu);
}

void spot_warning_post(const char *source, const char *detail)
{
    util_log("early warning from %s: %s", source, detail);
    pthread_mutex_lock(&spot_mu);
    spot_warn_pending = 1;
    pthread_mutex_unlock(&spot_mu);
}

int spot_poll(spot_notice *n, int *early_warning)
{
    int sig = spot_sig_first, rc;
    pthread_mutex_lock(&spot_mu);
    if (sig && !spot_sig_recorded) {
        spot_notice s;
        memset(&s, 0, sizeof s);
        snprintf(s.source, sizeof s.source, "%s", spot_signal_name(sig));
        snprintf(s.detail, sizeof s.detail, "%s received; stopping within %.0f s",
                 spot_signal_name(sig), spot_grace);
        s.deadline = util_wall() + spot_grace;
        spot_sig_recorded = 1;
        spot_latch(&s);
    }
    rc = spot_latched.pending;
    if (rc && n)
        *n = spot_latched;
    if (early_warning) {
        *early_warning = spot_warn_pending;
        spot_warn_pending = 0;
    }
    pthread_mutex_unlock(&spot_mu);
    return rc;
}

void spot_reset(void)
{
    pthread_mutex_lock(&spot_mu);
    memset(&spot_latched, 0, sizeof spot_latched);
    spot_sig_recorded = 0;
    spot_warn_pending = 0;
    spot_sig_first = 0;
    spot_sig_ints = 0;
    pthread_mutex_unlock(&spot_mu);
}
