/* libFuzzer target: the hub's HTTP API layer, api_handle (hub/router.c) with the router
 * and every provisioning, console, login, static-file and internal (inter-region)
 * handler, against a fake store whose outcomes the input chooses.
 *
 * Input layout (missing parts are absent):
 *   byte 0   flags: bit 0 the eu hub (--provisioning, region "eu", peer "us") else
 *            the regional hub ("us"); bits 1-5 send Authorization, Cookie,
 *            X-CSRF-Token, If-Match, Content-Type even when their line is empty;
 *            bit 6 every argon2id slot is busy (login answers 503 login_busy);
 *            bit 7 no --web-root
 *   byte 1   bits 0-3 the method (methods[], modulo), bits 4-5 the client address
 *            (peer_ips[]), bit 7 "X-Phy-Background: 1"
 *   bytes 2-5 knobs: eight nibbles, one per store call in order; 0 is the natural
 *            outcome, 15 a store failure (PHY_EIO), others op-specific outcomes;
 *            once used up every call is natural
 *   then lines separated by '\n': target (path[?query]), Authorization, Cookie,
 *   X-CSRF-Token, If-Match, Content-Type; the rest is the body (may hold '\n' and
 *   NUL bytes).
 * FUZZ_API_TRACE=1 prints each answer, FUZZ_API_LOG=1 the hub's log lines.
 * A line of one upper-case letter as the path, or of one digit as Authorization,
 * Cookie, X-CSRF-Token or Content-Type, stands for a preset (see the tables), so
 * that the fuzzer reaches authenticated handlers without guessing 43-byte tokens.
 * Targets and header values follow the hub's HTTP parser (lib/http.c): targets of
 * 0x21-0x7e, header values without controls (SP/HTAB trimmed at both ends); other
 * inputs are rejected, since the server never hands them to api_handle.
 *
 * Login stays cheap: the hub's dummy hash and the fake user's hash are argon2id
 * with t=1, m=8 KiB (the real hub uses 64 MiB from login_init, not called here).
 * A regional claim stops at the fake claim_begin (EXISTS or a store failure) or,
 * for knob 2, calls eu at https://127.0.0.1:1 (connection refused, no retry).
 * Checked after each request: status range, JSON bodies, 204 without body, Allow
 * on 405, well-formed extra header lines, a log field without control bytes, and
 * effects (device IDs, event JSON, a push patch for every push), no argon2id slot
 * left taken, and login/claim throttle attempts forgiven unless the request was a
 * wrong guess (check_attempts). The fake store checks what the handlers hand it
 * (JSON objects, device IDs, limits, attempt IDs forgiven once). */
#include <argon2.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "api.h"
#include "handlers.h"
#include "router.h"
#include "hub.h"
#include "phy/config.h"
#include "phy/crypto.h"
#include "phy/err.h"
#include "phy/log.h"
#include "claim.h"
#include "region.h"
#include "seal.h"
#include "store.h"

#define ID "dev_abcdefghijklmnopqrstuvwxyz"
#define ID2 "dev_234567abcdefghijklmnopqrst"
#define COOKIE "c00kie-c00kie-c00kie-c00kie-c00kie-c00kie-c"
#define COOKIE_OTHER "Xookie-c00kie-c00kie-c00kie-c00kie-c00kie-c"
#define CSRF "csrf_csrf_csrf_csrf_csrf_csrf_csrf_csrf_csr"
#define PEER_KEY "fuzz-inter-region-key-0123456789abcdef"
#define PASSWORD "hunter2"
#define SECRET "sssssssssssssssssssssssssssssssssssssssssss"
_Static_assert(sizeof(COOKIE) == PHY_TOKEN_LEN + 1 && sizeof(COOKIE_OTHER) == PHY_TOKEN_LEN + 1,
               "cookie values are tokens");
_Static_assert(sizeof(CSRF) == STORE_CSRF_LEN + 1 && sizeof(SECRET) == PHY_TOKEN_LEN + 1,
               "CSRF tokens and secrets are tokens");

/* ---- the fake store ---- */

struct store {
    struct hub *h;
};

static const uint8_t *knob_p;
static size_t knob_n; /* nibbles left */
static size_t knob_i;
static int code_taken_forever;
static void need(int cond)
{
    if (!cond)
        abort();
}

/* Throttle attempts handed out during this request: forgiven at most once each. */
static struct {
    int64_t id;
    int forgiven;
} attempts[8];
static size_t nattempts;

static int64_t attempt_new(void)
{
    need(nattempts < sizeof(attempts) / sizeof(attempts[0]));
    attempts[nattempts].id = 100 + (int64_t)nattempts;
    attempts[nattempts].forgiven = 0;
    return attempts[nattempts++].id;
}
static char user_hash[256]; /* argon2id of PASSWORD, cheap parameters */
static int trace;           /* FUZZ_API_TRACE set: print each answer */
static int strict;          /* FUZZ_API_STRICT set: see check_attempts */

/* The next nibble of the knobs, 0 once they are used up. */
static unsigned pick(void)
{
    if (knob_i >= knob_n)
        return 0;
    unsigned b = knob_p[knob_i / 2];
    unsigned v = knob_i % 2 ? b >> 4 : b & 15;
    knob_i++;
    return v;
}

static int json_object_text(const char *s)
{
    json_t *v = s ? json_loads(s, JSON_REJECT_DUPLICATES, NULL) : NULL;
    int ok = json_is_object(v);
    json_decref(v);
    return ok;
}

static int id_ok(const char *id)
{
    return id && api_device_id_valid(id, strlen(id));
}

static int owns(int64_t tenant, const char *id)
{
    return tenant == 7 && strcmp(id, ID) == 0;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    need(p != NULL);
    return p;
}

static void fill_device(struct store_device *d, const char *id, unsigned variant)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->device_id, sizeof(d->device_id), "%s", id);
    snprintf(d->serial, sizeof(d->serial), "SN1");
    if (variant == 0) {
        snprintf(d->state, sizeof(d->state), "active");
        d->tags_json = xstrdup("{\"site\":\"berlin\"}");
        d->created_ms = 1767225600000;
        d->online = 1;
        d->last_seen_ms = 1767225605000;
        d->connected_ms = 1767225601000;
        d->last_status_json = xstrdup("{\"uptime\":5}");
        d->last_status_ms = 1767225604000;
    } else { /* odd stored data: unparsable JSON, no times, a long name */
        memset(d->name, 'n', STORE_NAME_MAX * 2);
        snprintf(d->state, sizeof(d->state), "pending_delivery");
        d->tags_json = xstrdup("{not json");
        d->last_status_json = variant == 1 ? xstrdup("[1,2") : NULL;
        d->disconnected_ms = -5;
        d->created_ms = 0;
    }
}

