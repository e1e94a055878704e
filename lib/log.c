/* One-line key=value event logging to stderr, one write(2) per line. */
#include "phy/log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048 /* whole line including the newline */

/* The one exception to "no global mutable state in lib/": the program name and the
 * minimum level are process-wide by nature, set once by phy_log_init at start-up
 * before any thread exists, and only read afterwards. */
static const char *log_prog = "phy";
static enum phy_log_level log_min = PHY_LOG_INFO;

static const char *level_name(enum phy_log_level lvl)
{
    switch (lvl) {
    case PHY_LOG_DEBUG:
        return "debug";
    case PHY_LOG_INFO:
        return "info";
    case PHY_LOG_WARN:
        return "warn";
    case PHY_LOG_ERROR:
        return "error";
    }
    return "error";
}

/* Sets the program name (borrowed, must outlive logging) and minimum level. */
void phy_log_init(const char *prog, enum phy_log_level min)
{
    log_prog = prog != NULL && prog[0] != '\0' ? prog : "phy";
    log_min = min;
}

/* Formats "ts=... level=... prog=... event=... <fmt>" into a stack buffer, cut at
 * LOG_LINE_MAX, and writes it with a single write(2) to fd 2. Stray CR/LF from the
 * caller's values become spaces so that one event stays one line. */
void phy_log(enum phy_log_level lvl, const char *event, const char *fmt, ...)
{
    char buf[LOG_LINE_MAX];
    const size_t body_max = sizeof buf - 1; /* keep one byte for the newline */
    char ts[32];
    struct timespec now;
    struct tm tm;
    size_t len;
    int r;

    if (lvl < log_min)
        return;
    if (clock_gettime(CLOCK_REALTIME, &now) != 0 || gmtime_r(&now.tv_sec, &tm) == NULL ||
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        memcpy(ts, "1970-01-01T00:00:00", sizeof "1970-01-01T00:00:00");
    r = snprintf(buf, sizeof buf, "ts=%s.%03ldZ level=%s prog=%s event=%s", ts,
                 (long)(now.tv_nsec / 1000000), level_name(lvl), log_prog,
                 event != NULL && event[0] != '\0' ? event : "-");
    len = r < 0 ? 0 : (size_t)r > body_max ? body_max : (size_t)r;
    if (fmt != NULL && fmt[0] != '\0' && len + 1 < body_max) {
        va_list ap;
        buf[len++] = ' ';
        va_start(ap, fmt);
        r = vsnprintf(buf + len, sizeof buf - len, fmt, ap);
        va_end(ap);
        if (r <= 0)
            len--; /* nothing formatted: drop the separator */
        else
            len += (size_t)r > body_max - len ? body_max - len : (size_t)r;
    }
    for (size_t i = 0; i < len; i++) {
        if (buf[i] == '\n' || buf[i] == '\r')
            buf[i] = ' ';
    }
    buf[len++] = '\n';
    while (write(STDERR_FILENO, buf, len) < 0 && errno == EINTR) {
    }
}

/* Quotes s as "..." with \" and \\ escaped and control bytes as \xNN, always
 * closing the quote; an escape is never split when cutting to cap. Returns out. */
char *phy_log_quote(const char *s, char *out, unsigned cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    if (out == NULL || cap == 0)
        return out;
    if (cap < 3) {
        out[0] = '\0';
        return out;
    }
    out[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)(s != NULL ? s : ""); *p; p++) {
        char esc[4];
        size_t n;
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            n = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = hex[*p >> 4];
            esc[3] = hex[*p & 15];
            n = 4;
        } else {
            esc[0] = (char)*p;
            n = 1;
        }
        if (o + n + 2 > cap) /* room for the closing quote and the NUL */
            break;
        memcpy(out + o, esc, n);
        o += n;
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}
