/* WebSocket framing without I/O; see include/phy/wsframe.h. */
#include "phy/wsframe.h"

#include <string.h>

#include <openssl/evp.h>

#include "phy/base64.h"
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

int wsf_check_client_header(const uint8_t *p, size_t hl, int msg_open, uint64_t max_payload,
                            uint64_t *payload, const char **why)
{
    unsigned op = p[0] & 0x0f, len7 = p[1] & 0x7f;
    int control = op >= 8;
    uint64_t len = len7;

    *payload = 0;
    if (hl < 2)
        return (*why = "incomplete header", 1002);
    if (p[0] & 0x70)
        return (*why = "reserved bits set", 1002);
    if (op != WSF_CONT && op != WSF_TEXT && op != WSF_BINARY && op != WSF_CLOSE &&
        op != WSF_PING && op != WSF_PONG)
        return (*why = "unknown opcode", 1002);
    if (!(p[1] & 0x80))
        return (*why = "client frames must be masked", 1002);
    if (len7 == 126) {
        len = (uint64_t)p[2] << 8 | p[3];
        if (len < 126)
            return (*why = "length not in its shortest encoding", 1002);
    } else if (len7 == 127) {
        len = 0;
        for (int i = 2; i < 10; i++)
            len = len << 8 | p[i];
        if (len >> 63)
            return (*why = "64-bit length with its top bit set", 1002);
        if (len < 65536)
            return (*why = "length not in its shortest encoding", 1002);
    }
    if (control && !(p[0] & 0x80))
        return (*why = "fragmented control frame", 1002);
    if (control && len > WSF_MAX_CONTROL)
        return (*why = "control frame over 125 bytes", 1002);
    if (op == WSF_CLOSE && len == 1)
        return (*why = "close frame of 1 byte", 1002);
    if (op == WSF_CONT && !msg_open)
        return (*why = "continuation without a message", 1002);
    if ((op == WSF_TEXT || op == WSF_BINARY) && msg_open)
        return (*why = "new message inside a fragmented one", 1002);
    if (len > max_payload)
        return (*why = "frame over the size limit", 1009);
    *payload = len;
    return 0;
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

int wsf_accept(const char *key, size_t n, char out[WSF_ACCEPT_LEN + 1])
{
    char buf[64 + sizeof(WSF_GUID)];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (n > 64)
        return PHY_EINVAL;
    memcpy(buf, key, n);
    memcpy(buf + n, WSF_GUID, sizeof(WSF_GUID) - 1);
    if (EVP_Digest(buf, n + sizeof(WSF_GUID) - 1, md, &mdlen, EVP_sha1(), NULL) != 1 ||
        mdlen != 20)
        return PHY_ECRYPTO;
    return phy_base64_encode(md, mdlen, out, WSF_ACCEPT_LEN + 1, 0) == WSF_ACCEPT_LEN ? 0
                                                                                   : PHY_ECRYPTO;
}
