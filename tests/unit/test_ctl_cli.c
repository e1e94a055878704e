/* Unit tests for ctl/cli.c, ctl/sse.c and phy_client_parse_hostport: URLs, argv, output
 * lines, twin key=value arguments, chunked framing and Server-Sent Events. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../ctl/cli.h"
#include "../../ctl/sse.h"
#include "phy/client.h"
#include "phy/err.h"
#include "phy/http.h"

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

    /* a rename's answer: the new name, or the serial that stands in for none */
    json_object_set_new(dev, "name", json_string("Gate \x1b[31m7"));
    ctl_format_renamed(dev, line, sizeof line);
    assert_string_equal(line, "renamed dev_x to Gate ?[31m7");
    json_object_set_new(dev, "name", json_null());
    ctl_format_renamed(dev, line, sizeof line);
    assert_string_equal(line, "removed the name of dev_x (listed by serial SN1)");
    json_object_set_new(dev, "name", json_string(""));
    ctl_format_renamed(dev, line, sizeof line);
    assert_string_equal(line, "removed the name of dev_x (listed by serial SN1)");
    json_decref(dev);
}

static void test_table(void **state)
{
    json_t *devs = json_pack(
        "[{s:s, s:s, s:s, s:s, s:s, s:s, s:s}, {s:s, s:s, s:n, s:s, s:s, s:s, s:n}]", "device_id",
        "dev_a", "serial", "SERIAL-LONG", "name", "N", "state", "active", "created_at",
        "2026-01-01T00:00:00Z", "presence", "online", "last_seen", "2026-01-03T00:00:00Z",
        "device_id", "dev_bb", "serial", "S2", "name", "state", "provisioned", "created_at",
        "2026-01-02T00:00:00Z", "presence", "offline", "last_seen");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    (void)state;
    assert_non_null(devs);
    assert_non_null(f);
    ctl_print_devices(devs, f);
    fclose(f);
    assert_string_equal(
        buf, "DEVICE ID  SERIAL       NAME  STATE        PRESENCE  LAST SEEN             "
             "CREATED\n"
             "dev_a      SERIAL-LONG  N     active       online    2026-01-03T00:00:00Z  "
             "2026-01-01T00:00:00Z\n"
             "dev_bb     S2           -     provisioned  offline   -                     "
             "2026-01-02T00:00:00Z\n");
    free(buf);
    json_decref(devs);
}

/* Applies each argument; returns the patch's compact sorted text (static) or the error. */
static const char *kv(const char *const *args, char *err, size_t errcap)
{
    static char out[512];
    json_t *p = json_object();
    char *t;

    err[0] = '\0';
    for (size_t i = 0; args[i] != NULL; i++) {
        if (ctl_kv_apply(p, args[i], err, errcap) != 0) {
            json_decref(p);
            return err;
        }
    }
    t = json_dumps(p, JSON_COMPACT | JSON_SORT_KEYS);
    snprintf(out, sizeof out, "%s", t);
    free(t);
    json_decref(p);
    return out;
}

static void test_twin_kv(void **state)
{
    char err[256];
    (void)state;
#define KV(...) kv((const char *const[]){__VA_ARGS__, NULL}, err, sizeof err)
    assert_string_equal(KV("a=1"), "{\"a\":1}");
    assert_string_equal(KV("a=1.5", "b=true", "c=false", "d=null"),
                        "{\"a\":1.5,\"b\":true,\"c\":false,\"d\":null}");
    assert_string_equal(KV("name=lobby screen"), "{\"name\":\"lobby screen\"}");
    assert_string_equal(KV("s=\"42\""), "{\"s\":\"42\"}");
    assert_string_equal(KV("e="), "{\"e\":\"\"}");
    assert_string_equal(KV("o={\"x\":[1,2]}"), "{\"o\":{\"x\":[1,2]}}");
    assert_string_equal(KV("v=1=2"), "{\"v\":\"1=2\"}");
    assert_string_equal(KV("n=-5"), "{\"n\":-5}");
    assert_string_equal(KV("t=nul"), "{\"t\":\"nul\"}");
    assert_string_equal(KV("a.b.c=1", "a.b.d=x", "a.e=null"),
                        "{\"a\":{\"b\":{\"c\":1,\"d\":\"x\"},\"e\":null}}");
    assert_string_equal(KV("o={\"x\":1}", "o.y=2"), "{\"o\":{\"x\":1,\"y\":2}}");
    /* errors */
    assert_string_equal(KV("novalue"), "expected key=value, got 'novalue'");
    assert_string_equal(KV("=1"), "expected key=value, got '=1'");
    assert_string_equal(KV("a..b=1"), "empty part in key 'a..b'");
    assert_string_equal(KV(".a=1"), "empty part in key '.a'");
    assert_string_equal(KV("a.=1"), "empty part in key 'a.'");
    assert_string_equal(KV("a=1", "a=2"), "key 'a' given twice");
    assert_string_equal(KV("a=1", "a.b=2"), "'a' is already set to a value that is not an object");
    assert_string_equal(KV("a.b=1", "a.b=2"), "key 'a.b' given twice");
    assert_string_equal(KV("a=\xff"), "value of 'a' is not valid UTF-8");
    assert_string_equal(KV("\xff=1"), "key '\xff' is not valid UTF-8");
#undef KV
}

