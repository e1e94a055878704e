/* Console event streams: GET /api/v1/events as Server-Sent Events, one stream per
 * connection, fed on the event loop by device sessions (online, offline, reported,
 * status) and handlers (state, desired, tags, name). A stream that cannot keep up is
 * dropped, never buffered without bound. A connection mode (struct conn_mode). */
#include "events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/crypto.h>
#include <openssl/err.h>

#include "handlers.h"
#include "modes.h"
#include "phy/assert.h"
#include "phy/err.h"
#include "phy/log.h"

#define EVENTS_KEEPALIVE_MS 15000     /* comment line so proxies keep the stream */

/* ---- bookkeeping (no I/O) ---- */

int events_session_ended(const struct events *ev, const char *session_hash)
{
    for (size_t i = 0; i < EVENTS_ENDED; i++)
        if (strcmp(ev->ended[i], session_hash) == 0)
            return 1;
    return 0;
}

void events_count(const struct events *ev, const char *key, int64_t tenant_id, size_t *by_key,
                  size_t *by_tenant)
{
    *by_key = *by_tenant = 0;
    for (const struct stream *st = ev->streams; st; st = st->next) {
        *by_key += strcmp(st->auth.key, key) == 0;
        *by_tenant += st->auth.tenant_id == tenant_id;
    }
}

void events_end_session(struct events *ev, const char *session_hash)
{
    snprintf(ev->ended[ev->ended_next], sizeof(ev->ended[0]), "%s", session_hash);
    ev->ended_next = (ev->ended_next + 1) % EVENTS_ENDED;
    struct stream *st = ev->streams;
    while (st) {
        struct stream *next = st->next; /* conn_close unlinks st */
        if (st->auth.console && strcmp(st->auth.session_hash, session_hash) == 0) {
            phy_log(PHY_LOG_INFO, "events_close", "peer=%s reason=logout", st->conn->peer);
            conn_close(st->conn);
        }
        st = next;
    }
}

/* ---- one stream ---- */

/* A stream that cannot keep up is reset, not closed gracefully: what it has not
 * read is dropped from the socket at once instead of lingering in kernel memory. */
static void events_reset(struct conn *c, const char *why)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    phy_log(PHY_LOG_WARN, "events_dropped", "peer=%s reason=%s", c->peer, why);
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    conn_close(c);
}

/* The next timer: the keepalive, or the end of the console session if sooner. */
static void events_arm(struct conn *c)
{
    const struct stream *st = c->mode_data;
    uint64_t ms = EVENTS_KEEPALIVE_MS;
    if (st->auth.console) {
        int64_t left = st->auth.deadline_ms - hub_now_ms();
        if (left < (int64_t)ms)
            ms = left > 1 ? (uint64_t)left : 1;
    }
    conn_deadline_ms(c, ms);
}

static void events_drive(struct conn *c)
{
    char buf[512];
    /* Nothing is expected from the client; reading notices EOF and drains input. */
    for (;;) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, buf, sizeof(buf));
        if (n > 0)
            continue;
        if (conn_ssl_want(c->ssl, n) < 0) {
            conn_close(c);
            return;
        }
        break;
    }
    if (conn_flush(c) < 0)
        return;
    conn_want(c, UV_READABLE | (c->out ? UV_WRITABLE : 0));
}

void events_publish(struct events *ev, int64_t tenant_id, const char *type, const char *json)
{
    if (!ev->streams)
        return;
    size_t n = strlen(type) + strlen(json) + 20;
    char *msg = malloc(n);
    if (!msg)
        return;
    int len = snprintf(msg, n, "event: %s\ndata: %s\n\n", type, json);
    PHY_ASSERT(len > 0 && (size_t)len < n);
    struct stream *st = ev->streams;
    while (st) {
        struct stream *next = st->next;
        if (st->auth.tenant_id == tenant_id) {
            if (conn_out_append(st->conn, msg, (size_t)len, EVENTS_MAX_PENDING) < 0)
                events_reset(st->conn, "slow_consumer");
            else
                events_drive(st->conn);
        }
        st = next;
    }
    free(msg);
}

/* ---- the mode's operations ---- */

static int events_init(struct server *s, struct hub *h, uv_loop_t *loop, void **state)
{
    (void)s;
    (void)loop;
    struct events *ev = calloc(1, sizeof(*ev));
    if (!ev)
        return PHY_ENOMEM;
    ev->max_per_tenant = (int)h->cfg.max_streams_per_tenant;
    *state = ev;
    return 0;
}

static void events_fini(void *state)
{
    free(state);
}

