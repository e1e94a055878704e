/* Unit tests for proxy/policy.c: routes and their upstreams (parsing, selection,
 * backoff, probes due), allow-list, per-identifier tunnel slots. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
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
    assert_int_equal(r->nup, 1);
    assert_string_equal(proxy_addr_format(&r->up[0].addr, buf, sizeof(buf)), "127.0.0.2:9001");
    r = proxy_policy_route(&p, "portal-au.phystack.com");
    assert_non_null(r);
    assert_string_equal(proxy_addr_format(&r->up[0].addr, buf, sizeof(buf)), "127.0.0.1:9000");
    assert_null(proxy_policy_route(&p, "a.portal-au.phystack.com"));
    assert_null(proxy_policy_route(&p, "example.com"));
    /* A later route for the same host replaces the earlier one. */
    assert_int_equal(
        proxy_policy_add_route(&p, "portal-eu.phystack.com=[::1]:9002", err, sizeof(err)), 0);
    r = proxy_policy_route(&p, "portal-eu.phystack.com");
    assert_string_equal(proxy_addr_format(&r->up[0].addr, buf, sizeof(buf)), "[::1]:9002");
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
        /* several upstreams */
        "portal-eu.phystack.com=127.0.0.1:443,,127.0.0.2:443",
        "portal-eu.phystack.com=127.0.0.1:443,127.0.0.2",
        "portal-eu.phystack.com=127.0.0.1:443,localhost:443",
        "portal-eu.phystack.com=127.0.0.1:443,127.0.0.1:443",
        "portal-eu.phystack.com=127.0.0.1:443,[::1]:443,[0::1]:443",
        "portal-eu.phystack.com=127.0.0.1:443,proxy-protocol=off,proxy-protocol=off",
        "portal-eu.phystack.com=127.0.0.1:443,proxy-protocol=on,127.0.0.2:443,proxy-protocol=off",
        "portal-eu.phystack.com=proxy-protocol=off",
        "portal-eu.phystack.com=127.0.0.1:443,weight=2",
        "bad host=127.0.0.1:443",
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

/* The error message of a route spec that must be refused. */
static const char *route_error(const char *spec, char *err, size_t cap)
{
    struct proxy_policy p;
    memset(&p, 0, sizeof(p));
    err[0] = '\0';
    assert_int_equal(proxy_policy_add_route(&p, spec, err, cap), PHY_EINVAL);
    assert_int_equal(p.nroutes, 0);
    proxy_policy_free(&p);
    return err;
}

/* "HOST=127.0.0.1:9000,127.0.0.1:9001,…" with n upstreams. */
static void spec_with(char *out, size_t cap, unsigned n, const char *tail)
{
    size_t off = (size_t)snprintf(out, cap, "portal-eu.phystack.com=");
    for (unsigned i = 0; i < n; i++)
        off += (size_t)snprintf(out + off, cap - off, "%s127.0.0.1:%u", i ? "," : "", 9000 + i);
    snprintf(out + off, cap - off, "%s", tail);
}

static void test_route_upstreams_parsed(void **state)
{
    (void)state;
    struct proxy_policy p;
    char err[256], buf[64], spec[1024];
    memset(&p, 0, sizeof(p));
    assert_int_equal(
        proxy_policy_add_route(
            &p, "portal-eu.phystack.com=127.0.0.1:9000,[::1]:9001,10.0.0.1:9000,proxy-protocol=off",
            err, sizeof(err)),
        0);
    struct proxy_route *r = proxy_policy_route(&p, "portal-eu.phystack.com");
    assert_non_null(r);
    assert_int_equal(r->nup, 3);
    assert_int_equal(r->proxy_protocol, 0);
    assert_string_equal(proxy_addr_format(&r->up[0].addr, buf, sizeof(buf)), "127.0.0.1:9000");
    assert_string_equal(proxy_addr_format(&r->up[1].addr, buf, sizeof(buf)), "[::1]:9001");
    assert_string_equal(proxy_addr_format(&r->up[2].addr, buf, sizeof(buf)), "10.0.0.1:9000");
    /* The option may stand anywhere in the list, once. */
    assert_int_equal(proxy_policy_add_route(
                         &p,
                         "portal-au.phystack.com=proxy-protocol=on,127.0.0.1:9000,127.0.0.2:9000",
                         err, sizeof(err)),
                     0);
    r = proxy_policy_route(&p, "portal-au.phystack.com");
    assert_int_equal(r->nup, 2);
    assert_int_equal(r->proxy_protocol, 1);
    /* Exactly the limit is fine. */
    spec_with(spec, sizeof(spec), PROXY_ROUTE_MAX_UPSTREAMS, ",proxy-protocol=on");
    assert_int_equal(proxy_policy_add_route(&p, spec, err, sizeof(err)), 0);
    assert_int_equal(proxy_policy_route(&p, "portal-eu.phystack.com")->nup,
                     PROXY_ROUTE_MAX_UPSTREAMS);
    proxy_policy_free(&p);
}

