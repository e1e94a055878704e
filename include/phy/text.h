/* Small text rules used by every program: UTF-8 and hex digits. I/O-free. */
#ifndef PHY_TEXT_H
#define PHY_TEXT_H

#include <stddef.h>

/* Length (1-4) of the valid UTF-8 sequence at p[0..n), or 0 when it is not one:
 * strict RFC 3629 (no overlongs, no surrogates, nothing above U+10FFFF). n > 0. */
size_t phy_utf8_seq_len(const unsigned char *p, size_t n);

/* 1 when s[0..n) is entirely valid UTF-8 (see phy_utf8_seq_len). */
int phy_utf8_valid(const void *s, size_t n);

/* 1 when c is one of [A-Za-z0-9._-]: the characters of serials, tag keys, file and
 * log names. */
int phy_name_char(int c);

/* The value 0-15 of a hex digit (either case), or -1. */
int phy_hexval(int c);

#endif
