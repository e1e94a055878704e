/* The PostgreSQL engine of the store (engine.h), on libpq: a small pool of
 * connections (one per transaction in flight), statements prepared once per
 * connection, SERIALIZABLE write transactions (the core runs an operation again
 * on a serialization failure), REPEATABLE READ READ ONLY snapshots for reads.
 * A connection that broke is opened again by the next transaction that needs it;
 * until the server answers, begin() is PHY_EUNAVAIL (503 for the caller). SQL and
 * glue only: every rule is in core.c. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "engine.h"
#include "phy/assert.h"
#include "phy/err.h"
#include "phy/log.h"

#define PG_POOL_DEFAULT 8
#define PG_POOL_MAX 64
#define PG_STMT_CACHE 160      /* distinct statement texts of the core (about 110) */
#define PG_ACQUIRE_MS 10000    /* a transaction waits this long for a free connection */
#define PG_CONNECT_TIMEOUT "5" /* seconds, libpq's connect_timeout */
/* No request waits for ever: a lock held elsewhere or a runaway statement ends the
 * operation with 503 (like SQLite's busy timeout); an idle transaction left open by
 * a lost hub is ended by the server. The URL's own options= replaces these. */
#define PG_SESSION_OPTIONS                                                                         \
    "-c lock_timeout=5000 -c statement_timeout=30000 -c idle_in_transaction_session_timeout=60000"
#define PG_SCHEMA_LOCK 7416000127LL /* advisory lock key of schema migrations */
#define PG_ARGS_MAX 24 /* the widest row store_copy inserts (devices) has 18 */

/* libpq type OIDs of the parameters (catalog/pg_type_d.h is not in libpq-dev). */
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_TEXT 25

struct prep {
    const char *sql; /* the core's static text: the key */
};

struct pg_conn {
    PGconn *c;
    int busy;
    struct prep prep[PG_STMT_CACHE]; /* statement i is prepared as "p<i>" */
    size_t nprep;
};

struct db_tx {
    struct store_db *db;
    struct pg_conn *pc;
    const char *begin_sql; /* sent with the first statement (one round trip for both) */
    int begun;
};

struct db_stmt {
    PGresult *res;
    int row, nrows;
    int64_t changes;
    unsigned char *blob; /* the last col_blob, unescaped */
};

struct store_db {
    const char *keys[5];
    const char *vals[5];
    char *url;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct pg_conn *pool;
    int npool;
};

/* ---- the version 4 schema (the SQLite engine's, in PostgreSQL's types) ----
 * Integers are BIGINT, text that the core orders by (device IDs) sorts by bytes
 * (COLLATE "C", like SQLite). Tables whose rows the core names by SQLite's rowid
 * have a column of that name. */
