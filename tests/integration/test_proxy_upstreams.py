"""phyproxy routes with several upstreams: tunnels spread by live count, a failed
connect moves on to the next upstream within the same CONNECT, a failed upstream
is skipped during its backoff and probed before it gets tunnels again. Real proxies
and small TCP servers on 127.0.0.1."""

import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
import test_proxy as tp  # noqa: E402  (servers and CONNECT helpers)

S = {}  # shared state built by setup()


def tagged_server(tag, refusing=False):
    """An echo server that greets each connection with its tag and a newline; with
    refusing=True bound but not listening (connects are refused) until listen()."""
    srv = tp.EchoServer(tag.encode() + b"\n", listening=not refusing)
    srv.tag = tag
    srv.addr = "127.0.0.1:%d" % srv.port
    return srv


def tagged_tunnel(port, host, ident):
    """CONNECT to host:443 through the proxy on port; returns (sock, tag of the
    upstream reached). Asserts the 200."""
    s, status, _, rest = tp.open_tunnel(port, host + ":443", ident)
    assert status == 200, (status, rest)
    while b"\n" not in rest:
        chunk = s.recv(4096)
        assert chunk, "tunnel closed before the upstream's tag"
        rest += chunk
    tag, rest = rest.split(b"\n", 1)
    assert rest == b"", rest
    return s, tag.decode()


def access_line(daemon, ident):
    return daemon.wait_log(r"event=tunnel ident=%s .*" % re.escape(ident)).group(0)


# ---- setup / teardown ----

def setup():
    d = phytest.tmpdir("proxy-upstreams")
    S["dir"] = d
    proxy = phytest.binary("phyproxy")

    # Spread: two live upstreams.
    S["one"], S["two"] = tagged_server("one"), tagged_server("two")
    S["p_spread"] = phytest.free_port()
    S["spread"] = phytest.Daemon([
        proxy, "--listen", "127.0.0.1:%d" % S["p_spread"],
        "--route", "portal-spread.phystack.com=%s,%s,proxy-protocol=off"
        % (S["one"].addr, S["two"].addr),
        "--max-tunnels-per-device", "64", "--new-tunnel-rate", "0",
    ], "proxy-spread", d)

    # Failover, from an INI file: the first upstream refuses until a test opens it.
    S["back"] = tagged_server("back", refusing=True)
    S["live"] = tagged_server("live")
    S["p_fail"] = phytest.free_port()
    ini = os.path.join(d, "proxy-failover.ini")
    with open(ini, "w") as f:
        f.write("[proxy]\nlisten = 127.0.0.1:%d\n"
                "route = portal-fail.phystack.com=%s,%s,proxy-protocol=off\n"
                "upstream-backoff-ms = 300\nupstream-backoff-max-ms = 600\n"
                "max-tunnels-per-device = 64\nnew-tunnel-rate = 0\nlog-level = debug\n"
                % (S["p_fail"], S["back"].addr, S["live"].addr))
    S["fail"] = phytest.Daemon([proxy, "--config", ini], "proxy-failover", d)

    # Down: two refusing upstreams; slow: a blackhole before a live upstream; two
    # blackholes. 1 s connect timeout.
    S["dead1"] = tagged_server("dead1", refusing=True)
    S["dead2"] = tagged_server("dead2", refusing=True)
    S["holes"] = [tp.make_blackhole() for _ in range(2)]
    S["p_down"] = phytest.free_port()
    hole1, hole2 = ("127.0.0.1:%d" % h[1] for h in S["holes"])
    S["down"] = phytest.Daemon([
        proxy, "--listen", "127.0.0.1:%d" % S["p_down"],
        "--route", "portal-down.phystack.com=%s,%s" % (S["dead1"].addr, S["dead2"].addr),
        "--route", "portal-slow.phystack.com=%s,%s,proxy-protocol=off"
        % (hole1, S["live"].addr),
        "--route", "portal-holes.phystack.com=%s,%s" % (hole1, hole2),
        "--connect-timeout", "1", "--upstream-backoff-ms", "500",
        "--upstream-backoff-max-ms", "1000", "--new-tunnel-rate", "0",
    ], "proxy-down", d)

    for k in ("spread", "fail", "down"):
        S[k].wait_port(S["p_" + k], 20)


def teardown():
    for k in ("spread", "fail", "down"):
        if k in S:
            S[k].kill()
    for k in ("one", "two", "back", "live", "dead1", "dead2"):
        if k in S:
            S[k].close()
    for lsock, _, fillers in S.get("holes", []):
        for c in fillers:
            c.close()
        lsock.close()