static int f_token_auth(struct store *s, const char *hash, int64_t now_ms, int64_t *tenant_id,
                        int64_t *user_id, char tenant[STORE_NAME_MAX + 1], char region[16],
                        int *outcome)
{
    (void)now_ms;
    static char want[PHY_HASH_HEX_LEN + 1], other[PHY_HASH_HEX_LEN + 1];
    (void)s;
    if (!want[0]) {
        phy_sha256_hex("t0k3n", 5, want);
        phy_sha256_hex("other", 5, other);
    }
    need(strlen(hash) == PHY_HASH_HEX_LEN);
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    *outcome = STORE_NOT_FOUND;
    if (strcmp(hash, want) == 0 || strcmp(hash, other) == 0) {
        int mine = strcmp(hash, want) == 0;
        *tenant_id = mine ? 7 : 8;
        *user_id = 1;
        if (k == 1) /* the longest name tenant-add accepts, with quotes and UTF-8 */
            snprintf(
                tenant, STORE_NAME_MAX + 1, "%s",
                "\"q\" \\ % %s \xc3\xa9\xc3\xa9\xc3\xa9 a-very-long-tenant-name-xxxxxxxxxxxxx");
        else
            snprintf(tenant, STORE_NAME_MAX + 1, "%s", mine ? "acme" : "globex");
        snprintf(region, 16, "%s", mine ? "eu" : "us");
        *outcome = STORE_OK;
    }
    return 0;
}

static int f_user_get(struct store *s, const char *tenant, const char *user, int64_t *tenant_id,
                      int64_t *user_id, char pw_hash[512], char region[16], int *outcome)
{
    (void)s;
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    *outcome = STORE_NOT_FOUND;
    if ((strcmp(tenant, "acme") == 0 && strcmp(user, "alice") == 0) || k == 1 || k == 2) {
        *tenant_id = 7;
        *user_id = 1;
        snprintf(pw_hash, 512, "%s", k == 2 ? "$argon2id$not-a-hash" : user_hash);
        snprintf(region, 16, "%s", k == 1 ? "us" : "eu");
        *outcome = STORE_OK;
    }
    return 0;
}

static int f_login_attempt_begin(struct store *s, const char *tenant, const char *user,
                                 int64_t now_ms, int64_t since_ms, int user_limit, int tenant_limit,
                                 int *allowed, int64_t *attempt_id)
{
    (void)s;
    (void)user_limit;
    (void)tenant_limit;
    need(tenant[0] && user[0] && since_ms < now_ms);
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    *allowed = k != 1;
    if (*allowed) /* like the SQLite store: no attempt, no ID */
        *attempt_id = attempt_new();
    return 0;
}

static int f_failures_count(struct store *s, const char *tenant, const char *user,
                            int64_t since_ms, int64_t *n)
{
    (void)s;
    (void)tenant;
    (void)user;
    (void)since_ms;
    *n = 0;
    return 0;
}

static int f_claim_replay(struct store *s, int64_t tenant_id, int64_t user_id, const char *key,
                          int64_t since_ms, struct store_device *device, int *outcome)
{
    (void)s;
    (void)tenant_id;
    (void)user_id;
    (void)key;
    (void)since_ms;
    memset(device, 0, sizeof *device);
    *outcome = STORE_NOT_FOUND;
    return 0;
}

static int f_token_add(struct store *s, const char *tenant, const char *user, const char *hash,
                       int64_t now_ms, int64_t expires_ms, int *outcome)
{
    (void)s;
    (void)tenant;
    (void)user;
    (void)hash;
    (void)now_ms;
    (void)expires_ms;
    *outcome = STORE_OK;
    return 0;
}

static int f_token_list(struct store *s, int64_t tenant_id, struct store_token **out, size_t *n)
{
    (void)s;
    (void)tenant_id;
    *out = NULL;
    *n = 0;
    return 0;
}

static int f_token_revoke(struct store *s, int64_t tenant_id, const char *id, int64_t *user_id,
                          int *outcome)
{
    (void)s;
    (void)tenant_id;
    (void)id;
    (void)user_id;
    *outcome = STORE_NOT_FOUND;
    return 0;
}

static int f_user_set_password(struct store *s, const char *tenant, const char *user,
                               const char *pw_hash, const char *keep, int64_t *tenant_id,
                               int64_t *user_id, int *outcome)
{
    (void)s;
    (void)tenant;
    (void)user;
    (void)pw_hash;
    (void)keep;
    (void)tenant_id;
    (void)user_id;
    *outcome = STORE_NOT_FOUND;
    return 0;
}

static int f_attempt_forgive(struct store *s, int64_t attempt_id)
{
    (void)s;
    for (size_t i = 0; i < nattempts; i++) {
        if (attempts[i].id == attempt_id) {
            need(!attempts[i].forgiven);
            attempts[i].forgiven = 1;
            return 0;
        }
    }
    abort(); /* never handed out */
}

static int f_session_create(struct store *s, const char *id_hash, int64_t tenant_id,
                            int64_t user_id, const char *csrf, int64_t now_ms)
{
    (void)s;
    (void)tenant_id;
    (void)user_id;
    (void)now_ms;
    need(strlen(id_hash) == PHY_HASH_HEX_LEN && strlen(csrf) == STORE_CSRF_LEN);
    return pick() == 15 ? PHY_EIO : 0;
}

static int f_session_auth(struct store *s, const char *id_hash, int64_t now_ms, int64_t idle_ms,
                          int64_t max_ms, int touch, struct store_session *out, int *outcome)
{
    static char want[PHY_HASH_HEX_LEN + 1];
    (void)s;
    (void)idle_ms;
    (void)max_ms;
    (void)touch;
    if (!want[0])
        phy_sha256_hex(COOKIE, PHY_TOKEN_LEN, want);
    need(strlen(id_hash) == PHY_HASH_HEX_LEN);
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    *outcome = STORE_NOT_FOUND;
    if (strcmp(id_hash, want) != 0 || k == 1)
        return 0;
    memset(out, 0, sizeof(*out));
    out->tenant_id = k == 3 ? 8 : 7;
    out->user_id = 1;
    snprintf(out->tenant, sizeof(out->tenant), "%s", k == 3 ? "globex" : "acme");
    snprintf(out->user, sizeof(out->user), "alice");
    snprintf(out->region, sizeof(out->region), "%s", k == 3 ? "us" : "eu");
    snprintf(out->csrf, sizeof(out->csrf), "%s", k == 2 ? "" : CSRF);
    out->created_ms = now_ms - 1000;
    out->last_used_ms = now_ms - 500;
    *outcome = STORE_OK;
    return 0;
}

