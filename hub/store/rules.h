/* The store's rules with no database: every input limit and check (shared with the
 * handlers, so that the API and the store agree) and the decisions of the
 * provisioning state machine, sessions, throttles, twins and the device lifecycle.
 * core.c reads rows, asks these functions, and writes what they decide. Pure: no
 * I/O, no clock (times are arguments), unit tested in tests/unit/test_store_rules.c. */
#ifndef PHY_HUB_STORE_RULES_H
#define PHY_HUB_STORE_RULES_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "phy/twin.h"

#include "store.h"

/* ---- limits (one definition each) ---- */
#define STORE_REGION_MAX 15       /* token_auth's region[16], a peer region's name */
#define STORE_PW_HASH_MAX 511     /* an encoded argon2id hash is ~100 chars */
#define STORE_TAG_KEY_MAX 64      /* [A-Za-z0-9._-]{1,64} */
#define STORE_TAG_VALUE_MAX 128   /* bytes, no control characters */
#define STORE_TAGS_MAX 32         /* entries of a tags object */
#define STORE_TAGS_JSON_MAX 65536 /* the stored tags text */
#define STORE_LIST_MAX 1000       /* devices_list never returns more rows */
#define STORE_PATCH_JSON_MAX (8 * PHY_TWIN_MAX_BYTES) /* patch text; the result is checked */
#define STORE_STATUS_JSON_MAX 65536                   /* a status report fits in a frame */
#define STORE_AUDIT_ACTION_MAX 31                     /* struct store_audit's action[32] */
#define STORE_AUDIT_DETAIL_MAX 65536
#define STORE_AUDIT_LIST_MAX 500
#define STORE_CODE_MIN_GAP_MS 1000 /* between two code requests of a registration */
#define STORE_SESSION_TOUCH_MS 5000 /* a console session's last use is written this often */

/* ---- device states (SQL text uses the SQL_* forms) ---- */
#define STATE_CLAIMING "claiming" /* regional claim waiting for eu: hidden */
#define STATE_PENDING "pending_delivery"
#define STATE_PROVISIONED "provisioned"
#define STATE_ACTIVE "active"
#define STATE_REVOKED "revoked"
#define SQL_CLAIMING "'" STATE_CLAIMING "'"
#define SQL_PENDING "'" STATE_PENDING "'"
#define SQL_PROVISIONED "'" STATE_PROVISIONED "'"
#define SQL_ACTIVE "'" STATE_ACTIVE "'"
#define SQL_REVOKED "'" STATE_REVOKED "'"
/* The states before a device's first session (its issuance may still be fetched). */
#define SQL_BEFORE_FIRST_SESSION "(" SQL_CLAIMING ", " SQL_PENDING ", " SQL_PROVISIONED ")"

/* ---- input checks: 1 when valid ---- */
int store_str_ok(const char *s, size_t max);       /* 1..max bytes */
int store_serial_ok(const char *s);                /* 1..PHY_SERIAL_MAX of [A-Za-z0-9._-] */
int store_tag_key_ok(const char *s);               /* 1..64 of [A-Za-z0-9._-] */
int store_tag_value_ok(const char *s);             /* <= 128 bytes, no control chars */
int store_name_ok(const char *name);               /* device name: NULL, or <= STORE_NAME_MAX
                                                    * bytes without control chars */
int store_hash_ok(const char *s);                  /* a hex SHA-256 (1..64 chars) */
int store_region_ok(const char *s);                /* 1..15 of [a-z0-9-] */
int store_device_id_ok(const char *s);             /* 1..PHY_DEVICE_ID_LEN bytes */
int store_node_id_ok(const char *s);               /* 1..STORE_NODE_ID_MAX of [A-Za-z0-9._:-] */
int store_session_hash_ok(const char *s);          /* exactly 64 lowercase hex */
int store_token_ok(const char *s); /* exactly PHY_TOKEN_LEN base64url: phy_token_new's
                                    * tokens (CSRF, poll token, challenge) */
int store_audit_action_ok(const char *s);          /* 1..31 of [a-z._] */
int store_outbox_kind_ok(int kind);
int store_params_ok(const struct store_prov_params *p);
/* Upper-cases a code and checks it against the alphabet; 0 or PHY_EINVAL. */
int store_code_normalize(const char *in, char out[PHY_CODE_LEN + 1]);
/* Parses text as a JSON object of at most max bytes: 0 (*out, optional, gets the
 * reference), PHY_ETOOBIG or PHY_EINVAL. */
