/* Command-line flags and INI files parsed against one option table. */
#include "phy/config.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

#include "phy/err.h"

#define CONFIG_FLAG "config"

/* Where a value comes from: the INI file (lists append) or argv (lists replace). */
enum cfg_source { CFG_FILE, CFG_CLI };

struct cfg_parse {
    const struct phy_opt *opts;
    unsigned flags;                /* PHY_CONFIG_* */
    unsigned char *cli_list_reset; /* per option: argv already replaced the file's list */
    const char *file;
    char *err;
    size_t errcap;
    int failed;     /* the INI handler recorded a message */
    char what[160]; /* INI handler message, prefixed with FILE:LINE afterwards */
};

static size_t opt_count(const struct phy_opt *opts)
{
    size_t n = 0;
    while (opts != NULL && opts[n].name != NULL)
        n++;
    return n;
}

static const struct phy_opt *opt_find(const struct phy_opt *opts, const char *name, size_t name_len,
                                      size_t *idx)
{
    for (size_t i = 0; opts != NULL && opts[i].name != NULL; i++) {
        if (strlen(opts[i].name) == name_len && memcmp(opts[i].name, name, name_len) == 0) {
            *idx = i;
            return &opts[i];
        }
    }
    return NULL;
}

/* Parses a whole decimal string within [min, max]. 0 or PHY_EINVAL. */
static int parse_long(const char *s, long min, long max, long *out)
{
    char *end = NULL;
    long v;

    if (s[0] == '\0' || s[0] == ' ' || s[0] == '\t')
        return PHY_EINVAL;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return PHY_EINVAL;
    *out = v;
    return 0;
}

/* true/false, yes/no, on/off, 1/0, any case. 0 or PHY_EINVAL. */
static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};

    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return PHY_EINVAL;
}

/* Stores value into opt's destination. On a bad value writes "<what>: expected ..."
 * into msg (the caller prefixes "--" or FILE:LINE). 0 or negative. */
static int opt_apply(struct cfg_parse *cp, size_t idx, const char *value, enum cfg_source src,
                     char *msg, size_t msgcap)
{
    const struct phy_opt *o = &cp->opts[idx];

    switch (o->type) {
    case PHY_OPT_STR: {
        char **dest = o->dest;
        char *copy = strdup(value);
        if (copy == NULL) {
            snprintf(msg, msgcap, "%s: out of memory", o->name);
            return PHY_ENOMEM;
        }
        free(*dest);
        *dest = copy;
        return 0;
    }
    case PHY_OPT_INT: {
        long v;
        if (parse_long(value, o->min, o->max, &v) != 0) {
            snprintf(msg, msgcap, "%s: expected an integer in %ld..%ld", o->name, o->min, o->max);
            return PHY_EINVAL;
        }
        *(long *)o->dest = v;
        return 0;
    }
    case PHY_OPT_BOOL: {
        int v;
        if (parse_bool(value, &v) != 0) {
            snprintf(msg, msgcap, "%s: expected true or false", o->name);
            return PHY_EINVAL;
        }
        *(int *)o->dest = v;
        return 0;
    }
    case PHY_OPT_LIST: {
        struct phy_strlist *l = o->dest;
        if (src == CFG_CLI && !cp->cli_list_reset[idx]) {
            phy_strlist_free(l);
            cp->cli_list_reset[idx] = 1;
        }
        if (phy_strlist_add(l, value) != 0) {
            snprintf(msg, msgcap, "%s: out of memory", o->name);
            return PHY_ENOMEM;
        }
        return 0;
    }
    }
    snprintf(msg, msgcap, "%s: bad option type", o->name);
    return PHY_EINVAL;
}

/* inih callback: any section, keys are option names. Returns 0 to flag an error;
 * only the first message is kept because ini_parse reports the first error line. */
static int ini_cb(void *user, const char *section, const char *name, const char *value)
{
    struct cfg_parse *cp = user;
    size_t idx;
    int rc;

    (void)section;
    if (name == NULL)
        return 1;
    if (opt_find(cp->opts, name, strlen(name), &idx) == NULL) {
        if (cp->flags & PHY_CONFIG_SHARED_FILE)
            return 1; /* another table's key in a file shared with it */
        if (!cp->failed)
            snprintf(cp->what, sizeof cp->what, "unknown key '%s'", name);
        cp->failed = 1;
        return 0;
    }
    if (cp->failed)
        return 1; /* keep the first message; stop changing state */
    rc = opt_apply(cp, idx, value != NULL ? value : "", CFG_FILE, cp->what, sizeof cp->what);
    if (rc != 0) {
        cp->failed = 1;
        return 0;
    }
    return 1;
}

