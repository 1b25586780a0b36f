/* The progress watchdog: a thread that ends the process with ST_WATCHDOG when
 * the loop stops kicking it, e.g. a peer vanished and a collective hangs
 * forever, so that the restart wrapper can start the job again. */
#include "spot.h"

#include "util/util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_llong spot_wd_last_ms;     /* monotonic ms of the newest kick */
static double spot_wd_limit;
static int spot_wd_running, spot_wd_quit; /* quit guarded by spot_wd_mu */
static pthread_t spot_wd_th;
static pthread_mutex_t spot_wd_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t spot_wd_cv = PTHREAD_COND_INITIALIZER;

static long long spot_wd_now_ms(void)
{
    return (long long)(util_now() * 1000.0);
}

void spot_watchdog_kick(void)
{
    atomic_store_explicit(&spot_wd_last_ms, spot_wd_now_ms(), memory_order_relaxed);
}

/* A hung collective cannot be unwound, and exit() could block in atexit
 * handlers (MPI finalisation waits for the missing peer), so the only way out
 * is _exit. Committed checkpoints are safe: they are renamed into place. */
static void spot_wd_fire(double idle)
{
    char msg[200];
    int n = snprintf(msg, sizeof msg,
                     "spotrain: watchdog: no training progress for %.1f s (limit %.1f s; a peer "
                     "may have vanished); exiting %d so the job is restarted\n",
                     idle, spot_wd_limit, ST_WATCHDOG);
    ssize_t w = write(STDERR_FILENO, msg, n > 0 ? (size_t)n : 0);
    (void)w;
    _exit(ST_WATCHDOG);
}

static void *spot_wd_thread(void *arg)
{
    (void)arg;
    /* Check a few times per limit so the overshoot stays small. */
    double step = spot_wd_limit / 8;
    if (step > 1.0)
        step = 1.0;
    for (;;) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double end = (double)ts.tv_sec + ts.tv_nsec * 1e-9 + step;
        ts.tv_sec = (time_t)end;
        ts.tv_nsec = (long)((end - (double)ts.tv_sec) * 1e9);
        pthread_mutex_lock(&spot_wd_mu);
        while (!spot_wd_quit && pthread_cond_timedwait(&spot_wd_cv, &spot_wd_mu, &ts) != ETIMEDOUT)
            ;
        int q = spot_wd_quit;
        pthread_mutex_unlock(&spot_wd_mu);
        if (q)
            return NULL;
        double idle = (spot_wd_now_ms() - atomic_load(&spot_wd_last_ms)) / 1000.0;
        if (idle > spot_wd_limit)
            spot_wd_fire(idle);
    }
}

int spot_watchdog_start(double watchdog_seconds)
{
    if (watchdog_seconds <= 0 || spot_wd_running)
        return ST_OK;
    spot_wd_limit = watchdog_seconds;
    spot_wd_quit = 0;
    spot_watchdog_kick();
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int e = pthread_create(&spot_wd_th, NULL, spot_wd_thread, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e != 0)
        return util_fail(ST_SOFTWARE, "cannot start the watchdog thread: %s", strerror(e));
    spot_wd_running = 1;
    return ST_OK;
}

void spot_watchdog_stop(void)
{
    if (!spot_wd_running)
        return;
    pthread_mutex_lock(&spot_wd_mu);
    spot_wd_quit = 1;
    pthread_cond_signal(&spot_wd_cv);
    pthread_mutex_unlock(&spot_wd_mu);
    pthread_join(spot_wd_th, NULL);
    spot_wd_running = 0;
}
