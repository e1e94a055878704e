/* Unit tests for lib/crypto.c: identifiers, codes, serials, hashes, AEAD, key files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "phy/base64.h"
#include "phy/crypto.h"
#include "phy/err.h"

static void test_random_bytes(void **state)
{
    unsigned char a[32], b[32];
    (void)state;
    assert_int_equal(phy_random_bytes(a, sizeof a), 0);
    assert_int_equal(phy_random_bytes(b, sizeof b), 0);
    assert_memory_not_equal(a, b, sizeof a);
    assert_int_equal(phy_random_bytes(a, 0), 0);
}

static void test_token(void **state)
{
    char t1[PHY_TOKEN_LEN + 1], t2[PHY_TOKEN_LEN + 1];
    unsigned char raw[40];
    (void)state;
    assert_int_equal(phy_token_new(t1), 0);
    assert_int_equal(phy_token_new(t2), 0);
    assert_int_equal(strlen(t1), PHY_TOKEN_LEN);
    assert_string_not_equal(t1, t2);
    for (size_t i = 0; i < PHY_TOKEN_LEN; i++) {
        char c = t1[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_';
        assert_true(ok);
    }
    assert_int_equal(phy_base64_decode(t1, PHY_TOKEN_LEN, raw, sizeof raw, 1), 32);
}

static void test_device_id(void **state)
{
    char id[PHY_DEVICE_ID_LEN + 1], id2[PHY_DEVICE_ID_LEN + 1];
    const char *alpha = "abcdefghijklmnopqrstuvwxyz234567";
    int last_low_bits_set = 0;
    (void)state;
    for (int round = 0; round < 200; round++) {
        assert_int_equal(phy_device_id_new(id), 0);
        assert_int_equal(strlen(id), PHY_DEVICE_ID_LEN);
        assert_memory_equal(id, "dev_", 4);
        for (size_t i = 4; i < PHY_DEVICE_ID_LEN; i++)
            assert_non_null(strchr(alpha, id[i]));
        /* the 26th char carries 3 bits: its two low bits are always zero */
        last_low_bits_set |= (int)(strchr(alpha, id[PHY_DEVICE_ID_LEN - 1]) - alpha) & 3;
    }
    assert_int_equal(last_low_bits_set, 0);
    assert_int_equal(phy_device_id_new(id2), 0);
    assert_string_not_equal(id, id2);
}

static void test_code_alphabet(void **state)
{
    char code[PHY_CODE_LEN + 1];
    (void)state;
    assert_int_equal(strlen(PHY_CODE_ALPHABET), 31);
    for (const char *bad = "0O1IL"; *bad; bad++)
        assert_null(strchr(PHY_CODE_ALPHABET, *bad));
    for (int round = 0; round < 1000; round++) {
        assert_int_equal(phy_code_new(code), 0);
        assert_int_equal(strlen(code), PHY_CODE_LEN);
        for (size_t i = 0; i < PHY_CODE_LEN; i++) {
            assert_non_null(strchr(PHY_CODE_ALPHABET, code[i]));
            assert_null(strchr("0O1IL", code[i]));
        }
    }
}

static void test_code_distribution(void **state)
{
    /* 31000 symbols: expected 1000 per symbol, sd ~31; 800..1200 is > 6 sd. */
    unsigned counts[31] = {0};
    char code[PHY_CODE_LEN + 1];
    size_t drawn = 0;
    (void)state;
    while (drawn < 31000) {
        assert_int_equal(phy_code_new(code), 0);
        for (size_t i = 0; i < PHY_CODE_LEN && drawn < 31000; i++, drawn++) {
            const char *p = strchr(PHY_CODE_ALPHABET, code[i]);
            assert_non_null(p);
            counts[p - PHY_CODE_ALPHABET]++;
        }
    }
    for (size_t i = 0; i < 31; i++) {
        if (counts[i] < 800 || counts[i] > 1200)
            fail_msg("symbol %c drawn %u times of 31000", PHY_CODE_ALPHABET[i], counts[i]);
    }
}

