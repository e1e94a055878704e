/* Unit tests for lib/json.c: byte for byte what json_dumps writes, except reals in
 * their shortest round-trip form. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "phy/json.h"

static void same_as_jansson(const char *text, size_t flags)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    assert_non_null(v);
    char *a = json_dumps(v, flags), *b = phy_json_dumps(v, flags);
    if (a == NULL)
        assert_null(b);
    else
        assert_string_equal(b, a);
    free(a);
    free(b);
    json_decref(v);
}

static void test_like_jansson_without_reals(void **state)
{
    static const char *const docs[] = {
        "{}", "[]", "{\"b\":1,\"a\":[true,false,null,\"x\"],\"c\":{}}",
        "{\"s\":\"q\\\"\\\\/\\b\\f\\n\\r\\t\\u0001\\u001f\\u007f\\u00e9\\u20ac\"}",
        "[[[]],[{}],{\"k\":[1,-2,9223372036854775807,-9223372036854775808]}]",
        "{\"key\":\"v\\u0000al\"}", "\"just a string\"", "42", "null",
    };
    static const size_t flags[] = {
        JSON_COMPACT, 0, JSON_INDENT(2), JSON_INDENT(2) | JSON_SORT_KEYS,
        JSON_COMPACT | JSON_SORT_KEYS, JSON_COMPACT | JSON_ENCODE_ANY,
        JSON_INDENT(4) | JSON_ENCODE_ANY,
    };
    (void)state;
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++)
        for (size_t f = 0; f < sizeof flags / sizeof flags[0]; f++)
            same_as_jansson(docs[i], flags[f]);
}

static void test_shortest_reals(void **state)
{
    static const struct {
        double d;
        const char *text;
    } cases[] = {
        {0.05, "0.05"},   {1.0, "1.0"},       {-2.5, "-2.5"},   {0.1 + 0.2, "0.30000000000000004"},
        {1e21, "1e21"},   {1e-7, "1e-7"},     {123456789.0, "123456789.0"},
        {1.5e300, "1.5e300"}, {5e-324, "5e-324"}, {0.0, "0.0"},
    };
    char out[64];
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int n = phy_json_real(cases[i].d, out, sizeof out);
        assert_int_equal(n, (int)strlen(cases[i].text));
        assert_string_equal(out, cases[i].text);
        assert_true(strtod(out, NULL) == cases[i].d);
    }
    json_t *v = json_pack("{s:[f,f], s:f}", "load", 0.05, 0.25, "t", 40.5);
    char *s = phy_json_dumps(v, JSON_COMPACT);
    assert_string_equal(s, "{\"load\":[0.05,0.25],\"t\":40.5}");
    free(s);
    json_decref(v);
    assert_int_equal(phy_json_real(1.0 / 0.0, out, sizeof out), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_like_jansson_without_reals),
        cmocka_unit_test(test_shortest_reals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
