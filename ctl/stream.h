/* phyctl's streaming GET (the console event stream) over a kept TLS connection. */
#ifndef PHY_CTL_STREAM_H
#define PHY_CTL_STREAM_H

#include <signal.h>
#include <stddef.h>

#include "phy/client.h"

#define CTL_STREAM_ERR_BODY 65536 /* at most this much of an error answer is kept */

/* Called with each piece of the response body (dechunked); non-zero stops. */
typedef int (*ctl_stream_fn)(void *ctx, const char *p, size_t n);

struct ctl_stream_result {
    int status; /* the HTTP status (0 when none was received) */
    char *body; /* status other than 200: the start of the body, NUL-terminated,
                   malloc'd (free it); NULL otherwise */
    size_t body_len;
    int stopped; /* 1 when *stop or the callback ended the stream */
};

/* GET path on a fresh connection (TLS, CONNECT through the proxy when set; opts as
 * for phy_client_request; headers: extra "Name: value\r\n" lines or NULL). With a
 * 200 answer every body piece goes to on_data until the body ends, the server
 * closes, on_data returns non-zero or *stop becomes non-zero (checked at least
 * every 250 ms and when a signal interrupts the wait). Reading never times out
 * (a stream may be quiet for long); connecting does (opts->timeout_ms). Returns 0
 * with *r filled, or a negative PHY_E* with a one-line reason in err. */
int ctl_stream_get(const struct phy_client_opts *o, const char *path, const char *headers,
                   ctl_stream_fn on_data, void *ctx, volatile sig_atomic_t *stop,
                   struct ctl_stream_result *r, char *err, size_t errcap);

#endif
