/* phyproxy entry point: flags and INI config, signals, and the event loop. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#include <openssl/crypto.h>

#include "phy/buildinfo.h"
#include "phy/config.h"
#include "phy/err.h"
#include "phy/log.h"
#include "phy/netaddr.h"
#include "phy/proxytoken.h"
#include "phy/ratelimit.h"
#include "policy.h"
#include "proxy.h"

#define DEFAULT_LISTEN "0.0.0.0:443"
#define DEFAULT_ALLOW "portal-*.phystack.com:443"
#define DEFAULT_MAX_CONNECTIONS 10000 /* lowered to what RLIMIT_NOFILE allows */
#define FD_RESERVE 64 /* descriptors beyond two per connection: logs, DNS, overflow */

/* Values as parsed; defaults are set before parsing (strings stay NULL). */
struct options {
    char *listen;
    char *log_level;
    char *log_format;
    struct phy_strlist routes;
    struct phy_strlist allows;
    long max_tunnels_per_device;
    long idle_timeout;
    long connect_timeout;
    long header_timeout;
    long max_connections;
    int dns_fallback;
    struct phy_strlist proxy_keys;
    char *dev_token;
    long max_tunnels_per_source;
    long new_tunnel_rate;
    long new_tunnel_burst;
    long device_share;
    struct phy_strlist dns_allow;
    long upstream_backoff_ms;
    long upstream_backoff_max_ms;
};

/* What build_config allocates besides the policy; freed with edge_free. */
struct edge {
    struct phy_proxy_key *keys;
    struct phy_cidr *dns_allow;
    size_t ndns_allow;
    struct phy_ratelimit *rate;
};

static void edge_free(struct edge *e, size_t nkeys)
{
    if (e->keys != NULL)
        OPENSSL_cleanse(e->keys, nkeys * sizeof(*e->keys));
    free(e->keys);
    free(e->dns_allow);
    phy_ratelimit_free(e->rate);
    memset(e, 0, sizeof(*e));
}

/* Every tunnel may need two descriptors (client and upstream). Raises the soft
 * RLIMIT_NOFILE to what --max-connections needs, or says why it cannot. */
static int check_nofile(unsigned *max_connections, int explicit, char *err, size_t errcap)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)*max_connections * 2 + FD_RESERVE;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        snprintf(err, errcap, "getrlimit(RLIMIT_NOFILE) failed");
        return PHY_EIO;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need && !explicit &&
            rl.rlim_max > FD_RESERVE + 2) {
            /* The default does not fit: serve fewer rather than fail or run out. */
            unsigned fit = (unsigned)((rl.rlim_max - FD_RESERVE) / 2);
            phy_log(PHY_LOG_WARN, "max_connections_lowered",
                    "max_connections=%u nofile_hard_limit=%llu was=%u", fit,
                    (unsigned long long)rl.rlim_max, *max_connections);
            *max_connections = fit;
            need = (rlim_t)fit * 2 + FD_RESERVE;
        }
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
            snprintf(err, errcap,
                     "--max-connections %u needs %llu file descriptors (2 per tunnel + %d) but "
                     "the hard limit is %llu: raise it (LimitNOFILE=, ulimit -Hn) or lower "
                     "--max-connections to %llu",
                     *max_connections, (unsigned long long)need, FD_RESERVE,
                     (unsigned long long)rl.rlim_max,
                     rl.rlim_max > FD_RESERVE ? (unsigned long long)(rl.rlim_max - FD_RESERVE) / 2
                                              : 0ULL);
            return PHY_EINVAL;
        }
        rl.rlim_cur = need;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            snprintf(err, errcap, "cannot raise RLIMIT_NOFILE to %llu", (unsigned long long)need);
            return PHY_EIO;
        }
        phy_log(PHY_LOG_INFO, "nofile_raised", "soft_limit=%llu", (unsigned long long)need);
    }
    return 0;
}

static void usage(FILE *f, const struct phy_opt *opts)
{
    fprintf(f, "usage: phyproxy [--config FILE] [options]\n"
               "HTTP CONNECT proxy for PhyStack devices (see docs/proxy.md).\n\n");
    phy_config_print_help(opts, f);
}

