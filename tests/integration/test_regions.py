"""Multi-region provisioning end to end (docs/protocol.md section 3): phyhub eu
(provisioning + internal API), phyhub au and uae (claims through eu), one phyproxy
routing portal-{eu,au,uae}.phystack.com to them, phyagent, each region with its own
store and tenant. Claims in a region, delivery through eu, the session in the device's
region, what eu keeps afterwards (data residency), failures of either side, forged
inter-region keys and claims racing across regions."""

import contextlib
import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
from phytest import binary, wait_until  # noqa: E402
from regions import EuForwarder, Regions, host, read_json, sha256_hex, write_key  # noqa: E402
from stack import is_postgresql, psql  # noqa: E402

R = None    # the Regions of this file's run
S = {}      # what a test leaves for a later one
DEV_RE = re.compile(r"^dev_[a-z2-7]{26}$")


def setup():
    global R
    R = Regions("regions")


def teardown():
    if R is not None:
        R.stop()


# ---- helpers ----

def serial(tag):
    """A serial not used before in this run."""
    S["n"] = S.get("n", 0) + 1
    return "%s-%d-%d" % (tag, os.getpid() % 10000, S["n"])


def issuance(serial_):
    """eu's issuances row of a serial as a dict, or None."""
    rows = R.query("eu", "SELECT serial, code, token_hash, device_id, sealed, delivered_ms,"
                         " region FROM issuances WHERE serial = ?", (serial_,))
    if not rows:
        return None
    keys = ("serial", "code", "token_hash", "device_id", "sealed", "delivered_ms", "region")
    return dict(zip(keys, rows[0]))


def eu_snapshot():
    """eu's bootstrap state: every issuances and registrations row."""
    return (sorted(R.query("eu", "SELECT * FROM issuances")),
            sorted(R.query("eu", "SELECT * FROM registrations")))


def devices_with_serial(name, serial_):
    return R.query(name, "SELECT device_id, state FROM devices WHERE serial = ?", (serial_,))


def internal_log_count(path_regex=r"path=/internal/v1/issuances "):
    return len(R.hubs["eu"].daemon.log_lines(r"event=http .*" + path_regex))


def claim_pending(name, serial_):
    """Registers serial (as its device would) and claims it in region `name`: returns
    (poll token, device)."""
    token = R.register(serial_)
    st, dev, _, _ = R.claim(name, serial=serial_)
    assert st == 201, (name, st, dev)
    assert dev["state"] == "pending_delivery" and dev["serial"] == serial_, dev
    return token, dev


# ---- tests ----

