/* Blocking HTTPS/1.1 client, optionally through a phyproxy CONNECT tunnel, for the
 * CLI and the agent's provisioning phase (no event loop there). */
#ifndef PHY_CLIENT_H
#define PHY_CLIENT_H

#include <stddef.h>

#define PHY_CLIENT_MAX_BODY (1u << 20)

struct phy_client_opts {
    const char *host;         /* TLS server name and Host header, e.g. portal-eu.phystack.com */
    unsigned port;            /* e.g. 443 */
    const char *connect_addr; /* where to connect when no proxy: IP literal or name, with an
                               * optional ":PORT" ("[v6]:PORT"); port defaults to port;
                               * NULL = host */
    const char *proxy_host;   /* NULL for a direct connection */
    unsigned proxy_port;
    const char *proxy_ident; /* Basic username for Proxy-Authorization (sn_… or dev_…) */
    const char *ca_file;     /* PEM bundle to verify the server against; NULL = system */
    int timeout_ms;          /* per connect / per read / per write, e.g. 10000 */
};

struct phy_client_response {
    int status; /* HTTP status, e.g. 202 */
    char *body; /* NUL-terminated, malloc'd; free with phy_client_response_free */
    size_t body_len;
};

/* Performs one request on a fresh connection: TCP (+ CONNECT through the proxy when
 * set) + TLS 1.2+ with certificate and host-name verification + request + response
 * (Content-Length or chunked, at most PHY_CLIENT_MAX_BODY) and closes.
 * headers: extra "Name: value\r\n" lines or NULL. body may be NULL.
 * Returns 0 with *res filled, or a negative PHY_E* with a one-line reason in err
 * ("proxy answered 403", "certificate verify failed: …", "timeout reading"). */
int phy_client_request(const struct phy_client_opts *o, const char *method, const char *path,
                       const char *headers, const char *content_type, const char *body,
                       size_t body_len, struct phy_client_response *res, char *err, size_t errcap);

/* Frees res->body (NULL-safe) and zeroes res. */
void phy_client_response_free(struct phy_client_response *res);

/* Splits "host", "host:port", "[v6]" or "[v6]:port" into host (without brackets,
 * capacity hcap) and *port (1..65535; def_port when absent, 0 = port required).
 * Returns 0 or PHY_EINVAL (empty host, bad port, too long, control bytes). */
int phy_client_parse_hostport(const char *s, char *host, size_t hcap, unsigned *port,
                              unsigned def_port);

#endif
