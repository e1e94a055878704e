/* Store helpers shared by every back end (SQLite, PostgreSQL). */
#include <stdlib.h>

#include "store.h"

void store_devices_free(struct store_device *d, size_t n)
{
    if (!d)
        return;
    for (size_t i = 0; i < n; i++)
        free(d[i].tags_json);
    free(d);
}
