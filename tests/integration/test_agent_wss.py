"""phyagent's connected life end to end: phyhub (eu, provisioning + device hub) +
phyproxy + phyagent + phyctl on loopback. Provisioning through the proxy, the WSS
session (twin, status, desired pushes into config.json and the --on-config hook,
reported config_status), restart catch-up, hub restart, replacement (4000), dead-hub
detection, SIGTERM, revocation (exit 3), --reprovision-on-revoke and the certificate
time floor. The raw WebSocket client of wsclient.py plays the second session."""

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
import wsclient  # noqa: E402
from phytest import binary, wait_until  # noqa: E402
from stack import HOST, Stack, read_json  # noqa: E402

ST = None   # the Stack of this file's run
S = {}      # the hook script and the first agent

HOOK = r"""#!/bin/sh
input=$(cat)
printf '%s\n' "$input" > "$(dirname "$0")/hook-input-$PHY_DEVICE_ID.json"
echo "applied version $PHY_CONFIG_VERSION"
case "$input" in *slow*) sleep 30;; esac
case "$input" in *fail*) echo "boom" >&2; exit 7;; esac
exit 0
"""


def setup():
    global ST
    ST = Stack("agent-wss", hub_flags=["--ping-interval", "1", "--ping-timeout", "4",
                                       "--header-timeout", "5"],
               timers=["--poll-interval", "1"], proxy_flags=["--idle-timeout", "30"])
    S["hook"] = os.path.join(ST.dir, "hook.sh")
    with open(S["hook"], "w") as f:
        f.write(HOOK)
    os.chmod(S["hook"], 0o755)


def teardown():
    if ST is not None:
        ST.stop()


def phyctl(*args):
    return ST.phyctl("--json", *args)


def device(dev_id):
    rc, out, err = phyctl("devices", "get", dev_id)
    assert rc == 0, err
    return json.loads(out)


def start_agent(serial, *extra):
    return ST.start_agent(serial, ["--code-rotation", "5", "--on-config", S["hook"],
                                   "--hook-timeout", "2", "--status-interval", "1",
                                   "--dead-after", "3", "--reconnect-min", "1",
                                   "--reconnect-max", "2"] + list(extra))


def provision(serial, *extra):
    """Starts an agent, claims it by serial, waits for its credentials."""
    agent, state = start_agent(serial, *extra)
    wait_until(lambda: os.path.exists(os.path.join(state, "provisioning-code")), 15,
               "provisioning code of " + serial)
    rc, out, err = phyctl("claim", "--serial", serial)
    assert rc == 0, err
    creds = wait_until(lambda: ST.credentials(state), 20, "credentials of " + serial)
    return agent, state, creds


def config_status(dev_id):
    return device(dev_id)["twin"]["reported"].get("config_status")


def wait_applied(dev_id, version, timeout=15):
    def check():
        cs = config_status(dev_id)
        return cs if cs and cs["version"] == version else None
    return wait_until(check, timeout, "config_status version %d" % version)


def twin_set(dev_id, *pairs):
    rc, out, err = phyctl("twin", "set", dev_id, *pairs)
    assert rc == 0, err
    return json.loads(out)["version"]


def ws_connect(creds):
    """Upgrades to /v1/hub through phyproxy with the device's credentials (a second
    session next to the agent's). Returns (status, wsclient.WS or None)."""
    status, _, ws = ST.ws_connect(creds)
    if status != 101:
        ws.s.close()
        return status, None
    assert ws.buf == b"", ws.buf
    return status, ws


# ---- tests ----

