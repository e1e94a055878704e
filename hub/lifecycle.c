/* The hub's life on its loop; see lifecycle.h. One hub per process: the handles are
 * file-scoped, as they live exactly as long as the loop. */
#include "lifecycle.h"

#include <signal.h>
#include <stdatomic.h>
#include <string.h>

#include "conn.h"
#include "nodelink.h"
#include "phy/log.h"
#include "region.h"
#include "rules.h"

/* Outbox kicks (a device session opened): coalesced into one drain per
 * OUTBOX_KICK_DELAY_MS, never two at once. */
#define OUTBOX_KICK_DELAY_MS 100

/* A periodic job on the thread pool, never two runs at once (a tick while one runs
 * is skipped). */
struct periodic {
    uv_timer_t timer;
    uv_work_t work;
    int running;
    void (*run)(struct hub *h, int64_t now_ms);
};

static struct {
    struct hub *hub;
    struct server *server;
    struct nodelink *link; /* several nodes on PostgreSQL */
    uv_loop_t *loop;
    uv_signal_t sigint, sigterm;
    struct periodic sweep, heart;
    uv_timer_t outbox_timer;
    uv_work_t outbox_work;
    int outbox_running, outbox_again, stopping;
    atomic_int rejoined; /* the heartbeat found this node forgotten by the store */
} L;

/* 1 when this node holds (took or renewed) the lease of the singleton job for the
 * node timeout: on several nodes one runs the job at a time, and a dead holder's job
 * passes to another node once its lease ends. */
static int hub_lead(struct hub *h, const char *job, int64_t now_ms)
{
    int held = 0;
    if (h->store_ops->lease_take(h->store, job, now_ms, now_ms + h->cfg.node_timeout_s * 1000,
                                 &held) < 0) {
        phy_log(PHY_LOG_WARN, "lease_failed", "job=%s store=%s", job, store_engine_name(h->store));
        return 0;
    }
    return held;
}

int64_t hub_failures_keep_ms(const struct hub *h)
{
    long login_keep_s = h->cfg.login_window_s * RULE_LOGIN_LOOKBACK;
    long keep_s = h->cfg.claim_window_s > login_keep_s ? h->cfg.claim_window_s : login_keep_s;
    return (int64_t)keep_s * 1000;
}

static void store_sweep(struct hub *h, int64_t now_ms)
{
    struct store_prov_params p;
    int64_t live;
    hub_prov_params(h, now_ms, &p);
    if (h->store_ops->sweep(h->store, &p, hub_failures_keep_ms(h)) < 0)
        phy_log(PHY_LOG_WARN, "sweep_failed", "store=%s", store_engine_name(h->store));
    if (h->store_ops->reg_live_count(h->store, &p, &live) == 0)
        atomic_store_explicit(&h->regs_estimate, live, memory_order_relaxed);
}

void hub_sweep(struct hub *h, int64_t now_ms)
{
    store_sweep(h, now_ms);
    hub_clock_check();
    if (h->seal)
        hub_seal_sweep(h, now_ms);
    if (h->store_ops->console_sweep(h->store, now_ms, h->cfg.session_idle_s * 1000,
                                    h->cfg.session_max_s * 1000,
                                    h->cfg.audit_keep_days * 86400000LL) < 0)
        phy_log(PHY_LOG_WARN, "sweep_failed", "store=%s what=console", store_engine_name(h->store));
    region_outbox_drain(h);
}

void hub_heartbeat(struct hub *h, int64_t now_ms)
{
    int n = 0, rc = h->store_ops->node_heartbeat(h->store, now_ms);
    if (rc < 0) {
        phy_log(PHY_LOG_WARN, "heartbeat_failed", "node=%s store=%s", h->cfg.node_id,
                store_engine_name(h->store));
        return;
    }
    if (rc == 1) /* forgotten while too slow: the loop has the sessions reclaim (below) */
        atomic_store(&L.rejoined, 1);
    /* Pending polls' soft state (store/soft.h) not yet written by a later poll. */
    if (store_soft_flush(h->store) < 0)
        phy_log(PHY_LOG_WARN, "soft_flush_failed", "store=%s", store_engine_name(h->store));
    if (!hub_lead(h, "presence", now_ms))
        return;
    if (h->store_ops->presence_sweep(h->store, now_ms, now_ms - h->cfg.node_timeout_s * 1000,
                                     &n) < 0)
        phy_log(PHY_LOG_WARN, "sweep_failed", "store=%s what=presence", store_engine_name(h->store));
    else if (n > 0)
        phy_log(PHY_LOG_WARN, "dead_node_sessions_ended", "devices=%d node_timeout_s=%ld", n,
                h->cfg.node_timeout_s);
}

