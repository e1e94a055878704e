"""Provisioning end to end: phyhub (eu, provisioning) + phyproxy + phyagent + phyctl on
loopback, with short TTLs, and independent clients (Python's http.client through the
proxy's CONNECT tunnel, curl, raw TLS sockets)."""

import base64
import glob
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import socket
import stat
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
from phytest import wait_until  # noqa: E402
from stack import HOST, Stack, is_postgresql, read_json, store_tables  # noqa: E402

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_RE = re.compile(r"^[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{6}$")

ST = None         # the Stack of this file's run
S = {}            # tokens of the extra users


def setup():
    global ST
    # --seal-epoch 1: the seal ratchet turns every second, so every test here also runs
    # with live sealed bodies re-sealed (and their old keys destroyed) under it.
    ST = Stack("provisioning", hub_flags=["--seal-epoch", "1",
                                          "--code-ttl", "3", "--registration-idle", "30",
                                          "--header-timeout", "2", "--claim-tenant-limit", "15"],
               proxy_flags=["--idle-timeout", "30", "--header-timeout", "2"], start=False)
    S["mallory_token"] = ST.add_user("acme", "mallory")
    ST.add_tenant("initech", "au")
    S["au_token"] = ST.add_user("initech", "ian")
    ST.add_tenant("globex")
    for u in ("g1", "g2"):
        S[u] = ST.add_user("globex", u)
    ST.start()


def teardown():
    if ST is not None:
        ST.stop()


# ---- clients ----

def new_code(serial, token):
    """A fresh code; a request within a second of the previous one is told to slow
    down, and waits as told, like an agent."""
    def attempt():
        st, js, _, _ = ST.request("POST", "/v1/provisioning/code",
                                  {"serial": serial, "poll_token": token}, ident="sn_" + serial)
        if st == 429:
            assert js["error"] == "slow_down" and js["interval"] == 1, js
            time.sleep(0.2)
            return None
        return st, js
    st, js = wait_until(attempt, 5, "a new code")
    assert st == 201, (st, js)
    assert CODE_RE.match(js["code"]), js
    assert js["expires_in"] == 3
    return js["code"]


def start_agent(serial):
    return ST.start_agent(serial, ["--code-rotation", "2", "--provision-only"])


def read_state_code(state):
    reg = read_json(os.path.join(state, "registration.json"))
    try:  # the agent's poll token must never reach a log either
        if reg is not None:
            ST.secrets.add(reg["poll_token"])
    except KeyError:
        pass
    try:
        with open(os.path.join(state, "provisioning-code")) as f:
            code = f.read().strip()
        return code if CODE_RE.match(code) else None
    except FileNotFoundError:
        return None


def check_credentials(state, serial):
    path = os.path.join(state, "credentials.json")
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    with open(path) as f:
        creds = json.load(f)
    assert re.fullmatch(r"dev_[a-z2-7]{26}", creds["device_id"]), creds
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", creds["device_secret"])
    assert creds["tenant"] == "acme" and creds["region"] == "eu"
    assert creds["endpoint"] == HOST + ":443"
    ST.secrets.add(creds["device_secret"])
    # The hub keeps only the SHA-256 of the secret.
    rows = ST.query("SELECT secret_hash, serial FROM devices WHERE device_id = ?",
                    (creds["device_id"],))
    assert rows
    assert rows[0][0] == hashlib.sha256(creds["device_secret"].encode()).hexdigest()
    assert rows[0][1] == serial
    return creds


# ---- tests ----

