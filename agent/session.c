/* phyagent's connected life: WSS to the regional hub through phyproxy, twin sync,
 * configuration hook, status reports, reconnects. */
#include "session.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <wslay/wslay.h>

#include "backoff.h"
#include "hook.h"
#include "phy/protocol.h"
#include "phy/client.h"
#include "phy/crypto.h"
#include "phy/err.h"
#include "phy/http.h"
#include "phy/log.h"
#include "state.h"
#include "sysinfo.h"
#include "twinsync.h"
#include "wsconn.h"

#define REQ_MAX 2048
#define WAIT_SLICE_MS 1000

/* Close codes of the hub (PROTOCOL.md section 5 and the hub's documentation). */
enum {
    CLOSE_NORMAL = PHY_CLOSE_NORMAL,
    CLOSE_GOING_AWAY = PHY_CLOSE_GOING_AWAY,
    CLOSE_POLICY = PHY_CLOSE_POLICY,
    CLOSE_REPLACED = PHY_CLOSE_REPLACED,
    CLOSE_REVOKED = PHY_CLOSE_REVOKED,
    CLOSE_DELETED = PHY_CLOSE_DELETED,
};

/* Why a session ended. */
enum end {
    END_RETRY,
    END_STOP,
    END_REVOKED,
};

struct life {
    const struct agent_session_cfg *cfg;
    struct phy_client_opts copts;
    char host[256];
    unsigned port;
    long long started_s; /* monotonic, for agent_uptime_s */

    struct agent_sync sync;
    struct agent_hook hook;
    long long hook_version;    /* desired version the running hook applies */
    int apply_pending;         /* desired changed while the hook ran */
    long long applied_version; /* last version applied here (hook finished), -1 */
    char *config_text;         /* content of config.json as last read or written */
    size_t config_len;
    json_t *report;      /* config_status patch not yet acknowledged */
    long long report_id; /* id it was last sent with, 0 when not sent this session */
    uint64_t prev_backoff_ms;
    uint64_t retry_after_ms; /* the hub's Retry-After on a refused upgrade (0: none) */
    int has_hint;            /* a stopping hub's close gave a reconnect delay: */
    uint64_t hint_ms;
    int stop;
    int64_t stop_deadline_ms; /* when stopping inside a session */
    char env_file[4200], env_version[64], env_device[128];

    /* One session. */
    struct phy_client_conn *conn;
    wslay_event_context_ptr ws;
    int read_wants_write, write_wants_read;
    int io_error;
    int close_code; /* received from the hub, 0 when none */
    int twin_ok;
    int64_t last_rx_ms, next_status_ms, session_start_ms;
};

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t random_u64(void)
{
    uint64_t r = 0;

    if (phy_random_bytes(&r, sizeof r) != 0)
        r = (uint64_t)mono_ms() * 6364136223846793005ULL; /* jitter only, not a secret */
    return r;
}

static int stop_seen(struct life *l)
{
    char buf[16];

    while (read(l->cfg->sig_fd, buf, sizeof buf) > 0)
        ;
    if (*l->cfg->stop_flag)
        l->stop = 1;
    return l->stop;
}

/* ---- sending ---- */

/* Queues text (consumed) as one text frame. 0 or negative (logged). */
static int send_text(struct life *l, char *text, const char *what)
{
    struct wslay_event_msg m;
    int rc;

    if (text == NULL) {
        phy_log(PHY_LOG_ERROR, "send_failed", "msg=%s err=out_of_memory", what);
        return PHY_ENOMEM;
    }
    if (l->ws == NULL || l->stop_deadline_ms != 0) {
        free(text); /* closing: it goes out with the next session, or never */
        return PHY_EIO;
    }
    m.opcode = WSLAY_TEXT_FRAME;
    m.msg = (const uint8_t *)text;
    m.msg_length = strlen(text);
    rc = wslay_event_queue_msg(l->ws, &m); /* copies the bytes */
    free(text);
    if (rc != 0) {
        phy_log(PHY_LOG_WARN, "send_failed", "msg=%s err=wslay_%d", what, rc);
        return PHY_EIO;
    }
    phy_log(PHY_LOG_DEBUG, "sent", "msg=%s", what);
    return 0;
}

