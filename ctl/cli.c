/* phyctl helpers without network I/O: URL and argv handling, output formatting. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#include "phy/json.h"
#include "phy/client.h"
#include "phy/err.h"
#include "phy/http.h"

#define CTL_CELL_MAX 256
#define CTL_COLUMNS 7
#define CTL_KEY_MAX 256

/* https://HOST[:PORT][/] only. */
int ctl_parse_url(const char *url, char *host, unsigned *port)
{
    static const char scheme[] = "https://";
    char hostport[CTL_HOST_MAX + 16];
    size_t n;

    if (url == NULL || strncmp(url, scheme, sizeof scheme - 1) != 0)
        return PHY_EINVAL;
    url += sizeof scheme - 1;
    n = strlen(url);
    if (n > 0 && url[n - 1] == '/')
        n--;
    if (n == 0 || n >= sizeof hostport || memchr(url, '/', n) != NULL ||
        memchr(url, '@', n) != NULL || memchr(url, '?', n) != NULL)
        return PHY_EINVAL;
    memcpy(hostport, url, n);
    hostport[n] = '\0';
    return phy_client_parse_hostport(hostport, host, CTL_HOST_MAX + 1, port, 443);
}

static const struct phy_opt *find_opt(const struct phy_opt *opts, const char *name, size_t n)
{
    for (size_t i = 0; opts[i].name != NULL; i++)
        if (strlen(opts[i].name) == n && memcmp(opts[i].name, name, n) == 0)
            return &opts[i];
    return NULL;
}

/* Skips options and their values; see cli.h. */
int ctl_find_command(const struct phy_opt *opts, int argc, char **argv, int first)
{
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const struct phy_opt *o;
        size_t n;

        if (strcmp(a, "--") == 0)
            return i + 1 < argc ? i + 1 : argc;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            continue;
        if (strncmp(a, "--", 2) != 0)
            return i;
        if (strchr(a, '=') != NULL)
            continue;
        n = strlen(a + 2);
        o = find_opt(opts, a + 2, n);
        if (o != NULL && o->type == PHY_OPT_BOOL)
            continue;
        /* a value-taking option (or an unknown one, which the parser reports) */
        if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
            i++;
    }
    return argc;
}

/* RFC 3986 unreserved characters pass; everything else is %XX. */
int ctl_urlencode(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t j = 0;

    for (size_t i = 0; s[i] != '\0'; i++) {
        unsigned char ch = (unsigned char)s[i];
        int plain = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~';
        size_t need = plain ? 1 : 3;

        if (j + need >= cap)
            return PHY_ETOOBIG;
        if (plain) {
            out[j++] = (char)ch;
        } else {
            out[j++] = '%';
            out[j++] = hex[ch >> 4];
            out[j++] = hex[ch & 15];
        }
    }
    if (j >= cap)
        return PHY_ETOOBIG;
    out[j] = '\0';
    return 0;
}

