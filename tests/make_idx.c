/* make_idx DIR NTRAIN NTEST C H W CLASSES: a synthetic MNIST-format data set
 * of C x H x W images (IDX files, [N,H,W] for one channel, [N,C,H,W] for
 * more) that a small network can learn: class k is a bright square in the
 * k-th cell of a grid, in channel k mod C, on noise. For the tests of data of
 * any shape; deterministic (dpcnn's keyed generator). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpcnn/rng.h"

static void be32(FILE *f, unsigned v)
{
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    fwrite(b, 1, 4, f);
}

static int write_set(const char *dir, const char *images, const char *labels, int n, int C, int H,
                     int W, int K, uint64_t seed)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, images);
    FILE *fi = fopen(path, "wb");
    snprintf(path, sizeof path, "%s/%s", dir, labels);
    FILE *fl = fopen(path, "wb");
    if (!fi || !fl)
        return -1;
    const unsigned char hi[4] = {0, 0, 8, (unsigned char)(C > 1 ? 4 : 3)}, hl[4] = {0, 0, 8, 1};
    fwrite(hi, 1, 4, fi);
    be32(fi, (unsigned)n);
    if (C > 1)
        be32(fi, (unsigned)C);
    be32(fi, (unsigned)H);
    be32(fi, (unsigned)W);
    fwrite(hl, 1, 4, fl);
    be32(fl, (unsigned)n);
    int grid = 1;
    while (grid * grid < K)
        grid++;
    const int ch = H / grid, cw = W / grid;
    unsigned char *img = malloc((size_t)C * H * W);
    Rng rng;
    rng_init(&rng, seed, 7, 0);
    for (int s = 0; s < n; s++) {
        const int k = (int)rng_below(&rng, (uint64_t)K);
        for (int i = 0; i < C * H * W; i++)
            img[i] = (unsigned char)rng_below(&rng, 96);
        const int c = k % C, r0 = (k / grid) * ch, c0 = (k % grid) * cw;
        for (int i = r0; i < r0 + ch; i++)
            for (int j = c0; j < c0 + cw; j++)
                img[((size_t)c * H + i) * W + j] = (unsigned char)(160 + rng_below(&rng, 96));
        fwrite(img, 1, (size_t)C * H * W, fi);
        fputc(k, fl);
    }
    free(img);
    return fclose(fi) | fclose(fl);
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: make_idx DIR NTRAIN NTEST C H W CLASSES\n");
        return 2;
    }
    const int ntrain = atoi(argv[2]), ntest = atoi(argv[3]), C = atoi(argv[4]), H = atoi(argv[5]),
              W = atoi(argv[6]), K = atoi(argv[7]);
    if (write_set(argv[1], "train-images-idx3-ubyte", "train-labels-idx1-ubyte", ntrain, C, H, W,
                  K, 1) < 0 ||
        write_set(argv[1], "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", ntest, C, H, W, K,
                  2) < 0) {
        perror("make_idx");
        return 1;
    }
    return 0;
}
