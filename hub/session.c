/* Device sessions: the WebSocket (wslay) life of a connected device on the event
 * loop — registry by device ID, message handling in order through the store on the
 * thread pool, desired pushes, pings, rate limits, presence and replacement. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <wslay/wslay.h>

#include "conn.h"
#include "modes.h"
#include "dispatch.h"
#include "phy/json.h"
#include "phy/protocol.h"
#include "phy/ratelimit.h"
#include "phy/text.h"
#include "phy/wsframe.h"
#include "phy/base64.h"
#include "phy/crypto.h"
#include "phy/assert.h"
#include "phy/err.h"
#include "phy/log.h"

#define SESSION_QUEUE_MAX 64 /* messages waiting for the store, per session */
#define CLOSE_GRACE_MS 1000  /* how long a closing peer gets to answer our close */
#define WBUF_MAX (256 * 1024) /* staged output per session before wslay is told to wait */
#define TLS_RECORD_MAX 16384
#define BACKLOG_MAX (256 * 1024) /* unsent output past which a session stops reading */

struct pending_msg {
    struct pending_msg *next;
    struct dispatch_action action;
    int verify; /* internal twin read after the session began: no reply */
    int tries;  /* TWIN_GET re-reads (see on_sess_work_done) */
};

struct session {
    struct conn *conn;
    struct sessions *reg;  /* the registry of the server it belongs to */
    struct session *hnext; /* registry chain */
    wslay_event_context_ptr ws;
    struct pending_msg *q_head, *q_tail;
    size_t q_len;
    int64_t tenant_id;
    int64_t gen;            /* store session generation (presence writes) */
    int64_t desired_sent;   /* highest desired version sent to the device */
    int64_t last_seen_wall; /* wall clock ms of the last frame received */
    uint64_t last_rx;       /* loop ms of the last bytes received */
    uint64_t last_ping;     /* loop ms of the last ping sent */
    struct phy_bucket msgs; /* the message rate limit */
    unsigned violations;    /* messages refused in a row */
    struct phy_bucket frames; /* control and empty frames (PHY_FRAME_RATE_FACTOR x the rate) */
    uint64_t frame_left;    /* bytes of the current frame not yet given to wslay */
    char *wbuf;             /* staged output (frame headers + payloads); NULL when drained */
    size_t wlen, woff;
    uint16_t close_code; /* close to send once the queued messages are out */
    const char *close_reason;
    unsigned begun : 1, registered : 1, replaced : 1, inflight : 1, detach_pending : 1, closing : 1,
        read_wants_write : 1, msg_open : 1,
        read_dead : 1; /* a protocol error: nothing more is read, the close goes out */
    char device_id[PHY_DEVICE_ID_LEN + 1];
};

/* The mode's state for one server: the registry of live sessions by device ID. */
struct sessions {
    struct hub *hub;
    uv_loop_t *loop;
    struct server *srv;
    struct session **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
    size_t reclaims; /* reclaim jobs in flight (they point here) */
    int finished;    /* fini came while some were: the last one frees */
};

/* A store check of one live session after this node was forgotten (reclaim). */
struct reclaim_job {
    uv_work_t req;
    struct sessions *r;
    int64_t gen, now_ms;
    int rc, outcome;
    char device_id[PHY_DEVICE_ID_LEN + 1];
};

/* A store job for one session message. */
struct sess_work {
    uv_work_t req;
    struct session *ss;
    struct hub *hub;
    struct dispatch_action action;
    int verify, tries;    /* from the pending message */
    int gone;             /* the store no longer knows the device (revoked, deleted) */
    char *reply;          /* frame to send, or NULL */
    int64_t twin_version; /* TWIN_GET: desired version in the reply */
    char *event_type;     /* static string or NULL: event to publish */
    char *event_json;     /* malloc'd */
};

/* A fire-and-forget presence write (session ended). */
struct presence_job {
    uv_work_t req;
    struct hub *hub;
    int64_t now_ms, last_seen_ms, gen;
    char device_id[PHY_DEVICE_ID_LEN + 1];
};

/* ---------- registry ---------- */

static size_t id_hash(const char *id)
{
    size_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 1099511628211ull;
    return h;
}

static int sessions_init(struct server *s, struct hub *h, uv_loop_t *loop, void **state)
{
    struct sessions *r = calloc(1, sizeof(*r));
    if (!r)
        return PHY_ENOMEM;
    r->hub = h;
    r->loop = loop;
    r->srv = s;
    r->nbuckets = 1024;
    r->buckets = calloc(r->nbuckets, sizeof(*r->buckets));
    if (!r->buckets) {
        free(r);
        return PHY_ENOMEM;
    }
    *state = r;
    return 0;
}

static void sessions_fini(void *state)
{
    struct sessions *r = state;
    free(r->buckets);
    r->buckets = NULL;
    r->nbuckets = 0;
    if (r->reclaims > 0) {
        r->finished = 1;
        return;
    }
    free(r);
}

static struct session *registry_find(struct sessions *r, const char *id)
{
    for (struct session *ss = r->buckets[id_hash(id) & (r->nbuckets - 1)]; ss; ss = ss->hnext)
        if (strcmp(ss->device_id, id) == 0)
            return ss;
    return NULL;
}

static void registry_grow(struct sessions *r)
{
    size_t n = r->nbuckets * 2;
    struct session **b = calloc(n, sizeof(*b));
    if (!b)
        return; /* keep the longer chains */
    for (size_t i = 0; i < r->nbuckets; i++) {
        struct session *ss = r->buckets[i];
        while (ss) {
            struct session *next = ss->hnext;
            size_t k = id_hash(ss->device_id) & (n - 1);
            ss->hnext = b[k];
            b[k] = ss;
            ss = next;
        }
    }
    free(r->buckets);
    r->buckets = b;
    r->nbuckets = n;
}

static void registry_add(struct sessions *r, struct session *ss)
{
    PHY_ASSERT(!ss->registered);
    if (r->count >= r->nbuckets)
        registry_grow(r);
    size_t k = id_hash(ss->device_id) & (r->nbuckets - 1);
    ss->hnext = r->buckets[k];
    r->buckets[k] = ss;
    r->count++;
    ss->registered = 1;
}

