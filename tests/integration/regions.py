"""Several regions on loopback for integration tests (docs/protocol.md section 3):
phyhub eu (--provisioning, one --peer per regional hub), regional hubs (au, uae, ...)
that claim through eu's internal API, one phyproxy routing portal-<region>.phystack.com
to each hub, and a tenant with a user and an API token in every region's own store.

Helpers: HTTPS to any hub (direct, or through the proxy like a device), the device side
of provisioning (register/code/poll through the proxy to portal-eu), claims in a given
region, eu's internal API with any key, phyagent, queries and whole-database scans of
any region's store (SQLite, or PostgreSQL with PHY_TEST_STORE=postgresql), and
killing/restarting hubs."""

import hashlib
import http.client
import os
import re
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import phytest
from phytest import binary, wait_until
# SHORT_TIMERS are short enough for a test run (eu purges a delivered issuance 3 s after
# delivery); read_json is for the tests too.
from stack import (SHORT_TIMERS, Harness, https_connection, https_request, hub_admin, query_db,
                   read_json, store_tables)

# Tenant and user of each region: distinctive names, so that a search of another
# region's store for them cannot hit anything by chance.
TENANTS = {
    "eu": ("eurofleet-gmbh", "erika-eu"),
    "au": ("wombat-works-au", "matilda-au"),
    "uae": ("falcon-trading-uae", "omar-uae"),
}
CODE_RE = re.compile(r"^[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{6}$")


def host(region):
    return "portal-%s.phystack.com" % region


def sha256_hex(text):
    return hashlib.sha256(text.encode()).hexdigest()


