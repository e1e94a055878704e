/* Multi-region (docs/protocol.md section 3): inter-region keys, eu's internal API and
 * a regional hub's side of it (claims through eu, the outbox that tells eu what
 * happened to its issuances). Handlers and the outbox drain run on worker threads. */
#ifndef PHY_HUB_REGION_H
#define PHY_HUB_REGION_H

#include <stddef.h>

#include "api.h"
#include "hub.h"

#define REGION_NAME_MAX 15
#define REGION_KEY_MIN 32
#define REGION_KEY_MAX 128

/* 1 when s is a region name: 1-15 of [a-z0-9-]. */
int region_name_valid(const char *s);

/* Checks the region flags and loads the keys into h->region: eu needs --peer only;
 * every other hub needs --provisioning-url and --inter-region-key-file. 0, or
 * PHY_E* with a one-line reason in err. */
int region_setup(struct hub *h, char *err, size_t errcap);
/* Erases the keys and frees h->region (NULL-safe). */
void region_cleanup(struct hub *h);

/* Reads a key file: one line of REGION_KEY_MIN..MAX printable characters without
 * spaces; a file readable by group or others is refused. 0 or PHY_E* + err. */
int region_key_load(const char *path, char out[REGION_KEY_MAX + 1], char *err, size_t errcap);
/* Writes a fresh random key to a new file (mode 0600, O_EXCL, fsync). */
int region_key_new(const char *path, char *err, size_t errcap);

/* Seals the exact 200 poll answer for a device (seal.h: AES-256-GCM under the
 * current epoch's key, AAD = header and device ID). Used as the seal callback of the claim store
 * operations; ctx is a struct hub_seal_ctx. Malloc'd result or NULL. */
struct hub_seal_ctx {
    struct hub *h;
    const char *device_id, *secret, *tenant, *region, *endpoint;
};
unsigned char *hub_seal_issuance(void *ctx, const char *serial, size_t *out_len);

/* eu's handlers of /internal/v1/... (routes only when --provisioning). */
void handle_internal_issue(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_internal_purge(struct hub *h, const struct api_request *req, const char *id,
                           struct api_response *res);
void handle_internal_cancel(struct hub *h, const struct api_request *req, const char *id,
                            struct api_response *res);
void handle_internal_rearm(struct hub *h, const struct api_request *req, struct api_response *res);

/* A regional hub's claim: the device row first (hidden, with its cancel entry),
 * then eu. Returns 0 with *outcome (STORE_OK with *dev filled, or the refusal eu
 * gave: EXPIRED_CODE, UNKNOWN_SERIAL, SERIAL_IN_USE, ALREADY_CLAIMED, CODE_REQUIRED); 1 when res
 * was answered (503 provisioning_unavailable, 502 provisioning_refused, 503
 * store_unavailable). */
struct region_claim {
    int64_t tenant_id, user_id;
    const char *tenant;
    const char *serial, *code; /* exactly one */
    const char *device_id, *secret, *secret_hash;
    const char *name, *tags_json;
    int serial_claims; /* the tenant's policy (enum store_serial_claims), sent to eu */
};
int region_claim(struct hub *h, const struct region_claim *c, struct store_device *dev,
                 int *outcome, struct api_response *res);

/* Sends the due outbox entries to eu (worker thread; regional hubs only). */
void region_outbox_drain(struct hub *h);

#endif
