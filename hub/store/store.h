/* The hub's persistent store: one table of operations (the core, core.c) over
 * two engines, SQLite (default) and PostgreSQL (engine.h). Every operation is atomic (one
 * transaction) and durable when it returns 0; callers run them off the event loop
 * (libuv thread pool). Implementations must be safe to call from several threads. */
#ifndef PHY_HUB_STORE_H
#define PHY_HUB_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "phy/crypto.h"

#define STORE_NAME_MAX 64
#define STORE_NODE_ID_MAX 64
/* The schema this build creates and migrates to (both engines). */
#define STORE_SCHEMA_VERSION 8 /* a hub node's ID: [A-Za-z0-9._:-] */

struct store; /* opaque back-end state */

/* Outcomes of provisioning operations (not errors: they map to HTTP answers). */
enum store_outcome {
    STORE_OK = 0,
    STORE_PROVISIONED,     /* serial or code already spent: 410 already_provisioned */
    STORE_TOO_MANY,        /* registration limit per serial reached: 429 */
    STORE_BAD_TOKEN,       /* unknown/lapsed poll token, or token of another serial: 401 */
    STORE_EXPIRED_CODE,    /* code unknown, expired or replaced: 404 expired_code */
    STORE_UNKNOWN_SERIAL,  /* no live registration: 404 unknown_serial */
    STORE_SERIAL_IN_USE,   /* contested serial: 409 serial_in_use */
    STORE_ALREADY_CLAIMED, /* 409 already_claimed */
    STORE_PENDING,         /* poll: nothing yet (202) */
    STORE_SLOW_DOWN,       /* poll: faster than the interval (429 slow_down) */
    STORE_DELIVER,         /* poll: the issuance is here (200) */
    STORE_CODE_TAKEN,      /* set_code: another live code has this value; retry */
    STORE_EXISTS,          /* admin: name already taken */
    STORE_NOT_FOUND,       /* admin/auth: no such tenant/user/token; device hub: no device */
    STORE_REVOKED,         /* device_auth: the device was revoked */
    STORE_PRECONDITION,    /* desired_patch: If-Match version differs (412) */
    STORE_TOO_BIG,         /* twin patch result over the size or depth limit */
    STORE_CODE_REQUIRED,   /* claim by serial of an unattested serial: 409 code_required */
    STORE_PROOF_REQUIRED,  /* an attested serial's registration not proven yet: 403 */
};

/* Claims by serial a tenant allows (tenants.serial_claims, the names below). */
enum store_serial_claims {
    SERIAL_CLAIMS_ATTESTED = 0, /* only attested serials (the default) */
    SERIAL_CLAIMS_ANY = 1,      /* any serial with one live registration */
};
#define SERIAL_CLAIMS_ATTESTED_NAME "attested"
#define SERIAL_CLAIMS_ANY_NAME "any"
/* A policy's name, and a name's policy (0, or PHY_EINVAL for another text). */
const char *store_serial_claims_name(int policy);
int store_serial_claims_parse(const char *name, int *policy);

/* An attested serial: its device's public key (DER SubjectPublicKeyInfo). */
struct store_serial_key {
    const char *serial;
    const unsigned char *public_key;
    size_t public_key_len;
};

/* What a device tells about itself when it registers (reg_create; either may be
 * NULL). Kept to show before a claim by serial of an unattested serial. */
#define STORE_REG_META_MAX 128
#define STORE_REG_INFO_MAX 8 /* >= the registrations a serial may have live */
struct store_reg_meta {
    const char *source; /* the client's address */
    const char *agent;  /* its User-Agent */
};

/* A live registration of a serial as the console shows it before a claim. */
struct store_reg_info {
    int64_t created_ms, last_active_ms;
    char source[STORE_REG_META_MAX + 1]; /* "" unknown */
    char agent[STORE_REG_META_MAX + 1];
    int proven;
};

/* What reg_create did besides its outcome. */
struct store_reg_result {
    int attested; /* the serial is attested: the registration must prove possession */
    int evicted;  /* the serial was at its registration cap: the least recently active
                   * registration without a live code was deleted to make room */
};

/* Time is milliseconds since the Unix epoch, supplied by the caller (testable). */
struct store_prov_params {
    int64_t now_ms;
    int64_t registration_idle_ms; /* a registration lapses after this without activity */
    int64_t code_ttl_ms;
    int64_t grace_ms;        /* issuance redelivery window after first delivery */
    int64_t remote_max_age_ms; /* sweep: another region's never-delivered issuance is
                                * ended after this (0: never) */
    int interval_s;          /* base poll interval */
    int max_interval_s;      /* cap for slow_down growth */
    int max_regs_per_serial; /* 4 */
    /* poll only, may be NULL: called inside the transaction with a DELIVER's sealed
     * body before the delivery is recorded; non-zero aborts the poll with
     * PHY_ECRYPTO and nothing is recorded. */
    int (*deliver_check)(void *ctx, const char *device_id, const unsigned char *sealed, size_t len);
    void *deliver_ctx;
};

