/* Whole-file reads with a limit and directory fsyncs (include/phy/file.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "phy/err.h"
#include "phy/file.h"

int phy_read_regular(int fd, size_t max, char **out, size_t *len)
{
    struct stat st;
    size_t size, n = 0;
    char *buf;
    if (fstat(fd, &st) != 0)
        return PHY_EIO;
    if (!S_ISREG(st.st_mode))
        return PHY_EINVAL;
    if (st.st_size < 0 || (uint64_t)st.st_size > max)
        return PHY_ETOOBIG;
    size = (size_t)st.st_size;
    buf = malloc(size + 1);
    if (!buf)
        return PHY_ENOMEM;
    while (n < size) {
        ssize_t r = read(fd, buf + n, size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            free(buf);
            return PHY_EIO;
        }
        if (r == 0)
            break; /* shrank meanwhile */
        n += (size_t)r;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

int phy_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;
    if (fd < 0)
        return PHY_EIO;
    if (fsync(fd) != 0)
        rc = PHY_EIO;
    close(fd);
    return rc;
}

int phy_fsync_parent(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    size_t len;
    if (slash == NULL)
        return phy_fsync_dir(".");
    len = slash == path ? 1 : (size_t)(slash - path);
    if (len >= sizeof dir)
        return PHY_ETOOBIG;
    memcpy(dir, path, len);
    dir[len] = '\0';
    return phy_fsync_dir(dir);
}
