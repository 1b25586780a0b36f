/* Counter-based randomness: every random number is a pure function of
 * (seed, stream, index), so initialisation and data order never depend on
 * thread count, world size or how often a run restarted. */
#ifndef SPOTRAIN_RNG_H
#define SPOTRAIN_RNG_H

#include <stddef.h>
#include <stdint.h>

uint64_t rng_mix(uint64_t x);                      /* splitmix64 finaliser */
uint64_t rng_u64(uint64_t seed, uint64_t stream, uint64_t index);
double rng_unit(uint64_t seed, uint64_t stream, uint64_t index);  /* [0,1) */
void rng_fill_normal(float *out, size_t n, uint64_t seed, uint64_t stream, double std);
/* Elements [first, first+n) of the same stream. */
void rng_fill_normal_at(float *out, size_t first, size_t n, uint64_t seed, uint64_t stream, double std);

/* A bijection on [0, n) keyed by (seed, round): a Feistel network over the
 * next power of four, cycle-walking until the value lands below n. */
uint64_t rng_permute(uint64_t i, uint64_t n, uint64_t seed, uint64_t round);

#endif
