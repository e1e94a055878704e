/* Provisioning API (PROTOCOL.md section 2): register, prove, code, poll. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "handlers.h"
#include "phy/attest.h"
#include "phy/crypto.h"
#include "phy/err.h"
#include "phy/log.h"
#include "rules.h"
#include "seal.h"

#define CODE_ATTEMPTS 16

static int check_serial(const char *serial, struct api_response *res)
{
    if (!phy_serial_valid(serial, strlen(serial))) {
        api_error(res, 400, "bad_request", "serial must be 1-64 characters of A-Z a-z 0-9 . _ -");
        return -1;
    }
    return 0;
}

/* Hashes a well-formed poll token; -1 with a 401 in res otherwise. */
static int poll_token_hash(const char *token, char hash[PHY_HASH_HEX_LEN + 1],
                           struct api_response *res)
{
    if (!store_token_ok(token) || phy_sha256_hex(token, strlen(token), hash) < 0) {
        api_error(res, 401, "invalid_poll_token", "unknown or expired poll token");
        return -1;
    }
    return 0;
}

/* Reads the body of a call on a registration: the members in fields (serial and
 * poll_token among them, both required), the serial checked, the token hashed, the
 * serial in res->log. 0, or -1 when res was answered (*body is then NULL). */
static int reg_request(const struct api_request *req, struct api_response *res,
                       const char *const *fields, json_t **body, const char **serial,
                       const char **token, char hash[PHY_HASH_HEX_LEN + 1])
{
    if (api_parse_body(req, res, body) < 0)
        return -1;
    if (api_check_fields(*body, fields, res) < 0 ||
        api_get_string(*body, "serial", 1, serial, res) < 0 ||
        api_get_string(*body, "poll_token", 1, token, res) < 0 || check_serial(*serial, res) < 0 ||
        poll_token_hash(*token, hash, res) < 0) {
        json_decref(*body);
        *body = NULL;
        return -1;
    }
    snprintf(res->log, sizeof(res->log), "serial=%s", *serial);
    return 0;
}

/* Maps the outcomes every provisioning call shares: -1 with res answered, 0 for any
 * other outcome. */
static int common_outcome(int outcome, struct api_response *res)
{
    switch (outcome) {
    case STORE_PROVISIONED:
        api_error(res, 410, "already_provisioned", "this device has already been provisioned");
        return -1;
    case STORE_BAD_TOKEN:
        api_error(res, 401, "invalid_poll_token", "unknown or expired poll token");
        return -1;
    case STORE_EXPIRED_CODE:
        api_error(res, 404, "expired_code", "the code has expired or was replaced");
        return -1;
    case STORE_PROOF_REQUIRED:
        api_error(res, 403, "proof_required",
                  "this serial is attested: sign the registration's challenge with the device "
                  "key (POST /v1/provisioning/prove) first");
        return -1;
    default:
        return 0;
    }
}

/* Registrations and codes make state: each takes a token of its source's bucket
 * (the client's address, from a trusted proxy's PROXY header when proxied). 0, or
 * -1 with 429 rate_limited in res. */
static int source_limit(struct hub *h, const struct api_request *req, struct api_response *res)
{
    struct phy_cidr c;
    uint64_t retry_ms = 0;
    if (!h->register_rate || !req->peer_ip || phy_cidr_parse(req->peer_ip, &c) != 0)
        return 0;
    if (phy_ratelimit_take(h->register_rate, c.addr, (uint64_t)hub_mono_ms(), &retry_ms))
        return 0;
    api_error_retry(res, 429, "rate_limited",
                    "too many provisioning requests from this address; retry later",
                    (long long)(retry_ms / 1000 + 1));
    hub_metric_add(&h->metrics.prov_rate_limited, 1);
    return -1;
}

