"""The console in a real browser: phyhub (eu, provisioning, serving web/) + phyproxy +
a phyagent on loopback, and tests/browser/console.js driving Debian's Chromium
headless through playwright-core. The script logs in, adds the agent's device by the
code the agent wrote into its state folder, watches it come online without reloading,
changes its desired configuration until the agent reports it applied, revokes it and
sees it go offline, reads the audit log, takes screenshots of every page (under
<build>/screenshots) and checks CSRF, tenant isolation and that injected markup is
shown as text. It also checks the __Host-phy_session cookie, Trusted Types in the CSP,
that the console's own refreshes carry X-Phy-Background: 1 and user actions do not,
malformed URL fragments, the 64-byte name limit, a failed logout (retry) and a login
as another tenant in a second tab. The settings page (the tenant's serial_claims
policy through the dialog, an API token created, shown once and revoked, the password
changed and changed back) and the warning before a claim by serial of an unattested
serial (who registered it: source address and agent) are covered too. Any console
error, page error, CSP violation or dialog fails it."""

import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
from phytest import build_dir, source_dir, wait_until  # noqa: E402
from stack import PASSWORD, Stack  # noqa: E402

CHROMIUM = os.environ.get("PHY_CHROMIUM", "/usr/bin/chromium")
WARN_SERIAL, WARN_SOURCE, WARN_AGENT = "WRN-5", "127.0.0.62", "phyagent/0.9.1 (test bench)"
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
    ST.add_user("globex", "mallory")  # the account whose failed logins lock it out
    ST.secrets.add(PASSWORD.strip())
    ST.start()
    S["hook"] = os.path.join(ST.dir, "hook.sh")
    with open(S["hook"], "w") as f:
        f.write(HOOK)
    os.chmod(S["hook"], 0o755)


def teardown():
    if ST is not None:
        ST.stop()


def node_dir():
    d = os.path.join(source_dir(), "tests", "browser")
    assert os.path.isdir(os.path.join(d, "node_modules", "playwright-core")), \
        "run `make test` (it installs tests/browser with npm ci)"
    assert os.access(CHROMIUM, os.X_OK), "%s missing: run `make test` (installs chromium)" % CHROMIUM
    return d


def run_node(env, limit, stack):
    """Runs console.js with env, echoing its output; fails unless it prints OK."""
    proc = subprocess.Popen(["node", os.path.join(node_dir(), "console.js")], env=env,
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
        rc = proc.wait(limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("console.js ran over %d s" % limit)
    finally:
        t.join(5)
    assert rc == 0, "console.js failed (exit %d); hub log tail:\n%s" % (rc, stack.hub.tail(40))
    assert any(l.startswith("OK ") for l in lines), "console.js did not finish"


def test_console_in_chromium():

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
    # A serial claimed by serial after the console's warning: it registered through the
    # proxy from its own address with its agent's name. And one claimed while the tenant
    # takes attested serials only (409 code_required).
    st, js, _, _ = ST.request("POST", "/v1/provisioning/register", {"serial": WARN_SERIAL},
                              ident="sn_" + WARN_SERIAL, source=WARN_SOURCE,
                              headers={"User-Agent": WARN_AGENT})
    assert st == 201, (st, js)
    ST.secrets.add(js["poll_token"])
    ST.register("PLN-8")

    shots = os.path.join(build_dir(), "screenshots")
    os.makedirs(shots, exist_ok=True)
    env = dict(os.environ,
               HUB_URL="https://127.0.0.1:%d" % ST.hub_port,
               TENANT="acme", USER="alice", PASSWORD=PASSWORD.strip(),
               TENANT_B="globex", USER_B="bob", PASSWORD_B=PASSWORD.strip(),
               AGENT_STATE=state, AGENT_SERIAL="BRW-1", XSS_SERIAL="XSS-7",
               DUP_SERIAL="DUP-9", WARN_SERIAL=WARN_SERIAL, WARN_SOURCE=WARN_SOURCE,
               WARN_AGENT=WARN_AGENT, PLAIN_SERIAL="PLN-8", SHOT_DIR=shots, CHROMIUM=CHROMIUM)
    run_node(env, 240, ST)

    # The revoke in the browser reached the agent: close 4001 makes it exit 3.
    assert agent.proc.wait(20) == 3, agent.tail()
    agent.wait_log(r"event=revoked", 1)
    for name in ("login", "devices", "add-device", "add-device-result", "device", "audit",
                 "devices-phone", "identity-changed", "logout-failed", "settings", "settings-phone",
                 "claim-warning", "claim-warning-phone"):
        path = os.path.join(shots, name + ".png")
        assert os.path.getsize(path) > 1000, path
    assert not ST.leaked_secrets(), ST.leaked_secrets()



def test_open_page_idles_out():
    """A hub with --session-idle 8 and an agent reporting its status every second: the
    device page, left open, keeps reloading its status history in the background
    (X-Phy-Background: 1) and still shows the login page once the session idled out.
    (Were those reloads uses, the page would stay logged in: the hub records a use
    every idle/2 and the event stream reconnects within the idle time.)"""
    idle = 8
    st = Stack("browser_idle", hub_flags=["--session-idle", str(idle)],
               timers=["--poll-interval", "1"])
    try:
        st.secrets.add(PASSWORD.strip())
        agent, state = st.start_agent("IDL-1", ["--status-interval", "1", "--reconnect-min", "1",
                                                "--reconnect-max", "2"])
        wait_until(lambda: os.path.exists(os.path.join(state, "provisioning-code")), 15,
                   "the agent's provisioning code")
        s, dev, _, _ = st.claim(serial="IDL-1", name="Left open")
        assert s == 201, (s, dev)
        dev_id = dev["device_id"]

        def online():
            s, js, _, _ = st.api("GET", "/api/v1/devices/" + dev_id)
            return s == 200 and js["presence"] == "online" and js.get("last_status")
        wait_until(online, 20, "the agent online with a status report")
        shots = os.path.join(build_dir(), "screenshots")
        os.makedirs(shots, exist_ok=True)
        env = dict(os.environ, MODE="idle", HUB_URL="https://127.0.0.1:%d" % st.hub_port,
                   TENANT="acme", USER="alice", PASSWORD=PASSWORD.strip(), IDLE_DEVICE=dev_id,
                   IDLE_SECONDS=str(idle), SHOT_DIR=shots, CHROMIUM=CHROMIUM)
        t0 = time.monotonic()
        run_node(env, 90, st)
        assert time.monotonic() - t0 >= idle, "the session ended too early"
        assert agent.alive(), agent.tail()
        assert not st.leaked_secrets(), st.leaked_secrets()
    finally:
        st.stop()


if __name__ == "__main__":
    phytest.main()
