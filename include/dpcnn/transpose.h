/* Transposes: moving floats, so no bits change.
 *   transpose_f32: dst[c*ldd + r] = src[r*lds + c] for r < rows, c < cols
 *     (on AVX-512 in 16 x 16 blocks held in registers, masked at the edges;
 *     elsewhere element by element).
 *   transpose16: 16 x 16 floats in registers, r[i] lane k becoming r[k]
 *     lane i (for kernels compiled for AVX-512). */
#ifndef DPCNN_TRANSPOSE_H
#define DPCNN_TRANSPOSE_H

#include <immintrin.h>
#include <stddef.h>

void transpose_f32(float *dst, ptrdiff_t ldd, const float *src, ptrdiff_t lds, int rows,
                   int cols);

/* Four rounds of shuffles: pairs of rows, pairs of pairs, then 128-bit
 * quarters twice. */
static inline __attribute__((target("avx512f"), always_inline)) void transpose16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4)
        for (int h = 0; h < 2; h++) {
            const __m512d a = _mm512_castps_pd(t[i + h]), b = _mm512_castps_pd(t[i + h + 2]);
            r[i + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
            r[i + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        }
    /* r[4g + e], quarter l: column 4l + e of rows 4g .. 4g + 3 */
    for (int g = 0; g < 2; g++)
        for (int e = 0; e < 4; e++) {
            t[8 * g + e] = _mm512_shuffle_f32x4(r[8 * g + e], r[8 * g + 4 + e], 0x88);
            t[8 * g + 4 + e] = _mm512_shuffle_f32x4(r[8 * g + e], r[8 * g + 4 + e], 0xdd);
        }
    for (int e = 0; e < 8; e++) {
        r[e] = _mm512_shuffle_f32x4(t[e], t[8 + e], 0x88);
        r[8 + e] = _mm512_shuffle_f32x4(t[e], t[8 + e], 0xdd);
    }
}

#endif
