/* Multi-region (docs/protocol.md section 3): keys, eu's internal API, and a regional
 * hub's outbox. The claims themselves are claim.c's; calls to eu, eu_client.c's. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdatomic.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "claim.h"
#include "eu_client.h"
#include "handlers.h"
#include "phy/json.h"
#include "phy/client.h"
#include "phy/crypto.h"
#include "phy/err.h"
#include "phy/file.h"
#include "phy/log.h"
#include "region.h"
#include "serials.h"

#define OUTBOX_BATCH 64
#define OUTBOX_BACKOFF_MIN_MS 2000
#define OUTBOX_BACKOFF_MAX_MS 300000
#define TENANT_MAX STORE_NAME_MAX
#define ENDPOINT_MAX 255

/* A caller of eu's internal API: a regional hub (--peer), or a manufacturer's
 * importer of attested serials (--importer). */
struct region_peer {
    char name[REGION_NAME_MAX + 1];
    char key[REGION_KEY_MAX + 1];
    char endpoint[300]; /* regions: the only endpoint its issuances may name (HOST:PORT) */
    int importer;       /* 1: may only import attested serials */
};

struct region_ctx {
    /* eu: one key per regional hub */
    struct region_peer *peers;
    size_t npeers;
    /* regional hub: one outbox drain at a time (eu's address and this region's key
     * are h->eu's) */
    atomic_int draining;
};

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t cap,
                                                          const char *fmt, ...)
{
    va_list ap;
    if (!err || !cap)
        return;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

int region_name_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > REGION_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-'))
            return 0;
    }
    return 1;
}

/* ---- key files ---- */

int region_key_load(const char *path, char out[REGION_KEY_MAX + 1], char *err, size_t errcap)
{
    char buf[REGION_KEY_MAX + 3];
    struct stat st;
    int rc = PHY_EINVAL;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, errcap, "key file %s: %s", path, strerror(errno));
        return PHY_EIO;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        set_err(err, errcap, "key file %s: %s", path, "not a regular file");
        goto out;
    }
    if (st.st_mode & 077) {
        set_err(err, errcap, "key file %s: %s", path,
                "readable by group or others (chmod 600 it)");
        goto out;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0) {
        set_err(err, errcap, "key file %s: %s", path, strerror(errno));
        rc = PHY_EIO;
        goto out;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    if (n < REGION_KEY_MIN || n > REGION_KEY_MAX) {
        set_err(err, errcap, "key file %s: %s", path,
                "expected one line of 32 to 128 characters");
        goto out;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] <= ' ' || buf[i] > '~') {
            set_err(err, errcap, "key file %s: %s", path,
                    "the key must be printable ASCII without spaces");
            goto out;
        }
    }
    memcpy(out, buf, (size_t)n + 1);
    rc = 0;
out:
    OPENSSL_cleanse(buf, sizeof buf);
    close(fd);
    return rc;
}

int region_key_new(const char *path, char *err, size_t errcap)
{
    char key[PHY_TOKEN_LEN + 2];
    int rc = PHY_EIO;
    if (phy_token_new(key) < 0) {
        set_err(err, errcap, "%s", "random source failed");
        return PHY_ECRYPTO;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        set_err(err, errcap, "key file %s: %s", path, strerror(errno));
        OPENSSL_cleanse(key, sizeof key);
        return errno == EEXIST ? PHY_EEXIST : PHY_EIO;
    }
    size_t n = strlen(key);
    key[n++] = '\n';
    /* the file, then its new name in the directory, durable before success */
    if (write(fd, key, n) == (ssize_t)n && fsync(fd) == 0 && phy_fsync_parent(path) == 0)
        rc = 0;
    else
        set_err(err, errcap, "key file %s: %s", path, strerror(errno));
    close(fd);
    if (rc != 0)
        unlink(path);
    OPENSSL_cleanse(key, sizeof key);
    return rc;
}

/* ---- set-up ---- */

