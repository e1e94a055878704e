/* Console API (PROTOCOL.md section 4): API-token auth, claims, device listing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "handlers.h"
#include "phy/crypto.h"
#include "phy/err.h"
#include "phy/log.h"

#define NAME_MAX_BYTES 64
#define TAGS_MAX 32
#define TAG_KEY_MAX 64
#define TAG_VALUE_MAX 128
#define LIST_DEFAULT 100
#define LIST_MAX 500
#define BEARER "Bearer "

int api_auth(struct hub *h, const struct api_request *req, struct api_response *res,
             struct api_caller *caller)
{
    const char *a = req->authorization;
    if (!a || strncmp(a, BEARER, strlen(BEARER)) != 0 || strlen(a + strlen(BEARER)) == 0 ||
        strlen(a + strlen(BEARER)) > 128) {
        api_error(res, 401, "unauthorized", "missing or malformed Authorization: Bearer token");
        snprintf(res->extra_headers, sizeof(res->extra_headers),
                 "WWW-Authenticate: Bearer realm=\"phystack\"\r\n");
        return -1;
    }
    const char *token = a + strlen(BEARER);
    char hash[PHY_HASH_HEX_LEN + 1];
    int outcome;
    if (phy_sha256_hex(token, strlen(token), hash) < 0 ||
        h->store_ops->token_auth(h->store, hash, &caller->tenant_id, &caller->user_id,
                                 caller->tenant, caller->region, &outcome) < 0) {
        api_error(res, 503, "store_unavailable", "the store failed; retry later");
        return -1;
    }
    if (outcome != STORE_OK) {
        api_error(res, 401, "unauthorized", "unknown API token");
        snprintf(res->extra_headers, sizeof(res->extra_headers),
                 "WWW-Authenticate: Bearer realm=\"phystack\"\r\n");
        return -1;
    }
    return 0;
}

static void rfc3339(int64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

json_t *api_device_json(const struct store_device *d)
{
    char created[32];
    rfc3339(d->created_ms, created);
    json_t *tags = json_loads(d->tags_json ? d->tags_json : "{}", 0, NULL);
    if (!tags)
        tags = json_object();
    return json_pack("{s:s, s:s, s:s?, s:o, s:s, s:s, s:n, s:n, s:s}", "device_id", d->device_id,
                     "serial", d->serial, "name", d->name[0] ? d->name : NULL, "tags", tags,
                     "state", d->state, "presence", "offline", "last_seen", "last_status",
                     "created_at", created);
}

static int valid_tag_key(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > TAG_KEY_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = k[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

/* Validates optional name and tags; on success *tags_json is malloc'd text. */
static int claim_extras(json_t *body, const char **name, char **tags_json, struct api_response *res)
{
    if (api_get_string(body, "name", 0, name, res) < 0)
        return -1;
    if (*name && (strlen(*name) > NAME_MAX_BYTES || has_control(*name))) {
        api_error(res, 400, "bad_request",
                  "name must be at most 64 bytes without control characters");
        return -1;
    }
    json_t *tags = json_object_get(body, "tags");
    if (!tags) {
        *tags_json = strdup("{}");
        return *tags_json ? 0 : -1;
    }
    if (!json_is_object(tags) || json_object_size(tags) > TAGS_MAX) {
        api_error(res, 400, "bad_request", "tags must be an object of at most 32 entries");
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(tags, k, v)
    {
        if (!valid_tag_key(k) || !json_is_string(v) ||
            strlen(json_string_value(v)) > TAG_VALUE_MAX || has_control(json_string_value(v))) {
            api_error(
                res, 400, "bad_request",
                "tag keys are 1-64 of A-Z a-z 0-9 . _ -, values strings of at most 128 bytes");
            return -1;
        }
    }
    *tags_json = json_dumps(tags, JSON_COMPACT | JSON_SORT_KEYS);
    return *tags_json ? 0 : -1;
}

struct seal_ctx {
    struct hub *h;
    const char *device_id;
    const char *secret;
    const char *tenant;
};

/* Builds and seals the exact 200 poll answer the device will receive. */
static unsigned char *seal_issuance(void *ctx, const char *serial, size_t *out_len)
{
    struct seal_ctx *s = ctx;
    (void)serial;
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "status", "provisioned", "device_id",
                          s->device_id, "device_secret", s->secret, "tenant", s->tenant, "region",
                          s->h->cfg.region, "endpoint", s->h->cfg.public_endpoint);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    unsigned char *out = malloc(n + PHY_AEAD_OVERHEAD);
    int r = out ? phy_aead_seal(s->h->issuance_key, s->device_id, strlen(s->device_id), text, n,
                                out, n + PHY_AEAD_OVERHEAD)
                : PHY_ENOMEM;
    OPENSSL_cleanse(text, n);
    free(text);
    if (r < 0) {
        free(out);
        return NULL;
    }
    *out_len = (size_t)r;
    return out;
}

