/* Unit tests of the SQLite store's inter-region operations: eu's remote issuances and a
 * regional hub's hidden claims and outbox (docs/protocol.md section 3). */
#include "teststore.h"

#define HOLD_MS 30000

/* ---- fixture ---- */

/* The body the test sealer produces for a serial: "sealed:" + serial, plus a NUL byte. */
static size_t body_of(const char *serial, unsigned char *buf, size_t cap)
{
    int n = snprintf((char *)buf, cap, "sealed:%s", serial);
    assert_true(n > 0 && (size_t)n + 1 < cap);
    return (size_t)n + 1;
}

static int setup_nostore(void **state)
{
    fx_new(state, "phy_test_region_", body_of);
    return 0;
}

static int setup(void **state)
{
    setup_nostore(state);
    fx_open(*state);
    return 0;
}

/* ---- eu side wrappers ---- */

/* issue_remote; serial_out (optional) gets the serial. */
static int issue(struct fx *f, const char *region, const char *serial, const char *code,
                 unsigned device, char *serial_out)
{
    struct id id = ID(device);
    struct store_remote_issue ri = {
        .serial_claims = SERIAL_CLAIMS_ANY,
        .serial = serial,
        .code = code,
        .device_id = id.s,
        .region = region,
        .seal = test_seal,
        .seal_ctx = &f->seal,
    };
    char got[PHY_SERIAL_MAX + 1];
    int out = -1;
    memset(got, 'x', sizeof got);
    assert_int_equal(ops->issue_remote(f->s, &f->p, &ri, got, &out), 0);
    if (out != STORE_OK)
        assert_string_equal(got, "");
    if (serial_out)
        memcpy(serial_out, got, sizeof got);
    return out;
}

/* eu's own claim (tenant 1), like the console's on eu. */
static int claim(struct fx *f, const char *serial, const char *code, unsigned device)
{
    struct id id = ID(device);
    struct hash sh = H(0x5ec);
    struct store_claim c = {
        .serial_claims = SERIAL_CLAIMS_ANY, /* the tests below predate attestation */
        .tenant_id = 1,
        .user_id = 1,
        .serial = serial,
        .code = code,
        .device_id = id.s,
        .secret_hash = sh.h,
        .tags_json = "{}",
        .seal = test_seal,
        .seal_ctx = &f->seal,
    };
    struct store_device d;
    int out = -1;
    assert_int_equal(ops->claim(f->s, &f->p, &c, &d, &out), 0);
    store_device_clear(&d);
    return out;
}

static int purge(struct fx *f, const char *region, unsigned device)
{
    struct id id = ID(device);
    int out = -1;
    assert_int_equal(ops->issuance_purge_remote(f->s, region, id.s, &out), 0);
    return out;
}

static int cancel(struct fx *f, const char *region, unsigned device, char *serial_out)
{
    struct id id = ID(device);
    char got[PHY_SERIAL_MAX + 1];
    int out = -1;
    assert_int_equal(ops->issuance_cancel_remote(f->s, region, id.s, got, &out), 0);
    if (serial_out)
        memcpy(serial_out, got, sizeof got);
    return out;
}

static int rearm(struct fx *f, const char *region, const char *serial)
{
    int out = -1;
    assert_int_equal(ops->serial_rearm_remote(f->s, region, serial, &out), 0);
    return out;
}

/* ---- regional side wrappers ---- */

#define SECRET 0xc0ffeeu

/* claim_begin for tenant 1 at f->p.now_ms with HOLD_MS. */
static int begin(struct fx *f, unsigned device, const char *serial, const char *name)
{
    struct id id = ID(device);
    struct hash sh = H(SECRET);
    struct store_claim_begin c = {
        .tenant_id = 1,
        .device_id = id.s,
        .secret_hash = sh.h,
        .name = name,
        .tags_json = "{\"site\":\"x\"}",
        .serial = serial,
        .now_ms = f->p.now_ms,
        .hold_ms = HOLD_MS,
    };
    int out = -1;
    assert_int_equal(ops->claim_begin(f->s, &c, &out), 0);
    return out;
}

/* claim_confirm; d (optional) gets the row (caller clears it). */
static int confirm(struct fx *f, unsigned device, const char *serial, struct store_device *d)
{
    struct id id = ID(device);
    int out = -1;
    assert_int_equal(ops->claim_confirm(f->s, id.s, serial, d, &out), 0);
    return out;
}

static void abort_claim(struct fx *f, unsigned device)
{
    struct id id = ID(device);
    assert_int_equal(ops->claim_abort(f->s, id.s), 0);
}

static void session(struct fx *f, unsigned device)
{
    struct id id = ID(device);
    assert_int_equal(ops->session_open(f->s, id.s, f->p.now_ms, NULL), 0);
}

static int get(struct fx *f, unsigned device, struct store_device *d)
{
    struct id id = ID(device);
    int out = -1;
    assert_int_equal(ops->device_get(f->s, 1, id.s, d, NULL, &out), 0);
    return out;
}

static size_t list_count(struct fx *f)
{
    struct store_device *d = NULL;
    size_t n = 0;
    assert_int_equal(ops->devices_list(f->s, 1, NULL, NULL, 100, &d, &n), 0);
    store_devices_free(d, n);
    return n;
}

static int auth(struct fx *f, unsigned device, int64_t *tenant)
{
    struct id id = ID(device);
    struct hash sh = H(SECRET);
    int out = -1;
    assert_int_equal(ops->device_auth(f->s, id.s, sh.h, tenant, &out), 0);
    return out;
}

/* The due outbox as text "<device number>:<kind>:<serial>:<attempts>" joined by
 * spaces, in the order outbox_due returns them. */
static const char *due(struct fx *f, int64_t now_ms, size_t max, char *buf, size_t cap)
{
    struct store_outbox_item items[16];
    size_t n = 99, len = 0;
    assert_true(max <= 16);
    assert_int_equal(ops->outbox_due(f->s, now_ms, items, max, &n), 0);
    assert_true(n <= max);
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        unsigned num = 0;
        assert_int_equal(sscanf(items[i].device_id, "dev_%u", &num), 1);
        int w = snprintf(buf + len, cap - len, "%s%u:%d:%s:%d", i ? " " : "", num, items[i].kind,
                         items[i].serial, items[i].attempts);
        assert_true(w > 0 && (size_t)w < cap - len);
        len += (size_t)w;
    }
    return buf;
}