int hub_prepare(struct hub *h, char *err, size_t errcap)
{
    int64_t now = hub_now_ms();
    if (store_set_node(h->store, h->cfg.node_id) < 0 ||
        h->store_ops->node_heartbeat(h->store, now) < 0) {
        snprintf(err, errcap, "cannot record this node (%s) in the store", h->cfg.node_id);
        return -1;
    }
    if (hub_lead(h, "sweep", now))
        store_sweep(h, now);
    if (h->store_ops->presence_reset(h->store, now) < 0) {
        snprintf(err, errcap, "cannot reset presence in the store");
        return -1;
    }
    return 0;
}

/* The sweep, on the node holding its lease. */
static void sweep_if_lead(struct hub *h, int64_t now_ms)
{
    if (hub_lead(h, "sweep", now_ms))
        hub_sweep(h, now_ms);
}

static void on_periodic_work(uv_work_t *w)
{
    struct periodic *p = w->data;
    p->run(L.hub, hub_now_ms());
}

static void on_periodic_done(uv_work_t *w, int status)
{
    struct periodic *p = w->data;
    (void)status;
    p->running = 0;
    if (atomic_exchange(&L.rejoined, 0) && L.server && !L.stopping) {
        struct api_effect e = {.kind = API_EFFECT_RECLAIM};
        server_effect(L.server, &e, NULL);
    }
}

static void on_periodic_timer(uv_timer_t *t)
{
    struct periodic *p = t->data;
    if (p->running)
        return;
    p->running = 1;
    uv_queue_work(L.loop, &p->work, on_periodic_work, on_periodic_done);
}

static void periodic_start(struct periodic *p, void (*run)(struct hub *, int64_t), long period_s)
{
    p->run = run;
    p->work.data = p;
    p->timer.data = p;
    uv_timer_init(L.loop, &p->timer);
    uv_timer_start(&p->timer, on_periodic_timer, (uint64_t)period_s * 1000, (uint64_t)period_s * 1000);
}

static void on_outbox_work(uv_work_t *w)
{
    (void)w;
    /* The sweep's lease covers the outbox too: one node drains it at a time (a
     * kick on another node waits for the holder's next sweep). */
    if (hub_lead(L.hub, "sweep", hub_now_ms()))
        region_outbox_drain(L.hub);
}

static void on_outbox_timer(uv_timer_t *t);

static void on_outbox_done(uv_work_t *w, int status)
{
    (void)w;
    (void)status;
    L.outbox_running = 0;
    if (L.outbox_again && !L.stopping) {
        L.outbox_again = 0;
        uv_timer_start(&L.outbox_timer, on_outbox_timer, OUTBOX_KICK_DELAY_MS, 0);
    }
}

static void on_outbox_timer(uv_timer_t *t)
{
    (void)t;
    if (L.outbox_running) {
        L.outbox_again = 1;
        return;
    }
    L.outbox_running = 1;
    uv_queue_work(L.loop, &L.outbox_work, on_outbox_work, on_outbox_done);
}

static void outbox_kick(struct hub *h)
{
    (void)h;
    if (L.stopping)
        return;
    if (L.outbox_running)
        L.outbox_again = 1;
    else if (!uv_is_active((uv_handle_t *)&L.outbox_timer))
        uv_timer_start(&L.outbox_timer, on_outbox_timer, OUTBOX_KICK_DELAY_MS, 0);
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    phy_log(PHY_LOG_INFO, "stopping", "signal=%d", signum);
    nodelink_stop(L.link);
    L.link = NULL;
    server_stop(L.server);
    L.server = NULL;
    L.stopping = 1;
    uv_close((uv_handle_t *)&L.sigint, NULL);
    uv_close((uv_handle_t *)&L.sigterm, NULL);
    uv_close((uv_handle_t *)&L.sweep.timer, NULL);
    uv_close((uv_handle_t *)&L.outbox_timer, NULL);
    uv_close((uv_handle_t *)&L.heart.timer, NULL);
}

void hub_lifecycle_start(struct hub *h, uv_loop_t *loop, struct server *srv)
{
    L.hub = h;
    L.server = srv;
    L.loop = loop;
    uv_signal_init(loop, &L.sigint);
    uv_signal_init(loop, &L.sigterm);
    uv_signal_start(&L.sigint, on_signal, SIGINT);
    uv_signal_start(&L.sigterm, on_signal, SIGTERM);
    uv_timer_init(loop, &L.outbox_timer);
    if (!h->cfg.provisioning)
        h->outbox_kick = outbox_kick;
    periodic_start(&L.sweep, sweep_if_lead, h->cfg.sweep_interval_s);
    periodic_start(&L.heart, hub_heartbeat, h->cfg.node_heartbeat_s);
    if (h->store_ops->node_sessions && strcmp(store_engine_name(h->store), "postgresql") == 0 &&
        !(L.link = nodelink_start(h, loop, srv, h->cfg.db)))
        phy_log(PHY_LOG_WARN, "nodelink_failed", "why=out_of_memory");
}
