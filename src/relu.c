/* ReLU. Written x < 0 ? 0 : x so that a NaN passes through, as in PyTorch
 * (a NaN must reach the loss, where the trainer stops on it, not vanish into
 * a zero). The backward pass masks by the output, y > 0, as PyTorch's
 * threshold_backward does; for y = max(0, x) that is the same set as x > 0,
 * and it lets the forward pass run in place. */
#include "config.h"

#include "dpcnn/layers.h"

void relu_forward(float *y, const float *x, size_t count)
{
    for (size_t i = 0; i < count; i++)
        y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

void relu_backward(float *dx, const float *dy, const float *y, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        const float g = dy[i]; /* loaded unconditionally: the loop then vectorises */
        dx[i] += y[i] > 0.0f ? g : 0.0f;
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
