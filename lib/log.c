/* One-line event logging to stderr (logfmt or JSON), one write(2) per line. */
#include "phy/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "phy/err.h"
#include "phy/text.h"

#define LOG_LINE_MAX 2048 /* whole line including the newline */
#define LOG_JSON_MAX 4096 /* a JSON line: escapes make it longer than its logfmt */

/* The one exception to "no global mutable state in lib/": the program name and the
 * minimum level are process-wide by nature, set once by phy_log_init at start-up
 * before any thread exists, and only read afterwards. */
static const char *log_prog = "phy";
static enum phy_log_level log_min = PHY_LOG_INFO;
static enum phy_log_format log_format = PHY_LOG_LOGFMT;
static int log_journal; /* stderr is the journal: lines carry a "<N>" priority prefix */

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

/* systemd sets JOURNAL_STREAM=DEV:INO for a service whose stderr is the journal; a
 * child that inherited the variable but not the stream (stderr redirected) sees
 * another device and inode. */
static int stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    char tail;

    if (js == NULL || sscanf(js, "%llu:%llu%c", &dev, &ino, &tail) != 2 ||
        fstat(STDERR_FILENO, &st) != 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* Sets the program name (borrowed, must outlive logging) and minimum level. */
void phy_log_init(const char *prog, enum phy_log_level min)
{
    log_prog = prog != NULL && prog[0] != '\0' ? prog : "phy";
    log_min = min;
    log_journal = stderr_is_journal();
}

void phy_log_set_format(enum phy_log_format f)
{
    log_format = f;
}

int phy_log_format_parse(const char *s, enum phy_log_format *out)
{
    if (s == NULL || strcmp(s, "logfmt") == 0)
        *out = PHY_LOG_LOGFMT;
    else if (strcmp(s, "json") == 0)
        *out = PHY_LOG_JSON;
    else
        return PHY_EINVAL;
    return 0;
}

/* A bounded output: put() counts every byte and stores those that fit before cap, so
 * a caller learns whether a whole member fitted and can roll back to its start. */
struct jbuf {
    char *p;
    size_t n, cap;
};

static void put(struct jbuf *b, char c)
{
    if (b->n < b->cap)
        b->p[b->n] = c;
    b->n++;
}

/* c as JSON string content: quote and backslash escaped, control bytes as \u00XX. */
static void put_json_char(struct jbuf *b, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";

    if (c == '"' || c == '\\') {
        put(b, '\\');
        put(b, (char)c);
    } else if (c < 0x20 || c == 0x7f) {
        put(b, '\\');
        put(b, 'u');
        put(b, '0');
        put(b, '0');
        put(b, hex[c >> 4]);
        put(b, hex[c & 15]);
    } else {
        put(b, (char)c);
    }
}

/* The value line[v..vend) as JSON string content; a quoted value's \", \\ and \xNN
 * escapes (phy_log_quote's) are decoded first. */
static void put_value(struct jbuf *b, const char *line, size_t v, size_t vend, int quoted)
{
    for (size_t j = v; j < vend; j++) {
        unsigned char c = (unsigned char)line[j];
        if (quoted && c == '\\' && j + 1 < vend) {
            if (line[j + 1] == 'x' && j + 3 < vend && phy_hexval(line[j + 2]) >= 0 &&
                phy_hexval(line[j + 3]) >= 0) {
                c = (unsigned char)(phy_hexval(line[j + 2]) * 16 + phy_hexval(line[j + 3]));
                j += 3;
            } else {
                c = (unsigned char)line[++j];
            }
        }
        put_json_char(b, c);
    }
}

size_t phy_log_to_json(const char *line, size_t len, char *out, size_t cap)
{
    static const char trunc[] = "\"truncated\":\"1\"";
    struct jbuf b;
    size_t i = 0, members = 0;

    if (out == NULL || cap < 64)
        return 0;
    /* Members stop short of the room for ',"truncated":"1"}' and the NUL. */
    b = (struct jbuf){.p = out, .n = 0, .cap = cap - (sizeof trunc + 2)};
    put(&b, '{');
    while (i < len) {
        size_t start = b.n, k0, kend, v0, vend;
        int quoted = 0;

        while (i < len && line[i] == ' ')
            i++;
        if (i >= len)
            break;
        k0 = i;
        while (i < len && line[i] != '=' && line[i] != ' ')
            i++;
        kend = i;
        if (i < len && line[i] == '=')
            i++;
        if (i < len && line[i] == '"') { /* up to the unescaped closing quote */
            quoted = 1;
            v0 = ++i;
            while (i < len && line[i] != '"')
                i += line[i] == '\\' && i + 1 < len ? 2 : 1;
            vend = i < len ? i : len;
            if (i < len)
                i++;
        } else {
            v0 = i;
            while (i < len && line[i] != ' ')
                i++;
            vend = i;
        }
        if (members > 0)
            put(&b, ',');
        put(&b, '"');
        put_value(&b, line, k0, kend, 0);
        put(&b, '"');
        put(&b, ':');
        put(&b, '"');
        put_value(&b, line, v0, vend, quoted);
        put(&b, '"');
        if (b.n > b.cap) { /* this member does not fit: end with the mark */
            b.n = start;
            b.cap = cap;
            if (members > 0)
                put(&b, ',');
            for (size_t j = 0; j < sizeof trunc - 1; j++)
                put(&b, trunc[j]);
            break;
        }
        members++;
    }
    b.cap = cap;
    put(&b, '}');
    out[b.n] = '\0';
    return b.n;
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
    if (log_format == PHY_LOG_JSON || log_journal) {
        /* "<N>" (3 bytes) + the JSON or the logfmt line + the newline. */
        static const char prio[] = {'7', '6', '4', '3'};
        char out[LOG_JSON_MAX];
        size_t o = 0;
        if (log_journal) {
            out[o++] = '<';
            out[o++] = prio[lvl >= PHY_LOG_DEBUG && lvl <= PHY_LOG_ERROR ? lvl : PHY_LOG_ERROR];
            out[o++] = '>';
        }
        if (log_format == PHY_LOG_JSON) {
            o += phy_log_to_json(buf, len, out + o, sizeof out - o - 1);
        } else {
            memcpy(out + o, buf, len);
            o += len;
        }
        out[o++] = '\n';
        while (write(STDERR_FILENO, out, o) < 0 && errno == EINTR) {
        }
        return;
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
