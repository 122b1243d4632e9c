#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sys/file.h>
#include <time.h>
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

int fs_check_output(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : err_set("%s: cannot check: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return err_set("%s exists and is not a regular file (%s): refusing to replace it", path,
                       S_ISLNK(st.st_mode)   ? "a symbolic link"
                       : S_ISDIR(st.st_mode) ? "a directory"
                       : S_ISFIFO(st.st_mode) ? "a FIFO"
                                              : "a device or socket");
    return 0;
}

int fs_check_input(const char *path, const char *what)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return err_set("%s: cannot read %s: %s", path, what,
                       errno == ENOENT ? "no such file" : strerror(errno));
    if (!S_ISREG(st.st_mode))
        return err_set("%s: %s is not a regular file (%s)", path, what,
                       S_ISDIR(st.st_mode)    ? "a directory"
                       : S_ISFIFO(st.st_mode) ? "a FIFO"
                                              : "a device or socket");
    if (access(path, R_OK) < 0)
        return err_set("%s: cannot read %s: %s", path, what, strerror(errno));
    return 0;
}

int fs_commit(const char *tmp, const char *final)
{
    if (fs_check_output(final) < 0) {
        unlink(tmp);
        return -1;
    }
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

int fs_write_atomic(const char *path, const void *buf, size_t n)
{
    if (fs_check_output(path) < 0)
        return -1;
    char tmp[4200];
    fs_temp_name(tmp, sizeof tmp, path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0)
        return err_set("%s: cannot create: %s", tmp, strerror(errno));
    const char *p = buf;
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, p + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : ENOSPC;
            close(fd);
            unlink(tmp);
            return err_set("%s: cannot write: %s", path, strerror(e));
        }
        done += (size_t)w;
    }
    if (close(fd) < 0) {
        int e = errno;
        unlink(tmp);
        return err_set("%s: cannot write: %s", path, strerror(e));
    }
    return fs_commit(tmp, path); /* flushes before the rename */
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

int fs_lock_dir(const char *dir, int *fd)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/.dpcnn.lock", dir);
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (*fd < 0)
        return err_set("%s: cannot create the lock file: %s", path, strerror(errno));
    if (flock(*fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        char holder[512] = "";
        ssize_t n = pread(*fd, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        close(*fd);
        *fd = -1;
        if (e != EWOULDBLOCK)
            return err_set("%s: cannot lock: %s", path, strerror(e));
        return err_set("%s is in use by another dpcnn run (%s): two runs in one directory "
                       "would interleave their checkpoints; wait for it, stop it, or choose "
                       "another --checkpoint-dir",
                       dir, holder[0] ? holder : "holder unknown");
    }
    char host[256] = "?", when[64] = "?", text[512];
    gethostname(host, sizeof host - 1);
    time_t now = time(NULL);
    struct tm tm;
    if (localtime_r(&now, &tm))
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    int len = snprintf(text, sizeof text, "pid %ld on %s, since %s\n", (long)getpid(), host, when);
    if (ftruncate(*fd, 0) < 0 || pwrite(*fd, text, (size_t)len, 0) != len) {
        /* the lock holds even if its note cannot be written (a full disk) */
    }
    return 0;
}

int fs_lock_wait(const char *path, int *fd)
{
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (*fd < 0)
        return err_set("%s: cannot create the lock file: %s", path, strerror(errno));
    while (flock(*fd, LOCK_EX) < 0) {
        if (errno == EINTR) /* a stop signal: the lock is still wanted */
            continue;
        int e = errno;
        close(*fd);
        *fd = -1;
        return err_set("%s: cannot lock: %s", path, strerror(e));
    }
    return 0;
}

void fs_unlock_dir(int fd)
{
    if (fd >= 0)
        close(fd);
}
