/* RUN_DIR/events.jsonl: the run's ledger, one JSON object per line, each
 * appended with a single write so concurrent writers and readers (cron'd
 * `cost report`) never see interleaved or torn records. */
#ifndef SPOTRAIN_EVENTS_H
#define SPOTRAIN_EVENTS_H

#include <stddef.h>

typedef struct {
    int fd;    /* -1: disabled (ranks other than 0) */
} events_log;

int events_open(events_log *e, const char *run_dir);
void events_close(events_log *e);
/* Appends {"ts":<now>,"event":"<name>",<fields>} where fields is the rest of
 * the object already formatted as JSON members (may be empty). */
int events_write(events_log *e, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* JSON string literal (with quotes) of s into out; truncates safely. */
void events_quote(const char *s, char *out, size_t cap);

#endif