static void registry_remove(struct sessions *r, struct session *ss)
{
    if (!ss->registered)
        return;
    struct session **pp = &r->buckets[id_hash(ss->device_id) & (r->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->hnext) {
        if (*pp == ss) {
            *pp = ss->hnext;
            r->count--;
            break;
        }
    }
    ss->registered = 0;
}

/* ---------- upgrade (loop side checks, worker side auth) ---------- */

static int token_list_has(const struct phy_str *v, const char *token)
{
    size_t tl = strlen(token), i = 0;
    while (i < v->len) {
        while (i < v->len && (v->p[i] == ' ' || v->p[i] == '\t' || v->p[i] == ','))
            i++;
        size_t start = i;
        while (i < v->len && v->p[i] != ',' && v->p[i] != ' ' && v->p[i] != '\t')
            i++;
        if (i - start == tl && strncasecmp(v->p + start, token, tl) == 0)
            return 1;
    }
    return 0;
}

/* What an upgrade request carries from its check to its answer. */
struct upgrade_work {
    char accept[32];                       /* Sec-WebSocket-Accept */
    char device_id[PHY_DEVICE_ID_LEN + 1]; /* authenticated device */
    int64_t tenant_id;
    int64_t gen; /* store session generation */
};

/* Validates a WebSocket upgrade request for /v1/hub (RFC 6455 section 4.2.1) and
 * computes its Sec-WebSocket-Accept value. */
static int session_check(const struct phy_http_request *rq, void *work, const char **code,
                         const char **msg)
{
    struct upgrade_work *uw = work;
    char *accept = uw->accept;
    int st = 0;
    const struct phy_http_header *h = rq->headers;
    size_t n = rq->num_headers;
    const struct phy_str *up = phy_http_find_header(h, n, "Upgrade");
    const struct phy_str *ver = phy_http_find_header(h, n, "Sec-WebSocket-Version");
    const struct phy_str *key = phy_http_find_header(h, n, "Sec-WebSocket-Key");
    const struct phy_str *proto = phy_http_find_header(h, n, "Sec-WebSocket-Protocol");
    unsigned char raw[32];

    if (!rq->upgrade || !up || !token_list_has(up, "websocket")) {
        *msg = "this endpoint needs a WebSocket upgrade";
        st = 426;
        goto refuse;
    }
    if (!ver || !phy_str_eq(*ver, "13")) {
        *msg = "Sec-WebSocket-Version must be 13";
        st = 426;
        goto refuse;
    }
    if (!key || key->len != 24 || phy_base64_decode(key->p, key->len, raw, sizeof(raw), 0) != 16) {
        *msg = "Sec-WebSocket-Key must be 16 bytes in base64";
        st = 400;
        goto refuse;
    }
    if (!proto || !token_list_has(proto, PHY_WS_SUBPROTOCOL)) {
        *msg = "Sec-WebSocket-Protocol must offer " PHY_WS_SUBPROTOCOL;
        st = 400;
        goto refuse;
    }
    if (wsf_accept(key->p, key->len, accept) != 0) {
        *msg = "internal error";
        st = 400;
        goto refuse;
    }
    return 0;
refuse:
    *code = st == 426 ? "upgrade_required" : "bad_request";
    return st;
}

static void auth_refused(struct api_response *res, const char *message)
{
    api_error(res, 401, "unauthorized", message);
    snprintf(res->extra_headers, sizeof(res->extra_headers),
             "WWW-Authenticate: Basic realm=\"phystack\"\r\n");
}

/* Worker side of the upgrade: authenticates the device (Basic credentials) and opens
 * the session in the store. Fills res: 101, or 401/503. */
static void session_authorize(struct hub *h, const struct api_request *req,
                              struct api_response *res, void *work)
{
    struct upgrade_work *uw = work;
    char *device_id = uw->device_id;
    int64_t *tenant_id = &uw->tenant_id, *gen = &uw->gen;
    static const char basic[] = "Basic ";
    unsigned char decoded[128];
    char hash[PHY_HASH_HEX_LEN + 1];
    int outcome, n;
    memset(res, 0, sizeof(*res));
    const char *a = req->authorization;
    if (!a || strncasecmp(a, basic, sizeof(basic) - 1) != 0 ||
        (n = phy_base64_decode(a + sizeof(basic) - 1, strlen(a + sizeof(basic) - 1), decoded,
                               sizeof(decoded) - 1, 0)) < 0) {
        hub_metric_add(&h->metrics.auth_failures, 1);
        auth_refused(res, "device credentials required (Basic device_id:device_secret)");
        return;
    }
    decoded[n] = '\0';
    char *colon = memchr(decoded, ':', (size_t)n);
    size_t id_len = colon ? (size_t)(colon - (char *)decoded) : 0;
    if (!colon || id_len != PHY_DEVICE_ID_LEN || strncmp((char *)decoded, "dev_", 4) != 0 ||
        strlen(colon + 1) != PHY_TOKEN_LEN || memchr(decoded, '\0', (size_t)n)) {
        hub_metric_add(&h->metrics.auth_failures, 1);
        auth_refused(res, "unknown device or wrong secret");
        goto out;
    }
    memcpy(device_id, decoded, PHY_DEVICE_ID_LEN);
    device_id[PHY_DEVICE_ID_LEN] = '\0';
    snprintf(res->log, sizeof(res->log), "device_id=%s", device_id);
    if (phy_sha256_hex(colon + 1, PHY_TOKEN_LEN, hash) < 0 ||
        h->store_ops->device_auth(h->store, device_id, hash, tenant_id, &outcome) < 0) {
        api_store_failed(res);
        goto out;
    }
    if (outcome != STORE_OK) {
        hub_metric_add(&h->metrics.auth_failures, 1);
        /* One answer for unknown, wrong and revoked: a revocation is not told to
         * someone who does not hold the secret. */
        auth_refused(res, "unknown device, wrong secret or revoked");
        snprintf(res->log, sizeof(res->log), "device_id=%s reason=%s", device_id,
                 outcome == STORE_REVOKED ? "revoked" : "unknown_or_wrong_secret");
        goto out;
    }
    int rc = h->store_ops->session_open(h->store, device_id, hub_now_ms(), gen);
    if (rc == PHY_ENOTFOUND) { /* revoked or deleted since the check above */
        auth_refused(res, "unknown device, wrong secret or revoked");
        goto out;
    }
    if (rc < 0) {
        api_store_failed(res);
        goto out;
    }
    res->status = 101;
out:
    OPENSSL_cleanse(decoded, sizeof(decoded));
}

/* ---------- presence writes ---------- */

static void on_presence_work(uv_work_t *req)
{
    struct presence_job *j = req->data;
    if (j->hub->store_ops->session_close(j->hub->store, j->device_id, j->gen, j->now_ms,
                                         j->last_seen_ms) < 0)
        phy_log(PHY_LOG_WARN, "presence_write_failed", "device_id=%s", j->device_id);
}

static void on_presence_done(uv_work_t *req, int status)
{
    (void)status;
    free(req->data);
}

static void presence_offline(struct sessions *r, const char *device_id, int64_t gen,
                             int64_t last_seen)
{
    struct presence_job *j = calloc(1, sizeof(*j));
    if (!j)
        return;
    j->req.data = j;
    j->hub = r->hub;
    j->now_ms = hub_now_ms();
    j->last_seen_ms = last_seen;
    j->gen = gen;
    snprintf(j->device_id, sizeof(j->device_id), "%s", device_id);
    uv_queue_work(r->loop, &j->req, on_presence_work, on_presence_done);
}

/* Tells the console's event streams (and any other mode) about the device. */
static void session_event(struct session *ss, const char *type, char *json)
{
    struct api_effect e = {.kind = API_EFFECT_EVENT, .tenant_id = ss->tenant_id,
                           .event_type = type, .event_json = json};
    snprintf(e.device_id, sizeof(e.device_id), "%s", ss->device_id);
    server_effect(ss->reg->srv, &e, NULL);
}

/* ---------- wslay glue ---------- */

static void session_close_with(struct session *ss, uint16_t code, const char *reason);

/* Control frames and empty data frames: a bucket of PHY_FRAME_RATE_FACTOR x the
 * message rate (and burst), so that a ping flood is cut, not answered. */
static int frame_allow(struct session *ss)
{
    double rate = (double)ss->reg->hub->cfg.device_msg_rate * PHY_FRAME_RATE_FACTOR;
    return phy_bucket_take(&ss->frames, rate, rate, uv_now(ss->reg->loop), NULL);
}

/* Length of the frame header at p (n bytes available), or 0 when incomplete. */
static size_t frame_header_len(const uint8_t *p, size_t n)
{
    if (n < 2)
        return 0;
    size_t len7 = p[1] & 0x7f;
    size_t hl = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((p[1] & 0x80) ? 4 : 0);
    return n >= hl ? hl : 0;
}

/* Output not yet written to the socket: wslay's queue plus the staged bytes. */
static size_t session_backlog(const struct session *ss)
{
    size_t n = ss->wlen - ss->woff;
    if (ss->ws)
        n += wslay_event_get_queued_msg_length(ss->ws);
    return n;
}

/* Feeds wslay from c->in (bytes read ahead) and the TLS socket, never past the end of
 * the current frame: then, between frames, wslay holds no bytes of its own and an
 * idle session's wslay context can be freed (see session_run). Only the header's
 * length fields are read here; wslay does the framing. */
static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    struct session *ss = user;
    struct conn *c = ss->conn;
    (void)flags;
    for (;;) {
        if (c->in_len > 0) {
            const uint8_t *p = (const uint8_t *)c->in;
            if (ss->frame_left == 0) {
                size_t hl = frame_header_len(p, c->in_len);
                if (hl > 0) {
                    /* Each header is checked before wslay sees it: a frame that
                     * breaks RFC 6455 or the limits gets its close code (1002,
                     * 1009, 1008) at once, not a dropped connection or a wait for a
                     * payload that never fits. */
                    uint64_t payload = 0;
                    const char *why = NULL;
                    int code = wsf_check_client_header(p, hl, ss->msg_open, PHY_WS_MAX_MESSAGE,
                                                       &payload, &why);
                    unsigned op = p[0] & 0x0f;
                    if (code == 0 && (op >= 8 || payload == 0) && !frame_allow(ss)) {
                        code = PHY_CLOSE_POLICY;
                        why = "frame rate limit exceeded";
                    }
                    if (code != 0) {
                        phy_log(PHY_LOG_WARN, "session_protocol_error",
                                "device_id=%s close_code=%d why=\"%s\"", ss->device_id, code, why);
                        ss->read_dead = 1;
                        session_close_with(ss, (uint16_t)code, why);
                        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
                        return -1;
                    }
                    ss->frame_left = hl + payload;
                    if (op < 8) /* data or continuation: a message is open until FIN */
                        ss->msg_open = !(p[0] & 0x80);
                }
            }
            if (ss->frame_left > 0) {
                size_t n = c->in_len < len ? c->in_len : len;
                if (n > ss->frame_left)
                    n = (size_t)ss->frame_left;
                memcpy(buf, c->in, n);
                memmove(c->in, c->in + n, c->in_len - n);
                c->in_len -= n;
                ss->frame_left -= n;
                if (c->in_len == 0)
                    conn_free_in(c);
                return (ssize_t)n;
            }
            /* an incomplete header: read more below */
        }
        if (ss->read_dead || session_backlog(ss) > BACKLOG_MAX) {
            /* A peer that does not read its answers (pongs, replies) is not read
             * either: its output stays bounded and the ping timeout ends it. */
            wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
            return -1;
        }
        char tmp[TLS_RECORD_MAX];
        ERR_clear_error();
        int n = SSL_read(c->ssl, tmp, sizeof(tmp));
        if (n > 0) {
            ss->last_rx = uv_now(ss->reg->loop);
            if (conn_buf_append(&c->in, &c->in_len, &c->in_cap, tmp, (size_t)n, SIZE_MAX) < 0) {
                wslay_event_set_error(ctx, WSLAY_ERR_NOMEM);
                return -1;
            }
            continue;
        }
        int ev = conn_ssl_want(c->ssl, n);
        if (ev < 0) {
            wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
            return -1;
        }
        if (ev == UV_WRITABLE)
            ss->read_wants_write = 1;
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
}

/* wslay hands over a frame header and its payload in separate calls; staging them
 * lets one SSL_write (one TLS record, one syscall) carry a whole small message. */
static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    struct session *ss = user;
    (void)flags;
    size_t pending = ss->wlen - ss->woff;
    if (pending > 0 && pending + len > WBUF_MAX) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (ss->woff > 0 && ss->woff == ss->wlen) {
        ss->woff = ss->wlen = 0;
    }
    char *p = realloc(ss->wbuf, ss->wlen + len);
    if (!p) {
        wslay_event_set_error(ctx, WSLAY_ERR_NOMEM);
        return -1;
    }
    memcpy(p + ss->wlen, data, len);
    ss->wbuf = p;
    ss->wlen += len;
    return (ssize_t)len;
}

