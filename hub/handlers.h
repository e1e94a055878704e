/* Request handlers and the JSON helpers they share (internal to phyhub). */
#ifndef PHY_HUB_HANDLERS_H
#define PHY_HUB_HANDLERS_H

#include <jansson.h>

#include "api.h"

/* Who made a console request. */
/* The console's session cookie (HttpOnly; Secure; SameSite=Strict; Path=/, no
 * Domain: the __Host- prefix makes browsers enforce the last two). */
#define API_SESSION_COOKIE "__Host-phy_session"

struct api_caller {
    int64_t tenant_id, user_id;
    char tenant[STORE_NAME_MAX + 1];
    char region[16];
    char user[STORE_NAME_MAX + 1];           /* cookie sessions; "" for API tokens */
    int cookie;                              /* 1: authenticated by a console session cookie */
    char csrf[STORE_CSRF_LEN + 1];           /* cookie sessions: the session's CSRF token */
    char session_hash[PHY_HASH_HEX_LEN + 1]; /* cookie sessions: SHA-256 hex of the cookie */
    int64_t session_deadline_ms; /* cookie sessions: when it ends unless used again */
};

/* Authenticates a console request: "Authorization: Bearer <token>" when the header
 * is there, else the phy_session cookie (idle and absolute expiry from the
 * configuration); a cookie request whose method is not GET/HEAD must carry the
 * session's X-CSRF-Token. 0 with *caller filled, or -1 with res answered: 401
 * (missing, malformed, unknown or expired), 403 csrf_failed, 503 (store). */
int api_auth(struct hub *h, const struct api_request *req, struct api_response *res,
             struct api_caller *caller);

/* Records a successful change in the tenant's audit log: action (e.g.
 * "device.claim"), device_id (may be NULL) and detail (an object, reference stolen,
 * may be NULL). A failure is logged and does not fail the request. */
void api_audit(struct hub *h, int64_t tenant_id, int64_t user_id, const char *action,
               const char *device_id, json_t *detail);

/* RFC 3339 UTC text (to the second) of a time in ms since the epoch. */
void api_rfc3339(int64_t ms, char out[32]);
/* That text as a JSON string, or null when ms <= 0 (never). New reference. */
json_t *api_time_json(int64_t ms);

/* Device record as the console API shows it (presence, last_seen, connected_at,
 * disconnected_at, last_status, last_status_at; times RFC 3339 or null). New
 * reference, NULL on allocation failure. */
json_t *api_device_json(const struct store_device *d);

void handle_register(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_prove(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_code(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_poll(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_claim(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_devices_list(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_fleet_patch(struct hub *h, const struct api_request *req, struct api_response *res);
/* Handlers of /api/v1/devices/{id}...: id is a well-formed device ID. */
void handle_device_get(struct hub *h, const struct api_request *req, const char *id,
                       struct api_response *res);
void handle_device_delete(struct hub *h, const struct api_request *req, const char *id,
                          struct api_response *res);
void handle_desired_patch(struct hub *h, const struct api_request *req, const char *id,
                          struct api_response *res);
void handle_tags_put(struct hub *h, const struct api_request *req, const char *id,
                     struct api_response *res);
/* PATCH /api/v1/devices/{id} {"name": string | null}: renames the device. */
void handle_device_rename(struct hub *h, const struct api_request *req, const char *id,
                          struct api_response *res);
void handle_device_revoke(struct hub *h, const struct api_request *req, const char *id,
                          struct api_response *res);
void handle_device_reset(struct hub *h, const struct api_request *req, const char *id,
                         struct api_response *res);
void handle_status_history(struct hub *h, const struct api_request *req, const char *id,
                           struct api_response *res);
void handle_audit(struct hub *h, const struct api_request *req, struct api_response *res);
/* login.c: console login sessions. */
/* Makes h->login_dummy_hash (at start, before serving). 0 or PHY_E*. */
int login_init(struct hub *h);
void handle_login(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_logout(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_session(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_internal_serials(struct hub *h, const struct api_request *req,
                             struct api_response *res);
void handle_tenant_get(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_tenant_patch(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_registrations(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_password(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_tokens_list(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_token_create(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_token_revoke(struct hub *h, const struct api_request *req, const char *id,
                         struct api_response *res);
/* The argon2id encoding of a password as users are stored with (login.c). 0 or
 * PHY_ECRYPTO. */
int login_hash_password(const char *pw, size_t len, char *encoded, size_t cap);
/* API tokens: lifetime when none is asked for, and the longest. */
#define API_TOKEN_DAYS_DEFAULT 90
#define API_TOKEN_DAYS_MAX 3650
/* How long a retried claim by the same user gets the device it created. */
#define API_CLAIM_REPLAY_MS (10 * 60 * 1000)
/* static.c: GET / and GET /<name> from --web-root (200 or 404). */
void handle_static(struct hub *h, const struct api_request *req, struct api_response *res);

/* static.c: the default --web-root. An installed hub's console lies at rel_from_exe
 * (e.g. "../share/phystack/web") from the folder of its own executable; a hub run
 * from its build tree falls back to fallback (the source tree's web/). Returns a
 * malloc'd path (the caller frees it), NULL when out of memory. */
char *static_default_root(const char *rel_from_exe, const char *fallback);
void handle_metrics(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_healthz(struct hub *h, const struct api_request *req, struct api_response *res);
/* GET /readyz: 200 {"status":"ready"} when the store answers a read, else 503
 * store_unavailable with Retry-After (for load balancers and rolling restarts;
 * /healthz only says that the process answers). */
void handle_readyz(struct hub *h, const struct api_request *req, struct api_response *res);

#endif
