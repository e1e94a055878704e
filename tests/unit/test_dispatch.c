/* Unit tests for hub/dispatch.c: every message type, each rejection, the reply builders. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dispatch.h"
#include "testutil.h"
#include "phy/err.h"
#include "phy/twin.h"

static void parse_str(const char *text, struct dispatch_action *a)
{
    assert_int_equal(dispatch_parse(text, strlen(text), a), 0);
}

/* Parses text and expects an error action with this code, message and id. */
static void expect_error(const char *text, const char *code, const char *message, const char *id)
{
    struct dispatch_action a;
    parse_str(text, &a);
    assert_int_equal(a.kind, DISPATCH_ERROR);
    assert_non_null(a.error);
    assert_string_equal(a.error, code);
    if (message != NULL)
        assert_string_equal(a.message, message);
    assert_true(strlen(a.message) > 0);
    assert_null(a.body);
    if (id != NULL) {
        assert_int_equal(a.id.present, 1);
        assert_string_equal(a.id.text, id);
    } else {
        assert_int_equal(a.id.present, 0);
        assert_string_equal(a.id.text, "");
    }
    dispatch_action_clear(&a);
}

static void assert_body(const struct dispatch_action *a, const char *want)
{
    assert_non_null(a->body);
    char *s = json_dumps(a->body, JSON_COMPACT | JSON_SORT_KEYS);
    assert_non_null(s);
    assert_string_equal(s, want);
    free(s);
}

static void test_twin_get(void **state)
{
    (void)state;
    struct dispatch_action a;
    parse_str("{\"type\":\"twin.get\",\"id\":\"abc\"}", &a);
    assert_int_equal(a.kind, DISPATCH_TWIN_GET);
    assert_int_equal(a.id.present, 1);
    assert_string_equal(a.id.text, "abc");
    assert_null(a.body);
    assert_null(a.error);
    dispatch_action_clear(&a);

    parse_str(" { \"id\" : \"x\" , \"type\" : \"twin.get\" } ", &a);
    assert_int_equal(a.kind, DISPATCH_TWIN_GET);
    assert_string_equal(a.id.text, "x");
    dispatch_action_clear(&a);

    /* id is optional */
    parse_str("{\"type\":\"twin.get\"}", &a);
    assert_int_equal(a.kind, DISPATCH_TWIN_GET);
    assert_int_equal(a.id.present, 0);
    assert_string_equal(a.id.text, "");
    dispatch_action_clear(&a);
}

static void test_reported_patch(void **state)
{
    (void)state;
    struct dispatch_action a;
    parse_str(
        "{\"type\":\"reported.patch\",\"id\":\"r1\",\"patch\":{\"b\":null,\"a\":{\"c\":[1]}}}", &a);
    assert_int_equal(a.kind, DISPATCH_REPORTED_PATCH);
    assert_string_equal(a.id.text, "r1");
    assert_body(&a, "{\"a\":{\"c\":[1]},\"b\":null}");
    assert_int_equal(a.body->refcount, 1); /* owned by the action alone */
    dispatch_action_clear(&a);
    assert_null(a.body);

    parse_str("{\"patch\":{},\"type\":\"reported.patch\"}", &a);
    assert_int_equal(a.kind, DISPATCH_REPORTED_PATCH);
    assert_int_equal(a.id.present, 0);
    assert_body(&a, "{}");
    dispatch_action_clear(&a);
}

static void test_status(void **state)
{
    (void)state;
    struct dispatch_action a;
    parse_str("{\"type\":\"status\",\"id\":9,\"status\":{\"uptime_s\":12,\"agent_version\":\"1.0\","
              "\"load\":[0.5,0.25]}}",
              &a);
    assert_int_equal(a.kind, DISPATCH_STATUS);
    assert_string_equal(a.id.text, "9");
    assert_body(&a, "{\"agent_version\":\"1.0\",\"load\":[0.5,0.25],\"uptime_s\":12}");
    dispatch_action_clear(&a);
}