def write_key(path, key, mode=0o600):
    """Writes an inter-region key file by hand with the given mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, mode)
    return path


class Hub:
    """One phyhub: its name (eu, au, uae, or e.g. au2 for a second au hub), region,
    port, store (--db and the flags that go with it), flags, tenant/user/token and the
    current Daemon."""

    def __init__(self, name, region, port, db, store_flags, flags, key_file=None):
        self.name, self.region, self.port, self.db = name, region, port, db
        self.store_flags = store_flags
        self.flags = list(flags)
        self.key_file = key_file
        self.daemon = None
        self.runs = 0
        self.tenant = self.user = self.token = None

    @property
    def host(self):
        return host(self.region)


class Regions(Harness):
    """eu + regional hubs + phyproxy. With start=False nothing runs yet: add hubs,
    tenants and users, then call start()."""

    def __init__(self, name, regions=("au", "uae"), timers=SHORT_TIMERS, hub_flags=(),
                 eu_flags=(), regional_flags=("--inter-region-timeout", "3"),
                 proxy_flags=("--idle-timeout", "60"), start=True):
        super().__init__(name, [host(r) for r in ["eu"] + list(regions)])
        self.timers = list(timers)
        self.hub_flags = list(hub_flags)
        self.regional_flags = list(regional_flags)
        self.proxy_flags = list(proxy_flags)
        self.hubs = {}
        self.proxy = None
        self.proxy_port = phytest.free_port()
        self.add_hub("eu", "eu", flags=list(eu_flags))
        for r in regions:
            self.add_hub(r, r)
        if start:
            self.start()

    # ---- set-up ----

    def admin(self, db, *args, stdin=None, check=True):
        return hub_admin(db, *args, stdin=stdin, check=check)

    def key_new(self, name):
        """A fresh inter-region key file made by `phyhub admin key-new`."""
        path = os.path.join(self.dir, name + ".irkey")
        res = subprocess.run([binary("phyhub"), "admin", "key-new", path], capture_output=True,
                             text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        with open(path) as f:
            self.secrets.add(f.read().strip())
        return path

    def read_key(self, name):
        with open(self.hubs[name].key_file) as f:
            return f.read().strip()

    def add_hub(self, name, region, flags=(), key_file=None, tenant=None):
        """A hub with its own store and tenant (created before it starts). Regional hubs
        get a fresh key file unless key_file is given; eu learns the keys of the hubs
        named after their region (--peer REGION=KEYFILE)."""
        db, store_flags = self.new_store(name)
        if region != "eu" and key_file is None:
            key_file = self.key_new(name)
        hub = Hub(name, region, phytest.free_port(), db, store_flags, flags, key_file)
        self.hubs[name] = hub
        t, u = tenant or TENANTS.get(name) or TENANTS.get(region) or (name + "-co", name + "-user")
        self.add_tenant(name, t, region)
        hub.tenant, hub.user = t, u
        hub.token = self.add_user(name, t, u)
        return hub

    def add_tenant(self, name, tenant, region, serial_claims="any"):
        self.admin(self.hubs[name].db, "tenant-add", tenant, "--region", region)
        self.admin(self.hubs[name].db, "tenant-set", tenant, "--serial-claims", serial_claims)

    def add_user(self, name, tenant, user):
        """A user in hub `name`'s store; returns a new API token (remembered as a secret)."""
        return self.user_token(self.hubs[name].db, tenant, user)

    def hub_argv(self, name):
        hub = self.hubs[name]
        argv = [binary("phyhub"), "--region", hub.region, "--listen", "127.0.0.1:%d" % hub.port,
                "--db", hub.db, "--tls-cert", self.pki["cert"], "--tls-key", self.pki["key"],
                "--public-endpoint", hub.host + ":443"]
        argv += hub.store_flags + self.edge_hub_flags() + self.timers + self.hub_flags
        if hub.region == "eu":
            argv.append("--provisioning")
            for other in self.hubs.values():
                if other.region != "eu" and other.name == other.region:
                    argv += ["--peer", "%s=%s" % (other.region, other.key_file)]
        else:
            argv += ["--provisioning-url", "https://127.0.0.1:%d" % self.hubs["eu"].port,
                     "--inter-region-key-file", hub.key_file, "--ca", self.pki["ca"]]
            argv += self.regional_flags
        return argv + hub.flags

    def start_hub(self, name):
        """Starts (again) hub `name` on its port and store, e.g. after kill_hub()."""
        hub = self.hubs[name]
        hub.runs += 1
        hub.daemon = self.daemon(self.hub_argv(name), "phyhub-%s-%d" % (name, hub.runs))
        hub.daemon.wait_port(hub.port)
        return hub.daemon

    def kill_hub(self, name):
        """SIGKILL and reap: afterwards its port refuses connections."""
        self.hubs[name].daemon.kill()

    def start(self):
        """Starts eu, the other hubs and the proxy; kills everything on failure."""
        try:
            self.start_hub("eu")
            for name in self.hubs:
                if name != "eu":
                    self.start_hub(name)
            routes = []
            for hub in self.hubs.values():
                if hub.name == hub.region:
                    routes += ["--route", "%s=127.0.0.1:%d" % (hub.host, hub.port)]
            self.proxy = self.daemon(
                [binary("phyproxy"), "--listen", "127.0.0.1:%d" % self.proxy_port] + routes +
                ["--allow", "portal-*.phystack.com:443"] + self.edge_proxy_flags() +
                self.proxy_flags, "phyproxy")
            self.proxy.wait_port(self.proxy_port)
        except Exception:
            self.stop()
            raise

    # ---- HTTP ----

    def connection(self, name, via_proxy=False, ident="sn_TEST", timeout=15):
        """An HTTPSConnection to hub `name`: directly on 127.0.0.1 (its certificate names
        that address), or through phyproxy to portal-<region>.phystack.com:443."""
        hub = self.hubs[name]
        if via_proxy:
            return https_connection(self.proxy_port, self.tls_context(), hub.host, ident,
                                    timeout)
        return https_connection(hub.port, self.tls_context(), timeout=timeout)

    def request(self, name, method, path, body=None, token=None, headers=None, raw=None,
                content_type="application/json", via_proxy=False, ident="sn_TEST", timeout=15):
        """One HTTPS request. Returns (status, parsed JSON or None, raw body, response
        headers with lower-case names)."""
        return https_request(self.connection(name, via_proxy, ident, timeout), method, path,
                             body, token, headers, raw, content_type)

    def api(self, name, method, path, body=None, token=None, **kw):
        """A console API call on hub `name` with its user's token (or `token`)."""
        return self.request(name, method, path, body, token=token or self.hubs[name].token, **kw)

    def claim(self, hub, /, token=None, timeout=15, **body):
        """POST /api/v1/devices/claim on hub `hub` with body (serial, code, name, tags)."""
        return self.api(hub, "POST", "/api/v1/devices/claim", body, token=token, timeout=timeout)

    def device(self, name, dev_id):
        st, js, _, _ = self.api(name, "GET", "/api/v1/devices/" + dev_id)
        assert st == 200, (name, dev_id, st, js)
        return js

    def internal(self, method, path, body=None, key=None, authorization=None):
        """eu's internal API, directly: Bearer `key`, or a raw Authorization value, or
        none."""
        headers = {}
        if key is not None:
            headers["Authorization"] = "Bearer " + key
        elif authorization is not None:
            headers["Authorization"] = authorization
        return self.request("eu", method, path, body, headers=headers)

    # ---- the device side of provisioning (through the proxy to portal-eu) ----

    def register(self, serial):
        st, js, _, _ = self.request("eu", "POST", "/v1/provisioning/register",
                                    {"serial": serial}, via_proxy=True, ident="sn_" + serial)
        assert st == 201, (st, js)
        self.secrets.add(js["poll_token"])
        return js["poll_token"]

    def new_code(self, serial, token, timeout=5):
        def attempt():
            st, js, _, _ = self.request("eu", "POST", "/v1/provisioning/code",
                                        {"serial": serial, "poll_token": token},
                                        via_proxy=True, ident="sn_" + serial)
            if st == 429:
                time.sleep(min(js.get("interval", 1), 1) * 0.3)
                return None
            return st, js
        st, js = wait_until(attempt, timeout, "a code for " + serial)
        assert st == 201 and CODE_RE.match(js["code"]), (st, js)
        return js["code"]

    def poll(self, serial, token, code=None):
        body = {"code": code} if code else {"serial": serial}
        body["poll_token"] = token
        res = self.request("eu", "POST", "/v1/provisioning/poll", body, via_proxy=True,
                           ident="sn_" + serial)
        if res[0] == 200 and res[1]:
            self.secrets.add(res[1]["device_secret"])
        return res

    def poll_settled(self, serial, token, code=None, timeout=10):
        """One poll answer that is not 429 slow_down (waits as told)."""
        deadline = time.monotonic() + timeout
        while True:
            res = self.poll(serial, token, code)
            if res[0] != 429:
                return res
            assert time.monotonic() < deadline, "slow_down for %s s" % timeout
            time.sleep(0.3)

    def poll_until(self, serial, token, code=None, timeout=15):
        """Polls at the asked interval until something other than 202/429."""
        deadline = time.monotonic() + timeout
        while True:
            res = self.poll(serial, token, code)
            if res[0] not in (202, 429):
                return res
            assert time.monotonic() < deadline, "still pending after %s s" % timeout
            time.sleep(min((res[1] or {}).get("interval", 1), 1))

    # ---- agents ----

    def start_agent(self, serial, extra_flags=()):
        """phyagent for serial: provisions through the proxy at portal-eu, then connects
        (through the proxy) to the endpoint it was given. Returns (daemon, state dir)."""
        return self.agent(serial, host("eu") + ":443", extra_flags)

    def agent_code(self, state):
        """The code the agent shows (its provisioning-code file), None while missing."""
        reg = read_json(os.path.join(state, "registration.json"))
        if reg and reg.get("poll_token"):
            self.secrets.add(reg["poll_token"])
        try:
            with open(os.path.join(state, "provisioning-code")) as f:
                code = f.read().strip()
        except FileNotFoundError:
            return None
        return code if CODE_RE.match(code) else None

    # ---- stores ----

    def query(self, name, sql, args=()):
        return query_db(self.hubs[name].db, sql, args, timeout=10)

    def scan_db(self, name, needles):
        """Searches every column of every table of hub `name`'s store for each needle
        (as text in TEXT values, as bytes in BLOBs). Returns [(needle, table, column)]."""
        hits = []
        tables = store_tables(self.hubs[name].db)
        assert tables, "no tables in %s" % name
        for t, cols, rows in tables:
            for row in rows:
                for col, v in zip(cols, row):
                    if v is None:
                        continue
                    hay = v if isinstance(v, bytes) else str(v).encode()
                    for n in needles:
                        if n.encode() in hay:
                            hits.append((n[:12], t, col))
        return hits

    def raw_hits(self, name, needles):
        """Needles found in the raw bytes of the store file and its WAL."""
        hits = []
        for suffix in ("", "-wal"):
            path = self.hubs[name].db + suffix
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            hits += [(n[:12], os.path.basename(path)) for n in needles if n.encode() in data]
        return hits


