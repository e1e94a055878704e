/* phyagent: provisions a device by serial number, then keeps it connected to its regional hub. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "backoff.h"
#include "phy/client.h"
#include "phy/buildinfo.h"
#include "phy/config.h"
#include "phy/attest.h"
#include "phy/crypto.h"
#include "phy/err.h"
#include "phy/log.h"
#include "prov.h"
#include "session.h"
#include "state.h"
#include "sysinfo.h"

#ifndef PHY_BUILD_EPOCH
#define PHY_BUILD_EPOCH 0
#endif

#define AGENT_DEFAULT_ENDPOINT "portal-eu.phystack.com:443"
#define AGENT_DEFAULT_INTERVAL 5
#define AGENT_SLEEP_SLICE_MS 100
#define AGENT_MAX_ATTEMPT 40 /* beyond this the backoff ceiling is the cap anyway */

#define PATH_REGISTER "/v1/provisioning/register"
#define PATH_PROVE "/v1/provisioning/prove"
#define PATH_CODE "/v1/provisioning/code"
#define PATH_POLL "/v1/provisioning/poll"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_REVOKED = 3 };

/* Set by SIGINT/SIGTERM; every wait checks it. The write end of the self-pipe wakes
 * the connected phase's poll(2). */
static volatile sig_atomic_t stop_requested;
static int sig_pipe[2] = {-1, -1};

struct agent_opts {
    char *serial;
    char *state_dir;
    char *proxy;
    char *ca;
    char *endpoint;
    char *connect_addr;
    long code_rotation;
    long backoff_max;
    long backoff_base_ms;
    long timeout;
    int verbose;
    char *on_config;
    long hook_timeout;
    long status_interval;
    long dead_after;
    long reconnect_min;
    long reconnect_max;
    int reprovision_on_revoke;
    int provision_only;
    long cert_time_floor;
    char *device_key; /* PEM private key of an attested serial */
    char *config_mode;  /* "600" (default), "640" or "644" */
};

struct agent {
    struct agent_opts o;
    struct phy_client_opts copts;
    char host[256];
    unsigned port;
    char proxy_host[256];
    unsigned proxy_port;
    char ident[PHY_SERIAL_MAX + 4];

    int have_reg;
    char poll_token[AGENT_POLL_TOKEN_MAX + 1];
    int interval;          /* seconds between polls, as the server says */
    unsigned attempt;      /* consecutive failures, for the backoff */
    int64_t code_due_ms;   /* monotonic time of the next code request, 0 = now */
    unsigned code_attempt; /* consecutive code failures */
    int code_spent;        /* code answered 410: poll only until re-registration */
    EVP_PKEY *device_key;  /* --device-key, NULL without */
    unsigned config_mode;  /* --config-mode as a mode */
    /* While provisioning: one tunnel and TLS connection kept across requests (the
     * hub's keep-alive outlasts the poll interval); NULL when none is open. */
    struct phy_client_keep *keep;
};

static void on_signal(int sig)
{
    int saved = errno;

    (void)sig;
    stop_requested = 1;
    if (sig_pipe[1] >= 0 && write(sig_pipe[1], "x", 1) < 0) {
        /* full pipe: a wake-up is pending anyway */
    }
    errno = saved;
}

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps ms in short slices; returns 1 as soon as a stop was requested. */
static int sleep_ms(uint64_t ms)
{
    int64_t deadline = mono_ms() + (int64_t)(ms > INT32_MAX ? INT32_MAX : ms);

    while (!stop_requested) {
        int64_t left = deadline - mono_ms();
        struct timespec ts;

        if (left <= 0)
            return 0;
        if (left > AGENT_SLEEP_SLICE_MS)
            left = AGENT_SLEEP_SLICE_MS;
        ts.tv_sec = 0;
        ts.tv_nsec = (long)left * 1000000L;
        nanosleep(&ts, NULL); /* EINTR on a signal: the loop re-checks the flag */
    }
    return 1;
}

static uint64_t random_u64(void)
{
    uint64_t r = 0;

    if (phy_random_bytes(&r, sizeof r) != 0)
        r = (uint64_t)mono_ms() * 6364136223846793005ULL; /* jitter only, not a secret */
    return r;
}

/* Full-jitter wait after a failure; returns 1 when stopping. */
static int backoff(struct agent *a, const char *reason)
{
    uint64_t ms =
        agent_backoff_delay_ms((uint64_t)a->o.backoff_base_ms, (uint64_t)a->o.backoff_max * 1000,
                               a->attempt, random_u64());

    phy_log(PHY_LOG_INFO, "backoff", "reason=%s attempt=%u delay_ms=%llu", reason, a->attempt + 1,
            (unsigned long long)ms);
    if (a->attempt < AGENT_MAX_ATTEMPT)
        a->attempt++;
    return sleep_ms(ms);
}

