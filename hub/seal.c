/* Sealed issuance bodies under a forward-secure key ratchet (see seal.h). */
#include "seal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "phy/err.h"

#define STATE_LEN 32
#define ID_LEN 8
/* The ratchet file: two identical slots, each magic(8) id(8) base epoch(8, BE)
 * state(32) check(8) where check is the start of SHA-256 over the rest. An advance
 * writes and syncs slot 0, then slot 1: a torn write leaves one whole slot (the newer
 * one is taken), and no old state survives a completed advance. */
#define SLOT_LEN 64
#define SLOTS 2
static const char file_magic[8] = {'P', 'H', 'Y', 'R', 'A', 'T', '0', '1'};
static const unsigned char body_magic[3] = {0xE5, 0x1A, 0x01}; /* magic(2), version 1 */
static const char what[] = "seal ratchet file";

struct seal_ring {
    pthread_mutex_t mu;
    int fd;
    char *path;
    int64_t epoch_ms;
    unsigned char master[PHY_AEAD_KEY_LEN];
    unsigned char id[ID_LEN];
    int64_t base;                    /* the epoch of state */
    unsigned char state[STATE_LEN];  /* S_base */
};

static void be64_put(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static uint64_t be64_get(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* S_(e+1) from S_e, in place. */
static int ratchet_step(unsigned char state[STATE_LEN])
{
    static const char label[] = "phystack seal ratchet v1";
    unsigned char next[STATE_LEN];
    int rc = phy_hmac_sha256(state, STATE_LEN, label, sizeof label - 1, NULL, 0, next);
    memcpy(state, next, STATE_LEN);
    OPENSSL_cleanse(next, sizeof next);
    return rc;
}

/* The body key of epoch e (>= base, <= base + limit), under r->mu. */
static int epoch_key(const struct seal_ring *r, int64_t e, unsigned char key[PHY_AEAD_KEY_LEN])
{
    static const char label[] = "phystack seal key v1";
    unsigned char s[STATE_LEN];
    int rc = 0;
    if (e < r->base)
        return PHY_ENOTFOUND;
    memcpy(s, r->state, STATE_LEN);
    for (int64_t i = r->base; i < e && rc == 0; i++)
        rc = ratchet_step(s);
    if (rc == 0)
        rc = phy_hmac_sha256(r->master, PHY_AEAD_KEY_LEN, label, sizeof label - 1, s, STATE_LEN, key);
    OPENSSL_cleanse(s, sizeof s);
    return rc;
}

static void slot_encode(unsigned char slot[SLOT_LEN], const unsigned char id[ID_LEN], int64_t base,
                        const unsigned char state[STATE_LEN])
{
    unsigned char md[32];
    memcpy(slot, file_magic, 8);
    memcpy(slot + 8, id, ID_LEN);
    be64_put(slot + 16, (uint64_t)base);
    memcpy(slot + 24, state, STATE_LEN);
    EVP_Digest(slot, 56, md, NULL, EVP_sha256(), NULL);
    memcpy(slot + 56, md, 8);
}

static int slot_valid(const unsigned char slot[SLOT_LEN])
{
    unsigned char md[32];
    if (memcmp(slot, file_magic, 8) != 0 || EVP_Digest(slot, 56, md, NULL, EVP_sha256(), NULL) != 1)
        return 0;
    return CRYPTO_memcmp(md, slot + 56, 8) == 0;
}

int64_t seal_epoch_of(const struct seal_ring *r, int64_t now_ms)
{
    return now_ms < 0 ? 0 : now_ms / r->epoch_ms;
}

int64_t seal_base(struct seal_ring *r)
{
    pthread_mutex_lock(&r->mu);
    int64_t b = r->base;
    pthread_mutex_unlock(&r->mu);
    return b;
}

/* A new ratchet file: random id and state, base KEEP epochs before now. */
static int ring_create(const char *path, int64_t base, char *err, size_t errcap)
{
    unsigned char file[SLOT_LEN * SLOTS], id[ID_LEN], state[STATE_LEN];
    int rc;
    if (phy_random_bytes(id, sizeof id) != 0 || phy_random_bytes(state, sizeof state) != 0) {
        snprintf(err, errcap, "%s %s: no randomness", what, path);
        return PHY_ECRYPTO;
    }
    slot_encode(file, id, base, state);
    memcpy(file + SLOT_LEN, file, SLOT_LEN);
    rc = phy_secret_file_create(what, path, file, sizeof file, err, errcap);
    OPENSSL_cleanse(file, sizeof file);
    OPENSSL_cleanse(state, sizeof state);
    return rc;
}

int seal_ring_open(struct seal_ring **out, const char *path,
                   const unsigned char master[PHY_AEAD_KEY_LEN], int64_t epoch_ms, int64_t now_ms,
                   int create, char *err, size_t errcap)
{
    unsigned char file[SLOT_LEN * SLOTS];
    struct seal_ring *r;
    int fd = -1, rc = 0, best = -1;
    *out = NULL;
    if (!path || !*path || epoch_ms < 1000) {
        snprintf(err, errcap, "%s: no path, or an epoch under 1 s", what);
        return PHY_EINVAL;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = phy_secret_file_open(what, path, file, sizeof file, 1, &fd, err, errcap);
        if (rc != PHY_ENOTFOUND)
            break;
        if (!create) {
            snprintf(err, errcap, "%s %s does not exist", what, path);
            return PHY_ENOTFOUND;
        }
        rc = ring_create(path, now_ms / epoch_ms - SEAL_KEEP_EPOCHS, err, errcap);
        if (rc != 0 && rc != PHY_EEXIST)
            return rc;
    }
    if (rc != 0)
        return rc;
    for (int i = 0; i < SLOTS; i++) {
        const unsigned char *s = file + i * SLOT_LEN;
        if (!slot_valid(s))
            continue;
        if (best >= 0 && memcmp(s + 8, file + best * SLOT_LEN + 8, ID_LEN) != 0)
            best = -2; /* two ratchets in one file: not ours */
        else if (best == -1 || be64_get(s + 16) > be64_get(file + best * SLOT_LEN + 16))
            best = i;
        if (best == -2)
            break;
    }
    if (best < 0) {
        OPENSSL_cleanse(file, sizeof file);
        close(fd);
        snprintf(err, errcap, "%s %s is damaged (no valid slot)", what, path);
        return PHY_EINVAL;
    }
    r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path))) {
        free(r);
        OPENSSL_cleanse(file, sizeof file);
        close(fd);
        snprintf(err, errcap, "out of memory");
        return PHY_ENOMEM;
    }
    pthread_mutex_init(&r->mu, NULL);
    r->fd = fd;
    r->epoch_ms = epoch_ms;
    memcpy(r->master, master, PHY_AEAD_KEY_LEN);
    memcpy(r->id, file + best * SLOT_LEN + 8, ID_LEN);
    r->base = (int64_t)be64_get(file + best * SLOT_LEN + 16);
    memcpy(r->state, file + best * SLOT_LEN + 24, STATE_LEN);
    OPENSSL_cleanse(file, sizeof file);
    *out = r;
    return 0;
}

