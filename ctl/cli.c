/* phyctl helpers without network I/O: URL and argv handling, output formatting. */
#include "cli.h"

#include <string.h>

#include "phy/client.h"
#include "phy/err.h"
#include "phy/http.h"

#define CTL_CELL_MAX 256
#define CTL_COLUMNS 5

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
    static const char *const head[CTL_COLUMNS] = {"DEVICE ID", "SERIAL", "NAME", "STATE",
                                                  "CREATED"};
    static const char *const keys[CTL_COLUMNS] = {"device_id", "serial", "name", "state",
                                                  "created_at"};
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
