/* The agent's side of the hub protocol (PROTOCOL.md section 5) without I/O: messages
 * out, hub messages in, the desired copy and its version. */
#include "twinsync.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "phy/protocol.h"
#include "phy/err.h"
#include "phy/twin.h"

void agent_sync_init(struct agent_sync *s)
{
    memset(s, 0, sizeof *s);
    s->desired_version = -1;
    s->reported_cfg_version = -1;
    s->next_id = 1;
    s->push_max = -1;
}

void agent_sync_free(struct agent_sync *s)
{
    json_decref(s->desired);
    s->desired = NULL;
}

void agent_sync_session_start(struct agent_sync *s)
{
    s->twin_get_id = 0;
    s->push_max = -1;
}

enum agent_patch_decision agent_sync_patch_decision(long long current, long long incoming)
{
    if (current < 0)
        return AGENT_PATCH_REFETCH;
    if (incoming <= current)
        return AGENT_PATCH_IGNORE;
    if (incoming == current + 1)
        return AGENT_PATCH_APPLY;
    return AGENT_PATCH_REFETCH;
}

int agent_sync_need_apply(int content_changed, long long applied_version, long long desired_version)
{
    return content_changed || applied_version != desired_version;
}

static long long take_id(struct agent_sync *s, long long *id)
{
    long long v = s->next_id;

    s->next_id = v < (1LL << 52) ? v + 1 : 1; /* stays exact in a JSON double */
    if (id != NULL)
        *id = v;
    return v;
}

/* Serializes and releases msg (NULL-safe). */
static char *dump(json_t *msg)
{
    char *text = msg != NULL ? json_dumps(msg, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;

    json_decref(msg);
    return text;
}

char *agent_sync_twin_get(struct agent_sync *s, long long *id)
{
    long long v = take_id(s, id);

    s->twin_get_id = v;
    return dump(json_pack("{s:s, s:I}", "type", PHY_MSG_TWIN_GET, "id", (json_int_t)v));
}

char *agent_sync_reported_patch(struct agent_sync *s, const json_t *patch, long long *id)
{
    long long v = take_id(s, id);

    return dump(json_pack("{s:s, s:I, s:O}", "type", PHY_MSG_REPORTED_PATCH, "id", (json_int_t)v, "patch",
                          patch));
}

char *agent_sync_status(struct agent_sync *s, const json_t *status, long long *id)
{
    long long v = take_id(s, id);

    return dump(
        json_pack("{s:s, s:I, s:O}", "type", PHY_MSG_STATUS, "id", (json_int_t)v, "status", status));
}

static void invalid(struct agent_sync_event *ev, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void invalid(struct agent_sync_event *ev, const char *fmt, ...)
{
    va_list ap;

    ev->action = AGENT_SYNC_INVALID;
    va_start(ap, fmt);
    vsnprintf(ev->message, sizeof ev->message, fmt, ap);
    va_end(ap);
}

/* A non-negative integer member, or -1 when absent or of another kind. */
static long long get_count(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);

    return json_is_integer(v) && json_integer_value(v) >= 0 ? (long long)json_integer_value(v) : -1;
}

/* A message id: an integer, or the decimal text of one (the hub echoes ids as
 * strings). 0 when absent or anything else. */
static long long get_id(const json_t *v)
{
    const char *s;
    long long n = 0;

    if (json_is_integer(v))
        return (long long)json_integer_value(v);
    if (!json_is_string(v))
        return 0;
    s = json_string_value(v);
    if (s[0] == '\0' || json_string_length(v) > 18)
        return 0;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return 0;
        n = n * 10 + (*s - '0');
    }
    return n;
}

static void copy_str(char *dst, size_t cap, const json_t *v)
{
    const char *s = json_is_string(v) ? json_string_value(v) : "";

    snprintf(dst, cap, "%s", s);
}