static int parse_level(const char *s, enum phy_log_level *out)
{
    static const struct {
        const char *name;
        enum phy_log_level lvl;
    } levels[] = {{"debug", PHY_LOG_DEBUG},
                  {"info", PHY_LOG_INFO},
                  {"warn", PHY_LOG_WARN},
                  {"error", PHY_LOG_ERROR}};
    size_t i;

    for (i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        if (strcmp(s, levels[i].name) == 0) {
            *out = levels[i].lvl;
            return 0;
        }
    }
    return PHY_EINVAL;
}

/* Turns parsed options into cfg (policy filled into *policy). 0 or PHY_E* with err. */
static int build_config(const struct options *o, struct proxy_policy *policy, struct edge *e,
                        struct proxy_config *cfg, char *err, size_t errcap)
{
    const char *listen = o->listen != NULL ? o->listen : DEFAULT_LISTEN;
    size_t i;
    int rc;

    memset(cfg, 0, sizeof(*cfg));
    if (proxy_addr_parse_hostport(listen, &cfg->listen) != 0) {
        snprintf(err, errcap, "--listen: expected ADDR:PORT with an IP address, got '%.80s'",
                 listen);
        return PHY_EINVAL;
    }
    for (i = 0; i < o->routes.n; i++) {
        rc = proxy_policy_add_route(policy, o->routes.items[i], err, errcap);
        if (rc != 0)
            return rc;
    }
    for (i = 0; i < o->allows.n; i++) {
        rc = proxy_policy_add_allow(policy, o->allows.items[i], err, errcap);
        if (rc != 0)
            return rc;
    }
    if (o->allows.n == 0) {
        rc = proxy_policy_add_allow(policy, DEFAULT_ALLOW, err, errcap);
        if (rc != 0)
            return rc;
    }
    policy->backoff_ms = (uint64_t)o->upstream_backoff_ms;
    policy->backoff_max_ms = (uint64_t)o->upstream_backoff_max_ms;
    cfg->policy = policy;
    cfg->max_tunnels_per_device = (unsigned)o->max_tunnels_per_device;
    cfg->max_connections = (unsigned)o->max_connections;
    cfg->idle_timeout_ms = (uint64_t)o->idle_timeout * 1000u;
    cfg->connect_timeout_ms = (uint64_t)o->connect_timeout * 1000u;
    cfg->header_timeout_ms = (uint64_t)o->header_timeout * 1000u;
    cfg->dns_fallback = o->dns_fallback;
    cfg->max_tunnels_per_source = (unsigned)o->max_tunnels_per_source;
    cfg->fd_reserve = FD_RESERVE;
    cfg->device_share = (unsigned)o->device_share;

    if (o->dev_token != NULL && strcmp(o->dev_token, "required") != 0 &&
        strcmp(o->dev_token, "optional") != 0) {
        snprintf(err, errcap, "--dev-token: expected required or optional");
        return PHY_EINVAL;
    }
    cfg->dev_token_optional = o->dev_token != NULL && strcmp(o->dev_token, "optional") == 0;
    if (o->proxy_keys.n > 0) {
        e->keys = calloc(o->proxy_keys.n, sizeof(*e->keys));
        if (e->keys == NULL)
            return PHY_ENOMEM;
    }
    for (i = 0; i < o->proxy_keys.n; i++) {
        rc = phy_proxy_key_load(o->proxy_keys.items[i], 0, &e->keys[i], err, errcap);
        if (rc != 0)
            return rc;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(e->keys[j].kid, e->keys[i].kid) == 0) {
                snprintf(err, errcap, "--proxy-key: key ID %s given twice", e->keys[i].kid);
                return PHY_EINVAL;
            }
        }
        cfg->nkeys = i + 1;
    }
    cfg->keys = e->keys;
    for (i = 0; i < o->dns_allow.n; i++) {
        char why[160];
        rc = phy_cidr_list_parse(o->dns_allow.items[i], &e->dns_allow, &e->ndns_allow, why,
                                 sizeof(why));
        if (rc != 0) {
            snprintf(err, errcap, "--dns-allow-net: %s", why);
            return rc;
        }
    }
    cfg->dns_allow = e->dns_allow;
    cfg->ndns_allow = e->ndns_allow;
    if (o->new_tunnel_rate > 0) {
        e->rate = phy_ratelimit_new((double)o->new_tunnel_rate, (double)o->new_tunnel_burst, 0);
        if (e->rate == NULL)
            return PHY_ENOMEM;
    }
    cfg->new_tunnel_rate = e->rate;
    if (o->max_connections == 0)
        cfg->max_connections = DEFAULT_MAX_CONNECTIONS;
    return check_nofile(&cfg->max_connections, o->max_connections != 0, err, errcap);
}

