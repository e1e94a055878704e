/* Agent retry waits (I/O-free): full jitter (provisioning), decorrelated jitter (hub). */
#include "backoff.h"

/* min(cap, base * 2^attempt) computed without shifting past 64 bits. */
uint64_t agent_backoff_ceiling_ms(uint64_t base_ms, uint64_t cap_ms, unsigned attempt)
{
    if (base_ms >= cap_ms)
        return cap_ms;
    if (attempt >= 63 || base_ms > (cap_ms >> attempt))
        return cap_ms;
    return base_ms << attempt;
}

/* Uniform in [0, ceiling]; the modulo bias of a 64-bit draw is negligible here. */
uint64_t agent_backoff_delay_ms(uint64_t base_ms, uint64_t cap_ms, unsigned attempt, uint64_t rnd)
{
    uint64_t ceiling = agent_backoff_ceiling_ms(base_ms, cap_ms, attempt);

    if (ceiling == UINT64_MAX)
        return rnd;
    return rnd % (ceiling + 1);
}

/* min(cap, base + rnd mod (3 * prev - base + 1)), saturating instead of overflowing. */
uint64_t agent_backoff_decorrelated_ms(uint64_t base_ms, uint64_t cap_ms, uint64_t prev_ms,
                                       uint64_t rnd)
{
    uint64_t hi, span, r;

    if (base_ms >= cap_ms)
        return cap_ms;
    if (prev_ms < base_ms)
        prev_ms = base_ms;
    hi = prev_ms > UINT64_MAX / 3 ? UINT64_MAX : prev_ms * 3;
    span = hi - base_ms;
    r = base_ms + (span == UINT64_MAX ? rnd : rnd % (span + 1));
    return r < cap_ms ? r : cap_ms;
}