void handle_register(struct hub *h, const struct api_request *req, struct api_response *res)
{
    static const char *const fields[] = {"serial", NULL};
    json_t *body;
    const char *serial;
    if (api_parse_body(req, res, &body) < 0)
        return;
    if (api_check_fields(body, fields, res) < 0 ||
        api_get_string(body, "serial", 1, &serial, res) < 0 || check_serial(serial, res) < 0 ||
        source_limit(h, req, res) < 0)
        goto out;
    if (h->cfg.max_registrations > 0 &&
        atomic_load_explicit(&h->regs_estimate, memory_order_relaxed) >= h->cfg.max_registrations) {
        api_error_retry(res, 503, "registrations_full",
                        "the hub holds as many registrations as it may; retry later",
                        h->cfg.sweep_interval_s);
        hub_metric_add(&h->metrics.prov_full, 1);
        goto out;
    }

    char token[PHY_TOKEN_LEN + 1], hash[PHY_HASH_HEX_LEN + 1], challenge[PHY_TOKEN_LEN + 1];
    if (phy_token_new(token) < 0 || phy_sha256_hex(token, PHY_TOKEN_LEN, hash) < 0 ||
        phy_token_new(challenge) < 0) {
        api_error(res, 500, "internal", "random source failed");
        goto out;
    }
    struct store_prov_params p;
    struct store_reg_result rr;
    hub_prov_params(h, hub_now_ms(), &p);
    int outcome;
    struct store_reg_meta meta = {req->peer_ip, req->user_agent};
    if (h->store_ops->reg_create(h->store, &p, serial, hash, challenge, &meta, &rr, &outcome) < 0) {
        api_store_failed(res);
        goto out;
    }
    snprintf(res->log, sizeof(res->log), "serial=%s%s%s", serial,
             rr.attested ? " attested=1" : "", rr.evicted ? " evicted=1" : "");
    if (rr.evicted)
        hub_metric_add(&h->metrics.prov_evicted, 1);
    if (common_outcome(outcome, res) < 0)
        goto out;
    if (outcome == STORE_TOO_MANY) {
        api_error_retry(res, 429, "too_many_registrations",
                        "this serial has too many live registrations; retry later",
                        h->cfg.poll_interval_s);
        goto out;
    }
    json_t *ans = json_pack("{s:s, s:i}", "poll_token", token, "interval", p.interval_s);
    if (ans && rr.attested)
        json_object_set_new(ans, "challenge", json_string(challenge));
    api_json(res, 201, ans);
    hub_metric_add(&h->metrics.prov_registered, 1);
    if (!rr.evicted)
        atomic_fetch_add_explicit(&h->regs_estimate, 1, memory_order_relaxed);
    OPENSSL_cleanse(token, sizeof(token));
out:
    json_decref(body);
}

void handle_prove(struct hub *h, const struct api_request *req, struct api_response *res)
{
    static const char *const fields[] = {"serial", "poll_token", "signature", NULL};
    json_t *body;
    const char *serial, *token, *sig;
    char hash[PHY_HASH_HEX_LEN + 1], challenge[PHY_TOKEN_LEN + 1], msg[PHY_ATTEST_MSG_MAX];
    unsigned char *key = NULL;
    size_t key_len = 0;
    int outcome, n;
    msg[0] = '\0';
    if (reg_request(req, res, fields, &body, &serial, &token, hash) < 0)
        return;
    if (api_get_string(body, "signature", 1, &sig, res) < 0)
        goto out;
    struct store_prov_params p;
    hub_prov_params(h, hub_now_ms(), &p);
    if (h->store_ops->reg_challenge(h->store, &p, serial, hash, challenge, &key, &key_len,
                                    &outcome) < 0) {
        api_store_failed(res);
        goto out;
    }
    if (common_outcome(outcome, res) < 0)
        goto out;
    if (challenge[0] == '\0') {
        api_error(res, 409, "nothing_to_prove",
                  "this registration has proven possession already, or its serial is not attested");
        goto out;
    }
    n = phy_attest_message(serial, challenge, token, msg, sizeof msg);
    if (n < 0 || !phy_attest_verify(key, key_len, msg, (size_t)n, sig)) {
        hub_metric_add(&h->metrics.auth_failures, 1);
        snprintf(res->log, sizeof(res->log), "serial=%s outcome=bad_proof", serial);
        api_error(res, 401, "invalid_proof",
                  "the signature does not verify with this serial's attested key");
        goto out;
    }
    if (h->store_ops->reg_prove(h->store, &p, serial, hash, challenge, &outcome) < 0) {
        api_store_failed(res);
        goto out;
    }
    if (common_outcome(outcome, res) < 0)
        goto out;
    api_json(res, 200, json_pack("{s:s, s:i}", "status", "proven", "interval", p.interval_s));
out:
    free(key);
    OPENSSL_cleanse(msg, sizeof msg);
    json_decref(body);
}