/* Wait at the maximum backoff (with jitter in its upper half); 1 when stopping. */
static int backoff_max(struct agent *a, const char *reason)
{
    uint64_t cap = (uint64_t)a->o.backoff_max * 1000;
    uint64_t ms = cap / 2 + random_u64() % (cap / 2 + 1);

    phy_log(PHY_LOG_INFO, "backoff", "reason=%s delay_ms=%llu", reason, (unsigned long long)ms);
    return sleep_ms(ms);
}

/* POSTs a JSON body. Returns 0 with res filled, or negative after logging why. */
static int post(struct agent *a, const char *path, char *body, struct phy_client_response *res)
{
    char err[256], q[300];
    int rc;

    if (body == NULL) {
        phy_log(PHY_LOG_ERROR, "request_failed", "path=%s err=out_of_memory", path);
        return PHY_ENOMEM;
    }
    if (a->keep == NULL)
        a->keep = phy_client_keep_new();
    /* Polls and code requests may be sent again when a kept connection turned out
     * closed; a registration or proof is not repeated behind the hub's back. */
    int idempotent = strcmp(path, PATH_POLL) == 0 || strcmp(path, PATH_CODE) == 0;
    rc = a->keep != NULL
             ? phy_client_keep_request(a->keep, &a->copts, "POST", path, NULL, "application/json",
                                       body, strlen(body), idempotent, res, err, sizeof err)
             : phy_client_request(&a->copts, "POST", path, NULL, "application/json", body,
                                  strlen(body), res, err, sizeof err);
    OPENSSL_cleanse(body, strlen(body)); /* it carries the poll token */
    free(body);
    if (rc != 0) {
        phy_log(PHY_LOG_WARN, "request_failed", "path=%s err=%s", path,
                phy_log_quote(err, q, sizeof q));
        return rc;
    }
    phy_log(PHY_LOG_DEBUG, "response", "path=%s status=%d", path, res->status);
    return 0;
}

static void release(struct phy_client_response *res)
{
    if (res->body != NULL)
        OPENSSL_cleanse(res->body, res->body_len);
    phy_client_response_free(res);
}

static void log_answer(enum phy_log_level lvl, const char *event, const char *path,
                       const struct agent_prov_result *r)
{
    char q[AGENT_ERROR_MAX + 8];

    phy_log(lvl, event, "path=%s status=%d error=%s", path, r->status,
            phy_log_quote(r->error[0] != '\0' ? r->error : "-", q, sizeof q));
}

/* Forgets the registration (on disk and in memory) and the displayed code. */
static void drop_registration(struct agent *a)
{
    if (agent_state_remove(a->o.state_dir, AGENT_STATE_REGISTRATION) != 0)
        phy_log(PHY_LOG_WARN, "state_error", "op=remove file=%s", AGENT_STATE_REGISTRATION);
    agent_state_remove(a->o.state_dir, AGENT_STATE_CODE);
    OPENSSL_cleanse(a->poll_token, sizeof a->poll_token);
    a->have_reg = 0;
    a->code_due_ms = 0;
    a->code_attempt = 0;
    a->code_spent = 0;
}

static void log_elsewhere(struct agent *a)
{
    phy_log(PHY_LOG_ERROR, "provisioned_elsewhere",
            "serial=%s msg=\"serial already provisioned by another registration; retrying "
            "registration in case a console reset re-arms it\"",
            a->o.serial);
}

/* Loads registration.json when it is for our serial. */
static void load_registration(struct agent *a)
{
    char *text = NULL;
    size_t n = 0;
    int rc =
        agent_state_read(a->o.state_dir, AGENT_STATE_REGISTRATION, AGENT_STATE_MAX_FILE, &text, &n);

    if (rc == PHY_ENOTFOUND)
        return;
    if (rc == 0 && agent_prov_registration_parse(text, n, a->o.serial, a->poll_token) == 0) {
        a->have_reg = 1;
        phy_log(PHY_LOG_INFO, "registration_loaded", "serial=%s", a->o.serial);
    } else {
        phy_log(PHY_LOG_WARN, "registration_ignored",
                "file=%s reason=\"unreadable or for another serial\"", AGENT_STATE_REGISTRATION);
    }
    if (text != NULL) {
        OPENSSL_cleanse(text, n);
        free(text);
    }
}

/* A proof that did not go through: the registration is dropped (the next round
 * registers again) after a backoff, the maximum one when retrying soon cannot help.
 * -1, or 1 to stop. */
