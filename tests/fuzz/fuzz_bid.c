/* libFuzzer target for the spot price-history parsers (AWS JSON, Alibaba
 * JSON, CSV) and everything bid computes from what they accept: any input
 * must give ST_OK or ST_DATA, never a crash or a sanitizer report.
 * fuzz-sources: money/bid.c util/util.c
 * module: money
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "money/bid.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bid_history h = {0};
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    util_quiet = 1;
    int rc = bid_parse(&h, "fuzz", buf, size);
    if (rc != ST_OK && rc != ST_DATA)
        abort();
    if (rc == ST_OK && bid_finish(&h) == ST_OK) {
        double end = 0;
        for (int i = 0; i < h.n; i++)
            if (h.s[i].n && h.s[i].pts[h.s[i].n - 1].ts > end)
                end = h.s[i].pts[h.s[i].n - 1].ts;
        for (int i = 0; i < h.n; i++) {
            bid_stats st;
            bid_eval e;
            if (!h.s[i].n)
                continue;
            if (bid_series_stats(&h.s[i], end, 7, &st) != ST_OK)
                abort();
            bid_eval_cap(&h.s[i], end, st.p50, 10, 0.2, &e);
            (void)bid_best_cap(&h.s[i], end, 10, 0.2, 0, &e);
            (void)bid_frac_above(&h.s[i], end, st.last * 1.5);
        }
    }
    bid_history_free(&h);
    free(buf);
    return 0;
}
