/* Helpers shared by the store's unit tests on both engines (test_store*.c): the fixture, values,
 * provisioning wrappers, direct SQL on a store file and the migration tests' schema
 * comparisons. A file may define TEST_STORE_FX_EXTRA (member declarations) before
 * including this header to give struct fx fields of its own. */
#ifndef PHY_TEST_STORE_H
#define PHY_TEST_STORE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "phy/err.h"
#include "store.h"
#include "testutil.h"

/* The tests' clock at the start of each test (ms). */
#define T0 1700000000000LL
/* The fixture's registration idle time, code lifetime and issuance grace (ms). */
#define REG_IDLE_MS 600000
#define TTL_MS 300000
#define GRACE_MS 60000

/* The store under test. */
static const struct phy_store_ops *const ops = &store_ops;

/* ---- the engine under test ----
 * PHY_TEST_STORE=postgresql runs every test on PostgreSQL: PHY_TEST_PG_URL is the
 * server's base URL (postgresql://user@host:port) and each test gets a database of
 * its own. Otherwise each test gets a SQLite file. The assertions are the same. */

static inline int store_is_pg(void)
{
    const char *e = getenv("PHY_TEST_STORE");
    return e && strcmp(e, "postgresql") == 0;
}

/* A test that needs SQLite itself (its migrations from old files, file modes). */
#define SQLITE_ONLY()                                                                              \
    do {                                                                                           \
        if (store_is_pg())                                                                         \
            skip();                                                                                \
    } while (0)

/* Runs sql on the server's maintenance database (CREATE/DROP DATABASE). */
static inline void pg_admin(const char *sql)
{
    const char *base = getenv("PHY_TEST_PG_URL");
    char url[256];
    if (!base)
        fail_msg("PHY_TEST_STORE=postgresql needs PHY_TEST_PG_URL");
    snprintf(url, sizeof url, "%s/postgres", base);
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect %s: %s", url, PQerrorMessage(c));
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

/* ---- values ---- */

/* A 64-hex-char stand-in for a SHA-256 (of a poll/API token, a secret, a cookie). */
struct hash {
    char h[PHY_HASH_HEX_LEN + 1];
};

/* H(i): the stand-in hash number i ("%064x"). */
static inline struct hash H(unsigned i) {
    struct hash x;
    snprintf(x.h, sizeof x.h, "%064x", i);
    return x;
}

/* A device ID. */
struct id {
    char s[PHY_DEVICE_ID_LEN + 1];
};

/* ID(i): device ID number i ("dev_" and 26 digits). */
static inline struct id ID(unsigned i) {
    struct id x;
    snprintf(x.s, sizeof x.s, "dev_%026u", i);
    return x;
}

/* ---- the test sealer ---- */

/* Counts its calls, remembers the last serial, fails while fail is set, else seals to
 * body(serial) (a test file's own bytes, at most PHY_SERIAL_MAX + 16). */
struct sealer {
    int fail;
    int calls;
    char last_serial[PHY_SERIAL_MAX + 1];
    pthread_mutex_t mu;
    size_t (*body)(const char *serial, unsigned char *buf, size_t cap);
};

/* The store_seal_fn of a struct sealer (ctx); thread-safe. */
static inline unsigned char *test_seal(void *ctx, const char *serial, size_t *out_len)
{
    struct sealer *sl = ctx;
    unsigned char tmp[PHY_SERIAL_MAX + 16];
    unsigned char *body;
    pthread_mutex_lock(&sl->mu);
    sl->calls++;
    snprintf(sl->last_serial, sizeof sl->last_serial, "%s", serial);
    if (sl->fail) {
        pthread_mutex_unlock(&sl->mu);
        return NULL;
    }
    pthread_mutex_unlock(&sl->mu);
    *out_len = sl->body(serial, tmp, sizeof tmp);
    body = malloc(*out_len);
    assert_non_null(body);
    memcpy(body, tmp, *out_len);
    return body;
}

/* ---- the fixture ---- */

/* A private directory with the store under test (path) and a second store (fresh) for
 * the migration tests, the open store, the provisioning parameters and the sealer. */
struct fx {
    char dir[64];
    char path[256]; /* a SQLite file, or a PostgreSQL URL with the test's database */
    char fresh[160];
    char pgdb[48]; /* the test's PostgreSQL database ("" on SQLite) */
    struct store *s;
    struct store_prov_params p;
    struct sealer seal;
#ifdef TEST_STORE_FX_EXTRA
    TEST_STORE_FX_EXTRA
#endif
};

/* A new fixture in *state, no store open yet: directory /tmp/<prefix> + 6 random characters, now T0,
 * the default provisioning parameters, the sealer sealing to body (may be NULL). */
static inline struct fx *fx_new(void **state, const char *prefix,
                                size_t (*body)(const char *, unsigned char *, size_t))
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_non_null(test_tmp_template(f->dir, sizeof f->dir, prefix));
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/store.db", f->dir);
    if (store_is_pg()) {
        char sql[96];
        const char *tail = strrchr(f->dir, '_');
        snprintf(f->pgdb, sizeof f->pgdb, "t%s", tail ? tail : "_x");
        for (char *c = f->pgdb; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
        snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", f->pgdb);
        pg_admin(sql);
        snprintf(f->path, sizeof f->path, "%s/%s", getenv("PHY_TEST_PG_URL"), f->pgdb);
    }
    snprintf(f->fresh, sizeof f->fresh, "%s/fresh.db", f->dir);
    pthread_mutex_init(&f->seal.mu, NULL);
    f->seal.body = body;
    f->p = (struct store_prov_params){
        .now_ms = T0,
        .registration_idle_ms = REG_IDLE_MS,
        .code_ttl_ms = TTL_MS,
        .grace_ms = GRACE_MS,
        .interval_s = 5,
        .max_interval_s = 20,
        .max_regs_per_serial = 4,
    };
    *state = f;
    return f;
}

/* Opens the store at f->path into f->s; fails the test when it cannot. */
static inline void fx_open(struct fx *f)
{
    char err[256] = "";
    int rc = ops->open(f->path, &f->s, err, sizeof err);
    if (rc != 0)
        fail_msg("open %s: %d %s", f->path, rc, err);
}

/* Removes a store file with its -wal and -shm files. */
static inline void remove_store(const char *path)
{
    static const char *const suffix[] = {"", "-wal", "-shm"};
    char p[200];
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
        snprintf(p, sizeof p, "%s%s", path, suffix[i]);
        unlink(p);
    }
}

