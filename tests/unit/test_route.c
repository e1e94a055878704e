/* Unit tests for the hub's API routing and request-line helpers (hub/router.c, hub/reply.c) and the
 * console device handlers (hub/console.c) against a fake store: path parameters,
 * 404/405 with Allow, query decoding, If-Match, outcomes and effects, cookie
 * sessions with CSRF, audit records. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "api.h"
#include "handlers.h"
#include "router.h"
#include "phy/text.h"
#include "phy/err.h"

#define ID "dev_abcdefghijklmnopqrstuvwxyz"
#define ID2 "dev_234567abcdefghijklmnopqrst"
#define TOKEN "Bearer t0k3n"

/* ---- fake store: one tenant (7) that owns ID; records the last call ---- */

static struct {
    char op[32];
    char device_id[64];
    char patch[256];
    char tags[256];
    char name[160]; /* device_rename: the name given, "(null)" for none */
    char tag_key[80], tag_value[160];
    int64_t if_match;
    struct store_device_filter filter;
    int has_filter;
    char after[64];
    int limit;
    int outcome; /* forced outcome of the next device operation (-1: natural) */
    int changed; /* desired_patch: whether the document changes */
    int fail;    /* every operation fails (store unavailable) */
} F;

static int owns(int64_t tenant, const char *id)
{
    return tenant == 7 && strcmp(id, ID) == 0;
}

static int f_token_auth(struct store *s, const char *hash, int64_t now_ms, int64_t *tenant_id,
                        int64_t *user_id, char tenant[STORE_NAME_MAX + 1], char region[16],
                        int *outcome)
{
    (void)now_ms;
    char want[PHY_HASH_HEX_LEN + 1], other[PHY_HASH_HEX_LEN + 1];
    (void)s;
    phy_sha256_hex("t0k3n", 5, want);
    phy_sha256_hex("other", 5, other);
    *outcome = STORE_NOT_FOUND;
    if (strcmp(hash, want) == 0 || strcmp(hash, other) == 0) {
        *tenant_id = strcmp(hash, want) == 0 ? 7 : 8;
        *user_id = 1;
        snprintf(tenant, STORE_NAME_MAX + 1, "%s", *tenant_id == 7 ? "acme" : "globex");
        snprintf(region, 16, "eu");
        *outcome = STORE_OK;
    }
    return 0;
}

static void fill_device(struct store_device *d)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->device_id, sizeof(d->device_id), "%s", ID);
    snprintf(d->serial, sizeof(d->serial), "SN1");
    snprintf(d->state, sizeof(d->state), "active");
    d->tags_json = strdup("{\"site\":\"berlin\"}");
    d->created_ms = 1767225600000; /* 2026-01-01T00:00:00Z */
    d->online = 1;
    d->last_seen_ms = 1767225605000;
    d->connected_ms = 1767225601000;
    d->last_status_json = strdup("{\"uptime\":5}");
    d->last_status_ms = 1767225604000;
}

static int natural(int64_t tenant, const char *id, const char *op)
{
    snprintf(F.op, sizeof(F.op), "%s", op);
    snprintf(F.device_id, sizeof(F.device_id), "%s", id);
    if (F.outcome >= 0)
        return F.outcome;
    return owns(tenant, id) ? STORE_OK : STORE_NOT_FOUND;
}

static int f_devices_list(struct store *s, int64_t tenant_id, const struct store_device_filter *f,
                          const char *after, int limit, struct store_device **out, size_t *n)
{
    (void)s;
    if (F.fail)
        return PHY_EIO;
    snprintf(F.op, sizeof(F.op), "list");
    F.filter = *f;
    F.has_filter = 1;
    snprintf(F.tag_key, sizeof(F.tag_key), "%s", f->tag_key ? f->tag_key : "(null)");
    snprintf(F.tag_value, sizeof(F.tag_value), "%s", f->tag_value ? f->tag_value : "(null)");
    snprintf(F.after, sizeof(F.after), "%s", after ? after : "(null)");
    F.limit = limit;
    *n = tenant_id == 7 ? 1 : 0;
    *out = calloc(1, sizeof(**out));
    if (*n)
        fill_device(*out);
    return 0;
}

static int f_device_get(struct store *s, int64_t tenant_id, const char *id, struct store_device *d,
                        struct store_twin *t, int *outcome)
{
    (void)s;
    if (F.fail)
        return PHY_EIO;
    *outcome = owns(tenant_id, id) ? STORE_OK : STORE_NOT_FOUND;
    if (*outcome == STORE_OK) {
        fill_device(d);
        if (t) {
            t->desired = strdup("{\"a\":{\"b\":1}}");
            t->desired_version = 3;
            t->reported = strdup("{}");
            t->reported_version = 0;
            t->tags = strdup("{\"site\":\"berlin\"}");
        }
    }
    return 0;
}

static int f_tags_put(struct store *s, int64_t tenant_id, const char *id, const char *tags_json,
                      int *outcome)
{
    (void)s;
    if (F.fail)
        return PHY_EIO;
    *outcome = natural(tenant_id, id, "tags_put");
    snprintf(F.tags, sizeof(F.tags), "%s", tags_json);
    return 0;
}

static int f_device_rename(struct store *s, int64_t tenant_id, const char *id, const char *name,
                           int *outcome)
{
    (void)s;
    if (F.fail)
        return PHY_EIO;
    *outcome = natural(tenant_id, id, "rename");
    snprintf(F.name, sizeof(F.name), "%s", name ? name : "(null)");
    return 0;
}

static int f_desired_patch(struct store *s, int64_t tenant_id, const char *id, const char *patch,
                           int64_t if_match, int64_t *version, int *changed, int *outcome)
{
    (void)s;
    if (F.fail)
        return PHY_EIO;
    *outcome = natural(tenant_id, id, "desired_patch");
    snprintf(F.patch, sizeof(F.patch), "%s", patch);
    F.if_match = if_match;
    if (*outcome == STORE_OK && if_match >= 0 && if_match != 3)
        *outcome = STORE_PRECONDITION;
    *version = *outcome == STORE_OK && F.changed ? 4 : 3;
    *changed = *outcome == STORE_OK && F.changed;
    return 0;
}

