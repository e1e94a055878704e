/* The agent's side of the hub protocol (PROTOCOL.md section 5) without I/O: messages
 * out, hub messages in, the desired copy and its version. */
#ifndef PHY_AGENT_TWINSYNC_H
#define PHY_AGENT_TWINSYNC_H

#include <stddef.h>

#include <jansson.h>

#define AGENT_SYNC_TEXT_MAX 200

/* Protocol state. Lives across sessions (the desired copy and message ids survive a
 * reconnect); agent_sync_session_start resets what belongs to one session. */
struct agent_sync {
    json_t *desired;                /* latest full desired section (owned); NULL before a twin */
    long long desired_version;      /* -1 before the first twin */
    long long reported_cfg_version; /* reported.config_status.version in the last twin, or -1 */
    long long next_id;              /* next message id, from 1 */
    long long twin_get_id;          /* the twin.get in flight, 0 when none */
    long long push_max;             /* highest pushed version seen while a twin.get was in flight */
};

/* What the caller should do after one hub message. */
enum agent_sync_action {
    AGENT_SYNC_NONE,    /* nothing (stale or early push, unknown type, twin for another id) */
    AGENT_SYNC_TWIN,    /* the full twin arrived: s->desired/desired_version are its desired;
                         * the caller decides whether to apply (content or version differ) */
    AGENT_SYNC_APPLY,   /* a push was merged: apply s->desired at s->desired_version */
    AGENT_SYNC_REFETCH, /* gap or unusable push: send twin.get */
    AGENT_SYNC_ACK,     /* ack of a reported.patch: id, version */
    AGENT_SYNC_ERROR,   /* error from the hub: id (0 when absent), error, message */
    AGENT_SYNC_INVALID, /* not a protocol message: message says why */
};

struct agent_sync_event {
    enum agent_sync_action action;
    int refetch;      /* AGENT_SYNC_TWIN: a newer push was seen meanwhile: twin.get again */
    int for_twin_get; /* AGENT_SYNC_ERROR: the failed request was the twin.get in flight */
    long long id;
    long long version;
    char type[32];                         /* the message's type, for logs */
    char error[64];                        /* AGENT_SYNC_ERROR */
    char message[AGENT_SYNC_TEXT_MAX + 1]; /* AGENT_SYNC_ERROR / AGENT_SYNC_INVALID */
};

/* What a desired.patch with version incoming means when the local copy is at current. */
enum agent_patch_decision {
    AGENT_PATCH_APPLY,   /* incoming == current + 1 */
    AGENT_PATCH_IGNORE,  /* incoming <= current: already contained in the copy */
    AGENT_PATCH_REFETCH, /* incoming > current + 1: a gap, or no copy yet (current < 0) */
};

void agent_sync_init(struct agent_sync *s);

/* Releases the desired copy; s can be initialized again. */
void agent_sync_free(struct agent_sync *s);

/* A new session begins: nothing is in flight. */
void agent_sync_session_start(struct agent_sync *s);

enum agent_patch_decision agent_sync_patch_decision(long long current, long long incoming);

/* 1 when the desired configuration must be applied: the file content differs from
 * the desired copy (content_changed) or the last version known to be applied
 * (applied_version, -1 for none) is not the desired version. */
int agent_sync_need_apply(int content_changed, long long applied_version,
                          long long desired_version);

/* Outgoing messages as compact JSON text (malloc'd, caller frees) or NULL. Each takes
 * the next id; *id (may be NULL) receives it. twin.get also becomes the one in
 * flight. */
char *agent_sync_twin_get(struct agent_sync *s, long long *id);
char *agent_sync_reported_patch(struct agent_sync *s, const json_t *patch, long long *id);
char *agent_sync_status(struct agent_sync *s, const json_t *status, long long *id);

/* Handles one text message from the hub (text[0..n), need not be NUL-terminated),
 * updating s, and says what to do in *ev. Never fails: malformed input gives
 * AGENT_SYNC_INVALID. */
void agent_sync_handle(struct agent_sync *s, const char *text, size_t n,
                       struct agent_sync_event *ev);

#endif