def test_agent_claimed_by_serial_through_proxy():
    agent, state = start_agent("KIOSK-A1")
    wait_until(lambda: read_state_code(state), 15, "the agent's provisioning code")
    assert os.path.exists(os.path.join(state, "registration.json"))
    rc, out, err = ST.phyctl("claim", "--serial", "KIOSK-A1", "--name", "front window")
    assert rc == 0, err
    assert re.search(r"dev_[a-z2-7]{26}", out), out
    wait_until(lambda: not agent.alive(), 20, "agent to exit after provisioning")
    assert agent.stop() == 0, agent.tail()
    creds = check_credentials(state, "KIOSK-A1")
    agent.wait_log(r"event=provisioned .*device_id=" + creds["device_id"], 1)
    # Spent: a new registration of that serial is refused.
    st, js, _, _ = ST.request("POST", "/v1/provisioning/register", {"serial": "KIOSK-A1"})
    assert st == 410 and js["error"] == "already_provisioned", (st, js)
    # The console lists it as provisioned.
    rc, out, err = ST.phyctl("--json", "devices", "list")
    assert rc == 0, err
    devs = {d["device_id"]: d for d in json.loads(out)}
    assert devs[creds["device_id"]]["state"] == "provisioned"
    assert devs[creds["device_id"]]["name"] == "front window"


def test_agent_claimed_by_code_through_proxy():
    agent, state = start_agent("KIOSK-B2")
    code = wait_until(lambda: read_state_code(state), 15, "the agent's provisioning code")
    # phyctl accepts the code in lower case too.
    rc, out, err = ST.phyctl("claim", "--code", code.lower())
    if rc != 0 and "expired_code" in err:  # rotated between read and claim: take the new one
        code = wait_until(lambda: read_state_code(state) != code and read_state_code(state),
                          10, "next code")
        rc, out, err = ST.phyctl("claim", "--code", code)
    assert rc == 0, err
    wait_until(lambda: not agent.alive(), 20, "agent to exit after provisioning")
    assert agent.stop() == 0, agent.tail()
    check_credentials(state, "KIOSK-B2")
    st, js, _, _ = ST.request("POST", "/v1/provisioning/register", {"serial": "KIOSK-B2"})
    assert st == 410, (st, js)


def test_credentials_exactly_once_and_grace_window():
    token = ST.register("SN-ONCE")
    st, js, _, _ = ST.poll("SN-ONCE", token)
    assert st == 202 and js == {"status": "authorization_pending", "interval": 1}, js
    st, dev, _, _ = ST.claim(serial="SN-ONCE", tags={"site": "berlin"})
    assert st == 201 and dev["state"] == "pending_delivery", dev
    assert dev["tags"] == {"site": "berlin"}
    st, js, raw1, _ = ST.poll_until("SN-ONCE", token)
    assert st == 200, js
    assert set(js) == {"status", "device_id", "device_secret", "tenant", "region", "endpoint",
                       "proxy_token"}
    assert js["device_id"] == dev["device_id"] and js["status"] == "provisioned"
    # The proxy token is the HMAC of the device ID under the proxy key (key ID k1).
    mac = hmac.new(ST.proxy_key, b"phystack-proxy-v1\n" + js["device_id"].encode(),
                   hashlib.sha256).digest()
    assert js["proxy_token"] == "k1." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    # A retry within the grace window gets byte-identical credentials.
    st, _, raw2, _ = ST.poll("SN-ONCE", token)
    assert st == 200 and raw2 == raw1
    # A second claim of the spent serial: by the same user, a retry (200, the same
    # device); by another user, refused.
    st, js, _, _ = ST.claim(serial="SN-ONCE")
    assert st == 200 and js["device_id"] == dev["device_id"], js
    st, js, _, _ = ST.claim(serial="SN-ONCE", token=ST.add_user("acme", "once-other"))
    assert st == 409 and js["error"] == "already_claimed", js
    # After the grace window the same token gets nothing, and the sealed body is gone.
    def after_grace():
        s, j, _, _ = ST.poll("SN-ONCE", token)
        return s == 410 and j["error"] == "already_provisioned"
    wait_until(after_grace, 10, "410 after the grace window")

    def purged():
        return ST.query("SELECT sealed IS NULL FROM issuances WHERE serial = ?",
                        ("SN-ONCE",))[0][0] == 1
    wait_until(purged, 10, "sealed issuance purged by the sweeper")


def ratchet_base():
    """The seal ratchet's base epoch (seal.c: slot 0, bytes 16..24 big-endian); every
    body sealed under an earlier epoch can no longer be opened by anyone."""
    key = ST.store_flags[1] if ST.store_flags else ST.db + ".key"
    with open(key + ".ratchet", "rb") as f:
        return int.from_bytes(f.read(64)[16:24], "big")


