/* The soft poll table (soft.h): open addressing on a hash of the token hash, one
 * mutex, emptied as a whole by soft_take. */
#include "soft.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "phy/err.h"

#define SLOTS (2 * SOFT_POLLS_MAX) /* a power of two: at most half full */

struct soft_table {
    pthread_mutex_t mu;
    struct soft_poll *slots; /* token_hash[0] == '\0': free */
    size_t n;
    int64_t first_mono_ms; /* when the oldest entry came */
};

static size_t slot_of(const char *token_hash)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const char *c = token_hash; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    return (size_t)(h & (SLOTS - 1));
}

/* mu held: the slot holding token_hash, or the free slot where it would go. */
static struct soft_poll *find(struct soft_table *t, const char *token_hash)
{
    size_t i = slot_of(token_hash);
    while (t->slots[i].token_hash[0] && strcmp(t->slots[i].token_hash, token_hash) != 0)
        i = (i + 1) & (SLOTS - 1);
    return &t->slots[i];
}

struct soft_table *soft_new(void)
{
    struct soft_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    if (pthread_mutex_init(&t->mu, NULL) != 0) {
        free(t);
        return NULL;
    }
    return t;
}

void soft_free(struct soft_table *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->mu);
    free(t->slots);
    free(t);
}

int soft_get(struct soft_table *t, const char *token_hash, struct soft_poll *out)
{
    int found = 0;
    pthread_mutex_lock(&t->mu);
    if (t->slots) {
        struct soft_poll *e = find(t, token_hash);
        if (e->token_hash[0]) {
            *out = *e;
            found = 1;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return found;
}

int soft_put(struct soft_table *t, const char *token_hash, int64_t interval_s,
             int64_t last_poll_ms, int64_t mono_ms)
{
    int rc = 0;
    if (strlen(token_hash) != PHY_HASH_HEX_LEN)
        return PHY_EINVAL;
    pthread_mutex_lock(&t->mu);
    /* The slots are allocated when the first entry arrives (a hub that never sees a
     * poll keeps none), then kept. */
    if (!t->slots && !(t->slots = calloc(SLOTS, sizeof *t->slots))) {
        rc = PHY_ENOMEM;
        goto out;
    }
    struct soft_poll *e = find(t, token_hash);
    if (!e->token_hash[0]) {
        if (t->n >= SOFT_POLLS_MAX) {
            rc = PHY_ETOOBIG;
            goto out;
        }
        memcpy(e->token_hash, token_hash, PHY_HASH_HEX_LEN + 1);
        if (t->n++ == 0)
            t->first_mono_ms = mono_ms;
    }
    if (last_poll_ms >= e->last_poll_ms) {
        e->interval_s = interval_s;
        e->last_poll_ms = last_poll_ms;
    }
out:
    pthread_mutex_unlock(&t->mu);
    return rc;
}

int soft_due(struct soft_table *t, int64_t now_ms, int64_t max_age_ms)
{
    pthread_mutex_lock(&t->mu);
    int due = t->n > 0 && now_ms - t->first_mono_ms >= max_age_ms;
    pthread_mutex_unlock(&t->mu);
    return due;
}

struct soft_poll *soft_take(struct soft_table *t, size_t *n)
{
    struct soft_poll *out = NULL;
    size_t j = 0;
    *n = 0;
    pthread_mutex_lock(&t->mu);
    /* Copied out and cleared in place: the slots stay allocated for the next polls
     * (a poll flushes every second while polls come). Left as they are when there is
     * no memory for the copy: the next flush takes them. */
    if (t->n > 0 && (out = malloc(t->n * sizeof *out))) {
        for (size_t i = 0; i < SLOTS && j < t->n; i++) {
            if (t->slots[i].token_hash[0]) {
                out[j++] = t->slots[i];
                t->slots[i].token_hash[0] = '\0';
            }
        }
        t->n = 0;
    }
    pthread_mutex_unlock(&t->mu);
    *n = j;
    return out;
}
