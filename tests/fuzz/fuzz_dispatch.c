/* libFuzzer target: hub message dispatcher, then twin merge of any accepted reported.patch. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dispatch.h"
#include "phy/err.h"
#include "phy/twin.h"

#define FUZZ_DOC "{\"a\":1,\"b\":{\"c\":[1,2],\"d\":\"x\",\"e\":{\"f\":null}},\"g\":\"h\"}"
#define FUZZ_SMALL_LIMIT 256 /* a second, small size limit so that refusals happen */

/* The reply built from an action must be valid JSON of the expected shape. */
static void check_reply(char *msg, const char *type)
{
    if (msg == NULL)
        abort();
    json_t *v = json_loads(msg, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(v) || !json_is_string(json_object_get(v, "type")) ||
        strcmp(json_string_value(json_object_get(v, "type")), type) != 0)
        abort();
    json_decref(v);
    free(msg);
}

/* Merges the patch with the given limit; checks the limits and idempotence. */
static void merge_once(const json_t *patch, size_t limit)
{
    json_t *doc = json_loads(FUZZ_DOC, 0, NULL);
    if (doc == NULL)
        return; /* allocation failure */
    json_t *before = json_deep_copy(doc);
    json_t *patch_before = json_deep_copy(patch);
    if (before == NULL || patch_before == NULL)
        goto out;

    int changed = -1;
    int rc = phy_twin_merge(&doc, patch, limit, &changed);
    if (!json_equal(patch, patch_before))
        abort();
    if (rc == 0) {
        char *s = phy_twin_dump(doc);
        if (s == NULL || strlen(s) > limit)
            abort();
        free(s);
        if (phy_twin_check_depth(doc, PHY_TWIN_MAX_DEPTH) != 0)
            abort();
        if (changed != !json_equal(doc, before))
            abort();
        /* a merge patch is idempotent */
        int again = -1;
        if (phy_twin_merge(&doc, patch, limit, &again) != 0 || again != 0)
            abort();
    } else {
        if (rc != PHY_ETOOBIG && rc != PHY_ENOMEM)
            abort();
        if (changed != 0 || !json_equal(doc, before))
            abort();
    }
out:
    json_decref(patch_before);
    json_decref(before);
    json_decref(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dispatch_action a;
    if (dispatch_parse((const char *)data, size, &a) != 0)
        abort();
    if (a.id.present) {
        size_t n = strnlen(a.id.text, sizeof(a.id.text));
        if (n < 1 || n > DISPATCH_ID_MAX)
            abort();
        json_t *v = dispatch_id_json(&a.id); /* echoed with its type, exactly */
        if (!v || (a.id.integer ? !json_is_integer(v) : !json_is_string(v)))
            abort();
        json_decref(v);
    } else if (a.id.text[0] != '\0' || a.id.integer) {
        abort();
    }

    switch (a.kind) {
    case DISPATCH_ERROR:
        if (a.error == NULL || a.body != NULL || a.message[0] == '\0' ||
            strnlen(a.message, sizeof(a.message)) >= sizeof(a.message))
            abort();
        check_reply(dispatch_error_msg(&a.id, a.error, a.message), "error");
        break;
    case DISPATCH_TWIN_GET:
        if (a.body != NULL)
            abort();
        break;
    case DISPATCH_REPORTED_PATCH:
        if (!json_is_object(a.body) || phy_twin_check_depth(a.body, PHY_TWIN_MAX_DEPTH) != 0)
            abort();
        merge_once(a.body, PHY_TWIN_MAX_BYTES);
        merge_once(a.body, FUZZ_SMALL_LIMIT);
        check_reply(dispatch_ack_msg(&a.id, 1), "ack");
        break;
    case DISPATCH_STATUS: {
        if (!json_is_object(a.body))
            abort();
        char *s = json_dumps(a.body, JSON_COMPACT);
        if (s == NULL || strlen(s) > 8192)
            abort();
        free(s);
        break;
    }
    default:
        abort();
    }
    dispatch_action_clear(&a);
    return 0;
}
