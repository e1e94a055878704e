/* phyctl's streaming GET: request head, then body pieces as they arrive. */
#include "stream.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "phy/err.h"
#include "phy/http.h"
#include "sse.h"

#define STREAM_BUF 16384
#define STREAM_TICK_MS 250

/* Keeps the first CTL_STREAM_ERR_BODY bytes of an error answer. */
static int keep_error(struct ctl_stream_result *r, const char *p, size_t n)
{
    size_t room = CTL_STREAM_ERR_BODY - r->body_len;
    char *nb;

    if (n > room)
        n = room;
    if (n == 0)
        return 0;
    nb = realloc(r->body, r->body_len + n + 1);
    if (nb == NULL)
        return PHY_ENOMEM;
    memcpy(nb + r->body_len, p, n);
    r->body = nb;
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return 0;
}

static int build_head(const struct phy_client_opts *o, const char *path, const char *headers,
                      char *out, size_t cap)
{
    const char *lb = strchr(o->host, ':') != NULL ? "[" : "";
    const char *rb = *lb != '\0' ? "]" : "";
    char portpart[8] = "";
    int n;

    if (o->port != 443)
        snprintf(portpart, sizeof portpart, ":%u", o->port);
    n = snprintf(out, cap,
                 "GET %s HTTP/1.1\r\nHost: %s%s%s%s\r\nUser-Agent: phyctl/0.1\r\n"
                 "Accept: text/event-stream\r\nCache-Control: no-store\r\n%s\r\n",
                 path, lb, o->host, rb, portpart, headers != NULL ? headers : "");
    return n < 0 || (size_t)n >= cap ? PHY_ETOOBIG : n;
}

/* Hands one decoded piece to the callback (200) or to the error body. 1 = stop. */
static int deliver(struct ctl_stream_result *r, const char *p, size_t n, ctl_stream_fn on_data,
                   void *ctx)
{
    if (n == 0)
        return 0;
    if (r->status != 200)
        return keep_error(r, p, n) < 0 ? PHY_ENOMEM : 0;
    if (on_data(ctx, p, n) != 0) {
        r->stopped = 1;
        return 1;
    }
    return 0;
}

int ctl_stream_get(const struct phy_client_opts *o, const char *path, const char *headers,
                   ctl_stream_fn on_data, void *ctx, volatile sig_atomic_t *stop,
                   struct ctl_stream_result *r, char *err, size_t errcap)
{
    struct phy_client_conn *conn = NULL;
    const struct phy_http_response *head;
    struct phy_dechunk dc;
    char head_text[PHY_HTTP_DEFAULT_MAX_HEAD];
    char *buf = NULL, *dec = NULL;
    int64_t left = -1; /* Content-Length bytes still due; -1 = until close */
    int chunked, rc, n;

    memset(r, 0, sizeof *r);
    memset(&dc, 0, sizeof dc);
    if (err != NULL && errcap > 0)
        err[0] = '\0';
    n = build_head(o, path, headers, head_text, sizeof head_text);
    if (n < 0) {
        snprintf(err, errcap, "request head too large");
        return n;
    }
    rc = phy_client_open(o, head_text, (size_t)n, &conn, err, errcap);
    if (rc != 0)
        return rc;
    head = phy_client_conn_response(conn);
    r->status = head->status;
    chunked = head->chunked;
    if (!chunked && head->content_length >= 0)
        left = head->content_length;
    buf = malloc(STREAM_BUF);
    dec = malloc(STREAM_BUF);
    if (buf == NULL || dec == NULL) {
        rc = PHY_ENOMEM;
        goto out;
    }
    while (left != 0 && !(stop != NULL && *stop)) {
        int want_write = 0, got;

        got = phy_client_conn_read(conn, buf, STREAM_BUF, &want_write);
        if (got == PHY_EAGAIN) {
            struct pollfd p = {.fd = phy_client_conn_fd(conn),
                               .events = want_write ? POLLOUT : POLLIN};
            if (poll(&p, 1, STREAM_TICK_MS) < 0 && errno != EINTR) {
                snprintf(err, errcap, "poll: %s", strerror(errno));
                rc = PHY_EIO;
                goto out;
            }
            continue;
        }
        if (got < 0) {
            snprintf(err, errcap, "connection failed while reading the stream");
            rc = got;
            goto out;
        }
        if (got == 0) /* the server closed: the stream (or error body) ends here */
            break;
        if (chunked) {
            size_t dn = 0;
            int d = phy_dechunk_feed(&dc, buf, (size_t)got, dec, &dn, NULL);
            if (d < 0) {
                snprintf(err, errcap, "malformed chunked framing from the server");
                rc = d;
                goto out;
            }
            rc = deliver(r, dec, dn, on_data, ctx);
            if (rc != 0 || d == 1)
                break;
        } else {
            size_t take = (size_t)got;
            if (left > 0 && (int64_t)take > left)
                take = (size_t)left;
            if (left > 0)
                left -= (int64_t)take;
            rc = deliver(r, buf, take, on_data, ctx);
            if (rc != 0)
                break;
        }
    }
    if (stop != NULL && *stop)
        r->stopped = 1;
    rc = rc < 0 ? rc : 0;
out:
    free(buf);
    free(dec);
    phy_client_conn_close(conn);
    if (rc < 0) {
        free(r->body);
        r->body = NULL;
        r->body_len = 0;
    }
    return rc;
}
