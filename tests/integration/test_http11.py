"""The hub as an HTTP/1.1 server (RFC 9110/9112), with raw requests over TLS: HEAD,
Host, absolute-form targets, OPTIONS *, Expect: 100-continue, 426's headers and the
header deadline that covers the TLS handshake and the first request together."""

import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
from stack import HOST, Stack  # noqa: E402

ST = None


def setup():
    global ST
    ST = Stack("http11", hub_flags=["--header-timeout", "2"], proxy=False)


def teardown():
    if ST is not None:
        ST.stop()


def tls():
    s = socket.create_connection(("127.0.0.1", ST.hub_port), timeout=10)
    return ST.tls_context().wrap_socket(s, server_hostname=HOST)


def exchange(raw):
    """Sends raw bytes on a new TLS connection; returns (status, headers, body)."""
    with tls() as t:
        t.sendall(raw)
        data = phytest.recv_all(t)
    head, _, body = data.partition(b"\r\n\r\n")
    status, headers = phytest.parse_status(head)
    return status, headers, body


def test_head_is_get_without_a_body():
    for path in ("/healthz", "/"):
        st, h, body = exchange(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                               % path.encode())
        assert st == 200 and body, (path, st)
        sth, hh, bodyh = exchange(b"HEAD %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                  % path.encode())
        assert sth == 200 and bodyh == b"", (path, sth, bodyh)
        assert hh["content-length"] == h["content-length"] == str(len(body)), (hh, h)


def test_host_header_rules():
    assert exchange(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")[0] == 400
    assert exchange(b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n"
                    b"Connection: close\r\n\r\n")[0] == 400
    assert exchange(b"GET /healthz HTTP/1.0\r\n\r\n")[0] == 200  # 1.0 needs none


def test_absolute_form_for_this_host_only():
    auth = b"127.0.0.1:%d" % ST.hub_port
    st, _, body = exchange(b"GET https://%s/healthz HTTP/1.1\r\nHost: %s\r\n"
                           b"Connection: close\r\n\r\n" % (auth, auth))
    assert st == 200 and b"ok" in body, (st, body)
    assert exchange(b"GET https://evil.example/healthz HTTP/1.1\r\nHost: %s\r\n"
                    b"Connection: close\r\n\r\n" % auth)[0] == 400


def test_options_star():
    st, h, body = exchange(b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert st == 204 and "GET" in h["allow"] and "HEAD" in h["allow"] and body == b"", (st, h)


def test_expect_100_continue():
    body = b'{"serial": "HTTP11-1"}'
    with tls() as t:
        t.sendall(b"POST /v1/provisioning/register HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        interim = phytest.recv_until(t, b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        t.sendall(body)
        rest = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n"):] + phytest.recv_all(t)
    assert rest.startswith(b"HTTP/1.1 201 "), rest[:80]
    ST.secrets.add(re.search(rb'"poll_token":"([^"]+)"', rest).group(1).decode())


def test_426_names_the_upgrade():
    st, h, _ = exchange(b"GET /v1/hub HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert st == 426, st
    assert h.get("upgrade") == "websocket" and h.get("sec-websocket-version") == "13", h


def test_header_deadline_covers_handshake_and_head():
    """--header-timeout 2: a client that finishes TLS, idles 1.5 s, then trickles a
    head gets 408 about 2 s after it connected, not 2 s after its first byte."""
    t0 = time.monotonic()
    with tls() as t:
        time.sleep(1.5)  # within the deadline (bounded, short)
        t.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        data = phytest.recv_all(t)
    elapsed = time.monotonic() - t0
    assert data.startswith(b"HTTP/1.1 408 "), data[:60]
    assert elapsed < 2.9, elapsed


if __name__ == "__main__":
    phytest.main()
