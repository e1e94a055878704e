/* Unit tests for hub/tickets.c's key file text: parse and format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "phy/err.h"
#include "tickets.h"

#define K1 "000102030405060708090a0b0c0d0e0f" /* name */                                        \
           "101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"                \
           "303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f"
#define K2 "ff0102030405060708090a0b0c0d0e0f"                                                   \
           "aa1112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"                \
           "bb3132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f"

static void test_parse_and_format(void **state)
{
    (void)state;
    struct ticket_keys k;
    char err[128], text[TICKET_FILE_MAX + 1];
    assert_int_equal(ticket_keys_parse(K1 "\n", &k, err, sizeof err), 0);
    assert_int_equal(k.n, 1);
    assert_int_equal(k.k[0].name[15], 0x0f);
    assert_int_equal(k.k[0].hmac[0], 0x10);
    assert_int_equal(k.k[0].aes[31], 0x4f);
    assert_int_equal(ticket_keys_parse(K2 "\n" K1, &k, err, sizeof err), 0); /* last newline optional */
    assert_int_equal(k.n, 2);
    assert_int_equal(k.k[0].name[0], 0xff);
    ticket_keys_format(&k, text);
    assert_string_equal(text, K2 "\n" K1 "\n");
}

static void test_refused(void **state)
{
    (void)state;
    struct ticket_keys k;
    char err[128];
    static const char *const bad[] = {
        "",
        "\n",
        K1 "0\n",
        "0" K1 "\n",
        K1 "\n" K2 "\n" K1 "\n", /* more than two */
        K1 "\n" K1 "\n",         /* one name twice */
        K1 " \n",
        K1 "\n\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (ticket_keys_parse(bad[i], &k, err, sizeof err) != PHY_EINVAL)
            fail_msg("accepted case %zu", i);
    char upper[] = K1;
    upper[5] = 'A';
    assert_int_equal(ticket_keys_parse(upper, &k, err, sizeof err), PHY_EINVAL);
    assert_non_null(strstr(err, "lowercase hex"));
    char nonhex[] = K1;
    nonhex[100] = 'g';
    assert_int_equal(ticket_keys_parse(nonhex, &k, err, sizeof err), PHY_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_format),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
