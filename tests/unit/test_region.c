/* Unit tests for hub/region.c's I/O-light parts: region names, inter-region key
 * files and the flag rules of region_setup. */
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
#include <sys/stat.h>
#include <unistd.h>

#include "phy/err.h"
#include "region.h"

struct fx {
    char dir[64];
    char path[128];
    char path2[128];
    char err[256];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_non_null(mkdtemp(test_tmp_template(f->dir, sizeof f->dir, "phy-region-")));
    snprintf(f->path, sizeof f->path, "%s/au.key", f->dir);
    snprintf(f->path2, sizeof f->path2, "%s/uae.key", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    unlink(f->path);
    unlink(f->path2);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static void test_region_names(void **state)
{
    (void)state;
    assert_true(region_name_valid("eu"));
    assert_true(region_name_valid("us-east-2"));
    assert_true(region_name_valid("abcdefghijklmno")); /* 15 */
    assert_false(region_name_valid("abcdefghijklmnop"));
    assert_false(region_name_valid(""));
    assert_false(region_name_valid(NULL));
    assert_false(region_name_valid("EU"));
    assert_false(region_name_valid("e u"));
    assert_false(region_name_valid("eu/"));
}

static void test_key_new_and_load(void **state)
{
    struct fx *f = *state;
    char key[REGION_KEY_MAX + 1], again[REGION_KEY_MAX + 1];
    struct stat st;
    assert_int_equal(region_key_new(f->path, f->err, sizeof f->err), 0);
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(region_key_load(f->path, key, f->err, sizeof f->err), 0);
    assert_true(strlen(key) >= REGION_KEY_MIN);
    /* never overwrites */
    assert_int_equal(region_key_new(f->path, f->err, sizeof f->err), PHY_EEXIST);
    assert_int_equal(region_key_load(f->path, again, f->err, sizeof f->err), 0);
    assert_string_equal(key, again);
    /* two new keys differ */
    assert_int_equal(region_key_new(f->path2, f->err, sizeof f->err), 0);
    assert_int_equal(region_key_load(f->path2, again, f->err, sizeof f->err), 0);
    assert_string_not_equal(key, again);
}

static void test_key_load_refusals(void **state)
{
    struct fx *f = *state;
    char key[REGION_KEY_MAX + 1];
    const char *good = "0123456789abcdef0123456789abcdef\n";
    write_file(f->path, good, 0600);
    assert_int_equal(region_key_load(f->path, key, f->err, sizeof f->err), 0);
    assert_string_equal(key, "0123456789abcdef0123456789abcdef");

    write_file(f->path, good, 0644);
    assert_int_equal(region_key_load(f->path, key, f->err, sizeof f->err), PHY_EINVAL);
    assert_non_null(strstr(f->err, "group or others"));

    write_file(f->path, "short\n", 0600);
    assert_int_equal(region_key_load(f->path, key, f->err, sizeof f->err), PHY_EINVAL);
    write_file(f->path, "0123456789abcdef 0123456789abcdef\n", 0600);
    assert_int_equal(region_key_load(f->path, key, f->err, sizeof f->err), PHY_EINVAL);
    char big[REGION_KEY_MAX + 3];
    memset(big, 'k', REGION_KEY_MAX + 1);
    big[REGION_KEY_MAX + 1] = '\0';
    write_file(f->path, big, 0600);
    assert_int_equal(region_key_load(f->path, key, f->err, sizeof f->err), PHY_EINVAL);
    assert_int_equal(region_key_load("/nonexistent/key", key, f->err, sizeof f->err), PHY_EIO);
}

static int setup_hub(struct hub *h, const char *region, int provisioning)
{
    memset(h, 0, sizeof *h);
    h->cfg.region = (char *)region;
    h->cfg.provisioning = provisioning;
    return 0;
}

static void test_setup_rules(void **state)
{
    struct fx *f = *state;
    struct hub h;
    write_file(f->path, "0123456789abcdef0123456789abcdef\n", 0600);
    write_file(f->path2, "fedcba9876543210fedcba9876543210\n", 0600);
    char peer1[160], peer2[160], same[160];
    snprintf(peer1, sizeof peer1, "au=%s", f->path);
    snprintf(peer2, sizeof peer2, "uae=%s", f->path2);
    snprintf(same, sizeof same, "uae=%s", f->path); /* au's key again */

    /* eu with two peers */
    setup_hub(&h, "eu", 1);
    char *items[] = {peer1, peer2};
    h.cfg.peers.items = items;
    h.cfg.peers.n = 2;
    assert_int_equal(region_setup(&h, f->err, sizeof f->err), 0);
    region_cleanup(&h);
    assert_null(h.region);

    /* one key for two regions is refused (a stolen key must name one region) */
    char *dup[] = {peer1, same};
    h.cfg.peers.items = dup;
    assert_int_equal(region_setup(&h, f->err, sizeof f->err), PHY_EINVAL);
    region_cleanup(&h);

    /* eu's own region as a peer */
    char self[160];
    snprintf(self, sizeof self, "eu=%s", f->path);
    char *selfl[] = {self};
    h.cfg.peers.items = selfl;
    h.cfg.peers.n = 1;
    assert_int_equal(region_setup(&h, f->err, sizeof f->err), PHY_EINVAL);
    region_cleanup(&h);

    /* a regional hub needs eu's URL and its key; --peer is eu's */
    setup_hub(&h, "au", 0);
    assert_int_equal(region_setup(&h, f->err, sizeof f->err), PHY_EINVAL);
    assert_non_null(strstr(f->err, "--provisioning-url"));
    region_cleanup(&h);
    h.cfg.provisioning_url = "http://127.0.0.1:5443";
    h.cfg.inter_region_key_file = f->path;
    assert_int_equal(region_setup(&h, f->err, sizeof f->err), PHY_EINVAL);
    region_cleanup(&h);
    h.cfg.provisioning_url = "https://127.0.0.1:5443/";
    assert_int_equal(region_setup(&h, f->err, sizeof f->err), 0);
    region_cleanup(&h);
    h.cfg.provisioning_url = "https://[::1]:99999";
    assert_int_equal(region_setup(&h, f->err, sizeof f->err), PHY_EINVAL);
    region_cleanup(&h);
    h.cfg.provisioning_url = "https://portal-eu.phystack.com/x";
    assert_int_equal(region_setup(&h, f->err, sizeof f->err), PHY_EINVAL);
    region_cleanup(&h);
    h.cfg.provisioning_url = "https://portal-eu.phystack.com";
    h.cfg.peers.items = items;
    h.cfg.peers.n = 1;
    assert_int_equal(region_setup(&h, f->err, sizeof f->err), PHY_EINVAL);
    region_cleanup(&h);

    /* a bad region name */
    setup_hub(&h, "Au", 0);
    assert_int_equal(region_setup(&h, f->err, sizeof f->err), PHY_EINVAL);
    region_cleanup(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_region_names),
        cmocka_unit_test_setup_teardown(test_key_new_and_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_load_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_setup_rules, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
