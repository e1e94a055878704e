/* The hub's HTTP API: a request and its answer as the server hands them over, and
 * the helpers every handler uses to read one and write the other (reply.c). Runs on
 * a thread-pool worker, never on the event loop: handlers call the store directly.
 *
 * One convention for "answered already": a helper that fills res (an error, or the
 * whole answer, as a replayed claim's 200) returns -1, and its caller returns at
 * once (through its cleanup label), without looking at res; 0 means go on. A
 * helper with more to tell uses values above 0 (1 found, 0 absent). No handler
 * reads res->status to learn whether a helper answered. */
#ifndef PHY_HUB_API_H
#define PHY_HUB_API_H

#include <stddef.h>

#include <stdint.h>

#include <jansson.h>

#include "hub.h"
#include "phy/crypto.h"

#define API_MAX_EXTRA_HEADERS 512

/* A request as the server hands it over; every string is NUL-terminated and owned
 * by the caller for the duration of api_handle. Absent headers are NULL. */
struct api_request {
    const char *method;
    const char *path;  /* without the query */
    const char *query; /* after '?', or NULL */
    const char *authorization;
    const char *content_type;
    const char *if_match;
    const char *cookie;     /* the Cookie header (may carry a console session) */
    const char *csrf_token; /* the X-CSRF-Token header */
    int background;         /* "X-Phy-Background: 1": sent by the console without a user
                             * action; not a use of the session (idle expiry) */
    const char *peer_ip;    /* the client's address without the port ("" unknown) */
    const char *user_agent; /* the User-Agent header (a device's agent and version) */
    const char *body;       /* NUL-terminated copy of the body (may contain NULs) */
    size_t body_len;
    const char *request_id;
};

/* What a handler asks the event loop to do once its answer is sent: the loop owns
 * the live device sessions and the event stream, handlers (on worker threads)
 * never touch them. */
enum api_effect_kind {
    API_EFFECT_PUSH_DESIRED,  /* send {"type":"desired.patch","version","patch":push_patch} */
    API_EFFECT_CLOSE_SESSION, /* close the device's live session with close_code */
    API_EFFECT_SESSION_ELSEWHERE, /* the device opened session version (its generation) on
                                   * another node: an older one here closes with 4000 */
    API_EFFECT_EVENT,         /* publish event_type/event_json to tenant_id's streams */
    API_EFFECT_END_STREAMS,   /* close the event streams of console session session_hash */
    API_EFFECT_RECLAIM,       /* this node was forgotten by the store (too slow to beat), or
                               * lost announcements: live sessions check themselves
                               * (session_reclaim), all or those not in present */
};

struct api_effect {
    enum api_effect_kind kind;
    char device_id[PHY_DEVICE_ID_LEN + 1];
    int64_t version;        /* PUSH_DESIRED */
    int close_code;         /* CLOSE_SESSION: 4001 revoked, 4002 deleted */
    int64_t tenant_id;      /* EVENT */
    const char *event_type; /* EVENT: a static string, e.g. "state" */
    char *event_json;       /* EVENT: malloc'd JSON text, owned by the response */
    char session_hash[PHY_HASH_HEX_LEN + 1]; /* END_STREAMS */
    /* RECLAIM: the device IDs (sorted by strcmp) whose sessions need no check, as
     * the store listed them after a lost LISTEN connection; NULL: check every one. */
    const char *const *present;
    size_t npresent;
};

struct api_response {
    int status;
    char *body; /* malloc'd body (JSON text, or a static file's bytes: use body_len),
                 * NUL-terminated, owned by the response */
    size_t body_len;
    char extra_headers[API_MAX_EXTRA_HEADERS]; /* CRLF-terminated header lines */
    char log[256];              /* key=value facts for the access line (never secrets) */
    struct api_effect *effects; /* malloc'd array or NULL */
    size_t neffects;
    char *push_patch;         /* compact JSON of the desired patch every PUSH_DESIRED sends */
    const char *content_type; /* static; NULL means application/json */
};

