/* Announcements between hub nodes; see announce.h. */
#include "announce.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "phy/err.h"
#include "phy/text.h"
#include "rules.h"

/* What an ANNOUNCE_DEVICE names. */
static int what_ok(const char *w)
{
    return strcmp(w, "state") == 0 || strcmp(w, "tags") == 0 || strcmp(w, "name") == 0;
}

/* No space or control byte: fit for a field of a line. */
static int chars_ok(const char *v)
{
    for (; *v; v++)
        if (!phy_name_char(*v))
            return 0;
    return 1;
}

/* A device ID fit for a line. */
static int device_ok(const char *id)
{
    return store_device_id_ok(id) && chars_ok(id);
}

/* A serial (name characters only: fit for a line), or "*". */
static int serial_ok(const char *serial)
{
    return strcmp(serial, "*") == 0 || store_serial_ok(serial);
}

int store_announce_format(const struct store_announce *a, char out[STORE_ANNOUNCE_MAX])
{
    int n;
    if (!store_node_id_ok(a->node))
        return PHY_EINVAL;
    switch (a->kind) {
    case ANNOUNCE_DESIRED:
        if (a->tenant_id <= 0 || !device_ok(a->device_id) || a->n <= 0)
            return PHY_EINVAL;
        n = snprintf(out, STORE_ANNOUNCE_MAX, "%s d %" PRId64 " %s %" PRId64, a->node,
                     a->tenant_id, a->device_id, a->n);
        break;
    case ANNOUNCE_FLEET:
        if (a->tenant_id <= 0)
            return PHY_EINVAL;
        n = snprintf(out, STORE_ANNOUNCE_MAX, "%s f %" PRId64, a->node, a->tenant_id);
        break;
    case ANNOUNCE_CLOSE:
        if (a->tenant_id <= 0 || !device_ok(a->device_id) || a->n <= 0)
            return PHY_EINVAL;
        n = snprintf(out, STORE_ANNOUNCE_MAX, "%s c %" PRId64 " %s %" PRId64, a->node,
                     a->tenant_id, a->device_id, a->n);
        break;
    case ANNOUNCE_DEVICE:
        if (a->tenant_id <= 0 || !device_ok(a->device_id) || !what_ok(a->what))
            return PHY_EINVAL;
        n = snprintf(out, STORE_ANNOUNCE_MAX, "%s v %" PRId64 " %s %s", a->node, a->tenant_id,
                     a->device_id, a->what);
        break;
    case ANNOUNCE_SESSION:
        if (!device_ok(a->device_id) || a->n <= 0)
            return PHY_EINVAL;
        n = snprintf(out, STORE_ANNOUNCE_MAX, "%s s %s %" PRId64, a->node, a->device_id, a->n);
        break;
    case ANNOUNCE_LOGOUT:
        if (!store_session_hash_ok(a->session_hash))
            return PHY_EINVAL;
        n = snprintf(out, STORE_ANNOUNCE_MAX, "%s l %s", a->node, a->session_hash);
        break;
    case ANNOUNCE_REGISTRATION:
        if (!serial_ok(a->serial))
            return PHY_EINVAL;
        n = snprintf(out, STORE_ANNOUNCE_MAX, "%s r %s", a->node, a->serial);
        break;
    default:
        return PHY_EINVAL;
    }
    return n > 0 && n < STORE_ANNOUNCE_MAX ? n : PHY_EINVAL;
}

/* The next space-separated field of *p into out[cap]: 0, or PHY_EINVAL (missing,
 * empty or too long). */
static int field(const char **p, char *out, size_t cap)
{
    size_t n = strcspn(*p, " ");
    if (n == 0 || n >= cap)
        return PHY_EINVAL;
    memcpy(out, *p, n);
    out[n] = '\0';
    *p += n;
    if (**p == ' ')
        ++*p;
    return 0;
}

/* A positive decimal of at most 18 digits. */
static int number(const char **p, int64_t *out)
{
    char buf[19], *end; /* 18 digits: no overflow */
    if (field(p, buf, sizeof buf) || buf[0] < '1' || buf[0] > '9')
        return PHY_EINVAL;
    *out = strtoll(buf, &end, 10);
    return *end == '\0' ? 0 : PHY_EINVAL;
}

int store_announce_parse(const char *line, struct store_announce *a)
{
    char kind[2];
    const char *p = line;
    memset(a, 0, sizeof *a);
    if (strlen(line) >= STORE_ANNOUNCE_MAX || field(&p, a->node, sizeof a->node) ||
        !store_node_id_ok(a->node) || field(&p, kind, sizeof kind))
        return PHY_EINVAL;
    a->kind = (enum store_announce_kind)kind[0];
    int rc;
    switch (a->kind) {
    case ANNOUNCE_DESIRED:
        rc = number(&p, &a->tenant_id) || field(&p, a->device_id, sizeof a->device_id) ||
             number(&p, &a->n);
        break;
    case ANNOUNCE_FLEET:
        rc = number(&p, &a->tenant_id);
        break;
    case ANNOUNCE_CLOSE:
        rc = number(&p, &a->tenant_id) || field(&p, a->device_id, sizeof a->device_id) ||
             number(&p, &a->n);
        break;
    case ANNOUNCE_DEVICE:
        rc = number(&p, &a->tenant_id) || field(&p, a->device_id, sizeof a->device_id) ||
             field(&p, a->what, sizeof a->what);
        break;
    case ANNOUNCE_SESSION:
        rc = field(&p, a->device_id, sizeof a->device_id) || number(&p, &a->n);
        break;
    case ANNOUNCE_LOGOUT:
        rc = field(&p, a->session_hash, sizeof a->session_hash) ||
             !store_session_hash_ok(a->session_hash);
        break;
    case ANNOUNCE_REGISTRATION:
        rc = field(&p, a->serial, sizeof a->serial) || !serial_ok(a->serial);
        break;
    default:
        return PHY_EINVAL;
    }
    if (rc || *p != '\0' || (a->device_id[0] && !device_ok(a->device_id)))
        return PHY_EINVAL;
    char check[STORE_ANNOUNCE_MAX]; /* one form only: what format writes */
    return store_announce_format(a, check) > 0 && strcmp(check, line) == 0 ? 0 : PHY_EINVAL;
}
