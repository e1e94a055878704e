/* Tests for lib/client.c against a scripted in-process TLS server (and CONNECT proxy)
 * on 127.0.0.1: framing, limits, proxy answers, certificate checks, timeouts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testtls.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "phy/client.h"
#include "phy/err.h"

#define HOST "test.local"

/* What the server does on its one connection, and what it saw. */
struct script {
    const char *proxy_reply; /* non-NULL: act as a CONNECT proxy first */
    const char *reply;       /* raw bytes after the request; NULL = never answer */
    size_t reply_len;        /* 0 = strlen(reply) */
    int close_notify;        /* send close_notify after the reply */
    int wait_close;          /* wait (bounded) for the client to hang up */
    char proxy_req[2048];
    char req[8192];
    int lfd;
    unsigned port;
    pthread_t thread;
};

static SSL_CTX *server_ctx;
static char ca_path[64];

static void make_identity(void)
{
    server_ctx =
        test_tls_identity(HOST, "DNS:" HOST ",IP:127.0.0.1", -60, 3600, ca_path, sizeof ca_path);
    assert_non_null(server_ctx);
}

static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    make_identity();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    SSL_CTX_free(server_ctx);
    unlink(ca_path);
    return 0;
}

/* Reads until CRLFCRLF plus a Content-Length body, through ssl or plain fd. */
static void read_request(SSL *ssl, int fd, char *out, size_t cap)
{
    size_t n = 0;
    char *end = NULL;

    out[0] = '\0';
    while (n + 1 < cap) {
        int r = ssl != NULL ? SSL_read(ssl, out + n, 1) : (int)recv(fd, out + n, 1, 0);
        if (r <= 0)
            return;
        n += (size_t)r;
        out[n] = '\0';
        if (end == NULL && (end = strstr(out, "\r\n\r\n")) != NULL) {
            const char *cl = strstr(out, "Content-Length: ");
            size_t want = cl != NULL ? strtoul(cl + 16, NULL, 10) : 0;
            size_t have = n - (size_t)(end + 4 - out);
            if (have >= want)
                return;
        } else if (end != NULL) {
            const char *cl = strstr(out, "Content-Length: ");
            size_t want = cl != NULL ? strtoul(cl + 16, NULL, 10) : 0;
            if (n - (size_t)(end + 4 - out) >= want)
                return;
        }
    }
}

static void wait_hangup(SSL *ssl, int fd)
{
    char b[256];
    struct pollfd p = {.fd = fd, .events = POLLIN};

    for (int i = 0; i < 100 && poll(&p, 1, 50) >= 0; i++) {
        if (p.revents != 0) {
            int r = ssl != NULL ? SSL_read(ssl, b, sizeof b) : (int)recv(fd, b, sizeof b, 0);
            if (r <= 0)
                return;
        }
    }
}

static void *serve(void *arg)
{
    struct script *s = arg;
    struct timeval tv = {.tv_sec = 5};
    SSL *ssl = NULL;
    int fd = accept(s->lfd, NULL, NULL);

    if (fd < 0)
        return NULL;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (s->proxy_reply != NULL) {
        read_request(NULL, fd, s->proxy_req, sizeof s->proxy_req);
        send(fd, s->proxy_reply, strlen(s->proxy_reply), MSG_NOSIGNAL);
        if (strncmp(s->proxy_reply, "HTTP/1.1 200", 12) != 0) {
            wait_hangup(NULL, fd);
            goto out;
        }
    }
    ssl = SSL_new(server_ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) != 1)
        goto out;
    read_request(ssl, fd, s->req, sizeof s->req);
    if (s->reply != NULL) {
        size_t len = s->reply_len != 0 ? s->reply_len : strlen(s->reply);
        SSL_write(ssl, s->reply, (int)len);
    }
    if (s->wait_close || s->reply == NULL)
        wait_hangup(ssl, fd);
    if (s->close_notify)
        SSL_shutdown(ssl);
out:
    SSL_free(ssl);
    close(fd);
    return NULL;
}

static void start(struct script *s)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t al = sizeof a;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->lfd, 4), 0);
    getsockname(s->lfd, (struct sockaddr *)&a, &al);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->thread, NULL, serve, s), 0);
}

static void finish(struct script *s)
{
    pthread_join(s->thread, NULL);
    close(s->lfd);
}

