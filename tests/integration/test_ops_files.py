"""What an operator installs: `cmake --install` into a DESTDIR (binaries, console, man
pages, example configs, systemd units, sysusers), the installed hub finding its
console, man pages and packaged INI files and docs/config.md against every --help,
and the units under systemd-analyze verify/security where the tool exists."""

import json
import os
import re
import shutil
import ssl
import subprocess
import urllib.request

import phytest

OPTION = re.compile(r"^  (-h, --help|--[A-Za-z0-9][A-Za-z0-9-]*)((?: [A-Z]+)?)\s{2,}(\S.*)$")
DAEMONS = ("phyhub", "phyproxy", "phyagent")
PAGES = {"phyhub": "man8/phyhub.8", "phyproxy": "man8/phyproxy.8",
         "phyagent": "man8/phyagent.8", "phyctl": "man1/phyctl.1"}
NOT_KEYS = {"config", "help", "version"}

_install = {}


def options(*argv):
    """Option names (without dashes) of ARGV --help, in order."""
    out = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=30).stdout
    names = []
    for line in out.splitlines():
        m = OPTION.match(line)
        if m:
            names += [f.strip()[2:] for f in m.group(1).split(",") if f.strip().startswith("--")]
    assert names, argv
    return names


def cache_value(name):
    with open(os.path.join(phytest.build_dir(), "CMakeCache.txt")) as f:
        m = re.search(r"^%s:[A-Z]+=(.*)$" % re.escape(name), f.read(), re.M)
    assert m, name
    return m.group(1)