struct store_poll_result {
    int interval_s;        /* the registration's current interval (PENDING/SLOW_DOWN) */
    int64_t tenant_id;     /* DELIVER of eu's own device: its tenant (0 for another region's) */
    unsigned char *sealed; /* DELIVER: the sealed issuance body, malloc'd, caller frees */
    size_t sealed_len;
    char device_id[PHY_DEVICE_ID_LEN + 1]; /* DELIVER */
};

/* One issuance created by a claim. The body is sealed (AES-256-GCM) by the caller. */
struct store_claim {
    int64_t tenant_id, user_id;
    const char *serial; /* exactly one of serial / code is non-NULL */
    const char *code;   /* normalized */
    const char *device_id;
    const char *secret_hash; /* hex SHA-256 of the device secret */
    const char *name;        /* may be NULL */
    const char *tags_json;   /* JSON object text, "{}" when none */
    int serial_claims;       /* the tenant's policy (enum store_serial_claims; by serial) */
    /* Sealing needs the serial resolved from a code before the body exists, so the
     * store calls seal(ctx, serial, out_len) inside the transaction; it returns a
     * malloc'd sealed body (or NULL on failure, which aborts the claim). */
    unsigned char *(*seal)(void *ctx, const char *serial, size_t *out_len);
    void *seal_ctx;
};

/* An API token as listed: never its secret, only an ID (the start of its hash). */
#define STORE_TOKEN_ID_LEN 12
struct store_token {
    char id[STORE_TOKEN_ID_LEN + 1];
    char user[STORE_NAME_MAX + 1];
    int64_t created_ms, expires_ms; /* expires_ms 0: never */
};

/* The claim key a device remembers ("serial:SN1" or "code:K7M2QX", code normalized)
 * into out[cap]; 0 or PHY_EINVAL. */
#define STORE_CLAIM_KEY_MAX (7 + PHY_SERIAL_MAX)
int store_claim_key(const char *serial, const char *code, char *out, size_t cap);

struct store_device {
    char device_id[PHY_DEVICE_ID_LEN + 1];
    char serial[PHY_SERIAL_MAX + 1];
    char name[STORE_NAME_MAX + 1];
    char state[24];  /* pending_delivery | provisioned | active | revoked */
    char *tags_json; /* malloc'd */
    int64_t created_ms;
    /* presence (0 when never): */
    int online;
    int64_t last_seen_ms, connected_ms, disconnected_ms;
    char *last_status_json; /* malloc'd or NULL: the last status report */
    int64_t last_status_ms;
};

/* A device's twin; every string malloc'd (free with store_twin_free). */
struct store_twin {
    char *desired; /* JSON object text */
    int64_t desired_version;
    char *reported; /* JSON object text */
    int64_t reported_version;
    char *tags; /* JSON object text (console-only tags) */
};

/* One device changed by a fleet-wide desired patch. */
struct store_push {
    char device_id[PHY_DEVICE_ID_LEN + 1];
    int64_t version;
};

/* A device whose session this node holds (or held until a revoke), as the store
 * has it: what a node compares with its live sessions after an announcement or a
 * lost one (node_sessions). */
struct store_node_session {
    char device_id[PHY_DEVICE_ID_LEN + 1];
    int64_t tenant_id;
    int revoked;
    int64_t desired_version;
    char *desired_patch; /* the patch that made desired_version (NULL: none kept) */
};
void store_node_sessions_free(struct store_node_session *v, size_t n);

/* A device created directly by an operator (bulk load for tests and benchmarks). */
struct store_new_device {
    const char *device_id, *serial, *secret_hash, *tags_json;
};

/* Device list filter: presence -1 any, 0 offline, 1 online; tag_key NULL = any. */
struct store_device_filter {
    int presence;
    const char *tag_key, *tag_value;
};

/* ---- console (docs/protocol.md section 4: sessions, audit, status history) ---- */

#define STORE_CSRF_LEN 43 /* base64url of 32 random bytes */
#define STORE_STATUS_HISTORY 20 /* status reports kept per device */

/* A console login session, found by the SHA-256 of its cookie value. */
struct store_session {
    int64_t tenant_id, user_id;
    char tenant[STORE_NAME_MAX + 1];
    char user[STORE_NAME_MAX + 1];
    char region[16];
    char csrf[STORE_CSRF_LEN + 1]; /* the session's CSRF token (not a credential alone) */
    int64_t created_ms, last_used_ms;
};

/* One audit record. */
struct store_audit {
    int64_t id; /* rises with time; the list cursor */
    int64_t at_ms;
    char actor[STORE_NAME_MAX + 1]; /* the user's name ("" when the user is gone) */
    char action[32];                /* e.g. "device.claim" */
    char device_id[PHY_DEVICE_ID_LEN + 1]; /* "" when none */
    char *detail_json; /* malloc'd JSON object text or NULL */
};

