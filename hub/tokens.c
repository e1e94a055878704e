/* API tokens of a tenant (docs/protocol.md section 4): list, create (from a console
 * session, shown once), revoke. A token is known by its ID, the start of its hash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "handlers.h"
#include "phy/crypto.h"
#include "phy/err.h"

void handle_tokens_list(struct hub *h, const struct api_request *req, struct api_response *res)
{
    struct api_caller caller;
    struct store_token *v = NULL;
    size_t n = 0;
    int64_t now = hub_now_ms();

    if (api_auth(h, req, res, &caller) < 0)
        return;
    if (h->store_ops->token_list(h->store, caller.tenant_id, &v, &n) < 0) {
        api_store_failed(res);
        return;
    }
    snprintf(res->log, sizeof(res->log), "tenant=%s count=%zu", caller.tenant, n);
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        json_t *e =
            json_pack("{s:s, s:s, s:o, s:o, s:b}", "id", v[i].id, "user", v[i].user, "created_at",
                      api_time_json(v[i].created_ms), "expires_at", api_time_json(v[i].expires_ms),
                      "expired", v[i].expires_ms > 0 && v[i].expires_ms <= now);
        if (!e || json_array_append_new(arr, e) < 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    free(v);
    api_json(res, 200, arr ? json_pack("{s:o}", "tokens", arr) : NULL);
}

void handle_token_create(struct hub *h, const struct api_request *req, struct api_response *res)
{
    static const char *const fields[] = {"expires_in_days", NULL};
    struct api_caller caller;
    json_t *body = NULL, *days_v;
    json_int_t days = API_TOKEN_DAYS_DEFAULT;
    char token[PHY_TOKEN_LEN + 1], hash[PHY_HASH_HEX_LEN + 1], id[STORE_TOKEN_ID_LEN + 1];
    int outcome = STORE_NOT_FOUND;

    if (api_auth(h, req, res, &caller) < 0)
        return;
    snprintf(res->log, sizeof(res->log), "tenant=%s", caller.tenant);
    if (!caller.cookie) {
        /* A stolen token must not be able to outlive its revocation by minting more. */
        api_error(res, 403, "forbidden", "API tokens are made from a console session");
        return;
    }
    if (req->body_len > 0) {
        if (api_parse_body(req, res, &body) < 0)
            return;
        if (api_check_fields(body, fields, res) < 0)
            goto out;
        days_v = json_object_get(body, "expires_in_days");
        if (days_v) {
            days = json_is_integer(days_v) ? json_integer_value(days_v) : -1;
            if (days < 1 || days > API_TOKEN_DAYS_MAX) {
                api_error(res, 400, "bad_request", "expires_in_days must be 1-3650");
                goto out;
            }
        }
    }
    int64_t now = hub_now_ms(), expires = now + (int64_t)days * 86400000LL;
    if (phy_token_new(token) < 0 || phy_sha256_hex(token, PHY_TOKEN_LEN, hash) < 0) {
        api_error(res, 500, "internal", "random source failed");
        goto out;
    }
    if (h->store_ops->token_add(h->store, caller.tenant, caller.user, hash, now, expires,
                                &outcome) < 0) {
        api_store_failed(res);
        goto out;
    }
    if (outcome != STORE_OK) {
        api_error(res, 404, "not_found", "the user no longer exists");
        goto out;
    }
    memcpy(id, hash, STORE_TOKEN_ID_LEN);
    id[STORE_TOKEN_ID_LEN] = '\0';
    api_json(res, 201,
             json_pack("{s:s, s:s, s:o}", "token", token, "id", id, "expires_at",
                       api_time_json(expires)));
    snprintf(res->extra_headers, sizeof(res->extra_headers), "Cache-Control: no-store\r\n");
    api_audit(h, caller.tenant_id, caller.user_id, "token.create", NULL,
              json_pack("{s:s, s:I}", "id", id, "expires_in_days", days));
out:
    OPENSSL_cleanse(token, sizeof(token));
    json_decref(body);
}

void handle_token_revoke(struct hub *h, const struct api_request *req, const char *id,
                         struct api_response *res)
{
    struct api_caller caller;
    int64_t owner = 0;
    int outcome = STORE_NOT_FOUND;

    if (api_auth(h, req, res, &caller) < 0)
        return;
    snprintf(res->log, sizeof(res->log), "tenant=%s token=%s", caller.tenant, id);
    if (h->store_ops->token_revoke(h->store, caller.tenant_id, id, &owner, &outcome) < 0) {
        api_store_failed(res);
        return;
    }
    if (outcome != STORE_OK) {
        api_error(res, 404, "not_found", "no such token");
        return;
    }
    api_audit(h, caller.tenant_id, caller.user_id, "token.revoke", NULL,
              json_pack("{s:s, s:I}", "id", id, "owner_id", (json_int_t)owner));
    res->status = 204;
}
