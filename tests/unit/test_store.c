/* Unit tests of the SQLite store: provisioning state machine, claims, admin, listing. */
#include "teststore.h"

#include <sys/stat.h>

/* The sealed body the test sealer produces: binary, includes NUL and 0xff bytes. */
static size_t expected_sealed(const char *serial, unsigned char *buf, size_t cap)
{
    size_t n = strlen(serial);
    assert_true(n + 4 <= cap);
    buf[0] = 0x00;
    buf[1] = 0xff;
    memcpy(buf + 2, serial, n);
    buf[n + 2] = 0x00;
    buf[n + 3] = 0x7f;
    return n + 4;
}

static int setup(void **state)
{
    fx_open(fx_new(state, "phy_test_store_", expected_sealed));
    return 0;
}

static void dev_id(unsigned i, char out[PHY_DEVICE_ID_LEN + 1])
{
    memcpy(out, ID(i).s, PHY_DEVICE_ID_LEN + 1);
}

/* ---- small wrappers that assert success and return the outcome ---- */

static int claim_full(struct fx *f, int64_t tenant, const char *serial, const char *code,
                      const char *device_id, const char *name, const char *tags, int *rc_out,
                      struct store_device *dev)
{
    struct store_claim c = {
        .serial_claims = SERIAL_CLAIMS_ANY, /* the tests below predate attestation */
        .tenant_id = tenant,
        .user_id = 1,
        .serial = serial,
        .code = code,
        .device_id = device_id,
        .name = name,
        .tags_json = tags,
        .seal = test_seal,
        .seal_ctx = &f->seal,
    };
    struct hash sh = H(0xabcdefu);
    int out = -1;
    c.secret_hash = sh.h; /* set after: sh must outlive the call */
    *rc_out = ops->claim(f->s, &f->p, &c, dev, &out);
    return out;
}

static int claim(struct fx *f, const char *serial, const char *code, const char *device_id)
{
    struct store_device d;
    int rc, out = claim_full(f, 1, serial, code, device_id, NULL, NULL, &rc, &d);
    assert_int_equal(rc, 0);
    free(d.tags_json);
    return out;
}

static void device_state(struct fx *f, int64_t tenant, const char *device_id, const char *want)
{
    struct store_device *d = NULL;
    size_t n = 0;
    int found = 0;
    assert_int_equal(ops->devices_list(f->s, tenant, NULL, NULL, 100, &d, &n), 0);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(d[i].device_id, device_id) == 0) {
            assert_string_equal(d[i].state, want);
            found = 1;
        }
    }
    store_devices_free(d, n);
    assert_true(found);
}

/* ---- tests ---- */

static void test_provisioning_flow(void **state)
{
    struct fx *f = *state;
    char id[PHY_DEVICE_ID_LEN + 1];
    struct store_device dev;
    int iv = 0, rc;

    dev_id(1, id);
    assert_int_equal(reg(f, "SN-1", 1), STORE_OK);
    assert_int_equal(set_code(f, "SN-1", 1, "k7m2qx"), STORE_OK);

    assert_int_equal(poll_s(f, "SN-1", NULL, 1, &iv), STORE_PENDING);
    assert_int_equal(iv, 5);
    /* Too fast: the interval grows by the base interval up to the cap. */
    f->p.now_ms += 1000;
    assert_int_equal(poll_s(f, "SN-1", NULL, 1, &iv), STORE_SLOW_DOWN);
    assert_int_equal(iv, 10);
    f->p.now_ms += 7999; /* 0.8 * 10 s = 8 s */
    assert_int_equal(poll_s(f, "SN-1", NULL, 1, &iv), STORE_SLOW_DOWN);
    assert_int_equal(iv, 15);
    f->p.now_ms += 1000;
    assert_int_equal(poll_s(f, "SN-1", NULL, 1, &iv), STORE_SLOW_DOWN);
    assert_int_equal(iv, 20);
    f->p.now_ms += 1000;
    assert_int_equal(poll_s(f, "SN-1", NULL, 1, &iv), STORE_SLOW_DOWN);
    assert_int_equal(iv, 20);
    f->p.now_ms += 16000; /* exactly 0.8 * 20 s: allowed */
    assert_int_equal(poll_s(f, "SN-1", NULL, 1, &iv), STORE_PENDING);
    assert_int_equal(iv, 20);
    /* By code too, same rules. */
    f->p.now_ms += 20000;
    assert_int_equal(poll_s(f, NULL, "K7M2QX", 1, &iv), STORE_PENDING);

    /* Wrong token, or the right token with another serial. */
    assert_int_equal(poll_s(f, "SN-1", NULL, 9, NULL), STORE_BAD_TOKEN);
    assert_int_equal(reg(f, "SN-OTHER", 2), STORE_OK);
    assert_int_equal(poll_s(f, "SN-OTHER", NULL, 1, NULL), STORE_BAD_TOKEN);
    assert_int_equal(poll_s(f, "SN-1", NULL, 2, NULL), STORE_BAD_TOKEN);

    /* Claim by serial. */
    f->p.now_ms += 1000;
    assert_int_equal(claim_full(f, 1, "SN-1", NULL, id, "lobby", "{\"floor\":\"1\"}", &rc, &dev),
                     STORE_OK);
    assert_int_equal(rc, 0);
    assert_string_equal(dev.device_id, id);
    assert_string_equal(dev.serial, "SN-1");
    assert_string_equal(dev.name, "lobby");
    assert_string_equal(dev.state, "pending_delivery");
    assert_string_equal(dev.tags_json, "{\"floor\":\"1\"}");
    assert_int_equal(dev.created_ms, f->p.now_ms);
    free(dev.tags_json);
    assert_int_equal(f->seal.calls, 1);
    assert_string_equal(f->seal.last_serial, "SN-1");
    device_state(f, 1, id, "pending_delivery");

    /* First delivery, then a retry inside the grace window gets the same bytes. */
    f->p.now_ms += 20000;
    int64_t delivered = f->p.now_ms;
    expect_deliver(f, "SN-1", NULL, 1, "SN-1", id);
    device_state(f, 1, id, "provisioned");
    f->p.now_ms += 1000; /* no slow_down for a delivery */
    expect_deliver(f, NULL, "K7M2QX", 1, "SN-1", id);
    f->p.now_ms = delivered + GRACE_MS - 1;
    expect_deliver(f, "SN-1", NULL, 1, "SN-1", id);
    assert_int_equal(raw_int(f->path, "SELECT delivered_ms FROM issuances"), delivered);

    /* The grace window ends; the sweep purges the body. */
    f->p.now_ms = delivered + GRACE_MS;
    assert_int_equal(poll_s(f, "SN-1", NULL, 1, NULL), STORE_PROVISIONED);
    assert_int_equal(raw_int(f->path, "SELECT sealed IS NOT NULL FROM issuances"), 1);
    assert_int_equal(ops->sweep(f->s, &f->p, 0), 0);
    assert_int_equal(raw_int(f->path, "SELECT sealed IS NULL FROM issuances"), 1);
    assert_int_equal(poll_s(f, "SN-1", NULL, 1, NULL), STORE_PROVISIONED);
    assert_int_equal(poll_s(f, NULL, "K7M2QX", 1, NULL), STORE_PROVISIONED);

    /* Another token, a new registration, a new code: all spent. */
    assert_int_equal(poll_s(f, "SN-1", NULL, 3, NULL), STORE_PROVISIONED);
    assert_int_equal(poll_s(f, NULL, "K7M2QX", 3, NULL), STORE_PROVISIONED);
    assert_int_equal(reg(f, "SN-1", 4), STORE_PROVISIONED);
    assert_int_equal(set_code(f, "SN-1", 1, "PQRSTU"), STORE_PROVISIONED);
    assert_int_equal(claim(f, "SN-1", NULL, "dev_00000000000000000000000099"),
                     STORE_ALREADY_CLAIMED);
    assert_int_equal(f->seal.calls, 1);
}

