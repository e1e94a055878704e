/* A hub node's link to the other nodes on one PostgreSQL store (docs/store.md
 * "Nodes"): a LISTEN connection on the event loop (libpq's asynchronous API, its
 * socket watched by uv_poll; never a blocking call on the loop) that receives what
 * the others announce (store/announce.h) and turns it into effects on this node's
 * device sessions and event streams: a desired change or fleet patch is read back
 * from the store (node_sessions, on the thread pool) and pushed; a revoke closes
 * with 4001/4002; a newer session elsewhere closes the one here with 4000; a logout
 * ends the session's event streams. When the connection drops it reconnects (with a
 * growing delay) and catches up: every session this node holds whose stored desired
 * version is above what it was sent gets it, and every revoked device's session is
 * closed. */
#ifndef PHY_HUB_NODELINK_H
#define PHY_HUB_NODELINK_H

#include <uv.h>

#include "hub.h"
#include "server.h"

struct nodelink;

/* Starts the link for h (its store must be named: store_set_node) to the database at
 * url on loop; effects go to srv. NULL when out of memory. */
struct nodelink *nodelink_start(struct hub *h, uv_loop_t *loop, struct server *srv,
                                const char *url);

/* Stops the link: no effect reaches the server after this; the link frees itself
 * once its handles are closed and its store reads returned. NULL-safe. */
void nodelink_stop(struct nodelink *l);

/* Catch-ups done so far (tests and metrics): 1 after the first connection. */
unsigned long nodelink_catchups(const struct nodelink *l);

#endif
