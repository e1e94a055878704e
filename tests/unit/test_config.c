/* Unit tests for lib/config.c: flags of every type, INI files, overrides, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "phy/config.h"
#include "phy/err.h"

struct cfg {
    char *listen;
    long code_ttl;
    int verbose;
    struct phy_strlist allow;
    char *pos[4];
    size_t npos;
    int help;
    char err[256];
    struct phy_opt opts[5];
    char dir[64];
    char file[128];
};

static int setup(void **state)
{
    struct cfg *c = calloc(1, sizeof *c);
    if (c == NULL)
        return -1;
    c->code_ttl = 300;
    c->opts[0] = (struct phy_opt){"listen",   PHY_OPT_STR,
                                  &c->listen, 0,
                                  0,          "address:port to listen on (default 127.0.0.1:8443)"};
    c->opts[1] =
        (struct phy_opt){"code-ttl", PHY_OPT_INT, &c->code_ttl,
                         1,          86400,       "seconds a code stays valid (default 300)"};
    c->opts[2] = (struct phy_opt){"verbose", PHY_OPT_BOOL, &c->verbose, 0, 0, "log debug events"};
    c->opts[3] =
        (struct phy_opt){"allow", PHY_OPT_LIST, &c->allow, 0, 0, "allowed host (repeatable)"};
    c->opts[4] = (struct phy_opt){NULL, PHY_OPT_STR, NULL, 0, 0, NULL};
    if (!test_tmp_template(c->dir, sizeof c->dir, "phy_config_") || mkdtemp(c->dir) == NULL) {
        free(c);
        return -1;
    }
    snprintf(c->file, sizeof c->file, "%s/test.ini", c->dir);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct cfg *c = *state;
    phy_config_free(c->opts);
    unlink(c->file);
    rmdir(c->dir);
    free(c);
    return 0;
}

static void write_ini(struct cfg *c, const char *text)
{
    FILE *f = fopen(c->file, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* argv is NULL-terminated; argv[0] is the program, parsing starts at 1. */
static int parse(struct cfg *c, char **argv)
{
    int argc = 0;
    while (argv[argc] != NULL)
        argc++;
    c->err[0] = '\0';
    return phy_config_parse(c->opts, argc, argv, 1, c->pos, 4, &c->npos, &c->help, c->err,
                            sizeof c->err);
}

static void test_every_type(void **state)
{
    struct cfg *c = *state;
    char *argv[] = {"phyhub",  "--listen",  "0.0.0.0:443", "--code-ttl", "60", "--verbose",
                    "--allow", "a.example", "--allow",     "b.example",  NULL};
    assert_int_equal(parse(c, argv), 0);
    assert_string_equal(c->listen, "0.0.0.0:443");
    assert_int_equal(c->code_ttl, 60);
    assert_int_equal(c->verbose, 1);
    assert_int_equal(c->allow.n, 2);
    assert_string_equal(c->allow.items[0], "a.example");
    assert_string_equal(c->allow.items[1], "b.example");
    assert_int_equal(c->npos, 0);
    assert_int_equal(c->help, 0);
}

static void test_equals_form(void **state)
{
    struct cfg *c = *state;
    char *argv[] = {"phyhub",      "--listen=[::1]:8443", "--code-ttl=-0",
                    "--allow=x=y", "--verbose=yes",       "--listen=a=b",
                    NULL};
    c->opts[1].min = 0;
    assert_int_equal(parse(c, argv), 0);
    assert_string_equal(c->listen, "a=b"); /* last wins, value may hold '=' */
    assert_int_equal(c->code_ttl, 0);
    assert_int_equal(c->allow.n, 1);
    assert_string_equal(c->allow.items[0], "x=y");
    assert_int_equal(c->verbose, 1);
}

static void test_bool_values(void **state)
{
    struct cfg *c = *state;
    const char *falses[] = {"false", "no", "0", "off", "FALSE", "Off"};
    const char *trues[] = {"true", "yes", "1", "on", "TRUE", "Yes"};
    char arg[32];
    char *argv[] = {"phyhub", arg, NULL};
    for (size_t i = 0; i < 6; i++) {
        snprintf(arg, sizeof arg, "--verbose=%s", trues[i]);
        c->verbose = 0;
        assert_int_equal(parse(c, argv), 0);
        assert_int_equal(c->verbose, 1);
        snprintf(arg, sizeof arg, "--verbose=%s", falses[i]);
        assert_int_equal(parse(c, argv), 0);
        assert_int_equal(c->verbose, 0);
    }
    snprintf(arg, sizeof arg, "--verbose=maybe");
    assert_int_equal(parse(c, argv), PHY_EINVAL);
    assert_string_equal(c->err, "--verbose: expected true or false");
    snprintf(arg, sizeof arg, "--verbose=");
    assert_int_equal(parse(c, argv), PHY_EINVAL);
}

