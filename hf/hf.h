/* Reading a Hugging Face Llama-architecture model directory: the shape from
 * config.json, weights from model.safetensors or a sharded
 * model.safetensors.index.json (F32, BF16, F16), checked against the flat
 * layout's names and shapes and streamed out as fp32 in bounded pieces. */
#ifndef SPOTRAIN_HF_H
#define SPOTRAIN_HF_H

#include "model/model.h"

#include <stddef.h>
#include <stdint.h>

/* What an export carries from the source model besides the shape (whose
 * seq_len is the context length): the token ids; -1 where config.json has
 * none (an eos_token_id list gives its first id). */
typedef struct {
    int64_t bos, eos;
} hf_meta;

/* Shape from DIR/config.json (seq_len = max_position_embeddings, 4096 when
 * absent) and the token ids. Refuses what the trainer's model does not
 * compute (tied embeddings, biases, RoPE scaling, other activations, heads
 * that do not group) with one line naming config.json; ST_NOINPUT, ST_DATA,
 * ST_CONFIG. */
int hf_read_config(const char *dir, model_shape *s, hf_meta *m);

/* Delivers every parameter of L, in layout order, as fp32 pieces of at most
 * a few MiB: sink(arg, offset in floats into the flat vector, count, data).
 * A missing tensor, a wrong shape, an unsupported dtype or a tensor the
 * layout lacks is one line naming it (ST_DATA). A sink's non-zero status
 * stops the load and is returned. */
int hf_load(const char *dir, const model_layout *L,
            int (*sink)(void *arg, size_t offset, size_t n, const float *src), void *arg);

/* hf_load's choice of files and every check it makes before reading a
 * weight (headers only: names, shapes, dtypes, offsets), for --dry-run and
 * for a start that must refuse before it writes anything. which (cap bytes)
 * gets what is read: model.safetensors wins over model.safetensors.index.json
 * as in transformers; pytorch_model.bin alone is refused (ST_NOINPUT). */
int hf_check(const char *dir, const model_layout *L, char *which, size_t cap);

/* --- the parsers, exposed for tests and fuzzing ---------------------------- */

enum { HF_F32 = 0, HF_BF16 = 1, HF_F16 = 2 };

typedef struct {
    char name[128];
    int dtype, ndim;
    int64_t shape[8];
    uint64_t begin, end;   /* byte offsets into the data after the header */
    int file;              /* index into the directory's file list */
} hf_tensor;

/* A safetensors JSON header (hlen bytes) of a file whose data part holds
 * data_len bytes; checks dtypes, shapes against offsets, bounds, overlaps.
 * Appends to *t (realloc'd, *n counts). ST_OK or ST_DATA / ST_CONFIG with one
 * line naming file (name) and tensor. */
int hf_st_parse(const char *name, const char *hdr, size_t hlen, uint64_t data_len, hf_tensor **t, int *n);

/* model.safetensors.index.json: weight_map -> (tensor, file) pairs. Files are
 * plain names in the same directory (no '/', no ".."). *names and *files are
 * parallel arrays of malloc'd strings; free with hf_index_free. */
int hf_index_parse(const char *name, const char *json, size_t len, char ***tensors, char ***files, int *n);
void hf_index_free(char **tensors, char **files, int n);

#endif