static int prove_failed(struct agent *a, const char *reason, int at_max)
{
    drop_registration(a);
    int rc = at_max ? backoff_max(a, reason) : backoff(a, reason);
    return rc ? rc : -1;
}

/* Proves possession of the device key for a new registration of an attested serial
 * (docs/protocol.md section 2). 0 proven, else as prove_failed. */
static int do_prove(struct agent *a, const char *challenge)
{
    struct phy_client_response res = {0};
    struct agent_prov_result r;
    char msg[PHY_ATTEST_MSG_MAX], sig[PHY_ATTEST_SIG_B64_MAX + 1];
    int n;
    if (!a->device_key) {
        phy_log(PHY_LOG_ERROR, "device_key_required",
                "serial=%s msg=\"this serial is attested: start phyagent with --device-key\"",
                a->o.serial);
        return prove_failed(a, "device_key_required", 1);
    }
    n = phy_attest_message(a->o.serial, challenge, a->poll_token, msg, sizeof msg);
    if (n < 0 || phy_attest_sign(a->device_key, msg, (size_t)n, sig, sizeof sig) != 0) {
        OPENSSL_cleanse(msg, sizeof msg);
        phy_log(PHY_LOG_ERROR, "prove_failed", "reason=\"cannot sign with the device key\"");
        return prove_failed(a, "sign_failed", 0);
    }
    OPENSSL_cleanse(msg, sizeof msg);
    if (post(a, PATH_PROVE, agent_prov_prove_body(a->o.serial, a->poll_token, sig), &res) != 0)
        return prove_failed(a, "network", 0);
    agent_prov_parse_prove(res.status, res.body, res.body_len, &r);
    release(&res);
    switch (r.outcome) {
    case AGENT_PROV_OK:
        if (r.interval > 0)
            a->interval = r.interval;
        phy_log(PHY_LOG_INFO, "proven", "serial=%s", a->o.serial);
        return 0;
    case AGENT_PROV_BAD_PROOF:
        phy_log(PHY_LOG_ERROR, "prove_refused",
                "serial=%s msg=\"the hub's key for this serial does not match --device-key\"",
                a->o.serial);
        return prove_failed(a, "bad_proof", 1);
    default:
        log_answer(PHY_LOG_WARN, "prove_failed", PATH_PROVE, &r);
        return prove_failed(a, "prove_failed", 0);
    }
}

/* Registers the serial. Returns 1 to stop, 0 to go on (registered or backed off). */
static int do_register(struct agent *a)
{
    struct phy_client_response res = {0};
    struct agent_prov_result r;
    char err[256], q[300], *json;
    int rc;

    if (post(a, PATH_REGISTER, agent_prov_register_body(a->o.serial), &res) != 0)
        return backoff(a, "network");
    agent_prov_parse_register(res.status, res.body, res.body_len, &r);
    release(&res);
    switch (r.outcome) {
    case AGENT_PROV_OK:
        break;
    case AGENT_PROV_ALREADY_PROVISIONED:
        log_elsewhere(a);
        return backoff_max(a, "already_provisioned");
    case AGENT_PROV_RATE_LIMITED:
        log_answer(PHY_LOG_WARN, "register_refused", PATH_REGISTER, &r);
        return backoff(a, "too_many_registrations");
    default:
        log_answer(PHY_LOG_WARN, "register_failed", PATH_REGISTER, &r);
        return backoff(a, "register_failed");
    }
    /* Durable before use: a restart must poll with this very token. */
    json = agent_prov_registration_json(a->o.serial, r.poll_token);
    rc = json != NULL ? agent_state_write(a->o.state_dir, AGENT_STATE_REGISTRATION, json,
                                          strlen(json), 0600, err, sizeof err)
                      : PHY_ENOMEM;
    if (json != NULL) {
        OPENSSL_cleanse(json, strlen(json));
        free(json);
    }
    if (rc != 0) {
        OPENSSL_cleanse(&r, sizeof r);
        phy_log(PHY_LOG_ERROR, "state_error", "op=write file=%s err=%s", AGENT_STATE_REGISTRATION,
                phy_log_quote(rc == PHY_ENOMEM ? "out of memory" : err, q, sizeof q));
        return backoff(a, "state_write");
    }
    memcpy(a->poll_token, r.poll_token, sizeof a->poll_token);
    if (r.interval > 0)
        a->interval = r.interval;
    if (r.challenge[0] && (rc = do_prove(a, r.challenge)) != 0) {
        OPENSSL_cleanse(&r, sizeof r);
        return rc < 0 ? 0 : rc; /* backed off; the next round registers again */
    }
    OPENSSL_cleanse(&r, sizeof r);
    a->have_reg = 1;
    a->attempt = 0;
    a->code_due_ms = 0;
    a->code_attempt = 0;
    a->code_spent = 0;
    phy_log(PHY_LOG_INFO, "registered", "serial=%s interval=%d", a->o.serial, a->interval);
    return 0;
}