/* One past status report. */
struct store_status_report {
    int64_t at_ms;
    char *status_json; /* malloc'd */
};

/* ---- inter-region (PROTOCOL.md section 3, docs/protocol.md section 3) ---- */

/* eu: an issuance asked for by another region's hub. The sealed body holds
 * everything tenant-owned (device ID, secret, tenant, region, endpoint); the row
 * keeps the device ID in clear only until redelivery ends. */
struct store_remote_issue {
    const char *serial; /* exactly one of serial / code is non-NULL */
    const char *code;   /* normalized */
    const char *device_id;
    const char *region; /* the calling region (from its key, never from the body) */
    int serial_claims;  /* the tenant's policy (enum store_serial_claims), from its region */
    /* as in struct store_claim: called inside the transaction with the resolved serial */
    unsigned char *(*seal)(void *ctx, const char *serial, size_t *out_len);
    void *seal_ctx;
};

/* Regional hub (no provisioning): the first step of a claim. */
struct store_claim_begin {
    int64_t tenant_id;
    int64_t user_id;         /* who claims (claim_replay) */
    const char *code;        /* normalized; NULL for a claim by serial (claim_replay) */
    const char *device_id;
    const char *secret_hash; /* hex SHA-256 of the device secret */
    const char *name;        /* may be NULL */
    const char *tags_json;   /* "{}" when none */
    const char *serial;      /* NULL for a claim by code (eu names it: claim_confirm) */
    int64_t now_ms;
    int64_t hold_ms; /* the row's OUTBOX_CANCEL entry falls due at now_ms + hold_ms */
};

/* What a regional hub still has to tell eu (kept in its store, retried by the
 * sweeper, so a crash loses nothing). One entry per (device_id, kind). */
enum store_outbox_kind {
    OUTBOX_CANCEL = 1, /* a claim whose outcome is unknown: cancel it at eu, then
                        * roll back (or forward, when eu already delivered it) */
    OUTBOX_PURGE = 2,  /* end redelivery at eu: first session, revoke or delete */
    OUTBOX_REARM = 3,  /* a reset: the serial may be registered and claimed again */
};

struct store_outbox_item {
    char device_id[PHY_DEVICE_ID_LEN + 1];
    int kind;                        /* enum store_outbox_kind */
    char serial[PHY_SERIAL_MAX + 1]; /* "" when unknown (a claim by code) */
    int attempts;                    /* failed calls so far */
};

/* A live sealed issuance body (sealed_list), for the hub's re-sealing: the hub sets
 * next to the body that replaces it (sealed_replace). */
struct store_sealed {
    char serial[PHY_SERIAL_MAX + 1];
    char device_id[PHY_DEVICE_ID_LEN + 1];
    unsigned char *sealed; /* malloc'd; store_sealed_free */
    size_t sealed_len;
    unsigned char *next;   /* malloc'd or NULL (left as it is); store_sealed_free */
    size_t next_len;
};
void store_sealed_free(struct store_sealed *v, size_t n);

struct phy_store_ops {
    const char *name; /* "sqlite" */
    /* Opens/creates the store at url (a file path for SQLite). Returns 0 or PHY_E*. */
    int (*open)(const char *url, struct store **out, char *err, size_t errcap);
    void (*close)(struct store *s); /* accepts NULL */

    /* --- admin and auth --- */
    int (*tenant_add)(struct store *s, const char *name, const char *region, int *outcome);
    /* The id of a tenant by name: OK or NOT_FOUND. */
    int (*tenant_lookup)(struct store *s, const char *name, int64_t *id, int *outcome);
    int (*user_add)(struct store *s, const char *tenant, const char *user, const char *pw_hash,
                    int *outcome);
    /* A token of (tenant, user) valid until expires_ms (0: never). */
    int (*token_add)(struct store *s, const char *tenant, const char *user, const char *token_hash,
                     int64_t now_ms, int64_t expires_ms, int *outcome);
    /* Resolves an API token hash at now_ms; outcome STORE_OK with ids and tenant
     * name/region, or STORE_NOT_FOUND (unknown, revoked or expired). */
    int (*token_auth)(struct store *s, const char *token_hash, int64_t now_ms, int64_t *tenant_id,
                      int64_t *user_id, char tenant[STORE_NAME_MAX + 1], char region[16],
                      int *outcome);
    /* Every token of the tenant (expired ones too, until revoked), oldest first:
     * *out malloc'd (free with free), *n of them. */
    int (*token_list)(struct store *s, int64_t tenant_id, struct store_token **out, size_t *n);
    /* Deletes the tenant's token with that ID (STORE_TOKEN_ID_LEN hex characters,
     * the start of its hash): OK or NOT_FOUND; *user_id (may be NULL) its owner. */
    int (*token_revoke)(struct store *s, int64_t tenant_id, const char *id, int64_t *user_id,
                        int *outcome);
    /* Removes a user with its API tokens and console sessions: OK with the ids, or
     * NOT_FOUND. */
    int (*user_remove)(struct store *s, const char *tenant, const char *user, int64_t *tenant_id,
                       int64_t *user_id, int *outcome);
    /* Sets a user's password (argon2id encoding) and ends the user's console
     * sessions but keep_session (a session hash, or NULL): OK with the ids, or
     * NOT_FOUND. */
    int (*user_set_password)(struct store *s, const char *tenant, const char *user,
                             const char *pw_hash, const char *keep_session, int64_t *tenant_id,
                             int64_t *user_id, int *outcome);

