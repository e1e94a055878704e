/* Claims: checking what a claim names, sealing the issuance, the claim in eu's store
 * or through eu, eu's half of another region's claim, and refusals. */
#include "claim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "eu_client.h"
#include "phy/client.h"
#include "phy/crypto.h"
#include "phy/json.h"
#include "phy/log.h"
#include "seal.h"

int claim_key_check(const char *serial, const char *code_in, char code[PHY_CODE_LEN + 1],
                    struct api_response *res)
{
    if ((serial == NULL) == (code_in == NULL)) {
        api_error(res, 400, "bad_request", "give exactly one of 'serial' or 'code'");
        return -1;
    }
    if (serial && !phy_serial_valid(serial, strlen(serial))) {
        api_error(res, 400, "bad_request", "serial must be 1-64 characters of A-Z a-z 0-9 . _ -");
        return -1;
    }
    if (code_in && phy_code_normalize(code_in, strlen(code_in), code) < 0) {
        api_error(res, 400, "bad_request", "a code is 6 characters of " PHY_CODE_ALPHABET);
        return -1;
    }
    return 0;
}

void claim_refused(struct api_response *res, int outcome)
{
    switch (outcome) {
    case STORE_EXPIRED_CODE:
        api_error(res, 404, "expired_code", "no device shows this code (expired or mistyped)");
        break;
    case STORE_UNKNOWN_SERIAL:
        api_error(res, 404, "unknown_serial", "no device with this serial is waiting");
        break;
    case STORE_SERIAL_IN_USE:
        api_error(res, 409, "serial_in_use",
                  "more than one device registers this serial; enter the code shown on the "
                  "device's screen instead");
        break;
    case STORE_ALREADY_CLAIMED:
        api_error(res, 409, "already_claimed", "this device has already been claimed");
        break;
    case STORE_CODE_REQUIRED:
        api_error(res, 409, "code_required",
                  "this serial is not attested, so anyone could have registered it: enter the "
                  "code shown on the device's screen instead");
        break;
    default:
        api_error(res, 500, "internal", "unexpected store outcome");
    }
}

/* ---- sealing ---- */

unsigned char *claim_seal_issuance(void *ctx, const char *serial, size_t *out_len)
{
    struct claim_seal_ctx *s = ctx;
    (void)serial;
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "status", "provisioned", "device_id",
                          s->device_id, "device_secret", s->secret, "tenant", s->tenant, "region",
                          s->region, "endpoint", s->endpoint);
    char token[PHY_PROXY_TOKEN_MAX + 1];
    /* The device's proof to the proxies (docs/security.md): it needs it from its
     * first hub session on. */
    if (o && s->h->proxy_key.kid[0] &&
        (phy_proxy_token_make(&s->h->proxy_key, s->device_id, token) != 0 ||
         json_object_set_new(o, "proxy_token", json_string(token)) != 0)) {
        json_decref(o);
        o = NULL;
    }
    char *text = o ? phy_json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    unsigned char *out = seal_seal(s->h->seal, hub_now_ms(), s->device_id, text, n, out_len);
    OPENSSL_cleanse(text, n);
    free(text);
    return out;
}

/* ---- a regional hub's claim: through eu ---- */

static void unavailable(struct hub *h, struct api_response *res, const char *why)
{
    api_error_retry(res, 503, "provisioning_unavailable",
                    "the provisioning region cannot be reached right now; retry the claim",
                    h->cfg.inter_region_timeout_s);
    phy_log(PHY_LOG_WARN, "claim_unavailable", "why=\"%s\"", why);
}

/* The body of the issue call. Built by hand into a buffer that is cleansed: every
 * field was validated (no character needs escaping except in the tenant name,
 * which jansson encodes), so no unwiped copy of the secret is left on the heap. */