static int f_session_delete(struct store *s, const char *id_hash)
{
    (void)s;
    need(strlen(id_hash) == PHY_HASH_HEX_LEN);
    return pick() == 15 ? PHY_EIO : 0;
}

static int f_audit_add(struct store *s, int64_t tenant_id, int64_t user_id, int64_t now_ms,
                       const char *action, const char *device_id, const char *detail_json)
{
    (void)s;
    (void)tenant_id;
    (void)user_id;
    (void)now_ms;
    need(action && action[0] && strlen(action) < 32);
    need(!device_id || id_ok(device_id));
    need(!detail_json || json_object_text(detail_json));
    return pick() == 15 ? PHY_EIO : 0;
}

static int f_audit_list(struct store *s, int64_t tenant_id, int64_t before, int limit,
                        struct store_audit **out, size_t *n)
{
    (void)s;
    (void)tenant_id;
    need(limit >= 1 && limit <= 500 && before >= 0);
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    size_t cnt = k == 1 ? 0 : k == 2 ? (size_t)limit : (size_t)(limit < 2 ? limit : 2);
    *out = calloc(cnt ? cnt : 1, sizeof(**out));
    need(*out != NULL);
    for (size_t i = 0; i < cnt; i++) {
        struct store_audit *a = &(*out)[i];
        a->id = 1000 - (int64_t)i;
        a->at_ms = i % 2 ? 0 : 1767225600000;
        snprintf(a->actor, sizeof(a->actor), "%s", i % 3 ? "alice" : "");
        snprintf(a->action, sizeof(a->action), "device.claim");
        snprintf(a->device_id, sizeof(a->device_id), "%s", i % 2 ? ID : "");
        a->detail_json = i % 3 == 0 ? NULL : xstrdup(i % 3 == 1 ? "{\"serial\":\"SN1\"}" : "{bad");
    }
    *n = cnt;
    return 0;
}

static int prov_params_ok(const struct store_prov_params *p)
{
    return p->now_ms > 0 && p->interval_s > 0 && p->max_regs_per_serial > 0;
}

static int f_reg_create(struct store *s, const struct store_prov_params *p, const char *serial,
                        const char *token_hash, const char *challenge,
                        const struct store_reg_meta *meta, struct store_reg_result *res,
                        int *outcome)
{
    (void)meta;
    static const int oc[] = {STORE_OK,        STORE_PROVISIONED,  STORE_TOO_MANY,
                             STORE_BAD_TOKEN, STORE_EXPIRED_CODE, STORE_PENDING};
    (void)s;
    need(prov_params_ok(p) && phy_serial_valid(serial, strlen(serial)));
    need(strlen(token_hash) == PHY_HASH_HEX_LEN && strlen(challenge) == PHY_TOKEN_LEN);
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    *outcome = oc[k % 6];
    res->attested = k >= 6 && k < 10;
    res->evicted = k >= 8 && k < 12;
    return 0;
}

/* A registration's pending proof: knob 0 a challenge with a real Ed25519 key (any
 * signature the fuzzer makes fails to verify), 1 nothing to prove, others outcomes. */
static int f_reg_challenge(struct store *s, const struct store_prov_params *p, const char *serial,
                           const char *token_hash, char challenge[PHY_TOKEN_LEN + 1],
                           unsigned char **key, size_t *key_len, int *outcome)
{
    static const unsigned char ed25519_spki[44] = {
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00, 0x19, 0xbf, 0x44,
        0x09, 0x69, 0x84, 0xcd, 0xfe, 0x85, 0x41, 0xba, 0xc1, 0x67, 0xdc, 0x3b, 0x96, 0xc8, 0x50,
        0x86, 0xaa, 0x30, 0xb6, 0xb6, 0xcb, 0x0c, 0x5c, 0x38, 0xad, 0x70, 0x31, 0x66, 0xe1};
    (void)s;
    need(prov_params_ok(p) && phy_serial_valid(serial, strlen(serial)));
    need(strlen(token_hash) == PHY_HASH_HEX_LEN);
    *key = NULL;
    challenge[0] = '\0';
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    *outcome = k == 2 ? STORE_BAD_TOKEN : k == 3 ? STORE_PROVISIONED : STORE_OK;
    if (k == 0) {
        memset(challenge, 'c', PHY_TOKEN_LEN);
        challenge[PHY_TOKEN_LEN] = '\0';
        *key = malloc(sizeof ed25519_spki);
        need(*key != NULL);
        memcpy(*key, ed25519_spki, sizeof ed25519_spki);
        *key_len = sizeof ed25519_spki;
    }
    return 0;
}

static int f_reg_prove(struct store *s, const struct store_prov_params *p, const char *serial,
                       const char *token_hash, const char *challenge, int *outcome)
{
    (void)s;
    need(prov_params_ok(p) && phy_serial_valid(serial, strlen(serial)));
    need(strlen(token_hash) == PHY_HASH_HEX_LEN && strlen(challenge) == PHY_TOKEN_LEN);
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    *outcome = k == 1 ? STORE_BAD_TOKEN : STORE_OK;
    return 0;
}

static int f_reg_info(struct store *s, const struct store_prov_params *p, const char *serial,
                      struct store_reg_info *out, size_t *n, int *attested, int *issued)
{
    (void)s;
    need(p != NULL && serial != NULL && phy_serial_valid(serial, strlen(serial)));
    memset(out, 0, sizeof *out);
    snprintf(out->source, sizeof out->source, "192.0.2.1");
    *n = 1;
    *attested = 0;
    *issued = 0;
    return 0;
}

static int f_tenant_serial_claims_set(struct store *s, const char *tenant, int policy,
                                      int *outcome)
{
    (void)s;
    need(tenant != NULL && (policy == SERIAL_CLAIMS_ANY || policy == SERIAL_CLAIMS_ATTESTED));
    *outcome = STORE_OK;
    return 0;
}

static int f_tenant_serial_claims(struct store *s, int64_t tenant_id, int *policy, int *outcome)
{
    (void)s;
    (void)tenant_id;
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    *policy = k == 1 ? SERIAL_CLAIMS_ANY : SERIAL_CLAIMS_ATTESTED;
    *outcome = k == 2 ? STORE_NOT_FOUND : STORE_OK;
    return 0;
}

