/* One-line key=value event logging to stderr. */
#ifndef PHY_LOG_H
#define PHY_LOG_H

#include <stdarg.h>

enum phy_log_level { PHY_LOG_DEBUG, PHY_LOG_INFO, PHY_LOG_WARN, PHY_LOG_ERROR };

/* Sets the process's minimum level and program name (borrowed, static). Not
 * thread-safe: call once at start-up. */
void phy_log_init(const char *prog, enum phy_log_level min);

/* Writes "ts=2026-11-26T04:48:35.123Z level=info prog=phyhub event=<event> <fmt...>\n"
 * with one write(2) so that concurrent lines never interleave. fmt is printf-style
 * key=value text chosen by the caller; values that may contain spaces must be
 * quoted with phy_log_quote. Lines are cut at 2 KiB. Thread-safe. */
void phy_log(enum phy_log_level lvl, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies s into out (cap) as a quoted, escaped log value: "a b\"c" with control
 * bytes as \xNN; truncated to fit. Returns out. */
char *phy_log_quote(const char *s, char *out, unsigned cap);

#endif
