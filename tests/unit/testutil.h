/* Small helpers shared by the unit tests: private temporary paths. */
#ifndef PHY_TEST_UTIL_H
#define PHY_TEST_UTIL_H

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Writes the mkdtemp/mkstemp template "/tmp/<prefix>" followed by six 'X' into buf
 * (cap bytes) and returns buf, or NULL when it does not fit. */
static inline char *test_tmp_template(char *buf, size_t cap, const char *prefix)
{
    int n = snprintf(buf, cap, "/tmp/%s", prefix);
    if (n < 0 || (size_t)n + 7 > cap)
        return NULL;
    memset(buf + n, 'X', 6);
    buf[n + 6] = '\0';
    return buf;
}

/* 1 when fn(arg) run in a forked child dies of SIGABRT (a PHY_ASSERT that does not
 * hold), 0 when it returns or dies otherwise. Its output goes to /dev/null. */
static inline int test_aborts(void (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *null = freopen("/dev/null", "w", stderr);
        (void)null;
        fn(arg);
        _exit(0);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return 0;
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

#endif
