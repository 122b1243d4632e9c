/* Exact, order-free sums of floating-point terms, by integer fixed point.
 *
 * Floating-point addition is not associative, and MPI fixes no order for a
 * reduction, so a float allreduce over 1, 2 or 4 ranks gives different bits.
 * Integer addition is associative. So every term (one micro-batch's gradient,
 * one chunk's loss) is rounded once to a fixed-point integer on a grid of
 * 2^-shift, and the integers are summed: locally, across threads and across
 * ranks, in any order and grouping, always to the same value.
 *
 * The grid is chosen per tensor from the largest magnitude among ALL terms of
 * the step (agreed with one MPI_MAX on the exponents), so that the sum of
 * nterms terms stays below 2^50: shift = 50 - ceil(log2(nterms)) - e, where
 * every |term| < 2^e. (Below 2^51 a double converts to and from int64 by one
 * vectorisable addition, see xsum.c.) Each term is then exact to
 * 2^-(51 - ceil(log2 nterms)) of the largest one, about 2e-15 relative for a
 * few micro-batches and 1e-12 for a thousand: far finer than float32's own
 * 6e-8. doc/determinism.md has the argument in full. */
#ifndef DPCNN_XSUM_H
#define DPCNN_XSUM_H

#include <stddef.h>
#include <stdint.h>

/* Exponents: every |v| < 2^e. Two sentinels order correctly under MAX. */
#define XSUM_ZERO (-4096)      /* all terms are zero */
#define XSUM_NONFINITE (4096)  /* some term is Inf or NaN */

int xsum_exponent_f32(const float *v, size_t n);
int xsum_exponent_f64(const double *v, size_t n);
/* The grid for a maximum exponent e and nterms terms in the whole sum. */
int xsum_shift(int e, long nterms);
/* acc[i] += round(v[i] * 2^shift) */
void xsum_add_f32(int64_t *acc, const float *v, size_t n, int shift);
/* acc[i] = the sum over k < nslots of round(slot[k][i] * 2^shift): the same
 * bits as zeroing acc and adding the slots in turn, in one pass */
void xsum_sum_f32(int64_t *acc, const float *const *slot, int nslots, size_t n, int shift);
void xsum_add_f64(int64_t *acc, const double *v, size_t n, int shift);
/* out[i] = acc[i] * 2^-shift, rounded to float (or double) */
void xsum_get_f32(float *out, const int64_t *acc, size_t n, int shift);
/* out[i] = the sum over k < nslots of round(slot[k][i] * 2^shift), times
 * 2^-shift and rounded to float: xsum_sum_f32 then xsum_get_f32, bit for bit,
 * with the integers kept in L1 (the slots may lie anywhere, in other ranks'
 * memory too) */
void xsum_sum_get_f32(float *out, const float *const *slot, int nslots, size_t n, int shift);
double xsum_get_f64(int64_t acc, int shift);

#endif