static int f_reg_set_code(struct store *s, const struct store_prov_params *p, const char *serial,
                          const char *token_hash, const char *code, int *outcome)
{
    static const int oc[] = {STORE_OK,          STORE_CODE_TAKEN, STORE_SLOW_DOWN,
                             STORE_PROVISIONED, STORE_BAD_TOKEN,  STORE_EXPIRED_CODE};
    char norm[PHY_CODE_LEN + 1];
    (void)s;
    need(prov_params_ok(p) && phy_serial_valid(serial, strlen(serial)));
    need(strlen(token_hash) == PHY_HASH_HEX_LEN);
    need(phy_code_normalize(code, strlen(code), norm) == 0 && strcmp(norm, code) == 0);
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    if (k == 14)
        code_taken_forever = 1;
    *outcome = code_taken_forever ? STORE_CODE_TAKEN : oc[k % 6];
    return 0;
}

static int f_poll(struct store *s, const struct store_prov_params *p, const char *serial,
                  const char *code, const char *token_hash, struct store_poll_result *r,
                  int *outcome)
{
    (void)token_hash;
    need(prov_params_ok(p) && p->deliver_check != NULL);
    need((serial == NULL) != (code == NULL));
    unsigned k = pick();
    switch (k) {
    case 0:
        *outcome = STORE_PENDING;
        r->interval_s = p->interval_s;
        return 0;
    case 1:
        *outcome = STORE_SLOW_DOWN;
        r->interval_s = p->interval_s * 2;
        return 0;
    case 2:
    case 3:
    case 4: { /* DELIVER: eu's own device, another region's, a body that does not open */
        struct claim_seal_ctx sc = {
            s->h, ID, SECRET, "acme", k == 3 ? "us" : "eu", "portal-eu.phystack.com:443"};
        size_t len = 0;
        unsigned char *sealed = claim_seal_issuance(&sc, "SN1", &len);
        need(sealed != NULL);
        if (k == 4)
            sealed[len - 1] ^= 1;
        if (p->deliver_check(p->deliver_ctx, ID, sealed, len) != 0) {
            free(sealed);
            return PHY_ECRYPTO;
        }
        *outcome = STORE_DELIVER;
        r->tenant_id = k == 3 ? 0 : 7;
        snprintf(r->device_id, sizeof(r->device_id), "%s", ID);
        r->sealed = sealed;
        r->sealed_len = len;
        return 0;
    }
    case 5:
        *outcome = STORE_PROVISIONED;
        return 0;
    case 6:
        *outcome = STORE_BAD_TOKEN;
        return 0;
    case 7:
        *outcome = STORE_EXPIRED_CODE;
        return 0;
    case 8:
        *outcome = STORE_OK; /* not a poll outcome */
        return 0;
    case 9:
        *outcome = STORE_DELIVER; /* without calling deliver_check */
        return 0;
    default:
        return PHY_EIO;
    }
}

static int f_claim_attempt_begin(struct store *s, int64_t tenant_id, int64_t user_id,
                                 int64_t now_ms, int64_t since_ms, int user_limit, int tenant_limit,
                                 int *allowed, int64_t *attempt_id)
{
    (void)s;
    (void)tenant_id;
    (void)user_id;
    (void)user_limit;
    (void)tenant_limit;
    need(since_ms < now_ms);
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    *allowed = k != 1;
    if (*allowed) /* like the SQLite store: no attempt, no ID */
        *attempt_id = attempt_new();
    return 0;
}

/* Checks a claim's tags as the handler promised them: an object of string values. */
static void check_tags(const char *tags_json)
{
    json_t *v = json_loads(tags_json, JSON_REJECT_DUPLICATES, NULL);
    const char *key;
    json_t *val;
    need(json_is_object(v) && json_object_size(v) <= 32);
    json_object_foreach(v, key, val) need(json_is_string(val));
    json_decref(v);
}

static const int refusals[] = {STORE_OK,
                               STORE_EXPIRED_CODE,
                               STORE_UNKNOWN_SERIAL,
                               STORE_SERIAL_IN_USE,
                               STORE_ALREADY_CLAIMED,
                               STORE_TOO_BIG};

static int f_claim(struct store *s, const struct store_prov_params *p, const struct store_claim *c,
                   struct store_device *device, int *outcome)
{
    (void)s;
    need(prov_params_ok(p));
    need((c->serial == NULL) != (c->code == NULL));
    need(id_ok(c->device_id) && strlen(c->secret_hash) == PHY_HASH_HEX_LEN);
    check_tags(c->tags_json);
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    *outcome = refusals[k % 6];
    if (*outcome != STORE_OK)
        return 0;
    size_t len = 0;
    unsigned char *sealed = c->seal(c->seal_ctx, c->serial ? c->serial : "SNCODE", &len);
    need(sealed != NULL && len > PHY_AEAD_OVERHEAD);
    free(sealed);
    memset(device, 0, sizeof(*device));
    snprintf(device->device_id, sizeof(device->device_id), "%s", c->device_id);
    snprintf(device->serial, sizeof(device->serial), "%s", c->serial ? c->serial : "SNCODE");
    snprintf(device->name, sizeof(device->name), "%s", c->name ? c->name : "");
    snprintf(device->state, sizeof(device->state), "pending_delivery");
    device->tags_json = xstrdup(c->tags_json);
    device->created_ms = p->now_ms;
    return 0;
}

static int f_issue_remote(struct store *s, const struct store_prov_params *p,
                          const struct store_remote_issue *ri, char serial_out[PHY_SERIAL_MAX + 1],
                          int *outcome)
{
    (void)s;
    need(prov_params_ok(p));
    need((ri->serial == NULL) != (ri->code == NULL));
    need(id_ok(ri->device_id) && region_name_valid(ri->region));
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    *outcome = refusals[k % 6];
    if (*outcome != STORE_OK)
        return 0;
    size_t len = 0;
    unsigned char *sealed = ri->seal(ri->seal_ctx, ri->serial ? ri->serial : "SNCODE", &len);
    need(sealed != NULL);
    free(sealed);
    snprintf(serial_out, PHY_SERIAL_MAX + 1, "%s", ri->serial ? ri->serial : "SNCODE");
    return 0;
}

static int f_purge_remote(struct store *s, const char *region, const char *device_id, int *outcome)
{
    (void)s;
    need(region_name_valid(region) && id_ok(device_id));
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    *outcome = k == 1 ? STORE_NOT_FOUND : STORE_OK;
    return 0;
}

static int f_cancel_remote(struct store *s, const char *region, const char *device_id,
                           char serial_out[PHY_SERIAL_MAX + 1], int *outcome)
{
    (void)s;
    need(region_name_valid(region) && id_ok(device_id));
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    *outcome = k == 1 ? STORE_PROVISIONED : k == 2 ? STORE_NOT_FOUND : STORE_OK;
    if (k == 1)
        snprintf(serial_out, PHY_SERIAL_MAX + 1, "SN1");
    return 0;
}

