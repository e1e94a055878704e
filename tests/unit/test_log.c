/* Unit tests for lib/log.c: value quoting, line format, levels and the 2 KiB cut. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "phy/err.h"
#include "phy/log.h"

static void test_quote_plain(void **state)
{
    char out[64];
    (void)state;
    assert_ptr_equal(phy_log_quote("hello world", out, sizeof out), out);
    assert_string_equal(out, "\"hello world\"");
    assert_string_equal(phy_log_quote("", out, sizeof out), "\"\"");
    assert_string_equal(phy_log_quote(NULL, out, sizeof out), "\"\"");
    /* UTF-8 passes through */
    assert_string_equal(phy_log_quote("caf\xc3\xa9", out, sizeof out), "\"caf\xc3\xa9\"");
}

static void test_quote_escapes(void **state)
{
    char out[64];
    (void)state;
    assert_string_equal(phy_log_quote("a b\"c", out, sizeof out), "\"a b\\\"c\"");
    assert_string_equal(phy_log_quote("back\\slash", out, sizeof out), "\"back\\\\slash\"");
    assert_string_equal(phy_log_quote("l1\nl2\r\t\x01\x7f", out, sizeof out),
                        "\"l1\\x0al2\\x0d\\x09\\x01\\x7f\"");
    assert_string_equal(phy_log_quote("x\x1b[31m", out, sizeof out), "\"x\\x1b[31m\"");
}

static void test_quote_truncation(void **state)
{
    char out[16];
    (void)state;
    /* cap 8: quote + 5 chars + quote + NUL */
    assert_string_equal(phy_log_quote("abcdefghij", out, 8), "\"abcde\"");
    /* an escape is never split */
    assert_string_equal(phy_log_quote("abcd\n", out, 8), "\"abcd\"");
    assert_string_equal(phy_log_quote("abc\n", out, 9), "\"abc\"");
    assert_string_equal(phy_log_quote("abc\n", out, 10), "\"abc\\x0a\"");
    assert_string_equal(phy_log_quote("abcd\"", out, 8), "\"abcd\"");
    assert_string_equal(phy_log_quote("abc\"", out, 8), "\"abc\\\"\"");
    /* tiny buffers */
    assert_string_equal(phy_log_quote("abc", out, 3), "\"\"");
    memset(out, 'z', sizeof out);
    assert_string_equal(phy_log_quote("abc", out, 2), "");
    assert_string_equal(phy_log_quote("abc", out, 1), "");
    out[0] = 'z';
    phy_log_quote("abc", out, 0);
    assert_int_equal(out[0], 'z');
    /* long input into exactly sized buffer */
    {
        char big[300], q[100];
        memset(big, 'q', sizeof big - 1);
        big[sizeof big - 1] = '\0';
        phy_log_quote(big, q, sizeof q);
        assert_int_equal(strlen(q), sizeof q - 1);
        assert_int_equal(q[0], '"');
        assert_int_equal(q[sizeof q - 2], '"');
    }
}

struct capture {
    int saved_fd;
    int rd;
};

/* Sends fd 2 into a non-blocking pipe for the duration of a test. */
static int capture_setup(void **state)
{
    struct capture *c = calloc(1, sizeof *c);
    int p[2];
    if (c == NULL || pipe(p) != 0)
        return -1;
    c->saved_fd = dup(STDERR_FILENO);
    if (c->saved_fd < 0 || dup2(p[1], STDERR_FILENO) < 0)
        return -1;
    close(p[1]);
    c->rd = p[0];
    if (fcntl(c->rd, F_SETFL, fcntl(c->rd, F_GETFL) | O_NONBLOCK) != 0)
        return -1;
    *state = c;
    return 0;
}

static int capture_teardown(void **state)
{
    struct capture *c = *state;
    dup2(c->saved_fd, STDERR_FILENO);
    close(c->saved_fd);
    close(c->rd);
    free(c);
    unsetenv("JOURNAL_STREAM");
    phy_log_set_format(PHY_LOG_LOGFMT);
    phy_log_init("phy", PHY_LOG_INFO);
    return 0;
}

