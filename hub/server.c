/* The hub's HTTPS server: non-blocking sockets watched by libuv, OpenSSL directly on
 * the socket (no buffers held by an idle connection), HTTP/1.1 keep-alive, and every
 * request handled on the libuv thread pool so the loop never waits on the store. */
#include "server.h"
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "api.h"
#include "lane.h"
#include "router.h"
#include "tickets.h"
#include "phy/assert.h"
#include "phy/err.h"
#include "phy/http.h"
#include "phy/log.h"
#include "phy/netaddr.h"
#include "phy/protocol.h"
#include "phy/proxyproto.h"

#define SERVER_MAX_HEAD 8192
#define SERVER_READ_CHUNK 16384
#define SERVER_ACCEPT_BATCH 128
#define SERVER_IDLE_BUCKETS 1024
#define SERVER_MAX_MODES 8
/* Threads of the slow lane: logins (argon2id, at most 4 at once), password changes,
 * a regional hub's claims waiting on eu (bounded by --inter-region-timeout). */
#define SERVER_SLOW_THREADS 8
/* Past --max-connections this many more are accepted to be told 503; past those,
 * new connections are closed at once. */
#define SERVER_OVERFLOW(max) ((max) / 8 > 8 ? (max) / 8 : 8)

struct server {
    struct hub *hub;
    uv_loop_t *loop;
    SSL_CTX *ctx;
    uv_poll_t listen_poll;
    uv_timer_t pause_timer;
    uv_timer_t drain_timer; /* stopping: the drain time's end */
    /* --tls-ticket-keys, as last read (read by the handshakes, on this thread) */
    struct ticket_keys tickets;
    uint64_t tickets_checked_ms; /* uv_now of the last look at the file */
    struct stat tickets_st;      /* the file as then */
    struct lane *slow;      /* requests that may block for long (api_slow) */
    int listen_fd;
    int stopping;
    int listener_closed;
    enum { DRAIN_NONE, DRAIN_RUNNING, DRAIN_CLOSING } drain;
    size_t nsetup;      /* connections before the end of their TLS handshake */
    struct conn *q_head, *q_tail; /* spoke, waiting for a handshake slot (FIFO) */
    size_t nconns;
    size_t ndevice; /* device sessions among nconns */
    struct idle_src *idle[SERVER_IDLE_BUCKETS]; /* idle keep-alive conns per source */
    uint64_t warned_ms;
    struct conn *conns;
    const struct conn_mode *modes[SERVER_MAX_MODES];
    void *mode_state[SERVER_MAX_MODES];
    size_t nmodes;
    uint64_t rid_prefix;
    uint64_t rid_seq;
};

struct work {
    uv_work_t req;
    struct conn *conn;
    const struct conn_mode *mode; /* NULL: an API request */
    void *mode_state;
    void *mode_work; /* mode->work_size bytes */
    struct api_request areq;
    struct api_response ares;
    char *blob; /* owns every string of areq */
    size_t blob_len;
    char rid[24];
    uint64_t start_ns; /* uv_hrtime when the request was complete */
    char peer_ip[64];  /* areq.peer_ip */
};

struct hub *conn_hub(const struct conn *c)
{
    return c->srv->hub;
}

uv_loop_t *conn_loop(const struct conn *c)
{
    return c->srv->loop;
}

void server_effect(struct server *s, const struct api_effect *e, const char *push_patch)
{
    for (size_t i = 0; i < s->nmodes; i++)
        if (s->modes[i]->effect)
            s->modes[i]->effect(s->mode_state[i], e, push_patch);
}

static void conn_drive(struct conn *c);

static void on_conn_poll(uv_poll_t *h, int status, int events);
static void on_conn_timer(uv_timer_t *t);

void conn_want(struct conn *c, int events)
{
    if (events == c->polling)
        return;
    c->polling = events;
    if (events == 0)
        uv_poll_stop(&c->poll);
    else
        uv_poll_start(&c->poll, events, on_conn_poll);
}

/* (Re)arms the connection's single deadline; 0 disarms it. */
static void conn_deadline(struct conn *c, long seconds)
{
    conn_deadline_ms(c, seconds > 0 ? (uint64_t)seconds * 1000 : 0);
}

void conn_deadline_ms(struct conn *c, uint64_t ms)
{
    uv_timer_stop(&c->timer);
    if (ms > 0)
        uv_timer_start(&c->timer, on_conn_timer, ms, 0);
}

/* Frees the connection's buffers; the response may have carried credentials. */
static void conn_free_out(struct conn *c)
{
    if (c->out)
        OPENSSL_cleanse(c->out, c->out_len);
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = c->out_cap = 0;
}

void conn_free_in(struct conn *c)
{
    if (c->in) /* requests carry credentials (Authorization, bodies) */
        OPENSSL_cleanse(c->in, c->in_cap);
    free(c->in);
    c->in = NULL;
    c->in_len = c->in_cap = 0;
}

static void conn_free_buffers(struct conn *c)
{
    conn_free_out(c);
    conn_free_in(c);
}

/* Frees the server once it is stopped, its listener closed and no connection is left
 * (a connection with work in flight stays listed until the work returns). */
static void server_maybe_free(struct server *s);

static void on_drain_closed(uv_handle_t *h)
{
    struct server *s = h->data;
    s->drain = DRAIN_NONE;
    server_maybe_free(s);
}

static void server_maybe_free(struct server *s)
{
    if (s->stopping && s->listener_closed && s->nconns == 0) {
        if (s->drain == DRAIN_RUNNING) {
            s->drain = DRAIN_CLOSING;
            uv_close((uv_handle_t *)&s->drain_timer, on_drain_closed);
        }
        if (s->drain != DRAIN_NONE)
            return;
        lane_close(s->slow); /* no connection left, so no request in it */
        s->slow = NULL;
        for (size_t i = 0; i < s->nmodes; i++)
            if (s->modes[i]->fini)
                s->modes[i]->fini(s->mode_state[i]);
        SSL_CTX_free(s->ctx);
        OPENSSL_cleanse(&s->tickets, sizeof s->tickets);
        free(s);
    }
}

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    SSL_free(c->ssl);
    close(c->fd);
    conn_free_buffers(c);
    free(c);
}