static void test_integer_ids(void **state)
{
    (void)state;
    struct dispatch_action a;
    parse_str("{\"type\":\"twin.get\",\"id\":42}", &a);
    assert_int_equal(a.kind, DISPATCH_TWIN_GET);
    assert_int_equal(a.id.present, 1);
    assert_string_equal(a.id.text, "42");
    parse_str("{\"type\":\"twin.get\",\"id\":0}", &a);
    assert_string_equal(a.id.text, "0");
    parse_str("{\"type\":\"twin.get\",\"id\":-7}", &a);
    assert_string_equal(a.id.text, "-7");
    parse_str("{\"type\":\"twin.get\",\"id\":9223372036854775807}", &a);
    assert_string_equal(a.id.text, "9223372036854775807");
    parse_str("{\"type\":\"twin.get\",\"id\":-9223372036854775808}", &a);
    assert_string_equal(a.id.text, "-9223372036854775808");
    /* beyond 64 bits jansson refuses the number: not JSON we accept */
    expect_error("{\"type\":\"twin.get\",\"id\":9223372036854775808}", "bad_message", NULL, NULL);
}

static void test_string_id_bounds(void **state)
{
    (void)state;
    char text[256];
    char id[DISPATCH_ID_MAX + 2];
    memset(id, 'i', sizeof id);
    id[DISPATCH_ID_MAX] = '\0';

    struct dispatch_action a;
    snprintf(text, sizeof text, "{\"type\":\"twin.get\",\"id\":\"%s\"}", id);
    parse_str(text, &a);
    assert_int_equal(a.kind, DISPATCH_TWIN_GET);
    assert_string_equal(a.id.text, id);

    id[DISPATCH_ID_MAX] = 'i';
    id[DISPATCH_ID_MAX + 1] = '\0';
    snprintf(text, sizeof text, "{\"type\":\"twin.get\",\"id\":\"%s\"}", id);
    expect_error(text, "bad_message", "id must be 1 to 64 bytes", NULL);
    expect_error("{\"type\":\"twin.get\",\"id\":\"\"}", "bad_message", "id must be 1 to 64 bytes",
                 NULL);

    /* 64 bytes counted in UTF-8: 32 two-byte characters fit, 33 do not */
    char utf[2 * 33 + 1];
    for (int i = 0; i < 33; i++)
        memcpy(utf + 2 * i, "\xc3\xa9", 2);
    utf[64] = '\0';
    snprintf(text, sizeof text, "{\"type\":\"twin.get\",\"id\":\"%s\"}", utf);
    parse_str(text, &a);
    assert_int_equal(a.kind, DISPATCH_TWIN_GET);
    assert_string_equal(a.id.text, utf);
    utf[64] = '\xc3';
    utf[66] = '\0';
    snprintf(text, sizeof text, "{\"type\":\"twin.get\",\"id\":\"%s\"}", utf);
    expect_error(text, "bad_message", "id must be 1 to 64 bytes", NULL);
}

static void test_id_wrong_type(void **state)
{
    (void)state;
    const char *msg = "id must be a string or an integer";
    expect_error("{\"type\":\"twin.get\",\"id\":1.5}", "bad_message", msg, NULL);
    expect_error("{\"type\":\"twin.get\",\"id\":null}", "bad_message", msg, NULL);
    expect_error("{\"type\":\"twin.get\",\"id\":true}", "bad_message", msg, NULL);
    expect_error("{\"type\":\"twin.get\",\"id\":[1]}", "bad_message", msg, NULL);
    expect_error("{\"type\":\"twin.get\",\"id\":{}}", "bad_message", msg, NULL);
}

static void test_unknown_type(void **state)
{
    (void)state;
    expect_error("{\"type\":\"twin.set\",\"id\":\"u1\"}", "unknown_type", "unknown message type",
                 "u1");
    expect_error("{\"type\":\"\"}", "unknown_type", "unknown message type", NULL);
    /* matched exactly, not by prefix or case */
    expect_error("{\"type\":\"twin.gett\"}", "unknown_type", NULL, NULL);
    expect_error("{\"type\":\"Status\",\"status\":{}}", "unknown_type", NULL, NULL);
    expect_error("{\"type\":\"twin.get\\u0000\"}", "bad_message", NULL, NULL);
    /* the hub's own types are not accepted from a device */
    expect_error("{\"type\":\"ack\",\"id\":\"1\",\"version\":1}", "unknown_type", NULL, "1");
    expect_error("{\"type\":\"desired.patch\",\"version\":1,\"patch\":{}}", "unknown_type", NULL,
                 NULL);
}

