/* Blocking HTTPS/1.1 client with poll(2) timeouts and an optional CONNECT tunnel. */
#include "phy/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "phy/assert.h"
#include "phy/base64.h"
#include "phy/err.h"
#include "phy/text.h"
#include "phy/proxytoken.h"
#include "phy/http.h"

#define CLIENT_DEFAULT_TIMEOUT_MS 10000
#define CLIENT_MAX_HOST 253
#define CLIENT_MAX_PATH 4096
#define CLIENT_MAX_EXTRA_HEADERS 8192
#define CLIENT_MAX_IDENT 80
#define CLIENT_RBUF 16384
#define CLIENT_DRAIN_MS 1000
#define CLIENT_DRAIN_MAX 65536

/* One connection: the socket, the TLS session once established, and a read-ahead
 * buffer shared by the proxy phase (plain) and the TLS phase. */
struct conn {
    int fd;
    SSL *ssl;
    int timeout_ms;
    int eof;                /* peer closed, with or without close_notify */
    time_t cert_time_floor; /* certificates are checked at max(now, this) when > 0 */
    char *err;
    size_t errcap;
    size_t pos, len;
    char buf[CLIENT_RBUF];
};

static void errf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void errf(struct conn *c, const char *fmt, ...)
{
    va_list ap;

    if (c->err == NULL || c->errcap == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errcap, fmt, ap);
    va_end(ap);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is ready for events or timeout_ms passes; EINTR does not extend the
 * wait. 0, PHY_ETIMEDOUT or PHY_EIO. */
static int wait_fd(int fd, short events, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;

    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int64_t left = deadline - now_ms();
        int r;

        if (left < 0)
            left = 0;
        r = poll(&p, 1, (int)left);
        if (r > 0)
            return 0; /* readiness or error: the next call reports which */
        if (r == 0)
            return PHY_ETIMEDOUT;
        if (errno != EINTR)
            return PHY_EIO;
    }
}

static int valid_host_chars(const char *s, size_t n, int v6)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!phy_name_char(ch) && !(v6 && ch == ':'))
            return 0;
    }
    return 1;
}

static int parse_port(const char *s, size_t n, unsigned *port)
{
    unsigned long v = 0;

    if (n == 0 || n > 5)
        return PHY_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return PHY_EINVAL;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return PHY_EINVAL;
    *port = (unsigned)v;
    return 0;
}

/* Splits host[:port] / [v6][:port]. 0 or PHY_EINVAL. */
int phy_client_parse_hostport(const char *s, char *host, size_t hcap, unsigned *port,
                              unsigned def_port)
{
    const char *h, *rest;
    size_t hn;
    int v6 = 0;

    if (s == NULL || host == NULL || hcap == 0 || port == NULL)
        return PHY_EINVAL;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL)
            return PHY_EINVAL;
        h = s + 1;
        hn = (size_t)(close - h);
        rest = close + 1;
        v6 = 1;
    } else {
        const char *colon = strchr(s, ':');
        h = s;
        hn = colon != NULL ? (size_t)(colon - s) : strlen(s);
        rest = s + hn;
    }
    if (hn == 0 || hn > CLIENT_MAX_HOST || hn >= hcap || !valid_host_chars(h, hn, v6))
        return PHY_EINVAL;
    if (v6 && memchr(h, ':', hn) == NULL)
        return PHY_EINVAL;
    if (*rest == ':') {
        if (parse_port(rest + 1, strlen(rest + 1), port) != 0)
            return PHY_EINVAL;
    } else if (*rest == '\0') {
        if (def_port == 0 || def_port > 65535)
            return PHY_EINVAL;
        *port = def_port;
    } else {
        return PHY_EINVAL;
    }
    memcpy(host, h, hn);
    host[hn] = '\0';
    return 0;
}

/* Opens a TCP connection to host:port with a per-address connect timeout. Returns the
 * non-blocking fd or a negative PHY_E*. */
static int tcp_connect(struct conn *c, const char *host, unsigned port)
{
    struct addrinfo hints, *list = NULL, *ai;
    char portstr[8];
    int fd = -1, rc, last_errno = 0, timed_out = 0;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(portstr, sizeof portstr, "%u", port);
    rc = getaddrinfo(host, portstr, &hints, &list);
    if (rc != 0) {
        errf(c, "cannot resolve %s: %s", host, gai_strerror(rc));
        return PHY_ENOTFOUND;
    }
    for (ai = list; ai != NULL; ai = ai->ai_next) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        if (errno != EINPROGRESS) {
            last_errno = errno;
            goto next;
        }
        rc = wait_fd(fd, POLLOUT, c->timeout_ms);
        if (rc == PHY_ETIMEDOUT) {
            timed_out = 1;
            goto next;
        }
        if (rc != 0) {
            last_errno = errno;
            goto next;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) {
            last_errno = errno;
            goto next;
        }
        if (soerr == 0)
            break;
        last_errno = soerr;
    next:
        close(fd);
        fd = -1;
    }
    freeaddrinfo(list);
    if (fd >= 0)
        return fd;
    if (timed_out && last_errno == 0) {
        errf(c, "timeout connecting to %s:%u", host, port);
        return PHY_ETIMEDOUT;
    }
    errf(c, "connect to %s:%u: %s", host, port, strerror(last_errno ? last_errno : EIO));
    return PHY_EIO;
}

/* wait_fd on c's socket for its timeout; a timeout or poll failure is described in
 * c's error as "timeout <what>" / "poll: ...". 0 or negative. */