static int load_file(struct cfg_parse *cp, const char *file)
{
    int line;

    cp->file = file;
    line = ini_parse(file, ini_cb, cp);
    if (line == 0)
        return 0;
    if (line == -1)
        snprintf(cp->err, cp->errcap, "cannot open config file %s: %s", file, strerror(errno));
    else if (line < 0)
        snprintf(cp->err, cp->errcap, "%s: out of memory", file);
    else if (cp->failed)
        snprintf(cp->err, cp->errcap, "%s:%d: %s", file, line, cp->what);
    else
        snprintf(cp->err, cp->errcap, "%s:%d: syntax error", file, line);
    return PHY_EINVAL;
}

/* Finds "--config FILE" / "--config=FILE" and "--help"/"-h" before "--". */
static int prescan(int argc, char **argv, int first, const char **file, int *help, char *err,
                   size_t errcap)
{
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;

        if (strcmp(a, "--") == 0)
            break;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *help = 1;
            continue;
        }
        if (strcmp(a, "--" CONFIG_FLAG) == 0) {
            if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0) {
                snprintf(err, errcap, "--" CONFIG_FLAG ": missing value");
                return PHY_EINVAL;
            }
            val = argv[++i];
        } else if (strncmp(a, "--" CONFIG_FLAG "=", sizeof CONFIG_FLAG + 2) == 0) {
            val = a + sizeof CONFIG_FLAG + 2;
        } else {
            continue;
        }
        if (*file != NULL) {
            snprintf(err, errcap, "--" CONFIG_FLAG " given more than once");
            return PHY_EINVAL;
        }
        if (val[0] == '\0') {
            snprintf(err, errcap, "--" CONFIG_FLAG ": missing value");
            return PHY_EINVAL;
        }
        *file = val;
    }
    return 0;
}

/* Applies argv over what the file set; see the header for the grammar. */
static int parse_args(struct cfg_parse *cp, int argc, char **argv, int first, char **pos,
                      size_t npos_cap, size_t *npos)
{
    int options_done = 0;

    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const char *name, *eq, *value;
        size_t name_len, idx;
        const struct phy_opt *o;
        char msg[192];
        int rc;

        if (options_done || strncmp(a, "--", 2) != 0) {
            if (pos == NULL || *npos >= npos_cap) {
                snprintf(cp->err, cp->errcap, "unexpected argument '%s'", a);
                return PHY_EINVAL;
            }
            pos[(*npos)++] = argv[i];
            continue;
        }
        if (a[2] == '\0') {
            options_done = 1;
            continue;
        }
        name = a + 2;
        eq = strchr(name, '=');
        name_len = eq != NULL ? (size_t)(eq - name) : strlen(name);
        if (name_len == sizeof CONFIG_FLAG - 1 && memcmp(name, CONFIG_FLAG, name_len) == 0) {
            if (eq == NULL)
                i++; /* its value, checked by prescan */
            continue;
        }
        o = opt_find(cp->opts, name, name_len, &idx);
        if (o == NULL) {
            snprintf(cp->err, cp->errcap, "unknown option --%.*s",
                     name_len > INT_MAX ? INT_MAX : (int)name_len, name);
            return PHY_EINVAL;
        }
        if (eq != NULL) {
            value = eq + 1;
        } else if (o->type == PHY_OPT_BOOL) {
            value = "true";
        } else {
            if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0) {
                snprintf(cp->err, cp->errcap, "--%s: missing value", o->name);
                return PHY_EINVAL;
            }
            value = argv[++i];
        }
        rc = opt_apply(cp, idx, value, CFG_CLI, msg, sizeof msg);
        if (rc != 0) {
            snprintf(cp->err, cp->errcap, "--%s", msg);
            return rc;
        }
    }
    return 0;
}

/* Parses the INI file named by --config (if any), then argv over it. 0 or negative
 * with a one-line message in err. Destinations may be partly filled on failure:
 * phy_config_free releases them either way. */