# ---- a lossy path to eu ----

class _ForwardHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _forward(self):
        srv = self.server
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() in ("authorization", "content-type")}
        conn = http.client.HTTPSConnection("127.0.0.1", srv.eu_port, timeout=15,
                                           context=srv.client_ctx)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            status, payload = resp.status, resp.read()
            ctype = resp.getheader("Content-Type")
        finally:
            conn.close()
        drop = False
        with srv.lock:
            if srv.drop and srv.drop[0](self.command, self.path):
                srv.drop.pop(0)
                drop = True
            srv.seen.append((self.command, self.path, status, drop))
        if drop:
            # eu did the work; its answer is lost: hold the connection past the
            # caller's timeout, then close without a byte.
            time.sleep(srv.hold_s)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _forward


class EuForwarder:
    """An HTTPS endpoint (the test certificate) that forwards every request to eu and
    relays the answer, except that drop_answer(pred) makes the next request matching
    pred(method, path) reach eu while its answer is lost (the connection is held for
    hold_s seconds and closed). .seen lists (method, path, eu's status, dropped)."""

    def __init__(self, regions, hold_s=2.5):
        self.port = phytest.free_port()
        srv = ThreadingHTTPServer(("127.0.0.1", self.port), _ForwardHandler)
        srv.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(regions.pki["cert"], regions.pki["key"])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        srv.eu_port = regions.hubs["eu"].port
        srv.client_ctx = regions.tls_context()
        srv.lock = threading.Lock()
        srv.drop, srv.seen, srv.hold_s = [], [], hold_s
        self.srv = srv
        self.thread = threading.Thread(target=srv.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "https://127.0.0.1:%d" % self.port

    @property
    def seen(self):
        with self.srv.lock:
            return list(self.srv.seen)

    def drop_answer(self, pred):
        with self.srv.lock:
            self.srv.drop.append(pred)

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()