/* ---- idle keep-alive connections per source address ---- */

struct idle_src {
    struct idle_src *next;
    unsigned n;
    char ip[INET6_ADDRSTRLEN];
};

/* The address part of c->peer ("ip:port"). */
static void peer_ip(const struct conn *c, char out[INET6_ADDRSTRLEN])
{
    const char *colon = strrchr(c->peer, ':');
    size_t n = colon ? (size_t)(colon - c->peer) : strlen(c->peer);
    if (n >= INET6_ADDRSTRLEN)
        n = INET6_ADDRSTRLEN - 1;
    memcpy(out, c->peer, n);
    out[n] = '\0';
}

static struct idle_src **idle_find(struct server *s, const char *ip)
{
    uint64_t hsh = 1469598103934665603ULL;
    for (const char *p = ip; *p; p++)
        hsh = (hsh ^ (unsigned char)*p) * 1099511628211ULL;
    struct idle_src **pp = &s->idle[hsh % SERVER_IDLE_BUCKETS];
    while (*pp && strcmp((*pp)->ip, ip) != 0)
        pp = &(*pp)->next;
    return pp;
}

/* 1 when c's source may keep one more idle connection (then it is counted). */
static int idle_take(struct conn *c)
{
    char ip[INET6_ADDRSTRLEN];
    peer_ip(c, ip);
    struct idle_src **pp = idle_find(c->srv, ip);
    if (*pp && (*pp)->n >= (unsigned)c->srv->hub->cfg.max_idle_per_source)
        return 0;
    if (!*pp) {
        struct idle_src *e = calloc(1, sizeof(*e));
        if (!e)
            return 0;
        memcpy(e->ip, ip, sizeof(ip));
        *pp = e;
    }
    (*pp)->n++;
    c->idle_slot = 1;
    return 1;
}

static void idle_give(struct conn *c)
{
    char ip[INET6_ADDRSTRLEN];
    if (!c->idle_slot)
        return;
    c->idle_slot = 0;
    peer_ip(c, ip);
    struct idle_src **pp = idle_find(c->srv, ip);
    if (*pp && --(*pp)->n == 0) {
        struct idle_src *e = *pp;
        *pp = e->next;
        free(e);
    }
}

/* 1 when the source of c has as many idle connections as it may keep. */
static int idle_full(struct conn *c)
{
    char ip[INET6_ADDRSTRLEN];
    peer_ip(c, ip);
    struct idle_src **pp = idle_find(c->srv, ip);
    return *pp && (*pp)->n >= (unsigned)c->srv->hub->cfg.max_idle_per_source;
}

static void queue_remove(struct conn *c)
{
    struct server *s = c->srv;
    if (!c->queued)
        return;
    c->queued = 0;
    if (c->qprev)
        c->qprev->qnext = c->qnext;
    else
        s->q_head = c->qnext;
    if (c->qnext)
        c->qnext->qprev = c->qprev;
    else
        s->q_tail = c->qprev;
    c->qprev = c->qnext = NULL;
}

/* A connection whose client has spoken (its PROXY header or ClientHello is waiting)
 * takes a handshake slot, or waits its turn: 1 to go on now, 0 when queued (not
 * polled, its deadline paused: the wait is the hub's doing). A connection that never
 * speaks takes no slot, so silent connections cannot hold the handshakes up. */
static int setup_slot(struct conn *c)
{
    struct server *s = c->srv;
    if (c->in_setup)
        return 1;
    if (s->nsetup < (size_t)s->hub->cfg.max_handshakes) {
        c->in_setup = 1;
        s->nsetup++;
        return 1;
    }
    c->queued = 1;
    c->qprev = s->q_tail;
    if (s->q_tail)
        s->q_tail->qnext = c;
    else
        s->q_head = c;
    s->q_tail = c;
    conn_want(c, 0);
    conn_deadline(c, 0);
    return 0;
}

/* A connection's TLS handshake ended (done, failed or closed): one fewer in flight,
 * and the oldest connection waiting for a slot takes it, with the header deadline
 * from now. A storm is so served in order at full speed, instead of every handshake
 * slowed down by all the others until they time out. */
static void setup_end(struct conn *c)
{
    struct server *s = c->srv;
    if (!c->in_setup)
        return;
    c->in_setup = 0;
    s->nsetup--;
    if (s->q_head && !s->stopping) {
        struct conn *next = s->q_head;
        queue_remove(next);
        next->in_setup = 1;
        s->nsetup++;
        next->accept_ms = uv_now(s->loop);
        conn_deadline(next, s->hub->cfg.header_timeout_s);
        conn_want(next, UV_READABLE); /* its bytes are waiting: driven at once */
    }
}

