/* Unit tests for ctl/cli.c and phy_client_parse_hostport: URLs, argv, output lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../ctl/cli.h"
#include "phy/client.h"
#include "phy/err.h"

static void test_hostport(void **state)
{
    char h[64];
    unsigned p = 0;

    (void)state;
    assert_int_equal(phy_client_parse_hostport("a.example:8443", h, sizeof h, &p, 443), 0);
    assert_string_equal(h, "a.example");
    assert_int_equal(p, 8443);
    assert_int_equal(phy_client_parse_hostport("a.example", h, sizeof h, &p, 443), 0);
    assert_int_equal(p, 443);
    assert_int_equal(phy_client_parse_hostport("[::1]:9", h, sizeof h, &p, 443), 0);
    assert_string_equal(h, "::1");
    assert_int_equal(p, 9);
    assert_int_equal(phy_client_parse_hostport("[::1]", h, sizeof h, &p, 443), 0);
    assert_int_equal(p, 443);
    assert_int_equal(phy_client_parse_hostport("127.0.0.1:65535", h, sizeof h, &p, 0), 0);
    assert_int_equal(p, 65535);

    assert_int_equal(phy_client_parse_hostport("a.example", h, sizeof h, &p, 0), PHY_EINVAL);
    assert_int_equal(phy_client_parse_hostport("a:0", h, sizeof h, &p, 443), PHY_EINVAL);
    assert_int_equal(phy_client_parse_hostport("a:65536", h, sizeof h, &p, 443), PHY_EINVAL);
    assert_int_equal(phy_client_parse_hostport("a:+80", h, sizeof h, &p, 443), PHY_EINVAL);
    assert_int_equal(phy_client_parse_hostport("a:", h, sizeof h, &p, 443), PHY_EINVAL);
    assert_int_equal(phy_client_parse_hostport(":80", h, sizeof h, &p, 443), PHY_EINVAL);
    assert_int_equal(phy_client_parse_hostport("::1", h, sizeof h, &p, 443), PHY_EINVAL);
    assert_int_equal(phy_client_parse_hostport("[::1", h, sizeof h, &p, 443), PHY_EINVAL);
    assert_int_equal(phy_client_parse_hostport("[a.b]:1", h, sizeof h, &p, 443), PHY_EINVAL);
    assert_int_equal(phy_client_parse_hostport("a b:1", h, sizeof h, &p, 443), PHY_EINVAL);
    assert_int_equal(phy_client_parse_hostport("a\r\n:1", h, sizeof h, &p, 443), PHY_EINVAL);
    assert_int_equal(phy_client_parse_hostport("abcdefgh:1", h, 8, &p, 443), PHY_EINVAL);
}

static void test_url(void **state)
{
    char h[CTL_HOST_MAX + 1];
    unsigned p = 0;

    (void)state;
    assert_int_equal(ctl_parse_url("https://portal-eu.phystack.com", h, &p), 0);
    assert_string_equal(h, "portal-eu.phystack.com");
    assert_int_equal(p, 443);
    assert_int_equal(ctl_parse_url("https://localhost:8443/", h, &p), 0);
    assert_string_equal(h, "localhost");
    assert_int_equal(p, 8443);
    assert_int_equal(ctl_parse_url("http://localhost", h, &p), PHY_EINVAL);
    assert_int_equal(ctl_parse_url("https://", h, &p), PHY_EINVAL);
    assert_int_equal(ctl_parse_url("https://h/api", h, &p), PHY_EINVAL);
    assert_int_equal(ctl_parse_url("https://u@h", h, &p), PHY_EINVAL);
    assert_int_equal(ctl_parse_url("https://h?x", h, &p), PHY_EINVAL);
    assert_int_equal(ctl_parse_url(NULL, h, &p), PHY_EINVAL);
}

static void test_find_command(void **state)
{
    long t = 0;
    int j = 0;
    char *s = NULL;
    const struct phy_opt opts[] = {
        {"url", PHY_OPT_STR, &s, 0, 0, ""},
        {"json", PHY_OPT_BOOL, &j, 0, 0, ""},
        {"timeout", PHY_OPT_INT, &t, 1, 9, ""},
        {NULL, PHY_OPT_STR, NULL, 0, 0, NULL},
    };
    char *a1[] = {"phyctl", "--url", "https://x", "--json", "claim", "--serial", "S"};
    char *a2[] = {"phyctl", "--url=https://x", "--timeout", "3", "devices", "list"};
    char *a3[] = {"phyctl", "--json", "--help"};
    char *a4[] = {"phyctl", "--config", "f.ini", "--", "claim"};
    char *a5[] = {"phyctl", "-h", "devices"};

    (void)state;
    assert_int_equal(ctl_find_command(opts, 7, a1, 1), 4);
    assert_int_equal(ctl_find_command(opts, 6, a2, 1), 4);
    assert_int_equal(ctl_find_command(opts, 3, a3, 1), 3);
    assert_int_equal(ctl_find_command(opts, 5, a4, 1), 4);
    assert_int_equal(ctl_find_command(opts, 3, a5, 1), 2);
}

static void test_urlencode_and_clean(void **state)
{
    char out[16];

    (void)state;
    assert_int_equal(ctl_urlencode("dev_abc-1.~", out, sizeof out), 0);
    assert_string_equal(out, "dev_abc-1.~");
    assert_int_equal(ctl_urlencode("a b&c=/", out, sizeof out), 0);
    assert_string_equal(out, "a%20b%26c%3D%2F");
    assert_int_equal(ctl_urlencode("0123456789abcdef", out, sizeof out), PHY_ETOOBIG);
    assert_int_equal(ctl_urlencode("%%%%%%", out, sizeof out), PHY_ETOOBIG);
    assert_int_equal(ctl_urlencode("%%%%%", out, sizeof out), 0);
    assert_string_equal(ctl_clean("a\x1b[2Jb\n", out, sizeof out), "a?[2Jb?");
    assert_string_equal(ctl_clean(NULL, out, sizeof out), "-");
    assert_string_equal(ctl_clean("", out, sizeof out), "-");
    assert_string_equal(ctl_clean("0123456789abcdefghij", out, 5), "0123");
}

static void test_error_and_claim_lines(void **state)
{
    char line[256];
    const char *body = "{\"error\":\"serial_in_use\",\"message\":\"enter the code\"}";
    json_t *dev;

    (void)state;
    ctl_format_error(409, body, strlen(body), line, sizeof line);
    assert_string_equal(line, "error: serial_in_use: enter the code");
    ctl_format_error(502, "<html>", 6, line, sizeof line);
    assert_string_equal(line, "error: http_502: Bad Gateway");
    ctl_format_error(500, NULL, 0, line, sizeof line);
    assert_string_equal(line, "error: http_500: Internal Server Error");

    dev = json_pack("{s:s, s:s, s:s, s:s}", "device_id", "dev_x", "serial", "SN1", "name", "Lobby",
                    "state", "pending_delivery");
    ctl_format_claimed(dev, line, sizeof line);
    assert_string_equal(line, "claimed dev_x (serial SN1, name Lobby, state pending_delivery)");
    json_object_set_new(dev, "name", json_null());
    ctl_format_claimed(dev, line, sizeof line);
    assert_string_equal(line, "claimed dev_x (serial SN1, state pending_delivery)");
    json_decref(dev);
}

static void test_table(void **state)
{
    json_t *devs =
        json_pack("[{s:s, s:s, s:s, s:s, s:s}, {s:s, s:s, s:n, s:s, s:s}]", "device_id", "dev_a",
                  "serial", "SERIAL-LONG", "name", "N", "state", "active", "created_at",
                  "2026-01-01T00:00:00Z", "device_id", "dev_bb", "serial", "S2", "name", "state",
                  "provisioned", "created_at", "2026-01-02T00:00:00Z");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    (void)state;
    assert_non_null(devs);
    assert_non_null(f);
    ctl_print_devices(devs, f);
    fclose(f);
    assert_string_equal(buf, "DEVICE ID  SERIAL       NAME  STATE        CREATED\n"
                             "dev_a      SERIAL-LONG  N     active       2026-01-01T00:00:00Z\n"
                             "dev_bb     S2           -     provisioned  2026-01-02T00:00:00Z\n");
    free(buf);
    json_decref(devs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostport),
        cmocka_unit_test(test_url),
        cmocka_unit_test(test_find_command),
        cmocka_unit_test(test_urlencode_and_clean),
        cmocka_unit_test(test_error_and_claim_lines),
        cmocka_unit_test(test_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
