/* The events.jsonl ledger writer: O_APPEND, one write(2) per record, and a
 * JSON string quoting helper for paths and reasons. */
#include "events.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int events_open(events_log *e, const char *run_dir)
{
    char path[4096];
    e->fd = -1;
    if (util_fmt(path, sizeof path, "%s/events.jsonl", run_dir) < 0)
        return util_fail(ST_IOERR, "run_dir path too long: %s", run_dir);
    e->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (e->fd < 0)
        return util_fail(ST_IOERR, "cannot open %s: %s", path, strerror(errno));
    return ST_OK;
}

void events_close(events_log *e)
{
    if (e->fd >= 0)
        close(e->fd);
    e->fd = -1;
}

int events_write(events_log *e, const char *name, const char *fmt, ...)
{
    char line[4096];
    if (e->fd < 0)
        return ST_OK;
    int n = snprintf(line, sizeof line, "{\"ts\":%.3f,\"event\":\"%s\"", util_wall(), name);
    if (fmt && *fmt) {
        va_list ap;
        line[n++] = ',';
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof line - (size_t)n - 2, fmt, ap);
        va_end(ap);
        if (m < 0 || (size_t)m >= sizeof line - (size_t)n - 2)
            return util_fail(ST_SOFTWARE, "event '%s' too long for one ledger line", name);
        n += m;
    }
    line[n++] = '}';
    line[n++] = '\n';
    ssize_t w = write(e->fd, line, (size_t)n);
    if (w != n)
        return util_fail(ST_IOERR, "cannot append to events.jsonl: %s", w < 0 ? strerror(errno) : "short write");
    return ST_OK;
}

void events_quote(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    if (cap < 3) {
        if (cap)
            out[0] = 0;
        return;
    }
    out[o++] = '"';
    for (; *s && o + 8 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", ch);
        } else {
            /* Bytes outside ASCII (a hostile metadata answer, say) become
             * '?' so the ledger stays valid UTF-8. */
            out[o++] = ch < 0x7f ? (char)ch : '?';
        }
    }
    out[o++] = '"';
    out[o] = 0;
}
