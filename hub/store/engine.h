/* The contract between the store core (core.c: every rule, every operation of
 * struct phy_store_ops) and a store engine (sqlite.c, pg.c: connections,
 * transactions, statements, schema). Like SQLite's VFS under its core: the core
 * never names a database library, an engine never decides an outcome.
 *
 * SQL that the core hands to an engine is written once for both engines: numbered
 * parameters ?1..?N (or plain ?, numbered in order), standard SQL plus
 * ON CONFLICT and RETURNING, and two functions every engine provides:
 *   phy_tag(tags_json, key)  the string value of key in a JSON object text, or
 *                            NULL (not an object, no such key, not a string).
 * Integers are 64-bit; booleans are integers 0/1; blobs are raw bytes. Statement
 * texts are static (engines cache prepared statements by their address), except
 * through debug_query. */
#ifndef PHY_HUB_STORE_ENGINE_H
#define PHY_HUB_STORE_ENGINE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "store.h"

/* Formats an error message into err[errcap] (err may be NULL). */
__attribute__((format(printf, 3, 4))) static inline void store_errf(char *err, size_t errcap,
                                                                    const char *fmt, ...)
{
    va_list ap;
    if (!err || errcap == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errcap, fmt, ap);
    va_end(ap);
}

/* An engine's transaction could not be made serializable with the others (PostgreSQL
 * SQLSTATE 40001/40P01): the core rolls back and runs the whole operation again. */
#define STORE_ERETRY (-100)

/* STORE_SCHEMA_VERSION (store.h): both engines number their migrations alike. */

/* One bound parameter: 't' text (NULL text binds NULL), 'i' int64, 'n' a NULL integer,
 * 'b' blob (NULL blob binds NULL). */
struct db_arg {
    char type;
    const char *text;
    int64_t i;
    const void *blob;
    size_t len;
};

struct store_db;  /* an open database (a connection or a pool) */
struct db_tx;     /* one transaction on one connection */
struct db_stmt;   /* one executed statement and its rows */

#define DB_DONE 0 /* step: no more rows */
#define DB_ROW 1  /* step: a row is current */

struct store_engine {
    const char *name; /* "sqlite", "postgresql" */
    /* Several nodes may share the store: changes are announced to them (announce.h)
     * with "SELECT pg_notify(channel, line)" in their transaction. */
    int notifies;
    /* 1 when url names a store of this engine. */
    int (*accepts)(const char *url);
    /* Opens, and creates or migrates the schema to the version this build knows
     * (PHY_EUNSUPP for a newer one). err gets a message without secrets. */
    int (*open)(const char *url, const struct store_engine_opts *o, struct store_db **out,
                char *err, size_t errcap);
    void (*close)(struct store_db *db);
    /* Starts a transaction; write: it may write (SQLite: BEGIN IMMEDIATE;
     * PostgreSQL: SERIALIZABLE READ WRITE). PHY_EUNAVAIL when the database
     * cannot be reached. */
    int (*begin)(struct store_db *db, int write, struct db_tx **tx);
    /* Commits (commit = 1) or rolls back, and ends tx. Commit: 0, STORE_ERETRY or
     * PHY_EIO/PHY_EUNAVAIL (then nothing was committed, or, for a lost connection,
     * the outcome is unknown). 0 means durable: an engine may commit several
     * operations' transactions together (SQLite's group commit), but returns to each
     * only once the one commit that carries it is done. */
    int (*end)(struct db_tx *tx, int commit);
    /* Executes sql with args: 0 and *st (to step through and finish), or
     * PHY_EEXIST (a uniqueness violation), STORE_ERETRY, PHY_EUNAVAIL, PHY_EIO.
     * A failed statement leaves tx usable only for end(tx, 0). */
    int (*query)(struct db_tx *tx, const char *sql, const struct db_arg *args, int nargs,
                 struct db_stmt **st);
    /* DB_ROW, DB_DONE or a negative error as for query. */
    int (*step)(struct db_stmt *st);
    int (*col_null)(struct db_stmt *st, int col);
    int64_t (*col_int)(struct db_stmt *st, int col);
    /* Text or blob of a column (NULL for SQL NULL), valid until the next step or
     * finish; *len gets its length. */
    const char *(*col_text)(struct db_stmt *st, int col, size_t *len);
    const void *(*col_blob)(struct db_stmt *st, int col, size_t *len);
    /* Rows changed by an INSERT/UPDATE/DELETE (after its first step). */
    int64_t (*changes)(struct db_stmt *st);
    void (*finish)(struct db_stmt *st);
    /* After a committed transaction that erased sealed bodies (may be NULL). */
    void (*after_purge)(struct store_db *db);
    /* After the sweep deleted rows: give free space back to the file system where
     * the engine does not do it itself (may be NULL). */
    void (*compact)(struct store_db *db);
    /* store_copy, inside the target's transaction after every row was copied: make
     * the target's generated IDs continue after the copied ones (may be NULL). */
    int (*after_copy)(struct db_tx *tx);
    /* Group commit (may be NULL: the engine commits each transaction alone): write
     * transactions committed, and operations whose transactions they carried. */
    void (*commit_stats)(struct store_db *db, uint64_t *commits, uint64_t *ops);
    /* Tests and tools: runs one statement (any text, not cached) outside any
     * operation and copies the first column of the first row into out as text
     * ("<none>" without a row, "<null>" for NULL). */
    int (*debug_query)(struct store_db *db, const char *sql, char *out, size_t cap);
};

/* An open store (store.h's opaque struct store): its engine and the engine's
 * database. Only the core's files use it. */
struct soft_table;

struct store {
    const struct store_engine *e;
    struct store_db *db;
    struct soft_table *soft; /* pending polls' soft state (soft.h) */
    char node[STORE_NODE_ID_MAX + 1]; /* this hub node ("" until store_set_node) */
};

extern const struct store_engine store_engine_sqlite;
extern const struct store_engine store_engine_pg;

#endif
