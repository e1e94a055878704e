"""A whole PhyStack on loopback for integration tests: phyhub (eu, provisioning on,
short timers) + phyproxy + a tenant with an API token, and helpers to provision
devices and call the APIs through the proxy like a device or with a token."""

import base64
import http.client
import json
import os
import ssl
import subprocess
import time

import phytest
from phytest import Daemon, binary

HOST = "portal-eu.phystack.com"


class Stack:
    def __init__(self, name, hub_flags=(), hub_env=None):
        self.dir = phytest.tmpdir(name)
        self.pki = phytest.make_ca(self.dir, [HOST, "localhost"])
        self.db = os.path.join(self.dir, "eu.db")
        self.hub_port = phytest.free_port()
        self.proxy_port = phytest.free_port()
        self.hub_flags = list(hub_flags)
        self.hub_env = hub_env
        self.daemons = []
        self.hub_runs = 0
        self.secrets = set()
        self.admin("tenant-add", "acme", "--region", "eu")
        self.admin("user-add", "acme", "alice", stdin="correct horse battery\n")
        self.token = self.admin("token-add", "acme", "alice")
        self.secrets.add(self.token)
        self.start_hub()
        self.proxy = self.daemon([binary("phyproxy"), "--listen", "127.0.0.1:%d" % self.proxy_port,
                                  "--route", "%s=127.0.0.1:%d" % (HOST, self.hub_port),
                                  "--allow", "portal-*.phystack.com:443"], "phyproxy")
        self.proxy.wait_port(self.proxy_port)

    def daemon(self, argv, name, env=None):
        d = Daemon(argv, name, self.dir, env=env)
        self.daemons.append(d)
        return d

    def admin(self, *args, stdin=None):
        res = subprocess.run([binary("phyhub"), "admin", "--db", self.db] + list(args),
                             input=stdin, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    def start_hub(self):
        self.hub_runs += 1
        argv = [binary("phyhub"), "--region", "eu", "--listen", "127.0.0.1:%d" % self.hub_port,
                "--db", self.db, "--tls-cert", self.pki["cert"], "--tls-key", self.pki["key"],
                "--provisioning", "--public-endpoint", HOST + ":443", "--poll-interval", "1",
                "--issuance-grace", "3", "--sweep-interval", "1"] + self.hub_flags
        self.hub = self.daemon(argv, "phyhub-%d" % self.hub_runs, env=self.hub_env)
        self.hub.wait_port(self.hub_port)
        return self.hub

    def stop(self):
        for d in self.daemons:
            d.kill()

    def logs(self):
        return "\n".join(d.log() for d in self.daemons)

    # ---- HTTP ----

    def request(self, method, path, body=None, ident="sn_TEST", token=None, headers=None,
                raw=None, content_type="application/json", via_proxy=True):
        """One HTTPS request to the hub (through phyproxy by default). Returns
        (status, parsed JSON or None, raw body, response headers)."""
        ctx = ssl.create_default_context(cafile=self.pki["ca"])
        if via_proxy:
            conn = http.client.HTTPSConnection("127.0.0.1", self.proxy_port, timeout=10,
                                               context=ctx)
            auth = base64.b64encode((ident + ":").encode()).decode()
            conn.set_tunnel(HOST, 443, headers={"Proxy-Authorization": "Basic " + auth})
        else:  # the certificate also names 127.0.0.1
            conn = http.client.HTTPSConnection("127.0.0.1", self.hub_port, timeout=10,
                                               context=ctx)
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

    def api(self, method, path, body=None, token=None, **kw):
        return self.request(method, path, body, token=token or self.token, **kw)

    # ---- provisioning ----

    def provision(self, serial, name=None, tags=None):
        """Register + claim by serial + poll: returns the credentials dict."""
        st, js, _, _ = self.request("POST", "/v1/provisioning/register", {"serial": serial},
                                    ident="sn_" + serial)
        assert st == 201, (st, js)
        token = js["poll_token"]
        self.secrets.add(token)
        body = {"serial": serial}
        if name:
            body["name"] = name
        if tags:
            body["tags"] = tags
        st, dev, _, _ = self.api("POST", "/api/v1/devices/claim", body)
        assert st == 201, (st, dev)
        deadline = time.monotonic() + 15
        while True:
            st, js, _, _ = self.request("POST", "/v1/provisioning/poll",
                                        {"serial": serial, "poll_token": token},
                                        ident="sn_" + serial)
            if st == 200:
                break
            assert st in (202, 429) and time.monotonic() < deadline, (st, js)
            time.sleep(js.get("interval", 1))
        self.secrets.add(js["device_secret"])
        return js
