/* IP address classes and CIDR lists; see include/phy/netaddr.h. */
#include "phy/netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "phy/assert.h"
#include "phy/err.h"

static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int phy_addr16(const struct sockaddr *sa, uint8_t out[16])
{
    PHY_ASSERT(sa != NULL && out != NULL);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)(const void *)sa;
        memcpy(out, v4mapped, 12);
        memcpy(out + 12, &in4->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
        return 0;
    }
    return PHY_EINVAL;
}

int phy_cidr_parse(const char *s, struct phy_cidr *out)
{
    char buf[64];
    const char *slash = strchr(s, '/');
    size_t alen = slash != NULL ? (size_t)(slash - s) : strlen(s);
    unsigned long bits;
    unsigned max;
    char *end;
    struct in_addr a4;

    memset(out, 0, sizeof *out);
    if (alen == 0 || alen >= sizeof buf)
        return PHY_EINVAL;
    memcpy(buf, s, alen);
    buf[alen] = '\0';
    if (inet_pton(AF_INET, buf, &a4) == 1) {
        memcpy(out->addr, v4mapped, 12);
        memcpy(out->addr + 12, &a4, 4);
        max = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        max = 128;
    } else {
        return PHY_EINVAL;
    }
    bits = max;
    if (slash != NULL) {
        if (slash[1] < '0' || slash[1] > '9')
            return PHY_EINVAL;
        bits = strtoul(slash + 1, &end, 10);
        if (*end != '\0' || bits > max || end - (slash + 1) > 3)
            return PHY_EINVAL;
    }
    out->bits = (unsigned)bits + (max == 32 ? 96 : 0);
    /* Host bits must be zero: "10.0.0.1/8" is a typo more often than a network. */
    for (unsigned i = out->bits; i < 128; i++)
        if (out->addr[i / 8] & (0x80u >> (i % 8)))
            return PHY_EINVAL;
    return 0;
}

int phy_cidr_list_parse(const char *s, struct phy_cidr **list, size_t *n, char *err, size_t errcap)
{
    const char *p = s;

    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        char item[64];
        struct phy_cidr c, *nl;

        if (len == 0 || len >= sizeof item) {
            snprintf(err, errcap, "expected ADDR[/BITS],… got '%.60s'", s);
            return PHY_EINVAL;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        if (phy_cidr_parse(item, &c) != 0) {
            snprintf(err, errcap, "'%s' is not an IP address or network (host bits must be 0)",
                     item);
            return PHY_EINVAL;
        }
        nl = realloc(*list, (*n + 1) * sizeof *nl);
        if (nl == NULL)
            return PHY_ENOMEM;
        nl[*n] = c;
        *list = nl;
        (*n)++;
        if (comma == NULL)
            return 0;
        p = comma + 1;
    }
}

int phy_cidr_match(const struct phy_cidr *c, const uint8_t a[16])
{
    unsigned full = c->bits / 8, rest = c->bits % 8;

    if (memcmp(c->addr, a, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    return ((c->addr[full] ^ a[full]) & (uint8_t)(0xffu << (8 - rest))) == 0;
}

int phy_cidr_list_match(const struct phy_cidr *list, size_t n, const uint8_t a[16])
{
    for (size_t i = 0; i < n; i++)
        if (phy_cidr_match(&list[i], a))
            return 1;
    return 0;
}

static int v4_public(const uint8_t b[4])
{
    uint32_t x = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    static const struct {
        uint32_t net, mask;
    } blocked[] = {
        {0x00000000, 0xff000000}, /* 0/8 this network */
        {0x0a000000, 0xff000000}, /* 10/8 */
        {0x64400000, 0xffc00000}, /* 100.64/10 shared (CGNAT) */
        {0x7f000000, 0xff000000}, /* 127/8 loopback */
        {0xa9fe0000, 0xffff0000}, /* 169.254/16 link-local, cloud metadata */
        {0xac100000, 0xfff00000}, /* 172.16/12 */
        {0xc0000000, 0xffffff00}, /* 192.0.0/24 IETF protocol assignments */
        {0xc0000200, 0xffffff00}, /* 192.0.2/24 documentation */
        {0xc0a80000, 0xffff0000}, /* 192.168/16 */
        {0xc6120000, 0xfffe0000}, /* 198.18/15 benchmarking */
        {0xc6336400, 0xffffff00}, /* 198.51.100/24 documentation */
        {0xcb007100, 0xffffff00}, /* 203.0.113/24 documentation */
        {0xe0000000, 0xf0000000}, /* 224/4 multicast */
        {0xf0000000, 0xf0000000}, /* 240/4 reserved, 255.255.255.255 */
    };

    for (size_t i = 0; i < sizeof blocked / sizeof blocked[0]; i++)
        if ((x & blocked[i].mask) == blocked[i].net)
            return 0;
    return 1;
}

int phy_addr_is_public(const uint8_t a[16])
{
    static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t zero[12] = {0};

    if (memcmp(a, v4mapped, 12) == 0 || memcmp(a, nat64, 12) == 0)
        return v4_public(a + 12);
    if (memcmp(a, zero, 12) == 0)
        return 0; /* ::, ::1 and the deprecated IPv4-compatible forms */
    if (a[0] == 0x20 && a[1] == 0x02)
        return v4_public(a + 2); /* 6to4 embeds an IPv4 address */
    if ((a[0] & 0xfe) == 0xfc)
        return 0; /* fc00::/7 unique local */
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
        return 0; /* fe80::/10 link-local */
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0)
        return 0; /* fec0::/10 site-local (deprecated) */
    if (a[0] == 0xff)
        return 0; /* multicast */
    if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8)
        return 0; /* 2001:db8::/32 documentation */
    if (a[0] == 0x01 && memcmp(a + 1, zero, 7) == 0)
        return 0;                 /* 100::/64 discard */
    return (a[0] & 0xe0) == 0x20; /* only 2000::/3 is global unicast */
}
