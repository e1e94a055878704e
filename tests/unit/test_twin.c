/* Unit tests for lib/twin.c: RFC 7386 Appendix A, changed flag, depth and size limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "phy/err.h"
#include "phy/twin.h"

static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
    if (v == NULL)
        fail_msg("test JSON does not parse: %s: %s", text, err.text);
    return v;
}

/* Asserts that v serializes (sorted, compact) to exactly `want`. */
static void assert_json(const json_t *v, const char *want)
{
    char *got = phy_twin_dump(v);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

/* Merges patch text into doc text; checks rc, the result (or the untouched doc on
 * failure), the changed flag and that the patch itself did not change. */
static void check_merge(const char *doc_text, const char *patch_text, int want_rc, const char *want,
                        int want_changed)
{
    json_t *doc = parse(doc_text);
    json_t *patch = parse(patch_text);
    char *patch_before = json_dumps(patch, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    char *doc_before = phy_twin_dump(doc);
    assert_non_null(patch_before);
    assert_non_null(doc_before);
    int changed = -1;

    int rc = phy_twin_merge(&doc, patch, PHY_TWIN_MAX_BYTES, &changed);
    assert_int_equal(rc, want_rc);
    if (rc == 0) {
        assert_json(doc, want);
        assert_int_equal(changed, want_changed);
    } else {
        assert_json(doc, doc_before);
        assert_int_equal(changed, 0);
    }
    char *patch_after = json_dumps(patch, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    assert_non_null(patch_after);
    assert_string_equal(patch_after, patch_before);
    if (json_is_object(patch))
        assert_int_equal(patch->refcount, 1);
    free(patch_before);
    free(patch_after);
    free(doc_before);
    json_decref(doc);
    json_decref(patch);
}

struct rfc_case {
    const char *doc;
    const char *patch;
    const char *result; /* sorted compact */
};

/* RFC 7386 Appendix A, all 15 cases in order. phy_twin_merge takes object sections
 * only, so the cases whose target or patch is not an object are run through a
 * wrapper member: {"x": target} patched with {"x": patch}. Inside an object a null
 * member deletes, so case 11 (patch null, result null) becomes "x is removed". */
static const struct rfc_case rfc_cases[] = {
    /* 1 */ {"{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
    /* 2 */ {"{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}"},
    /* 3 */ {"{\"a\":\"b\"}", "{\"a\":null}", "{}"},
    /* 4 */ {"{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}"},
    /* 5 */ {"{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
    /* 6 */ {"{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}"},
    /* 7 */
    {"{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}", "{\"a\":{\"b\":\"d\"}}"},
    /* 8 */ {"{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}"},
    /* 9: ["a","b"] + ["c","d"] = ["c","d"] */
    {"{\"x\":[\"a\",\"b\"]}", "{\"x\":[\"c\",\"d\"]}", "{\"x\":[\"c\",\"d\"]}"},
    /* 10: {"a":"b"} + ["c"] = ["c"] */
    {"{\"x\":{\"a\":\"b\"}}", "{\"x\":[\"c\"]}", "{\"x\":[\"c\"]}"},
    /* 11: {"a":"foo"} + null = null (a null member deletes) */
    {"{\"x\":{\"a\":\"foo\"}}", "{\"x\":null}", "{}"},
    /* 12: {"a":"foo"} + "bar" = "bar" */
    {"{\"x\":{\"a\":\"foo\"}}", "{\"x\":\"bar\"}", "{\"x\":\"bar\"}"},
    /* 13 */ {"{\"e\":null}", "{\"a\":1}", "{\"a\":1,\"e\":null}"},
    /* 14: ["a","b"] + {"a":"b","c":null} = {"a":"b"} */
    {"{\"x\":[\"a\",\"b\"]}", "{\"x\":{\"a\":\"b\",\"c\":null}}", "{\"x\":{\"a\":\"b\"}}"},
    /* 15 */ {"{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}"},
};

static void test_rfc7386_appendix_a(void **state)
{
    (void)state;
    assert_int_equal(sizeof rfc_cases / sizeof rfc_cases[0], 15);
    for (size_t i = 0; i < sizeof rfc_cases / sizeof rfc_cases[0]; i++) {
        print_message("RFC 7386 case %zu\n", i + 1);
        check_merge(rfc_cases[i].doc, rfc_cases[i].patch, 0, rfc_cases[i].result, 1);
    }
}

/* Case 13 again on its own: a null already in the target is data, not a deletion. */
static void test_null_in_target_kept(void **state)
{
    (void)state;
    check_merge("{\"e\":null,\"f\":1}", "{\"f\":2}", 0, "{\"e\":null,\"f\":2}", 1);
}

static void test_null_deletes(void **state)
{
    (void)state;
    check_merge("{\"a\":1,\"b\":{\"c\":2,\"d\":3},\"e\":[1]}", "{\"a\":null,\"b\":{\"c\":null}}", 0,
                "{\"b\":{\"d\":3},\"e\":[1]}", 1);
    /* deleting a key that is absent changes nothing */
    check_merge("{\"a\":1}", "{\"zz\":null}", 0, "{\"a\":1}", 0);
    /* a whole subtree */
    check_merge("{\"a\":{\"b\":{\"c\":1}},\"k\":0}", "{\"a\":null}", 0, "{\"k\":0}", 1);
}

static void test_nested_merge(void **state)
{
    (void)state;
    check_merge("{\"net\":{\"wifi\":{\"ssid\":\"a\",\"psk\":\"p\"},\"dns\":\"1.1.1.1\"},\"v\":1}",
                "{\"net\":{\"wifi\":{\"ssid\":\"b\"},\"ntp\":\"pool\"}}", 0,
                "{\"net\":{\"dns\":\"1.1.1.1\",\"ntp\":\"pool\",\"wifi\":{\"psk\":\"p\","
                "\"ssid\":\"b\"}},\"v\":1}",
                1);
    /* an object patch replaces a scalar member, its nulls stripped */
    check_merge("{\"a\":5}", "{\"a\":{\"b\":1,\"c\":null}}", 0, "{\"a\":{\"b\":1}}", 1);
    /* and a scalar replaces an object */
    check_merge("{\"a\":{\"b\":1}}", "{\"a\":true}", 0, "{\"a\":true}", 1);
}

static void test_arrays_replaced_whole(void **state)
{
    (void)state;
    check_merge("{\"a\":[1,2,3]}", "{\"a\":[4]}", 0, "{\"a\":[4]}", 1);
    /* arrays are values: nulls and objects inside them are copied verbatim */
    check_merge("{\"a\":[1]}", "{\"a\":[null,{\"b\":null}]}", 0, "{\"a\":[null,{\"b\":null}]}", 1);
    check_merge("{\"a\":[1,2]}", "{\"a\":[1,2]}", 0, "{\"a\":[1,2]}", 0);
}

static void test_changed_flag(void **state)
{
    (void)state;
    check_merge("{\"a\":1}", "{\"a\":2}", 0, "{\"a\":2}", 1);
    check_merge("{\"a\":1}", "{\"a\":1}", 0, "{\"a\":1}", 0);
    check_merge("{\"a\":{\"b\":1}}", "{\"a\":{\"b\":1}}", 0, "{\"a\":{\"b\":1}}", 0);
    check_merge("{\"a\":{}}", "{\"a\":{}}", 0, "{\"a\":{}}", 0);
    check_merge("{}", "{\"a\":{}}", 0, "{\"a\":{}}", 1);
    /* 1 and 1.0 differ in JSON's data model as jansson keeps it */
    check_merge("{\"a\":1}", "{\"a\":1.0}", 0, "{\"a\":1.0}", 1);
}

static void test_noop_patch(void **state)
{
    (void)state;
    check_merge("{}", "{}", 0, "{}", 0);
    check_merge("{\"a\":[1],\"b\":{\"c\":null}}", "{}", 0, "{\"a\":[1],\"b\":{\"c\":null}}", 0);
}

static void test_changed_may_be_null(void **state)
{
    (void)state;
    json_t *doc = parse("{}");
    json_t *patch = parse("{\"a\":1}");
    assert_int_equal(phy_twin_merge(&doc, patch, PHY_TWIN_MAX_BYTES, NULL), 0);
    assert_json(doc, "{\"a\":1}");
    json_decref(doc);
    json_decref(patch);
}

/* The result holds copies: changing it later leaves the patch alone, and the old
 * document reference may be replaced (released, not leaked: ASan checks). */
static void test_patch_not_shared(void **state)
{
    (void)state;
    json_t *doc = parse("{\"k\":1}");
    json_t *patch = parse("{\"a\":{\"b\":[1,2]},\"s\":\"x\"}");
    int changed = 0;
    assert_int_equal(phy_twin_merge(&doc, patch, PHY_TWIN_MAX_BYTES, &changed), 0);
    assert_int_equal(changed, 1);
    json_t *arr = json_object_get(json_object_get(doc, "a"), "b");
    assert_non_null(arr);
    assert_int_equal(json_array_append_new(arr, json_integer(3)), 0);
    assert_int_equal(json_object_set_new(doc, "s", json_string("y")), 0);
    assert_json(patch, "{\"a\":{\"b\":[1,2]},\"s\":\"x\"}");
    assert_json(doc, "{\"a\":{\"b\":[1,2,3]},\"k\":1,\"s\":\"y\"}");
    assert_int_equal(patch->refcount, 1);
    assert_int_equal(json_object_get(patch, "a")->refcount, 1);
    json_decref(doc);
    json_decref(patch);
}

static void test_non_object_einval(void **state)
{
    (void)state;
    const char *bad_patches[] = {"[]", "[1]", "\"s\"", "null", "1", "true"};
    for (size_t i = 0; i < sizeof bad_patches / sizeof bad_patches[0]; i++)
        check_merge("{\"a\":1}", bad_patches[i], PHY_EINVAL, NULL, 0);

    /* the document must be an object too */
    json_t *doc = parse("[1]");
    json_t *patch = parse("{\"a\":1}");
    int changed = 7;
    assert_int_equal(phy_twin_merge(&doc, patch, PHY_TWIN_MAX_BYTES, &changed), PHY_EINVAL);
    assert_int_equal(changed, 0);
    assert_json(doc, "[1]");
    json_decref(doc);
    json_t *none = NULL;
    assert_int_equal(phy_twin_merge(&none, patch, PHY_TWIN_MAX_BYTES, &changed), PHY_EINVAL);
    assert_null(none);
    assert_int_equal(phy_twin_merge(NULL, patch, PHY_TWIN_MAX_BYTES, &changed), PHY_EINVAL);
    doc = parse("{}");
    assert_int_equal(phy_twin_merge(&doc, NULL, PHY_TWIN_MAX_BYTES, &changed), PHY_EINVAL);
    json_decref(doc);
    json_decref(patch);
}

/* {"a":1,"k":"<n bytes>"} serializes to 14 + n bytes. */
static json_t *string_patch(size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, 'v', n);
    s[n] = '\0';
    json_t *p = json_pack("{s:s}", "k", s);
    free(s);
    assert_non_null(p);
    return p;
}

static void test_size_limit_exact(void **state)
{
    (void)state;
    const size_t base = strlen("{\"a\":1,\"k\":\"\"}");
    assert_int_equal(base, 14);

    /* exactly 32768 bytes: accepted */
    json_t *doc = parse("{\"a\":1}");
    json_t *patch = string_patch(PHY_TWIN_MAX_BYTES - base);
    int changed = 0;
    assert_int_equal(phy_twin_merge(&doc, patch, PHY_TWIN_MAX_BYTES, &changed), 0);
    assert_int_equal(changed, 1);
    char *s = phy_twin_dump(doc);
    assert_non_null(s);
    assert_int_equal(strlen(s), PHY_TWIN_MAX_BYTES);
    free(s);
    json_decref(patch);

    /* one byte more: refused, the accepted document stays as it was */
    json_t *before = json_deep_copy(doc);
    json_t *kept = doc;
    patch = string_patch(PHY_TWIN_MAX_BYTES - base + 1);
    changed = 5;
    assert_int_equal(phy_twin_merge(&doc, patch, PHY_TWIN_MAX_BYTES, &changed), PHY_ETOOBIG);
    assert_int_equal(changed, 0);
    assert_ptr_equal(doc, kept);
    assert_true(json_equal(doc, before));
    json_decref(patch);

    /* a patch that shrinks it back below the limit is fine */
    patch = parse("{\"k\":null}");
    assert_int_equal(phy_twin_merge(&doc, patch, PHY_TWIN_MAX_BYTES, &changed), 0);
    assert_json(doc, "{\"a\":1}");
    json_decref(patch);
    json_decref(before);
    json_decref(doc);
}

static void test_size_limit_from_empty(void **state)
{
    (void)state;
    /* {"k":"<n>"} is 8 + n bytes; the limit parameter is honoured as given */
    json_t *doc = parse("{}");
    json_t *patch = json_pack("{s:s}", "k", "12345678");
    assert_int_equal(phy_twin_merge(&doc, patch, 15, NULL), PHY_ETOOBIG);
    assert_json(doc, "{}");
    assert_int_equal(phy_twin_merge(&doc, patch, 16, NULL), 0);
    assert_json(doc, "{\"k\":\"12345678\"}");
    json_decref(patch);
    json_decref(doc);
}

/* {"<k bytes>":1} serializes to 6 + k bytes. */
static json_t *key_patch(size_t k)
{
    char *key = malloc(k + 1);
    assert_non_null(key);
    memset(key, 'k', k);
    key[k] = '\0';
    json_t *p = json_object();
    assert_non_null(p);
    assert_int_equal(json_object_set_new(p, key, json_integer(1)), 0);
    free(key);
    return p;
}

/* Regression (found by fuzz_dispatch): jansson 2.14 ignores a failing dump callback
 * while it writes object keys, so an oversized key once slipped past the size check. */
static void test_size_limit_long_key(void **state)
{
    (void)state;
    json_t *doc = parse("{}");
    json_t *patch = key_patch(PHY_TWIN_MAX_BYTES - 6 + 1);
    assert_int_equal(phy_twin_merge(&doc, patch, PHY_TWIN_MAX_BYTES, NULL), PHY_ETOOBIG);
    assert_json(doc, "{}");
    json_decref(patch);

    patch = key_patch(PHY_TWIN_MAX_BYTES - 6);
    assert_int_equal(phy_twin_merge(&doc, patch, PHY_TWIN_MAX_BYTES, NULL), 0);
    char *s = phy_twin_dump(doc);
    assert_non_null(s);
    assert_int_equal(strlen(s), PHY_TWIN_MAX_BYTES);
    free(s);
    json_decref(patch);

    /* a long key followed by short members that would fit on their own */
    json_decref(doc);
    doc = parse("{\"z\":1}");
    patch = key_patch(300);
    assert_int_equal(json_object_set_new(patch, "zz", json_integer(2)), 0);
    assert_int_equal(phy_twin_merge(&doc, patch, 64, NULL), PHY_ETOOBIG);
    assert_json(doc, "{\"z\":1}");
    json_decref(patch);
    json_decref(doc);
}

/* n nested objects: {"a":{"a":...{}...}} has depth n (n >= 1). */
static json_t *nested(int n)
{
    json_t *v = json_object();
    assert_non_null(v);
    for (int i = 1; i < n; i++) {
        json_t *outer = json_object();
        assert_non_null(outer);
        assert_int_equal(json_object_set_new(outer, "a", v), 0);
        v = outer;
    }
    return v;
}

static void test_depth_limit(void **state)
{
    (void)state;
    json_t *doc = parse("{\"x\":1}");
    json_t *p10 = nested(PHY_TWIN_MAX_DEPTH);
    json_t *p11 = nested(PHY_TWIN_MAX_DEPTH + 1);
    assert_int_equal(phy_twin_check_depth(p10, PHY_TWIN_MAX_DEPTH), 0);
    assert_int_equal(phy_twin_check_depth(p11, PHY_TWIN_MAX_DEPTH), PHY_ETOOBIG);

    int changed = 0;
    assert_int_equal(phy_twin_merge(&doc, p11, PHY_TWIN_MAX_BYTES, &changed), PHY_ETOOBIG);
    assert_json(doc, "{\"x\":1}");
    assert_int_equal(changed, 0);
    assert_int_equal(phy_twin_merge(&doc, p10, PHY_TWIN_MAX_BYTES, &changed), 0);
    assert_int_equal(changed, 1);
    assert_int_equal(phy_twin_check_depth(doc, PHY_TWIN_MAX_DEPTH), 0);
    assert_int_equal(phy_twin_check_depth(doc, PHY_TWIN_MAX_DEPTH - 1), PHY_ETOOBIG);
    json_decref(p10);
    json_decref(p11);
    json_decref(doc);

    /* arrays count as levels too: {"a":[[...]]} */
    json_t *arr = parse("{\"a\":[[[[[[[[[1]]]]]]]]]}"); /* 1 + 9 = 10 */
    json_t *arr11 = parse("{\"a\":[[[[[[[[[[1]]]]]]]]]]}");
    doc = parse("{}");
    assert_int_equal(phy_twin_merge(&doc, arr, PHY_TWIN_MAX_BYTES, NULL), 0);
    assert_int_equal(phy_twin_merge(&doc, arr11, PHY_TWIN_MAX_BYTES, NULL), PHY_ETOOBIG);
    assert_json(doc, "{\"a\":[[[[[[[[[1]]]]]]]]]}");
    json_decref(arr);
    json_decref(arr11);
    json_decref(doc);
}

/* A document already over the depth limit (built outside the hub) cannot grow. */
static void test_depth_checked_on_result(void **state)
{
    (void)state;
    json_t *doc = nested(PHY_TWIN_MAX_DEPTH + 1);
    json_t *before = json_deep_copy(doc);
    json_t *patch = parse("{\"b\":1}");
    assert_int_equal(phy_twin_merge(&doc, patch, PHY_TWIN_MAX_BYTES, NULL), PHY_ETOOBIG);
    assert_true(json_equal(doc, before));
    json_decref(patch);
    json_decref(before);
    json_decref(doc);
}

static void test_check_depth_values(void **state)
{
    (void)state;
    json_t *v = json_integer(1);
    assert_int_equal(phy_twin_check_depth(v, 0), 0);
    json_decref(v);
    v = json_null();
    assert_int_equal(phy_twin_check_depth(v, 0), 0);
    v = parse("{}");
    assert_int_equal(phy_twin_check_depth(v, 0), PHY_ETOOBIG);
    assert_int_equal(phy_twin_check_depth(v, 1), 0);
    json_decref(v);
    v = parse("{\"a\":{}}");
    assert_int_equal(phy_twin_check_depth(v, 1), PHY_ETOOBIG);
    assert_int_equal(phy_twin_check_depth(v, 2), 0);
    json_decref(v);
    v = parse("[[]]");
    assert_int_equal(phy_twin_check_depth(v, 1), PHY_ETOOBIG);
    assert_int_equal(phy_twin_check_depth(v, 2), 0);
    json_decref(v);
    /* the deepest branch counts, wherever it is */
    v = parse("{\"a\":1,\"b\":[1,{\"c\":[]}],\"d\":{}}");
    assert_int_equal(phy_twin_check_depth(v, 3), PHY_ETOOBIG);
    assert_int_equal(phy_twin_check_depth(v, 4), 0);
    assert_int_equal(phy_twin_check_depth(v, -1), PHY_ETOOBIG);
    json_decref(v);
    /* very deep input is rejected without walking it all */
    char deep[3001];
    memset(deep, '[', 1500);
    memset(deep + 1500, ']', 1500);
    deep[3000] = '\0';
    v = parse(deep);
    assert_int_equal(phy_twin_check_depth(v, PHY_TWIN_MAX_DEPTH), PHY_ETOOBIG);
    assert_int_equal(phy_twin_check_depth(v, 1500), 0);
    json_decref(v);
}

static void test_dump_sorted_compact(void **state)
{
    (void)state;
    json_t *v = parse("{ \"b\" : 1, \"a\" : { \"d\" : [ 2 , \"é\" ], \"c\" : null } }");
    char *s = phy_twin_dump(v);
    assert_non_null(s);
    assert_string_equal(s, "{\"a\":{\"c\":null,\"d\":[2,\"é\"]},\"b\":1}");
    free(s);
    json_decref(v);
    assert_null(phy_twin_dump(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc7386_appendix_a),
        cmocka_unit_test(test_null_in_target_kept),
        cmocka_unit_test(test_null_deletes),
        cmocka_unit_test(test_nested_merge),
        cmocka_unit_test(test_arrays_replaced_whole),
        cmocka_unit_test(test_changed_flag),
        cmocka_unit_test(test_noop_patch),
        cmocka_unit_test(test_changed_may_be_null),
        cmocka_unit_test(test_patch_not_shared),
        cmocka_unit_test(test_non_object_einval),
        cmocka_unit_test(test_size_limit_exact),
        cmocka_unit_test(test_size_limit_from_empty),
        cmocka_unit_test(test_size_limit_long_key),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_depth_checked_on_result),
        cmocka_unit_test(test_check_depth_values),
        cmocka_unit_test(test_dump_sorted_compact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
