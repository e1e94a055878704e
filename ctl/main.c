/* phyctl: command-line client of the console API (claim devices, list devices). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "cli.h"
#include "phy/client.h"
#include "phy/config.h"
#include "phy/crypto.h"
#include "phy/err.h"

#define CTL_TOKEN_MAX 512
#define CTL_NAME_MAX 256
#define CTL_LIST_DEFAULT 100
#define CTL_LIST_MAX 500
#define CTL_MAX_PAGES 100000
#define CTL_POS_MAX 8

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

struct ctl {
    char *url;
    char *token;
    char *ca;
    char *connect_addr;
    long timeout;
    int json;

    char host[CTL_HOST_MAX + 1];
    unsigned port;
    char auth[CTL_TOKEN_MAX + 32]; /* "Authorization: Bearer …\r\n" */
    struct phy_client_opts copts;
};

static void usage_main(FILE *f, const struct phy_opt *opts)
{
    fprintf(f, "usage: phyctl --url https://HOST[:PORT] [options] <command> [command options]\n"
               "\n"
               "commands:\n"
               "  claim (--serial SN | --code CODE) [--name NAME]   claim a device\n"
               "  devices list [--limit N]                           list the tenant's devices\n"
               "\n"
               "The API token comes from --token, the config file or the PHY_TOKEN environment\n"
               "variable (preferred: it keeps the token out of the process list).\n"
               "Exit status: 0 success, 1 error, 2 usage error.\n\noptions:\n");
    phy_config_print_help(opts, f);
}

/* One request with the bearer token. Returns 0 with res filled, or 1 after printing
 * the transport error. */
static int api(struct ctl *c, const char *method, const char *path, const char *body,
               struct phy_client_response *res)
{
    char err[256];
    int rc = phy_client_request(&c->copts, method, path, c->auth,
                                body != NULL ? "application/json" : NULL, body,
                                body != NULL ? strlen(body) : 0, res, err, sizeof err);

    if (rc != 0) {
        fprintf(stderr, "error: %s\n", err[0] != '\0' ? err : phy_strerror(rc));
        return 1;
    }
    return 0;
}

static int print_api_error(const struct phy_client_response *res)
{
    char line[512];

    ctl_format_error(res->status, res->body, res->body_len, line, sizeof line);
    fprintf(stderr, "%s\n", line);
    return EXIT_FAIL;
}

static int cmd_claim(struct ctl *c, int argc, char **argv, int first)
{
    char *serial = NULL, *code = NULL, *name = NULL;
    const struct phy_opt opts[] = {
        {"serial", PHY_OPT_STR, &serial, 0, 0, "serial number printed on the device"},
        {"code", PHY_OPT_STR, &code, 0, 0, "6-character code shown on the device"},
        {"name", PHY_OPT_STR, &name, 0, 0, "display name for the device (optional)"},
        {"json", PHY_OPT_BOOL, &c->json, 0, 0, "print the device as JSON"},
        {NULL, PHY_OPT_STR, NULL, 0, 0, NULL},
    };
    struct phy_client_response res = {0};
    char err[256], norm[PHY_CODE_LEN + 1], line[512];
    json_t *req = NULL, *dev = NULL;
    char *body = NULL;
    int help = 0, rc;

    rc = phy_config_parse(opts, argc, argv, first, NULL, 0, NULL, &help, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "phyctl claim: %s\n", err);
        rc = EXIT_USAGE;
        goto out;
    }
    if (help) {
        printf("usage: phyctl [global options] claim (--serial SN | --code CODE) "
               "[--name NAME]\n\nClaims a device for your tenant.\n\noptions:\n");
        phy_config_print_help(opts, stdout);
        rc = EXIT_OK;
        goto out;
    }
    if ((serial == NULL) == (code == NULL)) {
        fprintf(stderr, "phyctl claim: give exactly one of --serial and --code\n");
        rc = EXIT_USAGE;
        goto out;
    }
    if (serial != NULL && !phy_serial_valid(serial, strlen(serial))) {
        fprintf(stderr, "phyctl claim: --serial: 1-64 characters of [A-Za-z0-9._-]\n");
        rc = EXIT_USAGE;
        goto out;
    }
    if (code != NULL && phy_code_normalize(code, strlen(code), norm) != 0) {
        fprintf(stderr, "phyctl claim: --code: 6 characters of %s\n", PHY_CODE_ALPHABET);
        rc = EXIT_USAGE;
        goto out;
    }
    if (name != NULL && (name[0] == '\0' || strlen(name) > CTL_NAME_MAX)) {
        fprintf(stderr, "phyctl claim: --name: 1-%d bytes\n", CTL_NAME_MAX);
        rc = EXIT_USAGE;
        goto out;
    }
    req = serial != NULL ? json_pack("{s:s}", "serial", serial) : json_pack("{s:s}", "code", norm);
    if (req != NULL && name != NULL && json_object_set_new(req, "name", json_string(name)) != 0) {
        json_decref(req);
        req = NULL;
    }
    body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    if (body == NULL) {
        fprintf(stderr, "error: invalid or unencodable argument (names must be UTF-8)\n");
        rc = EXIT_FAIL;
        goto out;
    }
    if (api(c, "POST", "/api/v1/devices/claim", body, &res) != 0) {
        rc = EXIT_FAIL;
        goto out;
    }
    if (res.status != 201) {
        rc = print_api_error(&res);
        goto out;
    }
    dev = json_loadb(res.body, res.body_len, 0, NULL);
    if (!json_is_object(dev)) {
        fprintf(stderr, "error: the server answered 201 with a malformed device\n");
        rc = EXIT_FAIL;
        goto out;
    }
    if (c->json) {
        printf("%s\n", res.body);
    } else {
        ctl_format_claimed(dev, line, sizeof line);
        printf("%s\n", line);
    }
    rc = EXIT_OK;
