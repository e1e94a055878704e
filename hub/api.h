/* The hub's HTTP API: routing and handlers. Runs on a thread-pool worker, never on
 * the event loop: handlers call the store directly. */
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
    API_EFFECT_EVENT,         /* publish event_type/event_json to tenant_id's streams */
    API_EFFECT_END_STREAMS,   /* close the event streams of console session session_hash */
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

/* Routes and handles one request. Always fills res (status and body). */
void api_handle(struct hub *h, const struct api_request *req, struct api_response *res);

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

#endif