/* --peer REGION=KEYFILE[,HOST:PORT] (importer 0) or --importer NAME=KEYFILE. */
static int load_peers(struct hub *h, struct region_ctx *r, const struct phy_strlist *l,
                      int importer, char *err, size_t errcap)
{
    const char *flag = importer ? "--importer" : "--peer";
    struct region_peer *grown = realloc(r->peers, (r->npeers + l->n + 1) * sizeof *r->peers);
    if (!grown)
        return PHY_ENOMEM;
    r->peers = grown;
    memset(r->peers + r->npeers, 0, (l->n + 1) * sizeof *r->peers);
    for (size_t i = 0; i < l->n; i++) {
        const char *eq = strchr(l->items[i], '=');
        struct region_peer *p = &r->peers[r->npeers];
        size_t nl = eq ? (size_t)(eq - l->items[i]) : 0;
        if (!eq || nl == 0 || nl > REGION_NAME_MAX || !eq[1] || eq[1] == ',' ||
            (importer && strchr(eq + 1, ','))) {
            set_err(err, errcap, "%s %s: %s", flag, l->items[i],
                    importer ? "expected NAME=KEYFILE" : "expected REGION=KEYFILE[,HOST:PORT]");
            return PHY_EINVAL;
        }
        memcpy(p->name, l->items[i], nl);
        p->name[nl] = '\0';
        p->importer = importer;
        if (!region_name_valid(p->name) || (!importer && strcmp(p->name, h->cfg.region) == 0)) {
            set_err(err, errcap, "%s %s: %s", flag, l->items[i],
                    "the name must be 1-15 of a-z 0-9 - (a region: not this hub's own)");
            return PHY_EINVAL;
        }
        /* KEYFILE[,HOST:PORT]: the endpoint the region's devices are sent to, by
         * default the one a hub of that region announces by default. */
        char keyfile[4096], host[256];
        unsigned port;
        const char *comma = strchr(eq + 1, ',');
        size_t kl = comma ? (size_t)(comma - eq - 1) : strlen(eq + 1);
        if (kl >= sizeof keyfile) {
            set_err(err, errcap, "--peer %s: key file path too long", p->name);
            return PHY_EINVAL;
        }
        memcpy(keyfile, eq + 1, kl);
        keyfile[kl] = '\0';
        if (comma)
            snprintf(p->endpoint, sizeof p->endpoint, "%s", comma + 1);
        else
            snprintf(p->endpoint, sizeof p->endpoint, "portal-%s.phystack.com:443", p->name);
        if (strlen(p->endpoint) > ENDPOINT_MAX ||
            phy_client_parse_hostport(p->endpoint, host, sizeof host, &port, 0) != 0) {
            set_err(err, errcap, "--peer %s: the endpoint must be HOST:PORT", p->name);
            return PHY_EINVAL;
        }
        int rc = region_key_load(keyfile, p->key, err, errcap);
        if (rc)
            return rc;
        for (size_t j = 0; j < r->npeers; j++) {
            if ((strcmp(r->peers[j].name, p->name) == 0 && r->peers[j].importer == importer) ||
                strcmp(r->peers[j].key, p->key) == 0) {
                set_err(err, errcap, "%s %s: %s", flag, p->name,
                        "each name once, each with its own key");
                return PHY_EINVAL;
            }
        }
        r->npeers++;
    }
    return 0;
}

int region_setup(struct hub *h, char *err, size_t errcap)
{
    const struct hub_config *c = &h->cfg;
    int rc;
    if (!region_name_valid(c->region)) {
        set_err(err, errcap, "--region %s: %s", c->region, "expected 1-15 of a-z 0-9 -");
        return PHY_EINVAL;
    }
    struct region_ctx *r = calloc(1, sizeof *r);
    if (!r)
        return PHY_ENOMEM;
    h->region = r;
    if (c->provisioning) {
        if (c->provisioning_url || c->inter_region_key_file) {
            set_err(err, errcap, "%s", "--provisioning-url and --inter-region-key-file are for hubs without "
                    "--provisioning (eu takes --peer REGION=KEYFILE)");
            return PHY_EINVAL;
        }
        rc = load_peers(h, r, &c->peers, 0, err, errcap);
        return rc ? rc : load_peers(h, r, &c->importers, 1, err, errcap);
    }
    if (c->peers.n || c->importers.n) {
        set_err(err, errcap, "%s", "--peer and --importer are for the hub with --provisioning (eu)");
        return PHY_EINVAL;
    }
    if (!c->provisioning_url || !c->inter_region_key_file) {
        set_err(err, errcap, "%s", "a hub without --provisioning needs --provisioning-url and "
                "--inter-region-key-file (claims go through eu)");
        return PHY_EINVAL;
    }
    if ((rc = eu_client_new(c->provisioning_url, &h->eu, err, errcap)))
        return rc;
    char key[REGION_KEY_MAX + 1];
    if ((rc = region_key_load(c->inter_region_key_file, key, err, errcap)) == 0)
        rc = eu_client_set_key(h->eu, key);
    OPENSSL_cleanse(key, sizeof key);
    return rc;
}

