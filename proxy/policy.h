/* phyproxy policy tables: route table, allow-list and per-identifier tunnel counts. */
#ifndef PHY_PROXY_POLICY_H
#define PHY_PROXY_POLICY_H

#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

#include "phy/connect.h"

/* An IPv4 or IPv6 socket address, small enough to keep per connection. */
union proxy_addr {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
};

/* "--route HOST=ADDR:PORT[,proxy-protocol=on|off]": every CONNECT to HOST (any
 * port) goes to addr, behind a PROXY protocol v2 header unless it is off. */
struct proxy_route {
    char host[PHY_CONNECT_MAX_HOST + 1]; /* lower case; exact name or '*' pattern */
    union proxy_addr addr;
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
};

/* Adds a route from "HOST=ADDR:PORT[,proxy-protocol=on|off]" (ADDR IPv4 or [IPv6];
 * the header is on by default). A later route for the same host replaces the earlier one. Returns 0, PHY_EINVAL (message in err) or
 * PHY_ENOMEM. */
int proxy_policy_add_route(struct proxy_policy *p, const char *spec, char *err, size_t errcap);

/* Adds an allow-list entry from "PATTERN:PORT" (PORT may be "*"). Returns 0,
 * PHY_EINVAL (message in err) or PHY_ENOMEM. */
int proxy_policy_add_allow(struct proxy_policy *p, const char *spec, char *err, size_t errcap);

/* The route for host or NULL. Borrowed from p. An exact (case-insensitive) name
 * wins; otherwise the first route whose '*' pattern matches (phy_host_match). */
const struct proxy_route *proxy_policy_route(const struct proxy_policy *p, const char *host);

/* 1 when host:port matches an allow-list entry. */
int proxy_policy_allowed(const struct proxy_policy *p, const char *host, unsigned port);

/* Takes one tunnel slot for ident when it holds fewer than limit. Returns the
 * entry (borrowed, valid until the matching release), or NULL with *err set to
 * PHY_ETOOBIG (limit reached) or PHY_ENOMEM. */
struct proxy_ident *proxy_ident_acquire(struct proxy_policy *p, const char *ident, unsigned limit,
                                        int *err);

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
