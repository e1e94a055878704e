/* The device hub's wire protocol (docs/protocol.md section 5) as constants shared by
 * phyhub, phyagent, phyctl and the benchmarks: one definition of each name, code and
 * limit. */
#ifndef PHY_PROTOCOL_H
#define PHY_PROTOCOL_H

/* The WebSocket endpoint and its subprotocol. */
#define PHY_HUB_PATH "/v1/hub"
#define PHY_WS_SUBPROTOCOL "phyhub.v1"

/* Close codes the hub sends (RFC 6455 section 7.4 and PhyStack's 4000-4999). */
enum phy_close_code {
    PHY_CLOSE_NORMAL = 1000,
    PHY_CLOSE_GOING_AWAY = 1001,  /* the hub is shutting down */
    PHY_CLOSE_PROTOCOL = 1002,    /* a frame that breaks RFC 6455 */
    PHY_CLOSE_UNSUPPORTED = 1003, /* a binary frame */
    PHY_CLOSE_BAD_DATA = 1007,    /* invalid UTF-8 in a text frame */
    PHY_CLOSE_POLICY = 1008,      /* the message rate limit */
    PHY_CLOSE_TOO_BIG = 1009,     /* a frame or message over PHY_WS_MAX_MESSAGE */
    PHY_CLOSE_REPLACED = 4000,    /* a newer session of the same device */
    PHY_CLOSE_REVOKED = 4001,     /* revoked, or reset */
    PHY_CLOSE_DELETED = 4002,
};

/* The reason of a 1001 close from a hub that stops: "hub stopping;
 * reconnect_after_ms=N". The device waits N ms (plus its own small jitter) before it
 * connects again; N is drawn per device over the hub's drain time, so that the
 * devices of a restarted hub come back spread out, not in one burst. */
#define PHY_CLOSE_RECONNECT_KEY "reconnect_after_ms="
#define PHY_RECONNECT_AFTER_MAX_MS 600000 /* a device caps the hint at this */

/* Message types, both ways. */
#define PHY_MSG_TWIN_GET "twin.get"
#define PHY_MSG_REPORTED_PATCH "reported.patch"
#define PHY_MSG_STATUS "status"
#define PHY_MSG_TWIN "twin"
#define PHY_MSG_ACK "ack"
#define PHY_MSG_ERROR "error"
#define PHY_MSG_DESIRED_PATCH "desired.patch"

/* Limits. Twins' own (section size, depth) are in phy/twin.h. */
#define PHY_WS_MAX_MESSAGE (64 * 1024) /* a frame or message the hub accepts */
#define PHY_STATUS_MAX (8 * 1024)      /* a status object, compact JSON */
/* Control frames and empty data frames a device may send per second (and burst),
 * per message it may send: pings are for liveness, not for flooding. */
#define PHY_FRAME_RATE_FACTOR 4

#endif
