/* Proxy tokens: HMAC of a device ID under a key ID'd shared key (see the header). */
#include "phy/proxytoken.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "phy/base64.h"
#include "phy/crypto.h"
#include "phy/err.h"

static const char label[] = "phystack-proxy-v1\n";

static int kid_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

static int kid_valid(const char *s, size_t n)
{
    if (n == 0 || n > PHY_PROXY_KID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!kid_char(s[i]))
            return 0;
    return 1;
}

int phy_proxy_key_load(const char *spec, int create, struct phy_proxy_key *out, char *err,
                       size_t errcap)
{
    const char *eq = strchr(spec, '=');
    char what[64];
    int rc;

    memset(out, 0, sizeof *out);
    if (eq == NULL || !kid_valid(spec, (size_t)(eq - spec)) || eq[1] == '\0') {
        snprintf(err, errcap,
                 "proxy key: expected KID=FILE with KID 1-%d of a-z 0-9 -, got '%.40s'",
                 PHY_PROXY_KID_MAX, spec);
        return PHY_EINVAL;
    }
    memcpy(out->kid, spec, (size_t)(eq - spec));
    snprintf(what, sizeof what, "proxy key %s", out->kid);
    if (create)
        rc = phy_key_load_or_create(eq + 1, out->key, err, errcap);
    else
        rc = phy_secret_file_open(what, eq + 1, out->key, sizeof out->key, 0, NULL, err, errcap);
    if (rc != 0) {
        if (rc == PHY_ENOTFOUND)
            snprintf(err, errcap, "proxy key %s: %s does not exist (the hub creates it)", out->kid,
                     eq + 1);
        OPENSSL_cleanse(out, sizeof *out);
        return rc == PHY_ENOTFOUND ? PHY_EIO : rc;
    }
    return 0;
}

static int mac_of(const struct phy_proxy_key *k, const char *device_id,
                  char b64[PHY_PROXY_MAC_B64 + 1])
{
    unsigned char mac[32];
    int rc = phy_hmac_sha256(k->key, sizeof k->key, label, sizeof label - 1, device_id,
                             strlen(device_id), mac);

    if (rc == 0 && phy_base64_encode(mac, sizeof mac, b64, PHY_PROXY_MAC_B64 + 1, 1) < 0)
        rc = PHY_ECRYPTO;
    OPENSSL_cleanse(mac, sizeof mac);
    return rc;
}

int phy_proxy_token_make(const struct phy_proxy_key *k, const char *device_id,
                         char out[PHY_PROXY_TOKEN_MAX + 1])
{
    char b64[PHY_PROXY_MAC_B64 + 1];
    int rc = mac_of(k, device_id, b64);

    if (rc == 0)
        snprintf(out, PHY_PROXY_TOKEN_MAX + 1, "%s.%s", k->kid, b64);
    return rc;
}

int phy_proxy_token_verify(const struct phy_proxy_key *keys, size_t n, const char *device_id,
                           const char *token, size_t len)
{
    const char *dot = token != NULL ? memchr(token, '.', len) : NULL;
    char b64[PHY_PROXY_MAC_B64 + 1];
    size_t klen;
    int ok = 0;

    if (dot == NULL || len - (size_t)(dot + 1 - token) != PHY_PROXY_MAC_B64)
        return 0;
    klen = (size_t)(dot - token);
    for (size_t i = 0; i < n; i++) {
        if (strlen(keys[i].kid) != klen || memcmp(keys[i].kid, token, klen) != 0)
            continue;
        if (mac_of(&keys[i], device_id, b64) == 0)
            ok = phy_ct_equal(b64, dot + 1, PHY_PROXY_MAC_B64);
        OPENSSL_cleanse(b64, sizeof b64);
        break;
    }
    return ok;
}