void conn_close(struct conn *c)
{
    struct server *s = c->srv;
    if (c->state == CONN_WORKING) {
        c->close_after_work = 1; /* the work item still points at c */
        return;
    }
    if (uv_is_closing((uv_handle_t *)&c->poll))
        return;
    queue_remove(c);
    setup_end(c);
    if (c->mode && c->mode->detach(c))
        return; /* the mode's work in flight: it closes the conn when it returns */
    c->mode = NULL;
    c->mode_data = NULL;
    idle_give(c);
    if (c->device_slot)
        s->ndevice--;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    uv_close((uv_handle_t *)&c->poll, on_conn_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
    server_maybe_free(s);
}


/* Queues a complete response (head + body) and starts writing it. */
static void conn_respond_typed(struct conn *c, int status, const char *extra, const char *ctype,
                               const char *body, size_t body_len, int keep_alive)
{
    char head[2048], headers[API_MAX_EXTRA_HEADERS + sizeof(CONN_SECURITY_HEADERS) + 32];
    /* API answers (JSON) name devices, twins and tokens: never cached. Static files
     * bring their own Cache-Control. */
    const char *nocache =
        (!ctype || strcmp(ctype, "application/json") == 0) && !(extra && strstr(extra, "Cache-Control:"))
            ? "Cache-Control: no-store\r\n"
            : "";
    int n = snprintf(headers, sizeof(headers), "%s%s%s", extra ? extra : "", nocache,
                     CONN_SECURITY_HEADERS);
    if (n > 0 && (size_t)n < sizeof(headers))
        n = phy_http_write_response_head(head, sizeof(head), status,
                                         body ? (ctype ? ctype : "application/json") : NULL,
                                         body_len, keep_alive, headers);
    else
        n = -1;
    OPENSSL_cleanse(headers, sizeof(headers)); /* may hold a Set-Cookie */
    if (n < 0) {
        conn_close(c);
        return;
    }
    conn_free_out(c);
    c->out = malloc((size_t)n + body_len);
    if (!c->out) {
        conn_close(c);
        return;
    }
    memcpy(c->out, head, (size_t)n);
    OPENSSL_cleanse(head, (size_t)n);
    if (c->head_only) /* HEAD: the GET answer's head, Content-Length included, no body */
        body_len = 0;
    c->head_only = 0;
    if (body_len)
        memcpy(c->out + n, body, body_len);
    c->out_len = (size_t)n + body_len;
    c->out_off = 0;
    c->keep_alive = keep_alive;
    c->state = CONN_WRITING;
    conn_deadline(c, c->srv->hub->cfg.header_timeout_s);
    conn_drive(c);
}

int conn_out_append(struct conn *c, const char *data, size_t n, size_t max_pending)
{
    size_t pending = c->out_len - c->out_off;
    if (pending + n > max_pending)
        return PHY_ETOOBIG;
    if (c->out_off > 0 && c->out_off >= c->out_len / 2) { /* compact, amortized */
        memmove(c->out, c->out + c->out_off, pending);
        c->out_len = pending;
        c->out_off = 0;
    }
    if (c->out && c->out_cap == 0)
        c->out_cap = c->out_len; /* an exactly sized response buffer */
    return conn_buf_append(&c->out, &c->out_len, &c->out_cap, data, n, SIZE_MAX);
}

/* Writes what is pending in c->out through TLS. 1 when all is written, 0 when TLS
 * must wait for the socket (*ev: the poll events it needs), -1 when the connection
 * failed and was closed. */
static int conn_write_out(struct conn *c, int *ev)
{
    while (c->out && c->out_off < c->out_len) {
        ERR_clear_error();
        int n = SSL_write(c->ssl, c->out + c->out_off, (int)(c->out_len - c->out_off));
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        *ev = conn_ssl_want(c->ssl, n);
        if (*ev < 0) {
            conn_close(c);
            return -1;
        }
        return 0;
    }
    return 1;
}

int conn_flush(struct conn *c)
{
    int ev = 0, r = conn_write_out(c, &ev);
    if (r < 0)
        return -1;
    if (r == 0) {
        conn_want(c, ev | UV_READABLE);
        return 0;
    }
    conn_free_out(c);
    return 0;
}

void conn_upgrade_raw(struct conn *c, const struct conn_mode *mode, void *data, const char *bytes,
                      size_t n)
{
    c->mode = mode;
    c->mode_data = data;
    conn_free_out(c);
    c->out = malloc(n);
    if (!c->out) {
        conn_close(c);
        return;
    }
    memcpy(c->out, bytes, n);
    c->out_len = n;
    c->out_off = 0;
    c->keep_alive = 1;
    c->state = CONN_WRITING;
    conn_deadline(c, c->srv->hub->cfg.header_timeout_s);
    conn_drive(c);
}

static void conn_respond(struct conn *c, int status, const char *extra, const char *body,
                         size_t body_len, int keep_alive)
{
    conn_respond_typed(c, status, extra, NULL, body, body_len, keep_alive);
}

void conn_upgrade(struct conn *c, const struct conn_mode *mode, void *data, int status,
                  const char *extra)
{
    c->mode = mode;
    c->mode_data = data;
    conn_respond(c, status, extra, NULL, 0, 1);
}

void conn_refuse(struct conn *c, int status, const char *code, const char *msg)
{
    char body[256];
    int n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"message\":\"%s\"}", code, msg);
    PHY_ASSERT(n > 0 && (size_t)n < sizeof(body)); /* codes and messages are static text */
    phy_log(PHY_LOG_INFO, "http_refused", "peer=%s status=%d error=%s", c->peer, status, code);
    const char *extra = status == 503   ? "Retry-After: 1\r\n"
                        : status == 426 ? "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                                        : NULL;
    conn_respond(c, status, extra, body, (size_t)n, 0);
}

/* Requests other than device sessions may not take the share of connections kept
 * for devices; nothing at all fits past --max-connections. */
static int over_capacity(const struct conn *c, int device_session)
{
    const struct server *s = c->srv;
    size_t max = (size_t)s->hub->cfg.max_connections;
    size_t general = max - max * (size_t)s->hub->cfg.device_share / 100;
    if (c->over_capacity)
        return 1;
    return !device_session && s->nconns - s->ndevice > general;
}

static void work_free_blob(struct work *w)
{
    if (w->blob)
        OPENSSL_cleanse(w->blob, w->blob_len);
    free(w->blob);
    w->blob = NULL;
}

static void on_work(uv_work_t *req)
{
    struct work *w = req->data;
    struct hub *h = w->conn->srv->hub;
    if (w->mode) {
        w->mode->authorize(h, &w->areq, &w->ares, w->mode_work);
        return;
    }
    uint64_t t0 = uv_hrtime();
    api_handle(h, &w->areq, &w->ares);
    if (hub_route_class(w->areq.path) != ROUTE_STATIC) { /* static files use no store */
        hub_metric_add(&h->metrics.store_ops, 1);
        hub_metric_add(&h->metrics.store_us, (uv_hrtime() - t0) / 1000);
    }
}

static void work_free(struct work *w)
{
    api_response_free(&w->ares);
    work_free_blob(w);
    if (w->mode_work)
        OPENSSL_cleanse(w->mode_work, w->mode->work_size);
    free(w->mode_work);
    free(w);
}