/* The cmocka teardown of every store test: closes the store, removes both stores and
 * the directory, frees the fixture. */
static inline int teardown(void **state)
{
    struct fx *f = *state;
    ops->close(f->s);
    if (f->pgdb[0]) {
        char sql[96];
        snprintf(sql, sizeof sql, "DROP DATABASE \"%s\" WITH (FORCE)", f->pgdb);
        pg_admin(sql);
    } else {
        remove_store(f->path);
    }
    remove_store(f->fresh);
    rmdir(f->dir);
    pthread_mutex_destroy(&f->seal.mu);
    free(f);
    return 0;
}

/* ---- provisioning wrappers (assert success, return the outcome) ---- */

/* Takes a fresh SQLite store back to version 4 (for tests of older versions). */
#define UNDO_V5_SQL                                                                                \
    "DROP TABLE leases;"                                                                           \
    "DROP TABLE nodes;"                                                                            \
    "DROP INDEX devices_online_node;"                                                              \
    "ALTER TABLE twins DROP COLUMN desired_patch;"                                                 \
    "ALTER TABLE devices DROP COLUMN session_node;"                                                \
    "ALTER TABLE registrations DROP COLUMN source;"                                                \
    "ALTER TABLE registrations DROP COLUMN agent;"                                                 \
    "DROP INDEX devices_claim;"                                                                    \
    "ALTER TABLE devices DROP COLUMN claim_key;"                                                   \
    "ALTER TABLE devices DROP COLUMN claimed_by;"                                                  \
    "ALTER TABLE api_tokens DROP COLUMN expires_ms;"                                               \
    "DROP TABLE attested_serials;"                                                                 \
    "ALTER TABLE registrations DROP COLUMN challenge;"                                             \
    "ALTER TABLE registrations DROP COLUMN proven;"                                                \
    "ALTER TABLE tenants DROP COLUMN serial_claims;"

