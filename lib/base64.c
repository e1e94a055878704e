/* Strict base64 (RFC 4648 section 4) and unpadded base64url (section 5) codecs. */
#include "phy/base64.h"

#include <limits.h>
#include <stdint.h>

#include "phy/err.h"

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Value of one alphabet character, or -1 when it is not in the chosen alphabet. */
static int b64_value(unsigned char c, int url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

/* Encoded length without the NUL terminator (SIZE_MAX when it would overflow). */
size_t phy_base64_encoded_len(size_t n, int url)
{
    if (n / 3 > (SIZE_MAX - 4) / 4)
        return SIZE_MAX;
    if (!url)
        return (n + 2) / 3 * 4;
    return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
}

/* Encodes n bytes into out with a NUL; returns the length or PHY_ETOOBIG. */
int phy_base64_encode(const unsigned char *in, size_t n, char *out, size_t cap, int url)
{
    const char *alpha = url ? b64_url : b64_std;
    size_t len = phy_base64_encoded_len(n, url);
    size_t i, o = 0;

    if (len >= (size_t)INT_MAX || cap < len + 1)
        return PHY_ETOOBIG;
    for (i = 0; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        out[o++] = alpha[v >> 6 & 63];
        out[o++] = alpha[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        if (!url) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        out[o++] = alpha[v >> 6 & 63];
        if (!url)
            out[o++] = '=';
    }
    out[o] = '\0';
    return (int)o;
}

/* Strict decode; see the header for the rules. */
int phy_base64_decode(const char *in, size_t n, unsigned char *out, size_t cap, int url)
{
    size_t data_len = n, tail, full, need, i, o = 0;
    int v[4];

    if (n > (size_t)INT_MAX)
        return PHY_ETOOBIG;
    if (!url) {
        if (n % 4 != 0)
            return PHY_EINVAL;
        if (n >= 1 && in[n - 1] == '=') {
            data_len--;
            if (n >= 2 && in[n - 2] == '=')
                data_len--;
        }
    }
    tail = data_len % 4;
    if (tail == 1)
        return PHY_EINVAL;
    full = data_len / 4;
    need = full * 3 + (tail ? tail - 1 : 0);
    for (i = 0; i < data_len; i++)
        if (b64_value((unsigned char)in[i], url) < 0)
            return PHY_EINVAL;
    if (need > cap)
        return PHY_ETOOBIG;
    for (i = 0; i < full * 4; i += 4) {
        uint32_t w;
        v[0] = b64_value((unsigned char)in[i], url);
        v[1] = b64_value((unsigned char)in[i + 1], url);
        v[2] = b64_value((unsigned char)in[i + 2], url);
        v[3] = b64_value((unsigned char)in[i + 3], url);
        w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[o++] = (unsigned char)(w >> 16);
        out[o++] = (unsigned char)(w >> 8);
        out[o++] = (unsigned char)w;
    }
    if (tail == 2) {
        v[0] = b64_value((unsigned char)in[i], url);
        v[1] = b64_value((unsigned char)in[i + 1], url);
        if (v[1] & 0x0f)
            return PHY_EINVAL;
        out[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
    } else if (tail == 3) {
        v[0] = b64_value((unsigned char)in[i], url);
        v[1] = b64_value((unsigned char)in[i + 1], url);
        v[2] = b64_value((unsigned char)in[i + 2], url);
        if (v[2] & 0x03)
            return PHY_EINVAL;
        out[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
        out[o++] = (unsigned char)((v[1] & 0x0f) << 4 | v[2] >> 2);
    }
    return (int)o;
}
