/* phyhub admin backup: SQLite's online backup API into a new 0600 file, atomically. */
#include "backup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "phy/err.h"

#define BACKUP_BUSY_MS 10000 /* the hub's writers hold the lock briefly */

static int is_url(const char *db)
{
    return strncmp(db, "postgresql://", 13) == 0 || strncmp(db, "postgres://", 11) == 0;
}

/* fsync of path's folder, so that the rename survives a crash. */
static int sync_dir_of(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    int fd, rc;

    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if ((size_t)(slash - path) >= sizeof(dir))
        return PHY_EINVAL;
    else
        snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
    if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        return PHY_EIO;
    rc = fsync(fd) == 0 ? 0 : PHY_EIO;
    close(fd);
    return rc;
}

static int quick_check(sqlite3 *db, char *err, size_t errcap)
{
    sqlite3_stmt *st = NULL;
    int rc = PHY_EIO;

    if (sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        const char *r = (const char *)sqlite3_column_text(st, 0);
        if (r != NULL && strcmp(r, "ok") == 0)
            rc = 0;
        else
            snprintf(err, errcap, "the copy fails quick_check: %s", r ? r : "?");
    } else {
        snprintf(err, errcap, "quick_check: %s", sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    return rc;
}

int hub_backup_sqlite(const char *db, const char *dest, char *err, size_t errcap)
{
    char tmp[4200];
    sqlite3 *src = NULL, *dst = NULL;
    sqlite3_backup *b;
    struct stat st;
    int fd, rc = PHY_EIO, src_rc;

    if (is_url(db)) {
        snprintf(err, errcap, "backup copies a SQLite store; for PostgreSQL use pg_dump "
                              "or continuous archiving (docs/operations.md)");
        return PHY_EINVAL;
    }
    if (stat(db, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errcap, "%s: not a store file", db);
        return PHY_EINVAL;
    }
    if (lstat(dest, &st) == 0) {
        snprintf(err, errcap, "%s exists: a backup never overwrites", dest);
        return PHY_EINVAL;
    }
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", dest) >= sizeof(tmp)) {
        snprintf(err, errcap, "path too long");
        return PHY_EINVAL;
    }
    /* The copy holds what the store holds (hashes, sealed issuances): 0600 from the
     * first byte; a stale .tmp of a failed run is replaced. */
    unlink(tmp);
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
        snprintf(err, errcap, "%s: %s", tmp, strerror(errno));
        return PHY_EIO;
    }
    close(fd);
    if (sqlite3_open_v2(db, &src, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        snprintf(err, errcap, "%s: %s", db, sqlite3_errmsg(src));
        goto out_close;
    }
    if (sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        snprintf(err, errcap, "%s: %s", tmp, sqlite3_errmsg(dst));
        goto out_close;
    }
    sqlite3_busy_timeout(src, BACKUP_BUSY_MS);
    if (!(b = sqlite3_backup_init(dst, "main", src, "main"))) {
        snprintf(err, errcap, "backup: %s", sqlite3_errmsg(dst));
        goto out_close;
    }
    /* All pages in one step: one read transaction, a consistent snapshot; in WAL mode
     * the hub's writers go on meanwhile. */
    src_rc = sqlite3_backup_step(b, -1);
    if (sqlite3_backup_finish(b) != SQLITE_OK || src_rc != SQLITE_DONE) {
        snprintf(err, errcap, "backup: %s", sqlite3_errstr(src_rc));
        goto out_close;
    }
    /* The copy stands alone: a rollback journal, not the source's WAL mode. */
    if (sqlite3_exec(dst, "PRAGMA journal_mode = DELETE", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errcap, "journal_mode: %s", sqlite3_errmsg(dst));
        goto out_close;
    }
    if ((rc = quick_check(dst, err, errcap)) != 0)
        goto out_close;
    rc = PHY_EIO;
    sqlite3_close(dst);
    dst = NULL;
    if ((fd = open(tmp, O_RDONLY | O_CLOEXEC)) < 0 || fsync(fd) != 0) {
        snprintf(err, errcap, "%s: fsync: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        goto out_close;
    }
    close(fd);
    if (link(tmp, dest) != 0) { /* unlike rename, never replaces a file made meanwhile */
        snprintf(err, errcap, "%s: %s", dest, strerror(errno));
        goto out_close;
    }
    unlink(tmp);
    rc = sync_dir_of(dest);
    if (rc != 0)
        snprintf(err, errcap, "fsync of the folder of %s failed", dest);
out_close:
    sqlite3_close(dst);
    sqlite3_close(src);
    if (rc != 0)
        unlink(tmp);
    return rc;
}
