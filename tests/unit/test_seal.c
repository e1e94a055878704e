/* hub/seal.c: sealing under the key ratchet, re-sealing, advancing (crypto-shredding)
 * and the ratchet file (creation, reload, damage, two nodes sharing one copy). */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "phy/crypto.h"
#include "phy/err.h"
#include "seal.h"
#include "testutil.h"

#define EPOCH_MS 10000
#define T0 (1000LL * EPOCH_MS + 1234) /* some instant inside epoch 1000 */
#define BODY "{\"status\":\"provisioned\",\"device_id\":\"dev_a\",\"device_secret\":\"s\"}"

struct fx {
    char dir[64], path[128];
    unsigned char key[PHY_AEAD_KEY_LEN];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_non_null(mkdtemp(test_tmp_template(f->dir, sizeof f->dir, "physeal.")));
    snprintf(f->path, sizeof f->path, "%s/hub.key.ratchet", f->dir);
    memset(f->key, 0x42, sizeof f->key);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static struct seal_ring *ring(struct fx *f, int64_t now, int create)
{
    struct seal_ring *r = NULL;
    char err[256];
    int rc = seal_ring_open(&r, f->path, f->key, EPOCH_MS, now, create, err, sizeof err);
    if (rc != 0)
        fail_msg("seal_ring_open: %s", err);
    return r;
}

/* Opens a body into a string; the length or the negative error. */
static int open_str(struct seal_ring *r, int64_t now, const char *id, const unsigned char *b,
                    size_t n, char *out, size_t cap)
{
    int len = seal_open(r, now, id, b, n, (unsigned char *)out, cap - 1);
    if (len >= 0)
        out[len] = '\0';
    return len;
}

static void test_round_trip_and_binding(void **state)
{
    struct fx *f = *state;
    struct seal_ring *r = ring(f, T0, 1);
    char out[256];
    size_t n = 0;
    struct stat st;
    unsigned char *b = seal_seal(r, T0, "dev_a", BODY, strlen(BODY), &n);
    assert_non_null(b);
    assert_int_equal(n, strlen(BODY) + SEAL_OVERHEAD);
    assert_int_equal(open_str(r, T0, "dev_a", b, n, out, sizeof out), (int)strlen(BODY));
    assert_string_equal(out, BODY);
    /* bound to the device ID and to every byte, header included */
    assert_int_equal(open_str(r, T0, "dev_b", b, n, out, sizeof out), PHY_ECRYPTO);
    for (size_t i = 0; i < n; i += 7) {
        b[i] ^= 1;
        assert_true(open_str(r, T0, "dev_a", b, n, out, sizeof out) < 0);
        b[i] ^= 1;
    }
    /* the file is private, and the base starts KEEP epochs back */
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(seal_base(r), 1000 - SEAL_KEEP_EPOCHS);
    free(b);
    seal_ring_close(r);
}

static void test_advance_shreds_old_epochs(void **state)
{
    struct fx *f = *state;
    struct seal_ring *r = ring(f, T0, 1);
    char out[256], err[256];
    size_t n = 0, n2 = 0;
    unsigned char *old = seal_seal(r, T0, "dev_a", BODY, strlen(BODY), &n);
    assert_non_null(old);
    /* one epoch later: not stale yet, nothing to drop */
    assert_int_equal(seal_is_stale(r, T0 + EPOCH_MS, old, n), 0);
    assert_int_equal(seal_advance(r, T0 + EPOCH_MS, err, sizeof err), 1);
    assert_int_equal(open_str(r, T0 + EPOCH_MS, "dev_a", old, n, out, sizeof out),
                     (int)strlen(BODY));
    /* two epochs later it is stale: re-sealed, the new body opens after the advance */
    int64_t t2 = T0 + 2 * EPOCH_MS;
    assert_int_equal(seal_is_stale(r, t2, old, n), 1);
    unsigned char *fresh = seal_reseal(r, t2, "dev_a", old, n, &n2);
    assert_non_null(fresh);
    assert_int_equal(seal_is_stale(r, t2, fresh, n2), 0);
    assert_int_equal(seal_advance(r, t2, err, sizeof err), 1);
    assert_int_equal(seal_base(r), 1002 - SEAL_KEEP_EPOCHS);
    assert_int_equal(open_str(r, t2, "dev_a", fresh, n2, out, sizeof out), (int)strlen(BODY));
    /* three epochs later the old body's key is gone, in memory and on disk */
    int64_t t3 = T0 + 3 * EPOCH_MS;
    assert_int_equal(seal_advance(r, t3, err, sizeof err), 1);
    assert_int_equal(open_str(r, t3, "dev_a", old, n, out, sizeof out), PHY_ENOTFOUND);
    assert_int_equal(seal_reseal(r, t3, "dev_a", old, n, &n2) == NULL, 1);
    seal_ring_close(r);
    r = ring(f, t3, 0);
    assert_int_equal(seal_base(r), 1003 - SEAL_KEEP_EPOCHS);
    assert_int_equal(open_str(r, t3, "dev_a", old, n, out, sizeof out), PHY_ENOTFOUND);
    assert_int_equal(open_str(r, t3, "dev_a", fresh, n2, out, sizeof out), (int)strlen(BODY));
    /* never backwards, also when the clock is */
    assert_int_equal(seal_advance(r, T0, err, sizeof err), 0);
    assert_int_equal(seal_base(r), 1003 - SEAL_KEEP_EPOCHS);
    free(old);
    free(fresh);
    seal_ring_close(r);
}

/* Two nodes with copies of one ratchet file derive the same keys, whichever has
 * advanced; a node with a ratchet of its own cannot open their bodies. */
static void test_two_nodes_and_foreign(void **state)
{
    struct fx *f = *state;
    struct seal_ring *a = ring(f, T0, 1), *b, *c;
    char copy[160], other[160], out[256], err[256];
    unsigned char file[128];
    size_t n = 0;
    int fd;
    snprintf(copy, sizeof copy, "%s/node-b.ratchet", f->dir);
    fd = open(f->path, O_RDONLY);
    assert_int_equal(read(fd, file, sizeof file), (ssize_t)sizeof file);
    close(fd);
    assert_int_equal(phy_secret_file_create("copy", copy, file, sizeof file, err, sizeof err), 0);
    assert_int_equal(seal_ring_open(&b, copy, f->key, EPOCH_MS, T0, 0, err, sizeof err), 0);
    /* node b is one epoch ahead and has advanced; a seals at its own (earlier) time */
    assert_int_equal(seal_advance(b, T0 + EPOCH_MS, err, sizeof err), 1);
    unsigned char *body = seal_seal(a, T0, "dev_a", BODY, strlen(BODY), &n);
    assert_non_null(body);
    assert_int_equal(open_str(b, T0 + EPOCH_MS, "dev_a", body, n, out, sizeof out),
                     (int)strlen(BODY));
    free(body);
    body = seal_seal(b, T0 + EPOCH_MS, "dev_a", BODY, strlen(BODY), &n);
    assert_int_equal(open_str(a, T0, "dev_a", body, n, out, sizeof out), (int)strlen(BODY));
    /* a node that made its own ratchet */
    snprintf(other, sizeof other, "%s/node-c.ratchet", f->dir);
    assert_int_equal(seal_ring_open(&c, other, f->key, EPOCH_MS, T0, 1, err, sizeof err), 0);
    assert_int_equal(seal_is_foreign(c, body, n), 1);
    assert_int_equal(seal_is_foreign(a, body, n), 0);
    assert_int_equal(open_str(c, T0, "dev_a", body, n, out, sizeof out), PHY_ECRYPTO);
    free(body);
    seal_ring_close(a);
    seal_ring_close(b);
    seal_ring_close(c);
    unlink(copy);
    unlink(other);
}

/* Bodies sealed before the ratchet (under the key file, AAD = device ID) still open
 * and are stale, so the first sweep re-seals them. */
static void test_legacy_body(void **state)
{
    struct fx *f = *state;
    struct seal_ring *r = ring(f, T0, 1);
    unsigned char legacy[256];
    char out[256];
    size_t n2 = 0;
    int n = phy_aead_seal(f->key, "dev_a", 5, BODY, strlen(BODY), legacy, sizeof legacy);
    assert_true(n > 0);
    assert_int_equal(open_str(r, T0, "dev_a", legacy, (size_t)n, out, sizeof out),
                     (int)strlen(BODY));
    assert_int_equal(seal_is_stale(r, T0, legacy, (size_t)n), 1);
    unsigned char *fresh = seal_reseal(r, T0, "dev_a", legacy, (size_t)n, &n2);
    assert_non_null(fresh);
    assert_int_equal(seal_is_stale(r, T0, fresh, n2), 0);
    assert_int_equal(open_str(r, T0, "dev_a", fresh, n2, out, sizeof out), (int)strlen(BODY));
    free(fresh);
    seal_ring_close(r);
}

/* A torn advance leaves one whole slot; a file with none, a missing file (without
 * create) and a group-readable file are refused with a message. */
static void test_file_damage(void **state)
{
    struct fx *f = *state;
    struct seal_ring *r = ring(f, T0, 1);
    char err[256];
    unsigned char junk[64];
    int fd;
    assert_int_equal(seal_advance(r, T0 + 5 * EPOCH_MS, err, sizeof err), 1);
    seal_ring_close(r);
    memset(junk, 0xAA, sizeof junk);
    fd = open(f->path, O_WRONLY);
    assert_int_equal(pwrite(fd, junk, sizeof junk, 64), (ssize_t)sizeof junk); /* slot 1 torn */
    close(fd);
    r = ring(f, T0 + 5 * EPOCH_MS, 0);
    assert_int_equal(seal_base(r), 1005 - SEAL_KEEP_EPOCHS);
    seal_ring_close(r);
    fd = open(f->path, O_WRONLY);
    assert_int_equal(pwrite(fd, junk, sizeof junk, 0), (ssize_t)sizeof junk);
    close(fd);
    assert_int_equal(seal_ring_open(&r, f->path, f->key, EPOCH_MS, T0, 1, err, sizeof err),
                     PHY_EINVAL);
    assert_non_null(strstr(err, "damaged"));
    assert_int_equal(chmod(f->path, 0640), 0);
    assert_int_equal(seal_ring_open(&r, f->path, f->key, EPOCH_MS, T0, 1, err, sizeof err),
                     PHY_EINVAL);
    assert_non_null(strstr(err, "chmod 600"));
    unlink(f->path);
    assert_int_equal(seal_ring_open(&r, f->path, f->key, EPOCH_MS, T0, 0, err, sizeof err),
                     PHY_ENOTFOUND);
    assert_int_equal(seal_ring_open(&r, f->path, f->key, 999, T0, 1, err, sizeof err), PHY_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip_and_binding, setup, teardown),
        cmocka_unit_test_setup_teardown(test_advance_shreds_old_epochs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_nodes_and_foreign, setup, teardown),
        cmocka_unit_test_setup_teardown(test_legacy_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_damage, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
