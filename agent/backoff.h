/* Exponential backoff with full jitter for the agent's retries (I/O-free). */
#ifndef PHY_AGENT_BACKOFF_H
#define PHY_AGENT_BACKOFF_H

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

#endif