static void send_twin_get(struct life *l, const char *reason)
{
    long long id;

    phy_log(PHY_LOG_INFO, "twin_get", "reason=%s", reason);
    send_text(l, agent_sync_twin_get(&l->sync, &id), PHY_MSG_TWIN_GET);
}

static void send_status(struct life *l)
{
    struct agent_sysinfo si;
    json_t *st;
    long long id;

    agent_sysinfo_collect(&si, l->cfg->state_dir, l->started_s, mono_ms() / 1000);
    st = agent_sysinfo_json(&si);
    if (st == NULL) {
        phy_log(PHY_LOG_ERROR, "send_failed", "msg=status err=out_of_memory");
        return;
    }
    send_text(l, agent_sync_status(&l->sync, st, &id), PHY_MSG_STATUS);
    json_decref(st);
}

/* Sends the unacknowledged config_status report when connected. */
static void send_report(struct life *l)
{
    if (l->report == NULL || l->ws == NULL)
        return;
    send_text(l, agent_sync_reported_patch(&l->sync, l->report, &l->report_id),
              PHY_MSG_REPORTED_PATCH);
}

/* ---- applying the desired configuration ---- */

static void report_result(struct life *l, long long version, const struct agent_hook_result *r)
{
    json_t *patch = agent_config_status_patch(version, r, time(NULL));

    phy_log(r->exit_code == 0 ? PHY_LOG_INFO : PHY_LOG_WARN, "config_applied",
            "version=%lld exit_code=%d output_bytes=%zu timed_out=%d", version, r->exit_code,
            r->output_len, r->timed_out);
    l->applied_version = version;
    if (patch == NULL) {
        phy_log(PHY_LOG_ERROR, "report_failed", "err=out_of_memory");
        return;
    }
    json_decref(l->report);
    l->report = patch;
    l->report_id = 0;
    send_report(l);
}

/* Writes config.json when its content changed and runs the hook (or reports at once)
 * when the desired version is not applied yet. */