void region_cleanup(struct hub *h)
{
    struct region_ctx *r = h->region;
    eu_client_free(h->eu);
    h->eu = NULL;
    if (!r)
        return;
    if (r->peers)
        OPENSSL_cleanse(r->peers, r->npeers * sizeof *r->peers);
    free(r->peers);
    OPENSSL_cleanse(r, sizeof *r);
    free(r);
    h->region = NULL;
}

/* ---- eu: the internal API ---- */

/* Resolves the calling region (its name, and the endpoint eu pinned for it) from its
 * bearer key: every peer key is compared in constant time. 0 with *peer (borrowed
 * from h->region), or -1 with 401 in res when the key is missing or unknown. */
static int peer_auth_as(struct hub *h, const struct api_request *req, struct api_response *res,
                        int importer, const struct region_peer **peer)
{
    static const char bearer[] = "Bearer ";
    const struct region_ctx *r = h->region;
    const char *a = req->authorization;
    const struct region_peer *found = NULL;
    const char *why = "missing";
    if (a && strncmp(a, bearer, sizeof bearer - 1) == 0) {
        const char *key = a + sizeof bearer - 1;
        size_t n = strlen(key);
        why = "unknown_key";
        for (size_t i = 0; r && i < r->npeers; i++) {
            if (n == strlen(r->peers[i].key) && phy_ct_equal(key, r->peers[i].key, n) &&
                r->peers[i].importer == importer)
                found = &r->peers[i];
        }
    }
    *peer = found;
    if (found)
        return 0;
    hub_metric_add(&h->metrics.auth_failures, 1);
    char lpath[128];
    phy_log(PHY_LOG_WARN, "inter_region_auth_failed", "reason=%s path=%s", why,
            api_log_path(req->path, lpath, sizeof lpath));
    api_error(res, 401, "unauthorized",
              importer ? "a valid importer key is required" : "a valid inter-region key is required");
    snprintf(res->extra_headers, sizeof res->extra_headers,
             "WWW-Authenticate: Bearer realm=\"phystack-internal\"\r\n");
    snprintf(res->log, sizeof res->log, "inter_region_auth=%s", why);
    return -1;
}

static int peer_auth(struct hub *h, const struct api_request *req, struct api_response *res,
                     const struct region_peer **peer)
{
    return peer_auth_as(h, req, res, 0, peer);
}

/* A tenant name as tenant-add accepts it: 1..max bytes (UTF-8, checked by jansson)
 * without control characters. */
static int tenant_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f)
            return 0;
    }
    return 1;
}

static int secret_ok(const char *s)
{
    if (strlen(s) != PHY_TOKEN_LEN)
        return 0;
    for (size_t i = 0; i < PHY_TOKEN_LEN; i++) {
        char ch = s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return 0;
    }
    return 1;
}

