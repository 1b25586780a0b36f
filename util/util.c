/* Shared helpers: error/log lines, clocks, strict number parsing, file
 * reading and atomic replacement. */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

int util_quiet = 0;

/* The newest failure line, per thread: the ledger records why a start
 * failed without every caller passing the text along. */
static _Thread_local char util_last[1024];

int util_fail(int code, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "spotrain: %s\n", line);
    memcpy(util_last, line, sizeof util_last - 1);
    return code;
}

const char *util_last_error(void) { return util_last; }

void util_adopt_error(const char *line) { snprintf(util_last, sizeof util_last, "%s", line); }

void util_log(const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    if (util_quiet)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "spotrain: %s\n", line);
}

double util_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void util_poll_pause(long *pause_ns)
{
    if (*pause_ns > 0) {
        struct timespec ts = {0, *pause_ns};
        nanosleep(&ts, NULL);
    }
    *pause_ns = *pause_ns < 1000 ? *pause_ns + 50 : *pause_ns * 2;
    if (*pause_ns > 1000000)
        *pause_ns = 1000000;
}

double util_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void util_iso8601(double wall, char out[48])
{
    time_t t = (time_t)floor(wall);
    int ms = (int)((wall - (double)t) * 1000.0);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, 48, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             ms < 0 ? 0 : ms > 999 ? 999 : ms);
}

int util_fmt(char *dst, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
    return (n < 0 || (size_t)n >= cap) ? -1 : n;
}

int util_read_prefix(const char *path, size_t max, char **out, size_t *len, int *more)
{
    int rc = ST_OK;
    char *buf = NULL;
    size_t n = 0, cap;
    struct stat st;
    *more = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return util_fail(errno == ENOENT ? ST_NOINPUT : ST_IOERR, "cannot open %s: %s",
                         path, strerror(errno));
    if (fstat(fileno(f), &st) != 0) {
        rc = util_fail(ST_IOERR, "cannot stat %s: %s", path, strerror(errno));
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = util_fail(ST_NOINPUT, "%s is a directory; give the path of a file", path);
        goto out;
    }
    /* Devices and pipes have no size: read until EOF, never past max. */
    cap = S_ISREG(st.st_mode) && (uint64_t)st.st_size < max ? (size_t)st.st_size : 65536;
    if (cap > max)
        cap = max;
    buf = malloc(cap + 1);
    if (!buf) {
        rc = util_fail(ST_SOFTWARE, "out of memory reading %s (%zu bytes)", path, cap);
        goto out;
    }
    for (;;) {
        if (n == cap) {
            if (cap >= max)
                break;
            size_t nc = cap > max / 2 ? max : cap * 2;
            char *nb = realloc(buf, nc + 1);
            if (!nb) {
                rc = util_fail(ST_SOFTWARE, "out of memory reading %s (%zu bytes)", path, nc);
                goto out;
            }
            buf = nb;
            cap = nc;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        rc = util_fail(ST_IOERR, "cannot read %s: %s", path, strerror(errno));
        goto out;
    }
    if (n == max && !feof(f)) {
        int c = fgetc(f);
        *more = c != EOF;
    }
    buf[n] = 0;
    *out = buf;
    buf = NULL;
    if (len)
        *len = n;
out:
    free(buf);
    fclose(f);
    return rc;
}

int util_read_file(const char *path, char **out, size_t *len)
{
    int more;
    /* ftell's long is the bound a regular file can have here anyway. */
    int rc = util_read_prefix(path, (size_t)1 << 40, out, len, &more);
    if (rc == ST_OK && more) {
        free(*out);
        *out = NULL;
        return util_fail(ST_DATA, "%s: more than 1 TiB; not a file spotrain reads", path);
    }
    return rc;
}

int util_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return util_fail(ST_IOERR, "cannot open directory %s: %s", dir, strerror(errno));
    int rc = fsync(fd) == 0 || errno == EINVAL ? ST_OK
             : util_fail(ST_IOERR, "fsync %s: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

static void util_dirname(const char *path, char *dir, size_t cap)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, cap, ".");
    else if (slash == path)
        snprintf(dir, cap, "/");
    else
        snprintf(dir, cap, "%.*s", (int)(slash - path), path);
}