static struct phy_client_opts direct(const struct script *s)
{
    struct phy_client_opts o = {
        .host = HOST,
        .port = s->port,
        .connect_addr = "127.0.0.1",
        .ca_file = ca_path,
        .timeout_ms = 2000,
    };
    return o;
}

/* Runs one GET against a server answering reply; returns the client's rc. */
static int get_with(struct script *s, struct phy_client_response *res, char *err, size_t errcap)
{
    struct phy_client_opts o;
    int rc;

    start(s);
    o = direct(s);
    rc = phy_client_request(&o, "GET", "/x", NULL, NULL, NULL, 0, res, err, errcap);
    finish(s);
    return rc;
}

static void test_content_length_and_request_shape(void **state)
{
    struct script s = {.reply = "HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello"};
    struct phy_client_response res;
    struct phy_client_opts o;
    char err[256], expect[128];
    int rc;

    (void)state;
    start(&s);
    o = direct(&s);
    rc = phy_client_request(&o, "POST", "/v1/x?a=1", "Authorization: Bearer t\r\n",
                            "application/json", "{}", 2, &res, err, sizeof err);
    finish(&s);
    assert_int_equal(rc, 0);
    assert_int_equal(res.status, 201);
    assert_int_equal(res.body_len, 5);
    assert_string_equal(res.body, "hello");
    phy_client_response_free(&res);
    assert_null(res.body);
    snprintf(expect, sizeof expect, "POST /v1/x?a=1 HTTP/1.1\r\nHost: " HOST ":%u\r\n", s.port);
    assert_true(strncmp(s.req, expect, strlen(expect)) == 0);
    assert_non_null(strstr(s.req, "\r\nUser-Agent: phy/0.1\r\n"));
    assert_non_null(strstr(s.req, "\r\nConnection: close\r\n"));
    assert_non_null(strstr(s.req, "\r\nAuthorization: Bearer t\r\n"));
    assert_non_null(strstr(s.req, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strstr(s.req, "\r\nContent-Length: 2\r\n\r\n{}"));
}

static void test_chunked(void **state)
{
    struct script s = {.reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                "5;ext=1\r\nhello\r\n6\r\n world\r\nA\r\n0123456789\r\n"
                                "0\r\nX-Trailer: 1\r\n\r\n"};
    struct phy_client_response res;
    char err[256];

    (void)state;
    assert_int_equal(get_with(&s, &res, err, sizeof err), 0);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.body, "hello world0123456789");
    phy_client_response_free(&res);
}

static void test_chunked_rejections(void **state)
{
    static const char *const bad[] = {
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    };
    struct phy_client_response res;
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct script s = {.reply = bad[i]};
        int rc = get_with(&s, &res, err, sizeof err);
        assert_true(rc == PHY_EPROTO || rc == PHY_EIO);
        assert_null(res.body);
    }
}

static void test_body_limits(void **state)
{
    struct script s1 = {.reply = "HTTP/1.1 200 OK\r\nContent-Length: 1048577\r\n\r\n"};
    struct script s2 = {.reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 "100001\r\n"};
    struct script s3 = {.reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 "100000000\r\n"};
    struct phy_client_response res;
    char err[256];

    (void)state;
    assert_int_equal(get_with(&s1, &res, err, sizeof err), PHY_ETOOBIG);
    assert_non_null(strstr(err, "over 1048576 bytes"));
    assert_int_equal(get_with(&s2, &res, err, sizeof err), PHY_ETOOBIG);
    /* A size of more than 8 hex digits is malformed framing (phy_dechunk_feed). */
    assert_int_equal(get_with(&s3, &res, err, sizeof err), PHY_EPROTO);
}

