/* Command-line flags and INI configuration from one option table (inih for files). */
#ifndef PHY_CONFIG_H
#define PHY_CONFIG_H

#include <stddef.h>

enum phy_opt_type {
    PHY_OPT_STR,  /* char **: strdup'd value (freed by phy_config_free); starts NULL */
    PHY_OPT_INT,  /* long *: decimal, range [min, max] */
    PHY_OPT_BOOL, /* int *: flag without value sets 1; INI accepts true/false/1/0/yes/no */
    PHY_OPT_LIST, /* struct phy_strlist *: repeatable, each use appends */
};

struct phy_strlist {
    char **items; /* owned */
    size_t n;
};

/* An option table is an array ended by an entry whose name is NULL. */
struct phy_opt {
    const char *name; /* long flag without "--" and INI key, e.g. "code-ttl" */
    enum phy_opt_type type;
    void *dest;
    long min, max;    /* PHY_OPT_INT only */
    const char *help; /* one line for --help; the default is part of the text */
};

/* Parses argv[first..argc): "--name value", "--name=value", "--flag". A "--config
 * FILE" flag loads FILE first (INI, keys as option names, any section, "#" or ";"
 * comments) and then applies the command line over it; list options from the file
 * are replaced by the command line's when both give some. Positional arguments
 * (not starting with "--") are stored in order into pos (capacity npos_cap) and
 * counted in *npos; "--" ends options. "--help" or "-h" sets *want_help and
 * returns 0 at once (nothing else parsed). Call phy_config_free even on failure.
 * Returns 0, or PHY_EINVAL with a one-line message in err (e.g. "unknown option
 * --foo", "--code-ttl: expected an integer in 1..86400"). */
int phy_config_parse(const struct phy_opt *opts, int argc, char **argv, int first, char **pos,
                     size_t npos_cap, size_t *npos, int *want_help, char *err, size_t errcap);

/* Flags of phy_config_parse_ex. PHY_CONFIG_SHARED_FILE: the --config file is another
 * option table's (phyhub admin reads the daemon's file for its --db); keys this table
 * does not know are skipped instead of refused. */
#define PHY_CONFIG_SHARED_FILE 1u

/* phy_config_parse with flags (PHY_CONFIG_*); phy_config_parse passes 0. */
int phy_config_parse_ex(const struct phy_opt *opts, unsigned flags, int argc, char **argv,
                        int first, char **pos, size_t npos_cap, size_t *npos, int *want_help,
                        char *err, size_t errcap);

/* Prints "  --name VALUE   help" lines for every option to f (a FILE *), then the
 * lines of --config, --help and --version (which each main handles with
 * phy_buildinfo_wanted before parsing). */
void phy_config_print_help(const struct phy_opt *opts, void *f);

/* Frees what phy_config_parse allocated into string and list destinations. */
void phy_config_free(const struct phy_opt *opts);

/* Appends a copy of s to l. 0 or PHY_ENOMEM. */
int phy_strlist_add(struct phy_strlist *l, const char *s);
void phy_strlist_free(struct phy_strlist *l);

#endif
