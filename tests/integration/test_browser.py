"""The console in a real browser: phyhub (eu, provisioning, serving web/) + phyproxy +
a phyagent on loopback, and tests/browser/console.js driving Debian's Chromium
headless through playwright-core. The script logs in, adds the agent's device by the
code the agent wrote into its state folder, watches it come online without reloading,
changes its desired configuration until the agent reports it applied, revokes it and
sees it go offline, reads the audit log, takes screenshots of every page (under
<build>/screenshots) and checks CSRF, tenant isolation and that injected markup is
shown as text. Any console error, page error or dialog fails it."""

import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
from phytest import build_dir, source_dir, wait_until  # noqa: E402
from stack import PASSWORD, Stack  # noqa: E402

CHROMIUM = os.environ.get("PHY_CHROMIUM", "/usr/bin/chromium")
ST = None
S = {}

# The agent's --on-config hook: its output lands in the reported twin
# (config_status.output), markup included, which the console must show as text.
HOOK = r"""#!/bin/sh
cat > /dev/null
echo "applied version $PHY_CONFIG_VERSION <script>alert('reported')</script><img src=x onerror=alert(2)>"
exit 0
"""


def setup():
    global ST
    ST = Stack("browser", hub_flags=["--header-timeout", "5"], timers=["--poll-interval", "1"],
               start=False)
    ST.add_tenant("globex")
    ST.add_user("globex", "bob")
    ST.secrets.add(PASSWORD.strip())
    ST.start()
    S["hook"] = os.path.join(ST.dir, "hook.sh")
    with open(S["hook"], "w") as f:
        f.write(HOOK)
    os.chmod(S["hook"], 0o755)


def teardown():
    if ST is not None:
        ST.stop()


def test_console_in_chromium():
    node_dir = os.path.join(source_dir(), "tests", "browser")
    assert os.path.isdir(os.path.join(node_dir, "node_modules", "playwright-core")), \
        "run `make test` (it installs tests/browser with npm ci)"
    assert os.access(CHROMIUM, os.X_OK), "%s missing: run `make test` (installs chromium)" % CHROMIUM

    agent, state = ST.start_agent("BRW-1", ["--on-config", S["hook"], "--status-interval", "2",
                                            "--hook-timeout", "5", "--reconnect-min", "1",
                                            "--reconnect-max", "2"])
    wait_until(lambda: os.path.exists(os.path.join(state, "provisioning-code")), 15,
               "the agent's provisioning code")
    # A device that registered but is never picked up (claimed by serial in the UI with
    # a hostile name), and a serial two registrations share (serial_in_use).
    # Another device of the tenant that picked up its credentials but never connects.
    ST.provision("GW-2", name="Warehouse gateway", tags={"site": "hamburg"})
    ST.register("XSS-7")
    ST.register("DUP-9")
    ST.register("DUP-9")

    shots = os.path.join(build_dir(), "screenshots")
    os.makedirs(shots, exist_ok=True)
    env = dict(os.environ,
               HUB_URL="https://127.0.0.1:%d" % ST.hub_port,
               TENANT="acme", USER="alice", PASSWORD=PASSWORD.strip(),
               TENANT_B="globex", USER_B="bob", PASSWORD_B=PASSWORD.strip(),
               AGENT_STATE=state, AGENT_SERIAL="BRW-1", XSS_SERIAL="XSS-7",
               DUP_SERIAL="DUP-9", SHOT_DIR=shots, CHROMIUM=CHROMIUM)
    proc = subprocess.Popen(["node", os.path.join(node_dir, "console.js")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []

    def pump():
        for line in proc.stdout:
            lines.append(line)
            sys.stdout.write("  node| " + line)
            sys.stdout.flush()
    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        rc = proc.wait(240)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("console.js ran over 240 s")
    finally:
        t.join(5)
    assert rc == 0, "console.js failed (exit %d); hub log tail:\n%s" % (rc, ST.hub.tail(40))
    assert any(l.startswith("OK ") for l in lines), "console.js did not finish"

    # The revoke in the browser reached the agent: close 4001 makes it exit 3.
    assert agent.proc.wait(20) == 3, agent.tail()
    agent.wait_log(r"event=revoked", 1)
    for name in ("login", "devices", "add-device", "add-device-result", "device", "audit",
                 "devices-phone"):
        path = os.path.join(shots, name + ".png")
        assert os.path.getsize(path) > 1000, path
    assert not ST.leaked_secrets(), ST.leaked_secrets()


if __name__ == "__main__":
    phytest.main()