# ---- tests ----

def test_route_syntax_errors_and_help():
    proxy = phytest.binary("phyproxy")

    def run(*args):
        return subprocess.run([proxy, "--listen", "127.0.0.1:%d" % phytest.free_port()]
                              + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=20)
    r = run("--help")
    assert r.returncode == 0, r
    for flag in (b"ADDR:PORT[,ADDR:PORT", b"--upstream-backoff-ms", b"--upstream-backoff-max-ms"):
        assert flag in r.stdout, (flag, r.stdout)
    many = ",".join("127.0.0.1:%d" % (9000 + i) for i in range(17))
    for spec, why in (
            ("portal-eu.phystack.com=" + many, b"at most 16 upstreams per route"),
            ("portal-eu.phystack.com=127.0.0.1:1,127.0.0.1", b"upstream '127.0.0.1' is not"),
            ("portal-eu.phystack.com=127.0.0.1:1,proxy-protocol=on,proxy-protocol=off",
             b"proxy-protocol given twice"),
            ("portal-eu.phystack.com=127.0.0.1:1,127.0.0.1:1", b"given twice")):
        r = run("--route", spec)
        assert r.returncode == 1 and why in r.stderr, (spec, r)


def test_tunnels_spread_by_fewest_live():
    sp = S["spread"]
    sp.wait_log(r"event=start .*routes=portal-spread\.phystack\.com=%s\|%s\(plain\) "
                % (re.escape(S["one"].addr), re.escape(S["two"].addr)))
    held = {}
    try:
        for i in range(6):
            held["sn_SPREAD%d" % i] = tagged_tunnel(S["p_spread"], "portal-spread.phystack.com",
                                                    "sn_SPREAD%d" % i)
        tags = [tag for _, tag in held.values()]
        assert tags.count("one") == 3 and tags.count("two") == 3, tags
        # Two tunnels on "one" end: the next two new ones go there (fewest live).
        ended = [ident for ident, (_, tag) in held.items() if tag == "one"][:2]
        for ident in ended:
            held.pop(ident)[0].close()
            assert "outcome=ok" in access_line(sp, ident)
        for i in range(6, 8):
            s, tag = tagged_tunnel(S["p_spread"], "portal-spread.phystack.com", "sn_SPREAD%d" % i)
            held["sn_SPREAD%d" % i] = (s, tag)
            assert tag == "one", (i, tag)
        for s, _ in held.values():
            tp.echo_roundtrip(s, b"ping")
    finally:
        for s, _ in held.values():
            s.close()
    for ident, (_, tag) in held.items():
        line = access_line(sp, ident)
        assert "upstream=%s " % S[tag].addr in line and "failed=" not in line, line


def test_refusing_upstream_is_tried_once_then_skipped():
    fl = S["fail"]
    for i in range(8):
        s, tag = tagged_tunnel(S["p_fail"], "portal-fail.phystack.com", "sn_FAIL%d" % i)
        assert tag == "live", (i, tag)
        tp.echo_roundtrip(s, b"x" * 100)
        s.close()
    lines = [access_line(fl, "sn_FAIL%d" % i) for i in range(8)]
    # The first CONNECT tried the refusing upstream and went on within itself; the
    # others skipped it (down, in backoff or being probed).
    assert "failed=%s" % S["back"].addr in lines[0], lines[0]
    for line in lines:
        assert "outcome=ok" in line and "upstream=%s " % S["live"].addr in line, line
    assert not [l for l in lines[1:] if "failed=" in l], lines
    down = fl.log_lines(r"event=upstream_down route=portal-fail\.phystack\.com upstream=%s "
                        r"via=tunnel error=ECONNREFUSED failures=1 retry_ms=300"
                        % re.escape(S["back"].addr))
    assert len(down) == 1, fl.tail()
    # After its backoff it is probed; it still refuses, so it stays down.
    fl.wait_log(r"event=upstream_failed route=portal-fail\.phystack\.com upstream=%s via=probe "
                r"error=ECONNREFUSED failures=2 retry_ms=600" % re.escape(S["back"].addr))
    assert not fl.log_lines(r"event=upstream_up ")