static void on_twin(struct agent_sync *s, const json_t *msg, struct agent_sync_event *ev)
{
    const json_t *twin = json_object_get(msg, "twin");
    const json_t *desired = json_object_get(twin, "desired");
    const json_t *reported = json_object_get(twin, "reported");
    long long version = get_count(twin, "desired_version");
    json_t *copy;

    if (s->twin_get_id == 0 || ev->id != s->twin_get_id)
        return; /* an answer to an earlier request: a newer one is coming */
    if (!json_is_object(desired) || version < 0) {
        invalid(ev, "twin without a desired object and desired_version");
        return;
    }
    copy = json_deep_copy(desired);
    if (copy == NULL) {
        invalid(ev, "out of memory");
        return;
    }
    json_decref(s->desired);
    s->desired = copy;
    s->desired_version = version;
    s->reported_cfg_version = get_count(
        json_object_get(json_is_object(reported) ? reported : NULL, "config_status"), "version");
    s->twin_get_id = 0;
    ev->action = AGENT_SYNC_TWIN;
    ev->version = version;
    ev->refetch = s->push_max > version;
    s->push_max = -1;
}

static void on_push(struct agent_sync *s, const json_t *msg, struct agent_sync_event *ev)
{
    const json_t *patch = json_object_get(msg, "patch");
    long long version = get_count(msg, "version");
    int changed = 0;

    ev->version = version;
    if (version < 0 || !json_is_object(patch)) {
        /* Unusable, but it says the desired state moved: fetch it whole. */
        ev->action = s->twin_get_id != 0 ? AGENT_SYNC_NONE : AGENT_SYNC_REFETCH;
        return;
    }
    if (s->twin_get_id != 0) {
        /* The twin in flight may predate this push: compare when it arrives. */
        if (version > s->push_max)
            s->push_max = version;
        return;
    }
    switch (agent_sync_patch_decision(s->desired != NULL ? s->desired_version : -1, version)) {
    case AGENT_PATCH_IGNORE:
        return;
    case AGENT_PATCH_REFETCH:
        ev->action = AGENT_SYNC_REFETCH;
        return;
    case AGENT_PATCH_APPLY:
        break;
    }
    if (phy_twin_merge(&s->desired, patch, PHY_TWIN_MAX_BYTES, &changed) != 0) {
        ev->action = AGENT_SYNC_REFETCH;
        return;
    }
    s->desired_version = version;
    ev->action = AGENT_SYNC_APPLY;
}

void agent_sync_handle(struct agent_sync *s, const char *text, size_t n,
                       struct agent_sync_event *ev)
{
    json_error_t jerr;
    json_t *msg;
    const json_t *type, *id;

    memset(ev, 0, sizeof *ev);
    ev->action = AGENT_SYNC_NONE;
    msg = json_loadb(text, n, JSON_REJECT_DUPLICATES, &jerr);
    if (msg == NULL) {
        invalid(ev, "malformed JSON at line %d column %d", jerr.line, jerr.column);
        return;
    }
    if (!json_is_object(msg)) {
        invalid(ev, "not a JSON object");
        goto out;
    }
    type = json_object_get(msg, "type");
    if (!json_is_string(type)) {
        invalid(ev, "no type");
        goto out;
    }
    copy_str(ev->type, sizeof ev->type, type);
    id = json_object_get(msg, "id");
    ev->id = get_id(id);

    if (strcmp(ev->type, PHY_MSG_TWIN) == 0) {
        on_twin(s, msg, ev);
    } else if (strcmp(ev->type, PHY_MSG_DESIRED_PATCH) == 0) {
        on_push(s, msg, ev);
    } else if (strcmp(ev->type, PHY_MSG_ACK) == 0) {
        ev->action = AGENT_SYNC_ACK;
        ev->version = get_count(msg, "version");
    } else if (strcmp(ev->type, PHY_MSG_ERROR) == 0) {
        ev->action = AGENT_SYNC_ERROR;
        copy_str(ev->error, sizeof ev->error, json_object_get(msg, "error"));
        copy_str(ev->message, sizeof ev->message, json_object_get(msg, "message"));
        if (s->twin_get_id != 0 && ev->id == s->twin_get_id) {
            ev->for_twin_get = 1;
            s->twin_get_id = 0;
        }
    }
out:
    json_decref(msg);
}
