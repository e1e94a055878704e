/* phyproxy server: CONNECT tunnels on a libuv loop with limits, routing and access log. */
#include "proxy.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "phy/connect.h"
#include "phy/err.h"
#include "phy/http.h"
#include "phy/log.h"
#include "phy/proxyproto.h"

/* One read's buffer. A side is not read while the other side has anything queued
 * (what its socket did not take at once): a tunnel holds at most one buffer per
 * direction, whatever the sizes of the reads, and none while data flows. */
#define RELAY_BUF_SIZE (256 * 1024)
#define POOL_MAX 32 /* relay buffers kept for reuse (8 MiB) */
#define HEAD_MAX PHY_HTTP_DEFAULT_MAX_HEAD
#define HEAD_CAP (HEAD_MAX + 1) /* one byte more than a head may have: ETOOBIG */
#define LINGER_MS 1000          /* after an error answer, drain the client this long */
#define LINGER_MAX_BYTES (256 * 1024)
#define LISTEN_BACKLOG 1024
#define LOG_TARGET_MAX 96
#define OVERFLOW_CONNS 64  /* answered 503 beyond max_connections; past this, closed at once */
#define WARN_EVERY_MS 1000 /* at most one resource warning of a kind per second */

static const char established[] = "HTTP/1.1 200 Connection established\r\n\r\n";

enum tunnel_state {
    T_HEAD,       /* reading the CONNECT head */
    T_CONNECTING, /* resolving or connecting upstream */
    T_RELAY,      /* 200 sent, bytes flow both ways */
    T_REFUSING,   /* error answer sent or queued, draining the client */
    T_CLOSING,    /* handles closing; freed by the last close callback */
};

enum outcome {
    O_NONE,
    O_OK,
    O_IDLE,
    O_CLIENT_ERROR,
    O_UPSTREAM_ERROR,
    O_SHUTDOWN,
    O_NO_REQUEST,
    O_CLIENT_CLOSED,
    O_400,
    O_403,
    O_405,
    O_407,
    O_407_TOKEN,
    O_408,
    O_429,
    O_429_SOURCE,
    O_429_RATE,
    O_403_PRIVATE,
    O_431,
    O_500,
    O_502_NO_ROUTE,
    O_502_DNS,
    O_502_UPSTREAM,
    O_503,
    O_504,
    O_HEALTHY,
    O_NOT_READY,
};

/* Log name of each outcome and, for refusals, the answer sent. */
static const struct {
    const char *name;
    int status;
    const char *error;
    const char *message;
} outcomes[] = {
    [O_NONE] = {"-", 0, NULL, NULL},
    [O_OK] = {"ok", 0, NULL, NULL},
    [O_IDLE] = {"idle_timeout", 0, NULL, NULL},
    [O_CLIENT_ERROR] = {"client_error", 0, NULL, NULL},
    [O_UPSTREAM_ERROR] = {"upstream_error", 0, NULL, NULL},
    [O_SHUTDOWN] = {"shutdown", 0, NULL, NULL},
    [O_NO_REQUEST] = {"no_request", 0, NULL, NULL},
    [O_CLIENT_CLOSED] = {"client_closed", 0, NULL, NULL},
    [O_400] = {"bad_request_400", 400, "bad_request", "malformed CONNECT request"},
    [O_403] = {"refused_403", 403, "forbidden", "target host or port is not allowed"},
    [O_405] = {"bad_method_405", 405, "method_not_allowed", "only CONNECT is supported"},
    [O_407] = {"no_auth_407", 407, "proxy_auth_required",
               "Proxy-Authorization: Basic with a device identifier is required"},
    [O_407_TOKEN] = {"bad_token_407", 407, "proxy_auth_required",
                     "a device ID needs its proxy token as the password"},
    [O_429_SOURCE] = {"source_limit_429", 429, "too_many_tunnels",
                      "too many open tunnels from this address"},
    [O_429_RATE] = {"rate_limited_429", 429, "rate_limited",
                    "too many new tunnels from this address"},
    [O_403_PRIVATE] = {"private_address_403", 403, "forbidden",
                       "target host resolves to a non-public address"},
    [O_408] = {"header_timeout_408", 408, "request_timeout", "request head not received in time"},
    [O_429] = {"too_many_tunnels_429", 429, "too_many_tunnels",
               "too many open tunnels for this identifier"},
    [O_431] = {"head_too_big_431", 431, "request_header_fields_too_large",
               "request head is too large"},
    [O_500] = {"internal_500", 500, "internal_error", "out of resources"},
    [O_502_NO_ROUTE] = {"no_route_502", 502, "no_route", "no route to the target host"},
    [O_502_DNS] = {"dns_failed_502", 502, "dns_failed", "target host could not be resolved"},
    [O_502_UPSTREAM] = {"upstream_unreachable_502", 502, "upstream_unreachable",
                        "upstream refused or unreachable"},
    [O_503] = {"over_capacity_503", 503, "over_capacity", "too many connections"},
    [O_504] = {"connect_timeout_504", 504, "upstream_timeout", "upstream connect timed out"},
    /* GET /healthz and /readyz (no error: the message is the status) */
    [O_HEALTHY] = {"health_200", 200, NULL, "ok"},
    [O_NOT_READY] = {"not_ready_503", 503, NULL, "not_ready"},
};

struct tunnel;

/* One relay buffer; it is also the write request that carries it. */
struct block {
    uv_write_t req;
    struct tunnel *t;
    struct block *next_free;
    char data[RELAY_BUF_SIZE];
};

/* A DNS lookup on the thread pool; detached (t = NULL) when its tunnel dies first. */
struct resolve {
    uv_getaddrinfo_t req;
    struct tunnel *t;
};

struct probe;

struct proxy {
    uv_loop_t *loop;
    uv_poll_t listener;     /* our own accept loop: libuv's would drop clients unlogged at EMFILE */
    uv_timer_t pause;       /* accepting resumes after running out of descriptors */
    uv_timer_t probe_timer; /* the next down upstream's backoff ends */
    struct probe *probes;   /* probe connects under way, doubly linked */
    int listen_fd;
    struct proxy_config cfg;
    struct tunnel *tunnels; /* every live connection, doubly linked */
    size_t nconns;
    size_t nunauth; /* live unauthenticated tunnels (holding a source slot) */
    struct block *pool;
    size_t npool;
    int listening;
    int shutting_down;
    uint64_t warned_ms[2]; /* last over-capacity / out-of-descriptors warning */
};