static int claim_throttled(struct hub *h, const struct api_caller *c, struct api_response *res)
{
    int user_n = 0, tenant_n = 0;
    int64_t since = hub_now_ms() - h->cfg.claim_window_s * 1000;
    if (h->store_ops->claim_failure_count(h->store, c->tenant_id, c->user_id, since, &user_n,
                                          &tenant_n) < 0) {
        api_error(res, 503, "store_unavailable", "the store failed; retry later");
        return 1;
    }
    if (user_n >= h->cfg.claim_user_limit || tenant_n >= h->cfg.claim_tenant_limit) {
        api_error(res, 429, "too_many_attempts",
                  "too many failed claims; wait before trying again");
        snprintf(res->extra_headers, sizeof(res->extra_headers), "Retry-After: %ld\r\n",
                 h->cfg.claim_window_s);
        return 1;
    }
    return 0;
}

void handle_claim(struct hub *h, const struct api_request *req, struct api_response *res)
{
    static const char *const fields[] = {"serial", "code", "name", "tags", NULL};
    struct api_caller caller;
    json_t *body = NULL;
    char *tags_json = NULL;
    const char *serial, *code_in, *name;
    char code[PHY_CODE_LEN + 1];
    struct store_device dev;
    memset(&dev, 0, sizeof(dev));

    if (api_auth(h, req, res, &caller) < 0 || claim_throttled(h, &caller, res))
        return;
    if (api_parse_body(req, res, &body) < 0)
        return;
    if (api_check_fields(body, fields, res) < 0 ||
        api_get_string(body, "serial", 0, &serial, res) < 0 ||
        api_get_string(body, "code", 0, &code_in, res) < 0 ||
        claim_extras(body, &name, &tags_json, res) < 0)
        goto out;
    if ((serial == NULL) == (code_in == NULL)) {
        api_error(res, 400, "bad_request", "give exactly one of 'serial' or 'code'");
        goto out;
    }
    if (serial && !phy_serial_valid(serial, strlen(serial))) {
        api_error(res, 400, "bad_request", "serial must be 1-64 characters of A-Z a-z 0-9 . _ -");
        goto out;
    }
    if (code_in && phy_code_normalize(code_in, strlen(code_in), code) < 0) {
        api_error(res, 400, "bad_request", "a code is 6 characters of " PHY_CODE_ALPHABET);
        goto out;
    }

    char device_id[PHY_DEVICE_ID_LEN + 1], secret[PHY_TOKEN_LEN + 1];
    char secret_hash[PHY_HASH_HEX_LEN + 1];
    if (phy_device_id_new(device_id) < 0 || phy_token_new(secret) < 0 ||
        phy_sha256_hex(secret, PHY_TOKEN_LEN, secret_hash) < 0) {
        api_error(res, 500, "internal", "random source failed");
        goto out;
    }
    struct seal_ctx sc = {h, device_id, secret, caller.tenant};
    struct store_claim c = {
        .tenant_id = caller.tenant_id,
        .user_id = caller.user_id,
        .serial = serial,
        .code = code_in ? code : NULL,
        .device_id = device_id,
        .secret_hash = secret_hash,
        .name = name,
        .tags_json = tags_json,
        .seal = seal_issuance,
        .seal_ctx = &sc,
    };
    struct store_prov_params p;
    hub_prov_params(h, hub_now_ms(), &p);
    int outcome;
    int rc = h->store_ops->claim(h->store, &p, &c, &dev, &outcome);
    OPENSSL_cleanse(secret, sizeof(secret));
    if (rc < 0) {
        api_error(res, 503, "store_unavailable", "the claim could not be stored; retry");
        goto out;
    }
    snprintf(res->log, sizeof(res->log), "tenant=%s by=%s outcome=%d", caller.tenant,
             serial ? "serial" : "code", outcome);
    switch (outcome) {
    case STORE_OK:
        snprintf(res->log, sizeof(res->log), "tenant=%s by=%s device_id=%s serial=%s",
                 caller.tenant, serial ? "serial" : "code", dev.device_id, dev.serial);
        api_json(res, 201, api_device_json(&dev));
        break;
    case STORE_EXPIRED_CODE:
    case STORE_UNKNOWN_SERIAL:
        h->store_ops->claim_failure_add(h->store, caller.tenant_id, caller.user_id, hub_now_ms());
        if (outcome == STORE_EXPIRED_CODE)
            api_error(res, 404, "expired_code", "no device shows this code (expired or mistyped)");
        else
            api_error(res, 404, "unknown_serial", "no device with this serial is waiting");
        break;
    case STORE_SERIAL_IN_USE:
        api_error(res, 409, "serial_in_use",
                  "more than one device registers this serial; enter the code shown on the "
                  "device's screen instead");
        break;
    case STORE_ALREADY_CLAIMED:
        api_error(res, 409, "already_claimed", "this device has already been claimed");
        break;
    default:
        api_error(res, 500, "internal", "unexpected store outcome");
    }
out:
    free(dev.tags_json);
    free(tags_json);
    json_decref(body);
}

