/* The hub's HTTPS server: libuv loop, TLS on the socket, HTTP/1.1, work on the pool. */
#ifndef PHY_HUB_SERVER_H
#define PHY_HUB_SERVER_H

#include <uv.h>

#include "hub.h"

struct server;
struct conn_mode; /* conn.h */

/* Creates the TLS context, binds cfg->listen and starts accepting on loop. modes
 * (NULL-terminated, see modes.h) are what connections may become after a request
 * on their paths; every other request goes to the API router. The hub is borrowed
 * and must outlive the server. Returns 0 or PHY_E* with a message. */
int server_start(struct hub *h, uv_loop_t *loop, const struct conn_mode *const *modes,
                 struct server **out, char *err, size_t errcap);

/* Stops accepting, closes every connection once its in-flight work is done and
 * frees the server when the loop has closed its handles. */
void server_stop(struct server *s);

#endif
