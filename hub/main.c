/* phyhub: the regional hub daemon (provisioning, console API) and its admin commands. */
#include <argon2.h>
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <uv.h>

#include "backup.h"
#include "handlers.h"
#include "hub.h"
#include "lifecycle.h"
#include "region.h"
#include "tickets.h"
#include "rules.h"
#include "phy/json.h"
#include "phy/buildinfo.h"
#include "phy/config.h"
#include "phy/crypto.h"
#include "phy/err.h"
#include "phy/file.h"
#include "phy/log.h"
#include "seal.h"
#include "serials.h"
#include "modes.h"
#include "server.h"

#define PASSWORD_MAX 1024
#define PASSWORD_MIN 8

#ifndef PHY_WEB_ROOT
#define PHY_WEB_ROOT "web" /* CMake sets the source tree's web/ */
#endif
#ifndef PHY_WEB_ROOT_REL
#define PHY_WEB_ROOT_REL "../share/phystack/web" /* CMake: from SBINDIR to DATADIR/phystack/web */
#endif

static struct hub g_hub; /* the daemon's one hub; main owns it */
static struct server *g_server;

/* jansson's free for the whole hub: request bodies and issuances carry device
 * secrets, so every block jansson releases is wiped first. */
static void json_free_wiped(void *p)
{
    if (p) {
        OPENSSL_cleanse(p, malloc_usable_size(p));
        free(p);
    }
}

static void config_defaults(struct hub_config *c)
{
    memset(c, 0, sizeof(*c));
    c->db_pool = 8;
    c->code_ttl_s = 300;
    c->poll_interval_s = 5;
    c->max_poll_interval_s = 60;
    c->issuance_grace_s = 60;
    c->remote_issuance_max_age_s = 30L * 86400;
    c->registration_idle_s = 600;
    c->header_timeout_s = 10;
    c->keepalive_s = 30;
    c->drain_s = 10;
    c->max_handshakes = 512;
    c->max_body = 16384;
    c->max_connections = 10000;
    c->register_rate = 5;
    c->register_burst = 100;
    c->max_registrations = 100000;
    c->max_streams_per_tenant = 64;
    c->device_share = 20;
    c->max_idle_per_source = 16;
    c->sweep_interval_s = 30;
    c->node_heartbeat_s = 5;
    c->node_timeout_s = 30;
    c->seal_epoch_s = 900;
    c->claim_user_limit = 10;
    c->claim_tenant_limit = 100;
    c->claim_window_s = 900;
    c->ping_interval_s = 30;
    c->ping_timeout_s = 60;
    c->device_msg_rate = 20;
    c->inter_region_timeout_s = 5;
    c->inter_region_attempts = 3;
    c->session_idle_s = 1800;
    c->session_max_s = 43200;
    c->login_user_limit = 5;
    c->login_tenant_limit = 50;
    c->login_window_s = 900;
    c->login_peer_limit = 30;
    c->audit_keep_days = 365;
}

static void print_help(const struct phy_opt *opts)
{
    printf("usage: phyhub [options]            run the hub\n"
           "       phyhub admin --db PATH tenant-add NAME --region R\n"
           "       phyhub admin --db PATH user-add TENANT USER   (password on stdin)\n"
           "       phyhub admin --db PATH token-add TENANT USER [--expires-days N]\n"
           "                    (prints an API token; 90 days unless N, 0 = never)\n"
           "       phyhub admin --db PATH token-list TENANT\n"
           "       phyhub admin --db PATH token-revoke TENANT TOKEN_ID\n"
           "       phyhub admin --db PATH user-remove TENANT USER  (its tokens and sessions too)\n"
           "       phyhub admin --db PATH user-passwd TENANT USER  (password on stdin)\n"
           "       phyhub admin --db PATH tenant-set NAME --serial-claims attested|any\n"
           "       phyhub admin --db PATH serials-import FILE   (CSV: serial,public key)\n"
           "       phyhub admin --db PATH device-add-bulk N --tenant T [--tag K:V]\n"
           "       phyhub admin migrate-store --from PATH --to postgresql://...  (empty target)\n"
           "                    (load tests: N provisioned devices, credentials as JSON lines)\n"
           "       phyhub admin key-new FILE   (a new inter-region key, mode 0600)\n"
           "       phyhub admin ticket-key-rotate FILE   (--tls-ticket-keys: a new key first,\n"
           "                    the one before kept for tickets already out; creates FILE)\n"
           "       phyhub admin --db PATH backup FILE   (copy of the live SQLite store)\n\n"
           "options (each also a key in the --config INI file):\n");
    phy_config_print_help(opts, stdout);
}

static int open_store(struct hub *h)
{
    char err[256] = "";
    h->store_ops = &store_ops;
    if (!h->cfg.db) {
        fprintf(stderr, "phyhub: --db is required\n");
        return -1;
    }
    struct store_engine_opts eo = {.pool_size = (int)h->cfg.db_pool};
    if (store_open_opts(h->cfg.db, &eo, &h->store, err, sizeof(err)) < 0) {
        /* err names a file store's path; a URL is not echoed (it may hold a password). */
        fprintf(stderr, "phyhub: cannot open store: %s\n", err);
        return -1;
    }
    return 0;
}

