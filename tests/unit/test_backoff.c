/* Unit tests for agent/backoff.c: ceilings, full-jitter range, overflow safety. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../agent/backoff.h"
#include "phy/protocol.h"

static void test_ceiling_doubles_then_caps(void **state)
{
    (void)state;
    assert_int_equal(agent_backoff_ceiling_ms(1000, 300000, 0), 1000);
    assert_int_equal(agent_backoff_ceiling_ms(1000, 300000, 1), 2000);
    assert_int_equal(agent_backoff_ceiling_ms(1000, 300000, 8), 256000);
    assert_int_equal(agent_backoff_ceiling_ms(1000, 300000, 9), 300000);
    assert_int_equal(agent_backoff_ceiling_ms(1000, 300000, 40), 300000);
}

static void test_ceiling_never_overflows(void **state)
{
    (void)state;
    for (unsigned a = 0; a < 200; a++) {
        uint64_t c = agent_backoff_ceiling_ms(3, 86400000, a);
        assert_true(c >= 3 && c <= 86400000);
    }
    assert_int_equal(agent_backoff_ceiling_ms(UINT64_MAX / 2, UINT64_MAX, 5), UINT64_MAX);
    assert_int_equal(agent_backoff_ceiling_ms(1, UINT64_MAX, 63), UINT64_MAX);
    assert_int_equal(agent_backoff_ceiling_ms(1, UINT64_MAX, 62), (uint64_t)1 << 62);
}

static void test_base_above_cap(void **state)
{
    (void)state;
    assert_int_equal(agent_backoff_ceiling_ms(5000, 1000, 0), 1000);
    assert_int_equal(agent_backoff_ceiling_ms(1000, 1000, 3), 1000);
}

static void test_delay_within_zero_and_ceiling(void **state)
{
    static const uint64_t rnds[] = {0, 1, 999, 1000, 1001, 123456789, UINT64_MAX - 1, UINT64_MAX};

    (void)state;
    for (unsigned a = 0; a < 12; a++) {
        uint64_t ceiling = agent_backoff_ceiling_ms(1000, 300000, a);
        for (size_t i = 0; i < sizeof rnds / sizeof rnds[0]; i++)
            assert_true(agent_backoff_delay_ms(1000, 300000, a, rnds[i]) <= ceiling);
    }
    /* both ends of the range are reachable */
    assert_int_equal(agent_backoff_delay_ms(1000, 300000, 0, 0), 0);
    assert_int_equal(agent_backoff_delay_ms(1000, 300000, 0, 1000), 1000);
    assert_int_equal(agent_backoff_delay_ms(1000, 300000, 0, 1001), 0);
    assert_int_equal(agent_backoff_delay_ms(1, UINT64_MAX, 63, 77), 77);
}

static void test_delay_spreads(void **state)
{
    /* A crude uniformity check with a fixed LCG: every tenth of the range is hit. */
    uint64_t x = 42;
    int bucket[10] = {0};

    (void)state;
    for (int i = 0; i < 10000; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        bucket[agent_backoff_delay_ms(1000, 300000, 3, x) * 10 / 8001]++;
    }
    for (int b = 0; b < 10; b++)
        assert_true(bucket[b] > 700 && bucket[b] < 1300);
}

static void test_retry_after(void **state)
{
    (void)state;
    assert_int_equal(agent_retry_after_ms("1", 1), 1000);
    assert_int_equal(agent_retry_after_ms(" 30 ", 4), 30000);
    assert_int_equal(agent_retry_after_ms("99999", 5), AGENT_RETRY_AFTER_MAX_S * 1000);
    assert_int_equal(agent_retry_after_ms("0", 1), 0);
    assert_int_equal(agent_retry_after_ms("", 0), 0);
    assert_int_equal(agent_retry_after_ms("-1", 2), 0);
    assert_int_equal(agent_retry_after_ms("1.5", 3), 0);
    assert_int_equal(agent_retry_after_ms("Wed, 21 Oct 2026 07:28:00 GMT", 29), 0);
    assert_int_equal(agent_retry_after_ms("1234567890123456789", 19), 0);
    /* honoured: at least the hint, spread over as long again */
    assert_int_equal(agent_backoff_at_least_ms(5000, 1000, 7), 5000);
    for (uint64_t r = 0; r < 5000; r += 7) {
        uint64_t d = agent_backoff_at_least_ms(200, 1000, r * 2654435761u);
        assert_true(d >= 1000 && d <= 2000);
    }
    assert_int_equal(agent_backoff_at_least_ms(200, 1000, 0), 1000);
    assert_int_equal(agent_backoff_at_least_ms(200, 1000, 1000), 2000);
}

/* A stopping hub's close reason: the delay after its key, anywhere in the payload
 * (wslay's close payload starts with the two status bytes). */
static void test_reconnect_hint(void **state)
{
    (void)state;
    uint64_t ms = 7;
    static const char with_code[] = "\x03\xe9hub stopping; reconnect_after_ms=4321";
    assert_int_equal(agent_reconnect_hint_ms(with_code, sizeof with_code - 1, &ms), 1);
    assert_int_equal(ms, 4321);
    assert_int_equal(agent_reconnect_hint_ms("reconnect_after_ms=0", 20, &ms), 1);
    assert_int_equal(ms, 0);
    assert_int_equal(agent_reconnect_hint_ms("reconnect_after_ms=999999999", 28, &ms), 1);
    assert_int_equal(ms, PHY_RECONNECT_AFTER_MAX_MS); /* capped */
    ms = 7;
    assert_int_equal(agent_reconnect_hint_ms("hub shutting down", 17, &ms), 0);
    assert_int_equal(agent_reconnect_hint_ms("reconnect_after_ms=", 19, &ms), 0);
    assert_int_equal(agent_reconnect_hint_ms("reconnect_after_ms=x1", 21, &ms), 0);
    assert_int_equal(agent_reconnect_hint_ms("reconnect_after_ms=1234567890", 29, &ms), 0);
    /* the length bounds the search: the digits past n are not read */
    assert_int_equal(agent_reconnect_hint_ms("reconnect_after_ms=12", 20, &ms), 1);
    assert_int_equal(ms, 1);
    assert_int_equal(agent_reconnect_hint_ms(NULL, 0, &ms), 0);
    /* the wait: the hint plus [0, jitter] */
    assert_int_equal(agent_backoff_hinted_ms(1000, 500, 0), 1000);
    assert_int_equal(agent_backoff_hinted_ms(1000, 500, 500), 1500);
    assert_int_equal(agent_backoff_hinted_ms(1000, 500, 501), 1000);
    assert_int_equal(agent_backoff_hinted_ms(1000, 0, 12345), 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ceiling_doubles_then_caps),
        cmocka_unit_test(test_ceiling_never_overflows),
        cmocka_unit_test(test_base_above_cap),
        cmocka_unit_test(test_delay_within_zero_and_ceiling),
        cmocka_unit_test(test_delay_spreads),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_reconnect_hint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
