/* Multi-region (docs/protocol.md section 3): inter-region keys, eu's internal API and
 * a regional hub's side of it (the outbox that tells eu what happened to its
 * issuances). Claims are claim.h's, calls to eu eu_client.h's; region.c calls both,
 * neither calls it. Handlers and the outbox drain run on worker threads. */
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
 * every other hub needs --provisioning-url and --inter-region-key-file (its client
 * of eu, h->eu). 0, or PHY_E* with a one-line reason in err. */
int region_setup(struct hub *h, char *err, size_t errcap);
/* Erases the keys and frees h->region and h->eu (NULL-safe). */
void region_cleanup(struct hub *h);

/* Reads a key file: one line of REGION_KEY_MIN..MAX printable characters without
 * spaces; a file readable by group or others is refused. 0 or PHY_E* + err. */
int region_key_load(const char *path, char out[REGION_KEY_MAX + 1], char *err, size_t errcap);
/* Writes a fresh random key to a new file (mode 0600, O_EXCL, fsync). */
int region_key_new(const char *path, char *err, size_t errcap);

/* eu's handlers of /internal/v1/... (routes only when --provisioning). */
void handle_internal_issue(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_internal_purge(struct hub *h, const struct api_request *req, const char *id,
                           struct api_response *res);
void handle_internal_cancel(struct hub *h, const struct api_request *req, const char *id,
                            struct api_response *res);
void handle_internal_rearm(struct hub *h, const struct api_request *req, struct api_response *res);

/* Sends the due outbox entries to eu (worker thread; regional hubs only). */
void region_outbox_drain(struct hub *h);

#endif