static int f_desired_patch_tag(struct store *s, int64_t tenant_id, const char *key,
                               const char *value, const char *patch, size_t *matched,
                               struct store_push **out, size_t *n, int *outcome)
{
    (void)s;
    (void)tenant_id;
    if (F.fail)
        return PHY_EIO;
    snprintf(F.op, sizeof(F.op), "patch_tag");
    snprintf(F.tag_key, sizeof(F.tag_key), "%s", key);
    snprintf(F.tag_value, sizeof(F.tag_value), "%s", value);
    snprintf(F.patch, sizeof(F.patch), "%s", patch);
    *outcome = F.outcome >= 0 ? F.outcome : STORE_OK;
    *matched = 3;
    *n = 0;
    *out = NULL;
    if (*outcome == STORE_OK) {
        *out = calloc(2, sizeof(**out));
        snprintf((*out)[0].device_id, sizeof((*out)[0].device_id), "%s", ID);
        (*out)[0].version = 5;
        snprintf((*out)[1].device_id, sizeof((*out)[1].device_id), "%s", ID2);
        (*out)[1].version = 9;
        *n = 2;
    }
    return 0;
}

static int f_revoke(struct store *s, int64_t tenant_id, const char *id, int64_t now, int *outcome)
{
    (void)s;
    (void)now;
    if (F.fail)
        return PHY_EIO;
    *outcome = natural(tenant_id, id, "revoke");
    return 0;
}

static int f_reset(struct store *s, int64_t tenant_id, const char *id, int64_t now, int *outcome)
{
    (void)s;
    (void)now;
    if (F.fail)
        return PHY_EIO;
    *outcome = natural(tenant_id, id, "reset");
    return 0;
}

static int f_delete(struct store *s, int64_t tenant_id, const char *id, int *outcome)
{
    (void)s;
    if (F.fail)
        return PHY_EIO;
    *outcome = natural(tenant_id, id, "delete");
    return 0;
}

static struct phy_store_ops fake_ops;
static struct hub H;

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof(F));
    F.outcome = -1;
    F.changed = 1;
    fake_ops.name = "fake";
    fake_ops.token_auth = f_token_auth;
    fake_ops.devices_list = f_devices_list;
    fake_ops.device_get = f_device_get;
    fake_ops.tags_put = f_tags_put;
    fake_ops.device_rename = f_device_rename;
    fake_ops.desired_patch = f_desired_patch;
    fake_ops.desired_patch_tag = f_desired_patch_tag;
    fake_ops.device_revoke = f_revoke;
    fake_ops.device_reset = f_reset;
    fake_ops.device_delete = f_delete;
    fake_ops.console_session_auth = NULL;
    fake_ops.audit_add = NULL;
    memset(&H, 0, sizeof(H));
    H.store_ops = &fake_ops;
    H.cfg.region = "eu";
    H.cfg.provisioning = 0;
    return 0;
}

/* One request; the response is left in res (free it). Returns the status. */
static int call(struct api_response *res, const char *method, const char *path, const char *query,
                const char *auth, const char *ctype, const char *body, const char *if_match)
{
    struct api_request req = {
        .method = method,
        .path = path,
        .query = query,
        .authorization = auth,
        .content_type = ctype,
        .if_match = if_match,
        .body = body ? body : "",
        .body_len = body ? strlen(body) : 0,
        .request_id = "r1",
    };
    api_handle(&H, &req, res);
    return res->status;
}

static json_t *body_json(const struct api_response *res)
{
    json_t *o = json_loadb(res->body, res->body_len, 0, NULL);
    assert_non_null(o);
    return o;
}

static const char *error_code(const struct api_response *res)
{
    static char code[64];
    json_t *o = body_json(res);
    snprintf(code, sizeof(code), "%s", json_string_value(json_object_get(o, "error")));
    json_decref(o);
    return code;
}

/* ---- helpers ---- */

static void test_path_match(void **state)
{
    char id[PHY_DEVICE_ID_LEN + 1];
    (void)state;
    assert_true(api_path_match("/api/v1/devices", "/api/v1/devices", id));
    assert_false(api_path_match("/api/v1/devices", "/api/v1/devices/", id));
    assert_false(api_path_match("/api/v1/devices", "/api/v1/device", id));
    assert_true(api_path_match("/api/v1/devices/{id}", "/api/v1/devices/" ID, id));
    assert_string_equal(id, ID);
    assert_true(api_path_match("/api/v1/devices/{id}/twin/desired",
                               "/api/v1/devices/" ID "/twin/desired", id));
    assert_false(api_path_match("/api/v1/devices/{id}/twin/desired",
                                "/api/v1/devices/" ID "/twin/desired/", id));
    assert_false(api_path_match("/api/v1/devices/{id}", "/api/v1/devices/" ID "/", id));
    assert_false(api_path_match("/api/v1/devices/{id}", "/api/v1/devices/claim", id));
    assert_false(api_path_match("/api/v1/devices/{id}", "/api/v1/devices/", id));
    assert_false(api_path_match("/api/v1/devices/{id}",
                                "/api/v1/devices/dev_ABCDEFGHIJKLMNOPQRSTUVWXYZ", id));
    assert_false(api_path_match("/api/v1/devices/{id}", "/api/v1/devices/" ID "a", id));
    assert_false(api_path_match("/api/v1/devices/{id}",
                                "/api/v1/devices/dev_abcdefghijklmnopqrstuvwxy1", id));
    assert_false(api_path_match("/api/v1/devices/{id}/tags", "/api/v1/devices/" ID, id));
    assert_true(api_device_id_valid(ID, strlen(ID)));
    assert_false(api_device_id_valid(ID, strlen(ID) - 1));
}

