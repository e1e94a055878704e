"""The hub behind its proxy (issue 10, items 2, 6 and 7), on loopback with real
daemons: the client's address reaches the hub in the proxy's PROXY v2 header (and
only a trusted proxy may send one), registrations and codes are limited per source
address, live registrations have a global cap, and a SQLite store shrinks after a
registration flood."""

import json
import os
import socket
import ssl
import struct
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
from phytest import wait_until  # noqa: E402
from stack import HOST, Stack, https_connection, https_request, is_postgresql  # noqa: E402

ST = None


def setup():
    global ST
    # Later flags win: a tight per-source limit and a small global cap for this hub.
    ST = Stack("edge", hub_flags=["--register-rate", "1", "--register-burst", "3",
                                  "--max-registrations", "12", "--registration-idle", "2"])


def teardown():
    if ST is not None:
        ST.stop()


def register_from(source, serial):
    """POST /v1/provisioning/register through the proxy from address `source`."""
    conn = https_connection(ST.proxy_port, ST.tls_context(), HOST, "sn_" + serial,
                            source=source)
    return https_request(conn, "POST", "/v1/provisioning/register", {"serial": serial})


def test_source_address_reaches_the_hub():
    st, js, _, _ = register_from("127.0.0.21", "EDGE-ADDR")
    assert st == 201, (st, js)
    # The hub logs the device's address, not the proxy's (127.0.0.1).
    ST.hub.wait_log(r"event=http .*peer=127\.0\.0\.21:\d+ method=POST "
                    r"path=/v1/provisioning/register status=201")


def test_registrations_limited_per_source():
    codes = []
    for i in range(4):
        st, js, _, headers = register_from("127.0.0.22", "EDGE-RATE-%d" % i)
        codes.append(st)
    assert codes == [201, 201, 201, 429], codes
    assert js["error"] == "rate_limited" and int(headers["retry-after"]) >= 1, (js, headers)
    # Another address (another device behind the same proxy) is not affected.
    st, js, _, _ = register_from("127.0.0.23", "EDGE-RATE-OTHER")
    assert st == 201, (st, js)
    st, _, body, _ = ST.request("GET", "/metrics", via_proxy=False)
    assert b'phyhub_provisioning_total{outcome="rate_limited"} 1' in body, body


def test_untrusted_peer_cannot_send_a_proxy_header():
    """Straight to the hub from 127.0.0.2 (not a --trusted-proxy) with a PROXY header
    claiming another address: the connection fails and the claimed address is never
    seen; the hub goes on serving."""
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    body = socket.inet_aton("203.0.113.77") + socket.inet_aton("127.0.0.1") + \
        struct.pack(">HH", 40000, ST.hub_port)
    s = socket.socket()
    s.settimeout(10)
    s.bind(("127.0.0.2", 0))
    s.connect(("127.0.0.1", ST.hub_port))
    s.sendall(sig + b"\x21\x11" + struct.pack(">H", len(body)) + body)
    ctx = ST.tls_context()
    try:
        tls = ctx.wrap_socket(s, server_hostname=HOST)
        tls.close()
        assert False, "TLS came up after a PROXY header from an untrusted peer"
    except (ssl.SSLError, OSError):
        pass
    finally:
        s.close()
    st, _, _, _ = ST.request("GET", "/metrics", via_proxy=False)
    assert st == 200
    assert "203.0.113.77" not in ST.hub.log()


