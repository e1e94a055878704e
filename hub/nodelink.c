/* The LISTEN side of several nodes on one store; see nodelink.h. */
#include "nodelink.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "announce.h"
#include "conn.h"
#include "phy/assert.h"
#include "phy/json.h"
#include "phy/log.h"
#include "phy/protocol.h"

#define RECONNECT_MIN_MS 250
#define RECONNECT_MAX_MS 10000

enum link_state { LINK_IDLE, LINK_CONNECTING, LINK_LISTENING, LINK_READY };

struct nodelink {
    struct hub *hub;
    uv_loop_t *loop;
    struct server *srv; /* NULL once stopped */
    char *url;
    PGconn *pg;
    enum link_state state;
    uv_poll_t *poll; /* on PQsocket(pg); a new one when the socket changes */
    int poll_fd;
    uv_timer_t retry;
    uint64_t delay_ms;
    unsigned jobs;         /* store reads in flight */
    unsigned open_handles; /* retry timer and poll handles not yet closed */
    unsigned long catchups;
};

/* A store read for an announcement: the sessions to compare (a catch-up: tenant 0,
 * no device), or (what set) the device whose state, tags or name changed. */
struct link_job {
    uv_work_t req;
    struct nodelink *l;
    int64_t tenant_id;
    char device_id[PHY_DEVICE_ID_LEN + 1];
    char what[8];
    struct store_node_session *rows;
    size_t n;
    struct store_device dev;
    int outcome;
    int rc;
};

static void link_connect(struct nodelink *l);

static void maybe_free(struct nodelink *l)
{
    if (l->srv || l->jobs || l->open_handles)
        return;
    free(l->url);
    free(l);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct nodelink *l = h->data;
    if (h != (uv_handle_t *)&l->retry)
        free(h);
    l->open_handles--;
    maybe_free(l);
}

static void poll_drop(struct nodelink *l)
{
    if (!l->poll)
        return;
    uv_poll_stop(l->poll);
    uv_close((uv_handle_t *)l->poll, on_handle_closed);
    l->poll = NULL;
    l->poll_fd = -1;
}

static void on_poll(uv_poll_t *p, int status, int events);

/* Watches pg's socket for events (a new handle when libpq changed sockets). */
static int poll_want(struct nodelink *l, int events)
{
    int fd = PQsocket(l->pg);
    if (fd < 0)
        return -1;
    if (l->poll && l->poll_fd != fd)
        poll_drop(l);
    if (!l->poll) {
        uv_poll_t *p = calloc(1, sizeof(*p));
        if (!p || uv_poll_init_socket(l->loop, p, fd) != 0) {
            free(p);
            return -1;
        }
        p->data = l;
        l->poll = p;
        l->poll_fd = fd;
        l->open_handles++;
    }
    uv_poll_start(l->poll, events, on_poll);
    return 0;
}

static void on_retry(uv_timer_t *t)
{
    link_connect(t->data);
}

static void link_lost(struct nodelink *l, const char *why);

/* Connecting and LISTEN took longer than their deadline: libpq's connect_timeout does
 * not hold for an asynchronous connect, and a server that accepts but never answers
 * (a stopped postmaster: the kernel still completes the TCP handshake) would leave the
 * link connecting, and the node deaf to the others, for good. */
static void on_connect_deadline(uv_timer_t *t)
{
    struct nodelink *l = t->data;
    if (l->state != LINK_CONNECTING && l->state != LINK_LISTENING)
        return;
    phy_log(PHY_LOG_WARN, "nodelink_connect_timeout", "after_ms=%llu",
            (unsigned long long)(2000 * (uint64_t)l->hub->cfg.node_heartbeat_s));
    link_lost(l, "connect timed out");
}

