/* Strict, I/O-free HTTP/1.x head parser (request and response) and response head writer. */
#include "phy/http.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "phy/assert.h"
#include "phy/err.h"
#include "phy/text.h"

#define HTTP_MAX_METHOD 16
#define HTTP_MAX_TARGET 2048
#define HTTP_MAX_CL_DIGITS 18

/* Read position over the bytes of one head; end is min(len, max_head). */
struct cursor {
    const unsigned char *p;
    size_t pos;
    size_t end;
};

/* Framing facts gathered from the header fields of one message. */
struct head_info {
    int64_t content_length;
    int te_present;
    int chunked;
    int conn_close;
    int conn_keep_alive;
    int conn_upgrade;
    int upgrade_header;
    size_t host_count;
};

static int is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* VCHAR / obs-text: allowed inside field values and reason phrases besides SP, HTAB. */
static int is_field_vchar(unsigned char c)
{
    return (c >= 0x21 && c <= 0x7e) || c >= 0x80;
}

static unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

static int expect_byte(struct cursor *c, unsigned char want)
{
    if (c->pos == c->end)
        return PHY_EAGAIN;
    if (c->p[c->pos] != want)
        return PHY_EINVAL;
    c->pos++;
    return 0;
}

static int expect_literal(struct cursor *c, const char *lit)
{
    for (; *lit != '\0'; lit++) {
        int rc = expect_byte(c, (unsigned char)*lit);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int expect_crlf(struct cursor *c)
{
    int rc = expect_byte(c, '\r');
    if (rc != 0)
        return rc;
    return expect_byte(c, '\n');
}

/* "HTTP/1.0" or "HTTP/1.1"; stores the minor version. */
static int parse_version(struct cursor *c, int *minor)
{
    int rc = expect_literal(c, "HTTP/1.");
    if (rc != 0)
        return rc;
    if (c->pos == c->end)
        return PHY_EAGAIN;
    if (c->p[c->pos] != '0' && c->p[c->pos] != '1')
        return PHY_EINVAL;
    *minor = c->p[c->pos] - '0';
    c->pos++;
    return 0;
}

/* 1..max tchars terminated by term (consumed). */
static int parse_token(struct cursor *c, size_t max, unsigned char term, struct phy_str *out)
{
    size_t start = c->pos;
    for (;;) {
        if (c->pos == c->end)
            return PHY_EAGAIN;
        unsigned char b = c->p[c->pos];
        if (b == term)
            break;
        if (!is_tchar(b) || c->pos - start >= max)
            return PHY_EINVAL;
        c->pos++;
    }
    if (c->pos == start)
        return PHY_EINVAL;
    out->p = (const char *)c->p + start;
    out->len = c->pos - start;
    c->pos++;
    return 0;
}

/* Header field lines up to and including the empty line. */
static int parse_headers(struct cursor *c, struct phy_http_header *hs, size_t *n)
{
    *n = 0;
    for (;;) {
        if (c->pos == c->end)
            return PHY_EAGAIN;
        unsigned char b = c->p[c->pos];
        if (b == '\r')
            return expect_crlf(c);
        if (b == ' ' || b == '\t')
            return PHY_EINVAL; /* obs-fold, or whitespace after the start line */
        if (*n == PHY_HTTP_MAX_HEADERS)
            return PHY_ETOOBIG;

        struct phy_http_header *h = &hs[*n];
        int rc = parse_token(c, (size_t)-1, ':', &h->name);
        if (rc != 0)
            return rc;
        while (c->pos < c->end && (c->p[c->pos] == ' ' || c->p[c->pos] == '\t'))
            c->pos++;
        size_t start = c->pos;
        size_t last = start; /* one past the last non-whitespace byte */
        for (;;) {
            if (c->pos == c->end)
                return PHY_EAGAIN;
            b = c->p[c->pos];
            if (b == '\r')
                break;
            if (is_field_vchar(b))
                last = c->pos + 1;
            else if (b != ' ' && b != '\t')
                return PHY_EINVAL; /* NUL, bare LF, DEL, other controls */
            c->pos++;
        }
        h->value.p = (const char *)c->p + start;
        h->value.len = last - start;
        rc = expect_crlf(c);
        if (rc != 0)
            return rc;
        (*n)++;
    }
}

/* Strips SP/HTAB on both sides. */
static struct phy_str trim_ows(struct phy_str s)
{
    while (s.len > 0 && (s.p[0] == ' ' || s.p[0] == '\t')) {
        s.p++;
        s.len--;
    }
    while (s.len > 0 && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t'))
        s.len--;
    return s;
}

static int is_token(struct phy_str s)
{
    if (s.len == 0)
        return 0;
    for (size_t i = 0; i < s.len; i++)
        if (!is_tchar((unsigned char)s.p[i]))
            return 0;
    return 1;
}

/* Calls fn on each non-empty element of a comma-separated list (empty elements are
 * ignored as RFC 9110 section 5.6.1.2 requires); stops at the first non-zero result. */
static int for_each_element(struct phy_str list, int (*fn)(struct phy_str, void *), void *arg)
{
    size_t i = 0;
    while (i <= list.len) {
        size_t j = i;
        while (j < list.len && list.p[j] != ',')
            j++;
        struct phy_str el = {list.p + i, j - i};
        el = trim_ows(el);
        if (el.len > 0) {
            int rc = fn(el, arg);
            if (rc != 0)
                return rc;
        }
        i = j + 1;
    }
    return 0;
}

static int parse_content_length(struct phy_str v, int64_t *out)
{
    if (v.len == 0 || v.len > HTTP_MAX_CL_DIGITS)
        return PHY_EINVAL;
    int64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return PHY_EINVAL;
        n = n * 10 + (v.p[i] - '0');
    }
    *out = n;
    return 0;
}

static int on_te_element(struct phy_str el, void *arg)
{
    struct head_info *hi = arg;
    if (!is_token(el))
        return PHY_EINVAL;
    if (hi->chunked)
        return PHY_EINVAL; /* chunked must be the final coding, applied once */
    hi->chunked = phy_str_ieq(el, "chunked");
    hi->te_present = 1;
    return 0;
}

static int on_connection_element(struct phy_str el, void *arg)
{
    struct head_info *hi = arg;
    if (!is_token(el))
        return PHY_EINVAL;
    if (phy_str_ieq(el, "close"))
        hi->conn_close = 1;
    else if (phy_str_ieq(el, "keep-alive"))
        hi->conn_keep_alive = 1;
    else if (phy_str_ieq(el, "upgrade"))
        hi->conn_upgrade = 1;
    return 0;
}

/* Interprets the framing-relevant fields of a parsed head. */
static int analyse_headers(const struct phy_http_header *hs, size_t n, int minor,
                           struct head_info *hi)
{
    memset(hi, 0, sizeof(*hi));
    hi->content_length = -1;
    int te_seen = 0;
    for (size_t i = 0; i < n; i++) {
        const struct phy_http_header *h = &hs[i];
        int rc = 0;
        if (phy_str_ieq(h->name, "content-length")) {
            int64_t v;
            rc = parse_content_length(h->value, &v);
            if (rc == 0 && hi->content_length >= 0 && hi->content_length != v)
                rc = PHY_EINVAL;
            if (rc == 0)
                hi->content_length = v;
        } else if (phy_str_ieq(h->name, "transfer-encoding")) {
            te_seen = 1;
            rc = for_each_element(h->value, on_te_element, hi);
        } else if (phy_str_ieq(h->name, "connection")) {
            rc = for_each_element(h->value, on_connection_element, hi);
        } else if (phy_str_ieq(h->name, "upgrade")) {
            hi->upgrade_header = 1;
        } else if (phy_str_ieq(h->name, "host")) {
            hi->host_count++;
        }
        if (rc != 0)
            return rc;
    }
    if (te_seen && !hi->te_present)
        return PHY_EINVAL; /* Transfer-Encoding with an empty list */
    if (hi->te_present && (hi->content_length >= 0 || minor == 0))
        return PHY_EINVAL; /* ambiguous framing (RFC 9112 section 6.1) */
    return 0;
}

static int keep_alive_of(const struct head_info *hi, int minor)
{
    if (hi->conn_close)
        return 0;
    if (hi->conn_keep_alive)
        return 1;
    return minor == 1;
}

/* End of the bytes a parser may look at: the head must fit in max_head and its length
 * must fit in the int return value. */
static size_t scan_end(size_t len, size_t max_head)
{
    size_t end = len < max_head ? len : max_head;
    return end < (size_t)INT_MAX ? end : (size_t)INT_MAX;
}

/* Maps "ran out of bytes" to ETOOBIG once the head cannot fit in max_head any more. */
static int incomplete(int rc, size_t len, size_t max_head)
{
    if (rc == PHY_EAGAIN && (len >= max_head || len >= (size_t)INT_MAX))
        return PHY_ETOOBIG;
    return rc;
}

/* Parses a request head: see include/phy/http.h. An incomplete head whose buffer
 * already holds max_head bytes is ETOOBIG, since completing it would exceed the cap. */
int phy_http_parse_request(const char *buf, size_t len, size_t max_head,
                           struct phy_http_request *req)
{
    struct cursor c = {(const unsigned char *)buf, 0, scan_end(len, max_head)};
    struct head_info hi;
    int rc;

    memset(&req->method, 0, sizeof(req->method));
    memset(&req->target, 0, sizeof(req->target));
    req->minor_version = 0;
    req->num_headers = 0;
    req->content_length = -1;
    req->keep_alive = 0;
    req->chunked = 0;
    req->upgrade = 0;
    PHY_ASSERT(buf != NULL || len == 0);

    rc = parse_token(&c, HTTP_MAX_METHOD, ' ', &req->method);
    if (rc != 0)
        return incomplete(rc, len, max_head);

    size_t start = c.pos;
    for (;;) {
        if (c.pos == c.end)
            return incomplete(PHY_EAGAIN, len, max_head);
        unsigned char b = c.p[c.pos];
        if (b == ' ')
            break;
        if (b < 0x21 || b > 0x7e || c.pos - start >= HTTP_MAX_TARGET)
            return PHY_EINVAL;
        c.pos++;
    }
    if (c.pos == start)
        return PHY_EINVAL;
    req->target.p = buf + start;
    req->target.len = c.pos - start;
    c.pos++;

    rc = parse_version(&c, &req->minor_version);
    if (rc == 0)
        rc = expect_crlf(&c);
    if (rc == 0)
        rc = parse_headers(&c, req->headers, &req->num_headers);
    if (rc != 0)
        return incomplete(rc, len, max_head);

    rc = analyse_headers(req->headers, req->num_headers, req->minor_version, &hi);
    if (rc != 0)
        return rc;
    if (hi.te_present && !hi.chunked)
        return PHY_EINVAL; /* a request body must be delimited (RFC 9112 section 6.3) */
    if (hi.host_count > 1)
        return PHY_EINVAL;
    req->content_length = hi.content_length;
    req->chunked = hi.chunked;
    req->keep_alive = keep_alive_of(&hi, req->minor_version);
    req->upgrade = hi.conn_upgrade && hi.upgrade_header;
    return (int)c.pos;
}

/* Parses a response head: see include/phy/http.h. The reason phrase may be empty and
 * the SP before it may be missing. A Transfer-Encoding whose last coding is not chunked
 * means the body runs to connection close, so keep_alive is then 0. */
int phy_http_parse_response(const char *buf, size_t len, size_t max_head,
                            struct phy_http_response *res)
{
    struct cursor c = {(const unsigned char *)buf, 0, scan_end(len, max_head)};
    struct head_info hi;
    int rc;

    res->minor_version = 0;
    res->status = 0;
    memset(&res->reason, 0, sizeof(res->reason));
    res->num_headers = 0;
    res->content_length = -1;
    res->keep_alive = 0;
    res->chunked = 0;
    PHY_ASSERT(buf != NULL || len == 0);

    rc = parse_version(&c, &res->minor_version);
    if (rc == 0)
        rc = expect_byte(&c, ' ');
    if (rc != 0)
        return incomplete(rc, len, max_head);

    int status = 0;
    for (int i = 0; i < 3; i++) {
        if (c.pos == c.end)
            return incomplete(PHY_EAGAIN, len, max_head);
        unsigned char b = c.p[c.pos];
        if (b < '0' || b > '9' || (i == 0 && (b < '1' || b > '5')))
            return PHY_EINVAL;
        status = status * 10 + (b - '0');
        c.pos++;
    }
    res->status = status;

    if (c.pos == c.end)
        return incomplete(PHY_EAGAIN, len, max_head);
    if (c.p[c.pos] == ' ')
        c.pos++;
    else if (c.p[c.pos] != '\r')
        return PHY_EINVAL;
    size_t start = c.pos;
    for (;;) {
        if (c.pos == c.end)
            return incomplete(PHY_EAGAIN, len, max_head);
        unsigned char b = c.p[c.pos];
        if (b == '\r')
            break;
        if (!is_field_vchar(b) && b != ' ' && b != '\t')
            return PHY_EINVAL;
        c.pos++;
    }
    res->reason.p = buf + start;
    res->reason.len = c.pos - start;

    rc = expect_crlf(&c);
    if (rc == 0)
        rc = parse_headers(&c, res->headers, &res->num_headers);
    if (rc != 0)
        return incomplete(rc, len, max_head);

    rc = analyse_headers(res->headers, res->num_headers, res->minor_version, &hi);
    if (rc != 0)
        return rc;
    res->content_length = hi.content_length;
    res->chunked = hi.chunked;
    res->keep_alive = (hi.te_present && !hi.chunked) ? 0 : keep_alive_of(&hi, res->minor_version);
    return (int)c.pos;
}

/* Returns the value of the first header named name (ASCII case-insensitive), or NULL. */
const struct phy_str *phy_http_find_header(const struct phy_http_header *hs, size_t n,
                                           const char *name)
{
    if (hs == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (phy_str_ieq(hs[i].name, name))
            return &hs[i].value;
    return NULL;
}

/* 1 when s equals the NUL-terminated lit ignoring ASCII case. */
int phy_str_ieq(struct phy_str s, const char *lit)
{
    if (lit == NULL)
        return 0;
    size_t n = strlen(lit);
    if (n != s.len)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (ascii_lower((unsigned char)s.p[i]) != ascii_lower((unsigned char)lit[i]))
            return 0;
    return 1;
}

/* 1 when s equals the NUL-terminated lit exactly. */
int phy_str_eq(struct phy_str s, const char *lit)
{
    if (lit == NULL)
        return 0;
    size_t n = strlen(lit);
    return n == s.len && (n == 0 || memcmp(s.p, lit, n) == 0);
}

/* Reason phrases of RFC 9110 for the statuses the platform sends. */
static const struct {
    int status;
    const char *reason;
} http_reasons[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {204, "No Content"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {304, "Not Modified"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {407, "Proxy Authentication Required"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {422, "Unprocessable Content"},
    {426, "Upgrade Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

/* Standard reason phrase for status, "Unknown" when it is not in the table. */
const char *phy_http_reason(int status)
{
    for (size_t i = 0; i < sizeof(http_reasons) / sizeof(http_reasons[0]); i++)
        if (http_reasons[i].status == status)
            return http_reasons[i].reason;
    return "Unknown";
}

/* 1 when s has no CR, LF or NUL (so it cannot inject header lines). */
static int is_single_line(const char *s)
{
    return strpbrk(s, "\r\n") == NULL;
}

/* Writes an HTTP/1.1 response head into out: see include/phy/http.h. Content-Length
 * is omitted for 1xx and 204, where RFC 9110 section 8.6 forbids it. Returns the head
 * length, PHY_ETOOBIG when it does not fit in cap, PHY_EINVAL for a status outside
 * 100..599, a content_type with CR/LF or extra_headers not ending in CRLF. */
int phy_http_write_response_head(char *out, size_t cap, int status, const char *content_type,
                                 size_t body_len, int keep_alive, const char *extra_headers)
{
    char clen[48] = "";
    const char *extra = extra_headers != NULL ? extra_headers : "";
    size_t elen = strlen(extra);

    if (status < 100 || status > 599)
        return PHY_EINVAL;
    if (content_type != NULL && !is_single_line(content_type))
        return PHY_EINVAL;
    if (elen > 0 && (elen < 2 || extra[elen - 2] != '\r' || extra[elen - 1] != '\n'))
        return PHY_EINVAL;
    if (status >= 200 && status != 204)
        snprintf(clen, sizeof(clen), "Content-Length: %zu\r\n", body_len);
    if (out == NULL || cap == 0)
        return PHY_ETOOBIG;

    int n = snprintf(out, cap, "HTTP/1.1 %d %s\r\n%s%s%s%s%s%s\r\n", status,
                     phy_http_reason(status), extra, content_type != NULL ? "Content-Type: " : "",
                     content_type != NULL ? content_type : "", content_type != NULL ? "\r\n" : "",
                     clen, keep_alive ? "" : "Connection: close\r\n");
    if (n < 0 || (size_t)n >= cap)
        return PHY_ETOOBIG;
    return n;
}

/* ---- chunked transfer coding (RFC 9112 section 7.1) ---- */

enum dechunk_state {
    DC_SIZE,    /* hex digits of the size */
    DC_EXT,     /* ";ext" up to CR */
    DC_SIZE_LF, /* LF after the size line */
    DC_DATA,    /* chunk bytes */
    DC_DATA_CR, /* CR after the data */
    DC_DATA_LF, /* LF after the data */
    DC_TRAILER, /* start of a trailer line (or the final CRLF) */
    DC_TRAILER_IN /* inside a trailer line */,
    DC_TRAILER_LF,
    DC_FINAL_LF,
    DC_DONE,
};


/* A byte-at-a-time state machine; chunk data is copied in runs. */
int phy_dechunk_feed(struct phy_dechunk *d, const char *in, size_t n, char *out, size_t *outn,
                     size_t *used)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        int h;

        switch (d->state) {
        case DC_SIZE:
            h = phy_hexval(ch);
            if (h >= 0) {
                if (++d->digits > 8)
                    return PHY_EPROTO;
                d->left = d->left * 16 + (uint64_t)h;
            } else if (d->digits > 0 && ch == ';') {
                d->state = DC_EXT;
            } else if (d->digits > 0 && ch == '\r') {
                d->state = DC_SIZE_LF;
            } else {
                return PHY_EPROTO;
            }
            break;
        case DC_EXT:
            if (ch == '\r')
                d->state = DC_SIZE_LF;
            else if ((unsigned char)ch < 0x20 && ch != '\t')
                return PHY_EPROTO;
            break;
        case DC_SIZE_LF:
            if (ch != '\n')
                return PHY_EPROTO;
            d->digits = 0;
            d->state = d->left > 0 ? DC_DATA : DC_TRAILER;
            break;
        case DC_DATA: {
            size_t take = n - i < d->left ? n - i : (size_t)d->left;
            memcpy(out + o, in + i, take);
            o += take;
            d->left -= take;
            i += take - 1;
            if (d->left == 0)
                d->state = DC_DATA_CR;
            break;
        }
        case DC_DATA_CR:
            if (ch != '\r')
                return PHY_EPROTO;
            d->state = DC_DATA_LF;
            break;
        case DC_DATA_LF:
            if (ch != '\n')
                return PHY_EPROTO;
            d->state = DC_SIZE;
            break;
        case DC_TRAILER:
            d->state = ch == '\r' ? DC_FINAL_LF : DC_TRAILER_IN;
            if (++d->trailer > PHY_DECHUNK_MAX_TRAILER)
                return PHY_ETOOBIG;
            break;
        case DC_TRAILER_IN:
            if (ch == '\r')
                d->state = DC_TRAILER_LF;
            if (++d->trailer > PHY_DECHUNK_MAX_TRAILER)
                return PHY_ETOOBIG;
            break;
        case DC_TRAILER_LF:
            if (ch != '\n')
                return PHY_EPROTO;
            d->state = DC_TRAILER;
            break;
        case DC_FINAL_LF:
            if (ch != '\n')
                return PHY_EPROTO;
            d->state = DC_DONE;
            *outn = o;
            if (used)
                *used = i + 1;
            return 1;
        default:
            *outn = o;
            if (used)
                *used = i;
            return 1;
        }
    }
    *outn = o;
    if (used)
        *used = n;
    return d->state == DC_DONE ? 1 : 0;
}
