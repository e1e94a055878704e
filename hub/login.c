/* Console login sessions (docs/protocol.md section 4): login with argon2id, the
 * phy_session cookie, logout, and GET /api/v1/session. */
#include <argon2.h>
#include <stdatomic.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "handlers.h"
#include "phy/crypto.h"
#include "phy/err.h"
#include "phy/text.h"
#include "phy/log.h"
#include "rules.h"

/* The parameters phyhub admin user-add stores passwords with. */
#define LOGIN_ARGON2_T 3
#define LOGIN_ARGON2_M 65536
#define LOGIN_ARGON2_P 1
#define LOGIN_FIELD_MAX 64
#define LOGIN_PASSWORD_MAX 1024
#define LOGIN_PASSWORD_MIN 12 /* a new password set through the API */
/* Each check takes LOGIN_ARGON2_M KiB for a while: a flood of logins (guesses at
 * ever new names escape the throttle) must not take all memory or workers. */
#define LOGIN_MAX_CHECKS 4
#define COOKIE_ATTRS "Path=/; HttpOnly; Secure; SameSite=Strict"

int login_hash_password(const char *pw, size_t len, char *encoded, size_t cap)
{
    unsigned char salt[16];
    int rc = PHY_ECRYPTO;
    if (phy_random_bytes(salt, sizeof(salt)) == 0 &&
        argon2id_hash_encoded(LOGIN_ARGON2_T, LOGIN_ARGON2_M, LOGIN_ARGON2_P, pw, len, salt,
                              sizeof(salt), 32, encoded, cap) == ARGON2_OK)
        rc = 0;
    return rc;
}

int login_init(struct hub *h)
{
    unsigned char pw[32], salt[16];
    int rc = PHY_ECRYPTO;
    if (phy_random_bytes(pw, sizeof(pw)) == 0 && phy_random_bytes(salt, sizeof(salt)) == 0 &&
        argon2id_hash_encoded(LOGIN_ARGON2_T, LOGIN_ARGON2_M, LOGIN_ARGON2_P, pw, sizeof(pw), salt,
                              sizeof(salt), 32, h->login_dummy_hash,
                              sizeof(h->login_dummy_hash)) == ARGON2_OK)
        rc = 0;
    OPENSSL_cleanse(pw, sizeof(pw));
    return rc;
}

/* A name as the access log shows it: as is when it is plain, else quoted. */
static const char *log_name(const char *s, char *buf, unsigned cap)
{
    for (const char *p = s; *p; p++) {
        if (!phy_name_char((unsigned char)*p) && *p != '@')
            return phy_log_quote(s, buf, cap);
    }
    return s[0] ? s : "\"\"";
}

/* A string field of 1..max bytes without NUL; -1 with a 400 in res otherwise. */
static int login_field(json_t *body, const char *key, size_t max, const char **out, size_t *len,
                       struct api_response *res)
{
    if (api_get_string(body, key, 1, out, res) < 0)
        return -1;
    *len = json_string_length(json_object_get(body, key));
    int control = 0;
    for (size_t i = 0; i < *len && strcmp(key, "password") != 0; i++)
        control |= (unsigned char)(*out)[i] < 0x20 || (*out)[i] == 0x7f;
    if (*len == 0 || *len > max || strlen(*out) != *len || control) {
        char msg[96];
        snprintf(msg, sizeof(msg), "'%s' must be 1-%zu bytes without control characters", key,
                 max);
        api_error(res, 400, "bad_request", msg);
        return -1;
    }
    return 0;
}

/* The login throttle's key for a client address (a tenant name no login can send). */
#define LOGIN_PEER_KEY "\001peer"

static void forgive(struct hub *h, int64_t attempt_id, int64_t peer_attempt)
{
    h->store_ops->login_attempt_forgive(h->store, attempt_id);
    h->store_ops->login_attempt_forgive(h->store, peer_attempt);
}

static void log_outcome(struct api_response *res, const char *outcome)
{
    size_t n = strlen(res->log);
    snprintf(res->log + n, sizeof(res->log) - n, " outcome=%s", outcome);
}

static void invalid_login(struct hub *h, struct api_response *res)
{
    hub_metric_add(&h->metrics.auth_failures, 1);
    api_error(res, 401, "invalid_login", "unknown tenant or user, or wrong password");
}