struct tunnel {
    struct tunnel *prev, *next;
    struct proxy *px;
    uv_tcp_t client;
    uv_tcp_t upstream;
    uv_timer_t timer; /* header, connect, idle or linger deadline by state */
    uv_connect_t connect_req;
    uv_shutdown_t client_shut;
    uv_shutdown_t up_shut;
    struct resolve *resolve;
    struct addrinfo *ai_list; /* DNS answers still to try, owned */
    struct addrinfo *ai_next;
    char *head;                   /* HEAD_CAP bytes while the head is read, then leftover bytes */
    char *target;                 /* "host:port" once validated, a quoted raw target, or NULL */
    struct proxy_ident *slot;     /* per identifier (or source + identifier) */
    struct proxy_ident *src_slot; /* per source, unauthenticated tunnels only */
    /* the other tunnels holding slot / src_slot (their entry's holders list) */
    struct tunnel *slot_next, *slot_prev, *src_next, *src_prev;
    struct proxy_route *route;    /* a routed tunnel's route, borrowed from the policy */
    uint64_t connect_deadline_ms; /* a routed tunnel's attempts share --connect-timeout */
    uint64_t bytes_up, bytes_down, linger_bytes;
    uint64_t start_ms, end_ms, last_active_ms;
    union proxy_addr peer;
    union proxy_addr up_addr;
    uint16_t head_len;
    uint16_t port;
    uint8_t state;
    uint8_t outcome;
    uint8_t pending_closes;
    unsigned up_init : 1;
    unsigned client_eof : 1;
    unsigned up_eof : 1;
    unsigned client_shut_done : 1;
    unsigned up_shut_done : 1;
    unsigned client_paused : 1;
    unsigned up_paused : 1;
    unsigned refuse_written : 1;
    unsigned aborting : 1; /* one side failed: flushing the other, then close */
    unsigned verified : 1; /* the identifier's proxy token checked out */
    unsigned pp2 : 1;      /* the route wants a PROXY v2 header upstream */
    unsigned filtered : 1; /* a DNS answer was refused as not public */
    unsigned up_held : 1;  /* holds a live count on route->up[up_index] */
    uint16_t retry_s;      /* Retry-After of a rate-limit refusal */
    uint16_t tried;        /* the route's upstreams tried, by index bit */
    uint8_t up_index;      /* the route's upstream tried last (up_addr) */
    char ident[PHY_CONNECT_MAX_IDENT + 1];
};

_Static_assert(PROXY_ROUTE_MAX_UPSTREAMS <= 16, "struct tunnel keeps tried upstreams in 16 bits");

static void tunnel_close(struct tunnel *t, enum outcome o);
static void refuse(struct tunnel *t, enum outcome o);
static void on_timer(uv_timer_t *timer);
static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_upstream_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* ---- relay buffers ---- */

static struct block *block_get(struct proxy *px)
{
    struct block *b = px->pool;

    if (b != NULL) {
        px->pool = b->next_free;
        px->npool--;
        return b;
    }
    return malloc(sizeof(*b));
}

static void block_put(struct proxy *px, struct block *b)
{
    if (b == NULL)
        return;
    if (px->npool < POOL_MAX) {
        b->next_free = px->pool;
        px->pool = b;
        px->npool++;
        return;
    }
    free(b);
}

static struct block *block_of(const uv_buf_t *buf)
{
    return (struct block *)(void *)(buf->base - offsetof(struct block, data));
}

/* ---- logging ---- */

#define UPSTREAMS_TEXT_MAX (PROXY_ROUTE_MAX_UPSTREAMS * 50)

/* Writes the addresses of r's upstreams whose bit is set in mask into out, sep
 * between them ("" when none). Returns out. */
static char *format_upstreams(const struct proxy_route *r, unsigned mask, char sep, char *out,
                              size_t cap)
{
    char addr[64], between[2] = {sep, '\0'};
    size_t i, off = 0;

    out[0] = '\0';
    for (i = 0; i < r->nup && off < cap; i++) {
        int n;
        if ((mask & (1u << i)) == 0)
            continue;
        n = snprintf(out + off, cap - off, "%s%s", off > 0 ? between : "",
                     proxy_addr_format(&r->up[i].addr, addr, sizeof(addr)));
        if (n < 0)
            break;
        off += (size_t)n;
    }
    return out;
}

static void tunnel_log(struct tunnel *t)
{
    char peer[64], up[64], failed[UPSTREAMS_TEXT_MAX];
    uint64_t end = t->end_ms != 0 ? t->end_ms : uv_now(t->px->loop);
    enum phy_log_level lvl = t->outcome == O_NO_REQUEST ? PHY_LOG_DEBUG : PHY_LOG_INFO;

    proxy_addr_format(&t->peer, peer, sizeof(peer));
    proxy_addr_format(&t->up_addr, up, sizeof(up));
    failed[0] = '\0';
    if (t->route != NULL) /* every upstream tried before the last one failed */
        format_upstreams(t->route, t->tried & ~(1u << t->up_index), ',', failed, sizeof(failed));
    phy_log(lvl, "tunnel",
            "ident=%s target=%s upstream=%s bytes_up=%llu bytes_down=%llu "
            "duration_ms=%llu outcome=%s peer=%s auth=%s%s%s",
            t->ident[0] != '\0' ? t->ident : "-", t->target != NULL ? t->target : "-", up,
            (unsigned long long)t->bytes_up, (unsigned long long)t->bytes_down,
            (unsigned long long)(end - t->start_ms), outcomes[t->outcome].name, peer,
            t->verified ? "token" : "none", failed[0] != '\0' ? " failed=" : "", failed);
}

/* ---- teardown ---- */

static void tunnel_free(struct tunnel *t)
{
    struct proxy *px = t->px;

    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        px->tunnels = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    px->nconns--;
    uv_freeaddrinfo(t->ai_list);
    free(t->head);
    free(t->target);
    free(t);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct tunnel *t = h->data;

    t->pending_closes--;
    if (t->pending_closes == 0 && t->state == T_CLOSING)
        tunnel_free(t);
}

static void close_handle(struct tunnel *t, uv_handle_t *h)
{
    if (uv_is_closing(h))
        return;
    t->pending_closes++;
    uv_close(h, on_handle_closed);
}

static void detach_resolve(struct tunnel *t)
{
    if (t->resolve == NULL)
        return;
    t->resolve->t = NULL;
    uv_cancel((uv_req_t *)&t->resolve->req); /* best effort; the callback frees it */
    t->resolve = NULL;
}

/* Gives back the tunnel's slots: when it closes, and as soon as either side ends. */
/* t holds a slot of e (src: its per-source one): one of e's holders. */
static void holders_add(struct proxy_ident *e, struct tunnel *t, int src)
{
    struct tunnel *head = e->holders;
    if (src) {
        t->src_prev = NULL;
        t->src_next = head;
        if (head)
            head->src_prev = t;
    } else {
        t->slot_prev = NULL;
        t->slot_next = head;
        if (head)
            head->slot_prev = t;
    }
    e->holders = t;
}

static void holders_remove(struct proxy_ident *e, struct tunnel *t, int src)
{
    struct tunnel *prev = src ? t->src_prev : t->slot_prev;
    struct tunnel *next = src ? t->src_next : t->slot_next;
    if (prev)
        *(src ? &prev->src_next : &prev->slot_next) = next;
    else
        e->holders = next;
    if (next)
        *(src ? &next->src_prev : &next->slot_prev) = prev;
}

static void release_slot(struct tunnel *t)
{
    if (t->slot != NULL) {
        holders_remove(t->slot, t, 0);
        proxy_ident_release(t->px->cfg.policy, t->slot);
    }
    if (t->src_slot != NULL) {
        holders_remove(t->src_slot, t, 1);
        proxy_ident_release(t->px->cfg.policy, t->src_slot);
        t->px->nunauth--;
    }
    if (t->up_held)
        proxy_upstream_release(t->route, t->up_index);
    t->slot = t->src_slot = NULL;
    t->up_held = 0;
}

/* A resource warning, at most once per WARN_EVERY_MS per kind. */
static void warn_limited(struct proxy *px, int kind, const char *event, const char *what)
{
    uint64_t now = uv_now(px->loop);

    if (px->warned_ms[kind] != 0 && now - px->warned_ms[kind] < WARN_EVERY_MS)
        return;
    px->warned_ms[kind] = now;
    phy_log(PHY_LOG_ERROR, event, "%s connections=%llu max_connections=%u", what,
            (unsigned long long)px->nconns, px->cfg.max_connections);
}

/* Ends the connection: logs its one access-log line and closes every handle. A
 * refusal keeps the outcome it was refused with. */