static int64_t outbox_count(struct fx *f)
{
    return raw_int(f->path, "SELECT count(*) FROM outbox");
}

/* ---- eu side ---- */

static void test_issue_by_serial_and_code(void **state)
{
    struct fx *f = *state;
    struct id id1 = ID(1);
    struct hash tok2 = H(2);
    char serial[PHY_SERIAL_MAX + 1], buf[256], sql[256], want[256];

    assert_int_equal(reg(f, "SN-A", 1), STORE_OK);
    assert_int_equal(set_code(f, "SN-A", 1, "ABCDEF"), STORE_OK);
    assert_int_equal(issue(f, "au", "SN-A", NULL, 1, serial), STORE_OK);
    assert_string_equal(serial, "SN-A");
    assert_int_equal(f->seal.calls, 1);
    assert_string_equal(f->seal.last_serial, "SN-A");
    snprintf(sql, sizeof sql,
             "SELECT serial || '|' || region || '|' || device_id || '|' || length(sealed) || '|'"
             " || created_ms || '|' || coalesce(code, '-') FROM issuances WHERE device_id = '%s'",
             id1.s);
    /* Issued by serial: the registration's code is recorded as spent, as for claim. */
    snprintf(want, sizeof want, "SN-A|au|%s|12|%lld|ABCDEF", id1.s, (long long)T0);
    assert_string_equal(raw_text(f->path, sql, buf, sizeof buf), want);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM registrations WHERE code IS NOT NULL"),
                     0);

    /* By code: eu names the serial. */
    f->p.now_ms += 1000;
    assert_int_equal(reg(f, "SN-B", 2), STORE_OK);
    assert_int_equal(reg(f, "SN-B", 3), STORE_OK); /* contested, but the code names one */
    assert_int_equal(set_code(f, "SN-B", 2, "GHJKMN"), STORE_OK);
    assert_int_equal(issue(f, "uae", NULL, "ghjkmn", 2, serial), STORE_OK);
    assert_string_equal(serial, "SN-B");
    assert_string_equal(f->seal.last_serial, "SN-B");
    snprintf(want, sizeof want, "GHJKMN|uae|%s", tok2.h);
    assert_string_equal(raw_text(f->path,
                                 "SELECT code || '|' || region || '|' || token_hash FROM issuances"
                                 " WHERE serial = 'SN-B'",
                                 buf, sizeof buf),
                        want);
    /* No device row on eu, for either. */
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM devices"), 0);
    /* The serials are spent. */
    assert_int_equal(reg(f, "SN-A", 4), STORE_PROVISIONED);
    assert_int_equal(poll_s(f, "SN-B", NULL, 3, NULL), STORE_PROVISIONED);
    assert_int_equal(f->seal.calls, 2);
}

static void test_issue_refusals_and_replay(void **state)
{
    struct fx *f = *state;
    char serial[PHY_SERIAL_MAX + 1];

    assert_int_equal(reg(f, "SN-R", 1), STORE_OK);
    assert_int_equal(set_code(f, "SN-R", 1, "ABCDEF"), STORE_OK);
    assert_int_equal(issue(f, "au", NULL, "ABCDEF", 1, serial), STORE_OK);
    assert_string_equal(serial, "SN-R");

    /* A retry after a lost answer: same device, same region: OK again, nothing sealed,
     * whatever the request names (the code is spent by now). */
    f->p.now_ms += 5000;
    assert_int_equal(issue(f, "au", NULL, "ABCDEF", 1, serial), STORE_OK);
    assert_string_equal(serial, "SN-R");
    assert_int_equal(issue(f, "au", "SN-OTHER", NULL, 1, serial), STORE_OK);
    assert_string_equal(serial, "SN-R");
    assert_int_equal(f->seal.calls, 1);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances"), 1);
    /* The same device ID from another region is not its claim. */
    assert_int_equal(issue(f, "uae", NULL, "ABCDEF", 1, NULL), STORE_ALREADY_CLAIMED);
    /* Another device for the spent serial or code. */
    assert_int_equal(issue(f, "au", "SN-R", NULL, 2, NULL), STORE_ALREADY_CLAIMED);
    assert_int_equal(issue(f, "au", NULL, "ABCDEF", 2, NULL), STORE_ALREADY_CLAIMED);

    /* The device ID of one of eu's own claims (region NULL). */
    assert_int_equal(reg(f, "SN-L", 3), STORE_OK);
    assert_int_equal(claim(f, "SN-L", NULL, 3), STORE_OK);
    assert_int_equal(reg(f, "SN-M", 4), STORE_OK);
    assert_int_equal(issue(f, "au", "SN-M", NULL, 3, NULL), STORE_ALREADY_CLAIMED);

    /* Claim resolution as for claim. */
    assert_int_equal(issue(f, "au", "SN-NOBODY", NULL, 5, NULL), STORE_UNKNOWN_SERIAL);
    assert_int_equal(issue(f, "au", NULL, "ZZZZZZ", 5, NULL), STORE_EXPIRED_CODE);
    assert_int_equal(reg(f, "SN-C", 6), STORE_OK);
    assert_int_equal(reg(f, "SN-C", 7), STORE_OK);
    assert_int_equal(issue(f, "au", "SN-C", NULL, 5, NULL), STORE_SERIAL_IN_USE);
    assert_int_equal(set_code(f, "SN-C", 6, "PQRSTU"), STORE_OK);
    f->p.now_ms += TTL_MS;
    assert_int_equal(issue(f, "au", NULL, "PQRSTU", 5, NULL), STORE_EXPIRED_CODE);
    assert_int_equal(f->seal.calls, 2); /* SN-R and eu's own SN-L */
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances"), 2);
    assert_int_equal(issue(f, "au", "SN-M", NULL, 5, serial), STORE_OK);
    assert_string_equal(serial, "SN-M");
}

