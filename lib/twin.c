/* Device twin documents: RFC 7386 JSON merge patch with depth and size limits. */
#include "phy/json.h"
#include "phy/twin.h"

#include "phy/assert.h"
#include "phy/err.h"

/* Depth below v, allowed `room` more container levels; recursion is bounded by room. */
static int depth_within(const json_t *v, int room)
{
    if (json_is_object(v)) {
        if (room <= 0)
            return PHY_ETOOBIG;
        const char *key;
        size_t key_len;
        json_t *child;
        json_t *obj = (json_t *)v; /* the iteration macros take a non-const object */
        json_object_keylen_foreach(obj, key, key_len, child)
        {
            (void)key_len;
            if (depth_within(child, room - 1) != 0)
                return PHY_ETOOBIG;
        }
    } else if (json_is_array(v)) {
        if (room <= 0)
            return PHY_ETOOBIG;
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n; i++)
            if (depth_within(json_array_get(v, i), room - 1) != 0)
                return PHY_ETOOBIG;
    }
    return 0;
}

int phy_twin_check_depth(const json_t *v, int max_depth)
{
    PHY_ASSERT(v != NULL);
    if (max_depth < 0)
        return PHY_ETOOBIG;
    return depth_within(v, max_depth);
}

struct size_count {
    size_t total;
    size_t max;
    int over;
};

/* json_dump_callback sink that only counts, and stops the dump past the limit. */
static int count_bytes(const char *buffer, size_t size, void *data)
{
    struct size_count *c = data;
    (void)buffer;
    if (c->over || size > c->max - c->total) {
        c->over = 1;
        return -1;
    }
    c->total += size;
    return 0;
}

/* 0 when the compact serialization of v is at most max bytes, PHY_ETOOBIG over it,
 * PHY_ENOMEM when the encoder fails for another reason. */
int phy_json_check_size(const json_t *v, size_t max)
{
    struct size_count c = {0, max, 0};
    int rc = json_dump_callback(v, count_bytes, &c, JSON_COMPACT);
    /* jansson 2.14 ignores the callback's failure while writing object keys and goes
     * on, so the sticky flag, not the return value, says whether the limit was hit */
    if (c.over)
        return PHY_ETOOBIG;
    return rc == 0 ? 0 : PHY_ENOMEM;
}

/* RFC 7386 MergePatch for an object patch into the object target, in place. Null
 * members delete, object members merge into the target member (an empty object
 * replaces a non-object one, so nulls nested in the patch never survive), anything
 * else is deep-copied over. Recursion follows the patch, whose depth the caller has
 * bounded. */
static int merge_object(json_t *target, const json_t *patch)
{
    const char *key;
    size_t key_len;
    json_t *value;
    json_t *p = (json_t *)patch; /* read only: the iteration macros take a non-const object */
    json_object_keylen_foreach(p, key, key_len, value)
    {
        if (json_is_null(value)) {
            (void)json_object_deln(target, key, key_len); /* absent is fine */
        } else if (json_is_object(value)) {
            json_t *sub = json_object_getn(target, key, key_len);
            if (!json_is_object(sub)) {
                sub = json_object();
                if (sub == NULL || json_object_setn_new(target, key, key_len, sub) != 0)
                    return PHY_ENOMEM;
            }
            int rc = merge_object(sub, value);
            if (rc != 0)
                return rc;
        } else {
            json_t *copy = json_deep_copy(value);
            if (copy == NULL || json_object_setn_new(target, key, key_len, copy) != 0)
                return PHY_ENOMEM;
        }
    }
    return 0;
}

int phy_twin_merge(json_t **doc, const json_t *patch, size_t max_bytes, int *changed)
{
    if (changed != NULL)
        *changed = 0;
    if (doc == NULL || !json_is_object(*doc) || !json_is_object(patch))
        return PHY_EINVAL;
    if (phy_twin_check_depth(patch, PHY_TWIN_MAX_DEPTH) != 0)
        return PHY_ETOOBIG;

    /* Work on a copy so that *doc stays untouched when a limit or allocation fails. */
    json_t *result = json_deep_copy(*doc);
    if (result == NULL)
        return PHY_ENOMEM;
    int rc = merge_object(result, patch);
    if (rc != 0)
        goto out_free;
    if (phy_twin_check_depth(result, PHY_TWIN_MAX_DEPTH) != 0) {
        rc = PHY_ETOOBIG;
        goto out_free;
    }
    rc = phy_json_check_size(result, max_bytes);
    if (rc != 0)
        goto out_free;

    if (changed != NULL)
        *changed = !json_equal(result, *doc);
    json_decref(*doc);
    *doc = result;
    return 0;

out_free:
    json_decref(result);
    return rc;
}

char *phy_twin_dump(const json_t *doc)
{
    if (doc == NULL)
        return NULL;
    return phy_json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
}