def test_upstream_back_after_backoff_gets_tunnels():
    fl, back = S["fail"], S["back"]
    assert back.accepted == 0
    back.listen()
    fl.wait_log(r"event=upstream_up route=portal-fail\.phystack\.com upstream=%s via=probe "
                r"down_ms=\d+" % re.escape(back.addr), 10)
    # The probe was a plain connect, closed at once: one accept, no tunnel.
    phytest.wait_until(lambda: back.accepted == 1, 5, "the probe's connection")
    held = []
    try:
        for i in range(4):
            held.append(tagged_tunnel(S["p_fail"], "portal-fail.phystack.com", "sn_BACK%d" % i))
        tags = [tag for _, tag in held]
        assert tags.count("back") == 2 and tags.count("live") == 2, tags
    finally:
        for s, _ in held:
            s.close()
    for i in range(4):
        assert "failed=" not in access_line(fl, "sn_BACK%d" % i)


def test_all_upstreams_down_is_502():
    dn = S["down"]
    for ident in ("sn_DOWN1", "sn_DOWN2"):
        # The second comes while both are in backoff: both are tried anyway.
        s = phytest.connect(S["p_down"])
        s.sendall(tp.connect_head("portal-down.phystack.com:443", ident))
        tp.expect_refusal(s, 502, "upstream_unreachable")
        line = access_line(dn, ident)
        assert "outcome=upstream_unreachable_502 " in line, line
        ups = {re.search(r" upstream=(\S+)", line).group(1),
               re.search(r" failed=(\S+)", line).group(1)}
        assert ups == {S["dead1"].addr, S["dead2"].addr}, line
    for dead in (S["dead1"], S["dead2"]):
        assert len(dn.log_lines(r"event=upstream_down route=portal-down\.phystack\.com "
                                r"upstream=%s " % re.escape(dead.addr))) == 1, dn.tail()


def health(port, path):
    """GET path on the proxy's port: (status, parsed body, raw head)."""
    s = phytest.connect(port)
    s.sendall(b"GET %s HTTP/1.1\r\nHost: proxy\r\n\r\n" % path.encode())
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body), head.decode()


def test_health_and_readiness():
    """/healthz: the process answers. /readyz: it takes tunnels and every route has an
    upstream up; 503 with Retry-After once a route's upstreams are all down."""
    for port in (S["p_spread"], S["p_down"]):
        assert health(port, "/healthz")[:2] == (200, {"status": "ok"})
    assert health(S["p_spread"], "/readyz")[:2] == (200, {"status": "ok"})
    # portal-down's two upstreams went down in the test before (and stay down: they
    # still refuse, and each probe fails).
    status, body, head = health(S["p_down"], "/readyz")
    assert (status, body) == (503, {"status": "not_ready"}), (status, body)
    assert "Retry-After: " in head, head
    assert S["down"].wait_log(r"event=tunnel .*target=/readyz .*outcome=not_ready_503")
    # Any other plain request is still refused.
    assert health(S["p_spread"], "/metrics")[0] == 405


def test_connect_timeout_moves_on_then_504():
    dn = S["down"]
    hole1 = "127.0.0.1:%d" % S["holes"][0][1]
    # A blackhole first: its attempt gets half the connect time, then the live one.
    start = time.monotonic()
    s, tag = tagged_tunnel(S["p_down"], "portal-slow.phystack.com", "sn_SLOW")
    took = time.monotonic() - start
    s.close()
    assert tag == "live" and 0.4 < took < 1.5, (tag, took)
    line = access_line(dn, "sn_SLOW")
    assert "outcome=ok" in line and "failed=%s" % hole1 in line, line
    dn.wait_log(r"event=upstream_down route=portal-slow\.phystack\.com upstream=%s via=tunnel "
                r"error=ETIMEDOUT " % re.escape(hole1))
    # Nothing answers: 504 once the whole --connect-timeout is used, as with one.
    s = phytest.connect(S["p_down"])
    start = time.monotonic()
    s.sendall(tp.connect_head("portal-holes.phystack.com:443", "sn_HOLES"))
    tp.expect_refusal(s, 504, "upstream_timeout")
    assert 0.9 < time.monotonic() - start < 3, time.monotonic() - start
    line = access_line(dn, "sn_HOLES")
    assert "outcome=connect_timeout_504 " in line and " failed=" in line, line


def test_sigterm_with_probes_under_way_exits_zero():
    for k in ("spread", "fail", "down"):
        assert S[k].stop(signal.SIGTERM) == 0, S[k].tail()
        log = S[k].log()
        assert "event=exit status=0" in log, S[k].tail()
        assert "AddressSanitizer" not in log and "runtime error" not in log, S[k].tail()


if __name__ == "__main__":
    phytest.main()