def test_provision_then_connect_and_report():
    agent, state, creds = provision("WSS-A1")
    S["a"] = {"agent": agent, "state": state, "creds": creds}
    dev = creds["device_id"]
    agent.wait_log(r"event=connected device_id=" + dev, 15)
    # The initial twin (desired {} version 0) is applied and reported.
    cs = wait_applied(dev, 0)
    assert cs["exit_code"] == 0 and cs["output"] == "applied version 0\n", cs
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", cs["applied_at"]), cs
    assert read_json(os.path.join(state, "config.json")) == {}

    def status():
        d = device(dev)
        return d if d["presence"] == "online" and d.get("last_status") else None
    d = wait_until(status, 10, "status report")
    st = d["last_status"]
    for key in ("uptime_s", "agent_version", "load", "mem_total_kb", "mem_available_kb",
                "disk_total_kb", "disk_free_kb", "addresses"):
        assert key in st, (key, st)
    assert len(st["load"]) == 3 and st["mem_total_kb"] > 0, st
    assert "127.0.0.1" not in st["addresses"], st
    # Status every --status-interval (1 s): it keeps coming.
    first = d["last_status_at"]
    wait_until(lambda: device(dev)["last_status_at"] != first, 10, "a later status")


def test_desired_change_reaches_config_and_hook():
    a = S["a"]
    dev = a["creds"]["device_id"]
    v = twin_set(dev, "color=blue", "volume=3")
    cs = wait_applied(dev, v)
    assert cs["exit_code"] == 0 and cs["output"] == "applied version %d\n" % v, cs
    assert read_json(os.path.join(a["state"], "config.json")) == {"color": "blue", "volume": 3}
    # The hook got the same config on stdin.
    assert read_json(os.path.join(ST.dir, "hook-input-%s.json" % dev)) == {
        "color": "blue", "volume": 3}
    st = os.stat(os.path.join(a["state"], "config.json"))
    assert stat.S_IMODE(st.st_mode) == 0o600  # desired settings may hold secrets
    # A failing hook: its exit code and stderr are reported.
    v = twin_set(dev, "mode=fail")
    cs = wait_applied(dev, v)
    assert cs["exit_code"] == 7 and cs["output"].endswith("boom\n"), cs
    # A hook over --hook-timeout is killed; the next change still gets through.
    v = twin_set(dev, "mode=slow")
    cs = wait_applied(dev, v)
    assert cs["exit_code"] == 137 and cs.get("timed_out") is True, cs
    v = twin_set(dev, "mode=fast")
    cs = wait_applied(dev, v)
    assert cs["exit_code"] == 0, cs
    assert read_json(os.path.join(a["state"], "config.json"))["mode"] == "fast"
    # Several changes in a row: the last one wins, in order.
    for i in range(5):
        v = twin_set(dev, "n=%d" % i)
    wait_applied(dev, v)
    assert read_json(os.path.join(a["state"], "config.json"))["n"] == 4


def test_sigterm_closes_cleanly():
    a = S["a"]
    assert a["agent"].stop() == 0, a["agent"].tail()
    a["agent"].wait_log(r"event=session_end reason=stop close_code=1000", 1)
    dev = a["creds"]["device_id"]
    # The session went through the proxy with the device ID as the identifier (the
    # proxy logs a tunnel when it ends).
    ST.proxy.wait_log(r"event=tunnel ident=%s .*outcome=ok" % dev, 5)
    wait_until(lambda: device(dev)["presence"] == "offline", 5, "offline after SIGTERM")


def test_change_while_stopped_is_applied_on_restart():
    a = S["a"]
    dev = a["creds"]["device_id"]
    v = twin_set(dev, "color=green", "volume=null")
    agent, _ = start_agent("WSS-A1")
    a["agent"] = agent
    agent.wait_log(r"event=already_provisioned", 10)
    cs = wait_applied(dev, v)
    assert cs["exit_code"] == 0, cs
    cfg = read_json(os.path.join(a["state"], "config.json"))
    assert cfg["color"] == "green" and "volume" not in cfg, cfg
    # Unchanged config on the next restart: the hook does not run again.
    assert agent.stop() == 0
    agent, _ = start_agent("WSS-A1", "--verbose")
    a["agent"] = agent
    agent.wait_log(r"event=config_unchanged version=%d" % v, 10)
    assert not agent.log_lines(r"event=hook_started"), agent.tail()


def test_hub_restart_reconnects():
    a = S["a"]
    dev = a["creds"]["device_id"]
    ST.hub.kill()
    a["agent"].wait_log(r"event=session_end", 10)
    a["agent"].wait_log(r"event=reconnect_backoff", 10)
    ST.start_hub()
    wait_until(lambda: len(a["agent"].log_lines(r"event=connected ")) >= 2, 15,
               "reconnect after the hub restart")
    v = twin_set(dev, "after=restart")
    wait_applied(dev, v)
    assert read_json(os.path.join(a["state"], "config.json"))["after"] == "restart"


