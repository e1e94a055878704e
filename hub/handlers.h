/* Request handlers and the JSON helpers they share (internal to phyhub). */
#ifndef PHY_HUB_HANDLERS_H
#define PHY_HUB_HANDLERS_H

#include <jansson.h>

#include "api.h"

/* Sets res to status with the JSON object o (reference stolen; NULL = 500). */
void api_json(struct api_response *res, int status, json_t *o);

/* Requires Content-Type application/json and a JSON object body without duplicate
 * keys. Returns 0 with *out (caller decrefs), or -1 with res filled (415/400). */
int api_parse_body(const struct api_request *req, struct api_response *res, json_t **out);

/* -1 with a 400 in res when o has a key not in the NULL-terminated allowed list. */
int api_check_fields(json_t *o, const char *const *allowed, struct api_response *res);

/* Reads a string field; -1 with a 400 in res when missing (and required) or not a
 * string. *out is borrowed from o (NULL when absent and optional). */
int api_get_string(json_t *o, const char *key, int required, const char **out,
                   struct api_response *res);

/* Resolves "Authorization: Bearer <token>"; -1 with a 401 in res when absent or
 * unknown, or 500 when the store fails. */
struct api_caller {
    int64_t tenant_id, user_id;
    char tenant[STORE_NAME_MAX + 1];
    char region[16];
};
int api_auth(struct hub *h, const struct api_request *req, struct api_response *res,
             struct api_caller *caller);

/* Device record as the console API shows it. New reference. */
json_t *api_device_json(const struct store_device *d);

void handle_register(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_code(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_poll(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_claim(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_devices_list(struct hub *h, const struct api_request *req, struct api_response *res);
void handle_healthz(struct hub *h, const struct api_request *req, struct api_response *res);

#endif