static void apply_desired(struct life *l)
{
    const struct agent_session_cfg *cfg = l->cfg;
    long long version = l->sync.desired_version;
    long long known = l->applied_version > l->sync.reported_cfg_version
                          ? l->applied_version
                          : l->sync.reported_cfg_version;
    struct agent_hook_result r;
    char err[256], q[300];
    char *json, *text;
    size_t len;
    int changed;

    if (l->sync.desired == NULL || l->stop)
        return;
    if (agent_hook_running(&l->hook)) {
        l->apply_pending = 1;
        return;
    }
    json = json_dumps(l->sync.desired, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (json == NULL) {
        phy_log(PHY_LOG_ERROR, "config_failed", "version=%lld err=out_of_memory", version);
        return;
    }
    len = strlen(json);
    text = malloc(len + 2);
    if (text == NULL) {
        free(json);
        phy_log(PHY_LOG_ERROR, "config_failed", "version=%lld err=out_of_memory", version);
        return;
    }
    memcpy(text, json, len);
    text[len++] = '\n';
    text[len] = '\0';
    free(json);
    changed = l->config_text == NULL || l->config_len != len || memcmp(l->config_text, text, len);
    if (!agent_sync_need_apply(changed, known, version)) {
        phy_log(PHY_LOG_DEBUG, "config_unchanged", "version=%lld", version);
        free(text);
        return;
    }
    if (changed) {
        if (agent_state_write(cfg->state_dir, AGENT_STATE_CONFIG, text, len, cfg->config_mode, err,
                              sizeof err) != 0) {
            phy_log(PHY_LOG_ERROR, "config_failed", "version=%lld err=%s", version,
                    phy_log_quote(err, q, sizeof q));
            free(text);
            agent_hook_result_error(&r, err);
            report_result(l, version, &r);
            return;
        }
        free(l->config_text);
        l->config_text = text;
        l->config_len = len;
        text = NULL;
        phy_log(PHY_LOG_INFO, "config_written", "version=%lld file=%s bytes=%zu", version,
                AGENT_STATE_CONFIG, len);
    }
    free(text);
    if (cfg->on_config == NULL) {
        memset(&r, 0, sizeof r);
        report_result(l, version, &r);
        return;
    }
    {
        const char *env[] = {l->env_file, l->env_version, l->env_device, NULL};

        snprintf(l->env_version, sizeof l->env_version, "PHY_CONFIG_VERSION=%lld", version);
        if (agent_hook_start(&l->hook, cfg->on_config, l->config_text, l->config_len, env,
                             (int)cfg->hook_timeout_s * 1000, mono_ms(), err, sizeof err) != 0) {
            phy_log(PHY_LOG_ERROR, "hook_failed", "version=%lld err=%s", version,
                    phy_log_quote(err, q, sizeof q));
            agent_hook_result_error(&r, err);
            report_result(l, version, &r);
            return;
        }
    }
    l->hook_version = version;
    phy_log(PHY_LOG_INFO, "hook_started", "version=%lld pid=%ld", version, (long)l->hook.pid);
}

/* Moves a running hook on; reports and applies what queued up once it finished. */
static void step_hook(struct life *l)
{
    struct agent_hook_result r;

    if (!agent_hook_running(&l->hook) || agent_hook_step(&l->hook, mono_ms(), &r) == 0)
        return;
    report_result(l, l->hook_version, &r);
    if (l->apply_pending && !l->stop) {
        l->apply_pending = 0;
        apply_desired(l);
    }
}

/* ---- hub messages ---- */

static void on_text(struct life *l, const uint8_t *msg, size_t len)
{
    struct agent_sync_event ev;
    char q1[96], q2[AGENT_SYNC_TEXT_MAX + 40];

    agent_sync_handle(&l->sync, (const char *)msg, len, &ev);
    switch (ev.action) {
    case AGENT_SYNC_NONE:
        phy_log(PHY_LOG_DEBUG, "hub_message", "type=%s id=%lld",
                phy_log_quote(ev.type, q1, sizeof q1), ev.id);
        break;
    case AGENT_SYNC_TWIN:
        if (!l->twin_ok) {
            l->twin_ok = 1;
            l->prev_backoff_ms = 0; /* a successful exchange resets the backoff */
        }
        phy_log(PHY_LOG_INFO, "twin", "desired_version=%lld reported_config_version=%lld",
                ev.version, l->sync.reported_cfg_version);
        apply_desired(l);
        if (ev.refetch)
            send_twin_get(l, "newer_push");
        break;
    case AGENT_SYNC_APPLY:
        phy_log(PHY_LOG_INFO, "desired_patch", "version=%lld", ev.version);
        apply_desired(l);
        break;
    case AGENT_SYNC_REFETCH:
        phy_log(PHY_LOG_WARN, "desired_gap", "version=%lld local_version=%lld", ev.version,
                l->sync.desired_version);
        send_twin_get(l, "gap");
        break;
    case AGENT_SYNC_ACK:
        phy_log(PHY_LOG_DEBUG, "ack", "id=%lld version=%lld", ev.id, ev.version);
        if (l->report != NULL && ev.id == l->report_id) {
            json_decref(l->report);
            l->report = NULL;
            l->report_id = 0;
        }
        break;
    case AGENT_SYNC_ERROR:
        phy_log(PHY_LOG_WARN, "hub_error", "id=%lld error=%s message=%s", ev.id,
                phy_log_quote(ev.error, q1, sizeof q1), phy_log_quote(ev.message, q2, sizeof q2));
        if (l->report != NULL && ev.id == l->report_id) {
            /* Refused (e.g. too large): resending it would be refused again. */
            json_decref(l->report);
            l->report = NULL;
            l->report_id = 0;
        }
        if (ev.for_twin_get) {
            /* Without the twin nothing can be applied: start over on a new session. */
            wslay_event_queue_close(l->ws, CLOSE_NORMAL, NULL, 0);
        }
        break;
    case AGENT_SYNC_INVALID:
        phy_log(PHY_LOG_WARN, "hub_message_invalid", "err=%s",
                phy_log_quote(ev.message, q2, sizeof q2));
        break;
    }
}

/* ---- wslay over the TLS connection ---- */

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    struct life *l = user;
    int ww = 0;
    int r = phy_client_conn_read(l->conn, buf, len, &ww);

    (void)flags;
    if (r > 0) {
        l->last_rx_ms = mono_ms();
        return r;
    }
    if (r == PHY_EAGAIN) {
        l->read_wants_write = ww;
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    l->io_error = 1;
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    struct life *l = user;
    int wr = 0;
    int r = phy_client_conn_write(l->conn, data, len, &wr);

    (void)flags;
    if (r > 0)
        return r;
    if (r == PHY_EAGAIN) {
        l->write_wants_read = wr;
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    l->io_error = 1;
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

static int ws_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
    (void)user;
    if (len > INT32_MAX || RAND_bytes(buf, (int)len) != 1) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return 0;
}

static void ws_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *user)
{
    struct life *l = user;

    (void)ctx;
    if (arg->opcode == WSLAY_TEXT_FRAME) {
        on_text(l, arg->msg, arg->msg_length);
    } else if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
        l->close_code = arg->status_code;
        if (arg->status_code == PHY_CLOSE_GOING_AWAY)
            l->has_hint = agent_reconnect_hint_ms((const char *)arg->msg, arg->msg_length,
                                                  &l->hint_ms);
    } else if (arg->opcode == WSLAY_BINARY_FRAME) {
        phy_log(PHY_LOG_WARN, "hub_message_invalid", "err=\"binary frame ignored\"");
    }
}

