/* The hub's connection transport as its modes see it: one struct conn per accepted
 * socket (TLS on a non-blocking socket, on the event loop thread), the calls a mode
 * makes on it, and struct conn_mode, the table of operations by which server.c drives
 * whatever a connection becomes after an HTTP request (a WebSocket device session in
 * session.c, an event stream in events.c). server.c knows modes only through that
 * table (the list is handed to server_start, see modes.c), the way libuv's uv__io_t
 * or nginx's c->read->handler keep the transport apart from the protocols; a mode
 * knows the transport only through this header. Plain HTTP request/response is the
 * server's own and needs no mode. */
#ifndef PHY_HUB_CONN_H
#define PHY_HUB_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "api.h"
#include "hub.h"
#include "phy/connect.h"
#include "phy/http.h"

struct server; /* server.c's own */
struct idle_src;
struct conn_mode;

enum conn_state {
    CONN_PROXY_HEAD, /* a trusted proxy's PROXY v2 header (optional), before TLS */
    CONN_HANDSHAKE, /* TLS handshake */
    CONN_READ,      /* reading an HTTP request */
    CONN_WORKING,   /* a request is on the thread pool */
    CONN_WRITING,   /* writing an HTTP response */
    CONN_MODE,      /* driven by its mode (c->mode) */
};

struct conn {
    /* ---- what a mode may use ---- */
    SSL *ssl;
    int fd;
    char *in; /* bytes read ahead of the mode (a mode may consume them); NULL while idle */
    size_t in_len, in_cap;
    char *out;                        /* output being written; NULL while idle */
    size_t out_len, out_off, out_cap; /* out_cap: conn_out_append's growable buffer */
    const struct conn_mode *mode; /* set by conn_upgrade*: what the connection becomes */
    void *mode_data;              /* the mode's state for this connection */
    struct server *srv;           /* opaque: for conn_hub, conn_loop, server_effect */
    char peer[64]; /* "ip:port" of the client: the PROXY header's source when proxied */

    /* ---- server.c's own ---- */
    uv_poll_t poll;
    uv_timer_t timer;
    struct conn *prev, *next;
    struct conn *qprev, *qnext; /* waiting for a handshake slot (--max-handshakes) */
    enum conn_state state;
    int open_handles;
    int close_after_work;
    int keep_alive;
    int polling; /* events currently watched */
    uint64_t req_start_ms;
    uint64_t accept_ms;
    unsigned over_capacity : 1; /* accepted past --max-connections: answered 503 */
    unsigned device_slot : 1;   /* counted among the device sessions (--device-share) */
    unsigned idle_slot : 1;     /* counted among its source's idle keep-alive conns */
    unsigned head_only : 1;     /* the request in work is HEAD: the answer has no body */
    unsigned continued : 1;     /* 100 Continue sent for the request being read */
    unsigned served : 1;        /* a request was answered: later ones get a fresh deadline */
    unsigned in_setup : 1;      /* counted among the handshakes in flight (--max-handshakes) */
    unsigned queued : 1;        /* accepted, waiting for a handshake slot */
    char via_ident[PHY_CONNECT_MAX_IDENT + 1]; /* the proxy's identifier ("" if none) */
    int via_verified; /* the proxy checked that identifier's proxy token */
};

/* One mode. Every operation runs on the event loop thread except authorize, which
 * runs on a thread-pool worker. Optional operations may be NULL. */
struct conn_mode {
    const char *name;        /* for logs */
    const char *path;        /* the request target it takes, GET only (else 405) */
    unsigned device_session; /* its connections use the share kept for devices */
    size_t work_size;        /* bytes of per-request state, zeroed, freed by the server */

    /* Per server: creates the mode's state (0, or PHY_E* and the server does not
     * start), closes what it holds when the server stops, frees it at the end. */
    int (*init)(struct server *s, struct hub *h, uv_loop_t *loop, void **state);
    void (*shutdown)(void *state);
    void (*fini)(void *state);