/* Control bytes become '?'; truncation never splits beyond cap. */
const char *ctl_clean(const char *s, char *out, size_t cap)
{
    size_t i;

    if (cap == 0)
        return out;
    if (s == NULL || s[0] == '\0')
        s = "-";
    for (i = 0; s[i] != '\0' && i + 1 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[i] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    out[i] = '\0';
    return out;
}

const char *ctl_member(const json_t *o, const char *key, char *out, size_t cap)
{
    const json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;

    return ctl_clean(json_is_string(v) ? json_string_value(v) : NULL, out, cap);
}

/* Error answer -> one line. */
void ctl_format_error(int status, const char *body, size_t n, char *out, size_t cap)
{
    json_t *o = body != NULL && n > 0 ? json_loadb(body, n, 0, NULL) : NULL;
    char code[64], msg[CTL_CELL_MAX];

    if (json_is_object(o) && json_is_string(json_object_get(o, "error"))) {
        snprintf(out, cap, "error: %s: %s", ctl_member(o, "error", code, sizeof code),
                 ctl_member(o, "message", msg, sizeof msg));
    } else {
        snprintf(out, cap, "error: http_%d: %s", status, phy_http_reason(status));
    }
    json_decref(o);
}

/* Device -> "claimed ..." line. */
void ctl_format_claimed(const json_t *dev, char *out, size_t cap)
{
    char id[64], serial[80], name[CTL_CELL_MAX], state[32];
    const json_t *nm = json_is_object(dev) ? json_object_get(dev, "name") : NULL;
    int has_name = json_is_string(nm) && json_string_length(nm) > 0;

    ctl_member(dev, "device_id", id, sizeof id);
    ctl_member(dev, "serial", serial, sizeof serial);
    ctl_member(dev, "state", state, sizeof state);
    if (has_name)
        snprintf(out, cap, "claimed %s (serial %s, name %s, state %s)", id, serial,
                 ctl_member(dev, "name", name, sizeof name), state);
    else
        snprintf(out, cap, "claimed %s (serial %s, state %s)", id, serial, state);
}

void ctl_format_renamed(const json_t *dev, char *out, size_t cap)
{
    char id[64], serial[80], name[CTL_CELL_MAX];
    const json_t *nm = json_is_object(dev) ? json_object_get(dev, "name") : NULL;

    ctl_member(dev, "device_id", id, sizeof id);
    if (json_is_string(nm) && json_string_length(nm) > 0)
        snprintf(out, cap, "renamed %s to %s", id, ctl_member(dev, "name", name, sizeof name));
    else
        snprintf(out, cap, "removed the name of %s (listed by serial %s)", id,
                 ctl_member(dev, "serial", serial, sizeof serial));
}

/* The last column is not padded, so lines carry no trailing blanks. */
static void print_cell(FILE *f, const char *s, size_t width, int last)
{
    if (last)
        fprintf(f, "%s\n", s);
    else
        fprintf(f, "%-*s  ", (int)width, s);
}

/* Two passes: column widths, then rows. */
void ctl_print_devices(const json_t *devices, FILE *f)
{
    static const char *const head[CTL_COLUMNS] = {"DEVICE ID", "SERIAL",    "NAME",   "STATE",
                                                  "PRESENCE",  "LAST SEEN", "CREATED"};
    static const char *const keys[CTL_COLUMNS] = {"device_id", "serial",    "name",      "state",
                                                  "presence",  "last_seen", "created_at"};
    size_t width[CTL_COLUMNS];
    char cell[CTL_CELL_MAX];
    size_t i;
    const json_t *dev;

    for (int c = 0; c < CTL_COLUMNS; c++)
        width[c] = strlen(head[c]);
    json_array_foreach(devices, i, dev)
    {
        for (int c = 0; c < CTL_COLUMNS; c++) {
            size_t w = strlen(ctl_member(dev, keys[c], cell, sizeof cell));
            if (w > width[c])
                width[c] = w;
        }
    }
    for (int c = 0; c < CTL_COLUMNS; c++)
        print_cell(f, head[c], width[c], c + 1 == CTL_COLUMNS);
    json_array_foreach(devices, i, dev)
    {
        for (int c = 0; c < CTL_COLUMNS; c++)
            print_cell(f, ctl_member(dev, keys[c], cell, sizeof cell), width[c],
                       c + 1 == CTL_COLUMNS);
    }
}

int ctl_device_id_valid(const char *s)
{
    if (s == NULL || strlen(s) != 30 || strncmp(s, "dev_", 4) != 0)
        return 0;
    for (size_t i = 4; i < 30; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '2' && s[i] <= '7')))
            return 0;
    return 1;
}

/* Splits "key=value" at the first '='; the key must be non-empty. */
static int split_kv(const char *arg, const char **eq, char *err, size_t errcap)
{
    *eq = strchr(arg, '=');
    if (*eq == NULL || *eq == arg) {
        snprintf(err, errcap, "expected key=value, got '%.64s'", arg);
        return PHY_EINVAL;
    }
    return 0;
}

