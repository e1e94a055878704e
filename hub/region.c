/* Multi-region (docs/protocol.md section 3): keys, eu's internal API, and a regional
 * hub's claims through eu plus its outbox. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <pthread.h>
#include <stdatomic.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "handlers.h"
#include "phy/json.h"
#include "phy/client.h"
#include "phy/crypto.h"
#include "phy/err.h"
#include "phy/file.h"
#include "phy/log.h"
#include "region.h"
#include "serials.h"
#include "seal.h"

#define OUTBOX_BATCH 64
#define OUTBOX_BACKOFF_MIN_MS 2000
#define OUTBOX_BACKOFF_MAX_MS 300000
#define RETRY_BASE_MS 200
#define TENANT_MAX STORE_NAME_MAX
#define ENDPOINT_MAX 255
#define CLAIMS_IN_FLIGHT_MAX 4 /* claims waiting on eu at once (each holds a worker) */

/* A caller of eu's internal API: a regional hub (--peer), or a manufacturer's
 * importer of attested serials (--importer). */
struct region_peer {
    char name[REGION_NAME_MAX + 1];
    char key[REGION_KEY_MAX + 1];
    char endpoint[300]; /* regions: the only endpoint its issuances may name (HOST:PORT) */
    int importer;       /* 1: may only import attested serials */
};

struct region_ctx {
    /* regional hub: eu's address and this region's key */
    char eu_host[256];
    unsigned eu_port;
    char key[REGION_KEY_MAX + 1];
    /* eu: one key per regional hub */
    struct region_peer *peers;
    size_t npeers;
    /* regional hub: claims whose call to eu is running (the outbox leaves their
     * cancel entries alone), and one outbox drain at a time */
    pthread_mutex_t mu;
    char in_flight[CLAIMS_IN_FLIGHT_MAX][PHY_DEVICE_ID_LEN + 1];
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

static int parse_url(struct region_ctx *r, const char *url, char *err, size_t errcap)
{
    static const char scheme[] = "https://";
    char hostport[300];
    size_t n;
    if (strncmp(url, scheme, sizeof scheme - 1) != 0) {
        set_err(err, errcap, "--provisioning-url %s: %s", url, "expected https://HOST[:PORT]");
        return PHY_EINVAL;
    }
    url += sizeof scheme - 1;
    n = strlen(url);
    if (n > 0 && url[n - 1] == '/')
        n--;
    if (n == 0 || n >= sizeof hostport || memchr(url, '/', n)) {
        set_err(err, errcap, "--provisioning-url %s: %s", url, "expected https://HOST[:PORT]");
        return PHY_EINVAL;
    }
    memcpy(hostport, url, n);
    hostport[n] = '\0';
    if (phy_client_parse_hostport(hostport, r->eu_host, sizeof r->eu_host, &r->eu_port, 443) != 0) {
        set_err(err, errcap, "--provisioning-url %s: %s", url, "expected https://HOST[:PORT]");
        return PHY_EINVAL;
    }
    return 0;
}

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
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r);
        return PHY_EIO;
    }
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
    if ((rc = parse_url(r, c->provisioning_url, err, errcap)))
        return rc;
    return region_key_load(c->inter_region_key_file, r->key, err, errcap);
}

void region_cleanup(struct hub *h)
{
    struct region_ctx *r = h->region;
    if (!r)
        return;
    if (r->peers)
        OPENSSL_cleanse(r->peers, r->npeers * sizeof *r->peers);
    free(r->peers);
    pthread_mutex_destroy(&r->mu);
    OPENSSL_cleanse(r, sizeof *r);
    free(r);
    h->region = NULL;
}

/* ---- sealing ---- */

unsigned char *hub_seal_issuance(void *ctx, const char *serial, size_t *out_len)
{
    struct hub_seal_ctx *s = ctx;
    (void)serial;
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "status", "provisioned", "device_id",
                          s->device_id, "device_secret", s->secret, "tenant", s->tenant, "region",
                          s->region, "endpoint", s->endpoint);
    char token[PHY_PROXY_TOKEN_MAX + 1];
    /* The device's proof to the proxies (docs/security.md): it needs it from its
     * first hub session on. */
    if (o && s->h->proxy_key.kid[0] &&
        (phy_proxy_token_make(&s->h->proxy_key, s->device_id, token) != 0 ||
         json_object_set_new(o, "proxy_token", json_string(token)) != 0)) {
        json_decref(o);
        o = NULL;
    }
    char *text = o ? phy_json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    unsigned char *out = seal_seal(s->h->seal, hub_now_ms(), s->device_id, text, n, out_len);
    OPENSSL_cleanse(text, n);
    free(text);
    return out;
}

/* ---- eu: the internal API ---- */

/* Resolves the calling region (its name, and the endpoint eu pinned for it) from its
 * bearer key: every peer key is compared in constant time. NULL with 401 in res when
 * the key is missing or unknown. */
