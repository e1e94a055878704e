/* The PROXY protocol version 2 header (HAProxy's proxy-protocol.txt, section 2.2),
 * I/O-free: phyproxy builds it in front of a tunnelled stream, phyhub parses it.
 *
 * Besides the addresses it carries two PhyStack TLVs: PHY_PP2_TLV_IDENT, the
 * device identifier the client gave the proxy (sn_… or dev_…), and
 * PHY_PP2_TLV_VERIFIED, one byte, 1 when the proxy checked a proxy token for it. */
#ifndef PHY_PROXYPROTO_H
#define PHY_PROXYPROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "phy/connect.h"

#define PHY_PP2_SIG_LEN 12
#define PHY_PP2_HEAD_LEN 16 /* signature, version/command, family, length */
#define PHY_PP2_MAX_LEN 512 /* what we build, and the most we accept */
#define PHY_PP2_TLV_IDENT 0xE0
#define PHY_PP2_TLV_VERIFIED 0xE1

extern const unsigned char phy_pp2_sig[PHY_PP2_SIG_LEN];

struct phy_pp2 {
    int local;                             /* LOCAL command (a health check): no addresses */
    struct sockaddr_storage src;           /* the client as the proxy saw it */
    struct sockaddr_storage dst;           /* the address the client connected to */
    char ident[PHY_CONNECT_MAX_IDENT + 1]; /* "" when absent */
    int verified;
};

/* Writes the header for a TCP stream from src to dst (both AF_INET or both
 * AF_INET6) with ident (may be NULL or "") and verified. Returns the length or
 * PHY_EINVAL / PHY_ETOOBIG (cap too small). */
int phy_pp2_build(const struct sockaddr *src, const struct sockaddr *dst, const char *ident,
                  int verified, unsigned char *out, size_t cap);

/* Parses a header at the start of buf[0..n). Returns its total length (> 0) with
 * out filled, PHY_EAGAIN when buf is a prefix of a header that may still be
 * valid, PHY_ENOTFOUND when buf does not start with the signature, PHY_EINVAL when
 * it is malformed (bad version/command/family, length over PHY_PP2_MAX_LEN,
 * truncated addresses or TLVs, an identifier not of the allowed shape). */
int phy_pp2_parse(const unsigned char *buf, size_t n, struct phy_pp2 *out);

#endif