static void *race(void *arg)
{
    struct claim_racer *r = arg;
    struct id id = ID(100 + r->i);
    struct hash sh = H(0x5ec);
    char serial[PHY_SERIAL_MAX + 1];
    if (r->i % 2) {
        struct store_remote_issue ri = {
            .serial_claims = SERIAL_CLAIMS_ANY,
            .serial = "SN-RACE",
            .device_id = id.s,
            .region = r->i % 4 == 1 ? "au" : "uae",
            .seal = test_seal,
            .seal_ctx = &r->f->seal,
        };
        r->rc = ops->issue_remote(r->f->s, &r->f->p, &ri, serial, &r->outcome);
    } else {
        struct store_claim c = {
            .serial_claims = SERIAL_CLAIMS_ANY, /* the tests below predate attestation */
            .tenant_id = 1,
            .serial = "SN-RACE",
            .device_id = id.s,
            .secret_hash = sh.h,
            .seal = test_seal,
            .seal_ctx = &r->f->seal,
        };
        struct store_device d;
        r->rc = ops->claim(r->f->s, &r->f->p, &c, &d, &r->outcome);
        store_device_clear(&d);
    }
    return NULL;
}

/* eu's own claim and remote issuances of one serial: exactly one wins. */
static void test_local_and_remote_contend(void **state)
{
    struct fx *f = *state;

    /* In sequence, both ways. */
    assert_int_equal(reg(f, "SN-1", 1), STORE_OK);
    assert_int_equal(claim(f, "SN-1", NULL, 1), STORE_OK);
    assert_int_equal(issue(f, "au", "SN-1", NULL, 2, NULL), STORE_ALREADY_CLAIMED);
    assert_int_equal(reg(f, "SN-2", 3), STORE_OK);
    assert_int_equal(issue(f, "au", "SN-2", NULL, 3, NULL), STORE_OK);
    assert_int_equal(claim(f, "SN-2", NULL, 4), STORE_ALREADY_CLAIMED);

    /* Concurrently. */
    assert_int_equal(reg(f, "SN-RACE", 9), STORE_OK);
    race_claims(f, race);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances WHERE serial = 'SN-RACE'"),
                     1);
    /* A device row exactly when eu's own claim won. */
    assert_int_equal(
        raw_int(f->path, "SELECT count(*) FROM devices WHERE serial = 'SN-RACE'"),
        raw_int(f->path, "SELECT region IS NULL FROM issuances WHERE serial = 'SN-RACE'"));
}

static void test_remote_poll_delivery(void **state)
{
    struct fx *f = *state;
    assert_int_equal(reg(f, "SN-P", 1), STORE_OK);
    assert_int_equal(set_code(f, "SN-P", 1, "ABCDEF"), STORE_OK);
    assert_int_equal(poll_s(f, NULL, "ABCDEF", 1, NULL), STORE_PENDING);
    assert_int_equal(issue(f, "au", NULL, "ABCDEF", 7, NULL), STORE_OK);

    /* No device row, yet the body is delivered (a local issuance without its
     * device row would be PROVISIONED). */
    f->p.now_ms += 10000;
    int64_t delivered = f->p.now_ms;
    expect_deliver(f, "SN-P", NULL, 1, "SN-P", ID(7).s);
    assert_int_equal(raw_int(f->path, "SELECT delivered_ms FROM issuances"), delivered);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM devices"), 0);
    /* Redelivery inside the grace window, by serial or code; the first time stays. */
    f->p.now_ms += 1000;
    expect_deliver(f, NULL, "ABCDEF", 1, "SN-P", ID(7).s);
    f->p.now_ms = delivered + GRACE_MS - 1;
    expect_deliver(f, "SN-P", NULL, 1, "SN-P", ID(7).s);
    assert_int_equal(raw_int(f->path, "SELECT delivered_ms FROM issuances"), delivered);
    /* Another token: never. */
    assert_int_equal(poll_s(f, "SN-P", NULL, 2, NULL), STORE_PROVISIONED);
    /* Grace over. */
    f->p.now_ms = delivered + GRACE_MS;
    assert_int_equal(poll_s(f, "SN-P", NULL, 1, NULL), STORE_PROVISIONED);
    assert_int_equal(poll_s(f, NULL, "ABCDEF", 1, NULL), STORE_PROVISIONED);
}

/* An issuance of another region that nobody fetches ends after remote_max_age_ms:
 * no device ID or sealed body stays at eu; the serial stays spent (a reset in the
 * region re-arms it). */
static void test_remote_max_age(void **state)
{
    struct fx *f = *state;
    assert_int_equal(reg(f, "SN-OLD", 1), STORE_OK);
    assert_int_equal(issue(f, "au", "SN-OLD", NULL, 1, NULL), STORE_OK);
    int64_t created = f->p.now_ms;
    f->p.remote_max_age_ms = 0; /* 0: never */
    f->p.now_ms = created + 10LL * 86400000;
    assert_int_equal(ops->sweep(f->s, &f->p, 0), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances WHERE sealed IS NOT NULL"),
                     1);
    f->p.remote_max_age_ms = 86400000;
    f->p.now_ms = created + 86400000 - 1;
    assert_int_equal(ops->sweep(f->s, &f->p, 0), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances WHERE sealed IS NOT NULL"),
                     1);
    f->p.now_ms = created + 86400000;
    assert_int_equal(ops->sweep(f->s, &f->p, 0), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances WHERE sealed IS NOT NULL OR"
                                      " device_id <> ''"),
                     0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances WHERE serial = 'SN-OLD'"),
                     1);
    assert_int_equal(reg(f, "SN-OLD", 2), STORE_PROVISIONED);
    assert_int_equal(rearm(f, "au", "SN-OLD"), STORE_OK);
    assert_int_equal(reg(f, "SN-OLD", 3), STORE_OK);
}

