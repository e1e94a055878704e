/* Console event streams (events.c): the mode behind GET /api/v1/events, and its
 * bookkeeping, declared here so that it can be tested without I/O. */
#ifndef PHY_HUB_EVENTS_H
#define PHY_HUB_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "phy/crypto.h"

/* Console sessions ended by logout lately: a stream authorized just before the
 * logout but started after it is refused (ring of the last EVENTS_ENDED). */
#define EVENTS_ENDED 64
/* Open event streams of one caller (a console session or an API token): at most
 * EVENTS_PER_CALLER are served, and --max-streams-per-tenant per tenant. Each
 * holds a connection and may queue EVENTS_MAX_PENDING bytes (and as much again in
 * its socket's send buffer), then it is reset. */
#define EVENTS_PER_CALLER 8
#define EVENTS_MAX_PENDING (64u * 1024)

/* Who a stream serves, as its request was authorized. */
struct stream_auth {
    int64_t tenant_id;
    char key[PHY_HASH_HEX_LEN + 1]; /* hex SHA-256 of the caller's cookie or token */
    int console;                    /* a console session (not an API token): */
    char session_hash[PHY_HASH_HEX_LEN + 1]; /*   it ends with that session, */
    int64_t deadline_ms; /*   at the latest here (wall clock: idle or absolute end, as of the start) */
};

/* One open stream: c->mode_data of its connection. */
struct events;

struct stream {
    struct conn *conn;
    struct events *events;
    struct stream *next; /* in struct events.streams once begun */
    int linked;
    struct stream_auth auth;
};

/* The mode's state for one server. */
struct events {
    int max_per_tenant;
    struct stream *streams;
    char ended[EVENTS_ENDED][PHY_HASH_HEX_LEN + 1];
    size_t ended_next;
};

/* 1 when session_hash was ended by a logout lately. */
int events_session_ended(const struct events *ev, const char *session_hash);
/* Remembers that a console session ended and closes its streams (logout). */
void events_end_session(struct events *ev, const char *session_hash);
/* Streams open now for the caller key and for the tenant. */
void events_count(const struct events *ev, const char *key, int64_t tenant_id, size_t *by_key,
                  size_t *by_tenant);
/* Sends one event to every stream of the tenant: "event: <type>\ndata: <json>\n\n". */
void events_publish(struct events *ev, int64_t tenant_id, const char *type, const char *json);

#endif