static const struct region_peer *peer_auth_as(struct hub *h, const struct api_request *req,
                                              struct api_response *res, int importer)
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
    if (found)
        return found;
    hub_metric_add(&h->metrics.auth_failures, 1);
    char lpath[128];
    phy_log(PHY_LOG_WARN, "inter_region_auth_failed", "reason=%s path=%s", why,
            api_log_path(req->path, lpath, sizeof lpath));
    api_error(res, 401, "unauthorized",
              importer ? "a valid importer key is required" : "a valid inter-region key is required");
    snprintf(res->extra_headers, sizeof res->extra_headers,
             "WWW-Authenticate: Bearer realm=\"phystack-internal\"\r\n");
    snprintf(res->log, sizeof res->log, "inter_region_auth=%s", why);
    return NULL;
}

static const struct region_peer *peer_auth(struct hub *h, const struct api_request *req,
                                           struct api_response *res)
{
    return peer_auth_as(h, req, res, 0);
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
    const struct region_peer *peer = peer_auth(h, req, res);
    if (!peer || api_parse_body(req, res, &body) < 0)
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
    if (api_claim_key(serial, code_in, code, res) < 0)
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
    struct hub_seal_ctx sc = {h, device_id, secret, tenant, region, endpoint};
    struct store_remote_issue ri = {
        .serial = serial,
        .code = code_in ? code : NULL,
        .device_id = device_id,
        .region = caller,
        .serial_claims = serial_claims,
        .seal = hub_seal_issuance,
        .seal_ctx = &sc,
    };
    struct store_prov_params p;
    hub_prov_params(h, hub_now_ms(), &p);
    /* The caller has given up on this request by now (and may cancel soon): issuing
     * it would leave credentials nobody keeps. */
    if (p.now_ms > json_integer_value(na)) {
        api_error(res, 410, "request_expired", "the claim's deadline has passed; nothing issued");
        goto out;
    }
    int outcome = STORE_OK;
    if (h->store_ops->issue_remote(h->store, &p, &ri, serial_out, &outcome) < 0) {
        api_store_failed(res);
        goto out;
    }
    snprintf(res->log, sizeof res->log, "caller=%s by=%s serial=%s outcome=%d", caller,
             serial ? "serial" : "code", serial_out[0] ? serial_out : "-", outcome);
    switch (outcome) {
    case STORE_OK:
        hub_metric_add(&h->metrics.prov_issued_remote, 1);
        api_json(res, 201,
                 json_pack("{s:s, s:s}", "device_id", device_id, "serial", serial_out));
        break;
    default:
        api_claim_refused(res, outcome);
    }
out:
    json_decref(body);
}

