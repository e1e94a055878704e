/* Agent retry waits (I/O-free): full jitter (provisioning), decorrelated jitter (hub). */
#include "backoff.h"

#include <string.h>

#include "phy/protocol.h"

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

uint64_t agent_retry_after_ms(const char *v, size_t n)
{
    uint64_t s = 0;
    while (n > 0 && (*v == ' ' || *v == '\t')) { /* OWS around the value */
        v++;
        n--;
    }
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n == 0 || n > 18)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return 0;
        s = s * 10 + (uint64_t)(v[i] - '0');
    }
    if (s > AGENT_RETRY_AFTER_MAX_S)
        s = AGENT_RETRY_AFTER_MAX_S;
    return s * 1000;
}

uint64_t agent_backoff_at_least_ms(uint64_t delay, uint64_t hint_ms, uint64_t rnd)
{
    if (delay >= hint_ms)
        return delay;
    return hint_ms + rnd % (hint_ms + 1);
}

int agent_reconnect_hint_ms(const char *reason, size_t n, uint64_t *ms)
{
    static const char key[] = PHY_CLOSE_RECONNECT_KEY;
    const size_t klen = sizeof key - 1;
    const char *p = reason ? memmem(reason, n, key, klen) : NULL;
    uint64_t v = 0;
    size_t digits = 0;
    if (!p)
        return 0;
    p += klen;
    n -= (size_t)(p - reason);
    while (digits < n && digits < 10 && p[digits] >= '0' && p[digits] <= '9')
        v = v * 10 + (uint64_t)(p[digits++] - '0');
    if (digits == 0 || digits > 9)
        return 0;
    *ms = v > PHY_RECONNECT_AFTER_MAX_MS ? PHY_RECONNECT_AFTER_MAX_MS : v;
    return 1;
}

uint64_t agent_backoff_hinted_ms(uint64_t hint_ms, uint64_t jitter_ms, uint64_t rnd)
{
    return hint_ms + (jitter_ms == UINT64_MAX ? rnd : rnd % (jitter_ms + 1));
}
