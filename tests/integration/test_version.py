"""--version on every binary: the release of CMakeLists.txt and the git description of
the configured tree; --help lists it; phyhub admin reads the daemon's --config file."""

import os
import re
import subprocess

import phytest

BINARIES = ("phyhub", "phyproxy", "phyagent", "phyctl")


def project_version():
    with open(os.path.join(phytest.source_dir(), "CMakeLists.txt")) as f:
        m = re.search(r"project\(phystack VERSION (\d+\.\d+\.\d+)", f.read())
    assert m, "CMakeLists.txt names no project VERSION"
    return m.group(1)


def generated_describe():
    path = os.path.join(phytest.build_dir(), "generated", "phy", "version.h")
    with open(path) as f:
        m = re.search(r'#define PHY_GIT_DESCRIBE "([^"]*)"', f.read())
    assert m, path
    return m.group(1)


def run(*args, stdin=None):
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=30)


def test_version_everywhere():
    want_version, want_describe = project_version(), generated_describe()
    assert want_describe, "empty git description"
    for name in BINARIES:
        r = run(phytest.binary(name), "--version")
        assert r.returncode == 0, (name, r.returncode, r.stderr)
        assert r.stdout == "%s %s (git %s)\n" % (name, want_version, want_describe), r.stdout
        assert r.stderr == "", r.stderr


def test_version_wins_over_other_options():
    # Like --help: printed before any option is checked, whatever else is given.
    r = run(phytest.binary("phyhub"), "--listen", "nonsense", "--version")
    assert r.returncode == 0 and r.stdout.startswith("phyhub "), r
    r = run(phytest.binary("phyctl"), "--url", "https://127.0.0.1:1", "--version")
    assert r.returncode == 0 and r.stdout.startswith("phyctl "), r
    # After "--" it is an argument, not the flag.
    r = run(phytest.binary("phyagent"), "--", "--version")
    assert r.returncode == 2, r


def test_help_lists_version():
    for name in BINARIES:
        r = run(phytest.binary(name), "--help")
        assert r.returncode == 0, (name, r.stderr)
        assert re.search(r"^  --version +print the version", r.stdout, re.M), (name, r.stdout)


def test_admin_reads_the_daemons_config():
    # The packaged /etc/phystack/phyhub.ini holds hub keys admin does not have; admin takes
    # its db (and region, the default of tenant-add --region) and skips the rest.
    d = phytest.tmpdir("version")
    db = os.path.join(d, "hub.db")
    ini = os.path.join(d, "phyhub.ini")
    with open(ini, "w") as f:
        f.write("[phyhub]\nregion = au\ndb = %s\nlisten = 127.0.0.1:1\ncode-ttl = 60\n" % db)
    r = run(phytest.binary("phyhub"), "admin", "--config", ini, "tenant-add", "koala")
    assert r.returncode == 0, r.stderr
    r = run("python3", "-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1])"
            ".execute('select region from tenants where name=?', ('koala',)).fetchone()[0])", db)
    assert r.stdout.strip() == "au", r
    # A bad value of a key admin knows is still refused, with the file and line.
    with open(ini, "a") as f:
        f.write("expires-days = many\n")
    r = run(phytest.binary("phyhub"), "admin", "--config", ini, "token-list", "koala")
    assert r.returncode == 2 and "phyhub.ini:6" in r.stderr, r
    # The daemon itself still refuses a key it does not know.
    with open(ini, "w") as f:
        f.write("db = %s\nexpires-days = 3\n" % db)
    r = run(phytest.binary("phyhub"), "--config", ini)
    assert r.returncode == 2 and "unknown key 'expires-days'" in r.stderr, r


if __name__ == "__main__":
    phytest.main()