static void close_signal(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (h->type == UV_SIGNAL && !uv_is_closing(h))
        uv_close(h, NULL);
}

/* SIGINT/SIGTERM: stop accepting, close every connection and the signal handles;
 * uv_run then returns once the last handle has closed. */
static void on_stop_signal(uv_signal_t *sig, int signum)
{
    struct proxy *px = sig->data;

    phy_log(PHY_LOG_INFO, "stop", "signal=%s", signum == SIGINT ? "SIGINT" : "SIGTERM");
    proxy_shutdown(px);
    uv_walk(sig->loop, close_signal, NULL);
}

int main(int argc, char **argv)
{
    struct options o = {
        .max_tunnels_per_device = 8,
        .idle_timeout = 300,
        .connect_timeout = 10,
        .header_timeout = 10,
        .max_tunnels_per_source = 256,
        .new_tunnel_rate = 50,
        .new_tunnel_burst = 200,
        .device_share = 20,
        .upstream_backoff_ms = PROXY_BACKOFF_DEFAULT_MS,
        .upstream_backoff_max_ms = PROXY_BACKOFF_MAX_DEFAULT_MS,
    };
    const struct phy_opt opts[] = {
        {"listen", PHY_OPT_STR, &o.listen, 0, 0,
         "ADDR:PORT to listen on, IPv4 or [IPv6] (default 0.0.0.0:443)"},
        {"route", PHY_OPT_LIST, &o.routes, 0, 0,
         "HOST=ADDR:PORT[,ADDR:PORT…][,proxy-protocol=off] upstreams for HOST (exact name or "
         "'*' pattern; repeatable; at most 16 upstreams): a new tunnel goes to the one with the "
         "fewest live tunnels (ties: round robin), a failed connect to the next; a PROXY v2 "
         "header precedes the stream unless off"},
        {"allow", PHY_OPT_LIST, &o.allows, 0, 0,
         "HOST_PATTERN:PORT allowed target, PORT may be * (repeatable; default " DEFAULT_ALLOW ")"},
        {"max-tunnels-per-device", PHY_OPT_INT, &o.max_tunnels_per_device, 1, 100000,
         "live tunnels per device identifier, then 429 (default 8)"},
        {"idle-timeout", PHY_OPT_INT, &o.idle_timeout, 1, 86400,
         "seconds without bytes either way before a tunnel is closed (default 300)"},
        {"connect-timeout", PHY_OPT_INT, &o.connect_timeout, 1, 600,
         "seconds to resolve and connect upstream, then 504 (default 10)"},
        {"header-timeout", PHY_OPT_INT, &o.header_timeout, 1, 600,
         "seconds for a client to send its CONNECT head, then 408 (default 10)"},
        {"dns-fallback", PHY_OPT_BOOL, &o.dns_fallback, 0, 0,
         "resolve allowed hosts without a route through DNS (default off: 502)"},
        {"max-connections", PHY_OPT_INT, &o.max_connections, 1, 1000000,
         "simultaneous client connections, then 503 (default 10000, or what the "
         "descriptor limit allows: 2 per connection)"},
        {"proxy-key", PHY_OPT_LIST, &o.proxy_keys, 0, 0,
         "KID=FILE key shared with the hubs; dev_ identities need a proxy token under one "
         "(repeatable, for rotation; none: no identity is verified)"},
        {"dev-token", PHY_OPT_STR, &o.dev_token, 0, 0,
         "required (default) or optional: whether a dev_ identity without a token passes "
         "(unauthenticated, counted per source) while devices migrate"},
        {"max-tunnels-per-source", PHY_OPT_INT, &o.max_tunnels_per_source, 1, 1000000,
         "live unauthenticated tunnels per source address (IPv6: per /64), then 429 (default 256)"},
        {"new-tunnel-rate", PHY_OPT_INT, &o.new_tunnel_rate, 0, 1000000,
         "new unauthenticated tunnels per second per source, 0 = no limit (default 50)"},
        {"new-tunnel-burst", PHY_OPT_INT, &o.new_tunnel_burst, 1, 1000000,
         "burst of new unauthenticated tunnels per source (default 200)"},
        {"device-share", PHY_OPT_INT, &o.device_share, 0, 90,
         "percent of --max-connections kept for devices with a valid proxy token: "
         "unauthenticated tunnels get 503 beyond the rest (default 20)"},
        {"dns-allow-net", PHY_OPT_LIST, &o.dns_allow, 0, 0,
         "CIDR[,CIDR…] non-public networks a DNS answer may lead to (default none: loopback, "
         "private, link-local and metadata addresses are refused with 403)"},
        {"upstream-backoff-ms", PHY_OPT_INT, &o.upstream_backoff_ms, 1, 3600000,
         "after a failed connect, an upstream of a route with several is skipped this long "
         "(unless every one is), then probed with a TCP connect; doubled per failure "
         "(default 1000)"},
        {"upstream-backoff-max-ms", PHY_OPT_INT, &o.upstream_backoff_max_ms, 1, 86400000,
         "the longest backoff of a failed upstream (default 30000)"},
        {"log-level", PHY_OPT_STR, &o.log_level, 0, 0, "debug, info, warn or error (default info)"},
        {"log-format", PHY_OPT_STR, &o.log_format, 0, 0,
         "logfmt (key=value, the default) or json (one JSON object per line, the same keys)"},
        {NULL, PHY_OPT_STR, NULL, 0, 0, NULL},
    };
    struct proxy_policy policy;
    struct edge edge;
    struct proxy_config cfg;
    struct proxy *px = NULL;
    uv_loop_t loop;
    uv_signal_t sigint, sigterm;
    enum phy_log_level level = PHY_LOG_INFO;
    enum phy_log_format log_fmt;
    char err[256];
    int want_help = 0, rc, status = 1;

    memset(&policy, 0, sizeof(policy));
    memset(&edge, 0, sizeof(edge));
    memset(&cfg, 0, sizeof(cfg));
    phy_log_init("phyproxy", PHY_LOG_INFO);
    if (phy_buildinfo_wanted(argc, argv, 1)) {
        phy_buildinfo_print("phyproxy", stdout);
        return 0;
    }
    rc = phy_config_parse(opts, argc, argv, 1, NULL, 0, NULL, &want_help, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "phyproxy: %s\n", err);
        goto out_free_opts;
    }
    if (want_help) {
        usage(stdout, opts);
        status = 0;
        goto out_free_opts;
    }
    if (o.log_level != NULL && parse_level(o.log_level, &level) != 0) {
        fprintf(stderr, "phyproxy: --log-level: expected debug, info, warn or error\n");
        goto out_free_opts;
    }
    if (phy_log_format_parse(o.log_format, &log_fmt) != 0) {
        fprintf(stderr, "phyproxy: --log-format: expected logfmt or json\n");
        goto out_free_opts;
    }
    phy_log_set_format(log_fmt);
    phy_log_init("phyproxy", level);
    rc = build_config(&o, &policy, &edge, &cfg, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "phyproxy: %s\n", rc == PHY_ENOMEM ? "out of memory" : err);
        goto out_free_policy;
    }

    signal(SIGPIPE, SIG_IGN);
    if (uv_loop_init(&loop) != 0) {
        fprintf(stderr, "phyproxy: cannot create the event loop\n");
        goto out_free_policy;
    }
    rc = proxy_start(&loop, &cfg, &px, err, sizeof(err));
    if (rc != 0) {
        phy_log(PHY_LOG_ERROR, "start_failed", "error=%s", phy_strerror(rc));
        fprintf(stderr, "phyproxy: %s\n", err);
        uv_run(&loop, UV_RUN_DEFAULT); /* lets the listener's close complete */
        goto out_close_loop;
    }
    uv_signal_init(&loop, &sigint);
    uv_signal_init(&loop, &sigterm);
    sigint.data = px;
    sigterm.data = px;
    uv_signal_start(&sigint, on_stop_signal, SIGINT);
    uv_signal_start(&sigterm, on_stop_signal, SIGTERM);

    uv_run(&loop, UV_RUN_DEFAULT);
    phy_log(PHY_LOG_INFO, "exit", "status=0");
    status = 0;

out_close_loop:
    proxy_destroy(px);
    if (uv_loop_close(&loop) != 0)
        status = 1;
out_free_policy:
    proxy_policy_free(&policy);
    edge_free(&edge, o.proxy_keys.n);
out_free_opts:
    phy_config_free(opts);
    return status;
}
