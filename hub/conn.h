/* Internals shared by the hub's server, device sessions (WSS) and event streams (SSE):
 * one struct conn per accepted socket, all on the event loop thread. */
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

#define SERVER_MAX_HEAD 8192
#define SERVER_READ_CHUNK 16384
#define SERVER_ACCEPT_BATCH 128
#define SERVER_IDLE_BUCKETS 1024
/* Past --max-connections this many more are accepted to be told 503; past those,
 * new connections are closed at once. */
#define SERVER_OVERFLOW(max) ((max) / 8 > 8 ? (max) / 8 : 8)

struct idle_src; /* server.c */

enum conn_state {
    CONN_PROXY_HEAD, /* a trusted proxy's PROXY v2 header (optional), before TLS */
    CONN_HANDSHAKE, /* TLS handshake */
    CONN_READ,      /* reading an HTTP request */
    CONN_WORKING,   /* a request is on the thread pool */
    CONN_WRITING,   /* writing an HTTP response */
    CONN_WS,        /* a device session (WebSocket), see session.c */
    CONN_SSE,       /* a console event stream, see events.c */
};

/* What the connection turns into once the current response is written. */
enum conn_next { CONN_NEXT_HTTP, CONN_NEXT_WS, CONN_NEXT_SSE };

struct session;

struct conn {
    uv_poll_t poll;
    uv_timer_t timer;
    struct server *srv;
    struct conn *prev, *next;
    SSL *ssl;
    int fd;
    enum conn_state state;
    enum conn_next next_mode;
    int open_handles;
    int close_after_work;
    int keep_alive;
    int polling; /* events currently watched */
    char *in;    /* request bytes; NULL while idle */
    size_t in_len, in_cap;
    char *out;                        /* response bytes being written; NULL while idle */
    size_t out_len, out_off, out_cap; /* out_cap: CONN_SSE's growable buffer */
    uint64_t req_start_ms;
    struct session *sess;  /* CONN_WS */
    int64_t tenant_id;     /* CONN_SSE: whose events */
    char stream_key[PHY_HASH_HEX_LEN + 1]; /* CONN_SSE: the caller's cookie or token hash */
    struct sse_auth *sse_auth; /* CONN_SSE of a console session: NULL for API tokens */
    struct conn *sub_next; /* CONN_SSE: next subscriber */
    uint64_t accept_ms;
    unsigned over_capacity : 1; /* accepted past --max-connections: answered 503 */
    unsigned is_ws : 1;         /* counted in server.nws */
    unsigned idle_slot : 1;     /* counted among its source's idle keep-alive conns */
    unsigned head_only : 1;     /* the request in work is HEAD: the answer has no body */
    unsigned continued : 1;     /* 100 Continue sent for the request being read */
    unsigned served : 1;        /* a request was answered: later ones get a fresh deadline */
    char peer[64]; /* "ip:port" of the client: the PROXY header's source when proxied */
    char via_ident[PHY_CONNECT_MAX_IDENT + 1]; /* the proxy's identifier ("" if none) */
    int via_verified; /* the proxy checked that identifier's proxy token */
};

/* The console session behind an event stream: the stream ends with it. */
struct sse_auth {
    char session_hash[PHY_HASH_HEX_LEN + 1];
    int64_t deadline_ms; /* wall clock: idle or absolute end, as of the stream's start */
};

struct sessions; /* registry of live device sessions, session.c */

#define EVENTS_ENDED 64

struct server {
    struct hub *hub;
    uv_loop_t *loop;
    SSL_CTX *ctx;
    uv_poll_t listen_poll;
    uv_timer_t pause_timer;
    int listen_fd;
    int stopping;
    int listener_closed;
    size_t nconns;
    size_t nws; /* device sessions among nconns */
    struct idle_src *idle[SERVER_IDLE_BUCKETS]; /* idle keep-alive conns per source */
    uint64_t warned_ms;
    struct conn *conns;
    struct sessions *sessions;
    struct conn *subscribers; /* CONN_SSE connections */
    /* Console sessions ended by logout lately: a stream authorized just before the
     * logout but started after it is refused (ring of the last EVENTS_ENDED). */
    char ended[EVENTS_ENDED][PHY_HASH_HEX_LEN + 1];
    size_t ended_next;
    uint64_t rid_prefix;
    uint64_t rid_seq;
};

