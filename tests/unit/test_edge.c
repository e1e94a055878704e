/* Unit tests for the edge's I/O-free helpers: lib/netaddr.c (CIDRs, public
 * addresses), lib/ratelimit.c (token buckets) and lib/proxytoken.c (proxy tokens). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "phy/err.h"
#include "phy/netaddr.h"
#include "phy/proxytoken.h"
#include "phy/ratelimit.h"

static void addr_of(const char *s, uint8_t out[16])
{
    struct phy_cidr c;
    assert_int_equal(phy_cidr_parse(s, &c), 0);
    memcpy(out, c.addr, 16);
}

static int is_public(const char *s)
{
    uint8_t a[16];
    addr_of(s, a);
    return phy_addr_is_public(a);
}

static void test_public_addresses(void **state)
{
    static const char *const blocked[] = {
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254",
        "100.64.0.1", "0.0.0.0", "255.255.255.255", "224.0.0.1", "192.0.2.7", "198.18.0.1", "::1",
        "::", "fe80::1", "fd00:ec2::254", "fc00::1", "ff02::1", "::ffff:127.0.0.1",
        "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1", "2001:db8::1", "::127.0.0.1",
    };
    static const char *const allowed[] = {
        "1.1.1.1", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8",
        "2002:0808:0808::1", "169.253.1.1",
    };
    (void)state;
    for (size_t i = 0; i < sizeof blocked / sizeof blocked[0]; i++)
        if (is_public(blocked[i]))
            fail_msg("%s counted as public", blocked[i]);
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        if (!is_public(allowed[i]))
            fail_msg("%s counted as not public", allowed[i]);
}

static void test_cidr(void **state)
{
    struct phy_cidr c, *list = NULL;
    uint8_t a[16];
    size_t n = 0;
    char err[128];
    struct sockaddr_in in4;

    (void)state;
    assert_int_equal(phy_cidr_parse("10.0.0.0/8", &c), 0);
    assert_int_equal(c.bits, 104);
    addr_of("10.200.3.4", a);
    assert_true(phy_cidr_match(&c, a));
    addr_of("11.0.0.1", a);
    assert_false(phy_cidr_match(&c, a));
    assert_int_equal(phy_cidr_parse("10.0.0.1/8", &c), PHY_EINVAL); /* host bits */
    assert_int_equal(phy_cidr_parse("10.0.0.0/33", &c), PHY_EINVAL);
    assert_int_equal(phy_cidr_parse("10.0.0.0/", &c), PHY_EINVAL);
    assert_int_equal(phy_cidr_parse("10.0.0.0/-1", &c), PHY_EINVAL);
    assert_int_equal(phy_cidr_parse("localhost", &c), PHY_EINVAL);
    assert_int_equal(phy_cidr_parse("", &c), PHY_EINVAL);
    assert_int_equal(phy_cidr_parse("fd00::/8", &c), 0);
    addr_of("fdff::1", a);
    assert_true(phy_cidr_match(&c, a));
    assert_int_equal(phy_cidr_parse("0.0.0.0/0", &c), 0);
    addr_of("::1", a);
    assert_false(phy_cidr_match(&c, a)); /* an IPv4 network never holds IPv6 */

    assert_int_equal(phy_cidr_list_parse("127.0.0.1,::1,192.168.0.0/16", &list, &n, err,
                                         sizeof err), 0);
    assert_int_equal(n, 3);
    memset(&in4, 0, sizeof in4);
    in4.sin_family = AF_INET;
    inet_pton(AF_INET, "192.168.7.9", &in4.sin_addr);
    assert_int_equal(phy_addr16((struct sockaddr *)&in4, a), 0);
    assert_true(phy_cidr_list_match(list, n, a));
    addr_of("127.0.0.2", a);
    assert_false(phy_cidr_list_match(list, n, a));
    assert_int_equal(phy_cidr_list_parse("127.0.0.1,,::1", &list, &n, err, sizeof err),
                     PHY_EINVAL);
    assert_int_equal(phy_cidr_list_parse("127.0.0.1,nope", &list, &n, err, sizeof err),
                     PHY_EINVAL);
    assert_non_null(strstr(err, "nope"));
    free(list);
}

