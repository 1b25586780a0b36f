/* The regular-expression subset that Hugging Face pre-tokenizer patterns use
 * (Oniguruma/Ruby semantics: leftmost-first alternation, greedy quantifiers,
 * lookahead, scoped (?i:...) with simple case folding, Unicode general
 * categories and White_Space), compiled to a small
 * backtracking program. Anything outside the subset is refused by name. */
#ifndef SPOTRAIN_REGEX_H
#define SPOTRAIN_REGEX_H

#include <stddef.h>
#include <stdint.h>

typedef struct rx rx;

/* Compiles pattern (UTF-8, n bytes). On a construct outside the subset
 * returns -1 with err naming it and its offset; 0 on success. */
int rx_compile(rx **out, const char *pattern, size_t n, char *err, size_t cap);
void rx_free(rx *r);

/* Backtracking stack; one per thread, reusable across patterns. */
typedef struct {
    uint32_t *st;
    size_t cap;
} rx_stack;
void rx_stack_free(rx_stack *s);

/* Leftmost match starting at or after `from` in text[0, n): 1 with
 * [*ms, *me) set, 0 for none, -1 out of memory. Bytes that are not valid
 * UTF-8 are one-byte characters of category Cn (unassigned). */
int rx_search(const rx *r, rx_stack *s, const uint8_t *text, size_t n, size_t from, size_t *ms,
              size_t *me);

/* Code point at text[i] (len in *len); invalid UTF-8 gives 0x110000 + byte. */
uint32_t rx_decode(const uint8_t *text, size_t n, size_t i, int *len);

/* Unicode general category index (see uni_cat_names in unicode_tab.h). */
int rx_category(uint32_t cp);
const char *rx_unicode_version(void);
/* Unicode version of the case folding behind (?i:...). */
const char *rx_fold_version(void);

#endif
