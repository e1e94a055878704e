/* A regional hub's client of eu's internal API (docs/protocol.md section 3): eu's
 * address and this region's key, one call with retries, and the claims whose call
 * to eu is running. claim.c sends the issue call with it, region.c's outbox the
 * rest; it calls neither. Calls block: worker threads only. */
#ifndef PHY_HUB_EU_CLIENT_H
#define PHY_HUB_EU_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "hub.h"
#include "phy/client.h"

/* Claims waiting on eu at once (each holds a worker). */
#define EU_CLIENT_CLAIMS_MAX 4

struct eu_client;

/* Makes the client of eu at url ("https://HOST[:PORT]", as --provisioning-url). 0
 * with *out (free it with eu_client_free), PHY_ENOMEM / PHY_EIO, or PHY_EINVAL with
 * a one-line reason in err. */
int eu_client_new(const char *url, struct eu_client **out, char *err, size_t errcap);
/* Sets the key the client authenticates with (copied; erased when replaced or
 * freed). 0 or PHY_ENOMEM. */
int eu_client_set_key(struct eu_client *c, const char *key);
/* Erases the key and frees c (NULL-safe). */
void eu_client_free(struct eu_client *c);

/* One call to eu (h->eu) with retries on transport failures and 5xx (safe: every
 * internal call is idempotent), none started after deadline_ms (0: no deadline).
 * body is JSON text or NULL. Returns 0 with res (status and body; the caller frees
 * it with phy_client_response_free) or a negative PHY_E* when no answer came, with
 * the reason in err; *lost = 1 when some request may have reached eu without its
 * answer reaching us. */
int eu_client_call(struct hub *h, const char *method, const char *path, const char *body,
                   int64_t deadline_ms, struct phy_client_response *res, int *lost, char *err,
                   size_t errcap);

/* The "key" string member of eu's JSON answer, copied into out ("" when absent). */
void eu_client_answer_field(const struct phy_client_response *res, const char *key, char *out,
                            size_t cap);

/* The claims whose issue call to eu is running (the outbox leaves their cancel
 * entries alone). eu_client_claim_hold registers one: 1, or 0 when
 * EU_CLIENT_CLAIMS_MAX are waiting already; eu_client_claim_release ends it;
 * eu_client_claim_held is 1 while it runs. */
int eu_client_claim_hold(struct eu_client *c, const char *device_id);
void eu_client_claim_release(struct eu_client *c, const char *device_id);
int eu_client_claim_held(struct eu_client *c, const char *device_id);

#endif