static void test_bool_does_not_eat_positional(void **state)
{
    struct cfg *c = *state;
    char *argv[] = {"phyhub", "--verbose", "serve", NULL};
    assert_int_equal(parse(c, argv), 0);
    assert_int_equal(c->verbose, 1);
    assert_int_equal(c->npos, 1);
    assert_string_equal(c->pos[0], "serve");
}

static void test_ini_file_with_section(void **state)
{
    struct cfg *c = *state;
    char *argv[] = {"phyhub", "--config", c->file, NULL};
    write_ini(c, "# hub settings\n"
                 "; another comment\n"
                 "[hub]\n"
                 "listen = 127.0.0.1:9000\n"
                 "code-ttl = 120\n"
                 "\n"
                 "[whatever]\n"
                 "verbose = on\n"
                 "allow = one.example\n"
                 "allow = two.example\n");
    assert_int_equal(parse(c, argv), 0);
    assert_string_equal(c->listen, "127.0.0.1:9000");
    assert_int_equal(c->code_ttl, 120);
    assert_int_equal(c->verbose, 1);
    assert_int_equal(c->allow.n, 2);
    assert_string_equal(c->allow.items[0], "one.example");
    assert_string_equal(c->allow.items[1], "two.example");
}

static void test_ini_no_section_and_config_equals(void **state)
{
    struct cfg *c = *state;
    char arg[160];
    char *argv[] = {"phyhub", arg, NULL};
    write_ini(c, "code-ttl=7\nverbose=false\n");
    snprintf(arg, sizeof arg, "--config=%s", c->file);
    c->verbose = 1;
    assert_int_equal(parse(c, argv), 0);
    assert_int_equal(c->code_ttl, 7);
    assert_int_equal(c->verbose, 0);
}

static void test_cli_overrides_file(void **state)
{
    struct cfg *c = *state;
    /* --config comes last: the file is still applied first */
    char *argv[] = {"phyhub", "--code-ttl", "30", "--listen=cli", "--config", c->file, NULL};
    write_ini(c, "[hub]\nlisten = file\ncode-ttl = 120\nverbose = yes\n");
    assert_int_equal(parse(c, argv), 0);
    assert_string_equal(c->listen, "cli");
    assert_int_equal(c->code_ttl, 30);
    assert_int_equal(c->verbose, 1); /* from the file, not overridden */
}

static void test_list_replacement(void **state)
{
    struct cfg *c = *state;
    char *argv_cli[] = {"phyhub", "--config", c->file, "--allow", "c1", "--allow", "c2", NULL};
    char *argv_none[] = {"phyhub", "--config", c->file, NULL};
    write_ini(c, "allow = f1\nallow = f2\nallow = f3\n");
    assert_int_equal(parse(c, argv_cli), 0);
    assert_int_equal(c->allow.n, 2);
    assert_string_equal(c->allow.items[0], "c1");
    assert_string_equal(c->allow.items[1], "c2");
    phy_config_free(c->opts);
    assert_int_equal(c->allow.n, 0);
    assert_null(c->allow.items);
    assert_null(c->listen);
    /* without CLI values the file's list stays */
    assert_int_equal(parse(c, argv_none), 0);
    assert_int_equal(c->allow.n, 3);
    assert_string_equal(c->allow.items[2], "f3");
}

static void test_unknown_option(void **state)
{
    struct cfg *c = *state;
    char *argv[] = {"phyhub", "--foo", "1", NULL};
    char *argv2[] = {"phyhub", "--listen-x=1", NULL};
    assert_int_equal(parse(c, argv), PHY_EINVAL);
    assert_string_equal(c->err, "unknown option --foo");
    assert_int_equal(parse(c, argv2), PHY_EINVAL);
    assert_string_equal(c->err, "unknown option --listen-x");
}

static void test_unknown_ini_key(void **state)
{
    struct cfg *c = *state;
    char *argv[] = {"phyhub", "--config", c->file, NULL};
    char want[256];
    write_ini(c, "[hub]\nlisten = x\n\ncolour = blue\nother = 1\n");
    assert_int_equal(parse(c, argv), PHY_EINVAL);
    snprintf(want, sizeof want, "%s:4: unknown key 'colour'", c->file);
    assert_string_equal(c->err, want);
}