static void test_pct_decode_and_query(void **state)
{
    char out[16];
    (void)state;
    assert_int_equal(api_pct_decode("a%3Ab%2fc", 9, out, sizeof(out)), 5);
    assert_string_equal(out, "a:b/c");
    assert_int_equal(api_pct_decode("a+b", 3, out, sizeof(out)), 3);
    assert_string_equal(out, "a+b");
    assert_int_equal(api_pct_decode("%C3%A9", 6, out, sizeof(out)), 2);
    assert_string_equal(out, "\xc3\xa9");
    assert_int_equal(api_pct_decode("", 0, out, sizeof(out)), 0);
    assert_int_equal(api_pct_decode("%", 1, out, sizeof(out)), PHY_EINVAL);
    assert_int_equal(api_pct_decode("%4", 2, out, sizeof(out)), PHY_EINVAL);
    assert_int_equal(api_pct_decode("%zz", 3, out, sizeof(out)), PHY_EINVAL);
    assert_int_equal(api_pct_decode("%00", 3, out, sizeof(out)), PHY_EINVAL);
    assert_int_equal(api_pct_decode("a b", 3, out, sizeof(out)), PHY_EINVAL);
    assert_int_equal(api_pct_decode("a\x01", 2, out, sizeof(out)), PHY_EINVAL);
    assert_int_equal(api_pct_decode("\xc3\xa9", 2, out, sizeof(out)), PHY_EINVAL);
    assert_int_equal(api_pct_decode("0123456789abcdef", 16, out, sizeof(out)), PHY_ETOOBIG);
    assert_int_equal(api_pct_decode("0123456789abcde", 15, out, sizeof(out)), 15);

    assert_int_equal(api_query_param("a=1&tag=k%3Av&b=", "tag", out, sizeof(out)), 1);
    assert_string_equal(out, "k:v");
    assert_int_equal(api_query_param("a=1&b=", "b", out, sizeof(out)), 1);
    assert_string_equal(out, "");
    assert_int_equal(api_query_param("a=1&&b=2&", "b", out, sizeof(out)), 1);
    assert_string_equal(out, "2");
    assert_int_equal(api_query_param("ab=1", "a", out, sizeof(out)), 0);
    assert_int_equal(api_query_param(NULL, "a", out, sizeof(out)), 0);
    assert_int_equal(api_query_param("", "a", out, sizeof(out)), 0);
    assert_int_equal(api_query_param("a=1&a=2", "a", out, sizeof(out)), PHY_EINVAL);
    assert_int_equal(api_query_param("a", "a", out, sizeof(out)), PHY_EINVAL);
    assert_int_equal(api_query_param("b&a=1", "a", out, sizeof(out)), PHY_EINVAL);
    assert_int_equal(api_query_param("a=%G1", "a", out, sizeof(out)), PHY_EINVAL);
    assert_int_equal(api_query_param("a=01234567890123456789", "a", out, sizeof(out)), PHY_ETOOBIG);

    static const char *const allowed[] = {"tag", "limit", NULL};
    assert_int_equal(api_query_check(NULL, allowed), 0);
    assert_int_equal(api_query_check("tag=a:b&limit=5", allowed), 0);
    assert_int_equal(api_query_check("tag=a:b&x=5", allowed), PHY_EINVAL);
    assert_int_equal(api_query_check("tags=1", allowed), PHY_EINVAL);
    assert_int_equal(api_query_check("limit", allowed), PHY_EINVAL);

    assert_true(phy_utf8_valid("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10));
    assert_false(phy_utf8_valid("\xc0\xaf", 2));         /* overlong */
    assert_false(phy_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(phy_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(phy_utf8_valid("\xc3", 1));             /* truncated */
    assert_false(phy_utf8_valid("\xff", 1));
}

static void test_if_match(void **state)
{
    int64_t v;
    (void)state;
    assert_int_equal(api_if_match(NULL, &v), 0);
    assert_int_equal(v, -1);
    assert_int_equal(api_if_match("*", &v), 0);
    assert_int_equal(v, -1);
    assert_int_equal(api_if_match("\"12\"", &v), 0);
    assert_int_equal(v, 12);
    assert_int_equal(api_if_match("7", &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(api_if_match(" \"0\" ", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(api_if_match("W/\"12\"", &v), PHY_EINVAL);
    assert_int_equal(api_if_match("\"1\", \"2\"", &v), PHY_EINVAL);
    assert_int_equal(api_if_match("\"\"", &v), PHY_EINVAL);
    assert_int_equal(api_if_match("", &v), PHY_EINVAL);
    assert_int_equal(api_if_match("-1", &v), PHY_EINVAL);
    assert_int_equal(api_if_match("\"12", &v), PHY_EINVAL);
    assert_int_equal(api_if_match("1234567890123456789", &v), PHY_EINVAL);
    assert_int_equal(api_if_match("abc", &v), PHY_EINVAL);
}

/* ---- routing ---- */

static void test_routes_404_405(void **state)
{
    struct api_response res;
    (void)state;
    assert_int_equal(call(&res, "GET", "/nope", NULL, TOKEN, NULL, NULL, NULL), 404);
    api_response_free(&res);
    /* {id} that is not a device ID: no such endpoint (before auth) */
    assert_int_equal(call(&res, "GET", "/api/v1/devices/xyz", NULL, NULL, NULL, NULL, NULL), 404);
    api_response_free(&res);
    assert_int_equal(call(&res, "GET", "/api/v1/devices/" ID "/", NULL, NULL, NULL, NULL, NULL),
                     404);
    api_response_free(&res);
    /* known paths, wrong method */
    assert_int_equal(call(&res, "POST", "/api/v1/devices/" ID, NULL, TOKEN, NULL, NULL, NULL), 405);
    assert_string_equal(res.extra_headers, "Allow: GET, DELETE, PATCH\r\n");
    assert_string_equal(error_code(&res), "method_not_allowed");
    api_response_free(&res);
    assert_int_equal(
        call(&res, "GET", "/api/v1/devices/" ID "/revoke", NULL, TOKEN, NULL, NULL, NULL), 405);
    assert_string_equal(res.extra_headers, "Allow: POST\r\n");
    api_response_free(&res);
    assert_int_equal(call(&res, "DELETE", "/api/v1/devices", NULL, TOKEN, NULL, NULL, NULL), 405);
    assert_string_equal(res.extra_headers, "Allow: GET\r\n");
    api_response_free(&res);
    assert_int_equal(call(&res, "GET", "/api/v1/twins/desired", NULL, TOKEN, NULL, NULL, NULL),
                     405);
    assert_string_equal(res.extra_headers, "Allow: PATCH\r\n");
    api_response_free(&res);
    assert_int_equal(
        call(&res, "GET", "/api/v1/devices/" ID "/tags", NULL, TOKEN, NULL, NULL, NULL), 405);
    assert_string_equal(res.extra_headers, "Allow: PUT\r\n");
    api_response_free(&res);
    /* provisioning routes are absent without --provisioning */
    assert_int_equal(
        call(&res, "POST", "/v1/provisioning/register", NULL, NULL, "application/json", "{}", NULL),
        404);
    api_response_free(&res);
    /* every console route needs the token */
    static const char *const m[][2] = {
        {"GET", "/api/v1/devices"},
        {"GET", "/api/v1/devices/" ID},
        {"DELETE", "/api/v1/devices/" ID},
        {"PATCH", "/api/v1/devices/" ID "/twin/desired"},
        {"PUT", "/api/v1/devices/" ID "/tags"},
        {"POST", "/api/v1/devices/" ID "/revoke"},
        {"POST", "/api/v1/devices/" ID "/reset"},
        {"PATCH", "/api/v1/twins/desired"},
    };
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
        assert_int_equal(
            call(&res, m[i][0], m[i][1], "tag=a:b", NULL, "application/json", "{}", NULL), 401);
        assert_non_null(strstr(res.extra_headers, "WWW-Authenticate: Bearer"));
        api_response_free(&res);
        assert_int_equal(
            call(&res, m[i][0], m[i][1], "tag=a:b", "Bearer wrong", "application/json", "{}", NULL),
            401);
        api_response_free(&res);
        /* another tenant: 404 for the device routes; nothing reaches the device ops */
        F.op[0] = '\0';
        int st =
            call(&res, m[i][0], m[i][1], "tag=a:b", "Bearer other", "application/json", "{}", NULL);
        if (strstr(m[i][1], "{") == NULL && strstr(m[i][1], ID) != NULL)
            assert_int_equal(st, 404);
        api_response_free(&res);
    }
}

/* ---- handlers ---- */

static void test_list_filters(void **state)
{
    struct api_response res;
    json_t *o, *d;
    (void)state;
    assert_int_equal(call(&res, "GET", "/api/v1/devices", NULL, TOKEN, NULL, NULL, NULL), 200);
    assert_int_equal(F.filter.presence, -1);
    assert_string_equal(F.tag_key, "(null)");
    assert_string_equal(F.after, "(null)");
    assert_int_equal(F.limit, 100);
    o = body_json(&res);
    d = json_array_get(json_object_get(o, "devices"), 0);
    assert_string_equal(json_string_value(json_object_get(d, "presence")), "online");
    assert_string_equal(json_string_value(json_object_get(d, "last_seen")), "2026-01-01T00:00:05Z");
    assert_string_equal(json_string_value(json_object_get(d, "connected_at")),
                        "2026-01-01T00:00:01Z");
    assert_true(json_is_null(json_object_get(d, "disconnected_at")));
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(d, "last_status"), "uptime")), 5);
    assert_string_equal(json_string_value(json_object_get(d, "last_status_at")),
                        "2026-01-01T00:00:04Z");
    assert_true(json_is_null(json_object_get(o, "next")));
    json_decref(o);
    api_response_free(&res);

    assert_int_equal(call(&res, "GET", "/api/v1/devices",
                          "presence=offline&tag=site%3Ab%C3%A9rlin%3A1+2&limit=1&after=" ID2, TOKEN,
                          NULL, NULL, NULL),
                     200);
    assert_int_equal(F.filter.presence, 0);
    assert_string_equal(F.tag_key, "site");
    assert_string_equal(F.tag_value, "b\xc3\xa9rlin:1+2");
    assert_string_equal(F.after, ID2);
    assert_int_equal(F.limit, 1);
    o = body_json(&res);
    assert_string_equal(json_string_value(json_object_get(o, "next")), ID);
    json_decref(o);
    api_response_free(&res);
    assert_int_equal(
        call(&res, "GET", "/api/v1/devices", "presence=online&tag=k:", TOKEN, NULL, NULL, NULL),
        200);
    assert_int_equal(F.filter.presence, 1);
    assert_string_equal(F.tag_value, "");
    api_response_free(&res);

    static const char *const bad[] = {
        "presence=away",
        "presence=",
        "presence=online&presence=offline",
        "tag=site",
        "tag=:v",
        "tag=s%20x:v",
        "tag=k:%ff",
        "tag=k:%0a",
        "tag=k:%zz",
        "limit=0",
        "limit=501",
        "limit=-1",
        "limit=+5",
        "limit=5x",
        "limit=",
        "after=dev_x",
        "after=" ID "&after=" ID,
        "bogus=1",
        "limit",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int st = call(&res, "GET", "/api/v1/devices", bad[i], TOKEN, NULL, NULL, NULL);
        if (st != 400)
            fail_msg("query '%s' got %d", bad[i], st);
        assert_string_equal(error_code(&res), "bad_request");
        api_response_free(&res);
    }
    F.fail = 1;
    assert_int_equal(call(&res, "GET", "/api/v1/devices", NULL, TOKEN, NULL, NULL, NULL), 503);
    assert_string_equal(error_code(&res), "store_unavailable");
    api_response_free(&res);
}

static void test_get_device(void **state)
{
    struct api_response res;
    json_t *o, *twin;
    (void)state;
    assert_int_equal(call(&res, "GET", "/api/v1/devices/" ID, NULL, TOKEN, NULL, NULL, NULL), 200);
    o = body_json(&res);
    assert_string_equal(json_string_value(json_object_get(o, "device_id")), ID);
    twin = json_object_get(o, "twin");
    assert_int_equal(json_integer_value(json_object_get(twin, "desired_version")), 3);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(twin, "desired"), "a"), "b")),
                     1);
    assert_int_equal(json_integer_value(json_object_get(twin, "reported_version")), 0);
    assert_true(json_is_object(json_object_get(twin, "reported")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(twin, "tags"), "site")),
                        "berlin");
    json_decref(o);
    assert_non_null(strstr(res.log, "tenant=acme device_id=" ID));
    api_response_free(&res);
    assert_int_equal(call(&res, "GET", "/api/v1/devices/" ID2, NULL, TOKEN, NULL, NULL, NULL), 404);
    assert_string_equal(error_code(&res), "not_found");
    api_response_free(&res);
    assert_int_equal(
        call(&res, "GET", "/api/v1/devices/" ID, NULL, "Bearer other", NULL, NULL, NULL), 404);
    api_response_free(&res);
}

