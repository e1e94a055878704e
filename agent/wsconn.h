/* The agent's WebSocket opening handshake with the hub (RFC 6455 section 4), I/O-free. */
#ifndef PHY_AGENT_WSCONN_H
#define PHY_AGENT_WSCONN_H

#include <stddef.h>

#include "phy/protocol.h"
#include "phy/http.h"

#define AGENT_WS_PATH PHY_HUB_PATH
#define AGENT_WS_PROTOCOL PHY_WS_SUBPROTOCOL
#define AGENT_WS_KEY_LEN 24    /* base64 of 16 random bytes */

/* How the hub answered the upgrade request. */
enum agent_ws_answer {
    AGENT_WS_UPGRADED,    /* 101 with the right Upgrade, Connection, Accept, Protocol */
    AGENT_WS_REVOKED,     /* 401: bad, unknown or revoked credentials */
    AGENT_WS_REFUSED,     /* any other status: try again later */
    AGENT_WS_BAD_UPGRADE, /* 101 whose headers do not check out */
};

/* A fresh Sec-WebSocket-Key (base64 of 16 random bytes) into key[25]. 0 or
 * PHY_ECRYPTO. */
int agent_ws_new_key(char key[AGENT_WS_KEY_LEN + 1]);

/* The Sec-WebSocket-Accept value of a key is wsf_accept (phy/wsframe.h). */

/* Writes the upgrade request for GET /v1/hub on host (port added to Host when not
 * 443, brackets for IPv6) with Basic device credentials into out (capacity cap).
 * The result contains the device secret: cleanse it after use. Returns the length,
 * PHY_ETOOBIG or PHY_EINVAL (CR/LF or ':' in the device id, empty values). */
int agent_ws_request(char *out, size_t cap, const char *host, unsigned port, const char *key,
                     const char *device_id, const char *secret);

/* Classifies the hub's answer to a request made with key. For AGENT_WS_BAD_UPGRADE
 * a short reason goes into why (capacity cap). */
enum agent_ws_answer agent_ws_check_answer(const struct phy_http_response *res, const char *key,
                                           char *why, size_t cap);

/* 1 when the comma-separated header value v lists token (ASCII case-insensitive). */
int agent_ws_has_token(struct phy_str v, const char *token);

#endif
