/* FNV-1a, 64 bit: the one hash dpcnn uses, for data fingerprints, checkpoint
 * digests and comparing state across ranks. Simple, byte-order free, and
 * enough to tell contents apart (it is not a defence against forgery). */
#ifndef DPCNN_HASH_H
#define DPCNN_HASH_H

#include <stddef.h>
#include <stdint.h>

#define FNV1A64_INIT UINT64_C(0xcbf29ce484222325)

/* Continue hash h over n bytes. */
static inline uint64_t fnv1a64(uint64_t h, const void *data, size_t n)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * UINT64_C(0x100000001b3);
    return h;
}

#endif