def sealed_body(serial):
    rows = ST.query("SELECT sealed FROM issuances WHERE serial = ?", (serial,))
    v = rows[0][0] if rows else None
    if isinstance(v, str):  # PostgreSQL's text form of BYTEA
        v = bytes.fromhex(v[2:])
    return v


def body_epoch(body):
    assert body[:3] == b"\xe5\x1a\x01", body[:3]  # seal.c's header: magic, version 1
    return int.from_bytes(body[11:19], "big")


def test_sealed_body_resealed_while_pending_and_shredded_after_purge():
    """While a claimed device is offline its sealed body is re-sealed under newer
    epochs, and it still gets its credentials; once the body is purged, the ratchet
    moves past the epoch of every copy of it that ever was in the database."""
    token = ST.register("SN-SHRED")
    st, dev, _, _ = ST.claim(serial="SN-SHRED")
    assert st == 201, dev
    first = sealed_body("SN-SHRED")
    e0 = body_epoch(first)
    assert ratchet_base() <= e0
    seen = {first}

    def resealed_and_dropped():
        b = sealed_body("SN-SHRED")
        seen.add(b)
        return body_epoch(b) > e0 and ratchet_base() > e0
    wait_until(resealed_and_dropped, 15, "pending body re-sealed, its first epoch dropped")
    # The first body's key is destroyed, yet the device gets its credentials.
    st, js, _, _ = ST.poll_until("SN-SHRED", token)
    assert st == 200 and js["device_id"] == dev["device_id"], js
    last = sealed_body("SN-SHRED")
    seen.add(last)

    def purged():
        b = sealed_body("SN-SHRED")
        if b is not None:
            seen.add(b)
        return b is None
    wait_until(purged, 15, "sealed body purged after the grace window")
    newest = max(body_epoch(b) for b in seen)
    wait_until(lambda: ratchet_base() > newest, 15, "ratchet past every epoch of the body")
    assert ST.hub.alive()


def test_contested_serial_code_goes_to_its_registration_only():
    squatter = ST.register("SN-CONTESTED")
    real = ST.register("SN-CONTESTED")
    assert squatter != real
    real_code = new_code("SN-CONTESTED", real)
    new_code("SN-CONTESTED", squatter)
    st, js, _, _ = ST.claim(serial="SN-CONTESTED")
    assert st == 409 and js["error"] == "serial_in_use", js
    st, dev, _, _ = ST.claim(code=real_code)
    assert st == 201, dev
    st, js, _, _ = ST.poll_until("SN-CONTESTED", real)
    assert st == 200 and js["device_id"] == dev["device_id"]
    st, js, raw, _ = ST.poll("SN-CONTESTED", squatter)
    assert st == 410 and b"device_secret" not in raw, raw
    st, js, _, _ = ST.poll("SN-CONTESTED", squatter, code=real_code)
    assert st == 410, js
    # At most 4 live registrations per serial: when each of them shows a live code a
    # fifth is refused (without live codes, the oldest is evicted: test_attestation).
    for _ in range(4):
        new_code("SN-CROWDED", ST.register("SN-CROWDED"))
    st, js, _, _ = ST.request("POST", "/v1/provisioning/register", {"serial": "SN-CROWDED"})
    assert st == 429 and js["error"] == "too_many_registrations", (st, js)


def test_codes_expire_rotate_and_are_unique():
    token = ST.register("SN-CODES")
    old = new_code("SN-CODES", token)
    st, js, _, _ = ST.request("POST", "/v1/provisioning/code",
                              {"serial": "SN-CODES", "poll_token": token})
    assert st == 429 and js["error"] == "slow_down", (st, js)  # one code per second
    new = new_code("SN-CODES", token)
    assert old != new
    st, js, _, _ = ST.claim(code=old)
    assert st == 404 and js["error"] == "expired_code", js
    # Wait past the TTL (3 s) for the new code to expire.
    def expired():
        st, js, _, _ = ST.poll("SN-CODES", token, code=new)
        return st == 404 and js["error"] == "expired_code"
    wait_until(expired, 10, "code TTL")
    st, js, _, _ = ST.claim(token=S["mallory_token"], code=new)
    assert st == 404 and js["error"] == "expired_code", js
    # Many live codes: all valid symbols, all distinct.
    codes = []
    for i in range(12):
        t = ST.register("SN-U%d" % i)
        codes.append(new_code("SN-U%d" % i, t))
    assert len(set(codes)) == len(codes)
    assert all(c not in "0O1IL" for c in "".join(codes))


