/* libFuzzer target for the ledger scans of checkpoint.interval_seconds =
 * auto (hard failures, the newest measured C): events.jsonl may be torn or
 * edited, so any bytes must give a count >= 0 and a C that is -1 or a
 * finite figure >= 0, never a read past the text.
 * fuzz-sources: train/interval.c
 * module: train
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "train/interval.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy, not NUL-terminated, so ASan sees any overread. */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    int n = interval_ledger_failures(buf, size);
    double c = interval_ledger_cost(buf, size);
    if (n < 0 || !(c == -1 || (isfinite(c) && c >= 0)))
        abort();
    free(buf);
    return 0;
}
