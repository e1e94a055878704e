/* WebSocket framing without I/O; see include/phy/wsframe.h. */
#include "phy/wsframe.h"

#include <string.h>

#include "phy/err.h"

#define WSF_LIMIT (1u << 20)

int wsf_parse(const uint8_t *buf, size_t n, size_t max_payload, struct wsf_frame *f)
{
    if (n < 2)
        return PHY_EAGAIN;
    uint8_t b0 = buf[0], b1 = buf[1];
    int op = b0 & 0x0f;
    if ((b0 & 0x70) != 0 || (b1 & 0x80) != 0)
        return PHY_EPROTO; /* reserved bits (no extensions were negotiated), masked */
    if (op != WSF_CONT && op != WSF_TEXT && op != WSF_BINARY && op != WSF_CLOSE && op != WSF_PING &&
        op != WSF_PONG)
        return PHY_EPROTO;
    size_t hdr = 2;
    uint64_t len = b1 & 0x7f;
    if (len == 126) {
        if (n < 4)
            return PHY_EAGAIN;
        len = ((uint64_t)buf[2] << 8) | buf[3];
        hdr = 4;
    } else if (len == 127) {
        if (n < 10)
            return PHY_EAGAIN;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | buf[2 + i];
        hdr = 10;
    }
    if (op >= WSF_CLOSE && (len > WSF_MAX_CONTROL || !(b0 & 0x80)))
        return PHY_EPROTO;
    if (len > max_payload || len > WSF_LIMIT)
        return PHY_EPROTO;
    if (n - hdr < len)
        return PHY_EAGAIN;
    f->fin = (b0 & 0x80) != 0;
    f->opcode = op;
    f->payload = buf + hdr;
    f->len = (size_t)len;
    return (int)(hdr + len);
}

size_t wsf_header(uint8_t out[WSF_MAX_HEADER], int opcode, uint64_t len, const uint8_t mask[4])
{
    uint8_t m = mask ? 0x80 : 0;
    size_t h = 0;
    out[h++] = (uint8_t)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        out[h++] = (uint8_t)(m | len);
    } else if (len <= 0xffff) {
        out[h++] = m | 126;
        out[h++] = (uint8_t)(len >> 8);
        out[h++] = (uint8_t)len;
    } else {
        out[h++] = m | 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (uint8_t)(len >> (8 * i));
    }
    if (mask) {
        memcpy(out + h, mask, 4);
        h += 4;
    }
    return h;
}

int wsf_encode(int opcode, const uint8_t *payload, size_t len, const uint8_t mask[4], uint8_t *out,
               size_t cap)
{
    if (len > WSF_LIMIT || cap < len + WSF_MAX_HEADER)
        return PHY_ETOOBIG;
    size_t h = wsf_header(out, opcode, len, mask);
    for (size_t i = 0; i < len; i++)
        out[h + i] = payload[i] ^ mask[i & 3];
    return (int)(h + len);
}
