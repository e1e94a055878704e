/* Provisioning protocol for phyagent without I/O: request bodies in, answers classified. */
#ifndef PHY_AGENT_PROV_H
#define PHY_AGENT_PROV_H

#include <stddef.h>

#include "phy/crypto.h"
#include "phy/proxytoken.h"

#define AGENT_POLL_TOKEN_MAX 128
#define AGENT_ERROR_MAX 64
#define AGENT_INTERVAL_MAX 3600 /* seconds; larger server values are clamped */
#define AGENT_FIELD_MAX 255     /* tenant, region, endpoint, device_secret */

/* What the agent should do after one provisioning answer. */
enum agent_prov_outcome {
    AGENT_PROV_OK,                  /* register 201 / code 201 */
    AGENT_PROV_PENDING,             /* poll 202: wait interval */
    AGENT_PROV_SLOW_DOWN,           /* poll 429 slow_down: wait the new interval */
    AGENT_PROV_PROVISIONED,         /* poll 200: credentials filled */
    AGENT_PROV_INVALID_TOKEN,       /* 401 invalid_poll_token: re-register */
    AGENT_PROV_UNKNOWN_SERIAL,      /* 404 unknown_serial: registration gone, re-register */
    AGENT_PROV_ALREADY_PROVISIONED, /* 410 already_provisioned */
    AGENT_PROV_RATE_LIMITED,        /* other 429 (too many registrations): back off */
    AGENT_PROV_PROOF_REQUIRED,      /* 403 proof_required: the registration was never
                                     * proven (attested serial): register again */
    AGENT_PROV_BAD_PROOF,           /* prove 401 invalid_proof: wrong device key */
    AGENT_PROV_RETRY,               /* 5xx, malformed answer, unexpected status: back off */
};

/* The device's credentials, as issued and as stored in credentials.json. */
struct agent_creds {
    char device_id[PHY_DEVICE_ID_LEN + 40];
    char device_secret[AGENT_FIELD_MAX + 1];
    char tenant[AGENT_FIELD_MAX + 1];
    char region[AGENT_FIELD_MAX + 1];
    char endpoint[AGENT_FIELD_MAX + 1];
    char serial[PHY_SERIAL_MAX + 1];
    char proxy_token[PHY_PROXY_TOKEN_MAX + 1]; /* "" when the hub issued none */
};

/* One classified answer. Only the fields of the outcome are meaningful. */
struct agent_prov_result {
    enum agent_prov_outcome outcome;
    int status;                                /* HTTP status */
    int interval;                              /* seconds, 0 when not given */
    char poll_token[AGENT_POLL_TOKEN_MAX + 1]; /* register */
    char challenge[PHY_TOKEN_LEN + 1];         /* register, attested serials; "" none */
    char code[PHY_CODE_LEN + 1];               /* code */
    int expires_in;                            /* code, seconds, 0 when not given */
    char error[AGENT_ERROR_MAX + 1];           /* "error" member of an error body */
    struct agent_creds creds;                  /* poll 200 */
};

/* Request bodies as malloc'd NUL-terminated JSON (caller frees; the poll token is in
 * it, so the caller should cleanse before freeing). NULL on allocation failure. */
char *agent_prov_register_body(const char *serial);
char *agent_prov_token_body(const char *serial, const char *poll_token);
char *agent_prov_prove_body(const char *serial, const char *poll_token, const char *signature);

/* Classify answers to register, code and poll. body may be NULL for no body.
 * Always fills r->outcome; never fails. */
void agent_prov_parse_register(int status, const char *body, size_t n, struct agent_prov_result *r);
void agent_prov_parse_prove(int status, const char *body, size_t n, struct agent_prov_result *r);
void agent_prov_parse_code(int status, const char *body, size_t n, struct agent_prov_result *r);
void agent_prov_parse_poll(int status, const char *body, size_t n, const char *serial,
                           struct agent_prov_result *r);

/* 1 when s is a plausible poll token: 1..AGENT_POLL_TOKEN_MAX base64url chars. */
int agent_prov_token_valid(const char *s);

/* Parses credentials.json text into c (serial included). 0 or PHY_EINVAL. */
int agent_prov_creds_parse(const char *text, size_t n, struct agent_creds *c);

/* Serializes c as credentials.json (malloc'd, caller cleanses and frees). NULL on
 * allocation failure. */
char *agent_prov_creds_json(const struct agent_creds *c);

/* Parses registration.json text; 0 when it holds a valid {serial, poll_token} for
 * serial (token copied into token[AGENT_POLL_TOKEN_MAX + 1]), else PHY_EINVAL. */
int agent_prov_registration_parse(const char *text, size_t n, const char *serial, char *token);

/* Serializes {serial, poll_token} (malloc'd, caller cleanses and frees). */
char *agent_prov_registration_json(const char *serial, const char *poll_token);

#endif