static void test_missing_or_bad_type(void **state)
{
    (void)state;
    expect_error("{\"id\":\"m1\"}", "bad_message", "missing type", "m1");
    expect_error("{}", "bad_message", "missing type", NULL);
    expect_error("{\"type\":5,\"id\":3}", "bad_message", "type must be a string", "3");
    expect_error("{\"type\":null}", "bad_message", "type must be a string", NULL);
    expect_error("{\"type\":[\"twin.get\"]}", "bad_message", "type must be a string", NULL);
}

static void test_extra_field(void **state)
{
    (void)state;
    expect_error("{\"type\":\"twin.get\",\"id\":\"e1\",\"x\":1}", "bad_message",
                 "unknown field \"x\"", "e1");
    expect_error("{\"type\":\"twin.get\",\"patch\":{}}", "bad_message", "unknown field \"patch\"",
                 NULL);
    expect_error("{\"type\":\"reported.patch\",\"patch\":{},\"status\":{}}", "bad_message",
                 "unknown field \"status\"", NULL);
    expect_error("{\"type\":\"status\",\"status\":{},\"patch\":{}}", "bad_message",
                 "unknown field \"patch\"", NULL);
    expect_error("{\"type\":\"status\",\"status\":{},\"version\":1}", "bad_message",
                 "unknown field \"version\"", NULL);
    /* names that are long or not plain ASCII are not quoted back */
    expect_error("{\"type\":\"twin.get\",\"k\\u00e9y\":1}", "bad_message", "unknown field", NULL);
    expect_error("{\"type\":\"twin.get\",\"a\\\"b\":1}", "bad_message", "unknown field", NULL);
    expect_error("{\"type\":\"twin.get\",\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":1}", "bad_message",
                 "unknown field", NULL);
    expect_error("{\"type\":\"twin.get\",\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":1}", "bad_message",
                 "unknown field \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"", NULL);
}

static void test_patch_not_object(void **state)
{
    (void)state;
    expect_error("{\"type\":\"reported.patch\",\"id\":\"p\",\"patch\":[1]}", "bad_message",
                 "patch must be an object", "p");
    expect_error("{\"type\":\"reported.patch\",\"patch\":null}", "bad_message",
                 "patch must be an object", NULL);
    expect_error("{\"type\":\"reported.patch\",\"patch\":\"{}\"}", "bad_message",
                 "patch must be an object", NULL);
    expect_error("{\"type\":\"reported.patch\",\"id\":\"p\"}", "bad_message", "missing patch", "p");
    expect_error("{\"type\":\"status\",\"status\":1}", "bad_message", "status must be an object",
                 NULL);
    expect_error("{\"type\":\"status\",\"id\":\"s\"}", "bad_message", "missing status", "s");
}

/* {"type":"status","status":{"k":"<n>"}}: the status object is 8 + n bytes. */
static char *status_msg(size_t n)
{
    const char *head = "{\"type\":\"status\",\"id\":\"big\",\"status\":{\"k\":\"";
    const char *tail = "\"}}";
    size_t hl = strlen(head), tl = strlen(tail);
    char *s = malloc(hl + n + tl + 1);
    assert_non_null(s);
    memcpy(s, head, hl);
    memset(s + hl, 'z', n);
    memcpy(s + hl + n, tail, tl + 1);
    return s;
}