static void test_desired_patch(void **state)
{
    struct api_response res;
    const char *p = "/api/v1/devices/" ID "/twin/desired";
    json_t *o;
    (void)state;
    assert_int_equal(call(&res, "PATCH", p, NULL, TOKEN, "application/merge-patch+json",
                          "{ \"b\" : 1, \"a\": {\"x\": null} }", NULL),
                     200);
    assert_string_equal(F.patch, "{\"b\":1,\"a\":{\"x\":null}}");
    assert_int_equal(F.if_match, -1);
    o = body_json(&res);
    assert_int_equal(json_integer_value(json_object_get(o, "version")), 4);
    json_decref(o);
    assert_string_equal(res.extra_headers, "ETag: \"4\"\r\n");
    assert_int_equal(res.neffects, 2);
    assert_int_equal(res.effects[0].kind, API_EFFECT_PUSH_DESIRED);
    assert_string_equal(res.effects[0].device_id, ID);
    assert_int_equal(res.effects[0].version, 4);
    assert_int_equal(res.effects[1].kind, API_EFFECT_EVENT); /* "desired" for other tabs */
    assert_string_equal(res.effects[1].event_type, "desired");
    assert_string_equal(res.push_patch, "{\"b\":1,\"a\":{\"x\":null}}");
    api_response_free(&res);

    /* application/json too (with parameters); If-Match quoted or not */
    assert_int_equal(call(&res, "PATCH", p, NULL, TOKEN, "Application/JSON; charset=utf-8",
                          "{\"a\":1}", "\"3\""),
                     200);
    assert_int_equal(F.if_match, 3);
    api_response_free(&res);
    assert_int_equal(call(&res, "PATCH", p, NULL, TOKEN, "application/json", "{\"a\":1}", "3"),
                     200);
    api_response_free(&res);
    /* unchanged: no push */
    F.changed = 0;
    assert_int_equal(call(&res, "PATCH", p, NULL, TOKEN, "application/json", "{}", NULL), 200);
    assert_int_equal(res.neffects, 0);
    assert_null(res.push_patch);
    api_response_free(&res);
    F.changed = 1;
    /* stale version */
    assert_int_equal(call(&res, "PATCH", p, NULL, TOKEN, "application/json", "{\"a\":1}", "\"2\""),
                     412);
    o = body_json(&res);
    assert_string_equal(json_string_value(json_object_get(o, "error")), "precondition_failed");
    assert_int_equal(json_integer_value(json_object_get(o, "version")), 3);
    json_decref(o);
    assert_int_equal(res.neffects, 0);
    api_response_free(&res);
    /* bad input */
    assert_int_equal(
        call(&res, "PATCH", p, NULL, TOKEN, "application/json", "{\"a\":1}", "W/\"3\""), 400);
    api_response_free(&res);
    assert_int_equal(call(&res, "PATCH", p, NULL, TOKEN, "text/plain", "{\"a\":1}", NULL), 415);
    api_response_free(&res);
    assert_int_equal(
        call(&res, "PATCH", p, NULL, TOKEN, "application/merge-patch+jsonx", "{}", NULL), 415);
    api_response_free(&res);
    assert_int_equal(call(&res, "PATCH", p, NULL, TOKEN, NULL, "{}", NULL), 415);
    api_response_free(&res);
    assert_int_equal(call(&res, "PATCH", p, NULL, TOKEN, "application/json", "[1]", NULL), 400);
    api_response_free(&res);
    assert_int_equal(
        call(&res, "PATCH", p, NULL, TOKEN, "application/json", "{\"a\":1,\"a\":2}", NULL), 400);
    api_response_free(&res);
    /* store outcomes */
    F.outcome = STORE_TOO_BIG;
    assert_int_equal(call(&res, "PATCH", p, NULL, TOKEN, "application/json", "{}", NULL), 413);
    assert_string_equal(error_code(&res), "twin_too_large");
    api_response_free(&res);
    F.outcome = -1;
    assert_int_equal(call(&res, "PATCH", "/api/v1/devices/" ID "/twin/desired", NULL,
                          "Bearer other", "application/json", "{}", NULL),
                     404);
    api_response_free(&res);
    F.fail = 1;
    assert_int_equal(call(&res, "PATCH", p, NULL, TOKEN, "application/json", "{}", NULL), 503);
    assert_string_equal(error_code(&res), "store_unavailable");
    assert_int_equal(res.neffects, 0);
    api_response_free(&res);
}