    /* Checks a complete request head before any work (optional): 0, or the HTTP
     * status to refuse with, *code and *msg set. */
    int (*check)(const struct phy_http_request *rq, void *work, const char **code,
                 const char **msg);
    /* Worker: authorizes the request (the store may be used) and fills res. */
    void (*authorize)(struct hub *h, const struct api_request *req, struct api_response *res,
                      void *work);
    /* Loop: after authorize. Returns 1 when it answered (conn_upgrade*, conn_refuse),
     * 0 when the server answers res as for any request. */
    int (*answer)(struct conn *c, void *state, const struct api_response *res, void *work);
    /* Loop (optional): an upgrade authorize accepted (101 or 200) that the server
     * refuses instead, the hub having begun to stop: undo what authorize did. */
    void (*cancel)(void *state, void *work);

    /* The connection's life in the mode, once the upgrade's answer is written. */
    void (*begin)(struct conn *c);
    void (*drive)(struct conn *c); /* the socket is ready (or there is input to handle) */
    void (*timer)(struct conn *c); /* the deadline set with conn_deadline_ms passed */
    /* The connection closes (also when it never began): frees c->mode_data. Returns
     * 1 when it must wait for work in flight; the mode then calls conn_close again. */
    int (*detach)(struct conn *c);

    /* A handler's or another mode's effect (optional): every mode sees every effect
     * and takes the kinds that are its own. */
    void (*effect)(void *state, const struct api_effect *e, const char *push_patch);
};

/* Sent with every answer of the hub (docs/protocol.md section 4): the console's
 * pages may load only their own scripts, styles and images, and no page may frame
 * them. */
#define CONN_SECURITY_HEADERS                                                                      \
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "           \
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "                 \
    "form-action 'self'; frame-ancestors 'none'; require-trusted-types-for 'script'; "             \
    "trusted-types 'none'\r\n"                                                                     \
    "Strict-Transport-Security: max-age=31536000\r\n"                                              \
    "X-Content-Type-Options: nosniff\r\n"                                                          \
    "Referrer-Policy: no-referrer\r\n"                                                             \
    "X-Frame-Options: DENY\r\n"

/* ---- the transport's calls (server.c) ---- */
struct hub *conn_hub(const struct conn *c);
uv_loop_t *conn_loop(const struct conn *c);
void conn_close(struct conn *c);
/* 1 when c's TLS session was resumed from a ticket (no certificate sent). */
int conn_tls_resumed(const struct conn *c);
/* Appends n bytes to a growable buffer (capacity doubles, at most limit bytes):
 * 0, PHY_ETOOBIG over the limit, PHY_ENOMEM. */
int conn_buf_append(char **buf, size_t *len, size_t *cap, const void *data, size_t n, size_t limit);
/* Frees the read buffer after clearing it (it may hold credentials). */
void conn_free_in(struct conn *c);
void conn_want(struct conn *c, int events);
void conn_deadline_ms(struct conn *c, uint64_t ms);
/* Maps an SSL_get_error result to poll events; -1 when the connection is done. */
int conn_ssl_want(SSL *ssl, int ret);
/* Appends bytes to the pending output of a connection in a mode and writes what
 * the socket takes now. Returns 0 or PHY_ETOOBIG when over max_pending. */
int conn_out_append(struct conn *c, const char *data, size_t n, size_t max_pending);
/* Writes pending output (c->out from c->out_off); 0 when all written or the socket
 * is full (poll armed), -1 when the connection failed (already closing). */
int conn_flush(struct conn *c);
/* Answers the request in work with status and the CRLF-terminated extra header
 * lines (no body, the connection kept), then hands the connection to mode with
 * data as c->mode_data: mode->begin once the answer is written, mode->detach if it
 * closes first. */
void conn_upgrade(struct conn *c, const struct conn_mode *mode, void *data, int status,
                  const char *extra);
/* As conn_upgrade with the answer's bytes given whole (a head without a length). */
void conn_upgrade_raw(struct conn *c, const struct conn_mode *mode, void *data, const char *bytes,
                      size_t n);
/* Answers {"error": code, "message": msg} with status and closes after it. */
void conn_refuse(struct conn *c, int status, const char *code, const char *msg);
/* Hands an effect to every mode of the server (see struct conn_mode.effect). */
void server_effect(struct server *s, const struct api_effect *e, const char *push_patch);

#endif
