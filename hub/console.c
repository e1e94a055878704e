/* Console API (PROTOCOL.md section 4): API-token and session-cookie auth, the claim
 * request (checks, throttle, replay; the claim itself is claim.c's), device listing,
 * twins, tags, revoke/reset/delete, audit log, status history. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "claim.h"
#include "handlers.h"
#include "rules.h"
#include "phy/json.h"
#include "phy/protocol.h"
#include "phy/text.h"
#include "phy/crypto.h"
#include "phy/err.h"
#include "phy/log.h"
#include "phy/twin.h"

#define LIST_DEFAULT 100
#define LIST_MAX 500
#define BEARER "Bearer "

#define COOKIE_NAME API_SESSION_COOKIE
#define COOKIE_MAX 4096

static void unauthorized(struct api_response *res, const char *msg)
{
    api_error(res, 401, "unauthorized", msg);
    snprintf(res->extra_headers, sizeof(res->extra_headers),
             "WWW-Authenticate: Bearer realm=\"phystack\"\r\n");
}

static int bearer_auth(struct hub *h, const char *a, struct api_response *res,
                       struct api_caller *caller)
{
    if (strncmp(a, BEARER, strlen(BEARER)) != 0 || strlen(a + strlen(BEARER)) == 0 ||
        strlen(a + strlen(BEARER)) > 128) {
        unauthorized(res, "missing or malformed Authorization: Bearer token");
        return -1;
    }
    const char *token = a + strlen(BEARER);
    char hash[PHY_HASH_HEX_LEN + 1];
    int outcome;
    if (phy_sha256_hex(token, strlen(token), hash) < 0 ||
        h->store_ops->token_auth(h->store, hash, hub_now_ms(), &caller->tenant_id,
                                 &caller->user_id, caller->tenant, caller->region,
                                 &outcome) < 0) {
        api_store_failed(res);
        return -1;
    }
    if (outcome != STORE_OK) {
        hub_metric_add(&h->metrics.auth_failures, 1);
        unauthorized(res, "unknown, expired or revoked API token");
        return -1;
    }
    return 0;
}

static int base64url_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* Finds the session cookie in a Cookie header: pairs separated by ";" (spaces
 * around them ignored, as browsers and RFC 6265 section 5.4 do). Other cookies of
 * the site are not this hub's business: a pair that is not well-formed is skipped,
 * only ours is checked. 1 with *value (borrowed, PHY_TOKEN_LEN base64url characters)
 * when ours is present and well-formed (twice only with the same value); else 0.
 * The __Host- prefix means no other host of the site can have set it. */
static int session_cookie(const char *hdr, const char **value)
{
    const char *p = hdr, *found = NULL;
    size_t nlen = strlen(COOKIE_NAME);
    if (!hdr || strlen(hdr) > COOKIE_MAX)
        return 0;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        const char *pair = p;
        while (*p && *p != ';')
            p++;
        size_t len = (size_t)(p - pair);
        while (len > 0 && (pair[len - 1] == ' ' || pair[len - 1] == '\t'))
            len--;
        if (len <= nlen || memcmp(pair, COOKIE_NAME, nlen) != 0 || pair[nlen] != '=')
            continue;
        const char *v = pair + nlen + 1;
        size_t vlen = len - nlen - 1;
        if (vlen != PHY_TOKEN_LEN)
            return 0;
        for (size_t i = 0; i < vlen; i++)
            if (!base64url_char(v[i]))
                return 0;
        if (found && memcmp(found, v, PHY_TOKEN_LEN) != 0)
            return 0; /* two different sessions: neither */
        found = v;
    }
    if (!found)
        return 0;
    *value = found;
    return 1;
}

static int cookie_auth(struct hub *h, const struct api_request *req, struct api_response *res,
                       struct api_caller *caller)
{
    const char *value;
    if (!session_cookie(req->cookie, &value) || !h->store_ops->console_session_auth) {
        unauthorized(res, "log in, or send Authorization: Bearer <API token>");
        return -1;
    }
    struct store_session sess;
    int outcome = STORE_NOT_FOUND;
    int64_t now = hub_now_ms();
    /* An open event stream, or a request the console made without a user action,
     * is not a use: a console tab left open must still end. */
    int touch = strcmp(req->path, "/api/v1/events") != 0 && !req->background;
    memset(&sess, 0, sizeof(sess));
    if (phy_sha256_hex(value, PHY_TOKEN_LEN, caller->session_hash) < 0 ||
        h->store_ops->console_session_auth(h->store, caller->session_hash, now,
                                           h->cfg.session_idle_s * 1000,
                                           h->cfg.session_max_s * 1000, touch, &sess,
                                           &outcome) < 0) {
        api_store_failed(res);
        return -1;
    }
    if (outcome != STORE_OK) {
        unauthorized(res, "the session has ended; log in again");
        return -1;
    }
    caller->cookie = 1;
    int64_t idle_end = (touch ? now : sess.last_used_ms) + h->cfg.session_idle_s * 1000;
    int64_t max_end = sess.created_ms + h->cfg.session_max_s * 1000;
    caller->session_deadline_ms = idle_end < max_end ? idle_end : max_end;
    caller->tenant_id = sess.tenant_id;
    caller->user_id = sess.user_id;
    snprintf(caller->tenant, sizeof(caller->tenant), "%s", sess.tenant);
    snprintf(caller->user, sizeof(caller->user), "%s", sess.user);
    snprintf(caller->region, sizeof(caller->region), "%s", sess.region);
    snprintf(caller->csrf, sizeof(caller->csrf), "%s", sess.csrf);
    /* A browser sends the cookie with any request a page makes to this origin; only
     * the console's own script can read the CSRF token and send it back. */
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        const char *t = req->csrf_token;
        size_t n = strlen(caller->csrf);
        if (!t || n == 0 || strlen(t) != n || CRYPTO_memcmp(t, caller->csrf, n) != 0) {
            api_error(res, 403, "csrf_failed",
                      "missing or wrong X-CSRF-Token (the csrf_token of the session)");
            return -1;
        }
    }
    return 0;
}

