/* Randomness, SHA-256, identifiers, provisioning codes, AES-256-GCM and key files. */
#include "phy/crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "phy/assert.h"
#include "phy/base64.h"
#include "phy/err.h"
#include "phy/text.h"
#include "phy/file.h"

#define AEAD_NONCE_LEN 12
#define AEAD_TAG_LEN 16
#define CODE_ALPHABET_LEN (sizeof PHY_CODE_ALPHABET - 1)
/* Largest multiple of the alphabet size that fits in a byte: 31 * 8 = 248. */
#define CODE_REJECT_AT (256 / CODE_ALPHABET_LEN * CODE_ALPHABET_LEN)

static const char base32_lower[] = "abcdefghijklmnopqrstuvwxyz234567";

/* Fills buf with n random bytes from the OpenSSL CSPRNG. 0 or PHY_ECRYPTO. */
int phy_random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;

    while (n > 0) {
        int chunk = n > (size_t)INT_MAX ? INT_MAX : (int)n;
        if (RAND_bytes(p, chunk) != 1)
            return PHY_ECRYPTO;
        p += chunk;
        n -= (size_t)chunk;
    }
    return 0;
}

/* 43-char base64url token of 32 random bytes. 0 or negative. */
int phy_token_new(char out[PHY_TOKEN_LEN + 1])
{
    unsigned char raw[32];
    int rc = phy_random_bytes(raw, sizeof raw);

    if (rc == 0) {
        rc = phy_base64_encode(raw, sizeof raw, out, PHY_TOKEN_LEN + 1, 1);
        rc = rc == PHY_TOKEN_LEN ? 0 : PHY_ECRYPTO;
    }
    OPENSSL_cleanse(raw, sizeof raw);
    if (rc != 0)
        out[0] = '\0';
    return rc;
}

/* "dev_" + 128 random bits in unpadded lowercase base32 (26 chars). 0 or negative. */
int phy_device_id_new(char out[PHY_DEVICE_ID_LEN + 1])
{
    unsigned char raw[16];
    unsigned acc = 0, bits = 0;
    size_t o = 4, i;

    if (phy_random_bytes(raw, sizeof raw) != 0) {
        out[0] = '\0';
        return PHY_ECRYPTO;
    }
    memcpy(out, "dev_", 4);
    for (i = 0; i < sizeof raw; i++) {
        acc = (acc << 8 | raw[i]) & 0xfff;
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            out[o++] = base32_lower[(acc >> bits) & 31];
        }
    }
    if (bits > 0) /* 128 = 25 * 5 + 3: the last char carries 3 bits, low bits zero */
        out[o++] = base32_lower[(acc << (5 - bits)) & 31];
    out[o] = '\0';
    return 0;
}

/* 6 chars uniform over the 31-char alphabet: bytes >= 248 are rejected so that
 * byte % 31 has no bias. 0 or PHY_ECRYPTO. */
int phy_code_new(char out[PHY_CODE_LEN + 1])
{
    unsigned char raw[32];
    size_t got = 0;

    while (got < PHY_CODE_LEN) {
        if (phy_random_bytes(raw, sizeof raw) != 0) {
            out[0] = '\0';
            return PHY_ECRYPTO;
        }
        for (size_t i = 0; i < sizeof raw && got < PHY_CODE_LEN; i++) {
            if (raw[i] >= CODE_REJECT_AT)
                continue;
            out[got++] = PHY_CODE_ALPHABET[raw[i] % CODE_ALPHABET_LEN];
        }
    }
    out[PHY_CODE_LEN] = '\0';
    OPENSSL_cleanse(raw, sizeof raw);
    return 0;
}

/* ASCII upper-case, then exactly PHY_CODE_LEN alphabet chars. 0 or PHY_EINVAL. */
int phy_code_normalize(const char *in, size_t n, char out[PHY_CODE_LEN + 1])
{
    char tmp[PHY_CODE_LEN];

    PHY_ASSERT(in != NULL);
    if (n != PHY_CODE_LEN)
        return PHY_EINVAL;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        if (c == '\0' || memchr(PHY_CODE_ALPHABET, c, CODE_ALPHABET_LEN) == NULL)
            return PHY_EINVAL;
        tmp[i] = c;
    }
    memcpy(out, tmp, PHY_CODE_LEN);
    out[PHY_CODE_LEN] = '\0';
    return 0;
}

