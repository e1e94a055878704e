"""Several hub nodes on one PostgreSQL store (issue 12): what one node changes reaches
devices connected to the other (desired changes, fleet patches, revokes, a newer
session of the device), announced with LISTEN/NOTIFY; a node whose LISTEN connection
is killed during a burst of changes catches up by itself; a node that dies leaves its
devices offline after the node timeout."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
import wsclient  # noqa: E402
from phytest import binary, wait_until  # noqa: E402
from stack import (HOST, PASSWORD, SHORT_TIMERS, Stack, https_connection,  # noqa: E402
                   https_request, psql, read_json)

ST = None
NODE = {}  # name -> (port, daemon)
NODE_FLAGS = ["--node-heartbeat", "1", "--node-timeout", "3"]
LOGIN_LIMIT = 5  # --login-user-limit (the default)
AGENTS = 100  # real phyagent processes, made with device-add-bulk (no claim each)


def start_node(name):
    port = phytest.free_port()
    argv = [binary("phyhub"), "--region", "eu", "--listen", "127.0.0.1:%d" % port,
            "--db", ST.db, "--tls-cert", ST.pki["cert"], "--tls-key", ST.pki["key"],
            "--provisioning", "--public-endpoint", HOST + ":443", "--node-id", name]
    argv += ST.store_flags + ST.edge_hub_flags() + list(SHORT_TIMERS) + NODE_FLAGS
    d = ST.daemon(argv, "phyhub-" + name)
    d.wait_port(port)
    d.wait_log(r"event=nodelink_ready ", 10)
    NODE[name] = (port, d)


def setup():
    global ST
    if os.environ.get("PHY_TEST_STORE") != "postgresql":
        sys.exit("pg_nodes: PostgreSQL only (PHY_TEST_STORE=postgresql PHY_TEST_PG_URL=...)")
    ST = Stack("nodes", hub_flags=["--node-id", "a"] + NODE_FLAGS, proxy=False)
    ST.hub.wait_log(r"event=nodelink_ready ", 10)
    NODE["a"] = (ST.hub_port, ST.hub)
    start_node("b")


def teardown():
    if ST is not None:
        ST.stop()


def connect(creds, node):
    port = NODE[node][0]
    st, _, ws = wsclient.handshake("127.0.0.1", port, HOST, ST.pki["ca"], creds["device_id"],
                                   creds["device_secret"])
    assert st == 101, st
    return ws


def api(node, method, path, body=None):
    """The console API of node a or b, as alice."""
    conn = https_connection(NODE[node][0], ST.tls_context())
    return https_request(conn, method, path, body, token=ST.token)


def desired_versions(ws, want, timeout=5.0):
    """Reads desired.patch messages until version want arrives; the versions seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1] < want:
        m = ws.recv_type("desired.patch", max(0.05, deadline - time.monotonic()))
        seen.append(m["version"])
    return seen


def test_two_nodes_start_at_once_on_an_empty_database():
    """Migrations run once: two nodes started at the same moment on an empty database
    both serve, and the schema is created once (one version row, no error logged)."""
    db, flags = ST.new_store("empty")
    key = ["--key-file", os.path.join(ST.dir, "nodes.key")]  # one key file for both
    ports, daemons = [], []
    for name in ("x", "y"):
        port = phytest.free_port()
        argv = [binary("phyhub"), "--region", "eu", "--listen", "127.0.0.1:%d" % port,
                "--db", db, "--tls-cert", ST.pki["cert"], "--tls-key", ST.pki["key"],
                "--provisioning", "--public-endpoint", HOST + ":443", "--node-id", name]
        argv += key + list(SHORT_TIMERS) + NODE_FLAGS
        daemons.append(ST.daemon(argv, "phyhub-empty-" + name))
        ports.append(port)
    for d, port in zip(daemons, ports):
        d.wait_port(port)
    count, version = psql(db, "SELECT count(*), max(version) FROM phy_schema").strip().split("|")
    assert count == "1" and int(version) >= 8, (count, version)
    for d in daemons:
        assert not d.log_lines(r"level=error"), d.log_lines(r"level=error")
        d.stop()


def test_desired_change_reaches_the_other_node():
    creds = ST.provision("NODES-1")
    ws = connect(creds, "b")
    t0 = time.monotonic()
    st, js, _, _ = api("a", "PATCH", "/api/v1/devices/%s/twin/desired" % creds["device_id"],
                       {"color": "red"})
    assert st == 200, (st, js)
    assert desired_versions(ws, js["version"]) == [js["version"]]
    print("  change on a reached b's device in %.0f ms" % ((time.monotonic() - t0) * 1000))
    ws.close()