static void on_work_done(uv_work_t *req, int status)
{
    struct work *w = req->data;
    struct conn *c = w->conn;
    (void)status;
    PHY_ASSERT(c->state == CONN_WORKING);
    c->state = CONN_READ;
    if (c->srv->stopping)
        c->keep_alive = 0; /* answered (the request in flight finishes), then closed */
    if (c->close_after_work) {
        conn_close(c);
    } else {
        struct server *s = c->srv;
        uint64_t dur = uv_now(s->loop) - c->req_start_ms;
        char lpath[128];
        hub_metrics_request(s->hub, w->areq.path, (uv_hrtime() - w->start_ns) / 1000);
        phy_log(PHY_LOG_INFO, "http", "rid=%s peer=%s method=%s path=%s status=%d ms=%llu%s%s",
                w->rid, c->peer, w->areq.method,
                api_log_path(w->areq.path, lpath, sizeof(lpath)), w->ares.status,
                (unsigned long long)dur, w->ares.log[0] ? " " : "", w->ares.log);
        if (w->mode && s->stopping && (w->ares.status == 101 || w->ares.status == 200)) {
            /* An upgrade authorized while the hub began to stop: refused, undone. */
            if (w->mode->cancel)
                w->mode->cancel(w->mode_state, w->mode_work);
            conn_refuse(c, 503, "stopping", "the hub is stopping; retry later");
        } else if (!w->mode || !w->mode->answer(c, w->mode_state, &w->ares, w->mode_work)) {
            if (c->keep_alive && c->in_len == 0 && idle_full(c))
                c->keep_alive = 0; /* its source keeps enough idle connections */
            conn_respond_typed(c, w->ares.status, w->ares.extra_headers, w->ares.content_type,
                               w->ares.body, w->ares.body_len, c->keep_alive);
            for (size_t i = 0; i < w->ares.neffects; i++)
                server_effect(s, &w->ares.effects[i], w->ares.push_patch);
        }
    }
    work_free(w);
}

/* Copies the fields handlers need into one allocation owned by the work item. */
static int work_fill(struct work *w, const char *buf, const struct phy_http_request *rq,
                     size_t head_len, size_t body_len)
{
    static const char *const names[] = {"Authorization", "Content-Type", "If-Match", "Cookie",
                                        "X-CSRF-Token", "X-Phy-Background", "User-Agent"};
    enum { NHDR = sizeof(names) / sizeof(names[0]) };
    const struct phy_str *hv[NHDR];
    size_t need = rq->method.len + rq->target.len + body_len + 8;
    for (size_t i = 0; i < NHDR; i++) {
        hv[i] = phy_http_find_header(rq->headers, rq->num_headers, names[i]);
        if (hv[i])
            need += hv[i]->len + 1;
    }
    char *p = malloc(need);
    if (!p)
        return PHY_ENOMEM;
    w->blob = p;
    w->blob_len = need;
#define COPY_STR(dst, src, n)                                                                      \
    do {                                                                                           \
        memcpy(p, (src), (n));                                                                     \
        p[(n)] = '\0';                                                                             \
        (dst) = p;                                                                                 \
        p += (n) + 1;                                                                              \
    } while (0)
    COPY_STR(w->areq.method, rq->method.p, rq->method.len);
    const char *q = memchr(rq->target.p, '?', rq->target.len);
    size_t plen = q ? (size_t)(q - rq->target.p) : rq->target.len;
    COPY_STR(w->areq.path, rq->target.p, plen);
    if (q)
        COPY_STR(w->areq.query, q + 1, rq->target.len - plen - 1);
    const char *background = NULL;
    const char **dst[NHDR] = {&w->areq.authorization, &w->areq.content_type, &w->areq.if_match,
                              &w->areq.cookie, &w->areq.csrf_token, &background,
                              &w->areq.user_agent};
    for (size_t i = 0; i < NHDR; i++)
        if (hv[i])
            COPY_STR(*dst[i], hv[i]->p, hv[i]->len);
    COPY_STR(w->areq.body, buf + head_len, body_len);
#undef COPY_STR
    w->areq.body_len = body_len;
    w->areq.background = background && strcmp(background, "1") == 0;
    /* "1.2.3.4:5678" or "[::1]:5678" -> the address alone (login throttle per client) */
    const char *peer = w->conn->peer, *colon = strrchr(peer, ':');
    size_t alen = colon ? (size_t)(colon - peer) : strlen(peer);
    if (alen >= 2 && peer[0] == '[' && peer[alen - 1] == ']') {
        peer++;
        alen -= 2;
    }
    snprintf(w->peer_ip, sizeof(w->peer_ip), "%.*s", (int)alen, peer);
    w->areq.peer_ip = w->peer_ip;
    return 0;
}

/* Looks for one complete request in c->in; dispatches it to the pool when found.
 * Returns 1 when the connection moved on (dispatched, refused), 0 to keep reading. */
/* RFC 9110/9112 rules the hub applies before routing: one Host header (HTTP/1.1),
 * an absolute-form target only for the authority the Host names (rewritten to its
 * path), OPTIONS * answered. 1 when c was answered. */
static int http_checks(struct conn *c, struct phy_http_request *rq)
{
    const struct phy_str *host = phy_http_find_header(rq->headers, rq->num_headers, "host");
    if (!host && rq->minor_version == 1) {
        conn_refuse(c, 400, "bad_request", "an HTTP/1.1 request needs one Host header");
        return 1;
    }
    struct phy_str *t = &rq->target;
    size_t skip = t->len >= 8 && strncasecmp(t->p, "https://", 8) == 0   ? 8
                  : t->len >= 7 && strncasecmp(t->p, "http://", 7) == 0 ? 7
                                                                          : 0;
    if (skip) {
        const char *auth = t->p + skip, *end = t->p + t->len;
        const char *slash = memchr(auth, '/', (size_t)(end - auth));
        struct phy_str authority = {auth, (size_t)((slash ? slash : end) - auth)};
        if (!host || authority.len != host->len ||
            strncasecmp(authority.p, host->p, authority.len) != 0) {
            conn_refuse(c, 400, "bad_request", "an absolute target must name this host");
            return 1;
        }
        /* origin form from here on; "http://h" alone is "/" */
        t->p = slash ? slash : "/";
        t->len = slash ? (size_t)(end - slash) : 1;
    }
    if (phy_str_eq(rq->method, "OPTIONS") && phy_str_eq(rq->target, "*")) {
        conn_respond(c, 204, "Allow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n", NULL, 0,
                     rq->keep_alive);
        return 1;
    }
    return 0;
}