void handle_internal_purge(struct hub *h, const struct api_request *req, const char *id,
                           struct api_response *res)
{
    const struct region_peer *peer = peer_auth(h, req, res);
    int outcome = STORE_OK;
    if (!peer)
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
    const struct region_peer *peer = peer_auth(h, req, res);
    char serial[PHY_SERIAL_MAX + 1] = "";
    int outcome = STORE_OK;
    if (!peer)
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
    const struct region_peer *peer = peer_auth(h, req, res);
    const char *caller, *serial;
    json_t *body = NULL;
    int outcome = STORE_OK;
    if (!peer || api_parse_body(req, res, &body) < 0)
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
    const struct region_peer *imp = peer_auth_as(h, req, res, 1);
    struct store_serial_key *v = NULL;
    char err[256], *text = NULL;
    size_t n = 0;
    if (!imp)
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

/* ---- regional hub: calls to eu ---- */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* The "key" string member of eu's JSON answer, copied into out ("" when absent). */
static void answer_field(const struct phy_client_response *res, const char *key, char *out,
                         size_t cap)
{
    json_t *o = res->body ? json_loads(res->body, JSON_REJECT_DUPLICATES, NULL) : NULL;
    json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;
    snprintf(out, cap, "%s", json_is_string(v) ? json_string_value(v) : "");
    json_decref(o);
}

/* 1 when eu itself says its transaction did not happen (its store failed). */
static int eu_rolled_back(const struct phy_client_response *res)
{
    char code[32];
    if (res->status != 503)
        return 0;
    answer_field(res, "error", code, sizeof code);
    return strcmp(code, "store_unavailable") == 0;
}

/* One call to eu with retries on transport failures and 5xx (safe: every internal
 * call is idempotent), none started after deadline_ms (0: no deadline). Returns 0
 * with res (status and body) or a negative PHY_E* when no answer came; *lost = 1
 * when some request may have reached eu without its answer reaching us. */
static int eu_call(struct hub *h, const char *method, const char *path, const char *body,
                   int64_t deadline_ms, struct phy_client_response *res, int *lost, char *err,
                   size_t errcap)
{
    const struct region_ctx *r = h->region;
    char auth[sizeof "Authorization: Bearer \r\n" + REGION_KEY_MAX];
    struct phy_client_opts o = {
        .host = r->eu_host,
        .port = r->eu_port,
        .ca_file = h->cfg.ca_file,
        .timeout_ms = (int)(h->cfg.inter_region_timeout_s * 1000),
    };
    int rc = PHY_EIO;
    long attempts = h->cfg.inter_region_attempts > 0 ? h->cfg.inter_region_attempts : 1;
    *lost = 0;
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", r->key);
    for (long i = 0; i < attempts; i++) {
        if (i > 0) {
            long pause = RETRY_BASE_MS << (i - 1 < 6 ? i - 1 : 6);
            if (deadline_ms && hub_now_ms() + pause >= deadline_ms)
                break;
            sleep_ms(pause);
        }
        rc = phy_client_request(&o, method, path, auth, body ? "application/json" : NULL, body,
                                body ? strlen(body) : 0, res, err, errcap);
        if (rc < 0 && res->sent)
            *lost = 1;
        if (rc == 0 && res->status >= 500 && !eu_rolled_back(res))
            *lost = 1; /* e.g. a gateway's 502/504: eu may have acted */
        if (rc == 0 && res->status < 500)
            break;
        if (rc == 0) {
            snprintf(err, errcap, "eu answered %d", res->status);
            if (i + 1 < attempts)
                phy_client_response_free(res);
        }
        phy_log(PHY_LOG_WARN, "inter_region_call_failed", "method=%s path=%s attempt=%ld err=\"%s\"",
                method, path, i + 1, err);
    }
    OPENSSL_cleanse(auth, sizeof auth);
    return rc;
}

static void unavailable(struct hub *h, struct api_response *res, const char *why)
{
    api_error_retry(res, 503, "provisioning_unavailable",
                    "the provisioning region cannot be reached right now; retry the claim",
                    h->cfg.inter_region_timeout_s);
    phy_log(PHY_LOG_WARN, "claim_unavailable", "why=\"%s\"", why);
}

/* Registers a claim whose call to eu is running; 0 when the cap is reached. */
static int in_flight_add(struct region_ctx *r, const char *device_id)
{
    int ok = 0;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < CLAIMS_IN_FLIGHT_MAX && !ok; i++) {
        if (!r->in_flight[i][0]) {
            memcpy(r->in_flight[i], device_id, PHY_DEVICE_ID_LEN + 1);
            ok = 1;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static void in_flight_remove(struct region_ctx *r, const char *device_id)
{
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < CLAIMS_IN_FLIGHT_MAX; i++) {
        if (strcmp(r->in_flight[i], device_id) == 0)
            r->in_flight[i][0] = '\0';
    }
    pthread_mutex_unlock(&r->mu);
}

static int in_flight_has(struct region_ctx *r, const char *device_id)
{
    int found = 0;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < CLAIMS_IN_FLIGHT_MAX; i++)
        found |= strcmp(r->in_flight[i], device_id) == 0;
    pthread_mutex_unlock(&r->mu);
    return found;
}

/* The body of the issue call. Built by hand into a buffer that is cleansed: every
 * field was validated (no character needs escaping except in the tenant name,
 * which jansson encodes), so no unwiped copy of the secret is left on the heap. */
static char *issue_body(struct hub *h, const struct region_claim *c, int64_t not_after)
{
    json_t *t = json_string(c->tenant);
    char *tenant = t ? phy_json_dumps(t, JSON_ENCODE_ANY) : NULL;
    json_decref(t);
    if (!tenant)
        return NULL;
    size_t cap = 512 + strlen(tenant) + strlen(h->cfg.public_endpoint);
    char *body = malloc(cap);
    if (body)
        snprintf(body, cap,
                 "{\"%s\":\"%s\",\"device_id\":\"%s\",\"device_secret\":\"%s\",\"tenant\":%s,"
                 "\"region\":\"%s\",\"endpoint\":\"%s\",\"not_after\":%lld,"
                 "\"serial_claims\":\"%s\"}",
                 c->serial ? "serial" : "code", c->serial ? c->serial : c->code, c->device_id,
                 c->secret, tenant, h->cfg.region, h->cfg.public_endpoint, (long long)not_after,
                 store_serial_claims_name(c->serial_claims));
    free(tenant);
    return body;
}

int region_claim(struct hub *h, const struct region_claim *c, struct store_device *dev,
                 int *outcome, struct api_response *res)
{
    struct region_ctx *r = h->region;
    struct phy_client_response ans = {0};
    char err[200] = "", code[64] = "", serial[PHY_SERIAL_MAX + 1] = "";
    int lost = 0, rc, result = 1;
    int64_t now = hub_now_ms();
    /* Every try of the call ends by the deadline (eu refuses the request after it);
     * the cancel entry falls due only a whole budget later (clock skew margin). */
    int64_t budget = (h->cfg.inter_region_timeout_s * 3000 + 1000) * h->cfg.inter_region_attempts;
    int64_t deadline = now + budget;
    struct store_claim_begin b = {
        .tenant_id = c->tenant_id,
        .user_id = c->user_id,
        .code = c->code,
        .device_id = c->device_id,
        .secret_hash = c->secret_hash,
        .name = c->name,
        .tags_json = c->tags_json,
        .serial = c->serial,
        .now_ms = now,
        .hold_ms = 2 * budget,
    };
    *outcome = STORE_OK;
    if (!in_flight_add(r, c->device_id)) {
        unavailable(h, res, "too many claims waiting for eu");
        return 1;
    }
    if (h->store_ops->claim_begin(h->store, &b, outcome) < 0 || *outcome != STORE_OK) {
        in_flight_remove(r, c->device_id);
        api_store_failed(res);
        return 1;
    }
    char *body = issue_body(h, c, deadline);
    if (!body) {
        h->store_ops->claim_abort(h->store, c->device_id);
        in_flight_remove(r, c->device_id);
        api_error(res, 500, "internal", "out of memory");
        return 1;
    }
    rc = eu_call(h, "POST", "/internal/v1/issuances", body, deadline, &ans, &lost, err,
                 sizeof err);
    OPENSSL_cleanse(body, strlen(body));
    free(body);

    if (rc < 0 || ans.status >= 500) {
        /* No answer. When nothing can have reached eu the claim is simply undone;
         * otherwise the outbox cancels it at eu first (it stays hidden meanwhile). */
        if (!lost)
            h->store_ops->claim_abort(h->store, c->device_id);
        phy_log(PHY_LOG_WARN, "claim_no_answer", "device_id=%s lost=%d err=\"%s\"",
                c->device_id, lost, err);
        unavailable(h, res, err);
        goto out;
    }
    if (ans.status == 201) {
        answer_field(&ans, "serial", serial, sizeof serial);
        if (!phy_serial_valid(serial, strlen(serial)) ||
            (c->serial && strcmp(serial, c->serial) != 0)) {
            /* eu accepted but named no usable serial: leave it to the outbox. */
            unavailable(h, res, "eu's answer names no valid serial");
            goto out;
        }
        if (h->store_ops->claim_confirm(h->store, c->device_id, serial, dev, outcome) < 0) {
            api_store_failed(res); /* the outbox completes or cancels it later */
            goto out;
        }
        if (*outcome != STORE_OK) { /* the row is gone: cannot happen while in flight */
            unavailable(h, res, "the claim's row disappeared");
            goto out;
        }
        result = 0;
        goto out;
    }
    /* eu refused: nothing was issued; undo the row and pass the refusal on. */
    h->store_ops->claim_abort(h->store, c->device_id);
    answer_field(&ans, "error", code, sizeof code);
    if (ans.status == 404 && strcmp(code, "expired_code") == 0)
        *outcome = STORE_EXPIRED_CODE;
    else if (ans.status == 404 && strcmp(code, "unknown_serial") == 0)
        *outcome = STORE_UNKNOWN_SERIAL;
    else if (ans.status == 409 && strcmp(code, "serial_in_use") == 0)
        *outcome = STORE_SERIAL_IN_USE;
    else if (ans.status == 409 && strcmp(code, "already_claimed") == 0)
        *outcome = STORE_ALREADY_CLAIMED;
    else if (ans.status == 409 && strcmp(code, "code_required") == 0)
        *outcome = STORE_CODE_REQUIRED;
    else if (ans.status == 410 && strcmp(code, "request_expired") == 0) {
        unavailable(h, res, "eu received the claim after its deadline");
        goto out;
    } else {
        phy_log(PHY_LOG_ERROR, "claim_refused_by_eu", "status=%d error=%s", ans.status,
                code[0] ? code : "-");
        api_error(res, 502, "provisioning_refused",
                  "the provisioning region refused this hub (check its inter-region key and "
                  "region)");
        goto out;
    }
    result = 0;
out:
    in_flight_remove(r, c->device_id);
    phy_client_response_free(&ans);
    return result;
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
    if (eu_call(h, method, path, body, 0, &ans, &lost, err, sizeof err) < 0 || ans.status >= 500) {
        done = -1;
        goto out;
    }
    switch (it->kind) {
    case OUTBOX_CANCEL:
        if (ans.status == 409) { /* delivered: the device is real, complete the claim */
            answer_field(&ans, "serial", serial, sizeof serial);
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
    if (h->cfg.provisioning || !rc)
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
        if (items[i].kind == OUTBOX_CANCEL && in_flight_has(rc, items[i].device_id))
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
