/* Claims (docs/protocol.md sections 3 and 4): what a claim names, sealing the new
 * device's poll answer, the claim itself (in eu one store transaction; in another
 * region the device row first, then eu through eu_client.h), eu's half of another
 * region's claim, and the answer to a refused one. console.c (POST /api/v1/claims)
 * and region.c (POST /internal/v1/issuances) call it; it calls neither. Worker
 * threads only: the regional claim blocks on eu. */
#ifndef PHY_HUB_CLAIM_H
#define PHY_HUB_CLAIM_H

#include <stddef.h>
#include <stdint.h>

#include "api.h"
#include "hub.h"

/* Checks what a claim names: exactly one of serial / code_in, a valid serial, a code
 * of the alphabet (normalized into code). 0, or -1 with a 400 in res. */
int claim_key_check(const char *serial, const char *code_in, char code[PHY_CODE_LEN + 1],
                    struct api_response *res);

/* Answers a claim the store (or eu) refused: 404 expired_code / unknown_serial, 409
 * serial_in_use / already_claimed / code_required; any other outcome is 500. */
void claim_refused(struct api_response *res, int outcome);

/* Seals the exact 200 poll answer for a device (seal.h: AES-256-GCM under the
 * current epoch's key, AAD = header and device ID). Used as the seal callback of the
 * claim store operations; ctx is a struct claim_seal_ctx (borrowed for the call).
 * Malloc'd result (the caller frees it) or NULL. */
struct claim_seal_ctx {
    struct hub *h;
    const char *device_id, *secret, *tenant, *region, *endpoint;
};
unsigned char *claim_seal_issuance(void *ctx, const char *serial, size_t *out_len);

/* A console claim, checked by the caller (claim_key_check, name, tags); every
 * pointer is borrowed for the call. */
struct claim_request {
    int64_t tenant_id, user_id;
    const char *tenant;
    const char *serial, *code; /* exactly one; the code normalized */
    const char *device_id, *secret, *secret_hash; /* the new device's, fresh */
    const char *name, *tags_json;                 /* name may be NULL; tags "{}" when none */
    int serial_claims; /* the tenant's policy (enum store_serial_claims), by serial */
};

/* Claims a device for c's tenant. In eu (--provisioning) one store transaction that
 * also seals the device's poll answer; in another region the device row first
 * (hidden, with its cancel entry), then eu's issuance. Returns 0 with *outcome
 * (STORE_OK with *dev filled, or the refusal: EXPIRED_CODE, UNKNOWN_SERIAL,
 * SERIAL_IN_USE, ALREADY_CLAIMED, CODE_REQUIRED), or -1 with res answered (503
 * store_unavailable, 503 provisioning_unavailable, 502 provisioning_refused, 500).
 * *dev is the caller's (store_device_clear). */
int claim_issue(struct hub *h, const struct claim_request *c, struct store_device *dev,
                int *outcome, struct api_response *res);

/* eu's half of another region's claim, checked by the caller; every pointer is
 * borrowed for the call. */
struct claim_for_region {
    const char *serial, *code; /* exactly one; the code normalized */
    const char *device_id, *secret;
    const char *tenant;
    const char *region;   /* the calling region (from its key) */
    const char *endpoint; /* where the device is sent (the one eu pinned for region) */
    int serial_claims;    /* the tenant's policy, as its region sent it */
    int64_t not_after_ms; /* the caller's deadline: nothing is issued after it */
};

/* Issues c in eu's store: the sealed poll answer for the device, nothing kept of the
 * tenant's data. Returns 0 with *outcome (STORE_OK with serial_out, the serial bound,
 * or the refusal as claim_issue's), or -1 with res answered (410 request_expired,
 * 503 store_unavailable). */
int claim_issue_for_region(struct hub *h, const struct claim_for_region *c,
                           char serial_out[PHY_SERIAL_MAX + 1], int *outcome,
                           struct api_response *res);

#endif
