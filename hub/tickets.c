/* Session-ticket keys: the key file and OpenSSL's ticket callback (tickets.h). */
#include "tickets.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "phy/crypto.h"
#include "phy/err.h"
#include "phy/file.h"
#include "phy/text.h"

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t cap,
                                                          const char *fmt, ...)
{
    va_list ap;
    if (!err || cap == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

int ticket_keys_parse(const char *text, struct ticket_keys *out, char *err, size_t errcap)
{
    struct ticket_keys k;
    const char *p = text;
    memset(&k, 0, sizeof k);
    while (*p) {
        size_t n = strcspn(p, "\n");
        if (k.n == TICKET_KEYS_MAX) {
            set_err(err, errcap, "more than %d keys", TICKET_KEYS_MAX);
            goto bad;
        }
        if (n != TICKET_KEY_HEX_LEN) {
            set_err(err, errcap, "line %d: expected %d lowercase hex digits", k.n + 1,
                    TICKET_KEY_HEX_LEN);
            goto bad;
        }
        unsigned char raw[TICKET_KEY_HEX_LEN / 2];
        for (size_t i = 0; i < sizeof raw; i++) {
            int hi = phy_hexval(p[2 * i]), lo = phy_hexval(p[2 * i + 1]);
            if (hi < 0 || lo < 0 || (p[2 * i] >= 'A' && p[2 * i] <= 'F') ||
                (p[2 * i + 1] >= 'A' && p[2 * i + 1] <= 'F')) {
                OPENSSL_cleanse(raw, sizeof raw);
                set_err(err, errcap, "line %d: expected %d lowercase hex digits", k.n + 1,
                        TICKET_KEY_HEX_LEN);
                goto bad;
            }
            raw[i] = (unsigned char)(hi << 4 | lo);
        }
        struct ticket_key *t = &k.k[k.n++];
        memcpy(t->name, raw, 16);
        memcpy(t->hmac, raw + 16, 32);
        memcpy(t->aes, raw + 48, 32);
        OPENSSL_cleanse(raw, sizeof raw);
        p += n;
        if (*p == '\n')
            p++;
    }
    if (k.n == 0) {
        set_err(err, errcap, "no key");
        goto bad;
    }
    for (int i = 1; i < k.n; i++)
        if (memcmp(k.k[i].name, k.k[0].name, 16) == 0) {
            set_err(err, errcap, "two keys with one name");
            goto bad;
        }
    *out = k;
    OPENSSL_cleanse(&k, sizeof k);
    return 0;
bad:
    OPENSSL_cleanse(&k, sizeof k);
    return PHY_EINVAL;
}

static void hex(const unsigned char *v, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[v[i] >> 4];
        out[2 * i + 1] = digits[v[i] & 15];
    }
}

void ticket_keys_format(const struct ticket_keys *k, char out[TICKET_FILE_MAX + 1])
{
    char *o = out;
    for (int i = 0; i < k->n && i < TICKET_KEYS_MAX; i++) {
        hex(k->k[i].name, 16, o);
        hex(k->k[i].hmac, 32, o + 32);
        hex(k->k[i].aes, 32, o + 96);
        o += TICKET_KEY_HEX_LEN;
        *o++ = '\n';
    }
    *o = '\0';
}

int ticket_keys_load(const char *path, struct ticket_keys *out, char *err, size_t errcap)
{
    char why[128];
    char *text = NULL;
    size_t len = 0;
    struct stat st;
    int rc;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, errcap, "ticket key file %s: %s", path, strerror(errno));
        return errno == ENOENT ? PHY_ENOTFOUND : PHY_EIO;
    }
    if (fstat(fd, &st) != 0 || (st.st_mode & 077)) {
        set_err(err, errcap, "ticket key file %s: readable by group or others (chmod 600 it)",
                path);
        close(fd);
        return PHY_EINVAL;
    }
    rc = phy_read_regular(fd, TICKET_FILE_MAX, &text, &len);
    close(fd);
    if (rc) {
        set_err(err, errcap, "ticket key file %s: %s", path,
                rc == PHY_ETOOBIG ? "too long" : rc == PHY_EINVAL ? "not a regular file"
                                                                  : "cannot read it");
        return rc;
    }
    rc = ticket_keys_parse(text, out, why, sizeof why);
    if (rc)
        set_err(err, errcap, "ticket key file %s: %s", path, why);
    OPENSSL_cleanse(text, len);
    free(text);
    return rc;
}

