/* Unit tests for the agent's hub protocol without I/O: agent/twinsync.c (messages,
 * desired versions and gaps), agent/wsconn.c (upgrade handshake), reconnect backoff. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "../../agent/backoff.h"
#include "phy/wsframe.h"
#include "../../agent/twinsync.h"
#include "../../agent/wsconn.h"
#include "phy/base64.h"
#include "phy/err.h"
#include "phy/http.h"

static void handle(struct agent_sync *s, const char *text, struct agent_sync_event *ev)
{
    agent_sync_handle(s, text, strlen(text), ev);
}

/* Parses text and checks that it is an object with the given type and id. */
static json_t *check_msg(char *text, const char *type, long long id)
{
    json_t *m;

    assert_non_null(text);
    m = json_loads(text, 0, NULL);
    free(text);
    assert_non_null(m);
    assert_string_equal(json_string_value(json_object_get(m, "type")), type);
    assert_int_equal(json_integer_value(json_object_get(m, "id")), id);
    return m;
}

static void test_decorrelated_bounds(void **state)
{
    (void)state;
    uint64_t prev = 0;

    /* The first wait after a reset is within [base, 3 * base]. */
    for (uint64_t r = 0; r < 5000; r += 7) {
        uint64_t d = agent_backoff_decorrelated_ms(1000, 300000, 0, r * 2654435761u);
        assert_true(d >= 1000 && d <= 3000);
    }
    /* Extremes of the random draw. */
    assert_int_equal(agent_backoff_decorrelated_ms(1000, 300000, 1000, 0), 1000);
    assert_int_equal(agent_backoff_decorrelated_ms(1000, 300000, 1000, 2000), 3000);
    assert_int_equal(agent_backoff_decorrelated_ms(1000, 300000, 1000, 2001), 1000);
    /* Always within [base, cap], also when chained, and it reaches the cap. */
    int at_cap = 0;
    for (int i = 0; i < 2000; i++) {
        uint64_t d = agent_backoff_decorrelated_ms(1000, 300000, prev,
                                                   (uint64_t)rand() << 20 ^ (uint64_t)rand());
        assert_true(d >= 1000 && d <= 300000);
        assert_true(d <= (prev < 1000 ? 1000 : prev) * 3);
        at_cap += d == 300000;
        prev = d;
    }
    assert_true(at_cap > 0);
    /* No overflow with huge values; base >= cap gives the cap. */
    assert_true(agent_backoff_decorrelated_ms(1000, UINT64_MAX, UINT64_MAX, UINT64_MAX) >= 1000);
    assert_int_equal(agent_backoff_decorrelated_ms(1000, 5000, UINT64_MAX, 10000), 5000);
    assert_int_equal(agent_backoff_decorrelated_ms(5000, 3000, 0, 12345), 3000);
    assert_int_equal(agent_backoff_decorrelated_ms(3000, 3000, 9000, 12345), 3000);
}

static void test_patch_decision(void **state)
{
    (void)state;
    assert_int_equal(agent_sync_patch_decision(4, 5), AGENT_PATCH_APPLY);
    assert_int_equal(agent_sync_patch_decision(0, 1), AGENT_PATCH_APPLY);
    assert_int_equal(agent_sync_patch_decision(4, 4), AGENT_PATCH_IGNORE);
    assert_int_equal(agent_sync_patch_decision(4, 2), AGENT_PATCH_IGNORE);
    assert_int_equal(agent_sync_patch_decision(4, 6), AGENT_PATCH_REFETCH);
    assert_int_equal(agent_sync_patch_decision(4, 1000), AGENT_PATCH_REFETCH);
    assert_int_equal(agent_sync_patch_decision(-1, 0), AGENT_PATCH_REFETCH);
    assert_int_equal(agent_sync_patch_decision(-1, 1), AGENT_PATCH_REFETCH);

    assert_true(agent_sync_need_apply(1, 3, 3));
    assert_true(agent_sync_need_apply(0, 2, 3));
    assert_true(agent_sync_need_apply(0, -1, 0));
    assert_false(agent_sync_need_apply(0, 3, 3));
}

