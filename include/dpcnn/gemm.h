/* dpcnn's own matrix product: one fixed sequence of operations per output.
 *
 *   C[m][n] <- fma(A(m,K-1), B(K-1,n), ... fma(A(m,1), B(1,n), fma(A(m,0), B(0,n), C[m][n])))
 *
 * for m < M, n < N: each output starts from the value C holds (a bias, or the
 * gradient so far) and takes its K terms in order k = 0, 1, ..., K-1, one
 * fused multiply-add (a single rounding) each. The kernels vectorise across
 * n, and block over m and n for the registers, but never split or reorder an
 * output's sum, so the AVX-512, AVX2 and plain C paths (isa.h) give the same
 * bits, and so does any blocking, any thread and any rank.
 *
 * A(m,k) = A[m*ams + k*aks] (any strides: a transposed operand is free);
 * row k of B starts at B + boff[k] (boff NULL: at B + k*ldb) and is
 * contiguous in n; C is row-major with row stride ldc. The row offsets let a
 * convolution read its input in place (conv2d.c).
 *
 * gemm_init is the same product started from c0[m] (a bias; c0 NULL: +0)
 * instead of from C, which it does not read: the bits of filling C with the
 * start and calling gemm_acc, without the fill and the loads. */
#ifndef DPCNN_GEMM_H
#define DPCNN_GEMM_H

#include <stddef.h>

void gemm_acc(int M, int N, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
              const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C, ptrdiff_t ldc);
void gemm_init(int M, int N, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
               const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, const float *c0, float *C,
               ptrdiff_t ldc);

/* Where a path's outputs start: from C (gemm_acc), or from c0[m] or +0
 * (gemm_init, c0 or NULL). */
typedef struct {
    int from_c;
    const float *c0;
} GemmStart;

/* The paths themselves, for the tests and the benchmark (gemm_acc and
 * gemm_init call the one isa_current() names). */
void gemm_generic(int M, int N, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
                  const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                  GemmStart start);
void gemm_avx2(int M, int N, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
               const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
               GemmStart start);
void gemm_avx512(int M, int N, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
                 const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                 GemmStart start);

/* fma(a, b, c) correctly rounded, in plain C (double arithmetic and rounding
 * to odd, Boldo and Melquiond 2008): the same bits as the vfmadd instruction,
 * on CPUs without one. */
float fma_exact(float a, float b, float c);

#endif