static void test_tags_kv_and_ids(void **state)
{
    char err[256];
    json_t *t = json_object();
    char *s;

    (void)state;
    assert_int_equal(ctl_tag_apply(t, "site=berlin", err, sizeof err), 0);
    assert_int_equal(ctl_tag_apply(t, "n=5", err, sizeof err), 0);
    assert_int_equal(ctl_tag_apply(t, "a.b=x:y", err, sizeof err), 0);
    assert_int_equal(ctl_tag_apply(t, "site=paris", err, sizeof err), PHY_EINVAL);
    assert_string_equal(err, "tag 'site' given twice");
    assert_int_equal(ctl_tag_apply(t, "x", err, sizeof err), PHY_EINVAL);
    s = json_dumps(t, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(s, "{\"a.b\":\"x:y\",\"n\":\"5\",\"site\":\"berlin\"}");
    free(s);
    json_decref(t);

    assert_true(ctl_device_id_valid("dev_abcdefghijklmnopqrstuvwxyz"));
    assert_true(ctl_device_id_valid("dev_234567abcdefghijklmnopqrst"));
    assert_false(ctl_device_id_valid("dev_abcdefghijklmnopqrstuvwxy"));
    assert_false(ctl_device_id_valid("dev_abcdefghijklmnopqrstuvwxyz2"));
    assert_false(ctl_device_id_valid("dev_ABCDEFGHIJKLMNOPQRSTUVWXYZ"));
    assert_false(ctl_device_id_valid("dev_abcdefghijklmnopqrstuvwx18"));
    assert_false(ctl_device_id_valid("sn_abcdefghijklmnopqrstuvwxyza"));
    assert_false(ctl_device_id_valid("../devices/claim"));
    assert_false(ctl_device_id_valid(NULL));
}

static void test_print_device(void **state)
{
    const char *text =
        "{\"device_id\":\"dev_abcdefghijklmnopqrstuvwxyz\",\"serial\":\"SN1\",\"name\":null,"
        "\"tags\":{\"site\":\"berlin\",\"floor\":\"2\"},\"state\":\"active\",\"presence\":"
        "\"online\",\"last_seen\":\"2026-01-01T00:00:05Z\",\"connected_at\":"
        "\"2026-01-01T00:00:00Z\",\"disconnected_at\":null,\"last_status\":{\"uptime\":5},"
        "\"last_status_at\":\"2026-01-01T00:00:04Z\",\"created_at\":\"2025-12-31T00:00:00Z\","
        "\"twin\":{\"desired\":{\"b\":{\"c\":1},\"a\":\"x\\u001b\"},\"desired_version\":3,"
        "\"reported\":{},\"reported_version\":0,\"tags\":{}}}";
    json_t *dev = json_loads(text, 0, NULL);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    (void)state;
    assert_non_null(dev);
    ctl_print_device(dev, f);
    fclose(f);
    assert_string_equal(buf, "device_id        dev_abcdefghijklmnopqrstuvwxyz\n"
                             "serial           SN1\n"
                             "name             -\n"
                             "state            active\n"
                             "presence         online\n"
                             "created_at       2025-12-31T00:00:00Z\n"
                             "last_seen        2026-01-01T00:00:05Z\n"
                             "connected_at     2026-01-01T00:00:00Z\n"
                             "disconnected_at  -\n"
                             "last_status_at   2026-01-01T00:00:04Z\n"
                             "tags             floor=2 site=berlin\n"
                             "last_status      {\"uptime\":5}\n"
                             "desired (version 3):\n"
                             "  {\n"
                             "    \"a\": \"x\\u001B\",\n"
                             "    \"b\": {\n"
                             "      \"c\": 1\n"
                             "    }\n"
                             "  }\n"
                             "reported (version 0):\n"
                             "  {}\n");
    free(buf);
    json_decref(dev);
}

static void test_format_event(void **state)
{
    char line[512];
    const char *now = "2026-02-02T00:00:00Z";

    (void)state;
    ctl_format_event(
        "online",
        "{\"type\":\"online\",\"device_id\":\"dev_x\",\"time\":\"2026-01-01T00:00:00Z\","
        "\"tenant\":\"acme\"}",
        now, line, sizeof line);
    assert_string_equal(line, "2026-01-01T00:00:00Z online dev_x");
    ctl_format_event("reported", "{\"device_id\":\"dev_y\",\"version\":4,\"patch\":{\"a\":1}}", now,
                     line, sizeof line);
    assert_string_equal(line,
                        "2026-02-02T00:00:00Z reported dev_y {\"version\":4,\"patch\":{\"a\":1}}");
    ctl_format_event("odd\x1b", "not json\x07", now, line, sizeof line);
    assert_string_equal(line, "2026-02-02T00:00:00Z odd? - not json?");
    ctl_format_event("offline", "{\"at\":\"2026-01-01T00:00:09Z\",\"device_id\":\"d\\u001b\"}", now,
                     line, sizeof line);
    assert_string_equal(line, "2026-01-01T00:00:09Z offline d?");
}

static void test_dechunk(void **state)
{
    const char *in = "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n";
    char out[128], all[128] = "";
    size_t outn;
    struct phy_dechunk d;

    (void)state;
    /* In one piece. */
    memset(&d, 0, sizeof d);
    assert_int_equal(phy_dechunk_feed(&d, in, strlen(in), out, &outn, NULL), 1);
    assert_int_equal(outn, 11);
    assert_memory_equal(out, "hello world", 11);
    /* Byte by byte. */
    memset(&d, 0, sizeof d);
    size_t total = 0;
    int r = 0;
    for (size_t i = 0; i < strlen(in); i++) {
        r = phy_dechunk_feed(&d, in + i, 1, out, &outn, NULL);
        assert_true(r >= 0);
        memcpy(all + total, out, outn);
        total += outn;
        if (r == 1) {
            assert_int_equal(i, strlen(in) - 1);
            break;
        }
    }
    assert_int_equal(r, 1);
    assert_int_equal(total, 11);
    assert_memory_equal(all, "hello world", 11);
    /* Malformed framing. */
    static const char *const bad[] = {"x\r\n",         "5\r\nhelloXX", "5\n", "\r\n",
                                      "123456789\r\n", "1\r\na\r\r",   NULL};
    for (size_t i = 0; bad[i] != NULL; i++) {
        memset(&d, 0, sizeof d);
        assert_int_equal(phy_dechunk_feed(&d, bad[i], strlen(bad[i]), out, &outn, NULL), PHY_EPROTO);
    }
}

struct sse_log {
    char text[1024];
    int n, stop_at;
};

static int sse_cb(void *ctx, const char *type, const char *data)
{
    struct sse_log *l = ctx;
    size_t len = strlen(l->text);
    snprintf(l->text + len, sizeof l->text - len, "[%s|%s]", type, data);
    return ++l->n == l->stop_at ? 7 : 0;
}

static void test_sse(void **state)
{
    const char *in = ": phyhub events\n\n"
                     "event: online\ndata: {\"device_id\":\"a\"}\n\n"
                     "event:offline\r\ndata:x\r\ndata: y\r\nid: 5\r\nretry: 100\r\n\r\n"
                     "data: plain\r\rdata\n\n"
                     "event: ignored-without-data\n\n"
                     "data:  two spaces\n\n";
    const char *want = "[online|{\"device_id\":\"a\"}][offline|x\ny][message|plain]"
                       "[message|][message| two spaces]";
    struct ctl_sse *p = calloc(1, sizeof *p);
    struct sse_log l;

    (void)state;
    assert_non_null(p);
    memset(&l, 0, sizeof l);
    assert_int_equal(ctl_sse_feed(p, in, strlen(in), sse_cb, &l), 0);
    assert_string_equal(l.text, want);
    /* Byte by byte gives the same events (CR LF split across pieces included). */
    memset(p, 0, sizeof *p);
    memset(&l, 0, sizeof l);
    for (size_t i = 0; i < strlen(in); i++)
        assert_int_equal(ctl_sse_feed(p, in + i, 1, sse_cb, &l), 0);
    assert_string_equal(l.text, want);
    /* The callback stops the parser. */
    memset(p, 0, sizeof *p);
    memset(&l, 0, sizeof l);
    l.stop_at = 2;
    assert_int_equal(ctl_sse_feed(p, in, strlen(in), sse_cb, &l), 7);
    assert_int_equal(l.n, 2);
    /* An over-long line. */
    memset(p, 0, sizeof *p);
    char *big = malloc(CTL_SSE_LINE_MAX + 10);
    assert_non_null(big);
    memset(big, 'a', CTL_SSE_LINE_MAX + 10);
    assert_int_equal(ctl_sse_feed(p, big, CTL_SSE_LINE_MAX + 10, sse_cb, &l), PHY_ETOOBIG);
    free(big);
    free(p);
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
        cmocka_unit_test(test_twin_kv),
        cmocka_unit_test(test_tags_kv_and_ids),
        cmocka_unit_test(test_print_device),
        cmocka_unit_test(test_format_event),
        cmocka_unit_test(test_dechunk),
        cmocka_unit_test(test_sse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
