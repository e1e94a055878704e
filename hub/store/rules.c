/* The store's rules with no database (rules.h). */
#include <string.h>

#include "phy/err.h"
#include "phy/text.h"
#include "phy/twin.h"
#include "rules.h"

/* ---- input checks ---- */

int store_str_ok(const char *s, size_t max)
{
    return s && s[0] && strnlen(s, max + 1) <= max;
}

/* 1 when s is 1..max characters of [A-Za-z0-9._-] (serials and tag keys). */
static int name_ok(const char *s, size_t max)
{
    if (!store_str_ok(s, max))
        return 0;
    for (; *s; s++)
        if (!phy_name_char(*s))
            return 0;
    return 1;
}

/* 1 when s has a control character (0x00-0x1f, 0x7f). */
static int has_control(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return 1;
    return 0;
}

int store_serial_ok(const char *s)
{
    return name_ok(s, PHY_SERIAL_MAX);
}

int store_tag_key_ok(const char *s)
{
    return name_ok(s, STORE_TAG_KEY_MAX);
}

int store_tag_value_ok(const char *s)
{
    return s && strnlen(s, STORE_TAG_VALUE_MAX + 1) <= STORE_TAG_VALUE_MAX && !has_control(s);
}

int store_name_ok(const char *name)
{
    return !name || (strnlen(name, STORE_NAME_MAX + 1) <= STORE_NAME_MAX && !has_control(name));
}

int store_node_id_ok(const char *s)
{
    if (!store_str_ok(s, STORE_NODE_ID_MAX))
        return 0;
    for (; *s; s++)
        if (!phy_name_char(*s) && *s != ':')
            return 0;
    return 1;
}

int store_hash_ok(const char *s)
{
    return store_str_ok(s, PHY_HASH_HEX_LEN);
}

int store_region_ok(const char *s)
{
    if (!store_str_ok(s, STORE_REGION_MAX))
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-'))
            return 0;
    return 1;
}

int store_device_id_ok(const char *s)
{
    return store_str_ok(s, PHY_DEVICE_ID_LEN);
}

/* 1 when s is exactly len characters, each one in the set accepted by ok. */
static int chars_ok(const char *s, size_t len, int (*ok)(char))
{
    if (!s || strnlen(s, len + 1) != len)
        return 0;
    for (; *s; s++)
        if (!ok(*s))
            return 0;
    return 1;
}

static int lower_hex_char(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
}

static int base64url_char(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_';
}

static int audit_action_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || ch == '.' || ch == '_';
}

int store_session_hash_ok(const char *s)
{
    return chars_ok(s, PHY_HASH_HEX_LEN, lower_hex_char);
}

int store_token_ok(const char *s)
{
    return chars_ok(s, PHY_TOKEN_LEN, base64url_char);
}

int store_audit_action_ok(const char *s)
{
    return store_str_ok(s, STORE_AUDIT_ACTION_MAX) && chars_ok(s, strlen(s), audit_action_char);
}

int store_outbox_kind_ok(int kind)
{
    return kind == OUTBOX_CANCEL || kind == OUTBOX_PURGE || kind == OUTBOX_REARM;
}

int store_params_ok(const struct store_prov_params *p)
{
    return p && p->now_ms >= 0 && p->registration_idle_ms > 0 && p->code_ttl_ms > 0 &&
           p->grace_ms >= 0 && p->interval_s > 0 && p->max_regs_per_serial > 0;
}

int store_code_normalize(const char *in, char out[PHY_CODE_LEN + 1])
{
    return in ? phy_code_normalize(in, strnlen(in, PHY_CODE_LEN + 1), out) : PHY_EINVAL;
}

int store_json_object_parse(const char *text, size_t max, json_t **out)
{
    json_error_t jerr;
    json_t *v;
    size_t n;
    if (out)
        *out = NULL;
    if (!text)
        return PHY_EINVAL;
    n = strnlen(text, max + 1);
    if (n > max)
        return PHY_ETOOBIG;
    v = json_loadb(text, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!v || !json_is_object(v)) {
        json_decref(v);
        return PHY_EINVAL;
    }
    if (out)
        *out = v;
    else
        json_decref(v);
    return 0;
}

/* ---- provisioning ---- */

int64_t rule_live_after(const struct store_prov_params *p)
{
    return p->now_ms - p->registration_idle_ms;
}

/* Redelivery only inside the grace window and before the device's first hub
 * session (which moves it past "provisioned"). A peer region's device has no row
 * here: its region ends redelivery by purging the body. */
int rule_issuance_poll(const struct rule_issuance *i, const struct store_prov_params *p)
{
    if (!i->has_body)
        return STORE_PROVISIONED;
    if (i->delivered && p->now_ms - i->delivered_ms >= p->grace_ms)
        return STORE_PROVISIONED;
    if (!i->remote && (!i->state || (strcmp(i->state, STATE_PENDING) != 0 &&
                                     strcmp(i->state, STATE_PROVISIONED) != 0)))
        return STORE_PROVISIONED;
    return STORE_DELIVER;
}