static int f_rearm_remote(struct store *s, const char *region, const char *serial, int *outcome)
{
    (void)s;
    need(region_name_valid(region) && phy_serial_valid(serial, strlen(serial)));
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    *outcome = k == 1 ? STORE_NOT_FOUND : STORE_OK;
    return 0;
}

/* Regional claims: by default the claim stops here (no call to eu). */
static int f_claim_begin(struct store *s, const struct store_claim_begin *c, int *outcome)
{
    (void)s;
    need(id_ok(c->device_id) && strlen(c->secret_hash) == PHY_HASH_HEX_LEN);
    check_tags(c->tags_json);
    unsigned k = pick();
    if (k == 1 || k == 15)
        return PHY_EIO;
    *outcome = k == 2 ? STORE_OK : STORE_EXISTS;
    return 0;
}

static int f_claim_confirm(struct store *s, const char *device_id, const char *serial,
                           struct store_device *device, int *outcome)
{
    (void)s;
    need(id_ok(device_id) && phy_serial_valid(serial, strlen(serial)));
    fill_device(device, device_id, 0);
    *outcome = STORE_OK;
    return 0;
}

static int f_claim_abort(struct store *s, const char *device_id)
{
    (void)s;
    need(id_ok(device_id));
    return 0;
}

static int f_devices_list(struct store *s, int64_t tenant_id, const struct store_device_filter *f,
                          const char *after, int limit, struct store_device **out, size_t *n)
{
    (void)s;
    need(limit >= 1 && limit <= 500 && f->presence >= -1 && f->presence <= 1);
    need(!after || id_ok(after));
    need((f->tag_key == NULL) == (f->tag_value == NULL));
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    size_t cnt = k == 1 ? (size_t)limit : k == 2 ? 0 : k == 3 ? 1 : tenant_id == 7 ? 1 : 0;
    *out = calloc(cnt ? cnt : 1, sizeof(**out));
    need(*out != NULL);
    for (size_t i = 0; i < cnt; i++)
        fill_device(&(*out)[i], i % 2 ? ID2 : ID, k == 3 ? 1 : 0);
    *n = cnt;
    return 0;
}

static int f_device_get(struct store *s, int64_t tenant_id, const char *id, struct store_device *d,
                        struct store_twin *t, int *outcome)
{
    (void)s;
    need(id_ok(id));
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    *outcome = (k == 0 && owns(tenant_id, id)) || k == 1 || k == 3 ? STORE_OK : STORE_NOT_FOUND;
    if (*outcome != STORE_OK)
        return 0;
    fill_device(d, id, k == 0 ? 0 : k == 1 ? 1 : 2);
    if (t) {
        if (k == 0) {
            t->desired = xstrdup("{\"a\":{\"b\":1}}");
            t->desired_version = 3;
            t->reported = xstrdup("{}");
            t->tags = xstrdup("{\"site\":\"berlin\"}");
        } else if (k == 1) {
            t->desired = xstrdup("[");
            t->desired_version = INT64_MAX;
            t->reported_version = -1;
        }
    }
    return 0;
}

static int f_tags_put(struct store *s, int64_t tenant_id, const char *id, const char *tags_json,
                      int *outcome)
{
    (void)s;
    need(id_ok(id));
    check_tags(tags_json);
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    *outcome = k == 0 && owns(tenant_id, id) ? STORE_OK : k == 2 ? STORE_OK : STORE_NOT_FOUND;
    return 0;
}

static int f_desired_patch(struct store *s, int64_t tenant_id, const char *id, const char *patch,
                           int64_t if_match, int64_t *version, int *changed, int *outcome)
{
    (void)s;
    need(id_ok(id) && json_object_text(patch) && if_match >= -1);
    unsigned k = pick();
    *changed = 0;
    *version = 3;
    switch (k) {
    case 0:
        *outcome = owns(tenant_id, id) ? STORE_OK : STORE_NOT_FOUND;
        if (*outcome == STORE_OK && if_match >= 0 && if_match != 3)
            *outcome = STORE_PRECONDITION;
        if (*outcome == STORE_OK) {
            *version = 4;
            *changed = 1;
        }
        return 0;
    case 1:
        *outcome = STORE_OK;
        return 0;
    case 2:
        *outcome = STORE_PRECONDITION;
        *version = -1;
        return 0;
    case 3:
        *outcome = STORE_TOO_BIG;
        return 0;
    case 4:
        *outcome = STORE_NOT_FOUND;
        return 0;
    case 5:
        *outcome = STORE_EXISTS;
        return 0;
    case 6:
        *outcome = STORE_OK;
        *version = INT64_MAX;
        *changed = 1;
        return 0;
    default:
        return PHY_EIO;
    }
}

static int f_desired_patch_tag(struct store *s, int64_t tenant_id, const char *key,
                               const char *value, const char *patch, size_t *matched,
                               struct store_push **out, size_t *n, int *outcome)
{
    (void)s;
    (void)tenant_id;
    need(key && value && key[0] && strlen(key) <= 64 && strlen(value) <= 128);
    need(json_object_text(patch));
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    *matched = 0;
    *n = 0;
    *out = NULL;
    *outcome = k == 2 ? STORE_TOO_BIG : k == 3 ? STORE_NOT_FOUND : STORE_OK;
    if (*outcome == STORE_OK && k == 0) {
        *out = calloc(2, sizeof(**out));
        need(*out != NULL);
        snprintf((*out)[0].device_id, sizeof((*out)[0].device_id), "%s", ID);
        (*out)[0].version = 5;
        snprintf((*out)[1].device_id, sizeof((*out)[1].device_id), "%s", ID2);
        (*out)[1].version = 9;
        *n = 2;
        *matched = 3;
    }
    return 0;
}

static int device_op(int64_t tenant_id, const char *id, int *outcome)
{
    need(id_ok(id));
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    *outcome = k == 0   ? (owns(tenant_id, id) ? STORE_OK : STORE_NOT_FOUND)
               : k == 1 ? STORE_NOT_FOUND
               : k == 2 ? STORE_PROVISIONED
               : k == 3 ? STORE_OK
                        : STORE_EXISTS;
    return 0;
}

static int f_revoke(struct store *s, int64_t tenant_id, const char *id, int64_t now, int *outcome)
{
    (void)s;
    (void)now;
    return device_op(tenant_id, id, outcome);
}

static int f_reset(struct store *s, int64_t tenant_id, const char *id, int64_t now, int *outcome)
{
    (void)s;
    (void)now;
    return device_op(tenant_id, id, outcome);
}