/* Appends one effect to res; 0 or PHY_ENOMEM. On success res owns e->event_json
 * (on failure the caller still does). */
int api_add_effect(struct api_response *res, const struct api_effect *e);

/* Queues an event of type (a static string) about device_id with the JSON object o
 * (reference stolen) for the tenant's event streams; a failure (out of memory) is
 * logged and only loses the event. */
void api_event(struct api_response *res, int64_t tenant_id, const char *type,
               const char *device_id, json_t *o);

/* api_event of type "state": {"device_id", "state"}. */
void api_state_event(struct api_response *res, int64_t tenant_id, const char *device_id,
                     const char *state);


/* Fills res with {"error": code, "message": msg} and status. */
/* 503 store_unavailable with Retry-After: 1. */
void api_store_failed(struct api_response *res);
void api_error(struct api_response *res, int status, const char *code, const char *msg);
/* api_error with "Retry-After: retry_s" (at least 1): every 429 and 503 says when. */
void api_error_retry(struct api_response *res, int status, const char *code, const char *msg,
                     long long retry_s);

void api_response_free(struct api_response *res);

/* The path as the access log shows it: under /internal/ (another region's devices)
 * a device ID segment becomes "{id}", so eu's logs name no foreign device. Returns
 * path itself or buf. */
const char *api_log_path(const char *path, char *buf, size_t cap);

/* Sets res to status with the JSON object o (reference stolen). 0, or -1 when o is
 * NULL or cannot be written (out of memory): res is then a 500. */
int api_json(struct api_response *res, int status, json_t *o);

/* Requires Content-Type application/json and a JSON object body without duplicate
 * keys. Returns 0 with *out (caller decrefs), or -1 with res filled (415/400). */
int api_parse_body(const struct api_request *req, struct api_response *res, json_t **out);

/* As api_parse_body with the media types in the NULL-terminated list types (matched
 * case-insensitively, parameters such as charset ignored), e.g. {"application/json",
 * "application/merge-patch+json", NULL}. */
int api_parse_body_as(const struct api_request *req, struct api_response *res,
                      const char *const *types, json_t **out);

/* -1 with a 400 in res when o has a key not in the NULL-terminated allowed list. */
int api_check_fields(json_t *o, const char *const *allowed, struct api_response *res);

/* Reads a string field; -1 with a 400 in res when missing (and required) or not a
 * string. *out is borrowed from o (NULL when absent and optional). */
int api_get_string(json_t *o, const char *key, int required, const char **out,
                   struct api_response *res);

/* 1 when s[0..n) is a device ID: "dev_" + 26 of [a-z2-7]. */
int api_device_id_valid(const char *s, size_t n);


/* Decodes a query value s[0..n): "%XX" escapes only ('+' is a plain '+'); an invalid
 * escape, %00, or a raw space/control/non-ASCII byte is PHY_EINVAL; PHY_ETOOBIG when
 * the result (plus NUL) does not fit out[cap]. Returns the decoded length. */
int api_pct_decode(const char *s, size_t n, char *out, size_t cap);

/* Finds name=value in a query string ("a=1&b=2", may be NULL) and decodes the value
 * into out[cap]. 1 found, 0 absent, PHY_EINVAL (malformed query, bad escape, name
 * given twice) or PHY_ETOOBIG. */
int api_query_param(const char *query, const char *name, char *out, size_t cap);

/* 0 when every parameter of the query is named in allowed (NULL-terminated), else
 * PHY_EINVAL. */
int api_query_check(const char *query, const char *const *allowed);

/* Parses an If-Match value: NULL or "*" -> *out = -1 (unconditional); "<n>" or n
 * (decimal, at most 18 digits) -> n. Weak tags (W/), lists and anything else are
 * PHY_EINVAL. */
int api_if_match(const char *v, int64_t *out);

#endif