def test_poll_faster_than_interval_is_slowed_down():
    token = ST.register("SN-FAST")
    st, js, _, _ = ST.poll("SN-FAST", token)
    assert st == 202
    st, js, _, _ = ST.poll("SN-FAST", token)
    assert st == 429 and js["error"] == "slow_down" and js["interval"] == 2, js
    time.sleep(0.1)
    st, js, _, _ = ST.poll("SN-FAST", token)
    assert st == 429 and js["interval"] == 3, js
    # Bad and foreign tokens.
    st, js, _, _ = ST.poll("SN-FAST", "A" * 43)
    assert st == 401 and js["error"] == "invalid_poll_token", js
    other = ST.register("SN-OTHER")
    st, js, _, _ = ST.poll("SN-FAST", other)
    assert st == 401, js


def test_hub_sigkill_between_claim_and_poll():
    token = ST.register("SN-CRASH")
    st, dev, _, _ = ST.claim(serial="SN-CRASH")
    assert st == 201
    ST.hub.kill()
    ST.start_hub()
    st, js, raw1, _ = ST.poll_until("SN-CRASH", token)
    assert st == 200 and js["device_id"] == dev["device_id"], js
    assert js["device_secret"] and raw1 == ST.poll("SN-CRASH", token)[2]


def test_hub_sigkill_at_random_moments_never_two_credentials():
    """Claims while the hub is killed at random moments; every credential a device
    ever receives for one serial is the same, and it matches the stored hash."""
    rng = random.Random(7)
    in_flight_kills = 0
    for i in range(12):
        serial = "SN-KILL%d" % i
        token = ST.register(serial)
        result = {}

        def do_claim():
            try:
                result["claim"] = ST.claim(serial=serial)
            except (OSError, http.client.HTTPException) as e:
                result["claim"] = e
        t = threading.Thread(target=do_claim)
        t.start()
        time.sleep(rng.uniform(0, 0.012))  # a claim takes a few ms: often mid-request
        ST.hub.kill()
        t.join(15)
        ST.start_hub()
        c = result.get("claim")
        if not (isinstance(c, tuple) and c[0] == 201):
            in_flight_kills += 1
            # The claim may or may not have committed: the retry either claims (201)
            # or, when the first one committed, gets the device it made (200).
            st, js, _, _ = ST.claim(serial=serial)
            assert st in (200, 201), (st, js)
            rows = ST.query("SELECT device_id FROM devices WHERE serial = ?", (serial,))
            assert [r[0] for r in rows] == [js["device_id"]], (rows, js)
        bodies = set()
        st, js, raw, _ = ST.poll_until(serial, token)
        assert st == 200, js
        bodies.add(raw)
        ST.hub.kill()
        ST.start_hub()
        st, js2, raw2, _ = ST.poll(serial, token)
        assert st in (200, 410), js2
        if st == 200:
            bodies.add(raw2)
        assert len(bodies) == 1, "two different credentials for one device"
        rows = ST.query("SELECT secret_hash FROM devices WHERE serial = ?", (serial,))
        assert len(rows) == 1
        assert rows[0][0] == hashlib.sha256(js["device_secret"].encode()).hexdigest()


