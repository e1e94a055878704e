/* Sealed issuance bodies under a forward-secure key ratchet (crypto-shredding).
 *
 * Time is cut into epochs of seal_epoch_ms. The body key of epoch e is
 * HMAC-SHA256(key file, "phystack seal key v1" || S_e), where S_e is the ratchet state
 * of epoch e and S_(e+1) = HMAC-SHA256(S_e, "phystack seal ratchet v1"). The ratchet
 * file (beside the key file, mode 0600) holds only the oldest state still needed
 * (the "base"); every later key is derived forward from it, no earlier one can be.
 * Advancing the base overwrites the file in place, so a body sealed under an epoch
 * below the base cannot be opened by anyone any more: not from the database's pages,
 * its WAL, a backup or a replica, not even with the key file and the ratchet file.
 *
 * Live bodies (claimed, not yet purged) are re-sealed under the current epoch by the
 * hub's sweeper before the base passes them (seal_is_stale, then seal_reseal), so
 * that purging a body (the store sets it NULL) shreds it within
 * SEAL_SHRED_EPOCHS epochs everywhere. Several hub nodes on one database share the
 * ratchet by copying the file once: each advances its own copy by the clock, and
 * they derive the same keys (clocks must agree within half an epoch).
 *
 * Bodies written before the ratchet existed (no header) were sealed under the key
 * file itself: they still open, count as stale, and are re-sealed at the first sweep.
 * Thread-safe: workers seal and open while the sweeper advances. */
#ifndef PHY_HUB_SEAL_H
#define PHY_HUB_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include "phy/crypto.h"

/* Epochs before the current one whose keys are kept (bodies of the current and the
 * previous epoch are never stale; the one before that is the re-seal margin). */
#define SEAL_KEEP_EPOCHS 2
/* A purged body's key is destroyed at most this many epochs after the purge. */
#define SEAL_SHRED_EPOCHS 4
/* Header of a ratchet-sealed body: magic(2) version(1) ratchet id(8) epoch(8, BE). */
#define SEAL_HEADER_LEN 19
#define SEAL_OVERHEAD (SEAL_HEADER_LEN + PHY_AEAD_OVERHEAD)

struct seal_ring;

/* Loads the ratchet file at path, or creates it (random state, base at the epoch
 * KEEP before now) when it does not exist and create is set. Advances nothing.
 * 0 or negative with a message in err. */
int seal_ring_open(struct seal_ring **out, const char *path,
                   const unsigned char master[PHY_AEAD_KEY_LEN], int64_t epoch_ms, int64_t now_ms,
                   int create, char *err, size_t errcap);
void seal_ring_close(struct seal_ring *r);

/* The epoch of now_ms, and the ratchet's base (the oldest epoch that still opens). */
int64_t seal_epoch_of(const struct seal_ring *r, int64_t now_ms);
int64_t seal_base(struct seal_ring *r);

/* Seals in[0..n) for device_id (bound as AAD) under the current epoch: malloc'd
 * header || nonce || ciphertext || tag, *out_len set; NULL on failure. */
unsigned char *seal_seal(struct seal_ring *r, int64_t now_ms, const char *device_id,
                         const void *in, size_t n, size_t *out_len);

/* Opens a body into out (cap >= n): the plaintext length, PHY_ECRYPTO (tampered, wrong
 * key file, or another ratchet's body) or PHY_ENOTFOUND (its epoch's key is destroyed:
 * shredded, or sealed by a node whose clock is more than an epoch ahead). */
int seal_open(struct seal_ring *r, int64_t now_ms, const char *device_id,
              const unsigned char *in, size_t n, unsigned char *out, size_t cap);

/* 1 when the body must be re-sealed before the base can move to the epoch
 * KEEP before now: sealed under an epoch before the previous one, or legacy. */
int seal_is_stale(const struct seal_ring *r, int64_t now_ms, const unsigned char *in, size_t n);

/* 1 when the body carries another ratchet's ID (a node without this ratchet file). */
int seal_is_foreign(const struct seal_ring *r, const unsigned char *in, size_t n);

/* Opens a stale body and seals it again under the current epoch: malloc'd, or NULL. */
unsigned char *seal_reseal(struct seal_ring *r, int64_t now_ms, const char *device_id,
                           const unsigned char *in, size_t n, size_t *out_len);

/* Moves the base to the epoch KEEP before now (never backwards): the file is
 * overwritten and synced first, then the old state is wiped from memory. Call it
 * only once every stale live body is re-sealed. 1 when the base moved, 0 when it was
 * current, negative with a message in err. */
int seal_advance(struct seal_ring *r, int64_t now_ms, char *err, size_t errcap);

#endif
