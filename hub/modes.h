/* The connection modes the hub serves besides plain HTTP (see struct conn_mode in
 * conn.h): the list server_start is given. */
#ifndef PHY_HUB_MODES_H
#define PHY_HUB_MODES_H

struct conn_mode;

extern const struct conn_mode session_mode; /* session.c: GET /v1/hub, device sessions */
extern const struct conn_mode events_mode;  /* events.c: GET /api/v1/events, console streams */

/* NULL-terminated. */
extern const struct conn_mode *const hub_conn_modes[];

#endif