/* Reads what is in the pipe now (the write already happened synchronously). */
static size_t drain(struct capture *c, char *buf, size_t cap)
{
    size_t got = 0;
    for (;;) {
        ssize_t r = read(c->rd, buf + got, cap - 1 - got);
        if (r > 0) {
            got += (size_t)r;
            if (got == cap - 1)
                break;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        break;
    }
    buf[got] = '\0';
    return got;
}

static void assert_matches(const char *s, const char *pattern)
{
    regex_t re;
    assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    int rc = regexec(&re, s, 0, NULL, 0);
    regfree(&re);
    if (rc != 0)
        fail_msg("'%s' does not match '%s'", s, pattern);
}

static void test_log_format(void **state)
{
    struct capture *c = *state;
    char buf[4096], q[64];
    time_t before = time(NULL);
    struct tm tm;
    char year[8];

    phy_log_init("phytest", PHY_LOG_INFO);
    phy_log(PHY_LOG_INFO, "started", "port=%d name=%s", 8443, phy_log_quote("a b", q, sizeof q));
    assert_true(drain(c, buf, sizeof buf) > 0);
    assert_matches(buf, "^ts=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
                        "level=info prog=phytest event=started port=8443 name=\"a b\"\n$");
    /* the timestamp is UTC "now" */
    gmtime_r(&before, &tm);
    strftime(year, sizeof year, "%Y", &tm);
    assert_memory_equal(buf + 3, year, 4);

    phy_log(PHY_LOG_ERROR, "failed", "%s", "");
    drain(c, buf, sizeof buf);
    assert_matches(buf, "^ts=[^ ]+ level=error prog=phytest event=failed\n$");

    phy_log(PHY_LOG_WARN, "w", "x=1");
    drain(c, buf, sizeof buf);
    assert_matches(buf, "^ts=[^ ]+ level=warn prog=phytest event=w x=1\n$");
}

static void test_log_levels(void **state)
{
    struct capture *c = *state;
    char buf[4096];

    phy_log_init("phytest", PHY_LOG_WARN);
    phy_log(PHY_LOG_DEBUG, "d", "a=1");
    phy_log(PHY_LOG_INFO, "i", "a=1");
    assert_int_equal(drain(c, buf, sizeof buf), 0);
    phy_log(PHY_LOG_ERROR, "e", "a=1");
    drain(c, buf, sizeof buf);
    assert_matches(buf, "level=error prog=phytest event=e a=1\n$");
    phy_log_init("phytest", PHY_LOG_DEBUG);
    phy_log(PHY_LOG_DEBUG, "d", "a=1");
    drain(c, buf, sizeof buf);
    assert_matches(buf, "level=debug prog=phytest event=d a=1\n$");
}

static void test_log_newlines_stay_one_line(void **state)
{
    struct capture *c = *state;
    char buf[4096];

    phy_log_init("phytest", PHY_LOG_INFO);
    phy_log(PHY_LOG_INFO, "evil", "user=%s", "x\nts=fake level=error");
    drain(c, buf, sizeof buf);
    assert_non_null(strchr(buf, '\n'));
    assert_int_equal(strchr(buf, '\n') - buf, (long)strlen(buf) - 1);
}

static void test_log_long_line_cut(void **state)
{
    struct capture *c = *state;
    char buf[8192];
    char *msg = malloc(5001);
    size_t n;

    assert_non_null(msg);
    memset(msg, 'm', 5000);
    msg[5000] = '\0';
    phy_log_init("phytest", PHY_LOG_INFO);
    phy_log(PHY_LOG_INFO, "big", "msg=%s", msg);
    n = drain(c, buf, sizeof buf);
    assert_int_equal(n, 2048);
    assert_int_equal(buf[2047], '\n');
    assert_int_equal(buf[2046], 'm');
    assert_null(memchr(buf, '\n', 2047));
    assert_matches(buf, "^ts=[^ ]+ level=info prog=phytest event=big msg=m+\n$");
    /* exactly one line was written */
    assert_int_equal(drain(c, buf, sizeof buf), 0);
    free(msg);
}

static void test_to_json(void **state)
{
    const char *line = "ts=2026-12-03T10:00:00.000Z level=info prog=p event=e port=8443 "
                       "name=\"a \\\"b\\\" \\x01\\\\\" empty= tail=\"x y\"";
    char out[512];
    size_t n;
    enum phy_log_format f;

    (void)state;
    n = phy_log_to_json(line, strlen(line), out, sizeof out);
    assert_string_equal(out, "{\"ts\":\"2026-12-03T10:00:00.000Z\",\"level\":\"info\","
                             "\"prog\":\"p\",\"event\":\"e\",\"port\":\"8443\","
                             "\"name\":\"a \\\"b\\\" \\u0001\\\\\",\"empty\":\"\","
                             "\"tail\":\"x y\"}");
    assert_int_equal(n, strlen(out));
    assert_int_equal(phy_log_format_parse("json", &f), 0);
    assert_int_equal(f, PHY_LOG_JSON);
    assert_int_equal(phy_log_format_parse(NULL, &f), 0);
    assert_int_equal(f, PHY_LOG_LOGFMT);
    assert_int_equal(phy_log_format_parse("xml", &f), PHY_EINVAL);
}

static void test_to_json_cut(void **state)
{
    char line[600], out[64];
    size_t n;

    (void)state;
    snprintf(line, sizeof line, "a=1 b=2 msg=%0500d", 7);
    n = phy_log_to_json(line, strlen(line), out, sizeof out);
    assert_string_equal(out, "{\"a\":\"1\",\"b\":\"2\",\"truncated\":\"1\"}");
    assert_int_equal(n, strlen(out));
    /* The first member alone too long: only the mark. */
    n = phy_log_to_json(line + 8, strlen(line + 8), out, sizeof out);
    assert_string_equal(out, "{\"truncated\":\"1\"}");
    /* Every byte of a 2 KiB logfmt line of control characters fits the daemon's buffer. */
    {
        char ctl[2048], big[4096];
        memset(ctl, 1, sizeof ctl);
        memcpy(ctl, "k=", 2);
        n = phy_log_to_json(ctl, sizeof ctl, big, sizeof big);
        assert_true(n < sizeof big);
        assert_int_equal(big[n - 1], '}');
    }
}

static void test_log_json_lines(void **state)
{
    struct capture *c = *state;
    char buf[4096], q[64];

    phy_log_init("phytest", PHY_LOG_INFO);
    phy_log_set_format(PHY_LOG_JSON);
    phy_log(PHY_LOG_WARN, "started", "port=%d name=%s", 8443,
            phy_log_quote("a \"b\"", q, sizeof q));
    drain(c, buf, sizeof buf);
    assert_matches(buf, "^\\{\"ts\":\"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{12}Z\",\"level\":\"warn\","
                        "\"prog\":\"phytest\",\"event\":\"started\",\"port\":\"8443\","
                        "\"name\":\"a \\\\\"b\\\\\"\"\\}\n$");
}

static void test_log_journal_priority(void **state)
{
    struct capture *c = *state;
    char buf[4096], js[64];
    struct stat st;

    assert_int_equal(fstat(STDERR_FILENO, &st), 0);
    snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", js, 1);
    phy_log_init("phytest", PHY_LOG_DEBUG);
    phy_log(PHY_LOG_WARN, "w", "x=1");
    drain(c, buf, sizeof buf);
    assert_matches(buf, "^<4>ts=[^ ]+ level=warn prog=phytest event=w x=1\n$");
    phy_log(PHY_LOG_DEBUG, "d", NULL);
    drain(c, buf, sizeof buf);
    assert_matches(buf, "^<7>ts=");
    phy_log_set_format(PHY_LOG_JSON);
    phy_log(PHY_LOG_ERROR, "e", NULL);
    drain(c, buf, sizeof buf);
    assert_matches(buf, "^<3>\\{\"ts\":");
    /* Another stream (a child whose stderr went elsewhere): no prefix. */
    setenv("JOURNAL_STREAM", "1:2", 1);
    phy_log_set_format(PHY_LOG_LOGFMT);
    phy_log_init("phytest", PHY_LOG_INFO);
    phy_log(PHY_LOG_INFO, "i", NULL);
    drain(c, buf, sizeof buf);
    assert_matches(buf, "^ts=");
}

#define C(fn) cmocka_unit_test_setup_teardown(fn, capture_setup, capture_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quote_plain),
        cmocka_unit_test(test_quote_escapes),
        cmocka_unit_test(test_quote_truncation),
        C(test_log_format),
        C(test_log_levels),
        C(test_log_newlines_stay_one_line),
        C(test_log_long_line_cut),
        cmocka_unit_test(test_to_json),
        cmocka_unit_test(test_to_json_cut),
        C(test_log_json_lines),
        C(test_log_journal_priority),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
