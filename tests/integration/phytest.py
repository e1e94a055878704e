"""Shared harness for PhyStack integration tests (Python 3 standard library only).

Integration tests run the real daemons on 127.0.0.1 and drive them with real clients
(curl, openssl, raw sockets). A test file imports this module, defines plain
functions named ``test_*`` and ends with::

    if __name__ == "__main__":
        phytest.main()

``main()`` runs every ``test_*`` function of ``__main__`` in definition order (or the
names given on the command line), prints one PASS/FAIL line per test and then
"N passed, N failed", and exits non-zero when anything failed. Optional module-level
``setup()`` and ``teardown()`` functions run before the first and after the last test
(teardown always runs). A test fails by raising (plain ``assert`` is fine).

Environment:
  PHY_BUILD_DIR   where the binaries are (default <source>/build/test)
  PHY_SOURCE_DIR  the repository (default: two levels above this file)
  PHY_KEEP_TMP=1  keep temporary directories of passing runs

Waiting is always on a condition with a deadline (``wait_until``,
``Daemon.wait_port``, ``Daemon.wait_log``), never a fixed long sleep.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

__all__ = [
    "source_dir", "build_dir", "binary", "tmpdir", "free_port", "wait_until",
    "make_ca", "Daemon", "connect", "recv_until", "recv_http_head", "recv_all",
    "parse_status", "main",
]

_tmpdirs = []


def source_dir():
    """The repository root: $PHY_SOURCE_DIR or two levels above this file."""
    env = os.environ.get("PHY_SOURCE_DIR")
    if env:
        return os.path.abspath(env)
    return os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def build_dir():
    """The CMake build directory: $PHY_BUILD_DIR or <source>/build/test."""
    env = os.environ.get("PHY_BUILD_DIR")
    if env:
        return os.path.abspath(env)
    return os.path.join(source_dir(), "build", "test")


def binary(name):
    """Absolute path of a built program (e.g. "phyproxy"); raises when missing."""
    path = os.path.join(build_dir(), name)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError("%s not built (looked in %s)" % (name, build_dir()))
    return path


def tmpdir(name):
    """A fresh directory for one test file's files, under <build>/integration-tmp when
    the build directory exists, else under the system temp dir. Removed at the end of
    a passing run unless PHY_KEEP_TMP=1."""
    base = os.path.join(build_dir(), "integration-tmp")
    try:
        os.makedirs(base, exist_ok=True)
    except OSError:
        base = None
    path = tempfile.mkdtemp(prefix=name + "-", dir=base)
    _tmpdirs.append(path)
    return path


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(fn, timeout, what, interval=0.02):
    """Calls fn() until it returns a truthy value, which is returned. Raises
    TimeoutError naming `what` after `timeout` seconds. Exceptions from fn propagate."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)
        interval = min(interval * 1.5, 0.2)


def _openssl(args, cwd):
    res = subprocess.run(["openssl"] + args, cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=60)
    if res.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args),
                                                       res.stderr.decode(errors="replace")))


def make_ca(dir, hostnames, name="server"):
    """Makes a test CA and one server certificate with the openssl CLI, all ECDSA
    P-256. The certificate's SAN lists every DNS name in `hostnames` plus IP
    127.0.0.1. Files go into `dir`. Returns a dict of absolute paths:
    {"ca": ca.pem, "ca_key": ca.key, "cert": <name>.pem, "key": <name>.key}.
    Calling it again in the same dir reuses the CA and adds another certificate."""
    dir = os.path.abspath(dir)
    ca, ca_key = os.path.join(dir, "ca.pem"), os.path.join(dir, "ca.key")
    cert, key = os.path.join(dir, name + ".pem"), os.path.join(dir, name + ".key")
    csr, ext = os.path.join(dir, name + ".csr"), os.path.join(dir, name + ".ext")
    if not os.path.exists(ca):
        _openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", ca_key], dir)
        _openssl(["req", "-x509", "-new", "-key", ca_key, "-sha256", "-days", "2",
                  "-subj", "/CN=PhyStack Test CA", "-out", ca,
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign"], dir)
    san = ",".join(["DNS:" + h for h in hostnames] + ["IP:127.0.0.1"])
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectAltName=%s\n" % san)
    cn = hostnames[0] if hostnames else "127.0.0.1"
    _openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key], dir)
    _openssl(["req", "-new", "-key", key, "-subj", "/CN=" + cn, "-out", csr], dir)
    _openssl(["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
              "-days", "2", "-sha256", "-extfile", ext, "-out", cert], dir)
    return {"ca": ca, "ca_key": ca_key, "cert": cert, "key": key}


