"""A client we did not write — Node's ws package — through phyproxy with
Proxy-Authorization: authenticates, gets its twin and receives a pushed
desired.patch (tests/node/ws_device.js)."""

import json
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
from phytest import source_dir, wait_until  # noqa: E402
from stack import HOST, Stack  # noqa: E402

T = {}


def setup():
    T["st"] = Stack("node-ws")


def teardown():
    if "st" in T:
        T["st"].stop()


def test_node_ws_device_through_proxy():
    st = T["st"]
    creds = st.provision("NODE-1")
    node_dir = os.path.join(source_dir(), "tests", "node")
    assert os.path.isdir(os.path.join(node_dir, "node_modules", "ws")), \
        "run `make test` (it installs tests/node with npm ci)"
    env = dict(os.environ, PROXY_HOST="127.0.0.1", PROXY_PORT=str(st.proxy_port),
               HUB_HOST=HOST, DEVICE_ID=creds["device_id"],
               DEVICE_SECRET=creds["device_secret"], PROXY_TOKEN=creds["proxy_token"],
               CA_FILE=st.pki["ca"])
    proc = subprocess.Popen(["node", os.path.join(node_dir, "ws_device.js")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    t = threading.Thread(target=lambda: [lines.append(l.strip()) for l in proc.stdout],
                         daemon=True)
    t.start()
    try:
        wait_until(lambda: any(l.startswith("RECV") and '"twin"' in l for l in lines), 15,
                   "the twin at the Node client")
        assert "OPEN phyhub.v1" in lines
        twin = json.loads(next(l for l in lines if '"twin"' in l)[5:])
        assert twin["id"] == "node-1" and twin["twin"]["device_id"] == creds["device_id"]
        s, js, _, _ = st.api("PATCH", "/api/v1/devices/%s/twin/desired" % creds["device_id"],
                             {"brightness": 70})
        assert s == 200, (s, js)
        assert proc.wait(15) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    t.join(5)
    push = json.loads(next(l for l in lines if "desired.patch" in l)[5:])
    assert push == {"type": "desired.patch", "version": js["version"],
                    "patch": {"brightness": 70}}, push
    assert "CLOSE 1000" in lines
    # The proxy logged the tunnel under the device ID.
    st.proxy.wait_log(r"event=tunnel ident=%s " % creds["device_id"], 5)


def test_ws_through_https_proxy_agent():
    """A Node application's usual way through an HTTP proxy: https-proxy-agent, the
    device ID and its proxy token as the proxy URL's user info."""
    st = T["st"]
    creds = st.provision("NODE-2")
    node_dir = os.path.join(source_dir(), "tests", "node")
    assert os.path.isdir(os.path.join(node_dir, "node_modules", "https-proxy-agent")), \
        "run `make test` (it installs tests/node with npm ci)"
    env = dict(os.environ, PROXY_HOST="127.0.0.1", PROXY_PORT=str(st.proxy_port),
               HUB_HOST=HOST, DEVICE_ID=creds["device_id"],
               DEVICE_SECRET=creds["device_secret"], PROXY_TOKEN=creds["proxy_token"],
               CA_FILE=st.pki["ca"])
    r = subprocess.run(["node", os.path.join(node_dir, "proxy_agent_device.js")], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "OPEN phyhub.v1" in r.stdout and ("TWIN 7 %s" % creds["device_id"]) in r.stdout, \
        r.stdout
    st.proxy.wait_log(r"event=tunnel ident=%s .* auth=token" % creds["device_id"], 5)


if __name__ == "__main__":
    phytest.main()
