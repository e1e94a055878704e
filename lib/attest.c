/* Attested serials: the signed message, public key import, signing and verifying
 * (include/phy/attest.h). */
#include "phy/attest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "phy/base64.h"
#include "phy/err.h"
#include "phy/file.h"

#define KEY_FILE_MAX 16384

int phy_attest_message(const char *serial, const char *challenge, const char *poll_token,
                       char *out, size_t cap)
{
    int n = snprintf(out, cap, "phystack-register-v1\n%s\n%s\n%s\n", serial, challenge, poll_token);
    return n < 0 || (size_t)n >= cap ? PHY_ETOOBIG : n;
}

/* 1 when key is Ed25519 or EC on P-256. */
static int key_type_ok(EVP_PKEY *k)
{
    char group[32] = "";
    if (EVP_PKEY_is_a(k, "ED25519"))
        return 1;
    if (!EVP_PKEY_is_a(k, "EC"))
        return 0;
    if (EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL) != 1)
        return 0;
    return strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0;
}

/* A P-256 public key from its raw uncompressed point. */
static EVP_PKEY *p256_from_point(const unsigned char *pt, size_t n)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *k = NULL;
    if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, n) &&
        (params = OSSL_PARAM_BLD_to_param(bld)) &&
        (ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) && EVP_PKEY_fromdata_init(ctx) == 1 &&
        EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_PUBLIC_KEY, params) != 1)
        k = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    return k;
}

int phy_attest_pubkey_parse(const char *text, unsigned char **der, size_t *der_len, char *err,
                            size_t errcap)
{
    EVP_PKEY *k = NULL;
    unsigned char raw[PHY_ATTEST_KEY_DER_MAX];
    *der = NULL;
    while (*text == ' ' || *text == '\t' || *text == '\r' || *text == '\n')
        text++;
    size_t n = strlen(text);
    while (n && (text[n - 1] == ' ' || text[n - 1] == '\t' || text[n - 1] == '\r' ||
                 text[n - 1] == '\n'))
        n--;
    if (n == 0) {
        snprintf(err, errcap, "empty public key");
        return PHY_EINVAL;
    }
    if (n > 4 * PHY_ATTEST_KEY_DER_MAX) {
        snprintf(err, errcap, "public key too long");
        return PHY_EINVAL;
    }
    if (strncmp(text, "-----BEGIN", 10) == 0) {
        BIO *b = BIO_new_mem_buf(text, (int)n);
        k = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
    } else {
        int len = phy_base64_decode(text, n, raw, sizeof raw, 0);
        if (len < 0)
            len = phy_base64_decode(text, n, raw, sizeof raw, 1);
        if (len == 32) {
            k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, raw, 32);
        } else if (len == 65 && raw[0] == 0x04) {
            k = p256_from_point(raw, 65);
        } else if (len > 0) {
            const unsigned char *p = raw;
            k = d2i_PUBKEY(NULL, &p, len);
            if (k && p != raw + len) {
                EVP_PKEY_free(k);
                k = NULL;
            }
        }
    }
    if (!k) {
        snprintf(err, errcap, "not a public key (PEM, or base64 of DER, raw Ed25519 or raw P-256)");
        return PHY_EINVAL;
    }
    if (!key_type_ok(k)) {
        EVP_PKEY_free(k);
        snprintf(err, errcap, "unsupported key type (Ed25519 or ECDSA P-256 only)");
        return PHY_EINVAL;
    }
    unsigned char *out = NULL;
    int len = i2d_PUBKEY(k, &out);
    EVP_PKEY_free(k);
    if (len <= 0 || len > PHY_ATTEST_KEY_DER_MAX) {
        OPENSSL_free(out);
        snprintf(err, errcap, "cannot encode the public key");
        return PHY_EINVAL;
    }
    *der = malloc((size_t)len);
    if (!*der) {
        OPENSSL_free(out);
        snprintf(err, errcap, "out of memory");
        return PHY_ENOMEM;
    }
    memcpy(*der, out, (size_t)len);
    *der_len = (size_t)len;
    OPENSSL_free(out);
    return 0;
}

/* The digest a key signs with: none for Ed25519 (it hashes itself), SHA-256 for EC. */
static const EVP_MD *key_md(EVP_PKEY *k)
{
    return EVP_PKEY_is_a(k, "ED25519") ? NULL : EVP_sha256();
}

int phy_attest_verify(const unsigned char *der, size_t der_len, const char *msg, size_t msg_len,
                      const char *sig_b64)
{
    unsigned char sig[PHY_ATTEST_SIG_MAX];
    const unsigned char *p = der;
    size_t sl = strlen(sig_b64);
    int len, ok = 0;
    if (sl == 0 || sl > PHY_ATTEST_SIG_B64_MAX)
        return 0;
    len = phy_base64_decode(sig_b64, sl, sig, sizeof sig, 1);
    if (len <= 0)
        return 0;
    EVP_PKEY *k = d2i_PUBKEY(NULL, &p, (long)der_len);
    if (!k || !key_type_ok(k)) {
        EVP_PKEY_free(k);
        return 0;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx && EVP_DigestVerifyInit(ctx, NULL, key_md(k), NULL, k) == 1)
        ok = EVP_DigestVerify(ctx, sig, (size_t)len, (const unsigned char *)msg, msg_len) == 1;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(k);
    return ok;
}

EVP_PKEY *phy_attest_key_load(const char *path, char *err, size_t errcap)
{
    struct stat st;
    char *text = NULL;
    size_t n = 0;
    EVP_PKEY *k = NULL;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errcap, "device key %s: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) != 0 || (st.st_mode & 077) != 0) {
        snprintf(err, errcap, "device key %s is readable by group or others; chmod 600 it", path);
        close(fd);
        return NULL;
    }
    if (phy_read_regular(fd, KEY_FILE_MAX, &text, &n) != 0) {
        snprintf(err, errcap, "device key %s: not a regular file of at most %d bytes", path,
                 KEY_FILE_MAX);
        close(fd);
        return NULL;
    }
    close(fd);
    BIO *b = BIO_new_mem_buf(text, (int)n);
    if (b)
        k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    OPENSSL_cleanse(text, n);
    free(text);
    if (!k) {
        snprintf(err, errcap, "device key %s: not a PEM private key", path);
        return NULL;
    }
    if (!key_type_ok(k)) {
        EVP_PKEY_free(k);
        snprintf(err, errcap, "device key %s: Ed25519 or ECDSA P-256 only", path);
        return NULL;
    }
    return k;
}

int phy_attest_sign(EVP_PKEY *key, const char *msg, size_t msg_len, char *out, size_t cap)
{
    unsigned char sig[PHY_ATTEST_SIG_MAX];
    size_t len = sizeof sig;
    int rc = PHY_ECRYPTO;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx && EVP_DigestSignInit(ctx, NULL, key_md(key), NULL, key) == 1 &&
        EVP_DigestSign(ctx, sig, &len, (const unsigned char *)msg, msg_len) == 1)
        rc = phy_base64_encode(sig, len, out, cap, 1) < 0 ? PHY_ETOOBIG : 0;
    EVP_MD_CTX_free(ctx);
    return rc;
}
