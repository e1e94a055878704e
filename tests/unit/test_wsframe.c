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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_lengths),
        cmocka_unit_test(test_parse_what_a_server_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
