/* Spot resilience seen from the training loop: the stop flag set by signals
 * and by the provider notice poller thread, the deadline of the newest notice,
 * and the progress watchdog. Nothing here knows about tensors. */
#ifndef SPOTRAIN_SPOT_H
#define SPOTRAIN_SPOT_H

#include <stdint.h>

/* What the poller needs, filled by the config code. */
typedef struct {
    char provider[16];        /* auto | aws | gcp | azure | alibaba | file | none */
    double poll_seconds;
    double grace_seconds;     /* deadline of a signal-initiated stop */
    char metadata_url[1024];  /* base URL override (tests: a fake on 127.0.0.1); "" = the provider's */
    char notice_file[1024];   /* provider file: the path whose appearance means stop */
    char vm_name[256];        /* azure: this VM's name; "" = ask IMDS */
} spot_opts;

typedef struct {
    int pending;              /* a stop was requested */
    char source[32];          /* "SIGTERM", "SIGUSR1", "aws", "gcp", "file", ... */
    char detail[256];         /* e.g. the action and time from the provider */
    double deadline;          /* wall-clock seconds by which we must be gone (0 = unknown) */
    double given;             /* the provider's own time for the end (0 = none given) */
    int at_start;             /* posted by the poller's first round after spot_start */
} spot_notice;

/* Installs SIGTERM/SIGINT/SIGUSR1/SIGUSR2 handlers (a second SIGINT exits 130
 * at once). Safe to call once per process. */
int spot_signals_install(double grace_seconds);
/* Starts the provider poller thread; provider none starts nothing.
 * run_dir is where `notice` events are appended (may be NULL). */
int spot_start(const spot_opts *o, const char *run_dir);
void spot_stop(void);
/* Waits until the poller has asked its provider once (provider detection
 * included), at most timeout seconds; at once without a poller. So a notice
 * already standing at start is seen before the first step. */
void spot_first_round(double timeout);
/* Non-blocking: 1 and fills n when a stop was requested by a signal or a
 * notice, else 0. Also reports a rebalance recommendation once via
 * *early_warning (may be NULL). */
int spot_poll(spot_notice *n, int *early_warning);
/* Azure only: acknowledges this VM's pending Scheduled Event (POST
 * StartRequests) so the platform may go ahead at once instead of waiting for
 * NotBefore; call after the final checkpoint. ST_OK when there is nothing to
 * acknowledge. */
int spot_azure_ack(void);
/* The provider the poller settled on ("none" before or without one). */
const char *spot_provider_name(void);

/* Within spot/ (and tests): a poller reports a stop notice or an early
 * warning; thread-safe. A notice latches: spot_poll keeps reporting the
 * first source, with the earliest deadline seen. deadline 0 = unknown. */
void spot_notice_post(const char *source, const char *detail, double deadline);
/* The same for a provider notice: given is the provider's own time (0 =
 * none), at_start says the poller's first round found it. */
void spot_notice_post_timed(const char *source, const char *detail, double deadline, double given, int at_start);
void spot_warning_post(const char *source, const char *detail);
/* Appends one `notice` line to RUN_DIR/events.jsonl with a single write on
 * an O_APPEND descriptor. */
int spot_events_append_notice(const char *run_dir, const spot_notice *n);
/* Where latched notices are recorded (NULL or "": nowhere); spot_start sets it. */
void spot_events_dir(const char *run_dir);
/* Forgets latched signals, notices and warnings (tests, and a loop that
 * handles a notice without stopping). */
void spot_reset(void);
/* "2015-01-05T18:02:00Z" (fraction and +hh:mm offsets accepted) and the
 * HTTP-date "Mon, 19 Sep 2016 18:29:47 GMT" to epoch seconds; 0 or -1. */
int spot_parse_iso8601(const char *s, double *out);
int spot_parse_http_date(const char *s, double *out);

/* Watchdog: the loop calls spot_watchdog_kick() every step; if no kick
 * arrives for watchdog_seconds the process logs it and _exits ST_WATCHDOG. */
int spot_watchdog_start(double watchdog_seconds);
void spot_watchdog_kick(void);
void spot_watchdog_stop(void);

#endif
