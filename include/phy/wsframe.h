/* WebSocket framing (RFC 6455 section 5.2) without I/O: the frame header the hub
 * writes for its fan-out pushes, and the client side of phyload (masked frames out,
 * server frames in). The hub and the agent otherwise frame with wslay. */
#ifndef PHY_WSFRAME_H
#define PHY_WSFRAME_H

#include <stddef.h>
#include <stdint.h>

enum wsf_opcode {
    WSF_CONT = 0x0,
    WSF_TEXT = 0x1,
    WSF_BINARY = 0x2,
    WSF_CLOSE = 0x8,
    WSF_PING = 0x9,
    WSF_PONG = 0xa,
};

#define WSF_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" /* RFC 6455 section 1.3 */
#define WSF_KEY_LEN 24    /* Sec-WebSocket-Key: base64 of 16 bytes */
#define WSF_ACCEPT_LEN 28 /* Sec-WebSocket-Accept: base64 of a SHA-1 digest */
#define WSF_MAX_HEADER 14   /* 2 + 8 (length) + 4 (mask) */
#define WSF_MAX_CONTROL 125 /* control frame payload limit */

/* One parsed frame. payload borrows from the buffer given to wsf_parse. */
struct wsf_frame {
    int fin;
    int opcode;
    const uint8_t *payload;
    size_t len;
};

/* Parses one server-to-client frame at buf[0..n). Returns the frame's total size
 * (header + payload, > 0) with *f filled; PHY_EAGAIN when buf holds only part of it;
 * PHY_EPROTO when the frame is not valid from a server (masked, reserved bits set,
 * unknown opcode, control frame fragmented or over 125 bytes) or its payload is over
 * max_payload (at most 1 MiB). */
int wsf_parse(const uint8_t *buf, size_t n, size_t max_payload, struct wsf_frame *f);

/* Checks the complete header p[0..hl) of a frame a client sent to a server (RFC 6455
 * section 5): masked, no reserved bits, a known opcode, control frames final and at
 * most 125 bytes, lengths in their minimal encoding without the 64-bit top bit, a
 * close frame not of 1 byte, continuations only inside a message (msg_open) and no
 * new message inside one, at most max_payload bytes. Returns 0 with *payload set, or
 * the close code to answer with (1002 protocol error, 1009 too big) and *why. */
int wsf_check_client_header(const uint8_t *p, size_t hl, int msg_open, uint64_t max_payload,
                            uint64_t *payload, const char **why);

/* The Sec-WebSocket-Accept value for the key key[0..n): base64(SHA-1(key + WSF_GUID))
 * into out (NUL-terminated). 0, PHY_EINVAL (a key over 64 bytes) or PHY_ECRYPTO. */
int wsf_accept(const char *key, size_t n, char out[WSF_ACCEPT_LEN + 1]);

/* Writes the header of one final (FIN) frame of opcode with a payload of len bytes
 * into out: unmasked when mask is NULL (a server's frame), else with the mask.
 * Returns its size (2 to WSF_MAX_HEADER). */
size_t wsf_header(uint8_t out[WSF_MAX_HEADER], int opcode, uint64_t len, const uint8_t mask[4]);

/* Writes one final (FIN) client frame with the given mask into out (capacity cap).
 * Returns the frame size, or PHY_ETOOBIG when cap < len + WSF_MAX_HEADER or
 * len > 1 MiB. */
int wsf_encode(int opcode, const uint8_t *payload, size_t len, const uint8_t mask[4], uint8_t *out,
               size_t cap);

#endif