/* "Expect: 100-continue" on a request whose body is still to come: the interim
 * answer, once (RFC 9110 section 10.1.1). Best effort: a client that does not get
 * it sends the body after its own timeout anyway. */
static void expect_continue(struct conn *c, const struct phy_http_request *rq)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    const struct phy_str *e = phy_http_find_header(rq->headers, rq->num_headers, "expect");
    if (c->continued || !e || !phy_str_ieq(*e, "100-continue") || rq->minor_version != 1)
        return;
    c->continued = 1;
    ERR_clear_error();
    (void)SSL_write(c->ssl, cont, (int)sizeof(cont) - 1);
}

static int conn_try_request(struct conn *c)
{
    struct server *s = c->srv;
    struct phy_http_request rq;
    if (c->in_len == 0)
        return 0;
    int r = phy_http_parse_request(c->in, c->in_len, SERVER_MAX_HEAD, &rq);
    if (r == PHY_EAGAIN)
        return 0;
    if (r == PHY_ETOOBIG) {
        conn_refuse(c, 431, "headers_too_large", "request head over 8192 bytes or 64 headers");
        return 1;
    }
    if (r < 0) {
        conn_refuse(c, 400, "bad_request", "malformed HTTP request");
        return 1;
    }
    size_t head_len = (size_t)r;
    if (rq.chunked) {
        conn_refuse(c, 411, "length_required", "chunked request bodies are not accepted");
        return 1;
    }
    if (rq.content_length > s->hub->cfg.max_body) {
        conn_refuse(c, 413, "payload_too_large", "request body over the limit");
        return 1;
    }
    size_t body_len = rq.content_length > 0 ? (size_t)rq.content_length : 0;
    if (http_checks(c, &rq))
        return 1;
    if (c->in_len < head_len + body_len) {
        expect_continue(c, &rq);
        return 0;
    }
    c->continued = 0;

    struct work *w = calloc(1, sizeof(*w));
    if (w)
        w->conn = c; /* work_fill reads the peer */
    if (!w || work_fill(w, c->in, &rq, head_len, body_len) < 0) {
        free(w);
        conn_refuse(c, 500, "internal", "out of memory");
        return 1;
    }
    c->head_only = phy_str_eq(rq.method, "HEAD");
    for (size_t i = 0; i < s->nmodes && !w->mode; i++) {
        if (phy_str_eq(rq.target, s->modes[i]->path)) {
            w->mode = s->modes[i];
            w->mode_state = s->mode_state[i];
        }
    }
    if (w->mode && !phy_str_eq(rq.method, "GET")) {
        work_free(w);
        conn_refuse(c, 405, "method_not_allowed", "use GET");
        return 1;
    }
    if (over_capacity(c, w->mode && w->mode->device_session)) {
        work_free(w);
        conn_refuse(c, 503, "over_capacity", "the hub is at its connection limit; retry later");
        return 1;
    }
    if (w->mode && w->mode->work_size && !(w->mode_work = calloc(1, w->mode->work_size))) {
        work_free(w);
        conn_refuse(c, 500, "internal", "out of memory");
        return 1;
    }
    if (w->mode && w->mode->check) {
        const char *code = NULL, *msg = NULL;
        int st = w->mode->check(&rq, w->mode_work, &code, &msg);
        if (st != 0) {
            work_free(w);
            conn_refuse(c, st, code, msg);
            return 1;
        }
    }
    snprintf(w->rid, sizeof(w->rid), "%08llx%06llx", (unsigned long long)s->rid_prefix,
             (unsigned long long)(++s->rid_seq & 0xffffff));
    w->areq.request_id = w->rid;
    w->conn = c;
    w->req.data = w;
    w->start_ns = uv_hrtime();
    c->keep_alive = rq.keep_alive;
    c->req_start_ms = uv_now(s->loop);

    /* Keep pipelined bytes, drop the buffer when nothing is left. */
    size_t used = head_len + body_len;
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
    if (c->in_len == 0)
        conn_free_in(c);
    c->state = CONN_WORKING;
    conn_want(c, 0);
    conn_deadline(c, 0);
    if (!w->mode && api_slow(w->areq.method, w->areq.path) &&
        lane_queue(s->slow, &w->req, on_work, on_work_done) == 0)
        return 1;
    uv_queue_work(s->loop, &w->req, on_work, on_work_done);
    return 1;
}

int conn_buf_append(char **buf, size_t *len, size_t *cap, const void *data, size_t n, size_t limit)
{
    if (*len + n > limit)
        return PHY_ETOOBIG;
    if (*len + n > *cap) {
        size_t ncap = *cap ? *cap : 4096;
        while (ncap < *len + n)
            ncap *= 2;
        if (ncap > limit)
            ncap = limit;
        char *p = realloc(*buf, ncap);
        if (!p)
            return PHY_ENOMEM;
        *buf = p;
        *cap = ncap;
    }
    memcpy(*buf + *len, data, n);
    *len += n;
    return 0;
}

static int conn_append(struct conn *c, const char *buf, size_t n)
{
    return conn_buf_append(&c->in, &c->in_len, &c->in_cap, buf, n,
                           SERVER_MAX_HEAD + (size_t)c->srv->hub->cfg.max_body);
}