static void test_status_size(void **state)
{
    (void)state;
    struct dispatch_action a;
    char *s = status_msg(8192 - 8);
    parse_str(s, &a);
    assert_int_equal(a.kind, DISPATCH_STATUS);
    char *dump = json_dumps(a.body, JSON_COMPACT);
    assert_int_equal(strlen(dump), 8192);
    free(dump);
    dispatch_action_clear(&a);
    free(s);

    s = status_msg(8192 - 7);
    expect_error(s, "too_large", "status over 8192 bytes", "big");
    free(s);
    s = status_msg(60000);
    expect_error(s, "too_large", "status over 8192 bytes", "big");
    free(s);
    /* Nested like a twin at most: depth 10 passes, 11 and 1000 are too deep. */
    for (int depth = 10; depth <= 1000; depth += depth == 10 ? 1 : 989) {
        char msg[8192]; /* 1000 levels: 6 bytes each */
        int n = snprintf(msg, sizeof msg, "{\"type\":\"status\",\"id\":\"d\",\"status\":");
        for (int i = 0; i < depth - 1; i++)
            n += snprintf(msg + n, sizeof msg - (size_t)n, "{\"a\":");
        n += snprintf(msg + n, sizeof msg - (size_t)n, "{}");
        for (int i = 0; i < depth - 1; i++)
            n += snprintf(msg + n, sizeof msg - (size_t)n, "}");
        snprintf(msg + n, sizeof msg - (size_t)n, "}");
        if (depth == 10) {
            parse_str(msg, &a);
            assert_int_equal(a.kind, DISPATCH_STATUS);
            dispatch_action_clear(&a);
        } else {
            expect_error(msg, "too_deep", "status nests deeper than 10 levels", "d");
        }
    }
}

/* {"type":"status","status":{"<k>":1}}: the status object is 6 + k bytes. */
static char *status_key_msg(size_t k)
{
    const char *head = "{\"type\":\"status\",\"status\":{\"";
    const char *tail = "\":1,\"a\":2}}";
    size_t hl = strlen(head), tl = strlen(tail);
    char *s = malloc(hl + k + tl + 1);
    assert_non_null(s);
    memcpy(s, head, hl);
    memset(s + hl, 'K', k);
    memcpy(s + hl + k, tail, tl + 1);
    return s;
}

/* Regression (found by fuzz_dispatch): a long key must count toward the limit even
 * though jansson 2.14 ignores the size callback's failure on keys. */
static void test_status_size_long_key(void **state)
{
    (void)state;
    struct dispatch_action a;
    /* {"<k>":1,"a":2} is 12 + k bytes */
    char *s = status_key_msg(8192 - 12);
    parse_str(s, &a);
    assert_int_equal(a.kind, DISPATCH_STATUS);
    dispatch_action_clear(&a);
    free(s);
    s = status_key_msg(8192 - 11);
    expect_error(s, "too_large", "status over 8192 bytes", NULL);
    free(s);
    s = status_key_msg(20000);
    expect_error(s, "too_large", "status over 8192 bytes", NULL);
    free(s);
}

/* {"type":"reported.patch","patch":<n nested objects>} */
static char *deep_patch_msg(int n)
{
    const char *head = "{\"type\":\"reported.patch\",\"id\":\"d\",\"patch\":";
    size_t hl = strlen(head);
    size_t len = hl + (size_t)n * 6 + 2;
    char *s = malloc(len + 1);
    assert_non_null(s);
    memcpy(s, head, hl);
    size_t o = hl;
    for (int i = 1; i < n; i++) {
        memcpy(s + o, "{\"a\":", 5);
        o += 5;
    }
    memcpy(s + o, "{}", 2);
    o += 2;
    for (int i = 1; i < n; i++)
        s[o++] = '}';
    s[o++] = '}';
    s[o] = '\0';
    assert_true(o <= len);
    return s;
}

static void test_patch_depth(void **state)
{
    (void)state;
    struct dispatch_action a;
    char *s = deep_patch_msg(PHY_TWIN_MAX_DEPTH);
    parse_str(s, &a);
    assert_int_equal(a.kind, DISPATCH_REPORTED_PATCH);
    assert_int_equal(phy_twin_check_depth(a.body, PHY_TWIN_MAX_DEPTH), 0);
    assert_int_equal(phy_twin_check_depth(a.body, PHY_TWIN_MAX_DEPTH - 1), PHY_ETOOBIG);
    dispatch_action_clear(&a);
    free(s);

    s = deep_patch_msg(PHY_TWIN_MAX_DEPTH + 1);
    expect_error(s, "too_deep", "patch nests deeper than 10 levels", "d");
    free(s);
    s = deep_patch_msg(1000);
    expect_error(s, "too_deep", "patch nests deeper than 10 levels", "d");
    free(s);
    /* arrays count as levels */
    expect_error("{\"type\":\"reported.patch\",\"patch\":{\"a\":[[[[[[[[[[1]]]]]]]]]]}}",
                 "too_deep", NULL, NULL);
    parse_str("{\"type\":\"reported.patch\",\"patch\":{\"a\":[[[[[[[[[1]]]]]]]]]}}", &a);
    assert_int_equal(a.kind, DISPATCH_REPORTED_PATCH);
    dispatch_action_clear(&a);
}

