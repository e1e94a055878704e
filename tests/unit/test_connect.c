/* Unit tests for lib/connect.c: CONNECT validation, identifiers, host globs, specs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "phy/connect.h"
#include "phy/err.h"
#include "phy/http.h"

/* base64("sn_ABC123:") */
#define AUTH_SN "Proxy-Authorization: Basic c25fQUJDMTIzOg==\r\n"

static struct phy_http_request req;
static struct phy_connect_req out;

/* Parses raw (which must be a valid head) and runs the CONNECT check on it. */
static int check(const char *raw)
{
    int n = phy_http_parse_request(raw, strlen(raw), PHY_HTTP_DEFAULT_MAX_HEAD, &req);
    if (n != (int)strlen(raw))
        fail_msg("parse of test request returned %d", n);
    return phy_connect_check(&req, &out);
}

/* CONNECT to target with the given extra header lines. */
static int check_target(const char *target, const char *headers)
{
    char raw[1024];
    snprintf(raw, sizeof(raw), "CONNECT %s HTTP/1.1\r\n%s\r\n", target, headers);
    return check(raw);
}

/* CONNECT portal-eu.phystack.com:443 with the given Proxy-Authorization value. */
static int check_auth(const char *value)
{
    char hdr[512];
    snprintf(hdr, sizeof(hdr), "Proxy-Authorization: %s\r\n", value);
    return check_target("portal-eu.phystack.com:443", hdr);
}

static void test_good(void **state)
{
    (void)state;
    assert_int_equal(check("CONNECT Portal-EU.phystack.com:443 HTTP/1.1\r\n"
                           "Host: portal-eu.PHYSTACK.com:443\r\n" AUTH_SN
                           "User-Agent: curl/7.88.1\r\n\r\n"),
                     0);
    assert_string_equal(out.host, "portal-eu.phystack.com");
    assert_int_equal(out.port, 443);
    assert_string_equal(out.ident, "sn_ABC123");

    /* no Host header, dev_ identifier, lowercase scheme, IPv4 target */
    assert_int_equal(
        check_target("127.0.0.1:8443", "proxy-authorization: basic ZGV2XzdmM2E5Qzo=\r\n"), 0);
    assert_string_equal(out.host, "127.0.0.1");
    assert_int_equal(out.port, 8443);
    assert_string_equal(out.ident, "dev_7f3a9C");

    assert_int_equal(check_auth("BASIC   c25fYS5iX2MtRDk6"), 0);
    assert_string_equal(out.ident, "sn_a.b_c-D9");
    assert_int_equal(check_target("localhost:1", AUTH_SN), 0);
    assert_int_equal(out.port, 1);
    assert_int_equal(check_target("h:65535", AUTH_SN), 0);
    assert_int_equal(out.port, 65535);
    /* Content-Length: 0 is no body */
    assert_int_equal(check_target("a.b:443", "Content-Length: 0\r\n" AUTH_SN), 0);
}

static void test_wrong_method(void **state)
{
    (void)state;
    assert_int_equal(check("GET http://portal-eu.phystack.com/ HTTP/1.1\r\n" AUTH_SN "\r\n"), 405);
    assert_int_equal(check("connect portal-eu.phystack.com:443 HTTP/1.1\r\n" AUTH_SN "\r\n"), 405);
    assert_int_equal(check("POST portal-eu.phystack.com:443 HTTP/1.1\r\n\r\n"), 405);
    assert_string_equal(out.host, "");
}

