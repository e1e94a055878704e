/* The device hub's message dispatcher: one text frame in, one action out (no I/O). */
#ifndef PHY_HUB_DISPATCH_H
#define PHY_HUB_DISPATCH_H

#include <stddef.h>

#include <jansson.h>

#define DISPATCH_ID_MAX 64 /* bytes of a message id (string) */

enum dispatch_kind {
    DISPATCH_TWIN_GET,       /* {"type":"twin.get","id"} */
    DISPATCH_REPORTED_PATCH, /* {"type":"reported.patch","id","patch":{...}} */
    DISPATCH_STATUS,         /* {"type":"status","id","status":{...}} */
    DISPATCH_ERROR,          /* answer with {"type":"error","id"?,"error","message"} */
};

/* A message's id as it was sent: replies echo it with its JSON type (a string, or
 * an integer kept here as its decimal text). */
struct dispatch_id {
    char text[DISPATCH_ID_MAX + 1]; /* "" when the message had none */
    int present;
    int integer; /* 1: the id was a JSON integer */
};

struct dispatch_action {
    enum dispatch_kind kind;
    struct dispatch_id id;
    json_t *body;      /* REPORTED_PATCH: the patch object; STATUS: the status object;
                          owned (json_decref with dispatch_action_clear) */
    const char *error; /* DISPATCH_ERROR: static code, e.g. "bad_message" */
    char message[160]; /* DISPATCH_ERROR: human text */
};

/* Parses one text frame (data[0..len), UTF-8 already validated by the WebSocket
 * layer). Rules: a JSON object (duplicate keys rejected) with a string "type";
 * "id" optional, a string of 1..64 bytes or an integer (echoed as one);
 * unknown keys are rejected; twin.get has no other field; reported.patch needs
 * an object "patch" of nesting depth <= PHY_TWIN_MAX_DEPTH; status needs an object
 * "status" of nesting depth <= PHY_TWIN_MAX_DEPTH whose compact serialization is
 * <= 8 KiB. Errors: bad_message (not JSON,
 * not an object, wrong field types, unknown field), unknown_type, too_deep,
 * too_large. Always returns 0 and fills *out (kind ERROR for bad input). */
int dispatch_parse(const char *data, size_t len, struct dispatch_action *out);

/* Releases the action's JSON. Accepts a zeroed action. */
void dispatch_action_clear(struct dispatch_action *a);

/* Builds the hub's outgoing messages as compact JSON text (malloc'd, caller frees),
 * NULL on allocation failure. id may be NULL or absent (omitted). */
char *dispatch_error_msg(const struct dispatch_id *id, const char *error, const char *message);
char *dispatch_ack_msg(const struct dispatch_id *id, long long version);
/* The id as a JSON value to put in a reply (new reference), NULL when absent. */
json_t *dispatch_id_json(const struct dispatch_id *id);

#endif