/* server.c */
void conn_close(struct conn *c);
/* Appends n bytes to a growable buffer (capacity doubles, at most limit bytes):
 * 0, PHY_ETOOBIG over the limit, PHY_ENOMEM. */
int conn_buf_append(char **buf, size_t *len, size_t *cap, const void *data, size_t n, size_t limit);
/* Frees the read buffer after clearing it (it may hold credentials). */
void conn_free_in(struct conn *c);
void conn_want(struct conn *c, int events);
void conn_deadline_ms(struct conn *c, uint64_t ms);
/* Maps an SSL_get_error result to poll events; -1 when the connection is done. */
int conn_ssl_want(SSL *ssl, int ret);
/* Appends bytes to the pending output of a CONN_SSE connection and writes what
 * the socket takes now. Returns 0 or PHY_ETOOBIG when over max_pending. */
int conn_out_append(struct conn *c, const char *data, size_t n, size_t max_pending);
/* Writes pending output (c->out from c->out_off); 0 when all written or the socket
 * is full (poll armed), -1 when the connection failed (already closing). */
int conn_flush(struct conn *c);

/* session.c: device sessions over WebSocket. */
int sessions_new(struct server *s);
void sessions_free(struct server *s);
/* A session for an authorized device, not yet started (NULL when out of memory). */
struct session *session_new(const char *device_id, int64_t tenant_id, int64_t gen);
/* Starts c->sess once its 101 answer is written: registers it (an older session of
 * the same device is closed with 4000), starts WebSocket framing and pings. */
void session_begin(struct conn *c);
/* Records in the store that an authorized session never started (offline). */
void session_abandon(struct server *s, const char *device_id, int64_t gen);
void session_drive(struct conn *c);
void session_timer(struct conn *c);
/* Called by conn_close: 1 when the conn must wait for work in flight. */
int session_detach(struct conn *c);
/* Runs a handler's effect (push a desired patch, close a session). */
void session_effect(struct server *s, const struct api_effect *e, const char *push_patch);
/* Closes every session with 1001 (hub shutting down). */
void sessions_shutdown(struct server *s);
size_t sessions_count(const struct server *s);
/* Validates a WebSocket upgrade request for /v1/hub; on success writes the
 * Sec-WebSocket-Accept value (29 bytes + NUL) into accept. Otherwise returns the
 * HTTP status to answer (400 or 426) with a message. */
int session_check_upgrade(const struct phy_http_request *rq, char accept[32], const char **msg);
/* Worker side of the upgrade: authenticates the device (Basic credentials) and
 * opens the session in the store. Fills res: 101 (+ device_id/tenant in out
 * params) or 401/503. */
void session_authorize(struct hub *h, const struct api_request *req, struct api_response *res,
                       char device_id[PHY_DEVICE_ID_LEN + 1], int64_t *tenant_id, int64_t *gen);

/* events.c: console event streams (Server-Sent Events). */
void events_begin(struct conn *c); /* c->tenant_id (and c->sse_auth) set */
/* Closes every event stream of the console session session_hash (logout). */
void events_end_session(struct server *s, const char *session_hash);
/* Open event streams of one caller (a console session or an API token): at most
 * EVENTS_PER_CALLER are served, and --max-streams-per-tenant per tenant. Each
 * holds a connection and may queue EVENTS_MAX_PENDING bytes (and as much again in
 * its socket's send buffer), then it is reset. */
#define EVENTS_PER_CALLER 8
#define EVENTS_MAX_PENDING (64u * 1024)
/* 1 when session_hash was ended by a logout lately (see struct server.ended). */
int events_session_ended(struct server *s, const char *session_hash);
/* Streams open now for the caller key (hex SHA-256 of its cookie or token) and for
 * the tenant. */
void events_count(struct server *s, const char *key, int64_t tenant_id, size_t *by_key,
                  size_t *by_tenant);
void events_drive(struct conn *c);
void events_timer(struct conn *c);
void events_detach(struct conn *c);
/* Sends one event to every stream of the tenant: "event: <type>\ndata: <json>\n\n". */
void events_publish(struct server *s, int64_t tenant_id, const char *type, const char *json);

#endif
