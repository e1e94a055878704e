/* libFuzzer target: CONNECT requests built around the input, host globs, allow/route specs. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "phy/connect.h"
#include "phy/err.h"
#include "phy/http.h"

#define FUZZ_MAX_HEAD 8192
#define FUZZ_AUTH "Proxy-Authorization: Basic c25fQUJDMTIzOg==\r\n"

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* Reference glob by dynamic programming over (pattern, host) suffixes: '*' is one or
 * more characters other than '.'. Both strings are shorter than 64 bytes. */
static int ref_match(const char *p, const char *h)
{
    size_t pn = strlen(p), hn = strlen(h);
    unsigned char m[65][65]; /* m[i][j]: p[i..] matches h[j..] */
    memset(m, 0, sizeof(m));
    m[pn][hn] = 1;
    for (size_t i = pn; i-- > 0;) {
        for (size_t j = hn + 1; j-- > 0;) {
            if (p[i] == '*') {
                int v = 0;
                for (size_t k = j; k < hn && h[k] != '.' && !v; k++)
                    v = m[i + 1][k + 1];
                m[i][j] = (unsigned char)v;
            } else {
                m[i][j] = (unsigned char)(j < hn && lower(p[i]) == lower(h[j]) && m[i + 1][j + 1]);
            }
        }
    }
    return m[0][0];
}

static void run_check(const char *raw, size_t n)
{
    struct phy_http_request req;
    struct phy_connect_req out;
    int len = phy_http_parse_request(raw, n, FUZZ_MAX_HEAD, &req);
    if (len <= 0)
        return;
    if ((size_t)len > n)
        abort();
    int rc = phy_connect_check(&req, &out);
    if (rc != 0 && rc != 400 && rc != 405 && rc != 407)
        abort();
    if (rc == 0) {
        size_t hl = strnlen(out.host, sizeof(out.host));
        size_t il = strnlen(out.ident, sizeof(out.ident));
        if (hl == 0 || hl > PHY_CONNECT_MAX_HOST || il < 4 || il > 68)
            abort();
        if (out.port < 1 || out.port > 65535)
            abort();
        /* the target re-formatted from the result equals the request target, ignoring case */
        char t[PHY_CONNECT_MAX_HOST + 8];
        int tl = snprintf(t, sizeof(t), "%s:%u", out.host, out.port);
        if (tl < 0 || !phy_str_ieq(req.target, t))
            abort();
    }
}

/* Builds prefix + payload + suffix and checks it. */
static void build_and_check(const char *prefix, const uint8_t *p, size_t n, const char *suffix)
{
    size_t a = strlen(prefix), c = strlen(suffix);
    char *raw = malloc(a + n + c);
    if (raw == NULL)
        return;
    memcpy(raw, prefix, a);
    if (n > 0)
        memcpy(raw + a, p, n);
    memcpy(raw + a + n, suffix, c);
    run_check(raw, a + n + c);
    free(raw);
}

static void fuzz_strings(const char *s)
{
    char pat[300], host[300], addr[INET6_ADDRSTRLEN + 8];
    unsigned port = 70000;

    if (phy_connect_parse_allow(s, pat, sizeof(pat), &port) == 0) {
        if (strlen(pat) >= sizeof(pat) || port > 65535 || strchr(pat, ':') != NULL)
            abort();
    }
    port = 70000;
    if (phy_connect_parse_route(s, host, sizeof(host), addr, sizeof(addr), &port) == 0) {
        unsigned char bin[16];
        if (port < 1 || port > 65535 || host[0] == '\0')
            abort();
        if (inet_pton(AF_INET, addr, bin) != 1 && inet_pton(AF_INET6, addr, bin) != 1)
            abort();
    }

    /* split at the first '\n' into pattern and host; compare with the reference */
    const char *nl = strchr(s, '\n');
    if (nl != NULL) {
        size_t pl = (size_t)(nl - s);
        if (pl < sizeof(pat) && strlen(nl + 1) < 64) {
            memcpy(pat, s, pl);
            pat[pl] = '\0';
            int got = phy_host_match(pat, nl + 1);
            if (pl < 64 && pat[0] != '\0' && nl[1] != '\0' && got != ref_match(pat, nl + 1))
                abort();
        }
    }
    if (*s != '\0' && strchr(s, '*') == NULL && !phy_host_match(s, s))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (data[0] % 6) {
    case 0:
        build_and_check("CONNECT ", p, n, " HTTP/1.1\r\n" FUZZ_AUTH "\r\n");
        break;
    case 1:
        build_and_check("CONNECT portal-eu.phystack.com:443 HTTP/1.1\r\nProxy-Authorization: ", p,
                        n, "\r\n\r\n");
        break;
    case 2:
        build_and_check("CONNECT portal-eu.phystack.com:443 HTTP/1.1\r\n"
                        "Proxy-Authorization: Basic ",
                        p, n, "\r\n\r\n");
        break;
    case 3:
        build_and_check("CONNECT portal-eu.phystack.com:443 HTTP/1.1\r\nHost: ", p, n,
                        "\r\n" FUZZ_AUTH "\r\n");
        break;
    case 4:
        build_and_check("CONNECT portal-eu.phystack.com:443 HTTP/1.1\r\n" FUZZ_AUTH, p, n,
                        "\r\n\r\n");
        break;
    default:
        build_and_check("", p, n, "");
        break;
    }

    char *s = malloc(n + 1);
    if (s == NULL)
        return 0;
    if (n > 0)
        memcpy(s, p, n);
    s[n] = '\0';
    fuzz_strings(s);
    free(s);
    return 0;
}
