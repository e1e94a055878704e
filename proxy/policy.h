/* phyproxy policy tables: route table with upstream health, allow-list and
 * per-identifier tunnel counts. No I/O: the server feeds in results and times. */
#ifndef PHY_PROXY_POLICY_H
#define PHY_PROXY_POLICY_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "phy/connect.h"

/* An IPv4 or IPv6 socket address, small enough to keep per connection. */
union proxy_addr {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
};

#define PROXY_ROUTE_MAX_UPSTREAMS 16
#define PROXY_BACKOFF_DEFAULT_MS 1000      /* first backoff of a failed upstream */
#define PROXY_BACKOFF_MAX_DEFAULT_MS 30000 /* doubling stops here */

/* One upstream of a route, and what the proxy has learnt about it. */
struct proxy_upstream {
    union proxy_addr addr;
    unsigned live;          /* tunnels holding it: connecting, or relaying until a side ends */
    unsigned failures;      /* consecutive failed connects and probes; 0: up */
    uint64_t retry_ms;      /* while down: when its backoff ends and a probe may start */
    uint64_t down_since_ms; /* while down: when it went down */
    int probing;            /* a probe connect is under way */
};

/* "--route HOST=ADDR:PORT[,ADDR:PORT…][,proxy-protocol=on|off]": every CONNECT to
 * HOST (any port) goes to one of the upstreams (proxy_route_pick), behind a PROXY
 * protocol v2 header unless it is off. */
struct proxy_route {
    char host[PHY_CONNECT_MAX_HOST + 1]; /* lower case; exact name or '*' pattern */
    struct proxy_upstream up[PROXY_ROUTE_MAX_UPSTREAMS];
    size_t nup;         /* 1..PROXY_ROUTE_MAX_UPSTREAMS */
    size_t next;        /* round robin: a tie goes to the first index at or after this */
    int proxy_protocol;
};

/* "--allow PATTERN:PORT": phy_host_match pattern, port 0 = any. */
struct proxy_allow {
    char pattern[PHY_CONNECT_MAX_HOST + 1];
    unsigned port;
};

/* Longest slot key: an identifier, or "ADDR IDENT" for one that proves nothing. */
#define PROXY_SLOT_KEY_MAX 160

/* Live tunnel count of one slot key; exists only while count > 0. */
struct proxy_ident {
    struct proxy_ident *next;
    void *holders; /* the proxy's list of the tunnels holding a slot (not used here) */
    unsigned count;
    char ident[PROXY_SLOT_KEY_MAX + 1];
};

#define PROXY_IDENT_BUCKETS 1024

/* Owns everything it points to; zero-initialise, free with proxy_policy_free. */
struct proxy_policy {
    struct proxy_route *routes;
    size_t nroutes;
    struct proxy_allow *allows;
    size_t nallows;
    struct proxy_ident *buckets[PROXY_IDENT_BUCKETS];
    size_t nidents; /* identifiers with at least one live tunnel */
    /* A failed upstream is skipped for backoff_ms, doubled per further failure up
     * to backoff_max_ms (0: the defaults above; a cap below the base is the base). */
    uint64_t backoff_ms;
    uint64_t backoff_max_ms;
};

/* Adds a route from "HOST=ADDR:PORT[,ADDR:PORT…][,proxy-protocol=on|off]" (ADDR IPv4
 * or [IPv6]; at most PROXY_ROUTE_MAX_UPSTREAMS distinct upstreams; the option at most
 * once, anywhere in the list; the header is on by default). A later route for the
 * same host replaces the earlier one. Returns 0, PHY_EINVAL (message in err) or
 * PHY_ENOMEM. */
int proxy_policy_add_route(struct proxy_policy *p, const char *spec, char *err, size_t errcap);

/* Adds an allow-list entry from "PATTERN:PORT" (PORT may be "*"). Returns 0,
 * PHY_EINVAL (message in err) or PHY_ENOMEM. */
