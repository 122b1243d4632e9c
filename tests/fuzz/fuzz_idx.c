/* Fuzz harness: the IDX readers, idx_read_images and idx_read_labels.
 *
 * The input is the file, read by both readers (gzread takes gzipped and plain
 * files alike). A plain input (one that does not start with the gzip magic
 * 1f 8b) has a known right answer, computed here from the format alone: the
 * readers must accept exactly the well-formed files and return their bytes.
 * The same plain input is then gzipped and read again, and must give the same
 * answer. Anything else (gzipped, corrupt streams) must succeed with a
 * validated result or fail with a message naming the file. */
#include "config.h"

#include <zlib.h>

#include "dpcnn/idx.h"
#include "fuzz.h"

static volatile unsigned g_sink; /* keeps the loop that touches every byte */

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The labels' range the harness asks for (Fashion-MNIST's). */
enum { CLASSES = 10 };

/* The right answer for a plain file: 1, the count, the sample's bytes and
 * where the pixels start if well formed: [N,H,W] or [N,C,H,W], every size
 * at least 1, C <= 4096, H, W <= 65536 and C*H*W <= 2^26 (what dpcnn takes). */
static int plain_images_ok(const uint8_t *d, size_t size, size_t *n, size_t *per, size_t *head)
{
    if (size < 4 || d[0] || d[1] || d[2] != 0x08 || (d[3] != 3 && d[3] != 4))
        return 0;
    const int nd = d[3];
    *head = 4 + 4 * (size_t)nd;
    if (size < *head)
        return 0;
    uint64_t c = nd == 4 ? be32(d + 8) : 1, h = be32(d + 4 + 4 * (size_t)(nd - 2)),
             w = be32(d + 4 + 4 * (size_t)(nd - 1));
    *n = be32(d + 4);
    if (*n == 0 || c == 0 || h == 0 || w == 0 || c > 4096 || h > 65536 || w > 65536 ||
        c * h * w > (UINT64_C(1) << 26))
        return 0;
    *per = (size_t)(c * h * w);
    return (uint64_t)(size - *head) == (uint64_t)*n * *per;
}

static int plain_labels_ok(const uint8_t *d, size_t size, size_t *n)
{
    if (size < 8 || d[0] || d[1] || d[2] != 0x08 || d[3] != 1)
        return 0;
    *n = be32(d + 4);
    if (*n == 0 || size - 8 != *n)
        return 0;
    for (size_t i = 0; i < *n; i++)
        if (d[8 + i] >= CLASSES)
            return 0;
    return 1;
}

/* Reads path as images and as labels; with want (a plain file's bytes, which
 * path holds plain or gzipped) checks the answer too. 1 if either accepted. */
static int check_readers(const char *path, const uint8_t *want, size_t size)
{
    uint8_t *px = NULL, *lab = NULL;
    size_t n = 0, expect_n = 0, per = 0, head = 0;
    int shape[3] = {0, 0, 0};

    fuzz_clear_error();
    int rc = idx_read_images(path, &px, &n, shape);
    fuzz_check_outcome(rc, "idx_read_images", path);
    if (rc == 0) {
        FUZZ_CHECK(n > 0 && px != NULL && shape[0] > 0 && shape[1] > 0 && shape[2] > 0,
                   "idx_read_images succeeded with no images");
        /* every byte must be there: ASan catches a short buffer */
        unsigned sum = 0;
        for (size_t i = 0; i < n * (size_t)shape[0] * (size_t)shape[1] * (size_t)shape[2]; i++)
            sum += px[i];
        g_sink = sum;
    }
    if (want) {
        int ok = plain_images_ok(want, size, &expect_n, &per, &head);
        FUZZ_CHECK(ok == (rc == 0), "idx_read_images %s a %s file", rc ? "refused" : "accepted",
                   ok ? "well-formed" : "malformed");
        if (ok)
            FUZZ_CHECK(n == expect_n &&
                           (size_t)shape[0] * (size_t)shape[1] * (size_t)shape[2] == per &&
                           memcmp(px, want + head, n * per) == 0,
                       "idx_read_images returned other pixels than the file holds");
    }
    free(px);
    int accepted = rc == 0;

    fuzz_clear_error();
    rc = idx_read_labels(path, &lab, &n, CLASSES);
    fuzz_check_outcome(rc, "idx_read_labels", path);
    if (rc == 0) {
        FUZZ_CHECK(n > 0 && lab != NULL, "idx_read_labels succeeded with no labels");
        for (size_t i = 0; i < n; i++)
            FUZZ_CHECK(lab[i] < CLASSES, "label %d of item %zu passed", lab[i], i);
    }
    if (want) {
        int ok = plain_labels_ok(want, size, &expect_n);
        FUZZ_CHECK(ok == (rc == 0), "idx_read_labels %s a %s file", rc ? "refused" : "accepted",
                   ok ? "well-formed" : "malformed");
        if (ok)
            FUZZ_CHECK(n == expect_n && memcmp(lab, want + 8, n) == 0,
                       "idx_read_labels returned other labels than the file holds");
    }
    free(lab);
    return accepted || rc == 0;
}

/* data gzipped (one member, as gzip(1) writes it) into a new buffer. */
static uint8_t *gzip_bytes(const uint8_t *data, size_t size, size_t *out_size)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    FUZZ_CHECK(deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK,
               "deflateInit2 failed");
    size_t cap = deflateBound(&z, (uLong)size) + 64;
    uint8_t *out = malloc(cap);
    FUZZ_CHECK(out != NULL, "out of memory");
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)size;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    FUZZ_CHECK(deflate(&z, Z_FINISH) == Z_STREAM_END, "deflate failed");
    *out_size = cap - z.avail_out;
    deflateEnd(&z);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int gzipped = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
    fuzz_check_accepted(check_readers(fuzz_file(0, data, size), gzipped ? NULL : data, size));
    if (!gzipped) {
        size_t gz_size;
        uint8_t *gz = gzip_bytes(data, size, &gz_size);
        check_readers(fuzz_file(1, gz, gz_size), data, size);
        free(gz);
    }
    return 0;
}