static void tunnel_close(struct tunnel *t, enum outcome o)
{
    if (t->state == T_CLOSING)
        return;
    if (t->state != T_REFUSING || t->outcome == O_NONE)
        t->outcome = (uint8_t)o;
    t->state = T_CLOSING;
    tunnel_log(t);
    release_slot(t);
    detach_resolve(t);
    free(t->head);
    t->head = NULL;
    close_handle(t, (uv_handle_t *)&t->timer);
    close_handle(t, (uv_handle_t *)&t->client);
    if (t->up_init)
        close_handle(t, (uv_handle_t *)&t->upstream);
    if (t->pending_closes == 0)
        tunnel_free(t);
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct tunnel *t = h->data;
    struct block *b;

    (void)suggested;
    if (t->state == T_HEAD && h == (uv_handle_t *)&t->client) {
        *buf = uv_buf_init(t->head + t->head_len, (unsigned)(HEAD_CAP - t->head_len));
        return;
    }
    b = block_get(t->px);
    if (b == NULL) {
        *buf = uv_buf_init(NULL, 0); /* read callback gets UV_ENOBUFS */
        return;
    }
    *buf = uv_buf_init(b->data, RELAY_BUF_SIZE);
}

static void release_buf(struct tunnel *t, const uv_buf_t *buf)
{
    if (buf->base != NULL)
        block_put(t->px, block_of(buf));
}

/* ---- refusals ---- */

static void on_refuse_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status; /* the linger timer or the client's EOF ends the connection */
}

static void on_refuse_written(uv_write_t *req, int status)
{
    struct block *b = req->data;
    struct tunnel *t = b->t;

    block_put(t->px, b);
    if (t->state != T_REFUSING)
        return;
    t->refuse_written = 1;
    if (status < 0 || t->client_eof) {
        tunnel_close(t, O_NONE);
        return;
    }
    t->client_shut.data = t;
    if (uv_shutdown(&t->client_shut, (uv_stream_t *)&t->client, on_refuse_shutdown) < 0)
        tunnel_close(t, O_NONE);
}

static void linger_read(struct tunnel *t, ssize_t nread, const uv_buf_t *buf)
{
    release_buf(t, buf);
    if (nread > 0) {
        t->linger_bytes += (uint64_t)nread;
        if (t->linger_bytes <= LINGER_MAX_BYTES)
            return;
    } else if (nread == 0) {
        return;
    }
    /* EOF, error or too much: stop; close now unless the answer is still queued. */
    uv_read_stop((uv_stream_t *)&t->client);
    t->client_eof = 1;
    if (t->refuse_written || nread != UV_EOF)
        tunnel_close(t, O_NONE);
}

/* Sends the outcome's error answer (JSON body, Connection: close), then half-closes
 * and drains the client for a short linger so that it reads the answer instead of
 * a reset. The caller must not touch the head buffer afterwards. */
static void refuse(struct tunnel *t, enum outcome o)
{
    char body[256], retry[48];
    int blen, hlen, r;
    const char *extra = NULL;
    struct block *b;
    uv_buf_t out;

    if (t->state == T_CLOSING || t->state == T_REFUSING)
        return;
    t->state = T_REFUSING;
    t->outcome = (uint8_t)o;
    t->end_ms = uv_now(t->px->loop);
    release_slot(t);
    detach_resolve(t);
    free(t->head);
    t->head = NULL;
    t->head_len = 0;
    if (t->up_init)
        close_handle(t, (uv_handle_t *)&t->upstream);

    b = block_get(t->px);
    if (b == NULL)
        goto out_close;
    if (outcomes[o].error)
        blen = snprintf(body, sizeof(body), "{\"error\": \"%s\", \"message\": \"%s\"}\n",
                        outcomes[o].error, outcomes[o].message);
    else
        blen = snprintf(body, sizeof(body), "{\"status\": \"%s\"}\n", outcomes[o].message);
    if (blen < 0 || (size_t)blen >= sizeof(body))
        goto out_put;
    if (o == O_407 || o == O_407_TOKEN)
        extra = "Proxy-Authenticate: Basic realm=\"phystack\"\r\n";
    if (o == O_429_RATE || o == O_503 || o == O_NOT_READY) {
        snprintf(retry, sizeof(retry), "Retry-After: %u\r\n", t->retry_s ? t->retry_s : 1);
        extra = retry;
    }
    hlen = phy_http_write_response_head(b->data, RELAY_BUF_SIZE, outcomes[o].status,
                                        "application/json", (size_t)blen, 0, extra);
    if (hlen < 0 || (size_t)hlen + (size_t)blen > RELAY_BUF_SIZE)
        goto out_put;
    memcpy(b->data + hlen, body, (size_t)blen);
    b->t = t;
    b->req.data = b;
    out = uv_buf_init(b->data, (unsigned)(hlen + blen));
    if (uv_write(&b->req, (uv_stream_t *)&t->client, &out, 1, on_refuse_written) < 0)
        goto out_put;

    uv_timer_stop(&t->timer);
    uv_timer_start(&t->timer, on_timer, LINGER_MS, 0);
    r = uv_read_start((uv_stream_t *)&t->client, on_alloc, on_client_read);
    if (r < 0 && r != UV_EALREADY)
        tunnel_close(t, O_NONE);
    return;

out_put:
    block_put(t->px, b);
out_close:
    tunnel_close(t, O_NONE);
}

/* ---- relay ---- */

static void relay_resume(struct tunnel *t, uv_stream_t *dst)
{
    int from_client = dst == (uv_stream_t *)&t->upstream;
    uv_stream_t *src = from_client ? (uv_stream_t *)&t->client : (uv_stream_t *)&t->upstream;

    if (t->aborting || uv_stream_get_write_queue_size(dst) > 0)
        return;
    if (from_client && t->client_paused && !t->client_eof) {
        t->client_paused = 0;
        if (uv_read_start(src, on_alloc, on_client_read) < 0)
            tunnel_close(t, O_CLIENT_ERROR);
    } else if (!from_client && t->up_paused && !t->up_eof) {
        t->up_paused = 0;
        if (uv_read_start(src, on_alloc, on_upstream_read) < 0)
            tunnel_close(t, O_UPSTREAM_ERROR);
    }
}

static void on_relay_written(uv_write_t *req, int status)
{
    struct block *b = req->data;
    struct tunnel *t = b->t;
    uv_stream_t *dst = req->handle;

    block_put(t->px, b);
    if (t->state != T_RELAY)
        return;
    if (status < 0) {
        tunnel_close(t, dst == (uv_stream_t *)&t->client ? O_CLIENT_ERROR : O_UPSTREAM_ERROR);
        return;
    }
    t->last_active_ms = uv_now(t->px->loop); /* a slow reader is still progress */
    relay_resume(t, dst);
}

/* Sends len bytes of block b to dst; takes b. What the socket takes at once is written
 * at once and b goes back to the pool (a queued write would hold it until the next
 * loop turn: libuv reads up to 32 times per readiness, so busy tunnels would hold more
 * blocks than the pool keeps, each one more a malloc and a free); the rest is queued
 * behind whatever dst has queued. 0 written, 1 queued (the caller stops reading the
 * source until it is written), -1 tunnel closed. */
static int relay_send(struct tunnel *t, uv_stream_t *dst, struct block *b, size_t len)
{
    uv_buf_t out = uv_buf_init(b->data, (unsigned)len);
    int n = uv_try_write(dst, &out, 1); /* UV_EAGAIN when writes are queued: order kept */

    if (n == (int)len) {
        block_put(t->px, b);
        return 0;
    }
    if (n < 0 && n != UV_EAGAIN) {
        block_put(t->px, b);
        tunnel_close(t, dst == (uv_stream_t *)&t->client ? O_CLIENT_ERROR : O_UPSTREAM_ERROR);
        return -1;
    }
    if (n > 0)
        out = uv_buf_init(b->data + n, (unsigned)(len - (size_t)n));
    b->t = t;
    b->req.data = b;
    if (uv_write(&b->req, dst, &out, 1, on_relay_written) < 0) {
        block_put(t->px, b);
        tunnel_close(t, dst == (uv_stream_t *)&t->client ? O_CLIENT_ERROR : O_UPSTREAM_ERROR);
        return -1;
    }
    return 1;
}