int ctl_kv_apply(json_t *patch, const char *arg, char *err, size_t errcap)
{
    const char *eq, *key;
    json_t *obj = patch, *val;
    char part[CTL_KEY_MAX + 1];

    if (split_kv(arg, &eq, err, errcap) != 0)
        return PHY_EINVAL;
    if ((size_t)(eq - arg) > CTL_KEY_MAX) {
        snprintf(err, errcap, "key longer than %d bytes", CTL_KEY_MAX);
        return PHY_EINVAL;
    }
    /* The value: JSON when it parses, else the text itself. */
    val = json_loads(eq + 1, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    if (val == NULL)
        val = json_string(eq + 1);
    if (val == NULL) {
        snprintf(err, errcap, "value of '%.*s' is not valid UTF-8", (int)(eq - arg), arg);
        return PHY_EINVAL;
    }
    key = arg;
    for (;;) {
        const char *dot = memchr(key, '.', (size_t)(eq - key));
        const char *end = dot != NULL ? dot : eq;
        size_t n = (size_t)(end - key);
        json_t *cur;

        if (n == 0) {
            snprintf(err, errcap, "empty part in key '%.*s'", (int)(eq - arg), arg);
            goto fail;
        }
        memcpy(part, key, n);
        part[n] = '\0';
        cur = json_object_get(obj, part);
        if (dot == NULL) {
            if (cur != NULL) {
                snprintf(err, errcap, "key '%.*s' given twice", (int)(eq - arg), arg);
                goto fail;
            }
            if (json_object_set_new(obj, part, val) != 0) {
                snprintf(err, errcap, "key '%.*s' is not valid UTF-8", (int)(eq - arg), arg);
                return PHY_EINVAL; /* set_new released val */
            }
            return 0;
        }
        if (cur == NULL) {
            cur = json_object();
            if (cur == NULL || json_object_set_new(obj, part, cur) != 0) {
                snprintf(err, errcap, "key '%.*s' is not valid UTF-8", (int)(eq - arg), arg);
                goto fail;
            }
        } else if (!json_is_object(cur)) {
            snprintf(err, errcap, "'%s' is already set to a value that is not an object", part);
            goto fail;
        }
        obj = cur;
        key = dot + 1;
    }
fail:
    json_decref(val);
    return PHY_EINVAL;
}

int ctl_tag_apply(json_t *tags, const char *arg, char *err, size_t errcap)
{
    const char *eq;
    char key[CTL_KEY_MAX + 1];
    size_t n;

    if (split_kv(arg, &eq, err, errcap) != 0)
        return PHY_EINVAL;
    n = (size_t)(eq - arg);
    if (n > CTL_KEY_MAX) {
        snprintf(err, errcap, "tag key longer than %d bytes", CTL_KEY_MAX);
        return PHY_EINVAL;
    }
    memcpy(key, arg, n);
    key[n] = '\0';
    if (json_object_get(tags, key) != NULL) {
        snprintf(err, errcap, "tag '%s' given twice", key);
        return PHY_EINVAL;
    }
    if (json_object_set_new(tags, key, json_string(eq + 1)) != 0) {
        snprintf(err, errcap, "tag '%s' is not valid UTF-8", key);
        return PHY_EINVAL;
    }
    return 0;
}

/* Writes s to f with control bytes but '\n' replaced by '?'. */
static void put_clean(const char *s, FILE *f)
{
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        fputc((ch < 0x20 && ch != '\n') || ch == 0x7f ? '?' : ch, f);
    }
}

/* A JSON value as compact text ("-" for absent or null). malloc'd or NULL. */
static char *compact(const json_t *v)
{
    if (v == NULL || json_is_null(v))
        return strdup("-");
    return phy_json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
}

static void kv_line(FILE *f, const char *key, const char *value)
{
    fprintf(f, "%-17s", key);
    put_clean(value, f);
    fputc('\n', f);
}

/* tags object -> "k=v k2=v2" (sorted by key). */
static void tags_text(const json_t *tags, char *out, size_t cap)
{
    const char *k;
    json_t *v;
    size_t len = 0;
    const char *keys[64];
    size_t nk = 0;

    out[0] = '\0';
    if (!json_is_object(tags))
        return;
    json_object_foreach((json_t *)tags, k, v)
    {
        (void)v;
        if (nk < sizeof keys / sizeof keys[0])
            keys[nk++] = k;
    }
    for (size_t i = 1; i < nk; i++) /* insertion sort: at most 64 keys */
        for (size_t j = i; j > 0 && strcmp(keys[j - 1], keys[j]) > 0; j--) {
            const char *t = keys[j];
            keys[j] = keys[j - 1];
            keys[j - 1] = t;
        }
    for (size_t i = 0; i < nk; i++) {
        v = json_object_get(tags, keys[i]);
        int n = snprintf(out + len, cap - len, "%s%s=%s", len ? " " : "", keys[i],
                         json_is_string(v) ? json_string_value(v) : "?");
        if (n < 0 || (size_t)n >= cap - len)
            return;
        len += (size_t)n;
    }
}

