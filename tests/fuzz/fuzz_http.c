/* libFuzzer target: request and response head parsers, CONNECT check, writer round trip. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "phy/connect.h"
#include "phy/err.h"
#include "phy/http.h"

#define FUZZ_MAX_HEAD 8192

static void check_str_in(struct phy_str s, const char *base, size_t n)
{
    if (s.len > 0 && (s.p < base || s.p + s.len > base + n))
        abort();
}

static void check_headers(const struct phy_http_header *hs, size_t nh, const char *base, size_t n)
{
    if (nh > PHY_HTTP_MAX_HEADERS)
        abort();
    for (size_t i = 0; i < nh; i++) {
        check_str_in(hs[i].name, base, n);
        check_str_in(hs[i].value, base, n);
        if (hs[i].name.len == 0)
            abort();
        for (size_t j = 0; j < hs[i].value.len; j++) {
            unsigned char c = (unsigned char)hs[i].value.p[j];
            if (c == '\r' || c == '\n' || c == '\0')
                abort();
        }
        if (hs[i].value.len > 0 && (hs[i].value.p[0] == ' ' || hs[i].value.p[0] == '\t' ||
                                    hs[i].value.p[hs[i].value.len - 1] == ' ' ||
                                    hs[i].value.p[hs[i].value.len - 1] == '\t'))
            abort();
    }
}

/* Common facts of a successful parse of n head bytes out of size. */
static void check_head(const char *buf, size_t size, int n)
{
    if (n <= 0 || (size_t)n > size || n > FUZZ_MAX_HEAD || n < 4)
        abort();
    if (memcmp(buf + n - 4, "\r\n\r\n", 4) != 0)
        abort();
}

static void fuzz_request(const char *buf, size_t size)
{
    struct phy_http_request req;
    int n = phy_http_parse_request(buf, size, FUZZ_MAX_HEAD, &req);
    if (n <= 0) {
        if (n != PHY_EAGAIN && n != PHY_EINVAL && n != PHY_ETOOBIG)
            abort();
        if (n == PHY_EAGAIN && size >= FUZZ_MAX_HEAD)
            abort();
        return;
    }
    check_head(buf, size, n);
    check_str_in(req.method, buf, (size_t)n);
    check_str_in(req.target, buf, (size_t)n);
    if (req.method.len < 1 || req.method.len > 16 || req.target.len < 1 || req.target.len > 2048)
        abort();
    if (req.minor_version != 0 && req.minor_version != 1)
        abort();
    check_headers(req.headers, req.num_headers, buf, (size_t)n);
    if (req.content_length < -1 || (req.chunked && req.content_length != -1))
        abort();
    if ((req.keep_alive != 0 && req.keep_alive != 1) || (req.upgrade != 0 && req.upgrade != 1))
        abort();

    /* the head alone parses to the same length, and one byte less is incomplete */
    struct phy_http_request again;
    if (phy_http_parse_request(buf, (size_t)n, FUZZ_MAX_HEAD, &again) != n)
        abort();
    if (phy_http_parse_request(buf, (size_t)n - 1, FUZZ_MAX_HEAD, &again) != PHY_EAGAIN)
        abort();
    if (again.num_headers > PHY_HTTP_MAX_HEADERS)
        abort();

    struct phy_connect_req out;
    int rc = phy_connect_check(&req, &out);
    if (rc != 0 && rc != 400 && rc != 405 && rc != 407)
        abort();
    if (rc == 0) {
        size_t hl = strnlen(out.host, sizeof(out.host));
        if (hl == 0 || hl > PHY_CONNECT_MAX_HOST || out.port < 1 || out.port > 65535)
            abort();
        for (size_t i = 0; i < hl; i++)
            if (out.host[i] >= 'A' && out.host[i] <= 'Z')
                abort();
        if (strncmp(out.ident, "sn_", 3) != 0 && strncmp(out.ident, "dev_", 4) != 0)
            abort();
        if (!phy_host_match(out.host, out.host))
            abort();
        if (!phy_str_eq(req.method, "CONNECT"))
            abort();
    }
}