static int conn_wait(struct conn *c, short events, const char *what)
{
    int rc = wait_fd(c->fd, events, c->timeout_ms);
    if (rc == PHY_ETIMEDOUT)
        errf(c, "timeout %s", what);
    else if (rc != 0)
        errf(c, "poll: %s", strerror(errno));
    return rc;
}

/* Plain (pre-TLS) send of all n bytes. 0 or negative. */
static int raw_write_all(struct conn *c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = conn_wait(c, POLLOUT, "writing");
            if (rc != 0)
                return rc;
            continue;
        }
        errf(c, "send: %s", strerror(w < 0 ? errno : EIO));
        return PHY_EIO;
    }
    return 0;
}

/* Plain (pre-TLS) read into out. Returns bytes read, 0 at EOF, or negative. */
static int raw_read(struct conn *c, char *out, size_t cap)
{
    for (;;) {
        ssize_t r = recv(c->fd, out, cap, 0);
        if (r >= 0)
            return (int)r;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = conn_wait(c, POLLIN, "reading");
            if (rc != 0)
                return rc;
            continue;
        }
        errf(c, "recv: %s", strerror(errno));
        return PHY_EIO;
    }
}

/* Custom socket BIO so that writes use MSG_NOSIGNAL: a peer reset must not raise
 * SIGPIPE in the caller's process. The BIO data is the struct conn. */
static int sock_bio_write(BIO *b, const char *data, int n)
{
    struct conn *c = BIO_get_data(b);
    ssize_t w;

    BIO_clear_retry_flags(b);
    w = send(c->fd, data, (size_t)n, MSG_NOSIGNAL);
    if (w < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            BIO_set_retry_write(b);
        return -1;
    }
    return (int)w;
}

static int sock_bio_read(BIO *b, char *out, int n)
{
    struct conn *c = BIO_get_data(b);
    ssize_t r;

    BIO_clear_retry_flags(b);
    r = recv(c->fd, out, (size_t)n, 0);
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            BIO_set_retry_read(b);
        return -1;
    }
    return (int)r;
}

static long sock_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int sock_bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static int is_ip_literal(const char *host)
{
    unsigned char a[16];

    return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

/* Waits for what the last SSL call asked for. 0 to retry, or negative. */
static int ssl_wait(struct conn *c, int ret, const char *what)
{
    int e = SSL_get_error(c->ssl, ret);

    if (e == SSL_ERROR_WANT_READ)
        return conn_wait(c, POLLIN, what);
    if (e == SSL_ERROR_WANT_WRITE)
        return conn_wait(c, POLLOUT, what);
    return PHY_EIO;
}

static void ssl_errstr(char *out, size_t cap)
{
    unsigned long e = ERR_peek_last_error();

    if (e == 0) {
        snprintf(out, cap, "%s", errno != 0 ? strerror(errno) : "connection closed");
        return;
    }
    ERR_error_string_n(e, out, cap);
}

/* ---- TLS resumption ---- */

struct phy_tls_resume {
    pthread_mutex_t mu;
    SSL_SESSION *sess; /* the last session, NULL none */
    char host[256];    /* its server name */
};

struct phy_tls_resume *phy_tls_resume_new(void)
{
    struct phy_tls_resume *r = calloc(1, sizeof *r);
    if (r && pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r);
        r = NULL;
    }
    return r;
}

