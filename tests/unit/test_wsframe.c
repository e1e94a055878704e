/* Unit tests for lib/wsframe.c: frame headers of every length class, masked and not,
 * and the client-side parser on what the encoder and the hub write. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "phy/err.h"
#include "phy/wsframe.h"

static void test_header_lengths(void **state)
{
    static const struct {
        uint64_t len;
        size_t hl;
    } cases[] = {{0, 2}, {125, 2}, {126, 4}, {65535, 4}, {65536, 10}, {1ull << 40, 10}};
    uint8_t h[WSF_MAX_HEADER];
    const uint8_t mask[4] = {1, 2, 3, 4};

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(wsf_header(h, WSF_TEXT, cases[i].len, NULL), cases[i].hl);
        assert_int_equal(h[0], 0x81);
        assert_int_equal(h[1] & 0x80, 0);
        assert_int_equal(wsf_header(h, WSF_PING, cases[i].len, mask), cases[i].hl + 4);
        assert_int_equal(h[0], 0x89);
        assert_int_equal(h[1] & 0x80, 0x80);
        assert_memory_equal(h + cases[i].hl, mask, 4);
    }
    wsf_header(h, WSF_TEXT, 65536, NULL);
    assert_int_equal(h[1], 127);
    assert_int_equal(h[7], 1); /* big-endian 0x10000 */
    assert_int_equal(h[8], 0);
    wsf_header(h, WSF_TEXT, 300, NULL);
    assert_int_equal(h[1], 126);
    assert_int_equal(h[2] << 8 | h[3], 300);
}

static void test_parse_what_a_server_writes(void **state)
{
    uint8_t buf[70000];
    struct wsf_frame f;
    size_t lens[] = {0, 5, 126, 65536};

    (void)state;
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t hl = wsf_header(buf, WSF_TEXT, lens[i], NULL);
        memset(buf + hl, 'x', lens[i]);
        assert_int_equal(wsf_parse(buf, hl + lens[i], 1 << 20, &f), (int)(hl + lens[i]));
        assert_int_equal(f.len, lens[i]);
        assert_true(f.fin);
        assert_int_equal(f.opcode, WSF_TEXT);
        if (hl + lens[i] > 1)
            assert_int_equal(wsf_parse(buf, hl + lens[i] - 1, 1 << 20, &f), PHY_EAGAIN);
    }
    /* A masked frame is a client's: refused from a server. */
    const uint8_t mask[4] = {9, 9, 9, 9};
    int n = wsf_encode(WSF_TEXT, (const uint8_t *)"hi", 2, mask, buf, sizeof buf);
    assert_int_equal(n, 8);
    assert_int_equal(wsf_parse(buf, (size_t)n, 1 << 20, &f), PHY_EPROTO);
    assert_int_equal(buf[6], 'h' ^ 9);
}

static void test_client_header_check(void **state)
{
    const char *why = NULL;
    uint64_t len = 0;
    uint8_t h[WSF_MAX_HEADER];
    const uint8_t mask[4] = {1, 2, 3, 4};

    (void)state;
    size_t hl = wsf_header(h, WSF_TEXT, 300, mask);
    assert_int_equal(wsf_check_client_header(h, hl, 0, 65536, &len, &why), 0);
    assert_int_equal(len, 300);
    assert_int_equal(wsf_check_client_header(h, hl, 1, 65536, &len, &why), 1002); /* in a message */
    assert_int_equal(wsf_check_client_header(h, hl, 0, 299, &len, &why), 1009);
    hl = wsf_header(h, WSF_TEXT, 300, NULL);
    assert_int_equal(wsf_check_client_header(h, hl, 0, 65536, &len, &why), 1002); /* unmasked */
    hl = wsf_header(h, WSF_PING, 125, mask);
    assert_int_equal(wsf_check_client_header(h, hl, 1, 65536, &len, &why), 0); /* between fragments */
    h[0] &= 0x7f; /* not final */
    assert_int_equal(wsf_check_client_header(h, hl, 0, 65536, &len, &why), 1002);
    hl = wsf_header(h, WSF_CLOSE, 1, mask);
    assert_int_equal(wsf_check_client_header(h, hl, 0, 65536, &len, &why), 1002);
    hl = wsf_header(h, WSF_CONT, 3, mask);
    assert_int_equal(wsf_check_client_header(h, hl, 0, 65536, &len, &why), 1002);
    assert_int_equal(wsf_check_client_header(h, hl, 1, 65536, &len, &why), 0);
    /* 126-form holding 5: not minimal */
    const uint8_t nm[] = {0x81, 0x80 | 126, 0, 5, 1, 2, 3, 4};
    assert_int_equal(wsf_check_client_header(nm, sizeof nm, 0, 65536, &len, &why), 1002);
    const uint8_t top[] = {0x81, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    assert_int_equal(wsf_check_client_header(top, sizeof top, 0, 65536, &len, &why), 1002);
    const uint8_t rsv[] = {0xC1, 0x80, 1, 2, 3, 4};
    assert_int_equal(wsf_check_client_header(rsv, sizeof rsv, 0, 65536, &len, &why), 1002);
    const uint8_t op3[] = {0x83, 0x80, 1, 2, 3, 4};
    assert_int_equal(wsf_check_client_header(op3, sizeof op3, 0, 65536, &len, &why), 1002);
}

static void test_accept_value(void **state)
{
    (void)state;
    char acc[WSF_ACCEPT_LEN + 1];
    char long_key[80];
    /* RFC 6455 section 1.3's example; only the key's n bytes count. */
    assert_int_equal(wsf_accept("dGhlIHNhbXBsZSBub25jZQ==tail", 24, acc), 0);
    assert_string_equal(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_int_equal(wsf_accept("x2hlIHNhbXBsZSBub25jZQ==", 24, acc), 0);
    assert_string_not_equal(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    memset(long_key, 'A', sizeof(long_key));
    assert_int_equal(wsf_accept(long_key, 64, acc), 0);
    assert_int_equal(wsf_accept(long_key, 65, acc), PHY_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_lengths),
        cmocka_unit_test(test_parse_what_a_server_writes),
        cmocka_unit_test(test_client_header_check),
        cmocka_unit_test(test_accept_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