/* Reads the password from stdin: one line, without its newline. */
static int read_password(char *out, size_t cap)
{
    if (!fgets(out, (int)cap, stdin)) {
        fprintf(stderr, "phyhub: expected the password on stdin\n");
        return -1;
    }
    size_t n = strlen(out);
    if (n > 0 && out[n - 1] == '\n')
        out[--n] = '\0';
    else if (!feof(stdin)) {
        fprintf(stderr, "phyhub: password longer than %d bytes\n", PASSWORD_MAX - 2);
        return -1;
    }
    if (n > 0 && out[n - 1] == '\r')
        out[--n] = '\0';
    if (n < PASSWORD_MIN) {
        fprintf(stderr, "phyhub: password shorter than %d characters\n", PASSWORD_MIN);
        return -1;
    }
    return 0;
}

/* The exit code of an admin store call that returned rc with outcome, with a message
 * for every failure (the store's own, e.g. its database unreachable, too). */
/* rc and *outcome of one store call; outcome is read here, after the call (an
 * argument read beside the call could be read before it). */
static int admin_outcome(int rc, const int *outcome_p, const char *what)
{
    int outcome = *outcome_p;
    if (rc < 0) {
        fprintf(stderr, "phyhub: %s: the store failed (%s)\n", what, phy_strerror(rc));
        return 1;
    }
    switch (outcome) {
    case STORE_OK:
        return 0;
    case STORE_EXISTS:
        fprintf(stderr, "phyhub: %s already exists\n", what);
        return 1;
    case STORE_NOT_FOUND:
        fprintf(stderr, "phyhub: no such tenant or user for %s\n", what);
        return 1;
    default:
        fprintf(stderr, "phyhub: %s failed (outcome %d)\n", what, outcome);
        return 1;
    }
}

#define BULK_MAX 1000000

/* Creates N provisioned devices for load tests and prints their credentials as
 * JSON lines on stdout (the only place the secrets ever appear). */