int util_write_atomic(const char *path, const void *buf, size_t len)
{
    char tmp[4096], dir[4096];
    if (util_fmt(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) < 0)
        return util_fail(ST_IOERR, "path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return util_fail(ST_IOERR, "cannot create %s: %s", tmp, strerror(errno));
    const char *p = buf;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return util_fail(ST_IOERR, "cannot write %s: %s", tmp, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return util_fail(ST_IOERR, "cannot flush %s: %s", tmp, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return util_fail(ST_IOERR, "cannot rename %s to %s: %s", tmp, path, strerror(e));
    }
    util_dirname(path, dir, sizeof dir);
    return util_fsync_dir(dir);
}

int util_mkdirs(const char *path)
{
    char buf[4096];
    if (util_fmt(buf, sizeof buf, "%s", path) < 0)
        return util_fail(ST_IOERR, "path too long: %s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return util_fail(ST_IOERR, "cannot create directory %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return util_fail(ST_IOERR, "cannot create directory %s: %s", buf, strerror(errno));
    return ST_OK;
}

int util_parse_i64(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    while (*s == ' ' || *s == '\t')
        s++;
    if (!*s)
        return -1;
    long long v = strtoll(s, &end, 10);
    while (*end == ' ' || *end == '\t')
        end++;
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

int util_parse_f64(const char *s, double *out)
{
    char *end;
    errno = 0;
    while (*s == ' ' || *s == '\t')
        s++;
    if (!*s)
        return -1;
    double v = strtod(s, &end);
    while (*end == ' ' || *end == '\t')
        end++;
    if (errno || *end || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

/* --- time stamps: ISO 8601 (lenient) or epoch seconds ------------------- */


int util_digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (no timegm: no TZ). */
static long util_days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153L * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int util_month_days(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

int util_parse_time(const char *s, double *out)
{
    int y, mo, d, h = 0, mi = 0, sec = 0;
    size_t n = strlen(s);
    if (n < 10 || s[4] != '-') {
        double v;
        if (util_parse_f64(s, &v) != 0 || v < 0 || v > 253402300799.0)
            return -1;
        *out = v;
        return 0;
    }
    if (util_digits(s, 4, &y) || s[4] != '-' || util_digits(s + 5, 2, &mo) || s[7] != '-' ||
        util_digits(s + 8, 2, &d))
        return -1;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > util_month_days(y, mo))
        return -1;
    const char *p = s + 10;
    double frac = 0;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (util_digits(p, 2, &h) || p[2] != ':' || util_digits(p + 3, 2, &mi))
            return -1;
        p += 5;
        if (*p == ':') {
            if (util_digits(p + 1, 2, &sec))
                return -1;
            p += 3;
            if (*p == '.' || *p == ',') {
                double scale = 0.1;
                p++;
                if (!isdigit((unsigned char)*p))
                    return -1;
                for (; isdigit((unsigned char)*p); p++, scale *= 0.1)
                    frac += (*p - '0') * scale;
            }
        }
        if (h > 23 || mi > 59 || sec > 60)
            return -1;
    }
    long off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        int sign = *p == '-' ? -1 : 1;
        p++;
        if (util_digits(p, 2, &oh))
            return -1;
        p += 2;
        if (*p == ':')
            p++;
        if (util_digits(p, 2, &om))
            return -1;
        p += 2;
        if (oh > 23 || om > 59)
            return -1;
        off = sign * (oh * 3600L + om * 60L);
    }
    if (*p)
        return -1;
    *out = (double)util_days_from_civil(y, mo, d) * 86400.0 + h * 3600.0 + mi * 60.0 + sec + frac -
           (double)off;
    return *out < 0 ? -1 : 0;
}

char *util_dtoa(double v, char out[32])
{
    if (!isfinite(v)) {
        snprintf(out, 32, "%s", isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf");
        return out;
    }
    /* 17 significant digits always round-trip; fewer usually do, and the
     * shortest that does is the number a person wrote ("19.2", not
     * "19.199999999999999"). */
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, 32, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            break;
    }
    /* %g writes 337920 as 3.3792e+05 at the shortest precision; below 1e17
     * the plain digits are as exact and what a reader expects. */
    const char *e = strchr(out, 'e');
    if (e && e[1] == '+') {
        int exp10 = atoi(e + 2);
        if (exp10 < 17)
            snprintf(out, 32, "%.*g", exp10 + 1, v);
    }
    return out;
}

struct json_object *util_json_num(double v)
{
    char s[32];
    if (!isfinite(v))
        return NULL;
    if (v == floor(v) && fabs(v) < 9e15)
        return json_object_new_int64((int64_t)v);
    return json_object_new_double_s(v, util_dtoa(v, s));
}