/* Connects, upgrades and sets up wslay. Returns 0, or negative (logged) with
 * *revoked = 1 when the hub answered 401 and 0 when a later attempt may work. */
static int session_open(struct life *l, int *revoked)
{
    static const struct wslay_event_callbacks cbs = {
        .recv_callback = ws_recv,
        .send_callback = ws_send,
        .genmask_callback = ws_genmask,
        .on_msg_recv_callback = ws_on_msg,
    };
    const struct agent_creds *cr = l->cfg->creds;
    char key[AGENT_WS_KEY_LEN + 1], req[REQ_MAX], err[256], q[300], why[128];
    const struct phy_http_response *res;
    int n, rc;

    *revoked = 0;
    if (agent_ws_new_key(key) != 0) {
        phy_log(PHY_LOG_ERROR, "connect_failed", "err=\"no randomness\"");
        return PHY_ECRYPTO;
    }
    n = agent_ws_request(req, sizeof req, l->host, l->port, key, cr->device_id, cr->device_secret);
    if (n < 0) {
        phy_log(PHY_LOG_ERROR, "connect_failed", "err=\"cannot build the upgrade request\"");
        return n;
    }
    phy_log(PHY_LOG_DEBUG, "connecting", "endpoint=%s:%u via=%s", l->host, l->port,
            l->copts.proxy_host != NULL ? "proxy" : "direct");
    rc = phy_client_open(&l->copts, req, (size_t)n, &l->conn, err, sizeof err);
    OPENSSL_cleanse(req, sizeof req);
    if (rc != 0) {
        phy_log(PHY_LOG_WARN, "connect_failed", "endpoint=%s:%u err=%s", l->host, l->port,
                phy_log_quote(err, q, sizeof q));
        return rc;
    }
    res = phy_client_conn_response(l->conn);
    switch (agent_ws_check_answer(res, key, why, sizeof why)) {
    case AGENT_WS_UPGRADED:
        break;
    case AGENT_WS_REVOKED:
        *revoked = 1;
        phy_log(PHY_LOG_ERROR, "revoked",
                "device_id=%s status=401 msg=\"the hub refused the device credentials\"",
                cr->device_id);
        goto fail;
    case AGENT_WS_REFUSED: {
        /* A busy hub (503, 429) says when to come back: a storm of reconnects spreads
         * over its hint instead of retrying into it. */
        const struct phy_str *ra =
            phy_http_find_header(res->headers, res->num_headers, "Retry-After");
        l->retry_after_ms = ra != NULL ? agent_retry_after_ms(ra->p, ra->len) : 0;
        phy_log(PHY_LOG_WARN, "upgrade_refused", "status=%d retry_after_ms=%llu", res->status,
                (unsigned long long)l->retry_after_ms);
        goto fail;
    }
    case AGENT_WS_BAD_UPGRADE:
        phy_log(PHY_LOG_WARN, "upgrade_invalid", "err=%s", phy_log_quote(why, q, sizeof q));
        goto fail;
    }
    if (wslay_event_context_client_init(&l->ws, &cbs, l) != 0) {
        phy_log(PHY_LOG_ERROR, "connect_failed", "err=out_of_memory");
        goto fail;
    }
    wslay_event_config_set_max_recv_msg_length(l->ws, AGENT_WS_MAX_MSG);
    return 0;
fail:
    phy_client_conn_close(l->conn);
    l->conn = NULL;
    return PHY_EPROTO;
}