/* Asks for a fresh code when one is due. Returns 1 to stop, 0 to go on (the caller
 * polls next whatever happened here, unless the registration was dropped). */
static int maybe_rotate_code(struct agent *a)
{
    struct phy_client_response res = {0};
    struct agent_prov_result r;
    char err[256], q[300], line[PHY_CODE_LEN + 2];
    int64_t now = mono_ms();
    long ttl;

    if (a->code_spent || now < a->code_due_ms)
        return 0;
    if (post(a, PATH_CODE, agent_prov_token_body(a->o.serial, a->poll_token), &res) != 0)
        goto retry_later;
    agent_prov_parse_code(res.status, res.body, res.body_len, &r);
    release(&res);
    switch (r.outcome) {
    case AGENT_PROV_OK:
        break;
    case AGENT_PROV_INVALID_TOKEN:
    case AGENT_PROV_UNKNOWN_SERIAL:
    case AGENT_PROV_PROOF_REQUIRED: /* e.g. a crash between register and prove */
        log_answer(PHY_LOG_WARN, "registration_lost", PATH_CODE, &r);
        drop_registration(a);
        return backoff(a, "registration_lost");
    case AGENT_PROV_ALREADY_PROVISIONED:
        /* Maybe issued to us: the poll tells (it has our token). */
        a->code_spent = 1;
        agent_state_remove(a->o.state_dir, AGENT_STATE_CODE);
        return 0;
    default:
        log_answer(PHY_LOG_WARN, "code_failed", PATH_CODE, &r);
        goto retry_later;
    }
    ttl = a->o.code_rotation;
    if (r.expires_in > 0 && r.expires_in < ttl)
        ttl = r.expires_in;
    a->code_due_ms = mono_ms() + (int64_t)ttl * 1000;
    a->code_attempt = 0;
    snprintf(line, sizeof line, "%s\n", r.code);
    if (agent_state_write(a->o.state_dir, AGENT_STATE_CODE, line, strlen(line), 0644, err,
                          sizeof err) != 0)
        phy_log(PHY_LOG_WARN, "state_error", "op=write file=%s err=%s", AGENT_STATE_CODE,
                phy_log_quote(err, q, sizeof q));
    phy_log(PHY_LOG_INFO, "code", "code=%s expires_in=%d", r.code,
            r.expires_in > 0 ? r.expires_in : (int)ttl);
    return 0;

retry_later:
    a->code_due_ms = mono_ms() + (int64_t)agent_backoff_delay_ms((uint64_t)a->o.backoff_base_ms,
                                                                 (uint64_t)a->o.backoff_max * 1000,
                                                                 a->code_attempt, random_u64());
    if (a->code_attempt < AGENT_MAX_ATTEMPT)
        a->code_attempt++;
    return 0;
}

/* Stores the issued credentials durably. 0 or negative (logged). */
static int store_credentials(struct agent *a, const struct agent_creds *c)
{
    char err[256], q[300];
    char *json = agent_prov_creds_json(c);
    int rc;

    if (json == NULL) {
        phy_log(PHY_LOG_ERROR, "state_error", "op=write file=%s err=out_of_memory",
                AGENT_STATE_CREDENTIALS);
        return PHY_ENOMEM;
    }
    rc = agent_state_write(a->o.state_dir, AGENT_STATE_CREDENTIALS, json, strlen(json), 0600, err,
                           sizeof err);
    OPENSSL_cleanse(json, strlen(json));
    free(json);
    if (rc != 0)
        phy_log(PHY_LOG_ERROR, "state_error", "op=write file=%s err=%s", AGENT_STATE_CREDENTIALS,
                phy_log_quote(err, q, sizeof q));
    return rc;
}

/* One poll. Returns 1 to stop (provisioned or signalled), 0 to go on, having waited
 * what the answer asked for. */
