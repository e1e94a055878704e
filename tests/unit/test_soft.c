/* Unit tests for hub/store/soft.c: the pending polls' soft state and the registrations'
 * facts they are answered from. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "phy/err.h"
#include "soft.h"

/* A token hash of its own for each n. */
static const char *tok(unsigned n)
{
    static char buf[4][PHY_HASH_HEX_LEN + 1];
    static unsigned k;
    char *b = buf[k++ % 4];
    snprintf(b, PHY_HASH_HEX_LEN + 1, "%064x", n);
    return b;
}

static struct soft_reg facts(const char *serial, int64_t last_poll_ms)
{
    struct soft_reg r = {.code_expires_ms = 0, .interval_s = 5, .last_poll_ms = last_poll_ms,
                         .last_active_ms = last_poll_ms};
    snprintf(r.serial, sizeof r.serial, "%s", serial);
    return r;
}

static void test_put_get_age(void **state)
{
    (void)state;
    struct soft_table *t = soft_new();
    struct soft_reg r = facts("SN-1", 1000), got;
    assert_int_equal(soft_reg_get(t, tok(1), 0, &got), 0); /* nothing yet */
    soft_reg_put(t, tok(1), &r, soft_reg_gen(t), 100);
    assert_int_equal(soft_reg_get(t, tok(1), 100, &got), 1);
    assert_string_equal(got.serial, "SN-1");
    assert_int_equal(got.last_poll_ms, 1000);
    assert_int_equal(soft_reg_get(t, tok(2), 100, &got), 0);
    /* Polls answered from them move their time, not their age. */
    soft_reg_polled(t, tok(1), 10, 6000);
    assert_int_equal(soft_reg_get(t, tok(1), 100 + SOFT_REG_MAX_AGE_MS - 1, &got), 1);
    assert_int_equal(got.last_poll_ms, 6000);
    assert_int_equal(got.last_active_ms, 6000);
    assert_int_equal(got.interval_s, 10);
    soft_reg_polled(t, tok(1), 5, 5000); /* an older poll changes nothing */
    assert_int_equal(soft_reg_get(t, tok(1), 101, &got), 1);
    assert_int_equal(got.last_poll_ms, 6000);
    assert_int_equal(soft_reg_get(t, tok(1), 100 + SOFT_REG_MAX_AGE_MS, &got), 0); /* too old */
    /* A new read starts the age again. */
    soft_reg_put(t, tok(1), &r, soft_reg_gen(t), 100 + SOFT_REG_MAX_AGE_MS);
    assert_int_equal(soft_reg_get(t, tok(1), 100 + SOFT_REG_MAX_AGE_MS, &got), 1);
    assert_int_equal(got.last_poll_ms, 1000);
    soft_free(t);
}

/* A fill from a read that a change overtook is dropped: the change was forgotten
 * before the fill came. */
static void test_forget_and_race(void **state)
{
    (void)state;
    struct soft_table *t = soft_new();
    struct soft_reg a = facts("SN-A", 1), b = facts("SN-B", 1), got;
    uint64_t g = soft_reg_gen(t);
    soft_reg_put(t, tok(1), &a, g, 0);
    soft_reg_put(t, tok(2), &b, g, 0);
    soft_reg_put(t, tok(3), &a, g, 0); /* a second registration of SN-A */
    soft_reg_forget(t, "SN-A");
    assert_int_equal(soft_reg_get(t, tok(1), 0, &got), 0);
    assert_int_equal(soft_reg_get(t, tok(3), 0, &got), 0);
    assert_int_equal(soft_reg_get(t, tok(2), 0, &got), 1);
    soft_reg_put(t, tok(1), &a, g, 0); /* read before the forget: dropped */
    assert_int_equal(soft_reg_get(t, tok(1), 0, &got), 0);
    soft_reg_put(t, tok(1), &a, soft_reg_gen(t), 0); /* read after it: kept */
    assert_int_equal(soft_reg_get(t, tok(1), 0, &got), 1);
    soft_reg_forget(t, "SN-NONE"); /* any forget moves the generation */
    g = soft_reg_gen(t);
    soft_reg_forget(t, NULL);
    assert_int_equal(soft_reg_get(t, tok(1), 0, &got), 0);
    assert_int_equal(soft_reg_get(t, tok(2), 0, &got), 0);
    soft_reg_put(t, tok(2), &b, g, 0);
    assert_int_equal(soft_reg_get(t, tok(2), 0, &got), 0);
    soft_free(t);
}

