"""Device hub over WSS: upgrade and auth, twin.get, reported.patch, desired pushes,
replacement, revocation, pings, rate limits, bad frames, presence, events, metrics.
Real phyhub + phyproxy on loopback; frames from tests/integration/wsclient.py."""

import base64
import struct
import json
import socket
import os
import re
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
import wsclient  # noqa: E402
from phytest import wait_until  # noqa: E402
from stack import HOST, Stack, https_connection, https_request  # noqa: E402

T = {}


def setup():
    # Leak checks stay on; a small quarantine keeps RSS meaningful for the memory test.
    env = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=1"}
    T["st"] = Stack("hub", hub_flags=["--ping-interval", "1", "--ping-timeout", "2",
                                      "--device-msg-rate", "20", "--metrics-allow",
                                      "127.0.0.1"], hub_env=env)
    T["a"] = T["st"].provision("HUB-A", tags={"site": "berlin"})
    T["b"] = T["st"].provision("HUB-B", tags={"site": "berlin"})
    T["c"] = T["st"].provision("HUB-C", tags={"site": "paris"})


def teardown():
    if "st" in T:
        T["st"].stop()


def connect(creds, proxy=True, **kw):
    return T["st"].ws_connect(creds, via_proxy=proxy, **kw)


def session(creds):
    status, hdrs, ws = connect(creds)
    assert status == 101, (status, hdrs)
    return ws


def device(creds):
    st, js, _, _ = T["st"].api("GET", "/api/v1/devices/" + creds["device_id"])
    assert st == 200, (st, js)
    return js


def patch_desired(creds, patch, if_match=None):
    h = {"If-Match": '"%d"' % if_match} if if_match is not None else None
    return T["st"].api("PATCH", "/api/v1/devices/%s/twin/desired" % creds["device_id"], patch,
                       headers=h, content_type="application/merge-patch+json")


def test_upgrade_refusals():
    a = T["a"]
    bad = dict(a, device_secret="A" * 43)
    assert connect(bad)[0] == 401
    unknown = dict(a, device_id="dev_" + "a" * 26)
    # The proxy stops an unknown device ID already (its token is another device's);
    # the hub, reached directly, says 401.
    try:
        connect(unknown)
        assert False, "the proxy let a device ID through with another's token"
    except ConnectionError as e:
        assert "407" in str(e), e
    assert connect(unknown, proxy=False)[0] == 401
    st = T["st"]
    status, hdrs, _ = wsclient.handshake("127.0.0.1", st.hub_port, HOST, st.pki["ca"])
    assert status == 401 and "basic" in hdrs.get("www-authenticate", "").lower(), status
    assert connect(a, headers={"Sec-WebSocket-Version": "8"})[0] == 426
    assert connect(a, headers={"Sec-WebSocket-Protocol": "mqtt"})[0] == 400
    assert connect(a, headers={"Sec-WebSocket-Key": "short"})[0] == 400
    assert connect(a, headers={"Upgrade": None})[0] == 426


def test_twin_get_reported_patch_and_status():
    a = T["a"]
    ws = session(a)
    ws.send_json({"type": "twin.get", "id": "1"})
    m = ws.recv_type("twin")
    assert m["id"] == "1"
    twin = m["twin"]
    assert twin["device_id"] == a["device_id"] and twin["tags"] == {"site": "berlin"}
    assert twin["desired"] == {} and twin["desired_version"] == 0
    rv = twin["reported_version"]
    ws.send_json({"type": "reported.patch", "id": 2, "patch": {"fw": "1.2", "screen": {"on": True}}})
    ack = ws.recv_type("ack")
    assert ack == {"type": "ack", "id": 2, "version": rv + 1}, ack  # echoed as sent: a number
    # The same patch changes nothing: the version does not move.
    ws.send_json({"type": "reported.patch", "id": 3, "patch": {"fw": "1.2"}})
    assert ws.recv_type("ack")["version"] == rv + 1
    ws.send_json({"type": "reported.patch", "id": 4, "patch": {"screen": None}})
    assert ws.recv_type("ack")["version"] == rv + 2
    ws.send_json({"type": "status", "id": 5, "status": {"uptime_s": 12, "agent_version": "t",
                                                         "load": [0.05, 0.1]}})
    dev = wait_until(lambda: (lambda d: d if d.get("last_status") else None)(device(a)), 5,
                     "status stored")
    assert dev["last_status"]["uptime_s"] == 12
    # Numbers come back as the device wrote them (shortest form, not 0.05000000000000000277).
    raw = T["st"].api("GET", "/api/v1/devices/" + a["device_id"])[2]
    assert b'"load":[0.05,0.1]' in raw, raw
    assert dev["presence"] == "online"
    assert dev["twin"]["reported"] == {"fw": "1.2"}
    assert dev["twin"]["reported_version"] == rv + 2
    ws.close()
    wait_until(lambda: device(a)["presence"] == "offline", 5, "offline after close")


