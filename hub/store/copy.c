/* store_copy: every row of one store into an empty store of any engine (phyhub admin
 * migrate-store), in one transaction of the target, read from one snapshot of the
 * source. Sealed bodies are copied as bytes: the same key file opens them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "phy/assert.h"
#include "phy/err.h"
#include "store.h"

/* A table of the current schema, parents first; column types as db_arg's ('t' text,
 * 'i' integer, 'b' blob), NULLs copied as NULLs. */
struct table {
    const char *name;
    const char *cols; /* SQL column list */
    const char *types;
};

static const struct table TABLES[] = {
    {"tenants", "id, name, region, created_ms, serial_claims", "ittit"},
    {"users", "id, tenant_id, name, pw_hash", "iitt"},
    {"api_tokens", "token_hash, tenant_id, user_id, created_ms, expires_ms", "tiiii"},
    {"registrations",
     "token_hash, serial, code, code_expires_ms, interval_s, last_poll_ms, last_active_ms,"
     " created_ms, challenge, proven, source, agent",
     "tttiiiiititt"},
    {"attested_serials", "serial, public_key, created_ms", "tbi"},
    {"devices",
     "device_id, tenant_id, serial, name, tags_json, secret_hash, state, created_ms, online,"
     " last_seen_ms, connected_ms, disconnected_ms, last_status_json, last_status_ms,"
     " session_gen, remote, claimed_by, claim_key",
     "titttttiiiiitiiiit"},
    {"twins", "device_id, desired, desired_version, reported, reported_version", "ttiti"},
    {"issuances",
     "serial, code, token_hash, device_id, sealed, created_ms, delivered_ms, region, device_ref",
     "ttttbiitt"},
    {"outbox", "device_id, kind, serial, attempts, next_ms, created_ms", "titiii"},
    {"claim_failures", "tenant_id, user_id, at_ms", "iii"},
    {"console_sessions", "id_hash, tenant_id, user_id, csrf, created_ms, last_used_ms", "tiitii"},
    {"login_failures", "id, tenant, \"user\", at_ms", "itti"},
    {"audit", "id, tenant_id, user_id, at_ms, action, device_id, detail_json", "iiiittt"},
    {"status_history", "device_id, at_ms, status_json", "tit"},
};
#define NTABLES (sizeof TABLES / sizeof TABLES[0])
#define COLS_MAX 20

/* The statement texts, built once (engines cache statements by their address). */
static char select_sql[NTABLES][512], insert_sql[NTABLES][640], count_sql[NTABLES][96];

static void build_sql(void)
{
    for (size_t t = 0; t < NTABLES; t++) {
        char marks[3 * COLS_MAX] = "";
        size_t n = strlen(TABLES[t].types);
        for (size_t i = 0; i < n; i++)
            strcat(marks, i ? ", ?" : "?");
        snprintf(select_sql[t], sizeof select_sql[t], "SELECT %s FROM %s", TABLES[t].cols,
                 TABLES[t].name);
        snprintf(insert_sql[t], sizeof insert_sql[t], "INSERT INTO %s(%s) VALUES (%s)",
                 TABLES[t].name, TABLES[t].cols, marks);
        snprintf(count_sql[t], sizeof count_sql[t], "SELECT count(*) FROM %s", TABLES[t].name);
    }
}

/* The row count of table t in tx; negative on failure. */
static int64_t count_rows(const struct store_engine *e, struct db_tx *tx, size_t t)
{
    struct db_stmt *st = NULL;
    int64_t n = -1;
    int rc = e->query(tx, count_sql[t], NULL, 0, &st);
    if (rc == 0 && e->step(st) == DB_ROW)
        n = e->col_int(st, 0);
    if (st)
        e->finish(st);
    return rc ? rc : n;
}

/* Copies table t row by row; *rows counts them. */
static int copy_table(const struct store *from, struct db_tx *src, const struct store *to,
                      struct db_tx *dst, size_t t, int64_t *rows)
{
    const struct store_engine *fe = from->e, *te = to->e;
    const char *types = TABLES[t].types;
    int ncols = (int)strlen(types), rc;
    struct db_stmt *st = NULL;
    *rows = 0;
    if ((rc = fe->query(src, select_sql[t], NULL, 0, &st)))
        return rc;
    while ((rc = fe->step(st)) == DB_ROW) {
        struct db_arg a[COLS_MAX];
        struct db_stmt *ins = NULL;
        memset(a, 0, sizeof a);
        for (int c = 0; c < ncols; c++) {
            int null = fe->col_null(st, c);
            a[c].type = types[c];
            if (types[c] == 'i') {
                if (null)
                    a[c].type = 'n';
                else
                    a[c].i = fe->col_int(st, c);
            } else if (types[c] == 'b') {
                /* The source's buffer lives until its next step: the insert runs first. */
                a[c].blob = null ? NULL : fe->col_blob(st, c, &a[c].len);
            } else {
                a[c].text = null ? NULL : fe->col_text(st, c, NULL);
            }
        }
        rc = te->query(dst, insert_sql[t], a, ncols, &ins);
        if (ins) {
            while (rc == 0 && (rc = te->step(ins)) == DB_ROW)
                ;
            te->finish(ins);
            rc = rc == DB_DONE ? 0 : rc;
        }
        if (rc)
            break;
        ++*rows;
    }
    fe->finish(st);
    return rc == DB_DONE ? 0 : rc;
}

int store_copy(struct store *from, struct store *to, char *report, size_t cap, char *err,
               size_t errcap)
{
    struct db_tx *src = NULL, *dst = NULL;
    size_t used = 0;
    int rc;
    PHY_ASSERT(from != NULL && to != NULL && from != to); /* two stores admin opened */
    build_sql();
    if (report && cap)
        report[0] = '\0';
    if ((rc = to->e->begin(to->db, 1, &dst))) {
        snprintf(err, errcap, "target: cannot start a transaction (%s)", phy_strerror(rc));
        return rc;
    }
    for (size_t t = 0; t < NTABLES; t++) {
        int64_t n = count_rows(to->e, dst, t);
        if (n != 0) {
            snprintf(err, errcap, n > 0 ? "target is not empty (table %s has rows)"
                                        : "target: cannot read table %s",
                     TABLES[t].name);
            to->e->end(dst, 0);
            return n > 0 ? PHY_EEXIST : PHY_EIO;
        }
    }
    if ((rc = from->e->begin(from->db, 0, &src))) {
        snprintf(err, errcap, "source: cannot start a transaction (%s)", phy_strerror(rc));
        to->e->end(dst, 0);
        return rc;
    }
    for (size_t t = 0; t < NTABLES && rc == 0; t++) {
        int64_t rows = 0;
        rc = copy_table(from, src, to, dst, t, &rows);
        if (rc)
            snprintf(err, errcap, "table %s: %s", TABLES[t].name, phy_strerror(rc));
        else if (report && used < cap)
            used += (size_t)snprintf(report + used, cap - used, "%s%s=%lld", used ? " " : "",
                                     TABLES[t].name, (long long)rows);
    }
    from->e->end(src, 0);
    if (rc == 0 && to->e->after_copy && (rc = to->e->after_copy(dst)))
        snprintf(err, errcap, "target: cannot advance its ID sequences");
    int erc = to->e->end(dst, rc == 0);
    if (rc == 0 && erc) {
        rc = erc;
        snprintf(err, errcap, "target: commit failed (%s)", phy_strerror(erc));
    }
    return rc;
}
