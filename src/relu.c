/* ReLU. Written x < 0 ? 0 : x so that a NaN passes through, as in PyTorch
 * (a NaN must reach the loss, where the trainer stops on it, not vanish into
 * a zero). The backward pass masks by the output, y > 0, as PyTorch's
 * threshold_backward does; for y = max(0, x) that is the same set as x > 0,
 * and it lets the forward pass run in place. */
#include "config.h"

#include "dpcnn/isa.h"
#include "dpcnn/layers.h"

/* Element by element, so each path's build of the same loop (the compiler
 * vectorises it for the path's registers) gives the same bits. */
static inline __attribute__((always_inline)) void forward(float *y, const float *x, size_t count)
{
    for (size_t i = 0; i < count; i++)
        y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

static inline __attribute__((always_inline)) void backward(float *dx, const float *dy,
                                                           const float *y, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        const float g = dy[i]; /* loaded unconditionally: the loop then vectorises */
        dx[i] += y[i] > 0.0f ? g : 0.0f;
    }
}

#define AVX2 __attribute__((target("avx2")))
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
static void forward_generic(float *y, const float *x, size_t n) { forward(y, x, n); }
AVX2 static void forward_avx2(float *y, const float *x, size_t n) { forward(y, x, n); }
AVX512 static void forward_avx512(float *y, const float *x, size_t n) { forward(y, x, n); }
#define BARGS float *dx, const float *dy, const float *y, size_t n
static void backward_generic(BARGS) { backward(dx, dy, y, n); }
AVX2 static void backward_avx2(BARGS) { backward(dx, dy, y, n); }
AVX512 static void backward_avx512(BARGS) { backward(dx, dy, y, n); }

void relu_forward(float *y, const float *x, size_t count)
{
    switch (isa_current()) {
    case ISA_AVX512: forward_avx512(y, x, count); break;
    case ISA_AVX2: forward_avx2(y, x, count); break;
    default: forward_generic(y, x, count); break;
    }
}

void relu_backward(float *dx, const float *dy, const float *y, size_t count)
{
    switch (isa_current()) {
    case ISA_AVX512: backward_avx512(dx, dy, y, count); break;
    case ISA_AVX2: backward_avx2(dx, dy, y, count); break;
    default: backward_generic(dx, dy, y, count); break;
    }
}

void relu_forward_ref(double *y, const double *x, size_t count)
{
    for (size_t i = 0; i < count; i++)
        y[i] = x[i] < 0.0 ? 0.0 : x[i];
}

void relu_backward_ref(double *dx, const double *dy, const double *y, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (y[i] > 0.0)
            dx[i] += dy[i];
}
