/* Unit tests for include/phy/assert.h and lib/assert.c: in the test build a broken
 * PHY_ASSERT logs where, in which function and what, then aborts; a holding one
 * evaluates its condition once and does nothing else. (The test build always has
 * PHY_ASSERTS: CMake refuses it OFF for Debug and sanitizer builds. A release build
 * configured OFF checks here that the condition is not even evaluated.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "phy/assert.h"

#if defined(PHY_ASSERTS) && PHY_ASSERTS

static int double_line; /* the line of double_small's PHY_ASSERT */

static int double_small(int x)
{
    double_line = __LINE__ + 1;
    PHY_ASSERT(x > 0 && x < 1000);
    return 2 * x;
}

static void check_word(const char *s)
{
    PHY_ASSERT(strcmp(s, "ok") == 0);
}

struct child {
    int status;
    char err[4096]; /* what it wrote to stderr */
};

/* Runs fn(arg) in a child whose stderr is a pipe (no core file), then collects its
 * stderr and its wait status. */
static void run_child(void (*fn)(const void *), const void *arg, struct child *out)
{
    int p[2];
    size_t len = 0;
    ssize_t n;
    pid_t pid;

    assert_int_equal(pipe(p), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit none = {0, 0};
        setrlimit(RLIMIT_CORE, &none);
        signal(SIGABRT, SIG_DFL); /* whatever the test runner installed */
        dup2(p[1], STDERR_FILENO);
        close(p[0]);
        close(p[1]);
        fn(arg);
        _exit(0);
    }
    close(p[1]);
    while (len < sizeof out->err - 1 &&
           ((n = read(p[0], out->err + len, sizeof out->err - 1 - len)) > 0 ||
            (n < 0 && errno == EINTR)))
        len += n > 0 ? (size_t)n : 0;
    out->err[len] = '\0';
    close(p[0]);
    assert_int_equal(waitpid(pid, &out->status, 0), pid);
}

static void call_double(const void *arg)
{
    (void)double_small(*(const int *)arg);
}

static void call_check_word(const void *arg)
{
    check_word(arg);
}

static void assert_aborted(const struct child *c)
{
    if (!WIFSIGNALED(c->status))
        fail_msg("child exited (status %d) instead of aborting; stderr: %s", c->status, c->err);
    assert_int_equal(WTERMSIG(c->status), SIGABRT);
}

static void test_broken_aborts_with_where_and_what(void **state)
{
    struct child c;
    char where[128];
    int bad = 1000;
    (void)state;

    assert_int_equal(double_small(1), 2); /* sets double_line */
    run_child(call_double, &bad, &c);
    assert_aborted(&c);
    snprintf(where, sizeof where, " where=tests/unit/test_assert.c:%d ", double_line);
    assert_non_null(strstr(c.err, " level=error "));
    assert_non_null(strstr(c.err, " event=assert_failed "));
    assert_non_null(strstr(c.err, where));
    assert_non_null(strstr(c.err, " func=double_small "));
    assert_non_null(strstr(c.err, " expr=\"x > 0 && x < 1000\"\n"));
    /* one line, nothing after it */
    assert_ptr_equal(strchr(c.err, '\n'), c.err + strlen(c.err) - 1);
}

static void test_expression_is_quoted(void **state)
{
    struct child c;
    (void)state;

    run_child(call_check_word, "no", &c);
    assert_aborted(&c);
    assert_non_null(strstr(c.err, " func=check_word "));
    assert_non_null(strstr(c.err, " expr=\"strcmp(s, \\\"ok\\\") == 0\"\n"));
}

static void test_holding_does_nothing(void **state)
{
    struct child c;
    int good = 21, n = 0;
    (void)state;

    /* in this process: the value goes through, the condition runs exactly once */
    assert_int_equal(double_small(good), 42);
    PHY_ASSERT(++n == 1);
    assert_int_equal(n, 1);
    if (n == 1)
        PHY_ASSERT(n > 0); /* a statement like any other: no dangling else */
    else
        PHY_ASSERT(n <= 0);
    check_word("ok");
    /* in a child: it exits normally and says nothing */
    run_child(call_double, &good, &c);
    assert_true(WIFEXITED(c.status));
    assert_int_equal(WEXITSTATUS(c.status), 0);
    assert_string_equal(c.err, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_broken_aborts_with_where_and_what),
        cmocka_unit_test(test_expression_is_quoted),
        cmocka_unit_test(test_holding_does_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* -DPHY_ASSERTS=OFF, release builds only */

static void test_compiled_out(void **state)
{
    int n = 0;
    (void)state;
    PHY_ASSERT(++n == 5);
    assert_int_equal(n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compiled_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#endif