static const char PG_SCHEMA_SQL[] =
    "CREATE TABLE tenants("
    "  id BIGSERIAL PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  region TEXT NOT NULL,"
    "  created_ms BIGINT NOT NULL);"
    "CREATE TABLE users("
    "  id BIGSERIAL PRIMARY KEY,"
    "  tenant_id BIGINT NOT NULL REFERENCES tenants(id),"
    "  name TEXT NOT NULL,"
    "  pw_hash TEXT NOT NULL,"
    "  UNIQUE(tenant_id, name));"
    "CREATE TABLE api_tokens("
    "  token_hash TEXT PRIMARY KEY,"
    "  tenant_id BIGINT NOT NULL REFERENCES tenants(id),"
    "  user_id BIGINT NOT NULL REFERENCES users(id),"
    "  created_ms BIGINT NOT NULL);"
    "CREATE TABLE registrations("
    "  token_hash TEXT PRIMARY KEY,"
    "  serial TEXT NOT NULL,"
    "  code TEXT,"
    "  code_expires_ms BIGINT NOT NULL DEFAULT 0,"
    "  interval_s BIGINT NOT NULL,"
    "  last_poll_ms BIGINT,"
    "  last_active_ms BIGINT NOT NULL,"
    "  created_ms BIGINT NOT NULL);"
    "CREATE INDEX registrations_serial ON registrations(serial);"
    "CREATE INDEX registrations_code ON registrations(code);"
    "CREATE TABLE devices("
    "  device_id TEXT COLLATE \"C\" PRIMARY KEY,"
    "  tenant_id BIGINT NOT NULL,"
    "  serial TEXT NOT NULL,"
    "  name TEXT,"
    "  tags_json TEXT NOT NULL DEFAULT '{}',"
    "  secret_hash TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  created_ms BIGINT NOT NULL,"
    "  online BIGINT NOT NULL DEFAULT 0,"
    "  last_seen_ms BIGINT NOT NULL DEFAULT 0,"
    "  connected_ms BIGINT NOT NULL DEFAULT 0,"
    "  disconnected_ms BIGINT NOT NULL DEFAULT 0,"
    "  last_status_json TEXT,"
    "  last_status_ms BIGINT NOT NULL DEFAULT 0,"
    "  session_gen BIGINT NOT NULL DEFAULT 0,"
    "  remote BIGINT NOT NULL DEFAULT 0);"
    "CREATE INDEX devices_tenant ON devices(tenant_id, device_id);"
    "CREATE INDEX devices_tenant_online ON devices(tenant_id, online, device_id);"
    "CREATE TABLE twins("
    "  device_id TEXT COLLATE \"C\" PRIMARY KEY REFERENCES devices(device_id) ON DELETE CASCADE,"
    "  desired TEXT NOT NULL DEFAULT '{}',"
    "  desired_version BIGINT NOT NULL DEFAULT 0,"
    "  reported TEXT NOT NULL DEFAULT '{}',"
    "  reported_version BIGINT NOT NULL DEFAULT 0);"
    "CREATE TABLE issuances("
    "  serial TEXT PRIMARY KEY,"
    "  code TEXT,"
    "  token_hash TEXT NOT NULL,"
    "  device_id TEXT COLLATE \"C\" NOT NULL,"
    "  sealed BYTEA,"
    "  created_ms BIGINT NOT NULL,"
    "  delivered_ms BIGINT,"
    "  region TEXT,"
    "  device_ref TEXT);"
    "CREATE INDEX issuances_code ON issuances(code);"
    "CREATE INDEX issuances_token ON issuances(token_hash);"
    "CREATE INDEX issuances_device ON issuances(device_id);"
    "CREATE INDEX issuances_ref ON issuances(device_ref);"
    "CREATE TABLE outbox("
    "  rowid BIGSERIAL,"
    "  device_id TEXT NOT NULL,"
    "  kind BIGINT NOT NULL,"
    "  serial TEXT NOT NULL DEFAULT '',"
    "  attempts BIGINT NOT NULL DEFAULT 0,"
    "  next_ms BIGINT NOT NULL,"
    "  created_ms BIGINT NOT NULL,"
    "  PRIMARY KEY(device_id, kind));"
    "CREATE INDEX outbox_next ON outbox(next_ms);"
    "CREATE TABLE claim_failures("
    "  rowid BIGSERIAL PRIMARY KEY,"
    "  tenant_id BIGINT NOT NULL,"
    "  user_id BIGINT NOT NULL,"
    "  at_ms BIGINT NOT NULL);"
    "CREATE INDEX claim_failures_tenant ON claim_failures(tenant_id, at_ms);"
    "CREATE INDEX claim_failures_user ON claim_failures(tenant_id, user_id, at_ms);"
    "CREATE TABLE console_sessions("
    "  id_hash TEXT PRIMARY KEY,"
    "  tenant_id BIGINT NOT NULL,"
    "  user_id BIGINT NOT NULL,"
    "  csrf TEXT NOT NULL,"
    "  created_ms BIGINT NOT NULL,"
    "  last_used_ms BIGINT NOT NULL);"
    "CREATE TABLE login_failures("
    "  id BIGSERIAL PRIMARY KEY,"
    "  tenant TEXT NOT NULL,"
    "  \"user\" TEXT NOT NULL,"
    "  at_ms BIGINT NOT NULL);"
    "CREATE INDEX login_failures_user ON login_failures(tenant, \"user\", at_ms);"
    "CREATE INDEX login_failures_tenant ON login_failures(tenant, at_ms);"
    "CREATE TABLE audit("
    "  id BIGSERIAL PRIMARY KEY,"
    "  tenant_id BIGINT NOT NULL,"
    "  user_id BIGINT NOT NULL,"
    "  at_ms BIGINT NOT NULL,"
    "  action TEXT NOT NULL,"
    "  device_id TEXT,"
    "  detail_json TEXT);"
    "CREATE INDEX audit_tenant ON audit(tenant_id, id);"
    "CREATE TABLE status_history("
    "  rowid BIGSERIAL PRIMARY KEY,"
    "  device_id TEXT COLLATE \"C\" NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,"
    "  at_ms BIGINT NOT NULL,"
    "  status_json TEXT NOT NULL);"
    "CREATE INDEX status_history_device ON status_history(device_id, at_ms);"
    /* engine.h's phy_tag: text that is not JSON has no tags. */
    "CREATE FUNCTION phy_tag(t TEXT, k TEXT) RETURNS TEXT LANGUAGE plpgsql IMMUTABLE AS $f$"
    " DECLARE j JSONB; BEGIN j := t::jsonb;"
    " IF jsonb_typeof(j) = 'object' AND jsonb_typeof(j -> k) = 'string' THEN"
    " RETURN j ->> k; END IF; RETURN NULL;"
    " EXCEPTION WHEN others THEN RETURN NULL; END $f$;";