static void session_close(struct life *l)
{
    if (l->ws != NULL)
        wslay_event_context_free(l->ws);
    l->ws = NULL;
    phy_client_conn_close(l->conn);
    l->conn = NULL;
}

static int min_timeout(int a, int64_t b)
{
    if (b < 0)
        b = 0;
    if (b > INT32_MAX)
        b = INT32_MAX;
    return a < 0 || b < a ? (int)b : a;
}

/* Runs wslay reads and writes as far as they go. 0, or -1 when the session failed. */
static int ws_io(struct life *l, short revents)
{
    int readable = (revents & (POLLIN | POLLHUP | POLLERR)) != 0 ||
                   (l->read_wants_write && (revents & POLLOUT) != 0);

    if (readable && wslay_event_want_read(l->ws)) {
        l->read_wants_write = 0;
        if (wslay_event_recv(l->ws) != 0)
            return -1;
    }
    if (wslay_event_want_write(l->ws)) {
        l->write_wants_read = 0;
        if (wslay_event_send(l->ws) != 0)
            return -1;
    }
    return 0;
}

/* After the close handshake the server closes the TCP connection first (RFC 6455
 * section 7.1.1): waiting for its EOF, bounded by ms, keeps our close from arriving
 * after its own and turning into a reset. */
static void await_eof(struct life *l, int64_t ms)
{
    int64_t deadline = mono_ms() + ms;
    char buf[512];

    for (;;) {
        int ww = 0;
        int r = phy_client_conn_read(l->conn, buf, sizeof buf, &ww);
        int64_t left;
        struct pollfd p;

        if (r > 0)
            continue;
        if (r != PHY_EAGAIN)
            return; /* EOF or error */
        left = deadline - mono_ms();
        if (left <= 0)
            return;
        p.fd = phy_client_conn_fd(l->conn);
        p.events = ww ? POLLOUT : POLLIN;
        p.revents = 0;
        if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
            return;
    }
}

