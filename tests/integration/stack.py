"""A whole PhyStack on loopback for integration tests: phyhub (eu, provisioning on,
short timers) + phyproxy + a tenant with an API token, and helpers to add tenants and
users, provision devices, call the APIs through the proxy like a device or with a
token, run phyctl, start phyagents, read their state files and look for secrets in
the logs.

Stores are SQLite files, or with PHY_TEST_STORE=postgresql a fresh database per hub on
the cluster at PHY_TEST_PG_URL (Harness.new_store); query_db and store_tables read
either."""

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import sqlite3
import ssl
import subprocess
import time

import phytest
import wsclient
from phytest import Daemon, binary

HOST = "portal-eu.phystack.com"
# Hub timers short enough for a test run; pass timers= to keep some at their defaults.
SHORT_TIMERS = ("--poll-interval", "1", "--issuance-grace", "3", "--sweep-interval", "1")
PASSWORD = "correct horse battery\n"


def read_json(path):
    """The parsed JSON of a file; None while it is missing or not (yet) valid JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def hub_admin(db, *args, stdin=None, check=True):
    """Runs `phyhub admin --db DB ARGS...` (asserting success when check); its stdout."""
    res = subprocess.run([binary("phyhub"), "admin", "--db", db] + list(args),
                         input=stdin, capture_output=True, text=True, timeout=60)
    if check:
        assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def is_postgresql(db):
    """Whether a --db value names a PostgreSQL database (else it is a SQLite file)."""
    return db.startswith(("postgresql://", "postgres://"))


def psql(url, sql):
    """Runs one SQL command with psql on the database at url; its stdout (raises with
    psql's stderr on failure)."""
    res = subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                         capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise RuntimeError("psql: " + res.stderr)
    return res.stdout


def sql_literal(value):
    """A Python value as an SQL literal (test-only substitute for a bound parameter)."""
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def query_db(db, sql, args=(), timeout=5.0):
    """All rows of one SELECT on store db (a SQLite file, `timeout` its busy timeout, or
    a PostgreSQL URL), as tuples. On PostgreSQL the ?s are replaced by args as literals
    and the rows come as JSON, so that values keep their types as with sqlite3 (except
    that booleans are True/False and BYTEA is its text form, \\x and hex)."""
    if not is_postgresql(db):
        conn = sqlite3.connect(db, timeout=timeout)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()
    parts = sql.split("?")
    assert len(parts) == len(args) + 1, (sql, args)
    sql = parts[0] + "".join(sql_literal(a) + p for a, p in zip(args, parts[1:]))
    out = psql(db, "SELECT coalesce(json_agg(q), '[]') FROM (%s) AS q" % sql)
    # each row is an object of its columns in order (names may repeat)
    return json.loads(out, object_pairs_hook=lambda cols: tuple(v for _, v in cols))


def store_tables(db):
    """Every table of store db with all its rows: [(table, column names, rows)], BLOB
    and BYTEA values as bytes."""
    if not is_postgresql(db):
        conn = sqlite3.connect(db, timeout=10)
        try:
            out = []
            for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
                cur = conn.execute('SELECT * FROM "%s"' % t.replace('"', '""'))
                out.append((t, [c[0] for c in cur.description], cur.fetchall()))
            return out
        finally:
            conn.close()
    columns = {}
    for t, col, typ in query_db(db, "SELECT table_name, column_name, data_type"
                                    " FROM information_schema.columns"
                                    " WHERE table_schema = 'public'"
                                    " ORDER BY table_name, ordinal_position"):
        columns.setdefault(t, []).append((col, typ))
    out = []
    for t, cols in columns.items():
        rows = [tuple(bytes.fromhex(v[2:]) if typ == "bytea" and v is not None else v
                      for v, (_, typ) in zip(row, cols))
                for row in query_db(db, 'SELECT * FROM "%s"' % t.replace('"', '""'))]
        out.append((t, [c for c, _ in cols], rows))
    return out


def https_connection(port, context, tunnel_host=None, ident="sn_TEST", timeout=10,
                     password=None, source=None):
    """An HTTPSConnection to 127.0.0.1:port (from address `source` when given); with
    tunnel_host, port is phyproxy's and the connection goes through it (CONNECT
    tunnel_host:443 as `ident`)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context,
                                       source_address=(source, 0) if source else None)
    if tunnel_host is not None:
        auth = base64.b64encode((ident + ":" + (password or "")).encode()).decode()
        conn.set_tunnel(tunnel_host, 443, headers={"Proxy-Authorization": "Basic " + auth})
    return conn


def https_request(conn, method, path, body=None, token=None, headers=None, raw=None,
                  content_type="application/json"):
    """One request on conn (closed afterwards): body as JSON, else raw bytes; token as
    Bearer. Returns (status, parsed JSON or None, raw body, response headers with
    lower-case names)."""
    h = dict(headers or {})
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
    if data is not None and content_type:
        h["Content-Type"] = content_type
    if token:
        h["Authorization"] = "Bearer " + token
    try:
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        payload = resp.read()
        rh = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    try:
        parsed = json.loads(payload) if payload else None
    except ValueError:
        parsed = None
    return resp.status, parsed, payload, rh


class Harness:
    """What Stack and regions.Regions share: a temporary directory with the test PKI for
    `hostnames` (and localhost), daemons whose logs count for logs() and which stop()
    kills, the secrets that must not appear in those logs, and phyagents."""

    def __init__(self, name, hostnames):
        self.dir = phytest.tmpdir(name)
        self.pki = phytest.make_ca(self.dir, list(hostnames) + ["localhost"])
        self.daemons = []
        self.agent_runs = {}
        self.secrets = set()
        self.databases = []  # PostgreSQL databases of new_store(), dropped by stop()
        # The key hubs sign proxy tokens with and proxies check them with.
        self.proxy_key_file = os.path.join(self.dir, "proxy-k1.key")
        self.proxy_key = os.urandom(32)
        fd = os.open(self.proxy_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, self.proxy_key)
        os.close(fd)

    def edge_hub_flags(self):
        """A hub behind the test proxy: it believes the proxy's PROXY header and signs
        issued devices' proxy tokens. Every test client shares 127.0.0.1, so the
        per-source registration limit is off unless a test sets it (later flags win)."""
        return ["--trusted-proxy", "127.0.0.1", "--proxy-key", "k1=" + self.proxy_key_file,
                "--register-rate", "0"]

    def edge_proxy_flags(self):
        return ["--proxy-key", "k1=" + self.proxy_key_file, "--new-tunnel-rate", "0",
                "--max-tunnels-per-source", "100000"]

    def daemon(self, argv, name, env=None):
        """A Daemon whose log counts for logs() and is killed by stop()."""
        d = Daemon(argv, name, self.dir, env=env)
        self.daemons.append(d)
        return d

    def new_store(self, name):
        """An empty store for hub `name`: (its --db value, the phyhub flags that go with
        it). SQLite: <dir>/<name>.db, the issuance key beside it by default. With
        PHY_TEST_STORE=postgresql: a fresh database on PHY_TEST_PG_URL (dropped by
        stop()) and --key-file <dir>/<name>.key."""
        if os.environ.get("PHY_TEST_STORE") != "postgresql":
            return os.path.join(self.dir, name + ".db"), []
        base = os.environ["PHY_TEST_PG_URL"]
        dbname = "%s_%s" % (os.path.basename(self.dir), name)
        dbname = re.sub(r"[^a-z0-9_]", "_", dbname.lower())
        psql(base + "/postgres", 'CREATE DATABASE "%s"' % dbname)
        self.databases.append(dbname)
        return "%s/%s" % (base, dbname), ["--key-file", os.path.join(self.dir, name + ".key")]

    def stop(self):
        for d in self.daemons:
            d.kill()
        while self.databases:
            try:
                psql(os.environ["PHY_TEST_PG_URL"] + "/postgres",
                     'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % self.databases.pop())
            except RuntimeError:
                pass  # the cluster is thrown away at the end of the run anyway

    def logs(self):
        return "\n".join(d.log() for d in self.daemons)

    def leaked_secrets(self):
        """Every remembered secret that appears in a log, shortened for the message."""
        blob = self.logs()
        return [s[:6] + "..." for s in self.secrets if s in blob]

    def user_token(self, db, tenant, user):
        """Adds a user to the store db and returns a new API token for it (remembered as
        a secret)."""
        hub_admin(db, "user-add", tenant, user, stdin=PASSWORD)
        token = hub_admin(db, "token-add", tenant, user)
        self.secrets.add(token)
        return token

    def tls_context(self):
        return ssl.create_default_context(cafile=self.pki["ca"])

    def agent(self, serial, endpoint, extra_flags=(), name=None):
        """Starts a phyagent for serial through the proxy (self.proxy_port), provisioning
        at endpoint, with its state in <dir>/agent-<serial> (kept across runs); returns
        (daemon, state_dir)."""
        state = os.path.join(self.dir, "agent-" + serial)
        os.makedirs(state, exist_ok=True)
        n = self.agent_runs.get(serial, 0) + 1
        self.agent_runs[serial] = n
        argv = [binary("phyagent"), "--serial", serial, "--state-dir", state,
                "--proxy", "127.0.0.1:%d" % self.proxy_port, "--ca", self.pki["ca"],
                "--provisioning-endpoint", endpoint, "--backoff-base-ms", "100",
                "--backoff-max", "1"] + list(extra_flags)
        return self.daemon(argv, name or "phyagent-%s-%d" % (serial, n)), state

    def credentials(self, state):
        """The agent's credentials.json (its secret remembered), None while missing."""
        creds = read_json(os.path.join(state, "credentials.json"))
        if creds:
            self.secrets.add(creds["device_secret"])
        return creds


class Stack(Harness):
    """Tenant "acme" with user "alice" (token in .token) is always there. With
    start=False nothing runs yet: add tenants and users, then call start()."""

    def __init__(self, name, hub_flags=(), hub_env=None, timers=SHORT_TIMERS, proxy=True,
                 proxy_flags=(), start=True):
        super().__init__(name, [HOST])
        self.db, self.store_flags = self.new_store("eu")
        self.hub_port = phytest.free_port()
        self.proxy_port = phytest.free_port() if proxy else None
        self.hub_flags = list(timers) + list(hub_flags)
        self.hub_env = hub_env
        self.proxy_flags = list(proxy_flags)
        self.hub = None
        self.proxy = None
        self.hub_runs = 0
        self.add_tenant("acme")
        self.token = self.add_user("acme", "alice")
        if start:
            self.start()

    def admin(self, *args, stdin=None):
        return hub_admin(self.db, *args, stdin=stdin)

    def add_tenant(self, tenant, region="eu", serial_claims="any"):
        """A tenant; serial_claims "any" (the tests' default: they predate attested
        serials) or "attested" (the hub's default)."""
        self.admin("tenant-add", tenant, "--region", region)
        self.admin("tenant-set", tenant, "--serial-claims", serial_claims)

    def add_user(self, tenant, user):
        """Adds a user and returns a new API token for it (remembered as a secret)."""
        return self.user_token(self.db, tenant, user)

    def start(self):
        """Starts the hub and (unless proxy=False) the proxy; kills both on failure."""
        try:
            self.start_hub()
            if self.proxy_port is not None:
                self.proxy = self.daemon(
                    [binary("phyproxy"), "--listen", "127.0.0.1:%d" % self.proxy_port,
                     "--route", "%s=127.0.0.1:%d" % (HOST, self.hub_port),
                     "--allow", "portal-*.phystack.com:443"] + self.edge_proxy_flags() +
                    self.proxy_flags, "phyproxy")
                self.proxy.wait_port(self.proxy_port)
        except Exception:
            self.stop()
            raise

    def start_hub(self):
        """Starts a (new) hub on the same port and database, e.g. after hub.kill()."""
        self.hub_runs += 1
        argv = [binary("phyhub"), "--region", "eu", "--listen", "127.0.0.1:%d" % self.hub_port,
                "--db", self.db, "--tls-cert", self.pki["cert"], "--tls-key", self.pki["key"],
                "--provisioning", "--public-endpoint", HOST + ":443"]
        argv += self.store_flags + self.edge_hub_flags() + self.hub_flags
        self.hub = self.daemon(argv, "phyhub-%d" % self.hub_runs, env=self.hub_env)
        self.hub.wait_port(self.hub_port)
        return self.hub

    def query(self, sql, args=()):
        """All rows of one query on the hub's database."""
        return query_db(self.db, sql, args)

    # ---- HTTP ----

    def _via_proxy(self, via_proxy):
        return self.proxy_port is not None if via_proxy is None else via_proxy

    def connection(self, ident="sn_TEST", via_proxy=None, source=None):
        """An HTTPSConnection to the hub (from address `source` when given): through
        phyproxy (CONNECT with `ident`) when the stack has one, unless via_proxy says
        otherwise."""
        if self._via_proxy(via_proxy):
            return https_connection(self.proxy_port, self.tls_context(), HOST, ident,
                                    source=source)
        # the certificate also names 127.0.0.1
        return https_connection(self.hub_port, self.tls_context(), source=source)

    def request(self, method, path, body=None, ident="sn_TEST", token=None, headers=None,
                raw=None, content_type="application/json", via_proxy=None, source=None):
        """One HTTPS request to the hub (see connection()). Returns (status, parsed
        JSON or None, raw body, response headers with lower-case names)."""
        return https_request(self.connection(ident, via_proxy, source), method, path, body,
                             token, headers, raw, content_type)

    def api(self, method, path, body=None, token=None, **kw):
        return self.request(method, path, body, token=token or self.token, **kw)

    def ws_connect(self, creds, via_proxy=None, **kw):
        """A device WebSocket upgrade with creds (device_id, device_secret): through
        phyproxy when the stack has one. Returns wsclient's (status, headers, WS)."""
        ident, secret = creds["device_id"], creds["device_secret"]
        if self._via_proxy(via_proxy):
            return wsclient.handshake("127.0.0.1", self.proxy_port, HOST, self.pki["ca"],
                                      ident, secret, proxy=("127.0.0.1", self.proxy_port, ident,
                                                            creds.get("proxy_token", "")),
                                      **kw)
        return wsclient.handshake("127.0.0.1", self.hub_port, HOST, self.pki["ca"], ident,
                                  secret, **kw)

    # ---- provisioning ----

    def register(self, serial):
        """Registers a serial as its device would; returns the poll token."""
        st, js, _, _ = self.request("POST", "/v1/provisioning/register", {"serial": serial},
                                    ident="sn_" + serial)
        assert st == 201, (st, js)
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", js["poll_token"]), js
        self.secrets.add(js["poll_token"])
        return js["poll_token"]

    def claim(self, token=None, **body):
        """POST /api/v1/devices/claim with body (serial, code, name, tags...)."""
        return self.api("POST", "/api/v1/devices/claim", body, token=token)

    def poll(self, serial, token, code=None):
        """One poll as the device would (by code when given, else by serial)."""
        body = {"code": code} if code else {"serial": serial}
        body["poll_token"] = token
        res = self.request("POST", "/v1/provisioning/poll", body, ident="sn_" + serial)
        if res[0] == 200:
            self.secrets.add(res[1]["device_secret"])
        return res

    def poll_until(self, serial, token, code=None, timeout=15):
        """Polls at the interval the hub asks for until something other than 202/429."""
        deadline = time.monotonic() + timeout
        while True:
            res = self.poll(serial, token, code)
            st, js = res[0], res[1]
            if st not in (202, 429):
                return res
            assert time.monotonic() < deadline, "still pending after %s s" % timeout
            time.sleep(js.get("interval", 1))

    def provision(self, serial, name=None, tags=None):
        """Register + claim by serial + poll: returns the credentials dict."""
        token = self.register(serial)
        body = {"serial": serial}
        if name:
            body["name"] = name
        if tags is not None:
            body["tags"] = tags
        st, dev, _, _ = self.claim(**body)
        assert st == 201, (st, dev)
        st, js, _, _ = self.poll_until(serial, token)
        assert st == 200, (st, js)
        assert js["device_id"] == dev["device_id"], (js, dev)
        return js

    # ---- phyctl ----

    def phyctl_command(self, *args, token=None):
        """(argv, env) of phyctl against the hub with token (default: alice's)."""
        env = dict(os.environ, PHY_TOKEN=token or self.token)
        argv = [binary("phyctl"), "--url", "https://127.0.0.1:%d" % self.hub_port,
                "--ca", self.pki["ca"]] + list(args)
        return argv, env

    def phyctl(self, *args, token=None, stdin=None):
        """Runs phyctl to its end; returns (exit code, stdout, stderr)."""
        argv, env = self.phyctl_command(*args, token=token)
        res = subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True,
                             timeout=60)
        return res.returncode, res.stdout, res.stderr

    # ---- agents ----

    def start_agent(self, serial, extra_flags=(), name=None):
        """Starts a phyagent for serial through the proxy, with its state in
        <dir>/agent-<serial> (kept across runs); returns (daemon, state_dir)."""
        assert self.proxy_port is not None, "agents need the proxy"
        return self.agent(serial, HOST + ":443", extra_flags, name)

    def proxy_token(self, device_id):
        """The proxy token the hubs sign for device_id (include/phy/proxytoken.h)."""
        mac = hmac.new(self.proxy_key, b"phystack-proxy-v1\n" + device_id.encode(),
                       hashlib.sha256).digest()
        return "k1." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def bulk_agents(self, n, tag, extra_flags=()):
        """n devices of acme made at once (`phyhub admin device-add-bulk`, tag "K:V"),
        each with a phyagent through the proxy whose credentials.json is written as a
        claim would have: hundreds of agents without hundreds of claims. Returns
        [(daemon, state_dir, credentials)]."""
        lines = self.admin("device-add-bulk", str(n), "--tenant", "acme", "--tag", tag)
        out = []
        for line in lines.splitlines():
            c = json.loads(line)
            c.update(region="eu", endpoint=HOST + ":443",
                     proxy_token=self.proxy_token(c["device_id"]))
            self.secrets.add(c["device_secret"])
            state = os.path.join(self.dir, "agent-" + c["serial"])
            os.makedirs(state, mode=0o700)
            fd = os.open(os.path.join(state, "credentials.json"),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, json.dumps(c).encode())
            os.close(fd)
            out.append((self.start_agent(c["serial"], extra_flags)[0], state, c))
        assert len(out) == n, (len(out), n)
        return out