int rule_poll(const struct rule_registration *g, const char *code,
              const struct store_prov_params *p, int64_t *interval)
{
    *interval = g->interval_s;
    /* 4. a code that is not the registration's unexpired code */
    if (code && (strcmp(g->code, code) != 0 || g->code_expires_ms <= p->now_ms))
        return STORE_EXPIRED_CODE;
    /* 5. polled less than 0.8 * interval ago */
    if (g->has_polled && (p->now_ms - g->last_poll_ms) * 5 < g->interval_s * 4000) {
        /* A cap configured below the base interval means no growth. */
        int64_t cap = p->max_interval_s > p->interval_s ? p->max_interval_s : p->interval_s;
        *interval = g->interval_s + p->interval_s;
        if (*interval > cap)
            *interval = cap;
        return STORE_SLOW_DOWN;
    }
    return STORE_PENDING; /* 6. */
}

/* Each code request is a durable write: at most one per STORE_CODE_MIN_GAP_MS. */
int rule_code_too_soon(int64_t expires_ms, const struct store_prov_params *p)
{
    return expires_ms > 0 && expires_ms - p->code_ttl_ms > p->now_ms - STORE_CODE_MIN_GAP_MS;
}

const char *store_serial_claims_name(int policy)
{
    return policy == SERIAL_CLAIMS_ANY ? SERIAL_CLAIMS_ANY_NAME : SERIAL_CLAIMS_ATTESTED_NAME;
}

int store_serial_claims_parse(const char *name, int *policy)
{
    if (name && strcmp(name, SERIAL_CLAIMS_ANY_NAME) == 0)
        *policy = SERIAL_CLAIMS_ANY;
    else if (name && strcmp(name, SERIAL_CLAIMS_ATTESTED_NAME) == 0)
        *policy = SERIAL_CLAIMS_ATTESTED;
    else
        return PHY_EINVAL;
    return 0;
}

int rule_serial_claim_allowed(int attested, int serial_claims)
{
    return attested || serial_claims == SERIAL_CLAIMS_ANY;
}

int rule_claim_by_serial(int attested, int serial_claims, int live_registrations)
{
    if (!rule_serial_claim_allowed(attested, serial_claims))
        return STORE_CODE_REQUIRED;
    if (live_registrations == 1)
        return STORE_OK;
    return live_registrations == 0 ? STORE_UNKNOWN_SERIAL : STORE_SERIAL_IN_USE;
}

/* ---- throttles, console sessions ---- */

int rule_throttle_allows(int64_t u, int64_t t, int user_limit, int tenant_limit)
{
    return u < user_limit && t < tenant_limit;
}

int64_t rule_login_window(int64_t window_ms, int64_t failures, int user_limit)
{
    int64_t factor = 1;
    if (user_limit < 1)
        return window_ms;
    for (int64_t level = failures / user_limit; level > 1 && factor < RULE_LOGIN_LOOKBACK; level--)
        factor *= 2;
    return window_ms * factor;
}

int rule_session_expired(int64_t now_ms, int64_t created_ms, int64_t last_used_ms,
                         int64_t idle_ms, int64_t max_ms)
{
    return now_ms - last_used_ms > idle_ms || now_ms - created_ms > max_ms;
}

/* Idle time is measured from the last written use, which may lag the real last use
 * by up to STORE_SESSION_TOUCH_MS: a request per second must not be a write per
 * second. Short idle limits (tests) are refreshed at half their length at least. */
int rule_session_touch(int64_t now_ms, int64_t last_used_ms, int64_t idle_ms)
{
    int64_t touch_ms = idle_ms / 2 < STORE_SESSION_TOUCH_MS ? idle_ms / 2 : STORE_SESSION_TOUCH_MS;
    return now_ms - last_used_ms >= touch_ms;
}

/* ---- twins ---- */

int rule_section_merge(const char *text, const json_t *patch, char **out, int *changed,
                       int *too_big)
{
    json_error_t jerr;
    json_t *doc = json_loads(text, 0, &jerr);
    int rc;
    *out = NULL;
    *changed = 0;
    *too_big = 0;
    if (!doc || !json_is_object(doc)) {
        json_decref(doc);
        return PHY_EIO;
    }
    rc = phy_twin_merge(&doc, patch, PHY_TWIN_MAX_BYTES, changed);
    if (rc == PHY_ETOOBIG) {
        *too_big = 1;
        *changed = 0;
        rc = 0;
    } else if (rc == 0 && *changed) {
        *out = phy_twin_dump(doc);
        if (!*out)
            rc = PHY_ENOMEM;
    }
    json_decref(doc);
    return rc;
}

/* ---- revoke, reset, delete ---- */

/* A reset re-arms the serial at eu (and needs no purge any more; a claim by code
 * that eu never confirmed has no serial to re-arm); a revoke or delete before the
 * first session ends redelivery. */
struct rule_remote_change rule_device_change_remote(enum device_action act, const char *state,
                                                    const char *serial)
{
    struct rule_remote_change c = {0, 0};
    if (act == DEVICE_RESET) {
        c.drop_purge = 1;
        c.put = serial[0] ? OUTBOX_REARM : 0;
    } else if (strcmp(state, STATE_CLAIMING) == 0 || strcmp(state, STATE_PENDING) == 0 ||
               strcmp(state, STATE_PROVISIONED) == 0) {
        c.put = OUTBOX_PURGE;
    }
    return c;
}

int rule_reset_outcome(int remote, const char *serial, int issuance_deleted)
{
    int rearmed = remote ? serial[0] != '\0' : issuance_deleted;
    return rearmed ? STORE_OK : STORE_PROVISIONED;
}
