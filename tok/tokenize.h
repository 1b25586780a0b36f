/* The `data tokenize` pipeline: text, JSON lines (gzip or not) or standard
 * input -> llm.c token shards; cli/data.c turns the command line into
 * tkz_opts. */
#ifndef SPOTRAIN_TOKENIZE_H
#define SPOTRAIN_TOKENIZE_H

#include <stdint.h>

typedef enum { TKZ_AUTO, TKZ_TEXT, TKZ_JSONL } tkz_format;

typedef struct {
    const char *tokenizer;      /* tokenizer.json */
    const char *dir;            /* output directory */
    const char *const *inputs;  /* files, "-" for standard input */
    int ninputs;
    tkz_format format;
    int64_t eos;                /* -1: the tokenizer's end-of-text token */
    double val_fraction;        /* [0, 1) */
    int64_t shard_tokens;       /* 1 .. 2^31-1 */
    int threads;                /* 0: OpenMP's default */
    int force;                  /* replace shards already in dir */
    int special_as_text;        /* special-token text in documents as plain text */
} tkz_opts;

/* Writes dir/train_NNNNNN.bin and dir/val_NNNNNN.bin; ST_OK or the first
 * error (already printed). */
int tkz_run(const tkz_opts *o);

#endif