static void on_relay_shutdown(uv_shutdown_t *req, int status)
{
    struct tunnel *t = req->data;

    if (t->state != T_RELAY)
        return;
    if (t->aborting) {
        tunnel_close(t, (enum outcome)t->outcome);
        return;
    }
    if (status < 0) {
        tunnel_close(t, req == &t->up_shut ? O_UPSTREAM_ERROR : O_CLIENT_ERROR);
        return;
    }
    if (req == &t->up_shut)
        t->up_shut_done = 1;
    else
        t->client_shut_done = 1;
    if (t->up_shut_done && t->client_shut_done)
        tunnel_close(t, O_OK);
}

/* A read on one side failed (typically a reset): nothing more can flow towards that
 * side, but what it sent before is still queued for dst. Flush that with a shutdown
 * of dst and close the tunnel when the shutdown completes (or at once if nothing is
 * queued); the idle timer bounds the wait. */
static void relay_abort(struct tunnel *t, enum outcome o, uv_stream_t *dst, uv_shutdown_t *shut)
{
    t->outcome = (uint8_t)o;
    uv_read_stop((uv_stream_t *)&t->client);
    uv_read_stop((uv_stream_t *)&t->upstream);
    if (uv_stream_get_write_queue_size(dst) == 0 || t->aborting) {
        tunnel_close(t, o);
        return;
    }
    t->aborting = 1;
    shut->data = t;
    if (uv_shutdown(shut, dst, on_relay_shutdown) < 0)
        tunnel_close(t, o);
}

static void relay_read(struct tunnel *t, uv_stream_t *src, ssize_t nread, const uv_buf_t *buf)
{
    int from_client = src == (uv_stream_t *)&t->client;
    uv_stream_t *dst = from_client ? (uv_stream_t *)&t->upstream : (uv_stream_t *)&t->client;
    uv_shutdown_t *shut = from_client ? &t->up_shut : &t->client_shut;

    if (nread > 0) {
        if (from_client)
            t->bytes_up += (uint64_t)nread;
        else
            t->bytes_down += (uint64_t)nread;
        t->last_active_ms = uv_now(t->px->loop);
        int queued = relay_send(t, dst, block_of(buf), (size_t)nread);
        if (queued < 0)
            return;
        if (queued) {
            uv_read_stop(src);
            if (from_client)
                t->client_paused = 1;
            else
                t->up_paused = 1;
        }
        return;
    }
    release_buf(t, buf);
    if (nread == 0)
        return;
    release_slot(t); /* one side has ended: the tunnel no longer holds a slot */
    if (nread != UV_EOF) {
        relay_abort(t, from_client ? O_CLIENT_ERROR : O_UPSTREAM_ERROR, dst, shut);
        return;
    }
    uv_read_stop(src);
    if (from_client)
        t->client_eof = 1;
    else
        t->up_eof = 1;
    shut->data = t;
    if (uv_shutdown(shut, dst, on_relay_shutdown) < 0)
        tunnel_close(t, from_client ? O_UPSTREAM_ERROR : O_CLIENT_ERROR);
}

static void on_upstream_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct tunnel *t = s->data;

    if (t->state == T_RELAY)
        relay_read(t, s, nread, buf);
    else
        release_buf(t, buf);
}

/* The PROXY v2 header, first on the upstream stream: the client's address, the
 * address it reached us on, its identifier and whether its token checked out. */
static int send_pp2(struct tunnel *t)
{
    union proxy_addr local;
    int namelen = (int)sizeof(local), n;
    struct block *b = block_get(t->px);

    if (b == NULL) {
        tunnel_close(t, O_CLIENT_ERROR);
        return -1;
    }
    memset(&local, 0, sizeof(local));
    if (uv_tcp_getsockname(&t->client, &local.sa, &namelen) != 0)
        n = PHY_EINVAL;
    else
        n = phy_pp2_build(&t->peer.sa, &local.sa, t->ident, t->verified,
                          (unsigned char *)b->data, RELAY_BUF_SIZE);
    if (n < 0) {
        block_put(t->px, b);
        tunnel_close(t, O_UPSTREAM_ERROR);
        return -1;
    }
    return relay_send(t, (uv_stream_t *)&t->upstream, b, (size_t)n);
}

static void start_relay(struct tunnel *t)
{
    struct block *b;
    size_t left = t->head_len;

    uv_timer_stop(&t->timer);
    t->state = T_RELAY;
    t->last_active_ms = uv_now(t->px->loop);
    uv_tcp_nodelay(&t->client, 1);
    uv_tcp_nodelay(&t->upstream, 1);

    b = block_get(t->px);
    if (b == NULL) {
        tunnel_close(t, O_CLIENT_ERROR);
        return;
    }
    memcpy(b->data, established, sizeof(established) - 1);
    if (relay_send(t, (uv_stream_t *)&t->client, b, sizeof(established) - 1) < 0)
        return;
    if (t->pp2 && send_pp2(t) < 0)
        return;

    /* Bytes that came in the same read as the head open the tunnelled stream. */
    if (left > 0) {
        b = block_get(t->px);
        if (b == NULL) {
            tunnel_close(t, O_CLIENT_ERROR);
            return;
        }
        memcpy(b->data, t->head, left);
        t->bytes_up += left;
        if (relay_send(t, (uv_stream_t *)&t->upstream, b, left) < 0)
            return;
    }
    free(t->head);
    t->head = NULL;
    t->head_len = 0;

    if (uv_read_start((uv_stream_t *)&t->client, on_alloc, on_client_read) < 0) {
        tunnel_close(t, O_CLIENT_ERROR);
        return;
    }
    if (uv_read_start((uv_stream_t *)&t->upstream, on_alloc, on_upstream_read) < 0) {
        tunnel_close(t, O_UPSTREAM_ERROR);
        return;
    }
    uv_timer_start(&t->timer, on_timer, t->px->cfg.idle_timeout_ms, 0);
}

/* ---- upstream ---- */

static void start_connect(struct tunnel *t, const union proxy_addr *addr);

/* 1 when a DNS answer may be connected to: a public address, or one inside a
 * network the operator named (--dns-allow-net). Routes never come here. */
static int answer_allowed(const struct proxy *px, const union proxy_addr *addr)
{
    uint8_t a16[16];

    if (phy_addr16(&addr->sa, a16) != 0)
        return 0;
    return phy_addr_is_public(a16) ||
           phy_cidr_list_match(px->cfg.dns_allow, px->cfg.ndns_allow, a16);
}

/* Next usable DNS answer into *addr; 1 when there is one. */
static int next_answer(struct tunnel *t, union proxy_addr *addr)
{
    while (t->ai_next != NULL) {
        const struct addrinfo *ai = t->ai_next;

        t->ai_next = ai->ai_next;
        memset(addr, 0, sizeof(*addr));
        if (ai->ai_family == AF_INET && ai->ai_addrlen >= sizeof(addr->in4))
            memcpy(&addr->in4, ai->ai_addr, sizeof(addr->in4));
        else if (ai->ai_family == AF_INET6 && ai->ai_addrlen >= sizeof(addr->in6))
            memcpy(&addr->in6, ai->ai_addr, sizeof(addr->in6));
        else
            continue;
        if (answer_allowed(t->px, addr))
            return 1;
        t->filtered = 1;
    }
    return 0;
}

