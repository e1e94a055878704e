/* The running hub's life on its loop, apart from main.c (which parses flags and runs
 * admin commands): the work before serving (a first sweep, presence reset), the
 * periodic sweeper, coalesced outbox drains, and the stop on SIGINT/SIGTERM. */
#ifndef PHY_HUB_LIFECYCLE_H
#define PHY_HUB_LIFECYCLE_H

#include <stdint.h>
#include <uv.h>

#include "hub.h"
#include "server.h"

/* How long failed claims and logins are kept: what either window still counts (the
 * logins' progressive look-back included). */
int64_t hub_failures_keep_ms(const struct hub *h);

/* One pass of housekeeping at now_ms, on the calling thread: the store's sweep
 * (lapsed registrations, purged bodies, clamped times), the live-registration count,
 * the clock check, the seal ratchet (when h->seal is set), the console sweep and the
 * outbox drain. Failures are logged; the next pass retries. */
void hub_sweep(struct hub *h, int64_t now_ms);

/* This node's heartbeat into the store, then (when this node holds the "presence"
 * lease) the end of dead nodes' sessions (store presence_sweep with
 * cfg.node_timeout_s). Failures are logged. */
void hub_heartbeat(struct hub *h, int64_t now_ms);

/* Before serving: this node named and recorded in the store, a first sweep (what lapsed while the hub was down goes, times from
 * the future are clamped) and the presence reset (no session survived). 0, or -1
 * with a message in err when the store cannot reset presence. */
int hub_prepare(struct hub *h, char *err, size_t errcap);

/* Starts the sweeper every cfg.sweep_interval_s (on the node holding the "sweep"
 * lease), the heartbeat every cfg.node_heartbeat_s, the outbox kicks (regional hubs)
 * and the signal handlers on loop; SIGINT/SIGTERM stop srv and every handle started
 * here, so that uv_run returns. */
void hub_lifecycle_start(struct hub *h, uv_loop_t *loop, struct server *srv);

#endif
