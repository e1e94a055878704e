/* Test-only LD_PRELOAD shim: moves the wall clock (CLOCK_REALTIME and friends,
 * gettimeofday, time) by the whole seconds written in the file named by
 * $PHY_CLOCK_SHIFT_FILE, re-read at most every 50 ms, so that a test can step the
 * clock of a running daemon. CLOCK_MONOTONIC is untouched, as a real step leaves it. */
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

static clock_gettime_fn real_clock_gettime(void)
{
    static _Atomic(clock_gettime_fn) fn;
    clock_gettime_fn f = atomic_load(&fn);
    if (!f) {
        f = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
        atomic_store(&fn, f);
    }
    return f;
}

static long long shift_s(void)
{
    static _Atomic long long cached, next_read_ms;
    struct timespec now;
    const char *path = getenv("PHY_CLOCK_SHIFT_FILE");
    if (!path || real_clock_gettime()(CLOCK_MONOTONIC, &now) != 0)
        return 0;
    long long ms = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    if (ms >= atomic_load(&next_read_ms)) {
        FILE *f = fopen(path, "r");
        long long v = 0;
        if (f) {
            if (fscanf(f, "%lld", &v) == 1)
                atomic_store(&cached, v);
            fclose(f);
        }
        atomic_store(&next_read_ms, ms + 50);
    }
    return atomic_load(&cached);
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
    int rc = real_clock_gettime()(id, ts);
    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
        ts->tv_sec += shift_s();
    return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
    struct timespec ts;
    (void)tz;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return -1;
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
    return 0;
}

time_t time(time_t *out)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return (time_t)-1;
    if (out)
        *out = ts.tv_sec;
    return ts.tv_sec;
}
