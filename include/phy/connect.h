/* I/O-free validation of a proxy CONNECT request: target, identifier, allow-list. */
#ifndef PHY_CONNECT_H
#define PHY_CONNECT_H

#include <stddef.h>

#include "phy/http.h"
#include "phy/proxytoken.h"

#define PHY_CONNECT_MAX_HOST 253
#define PHY_CONNECT_MAX_IDENT 80

/* Outcome of validating one parsed request as a CONNECT: the HTTP status the proxy
 * must answer with when it is not 0 (400, 405, 407). */
struct phy_connect_req {
    char host[PHY_CONNECT_MAX_HOST + 1]; /* lower-cased DNS name or IPv4 literal */
    unsigned port;
    char ident[PHY_CONNECT_MAX_IDENT + 1]; /* Basic username: sn_<serial> or dev_<id> */
    char token[PHY_PROXY_TOKEN_MAX + 1];   /* Basic password of a dev_ ident, or "" */
};

/* Validates req (already parsed by phy_http_parse_request) as a CONNECT request.
 * Returns 0 and fills out when it is a well-formed CONNECT authority-form target
 * "host:port" (port 1..65535, host of [A-Za-z0-9.-] labels or IPv4, no userinfo)
 * carrying "Proxy-Authorization: Basic base64(ident:password)" whose ident matches
 * ^(sn_[A-Za-z0-9._-]{1,64}|dev_[A-Za-z0-9]{1,64})$; the password must be empty for
 * sn_ and is, for dev_, empty or a proxy token's characters ([A-Za-z0-9._-], up to
 * PHY_PROXY_TOKEN_MAX): checking the token itself is the caller's (it has the keys).
 * Otherwise returns the status to send: 405 for another method, 400 for a malformed
 * target or a Host header that disagrees with it, 407 for a missing or invalid
 * identifier. A request body (Content-Length > 0 or chunked) is 400. */
int phy_connect_check(const struct phy_http_request *req, struct phy_connect_req *out);

/* Glob match of a host against a pattern where '*' matches any run of characters
 * except '.'; case-insensitive. Returns 1 on match. */
int phy_host_match(const char *pattern, const char *host);

/* Parses "pattern:port" (port may be "*") into pattern (cap bytes) and *port
 * (0 = any). Returns 0 or PHY_EINVAL. */
int phy_connect_parse_allow(const char *spec, char *pattern, size_t cap, unsigned *port);

/* Parses "HOST=ADDR:PORT" (ADDR IPv4, or [IPv6]) into its parts. Returns 0 or
 * PHY_EINVAL. */
int phy_connect_parse_route(const char *spec, char *host, size_t hcap, char *addr, size_t acap,
                            unsigned *port);

#endif