def test_desired_pushed_in_order_and_offline_changes_kept():
    a = T["a"]
    ws = session(a)
    ws.send_json({"type": "twin.get", "id": "t"})
    v0 = ws.recv_type("twin")["twin"]["desired_version"]
    t0 = time.monotonic()
    st, js, _, hdrs = patch_desired(a, {"volume": 1})
    assert st == 200 and js["version"] == v0 + 1, (st, js)
    m = ws.recv_type("desired.patch")
    latency = time.monotonic() - t0
    assert m == {"type": "desired.patch", "version": v0 + 1, "patch": {"volume": 1}}, m
    assert latency < 1.0, latency
    for i in range(2, 7):
        assert patch_desired(a, {"volume": i})[0] == 200
    got = [ws.recv_type("desired.patch")["version"] for _ in range(5)]
    assert got == list(range(v0 + 2, v0 + 7)), got
    # If-Match: stale version -> 412, current -> 200.
    assert patch_desired(a, {"volume": 9}, if_match=v0)[0] == 412
    assert patch_desired(a, {"volume": 9}, if_match=v0 + 6)[0] == 200
    ws.close()
    # Changed while offline: kept and delivered by twin.get on the next session.
    wait_until(lambda: device(a)["presence"] == "offline", 5, "offline")
    assert patch_desired(a, {"mode": "night"})[0] == 200
    ws = session(a)
    ws.send_json({"type": "twin.get", "id": "t2"})
    twin = ws.recv_type("twin")["twin"]
    assert twin["desired"] == {"volume": 9, "mode": "night"}, twin
    assert twin["desired_version"] == v0 + 8
    ws.close()


def test_fleet_patch_by_tag_reaches_every_matching_session():
    a, b, c = T["a"], T["b"], T["c"]
    wss = {k: session(v) for k, v in (("a", a), ("b", b), ("c", c))}
    st, js, _, _ = T["st"].api("PATCH", "/api/v1/twins/desired?tag=site:berlin",
                               {"campaign": "winter"},
                               content_type="application/merge-patch+json")
    assert st == 200 and js == {"matched": 2}, (st, js)
    for k in ("a", "b"):
        m = wss[k].recv_type("desired.patch")
        assert m["patch"] == {"campaign": "winter"}
    try:
        m = wss["c"].recv_type("desired.patch", timeout=0.5)
        raise AssertionError("paris device got the berlin patch: %s" % m)
    except TimeoutError:
        pass
    for ws in wss.values():
        ws.close()


def test_new_session_replaces_old_with_4000():
    b = T["b"]
    old = session(b)
    new = session(b)
    assert old.expect_close() == 4000
    new.send_json({"type": "twin.get", "id": "x"})
    assert new.recv_type("twin")["id"] == "x"
    wait_until(lambda: device(b)["presence"] == "online", 5, "still online")
    new.close()


def test_split_and_fragmented_frames_across_idle_pauses():
    """An idle session frees its framing state; a frame cut in the middle of its header
    or a message split in fragments, with pauses (and pings) in between, must still
    arrive whole."""
    a = T["a"]
    ws = session(a)
    frame = wsclient.WS.frame_bytes(wsclient.OP_TEXT, b'{"type":"twin.get","id":"split"}')
    ws.s.sendall(frame[:1])
    time.sleep(0.3)
    ws.s.sendall(frame[1:5])
    time.sleep(0.3)
    ws.s.sendall(frame[5:])
    assert ws.recv_type("twin")["id"] == "split"
    ws.send_frame(wsclient.OP_TEXT, b'{"type":"twin', fin=False)
    time.sleep(1.2)  # a ping (interval 1 s) arrives while the message is open
    ws.send_frame(wsclient.OP_CONT, b'.get","id":"frag"}', fin=True)
    assert ws.recv_type("twin")["id"] == "frag"
    ws.close()