/* Creates the session of a checked login and answers 200 with its cookie. */
static void login_session(struct hub *h, int64_t tenant_id, int64_t user_id, const char *tenant,
                          const char *user, const char *region, struct api_response *res)
{
    char cookie[PHY_TOKEN_LEN + 1], csrf[PHY_TOKEN_LEN + 1], hash[PHY_HASH_HEX_LEN + 1];
    if (phy_token_new(cookie) < 0 || phy_token_new(csrf) < 0 ||
        phy_sha256_hex(cookie, PHY_TOKEN_LEN, hash) < 0) {
        api_error(res, 500, "internal", "random source failed");
        goto out;
    }
    if (h->store_ops->console_session_create(h->store, hash, tenant_id, user_id, csrf,
                                             hub_now_ms()) < 0) {
        api_store_failed(res);
        goto out;
    }
    if (api_json(res, 200,
                 json_pack("{s:s, s:s, s:s, s:s}", "tenant", tenant, "user", user, "region",
                           region, "csrf_token", csrf)) == 0)
        snprintf(res->extra_headers, sizeof(res->extra_headers),
                 "Set-Cookie: " API_SESSION_COOKIE "=%s; " COOKIE_ATTRS "; Max-Age=%ld\r\n"
                 "Cache-Control: no-store\r\n",
                 cookie, h->cfg.session_max_s);
    api_audit(h, tenant_id, user_id, "user.login", NULL, NULL);
out:
    OPENSSL_cleanse(cookie, sizeof(cookie));
    OPENSSL_cleanse(csrf, sizeof(csrf));
}

void handle_login(struct hub *h, const struct api_request *req, struct api_response *res)
{
    static const char *const fields[] = {"tenant", "user", "password", NULL};
    json_t *body = NULL;
    const char *tenant, *user, *password = NULL;
    size_t tlen, ulen, plen = 0;
    char pw_hash[512] = "", region[16] = "", lt[200], lu[200];
    int64_t tenant_id = 0, user_id = 0, attempt_id = 0, peer_attempt = 0;
    int allowed = 0, outcome = STORE_NOT_FOUND;

    if (api_parse_body(req, res, &body) < 0)
        return;
    if (api_check_fields(body, fields, res) < 0 ||
        login_field(body, "tenant", LOGIN_FIELD_MAX, &tenant, &tlen, res) < 0 ||
        login_field(body, "user", LOGIN_FIELD_MAX, &user, &ulen, res) < 0 ||
        login_field(body, "password", LOGIN_PASSWORD_MAX, &password, &plen, res) < 0)
        goto out;
    snprintf(res->log, sizeof(res->log), "tenant=%s user=%s", log_name(tenant, lt, sizeof(lt)),
             log_name(user, lu, sizeof(lu)));

    /* Throttled first, so that the limit holds even for the right password: per
     * client address (guesses at ever new names), then per user and per tenant. The
     * address is kept under a tenant name no login can use (control characters are
     * refused above). */
    int64_t now = hub_now_ms(), window = h->cfg.login_window_s * 1000;
    const char *peer = req->peer_ip && req->peer_ip[0] ? req->peer_ip : "-";
    int64_t peer_failures = 0, account_failures = 0;
    /* An address without recent failures is not held back by the tenant's limit (a
     * flood of guesses elsewhere must not lock the tenant's users out); the account
     * is locked for longer the more its password is guessed at. */
    if (h->store_ops->login_failures_count(h->store, LOGIN_PEER_KEY, peer, now - window,
                                           &peer_failures) < 0 ||
        h->store_ops->login_failures_count(h->store, tenant, user,
                                           now - window * RULE_LOGIN_LOOKBACK,
                                           &account_failures) < 0 ||
        h->store_ops->login_attempt_begin(h->store, LOGIN_PEER_KEY, peer, now, now - window,
                                          (int)h->cfg.login_peer_limit, INT_MAX, &allowed,
                                          &peer_attempt) < 0) {
        api_store_failed(res);
        goto out;
    }
    int64_t user_window = rule_login_window(window, account_failures, (int)h->cfg.login_user_limit);
    if (!allowed) {
        log_outcome(res, "throttled_peer");
        api_error_retry(res, 429, "too_many_attempts",
                        "too many failed logins from this address; wait before trying again",
                        h->cfg.login_window_s);
        goto out;
    }
    if (h->store_ops->login_attempt_begin(
            h->store, tenant, user, now, now - user_window, (int)h->cfg.login_user_limit,
            peer_failures == 0 ? INT_MAX : (int)h->cfg.login_tenant_limit, &allowed,
            &attempt_id) < 0) {
        h->store_ops->login_attempt_forgive(h->store, peer_attempt); /* nothing was tried */
        api_store_failed(res);
        goto out;
    }
    if (!allowed) {
        h->store_ops->login_attempt_forgive(h->store, peer_attempt); /* nothing was tried */
        log_outcome(res, "throttled");
        api_error_retry(res, 429, "too_many_attempts",
                        "too many failed logins; wait before trying again", user_window / 1000);
        goto out;
    }
    if (h->store_ops->user_get(h->store, tenant, user, &tenant_id, &user_id, pw_hash, region,
                               &outcome) < 0) {
        forgive(h, attempt_id, peer_attempt); /* not a guess */
        api_store_failed(res);
        goto out;
    }
    if (atomic_fetch_add(&h->login_checks, 1) >= LOGIN_MAX_CHECKS) {
        atomic_fetch_sub(&h->login_checks, 1);
        forgive(h, attempt_id, peer_attempt); /* not a guess */
        log_outcome(res, "busy");
        api_error_retry(res, 503, "login_busy", "too many logins at once; retry in a second", 1);
        goto out;
    }
    /* An unknown tenant or user costs the same argon2id check as a known one. */
    const char *encoded = outcome == STORE_OK ? pw_hash : h->login_dummy_hash;
    int verified = argon2id_verify(encoded, password, plen) == ARGON2_OK;
    atomic_fetch_sub(&h->login_checks, 1);
    if (outcome != STORE_OK || !verified) {
        /* A made-up name's failure stays (its own lock-out must look like a real
         * user's); the store leaves it out of the tenant's count. */
        log_outcome(res, "invalid");
        invalid_login(h, res);
        goto out;
    }
    forgive(h, attempt_id, peer_attempt);
    if (strcmp(region, h->cfg.region) != 0) {
        char msg[200];
        snprintf(msg, sizeof(msg), "tenant %s lives in region %s; log in at that region's console",
                 tenant, region);
        log_outcome(res, "wrong_region");
        api_error(res, 409, "wrong_region", msg);
        goto out;
    }
    login_session(h, tenant_id, user_id, tenant, user, region, res);
out:
    if (password) /* jansson's blocks are wiped when freed too; this is sooner */
        OPENSSL_cleanse((char *)password, plen);
    OPENSSL_cleanse(pw_hash, sizeof(pw_hash));
    json_decref(body);
}

