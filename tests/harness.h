/* A tiny unit-test harness: EXPECT marks the running test failed and says
 * where; harness_run prints one line per test; harness_end prints the
 * "N passed, N failed" line the runner adds up. */
#ifndef SPOTRAIN_HARNESS_H
#define SPOTRAIN_HARNESS_H

#include <stdio.h>

static int harness_pass, harness_fail, harness_failed_now;

#define EXPECT(c)                                                                      \
    do {                                                                               \
        if (!(c)) {                                                                    \
            fprintf(stderr, "    %s:%d: expected %s\n", __FILE__, __LINE__, #c);       \
            harness_failed_now = 1;                                                    \
        }                                                                              \
    } while (0)

static void harness_run(const char *name, void (*fn)(void))
{
    harness_failed_now = 0;
    fn();
    if (harness_failed_now) {
        harness_fail++;
        printf("FAIL %s\n", name);
    } else {
        harness_pass++;
        printf("ok   %s\n", name);
    }
    fflush(stdout);
}

static int harness_end(void)
{
    printf("%d passed, %d failed\n", harness_pass, harness_fail);
    return harness_fail ? 1 : 0;
}

#endif