/* Version 4 -> 5: attested serials (sqlite.c's ATTEST_SQL). */
static const char PG_MIGRATE_4_5_SQL[] =
    "ALTER TABLE tenants ADD COLUMN serial_claims TEXT NOT NULL DEFAULT 'attested';"
    "ALTER TABLE registrations ADD COLUMN challenge TEXT;"
    "ALTER TABLE registrations ADD COLUMN proven BIGINT NOT NULL DEFAULT 0;"
    "CREATE TABLE attested_serials("
    "  serial TEXT PRIMARY KEY,"
    "  public_key BYTEA NOT NULL,"
    "  created_ms BIGINT NOT NULL);";

/* Version 5 -> 6: token expiry, who claimed a device (sqlite.c's V6_SQL). */
static const char PG_MIGRATE_5_6_SQL[] =
    "ALTER TABLE api_tokens ADD COLUMN expires_ms BIGINT NOT NULL DEFAULT 0;"
    "ALTER TABLE devices ADD COLUMN claimed_by BIGINT NOT NULL DEFAULT 0;"
    "ALTER TABLE devices ADD COLUMN claim_key TEXT;"
    "CREATE INDEX devices_claim ON devices(tenant_id, claimed_by, claim_key);";

/* Version 6 -> 7: a registration's source and agent (sqlite.c's V7_SQL). */
static const char PG_MIGRATE_6_7_SQL[] = "ALTER TABLE registrations ADD COLUMN source TEXT;"
                                         "ALTER TABLE registrations ADD COLUMN agent TEXT;";

/* Version 7 -> 8: several hub nodes (sqlite.c's V8_SQL). */
static const char PG_MIGRATE_7_8_SQL[] =
    "ALTER TABLE devices ADD COLUMN session_node TEXT;"
    "ALTER TABLE twins ADD COLUMN desired_patch TEXT;"
    "CREATE INDEX devices_online_node ON devices(session_node) WHERE online = 1;"
    "CREATE TABLE nodes(node_id TEXT PRIMARY KEY, heartbeat_ms BIGINT NOT NULL,"
    " started_ms BIGINT NOT NULL);"
    "CREATE TABLE leases(name TEXT PRIMARY KEY, node_id TEXT NOT NULL, until_ms BIGINT NOT NULL);";

/* MIGRATE_SQL[v] takes version v to v + 1 (the PostgreSQL engine starts at 4: a fresh
 * store gets PG_SCHEMA_SQL, then the migrations from 4). */
#define PG_FIRST_VERSION 4
static const char *const PG_MIGRATE_SQL[STORE_SCHEMA_VERSION] = {
    NULL, NULL, NULL, NULL, PG_MIGRATE_4_5_SQL, PG_MIGRATE_5_6_SQL, PG_MIGRATE_6_7_SQL,
    PG_MIGRATE_7_8_SQL};

/* libpq's message without its trailing newline, for err (names no password). */
static void conn_err(char *err, size_t errcap, const char *what, PGconn *c)
{
    const char *m = c ? PQerrorMessage(c) : "out of memory";
    size_t n = strcspn(m, "\n");
    store_errf(err, errcap, "%s: %.*s", what, (int)n, m);
}