static void test_outgoing_messages(void **state)
{
    (void)state;
    struct agent_sync s;
    long long id = 0;
    json_t *m, *patch = json_pack("{s:{s:i}}", "config_status", "version", 3);
    json_t *st = json_pack("{s:i, s:s}", "uptime_s", 12, "agent_version", "0.2.0");

    agent_sync_init(&s);
    m = check_msg(agent_sync_twin_get(&s, &id), "twin.get", 1);
    assert_int_equal(id, 1);
    assert_int_equal(s.twin_get_id, 1);
    assert_int_equal(json_object_size(m), 2);
    json_decref(m);
    m = check_msg(agent_sync_reported_patch(&s, patch, &id), "reported.patch", 2);
    assert_int_equal(id, 2);
    assert_true(json_equal(json_object_get(m, "patch"), patch));
    json_decref(m);
    m = check_msg(agent_sync_status(&s, st, NULL), "status", 3);
    assert_true(json_equal(json_object_get(m, "status"), st));
    json_decref(m);
    json_decref(patch);
    json_decref(st);
    agent_sync_free(&s);
}

#define TWIN(id, desired, version, reported)                                                       \
    "{\"type\":\"twin\",\"id\":" id ",\"twin\":{\"device_id\":\"dev_x\",\"desired\":" desired      \
    ",\"desired_version\":" version ",\"reported\":" reported ",\"reported_version\":4,"           \
    "\"tags\":{}}}"

static void test_twin_then_pushes(void **state)
{
    (void)state;
    struct agent_sync s;
    struct agent_sync_event ev;
    json_t *want;

    agent_sync_init(&s);
    free(agent_sync_twin_get(&s, NULL)); /* id 1 */
    /* A twin for another request is not ours. */
    handle(&s, TWIN("7", "{\"a\":1}", "5", "{}"), &ev);
    assert_int_equal(ev.action, AGENT_SYNC_NONE);
    assert_int_equal(s.desired_version, -1);
    /* The hub echoes integer ids as their decimal text. */
    handle(&s,
           TWIN("\"1\"", "{\"a\":1,\"b\":{\"c\":2}}", "5",
                "{\"config_status\":{\"version\":4,\"exit_code\":0}}"),
           &ev);
    assert_int_equal(ev.action, AGENT_SYNC_TWIN);
    assert_int_equal(ev.version, 5);
    assert_false(ev.refetch);
    assert_int_equal(s.desired_version, 5);
    assert_int_equal(s.reported_cfg_version, 4);
    assert_int_equal(s.twin_get_id, 0);

    /* Next version: merged (RFC 7386, null deletes). */
    handle(&s, "{\"type\":\"desired.patch\",\"version\":6,\"patch\":{\"a\":null,\"b\":{\"d\":3}}}",
           &ev);
    assert_int_equal(ev.action, AGENT_SYNC_APPLY);
    assert_int_equal(s.desired_version, 6);
    want = json_loads("{\"b\":{\"c\":2,\"d\":3}}", 0, NULL);
    assert_true(json_equal(s.desired, want));
    json_decref(want);
    /* Replayed or older: ignored, copy unchanged. */
    handle(&s, "{\"type\":\"desired.patch\",\"version\":6,\"patch\":{\"x\":1}}", &ev);
    assert_int_equal(ev.action, AGENT_SYNC_NONE);
    handle(&s, "{\"type\":\"desired.patch\",\"version\":3,\"patch\":{\"x\":1}}", &ev);
    assert_int_equal(ev.action, AGENT_SYNC_NONE);
    assert_null(json_object_get(s.desired, "x"));
    /* A gap: refetch, copy unchanged. */
    handle(&s, "{\"type\":\"desired.patch\",\"version\":8,\"patch\":{\"x\":1}}", &ev);
    assert_int_equal(ev.action, AGENT_SYNC_REFETCH);
    assert_int_equal(ev.version, 8);
    assert_int_equal(s.desired_version, 6);
    /* Unusable pushes mean "something changed": refetch. */
    handle(&s, "{\"type\":\"desired.patch\",\"version\":7,\"patch\":[1]}", &ev);
    assert_int_equal(ev.action, AGENT_SYNC_REFETCH);
    handle(&s, "{\"type\":\"desired.patch\",\"patch\":{}}", &ev);
    assert_int_equal(ev.action, AGENT_SYNC_REFETCH);
    agent_sync_free(&s);
}

