"""Console API for devices end to end: phyhub (provisioning on) on loopback, devices
provisioned through the provisioning API with Python's http.client, then every
console endpoint exercised through phyctl and http.client: list filters and pages,
get, desired patches with If-Match, fleet-wide patches, tags, revoke / reset /
delete, and tenant isolation."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
from phytest import wait_until  # noqa: E402
from stack import Stack  # noqa: E402

ID_RE = re.compile(r"^dev_[a-z2-7]{26}$")

ST = None         # the Stack of this file's run (a hub without a proxy)
S = {}            # tokens of the other tenants
DEV = {}          # name -> {"device_id", "device_secret", "serial"}


def setup():
    global ST
    ST = Stack("console", hub_flags=["--header-timeout", "5"], timers=["--poll-interval", "1"],
               proxy=False, start=False)
    ST.add_tenant("globex")
    S["other"] = ST.add_user("globex", "gina")
    ST.add_tenant("initech")
    S["guesser"] = ST.add_user("initech", "ivan")
    ST.start()


def teardown():
    if ST is not None:
        ST.stop()


# ---- clients ----

def api(method, path, body=None, token=None, **kw):
    st, js, _, _ = ST.api(method, path, body, token=token, **kw)
    return st, js


def provision(name, serial, tags=None):
    """register -> claim by serial -> poll until 200; remembers the credentials."""
    js = ST.provision(serial, tags=tags)
    DEV[name] = {"device_id": js["device_id"], "device_secret": js["device_secret"],
                 "serial": serial}
    return DEV[name]["device_id"]


def dev_path(name, suffix=""):
    return "/api/v1/devices/%s%s" % (DEV[name]["device_id"], suffix)


def get(name, token=None):
    st, js = api("GET", dev_path(name), token=token)
    assert st == 200, (st, js)
    return js


def list_ids(query="", token=None):
    st, js = api("GET", "/api/v1/devices" + query, token=token)
    assert st == 200, (query, st, js)
    return [d["device_id"] for d in js["devices"]]


# ---- tests ----

def test_provision_and_list_filters():
    provision("a", "CON-A", {"site": "berlin", "ring": "1"})
    provision("b", "CON-B", {"site": "paris", "ring": "1"})
    provision("c", "CON-C")
    provision("d", "CON-D", {"site": "berlin:mitte"})
    a, b, c, d = (DEV[n]["device_id"] for n in "abcd")
    mine = sorted([a, b, c, d])
    assert list_ids() == mine
    # presence: nobody is connected
    assert list_ids("?presence=offline") == mine
    assert list_ids("?presence=online") == []
    # tag filters, percent-encoded values (a ':' inside the value is fine)
    assert list_ids("?tag=site:berlin") == [a]
    assert list_ids("?tag=site%3Aberlin") == [a]
    assert list_ids("?tag=" + urllib.parse.quote("site:berlin:mitte", safe="")) == [d]
    assert list_ids("?tag=ring:1") == sorted([a, b])
    assert list_ids("?tag=ring:1&presence=offline") == sorted([a, b])
    assert list_ids("?tag=ring:2") == []
    # pages
    seen, after = [], None
    while True:
        q = "?limit=1" + ("&after=" + after if after else "")
        st, js = api("GET", "/api/v1/devices" + q)
        assert st == 200, js
        seen += [x["device_id"] for x in js["devices"]]
        if js["next"] is None:
            break
        after = js["next"]
        assert len(seen) <= 10
    assert seen == mine
    # every bad parameter is a 400
    for q in ("presence=away", "presence=", "tag=site", "tag=:x", "tag=si%20te:x",
              "tag=k:%zz", "tag=k:%", "tag=k:%0A", "limit=0", "limit=501", "limit=x",
              "after=dev_nope", "bogus=1", "tag=a:b&tag=c:d", "limit"):
        st, js = api("GET", "/api/v1/devices?" + q)
        assert st == 400 and js["error"] == "bad_request", (q, st, js)
    # phyctl list with filters
    rc, out, err = ST.phyctl("--json", "devices", "list", "--tag", "site:berlin:mitte")
    assert rc == 0, err
    assert [x["device_id"] for x in json.loads(out)] == [d]
    rc, out, err = ST.phyctl("devices", "list", "--presence", "offline", "--tag", "ring:1",
                          "--limit", "1")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["DEVICE", "ID", "SERIAL", "NAME", "STATE", "PRESENCE", "LAST",
                                "SEEN", "CREATED"], lines
    assert len(lines) == 3 and a in out and b in out and "offline" in out, out
    rc, out, err = ST.phyctl("devices", "list", "--presence", "sometimes")
    assert rc == 2, (rc, err)


def test_get_device():
    dev = get("a")
    for k in ("device_id", "serial", "name", "tags", "state", "presence", "last_seen",
              "connected_at", "disconnected_at", "last_status", "last_status_at",
              "created_at", "twin"):
        assert k in dev, (k, dev)
    assert dev["presence"] == "offline" and dev["state"] == "provisioned", dev
    assert dev["last_seen"] is None and dev["last_status"] is None
    assert dev["tags"] == {"site": "berlin", "ring": "1"}
    twin = dev["twin"]
    assert twin["desired"] == {} and twin["reported"] == {}, twin
    assert twin["desired_version"] == 0 and twin["reported_version"] == 0, twin
    rc, out, err = ST.phyctl("devices", "get", DEV["a"]["device_id"])
    assert rc == 0, err
    assert re.search(r"^device_id +%s$" % DEV["a"]["device_id"], out, re.M), out
    assert re.search(r"^presence +offline$", out, re.M), out
    assert re.search(r"^tags +ring=1 site=berlin$", out, re.M), out
    assert "desired (version 0):\n  {}\n" in out, out
    rc, out, err = ST.phyctl("--json", "devices", "get", DEV["a"]["device_id"])
    assert rc == 0 and json.loads(out)["twin"]["desired_version"] == 0, (out, err)
    # unknown and malformed IDs
    st, js = api("GET", "/api/v1/devices/dev_" + "a" * 26)
    assert st == 404 and js["error"] == "not_found", js
    st, js = api("GET", "/api/v1/devices/dev_nope")
    assert st == 404, js
    rc, out, err = ST.phyctl("devices", "get", "dev_" + "a" * 26)
    assert rc == 1 and err.startswith("error: not_found: "), (rc, err)
    rc, out, err = ST.phyctl("devices", "get", "nonsense")
    assert rc == 2, (rc, err)
    # wrong method on a device path: 405 with Allow
    st, _, _, hdrs = ST.api("POST", dev_path("a"))
    assert st == 405 and hdrs.get("allow") == "GET, DELETE, PATCH", (st, hdrs)


def test_desired_patch_and_if_match():
    ident = DEV["a"]["device_id"]
    rc, out, err = ST.phyctl("twin", "set", ident, "mode=kiosk", "screen.brightness=80",
                          "screen.rotate=true", "debug=null", "label=\"42\"")
    assert rc == 0 and out == "desired version 1\n", (rc, out, err)
    tw = get("a")["twin"]
    assert tw["desired"] == {"mode": "kiosk", "screen": {"brightness": 80, "rotate": True},
                             "label": "42"}, tw
    assert tw["desired_version"] == 1
    rc, out, err = ST.phyctl("twin", "set", ident, "screen.rotate=null", "mode=null")
    assert rc == 0 and out == "desired version 2\n", (rc, out, err)
    assert get("a")["twin"]["desired"] == {"screen": {"brightness": 80}, "label": "42"}
    # a patch that changes nothing keeps the version
    rc, out, err = ST.phyctl("twin", "set", ident, "label=\"42\"")
    assert rc == 0 and out == "desired version 2\n", (rc, out, err)
    # If-Match: stale -> 412, current -> applied
    rc, out, err = ST.phyctl("twin", "set", "--if-match", "1", ident, "x=1")
    assert rc == 1 and err.startswith("error: precondition_failed: "), (rc, err)
    rc, out, err = ST.phyctl("twin", "set", ident, "x=1", "--if-match", "2")
    assert rc == 0 and out == "desired version 3\n", (rc, out, err)
    st, js, _, hdrs = ST.api("PATCH", dev_path("a", "/twin/desired"), {"y": [1, 2]},
                             content_type="application/merge-patch+json",
                             headers={"If-Match": '"3"'})
    assert st == 200 and js == {"version": 4} and hdrs.get("etag") == '"4"', (st, js, hdrs)
    st, js, _, hdrs = ST.api("PATCH", dev_path("a", "/twin/desired"), {"y": None},
                             headers={"If-Match": '"3"'})
    assert st == 412 and js["error"] == "precondition_failed", (st, js)
    st, js, _, _ = ST.api("PATCH", dev_path("a", "/twin/desired"), {"y": None},
                          headers={"If-Match": "4"})
    assert st == 200 and js == {"version": 5}, js
    # bad requests
    for hdr in ('W/"5"', '"5", "6"', "five", '""'):
        st, js, _, _ = ST.api("PATCH", dev_path("a", "/twin/desired"), {"z": 1},
                              headers={"If-Match": hdr})
        assert st == 400, (hdr, st, js)
    st, js, _, _ = ST.api("PATCH", dev_path("a", "/twin/desired"), raw=b'{"z":1}',
                          content_type="text/plain")
    assert st == 415, (st, js)
    for raw in (b"[1]", b"1", b"{bad", b'{"a":1,"a":2}'):
        st, js, _, _ = ST.api("PATCH", dev_path("a", "/twin/desired"), raw=raw)
        assert st == 400, (raw, st, js)
    assert get("a")["twin"]["desired_version"] == 5
    # twin patch FILE and stdin
    path = os.path.join(ST.dir, "patch.json")
    with open(path, "w") as f:
        json.dump({"screen": {"brightness": None, "mode": "night"}, "list": [1, {"k": "v"}]}, f)
    rc, out, err = ST.phyctl("twin", "patch", ident, path)
    assert rc == 0 and out == "desired version 6\n", (rc, out, err)
    rc, out, err = ST.phyctl("twin", "patch", ident, "-", stdin='{"list": null}')
    assert rc == 0 and out == "desired version 7\n", (rc, out, err)
    assert get("a")["twin"]["desired"] == {"screen": {"mode": "night"}, "label": "42",
                                           "x": 1}, get("a")["twin"]
    rc, out, err = ST.phyctl("twin", "patch", ident, "-", stdin="[1, 2]")
    assert rc == 1 and "JSON object" in err, (rc, err)
    rc, out, err = ST.phyctl("twin", "patch", ident, os.path.join(ST.dir, "missing.json"))
    assert rc == 1, (rc, err)
    rc, out, err = ST.phyctl("twin", "set", ident, "a=1", "a.b=2")
    assert rc == 2, (rc, err)
    rc, out, err = ST.phyctl("twin", "set", ident)
    assert rc == 2, (rc, err)
    # limits: depth over 10 and size over 32 KiB are 413 twin_too_large
    deep = {}
    cur = deep
    for _ in range(10):
        cur["n"] = {}
        cur = cur["n"]
    st, js = api("PATCH", dev_path("b", "/twin/desired"), deep)
    assert st == 413 and js["error"] == "twin_too_large", (st, js)
    for i in range(2):
        st, js = api("PATCH", dev_path("b", "/twin/desired"), {"blob%d" % i: "x" * 12000})
        assert st == 200, (st, js)
    st, js = api("PATCH", dev_path("b", "/twin/desired"), {"blob2": "x" * 12000})
    assert st == 413 and js["error"] == "twin_too_large", (st, js)
    st, js = api("PATCH", dev_path("b", "/twin/desired"), {"blob0": None, "blob1": None})
    assert st == 200 and js["version"] == 3, (st, js)
    assert get("b")["twin"]["desired"] == {}


def test_fleet_patch_by_tag():
    va, vb, vc = (get(n)["twin"]["desired_version"] for n in "abc")
    st, js = api("PATCH", "/api/v1/twins/desired?tag=ring:1", {"fw": "2.0"},
                 content_type="application/merge-patch+json")
    assert st == 200 and js == {"matched": 2}, (st, js)
    for n, v in (("a", va), ("b", vb)):
        tw = get(n)["twin"]
        assert tw["desired"]["fw"] == "2.0" and tw["desired_version"] == v + 1, (n, tw)
    assert get("c")["twin"]["desired_version"] == vc and "fw" not in get("c")["twin"]["desired"]
    # the same patch again matches both but changes nothing
    st, js = api("PATCH", "/api/v1/twins/desired?tag=ring%3A1", {"fw": "2.0"})
    assert st == 200 and js == {"matched": 2}, js
    assert get("a")["twin"]["desired_version"] == va + 1
    st, js = api("PATCH", "/api/v1/twins/desired?tag=ring:9", {"fw": "3.0"})
    assert st == 200 and js == {"matched": 0}, js
    # another tenant with the same tag matches none of acme's devices
    st, js = api("PATCH", "/api/v1/twins/desired?tag=ring:1", {"fw": "evil"}, token=S["other"])
    assert st == 200 and js == {"matched": 0}, js
    assert get("a")["twin"]["desired"]["fw"] == "2.0"
    for q in ("", "?tag=ring", "?tag=", "?site=x", "?tag=ring:1&tag=site:x"):
        st, js = api("PATCH", "/api/v1/twins/desired" + q, {"fw": "x"})
        assert st == 400, (q, st, js)
    st, js = api("PATCH", "/api/v1/twins/desired?tag=ring:1", None, raw=b"[]")
    assert st == 400, js
    st, _, _, hdrs = ST.api("POST", "/api/v1/twins/desired?tag=ring:1")
    assert st == 405 and hdrs.get("allow") == "PATCH", (st, hdrs)


def test_tags_put():
    ident = DEV["c"]["device_id"]
    rc, out, err = ST.phyctl("tags", "set", ident, "ring=2", "site=oslo")
    assert rc == 0, err
    assert re.search(r"^tags +ring=2 site=oslo$", out, re.M), out
    assert get("c")["tags"] == {"ring": "2", "site": "oslo"}
    assert list_ids("?tag=ring:2") == [ident]
    assert list_ids("?tag=site:oslo") == [ident]
    st, js = api("PUT", dev_path("c", "/tags"), {"ring": "3"})
    assert st == 200 and js["tags"] == {"ring": "3"} and js["device_id"] == ident, js
    assert list_ids("?tag=site:oslo") == []
    for bad in ({"ring": 3}, {"bad key": "x"}, {"k": "x" * 129}, {"k%d" % i: "v" for i in range(33)}):
        st, js = api("PUT", dev_path("c", "/tags"), bad)
        assert st == 400, (bad, st, js)
    st, js = api("PUT", dev_path("c", "/tags"), None, raw=b"[]")
    assert st == 400, js
    rc, out, err = ST.phyctl("--json", "tags", "set", ident)
    assert rc == 0 and json.loads(out)["tags"] == {}, (out, err)
    rc, out, err = ST.phyctl("tags", "set", ident, "k=1", "k=2")
    assert rc == 2, err


def test_other_tenant_gets_404_everywhere():
    other = S["other"]
    assert list_ids(token=other) == []
    ident = DEV["a"]["device_id"]
    before = get("a")
    calls = [("GET", "", None), ("PATCH", "/twin/desired", {"evil": 1}),
             ("PUT", "/tags", {"evil": "1"}), ("POST", "/revoke", None),
             ("POST", "/reset", None), ("DELETE", "", None)]
    for method, suffix, body in calls:
        st, js = api(method, dev_path("a", suffix), body, token=other)
        assert st == 404 and js["error"] == "not_found", (method, suffix, st, js)
    for args in (("devices", "get", ident), ("twin", "set", ident, "evil=1"),
                 ("tags", "set", ident, "evil=1"), ("revoke", ident), ("reset", ident),
                 ("delete", ident)):
        rc, out, err = ST.phyctl(*args, token=other)
        assert rc == 1 and err.startswith("error: not_found: "), (args, rc, err)
    after = get("a")
    assert after == before, (before, after)
    # and without a token: 401
    st, js, _, hdrs = ST.request("GET", dev_path("a"))
    assert st == 401 and hdrs.get("www-authenticate", "").startswith("Bearer"), (st, hdrs)


def test_revoke_reset_delete():
    # revoke
    ident = DEV["b"]["device_id"]
    rc, out, err = ST.phyctl("revoke", ident)
    assert rc == 0 and out == "revoked %s (serial CON-B)\n" % ident, (rc, out, err)
    assert get("b")["state"] == "revoked"
    st, js = api("PATCH", dev_path("b", "/twin/desired"), {"x": 1})
    assert st == 404, (st, js)
    # a fleet patch skips revoked devices
    st, js = api("PATCH", "/api/v1/twins/desired?tag=ring:1", {"fw": "2.1"})
    assert st == 200 and js == {"matched": 1}, js
    # the serial stays spent
    st, js, _, _ = ST.request("POST", "/v1/provisioning/register", {"serial": "CON-B"})
    assert st == 410, (st, js)

    # reset: revoked, and the serial can be claimed once more
    ident = DEV["d"]["device_id"]
    st, js = api("POST", dev_path("d", "/reset"))
    assert st == 200 and js == {"device_id": ident, "serial": "CON-D", "state": "revoked",
                                "rearmed": True}, js
    old = ident
    new = provision("d2", "CON-D")
    assert new != old and ID_RE.match(new)
    assert get("d2")["state"] == "provisioned"
    # resetting the old device again cannot re-arm the serial: d2 holds it now
    st, js = api("POST", dev_path("d", "/reset"))
    assert st == 200 and js["rearmed"] is False, (st, js)
    assert get("d2")["state"] == "provisioned"
    # Claiming it again: the same user within minutes is a retry and gets d2 (200);
    # another user is refused.
    st, js = api("POST", "/api/v1/devices/claim", {"serial": "CON-D"})
    assert st == 200 and js["device_id"] == new, (st, js)
    st, js, _, _ = ST.api("POST", "/api/v1/devices/claim", {"serial": "CON-D"},
                          token=ST.add_user("acme", "carl"))
    assert st in (404, 409), (st, js)
    rc, out, err = ST.phyctl("reset", new)
    assert rc == 0 and "CON-D" in out, (rc, out, err)
    provision("d3", "CON-D")

    # delete: 204 without a body, then gone
    st, js, raw, hdrs = ST.api("DELETE", dev_path("c"))
    assert st == 204 and raw == b"" and "content-length" not in hdrs, (st, raw, hdrs)
    st, js = api("GET", dev_path("c"))
    assert st == 404, js
    st, js = api("DELETE", dev_path("c"))
    assert st == 404, js
    assert DEV["c"]["device_id"] not in list_ids()
    rc, out, err = ST.phyctl("delete", DEV["d3"]["device_id"])
    assert rc == 0 and out == "deleted %s\n" % DEV["d3"]["device_id"], (rc, out, err)
    rc, out, err = ST.phyctl("delete", DEV["d3"]["device_id"])
    assert rc == 1 and err.startswith("error: not_found"), (rc, err)


def test_keepalive_after_204_and_errors():
    # A 204 and error answers keep the connection usable (framing is right).
    conn = ST.connection()
    h = {"Authorization": "Bearer " + ST.token}
    try:
        ident = provision("e", "CON-E")
        for method, path, want in (("DELETE", "/api/v1/devices/" + ident, 204),
                                   ("GET", "/api/v1/devices/" + ident, 404),
                                   ("GET", "/api/v1/devices?limit=0", 400),
                                   ("GET", "/healthz", 200)):
            conn.request(method, path, headers=h)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == want, (method, path, resp.status)
    finally:
        conn.close()


def test_presence_and_revoke_with_a_live_session():
    """A device session (the test's own WebSocket client) shows as online in the
    list filter and in get; revoke closes it with 4001 and later upgrades get 401."""
    ident = provision("f", "CON-F", {"ring": "live"})
    st, _, ws = ST.ws_connect(DEV["f"])
    assert st == 101, st
    try:
        wait_until(lambda: ident in list_ids("?presence=online"), 5, "device online")
        assert ident not in list_ids("?presence=offline")
        assert list_ids("?presence=online&tag=ring:live") == [ident]
        dev = get("f")
        assert dev["presence"] == "online" and dev["connected_at"] and dev["last_seen"], dev
        assert dev["state"] == "active", dev
        rc, out, err = ST.phyctl("revoke", ident)
        assert rc == 0, err
        assert ws.expect_close(5) == 4001
    finally:
        ws.s.close()
    wait_until(lambda: ident in list_ids("?presence=offline"), 5, "device offline")
    dev = get("f")
    assert dev["disconnected_at"] and dev["state"] == "revoked", dev
    st, _, ws2 = ST.ws_connect(DEV["f"])
    ws2.s.close()
    assert st == 401, st


class Follower:
    """`phyctl events` in the background; its stdout lines collected by a thread."""

    def __init__(self, *args, token=None):
        argv, env = ST.phyctl_command(*args, "events", token=token)
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, regex, timeout=5):
        rx = re.compile(regex)
        return wait_until(lambda: next((l for l in self.lines if rx.search(l)), None), timeout,
                          "phyctl events line /%s/ (got %r)" % (regex, self.lines))

    def stop(self, sig):
        self.proc.send_signal(sig)
        rc = self.proc.wait(10)
        self.t.join(5)
        return rc


def test_phyctl_events_follows_the_stream():
    ident = provision("g", "CON-G")
    opened = len(ST.hub.log_lines(r"events_open"))
    text = Follower()
    js = Follower("--json")
    other = Follower(token=S["other"])  # another tenant's stream
    try:
        wait_until(lambda: len(ST.hub.log_lines(r"events_open")) >= opened + 3, 5,
                   "three event streams open")
        st, _, ws = ST.ws_connect(DEV["g"])
        assert st == 101, st
        text.wait_line(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ online %s$" % ident)
        line = js.wait_line(r'"online"')
        assert json.loads(line) == {"device_id": ident, "type": "online"}, line
        ws.close()
        text.wait_line(r"Z offline %s$" % ident)
        js.wait_line(r'"offline"')
    finally:
        rc_text = text.stop(signal.SIGINT)
        rc_json = js.stop(signal.SIGTERM)
        rc_other = other.stop(signal.SIGTERM)
    assert rc_text == 0 and rc_json == 0, (rc_text, rc_json, text.proc.stderr.read())
    assert rc_other == 0 and other.lines == [], other.lines
    bad = Follower(token="not-a-token")
    assert bad.proc.wait(10) == 1
    assert bad.proc.stderr.read().startswith("error: unauthorized: ")


def test_concurrent_wrong_claims_cannot_overshoot_the_throttle():
    """30 wrong codes at once from one user: exactly 10 (the per-user limit) are
    looked up (404), every other one is 429; malformed codes are never counted."""
    for _ in range(3):
        st, js = api("POST", "/api/v1/devices/claim", {"code": "0OO1IL"}, token=S["guesser"])
        assert st == 400, (st, js)
    results = []

    def guess(i):
        code = "".join("ABCDEFGHJKMNPQRSTUVWXYZ23456789"[(i * 7 + k) % 31] for k in range(6))
        st, js = api("POST", "/api/v1/devices/claim", {"code": code}, token=S["guesser"])
        results.append((st, js.get("error")))
    threads = [threading.Thread(target=guess, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 30
    assert sorted(set(results)) == [(404, "expired_code"), (429, "too_many_attempts")], results
    assert results.count((404, "expired_code")) == 10, results


def test_no_secret_in_logs():
    assert len(ST.secrets) > 4
    leaked = ST.leaked_secrets()
    assert not leaked, leaked
    log = ST.hub.log()
    # the access lines carry the facts
    assert re.search(r"method=PATCH path=/api/v1/devices/dev_\w+/twin/desired status=200 .*"
                     r"tenant=acme device_id=dev_", log), log[-2000:]


def test_hub_stops_cleanly():
    assert ST.hub.stop() == 0, ST.hub.tail()


if __name__ == "__main__":
    phytest.main()