/* ---- connections ---- */

static PGconn *pg_connect(struct store_db *d)
{
    PGconn *c = PQconnectdbParams(d->keys, d->vals, 1);
    if (c && PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

static void conn_drop(struct pg_conn *pc)
{
    PQfinish(pc->c);
    pc->c = NULL;
    pc->nprep = 0;
}

/* Maps a failed result (or none) on pc: 40001/40P01 STORE_ERETRY, 23505 PHY_EEXIST,
 * a lost connection PHY_EUNAVAIL (the connection is dropped), else PHY_EIO. */
static int result_err(struct pg_conn *pc, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (PQstatus(pc->c) != CONNECTION_OK) {
        conn_drop(pc);
        return PHY_EUNAVAIL;
    }
    if (!state)
        return PHY_EIO;
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)
        return STORE_ERETRY;
    if (strcmp(state, "23505") == 0)
        return PHY_EEXIST;
    /* A lock or statement timeout (55P03, 57014): busy, try later. */
    if (strcmp(state, "55P03") == 0 || strcmp(state, "57014") == 0)
        return PHY_EUNAVAIL;
    /* 08: connection exception; 57P0x: the server is shutting down or starting. */
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0) {
        conn_drop(pc);
        return PHY_EUNAVAIL;
    }
    /* Details and hints, which quote values, are never logged; nor is the message of a
     * data exception (class 22: "invalid input syntax ...: <value>"). */
    const char *msg = strncmp(state, "22", 2) != 0
                          ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
                          : "(data exception)";
    char quoted[256];
    phy_log(PHY_LOG_WARN, "store_error", "engine=postgresql sqlstate=%s message=%s", state,
            phy_log_quote(msg, quoted, sizeof quoted));
    return PHY_EIO;
}

/* Runs a statement without parameters; 0 or as result_err. */
static int exec_simple(struct pg_conn *pc, const char *sql)
{
    PGresult *res = PQexec(pc->c, sql);
    int st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : result_err(pc, res);
    PQclear(res);
    return rc;
}