def test_fleet_patch_reaches_both_nodes_once():
    devs = [ST.provision("NODES-F%d" % i, tags={"site": "nodes"}) for i in range(4)]
    socks = [connect(c, "a" if i % 2 else "b") for i, c in enumerate(devs)]
    st, js, _, _ = api("b", "PATCH", "/api/v1/twins/desired?tag=site:nodes", {"volume": 3})
    assert st == 200 and js["matched"] == 4, (st, js)
    for ws in socks:
        seen = desired_versions(ws, 1)
        assert seen == [1], seen
        try:  # exactly once: nothing more comes
            extra = ws.recv_type("desired.patch", 0.5)
            raise AssertionError("pushed twice: %r" % extra)
        except TimeoutError:
            pass
        ws.close()


def test_newer_session_on_the_other_node_replaces():
    creds = ST.provision("NODES-R")
    old = connect(creds, "a")
    time.sleep(0.05)  # the session is registered on a
    new = connect(creds, "b")
    t0 = time.monotonic()
    assert old.expect_close(2) == 4000
    assert time.monotonic() - t0 < 1.5
    st, dev, _, _ = api("a", "GET", "/api/v1/devices/" + creds["device_id"])
    assert st == 200 and dev["presence"] == "online", dev
    new.close()


def test_revoke_on_one_node_closes_on_the_other():
    creds = ST.provision("NODES-V")
    ws = connect(creds, "b")
    st, _, _, _ = api("a", "POST", "/api/v1/devices/%s/revoke" % creds["device_id"])
    assert st == 200, st
    t0 = time.monotonic()
    assert ws.expect_close(2) == 4001
    assert time.monotonic() - t0 < 1.5


def open_stream(node):
    """curl reading node's GET /api/v1/events as alice (token): (process, lines)."""
    url = "https://127.0.0.1:%d/api/v1/events" % NODE[node][0]
    curl = subprocess.Popen(["curl", "-sN", "--cacert", ST.pki["ca"], "-H",
                             "Authorization: Bearer " + ST.token, url],
                            stdout=subprocess.PIPE, text=True)
    lines = []
    threading.Thread(target=lambda: [lines.append(x.rstrip("\n")) for x in curl.stdout],
                     daemon=True).start()
    wait_until(lambda: any("phyhub events" in x for x in lines), 10, "stream open")
    return curl, lines


def events(lines, device_id):
    """(type, data) of the stream's events about device_id, in order."""
    out = []
    for i, x in enumerate(lines[:-1]):
        if x.startswith("event: ") and lines[i + 1].startswith("data: "):
            data = json.loads(lines[i + 1][6:])
            if data.get("device_id") == device_id:
                out.append((x[7:], data))
    return out


def test_console_events_cross_nodes():
    """A console watching node b sees what alice does through node a: the device's
    name, tags, desired version and state (revoked), as b's own handlers would say."""
    creds = ST.provision("NODES-E")
    dev = creds["device_id"]
    curl, lines = open_stream("b")
    try:
        assert api("a", "PATCH", "/api/v1/devices/" + dev, {"name": "lobby"})[0] == 200
        assert api("a", "PUT", "/api/v1/devices/%s/tags" % dev, {"floor": "2"})[0] == 200
        st, js, _, _ = api("a", "PATCH", "/api/v1/devices/%s/twin/desired" % dev, {"x": 1})
        assert st == 200, (st, js)
        assert api("a", "POST", "/api/v1/devices/%s/revoke" % dev)[0] == 200
        want = [("name", {"device_id": dev, "name": "lobby"}),
                ("tags", {"device_id": dev, "tags": {"floor": "2"}}),
                ("desired", {"device_id": dev, "version": js["version"]}),
                ("state", {"device_id": dev, "state": "revoked"})]
        wait_until(lambda: len(events(lines, dev)) >= len(want), 5, "the events on b")
        assert events(lines, dev) == want, events(lines, dev)
    finally:
        curl.kill()
        curl.wait()


def login(node, password):
    """POST /api/v1/login as alice on node: (status, cookie value or None, csrf)."""
    conn = https_connection(NODE[node][0], ST.tls_context())
    st, js, _, hdrs = https_request(conn, "POST", "/api/v1/login",
                                    {"tenant": "acme", "user": "alice", "password": password})
    m = re.match(r"__Host-phy_session=([A-Za-z0-9_-]{43});", hdrs.get("set-cookie", ""))
    if m:
        ST.secrets.update([m.group(1), js["csrf_token"]])
    return st, m.group(1) if m else None, (js or {}).get("csrf_token")


def with_cookie(node, method, path, cookie, csrf=None):
    conn = https_connection(NODE[node][0], ST.tls_context())
    h = {"Cookie": "__Host-phy_session=" + cookie}
    if csrf:
        h["X-CSRF-Token"] = csrf
    return https_request(conn, method, path, None, headers=h)


