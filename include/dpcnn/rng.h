/* Random numbers that are the same on every machine, rank and thread count.
 *
 * The generator is SplitMix64 (Steele, Lea and Flood, "Fast splittable
 * pseudorandom number generators", OOPSLA 2014): a 64-bit counter advanced by
 * the golden-ratio increment and passed through a fixed 64-bit finaliser.
 * Streams are keyed, never shared: the weights of tensor i come from the stream
 * keyed (seed, "init", i) and the order of epoch e from (seed, "perm", e), so
 * nothing depends on what was drawn before, on the rank or on the clock.
 * doc/determinism.md gives the exact recipe so other tools can reproduce it. */
#ifndef DPCNN_RNG_H
#define DPCNN_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t state;
} Rng;

/* Stream purposes, part of the key. Dropout layer L uses the purpose
 * RNG_STREAM_DROPOUT + 256 * L (doc/models.md). */
enum { RNG_STREAM_INIT = 1, RNG_STREAM_PERM = 2, RNG_STREAM_DROPOUT = 3 };

/* state = mix(mix(seed) ^ purpose * C1 ^ index * C2) (see rng.c). */
void rng_init(Rng *rng, uint64_t seed, uint64_t purpose, uint64_t index);
uint64_t rng_next(Rng *rng);
/* Uniform in [0, 1): the top 24 bits of one draw, so every float is exact. */
float rng_uniform(Rng *rng);
/* Uniform integer in [0, bound), bound > 0, without modulo bias (Lemire 2019). */
uint64_t rng_below(Rng *rng, uint64_t bound);

/* perm[0..n) = a uniform permutation of 0..n-1 drawn from the keyed stream
 * (Fisher-Yates, from the last position down). */
void rng_permutation(uint32_t *perm, size_t n, uint64_t seed, uint64_t epoch);

#endif
