/* Unit tests for lib/base64.c: RFC 4648 section 10 vectors, url variant, rejections. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "phy/base64.h"
#include "phy/err.h"

struct vec {
    const char *plain;
    const char *std;
    const char *url;
};

static const struct vec rfc_vectors[] = {
    {"", "", ""},
    {"f", "Zg==", "Zg"},
    {"fo", "Zm8=", "Zm8"},
    {"foo", "Zm9v", "Zm9v"},
    {"foob", "Zm9vYg==", "Zm9vYg"},
    {"fooba", "Zm9vYmE=", "Zm9vYmE"},
    {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
};

static void test_rfc_encode(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rfc_vectors / sizeof rfc_vectors[0]; i++) {
        const struct vec *v = &rfc_vectors[i];
        char out[32];
        size_t n = strlen(v->plain);
        assert_int_equal(phy_base64_encoded_len(n, 0), strlen(v->std));
        assert_int_equal(phy_base64_encoded_len(n, 1), strlen(v->url));
        assert_int_equal(phy_base64_encode((const unsigned char *)v->plain, n, out, sizeof out, 0),
                         (int)strlen(v->std));
        assert_string_equal(out, v->std);
        assert_int_equal(phy_base64_encode((const unsigned char *)v->plain, n, out, sizeof out, 1),
                         (int)strlen(v->url));
        assert_string_equal(out, v->url);
    }
}

static void test_rfc_decode(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rfc_vectors / sizeof rfc_vectors[0]; i++) {
        const struct vec *v = &rfc_vectors[i];
        unsigned char out[32];
        size_t n = strlen(v->plain);
        assert_int_equal(phy_base64_decode(v->std, strlen(v->std), out, sizeof out, 0), (int)n);
        assert_memory_equal(out, v->plain, n);
        assert_int_equal(phy_base64_decode(v->url, strlen(v->url), out, sizeof out, 1), (int)n);
        assert_memory_equal(out, v->plain, n);
    }
}

static void test_url_alphabet(void **state)
{
    const unsigned char in[] = {0xfb, 0xff, 0xbf};
    char out[8];
    unsigned char back[4];
    (void)state;
    assert_int_equal(phy_base64_encode(in, 3, out, sizeof out, 0), 4);
    assert_string_equal(out, "+/+/");
    assert_int_equal(phy_base64_encode(in, 3, out, sizeof out, 1), 4);
    assert_string_equal(out, "-_-_");
    assert_int_equal(phy_base64_decode("-_-_", 4, back, sizeof back, 1), 3);
    assert_memory_equal(back, in, 3);
    assert_int_equal(phy_base64_decode("+/+/", 4, back, sizeof back, 0), 3);
    assert_memory_equal(back, in, 3);
    /* each alphabet refuses the other's specials */
    assert_int_equal(phy_base64_decode("-_-_", 4, back, sizeof back, 0), PHY_EINVAL);
    assert_int_equal(phy_base64_decode("+/+/", 4, back, sizeof back, 1), PHY_EINVAL);
}

static void test_round_trip_all_lengths(void **state)
{
    unsigned char in[64], back[64];
    char enc[100];
    (void)state;
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (unsigned char)(i * 37 + 11);
    for (int url = 0; url <= 1; url++) {
        for (size_t n = 0; n <= sizeof in; n++) {
            int e = phy_base64_encode(in, n, enc, sizeof enc, url);
            assert_int_equal(e, (int)phy_base64_encoded_len(n, url));
            assert_int_equal(phy_base64_decode(enc, (size_t)e, back, sizeof back, url), (int)n);
            assert_memory_equal(back, in, n);
        }
    }
}

static void test_encode_too_small(void **state)
{
    char out[5];
    (void)state;
    /* "Zm9v" needs 4 + NUL */
    assert_int_equal(phy_base64_encode((const unsigned char *)"foo", 3, out, 4, 0), PHY_ETOOBIG);
    assert_int_equal(phy_base64_encode((const unsigned char *)"foo", 3, out, 5, 0), 4);
    assert_int_equal(phy_base64_encode((const unsigned char *)"", 0, out, 0, 0), PHY_ETOOBIG);
}

static void test_decode_too_small(void **state)
{
    unsigned char out[8];
    (void)state;
    assert_int_equal(phy_base64_decode("Zm9vYmFy", 8, out, 5, 0), PHY_ETOOBIG);
    assert_int_equal(phy_base64_decode("Zm9vYmFy", 8, out, 6, 0), 6);
    assert_int_equal(phy_base64_decode("Zm9vYg", 6, out, 3, 1), PHY_ETOOBIG);
    assert_int_equal(phy_base64_decode("Zm9vYg", 6, out, 4, 1), 4);
}

static void reject(const char *s, int url)
{
    unsigned char out[64];
    int rc = phy_base64_decode(s, strlen(s), out, sizeof out, url);
    if (rc != PHY_EINVAL)
        fail_msg("'%s' (url=%d) decoded to %d instead of EINVAL", s, url, rc);
}

static void test_rejections(void **state)
{
    (void)state;
    /* bad characters */
    reject("Zm9v!A==", 0);
    reject("Zm 9v", 1);
    reject("Zm9v\n", 1);
    reject("Zm9vYmFy\n", 0);
    reject("Zm\x80v", 0);
    {
        unsigned char out[8];
        assert_int_equal(phy_base64_decode("Zm\0v", 4, out, sizeof out, 0), PHY_EINVAL);
    }
    /* standard: missing padding / length not a multiple of 4 */
    reject("Zg", 0);
    reject("Zm8", 0);
    reject("Zg=", 0);
    reject("Z", 0);
    reject("Zm9vY", 0);
    /* standard: too much or misplaced padding */
    reject("Z===", 0);
    reject("====", 0);
    reject("Zm9v====", 0);
    reject("Zg==Zg==", 0);
    reject("Z=g=", 0);
    reject("Zm=v", 0);
    reject("Zg=A", 0);
    reject("=Zm9", 0);
    /* url: padding forbidden, impossible length */
    reject("Zg==", 1);
    reject("Zm8=", 1);
    reject("Z", 1);
    reject("Zm9vY", 1);
    /* non-zero trailing bits */
    reject("Zh==", 0);
    reject("Zm9=", 0);
    reject("Zh", 1);
    reject("Zm9", 1);
    reject("Zm9vYh", 1);
    reject("Zm9vYmF", 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc_encode),       cmocka_unit_test(test_rfc_decode),
        cmocka_unit_test(test_url_alphabet),     cmocka_unit_test(test_round_trip_all_lengths),
        cmocka_unit_test(test_encode_too_small), cmocka_unit_test(test_decode_too_small),
        cmocka_unit_test(test_rejections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
