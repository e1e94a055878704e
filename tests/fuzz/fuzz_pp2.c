/* libFuzzer target: the PROXY protocol v2 parser (phyhub reads it before TLS), the CIDR
 * parser, and a build/parse round trip of what the parser accepted. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "phy/err.h"
#include "phy/netaddr.h"
#include "phy/proxyproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct phy_pp2 pp, again;
    unsigned char buf[PHY_PP2_MAX_LEN];
    int n = phy_pp2_parse(data, size, &pp);

    if (n > 0) {
        if ((size_t)n > size || n > PHY_PP2_MAX_LEN)
            abort();
        if (!pp.local) {
            int m = phy_pp2_build((struct sockaddr *)&pp.src, (struct sockaddr *)&pp.dst, pp.ident,
                                  pp.verified, buf, sizeof buf);
            if (m <= 0 || phy_pp2_parse(buf, (size_t)m, &again) != m ||
                strcmp(again.ident, pp.ident) != 0 || again.verified != pp.verified ||
                memcmp(&again.src, &pp.src, sizeof pp.src) != 0)
                abort();
        }
    } else if (n != PHY_EAGAIN && n != PHY_ENOTFOUND && n != PHY_EINVAL) {
        abort();
    }
    if (size < 64) {
        char s[64];
        struct phy_cidr c;
        uint8_t a[16] = {0};
        memcpy(s, data, size);
        s[size] = '\0';
        if (phy_cidr_parse(s, &c) == 0) {
            if (c.bits > 128)
                abort();
            memcpy(a, c.addr, 16);
            if (!phy_cidr_match(&c, a))
                abort();
            (void)phy_addr_is_public(a);
        }
    }
    return 0;
}