/* The store's own value of a registration's column (text), as another reader sees it. */
static void reg_column(struct fx *f, unsigned tok, const char *col, char *out, size_t cap)
{
    char sql[256];
    struct hash h = H(tok);
    snprintf(sql, sizeof sql, "SELECT %s FROM registrations WHERE token_hash = '%s'", col, h.h);
    assert_int_equal(store_debug_query(f->s, sql, out, cap), 0);
}

/* Pending polls record their soft state in memory: the store is not written (on
 * SQLite: no commit at all) until store_soft_flush, and the slow_down rules hold on
 * the recorded state all along; a claim flushes first, so the poll still counts as
 * activity. */
static void test_pending_polls_are_soft(void **state)
{
    struct fx *f = *state;
    char v[64];
    uint64_t c0 = 0, o0 = 0, c1 = 0, o1 = 0;
    int iv = 0, stats;
    assert_int_equal(reg(f, "SOFT-1", 1), STORE_OK);
    stats = store_commit_stats(f->s, &c0, &o0);
    assert_true(stats == 0 || (stats == PHY_EUNSUPP && store_is_pg()));
    f->p.now_ms += 1000;
    assert_int_equal(poll_s(f, "SOFT-1", NULL, 1, &iv), STORE_PENDING);
    f->p.now_ms += 1000;
    assert_int_equal(poll_s(f, "SOFT-1", NULL, 1, &iv), STORE_SLOW_DOWN);
    assert_int_equal(iv, 10);
    reg_column(f, 1, "last_poll_ms", v, sizeof v);
    assert_string_equal(v, "<null>"); /* nothing written yet */
    reg_column(f, 1, "interval_s", v, sizeof v);
    assert_string_equal(v, "5");
    if (stats == 0) {
        assert_int_equal(store_commit_stats(f->s, &c1, &o1), 0);
        assert_true(c1 == c0 && o1 == o0); /* no commit, so no sync */
    }
    assert_int_equal(store_soft_flush(f->s), 0);
    snprintf(v, sizeof v, "%lld", (long long)f->p.now_ms);
    char got[64];
    reg_column(f, 1, "last_poll_ms", got, sizeof got);
    assert_string_equal(got, v);
    reg_column(f, 1, "last_active_ms", got, sizeof got);
    assert_string_equal(got, v);
    reg_column(f, 1, "interval_s", got, sizeof got);
    assert_string_equal(got, "10");
    assert_int_equal(store_soft_flush(f->s), 0); /* nothing left: a no-op */
    /* From the store again: still too fast for 10 s. */
    f->p.now_ms += 7000;
    assert_int_equal(poll_s(f, "SOFT-1", NULL, 1, &iv), STORE_SLOW_DOWN);
    assert_int_equal(iv, 15);
    /* That poll (not flushed) keeps the registration live for a claim whose time is
     * past the idle limit counted from the store's last activity: the claim flushes
     * first. */
    f->p.now_ms += REG_IDLE_MS - 1000;
    char id[PHY_DEVICE_ID_LEN + 1];
    dev_id(1, id);
    assert_int_equal(claim(f, "SOFT-1", NULL, id), STORE_OK);
    assert_int_equal(poll_s(f, "SOFT-1", NULL, 1, NULL), STORE_DELIVER);
}

/* Once a poll read a registration, its pending polls are answered from memory: a
 * row deleted behind the store's back goes unseen, the slow_down rules still hold, and
 * the store answers again as soon as the facts are forgotten (announced by another
 * node, or turned off). */
static void test_pending_polls_from_memory(void **state)
{
    struct fx *f = *state;
    int iv = 0;
    store_poll_facts(f->s, 1); /* on PostgreSQL the hub's link to the other nodes does */
    assert_int_equal(reg(f, "MEM-1", 1), STORE_OK);
    assert_int_equal(reg(f, "MEM-2", 2), STORE_OK);
    f->p.now_ms += 1000;
    assert_int_equal(poll_s(f, "MEM-1", NULL, 1, &iv), STORE_PENDING);
    assert_int_equal(poll_s(f, "MEM-2", NULL, 2, &iv), STORE_PENDING);
    raw_exec(f->path, "DELETE FROM registrations");
    f->p.now_ms += 1000;
    assert_int_equal(poll_s(f, "MEM-1", NULL, 1, &iv), STORE_SLOW_DOWN);
    assert_int_equal(iv, 10);
    f->p.now_ms += 8000;
    assert_int_equal(poll_s(f, "MEM-1", NULL, 1, &iv), STORE_PENDING);
    assert_int_equal(iv, 10);
    /* Not its serial: the store answers. */
    assert_int_equal(poll_s(f, "MEM-2", NULL, 1, NULL), STORE_BAD_TOKEN);
    store_poll_facts_forget(f->s, "MEM-2");
    f->p.now_ms += 10000;
    assert_int_equal(poll_s(f, "MEM-2", NULL, 2, NULL), STORE_BAD_TOKEN);
    assert_int_equal(poll_s(f, "MEM-1", NULL, 1, NULL), STORE_PENDING);
    store_poll_facts(f->s, 0);
    f->p.now_ms += 10000;
    assert_int_equal(poll_s(f, "MEM-1", NULL, 1, NULL), STORE_BAD_TOKEN);
}

/* What changes a pending registration reaches its polls at once although they were
 * answered from memory: a claim by serial or by code, a new code. */
static void test_changes_reach_polls_from_memory(void **state)
{
    struct fx *f = *state;
    char id[PHY_DEVICE_ID_LEN + 1];
    store_poll_facts(f->s, 1);
    assert_int_equal(reg(f, "MEM-3", 3), STORE_OK);
    assert_int_equal(reg(f, "MEM-4", 4), STORE_OK);
    assert_int_equal(reg(f, "MEM-5", 5), STORE_OK);
    assert_int_equal(set_code(f, "MEM-4", 4, "HJKMNP"), STORE_OK);
    assert_int_equal(set_code(f, "MEM-5", 5, "QRSTUV"), STORE_OK);
    f->p.now_ms += 1000;
    assert_int_equal(poll_s(f, "MEM-3", NULL, 3, NULL), STORE_PENDING);
    assert_int_equal(poll_s(f, NULL, "HJKMNP", 4, NULL), STORE_PENDING);
    assert_int_equal(poll_s(f, NULL, "QRSTUV", 5, NULL), STORE_PENDING);
    f->p.now_ms += 10000;
    assert_int_equal(poll_s(f, "MEM-3", NULL, 3, NULL), STORE_PENDING); /* from memory */
    dev_id(3, id);
    assert_int_equal(claim(f, "MEM-3", NULL, id), STORE_OK);
    expect_deliver(f, "MEM-3", NULL, 3, "MEM-3", id);
    dev_id(4, id);
    assert_int_equal(claim(f, NULL, "HJKMNP", id), STORE_OK);
    expect_deliver(f, NULL, "HJKMNP", 4, "MEM-4", id);
    /* A new code: the old one is not this registration's any more. */
    assert_int_equal(set_code(f, "MEM-5", 5, "WXYZ23"), STORE_OK);
    f->p.now_ms += 10000;
    assert_int_equal(poll_s(f, NULL, "QRSTUV", 5, NULL), STORE_EXPIRED_CODE);
    f->p.now_ms += 10000;
    assert_int_equal(poll_s(f, NULL, "WXYZ23", 5, NULL), STORE_PENDING);
}