void phy_tls_resume_free(struct phy_tls_resume *r)
{
    if (!r)
        return;
    SSL_SESSION_free(r->sess);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static int resume_index = -1; /* SSL ex_data: the connection's struct phy_tls_resume */
static pthread_once_t resume_once = PTHREAD_ONCE_INIT;

static void resume_index_init(void)
{
    resume_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* A ticket arrived (TLS 1.3: after the handshake, as data is read): keep a copy. Not
 * sess itself: it stays the connection's, and a connection that ends without a
 * close_notify (a hub that stopped, a network gone) marks it not resumable. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct phy_tls_resume *r = SSL_get_ex_data(ssl, resume_index);
    const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    SSL_SESSION *copy;
    if (!r || !host || strlen(host) >= sizeof r->host || !SSL_SESSION_is_resumable(sess) ||
        !(copy = SSL_SESSION_dup(sess)))
        return 0;
    pthread_mutex_lock(&r->mu);
    SSL_SESSION_free(r->sess);
    r->sess = copy;
    snprintf(r->host, sizeof r->host, "%s", host);
    pthread_mutex_unlock(&r->mu);
    return 0; /* sess is not kept */
}

/* Before the handshake: ssl offers r's session when it is one with host. */
static void resume_offer(SSL *ssl, struct phy_tls_resume *r, const char *host)
{
    pthread_once(&resume_once, resume_index_init);
    if (resume_index < 0 || SSL_set_ex_data(ssl, resume_index, r) != 1)
        return;
    SSL_CTX_set_session_cache_mode(SSL_get_SSL_CTX(ssl),
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(SSL_get_SSL_CTX(ssl), on_new_session);
    pthread_mutex_lock(&r->mu);
    if (r->sess && strcmp(r->host, host) == 0)
        SSL_set_session(ssl, r->sess);
    pthread_mutex_unlock(&r->mu);
}

/* TLS over c->fd: TLS 1.2+, peer verification against ca_file (or system paths),
 * SNI and host-name check for host; resume: see phy_tls_resume. 0 or negative. */
static int tls_connect(struct conn *c, SSL_CTX **ctxp, BIO_METHOD **methp, const char *host,
                       const char *ca_file, struct phy_tls_resume *resume)
{
    SSL_CTX *ctx;
    BIO_METHOD *meth;
    BIO *bio;
    char why[256];
    int is_ip;

    ctx = SSL_CTX_new(TLS_client_method());
    *ctxp = ctx;
    if (ctx == NULL) {
        errf(c, "TLS context allocation failed");
        return PHY_ENOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (ca_file != NULL) {
        if (access(ca_file, R_OK) != 0) {
            errf(c, "cannot read CA file %s: %s", ca_file, strerror(errno));
            return PHY_ECRYPTO;
        }
        if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
            ssl_errstr(why, sizeof why);
            errf(c, "cannot load CA file %s: %s", ca_file, why);
            return PHY_ECRYPTO;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        errf(c, "cannot load the system CA store");
        return PHY_ECRYPTO;
    }
    meth = BIO_meth_new(BIO_TYPE_SOURCE_SINK | 0x70, "phy_client_socket");
    *methp = meth;
    if (meth == NULL || BIO_meth_set_write(meth, sock_bio_write) != 1 ||
        BIO_meth_set_read(meth, sock_bio_read) != 1 ||
        BIO_meth_set_ctrl(meth, sock_bio_ctrl) != 1 ||
        BIO_meth_set_create(meth, sock_bio_create) != 1) {
        errf(c, "TLS BIO allocation failed");
        return PHY_ENOMEM;
    }
    c->ssl = SSL_new(ctx);
    if (c->ssl == NULL) {
        errf(c, "TLS session allocation failed");
        return PHY_ENOMEM;
    }
    bio = BIO_new(meth);
    if (bio == NULL) {
        errf(c, "TLS BIO allocation failed");
        return PHY_ENOMEM;
    }
    BIO_set_data(bio, c);
    SSL_set_bio(c->ssl, bio, bio);

    /* SNI carries DNS names only; SSL_set1_host checks an IP literal as an IP. */
    is_ip = is_ip_literal(host);
    if (!is_ip && SSL_set_tlsext_host_name(c->ssl, host) != 1) {
        errf(c, "cannot set TLS server name");
        return PHY_ECRYPTO;
    }
    if (SSL_set1_host(c->ssl, host) != 1) {
        errf(c, "cannot set TLS host-name check");
        return PHY_ECRYPTO;
    }
    if (c->cert_time_floor > 0 && time(NULL) < c->cert_time_floor)
        X509_VERIFY_PARAM_set_time(SSL_get0_param(c->ssl), c->cert_time_floor);
    if (resume && !is_ip)
        resume_offer(c->ssl, resume, host);
    for (;;) {
        int r = SSL_connect(c->ssl);
        int e, rc;

        if (r == 1)
            return 0;
        e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            rc = ssl_wait(c, r, "in TLS handshake");
            if (rc != 0)
                return rc;
            continue;
        }
        if (SSL_get_verify_result(c->ssl) != X509_V_OK) {
            errf(c, "certificate verify failed: %s",
                 X509_verify_cert_error_string(SSL_get_verify_result(c->ssl)));
            return PHY_ECRYPTO;
        }
        ssl_errstr(why, sizeof why);
        errf(c, "TLS handshake failed: %s", why);
        return PHY_ECRYPTO;
    }
}

/* TLS read into out. Returns bytes read, 0 at EOF, or negative. A close without
 * close_notify counts as EOF: bodies are framed by Content-Length or chunking, which
 * detect truncation; only a body read until close cannot tell. */
static int tls_read(struct conn *c, char *out, size_t cap)
{
    int n = cap > (size_t)INT_MAX ? INT_MAX : (int)cap;
    char why[256];

    for (;;) {
        int r, e;

        ERR_clear_error();
        errno = 0;
        r = SSL_read(c->ssl, out, n);
        if (r > 0)
            return r;
        e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN)
            return 0;
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            int rc = ssl_wait(c, r, "reading");
            if (rc != 0)
                return rc;
            continue;
        }
        if ((e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0) ||
            (e == SSL_ERROR_SSL &&
             ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
            return 0;
        }
        ssl_errstr(why, sizeof why);
        errf(c, "TLS read failed: %s", why);
        return PHY_EIO;
    }
}

static int conn_read_some(struct conn *c, char *out, size_t cap)
{
    return c->ssl != NULL ? tls_read(c, out, cap) : raw_read(c, out, cap);
}

/* TLS write of all n bytes. 0 or negative. */
static int tls_write_all(struct conn *c, const char *p, size_t n)
{
    char why[256];

    while (n > 0) {
        int chunk = n > (size_t)INT_MAX ? INT_MAX : (int)n;
        int w, e;

        ERR_clear_error();
        w = SSL_write(c->ssl, p, chunk);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        e = SSL_get_error(c->ssl, w);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            int rc = ssl_wait(c, w, "writing");
            if (rc != 0)
                return rc;
            continue;
        }
        ssl_errstr(why, sizeof why);
        errf(c, "TLS write failed: %s", why);
        return PHY_EIO;
    }
    return 0;
}

/* Makes sure at least one unread byte is buffered. Returns the number of buffered
 * bytes, 0 at EOF, or negative. */
static int fill(struct conn *c)
{
    int r;

    if (c->pos < c->len)
        return (int)(c->len - c->pos);
    c->pos = 0;
    c->len = 0;
    r = conn_read_some(c, c->buf, sizeof c->buf);
    if (r > 0)
        c->len = (size_t)r;
    else if (r == 0)
        c->eof = 1;
    return r;
}

