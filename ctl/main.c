/* phyctl: command-line client of the console API (claim, list and inspect devices,
 * rename them, set twins and tags, revoke/reset/delete, follow the event stream). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "cli.h"
#include "phy/json.h"
#include "phy/client.h"
#include "phy/buildinfo.h"
#include "phy/config.h"
#include "phy/crypto.h"
#include "phy/err.h"
#include "sse.h"
#include "stream.h"

#define CTL_TOKEN_MAX 512
#define CTL_NAME_MAX 256
#define CTL_LIST_DEFAULT 100
#define CTL_LIST_MAX 500
#define CTL_MAX_PAGES 100000
#define CTL_POS_MAX 8
#define CTL_FILE_MAX (1u << 20)
#define CTL_PATH_MAX 2048

static volatile sig_atomic_t g_stop; /* SIGINT/SIGTERM during `events` */

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
               "  devices list [--limit N] [--presence online|offline] [--tag K:V]\n"
               "                                                     list the tenant's devices\n"
               "  devices get ID                                     a device with its twin\n"
               "  twin set ID key=value... [--if-match N]            change desired settings\n"
               "  twin patch ID FILE [--if-match N]                  apply a JSON merge patch\n"
               "  tags set ID key=value...                           replace the console tags\n"
               "  rename ID (NAME | --clear)                         set or remove the name\n"
               "  revoke ID                                          revoke the credentials\n"
               "  reset ID                                           revoke and re-arm the serial\n"
               "  delete ID                                          delete the device\n"
               "  events                                             follow the event stream\n"
               "\n"
               "The API token comes from --token, the config file or the PHY_TOKEN environment\n"
               "variable (preferred: it keeps the token out of the process list).\n"
               "Exit status: 0 success, 1 error, 2 usage error.\n\noptions:\n");
    phy_config_print_help(opts, f);
}

/* One request with the bearer token. Returns 0 with res filled, or 1 after printing
 * the transport error. */
static int api_ex(struct ctl *c, const char *method, const char *path, const char *extra,
                  const char *content_type, const char *body, struct phy_client_response *res)
{
    char err[256], headers[CTL_TOKEN_MAX + 128];
    int rc;

    snprintf(headers, sizeof headers, "%s%s", c->auth, extra != NULL ? extra : "");
    rc = phy_client_request(&c->copts, method, path, headers, body != NULL ? content_type : NULL,
                            body, body != NULL ? strlen(body) : 0, res, err, sizeof err);
    OPENSSL_cleanse(headers, sizeof headers);

    if (rc != 0) {
        fprintf(stderr, "error: %s\n", err[0] != '\0' ? err : phy_strerror(rc));
        return 1;
    }
    return 0;
}

