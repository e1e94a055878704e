"""The Debian packages end to end, as an operator meets them (run as root by
`make test-package`; not part of `make test`: it installs into the machine).

Builds the four packages (scripts/build-deb.sh: debhelper, lintian without errors),
dpkg -i's them, checks what they installed (users from sysusers.d, man pages,
conffiles, units, --version), then follows the operator's steps with the packaged
configuration: `phyhub admin --config /etc/phystack/phyhub.ini` creates a tenant, a user
and a token; a certificate goes where phyhub.ini names it; the packaged binaries run by
hand (systemd is not PID 1 here) with their units' ExecStart= command line, as the
units' users, with only loopback listen addresses and routes added; a packaged phyagent
registers through the packaged phyproxy, phyctl claims its code, and the device comes
online. At the end everything it installed or made is removed again.

PHY_DEB_DIR=DIR uses debs built before instead of building them. Under `make test`
(PHY_PACKAGE_TEST_OPTIONAL=1) it skips, saying why, when it is not root, the packaging
tools are missing, or a phystack package or its files are already on the machine.
"""

import glob
import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import phytest  # noqa: E402

PACKAGES = ("phystack-hub", "phystack-proxy", "phystack-agent", "phystack-ctl")
USERS = ("phyhub", "phyproxy", "phyagent")
ETC = "/etc/phystack"
MADE = [ETC + "/phyhub.pem", ETC + "/phyhub.key", ETC + "/ca.pem"]
STATE = ("/var/lib/phyhub", "/var/lib/phyagent")
SERIAL = "PKG-TEST-1"
HOST = "portal-eu.phystack.com"

ctx = {"users_before": set(), "installed": False, "daemons": []}


def sh(*argv, check=True, stdin=None, env=None):
    r = subprocess.run([str(a) for a in argv], input=stdin, capture_output=True, text=True,
                       timeout=600, env=env)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s%s" % (" ".join(map(str, argv)), r.returncode,
                                                     r.stdout[-2000:], r.stderr[-2000:]))
    return r


def dpkg(*args, check=True):
    """dpkg ARGS, waiting (up to 5 minutes) while another apt or dpkg holds its lock."""
    deadline = time.monotonic() + 300
    while True:
        r = sh("dpkg", *args, check=False)
        if r.returncode == 0 or "lock" not in r.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    if check and r.returncode != 0:
        raise RuntimeError("dpkg %s failed (%d):\n%s%s" % (" ".join(args), r.returncode,
                                                           r.stdout[-2000:], r.stderr[-2000:]))
    return r


def package_installed(name):
    r = sh("dpkg-query", "-W", "-f=${Status}", name, check=False)
    return r.returncode == 0 and "install ok installed" in r.stdout


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def exec_start(unit):
    """The ExecStart= command line of a packaged unit, as argv."""
    with open("/lib/systemd/system/%s.service" % unit) as f:
        m = re.search(r"^ExecStart=(.+)$", f.read(), re.M)
    assert m, unit
    return shlex.split(m.group(1))


def as_user(user, argv):
    """argv run as the unit's User=/Group= (setpriv execs in place: signals reach it)."""
    return ["setpriv", "--reuid", user, "--regid", user, "--init-groups", "--"] + list(argv)


def refuse(why):
    """Stops before anything is touched: under make test (PHY_PACKAGE_TEST_OPTIONAL=1) a
    skip that says why, run by hand a failure."""
    if os.environ.get("PHY_PACKAGE_TEST_OPTIONAL") == "1":
        print("SKIP test_package: %s" % why)
        sys.exit(0)
    raise SystemExit("test_package: %s" % why)


def setup():
    if os.geteuid() != 0:
        refuse("it installs packages into this machine and must run as root")
    for tool in ("dpkg-buildpackage", "dh", "lintian", "setpriv"):
        if not shutil.which(tool):
            refuse("%s is missing (make deb-deps installs the packaging tools)" % tool)
    for p in PACKAGES:
        if package_installed(p):
            refuse("%s is installed on this machine already: not touching it" % p)
    for path in MADE + list(STATE):
        if os.path.exists(path):
            refuse("%s exists already: not touching it" % path)
    ctx["users_before"] = {u for u in USERS if user_exists(u)}
    ctx["armed"] = True  # from here on, teardown removes what the test made


def teardown():
    if not ctx.get("armed"):
        return
    for d in ctx["daemons"]:
        d.kill()
    if ctx["installed"]:
        dpkg("--purge", *PACKAGES, check=False)
    for path in MADE:
        if os.path.exists(path):
            os.unlink(path)
    for path in STATE:
        shutil.rmtree(path, ignore_errors=True)
    if os.path.isdir(ETC) and not os.listdir(ETC):
        os.rmdir(ETC)
    # Debian leaves system users behind on purge; the test removes the ones it made.
    for u in USERS:
        if u not in ctx["users_before"] and user_exists(u):
            sh("userdel", u, check=False)
            sh("groupdel", u, check=False)


def test_build_and_install():
    debs = os.environ.get("PHY_DEB_DIR")
    if not debs:
        debs = os.path.join(phytest.build_dir(), "deb")
        sh(os.path.join(phytest.source_dir(), "scripts", "build-deb.sh"),
           env=dict(os.environ, PHY_DEB_OUT=debs))
    files = sorted(f for f in glob.glob(os.path.join(debs, "phystack-*.deb"))
                   if "-dbgsym_" not in f)
    assert [os.path.basename(f).split("_")[0] for f in files] == sorted(PACKAGES), files
    for f in files:  # Depends comes from the shared libraries each binary links
        deps = sh("dpkg-deb", "-f", f, "Depends").stdout
        assert "libc6" in deps and "libssl3" in deps, (f, deps)
    ctx["installed"] = True
    dpkg("-i", *files)
    for p in PACKAGES:
        assert package_installed(p), p