def test_dead_hub_detected():
    a = S["a"]
    hub = ST.hub
    os.kill(hub.pid, signal.SIGSTOP)
    try:
        a["agent"].wait_log(r"event=hub_dead", 10)
    finally:
        os.kill(hub.pid, signal.SIGCONT)
    wait_until(lambda: len(a["agent"].log_lines(r"event=connected ")) >= 3, 20,
               "reconnect after the hub woke up")


def test_replaced_session_reconnects():
    a = S["a"]
    creds = a["creds"]
    before = len(a["agent"].log_lines(r"event=connected "))
    status, ws = ws_connect(creds)
    assert status == 101
    try:
        a["agent"].wait_log(r"event=replaced close_code=4000", 10)
        ws.send_frame(wsclient.OP_TEXT, b'{"type":"twin.get","id":"x1"}')
        # The agent comes back after its backoff and replaces us in turn (pings are
        # answered meanwhile; at most 10 s without a message, 15 s in all).
        deadline = time.monotonic() + 15
        code = None
        try:
            while True:
                ws.recv(min(10, deadline - time.monotonic()))
        except wsclient.Closed as e:
            code = e.code
        assert code == 4000, code
    finally:
        ws.s.close()
    wait_until(lambda: len(a["agent"].log_lines(r"event=connected ")) > before, 10,
               "agent reconnected")
    assert a["agent"].alive()


def test_revoke_exits_3():
    a = S["a"]
    dev = a["creds"]["device_id"]
    rc, out, err = phyctl("revoke", dev)
    assert rc == 0, err
    wait_until(lambda: not a["agent"].alive(), 10, "agent exit after revoke")
    assert a["agent"].stop() == 3, a["agent"].tail()
    a["agent"].wait_log(r"level=error .*event=revoked .*close_code=4001", 1)
    # Started again, it is refused at the upgrade (401) and exits 3 too.
    agent, _ = start_agent("WSS-A1")
    wait_until(lambda: not agent.alive(), 15, "agent exit on 401")
    assert agent.stop() == 3, agent.tail()
    agent.wait_log(r"level=error .*event=revoked .*status=401", 1)
    assert os.path.exists(os.path.join(a["state"], "credentials.json"))
    assert os.path.exists(os.path.join(a["state"], "config.json"))
    status, _ = ws_connect(a["creds"])
    assert status == 401


def test_reprovision_on_revoke():
    agent, state, creds = provision("WSS-B2", "--reprovision-on-revoke")
    dev = creds["device_id"]
    wait_applied(dev, 0)
    twin_set(dev, "keep=me")
    wait_until(lambda: (read_json(os.path.join(state, "config.json")) or {}).get("keep"), 10,
               "config before the reset")
    rc, out, err = phyctl("reset", dev)
    assert rc == 0, err
    agent.wait_log(r"event=reprovision", 10)
    wait_until(lambda: not os.path.exists(os.path.join(state, "credentials.json")), 5,
               "credentials deleted")
    assert read_json(os.path.join(state, "config.json")) == {"keep": "me"}
    wait_until(lambda: os.path.exists(os.path.join(state, "provisioning-code")), 15,
               "a new provisioning code")
    rc, out, err = phyctl("claim", "--serial", "WSS-B2")
    assert rc == 0, err
    new = wait_until(lambda: ST.credentials(state), 20, "new credentials")
    assert new["device_id"] != dev
    agent.wait_log(r"event=connected device_id=" + new["device_id"], 15)
    # The new device's empty desired config replaces the old one.
    wait_applied(new["device_id"], 0)
    assert read_json(os.path.join(state, "config.json")) == {}
    assert agent.stop() == 0