    /* --- console users and sessions --- */
    /* A user for login: OK with ids, the stored argon2id encoding (pw_hash, at most
     * 511 bytes) and the tenant's region; NOT_FOUND for an unknown tenant or user. */
    int (*user_get)(struct store *s, const char *tenant, const char *user, int64_t *tenant_id,
                    int64_t *user_id, char pw_hash[512], char region[16], int *outcome);
    /* Login throttle, race-free like claim_attempt_begin: failures of (tenant, user)
     * and of the tenant since since_ms; under both limits a provisional failure is
     * recorded (*allowed = 1, *attempt_id) until forgiven (the login succeeded). The
     * names need not exist (guesses at unknown users are throttled too). */
    int (*login_attempt_begin)(struct store *s, const char *tenant, const char *user,
                               int64_t now_ms, int64_t since_ms, int user_limit, int tenant_limit,
                               int *allowed, int64_t *attempt_id);
    int (*login_attempt_forgive)(struct store *s, int64_t attempt_id);
    /* Failed logins recorded for (tenant, user) since since_ms, into *n. */
    int (*login_failures_count)(struct store *s, const char *tenant, const char *user,
                                int64_t since_ms, int64_t *n);
    /* Stores a new session (id_hash: hex SHA-256 of the cookie value). */
    int (*console_session_create)(struct store *s, const char *id_hash, int64_t tenant_id, int64_t user_id,
                          const char *csrf, int64_t now_ms);
    /* Resolves a session: OK with *out when it exists, was used within idle_ms and
     * created within max_ms (with touch, last_used_ms is then set to now, written at
     * most every few seconds; an event stream opening is not a use); an expired one
     * is deleted and is NOT_FOUND like an unknown one. */
    int (*console_session_auth)(struct store *s, const char *id_hash, int64_t now_ms,
                                int64_t idle_ms, int64_t max_ms, int touch,
                                struct store_session *out, int *outcome);
    /* Housekeeping of the console: deletes sessions idle for more than idle_ms or
     * older than max_ms, and audit records older than audit_keep_ms (<= 0: keep). */
    int (*console_sweep)(struct store *s, int64_t now_ms, int64_t idle_ms, int64_t max_ms,
                         int64_t audit_keep_ms);
    /* Deletes a session (logout); no error when it does not exist. */
    int (*console_session_delete)(struct store *s, const char *id_hash);

    /* --- audit --- */
    /* Appends a record for the tenant (device_id and detail_json may be NULL). */
    int (*audit_add)(struct store *s, int64_t tenant_id, int64_t user_id, int64_t now_ms,
                     const char *action, const char *device_id, const char *detail_json);
    /* The tenant's records newest first, with id < before (before <= 0: from the
     * newest), at most limit (1..500); *out malloc'd (free with store_audit_free). */
    int (*audit_list)(struct store *s, int64_t tenant_id, int64_t before, int limit,
                      struct store_audit **out, size_t *n);

