/* Token buckets per source address, in a fixed table: memory is bounded whatever
 * the number of sources. An address picks its bucket through a hash keyed with a
 * random seed, so a flood cannot aim at another source's bucket; two sources that
 * share a bucket only share a limit. IPv6 sources count per /64 (one host's usual
 * allocation). Thread-safe; time comes from the caller (monotonic milliseconds). */
#ifndef PHY_RATELIMIT_H
#define PHY_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

/* One token bucket: refilled at a rate up to a burst, one token per action. */
struct phy_bucket {
    double tokens;
    uint64_t at_ms; /* the last refill */
};

/* Fills b (burst tokens, as of now_ms). */
void phy_bucket_init(struct phy_bucket *b, double burst, uint64_t now_ms);

/* Refills b with rate tokens per second (> 0) since its last refill, at most burst,
 * and takes one token: 1 when taken, 0 when empty; then *retry_ms (optional) is the
 * wait until the next token. A clock that went back refills nothing. */
int phy_bucket_take(struct phy_bucket *b, double rate, double burst, uint64_t now_ms,
                    uint64_t *retry_ms);

struct phy_ratelimit;

/* rate tokens per second (> 0), burst tokens at most (>= 1); slots buckets (0 picks
 * 16384). NULL when out of memory or on a bad argument. */
struct phy_ratelimit *phy_ratelimit_new(double rate, double burst, size_t slots);
void phy_ratelimit_free(struct phy_ratelimit *rl);

/* Takes one token of the bucket of addr (16 bytes, see phy_addr16). 1 when it was
 * taken, 0 when the bucket is empty; then *retry_ms (optional) is the wait until
 * the next token. */
int phy_ratelimit_take(struct phy_ratelimit *rl, const uint8_t addr[16], uint64_t now_ms,
                       uint64_t *retry_ms);

#endif