void handle_code(struct hub *h, const struct api_request *req, struct api_response *res)
{
    static const char *const fields[] = {"serial", "poll_token", NULL};
    json_t *body;
    const char *serial, *token;
    char hash[PHY_HASH_HEX_LEN + 1];
    if (reg_request(req, res, fields, &body, &serial, &token, hash) < 0)
        return;
    if (source_limit(h, req, res) < 0) {
        json_decref(body);
        return;
    }

    struct store_prov_params p;
    hub_prov_params(h, hub_now_ms(), &p);
    for (int attempt = 0; attempt < CODE_ATTEMPTS; attempt++) {
        char code[PHY_CODE_LEN + 1];
        int outcome;
        if (phy_code_new(code) < 0) {
            api_error(res, 500, "internal", "random source failed");
            goto out;
        }
        if (h->store_ops->reg_set_code(h->store, &p, serial, hash, code, &outcome) < 0) {
            api_store_failed(res);
            goto out;
        }
        if (common_outcome(outcome, res) < 0)
            goto out;
        if (outcome == STORE_CODE_TAKEN)
            continue; /* collision with a live code: draw again */
        if (outcome == STORE_SLOW_DOWN) {
            api_json(res, 429,
                     json_pack("{s:s, s:s, s:i}", "error", "slow_down", "message",
                               "a new code at most once per second", "interval", 1));
            goto out;
        }
        api_json(
            res, 201,
            json_pack("{s:s, s:I}", "code", code, "expires_in", (json_int_t)h->cfg.code_ttl_s));
        hub_metric_add(&h->metrics.prov_codes, 1);
        goto out;
    }
    api_error_retry(res, 503, "code_space_exhausted", "could not allocate a unique code; retry",
                    1);
out:
    json_decref(body);
}

/* Opens a sealed issuance while the store's poll transaction is open, so that a
 * body that cannot be opened is never recorded as delivered. */
struct deliver_ctx {
    struct hub *hub;
    char *plain; /* the exact 200 body, malloc'd */
    size_t plain_len;
};

static int deliver_open(void *ctx, const char *device_id, const unsigned char *sealed, size_t len)
{
    struct deliver_ctx *d = ctx;
    char *plain = malloc(len + 1);
    if (!plain)
        return -1;
    int n = seal_open(d->hub->seal, hub_now_ms(), device_id, sealed, len, (unsigned char *)plain,
                      len);
    if (n < 0) {
        free(plain);
        phy_log(PHY_LOG_ERROR, "issuance_unreadable", "device_id=%s reason=\"%s\"", device_id,
                n == PHY_ENOTFOUND ? "its seal epoch's key is destroyed (a clock ahead?)"
                                   : "wrong key file or seal ratchet for this store?");
        return -1;
    }
    plain[n] = '\0';
    d->plain = plain;
    d->plain_len = (size_t)n;
    return 0;
}