/* After a complete response: waits briefly for the server's close (we asked for
 * Connection: close) so that our close sends a FIN, not a reset over unread bytes that
 * a proxy in between would log as an error. Silent; bounded in time and bytes. */
static void drain(struct conn *c)
{
    char *err = c->err;
    int timeout = c->timeout_ms;
    size_t total = 0;

    c->err = NULL;
    c->timeout_ms = timeout < CLIENT_DRAIN_MS ? timeout : CLIENT_DRAIN_MS;
    while (!c->eof && total < CLIENT_DRAIN_MAX) {
        int r;

        c->pos = c->len;
        r = fill(c);
        if (r <= 0)
            break;
        total += (size_t)r;
    }
    c->err = err;
    c->timeout_ms = timeout;
}

/* Reads one response head (at most max bytes) from the connection into *res, whose
 * strings point into c->buf until the next read. 0 or negative. */
static int read_head(struct conn *c, size_t max, struct phy_http_response *res, const char *who)
{
    for (;;) {
        size_t avail = c->len - c->pos;
        int r;

        if (avail > 0) {
            size_t n = avail < max ? avail : max;
            r = phy_http_parse_response(c->buf + c->pos, n, max, res);
            if (r > 0) {
                c->pos += (size_t)r;
                return 0;
            }
            if (r == PHY_ETOOBIG || (r == PHY_EAGAIN && n >= max)) {
                errf(c, "%s response head over %zu bytes", who, max);
                return PHY_ETOOBIG;
            }
            if (r != PHY_EAGAIN) {
                errf(c, "malformed %s response head", who);
                return PHY_EPROTO;
            }
            if (c->pos > 0)
                memmove(c->buf, c->buf + c->pos, avail);
        }
        c->pos = 0;
        c->len = avail;
        r = conn_read_some(c, c->buf + c->len, sizeof c->buf - c->len);
        if (r < 0)
            return r;
        if (r == 0) {
            errf(c, "%s closed the connection before answering", who);
            return PHY_EPROTO;
        }
        c->len += (size_t)r;
    }
}

static int valid_ident(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > CLIENT_MAX_IDENT)
        return 0;
    return valid_host_chars(s, n, 0);
}

/* Sends CONNECT host:port through the proxy on c->fd and requires a 200. */
static int proxy_connect(struct conn *c, const struct phy_client_opts *o)
{
    char cred[CLIENT_MAX_IDENT + PHY_PROXY_TOKEN_MAX + 2];
    char b64[((CLIENT_MAX_IDENT + PHY_PROXY_TOKEN_MAX + 2) / 3 + 1) * 4 + 1];
    char req[CLIENT_MAX_HOST * 2 + sizeof b64 + 160];
    const char *lb = strchr(o->host, ':') != NULL ? "[" : "";
    const char *rb = *lb != '\0' ? "]" : "";
    struct phy_http_response res;
    int n, rc;

    n = snprintf(cred, sizeof cred, "%s:%s", o->proxy_ident,
                 o->proxy_secret != NULL ? o->proxy_secret : "");
    if (n < 0 || (size_t)n >= sizeof cred)
        return PHY_EINVAL;
    if (phy_base64_encode((const unsigned char *)cred, (size_t)n, b64, sizeof b64, 0) < 0) {
        errf(c, "proxy identifier too long");
        return PHY_EINVAL;
    }
    n = snprintf(req, sizeof req,
                 "CONNECT %s%s%s:%u HTTP/1.1\r\nHost: %s%s%s:%u\r\n"
                 "Proxy-Authorization: Basic %s\r\n\r\n",
                 lb, o->host, rb, o->port, lb, o->host, rb, o->port, b64);
    if (n < 0 || (size_t)n >= sizeof req)
        return PHY_EINVAL;
    rc = raw_write_all(c, req, (size_t)n);
    if (rc != 0)
        return rc;
    rc = read_head(c, PHY_HTTP_DEFAULT_MAX_HEAD, &res, "proxy");
    if (rc != 0)
        return rc;
    if (res.status != 200) {
        errf(c, "proxy answered %d", res.status);
        return PHY_EPROTO;
    }
    if (c->pos != c->len) {
        errf(c, "proxy sent unexpected bytes after its 200 answer");
        return PHY_EPROTO;
    }
    c->pos = 0;
    c->len = 0;
    return 0;
}

struct body {
    char *p;
    size_t len, cap;
};

