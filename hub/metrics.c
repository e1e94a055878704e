/* GET /metrics: the hub's counters in the Prometheus text exposition format (names
 * per Prometheus' conventions: units as suffixes, _total for counters; the region
 * is the scrape target's label, not the metrics'). Served only to --metrics-allow. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "phy/netaddr.h"
#include "phy/version.h"

#define METRICS_MAX 16384

/* Upper bounds of the duration buckets, seconds (then +Inf). */
static const double bounds[HUB_DURATION_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                    0.05,   0.1,   0.25,   0.5,   1,    5};
static const char *const class_names[ROUTE_CLASSES] = {
    [ROUTE_PROVISIONING] = "provisioning",
    [ROUTE_CONSOLE] = "console",
    [ROUTE_INTERNAL] = "internal",
    [ROUTE_STATIC] = "static",
};

enum hub_route_class hub_route_class(const char *path)
{
    if (!path)
        return ROUTE_STATIC;
    if (strncmp(path, "/v1/provisioning/", 17) == 0)
        return ROUTE_PROVISIONING;
    if (strncmp(path, "/api/", 5) == 0)
        return ROUTE_CONSOLE;
    if (strncmp(path, "/internal/", 10) == 0)
        return ROUTE_INTERNAL;
    return ROUTE_STATIC;
}

void hub_metrics_request(struct hub *h, const char *path, uint64_t us)
{
    enum hub_route_class c = hub_route_class(path);
    size_t b = 0;
    while (b < HUB_DURATION_BUCKETS && (double)us / 1e6 > bounds[b])
        b++;
    hub_metric_add(&h->metrics.http_requests[c], 1);
    hub_metric_add(&h->metrics.http_us[c], us);
    if (b < HUB_DURATION_BUCKETS)
        hub_metric_add(&h->metrics.http_buckets[c][b], 1);
}

static unsigned long long get(_Atomic uint64_t *m)
{
    return (unsigned long long)atomic_load_explicit(m, memory_order_relaxed);
}

struct out {
    char *p;
    size_t len;
    int failed;
};

__attribute__((format(printf, 2, 3))) static void put(struct out *o, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (o->failed)
        return;
    va_start(ap, fmt);
    n = vsnprintf(o->p + o->len, METRICS_MAX - o->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= METRICS_MAX - o->len)
        o->failed = 1;
    else
        o->len += (size_t)n;
}

static void counter(struct out *o, const char *name, const char *help, unsigned long long v)
{
    put(o, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name, v);
}

/* 1 when the caller may read the metrics. */
static int allowed(const struct hub *h, const struct api_request *req)
{
    struct phy_cidr c;
    return req->peer_ip && phy_cidr_parse(req->peer_ip, &c) == 0 &&
           phy_cidr_list_match(h->metrics_allow, h->nmetrics_allow, c.addr);
}

