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
    const char *proxy_ident;   /* Basic username for Proxy-Authorization (sn_… or dev_…) */
    const char *proxy_secret;  /* its password: a dev_'s proxy token, or NULL */
    const char *user_agent;    /* User-Agent (printable ASCII, at most 64), or NULL: phy/0.1 */
    const char *ca_file;       /* PEM bundle to verify the server against; NULL = system */
    int timeout_ms;            /* per connect / per read / per write, e.g. 10000 */
    long long cert_time_floor; /* 0: certificates are checked at the system time; else at
                                * max(system time, this Unix time), e.g. the build time,
                                * so that a device whose clock is behind still connects */
    struct phy_tls_resume *resume; /* NULL, or where the last TLS session with host is
                                    * kept and offered again (TLS resumption) */
};

/* The caller's memory of its last TLS session with one host: a connection to that host
 * offers it (a server that knows the ticket's key skips the certificate and its
 * signature), and the server's new tickets replace it. Thread-safe. */
struct phy_tls_resume;
struct phy_tls_resume *phy_tls_resume_new(void);
void phy_tls_resume_free(struct phy_tls_resume *r);

struct phy_client_response {
    int status; /* HTTP status, e.g. 202 */
    char *body; /* NUL-terminated, malloc'd; free with phy_client_response_free */
    size_t body_len;
    int sent; /* 1 once request bytes were written: also set when the call fails, then the
               * server may have acted on a request whose answer was lost */
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

/* A connection kept across requests (HTTP/1.1 persistent), e.g. for the agent's
 * polls: one tunnel and one TLS handshake while it waits instead of one per poll. */
struct phy_client_keep;

/* A keeper without a connection yet; NULL when out of memory. */
struct phy_client_keep *phy_client_keep_new(void);

/* As phy_client_request, on k's connection when it has one (opened with the same o),
 * else on a new one that is kept after the answer unless the server closes it (or
 * says Connection: close). When a kept connection fails before any answer (the
 * server closed it while idle), an idempotent request is sent once more on a fresh
 * connection; res->sent then describes that last attempt. */
int phy_client_keep_request(struct phy_client_keep *k, const struct phy_client_opts *o,
                            const char *method, const char *path, const char *headers,
                            const char *content_type, const char *body, size_t body_len,
                            int idempotent, struct phy_client_response *res, char *err,
                            size_t errcap);

/* Closes the kept connection (if any) and frees k. NULL-safe. */
void phy_client_keep_close(struct phy_client_keep *k);

/* Frees res->body (NULL-safe) and zeroes res. */
void phy_client_response_free(struct phy_client_response *res);

/* Splits "host", "host:port", "[v6]" or "[v6]:port" into host (without brackets,
 * capacity hcap) and *port (1..65535; def_port when absent, 0 = port required).
 * Returns 0 or PHY_EINVAL (empty host, bad port, too long, control bytes). */
int phy_client_parse_hostport(const char *s, char *host, size_t hcap, unsigned *port,
                              unsigned def_port);

/* ---- Long-lived connections (WebSocket sessions, load clients) ---- */

struct phy_http_response;

/* An established TLS connection from phy_client_open (opaque). */
struct phy_client_conn;

/* Opens a connection like phy_client_request (TCP, CONNECT through the proxy when
 * set, TLS 1.2+ with certificate and host-name verification, all bounded by
 * o->timeout_ms) and keeps it. When head is not NULL, head[0..head_len) must be a
 * complete request head the caller built (e.g. a WebSocket upgrade, at most
 * PHY_HTTP_DEFAULT_MAX_HEAD bytes): it is sent and one response head is read (any
 * status; see phy_client_conn_response). Bytes the server sent after that head stay
 * buffered and are returned first by phy_client_conn_read. On success *out is the
 * connection (free with phy_client_conn_close) and its socket is non-blocking from
 * then on. Returns 0, or a negative PHY_E* with a one-line reason in err. */
int phy_client_open(const struct phy_client_opts *o, const char *head, size_t head_len,
                    struct phy_client_conn **out, char *err, size_t errcap);

/* The response head read by phy_client_open, or NULL when no head was sent. Borrowed:
 * its strings live until phy_client_conn_close. */
const struct phy_http_response *phy_client_conn_response(const struct phy_client_conn *c);

/* The connection's socket, for poll(2). Owned by the connection. */
int phy_client_conn_fd(const struct phy_client_conn *c);

/* Non-blocking TLS read of up to cap bytes into buf. Returns the byte count (> 0),
 * 0 when the peer closed (with or without close_notify), PHY_EAGAIN when nothing is
 * available yet (*want_write = 1 when TLS first needs the socket writable, else wait
 * for readable), or PHY_EIO. */
int phy_client_conn_read(struct phy_client_conn *c, void *buf, size_t cap, int *want_write);

/* Non-blocking TLS write of up to n bytes. Returns the byte count written (> 0),
 * PHY_EAGAIN (retry with the same bytes when the socket is writable, or readable when
 * *want_read = 1; the buffer may move), or PHY_EIO. */
int phy_client_conn_write(struct phy_client_conn *c, const void *buf, size_t n, int *want_read);

/* Sends close_notify when the connection is healthy (never waits), closes the socket
 * and frees everything. NULL-safe. */
void phy_client_conn_close(struct phy_client_conn *c);

#endif