/* The connection failed or dropped: a new attempt after a growing delay. */
static void link_lost(struct nodelink *l, const char *why)
{
    if (l->state == LINK_READY || l->delay_ms >= RECONNECT_MAX_MS / 2)
        phy_log(PHY_LOG_WARN, "nodelink_lost", "why=\"%s\" retry_ms=%llu", why,
                (unsigned long long)l->delay_ms);
    /* Other nodes' claims may go unheard from here on: polls read the store. */
    store_poll_facts(l->hub->store, 0);
    poll_drop(l);
    PQfinish(l->pg);
    l->pg = NULL;
    l->state = LINK_IDLE;
    if (!l->srv)
        return;
    uv_timer_start(&l->retry, on_retry, l->delay_ms, 0);
    l->delay_ms = l->delay_ms * 2 > RECONNECT_MAX_MS ? RECONNECT_MAX_MS : l->delay_ms * 2;
}

/* ---- store reads and their effects ---- */

static void on_job(uv_work_t *req)
{
    struct link_job *j = req->data;
    struct hub *h = j->l->hub;
    if (j->what[0])
        j->rc = h->store_ops->device_get(h->store, j->tenant_id, j->device_id, &j->dev, NULL,
                                         &j->outcome);
    else
        j->rc = h->store_ops->node_sessions(h->store, j->tenant_id,
                                            j->device_id[0] ? j->device_id : NULL, &j->rows, &j->n);
}

/* Sends the console event type with o (reference stolen) to the tenant's streams on
 * this node, as a handler on this node would have. */
static void publish(struct nodelink *l, int64_t tenant_id, const char *type, json_t *o)
{
    char *json = o ? phy_json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!json || !l->srv) {
        free(json);
        return;
    }
    struct api_effect e = {.kind = API_EFFECT_EVENT, .tenant_id = tenant_id, .event_type = type,
                           .event_json = json};
    server_effect(l->srv, &e, NULL);
    free(json);
}

/* A device's state, tags or name as the console's event (see docs/protocol.md). */
static void device_event(struct nodelink *l, struct link_job *j)
{
    const struct store_device *d = &j->dev;
    if (j->rc < 0 || j->outcome != STORE_OK)
        return;
    if (strcmp(j->what, "state") == 0)
        publish(l, j->tenant_id, "state",
                json_pack("{s:s, s:s}", "device_id", d->device_id, "state", d->state));
    else if (strcmp(j->what, "tags") == 0)
        publish(l, j->tenant_id, "tags",
                json_pack("{s:s, s:o}", "device_id", d->device_id, "tags",
                          json_loads(d->tags_json ? d->tags_json : "{}", 0, NULL)));
    else
        publish(l, j->tenant_id, "name",
                json_pack("{s:s, s:s?}", "device_id", d->device_id, "name",
                          d->name[0] ? d->name : NULL));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* After a catch-up: a live session the store does not list as this node's (its device
 * deleted, or its newer session elsewhere, announced while the link was down) checks
 * itself with the store. */
static void reclaim_missing(struct nodelink *l, const struct store_node_session *rows, size_t n)
{
    const char **ids = n ? malloc(n * sizeof *ids) : NULL;
    static const char *none[1];
    if (n && !ids) {
        phy_log(PHY_LOG_WARN, "nodelink_read_failed", "why=out_of_memory");
        return;
    }
    for (size_t i = 0; i < n; i++)
        ids[i] = rows[i].device_id;
    if (n)
        qsort(ids, n, sizeof *ids, cmp_str);
    struct api_effect e = {.kind = API_EFFECT_RECLAIM, .present = ids ? ids : none, .npresent = n};
    server_effect(l->srv, &e, NULL);
    free(ids);
}