void seal_ring_close(struct seal_ring *r)
{
    if (!r)
        return;
    if (r->fd >= 0)
        close(r->fd);
    free(r->path);
    pthread_mutex_destroy(&r->mu);
    OPENSSL_cleanse(r, sizeof *r);
    free(r);
}

/* The epoch a body names (1), or 0 for a legacy body (sealed under the key file),
 * or -1 for another ratchet's body. */
static int body_epoch(const struct seal_ring *r, const unsigned char *in, size_t n, int64_t *e)
{
    if (n < SEAL_OVERHEAD || memcmp(in, body_magic, sizeof body_magic) != 0)
        return 0;
    if (memcmp(in + 3, r->id, ID_LEN) != 0)
        return -1;
    *e = (int64_t)be64_get(in + 11);
    return 1;
}

/* The AAD: the header (when there is one) followed by the device ID. */
static int aad_build(unsigned char *buf, size_t cap, const unsigned char *header, size_t hlen,
                     const char *device_id, size_t *len)
{
    size_t dl = strlen(device_id);
    if (hlen + dl > cap)
        return PHY_ETOOBIG;
    memcpy(buf, header, hlen);
    memcpy(buf + hlen, device_id, dl);
    *len = hlen + dl;
    return 0;
}

unsigned char *seal_seal(struct seal_ring *r, int64_t now_ms, const char *device_id,
                         const void *in, size_t n, size_t *out_len)
{
    unsigned char key[PHY_AEAD_KEY_LEN], aad[SEAL_HEADER_LEN + 256];
    size_t aad_len;
    unsigned char *out;
    int64_t e;
    int rc;
    if (n > SIZE_MAX - SEAL_OVERHEAD || !(out = malloc(n + SEAL_OVERHEAD)))
        return NULL;
    pthread_mutex_lock(&r->mu);
    e = seal_epoch_of(r, now_ms);
    if (e < r->base)
        e = r->base; /* the clock went back: the oldest key there is */
    memcpy(out, body_magic, sizeof body_magic);
    memcpy(out + 3, r->id, ID_LEN);
    be64_put(out + 11, (uint64_t)e);
    rc = epoch_key(r, e, key);
    pthread_mutex_unlock(&r->mu);
    if (rc == 0)
        rc = aad_build(aad, sizeof aad, out, SEAL_HEADER_LEN, device_id, &aad_len);
    if (rc == 0)
        rc = phy_aead_seal(key, aad, aad_len, in, n, out + SEAL_HEADER_LEN, n + PHY_AEAD_OVERHEAD);
    OPENSSL_cleanse(key, sizeof key);
    if (rc < 0) {
        free(out);
        return NULL;
    }
    *out_len = SEAL_HEADER_LEN + (size_t)rc;
    return out;
}