static int do_poll(struct agent *a)
{
    struct phy_client_response res = {0};
    struct agent_prov_result r;

    if (post(a, PATH_POLL, agent_prov_token_body(a->o.serial, a->poll_token), &res) != 0)
        return backoff(a, "network");
    agent_prov_parse_poll(res.status, res.body, res.body_len, a->o.serial, &r);
    release(&res);
    switch (r.outcome) {
    case AGENT_PROV_PENDING:
        a->attempt = 0;
        if (r.interval > 0)
            a->interval = r.interval;
        phy_log(PHY_LOG_DEBUG, "pending", "interval=%d", a->interval);
        return sleep_ms((uint64_t)a->interval * 1000);
    case AGENT_PROV_SLOW_DOWN:
        a->attempt = 0; /* reachable and answering: not a failure */
        if (r.interval > 0)
            a->interval = r.interval;
        else if (a->interval < AGENT_INTERVAL_MAX / 2)
            a->interval *= 2;
        phy_log(PHY_LOG_WARN, "slow_down", "interval=%d", a->interval);
        return sleep_ms((uint64_t)a->interval * 1000);
    case AGENT_PROV_PROVISIONED:
        if (store_credentials(a, &r.creds) != 0) {
            OPENSSL_cleanse(&r, sizeof r);
            /* The same answer is served again within the issuance grace period. */
            return backoff(a, "state_write");
        }
        /* All three were validated to plain [A-Za-z0-9._:[\]-] text: no quoting. */
        phy_log(PHY_LOG_INFO, "provisioned", "device_id=%s region=%s endpoint=%s",
                r.creds.device_id, r.creds.region, r.creds.endpoint);
        OPENSSL_cleanse(&r, sizeof r);
        drop_registration(a);
        return 1;
    case AGENT_PROV_INVALID_TOKEN:
    case AGENT_PROV_UNKNOWN_SERIAL:
    case AGENT_PROV_PROOF_REQUIRED:
        log_answer(PHY_LOG_WARN, "registration_lost", PATH_POLL, &r);
        drop_registration(a);
        return backoff(a, "registration_lost");
    case AGENT_PROV_ALREADY_PROVISIONED:
        log_elsewhere(a);
        drop_registration(a);
        return backoff_max(a, "already_provisioned");
    default:
        log_answer(PHY_LOG_WARN, "poll_failed", PATH_POLL, &r);
        return backoff(a, "poll_failed");
    }
}

/* 1 when credentials.json exists and is valid (then in *c, logged), 0 otherwise. */
static int load_credentials(struct agent *a, struct agent_creds *c)
{
    char *text = NULL;
    size_t n = 0;
    int rc =
        agent_state_read(a->o.state_dir, AGENT_STATE_CREDENTIALS, AGENT_STATE_MAX_FILE, &text, &n);
    int ok = 0;

    if (rc == PHY_ENOTFOUND)
        return 0;
    if (rc == 0 && agent_prov_creds_parse(text, n, c) == 0) {
        phy_log(PHY_LOG_INFO, "already_provisioned", "device_id=%s serial=%s", c->device_id,
                c->serial);
        ok = 1;
    } else {
        OPENSSL_cleanse(c, sizeof *c);
        phy_log(PHY_LOG_WARN, "credentials_invalid",
                "file=%s msg=\"unreadable; provisioning again\"", AGENT_STATE_CREDENTIALS);
    }
    if (text != NULL) {
        OPENSSL_cleanse(text, n);
        free(text);
    }
    return ok;
}

static void usage(FILE *f, const struct phy_opt *opts)
{
    fprintf(f, "usage: phyagent --serial SN --state-dir DIR (--proxy HOST:PORT | "
               "--connect-addr ADDR:PORT) [options]\n\n"
               "Provisions this device: registers its serial number with the provisioning\n"
               "service, shows a fresh code (log and DIR/provisioning-code), polls until a\n"
               "console user claims it and stores DIR/credentials.json. Then (unless\n"
               "--provision-only) keeps a WebSocket session to the regional hub: applies the\n"
               "desired configuration to DIR/config.json and the --on-config hook, reports\n"
               "status. Exit status: 0 stopped or provisioned with --provision-only, 1 state\n"
               "or internal error, 2 usage, 3 device revoked or deleted.\n\n");
    phy_config_print_help(opts, f);
}

