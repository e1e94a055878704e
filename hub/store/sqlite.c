/* The SQLite engine of the store (engine.h): one WAL-mode file, one connection
 * whose statements are prepared once and kept, one writer at a time (BEGIN
 * IMMEDIATE under the connection's mutex). SQL and glue only: every rule is in
 * core.c. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "engine.h"
#include "phy/assert.h"
#include "phy/err.h"
#include "phy/log.h"

/* A regional hub's calls to eu that are still owed (enum store_outbox_kind). */
#define OUTBOX_SQL                                                                                 \
    "CREATE TABLE IF NOT EXISTS outbox("                                                           \
    "  device_id TEXT NOT NULL,"                                                                   \
    "  kind INTEGER NOT NULL,"                                                                     \
    "  serial TEXT NOT NULL DEFAULT '',"                                                           \
    "  attempts INTEGER NOT NULL DEFAULT 0,"                                                       \
    "  next_ms INTEGER NOT NULL,"                                                                  \
    "  created_ms INTEGER NOT NULL,"                                                               \
    "  PRIMARY KEY(device_id, kind));"                                                             \
    "CREATE INDEX IF NOT EXISTS outbox_next ON outbox(next_ms);"

/* Console sessions, login throttle, audit log and status history (version 4). The
 * session is found by the SHA-256 of its cookie value; login failures are keyed by
 * names, since guesses at unknown tenants and users are throttled too. audit.id is
 * the list cursor: AUTOINCREMENT never reuses one. status_history keeps the newest
 * STORE_STATUS_HISTORY reports of a device, its index also orders them (rowid
 * breaks ties between equal times). */
#define CONSOLE_SQL                                                                                \
    "CREATE TABLE IF NOT EXISTS console_sessions("                                                 \
    "  id_hash TEXT PRIMARY KEY,"                                                                  \
    "  tenant_id INTEGER NOT NULL,"                                                                \
    "  user_id INTEGER NOT NULL,"                                                                  \
    "  csrf TEXT NOT NULL,"                                                                        \
    "  created_ms INTEGER NOT NULL,"                                                               \
    "  last_used_ms INTEGER NOT NULL);"                                                            \
    "CREATE TABLE IF NOT EXISTS login_failures("                                                   \
    "  id INTEGER PRIMARY KEY,"                                                                    \
    "  tenant TEXT NOT NULL,"                                                                      \
    "  user TEXT NOT NULL,"                                                                        \
    "  at_ms INTEGER NOT NULL);"                                                                   \
    "CREATE INDEX IF NOT EXISTS login_failures_user ON login_failures(tenant, user, at_ms);"       \
    "CREATE INDEX IF NOT EXISTS login_failures_tenant ON login_failures(tenant, at_ms);"           \
    "CREATE TABLE IF NOT EXISTS audit("                                                            \
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"                                                      \
    "  tenant_id INTEGER NOT NULL,"                                                                \
    "  user_id INTEGER NOT NULL,"                                                                  \
    "  at_ms INTEGER NOT NULL,"                                                                    \
    "  action TEXT NOT NULL,"                                                                      \
    "  device_id TEXT,"                                                                            \
    "  detail_json TEXT);"                                                                         \
    "CREATE INDEX IF NOT EXISTS audit_tenant ON audit(tenant_id, id);"                             \
    "CREATE TABLE IF NOT EXISTS status_history("                                                   \
    "  device_id TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,"                   \
    "  at_ms INTEGER NOT NULL,"                                                                    \
    "  status_json TEXT NOT NULL);"                                                                \
    "CREATE INDEX IF NOT EXISTS status_history_device ON status_history(device_id, at_ms);"

/* Version 4 -> 5: attested serials (proof of possession), a registration's pending
 * challenge and proof, and each tenant's policy for claims by serial ('attested':
 * only attested serials may be claimed by serial; 'any'). Also the tail of SCHEMA_SQL. */
#define ATTEST_SQL                                                                                 \
    "ALTER TABLE tenants ADD COLUMN serial_claims TEXT NOT NULL DEFAULT 'attested';"               \
    "ALTER TABLE registrations ADD COLUMN challenge TEXT;"                                         \
    "ALTER TABLE registrations ADD COLUMN proven INTEGER NOT NULL DEFAULT 0;"                      \
    "CREATE TABLE attested_serials("                                                               \
    "  serial TEXT PRIMARY KEY,"                                                                   \
    "  public_key BLOB NOT NULL,"                                                                  \
    "  created_ms INTEGER NOT NULL);"

/* Version 5 -> 6: API tokens expire (0: never, tokens made before), and a device
 * remembers who claimed it and with what (replayed claims, console.c). */
#define V6_SQL                                                                                     \
    "ALTER TABLE api_tokens ADD COLUMN expires_ms INTEGER NOT NULL DEFAULT 0;"                     \
    "ALTER TABLE devices ADD COLUMN claimed_by INTEGER NOT NULL DEFAULT 0;"                        \
    "ALTER TABLE devices ADD COLUMN claim_key TEXT;"                                               \
    "CREATE INDEX devices_claim ON devices(tenant_id, claimed_by, claim_key);"

