/* phyhub's shared state: configuration, store, keys and counters. */
#ifndef PHY_HUB_HUB_H
#define PHY_HUB_HUB_H

#include <stdatomic.h>
#include <stdint.h>

#include "phy/config.h"
#include "phy/crypto.h"
#include "phy/netaddr.h"
#include "phy/proxytoken.h"
#include "phy/ratelimit.h"
#include "store.h"

struct seal_ring;
struct eu_client;

struct hub_config {
    char *region;   /* "eu" */
    char *listen;   /* "0.0.0.0:443" */
    char *db;       /* a SQLite file, or postgresql://... */
    long db_pool;   /* PostgreSQL connections (8) */
    char *key_file; /* AEAD key for pending issuances; default <db>.key */
    char *seal_ratchet; /* the seal ratchet file (seal.h); default <key file>.ratchet */
    long seal_epoch_s;  /* the ratchet's epoch: a purged body is shredded within 3 */
    char *tls_cert, *tls_key;
    char *tls_ticket_keys; /* NULL: no session tickets */
    int provisioning;      /* serve the provisioning API (eu) */
    char *public_endpoint; /* "portal-eu.phystack.com:443", given to devices */
    long code_ttl_s;
    long poll_interval_s;
    long max_poll_interval_s;
    long issuance_grace_s;
    long remote_issuance_max_age_s; /* eu: another region's undelivered issuance ends */
    long registration_idle_s;
    long header_timeout_s; /* TLS handshake + request head + body */
    long keepalive_s;      /* idle between requests on one connection */
    long max_handshakes;   /* TLS handshakes in flight; more clients that spoke wait */
    long drain_s;          /* SIGTERM: longest wait for requests in flight; device
                              sessions are told to come back spread over as long */
    long max_body;         /* request body bytes */
    long max_connections;
    long sweep_interval_s;
    long claim_user_limit, claim_tenant_limit, claim_window_s;
    long ping_interval_s; /* device sessions: ping period */
    long ping_timeout_s;  /* no frame for this long closes the session */
    long device_msg_rate; /* messages per second per device (and burst) */
    /* inter-region (docs/protocol.md section 3) */
    char *provisioning_url;      /* regional hubs: "https://HOST:PORT" of eu */
    char *inter_region_key_file; /* regional hubs: this region's key */
    char *ca_file;               /* regional hubs: PEM verifying eu (NULL: system store) */
    struct phy_strlist peers;    /* eu: "REGION=KEYFILE", one per regional hub */
    struct phy_strlist importers; /* eu: "NAME=KEYFILE", manufacturers importing serials */
    long inter_region_timeout_s; /* per connect / read / write */
    long inter_region_attempts;  /* tries of one call on transport failures and 5xx */
    /* console (docs/protocol.md section 4) */
    char *web_root;          /* static console files (default PHY_WEB_ROOT) */
    long session_idle_s;     /* a login session ends after this long unused */
    long session_max_s;      /* ... and this long after the login */
    long login_user_limit;   /* failed logins per (tenant, user) per window */
    long login_tenant_limit; /* failed logins per tenant per window */
    long login_window_s;
    long login_peer_limit;   /* failed logins per client address per window */
    long audit_keep_days;    /* audit records older than this are deleted (0: kept) */
    /* the edge (docs/security.md) */
    struct phy_strlist trusted_proxies; /* "CIDR,…": who may send a PROXY v2 header */
    char *proxy_key;                    /* "KID=FILE": signs devices' proxy tokens */
    long register_rate, register_burst; /* registrations and codes per source address */
    long max_registrations;             /* live registrations in the store (0: no cap) */
    long max_streams_per_tenant;        /* console event streams open per tenant */
    long device_share;                  /* % of max_connections kept for device sessions */
    struct phy_strlist metrics_allow;   /* "CIDR,…" who may read /metrics (default loopback) */
    long max_idle_per_source;           /* idle keep-alive connections per client address */
    /* several nodes on one store (docs/store.md "Nodes") */
    char *node_id;           /* this node (default host name:listen port) */
    long node_heartbeat_s;   /* heartbeat period */
    long node_timeout_s;     /* a node silent this long is dead: its sessions end */
};

/* What an HTTP request is, for metrics (hub_route_class). */
enum hub_route_class {
    ROUTE_PROVISIONING, /* /v1/provisioning/ */
    ROUTE_CONSOLE,      /* /api/ */
    ROUTE_INTERNAL,     /* /internal/ */
    ROUTE_STATIC,       /* the console's files, /healthz, /metrics */
    ROUTE_CLASSES
};
#define HUB_DURATION_BUCKETS 12 /* metrics.c's bucket bounds, +Inf apart */

