/* phyproxy server: CONNECT tunnels on a libuv loop with limits, routing and access log. */
#ifndef PHY_PROXY_PROXY_H
#define PHY_PROXY_PROXY_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "phy/netaddr.h"
#include "phy/proxytoken.h"
#include "phy/ratelimit.h"
#include "policy.h"

struct proxy_config {
    union proxy_addr listen;
    struct proxy_policy *policy; /* borrowed; must outlive the proxy */
    unsigned max_tunnels_per_device;
    unsigned max_connections;
    uint64_t idle_timeout_ms;
    uint64_t connect_timeout_ms;
    uint64_t header_timeout_ms;
    int dns_fallback; /* resolve allowed hosts without a route through DNS */
    /* Resolved addresses that are not public are refused unless they lie here. */
    const struct phy_cidr *dns_allow; /* borrowed */
    size_t ndns_allow;
    /* dev_ identities must carry a proxy token valid under one of these keys
     * (none: no identity is verified, every tunnel counts as unauthenticated). */
    const struct phy_proxy_key *keys; /* borrowed */
    size_t nkeys;
    int dev_token_optional; /* a dev_ without a token passes, unauthenticated */
    /* Unauthenticated tunnels (sn_, and dev_ without a verified token) count per
     * (source address, identifier) against max_tunnels_per_device, per source
     * against max_tunnels_per_source, and their creation per source against the
     * token bucket new_tunnel_rate. */
    unsigned max_tunnels_per_source;
    struct phy_ratelimit *new_tunnel_rate; /* borrowed; NULL = no limit */
    unsigned fd_reserve; /* descriptors kept beyond 2 per connection (logs, DNS, …) */
    unsigned device_share; /* % of max_connections unauthenticated tunnels may not use */
};

struct proxy; /* opaque */

/* Binds and listens on cfg->listen (cfg is copied, its policy borrowed) and logs the
 * start-up line. Returns 0 with *out set, or a negative PHY_E* code with a one-line
 * message in err. Free with proxy_destroy after the loop has stopped. */
int proxy_start(uv_loop_t *loop, const struct proxy_config *cfg, struct proxy **out, char *err,
                size_t errcap);

/* Stops listening and closes every connection (each logged with outcome=shutdown).
 * The loop then runs out of handles by itself. Safe to call twice. */
void proxy_shutdown(struct proxy *px);

/* Frees px once uv_run has returned after proxy_shutdown. Accepts NULL. */
void proxy_destroy(struct proxy *px);

#endif
