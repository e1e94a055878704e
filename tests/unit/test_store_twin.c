/* Unit tests of the SQLite store's device side: twins, presence, auth, revoke/reset/delete,
 * migration. */

/* struct fx's own field here: the next poll token reg_next() hands out. */
#define TEST_STORE_FX_EXTRA unsigned next_token;
#include <poll.h>
#include <time.h>

#include "teststore.h"
#include "announce.h"

#include <sys/stat.h>

#include "phy/twin.h"

/* The schema of version 1 (hub/store_sqlite.c before twins), for the migration test. */
static const char V1_SCHEMA_SQL[] =
    "CREATE TABLE IF NOT EXISTS tenants("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  region TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS users("
    "  id INTEGER PRIMARY KEY,"
    "  tenant_id INTEGER NOT NULL REFERENCES tenants(id),"
    "  name TEXT NOT NULL,"
    "  pw_hash TEXT NOT NULL,"
    "  UNIQUE(tenant_id, name));"
    "CREATE TABLE IF NOT EXISTS api_tokens("
    "  token_hash TEXT PRIMARY KEY,"
    "  tenant_id INTEGER NOT NULL REFERENCES tenants(id),"
    "  user_id INTEGER NOT NULL REFERENCES users(id),"
    "  created_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS registrations("
    "  token_hash TEXT PRIMARY KEY,"
    "  serial TEXT NOT NULL,"
    "  code TEXT,"
    "  code_expires_ms INTEGER NOT NULL DEFAULT 0,"
    "  interval_s INTEGER NOT NULL,"
    "  last_poll_ms INTEGER,"
    "  last_active_ms INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS registrations_serial ON registrations(serial);"
    "CREATE INDEX IF NOT EXISTS registrations_code ON registrations(code);"
    "CREATE TABLE IF NOT EXISTS devices("
    "  device_id TEXT PRIMARY KEY,"
    "  tenant_id INTEGER NOT NULL,"
    "  serial TEXT NOT NULL,"
    "  name TEXT,"
    "  tags_json TEXT NOT NULL DEFAULT '{}',"
    "  secret_hash TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS devices_tenant ON devices(tenant_id, device_id);"
    "CREATE TABLE IF NOT EXISTS issuances("
    "  serial TEXT PRIMARY KEY,"
    "  code TEXT,"
    "  token_hash TEXT NOT NULL,"
    "  device_id TEXT NOT NULL,"
    "  sealed BLOB,"
    "  created_ms INTEGER NOT NULL,"
    "  delivered_ms INTEGER);"
    "CREATE INDEX IF NOT EXISTS issuances_code ON issuances(code);"
    "CREATE INDEX IF NOT EXISTS issuances_token ON issuances(token_hash);"
    "CREATE TABLE IF NOT EXISTS claim_failures("
    "  tenant_id INTEGER NOT NULL,"
    "  user_id INTEGER NOT NULL,"
    "  at_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS claim_failures_tenant ON claim_failures(tenant_id, at_ms);"
    "CREATE INDEX IF NOT EXISTS claim_failures_user ON claim_failures(tenant_id, user_id, at_ms);"
    "PRAGMA user_version = 1;";

/* The sealer of this file's claims: 0xee, then the serial. */
static unsigned char *seal_ee(void *ctx, const char *serial, size_t *out_len)
{
    size_t n = strlen(serial);
    unsigned char *b = malloc(n + 1);
    (void)ctx;
    assert_non_null(b);
    b[0] = 0xee;
    memcpy(b + 1, serial, n);
    *out_len = n + 1;
    return b;
}

static int setup_nostore(void **state)
{
    fx_new(state, "phy_test_twin_", NULL)->next_token = 1;
    return 0;
}

static int setup(void **state)
{
    setup_nostore(state);
    fx_open(*state);
    return 0;
}

/* ---- helpers ---- */

/* Registers serial with a new poll token and returns that token. */
static unsigned reg_next(struct fx *f, const char *serial)
{
    unsigned tok = f->next_token++;
    assert_int_equal(reg(f, serial, tok), STORE_OK);
    return tok;
}

/* Claims serial for tenant as device i with secret hash H(1000 + i); returns the outcome. */
static int claim(struct fx *f, int64_t tenant, const char *serial, unsigned i, const char *tags)
{
    struct id id = ID(i);
    struct hash sh = H(1000 + i);
    struct store_claim c = {
        .serial_claims = SERIAL_CLAIMS_ANY, /* the tests below predate attestation */
        .tenant_id = tenant,
        .user_id = 1,
        .serial = serial,
        .device_id = id.s,
        .secret_hash = sh.h,
        .tags_json = tags,
        .seal = seal_ee,
    };
    struct store_device d;
    int out = -1;
    assert_int_equal(ops->claim(f->s, &f->p, &c, &d, &out), 0);
    store_device_clear(&d);
    return out;
}

/* A claimed device i of tenant with serial "S<i>" and the given tags. */
static void mkdev(struct fx *f, int64_t tenant, unsigned i, const char *tags)
{
    char serial[32];
    snprintf(serial, sizeof serial, "S%u", i);
    reg_next(f, serial);
    assert_int_equal(claim(f, tenant, serial, i, tags), STORE_OK);
}

static int dpatch(struct fx *f, int64_t tenant, unsigned i, const char *patch, int64_t if_match,
                  int64_t *version, int *changed)
{
    struct id id = ID(i);
    int64_t v = -1;
    int ch = -1, out = -1;
    assert_int_equal(ops->desired_patch(f->s, tenant, id.s, patch, if_match, &v, &ch, &out), 0);
    if (version)
        *version = v;
    if (changed)
        *changed = ch;
    return out;
}

static int rpatch(struct fx *f, unsigned i, const char *patch, int64_t *version, int *changed)
{
    struct id id = ID(i);
    int64_t v = -1;
    int ch = -1, out = -1;
    assert_int_equal(ops->reported_patch(f->s, id.s, patch, f->p.now_ms, &v, &ch, &out), 0);
    if (version)
        *version = v;
    if (changed)
        *changed = ch;
    return out;
}

/* device_get, asserting success and OK; caller clears d and t. */
static void get(struct fx *f, int64_t tenant, unsigned i, struct store_device *d,
                struct store_twin *t)
{
    struct id id = ID(i);
    int out = -1;
    assert_int_equal(ops->device_get(f->s, tenant, id.s, d, t, &out), 0);
    assert_int_equal(out, STORE_OK);
}

static int get_outcome(struct fx *f, int64_t tenant, unsigned i)
{
    struct store_device d;
    struct store_twin t;
    struct id id = ID(i);
    int out = -1;
    assert_int_equal(ops->device_get(f->s, tenant, id.s, &d, &t, &out), 0);
    store_device_clear(&d);
    store_twin_free(&t);
    return out;
}

static void expect_twin(struct fx *f, int64_t tenant, unsigned i, const char *desired, int64_t dv,
                        const char *reported, int64_t rv)
{
    struct store_device d;
    struct store_twin t;
    get(f, tenant, i, &d, &t);
    assert_string_equal(t.desired, desired);
    assert_int_equal(t.desired_version, dv);
    assert_string_equal(t.reported, reported);
    assert_int_equal(t.reported_version, rv);
    store_device_clear(&d);
    store_twin_free(&t);
}

static int auth(struct fx *f, unsigned i, unsigned secret, int64_t *tenant)
{
    struct id id = ID(i);
    struct hash h = H(secret);
    int out = -1;
    assert_int_equal(ops->device_auth(f->s, id.s, h.h, tenant, &out), 0);
    return out;
}

static int dev_op(struct fx *f, int (*op)(struct store *, int64_t, const char *, int64_t, int *),
                  int64_t tenant, unsigned i)
{
    struct id id = ID(i);
    int out = -1;
    assert_int_equal(op(f->s, tenant, id.s, f->p.now_ms, &out), 0);
    return out;
}

static int del(struct fx *f, int64_t tenant, unsigned i)
{
    struct id id = ID(i);
    int out = -1;
    assert_int_equal(ops->device_delete(f->s, tenant, id.s, &out), 0);
    return out;
}

/* Lists with a filter, all pages of `page` rows; returns the ids as "n,n,..." of
 * device numbers (the last 4 digits of each id). */
static void list_ids(struct fx *f, int64_t tenant, const struct store_device_filter *flt, int page,
                     char *buf, size_t cap)
{
    char after[PHY_DEVICE_ID_LEN + 1] = "";
    size_t len = 0;
    buf[0] = '\0';
    for (;;) {
        struct store_device *d = NULL;
        size_t n = 0;
        assert_int_equal(
            ops->devices_list(f->s, tenant, flt, after[0] ? after : NULL, page, &d, &n), 0);
        assert_true(n <= (size_t)page);
        for (size_t i = 0; i < n; i++) {
            int w = snprintf(buf + len, cap - len, "%s%u", len ? "," : "",
                             (unsigned)strtoul(d[i].device_id + 4, NULL, 10));
            assert_true(w > 0 && (size_t)w < cap - len);
            len += (size_t)w;
        }
        if (n > 0)
            memcpy(after, d[n - 1].device_id, sizeof after);
        store_devices_free(d, n);
        if (n < (size_t)page)
            break;
    }
}

/* ---- tests ---- */

static void test_desired_versions(void **state)
{
    struct fx *f = *state;
    int64_t v;
    int ch;
    mkdev(f, 1, 1, NULL);
    expect_twin(f, 1, 1, "{}", 0, "{}", 0);

    assert_int_equal(dpatch(f, 1, 1, "{\"a\":1}", -1, &v, &ch), STORE_OK);
    assert_int_equal(v, 1);
    assert_int_equal(ch, 1);
    /* The same patch again changes nothing: no new version. */
    assert_int_equal(dpatch(f, 1, 1, "{\"a\":1}", -1, &v, &ch), STORE_OK);
    assert_int_equal(v, 1);
    assert_int_equal(ch, 0);
    assert_int_equal(dpatch(f, 1, 1, "{}", -1, &v, &ch), STORE_OK);
    assert_int_equal(v, 1);
    assert_int_equal(ch, 0);
    assert_int_equal(dpatch(f, 1, 1, "{\"b\":{\"c\":[1,2]},\"z\":null}", -1, &v, &ch), STORE_OK);
    assert_int_equal(v, 2);
    assert_int_equal(ch, 1);
    /* null deletes; deleting an absent key is a no-op. */
    assert_int_equal(dpatch(f, 1, 1, "{\"a\":null}", -1, &v, &ch), STORE_OK);
    assert_int_equal(v, 3);
    assert_int_equal(dpatch(f, 1, 1, "{\"a\":null}", -1, &v, &ch), STORE_OK);
    assert_int_equal(v, 3);
    assert_int_equal(ch, 0);
    expect_twin(f, 1, 1, "{\"b\":{\"c\":[1,2]}}", 3, "{}", 0);

    /* Reported has its own version; last_seen follows reports. */
    f->p.now_ms = T0 + 5000;
    assert_int_equal(rpatch(f, 1, "{\"config_status\":{\"ok\":true}}", &v, &ch), STORE_OK);
    assert_int_equal(v, 1);
    assert_int_equal(ch, 1);
    assert_int_equal(rpatch(f, 1, "{\"config_status\":{\"ok\":true}}", &v, &ch), STORE_OK);
    assert_int_equal(v, 1);
    assert_int_equal(ch, 0);
    assert_int_equal(rpatch(f, 1, "{\"config_status\":{\"ok\":false,\"code\":2}}", &v, &ch),
                     STORE_OK);
    assert_int_equal(v, 2);
    expect_twin(f, 1, 1, "{\"b\":{\"c\":[1,2]}}", 3,
                "{\"config_status\":{\"code\":2,\"ok\":false}}", 2);

    struct store_twin t;
    struct id id = ID(1);
    int out = -1;
    assert_int_equal(ops->twin_get(f->s, id.s, &t, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_string_equal(t.desired, "{\"b\":{\"c\":[1,2]}}");
    assert_int_equal(t.desired_version, 3);
    assert_int_equal(t.reported_version, 2);
    assert_string_equal(t.tags, "{}");
    store_twin_free(&t);
    store_twin_free(&t); /* a cleared twin may be freed again */

    struct store_device d;
    get(f, 1, 1, &d, NULL);
    assert_int_equal(d.last_seen_ms, T0 + 5000);
    store_device_clear(&d);

    /* Bad patches are invalid input, not outcomes. */
    int64_t vv;
    int cc;
    assert_int_equal(ops->desired_patch(f->s, 1, id.s, "[1]", -1, &vv, &cc, &out), PHY_EINVAL);
    assert_int_equal(ops->desired_patch(f->s, 1, id.s, "nope", -1, &vv, &cc, &out), PHY_EINVAL);
    assert_int_equal(ops->desired_patch(f->s, 1, id.s, NULL, -1, &vv, &cc, &out), PHY_EINVAL);
    assert_int_equal(ops->desired_patch(f->s, 1, id.s, "{\"a\":1,\"a\":2}", -1, &vv, &cc, &out),
                     PHY_EINVAL);
    assert_int_equal(ops->reported_patch(f->s, id.s, "3", T0, &vv, &cc, &out), PHY_EINVAL);
    assert_int_equal(ops->desired_patch(f->s, 1, "", "{}", -1, &vv, &cc, &out), PHY_EINVAL);
    expect_twin(f, 1, 1, "{\"b\":{\"c\":[1,2]}}", 3,
                "{\"config_status\":{\"code\":2,\"ok\":false}}", 2);
    assert_int_equal(rpatch(f, 99, "{}", NULL, NULL), STORE_NOT_FOUND);
}

static void test_if_match(void **state)
{
    struct fx *f = *state;
    int64_t v;
    int ch;
    mkdev(f, 1, 1, NULL);
    assert_int_equal(dpatch(f, 1, 1, "{\"a\":1}", 0, &v, &ch), STORE_OK);
    assert_int_equal(v, 1);
    /* Stale: refused, the current version is returned, nothing written. */
    assert_int_equal(dpatch(f, 1, 1, "{\"a\":2}", 0, &v, &ch), STORE_PRECONDITION);
    assert_int_equal(v, 1);
    assert_int_equal(ch, 0);
    assert_int_equal(dpatch(f, 1, 1, "{\"a\":2}", 7, &v, &ch), STORE_PRECONDITION);
    expect_twin(f, 1, 1, "{\"a\":1}", 1, "{}", 0);
    assert_int_equal(dpatch(f, 1, 1, "{\"a\":2}", 1, &v, &ch), STORE_OK);
    assert_int_equal(v, 2);
    assert_int_equal(ch, 1);
    /* A matching no-op keeps the version. */
    assert_int_equal(dpatch(f, 1, 1, "{\"a\":2}", 2, &v, &ch), STORE_OK);
    assert_int_equal(v, 2);
    assert_int_equal(ch, 0);
    expect_twin(f, 1, 1, "{\"a\":2}", 2, "{}", 0);
}

/* A patch {"k":"xxx…"} whose value has n bytes. */
static char *big_patch(const char *key, size_t n)
{
    size_t cap = n + strlen(key) + 16;
    char *p = malloc(cap);
    assert_non_null(p);
    int w = snprintf(p, cap, "{\"%s\":\"", key);
    memset(p + w, 'x', n);
    memcpy(p + w + n, "\"}", 3);
    return p;
}

static void test_too_big(void **state)
{
    struct fx *f = *state;
    int64_t v;
    int ch;
    mkdev(f, 1, 1, NULL);
    assert_int_equal(dpatch(f, 1, 1, "{\"keep\":1}", -1, &v, NULL), STORE_OK);
    assert_int_equal(rpatch(f, 1, "{\"keep\":2}", &v, NULL), STORE_OK);

    /* Over the section limit, alone or together with what is there. */
    char *p = big_patch("big", PHY_TWIN_MAX_BYTES);
    assert_int_equal(dpatch(f, 1, 1, p, -1, &v, &ch), STORE_TOO_BIG);
    assert_int_equal(ch, 0);
    assert_int_equal(rpatch(f, 1, p, &v, &ch), STORE_TOO_BIG);
    free(p);
    p = big_patch("half", PHY_TWIN_MAX_BYTES / 2);
    assert_int_equal(dpatch(f, 1, 1, p, -1, &v, &ch), STORE_OK);
    assert_int_equal(v, 2);
    free(p);
    p = big_patch("other", PHY_TWIN_MAX_BYTES / 2);
    assert_int_equal(dpatch(f, 1, 1, p, -1, &v, &ch), STORE_TOO_BIG);
    free(p);
    /* Patch text over the store's bound. */
    p = big_patch("huge", 9 * PHY_TWIN_MAX_BYTES);
    assert_int_equal(dpatch(f, 1, 1, p, -1, &v, &ch), STORE_TOO_BIG);
    assert_int_equal(rpatch(f, 1, p, &v, &ch), STORE_TOO_BIG);
    free(p);
    /* Too deep: 11 levels. */
    const char *deep =
        "{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{\"h\":{\"i\":{\"j\":{}}}}}}}}}}}";
    assert_int_equal(dpatch(f, 1, 1, deep, -1, &v, &ch), STORE_TOO_BIG);
    assert_int_equal(rpatch(f, 1, deep, &v, &ch), STORE_TOO_BIG);

    struct store_twin t;
    struct store_device d;
    get(f, 1, 1, &d, &t);
    assert_int_equal(t.desired_version, 2);
    assert_int_equal(t.reported_version, 1);
    assert_string_equal(t.reported, "{\"keep\":2}");
    assert_non_null(strstr(t.desired, "\"keep\":1"));
    assert_non_null(strstr(t.desired, "\"half\":"));
    assert_null(strstr(t.desired, "\"other\""));
    store_device_clear(&d);
    store_twin_free(&t);
}

static void test_tenant_scoping(void **state)
{
    struct fx *f = *state;
    struct id id = ID(1);
    struct store_device d;
    struct store_twin t;
    int out = -1;
    mkdev(f, 1, 1, "{\"site\":\"a\"}");
    assert_int_equal(dpatch(f, 1, 1, "{\"a\":1}", -1, NULL, NULL), STORE_OK);

    assert_int_equal(get_outcome(f, 2, 1), STORE_NOT_FOUND);
    assert_int_equal(ops->device_get(f->s, 2, id.s, &d, &t, &out), 0);
    assert_null(d.tags_json);
    assert_null(t.desired);
    assert_int_equal(dpatch(f, 2, 1, "{\"a\":2}", -1, NULL, NULL), STORE_NOT_FOUND);
    assert_int_equal(ops->tags_put(f->s, 2, id.s, "{}", &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    assert_int_equal(dev_op(f, ops->device_revoke, 2, 1), STORE_NOT_FOUND);
    assert_int_equal(dev_op(f, ops->device_reset, 2, 1), STORE_NOT_FOUND);
    assert_int_equal(del(f, 2, 1), STORE_NOT_FOUND);
    size_t matched = 9, n = 9;
    struct store_push *pushes = NULL;
    assert_int_equal(
        ops->desired_patch_tag(f->s, 2, "site", "a", "{\"a\":3}", &matched, &pushes, &n, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(matched, 0);
    assert_int_equal(n, 0);
    assert_null(pushes);
    char ids[64];
    list_ids(f, 2, NULL, 10, ids, sizeof ids);
    assert_string_equal(ids, "");

    /* Untouched in its own tenant. */
    get(f, 1, 1, &d, &t);
    assert_string_equal(d.state, "pending_delivery");
    assert_string_equal(d.tags_json, "{\"site\":\"a\"}");
    assert_string_equal(t.desired, "{\"a\":1}");
    assert_int_equal(t.desired_version, 1);
    store_device_clear(&d);
    store_twin_free(&t);
    assert_int_equal(auth(f, 1, 1001, NULL), STORE_OK);
}

/* More distinct desired sections than the fleet patch groups (64): every device is
 * merged and written on its own, with the same outcome. */
static void test_patch_by_tag_many_sections(void **state)
{
    struct fx *f = *state;
    struct store_push *pushes = NULL;
    size_t matched = 0, n = 0;
    int out = -1;
    char patch[64], want[96];
    for (unsigned i = 1; i <= 70; i++) {
        mkdev(f, 1, i, "{\"site\":\"m\"}");
        snprintf(patch, sizeof patch, "{\"n\":%u}", i);
        assert_int_equal(dpatch(f, 1, i, patch, -1, NULL, NULL), STORE_OK);
    }
    assert_int_equal(dpatch(f, 1, 70, "{\"all\":1}", -1, NULL, NULL), STORE_OK); /* v2 */
    assert_int_equal(ops->desired_patch_tag(f->s, 1, "site", "m", "{\"all\":1}", &matched,
                                            &pushes, &n, &out),
                     0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(matched, 70);
    assert_int_equal(n, 69); /* device 70 already had it */
    for (unsigned i = 0; i < 69; i++) {
        struct id id = ID(i + 1);
        assert_string_equal(pushes[i].device_id, id.s);
        assert_int_equal(pushes[i].version, 2);
    }
    free(pushes);
    snprintf(want, sizeof want, "{\"all\":1,\"n\":%u}", 33);
    expect_twin(f, 1, 33, want, 2, "{}", 0);
}

static void test_patch_by_tag(void **state)
{
    struct fx *f = *state;
    struct store_push *pushes = NULL;
    size_t matched = 0, n = 0;
    int out = -1;
    struct id id;

    mkdev(f, 1, 1, "{\"site\":\"a\"}");
    mkdev(f, 1, 2, "{\"site\":\"a\",\"rack\":\"7\"}");
    mkdev(f, 1, 3, "{\"site\":\"b\"}");
    mkdev(f, 1, 4, "{\"site\":\"a\"}"); /* revoked below */
    mkdev(f, 2, 5, "{\"site\":\"a\"}"); /* another tenant */
    mkdev(f, 1, 6, "{\"site\":\"a\",\"rack.id\":\"7\"}");
    mkdev(f, 1, 7, "{\"rack\":{\"id\":\"7\"},\"site\":1}");
    mkdev(f, 1, 8, NULL);
    assert_int_equal(dpatch(f, 1, 6, "{\"pre\":true}", -1, NULL, NULL), STORE_OK);
    assert_int_equal(dev_op(f, ops->device_revoke, 1, 4), STORE_OK);

    assert_int_equal(ops->desired_patch_tag(f->s, 1, "site", "a", "{\"cfg\":{\"level\":3}}",
                                            &matched, &pushes, &n, &out),
                     0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(matched, 3);
    assert_int_equal(n, 3);
    id = ID(1);
    assert_string_equal(pushes[0].device_id, id.s);
    assert_int_equal(pushes[0].version, 1);
    id = ID(2);
    assert_string_equal(pushes[1].device_id, id.s);
    assert_int_equal(pushes[1].version, 1);
    id = ID(6);
    assert_string_equal(pushes[2].device_id, id.s);
    assert_int_equal(pushes[2].version, 2);
    free(pushes);
    expect_twin(f, 1, 1, "{\"cfg\":{\"level\":3}}", 1, "{}", 0);
    expect_twin(f, 1, 6, "{\"cfg\":{\"level\":3},\"pre\":true}", 2, "{}", 0);
    expect_twin(f, 1, 3, "{}", 0, "{}", 0);
    expect_twin(f, 1, 4, "{}", 0, "{}", 0);
    expect_twin(f, 2, 5, "{}", 0, "{}", 0);
    expect_twin(f, 1, 7, "{}", 0, "{}", 0); /* a number is not the string "1" either */

    /* Again: all match, none changes. */
    assert_int_equal(ops->desired_patch_tag(f->s, 1, "site", "a", "{\"cfg\":{\"level\":3}}",
                                            &matched, &pushes, &n, &out),
                     0);
    assert_int_equal(matched, 3);
    assert_int_equal(n, 0);
    assert_null(pushes);
    /* A mix: only device 1 differs. */
    assert_int_equal(dpatch(f, 1, 1, "{\"cfg\":null}", -1, NULL, NULL), STORE_OK);
    assert_int_equal(ops->desired_patch_tag(f->s, 1, "site", "a", "{\"cfg\":{\"level\":3}}",
                                            &matched, &pushes, &n, &out),
                     0);
    assert_int_equal(matched, 3);
    assert_int_equal(n, 1);
    id = ID(1);
    assert_string_equal(pushes[0].device_id, id.s);
    assert_int_equal(pushes[0].version, 3);
    free(pushes);

    /* A key with a dot is one key, not a path. */
    assert_int_equal(
        ops->desired_patch_tag(f->s, 1, "rack.id", "7", "{\"r\":1}", &matched, &pushes, &n, &out),
        0);
    assert_int_equal(matched, 1);
    assert_int_equal(n, 1);
    id = ID(6);
    assert_string_equal(pushes[0].device_id, id.s);
    free(pushes);
    assert_int_equal(
        ops->desired_patch_tag(f->s, 1, "site", "zzz", "{\"r\":1}", &matched, &pushes, &n, &out),
        0);
    assert_int_equal(matched, 0);
    assert_int_equal(n, 0);

    /* One device would grow too big: nothing is applied anywhere. */
    char *p = big_patch("half", PHY_TWIN_MAX_BYTES * 3 / 4);
    assert_int_equal(dpatch(f, 1, 2, p, -1, NULL, NULL), STORE_OK);
    free(p);
    p = big_patch("quarter", PHY_TWIN_MAX_BYTES / 3);
    assert_int_equal(ops->desired_patch_tag(f->s, 1, "site", "a", p, &matched, &pushes, &n, &out),
                     0);
    assert_int_equal(out, STORE_TOO_BIG);
    assert_int_equal(n, 0);
    assert_null(pushes);
    free(p);
    expect_twin(f, 1, 1, "{\"cfg\":{\"level\":3}}", 3, "{}", 0);

    /* Invalid keys and values. */
    assert_int_equal(
        ops->desired_patch_tag(f->s, 1, "si te", "a", "{}", &matched, &pushes, &n, &out),
        PHY_EINVAL);
    assert_int_equal(
        ops->desired_patch_tag(f->s, 1, "a\"b", "a", "{}", &matched, &pushes, &n, &out),
        PHY_EINVAL);
    assert_int_equal(ops->desired_patch_tag(f->s, 1, "", "a", "{}", &matched, &pushes, &n, &out),
                     PHY_EINVAL);
    assert_int_equal(
        ops->desired_patch_tag(f->s, 1, "site", NULL, "{}", &matched, &pushes, &n, &out),
        PHY_EINVAL);
    assert_int_equal(
        ops->desired_patch_tag(f->s, 1, "site", "a", "[]", &matched, &pushes, &n, &out),
        PHY_EINVAL);
}

static void test_list_filters(void **state)
{
    struct fx *f = *state;
    struct store_device_filter flt = {.presence = -1};
    char ids[128];
    struct id id;
    for (unsigned i = 1; i <= 7; i++)
        mkdev(f, 1, i, i % 2 ? "{\"site\":\"odd\"}" : "{\"site\":\"even\",\"x\":\"y\"}");
    mkdev(f, 2, 8, "{\"site\":\"odd\"}");
    id = ID(2);
    assert_int_equal(ops->session_open(f->s, id.s, T0 + 1, NULL), 0);
    id = ID(3);
    assert_int_equal(ops->session_open(f->s, id.s, T0 + 2, NULL), 0);
    id = ID(5);
    assert_int_equal(ops->session_open(f->s, id.s, T0 + 3, NULL), 0);
    id = ID(8);
    assert_int_equal(ops->session_open(f->s, id.s, T0 + 3, NULL), 0);

    list_ids(f, 1, NULL, 3, ids, sizeof ids);
    assert_string_equal(ids, "1,2,3,4,5,6,7");
    list_ids(f, 1, &flt, 100, ids, sizeof ids);
    assert_string_equal(ids, "1,2,3,4,5,6,7");
    flt.presence = 1;
    list_ids(f, 1, &flt, 1, ids, sizeof ids);
    assert_string_equal(ids, "2,3,5");
    flt.presence = 0;
    list_ids(f, 1, &flt, 2, ids, sizeof ids);
    assert_string_equal(ids, "1,4,6,7");
    flt.presence = -1;
    flt.tag_key = "site";
    flt.tag_value = "odd";
    list_ids(f, 1, &flt, 2, ids, sizeof ids);
    assert_string_equal(ids, "1,3,5,7");
    flt.presence = 1;
    list_ids(f, 1, &flt, 2, ids, sizeof ids);
    assert_string_equal(ids, "3,5");
    flt.presence = 0;
    flt.tag_key = "x";
    flt.tag_value = "y";
    list_ids(f, 1, &flt, 2, ids, sizeof ids);
    assert_string_equal(ids, "4,6");
    flt.tag_value = "z";
    list_ids(f, 1, &flt, 2, ids, sizeof ids);
    assert_string_equal(ids, "");

    /* Presence fields and the last status are filled in. */
    struct store_device *d = NULL;
    size_t n = 0;
    flt = (struct store_device_filter){.presence = 1};
    id = ID(3);
    assert_int_equal(ops->status_put(f->s, id.s, "{\"uptime_s\":5}", T0 + 10), 0);
    assert_int_equal(ops->devices_list(f->s, 1, &flt, NULL, 10, &d, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(d[0].online, 1);
    assert_int_equal(d[0].connected_ms, T0 + 1);
    assert_int_equal(d[0].last_seen_ms, T0 + 1);
    assert_null(d[0].last_status_json);
    assert_string_equal(d[0].state, "active");
    assert_string_equal(d[1].last_status_json, "{\"uptime_s\":5}");
    assert_int_equal(d[1].last_status_ms, T0 + 10);
    assert_int_equal(d[1].last_seen_ms, T0 + 10);
    store_devices_free(d, n);

    /* Invalid filters. */
    flt = (struct store_device_filter){.presence = 2};
    assert_int_equal(ops->devices_list(f->s, 1, &flt, NULL, 10, &d, &n), PHY_EINVAL);
    flt = (struct store_device_filter){.presence = -1, .tag_key = "site"};
    assert_int_equal(ops->devices_list(f->s, 1, &flt, NULL, 10, &d, &n), PHY_EINVAL);
    flt.tag_key = "bad'key";
    flt.tag_value = "v";
    assert_int_equal(ops->devices_list(f->s, 1, &flt, NULL, 10, &d, &n), PHY_EINVAL);
    /* A value without a key is no filter. */
    flt = (struct store_device_filter){.presence = -1, .tag_value = "odd"};
    list_ids(f, 1, &flt, 100, ids, sizeof ids);
    assert_string_equal(ids, "1,2,3,4,5,6,7");
}

static void test_tags_put(void **state)
{
    struct fx *f = *state;
    struct store_device_filter flt = {.presence = -1, .tag_key = "site", .tag_value = "new"};
    struct store_twin t;
    struct id id = ID(1);
    char ids[32];
    int out = -1;
    mkdev(f, 1, 1, "{\"site\":\"old\"}");
    list_ids(f, 1, &flt, 10, ids, sizeof ids);
    assert_string_equal(ids, "");
    assert_int_equal(ops->tags_put(f->s, 1, id.s, "{\"site\":\"new\"}", &out), 0);
    assert_int_equal(out, STORE_OK);
    list_ids(f, 1, &flt, 10, ids, sizeof ids);
    assert_string_equal(ids, "1");
    assert_int_equal(ops->twin_get(f->s, id.s, &t, &out), 0);
    assert_string_equal(t.tags, "{\"site\":\"new\"}");
    store_twin_free(&t);
    assert_int_equal(ops->tags_put(f->s, 1, id.s, "[\"site\"]", &out), PHY_EINVAL);
    assert_int_equal(ops->tags_put(f->s, 1, id.s, "{", &out), PHY_EINVAL);
    assert_int_equal(ops->tags_put(f->s, 1, id.s, NULL, &out), PHY_EINVAL);
    struct id other = ID(2);
    assert_int_equal(ops->tags_put(f->s, 1, other.s, "{}", &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
}

static void test_device_auth(void **state)
{
    struct fx *f = *state;
    int64_t tenant = 0;
    struct id id = ID(1);
    int out;
    mkdev(f, 42, 1, NULL);
    mkdev(f, 42, 2, NULL);
    assert_int_equal(auth(f, 1, 1001, &tenant), STORE_OK);
    assert_int_equal(tenant, 42);
    assert_int_equal(auth(f, 1, 1002, NULL), STORE_NOT_FOUND); /* device 2's secret */
    assert_int_equal(auth(f, 1, 1000, NULL), STORE_NOT_FOUND);
    assert_int_equal(auth(f, 3, 1003, NULL), STORE_NOT_FOUND); /* unknown */
    assert_int_equal(dev_op(f, ops->device_revoke, 42, 1), STORE_OK);
    assert_int_equal(auth(f, 1, 1001, NULL), STORE_REVOKED);
    assert_int_equal(auth(f, 1, 1002, NULL), STORE_REVOKED);
    assert_int_equal(auth(f, 2, 1002, NULL), STORE_OK);
    /* The hash itself is gone. */
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM devices WHERE secret_hash = ''"), 1);
    assert_int_equal(raw_int(f->path, "SELECT length(secret_hash) FROM devices WHERE "
                                      "device_id = 'dev_00000000000000000000000002'"),
                     64);
    /* Malformed input. */
    char short_hash[PHY_HASH_HEX_LEN] = "";
    memset(short_hash, 'a', sizeof short_hash - 1);
    assert_int_equal(ops->device_auth(f->s, id.s, short_hash, NULL, &out), PHY_EINVAL);
    assert_int_equal(ops->device_auth(f->s, id.s, NULL, NULL, &out), PHY_EINVAL);
    struct hash h = H(1);
    assert_int_equal(ops->device_auth(f->s, "", h.h, NULL, &out), PHY_EINVAL);
}

/* The close of an older session never marks a newer, live one offline. */
static void test_session_generations(void **state)
{
    struct fx *f = *state;
    struct store_device d;
    struct id id = ID(1);
    int64_t g1 = 0, g2 = 0;

    reg_next(f, "S1");
    assert_int_equal(claim(f, 1, "S1", 1, NULL), STORE_OK);
    assert_int_equal(ops->session_open(f->s, id.s, T0 + 1, &g1), 0);
    assert_int_equal(ops->session_open(f->s, id.s, T0 + 2, &g2), 0);
    assert_int_equal(g2, g1 + 1);
    assert_int_equal(ops->session_close(f->s, id.s, g1, T0 + 3, T0 + 3), 0);
    get(f, 1, 1, &d, NULL);
    assert_int_equal(d.online, 1);
    store_device_clear(&d);
    assert_int_equal(ops->session_close(f->s, id.s, g2, T0 + 4, T0 + 4), 0);
    get(f, 1, 1, &d, NULL);
    assert_int_equal(d.online, 0);
    assert_int_equal(d.disconnected_ms, T0 + 4);
    store_device_clear(&d);
}

static void test_sessions(void **state)
{
    struct fx *f = *state;
    struct store_poll_result r;
    struct store_device d;
    struct id id = ID(1);
    struct hash tok;
    int out = -1;

    unsigned t = reg_next(f, "S1");
    assert_int_equal(claim(f, 1, "S1", 1, NULL), STORE_OK);
    tok = H(t);
    f->p.now_ms = T0 + 10000;
    assert_int_equal(ops->poll(f->s, &f->p, "S1", NULL, tok.h, &r, &out), 0);
    assert_int_equal(out, STORE_DELIVER);
    free(r.sealed);
    get(f, 1, 1, &d, NULL);
    assert_string_equal(d.state, "provisioned");
    assert_int_equal(d.online, 0);
    assert_int_equal(d.last_seen_ms, 0);
    store_device_clear(&d);
    assert_int_equal(raw_int(f->path, "SELECT sealed IS NOT NULL FROM issuances"), 1);

    /* The first session: online, active, redelivery over. */
    assert_int_equal(ops->session_open(f->s, id.s, T0 + 11000, NULL), 0);
    get(f, 1, 1, &d, NULL);
    assert_string_equal(d.state, "active");
    assert_int_equal(d.online, 1);
    assert_int_equal(d.connected_ms, T0 + 11000);
    assert_int_equal(d.last_seen_ms, T0 + 11000);
    assert_int_equal(d.disconnected_ms, 0);
    store_device_clear(&d);
    assert_int_equal(raw_int(f->path, "SELECT sealed IS NULL FROM issuances"), 1);
    f->p.now_ms = T0 + 12000; /* inside the grace window */
    assert_int_equal(ops->poll(f->s, &f->p, "S1", NULL, tok.h, &r, &out), 0);
    assert_int_equal(out, STORE_PROVISIONED);
    assert_null(r.sealed);

    assert_int_equal(ops->session_close(f->s, id.s, -1, T0 + 20000, T0 + 19000), 0);
    get(f, 1, 1, &d, NULL);
    assert_int_equal(d.online, 0);
    assert_int_equal(d.disconnected_ms, T0 + 20000);
    assert_int_equal(d.last_seen_ms, T0 + 19000);
    assert_int_equal(d.connected_ms, T0 + 11000);
    store_device_clear(&d);
    /* last_seen never goes back. */
    assert_int_equal(ops->session_open(f->s, id.s, T0 + 30000, NULL), 0);
    assert_int_equal(ops->status_put(f->s, id.s, "{}", T0 + 40000), 0);
    assert_int_equal(ops->session_close(f->s, id.s, -1, T0 + 41000, T0 + 35000), 0);
    get(f, 1, 1, &d, NULL);
    assert_int_equal(d.last_seen_ms, T0 + 40000);
    assert_string_equal(d.state, "active");
    store_device_clear(&d);

    /* Straight from pending_delivery (delivery recorded elsewhere) to active. */
    mkdev(f, 1, 2, NULL);
    struct id id2 = ID(2);
    assert_int_equal(ops->session_open(f->s, id2.s, T0 + 50000, NULL), 0);
    get(f, 1, 2, &d, NULL);
    assert_string_equal(d.state, "active");
    store_device_clear(&d);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances WHERE sealed IS NOT NULL"),
                     0);

    /* Unknown or revoked: no session; closing is harmless. */
    struct id nobody = ID(77);
    assert_int_equal(ops->session_open(f->s, nobody.s, T0, NULL), PHY_ENOTFOUND);
    assert_int_equal(ops->session_close(f->s, nobody.s, -1, T0, T0), 0);
    assert_int_equal(ops->session_open(f->s, id2.s, T0 + 51000, NULL), 0);
    assert_int_equal(dev_op(f, ops->device_revoke, 1, 2), STORE_OK);
    get(f, 1, 2, &d, NULL);
    assert_int_equal(d.online, 0);
    assert_int_equal(d.disconnected_ms, f->p.now_ms);
    store_device_clear(&d);
    assert_int_equal(ops->session_open(f->s, id2.s, T0 + 52000, NULL), PHY_ENOTFOUND);
    assert_int_equal(ops->session_close(f->s, id2.s, -1, T0 + 53000, T0 + 53000), 0);
    assert_int_equal(ops->session_open(f->s, "", T0, NULL), PHY_EINVAL);
}

static void test_presence_reset(void **state)
{
    struct fx *f = *state;
    struct store_device d;
    struct id id;
    for (unsigned i = 1; i <= 3; i++)
        mkdev(f, 1, i, NULL);
    id = ID(1);
    assert_int_equal(ops->session_open(f->s, id.s, T0 + 1, NULL), 0);
    id = ID(2);
    assert_int_equal(ops->session_open(f->s, id.s, T0 + 2, NULL), 0);
    assert_int_equal(ops->session_close(f->s, id.s, -1, T0 + 5, T0 + 4), 0);
    id = ID(3);
    assert_int_equal(ops->session_open(f->s, id.s, T0 + 3, NULL), 0);

    assert_int_equal(ops->presence_reset(f->s, T0 + 100), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM devices WHERE online <> 0"), 0);
    get(f, 1, 1, &d, NULL);
    assert_int_equal(d.disconnected_ms, T0 + 100);
    assert_int_equal(d.last_seen_ms, T0 + 1);
    store_device_clear(&d);
    get(f, 1, 2, &d, NULL);
    assert_int_equal(d.disconnected_ms, T0 + 5); /* was already offline */
    store_device_clear(&d);
    get(f, 1, 3, &d, NULL);
    assert_int_equal(d.disconnected_ms, T0 + 100);
    assert_string_equal(d.state, "active");
    store_device_clear(&d);
    assert_int_equal(ops->presence_reset(f->s, T0 + 200), 0);
}

/* 1 when device i of tenant 1 is online. */
static int online(struct fx *f, unsigned i)
{
    struct store_device d;
    get(f, 1, i, &d, NULL);
    int on = d.online;
    store_device_clear(&d);
    return on;
}

static void as_node(struct fx *f, const char *node)
{
    assert_int_equal(store_set_node(f->s, node), 0);
}

/* Several hub nodes on one store: whose sessions a start or a sweep ends, and the
 * leases of singleton jobs. One handle plays every node (store_set_node). */
static void test_nodes(void **state)
{
    struct fx *f = *state;
    struct id id;
    int n = -1, held = -1;
    for (unsigned i = 1; i <= 3; i++)
        mkdev(f, 1, i, NULL);
    assert_int_equal(store_set_node(f->s, ""), PHY_EINVAL);
    assert_int_equal(store_set_node(f->s, "a b"), PHY_EINVAL);
    assert_int_equal(store_set_node(f->s, "x123456789x123456789x123456789x123456789x123456789x12345678"
                                          "9x12345"), PHY_EINVAL);
    int64_t g3 = -1;
    int out = -1;
    as_node(f, "hub-a.example:443");
    assert_int_equal(ops->node_heartbeat(f->s, T0), 1); /* new */
    assert_int_equal(ops->node_heartbeat(f->s, T0 + 1), 0);
    id = ID(1);
    assert_int_equal(ops->session_open(f->s, id.s, T0 + 1, NULL), 0);
    id = ID(2);
    assert_int_equal(ops->session_open(f->s, id.s, T0 + 2, NULL), 0);
    as_node(f, "B");
    assert_int_equal(ops->node_heartbeat(f->s, T0 + 3), 1);
    id = ID(3);
    assert_int_equal(ops->session_open(f->s, id.s, T0 + 3, &g3), 0);

    /* A restarts: its own sessions end, B's device stays online. */
    as_node(f, "hub-a.example:443");
    assert_int_equal(ops->node_heartbeat(f->s, T0 + 10), 0);
    assert_int_equal(ops->presence_reset(f->s, T0 + 10), 0);
    assert_false(online(f, 1));
    assert_false(online(f, 2));
    assert_true(online(f, 3));
    id = ID(1);
    assert_int_equal(ops->session_open(f->s, id.s, T0 + 11, NULL), 0);

    /* B's heartbeat stops: A's sweep ends B's sessions once it is older than the
     * limit, not before; B is forgotten; A's own session stays. */
    assert_int_equal(ops->presence_sweep(f->s, T0 + 20, T0 + 3, &n), 0);
    assert_int_equal(n, 0);
    assert_true(online(f, 3));
    assert_int_equal(ops->presence_sweep(f->s, T0 + 100, T0 + 50, &n), 0);
    assert_int_equal(n, 1);
    assert_false(online(f, 3));
    assert_true(online(f, 1));
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM nodes WHERE node_id = 'B'"), 0);

    /* B was only slow: its next heartbeat finds it forgotten, and it reclaims the
     * sessions it still holds, unless the device went on elsewhere or is gone. */
    as_node(f, "B");
    assert_int_equal(ops->node_heartbeat(f->s, T0 + 200), 1);
    assert_int_equal(ops->node_heartbeat(f->s, T0 + 201), 0);
    id = ID(3);
    assert_int_equal(ops->session_reclaim(f->s, id.s, g3, T0 + 201, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_true(online(f, 3));
    assert_int_equal(ops->session_reclaim(f->s, id.s, g3 - 1, T0 + 201, &out), 0);
    assert_int_equal(out, STORE_EXISTS); /* an older session of it: not its presence */
    id = ID(99);
    assert_int_equal(ops->session_reclaim(f->s, id.s, 1, T0 + 201, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);

    /* Device 1 moves to B (a newer session): A's later death does not end it. */
    id = ID(1);
    assert_int_equal(ops->session_open(f->s, id.s, T0 + 200, NULL), 0);
    assert_int_equal(ops->presence_sweep(f->s, T0 + 300, T0 + 150, &n), 0);
    assert_int_equal(n, 0);
    assert_true(online(f, 1));

    /* A session of a node the store does not know (it never beat) ends at a sweep. */
    as_node(f, "C");
    id = ID(2);
    assert_int_equal(ops->session_open(f->s, id.s, T0 + 301, NULL), 0);
    as_node(f, "B");
    assert_int_equal(ops->presence_sweep(f->s, T0 + 302, T0 + 150, &n), 0);
    assert_int_equal(n, 1);
    assert_false(online(f, 2));
    assert_true(online(f, 1));

    /* Leases: one holder; renewed by it; taken over once it ended. */
    as_node(f, "A");
    assert_int_equal(ops->lease_take(f->s, "sweep", 1000, 2000, &held), 0);
    assert_int_equal(held, 1);
    as_node(f, "B");
    assert_int_equal(ops->lease_take(f->s, "sweep", 1500, 2500, &held), 0);
    assert_int_equal(held, 0);
    assert_int_equal(ops->lease_take(f->s, "outbox", 1500, 2500, &held), 0);
    assert_int_equal(held, 1); /* another job: its own lease */
    as_node(f, "A");
    assert_int_equal(ops->lease_take(f->s, "sweep", 1600, 2600, &held), 0);
    assert_int_equal(held, 1);
    as_node(f, "B");
    assert_int_equal(ops->lease_take(f->s, "sweep", 2599, 3599, &held), 0);
    assert_int_equal(held, 0);
    assert_int_equal(ops->lease_take(f->s, "sweep", 2600, 3600, &held), 0);
    assert_int_equal(held, 1); /* A's lease ended */
    as_node(f, "A");
    assert_int_equal(ops->lease_take(f->s, "sweep", 2700, 3700, &held), 0);
    assert_int_equal(held, 0);
    assert_int_equal(ops->lease_take(f->s, "Sweep!", 2700, 3700, &held), PHY_EINVAL);
    assert_int_equal(ops->lease_take(f->s, "sweep", 2700, 2700, &held), PHY_EINVAL);
}

/* PostgreSQL: the lines announced on conn (LISTEN phy_nodes), joined by '|': want of
 * them (they arrive a moment after the commit; at most 5 s), or whatever came within
 * 200 ms when want is 0. */
static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void announced(PGconn *conn, unsigned want, char *out, size_t cap)
{
    PGnotify *n;
    unsigned got = 0;
    int64_t end = mono_ms() + (want ? 5000 : 200);
    out[0] = '\0';
    while (mono_ms() < end && (want == 0 || got < want)) {
        struct pollfd p = {.fd = PQsocket(conn), .events = POLLIN};
        poll(&p, 1, 20);
        assert_int_equal(PQconsumeInput(conn), 1);
        while ((n = PQnotifies(conn)) != NULL) {
            size_t len = strlen(out);
            snprintf(out + len, cap - len, "%s%s", len ? "|" : "", n->extra);
            PQfreemem(n);
            got++;
        }
    }
}

/* What a node reads back after an announcement (node_sessions), and the
 * announcements themselves (PostgreSQL only: SQLite is one node). */
static void test_node_sessions_and_announcements(void **state)
{
    struct fx *f = *state;
    struct store_node_session *v = NULL;
    size_t n = 0;
    int64_t ver = 0;
    int ch = 0, out = -1;
    struct id id1 = ID(1), id2 = ID(2), id3 = ID(3);
    PGconn *l = NULL;
    char lines[1024], want[1024];
    if (store_is_pg()) {
        l = PQconnectdb(f->path);
        assert_int_equal(PQstatus(l), CONNECTION_OK);
        PQclear(PQexec(l, "LISTEN " STORE_ANNOUNCE_CHANNEL));
    }
    for (unsigned i = 1; i <= 3; i++)
        mkdev(f, 1, i, NULL);
    assert_int_equal(ops->node_sessions(f->s, 0, NULL, &v, &n), PHY_EINVAL); /* no node yet */
    as_node(f, "A");
    assert_int_equal(ops->session_open(f->s, id1.s, T0 + 1, NULL), 0);
    assert_int_equal(ops->session_open(f->s, id2.s, T0 + 2, NULL), 0);
    as_node(f, "B");
    assert_int_equal(ops->session_open(f->s, id3.s, T0 + 3, NULL), 0);
    as_node(f, "A");
    assert_int_equal(dpatch(f, 1, 1, "{\"a\": 1}", -1, &ver, &ch), STORE_OK);
    assert_int_equal(ver, 1);

    assert_int_equal(ops->node_sessions(f->s, 0, NULL, &v, &n), 0);
    assert_int_equal(n, 2); /* A's two, not B's */
    assert_string_equal(v[0].device_id, id1.s);
    assert_int_equal(v[0].desired_version, 1);
    assert_string_equal(v[0].desired_patch, "{\"a\":1}");
    assert_string_equal(v[1].device_id, id2.s);
    assert_int_equal(v[1].desired_version, 0);
    assert_null(v[1].desired_patch);
    assert_false(v[1].revoked);
    store_node_sessions_free(v, n);
    assert_int_equal(ops->node_sessions(f->s, 1, id2.s, &v, &n), 0);
    assert_int_equal(n, 1);
    store_node_sessions_free(v, n);
    assert_int_equal(ops->node_sessions(f->s, 2, NULL, &v, &n), 0); /* another tenant */
    assert_int_equal(n, 0);
    store_node_sessions_free(v, n);

    assert_int_equal(ops->device_revoke(f->s, 1, id2.s, T0 + 10, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(ops->node_sessions(f->s, 1, id2.s, &v, &n), 0);
    assert_int_equal(n, 1);
    assert_true(v[0].revoked); /* still listed: its session must end */
    store_node_sessions_free(v, n);

    /* A session of a device online on another node is announced (that node closes
     * its own with 4000); the sessions above opened for offline devices were not. */
    as_node(f, "B");
    assert_int_equal(ops->session_open(f->s, id1.s, T0 + 20, NULL), 0);
    as_node(f, "A");
    if (l) {
        announced(l, 3, lines, sizeof lines);
        snprintf(want, sizeof want, "A d 1 %s 1|A c 1 %s 4001|B s %s 2", id1.s, id2.s, id1.s);
        assert_string_equal(lines, want);
        /* A rolled-back change is not announced: an unknown device's patch. */
        struct id id9 = ID(9);
        assert_int_equal(ops->desired_patch(f->s, 1, id9.s, "{\"b\":2}", -1, &ver, &ch, &out), 0);
        assert_int_equal(out, STORE_NOT_FOUND);
        announced(l, 0, lines, sizeof lines);
        assert_string_equal(lines, "");
        PQfinish(l);
    }
}

static void test_status(void **state)
{
    struct fx *f = *state;
    struct store_device d;
    struct store_twin t;
    struct id id = ID(1);
    mkdev(f, 1, 1, NULL);
    get(f, 1, 1, &d, &t);
    assert_null(d.last_status_json);
    assert_int_equal(d.last_status_ms, 0);
    store_device_clear(&d);
    store_twin_free(&t);

    const char *st = "{\"uptime_s\":12,\"agent_version\":\"0.2.0\",\"load\":[0.1,0.2,0.3]}";
    assert_int_equal(ops->status_put(f->s, id.s, st, T0 + 7), 0);
    get(f, 1, 1, &d, &t);
    assert_string_equal(d.last_status_json, st);
    assert_int_equal(d.last_status_ms, T0 + 7);
    assert_int_equal(d.last_seen_ms, T0 + 7);
    assert_string_equal(t.desired, "{}");
    store_device_clear(&d);
    store_device_clear(&d); /* a cleared device may be cleared again */
    store_twin_free(&t);
    assert_int_equal(ops->status_put(f->s, id.s, "{\"uptime_s\":13}", T0 + 8), 0);
    get(f, 1, 1, &d, NULL);
    assert_string_equal(d.last_status_json, "{\"uptime_s\":13}");
    store_device_clear(&d);

    assert_int_equal(ops->status_put(f->s, id.s, "[]", T0), PHY_EINVAL);
    assert_int_equal(ops->status_put(f->s, id.s, NULL, T0), PHY_EINVAL);
    char *big = big_patch("m", 70000);
    assert_int_equal(ops->status_put(f->s, id.s, big, T0), PHY_ETOOBIG);
    free(big);
    struct id nobody = ID(9);
    assert_int_equal(ops->status_put(f->s, nobody.s, "{}", T0), PHY_ENOTFOUND);
}

static void test_revoke(void **state)
{
    struct fx *f = *state;
    struct store_device d;
    struct store_twin t;
    struct id id = ID(1);
    int out = -1;
    unsigned tok = reg_next(f, "S1");
    assert_int_equal(claim(f, 1, "S1", 1, "{\"site\":\"a\"}"), STORE_OK);
    assert_int_equal(dpatch(f, 1, 1, "{\"a\":1}", -1, NULL, NULL), STORE_OK);
    assert_int_equal(raw_int(f->path, "SELECT sealed IS NOT NULL FROM issuances"), 1);

    assert_int_equal(dev_op(f, ops->device_revoke, 1, 1), STORE_OK);
    assert_int_equal(raw_int(f->path, "SELECT sealed IS NULL FROM issuances"), 1);
    /* The console still shows it, for history. */
    get(f, 1, 1, &d, &t);
    assert_string_equal(d.state, "revoked");
    assert_string_equal(t.desired, "{\"a\":1}");
    store_device_clear(&d);
    store_twin_free(&t);
    /* Nothing else reaches it. */
    assert_int_equal(dpatch(f, 1, 1, "{\"a\":2}", -1, NULL, NULL), STORE_NOT_FOUND);
    assert_int_equal(rpatch(f, 1, "{\"a\":2}", NULL, NULL), STORE_NOT_FOUND);
    assert_int_equal(ops->twin_get(f->s, id.s, &t, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    assert_null(t.desired);
    assert_int_equal(ops->status_put(f->s, id.s, "{}", T0), PHY_ENOTFOUND);
    /* The serial stays spent; polls get no body. */
    struct store_poll_result r;
    struct hash h = H(tok);
    int rout = -1;
    struct store_reg_result rr;
    assert_int_equal(ops->reg_create(f->s, &f->p, "S1", h.h, TEST_CHALLENGE, NULL, &rr, &rout), 0);
    assert_int_equal(rout, STORE_PROVISIONED);
    assert_int_equal(ops->poll(f->s, &f->p, "S1", NULL, h.h, &r, &rout), 0);
    assert_int_equal(rout, STORE_PROVISIONED);
    /* Revoking twice is fine. */
    assert_int_equal(dev_op(f, ops->device_revoke, 1, 1), STORE_OK);
    assert_int_equal(dev_op(f, ops->device_revoke, 1, 2), STORE_NOT_FOUND);
}

static void test_reset(void **state)
{
    struct fx *f = *state;
    struct store_device d;
    struct store_poll_result r;
    int out = -1;

    unsigned t1 = reg_next(f, "S1");
    assert_int_equal(claim(f, 1, "S1", 1, NULL), STORE_OK);
    struct id id1 = ID(1);
    assert_int_equal(ops->session_open(f->s, id1.s, T0, NULL), 0);
    assert_int_equal(dpatch(f, 1, 1, "{\"a\":1}", -1, NULL, NULL), STORE_OK);
    /* The claim cleared the registration's code but kept the row. */
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM registrations WHERE serial = 'S1'"), 1);

    assert_int_equal(dev_op(f, ops->device_reset, 1, 1), STORE_OK);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances"), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM registrations"), 0);
    assert_int_equal(auth(f, 1, 1001, NULL), STORE_REVOKED);
    get(f, 1, 1, &d, NULL);
    assert_string_equal(d.state, "revoked");
    assert_int_equal(d.online, 0);
    store_device_clear(&d);
    /* The old poll token is gone with its registration. */
    struct hash h1 = H(t1);
    assert_int_equal(ops->poll(f->s, &f->p, "S1", NULL, h1.h, &r, &out), 0);
    assert_int_equal(out, STORE_BAD_TOKEN);

    /* The serial registers and is claimed once more, as a new device. */
    unsigned t2 = reg_next(f, "S1");
    assert_int_equal(claim(f, 1, "S1", 2, NULL), STORE_OK);
    struct hash h2 = H(t2);
    f->p.now_ms += 10000;
    assert_int_equal(ops->poll(f->s, &f->p, "S1", NULL, h2.h, &r, &out), 0);
    assert_int_equal(out, STORE_DELIVER);
    struct id id2 = ID(2);
    assert_string_equal(r.device_id, id2.s);
    free(r.sealed);
    assert_int_equal(claim(f, 1, "S1", 3, NULL), STORE_ALREADY_CLAIMED);
    expect_twin(f, 1, 2, "{}", 0, "{}", 0);
    get(f, 1, 1, &d, NULL);
    assert_string_equal(d.state, "revoked");
    store_device_clear(&d);

    /* Resetting or deleting the old device leaves the new one's issuance alone; the
     * reset says the serial was not re-armed (the new device holds it). */
    assert_int_equal(dev_op(f, ops->device_reset, 1, 1), STORE_PROVISIONED);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances WHERE device_id = "
                                      "'dev_00000000000000000000000002' AND sealed IS NOT NULL"),
                     1);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM registrations"), 1);
    assert_int_equal(del(f, 1, 1), STORE_OK);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances"), 1);
    assert_int_equal(auth(f, 2, 1002, NULL), STORE_OK);
}

static void test_delete(void **state)
{
    struct fx *f = *state;
    int out = -1;
    mkdev(f, 1, 1, "{\"site\":\"a\"}");
    mkdev(f, 1, 2, NULL);
    assert_int_equal(dpatch(f, 1, 1, "{\"a\":1}", -1, NULL, NULL), STORE_OK);
    assert_int_equal(rpatch(f, 1, "{\"b\":1}", NULL, NULL), STORE_OK);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM twins"), 1);

    assert_int_equal(del(f, 1, 1), STORE_OK);
    assert_int_equal(get_outcome(f, 1, 1), STORE_NOT_FOUND);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM twins"), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances WHERE serial = 'S1'"), 0);
    assert_int_equal(auth(f, 1, 1001, NULL), STORE_NOT_FOUND);
    assert_int_equal(del(f, 1, 1), STORE_NOT_FOUND);
    assert_int_equal(dev_op(f, ops->device_revoke, 1, 1), STORE_NOT_FOUND);
    assert_int_equal(dpatch(f, 1, 1, "{}", -1, NULL, NULL), STORE_NOT_FOUND);
    struct id id = ID(1);
    assert_int_equal(ops->session_open(f->s, id.s, T0, NULL), PHY_ENOTFOUND);
    /* The serial is free again; the other device is untouched. */
    struct hash h = H(500);
    struct store_reg_result rr;
    assert_int_equal(ops->reg_create(f->s, &f->p, "S1", h.h, TEST_CHALLENGE, NULL, &rr, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(get_outcome(f, 1, 2), STORE_OK);
    char ids[32];
    list_ids(f, 1, NULL, 10, ids, sizeof ids);
    assert_string_equal(ids, "2");
}

struct racer {
    struct fx *f;
    unsigned n;
    int failures;
};

static void *race_patch(void *arg)
{
    struct racer *r = arg;
    struct id id = ID(1);
    for (unsigned i = 0; i < 25; i++) {
        char patch[64];
        int64_t v;
        int ch, out;
        snprintf(patch, sizeof patch, "{\"k%u_%u\":%u}", r->n, i, i);
        if (ops->desired_patch(r->f->s, 1, id.s, patch, -1, &v, &ch, &out) != 0 ||
            out != STORE_OK || !ch)
            r->failures++;
    }
    return NULL;
}

/* Concurrent writers: every change gets its own version, none is lost. */
static void test_concurrent_patches(void **state)
{
    struct fx *f = *state;
    struct racer r[4];
    pthread_t th[4];
    mkdev(f, 1, 1, NULL);
    for (unsigned i = 0; i < 4; i++) {
        r[i] = (struct racer){.f = f, .n = i};
        assert_int_equal(pthread_create(&th[i], NULL, race_patch, &r[i]), 0);
    }
    for (unsigned i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(r[i].failures, 0);
    }
    struct store_device d;
    struct store_twin t;
    get(f, 1, 1, &d, &t);
    assert_int_equal(t.desired_version, 100);
    assert_non_null(strstr(t.desired, "\"k3_24\":24"));
    store_device_clear(&d);
    store_twin_free(&t);
}

/* A device's presence as another connection of the store sees it (committed only). */
struct presence_racer {
    struct fx *f;
    struct store *other; /* a second open of the same store */
    unsigned dev;
    int failures;
};

static int seen_by_other(struct presence_racer *r, int online, int64_t at_ms)
{
    struct id id = ID(r->dev);
    struct store_device d;
    struct store_twin t;
    int out = -1, ok;
    if (ops->device_get(r->other, 1, id.s, &d, &t, &out) != 0 || out != STORE_OK)
        return 0;
    ok = d.online == online && (online ? d.connected_ms : d.disconnected_ms) == at_ms;
    store_device_clear(&d);
    store_twin_free(&t);
    return ok;
}

static void *race_presence(void *arg)
{
    struct presence_racer *r = arg;
    struct id id = ID(r->dev);
    int64_t gen = -1, last = 0;
    for (int64_t i = 1; i <= 30; i++) {
        int64_t at = T0 + i * 10;
        if (ops->session_open(r->f->s, id.s, at, &gen) != 0 || gen <= last)
            r->failures++;
        last = gen;
        /* Returned: committed, so another connection sees it at once. */
        if (!seen_by_other(r, 1, at))
            r->failures++;
        if (ops->session_close(r->f->s, id.s, gen, at + 5, at + 5) != 0 ||
            !seen_by_other(r, 0, at + 5))
            r->failures++;
    }
    return NULL;
}

/* Presence writes of many devices at once (SQLite commits them together: group commit):
 * each call returns only when its change is committed, every session gets a new
 * generation, and on SQLite the commits carry several operations each. */
static void test_concurrent_presence(void **state)
{
    struct fx *f = *state;
    enum { N = 8 };
    struct presence_racer r[N];
    pthread_t th[N];
    struct store *other = NULL;
    char err[256] = "";
    uint64_t c0 = 0, o0 = 0, c1 = 0, o1 = 0;
    for (unsigned i = 0; i < N; i++)
        mkdev(f, 1, i + 1, NULL);
    assert_int_equal(ops->open(f->path, &other, err, sizeof err), 0);
    int stats = store_commit_stats(f->s, &c0, &o0);
    assert_true(stats == 0 || (stats == PHY_EUNSUPP && store_is_pg()));
    for (unsigned i = 0; i < N; i++) {
        r[i] = (struct presence_racer){.f = f, .other = other, .dev = i + 1};
        assert_int_equal(pthread_create(&th[i], NULL, race_presence, &r[i]), 0);
    }
    for (unsigned i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(r[i].failures, 0);
    }
    if (stats == 0) {
        assert_int_equal(store_commit_stats(f->s, &c1, &o1), 0);
        /* Every write was carried by a commit; 8 threads writing at once shared some. */
        assert_true(o1 - o0 >= (uint64_t)N * 60);
        assert_true(c1 - c0 < o1 - o0);
        print_message("group commit: %llu operations in %llu commits\n",
                      (unsigned long long)(o1 - o0), (unsigned long long)(c1 - c0));
    }
    ops->close(other);
}

static void test_migration_v1(void **state)
{
    SQLITE_ONLY();
    struct fx *f = *state;
    struct hash sh = H(1001), tok = H(1), tok2 = H(2);
    struct store_device d;
    struct store_twin t;
    char sql[1024];
    int out = -1;

    /* A version-1 store with a tenant, an active device and a pending one. */
    snprintf(sql, sizeof sql,
             "INSERT INTO tenants(name, region, created_ms) VALUES ('acme', 'eu', 1);"
             "INSERT INTO devices VALUES ('dev_00000000000000000000000001', 1, 'S1', 'lobby',"
             " '{\"site\":\"a\"}', '%s', 'active', 5);"
             "INSERT INTO issuances VALUES ('S1', NULL, '%s', 'dev_00000000000000000000000001',"
             " NULL, 5, 6);"
             "INSERT INTO registrations(token_hash, serial, interval_s, last_active_ms,"
             " created_ms) VALUES ('%s', 'S2', 5, %lld, %lld);",
             sh.h, tok.h, tok2.h, (long long)T0, (long long)T0);
    raw_exec(f->path, V1_SCHEMA_SQL);
    raw_exec(f->path, sql);
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), 1);
    assert_int_equal(chmod(f->path, 0600), 0); /* the store refuses group/other access */

    fx_open(f);
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
    get(f, 1, 1, &d, &t);
    assert_string_equal(d.serial, "S1");
    assert_string_equal(d.name, "lobby");
    assert_string_equal(d.state, "active");
    assert_string_equal(d.tags_json, "{\"site\":\"a\"}");
    assert_int_equal(d.created_ms, 5);
    assert_int_equal(d.online, 0);
    assert_int_equal(d.last_seen_ms, 0);
    assert_null(d.last_status_json);
    assert_string_equal(t.desired, "{}");
    assert_int_equal(t.desired_version, 0);
    store_device_clear(&d);
    store_twin_free(&t);
    assert_int_equal(auth(f, 1, 1001, NULL), STORE_OK);
    assert_int_equal(dpatch(f, 1, 1, "{\"a\":1}", 0, NULL, NULL), STORE_OK);
    struct id id = ID(1);
    assert_int_equal(ops->session_open(f->s, id.s, T0, NULL), 0);
    struct store_device_filter flt = {.presence = 1, .tag_key = "site", .tag_value = "a"};
    char ids[32];
    list_ids(f, 1, &flt, 10, ids, sizeof ids);
    assert_string_equal(ids, "1");
    /* Provisioning rows survived too. */
    assert_int_equal(claim(f, 1, "S2", 2, NULL), STORE_OK);
    struct store_reg_result rr;
    assert_int_equal(ops->reg_create(f->s, &f->p, "S1", tok.h, TEST_CHALLENGE, NULL, &rr, &out), 0);
    assert_int_equal(out, STORE_PROVISIONED);

    /* Reopening does not migrate again. */
    ops->close(f->s);
    fx_open(f);
    expect_twin(f, 1, 1, "{\"a\":1}", 1, "{}", 0);

    /* The migrated tables have the shape of a fresh store's. */
    make_fresh(f);
    static const char *const shapes[] = {COLS_SQL("devices"), COLS_SQL("twins"),
                                         COLS_SQL("issuances"), COLS_SQL("registrations"),
                                         COLS_SQL("outbox")};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        expect_same_shape(f, shapes[i]);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND"
                                      " name = 'devices_tenant_online'"),
                     1);

    /* A store from the future is refused. */
    expect_future_refused(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_desired_versions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_generations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_if_match, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tenant_scoping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_patch_by_tag, setup, teardown),
        cmocka_unit_test_setup_teardown(test_patch_by_tag_many_sections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tags_put, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_presence_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nodes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_node_sessions_and_announcements, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoke, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_patches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_presence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_v1, setup_nostore, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