static void section(FILE *f, const json_t *twin, const char *name, const char *vkey)
{
    const json_t *ver = json_object_get(twin, vkey);
    char *text =
        phy_json_dumps(json_object_get(twin, name), JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENCODE_ANY);

    if (json_is_integer(ver))
        fprintf(f, "%s (version %lld):\n", name, (long long)json_integer_value(ver));
    else
        fprintf(f, "%s:\n", name);
    if (text == NULL) {
        fprintf(f, "  -\n");
        return;
    }
    for (char *line = text, *nl; line != NULL && *line != '\0'; line = nl) {
        nl = strchr(line, '\n');
        if (nl != NULL)
            *nl++ = '\0';
        fputs("  ", f);
        put_clean(line, f);
        fputc('\n', f);
    }
    free(text);
}

void ctl_print_device(const json_t *dev, FILE *f)
{
    static const char *const keys[] = {
        "device_id",       "serial",         "name",      "state",
        "presence",        "created_at",     "last_seen", "connected_at",
        "disconnected_at", "last_status_at", NULL};
    char cell[CTL_CELL_MAX], tags[1024];
    const json_t *twin = json_object_get(dev, "twin");
    char *st;

    for (size_t i = 0; keys[i] != NULL; i++)
        kv_line(f, keys[i], ctl_member(dev, keys[i], cell, sizeof cell));
    tags_text(json_object_get(dev, "tags"), tags, sizeof tags);
    kv_line(f, "tags", tags[0] != '\0' ? tags : "-");
    st = compact(json_object_get(dev, "last_status"));
    kv_line(f, "last_status", st != NULL ? st : "-");
    free(st);
    if (json_is_object(twin)) {
        section(f, twin, "desired", "desired_version");
        section(f, twin, "reported", "reported_version");
    }
}

void ctl_format_event(const char *type, const char *data, const char *now_text, char *out,
                      size_t cap)
{
    static const char *const skip[] = {"type", "time", "at", "device_id", "tenant", NULL};
    json_t *o = json_loads(data, 0, NULL);
    char t[64], ty[64], id[64], sum[CTL_CELL_MAX * 4];
    const char *k;
    json_t *v, *rest;
    char *text = NULL;

    ctl_clean(type, ty, sizeof ty);
    if (!json_is_object(o)) {
        ctl_clean(now_text, t, sizeof t);
        snprintf(out, cap, "%s %s - %s", t, ty, ctl_clean(data, sum, sizeof sum));
        json_decref(o);
        return;
    }
    if (json_is_string(json_object_get(o, "time")))
        ctl_member(o, "time", t, sizeof t);
    else if (json_is_string(json_object_get(o, "at")))
        ctl_member(o, "at", t, sizeof t);
    else
        ctl_clean(now_text, t, sizeof t);
    ctl_member(o, "device_id", id, sizeof id);
    rest = json_object();
    json_object_foreach(o, k, v)
    {
        int skipped = 0;
        for (size_t i = 0; skip[i] != NULL; i++)
            if (strcmp(k, skip[i]) == 0)
                skipped = 1;
        if (!skipped && rest != NULL)
            json_object_set(rest, k, v);
    }
    if (rest != NULL && json_object_size(rest) > 0)
        text = phy_json_dumps(rest, JSON_COMPACT);
    if (text != NULL) {
        ctl_clean(text, sum, sizeof sum);
        snprintf(out, cap, "%s %s %s %s", t, ty, id, sum);
    } else {
        snprintf(out, cap, "%s %s %s", t, ty, id);
    }
    free(text);
    json_decref(rest);
    json_decref(o);
}