static void test_missing_and_bad_auth(void **state)
{
    (void)state;
    assert_int_equal(check_target("portal-eu.phystack.com:443", ""), 407);
    assert_int_equal(check_auth(""), 407);
    assert_int_equal(check_auth("Basic"), 407);
    assert_int_equal(check_auth("Basic "), 407);
    assert_int_equal(check_auth("Bearer c25fQUJDMTIzOg=="), 407);
    assert_int_equal(check_auth("Basicc25fQUJDMTIzOg=="), 407);
    assert_int_equal(check_auth("Basic\tc25fQUJDMTIzOg=="), 407);
    /* bad base64: bad chars, missing padding, url alphabet, trailing junk */
    assert_int_equal(check_auth("Basic c25fQUJDMTIzOg"), 407);
    assert_int_equal(check_auth("Basic c25fQUJDMTIzOg=!"), 407);
    assert_int_equal(check_auth("Basic c25f*UJDMTIzOg=="), 407);
    assert_int_equal(check_auth("Basic c25fQUJDMTIzOg== x"), 407);
    /* a password is refused */
    assert_int_equal(check_auth("Basic c25fQUJDMTIzOnNlY3JldA=="), 407);
    assert_int_equal(check_auth("Basic c25fQTpCOg=="), 407); /* sn_A:B: */
    /* no colon at all */
    assert_int_equal(check_auth("Basic c25fQUJDMTIz"), 407);
    /* identifier shape */
    assert_int_equal(check_auth("Basic c25fQUIgQzo="), 407); /* "sn_AB C" */
    assert_int_equal(check_auth("Basic c25fOg=="), 407);     /* "sn_" */
    assert_int_equal(check_auth("Basic ZGV2X2EtYjo="), 407); /* "dev_a-b" */
    assert_int_equal(check_auth("Basic dXNlcjo="), 407);     /* "user" */
    assert_int_equal(check_auth("Basic Og=="), 407);         /* "" */
    assert_int_equal(check_auth("Basic c25fQQA6"), 407);     /* "sn_A\0" */
    /* 64 characters after the prefix is the maximum */
    assert_int_equal(check_auth("Basic c25fYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh"
                                "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYTo="),
                     0);
    assert_int_equal(strlen(out.ident), 67);
    assert_int_equal(check_auth("Basic c25fYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh"
                                "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE6"),
                     407);
    assert_string_equal(out.ident, "");
    assert_int_equal(check_auth("Basic ZGV2X1paWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpa"
                                "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlo6"),
                     0);
    assert_int_equal(strlen(out.ident), 68);
    /* a device ID may carry its proxy token as the password; a serial may not */
    assert_int_equal(check_auth("Basic ZGV2X1g6azEuYWJjLV9a"), 0); /* dev_X:k1.abc-_Z */
    assert_string_equal(out.ident, "dev_X");
    assert_string_equal(out.token, "k1.abc-_Z");
    assert_int_equal(check_auth("Basic ZGV2X1g6"), 0); /* dev_X: */
    assert_string_equal(out.token, "");
    assert_int_equal(check_auth("Basic ZGV2X1g6azEgeA=="), 407); /* dev_X:k1 x */
    assert_int_equal(check_auth("Basic ZGV2X1g6YTpi"), 407); /* dev_X:a:b */
    assert_int_equal(check_auth("Basic c25fWDprMS5hYmM="), 407); /* sn_X:k1.abc */
    assert_int_equal(check_auth("Basic ZGV2X1g6YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh"), 0); /* a 60-char token */
    assert_int_equal(strlen(out.token), 60);
    assert_int_equal(check_auth("Basic ZGV2X1g6YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYQ=="), 407); /* 61 */
    /* two credentials are ambiguous */
    assert_int_equal(check_target("a.b:443", AUTH_SN AUTH_SN), 407);
}

static void test_bad_target(void **state)
{
    (void)state;
    static const char *bad[] = {
        "portal-eu.phystack.com",        /* no port */
        "portal-eu.phystack.com:",       /* empty port */
        "portal-eu.phystack.com:0",      /* port 0 */
        "portal-eu.phystack.com:65536",  /* port too large */
        "portal-eu.phystack.com:443443", /* too many digits */
        "portal-eu.phystack.com:0443",   /* leading zero */
        "portal-eu.phystack.com:44a",
        "portal-eu.phystack.com:+443",
        ":443",
        "user@host:443",
        "user:pw@host:443",
        "host:443:443",
        "[::1]:443",
        "a..b:443",
        ".a.b:443",
        "a.b.:443",
        "-a.b:443",
        "a-.b:443",
        "a_b.c:443",
        "/path:443",
        "http://a.b:443",
        "256.1.1.1:443",
        "127.1:443",
        "01.2.3.4:443",
        "1.2.3.4.5:443",
        "1.2.3:443",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = check_target(bad[i], AUTH_SN);
        if (rc != 400)
            fail_msg("target %s gave %d", bad[i], rc);
    }

    /* label length 63 ok, 64 not; total 253 ok, 254 not */
    char host[400];
    memset(host, 'a', 63);
    memcpy(host + 63, ".b:443", 7);
    assert_int_equal(check_target(host, AUTH_SN), 0);
    memset(host, 'a', 64);
    memcpy(host + 64, ".b:443", 7);
    assert_int_equal(check_target(host, AUTH_SN), 400);
    /* 4 x (62 chars + '.') + 1 = 253 */
    size_t off = 0;
    for (int i = 0; i < 4; i++) {
        memset(host + off, 'x', 62);
        host[off + 62] = '.';
        off += 63;
    }
    memcpy(host + off, "y:443", 6);
    assert_int_equal(check_target(host, AUTH_SN), 0);
    assert_int_equal(strlen(out.host), 253);
    memcpy(host + off, "yz:443", 7);
    assert_int_equal(check_target(host, AUTH_SN), 400);
}

