/* Strict, I/O-free HTTP/1.1 message parser and response writer with hard limits. */
#ifndef PHY_HTTP_H
#define PHY_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define PHY_HTTP_MAX_HEADERS 64
#define PHY_HTTP_DEFAULT_MAX_HEAD 8192 /* request/status line + headers + CRLFCRLF */

/* A string borrowed from the caller's buffer: not NUL-terminated. */
struct phy_str {
    const char *p;
    size_t len;
};

struct phy_http_header {
    struct phy_str name;
    struct phy_str value; /* leading/trailing OWS stripped */
};

/* Parsed request head. Every phy_str points into the buffer given to the parser and
 * lives as long as that buffer is unchanged. */
struct phy_http_request {
    struct phy_str method;
    struct phy_str target;
    int minor_version; /* 0 or 1 (HTTP/1.0, HTTP/1.1); anything else is rejected */
    struct phy_http_header headers[PHY_HTTP_MAX_HEADERS];
    size_t num_headers;
    int64_t content_length; /* -1 when absent */
    int keep_alive;         /* 1.1 default on, 1.0 default off, Connection header wins */
    int chunked;            /* Transfer-Encoding: chunked present (callers may refuse) */
    int upgrade;            /* Connection: upgrade + Upgrade header present */
};

struct phy_http_response {
    int minor_version;
    int status;
    struct phy_str reason;
    struct phy_http_header headers[PHY_HTTP_MAX_HEADERS];
    size_t num_headers;
    int64_t content_length; /* -1 when absent */
    int keep_alive;
    int chunked;
};

/* Parses a request head from buf[0..len). Returns the number of bytes of the head
 * (through the final CRLFCRLF, > 0) when complete; PHY_EAGAIN when more bytes are
 * needed and len < max_head; PHY_ETOOBIG when the head is longer than max_head or has
 * more than PHY_HTTP_MAX_HEADERS headers; PHY_EINVAL for any syntax error (bad
 * method token, bare LF, control bytes, obs-fold, invalid or duplicate
 * Content-Length, Content-Length together with Transfer-Encoding, bad version).
 * Strict: CRLF line endings only, no leading whitespace, token methods only. */
int phy_http_parse_request(const char *buf, size_t len, size_t max_head,
                           struct phy_http_request *req);

/* Same contract for a response head (client side). */
int phy_http_parse_response(const char *buf, size_t len, size_t max_head,
                            struct phy_http_response *res);

/* Case-insensitive header lookup; returns the first match or NULL. Borrowed. */
const struct phy_str *phy_http_find_header(const struct phy_http_header *hs, size_t n,
                                           const char *name);

/* 1 when s equals the NUL-terminated lit ignoring ASCII case. */
int phy_str_ieq(struct phy_str s, const char *lit);
/* 1 when s equals lit exactly. */
int phy_str_eq(struct phy_str s, const char *lit);

/* Standard reason phrase for a status code ("Not Found"); "Unknown" otherwise. */
const char *phy_http_reason(int status);

/* Writes "HTTP/1.1 <status> <reason>\r\n" + extra_headers (each line already CRLF
 * terminated, may be NULL) + Content-Type (if content_type non-NULL and body_len or
 * content_type given) + Content-Length (not for 1xx/204, RFC 9110 8.6) + Connection:
 * close when !keep_alive + CRLF into out (capacity cap). Returns the head length (body
 * not copied), PHY_ETOOBIG if it does not fit, PHY_EINVAL for a status outside
 * 100..599, CR/LF in content_type, or extra_headers not ending in CRLF. */
int phy_http_write_response_head(char *out, size_t cap, int status, const char *content_type,
                                 size_t body_len, int keep_alive, const char *extra_headers);

/* Chunked transfer coding decoder (RFC 9112 section 7.1), fed in pieces of any size.
 * Zero-initialize. */
#define PHY_DECHUNK_MAX_TRAILER 8192 /* bytes of trailer lines */
struct phy_dechunk {
    int state;     /* internal */
    uint64_t left; /* bytes left in the current chunk */
    size_t digits;
    size_t trailer;
};

/* Decodes in[0..n) into out (capacity at least n: decoding never grows) and sets
 * *outn, and *used (optional) to the input bytes consumed (less than n only when the
 * body ended inside in). Returns 0 to go on, 1 once the last chunk and its trailers
 * ended, PHY_EPROTO for malformed framing (chunk sizes over 8 hex digits included),
 * PHY_ETOOBIG for trailers over PHY_DECHUNK_MAX_TRAILER bytes. */
int phy_dechunk_feed(struct phy_dechunk *d, const char *in, size_t n, char *out, size_t *outn,
                     size_t *used);

#endif