def test_curl_through_proxy():
    base = ["curl", "-sS", "--max-time", "10", "--cacert", ST.pki["ca"]]
    proxy = "http://sn_TEST:@127.0.0.1:%d" % ST.proxy_port
    res = subprocess.run(base + ["-x", proxy, "-H", "Content-Type: application/json",
                                 "-d", '{"serial":"SN-CURL"}', "-w", "\n%{http_code}",
                                 "https://%s/v1/provisioning/register" % HOST],
                         capture_output=True, text=True, timeout=30)
    body, code = res.stdout.rsplit("\n", 1)
    assert code == "201", (res.stdout, res.stderr)
    ST.secrets.add(json.loads(body)["poll_token"])
    # Without the identifier: 407 from the proxy.
    res = subprocess.run(base + ["-x", "http://127.0.0.1:%d" % ST.proxy_port, "-o",
                                 "/dev/null", "-w", "%{http_connect}",
                                 "https://%s/healthz" % HOST],
                         capture_output=True, text=True, timeout=30)
    assert res.stdout.strip() == "407", (res.stdout, res.stderr)
    # A host off the allow-list: 403.
    res = subprocess.run(base + ["-x", proxy, "-o", "/dev/null", "-w", "%{http_connect}",
                                 "https://example.com/"],
                         capture_output=True, text=True, timeout=30)
    assert res.stdout.strip() == "403", (res.stdout, res.stderr)


