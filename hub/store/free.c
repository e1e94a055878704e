/* Store helpers shared by every back end (SQLite, PostgreSQL). */
#include <stdlib.h>

#include "store.h"

void store_device_clear(struct store_device *d)
{
    if (!d)
        return;
    free(d->tags_json);
    d->tags_json = NULL;
    free(d->last_status_json);
    d->last_status_json = NULL;
}

void store_twin_free(struct store_twin *t)
{
    if (!t)
        return;
    free(t->desired);
    free(t->reported);
    free(t->tags);
    t->desired = t->reported = t->tags = NULL;
}

void store_devices_free(struct store_device *d, size_t n)
{
    if (!d)
        return;
    for (size_t i = 0; i < n; i++)
        store_device_clear(&d[i]);
    free(d);
}

void store_node_sessions_free(struct store_node_session *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i].desired_patch);
    free(v);
}
