/* Per-source token buckets in a fixed, seeded hash table; see the header. */
#include "phy/ratelimit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "phy/crypto.h"

#define DEFAULT_SLOTS 16384

struct bucket {
    struct phy_bucket b;
    unsigned used : 1;
};

void phy_bucket_init(struct phy_bucket *b, double burst, uint64_t now_ms)
{
    b->tokens = burst;
    b->at_ms = now_ms;
}

int phy_bucket_take(struct phy_bucket *b, double rate, double burst, uint64_t now_ms,
                    uint64_t *retry_ms)
{
    if (now_ms > b->at_ms) {
        b->tokens += (double)(now_ms - b->at_ms) * rate / 1000.0;
        if (b->tokens > burst)
            b->tokens = burst;
        b->at_ms = now_ms;
    }
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return 1;
    }
    if (retry_ms != NULL)
        *retry_ms = (uint64_t)((1.0 - b->tokens) * 1000.0 / rate) + 1;
    return 0;
}

struct phy_ratelimit {
    pthread_mutex_t mu;
    double rate, burst;
    size_t slots;
    uint64_t seed[2];
    struct bucket *b;
};

struct phy_ratelimit *phy_ratelimit_new(double rate, double burst, size_t slots)
{
    struct phy_ratelimit *rl;

    if (!(rate > 0) || !(burst >= 1))
        return NULL;
    rl = calloc(1, sizeof *rl);
    if (rl == NULL)
        return NULL;
    rl->slots = slots != 0 ? slots : DEFAULT_SLOTS;
    rl->rate = rate;
    rl->burst = burst;
    rl->b = calloc(rl->slots, sizeof *rl->b);
    if (rl->b == NULL || phy_random_bytes(rl->seed, sizeof rl->seed) != 0 ||
        pthread_mutex_init(&rl->mu, NULL) != 0) {
        free(rl->b);
        free(rl);
        return NULL;
    }
    return rl;
}

void phy_ratelimit_free(struct phy_ratelimit *rl)
{
    if (rl == NULL)
        return;
    pthread_mutex_destroy(&rl->mu);
    free(rl->b);
    free(rl);
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static size_t slot_of(const struct phy_ratelimit *rl, const uint8_t addr[16])
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    uint8_t k[16];
    uint64_t hi, lo;

    memcpy(k, addr, 16);
    if (memcmp(k, v4mapped, 12) != 0)
        memset(k + 8, 0, 8); /* IPv6: the /64 */
    memcpy(&hi, k, 8);
    memcpy(&lo, k + 8, 8);
    return (size_t)(mix(mix(hi ^ rl->seed[0]) ^ lo ^ rl->seed[1]) % rl->slots);
}

int phy_ratelimit_take(struct phy_ratelimit *rl, const uint8_t addr[16], uint64_t now_ms,
                       uint64_t *retry_ms)
{
    struct bucket *b;
    int ok;

    pthread_mutex_lock(&rl->mu);
    b = &rl->b[slot_of(rl, addr)];
    if (!b->used) {
        b->used = 1;
        phy_bucket_init(&b->b, rl->burst, now_ms);
    }
    ok = phy_bucket_take(&b->b, rl->rate, rl->burst, now_ms, retry_ms);
    pthread_mutex_unlock(&rl->mu);
    return ok;
}