def test_global_registration_cap():
    """At --max-registrations new registrations get 503 registrations_full (with
    Retry-After); once they lapse and the sweeper counts again, registering works."""
    codes, i = [], 0
    while len(codes) < 40 and 503 not in codes:
        st, js, _, headers = register_from("127.0.%d.%d" % (30 + i // 200, 1 + i % 200),
                                           "EDGE-CAP-%d-%s" % (i, "x" * 50))
        codes.append(st)
        i += 1
    assert codes[-1] == 503, codes
    assert js["error"] == "registrations_full" and int(headers["retry-after"]) >= 1, js
    assert set(codes[:-1]) == {201}, codes
    assert len(codes) <= 13, codes  # 12 live at most (fewer: earlier tests' still count)

    def registers_again():
        s, _, _, _ = register_from("127.0.0.24", "EDGE-AFTER")
        return s == 201
    wait_until(registers_again, 15, "registering after the registrations lapsed")


def test_sqlite_store_shrinks_after_a_flood():
    """20k registrations written straight into the running hub's SQLite file grow it;
    when they lapse, the sweep deletes them and gives the pages back (auto_vacuum =
    INCREMENTAL): the file ends far below its peak."""
    if is_postgresql(ST.db):
        return  # PostgreSQL reuses the space itself (autovacuum); nothing to shrink
    import sqlite3
    import time
    now = int(time.time() * 1000)
    con = sqlite3.connect(ST.db, timeout=10)
    assert con.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    with con:
        con.executemany(
            "INSERT INTO registrations(token_hash, serial, interval_s, last_active_ms, "
            "created_ms) VALUES (?, ?, 1, ?, ?)",
            (("%064x" % (i + 1), "FLOOD-%06d-%s" % (i, "y" * 40), now, now)
             for i in range(20000)))
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    peak = os.path.getsize(ST.db)
    assert peak > 3 * 1024 * 1024, peak
    wait_until(lambda: os.path.getsize(ST.db) < peak // 4, 20, "the store file to shrink")


def test_full_hub_answers_503_and_keeps_a_share_for_devices():
    """Issue 10, item 6: at --max-connections (4) a new client gets 503 over_capacity
    with Retry-After instead of a silent reset, requests other than device sessions
    may not use the device share (50% here), and past the overflow (8 more) new
    connections are reset and that is logged."""
    st = Stack("edge_full", hub_flags=["--max-connections", "4", "--device-share", "50"],
               proxy=False)
    held = []
    try:
        creds = st.provision("FULL-1")

        def hold(n):
            for _ in range(n):
                held.append(phytest.connect(st.hub_port))  # silent: stays in the handshake

        def metrics():
            return st.request("GET", "/metrics", via_proxy=False)
        hold(2)
        wait_until(lambda: metrics()[0] == 503, 10, "503 once the general share is taken")
        s, js, _, headers = metrics()
        assert s == 503 and js["error"] == "over_capacity", (s, js)
        assert headers["retry-after"] == "1", headers
        status, _, ws = st.ws_connect(creds, via_proxy=False)
        assert status == 101, "a device session may use the device share"
        hold(1)  # 3 silent + 1 session = 4: full
        status, _, _ = st.ws_connect(creds, via_proxy=False)
        assert status == 503, status
        hold(8)  # the overflow, answered 503 if they spoke
        try:  # the reset may come before connect() returns
            with socket.create_connection(("127.0.0.1", st.hub_port), timeout=10) as x:
                got = x.recv(1)
        except ConnectionResetError:
            got = b""
        assert got == b"", got
        st.hub.wait_log(r"event=over_capacity connections=\d+ max_connections=4 action=reset")
        ws.close()
    finally:
        for x in held:
            x.close()
        st.stop()


def test_handshakes_in_flight_are_bounded():
    """Issue 13: with --max-handshakes (8) clients stalled inside their TLS handshake (a
    record header sent, nothing more), a new client waits its turn (its ClientHello not
    read yet) and is served as soon as a slot is free (two of the eight closed),
    instead of every handshake of a storm slowing down all the others until they time
    out. Connections that never speak take no slot: eight of them block nothing."""
    st = Stack("edge_setup", hub_flags=["--max-handshakes", "8"], proxy=False)
    silent, stalled, result = [], [], {}
    try:
        for _ in range(8):
            silent.append(phytest.connect(st.hub_port))
        assert st.request("GET", "/healthz", via_proxy=False)[0] == 200
        for _ in range(8):
            x = phytest.connect(st.hub_port)
            x.sendall(b"\x16\x03\x01")  # the start of a TLS record: the handshake begins
            stalled.append(x)

        def probe():
            result["r"] = st.request("GET", "/healthz", via_proxy=False)
        t = threading.Thread(target=probe, daemon=True)
        t.start()
        t.join(1.5)
        assert t.is_alive() and "r" not in result, result  # waiting for a slot
        for x in stalled[:2]:
            x.close()
        t.join(10)
        assert not t.is_alive() and result["r"][0] == 200, result
    finally:
        for x in silent + stalled:
            x.close()
        st.stop()


def test_idle_keep_alive_connections_capped_per_source():
    st = Stack("edge_idle", hub_flags=["--max-idle-per-source", "2"], proxy=False)
    conns = []
    try:
        answers = []
        for _ in range(3):
            c = https_connection(st.hub_port, st.tls_context(), source="127.0.0.41")
            c.request("GET", "/metrics")
            r = c.getresponse()
            r.read()
            answers.append((r.status, (r.getheader("Connection") or "").lower()))
            conns.append(c)
        assert answers[:2] == [(200, "keep-alive")] * 2 or \
            all(a == (200, "") for a in answers[:2]), answers
        assert answers[2] == (200, "close"), answers
        # Another address keeps its own idle connections.
        c = https_connection(st.hub_port, st.tls_context(), source="127.0.0.42")
        c.request("GET", "/metrics")
        r = c.getresponse()
        r.read()
        assert (r.getheader("Connection") or "").lower() != "close"
        conns.append(c)
    finally:
        for c in conns:
            c.close()
        st.stop()


if __name__ == "__main__":
    phytest.main()
