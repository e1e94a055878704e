/* Unit tests for hub/store/announce.c: the lines hub nodes announce to each other. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "announce.h"
#include "phy/err.h"

#define DEV "dev_abcdefghijklmnopqrstuvwxyz"
#define HASH "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void round_trip(const struct store_announce *a, const char *want)
{
    char line[STORE_ANNOUNCE_MAX];
    struct store_announce b;
    assert_int_equal(store_announce_format(a, line), (int)strlen(want));
    assert_string_equal(line, want);
    assert_int_equal(store_announce_parse(line, &b), 0);
    assert_memory_equal(a, &b, sizeof b);
}

static void test_each_kind(void **state)
{
    (void)state;
    struct store_announce a;
    memset(&a, 0, sizeof a);
    strcpy(a.node, "hub-1:8443");
    a.kind = ANNOUNCE_DESIRED;
    a.tenant_id = 7;
    strcpy(a.device_id, DEV);
    a.n = 42;
    round_trip(&a, "hub-1:8443 d 7 " DEV " 42");
    memset(&a, 0, sizeof a);
    strcpy(a.node, "n");
    a.kind = ANNOUNCE_FLEET;
    a.tenant_id = 123456789012345678;
    round_trip(&a, "n f 123456789012345678");
    memset(&a, 0, sizeof a);
    strcpy(a.node, "n");
    a.kind = ANNOUNCE_CLOSE;
    a.tenant_id = 3;
    strcpy(a.device_id, DEV);
    a.n = 4002;
    round_trip(&a, "n c 3 " DEV " 4002");
    a.kind = ANNOUNCE_DEVICE;
    a.n = 0;
    strcpy(a.what, "tags");
    round_trip(&a, "n v 3 " DEV " tags");
    memset(a.what, 0, sizeof a.what);
    a.tenant_id = 0;
    a.kind = ANNOUNCE_SESSION;
    a.n = 9;
    round_trip(&a, "n s " DEV " 9");
    memset(&a, 0, sizeof a);
    strcpy(a.node, "n");
    a.kind = ANNOUNCE_LOGOUT;
    strcpy(a.session_hash, HASH);
    round_trip(&a, "n l " HASH);
    memset(&a, 0, sizeof a);
    strcpy(a.node, "n");
    a.kind = ANNOUNCE_REGISTRATION;
    strcpy(a.serial, "SN-0042_a.b");
    round_trip(&a, "n r SN-0042_a.b");
    memset(a.serial, 0, sizeof a.serial);
    strcpy(a.serial, "*");
    round_trip(&a, "n r *");
}

static void test_refused(void **state)
{
    (void)state;
    struct store_announce a;
    char line[STORE_ANNOUNCE_MAX];
    static const char *const bad[] = {
        "",
        "n",
        "n d",
        "n x 1",
        "n f 0",
        "n f -1",
        "n f 01",
        "n f 1 ",
        "n f 1 2",
        " n f 1",
        "n  f 1",
        "n f 1234567890123456789",
        "a b f 1",
        "n d 1 " DEV,
        "n d 1 dev_x 2 3",
        "n c " DEV,
        "n c 1 " DEV,
        "n c 1 dev\x01" " 1",
        "n v 1 " DEV " color",
        "n v 1 " DEV,
        "n v 1 " DEV " state x",
        "n l 0123",
        "n l " HASH "0",
        "n\tf 1",
        "n r",
        "n r SN 1",
        "n r **",
        "n r SN*",
        "n r SN/1",
        "n r 0123456789012345678901234567890123456789012345678901234567890123X",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (store_announce_parse(bad[i], &a) != PHY_EINVAL)
            fail_msg("accepted: \"%s\"", bad[i]);
    }
    memset(&a, 0, sizeof a);
    strcpy(a.node, "bad node");
    a.kind = ANNOUNCE_FLEET;
    a.tenant_id = 1;
    assert_int_equal(store_announce_format(&a, line), PHY_EINVAL);
    strcpy(a.node, "n");
    a.tenant_id = 0;
    assert_int_equal(store_announce_format(&a, line), PHY_EINVAL);
    a.kind = (enum store_announce_kind)'z';
    assert_int_equal(store_announce_format(&a, line), PHY_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_kind),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
