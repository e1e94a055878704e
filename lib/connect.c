/* I/O-free checks for proxy CONNECT requests: target, device identifier, allow/route specs. */
#include "phy/connect.h"

#include <arpa/inet.h>
#include <string.h>

#include "phy/assert.h"
#include "phy/base64.h"
#include "phy/err.h"
#include "phy/text.h"

#define CONNECT_MAX_LABEL 63
#define CONNECT_MAX_IDENT_BODY 64
/* base64 of the longest acceptable "ident:token" is below this. */
#define CONNECT_MAX_CRED_B64 256

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_alnum(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* Decimal port 1..65535 without sign or leading zero. */
static int parse_port(const char *s, size_t n, unsigned *port)
{
    unsigned v = 0;
    if (n == 0 || n > 5 || s[0] == '0')
        return PHY_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit((unsigned char)s[i]))
            return PHY_EINVAL;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return PHY_EINVAL;
    *port = v;
    return 0;
}

/* Dotted-quad IPv4: four decimal parts 0..255 without leading zeros. */
static int is_ipv4(const char *s, size_t n)
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (i >= n || s[i] != '.')
                return 0;
            i++;
        }
        size_t start = i;
        unsigned v = 0;
        while (i < n && is_digit((unsigned char)s[i]) && i - start < 3) {
            v = v * 10 + (unsigned)(s[i] - '0');
            i++;
        }
        if (i == start || v > 255 || (i - start > 1 && s[start] == '0'))
            return 0;
    }
    return i == n;
}

/* DNS name of LDH labels (1..63 chars, no leading or trailing '-'), total <= 253, or a
 * dotted IPv4. A name of digits and dots only must be a valid IPv4, so resolvers never
 * see forms like "127.1". */
static int is_valid_host(const char *s, size_t n)
{
    int only_digits_dots = 1;
    size_t label = 0;

    if (n == 0 || n > PHY_CONNECT_MAX_HOST)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return 0;
            label = 0;
            continue;
        }
        if (!is_alnum(c) && c != '-')
            return 0;
        if (!is_digit(c))
            only_digits_dots = 0;
        if (c == '-' && label == 0)
            return 0;
        if (++label > CONNECT_MAX_LABEL)
            return 0;
    }
    if (label == 0 || s[n - 1] == '-')
        return 0;
    return only_digits_dots ? is_ipv4(s, n) : 1;
}

/* ^(sn_[A-Za-z0-9._-]{1,64}|dev_[A-Za-z0-9]{1,64})$ */
static int is_valid_ident(const unsigned char *s, size_t n)
{
    size_t pre;
    int serial;
    if (n > 3 && memcmp(s, "sn_", 3) == 0) {
        pre = 3;
        serial = 1;
    } else if (n > 4 && memcmp(s, "dev_", 4) == 0) {
        pre = 4;
        serial = 0;
    } else {
        return 0;
    }
    if (n - pre > CONNECT_MAX_IDENT_BODY)
        return 0;
    for (size_t i = pre; i < n; i++) {
        unsigned char c = s[i];
        if (is_alnum(c))
            continue;
        if (serial && phy_name_char(c))
            continue;
        return 0;
    }
    return 1;
}