/* 1 when s[0..n) is 1..64 chars of [A-Za-z0-9._-], else 0. */
int phy_serial_valid(const char *s, size_t n)
{
    if (s == NULL || n == 0 || n > PHY_SERIAL_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!phy_name_char((unsigned char)s[i]))
            return 0;
    }
    return 1;
}

/* SHA-256 of data as lowercase hex. 0 or PHY_ECRYPTO. */
int phy_sha256_hex(const void *data, size_t n, char out[PHY_HASH_HEX_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    if (data == NULL)
        data = "";
    if (EVP_Digest(data, n, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen * 2 != PHY_HASH_HEX_LEN) {
        out[0] = '\0';
        return PHY_ECRYPTO;
    }
    for (unsigned i = 0; i < mdlen; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[PHY_HASH_HEX_LEN] = '\0';
    return 0;
}

/* Constant-time comparison; 1 when equal. */
int phy_ct_equal(const void *a, const void *b, size_t n)
{
    if (n == 0)
        return 1;
    return CRYPTO_memcmp(a, b, n) == 0;
}

int phy_hmac_sha256(const void *key, size_t klen, const void *a, size_t alen, const void *b,
                    size_t blen, unsigned char out[32])
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    size_t len = 0;
    int ok = ctx != NULL && EVP_MAC_init(ctx, key, klen, params) == 1 &&
             EVP_MAC_update(ctx, a, alen) == 1 && (blen == 0 || EVP_MAC_update(ctx, b, blen) == 1) &&
             EVP_MAC_final(ctx, out, &len, 32) == 1 && len == 32;

    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return ok ? 0 : PHY_ECRYPTO;
}

/* nonce || AES-256-GCM(in) || tag, with aad authenticated. Length or negative. */
int phy_aead_seal(const unsigned char key[PHY_AEAD_KEY_LEN], const void *aad, size_t aad_len,
                  const void *in, size_t n, unsigned char *out, size_t cap)
{
    EVP_CIPHER_CTX *ctx = NULL;
    unsigned char *ct;
    int len = 0, total = 0, rc = PHY_ECRYPTO;

    if (n > (size_t)INT_MAX - PHY_AEAD_OVERHEAD || aad_len > (size_t)INT_MAX)
        return PHY_ETOOBIG;
    if (cap < n + PHY_AEAD_OVERHEAD)
        return PHY_ETOOBIG;
    if (phy_random_bytes(out, AEAD_NONCE_LEN) != 0)
        return PHY_ECRYPTO;
    ct = out + AEAD_NONCE_LEN;
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        return PHY_ENOMEM;
    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, out) != 1)
        goto out_free;
    if (aad_len > 0 && EVP_EncryptUpdate(ctx, NULL, &len, aad, (int)aad_len) != 1)
        goto out_free;
    if (n > 0) {
        if (EVP_EncryptUpdate(ctx, ct, &len, in, (int)n) != 1)
            goto out_free;
        total = len;
    }
    if (EVP_EncryptFinal_ex(ctx, ct + total, &len) != 1)
        goto out_free;
    total += len;
    if ((size_t)total != n)
        goto out_free;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, AEAD_TAG_LEN, ct + n) != 1)
        goto out_free;
    rc = (int)(n + PHY_AEAD_OVERHEAD);
out_free:
    EVP_CIPHER_CTX_free(ctx);
    if (rc < 0)
        OPENSSL_cleanse(out, n + PHY_AEAD_OVERHEAD);
    return rc;
}

/* Verifies and decrypts nonce || ct || tag. Plaintext length, PHY_ECRYPTO when the
 * tag (or the aad) does not match, or another negative code. */