/* Starts the clean close on a stop signal: close 1000, hook asked to terminate. */
static void begin_stop(struct life *l)
{
    if (l->stop_deadline_ms != 0)
        return;
    l->stop_deadline_ms = mono_ms() + AGENT_STOP_CLOSE_WAIT_MS;
    agent_hook_signal(&l->hook, SIGTERM);
    if (l->ws != NULL)
        wslay_event_queue_close(l->ws, CLOSE_NORMAL, NULL, 0);
}

/* One connected session until it ends. */
static enum end session_loop(struct life *l)
{
    const struct agent_session_cfg *cfg = l->cfg;
    const char *reason = "closed";
    enum end end = END_RETRY;
    int64_t now = mono_ms();

    l->read_wants_write = l->write_wants_read = 0;
    l->io_error = 0;
    l->close_code = 0;
    l->has_hint = 0;
    l->twin_ok = 0;
    l->report_id = 0;
    l->session_start_ms = now;
    l->last_rx_ms = now;
    l->next_status_ms = now + cfg->status_interval_s * 1000;
    phy_log(PHY_LOG_INFO, "connected", "device_id=%s endpoint=%s:%u", cfg->creds->device_id,
            l->host, l->port);
    agent_sync_session_start(&l->sync);
    send_twin_get(l, "connect");
    send_status(l);
    send_report(l);
    /* Bytes that came with the upgrade answer are not signalled by poll. */
    if (ws_io(l, POLLIN) != 0) {
        reason = "io_error";
        goto out;
    }
    for (;;) {
        struct pollfd pfd[4];
        int nfds = 0, timeout, r;
        short ev = 0;

        if (!wslay_event_want_read(l->ws) && !wslay_event_want_write(l->ws)) {
            int64_t budget = AGENT_CLOSE_EOF_WAIT_MS;

            if (l->stop_deadline_ms != 0 && l->stop_deadline_ms - mono_ms() < budget)
                budget = l->stop_deadline_ms - mono_ms();
            await_eof(l, budget);
            reason = "closed";
            break;
        }
        if (wslay_event_want_read(l->ws))
            ev |= l->read_wants_write ? POLLOUT : POLLIN;
        if (wslay_event_want_write(l->ws))
            ev |= l->write_wants_read ? POLLIN : POLLOUT;
        pfd[nfds++] = (struct pollfd){.fd = phy_client_conn_fd(l->conn), .events = ev};
        pfd[nfds++] = (struct pollfd){.fd = cfg->sig_fd, .events = POLLIN};
        nfds += agent_hook_pollfds(&l->hook, pfd + nfds);

        now = mono_ms();
        timeout = min_timeout(-1, l->next_status_ms - now);
        timeout = min_timeout(timeout, l->last_rx_ms + cfg->dead_after_s * 1000 - now);
        if (agent_hook_running(&l->hook))
            timeout = min_timeout(timeout, agent_hook_timeout_ms(&l->hook, now));
        if (l->stop_deadline_ms != 0)
            timeout = min_timeout(timeout, l->stop_deadline_ms - now);
        r = poll(pfd, (nfds_t)nfds, timeout);
        if (r < 0 && errno != EINTR) {
            reason = "poll_error";
            break;
        }
        if (stop_seen(l))
            begin_stop(l);
        if (r > 0 && ws_io(l, pfd[0].revents) != 0) {
            reason = l->io_error ? "connection_lost" : "protocol_error";
            break;
        }
        step_hook(l);
        if (wslay_event_want_write(l->ws) && ws_io(l, 0) != 0) {
            reason = "connection_lost";
            break;
        }
        now = mono_ms();
        if (l->stop_deadline_ms != 0 && now >= l->stop_deadline_ms) {
            reason = "stop_timeout";
            break;
        }
        if (now - l->last_rx_ms >= cfg->dead_after_s * 1000) {
            phy_log(PHY_LOG_WARN, "hub_dead", "silence_s=%lld",
                    (long long)((now - l->last_rx_ms) / 1000));
            reason = "hub_dead";
            break;
        }
        if (now >= l->next_status_ms && l->stop_deadline_ms == 0) {
            send_status(l);
            l->next_status_ms = now + cfg->status_interval_s * 1000;
        }
    }
out:
    if (l->stop) {
        end = END_STOP;
    } else if (l->close_code != 0) {
        switch (l->close_code) {
        case CLOSE_REVOKED:
        case CLOSE_DELETED:
            phy_log(PHY_LOG_ERROR, "revoked", "device_id=%s close_code=%d msg=\"%s\"",
                    cfg->creds->device_id, l->close_code,
                    l->close_code == CLOSE_REVOKED ? "the device was revoked"
                                                   : "the device was deleted");
            end = END_REVOKED;
            break;
        case CLOSE_REPLACED:
            phy_log(PHY_LOG_WARN, "replaced",
                    "close_code=4000 msg=\"a newer session of this device took over\"");
            break;
        case CLOSE_POLICY:
            phy_log(PHY_LOG_WARN, "hub_closed", "close_code=1008 msg=\"policy (rate limit)\"");
            break;
        case CLOSE_GOING_AWAY:
            if (l->has_hint) {
                phy_log(PHY_LOG_INFO, "hub_closed", "close_code=1001 reconnect_after_ms=%llu",
                        (unsigned long long)l->hint_ms);
                break;
            }
            /* fall through */
        default:
            phy_log(PHY_LOG_INFO, "hub_closed", "close_code=%d", l->close_code);
            break;
        }
    }
    if (l->stop)
        reason = "stop";
    else if (l->close_code != 0 && strcmp(reason, "closed") == 0)
        reason = "hub_closed";
    phy_log(PHY_LOG_INFO, "session_end", "reason=%s close_code=%d duration_s=%lld", reason,
            l->close_code, (long long)((mono_ms() - l->session_start_ms) / 1000));
    session_close(l);
    return end;
}