static void test_push_while_twin_in_flight(void **state)
{
    (void)state;
    struct agent_sync s;
    struct agent_sync_event ev;

    agent_sync_init(&s);
    /* Before any twin: a push cannot be applied. */
    handle(&s, "{\"type\":\"desired.patch\",\"version\":1,\"patch\":{\"a\":1}}", &ev);
    assert_int_equal(ev.action, AGENT_SYNC_REFETCH);

    free(agent_sync_twin_get(&s, NULL)); /* id 1 */
    /* Pushes that race the twin are remembered, not applied. */
    handle(&s, "{\"type\":\"desired.patch\",\"version\":3,\"patch\":{\"a\":3}}", &ev);
    assert_int_equal(ev.action, AGENT_SYNC_NONE);
    /* The twin predates that push: take it, and ask again. */
    handle(&s, TWIN("1", "{\"a\":2}", "2", "{}"), &ev);
    assert_int_equal(ev.action, AGENT_SYNC_TWIN);
    assert_true(ev.refetch);
    assert_int_equal(s.reported_cfg_version, -1);

    free(agent_sync_twin_get(&s, NULL)); /* id 2 */
    handle(&s, "{\"type\":\"desired.patch\",\"version\":3,\"patch\":{\"a\":3}}", &ev);
    assert_int_equal(ev.action, AGENT_SYNC_NONE);
    /* This twin already contains it. */
    handle(&s, TWIN("2", "{\"a\":3}", "3", "{\"config_status\":\"odd\"}"), &ev);
    assert_int_equal(ev.action, AGENT_SYNC_TWIN);
    assert_false(ev.refetch);
    assert_int_equal(s.desired_version, 3);
    assert_int_equal(json_integer_value(json_object_get(s.desired, "a")), 3);

    /* A new session forgets what was in flight but keeps the copy. */
    free(agent_sync_twin_get(&s, NULL));
    agent_sync_session_start(&s);
    assert_int_equal(s.twin_get_id, 0);
    assert_int_equal(s.desired_version, 3);
    agent_sync_free(&s);
}

static void test_ack_error_invalid(void **state)
{
    (void)state;
    struct agent_sync s;
    struct agent_sync_event ev;

    agent_sync_init(&s);
    handle(&s, "{\"type\":\"ack\",\"id\":\"12\",\"version\":7}", &ev);
    assert_int_equal(ev.action, AGENT_SYNC_ACK);
    assert_int_equal(ev.id, 12);
    assert_int_equal(ev.version, 7);

    free(agent_sync_twin_get(&s, NULL)); /* id 1 */
    handle(&s, "{\"type\":\"error\",\"error\":\"rate_limited\",\"message\":\"slow down\"}", &ev);
    assert_int_equal(ev.action, AGENT_SYNC_ERROR);
    assert_int_equal(ev.id, 0);
    assert_false(ev.for_twin_get);
    assert_string_equal(ev.error, "rate_limited");
    assert_string_equal(ev.message, "slow down");
    handle(&s, "{\"type\":\"error\",\"id\":\"1\",\"error\":\"internal\",\"message\":\"x\"}", &ev);
    assert_int_equal(ev.action, AGENT_SYNC_ERROR);
    assert_true(ev.for_twin_get);
    assert_int_equal(s.twin_get_id, 0);

    handle(&s, "{\"type\":\"twin\"", &ev);
    assert_int_equal(ev.action, AGENT_SYNC_INVALID);
    handle(&s, "[1,2]", &ev);
    assert_int_equal(ev.action, AGENT_SYNC_INVALID);
    handle(&s, "{\"id\":1}", &ev);
    assert_int_equal(ev.action, AGENT_SYNC_INVALID);
    handle(&s, "{\"type\":\"a\",\"type\":\"b\"}", &ev);
    assert_int_equal(ev.action, AGENT_SYNC_INVALID);
    /* Unknown types are tolerated (newer hubs). */
    handle(&s, "{\"type\":\"hello\",\"id\":\"abc\"}", &ev);
    assert_int_equal(ev.action, AGENT_SYNC_NONE);
    assert_string_equal(ev.type, "hello");
    assert_int_equal(ev.id, 0);
    /* A twin without desired is invalid and leaves the state alone. */
    free(agent_sync_twin_get(&s, NULL)); /* id 2 */
    handle(&s, "{\"type\":\"twin\",\"id\":2,\"twin\":{\"desired_version\":1}}", &ev);
    assert_int_equal(ev.action, AGENT_SYNC_INVALID);
    assert_int_equal(s.desired_version, -1);
    assert_null(s.desired);
    agent_sync_free(&s);
}

