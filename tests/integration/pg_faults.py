"""PostgreSQL faults (docs/store.md): the hub's database stops while a device is
connected, or the hub's connections are killed. The device session stays up, API and
provisioning calls answer 503 with Retry-After (no hang), the hub serves again by itself
once the database is back, and nothing acknowledged before the outage is lost.

Runs its own PostgreSQL cluster (the shared one of the other tests must not stop)."""

import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
from phytest import wait_until  # noqa: E402
from stack import Stack  # noqa: E402

PGTEST = os.path.join(os.environ.get("PHY_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "scripts", "pgtest.sh")
T = {}


def pg(*args):
    return subprocess.run([PGTEST] + list(args), check=True, capture_output=True, text=True,
                          timeout=120).stdout


def setup():
    base = os.path.join(os.environ.get("PHY_BUILD_DIR", tempfile.gettempdir()), "integration-tmp")
    os.makedirs(base, exist_ok=True)
    T["pgdir"] = tempfile.mkdtemp(prefix="pg-faults-", dir=base)
    pg("start", T["pgdir"], str(phytest.free_port()))
    with open(os.path.join(T["pgdir"], "url")) as f:
        os.environ["PHY_TEST_PG_URL"] = f.read().strip()
    os.environ["PHY_TEST_STORE"] = "postgresql"
    # A 1 s heartbeat: the node link's connect deadline is twice that.
    T["st"] = Stack("pg-faults", hub_flags=["--node-heartbeat", "1", "--node-timeout", "3"])


def teardown():
    if "st" in T:
        T["st"].stop()
    if "pgdir" in T:
        pg("stop", T["pgdir"])


def timed(fn):
    t0 = time.monotonic()
    res = fn()
    return res, time.monotonic() - t0


def test_database_stopped_and_back():
    st = T["st"]
    creds = st.provision("PGF-1")
    dev = creds["device_id"]
    status, _, ws = st.ws_connect(creds)
    assert status == 101, status
    s, js, _, _ = st.api("PATCH", "/api/v1/devices/%s/twin/desired" % dev, {"mode": "before"})
    assert s == 200, (s, js)
    acked = js["version"]
    assert ws.recv_type("desired.patch", timeout=10)["patch"] == {"mode": "before"}

    pg("pause", T["pgdir"])
    try:
        (res, took) = timed(lambda: st.api("GET", "/api/v1/devices"))
        assert res[0] == 503 and res[1]["error"] == "store_unavailable", res[:2]
        assert res[3].get("retry-after") == "1", res[3]
        assert took < 10, took
        (res, took) = timed(lambda: st.request("POST", "/v1/provisioning/register",
                                               {"serial": "PGF-2"}, ident="sn_PGF-2"))
        assert res[0] == 503, res[:2]
        assert took < 10, took
        # Not ready (the store does not answer), yet alive.
        (res, took) = timed(lambda: st.request("GET", "/readyz", via_proxy=False))
        assert res[0] == 503 and res[3].get("retry-after") == "1", res[:2]
        assert took < 10, took
        assert st.request("GET", "/healthz", via_proxy=False)[0] == 200
        # The device session is still up and answered: a report it cannot store now is
        # refused with an error message, not a closed connection.
        ws.send_json({"type": "reported.patch", "id": "r1", "patch": {"during": 1}})
        msg = ws.recv_type("error", timeout=10)
        assert msg.get("id") == "r1", msg
    finally:
        pg("resume", T["pgdir"])

    wait_until(lambda: st.api("GET", "/api/v1/devices")[0] == 200, 15, "the API to serve again")
    res = st.request("GET", "/readyz", via_proxy=False)
    assert res[0] == 200 and res[1]["status"] == "ready", res[:2]
    s, js, _, _ = st.api("GET", "/api/v1/devices/" + dev)
    assert s == 200, (s, js)
    assert js["twin"]["desired"] == {"mode": "before"}, js
    assert js["twin"]["desired_version"] == acked, js
    # The same session goes on: a change now reaches it.
    s, js, _, _ = st.api("PATCH", "/api/v1/devices/%s/twin/desired" % dev, {"mode": "after"})
    assert s == 200, (s, js)
    assert ws.recv_type("desired.patch", timeout=10)["patch"] == {"mode": "after"}
    ws.close()


def test_connections_killed():
    st = T["st"]
    assert st.api("GET", "/api/v1/devices")[0] == 200
    killed = int(pg("terminate", T["pgdir"]).strip())
    assert killed >= 1, killed
    # A connection found dead is replaced within the same request.
    for _ in range(5):
        s, js, _, _ = st.api("GET", "/api/v1/devices")
        assert s == 200, (s, js)
    creds = st.provision("PGF-3")
    assert creds["device_id"].startswith("dev_")


def psql(sql):
    with open(os.path.join(T["pgdir"], "url")) as f:
        url = f.read().strip()
    return subprocess.run(["psql", "-X", "-q", "-At", url + "/postgres", "-c", sql], check=True,
                          capture_output=True, text=True, timeout=30).stdout.strip()


def postmaster_pid():
    home = T["pgdir"]
    if os.path.exists(os.path.join(home, "home")):
        with open(os.path.join(home, "home")) as f:
            home = f.read().strip()
    with open(os.path.join(home, "data", "postmaster.pid")) as f:
        return int(f.readline())


def test_node_link_gives_up_on_a_silent_server():
    # The node link's connection dies and the server accepts the new one (the kernel
    # completes the TCP handshake) but never answers: a stopped postmaster. libpq's
    # connect_timeout does not hold for an asynchronous connect; the link's own
    # deadline gives up and tries again, and the link is back once the server is.
    st = T["st"]
    backend = int(psql("SELECT pid FROM pg_stat_activity WHERE application_name = "
                       "'phyhub-nodelink'"))
    before = len(st.hub.log_lines(r"nodelink_ready"))
    pm = postmaster_pid()
    os.kill(pm, signal.SIGSTOP)
    try:
        os.kill(backend, signal.SIGTERM)
        st.hub.wait_log(r"nodelink_connect_timeout after_ms=2000", 20)
    finally:
        os.kill(pm, signal.SIGCONT)
    wait_until(lambda: len(st.hub.log_lines(r"nodelink_ready")) > before, 30,
               "the node link back")
    assert st.api("GET", "/api/v1/devices")[0] == 200


if __name__ == "__main__":
    phytest.main()