int phy_aead_open(const unsigned char key[PHY_AEAD_KEY_LEN], const void *aad, size_t aad_len,
                  const unsigned char *in, size_t n, unsigned char *out, size_t cap)
{
    EVP_CIPHER_CTX *ctx = NULL;
    unsigned char tag[AEAD_TAG_LEN];
    size_t pt_len;
    int len = 0, total = 0, rc = PHY_ECRYPTO;

    if (n < PHY_AEAD_OVERHEAD)
        return PHY_ECRYPTO;
    if (n > (size_t)INT_MAX || aad_len > (size_t)INT_MAX)
        return PHY_ETOOBIG;
    pt_len = n - PHY_AEAD_OVERHEAD;
    if (cap < pt_len)
        return PHY_ETOOBIG;
    memcpy(tag, in + n - AEAD_TAG_LEN, AEAD_TAG_LEN);
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        return PHY_ENOMEM;
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, in) != 1)
        goto out_free;
    if (aad_len > 0 && EVP_DecryptUpdate(ctx, NULL, &len, aad, (int)aad_len) != 1)
        goto out_free;
    if (pt_len > 0) {
        if (EVP_DecryptUpdate(ctx, out, &len, in + AEAD_NONCE_LEN, (int)pt_len) != 1)
            goto out_free;
        total = len;
    }
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, AEAD_TAG_LEN, tag) != 1)
        goto out_free;
    if (EVP_DecryptFinal_ex(ctx, out + total, &len) != 1)
        goto out_free;
    total += len;
    if ((size_t)total != pt_len)
        goto out_free;
    rc = total;
out_free:
    EVP_CIPHER_CTX_free(ctx);
    if (rc < 0 && pt_len > 0)
        OPENSSL_cleanse(out, pt_len); /* never hand back unauthenticated plaintext */
    return rc;
}


/* Reads exactly n bytes (EINTR-safe); 0, or PHY_EIO on error or short file. */
static int read_full(int fd, unsigned char *buf, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return PHY_EIO;
        got += (size_t)r;
    }
    return 0;
}

/* Writes all n bytes (EINTR-safe); 0 or PHY_EIO. */
static int write_full(int fd, const unsigned char *buf, size_t n)
{
    size_t done = 0;

    while (done < n) {
        ssize_t w = write(fd, buf + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return PHY_EIO;
        done += (size_t)w;
    }
    return 0;
}

/* Checks an opened secret file (regular, private, exactly n bytes) and reads it. */
static int secret_load_fd(int fd, const char *what, const char *path, unsigned char *buf,
                          size_t n, char *errbuf, size_t errcap)
{
    struct stat st;

    if (fstat(fd, &st) != 0) {
        snprintf(errbuf, errcap, "%s %s: fstat: %s", what, path, strerror(errno));
        return PHY_EIO;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(errbuf, errcap, "%s %s is not a regular file", what, path);
        return PHY_EINVAL;
    }
    if ((st.st_mode & 077) != 0) {
        snprintf(errbuf, errcap, "%s %s is readable by group or others (mode %04o); chmod 600 it",
                 what, path, (unsigned)(st.st_mode & 07777));
        return PHY_EINVAL;
    }
    if (st.st_size < 0 || (uint64_t)st.st_size != (uint64_t)n) {
        snprintf(errbuf, errcap, "%s %s has %lld bytes, expected %zu", what, path,
                 (long long)st.st_size, n);
        return PHY_EINVAL;
    }
    if (read_full(fd, buf, n) != 0) {
        snprintf(errbuf, errcap, "%s %s: short read", what, path);
        return PHY_EIO;
    }
    return 0;
}

int phy_secret_file_open(const char *what, const char *path, unsigned char *buf, size_t n,
                         int writable, int *fd_out, char *errbuf, size_t errcap)
{
    int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC);
    int rc;
    if (fd < 0) {
        if (errno == ENOENT)
            return PHY_ENOTFOUND;
        snprintf(errbuf, errcap, "%s %s: open: %s", what, path, strerror(errno));
        return PHY_EIO;
    }
    rc = secret_load_fd(fd, what, path, buf, n, errbuf, errcap);
    if (rc != 0 || !fd_out)
        close(fd);
    else
        *fd_out = fd;
    if (rc != 0)
        OPENSSL_cleanse(buf, n);
    return rc;
}