def test_console_session_across_nodes():
    """A login on a is valid on b; a logout on b ends a's event stream of that session
    at once; failed logins count across nodes (the limit is reached by failures split
    over both)."""
    st, cookie, csrf = login("a", PASSWORD.strip())
    assert st == 200 and cookie, st
    assert with_cookie("b", "GET", "/api/v1/session", cookie)[0] == 200
    url = "https://127.0.0.1:%d/api/v1/events" % NODE["a"][0]
    curl = subprocess.Popen(["curl", "-sN", "--cacert", ST.pki["ca"], "-H",
                             "Cookie: __Host-phy_session=" + cookie, url],
                            stdout=subprocess.PIPE, text=True)
    lines = []
    threading.Thread(target=lambda: [lines.append(x) for x in curl.stdout], daemon=True).start()
    try:
        wait_until(lambda: any("phyhub events" in x for x in lines), 10, "stream open")
        assert with_cookie("b", "POST", "/api/v1/logout", cookie, csrf)[0] == 204
        t0 = time.monotonic()
        curl.wait(5)  # a ended the stream: curl sees the end
        assert time.monotonic() - t0 < 2
    finally:
        curl.kill()
        curl.wait()
    assert with_cookie("a", "GET", "/api/v1/session", cookie)[0] == 401
    codes = [login("a" if i % 2 else "b", "wrong password %d" % i)[0] for i in range(LOGIN_LIMIT)]
    assert codes == [401] * LOGIN_LIMIT, codes
    assert login("a", "wrong again")[0] == 429
    assert login("b", "wrong again")[0] == 429


def test_lost_announcements_are_caught_up():
    """The LISTEN backend of node b is killed during a burst of changes made on a:
    b reconnects and catches up; its device ends at the latest version."""
    creds = ST.provision("NODES-L")
    ws = connect(creds, "b")
    path = "/api/v1/devices/%s/twin/desired" % creds["device_id"]
    last = {}

    def burst():
        for i in range(30):
            st, js, _, _ = api("a", "PATCH", path, {"n": i})
            assert st == 200, (st, js)
            last["v"] = js["version"]
    t = threading.Thread(target=burst)
    t.start()
    time.sleep(0.05)
    killed = psql(ST.db, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                  " WHERE application_name = 'phyhub-nodelink' AND datname = current_database()")
    t.join()
    assert int(killed.strip()) >= 1, killed
    seen = desired_versions(ws, last["v"], timeout=15)
    assert seen[-1] == last["v"], seen
    NODE["b"][1].wait_log(r"event=nodelink_ready catchups=2", 10)
    ws.close()


def test_delete_missed_by_a_lost_link_is_caught_up():
    """b's LISTEN connection dies while b is stopped (for less than the node timeout)
    and a device connected to b is deleted on a meanwhile: the announcement never
    reaches b. Once b goes on, its link reconnects and catches up; the session of the
    deleted device, which the store no longer lists as b's, checks itself and is
    closed with 4002; the other session stays."""
    gone, keep = ST.provision("NODES-G"), ST.provision("NODES-K")
    ws_gone, ws_keep = connect(gone, "b"), connect(keep, "b")
    b = NODE["b"][1]
    links = len(b.log_lines(r"event=nodelink_ready "))
    b.proc.send_signal(signal.SIGSTOP)
    try:
        killed = psql(ST.db, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                      " WHERE application_name = 'phyhub-nodelink'"
                      " AND datname = current_database()")
        assert int(killed.strip()) >= 1, killed
        st, js, _, _ = api("a", "DELETE", "/api/v1/devices/" + gone["device_id"])
        assert st in (200, 204), (st, js)
    finally:
        b.proc.send_signal(signal.SIGCONT)
    assert ws_gone.expect_close(10) == 4002
    wait_until(lambda: len(b.log_lines(r"event=nodelink_ready ")) > links, 10, "b's link back")
    assert b.log_lines(r"event=catchup_reclaim sessions=\d+"), b.tail()
    st, js, _, _ = api("a", "PATCH", "/api/v1/devices/%s/twin/desired" % keep["device_id"],
                       {"kept": 1})
    assert st == 200, (st, js)
    assert desired_versions(ws_keep, js["version"])[-1] == js["version"]
    ws_keep.close()