/* Version 6 -> 7: where a registration came from and what it runs (shown before a
 * claim by serial of an unattested serial). */
#define V7_SQL                                                                                     \
    "ALTER TABLE registrations ADD COLUMN source TEXT;"                                            \
    "ALTER TABLE registrations ADD COLUMN agent TEXT;"

/* Version 7 -> 8: several hub nodes on one store (docs/store.md "Nodes"): the node
 * holding a device's session, the nodes' heartbeats and the leases of singleton jobs. */
#define V8_SQL                                                                                     \
    "ALTER TABLE devices ADD COLUMN session_node TEXT;"                                            \
    "ALTER TABLE twins ADD COLUMN desired_patch TEXT;"                                             \
    "CREATE INDEX devices_online_node ON devices(session_node) WHERE online = 1;"                  \
    "CREATE TABLE nodes(node_id TEXT PRIMARY KEY, heartbeat_ms INTEGER NOT NULL,"                 \
    " started_ms INTEGER NOT NULL);"                                                               \
    "CREATE TABLE leases(name TEXT PRIMARY KEY, node_id TEXT NOT NULL, until_ms INTEGER NOT NULL);"

/* A fresh store is created at SCHEMA_VERSION directly; older ones are migrated
 * step by step (MIGRATE_SQL[v] takes version v to v + 1). */