static int body_append(struct conn *c, struct body *b, const char *src, size_t n)
{
    size_t need;

    if (n > PHY_CLIENT_MAX_BODY - b->len) {
        errf(c, "response body over %u bytes", PHY_CLIENT_MAX_BODY);
        return PHY_ETOOBIG;
    }
    need = b->len + n + 1;
    if (need > b->cap) {
        size_t ncap = b->cap != 0 ? b->cap : 4096;
        char *np;

        while (ncap < need)
            ncap *= 2;
        if (ncap > (size_t)PHY_CLIENT_MAX_BODY + 1)
            ncap = (size_t)PHY_CLIENT_MAX_BODY + 1;
        np = realloc(b->p, ncap);
        if (np == NULL) {
            errf(c, "out of memory");
            return PHY_ENOMEM;
        }
        b->p = np;
        b->cap = ncap;
    }
    if (n > 0)
        memcpy(b->p + b->len, src, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

/* Appends exactly n body bytes from the connection. */
static int read_exact(struct conn *c, struct body *b, size_t n)
{
    while (n > 0) {
        int avail = fill(c);
        size_t take;
        int rc;

        if (avail < 0)
            return avail;
        if (avail == 0) {
            errf(c, "connection closed before the end of the body");
            return PHY_EPROTO;
        }
        take = (size_t)avail < n ? (size_t)avail : n;
        rc = body_append(c, b, c->buf + c->pos, take);
        if (rc != 0)
            return rc;
        c->pos += take;
        n -= take;
    }
    return 0;
}

/* Decodes a chunked body (phy_dechunk_feed: 1-8 hex digits per size, optional
 * ";ext", CRLF after each chunk, trailers ignored but bounded). */
static int read_chunked(struct conn *c, struct body *b)
{
    struct phy_dechunk d;
    char out[CLIENT_RBUF];

    memset(&d, 0, sizeof d);
    for (;;) {
        int avail = fill(c), rc;
        size_t outn = 0, used = 0;

        if (avail < 0)
            return avail;
        if (avail == 0) {
            errf(c, "connection closed before the end of the chunked body");
            return PHY_EPROTO;
        }
        rc = phy_dechunk_feed(&d, c->buf + c->pos, (size_t)avail, out, &outn, &used);
        c->pos += used;
        if (rc < 0) {
            errf(c, rc == PHY_ETOOBIG ? "chunked trailers over the limit"
                                      : "malformed chunked framing");
            return rc;
        }
        if (outn > 0) {
            int arc = body_append(c, b, out, outn);
            if (arc != 0)
                return arc;
        }
        if (d.left > PHY_CLIENT_MAX_BODY - b->len) { /* refused on the size line */
            errf(c, "response body over %u bytes", PHY_CLIENT_MAX_BODY);
            return PHY_ETOOBIG;
        }
        if (rc == 1)
            return 0;
    }
}

/* Reads until the peer closes, at most PHY_CLIENT_MAX_BODY bytes. */
static int read_until_close(struct conn *c, struct body *b)
{
    for (;;) {
        int avail = fill(c);
        int rc;

        if (avail <= 0)
            return avail;
        rc = body_append(c, b, c->buf + c->pos, (size_t)avail);
        if (rc != 0)
            return rc;
        c->pos += (size_t)avail;
    }
}

static int valid_method(const char *m)
{
    size_t n = strlen(m);

    if (n == 0 || n > 16)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (m[i] < 'A' || m[i] > 'Z')
            return 0;
    return 1;
}

static int valid_path(const char *p)
{
    size_t n = strlen(p);

    if (n == 0 || n > CLIENT_MAX_PATH || p[0] != '/')
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f)
            return 0;
    return 1;
}

/* Field value: no control bytes but HTAB (so no CR/LF header injection). */
static int valid_value(const char *v, size_t max)
{
    size_t n = strlen(v);

    if (n > max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return 0;
    }
    return 1;
}

/* Extra header block: non-empty "Name: value\r\n" lines only. */
static int valid_headers(const char *h)
{
    size_t n = strlen(h), start = 0;

    if (n > CLIENT_MAX_EXTRA_HEADERS)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)h[i];
        if (ch == '\r') {
            if (i + 1 >= n || h[i + 1] != '\n' || i == start ||
                memchr(h + start, ':', i - start) == NULL)
                return 0;
            i++;
            start = i + 1;
            continue;
        }
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return 0;
    }
    return start == n;
}

static int needs_length(const char *method)
{
    return strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
           strcmp(method, "PATCH") == 0;
}

/* Builds the request head into a malloc'd string. */
static int build_head(struct conn *c, const struct phy_client_opts *o, const char *method,
                      const char *path, const char *headers, const char *content_type,
                      const char *body, size_t body_len, int keep, char **out, size_t *outlen)
{
    const char *lb = strchr(o->host, ':') != NULL ? "[" : "";
    const char *rb = *lb != '\0' ? "]" : "";
    char portpart[8] = "";
    char lenpart[64] = "";
    char *head;
    size_t cap;
    int n;

    if (o->port != 443)
        snprintf(portpart, sizeof portpart, ":%u", o->port);
    if (body != NULL || needs_length(method))
        snprintf(lenpart, sizeof lenpart, "Content-Length: %zu\r\n", body != NULL ? body_len : 0);
    cap = strlen(method) + strlen(path) + strlen(o->host) + strlen(headers) +
          (content_type != NULL ? strlen(content_type) : 0) +
          (o->user_agent != NULL ? strlen(o->user_agent) : 0) + 256;
    head = malloc(cap);
    if (head == NULL) {
        errf(c, "out of memory");
        return PHY_ENOMEM;
    }
    n = snprintf(head, cap,
                 "%s %s HTTP/1.1\r\nHost: %s%s%s%s\r\nUser-Agent: %s\r\n"
                 "%s%s%s%s%s%s\r\n",
                 method, path, lb, o->host, rb, portpart,
                 o->user_agent != NULL ? o->user_agent : "phy/0.1",
                 keep ? "" : "Connection: close\r\n", headers,
                 body != NULL && content_type != NULL ? "Content-Type: " : "",
                 body != NULL && content_type != NULL ? content_type : "",
                 body != NULL && content_type != NULL ? "\r\n" : "", lenpart);
    if (n < 0 || (size_t)n >= cap) {
        free(head);
        errf(c, "request head too large");
        return PHY_ETOOBIG;
    }
    *out = head;
    *outlen = (size_t)n;
    return 0;
}

