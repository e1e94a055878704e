/* The store's rules with no database (hub/store/rules.c): checks and decisions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "phy/err.h"
#include "phy/twin.h"
#include "rules.h"

static struct store_prov_params params(int64_t now)
{
    return (struct store_prov_params){
        .now_ms = now,
        .registration_idle_ms = 600000,
        .code_ttl_ms = 300000,
        .grace_ms = 60000,
        .interval_s = 5,
        .max_interval_s = 20,
        .max_regs_per_serial = 4,
    };
}

static void test_checks(void **state)
{
    (void)state;
    char name[STORE_NAME_MAX + 2];
    char value[STORE_TAG_VALUE_MAX + 2];
    assert_true(store_serial_ok("SN-1.a_b"));
    assert_false(store_serial_ok(""));
    assert_false(store_serial_ok("SN 1"));
    assert_false(store_serial_ok("SN/1"));
    assert_true(store_tag_key_ok("site.zone-1_a"));
    assert_false(store_tag_key_ok("a:b"));
    /* One limit for the console and the store: 64-byte names, 128-byte tag values. */
    memset(name, 'n', sizeof name);
    name[STORE_NAME_MAX] = '\0';
    assert_true(store_name_ok(name));
    name[STORE_NAME_MAX] = 'n';
    name[STORE_NAME_MAX + 1] = '\0';
    assert_false(store_name_ok(name));
    assert_true(store_name_ok(NULL));
    assert_true(store_name_ok(""));
    assert_false(store_name_ok("tab\there"));
    assert_false(store_name_ok("del\x7f"));
    memset(value, 'v', sizeof value);
    value[STORE_TAG_VALUE_MAX] = '\0';
    assert_true(store_tag_value_ok(value));
    value[STORE_TAG_VALUE_MAX] = 'v';
    value[STORE_TAG_VALUE_MAX + 1] = '\0';
    assert_false(store_tag_value_ok(value));
    assert_true(store_tag_value_ok(""));
    assert_false(store_tag_value_ok("a\nb"));
    assert_true(store_region_ok("uae-2"));
    assert_false(store_region_ok("EU"));
    assert_false(store_region_ok("abcdefghijklmnop")); /* 16 */
    assert_true(store_session_hash_ok(
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"));
    assert_false(store_session_hash_ok(
        "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"));
    assert_true(store_audit_action_ok("device.claim"));
    assert_false(store_audit_action_ok("Device.claim"));
    assert_true(store_outbox_kind_ok(OUTBOX_REARM));
    assert_false(store_outbox_kind_ok(0));
}

static void test_code_normalize(void **state)
{
    (void)state;
    char out[PHY_CODE_LEN + 1];
    assert_int_equal(store_code_normalize("abcdef", out), 0);
    assert_string_equal(out, "ABCDEF");
    assert_int_equal(store_code_normalize("ABCDE", out), PHY_EINVAL);
    assert_int_equal(store_code_normalize("ABCDEFG", out), PHY_EINVAL);
    assert_int_equal(store_code_normalize(NULL, out), PHY_EINVAL);
}

static void test_json_object_parse(void **state)
{
    (void)state;
    json_t *o = NULL;
    assert_int_equal(store_json_object_parse("{\"a\":1}", 100, &o), 0);
    assert_non_null(o);
    json_decref(o);
    assert_int_equal(store_json_object_parse("[1]", 100, NULL), PHY_EINVAL);
    assert_int_equal(store_json_object_parse("{\"a\":1,\"a\":2}", 100, NULL), PHY_EINVAL);
    assert_int_equal(store_json_object_parse("{\"a\":1}", 6, NULL), PHY_ETOOBIG);
    assert_int_equal(store_json_object_parse(NULL, 6, NULL), PHY_EINVAL);
}

static void test_issuance_poll(void **state)
{
    (void)state;
    struct store_prov_params p = params(1000000);
    struct rule_issuance i = {.has_body = 1, .state = STATE_PENDING};
    assert_int_equal(rule_issuance_poll(&i, &p), STORE_DELIVER);
    /* Redelivered within grace, not after. */
    i.delivered = 1;
    i.delivered_ms = p.now_ms - p.grace_ms + 1;
    i.state = STATE_PROVISIONED;
    assert_int_equal(rule_issuance_poll(&i, &p), STORE_DELIVER);
    i.delivered_ms = p.now_ms - p.grace_ms;
    assert_int_equal(rule_issuance_poll(&i, &p), STORE_PROVISIONED);
    /* Past the first session, revoked, or no row: never again. */
    i.delivered_ms = p.now_ms;
    i.state = STATE_ACTIVE;
    assert_int_equal(rule_issuance_poll(&i, &p), STORE_PROVISIONED);
    i.state = NULL;
    assert_int_equal(rule_issuance_poll(&i, &p), STORE_PROVISIONED);
    /* Another region's issuance has no row here: its body decides. */
    i.remote = 1;
    assert_int_equal(rule_issuance_poll(&i, &p), STORE_DELIVER);
    i.has_body = 0;
    assert_int_equal(rule_issuance_poll(&i, &p), STORE_PROVISIONED);
}

static void test_poll_rules(void **state)
{
    (void)state;
    struct store_prov_params p = params(1000000);
    struct rule_registration g = {"ABCDEF", p.now_ms + 1, 5, 0, 0};
    int64_t iv = 0;
    assert_int_equal(rule_poll(&g, NULL, &p, &iv), STORE_PENDING);
    assert_int_equal(iv, 5);
    assert_int_equal(rule_poll(&g, "ABCDEF", &p, &iv), STORE_PENDING);
    assert_int_equal(rule_poll(&g, "ABCDEG", &p, &iv), STORE_EXPIRED_CODE);
    g.code_expires_ms = p.now_ms; /* expired at now */
    assert_int_equal(rule_poll(&g, "ABCDEF", &p, &iv), STORE_EXPIRED_CODE);
    g.code = "";
    assert_int_equal(rule_poll(&g, "ABCDEF", &p, &iv), STORE_EXPIRED_CODE);
    /* 0.8 * interval: 3999 ms after a poll is too soon, 4000 is not. */
    g.has_polled = 1;
    g.last_poll_ms = p.now_ms - 3999;
    assert_int_equal(rule_poll(&g, NULL, &p, &iv), STORE_SLOW_DOWN);
    assert_int_equal(iv, 10);
    g.last_poll_ms = p.now_ms - 4000;
    assert_int_equal(rule_poll(&g, NULL, &p, &iv), STORE_PENDING);
    assert_int_equal(iv, 5);
    /* Growth stops at the cap; a cap below the base means no growth. */
    g.interval_s = 20;
    g.last_poll_ms = p.now_ms;
    assert_int_equal(rule_poll(&g, NULL, &p, &iv), STORE_SLOW_DOWN);
    assert_int_equal(iv, 20);
    p.max_interval_s = 1;
    g.interval_s = 5;
    assert_int_equal(rule_poll(&g, NULL, &p, &iv), STORE_SLOW_DOWN);
    assert_int_equal(iv, 5);
}

static void test_code_gap_and_claims(void **state)
{
    (void)state;
    struct store_prov_params p = params(1000000);
    assert_false(rule_code_too_soon(0, &p));
    /* A code set 999 ms ago expires at now - 999 + ttl. */
    assert_true(rule_code_too_soon(p.now_ms - 999 + p.code_ttl_ms, &p));
    assert_false(rule_code_too_soon(p.now_ms - 1000 + p.code_ttl_ms, &p));
    for (int attested = 0; attested < 2; attested++) {
        /* an attested serial (its proven registrations counted), or any with "any" */
        int policy = attested ? SERIAL_CLAIMS_ATTESTED : SERIAL_CLAIMS_ANY;
        assert_int_equal(rule_claim_by_serial(attested, policy, 0), STORE_UNKNOWN_SERIAL);
        assert_int_equal(rule_claim_by_serial(attested, policy, 1), STORE_OK);
        assert_int_equal(rule_claim_by_serial(attested, policy, 2), STORE_SERIAL_IN_USE);
        assert_int_equal(rule_claim_by_serial(1, !policy, 1), STORE_OK);
    }
    /* an unattested serial, tenant on the default policy: whatever registered */
    for (int live = 0; live < 3; live++)
        assert_int_equal(rule_claim_by_serial(0, SERIAL_CLAIMS_ATTESTED, live),
                         STORE_CODE_REQUIRED);
    assert_int_equal(rule_live_after(&p), p.now_ms - p.registration_idle_ms);
}

static void test_throttle_and_sessions(void **state)
{
    (void)state;
    assert_true(rule_throttle_allows(4, 49, 5, 50));
    assert_false(rule_throttle_allows(5, 0, 5, 50));
    assert_false(rule_throttle_allows(0, 50, 5, 50));
    /* The account's window doubles per limit's worth of failures, up to 8 windows. */
    assert_int_equal(rule_login_window(1000, 0, 5), 1000);
    assert_int_equal(rule_login_window(1000, 9, 5), 1000);
    assert_int_equal(rule_login_window(1000, 10, 5), 2000);
    assert_int_equal(rule_login_window(1000, 15, 5), 4000);
    assert_int_equal(rule_login_window(1000, 20, 5), 8000);
    assert_int_equal(rule_login_window(1000, 1000, 5), 8000);
    assert_int_equal(rule_login_window(1000, 7, 0), 1000);
    assert_false(rule_session_expired(1000, 0, 500, 500, 1000));
    assert_true(rule_session_expired(1001, 0, 500, 500, 2000)); /* idle */
    assert_true(rule_session_expired(1001, 0, 1000, 500, 1000)); /* absolute */
    /* Touched every 5 s, or at half a shorter idle limit. */
    assert_false(rule_session_touch(4999, 0, 3600000));
    assert_true(rule_session_touch(5000, 0, 3600000));
    assert_false(rule_session_touch(999, 0, 2000));
    assert_true(rule_session_touch(1000, 0, 2000));
}

static void test_section_merge(void **state)
{
    (void)state;
    json_error_t e;
    json_t *patch = json_loads("{\"a\":{\"b\":2},\"gone\":null}", 0, &e);
    char *out = NULL;
    int changed = -1, big = -1;
    assert_int_equal(rule_section_merge("{\"a\":{\"c\":1},\"gone\":1}", patch, &out, &changed, &big),
                     0);
    assert_int_equal(changed, 1);
    assert_int_equal(big, 0);
    assert_string_equal(out, "{\"a\":{\"b\":2,\"c\":1}}");
    /* Merging the same patch again changes nothing. */
    char *again = NULL;
    assert_int_equal(rule_section_merge(out, patch, &again, &changed, &big), 0);
    assert_int_equal(changed, 0);
    assert_null(again);
    free(out);
    assert_int_equal(rule_section_merge("[]", patch, &out, &changed, &big), PHY_EIO);
    json_decref(patch);
    /* Over the size limit: too big, nothing out. */
    json_t *huge = json_object();
    char *blob = malloc(PHY_TWIN_MAX_BYTES + 1);
    memset(blob, 'x', PHY_TWIN_MAX_BYTES);
    blob[PHY_TWIN_MAX_BYTES] = '\0';
    json_object_set_new(huge, "blob", json_string(blob));
    assert_int_equal(rule_section_merge("{}", huge, &out, &changed, &big), 0);
    assert_int_equal(big, 1);
    assert_int_equal(changed, 0);
    assert_null(out);
    free(blob);
    json_decref(huge);
}

static void test_device_lifecycle(void **state)
{
    (void)state;
    struct rule_remote_change c;
    c = rule_device_change_remote(DEVICE_RESET, STATE_ACTIVE, "SN1");
    assert_int_equal(c.drop_purge, 1);
    assert_int_equal(c.put, OUTBOX_REARM);
    c = rule_device_change_remote(DEVICE_RESET, STATE_CLAIMING, ""); /* by code, unconfirmed */
    assert_int_equal(c.drop_purge, 1);
    assert_int_equal(c.put, 0);
    const char *before[] = {STATE_CLAIMING, STATE_PENDING, STATE_PROVISIONED};
    for (size_t i = 0; i < 3; i++) {
        c = rule_device_change_remote(DEVICE_REVOKE, before[i], "SN1");
        assert_int_equal(c.put, OUTBOX_PURGE);
        assert_int_equal(c.drop_purge, 0);
        c = rule_device_change_remote(DEVICE_DELETE, before[i], "SN1");
        assert_int_equal(c.put, OUTBOX_PURGE);
    }
    c = rule_device_change_remote(DEVICE_REVOKE, STATE_ACTIVE, "SN1");
    assert_int_equal(c.put, 0);
    assert_int_equal(rule_reset_outcome(0, "SN1", 1), STORE_OK);
    assert_int_equal(rule_reset_outcome(0, "SN1", 0), STORE_PROVISIONED);
    assert_int_equal(rule_reset_outcome(1, "SN1", 0), STORE_OK);
    assert_int_equal(rule_reset_outcome(1, "", 0), STORE_PROVISIONED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checks),
        cmocka_unit_test(test_code_normalize),
        cmocka_unit_test(test_json_object_parse),
        cmocka_unit_test(test_issuance_poll),
        cmocka_unit_test(test_poll_rules),
        cmocka_unit_test(test_code_gap_and_claims),
        cmocka_unit_test(test_throttle_and_sessions),
        cmocka_unit_test(test_section_merge),
        cmocka_unit_test(test_device_lifecycle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
