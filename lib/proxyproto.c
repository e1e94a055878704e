/* PROXY protocol v2 header: build and parse; see include/phy/proxyproto.h. */
#include "phy/proxyproto.h"

#include <netinet/in.h>
#include <string.h>

#include "phy/assert.h"
#include "phy/err.h"
#include "phy/text.h"

const unsigned char phy_pp2_sig[PHY_PP2_SIG_LEN] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                    0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

#define VER_LOCAL 0x20
#define VER_PROXY 0x21
#define FAM_TCP4 0x11
#define FAM_TCP6 0x21
#define ADDR4_LEN 12
#define ADDR6_LEN 36

static void put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static unsigned get16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

static size_t put_tlv(unsigned char *p, unsigned type, const void *v, size_t n)
{
    p[0] = (unsigned char)type;
    put16(p + 1, (unsigned)n);
    memcpy(p + 3, v, n);
    return 3 + n;
}

int phy_pp2_build(const struct sockaddr *src, const struct sockaddr *dst, const char *ident,
                  int verified, unsigned char *out, size_t cap)
{
    size_t ilen = ident != NULL ? strlen(ident) : 0;
    size_t alen, len = PHY_PP2_HEAD_LEN;
    unsigned char *p;
    unsigned char v = verified ? 1 : 0;

    PHY_ASSERT(src != NULL && dst != NULL);
    if (src->sa_family != dst->sa_family || ilen > PHY_CONNECT_MAX_IDENT)
        return PHY_EINVAL;
    if (src->sa_family == AF_INET)
        alen = ADDR4_LEN;
    else if (src->sa_family == AF_INET6)
        alen = ADDR6_LEN;
    else
        return PHY_EINVAL;
    if (cap < len + alen + (ilen ? 3 + ilen + 4 : 0))
        return PHY_ETOOBIG;
    memcpy(out, phy_pp2_sig, PHY_PP2_SIG_LEN);
    out[12] = VER_PROXY;
    p = out + PHY_PP2_HEAD_LEN;
    if (src->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const void *)src, *d4 = (const void *)dst;
        out[13] = FAM_TCP4;
        memcpy(p, &s4->sin_addr, 4);
        memcpy(p + 4, &d4->sin_addr, 4);
        memcpy(p + 8, &s4->sin_port, 2);
        memcpy(p + 10, &d4->sin_port, 2);
    } else {
        const struct sockaddr_in6 *s6 = (const void *)src, *d6 = (const void *)dst;
        out[13] = FAM_TCP6;
        memcpy(p, &s6->sin6_addr, 16);
        memcpy(p + 16, &d6->sin6_addr, 16);
        memcpy(p + 32, &s6->sin6_port, 2);
        memcpy(p + 34, &d6->sin6_port, 2);
    }
    p += alen;
    if (ilen > 0) {
        p += put_tlv(p, PHY_PP2_TLV_IDENT, ident, ilen);
        p += put_tlv(p, PHY_PP2_TLV_VERIFIED, &v, 1);
    }
    len = (size_t)(p - out);
    put16(out + 14, (unsigned)(len - PHY_PP2_HEAD_LEN));
    return (int)len;
}

/* sn_/dev_ and the characters lib/connect.c allows; the proxy checked it already,
 * this only keeps what the hub logs sane. */
static int ident_ok(const unsigned char *s, size_t n)
{
    if (n == 0 || n > PHY_CONNECT_MAX_IDENT)
        return 0;
    if (!(n > 3 && memcmp(s, "sn_", 3) == 0) && !(n > 4 && memcmp(s, "dev_", 4) == 0))
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!phy_name_char(s[i]))
            return 0;
    }
    return 1;
}

int phy_pp2_parse(const unsigned char *buf, size_t n, struct phy_pp2 *out)
{
    size_t body, total, alen, off;

    memset(out, 0, sizeof *out);
    if (memcmp(buf, phy_pp2_sig, n < PHY_PP2_SIG_LEN ? n : PHY_PP2_SIG_LEN) != 0)
        return PHY_ENOTFOUND;
    if (n < PHY_PP2_HEAD_LEN)
        return PHY_EAGAIN;
    if (buf[12] != VER_PROXY && buf[12] != VER_LOCAL)
        return PHY_EINVAL;
    body = get16(buf + 14);
    total = PHY_PP2_HEAD_LEN + body;
    if (total > PHY_PP2_MAX_LEN)
        return PHY_EINVAL;
    if (n < total)
        return PHY_EAGAIN;
    if (buf[12] == VER_LOCAL) {
        out->local = 1;
        return (int)total; /* addresses, if any, are ignored by the spec */
    }
    if (buf[13] == FAM_TCP4)
        alen = ADDR4_LEN;
    else if (buf[13] == FAM_TCP6)
        alen = ADDR6_LEN;
    else
        return PHY_EINVAL;
    if (body < alen)
        return PHY_EINVAL;
    const unsigned char *a = buf + PHY_PP2_HEAD_LEN;
    if (alen == ADDR4_LEN) {
        struct sockaddr_in *s4 = (void *)&out->src, *d4 = (void *)&out->dst;
        s4->sin_family = d4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, a, 4);
        memcpy(&d4->sin_addr, a + 4, 4);
        memcpy(&s4->sin_port, a + 8, 2);
        memcpy(&d4->sin_port, a + 10, 2);
    } else {
        struct sockaddr_in6 *s6 = (void *)&out->src, *d6 = (void *)&out->dst;
        s6->sin6_family = d6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, a, 16);
        memcpy(&d6->sin6_addr, a + 16, 16);
        memcpy(&s6->sin6_port, a + 32, 2);
        memcpy(&d6->sin6_port, a + 34, 2);
    }
    for (off = PHY_PP2_HEAD_LEN + alen; off < total;) {
        unsigned type;
        size_t vlen;

        if (total - off < 3)
            return PHY_EINVAL;
        type = buf[off];
        vlen = get16(buf + off + 1);
        if (total - off - 3 < vlen)
            return PHY_EINVAL;
        const unsigned char *v = buf + off + 3;
        if (type == PHY_PP2_TLV_IDENT) {
            if (!ident_ok(v, vlen))
                return PHY_EINVAL;
            memcpy(out->ident, v, vlen);
            out->ident[vlen] = '\0';
        } else if (type == PHY_PP2_TLV_VERIFIED) {
            if (vlen != 1 || v[0] > 1)
                return PHY_EINVAL;
            out->verified = v[0];
        }
        off += 3 + vlen;
    }
    if (out->verified && out->ident[0] == '\0')
        return PHY_EINVAL;
    return (int)total;
}