/* Reads "name=value" from a query string into out (cap); 1 when present. */
static int query_param(const char *q, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    while (q && *q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        if (len > nl && strncmp(q, name, nl) == 0 && q[nl] == '=') {
            size_t vl = len - nl - 1;
            if (vl >= cap)
                return -1;
            memcpy(out, q + nl + 1, vl);
            out[vl] = '\0';
            return 1;
        }
        q = amp ? amp + 1 : NULL;
    }
    return 0;
}

void handle_devices_list(struct hub *h, const struct api_request *req, struct api_response *res)
{
    struct api_caller caller;
    char limit_s[8], after[PHY_DEVICE_ID_LEN + 1];
    long limit = LIST_DEFAULT;
    if (api_auth(h, req, res, &caller) < 0)
        return;
    int r = query_param(req->query, "limit", limit_s, sizeof(limit_s));
    if (r < 0) {
        api_error(res, 400, "bad_request", "limit must be 1-500");
        return;
    }
    if (r == 1) {
        char *end;
        limit = strtol(limit_s, &end, 10);
        if (*end || end == limit_s || limit < 1 || limit > LIST_MAX) {
            api_error(res, 400, "bad_request", "limit must be 1-500");
            return;
        }
    }
    r = query_param(req->query, "after", after, sizeof(after));
    if (r < 0) {
        api_error(res, 400, "bad_request", "after must be a device ID");
        return;
    }
    struct store_device *devs = NULL;
    size_t n = 0;
    if (h->store_ops->devices_list(h->store, caller.tenant_id, r == 1 ? after : NULL, (int)limit,
                                   &devs, &n) < 0) {
        api_error(res, 503, "store_unavailable", "the store failed; retry later");
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, api_device_json(&devs[i]));
    json_t *next = n == (size_t)limit ? json_string(devs[n - 1].device_id) : json_null();
    api_json(res, 200, json_pack("{s:o, s:o}", "devices", arr, "next", next));
    store_devices_free(devs, n);
}

void handle_healthz(struct hub *h, const struct api_request *req, struct api_response *res)
{
    (void)req;
    api_json(res, 200, json_pack("{s:s, s:s}", "status", "ok", "region", h->cfg.region));
}