static int check_args(struct conn *c, const struct phy_client_opts *o, const char *method,
                      const char *path, const char *headers, const char *content_type)
{
    size_t hn;

    if (o == NULL || o->host == NULL || method == NULL || path == NULL) {
        errf(c, "missing request argument");
        return PHY_EINVAL;
    }
    hn = strlen(o->host);
    if (hn == 0 || hn > CLIENT_MAX_HOST || !valid_host_chars(o->host, hn, 1) || o->port == 0 ||
        o->port > 65535) {
        errf(c, "invalid host or port");
        return PHY_EINVAL;
    }
    if (!valid_method(method) || !valid_path(path)) {
        errf(c, "invalid method or path");
        return PHY_EINVAL;
    }
    if ((headers != NULL && !valid_headers(headers)) ||
        (content_type != NULL && !valid_value(content_type, 256))) {
        errf(c, "invalid request header");
        return PHY_EINVAL;
    }
    if (o->user_agent != NULL) {
        size_t un = strlen(o->user_agent);
        int bad = un == 0 || un > 64;
        for (size_t i = 0; i < un && !bad; i++)
            bad = o->user_agent[i] < 0x20 || o->user_agent[i] > 0x7e;
        if (bad) {
            errf(c, "invalid User-Agent");
            return PHY_EINVAL;
        }
    }
    if (o->proxy_host != NULL) {
        size_t pn = strlen(o->proxy_host);
        if (pn == 0 || pn > CLIENT_MAX_HOST || !valid_host_chars(o->proxy_host, pn, 1) ||
            o->proxy_port == 0 || o->proxy_port > 65535 || o->proxy_ident == NULL ||
            !valid_ident(o->proxy_ident) ||
            (o->proxy_secret != NULL &&
             (strlen(o->proxy_secret) > PHY_PROXY_TOKEN_MAX || strchr(o->proxy_secret, ':')))) {
            errf(c, "invalid proxy host, port or identifier");
            return PHY_EINVAL;
        }
    }
    return 0;
}

static int no_body_status(int status)
{
    return (status >= 100 && status < 200) || status == 204 || status == 304;
}

/* One request on a fresh connection; see client.h. */
/* TCP (+ CONNECT through the proxy when set) + TLS with verification for o. 0 or
 * negative with a reason in c->err. */
static int conn_establish(struct conn *c, const struct phy_client_opts *o, SSL_CTX **ctx,
                          BIO_METHOD **meth)
{
    int rc;

    if (o->proxy_host != NULL) {
        rc = tcp_connect(c, o->proxy_host, o->proxy_port);
        if (rc < 0)
            return rc;
        c->fd = rc;
        rc = proxy_connect(c, o);
    } else {
        char chost[CLIENT_MAX_HOST + 1];
        unsigned cport = o->port;

        if (o->connect_addr != NULL) {
            if (phy_client_parse_hostport(o->connect_addr, chost, sizeof chost, &cport, o->port) !=
                0) {
                errf(c, "invalid connect address");
                return PHY_EINVAL;
            }
        } else {
            memcpy(chost, o->host, strlen(o->host) + 1);
        }
        rc = tcp_connect(c, chost, cport);
        if (rc >= 0) {
            c->fd = rc;
            rc = 0;
        }
    }
    if (rc != 0)
        return rc;
    return tls_connect(c, ctx, meth, o->host, o->ca_file, o->resume);
}

/* One request and its answer on the established connection c. keep: HTTP/1.1
 * persistent (no Connection: close); *reusable then says whether the connection may
 * carry the next request. *answered is set once a response head was read. */
static int exchange(struct conn *c, const struct phy_client_opts *o, const char *method,
                    const char *path, const char *headers, const char *content_type,
                    const char *body, size_t body_len, int keep, struct phy_client_response *res,
                    int *reusable, int *answered)
{
    struct body b = {0};
    struct phy_http_response head;
    char *reqhead = NULL;
    size_t reqlen = 0;
    int rc, delimited = 0;

    *reusable = *answered = 0;
    rc = build_head(c, o, method, path, headers != NULL ? headers : "", content_type, body,
                    body_len, keep, &reqhead, &reqlen);
    if (rc != 0)
        goto out;
    res->sent = 1;
    rc = tls_write_all(c, reqhead, reqlen);
    if (rc == 0 && body != NULL && body_len > 0)
        rc = tls_write_all(c, body, body_len);
    if (rc != 0)
        goto out;
    do {
        rc = read_head(c, PHY_HTTP_DEFAULT_MAX_HEAD, &head, "server");
        if (rc != 0)
            goto out;
    } while (head.status >= 100 && head.status < 200 && head.status != 101);
    *answered = 1;

    rc = body_append(c, &b, "", 0); /* the body is never NULL on success */
    if (rc != 0)
        goto out;
    if (strcmp(method, "HEAD") == 0 || no_body_status(head.status)) {
        rc = 0;
        delimited = 1;
    } else if (head.chunked) {
        rc = read_chunked(c, &b);
        delimited = 1;
    } else if (head.content_length >= 0) {
        if ((uint64_t)head.content_length > PHY_CLIENT_MAX_BODY) {
            errf(c, "response body over %u bytes", PHY_CLIENT_MAX_BODY);
            rc = PHY_ETOOBIG;
        } else {
            rc = read_exact(c, &b, (size_t)head.content_length);
            delimited = 1;
        }
    } else {
        rc = read_until_close(c, &b);
    }
    if (rc != 0)
        goto out;
    *reusable = keep && delimited && head.keep_alive && !c->eof && c->pos == c->len;
    if (!*reusable)
        drain(c);
    res->status = head.status;
    res->body = b.p;
    res->body_len = b.len;
    b.p = NULL;
out:
    if (reqhead != NULL)
        OPENSSL_clear_free(reqhead, reqlen); /* it may carry an Authorization header */
    free(b.p);
    return rc;
}