/* Worker: who asks (a console session's cookie or an API token). */
static void events_authorize(struct hub *h, const struct api_request *req,
                             struct api_response *res, void *work)
{
    struct stream_auth *a = work;
    struct api_caller caller;
    memset(res, 0, sizeof(*res));
    if (api_auth(h, req, res, &caller) < 0)
        return;
    a->tenant_id = caller.tenant_id;
    res->status = 200;
    if (caller.cookie) {
        memcpy(a->key, caller.session_hash, sizeof(a->key));
        a->console = 1;
        memcpy(a->session_hash, caller.session_hash, sizeof(a->session_hash));
        a->deadline_ms = caller.session_deadline_ms;
    } else if (!req->authorization ||
               phy_sha256_hex(req->authorization, strlen(req->authorization), a->key) < 0) {
        res->status = 503;
    }
}

/* Loop: a stream of a session that has ended meanwhile, or one past the caller's or
 * tenant's share, is refused; any other authorized request gets its stream. */
static int events_answer(struct conn *c, void *state, const struct api_response *res, void *work)
{
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                               "Cache-Control: no-store\r\n" CONN_SECURITY_HEADERS
                               "Connection: close\r\n\r\n"
                               ": phyhub events\n\n";
    struct events *ev = state;
    const struct stream_auth *a = work;
    size_t by_key, by_tenant;
    if (res->status != 200)
        return 0;
    if (a->console && events_session_ended(ev, a->session_hash)) {
        conn_refuse(c, 401, "unauthorized", "the session has ended; log in again");
        return 1;
    }
    events_count(ev, a->key, a->tenant_id, &by_key, &by_tenant);
    if (by_key >= EVENTS_PER_CALLER || by_tenant >= (size_t)ev->max_per_tenant) {
        conn_refuse(c, 429, "too_many_streams",
                    by_key >= EVENTS_PER_CALLER
                        ? "this console session or API token already has its event streams open"
                        : "this tenant already has its event streams open");
        return 1;
    }
    struct stream *st = calloc(1, sizeof(*st));
    if (!st) {
        conn_refuse(c, 503, "over_capacity", "out of memory");
        return 1;
    }
    st->conn = c;
    st->events = ev;
    st->auth = *a;
    conn_upgrade_raw(c, &events_mode, st, head, sizeof(head) - 1);
    return 1;
}

static void events_begin(struct conn *c)
{
    struct stream *st = c->mode_data;
    struct events *ev = st->events;
    /* The kernel's share of a stream's backlog is bounded too (the default send
     * buffer grows to megabytes for a client that does not read). */
    PHY_ASSERT(!st->linked);
    int sndbuf = (int)EVENTS_MAX_PENDING;
    setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    st->next = ev->streams;
    ev->streams = st;
    st->linked = 1;
    events_arm(c);
    phy_log(PHY_LOG_INFO, "events_open", "peer=%s", c->peer);
    events_drive(c);
}

static int events_detach(struct conn *c)
{
    struct stream *st = c->mode_data;
    if (st && st->linked) {
        struct events *ev = st->events;
        for (struct stream **pp = &ev->streams; *pp; pp = &(*pp)->next) {
            if (*pp == st) {
                *pp = st->next;
                break;
            }
        }
    }
    if (st)
        OPENSSL_cleanse(st, sizeof(*st));
    free(st);
    c->mode_data = NULL;
    return 0;
}

static void events_timer(struct conn *c)
{
    static const char ping[] = ": keepalive\n\n";
    const struct stream *st = c->mode_data;
    /* The console session may have been used elsewhere since (its end moved), but
     * the stream does not know: it ends, and the browser reconnects if it still can. */
    if (st->auth.console && hub_now_ms() >= st->auth.deadline_ms) {
        phy_log(PHY_LOG_INFO, "events_close", "peer=%s reason=session_deadline", c->peer);
        conn_close(c);
        return;
    }
    if (conn_out_append(c, ping, sizeof(ping) - 1, EVENTS_MAX_PENDING) < 0) {
        events_reset(c, "slow_consumer");
        return;
    }
    events_arm(c);
    events_drive(c);
}

static void events_effect(void *state, const struct api_effect *e, const char *push_patch)
{
    (void)push_patch;
    if (e->kind == API_EFFECT_EVENT)
        events_publish(state, e->tenant_id, e->event_type, e->event_json);
    else if (e->kind == API_EFFECT_END_STREAMS)
        events_end_session(state, e->session_hash);
}

const struct conn_mode events_mode = {
    .name = "events",
    .path = "/api/v1/events",
    .work_size = sizeof(struct stream_auth),
    .init = events_init,
    .fini = events_fini,
    .authorize = events_authorize,
    .answer = events_answer,
    .begin = events_begin,
    .drive = events_drive,
    .timer = events_timer,
    .detach = events_detach,
    .effect = events_effect,
};
