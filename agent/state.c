/* phyagent's state directory: bounded reads, durable atomic writes, removal, lock. */
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "phy/err.h"
#include "phy/log.h"
#include "phy/file.h"

static int join(char *out, size_t cap, const char *dir, const char *prefix, const char *name,
                const char *suffix)
{
    int n = snprintf(out, cap, "%s/%s%s%s", dir, prefix, name, suffix);

    return n < 0 || (size_t)n >= cap ? PHY_ETOOBIG : 0;
}


/* Creates/locks the state directory. */
int agent_state_open(const char *dir, unsigned dir_mode, char *err, size_t errcap)
{
    char path[PATH_MAX];
    struct stat st;
    int fd;

    if (mkdir(dir, (mode_t)dir_mode) != 0 && errno != EEXIST) {
        snprintf(err, errcap, "cannot create %s: %s", dir, strerror(errno));
        return PHY_EIO;
    }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errcap, "%s is not a directory", dir);
        return PHY_EIO;
    }
    /* The credentials live here: a directory made by an older agent (or by hand)
     * that lets others list or write it is narrowed, and the change is logged.
     * Search permission alone stays (a display app running as another user reads
     * provisioning-code through it; it cannot list the names). */
    mode_t keep = (mode_t)dir_mode | 0011;
    if ((st.st_mode & 07777 & ~keep) != 0) {
        mode_t narrowed = (st.st_mode & 07777) & keep;
        if (chmod(dir, narrowed) != 0) {
            snprintf(err, errcap, "cannot narrow the mode of %s: %s", dir, strerror(errno));
            return PHY_EIO;
        }
        phy_log(PHY_LOG_WARN, "state_dir_narrowed", "dir=%s from=%04o to=%04o", dir,
                (unsigned)(st.st_mode & 07777), (unsigned)narrowed);
    }
    if (join(path, sizeof path, dir, "", AGENT_STATE_LOCK, "") != 0) {
        snprintf(err, errcap, "state directory path too long");
        return PHY_ETOOBIG;
    }
    fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errcap, "cannot open %s: %s", path, strerror(errno));
        return PHY_EIO;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errcap, "%s is in use by another phyagent", dir);
        close(fd);
        return PHY_EEXIST;
    }
    return fd;
}

/* Bounded read of one state file. */
int agent_state_read(const char *dir, const char *name, size_t max, char **out, size_t *n)
{
    char path[PATH_MAX];
    int fd, rc;

    *out = NULL;
    *n = 0;
    if (join(path, sizeof path, dir, "", name, "") != 0)
        return PHY_ETOOBIG;
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? PHY_ENOTFOUND : PHY_EIO;
    rc = phy_read_regular(fd, max, out, n);
    close(fd);
    return rc == PHY_EINVAL ? PHY_EIO : rc; /* not a regular file */
}

/* Temp file + fsync + rename + fsync(dir). */
int agent_state_write(const char *dir, const char *name, const void *data, size_t n, unsigned mode,
                      char *err, size_t errcap)
{
    char tmp[PATH_MAX], path[PATH_MAX];
    const char *p = data;
    size_t left = n;
    int fd, rc = PHY_EIO;

    if (join(tmp, sizeof tmp, dir, ".", name, ".tmp") != 0 ||
        join(path, sizeof path, dir, "", name, "") != 0) {
        snprintf(err, errcap, "state path too long");
        return PHY_ETOOBIG;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode & 0777);
    if (fd < 0) {
        snprintf(err, errcap, "cannot create %s: %s", tmp, strerror(errno));
        return PHY_EIO;
    }
    if (fchmod(fd, mode & 0777) != 0) {
        snprintf(err, errcap, "chmod %s: %s", tmp, strerror(errno));
        goto fail;
    }
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(err, errcap, "write %s: %s", tmp, strerror(w < 0 ? errno : EIO));
            goto fail;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0) {
        snprintf(err, errcap, "fsync %s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        snprintf(err, errcap, "close %s: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        snprintf(err, errcap, "rename %s: %s", path, strerror(errno));
        goto fail;
    }
    if (phy_fsync_dir(dir) != 0) {
        snprintf(err, errcap, "fsync %s: %s", dir, strerror(errno));
        return PHY_EIO;
    }
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return rc;
}

/* Unlink + fsync(dir); a missing file is not an error. */
int agent_state_remove(const char *dir, const char *name)
{
    char path[PATH_MAX];

    if (join(path, sizeof path, dir, "", name, "") != 0)
        return PHY_ETOOBIG;
    if (unlink(path) != 0) {
        if (errno == ENOENT)
            return 0;
        return PHY_EIO;
    }
    return phy_fsync_dir(dir);
}

/* mtime of one state file. */
int agent_state_mtime(const char *dir, const char *name, time_t *mtime)
{
    char path[PATH_MAX];
    struct stat st;

    if (join(path, sizeof path, dir, "", name, "") != 0)
        return PHY_ETOOBIG;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? PHY_ENOTFOUND : PHY_EIO;
    *mtime = st.st_mtime;
    return 0;
}