/* The temporary name is written and fsynced and then link()ed into place, so that a
 * crash at any moment leaves either no file or a complete one (never an empty one). */
int phy_secret_file_create(const char *what, const char *path, const unsigned char *buf, size_t n,
                           char *errbuf, size_t errcap)
{
    char tmp[4096];
    unsigned char nonce[8];
    int fd = -1, rc;

    if (phy_random_bytes(nonce, sizeof(nonce)) != 0) {
        snprintf(errbuf, errcap, "%s %s: no randomness", what, path);
        return PHY_ECRYPTO;
    }
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp-%02x%02x%02x%02x%02x%02x%02x%02x", path,
                         nonce[0], nonce[1], nonce[2], nonce[3], nonce[4], nonce[5], nonce[6],
                         nonce[7]) >= sizeof(tmp)) {
        snprintf(errbuf, errcap, "%s path too long", what);
        return PHY_EINVAL;
    }
    fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(errbuf, errcap, "%s %s: create: %s", what, path, strerror(errno));
        return PHY_EIO;
    }
    if (write_full(fd, buf, n) != 0 || fsync(fd) != 0) {
        snprintf(errbuf, errcap, "%s %s: write: %s", what, path, strerror(errno));
        rc = PHY_EIO;
        goto out_unlink;
    }
    if (close(fd) != 0) {
        fd = -1;
        snprintf(errbuf, errcap, "%s %s: close: %s", what, path, strerror(errno));
        rc = PHY_EIO;
        goto out_unlink;
    }
    fd = -1;
    if (link(tmp, path) != 0) {
        rc = errno == EEXIST ? PHY_EEXIST : PHY_EIO;
        if (rc == PHY_EIO)
            snprintf(errbuf, errcap, "%s %s: link: %s", what, path, strerror(errno));
        goto out_unlink;
    }
    unlink(tmp);
    if (phy_fsync_parent(path) != 0) {
        snprintf(errbuf, errcap, "%s %s: cannot fsync its directory", what, path);
        return PHY_EIO;
    }
    return 0;
out_unlink:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return rc;
}

/* Loads or creates the 32-byte key at path; message in errbuf on failure. */
int phy_key_load_or_create(const char *path, unsigned char key[PHY_AEAD_KEY_LEN], char *errbuf,
                           size_t errcap)
{
    static const char what[] = "key file";
    char dummy[1];
    int rc, attempt;

    if (errbuf == NULL || errcap == 0) {
        errbuf = dummy;
        errcap = sizeof dummy;
    }
    errbuf[0] = '\0';
    if (path == NULL || path[0] == '\0') {
        snprintf(errbuf, errcap, "key file path is empty");
        return PHY_EINVAL;
    }
    /* Two rounds: a concurrent creator may win the O_EXCL race; then load its key. */
    for (attempt = 0; attempt < 2; attempt++) {
        rc = phy_secret_file_open(what, path, key, PHY_AEAD_KEY_LEN, 0, NULL, errbuf, errcap);
        if (rc != PHY_ENOTFOUND)
            goto out;
        if (phy_random_bytes(key, PHY_AEAD_KEY_LEN) != 0) {
            snprintf(errbuf, errcap, "key file %s: no randomness", path);
            rc = PHY_ECRYPTO;
            goto out;
        }
        rc = phy_secret_file_create(what, path, key, PHY_AEAD_KEY_LEN, errbuf, errcap);
        if (rc != PHY_EEXIST)
            goto out;
    }
    snprintf(errbuf, errcap, "key file %s: created and removed concurrently", path);
    rc = PHY_EIO;
out:
    if (rc != 0)
        OPENSSL_cleanse(key, PHY_AEAD_KEY_LEN);
    return rc;
}