/* A connection of phy_client_request / phy_client_keep. */
static struct conn *conn_new(const struct phy_client_opts *o, char *err, size_t errcap)
{
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->fd = -1;
    c->err = err;
    c->errcap = errcap;
    c->timeout_ms = o != NULL && o->timeout_ms > 0 ? o->timeout_ms : CLIENT_DEFAULT_TIMEOUT_MS;
    c->cert_time_floor = o != NULL ? (time_t)o->cert_time_floor : 0;
    return c;
}

/* Closes c (close_notify when it ended cleanly) and frees it with its TLS context. */
static void conn_free(struct conn *c, SSL_CTX *ctx, BIO_METHOD *meth, int clean)
{
    if (c->ssl != NULL) {
        if (clean && !c->eof)
            SSL_shutdown(c->ssl); /* best effort close_notify; never waits */
        SSL_free(c->ssl);
    }
    BIO_meth_free(meth);
    SSL_CTX_free(ctx);
    if (c->fd >= 0)
        close(c->fd);
    ERR_clear_error();
    OPENSSL_cleanse(c->buf, sizeof c->buf);
    free(c);
}

int phy_client_request(const struct phy_client_opts *o, const char *method, const char *path,
                       const char *headers, const char *content_type, const char *body,
                       size_t body_len, struct phy_client_response *res, char *err, size_t errcap)
{
    struct conn *c;
    SSL_CTX *ctx = NULL;
    BIO_METHOD *meth = NULL;
    int rc, reusable, answered;

    if (err != NULL && errcap > 0)
        err[0] = '\0';
    PHY_ASSERT(res != NULL);
    memset(res, 0, sizeof *res);
    c = conn_new(o, err, errcap);
    if (c == NULL)
        return PHY_ENOMEM;
    ERR_clear_error();
    rc = check_args(c, o, method, path, headers, content_type);
    if (rc == 0)
        rc = conn_establish(c, o, &ctx, &meth);
    if (rc == 0)
        rc = exchange(c, o, method, path, headers, content_type, body, body_len, 0, res,
                      &reusable, &answered);
    conn_free(c, ctx, meth, rc == 0);
    return rc;
}

struct phy_client_keep {
    struct conn *c; /* NULL between connections */
    SSL_CTX *ctx;
    BIO_METHOD *meth;
};

struct phy_client_keep *phy_client_keep_new(void)
{
    return calloc(1, sizeof(struct phy_client_keep));
}

static void keep_drop(struct phy_client_keep *k, int clean)
{
    if (k->c != NULL)
        conn_free(k->c, k->ctx, k->meth, clean);
    k->c = NULL;
    k->ctx = NULL;
    k->meth = NULL;
}

void phy_client_keep_close(struct phy_client_keep *k)
{
    if (k == NULL)
        return;
    keep_drop(k, 1);
    free(k);
}

int phy_client_keep_request(struct phy_client_keep *k, const struct phy_client_opts *o,
                            const char *method, const char *path, const char *headers,
                            const char *content_type, const char *body, size_t body_len,
                            int idempotent, struct phy_client_response *res, char *err,
                            size_t errcap)
{
    int rc, reusable = 0, answered = 0;

    if (err != NULL && errcap > 0)
        err[0] = '\0';
    PHY_ASSERT(k != NULL && res != NULL);
    memset(res, 0, sizeof *res);
    for (int attempt = 0;; attempt++) {
        int fresh = k->c == NULL;
        if (fresh) {
            k->c = conn_new(o, err, errcap);
            if (k->c == NULL)
                return PHY_ENOMEM;
            ERR_clear_error();
            rc = check_args(k->c, o, method, path, headers, content_type);
            if (rc == 0)
                rc = conn_establish(k->c, o, &k->ctx, &k->meth);
            if (rc != 0) {
                keep_drop(k, 0);
                return rc;
            }
        } else {
            k->c->err = err;
            k->c->errcap = errcap;
            ERR_clear_error();
            rc = check_args(k->c, o, method, path, headers, content_type);
            if (rc != 0)
                return rc;
        }
        rc = exchange(k->c, o, method, path, headers, content_type, body, body_len, 1, res,
                      &reusable, &answered);
        if (rc == 0) {
            if (!reusable)
                keep_drop(k, 1);
            return 0;
        }
        keep_drop(k, 0);
        /* A kept connection the server had closed while it was idle: once more on a
         * fresh one, when the request may be repeated. */
        if (fresh || answered || !idempotent || attempt > 0)
            return rc;
        if (err != NULL && errcap > 0)
            err[0] = '\0';
        res->sent = 0;
    }
}

/* Frees the body; NULL-safe. */
void phy_client_response_free(struct phy_client_response *res)
{
    if (res == NULL)
        return;
    free(res->body);
    memset(res, 0, sizeof *res);
}

/* ---- Long-lived connections (phy_client_open): WebSocket sessions, benchmarks ---- */

struct phy_client_conn {
    struct conn *c;
    SSL_CTX *ctx;
    BIO_METHOD *meth;
    struct phy_http_response res; /* strings point into c->buf, which is never refilled */
    int have_res;
    int failed; /* a fatal TLS error: no close_notify */
};