/* The challenge the tests give every registration (an attested serial keeps it). */
#define TEST_CHALLENGE "challenge-challenge-challenge-challenge-abc"

/* reg_create for serial with poll token H(tok); *res (optional) gets what it did. */
static inline int reg_r(struct fx *f, const char *serial, unsigned tok, struct store_reg_result *res)
{
    struct store_reg_result r;
    int out = -1;
    struct hash h = H(tok);
    assert_int_equal(ops->reg_create(f->s, &f->p, serial, h.h, TEST_CHALLENGE, NULL, &r, &out), 0);
    if (res)
        *res = r;
    return out;
}

static inline int reg(struct fx *f, const char *serial, unsigned tok)
{
    return reg_r(f, serial, tok, NULL);
}

/* reg_set_code for serial with poll token H(tok). */
static inline int set_code(struct fx *f, const char *serial, unsigned tok, const char *code)
{
    int out = -1;
    struct hash h = H(tok);
    assert_int_equal(ops->reg_set_code(f->s, &f->p, serial, h.h, code, &out), 0);
    return out;
}

/* Polls (by serial or code) with token H(tok) and frees any body; *interval (optional)
 * gets the reported interval. */
static inline int poll_s(struct fx *f, const char *serial, const char *code, unsigned tok,
                         int *interval)
{
    struct store_poll_result r;
    int out = -1;
    struct hash h = H(tok);
    assert_int_equal(ops->poll(f->s, &f->p, serial, code, h.h, &r, &out), 0);
    if (interval)
        *interval = r.interval_s;
    if (out != STORE_DELIVER)
        assert_null(r.sealed);
    free(r.sealed);
    return out;
}

/* Polls expecting DELIVER of exactly the sealer's body for body_serial, for device_id. */
static inline void expect_deliver(struct fx *f, const char *serial, const char *code, unsigned tok,
                                  const char *body_serial, const char *device_id)
{
    unsigned char want[PHY_SERIAL_MAX + 16];
    size_t wn = f->seal.body(body_serial, want, sizeof want);
    struct store_poll_result r;
    int out = -1;
    struct hash h = H(tok);
    assert_int_equal(ops->poll(f->s, &f->p, serial, code, h.h, &r, &out), 0);
    assert_int_equal(out, STORE_DELIVER);
    assert_non_null(r.sealed);
    assert_int_equal(r.sealed_len, wn);
    assert_memory_equal(r.sealed, want, wn);
    assert_string_equal(r.device_id, device_id);
    free(r.sealed);
}

/* One of race_claims()'s threads: its number i (0..7) and what its call returned. */
struct claim_racer {
    struct fx *f;
    unsigned i;
    int rc, outcome;
};

/* Runs fn (given its struct claim_racer) in 8 threads at once and asserts that every
 * call succeeded, one with STORE_OK and 7 with STORE_ALREADY_CLAIMED. */
static inline void race_claims(struct fx *f, void *(*fn)(void *))
{
    struct claim_racer r[8];
    pthread_t th[8];
    int ok = 0, already = 0;
    for (unsigned i = 0; i < 8; i++) {
        r[i] = (struct claim_racer){.f = f, .i = i, .rc = -1, .outcome = -1};
        assert_int_equal(pthread_create(&th[i], NULL, fn, &r[i]), 0);
    }
    for (unsigned i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(r[i].rc, 0);
        ok += r[i].outcome == STORE_OK;
        already += r[i].outcome == STORE_ALREADY_CLAIMED;
    }
    assert_int_equal(ok, 1);
    assert_int_equal(already, 7);
}

/* ---- direct access to a store file (a second connection) ---- */

/* PostgreSQL: the first column of the first row of sql on url, as text into buf
 * ("<none>" without a row, "<null>" for NULL; booleans as 1/0). */