static int f_delete(struct store *s, int64_t tenant_id, const char *id, int *outcome)
{
    (void)s;
    return device_op(tenant_id, id, outcome);
}

static int f_status_history(struct store *s, int64_t tenant_id, const char *device_id, int limit,
                            struct store_status_report **out, size_t *n, int *outcome)
{
    (void)s;
    need(id_ok(device_id) && limit >= 1 && limit <= STORE_STATUS_HISTORY);
    unsigned k = pick();
    if (k == 15)
        return PHY_EIO;
    *out = NULL;
    *n = 0;
    *outcome =
        (k == 0 && owns(tenant_id, device_id)) || k == 1 || k == 3 ? STORE_OK : STORE_NOT_FOUND;
    if (*outcome != STORE_OK)
        return 0;
    size_t cnt = k == 1 ? 0 : k == 3 ? (size_t)limit : 3;
    *out = calloc(cnt ? cnt : 1, sizeof(**out));
    need(*out != NULL);
    for (size_t i = 0; i < cnt; i++) {
        (*out)[i].at_ms = k == 3 ? 0 : 1767225600000 - (int64_t)i * 1000;
        (*out)[i].status_json = xstrdup(k == 3 ? "{\"x\":" : "{\"uptime\":5}");
    }
    *n = cnt;
    return 0;
}

static struct phy_store_ops fake_ops = {
    .name = "fuzz",
    .token_auth = f_token_auth,
    .user_get = f_user_get,
    .login_attempt_begin = f_login_attempt_begin,
    .login_attempt_forgive = f_attempt_forgive,
    .login_failures_count = f_failures_count,
    .claim_replay = f_claim_replay,
    .token_list = f_token_list,
    .token_add = f_token_add,
    .token_revoke = f_token_revoke,
    .user_set_password = f_user_set_password,
    .console_session_create = f_session_create,
    .console_session_auth = f_session_auth,
    .console_session_delete = f_session_delete,
    .audit_add = f_audit_add,
    .audit_list = f_audit_list,
    .reg_create = f_reg_create,
    .reg_challenge = f_reg_challenge,
    .reg_prove = f_reg_prove,
    .tenant_serial_claims = f_tenant_serial_claims,
    .tenant_serial_claims_set = f_tenant_serial_claims_set,
    .reg_info = f_reg_info,
    .reg_set_code = f_reg_set_code,
    .poll = f_poll,
    .claim = f_claim,
    .claim_attempt_begin = f_claim_attempt_begin,
    .claim_attempt_forgive = f_attempt_forgive,
    .issue_remote = f_issue_remote,
    .issuance_purge_remote = f_purge_remote,
    .issuance_cancel_remote = f_cancel_remote,
    .serial_rearm_remote = f_rearm_remote,
    .claim_begin = f_claim_begin,
    .claim_confirm = f_claim_confirm,
    .claim_abort = f_claim_abort,
    .devices_list = f_devices_list,
    .device_get = f_device_get,
    .tags_put = f_tags_put,
    .desired_patch = f_desired_patch,
    .desired_patch_tag = f_desired_patch_tag,
    .device_revoke = f_revoke,
    .device_reset = f_reset,
    .device_delete = f_delete,
    .status_history = f_status_history,
};

/* ---- the two hubs ---- */

static struct hub hub_eu, hub_us;
static struct store store_eu = {&hub_eu}, store_us = {&hub_us};
/* mkdtemp template: the prefix and six X, filled in at start-up */
static char tmpdir[] = "/tmp/phy-fuzz-api-______";
static char web_root[sizeof(tmpdir) + 8], key_file[sizeof(tmpdir) + 8];
static char peer_arg[sizeof(tmpdir) + 16];

static const char *const web_files[] = {"index.html", "app.js",    "style.css", "empty.json",
                                        "bin.png",    "link.html", "sub.css",   "pipe.js"};

static void write_file(const char *path, const void *data, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    need(fd >= 0 && write(fd, data, n) == (ssize_t)n);
    close(fd);
}

static void cleanup(void)
{
    char p[sizeof(web_root) + 32];
    for (size_t i = 0; i < sizeof(web_files) / sizeof(web_files[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", web_root, web_files[i]);
        if (unlink(p) != 0)
            rmdir(p);
    }
    rmdir(web_root);
    unlink(key_file);
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof(p), "%s/%s.ratchet", tmpdir, i ? "eu" : "us");
        unlink(p);
    }
    rmdir(tmpdir);
}

static void make_files(void)
{
    char p[sizeof(web_root) + 32];
    memset(tmpdir + sizeof(tmpdir) - 7, 'X', 6);
    need(mkdtemp(tmpdir) != NULL);
    snprintf(web_root, sizeof(web_root), "%s/web", tmpdir);
    snprintf(key_file, sizeof(key_file), "%s/key", tmpdir);
    snprintf(peer_arg, sizeof(peer_arg), "us=%s", key_file);
    atexit(cleanup);
    need(mkdir(web_root, 0700) == 0);
    write_file(key_file, PEER_KEY "\n", sizeof(PEER_KEY), 0600);
#define WEB(name, text, n)                                                                         \
    do {                                                                                           \
        snprintf(p, sizeof(p), "%s/%s", web_root, name);                                           \
        write_file(p, text, n, 0644);                                                              \
    } while (0)
    WEB("index.html", "<!doctype html><p>console</p>\n", 30);
    WEB("app.js", "console.log(1);\n", 16);
    WEB("style.css", "p{}\n", 4);
    WEB("empty.json", "", 0);
    WEB("bin.png", "\x89PNG\0\0\0\r", 8);
#undef WEB
    snprintf(p, sizeof(p), "%s/link.html", web_root);
    need(symlink("index.html", p) == 0);
    snprintf(p, sizeof(p), "%s/sub.css", web_root);
    need(mkdir(p, 0700) == 0);
    snprintf(p, sizeof(p), "%s/pipe.js", web_root);
    need(mkfifo(p, 0600) == 0);
}