static void test_host_header_and_body(void **state)
{
    (void)state;
    assert_int_equal(
        check_target("portal-eu.phystack.com:443", "Host: portal-us.phystack.com:443\r\n" AUTH_SN),
        400);
    assert_int_equal(
        check_target("portal-eu.phystack.com:443", "Host: portal-eu.phystack.com\r\n" AUTH_SN),
        400);
    assert_int_equal(
        check_target("portal-eu.phystack.com:443", "Host: portal-eu.phystack.com:8443\r\n" AUTH_SN),
        400);
    assert_int_equal(
        check_target("portal-eu.phystack.com:443", "Host: PORTAL-EU.phystack.com:443\r\n" AUTH_SN),
        0);
    assert_int_equal(check_target("a.b:443", "Content-Length: 1\r\n" AUTH_SN), 400);
    assert_int_equal(check_target("a.b:443", "Transfer-Encoding: chunked\r\n" AUTH_SN), 400);
    /* a malformed target wins over missing auth */
    assert_int_equal(check_target("a.b", ""), 400);
}

static void test_host_match(void **state)
{
    (void)state;
    assert_int_equal(phy_host_match("portal-*.phystack.com", "portal-eu.phystack.com"), 1);
    assert_int_equal(phy_host_match("portal-*.phystack.com", "PORTAL-EU.PhyStack.com"), 1);
    assert_int_equal(phy_host_match("PORTAL-*.phystack.COM", "portal-us-west.phystack.com"), 1);
    assert_int_equal(phy_host_match("portal-*.phystack.com", "a.portal-eu.phystack.com"), 0);
    assert_int_equal(phy_host_match("portal-*.phystack.com", "portal-.phystack.com"), 0);
    assert_int_equal(phy_host_match("portal-*.phystack.com", "portal-eu.phystack.co"), 0);
    assert_int_equal(phy_host_match("portal-*.phystack.com", "portal-eu.phystack.com.x"), 0);
    assert_int_equal(phy_host_match("portal-*.phystack.com", "portal-e.u.phystack.com"), 0);
    assert_int_equal(phy_host_match("portal-*.phystack.com", "portaleu.phystack.com"), 0);
    assert_int_equal(phy_host_match("*.phystack.com", "hub.phystack.com"), 1);
    assert_int_equal(phy_host_match("*.phystack.com", "phystack.com"), 0);
    assert_int_equal(phy_host_match("*.phystack.com", ".phystack.com"), 0);
    assert_int_equal(phy_host_match("*", "localhost"), 1);
    assert_int_equal(phy_host_match("*", "a.b"), 0);
    assert_int_equal(phy_host_match("*.*", "a.b"), 1);
    assert_int_equal(phy_host_match("a*b*c", "abc"), 0);
    assert_int_equal(phy_host_match("a*b*c", "axbxc"), 1);
    assert_int_equal(phy_host_match("a*b*c", "axbbxbc"), 1);
    assert_int_equal(phy_host_match("a*bc", "abcbc"), 1);
    assert_int_equal(phy_host_match("**", "ab"), 1);
    assert_int_equal(phy_host_match("**", "a"), 0);
    assert_int_equal(phy_host_match("exact.host", "exact.host"), 1);
    assert_int_equal(phy_host_match("exact.host", "exact.hos"), 0);
    assert_int_equal(phy_host_match("", ""), 0);
    assert_int_equal(phy_host_match("*", ""), 0);
    assert_int_equal(phy_host_match(NULL, "a"), 0);
}