static void on_job_done(uv_work_t *req, int status)
{
    struct link_job *j = req->data;
    struct nodelink *l = j->l;
    (void)status;
    l->jobs--;
    if (j->what[0]) {
        if (l->srv)
            device_event(l, j);
        store_device_clear(&j->dev);
        free(j);
        maybe_free(l);
        return;
    }
    if (j->rc < 0) {
        phy_log(PHY_LOG_WARN, "nodelink_read_failed", "tenant_id=%lld", (long long)j->tenant_id);
        if (!j->tenant_id && !j->device_id[0] && l->srv && l->state == LINK_READY)
            link_lost(l, "catch-up read failed"); /* the catch-up is retried with the link */
    }
    for (size_t i = 0; l->srv && i < j->n; i++) {
        const struct store_node_session *r = &j->rows[i];
        struct api_effect e = {.kind = r->revoked ? API_EFFECT_CLOSE_SESSION : API_EFFECT_PUSH_DESIRED,
                               .version = r->desired_version,
                               .close_code = PHY_CLOSE_REVOKED};
        memcpy(e.device_id, r->device_id, sizeof e.device_id);
        if (r->revoked || (r->desired_version > 0 && r->desired_patch))
            server_effect(l->srv, &e, r->desired_patch);
    }
    if (l->srv && j->rc >= 0 && !j->tenant_id && !j->device_id[0])
        reclaim_missing(l, j->rows, j->n);
    store_node_sessions_free(j->rows, j->n);
    free(j);
    maybe_free(l);
}

static void read_back(struct nodelink *l, int64_t tenant_id, const char *device_id,
                      const char *what)
{
    struct link_job *j = calloc(1, sizeof(*j));
    if (!j) {
        phy_log(PHY_LOG_WARN, "nodelink_read_failed", "why=out_of_memory");
        return;
    }
    j->req.data = j;
    j->l = l;
    j->tenant_id = tenant_id;
    if (device_id)
        snprintf(j->device_id, sizeof j->device_id, "%s", device_id);
    if (what)
        snprintf(j->what, sizeof j->what, "%s", what);
    l->jobs++;
    uv_queue_work(l->loop, &j->req, on_job, on_job_done);
}

/* One announcement from another node. */
static void apply(struct nodelink *l, const struct store_announce *a)
{
    struct api_effect e = {.version = a->n, .close_code = (int)a->n, .tenant_id = a->tenant_id};
    memcpy(e.device_id, a->device_id, sizeof e.device_id);
    switch (a->kind) {
    case ANNOUNCE_DESIRED:
        read_back(l, a->tenant_id, a->device_id, NULL);
        publish(l, a->tenant_id, "desired",
                json_pack("{s:s, s:I}", "device_id", a->device_id, "version", (json_int_t)a->n));
        return;
    case ANNOUNCE_FLEET:
        read_back(l, a->tenant_id, NULL, NULL);
        return;
    case ANNOUNCE_DEVICE:
        read_back(l, a->tenant_id, a->device_id, a->what);
        return;
    case ANNOUNCE_CLOSE:
        e.kind = API_EFFECT_CLOSE_SESSION;
        publish(l, a->tenant_id, "state",
                json_pack("{s:s, s:s}", "device_id", a->device_id, "state",
                          a->n == PHY_CLOSE_DELETED ? "deleted" : "revoked"));
        break;
    case ANNOUNCE_SESSION:
        e.kind = API_EFFECT_SESSION_ELSEWHERE;
        break;
    case ANNOUNCE_LOGOUT:
        e.kind = API_EFFECT_END_STREAMS;
        memcpy(e.session_hash, a->session_hash, sizeof e.session_hash);
        break;
    case ANNOUNCE_REGISTRATION:
        store_poll_facts_forget(l->hub->store, strcmp(a->serial, "*") == 0 ? NULL : a->serial);
        return;
    }
    server_effect(l->srv, &e, NULL);
}

/* ---- the connection ---- */