int api_auth(struct hub *h, const struct api_request *req, struct api_response *res,
             struct api_caller *caller)
{
    memset(caller, 0, sizeof(*caller));
    if (req->authorization) /* Bearer wins when both are sent */
        return bearer_auth(h, req->authorization, res, caller);
    return cookie_auth(h, req, res, caller);
}

void api_audit(struct hub *h, int64_t tenant_id, int64_t user_id, const char *action,
               const char *device_id, json_t *detail)
{
    if (!h->store_ops->audit_add) { /* a store without an audit log (unit tests' fakes) */
        json_decref(detail);
        return;
    }
    char *text = detail ? phy_json_dumps(detail, JSON_COMPACT) : NULL;
    int rc = PHY_ENOMEM;
    if (text || !detail)
        rc = h->store_ops->audit_add(h->store, tenant_id, user_id, hub_now_ms(), action, device_id,
                                     text);
    if (rc < 0)
        phy_log(PHY_LOG_WARN, "audit_failed", "action=%s device_id=%s rc=%d", action,
                device_id ? device_id : "-", rc);
    free(text);
    json_decref(detail);
}

void api_rfc3339(int64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

json_t *api_time_json(int64_t ms)
{
    char t[32];
    if (ms <= 0)
        return json_null();
    api_rfc3339(ms, t);
    return json_string(t);
}

/* Parses stored JSON object text; NULL text or unparsable is null (never fails). */
static json_t *stored_json(const char *text, int object_default)
{
    json_t *v = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    if (!v)
        v = object_default ? json_object() : json_null();
    return v;
}

json_t *api_device_json(const struct store_device *d)
{
    char created[32];
    api_rfc3339(d->created_ms, created);
    return json_pack("{s:s, s:s, s:s?, s:o, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:s}", "device_id",
                     d->device_id, "serial", d->serial, "name", d->name[0] ? d->name : NULL, "tags",
                     stored_json(d->tags_json, 1), "state", d->state, "presence",
                     d->online ? "online" : "offline", "last_seen", api_time_json(d->last_seen_ms),
                     "connected_at", api_time_json(d->connected_ms), "disconnected_at",
                     api_time_json(d->disconnected_ms), "last_status",
                     stored_json(d->last_status_json, 0), "last_status_at",
                     api_time_json(d->last_status_ms), "created_at", created);
}

static int tags_validate(json_t *tags, char **tags_json, struct api_response *res);

/* A device name (claim, rename): at most 64 bytes without control characters. 0,
 * or -1 with a 400 in res. */
static int name_check(const char *name, struct api_response *res)
{
    if (!store_name_ok(name)) {
        api_error(res, 400, "bad_request",
                  "name must be at most 64 bytes without control characters");
        return -1;
    }
    return 0;
}

/* Validates optional name and tags; on success *tags_json is malloc'd text. 0, or -1
 * with res answered (400, 500). */
static int claim_extras(json_t *body, const char **name, char **tags_json, struct api_response *res)
{
    if (api_get_string(body, "name", 0, name, res) < 0)
        return -1;
    if (*name && name_check(*name, res) < 0)
        return -1;
    json_t *tags = json_object_get(body, "tags");
    if (!tags) {
        *tags_json = strdup("{}");
        if (!*tags_json) {
            api_error(res, 500, "internal", "out of memory");
            return -1;
        }
        return 0;
    }
    return tags_validate(tags, tags_json, res);
}

/* Checks a tags object (at most 32 string values, keys [A-Za-z0-9._-]{1,64}, values
 * at most 128 bytes without control characters); *tags_json gets its compact,
 * key-sorted text (malloc'd). -1 with a 400 (or 500) in res otherwise. */
static int tags_validate(json_t *tags, char **tags_json, struct api_response *res)
{
    if (!json_is_object(tags) || json_object_size(tags) > STORE_TAGS_MAX) {
        api_error(res, 400, "bad_request", "tags must be an object of at most 32 entries");
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(tags, k, v)
    {
        if (!store_tag_key_ok(k) || !json_is_string(v) ||
            !store_tag_value_ok(json_string_value(v))) {
            api_error(
                res, 400, "bad_request",
                "tag keys are 1-64 of A-Z a-z 0-9 . _ -, values strings of at most 128 bytes");
            return -1;
        }
    }
    *tags_json = phy_json_dumps(tags, JSON_COMPACT | JSON_SORT_KEYS);
    if (!*tags_json) {
        api_error(res, 500, "internal", "out of memory");
        return -1;
    }
    return 0;
}

/* Starts one throttled claim attempt: counts as a failure until forgiven, so that
 * concurrent guesses cannot overshoot the limits. 0, or -1 with res answered
 * (429/503). */
static int claim_attempt(struct hub *h, const struct api_caller *c, int64_t *attempt_id,
                         struct api_response *res)
{
    int64_t now = hub_now_ms();
    int allowed = 0;
    if (h->store_ops->claim_attempt_begin(
            h->store, c->tenant_id, c->user_id, now, now - h->cfg.claim_window_s * 1000,
            (int)h->cfg.claim_user_limit, (int)h->cfg.claim_tenant_limit, &allowed,
            attempt_id) < 0) {
        api_store_failed(res);
        return -1;
    }
    if (!allowed) {
        api_error_retry(res, 429, "too_many_attempts",
                        "too many failed claims; wait before trying again", h->cfg.claim_window_s);
        return -1;
    }
    return 0;
}

/* A claim whose answer was lost is retried: the same user, the same serial or
 * code, within API_CLAIM_REPLAY_MS of the first. It gets the device it created
 * (200) instead of already_claimed: -1 with res answered so, else 0. */
static int claim_replayed(struct hub *h, const struct api_caller *caller, const char *serial,
                          const char *code, struct store_device *dev, struct api_response *res)
{
    char key[STORE_CLAIM_KEY_MAX + 1];
    int outcome = STORE_NOT_FOUND;
    if (caller->user_id <= 0 || store_claim_key(serial, code, key, sizeof(key)) != 0 ||
        h->store_ops->claim_replay(h->store, caller->tenant_id, caller->user_id, key,
                                   hub_now_ms() - API_CLAIM_REPLAY_MS, dev, &outcome) < 0 ||
        outcome != STORE_OK)
        return 0;
    snprintf(res->log, sizeof(res->log), "tenant=%s by=%s device_id=%s serial=%s replayed=1",
             caller->tenant, serial ? "serial" : "code", dev->device_id, dev->serial);
    api_json(res, 200, api_device_json(dev));
    return -1;
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

    if (api_auth(h, req, res, &caller) < 0)
        return;
    /* A tenant of another region cannot be served here: its data stays in its region. */
    if (strcmp(caller.region, h->cfg.region) != 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "tenant %s lives in region %s; this hub serves %s",
                 caller.tenant, caller.region, h->cfg.region);
        api_error(res, 409, "wrong_region", msg);
        return;
    }
    if (api_parse_body(req, res, &body) < 0)
        return;
    if (api_check_fields(body, fields, res) < 0 ||
        api_get_string(body, "serial", 0, &serial, res) < 0 ||
        api_get_string(body, "code", 0, &code_in, res) < 0 ||
        claim_extras(body, &name, &tags_json, res) < 0)
        goto out;
    if (claim_key_check(serial, code_in, code, res) < 0)
        goto out;

    char device_id[PHY_DEVICE_ID_LEN + 1], secret[PHY_TOKEN_LEN + 1];
    char secret_hash[PHY_HASH_HEX_LEN + 1];
    if (phy_device_id_new(device_id) < 0 || phy_token_new(secret) < 0 ||
        phy_sha256_hex(secret, PHY_TOKEN_LEN, secret_hash) < 0) {
        api_error(res, 500, "internal", "random source failed");
        goto out;
    }
    struct claim_request c = {
        .tenant_id = caller.tenant_id,
        .user_id = caller.user_id,
        .tenant = caller.tenant,
        .serial = serial,
        .code = code_in ? code : NULL,
        .device_id = device_id,
        .secret = secret,
        .secret_hash = secret_hash,
        .name = name,
        .tags_json = tags_json,
    };
    if (serial) {
        int got = STORE_NOT_FOUND;
        if (h->store_ops->tenant_serial_claims(h->store, caller.tenant_id, &c.serial_claims,
                                               &got) < 0 ||
            got != STORE_OK) {
            OPENSSL_cleanse(secret, sizeof(secret));
            api_store_failed(res);
            goto out;
        }
    }
    /* Throttled after validation: a malformed request cannot match and is not counted. */
    int64_t attempt_id = 0;
    if (claim_attempt(h, &caller, &attempt_id, res) < 0) {
        OPENSSL_cleanse(secret, sizeof(secret));
        goto out;
    }
    int outcome = STORE_OK;
    snprintf(res->log, sizeof(res->log), "tenant=%s by=%s", caller.tenant,
             serial ? "serial" : "code");
    int rc = claim_issue(h, &c, &dev, &outcome, res);
    OPENSSL_cleanse(secret, sizeof(secret));
    if (rc != 0 || (outcome != STORE_EXPIRED_CODE && outcome != STORE_UNKNOWN_SERIAL))
        h->store_ops->claim_attempt_forgive(h->store, attempt_id); /* not a failed guess */
    if (rc < 0)
        goto out;
    snprintf(res->log, sizeof(res->log), "tenant=%s by=%s outcome=%d", caller.tenant,
             serial ? "serial" : "code", outcome);
    if (outcome == STORE_ALREADY_CLAIMED &&
        claim_replayed(h, &caller, serial, c.code, &dev, res) < 0)
        goto out;
    switch (outcome) {
    case STORE_OK:
        snprintf(res->log, sizeof(res->log), "tenant=%s by=%s device_id=%s serial=%s",
                 caller.tenant, serial ? "serial" : "code", dev.device_id, dev.serial);
        api_json(res, 201, api_device_json(&dev));
        api_state_event(res, caller.tenant_id, dev.device_id, dev.state);
        api_audit(h, caller.tenant_id, caller.user_id, "device.claim", dev.device_id,
                  json_pack("{s:s, s:s}", "serial", dev.serial, "by", serial ? "serial" : "code"));
        hub_metric_add(&h->metrics.prov_claimed, 1);
        break;
    default:
        hub_metric_add(&h->metrics.prov_claim_failed, 1);
        claim_refused(res, outcome);
    }
out:
    store_device_clear(&dev);
    free(tags_json);
    json_decref(body);
}

static void no_device(struct api_response *res)
{
    api_error(res, 404, "not_found", "no such device");
}

/* After a store operation on one device (rc, *outcome): 0 when it was done, or -1
 * answered: 503 when the store failed, 404 when the tenant has no such device. */
static int device_done(int rc, const int *outcome, struct api_response *res)
{
    if (rc < 0) {
        api_store_failed(res);
        return -1;
    }
    if (*outcome != STORE_OK) {
        no_device(res);
        return -1;
    }
    return 0;
}

/* "K:V" (decoded) -> key and value; the key is a tag key, the value a tag value. */
static int parse_tag_filter(char *kv, const char **key, const char **value)
{
    char *colon = strchr(kv, ':');
    if (!colon)
        return -1;
    *colon = '\0';
    *key = kv;
    *value = colon + 1;
    if (!store_tag_key_ok(kv) || !store_tag_value_ok(*value) ||
        !phy_utf8_valid(*value, strlen(*value)))
        return -1;
    return 0;
}

/* Reads ?tag=K:V into buf; 1 when present, 0 absent, -1 with a 400 in res. */
static int tag_param(const struct api_request *req, char *buf, size_t cap, const char **key,
                     const char **value, struct api_response *res)
{
    int r = api_query_param(req->query, "tag", buf, cap);
    if (r == 0)
        return 0;
    if (r < 0 || parse_tag_filter(buf, key, value) < 0) {
        api_error(res, 400, "bad_request",
                  "tag must be K:V with K 1-64 of A-Z a-z 0-9 . _ - and V at most 128 bytes "
                  "(percent-encoded)");
        return -1;
    }
    return 1;
}

void handle_devices_list(struct hub *h, const struct api_request *req, struct api_response *res)
{
    static const char *const params[] = {"presence", "tag", "limit", "after", NULL};
    struct api_caller caller;
    char limit_s[8], after[PHY_DEVICE_ID_LEN + 1], presence[16];
    char tag[STORE_TAG_KEY_MAX + STORE_TAG_VALUE_MAX + 2];
    struct store_device_filter f = {-1, NULL, NULL};
    long limit = LIST_DEFAULT;
    int r;

    if (api_auth(h, req, res, &caller) < 0)
        return;
    if (api_query_check(req->query, params) < 0) {
        api_error(res, 400, "bad_request",
                  "malformed query or unknown parameter (known: presence, tag, limit, after)");
        return;
    }
    r = api_query_param(req->query, "limit", limit_s, sizeof(limit_s));
    if (r == 1) {
        char *end;
        limit = strtol(limit_s, &end, 10);
        if (*end || end == limit_s || limit_s[0] < '0' || limit_s[0] > '9')
            r = -1;
    }
    if (r < 0 || limit < 1 || limit > LIST_MAX) {
        api_error(res, 400, "bad_request", "limit must be 1-500");
        return;
    }
    r = api_query_param(req->query, "after", after, sizeof(after));
    if (r < 0 || (r == 1 && !api_device_id_valid(after, strlen(after)))) {
        api_error(res, 400, "bad_request", "after must be a device ID");
        return;
    }
    int has_after = r == 1;
    r = api_query_param(req->query, "presence", presence, sizeof(presence));
    if (r == 1 && strcmp(presence, "online") == 0)
        f.presence = 1;
    else if (r == 1 && strcmp(presence, "offline") == 0)
        f.presence = 0;
    else if (r != 0) {
        api_error(res, 400, "bad_request", "presence must be online or offline");
        return;
    }
    if (tag_param(req, tag, sizeof(tag), &f.tag_key, &f.tag_value, res) < 0)
        return;

    struct store_device *devs = NULL;
    size_t n = 0;
    if (h->store_ops->devices_list(h->store, caller.tenant_id, &f, has_after ? after : NULL,
                                   (int)limit, &devs, &n) < 0) {
        api_store_failed(res);
        return;
    }
    snprintf(res->log, sizeof(res->log), "tenant=%s count=%zu", caller.tenant, n);
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        if (json_array_append_new(arr, api_device_json(&devs[i])) < 0) {
            json_decref(arr);
            arr = NULL;
        }
    json_t *next = n > 0 && n == (size_t)limit ? json_string(devs[n - 1].device_id) : json_null();
    api_json(res, 200, arr ? json_pack("{s:o, s:o}", "devices", arr, "next", next) : NULL);
    store_devices_free(devs, n);
}

/* The device (with the tenant check): 0 found, or -1 with res answered (404, 503). */
static int load_device(struct hub *h, const struct api_caller *caller, const char *id,
                       struct store_device *d, struct store_twin *t, struct api_response *res)
{
    int outcome;
    if (device_done(h->store_ops->device_get(h->store, caller->tenant_id, id, d, t, &outcome),
                    &outcome, res) < 0)
        return -1;
    return 0;
}

static void device_log(struct api_response *res, const struct api_caller *caller, const char *id,
                       const char *what)
{
    snprintf(res->log, sizeof(res->log), "tenant=%s device_id=%s%s%s", caller->tenant, id,
             what[0] ? " " : "", what);
}

/* Answers 200 with the device as it is now (after a change). */
static void answer_device(struct hub *h, const struct api_caller *caller, const char *id,
                          struct api_response *res)
{
    struct store_device d;
    memset(&d, 0, sizeof(d));
    if (load_device(h, caller, id, &d, NULL, res) == 0)
        api_json(res, 200, api_device_json(&d));
    store_device_clear(&d);
}

void handle_device_get(struct hub *h, const struct api_request *req, const char *id,
                       struct api_response *res)
{
    struct api_caller caller;
    struct store_device d;
    struct store_twin t;
    memset(&d, 0, sizeof(d));
    memset(&t, 0, sizeof(t));
    if (api_auth(h, req, res, &caller) < 0)
        return;
    device_log(res, &caller, id, "");
    if (load_device(h, &caller, id, &d, &t, res) < 0)
        goto out;
    json_t *o = api_device_json(&d);
    json_t *twin = json_pack("{s:o, s:I, s:o, s:I, s:o}", "desired", stored_json(t.desired, 1),
                             "desired_version", (json_int_t)t.desired_version, "reported",
                             stored_json(t.reported, 1), "reported_version",
                             (json_int_t)t.reported_version, "tags", stored_json(t.tags, 1));
    if (o && twin && json_object_set_new(o, "twin", twin) == 0) {
        api_json(res, 200, o);
    } else {
        json_decref(o);
        json_decref(twin);
        api_json(res, 500, NULL);
    }
out:
    store_device_clear(&d);
    store_twin_free(&t);
}

/* Queues the desired.patch push of one device; a failure only loses the push (the
 * device catches up from its next twin.get), so it is logged, not answered. */
static void push_effect(struct api_response *res, const char *id, int64_t version)
{
    struct api_effect e;
    memset(&e, 0, sizeof(e));
    e.kind = API_EFFECT_PUSH_DESIRED;
    snprintf(e.device_id, sizeof(e.device_id), "%s", id);
    e.version = version;
    if (api_add_effect(res, &e) < 0)
        phy_log(PHY_LOG_ERROR, "push_lost", "device_id=%s version=%lld reason=oom", id,
                (long long)version);
}

static void close_effect(struct api_response *res, const char *id, int code)
{
    struct api_effect e;
    memset(&e, 0, sizeof(e));
    e.kind = API_EFFECT_CLOSE_SESSION;
    snprintf(e.device_id, sizeof(e.device_id), "%s", id);
    e.close_code = code;
    if (api_add_effect(res, &e) < 0)
        phy_log(PHY_LOG_ERROR, "close_lost", "device_id=%s code=%d reason=oom", id, code);
}

#define AUDIT_PATCH_MAX 8192 /* a bigger patch is recorded by its size only */

/* Adds "patch" (the patch as received; compact text) to an audit detail, or, for a
 * patch over AUDIT_PATCH_MAX bytes, "patch": null and "patch_bytes". Returns
 * detail (NULL when it was NULL). */
static json_t *audit_patch(json_t *detail, json_t *patch, const char *text)
{
    size_t n = strlen(text);
    if (!detail)
        return NULL;
    if (n <= AUDIT_PATCH_MAX)
        json_object_set(detail, "patch", patch);
    else if (json_object_set_new(detail, "patch", json_null()) == 0)
        json_object_set_new(detail, "patch_bytes", json_integer((json_int_t)n));
    return detail;
}

static const char *const patch_types[] = {"application/merge-patch+json", "application/json", NULL};

void handle_desired_patch(struct hub *h, const struct api_request *req, const char *id,
                          struct api_response *res)
{
    struct api_caller caller;
    json_t *patch = NULL;
    char *text = NULL;
    int64_t if_match, version = -1;
    int changed = 0, outcome;
    char msg[160];

    if (api_auth(h, req, res, &caller) < 0)
        return;
    device_log(res, &caller, id, "");
    if (api_parse_body_as(req, res, patch_types, &patch) < 0)
        return;
    if (api_if_match(req->if_match, &if_match) < 0) {
        api_error(res, 400, "bad_request",
                  "If-Match must be a desired version, \"n\" (weak tags are not supported)");
        goto out;
    }
    text = phy_json_dumps(patch, JSON_COMPACT);
    if (!text) {
        api_json(res, 500, NULL);
        goto out;
    }
    if (h->store_ops->desired_patch(h->store, caller.tenant_id, id, text, if_match, &version,
                                    &changed, &outcome) < 0) {
        api_store_failed(res);
        goto out;
    }
    snprintf(msg, sizeof(msg), "outcome=%d version=%lld changed=%d", outcome, (long long)version,
             changed);
    device_log(res, &caller, id, msg);
    switch (outcome) {
    case STORE_OK:
        api_json(res, 200, json_pack("{s:I}", "version", (json_int_t)version));
        snprintf(res->extra_headers, sizeof(res->extra_headers), "ETag: \"%lld\"\r\n",
                 (long long)version);
        api_audit(h, caller.tenant_id, caller.user_id, "device.desired_patch", id,
                  audit_patch(json_pack("{s:I}", "version", (json_int_t)version), patch, text));
        if (changed) {
            res->push_patch = text;
            text = NULL;
            push_effect(res, id, version);
            api_event(res, caller.tenant_id, "desired", id,
                      json_pack("{s:s, s:I}", "device_id", id, "version", (json_int_t)version));
        }
        break;
    case STORE_PRECONDITION:
        snprintf(msg, sizeof(msg), "the desired version is not %lld; get the device and retry",
                 (long long)if_match);
        if (version >= 0) {
            api_json(res, 412,
                     json_pack("{s:s, s:s, s:I}", "error", "precondition_failed", "message", msg,
                               "version", (json_int_t)version));
            snprintf(res->extra_headers, sizeof(res->extra_headers), "ETag: \"%lld\"\r\n",
                     (long long)version);
        } else {
            api_error(res, 412, "precondition_failed", msg);
        }
        break;
    case STORE_TOO_BIG:
        snprintf(msg, sizeof(msg), "the desired section would exceed %d bytes or nesting depth %d",
                 PHY_TWIN_MAX_BYTES, PHY_TWIN_MAX_DEPTH);
        api_error(res, 413, "twin_too_large", msg);
        break;
    case STORE_NOT_FOUND:
        no_device(res);
        break;
    default:
        api_error(res, 500, "internal", "unexpected store outcome");
    }
out:
    free(text);
    json_decref(patch);
}

void handle_fleet_patch(struct hub *h, const struct api_request *req, struct api_response *res)
{
    static const char *const params[] = {"tag", NULL};
    struct api_caller caller;
    char tag[STORE_TAG_KEY_MAX + STORE_TAG_VALUE_MAX + 2];
    const char *key = NULL, *value = NULL;
    json_t *patch = NULL;
    char *text = NULL;
    struct store_push *pushes = NULL;
    size_t matched = 0, n = 0;
    int outcome;
    char msg[160];

    if (api_auth(h, req, res, &caller) < 0)
        return;
    if (api_query_check(req->query, params) < 0) {
        api_error(res, 400, "bad_request", "malformed query or unknown parameter (known: tag)");
        return;
    }
    int r = tag_param(req, tag, sizeof(tag), &key, &value, res);
    if (r < 0)
        return;
    if (r == 0) {
        api_error(res, 400, "bad_request", "a fleet-wide patch needs ?tag=K:V");
        return;
    }
    if (req->if_match) {
        api_error(res, 400, "bad_request", "If-Match applies to one device's patch only");
        return;
    }
    if (api_parse_body_as(req, res, patch_types, &patch) < 0)
        return;
    text = phy_json_dumps(patch, JSON_COMPACT);
    if (!text) {
        api_json(res, 500, NULL);
        goto out;
    }
    if (h->store_ops->desired_patch_tag(h->store, caller.tenant_id, key, value, text, &matched,
                                        &pushes, &n, &outcome) < 0) {
        api_store_failed(res);
        goto out;
    }
    snprintf(res->log, sizeof(res->log), "tenant=%s tag=%s outcome=%d matched=%zu changed=%zu",
             caller.tenant, key, outcome, matched, n);
    switch (outcome) {
    case STORE_OK:
        api_json(res, 200, json_pack("{s:I}", "matched", (json_int_t)matched));
        {
            char tagkv[STORE_TAG_KEY_MAX + STORE_TAG_VALUE_MAX + 2];
            snprintf(tagkv, sizeof(tagkv), "%s:%s", key, value);
            api_audit(
                h, caller.tenant_id, caller.user_id, "fleet.desired_patch", NULL,
                audit_patch(json_pack("{s:s, s:I}", "tag", tagkv, "matched", (json_int_t)matched),
                            patch, text));
        }
        if (n > 0) {
            res->push_patch = text;
            text = NULL;
        }
        for (size_t i = 0; i < n; i++)
            push_effect(res, pushes[i].device_id, pushes[i].version);
        break;
    case STORE_TOO_BIG:
        snprintf(msg, sizeof(msg),
                 "a matching device's desired section would exceed %d bytes or nesting depth "
                 "%d; nothing was changed",
                 PHY_TWIN_MAX_BYTES, PHY_TWIN_MAX_DEPTH);
        api_error(res, 413, "twin_too_large", msg);
        break;
    default:
        api_error(res, 500, "internal", "unexpected store outcome");
    }
out:
    free(pushes);
    free(text);
    json_decref(patch);
}

void handle_tags_put(struct hub *h, const struct api_request *req, const char *id,
                     struct api_response *res)
{
    struct api_caller caller;
    json_t *body = NULL;
    char *tags_json = NULL;
    int outcome;

    if (api_auth(h, req, res, &caller) < 0)
        return;
    device_log(res, &caller, id, "");
    if (api_parse_body(req, res, &body) < 0 || tags_validate(body, &tags_json, res) < 0)
        goto out;
    if (device_done(h->store_ops->tags_put(h->store, caller.tenant_id, id, tags_json, &outcome),
                    &outcome, res) < 0)
        goto out;
    device_log(res, &caller, id, "tags=set");
    api_audit(h, caller.tenant_id, caller.user_id, "device.tags", id,
              json_pack("{s:O}", "tags", body));
    api_event(res, caller.tenant_id, "tags", id,
              json_pack("{s:s, s:O}", "device_id", id, "tags", body));
    answer_device(h, &caller, id, res);
out:
    free(tags_json);
    json_decref(body);
}

/* PATCH /api/v1/devices/{id} {"name": "..." | null}: "" or null clears the name.
 * Revoked devices may be renamed (their rows stay for history). */
void handle_device_rename(struct hub *h, const struct api_request *req, const char *id,
                          struct api_response *res)
{
    static const char *const fields[] = {"name", NULL};
    struct api_caller caller;
    json_t *body = NULL, *v;
    const char *name = NULL;
    int outcome;

    if (api_auth(h, req, res, &caller) < 0)
        return;
    device_log(res, &caller, id, "");
    if (api_parse_body(req, res, &body) < 0)
        return;
    if (api_check_fields(body, fields, res) < 0)
        goto out;
    v = json_object_get(body, "name");
    if (!v) {
        api_error(res, 400, "bad_request", "missing field 'name' (a string, or null to clear)");
        goto out;
    }
    if (!json_is_null(v)) {
        if (!json_is_string(v)) {
            api_error(res, 400, "bad_request", "field 'name' must be a string or null");
            goto out;
        }
        name = json_string_value(v);
        if (strlen(name) != json_string_length(v)) { /* "\u0000" inside */
            api_error(res, 400, "bad_request", "name must not contain NUL characters");
            goto out;
        }
        if (name_check(name, res) < 0)
            goto out;
        if (name[0] == '\0')
            name = NULL; /* "" clears, like null */
    }
    int rc = h->store_ops->device_rename /* a store without the operation: 503 */
                 ? h->store_ops->device_rename(h->store, caller.tenant_id, id, name, &outcome)
                 : PHY_EIO;
    if (device_done(rc, &outcome, res) < 0)
        goto out;
    device_log(res, &caller, id, name ? "name=set" : "name=cleared");
    api_audit(h, caller.tenant_id, caller.user_id, "device.rename", id,
              json_pack("{s:s?}", "name", name));
    api_event(res, caller.tenant_id, "name", id,
              json_pack("{s:s, s:s?}", "device_id", id, "name", name));
    answer_device(h, &caller, id, res);
out:
    json_decref(body);
}

/* What revoke, reset and delete share once the store did it: the access-log facts,
 * the live session closed with close_code, the tenant's state event, the audit
 * record (detail stolen, may be NULL). */
static void device_ended(struct hub *h, const struct api_caller *caller, const char *id,
                         const char *what, int close_code, const char *state, const char *action,
                         json_t *detail, struct api_response *res)
{
    device_log(res, caller, id, what);
    close_effect(res, id, close_code);
    api_state_event(res, caller->tenant_id, id, state);
    api_audit(h, caller->tenant_id, caller->user_id, action, id, detail);
}

void handle_device_revoke(struct hub *h, const struct api_request *req, const char *id,
                          struct api_response *res)
{
    struct api_caller caller;
    int outcome;

    if (api_auth(h, req, res, &caller) < 0)
        return;
    device_log(res, &caller, id, "");
    if (device_done(
            h->store_ops->device_revoke(h->store, caller.tenant_id, id, hub_now_ms(), &outcome),
            &outcome, res) < 0)
        return;
    device_ended(h, &caller, id, "revoked=1", PHY_CLOSE_REVOKED, "revoked", "device.revoke", NULL, res);
    answer_device(h, &caller, id, res);
}

void handle_device_reset(struct hub *h, const struct api_request *req, const char *id,
                         struct api_response *res)
{
    struct api_caller caller;
    struct store_device d;
    int outcome;

    memset(&d, 0, sizeof(d));
    if (api_auth(h, req, res, &caller) < 0)
        return;
    device_log(res, &caller, id, "");
    if (load_device(h, &caller, id, &d, NULL, res) < 0)
        goto out;
    if (h->store_ops->device_reset(h->store, caller.tenant_id, id, hub_now_ms(), &outcome) < 0) {
        api_store_failed(res);
        goto out;
    }
    if (outcome != STORE_OK && outcome != STORE_PROVISIONED) {
        no_device(res);
        goto out;
    }
    int rearmed = outcome == STORE_OK;
    char what[96];
    snprintf(what, sizeof(what), "serial=%s reset=1 rearmed=%d", d.serial, rearmed);
    device_ended(h, &caller, id, what, PHY_CLOSE_REVOKED, "revoked", "device.reset",
                 json_pack("{s:s}", "serial", d.serial), res);
    api_json(res, 200,
             json_pack("{s:s, s:s, s:s, s:b}", "device_id", id, "serial", d.serial, "state",
                       "revoked", "rearmed", rearmed));
out:
    store_device_clear(&d);
}

void handle_device_delete(struct hub *h, const struct api_request *req, const char *id,
                          struct api_response *res)
{
    struct api_caller caller;
    int outcome;

    if (api_auth(h, req, res, &caller) < 0)
        return;
    device_log(res, &caller, id, "");
    if (device_done(h->store_ops->device_delete(h->store, caller.tenant_id, id, &outcome), &outcome,
                    res) < 0)
        return;
    device_ended(h, &caller, id, "deleted=1", PHY_CLOSE_DELETED, "deleted", "device.delete", NULL, res);
    res->status = 204; /* no body: the server writes no Content-Length either */
}

void handle_status_history(struct hub *h, const struct api_request *req, const char *id,
                           struct api_response *res)
{
    struct api_caller caller;
    struct store_status_report *r = NULL;
    size_t n = 0;
    int outcome = STORE_NOT_FOUND;

    if (api_auth(h, req, res, &caller) < 0)
        return;
    device_log(res, &caller, id, "");
    if (!h->store_ops->status_history ||
        h->store_ops->status_history(h->store, caller.tenant_id, id, STORE_STATUS_HISTORY, &r, &n,
                                     &outcome) < 0) {
        api_store_failed(res);
        return;
    }
    if (outcome != STORE_OK) {
        no_device(res);
        goto out;
    }
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        json_t *e = json_pack("{s:o, s:o}", "at", api_time_json(r[i].at_ms), "status",
                              stored_json(r[i].status_json, 1));
        if (!e || json_array_append_new(arr, e) < 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    api_json(res, 200, arr ? json_pack("{s:o}", "reports", arr) : NULL);
out:
    store_status_reports_free(r, n);
}

#define AUDIT_DEFAULT 50
#define AUDIT_MAX 200

/* A decimal query value of 1..18 digits without sign or leading '+'; -1 otherwise. */
static int64_t query_int(const char *s)
{
    size_t n = strlen(s);
    int64_t x = 0;
    if (n == 0 || n > 18)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        x = x * 10 + (s[i] - '0');
    }
    return x;
}

void handle_audit(struct hub *h, const struct api_request *req, struct api_response *res)
{
    static const char *const params[] = {"limit", "before", NULL};
    struct api_caller caller;
    char buf[24];
    int64_t limit = AUDIT_DEFAULT, before = 0;
    struct store_audit *a = NULL;
    size_t n = 0;

    if (api_auth(h, req, res, &caller) < 0)
        return;
    snprintf(res->log, sizeof(res->log), "tenant=%s", caller.tenant);
    if (api_query_check(req->query, params) < 0) {
        api_error(res, 400, "bad_request",
                  "malformed query or unknown parameter (known: limit, before)");
        return;
    }
    int r = api_query_param(req->query, "limit", buf, sizeof(buf));
    if (r == 1)
        limit = query_int(buf);
    if (r < 0 || limit < 1 || limit > AUDIT_MAX) {
        api_error(res, 400, "bad_request", "limit must be 1-200");
        return;
    }
    r = api_query_param(req->query, "before", buf, sizeof(buf));
    if (r == 1)
        before = query_int(buf);
    if (r < 0 || (r == 1 && before < 1)) {
        api_error(res, 400, "bad_request", "before must be an audit entry id");
        return;
    }
    if (!h->store_ops->audit_list ||
        h->store_ops->audit_list(h->store, caller.tenant_id, before, (int)limit, &a, &n) < 0) {
        api_store_failed(res);
        return;
    }
    snprintf(res->log, sizeof(res->log), "tenant=%s count=%zu", caller.tenant, n);
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        json_t *e = json_pack("{s:I, s:o, s:s, s:s, s:s?, s:o}", "id", (json_int_t)a[i].id, "at",
                              api_time_json(a[i].at_ms), "actor", a[i].actor, "action", a[i].action,
                              "device_id", a[i].device_id[0] ? a[i].device_id : NULL, "detail",
                              stored_json(a[i].detail_json, 0));
        if (!e || json_array_append_new(arr, e) < 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    json_t *next =
        n > 0 && n == (size_t)limit ? json_integer((json_int_t)a[n - 1].id) : json_null();
    api_json(res, 200, arr ? json_pack("{s:o, s:o}", "entries", arr, "next", next) : NULL);
    store_audit_free(a, n);
}

void handle_healthz(struct hub *h, const struct api_request *req, struct api_response *res)
{
    (void)req;
    api_json(res, 200, json_pack("{s:s, s:s}", "status", "ok", "region", h->cfg.region));
}

void handle_readyz(struct hub *h, const struct api_request *req, struct api_response *res)
{
    int64_t id;
    int outcome;

    (void)req;
    /* Any answer (found or not) proves a round trip through the engine: a transaction
     * on SQLite, a pooled connection on PostgreSQL. */
    if (h->store_ops->tenant_lookup(h->store, "readyz-probe", &id, &outcome) < 0) {
        api_store_failed(res);
        return;
    }
    api_json(res, 200, json_pack("{s:s, s:s}", "status", "ready", "region", h->cfg.region));
}