static void test_fleet_patch(void **state)
{
    struct api_response res;
    json_t *o;
    (void)state;
    assert_int_equal(call(&res, "PATCH", "/api/v1/twins/desired", "tag=ring%3A1", TOKEN,
                          "application/merge-patch+json", "{\"fw\":\"2.0\"}", NULL),
                     200);
    assert_string_equal(F.tag_key, "ring");
    assert_string_equal(F.tag_value, "1");
    o = body_json(&res);
    assert_int_equal(json_integer_value(json_object_get(o, "matched")), 3);
    json_decref(o);
    assert_int_equal(res.neffects, 2);
    assert_string_equal(res.effects[1].device_id, ID2);
    assert_int_equal(res.effects[1].version, 9);
    assert_int_equal(res.effects[0].kind, API_EFFECT_PUSH_DESIRED);
    assert_string_equal(res.push_patch, "{\"fw\":\"2.0\"}");
    api_response_free(&res);
    static const char *const bad[] = {NULL, "", "tag=", "tag=ring", "x=1", "tag=a:b&tag=c:d"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(call(&res, "PATCH", "/api/v1/twins/desired", bad[i], TOKEN,
                              "application/json", "{}", NULL),
                         400);
        api_response_free(&res);
    }
    assert_int_equal(call(&res, "PATCH", "/api/v1/twins/desired", "tag=a:b", TOKEN,
                          "application/json", "{}", "\"1\""),
                     400);
    api_response_free(&res);
    F.outcome = STORE_TOO_BIG;
    assert_int_equal(call(&res, "PATCH", "/api/v1/twins/desired", "tag=a:b", TOKEN,
                          "application/json", "{}", NULL),
                     413);
    assert_int_equal(res.neffects, 0);
    api_response_free(&res);
}