static void test_off(void **state)
{
    (void)state;
    struct soft_table *t = soft_new();
    struct soft_reg a = facts("SN-A", 1), got;
    soft_reg_put(t, tok(1), &a, soft_reg_gen(t), 0);
    soft_reg_enable(t, 0);
    assert_int_equal(soft_reg_get(t, tok(1), 0, &got), 0);
    soft_reg_put(t, tok(1), &a, soft_reg_gen(t), 0);
    assert_int_equal(soft_reg_get(t, tok(1), 0, &got), 0);
    soft_reg_enable(t, 1); /* on again: nothing from before */
    assert_int_equal(soft_reg_get(t, tok(1), 0, &got), 0);
    soft_reg_put(t, tok(1), &a, soft_reg_gen(t), 0);
    assert_int_equal(soft_reg_get(t, tok(1), 0, &got), 1);
    soft_free(t);
}

/* A full table starts again rather than refusing for good. */
static void test_full(void **state)
{
    (void)state;
    struct soft_table *t = soft_new();
    struct soft_reg a = facts("SN-A", 1), got;
    for (unsigned i = 0; i < SOFT_POLLS_MAX; i++)
        soft_reg_put(t, tok(i), &a, soft_reg_gen(t), 0);
    assert_int_equal(soft_reg_get(t, tok(0), 0, &got), 1);
    assert_int_equal(soft_reg_get(t, tok(SOFT_POLLS_MAX - 1), 0, &got), 1);
    soft_reg_put(t, tok(SOFT_POLLS_MAX), &a, soft_reg_gen(t), 0);
    assert_int_equal(soft_reg_get(t, tok(0), 0, &got), 0);
    assert_int_equal(soft_reg_get(t, tok(SOFT_POLLS_MAX), 0, &got), 0);
    soft_reg_put(t, tok(SOFT_POLLS_MAX), &a, soft_reg_gen(t), 0);
    assert_int_equal(soft_reg_get(t, tok(SOFT_POLLS_MAX), 0, &got), 1);
    soft_free(t);
}

/* The poll times: a later poll replaces, take empties. */
static void test_soft_polls(void **state)
{
    (void)state;
    struct soft_table *t = soft_new();
    struct soft_poll p;
    size_t n = 0;
    assert_int_equal(soft_put(t, tok(1), 5, 1000, 0), 0);
    assert_int_equal(soft_put(t, tok(1), 10, 2000, 0), 0);
    assert_int_equal(soft_put(t, tok(1), 15, 1500, 0), 0); /* older: ignored */
    assert_int_equal(soft_get(t, tok(1), &p), 1);
    assert_int_equal(p.last_poll_ms, 2000);
    assert_int_equal(p.interval_s, 10);
    assert_int_equal(soft_due(t, 999, 1000), 0);
    assert_int_equal(soft_due(t, 1000, 1000), 1);
    struct soft_poll *v = soft_take(t, &n);
    assert_int_equal(n, 1);
    free(v);
    assert_int_equal(soft_get(t, tok(1), &p), 0);
    assert_int_equal(soft_put(t, "short", 5, 1, 0), PHY_EINVAL);
    soft_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_age),
        cmocka_unit_test(test_forget_and_race),
        cmocka_unit_test(test_off),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_soft_polls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