static void test_claim_by_code(void **state)
{
    struct fx *f = *state;
    char id[PHY_DEVICE_ID_LEN + 1];
    dev_id(2, id);

    assert_int_equal(reg(f, "SN2", 1), STORE_OK);
    assert_int_equal(set_code(f, "SN2", 1, "ABCDEF"), STORE_OK);
    assert_int_equal(poll_s(f, NULL, "abcdef", 1, NULL), STORE_PENDING);
    f->p.now_ms += 10000;
    assert_int_equal(claim(f, NULL, "abcdef", id), STORE_OK);
    assert_string_equal(f->seal.last_serial, "SN2");
    /* The claimed code is spent: the registration's code was cleared. */
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM registrations WHERE code IS NOT NULL"),
                     0);
    assert_int_equal(raw_int(f->path, "SELECT code = 'ABCDEF' FROM issuances"), 1);

    f->p.now_ms += 10000;
    expect_deliver(f, NULL, "ABCDEF", 1, "SN2", id);
    expect_deliver(f, "SN2", NULL, 1, "SN2", id);
    assert_int_equal(claim(f, NULL, "ABCDEF", "dev_00000000000000000000000098"),
                     STORE_ALREADY_CLAIMED);
    assert_int_equal(claim(f, "SN2", NULL, "dev_00000000000000000000000098"),
                     STORE_ALREADY_CLAIMED);
    /* An issued code can never be handed out again. */
    assert_int_equal(reg(f, "SN3", 2), STORE_OK);
    assert_int_equal(set_code(f, "SN3", 2, "ABCDEF"), STORE_CODE_TAKEN);
    assert_int_equal(f->seal.calls, 1);
}

