/* Unit tests for lib/http.c: scripted request/response heads, limits, framing, writer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "phy/err.h"
#include "phy/http.h"

#define MAX_HEAD PHY_HTTP_DEFAULT_MAX_HEAD

static struct phy_http_request req;
static struct phy_http_response res;

static int preq(const char *s)
{
    return phy_http_parse_request(s, strlen(s), MAX_HEAD, &req);
}

static int pres(const char *s)
{
    return phy_http_parse_response(s, strlen(s), MAX_HEAD, &res);
}

/* A complete head with nothing after it parses to its full length. */
static void expect_req(const char *s)
{
    assert_int_equal(preq(s), (int)strlen(s));
}

static void expect_res(const char *s)
{
    assert_int_equal(pres(s), (int)strlen(s));
}

static void assert_str(struct phy_str s, const char *want)
{
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.p, want, s.len);
}

static void test_complete_request(void **state)
{
    (void)state;
    const char *head = "GET /v1/twin?x=1 HTTP/1.1\r\n"
                       "Host: hub.example\r\n"
                       "X-Pad:  a b \t\r\n"
                       "X-Empty:\r\n"
                       "\r\n";
    char buf[256];
    snprintf(buf, sizeof(buf), "%sBODYBYTES", head);
    assert_int_equal(preq(buf), (int)strlen(head));
    assert_str(req.method, "GET");
    assert_str(req.target, "/v1/twin?x=1");
    assert_int_equal(req.minor_version, 1);
    assert_int_equal(req.num_headers, 3);
    assert_str(req.headers[0].name, "Host");
    assert_str(req.headers[0].value, "hub.example");
    assert_str(req.headers[1].name, "X-Pad");
    assert_str(req.headers[1].value, "a b");
    assert_str(req.headers[2].name, "X-Empty");
    assert_int_equal(req.headers[2].value.len, 0);
    assert_int_equal(req.content_length, -1);
    assert_int_equal(req.keep_alive, 1);
    assert_int_equal(req.chunked, 0);
    assert_int_equal(req.upgrade, 0);
    /* pointers borrow the caller's buffer */
    assert_ptr_equal(req.method.p, buf);
    assert_ptr_equal(req.target.p, buf + 4);
}

static void test_partial_every_boundary(void **state)
{
    (void)state;
    const char *head = "POST /v1/provisioning/register HTTP/1.1\r\n"
                       "Host: portal-eu.phystack.com\r\n"
                       "Content-Type: application/json\r\n"
                       "Content-Length: 16\r\n"
                       "\r\n";
    size_t n = strlen(head);
    for (size_t i = 0; i < n; i++) {
        int rc = phy_http_parse_request(head, i, MAX_HEAD, &req);
        if (rc != PHY_EAGAIN)
            fail_msg("prefix %zu returned %d", i, rc);
    }
    assert_int_equal(phy_http_parse_request(head, n, MAX_HEAD, &req), (int)n);
    assert_int_equal(req.content_length, 16);
    assert_str(req.method, "POST");
}

static void test_too_big(void **state)
{
    (void)state;
    const char *head = "GET / HTTP/1.1\r\nX-A: 0123456789\r\n\r\n";
    size_t n = strlen(head);
    /* exactly max_head: fine */
    assert_int_equal(phy_http_parse_request(head, n, n, &req), (int)n);
    /* complete head one byte over max_head */
    assert_int_equal(phy_http_parse_request(head, n, n - 1, &req), PHY_ETOOBIG);
    /* incomplete with the buffer already at or past max_head */
    assert_int_equal(phy_http_parse_request(head, n - 1, n - 1, &req), PHY_ETOOBIG);
    assert_int_equal(phy_http_parse_request(head, n - 1, n - 2, &req), PHY_ETOOBIG);
    /* incomplete below max_head */
    assert_int_equal(phy_http_parse_request(head, n - 2, n - 1, &req), PHY_EAGAIN);

    static char big[MAX_HEAD + 100];
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET / HTTP/1.1\r\nX-Big: ", 23);
    assert_int_equal(phy_http_parse_request(big, sizeof(big), MAX_HEAD, &req), PHY_ETOOBIG);
    assert_int_equal(phy_http_parse_request(big, MAX_HEAD, MAX_HEAD, &req), PHY_ETOOBIG);
    assert_int_equal(phy_http_parse_request(big, MAX_HEAD - 1, MAX_HEAD, &req), PHY_EAGAIN);
    /* a syntax error inside the window is still EINVAL on an oversized buffer */
    big[30] = '\0';
    assert_int_equal(phy_http_parse_request(big, sizeof(big), MAX_HEAD, &req), PHY_EINVAL);
}