/* ---- upstream health: events and probes ---- */

/* A probe: a plain TCP connect to a down upstream whose backoff has ended, closed
 * as soon as it is established. Only its success brings the upstream back. */
struct probe {
    struct probe *prev, *next;
    struct proxy *px;
    struct proxy_route *route;
    size_t index;
    uv_tcp_t tcp;
    uv_connect_t req;
    uv_timer_t timer; /* --connect-timeout */
    int pending_closes;
    int done;
};

/* Records a failed connect (via "tunnel") or probe of r->up[i] and logs it: warn
 * when it takes the upstream down, debug while it stays down. The caller then calls
 * schedule_probes. */
static void upstream_failed(struct proxy *px, struct proxy_route *r, size_t i, int err,
                            const char *via)
{
    uint64_t now = uv_now(px->loop);
    const struct proxy_upstream *u = &r->up[i];
    char addr[64];
    int down = proxy_upstream_failed(px->cfg.policy, r, i, now);

    if (u->failures == 0)
        return; /* a route with one upstream keeps no state */
    phy_log(down ? PHY_LOG_WARN : PHY_LOG_DEBUG, down ? "upstream_down" : "upstream_failed",
            "route=%s upstream=%s via=%s error=%s failures=%u retry_ms=%llu", r->host,
            proxy_addr_format(&u->addr, addr, sizeof(addr)), via, uv_err_name(err), u->failures,
            (unsigned long long)(u->retry_ms - now));
}

/* Records a successful connect or probe of r->up[i]; logs it when it was down. */
static void upstream_ok(struct proxy *px, struct proxy_route *r, size_t i, const char *via)
{
    uint64_t since = r->up[i].down_since_ms;
    char addr[64];

    if (!proxy_upstream_ok(r, i))
        return;
    phy_log(PHY_LOG_INFO, "upstream_up", "route=%s upstream=%s via=%s down_ms=%llu", r->host,
            proxy_addr_format(&r->up[i].addr, addr, sizeof(addr)), via,
            (unsigned long long)(uv_now(px->loop) - since));
}

static void schedule_probes(struct proxy *px);

static void on_probe_closed(uv_handle_t *h)
{
    struct probe *pr = h->data;

    if (--pr->pending_closes == 0)
        free(pr);
}

/* Unlinks pr and closes its handles; the last close frees it. Safe to call twice. */
static void probe_close(struct probe *pr)
{
    if (pr->done)
        return;
    pr->done = 1;
    pr->route->up[pr->index].probing = 0;
    if (pr->prev != NULL)
        pr->prev->next = pr->next;
    else
        pr->px->probes = pr->next;
    if (pr->next != NULL)
        pr->next->prev = pr->prev;
    pr->pending_closes = 2;
    uv_close((uv_handle_t *)&pr->tcp, on_probe_closed);
    uv_close((uv_handle_t *)&pr->timer, on_probe_closed);
}

/* The probe's answer: 0 (connected) brings the upstream up, an error extends its
 * backoff. reschedule: 0 when called from within schedule_probes. */
static void probe_finish(struct probe *pr, int status, int reschedule)
{
    struct proxy *px = pr->px;
    struct proxy_route *r = pr->route;
    size_t i = pr->index;

    if (pr->done)
        return;
    probe_close(pr);
    if (status == 0) {
        upstream_ok(px, r, i, "probe");
        return;
    }
    if (r->up[i].failures > 0) /* a tunnel may have found it up meanwhile */
        upstream_failed(px, r, i, status, "probe");
    if (reschedule)
        schedule_probes(px);
}

static void on_probe_connected(uv_connect_t *req, int status)
{
    if (status != UV_ECANCELED) /* canceled: the probe is closing */
        probe_finish(req->data, status, 1);
}

static void on_probe_timeout(uv_timer_t *timer)
{
    probe_finish(timer->data, UV_ETIMEDOUT, 1);
}

/* Starts a probe of r->up[i]. Afterwards the upstream is being probed, or (the
 * probe could not start) its backoff runs again. */
static void start_probe(struct proxy *px, struct proxy_route *r, size_t i)
{
    struct probe *pr = calloc(1, sizeof(*pr));
    int rc = pr != NULL ? uv_tcp_init(px->loop, &pr->tcp) : UV_ENOMEM;

    if (rc < 0) {
        free(pr);
        upstream_failed(px, r, i, rc, "probe");
        return;
    }
    pr->px = px;
    pr->route = r;
    pr->index = i;
    pr->next = px->probes;
    if (px->probes != NULL)
        px->probes->prev = pr;
    px->probes = pr;
    r->up[i].probing = 1;
    uv_timer_init(px->loop, &pr->timer);
    pr->tcp.data = pr->timer.data = pr->req.data = pr;
    uv_timer_start(&pr->timer, on_probe_timeout, px->cfg.connect_timeout_ms, 0);
    rc = uv_tcp_connect(&pr->req, &pr->tcp, &r->up[i].addr.sa, on_probe_connected);
    if (rc < 0)
        probe_finish(pr, rc, 0);
}

static void on_probe_timer(uv_timer_t *timer)
{
    schedule_probes(timer->data);
}

/* Probes every down upstream whose backoff has ended, and sets the timer for the
 * next one to fall due. */
static void schedule_probes(struct proxy *px)
{
    uint64_t now = uv_now(px->loop), next;
    struct proxy_route *r;
    size_t i;

    if (px->shutting_down)
        return;
    while (proxy_policy_probe_due(px->cfg.policy, now, &r, &i, &next))
        start_probe(px, r, i);
    if (next == UINT64_MAX)
        uv_timer_stop(&px->probe_timer);
    else
        uv_timer_start(&px->probe_timer, on_probe_timer, next - now, 0);
}

/* ---- connect attempts ---- */

/* The next address for a connecting tunnel: its route's next upstream
 * (proxy_route_pick, which counts a live tunnel on it), or the next usable DNS
 * answer. 1 when there is one. */
static int next_upstream(struct tunnel *t, union proxy_addr *addr)
{
    int i;

    if (t->route == NULL)
        return next_answer(t, addr);
    i = proxy_route_pick(t->route, t->tried);
    if (i < 0)
        return 0;
    t->tried = (uint16_t)(t->tried | (1u << i));
    t->up_index = (uint8_t)i;
    t->up_held = 1;
    *addr = t->route->up[i].addr;
    return 1;
}

/* 1 while a failed attempt has another address to go to. */
static int more_upstreams(const struct tunnel *t)
{
    if (t->route == NULL)
        return t->ai_next != NULL;
    return t->tried != (uint16_t)((1u << t->route->nup) - 1);
}

/* The failed upstream handle is closed: try the next address on a fresh one. */
static void on_retry_closed(uv_handle_t *h)
{
    struct tunnel *t = h->data;
    union proxy_addr addr;

    t->pending_closes--;
    t->up_init = 0;
    if (t->state == T_CONNECTING) {
        if (next_upstream(t, &addr))
            start_connect(t, &addr);
        else
            refuse(t, O_502_UPSTREAM);
        return;
    }
    if (t->pending_closes == 0 && t->state == T_CLOSING)
        tunnel_free(t);
}

/* A connect attempt failed (err: the libuv error, UV_ETIMEDOUT when a route's
 * attempt ran out of its time). A route's upstream is marked failed. The next
 * address is tried on a fresh handle once this one has closed; after the last,
 * the client gets 502, or 504 when that one timed out. */