static void test_code_normalize(void **state)
{
    char out[PHY_CODE_LEN + 1];
    (void)state;
    assert_int_equal(phy_code_normalize("ABC234", 6, out), 0);
    assert_string_equal(out, "ABC234");
    assert_int_equal(phy_code_normalize("abc234", 6, out), 0);
    assert_string_equal(out, "ABC234");
    assert_int_equal(phy_code_normalize("xYz789", 6, out), 0);
    assert_string_equal(out, "XYZ789");
    assert_int_equal(phy_code_normalize("ABCO23", 6, out), PHY_EINVAL);
    assert_int_equal(phy_code_normalize("ABCo23", 6, out), PHY_EINVAL);
    assert_int_equal(phy_code_normalize("ABC023", 6, out), PHY_EINVAL);
    assert_int_equal(phy_code_normalize("ABC123", 6, out), PHY_EINVAL);
    assert_int_equal(phy_code_normalize("ABCI23", 6, out), PHY_EINVAL);
    assert_int_equal(phy_code_normalize("ABCl23", 6, out), PHY_EINVAL);
    assert_int_equal(phy_code_normalize("ABC23", 5, out), PHY_EINVAL);
    assert_int_equal(phy_code_normalize("ABC2345", 7, out), PHY_EINVAL);
    assert_int_equal(phy_code_normalize("", 0, out), PHY_EINVAL);
    assert_int_equal(phy_code_normalize("ABC 23", 6, out), PHY_EINVAL);
    assert_int_equal(phy_code_normalize("ABC-23", 6, out), PHY_EINVAL);
    assert_int_equal(phy_code_normalize("ABC\0"
                                        "23",
                                        6, out),
                     PHY_EINVAL);
    assert_int_equal(phy_code_normalize("ABC\xc3\xa9"
                                        "2",
                                        6, out),
                     PHY_EINVAL);
}

static void test_serial_valid(void **state)
{
    char s[PHY_SERIAL_MAX + 2];
    (void)state;
    memset(s, 'a', sizeof s);
    assert_true(phy_serial_valid(s, 1));
    assert_true(phy_serial_valid(s, PHY_SERIAL_MAX));
    assert_false(phy_serial_valid(s, PHY_SERIAL_MAX + 1));
    assert_false(phy_serial_valid("", 0));
    assert_false(phy_serial_valid(NULL, 0));
    assert_true(phy_serial_valid("SN-2026_a.b9", 12));
    assert_false(phy_serial_valid("SN/1", 4));
    assert_false(phy_serial_valid("SN 1", 4));
    assert_false(phy_serial_valid("SN:1", 4));
    assert_false(phy_serial_valid("SN\0"
                                  "1",
                                  4));
    assert_false(phy_serial_valid("..\\x", 4));
}