def test_au_claim_by_code_delivery_and_session_in_au():
    sn = serial("AU-KIOSK")
    agent, state = R.start_agent(sn, ["--status-interval", "1", "--reconnect-min", "1",
                                      "--reconnect-max", "2"])
    code = wait_until(lambda: R.agent_code(state), 15, "the agent's provisioning code")
    st, dev, _, _ = R.claim("au", code=code.lower(), name="lobby")
    assert st == 201, (st, dev)
    assert dev["state"] == "pending_delivery", dev
    assert dev["serial"] == sn and dev["name"] == "lobby", dev
    dev_id = dev["device_id"]
    assert DEV_RE.match(dev_id), dev
    # eu now holds the issuance for the serial, for region au (its device ID until the
    # device's first session in au, which may come at any moment now).
    iss = issuance(sn)
    assert iss and iss["region"] == "au", iss
    assert iss["device_id"] == dev_id or (iss["device_id"] == "" and iss["delivered_ms"]), iss

    creds = wait_until(lambda: R.credentials(state), 20, "the agent's credentials")
    assert creds["device_id"] == dev_id, creds
    assert creds["tenant"] == R.hubs["au"].tenant and creds["region"] == "au", creds
    assert creds["endpoint"] == host("au") + ":443", creds
    assert stat.S_IMODE(os.stat(os.path.join(state, "credentials.json")).st_mode) == 0o600
    # au stores the secret as its SHA-256 only.
    rows = R.query("au", "SELECT secret_hash, tenant_id, remote FROM devices WHERE device_id = ?",
                   (dev_id,))
    assert rows and rows[0][0] == sha256_hex(creds["device_secret"]) and rows[0][2] == 1, rows
    agent.wait_log(r"event=connected device_id=%s endpoint=%s:443" % (dev_id, host("au")), 15)

    def active_online():
        d = R.device("au", dev_id)
        return d if d["state"] == "active" and d["presence"] == "online" else None
    d = wait_until(active_online, 10, "au's device active and online")
    assert d["serial"] == sn, d
    wait_until(lambda: (R.device("au", dev_id).get("last_status") or {}).get("agent_version"),
               10, "a status report in au")

    # A desired change on au reaches the device's config.json, and it reports back.
    st, js, _, h = R.api("au", "PATCH", "/api/v1/devices/%s/twin/desired" % dev_id,
                         {"color": "teal", "volume": 7})
    assert st == 200, (st, js)
    v = js["version"]
    assert v >= 1, js
    wait_until(lambda: read_json(os.path.join(state, "config.json")) ==
               {"color": "teal", "volume": 7}, 10, "config.json following au's twin")

    def applied():
        cs = R.device("au", dev_id)["twin"]["reported"].get("config_status")
        return cs if cs and cs["version"] == v else None
    cs = wait_until(applied, 10, "config_status of version %d reported to au" % v)
    assert cs["exit_code"] == 0, cs

    # The device's data lives in au only.
    for table in ("devices", "twins"):
        assert R.query("eu", "SELECT count(*) FROM %s WHERE device_id = ?" % table,
                       (dev_id,))[0][0] == 0, table
    assert R.query("eu", "SELECT count(*) FROM devices")[0][0] == 0
    assert R.scan_db("uae", [dev_id, sn, creds["device_secret"]]) == []
    assert R.query("au", "SELECT count(*) FROM twins WHERE device_id = ?", (dev_id,))[0][0] == 1

    # The proxy carried provisioning to portal-eu (as sn_<serial>) and the session to
    # portal-au (as the device ID); tunnels are logged when they end.
    assert agent.stop() == 0, agent.tail()
    eu_port, au_port = R.hubs["eu"].port, R.hubs["au"].port
    R.proxy.wait_log(r"event=tunnel ident=sn_%s target=%s:443 upstream=127\.0\.0\.1:%d "
                     % (re.escape(sn), re.escape(host("eu")), eu_port), 5)
    R.proxy.wait_log(r"event=tunnel ident=%s target=%s:443 upstream=127\.0\.0\.1:%d .*outcome=ok"
                     % (dev_id, re.escape(host("au")), au_port), 5)
    assert not R.proxy.log_lines(r"event=tunnel ident=%s target=%s" % (dev_id,
                                                                      re.escape(host("eu"))))
    S["au"] = {"serial": sn, "device_id": dev_id, "secret": creds["device_secret"],
               "state": state}