void handle_internal_issue(struct hub *h, const struct api_request *req, struct api_response *res)
{
    static const char *const fields[] = {"serial", "code",     "device_id", "device_secret",
                                         "tenant", "region",   "endpoint",  "not_after",
                                         "serial_claims", NULL};
    const char *caller, *serial, *code_in, *device_id, *secret, *tenant, *region, *endpoint,
        *policy;
    char code[PHY_CODE_LEN + 1], host[256], serial_out[PHY_SERIAL_MAX + 1] = "";
    unsigned port;
    json_t *body = NULL;
    const struct region_peer *peer;
    if (peer_auth(h, req, res, &peer) < 0 || api_parse_body(req, res, &body) < 0)
        return;
    caller = peer->name;
    if (api_check_fields(body, fields, res) < 0 ||
        api_get_string(body, "serial", 0, &serial, res) < 0 ||
        api_get_string(body, "code", 0, &code_in, res) < 0 ||
        api_get_string(body, "device_id", 1, &device_id, res) < 0 ||
        api_get_string(body, "device_secret", 1, &secret, res) < 0 ||
        api_get_string(body, "tenant", 1, &tenant, res) < 0 ||
        api_get_string(body, "region", 1, &region, res) < 0 ||
        api_get_string(body, "endpoint", 1, &endpoint, res) < 0 ||
        api_get_string(body, "serial_claims", 0, &policy, res) < 0)
        goto out;
    /* Absent (a hub of an older version): the default policy. */
    int serial_claims = SERIAL_CLAIMS_ATTESTED;
    if (policy && store_serial_claims_parse(policy, &serial_claims) != 0) {
        api_error(res, 400, "bad_request", "serial_claims is 'attested' or 'any'");
        goto out;
    }
    json_t *na = json_object_get(body, "not_after");
    if (!json_is_integer(na) || json_integer_value(na) <= 0) {
        api_error(res, 400, "bad_request", "not_after (milliseconds since the epoch) is required");
        goto out;
    }
    if (claim_key_check(serial, code_in, code, res) < 0)
        goto out;
    if (!api_device_id_valid(device_id, strlen(device_id)) || !secret_ok(secret) ||
        !tenant_ok(tenant, TENANT_MAX) || !region_name_valid(region) ||
        strlen(endpoint) > ENDPOINT_MAX ||
        phy_client_parse_hostport(endpoint, host, sizeof host, &port, 0) != 0) {
        api_error(res, 400, "bad_request",
                  "device_id, device_secret, tenant, region or endpoint is malformed");
        goto out;
    }
    snprintf(res->log, sizeof res->log, "caller=%s by=%s", caller, serial ? "serial" : "code");
    if (strcmp(region, caller) != 0) {
        api_error(res, 403, "wrong_region", "this key cannot issue for that region");
        goto out;
    }
    /* A stolen or misused key must not send devices anywhere else. */
    if (strcmp(endpoint, peer->endpoint) != 0) {
        char lq[300];
        phy_log(PHY_LOG_WARN, "wrong_endpoint", "region=%s endpoint=%s", caller,
                phy_log_quote(endpoint, lq, sizeof lq));
        api_error(res, 403, "wrong_endpoint",
                  "this region's devices go to the endpoint eu has pinned for it (--peer)");
        goto out;
    }
    struct claim_for_region cr = {
        .serial = serial,
        .code = code_in ? code : NULL,
        .device_id = device_id,
        .secret = secret,
        .tenant = tenant,
        .region = caller,
        .endpoint = endpoint,
        .serial_claims = serial_claims,
        .not_after_ms = json_integer_value(na),
    };
    int outcome = STORE_OK;
    if (claim_issue_for_region(h, &cr, serial_out, &outcome, res) < 0)
        goto out;
    snprintf(res->log, sizeof res->log, "caller=%s by=%s serial=%s outcome=%d", caller,
             serial ? "serial" : "code", serial_out[0] ? serial_out : "-", outcome);
    switch (outcome) {
    case STORE_OK:
        hub_metric_add(&h->metrics.prov_issued_remote, 1);
        api_json(res, 201,
                 json_pack("{s:s, s:s}", "device_id", device_id, "serial", serial_out));
        break;
    default:
        claim_refused(res, outcome);
    }
out:
    json_decref(body);
}

void handle_internal_purge(struct hub *h, const struct api_request *req, const char *id,
                           struct api_response *res)
{
    const struct region_peer *peer;
    int outcome = STORE_OK;
    if (peer_auth(h, req, res, &peer) < 0)
        return;
    const char *caller = peer->name;
    snprintf(res->log, sizeof res->log, "caller=%s", caller);
    if (h->store_ops->issuance_purge_remote(h->store, caller, id, &outcome) < 0) {
        api_store_failed(res);
        return;
    }
    if (outcome != STORE_OK) {
        api_error(res, 404, "not_found", "no issuance of your region carries this device ID");
        return;
    }
    res->status = 204;
}