static void attempt_failed(struct tunnel *t, int err)
{
    if (t->up_held) {
        upstream_failed(t->px, t->route, t->up_index, err, "tunnel");
        schedule_probes(t->px);
        proxy_upstream_release(t->route, t->up_index);
        t->up_held = 0;
    }
    if (!more_upstreams(t)) {
        refuse(t, err == UV_ETIMEDOUT ? O_504 : O_502_UPSTREAM);
        return;
    }
    if (t->route != NULL)
        uv_timer_stop(&t->timer); /* the next attempt sets its own */
    t->pending_closes++;
    uv_close((uv_handle_t *)&t->upstream, on_retry_closed);
}

/* A route's attempt may use half the connect time left while other upstreams
 * remain, and all of it when it is the last: one upstream that swallows SYNs
 * cannot use up the whole --connect-timeout. */
static void arm_attempt_timer(struct tunnel *t)
{
    uint64_t now = uv_now(t->px->loop);
    uint64_t left = t->connect_deadline_ms > now ? t->connect_deadline_ms - now : 0;

    if (more_upstreams(t))
        left /= 2;
    uv_timer_stop(&t->timer);
    uv_timer_start(&t->timer, on_timer, left, 0);
}

static void on_connected(uv_connect_t *req, int status)
{
    struct tunnel *t = req->data;

    if (t->state != T_CONNECTING || status == UV_ECANCELED)
        return; /* refused, closing, or an attempt given up: the handle is closing */
    if (status < 0) {
        attempt_failed(t, status);
        return;
    }
    if (t->up_held)
        upstream_ok(t->px, t->route, t->up_index, "tunnel");
    uv_freeaddrinfo(t->ai_list);
    t->ai_list = t->ai_next = NULL;
    start_relay(t);
}

static void out_of_descriptors(struct proxy *px, int err)
{
    if (err == UV_EMFILE || err == UV_ENFILE)
        warn_limited(px, 1, "out_of_descriptors",
                     err == UV_EMFILE
                         ? "error=EMFILE hint=\"raise LimitNOFILE or lower --max-connections\""
                         : "error=ENFILE hint=\"the system's file table is full\"");
}

static void start_connect(struct tunnel *t, const union proxy_addr *addr)
{
    int r;

    t->up_addr = *addr;
    if (t->route != NULL)
        arm_attempt_timer(t);
    if (uv_tcp_init(t->px->loop, &t->upstream) < 0) {
        refuse(t, O_500);
        return;
    }
    t->up_init = 1;
    t->upstream.data = t;
    t->connect_req.data = t;
    r = uv_tcp_connect(&t->connect_req, &t->upstream, &addr->sa, on_connected);
    if (r == UV_EMFILE || r == UV_ENFILE) {
        out_of_descriptors(t->px, r); /* ours, not the upstream's */
        refuse(t, O_503);
    } else if (r < 0) {
        attempt_failed(t, r);
    }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct resolve *r = req->data;
    struct tunnel *t = r->t;
    union proxy_addr addr;

    free(r);
    if (t == NULL || t->state != T_CONNECTING) {
        uv_freeaddrinfo(res);
        if (t != NULL)
            t->resolve = NULL;
        return;
    }
    t->resolve = NULL;
    t->ai_list = t->ai_next = status == 0 ? res : NULL;
    if (status != 0)
        uv_freeaddrinfo(res);
    if (!next_answer(t, &addr)) {
        refuse(t, t->filtered ? O_403_PRIVATE : O_502_DNS);
        return;
    }
    start_connect(t, &addr);
}

static void start_resolve(struct tunnel *t, const char *host)
{
    struct addrinfo hints;
    char service[8];
    struct resolve *r = calloc(1, sizeof(*r));

    if (r == NULL) {
        refuse(t, O_500);
        return;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(service, sizeof(service), "%u", (unsigned)t->port);
    r->t = t;
    r->req.data = r;
    t->resolve = r;
    if (uv_getaddrinfo(t->px->loop, &r->req, on_resolved, host, service, &hints) < 0) {
        t->resolve = NULL;
        free(r);
        refuse(t, O_502_DNS);
    }
}

/* ---- the CONNECT head ---- */

/* Keeps a bounded, quoted copy of an invalid request's target for the log. */
static void keep_raw_target(struct tunnel *t, const struct phy_http_request *req)
{
    char raw[LOG_TARGET_MAX];
    char quoted[LOG_TARGET_MAX * 4 + 3];
    size_t n = req->target.len < sizeof(raw) - 1 ? req->target.len : sizeof(raw) - 1;

    if (req->target.p == NULL || n == 0)
        return;
    memcpy(raw, req->target.p, n);
    raw[n] = '\0';
    phy_log_quote(raw, quoted, sizeof(quoted));
    t->target = strdup(quoted);
}

static enum outcome status_outcome(int status)
{
    switch (status) {
    case 405:
        return O_405;
    case 407:
        return O_407;
    default:
        return O_400;
    }
}

/* The source's key: its address, an IPv6 source by its /64. */
static void source_key(const struct tunnel *t, uint8_t a16[16], char *out, size_t cap)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    memset(a16, 0, 16);
    phy_addr16(&t->peer.sa, a16);
    if (memcmp(a16, v4mapped, 12) != 0)
        memset(a16 + 8, 0, 8);
    if (inet_ntop(AF_INET6, a16, out, (socklen_t)cap) == NULL)
        snprintf(out, cap, "-");
}

/* 1 when the client has closed its side of t (its end of stream waits in the socket,
 * not read yet): the tunnel no longer holds a device's slot. */