def test_provision_only_keeps_the_old_behaviour():
    agent, state = start_agent("WSS-C3", "--provision-only")
    wait_until(lambda: os.path.exists(os.path.join(state, "provisioning-code")), 15, "code")
    rc, out, err = phyctl("claim", "--serial", "WSS-C3")
    assert rc == 0, err
    wait_until(lambda: not agent.alive(), 20, "exit after provisioning")
    assert agent.stop() == 0, agent.tail()
    creds = ST.credentials(state)
    assert creds and not agent.log_lines(r"event=connected")
    agent, _ = start_agent("WSS-C3", "--provision-only")
    wait_until(lambda: not agent.alive(), 10, "exit when already provisioned")
    assert agent.stop() == 0
    agent.wait_log(r"event=already_provisioned", 1)


def test_usage_errors():
    res = subprocess.run([binary("phyagent"), "--serial", "X", "--state-dir", ST.dir,
                          "--proxy", "127.0.0.1:1", "--reconnect-min", "10",
                          "--reconnect-max", "5"], capture_output=True, text=True, timeout=10)
    assert res.returncode == 2, res
    res = subprocess.run([binary("phyagent"), "--help"], capture_output=True, text=True,
                         timeout=10)
    assert res.returncode == 0 and "--on-config" in res.stdout and "--dead-after" in res.stdout


