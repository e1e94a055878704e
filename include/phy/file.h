/* Small file helpers shared by the hub, the agent and libphy: whole-file reads with a
 * limit, and directory fsyncs that make a create/rename/link durable. */
#ifndef PHY_FILE_H
#define PHY_FILE_H

#include <stddef.h>

/* Reads the regular file open at fd (not closed here) whole: at most max bytes,
 * NUL-terminated, *out malloc'd. A file that shrinks while read gives what is there.
 * Returns 0, PHY_EINVAL (not a regular file), PHY_ETOOBIG (over max), PHY_ENOMEM or
 * PHY_EIO. */
int phy_read_regular(int fd, size_t max, char **out, size_t *len);

/* fsync of the directory dir. 0 or PHY_EIO. */
int phy_fsync_dir(const char *dir);

/* fsync of the directory that holds path ("." when path has no slash). 0, PHY_ETOOBIG
 * or PHY_EIO. */
int phy_fsync_parent(const char *path);

#endif