/* A proxy token's characters: the key ID's [a-z0-9-], '.', base64url. */
static int is_token(const unsigned char *s, size_t n)
{
    if (n == 0 || n > PHY_PROXY_TOKEN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_alnum(s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
            return 0;
    return 1;
}

/* "Basic <base64(ident:token)>" into out->ident and out->token; 0 or 407. */
static int check_proxy_auth(const struct phy_http_request *req, struct phy_connect_req *out)
{
    const struct phy_str *auth = NULL;
    unsigned char dec[CONNECT_MAX_CRED_B64];

    for (size_t i = 0; i < req->num_headers; i++) {
        if (!phy_str_ieq(req->headers[i].name, "proxy-authorization"))
            continue;
        if (auth != NULL)
            return 407; /* more than one credential is ambiguous */
        auth = &req->headers[i].value;
    }
    if (auth == NULL || auth->len < 6)
        return 407;
    struct phy_str scheme = {auth->p, 5};
    if (!phy_str_ieq(scheme, "basic") || auth->p[5] != ' ')
        return 407;
    struct phy_str cred = {auth->p + 6, auth->len - 6};
    while (cred.len > 0 && cred.p[0] == ' ') {
        cred.p++;
        cred.len--;
    }
    if (cred.len == 0 || cred.len > CONNECT_MAX_CRED_B64)
        return 407;
    int n = phy_base64_decode(cred.p, cred.len, dec, sizeof(dec), 0);
    const unsigned char *colon = n > 0 ? memchr(dec, ':', (size_t)n) : NULL;
    if (colon == NULL || colon == dec)
        return 407;
    size_t ilen = (size_t)(colon - dec);
    size_t tlen = (size_t)n - ilen - 1;
    if (!is_valid_ident(dec, ilen) || ilen > PHY_CONNECT_MAX_IDENT)
        return 407;
    /* A serial proves nothing, so it carries no password; a device ID may carry
     * its proxy token. */
    if (tlen > 0 && (dec[0] != 'd' || !is_token(colon + 1, tlen)))
        return 407;
    memcpy(out->ident, dec, ilen);
    out->ident[ilen] = '\0';
    memcpy(out->token, colon + 1, tlen);
    out->token[tlen] = '\0';
    return 0;
}

/* Validates a parsed request as CONNECT: see include/phy/connect.h. out is zeroed first
 * and only complete on 0. The order of checks gives 405, then 400, then 407. */
int phy_connect_check(const struct phy_http_request *req, struct phy_connect_req *out)
{
    PHY_ASSERT(out != NULL && req != NULL);
    memset(out, 0, sizeof(*out));
    if (!phy_str_eq(req->method, "CONNECT"))
        return 405;

    const char *t = req->target.p;
    size_t tlen = req->target.len;
    if (t == NULL || tlen == 0 || t[0] == '[')
        return 400; /* IPv6 literals are not routed */
    size_t colon = tlen;
    while (colon > 0 && t[colon - 1] != ':')
        colon--;
    if (colon == 0)
        return 400;
    size_t hlen = colon - 1;
    if (!is_valid_host(t, hlen) || parse_port(t + colon, tlen - colon, &out->port) != 0)
        return 400;
    for (size_t i = 0; i < hlen; i++)
        out->host[i] = (char)ascii_lower((unsigned char)t[i]);
    out->host[hlen] = '\0';

    const struct phy_str *host = phy_http_find_header(req->headers, req->num_headers, "host");
    if (host != NULL) {
        if (host->len != tlen)
            return 400;
        for (size_t i = 0; i < tlen; i++)
            if (ascii_lower((unsigned char)host->p[i]) != ascii_lower((unsigned char)t[i]))
                return 400;
    }
    if (req->content_length > 0 || req->chunked)
        return 400;

    int rc = check_proxy_auth(req, out);
    if (rc != 0) {
        out->ident[0] = '\0';
        return rc;
    }
    return 0;
}

/* Glob match of one label: '*' matches one or more characters. Iterative, remembering
 * only the latest star, which is enough for this pattern language. */
static int label_match(const char *p, size_t pn, const char *h, size_t hn)
{
    size_t pi = 0, hi = 0;
    size_t star_p = 0, star_h = 0;
    int have_star = 0;

    while (hi < hn) {
        if (pi < pn && p[pi] == '*') {
            pi++;
            hi++; /* the star takes at least one character */
            have_star = 1;
            star_p = pi;
            star_h = hi;
        } else if (pi < pn &&
                   ascii_lower((unsigned char)p[pi]) == ascii_lower((unsigned char)h[hi])) {
            pi++;
            hi++;
        } else if (have_star) {
            star_h++;
            pi = star_p;
            hi = star_h;
        } else {
            return 0;
        }
    }
    return pi == pn;
}

/* 1 when host matches pattern: '*' is one or more characters other than '.', and
 * letters compare without case. Empty pattern or host never match. */
int phy_host_match(const char *pattern, const char *host)
{
    if (pattern == NULL || host == NULL || *pattern == '\0' || *host == '\0')
        return 0;
    for (;;) {
        size_t pn = strcspn(pattern, ".");
        size_t hn = strcspn(host, ".");
        if (!label_match(pattern, pn, host, hn))
            return 0;
        pattern += pn;
        host += hn;
        if (*pattern == '\0' || *host == '\0')
            return *pattern == *host;
        pattern++;
        host++;
    }
}

/* Pattern chars of allow and route specs: LDH, '.', '*'. */
static int is_valid_pattern(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_alnum(c) && c != '-' && c != '.' && c != '*')
            return 0;
    }
    return 1;
}

