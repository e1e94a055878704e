/* Exponential backoff with full jitter for the agent's retries (I/O-free). */
#ifndef PHY_AGENT_BACKOFF_H
#define PHY_AGENT_BACKOFF_H

#include <stddef.h>
#include <stdint.h>

/* Upper bound of the wait before retry number attempt (0-based):
 * min(cap_ms, base_ms * 2^attempt), without overflow. */
uint64_t agent_backoff_ceiling_ms(uint64_t base_ms, uint64_t cap_ms, unsigned attempt);

/* Full-jitter wait: rnd (uniform 64-bit random) mapped onto
 * [0, agent_backoff_ceiling_ms(base_ms, cap_ms, attempt)]. */
uint64_t agent_backoff_delay_ms(uint64_t base_ms, uint64_t cap_ms, unsigned attempt, uint64_t rnd);

/* Decorrelated jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"):
 * min(cap_ms, uniform[base_ms, 3 * prev_ms]) with rnd a uniform 64-bit random;
 * prev_ms is the previous wait (base_ms for the first one; smaller values count as
 * base_ms). The result is always within [min(base_ms, cap_ms), cap_ms]. */
uint64_t agent_backoff_decorrelated_ms(uint64_t base_ms, uint64_t cap_ms, uint64_t prev_ms,
                                       uint64_t rnd);

/* A server's hint (Retry-After: seconds) as milliseconds: the value of the header
 * v[0..n) when it is delta-seconds (1..18 digits), capped at AGENT_RETRY_AFTER_MAX_S;
 * 0 for anything else (an HTTP date is not honoured: the device's clock may be off). */
#define AGENT_RETRY_AFTER_MAX_S 600
uint64_t agent_retry_after_ms(const char *v, size_t n);

/* The wait once a server gave a hint: delay when it is already at least hint_ms,
 * else uniform in [hint_ms, 2 * hint_ms] (rnd a uniform 64-bit random), so that the
 * devices a server turned away come back spread over the hint, not all at its end. */
uint64_t agent_backoff_at_least_ms(uint64_t delay, uint64_t hint_ms, uint64_t rnd);

/* The reconnect delay a stopping hub gave in its close reason (PHY_CLOSE_RECONNECT_KEY
 * followed by 1..9 digits, anywhere in reason[0..n)): 1 and *ms (capped at
 * PHY_RECONNECT_AFTER_MAX_MS), or 0 when the reason carries none. */
int agent_reconnect_hint_ms(const char *reason, size_t n, uint64_t *ms);

/* The wait after a close with such a hint: hint_ms plus a jitter of the agent's own,
 * uniform in [0, jitter_ms] (rnd a uniform 64-bit random). */
uint64_t agent_backoff_hinted_ms(uint64_t hint_ms, uint64_t jitter_ms, uint64_t rnd);

#endif
