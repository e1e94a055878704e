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

#include "testutil.h"
#include "phy/err.h"
#include "phy/netaddr.h"
#include "phy/proxyproto.h"
#include "phy/proxytoken.h"
#include "phy/ratelimit.h"
#include "phy/text.h"

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
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "192.0.2.7",
        "198.18.0.1",
        "::1",
        "::",
        "fe80::1",
        "fd00:ec2::254",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::1",
        "2001:db8::1",
        "::127.0.0.1",
    };
    static const char *const allowed[] = {
        "1.1.1.1",         "8.8.8.8",        "172.32.0.1",        "100.128.0.1",
        "2606:4700::1111", "::ffff:8.8.8.8", "2002:0808:0808::1", "169.253.1.1",
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

    assert_int_equal(
        phy_cidr_list_parse("127.0.0.1,::1,192.168.0.0/16", &list, &n, err, sizeof err), 0);
    assert_int_equal(n, 3);
    memset(&in4, 0, sizeof in4);
    in4.sin_family = AF_INET;
    inet_pton(AF_INET, "192.168.7.9", &in4.sin_addr);
    assert_int_equal(phy_addr16((struct sockaddr *)&in4, a), 0);
    assert_true(phy_cidr_list_match(list, n, a));
    addr_of("127.0.0.2", a);
    assert_false(phy_cidr_list_match(list, n, a));
    assert_int_equal(phy_cidr_list_parse("127.0.0.1,,::1", &list, &n, err, sizeof err), PHY_EINVAL);
    assert_int_equal(phy_cidr_list_parse("127.0.0.1,nope", &list, &n, err, sizeof err), PHY_EINVAL);
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

    /* One bucket alone (the hub's per-session message and frame rates). */
    struct phy_bucket bk;
    uint64_t wait = 0;
    phy_bucket_init(&bk, 2, 5000);
    assert_true(phy_bucket_take(&bk, 4, 2, 5000, NULL));
    assert_true(phy_bucket_take(&bk, 4, 2, 5000, NULL));
    assert_false(phy_bucket_take(&bk, 4, 2, 5000, &wait));
    assert_int_equal(wait, 251); /* 1 token at 4/s */
    assert_false(phy_bucket_take(&bk, 4, 2, 5200, NULL)); /* 0.8 */
    assert_true(phy_bucket_take(&bk, 4, 2, 5300, NULL));
    assert_true(phy_bucket_take(&bk, 4, 2, 60000, NULL)); /* capped at the burst: */
    assert_true(phy_bucket_take(&bk, 4, 2, 60000, NULL));
    assert_false(phy_bucket_take(&bk, 4, 2, 60000, NULL));
    assert_false(phy_bucket_take(&bk, 4, 2, 1000, NULL)); /* a clock back refills nothing */
}

