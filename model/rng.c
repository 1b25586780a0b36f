/* Counter-based random numbers (splitmix64 mixing) and a keyed bijective
 * permutation used for data order. */
#include "rng.h"

#include <math.h>

uint64_t rng_mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

uint64_t rng_u64(uint64_t seed, uint64_t stream, uint64_t index)
{
    return rng_mix(rng_mix(rng_mix(seed) ^ stream) ^ index);
}

double rng_unit(uint64_t seed, uint64_t stream, uint64_t index)
{
    return (double)(rng_u64(seed, stream, index) >> 11) * (1.0 / 9007199254740992.0);
}

void rng_fill_normal_at(float *out, size_t first, size_t n, uint64_t seed, uint64_t stream, double std)
{
    /* Element j comes from the Box-Muller pair at j & ~1: any sub-range of
     * the stream is the same numbers as the whole stream's. So threads give
     * the same bits; they matter because a 1.2B model's weights take ~50 s
     * on one core (45 ns an element), most of a device check's benchmark. */
#pragma omp parallel for schedule(static) if (n >= ((size_t)1 << 20))
    for (size_t k = 0; k < n; k++) {
        size_t j = first + k, i = j & ~(size_t)1;
        double u1 = rng_unit(seed, stream, i), u2 = rng_unit(seed, stream, i + 1);
        double r = sqrt(-2.0 * log(1.0 - u1)), a = 6.283185307179586 * u2;
        out[k] = (float)(std * r * ((j & 1) ? sin(a) : cos(a)));
    }
}

void rng_fill_normal(float *out, size_t n, uint64_t seed, uint64_t stream, double std)
{
    rng_fill_normal_at(out, 0, n, seed, stream, std);
}

uint64_t rng_permute(uint64_t i, uint64_t n, uint64_t seed, uint64_t round)
{
    if (n <= 1)
        return 0;
    int bits = 2;
    while (bits < 64 && (1ull << bits) < n)
        bits += 2;
    int half = bits / 2;
    uint64_t mask = (1ull << half) - 1;
    uint64_t x = i;
    do {
        uint64_t l = x >> half, r = x & mask;
        for (uint64_t k = 0; k < 4; k++) {
            uint64_t f = rng_u64(seed, round * 8 + k, r) & mask;
            uint64_t t = r;
            r = l ^ f;
            l = t;
        }
        x = (l << half) | r;
    } while (x >= n);
    return x;
}