/* Maps an SSL_get_error result to poll events; returns -1 when the connection is done. */
int conn_ssl_want(SSL *ssl, int ret)
{
    switch (SSL_get_error(ssl, ret)) {
    case SSL_ERROR_WANT_READ:
        return UV_READABLE;
    case SSL_ERROR_WANT_WRITE:
        return UV_WRITABLE;
    default:
        ERR_clear_error();
        return -1;
    }
}

static void format_peer(char *out, size_t cap, const struct sockaddr_storage *ss)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        port = ntohs(a->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        port = ntohs(a->sin6_port);
    }
    snprintf(out, cap, "%s:%u", ip, port);
}

#define PROXY_HEAD_RETRY_MS 20

/* A connection from a trusted proxy may open with a PROXY v2 header: it is peeked
 * (so that a connection without one goes to TLS untouched), then consumed. The
 * client's address replaces the proxy's as the peer. 1: go on to the handshake;
 * 0: wait (the connection is watched or timed); -1: closed. */
static int conn_proxy_head(struct conn *c)
{
    unsigned char buf[PHY_PP2_MAX_LEN];
    struct phy_pp2 pp;
    ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_PEEK);
    int r;

    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        conn_want(c, UV_READABLE);
        return 0;
    }
    if (n <= 0) {
        conn_close(c);
        return -1;
    }
    r = phy_pp2_parse(buf, (size_t)n, &pp);
    if (r == PHY_ENOTFOUND)
        return 1; /* no header: the proxy's own address stays the peer */
    if (r == PHY_EAGAIN) {
        /* Part of a header: the rest is still to come, and polling a socket with
         * unread bytes would spin, so look again shortly (the accept deadline
         * still applies, see on_conn_timer). */
        conn_want(c, 0);
        conn_deadline_ms(c, PROXY_HEAD_RETRY_MS);
        return 0;
    }
    if (r < 0 || recv(c->fd, buf, (size_t)r, 0) != r) {
        phy_log(PHY_LOG_WARN, "proxy_header_invalid", "peer=%s", c->peer);
        conn_close(c);
        return -1;
    }
    if (!pp.local) {
        char proxy[64];
        memcpy(proxy, c->peer, sizeof(proxy));
        format_peer(c->peer, sizeof(c->peer), &pp.src);
        memcpy(c->via_ident, pp.ident, sizeof(c->via_ident));
        c->via_verified = pp.verified;
        phy_log(PHY_LOG_DEBUG, "proxied", "peer=%s proxy=%s ident=%s verified=%d", c->peer, proxy,
                pp.ident[0] ? pp.ident : "-", pp.verified);
    }
    uint64_t limit = (uint64_t)c->srv->hub->cfg.header_timeout_s * 1000;
    uint64_t spent = uv_now(c->srv->loop) - c->accept_ms;
    conn_deadline_ms(c, spent < limit ? limit - spent : 1); /* what is left of it */
    return 1;
}

static void conn_drive(struct conn *c)
{
    char buf[SERVER_READ_CHUNK];
    for (;;) {
        switch (c->state) {
        case CONN_PROXY_HEAD: {
            if (!setup_slot(c))
                return;
            int r = conn_proxy_head(c);
            if (r <= 0)
                return;
            c->state = CONN_HANDSHAKE;
            continue;
        }
        case CONN_HANDSHAKE: {
            if (!setup_slot(c))
                return;
            if (!c->ssl) {
                c->ssl = SSL_new(c->srv->ctx);
                if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
                    conn_close(c);
                    return;
                }
            }
            ERR_clear_error();
            int r = SSL_accept(c->ssl);
            if (r == 1) {
                c->state = CONN_READ;
                setup_end(c);
                continue;
            }
            int ev = conn_ssl_want(c->ssl, r);
            if (ev < 0) {
                phy_log(PHY_LOG_DEBUG, "tls_failed", "peer=%s", c->peer);
                conn_close(c);
            } else {
                conn_want(c, ev);
            }
            return;
        }
        case CONN_READ: {
            if (conn_try_request(c))
                return;
            ERR_clear_error();
            int n = SSL_read(c->ssl, buf, sizeof(buf));
            if (n > 0) {
                idle_give(c); /* a request is coming: no longer idle */
                /* The first request's deadline runs from the accept (TLS and head
                 * together); a later one's from its first byte. */
                if (c->in_len == 0 && c->served)
                    conn_deadline(c, c->srv->hub->cfg.header_timeout_s);
                int r = conn_append(c, buf, (size_t)n);
                if (r == PHY_ETOOBIG) {
                    conn_refuse(c, 413, "payload_too_large", "request over the size limit");
                    return;
                }
                if (r < 0) {
                    conn_close(c);
                    return;
                }
                continue;
            }
            int ev = conn_ssl_want(c->ssl, n);
            if (ev < 0)
                conn_close(c);
            else
                conn_want(c, ev);
            return;
        }
        case CONN_WORKING:
            conn_want(c, 0);
            return;
        case CONN_MODE:
            PHY_ASSERT(c->mode);
            c->mode->drive(c);
            return;
        case CONN_WRITING: {
            int ev = 0, r = conn_write_out(c, &ev);
            if (r <= 0) {
                if (r == 0)
                    conn_want(c, ev);
                return;
            }
            conn_free_out(c);
            c->served = 1;
            if (c->mode && !c->srv->stopping) {
                conn_deadline(c, 0);
                c->state = CONN_MODE;
                if (c->mode->device_session) {
                    c->device_slot = 1;
                    c->srv->ndevice++;
                }
                c->mode->begin(c);
                return;
            }
            if (!c->keep_alive || c->srv->stopping) {
                ERR_clear_error();
                SSL_shutdown(c->ssl);
                conn_close(c);
                return;
            }
            c->state = CONN_READ;
            if (c->in_len == 0 && !idle_take(c)) {
                ERR_clear_error(); /* its answer said Connection: close already */
                SSL_shutdown(c->ssl);
                conn_close(c);
                return;
            }
            conn_deadline(c, c->in_len ? c->srv->hub->cfg.header_timeout_s
                                       : c->srv->hub->cfg.keepalive_s);
            continue;
        }
        }
    }
}