int proxy_policy_add_allow(struct proxy_policy *p, const char *spec, char *err, size_t errcap);

/* The route for host or NULL. Borrowed from p, valid until the next add_route or
 * proxy_policy_free. An exact (case-insensitive) name wins; otherwise the first
 * route whose '*' pattern matches (phy_host_match). */
struct proxy_route *proxy_policy_route(struct proxy_policy *p, const char *host);

/* Picks the upstream for a tunnel's next connect attempt among those whose bit
 * (1u << index) is clear in tried: of the upstreams that are up, the one with the
 * fewest live tunnels, a tie going round robin; when every untried upstream is
 * down, the same choice among those (tried anyway rather than refusing). Counts a
 * live tunnel on it, given back with proxy_upstream_release. Returns the index, or
 * -1 when every upstream has been tried. */
int proxy_route_pick(struct proxy_route *r, unsigned tried);

/* Gives back the live tunnel counted by proxy_route_pick. */
void proxy_upstream_release(struct proxy_route *r, size_t index);

/* Records a failed connect or probe of r->up[index] at now_ms: it is down, skipped
 * until now_ms + backoff (the base doubled per consecutive failure, capped), then
 * probed. A route with one upstream keeps no state: there is nothing to fail over
 * to. Returns 1 when this took it down (it was up), else 0. */
int proxy_upstream_failed(const struct proxy_policy *p, struct proxy_route *r, size_t index,
                          uint64_t now_ms);

/* Records a successful connect or probe of r->up[index]. Returns 1 when that brought
 * it back up (it was down), else 0. */
int proxy_upstream_ok(struct proxy_route *r, size_t index);

/* 1 when every route has an upstream that is up (a route with one upstream keeps no
 * state, so it always counts as up): the proxy's /readyz. */
int proxy_policy_routes_up(const struct proxy_policy *p);

/* Finds a down upstream whose backoff has ended by now_ms and that is not being
 * probed: returns 1 with *route (borrowed) and *index set; the caller marks it
 * probing before asking again. Otherwise returns 0 with *next_ms the earliest time
 * one falls due (UINT64_MAX: none). */
int proxy_policy_probe_due(struct proxy_policy *p, uint64_t now_ms, struct proxy_route **route,
                           size_t *index, uint64_t *next_ms);

/* 1 when host:port matches an allow-list entry. */
int proxy_policy_allowed(const struct proxy_policy *p, const char *host, unsigned port);

/* Takes one tunnel slot for ident when it holds fewer than limit. Returns the
 * entry (borrowed, valid until the matching release), or NULL with *err set to
 * PHY_ETOOBIG (limit reached) or PHY_ENOMEM. */
struct proxy_ident *proxy_ident_acquire(struct proxy_policy *p, const char *ident, unsigned limit,
                                        int *err);

/* The entry of ident, or NULL when no slot of it is held. */
struct proxy_ident *proxy_ident_find(struct proxy_policy *p, const char *ident);

/* Returns the slot taken by proxy_ident_acquire; the entry may be freed. */
void proxy_ident_release(struct proxy_policy *p, struct proxy_ident *e);

/* Frees the tables and every identifier entry. Accepts a zeroed policy. */
void proxy_policy_free(struct proxy_policy *p);

/* Parses "ADDR:PORT" with ADDR an IPv4 literal or a bracketed IPv6 literal, port
 * 1..65535. Returns 0 or PHY_EINVAL. */
int proxy_addr_parse_hostport(const char *spec, union proxy_addr *out);

/* Builds out from an address literal without brackets and a port. 0 or PHY_EINVAL. */
int proxy_addr_from(const char *addr, unsigned port, union proxy_addr *out);

/* Formats "1.2.3.4:443" or "[::1]:443" into out (cap >= 64 is always enough);
 * "-" for an unset address. Returns out. */
char *proxy_addr_format(const union proxy_addr *a, char *out, size_t cap);

#endif