static void test_tags_revoke_reset_delete(void **state)
{
    struct api_response res;
    json_t *o;
    (void)state;
    assert_int_equal(call(&res, "PUT", "/api/v1/devices/" ID "/tags", NULL, TOKEN,
                          "application/json", "{\"z\":\"1\",\"a\":\"x y\"}", NULL),
                     200);
    assert_string_equal(F.tags, "{\"a\":\"x y\",\"z\":\"1\"}");
    o = body_json(&res);
    assert_string_equal(json_string_value(json_object_get(o, "device_id")), ID);
    json_decref(o);
    api_response_free(&res);
    static const char *const bad[] = {"{\"a\":1}", "{\"bad key\":\"v\"}", "[]",
                                      "{\"a\":\"\\u0007\"}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(call(&res, "PUT", "/api/v1/devices/" ID "/tags", NULL, TOKEN,
                              "application/json", bad[i], NULL),
                         400);
        api_response_free(&res);
    }
    assert_int_equal(call(&res, "PUT", "/api/v1/devices/" ID2 "/tags", NULL, TOKEN,
                          "application/json", "{}", NULL),
                     404);
    api_response_free(&res);

    assert_int_equal(
        call(&res, "POST", "/api/v1/devices/" ID "/revoke", NULL, TOKEN, NULL, NULL, NULL), 200);
    assert_string_equal(F.op, "revoke");
    assert_int_equal(res.neffects, 2);
    assert_int_equal(res.effects[0].kind, API_EFFECT_CLOSE_SESSION);
    assert_int_equal(res.effects[0].close_code, 4001);
    assert_string_equal(res.effects[0].device_id, ID);
    assert_int_equal(res.effects[1].kind, API_EFFECT_EVENT);
    assert_string_equal(res.effects[1].event_type, "state");
    assert_string_equal(res.effects[1].event_json,
                        "{\"device_id\":\"" ID "\",\"state\":\"revoked\"}");
    api_response_free(&res);

    assert_int_equal(
        call(&res, "POST", "/api/v1/devices/" ID "/reset", NULL, TOKEN, NULL, NULL, NULL), 200);
    o = body_json(&res);
    assert_string_equal(json_string_value(json_object_get(o, "serial")), "SN1");
    assert_string_equal(json_string_value(json_object_get(o, "state")), "revoked");
    assert_true(json_is_true(json_object_get(o, "rearmed")));
    json_decref(o);
    assert_int_equal(res.neffects, 2);
    assert_int_equal(res.effects[0].close_code, 4001);
    assert_int_equal(res.effects[1].kind, API_EFFECT_EVENT);
    api_response_free(&res);

    assert_int_equal(call(&res, "DELETE", "/api/v1/devices/" ID, NULL, TOKEN, NULL, NULL, NULL),
                     204);
    assert_null(res.body);
    assert_int_equal(res.neffects, 2);
    assert_int_equal(res.effects[0].close_code, 4002);
    assert_string_equal(res.effects[1].event_json,
                        "{\"device_id\":\"" ID "\",\"state\":\"deleted\"}");
    api_response_free(&res);

    static const char *const ops[][2] = {{"POST", "/revoke"}, {"POST", "/reset"}, {"DELETE", ""}};
    for (size_t i = 0; i < 3; i++) {
        char path[128];
        snprintf(path, sizeof(path), "/api/v1/devices/%s%s", ID, ops[i][1]);
        assert_int_equal(call(&res, ops[i][0], path, NULL, "Bearer other", NULL, NULL, NULL), 404);
        assert_int_equal(res.neffects, 0);
        api_response_free(&res);
        F.outcome = STORE_NOT_FOUND; /* e.g. deleted in between */
        if (i != 1) {
            assert_int_equal(call(&res, ops[i][0], path, NULL, TOKEN, NULL, NULL, NULL), 404);
            assert_int_equal(res.neffects, 0);
            api_response_free(&res);
        }
        F.outcome = -1;
    }
}

static void test_device_rename(void **state)
{
    struct api_response res;
    json_t *o;
    const char *p = "/api/v1/devices/" ID;
    (void)state;
    assert_int_equal(call(&res, "PATCH", p, NULL, TOKEN, "application/json",
                          "{\"name\":\"Lobby \\u00e4\"}", NULL),
                     200);
    assert_string_equal(F.op, "rename");
    assert_string_equal(F.device_id, ID);
    assert_string_equal(F.name, "Lobby \xc3\xa4");
    o = body_json(&res); /* the device as it is now, without its twin */
    assert_string_equal(json_string_value(json_object_get(o, "device_id")), ID);
    assert_non_null(json_object_get(o, "presence"));
    assert_null(json_object_get(o, "twin"));
    json_decref(o);
    assert_int_equal(res.neffects, 1); /* "name" for other tabs */
    assert_int_equal(res.effects[0].kind, API_EFFECT_EVENT);
    assert_int_equal(res.effects[0].tenant_id, 7);
    assert_string_equal(res.effects[0].event_type, "name");
    assert_string_equal(res.effects[0].device_id, ID);
    assert_string_equal(res.effects[0].event_json,
                        "{\"device_id\":\"" ID "\",\"name\":\"Lobby \xc3\xa4\"}");
    api_response_free(&res);

    /* null and "" clear it */
    static const char *const clear[] = {"{\"name\":null}", "{\"name\":\"\"}"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(F.name, sizeof(F.name), "untouched");
        assert_int_equal(call(&res, "PATCH", p, NULL, TOKEN, "application/json; charset=utf-8",
                              clear[i], NULL),
                         200);
        assert_string_equal(F.name, "(null)");
        assert_int_equal(res.neffects, 1);
        assert_string_equal(res.effects[0].event_json,
                            "{\"device_id\":\"" ID "\",\"name\":null}");
        api_response_free(&res);
    }

    /* 64 bytes fit (32 x U+00E4 is 32 characters but 64 bytes); 65 do not */
    char body[512], name[200];
    memset(name, 'n', 64);
    name[64] = '\0';
    snprintf(body, sizeof(body), "{\"name\":\"%s\"}", name);
    assert_int_equal(call(&res, "PATCH", p, NULL, TOKEN, "application/json", body, NULL), 200);
    assert_string_equal(F.name, name);
    api_response_free(&res);
    name[0] = '\0';
    for (int i = 0; i < 32; i++)
        strcat(name, "\xc3\xa4");
    snprintf(body, sizeof(body), "{\"name\":\"%s\"}", name);
    assert_int_equal(call(&res, "PATCH", p, NULL, TOKEN, "application/json", body, NULL), 200);
    assert_string_equal(F.name, name);
    api_response_free(&res);

    char long65[80], long_u[80];
    memset(long65, 'n', 65);
    long65[65] = '\0';
    snprintf(body, sizeof(body), "{\"name\":\"%s\"}", long65);
    long_u[0] = '\0';
    for (int i = 0; i < 33; i++)
        strcat(long_u, "\xc3\xa4");
    char body_u[200];
    snprintf(body_u, sizeof(body_u), "{\"name\":\"%s\"}", long_u);
    const char *const bad[] = {
        body,                              /* 65 bytes */
        body_u,                            /* 33 characters, 66 bytes */
        "{\"name\":\"a\\u0007b\"}",         /* control characters */
        "{\"name\":\"tab\\there\"}",
        "{\"name\":\"del\\u007f\"}",
        "{\"name\":\"line\\nbreak\"}",
        "{\"name\":1}",                    /* not a string */
        "{\"name\":true}",
        "{\"name\":[\"a\"]}",
        "{\"name\":{}}",
        "{}",                              /* no name */
        "{\"name\":\"a\",\"tags\":{}}",       /* unknown field */
        "{\"label\":\"a\"}",
        "{\"name\":\"a\",\"name\":\"b\"}",  /* duplicate key */
        "[\"a\"]",
        "\"a\"",
        "{\"name\":",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        F.op[0] = '\0';
        assert_int_equal(call(&res, "PATCH", p, NULL, TOKEN, "application/json", bad[i], NULL),
                         400);
        assert_string_equal(error_code(&res), "bad_request");
        assert_string_equal(F.op, ""); /* refused before the store */
        assert_int_equal(res.neffects, 0);
        api_response_free(&res);
    }
    assert_int_equal(
        call(&res, "PATCH", p, NULL, TOKEN, "text/plain", "{\"name\":\"a\"}", NULL), 415);
    api_response_free(&res);
    assert_int_equal(call(&res, "PATCH", p, NULL, TOKEN, "application/merge-patch+json",
                          "{\"name\":\"a\"}", NULL),
                     415);
    api_response_free(&res);

    /* unknown device, another tenant's, gone in between: 404 and no event */
    assert_int_equal(call(&res, "PATCH", "/api/v1/devices/" ID2, NULL, TOKEN, "application/json",
                          "{\"name\":\"a\"}", NULL),
                     404);
    assert_string_equal(error_code(&res), "not_found");
    assert_int_equal(res.neffects, 0);
    api_response_free(&res);
    assert_int_equal(call(&res, "PATCH", p, NULL, "Bearer other", "application/json",
                          "{\"name\":\"a\"}", NULL),
                     404);
    assert_int_equal(res.neffects, 0);
    api_response_free(&res);
    F.outcome = STORE_NOT_FOUND;
    assert_int_equal(
        call(&res, "PATCH", p, NULL, TOKEN, "application/json", "{\"name\":\"a\"}", NULL), 404);
    assert_int_equal(res.neffects, 0);
    api_response_free(&res);
    F.outcome = -1;
    /* no token; the store failing */
    assert_int_equal(
        call(&res, "PATCH", p, NULL, NULL, "application/json", "{\"name\":\"a\"}", NULL), 401);
    api_response_free(&res);
    F.fail = 1;
    assert_int_equal(
        call(&res, "PATCH", p, NULL, TOKEN, "application/json", "{\"name\":\"a\"}", NULL), 503);
    assert_int_equal(res.neffects, 0);
    api_response_free(&res);
    F.fail = 0;
    /* a store without the operation */
    fake_ops.device_rename = NULL;
    assert_int_equal(
        call(&res, "PATCH", p, NULL, TOKEN, "application/json", "{\"name\":\"a\"}", NULL), 503);
    api_response_free(&res);
}

