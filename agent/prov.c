/* Provisioning protocol for phyagent: JSON bodies built and answers classified, no I/O. */
#include "prov.h"

#include <string.h>

#include <jansson.h>

#include "phy/client.h"
#include "phy/err.h"
#include "phy/text.h"

#define JSON_FLAGS (JSON_COMPACT | JSON_ENSURE_ASCII)

static int charset_ok(const char *s, size_t n, int (*ok)(unsigned char))
{
    for (size_t i = 0; i < n; i++)
        if (!ok((unsigned char)s[i]))
            return 0;
    return 1;
}

static int is_b64url(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_';
}

static int is_alnum(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
}

static int is_id(unsigned char ch)
{
    return is_alnum(ch) || ch == '_';
}

static int is_region(unsigned char ch)
{
    return is_alnum(ch) || ch == '-' || ch == '_';
}

static int is_visible(unsigned char ch)
{
    return ch > 0x20 && ch < 0x7f;
}

/* A proxy token: key ID, '.', base64url. */
static int is_token(unsigned char ch)
{
    return phy_name_char(ch);
}

static int is_text(unsigned char ch)
{
    return ch >= 0x20 && ch != 0x7f;
}

/* Copies string member key of o into out[cap] when it is a string of 1..cap-1 bytes
 * accepted by ok. 0 or PHY_EINVAL. */
