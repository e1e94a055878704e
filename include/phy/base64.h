/* Base64 (RFC 4648 section 4) and base64url without padding (section 5). */
#ifndef PHY_BASE64_H
#define PHY_BASE64_H

#include <stddef.h>

/* Encoded length without the NUL terminator. */
size_t phy_base64_encoded_len(size_t n, int url);

/* Encodes n bytes into out (capacity cap, must hold encoded_len + 1 for the NUL).
 * url=0: standard alphabet with '=' padding; url=1: base64url, no padding.
 * Returns the length written or PHY_ETOOBIG. */
int phy_base64_encode(const unsigned char *in, size_t n, char *out, size_t cap, int url);

/* Decodes strictly (no whitespace; url=0 requires correct padding, url=1 forbids
 * it; non-zero trailing bits rejected) into out (capacity cap). Returns the decoded
 * length, PHY_EINVAL on bad input, PHY_ETOOBIG when out is too small. */
int phy_base64_decode(const char *in, size_t n, unsigned char *out, size_t cap, int url);

#endif
