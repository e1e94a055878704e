/* The hub's HTTP API router (router.c): one request to its handler. */
#ifndef PHY_HUB_ROUTER_H
#define PHY_HUB_ROUTER_H

#include "api.h"

/* Routes and handles one request. Always fills res (status and body). HEAD is
 * routed as GET. */
void api_handle(struct hub *h, const struct api_request *req, struct api_response *res);

/* 1 when the request's handler may block for long (an argon2id password check, a
 * call to eu): the server runs it in its slow lane, not in libuv's pool. */
int api_slow(const char *method, const char *path);

/* 1 when path matches pattern: literal except for whole segments "{id}" (a device
 * ID, copied to id) and "{tok}" (an API token's ID, 12 hex digits, copied to id). */
int api_path_match(const char *pattern, const char *path, char id[PHY_DEVICE_ID_LEN + 1]);

#endif