static void test_invalid_json(void **state)
{
    (void)state;
    struct dispatch_action a;
    const char *bad[] = {
        "{",
        "{\"type\":\"twin.get\"",
        "{\"type\":\"twin.get\"} x",
        "{\"type\":\"twin.get\",}",
        "{type:\"twin.get\"}",
        "{\"type\":'twin.get'}",
        "nul",
        "\xef\xbb\xbf{\"type\":\"twin.get\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        parse_str(bad[i], &a);
        assert_int_equal(a.kind, DISPATCH_ERROR);
        assert_string_equal(a.error, "bad_message");
        assert_memory_equal(a.message, "invalid JSON at line ", 21);
        assert_int_equal(a.id.present, 0);
        assert_null(a.body);
    }
    expect_error("{", "bad_message", "invalid JSON at line 1 column 1", NULL);
    /* an embedded NUL ends nothing: the length rules */
    static const char nul[] = "{\"type\":\"twin.get\"}\0";
    assert_int_equal(dispatch_parse(nul, sizeof nul - 1, &a), 0);
    assert_int_equal(a.kind, DISPATCH_ERROR);
    assert_string_equal(a.error, "bad_message");
    /* and bytes past len are not read */
    static const char more[] = "{\"type\":\"twin.get\"}{\"junk";
    assert_int_equal(dispatch_parse(more, 19, &a), 0);
    assert_int_equal(a.kind, DISPATCH_TWIN_GET);
    dispatch_action_clear(&a);
}

static void test_not_an_object(void **state)
{
    (void)state;
    const char *msg = "message must be a JSON object";
    expect_error("[{\"type\":\"twin.get\"}]", "bad_message", msg, NULL);
    expect_error("[]", "bad_message", msg, NULL);
    expect_error("\"twin.get\"", "bad_message", msg, NULL);
    expect_error("42", "bad_message", msg, NULL);
    expect_error("null", "bad_message", msg, NULL);
}

static void test_duplicate_keys(void **state)
{
    (void)state;
    expect_error("{\"type\":\"twin.get\",\"type\":\"status\"}", "bad_message", NULL, NULL);
    expect_error("{\"type\":\"twin.get\",\"id\":\"1\",\"id\":\"2\"}", "bad_message", NULL, NULL);
    /* nested duplicates too */
    expect_error("{\"type\":\"reported.patch\",\"patch\":{\"a\":1,\"a\":2}}", "bad_message", NULL,
                 NULL);
}

static void test_empty_input(void **state)
{
    (void)state;
    struct dispatch_action a;
    assert_int_equal(dispatch_parse("", 0, &a), 0);
    assert_int_equal(a.kind, DISPATCH_ERROR);
    assert_string_equal(a.error, "bad_message");
    assert_string_equal(a.message, "empty message");
    assert_int_equal(dispatch_parse(NULL, 0, &a), 0);
    assert_int_equal(a.kind, DISPATCH_ERROR);
    expect_error("   ", "bad_message", NULL, NULL);
}

/* No error message repeats a large piece of the input. */
static void test_no_large_echo(void **state)
{
    (void)state;
    size_t n = 5000;
    char *s = malloc(n + 64);
    assert_non_null(s);
    int o = snprintf(s, 64, "{\"type\":\"");
    memset(s + o, 'Q', n);
    memcpy(s + o + n, "\"}", 3);
    struct dispatch_action a;
    parse_str(s, &a);
    assert_string_equal(a.error, "unknown_type");
    assert_null(strstr(a.message, "QQQQ"));
    s[o + n] = '\0'; /* unterminated string: invalid JSON */
    parse_str(s, &a);
    assert_string_equal(a.error, "bad_message");
    assert_null(strstr(a.message, "QQQQ"));
    free(s);
}

