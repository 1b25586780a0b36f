/* Training data: llm.c token shards, raw byte files and the built-in
 * synthetic arithmetic corpus, cut into windows of seq_len+1 tokens. Which
 * window lands in which row of step s is a pure function of (seed, s). */
#ifndef SPOTRAIN_DATA_H
#define SPOTRAIN_DATA_H

#include <stdint.h>

struct cfg;

enum { DATA_TRAIN = 0, DATA_VAL = 1 };

typedef struct data data;

/* Opens and validates the configured source (ST_DATA naming file and
 * problem; ST_NOINPUT for missing files). */
int data_open(data **out, const struct cfg *c);
void data_close(data *d);

uint64_t data_windows(const data *d, int split);

/* Rows [row0, row0+n) of the global batch of optimizer step `step` (0-based),
 * each seq_len+1 tokens, into out. */
void data_train_rows(const data *d, uint64_t seed, int64_t step, int64_t global_batch,
                     int64_t row0, int64_t n, int32_t *out);
/* Validation rows in a fixed order: rows [row0, row0+n) of the held-out set
 * (wrapping around when it is shorter). */
void data_val_rows(const data *d, int64_t row0, int64_t n, int32_t *out);

/* The synthetic corpus's text, for the demo and tests (NUL-terminated). */
const char *data_synthetic_text(const data *d, int split);

#endif