/* POST /api/v1/password {"current", "new"}: a console session changes its user's
 * password; the user's other console sessions end (API tokens stay: revoke them
 * on the tokens page). The current password is checked like a login, throttled
 * per user. */
void handle_password(struct hub *h, const struct api_request *req, struct api_response *res)
{
    static const char *const fields[] = {"current", "new", NULL};
    struct api_caller caller;
    json_t *body = NULL;
    const char *cur = NULL, *new_pw = NULL;
    size_t clen = 0, nlen = 0;
    char pw_hash[512] = "", region[16], encoded[256] = "";
    int64_t tenant_id, user_id, attempt_id = 0, now = hub_now_ms();
    int outcome = STORE_NOT_FOUND, allowed = 0;

    if (api_auth(h, req, res, &caller) < 0)
        return;
    snprintf(res->log, sizeof(res->log), "tenant=%s", caller.tenant);
    if (!caller.cookie) {
        api_error(res, 403, "forbidden", "a password is changed from a console session");
        return;
    }
    if (api_parse_body(req, res, &body) < 0)
        return;
    if (api_check_fields(body, fields, res) < 0 ||
        login_field(body, "current", LOGIN_PASSWORD_MAX, &cur, &clen, res) < 0 ||
        login_field(body, "new", LOGIN_PASSWORD_MAX, &new_pw, &nlen, res) < 0)
        goto out;
    if (nlen < LOGIN_PASSWORD_MIN) {
        api_error(res, 400, "bad_request", "the new password needs at least 12 characters");
        goto out;
    }
    if (h->store_ops->login_attempt_begin(h->store, caller.tenant, caller.user, now,
                                          now - h->cfg.login_window_s * 1000,
                                          (int)h->cfg.login_user_limit, INT_MAX, &allowed,
                                          &attempt_id) < 0) {
        api_store_failed(res);
        goto out;
    }
    if (!allowed) {
        api_error_retry(res, 429, "too_many_attempts",
                        "too many failed attempts; wait before trying again",
                        h->cfg.login_window_s);
        goto out;
    }
    if (h->store_ops->user_get(h->store, caller.tenant, caller.user, &tenant_id, &user_id, pw_hash,
                               region, &outcome) < 0) {
        h->store_ops->login_attempt_forgive(h->store, attempt_id);
        api_store_failed(res);
        goto out;
    }
    if (atomic_fetch_add(&h->login_checks, 1) >= LOGIN_MAX_CHECKS) {
        atomic_fetch_sub(&h->login_checks, 1);
        h->store_ops->login_attempt_forgive(h->store, attempt_id);
        api_error_retry(res, 503, "login_busy", "too many password checks at once; retry in a second", 1);
        goto out;
    }
    int ok = outcome == STORE_OK && argon2id_verify(pw_hash, cur, clen) == ARGON2_OK &&
             login_hash_password(new_pw, nlen, encoded, sizeof(encoded)) == 0;
    atomic_fetch_sub(&h->login_checks, 1);
    if (!ok) {
        log_outcome(res, "invalid");
        hub_metric_add(&h->metrics.auth_failures, 1);
        api_error(res, 401, "invalid_login", "the current password is wrong");
        goto out;
    }
    h->store_ops->login_attempt_forgive(h->store, attempt_id);
    if (h->store_ops->user_set_password(h->store, caller.tenant, caller.user, encoded,
                                        caller.session_hash, &tenant_id, &user_id, &outcome) < 0) {
        api_store_failed(res);
        goto out;
    }
    if (outcome != STORE_OK) {
        api_error(res, 404, "not_found", "the user no longer exists");
        goto out;
    }
    api_audit(h, tenant_id, user_id, "user.password", NULL, NULL);
    res->status = 204;
out:
    if (cur)
        OPENSSL_cleanse((char *)cur, clen);
    if (new_pw)
        OPENSSL_cleanse((char *)new_pw, nlen);
    OPENSSL_cleanse(pw_hash, sizeof(pw_hash));
    OPENSSL_cleanse(encoded, sizeof(encoded));
    json_decref(body);
}