static void test_parse_allow(void **state)
{
    (void)state;
    char pat[64];
    unsigned port = 99;
    assert_int_equal(phy_connect_parse_allow("portal-*.phystack.com:443", pat, sizeof(pat), &port),
                     0);
    assert_string_equal(pat, "portal-*.phystack.com");
    assert_int_equal(port, 443);
    assert_int_equal(phy_connect_parse_allow("*.example:*", pat, sizeof(pat), &port), 0);
    assert_string_equal(pat, "*.example");
    assert_int_equal(port, 0);
    assert_int_equal(phy_connect_parse_allow("h:65535", pat, 2, &port), 0);
    assert_string_equal(pat, "h");
    assert_int_equal(port, 65535);

    static const char *bad[] = {"host",       "host:",   ":443",     "host:0",
                                "host:65536", "host:**", "host:44x", "ho st:443",
                                "host:443 ",  "h/x:443", "host:-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (phy_connect_parse_allow(bad[i], pat, sizeof(pat), &port) != PHY_EINVAL)
            fail_msg("allow spec '%s' accepted", bad[i]);
    /* pattern must fit with its NUL */
    assert_int_equal(phy_connect_parse_allow("abcd:1", pat, 4, &port), PHY_EINVAL);
    assert_int_equal(phy_connect_parse_allow("abc:1", pat, 4, &port), 0);
    assert_int_equal(phy_connect_parse_allow(NULL, pat, 4, &port), PHY_EINVAL);
}

static void test_parse_route(void **state)
{
    (void)state;
    char host[64], addr[64];
    unsigned port = 0;
    assert_int_equal(phy_connect_parse_route("portal-*.phystack.com=127.0.0.1:8443", host,
                                             sizeof(host), addr, sizeof(addr), &port),
                     0);
    assert_string_equal(host, "portal-*.phystack.com");
    assert_string_equal(addr, "127.0.0.1");
    assert_int_equal(port, 8443);
    assert_int_equal(phy_connect_parse_route("hub.local=[::1]:443", host, sizeof(host), addr,
                                             sizeof(addr), &port),
                     0);
    assert_string_equal(host, "hub.local");
    assert_string_equal(addr, "::1");
    assert_int_equal(port, 443);
    assert_int_equal(
        phy_connect_parse_route("h=[2001:db8::1]:1", host, sizeof(host), addr, sizeof(addr), &port),
        0);
    assert_string_equal(addr, "2001:db8::1");
    assert_int_equal(port, 1);

    static const char *bad[] = {
        "=127.0.0.1:1",      "h127.0.0.1:1",    "h=127.0.0.1",  "h=127.0.0.1:", "h=127.0.0.1:0",
        "h=127.0.0.1:65536", "h=::1:443",       "h=[::1]",      "h=[::1:443",   "h=[zz::1]:443",
        "h=localhost:443",   "h=256.0.0.1:443", "h=127.1:443",  "h=:443",       "h=[]:443",
        "h h=1.2.3.4:1",     "h=1.2.3.4:1 ",    "h=1.2.3.4 :1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (phy_connect_parse_route(bad[i], host, sizeof(host), addr, sizeof(addr), &port) !=
            PHY_EINVAL)
            fail_msg("route spec '%s' accepted", bad[i]);
    /* capacities */
    assert_int_equal(phy_connect_parse_route("abc=1.2.3.4:1", host, 3, addr, sizeof(addr), &port),
                     PHY_EINVAL);
    assert_int_equal(phy_connect_parse_route("abc=1.2.3.4:1", host, 4, addr, 7, &port), PHY_EINVAL);
    assert_int_equal(phy_connect_parse_route("abc=1.2.3.4:1", host, 4, addr, 8, &port), 0);
    assert_string_equal(addr, "1.2.3.4");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_wrong_method),
        cmocka_unit_test(test_missing_and_bad_auth),
        cmocka_unit_test(test_bad_target),
        cmocka_unit_test(test_host_header_and_body),
        cmocka_unit_test(test_host_match),
        cmocka_unit_test(test_parse_allow),
        cmocka_unit_test(test_parse_route),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