static void on_conn_poll(uv_poll_t *h, int status, int events)
{
    struct conn *c = h->data;
    (void)events;
    if (status < 0) {
        conn_close(c);
        return;
    }
    conn_drive(c);
}

static void on_conn_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->state == CONN_MODE) {
        PHY_ASSERT(c->mode);
        c->mode->timer(c);
        return;
    }
    if (c->state == CONN_READ && c->in_len > 0) {
        conn_refuse(c, 408, "request_timeout", "request not received in time");
        return;
    }
    if (c->state == CONN_PROXY_HEAD &&
        uv_now(c->srv->loop) - c->accept_ms < (uint64_t)c->srv->hub->cfg.header_timeout_s * 1000) {
        conn_drive(c); /* a partial PROXY header: look again */
        return;
    }
    if (c->state != CONN_WORKING)
        conn_close(c);
}

static struct conn *conn_accept(struct server *s, int fd, const struct sockaddr_storage *ss)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return NULL;
    }
    c->fd = fd;
    c->srv = s;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    format_peer(c->peer, sizeof(c->peer), ss);
    uint8_t a16[16];
    int trusted = s->hub->ntrusted > 0 && phy_addr16((const struct sockaddr *)ss, a16) == 0 &&
                  phy_cidr_list_match(s->hub->trusted, s->hub->ntrusted, a16);
    if (uv_poll_init_socket(s->loop, &c->poll, fd) != 0) {
        close(fd);
        free(c);
        return NULL;
    }
    uv_timer_init(s->loop, &c->timer);
    c->poll.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    /* Only a trusted proxy may tell us who the client is; from anyone else a PROXY
     * header is not looked for, and fails the TLS handshake like any garbage. */
    c->state = trusted ? CONN_PROXY_HEAD : CONN_HANDSHAKE;
    c->accept_ms = uv_now(s->loop);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    conn_deadline(c, s->hub->cfg.header_timeout_s);
    /* No TLS state until the client has sent something: a connection that never
     * speaks costs a few hundred bytes, not a handshake's buffers, nor a handshake
     * slot (setup_slot). */
    conn_want(c, UV_READABLE);
    return c;
}

static void on_listen_poll(uv_poll_t *h, int status, int events);

static void on_pause_done(uv_timer_t *t)
{
    struct server *s = t->data;
    if (!s->stopping)
        uv_poll_start(&s->listen_poll, UV_READABLE, on_listen_poll);
}

int conn_tls_resumed(const struct conn *c)
{
    return c->ssl && SSL_session_reused(c->ssl);
}

/* --tls-ticket-keys: read again when the file changed (a rotation), looked at no more
 * often than every --node-heartbeat as connections come. A file that went bad keeps
 * the keys as they were. */
static void tickets_refresh(struct server *s)
{
    const struct hub_config *cfg = &s->hub->cfg;
    struct stat st;
    char err[256];
    uint64_t now = uv_now(s->loop);
    if (!cfg->tls_ticket_keys || now - s->tickets_checked_ms < (uint64_t)cfg->node_heartbeat_s * 1000)
        return;
    s->tickets_checked_ms = now;
    if (stat(cfg->tls_ticket_keys, &st) != 0 ||
        (st.st_ino == s->tickets_st.st_ino && st.st_size == s->tickets_st.st_size &&
         st.st_mtim.tv_sec == s->tickets_st.st_mtim.tv_sec &&
         st.st_mtim.tv_nsec == s->tickets_st.st_mtim.tv_nsec))
        return;
    struct ticket_keys k;
    if (ticket_keys_load(cfg->tls_ticket_keys, &k, err, sizeof err) != 0) {
        phy_log(PHY_LOG_WARN, "tls_ticket_keys_kept", "why=\"%s\"", err);
        s->tickets_st = st; /* said once per change */
        return;
    }
    s->tickets = k;
    s->tickets_st = st;
    OPENSSL_cleanse(&k, sizeof k);
    phy_log(PHY_LOG_INFO, "tls_ticket_keys_loaded", "keys=%d", s->tickets.n);
}

static void on_listen_poll(uv_poll_t *h, int status, int events)
{
    struct server *s = h->data;
    (void)events;
    if (status < 0)
        return;
    tickets_refresh(s);
    for (int i = 0; i < SERVER_ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(s->listen_fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: pause accepting instead of spinning. */
                phy_log(PHY_LOG_WARN, "accept_paused", "reason=\"%s\"", strerror(errno));
                uv_poll_stop(&s->listen_poll);
                uv_timer_start(&s->pause_timer, on_pause_done, 100, 0);
            }
            return;
        }
        size_t max = (size_t)s->hub->cfg.max_connections;
        if (s->nconns >= max + SERVER_OVERFLOW(max)) {
            /* Past the overflow nothing is answered: a reset, logged once a second. */
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
            close(fd);
            if (uv_now(s->loop) - s->warned_ms >= 1000 || s->warned_ms == 0) {
                s->warned_ms = uv_now(s->loop);
                phy_log(PHY_LOG_WARN, "over_capacity", "connections=%zu max_connections=%zu "
                        "action=reset", s->nconns, max);
            }
            continue;
        }
        struct conn *c = conn_accept(s, fd, &ss);
        if (c && s->nconns > max)
            c->over_capacity = 1; /* answered 503 once it has said what it wants */
    }
}

static int listen_socket(const char *spec, int *out, char *err, size_t errcap)
{
    char host[64];
    const char *colon = strrchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= sizeof(host)) {
        snprintf(err, errcap, "--listen: expected ADDR:PORT, got '%s'", spec);
        return PHY_EINVAL;
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535 || end == colon + 1) {
        snprintf(err, errcap, "--listen: bad port in '%s'", spec);
        return PHY_EINVAL;
    }
    struct sockaddr_storage ss;
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        if (uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)&ss) != 0) {
            snprintf(err, errcap, "--listen: bad IPv6 address in '%s'", spec);
            return PHY_EINVAL;
        }
    } else if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss) != 0) {
        snprintf(err, errcap, "--listen: bad IPv4 address in '%s'", spec);
        return PHY_EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errcap, "socket: %s", strerror(errno));
        return PHY_EIO;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    socklen_t sl =
        ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 4096) != 0) {
        snprintf(err, errcap, "cannot listen on %s: %s", spec, strerror(errno));
        close(fd);
        return PHY_EIO;
    }
    *out = fd;
    return 0;
}

