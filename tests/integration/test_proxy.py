"""phyproxy end to end: real curl/openssl clients and raw sockets through the proxy to
a TLS upstream and a plain TCP echo upstream, all on 127.0.0.1."""

import base64
import hashlib
import hmac
import resource
import http.server
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402

HELLO_BODY = b"hello from portal-eu\n"
BIG = 5 * 1024 * 1024

S = {}  # shared state built by setup()


# ---- upstream servers ----

class HelloHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path != "/hello":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(HELLO_BODY)))
        self.end_headers()
        self.wfile.write(HELLO_BODY)

    def log_message(self, fmt, *args):
        pass


def start_tls_upstream(cert, key):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HelloHandler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class EchoServer:
    """Plain TCP echo; on EOF from the client it half-closes back and ends. A
    greeting, when given, goes first on every connection. With listening=False it
    is bound but not listening (a connect is refused) until listen()."""

    def __init__(self, greeting=b"", listening=True):
        self.greeting = greeting
        self.accepted = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        if listening:
            self.listen()

    def listen(self):
        self.sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            if self.greeting:
                conn.sendall(self.greeting)
            while True:
                data = conn.recv(65536)
                if not data:
                    conn.shutdown(socket.SHUT_WR)
                    break
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stopped = True
        self.sock.close()


def make_blackhole():
    """A listener whose accept queue is full, so that further SYNs go unanswered and
    a connect to it hangs (used for the upstream connect timeout)."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fillers = []
    for _ in range(3):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    time.sleep(0.05)  # let the handshakes of the first fillers complete (short, bounded)
    return lsock, port, fillers


class CloserServer:
    """Accepts, reads the PROXY header if one comes, and closes: an upstream (a hub)
    that ends the stream while the client keeps its side open."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()

    def close(self):
        self.sock.close()


PP2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def read_pp2(sock, rest=b""):
    """Reads one PROXY v2 header from an echo tunnel; returns (src, src_port, tlvs, rest)."""
    data = rest
    while len(data) < 16:
        chunk = sock.recv(4096)
        assert chunk, "closed before the PROXY header"
        data += chunk
    assert data[:12] == PP2_SIG, data[:16]
    assert data[12] == 0x21 and data[13] == 0x11, data[12:14]  # v2 PROXY, TCP over IPv4
    total = 16 + int.from_bytes(data[14:16], "big")
    while len(data) < total:
        data += sock.recv(4096)
    body = data[16:total]
    src = socket.inet_ntoa(body[0:4])
    sport = int.from_bytes(body[8:10], "big")
    tlvs, off = {}, 12
    while off < len(body):
        t, n = body[off], int.from_bytes(body[off + 1:off + 3], "big")
        tlvs[t] = body[off + 3:off + 3 + n]
        off += 3 + n
    return src, sport, tlvs, data[total:]


def proxy_token(key, kid, device_id):
    mac = hmac.new(key, b"phystack-proxy-v1\n" + device_id.encode(), hashlib.sha256).digest()
    return kid + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def connect_from(src, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def tunnel_from(src, port, target, ident, password=""):
    s = connect_from(src, port)
    cred = base64.b64encode(("%s:%s" % (ident, password)).encode()).decode()
    s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n"
               % (target, target, cred)).encode())
    status, headers, rest = phytest.recv_http_head(s)
    return s, status, headers, rest


# ---- request helpers ----

def auth(ident):
    return "Proxy-Authorization: Basic %s\r\n" % base64.b64encode(
        (ident + ":").encode()).decode()


def connect_head(target, ident=None, extra=""):
    head = "CONNECT %s HTTP/1.1\r\nHost: %s\r\n" % (target, target)
    if ident is not None:
        head += auth(ident)
    return (head + extra + "\r\n").encode()


def open_tunnel(port, target, ident, early=b""):
    """Sends CONNECT (plus `early` bytes in the same send); returns (sock, status,
    headers, rest)."""
    s = phytest.connect(port)
    s.sendall(connect_head(target, ident) + early)
    status, headers, rest = phytest.recv_http_head(s)
    return s, status, headers, rest


def expect_refusal(sock_or_bytes, status, error=None, headers_check=None):
    """Reads a full error answer until the proxy closes and checks it."""
    if isinstance(sock_or_bytes, bytes):
        s = phytest.connect(S["pa"])
        s.sendall(sock_or_bytes)
    else:
        s = sock_or_bytes
    with s:
        data = phytest.recv_all(s)
    assert b"\r\n\r\n" in data, "no complete answer: %r" % data[:200]
    head, body = data.split(b"\r\n\r\n", 1)
    got, headers = phytest.parse_status(head)
    assert got == status, "expected %d, got %r: %r" % (status, got, data[:300])
    assert headers.get("connection", "").lower() == "close", headers
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert int(headers.get("content-length", "-1")) == len(body), (headers, body)
    doc = json.loads(body)
    assert isinstance(doc.get("error"), str) and isinstance(doc.get("message"), str), doc
    if error is not None:
        assert doc["error"] == error, doc
    return headers, doc


