/* The --on-config hook: a child process driven from the agent's poll loop, and the
 * config_status report built from its result (UTF-8-safe output, I/O-free). */
#ifndef PHY_AGENT_HOOK_H
#define PHY_AGENT_HOOK_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <jansson.h>

#define AGENT_HOOK_OUTPUT_MAX 4096 /* bytes of stdout+stderr kept, and reported */
#define AGENT_HOOK_REAP_TICK_MS 50 /* how often a running hook's exit is checked */

/* What a finished hook (or a failure to apply) reports. */
struct agent_hook_result {
    int exit_code; /* exit status; 128 + signal when killed; -1 when it never ran */
    int timed_out; /* killed at the deadline */
    int truncated; /* output was longer than AGENT_HOOK_OUTPUT_MAX bytes */
    size_t output_len;
    char output[AGENT_HOOK_OUTPUT_MAX + 1]; /* valid UTF-8, NUL-terminated */
};

/* A running hook. Zero-initialize; pid is 0 when idle. */
struct agent_hook {
    pid_t pid;
    int in_fd, out_fd; /* our ends of the child's stdin / stdout+stderr; -1 when closed */
    char *input;       /* owned copy of the config given on stdin */
    size_t input_len, input_off;
    unsigned char raw[AGENT_HOOK_OUTPUT_MAX];
    size_t raw_len;
    int raw_truncated;
    int64_t deadline_ms; /* monotonic */
    int timed_out;
    int status; /* waitpid status once reaped */
    int reaped;
};

/* Copies in[0..n) into out (capacity cap >= 4) as valid UTF-8: each invalid sequence
 * (bad lead or continuation byte, overlong form, surrogate, > U+10FFFF, truncated
 * sequence) becomes U+FFFD. Stops at a character boundary so that at most cap - 1
 * bytes are written, then NUL-terminates. Returns the length written; *truncated (may
 * be NULL) is set to 1 when not all of the input fit. */
size_t agent_utf8_clean(const unsigned char *in, size_t n, char *out, size_t cap, int *truncated);

/* Formats t as RFC 3339 UTC ("2026-11-26T04:48:35Z") into out[32]. 0 or PHY_EINVAL. */
int agent_rfc3339(time_t t, char out[32]);

/* The reported patch {"config_status": {"version", "exit_code", "output",
 * "applied_at"}} (+ "output_truncated": true, "timed_out": true when so). New
 * reference or NULL. */
json_t *agent_config_status_patch(long long version, const struct agent_hook_result *r,
                                  time_t applied_at);

/* Fills r for a failure before/instead of running the hook: exit_code -1, msg as the
 * output (cleaned and truncated like hook output). */
void agent_hook_result_error(struct agent_hook_result *r, const char *msg);

/* Starts /bin/sh -c cmd in its own process group with input on stdin and stdout and
 * stderr on one pipe; env is a NULL-terminated list of extra "NAME=value" entries (or
 * NULL). The hook is killed (SIGKILL to its group) timeout_ms after now_ms. Returns
 * 0, or a negative PHY_E* with a reason in err (h stays idle). */
int agent_hook_start(struct agent_hook *h, const char *cmd, const char *input, size_t n,
                     const char *const *env, int timeout_ms, int64_t now_ms, char *err,
                     size_t errcap);

/* 1 while a hook is running (started and not yet collected). */
int agent_hook_running(const struct agent_hook *h);

/* Adds the hook's pipe fds to pfd (room for at least 2). Returns how many were added. */
int agent_hook_pollfds(const struct agent_hook *h, struct pollfd *pfd);

/* Milliseconds until agent_hook_step must run again even without fd activity. */
int agent_hook_timeout_ms(const struct agent_hook *h, int64_t now_ms);

/* Moves the hook on without blocking: feeds stdin, drains output, enforces the
 * deadline, reaps. Returns 1 when it has finished and r is filled (the hook is idle
 * again), else 0. */
int agent_hook_step(struct agent_hook *h, int64_t now_ms, struct agent_hook_result *r);

/* Sends sig to the hook's process group (no-op when idle). */
void agent_hook_signal(struct agent_hook *h, int sig);

/* Kills the hook's group (SIGKILL), reaps it and frees everything; no-op when idle. */
void agent_hook_abort(struct agent_hook *h);

#endif
