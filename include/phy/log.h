/* One-line event logging to stderr: key=value (logfmt, the default) or JSON. */
#ifndef PHY_LOG_H
#define PHY_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum phy_log_level { PHY_LOG_DEBUG, PHY_LOG_INFO, PHY_LOG_WARN, PHY_LOG_ERROR };

/* --log-format: logfmt (key=value, the default) or json (one object per line, every
 * value a string, the same keys). */
enum phy_log_format { PHY_LOG_LOGFMT, PHY_LOG_JSON };

/* Sets the process's minimum level and program name (borrowed, static). Not
 * thread-safe: call once at start-up. When stderr is the journal (JOURNAL_STREAM
 * names it, as systemd sets for a service), each line starts with the syslog
 * priority of its level ("<3>" error, "<4>" warn, "<6>" info, "<7>" debug), which
 * journald reads and strips. */
void phy_log_init(const char *prog, enum phy_log_level min);

/* Sets the line format (process-wide, like phy_log_init: call at start-up). */
void phy_log_set_format(enum phy_log_format f);

/* Parses "logfmt" or "json" (NULL: logfmt). 0 or PHY_EINVAL. */
int phy_log_format_parse(const char *s, enum phy_log_format *out);

/* Writes "ts=2026-11-26T04:48:35.123Z level=info prog=phyhub event=<event> <fmt...>\n"
 * with one write(2) so that concurrent lines never interleave. fmt is printf-style
 * key=value text chosen by the caller; values that may contain spaces must be
 * quoted with phy_log_quote. Lines are cut at 2 KiB. Thread-safe. */
void phy_log(enum phy_log_level lvl, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Rewrites one logfmt line (len bytes, no newline) as a JSON object into out (cap,
 * at least 64): key=value and key="quoted \"value\"" pairs become "key":"value"
 * members, \xNN escapes are decoded, JSON escapes added. A line that does not fit is
 * cut after the last whole member and gets "truncated":"1". Returns the length
 * written (out NUL-terminated, no newline). I/O-free. */
size_t phy_log_to_json(const char *line, size_t len, char *out, size_t cap);

/* Copies s into out (cap) as a quoted, escaped log value: "a b\"c" with control
 * bytes as \xNN; truncated to fit. Returns out. */
char *phy_log_quote(const char *s, char *out, unsigned cap);

#endif