def test_residency_eu_keeps_only_the_spent_mark():
    a = S["au"]
    sn, dev_id, secret = a["serial"], a["device_id"], a["secret"]
    # au told eu about the first session (outbox DELETE), or eu's sweep purged it after
    # the grace: either way only the spent mark remains.
    def purged():
        iss = issuance(sn)
        return iss if iss and iss["sealed"] is None and iss["device_id"] == "" else None
    iss = wait_until(purged, 10, "eu to erase the au issuance")
    assert iss["region"] == "au" and iss["delivered_ms"], iss
    au = R.hubs["au"]
    au.daemon.wait_log(r"event=outbox_sent device_id=%s " % dev_id, 5)
    # eu's access log shows the call without naming the foreign device
    R.hubs["eu"].daemon.wait_log(r"event=http .*method=DELETE path=/internal/v1/issuances/\{id\} "
                                 r"status=204", 5)
    assert not R.hubs["eu"].daemon.log_lines(re.escape(dev_id)), "eu's log names the au device"

    # A device of uae, delivered but never connected: uae never reports a session,
    # so eu's sweep ends the issuance itself once the grace (3 s) after delivery passed.
    usn = serial("UAE-PANEL")
    utoken, udev = claim_pending("uae", usn)
    st, body1, raw1, _ = R.poll_until(usn, utoken)
    assert st == 200 and body1["device_id"] == udev["device_id"], (st, body1)
    assert body1["region"] == "uae" and body1["endpoint"] == host("uae") + ":443", body1
    assert body1["tenant"] == R.hubs["uae"].tenant, body1
    st, _, raw2, _ = R.poll_settled(usn, utoken)   # within the grace: the same bytes
    assert st == 200 and raw2 == raw1, st

    def uae_purged():
        iss = issuance(usn)
        return iss if iss and iss["sealed"] is None and iss["device_id"] == "" else None
    iss = wait_until(uae_purged, 10, "eu's sweep to erase the delivered uae issuance")
    assert iss["region"] == "uae", iss
    st, js, _, _ = R.poll_settled(usn, utoken)
    assert st == 410 and js["error"] == "already_provisioned", (st, js)
    assert not R.hubs["uae"].daemon.log_lines(r"event=outbox_sent device_id=" +
                                              udev["device_id"])

    # Nothing of either device, tenant, user or token anywhere in eu's store.
    needles = [dev_id, secret, sha256_hex(secret), au.tenant, au.user, au.token,
               sha256_hex(au.token), udev["device_id"], body1["device_secret"],
               sha256_hex(body1["device_secret"]), R.hubs["uae"].tenant, R.hubs["uae"].user,
               R.hubs["uae"].token]
    hits = R.scan_db("eu", needles)
    assert hits == [], "found in eu's store: %s" % hits
    # Nor in the raw bytes of eu.db / eu.db-wal (secure_delete, WAL checkpoint + truncate).
    # Not on PostgreSQL: it keeps purged row versions until VACUUM and in its WAL
    # (docs/store.md, erasure), and its files are the server's.
    if not is_postgresql(R.hubs["eu"].db):
        raw = [dev_id, secret, udev["device_id"], body1["device_secret"], au.tenant]
        hits = R.raw_hits("eu", raw)
        assert hits == [], "found in eu's files: %s" % hits

    # Each region's store holds only its own devices.
    au_rows = R.query("au", "SELECT d.device_id, t.name, t.region FROM devices d"
                            " JOIN tenants t ON t.id = d.tenant_id")
    assert au_rows and all(r[1] == au.tenant and r[2] == "au" for r in au_rows), au_rows
    assert R.query("au", "SELECT count(*) FROM devices")[0][0] == len(au_rows)
    uae_rows = R.query("uae", "SELECT d.device_id, t.name, t.region FROM devices d"
                              " JOIN tenants t ON t.id = d.tenant_id")
    assert uae_rows and all(r[1] == R.hubs["uae"].tenant and r[2] == "uae"
                            for r in uae_rows), uae_rows
    assert R.query("uae", "SELECT count(*) FROM devices")[0][0] == len(uae_rows)
    assert R.scan_db("au", [udev["device_id"], usn, body1["device_secret"],
                            R.hubs["uae"].tenant]) == []
    assert R.scan_db("uae", [dev_id, sn, secret, au.tenant]) == []


