/* Lane masks (and the AVX2 column split) for the vector paths: the first n lanes of a vector, n clipped
 * to [0, width]. Column tails, kernel rows and list ends are all masked so:
 * a masked lane is never read or written (store8_ahead writes its extra
 * lanes only where later stores overwrite them). Each is compiled for its own
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

/* AVX2: the first n (<= 8) floats (or int32s) of v to p, in an output whose
 * elements are written in order and which ends at end: the whole vector while
 * it fits (its lanes past n land on elements written after it), masked only
 * where it would pass end. AVX2's masked store is microcode on AMD's cores
 * (Zen 4: a pooling layer 1.6x slower with one per group). */
static inline __attribute__((target("avx2"), always_inline)) void
store8_ahead(float *p, __m256 v, int n, const float *end)
{
    if (end - p >= 8)
        _mm256_storeu_ps(p, v);
    else
        _mm256_maskstore_ps(p, lanes8(n), v);
}

static inline __attribute__((target("avx2"), always_inline)) void
store8i_ahead(int *p, __m256i v, int n, const int *end)
{
    if (end - p >= 8)
        _mm256_storeu_si256((__m256i *)(void *)p, v);
    else
        _mm256_maskstore_epi32(p, lanes8(n), v);
}

/* AVX2: columns 0, 2, ..., 14 (odd = 0) or 1, 3, ..., 15 (odd = 1) of the 16
 * floats in a, b (a row's 2x2 windows apart: AVX2 has no two-register
 * permute, so a shuffle within each 128-bit half, then a swap of the middle
 * 64-bit pieces) */
static inline __attribute__((target("avx2"), always_inline)) __m256 columns(__m256 a, __m256 b,
                                                                             int odd)
{
    const __m256 s = odd ? _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))
                         : _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), _MM_SHUFFLE(3, 1, 2, 0)));
}

#endif
