/* A tiny unit-test harness: EXPECT marks the running test failed and says
 * where; harness_run prints one line per test; harness_end prints the
 * "N passed, N failed" line the runner adds up. */
#ifndef SPOTRAIN_HARNESS_H
#define SPOTRAIN_HARNESS_H

#include <stdio.h>
#include <stdlib.h>

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

/* The files a test shares with its Python oracle: dir/file written whole
 * (0, or -1), and n doubles read back (NULL unless all n are there). */
static inline int harness_write(const char *dir, const char *file, const void *buf, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(buf, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

static inline double *harness_read_f64(const char *dir, const char *file, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "rb");
    double *d = f ? (double *)malloc(n * sizeof *d) : NULL;
    size_t got = d ? fread(d, sizeof *d, n, f) : 0;
    if (f)
        fclose(f);
    if (got != n) {
        free(d);
        return NULL;
    }
    return d;
}

#endif