static void test_remote_sweep(void **state)
{
    struct fx *f = *state;
    struct hash tok1 = H(1);
    char buf[128], want[128];
    assert_int_equal(reg(f, "SN-S1", 1), STORE_OK);
    assert_int_equal(reg(f, "SN-S2", 2), STORE_OK);
    assert_int_equal(issue(f, "au", "SN-S1", NULL, 1, NULL), STORE_OK);
    assert_int_equal(issue(f, "au", "SN-S2", NULL, 2, NULL), STORE_OK);
    f->p.now_ms += 1000;
    int64_t delivered = f->p.now_ms;
    expect_deliver(f, "SN-S1", NULL, 1, "SN-S1", ID(1).s);

    /* Inside grace nothing goes, though no device row exists for either. */
    f->p.now_ms = delivered + GRACE_MS - 1;
    assert_int_equal(ops->sweep(f->s, &f->p, 0), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances WHERE sealed IS NOT NULL AND"
                                      " device_id LIKE 'dev_%'"),
                     2);
    expect_deliver(f, "SN-S1", NULL, 1, "SN-S1", ID(1).s);

    /* Grace over: the delivered one keeps only the mark that its serial is spent. */
    f->p.now_ms = delivered + GRACE_MS;
    assert_int_equal(ops->sweep(f->s, &f->p, 0), 0);
    assert_string_equal(raw_text(f->path,
                                 "SELECT COALESCE(CAST(length(sealed) AS TEXT), 'NULL') || '|' ||"
                                 " device_id || '|' || region || '|' || token_hash FROM issuances WHERE serial = 'SN-S1'",
                                 buf, sizeof buf),
                        (snprintf(want, sizeof want, "NULL||au|%s", tok1.h), want));
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances WHERE device_id = "
                                      "'dev_00000000000000000000000001'"),
                     0);
    assert_int_equal(poll_s(f, "SN-S1", NULL, 1, NULL), STORE_PROVISIONED);
    /* Only the SHA-256 of the device ID stays: au can still end or cancel it. */
    assert_string_equal(raw_text(f->path, "SELECT device_ref FROM issuances WHERE serial = 'SN-S1'",
                                 buf, sizeof buf),
                        "0edaf3e9647ba9e3ede27706e7af347c8c017e186a9c4d8106f1145ad9832c5b");
    {
        char ser[PHY_SERIAL_MAX + 1];
        /* a late cancel still learns it was delivered; a late replay still matches */
        assert_int_equal(cancel(f, "au", 1, ser), STORE_PROVISIONED);
        assert_string_equal(ser, "SN-S1");
        assert_int_equal(issue(f, "au", "SN-S1", NULL, 1, NULL), STORE_OK);
        assert_int_equal(issue(f, "uae", "SN-S1", NULL, 1, NULL), STORE_ALREADY_CLAIMED);
    }
    assert_int_equal(purge(f, "au", 1), STORE_OK);
    assert_int_equal(purge(f, "uae", 1), STORE_NOT_FOUND);
    /* The never-delivered one stays deliverable; the serial stays spent. */
    assert_int_equal(
        raw_int(f->path, "SELECT length(sealed) FROM issuances WHERE serial = 'SN-S2'"), 13);
    f->p.now_ms += 1000;
    expect_deliver(f, "SN-S2", NULL, 2, "SN-S2", ID(2).s);
    assert_int_equal(reg(f, "SN-S1", 3), STORE_PROVISIONED);
}

static void test_purge_remote(void **state)
{
    struct fx *f = *state;
    char buf[64];
    assert_int_equal(reg(f, "SN-U", 1), STORE_OK);
    assert_int_equal(issue(f, "au", "SN-U", NULL, 1, NULL), STORE_OK);
    assert_int_equal(reg(f, "SN-L", 2), STORE_OK);
    assert_int_equal(claim(f, "SN-L", NULL, 2), STORE_OK);

    assert_int_equal(purge(f, "uae", 1), STORE_NOT_FOUND); /* not that region's */
    assert_int_equal(purge(f, "au", 2), STORE_NOT_FOUND);  /* eu's own */
    assert_int_equal(purge(f, "au", 9), STORE_NOT_FOUND);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances WHERE sealed IS NULL"), 0);

    assert_int_equal(purge(f, "au", 1), STORE_OK);
    assert_string_equal(raw_text(f->path,
                                 "SELECT COALESCE(CAST(length(sealed) AS TEXT), 'NULL') || '|' ||"
                                 " device_id || '|' || region FROM issuances WHERE serial = 'SN-U'",
                                 buf, sizeof buf),
                        "NULL||au");
    assert_int_equal(purge(f, "au", 1), STORE_OK); /* by its device_ref: idempotent */
    assert_int_equal(purge(f, "uae", 1), STORE_NOT_FOUND);
    /* Never delivered, and now it never will be; the serial stays spent. */
    assert_int_equal(poll_s(f, "SN-U", NULL, 1, NULL), STORE_PROVISIONED);
    assert_int_equal(reg(f, "SN-U", 3), STORE_PROVISIONED);
    /* eu's own issuance was not touched. */
    expect_deliver(f, "SN-L", NULL, 2, "SN-L", ID(2).s);
}

static void test_cancel_remote(void **state)
{
    struct fx *f = *state;
    char serial[PHY_SERIAL_MAX + 1];

    assert_int_equal(reg(f, "SN-X", 1), STORE_OK);
    assert_int_equal(set_code(f, "SN-X", 1, "ABCDEF"), STORE_OK);
    assert_int_equal(issue(f, "au", NULL, "ABCDEF", 1, NULL), STORE_OK);
    assert_int_equal(cancel(f, "uae", 1, serial), STORE_NOT_FOUND);
    assert_string_equal(serial, "");
    assert_int_equal(cancel(f, "au", 2, NULL), STORE_NOT_FOUND);

    /* Never delivered: rolled back, the registration stays, its code does not. */
    assert_int_equal(cancel(f, "au", 1, serial), STORE_OK);
    assert_string_equal(serial, "SN-X");
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances"), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM registrations WHERE serial = 'SN-X'"
                                      " AND code IS NULL"),
                     1);
    assert_int_equal(cancel(f, "au", 1, NULL), STORE_NOT_FOUND);
    f->p.now_ms += 10000;
    assert_int_equal(poll_s(f, "SN-X", NULL, 1, NULL), STORE_PENDING);
    assert_int_equal(poll_s(f, NULL, "ABCDEF", 1, NULL), STORE_EXPIRED_CODE);

    /* The serial can be claimed again (here by the user's retry, a new device ID). */
    assert_int_equal(issue(f, "au", "SN-X", NULL, 3, serial), STORE_OK);
    assert_string_equal(serial, "SN-X");
    f->p.now_ms += 10000;
    expect_deliver(f, "SN-X", NULL, 1, "SN-X", ID(3).s);
    /* Delivered: the region must keep its device. */
    assert_int_equal(cancel(f, "au", 3, serial), STORE_PROVISIONED);
    assert_string_equal(serial, "SN-X");
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances"), 1);
    expect_deliver(f, "SN-X", NULL, 1, "SN-X", ID(3).s);
}