def echo_roundtrip(sock, payload, rest=b""):
    sock.sendall(payload)
    got = rest
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        assert chunk, "tunnel closed during echo"
        got += chunk
    assert got == payload, (got[:64], payload[:64])


def curl(args, timeout=30):
    return subprocess.run(["curl", "-sS", "--max-time", "20"] + args, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)


def tunnel_lines(daemon, ident):
    return daemon.log_lines(r"event=tunnel ident=%s " % ident)


# ---- setup / teardown ----

def setup():
    d = phytest.tmpdir("proxy")
    S["dir"] = d
    S["certs"] = phytest.make_ca(d, ["portal-eu.phystack.com"])
    S["tls"] = start_tls_upstream(S["certs"]["cert"], S["certs"]["key"])
    S["echo"] = EchoServer()
    S["dead_port"] = phytest.free_port()  # nothing listens there
    S["hole"], S["hole_port"], S["hole_fillers"] = make_blackhole()
    proxy = phytest.binary("phyproxy")

    # Proxy A: default allow-list, short header timeout, 2 tunnels per device.
    S["pa"] = phytest.free_port()
    S["a"] = phytest.Daemon([
        proxy, "--listen", "127.0.0.1:%d" % S["pa"],
        "--route", "portal-eu.phystack.com=127.0.0.1:%d,proxy-protocol=off"
        % S["tls"].server_address[1],
        "--route", "PORTAL-ECHO.phystack.com=127.0.0.1:%d,proxy-protocol=off" % S["echo"].port,
        "--route", "portal-dead.phystack.com=127.0.0.1:%d" % S["dead_port"],
        "--max-tunnels-per-device", "2", "--header-timeout", "1", "--idle-timeout", "60",
    ], "proxy-a", d)

    # Proxy B: from an INI file; 1 s idle and connect timeouts, DNS fallback.
    S["pb"] = phytest.free_port()
    ini = os.path.join(d, "proxy-b.ini")
    with open(ini, "w") as f:
        f.write("# phyproxy test config\n[proxy]\n"
                "listen = 127.0.0.1:%d\n"
                "route = portal-echo.phystack.com=127.0.0.1:%d,proxy-protocol=off\n"
                "route = portal-hole.phystack.com=127.0.0.1:%d\n"
                "allow = portal-*.phystack.com:443\n"
                "allow = localhost:%d\n"
                "idle-timeout = 1\nconnect-timeout = 1\ndns-fallback = true\n"
                "dns-allow-net = 127.0.0.0/8\n"
                % (S["pb"], S["echo"].port, S["hole_port"], S["echo"].port))
    S["b"] = phytest.Daemon([proxy, "--config", ini], "proxy-b", d)

    # Proxy D: proxy tokens required, per-source limits, PROXY v2 to the echo, DNS
    # fallback without any non-public network allowed.
    S["closer"] = CloserServer()
    S["key"] = os.urandom(32)
    keyfile = os.path.join(d, "proxy-k1.key")
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, S["key"])
    os.close(fd)
    S["pd"] = phytest.free_port()
    S["d"] = phytest.Daemon([
        proxy, "--listen", "127.0.0.1:%d" % S["pd"],
        "--route", "portal-echo.phystack.com=127.0.0.1:%d" % S["echo"].port,
        "--route", "portal-close.phystack.com=127.0.0.1:%d" % S["closer"].port,
        "--allow", "portal-*.phystack.com:443", "--allow", "localhost:*", "--dns-fallback",
        "--proxy-key", "k1=" + keyfile, "--max-tunnels-per-device", "2",
        "--max-tunnels-per-source", "3", "--new-tunnel-rate", "0",
    ], "proxy-d", d)
    # Proxy E: a tight new-tunnel rate.
    S["pe"] = phytest.free_port()
    S["e"] = phytest.Daemon([
        proxy, "--listen", "127.0.0.1:%d" % S["pe"],
        "--route", "portal-echo.phystack.com=127.0.0.1:%d,proxy-protocol=off" % S["echo"].port,
        "--new-tunnel-rate", "1", "--new-tunnel-burst", "2", "--proxy-key", "k1=" + keyfile,
    ], "proxy-e", d)

    S["a"].wait_port(S["pa"], 20)
    S["b"].wait_port(S["pb"], 20)
    S["d"].wait_port(S["pd"], 20)
    S["e"].wait_port(S["pe"], 20)
    S["a"].wait_log(r"event=start listen=127\.0\.0\.1:%d routes=.*portal-echo" % S["pa"])


def teardown():
    for k in ("a", "b", "d", "e"):
        if k in S:
            S[k].kill()
    if "closer" in S:
        S["closer"].close()
    if "tls" in S:
        S["tls"].shutdown()
        S["tls"].server_close()
    if "echo" in S:
        S["echo"].close()
    for c in S.get("hole_fillers", []):
        c.close()
    if "hole" in S:
        S["hole"].close()