void handle_poll(struct hub *h, const struct api_request *req, struct api_response *res)
{
    static const char *const fields[] = {"serial", "code", "poll_token", NULL};
    json_t *body;
    const char *serial, *code_in, *token;
    char hash[PHY_HASH_HEX_LEN + 1], code[PHY_CODE_LEN + 1];
    struct store_poll_result r;
    struct deliver_ctx dc = {h, NULL, 0};
    memset(&r, 0, sizeof(r));
    if (api_parse_body(req, res, &body) < 0)
        return;
    if (api_check_fields(body, fields, res) < 0 ||
        api_get_string(body, "serial", 0, &serial, res) < 0 ||
        api_get_string(body, "code", 0, &code_in, res) < 0 ||
        api_get_string(body, "poll_token", 1, &token, res) < 0)
        goto out;
    if ((serial == NULL) == (code_in == NULL)) {
        api_error(res, 400, "bad_request", "give exactly one of 'serial' or 'code'");
        goto out;
    }
    if (serial && check_serial(serial, res) < 0)
        goto out;
    if (code_in && phy_code_normalize(code_in, strlen(code_in), code) < 0) {
        api_error(res, 400, "bad_request", "code must be 6 characters of " PHY_CODE_ALPHABET);
        goto out;
    }
    if (poll_token_hash(token, hash, res) < 0)
        goto out;

    struct store_prov_params p;
    hub_prov_params(h, hub_now_ms(), &p);
    p.deliver_check = deliver_open;
    p.deliver_ctx = &dc;
    int outcome;
    int rc = h->store_ops->poll(h->store, &p, serial, code_in ? code : NULL, hash, &r, &outcome);
    if (rc == PHY_ECRYPTO) {
        api_error(res, 500, "internal", "pending issuance cannot be decrypted");
        goto out;
    }
    if (rc < 0) {
        api_store_failed(res);
        goto out;
    }
    if (serial)
        snprintf(res->log, sizeof(res->log), "serial=%s", serial);
    if (common_outcome(outcome, res) < 0)
        goto out;
    switch (outcome) {
    case STORE_SLOW_DOWN:
        hub_metric_add(&h->metrics.prov_slow_down, 1);
        api_json(res, 429,
                 json_pack("{s:s, s:s, s:i}", "error", "slow_down", "message",
                           "polling faster than the interval", "interval", r.interval_s));
        break;
    case STORE_PENDING:
        api_json(
            res, 202,
            json_pack("{s:s, s:i}", "status", "authorization_pending", "interval", r.interval_s));
        break;
    case STORE_DELIVER:
        /* The sealed body is the exact 200 answer, so a retry gets the same bytes. */
        if (!dc.plain) {
            api_error(res, 500, "internal", "pending issuance cannot be decrypted");
            break;
        }
        free(res->body);
        res->body = dc.plain;
        res->body_len = dc.plain_len;
        dc.plain = NULL;
        res->status = 200;
        hub_metric_add(&h->metrics.prov_delivered, 1);
        /* Another region's device ID is not written down here either (residency);
         * the sealed body is compact JSON from claim_seal_issuance. */
        char own[48];
        snprintf(own, sizeof(own), "\"region\":\"%s\"", h->cfg.region);
        if (strstr(res->body, own))
            snprintf(res->log, sizeof(res->log), "device_id=%s outcome=delivered", r.device_id);
        else
            snprintf(res->log, sizeof(res->log), "outcome=delivered_remote");
        if (r.tenant_id != 0) /* eu's own device: its tenant's console sees the pickup */
            api_state_event(res, r.tenant_id, r.device_id, "provisioned");
        break;
    default:
        api_error(res, 500, "internal", "unexpected store outcome");
    }
out:
    if (dc.plain) {
        OPENSSL_cleanse(dc.plain, dc.plain_len);
        free(dc.plain);
    }
    if (r.sealed) {
        OPENSSL_cleanse(r.sealed, r.sealed_len);
        free(r.sealed);
    }
    json_decref(body);
}