/* Counters shown by GET /metrics; updated from the loop and from workers. */
struct hub_metrics {
    _Atomic uint64_t sessions; /* gauge: live device sessions */
    _Atomic uint64_t ws_msgs_in, ws_msgs_out;
    _Atomic uint64_t auth_failures; /* device hub, console logins and API tokens */
    _Atomic uint64_t http_requests[ROUTE_CLASSES];
    _Atomic uint64_t http_us[ROUTE_CLASSES]; /* total duration, microseconds */
    _Atomic uint64_t http_buckets[ROUTE_CLASSES][HUB_DURATION_BUCKETS]; /* not cumulative */
    _Atomic uint64_t store_ops, store_us; /* requests and messages that used the store */
    _Atomic uint64_t prov_registered, prov_codes, prov_delivered, prov_claimed;
    _Atomic uint64_t prov_claim_failed, prov_slow_down;
    _Atomic uint64_t prov_issued_remote; /* eu: issuances for another region's claims */
    _Atomic uint64_t prov_evicted; /* registrations evicted at a serial's cap */
    _Atomic uint64_t prov_rate_limited, prov_full; /* per-source limit, global cap */
};

static inline void hub_metric_add(_Atomic uint64_t *m, uint64_t n)
{
    atomic_fetch_add_explicit(m, n, memory_order_relaxed);
}

static inline void hub_metric_set(_Atomic uint64_t *m, uint64_t v)
{
    atomic_store_explicit(m, v, memory_order_relaxed);
}

struct hub {
    struct hub_config cfg;
    const struct phy_store_ops *store_ops;
    struct store *store;
    unsigned char issuance_key[PHY_AEAD_KEY_LEN];
    struct seal_ring *seal; /* seals issuance bodies under issuance_key + ratchet */
    struct hub_metrics metrics;
    struct region_ctx *region; /* eu: its callers' keys; the outbox's state (region.c) */
    struct eu_client *eu;      /* regional hubs: eu's address and key (eu_client.c) */
    /* Called on the loop when a device session opened: regional hubs use it to send
     * their outbox to eu soon (NULL: nothing to do). */
    void (*outbox_kick)(struct hub *h);
    /* An argon2id encoding of a random password, made at start: logins of unknown
     * users are checked against it so that they cost what a real check costs. */
    char login_dummy_hash[256];
    _Atomic int login_checks; /* argon2id checks running now (login.c caps them) */
    struct phy_cidr *trusted; /* --trusted-proxy */
    size_t ntrusted;
    struct phy_cidr *metrics_allow; /* --metrics-allow */
    size_t nmetrics_allow;
    struct phy_proxy_key proxy_key; /* --proxy-key; kid "" when not set */
    struct phy_ratelimit *register_rate; /* per source: registrations and codes */
    /* Live registrations: counted by the sweeper, plus those this node made since
     * (an over-estimate between sweeps: lapsed ones count until the next). */
    _Atomic int64_t regs_estimate;
};

/* Milliseconds since the Unix epoch: the wall clock at the hub's start carried
 * forward by CLOCK_MONOTONIC, so that a step of the system clock moves no deadline,
 * lapse or lock-out of a running hub. Stored times use it. */
int64_t hub_now_ms(void);
/* How far the wall clock is from hub_now_ms (logs a step over HUB_CLOCK_STEP_MS
 * once); the sweeper calls it. */
#define HUB_CLOCK_STEP_MS 2000
int64_t hub_clock_check(void);
/* Milliseconds of CLOCK_MONOTONIC: in-process intervals (no jump moves them). */
int64_t hub_mono_ms(void);

/* Re-seals every live issuance body sealed under an epoch the ratchet is about to
 * drop, then advances the ratchet (seal.h). Run by the sweeper, on a worker. 0, or
 * negative when a store call or the ratchet file failed (logged; the ratchet stays). */
int hub_seal_sweep(struct hub *h, int64_t now_ms);

/* The class of a request path. */
enum hub_route_class hub_route_class(const char *path);
/* Counts one answered request of that path and how long it took. */
void hub_metrics_request(struct hub *h, const char *path, uint64_t us);

/* Fills provisioning parameters from the configuration at now. */
void hub_prov_params(const struct hub *h, int64_t now_ms, struct store_prov_params *p);

#endif
