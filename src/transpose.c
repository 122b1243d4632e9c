/* transpose_f32 (transpose.h): the linear layer's inputs and outputs, turned
 * for its forward product, which vectorises across the samples (linear.c). */
#include "config.h"

#include "dpcnn/isa.h"
#include "dpcnn/lanes.h"
#include "dpcnn/transpose.h"

/* 16 x 16 blocks: up to 16 rows of up to 16 floats loaded (masked past the
 * edges, which then hold +0 and are never stored), turned in registers, and
 * each of the block's columns stored as a row of dst. */
static __attribute__((target("avx512f"))) void transpose_avx512(float *dst, ptrdiff_t ldd,
                                                                const float *src, ptrdiff_t lds,
                                                                int rows, int cols)
{
    for (int r0 = 0; r0 < rows; r0 += 16) {
        const int nr = rows - r0 < 16 ? rows - r0 : 16;
        const __mmask16 out = lanes16(nr);
        for (int c0 = 0; c0 < cols; c0 += 16) {
            const int nc = cols - c0 < 16 ? cols - c0 : 16;
            const __mmask16 in = lanes16(nc);
            __m512 v[16];
            for (int i = 0; i < 16; i++)
                v[i] = i < nr ? _mm512_maskz_loadu_ps(in, src + (r0 + i) * lds + c0)
                              : _mm512_setzero_ps();
            transpose16(v);
            for (int j = 0; j < nc; j++)
                _mm512_mask_storeu_ps(dst + (c0 + j) * ldd + r0, out, v[j]);
        }
    }
}

/* The same in 8 x 8 blocks on AVX2: pairs of rows, pairs of pairs, then the
 * 128-bit halves. */
static __attribute__((target("avx2"))) void transpose_avx2(float *dst, ptrdiff_t ldd,
                                                           const float *src, ptrdiff_t lds,
                                                           int rows, int cols)
{
    for (int r0 = 0; r0 < rows; r0 += 8) {
        const int nr = rows - r0 < 8 ? rows - r0 : 8;
        const __m256i out = lanes8(nr);
        for (int c0 = 0; c0 < cols; c0 += 8) {
            const int nc = cols - c0 < 8 ? cols - c0 : 8;
            const __m256i in = lanes8(nc);
            __m256 v[8], t[8];
            for (int i = 0; i < 8; i++)
                v[i] = i < nr ? _mm256_maskload_ps(src + (r0 + i) * lds + c0, in)
                              : _mm256_setzero_ps();
            for (int i = 0; i < 8; i += 2) {
                t[i] = _mm256_unpacklo_ps(v[i], v[i + 1]);
                t[i + 1] = _mm256_unpackhi_ps(v[i], v[i + 1]);
            }
            for (int i = 0; i < 8; i += 4)
                for (int h = 0; h < 2; h++) {
                    v[i + 2 * h] = _mm256_shuffle_ps(t[i + h], t[i + h + 2], 0x44);
                    v[i + 2 * h + 1] = _mm256_shuffle_ps(t[i + h], t[i + h + 2], 0xee);
                }
            /* v[4g + e], half l: column 4l + e of rows 4g .. 4g + 3 */
            for (int e = 0; e < 4; e++) {
                t[e] = _mm256_permute2f128_ps(v[e], v[4 + e], 0x20);
                t[4 + e] = _mm256_permute2f128_ps(v[e], v[4 + e], 0x31);
            }
            for (int j = 0; j < nc; j++)
                _mm256_maskstore_ps(dst + (c0 + j) * ldd + r0, out, t[j]);
        }
    }
}

void transpose_f32(float *dst, ptrdiff_t ldd, const float *src, ptrdiff_t lds, int rows,
                   int cols)
{
    if (isa_current() == ISA_AVX512) {
        transpose_avx512(dst, ldd, src, lds, rows, cols);
        return;
    }
    if (isa_current() == ISA_AVX2) {
        transpose_avx2(dst, ldd, src, lds, rows, cols);
        return;
    }
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            dst[c * ldd + r] = src[r * lds + c];
}