static void link_notifies(struct nodelink *l)
{
    PGnotify *n;
    while ((n = PQnotifies(l->pg)) != NULL) {
        struct store_announce a;
        if (store_announce_parse(n->extra, &a) < 0)
            phy_log(PHY_LOG_WARN, "nodelink_bad_announcement", "length=%zu", strlen(n->extra));
        else if (strcmp(a.node, l->hub->cfg.node_id) != 0) /* our own: applied already */
            apply(l, &a);
        PQfreemem(n);
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct nodelink *l = p->data;
    (void)events;
    if (status < 0) {
        link_lost(l, uv_strerror(status));
        return;
    }
    if (l->state == LINK_CONNECTING) {
        switch (PQconnectPoll(l->pg)) {
        case PGRES_POLLING_READING:
            if (poll_want(l, UV_READABLE) < 0)
                link_lost(l, "no socket");
            return;
        case PGRES_POLLING_WRITING:
            if (poll_want(l, UV_WRITABLE) < 0)
                link_lost(l, "no socket");
            return;
        case PGRES_POLLING_OK:
            if (!PQsendQuery(l->pg, "LISTEN " STORE_ANNOUNCE_CHANNEL)) {
                link_lost(l, "LISTEN not sent");
                return;
            }
            l->state = LINK_LISTENING;
            if (PQflush(l->pg) != 0 || poll_want(l, UV_READABLE) < 0)
                link_lost(l, "LISTEN not sent");
            return;
        default:
            link_lost(l, "connect failed");
            return;
        }
    }
    if (!PQconsumeInput(l->pg)) {
        link_lost(l, "connection lost");
        return;
    }
    if (l->state == LINK_LISTENING) {
        while (!PQisBusy(l->pg)) {
            PGresult *r = PQgetResult(l->pg);
            if (!r) { /* LISTEN done: from here on nothing is missed; catch up on the rest */
                l->state = LINK_READY;
                l->delay_ms = RECONNECT_MIN_MS;
                uv_timer_stop(&l->retry); /* the connect deadline */
                l->catchups++;
                phy_log(PHY_LOG_INFO, "nodelink_ready", "catchups=%lu", l->catchups);
                store_poll_facts(l->hub->store, 1); /* heard from here on */
                read_back(l, 0, NULL, NULL);
                break;
            }
            int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
            PQclear(r);
            if (!ok) {
                link_lost(l, "LISTEN refused");
                return;
            }
        }
    }
    link_notifies(l);
}

static void link_connect(struct nodelink *l)
{
    PHY_ASSERT(!l->pg);
    if (!l->srv)
        return;
    /* TCP keepalives: a LISTEN connection only reads, so without them a peer or a
     * network gone silent would leave it "ready" for good, missing announcements.
     * Later keywords win: the URL (dbname, expanded) may set its own. */
    static const char *const keys[] = {"keepalives", "keepalives_idle", "keepalives_interval",
                                       "keepalives_count", "application_name", "dbname", NULL};
    const char *vals[] = {"1", "10", "5", "3", "phyhub-nodelink", l->url, NULL};
    l->pg = PQconnectStartParams(keys, vals, 1);
    if (!l->pg || PQstatus(l->pg) == CONNECTION_BAD || PQsetnonblocking(l->pg, 1) != 0) {
        link_lost(l, "connect failed");
        return;
    }
    l->state = LINK_CONNECTING;
    /* Connect and LISTEN within twice the node heartbeat (the retry timer is free
     * until the link is lost again). */
    uv_timer_start(&l->retry, on_connect_deadline,
                   2000 * (uint64_t)l->hub->cfg.node_heartbeat_s, 0);
    if (poll_want(l, UV_WRITABLE) < 0) /* PQconnectStart's first step: wait to write */
        link_lost(l, "no socket");
}

struct nodelink *nodelink_start(struct hub *h, uv_loop_t *loop, struct server *srv,
                                const char *url)
{
    struct nodelink *l = calloc(1, sizeof(*l));
    if (!l || !(l->url = strdup(url))) {
        free(l);
        return NULL;
    }
    l->hub = h;
    l->loop = loop;
    l->srv = srv;
    l->poll_fd = -1;
    l->delay_ms = RECONNECT_MIN_MS;
    uv_timer_init(loop, &l->retry);
    l->retry.data = l;
    l->open_handles = 1;
    link_connect(l);
    return l;
}

void nodelink_stop(struct nodelink *l)
{
    if (!l || !l->srv)
        return;
    l->srv = NULL;
    poll_drop(l);
    PQfinish(l->pg);
    l->pg = NULL;
    uv_timer_stop(&l->retry);
    uv_close((uv_handle_t *)&l->retry, on_handle_closed);
}

unsigned long nodelink_catchups(const struct nodelink *l)
{
    return l ? l->catchups : 0;
}