static void build_headers(char *buf, size_t cap, int count)
{
    size_t off = (size_t)snprintf(buf, cap, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < count; i++)
        off += (size_t)snprintf(buf + off, cap - off, "X-H%d: %d\r\n", i, i);
    snprintf(buf + off, cap - off, "\r\n");
}

static void test_too_many_headers(void **state)
{
    (void)state;
    static char buf[4096];
    build_headers(buf, sizeof(buf), PHY_HTTP_MAX_HEADERS);
    assert_int_equal(preq(buf), (int)strlen(buf));
    assert_int_equal(req.num_headers, PHY_HTTP_MAX_HEADERS);
    assert_str(req.headers[63].name, "X-H63");
    assert_str(req.headers[63].value, "63");
    build_headers(buf, sizeof(buf), PHY_HTTP_MAX_HEADERS + 1);
    assert_int_equal(preq(buf), PHY_ETOOBIG);
}

static void test_bare_lf_and_cr(void **state)
{
    (void)state;
    assert_int_equal(preq("GET / HTTP/1.1\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/1.1\r\nHost: a\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/1.1\r\nHost: a\r\n\n"), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/1.1\r\nHost: a\r\n\r\r"), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/1.1\rX"), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/1.1\n"), PHY_EINVAL);
    /* CR at the very end is just incomplete */
    assert_int_equal(preq("GET / HTTP/1.1\r"), PHY_EAGAIN);
    assert_int_equal(preq("GET / HTTP/1.1\r\nHost: a\r\n\r"), PHY_EAGAIN);
    /* leading empty line is not tolerated */
    assert_int_equal(preq("\r\nGET / HTTP/1.1\r\n\r\n"), PHY_EINVAL);
}

