/* GET /metrics: the hub's counters in the Prometheus text exposition format. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"

#define METRICS_MAX 4096

static unsigned long long get(_Atomic uint64_t *m)
{
    return (unsigned long long)atomic_load_explicit(m, memory_order_relaxed);
}

void handle_metrics(struct hub *h, const struct api_request *req, struct api_response *res)
{
    struct hub_metrics *m = &h->metrics;
    (void)req;
    char *out = malloc(METRICS_MAX);
    if (!out) {
        api_error(res, 500, "internal", "out of memory");
        return;
    }
    int n = snprintf(
        out, METRICS_MAX,
        "# HELP phyhub_sessions Live device sessions.\n"
        "# TYPE phyhub_sessions gauge\n"
        "phyhub_sessions{region=\"%s\"} %llu\n"
        "# HELP phyhub_ws_messages_received_total Device messages received.\n"
        "# TYPE phyhub_ws_messages_received_total counter\n"
        "phyhub_ws_messages_received_total %llu\n"
        "# HELP phyhub_ws_messages_sent_total Messages sent to devices.\n"
        "# TYPE phyhub_ws_messages_sent_total counter\n"
        "phyhub_ws_messages_sent_total %llu\n"
        "# HELP phyhub_auth_failures_total Refused device or console credentials.\n"
        "# TYPE phyhub_auth_failures_total counter\n"
        "phyhub_auth_failures_total %llu\n"
        "# HELP phyhub_http_requests_total HTTP requests handled.\n"
        "# TYPE phyhub_http_requests_total counter\n"
        "phyhub_http_requests_total %llu\n"
        "# HELP phyhub_store_operations_total Requests and device messages that used the store.\n"
        "# TYPE phyhub_store_operations_total counter\n"
        "phyhub_store_operations_total %llu\n"
        "# HELP phyhub_store_seconds_total Time spent in those store operations.\n"
        "# TYPE phyhub_store_seconds_total counter\n"
        "phyhub_store_seconds_total %.6f\n"
        "# HELP phyhub_provisioning_total Provisioning outcomes.\n"
        "# TYPE phyhub_provisioning_total counter\n"
        "phyhub_provisioning_total{outcome=\"registered\"} %llu\n"
        "phyhub_provisioning_total{outcome=\"code\"} %llu\n"
        "phyhub_provisioning_total{outcome=\"slow_down\"} %llu\n"
        "phyhub_provisioning_total{outcome=\"claimed\"} %llu\n"
        "phyhub_provisioning_total{outcome=\"claim_failed\"} %llu\n"
        "phyhub_provisioning_total{outcome=\"delivered\"} %llu\n"
        "phyhub_provisioning_total{outcome=\"registration_evicted\"} %llu\n"
        "phyhub_provisioning_total{outcome=\"rate_limited\"} %llu\n"
        "phyhub_provisioning_total{outcome=\"registrations_full\"} %llu\n",
        h->cfg.region, get(&m->sessions), get(&m->ws_msgs_in), get(&m->ws_msgs_out),
        get(&m->auth_failures), get(&m->requests), get(&m->store_ops),
        (double)get(&m->store_us) / 1e6, get(&m->prov_registered), get(&m->prov_codes),
        get(&m->prov_slow_down), get(&m->prov_claimed), get(&m->prov_claim_failed),
        get(&m->prov_delivered), get(&m->prov_evicted), get(&m->prov_rate_limited),
        get(&m->prov_full));
    if (n < 0 || n >= METRICS_MAX) {
        free(out);
        api_error(res, 500, "internal", "metrics buffer too small");
        return;
    }
    free(res->body);
    res->body = out;
    res->body_len = (size_t)n;
    res->status = 200;
    res->content_type = "text/plain; version=0.0.4";
}