def test_bad_frames_get_documented_errors_and_closes():
    a, c = T["a"], T["c"]
    other = session(c)  # must be unaffected by all of this
    ws = session(a)
    ws.send_frame(wsclient.OP_TEXT, b"{not json")
    assert ws.recv_type("error")["error"] == "bad_message"
    ws.send_json({"type": "nope", "id": "u"})
    e = ws.recv_type("error")
    assert e["error"] == "unknown_type" and e["id"] == "u", e
    big = {"type": "reported.patch", "id": "big", "patch": {"blob": "x" * 33000}}
    ws.send_json(big)
    e = ws.recv_type("error")
    assert e["error"] in ("too_large",), e
    deep = {"type": "reported.patch", "id": "deep", "patch": {}}
    node = deep["patch"]
    for _ in range(11):
        node["n"] = {}
        node = node["n"]
    ws.send_json(deep)
    assert ws.recv_type("error")["error"] in ("too_deep", "too_large")
    # The session is still usable after message-level errors.
    ws.send_json({"type": "twin.get", "id": "ok"})
    assert ws.recv_type("twin")["id"] == "ok"
    ws.send_frame(wsclient.OP_BINARY, b"\x00\x01")
    assert ws.expect_close() == 1003
    ws = session(a)
    ws.send_frame(wsclient.OP_TEXT, b'{"type":"twin.get","id":"\xff\xfe"}')
    assert ws.expect_close() == 1007
    ws = session(a)
    ws.send_frame(wsclient.OP_TEXT, b"x" * (65536 + 10))
    assert ws.expect_close() == 1009
    # Flood: error rate_limited, then close 1008.
    ws = session(a)
    saw_rate_error = False
    try:
        # 20 pass (the burst), the next 20 get rate_limited, the 41st closes.
        for i in range(45):
            ws.send_json({"type": "status", "id": i, "status": {"n": i}})
        while True:
            m = ws.recv(5)
            if m.get("error") == "rate_limited":
                saw_rate_error = True
    except wsclient.Closed as e:
        assert e.code == 1008, e.code
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass
    assert saw_rate_error
    # Wrong credentials in a loop.
    for _ in range(30):
        assert connect(dict(a, device_secret="B" * 43), proxy=False)[0] == 401
    # The other device stayed connected and still gets its pushes.
    assert patch_desired(c, {"still": "here"})[0] == 200
    assert other.recv_type("desired.patch")["patch"] == {"still": "here"}
    other.close()


def test_silent_client_times_out_and_goes_offline():
    c = T["c"]
    ws = session(c)
    ws.auto_pong = False
    t0 = time.monotonic()
    # No pong and nothing else: closed within the ping timeout (2 s) plus slack.
    code = ws.expect_close(timeout=10)
    elapsed = time.monotonic() - t0
    assert ws.pings >= 1 and elapsed < 4.5, (ws.pings, elapsed, code)
    wait_until(lambda: device(c)["presence"] == "offline", 5, "offline after timeout")
    # A client that answers pings stays.
    ws = session(c)
    t0 = time.monotonic()
    try:
        ws.recv(3.5)
    except TimeoutError:
        pass
    assert ws.pings >= 2 and device(c)["presence"] == "online"
    ws.close()


def test_revoke_closes_within_a_second_and_reset_rearms():
    st = T["st"]
    d = st.provision("HUB-REVOKE")
    ws = session(d)
    ws.send_json({"type": "twin.get", "id": "1"})
    ws.recv_type("twin")
    t0 = time.monotonic()
    s, js, _, _ = st.api("POST", "/api/v1/devices/%s/revoke" % d["device_id"], None,
                         content_type=None)
    assert s == 200 and js["state"] == "revoked", (s, js)
    code = ws.expect_close(timeout=3)
    assert code == 4001 and time.monotonic() - t0 < 1.0, (code, time.monotonic() - t0)
    assert connect(d)[0] == 401
    # Reset: the serial can be claimed once more and gets new credentials.
    s, js, _, _ = st.api("POST", "/api/v1/devices/%s/reset" % d["device_id"], None,
                         content_type=None)
    assert s == 200, (s, js)
    d2 = st.provision("HUB-REVOKE")
    assert d2["device_id"] != d["device_id"]
    ws = session(d2)
    ws.close()
    assert connect(d)[0] == 401