static void fuzz_response(const char *buf, size_t size)
{
    struct phy_http_response res;
    int n = phy_http_parse_response(buf, size, FUZZ_MAX_HEAD, &res);
    if (n <= 0) {
        if (n != PHY_EAGAIN && n != PHY_EINVAL && n != PHY_ETOOBIG)
            abort();
        if (n == PHY_EAGAIN && size >= FUZZ_MAX_HEAD)
            abort();
        return;
    }
    check_head(buf, size, n);
    if (res.status < 100 || res.status > 599)
        abort();
    check_str_in(res.reason, buf, (size_t)n);
    check_headers(res.headers, res.num_headers, buf, (size_t)n);
    if (res.content_length < -1 || (res.chunked && res.content_length != -1))
        abort();
    struct phy_http_response again;
    if (phy_http_parse_response(buf, (size_t)n, FUZZ_MAX_HEAD, &again) != n)
        abort();
    if (phy_http_parse_response(buf, (size_t)n - 1, FUZZ_MAX_HEAD, &again) != PHY_EAGAIN)
        abort();
}

/* Writes a head from fuzz-chosen parameters and parses it back. */
static void fuzz_writer(const uint8_t *data, size_t size)
{
    if (size < 4)
        return;
    int status = 100 + (int)(((unsigned)data[0] << 8 | data[1]) % 500);
    size_t body = (size_t)data[2] * 1000u;
    int keep_alive = data[3] & 1;
    const char *ct = (data[3] & 2) ? "application/json" : NULL;
    char out[512];
    int n = phy_http_write_response_head(out, sizeof(out), status, ct, body, keep_alive,
                                         (data[3] & 4) ? "X-Fuzz: 1\r\n" : NULL);
    if (n <= 0 || (size_t)n >= sizeof(out))
        abort();
    struct phy_http_response res;
    if (phy_http_parse_response(out, (size_t)n, FUZZ_MAX_HEAD, &res) != n)
        abort();
    if (res.status != status || res.keep_alive != keep_alive)
        abort();
    int has_cl = status >= 200 && status != 204;
    if (res.content_length != (has_cl ? (int64_t)body : -1))
        abort();
    if (phy_http_write_response_head(out, (size_t)n, status, ct, body, keep_alive,
                                     (data[3] & 4) ? "X-Fuzz: 1\r\n" : NULL) != PHY_ETOOBIG)
        abort();
}

/* The chunked decoder: in one piece and in pieces split at the first byte's value
 * must give the same bytes and the same end, never more output than input. */
static void fuzz_dechunk(const char *buf, size_t n)
{
    static char out1[1 << 16], out2[1 << 16], part[1 << 16];
    struct phy_dechunk a, b;
    size_t o1 = 0, o2 = 0, used = 0, step;
    int r1, r2 = 0;

    if (n == 0 || n > sizeof out1)
        return;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    r1 = phy_dechunk_feed(&a, buf, n, out1, &o1, &used);
    if (o1 > n || used > n || (r1 == 0 && used != n))
        abort();
    step = (unsigned char)buf[0] % 7 + 1;
    size_t at = 0;
    for (size_t i = 0; i < n && r2 == 0; i += step) {
        size_t len = n - i < step ? n - i : step, pn = 0;
        r2 = phy_dechunk_feed(&b, buf + i, len, part, &pn, NULL);
        memcpy(out2 + at, part, pn);
        at += pn;
    }
    o2 = at;
    if (r1 >= 0 && r2 >= 0 && (r1 != r2 || o1 != o2 || memcmp(out1, out2, o1) != 0))
        abort();
    if ((r1 < 0) != (r2 < 0))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    fuzz_request(buf, size);
    fuzz_response(buf, size);
    fuzz_writer(data, size);
    fuzz_dechunk(buf, size);
    return 0;
}