static void test_rearm_remote(void **state)
{
    struct fx *f = *state;
    assert_int_equal(reg(f, "SN-Z", 1), STORE_OK);
    assert_int_equal(reg(f, "SN-Z", 2), STORE_OK);
    assert_int_equal(set_code(f, "SN-Z", 1, "ABCDEF"), STORE_OK);
    assert_int_equal(issue(f, "au", NULL, "ABCDEF", 1, NULL), STORE_OK);
    assert_int_equal(reg(f, "SN-L", 3), STORE_OK);
    assert_int_equal(claim(f, "SN-L", NULL, 3), STORE_OK);

    assert_int_equal(rearm(f, "uae", "SN-Z"), STORE_NOT_FOUND);
    assert_int_equal(rearm(f, "au", "SN-L"), STORE_NOT_FOUND); /* eu's own */
    assert_int_equal(rearm(f, "au", "SN-NONE"), STORE_NOT_FOUND);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances"), 2);

    assert_int_equal(rearm(f, "au", "SN-Z"), STORE_OK);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances WHERE serial = 'SN-Z'"), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM registrations WHERE serial = 'SN-Z'"),
                     0);
    assert_int_equal(rearm(f, "au", "SN-Z"), STORE_NOT_FOUND);
    /* Registered and claimed afresh, by any region (or eu). */
    assert_int_equal(poll_s(f, "SN-Z", NULL, 1, NULL), STORE_BAD_TOKEN);
    assert_int_equal(reg(f, "SN-Z", 4), STORE_OK);
    assert_int_equal(issue(f, "uae", "SN-Z", NULL, 5, NULL), STORE_OK);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances"), 2);
}

/* ---- regional side ---- */

static void test_claim_begin_hidden(void **state)
{
    struct fx *f = *state;
    struct store_device d;
    struct id id1 = ID(1);
    int64_t tenant = 0;
    char buf[256];

    assert_int_equal(begin(f, 1, NULL, "lobby"), STORE_OK);
    assert_int_equal(begin(f, 1, "SN-9", NULL), STORE_EXISTS);
    assert_int_equal(list_count(f), 0);
    assert_int_equal(get(f, 1, &d), STORE_NOT_FOUND);
    {
        int tout = -1;
        assert_int_equal(ops->tags_put(f->s, 1, ID(1).s, "{\"a\":\"b\"}", &tout), 0);
        assert_int_equal(tout, STORE_NOT_FOUND); /* hidden from tag changes too */
    }
    assert_null(d.tags_json);
    assert_int_equal(auth(f, 1, &tenant), STORE_OK); /* its credentials are good already */
    assert_int_equal(tenant, 1);
    assert_string_equal(raw_text(f->path,
                                 "SELECT state || '|' || serial || '|' || remote || '|' || name"
                                 " || '|' || tags_json FROM devices",
                                 buf, sizeof buf),
                        "claiming||1|lobby|{\"site\":\"x\"}");
    /* Its CANCEL entry falls due after the hold. */
    assert_string_equal(due(f, T0 + HOLD_MS - 1, 16, buf, sizeof buf), "");
    assert_string_equal(due(f, T0 + HOLD_MS, 16, buf, sizeof buf), "1:1::0");

    /* eu accepted (it names the serial of a claim by code). */
    f->p.now_ms += 1000;
    assert_int_equal(confirm(f, 1, "SN-1", &d), STORE_OK);
    assert_string_equal(d.device_id, id1.s);
    assert_string_equal(d.state, "pending_delivery");
    assert_string_equal(d.serial, "SN-1");
    assert_string_equal(d.name, "lobby");
    assert_string_equal(d.tags_json, "{\"site\":\"x\"}");
    assert_int_equal(d.created_ms, T0);
    store_device_clear(&d);
    assert_int_equal(outbox_count(f), 0);
    assert_int_equal(list_count(f), 1);
    assert_int_equal(get(f, 1, &d), STORE_OK);
    assert_string_equal(d.state, "pending_delivery");
    store_device_clear(&d);
    /* A confirm repeated changes nothing. */
    assert_int_equal(confirm(f, 1, "SN-OTHER", NULL), STORE_OK);
    assert_string_equal(raw_text(f->path, "SELECT serial || state FROM devices", buf, sizeof buf),
                        "SN-1pending_delivery");
    assert_int_equal(confirm(f, 2, "SN-2", &d), STORE_NOT_FOUND);
    assert_null(d.tags_json);
}

static void test_claim_abort(void **state)
{
    struct fx *f = *state;
    char buf[128];
    assert_int_equal(begin(f, 1, "SN-1", NULL), STORE_OK);
    f->p.now_ms += 10;
    assert_int_equal(begin(f, 2, "SN-2", NULL), STORE_OK);
    assert_string_equal(due(f, T0 + HOLD_MS + 10, 16, buf, sizeof buf), "1:1:SN-1:0 2:1:SN-2:0");
    /* A claiming device that reported something already has a twin row. */
    int64_t v = 0;
    int changed = 0, out = -1;
    struct id id1 = ID(1);
    assert_int_equal(ops->reported_patch(f->s, id1.s, "{\"a\":1}", T0, &v, &changed, &out), 0);
    assert_int_equal(out, STORE_OK);

    abort_claim(f, 1);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM devices"), 1);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM twins"), 0);
    assert_string_equal(due(f, INT64_MAX, 16, buf, sizeof buf), "2:1:SN-2:0");
    assert_int_equal(auth(f, 1, NULL), STORE_NOT_FOUND);
    assert_int_equal(confirm(f, 1, "SN-1", NULL), STORE_NOT_FOUND);
    abort_claim(f, 1); /* nothing left: fine */

    /* Once confirmed, an abort does not delete the device. */
    assert_int_equal(confirm(f, 2, "SN-2", NULL), STORE_OK);
    abort_claim(f, 2);
    assert_int_equal(list_count(f), 1);
    assert_int_equal(outbox_count(f), 0);
}