def test_events_stream_and_metrics():
    st = T["st"]
    a = T["a"]
    url = "https://127.0.0.1:%d/api/v1/events" % st.hub_port
    curl = subprocess.Popen(["curl", "-sN", "--cacert", st.pki["ca"], "-H",
                             "Authorization: Bearer " + st.token, url],
                            stdout=subprocess.PIPE, text=True)
    lines = []
    reader = threading.Thread(target=lambda: [lines.append(l) for l in curl.stdout], daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("phyhub events" in l for l in lines), 5, "stream open")
        ws = session(a)
        ws.send_json({"type": "reported.patch", "id": "e", "patch": {"ev": 1}})
        ws.recv_type("ack")
        ws.close()

        def seen(kind):
            return any(l.startswith("event: " + kind) for l in lines)
        wait_until(lambda: seen("online") and seen("reported") and seen("offline"), 5,
                   "online, reported and offline events")
        data = [json.loads(l[6:]) for l in lines if l.startswith("data: ")]
        assert any(d.get("device_id") == a["device_id"] and d.get("patch") == {"ev": 1}
                   for d in data), data
    finally:
        curl.terminate()
        curl.wait(5)
    # Without a token: 401.
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                        st.pki["ca"], url], capture_output=True, text=True, timeout=10)
    assert r.stdout == "401", r.stdout
    s, _, raw, hdrs = st.request("GET", "/metrics", via_proxy=False)
    text = raw.decode()
    assert s == 200 and hdrs["content-type"].startswith("text/plain"), hdrs
    for name in ("phyhub_device_sessions", "phyhub_ws_messages_received_total",
                 "phyhub_auth_failures_total", "phyhub_store_seconds_total",
                 'phyhub_provisioning_total{outcome="delivered"}'):
        assert re.search(r"^%s(\{[^}]*\})? \d" % re.escape(name), text, re.M), name
    assert int(re.search(r"^phyhub_auth_failures_total (\d+)", text, re.M).group(1)) >= 30


def metric(name, labels=""):
    """One sample of the hub's /metrics (0 when absent)."""
    _, _, raw, _ = T["st"].request("GET", "/metrics", via_proxy=False)
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), raw.decode(), re.M)
    return float(m.group(1)) if m else 0.0


