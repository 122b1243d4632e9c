/* IDX files, the MNIST distribution format (gzipped or plain):
 *   bytes 0-1 zero, byte 2 the element type (0x08 = unsigned byte),
 *   byte 3 the number of dimensions d, then d big-endian uint32 sizes,
 *   then the elements, row-major. Images are d = 3 [N,H,W] or d = 4 [N,C,H,W],
 *   labels d = 1 [N]. */
#ifndef DPCNN_IDX_H
#define DPCNN_IDX_H

#include <stddef.h>
#include <stdint.h>

/* Read an image file: N samples of C x H x W unsigned bytes (C = 1 for a
 * three-dimensional file); shape gets C, H, W. On failure returns -1 and
 * err_get() names the file and what is wrong (magic, dimensions, truncation). */
int idx_read_images(const char *path, uint8_t **pixels, size_t *count, int shape[3]);
/* Read a label file: N unsigned bytes, each < num_classes. */
int idx_read_labels(const char *path, uint8_t **labels, size_t *count, int num_classes);

#endif