static void test_route_upstream_errors_say_why(void **state)
{
    (void)state;
    char err[256], spec[1024];
    spec_with(spec, sizeof(spec), PROXY_ROUTE_MAX_UPSTREAMS + 1, "");
    assert_non_null(strstr(route_error(spec, err, sizeof(err)), "at most 16 upstreams per route"));
    assert_non_null(strstr(
        route_error("portal-eu.phystack.com=127.0.0.1:443,127.0.0.1:99999", err, sizeof(err)),
        "upstream '127.0.0.1:99999' is not ADDR:PORT"));
    assert_non_null(strstr(route_error("portal-eu.phystack.com=127.0.0.1:443,proxy-protocol=off,"
                                       "proxy-protocol=on",
                                       err, sizeof(err)),
                           "proxy-protocol given twice"));
    assert_non_null(
        strstr(route_error("portal-eu.phystack.com=[::1]:443,[::1]:443", err, sizeof(err)),
               "upstream '[::1]:443' given twice"));
    assert_non_null(strstr(
        route_error("portal-eu.phystack.com=proxy-protocol=on", err, sizeof(err)), "no upstream"));
    assert_non_null(
        strstr(route_error("a b=127.0.0.1:1", err, sizeof(err)), "'a b' is not a host name"));
    assert_non_null(strstr(route_error("x.com=127.0.0.1:1,proxy-protocol=yes", err, sizeof(err)),
                           "expected HOST=ADDR:PORT[,ADDR:PORT…][,proxy-protocol=on|off]"));
}

/* A route with n upstreams on 127.0.0.1:9000…; owned by p. */
static struct proxy_route *route_of(struct proxy_policy *p, unsigned n)
{
    char spec[1024], err[256];
    spec_with(spec, sizeof(spec), n, "");
    assert_int_equal(proxy_policy_add_route(p, spec, err, sizeof(err)), 0);
    return proxy_policy_route(p, "portal-eu.phystack.com");
}

static void test_pick_fewest_live_then_round_robin(void **state)
{
    (void)state;
    struct proxy_policy p;
    memset(&p, 0, sizeof(p));
    struct proxy_route *r = route_of(&p, 3);
    /* Ties go round robin: 0, 1, 2, 0, 1, 2. */
    for (int i = 0; i < 6; i++)
        assert_int_equal(proxy_route_pick(r, 0), i % 3);
    assert_int_equal(r->up[0].live, 2);
    assert_int_equal(r->up[2].live, 2);
    /* Fewest live tunnels win over the cursor. */
    proxy_upstream_release(r, 1);
    proxy_upstream_release(r, 1);
    assert_int_equal(proxy_route_pick(r, 0), 1);
    assert_int_equal(proxy_route_pick(r, 0), 1);
    /* All at 2 again: the tie goes on from after the last pick. */
    assert_int_equal(proxy_route_pick(r, 0), 2);
    /* Upstreams this tunnel has tried are passed over; when all are, -1. */
    assert_int_equal(proxy_route_pick(r, 1u << 0), 1);
    assert_int_equal(proxy_route_pick(r, 7u), -1);
    assert_int_equal(r->up[0].live + r->up[1].live + r->up[2].live, 8);
    proxy_policy_free(&p);
}