/* Waits ms while servicing the hook; 1 when a stop arrived. */
static int wait_ms(struct life *l, uint64_t ms)
{
    int64_t deadline = mono_ms() + (int64_t)(ms > INT32_MAX ? INT32_MAX : ms);

    while (!stop_seen(l)) {
        struct pollfd pfd[3];
        int nfds = 0, timeout;
        int64_t now = mono_ms();

        if (now >= deadline)
            return 0;
        pfd[nfds++] = (struct pollfd){.fd = l->cfg->sig_fd, .events = POLLIN};
        nfds += agent_hook_pollfds(&l->hook, pfd + nfds);
        timeout = min_timeout(WAIT_SLICE_MS, deadline - now);
        if (agent_hook_running(&l->hook))
            timeout = min_timeout(timeout, agent_hook_timeout_ms(&l->hook, now));
        poll(pfd, (nfds_t)nfds, timeout);
        step_hook(l);
    }
    return 1;
}

static int life_init(struct life *l, const struct agent_session_cfg *cfg)
{
    size_t n = 0;
    int rc;

    memset(l, 0, sizeof *l);
    l->cfg = cfg;
    l->applied_version = -1;
    l->started_s = mono_ms() / 1000;
    agent_sync_init(&l->sync);
    if (phy_client_parse_hostport(cfg->creds->endpoint, l->host, sizeof l->host, &l->port, 443) !=
        0) {
        phy_log(PHY_LOG_ERROR, "credentials_invalid", "msg=\"endpoint is not HOST[:PORT]\"");
        return PHY_EINVAL;
    }
    l->copts.host = l->host;
    l->copts.port = l->port;
    l->copts.connect_addr = cfg->connect_addr;
    l->copts.proxy_host = cfg->proxy_host;
    l->copts.proxy_port = cfg->proxy_port;
    l->copts.proxy_ident = cfg->creds->device_id;
    l->copts.proxy_secret = cfg->creds->proxy_token[0] != '\0' ? cfg->creds->proxy_token : NULL;
    l->copts.ca_file = cfg->ca_file;
    l->copts.timeout_ms = cfg->timeout_ms;
    l->copts.cert_time_floor = cfg->cert_time_floor;
    l->copts.resume = cfg->resume;
    snprintf(l->env_file, sizeof l->env_file, "PHY_CONFIG_FILE=%s/%s", cfg->state_dir,
             AGENT_STATE_CONFIG);
    snprintf(l->env_device, sizeof l->env_device, "PHY_DEVICE_ID=%s", cfg->creds->device_id);
    rc =
        agent_state_read(cfg->state_dir, AGENT_STATE_CONFIG, AGENT_CONFIG_MAX, &l->config_text, &n);
    if (rc == 0)
        l->config_len = n;
    else if (rc != PHY_ENOTFOUND)
        phy_log(PHY_LOG_WARN, "config_unreadable", "file=%s err=%s", AGENT_STATE_CONFIG,
                phy_strerror(rc));
    return 0;
}

