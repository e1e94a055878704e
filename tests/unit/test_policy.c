/* Unit tests for proxy/policy.c: routes, allow-list, per-identifier tunnel slots. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "phy/err.h"
#include "policy.h"

static void test_routes_exact_wins_over_pattern(void **state)
{
    (void)state;
    struct proxy_policy p;
    char err[128], buf[64];
    memset(&p, 0, sizeof(p));
    assert_int_equal(
        proxy_policy_add_route(&p, "portal-*.phystack.com=127.0.0.1:9000", err, sizeof(err)), 0);
    assert_int_equal(
        proxy_policy_add_route(&p, "Portal-EU.phystack.com=127.0.0.2:9001", err, sizeof(err)), 0);
    const struct proxy_route *r = proxy_policy_route(&p, "portal-eu.phystack.com");
    assert_non_null(r);
    assert_string_equal(proxy_addr_format(&r->addr, buf, sizeof(buf)), "127.0.0.2:9001");
    r = proxy_policy_route(&p, "portal-au.phystack.com");
    assert_non_null(r);
    assert_string_equal(proxy_addr_format(&r->addr, buf, sizeof(buf)), "127.0.0.1:9000");
    assert_null(proxy_policy_route(&p, "a.portal-au.phystack.com"));
    assert_null(proxy_policy_route(&p, "example.com"));
    /* A later route for the same host replaces the earlier one. */
    assert_int_equal(
        proxy_policy_add_route(&p, "portal-eu.phystack.com=[::1]:9002", err, sizeof(err)), 0);
    r = proxy_policy_route(&p, "portal-eu.phystack.com");
    assert_string_equal(proxy_addr_format(&r->addr, buf, sizeof(buf)), "[::1]:9002");
    assert_int_equal(r->proxy_protocol, 1); /* on by default */
    assert_int_equal(proxy_policy_add_route(&p, "portal-eu.phystack.com=[::1]:9002,proxy-protocol=off",
                                            err, sizeof(err)), 0);
    assert_int_equal(proxy_policy_route(&p, "portal-eu.phystack.com")->proxy_protocol, 0);
    proxy_policy_free(&p);
}

static void test_routes_rejected(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "portal-eu.phystack.com",
        "portal-eu.phystack.com=127.0.0.1",
        "=127.0.0.1:1",
        "portal-eu.phystack.com=127.0.0.1:0",
        "portal-eu.phystack.com=1.2.3:443",
        "portal-eu.phystack.com=127.0.0.1:65536",
        "portal-eu.phystack.com=::1:443",
        "portal-eu.phystack.com=127.0.0.1:443,proxy-protocol=maybe",
        "portal-eu.phystack.com=127.0.0.1:443,",
    };
    struct proxy_policy p;
    char err[128];
    memset(&p, 0, sizeof(p));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(proxy_policy_add_route(&p, bad[i], err, sizeof(err)), PHY_EINVAL);
        assert_true(strlen(err) > 0);
    }
    assert_int_equal(p.nroutes, 0);
    proxy_policy_free(&p);
}

static void test_allow_list(void **state)
{
    (void)state;
    struct proxy_policy p;
    char err[128];
    memset(&p, 0, sizeof(p));
    assert_int_equal(proxy_policy_add_allow(&p, "portal-*.phystack.com:443", err, sizeof(err)), 0);
    assert_int_equal(proxy_policy_add_allow(&p, "updates.example.org:*", err, sizeof(err)), 0);
    assert_true(proxy_policy_allowed(&p, "portal-eu.phystack.com", 443));
    assert_true(proxy_policy_allowed(&p, "PORTAL-UAE.phystack.com", 443));
    assert_false(proxy_policy_allowed(&p, "portal-eu.phystack.com", 80));
    assert_false(proxy_policy_allowed(&p, "evil.portal-eu.phystack.com", 443));
    assert_false(proxy_policy_allowed(&p, "portal-eu.phystack.com.evil.net", 443));
    assert_true(proxy_policy_allowed(&p, "updates.example.org", 8443));
    assert_false(proxy_policy_allowed(&p, "example.org", 8443));
    assert_int_equal(proxy_policy_add_allow(&p, "nohostport", err, sizeof(err)), PHY_EINVAL);
    assert_int_equal(proxy_policy_add_allow(&p, "a.com:99999", err, sizeof(err)), PHY_EINVAL);
    proxy_policy_free(&p);
}

static void test_ident_slots(void **state)
{
    (void)state;
    struct proxy_policy p;
    int err = 0;
    memset(&p, 0, sizeof(p));
    struct proxy_ident *a1 = proxy_ident_acquire(&p, "sn_A", 2, &err);
    struct proxy_ident *a2 = proxy_ident_acquire(&p, "sn_A", 2, &err);
    assert_non_null(a1);
    assert_ptr_equal(a1, a2);
    assert_null(proxy_ident_acquire(&p, "sn_A", 2, &err));
    assert_int_equal(err, PHY_ETOOBIG);
    struct proxy_ident *b = proxy_ident_acquire(&p, "sn_B", 2, &err);
    assert_non_null(b);
    assert_int_equal(p.nidents, 2);
    proxy_ident_release(&p, a1);
    a2 = proxy_ident_acquire(&p, "sn_A", 2, &err);
    assert_non_null(a2);
    proxy_ident_release(&p, a2);
    proxy_ident_release(&p, a2);
    assert_int_equal(p.nidents, 1); /* sn_A gone once its count reached 0 */
    proxy_ident_release(&p, b);
    assert_int_equal(p.nidents, 0);
    proxy_policy_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_exact_wins_over_pattern),
        cmocka_unit_test(test_routes_rejected),
        cmocka_unit_test(test_allow_list),
        cmocka_unit_test(test_ident_slots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