/* Writes staged output. 0 when drained or the socket is full (*want_write set),
 * -1 when the connection failed. */
static int session_flush_out(struct session *ss, int *want_write)
{
    *want_write = 0;
    while (ss->woff < ss->wlen) {
        size_t n = ss->wlen - ss->woff;
        if (n > TLS_RECORD_MAX)
            n = TLS_RECORD_MAX;
        ERR_clear_error();
        int w = SSL_write(ss->conn->ssl, ss->wbuf + ss->woff, (int)n);
        if (w > 0) {
            ss->woff += (size_t)w;
            continue;
        }
        int ev = conn_ssl_want(ss->conn->ssl, w);
        if (ev < 0)
            return -1;
        *want_write = 1; /* WANT_READ during a write cannot happen without renegotiation */
        return 0;
    }
    free(ss->wbuf);
    ss->wbuf = NULL;
    ss->wlen = ss->woff = 0;
    return 0;
}

static void ws_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *user);

static const struct wslay_event_callbacks ws_callbacks = {ws_recv, ws_send, NULL,     NULL,
                                                          NULL,    NULL,    ws_on_msg};

/* The wslay context exists only while a session has something in flight: it holds
 * two 4 KiB buffers, more than half of what an idle session would otherwise cost.
 * Returns 0 when ss->ws is ready. */