static void test_clear(void **state)
{
    (void)state;
    struct dispatch_action a;
    memset(&a, 0, sizeof a);
    dispatch_action_clear(&a);
    dispatch_action_clear(NULL);
    parse_str("{\"type\":\"status\",\"status\":{\"a\":1}}", &a);
    dispatch_action_clear(&a);
    dispatch_action_clear(&a); /* twice is harmless */
    assert_null(a.body);
}

static void check_msg(char *got, const char *want)
{
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static const struct dispatch_id *sid(const char *text)
{
    static struct dispatch_id id;
    memset(&id, 0, sizeof id);
    snprintf(id.text, sizeof id.text, "%s", text);
    id.present = 1;
    return &id;
}

static const struct dispatch_id *iid(const char *text)
{
    struct dispatch_id *id = (struct dispatch_id *)sid(text);
    id->integer = 1;
    return id;
}

static void error_msg_without_code(void *arg)
{
    (void)arg;
    free(dispatch_error_msg(sid("1"), NULL, "x"));
}

static void test_builders(void **state)
{
    (void)state;
    check_msg(dispatch_error_msg(sid("7"), "bad_message", "missing type"),
              "{\"type\":\"error\",\"id\":\"7\",\"error\":\"bad_message\",\"message\":\"missing "
              "type\"}");
    check_msg(dispatch_error_msg(NULL, "rate_limited", "over 20 messages/s"),
              "{\"type\":\"error\",\"error\":\"rate_limited\",\"message\":\"over 20 messages/s\"}");
    check_msg(dispatch_error_msg(sid("q\"1"), "bad_message", "unknown field \"x\""),
              "{\"type\":\"error\",\"id\":\"q\\\"1\",\"error\":\"bad_message\","
              "\"message\":\"unknown field \\\"x\\\"\"}");
    /* no error code: a caller's bug, asserted */
    assert_true(test_aborts(error_msg_without_code, NULL));
    check_msg(dispatch_error_msg(sid("é"), "too_large", NULL),
              "{\"type\":\"error\",\"id\":\"é\",\"error\":\"too_large\",\"message\":\"\"}");

    check_msg(dispatch_ack_msg(sid("a1"), 5), "{\"type\":\"ack\",\"id\":\"a1\",\"version\":5}");
    check_msg(dispatch_ack_msg(NULL, 0), "{\"type\":\"ack\",\"version\":0}");
    check_msg(dispatch_ack_msg(sid("42"), 9007199254740993LL),
              "{\"type\":\"ack\",\"id\":\"42\",\"version\":9007199254740993}");
    /* An integer id is echoed as an integer (a JSON-RPC-minded client compares
     * msg.id === 42). */
    check_msg(dispatch_ack_msg(iid("42"), 1), "{\"type\":\"ack\",\"id\":42,\"version\":1}");
    check_msg(dispatch_ack_msg(iid("-9223372036854775808"), 1),
              "{\"type\":\"ack\",\"id\":-9223372036854775808,\"version\":1}");
}

/* An error action's fields feed the builder directly. */
static void test_parse_then_reply(void **state)
{
    (void)state;
    struct dispatch_action a;
    parse_str("{\"type\":\"nope\",\"id\":17}", &a);
    check_msg(dispatch_error_msg(&a.id, a.error, a.message),
              "{\"type\":\"error\",\"id\":17,\"error\":\"unknown_type\","
              "\"message\":\"unknown message type\"}");
    parse_str("{\"type\":\"twin.get\",\"id\":\"t\"}", &a);
    check_msg(dispatch_ack_msg(&a.id, 3),
              "{\"type\":\"ack\",\"id\":\"t\",\"version\":3}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_twin_get),
        cmocka_unit_test(test_reported_patch),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_integer_ids),
        cmocka_unit_test(test_string_id_bounds),
        cmocka_unit_test(test_id_wrong_type),
        cmocka_unit_test(test_unknown_type),
        cmocka_unit_test(test_missing_or_bad_type),
        cmocka_unit_test(test_extra_field),
        cmocka_unit_test(test_patch_not_object),
        cmocka_unit_test(test_status_size),
        cmocka_unit_test(test_status_size_long_key),
        cmocka_unit_test(test_patch_depth),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_empty_input),
        cmocka_unit_test(test_no_large_echo),
        cmocka_unit_test(test_clear),
        cmocka_unit_test(test_builders),
        cmocka_unit_test(test_parse_then_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