/* Opens a long-lived connection; see client.h. */
int phy_client_open(const struct phy_client_opts *o, const char *head, size_t head_len,
                    struct phy_client_conn **out, char *err, size_t errcap)
{
    struct phy_client_conn *k;
    struct conn *c;
    int rc;

    if (err != NULL && errcap > 0)
        err[0] = '\0';
    PHY_ASSERT(out != NULL);
    *out = NULL;
    k = calloc(1, sizeof *k);
    c = calloc(1, sizeof *c);
    if (k == NULL || c == NULL) {
        free(k);
        free(c);
        return PHY_ENOMEM;
    }
    k->c = c;
    c->fd = -1;
    c->err = err;
    c->errcap = errcap;
    c->timeout_ms = o != NULL && o->timeout_ms > 0 ? o->timeout_ms : CLIENT_DEFAULT_TIMEOUT_MS;
    c->cert_time_floor = o != NULL ? (time_t)o->cert_time_floor : 0;
    ERR_clear_error();

    /* Host, port and proxy settings are checked as for a plain GET. */
    rc = check_args(c, o, "GET", "/", NULL, NULL);
    if (rc != 0)
        goto fail;
    if (head != NULL && (head_len == 0 || head_len > PHY_HTTP_DEFAULT_MAX_HEAD)) {
        errf(c, "invalid request head");
        rc = PHY_EINVAL;
        goto fail;
    }
    rc = conn_establish(c, o, &k->ctx, &k->meth);
    if (rc != 0)
        goto fail;
    /* wslay-style senders retry a blocked write from another buffer with the same bytes. */
    SSL_set_mode(c->ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE);
    if (head != NULL) {
        rc = tls_write_all(c, head, head_len);
        if (rc != 0)
            goto fail;
        rc = read_head(c, PHY_HTTP_DEFAULT_MAX_HEAD, &k->res, "server");
        if (rc != 0)
            goto fail;
        k->have_res = 1;
    }
    c->err = NULL;
    c->errcap = 0;
    ERR_clear_error();
    *out = k;
    return 0;

fail:
    c->err = NULL;
    c->errcap = 0;
    k->failed = 1;
    phy_client_conn_close(k);
    ERR_clear_error();
    return rc;
}

/* The response head read by phy_client_open, or NULL. */
const struct phy_http_response *phy_client_conn_response(const struct phy_client_conn *k)
{
    return k != NULL && k->have_res ? &k->res : NULL;
}

/* The connection's non-blocking socket. */
int phy_client_conn_fd(const struct phy_client_conn *k)
{
    return k != NULL ? k->c->fd : -1;
}

/* Non-blocking read; bytes buffered behind the response head come first. */
int phy_client_conn_read(struct phy_client_conn *k, void *buf, size_t cap, int *want_write)
{
    struct conn *c = k->c;
    int n = cap > (size_t)INT_MAX ? INT_MAX : (int)cap;
    int r, e;

    if (want_write != NULL)
        *want_write = 0;
    if (cap == 0)
        return PHY_EINVAL;
    if (c->pos < c->len) {
        size_t take = c->len - c->pos < (size_t)n ? c->len - c->pos : (size_t)n;

        memcpy(buf, c->buf + c->pos, take);
        c->pos += take;
        return (int)take;
    }
    if (c->eof)
        return 0;
    ERR_clear_error();
    errno = 0;
    r = SSL_read(c->ssl, buf, n);
    if (r > 0)
        return r;
    e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return PHY_EAGAIN;
    if (e == SSL_ERROR_WANT_WRITE) {
        if (want_write != NULL)
            *want_write = 1;
        return PHY_EAGAIN;
    }
    if (e == SSL_ERROR_ZERO_RETURN ||
        (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0) ||
        (e == SSL_ERROR_SSL &&
         ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
        c->eof = 1;
        if (e != SSL_ERROR_ZERO_RETURN)
            k->failed = 1;
        ERR_clear_error();
        return 0;
    }
    k->failed = 1;
    ERR_clear_error();
    return PHY_EIO;
}

/* Non-blocking write of up to n bytes. */
int phy_client_conn_write(struct phy_client_conn *k, const void *buf, size_t n, int *want_read)
{
    struct conn *c = k->c;
    int len = n > (size_t)INT_MAX ? INT_MAX : (int)n;
    int w, e;

    if (want_read != NULL)
        *want_read = 0;
    if (n == 0)
        return PHY_EINVAL;
    ERR_clear_error();
    w = SSL_write(c->ssl, buf, len);
    if (w > 0)
        return w;
    e = SSL_get_error(c->ssl, w);
    if (e == SSL_ERROR_WANT_WRITE)
        return PHY_EAGAIN;
    if (e == SSL_ERROR_WANT_READ) {
        if (want_read != NULL)
            *want_read = 1;
        return PHY_EAGAIN;
    }
    k->failed = 1;
    ERR_clear_error();
    return PHY_EIO;
}

/* Best-effort close_notify, then frees everything; NULL-safe. */
void phy_client_conn_close(struct phy_client_conn *k)
{
    struct conn *c;

    if (k == NULL)
        return;
    c = k->c;
    if (c != NULL) {
        if (c->ssl != NULL) {
            if (!k->failed && !c->eof)
                SSL_shutdown(c->ssl); /* never waits: the socket is non-blocking */
            SSL_free(c->ssl);
        }
        if (c->fd >= 0)
            close(c->fd);
        OPENSSL_cleanse(c->buf, sizeof c->buf);
        free(c);
    }
    BIO_meth_free(k->meth);
    SSL_CTX_free(k->ctx);
    ERR_clear_error();
    free(k);
}
