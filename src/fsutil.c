#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dpcnn/error.h"
#include "dpcnn/fsutil.h"

void fs_temp_name(char *tmp, size_t n, const char *final)
{
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s", final);
    snprintf(b, sizeof b, "%s", final);
    snprintf(tmp, n, "%s/.%s.tmp.%ld", dirname(a), basename(b), (long)getpid());
}

int fs_sync_path(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return err_set("%s: cannot open to flush: %s", path, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    /* Some file systems refuse fsync on directories (EINVAL): nothing to flush then. */
    if (rc < 0 && e != EINVAL)
        return err_set("%s: cannot flush to disk: %s", path, strerror(e));
    return 0;
}

int fs_commit(const char *tmp, const char *final)
{
    if (fs_sync_path(tmp) < 0) {
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, final) < 0) {
        int e = errno;
        unlink(tmp);
        return err_set("%s: cannot rename into place: %s", final, strerror(e));
    }
    char d[4096];
    snprintf(d, sizeof d, "%s", final);
    return fs_sync_path(dirname(d));
}

int fs_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int fs_make_dir(const char *path)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return err_set("%s: path too long", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0777) < 0 && errno != EEXIST)
                return err_set("%s: cannot create directory %s: %s", path, buf, strerror(errno));
            *p = '/';
        }
    if (mkdir(buf, 0777) < 0 && errno != EEXIST)
        return err_set("%s: cannot create directory: %s", path, strerror(errno));
    struct stat st;
    if (stat(buf, &st) < 0 || !S_ISDIR(st.st_mode))
        return err_set("%s: exists and is not a directory", path);
    if (access(buf, W_OK | X_OK) < 0)
        return err_set("%s: directory is not writable: %s", path, strerror(errno));
    return 0;
}