@contextlib.contextmanager
def store_down(name):
    """Hub `name`'s store fails inside the block. SQLite: another connection holds its
    write lock (BEGIN EXCLUSIVE). PostgreSQL: the database refuses connections and the
    hub's are ended (the cluster is shared: it cannot stop)."""
    db = R.hubs[name].db
    if not is_postgresql(db):
        conn = sqlite3.connect(db, timeout=5, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    base, dbname = db.rsplit("/", 1)
    psql(base + "/postgres", 'ALTER DATABASE "%s" ALLOW_CONNECTIONS false' % dbname)
    try:
        psql(base + "/postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                 " WHERE datname = '%s'" % dbname)
        yield
    finally:
        psql(base + "/postgres", 'ALTER DATABASE "%s" ALLOW_CONNECTIONS true' % dbname)


def test_au_store_down_answers_503_and_eu_is_not_called():
    sn = serial("AU-LOCKED")
    token = R.register(sn)
    before_calls = internal_log_count()
    before_devices = R.query("au", "SELECT count(*) FROM devices")[0][0]
    with store_down("au"):
        t0 = time.monotonic()
        st, js, _, _ = R.claim("au", serial=sn, timeout=40)
        took = time.monotonic() - t0
    assert st == 503 and js["error"] == "store_unavailable", (st, js)
    assert took < 30, took
    assert internal_log_count() == before_calls, "au called eu although its store failed"
    assert issuance(sn) is None
    assert R.query("au", "SELECT count(*) FROM devices")[0][0] == before_devices
    st, js, _, _ = R.poll_settled(sn, token)
    assert st == 202 and js["status"] == "authorization_pending", (st, js)
    # The store is back: the same claim succeeds.
    st, dev, _, _ = R.claim("au", serial=sn)
    assert st == 201 and dev["state"] == "pending_delivery", (st, dev)


def test_au_hub_killed_claim_refused_and_eu_untouched():
    sn = serial("AU-DOWN")
    token = R.register(sn)
    before_calls = internal_log_count()
    R.kill_hub("au")
    try:
        try:
            R.claim("au", serial=sn, timeout=5)
        except ConnectionRefusedError:
            pass
        else:
            raise AssertionError("a claim reached a killed hub")
        assert issuance(sn) is None
        assert internal_log_count() == before_calls
        st, js, _, _ = R.poll_settled(sn, token)
        assert st == 202, (st, js)
    finally:
        R.start_hub("au")
    st, dev, _, _ = R.claim("au", serial=sn)
    assert st == 201, (st, dev)


def test_eu_down_503_and_no_device_left_then_claim_succeeds():
    sn = serial("AU-EUDOWN")
    token = R.register(sn)
    before = sorted(R.query("au", "SELECT device_id, state FROM devices"))
    R.kill_hub("eu")
    try:
        t0 = time.monotonic()
        st, js, _, h = R.claim("au", serial=sn, timeout=30)
        took = time.monotonic() - t0
        assert st == 503 and js["error"] == "provisioning_unavailable", (st, js)
        assert h.get("retry-after", "").isdigit(), h
        assert took < 10, took
        # Connection refused: nothing can have reached eu, so nothing is left in au,
        # not even a hidden 'claiming' row (or an outbox entry for it).
        assert sorted(R.query("au", "SELECT device_id, state FROM devices")) == before
        assert devices_with_serial("au", sn) == []
        assert R.query("au", "SELECT count(*) FROM devices WHERE state = 'claiming'")[0][0] == 0
        assert R.query("au", "SELECT count(*) FROM outbox WHERE device_id NOT IN"
                             " (SELECT device_id FROM devices)")[0][0] == 0
        R.hubs["au"].daemon.wait_log(r"event=claim_no_answer .*lost=0", 2)
    finally:
        R.start_hub("eu")
    st, dev, _, _ = R.claim("au", serial=sn)
    assert st == 201 and dev["state"] == "pending_delivery", (st, dev)
    st, js, _, _ = R.poll_until(sn, token)
    assert st == 200 and js["device_id"] == dev["device_id"] and js["region"] == "au", (st, js)


def issue_body(serial_, region, dev_id="dev_" + "a" * 26):
    return {"serial": serial_, "device_id": dev_id, "device_secret": "S" * 43,
            "tenant": "forged-tenant", "region": region, "endpoint": host(region) + ":443",
            "not_after": int(time.time() * 1000) + 60000}


def test_forged_or_missing_inter_region_key():
    sn = serial("FORGE")
    token = R.register(sn)
    eu = R.hubs["eu"].daemon
    before = eu_snapshot()
    fails = len(eu.log_lines(r"event=inter_region_auth_failed"))
    body = issue_body(sn, "au")
    st, js, _, h = R.internal("POST", "/internal/v1/issuances", body)
    assert st == 401 and js["error"] == "unauthorized", (st, js)
    assert h.get("www-authenticate", "").startswith("Bearer"), h
    st, js, _, _ = R.internal("POST", "/internal/v1/issuances", body, key="x" * 43)
    assert st == 401, (st, js)
    st, js, _, _ = R.internal("POST", "/internal/v1/issuances", body,
                              authorization="Basic " + R.read_key("au"))
    assert st == 401, (st, js)
    # A regional hub's key with a prefix or suffix is no key.
    st, js, _, _ = R.internal("POST", "/internal/v1/issuances", body, key=R.read_key("au") + "x")
    assert st == 401, (st, js)
    # au's key cannot issue for uae.
    st, js, _, _ = R.internal("POST", "/internal/v1/issuances", issue_body(sn, "uae"),
                              key=R.read_key("au"))
    assert st == 403 and js["error"] == "wrong_region", (st, js)
    # au's key cannot send its devices anywhere but au's pinned endpoint (issue 10, 11).
    evil = dict(issue_body(sn, "au"), endpoint="evil.example.com:443")
    st, js, _, _ = R.internal("POST", "/internal/v1/issuances", evil, key=R.read_key("au"))
    assert st == 403 and js["error"] == "wrong_endpoint", (st, js)
    # A request eu receives after its deadline issues nothing (its region gave up).
    late = dict(issue_body(sn, "au"), not_after=int(time.time() * 1000) - 1)
    st, js, _, _ = R.internal("POST", "/internal/v1/issuances", late, key=R.read_key("au"))
    assert st == 410 and js["error"] == "request_expired", (st, js)
    no_deadline = issue_body(sn, "au")
    del no_deadline["not_after"]
    st, js, _, _ = R.internal("POST", "/internal/v1/issuances", no_deadline, key=R.read_key("au"))
    assert st == 400, (st, js)
    # The other internal paths are guarded too.
    for method, path, b in (("DELETE", "/internal/v1/issuances/dev_" + "a" * 26, None),
                            ("POST", "/internal/v1/issuances/dev_%s/cancel" % ("a" * 26), None),
                            ("POST", "/internal/v1/serials/rearm", {"serial": sn})):
        st, js, _, _ = R.internal(method, path, b, key="y" * 40)
        assert st == 401, (method, path, st, js)
    lines = eu.log_lines(r"event=inter_region_auth_failed")
    assert len(lines) - fails == 7, lines[fails:]
    assert any("reason=missing" in l for l in lines[fails:]), lines
    assert any("reason=unknown_key" in l for l in lines[fails:]), lines
    assert eu_snapshot() == before, "eu's store changed on forged calls"
    # The internal API exists on eu only.
    st, js, _, _ = R.request("au", "POST", "/internal/v1/issuances", body,
                             headers={"Authorization": "Bearer " + R.read_key("au")})
    assert st == 404, (st, js)
    st, js, _, _ = R.poll_settled(sn, token)
    assert st == 202, (st, js)

    # An au hub whose key eu does not know: 502 provisioning_refused, no device row.
    R.add_hub("au2", "au", tenant=("wombat-two", "bruce-au"))
    R.start_hub("au2")
    try:
        st, js, _, _ = R.claim("au2", serial=sn)
        assert st == 502 and js["error"] == "provisioning_refused", (st, js)
        assert R.query("au2", "SELECT count(*) FROM devices")[0][0] == 0
        assert R.query("au2", "SELECT count(*) FROM outbox")[0][0] == 0
        R.hubs["au2"].daemon.wait_log(r"event=claim_refused_by_eu status=401", 2)
    finally:
        R.kill_hub("au2")
    assert eu_snapshot()[0] == before[0], "eu issued for an unknown key"


def race(sn):
    """au and uae claim sn at the same moment; returns {name: (status, body)}."""
    barrier = threading.Barrier(2)
    out = {}

    def run(name):
        barrier.wait()
        try:
            st, js, _, _ = R.claim(name, serial=sn)
            out[name] = (st, js)
        except Exception as e:  # reported by the caller
            out[name] = (None, repr(e))
    threads = [threading.Thread(target=run, args=(n,)) for n in ("au", "uae")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_same_serial_claimed_from_two_regions_at_once():
    wins = {"au": 0, "uae": 0}
    for i in range(6):
        sn = serial("RACE")
        token = R.register(sn)
        out = race(sn)
        codes = sorted(v[0] for v in out.values() if v[0] is not None)
        assert codes == [201, 409], out
        winner = [n for n, v in out.items() if v[0] == 201][0]
        loser = "uae" if winner == "au" else "au"
        wins[winner] += 1
        assert out[loser][1]["error"] == "already_claimed", out
        dev = out[winner][1]
        assert devices_with_serial(winner, sn) == [(dev["device_id"], "pending_delivery")]
        assert devices_with_serial(loser, sn) == [], loser
        assert R.query(loser, "SELECT count(*) FROM devices WHERE state = 'claiming'")[0][0] == 0
        iss = issuance(sn)
        assert iss["region"] == winner and iss["device_id"] == dev["device_id"], iss
        if i == 0:  # the device gets the winner's credentials
            st, js, _, _ = R.poll_until(sn, token)
            assert st == 200 and js["region"] == winner, (st, js)
            assert js["device_id"] == dev["device_id"], js
    print("race winners: %s" % wins)


def test_lost_answer_claim_is_cancelled_or_rolled_forward():
    """eu issues but its answer never reaches au (a read timeout after the request was
    sent): au answers 503 and keeps the device hidden ('claiming') with a cancel entry;
    when it falls due (hold = 2 x the call budget = 8 s here) au cancels at eu. A
    device that never fetched its credentials is cancelled (gone in au, claimable
    again); one that fetched them is kept (rolled forward to pending_delivery)."""
    fwd = EuForwarder(R, hold_s=2.5)
    R.add_hub("au-lossy", "au", key_file=R.hubs["au"].key_file,
              tenant=("wombat-lossy", "lossy-ops"),
              flags=["--provisioning-url", fwd.url, "--inter-region-timeout", "1",
                     "--inter-region-attempts", "1"])
    R.start_hub("au-lossy")
    out = {}
    S["lossy"] = out
    try:
        for tag in ("cancel", "early", "late"):
            sn = serial("LOSSY-" + tag)
            token = R.register(sn)
            fwd.drop_answer(lambda m, p: m == "POST" and p == "/internal/v1/issuances")
            t0 = time.monotonic()
            st, js, _, h = R.claim("au-lossy", serial=sn)
            assert st == 503 and js["error"] == "provisioning_unavailable", (tag, st, js)
            assert h.get("retry-after", "").isdigit(), h
            rows = devices_with_serial("au-lossy", sn)
            assert len(rows) == 1 and rows[0][1] == "claiming", (tag, rows)
            dev_id = rows[0][0]
            iss = issuance(sn)   # eu did issue
            assert iss and iss["device_id"] == dev_id and iss["region"] == "au", (tag, iss)
            # Hidden from the console, with a cancel entry in the outbox.
            st, lst, _, _ = R.api("au-lossy", "GET", "/api/v1/devices")
            assert st == 200 and dev_id not in [d["device_id"] for d in lst["devices"]], lst
            st, _, _, _ = R.api("au-lossy", "GET", "/api/v1/devices/" + dev_id)
            assert st == 404, st
            assert R.query("au-lossy", "SELECT count(*) FROM outbox WHERE device_id = ?",
                           (dev_id,))[0][0] == 1
            out[tag] = {"serial": sn, "token": token, "device_id": dev_id, "t0": t0}
        assert [x[3] for x in fwd.seen if x[0] == "POST" and x[1] == "/internal/v1/issuances"] \
            == [True, True, True], fwd.seen

        # "early" fetches its credentials at once, "late" shortly before its cancel is
        # due (its claim started at t0: due at t0 + 8 s; eu's grace is 3 s).
        e = out["early"]
        st, js, _, _ = R.poll_until(e["serial"], e["token"])
        assert st == 200 and js["device_id"] == e["device_id"], (st, js)
        assert js["tenant"] == "wombat-lossy" and js["region"] == "au", js
        e["creds"] = js
        late = out["late"]
        time.sleep(max(0, late["t0"] + 7.0 - time.monotonic()))
        st, js, _, _ = R.poll_settled(late["serial"], late["token"])
        assert st == 200 and js["device_id"] == late["device_id"], (st, js)

        def settled():
            return all(R.query("au-lossy", "SELECT count(*) FROM outbox WHERE device_id = ?",
                               (x["device_id"],))[0][0] == 0 for x in out.values())
        wait_until(settled, 20, "au-lossy's cancel entries to be sent")
        cancels = {p.split("/")[4]: st for m, p, st, _ in fwd.seen if p.endswith("/cancel")}
        for x in out.values():
            x["cancel_status"] = cancels.get(x["device_id"])
            x["rows"] = devices_with_serial("au-lossy", x["serial"])
        # Never delivered: cancelled at eu and in au; the serial can be claimed again.
        c = out["cancel"]
        assert c["cancel_status"] == 204, (cancels, fwd.seen)
        assert c["rows"] == [] and issuance(c["serial"]) is None, c
        st, dev, _, _ = R.claim("au", serial=c["serial"])
        assert st == 201, (st, dev)
        # Delivered before the cancel (eu: 409 already_delivered): rolled forward.
        assert late["cancel_status"] == 409, (cancels, fwd.seen)
        assert late["rows"] == [(late["device_id"], "pending_delivery")], late
        st, d, _, _ = R.api("au-lossy", "GET", "/api/v1/devices/" + late["device_id"])
        assert st == 200 and d["state"] == "pending_delivery", (st, d)
        out["ok"] = True
    finally:
        R.kill_hub("au-lossy")
        fwd.close()


def test_lost_answer_device_delivered_before_eu_grace_purge_survives():
    """Same as above for "early": it fetched its credentials right after the claim, so
    eu's sweep erased the issuance's device ID (grace 3 s) before au's cancel came
    (8 s). Its credentials are real: au must keep the device, not delete it."""
    out = S["lossy"]
    assert out.get("ok"), "the previous test did not get this far"
    e = out["early"]
    assert e["rows"] == [(e["device_id"], "pending_delivery")], (
        "a device that received credentials from eu was deleted in au: eu answered the "
        "cancel with %s (the issuance's device ID was already erased by the grace purge), "
        "au rows now %s" % (e["cancel_status"], e["rows"]))


def run_hub(*args):
    return subprocess.run([binary("phyhub"), "--listen", "127.0.0.1:%d" % phytest.free_port(),
                           "--db", os.path.join(R.dir, "never.db"), "--tls-cert", R.pki["cert"],
                           "--tls-key", R.pki["key"]] + list(args),
                          capture_output=True, text=True, timeout=20)


def test_regional_hub_refuses_bad_configuration():
    url = "https://127.0.0.1:%d" % R.hubs["eu"].port
    res = run_hub("--region", "au", "--inter-region-key-file", R.hubs["au"].key_file)
    assert res.returncode == 2 and "--provisioning-url" in res.stderr, res
    res = run_hub("--region", "au", "--provisioning-url", url)
    assert res.returncode == 2 and "--inter-region-key-file" in res.stderr, res
    loose = write_key(os.path.join(R.dir, "loose.irkey"), "k" * 40, 0o644)
    res = run_hub("--region", "au", "--provisioning-url", url, "--inter-region-key-file", loose)
    assert res.returncode == 2 and "readable by group or others" in res.stderr, res
    res = run_hub("--region", "eu", "--provisioning", "--peer", "au=" + loose)
    assert res.returncode == 2 and "readable by group or others" in res.stderr, res
    short = write_key(os.path.join(R.dir, "short.irkey"), "k" * 31)
    res = run_hub("--region", "au", "--provisioning-url", url, "--inter-region-key-file", short)
    assert res.returncode == 2 and "32 to 128" in res.stderr, res
    res = run_hub("--region", "AU", "--provisioning-url", url,
                  "--inter-region-key-file", R.hubs["au"].key_file)
    assert res.returncode == 2 and "--region" in res.stderr, res
    assert not os.path.exists(os.path.join(R.dir, "never.db"))


def test_revoke_of_pending_au_device_drops_the_issuance():
    sn = serial("AU-REVOKE")
    token, dev = claim_pending("au", sn)
    dev_id = dev["device_id"]
    iss = issuance(sn)
    assert iss["device_id"] == dev_id and iss["sealed"] is not None, iss
    st, js, _, _ = R.api("au", "POST", "/api/v1/devices/%s/revoke" % dev_id)
    assert st == 200 and js["state"] == "revoked", (st, js)

    def dropped():
        iss = issuance(sn)
        return iss if iss["sealed"] is None and iss["device_id"] == "" else None
    iss = wait_until(dropped, 10, "eu to drop the revoked device's issuance")
    assert iss["delivered_ms"] is None and iss["region"] == "au", iss
    R.hubs["au"].daemon.wait_log(r"event=outbox_sent device_id=%s " % dev_id, 2)
    st, js, _, _ = R.poll_settled(sn, token)
    assert st == 410 and js["error"] == "already_provisioned", (st, js)
    assert R.query("au", "SELECT count(*) FROM outbox WHERE device_id = ?", (dev_id,))[0][0] == 0


def test_no_secret_in_any_log():
    assert len(R.secrets) >= 6
    leaked = R.leaked_secrets()
    assert not leaked, "secrets in logs: %s" % leaked


if __name__ == "__main__":
    phytest.main()
