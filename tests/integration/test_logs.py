"""--log-format json on every daemon: each stderr line is one JSON object with the
logfmt line's keys (ts, level, prog, event, ...) as strings; a bad value is a usage
error. (logfmt, the default, is what every other test reads.)"""

import json
import os
import subprocess

import phytest


def json_lines(daemon):
    out = []
    for line in daemon.log().splitlines():
        obj = json.loads(line)  # every line, not just some
        assert isinstance(obj, dict) and all(isinstance(v, str) for v in obj.values()), line
        assert list(obj)[:4] == ["ts", "level", "prog", "event"], line
        out.append(obj)
    return out


def test_hub_json():
    d = phytest.tmpdir("logs-hub")
    pki = phytest.make_ca(d, ["localhost"])
    port = phytest.free_port()
    hub = phytest.Daemon([phytest.binary("phyhub"), "--listen", "127.0.0.1:%d" % port,
                          "--db", os.path.join(d, "hub.db"), "--tls-cert", pki["cert"],
                          "--tls-key", pki["key"], "--provisioning", "--log-format", "json",
                          "--web-root", "/nonexistent dir"], "hub", d)
    with hub:
        hub.wait_log(r'"event":"started"', 20)
        r = subprocess.run(["curl", "-sS", "--cacert", pki["ca"],
                            "https://127.0.0.1:%d/healthz" % port], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        phytest.wait_until(lambda: any(o["event"] == "http" for o in json_lines(hub)), 10,
                           "an access log line")
        assert hub.stop() == 0
    lines = json_lines(hub)
    started = [o for o in lines if o["event"] == "started"][0]
    assert started["prog"] == "phyhub" and started["level"] == "info", started
    assert started["web_root"] == "/nonexistent dir", started  # a quoted value, unquoted
    req = [o for o in lines if o["event"] == "http"][0]
    assert req["path"] == "/healthz" and req["status"] == "200", req


def test_proxy_and_agent_json():
    d = phytest.tmpdir("logs-edge")
    port = phytest.free_port()
    proxy = phytest.Daemon([phytest.binary("phyproxy"), "--listen", "127.0.0.1:%d" % port,
                            "--log-format", "json"], "proxy", d)
    agent = phytest.Daemon([phytest.binary("phyagent"), "--serial", "LOG-1", "--state-dir",
                            os.path.join(d, "agent"), "--connect-addr",
                            "127.0.0.1:%d" % phytest.free_port(), "--log-format", "json",
                            "--backoff-max", "1"], "agent", d)
    with proxy, agent:
        proxy.wait_log(r'"event":"', 20)
        agent.wait_log(r'"event":"start"', 20)
        assert proxy.stop() == 0
        agent.stop()
    assert json_lines(proxy)[0]["prog"] == "phyproxy"
    start = [o for o in json_lines(agent) if o["event"] == "start"][0]
    assert start["serial"] == "LOG-1" and start["prog"] == "phyagent", start


def test_bad_value():
    d = phytest.tmpdir("logs-bad")
    r = subprocess.run([phytest.binary("phyhub"), "--db", os.path.join(d, "x.db"),
                        "--tls-cert", "x", "--tls-key", "y", "--log-format", "xml"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--log-format: expected logfmt or json" in r.stderr, r
    r = subprocess.run([phytest.binary("phyproxy"), "--listen", "127.0.0.1:1", "--log-format",
                        "xml"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "--log-format: expected logfmt or json" in r.stderr, r
    r = subprocess.run([phytest.binary("phyagent"), "--serial", "S", "--state-dir", d,
                        "--connect-addr", "127.0.0.1:1", "--log-format", "xml"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--log-format: expected logfmt or json" in r.stderr, r


if __name__ == "__main__":
    phytest.main()