static void test_ws_accept_and_request(void **state)
{
    (void)state;
    char acc[WSF_ACCEPT_LEN + 1], key[AGENT_WS_KEY_LEN + 1], key2[AGENT_WS_KEY_LEN + 1];
    char req[1024];
    unsigned char raw[32];
    int n;

    /* RFC 6455 section 1.3 example. */
    assert_int_equal(wsf_accept("dGhlIHNhbXBsZSBub25jZQ==", 24, acc), 0);
    assert_string_equal(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");

    assert_int_equal(agent_ws_new_key(key), 0);
    assert_int_equal(agent_ws_new_key(key2), 0);
    assert_int_equal(strlen(key), 24);
    assert_string_not_equal(key, key2);
    assert_int_equal(phy_base64_decode(key, strlen(key), raw, sizeof raw, 0), 16);

    n = agent_ws_request(req, sizeof req, "portal-eu.phystack.com", 443, key, "dev_abc", "s3cr:et");
    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(req));
    assert_non_null(strstr(req, "GET /v1/hub HTTP/1.1\r\nHost: portal-eu.phystack.com\r\n"));
    assert_non_null(strstr(req, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"));
    assert_non_null(strstr(req, "\r\nSec-WebSocket-Version: 13\r\n"));
    assert_non_null(strstr(req, "\r\nSec-WebSocket-Protocol: phyhub.v1\r\n"));
    /* base64("dev_abc:s3cr:et") */
    assert_non_null(strstr(req, "\r\nAuthorization: Basic ZGV2X2FiYzpzM2NyOmV0\r\n\r\n"));
    {
        char line[64];
        snprintf(line, sizeof line, "\r\nSec-WebSocket-Key: %s\r\n", key);
        assert_non_null(strstr(req, line));
    }
    n = agent_ws_request(req, sizeof req, "::1", 8443, key, "dev_abc", "s");
    assert_true(n > 0);
    assert_non_null(strstr(req, "\r\nHost: [::1]:8443\r\n"));
    /* Refused: header injection, ':' in the user name, no room. */
    assert_int_equal(agent_ws_request(req, sizeof req, "h", 443, key, "dev\r\nX: y", "s"),
                     PHY_EINVAL);
    assert_int_equal(agent_ws_request(req, sizeof req, "h", 443, key, "dev:x", "s"), PHY_EINVAL);
    assert_int_equal(agent_ws_request(req, sizeof req, "h", 443, key, "dev", ""), PHY_EINVAL);
    assert_int_equal(agent_ws_request(req, 64, "h", 443, key, "dev", "s"), PHY_ETOOBIG);
}

static enum agent_ws_answer answer(const char *head, const char *key)
{
    struct phy_http_response res;
    char why[128];

    assert_true(phy_http_parse_response(head, strlen(head), 8192, &res) > 0);
    return agent_ws_check_answer(&res, key, why, sizeof why);
}

static void test_ws_check_answer(void **state)
{
    (void)state;
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";

    assert_int_equal(answer("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\n"
                            "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                            "Sec-WebSocket-Protocol: phyhub.v1\r\n\r\n",
                            key),
                     AGENT_WS_UPGRADED);
    /* Tokens are case-insensitive and may come in a list. */
    assert_int_equal(answer("HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\n"
                            "Connection: keep-alive, upgrade\r\n"
                            "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                            "Sec-WebSocket-Protocol: phyhub.v1\r\n\r\n",
                            key),
                     AGENT_WS_UPGRADED);
    assert_int_equal(answer("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\n"
                            "Sec-WebSocket-Accept: AAAPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                            "Sec-WebSocket-Protocol: phyhub.v1\r\n\r\n",
                            key),
                     AGENT_WS_BAD_UPGRADE);
    assert_int_equal(answer("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\n"
                            "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                            key),
                     AGENT_WS_BAD_UPGRADE);
    assert_int_equal(answer("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                            "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                            "Sec-WebSocket-Protocol: phyhub.v1\r\n\r\n",
                            key),
                     AGENT_WS_BAD_UPGRADE);
    assert_int_equal(answer("HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", key),
                     AGENT_WS_REVOKED);
    assert_int_equal(answer("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", key),
                     AGENT_WS_REFUSED);
    assert_int_equal(answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", key), AGENT_WS_REFUSED);
}

static void test_has_token(void **state)
{
    (void)state;
    struct phy_str v = {"keep-alive,  Upgrade ,x", 23};
    struct phy_str w = {"upgrades", 8};
    struct phy_str e = {"", 0};

    assert_true(agent_ws_has_token(v, "upgrade"));
    assert_true(agent_ws_has_token(v, "x"));
    assert_false(agent_ws_has_token(v, "close"));
    assert_false(agent_ws_has_token(w, "upgrade"));
    assert_false(agent_ws_has_token(e, "upgrade"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decorrelated_bounds),
        cmocka_unit_test(test_patch_decision),
        cmocka_unit_test(test_outgoing_messages),
        cmocka_unit_test(test_twin_then_pushes),
        cmocka_unit_test(test_push_while_twin_in_flight),
        cmocka_unit_test(test_ack_error_invalid),
        cmocka_unit_test(test_ws_accept_and_request),
        cmocka_unit_test(test_ws_check_answer),
        cmocka_unit_test(test_has_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
