/* The hub's HTTP API: routes requests to the provisioning and console handlers. */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "handlers.h"
#include "phy/err.h"

void api_response_free(struct api_response *res)
{
    if (!res)
        return;
    if (res->body) /* may carry device credentials */
        OPENSSL_cleanse(res->body, res->body_len);
    free(res->body);
    res->body = NULL;
    res->body_len = 0;
}

void api_error(struct api_response *res, int status, const char *code, const char *msg)
{
    json_t *o = json_pack("{s:s, s:s}", "error", code, "message", msg);
    api_json(res, status, o);
}

void api_json(struct api_response *res, int status, json_t *o)
{
    free(res->body);
    res->body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    res->status = status;
    if (!res->body) {
        static const char oom[] = "{\"error\":\"internal\",\"message\":\"out of memory\"}";
        res->status = 500;
        res->body = strdup(oom);
    }
    res->body_len = res->body ? strlen(res->body) : 0;
}

int api_parse_body(const struct api_request *req, struct api_response *res, json_t **out)
{
    if (!req->content_type || strncmp(req->content_type, "application/json", 16) != 0 ||
        (req->content_type[16] != '\0' && req->content_type[16] != ';')) {
        api_error(res, 415, "unsupported_media_type", "Content-Type must be application/json");
        return -1;
    }
    json_error_t jerr;
    json_t *o = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!o) {
        char msg[256];
        snprintf(msg, sizeof(msg), "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        api_error(res, 400, "bad_request", msg);
        return -1;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        api_error(res, 400, "bad_request", "body must be a JSON object");
        return -1;
    }
    *out = o;
    return 0;
}

int api_check_fields(json_t *o, const char *const *allowed, struct api_response *res)
{
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        int ok = 0;
        for (size_t i = 0; allowed[i]; i++)
            if (strcmp(key, allowed[i]) == 0)
                ok = 1;
        if (!ok) {
            char msg[160];
            snprintf(msg, sizeof(msg), "unknown field '%.64s'", key);
            api_error(res, 400, "bad_request", msg);
            return -1;
        }
    }
    return 0;
}

int api_get_string(json_t *o, const char *key, int required, const char **out,
                   struct api_response *res)
{
    json_t *v = json_object_get(o, key);
    char msg[160];
    *out = NULL;
    if (!v) {
        if (!required)
            return 0;
        snprintf(msg, sizeof(msg), "missing field '%s'", key);
        api_error(res, 400, "bad_request", msg);
        return -1;
    }
    if (!json_is_string(v)) {
        snprintf(msg, sizeof(msg), "field '%s' must be a string", key);
        api_error(res, 400, "bad_request", msg);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

struct route {
    const char *method;
    const char *path; /* exact path */
    int provisioning; /* only when --provisioning */
    void (*fn)(struct hub *, const struct api_request *, struct api_response *);
};

static const struct route routes[] = {
    {"POST", "/v1/provisioning/register", 1, handle_register},
    {"POST", "/v1/provisioning/code", 1, handle_code},
    {"POST", "/v1/provisioning/poll", 1, handle_poll},
    {"POST", "/api/v1/devices/claim", 0, handle_claim},
    {"GET", "/api/v1/devices", 0, handle_devices_list},
    {"GET", "/healthz", 0, handle_healthz},
};

void api_handle(struct hub *h, const struct api_request *req, struct api_response *res)
{
    memset(res, 0, sizeof(*res));
    const char *allow = NULL;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const struct route *r = &routes[i];
        if (strcmp(req->path, r->path) != 0)
            continue;
        if (r->provisioning && !h->cfg.provisioning)
            break;
        allow = r->method;
        if (strcmp(req->method, r->method) == 0) {
            r->fn(h, req, res);
            return;
        }
    }
    if (allow) {
        api_error(res, 405, "method_not_allowed", "method not allowed on this path");
        snprintf(res->extra_headers, sizeof(res->extra_headers), "Allow: %s\r\n", allow);
        return;
    }
    api_error(res, 404, "not_found", "no such endpoint");
}