/* ---- console sessions: cookie auth, CSRF, audit records ---- */

#define COOKIE_VALUE "c00kieC00kieC00kieC00kieC00kieC00kieC00kieX"
#define CSRF_VALUE "csrfCSRFcsrfCSRFcsrfCSRFcsrfCSRFcsrfCSRFcsr"

static struct {
    char action[32], device_id[64], detail[256];
    int n;
} A;

static int f_session_auth(struct store *s, const char *id_hash, int64_t now_ms, int64_t idle_ms,
                          int64_t max_ms, int touch, struct store_session *out, int *outcome)
{
    (void)touch;
    char want[PHY_HASH_HEX_LEN + 1];
    (void)s;
    (void)now_ms;
    assert_int_equal(idle_ms, 1800000);
    assert_int_equal(max_ms, 43200000);
    phy_sha256_hex(COOKIE_VALUE, strlen(COOKIE_VALUE), want);
    memset(out, 0, sizeof(*out));
    *outcome = STORE_NOT_FOUND;
    if (strcmp(id_hash, want) == 0) {
        out->tenant_id = 7;
        out->user_id = 3;
        snprintf(out->tenant, sizeof(out->tenant), "acme");
        snprintf(out->user, sizeof(out->user), "alice");
        snprintf(out->region, sizeof(out->region), "eu");
        snprintf(out->csrf, sizeof(out->csrf), "%s", CSRF_VALUE);
        *outcome = STORE_OK;
    }
    return 0;
}

static int f_audit_add(struct store *s, int64_t tenant_id, int64_t user_id, int64_t now_ms,
                       const char *action, const char *device_id, const char *detail_json)
{
    (void)s;
    (void)now_ms;
    assert_int_equal(tenant_id, 7);
    assert_true(user_id == 1 || user_id == 3);
    snprintf(A.action, sizeof(A.action), "%s", action);
    snprintf(A.device_id, sizeof(A.device_id), "%s", device_id ? device_id : "");
    snprintf(A.detail, sizeof(A.detail), "%s", detail_json ? detail_json : "");
    A.n++;
    return 0;
}

static int call_cookie(struct api_response *res, const char *method, const char *path,
                       const char *cookie, const char *csrf, const char *body)
{
    struct api_request req = {
        .method = method,
        .path = path,
        .cookie = cookie,
        .csrf_token = csrf,
        .content_type = body ? "application/json" : NULL,
        .body = body ? body : "",
        .body_len = body ? strlen(body) : 0,
        .request_id = "r1",
    };
    api_handle(&H, &req, res);
    return res->status;
}

