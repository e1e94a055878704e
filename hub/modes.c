/* The list of connection modes handed to the server, as nginx lists its modules in
 * one generated file: the only place that names them all. */
#include "modes.h"

#include <stddef.h>

#include "conn.h"

const struct conn_mode *const hub_conn_modes[] = {&session_mode, &events_mode, NULL};
