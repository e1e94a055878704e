/* The agent's WebSocket opening handshake with the hub (RFC 6455 section 4), I/O-free. */
#include "wsconn.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "phy/base64.h"
#include "phy/crypto.h"
#include "phy/err.h"
#include "phy/wsframe.h"

#define WS_MAX_CRED 600

int agent_ws_new_key(char key[AGENT_WS_KEY_LEN + 1])
{
    unsigned char raw[16];

    if (phy_random_bytes(raw, sizeof raw) != 0)
        return PHY_ECRYPTO;
    return phy_base64_encode(raw, sizeof raw, key, AGENT_WS_KEY_LEN + 1, 0) == AGENT_WS_KEY_LEN
               ? 0
               : PHY_ECRYPTO;
}

/* No control bytes, no DEL; ':' refused when colon_ok is 0. */
static int plain_text(const char *s, int colon_ok)
{
    if (s == NULL || s[0] == '\0')
        return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
        if (*p < 0x21 || *p == 0x7f || (!colon_ok && *p == ':'))
            return 0;
    return 1;
}

int agent_ws_request(char *out, size_t cap, const char *host, unsigned port, const char *key,
                     const char *device_id, const char *secret)
{
    char cred[WS_MAX_CRED + 2];
    char b64[((WS_MAX_CRED + 2) / 3 + 1) * 4 + 1];
    const char *lb, *rb;
    char portpart[8] = "";
    int n, rc = PHY_EINVAL;

    if (!plain_text(host, 1) || !plain_text(key, 0) || !plain_text(device_id, 0) ||
        !plain_text(secret, 1) || port == 0 || port > 65535)
        return PHY_EINVAL;
    lb = strchr(host, ':') != NULL ? "[" : "";
    rb = *lb != '\0' ? "]" : "";
    if (port != 443)
        snprintf(portpart, sizeof portpart, ":%u", port);
    n = snprintf(cred, sizeof cred, "%s:%s", device_id, secret);
    if (n < 0 || (size_t)n >= sizeof cred) {
        rc = PHY_ETOOBIG;
        goto out;
    }
    if (phy_base64_encode((const unsigned char *)cred, (size_t)n, b64, sizeof b64, 0) < 0) {
        rc = PHY_ETOOBIG;
        goto out;
    }
    n = snprintf(out, cap,
                 "GET " AGENT_WS_PATH " HTTP/1.1\r\n"
                 "Host: %s%s%s%s\r\n"
                 "User-Agent: phyagent/0.2\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Key: %s\r\n"
                 "Sec-WebSocket-Version: 13\r\n"
                 "Sec-WebSocket-Protocol: " AGENT_WS_PROTOCOL "\r\n"
                 "Authorization: Basic %s\r\n"
                 "\r\n",
                 lb, host, rb, portpart, key, b64);
    if (n < 0 || (size_t)n >= cap) {
        OPENSSL_cleanse(out, cap);
        rc = PHY_ETOOBIG;
        goto out;
    }
    rc = n;
out:
    OPENSSL_cleanse(cred, sizeof cred);
    OPENSSL_cleanse(b64, sizeof b64);
    return rc;
}

static int ascii_lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

int agent_ws_has_token(struct phy_str v, const char *token)
{
    size_t tlen = strlen(token), i = 0;

    while (i < v.len) {
        size_t start, end;

        while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ','))
            i++;
        start = i;
        while (i < v.len && v.p[i] != ',')
            i++;
        end = i;
        while (end > start && (v.p[end - 1] == ' ' || v.p[end - 1] == '\t'))
            end--;
        if (end - start == tlen) {
            size_t k = 0;
            while (k < tlen && ascii_lower((unsigned char)v.p[start + k]) ==
                                   ascii_lower((unsigned char)token[k]))
                k++;
            if (k == tlen)
                return 1;
        }
    }
    return 0;
}

enum agent_ws_answer agent_ws_check_answer(const struct phy_http_response *res, const char *key,
                                           char *why, size_t cap)
{
    const struct phy_str *up, *conn, *acc, *proto;
    char expect[WSF_ACCEPT_LEN + 1];

    if (res->status == 401)
        return AGENT_WS_REVOKED;
    if (res->status != 101)
        return AGENT_WS_REFUSED;
    up = phy_http_find_header(res->headers, res->num_headers, "Upgrade");
    conn = phy_http_find_header(res->headers, res->num_headers, "Connection");
    acc = phy_http_find_header(res->headers, res->num_headers, "Sec-WebSocket-Accept");
    proto = phy_http_find_header(res->headers, res->num_headers, "Sec-WebSocket-Protocol");
    if (up == NULL || !phy_str_ieq(*up, "websocket")) {
        snprintf(why, cap, "missing Upgrade: websocket");
        return AGENT_WS_BAD_UPGRADE;
    }
    if (conn == NULL || !agent_ws_has_token(*conn, "upgrade")) {
        snprintf(why, cap, "missing Connection: Upgrade");
        return AGENT_WS_BAD_UPGRADE;
    }
    if (wsf_accept(key, strlen(key), expect) != 0 || acc == NULL || !phy_str_eq(*acc, expect)) {
        snprintf(why, cap, "wrong Sec-WebSocket-Accept");
        return AGENT_WS_BAD_UPGRADE;
    }
    if (proto == NULL || !phy_str_eq(*proto, AGENT_WS_PROTOCOL)) {
        snprintf(why, cap, "subprotocol " AGENT_WS_PROTOCOL " not selected");
        return AGENT_WS_BAD_UPGRADE;
    }
    return AGENT_WS_UPGRADED;
}