void handle_internal_cancel(struct hub *h, const struct api_request *req, const char *id,
                            struct api_response *res)
{
    const struct region_peer *peer;
    char serial[PHY_SERIAL_MAX + 1] = "";
    int outcome = STORE_OK;
    if (peer_auth(h, req, res, &peer) < 0)
        return;
    const char *caller = peer->name;
    snprintf(res->log, sizeof res->log, "caller=%s", caller);
    if (h->store_ops->issuance_cancel_remote(h->store, caller, id, serial, &outcome) < 0) {
        api_store_failed(res);
        return;
    }
    if (outcome == STORE_PROVISIONED) {
        api_json(res, 409,
                 json_pack("{s:s, s:s, s:s}", "error", "already_delivered", "message",
                           "the device already fetched its credentials", "serial", serial));
        return;
    }
    if (outcome != STORE_OK) {
        api_error(res, 404, "not_found", "no issuance of your region carries this device ID");
        return;
    }
    res->status = 204;
}

void handle_internal_rearm(struct hub *h, const struct api_request *req, struct api_response *res)
{
    static const char *const fields[] = {"serial", NULL};
    const struct region_peer *peer;
    const char *caller, *serial;
    json_t *body = NULL;
    int outcome = STORE_OK;
    if (peer_auth(h, req, res, &peer) < 0 || api_parse_body(req, res, &body) < 0)
        return;
    caller = peer->name;
    if (api_check_fields(body, fields, res) < 0 ||
        api_get_string(body, "serial", 1, &serial, res) < 0)
        goto out;
    if (!phy_serial_valid(serial, strlen(serial))) {
        api_error(res, 400, "bad_request", "serial must be 1-64 characters of A-Z a-z 0-9 . _ -");
        goto out;
    }
    snprintf(res->log, sizeof res->log, "caller=%s serial=%s", caller, serial);
    if (h->store_ops->serial_rearm_remote(h->store, caller, serial, &outcome) < 0) {
        api_store_failed(res);
        goto out;
    }
    if (outcome != STORE_OK)
        api_error(res, 404, "not_found", "your region did not spend this serial");
    else
        res->status = 204;
out:
    json_decref(body);
}

/* POST /internal/v1/serials: a manufacturer's importer (--importer) sends a CSV of
 * attested serials (the format of phyhub admin serials-import, serials.h), at most
 * --max-body bytes per call: all of it is imported, or nothing (400 line N: why). */
void handle_internal_serials(struct hub *h, const struct api_request *req,
                             struct api_response *res)
{
    const struct region_peer *imp;
    struct store_serial_key *v = NULL;
    char err[256], *text = NULL;
    size_t n = 0;
    if (peer_auth_as(h, req, res, 1, &imp) < 0)
        return;
    snprintf(res->log, sizeof res->log, "importer=%s", imp->name);
    if (!req->content_type || strncmp(req->content_type, "text/csv", 8) != 0) {
        api_error(res, 415, "unsupported_media_type", "send the serials as text/csv");
        return;
    }
    if (!req->body_len || memchr(req->body, '\0', req->body_len) ||
        !(text = strndup(req->body, req->body_len))) {
        api_error(res, 400, "bad_request", "an empty body, or one with a NUL byte");
        return;
    }
    if (serials_csv_parse(text, &v, &n, err, sizeof err) != 0) {
        api_error(res, 400, "bad_request", err);
        goto out;
    }
    if (h->store_ops->serials_import(h->store, v, n, hub_now_ms()) < 0) {
        api_store_failed(res);
        goto out;
    }
    snprintf(res->log, sizeof res->log, "importer=%s imported=%zu", imp->name, n);
    phy_log(PHY_LOG_INFO, "serials_imported", "importer=%s count=%zu", imp->name, n);
    api_json(res, 200, json_pack("{s:I}", "imported", (json_int_t)n));
out:
    serials_free(v, n);
    free(text);
}

/* ---- regional hub: the outbox ---- */

static int64_t backoff_ms(int attempts)
{
    int64_t ms = OUTBOX_BACKOFF_MIN_MS;
    for (int i = 0; i < attempts && ms < OUTBOX_BACKOFF_MAX_MS; i++)
        ms *= 2;
    return ms < OUTBOX_BACKOFF_MAX_MS ? ms : OUTBOX_BACKOFF_MAX_MS;
}