def test_wget_and_openssl_through_proxy():
    """Two more clients we did not write reach the provisioning API through phyproxy
    with the identity in Proxy-Authorization: wget (https_proxy, --proxy-user) and
    openssl s_client -proxy with -proxy_user (its password empty, as for a serial)."""
    body = '{"serial": "SN-WGET"}'
    r = subprocess.run(["wget", "-q", "-O", "-", "--ca-certificate", ST.pki["ca"],
                        "--header", "Content-Type: application/json", "--post-data", body,
                        "-e", "use_proxy=yes", "-e", "https_proxy=http://127.0.0.1:%d"
                        % ST.proxy_port, "--proxy-user=sn_SN-WGET", "--proxy-password=",
                        "https://%s/v1/provisioning/register" % HOST],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, (r.stdout, r.stderr)
    js = json.loads(r.stdout)
    ST.secrets.add(js["poll_token"])
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", js["poll_token"]), js
    ST.proxy.wait_log(r"event=tunnel ident=sn_SN-WGET ", 5)  # wget may end with a reset

    req = ("GET /healthz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % HOST).encode()
    r = subprocess.run(["openssl", "s_client", "-quiet", "-proxy", "127.0.0.1:%d" % ST.proxy_port,
                        "-proxy_user", "sn_SN-SSL", "-proxy_pass", "pass:",
                        "-connect", "%s:443" % HOST, "-servername", HOST, "-CAfile",
                        ST.pki["ca"], "-verify_return_error"],
                       input=req, capture_output=True, timeout=30)
    assert b"HTTP/1.1 200 " in r.stdout and b'"status":"ok"' in r.stdout, (r.stdout, r.stderr)
    ST.proxy.wait_log(r"event=tunnel ident=sn_SN-SSL ", 5)


def tls_raw(data, read=True):
    """Sends raw bytes over a TLS connection straight to the hub; returns the reply."""
    ctx = ST.tls_context()
    with socket.create_connection(("127.0.0.1", ST.hub_port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname=HOST) as t:
            t.sendall(data)
            return phytest.recv_all(t) if read else b""


def status_of(reply):
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", reply)
    return int(m.group(1)) if m else None


def test_bad_input_then_still_serving():
    def post(path, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else body.encode()
        return status_of(tls_raw(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
                                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                                 % (path.encode(), ctype.encode(), len(data), data)))
    reg = "/v1/provisioning/register"
    assert status_of(tls_raw(b"GARBAGE\r\n\r\n")) == 400
    assert status_of(tls_raw(b"GET / HTTP/1.1\nHost: x\n\n")) == 400
    assert status_of(tls_raw(b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n")) == 431
    assert post(reg, "x" * 20000) == 413
    assert post(reg, "{bad json") == 400
    assert post(reg, "[1,2]") == 400
    assert post(reg, '{"serial": 5}') == 400
    assert post(reg, '{"serial": "SN1", "extra": 1}') == 400
    assert post(reg, '{"serial": "bad/serial"}') == 400
    assert post(reg, '{"serial": "' + "A" * 65 + '"}') == 400
    assert post(reg, '{"serial": "SN1", "serial": "SN2"}') == 400
    assert post(reg, '{"serial": "SN1"}', ctype="text/plain") == 415
    assert post("/v1/provisioning/poll", '{"poll_token": "x"}') == 400
    assert post("/v1/provisioning/poll", '{"serial": "S", "code": "ABCDEF", "poll_token": "x"}') == 400
    assert post("/api/v1/devices/claim", '{"serial": "S"}') == 401
    assert status_of(tls_raw(b"DELETE /v1/provisioning/register HTTP/1.1\r\nHost: x\r\n"
                             b"Connection: close\r\n\r\n")) == 405
    assert status_of(tls_raw(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == 404
    assert status_of(tls_raw(b"POST /v1/provisioning/register HTTP/1.1\r\nHost: x\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")) == 411
    for ident_claim in ({"code": "0OOOOO"}, {"code": 123}, {"serial": "A", "code": "ABCDEF"},
                        {"serial": "A", "name": "x" * 65}, {"serial": "A", "tags": {"k": 1}},
                        {"serial": "A", "bogus": True}):
        st, js, _, _ = ST.claim(**ident_claim)
        assert st == 400, (ident_claim, st, js)
    # A tenant of another region cannot claim on this (eu) hub.
    ST.register("SN-AU")
    st, js, _, _ = ST.claim(token=S["au_token"], serial="SN-AU")
    assert st == 409 and js["error"] == "wrong_region", (st, js)
    # Slowloris: half a head, then silence: 408 within the header timeout.
    ctx = ST.tls_context()
    with socket.create_connection(("127.0.0.1", ST.hub_port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname=HOST) as t:
            t.sendall(b"POST /v1/provisioning/register HTTP/1.1\r\nHost: x\r\n")
            t0 = time.monotonic()
            reply = phytest.recv_all(t)
            assert status_of(reply) == 408 and time.monotonic() - t0 < 5, reply
    # Non-TLS bytes to the TLS port: the connection is closed.
    with phytest.connect(ST.hub_port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert phytest.recv_all(s)[:4] != b"HTTP"
    # A silent TCP client (no TLS hello) is dropped after the header timeout.
    with phytest.connect(ST.hub_port) as s:
        t0 = time.monotonic()
        assert phytest.recv_all(s) == b"" and time.monotonic() - t0 < 5
    # Garbage to the proxy.
    with phytest.connect(ST.proxy_port) as s:
        s.sendall(os.urandom(300) + b"\r\n\r\n")
        st, _, _ = phytest.recv_http_head(s)
        assert st in (None, 400)
    # Keep-alive: two requests on one connection.
    reply = tls_raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.count(b"HTTP/1.1 200 OK") == 2, reply
    # And the system still provisions a device.
    token = ST.register("SN-AFTER-BAD")
    st, dev, _, _ = ST.claim(serial="SN-AFTER-BAD")
    assert st == 201
    st, js, _, _ = ST.poll_until("SN-AFTER-BAD", token)
    assert st == 200 and js["device_id"] == dev["device_id"]


def test_wrong_codes_are_throttled_per_user_and_per_tenant():
    def wrong_code():
        return "".join(random.choice(ALPHABET) for _ in range(6))
    token = ST.register("SN-THROTTLE")
    # Tenant globex: user g1 fails 10 times (the per-user limit), then is refused.
    for _ in range(10):
        st, js, _, _ = ST.claim(token=S["g1"], code=wrong_code())
        assert st == 404 and js["error"] == "expired_code", (st, js)
    st, js, _, _ = ST.claim(token=S["g1"], serial="SN-THROTTLE")
    assert st == 429 and js["error"] == "too_many_attempts", js
    # g2 is not limited by g1's failures...
    for _ in range(4):
        st, js, _, _ = ST.claim(token=S["g2"], code=wrong_code())
        assert st == 404, (st, js)
    # ...until the tenant's total reaches --claim-tenant-limit (15 in this test).
    st, js, _, _ = ST.claim(token=S["g2"], code=wrong_code())
    assert st == 404, (st, js)
    st, js, _, _ = ST.claim(token=S["g2"], serial="SN-THROTTLE")
    assert st == 429 and js["error"] == "too_many_attempts", js
    # Another tenant is unaffected.
    st, js, _, _ = ST.claim(serial="SN-THROTTLE")
    assert st == 201, js
    assert ST.poll_until("SN-THROTTLE", token)[0] == 200


def registration_count(serial):
    return ST.query("SELECT COUNT(*) FROM registrations WHERE serial = ?", (serial,))[0][0]


def test_agent_resumes_after_sigkill_and_rotates_codes():
    agent, state = start_agent("KIOSK-C3")
    first = wait_until(lambda: read_state_code(state), 15, "first code")
    with open(os.path.join(state, "registration.json")) as f:
        reg = json.load(f)
    assert stat.S_IMODE(os.stat(os.path.join(state, "registration.json")).st_mode) == 0o600
    ST.secrets.add(reg["poll_token"])
    # --code-rotation 2: a fresh code replaces the first one.
    wait_until(lambda: read_state_code(state) not in (None, first), 10, "code rotation")
    # An honest agent never polls faster than its interval (a restart may: it obeys).
    wait_until(lambda: len(ST.hub.log_lines(r"poll status=202 .*serial=KIOSK-C3")) >= 3, 10,
               "three polls")
    assert not ST.hub.log_lines(r"status=429 .*serial=KIOSK-C3"), "agent got slow_down"
    agent.kill()
    # Restarted, it resumes its registration from disk instead of registering again.
    agent2, _ = start_agent("KIOSK-C3")
    agent2.wait_log(r"event=registration_loaded serial=KIOSK-C3", 10)
    assert registration_count("KIOSK-C3") == 1
    with open(os.path.join(state, "registration.json")) as f:
        assert json.load(f)["poll_token"] == reg["poll_token"]
    rc, out, err = ST.phyctl("claim", "--serial", "KIOSK-C3")
    assert rc == 0, err
    wait_until(lambda: not agent2.alive(), 20, "agent to exit after provisioning")
    assert agent2.stop() == 0, agent2.tail()
    check_credentials(state, "KIOSK-C3")
    # Restarted with credentials on disk: nothing to do.
    agent3, _ = start_agent("KIOSK-C3")
    wait_until(lambda: not agent3.alive(), 10, "provisioned agent to exit")
    assert agent3.stop() == 0
    agent3.wait_log(r"event=already_provisioned", 1)


def test_agent_rides_out_hub_outage_and_kill_between_claim_and_poll():
    ST.hub.stop()
    agent, state = start_agent("KIOSK-D4")
    # Hub down: the proxy answers 502 and the agent backs off (jittered, capped at 1 s).
    agent.wait_log(r"event=backoff", 10)
    assert agent.alive()
    ST.start_hub()
    wait_until(lambda: read_state_code(state), 15, "code after the hub came back")
    rc, out, err = ST.phyctl("claim", "--serial", "KIOSK-D4")
    assert rc == 0, err
    # SIGKILL right after the claim was acknowledged, before the agent's next poll.
    ST.hub.kill()
    ST.start_hub()
    wait_until(lambda: not agent.alive(), 20, "agent to get its credentials after restart")
    assert agent.stop() == 0, agent.tail()
    check_credentials(state, "KIOSK-D4")


def test_no_secret_in_any_log():
    assert len(ST.secrets) > 10
    leaked = ST.leaked_secrets()
    assert not leaked, "secrets in logs: %s" % leaked
    # The database holds no device secret in clear text either (hashes only): not in
    # the bytes of its files, and on PostgreSQL (whose files are the server's) not in
    # any value of any table.
    data = b""
    if is_postgresql(ST.db):
        data = b"\0".join(v if isinstance(v, bytes) else str(v).encode()
                          for _, _, rows in store_tables(ST.db) for row in rows for v in row)
    else:
        for path in glob.glob(ST.db + "*"):
            with open(path, "rb") as f:
                data += f.read()
    for s in ST.secrets:
        assert s.encode() not in data, "a secret is stored in clear in " + ST.db


def test_hub_stops_cleanly_on_sigterm():
    # Under ASan a leak or error at exit turns into a non-zero exit status.
    assert ST.hub.stop() == 0, ST.hub.tail()
    ST.hub.wait_log(r"event=stopped", 1)


if __name__ == "__main__":
    phytest.main()