out:
    json_decref(dev);
    json_decref(req);
    free(body);
    phy_client_response_free(&res);
    phy_config_free(opts);
    return rc;
}

/* Fetches every page into all (a JSON array). Returns an exit code. */
static int fetch_devices(struct ctl *c, long limit, json_t *all)
{
    char cursor[512] = "", enc[1600], path[1700];

    for (int page = 0; page < CTL_MAX_PAGES; page++) {
        struct phy_client_response res = {0};
        json_t *o, *devs, *next;
        int n;

        if (cursor[0] == '\0') {
            n = snprintf(path, sizeof path, "/api/v1/devices?limit=%ld", limit);
        } else {
            if (ctl_urlencode(cursor, enc, sizeof enc) != 0) {
                fprintf(stderr, "error: the server sent an over-long cursor\n");
                return EXIT_FAIL;
            }
            n = snprintf(path, sizeof path, "/api/v1/devices?limit=%ld&after=%s", limit, enc);
        }
        if (n < 0 || (size_t)n >= sizeof path)
            return EXIT_FAIL;
        if (api(c, "GET", path, NULL, &res) != 0)
            return EXIT_FAIL;
        if (res.status != 200) {
            int rc = print_api_error(&res);
            phy_client_response_free(&res);
            return rc;
        }
        o = json_loadb(res.body, res.body_len, 0, NULL);
        phy_client_response_free(&res);
        devs = json_is_object(o) ? json_object_get(o, "devices") : NULL;
        if (!json_is_array(devs)) {
            fprintf(stderr, "error: the server answered with a malformed device list\n");
            json_decref(o);
            return EXIT_FAIL;
        }
        json_array_extend(all, devs);
        next = json_object_get(o, "next");
        if (!json_is_string(next) || json_string_length(next) == 0 || json_array_size(devs) == 0) {
            json_decref(o);
            return EXIT_OK;
        }
        if (json_string_length(next) >= sizeof cursor ||
            strcmp(json_string_value(next), cursor) == 0) {
            fprintf(stderr, "error: the server sent an invalid next cursor\n");
            json_decref(o);
            return EXIT_FAIL;
        }
        memcpy(cursor, json_string_value(next), json_string_length(next) + 1);
        json_decref(o);
    }
    fprintf(stderr, "error: too many pages\n");
    return EXIT_FAIL;
}

static int cmd_devices(struct ctl *c, int argc, char **argv, int first)
{
    long limit = CTL_LIST_DEFAULT;
    const struct phy_opt opts[] = {
        {"limit", PHY_OPT_INT, &limit, 1, CTL_LIST_MAX,
         "devices per request (default 100); all pages are fetched"},
        {"json", PHY_OPT_BOOL, &c->json, 0, 0, "print the devices as a JSON array"},
        {NULL, PHY_OPT_STR, NULL, 0, 0, NULL},
    };
    char *pos[CTL_POS_MAX];
    size_t npos = 0;
    char err[256];
    json_t *all = NULL;
    int help = 0, rc;

    rc = phy_config_parse(opts, argc, argv, first, pos, CTL_POS_MAX, &npos, &help, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "phyctl devices: %s\n", err);
        rc = EXIT_USAGE;
        goto out;
    }
    if (help) {
        printf("usage: phyctl [global options] devices list [--limit N]\n\n"
               "Lists every device of your tenant (follows the pages).\n\noptions:\n");
        phy_config_print_help(opts, stdout);
        rc = EXIT_OK;
        goto out;
    }
    if (npos != 1 || strcmp(pos[0], "list") != 0) {
        fprintf(stderr, "phyctl devices: expected 'list' (see phyctl devices --help)\n");
        rc = EXIT_USAGE;
        goto out;
    }
    all = json_array();
    if (all == NULL) {
        rc = EXIT_FAIL;
        goto out;
    }
    rc = fetch_devices(c, limit, all);
    if (rc != EXIT_OK)
        goto out;
    if (c->json) {
        char *s = json_dumps(all, JSON_INDENT(2));
        if (s == NULL) {
            rc = EXIT_FAIL;
            goto out;
        }
        printf("%s\n", s);
        free(s);
    } else {
        ctl_print_devices(all, stdout);
    }