static void test_proxy_token(void **state)
{
    char dir[64], spec[128], spec2[128], err[256];
    char tok[PHY_PROXY_TOKEN_MAX + 1], tok2[PHY_PROXY_TOKEN_MAX + 1];
    struct phy_proxy_key keys[2], k;
    const char *dev = "dev_abcdefghijklmnopqrstuvwxyz";

    (void)state;
    assert_non_null(test_tmp_template(dir, sizeof dir, "phy-edge-"));
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
    assert_false(
        phy_proxy_token_verify(keys, 2, "dev_abcdefghijklmnopqrstuvwxyy", tok, strlen(tok)));
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

static void test_pp2(void **state)
{
    struct sockaddr_in6 s6, d6;
    struct sockaddr_in s4, d4;
    unsigned char buf[PHY_PP2_MAX_LEN];
    struct phy_pp2 pp;
    int n;

    (void)state;
    memset(&s4, 0, sizeof s4);
    memset(&d4, 0, sizeof d4);
    s4.sin_family = d4.sin_family = AF_INET;
    inet_pton(AF_INET, "203.0.113.9", &s4.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &d4.sin_addr);
    s4.sin_port = htons(40000);
    d4.sin_port = htons(443);
    n = phy_pp2_build((struct sockaddr *)&s4, (struct sockaddr *)&d4, "dev_abc", 1, buf,
                      sizeof buf);
    assert_int_equal(n, 16 + 12 + 3 + 7 + 4);
    assert_int_equal(phy_pp2_parse(buf, (size_t)n, &pp), n);
    assert_int_equal(((struct sockaddr_in *)&pp.src)->sin_port, htons(40000));
    assert_memory_equal(&((struct sockaddr_in *)&pp.src)->sin_addr, &s4.sin_addr, 4);
    assert_string_equal(pp.ident, "dev_abc");
    assert_int_equal(pp.verified, 1);
    for (int i = 0; i < n; i++) /* every prefix asks for more */
        assert_int_equal(phy_pp2_parse(buf, (size_t)i, &pp), PHY_EAGAIN);
    assert_int_equal(phy_pp2_parse((const unsigned char *)"\x16\x03\x01", 3, &pp),
                     PHY_ENOTFOUND); /* a TLS ClientHello */
    assert_int_equal(phy_pp2_parse((const unsigned char *)"GET / HTTP/1.1", 14, &pp),
                     PHY_ENOTFOUND);
    buf[12] = 0x22; /* unknown command */
    assert_int_equal(phy_pp2_parse(buf, (size_t)n, &pp), PHY_EINVAL);
    buf[12] = 0x21;
    buf[13] = 0x31; /* AF_UNIX */
    assert_int_equal(phy_pp2_parse(buf, (size_t)n, &pp), PHY_EINVAL);
    buf[13] = 0x11;
    buf[16 + 12 + 3] = 'x'; /* ident not sn_/dev_ */
    assert_int_equal(phy_pp2_parse(buf, (size_t)n, &pp), PHY_EINVAL);
    buf[16 + 12 + 3] = 'd';
    buf[15] = (unsigned char)(buf[15] - 1); /* the last TLV truncated */
    assert_int_equal(phy_pp2_parse(buf, (size_t)n - 1, &pp), PHY_EINVAL);
    buf[14] = 0x02; /* over PHY_PP2_MAX_LEN */
    assert_int_equal(phy_pp2_parse(buf, (size_t)n, &pp), PHY_EINVAL);

    memset(&s6, 0, sizeof s6);
    memset(&d6, 0, sizeof d6);
    s6.sin6_family = d6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "2001:db8::5", &s6.sin6_addr);
    inet_pton(AF_INET6, "::1", &d6.sin6_addr);
    n = phy_pp2_build((struct sockaddr *)&s6, (struct sockaddr *)&d6, NULL, 0, buf, sizeof buf);
    assert_int_equal(n, 16 + 36);
    assert_int_equal(phy_pp2_parse(buf, (size_t)n, &pp), n);
    assert_string_equal(pp.ident, "");
    assert_int_equal(pp.src.ss_family, AF_INET6);
    assert_int_equal(
        phy_pp2_build((struct sockaddr *)&s6, (struct sockaddr *)&d4, NULL, 0, buf, sizeof buf),
        PHY_EINVAL);
    assert_int_equal(
        phy_pp2_build((struct sockaddr *)&s6, (struct sockaddr *)&d6, NULL, 0, buf, 20),
        PHY_ETOOBIG);
    buf[12] = 0x20; /* LOCAL */
    assert_int_equal(phy_pp2_parse(buf, (size_t)n, &pp), n);
    assert_int_equal(pp.local, 1);
}

static void test_text(void **state)
{
    (void)state;
    assert_int_equal(phy_hexval('0'), 0);
    assert_int_equal(phy_hexval('f'), 15);
    assert_int_equal(phy_hexval('F'), 15);
    assert_int_equal(phy_hexval('g'), -1);
    assert_int_equal(phy_hexval(-1), -1);
    assert_int_equal(phy_utf8_seq_len((const unsigned char *)"a", 1), 1);
    assert_int_equal(phy_utf8_seq_len((const unsigned char *)"\xc3\xa9", 2), 2);
    assert_int_equal(phy_utf8_seq_len((const unsigned char *)"\xe2\x82\xac", 3), 3);
    assert_int_equal(phy_utf8_seq_len((const unsigned char *)"\xf0\x9f\x98\x80", 4), 4);
    assert_int_equal(phy_utf8_seq_len((const unsigned char *)"\xc0\xaf", 2), 0);     /* overlong */
    assert_int_equal(phy_utf8_seq_len((const unsigned char *)"\xe0\x80\xaf", 3), 0); /* overlong */
    assert_int_equal(phy_utf8_seq_len((const unsigned char *)"\xed\xa0\x80", 3), 0); /* surrogate */
    assert_int_equal(phy_utf8_seq_len((const unsigned char *)"\xf4\x90\x80\x80", 4), 0);
    assert_int_equal(phy_utf8_seq_len((const unsigned char *)"\xe2\x82", 2), 0); /* cut */
    assert_int_equal(phy_utf8_seq_len((const unsigned char *)"\x80", 1), 0);
    assert_true(phy_utf8_valid("", 0));
    assert_true(phy_utf8_valid("caf\xc3\xa9", 5));
    assert_false(phy_utf8_valid("caf\xc3", 4));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_public_addresses),
        cmocka_unit_test(test_cidr),
        cmocka_unit_test(test_ratelimit),
        cmocka_unit_test(test_proxy_token),
        cmocka_unit_test(test_pp2),
        cmocka_unit_test(test_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