static inline const char *pg_text(const char *url, const char *sql, char *buf, size_t cap)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(c));
    PGresult *r = PQexec(c, sql);
    int st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    if (st != PGRES_TUPLES_OK || PQntuples(r) == 0)
        snprintf(buf, cap, "<none>");
    else if (PQgetisnull(r, 0, 0))
        snprintf(buf, cap, "<null>");
    else if (PQftype(r, 0) == 16) /* bool */
        snprintf(buf, cap, "%d", PQgetvalue(r, 0, 0)[0] == 't');
    else
        snprintf(buf, cap, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return buf;
}

/* The first column of the first row of sql as an integer (-1 without a row). */
static inline int64_t raw_int(const char *path, const char *sql)
{
    if (store_is_pg()) {
        char buf[64];
        pg_text(path, sql, buf, sizeof buf);
        return buf[0] == '<' ? -1 : strtoll(buf, NULL, 10);
    }
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t v = -1;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* One text value into buf ("<none>" without a row, "<null>" for NULL); returns buf. */
static inline const char *raw_text(const char *path, const char *sql, char *buf, size_t cap)
{
    if (store_is_pg())
        return pg_text(path, sql, buf, cap);
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    if (sqlite3_step(st) != SQLITE_ROW)
        snprintf(buf, cap, "<none>");
    else if (sqlite3_column_type(st, 0) == SQLITE_NULL)
        snprintf(buf, cap, "<null>");
    else
        snprintf(buf, cap, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return buf;
}

/* Runs sql (any number of statements, read-write). */
static inline void raw_exec(const char *path, const char *sql)
{
    if (store_is_pg()) {
        char buf[16];
        pg_text(path, sql, buf, sizeof buf);
        return;
    }
    sqlite3 *db;
    char *msg = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : "?");
    sqlite3_close(db);
}

/* ---- schema comparisons (a migrated store against a fresh one) ---- */

/* Table t's columns as "name type notnull default pk|...". */
#define COLS_SQL(t)                                                                                \
    "SELECT group_concat(name || ' ' || type || ' ' || \"notnull\" || ' ' ||"                      \
    " coalesce(dflt_value, '-') || ' ' || pk, '|') FROM pragma_table_info('" t "')"
/* Table t's foreign keys as "table:from:to:on_delete|...". */
#define FKEYS_SQL(t)                                                                               \
    "SELECT group_concat(\"table\" || ':' || \"from\" || ':' || \"to\" || ':' || on_delete, '|')"  \
    " FROM pragma_foreign_key_list('" t "')"
/* Every index as "name:table:columns|..." by name. */
#define INDEXES_SQL                                                                                \
    "SELECT group_concat(x, '|') FROM (SELECT m.name || ':' || m.tbl_name || ':' ||"               \
    " (SELECT group_concat(i.name) FROM pragma_index_info(m.name) i) AS x FROM sqlite_master m"    \
    " WHERE m.type = 'index' ORDER BY m.name)"
/* Table t's CREATE text. */
#define TABLE_SQL(t) "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = '" t "'"

/* Creates the fresh store f->fresh (opened once and closed). */
static inline void make_fresh(struct fx *f)
{
    struct store *s2 = NULL;
    char err[256] = "";
    assert_int_equal(ops->open(f->fresh, &s2, err, sizeof err), 0);
    ops->close(s2);
}

/* Asserts that sql (e.g. COLS_SQL) gives the same text on f->path and f->fresh, and more
 * than 20 characters of it. */
static inline void expect_same_shape(struct fx *f, const char *sql)
{
    char a[4096], b[4096];
    raw_text(f->path, sql, a, sizeof a);
    raw_text(f->fresh, sql, b, sizeof b);
    assert_string_equal(a, b);
    assert_true(strlen(a) > 20);
}

/* Makes f->fresh a store from the future (this build's version + 1) and asserts it
 * is refused. */
static inline void expect_future_refused(struct fx *f)
{
    struct store *s2 = (struct store *)f; /* not NULL: the refused open must clear it */
    char err[256] = "", sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", STORE_SCHEMA_VERSION + 1);
    raw_exec(f->fresh, sql);
    assert_int_equal(ops->open(f->fresh, &s2, err, sizeof err), PHY_EUNSUPP);
    assert_null(s2);
}

#endif
