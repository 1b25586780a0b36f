/* What each provider's answer says, read from its body alone: the notice
 * body parsers the pollers (spot/notice.c) use, kept free of I/O and state
 * so tests/fuzz/fuzz_notice.c can feed them anything. */
#ifndef SPOTRAIN_SPOT_BODY_H
#define SPOTRAIN_SPOT_BODY_H

#include <stddef.h>

enum {
    SPOT_BODY_NONE = 0,      /* a well-formed answer that is not a notice */
    SPOT_BODY_NOTICE = 1,    /* stop: detail and time (0 = none given) filled */
    SPOT_BODY_WARNING = 2,   /* an early warning (maintenance, Freeze) */
    SPOT_BODY_BAD = -1       /* malformed: bad says why */
};

typedef struct {
    const char *bad;         /* static text; also set beside NOTICE for an unreadable time */
    char detail[200];
    double time;             /* the provider's deadline, epoch seconds; 0 = none */
    char event_id[128];      /* azure: the EventId to acknowledge; "" = none usable */
} spot_body;

/* body[0..len) is NUL-terminated at len (it may hold NULs before). */
int spot_body_aws(const char *body, size_t len, spot_body *b);
/* Any 200 answer is the warning; noticeTime goes into detail when readable. */
int spot_body_aws_rebalance(const char *body, size_t len, spot_body *b);
/* maintenance: 0 for instance/preempted, 1 for instance/maintenance-event. */
int spot_body_gcp(const char *body, size_t len, int maintenance, spot_body *b);
/* vm: this VM's name ("" = unknown: nothing can be ours). */
int spot_body_azure(const char *body, size_t len, const char *vm, spot_body *b);
int spot_body_alibaba(const char *body, size_t len, spot_body *b);
/* The body without surrounding whitespace into out; -1 when it does not fit
 * or holds bytes that are not printable ASCII. */
int spot_body_trimmed(const char *body, size_t len, char *out, size_t cap);

#endif
