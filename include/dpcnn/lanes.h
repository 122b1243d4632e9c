/* Lane masks for the vector paths: the first n lanes of a vector, n clipped
 * to [0, width]. Column tails, kernel rows and list ends are all masked so:
 * a masked lane is never read or written. Each is compiled for its own
 * instruction set and inlines into kernels compiled for more. */
#ifndef DPCNN_LANES_H
#define DPCNN_LANES_H

#include <immintrin.h>

/* AVX-512: a 16-lane mask register */
static inline __attribute__((target("avx512f"))) __mmask16 lanes16(int n)
{
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/* AVX2: lane i all ones where i < n (the mask vmaskmovps takes) */
static inline __attribute__((target("avx2"))) __m256i lanes8(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

#endif