int store_json_object_parse(const char *text, size_t max, json_t **out);

/* ---- provisioning decisions ---- */

/* Registrations active after this instant are live. */
int64_t rule_live_after(const struct store_prov_params *p);

/* Poll rule 1: an issuance bound to the polling token, as read. */
struct rule_issuance {
    int has_body;         /* the sealed body is still there */
    int delivered;        /* delivered_ms is set */
    int64_t delivered_ms;
    int remote;           /* asked for by another region (no device row here) */
    const char *state;    /* the device row's state (NULL: no row) */
};
/* STORE_DELIVER when it is handed out (again), else STORE_PROVISIONED. */
int rule_issuance_poll(const struct rule_issuance *i, const struct store_prov_params *p);

/* Poll rules 4-6 for the live registration of the polling token. */
struct rule_registration {
    const char *code; /* its current code ("" none) */
    int64_t code_expires_ms;
    int64_t interval_s;
    int has_polled;
    int64_t last_poll_ms;
};
/* STORE_EXPIRED_CODE (code given and not its unexpired code), STORE_SLOW_DOWN
 * (polled less than 0.8 * its interval ago: *interval grows by the base interval up to
 * the cap) or STORE_PENDING; *interval gets the registration's new interval. */
int rule_poll(const struct rule_registration *g, const char *code,
              const struct store_prov_params *p, int64_t *interval);

/* A code request of a registration whose code expires at expires_ms (0: none):
 * 1 when it comes within STORE_CODE_MIN_GAP_MS of the last one. */
int rule_code_too_soon(int64_t expires_ms, const struct store_prov_params *p);

/* A claim by serial of a serial that is attested or not, for a tenant whose policy
 * is serial_claims (enum store_serial_claims), with that many live registrations
 * (counted up to 2; of an attested serial only the proven ones count):
 * STORE_CODE_REQUIRED (unattested, and the tenant allows attested serials only),
 * STORE_OK (exactly one), STORE_UNKNOWN_SERIAL or STORE_SERIAL_IN_USE. */
int rule_claim_by_serial(int attested, int serial_claims, int live_registrations);
/* 1 when a tenant with that policy may claim the serial by serial at all. */
int rule_serial_claim_allowed(int attested, int serial_claims);

/* ---- throttles, console sessions ---- */

/* 1 when an attempt is allowed with u failures of the user and t of the tenant. */
int rule_throttle_allows(int64_t u, int64_t t, int user_limit, int tenant_limit);
/* Progressive lock-out of a console account: failures count over a window that
 * doubles with each further limit's worth of failures within the look-back (at most
 * RULE_LOGIN_LOOKBACK windows): the window to count over, given `failures` of the
 * account within the look-back. */
#define RULE_LOGIN_LOOKBACK 8
int64_t rule_login_window(int64_t window_ms, int64_t failures, int user_limit);
/* 1 when a console session is past its idle or absolute limit. */
int rule_session_expired(int64_t now_ms, int64_t created_ms, int64_t last_used_ms,
                         int64_t idle_ms, int64_t max_ms);
/* 1 when a use at now_ms writes last_used (at most every STORE_SESSION_TOUCH_MS, and
 * at least at half a short idle limit). */
int rule_session_touch(int64_t now_ms, int64_t last_used_ms, int64_t idle_ms);

/* ---- twins ---- */

/* Merges patch into a stored section's text: *out (malloc'd, only when *changed) or
 * *too_big (over PHY_TWIN_MAX_BYTES or the depth limit). A stored section that is not
 * a JSON object is PHY_EIO. */
int rule_section_merge(const char *text, const json_t *patch, char **out, int *changed,
                       int *too_big);

/* ---- revoke, reset, delete ---- */

enum device_action { DEVICE_REVOKE, DEVICE_RESET, DEVICE_DELETE };

/* What an action on a device claimed through eu (remote) must tell eu, in the same
 * transaction: drop_purge (remove a queued OUTBOX_PURGE) and put (0 or the outbox
 * kind to queue, due now). */
struct rule_remote_change {
    int drop_purge;
    int put;
};
struct rule_remote_change rule_device_change_remote(enum device_action act, const char *state,
                                                    const char *serial);
/* The outcome of a reset: STORE_OK when the serial is re-armed (locally: its issuance
 * was deleted; remotely: the re-arm is queued, which needs the serial), else
 * STORE_PROVISIONED. */
int rule_reset_outcome(int remote, const char *serial, int issuance_deleted);

#endif