static int session_ws(struct session *ss)
{
    if (ss->ws)
        return 0;
    if (wslay_event_context_server_init(&ss->ws, &ws_callbacks, ss) != 0) {
        ss->ws = NULL;
        return -1;
    }
    wslay_event_config_set_max_recv_msg_length(ss->ws, PHY_WS_MAX_MESSAGE);
    return 0;
}

/* Frees the wslay context of a session that is between frames and messages with
 * nothing queued, staged or read ahead. */
static void session_idle(struct session *ss)
{
    struct conn *c = ss->conn;
    if (!ss->ws || ss->closing || ss->close_code || ss->frame_left || ss->msg_open || c->in_len ||
        ss->wbuf || ss->read_wants_write || wslay_event_want_write(ss->ws) ||
        wslay_event_get_queued_msg_count(ss->ws) > 0)
        return;
    wslay_event_context_free(ss->ws);
    ss->ws = NULL;
}

/* Queues one text frame (copied by wslay). */
static void session_send(struct session *ss, const char *text)
{
    struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)text, strlen(text)};
    if (ss->closing || session_ws(ss) < 0)
        return;
    if (wslay_event_queue_msg(ss->ws, &m) == 0)
        hub_metric_add(&ss->reg->hub->metrics.ws_msgs_out, 1);
}

/* wslay sends control frames before queued data, so a close waits until the data
 * queued before it (e.g. the error that explains it) has been written. */
static void session_flush_close(struct session *ss)
{
    if (!ss->close_code || session_ws(ss) < 0 || wslay_event_get_queued_msg_count(ss->ws) > 0)
        return;
    wslay_event_queue_close(ss->ws, ss->close_code, (const uint8_t *)ss->close_reason,
                            strlen(ss->close_reason));
    ss->close_code = 0;
}

static void session_close_with(struct session *ss, uint16_t code, const char *reason)
{
    if (ss->closing)
        return;
    ss->closing = 1;
    ss->close_code = code;
    ss->close_reason = reason; /* static strings only */
    session_flush_close(ss);
    conn_deadline_ms(ss->conn, CLOSE_GRACE_MS);
}

static void send_error(struct session *ss, const struct dispatch_id *id, const char *error,
                       const char *msg)
{
    char *t = dispatch_error_msg(id, error, msg);
    if (t)
        session_send(ss, t);
    free(t);
}


/* ---------- message handling (store work in order, one at a time) ---------- */

static void session_kick(struct session *ss);
static void session_push(struct conn *c);

