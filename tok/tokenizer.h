/* Byte-level BPE tokenizers read from a Hugging Face tokenizer.json (GPT-2,
 * DeepSeek, Llama 3 style): added/special tokens, the pre-tokenizer's Split
 * and ByteLevel steps, merges by rank; encode and decode exactly like the
 * tokenizers library's encode(text, add_special_tokens=False) and decode. */
#ifndef SPOTRAIN_TOKENIZER_H
#define SPOTRAIN_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct tok tok;          /* immutable after tok_load; share between threads */
typedef struct tok_enc tok_enc;  /* per-thread scratch and word cache */

/* Reads a tokenizer.json; a feature it cannot reproduce exactly (normalizer,
 * other model type, dropout, unknown regex construct, ...) is refused with one
 * line naming it (ST_CONFIG); ST_NOINPUT / ST_DATA for a missing or malformed
 * file. */
int tok_load(tok **out, const char *path);
/* Same from JSON text in memory; name is used in messages. */
int tok_load_text(tok **out, const char *name, const char *json, size_t len);
void tok_free(tok *t);

/* One past the largest id (vocabulary and added tokens). */
uint32_t tok_vocab_size(const tok *t);
/* Id of a token's exact content (vocabulary or added), or -1. */
int64_t tok_id(const tok *t, const char *content);
/* The end-of-text token: a special token with a well-known name
 * (<|endoftext|>, <｜end▁of▁sentence｜>, </s>, ...) or the eos_token of a
 * tokenizer_config.json beside the file; -1 if none. */
int64_t tok_eos(const tok *t);

int tok_enc_new(tok_enc **out, const tok *t);
void tok_enc_free(tok_enc *e);

/* Appends the ids of text[0, n) to *ids (grown with realloc; *len and *cap
 * track it). Arbitrary bytes are accepted: a byte that is not part of valid
 * UTF-8 is a character of its own (category Cn) for the pre-tokenizer and
 * maps through ByteLevel like any byte. ST_OK or ST_SOFTWARE (memory). */
int tok_encode(tok_enc *e, const uint8_t *text, size_t n, uint32_t **ids, size_t *len, size_t *cap);

/* Special added tokens written out in a text (a scraped page holding
 * "<|endoftext|>") become their ids, as the library's encode does; on, they
 * are encoded as plain text instead (its encode_special_tokens = True). */
void tok_enc_special_as_text(tok_enc *e, int on);
/* How many special-token literals this encoder has met so far, either way. */
uint64_t tok_enc_specials(const tok_enc *e);

/* The bytes an id decodes to (ByteLevel decoder; added tokens as their
 * content); NULL for an id outside the vocabulary. */
const uint8_t *tok_bytes(const tok *t, uint32_t id, size_t *len);

#endif
