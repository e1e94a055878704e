/* What every handler uses to read a request and write its answer: JSON bodies and
 * fields, query strings, errors (with Retry-After where they say when), events and
 * effects for the loop. No routing here (router.c) and no handler. */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "phy/json.h"
#include "phy/err.h"
#include "phy/text.h"
#include "phy/log.h"

void api_response_free(struct api_response *res)
{
    if (!res)
        return;
    if (res->body) /* may carry device credentials */
        OPENSSL_cleanse(res->body, res->body_len);
    free(res->body);
    res->body = NULL;
    res->body_len = 0;
    /* Set-Cookie carries a session's cookie value */
    OPENSSL_cleanse(res->extra_headers, sizeof(res->extra_headers));
    for (size_t i = 0; i < res->neffects; i++)
        free(res->effects[i].event_json);
    free(res->effects);
    res->effects = NULL;
    res->neffects = 0;
    free(res->push_patch);
    res->push_patch = NULL;
}

int api_add_effect(struct api_response *res, const struct api_effect *e)
{
    /* Grow by doubling: a fleet-wide patch may add one per device. */
    size_t n = res->neffects;
    if ((n & (n - 1)) == 0) {
        size_t cap = n ? n * 2 : 4;
        struct api_effect *p = realloc(res->effects, cap * sizeof(*p));
        if (!p)
            return PHY_ENOMEM;
        res->effects = p;
    }
    res->effects[n] = *e;
    res->neffects = n + 1;
    return 0;
}

void api_event(struct api_response *res, int64_t tenant_id, const char *type,
               const char *device_id, json_t *o)
{
    struct api_effect e;
    memset(&e, 0, sizeof(e));
    e.kind = API_EFFECT_EVENT;
    snprintf(e.device_id, sizeof(e.device_id), "%s", device_id);
    e.tenant_id = tenant_id;
    e.event_type = type;
    e.event_json = o ? phy_json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!e.event_json || api_add_effect(res, &e) < 0) {
        free(e.event_json);
        phy_log(PHY_LOG_WARN, "event_lost", "device_id=%s type=%s reason=oom", device_id, type);
    }
}

void api_state_event(struct api_response *res, int64_t tenant_id, const char *device_id,
                     const char *state)
{
    api_event(res, tenant_id, "state", device_id,
              json_pack("{s:s, s:s}", "device_id", device_id, "state", state));
}

void api_error(struct api_response *res, int status, const char *code, const char *msg)
{
    json_t *o = json_pack("{s:s, s:s}", "error", code, "message", msg);
    api_json(res, status, o);
}

/* The store could not answer (its database unreachable, a failed write): 503 with
 * Retry-After, never a partial answer. */
void api_store_failed(struct api_response *res)
{
    api_error_retry(res, 503, "store_unavailable", "the store failed; retry later", 1);
}

void api_error_retry(struct api_response *res, int status, const char *code, const char *msg,
                     long long retry_s)
{
    api_error(res, status, code, msg);
    snprintf(res->extra_headers, sizeof res->extra_headers, "Retry-After: %lld\r\n",
             retry_s > 0 ? retry_s : 1);
}

int api_json(struct api_response *res, int status, json_t *o)
{
    free(res->body);
    res->body = o ? phy_json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    res->status = status;
    if (!res->body) {
        static const char oom[] = "{\"error\":\"internal\",\"message\":\"out of memory\"}";
        res->status = 500;
        res->body = strdup(oom);
        res->body_len = res->body ? strlen(res->body) : 0;
        return -1;
    }
    res->body_len = strlen(res->body);
    return 0;
}

/* Media type of a Content-Type value equals type (case-insensitive), followed by the
 * end, optional whitespace or parameters. */