int phy_config_parse_ex(const struct phy_opt *opts, unsigned flags, int argc, char **argv,
                        int first, char **pos, size_t npos_cap, size_t *npos, int *want_help,
                        char *err, size_t errcap)
{
    struct cfg_parse cp;
    const char *file = NULL;
    char dummy_err[1];
    size_t dummy_npos, nopts;
    int dummy_help, rc;

    if (err == NULL || errcap == 0) {
        err = dummy_err;
        errcap = sizeof dummy_err;
    }
    err[0] = '\0';
    if (npos == NULL)
        npos = &dummy_npos;
    if (want_help == NULL)
        want_help = &dummy_help;
    *npos = 0;
    *want_help = 0;
    if (first < 0 || argc < first) {
        snprintf(err, errcap, "bad argument range");
        return PHY_EINVAL;
    }
    rc = prescan(argc, argv, first, &file, want_help, err, errcap);
    if (rc != 0 || *want_help)
        return rc; /* --help wins: the caller prints usage and exits */

    memset(&cp, 0, sizeof cp);
    cp.opts = opts;
    cp.flags = flags;
    cp.err = err;
    cp.errcap = errcap;
    nopts = opt_count(opts);
    cp.cli_list_reset = calloc(nopts + 1, 1);
    if (cp.cli_list_reset == NULL) {
        snprintf(err, errcap, "out of memory");
        return PHY_ENOMEM;
    }
    if (file != NULL) {
        rc = load_file(&cp, file);
        if (rc != 0)
            goto out_free;
    }
    rc = parse_args(&cp, argc, argv, first, pos, npos_cap, npos);
out_free:
    free(cp.cli_list_reset);
    return rc;
}

int phy_config_parse(const struct phy_opt *opts, int argc, char **argv, int first, char **pos,
                     size_t npos_cap, size_t *npos, int *want_help, char *err, size_t errcap)
{
    return phy_config_parse_ex(opts, 0, argc, argv, first, pos, npos_cap, npos, want_help, err,
                               errcap);
}

static const char *opt_meta(enum phy_opt_type t)
{
    switch (t) {
    case PHY_OPT_STR:
        return " VALUE";
    case PHY_OPT_INT:
        return " N";
    case PHY_OPT_BOOL:
        return "";
    case PHY_OPT_LIST:
        return " VALUE";
    }
    return "";
}

static void help_line(FILE *f, const char *label1, const char *label2, size_t width,
                      const char *help)
{
    size_t len = strlen(label1) + strlen(label2);

    fprintf(f, "  %s%s", label1, label2);
    for (; len < width + 2; len++)
        fputc(' ', f);
    fprintf(f, "%s\n", help != NULL ? help : "");
}

/* One aligned line per option, then --config, --help and --version. f is a FILE *. */
void phy_config_print_help(const struct phy_opt *opts, void *f)
{
    FILE *out = f;
    size_t width = sizeof "-h, --help" - 1;

    if (out == NULL)
        return;
    if (sizeof "--" CONFIG_FLAG " FILE" - 1 > width)
        width = sizeof "--" CONFIG_FLAG " FILE" - 1;
    for (size_t i = 0; opts != NULL && opts[i].name != NULL; i++) {
        size_t w = 2 + strlen(opts[i].name) + strlen(opt_meta(opts[i].type));
        if (w > width)
            width = w;
    }
    for (size_t i = 0; opts != NULL && opts[i].name != NULL; i++) {
        char label[160];
        snprintf(label, sizeof label, "--%s", opts[i].name);
        help_line(out, label, opt_meta(opts[i].type), width, opts[i].help);
    }
    help_line(out, "--" CONFIG_FLAG, " FILE", width,
              "read options from an INI file (keys are option names)");
    help_line(out, "-h, --help", "", width, "show this help and exit");
    help_line(out, "--version", "", width, "print the version and the git description and exit");
}

/* Frees STR and LIST destinations and resets them to NULL / empty. */
void phy_config_free(const struct phy_opt *opts)
{
    for (size_t i = 0; opts != NULL && opts[i].name != NULL; i++) {
        if (opts[i].dest == NULL)
            continue;
        if (opts[i].type == PHY_OPT_STR) {
            char **dest = opts[i].dest;
            free(*dest);
            *dest = NULL;
        } else if (opts[i].type == PHY_OPT_LIST) {
            phy_strlist_free(opts[i].dest);
        }
    }
}

/* Appends a copy of s. 0 or PHY_ENOMEM (l unchanged). */
int phy_strlist_add(struct phy_strlist *l, const char *s)
{
    char **items;
    char *copy;

    if (l->n >= SIZE_MAX / sizeof *items - 1)
        return PHY_ENOMEM;
    copy = strdup(s);
    if (copy == NULL)
        return PHY_ENOMEM;
    items = realloc(l->items, (l->n + 1) * sizeof *items);
    if (items == NULL) {
        free(copy);
        return PHY_ENOMEM;
    }
    items[l->n++] = copy;
    l->items = items;
    return 0;
}

/* Frees every item and the array; l becomes empty. NULL is a no-op. */
void phy_strlist_free(struct phy_strlist *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}