static void test_sha256(void **state)
{
    char hex[PHY_HASH_HEX_LEN + 1];
    (void)state;
    assert_int_equal(phy_sha256_hex("abc", 3, hex), 0);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(phy_sha256_hex("", 0, hex), 0);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_ct_equal(void **state)
{
    (void)state;
    assert_true(phy_ct_equal("abcd", "abcd", 4));
    assert_false(phy_ct_equal("abcd", "abce", 4));
    assert_false(phy_ct_equal("xbcd", "abcd", 4));
    assert_true(phy_ct_equal("a", "b", 0));
}

static const unsigned char test_key[PHY_AEAD_KEY_LEN] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                                         12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                                         23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static void test_aead_round_trip(void **state)
{
    const char msg[] = "device secret for dev_abc";
    const char aad[] = "dev_abc";
    unsigned char sealed[128], sealed2[128], plain[128];
    size_t n = sizeof msg - 1;
    int len, len2;
    (void)state;
    len = phy_aead_seal(test_key, aad, sizeof aad - 1, msg, n, sealed, sizeof sealed);
    assert_int_equal(len, (int)(n + PHY_AEAD_OVERHEAD));
    /* nonce is random: sealing twice differs */
    len2 = phy_aead_seal(test_key, aad, sizeof aad - 1, msg, n, sealed2, sizeof sealed2);
    assert_int_equal(len2, len);
    assert_memory_not_equal(sealed, sealed2, (size_t)len);
    /* ciphertext is not the plaintext */
    assert_null(memmem(sealed, (size_t)len, msg, n));
    assert_int_equal(
        phy_aead_open(test_key, aad, sizeof aad - 1, sealed, (size_t)len, plain, sizeof plain),
        (int)n);
    assert_memory_equal(plain, msg, n);
    /* empty plaintext and empty aad */
    len = phy_aead_seal(test_key, NULL, 0, "", 0, sealed, sizeof sealed);
    assert_int_equal(len, PHY_AEAD_OVERHEAD);
    assert_int_equal(phy_aead_open(test_key, NULL, 0, sealed, (size_t)len, plain, 0), 0);
}

static void test_aead_limits(void **state)
{
    unsigned char sealed[64], plain[64];
    int len;
    (void)state;
    assert_int_equal(phy_aead_seal(test_key, NULL, 0, "hello", 5, sealed, 5 + 27), PHY_ETOOBIG);
    len = phy_aead_seal(test_key, NULL, 0, "hello", 5, sealed, 5 + 28);
    assert_int_equal(len, 33);
    assert_int_equal(phy_aead_open(test_key, NULL, 0, sealed, (size_t)len, plain, 4), PHY_ETOOBIG);
    assert_int_equal(phy_aead_open(test_key, NULL, 0, sealed, 27, plain, sizeof plain),
                     PHY_ECRYPTO);
    assert_int_equal(phy_aead_open(test_key, NULL, 0, sealed, (size_t)len - 1, plain, sizeof plain),
                     PHY_ECRYPTO);
}

static void test_aead_tamper(void **state)
{
    const char msg[] = "pending issuance";
    unsigned char aad[] = "dev_xyz";
    unsigned char sealed[128], plain[128], key2[PHY_AEAD_KEY_LEN];
    size_t n = sizeof msg - 1;
    int len;
    (void)state;
    len = phy_aead_seal(test_key, aad, sizeof aad - 1, msg, n, sealed, sizeof sealed);
    assert_int_equal(len, (int)(n + PHY_AEAD_OVERHEAD));
    /* flip one byte of: nonce, ciphertext, tag */
    size_t positions[] = {0, 11, 12, 12 + n - 1, 12 + n, (size_t)len - 1};
    for (size_t i = 0; i < sizeof positions / sizeof positions[0]; i++) {
        sealed[positions[i]] ^= 0x01;
        memset(plain, 0xAA, sizeof plain);
        assert_int_equal(
            phy_aead_open(test_key, aad, sizeof aad - 1, sealed, (size_t)len, plain, sizeof plain),
            PHY_ECRYPTO);
        sealed[positions[i]] ^= 0x01;
    }
    /* aad changed, aad missing */
    aad[0] ^= 0x20;
    assert_int_equal(
        phy_aead_open(test_key, aad, sizeof aad - 1, sealed, (size_t)len, plain, sizeof plain),
        PHY_ECRYPTO);
    aad[0] ^= 0x20;
    assert_int_equal(phy_aead_open(test_key, NULL, 0, sealed, (size_t)len, plain, sizeof plain),
                     PHY_ECRYPTO);
    /* other key */
    memcpy(key2, test_key, sizeof key2);
    key2[31] ^= 0x80;
    assert_int_equal(
        phy_aead_open(key2, aad, sizeof aad - 1, sealed, (size_t)len, plain, sizeof plain),
        PHY_ECRYPTO);
    /* untouched still opens */
    assert_int_equal(
        phy_aead_open(test_key, aad, sizeof aad - 1, sealed, (size_t)len, plain, sizeof plain),
        (int)n);
    assert_memory_equal(plain, msg, n);
}

struct tmpdir {
    char dir[64];
    char path[128];
};

static int tmpdir_setup(void **state)
{
    struct tmpdir *t = calloc(1, sizeof *t);
    if (t == NULL)
        return -1;
    if (!test_tmp_template(t->dir, sizeof t->dir, "phy_crypto_") || mkdtemp(t->dir) == NULL) {
        free(t);
        return -1;
    }
    snprintf(t->path, sizeof t->path, "%s/hub.key", t->dir);
    *state = t;
    return 0;
}

static int tmpdir_teardown(void **state)
{
    struct tmpdir *t = *state;
    unlink(t->path);
    rmdir(t->dir);
    free(t);
    return 0;
}

static void write_file(const char *path, const void *data, size_t n, mode_t mode)
{
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static void test_key_create_and_load(void **state)
{
    struct tmpdir *t = *state;
    unsigned char k1[PHY_AEAD_KEY_LEN], k2[PHY_AEAD_KEY_LEN], zero[PHY_AEAD_KEY_LEN] = {0};
    char err[256];
    struct stat st;

    assert_int_equal(phy_key_load_or_create(t->path, k1, err, sizeof err), 0);
    assert_int_equal(stat(t->path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, PHY_AEAD_KEY_LEN);
    assert_memory_not_equal(k1, zero, sizeof k1);
    assert_int_equal(phy_key_load_or_create(t->path, k2, err, sizeof err), 0);
    assert_memory_equal(k1, k2, sizeof k1);
}

static void test_key_refuse_0644(void **state)
{
    struct tmpdir *t = *state;
    unsigned char k[PHY_AEAD_KEY_LEN], data[PHY_AEAD_KEY_LEN];
    char err[256], want[200];

    memset(data, 7, sizeof data);
    write_file(t->path, data, sizeof data, 0644);
    assert_int_not_equal(phy_key_load_or_create(t->path, k, err, sizeof err), 0);
    snprintf(want, sizeof want,
             "key file %s is readable by group or others (mode 0644); chmod 600 it", t->path);
    assert_string_equal(err, want);
    /* no key material in the message */
    assert_null(strstr(err, "\x07"));
    write_file(t->path, data, sizeof data, 0640);
    assert_int_not_equal(phy_key_load_or_create(t->path, k, err, sizeof err), 0);
    assert_non_null(strstr(err, "(mode 0640)"));
    write_file(t->path, data, sizeof data, 0600);
    assert_int_equal(phy_key_load_or_create(t->path, k, err, sizeof err), 0);
    assert_memory_equal(k, data, sizeof k);
}

static void test_key_refuse_wrong_size(void **state)
{
    struct tmpdir *t = *state;
    unsigned char k[PHY_AEAD_KEY_LEN], data[64];
    char err[256];

    memset(data, 9, sizeof data);
    write_file(t->path, data, 31, 0600);
    assert_int_not_equal(phy_key_load_or_create(t->path, k, err, sizeof err), 0);
    assert_non_null(strstr(err, t->path));
    assert_non_null(strstr(err, "31 bytes"));
    write_file(t->path, data, 33, 0600);
    assert_int_not_equal(phy_key_load_or_create(t->path, k, err, sizeof err), 0);
    assert_non_null(strstr(err, "33 bytes"));
    write_file(t->path, data, 0, 0600);
    assert_int_not_equal(phy_key_load_or_create(t->path, k, err, sizeof err), 0);
}

static void test_key_refuse_symlink_and_dir(void **state)
{
    struct tmpdir *t = *state;
    unsigned char k[PHY_AEAD_KEY_LEN];
    char err[256], target[160];

    /* a symlink is refused (O_NOFOLLOW), even to a good key */
    snprintf(target, sizeof target, "%s/real.key", t->dir);
    assert_int_equal(phy_key_load_or_create(target, k, err, sizeof err), 0);
    assert_int_equal(symlink(target, t->path), 0);
    assert_int_not_equal(phy_key_load_or_create(t->path, k, err, sizeof err), 0);
    assert_int_equal(unlink(t->path), 0);
    assert_int_equal(unlink(target), 0);
    /* a directory is not a key file */
    assert_int_equal(mkdir(t->path, 0700), 0);
    assert_int_not_equal(phy_key_load_or_create(t->path, k, err, sizeof err), 0);
    assert_int_equal(rmdir(t->path), 0);
    /* missing parent directory */
    snprintf(target, sizeof target, "%s/nodir/x.key", t->dir);
    assert_int_not_equal(phy_key_load_or_create(target, k, err, sizeof err), 0);
    assert_non_null(strstr(err, "nodir"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_device_id),
        cmocka_unit_test(test_code_alphabet),
        cmocka_unit_test(test_code_distribution),
        cmocka_unit_test(test_code_normalize),
        cmocka_unit_test(test_serial_valid),
        cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_aead_round_trip),
        cmocka_unit_test(test_aead_limits),
        cmocka_unit_test(test_aead_tamper),
        cmocka_unit_test_setup_teardown(test_key_create_and_load, tmpdir_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_key_refuse_0644, tmpdir_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_key_refuse_wrong_size, tmpdir_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_key_refuse_symlink_and_dir, tmpdir_setup,
                                        tmpdir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