static void test_bad_ini_value_and_syntax(void **state)
{
    struct cfg *c = *state;
    char *argv[] = {"phyhub", "--config", c->file, NULL};
    char want[256];
    write_ini(c, "code-ttl = 0\n");
    assert_int_equal(parse(c, argv), PHY_EINVAL);
    snprintf(want, sizeof want, "%s:1: code-ttl: expected an integer in 1..86400", c->file);
    assert_string_equal(c->err, want);
    write_ini(c, "[hub]\nthis line has no equals\n");
    assert_int_equal(parse(c, argv), PHY_EINVAL);
    snprintf(want, sizeof want, "%s:2: syntax error", c->file);
    assert_string_equal(c->err, want);
}

static void test_missing_file(void **state)
{
    struct cfg *c = *state;
    char *argv[] = {"phyhub", "--config", "/nonexistent/phy.ini", NULL};
    char *argv2[] = {"phyhub", "--config", NULL};
    char *argv3[] = {"phyhub", "--config", "a", "--config", "b", NULL};
    assert_int_equal(parse(c, argv), PHY_EINVAL);
    assert_non_null(strstr(c->err, "cannot open config file /nonexistent/phy.ini"));
    assert_int_equal(parse(c, argv2), PHY_EINVAL);
    assert_string_equal(c->err, "--config: missing value");
    assert_int_equal(parse(c, argv3), PHY_EINVAL);
    assert_string_equal(c->err, "--config given more than once");
}

static void test_bad_int(void **state)
{
    struct cfg *c = *state;
    const char *bad[] = {"abc", "12x", "", " 5", "5 ", "0x10", "99999999999999999999999"};
    char arg[64];
    char *argv[] = {"phyhub", arg, NULL};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(arg, sizeof arg, "--code-ttl=%s", bad[i]);
        assert_int_equal(parse(c, argv), PHY_EINVAL);
        assert_string_equal(c->err, "--code-ttl: expected an integer in 1..86400");
    }
    assert_int_equal(c->code_ttl, 300);
}

static void test_int_range(void **state)
{
    struct cfg *c = *state;
    char *lo[] = {"phyhub", "--code-ttl", "0", NULL};
    char *hi[] = {"phyhub", "--code-ttl", "86401", NULL};
    char *min[] = {"phyhub", "--code-ttl", "1", NULL};
    char *max[] = {"phyhub", "--code-ttl", "86400", NULL};
    char *neg[] = {"phyhub", "--code-ttl", "-5", NULL};
    assert_int_equal(parse(c, lo), PHY_EINVAL);
    assert_string_equal(c->err, "--code-ttl: expected an integer in 1..86400");
    assert_int_equal(parse(c, hi), PHY_EINVAL);
    assert_int_equal(parse(c, neg), PHY_EINVAL);
    assert_int_equal(parse(c, min), 0);
    assert_int_equal(c->code_ttl, 1);
    assert_int_equal(parse(c, max), 0);
    assert_int_equal(c->code_ttl, 86400);
}

static void test_missing_value(void **state)
{
    struct cfg *c = *state;
    char *argv[] = {"phyhub", "--listen", NULL};
    char *argv2[] = {"phyhub", "--listen", "--verbose", NULL};
    assert_int_equal(parse(c, argv), PHY_EINVAL);
    assert_string_equal(c->err, "--listen: missing value");
    assert_int_equal(parse(c, argv2), PHY_EINVAL);
    assert_string_equal(c->err, "--listen: missing value");
}

static void test_positional(void **state)
{
    struct cfg *c = *state;
    char *argv[] = {"phyctl", "device", "--verbose", "list", "--", "--not-an-option", NULL};
    char *too_many[] = {"phyctl", "a", "b", "c", "d", "e", NULL};
    assert_int_equal(parse(c, argv), 0);
    assert_int_equal(c->npos, 3);
    assert_string_equal(c->pos[0], "device");
    assert_string_equal(c->pos[1], "list");
    assert_string_equal(c->pos[2], "--not-an-option");
    assert_int_equal(c->verbose, 1);
    assert_int_equal(parse(c, too_many), PHY_EINVAL);
    assert_string_equal(c->err, "unexpected argument 'e'");
}

