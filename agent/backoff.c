/* Exponential backoff with full jitter: sleep = random(0, min(cap, base * 2^attempt)). */
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
