/* Dropout with masks from dpcnn's keyed generator (doc/models.md), so a mask
 * depends on the seed, the layer, the global step and the sample's position in
 * the epoch's order, never on the rank, the thread or what was drawn before:
 *   stream (seed, RNG_STREAM_DROPOUT + 256 * layer, step * 2^32 + position),
 *   element k of the sample kept iff its k-th draw u (24 bits, in [0, 1)) >= p.
 * The output is PyTorch's x * noise with noise = scale on kept elements and 0
 * on dropped ones, scale = 1 / (1 - p) computed in double and rounded to float
 * (as native_dropout's input.mul(mask).mul_(scale)); so a dropped NaN stays a
 * NaN, as in PyTorch. p = 0 keeps every element (y = x * 1 = x); p = 1 drops
 * every one (noise 0; PyTorch's scale is 0 there too).
 *   y = x * noise,   dx += dy * noise */
#include "config.h"

#include "dpcnn/layers.h"
#include "dpcnn/rng.h"

static float dropout_scale(double p)
{
    return p >= 1.0 ? 0.0f : (float)(1.0 / (1.0 - p));
}

void dropout_forward(float *y, uint8_t *mask, const float *x, int n, size_t count, double p,
                     uint64_t seed, int layer, int64_t step, uint64_t first_position)
{
    const float scale = dropout_scale(p);
    const uint64_t purpose = RNG_STREAM_DROPOUT + 256 * (uint64_t)layer;
    for (int s = 0; s < n; s++) {
        Rng rng;
        rng_init(&rng, seed, purpose, ((uint64_t)step << 32) + first_position + (uint64_t)s);
        const size_t o = (size_t)s * count;
        for (size_t k = 0; k < count; k++) {
            const uint8_t keep = (double)rng_uniform(&rng) >= p;
            mask[o + k] = keep;
            y[o + k] = x[o + k] * (keep ? scale : 0.0f);
        }
    }
}

void dropout_backward(float *dx, const float *dy, const uint8_t *mask, int n, size_t count,
                      double p)
{
    const float scale = dropout_scale(p);
    for (size_t k = 0; k < (size_t)n * count; k++)
        dx[k] += dy[k] * (mask[k] ? scale : 0.0f);
}