# ---- tests ----

def test_help_and_bad_flag():
    proxy = phytest.binary("phyproxy")
    r = subprocess.run([proxy, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=20)
    assert r.returncode == 0 and b"--max-tunnels-per-device" in r.stdout, r
    r = subprocess.run([proxy, "--no-such-flag"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=20)
    assert r.returncode != 0 and b"unknown option" in r.stderr, r
    r = subprocess.run([proxy, "--route", "portal-eu.phystack.com=not-an-ip:1"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    assert r.returncode != 0 and b"--route" in r.stderr, r


def test_curl_gets_upstream_body():
    r = curl(["-x", "http://sn_TEST:@127.0.0.1:%d" % S["pa"], "--cacert", S["certs"]["ca"],
              "https://portal-eu.phystack.com:443/hello"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == HELLO_BODY, r.stdout


def test_openssl_s_client_through_proxy():
    # An independent TLS client using its own CONNECT implementation.
    r = subprocess.run(
        ["openssl", "s_client", "-connect", "portal-eu.phystack.com:443",
         "-proxy", "127.0.0.1:%d" % S["pa"], "-proxy_user", "sn_OSSL", "-proxy_pass", "pass:",
         "-servername", "portal-eu.phystack.com", "-CAfile", S["certs"]["ca"],
         "-verify_return_error", "-quiet"],
        input=b"GET /hello HTTP/1.1\r\nHost: portal-eu.phystack.com\r\nConnection: close\r\n\r\n",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    if b"-proxy_user" in r.stderr and b"unknown option" in r.stderr.lower():
        return  # older openssl without proxy auth: covered by curl
    assert HELLO_BODY in r.stdout, (r.stdout, r.stderr)


def test_no_identifier_is_407():
    s = phytest.connect(S["pa"])
    s.sendall(connect_head("portal-eu.phystack.com:443"))
    headers, doc = expect_refusal(s, 407)
    assert headers.get("proxy-authenticate") == 'Basic realm="phystack"', headers
    # A password is not an identifier either, nor is a malformed one.
    with_password = "Proxy-Authorization: Basic %s\r\n" % base64.b64encode(
        b"sn_X:secret").decode()
    expect_refusal(connect_head("portal-eu.phystack.com:443", extra=with_password), 407)
    expect_refusal(connect_head("portal-eu.phystack.com:443", ident="bad ident"), 407)
    r = curl(["-x", "http://127.0.0.1:%d" % S["pa"], "--cacert", S["certs"]["ca"],
              "https://portal-eu.phystack.com/hello"])
    assert r.returncode != 0 and b"407" in r.stderr, r


def test_host_off_allow_list_is_403():
    expect_refusal(connect_head("example.com:443", "sn_DENY"), 403, "forbidden")
    expect_refusal(connect_head("portal-eu.phystack.com:8443", "sn_DENY"), 403)
    expect_refusal(connect_head("127.0.0.1:%d" % S["echo"].port, "sn_DENY"), 403)
    r = curl(["-x", "http://sn_DENY:@127.0.0.1:%d" % S["pa"], "https://example.com/"])
    assert r.returncode != 0 and b"403" in r.stderr, r


def test_get_is_405():
    expect_refusal(("GET http://portal-eu.phystack.com/ HTTP/1.1\r\nHost: portal-eu.phystack.com"
                    "\r\n" + auth("sn_GET") + "\r\n").encode(), 405, "method_not_allowed")
    r = curl(["-x", "http://sn_GET:@127.0.0.1:%d" % S["pa"], "-o", "/dev/null",
              "-w", "%{http_code}", "http://portal-eu.phystack.com/hello"])
    assert r.stdout == b"405", r


def test_garbage_is_400_or_closed():
    expect_refusal(b"\x00\xffGARBAGE\r\n\r\n", 400, "bad_request")
    expect_refusal(b"CONNECT portal-eu.phystack.com:443 HTTP/1.1\nHost: x\n\n", 400)
    expect_refusal(b"CONNECT portal-eu.phystack.com:443 HTTP/9.9\r\n\r\n", 400)
    expect_refusal(connect_head("portal-eu.phystack.com:0", "sn_G"), 400)
    # A TLS ClientHello sent straight at the proxy: an error answer or a close.
    s = phytest.connect(S["pa"])
    s.sendall(bytes.fromhex("160301020001000200fc0303") + os.urandom(200) + b"\r\n\r\n")
    data = phytest.recv_all(s)
    s.close()
    assert data == b"" or data.startswith(b"HTTP/1.1 400 "), data[:100]


def test_oversized_head_is_431():
    pad = "X-Pad: " + "a" * 10000 + "\r\n"
    expect_refusal(connect_head("portal-eu.phystack.com:443", "sn_BIG_HEAD", extra=pad), 431)
    many = "".join("X-H%d: v\r\n" % i for i in range(100))
    expect_refusal(connect_head("portal-eu.phystack.com:443", "sn_BIG_HEAD", extra=many), 431)


def test_slowloris_gets_408():
    s = phytest.connect(S["pa"])
    start = time.monotonic()
    s.sendall(b"CONNECT portal-eu.phystack.com:443 HTTP/1.1\r\nHost: portal-")
    headers, doc = expect_refusal(s, 408, "request_timeout")
    elapsed = time.monotonic() - start
    assert 0.8 <= elapsed < 5, elapsed


def test_tunnel_limit_per_device_is_429():
    t1, st1, _, _ = open_tunnel(S["pa"], "portal-echo.phystack.com:443", "sn_LIMIT")
    t2, st2, _, _ = open_tunnel(S["pa"], "portal-echo.phystack.com:443", "sn_LIMIT")
    assert (st1, st2) == (200, 200)
    s = phytest.connect(S["pa"])
    s.sendall(connect_head("portal-echo.phystack.com:443", "sn_LIMIT"))
    expect_refusal(s, 429, "too_many_tunnels")
    other, st, _, rest = open_tunnel(S["pa"], "portal-echo.phystack.com:443", "sn_OTHER")
    assert st == 200
    echo_roundtrip(other, b"other still works", rest)
    other.close()
    echo_roundtrip(t1, b"t1 works")
    t1.close()

    def slot_free():
        s, st, _, _ = open_tunnel(S["pa"], "portal-echo.phystack.com:443", "sn_LIMIT")
        s.close()
        return st == 200
    phytest.wait_until(slot_free, 10, "a sn_LIMIT slot to be released")
    t2.close()


def test_unroutable_allowed_host_is_502():
    expect_refusal(connect_head("portal-nowhere.phystack.com:443", "sn_NOROUTE"), 502,
                   "no_route")


def test_upstream_port_closed_is_502():
    expect_refusal(connect_head("portal-dead.phystack.com:443", "sn_DEAD"), 502,
                   "upstream_unreachable")


def test_upstream_connect_timeout_is_504():
    s = phytest.connect(S["pb"])
    start = time.monotonic()
    s.sendall(connect_head("portal-hole.phystack.com:443", "sn_HOLE"))
    expect_refusal(s, 504, "upstream_timeout")
    assert 0.8 <= time.monotonic() - start < 5


def test_bytes_with_connect_head_are_delivered():
    s, st, _, rest = open_tunnel(S["pa"], "portal-echo.phystack.com:443", "sn_EARLY",
                                 early=b"EARLY-BYTES")
    assert st == 200
    while len(rest) < len(b"EARLY-BYTES"):
        chunk = s.recv(4096)
        assert chunk
        rest += chunk
    assert rest == b"EARLY-BYTES", rest
    s.close()


def test_large_transfer_and_half_close():
    payload = os.urandom(BIG)
    s, st, _, rest = open_tunnel(S["pa"], "portal-echo.phystack.com:443", "sn_BULK")
    assert st == 200 and rest == b""
    err = []

    def sender():
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)  # half-close: the echo answers EOF after the data
        except OSError as e:
            err.append(e)
    th = threading.Thread(target=sender)
    th.start()
    got = phytest.recv_all(s)
    th.join(30)
    s.close()
    assert not err, err
    assert len(got) == BIG and hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    line = S["a"].wait_log(r"event=tunnel ident=sn_BULK .*").group(0)
    assert "bytes_up=%d bytes_down=%d " % (BIG, BIG) in line, line
    assert "outcome=ok" in line and "upstream=127.0.0.1:%d" % S["echo"].port in line, line


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_backpressure_bounds_proxy_memory():
    # The client writes 128 MiB into the echo tunnel without reading. With
    # backpressure the proxy stops reading once a peer's write queue is full, so the
    # sender stalls and the proxy's memory stays flat; then everything is drained.
    block = hashlib.sha256(b"phystack").digest() * 2048  # 64 KiB
    nblocks = 2048
    s, st, _, rest = open_tunnel(S["pa"], "portal-echo.phystack.com:443", "sn_SLOW")
    assert st == 200 and rest == b""
    s.settimeout(60)
    before = rss_kib(S["a"].pid)
    progress = {"sent": 0, "done": False, "err": None}

    def sender():
        try:
            for _ in range(nblocks):
                s.sendall(block)
                progress["sent"] += len(block)
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            progress["err"] = e
        progress["done"] = True
    th = threading.Thread(target=sender, daemon=True)
    th.start()
    last = {"sent": -1, "since": time.monotonic()}

    def stalled():
        if progress["done"]:
            return True
        if progress["sent"] != last["sent"]:
            last["sent"], last["since"] = progress["sent"], time.monotonic()
            return False
        return time.monotonic() - last["since"] > 0.5
    phytest.wait_until(stalled, 60, "the sender to stall or finish")
    grown = rss_kib(S["a"].pid) - before
    assert not progress["done"], "128 MiB went in without being read: no backpressure"
    assert grown < 24 * 1024, "proxy RSS grew by %d KiB" % grown
    h, total = hashlib.sha256(), 0
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        h.update(chunk)
        total += len(chunk)
    th.join(30)
    s.close()
    assert progress["err"] is None, progress
    assert total == nblocks * len(block), total
    assert h.digest() == hashlib.sha256(block * nblocks).digest()


def test_idle_timeout_closes_silent_tunnel():
    s, st, _, rest = open_tunnel(S["pb"], "portal-echo.phystack.com:443", "sn_IDLE")
    assert st == 200
    echo_roundtrip(s, b"ping", rest)
    start = time.monotonic()
    assert phytest.recv_all(s) == b""
    elapsed = time.monotonic() - start
    s.close()
    assert 0.7 <= elapsed < 5, elapsed
    line = S["b"].wait_log(r"event=tunnel ident=sn_IDLE .*").group(0)
    assert "outcome=idle_timeout" in line and "bytes_up=4 bytes_down=4" in line, line


def test_dns_fallback_resolves_allowed_host():
    s, st, _, rest = open_tunnel(S["pb"], "localhost:%d" % S["echo"].port, "sn_DNS")
    assert st == 200
    echo_roundtrip(s, b"resolved", rest)
    s.close()
    # DNS fallback never widens the allow-list.
    s = phytest.connect(S["pb"])
    s.sendall(connect_head("localhost:1", "sn_DNS"))
    expect_refusal(s, 403)


def test_dns_fallback_refuses_non_public_answers():
    """Without --dns-allow-net naming it, a name that resolves to loopback (or any
    private, link-local or metadata address) is refused before any connect, so the
    answer reveals nothing about the port."""
    s = phytest.connect(S["pd"])
    s.sendall(connect_head("localhost:%d" % S["echo"].port, "sn_DNS"))
    _, doc = expect_refusal(s, 403, "forbidden")
    assert "non-public" in doc["message"], doc
    s = phytest.connect(S["pd"])
    s.sendall(connect_head("localhost:%d" % S["dead_port"], "sn_DNS"))
    expect_refusal(s, 403, "forbidden")  # closed port: same answer
    assert "outcome=private_address_403" in tunnel_lines(S["d"], "sn_DNS")[-1]


def test_max_connections_is_503():
    port = phytest.free_port()
    c = phytest.Daemon([phytest.binary("phyproxy"), "--listen", "127.0.0.1:%d" % port,
                        "--route", "portal-echo.phystack.com=127.0.0.1:%d,proxy-protocol=off"
                        % S["echo"].port,
                        "--max-connections", "2"], "proxy-c", S["dir"])
    try:
        c.wait_log(r"event=start listen=127\.0\.0\.1:%d" % port)
        held = [phytest.connect(port), phytest.connect(port)]
        s = phytest.connect(port)
        expect_refusal(s, 503, "over_capacity")
        held.pop().close()

        def served():
            s, st, _, rest = open_tunnel(port, "portal-echo.phystack.com:443", "sn_CAP")
            with s:
                if st != 200:
                    phytest.recv_all(s)
                    return False
                echo_roundtrip(s, b"capacity", rest)
                return True
        phytest.wait_until(served, 10, "a connection slot after closing one")
        held.pop().close()
        assert c.stop() == 0, c.tail()
        assert c.log_lines(r"outcome=over_capacity_503 ")
    finally:
        c.kill()


def test_still_serves_after_bad_input():
    r = curl(["-x", "http://dev_AFTER01:@127.0.0.1:%d" % S["pa"], "--cacert",
              S["certs"]["ca"], "https://portal-eu.phystack.com/hello"])
    assert r.returncode == 0 and r.stdout == HELLO_BODY, r


def test_access_log_one_line_per_tunnel():
    a = S["a"]
    for ident in ("sn_TEST", "sn_EARLY", "sn_BULK", "sn_OTHER", "dev_AFTER01"):
        lines = phytest.wait_until(lambda: tunnel_lines(a, ident), 10, "log of " + ident)
        assert len(lines) == 1, (ident, lines)
        for key in ("target=", "upstream=", "bytes_up=", "bytes_down=", "duration_ms=",
                    "outcome=ok", "peer=127.0.0.1:"):
            assert key in lines[0], (key, lines[0])
    # Refused requests are logged too, with their outcome.
    for outcome in ("no_auth_407", "refused_403", "bad_method_405", "bad_request_400",
                    "head_too_big_431", "header_timeout_408", "too_many_tunnels_429",
                    "no_route_502", "upstream_unreachable_502"):
        assert a.log_lines(r"event=tunnel .*outcome=%s " % outcome), outcome
    assert S["b"].log_lines(r"event=tunnel ident=sn_HOLE .*outcome=connect_timeout_504")
    # sn_LIMIT: two tunnels, one 429, plus the re-tries after the release.
    assert len(tunnel_lines(a, "sn_LIMIT")) >= 4
    # No credential material: only the identifier may appear.
    text = a.log() + S["b"].log()
    assert "Basic" not in text and "secret" not in text
    assert base64.b64encode(b"sn_TEST:").decode() not in text


def test_sigterm_exits_zero():
    # A tunnel still open at shutdown is closed and logged.
    s, st, _, _ = open_tunnel(S["pa"], "portal-echo.phystack.com:443", "sn_LAST")
    assert st == 200
    for k in ("a", "b"):
        code = S[k].stop(signal.SIGTERM)
        assert code == 0, (k, code, S[k].tail())
        log = S[k].log()
        assert "event=exit" in log
        assert "AddressSanitizer" not in log and "runtime error" not in log, S[k].tail()
    assert phytest.recv_all(s) == b""
    s.close()
    assert "outcome=shutdown" in tunnel_lines(S["a"], "sn_LAST")[0]


def test_dev_identity_needs_its_proxy_token():
    dev = "dev_tokentest234567abcdefghijk"
    good = proxy_token(S["key"], "k1", dev)
    # No token, a wrong one, another device's, an unknown key ID: 407.
    for password in ("", proxy_token(os.urandom(32), "k1", dev),
                     proxy_token(S["key"], "k1", "dev_other"), proxy_token(S["key"], "k2", dev)):
        s, st, headers, _ = tunnel_from("127.0.0.1", S["pd"], "portal-echo.phystack.com:443",
                                        dev, password)
        s.close()
        assert st == 407, (password, st)
        assert headers.get("proxy-authenticate", "").startswith("Basic"), headers
    assert "outcome=bad_token_407" in tunnel_lines(S["d"], dev)[-1]
    # The right token: the upstream learns who it is and from where, first thing.
    s, st, _, rest = tunnel_from("127.0.0.5", S["pd"], "portal-echo.phystack.com:443", dev, good)
    assert st == 200
    s.sendall(b"after")
    src, sport, tlvs, rest = read_pp2(s, rest)
    assert src == "127.0.0.5" and sport == s.getsockname()[1], (src, sport)
    assert tlvs[0xE0] == dev.encode() and tlvs[0xE1] == b"\x01", tlvs
    while len(rest) < 5:
        rest += s.recv(64)
    assert rest == b"after", rest
    # A verified device's slots are its own, wherever it connects from.
    t2, st2, _, _ = tunnel_from("127.0.0.6", S["pd"], "portal-echo.phystack.com:443", dev, good)
    t3, st3, _, _ = tunnel_from("127.0.0.7", S["pd"], "portal-echo.phystack.com:443", dev, good)
    assert (st2, st3) == (200, 429), (st2, st3)
    for x in (s, t2, t3):
        x.close()
    S["d"].wait_log(r"event=tunnel ident=%s .*outcome=ok peer=127\.0\.0\.5:\d+ auth=token" % dev)


def test_serial_slots_count_per_source():
    """Someone elsewhere holding a serial's tunnels does not lock the device out; a
    source that rotates names meets its own limit."""
    held = []
    for _ in range(2):
        s, st, _, rest = tunnel_from("127.0.0.1", S["pd"], "portal-echo.phystack.com:443",
                                     "sn_SQUAT")
        assert st == 200
        assert read_pp2(s, rest)[2][0xE1] == b"\x00"  # not verified
        held.append(s)
    s, st, _, _ = tunnel_from("127.0.0.1", S["pd"], "portal-echo.phystack.com:443", "sn_SQUAT")
    assert st == 429
    s.close()
    s, st, _, _ = tunnel_from("127.0.0.2", S["pd"], "portal-echo.phystack.com:443", "sn_SQUAT")
    assert st == 200, "the real device, from its own address, still gets a tunnel"
    s.close()
    # 127.0.0.1 holds 2; a third name reaches the source limit (3), a fourth is refused.
    s3, st, _, _ = tunnel_from("127.0.0.1", S["pd"], "portal-echo.phystack.com:443", "sn_ROT1")
    assert st == 200
    s4 = connect_from("127.0.0.1", S["pd"])
    s4.sendall(connect_head("portal-echo.phystack.com:443", "sn_ROT2"))
    _, doc = expect_refusal(s4, 429, "too_many_tunnels")
    assert "address" in doc["message"], doc
    for x in held + [s3]:
        x.close()
    S["d"].wait_log(r"event=tunnel ident=sn_ROT2 .*outcome=source_limit_429 ")


def test_slot_is_freed_when_the_upstream_ends():
    """A hub that closes its side frees the tunnel's slot at once, though the client
    never closes (before: held until the idle timeout)."""
    kept = []
    for _ in range(2):
        s, st, _, rest = tunnel_from("127.0.0.9", S["pd"], "portal-close.phystack.com:443",
                                     "sn_ENDED")
        assert st == 200
        data = rest
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data == b""  # the upstream's close reached the client
        kept.append(s)  # ... which keeps its side open
    s, st, _, _ = tunnel_from("127.0.0.9", S["pd"], "portal-echo.phystack.com:443", "sn_ENDED")
    assert st == 200, st
    s.close()
    for x in kept:
        x.close()


def test_closed_tunnel_frees_its_slot_at_once():
    """A device that closes a tunnel and opens the next at once is never refused: the
    closed one no longer counts, though the proxy has not read its end of stream yet
    (before: 0.1-0.3 % of back-to-back reopenings got 429 too_many_tunnels). Two slots
    per identifier on proxy D, both in use the whole time."""
    held = []
    for _ in range(2):
        s, st, _, _ = tunnel_from("127.0.0.11", S["pd"], "portal-echo.phystack.com:443", "sn_BACK")
        assert st == 200, st
        held.append(s)
    refused = 0
    for _ in range(300):
        held.pop(0).close()
        s, st, _, _ = tunnel_from("127.0.0.11", S["pd"], "portal-echo.phystack.com:443", "sn_BACK")
        if st != 200:
            refused += 1
            s.close()
            s, st, _, _ = tunnel_from("127.0.0.11", S["pd"], "portal-echo.phystack.com:443",
                                      "sn_BACK")  # keep two held
        held.append(s)
    for s in held:
        s.close()
    assert refused == 0, "%d of 300 reopenings refused" % refused
    # Deterministic: a tunnel still connecting upstream (a blackhole) whose client
    # gives up and comes back at once, one slot per identifier.
    port = phytest.free_port()
    px = phytest.Daemon([phytest.binary("phyproxy"), "--listen", "127.0.0.1:%d" % port,
                         "--route", "portal-hole.phystack.com=127.0.0.1:%d,proxy-protocol=off"
                         % S["hole_port"], "--max-tunnels-per-device", "1",
                         "--new-tunnel-rate", "0", "--connect-timeout", "20"],
                        "proxy-reopen", S["dir"])
    try:
        px.wait_port(port)
        for i in range(5):
            s = connect_from("127.0.0.13", port)
            s.sendall(connect_head("portal-hole.phystack.com:443", "sn_HOLE"))
            time.sleep(0.05)  # the proxy has read the head and is connecting (bounded)
            s.close()
            s2 = connect_from("127.0.0.13", port)
            s2.sendall(connect_head("portal-hole.phystack.com:443", "sn_HOLE"))
            s2.settimeout(0.5)
            try:
                status, _, _ = phytest.recv_http_head(s2)
            except socket.timeout:
                status = None  # connecting, as it should: not refused
            s2.close()
            assert status != 429, "reopening %d refused" % i
    finally:
        px.kill()
    # Three at once still is one too many.
    a = tunnel_from("127.0.0.12", S["pd"], "portal-echo.phystack.com:443", "sn_BACK")
    b = tunnel_from("127.0.0.12", S["pd"], "portal-echo.phystack.com:443", "sn_BACK")
    c = tunnel_from("127.0.0.12", S["pd"], "portal-echo.phystack.com:443", "sn_BACK")
    assert (a[1], b[1], c[1]) == (200, 200, 429), (a[1], b[1], c[1])
    for x in (a, b, c):
        x[0].close()


def test_new_tunnels_rate_limited_per_source():
    codes, retry = [], None
    for _ in range(3):
        s, st, headers, _ = tunnel_from("127.0.0.3", S["pe"], "portal-echo.phystack.com:443",
                                        "sn_RATE")
        codes.append(st)
        if st == 429:
            retry = headers.get("retry-after")
        s.close()
    assert codes == [200, 200, 429], codes
    assert retry is not None and 1 <= int(retry) <= 2, retry
    # Another source is not affected, nor is a device with a valid token.
    s, st, _, _ = tunnel_from("127.0.0.4", S["pe"], "portal-echo.phystack.com:443", "sn_RATE")
    assert st == 200
    s.close()
    dev = "dev_ratetest"
    s, st, _, _ = tunnel_from("127.0.0.3", S["pe"], "portal-echo.phystack.com:443", dev,
                              proxy_token(S["key"], "k1", dev))
    assert st == 200
    s.close()
    assert S["e"].log_lines(r"outcome=rate_limited_429 ")


def test_share_kept_for_devices_when_nearly_full():
    """Unauthenticated tunnels may not take the --device-share of --max-connections:
    past the rest they get 503 with Retry-After, while a device with its proxy token
    still gets through."""
    port = phytest.free_port()
    keyfile = os.path.join(S["dir"], "proxy-k1.key")
    c = phytest.Daemon([phytest.binary("phyproxy"), "--listen", "127.0.0.1:%d" % port,
                        "--route", "portal-echo.phystack.com=127.0.0.1:%d,proxy-protocol=off"
                        % S["echo"].port, "--max-connections", "5", "--device-share", "40",
                        "--proxy-key", "k1=" + keyfile], "proxy-share", S["dir"])
    held = []
    try:
        c.wait_port(port)
        for i in range(3):
            s, st, _, _ = tunnel_from("127.0.0.1", port, "portal-echo.phystack.com:443",
                                      "sn_SHARE%d" % i)
            assert st == 200, (i, st)
            held.append(s)
        s, st, headers, _ = tunnel_from("127.0.0.1", port, "portal-echo.phystack.com:443",
                                        "sn_SHARE9")
        s.close()
        assert st == 503 and headers.get("retry-after") == "1", (st, headers)
        dev = "dev_sharetest"
        s, st, _, _ = tunnel_from("127.0.0.1", port, "portal-echo.phystack.com:443", dev,
                                  proxy_token(S["key"], "k1", dev))
        assert st == 200, st
        held.append(s)
    finally:
        for s in held:
            s.close()
        c.kill()


def tcp_sockets(pid):
    """How many TCP sockets (any state) process pid holds."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                inodes.update(line.split()[9] for line in list(f)[1:])
        except FileNotFoundError:
            pass
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            n += 1
    return n


def test_out_of_descriptors_is_logged_and_clients_wait():
    """Descriptors taken away from a running proxy (its limit lowered under it): the
    proxy logs why it cannot accept (once a second), and the clients wait in the
    backlog instead of being dropped; once descriptors are back, they are served."""
    port = phytest.free_port()
    c = phytest.Daemon([phytest.binary("phyproxy"), "--listen", "127.0.0.1:%d" % port,
                        "--route", "portal-echo.phystack.com=127.0.0.1:%d,proxy-protocol=off"
                        % S["echo"].port, "--max-connections", "100"], "proxy-emfile", S["dir"])
    waiting = []
    try:
        c.wait_port(port)
        # wait_port's probe connection must be closed in the proxy before the count
        # below, or it leaves a free descriptor under the limit: wait until the
        # listener is the proxy's only TCP socket.
        deadline = time.monotonic() + 10
        while tcp_sockets(c.pid) != 1:
            assert time.monotonic() < deadline, tcp_sockets(c.pid)
            time.sleep(0.01)
        # The lowest free descriptor number: a limit at it leaves no number free
        # (counting the open ones would leave a hole below the highest usable).
        used = {int(fd) for fd in os.listdir("/proc/%d/fd" % c.pid)}
        lowest_free = min(set(range(len(used) + 1)) - used)
        hard = resource.prlimit(c.pid, resource.RLIMIT_NOFILE)[1]
        resource.prlimit(c.pid, resource.RLIMIT_NOFILE, (lowest_free, hard))
        t0 = time.monotonic()
        for _ in range(5):
            s = connect_from("127.0.0.1", port)
            s.sendall(connect_head("portal-echo.phystack.com:443", "sn_FD"))
            waiting.append(s)
        c.wait_log(r"event=out_of_descriptors error=EMFILE hint=", 10)
        time.sleep(1.5)  # accepting retries every 100 ms meanwhile (bounded, short)
        lines = len(c.log_lines(r"event=out_of_descriptors "))
        assert lines <= time.monotonic() - t0 + 1, lines  # at most once a second
        resource.prlimit(c.pid, resource.RLIMIT_NOFILE, (hard, hard))
        for s in waiting:
            status, _, _ = phytest.recv_http_head(s)
            assert status == 200, status
    finally:
        for s in waiting:
            s.close()
        c.kill()


def test_descriptor_limit_checked_at_start():
    proxy = phytest.binary("phyproxy")

    def low(soft, hard):
        return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    r = subprocess.run([proxy, "--listen", "127.0.0.1:%d" % phytest.free_port(),
                        "--max-connections", "1000"], preexec_fn=low(256, 256),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    assert r.returncode == 1, r
    assert b"needs 2064 file descriptors" in r.stderr and b"LimitNOFILE" in r.stderr, r.stderr
    # A soft limit under a high enough hard limit is raised; the default
    # --max-connections is lowered to what a low hard limit allows.
    for (soft, hard), args, want in (
            ((256, 4096), ["--max-connections", "1000"], b"event=nofile_raised soft_limit=2064"),
            ((256, 256), [], b"event=max_connections_lowered max_connections=96")):
        c = subprocess.Popen([proxy, "--listen", "127.0.0.1:%d" % phytest.free_port()] + args,
                             preexec_fn=low(soft, hard), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        try:
            seen = b""
            while b"event=start " not in seen:
                line = c.stdout.readline()
                assert line, "phyproxy exited: %r" % seen
                seen += line
            assert want in seen, seen
        finally:
            c.kill()
            c.wait()


if __name__ == "__main__":
    phytest.main()
