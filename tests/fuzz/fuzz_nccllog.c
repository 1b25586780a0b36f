/* libFuzzer target for what the NCCL data plane reads from outside: NCCL's
 * INFO log (the transport line of `selftest comm`) and a launcher's
 * local-rank variable (the input's first line). Any input must give a
 * terminated line and a verdict, never a crash or a sanitizer report.
 * fuzz-sources: comm/xfer.c comm/comm.c util/*.c
 * module: comm
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "comm/xfer.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *fuzz_value;
static const char *fuzz_get(const char *k) { return strcmp(k, "SLURM_LOCALID") ? NULL : fuzz_value; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cuda_xfer_transports t;
    char line[300], why[256];
    util_quiet = 1;
    /* Unterminated on purpose: the scanner takes a length. */
    cuda_xfer_transport_scan((const char *)data, size, &t);
    if (t.channels != t.p2p + t.shm + t.ib + t.socket + t.other_net)
        abort();
    cuda_xfer_transport_line(&t, line, sizeof line);
    if (strlen(line) >= sizeof line || (t.socket > 0) != (strncmp(line, "fell back", 9) == 0))
        abort();
    size_t n = 0;
    while (n < size && data[n] != '\n')
        n++;
    char *v = malloc(n + 1);
    if (!v)
        return 0;
    memcpy(v, data, n);
    v[n] = 0;
    fuzz_value = v;
    int local = -1;
    const char *from = NULL;
    int got = cuda_xfer_local_rank(fuzz_get, &local, &from, why, sizeof why);
    if (got == 1 && (local < 0 || cuda_xfer_pick_device(local, 8, why, sizeof why) >= 8))
        abort();
    free(v);
    return 0;
}