/* Validates options and fills the derived connection settings. 0 or -1 (printed). */
static int configure(struct agent *a)
{
    if (a->o.serial == NULL || !phy_serial_valid(a->o.serial, strlen(a->o.serial))) {
        fprintf(stderr, "phyagent: --serial: 1-64 characters of [A-Za-z0-9._-] required\n");
        return -1;
    }
    if (a->o.state_dir == NULL || a->o.state_dir[0] == '\0') {
        fprintf(stderr, "phyagent: --state-dir is required\n");
        return -1;
    }
    if ((a->o.proxy == NULL) == (a->o.connect_addr == NULL)) {
        fprintf(stderr, "phyagent: give exactly one of --proxy and --connect-addr\n");
        return -1;
    }
    if (phy_client_parse_hostport(a->o.endpoint != NULL ? a->o.endpoint : AGENT_DEFAULT_ENDPOINT,
                                  a->host, sizeof a->host, &a->port, 443) != 0) {
        fprintf(stderr, "phyagent: --provisioning-endpoint: expected HOST[:PORT]\n");
        return -1;
    }
    if (a->o.proxy != NULL &&
        phy_client_parse_hostport(a->o.proxy, a->proxy_host, sizeof a->proxy_host, &a->proxy_port,
                                  0) != 0) {
        fprintf(stderr, "phyagent: --proxy: expected HOST:PORT\n");
        return -1;
    }
    if (a->o.connect_addr != NULL) {
        char h[256];
        unsigned p;
        if (phy_client_parse_hostport(a->o.connect_addr, h, sizeof h, &p, a->port) != 0) {
            fprintf(stderr, "phyagent: --connect-addr: expected ADDR[:PORT]\n");
            return -1;
        }
    }
    if (a->o.reconnect_min > a->o.reconnect_max) {
        fprintf(stderr, "phyagent: --reconnect-min must not exceed --reconnect-max\n");
        return -1;
    }
    a->config_mode = 0600;
    if (a->o.config_mode != NULL) {
        if (strcmp(a->o.config_mode, "600") == 0 || strcmp(a->o.config_mode, "0600") == 0)
            a->config_mode = 0600;
        else if (strcmp(a->o.config_mode, "640") == 0 || strcmp(a->o.config_mode, "0640") == 0)
            a->config_mode = 0640;
        else if (strcmp(a->o.config_mode, "644") == 0 || strcmp(a->o.config_mode, "0644") == 0)
            a->config_mode = 0644;
        else {
            fprintf(stderr, "phyagent: --config-mode: 600, 640 or 644\n");
            return -1;
        }
    }
    if (a->o.on_config != NULL && a->o.on_config[0] == '\0') {
        free(a->o.on_config); /* an empty INI value means no hook */
        a->o.on_config = NULL;
    }
    snprintf(a->ident, sizeof a->ident, "sn_%s", a->o.serial);
    a->copts.host = a->host;
    a->copts.port = a->port;
    a->copts.connect_addr = a->o.connect_addr;
    a->copts.proxy_host = a->o.proxy != NULL ? a->proxy_host : NULL;
    a->copts.proxy_port = a->proxy_port;
    a->copts.proxy_ident = a->ident;
    a->copts.user_agent = "phyagent/" AGENT_VERSION; /* shown before a claim by serial */
    a->copts.ca_file = a->o.ca;
    a->copts.timeout_ms = (int)a->o.timeout * 1000;
    a->copts.cert_time_floor = a->o.cert_time_floor;
    return 0;
}

/* The provisioning phase: returns 0 once credentials.json was written, 1 when a
 * stop was requested first. */
static int provision(struct agent *a)
{
    a->interval = AGENT_DEFAULT_INTERVAL;
    a->attempt = 0;
    load_registration(a); /* a fresh code is asked for right away either way */
    while (!stop_requested) {
        if (!a->have_reg) {
            if (do_register(a) != 0)
                break;
            continue;
        }
        if (maybe_rotate_code(a) != 0)
            break;
        if (!a->have_reg)
            continue;
        if (do_poll(a) != 0)
            break;
    }
    phy_client_keep_close(a->keep); /* the session uses a connection of its own */
    a->keep = NULL;
    return stop_requested ? 1 : 0;
}

/* The connected phase with the stored credentials. */
static enum agent_session_outcome connected(struct agent *a, const struct agent_creds *c)
{
    struct agent_session_cfg cfg;

    memset(&cfg, 0, sizeof cfg);
    cfg.state_dir = a->o.state_dir;
    cfg.creds = c;
    cfg.proxy_host = a->copts.proxy_host;
    cfg.proxy_port = a->proxy_port;
    cfg.connect_addr = a->o.connect_addr;
    cfg.ca_file = a->o.ca;
    cfg.timeout_ms = (int)a->o.timeout * 1000;
    cfg.cert_time_floor = a->o.cert_time_floor;
    cfg.resume = a->copts.resume;
    cfg.on_config = a->o.on_config;
    cfg.config_mode = a->config_mode;
    cfg.hook_timeout_s = a->o.hook_timeout;
    cfg.status_interval_s = a->o.status_interval;
    cfg.dead_after_s = a->o.dead_after;
    cfg.reconnect_min_s = a->o.reconnect_min;
    cfg.reconnect_max_s = a->o.reconnect_max;
    cfg.sig_fd = sig_pipe[0];
    cfg.stop_flag = &stop_requested;
    return agent_session_run(&cfg);
}

