/* Unit tests for hub/events.c's bookkeeping: ended console sessions, streams per caller and tenant (no I/O). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"

static void hash_of(unsigned i, char out[PHY_HASH_HEX_LEN + 1])
{
    snprintf(out, PHY_HASH_HEX_LEN + 1, "%064x", i);
}

static void test_logout_is_remembered(void **state)
{
    (void)state;
    struct events *s = calloc(1, sizeof(*s));
    char a[PHY_HASH_HEX_LEN + 1], b[PHY_HASH_HEX_LEN + 1];
    assert_non_null(s);
    hash_of(1, a);
    hash_of(2, b);
    assert_false(events_session_ended(s, a));
    events_end_session(s, a); /* no stream open: only remembered */
    assert_true(events_session_ended(s, a));
    assert_false(events_session_ended(s, b));
    size_t by_key = 9, by_tenant = 9;
    events_count(s, a, 1, &by_key, &by_tenant);
    assert_int_equal(by_key, 0);
    assert_int_equal(by_tenant, 0);
    free(s);
}

static void test_ring_keeps_the_latest(void **state)
{
    (void)state;
    struct events *s = calloc(1, sizeof(*s));
    char h[PHY_HASH_HEX_LEN + 1];
    assert_non_null(s);
    for (unsigned i = 1; i <= EVENTS_ENDED + 10; i++) {
        hash_of(i, h);
        events_end_session(s, h);
    }
    for (unsigned i = 1; i <= 10; i++) { /* pushed out */
        hash_of(i, h);
        assert_false(events_session_ended(s, h));
    }
    for (unsigned i = 11; i <= EVENTS_ENDED + 10; i++) {
        hash_of(i, h);
        assert_true(events_session_ended(s, h));
    }
    free(s);
}

static void test_streams_counted_per_caller_and_tenant(void **state)
{
    (void)state;
    struct events *s = calloc(1, sizeof(*s));
    struct stream c[4];
    char a[PHY_HASH_HEX_LEN + 1], b[PHY_HASH_HEX_LEN + 1];
    size_t by_key, by_tenant;
    assert_non_null(s);
    memset(c, 0, sizeof(c));
    hash_of(1, a);
    hash_of(2, b);
    for (int i = 0; i < 4; i++) { /* a: 2 streams of tenant 7, b: one of 7, one of 8 */
        memcpy(c[i].auth.key, i < 2 ? a : b, sizeof(a));
        c[i].auth.tenant_id = i < 3 ? 7 : 8;
        c[i].next = s->streams;
        s->streams = &c[i];
    }
    events_count(s, a, 7, &by_key, &by_tenant);
    assert_int_equal(by_key, 2);
    assert_int_equal(by_tenant, 3);
    events_count(s, b, 8, &by_key, &by_tenant);
    assert_int_equal(by_key, 2);
    assert_int_equal(by_tenant, 1);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logout_is_remembered),
        cmocka_unit_test(test_ring_keeps_the_latest),
        cmocka_unit_test(test_streams_counted_per_caller_and_tenant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