static int api(struct ctl *c, const char *method, const char *path, const char *body,
               struct phy_client_response *res)
{
    return api_ex(c, method, path, NULL, "application/json", body, res);
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
    body = req != NULL ? phy_json_dumps(req, JSON_COMPACT) : NULL;
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

/* Parses a sub-command's options into opts and up to cap positional arguments.
 * Returns -1 to go on, else the exit code (help printed, or a usage error). */
static int parse_sub(const char *name, const char *usage, const struct phy_opt *opts, int argc,
                     char **argv, int first, char **pos, size_t cap, size_t *npos)
{
    char err[256];
    int help = 0;

    if (phy_config_parse(opts, argc, argv, first, pos, cap, npos, &help, err, sizeof err) != 0) {
        fprintf(stderr, "phyctl %s: %s\n", name, err);
        return EXIT_USAGE;
    }
    if (help) {
        printf("usage: phyctl [global options] %s\n\noptions:\n", usage);
        phy_config_print_help(opts, stdout);
        return EXIT_OK;
    }
    return -1;
}

/* Checks a device ID argument; prints the usage error. */
static int check_id(const char *cmd, const char *id)
{
    if (ctl_device_id_valid(id))
        return 0;
    fprintf(stderr, "phyctl %s: '%.64s' is not a device ID (dev_ + 26 characters of a-z 2-7)\n",
            cmd, id);
    return EXIT_USAGE;
}

/* Prints the raw answer (--json) or nothing; returns EXIT_OK. */
static int print_raw(const struct phy_client_response *res)
{
    if (res->body_len > 0)
        printf("%s\n", res->body);
    return EXIT_OK;
}

/* Parses an answer body as a JSON object; prints an error when it is not one. */
static json_t *answer_object(const struct phy_client_response *res)
{
    json_t *o = json_loadb(res->body, res->body_len, 0, NULL);

    if (!json_is_object(o)) {
        fprintf(stderr, "error: the server answered %d with a malformed body\n", res->status);
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The query of a device list page (filters are percent-encoded). 0 or EXIT_FAIL. */
static int list_path(char *path, size_t cap, long limit, const char *presence, const char *tag,
                     const char *cursor)
{
    char enc_tag[1024] = "", enc_cur[1600] = "";
    int n;

    if ((tag != NULL && ctl_urlencode(tag, enc_tag, sizeof enc_tag) != 0) ||
        (cursor[0] != '\0' && ctl_urlencode(cursor, enc_cur, sizeof enc_cur) != 0))
        return EXIT_FAIL;
    n = snprintf(path, cap, "/api/v1/devices?limit=%ld%s%s%s%s%s%s", limit,
                 presence != NULL ? "&presence=" : "", presence != NULL ? presence : "",
                 tag != NULL ? "&tag=" : "", enc_tag, cursor[0] != '\0' ? "&after=" : "", enc_cur);
    return n < 0 || (size_t)n >= cap ? EXIT_FAIL : 0;
}

/* Fetches every page into all (a JSON array). Returns an exit code. */
static int fetch_devices(struct ctl *c, long limit, const char *presence, const char *tag,
                         json_t *all)
{
    char cursor[512] = "", path[4096];

    for (int page = 0; page < CTL_MAX_PAGES; page++) {
        struct phy_client_response res = {0};
        json_t *o, *devs, *next;

        if (list_path(path, sizeof path, limit, presence, tag, cursor) != 0) {
            fprintf(stderr, "error: the filter or the server's cursor is too long\n");
            return EXIT_FAIL;
        }
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

static int devices_get(struct ctl *c, const char *id)
{
    struct phy_client_response res = {0};
    char path[CTL_PATH_MAX];
    json_t *dev = NULL;
    int rc;

    if ((rc = check_id("devices get", id)) != 0)
        return rc;
    snprintf(path, sizeof path, "/api/v1/devices/%s", id);
    if (api(c, "GET", path, NULL, &res) != 0)
        return EXIT_FAIL;
    if (res.status != 200) {
        rc = print_api_error(&res);
    } else if (c->json) {
        rc = print_raw(&res);
    } else if ((dev = answer_object(&res)) == NULL) {
        rc = EXIT_FAIL;
    } else {
        ctl_print_device(dev, stdout);
        rc = EXIT_OK;
    }
    json_decref(dev);
    phy_client_response_free(&res);
    return rc;
}

static int cmd_devices(struct ctl *c, int argc, char **argv, int first)
{
    long limit = CTL_LIST_DEFAULT;
    char *presence = NULL, *tag = NULL;
    const struct phy_opt opts[] = {
        {"limit", PHY_OPT_INT, &limit, 1, CTL_LIST_MAX,
         "devices per request (default 100); all pages are fetched"},
        {"presence", PHY_OPT_STR, &presence, 0, 0, "list: only online or offline devices"},
        {"tag", PHY_OPT_STR, &tag, 0, 0, "list: only devices whose tag K has the value V (K:V)"},
        {"json", PHY_OPT_BOOL, &c->json, 0, 0, "print JSON (list: one array)"},
        {NULL, PHY_OPT_STR, NULL, 0, 0, NULL},
    };
    char *pos[CTL_POS_MAX];
    size_t npos = 0;
    json_t *all = NULL;
    int rc;

    rc = parse_sub("devices",
                   "devices list [--limit N] [--presence online|offline] [--tag K:V]\n"
                   "       phyctl [global options] devices get ID\n\n"
                   "Lists every device of your tenant (follows the pages), or shows one device\n"
                   "with its presence, last status and twin.",
                   opts, argc, argv, first, pos, CTL_POS_MAX, &npos);
    if (rc >= 0)
        goto out;
    if (npos == 2 && strcmp(pos[0], "get") == 0) {
        rc = devices_get(c, pos[1]);
        goto out;
    }
    if (npos != 1 || strcmp(pos[0], "list") != 0) {
        fprintf(stderr,
                "phyctl devices: expected 'list' or 'get ID' (see phyctl devices --help)\n");
        rc = EXIT_USAGE;
        goto out;
    }
    if (presence != NULL && strcmp(presence, "online") != 0 && strcmp(presence, "offline") != 0) {
        fprintf(stderr, "phyctl devices: --presence: online or offline\n");
        rc = EXIT_USAGE;
        goto out;
    }
    if (tag != NULL && (strchr(tag, ':') == NULL || tag[0] == ':')) {
        fprintf(stderr, "phyctl devices: --tag: expected KEY:VALUE\n");
        rc = EXIT_USAGE;
        goto out;
    }
    all = json_array();
    if (all == NULL) {
        rc = EXIT_FAIL;
        goto out;
    }
    rc = fetch_devices(c, limit, presence, tag, all);
    if (rc != EXIT_OK)
        goto out;
    if (c->json) {
        char *s = phy_json_dumps(all, JSON_INDENT(2));
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

/* Reads a whole file ('-' = stdin), at most CTL_FILE_MAX bytes; malloc'd, NUL-ended. */
static char *read_file(const char *name, size_t *len)
{
    FILE *f = strcmp(name, "-") == 0 ? stdin : fopen(name, "rb");
    char *buf = NULL;
    size_t n = 0;

    if (f == NULL)
        return NULL;
    buf = malloc(CTL_FILE_MAX + 1);
    if (buf != NULL) {
        n = fread(buf, 1, CTL_FILE_MAX + 1, f);
        if (ferror(f) || n > CTL_FILE_MAX) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
            *len = n;
        }
    }
    if (f != stdin)
        fclose(f);
    return buf;
}

/* PATCHes the desired section; prints "desired version N". */
static int send_desired(struct ctl *c, const char *id, const json_t *patch, long if_match)
{
    struct phy_client_response res = {0};
    char path[CTL_PATH_MAX], extra[64] = "";
    char *body = phy_json_dumps(patch, JSON_COMPACT);
    json_t *o = NULL;
    int rc;

    if (body == NULL) {
        fprintf(stderr, "error: out of memory\n");
        return EXIT_FAIL;
    }
    if (if_match >= 0)
        snprintf(extra, sizeof extra, "If-Match: \"%ld\"\r\n", if_match);
    snprintf(path, sizeof path, "/api/v1/devices/%s/twin/desired", id);
    if (api_ex(c, "PATCH", path, extra, "application/merge-patch+json", body, &res) != 0) {
        rc = EXIT_FAIL;
    } else if (res.status != 200) {
        rc = print_api_error(&res);
    } else if (c->json) {
        rc = print_raw(&res);
    } else if ((o = answer_object(&res)) == NULL ||
               !json_is_integer(json_object_get(o, "version"))) {
        if (o != NULL)
            fprintf(stderr, "error: the server's answer has no version\n");
        rc = EXIT_FAIL;
    } else {
        printf("desired version %lld\n",
               (long long)json_integer_value(json_object_get(o, "version")));
        rc = EXIT_OK;
    }
    json_decref(o);
    free(body);
    phy_client_response_free(&res);
    return rc;
}

static int cmd_twin(struct ctl *c, int argc, char **argv, int first)
{
    long if_match = -1;
    const struct phy_opt opts[] = {
        {"if-match", PHY_OPT_INT, &if_match, 0, 999999999999999999L,
         "only apply when the desired version is N (else error precondition_failed)"},
        {"json", PHY_OPT_BOOL, &c->json, 0, 0, "print the server's answer as JSON"},
        {NULL, PHY_OPT_STR, NULL, 0, 0, NULL},
    };
    char **pos = calloc((size_t)argc + 1, sizeof *pos);
    size_t npos = 0;
    json_t *patch = NULL;
    char err[256];
    int rc;

    if (pos == NULL) {
        phy_config_free(opts);
        return EXIT_FAIL;
    }
    rc =
        parse_sub("twin",
                  "twin set ID key=value... [--if-match N]\n"
                  "       phyctl [global options] twin patch ID FILE [--if-match N]\n\n"
                  "Changes a device's desired settings. `set`: dotted keys make nested objects\n"
                  "(a.b=1), values are JSON when they parse (5, true, null, {...}, \"text\") else\n"
                  "text, key=null deletes. `patch`: FILE ('-' = stdin) holds a JSON merge patch\n"
                  "(RFC 7386) object.",
                  opts, argc, argv, first, pos, (size_t)argc, &npos);
    if (rc >= 0)
        goto out;
    rc = EXIT_USAGE;
    if (npos >= 3 && strcmp(pos[0], "set") == 0) {
        if ((rc = check_id("twin set", pos[1])) != 0)
            goto out;
        patch = json_object();
        if (patch == NULL) {
            rc = EXIT_FAIL;
            goto out;
        }
        for (size_t i = 2; i < npos; i++) {
            if (ctl_kv_apply(patch, pos[i], err, sizeof err) != 0) {
                fprintf(stderr, "phyctl twin set: %s\n", err);
                rc = EXIT_USAGE;
                goto out;
            }
        }
    } else if (npos == 3 && strcmp(pos[0], "patch") == 0) {
        size_t len = 0;
        json_error_t jerr;
        char *text;

        if ((rc = check_id("twin patch", pos[1])) != 0)
            goto out;
        text = read_file(pos[2], &len);
        if (text == NULL) {
            fprintf(stderr, "error: cannot read %s (missing, unreadable or over 1 MiB)\n", pos[2]);
            rc = EXIT_FAIL;
            goto out;
        }
        patch = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        free(text);
        if (!json_is_object(patch)) {
            if (patch == NULL)
                fprintf(stderr, "error: %s: invalid JSON at line %d column %d: %s\n", pos[2],
                        jerr.line, jerr.column, jerr.text);
            else
                fprintf(stderr, "error: %s: a merge patch must be a JSON object\n", pos[2]);
            rc = EXIT_FAIL;
            goto out;
        }
    } else {
        fprintf(stderr, "phyctl twin: expected 'set ID key=value...' or 'patch ID FILE' "
                        "(see phyctl twin --help)\n");
        goto out;
    }
    rc = send_desired(c, pos[1], patch, if_match);
out:
    json_decref(patch);
    free(pos);
    phy_config_free(opts);
    return rc;
}

static int cmd_tags(struct ctl *c, int argc, char **argv, int first)
{
    const struct phy_opt opts[] = {
        {"json", PHY_OPT_BOOL, &c->json, 0, 0, "print the device as JSON"},
        {NULL, PHY_OPT_STR, NULL, 0, 0, NULL},
    };
    char **pos = calloc((size_t)argc + 1, sizeof *pos);
    struct phy_client_response res = {0};
    size_t npos = 0;
    json_t *tags = NULL, *dev = NULL;
    char err[256], path[CTL_PATH_MAX], *body = NULL;
    int rc;

    if (pos == NULL) {
        phy_config_free(opts);
        return EXIT_FAIL;
    }
    rc = parse_sub("tags",
                   "tags set ID [key=value...]\n\n"
                   "Replaces the device's console tags (used by --tag filters and fleet-wide\n"
                   "changes) with the given ones; none clears them.",
                   opts, argc, argv, first, pos, (size_t)argc, &npos);
    if (rc >= 0)
        goto out;
    if (npos < 2 || strcmp(pos[0], "set") != 0) {
        fprintf(stderr, "phyctl tags: expected 'set ID key=value...' (see phyctl tags --help)\n");
        rc = EXIT_USAGE;
        goto out;
    }
    if ((rc = check_id("tags set", pos[1])) != 0)
        goto out;
    tags = json_object();
    for (size_t i = 2; tags != NULL && i < npos; i++) {
        if (ctl_tag_apply(tags, pos[i], err, sizeof err) != 0) {
            fprintf(stderr, "phyctl tags set: %s\n", err);
            rc = EXIT_USAGE;
            goto out;
        }
    }
    body = tags != NULL ? phy_json_dumps(tags, JSON_COMPACT) : NULL;
    if (body == NULL) {
        rc = EXIT_FAIL;
        goto out;
    }
    snprintf(path, sizeof path, "/api/v1/devices/%s/tags", pos[1]);
    if (api_ex(c, "PUT", path, NULL, "application/json", body, &res) != 0)
        rc = EXIT_FAIL;
    else if (res.status != 200)
        rc = print_api_error(&res);
    else if (c->json)
        rc = print_raw(&res);
    else if ((dev = answer_object(&res)) == NULL)
        rc = EXIT_FAIL;
    else {
        ctl_print_device(dev, stdout);
        rc = EXIT_OK;
    }
out:
    json_decref(dev);
    json_decref(tags);
    free(body);
    free(pos);
    phy_client_response_free(&res);
    phy_config_free(opts);
    return rc;
}

/* rename ID NAME, or rename ID --clear: PATCH /api/v1/devices/ID {"name"}. The hub
 * checks the name (at most 64 bytes, no control characters). */
static int cmd_rename(struct ctl *c, int argc, char **argv, int first)
{
    int clear = 0;
    const struct phy_opt opts[] = {
        {"clear", PHY_OPT_BOOL, &clear, 0, 0, "remove the name (the device is listed by serial)"},
        {"json", PHY_OPT_BOOL, &c->json, 0, 0, "print the device as JSON"},
        {NULL, PHY_OPT_STR, NULL, 0, 0, NULL},
    };
    struct phy_client_response res = {0};
    char *pos[CTL_POS_MAX], path[CTL_PATH_MAX], line[512], *body = NULL;
    size_t npos = 0;
    json_t *req = NULL, *dev = NULL;
    int rc;

    rc = parse_sub("rename",
                   "rename ID NAME\n       phyctl [global options] rename ID --clear\n\n"
                   "Sets the device's display name (at most 64 bytes, no control characters),\n"
                   "or removes it with --clear (or an empty NAME). Revoked devices can be\n"
                   "renamed too. A NAME that starts with '-' goes after '--'.",
                   opts, argc, argv, first, pos, CTL_POS_MAX, &npos);
    if (rc >= 0)
        goto out;
    if (npos != (clear ? 1u : 2u)) {
        fprintf(stderr, "phyctl rename: expected 'ID NAME' or 'ID --clear' (see phyctl rename "
                        "--help)\n");
        rc = EXIT_USAGE;
        goto out;
    }
    if ((rc = check_id("rename", pos[0])) != 0)
        goto out;
    if (clear || pos[1][0] == '\0')
        req = json_pack("{s:n}", "name");
    else
        req = json_pack("{s:s}", "name", pos[1]); /* NULL when not UTF-8 */
    body = req != NULL ? phy_json_dumps(req, JSON_COMPACT) : NULL;
    if (body == NULL) {
        fprintf(stderr, "phyctl rename: the name must be UTF-8\n");
        rc = EXIT_USAGE;
        goto out;
    }
    snprintf(path, sizeof path, "/api/v1/devices/%s", pos[0]);
    if (api_ex(c, "PATCH", path, NULL, "application/json", body, &res) != 0) {
        rc = EXIT_FAIL;
    } else if (res.status != 200) {
        rc = print_api_error(&res);
    } else if (c->json) {
        rc = print_raw(&res);
    } else if ((dev = answer_object(&res)) == NULL) {
        rc = EXIT_FAIL;
    } else {
        ctl_format_renamed(dev, line, sizeof line);
        printf("%s\n", line);
        rc = EXIT_OK;
    }
out:
    json_decref(dev);
    json_decref(req);
    free(body);
    phy_client_response_free(&res);
    phy_config_free(opts);
    return rc;
}

/* revoke, reset and delete: one device ID, one request. */
static int cmd_lifecycle(struct ctl *c, const char *cmd, int argc, char **argv, int first)
{
    const struct phy_opt opts[] = {
        {"json", PHY_OPT_BOOL, &c->json, 0, 0, "print the server's answer as JSON"},
        {NULL, PHY_OPT_STR, NULL, 0, 0, NULL},
    };
    struct phy_client_response res = {0};
    char *pos[CTL_POS_MAX], usage[320], path[CTL_PATH_MAX], line[256], serial[80];
    size_t npos = 0;
    json_t *o = NULL;
    int del = strcmp(cmd, "delete") == 0, rc;

    snprintf(usage, sizeof usage, "%s ID\n\n%s", cmd,
             del ? "Deletes the device, its twin and credentials; its live session is closed."
             : strcmp(cmd, "revoke") == 0
                 ? "Revokes the device's credentials for good; its live session is closed."
                 : "Revokes the device and re-arms its serial so that it can be claimed once\n"
                   "more (the device registers again).");
    rc = parse_sub(cmd, usage, opts, argc, argv, first, pos, CTL_POS_MAX, &npos);
    if (rc >= 0)
        goto out;
    if (npos != 1) {
        fprintf(stderr, "phyctl %s: expected one device ID\n", cmd);
        rc = EXIT_USAGE;
        goto out;
    }
    if ((rc = check_id(cmd, pos[0])) != 0)
        goto out;
    if (del)
        snprintf(path, sizeof path, "/api/v1/devices/%s", pos[0]);
    else
        snprintf(path, sizeof path, "/api/v1/devices/%s/%s", pos[0], cmd);
    if (api_ex(c, del ? "DELETE" : "POST", path, NULL, NULL, NULL, &res) != 0) {
        rc = EXIT_FAIL;
    } else if (res.status != (del ? 204 : 200)) {
        rc = print_api_error(&res);
    } else if (del) {
        printf("deleted %s\n", pos[0]);
        rc = EXIT_OK;
    } else if (c->json) {
        rc = print_raw(&res);
    } else if ((o = answer_object(&res)) == NULL) {
        rc = EXIT_FAIL;
    } else {
        ctl_member(o, "serial", serial, sizeof serial);
        if (strcmp(cmd, "revoke") == 0)
            snprintf(line, sizeof line, "revoked %s (serial %s)", pos[0], serial);
        else
            snprintf(line, sizeof line, "reset %s: revoked; serial %s can be claimed again", pos[0],
                     serial);
        printf("%s\n", line);
        rc = EXIT_OK;
    }
out:
    json_decref(o);
    phy_client_response_free(&res);
    phy_config_free(opts);
    return rc;
}

struct events_ctx {
    struct ctl_sse *sse;
    int json;
    int failed;
};

static void now_rfc3339(char out[32])
{
    time_t t = time(NULL);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* One event: a line of text, or the data JSON (with "type" added) for --json. */
static int on_event(void *ctx, const char *type, const char *data)
{
    struct events_ctx *e = ctx;
    char now[32], line[4096];

    if (e->json) {
        json_t *o = json_loads(data, 0, NULL);
        char *text;

        if (!json_is_object(o)) {
            json_decref(o);
            o = json_pack("{s:s, s:s}", "type", type, "data", data);
        } else if (json_object_get(o, "type") == NULL) {
            json_object_set_new(o, "type", json_string(type));
        }
        text = o != NULL ? phy_json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (text != NULL)
            printf("%s\n", text);
        free(text);
    } else {
        now_rfc3339(now);
        ctl_format_event(type, data, now, line, sizeof line);
        printf("%s\n", line);
    }
    fflush(stdout);
    return 0;
}

static int on_stream_data(void *ctx, const char *p, size_t n)
{
    struct events_ctx *e = ctx;
    int rc = ctl_sse_feed(e->sse, p, n, on_event, e);

    if (rc < 0) {
        fprintf(stderr, "error: malformed event stream (line over %d bytes)\n", CTL_SSE_LINE_MAX);
        e->failed = 1;
        return 1;
    }
    return 0;
}

static void on_stop_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static int cmd_events(struct ctl *c, int argc, char **argv, int first)
{
    const struct phy_opt opts[] = {
        {"json", PHY_OPT_BOOL, &c->json, 0, 0, "print each event as one line of JSON"},
        {NULL, PHY_OPT_STR, NULL, 0, 0, NULL},
    };
    struct events_ctx e = {0};
    struct ctl_stream_result r;
    struct sigaction sa;
    char *pos[CTL_POS_MAX], err[256];
    size_t npos = 0;
    int rc;

    rc = parse_sub("events",
                   "events [--json]\n\n"
                   "Follows the tenant's event stream (devices going online/offline, reported\n"
                   "changes) and prints one line per event: TIME TYPE DEVICE SUMMARY. Runs until\n"
                   "interrupted (SIGINT/SIGTERM: exit 0) or the server ends the stream.",
                   opts, argc, argv, first, pos, CTL_POS_MAX, &npos);
    if (rc >= 0)
        goto out;
    if (npos != 0) {
        fprintf(stderr, "phyctl events: unexpected argument '%s'\n", pos[0]);
        rc = EXIT_USAGE;
        goto out;
    }
    e.json = c->json;
    e.sse = calloc(1, sizeof *e.sse);
    if (e.sse == NULL) {
        rc = EXIT_FAIL;
        goto out;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal; /* no SA_RESTART: a signal ends the wait */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    rc = ctl_stream_get(&c->copts, "/api/v1/events", c->auth, on_stream_data, &e, &g_stop, &r, err,
                        sizeof err);
    if (rc != 0) {
        fprintf(stderr, "error: %s\n", err[0] != '\0' ? err : phy_strerror(rc));
        rc = EXIT_FAIL;
        goto out;
    }
    if (r.status != 200) {
        struct phy_client_response res = {.status = r.status, .body = r.body, .body_len = r.body_len};
        rc = print_api_error(&res);
        free(r.body);
        goto out;
    }
    rc = e.failed ? EXIT_FAIL : EXIT_OK;
out:
    free(e.sse);
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
    if (phy_buildinfo_wanted(cmd, argv, 1)) {
        phy_buildinfo_print("phyctl", stdout);
        return 0;
    }
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
    static const char *const commands[] = {"claim",  "devices", "twin",   "tags",  "rename",
                                           "revoke", "reset",   "delete", "events", NULL};
    int known = 0;
    for (size_t i = 0; commands[i] != NULL; i++)
        if (strcmp(argv[cmd], commands[i]) == 0)
            known = 1;
    if (!known) {
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
    else if (strcmp(argv[cmd], "devices") == 0)
        rc = cmd_devices(&c, argc, argv, cmd + 1);
    else if (strcmp(argv[cmd], "twin") == 0)
        rc = cmd_twin(&c, argc, argv, cmd + 1);
    else if (strcmp(argv[cmd], "tags") == 0)
        rc = cmd_tags(&c, argc, argv, cmd + 1);
    else if (strcmp(argv[cmd], "rename") == 0)
        rc = cmd_rename(&c, argc, argv, cmd + 1);
    else if (strcmp(argv[cmd], "events") == 0)
        rc = cmd_events(&c, argc, argv, cmd + 1);
    else
        rc = cmd_lifecycle(&c, argv[cmd], argc, argv, cmd + 1);
out:
    OPENSSL_cleanse(c.auth, sizeof c.auth);
    phy_config_free(opts);
    return rc;
}