static void test_failed_upstream_backs_off_and_is_probed(void **state)
{
    (void)state;
    struct proxy_policy p;
    struct proxy_route *due = NULL;
    size_t index = 99;
    uint64_t next = 0;
    memset(&p, 0, sizeof(p));
    p.backoff_ms = 100;
    p.backoff_max_ms = 350;
    struct proxy_route *r = route_of(&p, 2);

    assert_int_equal(proxy_policy_probe_due(&p, 0, &due, &index, &next), 0);
    assert_true(next == UINT64_MAX);
    /* The first failure takes it down; later ones double the backoff, capped. */
    assert_int_equal(proxy_upstream_failed(&p, r, 0, 1000), 1);
    assert_int_equal(r->up[0].retry_ms, 1100);
    assert_int_equal(r->up[0].down_since_ms, 1000);
    assert_int_equal(proxy_upstream_failed(&p, r, 0, 1100), 0);
    assert_int_equal(r->up[0].retry_ms, 1300);
    assert_int_equal(proxy_upstream_failed(&p, r, 0, 1300), 0);
    assert_int_equal(r->up[0].retry_ms, 1650); /* 400, capped at 350 */
    /* No overflow however long it stays down. */
    for (int i = 0; i < 100; i++)
        proxy_upstream_failed(&p, r, 0, 2000);
    assert_int_equal(r->up[0].retry_ms, 2350);
    assert_int_equal(r->up[0].down_since_ms, 1000);

    /* While down it is skipped, whatever its live count... */
    for (int i = 0; i < 3; i++)
        assert_int_equal(proxy_route_pick(r, 0), 1);
    /* ...unless every upstream left to try is down: tried anyway. */
    assert_int_equal(proxy_route_pick(r, 1u << 1), 0);
    assert_int_equal(proxy_upstream_failed(&p, r, 1, 2000), 1);
    assert_int_equal(proxy_route_pick(r, 0), 0); /* both down: fewest live */
    assert_int_equal(proxy_policy_routes_up(&p), 0); /* /readyz: not ready */

    /* Probes fall due when the backoff ends, once each until they answer. */
    assert_int_equal(proxy_policy_probe_due(&p, 2099, &due, &index, &next), 0);
    assert_int_equal(next, 2100);
    assert_int_equal(proxy_policy_probe_due(&p, 2100, &due, &index, &next), 1);
    assert_ptr_equal(due, r);
    assert_int_equal(index, 1);
    r->up[1].probing = 1;
    assert_int_equal(proxy_policy_probe_due(&p, 2100, &due, &index, &next), 0);
    assert_int_equal(next, 2350);
    assert_int_equal(proxy_upstream_ok(r, 1), 1);
    r->up[1].probing = 0;
    assert_int_equal(proxy_upstream_ok(r, 1), 0); /* already up */
    assert_int_equal(r->up[1].failures, 0);
    assert_int_equal(proxy_route_pick(r, 0), 1); /* up again: preferred to the down one */
    assert_int_equal(proxy_policy_routes_up(&p), 1); /* one of two is enough */
    proxy_policy_free(&p);
}

static void test_single_upstream_keeps_no_state(void **state)
{
    (void)state;
    struct proxy_policy p;
    struct proxy_route *due = NULL;
    size_t index = 0;
    uint64_t next = 0;
    memset(&p, 0, sizeof(p));
    struct proxy_route *r = route_of(&p, 1);
    assert_int_equal(proxy_upstream_failed(&p, r, 0, 5), 0);
    assert_int_equal(r->up[0].failures, 0);
    assert_int_equal(proxy_policy_routes_up(&p), 1); /* nothing to tell it by */
    assert_int_equal(proxy_policy_probe_due(&p, 1u << 30, &due, &index, &next), 0);
    assert_int_equal(proxy_route_pick(r, 0), 0);
    assert_int_equal(proxy_route_pick(r, 1u), -1);
    /* Defaults: 1 s, doubling to 30 s. */
    r = route_of(&p, 2);
    assert_int_equal(proxy_upstream_failed(&p, r, 1, 0), 1);
    assert_int_equal(r->up[1].retry_ms, PROXY_BACKOFF_DEFAULT_MS);
    for (int i = 0; i < 10; i++)
        proxy_upstream_failed(&p, r, 1, 0);
    assert_int_equal(r->up[1].retry_ms, PROXY_BACKOFF_MAX_DEFAULT_MS);
    proxy_policy_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_exact_wins_over_pattern),
        cmocka_unit_test(test_routes_rejected),
        cmocka_unit_test(test_route_upstreams_parsed),
        cmocka_unit_test(test_route_upstream_errors_say_why),
        cmocka_unit_test(test_pick_fewest_live_then_round_robin),
        cmocka_unit_test(test_failed_upstream_backs_off_and_is_probed),
        cmocka_unit_test(test_single_upstream_keeps_no_state),
        cmocka_unit_test(test_allow_list),
        cmocka_unit_test(test_ident_slots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
