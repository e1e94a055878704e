/* Attested serials: a device proves possession of the private key whose public key
 * the manufacturer imported for its serial (docs/protocol.md section 2). The hub and
 * the agent share the signed message and the key formats here. Ed25519 and ECDSA
 * P-256 (SHA-256, DER signature) keys. */
#ifndef PHY_ATTEST_H
#define PHY_ATTEST_H

#include <stddef.h>

#include <openssl/evp.h>

#define PHY_ATTEST_SIG_MAX 72      /* an ECDSA P-256 DER signature; Ed25519 is 64 */
#define PHY_ATTEST_SIG_B64_MAX 96  /* its base64url text */
#define PHY_ATTEST_KEY_DER_MAX 512 /* a DER SubjectPublicKeyInfo (Ed25519 44, P-256 91) */
#define PHY_ATTEST_MSG_MAX 192

/* The signed message: "phystack-register-v1\n" serial "\n" challenge "\n" poll token
 * "\n". The challenge is the hub's nonce of one registration, the poll token that
 * registration's secret, so a signature proves nothing for any other registration.
 * Its length, or PHY_ETOOBIG. */
int phy_attest_message(const char *serial, const char *challenge, const char *poll_token,
                       char *out, size_t cap);

/* Parses a public key as given in an import: a PEM "PUBLIC KEY" block, or base64 of a
 * DER SubjectPublicKeyInfo, of a raw 32-byte Ed25519 key, or of a raw 65-byte
 * uncompressed P-256 point. *der (malloc'd) gets its DER SubjectPublicKeyInfo.
 * 0, or PHY_EINVAL with a message in err. */
int phy_attest_pubkey_parse(const char *text, unsigned char **der, size_t *der_len, char *err,
                            size_t errcap);

/* Verifies a base64url signature over msg with a DER public key: 1 valid, 0 not. */
int phy_attest_verify(const unsigned char *der, size_t der_len, const char *msg, size_t msg_len,
                      const char *sig_b64);

/* Loads a device's private key (PEM, Ed25519 or P-256) from a file that only its
 * owner can read. NULL with a message in err. */
EVP_PKEY *phy_attest_key_load(const char *path, char *err, size_t errcap);

/* Signs msg: the base64url signature into out. 0 or negative. */
int phy_attest_sign(EVP_PKEY *key, const char *msg, size_t msg_len, char *out, size_t cap);

#endif