    /* --- provisioning (eu) --- */
    /* register: PROVISIONED when the serial has an issuance. At max_regs_per_serial
     * live registrations the least recently active one without a live code is
     * evicted (unproven ones first; res->evicted); TOO_MANY when every one has a live
     * code. Else stores (token_hash, serial); for an attested serial with challenge
     * (43 base64url chars, from the caller) as the proof it must give (res->attested). */
    int (*reg_create)(struct store *s, const struct store_prov_params *p, const char *serial,
                      const char *token_hash, const char *challenge,
                      const struct store_reg_meta *meta, struct store_reg_result *res,
                      int *outcome);
    /* The live registrations of serial (at most STORE_REG_INFO_MAX, newest first),
     * *attested whether it is an attested serial, *issued whether it was claimed. */
    int (*reg_info)(struct store *s, const struct store_prov_params *p, const char *serial,
                    struct store_reg_info *out, size_t *n, int *attested, int *issued);
    /* The pending proof of the live registration (token_hash, serial): OK with its
     * challenge and the serial's public key (*key malloc'd), or OK with challenge ""
     * when there is nothing to prove (proven, or not attested); BAD_TOKEN. */
    int (*reg_challenge)(struct store *s, const struct store_prov_params *p, const char *serial,
                         const char *token_hash, char challenge[PHY_TOKEN_LEN + 1],
                         unsigned char **key, size_t *key_len, int *outcome);
    /* The caller verified a signature over challenge: the registration is proven
     * (OK), unless its challenge changed or it lapsed meanwhile (BAD_TOKEN). */
    int (*reg_prove)(struct store *s, const struct store_prov_params *p, const char *serial,
                     const char *token_hash, const char *challenge, int *outcome);
    /* Imports (or replaces the keys of) attested serials, all or none. */
    int (*serials_import)(struct store *s, const struct store_serial_key *v, size_t n,
                          int64_t now_ms);
    /* A tenant's policy for claims by serial (enum store_serial_claims): set by name
     * (OK, NOT_FOUND) and read by ID (NOT_FOUND). */
    int (*tenant_serial_claims_set)(struct store *s, const char *tenant, int policy, int *outcome);
    int (*tenant_serial_claims)(struct store *s, int64_t tenant_id, int *policy, int *outcome);
    /* code: BAD_TOKEN unless a live registration (token_hash, serial) exists;
     * PROOF_REQUIRED while it has not proven possession of an attested serial;
     * PROVISIONED when the serial has an issuance; CODE_TAKEN when code is a live
     * code of another registration or an issued code; SLOW_DOWN when its code was
     * set less than a second ago; else replaces the
     * registration's code (expires now + code_ttl) and marks it active. */
    int (*reg_set_code)(struct store *s, const struct store_prov_params *p, const char *serial,
                        const char *token_hash, const char *code, int *outcome);
    /* poll by serial or code (one NULL):
     * 1. an issuance bound to token_hash: DELIVER (recording the first delivery
     *    time and moving the device to "provisioned") when never delivered or
     *    delivered less than grace_ms ago and not purged; else PROVISIONED.
     * 2. an issuance for that serial/code bound to another token: PROVISIONED.
     * 3. no live registration for token_hash, or its serial differs: BAD_TOKEN;
     *    not proven yet (attested serial): PROOF_REQUIRED.
     * 4. code given and not the registration's unexpired code: EXPIRED_CODE.
     * 5. polled less than 0.8 * its interval ago: SLOW_DOWN (its interval grows by
     *    the base interval up to max_interval_s).
     * 6. else PENDING. Cases 4-6 record the poll time. */
    int (*poll)(struct store *s, const struct store_prov_params *p, const char *serial,
                const char *code, const char *token_hash, struct store_poll_result *r,
                int *outcome);
    /* claim by serial or code, atomically: EXPIRED_CODE / UNKNOWN_SERIAL /
     * SERIAL_IN_USE (two or more live registrations) / ALREADY_CLAIMED (issuance
     * exists for the serial or code) / CODE_REQUIRED (by serial: not attested, and
     * the tenant allows only attested serials; an attested serial binds only to a
     * proven registration); else creates the device row (state
     * pending_delivery) and the issuance bound to the chosen registration, spends
     * the serial (all its registrations' codes are cleared). *device gets the row. */
    int (*claim)(struct store *s, const struct store_prov_params *p, const struct store_claim *c,
                 struct store_device *device, int *outcome);
    /* A claim retried by the same user (its answer was lost): the device that user
     * created with the same claim key (store_claim_key) since since_ms, not revoked
     * and not still being claimed: OK with *device, or NOT_FOUND. */
    int (*claim_replay)(struct store *s, int64_t tenant_id, int64_t user_id, const char *claim_key,
                        int64_t since_ms, struct store_device *device, int *outcome);
    /* Race-free throttle for one claim: in one transaction counts the failures since
     * since_ms for the user and the tenant and, when both are under their limits,
     * records a provisional failure (an attempt in flight counts as failed until it
     * is forgiven, so concurrent guesses cannot overshoot) and sets *allowed = 1
     * and *attempt_id. */
    int (*claim_attempt_begin)(struct store *s, int64_t tenant_id, int64_t user_id, int64_t now_ms,
                               int64_t since_ms, int user_limit, int tenant_limit, int *allowed,
                               int64_t *attempt_id);
    /* Creates already-provisioned devices of a tenant in one transaction (all or none:
     * EXISTS when an ID or serial clashes, NOT_FOUND for an unknown tenant). */
    int (*devices_add_bulk)(struct store *s, const char *tenant,
                            const struct store_new_device *devs, size_t n, int64_t now_ms,
                            int *outcome);
    /* Removes the provisional failure of an attempt that did not fail. */
    int (*claim_attempt_forgive)(struct store *s, int64_t attempt_id);
    /* Housekeeping: deletes lapsed registrations, purges sealed bodies whose grace
     * ended, expired codes, throttle rows older than keep_failures_ms. */
    int (*sweep)(struct store *s, const struct store_prov_params *p, int64_t keep_failures_ms);
    /* The number of live registrations (not lapsed at p->now_ms). */
    int (*reg_live_count)(struct store *s, const struct store_prov_params *p, int64_t *n);
    /* The live sealed bodies (not purged) with serial > after ("" from the start), in
     * serial order, at most max: *out malloc'd (store_sealed_free), *n set. */
    int (*sealed_list)(struct store *s, const char *after, size_t max, struct store_sealed **out,
                       size_t *n);
    /* Compare and set, all of v in one transaction: the body of v[i].serial's
     * issuance for v[i].device_id becomes v[i].next (when set) only while it still is
     * v[i].sealed (a purge or another re-seal meanwhile wins). *replaced gets how
     * many were replaced. */
    int (*sealed_replace)(struct store *s, const struct store_sealed *v, size_t n,
                          size_t *replaced);