static void test_obs_fold_and_whitespace(void **state)
{
    (void)state;
    assert_int_equal(preq("GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/1.1\r\n: a\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/1.1\r\nX@Y: a\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/1.1\r\nNoColon\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("GET  / HTTP/1.1\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/1.1 \r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq(" GET / HTTP/1.1\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("GET /\tx HTTP/1.1\r\n\r\n"), PHY_EINVAL);
}

static void test_value_bytes(void **state)
{
    (void)state;
    static const char nul[] = "GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n";
    assert_int_equal(phy_http_parse_request(nul, sizeof(nul) - 1, MAX_HEAD, &req), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/1.1\r\nX-A: a\x01"
                          "b\r\n\r\n"),
                     PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/1.1\r\nX-A: a\x7f\r\n\r\n"), PHY_EINVAL);
    expect_req("GET / HTTP/1.1\r\nX-A: caf\xc3\xa9\t\xff!\r\n\r\n");
    assert_str(req.headers[0].value, "caf\xc3\xa9\t\xff!");
    assert_int_equal(preq("GET /\x80 HTTP/1.1\r\n\r\n"), PHY_EINVAL);
    static const char nul_target[] = "GET /\0 HTTP/1.1\r\n\r\n";
    assert_int_equal(phy_http_parse_request(nul_target, sizeof(nul_target) - 1, MAX_HEAD, &req),
                     PHY_EINVAL);
}

static void test_method_and_target_limits(void **state)
{
    (void)state;
    expect_req("ABCDEFGHIJKLMNOP / HTTP/1.1\r\n\r\n");
    assert_int_equal(req.method.len, 16);
    assert_int_equal(preq("ABCDEFGHIJKLMNOPQ / HTTP/1.1\r\n\r\n"), PHY_EINVAL);
    /* rejected as soon as the 17th byte arrives */
    assert_int_equal(preq("ABCDEFGHIJKLMNOPQ"), PHY_EINVAL);
    expect_req("M-SEARCH * HTTP/1.1\r\n\r\n");
    assert_int_equal(preq("GE(T / HTTP/1.1\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq(" / HTTP/1.1\r\n\r\n"), PHY_EINVAL);

    static char buf[3000];
    memcpy(buf, "GET /", 5);
    memset(buf + 5, 'x', 2047);
    memcpy(buf + 5 + 2047, " HTTP/1.1\r\n\r\n", 14);
    assert_int_equal(preq(buf), 5 + 2047 + 13);
    assert_int_equal(req.target.len, 2048);
    memcpy(buf, "GET //", 6);
    memset(buf + 6, 'x', 2047);
    memcpy(buf + 6 + 2047, " HTTP/1.1\r\n\r\n", 14);
    assert_int_equal(preq(buf), PHY_EINVAL);
}

static void test_bad_version(void **state)
{
    (void)state;
    assert_int_equal(preq("GET / HTTP/1.2\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/2.0\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/1.10\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("GET / http/1.1\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/1.1x\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("GET /\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTX"), PHY_EINVAL);
    assert_int_equal(preq("GET / HTTP/1."), PHY_EAGAIN);
    expect_req("GET / HTTP/1.0\r\n\r\n");
    assert_int_equal(req.minor_version, 0);
}

static void test_content_length(void **state)
{
    (void)state;
    expect_req("POST / HTTP/1.1\r\nContent-Length: 42\r\n\r\n");
    assert_int_equal(req.content_length, 42);
    expect_req("POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    assert_int_equal(req.content_length, 0);
    expect_req("POST / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n");
    assert_int_equal(req.content_length, 7);
    assert_int_equal(preq("POST / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n"),
                     PHY_EINVAL);
    assert_int_equal(preq("POST / HTTP/1.1\r\nContent-Length: 7, 7\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("POST / HTTP/1.1\r\nContent-Length: +7\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("POST / HTTP/1.1\r\nContent-Length:\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n"), PHY_EINVAL);
    expect_req("POST / HTTP/1.1\r\nContent-Length: 999999999999999999\r\n\r\n");
    assert_int_equal(req.content_length, 999999999999999999LL);
    assert_int_equal(preq("POST / HTTP/1.1\r\nContent-Length: 1000000000000000000\r\n\r\n"),
                     PHY_EINVAL);
}

static void test_transfer_encoding(void **state)
{
    (void)state;
    expect_req("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_int_equal(req.chunked, 1);
    assert_int_equal(req.content_length, -1);
    expect_req("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, CHUNKED\r\n\r\n");
    assert_int_equal(req.chunked, 1);
    expect_req("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n"
               "Transfer-Encoding: chunked\r\n\r\n");
    assert_int_equal(req.chunked, 1);
    assert_int_equal(preq("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
                     PHY_EINVAL);
    assert_int_equal(preq("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
                     PHY_EINVAL);
    assert_int_equal(preq("POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("POST / HTTP/1.1\r\nTransfer-Encoding: chunked;x=1\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(preq("POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n"), PHY_EINVAL);
    /* Content-Length together with Transfer-Encoding, either order */
    assert_int_equal(preq("POST / HTTP/1.1\r\nContent-Length: 5\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n"),
                     PHY_EINVAL);
    assert_int_equal(preq("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                          "Content-Length: 5\r\n\r\n"),
                     PHY_EINVAL);
    /* HTTP/1.0 has no transfer codings */
    assert_int_equal(preq("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), PHY_EINVAL);
}

static void test_keep_alive(void **state)
{
    (void)state;
    expect_req("GET / HTTP/1.1\r\n\r\n");
    assert_int_equal(req.keep_alive, 1);
    expect_req("GET / HTTP/1.0\r\n\r\n");
    assert_int_equal(req.keep_alive, 0);
    expect_req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert_int_equal(req.keep_alive, 1);
    expect_req("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_int_equal(req.keep_alive, 0);
    expect_req("GET / HTTP/1.1\r\nConnection: foo, CLOSE\r\n\r\n");
    assert_int_equal(req.keep_alive, 0);
    expect_req("GET / HTTP/1.1\r\nConnection: keep-alive,,close\r\n\r\n");
    assert_int_equal(req.keep_alive, 0);
    expect_req("GET / HTTP/1.0\r\nConnection: x\r\nConnection: keep-alive\r\n\r\n");
    assert_int_equal(req.keep_alive, 1);
    assert_int_equal(preq("GET / HTTP/1.1\r\nConnection: clo se\r\n\r\n"), PHY_EINVAL);
    expect_req("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n");
    assert_int_equal(req.keep_alive, 1);
}

static void test_upgrade(void **state)
{
    (void)state;
    expect_req("GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n"
               "Upgrade: websocket\r\n\r\n");
    assert_int_equal(req.upgrade, 1);
    assert_int_equal(req.keep_alive, 1);
    expect_req("GET /ws HTTP/1.1\r\nConnection: upgrade\r\n\r\n");
    assert_int_equal(req.upgrade, 0);
    expect_req("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
    assert_int_equal(req.upgrade, 0);
    expect_req("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: UPGRADE\r\n\r\n");
    assert_int_equal(req.upgrade, 1);
}

static void test_duplicate_host(void **state)
{
    (void)state;
    assert_int_equal(preq("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"), PHY_EINVAL);
}

static void test_response(void **state)
{
    (void)state;
    const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\n";
    char buf[128];
    snprintf(buf, sizeof(buf), "%shello", head);
    size_t n = strlen(head);
    assert_int_equal(pres(buf), (int)n);
    assert_int_equal(res.minor_version, 1);
    assert_int_equal(res.status, 200);
    assert_str(res.reason, "OK");
    assert_int_equal(res.num_headers, 2);
    assert_str(res.headers[1].value, "b");
    assert_int_equal(res.content_length, 5);
    assert_int_equal(res.keep_alive, 1);
    assert_int_equal(res.chunked, 0);
    for (size_t i = 0; i < n; i++) {
        int rc = phy_http_parse_response(buf, i, MAX_HEAD, &res);
        if (rc != PHY_EAGAIN)
            fail_msg("prefix %zu returned %d", i, rc);
    }

    expect_res("HTTP/1.0 404 Not  Found \r\n\r\n");
    assert_int_equal(res.status, 404);
    assert_str(res.reason, "Not  Found ");
    assert_int_equal(res.keep_alive, 0);
    expect_res("HTTP/1.1 204 \r\n\r\n");
    assert_int_equal(res.reason.len, 0);
    expect_res("HTTP/1.1 503\r\nConnection: close\r\n\r\n");
    assert_int_equal(res.status, 503);
    assert_int_equal(res.reason.len, 0);
    assert_int_equal(res.keep_alive, 0);
    expect_res("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\n\r\n");
    assert_int_equal(res.status, 101);
    expect_res("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_int_equal(res.chunked, 1);
    assert_int_equal(res.keep_alive, 1);
    /* a non-chunked final coding runs to close */
    expect_res("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
    assert_int_equal(res.chunked, 0);
    assert_int_equal(res.keep_alive, 0);

    assert_int_equal(pres("HTTP/1.1 099 X\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(pres("HTTP/1.1 600 X\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(pres("HTTP/1.1 20 X\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(pres("HTTP/1.1 2000 X\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(pres("HTTP/1.1 2x0 X\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(pres("HTTP/1.2 200 OK\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(pres("HTTP/1.1  200 OK\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(pres("HTTP/1.1 200 O\x01K\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(pres("HTTP/1.1 200 OK\n\r\n"), PHY_EINVAL);
    assert_int_equal(pres("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"), PHY_EINVAL);
    assert_int_equal(pres("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
                     PHY_EINVAL);
    assert_int_equal(pres("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n"),
                     PHY_EINVAL);
    assert_int_equal(phy_http_parse_response(buf, n, n - 1, &res), PHY_ETOOBIG);
    assert_int_equal(phy_http_parse_response(buf, n, n, &res), (int)n);
}

static void test_find_header_and_compare(void **state)
{
    (void)state;
    expect_req("GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\nHost: h\r\n\r\n");
    const struct phy_str *v = phy_http_find_header(req.headers, req.num_headers, "X-a");
    assert_non_null(v);
    assert_str(*v, "1");
    v = phy_http_find_header(req.headers, req.num_headers, "HOST");
    assert_non_null(v);
    assert_str(*v, "h");
    assert_null(phy_http_find_header(req.headers, req.num_headers, "X-B"));
    assert_null(phy_http_find_header(req.headers, 0, "Host"));

    struct phy_str s = {"Hello", 5};
    assert_int_equal(phy_str_ieq(s, "hELLO"), 1);
    assert_int_equal(phy_str_ieq(s, "hell"), 0);
    assert_int_equal(phy_str_ieq(s, "hello!"), 0);
    assert_int_equal(phy_str_eq(s, "Hello"), 1);
    assert_int_equal(phy_str_eq(s, "hello"), 0);
    assert_int_equal(phy_str_eq(s, "Hell"), 0);
    struct phy_str e = {NULL, 0};
    assert_int_equal(phy_str_eq(e, ""), 1);
    assert_int_equal(phy_str_ieq(e, ""), 1);
    assert_int_equal(phy_str_ieq(e, "a"), 0);
}

static void test_reason(void **state)
{
    (void)state;
    static const int used[] = {100, 101, 200, 201, 202, 204, 400, 401, 403, 404, 405, 407, 408, 409,
                               410, 411, 412, 413, 415, 422, 429, 431, 500, 501, 502, 503, 504};
    for (size_t i = 0; i < sizeof(used) / sizeof(used[0]); i++)
        if (strcmp(phy_http_reason(used[i]), "Unknown") == 0)
            fail_msg("no reason for %d", used[i]);
    assert_string_equal(phy_http_reason(200), "OK");
    assert_string_equal(phy_http_reason(404), "Not Found");
    assert_string_equal(phy_http_reason(407), "Proxy Authentication Required");
    assert_string_equal(phy_http_reason(429), "Too Many Requests");
    assert_string_equal(phy_http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(phy_http_reason(504), "Gateway Timeout");
    assert_string_equal(phy_http_reason(299), "Unknown");
    assert_string_equal(phy_http_reason(-1), "Unknown");
}

static void test_write_response_head(void **state)
{
    (void)state;
    char out[512];
    const char *want = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                       "Content-Length: 13\r\n\r\n";
    assert_int_equal(
        phy_http_write_response_head(out, sizeof(out), 200, "application/json", 13, 1, NULL),
        (int)strlen(want));
    assert_string_equal(out, want);

    want = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    assert_int_equal(phy_http_write_response_head(out, sizeof(out), 404, NULL, 0, 0, NULL),
                     (int)strlen(want));
    assert_string_equal(out, want);

    want = "HTTP/1.1 407 Proxy Authentication Required\r\n"
           "Proxy-Authenticate: Basic realm=\"phystack\"\r\n"
           "Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\n";
    assert_int_equal(
        phy_http_write_response_head(out, sizeof(out), 407, "text/plain", 5, 0,
                                     "Proxy-Authenticate: Basic realm=\"phystack\"\r\n"),
        (int)strlen(want));
    assert_string_equal(out, want);

    /* 1xx and 204 carry no Content-Length (RFC 9110 section 8.6) */
    want = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\n\r\n";
    assert_int_equal(phy_http_write_response_head(out, sizeof(out), 101, NULL, 0, 1,
                                                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"),
                     (int)strlen(want));
    assert_string_equal(out, want);
    want = "HTTP/1.1 204 No Content\r\n\r\n";
    assert_int_equal(phy_http_write_response_head(out, sizeof(out), 204, NULL, 0, 1, ""),
                     (int)strlen(want));
    assert_string_equal(out, want);

    /* capacity: the NUL must fit too */
    want = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    size_t n = strlen(want);
    assert_int_equal(phy_http_write_response_head(out, n + 1, 200, NULL, 0, 1, NULL), (int)n);
    assert_string_equal(out, want);
    assert_int_equal(phy_http_write_response_head(out, n, 200, NULL, 0, 1, NULL), PHY_ETOOBIG);
    assert_int_equal(phy_http_write_response_head(out, 0, 200, NULL, 0, 1, NULL), PHY_ETOOBIG);

    /* header injection and bad inputs */
    assert_int_equal(phy_http_write_response_head(out, sizeof(out), 200, "a\r\nX: y", 0, 1, NULL),
                     PHY_EINVAL);
    assert_int_equal(phy_http_write_response_head(out, sizeof(out), 200, NULL, 0, 1, "X: y"),
                     PHY_EINVAL);
    assert_int_equal(phy_http_write_response_head(out, sizeof(out), 99, NULL, 0, 1, NULL),
                     PHY_EINVAL);
    assert_int_equal(phy_http_write_response_head(out, sizeof(out), 600, NULL, 0, 1, NULL),
                     PHY_EINVAL);

    /* what we write, we parse back */
    int len = phy_http_write_response_head(out, sizeof(out), 503, "text/plain", 7, 0,
                                           "Retry-After: 1\r\n");
    assert_true(len > 0);
    assert_int_equal(phy_http_parse_response(out, (size_t)len, MAX_HEAD, &res), len);
    assert_int_equal(res.status, 503);
    assert_str(res.reason, "Service Unavailable");
    assert_int_equal(res.content_length, 7);
    assert_int_equal(res.keep_alive, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_complete_request),
        cmocka_unit_test(test_partial_every_boundary),
        cmocka_unit_test(test_too_big),
        cmocka_unit_test(test_too_many_headers),
        cmocka_unit_test(test_bare_lf_and_cr),
        cmocka_unit_test(test_obs_fold_and_whitespace),
        cmocka_unit_test(test_value_bytes),
        cmocka_unit_test(test_method_and_target_limits),
        cmocka_unit_test(test_bad_version),
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_transfer_encoding),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_upgrade),
        cmocka_unit_test(test_duplicate_host),
        cmocka_unit_test(test_response),
        cmocka_unit_test(test_find_header_and_compare),
        cmocka_unit_test(test_reason),
        cmocka_unit_test(test_write_response_head),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
