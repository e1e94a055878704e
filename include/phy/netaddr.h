/* I/O-free IP address classes: CIDR lists (trusted proxies, explicit DNS nets) and
 * the test for a public unicast address (what a DNS answer may lead the proxy to). */
#ifndef PHY_NETADDR_H
#define PHY_NETADDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* One network: 16 bytes (IPv4 as ::ffff:a.b.c.d) and a prefix length 0..128. */
struct phy_cidr {
    uint8_t addr[16];
    unsigned bits;
};

/* An address as 16 bytes (IPv4 mapped into ::ffff:0:0/96) from a sockaddr of family
 * AF_INET or AF_INET6. 0 or PHY_EINVAL. */
int phy_addr16(const struct sockaddr *sa, uint8_t out[16]);

/* Parses "1.2.3.0/24", "10.0.0.1" (a /32), "fd00::/8" or "::1" into out. An IPv4
 * prefix is stored mapped (bits + 96). 0 or PHY_EINVAL. */
int phy_cidr_parse(const char *s, struct phy_cidr *out);

/* Parses a comma-separated list of CIDRs ("A,B,…"); appends to *list (realloc'd,
 * *n updated). 0, PHY_EINVAL (the bad item in err) or PHY_ENOMEM. */
int phy_cidr_list_parse(const char *s, struct phy_cidr **list, size_t *n, char *err, size_t errcap);

/* 1 when the 16-byte address a lies in c. */
int phy_cidr_match(const struct phy_cidr *c, const uint8_t a[16]);

/* 1 when a lies in any of list[0..n). */
int phy_cidr_list_match(const struct phy_cidr *list, size_t n, const uint8_t a[16]);

/* 1 when a is a public unicast address: not unspecified, loopback, private
 * (10/8, 172.16/12, 192.168/16, fc00::/7), shared (100.64/10), link-local
 * (169.254/16 — cloud metadata lives there — fe80::/10), multicast, broadcast,
 * reserved (0/8, 240/4), documentation or benchmarking ranges, nor an IPv6 form
 * that embeds a non-public IPv4 address (mapped, NAT64 64:ff9b::/96, 6to4). */
int phy_addr_is_public(const uint8_t a[16]);

#endif
