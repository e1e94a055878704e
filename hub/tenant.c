/* A tenant's settings and the registrations a claim by serial would bind to
 * (docs/protocol.md section 4): GET/PATCH /api/v1/tenant, GET /api/v1/registrations. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "phy/crypto.h"
#include "phy/err.h"

/* The caller's tenant policy: 0, or -1 with res answered (503). */
static int tenant_policy(struct hub *h, const struct api_caller *caller, int *policy,
                         struct api_response *res)
{
    int outcome = STORE_NOT_FOUND;
    if (h->store_ops->tenant_serial_claims(h->store, caller->tenant_id, policy, &outcome) < 0 ||
        outcome != STORE_OK) {
        api_store_failed(res);
        return -1;
    }
    return 0;
}

static void tenant_answer(const struct api_caller *caller, int policy, struct api_response *res)
{
    api_json(res, 200,
             json_pack("{s:s, s:s, s:s}", "name", caller->tenant, "region", caller->region,
                       "serial_claims", store_serial_claims_name(policy)));
}

void handle_tenant_get(struct hub *h, const struct api_request *req, struct api_response *res)
{
    struct api_caller caller;
    int policy;
    if (api_auth(h, req, res, &caller) < 0)
        return;
    snprintf(res->log, sizeof(res->log), "tenant=%s", caller.tenant);
    if (tenant_policy(h, &caller, &policy, res) < 0)
        return;
    tenant_answer(&caller, policy, res);
}

void handle_tenant_patch(struct hub *h, const struct api_request *req, struct api_response *res)
{
    static const char *const fields[] = {"serial_claims", NULL};
    struct api_caller caller;
    json_t *body = NULL;
    const char *name = NULL;
    int policy, outcome = STORE_NOT_FOUND;
    if (api_auth(h, req, res, &caller) < 0)
        return;
    snprintf(res->log, sizeof(res->log), "tenant=%s", caller.tenant);
    if (api_parse_body(req, res, &body) < 0)
        return;
    if (api_check_fields(body, fields, res) < 0 ||
        api_get_string(body, "serial_claims", 1, &name, res) < 0)
        goto out;
    if (store_serial_claims_parse(name, &policy) != 0) {
        api_error(res, 400, "bad_request", "serial_claims must be \"attested\" or \"any\"");
        goto out;
    }
    if (h->store_ops->tenant_serial_claims_set(h->store, caller.tenant, policy, &outcome) < 0 ||
        outcome != STORE_OK) {
        api_store_failed(res);
        goto out;
    }
    api_audit(h, caller.tenant_id, caller.user_id, "tenant.settings", NULL,
              json_pack("{s:s}", "serial_claims", store_serial_claims_name(policy)));
    tenant_answer(&caller, policy, res);
out:
    json_decref(body);
}

/* GET /api/v1/registrations?serial=SN: what a claim by serial of an unattested serial
 * would hand its credentials to (when, from where, which agent), so that a person
 * can judge before confirming. Only for tenants that claim such serials at all. */
void handle_registrations(struct hub *h, const struct api_request *req, struct api_response *res)
{
    static const char *const params[] = {"serial", NULL};
    struct api_caller caller;
    struct store_reg_info regs[STORE_REG_INFO_MAX];
    struct store_prov_params p;
    char serial[PHY_SERIAL_MAX + 1];
    size_t n = 0;
    int policy, attested = 0, issued = 0;
    if (api_auth(h, req, res, &caller) < 0)
        return;
    snprintf(res->log, sizeof(res->log), "tenant=%s", caller.tenant);
    if (api_query_check(req->query, params) < 0 ||
        api_query_param(req->query, "serial", serial, sizeof(serial)) != 1 ||
        !phy_serial_valid(serial, strlen(serial))) {
        api_error(res, 400, "bad_request", "give serial=SN (1-64 of A-Z a-z 0-9 . _ -)");
        return;
    }
    if (!h->cfg.provisioning) {
        api_error(res, 501, "not_available",
                  "registrations live in the provisioning region (eu); this hub cannot show them");
        return;
    }
    if (tenant_policy(h, &caller, &policy, res) < 0)
        return;
    if (policy != SERIAL_CLAIMS_ANY) {
        api_error(res, 403, "forbidden",
                  "this tenant claims attested serials only; it has nothing to check here");
        return;
    }
    hub_prov_params(h, hub_now_ms(), &p);
    if (h->store_ops->reg_info(h->store, &p, serial, regs, &n, &attested, &issued) < 0) {
        api_store_failed(res);
        return;
    }
    snprintf(res->log, sizeof(res->log), "tenant=%s serial=%s count=%zu", caller.tenant, serial, n);
    json_t *arr = json_array();
    for (size_t i = 0; arr && !issued && i < n; i++) {
        json_t *e = json_pack("{s:o, s:o, s:s?, s:s?, s:b}", "first_seen",
                              api_time_json(regs[i].created_ms), "last_seen",
                              api_time_json(regs[i].last_active_ms), "source",
                              regs[i].source[0] ? regs[i].source : NULL, "agent",
                              regs[i].agent[0] ? regs[i].agent : NULL, "proven", regs[i].proven);
        if (!e || json_array_append_new(arr, e) < 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    api_json(res, 200,
             arr ? json_pack("{s:s, s:b, s:b, s:o}", "serial", serial, "attested", attested,
                             "claimed", issued, "registrations", arr)
                 : NULL);
}
