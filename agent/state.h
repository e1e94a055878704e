/* phyagent's state directory: bounded reads, durable atomic writes, removal, lock. */
#ifndef PHY_AGENT_STATE_H
#define PHY_AGENT_STATE_H

#include <stddef.h>
#include <time.h>

#define AGENT_STATE_CREDENTIALS "credentials.json"
#define AGENT_STATE_REGISTRATION "registration.json"
#define AGENT_STATE_CODE "provisioning-code"
#define AGENT_STATE_LOCK ".lock"
#define AGENT_STATE_MAX_FILE 65536

/* Creates dir with dir_mode (0700 unless config.json is shared: 0750 or 0755) when
 * missing, narrows an existing one that grants more than dir_mode plus search by
 * group and others (logged), and
 * takes an exclusive lock on dir/.lock so that one agent owns the directory.
 * Returns the lock fd (kept open for the life of the process) or a negative PHY_E*
 * with a message in err. */
int agent_state_open(const char *dir, unsigned dir_mode, char *err, size_t errcap);

/* Reads dir/name (at most max bytes, symlinks refused) into a malloc'd NUL-terminated
 * buffer *out of length *n (caller frees). PHY_ENOTFOUND when it does not exist,
 * PHY_ETOOBIG when larger than max, PHY_EIO otherwise. */
int agent_state_read(const char *dir, const char *name, size_t max, char **out, size_t *n);

/* Durably replaces dir/name with data: write dir/.name.tmp (mode), fsync, rename,
 * fsync dir. A reader sees the old or the new file, never a partial one. 0 or
 * negative with a message in err. */
int agent_state_write(const char *dir, const char *name, const void *data, size_t n, unsigned mode,
                      char *err, size_t errcap);

/* Removes dir/name (absent is fine) and fsyncs dir. 0 or PHY_EIO. */
int agent_state_remove(const char *dir, const char *name);

/* Last modification time of dir/name. 0 or negative. */
int agent_state_mtime(const char *dir, const char *name, time_t *mtime);

#endif