def installed():
    """Installs the build once into a DESTDIR; returns (destdir, prefix)."""
    if not _install:
        dest = phytest.tmpdir("install")
        r = subprocess.run(["cmake", "--install", phytest.build_dir()],
                           env=dict(os.environ, DESTDIR=dest), capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        _install.update(dest=dest, prefix=cache_value("CMAKE_INSTALL_PREFIX"))
    return _install["dest"], _install["prefix"]


def under(dest, path):
    return os.path.join(dest, path.lstrip("/"))


def test_install_tree():
    dest, prefix = installed()
    p = lambda *parts: under(dest, os.path.join(prefix, *parts))
    etc = "/etc" if prefix == "/usr" else os.path.join(prefix, "etc")
    units = "/lib/systemd/system" if prefix == "/usr" else os.path.join(prefix, "lib/systemd/system")
    for name in DAEMONS:
        assert os.access(p("sbin", name), os.X_OK), name
        assert os.path.isfile(under(dest, os.path.join(etc, "phystack", name + ".ini"))), name
        unit = under(dest, os.path.join(units, name + ".service"))
        with open(unit) as f:
            text = f.read()
        want = "ExecStart=%s/sbin/%s --config /etc/phystack/%s.ini" % (prefix, name, name)
        assert want in text, (unit, want)
        assert os.path.isfile(p("lib", "sysusers.d", name + ".conf")), name
    assert os.access(p("bin", "phyctl"), os.X_OK)
    for name, page in PAGES.items():
        assert os.path.isfile(p("share", "man", page)), page
    web = p("share", "phystack", "web")
    want_web = sorted(os.listdir(os.path.join(phytest.source_dir(), "web")))
    assert sorted(os.listdir(web)) == want_web, (os.listdir(web), want_web)
    r = subprocess.run([p("sbin", "phyhub"), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("phyhub "), r


def test_installed_hub_serves_its_console():
    dest, prefix = installed()
    d = phytest.tmpdir("installed-hub")
    pki = phytest.make_ca(d, ["localhost"])
    port = phytest.free_port()
    hub = phytest.Daemon([under(dest, os.path.join(prefix, "sbin", "phyhub")),
                          "--listen", "127.0.0.1:%d" % port, "--db", os.path.join(d, "hub.db"),
                          "--tls-cert", pki["cert"], "--tls-key", pki["key"], "--provisioning"],
                         "hub", d)
    with hub:
        m = hub.wait_log(r"event=started .*web_root=(\S+)", 20)
        web = os.path.realpath(under(dest, os.path.join(prefix, "share", "phystack", "web")))
        assert m.group(1).strip('"') == web, (m.group(1), web)
        ctx = ssl.create_default_context(cafile=pki["ca"])
        with urllib.request.urlopen("https://127.0.0.1:%d/" % port, context=ctx,
                                    timeout=10) as res:
            body = res.read()
        with open(os.path.join(web, "index.html"), "rb") as f:
            assert body == f.read()
        with urllib.request.urlopen("https://127.0.0.1:%d/readyz" % port, context=ctx,
                                    timeout=10) as res:
            assert json.loads(res.read()) == {"status": "ready", "region": "eu"}
        assert hub.stop() == 0


def test_man_pages_list_every_option():
    dest, prefix = installed()
    groff = shutil.which("groff")
    for name, page in PAGES.items():
        path = under(dest, os.path.join(prefix, "share", "man", page))
        with open(path) as f:
            text = f.read()
        opts = options(phytest.binary(name))
        if name == "phyhub":
            opts += options(phytest.binary(name), "admin")
        for opt in opts:
            assert "\\fB\\-\\-%s\\fR" % opt.replace("-", "\\-") in text, (page, opt)
        assert "@" not in re.sub(r"\S+@\S+", "", text), page
        if groff:  # lintian runs the same check
            r = subprocess.run([groff, "-man", "-ww", "-z", path], capture_output=True, text=True)
            assert r.returncode == 0 and r.stderr == "", (page, r.stderr)


def ini_keys(path):
    keys = []
    with open(path) as f:
        for line in f:
            m = re.match(r"^#?([a-z][a-z0-9-]*) = ", line)
            if m:
                keys.append(m.group(1))
    return keys


def test_packaged_configs_document_every_key():
    d = phytest.tmpdir("ini")
    for name in DAEMONS:
        path = os.path.join(phytest.source_dir(), "etc", name + ".ini")
        want = [o for o in options(phytest.binary(name)) if o not in NOT_KEYS]
        got = ini_keys(path)
        assert sorted(set(got)) == sorted(want), (name, set(want) ^ set(got))
        assert len(got) == len(set(got)), (name, "a key twice")
        # As shipped, and with every key uncommented, the binary reads the file: the
        # only complaint left is the stray argument after it.
        with open(path) as f:
            text = f.read()
        opened = os.path.join(d, name + ".ini")
        with open(opened, "w") as f:
            f.write(re.sub(r"^#([a-z][a-z0-9-]*) = ", r"\1 = ", text, flags=re.M))
        for ini in (path, opened):
            r = subprocess.run([phytest.binary(name), "--config", ini, "stray-argument"],
                               capture_output=True, text=True, timeout=30)
            assert "unexpected argument 'stray-argument'" in r.stderr, (ini, r.stderr)


def test_config_reference_lists_every_option():
    with open(os.path.join(phytest.source_dir(), "docs", "config.md")) as f:
        doc = f.read()
    sections = re.split(r"^## ", doc, flags=re.M)
    by_name = {s.split("\n", 1)[0].strip(): s for s in sections[1:]}
    for name, argv in (("phyhub", ["phyhub"]), ("phyhub admin", ["phyhub", "admin"]),
                       ("phyproxy", ["phyproxy"]), ("phyagent", ["phyagent"]),
                       ("phyctl", ["phyctl"])):
        top = name.split()[0]
        text = by_name[top]
        if name == "phyhub admin":
            text = text.split("### phyhub admin", 1)[1]
        elif name == "phyhub":
            text = text.split("### phyhub admin", 1)[0]
        rows = re.findall(r"^\| `(?:-h, )?--([a-z0-9-]+)`", text, re.M)
        want = options(phytest.binary(argv[0]), *argv[1:])
        assert sorted(rows) == sorted(want), (name, set(rows) ^ set(want))


def test_units_verify():
    tool = shutil.which("systemd-analyze")
    if not tool:
        print("SKIP: systemd-analyze is not installed (Debian package systemd)")
        return
    dest, prefix = installed()
    units = "/lib/systemd/system" if prefix == "/usr" else os.path.join(prefix, "lib/systemd/system")
    d = phytest.tmpdir("units")
    env = dict(os.environ, MANPATH=under(dest, os.path.join(prefix, "share", "man")),
               SYSTEMD_LOG_COLOR="0")
    for name in DAEMONS:
        with open(under(dest, os.path.join(units, name + ".service"))) as f:
            text = f.read()
        # verify checks that ExecStart is executable: point it at the DESTDIR copy.
        text = text.replace("ExecStart=%s/sbin/" % prefix,
                            "ExecStart=%s/sbin/" % under(dest, prefix))
        unit = os.path.join(d, name + ".service")
        with open(unit, "w") as f:
            f.write(text)
        r = subprocess.run([tool, "verify", unit], capture_output=True, text=True, env=env,
                           timeout=60)
        assert r.returncode == 0 and r.stderr.strip() == "", (name, r.stdout, r.stderr)
        r = subprocess.run([tool, "security", "--offline=true", unit], capture_output=True,
                           text=True, env=env, timeout=60)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
        assert r.returncode == 0 and m, (name, r.stdout[-500:], r.stderr)
        print("systemd-analyze security %s: exposure %s" % (name, m.group(1)))
        assert float(m.group(1)) <= 3.0, (name, m.group(1))


if __name__ == "__main__":
    phytest.main()
