/* Files that are either whole or absent. A writer creates "<dir>/.<name>.tmp.<pid>",
 * writes and closes it, then fs_commit() flushes it to disk, renames it over the
 * final name (atomic within one file system) and flushes the directory, so a
 * crash at any moment leaves the old file or the new one, never a torn one. */
#ifndef DPCNN_FSUTIL_H
#define DPCNN_FSUTIL_H

#include <stddef.h>

/* tmp (size n) = the temporary name for final. */
void fs_temp_name(char *tmp, size_t n, const char *final);
/* Flush tmp, rename it over final (refused if final exists and is not a
 * regular file), flush the directory; tmp is removed on failure. */
int fs_commit(const char *tmp, const char *final);
/* The whole of buf as the file path, by the same temporary-name route. */
int fs_write_atomic(const char *path, const void *buf, size_t n);
/* An output path may be replaced only if it is absent or a regular file:
 * renaming over a symbolic link or a device node (-o /dev/null as root)
 * would replace that instead of writing a file. */
int fs_check_output(const char *path);
/* An input must be a readable regular file: a FIFO or a device would block
 * the reader (or never end), so it is refused at once. what names it ("the
 * data file"). */
int fs_check_input(const char *path, const char *what);
/* mkdir -p; fails with a message if the path exists and is not a writable directory. */
int fs_make_dir(const char *path);
int fs_exists(const char *path);
/* Flush an open file by name (fsync). */
int fs_sync_path(const char *path);

/* One run writes a directory at a time: take DIR/.dpcnn.lock with flock
 * (released by the kernel when the process ends, however it ends) and write
 * who holds it there. If another process holds it, -1 with a message that
 * names the holder (pid, host, since when). *fd is the lock to keep open. */
int fs_lock_dir(const char *dir, int *fd);
/* Take an flock on path (created if need be), waiting for as long as another
 * process holds it; release with fs_unlock_dir. */
int fs_lock_wait(const char *path, int *fd);
void fs_unlock_dir(int fd);

#endif