static void test_session_open_purge(void **state)
{
    struct fx *f = *state;
    struct store_device d;
    char buf[128];

    assert_int_equal(begin(f, 1, "SN-1", NULL), STORE_OK);
    assert_int_equal(confirm(f, 1, "SN-1", NULL), STORE_OK);
    f->p.now_ms += 5000;
    session(f, 1);
    assert_int_equal(get(f, 1, &d), STORE_OK);
    assert_string_equal(d.state, "active");
    store_device_clear(&d);
    /* Due now, with the serial. */
    assert_string_equal(due(f, f->p.now_ms, 16, buf, sizeof buf), "1:2:SN-1:0");
    assert_int_equal(raw_int(f->path, "SELECT created_ms FROM outbox"), f->p.now_ms);
    assert_int_equal(ops->outbox_done(f->s, ID(1).s, OUTBOX_PURGE), 0);
    /* Later sessions queue nothing. */
    assert_int_equal(ops->session_close(f->s, ID(1).s, -1, f->p.now_ms, f->p.now_ms), 0);
    f->p.now_ms += 5000;
    session(f, 1);
    assert_int_equal(outbox_count(f), 0);

    /* A device that connects while still claiming (eu delivered, its answer was lost):
     * active, purge queued without a serial, its CANCEL entry kept. */
    assert_int_equal(begin(f, 2, NULL, NULL), STORE_OK);
    session(f, 2);
    assert_string_equal(due(f, f->p.now_ms, 16, buf, sizeof buf), "2:2::0");
    assert_int_equal(get(f, 2, &d), STORE_OK);
    assert_string_equal(d.state, "active");
    store_device_clear(&d);
    /* The late confirm (a roll forward) keeps the state and fills in the serial. */
    assert_int_equal(confirm(f, 2, "SN-2", &d), STORE_OK);
    assert_string_equal(d.state, "active");
    assert_string_equal(d.serial, "SN-2");
    store_device_clear(&d);
    assert_string_equal(due(f, INT64_MAX, 16, buf, sizeof buf), "2:2::0");
    assert_int_equal(confirm(f, 2, "SN-3", NULL), STORE_OK);
    assert_string_equal(
        raw_text(f->path, "SELECT serial FROM devices WHERE device_id LIKE '%2'", buf, sizeof buf),
        "SN-2");

    /* eu's own devices (remote = 0) never queue anything. */
    assert_int_equal(reg(f, "SN-L", 1), STORE_OK);
    assert_int_equal(claim(f, "SN-L", NULL, 3), STORE_OK);
    session(f, 3);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM outbox WHERE device_id LIKE '%3'"), 0);
}

