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

#endif