/* Parses "pattern:port" or "pattern:*": see include/phy/connect.h. The pattern is
 * copied NUL-terminated; a pattern that does not fit in cap is PHY_EINVAL. */
int phy_connect_parse_allow(const char *spec, char *pattern, size_t cap, unsigned *port)
{
    if (spec == NULL || pattern == NULL || port == NULL)
        return PHY_EINVAL;
    const char *colon = strrchr(spec, ':');
    if (colon == NULL)
        return PHY_EINVAL;
    size_t plen = (size_t)(colon - spec);
    if (!is_valid_pattern(spec, plen) || plen >= cap)
        return PHY_EINVAL;
    unsigned p = 0;
    if (strcmp(colon + 1, "*") != 0 && parse_port(colon + 1, strlen(colon + 1), &p) != 0)
        return PHY_EINVAL;
    memcpy(pattern, spec, plen);
    pattern[plen] = '\0';
    *port = p;
    return 0;
}

/* Parses "HOST=ADDR:PORT" with ADDR a dotted IPv4 or a bracketed IPv6: see
 * include/phy/connect.h. HOST may be a pattern; addr receives the address without
 * brackets, ready for inet_pton. Outputs are written only on success. */
int phy_connect_parse_route(const char *spec, char *host, size_t hcap, char *addr, size_t acap,
                            unsigned *port)
{
    char abuf[INET6_ADDRSTRLEN];
    unsigned char bin[sizeof(struct in6_addr)];

    if (spec == NULL || host == NULL || addr == NULL || port == NULL)
        return PHY_EINVAL;
    const char *eq = strchr(spec, '=');
    if (eq == NULL)
        return PHY_EINVAL;
    size_t hlen = (size_t)(eq - spec);
    if (!is_valid_pattern(spec, hlen) || hlen >= hcap)
        return PHY_EINVAL;

    const char *a = eq + 1;
    const char *colon = strrchr(a, ':');
    if (colon == NULL)
        return PHY_EINVAL;
    const char *astart = a;
    size_t alen = (size_t)(colon - a);
    int family = AF_INET;
    if (alen >= 2 && a[0] == '[' && a[alen - 1] == ']') {
        astart = a + 1;
        alen -= 2;
        family = AF_INET6;
    }
    if (alen == 0 || alen >= sizeof(abuf) || alen >= acap)
        return PHY_EINVAL;
    memcpy(abuf, astart, alen);
    abuf[alen] = '\0';
    if (family == AF_INET ? !is_ipv4(abuf, alen) : inet_pton(AF_INET6, abuf, bin) != 1)
        return PHY_EINVAL;
    unsigned p;
    if (parse_port(colon + 1, strlen(colon + 1), &p) != 0)
        return PHY_EINVAL;

    memcpy(host, spec, hlen);
    host[hlen] = '\0';
    memcpy(addr, abuf, alen + 1);
    *port = p;
    return 0;
}
