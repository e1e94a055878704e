/* The store core: every operation of struct phy_store_ops, with its checks and
 * rules, written once over the engine contract (engine.h). Engines (sqlite.c,
 * pg.c) bring connections, transactions and schemas; SQL here is portable. */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "phy/assert.h"
#include "phy/err.h"
#include "phy/protocol.h"
#include "phy/twin.h"
#include "announce.h"
#include "engine.h"
#include "soft.h"
#include "rules.h"
#include "store.h"

/* The operation running on this thread (one at a time): its store's engine and its
 * transaction. */
static _Thread_local struct {
    const struct store_engine *e;
    struct db_tx *tx;
    /* registrations changed by the transaction (reg_changed): the pending polls'
     * facts to forget once it commits */
    int reg_changed;          /* 0 none, 1 those of reg_serial, 2 all */
    char reg_serial[PHY_SERIAL_MAX + 1];
} cur;

/* phy_ref(device ID): the SHA-256 hex that eu keeps of a peer region's device ID
 * once redelivery ended (the ID itself is erased). */
static int device_ref(const char *device_id, char out[PHY_HASH_HEX_LEN + 1])
{
    return phy_sha256_hex(device_id, strlen(device_id), out) < 0 ? PHY_ECRYPTO : 0;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- statement helpers ----
 * Bind formats: 't' text (const char *, NULL binds NULL), 'i' int64_t,
 * 'b' blob (const void *, size_t). Bound pointers must outlive the statement.
 * Formats are literals in this file: a wrong one is a bug, asserted. */

#define ARGS_MAX 12

/* Fills a[] from fmt and ap; returns the count. */
static int argsv(struct db_arg *a, const char *fmt, va_list ap)
{
    int i = 0;
    for (const char *f = fmt; *f; f++, i++) {
        PHY_ASSERT(i < ARGS_MAX);
        memset(&a[i], 0, sizeof a[i]);
        a[i].type = *f;
        switch (*f) {
        case 't':
            a[i].text = va_arg(ap, const char *);
            break;
        case 'i':
            a[i].i = va_arg(ap, int64_t);
            break;
        case 'b':
            a[i].blob = va_arg(ap, const void *);
            a[i].len = va_arg(ap, size_t);
            break;
        default:
            PHY_ASSERT(!"bind format is one of t, i, b");
            break;
        }
    }
    return i;
}

static int prepv(struct store *s, struct db_stmt **st, const char *sql, const char *fmt,
                 va_list ap)
{
    struct db_arg a[ARGS_MAX];
    int n;
    *st = NULL;
    (void)s;
    PHY_ASSERT(cur.tx != NULL); /* statements run inside an operation's transaction */
    n = argsv(a, fmt, ap);
    return cur.e->query(cur.tx, sql, a, n, st);
}

/* Runs sql with its parameters; *st to step through and finish. 0 or PHY_E*. */
static int q_prep(struct store *s, struct db_stmt **st, const char *sql, const char *fmt, ...)
{
    va_list ap;
    int rc;
    va_start(ap, fmt);
    rc = prepv(s, st, sql, fmt, ap);
    va_end(ap);
    return rc;
}

static int db_step(struct db_stmt *st)
{
    return cur.e->step(st);
}

static int db_null(struct db_stmt *st, int col)
{
    return cur.e->col_null(st, col);
}

static int64_t db_int(struct db_stmt *st, int col)
{
    return cur.e->col_int(st, col);
}

static const char *db_text(struct db_stmt *st, int col)
{
    return cur.e->col_text(st, col, NULL);
}

static void db_finish(struct db_stmt *st)
{
    if (st)
        cur.e->finish(st);
}

/* Steps a query that names at most one row: DB_ROW; DB_DONE (0) with *outcome set
 * to none; or a negative error (an engine answer that is neither is PHY_EIO). */
static int step_one(struct db_stmt *st, int *outcome, int none)
{
    int rc = db_step(st);
    if (rc == DB_DONE) {
        *outcome = none;
        return 0;
    }
    return rc == DB_ROW ? DB_ROW : rc < 0 ? rc : PHY_EIO;
}

/* Runs sql and takes one step: DB_ROW / DB_DONE with *st left to finish, or a
 * negative PHY_E* (no statement). */
static int q_stepv(struct store *s, struct db_stmt **st, const char *sql, const char *fmt,
                   va_list ap)
{
    int rc = prepv(s, st, sql, fmt, ap);
    if (rc)
        return rc;
    rc = db_step(*st);
    if (rc < 0) {
        db_finish(*st);
        *st = NULL;
    }
    return rc;
}

/* Runs a statement that returns no rows; *changes (optional) gets the rows changed. */
static int q_exec(struct store *s, int *changes, const char *sql, const char *fmt, ...)
{
    struct db_stmt *st;
    va_list ap;
    va_start(ap, fmt);
    int rc = q_stepv(s, &st, sql, fmt, ap);
    va_end(ap);
    if (rc < 0)
        return rc;
    while (rc == DB_ROW)
        rc = db_step(st);
    if (rc == DB_DONE && changes)
        *changes = (int)s->e->changes(st);
    db_finish(st);
    st = NULL;
    return rc < 0 ? rc : 0;
}

/* Reads column 0 of the first row as an integer: 1 when there is a row, 0 when
 * there is none, negative PHY_E* on failure. */
static int q_int(struct store *s, int64_t *v, const char *sql, const char *fmt, ...)
{
    struct db_stmt *st;
    va_list ap;
    va_start(ap, fmt);
    int rc = q_stepv(s, &st, sql, fmt, ap);
    va_end(ap);
    if (rc < 0)
        return rc;
    if (rc == DB_ROW) {
        if (v)
            *v = db_int(st, 0);
        rc = 1;
    }
    db_finish(st);
    st = NULL;
    return rc;
}

/* Inside a write transaction: announces a to the other nodes of the store (engines
 * that notify, once this node is named); a is completed with the node. */
static int announce(struct store *s, struct store_announce *a)
{
    char line[STORE_ANNOUNCE_MAX];
    if (!s->e->notifies || !s->node[0])
        return 0;
    snprintf(a->node, sizeof a->node, "%s", s->node);
    /* A field the line cannot carry (e.g. a device ID read back from the store with
     * characters its format refuses) fails the change rather than the process. */
    if (store_announce_format(a, line) <= 0)
        return PHY_EINVAL;
    return q_exec(s, NULL, "SELECT pg_notify('" STORE_ANNOUNCE_CHANNEL "', ?)", "t", line);
}

/* announce() of ANNOUNCE_DEVICE: what ("state", "tags", "name") of the device changed. */
static int announce_device(struct store *s, int64_t tenant_id, const char *device_id,
                           const char *what)
{
    struct store_announce a = {.kind = ANNOUNCE_DEVICE, .tenant_id = tenant_id};
    snprintf(a.device_id, sizeof a.device_id, "%s", device_id);
    snprintf(a.what, sizeof a.what, "%s", what);
    return announce(s, &a);
}

/* Inside a write transaction: the registrations or issuances of serial (NULL: of any
 * serial) changed in a way a pending poll must see: this node forgets their facts
 * (soft.h) once the transaction commits, the other nodes when they hear it. */
static int reg_changed(struct store *s, const char *serial)
{
    struct store_announce a = {.kind = ANNOUNCE_REGISTRATION};
    if (serial && cur.reg_changed != 2 &&
        (cur.reg_changed == 0 || strcmp(cur.reg_serial, serial) == 0)) {
        snprintf(cur.reg_serial, sizeof cur.reg_serial, "%s", serial);
        cur.reg_changed = 1;
    } else {
        cur.reg_changed = 2;
    }
    snprintf(a.serial, sizeof a.serial, "%s", serial ? serial : "*");
    return announce(s, &a);
}

void store_poll_facts(struct store *s, int on)
{
    if (s)
        soft_reg_enable(s->soft, on);
}

void store_poll_facts_forget(struct store *s, const char *serial)
{
    if (s)
        soft_reg_forget(s->soft, serial);
}

/* Makes room for one more element in the array *v of *cap elements holding count:
 * doubles it (first elements at first). 0 or PHY_ENOMEM (*v unchanged). */
static int grow(void *v, size_t *cap, size_t count, size_t elem, size_t first)
{
    void *old, *nv;
    if (count < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : first;
    memcpy(&old, v, sizeof old); /* v points at an object pointer of any type */
    if (!(nv = realloc(old, ncap * elem)))
        return PHY_ENOMEM;
    memcpy(v, &nv, sizeof nv);
    *cap = ncap;
    return 0;
}

/* Copies a text column (NULL reads as "") into dst[cap]; PHY_EIO when it does not fit. */
static int col_copy(struct db_stmt *st, int col, char *dst, size_t cap)
{
    size_t n = 0;
    const char *v = cur.e->col_text(st, col, &n);
    if (!v)
        n = 0;
    if (n >= cap)
        return PHY_EIO;
    if (n)
        memcpy(dst, v, n);
    dst[n] = '\0';
    return 0;
}

static char *col_dup(struct db_stmt *st, int col)
{
    size_t n = 0;
    const char *v = cur.e->col_text(st, col, &n);
    char *d;
    if (!v)
        n = 0;
    d = malloc(n + 1);
    if (!d)
        return NULL;
    if (n)
        memcpy(d, v, n);
    d[n] = '\0';
    return d;
}

/* ---- transactions ----
 * An operation is one transaction: tx_begin ... tx_end. TX_BEGIN/TX_RETRY wrap
 * them so that an engine's serialization failure (STORE_ERETRY) runs the whole
 * operation again, up to TX_ATTEMPTS times with a short randomized pause. */

#define TX_ATTEMPTS 20
/* An operation's rc: roll the transaction back although the operation has an
 * answer (TX_RETRY makes it 0). */
#define TX_ABORT 1
/* A read transaction found that the operation must write: run it again as a write. */
#define TX_NEED_WRITE (-101)

static int tx_begin(struct store *s, int write)
{
    int rc;
    PHY_ASSERT(cur.tx == NULL); /* operations do not nest */
    cur.e = s->e;
    cur.reg_changed = 0;
    rc = s->e->begin(s->db, write, &cur.tx);
    if (rc)
        cur.tx = NULL;
    return rc;
}

/* Commits when rc is 0, rolls back otherwise (or when the commit fails). */
static int tx_end(struct store *s, int rc)
{
    int erc;
    (void)s;
    PHY_ASSERT(cur.tx != NULL); /* only after a tx_begin that succeeded */
    erc = cur.e->end(cur.tx, rc == 0);
    cur.tx = NULL;
    /* Committed, so durable and visible: a poll that reads from here on fills new
     * facts; one that read before cannot fill (the generation moved). */
    if (rc == 0 && erc == 0 && cur.reg_changed)
        soft_reg_forget(s->soft, cur.reg_changed == 1 ? cur.reg_serial : NULL);
    return rc ? rc : erc;
}

/* 1 (after a pause) when an operation that ended with rc should run again. */
static int tx_again(int rc, int *attempt)
{
    if (rc != STORE_ERETRY)
        return 0;
    if (++*attempt >= TX_ATTEMPTS)
        return 0;
    unsigned char r = 0;
    phy_random_bytes(&r, 1);
    struct timespec ts = {0, (long)(200 + (int)r * 8) * 1000L * (*attempt < 5 ? *attempt : 5)};
    nanosleep(&ts, NULL);
    return 1;
}

/* The retry loop of an operation: TX_BEGIN(s, write) where tx_begin was called
 * (TX_BEGIN_OR: with the statement to run when it fails), TX_RETRY(rc) after tx_end
 * and the operation's own clean-up. */
#define TX_BEGIN_OR(s, write, on_failure)                                                          \
    int tx_attempt_ = 0;                                                                           \
    tx_again_:                                                                                     \
    if ((rc = tx_begin((s), (write))))                                                             \
        on_failure;
#define TX_BEGIN(s, write) TX_BEGIN_OR(s, write, return rc)
#define TX_RETRY(rc)                                                                               \
    do {                                                                                           \
        if (tx_again((rc), &tx_attempt_))                                                          \
            goto tx_again_;                                                                        \
        if ((rc) == STORE_ERETRY)                                                                  \
            (rc) = PHY_EUNAVAIL;                                                                   \
        if ((rc) == TX_ABORT)                                                                      \
            (rc) = 0;                                                                              \
    } while (0)

/* tx_end, then the engine's after_purge when the committed transaction purged. */
static int tx_end_scrub(struct store *s, int rc, int purged)
{
    rc = tx_end(s, rc);
    if (rc == 0 && purged > 0 && s->e->after_purge)
        s->e->after_purge(s->db);
    return rc;
}

/* ---- open / close ---- */

/* Asked in order; SQLite, the default, takes whatever is left (a file path). */
static const struct store_engine *const ENGINES[] = {&store_engine_pg, &store_engine_sqlite};

static int core_open(const char *url, struct store **out, char *err, size_t errcap)
{
    return store_open_opts(url, NULL, out, err, errcap);
}

int store_open_opts(const char *url, const struct store_engine_opts *o, struct store **out,
                    char *err, size_t errcap)
{
    struct store_engine_opts def = {0};
    const struct store_engine *e = NULL;
    struct store *s;
    int rc;
    if (out)
        *out = NULL;
    if (!out || !url || !url[0]) {
        store_errf(err, errcap, "invalid store URL or path");
        return PHY_EINVAL;
    }
    for (size_t i = 0; i < sizeof ENGINES / sizeof ENGINES[0] && !e; i++)
        if (ENGINES[i]->accepts(url))
            e = ENGINES[i];
    if (!e) {
        store_errf(err, errcap, "no store engine for this URL");
        return PHY_EINVAL;
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        store_errf(err, errcap, "out of memory");
        return PHY_ENOMEM;
    }
    s->e = e;
    if (!(s->soft = soft_new())) {
        free(s);
        store_errf(err, errcap, "out of memory");
        return PHY_ENOMEM;
    }
    rc = e->open(url, o ? o : &def, &s->db, err, errcap);
    if (rc) {
        soft_free(s->soft);
        free(s);
        return rc;
    }
    if (e->notifies) /* other nodes' changes come by announcement: off until heard */
        soft_reg_enable(s->soft, 0);
    *out = s;
    return 0;
}

static void core_close(struct store *s)
{
    if (!s)
        return;
    store_soft_flush(s); /* what pending polls recorded since the last flush */
    s->e->close(s->db);
    soft_free(s->soft);
    free(s);
}

const char *store_engine_name(const struct store *s)
{
    return s ? s->e->name : "";
}

int store_set_node(struct store *s, const char *node_id)
{
    if (!s || !store_node_id_ok(node_id))
        return PHY_EINVAL;
    snprintf(s->node, sizeof s->node, "%s", node_id);
    return 0;
}

int store_soft_flush(struct store *s)
{
    struct soft_poll *v;
    size_t n = 0;
    int rc = 0;
    if (!s)
        return PHY_EINVAL;
    if (!(v = soft_take(s->soft, &n)))
        return 0;
    TX_BEGIN_OR(s, 1, goto out)
    /* Newer than what the store holds only: a poll written durably meanwhile (the
     * table was full) or by another node may be later. */
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = q_exec(s, NULL,
                    "UPDATE registrations SET"
                    " interval_s = CASE WHEN last_poll_ms IS NULL OR last_poll_ms <= ?1"
                    " THEN ?2 ELSE interval_s END,"
                    " last_poll_ms = CASE WHEN last_poll_ms IS NULL OR last_poll_ms < ?1"
                    " THEN ?1 ELSE last_poll_ms END,"
                    " last_active_ms = CASE WHEN last_active_ms < ?1 THEN ?1 ELSE last_active_ms END"
                    " WHERE token_hash = ?3",
                    "iit", v[i].last_poll_ms, v[i].interval_s, v[i].token_hash);
    rc = tx_end(s, rc);
    TX_RETRY(rc);
out:
    free(v);
    return rc;
}

int store_commit_stats(struct store *s, uint64_t *commits, uint64_t *ops)
{
    if (!s || !commits || !ops)
        return PHY_EINVAL;
    if (!s->e->commit_stats)
        return PHY_EUNSUPP;
    s->e->commit_stats(s->db, commits, ops);
    return 0;
}

int store_debug_query(struct store *s, const char *sql, char *out, size_t cap)
{
    if (!s || !sql || !out || cap == 0)
        return PHY_EINVAL;
    return s->e->debug_query(s->db, sql, out, cap);
}

/* ---- admin and auth ---- */

static int tenant_id_of(struct store *s, const char *tenant, int64_t *id)
{
    return q_int(s, id, "SELECT id FROM tenants WHERE name = ?", "t", tenant);
}

static int sq_tenant_add(struct store *s, const char *name, const char *region, int *outcome)
{
    int rc;
    if (!s || !outcome || !store_str_ok(name, STORE_NAME_MAX) || !store_str_ok(region, STORE_REGION_MAX))
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    rc = q_exec(s, NULL, "INSERT INTO tenants(name, region, created_ms) VALUES (?, ?, ?)", "tti",
                name, region, wall_ms());
    *outcome = STORE_OK;
    if (rc == PHY_EEXIST) { /* the failed insert was all: roll back (PostgreSQL must) */
        *outcome = STORE_EXISTS;
        rc = TX_ABORT;
    }
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int sq_user_add(struct store *s, const char *tenant, const char *user, const char *pw_hash,
                       int *outcome)
{
    int64_t tid = 0;
    int rc;
    if (!s || !outcome || !store_str_ok(tenant, STORE_NAME_MAX) || !store_str_ok(user, STORE_NAME_MAX) ||
        !store_str_ok(pw_hash, STORE_PW_HASH_MAX))
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    rc = tenant_id_of(s, tenant, &tid);
    if (rc < 0)
        goto out;
    if (rc == 0) {
        *outcome = STORE_NOT_FOUND;
        goto out;
    }
    rc = q_exec(s, NULL, "INSERT INTO users(tenant_id, name, pw_hash) VALUES (?, ?, ?)", "itt", tid,
                user, pw_hash);
    *outcome = STORE_OK;
    if (rc == PHY_EEXIST) { /* the failed insert was all: roll back (PostgreSQL must) */
        *outcome = STORE_EXISTS;
        rc = TX_ABORT;
    }
out:
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int sq_token_add(struct store *s, const char *tenant, const char *user,
                        const char *token_hash, int64_t now_ms, int64_t expires_ms, int *outcome)
{
    int64_t tid = 0, uid = 0;
    int rc;
    if (!s || !outcome || !store_str_ok(tenant, STORE_NAME_MAX) || !store_str_ok(user, STORE_NAME_MAX) ||
        !store_hash_ok(token_hash) || expires_ms < 0)
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    rc = tenant_id_of(s, tenant, &tid);
    if (rc < 0)
        goto out;
    if (rc == 1)
        rc = q_int(s, &uid, "SELECT id FROM users WHERE tenant_id = ? AND name = ?", "it", tid,
                   user);
    if (rc < 0)
        goto out;
    if (rc == 0) {
        *outcome = STORE_NOT_FOUND;
        goto out;
    }
    rc = q_exec(s, NULL,
                "INSERT INTO api_tokens(token_hash, tenant_id, user_id, created_ms, expires_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                "tiiii", token_hash, tid, uid, now_ms, expires_ms);
    *outcome = STORE_OK;
    if (rc == PHY_EEXIST) { /* the failed insert was all: roll back (PostgreSQL must) */
        *outcome = STORE_EXISTS;
        rc = TX_ABORT;
    }
out:
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int sq_token_auth(struct store *s, const char *token_hash, int64_t now_ms,
                         int64_t *tenant_id, int64_t *user_id, char tenant[STORE_NAME_MAX + 1],
                         char region[16], int *outcome)
{
    struct db_stmt *st = NULL;
    int rc;
    if (!s || !outcome || !store_hash_ok(token_hash))
        return PHY_EINVAL;
    TX_BEGIN(s, 0)
    rc = q_prep(s, &st,
                "SELECT t.id, u.id, t.name, t.region FROM api_tokens k"
                " JOIN users u ON u.id = k.user_id AND u.tenant_id = k.tenant_id"
                " JOIN tenants t ON t.id = k.tenant_id WHERE k.token_hash = ?"
                " AND (k.expires_ms = 0 OR k.expires_ms > ?)",
                "ti", token_hash, now_ms);
    if (rc)
        goto out;
    rc = step_one(st, outcome, STORE_NOT_FOUND);
    if (rc != DB_ROW)
        goto out;
    rc = 0;
    if (tenant_id)
        *tenant_id = db_int(st, 0);
    if (user_id)
        *user_id = db_int(st, 1);
    if (tenant && (rc = col_copy(st, 2, tenant, STORE_NAME_MAX + 1)))
        goto out;
    if (region && (rc = col_copy(st, 3, region, STORE_REGION_MAX + 1)))
        goto out;
    *outcome = STORE_OK;
out:
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int sq_tenant_lookup(struct store *s, const char *name, int64_t *id, int *outcome)
{
    int rc;
    if (!s || !id || !outcome || !store_str_ok(name, STORE_NAME_MAX))
        return PHY_EINVAL;
    TX_BEGIN(s, 0)
    rc = tenant_id_of(s, name, id);
    if (rc >= 0)
        *outcome = rc == 1 ? STORE_OK : STORE_NOT_FOUND;
    rc = tx_end(s, rc < 0 ? rc : 0);
    TX_RETRY(rc);
    return rc;
}

int store_claim_key(const char *serial, const char *code, char *out, size_t cap)
{
    int n;
    if ((serial == NULL) == (code == NULL))
        return PHY_EINVAL;
    n = serial ? snprintf(out, cap, "serial:%s", serial) : snprintf(out, cap, "code:%s", code);
    return n < 0 || (size_t)n >= cap ? PHY_EINVAL : 0;
}

static int sq_token_list(struct store *s, int64_t tenant_id, struct store_token **out, size_t *n)
{
    struct db_stmt *st = NULL;
    struct store_token *v = NULL;
    size_t count = 0, cap = 0;
    int rc;
    if (out)
        *out = NULL;
    if (n)
        *n = 0;
    if (!s || !out || !n)
        return PHY_EINVAL;
    TX_BEGIN(s, 0)
    count = 0;
    rc = q_prep(s, &st,
                "SELECT substr(k.token_hash, 1, 12), u.name, k.created_ms, k.expires_ms"
                " FROM api_tokens k JOIN users u ON u.id = k.user_id"
                " WHERE k.tenant_id = ? ORDER BY k.created_ms, k.token_hash",
                "i", tenant_id);
    if (rc)
        goto out;
    while ((rc = db_step(st)) == DB_ROW) {
        if ((rc = grow(&v, &cap, count, sizeof *v, 8)))
            goto out;
        memset(&v[count], 0, sizeof v[count]);
        if ((rc = col_copy(st, 0, v[count].id, sizeof v[count].id)) ||
            (rc = col_copy(st, 1, v[count].user, sizeof v[count].user)))
            goto out;
        v[count].created_ms = db_int(st, 2);
        v[count].expires_ms = db_int(st, 3);
        count++;
    }
    rc = rc == DB_DONE ? 0 : rc < 0 ? rc : PHY_EIO;
out:
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    if (rc == 0) {
        *out = v;
        *n = count;
    } else {
        free(v);
    }
    return rc;
}

static int token_id_ok(const char *id)
{
    if (!id || strlen(id) != STORE_TOKEN_ID_LEN)
        return 0;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

static int sq_token_revoke(struct store *s, int64_t tenant_id, const char *id, int64_t *user_id,
                           int *outcome)
{
    int64_t uid = 0;
    int rc;
    if (!s || !outcome || !token_id_ok(id))
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    *outcome = STORE_NOT_FOUND;
    rc = q_int(s, &uid,
               "SELECT user_id FROM api_tokens WHERE tenant_id = ? AND substr(token_hash, 1, 12) = ?",
               "it", tenant_id, id);
    if (rc == 1) {
        rc = q_exec(s, NULL,
                    "DELETE FROM api_tokens WHERE tenant_id = ? AND substr(token_hash, 1, 12) = ?",
                    "it", tenant_id, id);
        if (rc == 0) {
            *outcome = STORE_OK;
            if (user_id)
                *user_id = uid;
        }
    }
    rc = tx_end(s, rc < 0 ? rc : 0);
    TX_RETRY(rc);
    return rc;
}

/* The ids of (tenant, user) in the caller's transaction: 1, 0 (no such), negative. */
static int user_ids(struct store *s, const char *tenant, const char *user, int64_t *tid,
                    int64_t *uid)
{
    int rc = tenant_id_of(s, tenant, tid);
    if (rc == 1)
        rc = q_int(s, uid, "SELECT id FROM users WHERE tenant_id = ? AND name = ?", "it", *tid,
                   user);
    return rc;
}

static int sq_user_remove(struct store *s, const char *tenant, const char *user, int64_t *tenant_id,
                          int64_t *user_id, int *outcome)
{
    int64_t tid = 0, uid = 0;
    int rc;
    if (!s || !outcome || !tenant_id || !user_id || !store_str_ok(tenant, STORE_NAME_MAX) ||
        !store_str_ok(user, STORE_NAME_MAX))
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    *outcome = STORE_NOT_FOUND;
    rc = user_ids(s, tenant, user, &tid, &uid);
    if (rc != 1)
        goto out;
    if ((rc = q_exec(s, NULL, "DELETE FROM api_tokens WHERE user_id = ?", "i", uid)) ||
        (rc = q_exec(s, NULL, "DELETE FROM console_sessions WHERE user_id = ?", "i", uid)) ||
        (rc = q_exec(s, NULL, "DELETE FROM users WHERE id = ?", "i", uid)))
        goto out;
    *tenant_id = tid;
    *user_id = uid;
    *outcome = STORE_OK;
out:
    rc = tx_end(s, rc < 0 ? rc : 0);
    TX_RETRY(rc);
    return rc;
}

static int sq_user_set_password(struct store *s, const char *tenant, const char *user,
                                const char *pw_hash, const char *keep_session, int64_t *tenant_id,
                                int64_t *user_id, int *outcome)
{
    int64_t tid = 0, uid = 0;
    int rc;
    if (!s || !outcome || !tenant_id || !user_id || !store_str_ok(tenant, STORE_NAME_MAX) ||
        !store_str_ok(user, STORE_NAME_MAX) || !pw_hash || !pw_hash[0] || strlen(pw_hash) > 511 ||
        (keep_session && !store_hash_ok(keep_session)))
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    *outcome = STORE_NOT_FOUND;
    rc = user_ids(s, tenant, user, &tid, &uid);
    if (rc != 1)
        goto out;
    if ((rc = q_exec(s, NULL, "UPDATE users SET pw_hash = ? WHERE id = ?", "ti", pw_hash, uid)) ||
        (rc = q_exec(s, NULL,
                     "DELETE FROM console_sessions WHERE user_id = ? AND id_hash <> ?", "it", uid,
                     keep_session ? keep_session : "")))
        goto out;
    *tenant_id = tid;
    *user_id = uid;
    *outcome = STORE_OK;
out:
    rc = tx_end(s, rc < 0 ? rc : 0);
    TX_RETRY(rc);
    return rc;
}

/* ---- console users and sessions ---- */

static int sq_user_get(struct store *s, const char *tenant, const char *user, int64_t *tenant_id,
                       int64_t *user_id, char pw_hash[512], char region[16], int *outcome)
{
    struct db_stmt *st = NULL;
    int rc;
    if (!s || !outcome || !pw_hash || !region || !store_str_ok(tenant, STORE_NAME_MAX) ||
        !store_str_ok(user, STORE_NAME_MAX))
        return PHY_EINVAL;
    TX_BEGIN(s, 0)
    rc = q_prep(s, &st,
                "SELECT t.id, u.id, u.pw_hash, t.region FROM users u"
                " JOIN tenants t ON t.id = u.tenant_id WHERE t.name = ? AND u.name = ?",
                "tt", tenant, user);
    if (rc)
        goto out;
    rc = step_one(st, outcome, STORE_NOT_FOUND);
    if (rc != DB_ROW)
        goto out;
    if ((rc = col_copy(st, 2, pw_hash, STORE_PW_HASH_MAX + 1)) ||
        (rc = col_copy(st, 3, region, STORE_REGION_MAX + 1)))
        goto out;
    if (tenant_id)
        *tenant_id = db_int(st, 0);
    if (user_id)
        *user_id = db_int(st, 1);
    *outcome = STORE_OK;
out:
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

/* The user must belong to the tenant (PHY_ENOTFOUND otherwise); a taken id_hash is
 * PHY_EEXIST. */
static int sq_console_session_create(struct store *s, const char *id_hash, int64_t tenant_id,
                                     int64_t user_id, const char *csrf, int64_t now_ms)
{
    int changes = 0, rc;
    if (!s || !store_session_hash_ok(id_hash) || !store_token_ok(csrf))
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    rc = q_exec(s, &changes,
                "INSERT INTO console_sessions(id_hash, tenant_id, user_id, csrf, created_ms,"
                " last_used_ms) SELECT ?1, tenant_id, id, ?2, ?3, ?3 FROM users"
                " WHERE id = ?4 AND tenant_id = ?5",
                "ttiii", id_hash, csrf, now_ms, user_id, tenant_id);
    if (rc == 0 && changes == 0)
        rc = PHY_ENOTFOUND;
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

/* Reads a session row (columns as selected by sq_console_session_auth) into *out. */
static int session_read(struct db_stmt *st, struct store_session *out)
{
    int rc;
    out->tenant_id = db_int(st, 0);
    out->user_id = db_int(st, 1);
    if ((rc = col_copy(st, 2, out->tenant, sizeof out->tenant)) ||
        (rc = col_copy(st, 3, out->user, sizeof out->user)) ||
        (rc = col_copy(st, 4, out->region, sizeof out->region)) ||
        (rc = col_copy(st, 5, out->csrf, sizeof out->csrf)))
        return rc;
    out->created_ms = db_int(st, 6);
    out->last_used_ms = db_int(st, 7);
    return 0;
}

/* console_session_auth deletes an expired session it sees; this removes the ones
 * never seen again, and audit records past their keep time. */
static int sq_console_sweep(struct store *s, int64_t now_ms, int64_t idle_ms, int64_t max_ms,
                            int64_t audit_keep_ms)
{
    int rc;
    if (!s || idle_ms <= 0 || max_ms <= 0)
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    rc = q_exec(s, NULL, "DELETE FROM console_sessions WHERE last_used_ms < ? OR created_ms < ?",
                "ii", now_ms - idle_ms, now_ms - max_ms);
    if (rc == 0 && audit_keep_ms > 0)
        rc = q_exec(s, NULL, "DELETE FROM audit WHERE at_ms < ?", "i", now_ms - audit_keep_ms);
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int sq_console_session_auth(struct store *s, const char *id_hash, int64_t now_ms,
                                   int64_t idle_ms, int64_t max_ms, int touch,
                                   struct store_session *out, int *outcome)
{
    struct db_stmt *st = NULL;
    int rc;
    if (out)
        memset(out, 0, sizeof *out);
    if (!s || !out || !outcome || !store_session_hash_ok(id_hash) || idle_ms <= 0 || max_ms <= 0)
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    rc = q_prep(s, &st,
                "SELECT c.tenant_id, c.user_id, t.name, u.name, t.region, c.csrf, c.created_ms,"
                " c.last_used_ms FROM console_sessions c"
                " JOIN users u ON u.id = c.user_id AND u.tenant_id = c.tenant_id"
                " JOIN tenants t ON t.id = c.tenant_id WHERE c.id_hash = ?",
                "t", id_hash);
    if (rc)
        goto out;
    rc = step_one(st, outcome, STORE_NOT_FOUND);
    if (rc != DB_ROW)
        goto out;
    rc = session_read(st, out);
    db_finish(st);
    st = NULL;
    if (rc)
        goto out;
    if (rule_session_expired(now_ms, out->created_ms, out->last_used_ms, idle_ms, max_ms)) {
        rc = q_exec(s, NULL, "DELETE FROM console_sessions WHERE id_hash = ?", "t", id_hash);
        memset(out, 0, sizeof *out);
        *outcome = STORE_NOT_FOUND;
        goto out;
    }
    if (touch && rule_session_touch(now_ms, out->last_used_ms, idle_ms)) {
        rc = q_exec(s, NULL, "UPDATE console_sessions SET last_used_ms = ? WHERE id_hash = ?", "it",
                    now_ms, id_hash);
        if (rc)
            goto out;
        out->last_used_ms = now_ms;
    }
    *outcome = STORE_OK;
out:
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    if (rc)
        memset(out, 0, sizeof *out);
    TX_RETRY(rc);
    return rc;
}

static int sq_console_session_delete(struct store *s, const char *id_hash)
{
    int rc;
    if (!s || !store_session_hash_ok(id_hash))
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    rc = q_exec(s, NULL, "DELETE FROM console_sessions WHERE id_hash = ?", "t", id_hash);
    if (rc == 0) { /* other nodes end the session's event streams */
        struct store_announce a = {.kind = ANNOUNCE_LOGOUT};
        snprintf(a.session_hash, sizeof a.session_hash, "%s", id_hash);
        rc = announce(s, &a);
    }
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

/* ---- audit ---- */

/* detail_json must be a JSON object of at most STORE_AUDIT_DETAIL_MAX bytes (PHY_ETOOBIG
 * when longer): callers summarize large details (e.g. a big patch). */
static int sq_audit_add(struct store *s, int64_t tenant_id, int64_t user_id, int64_t now_ms,
                        const char *action, const char *device_id, const char *detail_json)
{
    int rc;
    if (!s || !store_audit_action_ok(action) || (device_id && !store_device_id_ok(device_id)))
        return PHY_EINVAL;
    if (detail_json && (rc = store_json_object_parse(detail_json, STORE_AUDIT_DETAIL_MAX, NULL)))
        return rc;
    TX_BEGIN(s, 1)
    rc = q_exec(s, NULL,
                "INSERT INTO audit(tenant_id, user_id, at_ms, action, device_id, detail_json)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                "iiittt", tenant_id, user_id, now_ms, action, device_id, detail_json);
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int audit_read(struct db_stmt *st, struct store_audit *a)
{
    int rc;
    a->id = db_int(st, 0);
    a->at_ms = db_int(st, 1);
    if ((rc = col_copy(st, 2, a->actor, sizeof a->actor)) ||
        (rc = col_copy(st, 3, a->action, sizeof a->action)) ||
        (rc = col_copy(st, 4, a->device_id, sizeof a->device_id)))
        return rc;
    if (!db_null(st, 5) && !(a->detail_json = col_dup(st, 5)))
        return PHY_ENOMEM;
    return 0;
}

static int sq_audit_list(struct store *s, int64_t tenant_id, int64_t before, int limit,
                         struct store_audit **out, size_t *n)
{
    struct store_audit *v = NULL;
    struct db_stmt *st = NULL;
    size_t count = 0;
    int rc;
    if (out)
        *out = NULL;
    if (n)
        *n = 0;
    if (!s || !out || !n || limit < 1 || limit > STORE_AUDIT_LIST_MAX)
        return PHY_EINVAL;
    TX_BEGIN(s, 0)
    rc = q_prep(s, &st,
                "SELECT a.id, a.at_ms, CASE WHEN a.user_id = 0 THEN '(admin)'"
                " ELSE COALESCE(u.name, '(removed user)') END,"
                " a.action, a.device_id, a.detail_json FROM audit a"
                " LEFT JOIN users u ON u.id = a.user_id AND u.tenant_id = a.tenant_id"
                " WHERE a.tenant_id = ? AND a.id < ? ORDER BY a.id DESC LIMIT ?",
                "iii", tenant_id, before > 0 ? before : (int64_t)INT64_MAX, (int64_t)limit);
    if (rc)
        goto out;
    /* At most limit rows: one allocation. */
    v = calloc((size_t)limit, sizeof *v);
    if (!v) {
        rc = PHY_ENOMEM;
        goto out;
    }
    while (count < (size_t)limit && (rc = db_step(st)) == DB_ROW)
        if ((rc = audit_read(st, &v[count++])))
            goto out;
    rc = count == (size_t)limit || rc == DB_DONE ? 0 : rc < 0 ? rc : PHY_EIO;
out:
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    if (rc) {
        store_audit_free(v, count);
        v = NULL;
        count = 0;
        TX_RETRY(rc);
        return rc;
    }
    *out = v;
    *n = count;
    return 0;
}

/* ---- provisioning ---- */

static int issued_serial(struct store *s, const char *serial)
{
    return q_int(s, NULL, "SELECT 1 FROM issuances WHERE serial = ?", "t", serial);
}

/* 1 when serial is attested (has a public key), 0 when not, negative on failure. */
static int serial_attested(struct store *s, const char *serial)
{
    return q_int(s, NULL, "SELECT 1 FROM attested_serials WHERE serial = ?", "t", serial);
}

/* The tenant's policy for claims by serial: 1 found (*policy set), 0 no such tenant. */
static int tenant_policy(struct store *s, int64_t tenant_id, int *policy)
{
    int64_t any = 0;
    int rc = q_int(s, &any,
                   "SELECT CASE WHEN serial_claims = '" SERIAL_CLAIMS_ANY_NAME "' THEN 1 ELSE 0 END"
                   " FROM tenants"
                   " WHERE id = ?",
                   "i", tenant_id);
    if (rc == 1)
        *policy = any ? SERIAL_CLAIMS_ANY : SERIAL_CLAIMS_ATTESTED;
    return rc;
}

static int issued_code(struct store *s, const char *code)
{
    return q_int(s, NULL, "SELECT 1 FROM issuances WHERE code = ?", "t", code);
}

struct reg_row {
    char serial[PHY_SERIAL_MAX + 1];
    char code[PHY_CODE_LEN + 1]; /* "" when none */
    int64_t code_expires_ms;
    int64_t interval_s;
    int has_polled;
    int64_t last_poll_ms;
    int pending_proof; /* an attested serial's registration that has not proven yet */
};

/* Loads the live registration of token_hash: 1 found, 0 none, negative on failure. */
static int reg_load(struct store *s, const struct store_prov_params *p, const char *token_hash,
                    struct reg_row *g)
{
    struct db_stmt *st;
    int rc = q_prep(s, &st,
                    "SELECT serial, code, code_expires_ms, interval_s, last_poll_ms,"
                    " challenge IS NOT NULL"
                    " FROM registrations WHERE token_hash = ? AND last_active_ms > ?",
                    "ti", token_hash, rule_live_after(p));
    if (rc)
        return rc;
    rc = db_step(st);
    if (rc == DB_ROW) {
        rc = col_copy(st, 0, g->serial, sizeof g->serial);
        if (rc == 0)
            rc = col_copy(st, 1, g->code, sizeof g->code);
        g->code_expires_ms = db_int(st, 2);
        g->interval_s = db_int(st, 3);
        g->has_polled = !db_null(st, 4);
        g->last_poll_ms = db_int(st, 4);
        g->pending_proof = db_int(st, 5) != 0;
        if (rc == 0)
            rc = 1;
    } else {
        rc = rc == DB_DONE ? 0 : rc < 0 ? rc : PHY_EIO;
    }
    db_finish(st);
    st = NULL;
    return rc;
}

/* A registration's source or agent as stored: printable ASCII, cut at
 * STORE_REG_META_MAX bytes (they are shown, never trusted). */
static void meta_clean(const char *in, char out[STORE_REG_META_MAX + 1])
{
    size_t n = 0;
    for (; in && in[n] && n < STORE_REG_META_MAX; n++)
        out[n] = (in[n] >= 0x20 && in[n] < 0x7f) ? in[n] : '?';
    out[n] = '\0';
}

static int sq_reg_create(struct store *s, const struct store_prov_params *p, const char *serial,
                         const char *token_hash, const char *challenge,
                         const struct store_reg_meta *meta, struct store_reg_result *res,
                         int *outcome)
{
    char source[STORE_REG_META_MAX + 1], agent[STORE_REG_META_MAX + 1];
    meta_clean(meta ? meta->source : NULL, source);
    meta_clean(meta ? meta->agent : NULL, agent);
    int64_t live = 0;
    int rc, attested, evicted;
    if (res)
        memset(res, 0, sizeof *res);
    if (!s || !outcome || !res || !store_params_ok(p) || !store_serial_ok(serial) ||
        !store_hash_ok(token_hash) || !challenge || !store_token_ok(challenge))
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    attested = evicted = 0;
    rc = issued_serial(s, serial);
    if (rc < 0)
        goto out;
    if (rc == 1) {
        *outcome = STORE_PROVISIONED;
        rc = 0;
        goto out;
    }
    if ((attested = serial_attested(s, serial)) < 0) {
        rc = attested;
        goto out;
    }
    rc = q_int(s, &live,
               "SELECT count(*) FROM registrations WHERE serial = ? AND last_active_ms > ?", "ti",
               serial, rule_live_after(p));
    if (rc < 0)
        goto out;
    rc = 0;
    if (live >= p->max_regs_per_serial) {
        /* No lock-out by count: make room by dropping the least recently active
         * registration that has no live code (an unproven one first). The serial has
         * no issuance (checked above), so none of them is bound to one. */
        rc = q_exec(s, &evicted,
                    "DELETE FROM registrations WHERE token_hash = (SELECT token_hash FROM"
                    " registrations WHERE serial = ?1 AND last_active_ms > ?2 AND"
                    " (code IS NULL OR code_expires_ms <= ?3)"
                    " ORDER BY proven, last_active_ms, token_hash LIMIT 1)",
                    "tii", serial, rule_live_after(p), p->now_ms);
        if (rc)
            goto out;
        if (evicted == 0) {
            *outcome = STORE_TOO_MANY;
            goto out;
        }
        if ((rc = reg_changed(s, serial)))
            goto out;
    }
    rc = q_exec(s, NULL,
                "INSERT INTO registrations(token_hash, serial, interval_s, last_active_ms, "
                "created_ms, challenge, source, agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                "ttiiittt", token_hash, serial, (int64_t)p->interval_s, p->now_ms, p->now_ms,
                attested ? challenge : NULL, source[0] ? source : NULL, agent[0] ? agent : NULL);
    if (rc == 0)
        *outcome = STORE_OK;
out:
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    if (rc == 0) {
        res->attested = attested;
        res->evicted = evicted > 0;
    }
    return rc;
}

/* Before an operation that judges registrations by their last activity (claims, the
 * sweep, counts and lists of live registrations): this node's soft poll state goes to
 * the store first (only a mutex when there is none). Other nodes flush theirs every
 * second. */
static void soft_sync(struct store *s)
{
    (void)store_soft_flush(s);
}

static int sq_reg_info(struct store *s, const struct store_prov_params *p, const char *serial,
                       struct store_reg_info *out, size_t *n, int *attested, int *issued)
{
    struct db_stmt *st = NULL;
    int rc;
    if (!s || !out || !n || !attested || !issued || !store_params_ok(p) || !store_serial_ok(serial))
        return PHY_EINVAL;
    soft_sync(s);
    TX_BEGIN(s, 0)
    *n = 0;
    if ((rc = serial_attested(s, serial)) < 0)
        goto out;
    *attested = rc;
    if ((rc = issued_serial(s, serial)) < 0)
        goto out;
    *issued = rc;
    rc = q_prep(s, &st,
                "SELECT created_ms, last_active_ms, source, agent, proven FROM registrations"
                " WHERE serial = ? AND last_active_ms > ? ORDER BY created_ms DESC, token_hash"
                " LIMIT 8",
                "ti", serial, rule_live_after(p));
    if (rc)
        goto out;
    while ((rc = db_step(st)) == DB_ROW && *n < STORE_REG_INFO_MAX) {
        struct store_reg_info *r = &out[*n];
        memset(r, 0, sizeof *r);
        r->created_ms = db_int(st, 0);
        r->last_active_ms = db_int(st, 1);
        if ((rc = col_copy(st, 2, r->source, sizeof r->source)) ||
            (rc = col_copy(st, 3, r->agent, sizeof r->agent)))
            goto out;
        r->proven = db_int(st, 4) != 0;
        (*n)++;
    }
    rc = rc == DB_DONE || rc == DB_ROW ? 0 : rc < 0 ? rc : PHY_EIO;
out:
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int sq_reg_challenge(struct store *s, const struct store_prov_params *p, const char *serial,
                            const char *token_hash, char challenge[PHY_TOKEN_LEN + 1],
                            unsigned char **key, size_t *key_len, int *outcome)
{
    struct db_stmt *st = NULL;
    int rc;
    if (key)
        *key = NULL;
    if (!s || !outcome || !challenge || !key || !key_len || !store_params_ok(p) ||
        !store_serial_ok(serial) || !store_hash_ok(token_hash))
        return PHY_EINVAL;
    challenge[0] = '\0';
    TX_BEGIN(s, 0)
    rc = q_prep(s, &st,
                "SELECT r.challenge, a.public_key FROM registrations r"
                " LEFT JOIN attested_serials a ON a.serial = r.serial"
                " WHERE r.token_hash = ? AND r.serial = ? AND r.last_active_ms > ?",
                "tti", token_hash, serial, rule_live_after(p));
    if (rc)
        goto out;
    rc = step_one(st, outcome, STORE_BAD_TOKEN);
    if (rc != DB_ROW)
        goto out;
    *outcome = STORE_OK;
    rc = 0;
    size_t len = 0;
    const void *blob = cur.e->col_blob(st, 1, &len);
    if (db_null(st, 0) || !blob || len == 0)
        goto out; /* nothing to prove */
    if ((rc = col_copy(st, 0, challenge, PHY_TOKEN_LEN + 1)))
        goto out;
    if (!(*key = malloc(len))) {
        rc = PHY_ENOMEM;
        goto out;
    }
    memcpy(*key, blob, len);
    *key_len = len;
out:
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    if (rc) {
        free(*key);
        *key = NULL;
        challenge[0] = '\0';
    }
    TX_RETRY(rc);
    return rc;
}

static int sq_reg_prove(struct store *s, const struct store_prov_params *p, const char *serial,
                        const char *token_hash, const char *challenge, int *outcome)
{
    int rc, changes = 0;
    if (!s || !outcome || !store_params_ok(p) || !store_serial_ok(serial) ||
        !store_hash_ok(token_hash) || !challenge || !store_token_ok(challenge))
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    rc = q_exec(s, &changes,
                "UPDATE registrations SET challenge = NULL, proven = 1, last_active_ms = ?4"
                " WHERE token_hash = ?1 AND serial = ?2 AND challenge = ?3 AND last_active_ms > ?5",
                "tttii", token_hash, serial, challenge, p->now_ms, rule_live_after(p));
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    if (rc == 0)
        *outcome = changes ? STORE_OK : STORE_BAD_TOKEN;
    return rc;
}

#define SERIAL_KEY_MAX 512 /* a DER SubjectPublicKeyInfo of Ed25519 is 44 bytes, P-256 91 */

static int sq_serials_import(struct store *s, const struct store_serial_key *v, size_t n,
                             int64_t now_ms)
{
    int rc;
    if (!s || (n && !v))
        return PHY_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!store_serial_ok(v[i].serial) || !v[i].public_key || v[i].public_key_len == 0 ||
            v[i].public_key_len > SERIAL_KEY_MAX)
            return PHY_EINVAL;
    TX_BEGIN(s, 1)
    rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = q_exec(s, NULL,
                    "INSERT INTO attested_serials(serial, public_key, created_ms) VALUES (?1, ?2, ?3)"
                    " ON CONFLICT(serial) DO UPDATE SET public_key = ?2, created_ms = ?3",
                    "tbi", v[i].serial, (const void *)v[i].public_key, v[i].public_key_len,
                    now_ms);
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int sq_tenant_serial_claims_set(struct store *s, const char *tenant, int policy,
                                       int *outcome)
{
    int rc, changes = 0;
    if (!s || !outcome || !store_str_ok(tenant, STORE_NAME_MAX) ||
        (policy != SERIAL_CLAIMS_ATTESTED && policy != SERIAL_CLAIMS_ANY))
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    rc = q_exec(s, &changes, "UPDATE tenants SET serial_claims = ? WHERE name = ?", "tt",
                store_serial_claims_name(policy), tenant);
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    if (rc == 0)
        *outcome = changes ? STORE_OK : STORE_NOT_FOUND;
    return rc;
}

static int sq_tenant_serial_claims(struct store *s, int64_t tenant_id, int *policy, int *outcome)
{
    int rc;
    if (!s || !policy || !outcome)
        return PHY_EINVAL;
    TX_BEGIN(s, 0)
    rc = tenant_policy(s, tenant_id, policy);
    if (rc >= 0) {
        *outcome = rc == 1 ? STORE_OK : STORE_NOT_FOUND;
        rc = 0;
    }
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int sq_reg_set_code(struct store *s, const struct store_prov_params *p, const char *serial,
                           const char *token_hash, const char *code, int *outcome)
{
    char ncode[PHY_CODE_LEN + 1];
    int rc;
    if (!s || !outcome || !store_params_ok(p) || !store_serial_ok(serial) || !store_hash_ok(token_hash) ||
        store_code_normalize(code, ncode) != 0)
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    /* A registration that was claimed stays answerable even after it lapsed: the
     * device must go on to poll (and get its credentials), not re-register. */
    rc = q_int(s, NULL, "SELECT 1 FROM issuances WHERE token_hash = ? AND serial = ?", "tt",
               token_hash, serial);
    if (rc < 0)
        goto out;
    if (rc == 1) {
        *outcome = STORE_PROVISIONED;
        rc = 0;
        goto out;
    }
    struct reg_row g = {0};
    rc = reg_load(s, p, token_hash, &g);
    if (rc < 0)
        goto out;
    if (rc == 0 || strcmp(g.serial, serial) != 0) {
        *outcome = STORE_BAD_TOKEN;
        rc = 0;
        goto out;
    }
    if (g.pending_proof) {
        *outcome = STORE_PROOF_REQUIRED;
        rc = 0;
        goto out;
    }
    int64_t expires = g.code_expires_ms;
    if (rule_code_too_soon(expires, p)) {
        *outcome = STORE_SLOW_DOWN;
        rc = 0;
        goto out;
    }
    rc = issued_serial(s, serial);
    if (rc < 0)
        goto out;
    if (rc == 1) {
        *outcome = STORE_PROVISIONED;
        rc = 0;
        goto out;
    }
    /* An unexpired code of any other registration (even a lapsing one) or any
     * issued code stays unique, so a code always names one registration. */
    rc = q_int(s, NULL,
               "SELECT 1 FROM registrations WHERE code = ?1 AND code_expires_ms > ?2 AND "
               "token_hash <> ?3 UNION ALL SELECT 1 FROM issuances WHERE code = ?1",
               "tit", ncode, p->now_ms, token_hash);
    if (rc < 0)
        goto out;
    if (rc == 1) {
        *outcome = STORE_CODE_TAKEN;
        rc = 0;
        goto out;
    }
    rc = q_exec(s, NULL,
                "UPDATE registrations SET code = ?, code_expires_ms = ?, last_active_ms = ? "
                "WHERE token_hash = ?",
                "tiit", ncode, p->now_ms + p->code_ttl_ms, p->now_ms, token_hash);
    if (rc == 0)
        rc = reg_changed(s, serial);
    if (rc == 0)
        *outcome = STORE_OK;
out:
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

/* Rules 1 and 2 of poll in one read: the issuance bound to this token, else one that
 * spent the polled serial or code for another token. Returns 1 when there is one
 * (outcome set: DELIVER or PROVISIONED), 0 when there is none, negative on failure. */
static int poll_issuance(struct store *s, const struct store_prov_params *p, const char *token_hash,
                         const char *serial, const char *code, struct store_poll_result *r,
                         int *outcome, int writable)
{
    struct db_stmt *st = NULL;
    char device_id[PHY_DEVICE_ID_LEN + 1];
    int first, remote, rc;
    rc = q_prep(s, &st,
                "SELECT i.device_id, i.sealed, i.delivered_ms, d.state, i.region, d.tenant_id,"
                " CASE WHEN i.token_hash = ?1 THEN 1 ELSE 0 END AS own"
                " FROM issuances i"
                " LEFT JOIN devices d ON d.device_id = i.device_id"
                " WHERE i.token_hash = ?1 OR i.serial = ?2 OR i.code = ?3"
                " ORDER BY own DESC LIMIT 1",
                "ttt", token_hash, serial, code);
    if (rc)
        return rc;
    rc = db_step(st);
    if (rc != DB_ROW) {
        rc = rc == DB_DONE ? 0 : rc < 0 ? rc : PHY_EIO;
        goto out;
    }
    if (db_int(st, 6) == 0) { /* 2. spent by a claim bound to another token */
        *outcome = STORE_PROVISIONED;
        rc = 1;
        goto out;
    }
    const char *state = db_text(st, 3);
    size_t blob_len = 0;
    const void *blob = cur.e->col_blob(st, 1, &blob_len);
    first = db_null(st, 2);
    remote = !db_null(st, 4);
    struct rule_issuance iss = {
        .has_body = blob && blob_len > 0,
        .delivered = !first,
        .delivered_ms = first ? 0 : db_int(st, 2),
        .remote = remote,
        .state = state,
    };
    if (rule_issuance_poll(&iss, p) != STORE_DELIVER) {
        *outcome = STORE_PROVISIONED;
        rc = 1;
        goto out;
    }
    if (first && !writable) { /* the delivery is recorded: run again as a write */
        rc = TX_NEED_WRITE;
        goto out;
    }
    if ((rc = col_copy(st, 0, device_id, sizeof device_id)))
        goto out;
    r->sealed = malloc((size_t)blob_len);
    if (!r->sealed) {
        rc = PHY_ENOMEM;
        goto out;
    }
    memcpy(r->sealed, blob, (size_t)blob_len);
    r->sealed_len = (size_t)blob_len;
    memcpy(r->device_id, device_id, sizeof device_id);
    /* A peer region's tenant lives in that region's store: its ID means nothing here. */
    r->tenant_id = remote ? 0 : db_int(st, 5);
    db_finish(st);
    st = NULL;
    /* Nothing is recorded for a body the caller cannot open (e.g. a wrong key file):
     * the grace clock must not start for credentials that were never sent. */
    if (p->deliver_check &&
        p->deliver_check(p->deliver_ctx, device_id, r->sealed, r->sealed_len) != 0) {
        free(r->sealed);
        r->sealed = NULL;
        r->sealed_len = 0;
        rc = PHY_ECRYPTO;
        goto out;
    }
    if (first) {
        rc = q_exec(s, NULL,
                    "UPDATE issuances SET delivered_ms = ? WHERE token_hash = ? AND "
                    "delivered_ms IS NULL",
                    "it", p->now_ms, token_hash);
        if (rc == 0 && !remote)
            rc = q_exec(s, NULL,
                        "UPDATE devices SET state = " SQL_PROVISIONED " WHERE device_id = ? AND "
                        "state = " SQL_PENDING,
                        "t", device_id);
        if (rc == 0 && !remote && r->tenant_id > 0)
            rc = announce_device(s, r->tenant_id, device_id, "state");
        if (rc)
            goto out;
    }
    *outcome = STORE_DELIVER;
    rc = 1;
out:
    db_finish(st);
    st = NULL;
    return rc;
}

/* The soft state goes to the store once its oldest entry is a second old (and at
 * every heartbeat): no timer of its own while nothing polls. */
static void soft_flush_due(struct store *s)
{
    if (soft_due(s->soft, mono_ms(), SOFT_FLUSH_AFTER_MS))
        (void)store_soft_flush(s);
}

/* A pending poll answered from the registration's facts in memory (soft.h), with the
 * same rules 3-6 as from the store: 1 answered (pending or slow_down, recorded as
 * soft state), 0 when the store must answer (no facts, another answer, a full soft
 * table). Rules 1-2 need no check: a claim of the serial forgets its facts. */
static int poll_from_facts(struct store *s, const struct store_prov_params *p,
                           const char *serial, const char *code, const char *token_hash,
                           struct store_poll_result *r, int *outcome)
{
    struct soft_reg f;
    int64_t interval;
    if (!soft_reg_get(s->soft, token_hash, mono_ms(), &f) ||
        (serial && strcmp(f.serial, serial) != 0) || f.last_active_ms <= rule_live_after(p))
        return 0;
    struct rule_registration rg = {f.code, f.code_expires_ms, f.interval_s, 1, f.last_poll_ms};
    int o = rule_poll(&rg, code, p, &interval);
    if ((o != STORE_PENDING && o != STORE_SLOW_DOWN) ||
        soft_put(s->soft, token_hash, interval, p->now_ms, mono_ms()) != 0)
        return 0;
    soft_reg_polled(s->soft, token_hash, interval, p->now_ms);
    *outcome = o;
    r->interval_s = (int)interval;
    soft_flush_due(s);
    return 1;
}

static int sq_poll(struct store *s, const struct store_prov_params *p, const char *serial,
                   const char *code, const char *token_hash, struct store_poll_result *r,
                   int *outcome)
{
    char ncode[PHY_CODE_LEN + 1];
    struct reg_row g = {0};
    struct soft_poll soft;
    int64_t interval;
    int rc, write = 0; /* a pending poll writes nothing durable: a read first */
    if (r)
        memset(r, 0, sizeof *r);
    if (!s || !r || !outcome || !store_params_ok(p) || !store_hash_ok(token_hash) || !serial == !code)
        return PHY_EINVAL;
    if (serial && !store_serial_ok(serial))
        return PHY_EINVAL;
    if (code && store_code_normalize(code, ncode) != 0)
        return PHY_EINVAL;
    /* Read before the store: a fill from a read that a change overtook is dropped. */
    uint64_t facts_gen = soft_reg_gen(s->soft);
    if (poll_from_facts(s, p, serial, code ? ncode : NULL, token_hash, r, outcome))
        return 0;
    TX_BEGIN(s, write)

    /* 1. an issuance bound to this token; 2. the serial/code spent by another's */
    rc = poll_issuance(s, p, token_hash, serial, code ? ncode : NULL, r, outcome, write);
    if (rc != 0)
        goto out;
    /* 3. a live registration of this token, for this serial */
    rc = reg_load(s, p, token_hash, &g);
    if (rc < 0)
        goto out;
    if (rc == 0 || (serial && strcmp(g.serial, serial) != 0)) {
        *outcome = STORE_BAD_TOKEN;
        goto out;
    }
    if (g.pending_proof) {
        *outcome = STORE_PROOF_REQUIRED;
        rc = 0;
        goto out;
    }
    if (code) {
        /* A code poll whose registration's serial was claimed by another token. */
        rc = issued_serial(s, g.serial);
        if (rc < 0)
            goto out;
        if (rc == 1) {
            *outcome = STORE_PROVISIONED;
            goto out;
        }
    }
    /* 4.-6., on the last poll this node recorded when it is newer than the store's */
    if (soft_get(s->soft, token_hash, &soft) &&
        (!g.has_polled || soft.last_poll_ms >= g.last_poll_ms)) {
        g.has_polled = 1;
        g.last_poll_ms = soft.last_poll_ms;
        g.interval_s = soft.interval_s;
    }
    struct rule_registration rg = {g.code, g.code_expires_ms, g.interval_s, g.has_polled,
                                   g.last_poll_ms};
    *outcome = rule_poll(&rg, code ? ncode : NULL, p, &interval);
    if (*outcome == STORE_PENDING || *outcome == STORE_SLOW_DOWN) {
        struct soft_reg f = {.code_expires_ms = g.code_expires_ms,
                             .interval_s = interval,
                             .last_poll_ms = p->now_ms,
                             .last_active_ms = p->now_ms};
        memcpy(f.serial, g.serial, sizeof f.serial);
        memcpy(f.code, g.code, sizeof f.code);
        soft_reg_put(s->soft, token_hash, &f, facts_gen, mono_ms());
    }
    /* Soft state: kept in memory, written by store_soft_flush; durably at once only
     * when the table is full. */
    if (write || soft_put(s->soft, token_hash, interval, p->now_ms, mono_ms()) != 0) {
        if (!write) {
            rc = TX_NEED_WRITE;
            goto out;
        }
        rc = q_exec(s, NULL,
                    "UPDATE registrations SET interval_s = ?, last_poll_ms = ?, last_active_ms = ? "
                    "WHERE token_hash = ?",
                    "iiit", interval, p->now_ms, p->now_ms, token_hash);
    }
    r->interval_s = (int)interval;
out:
    if (rc > 0)
        rc = 0;
    rc = tx_end(s, rc);
    if (rc) {
        free(r->sealed);
        memset(r, 0, sizeof *r);
    }
    if (rc == TX_NEED_WRITE && !write) {
        write = 1;
        goto tx_again_;
    }
    TX_RETRY(rc);
    if (rc == 0 && !write)
        soft_flush_due(s);
    return rc;
}

/* The registration a claim resolves to. */
struct claim_target {
    char serial[PHY_SERIAL_MAX + 1];
    char token_hash[PHY_HASH_HEX_LEN + 1];
    char code[PHY_CODE_LEN + 1]; /* "" when none */
};

/* Resolves a claim by code. 1 resolved, 0 refused (outcome set), negative on failure. */
static int claim_by_code(struct store *s, const struct store_prov_params *p, const char *code,
                         struct claim_target *t, int *outcome)
{
    struct db_stmt *st;
    int rc = q_prep(s, &st,
                    "SELECT token_hash, serial FROM registrations"
                    " WHERE code = ? AND code_expires_ms > ? AND last_active_ms > ?"
                    " ORDER BY code_expires_ms DESC LIMIT 1",
                    "tii", code, p->now_ms, rule_live_after(p));
    if (rc)
        return rc;
    rc = db_step(st);
    if (rc == DB_ROW) {
        rc = col_copy(st, 0, t->token_hash, sizeof t->token_hash);
        if (rc == 0)
            rc = col_copy(st, 1, t->serial, sizeof t->serial);
        if (rc == 0)
            rc = 1;
    } else {
        rc = rc == DB_DONE ? 0 : rc < 0 ? rc : PHY_EIO;
    }
    db_finish(st);
    st = NULL;
    if (rc == 0) {
        rc = issued_code(s, code);
        if (rc >= 0)
            *outcome = rc == 1 ? STORE_ALREADY_CLAIMED : STORE_EXPIRED_CODE;
        return rc < 0 ? rc : 0;
    }
    if (rc < 0)
        return rc;
    memcpy(t->code, code, PHY_CODE_LEN + 1);
    rc = issued_serial(s, t->serial);
    if (rc == 1) {
        *outcome = STORE_ALREADY_CLAIMED;
        return 0;
    }
    return rc < 0 ? rc : 1;
}

/* Resolves a claim by serial. 1 resolved, 0 refused (outcome set), negative on failure. */
static int claim_by_serial(struct store *s, const struct store_prov_params *p, const char *serial,
                           int serial_claims, struct claim_target *t, int *outcome)
{
    struct db_stmt *st;
    int rows = 0, rc, attested;
    rc = issued_serial(s, serial);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        *outcome = STORE_ALREADY_CLAIMED;
        return 0;
    }
    if ((attested = serial_attested(s, serial)) < 0)
        return attested;
    if (!rule_serial_claim_allowed(attested, serial_claims)) {
        *outcome = STORE_CODE_REQUIRED;
        return 0;
    }
    /* Of an attested serial, only registrations that proved possession count. */
    rc = q_prep(s, &st,
                "SELECT token_hash, code FROM registrations"
                " WHERE serial = ? AND last_active_ms > ? AND proven >= ? LIMIT 2",
                "tii", serial, rule_live_after(p), (int64_t)attested);
    if (rc)
        return rc;
    while ((rc = db_step(st)) == DB_ROW) {
        if (rows++ == 0) {
            if ((rc = col_copy(st, 0, t->token_hash, sizeof t->token_hash)) ||
                (rc = col_copy(st, 1, t->code, sizeof t->code)))
                break;
        }
    }
    db_finish(st);
    st = NULL;
    if (rc != DB_DONE)
        return rc < 0 ? rc : PHY_EIO;
    if ((*outcome = rule_claim_by_serial(attested, serial_claims, rows)) != STORE_OK)
        return 0;
    memcpy(t->serial, serial, strlen(serial) + 1);
    return 1;
}

/* Checks what names a claim's serial (exactly one of serial / code) and that it has
 * a sealer; ncode gets the normalized code. 0 or PHY_EINVAL. */
static int claim_key_check(const char *serial, const char *code, int has_seal,
                           char ncode[PHY_CODE_LEN + 1])
{
    if (!has_seal || !serial == !code)
        return PHY_EINVAL;
    if (serial && !store_serial_ok(serial))
        return PHY_EINVAL;
    if (code && store_code_normalize(code, ncode) != 0)
        return PHY_EINVAL;
    return 0;
}

/* Checks the fields of a device row to create; *tags gets the tags text ("{}" for
 * NULL). 0, PHY_EINVAL or PHY_ETOOBIG. */
static int new_device_check(const char *device_id, const char *secret_hash, const char *name,
                            const char *tags_json, const char **tags)
{
    if (!store_device_id_ok(device_id) || !store_hash_ok(secret_hash) || !store_name_ok(name))
        return PHY_EINVAL;
    *tags = tags_json ? tags_json : "{}";
    return strnlen(*tags, STORE_TAGS_JSON_MAX + 1) > STORE_TAGS_JSON_MAX ? PHY_ETOOBIG : 0;
}

/* Inserts a device row; PHY_EEXIST when the device ID is taken. */
/* Who claims, and with what key (store_claim_key), for claim_replay. */
struct claimer {
    int64_t user_id;
    char key[STORE_CLAIM_KEY_MAX + 1];
};

static int device_insert(struct store *s, int64_t tenant_id, const char *device_id,
                         const char *secret_hash, const char *name, const char *tags,
                         const char *serial, const char *state, int64_t now_ms, int remote,
                         const struct claimer *by)
{
    return q_exec(s, NULL,
                  "INSERT INTO devices(device_id, tenant_id, serial, name, tags_json, secret_hash,"
                  " state, created_ms, remote, claimed_by, claim_key)"
                  " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  "titttttiiit", device_id, tenant_id, serial, name, tags, secret_hash, state,
                  now_ms, (int64_t)(remote != 0), by->user_id, by->key[0] ? by->key : NULL);
}

/* What a claim issues: eu's own (region NULL) or one asked for by a peer region. */
struct issue_req {
    const char *serial, *code; /* exactly one non-NULL; code normalized */
    const char *device_id;
    const char *region;
    int serial_claims; /* the tenant's policy (enum store_serial_claims) */
    unsigned char *(*seal)(void *ctx, const char *serial, size_t *out_len);
    void *seal_ctx;
};

/* Inside the caller's transaction: resolves the claim, seals the body, stores the
 * issuance bound to the chosen registration and spends the serial (all its
 * registrations' codes are cleared). 1 issued (t set), 0 refused (outcome set),
 * negative PHY_E*. */
static int issue(struct store *s, const struct store_prov_params *p, const struct issue_req *q,
                 struct claim_target *t, int *outcome)
{
    unsigned char *sealed;
    size_t sealed_len = 0;
    int rc;

    memset(t, 0, sizeof *t);
    rc = q->code ? claim_by_code(s, p, q->code, t, outcome)
                 : claim_by_serial(s, p, q->serial, q->serial_claims, t, outcome);
    if (rc <= 0)
        return rc;
    sealed = q->seal(q->seal_ctx, t->serial, &sealed_len);
    if (!sealed || sealed_len == 0) {
        free(sealed);
        return PHY_ECRYPTO;
    }
    rc = q_exec(s, NULL,
                "INSERT INTO issuances(serial, code, token_hash, device_id, sealed, created_ms,"
                " region) VALUES (?, ?, ?, ?, ?, ?, ?)",
                "ttttbit", t->serial, t->code[0] ? t->code : NULL, t->token_hash, q->device_id,
                (const void *)sealed, sealed_len, p->now_ms, q->region);
    free(sealed);
    if (rc == 0)
        rc = q_exec(s, NULL,
                    "UPDATE registrations SET code = NULL, code_expires_ms = 0 WHERE serial = ?",
                    "t", t->serial);
    if (rc == 0)
        rc = reg_changed(s, t->serial);
    return rc ? rc : 1;
}

static int sq_claim(struct store *s, const struct store_prov_params *p, const struct store_claim *c,
                    struct store_device *device, int *outcome)
{
    char ncode[PHY_CODE_LEN + 1];
    struct claim_target t;
    const char *tags;
    int rc;

    if (device)
        memset(device, 0, sizeof *device);
    if (!s || !c || !device || !outcome || !store_params_ok(p) ||
        claim_key_check(c->serial, c->code, c->seal != NULL, ncode) != 0)
        return PHY_EINVAL;
    if ((rc = new_device_check(c->device_id, c->secret_hash, c->name, c->tags_json, &tags)))
        return rc;
    struct claimer by = {.user_id = c->user_id};
    if (store_claim_key(c->serial, c->code ? ncode : NULL, by.key, sizeof by.key))
        return PHY_EINVAL;
    struct issue_req q = {
        .serial = c->serial,
        .code = c->code ? ncode : NULL,
        .device_id = c->device_id,
        .serial_claims = c->serial_claims,
        .seal = c->seal,
        .seal_ctx = c->seal_ctx,
    };
    soft_sync(s);
    TX_BEGIN(s, 1)

    rc = issue(s, p, &q, &t, outcome);
    if (rc <= 0)
        goto out;
    rc = device_insert(s, c->tenant_id, c->device_id, c->secret_hash, c->name, tags, t.serial,
                       STATE_PENDING, p->now_ms, 0, &by);
    if (rc)
        goto out;
    device->tags_json = strdup(tags);
    if (!device->tags_json) {
        rc = PHY_ENOMEM;
        goto out;
    }
    memcpy(device->device_id, c->device_id, strlen(c->device_id) + 1);
    memcpy(device->serial, t.serial, strlen(t.serial) + 1);
    if (c->name)
        memcpy(device->name, c->name, strlen(c->name) + 1);
    memcpy(device->state, STATE_PENDING, sizeof STATE_PENDING);
    device->created_ms = p->now_ms;
    if ((rc = announce_device(s, c->tenant_id, c->device_id, "state")))
        goto out;
    *outcome = STORE_OK;
out:
    if (rc > 0)
        rc = 0;
    rc = tx_end(s, rc);
    if (rc) {
        free(device->tags_json);
        memset(device, 0, sizeof *device);
    }
    TX_RETRY(rc);
    return rc;
}

/* ---- inter-region, eu side ---- */

static int sq_issue_remote(struct store *s, const struct store_prov_params *p,
                           const struct store_remote_issue *ri, char serial_out[PHY_SERIAL_MAX + 1],
                           int *outcome)
{
    char ncode[PHY_CODE_LEN + 1];
    struct claim_target t;
    struct db_stmt *st = NULL;
    int rc;

    if (serial_out)
        serial_out[0] = '\0';
    if (!s || !ri || !serial_out || !outcome || !store_params_ok(p) || !store_device_id_ok(ri->device_id) ||
        !store_region_ok(ri->region) || claim_key_check(ri->serial, ri->code, ri->seal != NULL, ncode))
        return PHY_EINVAL;
    struct issue_req q = {
        .serial = ri->serial,
        .code = ri->code ? ncode : NULL,
        .device_id = ri->device_id,
        .region = ri->region,
        .serial_claims = ri->serial_claims,
        .seal = ri->seal,
        .seal_ctx = ri->seal_ctx,
    };
    char ref[PHY_HASH_HEX_LEN + 1];
    if ((rc = device_ref(ri->device_id, ref)))
        return rc;
    soft_sync(s);
    TX_BEGIN(s, 1)
    /* A retry (the answer to an earlier call was lost) finds its own issuance. */
    rc = q_prep(s, &st,
                "SELECT serial, region FROM issuances WHERE device_id = ?1 OR"
                " device_ref = ?2 LIMIT 1",
                "tt", ri->device_id, ref);
    if (rc)
        goto out;
    rc = db_step(st);
    if (rc == DB_ROW) {
        const char *region = db_text(st, 1);
        int own = region && strcmp(region, ri->region) == 0;
        rc = own ? col_copy(st, 0, serial_out, PHY_SERIAL_MAX + 1) : 0;
        if (rc == 0)
            *outcome = own ? STORE_OK : STORE_ALREADY_CLAIMED;
        goto out;
    }
    if (rc != DB_DONE) {
        rc = rc < 0 ? rc : PHY_EIO;
        goto out;
    }
    db_finish(st);
    st = NULL;
    rc = issue(s, p, &q, &t, outcome);
    if (rc == 1) {
        memcpy(serial_out, t.serial, strlen(t.serial) + 1);
        *outcome = STORE_OK;
        rc = 0;
    }
out:
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    if (rc)
        serial_out[0] = '\0';
    TX_RETRY(rc);
    return rc;
}

static int sq_issuance_purge_remote(struct store *s, const char *region, const char *device_id,
                                    int *outcome)
{
    char ref[PHY_HASH_HEX_LEN + 1];
    int purged = 0, rc;
    if (!s || !outcome || !store_region_ok(region) || !store_device_id_ok(device_id))
        return PHY_EINVAL;
    if ((rc = device_ref(device_id, ref)))
        return rc;
    TX_BEGIN(s, 1)
    rc = q_exec(s, &purged,
                "UPDATE issuances SET sealed = NULL, device_ref = ?3, device_id = ''"
                " WHERE (device_id = ?1 OR device_ref = ?3) AND region = ?2",
                "ttt", device_id, region, ref);
    if (rc == 0)
        *outcome = purged > 0 ? STORE_OK : STORE_NOT_FOUND;
    rc = tx_end_scrub(s, rc, purged);
    TX_RETRY(rc);
    return rc;
}

static int sq_issuance_cancel_remote(struct store *s, const char *region, const char *device_id,
                                     char serial_out[PHY_SERIAL_MAX + 1], int *outcome)
{
    char ref[PHY_HASH_HEX_LEN + 1];
    struct db_stmt *st = NULL;
    int deleted = 0, delivered, rc;
    if (serial_out)
        serial_out[0] = '\0';
    if (!s || !serial_out || !outcome || !store_region_ok(region) || !store_device_id_ok(device_id))
        return PHY_EINVAL;
    if ((rc = device_ref(device_id, ref)))
        return rc;
    TX_BEGIN(s, 1)
    rc = q_prep(s, &st,
                "SELECT serial, delivered_ms FROM issuances WHERE (device_id = ?1 OR"
                " device_ref = ?3) AND region = ?2",
                "ttt", device_id, region, ref);
    if (rc)
        goto out;
    rc = step_one(st, outcome, STORE_NOT_FOUND);
    if (rc != DB_ROW)
        goto out;
    delivered = !db_null(st, 1);
    rc = col_copy(st, 0, serial_out, PHY_SERIAL_MAX + 1);
    db_finish(st);
    st = NULL;
    if (rc)
        goto out;
    if (delivered) {
        /* The device has its credentials: the region must keep (roll forward) it. */
        *outcome = STORE_PROVISIONED;
        goto out;
    }
    /* The codes stay cleared: the device asks for a new one. */
    rc = q_exec(s, &deleted, "DELETE FROM issuances WHERE serial = ?", "t", serial_out);
    if (rc == 0)
        *outcome = STORE_OK;
out:
    db_finish(st);
    st = NULL;
    rc = tx_end_scrub(s, rc, deleted);
    if (rc)
        serial_out[0] = '\0';
    TX_RETRY(rc);
    return rc;
}

static int sq_serial_rearm_remote(struct store *s, const char *region, const char *serial,
                                  int *outcome)
{
    int deleted = 0, rc;
    if (!s || !outcome || !store_region_ok(region) || !store_serial_ok(serial))
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    rc = q_exec(s, &deleted, "DELETE FROM issuances WHERE serial = ? AND region = ?", "tt", serial,
                region);
    /* Its registrations go too, or they would count against the new one. */
    if (rc == 0 && deleted > 0)
        rc = q_exec(s, NULL, "DELETE FROM registrations WHERE serial = ?", "t", serial);
    if (rc == 0 && deleted > 0)
        rc = reg_changed(s, serial);
    if (rc == 0)
        *outcome = deleted > 0 ? STORE_OK : STORE_NOT_FOUND;
    rc = tx_end_scrub(s, rc, deleted);
    TX_RETRY(rc);
    return rc;
}

static int sq_devices_add_bulk(struct store *s, const char *tenant,
                               const struct store_new_device *devs, size_t n, int64_t now_ms,
                               int *outcome)
{
    int64_t tid = 0;
    int rc;
    if (!s || !outcome || !store_str_ok(tenant, STORE_NAME_MAX) || (n && !devs))
        return PHY_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!store_serial_ok(devs[i].serial) || !store_hash_ok(devs[i].secret_hash) ||
            strncmp(devs[i].device_id, "dev_", 4) != 0)
            return PHY_EINVAL;
    TX_BEGIN(s, 1)
    rc = tenant_id_of(s, tenant, &tid);
    if (rc < 0)
        goto out;
    if (rc == 0) {
        *outcome = STORE_NOT_FOUND;
        rc = 0;
        goto out;
    }
    *outcome = STORE_OK;
    rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = q_exec(s, NULL,
                    "INSERT INTO devices(device_id, tenant_id, serial, name, tags_json,"
                    " secret_hash, state, created_ms) VALUES (?1, ?2, ?3, NULL, ?4, ?5,"
                    " " SQL_PROVISIONED ", ?6)",
                    "tittti", devs[i].device_id, tid, devs[i].serial,
                    devs[i].tags_json ? devs[i].tags_json : "{}", devs[i].secret_hash, now_ms);
    if (rc == PHY_EEXIST) {
        *outcome = STORE_EXISTS;
        rc = PHY_EEXIST; /* roll the whole batch back */
    }
out:
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc == PHY_EEXIST ? 0 : rc;
}

/* ---- failure throttles (claims, logins) ----
 * A table of failures keyed by (tenant, user): ids for claims, names for logins
 * (which also throttle guesses at names that do not exist). An attempt counts as a
 * failure from its start until it is forgiven, so concurrent guesses cannot
 * overshoot the limits. */

struct throttle {
    const char *count_sql;   /* ?1 tenant, ?2 user, ?3 since: pair count, tenant count */
    const char *insert_sql;  /* ?1 tenant, ?2 user, ?3 now */
    const char *forgive_sql; /* ?1 the attempt's row ID */
};

/* The key of an attempt: names when tenant is non-NULL, else the ids. */
struct throttle_key {
    int64_t tenant_id, user_id;
    const char *tenant, *user;
};

static const struct throttle CLAIM_THROTTLE = {
    .count_sql = "SELECT (SELECT count(*) FROM claim_failures WHERE tenant_id = ?1 AND"
                 " user_id = ?2 AND at_ms >= ?3), (SELECT count(*) FROM claim_failures"
                 " WHERE tenant_id = ?1 AND at_ms >= ?3)",
    .insert_sql = "INSERT INTO claim_failures(tenant_id, user_id, at_ms) VALUES (?1, ?2, ?3)"
                  " RETURNING rowid",
    .forgive_sql = "DELETE FROM claim_failures WHERE rowid = ?1",
};

/* The tenant's count leaves out names that are no user of it: guesses at made-up
 * names lock no real user out (they still count for their own name, so that a
 * name's lock-out does not reveal whether it exists, and per client address). */
static const struct throttle LOGIN_THROTTLE = {
    .count_sql = "SELECT (SELECT count(*) FROM login_failures WHERE tenant = ?1 AND"
                 " \"user\" = ?2 AND at_ms >= ?3), (SELECT count(*) FROM login_failures f"
                 " WHERE f.tenant = ?1 AND f.at_ms >= ?3 AND EXISTS (SELECT 1 FROM users u"
                 " JOIN tenants t ON t.id = u.tenant_id WHERE t.name = f.tenant AND"
                 " u.name = f.\"user\"))",
    .insert_sql = "INSERT INTO login_failures(tenant, \"user\", at_ms) VALUES (?1, ?2, ?3)"
                  " RETURNING id",
    .forgive_sql = "DELETE FROM login_failures WHERE id = ?1",
};

/* Prepares one of a throttle's statements for key k and the instant t (?3). */
static int throttle_prep(struct store *s, struct db_stmt **st, const char *sql,
                         const struct throttle_key *k, int64_t t)
{
    if (k->tenant)
        return q_prep(s, st, sql, "tti", k->tenant, k->user, t);
    return q_prep(s, st, sql, "iii", k->tenant_id, k->user_id, t);
}

static int throttle_begin(struct store *s, const struct throttle *th, const struct throttle_key *k,
                          int64_t now_ms, int64_t since_ms, int user_limit, int tenant_limit,
                          int *allowed, int64_t *attempt_id)
{
    struct db_stmt *st = NULL;
    int64_t u, t;
    int rc;
    TX_BEGIN(s, 1)
    *allowed = 0; /* again on a retry */
    if ((rc = throttle_prep(s, &st, th->count_sql, k, since_ms)))
        goto out;
    if (db_step(st) != DB_ROW) {
        rc = PHY_EIO;
        goto out;
    }
    u = db_int(st, 0);
    t = db_int(st, 1);
    db_finish(st);
    st = NULL;
    if (!rule_throttle_allows(u, t, user_limit, tenant_limit))
        goto out;
    if ((rc = throttle_prep(s, &st, th->insert_sql, k, now_ms)))
        goto out;
    if ((rc = db_step(st)) != DB_ROW) {
        rc = rc < 0 ? rc : PHY_EIO;
        goto out;
    }
    *attempt_id = db_int(st, 0);
    *allowed = 1;
    rc = 0;
out:
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int throttle_forgive(struct store *s, const struct throttle *th, int64_t attempt_id)
{
    int rc;
    if (!s)
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    rc = q_exec(s, NULL, th->forgive_sql, "i", attempt_id);
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int sq_claim_attempt_begin(struct store *s, int64_t tenant_id, int64_t user_id,
                                  int64_t now_ms, int64_t since_ms, int user_limit,
                                  int tenant_limit, int *allowed, int64_t *attempt_id)
{
    struct throttle_key k = {.tenant_id = tenant_id, .user_id = user_id};
    if (!s || !allowed || !attempt_id)
        return PHY_EINVAL;
    return throttle_begin(s, &CLAIM_THROTTLE, &k, now_ms, since_ms, user_limit, tenant_limit,
                          allowed, attempt_id);
}

static int sq_claim_attempt_forgive(struct store *s, int64_t attempt_id)
{
    return throttle_forgive(s, &CLAIM_THROTTLE, attempt_id);
}

static int sq_login_attempt_begin(struct store *s, const char *tenant, const char *user,
                                  int64_t now_ms, int64_t since_ms, int user_limit,
                                  int tenant_limit, int *allowed, int64_t *attempt_id)
{
    struct throttle_key k = {.tenant = tenant, .user = user};
    if (allowed)
        *allowed = 0;
    if (!s || !allowed || !attempt_id || !store_str_ok(tenant, STORE_NAME_MAX) ||
        !store_str_ok(user, STORE_NAME_MAX))
        return PHY_EINVAL;
    return throttle_begin(s, &LOGIN_THROTTLE, &k, now_ms, since_ms, user_limit, tenant_limit,
                          allowed, attempt_id);
}

static int sq_login_attempt_forgive(struct store *s, int64_t attempt_id)
{
    return throttle_forgive(s, &LOGIN_THROTTLE, attempt_id);
}

static int sq_login_failures_count(struct store *s, const char *tenant, const char *user,
                                   int64_t since_ms, int64_t *n)
{
    int rc;
    if (!s || !n || !store_str_ok(tenant, STORE_NAME_MAX) || !store_str_ok(user, STORE_NAME_MAX))
        return PHY_EINVAL;
    *n = 0;
    TX_BEGIN(s, 0)
    rc = q_int(s, n,
               "SELECT count(*) FROM login_failures WHERE tenant = ? AND \"user\" = ? AND at_ms >= ?",
               "tti", tenant, user, since_ms);
    rc = tx_end(s, rc < 0 ? rc : 0);
    TX_RETRY(rc);
    return rc;
}

/* sweep: a peer region's issuance whose redelivery ended (?1: grace end, ?2: max
 * age, ?3: now). */
#define REMOTE_ENDED                                                                               \
    " region IS NOT NULL AND ((delivered_ms IS NOT NULL AND delivered_ms <= ?1) OR"                \
    " (delivered_ms IS NULL AND ?2 > 0 AND created_ms <= ?3 - ?2))"

/* Inside sweep's transaction: every such issuance loses its body and its device ID
 * (device_ref keeps phy_ref of it); *n counts them. */
static int remote_ended_purge(struct store *s, const struct store_prov_params *p, int *n)
{
    struct ended {
        char serial[PHY_SERIAL_MAX + 1];
        char ref[PHY_HASH_HEX_LEN + 1];
    } *v = NULL;
    struct db_stmt *st = NULL;
    size_t count = 0, cap = 0;
    int changes = 0, rc;
    int64_t grace_end = p->now_ms - p->grace_ms;
    *n = 0;
    rc = q_prep(s, &st, "SELECT serial, device_id FROM issuances WHERE device_id <> '' AND"
                        REMOTE_ENDED,
                "iii", grace_end, p->remote_max_age_ms, p->now_ms);
    if (rc)
        return rc;
    while ((rc = db_step(st)) == DB_ROW) {
        char id[PHY_DEVICE_ID_LEN + 1];
        if ((rc = grow(&v, &cap, count, sizeof *v, 16)))
            goto out;
        if ((rc = col_copy(st, 0, v[count].serial, sizeof v[count].serial)) ||
            (rc = col_copy(st, 1, id, sizeof id)) || (rc = device_ref(id, v[count].ref)))
            goto out;
        count++;
    }
    if (rc != DB_DONE)
        goto out;
    db_finish(st);
    st = NULL;
    rc = 0;
    for (size_t i = 0; i < count && rc == 0; i++)
        rc = q_exec(s, NULL,
                    "UPDATE issuances SET sealed = NULL, device_id = '', device_ref = ?2"
                    " WHERE serial = ?1",
                    "tt", v[i].serial, v[i].ref);
    if (rc == 0)
        rc = q_exec(s, &changes,
                    "UPDATE issuances SET sealed = NULL WHERE sealed IS NOT NULL AND"
                    " device_id = '' AND" REMOTE_ENDED,
                    "iii", grace_end, p->remote_max_age_ms, p->now_ms);
    if (rc == 0)
        *n = (int)count + changes;
out:
    db_finish(st);
    free(v);
    return rc < 0 ? rc : 0;
}

static int sq_sweep(struct store *s, const struct store_prov_params *p, int64_t keep_failures_ms)
{
    int purged = 0, remote_purged = 0, rc;
    if (!s || !store_params_ok(p) || keep_failures_ms < 0)
        return PHY_EINVAL;
    soft_sync(s);
    TX_BEGIN(s, 1)
    /* Times from the future (a clock stepped back, another node's clock ahead) are
     * clamped to now, so that no lapse is postponed and no lock-out outlasts its
     * window by the size of the step. */
    static const char *const clamp[] = {
        "UPDATE registrations SET last_active_ms = ?1 WHERE last_active_ms > ?1",
        "UPDATE login_failures SET at_ms = ?1 WHERE at_ms > ?1",
        "UPDATE claim_failures SET at_ms = ?1 WHERE at_ms > ?1",
        "UPDATE console_sessions SET last_used_ms = ?1 WHERE last_used_ms > ?1",
        "UPDATE console_sessions SET created_ms = ?1 WHERE created_ms > ?1",
        "UPDATE issuances SET delivered_ms = ?1 WHERE delivered_ms > ?1",
    };
    for (size_t i = 0; i < sizeof clamp / sizeof clamp[0]; i++)
        if ((rc = q_exec(s, NULL, clamp[i], "i", p->now_ms)))
            goto out;
    int clamped = 0;
    rc = q_exec(s, &clamped,
                "UPDATE registrations SET code_expires_ms = ?1 WHERE code_expires_ms > ?1", "i",
                p->now_ms + p->code_ttl_ms);
    if (rc == 0 && clamped > 0)
        rc = reg_changed(s, NULL);
    if (rc)
        goto out;
    rc = q_exec(s, NULL, "DELETE FROM registrations WHERE last_active_ms <= ?", "i", rule_live_after(p));
    if (rc)
        goto out;
    /* Sealed bodies whose grace ended, or whose device is past delivery (its first
     * hub session, revoked, deleted): poll would never hand them out again. */
    rc = q_exec(s, &purged,
                "UPDATE issuances SET sealed = NULL WHERE sealed IS NOT NULL AND region IS NULL"
                " AND ((delivered_ms IS NOT NULL AND delivered_ms <= ?) OR NOT EXISTS"
                " (SELECT 1 FROM devices d WHERE d.device_id = issuances.device_id AND"
                "  d.state IN (" SQL_PENDING ", " SQL_PROVISIONED ")))",
                "i", p->now_ms - p->grace_ms);
    if (rc)
        goto out;
    /* A peer region's issuance (never a device row here) loses its body and its
     * device ID once grace after delivery ended, or when it was never delivered
     * within remote_max_age_ms: only the spent serial remains (its region can still
     * re-arm it with a reset). */
    rc = remote_ended_purge(s, p, &remote_purged);
    if (rc)
        goto out;
    purged += remote_purged;
    rc = q_exec(s, NULL,
                "UPDATE registrations SET code = NULL, code_expires_ms = 0"
                " WHERE code IS NOT NULL AND code_expires_ms <= ?",
                "i", p->now_ms);
    if (rc)
        goto out;
    rc = q_exec(s, NULL, "DELETE FROM claim_failures WHERE at_ms < ?", "i",
                p->now_ms - keep_failures_ms);
    if (rc == 0)
        rc = q_exec(s, NULL, "DELETE FROM login_failures WHERE at_ms < ?", "i",
                    p->now_ms - keep_failures_ms);
out:
    rc = tx_end_scrub(s, rc, purged);
    TX_RETRY(rc);
    if (rc == 0 && s->e->compact)
        s->e->compact(s->db);
    return rc;
}

static int sq_reg_live_count(struct store *s, const struct store_prov_params *p, int64_t *n)
{
    int rc;
    if (!s || !n || !store_params_ok(p))
        return PHY_EINVAL;
    *n = 0;
    soft_sync(s);
    TX_BEGIN(s, 0)
    rc = q_int(s, n, "SELECT count(*) FROM registrations WHERE last_active_ms > ?", "i",
               rule_live_after(p));
    rc = tx_end(s, rc < 0 ? rc : 0);
    TX_RETRY(rc);
    return rc;
}

/* ---- devices ---- */

/* Columns of a device row (alias d), read by dev_read from column 0. */
#define DEV_COLS                                                                                   \
    "d.device_id, d.serial, d.name, d.state, d.tags_json, d.created_ms, d.online,"                 \
    " d.last_seen_ms, d.connected_ms, d.disconnected_ms, d.last_status_json, d.last_status_ms"
#define DEV_NCOLS 12
#define DEV_TAGS_COL 4
/* The twin of d: a device without a twins row has the empty twin at versions 0. */
#define TWIN_COLS                                                                                  \
    "COALESCE(t.desired, '{}'), COALESCE(t.desired_version, 0),"                                   \
    " COALESCE(t.reported, '{}'), COALESCE(t.reported_version, 0)"
#define TWIN_FROM " FROM devices d LEFT JOIN twins t ON t.device_id = d.device_id"
/* d's tag K equals V, K and V being SQL parameters (phy_tag: engine.h). */
#define TAG_MATCH(k, v) "phy_tag(d.tags_json, " k ") = " v

/* A device in the middle of a claim through eu is not shown until eu accepted it. */
#define DEV_VISIBLE " d.state <> " SQL_CLAIMING

/* devices_list: tenant ?1, cursor ?2, tag key ?3 (NULL: any) and value ?4. */
#define LIST_WHERE                                                                                 \
    " WHERE d.tenant_id = ?1 AND d.device_id > ?2 AND" DEV_VISIBLE " AND"                          \
    " (?3 IS NULL OR " TAG_MATCH("?3", "?4") ")"

/* Reads DEV_COLS from column 0 into a zeroed *d (its strings are freed by the
 * caller with store_device_clear on failure too). */
static int dev_read(struct db_stmt *st, struct store_device *d)
{
    int rc;
    if ((rc = col_copy(st, 0, d->device_id, sizeof d->device_id)) ||
        (rc = col_copy(st, 1, d->serial, sizeof d->serial)) ||
        (rc = col_copy(st, 2, d->name, sizeof d->name)) ||
        (rc = col_copy(st, 3, d->state, sizeof d->state)))
        return rc;
    d->created_ms = db_int(st, 5);
    d->online = db_int(st, 6) != 0;
    d->last_seen_ms = db_int(st, 7);
    d->connected_ms = db_int(st, 8);
    d->disconnected_ms = db_int(st, 9);
    d->last_status_ms = db_int(st, 11);
    d->tags_json = col_dup(st, DEV_TAGS_COL);
    if (!d->tags_json)
        return PHY_ENOMEM;
    if (!db_null(st, 10)) {
        d->last_status_json = col_dup(st, 10);
        if (!d->last_status_json)
            return PHY_ENOMEM;
    }
    return 0;
}

/* Reads TWIN_COLS from column col and the tags from tags_col into a zeroed *t. */
static int twin_read(struct db_stmt *st, int col, int tags_col, struct store_twin *t)
{
    t->desired = col_dup(st, col);
    t->desired_version = db_int(st, col + 1);
    t->reported = col_dup(st, col + 2);
    t->reported_version = db_int(st, col + 3);
    t->tags = col_dup(st, tags_col);
    return t->desired && t->reported && t->tags ? 0 : PHY_ENOMEM;
}

static int sq_devices_list(struct store *s, int64_t tenant_id, const struct store_device_filter *f,
                           const char *after, int limit, struct store_device **out, size_t *n)
{
    /* Two statements so that a presence filter uses devices_tenant_online. */
    static const char any_sql[] =
        "SELECT " DEV_COLS " FROM devices d" LIST_WHERE " ORDER BY d.device_id LIMIT ?5";
    static const char presence_sql[] = "SELECT " DEV_COLS " FROM devices d" LIST_WHERE
                                       " AND d.online = ?6 ORDER BY d.device_id LIMIT ?5";
    struct store_device *v = NULL;
    struct db_stmt *st = NULL;
    const char *key = NULL, *value = NULL;
    size_t count = 0, cap = 0;
    int presence = -1, rc;

    if (out)
        *out = NULL;
    if (n)
        *n = 0;
    if (!s || !out || !n || limit <= 0 ||
        (after && strnlen(after, PHY_DEVICE_ID_LEN + 1) > PHY_DEVICE_ID_LEN))
        return PHY_EINVAL;
    if (f) {
        presence = f->presence;
        key = f->tag_key;
        value = f->tag_value;
        if (presence < -1 || presence > 1)
            return PHY_EINVAL;
        if (key &&
            (!store_tag_key_ok(key) || !value || strnlen(value, STORE_TAG_VALUE_MAX + 1) > STORE_TAG_VALUE_MAX))
            return PHY_EINVAL;
        if (!key)
            value = NULL;
    }
    if (limit > STORE_LIST_MAX)
        limit = STORE_LIST_MAX;
    TX_BEGIN(s, 0)
    if (presence < 0)
        rc = q_prep(s, &st, any_sql, "ittti", tenant_id, after ? after : "", key, value,
                    (int64_t)limit);
    else
        rc = q_prep(s, &st, presence_sql, "itttii", tenant_id, after ? after : "", key, value,
                    (int64_t)limit, (int64_t)presence);
    if (rc)
        goto out;
    while ((rc = db_step(st)) == DB_ROW) {
        if ((rc = grow(&v, &cap, count, sizeof *v, 16)))
            goto out;
        memset(&v[count], 0, sizeof v[count]);
        count++;
        if ((rc = dev_read(st, &v[count - 1])))
            goto out;
    }
    rc = rc == DB_DONE ? 0 : rc < 0 ? rc : PHY_EIO;
out:
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    if (rc) {
        store_devices_free(v, count);
        v = NULL;
        count = cap = 0;
        TX_RETRY(rc);
        return rc;
    }
    *out = v;
    *n = count;
    return 0;
}

static int sq_device_get(struct store *s, int64_t tenant_id, const char *device_id,
                         struct store_device *d, struct store_twin *t, int *outcome)
{
    struct db_stmt *st = NULL;
    int rc;
    if (d)
        memset(d, 0, sizeof *d);
    if (t)
        memset(t, 0, sizeof *t);
    if (!s || !d || !outcome || !store_device_id_ok(device_id))
        return PHY_EINVAL;
    TX_BEGIN(s, 0)
    rc = q_prep(s, &st,
                "SELECT " DEV_COLS ", " TWIN_COLS TWIN_FROM
                " WHERE d.device_id = ? AND d.tenant_id = ? AND" DEV_VISIBLE,
                "ti", device_id, tenant_id);
    if (rc)
        goto out;
    rc = step_one(st, outcome, STORE_NOT_FOUND);
    if (rc != DB_ROW)
        goto out;
    rc = dev_read(st, d);
    if (rc == 0 && t)
        rc = twin_read(st, DEV_NCOLS, DEV_TAGS_COL, t);
    if (rc == 0)
        *outcome = STORE_OK;
out:
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    if (rc) {
        store_device_clear(d);
        memset(d, 0, sizeof *d);
        store_twin_free(t);
    }
    TX_RETRY(rc);
    return rc;
}

static int sq_tags_put(struct store *s, int64_t tenant_id, const char *device_id,
                       const char *tags_json, int *outcome)
{
    int changes = 0, rc;
    if (!s || !outcome || !store_device_id_ok(device_id))
        return PHY_EINVAL;
    if ((rc = store_json_object_parse(tags_json, STORE_TAGS_JSON_MAX, NULL)))
        return rc;
    TX_BEGIN(s, 1)
    rc = q_exec(s, &changes,
                "UPDATE devices SET tags_json = ? WHERE device_id = ? AND tenant_id = ? AND"
                " state <> " SQL_CLAIMING,
                "tti", tags_json, device_id, tenant_id);
    if (rc == 0)
        *outcome = changes > 0 ? STORE_OK : STORE_NOT_FOUND;
    if (rc == 0 && changes > 0)
        rc = announce_device(s, tenant_id, device_id, "tags");
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int sq_device_rename(struct store *s, int64_t tenant_id, const char *device_id,
                            const char *name, int *outcome)
{
    int changes = 0, rc;
    if (!s || !outcome || !store_device_id_ok(device_id) || !store_name_ok(name))
        return PHY_EINVAL;
    if (name && !name[0])
        name = NULL;
    TX_BEGIN(s, 1)
    /* A revoked device keeps its row for history and may be renamed; a device in
     * the middle of a claim through eu is not there yet. */
    rc = q_exec(s, &changes,
                "UPDATE devices SET name = ? WHERE device_id = ? AND tenant_id = ? AND"
                " state <> " SQL_CLAIMING,
                "tti", name, device_id, tenant_id);
    if (rc == 0)
        *outcome = changes > 0 ? STORE_OK : STORE_NOT_FOUND;
    if (rc == 0 && changes > 0)
        rc = announce_device(s, tenant_id, device_id, "name");
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

/* ---- twins ---- */

enum twin_section { SECTION_DESIRED, SECTION_REPORTED };

static const char *const SECTION_GET_SQL[] = {
    [SECTION_DESIRED] = "SELECT desired, desired_version FROM twins WHERE device_id = ?",
    [SECTION_REPORTED] = "SELECT reported, reported_version FROM twins WHERE device_id = ?",
};

static const char *const SECTION_PUT_SQL[] = {
    /* desired_patch: the patch that made this version, for other nodes (announce.h) */
    [SECTION_DESIRED] = "INSERT INTO twins(device_id, desired, desired_version, desired_patch)"
                        " VALUES (?, ?, ?, ?)"
                        " ON CONFLICT(device_id) DO UPDATE SET desired = excluded.desired,"
                        " desired_version = excluded.desired_version,"
                        " desired_patch = excluded.desired_patch",
    [SECTION_REPORTED] = "INSERT INTO twins(device_id, reported, reported_version) VALUES (?, ?, ?)"
                         " ON CONFLICT(device_id) DO UPDATE SET reported = excluded.reported,"
                         " reported_version = excluded.reported_version",
};

/* The statements that read and write one section (engines keep them prepared, so
 * a fleet-wide patch does not prepare them again for every device). */
struct section_q {
    enum twin_section sec;
    char *patch_text; /* desired: the patch as stored with the section (compact), made
                       * once per operation by section_apply when NULL; freed by the
                       * caller */
};

/* The last merge of a fleet-wide patch, reused for the next device whose section
 * has the same text: devices of a fleet usually share their configuration, and
 * stored sections are canonical (phy_twin_dump), so equal text is an equal document. */
struct merge_memo {
    char *in;  /* section text before the patch */
    char *out; /* after; NULL when unchanged or too big */
    int changed, too_big;
};

static void merge_memo_clear(struct merge_memo *m)
{
    free(m->in);
    free(m->out);
    memset(m, 0, sizeof *m);
}

/* Applies patch to one device's section inside the caller's transaction (the
 * device is known to exist). if_match as for desired_patch; memo may be NULL.
 * Sets *version (the current or new version), *changed and *outcome (OK,
 * PRECONDITION or TOO_BIG, the section unchanged in the last two). */
static int section_apply(struct store *s, struct section_q *q, const char *device_id,
                         const json_t *patch, int64_t if_match, struct merge_memo *memo,
                         int64_t *version, int *changed, int *outcome)
{
    struct db_stmt *get = NULL;
    char *text = NULL, *merged = NULL;
    const char *result;
    int64_t ver = 0;
    int ch = 0, big = 0, rc;

    *changed = 0;
    rc = q_prep(s, &get, SECTION_GET_SQL[q->sec], "t", device_id);
    if (rc)
        return rc;
    rc = db_step(get);
    if (rc == DB_ROW) {
        text = col_dup(get, 0);
        ver = db_int(get, 1);
    } else if (rc == DB_DONE) {
        text = strdup("{}");
    } else {
        goto out;
    }
    db_finish(get);
    get = NULL;
    if (!text) {
        rc = PHY_ENOMEM;
        goto out;
    }
    if (ver < 0 || ver == INT64_MAX) {
        rc = PHY_EIO;
        goto out;
    }
    *version = ver;
    rc = 0;
    if (if_match >= 0 && if_match != ver) {
        *outcome = STORE_PRECONDITION;
        goto out;
    }
    if (memo && memo->in && strcmp(memo->in, text) == 0) {
        ch = memo->changed;
        big = memo->too_big;
        result = memo->out;
    } else {
        if ((rc = rule_section_merge(text, patch, &merged, &ch, &big)))
            goto out;
        result = merged;
        if (memo) {
            merge_memo_clear(memo);
            memo->in = text;
            memo->out = merged;
            memo->changed = ch;
            memo->too_big = big;
            text = merged = NULL;
        }
    }
    if (big) {
        *outcome = STORE_TOO_BIG;
        goto out;
    }
    if (ch && q->sec == SECTION_DESIRED) {
        if (!q->patch_text && !(q->patch_text = json_dumps(patch, JSON_COMPACT))) {
            rc = PHY_ENOMEM;
            goto out;
        }
        rc = q_exec(s, NULL, SECTION_PUT_SQL[q->sec], "ttit", device_id, result, ver + 1,
                    q->patch_text);
        if (rc)
            goto out;
    } else if (ch) {
        rc = q_exec(s, NULL, SECTION_PUT_SQL[q->sec], "tti", device_id, result, ver + 1);
        if (rc)
            goto out;
    }
    if (ch) {
        *version = ver + 1;
        *changed = 1;
    }
    *outcome = STORE_OK;
out:
    db_finish(get);
    free(text);
    free(merged);
    return rc;
}

/* What device_section_patch's check gets: the device (and its tenant, for desired). */
struct patch_target {
    int64_t tenant_id, now_ms;
    const char *device_id;
};

/* One device's section patch: checks and parses the patch, then in one write
 * transaction runs check (1: the device may be patched, 0: NOT_FOUND, < 0: failure)
 * and applies the merge with section_apply. */
static int device_section_patch(struct store *s, const char *device_id, const char *patch_json,
                                enum twin_section sec, int64_t if_match,
                                int (*check)(struct store *s, const void *ctx),
                                const void *ctx, int64_t *version, int *changed, int *outcome)
{
    struct section_q q = {0};
    json_t *patch = NULL;
    int rc;
    if (version)
        *version = 0;
    if (changed)
        *changed = 0;
    if (!s || !version || !changed || !outcome || !store_device_id_ok(device_id))
        return PHY_EINVAL;
    rc = store_json_object_parse(patch_json, STORE_PATCH_JSON_MAX, &patch);
    if (rc == PHY_ETOOBIG) {
        *outcome = STORE_TOO_BIG;
        return 0;
    }
    if (rc)
        return rc;
    TX_BEGIN_OR(s, 1, goto out_patch)
    rc = check(s, ctx);
    if (rc < 0)
        goto out;
    if (rc == 0) {
        *outcome = STORE_NOT_FOUND;
        goto out;
    }
    q.sec = sec;
    rc = section_apply(s, &q, device_id, patch, if_match, NULL, version, changed, outcome);
    free(q.patch_text);
    q.patch_text = NULL;
    if (rc == 0 && sec == SECTION_DESIRED && *changed) {
        struct store_announce a = {.kind = ANNOUNCE_DESIRED, .n = *version,
                                   .tenant_id = ((const struct patch_target *)ctx)->tenant_id};
        snprintf(a.device_id, sizeof a.device_id, "%s", device_id);
        rc = announce(s, &a);
    }
out:
    rc = tx_end(s, rc);
    if (rc) {
        *version = 0;
        *changed = 0;
    }
    TX_RETRY(rc);
out_patch:
    json_decref(patch);
    return rc;
}

/* desired: the tenant's device, not revoked. */
static int desired_check(struct store *s, const void *ctx)
{
    const struct patch_target *t = ctx;
    return q_int(s, NULL,
                 "SELECT 1 FROM devices WHERE device_id = ? AND tenant_id = ? AND state <> " SQL_REVOKED,
                 "ti", t->device_id, t->tenant_id);
}

/* reported: the device is not revoked; its last_seen moves on. */
static int reported_check(struct store *s, const void *ctx)
{
    const struct patch_target *t = ctx;
    int changes = 0;
    int rc = q_exec(s, &changes,
                    "UPDATE devices SET last_seen_ms = CASE WHEN last_seen_ms > ?1 THEN"
                    " last_seen_ms ELSE ?1 END WHERE device_id = ?2 AND state <> " SQL_REVOKED,
                    "it", t->now_ms, t->device_id);
    return rc < 0 ? rc : changes > 0;
}

static int sq_desired_patch(struct store *s, int64_t tenant_id, const char *device_id,
                            const char *patch_json, int64_t if_match, int64_t *version,
                            int *changed, int *outcome)
{
    struct patch_target t = {tenant_id, 0, device_id};
    return device_section_patch(s, device_id, patch_json, SECTION_DESIRED, if_match,
                                desired_check, &t, version, changed, outcome);
}


/* A fleet patch handles the matching devices by the text of their desired section:
 * devices of a fleet usually share their configuration, so the merge runs once per
 * distinct text and one statement writes every device that has it (stored sections
 * are canonical, phy_twin_dump, so equal text is an equal document). With more than
 * FLEET_GROUPS_MAX distinct texts, each device is written on its own. */
#define FLEET_GROUPS_MAX 64

/* tenant ?T, tag key ?K, value ?V (numbers given by the statement). */
#define FLEET_MATCH(t, k, v)                                                                       \
    " d.tenant_id = " t " AND d.state <> " SQL_REVOKED " AND " TAG_MATCH(k, v)

struct fleet_group {
    char *in; /* the section text; NULL: the device has no twins row yet ("{}") */
    char *out;
    int changed, too_big;
};

static int fleet_group_of(struct fleet_group *g, size_t *ng, const char *text)
{
    for (size_t i = 0; i < *ng; i++)
        if ((!text && !g[i].in) || (text && g[i].in && strcmp(g[i].in, text) == 0))
            return (int)i;
    if (*ng == FLEET_GROUPS_MAX)
        return -1;
    memset(&g[*ng], 0, sizeof g[*ng]);
    if (text && !(g[*ng].in = strdup(text)))
        return PHY_ENOMEM;
    return (int)(*ng)++;
}

/* Appends the (device_id, version) rows of st to the pushes. */
static int fleet_collect(struct db_stmt *st, struct store_push **v, size_t *n, size_t *cap)
{
    int rc;
    while ((rc = db_step(st)) == DB_ROW) {
        if (*n == *cap) {
            size_t ncap = *cap ? *cap * 2 : 64;
            struct store_push *nv = realloc(*v, ncap * sizeof *nv);
            if (!nv)
                return PHY_ENOMEM;
            *v = nv;
            *cap = ncap;
        }
        memset(&(*v)[*n], 0, sizeof **v);
        if ((rc = col_copy(st, 0, (*v)[*n].device_id, sizeof (*v)[*n].device_id)))
            return rc;
        (*v)[*n].version = db_int(st, 1);
        ++*n;
    }
    return rc == DB_DONE ? 0 : rc < 0 ? rc : PHY_EIO;
}

static int push_cmp(const void *a, const void *b)
{
    return strcmp(((const struct store_push *)a)->device_id,
                  ((const struct store_push *)b)->device_id);
}

/* Inside the caller's transaction, with the groups of the count matching devices
 * known: merges once per group and writes each changed group in one statement. */
static int fleet_write_groups(struct store *s, struct fleet_group *g, size_t ng,
                              const json_t *patch, int64_t tenant_id, const char *key,
                              const char *value, struct store_push **v, size_t *pushed,
                              size_t *cap, int *outcome)
{
    int rc;
    for (size_t i = 0; i < ng; i++) {
        if ((rc = rule_section_merge(g[i].in ? g[i].in : "{}", patch, &g[i].out, &g[i].changed,
                                     &g[i].too_big)))
            return rc;
        if (g[i].too_big) { /* one too big aborts the whole patch */
            *outcome = STORE_TOO_BIG;
            return TX_ABORT;
        }
    }
    char *ptext = json_dumps(patch, JSON_COMPACT); /* desired_patch, see SECTION_PUT_SQL */
    if (!ptext)
        return PHY_ENOMEM;
    for (size_t i = 0; i < ng; i++) {
        struct db_stmt *st = NULL;
        if (!g[i].changed)
            continue;
        if (g[i].in)
            rc = q_prep(s, &st,
                        "UPDATE twins SET desired = ?1, desired_version = desired_version + 1,"
                        " desired_patch = ?6"
                        " WHERE desired = ?2 AND device_id IN (SELECT d.device_id FROM devices d"
                        " WHERE" FLEET_MATCH("?3", "?4", "?5") ")"
                        " RETURNING device_id, desired_version",
                        "ttittt", g[i].out, g[i].in, tenant_id, key, value, ptext);
        else
            rc = q_prep(s, &st,
                        "INSERT INTO twins(device_id, desired, desired_version, desired_patch)"
                        " SELECT d.device_id, ?1, 1, ?5 FROM devices d WHERE" FLEET_MATCH("?2", "?3",
                                                                                           "?4")
                        " AND NOT EXISTS (SELECT 1 FROM twins t WHERE t.device_id = d.device_id)"
                        " RETURNING device_id, desired_version",
                        "tittt", g[i].out, tenant_id, key, value, ptext);
        if (rc == 0)
            rc = fleet_collect(st, v, pushed, cap);
        db_finish(st);
        if (rc) {
            free(ptext);
            return rc;
        }
    }
    free(ptext);
    *outcome = STORE_OK;
    return 0;
}

static int sq_desired_patch_tag(struct store *s, int64_t tenant_id, const char *tag_key,
                                const char *tag_value, const char *patch_json, size_t *matched,
                                struct store_push **out, size_t *n, int *outcome)
{
    struct fleet_group groups[FLEET_GROUPS_MAX];
    struct section_q q = {SECTION_DESIRED};
    struct merge_memo memo = {0};
    struct store_push *v = NULL;
    struct db_stmt *st = NULL;
    json_t *patch = NULL;
    size_t count = 0, cap = 0, pushed = 0, ng = 0, ids_cap = 0;
    char (*ids)[PHY_DEVICE_ID_LEN + 1] = NULL;
    int rc, grouped = 1;

    if (matched)
        *matched = 0;
    if (out)
        *out = NULL;
    if (n)
        *n = 0;
    if (!s || !matched || !out || !n || !outcome || !store_tag_key_ok(tag_key) ||
        !store_tag_value_ok(tag_value))
        return PHY_EINVAL;
    rc = store_json_object_parse(patch_json, STORE_PATCH_JSON_MAX, &patch);
    if (rc == PHY_ETOOBIG) {
        *outcome = STORE_TOO_BIG;
        return 0;
    }
    if (rc)
        return rc;
    TX_BEGIN_OR(s, 1, goto out_patch)
    count = pushed = ng = 0; /* again on a retry */
    grouped = 1;
    /* The matching devices and their sections first: writes follow when no read is
     * open. */
    rc = q_prep(s, &st,
                "SELECT d.device_id, t.desired FROM devices d"
                " LEFT JOIN twins t ON t.device_id = d.device_id"
                " WHERE" FLEET_MATCH("?1", "?2", "?3") " ORDER BY d.device_id",
                "itt", tenant_id, tag_key, tag_value);
    if (rc)
        goto out;
    while ((rc = db_step(st)) == DB_ROW) {
        if (count == ids_cap) {
            size_t ncap = ids_cap ? ids_cap * 2 : 64;
            void *nv = realloc(ids, ncap * sizeof *ids);
            if (!nv) {
                rc = PHY_ENOMEM;
                goto out;
            }
            ids = nv;
            ids_cap = ncap;
        }
        if ((rc = col_copy(st, 0, ids[count], sizeof ids[count])))
            goto out;
        count++;
        if (grouped) {
            int gi = fleet_group_of(groups, &ng, db_text(st, 1));
            if (gi == PHY_ENOMEM) {
                rc = gi;
                goto out;
            }
            grouped = gi >= 0;
        }
    }
    if (rc != DB_DONE) {
        rc = rc < 0 ? rc : PHY_EIO;
        goto out;
    }
    db_finish(st);
    st = NULL;
    if (grouped) {
        rc = fleet_write_groups(s, groups, ng, patch, tenant_id, tag_key, tag_value, &v, &pushed,
                                &cap, outcome);
        if (rc == 0 && pushed > 1)
            qsort(v, pushed, sizeof *v, push_cmp);
        if (rc == 0 && pushed > 0)
            rc = announce(s, &(struct store_announce){.kind = ANNOUNCE_FLEET, .tenant_id = tenant_id});
        goto out;
    }
    /* Many distinct sections: each device gets its own merge and write. */
    for (size_t i = 0; i < count; i++) {
        int64_t ver = 0;
        int ch = 0, res = STORE_OK;
        rc = section_apply(s, &q, ids[i], patch, -1, &memo, &ver, &ch, &res);
        if (rc)
            goto out;
        if (res == STORE_TOO_BIG) {
            *outcome = STORE_TOO_BIG;
            rc = TX_ABORT;
            goto out;
        }
        if (!ch)
            continue;
        if ((rc = grow(&v, &cap, pushed, sizeof *v, 64)))
            goto out;
        memset(&v[pushed], 0, sizeof v[pushed]);
        memcpy(v[pushed].device_id, ids[i], sizeof ids[i]);
        v[pushed].version = ver;
        pushed++;
    }
    if (pushed > 0 &&
        (rc = announce(s, &(struct store_announce){.kind = ANNOUNCE_FLEET, .tenant_id = tenant_id})))
        goto out;
    *outcome = STORE_OK;
out:
    db_finish(st);
    st = NULL;
    free(q.patch_text); /* (a retry makes it again) */
    q.patch_text = NULL;
    merge_memo_clear(&memo);
    for (size_t i = 0; i < ng; i++) {
        free(groups[i].in);
        free(groups[i].out);
    }
    ng = 0;
    rc = tx_end(s, rc);
    if (rc == TX_ABORT) {
        rc = 0;
        pushed = 0;
    }
    if (rc) {
        count = pushed = 0;
        TX_RETRY(rc);
    }
    if (rc == 0) {
        *matched = count;
        if (pushed > 0) {
            *out = v;
            *n = pushed;
            v = NULL;
        }
    }
    free(v);
    free(ids);
out_patch:
    json_decref(patch);
    return rc;
}

/* ---- revoke, reset, delete ---- */


/* An outbox entry replaces the device's entry of the same kind. */
#define OUTBOX_REPLACE                                                                             \
    " ON CONFLICT(device_id, kind) DO UPDATE SET serial = excluded.serial, attempts = 0,"         \
    " next_ms = excluded.next_ms, created_ms = excluded.created_ms"

/* Queues a call to eu for a device, replacing an entry of the same kind. */
static int outbox_put(struct store *s, const char *device_id, int kind, const char *serial,
                      int64_t next_ms, int64_t now_ms)
{
    return q_exec(s, NULL,
                  "INSERT INTO outbox(device_id, kind, serial, attempts, next_ms, created_ms)"
                  " VALUES (?, ?, ?, 0, ?, ?)" OUTBOX_REPLACE,
                  "titii", device_id, (int64_t)kind, serial, next_ms, now_ms);
}

/* Drops a device's entry of one kind (none: nothing to do). */
static int outbox_drop(struct store *s, const char *device_id, int kind)
{
    return q_exec(s, NULL, "DELETE FROM outbox WHERE device_id = ? AND kind = ?", "ti", device_id,
                  (int64_t)kind);
}

/* A device claimed through eu (remote = 1) tells eu what the action means for its
 * issuance: a reset re-arms the serial there (and needs no purge any more); a
 * revoke or delete before the first session ends redelivery. */
static int device_change_remote(struct store *s, const char *device_id, const char *serial,
                                const char *state, int64_t now_ms, enum device_action act)
{
    struct rule_remote_change c = rule_device_change_remote(act, state, serial);
    int rc = c.drop_purge ? outbox_drop(s, device_id, OUTBOX_PURGE) : 0;
    if (rc == 0 && c.put)
        rc = outbox_put(s, device_id, c.put, serial, now_ms, now_ms);
    return rc;
}

static int device_change(struct store *s, int64_t tenant_id, const char *device_id, int64_t now_ms,
                         enum device_action act, int *outcome)
{
    char serial[PHY_SERIAL_MAX + 1], state[24];
    struct db_stmt *st = NULL;
    int purged = 0, remote = 0, rc;
    if (!s || !outcome || !store_device_id_ok(device_id))
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    purged = remote = 0; /* again on a retry */
    rc = q_prep(s, &st,
                "SELECT serial, state, remote FROM devices WHERE device_id = ? AND tenant_id = ?",
                "ti", device_id, tenant_id);
    if (rc)
        goto out;
    rc = step_one(st, outcome, STORE_NOT_FOUND);
    if (rc != DB_ROW)
        goto out;
    remote = db_int(st, 2) != 0;
    if ((rc = col_copy(st, 0, serial, sizeof serial)) == 0)
        rc = col_copy(st, 1, state, sizeof state);
    db_finish(st);
    st = NULL;
    if (rc)
        goto out;
    if (remote && (rc = device_change_remote(s, device_id, serial, state, now_ms, act)))
        goto out;
    /* Issuances are matched by serial and device: after a reset the serial's new
     * issuance belongs to another device and must not be touched. */
    if (act == DEVICE_DELETE) {
        if ((rc = q_exec(s, NULL, "DELETE FROM twins WHERE device_id = ?", "t", device_id)) ||
            (rc = q_exec(s, &purged, "DELETE FROM issuances WHERE serial = ? AND device_id = ?",
                         "tt", serial, device_id)) ||
            (rc = q_exec(s, NULL, "DELETE FROM devices WHERE device_id = ?", "t", device_id)))
            goto out;
    } else {
        rc = q_exec(s, NULL,
                    "UPDATE devices SET state = " SQL_REVOKED ", secret_hash = '',"
                    " disconnected_ms = CASE WHEN online <> 0 THEN ? ELSE disconnected_ms END,"
                    " online = 0 WHERE device_id = ?",
                    "it", now_ms, device_id);
        if (rc)
            goto out;
        if (act == DEVICE_RESET) {
            /* Re-arm the serial only while this device still holds it; its
             * registrations go too, or they would count against the new one. */
            rc = q_exec(s, &purged, "DELETE FROM issuances WHERE serial = ? AND device_id = ?",
                        "tt", serial, device_id);
            if (rc == 0 && purged > 0)
                rc = q_exec(s, NULL, "DELETE FROM registrations WHERE serial = ?", "t", serial);
            if (rc == 0 && purged > 0)
                rc = reg_changed(s, serial);
        } else {
            rc = q_exec(s, &purged,
                        "UPDATE issuances SET sealed = NULL WHERE serial = ? AND device_id = ?"
                        " AND sealed IS NOT NULL",
                        "tt", serial, device_id);
        }
        if (rc)
            goto out;
    }
    {
        struct store_announce a = {.kind = ANNOUNCE_CLOSE, .tenant_id = tenant_id,
                                   .n = act == DEVICE_DELETE ? PHY_CLOSE_DELETED : PHY_CLOSE_REVOKED};
        snprintf(a.device_id, sizeof a.device_id, "%s", device_id);
        if ((rc = announce(s, &a)))
            goto out;
    }
    *outcome = act == DEVICE_RESET ? rule_reset_outcome(remote, serial, purged > 0) : STORE_OK;
out:
    db_finish(st);
    st = NULL;
    rc = tx_end_scrub(s, rc, purged);
    TX_RETRY(rc);
    return rc;
}

static int sq_device_revoke(struct store *s, int64_t tenant_id, const char *device_id,
                            int64_t now_ms, int *outcome)
{
    return device_change(s, tenant_id, device_id, now_ms, DEVICE_REVOKE, outcome);
}

static int sq_device_reset(struct store *s, int64_t tenant_id, const char *device_id,
                           int64_t now_ms, int *outcome)
{
    return device_change(s, tenant_id, device_id, now_ms, DEVICE_RESET, outcome);
}

/* device_delete has no clock: its outbox entry is due from time 0, i.e. at once. */
static int sq_device_delete(struct store *s, int64_t tenant_id, const char *device_id, int *outcome)
{
    return device_change(s, tenant_id, device_id, 0, DEVICE_DELETE, outcome);
}

static int sq_claim_replay(struct store *s, int64_t tenant_id, int64_t user_id,
                           const char *claim_key, int64_t since_ms, struct store_device *device,
                           int *outcome)
{
    struct db_stmt *st = NULL;
    int rc;
    if (device)
        memset(device, 0, sizeof *device);
    if (!s || !outcome || !device || !claim_key || strlen(claim_key) > STORE_CLAIM_KEY_MAX ||
        user_id <= 0)
        return PHY_EINVAL;
    TX_BEGIN(s, 0)
    *outcome = STORE_NOT_FOUND;
    rc = q_prep(s, &st,
                "SELECT " DEV_COLS " FROM devices d WHERE d.tenant_id = ? AND d.claimed_by = ?"
                " AND d.claim_key = ? AND d.created_ms >= ? AND d.state <> " SQL_REVOKED
                " AND" DEV_VISIBLE " ORDER BY d.created_ms DESC LIMIT 1",
                "iiti", tenant_id, user_id, claim_key, since_ms);
    if (rc)
        goto out;
    rc = db_step(st);
    if (rc == DB_ROW) {
        rc = dev_read(st, device);
        if (rc == 0)
            *outcome = STORE_OK;
    } else {
        rc = rc == DB_DONE ? 0 : rc < 0 ? rc : PHY_EIO;
    }
out:
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    if (rc)
        store_device_clear(device);
    TX_RETRY(rc);
    return rc;
}

/* ---- inter-region, regional side ---- */

static int sq_claim_begin(struct store *s, const struct store_claim_begin *c, int *outcome)
{
    const char *tags;
    int rc;
    if (!s || !c || !outcome || c->now_ms < 0 || c->hold_ms < 0 ||
        c->hold_ms > INT64_MAX - c->now_ms || (c->serial && !store_serial_ok(c->serial)))
        return PHY_EINVAL;
    if ((rc = new_device_check(c->device_id, c->secret_hash, c->name, c->tags_json, &tags)))
        return rc;
    struct claimer by = {.user_id = c->user_id};
    if (store_claim_key(c->serial, c->code, by.key, sizeof by.key))
        by.key[0] = '\0'; /* no key: the claim cannot be replayed */
    TX_BEGIN(s, 1)
    rc = device_insert(s, c->tenant_id, c->device_id, c->secret_hash, c->name, tags,
                       c->serial ? c->serial : "", STATE_CLAIMING, c->now_ms, 1, &by);
    if (rc == PHY_EEXIST) { /* the failed insert was all: roll back (PostgreSQL must) */
        *outcome = STORE_EXISTS;
        rc = TX_ABORT;
        goto out;
    }
    if (rc == 0)
        rc = outbox_put(s, c->device_id, OUTBOX_CANCEL, c->serial ? c->serial : "",
                        c->now_ms + c->hold_ms, c->now_ms);
    if (rc == 0)
        *outcome = STORE_OK;
out:
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int sq_claim_confirm(struct store *s, const char *device_id, const char *serial,
                            struct store_device *device, int *outcome)
{
    struct db_stmt *st = NULL;
    int changes = 0, rc;
    if (device)
        memset(device, 0, sizeof *device);
    if (!s || !outcome || !store_device_id_ok(device_id) || !store_serial_ok(serial))
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    /* A row that moved on meanwhile (its first session, a revoke) keeps its state;
     * it learns the serial when a claim by code did not know it. */
    rc = q_exec(s, &changes,
                "UPDATE devices SET serial = CASE WHEN state = " SQL_CLAIMING " OR serial = '' THEN ?1"
                " ELSE serial END, state = CASE WHEN state = " SQL_CLAIMING " THEN " SQL_PENDING
                " ELSE state END WHERE device_id = ?2",
                "tt", serial, device_id);
    if (rc)
        goto out;
    if (changes == 0) {
        *outcome = STORE_NOT_FOUND;
        goto out;
    }
    rc = outbox_drop(s, device_id, OUTBOX_CANCEL);
    if (rc == 0 && device) {
        rc = q_prep(s, &st, "SELECT " DEV_COLS " FROM devices d WHERE d.device_id = ?", "t",
                    device_id);
        if (rc == 0)
            rc = db_step(st) == DB_ROW ? dev_read(st, device) : PHY_EIO;
    }
    if (rc == 0)
        *outcome = STORE_OK;
out:
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    if (rc && device) {
        store_device_clear(device);
        memset(device, 0, sizeof *device);
    }
    TX_RETRY(rc);
    return rc;
}

static int sq_claim_abort(struct store *s, const char *device_id)
{
    int rc;
    if (!s || !store_device_id_ok(device_id))
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    if ((rc = q_exec(s, NULL,
                     "DELETE FROM twins WHERE device_id = ?1 AND EXISTS (SELECT 1 FROM devices"
                     " WHERE device_id = ?1 AND state = " SQL_CLAIMING ")",
                     "t", device_id)) == 0 &&
        (rc = q_exec(s, NULL, "DELETE FROM devices WHERE device_id = ? AND state = " SQL_CLAIMING, "t",
                     device_id)) == 0)
        rc = outbox_drop(s, device_id, OUTBOX_CANCEL);
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int sq_outbox_due(struct store *s, int64_t now_ms, struct store_outbox_item *out, size_t max,
                         size_t *n)
{
    struct db_stmt *st = NULL;
    size_t count = 0;
    int rc;
    if (n)
        *n = 0;
    if (!s || !n || (max > 0 && !out))
        return PHY_EINVAL;
    if (max == 0)
        return 0;
    TX_BEGIN(s, 0)
    rc = q_prep(s, &st,
                "SELECT device_id, kind, serial, attempts FROM outbox WHERE next_ms <= ?"
                " ORDER BY next_ms, created_ms, rowid LIMIT ?",
                "ii", now_ms, (int64_t)(max > (size_t)INT_MAX ? INT_MAX : max));
    if (rc)
        goto out;
    while (count < max && (rc = db_step(st)) == DB_ROW) {
        struct store_outbox_item *it = &out[count];
        memset(it, 0, sizeof *it);
        if ((rc = col_copy(st, 0, it->device_id, sizeof it->device_id)) ||
            (rc = col_copy(st, 2, it->serial, sizeof it->serial)))
            goto out;
        it->kind = (int)db_int(st, 1);
        it->attempts = (int)db_int(st, 3);
        count++;
        rc = DB_ROW;
    }
    rc = rc == DB_DONE || rc == DB_ROW ? 0 : rc < 0 ? rc : PHY_EIO; /* a retry stays one */
out:
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    if (rc == 0)
        *n = count;
    count = 0;
    TX_RETRY(rc);
    return rc;
}

void store_sealed_free(struct store_sealed *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++) {
        if (v[i].sealed)
            OPENSSL_cleanse(v[i].sealed, v[i].sealed_len);
        if (v[i].next)
            OPENSSL_cleanse(v[i].next, v[i].next_len);
        free(v[i].sealed);
        free(v[i].next);
    }
    free(v);
}

#define SEALED_LIST_MAX 1000

static int sq_sealed_list(struct store *s, const char *after, size_t max, struct store_sealed **out,
                          size_t *n)
{
    struct db_stmt *st = NULL;
    struct store_sealed *v = NULL;
    size_t count = 0;
    int rc;
    if (!s || !after || !out || !n || max == 0 || max > SEALED_LIST_MAX ||
        (after[0] && !store_serial_ok(after)))
        return PHY_EINVAL;
    *out = NULL;
    *n = 0;
    TX_BEGIN(s, 0)
    v = calloc(max, sizeof *v);
    if (!v) {
        rc = PHY_ENOMEM;
        goto out;
    }
    rc = q_prep(s, &st,
                "SELECT serial, device_id, sealed FROM issuances WHERE sealed IS NOT NULL"
                " AND serial > ? ORDER BY serial LIMIT ?",
                "ti", after, (int64_t)max);
    if (rc)
        goto out;
    while (count < max && (rc = db_step(st)) == DB_ROW) {
        struct store_sealed *it = &v[count];
        size_t len = 0;
        const void *blob = cur.e->col_blob(st, 2, &len);
        if ((rc = col_copy(st, 0, it->serial, sizeof it->serial)) ||
            (rc = col_copy(st, 1, it->device_id, sizeof it->device_id)))
            goto out;
        if (!blob || len == 0)
            continue;
        if (!(it->sealed = malloc(len))) {
            rc = PHY_ENOMEM;
            goto out;
        }
        memcpy(it->sealed, blob, len);
        it->sealed_len = len;
        count++;
        rc = DB_ROW;
    }
    rc = rc == DB_DONE || rc == DB_ROW ? 0 : rc < 0 ? rc : PHY_EIO;
out:
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    if (rc == 0) {
        *out = v;
        *n = count;
    } else {
        store_sealed_free(v, max);
    }
    v = NULL;
    count = 0;
    TX_RETRY(rc);
    return rc;
}

static int sq_sealed_replace(struct store *s, const struct store_sealed *v, size_t n,
                             size_t *replaced)
{
    size_t count;
    int rc;
    if (!s || !replaced || (n && !v) || n > SEALED_LIST_MAX)
        return PHY_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!store_serial_ok(v[i].serial) || !store_device_id_ok(v[i].device_id) ||
            !v[i].sealed || !v[i].sealed_len || (v[i].next && !v[i].next_len))
            return PHY_EINVAL;
    *replaced = 0;
    TX_BEGIN(s, 1)
    count = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        int changes = 0;
        if (!v[i].next)
            continue;
        rc = q_exec(s, &changes,
                    "UPDATE issuances SET sealed = ?4 WHERE serial = ?1 AND device_id = ?2"
                    " AND sealed = ?3",
                    "ttbb", v[i].serial, v[i].device_id, (const void *)v[i].sealed,
                    v[i].sealed_len, (const void *)v[i].next, v[i].next_len);
        count += (size_t)changes;
    }
    /* The old bodies' bytes are gone from the live rows: scrub them like a purge. */
    rc = tx_end_scrub(s, rc, (int)count);
    TX_RETRY(rc);
    if (rc == 0)
        *replaced = count;
    return rc;
}

static int sq_outbox_done(struct store *s, const char *device_id, int kind)
{
    int rc;
    if (!s || !store_device_id_ok(device_id) || !store_outbox_kind_ok(kind))
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    rc = outbox_drop(s, device_id, kind);
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int sq_outbox_retry(struct store *s, const char *device_id, int kind, int64_t next_ms)
{
    int rc;
    if (!s || !store_device_id_ok(device_id) || !store_outbox_kind_ok(kind))
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    rc = q_exec(s, NULL,
                "UPDATE outbox SET attempts = attempts + 1, next_ms = ? WHERE device_id = ? AND"
                " kind = ?",
                "iti", next_ms, device_id, (int64_t)kind);
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

/* ---- device hub ---- */

static int sq_device_auth(struct store *s, const char *device_id, const char *secret_hash,
                          int64_t *tenant_id, int *outcome)
{
    char stored[PHY_HASH_HEX_LEN + 1], state[24];
    struct db_stmt *st = NULL;
    int64_t tid;
    int rc;
    if (!s || !outcome || !store_device_id_ok(device_id) || !secret_hash ||
        strnlen(secret_hash, PHY_HASH_HEX_LEN + 1) != PHY_HASH_HEX_LEN)
        return PHY_EINVAL;
    TX_BEGIN(s, 0)
    rc = q_prep(s, &st, "SELECT tenant_id, secret_hash, state FROM devices WHERE device_id = ?",
                "t", device_id);
    if (rc)
        goto out;
    rc = step_one(st, outcome, STORE_NOT_FOUND);
    if (rc != DB_ROW)
        goto out;
    tid = db_int(st, 0);
    if ((rc = col_copy(st, 1, stored, sizeof stored)) ||
        (rc = col_copy(st, 2, state, sizeof state)))
        goto out;
    if (strcmp(state, STATE_REVOKED) == 0)
        *outcome = STORE_REVOKED;
    else if (strlen(stored) != PHY_HASH_HEX_LEN ||
             CRYPTO_memcmp(stored, secret_hash, PHY_HASH_HEX_LEN) != 0)
        *outcome = STORE_NOT_FOUND;
    else {
        *outcome = STORE_OK;
        if (tenant_id)
            *tenant_id = tid;
    }
out:
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int sq_session_open(struct store *s, const char *device_id, int64_t now_ms, int64_t *gen)
{
    int purged = 0, elsewhere = 0, rc;
    if (!s || !store_device_id_ok(device_id))
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    /* Several nodes: only a device with a live session on another node needs the
     * others told (that node closes it with 4000); most sessions open for a device
     * that had none, and announce nothing. */
    elsewhere = 0;
    if (s->e->notifies && s->node[0]) {
        rc = q_int(s, NULL,
                   "SELECT 1 FROM devices WHERE device_id = ?1 AND online <> 0 AND"
                   " session_node IS NOT NULL AND session_node <> ?2",
                   "tt", device_id, s->node);
        if (rc < 0)
            goto out;
        elsewhere = rc == 1;
    }
    /* Before the state moves on: a device claimed through eu that becomes active
     * tells eu to end redelivery. Writes only on that first session. */
    rc = q_exec(s, NULL,
                "INSERT INTO outbox(device_id, kind, serial, attempts, next_ms, created_ms)"
                " SELECT device_id, ?2, serial, 0, ?3, ?3 FROM devices"
                " WHERE device_id = ?1 AND remote = 1 AND"
                " state IN " SQL_BEFORE_FIRST_SESSION OUTBOX_REPLACE,
                "tii", device_id, (int64_t)OUTBOX_PURGE, now_ms);
    if (rc == 0) {
        /* The generation comes back with the update (RETURNING); no row: deleted or
         * revoked since it authenticated. */
        struct store_announce a = {.kind = ANNOUNCE_SESSION};
        rc = q_int(s, &a.n,
                   "UPDATE devices SET online = 1, connected_ms = ?1, session_node = ?3,"
                   " session_gen = session_gen + 1,"
                   " last_seen_ms = CASE WHEN last_seen_ms > ?1 THEN last_seen_ms ELSE ?1 END,"
                   " state = CASE WHEN state IN " SQL_BEFORE_FIRST_SESSION
                   " THEN " SQL_ACTIVE " ELSE state END WHERE device_id = ?2 AND state <> " SQL_REVOKED
                   " RETURNING session_gen",
                   "itt", now_ms, device_id, s->node[0] ? s->node : NULL);
        rc = rc == 1 ? 0 : rc == 0 ? PHY_ENOTFOUND : rc;
        if (rc == 0 && gen)
            *gen = a.n;
        snprintf(a.device_id, sizeof a.device_id, "%s", device_id);
        if (rc == 0 && elsewhere) /* its older session on another node ends (4000) */
            rc = announce(s, &a);
    }
    if (rc == 0)
        rc = q_exec(s, &purged,
                    "UPDATE issuances SET sealed = NULL WHERE sealed IS NOT NULL AND device_id = ?1"
                    " AND serial = (SELECT serial FROM devices WHERE device_id = ?1)",
                    "t", device_id);
out:
    rc = tx_end_scrub(s, rc, purged);
    TX_RETRY(rc);
    return rc;
}

static int sq_session_close(struct store *s, const char *device_id, int64_t gen, int64_t now_ms,
                            int64_t last_seen_ms)
{
    int rc;
    if (!s || !store_device_id_ok(device_id))
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    /* A device deleted meanwhile has nothing to mark: not an error. A close of an
     * older session (a newer one has opened since) changes nothing. */
    rc = q_exec(s, NULL,
                "UPDATE devices SET online = 0, disconnected_ms = ?1,"
                " last_seen_ms = CASE WHEN last_seen_ms > ?2 THEN last_seen_ms ELSE ?2 END"
                " WHERE device_id = ?3 AND"
                " (?4 < 0 OR session_gen = ?4)",
                "iiti", now_ms, last_seen_ms, device_id, gen);
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int sq_presence_reset(struct store *s, int64_t now_ms)
{
    int rc;
    if (!s)
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    rc = q_exec(s, NULL,
                "UPDATE devices SET online = 0, disconnected_ms = ?1 WHERE online <> 0 AND"
                " (session_node IS NULL OR session_node = ?2 OR"
                " session_node NOT IN (SELECT node_id FROM nodes))",
                "it", now_ms, s->node);
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int sq_node_sessions(struct store *s, int64_t tenant_id, const char *device_id,
                            struct store_node_session **out, size_t *n)
{
    struct store_node_session *v = NULL;
    struct db_stmt *st = NULL;
    size_t count = 0, cap = 0;
    int rc;
    if (out)
        *out = NULL;
    if (n)
        *n = 0;
    if (!s || !s->node[0] || !out || !n || tenant_id < 0 ||
        (device_id && !store_device_id_ok(device_id)))
        return PHY_EINVAL;
    TX_BEGIN(s, 0)
    count = 0;
    rc = q_prep(s, &st,
                "SELECT d.device_id, d.tenant_id, d.state = " SQL_REVOKED ","
                " COALESCE(t.desired_version, 0), t.desired_patch"
                " FROM devices d LEFT JOIN twins t ON t.device_id = d.device_id"
                " WHERE d.session_node = ?1 AND (d.online <> 0 OR d.state = " SQL_REVOKED ")"
                " AND (?2 = 0 OR d.tenant_id = ?2) AND (?3 = '' OR d.device_id = ?3)",
                "tit", s->node, tenant_id, device_id ? device_id : "");
    while (rc == 0 && (rc = db_step(st)) == DB_ROW) {
        if ((rc = grow(&v, &cap, count, sizeof *v, 16)))
            break;
        struct store_node_session *e = &v[count];
        memset(e, 0, sizeof *e);
        if ((rc = col_copy(st, 0, e->device_id, sizeof e->device_id)))
            break;
        count++;
        e->tenant_id = db_int(st, 1);
        e->revoked = db_int(st, 2) != 0;
        e->desired_version = db_int(st, 3);
        if (!db_null(st, 4) && !(e->desired_patch = col_dup(st, 4)))
            rc = PHY_ENOMEM;
        else
            rc = 0; /* the next row */
    }
    rc = rc == DB_DONE ? 0 : rc < 0 ? rc : PHY_EIO;
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    if (rc) {
        store_node_sessions_free(v, count);
        v = NULL;
        count = cap = 0;
        TX_RETRY(rc);
        return rc;
    }
    *out = v;
    *n = count;
    return 0;
}

static int sq_node_heartbeat(struct store *s, int64_t now_ms)
{
    int rc;
    if (!s || !s->node[0])
        return PHY_EINVAL;
    int changes = 0;
    TX_BEGIN(s, 1)
    /* Known: its heartbeat. Not (new, or forgotten by another node's presence sweep
     * while this one was too slow to beat): added, and the caller told (1). */
    rc = q_exec(s, &changes, "UPDATE nodes SET heartbeat_ms = ?2 WHERE node_id = ?1", "ti", s->node,
                now_ms);
    if (rc == 0 && changes == 0)
        rc = q_exec(s, NULL,
                    "INSERT INTO nodes(node_id, heartbeat_ms, started_ms) VALUES (?1, ?2, ?2)"
                    " ON CONFLICT(node_id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms",
                    "ti", s->node, now_ms);
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc < 0 ? rc : changes == 0;
}

static int sq_session_reclaim(struct store *s, const char *device_id, int64_t gen, int64_t now_ms,
                              int *outcome)
{
    struct db_stmt *st = NULL;
    char state[24];
    int rc;
    if (!s || !outcome || !s->node[0] || !store_device_id_ok(device_id))
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    rc = q_prep(s, &st, "SELECT state, session_gen FROM devices WHERE device_id = ?", "t",
                device_id);
    if (rc)
        goto out;
    rc = step_one(st, outcome, STORE_NOT_FOUND); /* deleted */
    if (rc != DB_ROW)
        goto out;
    int64_t cur_gen = db_int(st, 1);
    rc = col_copy(st, 0, state, sizeof state);
    db_finish(st);
    st = NULL;
    if (rc)
        goto out;
    if (strcmp(state, STATE_REVOKED) == 0)
        *outcome = STORE_REVOKED;
    else if (cur_gen != gen)
        *outcome = STORE_EXISTS; /* a newer session, on another node */
    else {
        *outcome = STORE_OK;
        rc = q_exec(s, NULL,
                    "UPDATE devices SET online = 1, session_node = ?3,"
                    " connected_ms = CASE WHEN online <> 0 THEN connected_ms ELSE ?4 END"
                    " WHERE device_id = ?1 AND session_gen = ?2",
                    "titi", device_id, gen, s->node, now_ms);
    }
out:
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int sq_presence_sweep(struct store *s, int64_t now_ms, int64_t dead_before_ms, int *n)
{
    int rc, changes = 0;
    if (n)
        *n = 0;
    if (!s || !s->node[0])
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    rc = q_exec(s, &changes,
                "UPDATE devices SET online = 0, disconnected_ms = ?1 WHERE online <> 0 AND"
                " session_node <> ?3 AND (session_node IN (SELECT node_id FROM nodes"
                " WHERE heartbeat_ms < ?2) OR session_node NOT IN (SELECT node_id FROM nodes))",
                "iit", now_ms, dead_before_ms, s->node);
    if (rc == 0)
        rc = q_exec(s, NULL,
                    "DELETE FROM nodes WHERE heartbeat_ms < ?1 AND node_id <> ?2 AND NOT EXISTS"
                    " (SELECT 1 FROM devices WHERE online <> 0 AND session_node = nodes.node_id)",
                    "it", dead_before_ms, s->node);
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    if (rc == 0 && n)
        *n = changes;
    return rc;
}

static int sq_lease_take(struct store *s, const char *name, int64_t now_ms, int64_t until_ms,
                         int *held)
{
    int rc, changes = 0;
    if (held)
        *held = 0;
    if (!s || !s->node[0] || !held || !store_audit_action_ok(name) || until_ms <= now_ms)
        return PHY_EINVAL;
    TX_BEGIN(s, 1)
    rc = q_exec(s, &changes,
                "INSERT INTO leases(name, node_id, until_ms) VALUES (?1, ?2, ?3)"
                " ON CONFLICT(name) DO UPDATE SET node_id = excluded.node_id,"
                " until_ms = excluded.until_ms"
                " WHERE leases.node_id = excluded.node_id OR leases.until_ms <= ?4",
                "ttii", name, s->node, until_ms, now_ms);
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    if (rc == 0)
        *held = changes > 0;
    return rc;
}

static int sq_twin_get(struct store *s, const char *device_id, struct store_twin *t, int *outcome)
{
    struct db_stmt *st = NULL;
    int rc;
    if (t)
        memset(t, 0, sizeof *t);
    if (!s || !t || !outcome || !store_device_id_ok(device_id))
        return PHY_EINVAL;
    TX_BEGIN(s, 0)
    rc = q_prep(s, &st,
                "SELECT d.tags_json, " TWIN_COLS TWIN_FROM
                " WHERE d.device_id = ? AND d.state <> " SQL_REVOKED,
                "t", device_id);
    if (rc)
        goto out;
    rc = step_one(st, outcome, STORE_NOT_FOUND);
    if (rc != DB_ROW)
        goto out;
    rc = twin_read(st, 1, 0, t);
    if (rc == 0)
        *outcome = STORE_OK;
out:
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    if (rc)
        store_twin_free(t);
    TX_RETRY(rc);
    return rc;
}

static int sq_reported_patch(struct store *s, const char *device_id, const char *patch_json,
                             int64_t now_ms, int64_t *version, int *changed, int *outcome)
{
    struct patch_target t = {0, now_ms, device_id};
    return device_section_patch(s, device_id, patch_json, SECTION_REPORTED, -1, reported_check,
                                &t, version, changed, outcome);
}

static int sq_status_put(struct store *s, const char *device_id, const char *status_json,
                         int64_t now_ms)
{
    int changes = 0, rc;
    if (!s || !store_device_id_ok(device_id))
        return PHY_EINVAL;
    if ((rc = store_json_object_parse(status_json, STORE_STATUS_JSON_MAX, NULL)))
        return rc;
    TX_BEGIN(s, 1)
    rc = q_exec(s, &changes,
                "UPDATE devices SET last_status_json = ?1, last_status_ms = ?2,"
                " last_seen_ms = CASE WHEN last_seen_ms > ?2 THEN last_seen_ms ELSE ?2 END"
                " WHERE device_id = ?3 AND state <> " SQL_REVOKED,
                "tit", status_json, now_ms, device_id);
    if (rc == 0 && changes == 0)
        rc = PHY_ENOTFOUND;
    if (rc == 0)
        rc = q_exec(s, NULL,
                    "INSERT INTO status_history(device_id, at_ms, status_json) VALUES (?, ?, ?)",
                    "tit", device_id, now_ms, status_json);
    /* Keeps the newest STORE_STATUS_HISTORY, a walk down the index of one device. */
    if (rc == 0)
        rc = q_exec(s, NULL,
                    "DELETE FROM status_history WHERE device_id = ?1 AND rowid NOT IN"
                    " (SELECT rowid FROM status_history WHERE device_id = ?1"
                    " ORDER BY at_ms DESC, rowid DESC LIMIT ?2)",
                    "ti", device_id, (int64_t)STORE_STATUS_HISTORY);
    rc = tx_end(s, rc);
    TX_RETRY(rc);
    return rc;
}

static int sq_status_history(struct store *s, int64_t tenant_id, const char *device_id, int limit,
                             struct store_status_report **out, size_t *n, int *outcome)
{
    struct store_status_report *v = NULL;
    struct db_stmt *st = NULL;
    size_t count = 0;
    int rc;
    if (out)
        *out = NULL;
    if (n)
        *n = 0;
    if (!s || !out || !n || !outcome || !store_device_id_ok(device_id) || limit < 1)
        return PHY_EINVAL;
    if (limit > STORE_STATUS_HISTORY)
        limit = STORE_STATUS_HISTORY;
    TX_BEGIN(s, 0)
    rc = q_int(s, NULL,
               "SELECT 1 FROM devices d WHERE d.device_id = ? AND d.tenant_id = ? AND" DEV_VISIBLE,
               "ti", device_id, tenant_id);
    if (rc <= 0) {
        if (rc == 0)
            *outcome = STORE_NOT_FOUND;
        goto out;
    }
    rc = q_prep(s, &st,
                "SELECT at_ms, status_json FROM status_history WHERE device_id = ?"
                " ORDER BY at_ms DESC, rowid DESC LIMIT ?",
                "ti", device_id, (int64_t)limit);
    if (rc)
        goto out;
    v = calloc((size_t)limit, sizeof *v);
    if (!v) {
        rc = PHY_ENOMEM;
        goto out;
    }
    while (count < (size_t)limit && (rc = db_step(st)) == DB_ROW) {
        v[count].at_ms = db_int(st, 0);
        if (!(v[count++].status_json = col_dup(st, 1))) {
            rc = PHY_ENOMEM;
            goto out;
        }
    }
    rc = count == (size_t)limit || rc == DB_DONE ? 0 : rc < 0 ? rc : PHY_EIO;
    if (rc == 0)
        *outcome = STORE_OK;
out:
    db_finish(st);
    st = NULL;
    rc = tx_end(s, rc);
    if (rc) {
        store_status_reports_free(v, count);
        v = NULL;
        count = 0;
        TX_RETRY(rc);
        return rc;
    }
    *out = v;
    *n = count;
    return 0;
}

/* Part of the store API (store.h); the core owns their only allocations. */
void store_audit_free(struct store_audit *a, size_t n)
{
    if (!a)
        return;
    for (size_t i = 0; i < n; i++)
        free(a[i].detail_json);
    free(a);
}

void store_status_reports_free(struct store_status_report *r, size_t n)
{
    if (!r)
        return;
    for (size_t i = 0; i < n; i++)
        free(r[i].status_json);
    free(r);
}

const struct phy_store_ops store_ops = {
    .name = "core",
    .open = core_open,
    .close = core_close,
    .tenant_add = sq_tenant_add,
    .user_add = sq_user_add,
    .token_add = sq_token_add,
    .token_auth = sq_token_auth,
    .user_get = sq_user_get,
    .login_attempt_begin = sq_login_attempt_begin,
    .login_attempt_forgive = sq_login_attempt_forgive,
    .login_failures_count = sq_login_failures_count,
    .console_session_create = sq_console_session_create,
    .console_session_auth = sq_console_session_auth,
    .console_sweep = sq_console_sweep,
    .console_session_delete = sq_console_session_delete,
    .audit_add = sq_audit_add,
    .audit_list = sq_audit_list,
    .reg_create = sq_reg_create,
    .reg_challenge = sq_reg_challenge,
    .reg_info = sq_reg_info,
    .reg_prove = sq_reg_prove,
    .serials_import = sq_serials_import,
    .tenant_serial_claims_set = sq_tenant_serial_claims_set,
    .tenant_serial_claims = sq_tenant_serial_claims,
    .reg_set_code = sq_reg_set_code,
    .poll = sq_poll,
    .claim = sq_claim,
    .claim_attempt_begin = sq_claim_attempt_begin,
    .devices_add_bulk = sq_devices_add_bulk,
    .claim_attempt_forgive = sq_claim_attempt_forgive,
    .sweep = sq_sweep,
    .token_list = sq_token_list,
    .tenant_lookup = sq_tenant_lookup,
    .token_revoke = sq_token_revoke,
    .user_remove = sq_user_remove,
    .user_set_password = sq_user_set_password,
    .claim_replay = sq_claim_replay,
    .reg_live_count = sq_reg_live_count,
    .sealed_list = sq_sealed_list,
    .sealed_replace = sq_sealed_replace,
    .issue_remote = sq_issue_remote,
    .issuance_purge_remote = sq_issuance_purge_remote,
    .issuance_cancel_remote = sq_issuance_cancel_remote,
    .serial_rearm_remote = sq_serial_rearm_remote,
    .claim_begin = sq_claim_begin,
    .claim_confirm = sq_claim_confirm,
    .claim_abort = sq_claim_abort,
    .outbox_due = sq_outbox_due,
    .outbox_done = sq_outbox_done,
    .outbox_retry = sq_outbox_retry,
    .devices_list = sq_devices_list,
    .device_get = sq_device_get,
    .tags_put = sq_tags_put,
    .device_rename = sq_device_rename,
    .desired_patch = sq_desired_patch,
    .desired_patch_tag = sq_desired_patch_tag,
    .device_revoke = sq_device_revoke,
    .device_reset = sq_device_reset,
    .device_delete = sq_device_delete,
    .device_auth = sq_device_auth,
    .session_open = sq_session_open,
    .session_close = sq_session_close,
    .presence_reset = sq_presence_reset,
    .node_heartbeat = sq_node_heartbeat,
    .presence_sweep = sq_presence_sweep,
    .session_reclaim = sq_session_reclaim,
    .lease_take = sq_lease_take,
    .node_sessions = sq_node_sessions,
    .twin_get = sq_twin_get,
    .reported_patch = sq_reported_patch,
    .status_put = sq_status_put,
    .status_history = sq_status_history,
};