static char *twin_reply(const struct dispatch_id *id, const char *device_id,
                        const struct store_twin *t)
{
    json_t *d = json_loads(t->desired ? t->desired : "{}", 0, NULL);
    json_t *r = json_loads(t->reported ? t->reported : "{}", 0, NULL);
    json_t *tags = json_loads(t->tags ? t->tags : "{}", 0, NULL);
    json_t *o = json_pack("{s:s, s:{s:s, s:o, s:I, s:o, s:I, s:o}}", "type", PHY_MSG_TWIN, "twin",
                          "device_id", device_id, "desired", d ? d : json_object(),
                          "desired_version", (json_int_t)t->desired_version, "reported",
                          r ? r : json_object(), "reported_version",
                          (json_int_t)t->reported_version, "tags", tags ? tags : json_object());
    if (!o)
        return NULL;
    json_t *idv = dispatch_id_json(id);
    if (idv)
        json_object_set_new(o, "id", idv);
    char *text = phy_json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

static void on_sess_work(uv_work_t *req)
{
    struct sess_work *w = req->data;
    struct hub *h = w->hub;
    const struct phy_store_ops *ops = h->store_ops;
    const struct dispatch_id *id = &w->action.id;
    const char *dev = w->ss->device_id;
    int outcome = STORE_OK;
    uint64_t t0 = uv_hrtime();

    switch (w->action.kind) {
    case DISPATCH_TWIN_GET: {
        struct store_twin t;
        memset(&t, 0, sizeof(t));
        int rc = ops->twin_get(h->store, dev, &t, &outcome);
        if (rc == 0 && outcome == STORE_NOT_FOUND) {
            w->gone = 1;
        } else if (rc < 0 || outcome != STORE_OK) {
            w->reply = dispatch_error_msg(id, "unavailable", "twin not available; retry");
        } else if (!w->verify) {
            w->reply = twin_reply(id, dev, &t);
            w->twin_version = t.desired_version;
        }
        store_twin_free(&t);
        break;
    }
    case DISPATCH_REPORTED_PATCH: {
        char *patch = phy_json_dumps(w->action.body, JSON_COMPACT);
        int64_t version = 0;
        int changed = 0;
        if (!patch || ops->reported_patch(h->store, dev, patch, hub_now_ms(), &version, &changed,
                                          &outcome) < 0) {
            w->reply = dispatch_error_msg(id, "unavailable", "report not stored; retry");
        } else if (outcome == STORE_TOO_BIG) {
            w->reply = dispatch_error_msg(id, "too_large",
                                          "reported section would exceed 32 KiB or depth 10");
        } else if (outcome != STORE_OK) {
            w->gone = 1;
        } else {
            w->reply = dispatch_ack_msg(id, (long long)version);
            if (changed) {
                json_t *e = json_pack("{s:s, s:I, s:O}", "device_id", dev, "version",
                                      (json_int_t)version, "patch", w->action.body);
                w->event_type = "reported";
                w->event_json = e ? phy_json_dumps(e, JSON_COMPACT) : NULL;
                json_decref(e);
            }
        }
        free(patch);
        break;
    }
    case DISPATCH_STATUS: {
        char *status = phy_json_dumps(w->action.body, JSON_COMPACT); /* reals exact */
        int rc = status ? ops->status_put(h->store, dev, status, hub_now_ms()) : PHY_ENOMEM;
        if (rc == PHY_ENOTFOUND) {
            w->gone = 1;
        } else if (rc < 0) {
            w->reply = dispatch_error_msg(id, "unavailable", "status not stored; retry");
        } else {
            json_t *e = json_pack("{s:s, s:O}", "device_id", dev, "status", w->action.body);
            w->event_type = PHY_MSG_STATUS;
            w->event_json = e ? phy_json_dumps(e, JSON_COMPACT) : NULL;
            json_decref(e);
        }
        free(status);
        break;
    }
    case DISPATCH_ERROR:
        break;
    }
    hub_metric_add(&h->metrics.store_ops, 1);
    hub_metric_add(&h->metrics.store_us, (uv_hrtime() - t0) / 1000);
}

static void on_sess_work_done(uv_work_t *req, int status)
{
    struct sess_work *w = req->data;
    struct session *ss = w->ss;
    (void)status;
    PHY_ASSERT(ss->inflight);
    ss->inflight = 0;
    if (ss->detach_pending) {
        conn_close(ss->conn); /* finishes the detach now that no work is in flight */
    } else if (w->gone) {
        /* Revoked or deleted while this session was starting or running (a revoke
         * that committed before the session was registered found nothing to close). */
        session_close_with(ss, PHY_CLOSE_REVOKED, "revoked");
        session_push(ss->conn);
    } else if (w->action.kind == DISPATCH_TWIN_GET && !w->verify &&
               w->twin_version < ss->desired_sent && w->tries < 3) {
        /* A push newer than this read went out meanwhile: read again rather than
         * hand the device an older document than it already has. */
        struct pending_msg *m = calloc(1, sizeof(*m));
        if (m) {
            m->action = w->action;
            memset(&w->action, 0, sizeof(w->action));
            m->tries = w->tries + 1;
            m->next = ss->q_head;
            ss->q_head = m;
            if (!ss->q_tail)
                ss->q_tail = m;
            ss->q_len++;
        }
        session_kick(ss);
    } else {
        if (w->reply)
            session_send(ss, w->reply);
        if (w->action.kind == DISPATCH_TWIN_GET && w->twin_version > ss->desired_sent)
            ss->desired_sent = w->twin_version;
        if (w->event_type && w->event_json)
            session_event(ss, w->event_type, w->event_json);
        session_kick(ss);
        session_push(ss->conn);
    }
    dispatch_action_clear(&w->action);
    free(w->reply);
    free(w->event_json);
    free(w);
}

static void session_kick(struct session *ss)
{
    if (ss->inflight || !ss->q_head || ss->detach_pending || ss->closing)
        return;
    struct pending_msg *m = ss->q_head;
    PHY_ASSERT(ss->q_len > 0);
    ss->q_head = m->next;
    if (!ss->q_head)
        ss->q_tail = NULL;
    ss->q_len--;
    struct sess_work *w = calloc(1, sizeof(*w));
    if (!w) {
        dispatch_action_clear(&m->action);
        free(m);
        return;
    }
    w->req.data = w;
    w->ss = ss;
    w->hub = ss->reg->hub;
    w->action = m->action;
    w->verify = m->verify;
    w->tries = m->tries;
    free(m);
    ss->inflight = 1;
    uv_queue_work(ss->reg->loop, &w->req, on_sess_work, on_sess_work_done);
}

/* Token bucket of cfg.device_msg_rate messages per second (burst of the same size). */
static int rate_allow(struct session *ss)
{
    double rate = (double)ss->reg->hub->cfg.device_msg_rate;
    return phy_bucket_take(&ss->msgs, rate, rate, uv_now(ss->reg->loop), NULL);
}

static void session_on_text(struct session *ss, const uint8_t *msg, size_t len)
{
    struct hub *h = ss->reg->hub;
    hub_metric_add(&h->metrics.ws_msgs_in, 1);
    if (!phy_utf8_valid(msg, len)) {
        session_close_with(ss, PHY_CLOSE_BAD_DATA, "invalid UTF-8");
        return;
    }
    if (!rate_allow(ss)) {
        if (++ss->violations > (unsigned)h->cfg.device_msg_rate) {
            phy_log(PHY_LOG_WARN, "session_rate_limited", "device_id=%s", ss->device_id);
            session_close_with(ss, PHY_CLOSE_POLICY, "message rate limit exceeded");
        } else {
            send_error(ss, NULL, "rate_limited", "over the message rate limit; slow down");
        }
        return;
    }
    ss->violations = 0;
    struct dispatch_action a;
    dispatch_parse((const char *)msg, len, &a);
    if (a.kind == DISPATCH_ERROR) {
        send_error(ss, &a.id, a.error, a.message);
        dispatch_action_clear(&a);
        return;
    }
    if (ss->q_len >= SESSION_QUEUE_MAX) {
        send_error(ss, &a.id, "rate_limited", "too many messages in flight");
        dispatch_action_clear(&a);
        return;
    }
    struct pending_msg *m = calloc(1, sizeof(*m));
    if (!m) {
        dispatch_action_clear(&a);
        return;
    }
    m->action = a;
    if (ss->q_tail)
        ss->q_tail->next = m;
    else
        ss->q_head = m;
    ss->q_tail = m;
    ss->q_len++;
    session_kick(ss);
}

static void ws_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *user)
{
    struct session *ss = user;
    (void)ctx;
    ss->last_seen_wall = hub_now_ms();
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
        if (!ss->closing)
            session_on_text(ss, arg->msg, arg->msg_length);
        break;
    case WSLAY_BINARY_FRAME:
        session_close_with(ss, PHY_CLOSE_UNSUPPORTED, "binary frames are not accepted");
        break;
    case WSLAY_CONNECTION_CLOSE:
        ss->closing = 1; /* wslay answers the close; we close once it is sent */
        conn_deadline_ms(ss->conn, CLOSE_GRACE_MS);
        break;
    default: /* ping (answered by wslay), pong: liveness only */
        break;
    }
}