static void test_cookie_auth_and_csrf(void **state)
{
    struct api_response res;
    (void)state;
    H.cfg.session_idle_s = 1800;
    H.cfg.session_max_s = 43200;
    fake_ops.console_session_auth = f_session_auth;
    fake_ops.audit_add = f_audit_add;
    memset(&A, 0, sizeof(A));

#define CK "__Host-phy_session="
    /* Other cookies of the site, well-formed or not, do not matter; ours must be. */
    static const char *const good[] = {
        CK COOKIE_VALUE,
        "x=1; " CK COOKIE_VALUE "; y=\"2\"",
        CK COOKIE_VALUE ";y=2",
        CK COOKIE_VALUE "; ",
        "prefs={\"a\":1, \"b\":2}; " CK COOKIE_VALUE,
        "a b=1;" CK COOKIE_VALUE,
        "=x; " CK COOKIE_VALUE,
        CK COOKIE_VALUE "; " CK COOKIE_VALUE, /* the same twice */
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(call_cookie(&res, "GET", "/api/v1/devices", good[i], NULL, NULL), 200);
        api_response_free(&res);
    }
    static const char *const bad[] = {
        CK COOKIE_VALUE "x",
        CK COOKIE_VALUE "; " CK "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", /* two sessions */
        CK "\"" COOKIE_VALUE "\"",
        "__Host-phy_session " COOKIE_VALUE,
        CK "c00kieC00kieC00kieC00kieC00kieC00kieC00kie=",
        "",
        CK "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", /* unknown */
        "phy_session=" COOKIE_VALUE,                      /* the old name */
        "__HOST-PHY_SESSION=" COOKIE_VALUE,
        "x" CK COOKIE_VALUE,
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(call_cookie(&res, "GET", "/api/v1/devices", bad[i], NULL, NULL), 401);
        assert_string_equal(error_code(&res), "unauthorized");
        api_response_free(&res);
    }
    /* CSRF on everything but GET/HEAD */
    const char *path = "/api/v1/devices/" ID "/revoke";
    static const char *const wrong[] = {NULL, "", "x", CSRF_VALUE "x",
                                        "csrfCSRFcsrfCSRFcsrfCSRFcsrfCSRFcsrfCSRFcsX"};
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        assert_int_equal(
            call_cookie(&res, "POST", path, CK COOKIE_VALUE, wrong[i], NULL), 403);
        assert_string_equal(error_code(&res), "csrf_failed");
        assert_int_equal(res.neffects, 0);
        api_response_free(&res);
    }
    assert_int_equal(A.n, 0);
    assert_int_equal(call_cookie(&res, "POST", path, CK COOKIE_VALUE, CSRF_VALUE, NULL),
                     200);
    api_response_free(&res);
    assert_int_equal(A.n, 1);
    assert_string_equal(A.action, "device.revoke");
    assert_string_equal(A.device_id, ID);
    assert_string_equal(A.detail, "");

    /* GET /api/v1/session: the cookie's user and CSRF token; a token caller has none */
    assert_int_equal(
        call_cookie(&res, "GET", "/api/v1/session", CK COOKIE_VALUE, NULL, NULL), 200);
    json_t *o = body_json(&res);
    assert_string_equal(json_string_value(json_object_get(o, "user")), "alice");
    assert_string_equal(json_string_value(json_object_get(o, "csrf_token")), CSRF_VALUE);
    json_decref(o);
    api_response_free(&res);
    assert_int_equal(call(&res, "GET", "/api/v1/session", NULL, TOKEN, NULL, NULL, NULL), 200);
    o = body_json(&res);
    assert_true(json_is_null(json_object_get(o, "user")));
    assert_null(json_object_get(o, "csrf_token"));
    json_decref(o);
    api_response_free(&res);

    /* audit details of a desired patch and a tags change */
    assert_int_equal(call(&res, "PATCH", "/api/v1/devices/" ID "/twin/desired", NULL, TOKEN,
                          "application/json", "{\"b\":1,\"a\":[true]}", NULL),
                     200);
    api_response_free(&res);
    assert_string_equal(A.action, "device.desired_patch");
    o = json_loads(A.detail, 0, NULL);
    assert_non_null(o);
    assert_non_null(json_object_get(o, "version"));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "patch"), "b")), 1);
    json_decref(o);
    assert_int_equal(call(&res, "PUT", "/api/v1/devices/" ID "/tags", NULL, TOKEN,
                          "application/json", "{\"site\":\"rome\"}", NULL),
                     200);
    api_response_free(&res);
    assert_string_equal(A.action, "device.tags");
    assert_string_equal(A.detail, "{\"tags\":{\"site\":\"rome\"}}");

    /* a rename: CSRF for cookie callers; audit detail {"name": new or null} */
    const char *dev = "/api/v1/devices/" ID;
    int n = A.n;
    assert_int_equal(call_cookie(&res, "PATCH", dev, CK COOKIE_VALUE, NULL, "{\"name\":\"x\"}"),
                     403);
    assert_string_equal(error_code(&res), "csrf_failed");
    api_response_free(&res);
    assert_int_equal(A.n, n);
    assert_int_equal(
        call_cookie(&res, "PATCH", dev, CK COOKIE_VALUE, CSRF_VALUE, "{\"name\":\"Gate <2>\"}"),
        200);
    assert_int_equal(res.neffects, 1);
    api_response_free(&res);
    assert_int_equal(A.n, n + 1);
    assert_string_equal(A.action, "device.rename");
    assert_string_equal(A.device_id, ID);
    assert_string_equal(A.detail, "{\"name\":\"Gate <2>\"}");
    assert_int_equal(
        call_cookie(&res, "PATCH", dev, CK COOKIE_VALUE, CSRF_VALUE, "{\"name\":null}"), 200);
    api_response_free(&res);
    assert_string_equal(A.detail, "{\"name\":null}");
    /* a refused rename is not recorded */
    assert_int_equal(
        call_cookie(&res, "PATCH", dev, CK COOKIE_VALUE, CSRF_VALUE, "{\"name\":7}"), 400);
    api_response_free(&res);
    assert_int_equal(A.n, n + 2);
}

static void test_static_without_web_root(void **state)
{
    struct api_response res;
    (void)state;
    static const char *const paths[] = {"/",      "/index.html", "/app.js", "/../x.js",
                                        "/.x.js", "/a/b.js",     "/x.txt"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        assert_int_equal(call(&res, "GET", paths[i], NULL, NULL, NULL, NULL, NULL), 404);
        api_response_free(&res);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_match),
        cmocka_unit_test(test_pct_decode_and_query),
        cmocka_unit_test(test_if_match),
        cmocka_unit_test_setup(test_routes_404_405, setup),
        cmocka_unit_test_setup(test_list_filters, setup),
        cmocka_unit_test_setup(test_get_device, setup),
        cmocka_unit_test_setup(test_desired_patch, setup),
        cmocka_unit_test_setup(test_fleet_patch, setup),
        cmocka_unit_test_setup(test_tags_revoke_reset_delete, setup),
        cmocka_unit_test_setup(test_device_rename, setup),
        cmocka_unit_test_setup(test_cookie_auth_and_csrf, setup),
        cmocka_unit_test_setup(test_static_without_web_root, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