static char *issue_body(struct hub *h, const struct claim_request *c, int64_t not_after)
{
    json_t *t = json_string(c->tenant);
    char *tenant = t ? phy_json_dumps(t, JSON_ENCODE_ANY) : NULL;
    json_decref(t);
    if (!tenant)
        return NULL;
    size_t cap = 512 + strlen(tenant) + strlen(h->cfg.public_endpoint);
    char *body = malloc(cap);
    if (body)
        snprintf(body, cap,
                 "{\"%s\":\"%s\",\"device_id\":\"%s\",\"device_secret\":\"%s\",\"tenant\":%s,"
                 "\"region\":\"%s\",\"endpoint\":\"%s\",\"not_after\":%lld,"
                 "\"serial_claims\":\"%s\"}",
                 c->serial ? "serial" : "code", c->serial ? c->serial : c->code, c->device_id,
                 c->secret, tenant, h->cfg.region, h->cfg.public_endpoint, (long long)not_after,
                 store_serial_claims_name(c->serial_claims));
    free(tenant);
    return body;
}

/* A regional hub's claim: the device row first (hidden, with its cancel entry),
 * then eu. As claim_issue. */
static int claim_via_eu(struct hub *h, const struct claim_request *c, struct store_device *dev,
                        int *outcome, struct api_response *res)
{
    struct eu_client *eu = h->eu;
    struct phy_client_response ans = {0};
    char err[200] = "", code[64] = "", serial[PHY_SERIAL_MAX + 1] = "";
    int lost = 0, rc, result = -1;
    int64_t now = hub_now_ms();
    /* Every try of the call ends by the deadline (eu refuses the request after it);
     * the cancel entry falls due only a whole budget later (clock skew margin). */
    int64_t budget = (h->cfg.inter_region_timeout_s * 3000 + 1000) * h->cfg.inter_region_attempts;
    int64_t deadline = now + budget;
    struct store_claim_begin b = {
        .tenant_id = c->tenant_id,
        .user_id = c->user_id,
        .code = c->code,
        .device_id = c->device_id,
        .secret_hash = c->secret_hash,
        .name = c->name,
        .tags_json = c->tags_json,
        .serial = c->serial,
        .now_ms = now,
        .hold_ms = 2 * budget,
    };
    *outcome = STORE_OK;
    if (!eu_client_claim_hold(eu, c->device_id)) {
        unavailable(h, res, "too many claims waiting for eu");
        return -1;
    }
    if (h->store_ops->claim_begin(h->store, &b, outcome) < 0 || *outcome != STORE_OK) {
        eu_client_claim_release(eu, c->device_id);
        api_store_failed(res);
        return -1;
    }
    char *body = issue_body(h, c, deadline);
    if (!body) {
        h->store_ops->claim_abort(h->store, c->device_id);
        eu_client_claim_release(eu, c->device_id);
        api_error(res, 500, "internal", "out of memory");
        return -1;
    }
    rc = eu_client_call(h, "POST", "/internal/v1/issuances", body, deadline, &ans, &lost, err,
                        sizeof err);
    OPENSSL_cleanse(body, strlen(body));
    free(body);

    if (rc < 0 || ans.status >= 500) {
        /* No answer. When nothing can have reached eu the claim is simply undone;
         * otherwise the outbox cancels it at eu first (it stays hidden meanwhile). */
        if (!lost)
            h->store_ops->claim_abort(h->store, c->device_id);
        phy_log(PHY_LOG_WARN, "claim_no_answer", "device_id=%s lost=%d err=\"%s\"",
                c->device_id, lost, err);
        unavailable(h, res, err);
        goto out;
    }
    if (ans.status == 201) {
        eu_client_answer_field(&ans, "serial", serial, sizeof serial);
        if (!phy_serial_valid(serial, strlen(serial)) ||
            (c->serial && strcmp(serial, c->serial) != 0)) {
            /* eu accepted but named no usable serial: leave it to the outbox. */
            unavailable(h, res, "eu's answer names no valid serial");
            goto out;
        }
        if (h->store_ops->claim_confirm(h->store, c->device_id, serial, dev, outcome) < 0) {
            api_store_failed(res); /* the outbox completes or cancels it later */
            goto out;
        }
        if (*outcome != STORE_OK) { /* the row is gone: cannot happen while in flight */
            unavailable(h, res, "the claim's row disappeared");
            goto out;
        }
        result = 0;
        goto out;
    }
    /* eu refused: nothing was issued; undo the row and pass the refusal on. */
    h->store_ops->claim_abort(h->store, c->device_id);
    eu_client_answer_field(&ans, "error", code, sizeof code);
    if (ans.status == 404 && strcmp(code, "expired_code") == 0)
        *outcome = STORE_EXPIRED_CODE;
    else if (ans.status == 404 && strcmp(code, "unknown_serial") == 0)
        *outcome = STORE_UNKNOWN_SERIAL;
    else if (ans.status == 409 && strcmp(code, "serial_in_use") == 0)
        *outcome = STORE_SERIAL_IN_USE;
    else if (ans.status == 409 && strcmp(code, "already_claimed") == 0)
        *outcome = STORE_ALREADY_CLAIMED;
    else if (ans.status == 409 && strcmp(code, "code_required") == 0)
        *outcome = STORE_CODE_REQUIRED;
    else if (ans.status == 410 && strcmp(code, "request_expired") == 0) {
        unavailable(h, res, "eu received the claim after its deadline");
        goto out;
    } else {
        phy_log(PHY_LOG_ERROR, "claim_refused_by_eu", "status=%d error=%s", ans.status,
                code[0] ? code : "-");
        api_error(res, 502, "provisioning_refused",
                  "the provisioning region refused this hub (check its inter-region key and "
                  "region)");
        goto out;
    }
    result = 0;
out:
    eu_client_claim_release(eu, c->device_id);
    phy_client_response_free(&ans);
    return result;
}