static int media_type_is(const char *ct, const char *type)
{
    size_t n = strlen(type);
    if (strncasecmp(ct, type, n) != 0)
        return 0;
    ct += n;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

int api_parse_body_as(const struct api_request *req, struct api_response *res,
                      const char *const *types, json_t **out)
{
    int ok = 0;
    for (size_t i = 0; req->content_type && types[i]; i++)
        if (media_type_is(req->content_type, types[i]))
            ok = 1;
    if (!ok) {
        char msg[160];
        snprintf(msg, sizeof(msg), "Content-Type must be %s%s%s", types[0], types[1] ? " or " : "",
                 types[1] ? types[1] : "");
        api_error(res, 415, "unsupported_media_type", msg);
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

int api_parse_body(const struct api_request *req, struct api_response *res, json_t **out)
{
    static const char *const json_only[] = {"application/json", NULL};
    return api_parse_body_as(req, res, json_only, out);
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

/* ---- request-line helpers (no I/O; unit-tested in tests/unit/test_route.c) ---- */

int api_device_id_valid(const char *s, size_t n)
{
    if (n != PHY_DEVICE_ID_LEN || strncmp(s, "dev_", 4) != 0)
        return 0;
    for (size_t i = 4; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '2' && s[i] <= '7')))
            return 0;
    return 1;
}

/* Strict: only %XX escapes ('+' stays '+'), no %00, no raw space or control bytes. */
int api_pct_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t j = 0;
    if (cap == 0)
        return PHY_ETOOBIG;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (n - i < 3 || phy_hexval(s[i + 1]) < 0 || phy_hexval(s[i + 2]) < 0)
                return PHY_EINVAL;
            c = phy_hexval(s[i + 1]) * 16 + phy_hexval(s[i + 2]);
            if (c == 0)
                return PHY_EINVAL;
            i += 2;
        } else if (c <= 0x20 || c >= 0x7f) {
            return PHY_EINVAL;
        }
        if (j + 1 >= cap)
            return PHY_ETOOBIG;
        out[j++] = (char)c;
    }
    out[j] = '\0';
    return (int)j;
}


/* Walks "a=1&b=2" calling fn for each name/raw value; stops at fn's non-zero. Empty
 * segments ("a=1&&b=2", a trailing '&') are skipped; a segment without '=' is
 * PHY_EINVAL. */
static int query_walk(const char *q, int (*fn)(void *, const char *, size_t, const char *, size_t),
                      void *ctx)
{
    while (q && *q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        if (len > 0) {
            const char *eq = memchr(q, '=', len);
            if (!eq)
                return PHY_EINVAL;
            int r = fn(ctx, q, (size_t)(eq - q), eq + 1, len - (size_t)(eq - q) - 1);
            if (r != 0)
                return r;
        }
        q = amp ? amp + 1 : NULL;
    }
    return 0;
}

struct query_find {
    const char *name;
    char *out;
    size_t cap;
    int found;
};

static int query_find_cb(void *ctx, const char *name, size_t nl, const char *val, size_t vl)
{
    struct query_find *f = ctx;
    if (strlen(f->name) != nl || memcmp(name, f->name, nl) != 0)
        return 0;
    if (f->found)
        return PHY_EINVAL; /* given twice */
    f->found = 1;
    int r = api_pct_decode(val, vl, f->out, f->cap);
    return r < 0 ? r : 0;
}

int api_query_param(const char *query, const char *name, char *out, size_t cap)
{
    struct query_find f = {name, out, cap, 0};
    int r = query_walk(query, query_find_cb, &f);
    if (r < 0)
        return r;
    return f.found;
}

static int query_check_cb(void *ctx, const char *name, size_t nl, const char *val, size_t vl)
{
    const char *const *allowed = ctx;
    (void)val;
    (void)vl;
    for (size_t i = 0; allowed[i]; i++)
        if (strlen(allowed[i]) == nl && memcmp(name, allowed[i], nl) == 0)
            return 0;
    return PHY_EINVAL;
}

int api_query_check(const char *query, const char *const *allowed)
{
    return query_walk(query, query_check_cb, (void *)allowed);
}

int api_if_match(const char *v, int64_t *out)
{
    *out = -1;
    if (!v)
        return 0;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n == 1 && v[0] == '*')
        return 0; /* any current version */
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
        v++;
        n -= 2;
    }
    if (n == 0 || n > 18)
        return PHY_EINVAL;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return PHY_EINVAL;
        x = x * 10 + (v[i] - '0');
    }
    *out = x;
    return 0;
}

const char *api_log_path(const char *path, char *buf, size_t cap)
{
    static const char prefix[] = "/internal/v1/issuances/";
    if (strncmp(path, prefix, sizeof(prefix) - 1) != 0)
        return path;
    const char *rest = path + sizeof(prefix) - 1;
    const char *slash = strchr(rest, '/');
    snprintf(buf, cap, "%s{id}%s", prefix, slash ? slash : "");
    return buf;
}
