/* The --on-config hook: a child process driven from the agent's poll loop, and the
 * config_status report built from its result (UTF-8-safe output, I/O-free). */
#include "hook.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "phy/err.h"
#include "phy/text.h"

#define HOOK_SHELL "/bin/sh"


size_t agent_utf8_clean(const unsigned char *in, size_t n, char *out, size_t cap, int *truncated)
{
    static const char replacement[] = "\xEF\xBF\xBD";
    size_t i = 0, o = 0;

    if (truncated != NULL)
        *truncated = 0;
    if (cap == 0)
        return 0;
    while (i < n) {
        size_t len = phy_utf8_seq_len(in + i, n - i);
        const char *src = len > 0 ? (const char *)in + i : replacement;
        size_t outlen = len > 0 ? len : 3;

        if (o + outlen > cap - 1) {
            if (truncated != NULL)
                *truncated = 1;
            break;
        }
        memcpy(out + o, src, outlen);
        o += outlen;
        i += len > 0 ? len : 1;
    }
    out[o] = '\0';
    return o;
}

int agent_rfc3339(time_t t, char out[32])
{
    struct tm tm;

    if (gmtime_r(&t, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        return PHY_EINVAL;
    return 0;
}

json_t *agent_config_status_patch(long long version, const struct agent_hook_result *r,
                                  time_t applied_at)
{
    char ts[32];
    json_t *st, *patch;
    int rc = 0;

    if (agent_rfc3339(applied_at, ts) != 0)
        return NULL;
    st = json_object();
    patch = json_object();
    if (st == NULL || patch == NULL)
        goto fail;
    rc |= json_object_set_new(st, "version", json_integer(version));
    rc |= json_object_set_new(st, "exit_code", json_integer(r->exit_code));
    rc |= json_object_set_new(st, "output", json_stringn(r->output, r->output_len));
    rc |= json_object_set_new(st, "applied_at", json_string(ts));
    if (r->truncated)
        rc |= json_object_set_new(st, "output_truncated", json_true());
    if (r->timed_out)
        rc |= json_object_set_new(st, "timed_out", json_true());
    if (rc != 0)
        goto fail;
    if (json_object_set_new(patch, "config_status", st) != 0) {
        st = NULL; /* consumed even on failure */
        goto fail;
    }
    return patch;
fail:
    json_decref(st);
    json_decref(patch);
    return NULL;
}

void agent_hook_result_error(struct agent_hook_result *r, const char *msg)
{
    memset(r, 0, sizeof *r);
    r->exit_code = -1;
    r->output_len = agent_utf8_clean((const unsigned char *)msg, strlen(msg), r->output,
                                     sizeof r->output, &r->truncated);
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* In the child, between fork and exec: only async-signal-safe calls plus setenv,
 * which is fine because the agent is single-threaded. Never returns. */
static void child_exec(const char *cmd, int in_r, int out_w, const char *const *env)
{
    struct sigaction sa;
    sigset_t none;

    setpgid(0, 0);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    /* An ignored signal stays ignored across exec: restore the defaults. */
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (dup2(in_r, 0) < 0 || dup2(out_w, 1) < 0 || dup2(out_w, 2) < 0)
        _exit(127);
    for (size_t i = 0; env != NULL && env[i] != NULL; i++)
        putenv((char *)env[i]); /* the string stays valid: exec follows at once */
    execl(HOOK_SHELL, "sh", "-c", cmd, (char *)NULL);
    _exit(127);
}

int agent_hook_start(struct agent_hook *h, const char *cmd, const char *input, size_t n,
                     const char *const *env, int timeout_ms, int64_t now_ms, char *err,
                     size_t errcap)
{
    int in_p[2] = {-1, -1}, out_p[2] = {-1, -1};
    pid_t pid;

    if (h->pid != 0) {
        snprintf(err, errcap, "a hook is already running");
        return PHY_EEXIST;
    }
    memset(h, 0, sizeof *h);
    h->in_fd = h->out_fd = -1;
    h->input = malloc(n > 0 ? n : 1);
    if (h->input == NULL) {
        snprintf(err, errcap, "out of memory");
        return PHY_ENOMEM;
    }
    if (n > 0)
        memcpy(h->input, input, n);
    h->input_len = n;
    if (pipe2(in_p, O_CLOEXEC) != 0 || pipe2(out_p, O_CLOEXEC) != 0) {
        snprintf(err, errcap, "pipe: %s", strerror(errno));
        goto fail;
    }
    pid = fork();
    if (pid < 0) {
        snprintf(err, errcap, "fork: %s", strerror(errno));
        goto fail;
    }
    if (pid == 0)
        child_exec(cmd, in_p[0], out_p[1], env);
    setpgid(pid, pid); /* also done by the child: whichever runs first wins the race */
    close(in_p[0]);
    close(out_p[1]);
    h->pid = pid;
    h->in_fd = in_p[1];
    h->out_fd = out_p[0];
    fcntl(h->in_fd, F_SETFL, fcntl(h->in_fd, F_GETFL) | O_NONBLOCK);
    fcntl(h->out_fd, F_SETFL, fcntl(h->out_fd, F_GETFL) | O_NONBLOCK);
    h->deadline_ms = now_ms + (timeout_ms > 0 ? timeout_ms : 0);
    if (h->input_len == 0)
        close_fd(&h->in_fd);
    return 0;

fail:
    for (int i = 0; i < 2; i++) {
        close_fd(&in_p[i]);
        close_fd(&out_p[i]);
    }
    free(h->input);
    memset(h, 0, sizeof *h);
    return PHY_EIO;
}

int agent_hook_running(const struct agent_hook *h)
{
    return h->pid != 0;
}

int agent_hook_pollfds(const struct agent_hook *h, struct pollfd *pfd)
{
    int k = 0;

    if (h->pid == 0)
        return 0;
    if (h->in_fd >= 0)
        pfd[k++] = (struct pollfd){.fd = h->in_fd, .events = POLLOUT};
    if (h->out_fd >= 0)
        pfd[k++] = (struct pollfd){.fd = h->out_fd, .events = POLLIN};
    return k;
}

int agent_hook_timeout_ms(const struct agent_hook *h, int64_t now_ms)
{
    int64_t left;

    if (h->pid == 0)
        return -1;
    left = h->deadline_ms - now_ms;
    if (left < 0)
        left = 0;
    return left < AGENT_HOOK_REAP_TICK_MS ? (int)left : AGENT_HOOK_REAP_TICK_MS;
}

static void feed_input(struct agent_hook *h)
{
    while (h->in_fd >= 0 && h->input_off < h->input_len) {
        ssize_t w = write(h->in_fd, h->input + h->input_off, h->input_len - h->input_off);
        if (w > 0) {
            h->input_off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        close_fd(&h->in_fd); /* EPIPE: the hook does not read its input */
    }
    if (h->input_off >= h->input_len)
        close_fd(&h->in_fd);
}

/* Reads what is available; output past the limit is read and dropped. */
static void drain_output(struct agent_hook *h)
{
    unsigned char sink[4096];

    while (h->out_fd >= 0) {
        size_t room = sizeof h->raw - h->raw_len;
        unsigned char *dst = room > 0 ? h->raw + h->raw_len : sink;
        size_t cap = room > 0 ? room : sizeof sink;
        ssize_t r = read(h->out_fd, dst, cap);

        if (r > 0) {
            if (room > 0)
                h->raw_len += (size_t)r;
            else
                h->raw_truncated = 1;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        close_fd(&h->out_fd); /* EOF or error */
    }
}

static void finish(struct agent_hook *h, struct agent_hook_result *r)
{
    int trunc = 0;

    memset(r, 0, sizeof *r);
    if (WIFEXITED(h->status))
        r->exit_code = WEXITSTATUS(h->status);
    else if (WIFSIGNALED(h->status))
        r->exit_code = 128 + WTERMSIG(h->status);
    else
        r->exit_code = -1;
    r->timed_out = h->timed_out;
    r->output_len = agent_utf8_clean(h->raw, h->raw_len, r->output, sizeof r->output, &trunc);
    r->truncated = h->raw_truncated || trunc;
    close_fd(&h->in_fd);
    close_fd(&h->out_fd);
    free(h->input);
    memset(h, 0, sizeof *h);
    h->in_fd = h->out_fd = -1;
}

int agent_hook_step(struct agent_hook *h, int64_t now_ms, struct agent_hook_result *r)
{
    pid_t w;

    if (h->pid == 0)
        return 0;
    feed_input(h);
    drain_output(h);
    if (!h->reaped) {
        do
            w = waitpid(h->pid, &h->status, WNOHANG);
        while (w < 0 && errno == EINTR);
        if (w == h->pid || (w < 0 && errno == ECHILD))
            h->reaped = 1;
    }
    if (h->reaped) {
        /* Whatever the hook wrote before it exited is in the pipe now; processes it
         * left running in the background do not hold the report back. */
        drain_output(h);
        finish(h, r);
        return 1;
    }
    if (now_ms >= h->deadline_ms && !h->timed_out) {
        h->timed_out = 1;
        kill(-h->pid, SIGKILL);
        kill(h->pid, SIGKILL); /* in case the group was not set up yet */
    }
    return 0;
}

void agent_hook_signal(struct agent_hook *h, int sig)
{
    if (h->pid != 0 && !h->reaped) {
        kill(-h->pid, sig);
        kill(h->pid, sig);
    }
}

void agent_hook_abort(struct agent_hook *h)
{
    struct agent_hook_result r;

    if (h->pid == 0)
        return;
    if (!h->reaped) {
        kill(-h->pid, SIGKILL);
        kill(h->pid, SIGKILL);
        while (waitpid(h->pid, &h->status, 0) < 0 && errno == EINTR)
            ;
        h->reaped = 1;
    }
    finish(h, &r);
}