out:
    json_decref(all);
    phy_config_free(opts);
    return rc;
}

/* Checks global options and builds the connection settings. 0 or EXIT_USAGE. */
static int configure(struct ctl *c)
{
    const char *token = c->token != NULL ? c->token : getenv("PHY_TOKEN");
    size_t tn = token != NULL ? strlen(token) : 0;

    if (c->url == NULL || ctl_parse_url(c->url, c->host, &c->port) != 0) {
        fprintf(stderr, "phyctl: --url: expected https://HOST[:PORT]\n");
        return EXIT_USAGE;
    }
    if (tn == 0) {
        fprintf(stderr, "phyctl: no API token: set PHY_TOKEN (or --token)\n");
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < tn; i++) {
        unsigned char ch = (unsigned char)token[i];
        if (ch <= 0x20 || ch >= 0x7f) {
            fprintf(stderr, "phyctl: the API token contains invalid characters\n");
            return EXIT_USAGE;
        }
    }
    if (tn > CTL_TOKEN_MAX) {
        fprintf(stderr, "phyctl: the API token is too long\n");
        return EXIT_USAGE;
    }
    if (c->connect_addr != NULL) {
        char h[CTL_HOST_MAX + 1];
        unsigned p;
        if (phy_client_parse_hostport(c->connect_addr, h, sizeof h, &p, c->port) != 0) {
            fprintf(stderr, "phyctl: --connect-addr: expected ADDR[:PORT]\n");
            return EXIT_USAGE;
        }
    }
    snprintf(c->auth, sizeof c->auth, "Authorization: Bearer %s\r\n", token);
    c->copts.host = c->host;
    c->copts.port = c->port;
    c->copts.connect_addr = c->connect_addr;
    c->copts.ca_file = c->ca;
    c->copts.timeout_ms = (int)c->timeout * 1000;
    return 0;
}

int main(int argc, char **argv)
{
    struct ctl c;
    char err[256];
    int help = 0, rc, cmd;

    memset(&c, 0, sizeof c);
    c.timeout = 10;
    const struct phy_opt opts[] = {
        {"url", PHY_OPT_STR, &c.url, 0, 0, "console API base URL, https://HOST[:PORT]"},
        {"token", PHY_OPT_STR, &c.token, 0, 0,
         "API token (prefer the PHY_TOKEN environment variable)"},
        {"ca", PHY_OPT_STR, &c.ca, 0, 0, "PEM CA bundle for the server (default: system store)"},
        {"connect-addr", PHY_OPT_STR, &c.connect_addr, 0, 0,
         "connect to ADDR[:PORT] instead of resolving the URL's host"},
        {"json", PHY_OPT_BOOL, &c.json, 0, 0, "print JSON instead of text"},
        {"timeout", PHY_OPT_INT, &c.timeout, 1, 600,
         "network timeout per connect/read/write in seconds (default 10)"},
        {NULL, PHY_OPT_STR, NULL, 0, 0, NULL},
    };

    signal(SIGPIPE, SIG_IGN);
    cmd = ctl_find_command(opts, argc, argv, 1);
    rc = phy_config_parse(opts, cmd, argv, 1, NULL, 0, NULL, &help, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "phyctl: %s\n", err);
        rc = EXIT_USAGE;
        goto out;
    }
    if (help || cmd >= argc) {
        usage_main(help ? stdout : stderr, opts);
        rc = help ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    if (strcmp(argv[cmd], "claim") != 0 && strcmp(argv[cmd], "devices") != 0) {
        fprintf(stderr, "phyctl: unknown command '%s' (see phyctl --help)\n", argv[cmd]);
        rc = EXIT_USAGE;
        goto out;
    }
    /* Sub-command help needs no connection settings. */
    for (int i = cmd + 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            help = 1;
    if (!help) {
        rc = configure(&c);
        if (rc != 0)
            goto out;
    }
    if (strcmp(argv[cmd], "claim") == 0)
        rc = cmd_claim(&c, argc, argv, cmd + 1);
    else
        rc = cmd_devices(&c, argc, argv, cmd + 1);
out:
    OPENSSL_cleanse(c.auth, sizeof c.auth);
    phy_config_free(opts);
    return rc;
}
