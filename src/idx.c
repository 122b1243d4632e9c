#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "dpcnn/error.h"
#include "dpcnn/fsutil.h"
#include "dpcnn/idx.h"

/* zlib's message for f, without the "path: " it starts with (ours names it). */
static const char *gz_reason(gzFile f, const char *path, int *zerr)
{
    const char *msg = gzerror(f, zerr);
    size_t n = strlen(path);
    return strncmp(msg, path, n) == 0 && strncmp(msg + n, ": ", 2) == 0 ? msg + n + 2 : msg;
}

/* Fill buf[from..to) of `what`, which takes total bytes; gzread reads plain
 * files too. */
static int read_range(gzFile f, const char *path, uint8_t *buf, size_t from, size_t to,
                      size_t total, const char *what)
{
    size_t got = from;
    while (got < to) {
        unsigned chunk = (unsigned)(to - got > (1u << 30) ? (1u << 30) : to - got);
        int r = gzread(f, buf + got, chunk);
        if (r < 0) {
            int zerr;
            const char *msg = gz_reason(f, path, &zerr);
            if (zerr == Z_BUF_ERROR)
                return err_set("%s: truncated: the compressed stream ends inside %s", path,
                               what);
            return err_set("%s: corrupt compressed data while reading %s: %s", path, what, msg);
        }
        if (r == 0)
            return err_set("%s: truncated: %s should take %zu bytes but the file ends after %zu",
                           path, what, total, got);
        got += (size_t)r;
    }
    return 0;
}

static int read_exact(gzFile f, const char *path, void *buf, size_t n, const char *what)
{
    return read_range(f, path, buf, 0, n, n, what);
}

/* The n bytes of `what` in a new buffer, or NULL. The buffer grows with the
 * data read (from 1 MiB, doubling) instead of trusting the header: a 12-byte
 * file that claims 4 billion labels costs 1 MiB and a "truncated" message, not
 * a 4 GB allocation and "out of memory". */
static uint8_t *read_items(gzFile f, const char *path, size_t n, const char *what)
{
    uint8_t *p = NULL;
    size_t have = 0;
    while (have < n) {
        size_t want = have ? (have < n - have ? 2 * have : n) : (n < (1u << 20) ? n : (1u << 20));
        uint8_t *grown = realloc(p, want);
        if (!grown) {
            free(p);
            err_set("%s: out of memory for %s (%zu bytes)", path, what, n);
            return NULL;
        }
        p = grown;
        if (read_range(f, path, p, have, want, n, what) < 0) {
            free(p);
            return NULL;
        }
        have = want;
    }
    return p;
}

/* Open, check the magic for unsigned bytes in `ndim` dimensions, read dims. */
static gzFile open_idx(const char *path, int ndim, uint32_t *dims)
{
    /* a FIFO or a device would block gzread, or never end */
    if (fs_check_input(path, "the IDX file") < 0)
        return NULL;
    gzFile f = gzopen(path, "rb");
    if (!f) {
        err_set("%s: cannot open: %s", path, errno ? strerror(errno) : "out of memory");
        return NULL;
    }
    unsigned char head[4];
    if (read_exact(f, path, head, 4, "the header") < 0)
        goto fail;
    if (head[0] != 0 || head[1] != 0) {
        err_set("%s: not an IDX file (magic bytes %02x %02x %02x %02x, expected 00 00 08 %02x)",
                path, head[0], head[1], head[2], head[3], ndim);
        goto fail;
    }
    if (head[2] != 0x08) {
        err_set("%s: element type 0x%02x, expected 0x08 (unsigned byte)", path, head[2]);
        goto fail;
    }
    /* an image file is [N,H,W] or [N,C,H,W]: ndim 3 takes either */
    if (head[3] != ndim && !(ndim == 3 && head[3] == 4)) {
        err_set("%s: %d dimensions, expected %s", path, head[3],
                ndim == 3 ? "3 or 4 (an image file [N,H,W] or [N,C,H,W])" : "1 (a label file [N])");
        goto fail;
    }
    dims[3] = 0;
    for (int d = 0; d < head[3]; d++) {
        unsigned char b[4];
        if (read_exact(f, path, b, 4, "the dimension sizes") < 0)
            goto fail;
        dims[d] = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    }
    return f;
fail:
    gzclose(f);
    return NULL;
}

/* Nothing may follow the last element: extra bytes mean a mismatched header. */
static int expect_end(gzFile f, const char *path)
{
    char extra;
    int r = gzread(f, &extra, 1);
    if (r < 0) {
        int zerr;
        return err_set("%s: corrupt compressed data at the end: %s", path,
                       gz_reason(f, path, &zerr));
    }
    if (r > 0)
        return err_set("%s: data continues past the size its header gives", path);
    return 0;
}

int idx_read_images(const char *path, uint8_t **pixels, size_t *count, int shape[3])
{
    uint32_t dims[4];
    gzFile f = open_idx(path, 3, dims);
    if (!f)
        return -1;
    const int four = dims[3] != 0; /* [N,C,H,W] */
    const uint32_t c = four ? dims[1] : 1, h = four ? dims[2] : dims[1], w = four ? dims[3] : dims[2];
    if (c == 0 || h == 0 || w == 0 || c > 4096 || h > 65536 || w > 65536 ||
        (uint64_t)c * h * w > (UINT64_C(1) << 26)) {
        gzclose(f);
        return err_set("%s: images of %ux%ux%u are empty or larger than dpcnn takes", path, c, h,
                       w);
    }
    if (dims[0] == 0) {
        gzclose(f);
        return err_set("%s: holds no images", path);
    }
    const size_t per = (size_t)c * h * w;
    if ((uint64_t)dims[0] * per > (UINT64_C(1) << 36)) {
        gzclose(f);
        return err_set("%s: %u images of %zu bytes are more than dpcnn-prepare takes", path,
                       dims[0], per);
    }
    uint8_t *p = read_items(f, path, (size_t)dims[0] * per, "the pixels");
    if (!p || expect_end(f, path) < 0) {
        free(p);
        gzclose(f);
        return -1;
    }
    gzclose(f);
    *pixels = p;
    *count = dims[0];
    shape[0] = (int)c;
    shape[1] = (int)h;
    shape[2] = (int)w;
    return 0;
}

int idx_read_labels(const char *path, uint8_t **labels, size_t *count, int num_classes)
{
    uint32_t dims[4];
    gzFile f = open_idx(path, 1, dims);
    if (!f)
        return -1;
    const uint32_t n = dims[0];
    if (n == 0) {
        gzclose(f);
        return err_set("%s: holds no labels", path);
    }
    uint8_t *p = read_items(f, path, n, "the labels");
    if (!p || expect_end(f, path) < 0) {
        free(p);
        gzclose(f);
        return -1;
    }
    gzclose(f);
    for (uint32_t i = 0; i < n; i++)
        if (p[i] >= num_classes) {
            int v = p[i];
            free(p);
            return err_set("%s: label %d of item %u is out of range (0..%d)", path, v, i,
                           num_classes - 1);
        }
    *labels = p;
    *count = n;
    return 0;
}