static void test_until_close_and_truncation(void **state)
{
    struct script clean = {.reply = "HTTP/1.1 200 OK\r\n\r\nabc", .close_notify = 1};
    struct script abrupt = {.reply = "HTTP/1.1 200 OK\r\n\r\nabc"};
    struct script cut = {.reply = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"};
    struct phy_client_response res;
    char err[256];

    (void)state;
    assert_int_equal(get_with(&clean, &res, err, sizeof err), 0);
    assert_string_equal(res.body, "abc");
    phy_client_response_free(&res);
    assert_int_equal(get_with(&abrupt, &res, err, sizeof err), 0);
    assert_string_equal(res.body, "abc");
    phy_client_response_free(&res);
    assert_int_equal(get_with(&cut, &res, err, sizeof err), PHY_EPROTO);
    assert_non_null(strstr(err, "before the end of the body"));
}

static void test_no_body_statuses(void **state)
{
    struct script s1 = {.reply = "HTTP/1.1 100 Continue\r\n\r\n"
                                 "HTTP/1.1 204 No Content\r\n\r\n",
                        .wait_close = 1};
    struct script s2 = {.reply = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"};
    struct phy_client_response res;
    char err[256];

    (void)state;
    assert_int_equal(get_with(&s1, &res, err, sizeof err), 0);
    assert_int_equal(res.status, 204);
    assert_non_null(res.body);
    assert_int_equal(res.body_len, 0);
    phy_client_response_free(&res);
    assert_int_equal(get_with(&s2, &res, err, sizeof err), 0);
    assert_int_equal(res.status, 404);
    phy_client_response_free(&res);
}

static void test_malformed_head(void **state)
{
    struct script s = {.reply = "HTTP/1.1 200 OK\nContent-Length: 0\n\n"};
    struct phy_client_response res;
    char err[256];

    (void)state;
    assert_int_equal(get_with(&s, &res, err, sizeof err), PHY_EPROTO);
}

static void test_proxy_tunnel(void **state)
{
    struct script s = {.proxy_reply = "HTTP/1.1 200 Connection established\r\n\r\n",
                       .reply = "HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}"};
    struct phy_client_response res;
    struct phy_client_opts o = {.host = HOST,
                                .port = 443,
                                .proxy_host = "127.0.0.1",
                                .proxy_ident = "sn_SN1",
                                .ca_file = ca_path,
                                .timeout_ms = 2000};
    char err[256];
    int rc;

    (void)state;
    start(&s);
    o.proxy_port = s.port;
    rc = phy_client_request(&o, "POST", "/v1/provisioning/poll", NULL, "application/json", "{}", 2,
                            &res, err, sizeof err);
    finish(&s);
    assert_int_equal(rc, 0);
    assert_int_equal(res.status, 202);
    phy_client_response_free(&res);
    /* base64("sn_SN1:") = c25fU04xOg== */
    assert_string_equal(s.proxy_req, "CONNECT " HOST ":443 HTTP/1.1\r\nHost: " HOST
                                     ":443\r\nProxy-Authorization: Basic c25fU04xOg==\r\n\r\n");
    assert_true(strncmp(s.req, "POST /v1/provisioning/poll HTTP/1.1\r\nHost: " HOST "\r\n",
                        strlen("POST /v1/provisioning/poll HTTP/1.1\r\nHost: " HOST "\r\n")) == 0);
}

static void test_proxy_refusal(void **state)
{
    struct script s = {.proxy_reply = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"};
    struct phy_client_response res;
    struct phy_client_opts o = {.host = HOST,
                                .port = 443,
                                .proxy_host = "127.0.0.1",
                                .proxy_ident = "sn_SN1",
                                .ca_file = ca_path,
                                .timeout_ms = 2000};
    char err[256];
    int rc;

    (void)state;
    start(&s);
    o.proxy_port = s.port;
    rc = phy_client_request(&o, "GET", "/", NULL, NULL, NULL, 0, &res, err, sizeof err);
    finish(&s);
    assert_int_equal(rc, PHY_EPROTO);
    assert_string_equal(err, "proxy answered 403");
}

static void test_timeout(void **state)
{
    struct script s = {.reply = NULL};
    struct phy_client_response res;
    struct phy_client_opts o;
    char err[256];
    int rc;

    (void)state;
    start(&s);
    o = direct(&s);
    o.timeout_ms = 200;
    rc = phy_client_request(&o, "GET", "/", NULL, NULL, NULL, 0, &res, err, sizeof err);
    finish(&s);
    assert_int_equal(rc, PHY_ETIMEDOUT);
    assert_string_equal(err, "timeout reading");
}

static void test_certificate_checks(void **state)
{
    struct script s1 = {.reply = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"};
    struct script s2 = {.reply = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"};
    struct script s3 = {.reply = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"};
    struct phy_client_response res;
    struct phy_client_opts o;
    char err[256];
    int rc;

    (void)state;
    start(&s1);
    o = direct(&s1);
    o.host = "other.local";
    rc = phy_client_request(&o, "GET", "/", NULL, NULL, NULL, 0, &res, err, sizeof err);
    finish(&s1);
    assert_int_equal(rc, PHY_ECRYPTO);
    assert_string_equal(err, "certificate verify failed: hostname mismatch");

    start(&s2);
    o = direct(&s2);
    o.ca_file = NULL; /* the system store does not know our test CA */
    rc = phy_client_request(&o, "GET", "/", NULL, NULL, NULL, 0, &res, err, sizeof err);
    finish(&s2);
    assert_int_equal(rc, PHY_ECRYPTO);
    assert_non_null(strstr(err, "certificate verify failed: "));

    /* an IP literal as the host is checked against the IP SAN */
    start(&s3);
    o = direct(&s3);
    o.host = "127.0.0.1";
    o.connect_addr = NULL;
    rc = phy_client_request(&o, "GET", "/", NULL, NULL, NULL, 0, &res, err, sizeof err);
    finish(&s3);
    assert_int_equal(rc, 0);
    phy_client_response_free(&res);
}

static void test_connect_addr_with_port_and_refused(void **state)
{
    struct script s = {.reply = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"};
    struct phy_client_response res;
    struct phy_client_opts o;
    char err[256], addr[32];
    int rc;

    (void)state;
    start(&s);
    o = direct(&s);
    snprintf(addr, sizeof addr, "127.0.0.1:%u", s.port);
    o.port = 443; /* the Host header says 443; the socket goes to addr */
    o.connect_addr = addr;
    rc = phy_client_request(&o, "GET", "/", NULL, NULL, NULL, 0, &res, err, sizeof err);
    finish(&s);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(s.req, "\r\nHost: " HOST "\r\n"));
    phy_client_response_free(&res);

    snprintf(addr, sizeof addr, "127.0.0.1:%u", s.port); /* closed now */
    rc = phy_client_request(&o, "GET", "/", NULL, NULL, NULL, 0, &res, err, sizeof err);
    assert_int_equal(rc, PHY_EIO);
    assert_non_null(strstr(err, "Connection refused"));
}

static void test_invalid_arguments(void **state)
{
    struct phy_client_opts o = {.host = HOST, .port = 1, .connect_addr = "127.0.0.1"};
    struct phy_client_response res;
    char err[256];

    (void)state;
    assert_int_equal(
        phy_client_request(&o, "GET", "/a b", NULL, NULL, NULL, 0, &res, err, sizeof err),
        PHY_EINVAL);
    assert_int_equal(
        phy_client_request(&o, "GET", "/", "X: a\r\nY", NULL, NULL, 0, &res, err, sizeof err),
        PHY_EINVAL);
    assert_int_equal(
        phy_client_request(&o, "GET", "/", "X: a\nY: b\r\n", NULL, NULL, 0, &res, err, sizeof err),
        PHY_EINVAL);
    assert_int_equal(
        phy_client_request(&o, "GET", "/", "\r\n", NULL, NULL, 0, &res, err, sizeof err),
        PHY_EINVAL);
    assert_int_equal(
        phy_client_request(&o, "G\rT", "/", NULL, NULL, NULL, 0, &res, err, sizeof err),
        PHY_EINVAL);
    assert_int_equal(
        phy_client_request(&o, "POST", "/", NULL, "a\r\nb", "x", 1, &res, err, sizeof err),
        PHY_EINVAL);
    o.proxy_host = "127.0.0.1";
    o.proxy_port = 1;
    o.proxy_ident = "sn_bad ident";
    assert_int_equal(phy_client_request(&o, "GET", "/", NULL, NULL, NULL, 0, &res, err, sizeof err),
                     PHY_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length_and_request_shape),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_chunked_rejections),
        cmocka_unit_test(test_body_limits),
        cmocka_unit_test(test_until_close_and_truncation),
        cmocka_unit_test(test_no_body_statuses),
        cmocka_unit_test(test_malformed_head),
        cmocka_unit_test(test_proxy_tunnel),
        cmocka_unit_test(test_proxy_refusal),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_certificate_checks),
        cmocka_unit_test(test_connect_addr_with_port_and_refused),
        cmocka_unit_test(test_invalid_arguments),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
