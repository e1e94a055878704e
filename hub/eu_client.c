/* A regional hub's client of eu's internal API: eu's address and key, calls with
 * retries, the claims waiting on eu. */
#include "eu_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pthread.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "phy/crypto.h"
#include "phy/err.h"
#include "phy/log.h"

#define RETRY_BASE_MS 200

struct eu_client {
    char host[256];
    unsigned port;
    char *auth; /* "Authorization: Bearer <key>\r\n", malloc'd, erased when freed */
    /* claims whose call to eu is running */
    pthread_mutex_t mu;
    char claims[EU_CLIENT_CLAIMS_MAX][PHY_DEVICE_ID_LEN + 1];
};

static int parse_url(struct eu_client *c, const char *url, char *err, size_t errcap)
{
    static const char scheme[] = "https://";
    char hostport[300];
    size_t n;
    if (strncmp(url, scheme, sizeof scheme - 1) != 0)
        goto bad;
    url += sizeof scheme - 1;
    n = strlen(url);
    if (n > 0 && url[n - 1] == '/')
        n--;
    if (n == 0 || n >= sizeof hostport || memchr(url, '/', n))
        goto bad;
    memcpy(hostport, url, n);
    hostport[n] = '\0';
    if (phy_client_parse_hostport(hostport, c->host, sizeof c->host, &c->port, 443) != 0)
        goto bad;
    return 0;
bad:
    if (err && errcap)
        snprintf(err, errcap, "--provisioning-url %s: %s", url, "expected https://HOST[:PORT]");
    return PHY_EINVAL;
}

int eu_client_new(const char *url, struct eu_client **out, char *err, size_t errcap)
{
    struct eu_client *c = calloc(1, sizeof *c);
    int rc;
    *out = NULL;
    if (!c)
        return PHY_ENOMEM;
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c);
        return PHY_EIO;
    }
    if ((rc = parse_url(c, url, err, errcap))) {
        eu_client_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

static void auth_free(struct eu_client *c)
{
    if (c->auth) {
        OPENSSL_cleanse(c->auth, strlen(c->auth));
        free(c->auth);
        c->auth = NULL;
    }
}

int eu_client_set_key(struct eu_client *c, const char *key)
{
    size_t cap = sizeof "Authorization: Bearer \r\n" + strlen(key);
    auth_free(c);
    if (!(c->auth = malloc(cap)))
        return PHY_ENOMEM;
    snprintf(c->auth, cap, "Authorization: Bearer %s\r\n", key);
    return 0;
}

void eu_client_free(struct eu_client *c)
{
    if (!c)
        return;
    auth_free(c);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

void eu_client_answer_field(const struct phy_client_response *res, const char *key, char *out,
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
    eu_client_answer_field(res, "error", code, sizeof code);
    return strcmp(code, "store_unavailable") == 0;
}

int eu_client_call(struct hub *h, const char *method, const char *path, const char *body,
                   int64_t deadline_ms, struct phy_client_response *res, int *lost, char *err,
                   size_t errcap)
{
    const struct eu_client *c = h->eu;
    struct phy_client_opts o = {
        .host = c->host,
        .port = c->port,
        .ca_file = h->cfg.ca_file,
        .timeout_ms = (int)(h->cfg.inter_region_timeout_s * 1000),
    };
    int rc = PHY_EIO;
    long attempts = h->cfg.inter_region_attempts > 0 ? h->cfg.inter_region_attempts : 1;
    *lost = 0;
    for (long i = 0; i < attempts; i++) {
        if (i > 0) {
            long pause = RETRY_BASE_MS << (i - 1 < 6 ? i - 1 : 6);
            if (deadline_ms && hub_now_ms() + pause >= deadline_ms)
                break;
            sleep_ms(pause);
        }
        rc = phy_client_request(&o, method, path, c->auth, body ? "application/json" : NULL, body,
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
    return rc;
}

int eu_client_claim_hold(struct eu_client *c, const char *device_id)
{
    int ok = 0;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < EU_CLIENT_CLAIMS_MAX && !ok; i++) {
        if (!c->claims[i][0]) {
            memcpy(c->claims[i], device_id, PHY_DEVICE_ID_LEN + 1);
            ok = 1;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return ok;
}

void eu_client_claim_release(struct eu_client *c, const char *device_id)
{
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < EU_CLIENT_CLAIMS_MAX; i++) {
        if (strcmp(c->claims[i], device_id) == 0)
            c->claims[i][0] = '\0';
    }
    pthread_mutex_unlock(&c->mu);
}

int eu_client_claim_held(struct eu_client *c, const char *device_id)
{
    int found = 0;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < EU_CLIENT_CLAIMS_MAX; i++)
        found |= strcmp(c->claims[i], device_id) == 0;
    pthread_mutex_unlock(&c->mu);
    return found;
}