/* ---------- life cycle ---------- */

static struct session *session_new(const char *device_id, int64_t tenant_id, int64_t gen)
{
    struct session *ss = calloc(1, sizeof(*ss));
    if (!ss)
        return NULL;
    snprintf(ss->device_id, sizeof(ss->device_id), "%s", device_id);
    ss->tenant_id = tenant_id;
    ss->gen = gen;
    return ss;
}

static void session_arm_timer(struct session *ss)
{
    const struct hub_config *cfg = &ss->reg->hub->cfg;
    uint64_t now = uv_now(ss->reg->loop);
    uint64_t next_ping = ss->last_ping + (uint64_t)cfg->ping_interval_s * 1000;
    uint64_t dead = ss->last_rx + (uint64_t)cfg->ping_timeout_s * 1000;
    uint64_t at = next_ping < dead ? next_ping : dead;
    conn_deadline_ms(ss->conn, at > now + 10 ? at - now : 10);
}

static void session_drive(struct conn *c);

/* The device's newer session (here from peer, or on another node: peer NULL) is its
 * presence now: this one leaves the registry and closes with 4000. */
static void session_end_replaced(struct sessions *r, struct session *ss, const char *peer)
{
    registry_remove(r, ss);
    ss->replaced = 1;
    phy_log(PHY_LOG_INFO, "session_replaced", "device_id=%s by=%s", ss->device_id,
            peer ? peer : "another_node");
    session_close_with(ss, PHY_CLOSE_REPLACED, "replaced by a newer session");
    session_drive(ss->conn);
}

/* The device was revoked (4001) or deleted (4002). */
static void session_end_gone(struct session *ss, int code)
{
    phy_log(PHY_LOG_INFO, "session_closing", "device_id=%s code=%d", ss->device_id, code);
    session_close_with(ss, (uint16_t)code, code == PHY_CLOSE_REVOKED ? "revoked" : "deleted");
    session_drive(ss->conn);
}

static void session_begin(struct conn *c)
{
    struct session *ss = c->mode_data;
    struct sessions *r = ss->reg;
    ss->conn = c;
    struct session *old = registry_find(r, ss->device_id);
    if (old)
        session_end_replaced(r, old, c->peer);
    registry_add(r, ss);
    PHY_ASSERT(!ss->begun);
    ss->begun = 1;
    uint64_t now = uv_now(r->loop);
    ss->last_rx = ss->last_ping = now;
    phy_bucket_init(&ss->msgs, (double)r->hub->cfg.device_msg_rate, now);
    phy_bucket_init(&ss->frames, (double)r->hub->cfg.device_msg_rate * PHY_FRAME_RATE_FACTOR, now);
    ss->last_seen_wall = hub_now_ms();
    hub_metric_set(&r->hub->metrics.sessions, r->count);
    phy_log(PHY_LOG_INFO, "session_open", "device_id=%s peer=%s tls=%s", ss->device_id, c->peer,
            conn_tls_resumed(c) ? "resumed" : "full");
    if (r->hub->outbox_kick) /* a first session must reach eu's outbox soon */
        r->hub->outbox_kick(r->hub);
    char ev[96];
    snprintf(ev, sizeof(ev), "{\"device_id\":\"%s\"}", ss->device_id);
    session_event(ss, "online", ev);
    /* Re-check the device now that the session is registered: a revoke committed
     * between the upgrade's store check and this point could not close it. */
    struct pending_msg *verify = calloc(1, sizeof(*verify));
    if (verify) {
        verify->action.kind = DISPATCH_TWIN_GET;
        verify->verify = 1;
        verify->next = ss->q_head;
        ss->q_head = verify;
        if (!ss->q_tail)
            ss->q_tail = verify;
        ss->q_len++;
        session_kick(ss);
    }
    session_arm_timer(ss);
    session_drive(c);
}

/* Sends what wslay has queued and what is staged; arms the poll. With read=1 it
 * first reads and handles what the device sent. */
static void session_run(struct conn *c, int read)
{
    struct session *ss = c->mode_data;
    int blocked = 0;
    if (!ss)
        return;
    ss->read_wants_write = 0;
    if (read && session_ws(ss) < 0) {
        conn_close(c);
        return;
    }
    if (read && wslay_event_want_read(ss->ws) && wslay_event_recv(ss->ws) != 0) {
        conn_close(c);
        return;
    }
    if (!c->mode_data) /* closed from a callback */
        return;
    for (int round = 0; ss->ws && round < 64; round++) {
        if (wslay_event_want_write(ss->ws) && wslay_event_send(ss->ws) != 0) {
            conn_close(c);
            return;
        }
        if (ss->close_code)
            session_flush_close(ss);
        if (session_flush_out(ss, &blocked) < 0) {
            conn_close(c);
            return;
        }
        if (blocked || !wslay_event_want_write(ss->ws))
            break;
    }
    if (!ss->ws && ss->wbuf && session_flush_out(ss, &blocked) < 0) {
        conn_close(c);
        return;
    }
    int r = (!ss->ws || wslay_event_want_read(ss->ws)) && session_backlog(ss) <= BACKLOG_MAX &&
            !ss->read_dead;
    int w = blocked || ss->wbuf || (ss->ws && wslay_event_want_write(ss->ws));
    if (!r && !w) { /* close handshake done */
        conn_close(c);
        return;
    }
    session_idle(ss);
    conn_want(c, (r ? UV_READABLE : 0) | (w || ss->read_wants_write ? UV_WRITABLE : 0));
}