static const char SCHEMA_SQL[] =
    "CREATE TABLE IF NOT EXISTS tenants("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  region TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS users("
    "  id INTEGER PRIMARY KEY,"
    "  tenant_id INTEGER NOT NULL REFERENCES tenants(id),"
    "  name TEXT NOT NULL,"
    "  pw_hash TEXT NOT NULL,"
    "  UNIQUE(tenant_id, name));"
    "CREATE TABLE IF NOT EXISTS api_tokens("
    "  token_hash TEXT PRIMARY KEY,"
    "  tenant_id INTEGER NOT NULL REFERENCES tenants(id),"
    "  user_id INTEGER NOT NULL REFERENCES users(id),"
    "  created_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS registrations("
    "  token_hash TEXT PRIMARY KEY,"
    "  serial TEXT NOT NULL,"
    "  code TEXT,"
    "  code_expires_ms INTEGER NOT NULL DEFAULT 0,"
    "  interval_s INTEGER NOT NULL,"
    "  last_poll_ms INTEGER,"
    "  last_active_ms INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS registrations_serial ON registrations(serial);"
    "CREATE INDEX IF NOT EXISTS registrations_code ON registrations(code);"
    /* No foreign key on tenant_id: the eu provisioning store records claims made
     * for tenants whose rows live in another region's store. secret_hash is ''
     * once the device is revoked (the column predates revocation: NOT NULL). */
    "CREATE TABLE IF NOT EXISTS devices("
    "  device_id TEXT PRIMARY KEY,"
    "  tenant_id INTEGER NOT NULL,"
    "  serial TEXT NOT NULL,"
    "  name TEXT,"
    "  tags_json TEXT NOT NULL DEFAULT '{}',"
    "  secret_hash TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  online INTEGER NOT NULL DEFAULT 0,"
    "  last_seen_ms INTEGER NOT NULL DEFAULT 0,"
    "  connected_ms INTEGER NOT NULL DEFAULT 0,"
    "  disconnected_ms INTEGER NOT NULL DEFAULT 0,"
    "  last_status_json TEXT,"
    "  last_status_ms INTEGER NOT NULL DEFAULT 0,"
    "  session_gen INTEGER NOT NULL DEFAULT 0,"
    "  remote INTEGER NOT NULL DEFAULT 0);" /* 1: claimed through eu (section 3) */
    "CREATE INDEX IF NOT EXISTS devices_tenant ON devices(tenant_id, device_id);"
    "CREATE INDEX IF NOT EXISTS devices_tenant_online ON devices(tenant_id, online, device_id);"
    /* A device without a twins row has the empty twin at versions 0. */
    "CREATE TABLE IF NOT EXISTS twins("
    "  device_id TEXT PRIMARY KEY REFERENCES devices(device_id) ON DELETE CASCADE,"
    "  desired TEXT NOT NULL DEFAULT '{}',"
    "  desired_version INTEGER NOT NULL DEFAULT 0,"
    "  reported TEXT NOT NULL DEFAULT '{}',"
    "  reported_version INTEGER NOT NULL DEFAULT 0);"
    /* region: NULL for eu's own claims, else the peer region that asked for the
     * issuance. Once redelivery of a peer region's issuance ended its device_id is ''
     * and device_ref holds phy_ref(device ID) (SHA-256 hex): that region can still
     * cancel, purge or replay by device ID, and the ID itself is not kept. */
    "CREATE TABLE IF NOT EXISTS issuances("
    "  serial TEXT PRIMARY KEY,"
    "  code TEXT,"
    "  token_hash TEXT NOT NULL,"
    "  device_id TEXT NOT NULL,"
    "  sealed BLOB,"
    "  created_ms INTEGER NOT NULL,"
    "  delivered_ms INTEGER,"
    "  region TEXT,"
    "  device_ref TEXT);"
    "CREATE INDEX IF NOT EXISTS issuances_code ON issuances(code);"
    "CREATE INDEX IF NOT EXISTS issuances_token ON issuances(token_hash);"
    "CREATE INDEX IF NOT EXISTS issuances_device ON issuances(device_id);"
    "CREATE INDEX IF NOT EXISTS issuances_ref ON issuances(device_ref);" OUTBOX_SQL
    "CREATE TABLE IF NOT EXISTS claim_failures("
    "  tenant_id INTEGER NOT NULL,"
    "  user_id INTEGER NOT NULL,"
    "  at_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS claim_failures_tenant ON claim_failures(tenant_id, at_ms);"
    "CREATE INDEX IF NOT EXISTS claim_failures_user"
    " ON claim_failures(tenant_id, user_id, at_ms);" CONSOLE_SQL ATTEST_SQL V6_SQL V7_SQL V8_SQL;

/* Version 1 -> 2: presence, last status and twins. The result matches SCHEMA_SQL. */
static const char MIGRATE_1_2_SQL[] =
    "ALTER TABLE devices ADD COLUMN online INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE devices ADD COLUMN last_seen_ms INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE devices ADD COLUMN connected_ms INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE devices ADD COLUMN disconnected_ms INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE devices ADD COLUMN last_status_json TEXT;"
    "ALTER TABLE devices ADD COLUMN last_status_ms INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE devices ADD COLUMN session_gen INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX devices_tenant_online ON devices(tenant_id, online, device_id);"
    "CREATE TABLE twins("
    "  device_id TEXT PRIMARY KEY REFERENCES devices(device_id) ON DELETE CASCADE,"
    "  desired TEXT NOT NULL DEFAULT '{}',"
    "  desired_version INTEGER NOT NULL DEFAULT 0,"
    "  reported TEXT NOT NULL DEFAULT '{}',"
    "  reported_version INTEGER NOT NULL DEFAULT 0);";

/* Version 2 -> 3: inter-region provisioning. The result matches SCHEMA_SQL. */
static const char MIGRATE_2_3_SQL[] =
    "ALTER TABLE devices ADD COLUMN remote INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE issuances ADD COLUMN region TEXT;"
    "ALTER TABLE issuances ADD COLUMN device_ref TEXT;"
    "CREATE INDEX issuances_device ON issuances(device_id);"
    "CREATE INDEX issuances_ref ON issuances(device_ref);" OUTBOX_SQL;

/* Version 3 -> 4: the web console. A device's last status report becomes the first
 * entry of its history. The result matches SCHEMA_SQL. */
static const char MIGRATE_3_4_SQL[] =
    CONSOLE_SQL "INSERT INTO status_history(device_id, at_ms, status_json)"
                " SELECT device_id, last_status_ms, last_status_json FROM devices"
                " WHERE last_status_json IS NOT NULL;";

static const char *const MIGRATE_SQL[STORE_SCHEMA_VERSION] = {
    NULL, /* 0: a fresh store gets SCHEMA_SQL */
    MIGRATE_1_2_SQL,
    MIGRATE_2_3_SQL,
    MIGRATE_3_4_SQL,
    ATTEST_SQL,
    V6_SQL,
    V7_SQL,
    V8_SQL,
};


/* ---- the database, its transaction and statements ---- */

#define STMT_CACHE 128 /* distinct statement texts of the core (about 110) */

struct cached {
    const char *sql; /* the core's static text: the key */
    sqlite3_stmt *st;
    int busy; /* a db_stmt is using it */
};

/* phy_tag's last (text, key) and answer: the devices of a fleet share their tags, so
 * a fleet-wide statement parses them once. Used under the connection's mutex. */
struct tag_memo {
    char *text, *key;
    size_t len;
    char *val; /* NULL: no string value */
    size_t vlen;
};

static void tag_memo_clear(struct tag_memo *m)
{
    free(m->text);
    free(m->key);
    free(m->val);
    memset(m, 0, sizeof *m);
}

struct db_stmt {
    sqlite3_stmt *st;
    struct cached *cached; /* reset, not finalized, at finish */
    int64_t changes;
    struct store_db *db;
};

struct db_tx {
    struct store_db *db;
};

/* Group commit. Operations run one at a time on the one connection (mu), each in a
 * savepoint of one outer transaction, the batch. An operation that ends while others
 * wait for mu leaves the batch open and waits for its commit; the one that ends with
 * nobody waiting (or the batch full or old) commits it, with one sync for all, and
 * hands each member the outcome. Every operation still returns only once its changes
 * are durable, and each still sees the ones before it, as when each committed alone;
 * but N operations arriving together cost one fdatasync instead of N. */
#define BATCH_MAX_OPS 256
#define BATCH_MAX_NS (10 * 1000 * 1000)

/* A member of the open batch waiting for its commit (on its thread's stack). It waits
 * on a semaphore of its own, not on mu: the members of a batch wake at once, without
 * taking mu again one after the other. */
struct batch_waiter {
    struct batch_waiter *next;
    int rc;
    sem_t done;
};

/* Transaction control, prepared once (sqlite3_exec would parse it on every call). */
enum ctl { C_BEGIN, C_BEGIN_IMMEDIATE, C_COMMIT, C_ROLLBACK, C_SAVEPOINT, C_RELEASE,
           C_ROLLBACK_TO, C_COUNT };
static const char *const ctl_sql[C_COUNT] = {
    "BEGIN", "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK", "SAVEPOINT op", "RELEASE op",
    "ROLLBACK TO op",
};

struct store_db {
    sqlite3 *db;
    sqlite3_stmt *ctl[C_COUNT];
    pthread_mutex_t mu; /* one transaction at a time on the one connection */
    atomic_int wanting;       /* threads waiting for mu to run an operation */
    int batch_open;           /* the outer transaction is open */
    int batch_ops;            /* operations in it */
    int in_op;                /* 0 plain read, 1 in a savepoint, 2 first of its batch */
    int64_t batch_start_ns;
    struct batch_waiter *waiters; /* members waiting for the batch's commit */
    uint64_t batches, batched_ops; /* commits of batches, operations in them */
    struct db_tx tx;
    struct cached cache[STMT_CACHE];
    struct tag_memo *tag_memo; /* phy_tag's last answer */
    size_t ncache;
};

static int exec_sql(struct store_db *d, const char *sql)
{
    return sqlite3_exec(d->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : PHY_EIO;
}

/* Runs one transaction control statement (prepared at first use). */
static int ctl(struct store_db *d, enum ctl c)
{
    if (!d->ctl[c] &&
        sqlite3_prepare_v3(d->db, ctl_sql[c], -1, SQLITE_PREPARE_PERSISTENT, &d->ctl[c], NULL) !=
            SQLITE_OK)
        return PHY_EIO;
    int rc = sqlite3_step(d->ctl[c]);
    sqlite3_reset(d->ctl[c]);
    return rc == SQLITE_DONE ? 0 : PHY_EIO;
}

/* Maps a failed step: uniqueness violations are PHY_EEXIST, all else PHY_EIO. */
static int step_err(struct store_db *d)
{
    int ext = sqlite3_extended_errcode(d->db);
    if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY)
        return PHY_EEXIST;
    return PHY_EIO;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* mu held: hands every waiting member the batch's outcome and closes the batch. */
static void batch_settle(struct store_db *d, int rc)
{
    struct batch_waiter *w = d->waiters, *next;
    for (; w; w = next) {
        next = w->next; /* w may be gone once posted */
        w->rc = rc;
        sem_post(&w->done);
    }
    d->waiters = NULL;
    d->batch_open = 0;
    d->batch_ops = 0;
}

/* mu held, no operation running: commits the open batch (if any). */
static int batch_commit(struct store_db *d)
{
    int rc = 0;
    if (!d->batch_open)
        return 0;
    if (ctl(d, C_COMMIT) != 0) {
        rc = PHY_EIO;
        if (!sqlite3_get_autocommit(d->db))
            ctl(d, C_ROLLBACK);
    }
    d->batches++;
    d->batched_ops += (uint64_t)d->batch_ops;
    batch_settle(d, rc);
    return rc;
}

/* Takes mu for one operation (or a maintenance step), counted as waiting meanwhile
 * so that the operation before it leaves the batch open for it. */
static void op_lock(struct store_db *d)
{
    atomic_fetch_add(&d->wanting, 1);
    pthread_mutex_lock(&d->mu);
    atomic_fetch_sub(&d->wanting, 1);
}

static int sq_begin(struct store_db *d, int write, struct db_tx **tx)
{
    op_lock(d);
    if (!d->batch_open && !write) {
        /* A read with no batch open: a plain read transaction, nothing to sync. */
        if (ctl(d, C_BEGIN) != 0) {
            pthread_mutex_unlock(&d->mu);
            return PHY_EIO;
        }
        d->in_op = 0;
    } else {
        /* A write opens the batch; anything while it is open joins it (a read may
         * see its uncommitted changes, so it too answers only after the commit). */
        if (!d->batch_open) {
            if (ctl(d, C_BEGIN_IMMEDIATE) != 0) {
                pthread_mutex_unlock(&d->mu);
                return PHY_EIO;
            }
            d->batch_open = 1;
            d->batch_ops = 1;
            d->batch_start_ns = mono_ns();
            /* The first of a batch needs no savepoint: were it to fail, nothing else
             * is in the transaction yet, so the whole of it rolls back. (A savepoint
             * keeps a sub-journal of every page it changes: a fleet patch over 10k
             * twins paid ~25 ms for it.) */
            d->in_op = 2;
            d->tx.db = d;
            *tx = &d->tx;
            return 0;
        }
        if (ctl(d, C_SAVEPOINT) != 0) {
            int lost = sqlite3_get_autocommit(d->db);
            if (lost)
                batch_settle(d, PHY_EIO);
            else if (d->batch_ops == 0 || atomic_load(&d->wanting) == 0)
                batch_commit(d); /* nobody else would commit it for its members */
            pthread_mutex_unlock(&d->mu);
            return PHY_EIO;
        }
        d->in_op = 1;
        d->batch_ops++;
    }
    d->tx.db = d;
    *tx = &d->tx;
    return 0;
}

static int sq_end(struct db_tx *tx, int commit)
{
    struct store_db *d = tx->db;
    int rc = 0;
    if (!d->in_op) { /* a plain read transaction */
        if (commit && ctl(d, C_COMMIT) != 0)
            rc = PHY_EIO;
        if ((rc != 0 || !commit) && !sqlite3_get_autocommit(d->db))
            ctl(d, C_ROLLBACK);
        pthread_mutex_unlock(&d->mu);
        return rc;
    }
    if (d->in_op == 2 && !commit) { /* the batch's first: it alone is undone */
        d->in_op = 0;
        if (!sqlite3_get_autocommit(d->db))
            ctl(d, C_ROLLBACK);
        PHY_ASSERT(d->waiters == NULL);
        d->batch_open = 0;
        d->batch_ops = 0;
        pthread_mutex_unlock(&d->mu);
        return 0;
    }
    if (d->in_op == 1) {
        if (commit && ctl(d, C_RELEASE) != 0)
            rc = PHY_EIO;
        if ((rc != 0 || !commit) && !sqlite3_get_autocommit(d->db)) {
            ctl(d, C_ROLLBACK_TO);
            ctl(d, C_RELEASE);
        }
    }
    d->in_op = 0;
    if (sqlite3_get_autocommit(d->db)) {
        /* An error that rolls back a whole transaction (SQLITE_FULL, IOERR, ...)
         * took every member's changes with it. */
        batch_settle(d, PHY_EIO);
        pthread_mutex_unlock(&d->mu);
        return PHY_EIO;
    }
    if (atomic_load(&d->wanting) > 0 && d->batch_ops < BATCH_MAX_OPS &&
        mono_ns() - d->batch_start_ns < BATCH_MAX_NS) {
        /* Someone is about to run: let them join, and wait for the commit. */
        struct batch_waiter w = {d->waiters, 0, {{0}}};
        if (sem_init(&w.done, 0, 0) == 0) {
            d->waiters = &w;
            pthread_mutex_unlock(&d->mu);
            while (sem_wait(&w.done) != 0)
                PHY_ASSERT(errno == EINTR);
            sem_destroy(&w.done);
            return rc ? rc : w.rc;
        }
        /* (sem_init cannot fail for a thread-shared semaphore; commit now) */
    }
    int crc = batch_commit(d);
    pthread_mutex_unlock(&d->mu);
    return rc ? rc : crc;
}

/* The prepared statement of a static text, prepared on first use (a second,
 * uncached one while the cached one is in use). */
static sqlite3_stmt *stmt_get(struct store_db *d, const char *sql, struct cached **cached)
{
    sqlite3_stmt *st = NULL;
    int found = 0;
    *cached = NULL;
    for (size_t i = 0; i < d->ncache; i++) {
        if (d->cache[i].sql == sql) {
            found = 1;
            if (!d->cache[i].busy) {
                *cached = &d->cache[i];
                d->cache[i].busy = 1;
                return d->cache[i].st;
            }
        }
    }
    if (sqlite3_prepare_v3(d->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK)
        return NULL;
    if (!found && d->ncache < STMT_CACHE) {
        d->cache[d->ncache] = (struct cached){sql, st, 1};
        *cached = &d->cache[d->ncache++];
    }
    return st;
}

static int bind(sqlite3_stmt *st, const struct db_arg *a, int n)
{
    for (int i = 0; i < n; i++) {
        int rc;
        switch (a[i].type) {
        case 't':
            rc = a[i].text ? sqlite3_bind_text(st, i + 1, a[i].text, -1, SQLITE_STATIC)
                           : sqlite3_bind_null(st, i + 1);
            break;
        case 'i':
            rc = sqlite3_bind_int64(st, i + 1, (sqlite3_int64)a[i].i);
            break;
        case 'n':
            rc = sqlite3_bind_null(st, i + 1);
            break;
        case 'b':
            if (a[i].len > INT_MAX)
                return PHY_ETOOBIG;
            rc = a[i].blob ? sqlite3_bind_blob(st, i + 1, a[i].blob, (int)a[i].len, SQLITE_STATIC)
                           : sqlite3_bind_null(st, i + 1);
            break;
        default:
            PHY_ASSERT(!"db_arg type is one of t, i, n, b");
            return PHY_EINVAL;
        }
        if (rc != SQLITE_OK)
            return PHY_EIO;
    }
    return 0;
}

static void sq_finish(struct db_stmt *s)
{
    if (!s)
        return;
    if (s->cached) {
        sqlite3_reset(s->st);
        sqlite3_clear_bindings(s->st);
        s->cached->busy = 0;
    } else {
        sqlite3_finalize(s->st);
    }
    free(s);
}

static int sq_query(struct db_tx *tx, const char *sql, const struct db_arg *a, int n,
                    struct db_stmt **out)
{
    struct store_db *d = tx->db;
    struct db_stmt *s = calloc(1, sizeof *s);
    int rc;
    *out = NULL;
    if (!s)
        return PHY_ENOMEM;
    s->db = d;
    s->st = stmt_get(d, sql, &s->cached);
    if (!s->st) {
        free(s);
        return PHY_EIO;
    }
    if ((rc = bind(s->st, a, n))) {
        sq_finish(s);
        return rc;
    }
    *out = s;
    return 0;
}

static int sq_step(struct db_stmt *s)
{
    int rc = sqlite3_step(s->st);
    if (rc == SQLITE_ROW)
        return DB_ROW;
    if (rc == SQLITE_DONE) {
        s->changes = sqlite3_changes(s->db->db);
        return DB_DONE;
    }
    return step_err(s->db);
}

static int sq_col_null(struct db_stmt *s, int col)
{
    return sqlite3_column_type(s->st, col) == SQLITE_NULL;
}

static int64_t sq_col_int(struct db_stmt *s, int col)
{
    return sqlite3_column_int64(s->st, col);
}

static const char *sq_col_text(struct db_stmt *s, int col, size_t *len)
{
    const char *v = (const char *)sqlite3_column_text(s->st, col);
    if (len)
        *len = v ? (size_t)sqlite3_column_bytes(s->st, col) : 0;
    return v;
}

static const void *sq_col_blob(struct db_stmt *s, int col, size_t *len)
{
    const void *v = sqlite3_column_blob(s->st, col);
    if (len)
        *len = v ? (size_t)sqlite3_column_bytes(s->st, col) : 0;
    return v;
}

static int64_t sq_changes(struct db_stmt *s)
{
    return s->changes;
}

/* Best effort after sealed bodies were purged: secure_delete zeroed them in the
 * database pages; checkpointing and truncating the WAL drops the older page images
 * that still hold them. The purge itself is already committed. */
static void sq_after_purge(struct store_db *d)
{
    op_lock(d);
    batch_commit(d);
    exec_sql(d, "PRAGMA wal_checkpoint(TRUNCATE)");
    pthread_mutex_unlock(&d->mu);
}

static void sq_commit_stats(struct store_db *d, uint64_t *commits, uint64_t *ops)
{
    pthread_mutex_lock(&d->mu);
    *commits = d->batches;
    *ops = d->batched_ops;
    pthread_mutex_unlock(&d->mu);
}

static int sq_debug_query(struct store_db *d, const char *sql, char *out, size_t cap)
{
    sqlite3_stmt *st = NULL;
    int rc = 0;
    op_lock(d);
    batch_commit(d);
    if (sqlite3_prepare_v2(d->db, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(out, cap, "<error: %s>", sqlite3_errmsg(d->db));
        rc = PHY_EIO;
    } else {
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_NULL)
            snprintf(out, cap, "<null>");
        else if (step == SQLITE_ROW)
            snprintf(out, cap, "%s", (const char *)sqlite3_column_text(st, 0));
        else if (step == SQLITE_DONE)
            snprintf(out, cap, "<none>");
        else {
            snprintf(out, cap, "<error: %s>", sqlite3_errmsg(d->db));
            rc = PHY_EIO;
        }
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&d->mu);
    return rc;
}

/* ---- open / close ---- */

static int pragma_text(struct store_db *d, const char *sql, char *out, size_t cap)
{
    sqlite3_stmt *st;
    int rc = PHY_EIO;
    if (sqlite3_prepare_v2(d->db, sql, -1, &st, NULL) != SQLITE_OK)
        return PHY_EIO;
    if (sqlite3_step(st) == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        if (v && strlen(v) < cap) {
            memcpy(out, v, strlen(v) + 1);
            rc = 0;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* The file shrinks after a flood: the store is created with auto_vacuum =
 * INCREMENTAL (older stores are converted once at open), and each sweep hands the
 * free pages back, then truncates the WAL. */
static void sq_compact(struct store_db *d)
{
    op_lock(d);
    batch_commit(d);
    exec_sql(d, "PRAGMA incremental_vacuum");
    exec_sql(d, "PRAGMA wal_checkpoint(TRUNCATE)");
    pthread_mutex_unlock(&d->mu);
}

/* auto_vacuum must be chosen before the first table, or set and applied by a
 * VACUUM (which rewrites the file: once, for stores made before this). */
static int auto_vacuum_init(struct store_db *d, char *err, size_t errcap)
{
    char mode[8], pages[24];
    if (pragma_text(d, "PRAGMA auto_vacuum", mode, sizeof mode) != 0 ||
        pragma_text(d, "PRAGMA page_count", pages, sizeof pages) != 0)
        goto fail;
    if (strcmp(mode, "2") == 0)
        return 0;
    if (exec_sql(d, "PRAGMA auto_vacuum = INCREMENTAL") != 0)
        goto fail;
    if (strcmp(pages, "0") != 0) {
        if (strtoll(pages, NULL, 10) > 1) /* more than a new file's header page */
            phy_log(PHY_LOG_INFO, "store_vacuum",
                    "why=\"auto_vacuum = INCREMENTAL, once\" pages=%s", pages);
        if (exec_sql(d, "VACUUM") != 0)
            goto fail;
    }
    return 0;
fail:
    store_errf(err, errcap, "auto_vacuum: %s", sqlite3_errmsg(d->db));
    return PHY_EIO;
}

static int schema_init(struct store_db *d, char *err, size_t errcap)
{
    char text[32];
    long long version = 0;
    int rc;
    if (exec_sql(d, "BEGIN IMMEDIATE") != 0)
        goto fail_sql;
    if (pragma_text(d, "PRAGMA user_version", text, sizeof text) != 0)
        goto fail_sql;
    version = strtoll(text, NULL, 10);
    if (version < 0 || version > STORE_SCHEMA_VERSION) {
        store_errf(err, errcap, "store schema version %lld is not known to this build (%d)", version,
                STORE_SCHEMA_VERSION);
        rc = PHY_EUNSUPP;
        goto fail;
    }
    if (version == 0) {
        if (exec_sql(d, SCHEMA_SQL) != 0)
            goto fail_sql;
    } else {
        for (long long v = version; v < STORE_SCHEMA_VERSION; v++) {
            if (exec_sql(d, MIGRATE_SQL[v]) != 0)
                goto fail_sql;
        }
    }
    if (version < STORE_SCHEMA_VERSION) {
        char sql[48];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", STORE_SCHEMA_VERSION);
        if (exec_sql(d, sql) != 0)
            goto fail_sql;
    }
    if (exec_sql(d, "COMMIT") != 0)
        goto fail_sql;
    return 0;

fail_sql:
    store_errf(err, errcap, "store schema: %s", sqlite3_errmsg(d->db));
    rc = PHY_EIO;
fail:
    if (!sqlite3_get_autocommit(d->db))
        exec_sql(d, "ROLLBACK");
    return rc;
}

static void sq_close(struct store_db *d)
{
    if (!d)
        return;
    if (d->db) {
        pthread_mutex_lock(&d->mu);
        batch_commit(d);
        pthread_mutex_unlock(&d->mu);
    }
    for (size_t i = 0; i < d->ncache; i++)
        sqlite3_finalize(d->cache[i].st);
    for (int c = 0; c < C_COUNT; c++)
        sqlite3_finalize(d->ctl[c]);
    sqlite3_close(d->db);
    if (d->tag_memo) {
        tag_memo_clear(d->tag_memo);
        free(d->tag_memo);
    }
    pthread_mutex_destroy(&d->mu);
    free(d);
}

/* SQL function phy_tag(tags_json, key): the string value of key, else NULL. */
static void sql_phy_tag(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    struct tag_memo *m = sqlite3_user_data(ctx);
    const char *text = argc == 2 ? (const char *)sqlite3_value_text(argv[0]) : NULL;
    const char *key = argc == 2 ? (const char *)sqlite3_value_text(argv[1]) : NULL;
    size_t len = text ? (size_t)sqlite3_value_bytes(argv[0]) : 0;
    json_t *doc, *v;
    if (!text || !key) {
        sqlite3_result_null(ctx);
        return;
    }
    if (!(m->text && m->len == len && memcmp(m->text, text, len) == 0 &&
          strcmp(m->key, key) == 0)) {
        tag_memo_clear(m);
        doc = json_loadb(text, len, 0, NULL);
        v = json_is_object(doc) ? json_object_get(doc, key) : NULL;
        m->text = malloc(len + 1);
        m->key = strdup(key);
        int is_string = json_is_string(v);
        if (is_string) {
            m->vlen = json_string_length(v);
            m->val = malloc(m->vlen + 1);
            if (m->val)
                memcpy(m->val, json_string_value(v), m->vlen + 1);
        }
        json_decref(doc);
        if (!m->text || !m->key || (is_string && !m->val)) {
            tag_memo_clear(m);
            sqlite3_result_error_nomem(ctx);
            return;
        }
        memcpy(m->text, text, len);
        m->text[len] = '\0';
        m->len = len;
    }
    if (m->val)
        sqlite3_result_text(ctx, m->val, (int)m->vlen, SQLITE_TRANSIENT);
    else
        sqlite3_result_null(ctx);
}

/* The embedded default: core.c asks the other engines first, so anything they did
 * not take is a file path. */
static int sq_accepts(const char *url)
{
    return url && url[0];
}

static int sq_open(const char *url, const struct store_engine_opts *o, struct store_db **out,
                   char *err, size_t errcap)
{
    static const char *const pragmas[] = {
        "PRAGMA busy_timeout = 5000", "PRAGMA foreign_keys = ON", "PRAGMA secure_delete = ON",
        "PRAGMA synchronous = FULL", /* credentials are durable before they are sent */
        /* The WAL shrinks back to 64 MiB at each checkpoint: a fleet patch over 10k
         * twins left a 165 MB WAL behind (issue 13). */
        "PRAGMA journal_size_limit = 67108864",
    };
    char mode[16];
    struct store_db *d;
    int rc;

    (void)o;
    if (out)
        *out = NULL;
    if (!out || !url || !url[0] || strnlen(url, PATH_MAX) >= PATH_MAX) {
        store_errf(err, errcap, "invalid store path");
        return PHY_EINVAL;
    }
    if (!sqlite3_threadsafe()) {
        store_errf(err, errcap, "SQLite is built without thread safety");
        return PHY_EUNSUPP;
    }
    /* The file holds password hashes and sealed issuances: create it owner-only
     * (SQLite gives its -wal and -shm files the same mode). */
    if (url[0] != ':' && strncmp(url, "file:", 5) != 0) {
        struct stat stt;
        int fd = open(url, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) {
            store_errf(err, errcap, "open %s: %s", url, strerror(errno));
            return PHY_EIO;
        }
        if (fstat(fd, &stt) != 0 || (stt.st_mode & 077) != 0) {
            store_errf(err, errcap,
                    "store %s is readable by group or others (mode %04o); chmod 600 it", url,
                    (unsigned)(stt.st_mode & 07777));
            close(fd);
            return PHY_EINVAL;
        }
        close(fd);
    }
    d = calloc(1, sizeof *d);
    if (!d) {
        store_errf(err, errcap, "out of memory");
        return PHY_ENOMEM;
    }
    /* Adaptive: a thread that finds mu taken spins briefly before it sleeps; most
     * operations are short, and a sleep and wake-up cost more than the operation. */
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
    int mrc = pthread_mutex_init(&d->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    if (mrc != 0) {
        free(d);
        store_errf(err, errcap, "mutex init failed");
        return PHY_EIO;
    }
    rc = sqlite3_open_v2(url, &d->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc != SQLITE_OK) {
        store_errf(err, errcap, "sqlite open %s: %s", url,
                d->db ? sqlite3_errmsg(d->db) : sqlite3_errstr(rc));
        rc = PHY_EIO;
        goto fail;
    }
    sqlite3_extended_result_codes(d->db, 1);
    d->tag_memo = calloc(1, sizeof *d->tag_memo);
    if (!d->tag_memo || sqlite3_create_function(d->db, "phy_tag", 2,
                                                SQLITE_UTF8 | SQLITE_DETERMINISTIC, d->tag_memo,
                                                sql_phy_tag, NULL, NULL) != SQLITE_OK) {
        store_errf(err, errcap, "sqlite function: %s", sqlite3_errmsg(d->db));
        rc = PHY_EIO;
        goto fail;
    }
    for (size_t i = 0; i < sizeof pragmas / sizeof pragmas[0]; i++) {
        if (exec_sql(d, pragmas[i]) != 0) {
            store_errf(err, errcap, "%s: %s", pragmas[i], sqlite3_errmsg(d->db));
            rc = PHY_EIO;
            goto fail;
        }
    }
    if (pragma_text(d, "PRAGMA journal_mode = WAL", mode, sizeof mode) != 0) {
        store_errf(err, errcap, "journal_mode: %s", sqlite3_errmsg(d->db));
        rc = PHY_EIO;
        goto fail;
    }
    if (strcmp(mode, "wal") != 0 && strcmp(mode, "memory") != 0) {
        store_errf(err, errcap, "journal_mode WAL refused (got %s)", mode);
        rc = PHY_EIO;
        goto fail;
    }
    rc = auto_vacuum_init(d, err, errcap);
    if (rc == 0)
        rc = schema_init(d, err, errcap);
    if (rc)
        goto fail;
    *out = d;
    return 0;

fail:
    sq_close(d);
    return rc;
}

const struct store_engine store_engine_sqlite = {
    .name = "sqlite",
    .accepts = sq_accepts,
    .open = sq_open,
    .close = sq_close,
    .begin = sq_begin,
    .end = sq_end,
    .query = sq_query,
    .step = sq_step,
    .col_null = sq_col_null,
    .col_int = sq_col_int,
    .col_text = sq_col_text,
    .col_blob = sq_col_blob,
    .changes = sq_changes,
    .finish = sq_finish,
    .after_purge = sq_after_purge,
    .compact = sq_compact,
    .commit_stats = sq_commit_stats,
    .debug_query = sq_debug_query,
};