static int admin_device_add_bulk(const struct phy_store_ops *ops, const char *count,
                                 const char *tenant, const char *tag)
{
    char *end, tags[160], prefix[17];
    unsigned char rnd[8];
    long n = strtol(count, &end, 10);
    int rc = 1, outcome = 0;
    if (*end || end == count || n < 1 || n > BULK_MAX) {
        fprintf(stderr, "phyhub admin: device-add-bulk N: N must be 1..%d\n", BULK_MAX);
        return 2;
    }
    if (!tenant) {
        fprintf(stderr, "phyhub admin: device-add-bulk needs --tenant\n");
        return 2;
    }
    const char *colon = tag ? strchr(tag, ':') : NULL;
    if (tag && (!colon || colon == tag || strlen(colon + 1) == 0 || strlen(tag) > 100 ||
                strpbrk(tag, "\"\\") != NULL)) {
        fprintf(stderr, "phyhub admin: --tag must be K:V\n");
        return 2;
    }
    if (tag)
        snprintf(tags, sizeof(tags), "{\"%.*s\":\"%s\"}", (int)(colon - tag), tag, colon + 1);
    else
        snprintf(tags, sizeof(tags), "{\"fleet\":\"bulk\"}");
    struct bulk {
        char id[PHY_DEVICE_ID_LEN + 1], secret[PHY_TOKEN_LEN + 1], hash[PHY_HASH_HEX_LEN + 1];
        char serial[40];
    } *b = calloc((size_t)n, sizeof(*b));
    struct store_new_device *d = calloc((size_t)n, sizeof(*d));
    if (!b || !d || phy_random_bytes(rnd, sizeof(rnd)) < 0)
        goto out;
    snprintf(prefix, sizeof(prefix), "%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
             rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    for (long i = 0; i < n; i++) {
        if (phy_device_id_new(b[i].id) < 0 || phy_token_new(b[i].secret) < 0 ||
            phy_sha256_hex(b[i].secret, PHY_TOKEN_LEN, b[i].hash) < 0)
            goto out;
        snprintf(b[i].serial, sizeof(b[i].serial), "BULK-%s-%ld", prefix, i);
        d[i] = (struct store_new_device){b[i].id, b[i].serial, b[i].hash, tags};
    }
    if (admin_outcome(ops->devices_add_bulk(g_hub.store, tenant, d, (size_t)n, hub_now_ms(),
                                            &outcome),
                      &outcome, "device-add-bulk") != 0)
        goto out;
    for (long i = 0; i < n; i++)
        printf("{\"device_id\":\"%s\",\"device_secret\":\"%s\",\"serial\":\"%s\","
               "\"tenant\":\"%s\"}\n",
               b[i].id, b[i].secret, b[i].serial, tenant);
    rc = fflush(stdout) == 0 ? 0 : 1;
out:
    if (b)
        OPENSSL_cleanse(b, (size_t)n * sizeof(*b));
    free(b);
    free(d);
    return rc;
}

/* Copies the store at from into the empty store at to (both opened, and created or
 * migrated to this build's schema). 0, 1 on failure, 2 on bad arguments. */
static int admin_migrate_store(const char *from, const char *to)
{
    struct store *src = NULL, *dst = NULL;
    char err[256] = "", report[512] = "";
    int rc = 1;
    if (!from || !to) {
        fprintf(stderr, "phyhub admin: migrate-store needs --from PATH and --to URL\n");
        return 2;
    }
    if (store_open_opts(from, NULL, &src, err, sizeof err) < 0) {
        fprintf(stderr, "phyhub admin: cannot open the source store: %s\n", err);
        return 1;
    }
    if (store_open_opts(to, NULL, &dst, err, sizeof err) < 0) {
        fprintf(stderr, "phyhub admin: cannot open the target store: %s\n", err);
        goto out;
    }
    if (store_copy(src, dst, report, sizeof report, err, sizeof err) < 0) {
        fprintf(stderr, "phyhub admin: migrate-store: %s; the target is unchanged\n", err);
        goto out;
    }
    printf("copied %s store into %s store: %s\n", store_engine_name(src),
           store_engine_name(dst), report);
    rc = 0;
out:
    store_ops.close(dst);
    store_ops.close(src);
    return rc;
}

#define SERIALS_FILE_MAX (256u << 20)

/* Imports the CSV at path of attested serials, all or none. */
static int admin_serials_import(const struct phy_store_ops *ops, const char *path)
{
    struct store_serial_key *v = NULL;
    char *text = NULL, err[256];
    size_t len = 0, n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 1;
    if (fd < 0) {
        fprintf(stderr, "phyhub admin: %s: %s\n", path, strerror(errno));
        return 1;
    }
    if (phy_read_regular(fd, SERIALS_FILE_MAX, &text, &len) != 0) {
        fprintf(stderr, "phyhub admin: %s: not a regular file of at most 256 MiB\n", path);
        goto out;
    }
    if (strlen(text) != len) {
        fprintf(stderr, "phyhub admin: %s: holds a NUL byte\n", path);
        goto out;
    }
    if (serials_csv_parse(text, &v, &n, err, sizeof err) != 0) {
        fprintf(stderr, "phyhub admin: %s: %s (nothing imported)\n", path, err);
        goto out;
    }
    int r = ops->serials_import(g_hub.store, v, n, hub_now_ms());
    if (r < 0) {
        fprintf(stderr, "phyhub admin: serials-import: the store failed (%s)\n", phy_strerror(r));
        goto out;
    }
    printf("%zu attested serials imported\n", n);
    rc = 0;
out:
    close(fd);
    serials_free(v, n);
    free(text);
    return rc;
}

/* An administrator's change in the tenant's audit log (actor id 0: the command
 * line). detail is stolen. A failure is reported and does not undo the change. */
static void admin_audit(const struct phy_store_ops *ops, const char *tenant, const char *action,
                        json_t *detail)
{
    int64_t tid = 0;
    int outcome = STORE_NOT_FOUND;
    char *text = detail ? phy_json_dumps(detail, JSON_COMPACT) : NULL;
    json_decref(detail);
    if (ops->tenant_lookup(g_hub.store, tenant, &tid, &outcome) < 0 || outcome != STORE_OK ||
        ops->audit_add(g_hub.store, tid, 0, hub_now_ms(), action, NULL, text) < 0)
        fprintf(stderr, "phyhub admin: warning: the audit log did not record %s\n", action);
    free(text);
}

static int admin_token_list(const struct phy_store_ops *ops, const char *tenant)
{
    struct store_token *v = NULL;
    size_t n = 0;
    int64_t tid = 0, now = hub_now_ms();
    int outcome = STORE_NOT_FOUND;
    int rc = admin_outcome(ops->tenant_lookup(g_hub.store, tenant, &tid, &outcome), &outcome,
                           "tenant");
    if (rc != 0)
        return rc;
    if (ops->token_list(g_hub.store, tid, &v, &n) < 0) {
        fprintf(stderr, "phyhub admin: the store failed\n");
        return 1;
    }
    printf("%-12s  %-20s  %-20s  %s\n", "ID", "USER", "CREATED", "EXPIRES");
    for (size_t i = 0; i < n; i++) {
        char created[32], expires[32] = "never";
        api_rfc3339(v[i].created_ms, created);
        if (v[i].expires_ms > 0)
            api_rfc3339(v[i].expires_ms, expires);
        printf("%-12s  %-20s  %-20s  %s%s\n", v[i].id, v[i].user, created, expires,
               v[i].expires_ms > 0 && v[i].expires_ms <= now ? " (expired)" : "");
    }
    free(v);
    return 0;
}

static int admin_main(int argc, char **argv)
{
    char *db = NULL, *region = NULL, *tenant = NULL, *tag = NULL, *from = NULL, *to = NULL,
         *serial_claims = NULL;
    long expires_days = API_TOKEN_DAYS_DEFAULT;
    int help = 0;
    const struct phy_opt opts[] = {
        {"db", PHY_OPT_STR, &db, 0, 0,
         "store: a SQLite file, or postgresql://[user@]host[:port]/dbname (required)"},
        {"from", PHY_OPT_STR, &from, 0, 0, "migrate-store: the store to copy (a SQLite file)"},
        {"to", PHY_OPT_STR, &to, 0, 0, "migrate-store: the empty target (postgresql://...)"},
        {"tenant", PHY_OPT_STR, &tenant, 0, 0, "tenant for device-add-bulk"},
        {"tag", PHY_OPT_STR, &tag, 0, 0, "K:V tag for device-add-bulk (default fleet:bulk)"},
        {"region", PHY_OPT_STR, &region, 0, 0, "tenant's region for tenant-add (eu, au, uae, ...)"},
        {"expires-days", PHY_OPT_INT, &expires_days, 0, API_TOKEN_DAYS_MAX,
         "token-add: days until the token expires, 0 = never (90)"},
        {"serial-claims", PHY_OPT_STR, &serial_claims, 0, 0,
         "tenant-set: claims by serial of 'attested' serials only (the default), or of 'any' "
         "serial (whoever registered it first gets the credentials)"},
        {0},
    };
    char *pos[4];
    size_t npos = 0;
    char err[256];
    int rc = 2, outcome = 0;
    /* --config may name the daemon's own file (its db, and its region as tenant-add's
     * default): the hub's other keys are skipped. */
    if (phy_config_parse_ex(opts, PHY_CONFIG_SHARED_FILE, argc, argv, 2, pos, 4, &npos, &help, err,
                            sizeof(err)) < 0) {
        fprintf(stderr, "phyhub admin: %s\n", err);
        goto out;
    }
    if (help || npos == 0) {
        print_help(opts);
        rc = help ? 0 : 2;
        goto out;
    }
    if (strcmp(pos[0], "key-new") == 0) {
        if (npos != 2) {
            fprintf(stderr, "phyhub admin: key-new FILE\n");
            goto out;
        }
        rc = region_key_new(pos[1], err, sizeof(err)) < 0 ? 1 : 0;
        if (rc)
            fprintf(stderr, "phyhub admin: %s\n", err);
        else
            printf("inter-region key written to %s\n", pos[1]);
        goto out;
    }
    if (strcmp(pos[0], "ticket-key-rotate") == 0) {
        if (npos != 2) {
            fprintf(stderr, "phyhub admin: ticket-key-rotate FILE\n");
            goto out;
        }
        rc = ticket_keys_rotate(pos[1], err, sizeof(err)) < 0 ? 1 : 0;
        if (rc)
            fprintf(stderr, "phyhub admin: %s\n", err);
        else
            printf("ticket key rotated in %s\n", pos[1]);
        goto out;
    }
    if (strcmp(pos[0], "backup") == 0) {
        if (npos != 2 || !db) {
            fprintf(stderr, "phyhub admin: --db PATH backup FILE\n");
            goto out;
        }
        rc = hub_backup_sqlite(db, pos[1], err, sizeof(err)) < 0 ? 1 : 0;
        if (rc)
            fprintf(stderr, "phyhub admin: backup: %s\n", err);
        else
            printf("backup of %s written to %s\n", db, pos[1]);
        goto out;
    }
    if (strcmp(pos[0], "migrate-store") == 0) {
        rc = npos == 1 ? admin_migrate_store(from, to) : 2;
        if (npos != 1)
            fprintf(stderr, "phyhub admin: migrate-store --from PATH --to URL\n");
        goto out;
    }
    g_hub.cfg.db = db;
    if (open_store(&g_hub) < 0) {
        rc = 1;
        goto out;
    }
    const struct phy_store_ops *ops = g_hub.store_ops;
    if (strcmp(pos[0], "tenant-add") == 0 && npos == 2) {
        if (!region || !region_name_valid(region)) {
            fprintf(stderr, "phyhub admin: tenant-add needs --region R (1-15 of a-z 0-9 -)\n");
            goto out_close;
        }
        rc = admin_outcome(ops->tenant_add(g_hub.store, pos[1], region, &outcome), &outcome,
                           "tenant");
        if (rc == 0)
            printf("tenant %s added in region %s\n", pos[1], region);
    } else if (strcmp(pos[0], "user-add") == 0 && npos == 3) {
        char pw[PASSWORD_MAX], encoded[256];
        rc = 1;
        if (read_password(pw, sizeof(pw)) == 0 &&
            login_hash_password(pw, strlen(pw), encoded, sizeof(encoded)) == 0) {
            rc = admin_outcome(ops->user_add(g_hub.store, pos[1], pos[2], encoded, &outcome),
                               &outcome, "user");
            if (rc == 0)
                printf("user %s added to tenant %s\n", pos[2], pos[1]);
        }
        OPENSSL_cleanse(pw, sizeof(pw));
    } else if (strcmp(pos[0], "token-add") == 0 && npos == 3) {
        char token[PHY_TOKEN_LEN + 1], hash[PHY_HASH_HEX_LEN + 1];
        rc = 1;
        if (phy_token_new(token) == 0 && phy_sha256_hex(token, PHY_TOKEN_LEN, hash) == 0) {
            int64_t now = hub_now_ms();
            rc = admin_outcome(ops->token_add(g_hub.store, pos[1], pos[2], hash, now,
                                              expires_days ? now + expires_days * 86400000LL : 0,
                                              &outcome),
                               &outcome, "token");
            if (rc == 0) {
                printf("%s\n", token); /* shown once; only its hash is stored */
                char id[STORE_TOKEN_ID_LEN + 1];
                memcpy(id, hash, STORE_TOKEN_ID_LEN);
                id[STORE_TOKEN_ID_LEN] = '\0';
                admin_audit(ops, pos[1], "token.create",
                            json_pack("{s:s, s:s, s:I}", "id", id, "user", pos[2],
                                      "expires_in_days", (json_int_t)expires_days));
            }
        }
        OPENSSL_cleanse(token, sizeof(token));
    } else if (strcmp(pos[0], "token-list") == 0 && npos == 2) {
        rc = admin_token_list(ops, pos[1]);
    } else if (strcmp(pos[0], "token-revoke") == 0 && npos == 3) {
        int64_t tid = 0, owner = 0;
        rc = admin_outcome(ops->tenant_lookup(g_hub.store, pos[1], &tid, &outcome), &outcome,
                           "tenant");
        if (rc == 0)
            rc = admin_outcome(ops->token_revoke(g_hub.store, tid, pos[2], &owner, &outcome),
                               &outcome, "token");
        if (rc == 0) {
            printf("token %s of tenant %s revoked\n", pos[2], pos[1]);
            admin_audit(ops, pos[1], "token.revoke",
                        json_pack("{s:s, s:I}", "id", pos[2], "owner_id", (json_int_t)owner));
        }
    } else if (strcmp(pos[0], "user-remove") == 0 && npos == 3) {
        int64_t tid = 0, uid = 0;
        rc = admin_outcome(ops->user_remove(g_hub.store, pos[1], pos[2], &tid, &uid, &outcome),
                           &outcome, "user");
        if (rc == 0) {
            printf("user %s removed from tenant %s (with its tokens and sessions)\n", pos[2],
                   pos[1]);
            admin_audit(ops, pos[1], "user.remove", json_pack("{s:s}", "user", pos[2]));
        }
    } else if (strcmp(pos[0], "user-passwd") == 0 && npos == 3) {
        char pw[PASSWORD_MAX], encoded[256];
        int64_t tid = 0, uid = 0;
        rc = 1;
        if (read_password(pw, sizeof(pw)) == 0 &&
            login_hash_password(pw, strlen(pw), encoded, sizeof(encoded)) == 0) {
            rc = admin_outcome(ops->user_set_password(g_hub.store, pos[1], pos[2], encoded, NULL,
                                                      &tid, &uid, &outcome),
                               &outcome, "user");
            if (rc == 0) {
                printf("password of %s in tenant %s set; its console sessions ended\n", pos[2],
                       pos[1]);
                admin_audit(ops, pos[1], "user.password", json_pack("{s:s}", "user", pos[2]));
            }
        }
        OPENSSL_cleanse(pw, sizeof(pw));
        OPENSSL_cleanse(encoded, sizeof(encoded));
    } else if (strcmp(pos[0], "tenant-set") == 0 && npos == 2) {
        int policy;
        if (store_serial_claims_parse(serial_claims, &policy) != 0) {
            fprintf(stderr, "phyhub admin: tenant-set needs --serial-claims attested|any\n");
            goto out_close;
        }
        rc = admin_outcome(ops->tenant_serial_claims_set(g_hub.store, pos[1], policy, &outcome),
                           &outcome, "tenant");
        if (rc == 0)
            printf("tenant %s: claims by serial of %s serials\n", pos[1],
                   store_serial_claims_name(policy));
    } else if (strcmp(pos[0], "serials-import") == 0 && npos == 2) {
        rc = admin_serials_import(ops, pos[1]);
    } else if (strcmp(pos[0], "device-add-bulk") == 0 && npos == 2) {
        rc = admin_device_add_bulk(ops, pos[1], tenant, tag);
    } else {
        fprintf(stderr, "phyhub admin: unknown command or wrong arguments (see --help)\n");
    }
out_close:
    ops->close(g_hub.store);
out:
    phy_config_free(opts);
    return rc;
}

int main(int argc, char **argv)
{
    phy_log_init("phyhub", PHY_LOG_INFO);
    signal(SIGPIPE, SIG_IGN);
    json_set_alloc_funcs(malloc, json_free_wiped);
    if (phy_buildinfo_wanted(argc, argv, 1)) {
        phy_buildinfo_print("phyhub", stdout);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "admin") == 0)
        return admin_main(argc, argv);

    struct hub_config *c = &g_hub.cfg;
    config_defaults(c);
    int help = 0, debug = 0;
    char *log_format = NULL;
    enum phy_log_format log_fmt;
    const struct phy_opt opts[] = {
        {"region", PHY_OPT_STR, &c->region, 0, 0, "this hub's region (default eu)"},
        {"listen", PHY_OPT_STR, &c->listen, 0, 0,
         "ADDR:PORT to serve HTTPS on (default 0.0.0.0:443)"},
        {"db", PHY_OPT_STR, &c->db, 0, 0,
         "store: a SQLite file, or postgresql://[user@]host[:port]/dbname; the password "
         "comes from PGPASSFILE, ~/.pgpass or PGPASSWORD (required)"},
        {"db-pool", PHY_OPT_INT, &c->db_pool, 1, 64, "PostgreSQL connections of this hub (8)"},
        {"key-file", PHY_OPT_STR, &c->key_file, 0, 0,
         "AES-256 key for pending issuances, created 0600 at first start (default <db>.key; "
         "required with PostgreSQL)"},
        {"seal-ratchet", PHY_OPT_STR, &c->seal_ratchet, 0, 0,
         "seal ratchet file, created 0600 at first start; every hub node of one store needs a "
         "copy of the same file (default <key file>.ratchet)"},
        {"seal-epoch", PHY_OPT_INT, &c->seal_epoch_s, 1, 86400,
         "seal key epoch, s: a purged issuance is unreadable everywhere (database, WAL, "
         "backups) within 3 epochs (900)"},
        {"tls-cert", PHY_OPT_STR, &c->tls_cert, 0, 0, "PEM certificate chain (required)"},
        {"tls-key", PHY_OPT_STR, &c->tls_key, 0, 0, "PEM private key (required)"},
        {"tls-ticket-keys", PHY_OPT_STR, &c->tls_ticket_keys, 0, 0,
         "TLS session-ticket key file, mode 0600, the same on every node of a region "
         "(phyhub admin ticket-key-rotate): devices resume their TLS session after a "
         "restart or on another node; re-read when it changes. Unset: no tickets"},
        {"provisioning", PHY_OPT_BOOL, &c->provisioning, 0, 0, "serve the provisioning API (eu)"},
        {"public-endpoint", PHY_OPT_STR, &c->public_endpoint, 0, 0,
         "HOST:PORT devices are sent to (default portal-<region>.phystack.com:443)"},
        {"code-ttl", PHY_OPT_INT, &c->code_ttl_s, 1, 86400, "provisioning code lifetime, s (300)"},
        {"poll-interval", PHY_OPT_INT, &c->poll_interval_s, 1, 3600, "device poll interval, s (5)"},
        {"max-poll-interval", PHY_OPT_INT, &c->max_poll_interval_s, 1, 3600,
         "cap of the interval after slow_down, s (60)"},
        {"remote-issuance-max-age", PHY_OPT_INT, &c->remote_issuance_max_age_s, 0, 315360000,
         "eu: another region's issuance nobody fetched is ended after this, s; 0 never "
         "(2592000)"},
        {"issuance-grace", PHY_OPT_INT, &c->issuance_grace_s, 1, 86400,
         "window in which a delivered issuance is resent to the same poll token, s (60)"},
        {"registration-idle", PHY_OPT_INT, &c->registration_idle_s, 1, 604800,
         "a registration lapses after this long without a request, s (600)"},
        {"header-timeout", PHY_OPT_INT, &c->header_timeout_s, 1, 600,
         "TLS handshake + request must arrive within, s (10)"},
        {"keepalive", PHY_OPT_INT, &c->keepalive_s, 1, 3600,
         "idle keep-alive connection timeout, s (30)"},
        {"max-handshakes", PHY_OPT_INT, &c->max_handshakes, 8, 100000,
         "TLS handshakes in flight; past it a client that has spoken waits its turn "
         "(no TLS state, deadline paused); silent connections take no slot (512)"},
        {"drain-time", PHY_OPT_INT, &c->drain_s, 0, 600,
         "on SIGTERM: wait at most this long for requests in flight, and spread the "
         "devices' reconnects over as long (close 1001 with a delay each), s (10)"},
        {"max-body", PHY_OPT_INT, &c->max_body, 256, 1048576, "request body limit, bytes (16384)"},
        {"max-connections", PHY_OPT_INT, &c->max_connections, 1, 1000000,
         "concurrent connections; up to 1/8 more are answered 503 with Retry-After, "
         "further ones closed (10000)"},
        {"sweep-interval", PHY_OPT_INT, &c->sweep_interval_s, 1, 3600,
         "housekeeping period: lapsed registrations, purged issuances, s (30)"},
        {"node-id", PHY_OPT_STR, &c->node_id, 0, 0,
         "this node's name among the hubs on one store, 1-64 of [A-Za-z0-9._:-] "
         "(default: host name:listen port)"},
        {"node-heartbeat", PHY_OPT_INT, &c->node_heartbeat_s, 1, 3600,
         "how often this node tells the store it is alive, s (5)"},
        {"node-timeout", PHY_OPT_INT, &c->node_timeout_s, 2, 86400,
         "a node silent this long is dead: another node ends its devices' sessions and "
         "takes over its singleton jobs, s (30; more than twice --node-heartbeat)"},
        {"claim-user-limit", PHY_OPT_INT, &c->claim_user_limit, 1, 100000,
         "failed claims per user per window before 429 (10)"},
        {"claim-tenant-limit", PHY_OPT_INT, &c->claim_tenant_limit, 1, 1000000,
         "failed claims per tenant per window before 429 (100)"},
        {"claim-window", PHY_OPT_INT, &c->claim_window_s, 1, 86400, "failed-claim window, s (900)"},
        {"ping-interval", PHY_OPT_INT, &c->ping_interval_s, 1, 3600,
         "device sessions: ping period, s (30)"},
        {"ping-timeout", PHY_OPT_INT, &c->ping_timeout_s, 1, 7200,
         "device sessions: close after this long without a frame or pong, s (60)"},
        {"device-msg-rate", PHY_OPT_INT, &c->device_msg_rate, 1, 10000,
         "messages per second per device before rate_limited (20)"},
        {"provisioning-url", PHY_OPT_STR, &c->provisioning_url, 0, 0,
         "hubs without --provisioning: eu's inter-region API, https://HOST[:PORT]"},
        {"inter-region-key-file", PHY_OPT_STR, &c->inter_region_key_file, 0, 0,
         "hubs without --provisioning: this region's key for eu (mode 0600)"},
        {"ca", PHY_OPT_STR, &c->ca_file, 0, 0,
         "PEM bundle that verifies eu's certificate (default: the system store)"},
        {"peer", PHY_OPT_LIST, &c->peers, 0, 0,
         "eu only, repeatable: REGION=KEYFILE[,HOST:PORT], the key a regional hub calls with "
         "and the only endpoint its issuances may name (default portal-REGION.phystack.com:443)"},
        {"importer", PHY_OPT_LIST, &c->importers, 0, 0,
         "eu only, repeatable: NAME=KEYFILE, a manufacturer's key for POST /internal/v1/serials "
         "(attested serials as CSV; make keys with phyhub admin key-new)"},
        {"inter-region-timeout", PHY_OPT_INT, &c->inter_region_timeout_s, 1, 120,
         "calls to eu: timeout per connect/read/write, s (5)"},
        {"inter-region-attempts", PHY_OPT_INT, &c->inter_region_attempts, 1, 10,
         "calls to eu: tries on transport failures and 5xx (3)"},
        {"web-root", PHY_OPT_STR, &c->web_root, 0, 0,
         "folder of the console's static files (default: DATADIR/phystack/web of the "
         "installation the binary is in, else the source tree's web/)"},
        {"session-idle", PHY_OPT_INT, &c->session_idle_s, 1, 604800,
         "console login sessions end after this long without a request, s (1800)"},
        {"session-max", PHY_OPT_INT, &c->session_max_s, 1, 2592000,
         "console login sessions end this long after the login, s (43200)"},
        {"login-user-limit", PHY_OPT_INT, &c->login_user_limit, 1, 100000,
         "failed logins per tenant and user per window before 429 (5)"},
        {"login-tenant-limit", PHY_OPT_INT, &c->login_tenant_limit, 1, 1000000,
         "failed logins per tenant per window before 429 (50)"},
        {"login-window", PHY_OPT_INT, &c->login_window_s, 1, 86400, "failed-login window, s (900)"},
        {"login-peer-limit", PHY_OPT_INT, &c->login_peer_limit, 1, 1000000,
         "failed logins per client address per window before 429 (30)"},
        {"audit-keep-days", PHY_OPT_INT, &c->audit_keep_days, 0, 36500,
         "audit records are deleted after this many days, 0 keeps them (365)"},
        {"metrics-allow", PHY_OPT_LIST, &c->metrics_allow, 0, 0,
         "CIDR[,CIDR…] addresses that may read /metrics (repeatable; default 127.0.0.0/8,::1)"},
        {"trusted-proxy", PHY_OPT_LIST, &c->trusted_proxies, 0, 0,
         "CIDR[,CIDR…] addresses of phyproxy instances whose PROXY v2 header (the client's "
         "address and identifier) is believed (repeatable; default none)"},
        {"proxy-key", PHY_OPT_STR, &c->proxy_key, 0, 0,
         "KID=FILE key shared with the proxies, created 0600 at first start: issued "
         "credentials carry the device's proxy token (default none)"},
        {"register-rate", PHY_OPT_INT, &c->register_rate, 0, 100000,
         "registrations and code requests per second per source address (the client's, "
         "from a trusted proxy's header), then 429; 0 = no limit (5)"},
        {"register-burst", PHY_OPT_INT, &c->register_burst, 1, 1000000,
         "burst of registrations and code requests per source address (100)"},
        {"max-registrations", PHY_OPT_INT, &c->max_registrations, 0, 100000000,
         "live registrations the store may hold, then 503 registrations_full; 0 = no cap "
         "(100000)"},
        {"device-share", PHY_OPT_INT, &c->device_share, 0, 90,
         "percent of --max-connections only device sessions may use: other requests get 503 "
         "when the rest is taken (20)"},
        {"max-idle-per-source", PHY_OPT_INT, &c->max_idle_per_source, 1, 100000,
         "idle keep-alive connections per client address; more are answered with "
         "Connection: close (16)"},
        {"max-streams-per-tenant", PHY_OPT_INT, &c->max_streams_per_tenant, 1, 100000,
         "console event streams open at once per tenant, then 429 (64; 8 per session or "
         "API token)"},
        {"debug", PHY_OPT_BOOL, &debug, 0, 0, "log debug events"},
        {"log-format", PHY_OPT_STR, &log_format, 0, 0,
         "logfmt (key=value, the default) or json (one JSON object per line, the same keys)"},
        {0},
    };
    char err[256];
    char *pos[1];
    size_t npos = 0;
    int rc = 1;
    char keypath[4096], ratchetpath[4200], endpoint[300];
    if (phy_config_parse(opts, argc, argv, 1, pos, 1, &npos, &help, err, sizeof(err)) < 0) {
        fprintf(stderr, "phyhub: %s (see --help)\n", err);
        rc = 2;
        goto out;
    }
    if (help) {
        print_help(opts);
        rc = 0;
        goto out;
    }
    if (npos > 0) {
        fprintf(stderr, "phyhub: unexpected argument '%s' (see --help)\n", pos[0]);
        rc = 2;
        goto out;
    }
    if (debug)
        phy_log_init("phyhub", PHY_LOG_DEBUG);
    if (phy_log_format_parse(log_format, &log_fmt) < 0) {
        fprintf(stderr, "phyhub: --log-format: expected logfmt or json\n");
        rc = 2;
        goto out;
    }
    phy_log_set_format(log_fmt);
    if (c->ping_interval_s >= c->ping_timeout_s) {
        fprintf(stderr, "phyhub: --ping-interval (%ld) must be shorter than --ping-timeout (%ld)\n",
                c->ping_interval_s, c->ping_timeout_s);
        rc = 2;
        goto out;
    }
    if (!c->tls_cert || !c->tls_key) {
        fprintf(stderr,
                "phyhub: --tls-cert and --tls-key are required (the hub only speaks TLS)\n");
        rc = 2;
        goto out;
    }
    if (!c->region && !(c->region = strdup("eu")))
        goto out;
    if (!c->listen && !(c->listen = strdup("0.0.0.0:443")))
        goto out;
    if (!c->web_root && !(c->web_root = static_default_root(PHY_WEB_ROOT_REL, PHY_WEB_ROOT)))
        goto out;
    if (!c->node_id) {
        char host[256] = "";
        const char *port = strrchr(c->listen, ':');
        if (gethostname(host, sizeof(host) - 1) != 0 || !host[0])
            snprintf(host, sizeof(host), "phyhub");
        host[strcspn(host, ".")] = '\0'; /* the short name: a node ID is at most 64 bytes */
        snprintf(endpoint, sizeof(endpoint), "%.50s:%s", host, port ? port + 1 : "443");
        if (!(c->node_id = strdup(endpoint)))
            goto out;
    }
    if (!store_node_id_ok(c->node_id)) {
        fprintf(stderr, "phyhub: --node-id: 1 to %d of A-Z a-z 0-9 . _ : -\n", STORE_NODE_ID_MAX);
        rc = 2;
        goto out;
    }
    if (c->node_timeout_s <= 2 * c->node_heartbeat_s) {
        fprintf(stderr, "phyhub: --node-timeout must be more than twice --node-heartbeat\n");
        rc = 2;
        goto out;
    }
    if (!c->public_endpoint) {
        snprintf(endpoint, sizeof(endpoint), "portal-%s.phystack.com:443", c->region);
        if (!(c->public_endpoint = strdup(endpoint)))
            goto out;
    }
    if (region_setup(&g_hub, err, sizeof(err)) < 0) {
        fprintf(stderr, "phyhub: %s\n", err);
        rc = 2;
        goto out;
    }
    for (size_t i = 0; i < c->metrics_allow.n || (i == 0 && c->metrics_allow.n == 0); i++) {
        char why[160];
        const char *spec = c->metrics_allow.n ? c->metrics_allow.items[i] : "127.0.0.0/8,::1";
        if (phy_cidr_list_parse(spec, &g_hub.metrics_allow, &g_hub.nmetrics_allow, why,
                                sizeof(why)) < 0) {
            fprintf(stderr, "phyhub: --metrics-allow: %s\n", why);
            rc = 2;
            goto out;
        }
    }
    for (size_t i = 0; i < c->trusted_proxies.n; i++) {
        char why[160];
        if (phy_cidr_list_parse(c->trusted_proxies.items[i], &g_hub.trusted, &g_hub.ntrusted, why,
                                sizeof(why)) < 0) {
            fprintf(stderr, "phyhub: --trusted-proxy: %s\n", why);
            rc = 2;
            goto out;
        }
    }
    if (c->proxy_key &&
        phy_proxy_key_load(c->proxy_key, 1, &g_hub.proxy_key, err, sizeof(err)) < 0) {
        fprintf(stderr, "phyhub: --proxy-key: %s\n", err);
        rc = 2;
        goto out;
    }
    if (c->register_rate > 0 &&
        !(g_hub.register_rate = phy_ratelimit_new((double)c->register_rate,
                                                  (double)c->register_burst, 0))) {
        fprintf(stderr, "phyhub: out of memory\n");
        goto out;
    }
    if (login_init(&g_hub) < 0) {
        fprintf(stderr, "phyhub: cannot make the login dummy hash\n");
        goto out;
    }
    if (open_store(&g_hub) < 0)
        goto out;
    if (c->key_file) {
        snprintf(keypath, sizeof(keypath), "%s", c->key_file);
    } else if (strcmp(store_engine_name(g_hub.store), "sqlite") != 0) {
        fprintf(stderr, "phyhub: --key-file is required with a %s store\n",
                store_engine_name(g_hub.store));
        goto out_store;
    } else {
        snprintf(keypath, sizeof(keypath), "%s.key", c->db);
    }
    if (phy_key_load_or_create(keypath, g_hub.issuance_key, err, sizeof(err)) < 0) {
        fprintf(stderr, "phyhub: issuance key: %s\n", err);
        goto out_store;
    }
    if (c->seal_ratchet)
        snprintf(ratchetpath, sizeof(ratchetpath), "%s", c->seal_ratchet);
    else if ((size_t)snprintf(ratchetpath, sizeof(ratchetpath), "%s.ratchet", keypath) >=
             sizeof(ratchetpath)) {
        fprintf(stderr, "phyhub: key file path too long\n");
        goto out_store;
    }
    if (seal_ring_open(&g_hub.seal, ratchetpath, g_hub.issuance_key, c->seal_epoch_s * 1000LL,
                       hub_now_ms(), 1, err, sizeof(err)) < 0) {
        fprintf(stderr, "phyhub: %s\n", err);
        goto out_store;
    }

    if (hub_prepare(&g_hub, err, sizeof(err)) < 0) {
        fprintf(stderr, "phyhub: %s\n", err);
        goto out_store;
    }
    /* libuv's pool runs the store work: a few threads more than the store can serve
     * at once only wait for it (every wait a sleep and a wake-up: with 16 threads on
     * one SQLite connection, polls cost twice the CPU of 8). Work that may wait long
     * (argon2id logins, calls to eu) has a lane of its own (server.c). Set before
     * libuv starts its pool. */
    if (!getenv("UV_THREADPOOL_SIZE"))
        setenv("UV_THREADPOOL_SIZE", "8", 0);
    uv_loop_t *loop = uv_default_loop();
    if (server_start(&g_hub, loop, hub_conn_modes, &g_server, err, sizeof(err)) < 0) {
        fprintf(stderr, "phyhub: %s\n", err);
        goto out_store;
    }
    hub_lifecycle_start(&g_hub, loop, g_server);
    char wr[512];
    phy_log(PHY_LOG_INFO, "started",
            "region=%s listen=%s provisioning=%s eu=%s endpoint=%s store=%s code_ttl=%ld "
            "poll_interval=%ld grace=%ld registration_idle=%ld web_root=%s",
            c->region, c->listen, c->provisioning ? "on" : "off",
            c->provisioning_url ? c->provisioning_url : "-", c->public_endpoint,
            store_engine_name(g_hub.store), c->code_ttl_s, c->poll_interval_s, c->issuance_grace_s,
            c->registration_idle_s, phy_log_quote(c->web_root, wr, sizeof(wr)));
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    phy_log(PHY_LOG_INFO, "stopped", "region=%s", c->region);
    rc = 0;
out_store:
    seal_ring_close(g_hub.seal);
    g_hub.seal = NULL;
    OPENSSL_cleanse(g_hub.issuance_key, sizeof(g_hub.issuance_key));
    g_hub.store_ops->close(g_hub.store);
out:
    region_cleanup(&g_hub);
    free(g_hub.trusted);
    free(g_hub.metrics_allow);
    phy_ratelimit_free(g_hub.register_rate);
    OPENSSL_cleanse(&g_hub.proxy_key, sizeof(g_hub.proxy_key));
    phy_config_free(opts);
    return rc;
}