void handle_logout(struct hub *h, const struct api_request *req, struct api_response *res)
{
    struct api_caller caller;
    if (api_auth(h, req, res, &caller) < 0)
        return;
    snprintf(res->log, sizeof(res->log), "tenant=%s", caller.tenant);
    if (!caller.cookie) {
        api_error(res, 400, "bad_request", "logout ends a console session (cookie), not a token");
        return;
    }
    if (h->store_ops->console_session_delete(h->store, caller.session_hash) < 0) {
        api_store_failed(res);
        return;
    }
    api_audit(h, caller.tenant_id, caller.user_id, "user.logout", NULL, NULL);
    struct api_effect e = {.kind = API_EFFECT_END_STREAMS};
    memcpy(e.session_hash, caller.session_hash, sizeof(e.session_hash));
    if (api_add_effect(res, &e) < 0)
        phy_log(PHY_LOG_WARN, "logout_streams", "msg=\"open event streams end at their deadline\"");
    res->status = 204;
    snprintf(res->extra_headers, sizeof(res->extra_headers),
             "Set-Cookie: " API_SESSION_COOKIE "=; " COOKIE_ATTRS "; Max-Age=0\r\n");
}

void handle_session(struct hub *h, const struct api_request *req, struct api_response *res)
{
    struct api_caller caller;
    if (api_auth(h, req, res, &caller) < 0)
        return;
    snprintf(res->log, sizeof(res->log), "tenant=%s", caller.tenant);
    json_t *o = json_pack("{s:s, s:s?, s:s}", "tenant", caller.tenant, "user",
                          caller.cookie ? caller.user : NULL, "region", caller.region);
    if (o && caller.cookie && json_object_set_new(o, "csrf_token", json_string(caller.csrf)) < 0) {
        json_decref(o);
        o = NULL;
    }
    api_json(res, 200, o);
    snprintf(res->extra_headers, sizeof(res->extra_headers), "Cache-Control: no-store\r\n");
}