int seal_open(struct seal_ring *r, int64_t now_ms, const char *device_id,
              const unsigned char *in, size_t n, unsigned char *out, size_t cap)
{
    unsigned char key[PHY_AEAD_KEY_LEN], aad[SEAL_HEADER_LEN + 256];
    size_t aad_len;
    int64_t e = 0;
    int kind = body_epoch(r, in, n, &e), rc;
    /* Legacy: the key file itself, the device ID as AAD. Another ratchet's header may
     * also be a legacy body whose random nonce happens to start like one. */
    if (kind <= 0)
        return phy_aead_open(r->master, device_id, strlen(device_id), in, n, out, cap);
    pthread_mutex_lock(&r->mu);
    /* A key at most one epoch ahead of this node's clock (another node's clock may be
     * a little ahead); far-future epochs would cost a long derivation. */
    rc = e > seal_epoch_of(r, now_ms) + 1 ? PHY_ECRYPTO : epoch_key(r, e, key);
    pthread_mutex_unlock(&r->mu);
    if (rc == 0)
        rc = aad_build(aad, sizeof aad, in, SEAL_HEADER_LEN, device_id, &aad_len);
    if (rc == 0)
        rc = phy_aead_open(key, aad, aad_len, in + SEAL_HEADER_LEN, n - SEAL_HEADER_LEN, out, cap);
    OPENSSL_cleanse(key, sizeof key);
    return rc;
}

int seal_is_stale(const struct seal_ring *r, int64_t now_ms, const unsigned char *in, size_t n)
{
    int64_t e = 0;
    int kind = body_epoch(r, in, n, &e);
    if (kind < 0)
        return 0; /* not ours to re-seal: seal_open reports it */
    return kind == 0 || e < seal_epoch_of(r, now_ms) - 1;
}

int seal_is_foreign(const struct seal_ring *r, const unsigned char *in, size_t n)
{
    int64_t e;
    return body_epoch(r, in, n, &e) < 0;
}

unsigned char *seal_reseal(struct seal_ring *r, int64_t now_ms, const char *device_id,
                           const unsigned char *in, size_t n, size_t *out_len)
{
    unsigned char *plain = malloc(n ? n : 1), *out = NULL;
    int len;
    if (!plain)
        return NULL;
    len = seal_open(r, now_ms, device_id, in, n, plain, n);
    if (len >= 0)
        out = seal_seal(r, now_ms, device_id, plain, (size_t)len, out_len);
    OPENSSL_cleanse(plain, n ? n : 1);
    free(plain);
    return out;
}

/* Writes slot i of the file and syncs it. */
static int slot_write(struct seal_ring *r, int i, const unsigned char slot[SLOT_LEN])
{
    ssize_t w;
    do
        w = pwrite(r->fd, slot, SLOT_LEN, (off_t)i * SLOT_LEN);
    while (w < 0 && errno == EINTR);
    return w == SLOT_LEN && fdatasync(r->fd) == 0 ? 0 : PHY_EIO;
}

int seal_advance(struct seal_ring *r, int64_t now_ms, char *err, size_t errcap)
{
    unsigned char state[STATE_LEN], slot[SLOT_LEN];
    int64_t target = seal_epoch_of(r, now_ms) - SEAL_KEEP_EPOCHS;
    int rc = 0;
    pthread_mutex_lock(&r->mu);
    if (target <= r->base) {
        pthread_mutex_unlock(&r->mu);
        return 0;
    }
    memcpy(state, r->state, STATE_LEN);
    for (int64_t i = r->base; i < target && rc == 0; i++)
        rc = ratchet_step(state);
    if (rc == 0) {
        slot_encode(slot, r->id, target, state);
        for (int i = 0; i < SLOTS && rc == 0; i++)
            rc = slot_write(r, i, slot);
    }
    if (rc == 0) {
        memcpy(r->state, state, STATE_LEN);
        r->base = target;
    } else if (rc == PHY_EIO) {
        snprintf(err, errcap, "%s %s: write: %s", what, r->path, strerror(errno));
    } else {
        snprintf(err, errcap, "%s %s: key derivation failed", what, r->path);
    }
    pthread_mutex_unlock(&r->mu);
    OPENSSL_cleanse(state, sizeof state);
    OPENSSL_cleanse(slot, sizeof slot);
    return rc == 0 ? 1 : rc;
}