static int get_str(json_t *o, const char *key, char *out, size_t cap, int (*ok)(unsigned char))
{
    json_t *v = json_object_get(o, key);
    const char *s;
    size_t n;

    if (!json_is_string(v))
        return PHY_EINVAL;
    s = json_string_value(v);
    n = json_string_length(v);
    if (n == 0 || n >= cap || memchr(s, '\0', n) != NULL || !charset_ok(s, n, ok))
        return PHY_EINVAL;
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

/* Integer member clamped to [1, max]; 0 when absent or not an integer. */
static int get_interval(json_t *o, const char *key, int max)
{
    json_t *v = json_object_get(o, key);
    json_int_t i;

    if (!json_is_integer(v))
        return 0;
    i = json_integer_value(v);
    if (i < 1)
        return 1;
    if (i > max)
        return max;
    return (int)i;
}

static json_t *load(const char *body, size_t n)
{
    json_error_t jerr;
    json_t *o;

    if (body == NULL || n == 0)
        return NULL;
    o = json_loadb(body, n, JSON_REJECT_DUPLICATES, &jerr);
    if (o != NULL && !json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static char *dump_and_free(json_t *o)
{
    char *s = o != NULL ? json_dumps(o, JSON_FLAGS) : NULL;

    json_decref(o);
    return s;
}

/* Body for register. */
char *agent_prov_register_body(const char *serial)
{
    return dump_and_free(json_pack("{s:s}", "serial", serial));
}

/* Body for code and poll. */
char *agent_prov_token_body(const char *serial, const char *poll_token)
{
    return dump_and_free(json_pack("{s:s, s:s}", "serial", serial, "poll_token", poll_token));
}

/* Body for prove. */
char *agent_prov_prove_body(const char *serial, const char *poll_token, const char *signature)
{
    return dump_and_free(json_pack("{s:s, s:s, s:s}", "serial", serial, "poll_token", poll_token,
                                   "signature", signature));
}

/* 1..AGENT_POLL_TOKEN_MAX base64url characters. */
int agent_prov_token_valid(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;

    return n > 0 && n <= AGENT_POLL_TOKEN_MAX && charset_ok(s, n, is_b64url);
}

/* Starts a result: status, parsed "error" member, outcome RETRY. Returns the parsed
 * body (caller decrefs) or NULL. */
static json_t *begin(int status, const char *body, size_t n, struct agent_prov_result *r)
{
    json_t *o = load(body, n);

    memset(r, 0, sizeof *r);
    r->status = status;
    r->outcome = AGENT_PROV_RETRY;
    if (o != NULL && get_str(o, "error", r->error, sizeof r->error, is_visible) != 0)
        r->error[0] = '\0';
    return o;
}

/* Outcomes shared by the three calls for error statuses. */
static void classify_error(int status, struct agent_prov_result *r)
{
    if (status == 401)
        r->outcome = AGENT_PROV_INVALID_TOKEN;
    else if (status == 404 && strcmp(r->error, "unknown_serial") == 0)
        r->outcome = AGENT_PROV_UNKNOWN_SERIAL;
    else if (status == 410)
        r->outcome = AGENT_PROV_ALREADY_PROVISIONED;
    else if (status == 429)
        r->outcome = AGENT_PROV_RATE_LIMITED;
    else if (status == 403 && strcmp(r->error, "proof_required") == 0)
        r->outcome = AGENT_PROV_PROOF_REQUIRED;
    else
        r->outcome = AGENT_PROV_RETRY;
}

/* register: 201 {poll_token, interval}. */
void agent_prov_parse_register(int status, const char *body, size_t n, struct agent_prov_result *r)
{
    json_t *o = begin(status, body, n, r);

    if (status == 201) {
        if (o != NULL &&
            get_str(o, "poll_token", r->poll_token, sizeof r->poll_token, is_b64url) == 0) {
            r->outcome = AGENT_PROV_OK;
            r->interval = get_interval(o, "interval", AGENT_INTERVAL_MAX);
            /* An attested serial: a challenge of exactly a token's shape. */
            if (json_object_get(o, "challenge") &&
                (get_str(o, "challenge", r->challenge, sizeof r->challenge, is_b64url) != 0 ||
                 strlen(r->challenge) != PHY_TOKEN_LEN)) {
                r->challenge[0] = '\0';
                r->outcome = AGENT_PROV_RETRY;
            }
        }
    } else {
        classify_error(status, r);
        if (r->outcome == AGENT_PROV_INVALID_TOKEN || r->outcome == AGENT_PROV_UNKNOWN_SERIAL)
            r->outcome = AGENT_PROV_RETRY; /* meaningless for register */
    }
    json_decref(o);
}

/* prove: 200 {status: proven, interval}. */
void agent_prov_parse_prove(int status, const char *body, size_t n, struct agent_prov_result *r)
{
    json_t *o = begin(status, body, n, r);

    if (status == 200) {
        r->outcome = AGENT_PROV_OK;
        if (o != NULL)
            r->interval = get_interval(o, "interval", AGENT_INTERVAL_MAX);
    } else if (status == 401 && strcmp(r->error, "invalid_proof") == 0) {
        r->outcome = AGENT_PROV_BAD_PROOF;
    } else {
        classify_error(status, r);
        if (status == 409) /* nothing_to_prove: proven already (a retried call) */
            r->outcome = AGENT_PROV_OK;
    }
    json_decref(o);
}

/* code: 201 {code, expires_in}. */
void agent_prov_parse_code(int status, const char *body, size_t n, struct agent_prov_result *r)
{
    json_t *o = begin(status, body, n, r);

    if (status == 201) {
        json_t *v = o != NULL ? json_object_get(o, "code") : NULL;
        if (json_is_string(v) &&
            phy_code_normalize(json_string_value(v), json_string_length(v), r->code) == 0) {
            r->outcome = AGENT_PROV_OK;
            r->expires_in = get_interval(o, "expires_in", 86400);
        }
    } else {
        classify_error(status, r);
    }
    json_decref(o);
}

/* Validates and copies the issued credentials of a poll 200 or a credentials file. */
static int creds_from(json_t *o, struct agent_creds *c)
{
    char host[AGENT_FIELD_MAX + 1];
    unsigned port;

    if (get_str(o, "device_id", c->device_id, sizeof c->device_id, is_id) != 0 ||
        strncmp(c->device_id, "dev_", 4) != 0 || strlen(c->device_id) > 4 + 64 ||
        !charset_ok(c->device_id + 4, strlen(c->device_id + 4), is_alnum) ||
        c->device_id[4] == '\0')
        return PHY_EINVAL;
    if (get_str(o, "device_secret", c->device_secret, sizeof c->device_secret, is_visible) != 0 ||
        get_str(o, "tenant", c->tenant, sizeof c->tenant, is_text) != 0 ||
        get_str(o, "region", c->region, sizeof c->region, is_region) != 0 ||
        get_str(o, "endpoint", c->endpoint, sizeof c->endpoint, is_visible) != 0)
        return PHY_EINVAL;
    if (phy_client_parse_hostport(c->endpoint, host, sizeof host, &port, 443) != 0)
        return PHY_EINVAL;
    /* Optional: a hub without --proxy-key issues none (nor did hubs before it). */
    if (json_object_get(o, "proxy_token") != NULL &&
        get_str(o, "proxy_token", c->proxy_token, sizeof c->proxy_token, is_token) != 0)
        return PHY_EINVAL;
    return 0;
}

/* poll: 202 pending, 429 slow_down, 200 credentials, errors. */
void agent_prov_parse_poll(int status, const char *body, size_t n, const char *serial,
                           struct agent_prov_result *r)
{
    json_t *o = begin(status, body, n, r);

    if (status == 200) {
        json_t *st = o != NULL ? json_object_get(o, "status") : NULL;
        size_t sl = serial != NULL ? strlen(serial) : 0;

        if (o != NULL &&
            (st == NULL ||
             (json_is_string(st) && strcmp(json_string_value(st), "provisioned") == 0)) &&
            sl > 0 && sl < sizeof r->creds.serial && creds_from(o, &r->creds) == 0) {
            memcpy(r->creds.serial, serial, sl + 1);
            r->outcome = AGENT_PROV_PROVISIONED;
        } else {
            memset(&r->creds, 0, sizeof r->creds);
        }
    } else if (status == 202) {
        r->outcome = AGENT_PROV_PENDING;
        r->interval = o != NULL ? get_interval(o, "interval", AGENT_INTERVAL_MAX) : 0;
    } else if (status == 429 && strcmp(r->error, "slow_down") == 0) {
        r->outcome = AGENT_PROV_SLOW_DOWN;
        r->interval = o != NULL ? get_interval(o, "interval", AGENT_INTERVAL_MAX) : 0;
    } else {
        classify_error(status, r);
    }
    json_decref(o);
}

/* credentials.json -> creds. */
int agent_prov_creds_parse(const char *text, size_t n, struct agent_creds *c)
{
    json_t *o = load(text, n);
    int rc = PHY_EINVAL;

    memset(c, 0, sizeof *c);
    if (o != NULL && creds_from(o, c) == 0 &&
        get_str(o, "serial", c->serial, sizeof c->serial, is_visible) == 0 &&
        phy_serial_valid(c->serial, strlen(c->serial)))
        rc = 0;
    json_decref(o);
    if (rc != 0)
        memset(c, 0, sizeof *c);
    return rc;
}

/* creds -> credentials.json with exactly the issued fields plus serial. */
char *agent_prov_creds_json(const struct agent_creds *c)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "device_id", c->device_id,
                          "device_secret", c->device_secret, "tenant", c->tenant, "region",
                          c->region, "endpoint", c->endpoint, "serial", c->serial);

    if (o != NULL && c->proxy_token[0] != '\0' &&
        json_object_set_new(o, "proxy_token", json_string(c->proxy_token)) != 0) {
        json_decref(o);
        o = NULL;
    }
    return dump_and_free(o);
}

/* registration.json -> token, for this serial only. */
int agent_prov_registration_parse(const char *text, size_t n, const char *serial, char *token)
{
    json_t *o = load(text, n);
    char s[PHY_SERIAL_MAX + 1];
    int rc = PHY_EINVAL;

    if (o != NULL && get_str(o, "serial", s, sizeof s, is_visible) == 0 && strcmp(s, serial) == 0 &&
        get_str(o, "poll_token", token, AGENT_POLL_TOKEN_MAX + 1, is_b64url) == 0)
        rc = 0;
    json_decref(o);
    if (rc != 0)
        token[0] = '\0';
    return rc;
}

/* {serial, poll_token} -> registration.json. */
char *agent_prov_registration_json(const char *serial, const char *poll_token)
{
    return dump_and_free(json_pack("{s:s, s:s}", "serial", serial, "poll_token", poll_token));
}
