/* The soft poll table (soft.h): open addressing on a hash of the token hash, one
 * mutex, emptied as a whole by soft_take. The registrations' facts: a dense array
 * (appended to, emptied as a whole) indexed by a second open-addressing table. */
#include "soft.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "phy/err.h"

#define SLOTS (2 * SOFT_POLLS_MAX) /* a power of two: at most half full */

struct reg_entry {
    uint64_t serial_hash; /* soft_reg_forget compares this first */
    int valid;            /* 0: forgotten (the entry stays until the table empties) */
    int64_t filled_mono_ms;
    char token_hash[PHY_HASH_HEX_LEN + 1];
    struct soft_reg r;
};

struct soft_table {
    pthread_mutex_t mu;
    struct soft_poll *slots; /* token_hash[0] == '\0': free */
    size_t n;
    int64_t first_mono_ms; /* when the oldest entry came */
    /* the registrations' facts */
    int reg_on;
    uint64_t reg_gen;         /* bumped by every forget */
    uint32_t *reg_index;      /* SLOTS of them: 1 + the entry's position, 0 free */
    struct reg_entry *regs;   /* reg_n used of reg_cap */
    size_t reg_n, reg_cap;
};

static uint64_t hash_of(const char *text)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const char *c = text; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    return h;
}

static size_t slot_of(const char *token_hash)
{
    return (size_t)(hash_of(token_hash) & (SLOTS - 1));
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
    t->reg_on = 1;
    return t;
}

void soft_free(struct soft_table *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->mu);
    free(t->slots);
    free(t->reg_index);
    free(t->regs);
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

/* ---- the registrations' facts ---- */

/* mu held: empties the facts (the arrays are kept) and bumps the generation. */
static void reg_clear(struct soft_table *t)
{
    if (t->reg_index && t->reg_n > 0)
        memset(t->reg_index, 0, SLOTS * sizeof *t->reg_index);
    t->reg_n = 0;
    t->reg_gen++;
}

/* mu held: the index slot of token_hash, or the free slot where it would go. */
static uint32_t *reg_find(struct soft_table *t, const char *token_hash)
{
    size_t i = slot_of(token_hash);
    while (t->reg_index[i] && strcmp(t->regs[t->reg_index[i] - 1].token_hash, token_hash) != 0)
        i = (i + 1) & (SLOTS - 1);
    return &t->reg_index[i];
}

void soft_reg_enable(struct soft_table *t, int on)
{
    pthread_mutex_lock(&t->mu);
    t->reg_on = on != 0;
    reg_clear(t);
    pthread_mutex_unlock(&t->mu);
}

uint64_t soft_reg_gen(struct soft_table *t)
{
    pthread_mutex_lock(&t->mu);
    uint64_t g = t->reg_gen;
    pthread_mutex_unlock(&t->mu);
    return g;
}

int soft_reg_get(struct soft_table *t, const char *token_hash, int64_t mono_ms,
                 struct soft_reg *out)
{
    int found = 0;
    pthread_mutex_lock(&t->mu);
    if (t->reg_on && t->reg_n > 0) {
        uint32_t k = *reg_find(t, token_hash);
        const struct reg_entry *e = k ? &t->regs[k - 1] : NULL;
        if (e && e->valid && mono_ms - e->filled_mono_ms < SOFT_REG_MAX_AGE_MS) {
            *out = e->r;
            found = 1;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return found;
}

void soft_reg_put(struct soft_table *t, const char *token_hash, const struct soft_reg *r,
                  uint64_t gen, int64_t mono_ms)
{
    if (strlen(token_hash) != PHY_HASH_HEX_LEN)
        return;
    pthread_mutex_lock(&t->mu);
    if (!t->reg_on || gen != t->reg_gen)
        goto out;
    if (!t->reg_index && !(t->reg_index = calloc(SLOTS, sizeof *t->reg_index)))
        goto out;
    uint32_t *k = reg_find(t, token_hash);
    struct reg_entry *e;
    if (*k) {
        e = &t->regs[*k - 1];
    } else {
        if (t->reg_n >= SOFT_POLLS_MAX) { /* full: start again (gen moves: this fill goes) */
            reg_clear(t);
            goto out;
        }
        if (t->reg_n == t->reg_cap) {
            size_t cap = t->reg_cap ? t->reg_cap * 2 : 256;
            struct reg_entry *v = realloc(t->regs, cap * sizeof *v);
            if (!v)
                goto out;
            t->regs = v;
            t->reg_cap = cap;
        }
        e = &t->regs[t->reg_n++];
        *k = (uint32_t)t->reg_n;
        memcpy(e->token_hash, token_hash, PHY_HASH_HEX_LEN + 1);
    }
    e->r = *r;
    e->serial_hash = hash_of(r->serial);
    e->valid = 1;
    e->filled_mono_ms = mono_ms;
out:
    pthread_mutex_unlock(&t->mu);
}

void soft_reg_polled(struct soft_table *t, const char *token_hash, int64_t interval_s,
                     int64_t poll_ms)
{
    pthread_mutex_lock(&t->mu);
    if (t->reg_on && t->reg_n > 0) {
        uint32_t k = *reg_find(t, token_hash);
        struct reg_entry *e = k ? &t->regs[k - 1] : NULL;
        if (e && poll_ms >= e->r.last_poll_ms) {
            e->r.interval_s = interval_s;
            e->r.last_poll_ms = poll_ms;
            if (poll_ms > e->r.last_active_ms)
                e->r.last_active_ms = poll_ms;
        }
    }
    pthread_mutex_unlock(&t->mu);
}

void soft_reg_forget(struct soft_table *t, const char *serial)
{
    pthread_mutex_lock(&t->mu);
    if (!serial) {
        reg_clear(t);
    } else {
        uint64_t h = hash_of(serial);
        for (size_t i = 0; i < t->reg_n; i++)
            if (t->regs[i].serial_hash == h && strcmp(t->regs[i].r.serial, serial) == 0)
                t->regs[i].valid = 0;
        t->reg_gen++;
    }
    pthread_mutex_unlock(&t->mu);
}