static void test_help(void **state)
{
    struct cfg *c = *state;
    char *argv[] = {"phyhub", "--code-ttl", "5", "--help", NULL};
    char *argv_h[] = {"phyhub", "-h", "--bogus", NULL};
    char *argv_after[] = {"phyhub", "--", "--help", NULL};
    assert_int_equal(parse(c, argv), 0);
    assert_int_equal(c->help, 1);
    assert_int_equal(parse(c, argv_h), 0);
    assert_int_equal(c->help, 1);
    assert_int_equal(parse(c, argv_after), 0);
    assert_int_equal(c->help, 0);
    assert_int_equal(c->npos, 1);
    assert_string_equal(c->pos[0], "--help");
}

/* PHY_CONFIG_SHARED_FILE: another table's keys in the file are skipped; this table's
 * keys still apply and are still checked; the command line still wins. */
static void test_shared_file(void **state)
{
    struct cfg *c = *state;
    char *argv[] = {"phyhub", "--config", c->file, "--code-ttl", "90", "tenant-add", NULL};
    char *bad[] = {"phyhub", "--config", c->file, NULL};

    write_ini(c, "[phyhub]\nregion = eu\nlisten = 10.0.0.1:443\ncolour = blue\n"
                 "code-ttl = 60\nallow = a.example\n");
    assert_int_equal(phy_config_parse_ex(c->opts, PHY_CONFIG_SHARED_FILE, 6, argv, 1, c->pos, 4,
                                         &c->npos, &c->help, c->err, sizeof c->err),
                     0);
    assert_string_equal(c->listen, "10.0.0.1:443");
    assert_int_equal(c->code_ttl, 90);
    assert_int_equal(c->allow.n, 1);
    assert_int_equal(c->npos, 1);
    assert_string_equal(c->pos[0], "tenant-add");
    phy_config_free(c->opts);

    write_ini(c, "colour = blue\ncode-ttl = long\n");
    assert_int_equal(phy_config_parse_ex(c->opts, PHY_CONFIG_SHARED_FILE, 3, bad, 1, c->pos, 4,
                                         &c->npos, &c->help, c->err, sizeof c->err),
                     PHY_EINVAL);
    assert_non_null(strstr(c->err, ":2: code-ttl: expected an integer"));
    /* Without the flag the unknown key is an error again. */
    assert_int_equal(parse(c, bad), PHY_EINVAL);
    assert_non_null(strstr(c->err, ":1: unknown key 'colour'"));
}

static void test_print_help(void **state)
{
    struct cfg *c = *state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    phy_config_print_help(c->opts, f);
    assert_int_equal(fclose(f), 0);
    assert_non_null(strstr(buf, "  --listen VALUE  address:port to listen on (default "
                                "127.0.0.1:8443)\n"));
    assert_non_null(strstr(buf, "  --code-ttl N    seconds a code stays valid"));
    assert_non_null(strstr(buf, "  --verbose       log debug events\n"));
    assert_non_null(strstr(buf, "  --allow VALUE   allowed host (repeatable)\n"));
    assert_non_null(strstr(buf, "  --config FILE   read options"));
    assert_non_null(strstr(buf, "  -h, --help      show"));
    assert_non_null(strstr(buf, "  --version       print the version"));
    free(buf);
}

static void test_strlist(void **state)
{
    struct phy_strlist l = {NULL, 0};
    char s[8] = "abc";
    (void)state;
    assert_int_equal(phy_strlist_add(&l, s), 0);
    s[0] = 'z'; /* the list holds a copy */
    for (int i = 0; i < 100; i++)
        assert_int_equal(phy_strlist_add(&l, "x"), 0);
    assert_int_equal(l.n, 101);
    assert_string_equal(l.items[0], "abc");
    phy_strlist_free(&l);
    assert_int_equal(l.n, 0);
    assert_null(l.items);
    phy_strlist_free(&l);
    phy_strlist_free(NULL);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_every_type),
        T(test_equals_form),
        T(test_bool_values),
        T(test_bool_does_not_eat_positional),
        T(test_ini_file_with_section),
        T(test_ini_no_section_and_config_equals),
        T(test_cli_overrides_file),
        T(test_list_replacement),
        T(test_unknown_option),
        T(test_unknown_ini_key),
        T(test_bad_ini_value_and_syntax),
        T(test_missing_file),
        T(test_bad_int),
        T(test_int_range),
        T(test_missing_value),
        T(test_positional),
        T(test_help),
        T(test_shared_file),
        T(test_print_help),
        cmocka_unit_test(test_strlist),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
