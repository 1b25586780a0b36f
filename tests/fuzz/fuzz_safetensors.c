/* libFuzzer target for the safetensors header reader and the sharded
 * index reader of model.safetensors.index.json: any input gives a status,
 * and every accepted tensor lies inside the data with a consistent size.
 * fuzz-sources: hf/import.c util/util.c
 * module: hf
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hf/hf.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    util_quiet = 1;
    if (size < 1)
        return 0;
    char *buf = malloc(size);
    if (!buf)
        return 0;
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = 0;
    if (data[0] & 1) {
        char **tens = NULL, **files = NULL;
        int n = 0;
        if (hf_index_parse("fuzz", buf, size - 1, &tens, &files, &n) == ST_OK)
            for (int i = 0; i < n; i++)
                if (strchr(files[i], '/') || !strcmp(files[i], ".."))
                    abort();
        hf_index_free(tens, files, n);
    } else {
        hf_tensor *t = NULL;
        int n = 0;
        uint64_t data_len = (uint64_t)data[0] * 37;
        if (hf_st_parse("fuzz", buf, size - 1, data_len, &t, &n) == ST_OK)
            for (int i = 0; i < n; i++)
                if (t[i].end > data_len || t[i].begin > t[i].end)
                    abort();
        free(t);
    }
    free(buf);
    return 0;
}