static void hub_init(struct hub *h, struct store *st, int eu)
{
    static char region_eu[] = "eu", region_us[] = "us";
    static char endpoint_eu[] = "portal-eu.phystack.com:443",
                endpoint_us[] = "portal-us.phystack.com:443";
    static char url[] = "https://127.0.0.1:1";
    char err[256];
    memset(h, 0, sizeof(*h));
    h->store_ops = &fake_ops;
    h->store = st;
    h->cfg.region = eu ? region_eu : region_us;
    h->cfg.provisioning = eu;
    h->cfg.public_endpoint = eu ? endpoint_eu : endpoint_us;
    h->cfg.code_ttl_s = 600;
    h->cfg.poll_interval_s = 5;
    h->cfg.max_poll_interval_s = 60;
    h->cfg.issuance_grace_s = 3600;
    h->cfg.registration_idle_s = 900;
    h->cfg.max_body = 1 << 20;
    h->cfg.claim_user_limit = 10;
    h->cfg.claim_tenant_limit = 100;
    h->cfg.claim_window_s = 900;
    h->cfg.inter_region_timeout_s = 1;
    h->cfg.inter_region_attempts = 1;
    h->cfg.web_root = web_root;
    h->cfg.session_idle_s = 3600;
    h->cfg.session_max_s = 86400;
    h->cfg.login_user_limit = 5;
    h->cfg.login_tenant_limit = 50;
    h->cfg.login_window_s = 900;
    h->cfg.login_peer_limit = 20;
    for (size_t i = 0; i < sizeof(h->issuance_key); i++)
        h->issuance_key[i] = (unsigned char)(i * 7 + 1);
    char ratchet[sizeof(tmpdir) + 16];
    snprintf(ratchet, sizeof(ratchet), "%s/%s.ratchet", tmpdir, eu ? "eu" : "us");
    if (seal_ring_open(&h->seal, ratchet, h->issuance_key, 900000, hub_now_ms(), 1, err,
                       sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_api: seal ring: %s\n", err);
        abort();
    }
    if (eu) {
        need(phy_strlist_add(&h->cfg.peers, peer_arg) == 0);
    } else {
        h->cfg.provisioning_url = url;
        h->cfg.inter_region_key_file = key_file;
    }
    if (region_setup(h, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_api: region_setup: %s\n", err);
        abort();
    }
    /* Cheap argon2id (t=1, 8 KiB) in place of login_init's 64 MiB one. */
    static const unsigned char salt[16] = "fuzz-salt-fuzz!";
    need(argon2id_hash_encoded(1, 8, 1, "dummy", 5, salt, sizeof(salt), 32, h->login_dummy_hash,
                               sizeof(h->login_dummy_hash)) == ARGON2_OK);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static const unsigned char salt[16] = "fuzz-salt-user!";
    phy_log_init("fuzz_api",
                 getenv("FUZZ_API_LOG") ? PHY_LOG_DEBUG : (enum phy_log_level)(PHY_LOG_ERROR + 1));
    trace = getenv("FUZZ_API_TRACE") != NULL;
    strict = getenv("FUZZ_API_STRICT") != NULL;
    make_files();
    need(argon2id_hash_encoded(1, 8, 1, PASSWORD, strlen(PASSWORD), salt, sizeof(salt), 32,
                               user_hash, sizeof(user_hash)) == ARGON2_OK);
    hub_init(&hub_eu, &store_eu, 1);
    hub_init(&hub_us, &store_us, 0);
    return 0;
}

/* ---- the input ---- */

static const char *const methods[] = {"GET",  "POST",    "PUT", "PATCH", "DELETE",
                                      "HEAD", "OPTIONS", "get", "TRACE", "CONNECT"};

#define DEV "/api/v1/devices/" ID
static const char *const paths[32] = {
    "/v1/provisioning/register",
    "/v1/provisioning/code",
    "/v1/provisioning/poll",
    "/api/v1/devices/claim",
    "/api/v1/devices",
    "/api/v1/twins/desired",
    DEV,
    DEV "/twin/desired",
    DEV "/tags",
    DEV "/revoke",
    DEV "/reset",
    DEV "/status-history",
    "/api/v1/login",
    "/api/v1/logout",
    "/api/v1/session",
    "/api/v1/audit",
    "/internal/v1/issuances",
    "/internal/v1/issuances/" ID,
    "/internal/v1/issuances/" ID "/cancel",
    "/internal/v1/serials/rearm",
    "/healthz",
    "/metrics",
    "/",
    "/app.js",
    "/api/v1/devices/" ID2,
    "/bin.png",
    "/api/v1/tokens",
    "/api/v1/tokens/0123456789ab",
    "/api/v1/password",
    "/api/v1/tenant",
    "/api/v1/registrations",
    "/internal/v1/serials",
};
#undef DEV

static const char *const auths[] = {
    "Bearer t0k3n",
    "Bearer other",
    "Bearer " PEER_KEY,
    "Basic dXNlcjpwdw==",
    "Bearer " PEER_KEY "x",
    "Bearer "
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", /* 129 bytes */
};
static const char *const cookies[] = {
    (API_SESSION_COOKIE "=" COOKIE),
    ("theme=dark;phy_session=x; " API_SESSION_COOKIE "=" COOKIE " ;"),
    (API_SESSION_COOKIE "=" COOKIE "; " API_SESSION_COOKIE "=" COOKIE_OTHER),
    (API_SESSION_COOKIE "=\"" COOKIE "\""),
    (API_SESSION_COOKIE "=" COOKIE_OTHER),
    ("phy_session=" COOKIE),
};
static const char *const peer_ips[] = {"203.0.113.7", "2001:db8::1", "", "127.0.0.1"};
static const char *const csrfs[] = {CSRF, "csrf_csrf_csrf_csrf_csrf_csrf_csrf_csrf_csX"};
static const char *const ctypes[] = {"application/json", "application/merge-patch+json",
                                     "Application/JSON; charset=utf-8", "text/plain",
                                     "application/jsonx"};

#define NFIELDS 6 /* target, Authorization, Cookie, X-CSRF-Token, If-Match, Content-Type */

/* A header value as the HTTP parser yields it: trimmed, no controls or DEL. 0 when
 * the server would have refused the request. */
static int header_value(const char **p, size_t *n)
{
    while (*n && (**p == ' ' || **p == '\t'))
        (*p)++, (*n)--;
    while (*n && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
        (*n)--;
    for (size_t i = 0; i < *n; i++) {
        unsigned char c = (unsigned char)(*p)[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return 0;
    }
    return 1;
}

static char *copy(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    need(s != NULL);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* ---- checks on the answer ---- */

static int is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static void check_headers(const char *x, size_t cap)
{
    need(memchr(x, '\0', cap) != NULL);
    while (*x) {
        const char *name = x;
        while (is_tchar((unsigned char)*x))
            x++;
        need(x > name && x[0] == ':' && x[1] == ' ');
        x += 2;
        while ((unsigned char)*x >= 0x20 && *x != 0x7f)
            x++;
        need(x[0] == '\r' && x[1] == '\n');
        x += 2;
    }
}

static void check_response(const struct api_response *res)
{
    need(res->status >= 100 && res->status <= 599);
    if (res->body) {
        need(res->body[res->body_len] == '\0');
        if (!res->content_type) {
            json_t *v = json_loadb(res->body, res->body_len, JSON_REJECT_DUPLICATES, NULL);
            need(json_is_object(v));
            json_decref(v);
        }
    } else {
        need(res->body_len == 0);
    }
    if (res->status == 204)
        need(res->body_len == 0);
    check_headers(res->extra_headers, sizeof(res->extra_headers));
    if (res->status == 405)
        need(strncmp(res->extra_headers, "Allow: ", 7) == 0);
    need(memchr(res->log, '\0', sizeof(res->log)) != NULL);
    for (const char *l = res->log; *l; l++)
        need((unsigned char)*l >= 0x20 && *l != 0x7f);
    need(res->neffects == 0 || res->effects != NULL);
    for (size_t i = 0; i < res->neffects; i++) {
        const struct api_effect *e = &res->effects[i];
        switch (e->kind) {
        case API_EFFECT_PUSH_DESIRED:
            need(id_ok(e->device_id) && json_object_text(res->push_patch));
            break;
        case API_EFFECT_CLOSE_SESSION:
            need(id_ok(e->device_id) && (e->close_code == 4001 || e->close_code == 4002));
            break;
        case API_EFFECT_EVENT:
            need(id_ok(e->device_id) && e->event_type && json_object_text(e->event_json));
            break;
        case API_EFFECT_END_STREAMS:
            need(strlen(e->session_hash) == PHY_HASH_HEX_LEN);
            break;
        default:
            abort();
        }
    }
}

/* A throttle attempt (login or claim) stays counted as a failure only when the
 * request was a wrong guess: 401 invalid_login, 404 expired_code/unknown_serial.
 * A store failure part-way (503) may leave one counted unless FUZZ_API_STRICT. */
static void check_attempts(const struct api_response *res)
{
    for (size_t i = 0; i < nattempts; i++) {
        if (attempts[i].forgiven || res->status == 401 || res->status == 404)
            continue;
        if (res->status == 503 && !strict)
            continue;
        if (trace)
            fprintf(stderr, "fuzz_api: attempt %lld not forgiven, status %d\n",
                    (long long)attempts[i].id, res->status);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 6)
        return -1;
    unsigned flags = data[0];
    struct hub *h = flags & 1 ? &hub_eu : &hub_us;
    const char *method = methods[(data[1] & 15) % (sizeof(methods) / sizeof(methods[0]))];
    knob_p = data + 2;
    knob_n = 8;
    knob_i = 0;
    code_taken_forever = 0;
    nattempts = 0;

    /* Split the text into the fields and the body. */
    const char *p = (const char *)data + 6, *end = (const char *)data + size;
    const char *fp[NFIELDS] = {NULL};
    size_t fn[NFIELDS] = {0};
    int nf = 0;
    while (nf < NFIELDS && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        fp[nf] = p;
        fn[nf] = n;
        nf++;
        p = nl ? nl + 1 : end;
    }
    const char *body_p = p;
    size_t body_n = (size_t)(end - p);

    /* The target: 1+ bytes of 0x21-0x7e (or a preset letter), split at '?'. */
    const char *target = fp[0];
    size_t tn = fn[0];
    if (!target || tn == 0)
        return -1;
    for (size_t i = 0; i < tn; i++)
        if ((unsigned char)target[i] < 0x21 || (unsigned char)target[i] > 0x7e)
            return -1;
    const char *q = memchr(target, '?', tn);
    size_t pn = q ? (size_t)(q - target) : tn;
    char *path, *query = q ? copy(q + 1, tn - pn - 1) : NULL;
    if (pn == 1 && target[0] >= 'A' && target[0] <= 'Z')
        path = copy(paths[target[0] - 'A'], strlen(paths[target[0] - 'A']));
    else if (pn == 1 && target[0] >= 'a' && target[0] <= 'f') /* the newer presets */
        path = copy(paths[26 + target[0] - 'a'], strlen(paths[26 + target[0] - 'a']));
    else
        path = copy(target, pn);

    /* The headers: absent when empty unless their flag bit is set; presets. */
    char *hdr[NFIELDS] = {NULL};
    int ok = 1;
    for (int i = 1; i < NFIELDS; i++) {
        const char *v = fp[i];
        size_t n = fn[i];
        if (!v)
            continue;
        if (!header_value(&v, &n)) {
            ok = 0;
            break;
        }
        if (n == 0 && !(flags & (1u << i)))
            continue;
        const char *const *presets[] = {NULL, auths, cookies, csrfs, NULL, ctypes};
        const size_t npresets[] = {0,
                                   sizeof(auths) / sizeof(auths[0]),
                                   sizeof(cookies) / sizeof(cookies[0]),
                                   sizeof(csrfs) / sizeof(csrfs[0]),
                                   0,
                                   sizeof(ctypes) / sizeof(ctypes[0])};
        if (n == 1 && presets[i] && v[0] >= '0' && (size_t)(v[0] - '0') < npresets[i])
            hdr[i] = copy(presets[i][v[0] - '0'], strlen(presets[i][v[0] - '0']));
        else
            hdr[i] = copy(v, n);
    }

    if (ok) {
        char *method_copy = copy(method, strlen(method));
        char *body = copy(body_p, body_n);
        struct api_request req = {
            .method = method_copy,
            .path = path,
            .query = query,
            .authorization = hdr[1],
            .cookie = hdr[2],
            .csrf_token = hdr[3],
            .if_match = hdr[4],
            .content_type = hdr[5],
            .background = data[1] >> 7,
            .peer_ip = peer_ips[(data[1] >> 4) & 3],
            .body = body,
            .body_len = body_n,
            .request_id = "fuzz",
        };
        struct api_response res;
        h->cfg.web_root = flags & 0x80 ? NULL : web_root;
        atomic_store(&h->login_checks, flags & 0x40 ? 4 : 0);
        api_handle(h, &req, &res);
        need(atomic_load(&h->login_checks) == (flags & 0x40 ? 4 : 0));
        if (trace)
            fprintf(stderr, "fuzz_api: %s %s -> %d %.*s | %s| %s\n", method, path, res.status,
                    res.content_type ? 0 : (int)res.body_len, res.body ? res.body : "",
                    res.extra_headers, res.log);
        check_response(&res);
        check_attempts(&res);
        api_response_free(&res);
        free(body);
        free(method_copy);
    }
    for (int i = 0; i < NFIELDS; i++)
        free(hdr[i]);
    free(query);
    free(path);
    return ok ? 0 : -1;
}
