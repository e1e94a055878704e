/* Unit tests for hub/lifecycle.c against a real store: one sweep pass removes what
 * lapsed, clamps times from the future and refreshes the live-registration count;
 * hub_prepare resets presence; the failures' keep time follows both windows. */
#include "teststore.h"

#include "lifecycle.h"

static int setup(void **state)
{
    struct fx *f = fx_new(state, "phy-test-life-", NULL);
    fx_open(f);
    return 0;
}

static struct hub *hub_on(struct fx *f)
{
    static struct hub h;
    memset(&h, 0, sizeof h);
    h.store_ops = ops;
    h.store = f->s;
    h.cfg.registration_idle_s = REG_IDLE_MS / 1000;
    h.cfg.code_ttl_s = TTL_MS / 1000;
    h.cfg.issuance_grace_s = GRACE_MS / 1000;
    h.cfg.poll_interval_s = 5;
    h.cfg.max_poll_interval_s = 20;
    h.cfg.claim_window_s = 900;
    h.cfg.login_window_s = 60;
    h.cfg.session_idle_s = 1800;
    h.cfg.session_max_s = 43200;
    h.cfg.audit_keep_days = 365;
    h.cfg.provisioning = 1;
    h.cfg.node_id = "node-a";
    h.cfg.node_heartbeat_s = 5;
    h.cfg.node_timeout_s = 30;
    return &h;
}

static void test_sweep_pass(void **state)
{
    struct fx *f = *state;
    struct hub *h = hub_on(f);
    int64_t live = -1;

    assert_int_equal(reg(f, "LIFE-1", 1), STORE_OK);
    assert_int_equal(reg(f, "LIFE-2", 2), STORE_OK);
    /* LIFE-1 was last active at T0, LIFE-2 five minutes later. */
    f->p.now_ms = T0 + 5 * 60000;
    assert_int_equal(poll_s(f, "LIFE-2", NULL, 2, NULL), STORE_PENDING);
    /* Past LIFE-1's idle limit only: one pass removes it and counts one. */
    hub_sweep(h, T0 + REG_IDLE_MS + 1000);
    struct store_prov_params p = f->p;
    p.now_ms = T0 + REG_IDLE_MS + 1000;
    assert_int_equal(ops->reg_live_count(f->s, &p, &live), 0);
    assert_int_equal(live, 1);
    assert_int_equal(atomic_load(&h->regs_estimate), 1);
    assert_int_equal(poll_s(f, "LIFE-1", NULL, 1, NULL), STORE_BAD_TOKEN);
}

static void test_prepare_and_keep_time(void **state)
{
    struct fx *f = *state;
    struct hub *h = hub_on(f);
    char err[128];
    assert_int_equal(hub_prepare(h, err, sizeof err), 0);
    /* Claims keep 15 minutes, logins 8 windows of 1 minute: the longer wins. */
    assert_int_equal(hub_failures_keep_ms(h), 900000);
    h->cfg.login_window_s = 300;
    assert_int_equal(hub_failures_keep_ms(h), 2400000);
}

/* The sealer of this file's claim: the serial's bytes. */
static unsigned char *seal_plain(void *ctx, const char *serial, size_t *out_len)
{
    (void)ctx;
    *out_len = strlen(serial);
    unsigned char *b = malloc(*out_len);
    assert_non_null(b);
    memcpy(b, serial, *out_len);
    return b;
}

static int is_online(struct fx *f, const char *device_id)
{
    struct store_device d;
    int out = -1;
    assert_int_equal(ops->device_get(f->s, 1, device_id, &d, NULL, &out), 0);
    assert_int_equal(out, STORE_OK);
    int on = d.online;
    store_device_clear(&d);
    return on;
}

/* A node that falls silent: another node's heartbeat ends its device's session once
 * the node timeout passed, not before; the sweep runs on one node at a time. */
static void test_heartbeat_ends_a_dead_nodes_sessions(void **state)
{
    struct fx *f = *state;
    struct hub *h = hub_on(f);
    char err[128];
    struct id id = ID(7);
    struct hash sh = H(77);
    struct store_claim c = {.serial_claims = SERIAL_CLAIMS_ANY, .tenant_id = 1, .user_id = 1,
                            .serial = "LIFE-7", .device_id = id.s, .seal = seal_plain};
    struct store_device d;
    int out = -1, held = -1;
    c.secret_hash = sh.h;
    assert_int_equal(reg(f, "LIFE-7", 7), STORE_OK);
    assert_int_equal(ops->claim(f->s, &f->p, &c, &d, &out), 0);
    assert_int_equal(out, STORE_OK);
    store_device_clear(&d);

    assert_int_equal(hub_prepare(h, err, sizeof err), 0); /* node-a, holds the sweep */
    int64_t t = hub_now_ms();
    assert_int_equal(ops->session_open(f->s, id.s, t, NULL), 0);
    assert_true(is_online(f, id.s));

    h->cfg.node_id = "node-b";
    assert_int_equal(store_set_node(f->s, "node-b"), 0);
    hub_heartbeat(h, t + 1000);
    assert_true(is_online(f, id.s)); /* node-a beat a second ago */
    assert_int_equal(ops->lease_take(f->s, "sweep", t + 1000, t + 2000, &held), 0);
    assert_int_equal(held, 0); /* node-a's */
    hub_heartbeat(h, t + 31000);
    assert_false(is_online(f, id.s)); /* node-a silent for 31 s */
    hub_heartbeat(h, t + 32000); /* nothing more to end: no failure */
    assert_false(is_online(f, id.s));
    /* a bad node name is refused before anything is written */
    h->cfg.node_id = "no spaces";
    assert_int_equal(hub_prepare(h, err, sizeof err), -1);
    assert_non_null(strstr(err, "no spaces"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sweep_pass, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_and_keep_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat_ends_a_dead_nodes_sessions, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
