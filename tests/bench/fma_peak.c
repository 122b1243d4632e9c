/* The core's peak: fused multiply-adds on independent registers, as many as
 * the widest path dpcnn has here can issue (isa.h), on one thread. Prints
 * GFLOP/s (a multiply-add counts two), the best of several trials, for the
 * benchmark's "fraction of peak". Usage: fma_peak [SECONDS] */
#include "config.h"

#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "dpcnn/isa.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* 16 chains of 16-float multiply-adds: enough to cover the latency of two
 * units; returns the flops done */
__attribute__((target("avx512f"))) static double run512(long iters, float *sink)
{
    __m512 a[16];
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 16; i++)
        a[i] = _mm512_set1_ps((float)i);
    for (long k = 0; k < iters; k++) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++)
            a[i] = _mm512_fmadd_ps(a[i], m, c);
    }
    __m512 s = a[0];
    for (int i = 1; i < 16; i++)
        s = _mm512_add_ps(s, a[i]);
    *sink = _mm512_reduce_add_ps(s);
    return (double)iters * 16 * 16 * 2;
}

__attribute__((target("avx2,fma"))) static double run256(long iters, float *sink)
{
    __m256 a[12];
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++)
        a[i] = _mm256_set1_ps((float)i);
    for (long k = 0; k < iters; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++)
            a[i] = _mm256_fmadd_ps(a[i], m, c);
    }
    float out[8];
    __m256 s = a[0];
    for (int i = 1; i < 12; i++)
        s = _mm256_add_ps(s, a[i]);
    _mm256_storeu_ps(out, s);
    *sink = out[0];
    return (double)iters * 12 * 8 * 2;
}

int main(int argc, char **argv)
{
    const double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    isa_select();
    const Isa isa = isa_current();
    float sink = 0;
    double best = 0;
    const double end = now() + seconds;
    while (now() < end) {
        const double t0 = now();
        double flops = isa == ISA_AVX512 ? run512(2000000, &sink)
                       : isa == ISA_AVX2 ? run256(2000000, &sink)
                                         : 0.0;
        const double dt = now() - t0;
        if (flops == 0)
            break;
        best = flops / dt > best ? flops / dt : best;
    }
    /* the chains' results go somewhere the compiler must keep */
    volatile float keep = sink;
    (void)keep;
    printf("peak %.1f GFLOP/s (%s fused multiply-adds, one thread)\n", best / 1e9, isa_name(isa));
    return 0;
}