static void life_free(struct life *l)
{
    if (agent_hook_running(&l->hook)) {
        phy_log(PHY_LOG_WARN, "hook_killed", "version=%lld reason=stop", l->hook_version);
        agent_hook_abort(&l->hook);
    }
    session_close(l);
    agent_sync_free(&l->sync);
    json_decref(l->report);
    free(l->config_text);
}

enum agent_session_outcome agent_session_run(const struct agent_session_cfg *cfg)
{
    struct life *l = calloc(1, sizeof *l);
    enum agent_session_outcome out = AGENT_SESSION_FAILED;

    if (l == NULL)
        return AGENT_SESSION_FAILED;
    if (life_init(l, cfg) != 0)
        goto done;
    for (;;) {
        int revoked = 0;
        uint64_t delay;

        if (stop_seen(l)) {
            out = AGENT_SESSION_STOPPED;
            break;
        }
        if (session_open(l, &revoked) == 0) {
            int64_t began = mono_ms();
            enum end e = session_loop(l);

            if (e == END_STOP) {
                out = AGENT_SESSION_STOPPED;
                break;
            }
            if (e == END_REVOKED) {
                out = AGENT_SESSION_REVOKED;
                break;
            }
            if (mono_ms() - began > AGENT_STABLE_SESSION_S * 1000)
                l->prev_backoff_ms = 0;
        } else if (revoked) {
            out = AGENT_SESSION_REVOKED;
            break;
        }
        if (l->stop) {
            out = AGENT_SESSION_STOPPED;
            break;
        }
        uint64_t min_ms = (uint64_t)cfg->reconnect_min_s * 1000;
        if (l->has_hint) {
            /* A stopping hub spread its devices' returns over its drain time: the hint,
             * plus a little jitter of our own; should the hub not be back by then, the
             * next waits start from --reconnect-min again. */
            delay = agent_backoff_hinted_ms(l->hint_ms, min_ms / 2, random_u64());
            l->prev_backoff_ms = min_ms;
            l->has_hint = 0;
        } else {
            delay = agent_backoff_decorrelated_ms(min_ms, (uint64_t)cfg->reconnect_max_s * 1000,
                                                  l->prev_backoff_ms, random_u64());
            if (l->retry_after_ms > 0) /* at least the hub's hint, spread over as long again */
                delay = agent_backoff_at_least_ms(delay, l->retry_after_ms, random_u64());
            l->prev_backoff_ms = delay;
        }
        l->retry_after_ms = 0;
        phy_log(PHY_LOG_INFO, "reconnect_backoff", "delay_ms=%" PRIu64, delay);
        if (wait_ms(l, delay)) {
            out = AGENT_SESSION_STOPPED;
            break;
        }
    }
done:
    if (out == AGENT_SESSION_STOPPED)
        phy_log(PHY_LOG_INFO, "stop", "reason=signal");
    life_free(l);
    free(l);
    return out;
}