static void test_expired_code(void **state)
{
    struct fx *f = *state;
    assert_int_equal(reg(f, "SN4", 1), STORE_OK);
    assert_int_equal(set_code(f, "SN4", 1, "HJKMNP"), STORE_OK);
    f->p.now_ms += TTL_MS - 1;
    assert_int_equal(poll_s(f, NULL, "HJKMNP", 1, NULL), STORE_PENDING);
    f->p.now_ms += 1;
    assert_int_equal(poll_s(f, NULL, "HJKMNP", 1, NULL), STORE_EXPIRED_CODE);
    assert_int_equal(claim(f, NULL, "HJKMNP", "dev_00000000000000000000000001"),
                     STORE_EXPIRED_CODE);
    assert_int_equal(claim(f, NULL, "ZZZZZZ", "dev_00000000000000000000000001"),
                     STORE_EXPIRED_CODE);
    assert_int_equal(f->seal.calls, 0);
    /* The registration itself is still live and claimable by serial. */
    f->p.now_ms += 10000;
    assert_int_equal(poll_s(f, "SN4", NULL, 1, NULL), STORE_PENDING);
    assert_int_equal(ops->sweep(f->s, &f->p, 0), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM registrations WHERE code IS NULL"), 1);
    assert_int_equal(claim(f, "SN4", NULL, "dev_00000000000000000000000001"), STORE_OK);
}

static void test_code_replaced(void **state)
{
    struct fx *f = *state;
    char id[PHY_DEVICE_ID_LEN + 1];
    dev_id(5, id);
    assert_int_equal(reg(f, "SN5", 1), STORE_OK);
    assert_int_equal(set_code(f, "SN5", 1, "AAAAAA"), STORE_OK);
    f->p.now_ms += 1000;
    assert_int_equal(set_code(f, "SN5", 1, "BBBBBB"), STORE_OK);
    assert_int_equal(claim(f, NULL, "AAAAAA", id), STORE_EXPIRED_CODE);
    assert_int_equal(poll_s(f, NULL, "AAAAAA", 1, NULL), STORE_EXPIRED_CODE);
    f->p.now_ms += 10000;
    assert_int_equal(poll_s(f, NULL, "BBBBBB", 1, NULL), STORE_PENDING);
    assert_int_equal(claim(f, NULL, "BBBBBB", id), STORE_OK);
    f->p.now_ms += 10000;
    expect_deliver(f, NULL, "BBBBBB", 1, "SN5", id);
    /* The replaced code is free again, the claimed one is not. */
    assert_int_equal(reg(f, "SN6", 2), STORE_OK);
    assert_int_equal(set_code(f, "SN6", 2, "AAAAAA"), STORE_OK);
    /* A second code within a second is refused: each request is a durable write. */
    assert_int_equal(set_code(f, "SN6", 2, "CCCCCC"), STORE_SLOW_DOWN);
    f->p.now_ms += 1000;
    assert_int_equal(set_code(f, "SN6", 2, "BBBBBB"), STORE_CODE_TAKEN);
}

static void test_contested_serial(void **state)
{
    struct fx *f = *state;
    char id[PHY_DEVICE_ID_LEN + 1];
    dev_id(7, id);
    assert_int_equal(reg(f, "SN7", 1), STORE_OK); /* e.g. an impostor, first */
    assert_int_equal(reg(f, "SN7", 2), STORE_OK); /* the real device */
    assert_int_equal(set_code(f, "SN7", 1, "CCCCCC"), STORE_OK);
    assert_int_equal(set_code(f, "SN7", 2, "DDDDDD"), STORE_OK);
    assert_int_equal(claim(f, "SN7", NULL, id), STORE_SERIAL_IN_USE);
    assert_int_equal(f->seal.calls, 0);
    assert_int_equal(claim(f, NULL, "DDDDDD", id), STORE_OK);

    f->p.now_ms += 10000;
    assert_int_equal(poll_s(f, "SN7", NULL, 1, NULL), STORE_PROVISIONED);
    assert_int_equal(poll_s(f, NULL, "CCCCCC", 1, NULL), STORE_PROVISIONED);
    assert_int_equal(poll_s(f, NULL, "DDDDDD", 1, NULL), STORE_PROVISIONED);
    expect_deliver(f, "SN7", NULL, 2, "SN7", id);
    expect_deliver(f, NULL, "DDDDDD", 2, "SN7", id);
    /* The other registration's code was cleared with the claim. */
    assert_int_equal(claim(f, NULL, "CCCCCC", "dev_00000000000000000000000070"),
                     STORE_EXPIRED_CODE);
    assert_int_equal(poll_s(f, "SN7", NULL, 1, NULL), STORE_PROVISIONED);
}

/* At a serial's cap of live registrations a newcomer evicts the least recently
 * active one without a live code (no lock-out by count); only when every one holds
 * a live code is it refused. Lapsed registrations don't count. */
static void test_registration_limit(void **state)
{
    struct fx *f = *state;
    struct store_reg_result rr;
    for (unsigned i = 1; i <= 4; i++) {
        assert_int_equal(reg_r(f, "SN8", i, &rr), STORE_OK);
        assert_int_equal(rr.evicted, 0);
        assert_int_equal(rr.attested, 0);
        f->p.now_ms += 1000;
    }
    /* token 1 is the least recently active: evicted */
    assert_int_equal(reg_r(f, "SN8", 5, &rr), STORE_OK);
    assert_int_equal(rr.evicted, 1);
    assert_int_equal(poll_s(f, "SN8", NULL, 1, NULL), STORE_BAD_TOKEN);
    assert_int_equal(reg(f, "SN8-b", 6), STORE_OK); /* per serial */
    /* tokens 2..5 hold live codes: nothing to evict */
    f->p.now_ms += 1000;
    assert_int_equal(set_code(f, "SN8", 2, "EEEEEE"), STORE_OK);
    assert_int_equal(set_code(f, "SN8", 3, "FFFFFF"), STORE_OK);
    assert_int_equal(set_code(f, "SN8", 4, "GGGGGG"), STORE_OK);
    assert_int_equal(set_code(f, "SN8", 5, "HHHHHH"), STORE_OK);
    assert_int_equal(reg_r(f, "SN8", 7, &rr), STORE_TOO_MANY);
    assert_int_equal(rr.evicted, 0);
    /* once token 3's code expired it is the one to go, although 2 is older */
    assert_int_equal(set_code(f, "SN8", 2, "JJJJJJ"), STORE_SLOW_DOWN);
    f->p.now_ms += 1000;
    assert_int_equal(set_code(f, "SN8", 2, "JJJJJJ"), STORE_OK);
    f->p.now_ms += TTL_MS - 1000;
    assert_int_equal(set_code(f, "SN8", 4, "KKKKKK"), STORE_OK);
    assert_int_equal(set_code(f, "SN8", 5, "MMMMMM"), STORE_OK);
    assert_int_equal(reg_r(f, "SN8", 7, &rr), STORE_OK);
    assert_int_equal(rr.evicted, 1);
    assert_int_equal(poll_s(f, "SN8", NULL, 3, NULL), STORE_BAD_TOKEN);
    assert_int_equal(poll_s(f, "SN8", NULL, 2, NULL), STORE_PENDING);

    /* Lapsed registrations neither count nor survive the sweep. */
    f->p.now_ms += REG_IDLE_MS;
    assert_int_equal(poll_s(f, "SN8", NULL, 2, NULL), STORE_BAD_TOKEN);
    for (unsigned i = 15; i <= 18; i++) {
        assert_int_equal(reg_r(f, "SN8", i, &rr), STORE_OK);
        assert_int_equal(rr.evicted, 0);
    }
    assert_int_equal(ops->sweep(f->s, &f->p, 0), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM registrations WHERE serial = 'SN8'"),
                     4);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM registrations"), 4);
}

static void test_code_taken(void **state)
{
    struct fx *f = *state;
    assert_int_equal(reg(f, "SN9", 1), STORE_OK);
    assert_int_equal(reg(f, "SN10", 2), STORE_OK);
    assert_int_equal(set_code(f, "SN9", 1, "FGHJKM"), STORE_OK);
    assert_int_equal(set_code(f, "SN10", 2, "fghjkm"), STORE_CODE_TAKEN);
    f->p.now_ms += 1000;
    assert_int_equal(set_code(f, "SN9", 1, "FGHJKM"), STORE_OK); /* own code: refresh */
    assert_int_equal(set_code(f, "SN10", 2, "NPQRST"), STORE_OK);
    /* Wrong serial or unknown token. */
    assert_int_equal(set_code(f, "SN10", 1, "UVWXYZ"), STORE_BAD_TOKEN);
    assert_int_equal(set_code(f, "SN9", 42, "UVWXYZ"), STORE_BAD_TOKEN);
    /* Once expired the value is free. */
    f->p.now_ms += TTL_MS;
    assert_int_equal(set_code(f, "SN10", 2, "FGHJKM"), STORE_OK);
    assert_int_equal(claim(f, NULL, "FGHJKM", "dev_00000000000000000000000010"), STORE_OK);
    assert_string_equal(f->seal.last_serial, "SN10");
    /* Malformed codes are invalid input, not outcomes. */
    int out;
    struct hash h = H(1);
    assert_int_equal(ops->reg_set_code(f->s, &f->p, "SN9", h.h, "ABCDE0", &out), PHY_EINVAL);
    assert_int_equal(ops->reg_set_code(f->s, &f->p, "SN9", h.h, "ABCDEFG", &out), PHY_EINVAL);
}

/* sealed_replace of one body: 1 replaced, 0 not (the body is no longer old). */
static int replace1(struct fx *f, const char *serial, const char *device_id,
                    const unsigned char *old, size_t old_len, const unsigned char *next,
                    size_t next_len, int *replaced)
{
    struct store_sealed v;
    size_t n = 0;
    memset(&v, 0, sizeof v);
    snprintf(v.serial, sizeof v.serial, "%s", serial);
    snprintf(v.device_id, sizeof v.device_id, "%s", device_id);
    v.sealed = (unsigned char *)old;
    v.sealed_len = old_len;
    v.next = (unsigned char *)next;
    v.next_len = next_len;
    int rc = ops->sealed_replace(f->s, &v, 1, &n);
    *replaced = (int)n;
    return rc;
}

/* The re-sealing primitives: live bodies listed page by page in serial order, and a
 * compare-and-set replace that loses to a purge or to another replace. */
static void test_sealed_list_and_replace(void **state)
{
    struct fx *f = *state;
    char id[PHY_DEVICE_ID_LEN + 1], serial[16];
    unsigned char want[64], next[3] = {1, 2, 3};
    struct store_sealed *v = NULL;
    size_t n = 0, wn;
    int replaced = -1;
    for (unsigned i = 1; i <= 3; i++) {
        snprintf(serial, sizeof serial, "SN-%u", i);
        dev_id(i, id);
        assert_int_equal(reg(f, serial, i), STORE_OK);
        assert_int_equal(claim(f, serial, NULL, id), STORE_OK);
    }
    assert_int_equal(ops->sealed_list(f->s, "", 2, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].serial, "SN-1");
    assert_string_equal(v[1].serial, "SN-2");
    dev_id(1, id);
    assert_string_equal(v[0].device_id, id);
    wn = f->seal.body("SN-1", want, sizeof want);
    assert_int_equal(v[0].sealed_len, wn);
    assert_memory_equal(v[0].sealed, want, wn);
    store_sealed_free(v, n);
    assert_int_equal(ops->sealed_list(f->s, "SN-2", 2, &v, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].serial, "SN-3");
    store_sealed_free(v, n);
    /* replace: only while the body is still the old one */
    assert_int_equal(replace1(f, "SN-1", id, want, wn, next, sizeof next, &replaced),
                     0);
    assert_int_equal(replaced, 1);
    assert_int_equal(replace1(f, "SN-1", id, want, wn, next, sizeof next, &replaced),
                     0);
    assert_int_equal(replaced, 0);
    dev_id(2, id);
    assert_int_equal(replace1(f, "SN-1", id, next, sizeof next, want, wn, &replaced),
                     0);
    assert_int_equal(replaced, 0); /* another device's issuance */
    dev_id(1, id);
    assert_int_equal(ops->sealed_list(f->s, "", 10, &v, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(v[0].sealed_len, sizeof next);
    assert_memory_equal(v[0].sealed, next, sizeof next);
    store_sealed_free(v, n);
    /* a purged body is not listed and cannot come back */
    assert_int_equal(ops->device_delete(f->s, 1, id, &replaced), 0);
    assert_int_equal(replace1(f, "SN-1", id, next, sizeof next, want, wn, &replaced),
                     0);
    assert_int_equal(replaced, 0);
    assert_int_equal(ops->sealed_list(f->s, "", 10, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].serial, "SN-2");
    store_sealed_free(v, n);
    /* limits */
    assert_int_equal(ops->sealed_list(f->s, "", 0, &v, &n), PHY_EINVAL);
    assert_int_equal(ops->sealed_list(f->s, "bad serial", 5, &v, &n), PHY_EINVAL);
    assert_int_equal(replace1(f, "SN-2", id, next, 0, want, wn, &replaced),
                     PHY_EINVAL);
}

/* An attested serial: its registrations must prove possession before they can poll
 * or ask for codes, and a claim by serial binds only to a proven one. An unattested
 * serial cannot be claimed by serial unless the tenant allows it. */
static void test_attested_serials(void **state)
{
    struct fx *f = *state;
    static const unsigned char key[] = {0x30, 0x2a, 0x30, 0x05, 1, 2, 3};
    struct store_serial_key sk = {"SN-A", key, sizeof key};
    struct store_reg_result rr;
    struct hash t1 = H(1), t2 = H(2);
    char challenge[PHY_TOKEN_LEN + 1], id[PHY_DEVICE_ID_LEN + 1];
    unsigned char *k = NULL;
    size_t klen = 0;
    int out = -1, rc, policy = -1;
    struct store_device dev;

    assert_int_equal(ops->serials_import(f->s, &sk, 1, f->p.now_ms), 0);
    assert_int_equal(reg_r(f, "SN-A", 1, &rr), STORE_OK);
    assert_int_equal(rr.attested, 1);
    assert_int_equal(poll_s(f, "SN-A", NULL, 1, NULL), STORE_PROOF_REQUIRED);
    assert_int_equal(set_code(f, "SN-A", 1, "AAAAAA"), STORE_PROOF_REQUIRED);
    assert_int_equal(ops->reg_challenge(f->s, &f->p, "SN-A", t1.h, challenge, &k, &klen, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_string_equal(challenge, TEST_CHALLENGE);
    assert_int_equal(klen, sizeof key);
    assert_memory_equal(k, key, sizeof key);
    free(k);
    k = NULL;
    /* an unproven registration is nothing a claim by serial can bind to */
    dev_id(1, id);
    assert_int_equal(claim_full(f, 1, "SN-A", NULL, id, NULL, NULL, &rc, &dev),
                     STORE_UNKNOWN_SERIAL);
    /* the proof must name the registration's challenge */
    assert_int_equal(ops->reg_prove(f->s, &f->p, "SN-A", t1.h,
                                    "xhallenge-challenge-challenge-challenge-abc", &out),
                     0);
    assert_int_equal(out, STORE_BAD_TOKEN);
    assert_int_equal(ops->reg_prove(f->s, &f->p, "SN-A", t2.h, TEST_CHALLENGE, &out), 0);
    assert_int_equal(out, STORE_BAD_TOKEN);
    assert_int_equal(ops->reg_prove(f->s, &f->p, "SN-A", t1.h, TEST_CHALLENGE, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(ops->reg_prove(f->s, &f->p, "SN-A", t1.h, TEST_CHALLENGE, &out), 0);
    assert_int_equal(out, STORE_BAD_TOKEN); /* once */
    assert_int_equal(ops->reg_challenge(f->s, &f->p, "SN-A", t1.h, challenge, &k, &klen, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_string_equal(challenge, "");
    assert_null(k);
    assert_int_equal(poll_s(f, "SN-A", NULL, 1, NULL), STORE_PENDING);
    /* a squatter registers too: the serial is not contested, the claim goes to the
     * proven registration, the squatter gets nothing */
    f->p.now_ms += 1000;
    assert_int_equal(reg(f, "SN-A", 2), STORE_OK);
    assert_int_equal(claim_full(f, 1, "SN-A", NULL, id, NULL, NULL, &rc, &dev), STORE_OK);
    assert_int_equal(rc, 0);
    free(dev.tags_json);
    assert_int_equal(poll_s(f, "SN-A", NULL, 2, NULL), STORE_PROVISIONED);
    expect_deliver(f, "SN-A", NULL, 1, "SN-A", id);
    assert_int_equal(ops->reg_challenge(f->s, &f->p, "SN-A", H(9).h, challenge, &k, &klen, &out),
                     0);
    assert_int_equal(out, STORE_BAD_TOKEN);

    /* unattested serial: code required, unless the tenant allows any serial */
    struct store_claim c = {
        .tenant_id = 1, .user_id = 1, .serial = "SN-U", .device_id = ID(2).s,
        .secret_hash = H(0xabc).h, .seal = test_seal, .seal_ctx = &f->seal,
    };
    assert_int_equal(reg_r(f, "SN-U", 3, &rr), STORE_OK);
    assert_int_equal(rr.attested, 0);
    assert_int_equal(poll_s(f, "SN-U", NULL, 3, NULL), STORE_PENDING);
    assert_int_equal(ops->claim(f->s, &f->p, &c, &dev, &out), 0);
    assert_int_equal(out, STORE_CODE_REQUIRED);
    c.serial_claims = SERIAL_CLAIMS_ANY;
    assert_int_equal(ops->claim(f->s, &f->p, &c, &dev, &out), 0);
    assert_int_equal(out, STORE_OK);
    free(dev.tags_json);

    /* the policy is kept per tenant */
    assert_int_equal(ops->tenant_add(f->s, "acme", "eu", &out), 0);
    int64_t tid = 0;
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM tenants WHERE name = 'acme'"), 1);
    tid = raw_int(f->path, "SELECT id FROM tenants WHERE name = 'acme'");
    assert_int_equal(ops->tenant_serial_claims(f->s, tid, &policy, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(policy, SERIAL_CLAIMS_ATTESTED);
    assert_int_equal(ops->tenant_serial_claims_set(f->s, "acme", SERIAL_CLAIMS_ANY, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(ops->tenant_serial_claims(f->s, tid, &policy, &out), 0);
    assert_int_equal(policy, SERIAL_CLAIMS_ANY);
    assert_int_equal(ops->tenant_serial_claims_set(f->s, "nobody", SERIAL_CLAIMS_ANY, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    assert_int_equal(ops->tenant_serial_claims(f->s, tid + 100, &policy, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    assert_int_equal(ops->tenant_serial_claims_set(f->s, "acme", 7, &out), PHY_EINVAL);
    /* import: all or none, keys replaced */
    struct store_serial_key bad[2] = {{"SN-B", key, sizeof key}, {"bad serial", key, sizeof key}};
    assert_int_equal(ops->serials_import(f->s, bad, 2, f->p.now_ms), PHY_EINVAL);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM attested_serials"), 1);
}

static void test_claim_twice(void **state)
{
    struct fx *f = *state;
    assert_int_equal(reg(f, "SN11", 1), STORE_OK);
    assert_int_equal(claim(f, "SN11", NULL, "dev_00000000000000000000000011"), STORE_OK);
    assert_int_equal(claim(f, "SN11", NULL, "dev_00000000000000000000000012"),
                     STORE_ALREADY_CLAIMED);
    assert_int_equal(claim(f, "SN-NOBODY", NULL, "dev_00000000000000000000000012"),
                     STORE_UNKNOWN_SERIAL);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM devices"), 1);
    assert_int_equal(f->seal.calls, 1);
    /* An issuance without a code (claimed by serial before any code). */
    assert_int_equal(raw_int(f->path, "SELECT code IS NULL FROM issuances"), 1);

    /* The claimer's retry finds the device it made; another user, another key, or
     * a window that ended finds nothing. */
    struct store_device d;
    int out = -1;
    assert_int_equal(ops->claim_replay(f->s, 1, 1, "serial:SN11", f->p.now_ms - 1000, &d, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_string_equal(d.device_id, "dev_00000000000000000000000011");
    assert_string_equal(d.serial, "SN11");
    store_device_clear(&d);
    assert_int_equal(ops->claim_replay(f->s, 1, 2, "serial:SN11", f->p.now_ms - 1000, &d, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    assert_int_equal(ops->claim_replay(f->s, 2, 1, "serial:SN11", f->p.now_ms - 1000, &d, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    assert_int_equal(ops->claim_replay(f->s, 1, 1, "serial:SN12", f->p.now_ms - 1000, &d, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    assert_int_equal(ops->claim_replay(f->s, 1, 1, "serial:SN11", f->p.now_ms + 1, &d, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    /* By code: the key is the normalized code. */
    assert_int_equal(reg(f, "SN13", 2), STORE_OK);
    assert_int_equal(set_code(f, "SN13", 2, "HHHHHH"), STORE_OK);
    assert_int_equal(claim(f, NULL, "hhhhhh", "dev_00000000000000000000000013"), STORE_OK);
    assert_int_equal(ops->claim_replay(f->s, 1, 1, "code:HHHHHH", f->p.now_ms - 1000, &d, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_string_equal(d.serial, "SN13");
    store_device_clear(&d);
    /* A revoked device is not handed out again. */
    assert_int_equal(ops->device_revoke(f->s, 1, "dev_00000000000000000000000013", f->p.now_ms, &out), 0);
    assert_int_equal(ops->claim_replay(f->s, 1, 1, "code:HHHHHH", f->p.now_ms - 1000, &d, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
}

static void test_tokens_and_users(void **state)
{
    struct fx *f = *state;
    struct hash h1 = H(0x71), h2 = H(0x72), h3 = H(0x73);
    struct store_token *v = NULL;
    size_t n = 0;
    int64_t tid = 0, uid = 0, owner = 0, acme = 0;
    char tenant[STORE_NAME_MAX + 1], region[16], id[STORE_TOKEN_ID_LEN + 1];
    int out;

    assert_int_equal(ops->tenant_add(f->s, "tk", "eu", &out), 0);
    assert_int_equal(ops->tenant_lookup(f->s, "tk", &acme, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(ops->tenant_lookup(f->s, "nope", &tid, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    assert_int_equal(ops->user_add(f->s, "tk", "ann", "$argon2id$a", &out), 0);
    assert_int_equal(ops->user_add(f->s, "tk", "ben", "$argon2id$b", &out), 0);
    assert_int_equal(ops->token_add(f->s, "tk", "ann", h1.h, T0, T0 + 1000, &out), 0);
    assert_int_equal(ops->token_add(f->s, "tk", "ann", h2.h, T0 + 1, 0, &out), 0);
    assert_int_equal(ops->token_add(f->s, "tk", "ben", h3.h, T0 + 2, 0, &out), 0);
    /* Expiry: valid before, refused from expires_ms on; 0 never expires. */
    assert_int_equal(ops->token_auth(f->s, h1.h, T0 + 999, &tid, &uid, tenant, region, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(ops->token_auth(f->s, h1.h, T0 + 1000, &tid, &uid, tenant, region, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    assert_int_equal(ops->token_auth(f->s, h2.h, T0 + 1000000000, &tid, &uid, tenant, region, &out), 0);
    assert_int_equal(out, STORE_OK);
    /* Listing shows IDs (hash prefixes), never more. */
    assert_int_equal(ops->token_list(f->s, acme, &v, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(v[0].id, h1.h, STORE_TOKEN_ID_LEN);
    assert_string_equal(v[0].user, "ann");
    assert_int_equal(v[0].expires_ms, T0 + 1000);
    assert_string_equal(v[2].user, "ben");
    free(v);
    /* Revoke by ID, only within the tenant. */
    memcpy(id, h2.h, STORE_TOKEN_ID_LEN);
    id[STORE_TOKEN_ID_LEN] = '\0';
    assert_int_equal(ops->token_revoke(f->s, acme + 1000, id, &owner, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    assert_int_equal(ops->token_revoke(f->s, acme, id, &owner, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(ops->token_auth(f->s, h2.h, T0, &tid, &uid, tenant, region, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    assert_int_equal(ops->token_revoke(f->s, acme, id, &owner, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    assert_int_equal(ops->token_revoke(f->s, acme, "XYZ", &owner, &out), PHY_EINVAL);
    /* A new password ends the user's sessions but the one kept. */
    struct hash s1 = H(0x81), s2 = H(0x82);
    struct store_session sess;
    static const char csrf[] = "cccccccccccccccccccccccccccccccccccccccccc0";
    char pw[512];
    int64_t ben = 0;
    assert_int_equal(ops->user_get(f->s, "tk", "ben", &tid, &ben, pw, region, &out), 0);
    assert_int_equal(ops->console_session_create(f->s, s1.h, acme, ben, csrf, T0), 0);
    assert_int_equal(ops->console_session_create(f->s, s2.h, acme, ben, csrf, T0), 0);
    assert_int_equal(ops->user_set_password(f->s, "tk", "ben", "$argon2id$new", s2.h, &tid, &uid,
                                            &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(uid, ben);
    assert_int_equal(ops->console_session_auth(f->s, s1.h, T0, 60000, 60000, 0, &sess, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    assert_int_equal(ops->console_session_auth(f->s, s2.h, T0, 60000, 60000, 0, &sess, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(ops->user_get(f->s, "tk", "ben", &tid, &uid, pw, region, &out), 0);
    assert_string_equal(pw, "$argon2id$new");
    /* Removing a user takes its tokens and sessions. */
    assert_int_equal(ops->user_remove(f->s, "tk", "ben", &tid, &uid, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(ops->token_auth(f->s, h3.h, T0, &tid, &uid, tenant, region, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    assert_int_equal(ops->user_get(f->s, "tk", "ben", &tid, &uid, pw, region, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    assert_int_equal(ops->user_remove(f->s, "tk", "ben", &tid, &uid, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
}

static void test_seal_failure_rolls_back(void **state)
{
    struct fx *f = *state;
    struct store_device dev;
    char id[PHY_DEVICE_ID_LEN + 1];
    int rc;
    dev_id(12, id);
    assert_int_equal(reg(f, "SN12", 1), STORE_OK);
    assert_int_equal(set_code(f, "SN12", 1, "GGGGGG"), STORE_OK);
    f->seal.fail = 1;
    claim_full(f, 1, NULL, "GGGGGG", id, "x", "{}", &rc, &dev);
    assert_int_equal(rc, PHY_ECRYPTO);
    assert_null(dev.tags_json);
    claim_full(f, 1, "SN12", NULL, id, "x", "{}", &rc, &dev);
    assert_int_equal(rc, PHY_ECRYPTO);
    assert_int_equal(f->seal.calls, 2);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM devices"), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances"), 0);
    assert_int_equal(raw_int(f->path, "SELECT code = 'GGGGGG' FROM registrations"), 1);
    assert_int_equal(poll_s(f, "SN12", NULL, 1, NULL), STORE_PENDING);

    f->seal.fail = 0;
    assert_int_equal(claim(f, NULL, "GGGGGG", id), STORE_OK);
    f->p.now_ms += 10000;
    expect_deliver(f, "SN12", NULL, 1, "SN12", id);
}

static int failing_check(void *ctx, const char *device_id, const unsigned char *sealed, size_t len)
{
    (void)ctx;
    (void)device_id;
    (void)sealed;
    (void)len;
    return -1;
}

/* A claimed device that comes back after its registration lapsed still gets its
 * credentials: the code request says PROVISIONED (not BAD_TOKEN) and the poll
 * delivers. */
static void test_lapsed_registration_still_delivers(void **state)
{
    struct fx *f = *state;
    char id[PHY_DEVICE_ID_LEN + 1];
    dev_id(31, id);
    assert_int_equal(reg(f, "SN31", 31), STORE_OK);
    assert_int_equal(claim(f, "SN31", NULL, id), STORE_OK);
    f->p.now_ms += REG_IDLE_MS + 1000;
    assert_int_equal(ops->sweep(f->s, &f->p, 0), 0); /* the registration row is gone */
    assert_int_equal(set_code(f, "SN31", 31, "HHHHHH"), STORE_PROVISIONED);
    expect_deliver(f, "SN31", NULL, 31, "SN31", id);
}

/* A body the caller cannot open is not recorded as delivered. */
static void test_unopenable_issuance_not_recorded(void **state)
{
    struct fx *f = *state;
    struct store_poll_result r;
    char id[PHY_DEVICE_ID_LEN + 1];
    int out = -1;
    struct hash h = H(32);
    dev_id(32, id);
    assert_int_equal(reg(f, "SN32", 32), STORE_OK);
    assert_int_equal(claim(f, "SN32", NULL, id), STORE_OK);
    f->p.now_ms += 10000;
    f->p.deliver_check = failing_check;
    assert_int_equal(ops->poll(f->s, &f->p, "SN32", NULL, h.h, &r, &out), PHY_ECRYPTO);
    assert_null(r.sealed);
    f->p.deliver_check = NULL;
    assert_int_equal(
        raw_int(f->path, "SELECT delivered_ms IS NULL FROM issuances WHERE serial = 'SN32'"), 1);
    f->p.now_ms += GRACE_MS * 2; /* no grace clock started: still deliverable */
    expect_deliver(f, "SN32", NULL, 32, "SN32", id);
}

/* The store holds hashes and sealed issuances: a file others can read is refused. */
static void test_refuses_world_readable_file(void **state)
{
    SQLITE_ONLY();
    struct fx *f = *state;
    struct store *other = NULL;
    char err[256] = "";
    assert_int_equal(chmod(f->path, 0644), 0);
    assert_int_equal(ops->open(f->path, &other, err, sizeof err), PHY_EINVAL);
    assert_null(other);
    assert_non_null(strstr(err, "chmod 600"));
    assert_int_equal(chmod(f->path, 0600), 0);
    assert_int_equal(ops->open(f->path, &other, err, sizeof err), 0);
    ops->close(other);
    /* The WAL is bounded: it shrinks back to 64 MiB at each checkpoint. */
    char v[32];
    assert_int_equal(store_debug_query(f->s, "PRAGMA journal_size_limit", v, sizeof v), 0);
    assert_string_equal(v, "67108864");
}

static void test_durable_across_restart(void **state)
{
    struct fx *f = *state;
    struct stat st;
    char id[PHY_DEVICE_ID_LEN + 1];
    dev_id(13, id);
    assert_int_equal(reg(f, "SN13", 1), STORE_OK);
    assert_int_equal(claim(f, "SN13", NULL, id), STORE_OK);
    ops->close(f->s);
    f->s = NULL;

    if (!store_is_pg()) {
        assert_int_equal(stat(f->path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        assert_int_equal(raw_int(f->path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
    }
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM issuances WHERE sealed IS NOT NULL"),
                     1);

    fx_open(f);
    f->p.now_ms += 10000;
    expect_deliver(f, "SN13", NULL, 1, "SN13", id);
    ops->close(f->s);
    fx_open(f);
    f->p.now_ms += 1000;
    expect_deliver(f, "SN13", NULL, 1, "SN13", id); /* delivery time survived too */
    f->p.now_ms += GRACE_MS;
    assert_int_equal(poll_s(f, "SN13", NULL, 1, NULL), STORE_PROVISIONED);
}

/* Records one failed claim at now (an attempt that is never forgiven). */
static void fail_at(struct fx *f, int64_t tenant, int64_t user, int64_t now)
{
    int allowed = 0;
    int64_t id = 0;
    assert_int_equal(
        ops->claim_attempt_begin(f->s, tenant, user, now, 0, 1000, 1000, &allowed, &id), 0);
    assert_int_equal(allowed, 1);
}

static int attempt(struct fx *f, int64_t tenant, int64_t user, int64_t since, int ulim, int tlim)
{
    int allowed = -1;
    int64_t id = 0;
    assert_int_equal(
        ops->claim_attempt_begin(f->s, tenant, user, 9999, since, ulim, tlim, &allowed, &id), 0);
    if (allowed)
        assert_int_equal(ops->claim_attempt_forgive(f->s, id), 0);
    return allowed;
}

/* Asserts exactly u failures for the user and t for the tenant since `since`, through
 * the limits: allowed under (u+1, t+1), refused at (u, t+1) and at (u+1, t). */
static void expect_counts(struct fx *f, int64_t tenant, int64_t user, int64_t since, int u, int t)
{
    assert_int_equal(attempt(f, tenant, user, since, u + 1, t + 1), 1);
    assert_int_equal(attempt(f, tenant, user, since, u, t + 1), 0);
    assert_int_equal(attempt(f, tenant, user, since, u + 1, t), 0);
}

static void test_claim_failures(void **state)
{
    struct fx *f = *state;
    fail_at(f, 1, 10, 1000);
    fail_at(f, 1, 10, 2000);
    fail_at(f, 1, 10, 3000);
    fail_at(f, 1, 11, 2500);
    fail_at(f, 2, 10, 2000);

    expect_counts(f, 1, 10, 0, 3, 4);
    expect_counts(f, 1, 10, 2000, 2, 3);
    expect_counts(f, 1, 11, 2600, 0, 1);
    expect_counts(f, 3, 10, 0, 0, 0);
    /* Forgiven attempts leave nothing behind. */
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM claim_failures"), 5);

    /* The sweep keeps the last keep_failures_ms. */
    f->p.now_ms = 5000;
    assert_int_equal(ops->sweep(f->s, &f->p, 2500), 0);
    expect_counts(f, 1, 10, 0, 1, 2);
    expect_counts(f, 2, 10, 0, 0, 0);
}

static void test_admin_and_auth(void **state)
{
    struct fx *f = *state;
    struct hash h1 = H(101), h2 = H(102), h3 = H(103);
    char tenant[STORE_NAME_MAX + 1], region[16];
    int64_t tid = 0, uid = 0;
    int out;

    assert_int_equal(ops->tenant_add(f->s, "acme", "au", &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(ops->tenant_add(f->s, "acme", "eu", &out), 0);
    assert_int_equal(out, STORE_EXISTS);
    assert_int_equal(ops->tenant_add(f->s, "globex", "uae", &out), 0);
    assert_int_equal(out, STORE_OK);

    assert_int_equal(ops->user_add(f->s, "acme", "alice", "$argon2id$x", &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(ops->user_add(f->s, "acme", "alice", "$argon2id$y", &out), 0);
    assert_int_equal(out, STORE_EXISTS);
    assert_int_equal(ops->user_add(f->s, "nobody", "alice", "$argon2id$x", &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    assert_int_equal(ops->user_add(f->s, "globex", "alice", "$argon2id$z", &out), 0);
    assert_int_equal(out, STORE_OK);

    assert_int_equal(ops->token_add(f->s, "acme", "alice", h1.h, T0, 0, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(ops->token_add(f->s, "globex", "alice", h1.h, T0, 0, &out), 0);
    assert_int_equal(out, STORE_EXISTS);
    assert_int_equal(ops->token_add(f->s, "acme", "bob", h2.h, T0, 0, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    assert_int_equal(ops->token_add(f->s, "nobody", "alice", h2.h, T0, 0, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    assert_int_equal(ops->token_add(f->s, "globex", "alice", h2.h, T0, 0, &out), 0);
    assert_int_equal(out, STORE_OK);

    assert_int_equal(ops->token_auth(f->s, h1.h, T0, &tid, &uid, tenant, region, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_string_equal(tenant, "acme");
    assert_string_equal(region, "au");
    int64_t acme = tid, alice_acme = uid;
    assert_int_equal(ops->token_auth(f->s, h2.h, T0, &tid, &uid, tenant, region, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_string_equal(tenant, "globex");
    assert_string_equal(region, "uae");
    assert_true(tid != acme);
    assert_true(uid != alice_acme);
    assert_int_equal(ops->token_auth(f->s, h3.h, T0, &tid, &uid, tenant, region, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);

    /* Bounds. */
    char long_name[STORE_NAME_MAX + 2];
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_int_equal(ops->tenant_add(f->s, long_name, "eu", &out), PHY_EINVAL);
    assert_int_equal(ops->tenant_add(f->s, NULL, "eu", &out), PHY_EINVAL);
    assert_int_equal(ops->tenant_add(f->s, "t", "a-region-too-long", &out), PHY_EINVAL);
    assert_int_equal(ops->user_add(f->s, "acme", "", "h", &out), PHY_EINVAL);
}

static void test_devices_list(void **state)
{
    struct fx *f = *state;
    static const unsigned order[] = {4, 2, 5, 1, 3};
    struct store_device *d = NULL, dev;
    char id[PHY_DEVICE_ID_LEN + 1], serial[16];
    size_t n = 0;
    int rc;

    for (size_t i = 0; i < 5; i++) {
        snprintf(serial, sizeof serial, "L%u", order[i]);
        dev_id(order[i], id);
        assert_int_equal(reg(f, serial, 100 + order[i]), STORE_OK);
        assert_int_equal(claim_full(f, 7, serial, NULL, id, order[i] == 3 ? NULL : serial,
                                    order[i] == 2 ? "{\"k\":\"v\"}" : NULL, &rc, &dev),
                         STORE_OK);
        assert_int_equal(rc, 0);
        free(dev.tags_json);
    }
    assert_int_equal(reg(f, "L9", 109), STORE_OK);
    dev_id(9, id);
    assert_int_equal(claim_full(f, 8, "L9", NULL, id, NULL, NULL, &rc, &dev), STORE_OK);
    free(dev.tags_json);

    assert_int_equal(ops->devices_list(f->s, 7, NULL, NULL, 2, &d, &n), 0);
    assert_int_equal(n, 2);
    dev_id(1, id);
    assert_string_equal(d[0].device_id, id);
    assert_string_equal(d[0].serial, "L1");
    assert_string_equal(d[0].name, "L1");
    assert_string_equal(d[0].state, "pending_delivery");
    assert_string_equal(d[0].tags_json, "{}");
    assert_int_equal(d[0].created_ms, T0);
    dev_id(2, id);
    assert_string_equal(d[1].device_id, id);
    assert_string_equal(d[1].tags_json, "{\"k\":\"v\"}");
    store_devices_free(d, n);

    assert_int_equal(ops->devices_list(f->s, 7, NULL, id, 2, &d, &n), 0);
    assert_int_equal(n, 2);
    dev_id(3, id);
    assert_string_equal(d[0].device_id, id);
    assert_string_equal(d[0].name, "");
    dev_id(4, id);
    assert_string_equal(d[1].device_id, id);
    store_devices_free(d, n);

    assert_int_equal(ops->devices_list(f->s, 7, NULL, id, 2, &d, &n), 0);
    assert_int_equal(n, 1);
    dev_id(5, id);
    assert_string_equal(d[0].device_id, id);
    store_devices_free(d, n);

    assert_int_equal(ops->devices_list(f->s, 7, NULL, id, 2, &d, &n), 0);
    assert_int_equal(n, 0);
    store_devices_free(d, n);

    /* Tenant scoping. */
    assert_int_equal(ops->devices_list(f->s, 8, NULL, NULL, 100, &d, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(d[0].serial, "L9");
    store_devices_free(d, n);
    assert_int_equal(ops->devices_list(f->s, 7, NULL, NULL, 0, &d, &n), PHY_EINVAL);
    store_devices_free(NULL, 0);
}

static void *race_claim(void *arg)
{
    struct claim_racer *r = arg;
    char id[PHY_DEVICE_ID_LEN + 1];
    struct store_device dev;
    dev_id(1000 + r->i, id);
    r->outcome = claim_full(r->f, 1, "SN-RACE", NULL, id, NULL, NULL, &r->rc, &dev);
    free(dev.tags_json);
    return NULL;
}

static void test_concurrent_claims(void **state)
{
    struct fx *f = *state;
    assert_int_equal(reg(f, "SN-RACE", 1), STORE_OK);
    race_claims(f, race_claim);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM devices"), 1);
}

static void test_invalid_inputs(void **state)
{
    struct fx *f = *state;
    struct store_poll_result r;
    struct hash h = H(1);
    int out;
    assert_int_equal(ops->poll(f->s, &f->p, "SN", "ABCDEF", h.h, &r, &out), PHY_EINVAL);
    assert_int_equal(ops->poll(f->s, &f->p, NULL, NULL, h.h, &r, &out), PHY_EINVAL);
    assert_int_equal(ops->poll(f->s, &f->p, "S N", NULL, h.h, &r, &out), PHY_EINVAL);
    assert_int_equal(ops->poll(f->s, &f->p, NULL, "ABC0EF", h.h, &r, &out), PHY_EINVAL);
    struct store_reg_result rr;
    assert_int_equal(ops->reg_create(f->s, &f->p, "", h.h, TEST_CHALLENGE, NULL, &rr, &out), PHY_EINVAL);
    assert_int_equal(ops->reg_create(f->s, &f->p, "SN", h.h, "short", NULL, &rr, &out), PHY_EINVAL);
    char long_serial[PHY_SERIAL_MAX + 2];
    memset(long_serial, 'a', sizeof long_serial - 1);
    long_serial[sizeof long_serial - 1] = '\0';
    assert_int_equal(ops->reg_create(f->s, &f->p, long_serial, h.h, TEST_CHALLENGE, NULL, &rr, &out),
                     PHY_EINVAL);
    long_serial[PHY_SERIAL_MAX] = '\0';
    assert_int_equal(ops->reg_create(f->s, &f->p, long_serial, h.h, TEST_CHALLENGE, NULL, &rr, &out), 0);
    assert_int_equal(out, STORE_OK);

    char err[256] = "";
    struct store *s2 = NULL;
    assert_int_not_equal(ops->open("/nonexistent-dir/x/store.db", &s2, err, sizeof err), 0);
    assert_null(s2);
    assert_true(err[0] != '\0');
    ops->close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_provisioning_flow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_polls_are_soft, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_polls_from_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_reach_polls_from_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_by_code, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_code, setup, teardown),
        cmocka_unit_test_setup_teardown(test_code_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_contested_serial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registration_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_code_taken, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tokens_and_users, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sealed_list_and_replace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attested_serials, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seal_failure_rolls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lapsed_registration_still_delivers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unopenable_issuance_not_recorded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuses_world_readable_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durable_across_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admin_and_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_devices_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_claims, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_inputs, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