static void release(struct store_db *d, struct pg_conn *pc)
{
    pthread_mutex_lock(&d->mu);
    pc->busy = 0;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

/* A free connection of the pool (a live one first), connected; PHY_EUNAVAIL. */
static int acquire(struct store_db *d, struct pg_conn **out)
{
    struct timespec until;
    struct pg_conn *pc = NULL;
    clock_gettime(CLOCK_MONOTONIC, &until); /* the condition variable's clock */
    until.tv_sec += PG_ACQUIRE_MS / 1000;
    pthread_mutex_lock(&d->mu);
    for (;;) {
        for (int i = 0; i < d->npool && !(pc && pc->c); i++)
            if (!d->pool[i].busy && (!pc || d->pool[i].c))
                pc = &d->pool[i];
        if (pc)
            break;
        if (pthread_cond_timedwait(&d->cv, &d->mu, &until) == ETIMEDOUT) {
            pthread_mutex_unlock(&d->mu);
            return PHY_EUNAVAIL;
        }
    }
    pc->busy = 1;
    pthread_mutex_unlock(&d->mu);
    if (pc->c && PQstatus(pc->c) != CONNECTION_OK)
        conn_drop(pc);
    if (!pc->c && !(pc->c = pg_connect(d))) {
        release(d, pc);
        return PHY_EUNAVAIL;
    }
    *out = pc;
    return 0;
}

/* ---- transactions and statements ---- */

/* BEGIN waits for the transaction's first statement: both go in one pipeline (one
 * round trip). A transaction without statements never reaches the server. */
static int pg_begin(struct store_db *d, int write, struct db_tx **out)
{
    struct db_tx *tx;
    struct pg_conn *pc;
    int rc = acquire(d, &pc);
    if (rc)
        return rc;
    tx = malloc(sizeof *tx);
    if (!tx) {
        release(d, pc);
        return PHY_ENOMEM;
    }
    tx->db = d;
    tx->pc = pc;
    tx->begin_sql = write ? "BEGIN ISOLATION LEVEL SERIALIZABLE"
                          : "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    tx->begun = 0;
    *out = tx;
    return 0;
}

static int pg_end(struct db_tx *tx, int commit)
{
    struct pg_conn *pc = tx->pc;
    int rc = 0;
    if (!tx->begun) {
        /* nothing was sent */
    } else if (pc->c) {
        if (commit) {
            PGresult *res = PQexec(pc->c, "COMMIT");
            /* A transaction that failed answers COMMIT with ROLLBACK. */
            if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
                rc = result_err(pc, res);
            else if (strcmp(PQcmdStatus(res), "COMMIT") != 0)
                rc = PHY_EIO;
            PQclear(res);
        } else {
            exec_simple(pc, "ROLLBACK");
        }
    } else if (commit) {
        rc = PHY_EUNAVAIL;
    }
    release(tx->db, pc);
    free(tx);
    return rc;
}

/* The core's text with ?N / ? as $N (? takes the largest number so far + 1, as in
 * SQLite), outside quotes; *nparams gets the largest number. malloc'd. */
static char *translate(const char *sql, int *nparams)
{
    size_t n = strlen(sql);
    char *out = malloc(n * 2 + 1), *o = out;
    char quote = 0;
    int max = 0;
    if (!out)
        return NULL;
    for (const char *p = sql; *p; p++) {
        if (quote) {
            if (*p == quote)
                quote = 0;
            *o++ = *p;
        } else if (*p == '\'' || *p == '"') {
            quote = *p;
            *o++ = *p;
        } else if (*p == '?') {
            int k = 0;
            while (p[1] >= '0' && p[1] <= '9' && k < 1000)
                k = k * 10 + (*++p - '0');
            if (k == 0)
                k = max + 1;
            if (k > max)
                max = k;
            o += sprintf(o, "$%d", k);
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    *nparams = max;
    return out;
}

/* The name of sql's prepared statement on pc, preparing it on first use; NULL name
 * (unnamed, prepared each time) when the cache is full. */
static int prepared(struct pg_conn *pc, const char *sql, const struct db_arg *a, int n,
                    char name[24])
{
    Oid types[PG_ARGS_MAX];
    PGresult *res;
    char *text;
    int np = 0, rc = 0;
    for (size_t i = 0; i < pc->nprep; i++) {
        if (pc->prep[i].sql == sql) {
            snprintf(name, 24, "p%zu", i);
            return 0;
        }
    }
    if (pc->nprep == PG_STMT_CACHE)
        return PHY_ENOMEM;
    text = translate(sql, &np);
    if (!text)
        return PHY_ENOMEM;
    /* The statement texts and their bind formats are the core's literals. */
    PHY_ASSERT(np == n);
    for (int i = 0; i < n; i++)
        types[i] = a[i].type == 'i' || a[i].type == 'n' ? OID_INT8
                   : a[i].type == 'b'                    ? OID_BYTEA
                                                         : OID_TEXT;
    snprintf(name, 24, "p%zu", pc->nprep);
    res = PQprepare(pc->c, name, text, n, types);
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = result_err(pc, res);
    else
        pc->prep[pc->nprep++].sql = sql;
    PQclear(res);
    free(text);
    return rc;
}

/* The result of the next statement in a pipeline (its trailing NULL consumed). */
static PGresult *pipeline_result(PGconn *c)
{
    PGresult *res = PQgetResult(c), *extra;
    while (res && (extra = PQgetResult(c)) != NULL)
        PQclear(extra);
    return res;
}

/* BEGIN and the first statement in one pipeline: the statement's result (an error
 * result when BEGIN failed), or NULL when the connection failed. */
static PGresult *begin_and_exec(struct pg_conn *pc, const char *begin_sql, const char *name,
                                int n, const char *const *vals, const int *lens,
                                const int *fmts)
{
    PGresult *begin, *res, *sync;
    if (!PQenterPipelineMode(pc->c))
        return NULL;
    if (!PQsendQueryParams(pc->c, begin_sql, 0, NULL, NULL, NULL, NULL, 0) ||
        !PQsendQueryPrepared(pc->c, name, n, vals, lens, fmts, 0) || !PQpipelineSync(pc->c)) {
        PQexitPipelineMode(pc->c);
        return NULL;
    }
    begin = pipeline_result(pc->c);
    res = pipeline_result(pc->c);
    sync = PQgetResult(pc->c); /* PGRES_PIPELINE_SYNC */
    PQclear(sync);
    PQexitPipelineMode(pc->c);
    if (begin && PQresultStatus(begin) != PGRES_COMMAND_OK) {
        PQclear(res);
        return begin;
    }
    PQclear(begin);
    return res;
}

static int query_once(struct db_tx *tx, const char *sql, const struct db_arg *a, int n,
                      struct db_stmt **out)
{
    struct pg_conn *pc = tx->pc;
    const char *vals[PG_ARGS_MAX];
    int lens[PG_ARGS_MAX], fmts[PG_ARGS_MAX];
    char nums[PG_ARGS_MAX][24];
    char name[24];
    struct db_stmt *st;
    PGresult *res;
    int rc, status;
    *out = NULL;
    if (!pc->c)
        return PHY_EUNAVAIL;
    PHY_ASSERT(n >= 0 && n <= PG_ARGS_MAX);
    if ((rc = prepared(pc, sql, a, n, name)))
        return rc;
    for (int i = 0; i < n; i++) {
        fmts[i] = 0;
        lens[i] = 0;
        switch (a[i].type) {
        case 'i':
            snprintf(nums[i], sizeof nums[i], "%lld", (long long)a[i].i);
            vals[i] = nums[i];
            break;
        case 'n':
            vals[i] = NULL;
            break;
        case 'b':
            vals[i] = a[i].blob;
            lens[i] = (int)a[i].len;
            fmts[i] = 1;
            break;
        default:
            vals[i] = a[i].text;
        }
    }
    if (tx->begun) {
        res = PQexecPrepared(pc->c, name, n, vals, lens, fmts, 0);
    } else {
        res = begin_and_exec(pc, tx->begin_sql, name, n, vals, lens, fmts);
        tx->begun = 1;
    }
    status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
        rc = result_err(pc, res);
        PQclear(res);
        return rc;
    }
    st = calloc(1, sizeof *st);
    if (!st) {
        PQclear(res);
        return PHY_ENOMEM;
    }
    st->res = res;
    st->row = -1;
    st->nrows = PQntuples(res);
    st->changes = strtoll(PQcmdTuples(res), NULL, 10);
    *out = st;
    return 0;
}

static int pg_query(struct db_tx *tx, const char *sql, const struct db_arg *a, int n,
                    struct db_stmt **out)
{
    int first = !tx->begun;
    int rc = query_once(tx, sql, a, n, out);
    /* A connection that died while idle (server restart, pg_terminate_backend) is
     * found by the first statement: nothing of the transaction happened yet, so one
     * new connection and the operation goes on. */
    if (rc == PHY_EUNAVAIL && first && !tx->pc->c && (tx->pc->c = pg_connect(tx->db))) {
        tx->begun = 0;
        rc = query_once(tx, sql, a, n, out);
    }
    return rc;
}

static int pg_step(struct db_stmt *st)
{
    if (st->row + 1 >= st->nrows) {
        st->row = st->nrows;
        return DB_DONE;
    }
    st->row++;
    return DB_ROW;
}

static int pg_col_null(struct db_stmt *st, int col)
{
    return PQgetisnull(st->res, st->row, col);
}

static int64_t pg_col_int(struct db_stmt *st, int col)
{
    const char *v = PQgetvalue(st->res, st->row, col);
    if (v[0] == 't')
        return 1; /* a boolean */
    return strtoll(v, NULL, 10);
}

static const char *pg_col_text(struct db_stmt *st, int col, size_t *len)
{
    if (PQgetisnull(st->res, st->row, col)) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = (size_t)PQgetlength(st->res, st->row, col);
    return PQgetvalue(st->res, st->row, col);
}

static const void *pg_col_blob(struct db_stmt *st, int col, size_t *len)
{
    size_t n = 0;
    PQfreemem(st->blob);
    st->blob = NULL;
    if (len)
        *len = 0;
    if (PQgetisnull(st->res, st->row, col))
        return NULL;
    st->blob = PQunescapeBytea((const unsigned char *)PQgetvalue(st->res, st->row, col), &n);
    if (st->blob && len)
        *len = n;
    return st->blob;
}

static int64_t pg_changes(struct db_stmt *st)
{
    return st->changes;
}

static void pg_finish(struct db_stmt *st)
{
    if (!st)
        return;
    PQfreemem(st->blob);
    PQclear(st->res);
    free(st);
}

/* The tables whose IDs PostgreSQL generates, and the column (engine.h: after_copy). */
static const char *const SERIALS[][2] = {
    {"tenants", "id"},        {"users", "id"},  {"login_failures", "id"}, {"audit", "id"},
    {"claim_failures", "rowid"}, {"outbox", "rowid"}, {"status_history", "rowid"},
};

static int pg_after_copy(struct db_tx *tx)
{
    char sql[256];
    for (size_t i = 0; i < sizeof SERIALS / sizeof SERIALS[0]; i++) {
        snprintf(sql, sizeof sql,
                 "SELECT setval(pg_get_serial_sequence('%s', '%s'), COALESCE(max(%s), 0) + 1,"
                 " false) FROM %s",
                 SERIALS[i][0], SERIALS[i][1], SERIALS[i][1], SERIALS[i][0]);
        int rc = exec_simple(tx->pc, sql);
        if (rc)
            return rc;
    }
    return 0;
}

static int pg_debug_query(struct store_db *d, const char *sql, char *out, size_t cap)
{
    struct pg_conn *pc;
    PGresult *res;
    int rc = acquire(d, &pc), status;
    if (rc) {
        snprintf(out, cap, "<unavailable>");
        return rc;
    }
    res = PQexec(pc->c, sql);
    status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (status == PGRES_TUPLES_OK && PQntuples(res) > 0 && PQnfields(res) > 0) {
        if (PQgetisnull(res, 0, 0))
            snprintf(out, cap, "<null>");
        else
            snprintf(out, cap, "%s", PQgetvalue(res, 0, 0));
    } else if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) {
        snprintf(out, cap, "<none>");
    } else {
        snprintf(out, cap, "<error: %s>", pc->c ? PQerrorMessage(pc->c) : "");
        rc = result_err(pc, res);
    }
    PQclear(res);
    release(d, pc);
    return rc;
}

/* ---- open / close ---- */

static int pg_accepts(const char *url)
{
    return url && (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0);
}

/* Creates or migrates the schema under an advisory lock (two hubs starting at once
 * wait for each other); PHY_EUNSUPP for a schema newer than this build. */
static int schema_init(struct pg_conn *pc, char *err, size_t errcap)
{
    PGresult *res = NULL;
    long long version = 0;
    char sql[96];
    int rc;
    if ((rc = exec_simple(pc, "BEGIN")))
        goto fail_sql;
    snprintf(sql, sizeof sql, "SELECT pg_advisory_xact_lock(%lld)", PG_SCHEMA_LOCK);
    if ((rc = exec_simple(pc, sql)))
        goto fail_sql;
    res = PQexec(pc->c, "SELECT to_regclass('phy_schema') IS NOT NULL");
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK)
        goto fail_sql;
    if (PQgetvalue(res, 0, 0)[0] == 't') {
        PQclear(res);
        res = PQexec(pc->c, "SELECT max(version) FROM phy_schema");
        if (!res || PQresultStatus(res) != PGRES_TUPLES_OK)
            goto fail_sql;
        version = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    }
    PQclear(res);
    res = NULL;
    if (version < 0 || version > STORE_SCHEMA_VERSION) {
        store_errf(err, errcap, "store schema version %lld is not known to this build (%d)", version,
                STORE_SCHEMA_VERSION);
        exec_simple(pc, "ROLLBACK");
        return PHY_EUNSUPP;
    }
    long long from = version;
    if (version == 0) {
        if ((rc = exec_simple(pc, "CREATE TABLE phy_schema(version BIGINT NOT NULL)")) ||
            (rc = exec_simple(pc, PG_SCHEMA_SQL)))
            goto fail_sql;
        from = PG_FIRST_VERSION;
    }
    for (long long v = from; v < STORE_SCHEMA_VERSION; v++)
        if (PG_MIGRATE_SQL[v] && (rc = exec_simple(pc, PG_MIGRATE_SQL[v])))
            goto fail_sql;
    if (version < STORE_SCHEMA_VERSION) {
        snprintf(sql, sizeof sql, "DELETE FROM phy_schema; INSERT INTO phy_schema VALUES (%d)",
                 STORE_SCHEMA_VERSION);
        if ((rc = exec_simple(pc, sql)))
            goto fail_sql;
    }
    if ((rc = exec_simple(pc, "COMMIT")))
        goto fail_sql;
    return 0;

fail_sql:
    PQclear(res);
    if (pc->c) {
        conn_err(err, errcap, "store schema", pc->c);
        exec_simple(pc, "ROLLBACK");
    } else {
        store_errf(err, errcap, "store schema: connection lost");
    }
    return PHY_EIO;
}