/* ---- the claim ---- */

int claim_issue(struct hub *h, const struct claim_request *c, struct store_device *dev,
                int *outcome, struct api_response *res)
{
    if (!h->cfg.provisioning) /* the issuance lives in eu (docs/protocol.md section 3) */
        return claim_via_eu(h, c, dev, outcome, res);
    struct claim_seal_ctx sc = {h, c->device_id, c->secret, c->tenant, h->cfg.region,
                                h->cfg.public_endpoint};
    struct store_claim sclaim = {
        .tenant_id = c->tenant_id,
        .user_id = c->user_id,
        .serial = c->serial,
        .code = c->code,
        .device_id = c->device_id,
        .secret_hash = c->secret_hash,
        .name = c->name,
        .tags_json = c->tags_json,
        .serial_claims = c->serial_claims,
        .seal = claim_seal_issuance,
        .seal_ctx = &sc,
    };
    struct store_prov_params p;
    hub_prov_params(h, hub_now_ms(), &p);
    *outcome = STORE_OK;
    if (h->store_ops->claim(h->store, &p, &sclaim, dev, outcome) < 0) {
        api_store_failed(res);
        return -1;
    }
    return 0;
}

int claim_issue_for_region(struct hub *h, const struct claim_for_region *c,
                           char serial_out[PHY_SERIAL_MAX + 1], int *outcome,
                           struct api_response *res)
{
    struct claim_seal_ctx sc = {h, c->device_id, c->secret, c->tenant, c->region, c->endpoint};
    struct store_remote_issue ri = {
        .serial = c->serial,
        .code = c->code,
        .device_id = c->device_id,
        .region = c->region,
        .serial_claims = c->serial_claims,
        .seal = claim_seal_issuance,
        .seal_ctx = &sc,
    };
    struct store_prov_params p;
    hub_prov_params(h, hub_now_ms(), &p);
    /* The caller has given up on this request by now (and may cancel soon): issuing
     * it would leave credentials nobody keeps. */
    if (p.now_ms > c->not_after_ms) {
        api_error(res, 410, "request_expired", "the claim's deadline has passed; nothing issued");
        return -1;
    }
    *outcome = STORE_OK;
    if (h->store_ops->issue_remote(h->store, &p, &ri, serial_out, outcome) < 0) {
        api_store_failed(res);
        return -1;
    }
    return 0;
}