static void test_revoke_delete_reset(void **state)
{
    struct fx *f = *state;
    char buf[256];
    int out = -1;

    /* 1: pending, revoked. 2: active, revoked. 3: pending, deleted. 4: active, reset.
     * 5: pending (a purge queued by a revoke), reset. */
    for (unsigned i = 1; i <= 5; i++) {
        char serial[16];
        snprintf(serial, sizeof serial, "SN-%u", i);
        assert_int_equal(begin(f, i, NULL, NULL), STORE_OK);
        assert_int_equal(confirm(f, i, serial, NULL), STORE_OK);
    }
    session(f, 2);
    session(f, 4);
    assert_int_equal(ops->outbox_done(f->s, ID(2).s, OUTBOX_PURGE), 0);
    assert_int_equal(ops->outbox_done(f->s, ID(4).s, OUTBOX_PURGE), 0);
    assert_int_equal(outbox_count(f), 0);

    f->p.now_ms = T0 + 1000;
    assert_int_equal(ops->device_revoke(f->s, 1, ID(1).s, f->p.now_ms, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(ops->device_revoke(f->s, 1, ID(2).s, f->p.now_ms, &out), 0);
    assert_string_equal(due(f, f->p.now_ms, 16, buf, sizeof buf), "1:2:SN-1:0");
    /* Revoking again queues nothing new. */
    assert_int_equal(ops->outbox_done(f->s, ID(1).s, OUTBOX_PURGE), 0);
    assert_int_equal(ops->device_revoke(f->s, 1, ID(1).s, f->p.now_ms, &out), 0);
    assert_int_equal(outbox_count(f), 0);

    /* device_delete has no clock: due at once. */
    assert_int_equal(ops->device_delete(f->s, 1, ID(3).s, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_string_equal(due(f, 0, 16, buf, sizeof buf), "3:2:SN-3:0");
    assert_int_equal(ops->outbox_done(f->s, ID(3).s, OUTBOX_PURGE), 0);

    f->p.now_ms = T0 + 2000;
    assert_int_equal(ops->device_reset(f->s, 1, ID(4).s, f->p.now_ms, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_string_equal(due(f, f->p.now_ms, 16, buf, sizeof buf), "4:3:SN-4:0");
    assert_int_equal(ops->device_revoke(f->s, 1, ID(5).s, f->p.now_ms, &out), 0);
    assert_int_equal(ops->device_reset(f->s, 1, ID(5).s, f->p.now_ms, &out), 0);
    assert_string_equal(due(f, f->p.now_ms, 16, buf, sizeof buf), "4:3:SN-4:0 5:3:SN-5:0");
    /* Unknown device: nothing. */
    assert_int_equal(ops->device_revoke(f->s, 1, ID(9).s, f->p.now_ms, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    assert_int_equal(outbox_count(f), 2);

    /* eu's own device (remote = 0): nothing. */
    assert_int_equal(reg(f, "SN-L", 1), STORE_OK);
    assert_int_equal(claim(f, "SN-L", NULL, 6), STORE_OK);
    assert_int_equal(ops->device_revoke(f->s, 1, ID(6).s, f->p.now_ms, &out), 0);
    assert_int_equal(ops->device_reset(f->s, 1, ID(6).s, f->p.now_ms, &out), 0);
    assert_int_equal(outbox_count(f), 2);
}

static void test_outbox_order_and_retry(void **state)
{
    struct fx *f = *state;
    char buf[256];

    /* Due times T0+HOLD+{20, 0, 0, 10}; 2 and 3 due together, 2 created first. */
    f->p.now_ms = T0 + 20;
    assert_int_equal(begin(f, 1, "SN-1", NULL), STORE_OK);
    f->p.now_ms = T0 + 1;
    assert_int_equal(begin(f, 3, "SN-3", NULL), STORE_OK);
    assert_int_equal(raw_int(f->path, "SELECT next_ms FROM outbox WHERE serial = 'SN-3'"),
                     T0 + 1 + HOLD_MS);
    raw_exec(f->path, "UPDATE outbox SET next_ms = next_ms - 1, created_ms = created_ms + 1"
                      " WHERE serial = 'SN-3'");
    f->p.now_ms = T0;
    assert_int_equal(begin(f, 2, "SN-2", NULL), STORE_OK);
    f->p.now_ms = T0 + 10;
    assert_int_equal(begin(f, 4, "SN-4", NULL), STORE_OK);

    int64_t base = T0 + HOLD_MS;
    assert_string_equal(due(f, base - 1, 16, buf, sizeof buf), "");
    assert_string_equal(due(f, base, 16, buf, sizeof buf), "2:1:SN-2:0 3:1:SN-3:0");
    assert_string_equal(due(f, INT64_MAX, 16, buf, sizeof buf),
                        "2:1:SN-2:0 3:1:SN-3:0 4:1:SN-4:0 1:1:SN-1:0");
    assert_string_equal(due(f, INT64_MAX, 3, buf, sizeof buf), "2:1:SN-2:0 3:1:SN-3:0 4:1:SN-4:0");
    assert_string_equal(due(f, INT64_MAX, 1, buf, sizeof buf), "2:1:SN-2:0");
    size_t n = 7;
    assert_int_equal(ops->outbox_due(f->s, INT64_MAX, NULL, 0, &n), 0);
    assert_int_equal(n, 0);

    /* A failed call: attempts + 1, due again later; twice. */
    assert_int_equal(ops->outbox_retry(f->s, ID(2).s, OUTBOX_CANCEL, base + 15), 0);
    assert_string_equal(due(f, base + 10, 16, buf, sizeof buf), "3:1:SN-3:0 4:1:SN-4:0");
    assert_int_equal(ops->outbox_retry(f->s, ID(2).s, OUTBOX_CANCEL, base + 30), 0);
    assert_string_equal(due(f, base + 30, 16, buf, sizeof buf),
                        "3:1:SN-3:0 4:1:SN-4:0 1:1:SN-1:0 2:1:SN-2:2");
    /* Only that kind. */
    assert_int_equal(ops->outbox_retry(f->s, ID(3).s, OUTBOX_PURGE, base + 99), 0);
    assert_int_equal(ops->outbox_done(f->s, ID(3).s, OUTBOX_PURGE), 0);
    assert_string_equal(due(f, base, 16, buf, sizeof buf), "3:1:SN-3:0");
    assert_int_equal(ops->outbox_done(f->s, ID(3).s, OUTBOX_CANCEL), 0);
    assert_int_equal(ops->outbox_done(f->s, ID(3).s, OUTBOX_CANCEL), 0);
    assert_string_equal(due(f, INT64_MAX, 16, buf, sizeof buf), "4:1:SN-4:0 1:1:SN-1:0 2:1:SN-2:2");
    /* The hidden rows are still there: only the outbox changed. */
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM devices WHERE state = 'claiming'"), 4);
}

/* ---- schema ---- */

/* A version-2 store, made from a fresh one by taking version 3's and 4's additions away. */
static void make_v2(const char *path)
{
    raw_exec(path, UNDO_V5_SQL "DROP TABLE console_sessions;"
                   "DROP TABLE login_failures;"
                   "DROP TABLE audit;"
                   "DROP TABLE status_history;"
                   "DROP TABLE outbox;"
                   "DROP INDEX issuances_device;"
                   "DROP INDEX issuances_ref;"
                   "ALTER TABLE issuances DROP COLUMN device_ref;"
                   "ALTER TABLE issuances DROP COLUMN region;"
                   "ALTER TABLE devices DROP COLUMN remote;"
                   "PRAGMA user_version = 2;");
}

static void test_migration_v2(void **state)
{
    SQLITE_ONLY();
    struct fx *f = *state;
    struct store_device d;
    struct hash sh = H(SECRET), tok = H(1);
    char sql[1024], a[2048];

    fx_open(f);
    ops->close(f->s);
    f->s = NULL;
    make_v2(f->path);
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), 2);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM pragma_table_info('devices')"
                                      " WHERE name = 'remote'"),
                     0);
    snprintf(sql, sizeof sql,
             "INSERT INTO devices(device_id, tenant_id, serial, secret_hash, state, created_ms)"
             " VALUES ('dev_00000000000000000000000001', 1, 'S1', '%s', 'pending_delivery', 5);"
             "INSERT INTO issuances VALUES ('S1', NULL, '%s', 'dev_00000000000000000000000001',"
             " x'01', 5, NULL);",
             sh.h, tok.h);
    raw_exec(f->path, sql);

    fx_open(f);
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
    /* Old rows are eu's own (remote 0, region NULL) and behave as before. */
    assert_int_equal(raw_int(f->path, "SELECT remote FROM devices"), 0);
    assert_int_equal(raw_int(f->path, "SELECT region IS NULL FROM issuances"), 1);
    assert_int_equal(poll_s(f, "S1", NULL, 1, NULL), STORE_DELIVER);
    assert_int_equal(get(f, 1, &d), STORE_OK);
    assert_string_equal(d.state, "provisioned");
    store_device_clear(&d);
    assert_int_equal(auth(f, 1, NULL), STORE_OK);
    /* The new tables work. */
    assert_int_equal(begin(f, 2, "S2", NULL), STORE_OK);
    assert_int_equal(outbox_count(f), 1);

    /* Same shape as a fresh store: columns, indexes. */
    make_fresh(f);
    static const char *const shapes[] = {COLS_SQL("devices"), COLS_SQL("issuances"),
                                         COLS_SQL("outbox"), INDEXES_SQL};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        expect_same_shape(f, shapes[i]);
    raw_text(f->path, INDEXES_SQL, a, sizeof a);
    assert_non_null(strstr(a, "issuances_device:issuances:device_id"));
    assert_non_null(strstr(a, "outbox_next:outbox:next_ms"));
}

static void test_invalid_inputs(void **state)
{
    struct fx *f = *state;
    struct id id = ID(1);
    struct hash sh = H(SECRET);
    char serial[PHY_SERIAL_MAX + 1];
    struct store_outbox_item item;
    size_t n;
    int out = -1;

    struct store_remote_issue ri = {
        .serial_claims = SERIAL_CLAIMS_ANY,
        .serial = "SN-1",
        .device_id = id.s,
        .region = "AU",
        .seal = test_seal,
        .seal_ctx = &f->seal,
    };
    assert_int_equal(ops->issue_remote(f->s, &f->p, &ri, serial, &out), PHY_EINVAL);
    ri.region = "";
    assert_int_equal(ops->issue_remote(f->s, &f->p, &ri, serial, &out), PHY_EINVAL);
    ri.region = "a-region-16-chrs";
    assert_int_equal(ops->issue_remote(f->s, &f->p, &ri, serial, &out), PHY_EINVAL);
    ri.region = "a-region-15-chr"; /* the longest */
    assert_int_equal(ops->issue_remote(f->s, &f->p, &ri, serial, &out), 0);
    assert_int_equal(out, STORE_UNKNOWN_SERIAL);
    ri.code = "ABCDEF";
    assert_int_equal(ops->issue_remote(f->s, &f->p, &ri, serial, &out), PHY_EINVAL);
    ri.code = NULL;
    assert_int_equal(ops->issue_remote(f->s, &f->p, &ri, NULL, &out), PHY_EINVAL);
    ri.seal = NULL;
    assert_int_equal(ops->issue_remote(f->s, &f->p, &ri, serial, &out), PHY_EINVAL);
    ri.seal = test_seal;
    ri.device_id = NULL;
    assert_int_equal(ops->issue_remote(f->s, &f->p, &ri, serial, &out), PHY_EINVAL);

    assert_int_equal(ops->issuance_purge_remote(f->s, "a u", id.s, &out), PHY_EINVAL);
    assert_int_equal(ops->issuance_purge_remote(f->s, "au", NULL, &out), PHY_EINVAL);
    assert_int_equal(ops->issuance_cancel_remote(f->s, "au", id.s, NULL, &out), PHY_EINVAL);
    assert_int_equal(ops->issuance_cancel_remote(f->s, NULL, id.s, serial, &out), PHY_EINVAL);
    assert_int_equal(ops->serial_rearm_remote(f->s, "au", "S N", &out), PHY_EINVAL);
    assert_int_equal(ops->serial_rearm_remote(f->s, "au", "SN", NULL), PHY_EINVAL);

    struct store_claim_begin c = {
        .tenant_id = 1,
        .device_id = id.s,
        .secret_hash = "",
        .now_ms = T0,
        .hold_ms = 1,
    };
    assert_int_equal(ops->claim_begin(f->s, &c, &out), PHY_EINVAL);
    c.secret_hash = sh.h;
    c.serial = "S N";
    assert_int_equal(ops->claim_begin(f->s, &c, &out), PHY_EINVAL);
    c.serial = NULL;
    c.hold_ms = -1;
    assert_int_equal(ops->claim_begin(f->s, &c, &out), PHY_EINVAL);
    c.hold_ms = INT64_MAX;
    assert_int_equal(ops->claim_begin(f->s, &c, &out), PHY_EINVAL);
    c.hold_ms = 1;
    char *big = malloc(70000);
    assert_non_null(big);
    memset(big, ' ', 69999);
    big[0] = '{';
    big[69998] = '}';
    big[69999] = '\0';
    c.tags_json = big;
    assert_int_equal(ops->claim_begin(f->s, &c, &out), PHY_ETOOBIG);
    free(big);
    c.tags_json = NULL;
    assert_int_equal(ops->claim_begin(f->s, &c, NULL), PHY_EINVAL);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM devices"), 0);
    assert_int_equal(ops->claim_begin(f->s, &c, &out), 0); /* tags default to {} */
    assert_int_equal(out, STORE_OK);
    assert_int_equal(raw_int(f->path, "SELECT tags_json = '{}' FROM devices"), 1);

    assert_int_equal(ops->claim_confirm(f->s, id.s, NULL, NULL, &out), PHY_EINVAL);
    assert_int_equal(ops->claim_confirm(f->s, id.s, "SN", NULL, NULL), PHY_EINVAL);
    assert_int_equal(ops->claim_abort(f->s, ""), PHY_EINVAL);
    assert_int_equal(ops->outbox_done(f->s, id.s, 0), PHY_EINVAL);
    assert_int_equal(ops->outbox_done(f->s, id.s, 4), PHY_EINVAL);
    assert_int_equal(ops->outbox_retry(f->s, id.s, 4, T0), PHY_EINVAL);
    assert_int_equal(ops->outbox_retry(f->s, NULL, OUTBOX_CANCEL, T0), PHY_EINVAL);
    assert_int_equal(ops->outbox_due(f->s, T0, NULL, 1, &n), PHY_EINVAL);
    assert_int_equal(ops->outbox_due(f->s, T0, &item, 1, NULL), PHY_EINVAL);
    assert_int_equal(outbox_count(f), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_issue_by_serial_and_code, setup, teardown),
        cmocka_unit_test_setup_teardown(test_issue_refusals_and_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_and_remote_contend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remote_poll_delivery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remote_sweep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remote_max_age, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge_remote, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_remote, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rearm_remote, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_begin_hidden, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_open_purge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoke_delete_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbox_order_and_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_v2, setup_nostore, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_inputs, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