static void pg_close(struct store_db *d)
{
    if (!d)
        return;
    for (int i = 0; i < d->npool; i++)
        conn_drop(&d->pool[i]);
    free(d->pool);
    free(d->url);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    free(d);
}

static int pg_open(const char *url, const struct store_engine_opts *o, struct store_db **out,
                   char *err, size_t errcap)
{
    PQconninfoOption *opts;
    struct store_db *d;
    char *perr = NULL;
    int has_password = 0, rc;

    *out = NULL;
    /* Passwords come from PGPASSFILE, ~/.pgpass or PGPASSWORD, never from a flag. */
    opts = PQconninfoParse(url, &perr);
    if (!opts) {
        store_errf(err, errcap, "invalid PostgreSQL URL%s%.*s", perr ? ": " : "",
                perr ? (int)strcspn(perr, "\n") : 0, perr ? perr : "");
        PQfreemem(perr);
        return PHY_EINVAL;
    }
    for (PQconninfoOption *p = opts; p->keyword; p++)
        if (strcmp(p->keyword, "password") == 0 && p->val && p->val[0])
            has_password = 1;
    PQconninfoFree(opts);
    if (has_password) {
        store_errf(err, errcap, "the store URL holds a password: put it in PGPASSFILE, ~/.pgpass or "
                             "PGPASSWORD instead");
        return PHY_EINVAL;
    }
    d = calloc(1, sizeof *d);
    if (!d || !(d->url = strdup(url))) {
        free(d);
        store_errf(err, errcap, "out of memory");
        return PHY_ENOMEM;
    }
    d->npool = o && o->pool_size > 0 ? o->pool_size : PG_POOL_DEFAULT;
    if (d->npool > PG_POOL_MAX)
        d->npool = PG_POOL_MAX;
    d->pool = calloc((size_t)d->npool, sizeof *d->pool);
    pthread_mutex_init(&d->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* a clock step moves no timeout */
    pthread_cond_init(&d->cv, &ca);
    pthread_condattr_destroy(&ca);
    /* Later keywords win: the URL may set its own connect_timeout. */
    d->keys[0] = "connect_timeout";
    d->vals[0] = PG_CONNECT_TIMEOUT;
    d->keys[1] = "application_name";
    d->vals[1] = "phyhub";
    d->keys[2] = "options";
    d->vals[2] = PG_SESSION_OPTIONS;
    d->keys[3] = "dbname";
    d->vals[3] = d->url;
    if (!d->pool) {
        pg_close(d);
        store_errf(err, errcap, "out of memory");
        return PHY_ENOMEM;
    }
    d->pool[0].c = PQconnectdbParams(d->keys, d->vals, 1);
    if (!d->pool[0].c || PQstatus(d->pool[0].c) != CONNECTION_OK) {
        conn_err(err, errcap, "cannot connect to PostgreSQL", d->pool[0].c);
        pg_close(d);
        return PHY_EUNAVAIL;
    }
    if ((rc = schema_init(&d->pool[0], err, errcap))) {
        pg_close(d);
        return rc;
    }
    *out = d;
    return 0;
}

const struct store_engine store_engine_pg = {
    .name = "postgresql",
    .notifies = 1,
    .accepts = pg_accepts,
    .open = pg_open,
    .close = pg_close,
    .begin = pg_begin,
    .end = pg_end,
    .query = pg_query,
    .step = pg_step,
    .col_null = pg_col_null,
    .col_int = pg_col_int,
    .col_text = pg_col_text,
    .col_blob = pg_col_blob,
    .changes = pg_changes,
    .finish = pg_finish,
    .after_purge = NULL,
    .after_copy = pg_after_copy,
    .debug_query = pg_debug_query,
};