    /* --- inter-region, eu side (the hub with provisioning) --- */
    /* Idempotent by device ID: when an issuance of ri->region already carries
     * ri->device_id: OK again (serial_out set). Another region's: ALREADY_CLAIMED.
     * Otherwise resolves exactly like claim (EXPIRED_CODE / UNKNOWN_SERIAL /
     * SERIAL_IN_USE / ALREADY_CLAIMED), stores the sealed issuance bound to the
     * chosen registration with its region and spends the serial (codes cleared). No
     * device row is created. serial_out gets the serial. */
    int (*issue_remote)(struct store *s, const struct store_prov_params *p,
                        const struct store_remote_issue *ri, char serial_out[PHY_SERIAL_MAX + 1],
                        int *outcome);
    /* Ends redelivery of the issuance of region carrying device_id: sealed body and
     * device ID erased, the serial stays spent. OK or NOT_FOUND. */
    int (*issuance_purge_remote)(struct store *s, const char *region, const char *device_id,
                                 int *outcome);
    /* Withdraws a never-delivered issuance of region (its claim is rolled back): the
     * row is deleted, so the serial can be claimed again; its registrations stay.
     * PROVISIONED (serial_out set) when it was already delivered; NOT_FOUND. */
    int (*issuance_cancel_remote)(struct store *s, const char *region, const char *device_id,
                                  char serial_out[PHY_SERIAL_MAX + 1], int *outcome);
    /* A reset in region: deletes the serial's issuance and registrations when that
     * region spent it. OK; NOT_FOUND when the serial is not spent by that region. */
    int (*serial_rearm_remote)(struct store *s, const char *region, const char *serial,
                               int *outcome);

    /* --- inter-region, regional side --- */
    /* Creates the device row in state "claiming" (invisible to devices_list and
     * device_get; device_auth accepts it) with remote = 1, plus its OUTBOX_CANCEL
     * entry. OK or EXISTS (device ID taken). */
    int (*claim_begin)(struct store *s, const struct store_claim_begin *c, int *outcome);
    /* eu accepted: a "claiming" row becomes "pending_delivery" with serial (any
     * other state is kept), the OUTBOX_CANCEL entry is removed, *device (may be
     * NULL) gets the row. OK or NOT_FOUND (the row is gone). */
    int (*claim_confirm)(struct store *s, const char *device_id, const char *serial,
                         struct store_device *device, int *outcome);
    /* eu refused or never saw the claim: deletes the row when it is still
     * "claiming" and its OUTBOX_CANCEL entry. */
    int (*claim_abort)(struct store *s, const char *device_id);
    /* Outbox entries due at now_ms (next_ms <= now_ms), oldest first, at most max. */
    int (*outbox_due)(struct store *s, int64_t now_ms, struct store_outbox_item *out, size_t max,
                      size_t *n);
    int (*outbox_done)(struct store *s, const char *device_id, int kind);
    /* A failed call: attempts + 1, due again at next_ms. */
    int (*outbox_retry)(struct store *s, const char *device_id, int kind, int64_t next_ms);