def test_slow_node_reclaims_its_sessions():
    """Node b is stopped (SIGSTOP) past the node timeout: a's presence sweep ends its
    sessions in the store and forgets it. Once b goes on, its next heartbeat finds it
    forgotten and its live sessions are online again, without the devices
    reconnecting."""
    devs = [ST.provision("NODES-S%d" % i) for i in range(2)]
    socks = [connect(c, "b") for c in devs]

    def presence(c):
        return api("a", "GET", "/api/v1/devices/" + c["device_id"])[1]["presence"]
    assert [presence(c) for c in devs] == ["online"] * 2
    b = NODE["b"][1]
    b.proc.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: [presence(c) for c in devs] == ["offline"] * 2, 20,
                   "b's sessions ended by a's presence sweep")
        wait_until(lambda: psql(ST.db, "SELECT count(*) FROM nodes WHERE node_id = 'b'").strip()
                   == "0", 10, "b forgotten")
    finally:
        b.proc.send_signal(signal.SIGCONT)
    b.wait_log(r"event=node_rejoined sessions=2", 10)
    wait_until(lambda: [presence(c) for c in devs] == ["online"] * 2, 10,
               "b's sessions online again")
    # The same connections, still served by b.
    st, js, _, _ = api("a", "PATCH", "/api/v1/devices/%s/twin/desired" % devs[0]["device_id"],
                       {"slow": 1})
    assert st == 200, (st, js)
    assert desired_versions(socks[0], js["version"])[-1] == js["version"]
    for ws in socks:
        ws.close()


def test_dead_node_devices_go_offline():
    creds = ST.provision("NODES-D")
    ws = connect(creds, "b")
    st, dev, _, _ = api("a", "GET", "/api/v1/devices/" + creds["device_id"])
    assert dev["presence"] == "online", dev
    NODE["b"][1].proc.send_signal(signal.SIGKILL)
    NODE["b"][1].proc.wait()
    t0 = time.monotonic()
    wait_until(lambda: api("a", "GET", "/api/v1/devices/" + creds["device_id"])[1]["presence"]
               == "offline", 15, "the dead node's device offline")
    took = time.monotonic() - t0
    assert took >= 1.5, took  # not before the node timeout (3 s after its last beat)
    print("  dead node's device offline after %.1f s" % took)
    ws.s.close()


def test_agents_fail_over_through_the_proxy():
    """Real agents behind phyproxy with a route to two nodes (a and a new node c): a
    fleet patch made on a reaches every agent on both; c is SIGKILLed; its agents
    reconnect through the proxy to a and are online there; a second patch reaches
    every agent and each reports it applied (config_status): nothing acknowledged is
    lost."""
    start_node("c")
    port = phytest.free_port()
    ST.proxy_port = port
    p = ST.daemon([binary("phyproxy"), "--listen", "127.0.0.1:%d" % port,
                   "--route", "%s=127.0.0.1:%d,127.0.0.1:%d" % (HOST, NODE["a"][0], NODE["c"][0]),
                   "--allow", "portal-*.phystack.com:443", "--upstream-backoff-ms", "200"]
                  + ST.edge_proxy_flags(), "phyproxy-ac")
    p.wait_port(port)
    made = ST.bulk_agents(AGENTS, "fleet:failover", ["--reconnect-min", "1",
                                                     "--reconnect-max", "2",
                                                     "--status-interval", "1"])
    states = {c["serial"]: state for _, state, c in made}
    ids = {c["serial"]: c["device_id"] for _, _, c in made}
    serials = list(states)

    def nodes_of():
        rows = ST.query("SELECT session_node FROM devices WHERE online <> 0 AND device_id IN (%s)"
                        % ",".join("'%s'" % i for i in ids.values()))
        return sorted(r[0] for r in rows)
    wait_until(lambda: len(nodes_of()) == AGENTS, 60, "every agent online")
    on = nodes_of()
    assert "a" in on and "c" in on, on  # the proxy spread them

    def applied(version):
        return all((read_json(os.path.join(states[sn], "config.json")) or {}).get("v") == version
                   for sn in serials)
    st, js, _, _ = api("a", "PATCH", "/api/v1/twins/desired?tag=fleet:failover", {"v": 1})
    assert st == 200 and js["matched"] == AGENTS, (st, js)
    wait_until(lambda: applied(1), 30, "v=1 on every agent")

    NODE["c"][1].proc.send_signal(signal.SIGKILL)
    NODE["c"][1].proc.wait()
    t0 = time.monotonic()
    wait_until(lambda: nodes_of() == ["a"] * AGENTS, 60, "every agent back on a")
    print("  %d agents of c back on a in %.1f s" % (on.count("c"), time.monotonic() - t0))
    st, js, _, _ = api("a", "PATCH", "/api/v1/twins/desired?tag=fleet:failover", {"v": 2})
    assert st == 200 and js["matched"] == AGENTS, (st, js)
    wait_until(lambda: applied(2), 30, "v=2 on every agent")

    def reported():
        for dev in ids.values():
            st, d, _, _ = api("a", "GET", "/api/v1/devices/" + dev)
            cs = d["twin"]["reported"].get("config_status") or {}
            if cs.get("version") != 2:
                return False
        return True
    wait_until(reported, 30, "config_status version 2 reported by every agent")


if __name__ == "__main__":
    phytest.main()
