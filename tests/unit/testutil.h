/* Small helpers shared by the unit tests: private temporary paths. */
#ifndef PHY_TEST_UTIL_H
#define PHY_TEST_UTIL_H

#include <stdio.h>
#include <string.h>

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

#endif
