/* Randomness, hashes, identifiers, provisioning codes and AEAD over OpenSSL 3. */
#ifndef PHY_CRYPTO_H
#define PHY_CRYPTO_H

#include <stddef.h>

#define PHY_CODE_LEN 6
#define PHY_CODE_ALPHABET "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
#define PHY_TOKEN_LEN 43    /* 32 random bytes in base64url */
#define PHY_HASH_HEX_LEN 64 /* SHA-256 in lowercase hex */
#define PHY_SERIAL_MAX 64
#define PHY_DEVICE_ID_LEN 30 /* "dev_" + 26 base32 chars (128 bits) */
#define PHY_AEAD_KEY_LEN 32
#define PHY_AEAD_OVERHEAD 28 /* 12-byte nonce + 16-byte tag */

/* Fills buf with n cryptographically secure random bytes. 0 or PHY_ECRYPTO. */
int phy_random_bytes(void *buf, size_t n);

/* Writes a 43-char base64url token of 32 random bytes + NUL into out[44]. */
int phy_token_new(char out[PHY_TOKEN_LEN + 1]);

/* Writes "dev_" + 26 lowercase base32 chars + NUL into out[31]. */
int phy_device_id_new(char out[PHY_DEVICE_ID_LEN + 1]);

/* Writes a 6-char code from PHY_CODE_ALPHABET, uniform (rejection sampling), + NUL. */
int phy_code_new(char out[PHY_CODE_LEN + 1]);

/* Normalizes user input to a canonical code: upper-cases, requires exactly 6 chars
 * of the alphabet after that. Returns 0 and writes out[7], or PHY_EINVAL. */
int phy_code_normalize(const char *in, size_t n, char out[PHY_CODE_LEN + 1]);

/* 1 when s[0..n) is a valid serial: 1..64 chars of [A-Za-z0-9._-]. */
int phy_serial_valid(const char *s, size_t n);

/* SHA-256 of data as 64 lowercase hex chars + NUL into out[65]. */
int phy_sha256_hex(const void *data, size_t n, char out[PHY_HASH_HEX_LEN + 1]);

/* HMAC-SHA-256 of the concatenation a || b (b may be NULL with blen 0) under key
 * into out[32]. 0 or PHY_ECRYPTO. */
int phy_hmac_sha256(const void *key, size_t klen, const void *a, size_t alen, const void *b,
                    size_t blen, unsigned char out[32]);
/* Constant-time equality of two equal-length buffers (1 = equal). */
int phy_ct_equal(const void *a, const void *b, size_t n);

/* AES-256-GCM. Seal writes nonce(12) || ciphertext || tag(16) into out (cap >=
 * n + PHY_AEAD_OVERHEAD), binding aad; returns the length written or negative.
 * Open reverses it and returns the plaintext length, PHY_ECRYPTO when the tag
 * does not verify. */
int phy_aead_seal(const unsigned char key[PHY_AEAD_KEY_LEN], const void *aad, size_t aad_len,
                  const void *in, size_t n, unsigned char *out, size_t cap);
int phy_aead_open(const unsigned char key[PHY_AEAD_KEY_LEN], const void *aad, size_t aad_len,
                  const unsigned char *in, size_t n, unsigned char *out, size_t cap);

/* Loads a 32-byte key from path, or creates it (mode 0600, O_EXCL, fsync) when it
 * does not exist. Refuses a key file readable by group/other or of the wrong size.
 * errbuf gets a message on failure. */
int phy_key_load_or_create(const char *path, unsigned char key[PHY_AEAD_KEY_LEN], char *errbuf,
                           size_t errcap);

/* Secret files (keys, the seal ratchet): open reads exactly n bytes from a regular
 * file of mode 0600 (refusing group/other access or another size; "what" names the
 * file in errbuf); *fd_out (optional) keeps it open, read-write when writable.
 * PHY_ENOTFOUND when missing. Create writes buf durably and atomically under a
 * temporary name linked into place; PHY_EEXIST when the file exists. */
int phy_secret_file_open(const char *what, const char *path, unsigned char *buf, size_t n,
                         int writable, int *fd_out, char *errbuf, size_t errcap);
int phy_secret_file_create(const char *what, const char *path, const unsigned char *buf, size_t n,
                           char *errbuf, size_t errcap);

#endif