static const char *kind_name(int kind)
{
    return kind == OUTBOX_CANCEL ? "cancel" : kind == OUTBOX_PURGE ? "purge" : "rearm";
}

/* Sends one entry. 1 done, 0 retry later, -1 eu did not answer (stop for now). */
static int outbox_send(struct hub *h, const struct store_outbox_item *it)
{
    struct phy_client_response ans = {0};
    char path[128], err[200] = "", serial[PHY_SERIAL_MAX + 1] = "";
    char *body = NULL;
    int lost, done = 0, outcome;
    const char *method = "POST";
    switch (it->kind) {
    case OUTBOX_CANCEL:
        snprintf(path, sizeof path, "/internal/v1/issuances/%.*s/cancel", PHY_DEVICE_ID_LEN,
                 it->device_id);
        break;
    case OUTBOX_PURGE:
        method = "DELETE";
        snprintf(path, sizeof path, "/internal/v1/issuances/%.*s", PHY_DEVICE_ID_LEN,
                 it->device_id);
        break;
    case OUTBOX_REARM: {
        json_t *o = json_pack("{s:s}", "serial", it->serial);
        body = o ? phy_json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!body)
            return 0;
        snprintf(path, sizeof path, "/internal/v1/serials/rearm");
        break;
    }
    default:
        return 1; /* unknown kind: drop it */
    }
    if (eu_client_call(h, method, path, body, 0, &ans, &lost, err, sizeof err) < 0 ||
        ans.status >= 500) {
        done = -1;
        goto out;
    }
    switch (it->kind) {
    case OUTBOX_CANCEL:
        if (ans.status == 409) { /* delivered: the device is real, complete the claim */
            eu_client_answer_field(&ans, "serial", serial, sizeof serial);
            done = phy_serial_valid(serial, strlen(serial)) &&
                   h->store_ops->claim_confirm(h->store, it->device_id, serial, NULL, &outcome) == 0;
        } else if (ans.status == 204 || ans.status == 404) {
            done = h->store_ops->claim_abort(h->store, it->device_id) == 0;
        }
        break;
    default: /* 404: eu has nothing (any more) to end */
        done = ans.status == 204 || ans.status == 404;
    }
    if (!done && ans.status != 0)
        snprintf(err, sizeof err, "eu answered %d", ans.status);
out:
    if (done > 0)
        phy_log(PHY_LOG_INFO, "outbox_sent", "device_id=%s kind=%s status=%d", it->device_id,
                kind_name(it->kind), ans.status);
    else
        phy_log(PHY_LOG_WARN, "outbox_retry", "device_id=%s kind=%s attempts=%d err=\"%s\"",
                it->device_id, kind_name(it->kind), it->attempts + 1, err);
    phy_client_response_free(&ans);
    free(body);
    return done;
}

void region_outbox_drain(struct hub *h)
{
    struct store_outbox_item items[OUTBOX_BATCH];
    struct region_ctx *rc = h->region;
    size_t n = 0;
    if (h->cfg.provisioning || !rc || !h->eu)
        return;
    /* One drain at a time (the sweep and the session kick both call this): an entry
     * must not be sent twice concurrently. */
    if (atomic_exchange(&rc->draining, 1))
        return;
    if (h->store_ops->outbox_due(h->store, hub_now_ms(), items, OUTBOX_BATCH, &n) < 0) {
        phy_log(PHY_LOG_WARN, "outbox_failed", "store=%s", store_engine_name(h->store));
        n = 0;
    }
    for (size_t i = 0; i < n; i++) {
        /* A claim still waiting on its own call to eu decides for itself. */
        if (items[i].kind == OUTBOX_CANCEL && eu_client_claim_held(h->eu, items[i].device_id))
            continue;
        int r = outbox_send(h, &items[i]);
        if (r > 0) {
            h->store_ops->outbox_done(h->store, items[i].device_id, items[i].kind);
            continue;
        }
        h->store_ops->outbox_retry(h->store, items[i].device_id, items[i].kind,
                                   hub_now_ms() + backoff_ms(items[i].attempts));
        if (r < 0) /* eu is unreachable: the rest waits for the next round */
            break;
    }
    atomic_store(&rc->draining, 0);
}
