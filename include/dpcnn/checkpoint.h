/* Weight files, laid out as PyTorch's state_dict: one float32 dataset per
 * tensor at the root, named by its key ("conv1.weight" ...) and shaped as in
 * PyTorch, so h5py + load_state_dict(strict=True) loads them as they are. */
#ifndef DPCNN_CHECKPOINT_H
#define DPCNN_CHECKPOINT_H

#include <stddef.h>

/* Written under a temporary name, flushed, renamed: whole or absent. */
int weights_save(const char *path, const float *params);
/* Strict: every key present with its exact shape, no other root datasets. */
int weights_load(const char *path, float *params);

#endif