void handle_metrics(struct hub *h, const struct api_request *req, struct api_response *res)
{
    struct hub_metrics *m = &h->metrics;
    static const struct {
        const char *outcome;
        size_t off;
    } prov[] = {
        {"registered", offsetof(struct hub_metrics, prov_registered)},
        {"code", offsetof(struct hub_metrics, prov_codes)},
        {"slow_down", offsetof(struct hub_metrics, prov_slow_down)},
        {"claimed", offsetof(struct hub_metrics, prov_claimed)},
        {"claim_failed", offsetof(struct hub_metrics, prov_claim_failed)},
        {"issued_for_region", offsetof(struct hub_metrics, prov_issued_remote)},
        {"delivered", offsetof(struct hub_metrics, prov_delivered)},
        {"registration_evicted", offsetof(struct hub_metrics, prov_evicted)},
        {"rate_limited", offsetof(struct hub_metrics, prov_rate_limited)},
        {"registrations_full", offsetof(struct hub_metrics, prov_full)},
    };
    struct out o = {.p = NULL};

    if (!allowed(h, req)) {
        api_error(res, 403, "forbidden", "/metrics is served to --metrics-allow addresses only");
        return;
    }
    if (!(o.p = malloc(METRICS_MAX))) {
        api_error(res, 500, "internal", "out of memory");
        return;
    }
    put(&o,
        "# HELP phyhub_build_info The hub's version and the git description of its tree.\n"
        "# TYPE phyhub_build_info gauge\n"
        "phyhub_build_info{version=\"%s\",revision=\"%s\"} 1\n",
        PHY_VERSION, PHY_GIT_DESCRIBE);
    put(&o, "# HELP phyhub_device_sessions Live device sessions.\n"
            "# TYPE phyhub_device_sessions gauge\nphyhub_device_sessions %llu\n",
        get(&m->sessions));
    counter(&o, "phyhub_ws_messages_received_total", "Device messages received.",
            get(&m->ws_msgs_in));
    counter(&o, "phyhub_ws_messages_sent_total", "Messages sent to devices.", get(&m->ws_msgs_out));
    counter(&o, "phyhub_auth_failures_total",
            "Refused credentials: devices, console logins, API tokens, internal keys.",
            get(&m->auth_failures));
    counter(&o, "phyhub_store_operations_total",
            "Requests (not static files) and device messages that used the store.",
            get(&m->store_ops));
    put(&o,
        "# HELP phyhub_store_seconds_total Time spent in those store operations.\n"
        "# TYPE phyhub_store_seconds_total counter\nphyhub_store_seconds_total %.6f\n",
        (double)get(&m->store_us) / 1e6);
    uint64_t commits, committed;
    if (store_commit_stats(h->store, &commits, &committed) == 0) {
        counter(&o, "phyhub_store_commits_total",
                "Write transactions committed to the store (each one sync; group commit).",
                commits);
        counter(&o, "phyhub_store_committed_operations_total",
                "Store operations those commits carried.", committed);
    }
    put(&o, "# HELP phyhub_provisioning_total Provisioning and claim outcomes.\n"
            "# TYPE phyhub_provisioning_total counter\n");
    for (size_t i = 0; i < sizeof prov / sizeof prov[0]; i++)
        put(&o, "phyhub_provisioning_total{outcome=\"%s\"} %llu\n", prov[i].outcome,
            get((_Atomic uint64_t *)((char *)m + prov[i].off)));
    put(&o, "# HELP phyhub_http_requests_total Answered HTTP requests by route class.\n"
            "# TYPE phyhub_http_requests_total counter\n");
    for (int c = 0; c < ROUTE_CLASSES; c++)
        put(&o, "phyhub_http_requests_total{class=\"%s\"} %llu\n", class_names[c],
            get(&m->http_requests[c]));
    put(&o, "# HELP phyhub_http_request_duration_seconds From a request's head to its answer.\n"
            "# TYPE phyhub_http_request_duration_seconds histogram\n");
    for (int c = 0; c < ROUTE_CLASSES; c++) {
        unsigned long long cum = 0;
        for (int b = 0; b < HUB_DURATION_BUCKETS; b++) {
            cum += get(&m->http_buckets[c][b]);
            put(&o, "phyhub_http_request_duration_seconds_bucket{class=\"%s\",le=\"%g\"} %llu\n",
                class_names[c], bounds[b], cum);
        }
        put(&o,
            "phyhub_http_request_duration_seconds_bucket{class=\"%s\",le=\"+Inf\"} %llu\n"
            "phyhub_http_request_duration_seconds_sum{class=\"%s\"} %.6f\n"
            "phyhub_http_request_duration_seconds_count{class=\"%s\"} %llu\n",
            class_names[c], get(&m->http_requests[c]), class_names[c],
            (double)get(&m->http_us[c]) / 1e6, class_names[c], get(&m->http_requests[c]));
    }
    if (o.failed) {
        free(o.p);
        api_error(res, 500, "internal", "metrics buffer too small");
        return;
    }
    free(res->body);
    res->body = o.p;
    res->body_len = o.len;
    res->status = 200;
    res->content_type = "text/plain; version=0.0.4";
}