def test_every_metric_moves():
    """Issue 11: each metric counts what its name says; each moves here."""
    st, a = T["st"], T["a"]
    info = re.search(r'^phyhub_build_info\{version="([0-9.]+)",revision="([^"]+)"\} 1$',
                     st.request("GET", "/metrics", via_proxy=False)[2].decode(), re.M)
    assert info, "phyhub_build_info"
    # Device sessions and messages.
    base = metric("phyhub_device_sessions")
    rx, tx = metric("phyhub_ws_messages_received_total"), metric("phyhub_ws_messages_sent_total")
    ws = session(a)
    wait_until(lambda: metric("phyhub_device_sessions") == base + 1, 5, "sessions + 1")
    ws.send_json({"type": "twin.get", "id": "m"})
    ws.recv_type("twin")
    assert metric("phyhub_ws_messages_received_total") >= rx + 1
    assert metric("phyhub_ws_messages_sent_total") >= tx + 1
    ws.close()
    wait_until(lambda: metric("phyhub_device_sessions") == base, 5, "sessions back")
    # A wrong API token is an authentication failure.
    af = metric("phyhub_auth_failures_total")
    assert st.api("GET", "/api/v1/devices", token="x" * 43)[0] == 401
    assert metric("phyhub_auth_failures_total") == af + 1
    # Requests by class, their durations; static files use no store.
    c0 = metric("phyhub_http_requests_total", '{class="console"}')
    h0 = metric("phyhub_http_request_duration_seconds_count", '{class="console"}')
    so = metric("phyhub_store_operations_total")
    assert st.api("GET", "/api/v1/devices")[0] == 200
    assert metric("phyhub_http_requests_total", '{class="console"}') == c0 + 1
    assert metric("phyhub_http_request_duration_seconds_count", '{class="console"}') == h0 + 1
    assert metric("phyhub_http_request_duration_seconds_bucket",
                  '{class="console",le="+Inf"}') == h0 + 1
    so1 = metric("phyhub_store_operations_total")
    assert so1 == so + 1, (so, so1)  # the API call (the metrics reads are static)
    st.request("GET", "/", via_proxy=False)
    assert metric("phyhub_store_operations_total") == so1
    p0 = metric("phyhub_http_requests_total", '{class="provisioning"}')
    st.register("SN-METRIC-1")
    assert metric("phyhub_http_requests_total", '{class="provisioning"}') == p0 + 1
    # Claims: one that works, one that fails.
    ok0 = metric("phyhub_provisioning_total", '{outcome="claimed"}')
    bad0 = metric("phyhub_provisioning_total", '{outcome="claim_failed"}')
    assert st.claim(serial="SN-METRIC-1")[0] == 201
    assert st.claim(serial="SN-METRIC-NOBODY")[0] == 404
    assert metric("phyhub_provisioning_total", '{outcome="claimed"}') == ok0 + 1
    assert metric("phyhub_provisioning_total", '{outcome="claim_failed"}') == bad0 + 1
    # Only --metrics-allow addresses (default loopback) read the metrics: the proxy
    # passes the client's address on, and an address outside the list is refused.
    c = https_connection(st.hub_port, st.tls_context(), source="127.0.0.1")
    assert https_request(c, "GET", "/metrics")[0] == 200
    c = https_connection(st.hub_port, st.tls_context(), source="127.0.0.2")
    assert https_request(c, "GET", "/metrics")[0] == 403
    c = https_connection(st.proxy_port, st.tls_context(), HOST, "sn_M", source="127.0.0.2")
    assert https_request(c, "GET", "/metrics")[0] == 403


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def test_device_that_never_reads_stays_bounded():
    """Pings (each answered with a pong) and requests from a device that never reads
    its answers: the hub stops reading it, its memory stays bounded, the ping timeout
    ends the session, and other devices are served meanwhile."""
    st = T["st"]
    d = st.provision("HUB-NOREAD")
    status, _, ws = connect(d, proxy=False)
    assert status == 101
    ws.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    before = rss_kib(st.hub.pid)
    burst = wsclient.WS.frame_bytes(wsclient.OP_PING, b"x" * 125) * 500

    def flood(seconds):
        """Sends pings until the hub stops reading (our send blocks) or time is up;
        returns True when it blocked."""
        ws.s.settimeout(0.5)
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < seconds:
                ws.s.sendall(burst)
        except (socket.timeout, OSError):
            return True
        return False
    assert flood(20), "the hub kept reading a device that never reads its pongs"
    plateau = rss_kib(st.hub.pid)
    flood(1)
    grown = rss_kib(st.hub.pid) - plateau
    assert grown < 2048, "hub still growing (%d KiB) after it stopped reading" % grown
    assert plateau - before < 65536, plateau - before
    other = session(T["c"])
    other.send_json({"type": "twin.get", "id": "busy"})
    assert other.recv_type("twin")["id"] == "busy"
    other.close()
    wait_until(lambda: device(d)["presence"] == "offline", 10, "the silent reader timed out")


def test_hub_memory_does_not_grow_under_abuse():
    a = T["a"]

    def abuse_round():
        for _ in range(20):
            assert connect(dict(a, device_secret="C" * 43), proxy=False)[0] == 401
            ws = session(a)
            ws.send_frame(wsclient.OP_TEXT, b"{bad")
            ws.recv_type("error")
            ws.send_frame(wsclient.OP_BINARY, b"x")
            ws.expect_close()
    # Warm-up: the hub's 16 worker threads each grow their own allocator caches the
    # first time work lands on them (a one-time cost, not a leak).
    for _ in range(6):
        abuse_round()
    before = rss_kib(T["st"].hub.pid)
    for _ in range(3):
        abuse_round()
    after = rss_kib(T["st"].hub.pid)
    assert after - before < 4096, "hub RSS grew by %d KiB over 60 abusive sessions" % (after - before)


def test_ping_interval_must_be_shorter_than_timeout():
    st = T["st"]
    r = subprocess.run([phytest.binary("phyhub"), "--db", st.db, "--tls-cert", st.pki["cert"],
                        "--tls-key", st.pki["key"], "--listen", "127.0.0.1:1",
                        "--ping-interval", "5", "--ping-timeout", "2"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--ping-interval" in r.stderr, (r.returncode, r.stderr)


def test_no_secret_in_logs_and_clean_stop():
    st = T["st"]
    assert st.hub.stop() == 0, st.hub.tail()
    assert not st.leaked_secrets()


if __name__ == "__main__":
    phytest.main()
