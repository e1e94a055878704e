/* The device hub's message dispatcher: validates one phyhub.v1 text frame into an action. */
#include "dispatch.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "phy/assert.h"
#include "phy/json.h"
#include "phy/protocol.h"
#include "phy/err.h"
#include "phy/twin.h"

#define DISPATCH_ECHO_KEY_MAX 32 /* longest unknown key quoted back in a message */

static void set_error(struct dispatch_action *out, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(struct dispatch_action *out, const char *code, const char *fmt, ...)
{
    va_list ap;
    out->kind = DISPATCH_ERROR;
    out->error = code;
    va_start(ap, fmt);
    vsnprintf(out->message, sizeof(out->message), fmt, ap);
    va_end(ap);
    json_decref(out->body);
    out->body = NULL;
}

/* Fills out->id from the optional "id" member; 0 or -1 (error already set). */
static int take_id(const json_t *root, struct dispatch_action *out)
{
    const json_t *id = json_object_get(root, "id");
    if (id == NULL)
        return 0;
    if (json_is_string(id)) {
        size_t n = json_string_length(id);
        if (n < 1 || n > DISPATCH_ID_MAX) {
            set_error(out, "bad_message", "id must be 1 to %d bytes", DISPATCH_ID_MAX);
            return -1;
        }
        memcpy(out->id.text, json_string_value(id), n);
        out->id.text[n] = '\0';
    } else if (json_is_integer(id)) {
        snprintf(out->id.text, sizeof(out->id.text), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(id));
        out->id.integer = 1;
    } else {
        set_error(out, "bad_message", "id must be a string or an integer");
        return -1;
    }
    out->id.present = 1;
    return 0;
}

/* Printable ASCII and short: safe and useful to quote back to the sender. */
static int echoable(const char *s, size_t n)
{
    if (n == 0 || n > DISPATCH_ECHO_KEY_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e || s[i] == '"' || s[i] == '\\')
            return 0;
    return 1;
}

/* Rejects any member other than "type", "id" and `extra` (NULL: none); 0 or -1. */
static int only_known_fields(const json_t *root, const char *extra, struct dispatch_action *out)
{
    const char *key;
    size_t key_len;
    json_t *value;
    json_t *obj = (json_t *)root; /* the iteration macros take a non-const object */
    json_object_keylen_foreach(obj, key, key_len, value)
    {
        (void)value;
        if ((key_len == 4 && memcmp(key, "type", 4) == 0) ||
            (key_len == 2 && memcmp(key, "id", 2) == 0) ||
            (extra != NULL && key_len == strlen(extra) && memcmp(key, extra, key_len) == 0))
            continue;
        if (echoable(key, key_len))
            set_error(out, "bad_message", "unknown field \"%.*s\"", (int)key_len, key);
        else
            set_error(out, "bad_message", "unknown field");
        return -1;
    }
    return 0;
}

/* Takes the object member `name` as the action's body; 0 or -1 (error already set). */
static int take_body(const json_t *root, const char *name, struct dispatch_action *out)
{
    json_t *v = json_object_get(root, name);
    if (v == NULL) {
        set_error(out, "bad_message", "missing %s", name);
        return -1;
    }
    if (!json_is_object(v)) {
        set_error(out, "bad_message", "%s must be an object", name);
        return -1;
    }
    out->body = json_incref(v);
    return 0;
}

int dispatch_parse(const char *data, size_t len, struct dispatch_action *out)
{
    memset(out, 0, sizeof(*out));
    out->kind = DISPATCH_ERROR;
    if (data == NULL || len == 0) {
        set_error(out, "bad_message", "empty message");
        return 0;
    }

    json_error_t jerr;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (root == NULL) {
        /* jansson's text may quote the input: give the position only */
        set_error(out, "bad_message", "invalid JSON at line %d column %d", jerr.line, jerr.column);
        return 0;
    }
    if (!json_is_object(root)) {
        set_error(out, "bad_message", "message must be a JSON object");
        goto out_free;
    }
    if (take_id(root, out) != 0)
        goto out_free;

    const json_t *type = json_object_get(root, "type");
    if (type == NULL) {
        set_error(out, "bad_message", "missing type");
        goto out_free;
    }
    if (!json_is_string(type)) {
        set_error(out, "bad_message", "type must be a string");
        goto out_free;
    }
    const char *t = json_string_value(type);
    size_t tlen = json_string_length(type);

    if (tlen == sizeof PHY_MSG_TWIN_GET - 1 && memcmp(t, PHY_MSG_TWIN_GET, tlen) == 0) {
        if (only_known_fields(root, NULL, out) != 0)
            goto out_free;
        out->kind = DISPATCH_TWIN_GET;
    } else if (tlen == sizeof PHY_MSG_REPORTED_PATCH - 1 &&
               memcmp(t, PHY_MSG_REPORTED_PATCH, tlen) == 0) {
        if (only_known_fields(root, "patch", out) != 0 || take_body(root, "patch", out) != 0)
            goto out_free;
        if (phy_twin_check_depth(out->body, PHY_TWIN_MAX_DEPTH) != 0) {
            set_error(out, "too_deep", "patch nests deeper than %d levels", PHY_TWIN_MAX_DEPTH);
            goto out_free;
        }
        out->kind = DISPATCH_REPORTED_PATCH;
    } else if (tlen == sizeof PHY_MSG_STATUS - 1 && memcmp(t, PHY_MSG_STATUS, tlen) == 0) {
        if (only_known_fields(root, "status", out) != 0 || take_body(root, "status", out) != 0)
            goto out_free;
        if (phy_twin_check_depth(out->body, PHY_TWIN_MAX_DEPTH) != 0) {
            set_error(out, "too_deep", "status nests deeper than %d levels", PHY_TWIN_MAX_DEPTH);
            goto out_free;
        }
        int rc = phy_json_check_size(out->body, PHY_STATUS_MAX);
        if (rc == PHY_ETOOBIG) {
            set_error(out, "too_large", "status over %d bytes", PHY_STATUS_MAX);
            goto out_free;
        }
        if (rc != 0) {
            set_error(out, "bad_message", "status cannot be encoded");
            goto out_free;
        }
        out->kind = DISPATCH_STATUS;
    } else {
        set_error(out, "unknown_type", "unknown message type");
    }

out_free:
    json_decref(root);
    return 0;
}

void dispatch_action_clear(struct dispatch_action *a)
{
    if (a == NULL)
        return;
    json_decref(a->body);
    a->body = NULL;
}

/* Compact dump of a freshly packed object, which it releases; NULL if v is NULL. */
static char *dump_owned(json_t *v)
{
    if (v == NULL)
        return NULL;
    char *s = phy_json_dumps(v, JSON_COMPACT);
    json_decref(v);
    return s;
}

json_t *dispatch_id_json(const struct dispatch_id *id)
{
    if (id == NULL || !id->present)
        return NULL;
    if (id->integer)
        return json_integer((json_int_t)strtoll(id->text, NULL, 10));
    return json_string(id->text);
}

char *dispatch_error_msg(const struct dispatch_id *id, const char *error, const char *message)
{
    PHY_ASSERT(error != NULL); /* a literal error code, or a parsed action's (always set) */
    return dump_owned(json_pack("{s:s, s:o*, s:s, s:s}", "type", PHY_MSG_ERROR, "id",
                                dispatch_id_json(id), "error", error, "message",
                                message != NULL ? message : ""));
}

char *dispatch_ack_msg(const struct dispatch_id *id, long long version)
{
    return dump_owned(json_pack("{s:s, s:o*, s:I}", "type", PHY_MSG_ACK, "id", dispatch_id_json(id),
                                "version", (json_int_t)version));
}