static void session_drive(struct conn *c)
{
    session_run(c, 1);
}

/* After queuing something: write it now, without a read attempt. */
static void session_push(struct conn *c)
{
    session_run(c, 0);
}

static void session_timer(struct conn *c)
{
    struct session *ss = c->mode_data;
    if (!ss)
        return;
    const struct hub_config *cfg = &ss->reg->hub->cfg;
    uint64_t now = uv_now(ss->reg->loop);
    if (ss->closing) {
        conn_close(c);
        return;
    }
    if (now - ss->last_rx >= (uint64_t)cfg->ping_timeout_s * 1000) {
        phy_log(PHY_LOG_INFO, "session_timeout", "device_id=%s idle_ms=%llu", ss->device_id,
                (unsigned long long)(now - ss->last_rx));
        conn_close(c);
        return;
    }
    if (now - ss->last_ping >= (uint64_t)cfg->ping_interval_s * 1000) {
        struct wslay_event_msg m = {WSLAY_PING, NULL, 0};
        if (session_ws(ss) == 0)
            wslay_event_queue_msg(ss->ws, &m);
        ss->last_ping = now;
    }
    session_arm_timer(ss);
    session_drive(c);
}

static int session_detach(struct conn *c)
{
    struct session *ss = c->mode_data;
    if (!ss)
        return 0;
    struct sessions *r = ss->reg;
    if (ss->inflight) {
        ss->detach_pending = 1; /* the work's completion closes the conn again */
        conn_want(c, 0);
        conn_deadline_ms(c, 0);
        return 1;
    }
    if (ss->registered)
        registry_remove(r, ss);
    struct session *live = ss->begun ? NULL : registry_find(r, ss->device_id);
    if (live) {
        /* An upgrade that failed before it began, while another session of the device
         * is live: the store's generation is now ours, so the live one adopts it. */
        if (ss->gen > live->gen)
            live->gen = ss->gen;
    } else if (!ss->replaced) {
        presence_offline(r, ss->device_id, ss->gen,
                         ss->last_seen_wall ? ss->last_seen_wall : hub_now_ms());
        if (ss->begun) { /* an upgrade that failed before the session began was never online */
            char ev[96];
            snprintf(ev, sizeof(ev), "{\"device_id\":\"%s\"}", ss->device_id);
            session_event(ss, "offline", ev);
        }
    }
    if (ss->begun)
        phy_log(PHY_LOG_INFO, "session_close", "device_id=%s replaced=%d", ss->device_id,
                ss->replaced);
    while (ss->q_head) {
        struct pending_msg *m = ss->q_head;
        ss->q_head = m->next;
        dispatch_action_clear(&m->action);
        free(m);
    }
    if (ss->ws)
        wslay_event_context_free(ss->ws);
    free(ss->wbuf);
    free(ss);
    c->mode_data = NULL;
    hub_metric_set(&r->hub->metrics.sessions, r->count);
    return 0;
}

/* A handler's effect: push a desired patch, close a revoked or deleted device's
 * session. */
static void on_reclaim_work(uv_work_t *req)
{
    struct reclaim_job *j = req->data;
    j->rc = j->r->hub->store_ops->session_reclaim(j->r->hub->store, j->device_id, j->gen,
                                                  j->now_ms, &j->outcome);
}

/* Loop: the store's answer for one session. Online again here, or closed as the
 * announcement it missed would have closed it. */
static void on_reclaim_done(uv_work_t *req, int status)
{
    struct reclaim_job *j = req->data;
    struct sessions *r = j->r;
    (void)status;
    r->reclaims--;
    struct session *ss = r->buckets ? registry_find(r, j->device_id) : NULL;
    if (ss && ss->begun && !ss->closing && ss->gen == j->gen) {
        if (j->rc < 0)
            phy_log(PHY_LOG_WARN, "reclaim_failed", "device_id=%s", j->device_id);
        else if (j->outcome == STORE_EXISTS)
            session_end_replaced(r, ss, NULL);
        else if (j->outcome != STORE_OK)
            session_end_gone(ss, j->outcome == STORE_REVOKED ? PHY_CLOSE_REVOKED : PHY_CLOSE_DELETED);
    }
    free(j);
    if (r->finished && r->reclaims == 0)
        free(r);
}

static int cmp_id(const void *key, const void *elem)
{
    return strcmp((const char *)key, *(const char *const *)elem);
}

/* This node was forgotten by the store (it did not beat its heart within the node
 * timeout, so another node ended its sessions there), or its LISTEN connection was
 * lost (announcements of deletes and newer sessions elsewhere may be missing): each
 * live session not listed in e->present asks the store to put it back online here,
 * or learns why not. */
static void sessions_reclaim(struct sessions *r, const struct api_effect *e)
{
    size_t n = 0;
    int64_t now = hub_now_ms();
    for (size_t i = 0; i < r->nbuckets; i++) {
        for (struct session *ss = r->buckets[i]; ss; ss = ss->hnext) {
            struct reclaim_job *j;
            if (!ss->begun || ss->closing)
                continue;
            if (e->present &&
                bsearch(ss->device_id, e->present, e->npresent, sizeof *e->present, cmp_id))
                continue;
            if (!(j = calloc(1, sizeof *j)))
                continue;
            j->req.data = j;
            j->r = r;
            j->gen = ss->gen;
            j->now_ms = now;
            snprintf(j->device_id, sizeof j->device_id, "%s", ss->device_id);
            r->reclaims++;
            uv_queue_work(r->loop, &j->req, on_reclaim_work, on_reclaim_done);
            n++;
        }
    }
    if (e->present)
        phy_log(n ? PHY_LOG_INFO : PHY_LOG_DEBUG, "catchup_reclaim", "sessions=%zu", n);
    else
        phy_log(PHY_LOG_WARN, "node_rejoined", "sessions=%zu", n);
}

