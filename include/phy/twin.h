/* Device twin documents: JSON merge patch (RFC 7386) with the platform's limits. */
#ifndef PHY_TWIN_H
#define PHY_TWIN_H

#include <stddef.h>

#include <jansson.h>

#define PHY_TWIN_MAX_BYTES 32768 /* a section (desired or reported), compact JSON */
#define PHY_TWIN_MAX_DEPTH 10    /* nesting of objects/arrays; the section itself is 1 */

/* Checks that v nests at most max_depth levels (a scalar is depth 0, {} is 1,
 * {"a":{}} is 2). Returns 0 or PHY_ETOOBIG. */
int phy_twin_check_depth(const json_t *v, int max_depth);

/* Applies the merge patch to *doc in place per RFC 7386: when patch is an object,
 * each member with value null deletes that key, an object value merges recursively
 * (replacing a non-object target), any other value replaces; when patch is not an
 * object it replaces the whole document. *doc must be an object (a section) and
 * the patch must be an object too (a section is always an object): otherwise
 * PHY_EINVAL. On success *doc holds the new document (the function may replace
 * the reference: the old one is released). The patch is not modified and no
 * reference to it is kept (values are deep-copied).
 * Limits are checked on the result: depth <= PHY_TWIN_MAX_DEPTH and compact
 * serialization <= max_bytes; on PHY_ETOOBIG *doc is left unchanged.
 * *changed is set to 1 when the result differs from the input (json_equal). */
int phy_twin_merge(json_t **doc, const json_t *patch, size_t max_bytes, int *changed);

/* 0 when the compact serialization of v is at most max bytes (counted without
 * building it), PHY_ETOOBIG over it, PHY_ENOMEM when the encoder fails otherwise. */
int phy_json_check_size(const json_t *v, size_t max);

/* Compact, key-sorted serialization (malloc'd, caller frees) or NULL. */
char *phy_twin_dump(const json_t *doc);

#endif