def test_installed_files():
    for u in USERS:
        assert user_exists(u), "sysusers.d did not make user %s" % u
    for name, page in (("phyhub", "man8/phyhub.8.gz"), ("phyproxy", "man8/phyproxy.8.gz"),
                       ("phyagent", "man8/phyagent.8.gz"), ("phyctl", "man1/phyctl.1.gz")):
        assert os.path.isfile("/usr/share/man/" + page), page
        path = shutil.which(name)
        assert path == ("/usr/bin/" if name == "phyctl" else "/usr/sbin/") + name, path
        out = sh(path, "--version").stdout
        assert re.match(r"^%s \d+\.\d+\.\d+ \(git \S+\)$" % name, out.strip()), out
    conffiles = sh("dpkg-query", "-W", "-f=${Conffiles}\n", "phystack-hub").stdout
    assert "/etc/phystack/phyhub.ini" in conffiles, conffiles
    assert os.path.isfile("/usr/share/phystack/web/index.html")
    for unit in USERS:
        assert exec_start(unit)[:3] == ["/usr/sbin/" + unit, "--config",
                                        "/etc/phystack/%s.ini" % unit], exec_start(unit)


def test_provisioning_flow():
    d = phytest.tmpdir("package")
    pki = phytest.make_ca(d, [HOST, "localhost"])
    hub_port, proxy_port = phytest.free_port(), phytest.free_port()
    # The operator's steps: the certificate where phyhub.ini names it, readable by the
    # hub's group; the CA where phyagent.ini's example names it.
    shutil.copy(pki["cert"], ETC + "/phyhub.pem")
    shutil.copy(pki["key"], ETC + "/phyhub.key")
    shutil.chown(ETC + "/phyhub.key", "root", "phyhub")
    os.chmod(ETC + "/phyhub.key", 0o640)
    os.chmod(ETC + "/phyhub.pem", 0o644)
    shutil.copy(pki["ca"], ETC + "/ca.pem")
    os.chmod(ETC + "/ca.pem", 0o644)
    # What StateDirectory= makes under systemd.
    for user, path, mode in (("phyhub", STATE[0], 0o750), ("phyagent", STATE[1], 0o700)):
        os.mkdir(path, mode)
        shutil.chown(path, user, user)

    admin = as_user("phyhub", ["/usr/sbin/phyhub", "admin", "--config", ETC + "/phyhub.ini"])
    sh(*admin, "tenant-add", "acme")  # region: phyhub.ini's (eu)
    sh(*admin, "user-add", "acme", "alice", stdin="a long test password\n")
    token = sh(*admin, "token-add", "acme", "alice").stdout.strip()
    assert os.stat(STATE[0] + "/hub.db").st_uid == pwd.getpwnam("phyhub").pw_uid

    hub = phytest.Daemon(as_user("phyhub", exec_start("phyhub") + [
        "--listen", "127.0.0.1:%d" % hub_port, "--trusted-proxy", "127.0.0.1"]), "phyhub", d)
    ctx["daemons"].append(hub)
    hub.wait_port(hub_port, 20)
    m = hub.wait_log(r"event=started .*web_root=(\S+)", 10)
    assert m.group(1).strip('"') == "/usr/share/phystack/web", m.group(0)
    proxy = phytest.Daemon(as_user("phyproxy", exec_start("phyproxy") + [
        "--listen", "127.0.0.1:%d" % proxy_port,
        "--route", "%s=127.0.0.1:%d" % (HOST, hub_port)]), "phyproxy", d)
    ctx["daemons"].append(proxy)
    proxy.wait_port(proxy_port, 20)
    agent = phytest.Daemon(as_user("phyagent", exec_start("phyagent") + [
        "--serial", SERIAL, "--proxy", "127.0.0.1:%d" % proxy_port, "--ca", ETC + "/ca.pem",
        "--backoff-base-ms", "100", "--backoff-max", "1"]), "phyagent", d)
    ctx["daemons"].append(agent)

    code_file = STATE[1] + "/provisioning-code"
    phytest.wait_until(lambda: os.path.exists(code_file), 30, "the agent's code")
    with open(code_file) as f:
        code = f.read().split()[0]
    ctl = ["/usr/bin/phyctl", "--url", "https://127.0.0.1:%d" % hub_port, "--ca", pki["ca"]]
    env = dict(os.environ, PHY_TOKEN=token)
    sh(*ctl, "claim", "--code", code, "--name", "packaged", env=env)
    phytest.wait_until(lambda: os.path.exists(STATE[1] + "/credentials.json"), 30,
                       "credentials")
    st = os.stat(STATE[1] + "/credentials.json")
    assert st.st_mode & 0o777 == 0o600 and st.st_uid == pwd.getpwnam("phyagent").pw_uid

    def online():
        out = sh(*ctl, "--json", "devices", "list", env=env).stdout
        devs = json.loads(out)
        devs = devs.get("devices", devs) if isinstance(devs, dict) else devs
        return [x for x in devs if x.get("serial") == SERIAL and x.get("presence") == "online"]
    dev = phytest.wait_until(online, 30, "the device online")[0]
    # Its status names the packaged release.
    def status():
        out = sh(*ctl, "--json", "devices", "get", dev["device_id"], env=env).stdout
        return (json.loads(out).get("last_status") or {}).get("agent_version")
    version = sh("/usr/sbin/phyagent", "--version").stdout.split()[1]
    assert phytest.wait_until(status, 30, "a status report") == version
    for x in (agent, proxy, hub):
        assert x.stop() == 0, (x.name, x.tail())
    assert token not in hub.log() + proxy.log() + agent.log()


if __name__ == "__main__":
    phytest.main()