    /* --- devices (console) --- */
    /* Lists a tenant's devices matching f (NULL: all) ordered by device_id, after
     * cursor `after` (or NULL), at most limit; *out malloc'd array of *n (free with
     * store_devices_free). A tag filter matches string values. */
    int (*devices_list)(struct store *s, int64_t tenant_id, const struct store_device_filter *f,
                        const char *after, int limit, struct store_device **out, size_t *n);
    /* One device of the tenant with its twin (t may be NULL): OK or NOT_FOUND. */
    int (*device_get)(struct store *s, int64_t tenant_id, const char *device_id,
                      struct store_device *d, struct store_twin *t, int *outcome);
    /* Replaces the console-only tags (JSON object text): OK or NOT_FOUND. */
    int (*tags_put)(struct store *s, int64_t tenant_id, const char *device_id,
                    const char *tags_json, int *outcome);
    /* Sets a device's name, or clears it (NULL or ""; stored as NULL): OK or
     * NOT_FOUND (no such device of the tenant, or one in state claiming). Revoked
     * devices may be renamed (the row stays for history). PHY_EINVAL for a name over
     * STORE_NAME_MAX bytes or with control characters (0x00-0x1f, 0x7f). */
    int (*device_rename)(struct store *s, int64_t tenant_id, const char *device_id,
                         const char *name, int *outcome);
    /* Merges patch_json (an object) into the desired section with phy_twin_merge.
     * if_match < 0: unconditional; else PRECONDITION unless it equals the current
     * desired version. When the document changed, the version rises by exactly 1
     * and *changed = 1; *version gets the (new) version. OK / NOT_FOUND /
     * PRECONDITION / TOO_BIG. Revoked devices are NOT_FOUND. */
    int (*desired_patch)(struct store *s, int64_t tenant_id, const char *device_id,
                         const char *patch_json, int64_t if_match, int64_t *version, int *changed,
                         int *outcome);
    /* Applies one patch to every non-revoked device of the tenant whose tag
     * tag_key equals tag_value, in one transaction; *matched counts them; every
     * device whose desired changed is returned in *out (malloc'd, *n entries). */
    int (*desired_patch_tag)(struct store *s, int64_t tenant_id, const char *tag_key,
                             const char *tag_value, const char *patch_json, size_t *matched,
                             struct store_push **out, size_t *n, int *outcome);
    /* Revokes: state revoked, secret hash erased, pending issuance purged. Reset also
     * re-arms the serial for one new claim (its issuance and registrations are
     * deleted; the revoked device row stays for history). Delete removes the device,
     * its twin and its issuance. OK or NOT_FOUND.
     * A device with remote = 1 (claimed through eu) also gets, in the same
     * transaction: revoke/delete while claiming, pending_delivery or provisioned:
     * an OUTBOX_PURGE entry (due now); reset: an OUTBOX_REARM entry with its serial
     * (due now) in place of any PURGE entry. */
    int (*device_revoke)(struct store *s, int64_t tenant_id, const char *device_id, int64_t now_ms,
                         int *outcome);
    /* reset: OK when the serial was re-armed (or, for a remote device, the re-arm is
     * queued for eu); PROVISIONED when the device was revoked but the serial could
     * not be re-armed (a newer device holds it, or eu never named it). */
    int (*device_reset)(struct store *s, int64_t tenant_id, const char *device_id, int64_t now_ms,
                        int *outcome);
    int (*device_delete)(struct store *s, int64_t tenant_id, const char *device_id, int *outcome);

    /* --- device hub (device side) --- */
    /* Checks a device's credentials: OK (tenant_id set) when the device exists, is
     * not revoked and secret_hash equals the stored hash (compared with
     * CRYPTO_memcmp); REVOKED; else NOT_FOUND. */
    int (*device_auth)(struct store *s, const char *device_id, const char *secret_hash,
                       int64_t *tenant_id, int *outcome);
    /* A session started: online, connected_ms = last_seen = now, state -> active,
     * and the sealed issuance is purged (redelivery ends at the first session).
     * A remote = 1 device moving to active from claiming, pending_delivery or
     * provisioned gets an OUTBOX_PURGE entry (due now) in the same transaction. */
    /* *gen (may be NULL) gets the session generation: it rises with every open, so
     * that the close of an older session cannot mark a newer one offline. */
    int (*session_open)(struct store *s, const char *device_id, int64_t now_ms, int64_t *gen);
    /* A session ended: offline, disconnected_ms = now, last_seen = last_seen_ms. */
    /* Applies only when gen is the device's current session generation (gen < 0:
     * unconditionally). */
    int (*session_close)(struct store *s, const char *device_id, int64_t gen, int64_t now_ms,
                         int64_t last_seen_ms);
    /* At start-up: every device still marked online whose session this node held
     * (store_set_node), or a node the store does not know, or no node (a store from
     * before nodes), is set offline: no session survives a restart. Other live nodes'
     * devices stay online. Run after node_heartbeat, so this node is known. */
    int (*presence_reset)(struct store *s, int64_t now_ms);
    /* Several hub nodes on one store (docs/store.md "Nodes"). This node's heartbeat:
     * 0, or 1 when the store did not know the node (new, or forgotten by another
     * node's presence_sweep while this one was too slow to beat: its sessions were
     * ended in the store, see session_reclaim); negative on failure. */
    int (*node_heartbeat)(struct store *s, int64_t now_ms);
    /* A session this node still holds, generation gen, after the store ended it (the
     * node was too slow): online again on this node (OK), or NOT_FOUND (the device
     * was deleted), REVOKED, EXISTS (a newer session of the device, on another
     * node). */
    int (*session_reclaim)(struct store *s, const char *device_id, int64_t gen, int64_t now_ms,
                           int *outcome);
    /* Devices whose session was held by another node that has not beaten its heart
     * since dead_before_ms, or by a node the store does not know, are set offline
     * (*n, optional, gets how many); such nodes without devices online are forgotten.
     * A device whose newer session is held by a live node is not touched: the
     * session's node moves with its generation. */
    int (*presence_sweep)(struct store *s, int64_t now_ms, int64_t dead_before_ms, int *n);
    /* Takes or renews the lease of the singleton job name (1..31 of [a-z._]) for this
     * node until until_ms: *held = 1 when this node holds it now (it held it, or the
     * lease had ended by now_ms), else 0 (another node holds it). */
    int (*lease_take)(struct store *s, const char *name, int64_t now_ms, int64_t until_ms,
                      int *held);
    /* The devices online on this node, and those revoked while they were, of tenant
     * (0: every tenant) or the one device_id (NULL: every device): *out (free with
     * store_node_sessions_free) of *n. */
    int (*node_sessions)(struct store *s, int64_t tenant_id, const char *device_id,
                         struct store_node_session **out, size_t *n);
    /* The twin of a device (any tenant: the caller authenticated the device). */
    int (*twin_get)(struct store *s, const char *device_id, struct store_twin *t, int *outcome);
    /* Merges a reported patch; *version and *changed as for desired_patch. OK /
     * NOT_FOUND / TOO_BIG. Also updates last_seen. */
    int (*reported_patch)(struct store *s, const char *device_id, const char *patch_json,
                          int64_t now_ms, int64_t *version, int *changed, int *outcome);
    /* Stores the last status report (JSON object text) and last_seen = now, and
     * appends it to the device's history, which keeps the newest
     * STORE_STATUS_HISTORY reports. */
    int (*status_put)(struct store *s, const char *device_id, const char *status_json,
                      int64_t now_ms);
    /* A device's past status reports, newest first, at most limit: OK or NOT_FOUND
     * (no such device of the tenant, or one in state claiming). *out malloc'd (free
     * with store_status_reports_free). */
    int (*status_history)(struct store *s, int64_t tenant_id, const char *device_id, int limit,
                          struct store_status_report **out, size_t *n, int *outcome);
};

