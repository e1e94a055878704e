/* Proxy tokens: a device's proof, to phyproxy, that it holds issued credentials.
 *
 * token = KID "." base64url(HMAC-SHA-256(key, "phystack-proxy-v1\n" || device_id))
 *
 * The key (32 bytes, a 0600 key file) is shared by a region's hubs and proxies;
 * hubs sign with one key, proxies accept every key they were given, so keys rotate
 * by adding the new one to the proxies first. Stateless: the proxy needs no store. */
#ifndef PHY_PROXYTOKEN_H
#define PHY_PROXYTOKEN_H

#include <stddef.h>

#define PHY_PROXY_KID_MAX 16 /* [a-z0-9-], 1..16 */
#define PHY_PROXY_MAC_B64 43 /* 32 bytes in base64url */
#define PHY_PROXY_TOKEN_MAX (PHY_PROXY_KID_MAX + 1 + PHY_PROXY_MAC_B64)
#define PHY_PROXY_KEY_LEN 32

struct phy_proxy_key {
    char kid[PHY_PROXY_KID_MAX + 1];
    unsigned char key[PHY_PROXY_KEY_LEN];
};

/* Loads "KID=FILE" (the flag's form) into out: the file must exist (mode 0600,
 * 32 bytes) unless create is set, when a missing file is made. 0, or PHY_EINVAL /
 * PHY_EIO with a message in err. */
int phy_proxy_key_load(const char *spec, int create, struct phy_proxy_key *out, char *err,
                       size_t errcap);

/* The token of device_id under k, NUL-terminated, into out. 0 or PHY_E*. */
int phy_proxy_token_make(const struct phy_proxy_key *k, const char *device_id,
                         char out[PHY_PROXY_TOKEN_MAX + 1]);

/* 1 when token (len bytes, not NUL-terminated) is device_id's token under the key
 * its KID names among keys[0..n); the MAC is compared in constant time. 0 otherwise. */
int phy_proxy_token_verify(const struct phy_proxy_key *keys, size_t n, const char *device_id,
                           const char *token, size_t len);

#endif
