/* Soft state of pending provisioning polls (issue 13): when each registration last
 * polled and the interval it was given. A pending poll is answered from a read
 * transaction and records these here, in memory; store_soft_flush writes them to the
 * store in one transaction (a poll does it once the oldest entry is a second old,
 * the hub's heartbeat too), so that a poll costs no disk sync. Losing them (a crash) only forgets a slow_down; issuance is not soft. */
#ifndef PHY_HUB_STORE_SOFT_H
#define PHY_HUB_STORE_SOFT_H

#include <stddef.h>
#include <stdint.h>

#include "phy/crypto.h"

/* Registrations whose soft state a table holds at most; a poll past it is written to
 * the store at once, as before. */
#define SOFT_POLLS_MAX 65536
/* A poll writes the table once its oldest entry is this old. */
#define SOFT_FLUSH_AFTER_MS 1000

struct soft_poll {
    char token_hash[PHY_HASH_HEX_LEN + 1];
    int64_t interval_s;
    int64_t last_poll_ms;
};

struct soft_table;

struct soft_table *soft_new(void);
void soft_free(struct soft_table *t);
/* 1 and the entry of token_hash, or 0 when there is none. */
int soft_get(struct soft_table *t, const char *token_hash, struct soft_poll *out);
/* Records a poll (a later poll of the same registration replaces it); mono_ms is a
 * monotonic clock for soft_due. 0, or PHY_ETOOBIG when the table is full. */
int soft_put(struct soft_table *t, const char *token_hash, int64_t interval_s,
             int64_t last_poll_ms, int64_t mono_ms);
/* 1 when the oldest entry was recorded at least max_age_ms before now_ms (monotonic
 * ms, as given to soft_put): time to write them. */
int soft_due(struct soft_table *t, int64_t now_ms, int64_t max_age_ms);
/* Takes every entry out (the caller frees the array): *n of them, NULL when none. */
struct soft_poll *soft_take(struct soft_table *t, size_t *n);

/* ---- the registrations pending polls read ----
 * A pending poll of a registration whose facts this table holds is answered from
 * them, with no store transaction, when the answer is "pending" or slow_down; any
 * other answer is the store's. Facts are filled by a poll that read the store and
 * forgotten when something may change them: soft_reg_forget after a committed change
 * of the serial's registrations or issuances, on this node or announced by another
 * (a claim, a code, a re-arm, a purge), all of them when the announcements may have
 * been missed. A fill races no change: it is dropped when anything was forgotten
 * since soft_reg_gen was read, before the store read. Facts older than
 * SOFT_REG_MAX_AGE_MS are read again (a bound on what a missed change could cost: a
 * poll answered "pending" that the store would have answered otherwise). */
#define SOFT_REG_MAX_AGE_MS 30000

struct soft_reg {
    char serial[PHY_SERIAL_MAX + 1];
    char code[PHY_CODE_LEN + 1]; /* "" when none */
    int64_t code_expires_ms;
    int64_t interval_s;     /* as of the last poll this node answered */
    int64_t last_poll_ms;   /* idem */
    int64_t last_active_ms; /* idem */
};

/* Turns the facts on or off (off: every get misses and they are forgotten). On at
 * soft_new. */
void soft_reg_enable(struct soft_table *t, int on);
/* The generation to give soft_reg_put: read it before the store read. */
uint64_t soft_reg_gen(struct soft_table *t);
/* 1 and the facts of token_hash when they are at most SOFT_REG_MAX_AGE_MS old
 * (mono_ms: the monotonic clock), else 0. */
int soft_reg_get(struct soft_table *t, const char *token_hash, int64_t mono_ms,
                 struct soft_reg *out);
/* Records the facts of token_hash as read from the store at generation gen (their
 * age starts at mono_ms), unless something was forgotten since (then nothing). */
void soft_reg_put(struct soft_table *t, const char *token_hash, const struct soft_reg *r,
                  uint64_t gen, int64_t mono_ms);
/* A poll of token_hash answered from its facts: its time and the interval it was
 * given (the facts keep their age). */
void soft_reg_polled(struct soft_table *t, const char *token_hash, int64_t interval_s,
                     int64_t poll_ms);
/* Forgets the facts of the serial's registrations; NULL: all of them. */
void soft_reg_forget(struct soft_table *t, const char *serial);

#endif
