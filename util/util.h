/* Shared helpers every module may use: status codes (sysexits), the one-line
 * error reporter, wall clocks, small string and file helpers. Nothing here
 * knows about models, checkpoints or clouds. */
#ifndef SPOTRAIN_UTIL_H
#define SPOTRAIN_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define SPOTRAIN_VERSION "0.1.0"

/* Status codes are sysexits.h values so main.c can exit with them as-is. */
enum {
    ST_OK = 0,
    ST_ALERT = 3,      /* bid --alert-above crossed */
    ST_USAGE = 64,
    ST_DATA = 65,      /* corrupt shard, checkpoint failing verification */
    ST_NOINPUT = 66,
    ST_UNAVAILABLE = 69,
    ST_SOFTWARE = 70,
    ST_IOERR = 74,
    ST_TEMPFAIL = 75,  /* stopped after a durable checkpoint: restart me */
    ST_CONFIG = 78,
    ST_WATCHDOG = 86,  /* no progress: a peer vanished; restart the job */
    ST_RECLAIMED = 88  /* started under a notice already due: nothing saved; not here again */
};

/* Prints "spotrain: <message>" as one line on stderr and returns code, so
 * callers can write `return util_fail(ST_DATA, "...")`. */
int util_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The text of this thread's newest util_fail ("" if none). */
const char *util_last_error(void);
/* Makes line this thread's newest failure without printing it: a failure a
 * worker thread printed already, handed to the thread that reports it. */
void util_keep_error(const char *line);
/* Informational line on stderr ("spotrain: ..."), silenced by util_quiet. */
void util_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern int util_quiet;

double util_now(void);        /* CLOCK_MONOTONIC seconds */
double util_wall(void);       /* CLOCK_REALTIME seconds since the epoch */
/* One wait of a polling loop: nothing at first, then a pause that grows to
 * 1 ms, so a quick answer costs no sleep and a long wait no busy core.
 * *pause_ns starts at 0. */
void util_poll_pause(long *pause_ns);
void util_iso8601(double wall, char out[48]);  /* 2026-11-28T08:24:48.123Z */

/* snprintf that reports truncation as -1 instead of a silent cut. */
int util_fmt(char *dst, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Whole file into a NUL-terminated heap buffer; ST_NOINPUT (missing, or a
 * directory) / ST_IOERR. Devices and pipes are read until EOF. */
int util_read_file(const char *path, char **out, size_t *len);
/* At most max bytes of it; *more is 1 when the file holds more (so a caller
 * can refuse /dev/zero or a huge file without reading it all). */
int util_read_prefix(const char *path, size_t max, char **out, size_t *len, int *more);
/* Write, fsync, rename over path, fsync parent dir. */
int util_write_atomic(const char *path, const void *buf, size_t len);
int util_fsync_dir(const char *dir);
int util_mkdirs(const char *path);   /* mkdir -p */

/* Strict number parsing: whole string, no overflow, finite. 0 on success. */
int util_parse_i64(const char *s, int64_t *out);
int util_parse_f64(const char *s, double *out);

/* The shortest decimal that strtod reads back to exactly v ("19.2",
 * "1e-06"); NaN, +Inf, -Inf as Prometheus spells them. Returns out. */
char *util_dtoa(double v, char out[32]);
/* A JSON number printed by util_dtoa (integral values as integers); NULL,
 * which json-c writes as null, when v is not finite. */
struct json_object;
struct json_object *util_json_num(double v);

/* Time stamp -> epoch seconds: ISO 8601 (date, optional time with
 * fraction, optional Z or +hh:mm offset) or plain epoch seconds. 0 or -1. */
int util_parse_time(const char *s, double *out);
/* Exactly n decimal digits at s -> *out; -1 if any is not a digit. */
int util_digits(const char *s, int n, int *out);

#endif