def future_hub_cert():
    """A certificate for HOST valid from tomorrow on, signed by the test CA (openssl ca,
    because openssl x509 -req cannot set a start date)."""
    d = os.path.join(ST.dir, "future")
    os.makedirs(d)
    with open(os.path.join(d, "index.txt"), "w"):
        pass
    with open(os.path.join(d, "serial.txt"), "w") as f:
        f.write("1000\n")
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write("[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\n"
                "serial = serial.txt\ndefault_md = sha256\npolicy = p\nunique_subject = no\n"
                "[p]\ncommonName = supplied\n")
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:%s\n" % HOST)
    now = time.time()
    start = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(now + 86400))
    end = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(now + 86400 * 1.5))
    for args in (["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "key.pem"],
                 ["req", "-new", "-key", "key.pem", "-subj", "/CN=" + HOST, "-out", "csr.pem"],
                 ["ca", "-batch", "-config", "ca.cnf", "-cert", ST.pki["ca"], "-keyfile",
                  ST.pki["ca_key"], "-in", "csr.pem", "-out", "cert.pem", "-startdate", start,
                  "-enddate", end, "-extfile", "ext", "-notext"]):
        res = subprocess.run(["openssl"] + args, cwd=d, capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, res.stderr
    return os.path.join(d, "cert.pem"), os.path.join(d, "key.pem"), now + 86400


def test_certificate_time_floor():
    """Certificates are checked at max(clock, floor): a hub certificate that is valid
    only from tomorrow on is refused at today's time and accepted with a floor past its
    start (what the build time does for a device whose clock is behind)."""
    cert, key, valid_from = future_hub_cert()
    port = phytest.free_port()
    db, store_flags = ST.new_store("future-hub")
    hub = ST.daemon([binary("phyhub"), "--region", "eu", "--listen", "127.0.0.1:%d" % port,
                     "--db", db, "--tls-cert", cert, "--tls-key", key, "--provisioning"] +
                    store_flags, "phyhub-future")
    hub.wait_port(port)
    state = os.path.join(ST.dir, "agent-future")
    os.makedirs(state)
    with open(os.path.join(state, "credentials.json"), "w") as f:
        json.dump({"device_id": "dev_" + "a" * 26, "device_secret": "b" * 43, "tenant": "acme",
                   "region": "eu", "endpoint": HOST + ":443", "serial": "FUTURE"}, f)
    os.chmod(os.path.join(state, "credentials.json"), 0o600)
    base = [binary("phyagent"), "--serial", "FUTURE", "--state-dir", state,
            "--connect-addr", "127.0.0.1:%d" % port, "--ca", ST.pki["ca"],
            "--reconnect-min", "1", "--reconnect-max", "1"]
    agent = ST.daemon(base, "phyagent-future-1")
    agent.wait_log(r"event=connect_failed .*certificate is not yet valid", 10)
    assert agent.stop() == 0
    agent = ST.daemon(base + ["--cert-time-floor", str(int(valid_from) + 3600)],
                      "phyagent-future-2")
    # TLS passes; the hub does not know the device: 401 at the upgrade, exit 3.
    wait_until(lambda: not agent.alive(), 15, "agent exit")
    assert agent.stop() == 3, agent.tail()
    agent.wait_log(r"event=revoked .*status=401", 1)
    assert hub.stop() == 0


def test_no_secret_in_any_log():
    assert len(ST.secrets) >= 3
    leaked = ST.leaked_secrets()
    assert not leaked, "secrets in logs: %s" % leaked


def poll_peers(hub, serial_hint=None):
    """The client addresses (ip:port, i.e. one per TCP connection) of the hub's poll
    requests so far."""
    return [m.group(1) for m in (re.search(r"peer=(\S+) method=POST path=/v1/provisioning/poll ",
                                           line) for line in hub.log_lines(r"path=/v1/provisioning/poll "))
            if m]


def test_agent_keeps_one_connection_while_it_polls():
    """While it waits to be claimed the agent polls on one kept tunnel and TLS
    connection (before: a CONNECT and a handshake per poll); when the hub closed the
    idle connection in between, the next poll reconnects without an error."""
    st = Stack("agent-keep", timers=["--poll-interval", "1"], hub_flags=["--keepalive", "30"])
    try:
        before = len(poll_peers(st.hub))
        agent, state = st.start_agent("KEEP-1")
        wait_until(lambda: len(poll_peers(st.hub)) - before >= 6, 20, "six polls")
        peers = poll_peers(st.hub)[before:]
        assert len(set(peers)) == 1, peers  # one connection for every poll
        agent.stop()
    finally:
        st.stop()
    st = Stack("agent-keep2", timers=["--poll-interval", "2"], hub_flags=["--keepalive", "1"])
    try:
        agent, state = st.start_agent("KEEP-2")
        wait_until(lambda: len(poll_peers(st.hub)) >= 4, 30, "four polls")
        peers = poll_peers(st.hub)
        assert len(set(peers)) == len(peers), peers  # the hub closed each one while idle
        assert not agent.log_lines(r"event=request_failed"), agent.log_lines(r"request_failed")
        agent.stop()
    finally:
        st.stop()


def test_agent_honours_retry_after_of_a_full_hub():
    """A hub at its connection limit answers the device's upgrade 503 with
    Retry-After: 1; the agent waits at least that (spread up to twice as long) before
    it comes back, instead of its own shorter backoff, and connects once there is
    room."""
    st = Stack("agent-busy", timers=["--poll-interval", "1"])
    fillers = []
    try:
        agent, state = st.start_agent("BUSY-1", ["--reconnect-min", "1", "--reconnect-max", "1"])
        wait_until(lambda: st.claim(serial="BUSY-1")[0] == 201, 20, "the claim")
        wait_until(lambda: st.hub.log_lines(r"event=session_open "), 20, "the first session")
        # The agent comes back (same state) only once the limit is taken: were it
        # running, its reconnect could reach the new hub before the fillers.
        agent.stop()
        st.hub.kill()
        st.hub_flags += ["--max-connections", "2"]
        st.start_hub()
        for _ in range(2):  # the limit, taken by idle connections straight to the hub
            fillers.append(phytest.connect(st.hub_port))
        agent, _ = st.start_agent("BUSY-1", ["--reconnect-min", "1", "--reconnect-max", "1"])
        line = agent.wait_log(r"event=upgrade_refused status=503 retry_after_ms=1000", 20)
        backoff = agent.wait_log(r"event=reconnect_backoff delay_ms=\d+", 5)
        delays = [int(m) for m in re.findall(r"event=reconnect_backoff delay_ms=(\d+)",
                                             "\n".join(agent.log_lines()))]
        assert 1000 <= delays[-1] <= 2000, (line, backoff, delays[-1])
        for f in fillers:
            f.close()
        fillers = []
        wait_until(lambda: st.hub.log_lines(r"event=session_open "), 20, "the session back")
        agent.stop()
    finally:
        for f in fillers:
            f.close()
        st.stop()


if __name__ == "__main__":
    phytest.main()
