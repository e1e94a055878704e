/* TLS session-ticket keys shared by a region's hub nodes (issue 13): a device that
 * reconnects after a hub restart, or to another node, resumes its TLS session instead
 * of a full handshake.
 *
 * The key file (--tls-ticket-keys, mode 0600, the same on every node of a region):
 * one key per line, TICKET_KEY_HEX_LEN lowercase hex digits each (a 16-byte key name,
 * a 32-byte HMAC-SHA256 key, a 32-byte AES-256-CBC key). The first line encrypts new
 * tickets; every line decrypts (a ticket under an older key is renewed under the
 * first). `phyhub admin ticket-key-rotate FILE` puts a new key first and keeps the one
 * before it, so that tickets issued before the rotation still resume once. */
#ifndef PHY_HUB_TICKETS_H
#define PHY_HUB_TICKETS_H

#include <stddef.h>

#include <openssl/ssl.h>

#define TICKET_KEYS_MAX 2
#define TICKET_KEY_HEX_LEN 160
/* The key file is at most this long (TICKET_KEYS_MAX lines and their newlines). */
#define TICKET_FILE_MAX (TICKET_KEYS_MAX * (TICKET_KEY_HEX_LEN + 1))

struct ticket_key {
    unsigned char name[16];
    unsigned char hmac[32];
    unsigned char aes[32];
};

struct ticket_keys {
    struct ticket_key k[TICKET_KEYS_MAX];
    int n; /* 0: none (no tickets are issued) */
};

/* Parses a key file's text: 0, or PHY_EINVAL (err says why; no key material in it).
 * I/O-free. */
int ticket_keys_parse(const char *text, struct ticket_keys *out, char *err, size_t errcap);
/* Writes the file's text for k into out[TICKET_FILE_MAX + 1]. */
void ticket_keys_format(const struct ticket_keys *k, char out[TICKET_FILE_MAX + 1]);

/* Reads and parses path (a regular file, not readable by group or others): 0 or a
 * negative PHY_E* with err set. */
int ticket_keys_load(const char *path, struct ticket_keys *out, char *err, size_t errcap);
/* A new key first, the current one kept as the previous (a file that does not exist
 * yet is created with the new key alone); written to a temporary file, fsynced and
 * renamed over path. 0 or negative with err set. */
int ticket_keys_rotate(const char *path, char *err, size_t errcap);

/* Makes ctx issue one ticket per full handshake under keys->k[0] and accept tickets
 * under any of keys (read at each handshake: the caller may change *keys between
 * handshakes, on the thread that runs them). keys NULL or without keys: no tickets
 * at all (a TLS 1.3 server otherwise sends two per handshake, under keys of its own
 * that no restarted or other node knows). */
void ticket_keys_install(SSL_CTX *ctx, struct ticket_keys *keys);

#endif