static int run(struct agent *a)
{
    char err[256];
    /* The directory opens as far as config.json does (--config-mode), no further. */
    unsigned dir_mode = a->config_mode == 0644 ? 0755 : a->config_mode == 0640 ? 0750 : 0700;
    int lock_fd = agent_state_open(a->o.state_dir, dir_mode, err, sizeof err);
    int rc = EXIT_OK;

    if (lock_fd < 0) {
        char q[300];
        phy_log(PHY_LOG_ERROR, "state_error", "err=%s", phy_log_quote(err, q, sizeof q));
        return EXIT_FAIL;
    }
    phy_log(PHY_LOG_INFO, "start", "serial=%s ident=%s endpoint=%s:%u via=%s version=%s",
            a->o.serial, a->ident, a->host, a->port, a->o.proxy != NULL ? "proxy" : "direct",
            AGENT_VERSION);
    for (;;) {
        struct agent_creds c;
        enum agent_session_outcome out;

        if (!load_credentials(a, &c)) {
            if (provision(a) != 0) {
                phy_log(PHY_LOG_INFO, "stop", "reason=signal");
                break;
            }
            if (a->o.provision_only)
                break;
            if (!load_credentials(a, &c)) {
                phy_log(PHY_LOG_ERROR, "state_error",
                        "file=%s msg=\"cannot read back the stored credentials\"",
                        AGENT_STATE_CREDENTIALS);
                rc = EXIT_FAIL;
                break;
            }
        } else if (a->o.provision_only) {
            OPENSSL_cleanse(&c, sizeof c);
            break;
        }
        out = connected(a, &c);
        OPENSSL_cleanse(&c, sizeof c);
        if (out == AGENT_SESSION_STOPPED)
            break;
        if (out == AGENT_SESSION_FAILED) {
            rc = EXIT_FAIL;
            break;
        }
        if (!a->o.reprovision_on_revoke) {
            phy_log(PHY_LOG_ERROR, "exit", "code=%d reason=revoked", EXIT_REVOKED);
            rc = EXIT_REVOKED;
            break;
        }
        if (agent_state_remove(a->o.state_dir, AGENT_STATE_CREDENTIALS) != 0) {
            phy_log(PHY_LOG_ERROR, "state_error", "op=remove file=%s", AGENT_STATE_CREDENTIALS);
            rc = EXIT_FAIL;
            break;
        }
        phy_log(PHY_LOG_WARN, "reprovision",
                "serial=%s msg=\"credentials deleted; provisioning again\"", a->o.serial);
    }
    OPENSSL_cleanse(a->poll_token, sizeof a->poll_token);
    close(lock_fd);
    return rc;
}

