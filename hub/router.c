/* The hub's HTTP API router: the route table, sending each request to its handler
 * (provisioning, console, internal) and any other GET to the console's static files.
 * It depends on the handlers; they do not depend on it. */
#include "router.h"

#include <string.h>

#include "handlers.h"
#include "phy/text.h"
#include "region.h"

/* Patterns are literal except for whole segments "{id}" (a device ID). */
int api_path_match(const char *pattern, const char *path, char id[PHY_DEVICE_ID_LEN + 1])
{
    while (*pattern && *path) {
        if (strncmp(pattern, "{tok}", 5) == 0) { /* an API token's ID: 12 hex digits */
            size_t n = strcspn(path, "/");
            if (n != STORE_TOKEN_ID_LEN || strspn(path, "0123456789abcdef") < n)
                return 0;
            memcpy(id, path, n);
            id[n] = '\0';
            pattern += 5;
            path += n;
            continue;
        }
        if (strncmp(pattern, "{id}", 4) == 0) {
            size_t n = strcspn(path, "/");
            if (!api_device_id_valid(path, n))
                return 0;
            memcpy(id, path, n);
            id[n] = '\0';
            pattern += 4;
            path += n;
            continue;
        }
        if (*pattern != *path)
            return 0;
        pattern++;
        path++;
    }
    return *pattern == '\0' && *path == '\0';
}

/* ---- routing ---- */

typedef void (*api_fn)(struct hub *, const struct api_request *, struct api_response *);
typedef void (*api_id_fn)(struct hub *, const struct api_request *, const char *,
                          struct api_response *);

struct route {
    const char *method;
    const char *pattern; /* exact path, or with a "{id}" segment */
    int provisioning;    /* only when --provisioning */
    api_fn fn;           /* exact paths */
    api_id_fn fn_id;     /* paths with {id}: gets the device ID */
    int slow;            /* may block for long: runs in the slow lane (api_slow) */
};

#define DEV "/api/v1/devices/{id}"
static const struct route routes[] = {
    {"POST", "/v1/provisioning/register", 1, handle_register, NULL, 0},
    {"POST", "/v1/provisioning/prove", 1, handle_prove, NULL, 0},
    {"POST", "/v1/provisioning/code", 1, handle_code, NULL, 0},
    {"POST", "/v1/provisioning/poll", 1, handle_poll, NULL, 0},
    {"POST", "/api/v1/devices/claim", 0, handle_claim, NULL, 1}, /* eu, for a regional hub */
    {"GET", "/api/v1/devices", 0, handle_devices_list, NULL, 0},
    {"PATCH", "/api/v1/twins/desired", 0, handle_fleet_patch, NULL, 0},
    {"GET", DEV, 0, NULL, handle_device_get, 0},
    {"DELETE", DEV, 0, NULL, handle_device_delete, 0},
    {"PATCH", DEV, 0, NULL, handle_device_rename, 0},
    {"PATCH", DEV "/twin/desired", 0, NULL, handle_desired_patch, 0},
    {"PUT", DEV "/tags", 0, NULL, handle_tags_put, 0},
    {"POST", DEV "/revoke", 0, NULL, handle_device_revoke, 0},
    {"POST", DEV "/reset", 0, NULL, handle_device_reset, 0},
    {"GET", DEV "/status-history", 0, NULL, handle_status_history, 0},
    {"POST", "/api/v1/login", 0, handle_login, NULL, 1}, /* argon2id */
    {"POST", "/api/v1/logout", 0, handle_logout, NULL, 0},
    {"GET", "/api/v1/session", 0, handle_session, NULL, 0},
    {"GET", "/api/v1/audit", 0, handle_audit, NULL, 0},
    {"GET", "/api/v1/tokens", 0, handle_tokens_list, NULL, 0},
    {"POST", "/api/v1/tokens", 0, handle_token_create, NULL, 0},
    {"DELETE", "/api/v1/tokens/{tok}", 0, NULL, handle_token_revoke, 0},
    {"POST", "/api/v1/password", 0, handle_password, NULL, 1}, /* argon2id */
    {"GET", "/api/v1/tenant", 0, handle_tenant_get, NULL, 0},
    {"PATCH", "/api/v1/tenant", 0, handle_tenant_patch, NULL, 0},
    {"GET", "/api/v1/registrations", 0, handle_registrations, NULL, 0},
    {"POST", "/internal/v1/issuances", 1, handle_internal_issue, NULL, 0},
    {"DELETE", "/internal/v1/issuances/{id}", 1, NULL, handle_internal_purge, 0},
    {"POST", "/internal/v1/issuances/{id}/cancel", 1, NULL, handle_internal_cancel, 0},
    {"POST", "/internal/v1/serials/rearm", 1, handle_internal_rearm, NULL, 0},
    {"POST", "/internal/v1/serials", 1, handle_internal_serials, NULL, 0},
    {"GET", "/healthz", 0, handle_healthz, NULL, 0},
    {"GET", "/readyz", 0, handle_readyz, NULL, 0},
    {"GET", "/metrics", 0, handle_metrics, NULL, 0},
};
#undef DEV

int api_slow(const char *method, const char *path)
{
    char id[PHY_DEVICE_ID_LEN + 1];
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (routes[i].slow && strcmp(method, routes[i].method) == 0 &&
            api_path_match(routes[i].pattern, path, id))
            return 1;
    return 0;
}

void api_handle(struct hub *h, const struct api_request *req, struct api_response *res)
{
    char allow[64] = "";
    size_t alen = 0;
    /* HEAD is answered as GET (the server sends the head only). */
    const char *method = strcmp(req->method, "HEAD") == 0 ? "GET" : req->method;
    memset(res, 0, sizeof(*res));
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const struct route *r = &routes[i];
        char id[PHY_DEVICE_ID_LEN + 1] = "";
        if ((r->provisioning && !h->cfg.provisioning) || !api_path_match(r->pattern, req->path, id))
            continue;
        if (strcmp(method, r->method) == 0) {
            if (r->fn)
                r->fn(h, req, res);
            else
                r->fn_id(h, req, id, res);
            return;
        }
        int n = snprintf(allow + alen, sizeof(allow) - alen, "%s%s", alen ? ", " : "", r->method);
        if (n > 0 && (size_t)n < sizeof(allow) - alen)
            alen += (size_t)n;
    }
    if (alen) {
        api_error(res, 405, "method_not_allowed", "method not allowed on this path");
        snprintf(res->extra_headers, sizeof(res->extra_headers), "Allow: %s\r\n", allow);
        return;
    }
    if (strcmp(method, "GET") == 0) { /* the console's files */
        handle_static(h, req, res);
        return;
    }
    api_error(res, 404, "not_found", "no such endpoint");
}