static int client_closed(struct tunnel *t)
{
    uv_os_fd_t fd;
    char c;
    if (t->client_eof)
        return 1;
    if (uv_fileno((const uv_handle_t *)&t->client, &fd) != 0)
        return 0;
    return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* proxy_ident_acquire of key for t (src: a per-source slot); at the limit, tunnels of
 * that key (the entry's holders, not every tunnel) whose client closed but whose end
 * of stream the loop has not read yet give their slots back first, so that a device
 * that closes a tunnel and opens the next at once is not refused (their close is
 * handled by the loop as usual). */
static struct proxy_ident *acquire(struct tunnel *t, const char *key, unsigned limit, int src,
                                   int *err)
{
    struct proxy *px = t->px;
    struct proxy_ident *e = proxy_ident_acquire(px->cfg.policy, key, limit, err);
    if (e == NULL && *err == PHY_ETOOBIG && (e = proxy_ident_find(px->cfg.policy, key))) {
        int freed = 0;
        struct tunnel *o = e->holders, *next;
        for (; o != NULL; o = next) { /* release_slot may free e: nothing of it after */
            next = src ? o->src_next : o->slot_next;
            if (client_closed(o)) {
                release_slot(o);
                freed = 1;
            }
        }
        e = freed ? proxy_ident_acquire(px->cfg.policy, key, limit, err) : NULL;
    }
    if (e != NULL)
        holders_add(e, t, src);
    return e;
}

/* Who the client is, and the slots its tunnel takes. A dev_ identifier with a valid
 * proxy token is the device: one count per identifier. Anything else proves nothing,
 * so it counts per source: its creation rate, its live tunnels, and its live
 * tunnels per (source, identifier), so that nobody elsewhere can take a device's
 * slots by naming it. 0, or -1 with the tunnel refused. */
static int take_slots(struct tunnel *t, const struct phy_connect_req *creq)
{
    struct proxy *px = t->px;
    const struct proxy_config *c = &px->cfg;
    char src[INET6_ADDRSTRLEN], key[PROXY_SLOT_KEY_MAX + 1];
    uint8_t a16[16];
    uint64_t retry_ms = 0;
    int err = 0;

    if (strncmp(creq->ident, "dev_", 4) == 0 && c->nkeys > 0) {
        if (creq->token[0] != '\0') {
            if (!phy_proxy_token_verify(c->keys, c->nkeys, creq->ident, creq->token,
                                        strlen(creq->token))) {
                refuse(t, O_407_TOKEN);
                return -1;
            }
            t->verified = 1;
        } else if (!c->dev_token_optional) {
            refuse(t, O_407_TOKEN);
            return -1;
        }
    }
    if (t->verified) {
        snprintf(key, sizeof(key), "%s", creq->ident);
    } else {
        source_key(t, a16, src, sizeof(src));
        if (c->new_tunnel_rate != NULL &&
            !phy_ratelimit_take(c->new_tunnel_rate, a16, uv_now(px->loop), &retry_ms)) {
            t->retry_s = (uint16_t)(retry_ms / 1000 + 1);
            refuse(t, O_429_RATE);
            return -1;
        }
        /* Tunnels that prove nothing may not take the share kept for devices. */
        if (px->nunauth >= (size_t)c->max_connections -
                               (size_t)c->max_connections * c->device_share / 100) {
            refuse(t, O_503);
            return -1;
        }
        t->src_slot = acquire(t, src, c->max_tunnels_per_source, 1, &err);
        if (t->src_slot == NULL) {
            refuse(t, err == PHY_ETOOBIG ? O_429_SOURCE : O_500);
            return -1;
        }
        px->nunauth++;
        snprintf(key, sizeof(key), "%s %s", src, creq->ident);
    }
    t->slot = acquire(t, key, c->max_tunnels_per_device, 0, &err);
    if (t->slot == NULL) {
        refuse(t, err == PHY_ETOOBIG ? O_429 : O_500);
        return -1;
    }
    return 0;
}

/* Validates a complete head and routes it. Returns with the tunnel refused,
 * connecting, or resolving. */
static void accept_head(struct tunnel *t, const struct phy_http_request *req, size_t used)
{
    struct proxy *px = t->px;
    struct phy_connect_req creq;
    struct proxy_route *route;
    union proxy_addr addr;
    char target[PHY_CONNECT_MAX_HOST + 8];
    int status;

    memset(&creq, 0, sizeof(creq));
    /* Health checks (a load balancer's, systemd's, an operator's): /healthz, the
     * process answers; /readyz, it takes tunnels and every route has an upstream up. */
    int healthz = phy_str_eq(req->target, "/healthz");
    if (phy_str_eq(req->method, "GET") && (healthz || phy_str_eq(req->target, "/readyz"))) {
        int ready = healthz || (!px->shutting_down && proxy_policy_routes_up(px->cfg.policy));
        t->target = strdup(healthz ? "/healthz" : "/readyz"); /* named in the access log */
        refuse(t, ready ? O_HEALTHY : O_NOT_READY);
        return;
    }
    status = phy_connect_check(req, &creq);
    if (status != 0) {
        keep_raw_target(t, req);
        refuse(t, status_outcome(status));
        return;
    }
    memcpy(t->ident, creq.ident, sizeof(t->ident));
    t->ident[sizeof(t->ident) - 1] = '\0';
    t->port = (uint16_t)creq.port;
    snprintf(target, sizeof(target), "%s:%u", creq.host, creq.port);
    t->target = strdup(target);
    if (t->target == NULL) {
        refuse(t, O_500);
        return;
    }
    if (!proxy_policy_allowed(px->cfg.policy, creq.host, creq.port)) {
        refuse(t, O_403);
        return;
    }
    if (take_slots(t, &creq) < 0)
        return;

    /* Keep what followed the head: it is the start of the tunnelled stream. */
    memmove(t->head, t->head + used, t->head_len - used);
    t->head_len = (uint16_t)(t->head_len - used);
    uv_read_stop((uv_stream_t *)&t->client);
    t->state = T_CONNECTING;
    uv_timer_stop(&t->timer);
    uv_timer_start(&t->timer, on_timer, px->cfg.connect_timeout_ms, 0);

    route = proxy_policy_route(px->cfg.policy, creq.host);
    if (route != NULL) {
        t->route = route;
        t->pp2 = route->proxy_protocol != 0;
        t->connect_deadline_ms = uv_now(px->loop) + px->cfg.connect_timeout_ms;
        if (next_upstream(t, &addr)) /* a route has at least one */
            start_connect(t, &addr);
        else
            refuse(t, O_502_UPSTREAM);
    } else if (px->cfg.dns_fallback)
        start_resolve(t, creq.host);
    else
        refuse(t, O_502_NO_ROUTE);
}

static void head_read(struct tunnel *t, ssize_t nread)
{
    struct phy_http_request req;
    int rc;

    if (nread == 0)
        return;
    if (nread < 0) {
        tunnel_close(t, t->head_len == 0 ? O_NO_REQUEST : O_CLIENT_CLOSED);
        return;
    }
    t->head_len = (uint16_t)(t->head_len + (size_t)nread);
    memset(&req, 0, sizeof(req));
    rc = phy_http_parse_request(t->head, t->head_len, HEAD_MAX, &req);
    if (rc == PHY_EAGAIN) {
        if (t->head_len >= HEAD_CAP)
            refuse(t, O_431);
        return;
    }
    if (rc == PHY_ETOOBIG) {
        refuse(t, O_431);
        return;
    }
    if (rc <= 0 || (size_t)rc > t->head_len) {
        refuse(t, O_400);
        return;
    }
    accept_head(t, &req, (size_t)rc);
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct tunnel *t = s->data;

    switch (t->state) {
    case T_HEAD:
        head_read(t, nread); /* buf is the head buffer itself */
        break;
    case T_RELAY:
        relay_read(t, s, nread, buf);
        break;
    case T_REFUSING:
        linger_read(t, nread, buf);
        break;
    default:
        release_buf(t, buf);
        break;
    }
}

/* ---- timers ---- */

static void on_timer(uv_timer_t *timer)
{
    struct tunnel *t = timer->data;
    uint64_t now, idle;

    switch (t->state) {
    case T_HEAD:
        refuse(t, O_408);
        break;
    case T_CONNECTING:
        if (t->route != NULL && t->up_init && !uv_is_closing((uv_handle_t *)&t->upstream))
            attempt_failed(t, UV_ETIMEDOUT); /* this attempt's share of the time is up */
        else
            refuse(t, O_504);
        break;
    case T_RELAY:
        /* Activity only stamps last_active_ms; re-arm for the remainder. */
        now = uv_now(t->px->loop);
        idle = t->px->cfg.idle_timeout_ms;
        if (now - t->last_active_ms >= idle)
            tunnel_close(t, O_IDLE);
        else
            uv_timer_start(&t->timer, on_timer, idle - (now - t->last_active_ms), 0);
        break;
    case T_REFUSING:
        tunnel_close(t, O_NONE);
        break;
    default:
        break;
    }
}

/* ---- accepting ---- */

#define ACCEPT_BATCH 64
#define ACCEPT_PAUSE_MS 100

static void on_listen(uv_poll_t *h, int status, int events);

static void on_pause_done(uv_timer_t *timer)
{
    struct proxy *px = timer->data;
    if (px->listening && !px->shutting_down)
        uv_poll_start(&px->listener, UV_READABLE, on_listen);
}

/* One accepted connection (fd owned): a tunnel in T_HEAD, or refused. */
static void on_connection(struct proxy *px, int fd)
{
    struct tunnel *t;
    int namelen = (int)sizeof(union proxy_addr);

    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        phy_log(PHY_LOG_ERROR, "accept_failed", "error=ENOMEM");
        close(fd);
        return;
    }
    t->px = px;
    t->start_ms = uv_now(px->loop);
    t->state = T_HEAD;
    t->next = px->tunnels;
    if (px->tunnels != NULL)
        px->tunnels->prev = t;
    px->tunnels = t;
    px->nconns++;
    uv_tcp_init(px->loop, &t->client);
    uv_timer_init(px->loop, &t->timer);
    t->client.data = t;
    t->timer.data = t;
    if (uv_tcp_open(&t->client, fd) < 0) {
        close(fd);
        tunnel_close(t, O_NO_REQUEST);
        return;
    }
    uv_tcp_getpeername(&t->client, &t->peer.sa, &namelen);
    if (px->nconns > px->cfg.max_connections + OVERFLOW_CONNS) {
        /* Answering would keep a descriptor for the linger: past the overflow the
         * connection is closed at once, and that is logged (not per connection). */
        warn_limited(px, 0, "over_capacity", "action=closed");
        tunnel_close(t, O_503);
        return;
    }
    if (px->nconns > px->cfg.max_connections) {
        refuse(t, O_503);
        return;
    }
    t->head = malloc(HEAD_CAP);
    if (t->head == NULL) {
        refuse(t, O_500);
        return;
    }
    if (uv_read_start((uv_stream_t *)&t->client, on_alloc, on_client_read) < 0) {
        tunnel_close(t, O_CLIENT_ERROR);
        return;
    }
    uv_timer_start(&t->timer, on_timer, px->cfg.header_timeout_ms, 0);
}

/* Accepts what is pending. Out of descriptors, the clients wait in the backlog
 * (libuv's own loop would close them unanswered): that is logged, and accepting
 * pauses briefly instead of spinning. */
static void on_listen(uv_poll_t *h, int status, int events)
{
    struct proxy *px = h->data;
    (void)events;
    if (status < 0 || px->shutting_down)
        return;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(px->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            on_connection(px, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            out_of_descriptors(px, errno == ENFILE ? UV_ENFILE : UV_EMFILE);
            uv_poll_stop(&px->listener);
            uv_timer_start(&px->pause, on_pause_done, ACCEPT_PAUSE_MS, 0);
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            phy_log(PHY_LOG_WARN, "accept_failed", "error=%s", strerror(errno));
        }
        return;
    }
}

/* The listening socket: SO_REUSEADDR, non-blocking, close-on-exec. fd or -errno. */
static int listen_socket(const union proxy_addr *a)
{
    int one = 1, fd = socket(a->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    socklen_t len = a->sa.sa_family == AF_INET6 ? sizeof(a->in6) : sizeof(a->in4);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, &a->sa, len) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* ---- life cycle ---- */

static void log_start(const struct proxy *px)
{
    const struct proxy_policy *p = px->cfg.policy;
    char listen[64], routes[1024], allows[512], ups[UPSTREAMS_TEXT_MAX];
    size_t i, off = 0;

    routes[0] = '\0';
    for (i = 0; i < p->nroutes && off < sizeof(routes); i++) {
        int n =
            snprintf(routes + off, sizeof(routes) - off, "%s%s=%s%s", i ? "," : "",
                     p->routes[i].host, format_upstreams(&p->routes[i], ~0u, '|', ups, sizeof(ups)),
                     p->routes[i].proxy_protocol ? "" : "(plain)");
        if (n < 0)
            break;
        off += (size_t)n;
    }
    allows[0] = '\0';
    for (i = 0, off = 0; i < p->nallows && off < sizeof(allows); i++) {
        int n;
        if (p->allows[i].port == 0)
            n = snprintf(allows + off, sizeof(allows) - off, "%s%s:*", i ? "," : "",
                         p->allows[i].pattern);
        else
            n = snprintf(allows + off, sizeof(allows) - off, "%s%s:%u", i ? "," : "",
                         p->allows[i].pattern, p->allows[i].port);
        if (n < 0)
            break;
        off += (size_t)n;
    }
    phy_log(PHY_LOG_INFO, "start",
            "listen=%s routes=%s allow=%s dns_fallback=%d max_tunnels_per_device=%u "
            "max_connections=%u idle_timeout_ms=%llu connect_timeout_ms=%llu "
            "header_timeout_ms=%llu proxy_keys=%zu dev_token=%s max_tunnels_per_source=%u "
            "upstream_backoff_ms=%llu upstream_backoff_max_ms=%llu",
            proxy_addr_format(&px->cfg.listen, listen, sizeof(listen)),
            routes[0] != '\0' ? routes : "-", allows[0] != '\0' ? allows : "-",
            px->cfg.dns_fallback, px->cfg.max_tunnels_per_device, px->cfg.max_connections,
            (unsigned long long)px->cfg.idle_timeout_ms,
            (unsigned long long)px->cfg.connect_timeout_ms,
            (unsigned long long)px->cfg.header_timeout_ms, px->cfg.nkeys,
            px->cfg.nkeys == 0 ? "unchecked" : px->cfg.dev_token_optional ? "optional" : "required",
            px->cfg.max_tunnels_per_source, (unsigned long long)p->backoff_ms,
            (unsigned long long)p->backoff_max_ms);
    if (px->cfg.nkeys == 0)
        phy_log(PHY_LOG_WARN, "no_proxy_key",
                "without --proxy-key no identity is verified: every tunnel counts per source");
}

int proxy_start(uv_loop_t *loop, const struct proxy_config *cfg, struct proxy **out, char *err,
                size_t errcap)
{
    struct proxy *px;
    char addr[64];
    int r;

    *out = NULL;
    px = calloc(1, sizeof(*px));
    if (px == NULL) {
        snprintf(err, errcap, "out of memory");
        return PHY_ENOMEM;
    }
    px->loop = loop;
    px->cfg = *cfg;
    px->listen_fd = listen_socket(&cfg->listen);
    if (px->listen_fd < 0) {
        snprintf(err, errcap, "listen on %s: %s",
                 proxy_addr_format(&cfg->listen, addr, sizeof(addr)), strerror(-px->listen_fd));
        free(px);
        return PHY_EIO;
    }
    r = uv_poll_init_socket(loop, &px->listener, px->listen_fd);
    if (r < 0) {
        snprintf(err, errcap, "poll init: %s", uv_strerror(r));
        close(px->listen_fd);
        free(px);
        return PHY_EIO;
    }
    uv_timer_init(loop, &px->pause);
    uv_timer_init(loop, &px->probe_timer);
    px->listener.data = px;
    px->pause.data = px;
    px->probe_timer.data = px;
    px->listening = 1;
    uv_poll_start(&px->listener, UV_READABLE, on_listen);
    log_start(px);
    *out = px;
    return 0;
}

void proxy_shutdown(struct proxy *px)
{
    struct tunnel *t, *next;

    if (px == NULL || px->shutting_down)
        return;
    px->shutting_down = 1;
    if (px->listening) {
        uv_close((uv_handle_t *)&px->listener, NULL);
        uv_close((uv_handle_t *)&px->pause, NULL);
        close(px->listen_fd); /* uv_poll does not own it */
        px->listening = 0;
    }
    uv_close((uv_handle_t *)&px->probe_timer, NULL);
    while (px->probes != NULL)
        probe_close(px->probes);
    for (t = px->tunnels; t != NULL; t = next) {
        next = t->next;
        if (t->state == T_REFUSING)
            tunnel_close(t, O_NONE);
        else
            tunnel_close(t, O_SHUTDOWN);
    }
}

void proxy_destroy(struct proxy *px)
{
    struct block *b;

    if (px == NULL)
        return;
    while ((b = px->pool) != NULL) {
        px->pool = b->next_free;
        free(b);
    }
    free(px);
}