int ticket_keys_rotate(const char *path, char *err, size_t errcap)
{
    struct ticket_keys k = {0};
    char text[TICKET_FILE_MAX + 1], tmp[4096];
    int rc = ticket_keys_load(path, &k, err, errcap);
    if (rc == PHY_ENOTFOUND)
        k.n = 0;
    else if (rc)
        return rc;
    /* the new key first, the current one second, older ones go */
    if (k.n > 0)
        k.k[1] = k.k[0];
    k.n = k.n > 0 ? 2 : 1;
    do {
        if (phy_random_bytes(&k.k[0], sizeof k.k[0]) < 0) {
            set_err(err, errcap, "random source failed");
            OPENSSL_cleanse(&k, sizeof k);
            return PHY_ECRYPTO;
        }
    } while (k.n == 2 && memcmp(k.k[0].name, k.k[1].name, 16) == 0);
    ticket_keys_format(&k, text);
    OPENSSL_cleanse(&k, sizeof k);
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        set_err(err, errcap, "ticket key file path too long");
        OPENSSL_cleanse(text, sizeof text);
        return PHY_ETOOBIG;
    }
    rc = PHY_EIO;
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0) {
        size_t n = strlen(text);
        /* the file, then its name in the directory, durable before success */
        if (write(fd, text, n) == (ssize_t)n && fsync(fd) == 0 && close(fd) == 0) {
            fd = -1;
            if (rename(tmp, path) == 0 && phy_fsync_parent(path) == 0)
                rc = 0;
        }
        if (fd >= 0)
            close(fd);
    }
    if (rc)
        set_err(err, errcap, "ticket key file %s: %s", path, strerror(errno));
    unlink(tmp); /* gone after the rename; a failed write's leftover otherwise */
    OPENSSL_cleanse(text, sizeof text);
    return rc;
}

/* ---- OpenSSL ---- */

static int ticket_cb(SSL *s, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                     EVP_CIPHER_CTX *ctx, EVP_MAC_CTX *hctx, int enc)
{
    const struct ticket_keys *keys = SSL_CTX_get_app_data(SSL_get_SSL_CTX(s));
    const struct ticket_key *k = NULL;
    int i = 0;
    if (!keys || keys->n == 0)
        return 0;
    if (enc) {
        k = &keys->k[0];
        if (phy_random_bytes(iv, 16) < 0)
            return -1;
        memcpy(key_name, k->name, 16);
    } else {
        for (i = 0; i < keys->n && !k; i++)
            if (CRYPTO_memcmp(key_name, keys->k[i].name, 16) == 0)
                k = &keys->k[i];
        if (!k) /* an unknown or retired key: a full handshake */
            return 0;
    }
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, 32),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_CTX_set_params(hctx, params) != 1)
        return -1;
    if (enc)
        return EVP_EncryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, k->aes, iv) == 1 ? 1 : -1;
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1)
        return -1;
    return k == &keys->k[0] ? 1 : 2; /* 2: renew it under the current key */
}

void ticket_keys_install(SSL_CTX *ctx, struct ticket_keys *keys)
{
    SSL_CTX_set_app_data(ctx, keys);
    if (!keys || keys->n == 0) {
        SSL_CTX_set_num_tickets(ctx, 0);
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET); /* TLS 1.2: none either */
        return;
    }
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
}
