/* A lane: a few threads of the hub's own that run work items off the loop, like
 * uv_queue_work, for work that may block for long (argon2id password checks, a
 * regional hub's calls to eu). libuv's pool is sized for the store (one SQLite
 * connection, --db-pool PostgreSQL connections): threads beyond that only wait for
 * the store, and every such wait costs a sleep and a wake-up; slow work kept in a
 * lane of its own can neither fill that pool nor need it to be larger. */
#ifndef PHY_HUB_LANE_H
#define PHY_HUB_LANE_H

#include <uv.h>

struct lane;

/* Starts threads (1..64) whose completions are delivered on loop. NULL on failure. */
struct lane *lane_start(uv_loop_t *loop, int threads);

/* Runs work(req) on a lane thread, then done(req, 0) on the loop, like
 * uv_queue_work. req->data is the caller's; the lane keeps the loop alive while
 * items are queued or running. 0, or a negative uv error (then nothing runs). */
int lane_queue(struct lane *l, uv_work_t *req, uv_work_cb work, uv_after_work_cb done);

/* Ends the lane once no item is queued or running: joins its (idle) threads and
 * closes its loop handle; the memory goes with the handle's close callback. */
void lane_close(struct lane *l);

#endif
