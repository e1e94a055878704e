/* phyhub admin backup: a consistent copy of a live SQLite store. */
#ifndef PHY_HUB_BACKUP_H
#define PHY_HUB_BACKUP_H

#include <stddef.h>

/* Copies the SQLite store db into the new file dest (mode 0600; refused when dest
 * exists) with SQLite's online backup API: one read transaction, so the copy is the
 * store as of one moment while the hub keeps reading and writing (WAL). The copy is
 * written to dest.tmp, checked (PRAGMA quick_check), synced and renamed into place.
 * A PostgreSQL URL is refused (pg_dump, docs/operations.md). Returns 0, or a negative
 * PHY_E* code with a one-line message in err. */
int hub_backup_sqlite(const char *db, const char *dest, char *err, size_t errcap);

#endif