static void test_ratelimit(void **state)
{
    struct phy_ratelimit *rl = phy_ratelimit_new(2, 3, 0);
    uint8_t a[16], b[16], c[16];
    uint64_t retry = 0;

    (void)state;
    assert_non_null(rl);
    addr_of("192.0.2.1", a);
    addr_of("2001:db8:1:2::1", b);
    addr_of("2001:db8:1:2::99", c); /* same /64 as b */
    for (int i = 0; i < 3; i++)
        assert_true(phy_ratelimit_take(rl, a, 1000, NULL));
    assert_false(phy_ratelimit_take(rl, a, 1000, &retry));
    assert_in_range(retry, 1, 501);
    assert_false(phy_ratelimit_take(rl, a, 1400, NULL)); /* 0.8 tokens */
    assert_true(phy_ratelimit_take(rl, a, 1500, NULL));  /* refilled at 2/s */
    assert_true(phy_ratelimit_take(rl, a, 100000, NULL));
    for (int i = 0; i < 3; i++)
        assert_true(phy_ratelimit_take(rl, b, 1000, NULL));
    assert_false(phy_ratelimit_take(rl, c, 1000, NULL));
    assert_false(phy_ratelimit_take(rl, b, 900, NULL)); /* time never runs back */
    phy_ratelimit_free(rl);
    assert_null(phy_ratelimit_new(0, 3, 0));
    assert_null(phy_ratelimit_new(1, 0.5, 0));
}

static void test_proxy_token(void **state)
{
    char dir[] = "/tmp/phy-edge-XXXXXX", spec[128], spec2[128], err[256];
    char tok[PHY_PROXY_TOKEN_MAX + 1], tok2[PHY_PROXY_TOKEN_MAX + 1];
    struct phy_proxy_key keys[2], k;
    const char *dev = "dev_abcdefghijklmnopqrstuvwxyz";

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(spec, sizeof spec, "k1=%s/k1", dir);
    snprintf(spec2, sizeof spec2, "k2=%s/k2", dir);
    assert_int_equal(phy_proxy_key_load(spec, 0, &k, err, sizeof err), PHY_EIO); /* missing */
    assert_non_null(strstr(err, "does not exist"));
    assert_int_equal(phy_proxy_key_load(spec, 1, &keys[0], err, sizeof err), 0);
    assert_int_equal(phy_proxy_key_load(spec2, 1, &keys[1], err, sizeof err), 0);
    assert_int_equal(phy_proxy_key_load(spec, 0, &k, err, sizeof err), 0);
    assert_memory_equal(k.key, keys[0].key, PHY_PROXY_KEY_LEN);
    assert_int_equal(phy_proxy_key_load("K1=/x", 0, &k, err, sizeof err), PHY_EINVAL);
    assert_int_equal(phy_proxy_key_load("=/x", 0, &k, err, sizeof err), PHY_EINVAL);
    assert_int_equal(phy_proxy_key_load("k1=", 0, &k, err, sizeof err), PHY_EINVAL);
    assert_int_equal(phy_proxy_key_load("/x", 0, &k, err, sizeof err), PHY_EINVAL);

    assert_int_equal(phy_proxy_token_make(&keys[0], dev, tok), 0);
    assert_int_equal(strlen(tok), 3 + PHY_PROXY_MAC_B64);
    assert_memory_equal(tok, "k1.", 3);
    assert_true(phy_proxy_token_verify(keys, 2, dev, tok, strlen(tok)));
    assert_true(phy_proxy_token_verify(keys + 1, 1, dev, tok, strlen(tok)) == 0); /* k1 gone */
    assert_int_equal(phy_proxy_token_make(&keys[1], dev, tok2), 0);
    assert_true(phy_proxy_token_verify(keys, 2, dev, tok2, strlen(tok2)));
    assert_false(phy_proxy_token_verify(keys, 2, "dev_abcdefghijklmnopqrstuvwxyy", tok,
                                        strlen(tok)));
    tok[10] = tok[10] == 'A' ? 'B' : 'A';
    assert_false(phy_proxy_token_verify(keys, 2, dev, tok, strlen(tok)));
    assert_false(phy_proxy_token_verify(keys, 2, dev, tok, strlen(tok) - 1));
    assert_false(phy_proxy_token_verify(keys, 2, dev, "", 0));
    assert_false(phy_proxy_token_verify(keys, 2, dev, "k1.", 3));
    /* The key ID chooses the key: k2's MAC under the name k1 fails. */
    tok2[1] = '1';
    assert_false(phy_proxy_token_verify(keys, 2, dev, tok2, strlen(tok2)));
    snprintf(spec, sizeof spec, "rm -rf %s", dir);
    assert_int_equal(system(spec), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_public_addresses),
        cmocka_unit_test(test_cidr),
        cmocka_unit_test(test_ratelimit),
        cmocka_unit_test(test_proxy_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