int main(int argc, char **argv)
{
    struct agent a;
    struct sigaction sa;
    char err[256];
    int want_help = 0, rc;
    char *log_format = NULL;
    enum phy_log_format log_fmt;

    memset(&a, 0, sizeof a);
    a.o.code_rotation = 300;
    a.o.backoff_max = 300;
    a.o.backoff_base_ms = 1000;
    a.o.timeout = 10;
    a.o.hook_timeout = 60;
    a.o.status_interval = 60;
    a.o.dead_after = 90;
    a.o.reconnect_min = 1;
    a.o.reconnect_max = 300;
    a.o.cert_time_floor = (long)PHY_BUILD_EPOCH;
    a.interval = AGENT_DEFAULT_INTERVAL;

    const struct phy_opt opts[] = {
        {"serial", PHY_OPT_STR, &a.o.serial, 0, 0, "device serial number (required)"},
        {"config-mode", PHY_OPT_STR, &a.o.config_mode, 0, 0,
         "mode of config.json: 600 (default: desired settings may hold secrets), 640 or 644"},
        {"device-key", PHY_OPT_STR, &a.o.device_key, 0, 0,
         "PEM private key (Ed25519 or ECDSA P-256, mode 0600) whose public key the "
         "manufacturer imported for this serial; proves the device at registration"},
        {"state-dir", PHY_OPT_STR, &a.o.state_dir, 0, 0,
         "directory for credentials.json, registration.json, provisioning-code (required)"},
        {"proxy", PHY_OPT_STR, &a.o.proxy, 0, 0, "phyproxy HOST:PORT to tunnel through"},
        {"ca", PHY_OPT_STR, &a.o.ca, 0, 0, "PEM CA bundle for the hub (default: system store)"},
        {"provisioning-endpoint", PHY_OPT_STR, &a.o.endpoint, 0, 0,
         "provisioning service HOST:PORT (default " AGENT_DEFAULT_ENDPOINT ")"},
        {"connect-addr", PHY_OPT_STR, &a.o.connect_addr, 0, 0,
         "connect directly to ADDR:PORT instead of a proxy (debugging)"},
        {"code-rotation", PHY_OPT_INT, &a.o.code_rotation, 1, 86400,
         "seconds between fresh provisioning codes (default 300)"},
        {"backoff-max", PHY_OPT_INT, &a.o.backoff_max, 1, 86400,
         "maximum retry delay in seconds (default 300)"},
        {"backoff-base-ms", PHY_OPT_INT, &a.o.backoff_base_ms, 1, 3600000,
         "first retry delay ceiling in milliseconds (default 1000)"},
        {"timeout", PHY_OPT_INT, &a.o.timeout, 1, 600,
         "network timeout per connect/read/write in seconds (default 10)"},
        {"verbose", PHY_OPT_BOOL, &a.o.verbose, 0, 0, "log debug events too"},
        {"log-format", PHY_OPT_STR, &log_format, 0, 0,
         "logfmt (key=value, the default) or json (one JSON object per line, the same keys)"},
        {"on-config", PHY_OPT_STR, &a.o.on_config, 0, 0,
         "command run by /bin/sh -c after config.json changed (config on stdin)"},
        {"hook-timeout", PHY_OPT_INT, &a.o.hook_timeout, 1, 86400,
         "seconds before the --on-config hook is killed (default 60)"},
        {"status-interval", PHY_OPT_INT, &a.o.status_interval, 1, 86400,
         "seconds between status reports to the hub (default 60)"},
        {"dead-after", PHY_OPT_INT, &a.o.dead_after, 1, 86400,
         "reconnect when nothing came from the hub for this many seconds (default 90)"},
        {"reconnect-min", PHY_OPT_INT, &a.o.reconnect_min, 1, 86400,
         "smallest reconnect delay in seconds (default 1)"},
        {"reconnect-max", PHY_OPT_INT, &a.o.reconnect_max, 1, 86400,
         "largest reconnect delay in seconds (default 300)"},
        {"reprovision-on-revoke", PHY_OPT_BOOL, &a.o.reprovision_on_revoke, 0, 0,
         "when revoked, delete the credentials and provision again instead of exiting 3"},
        {"provision-only", PHY_OPT_BOOL, &a.o.provision_only, 0, 0,
         "exit 0 once provisioned (or at once when credentials exist)"},
        {"cert-time-floor", PHY_OPT_INT, &a.o.cert_time_floor, 0, 253402300799L,
         "Unix time below which the clock is not trusted for certificate checks "
         "(default: the build time)"},
        {NULL, PHY_OPT_STR, NULL, 0, 0, NULL},
    };

    if (phy_buildinfo_wanted(argc, argv, 1)) {
        phy_buildinfo_print("phyagent", stdout);
        return 0;
    }
    rc = phy_config_parse(opts, argc, argv, 1, NULL, 0, NULL, &want_help, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "phyagent: %s\n", err);
        phy_config_free(opts);
        return EXIT_USAGE;
    }
    if (want_help) {
        usage(stdout, opts);
        phy_config_free(opts);
        return EXIT_OK;
    }
    if (configure(&a) != 0) {
        usage(stderr, opts);
        phy_config_free(opts);
        return EXIT_USAGE;
    }
    if (phy_log_format_parse(log_format, &log_fmt) != 0) {
        fprintf(stderr, "phyagent: --log-format: expected logfmt or json\n");
        phy_config_free(opts);
        return EXIT_USAGE;
    }
    phy_log_set_format(log_fmt);
    phy_log_init("phyagent", a.o.verbose ? PHY_LOG_DEBUG : PHY_LOG_INFO);
    if (a.o.device_key) {
        char kerr[300];
        if (!(a.device_key = phy_attest_key_load(a.o.device_key, kerr, sizeof kerr))) {
            fprintf(stderr, "phyagent: --device-key: %s\n", kerr);
            phy_config_free(opts);
            return EXIT_USAGE;
        }
    }

    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        fprintf(stderr, "phyagent: pipe: %s\n", strerror(errno));
        phy_config_free(opts);
        return EXIT_FAIL;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    /* One TLS session kept in memory, offered again on each reconnect (a hub with the
     * region's ticket keys resumes it: no certificate to send, sign and verify). NULL
     * (no memory) only means no resumption. */
    a.copts.resume = phy_tls_resume_new();
    rc = run(&a);
    phy_tls_resume_free(a.copts.resume);
    EVP_PKEY_free(a.device_key);
    phy_config_free(opts);
    return rc;
}