/* The store: the core's operations over the engine that the URL names
 * (postgresql://... or postgres://...: PostgreSQL; anything else: a SQLite file). */
extern const struct phy_store_ops store_ops;

/* Options an engine may use (zeroed: its defaults). */
struct store_engine_opts {
    int pool_size; /* PostgreSQL: connections (default 8) */
};
/* ops.open with engine options (NULL: defaults). */
int store_open_opts(const char *url, const struct store_engine_opts *o, struct store **out,
                    char *err, size_t errcap);
/* "sqlite" or "postgresql". */
const char *store_engine_name(const struct store *s);
/* Names the hub node using s (1..STORE_NODE_ID_MAX of [A-Za-z0-9._:-]): the node
 * recorded with each session it opens, whose heartbeat and leases are its own. 0 or
 * PHY_EINVAL. Set before serving. */
int store_set_node(struct store *s, const char *node_id);
/* Copies every row of from into to, which must be empty (PHY_EEXIST otherwise), in
 * one transaction of to; report gets "table=rows ..."; err a message. */
int store_copy(struct store *from, struct store *to, char *report, size_t cap, char *err,
               size_t errcap);
/* Writes the soft state that pending polls recorded in memory (when each
 * registration last polled, its interval) to the store in one transaction. A poll
 * calls it once the oldest entry is a second old, the hub at each heartbeat, and
 * closing the store too. 0 or a negative error (the soft state is then dropped: it
 * only grows the intervals of polls too fast). */
int store_soft_flush(struct store *s);
/* Pending polls answered from memory (store/soft.h): the registrations' facts are
 * used while on, and forgotten. On from store_open on an engine without announcements
 * (SQLite, one node); off on PostgreSQL until the hub's link to the other nodes
 * listens (nodelink.c turns them on once it does, off when it is lost): without it a
 * claim on another node would reach this node's polls only SOFT_REG_MAX_AGE_MS later. */
void store_poll_facts(struct store *s, int on);
/* Another node announced that the serial's registrations or issuances changed (NULL:
 * any of them may have): the polls of those registrations read the store again. */
void store_poll_facts_forget(struct store *s, const char *serial);
/* Group commit counters (SQLite): write commits, and the operations they carried.
 * PHY_EUNSUPP for an engine that commits each transaction alone (PostgreSQL, whose
 * server groups WAL flushes itself). */
int store_commit_stats(struct store *s, uint64_t *commits, uint64_t *ops);
/* Tests and tools: the first column of the first row of one SQL statement, as text
 * ("<none>" without a row, "<null>" for NULL). Never used by the hub. */
int store_debug_query(struct store *s, const char *sql, char *out, size_t cap);

/* Frees the array returned by devices_list. */
void store_devices_free(struct store_device *d, size_t n);
/* Frees the strings of one device / one twin (not the structs). Accept zeroed ones. */
void store_device_clear(struct store_device *d);
void store_twin_free(struct store_twin *t);
void store_audit_free(struct store_audit *a, size_t n);
void store_status_reports_free(struct store_status_report *r, size_t n);

#endif