static void session_effect(void *state, const struct api_effect *e, const char *push_patch)
{
    struct sessions *r = state;
    if (e->kind == API_EFFECT_RECLAIM) {
        sessions_reclaim(r, e);
        return;
    }
    if (e->kind != API_EFFECT_PUSH_DESIRED && e->kind != API_EFFECT_CLOSE_SESSION &&
        e->kind != API_EFFECT_SESSION_ELSEWHERE)
        return;
    struct session *ss = registry_find(r, e->device_id);
    if (!ss || !ss->begun || ss->closing)
        return;
    if (e->kind == API_EFFECT_SESSION_ELSEWHERE) {
        if (ss->gen >= e->version)
            return; /* this session is the newer one */
        session_end_replaced(r, ss, NULL);
        return;
    }
    if (e->kind == API_EFFECT_CLOSE_SESSION) {
        session_end_gone(ss, e->close_code);
        return;
    }
    if (!push_patch || e->version <= ss->desired_sent)
        return;
    size_t cap = strlen(push_patch) + 80;
    /* Not pushed (the device sees a version gap with the next push, or reads the
     * twin when it reconnects): a device that does not read, or a patch that would
     * not fit in one message. */
    if (session_backlog(ss) > BACKLOG_MAX || cap > PHY_WS_MAX_MESSAGE)
        return;
    if (!ss->ws && !ss->wbuf) {
        /* The fleet-wide fan-out path: an idle session has no wslay context, and
         * creating one per push costs more than the unmasked server frame header
         * (RFC 6455 section 5.2) written here, straight into the staged output. */
        char *f = malloc(cap + 10);
        if (!f)
            return;
        int len =
            snprintf(f + 10, cap, "{\"type\":\"" PHY_MSG_DESIRED_PATCH "\",\"version\":%lld,\"patch\":%s}",
                     (long long)e->version, push_patch);
        size_t n = (size_t)len;
        uint8_t hdr[WSF_MAX_HEADER];
        size_t hl = wsf_header(hdr, WSF_TEXT, n, NULL); /* at most 10 unmasked */
        memcpy(f + 10 - hl, hdr, hl);
        memmove(f, f + 10 - hl, hl + n);
        ss->wbuf = f;
        ss->wlen = hl + n;
        ss->woff = 0;
        hub_metric_add(&r->hub->metrics.ws_msgs_out, 1);
    } else {
        char *t = malloc(cap);
        if (!t)
            return;
        snprintf(t, cap, "{\"type\":\"" PHY_MSG_DESIRED_PATCH "\",\"version\":%lld,\"patch\":%s}",
                 (long long)e->version, push_patch);
        session_send(ss, t);
        free(t);
    }
    ss->desired_sent = e->version;
    session_push(ss->conn);
}

/* The hub stops: every session is closed with 1001 and a reconnect delay of its own,
 * drawn in [0, drain time], so that the devices come back spread over the window. */
static void sessions_shutdown(void *state)
{
    struct sessions *r = state;
    uint64_t window_ms = (uint64_t)r->hub->cfg.drain_s * 1000;
    for (size_t i = 0; i < r->nbuckets; i++) {
        for (struct session *ss = r->buckets[i]; ss; ss = ss->hnext) {
            char reason[64];
            uint32_t rnd = 0;
            if (ss->closing || session_ws(ss) < 0)
                continue;
            ss->closing = 1;
            if (phy_random_bytes(&rnd, sizeof rnd) != 0)
                rnd = (uint32_t)(uintptr_t)ss; /* still spreads; nothing secret here */
            int n = snprintf(reason, sizeof reason, "hub stopping; " PHY_CLOSE_RECONNECT_KEY "%llu",
                             (unsigned long long)(window_ms ? rnd % (window_ms + 1) : 0));
            wslay_event_queue_close(ss->ws, PHY_CLOSE_GOING_AWAY, (const uint8_t *)reason,
                                    (size_t)n);
            int blocked;
            wslay_event_send(ss->ws); /* best effort: the socket closes right after */
            session_flush_out(ss, &blocked);
        }
    }
}

/* Loop: a device the store accepted gets its session; the 101 answer goes out and
 * session_begin runs once it is written. */
static int session_answer(struct conn *c, void *state, const struct api_response *res, void *work)
{
    struct sessions *r = state;
    const struct upgrade_work *uw = work;
    char extra[256];
    if (res->status != 101)
        return 0;
    struct session *ss = session_new(uw->device_id, uw->tenant_id, uw->gen);
    if (!ss) {
        presence_offline(r, uw->device_id, uw->gen, hub_now_ms()); /* never started */
        conn_refuse(c, 503, "over_capacity", "out of memory");
        return 1;
    }
    ss->reg = r;
    snprintf(extra, sizeof(extra),
             "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
             "Sec-WebSocket-Protocol: " PHY_WS_SUBPROTOCOL "\r\n",
             uw->accept);
    conn_upgrade(c, &session_mode, ss, 101, extra);
    return 1;
}

/* Loop: an authorized upgrade the stopping server refused: the store's session
 * opened by authorize ends (it never started). */
static void session_cancel(void *state, void *work)
{
    const struct upgrade_work *uw = work;
    presence_offline(state, uw->device_id, uw->gen, hub_now_ms());
}

const struct conn_mode session_mode = {
    .name = "session",
    .path = PHY_HUB_PATH,
    .device_session = 1,
    .work_size = sizeof(struct upgrade_work),
    .init = sessions_init,
    .shutdown = sessions_shutdown,
    .fini = sessions_fini,
    .check = session_check,
    .authorize = session_authorize,
    .answer = session_answer,
    .cancel = session_cancel,
    .begin = session_begin,
    .drive = session_drive,
    .timer = session_timer,
    .detach = session_detach,
    .effect = session_effect,
};