static SSL_CTX *tls_context(const struct hub_config *cfg, char *err, size_t errcap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errcap, "SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* TLS 1.2 only with forward-secret AEAD suites (no CBC, no SHA-1 MAC, no RSA key
     * exchange); TLS 1.3's suites are all AEAD and are preferred by the protocol. */
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1) {
        snprintf(err, errcap, "no TLS 1.2 AEAD cipher suite available");
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* Idle connections hold no record buffers; the session cache would only cost memory
     * (tickets still allow resumption). Partial writes let us resume from an offset. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1) {
        snprintf(err, errcap, "cannot load --tls-cert %s: %s", cfg->tls_cert,
                 ERR_reason_error_string(ERR_get_error()));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errcap, "cannot load --tls-key %s (or it does not match the certificate)",
                 cfg->tls_key);
        goto fail;
    }
    ERR_clear_error();
    return ctx;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

int server_start(struct hub *h, uv_loop_t *loop, const struct conn_mode *const *modes,
                 struct server **out, char *err, size_t errcap)
{
    struct server *s = calloc(1, sizeof(*s));
    if (!s)
        return PHY_ENOMEM;
    s->hub = h;
    s->loop = loop;
    s->listen_fd = -1;
    if (phy_random_bytes(&s->rid_prefix, sizeof(s->rid_prefix)) < 0)
        goto fail;
    s->rid_prefix &= 0xffffffffu;
    s->ctx = tls_context(&h->cfg, err, errcap);
    if (!s->ctx)
        goto fail;
    if (h->cfg.tls_ticket_keys) {
        if (ticket_keys_load(h->cfg.tls_ticket_keys, &s->tickets, err, errcap) != 0 ||
            stat(h->cfg.tls_ticket_keys, &s->tickets_st) != 0)
            goto fail;
        s->tickets_checked_ms = uv_now(loop);
    }
    ticket_keys_install(s->ctx, &s->tickets);
    if (listen_socket(h->cfg.listen, &s->listen_fd, err, errcap) < 0)
        goto fail;
    if (uv_poll_init_socket(loop, &s->listen_poll, s->listen_fd) != 0)
        goto fail;
    uv_timer_init(loop, &s->pause_timer);
    if (!(s->slow = lane_start(loop, SERVER_SLOW_THREADS))) {
        snprintf(err, errcap, "cannot start the slow lane's threads");
        uv_close((uv_handle_t *)&s->listen_poll, NULL);
        uv_close((uv_handle_t *)&s->pause_timer, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        goto fail;
    }
    s->listen_poll.data = s;
    s->pause_timer.data = s;
    for (; modes && modes[s->nmodes]; s->nmodes++) {
        const struct conn_mode *m = modes[s->nmodes];
        if (s->nmodes == SERVER_MAX_MODES || (m->init && m->init(s, h, loop, &s->mode_state[s->nmodes]) < 0)) {
            snprintf(err, errcap, "cannot start connection mode %s", m->name);
            goto fail_modes;
        }
        s->modes[s->nmodes] = m;
    }
    uv_poll_start(&s->listen_poll, UV_READABLE, on_listen_poll);
    *out = s;
    return 0;
fail_modes:
    for (size_t i = 0; i < s->nmodes; i++)
        if (s->modes[i]->fini)
            s->modes[i]->fini(s->mode_state[i]);
    lane_close(s->slow);
    uv_close((uv_handle_t *)&s->listen_poll, NULL);
    uv_close((uv_handle_t *)&s->pause_timer, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
fail:
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    SSL_CTX_free(s->ctx);
    OPENSSL_cleanse(&s->tickets, sizeof s->tickets);
    free(s);
    return PHY_EIO;
}

static void on_listener_closed(uv_handle_t *h)
{
    struct server *s = h->data;
    if (h == (uv_handle_t *)&s->listen_poll) {
        close(s->listen_fd);
        uv_close((uv_handle_t *)&s->pause_timer, on_listener_closed);
        return;
    }
    s->listener_closed = 1;
    server_maybe_free(s);
}

/* The drain time is over: whatever is still open closes now (a request in the
 * pool closes as soon as its work returns). */
static void on_drain_end(uv_timer_t *t)
{
    struct server *s = t->data;
    phy_log(PHY_LOG_WARN, "drain_timeout", "open_connections=%zu", s->nconns);
    struct conn *c = s->conns;
    while (c) {
        struct conn *next = c->next;
        conn_close(c);
        c = next;
    }
}

void server_stop(struct server *s)
{
    if (!s || s->stopping)
        return;
    s->stopping = 1;
    /* Device sessions are told to go (1001, each with its reconnect delay). */
    for (size_t i = 0; i < s->nmodes; i++)
        if (s->modes[i]->shutdown)
            s->modes[i]->shutdown(s->mode_state[i]);
    /* A request in the pool, or an answer being written, finishes (then its
     * connection closes); everything else closes now. */
    struct conn *c = s->conns;
    while (c) {
        struct conn *next = c->next;
        if (c->state != CONN_WORKING && c->state != CONN_WRITING)
            conn_close(c); /* the others close once answered (on_work_done, the writer) */
        c = next;
    }
    uv_close((uv_handle_t *)&s->listen_poll, on_listener_closed);
    uv_timer_init(s->loop, &s->drain_timer);
    s->drain_timer.data = s;
    s->drain = DRAIN_RUNNING;
    uv_timer_start(&s->drain_timer, on_drain_end, (uint64_t)s->hub->cfg.drain_s * 1000, 0);
    phy_log(PHY_LOG_INFO, "draining", "open_connections=%zu drain_time=%ld", s->nconns,
            s->hub->cfg.drain_s);
}
