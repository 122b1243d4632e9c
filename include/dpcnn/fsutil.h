/* Files that are either whole or absent. A writer creates "<dir>/.<name>.tmp.<pid>",
 * writes and closes it, then fs_commit() flushes it to disk, renames it over the
 * final name (atomic within one file system) and flushes the directory, so a
 * crash at any moment leaves the old file or the new one, never a torn one. */
#ifndef DPCNN_FSUTIL_H
#define DPCNN_FSUTIL_H

#include <stddef.h>

/* tmp (size n) = the temporary name for final. */
void fs_temp_name(char *tmp, size_t n, const char *final);
int fs_commit(const char *tmp, const char *final);
/* mkdir -p; fails with a message if the path exists and is not a writable directory. */
int fs_make_dir(const char *path);
int fs_exists(const char *path);
/* Flush an open file by name (fsync). */
int fs_sync_path(const char *path);

#endif
