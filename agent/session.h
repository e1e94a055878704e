/* phyagent's connected life: WSS to the regional hub through phyproxy, twin sync,
 * configuration hook, status reports, reconnects. */
#ifndef PHY_AGENT_SESSION_H
#define PHY_AGENT_SESSION_H

#include <signal.h>

#include "prov.h"

#define AGENT_STATE_CONFIG "config.json"
#define AGENT_CONFIG_MAX (256 * 1024) /* config.json read back for comparison */
#define AGENT_WS_MAX_MSG (256 * 1024) /* largest hub message accepted */
#define AGENT_STOP_CLOSE_WAIT_MS 2000 /* after our close 1000 on SIGTERM */
#define AGENT_CLOSE_EOF_WAIT_MS 1000  /* for the hub's TCP close after the close handshake */
#define AGENT_STABLE_SESSION_S 60     /* a session this long resets the reconnect backoff */

/* Everything the connected life needs; all borrowed for the duration of the call. */
struct phy_tls_resume;

struct agent_session_cfg {
    const char *state_dir;
    const struct agent_creds *creds;
    const char *proxy_host; /* NULL: connect directly (connect_addr or the endpoint) */
    unsigned proxy_port;
    const char *connect_addr;
    const char *ca_file;
    int timeout_ms;            /* connect, TLS handshake, upgrade answer */
    long long cert_time_floor; /* see phy_client_opts */
    struct phy_tls_resume *resume; /* see phy_client_opts: the last TLS session, offered
                                    * again on reconnect */
    const char *on_config;     /* hook command for /bin/sh -c, or NULL */
    unsigned config_mode;      /* config.json's mode (0600: desired settings may hold
                                * secrets; --config-mode) */
    long hook_timeout_s;
    long status_interval_s;
    long dead_after_s;
    long reconnect_min_s, reconnect_max_s;
    int sig_fd;                       /* readable when a stop signal arrived */
    volatile sig_atomic_t *stop_flag; /* set by the signal handler */
};

enum agent_session_outcome {
    AGENT_SESSION_STOPPED, /* SIGTERM/SIGINT: closed cleanly */
    AGENT_SESSION_REVOKED, /* 401 at the upgrade, or close 4001/4002 */
    AGENT_SESSION_FAILED,  /* a local error that retrying cannot fix (logged) */
};

/* Runs the connected life until a stop signal or revocation: connects, keeps the
 * session, reconnects with decorrelated-jitter backoff. */
enum agent_session_outcome agent_session_run(const struct agent_session_cfg *cfg);

#endif