class Daemon:
    """A child process with stdout and stderr going to <tmpdir>/<name>.log.

    d = Daemon([binary("phyproxy"), "--listen", ...], "proxy", dir)
    d.wait_port(port, 10); d.wait_log(r"event=start", 10); code = d.stop()
    """

    def __init__(self, argv, name, tmpdir, env=None, cwd=None):
        self.argv = [str(a) for a in argv]
        self.name = name
        self.log_path = os.path.join(tmpdir, name + ".log")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=full_env,
                                     cwd=cwd or tmpdir)
        self.returncode = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def log(self):
        """The whole log so far, as text."""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", errors="replace")

    def log_lines(self, regex=None):
        """Log lines, only those matching regex (re.search) when given."""
        lines = self.log().splitlines()
        if regex is None:
            return lines
        rx = re.compile(regex)
        return [l for l in lines if rx.search(l)]

    def _check_alive(self, what):
        if not self.alive():
            raise RuntimeError("%s exited with %s while waiting for %s; log tail:\n%s"
                               % (self.name, self.proc.returncode, what, self.tail()))

    def tail(self, n=30):
        return "\n".join(self.log().splitlines()[-n:])

    def wait_port(self, port, deadline=10.0, host="127.0.0.1"):
        """Waits until host:port accepts a TCP connection (the probe connects and
        closes at once). Fails early if the process dies."""
        def probe():
            self._check_alive("port %d" % port)
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return True
            except OSError:
                return False
        wait_until(probe, deadline, "%s to listen on %s:%d" % (self.name, host, port))

    def wait_log(self, regex, deadline=10.0):
        """Waits until a log line matches regex; returns the re.Match."""
        rx = re.compile(regex)

        def look():
            for line in self.log().splitlines():
                m = rx.search(line)
                if m:
                    return m
            self._check_alive("log /%s/" % regex)
            return None
        return wait_until(look, deadline, "%s log line /%s/" % (self.name, regex))

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Sends sig and waits for the exit; returns the exit code (negative: killed
        by that signal). Kills the process if it outlives timeout and raises."""
        if self.returncode is not None:
            return self.returncode
        if self.alive():
            self.proc.send_signal(sig)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError("%s did not exit within %.0f s of signal %d"
                               % (self.name, timeout, sig))
        finally:
            self._log.close()
        return self.returncode

    def kill(self):
        """SIGKILL and reap; a no-op when it has already exited."""
        if self.alive():
            self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        if self.returncode is None:
            self.returncode = self.proc.returncode
        if not self._log.closed:
            self._log.close()


# ---- raw socket helpers ----

def connect(port, host="127.0.0.1", timeout=10.0):
    """A connected TCP socket with a default timeout for every operation."""
    s = socket.create_connection((host, port), timeout=timeout)
    s.settimeout(timeout)
    return s


def recv_until(sock, marker, limit=1 << 20):
    """Reads until `marker` (bytes) appears or the peer closes; returns all bytes read
    (possibly past the marker)."""
    data = b""
    while marker not in data and len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def recv_http_head(sock):
    """Reads one HTTP response head. Returns (status, headers dict with lower-case
    names, rest) where rest is whatever followed the blank line. status is None when
    the peer closed before a complete head."""
    data = recv_until(sock, b"\r\n\r\n")
    if b"\r\n\r\n" not in data:
        return None, {}, data
    head, rest = data.split(b"\r\n\r\n", 1)
    status, headers = parse_status(head)
    return status, headers, rest


def parse_status(head):
    """Parses a response head (bytes, without the blank line) into (status, headers)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers


def recv_all(sock, limit=64 << 20):
    """Reads until EOF; returns the bytes (a reset counts as EOF)."""
    chunks, total = [], 0
    while total < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


# ---- runner ----

def main(tests=None):
    """Runs `tests` (a list of functions) or every test_* function of __main__, in
    definition order; argv names select a subset. Prints "N passed, N failed" and
    exits 1 on any failure (also when setup fails)."""
    mod = sys.modules["__main__"]
    if tests is None:
        tests = [v for k, v in vars(mod).items() if k.startswith("test_") and callable(v)]
        tests.sort(key=lambda f: f.__code__.co_firstlineno)
    if len(sys.argv) > 1:
        wanted = set(sys.argv[1:])
        tests = [t for t in tests if t.__name__ in wanted]
    passed = failed = 0
    setup, teardown = getattr(mod, "setup", None), getattr(mod, "teardown", None)
    try:
        if setup is not None:
            setup()
        for t in tests:
            start = time.monotonic()
            try:
                t()
            except Exception:  # a test fails by raising anything
                failed += 1
                print("FAIL %s (%.2f s)" % (t.__name__, time.monotonic() - start))
                traceback.print_exc(file=sys.stdout)
            else:
                passed += 1
                print("PASS %s (%.2f s)" % (t.__name__, time.monotonic() - start))
            sys.stdout.flush()
    except Exception:
        failed += 1
        print("FAIL setup")
        traceback.print_exc(file=sys.stdout)
    finally:
        if teardown is not None:
            try:
                teardown()
            except Exception:
                failed += 1
                print("FAIL teardown")
                traceback.print_exc(file=sys.stdout)
    print("%d passed, %d failed" % (passed, failed))
    if failed == 0 and os.environ.get("PHY_KEEP_TMP") != "1":
        for d in _tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
    elif _tmpdirs:
        print("temporary files kept in: %s" % ", ".join(_tmpdirs))
    sys.stdout.flush()
    sys.exit(1 if failed else 0)
