#include "config.h"

#include "dpcnn/rng.h"

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

void rng_init(Rng *rng, uint64_t seed, uint64_t purpose, uint64_t index)
{
    /* Two odd constants keep (purpose, index) pairs from colliding in practice. */
    rng->state = mix64(mix64(seed) ^ (purpose * UINT64_C(0xd6e8feb86659fd93)) ^
                       (index * UINT64_C(0xa0761d6478bd642f)));
}

uint64_t rng_next(Rng *rng)
{
    rng->state += UINT64_C(0x9e3779b97f4a7c15);
    return mix64(rng->state);
}

float rng_uniform(Rng *rng)
{
    return (float)(rng_next(rng) >> 40) * (1.0f / 16777216.0f);
}

uint64_t rng_below(Rng *rng, uint64_t bound)
{
    /* Lemire's multiply-shift with rejection: the 128-bit product's high half
     * is uniform in [0, bound) once the low half clears the biased sliver. */
    unsigned __int128 m = (unsigned __int128)rng_next(rng) * bound;
    uint64_t low = (uint64_t)m;
    if (low < bound) {
        uint64_t threshold = (0 - bound) % bound;
        while (low < threshold) {
            m = (unsigned __int128)rng_next(rng) * bound;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

void rng_permutation(uint32_t *perm, size_t n, uint64_t seed, uint64_t epoch)
{
    Rng rng;
    rng_init(&rng, seed, RNG_STREAM_PERM, epoch);
    for (size_t i = 0; i < n; i++)
        perm[i] = (uint32_t)i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rng_below(&rng, i);
        uint32_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}
