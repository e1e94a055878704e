/* Unit tests for lib/file.c: bounded whole-file reads and directory fsyncs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "phy/err.h"
#include "phy/file.h"

static void test_read_regular(void **state)
{
    (void)state;
    char dir[64], path[96], *out = NULL;
    size_t len = 0;
    assert_non_null(mkdtemp(test_tmp_template(dir, sizeof dir, "phy-file-")));
    snprintf(path, sizeof path, "%s/f", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("hello", f);
    fclose(f);

    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(phy_read_regular(fd, 5, &out, &len), 0);
    assert_int_equal(len, 5);
    assert_string_equal(out, "hello"); /* NUL-terminated */
    free(out);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    assert_int_equal(phy_read_regular(fd, 4, &out, &len), PHY_ETOOBIG);
    close(fd);

    fd = open(dir, O_RDONLY | O_DIRECTORY);
    assert_true(fd >= 0);
    assert_int_equal(phy_read_regular(fd, 100, &out, &len), PHY_EINVAL);
    close(fd);

    assert_int_equal(phy_fsync_dir(dir), 0);
    assert_int_equal(phy_fsync_parent(path), 0);
    assert_int_equal(phy_fsync_parent("relative-name"), 0); /* "." */
    assert_int_equal(phy_fsync_dir("/nonexistent-phy-dir"), PHY_EIO);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_read_regular)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
