/* Console event streams: GET /api/v1/events as Server-Sent Events, one stream per
 * connection, fed on the event loop by device sessions (online, offline, reported,
 * status). A stream that cannot keep up is dropped, never buffered without bound. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>

#include "conn.h"
#include "phy/err.h"
#include "phy/log.h"

#define EVENTS_KEEPALIVE_MS 15000     /* comment line so proxies keep the stream */

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
    uint64_t ms = EVENTS_KEEPALIVE_MS;
    if (c->sse_auth) {
        int64_t left = c->sse_auth->deadline_ms - hub_now_ms();
        if (left < (int64_t)ms)
            ms = left > 1 ? (uint64_t)left : 1;
    }
    conn_deadline_ms(c, ms);
}

void events_begin(struct conn *c)
{
    struct server *s = c->srv;
    /* The kernel's share of a stream's backlog is bounded too (the default send
     * buffer grows to megabytes for a client that does not read). */
    int sndbuf = (int)EVENTS_MAX_PENDING;
    setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    c->sub_next = s->subscribers;
    s->subscribers = c;
    events_arm(c);
    phy_log(PHY_LOG_INFO, "events_open", "peer=%s", c->peer);
    events_drive(c);
}

void events_detach(struct conn *c)
{
    struct conn **pp = &c->srv->subscribers;
    for (; *pp; pp = &(*pp)->sub_next) {
        if (*pp == c) {
            *pp = c->sub_next;
            break;
        }
    }
    c->sub_next = NULL;
}

void events_drive(struct conn *c)
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

void events_timer(struct conn *c)
{
    static const char ping[] = ": keepalive\n\n";
    /* The console session may have been used elsewhere since (its end moved), but
     * the stream does not know: it ends, and the browser reconnects if it still can. */
    if (c->sse_auth && hub_now_ms() >= c->sse_auth->deadline_ms) {
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

void events_count(struct server *s, const char *key, int64_t tenant_id, size_t *by_key,
                  size_t *by_tenant)
{
    *by_key = *by_tenant = 0;
    for (struct conn *c = s->subscribers; c; c = c->sub_next) {
        *by_key += strcmp(c->stream_key, key) == 0;
        *by_tenant += c->tenant_id == tenant_id;
    }
}


int events_session_ended(struct server *s, const char *session_hash)
{
    for (size_t i = 0; i < EVENTS_ENDED; i++)
        if (strcmp(s->ended[i], session_hash) == 0)
            return 1;
    return 0;
}

void events_end_session(struct server *s, const char *session_hash)
{
    snprintf(s->ended[s->ended_next], sizeof(s->ended[0]), "%s", session_hash);
    s->ended_next = (s->ended_next + 1) % EVENTS_ENDED;
    struct conn *c = s->subscribers;
    while (c) {
        struct conn *next = c->sub_next; /* conn_close unlinks c */
        if (c->sse_auth && strcmp(c->sse_auth->session_hash, session_hash) == 0) {
            phy_log(PHY_LOG_INFO, "events_close", "peer=%s reason=logout", c->peer);
            conn_close(c);
        }
        c = next;
    }
}

void events_publish(struct server *s, int64_t tenant_id, const char *type, const char *json)
{
    if (!s->subscribers)
        return;
    size_t n = strlen(type) + strlen(json) + 20;
    char *msg = malloc(n);
    if (!msg)
        return;
    int len = snprintf(msg, n, "event: %s\ndata: %s\n\n", type, json);
    struct conn *c = s->subscribers;
    while (c) {
        struct conn *next = c->sub_next;
        if (c->tenant_id == tenant_id) {
            if (conn_out_append(c, msg, (size_t)len, EVENTS_MAX_PENDING) < 0) {
                events_reset(c, "slow_consumer");
            } else {
                events_drive(c);
            }
        }
        c = next;
    }
    free(msg);
}
