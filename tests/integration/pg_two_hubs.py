"""Two phyhub processes on one PostgreSQL database behind one phyproxy (two routes):
200 devices register and poll on hub A while their claims (half by serial, half by
code, plus contested serials) go through hub B's API concurrently. Every device gets
exactly one device ID and secret, repeated polls within the grace window get the
byte-identical answer, no claim is lost; 30 concurrent wrong codes split across both
hubs give exactly 10 x 404 and 20 x 429 (docs/store.md: concurrency)."""

import concurrent.futures as cf
import itertools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
from phytest import binary, wait_until  # noqa: E402
from stack import SHORT_TIMERS, Harness, hub_admin, https_connection, https_request  # noqa: E402

HOST_A = "portal-eu.phystack.com"
HOST_B = "portal-eu2.phystack.com"
DEVICES = 200
CONTESTED = 20  # serials registered by two devices: claims by serial must be refused
T = {}
CALLS = itertools.count()


def setup():
    h = Harness("two-hubs", [HOST_A, HOST_B])
    T["h"] = h
    db, store_flags = h.new_store("eu")  # one database (and key file) for both hubs
    hub_admin(db, "tenant-add", "acme", "--region", "eu")
    hub_admin(db, "tenant-set", "acme", "--serial-claims", "any")  # claims by plain serials
    T["token"] = h.user_token(db, "acme", "alice")
    hub_admin(db, "tenant-add", "guess", "--region", "eu")
    T["guess_token"] = h.user_token(db, "guess", "mallory")
    T["ports"] = {}
    for name in ("a", "b"):
        port = phytest.free_port()
        d = h.daemon([binary("phyhub"), "--region", "eu", "--listen", "127.0.0.1:%d" % port,
                      "--db", db] + store_flags + ["--tls-cert", h.pki["cert"],
                      "--tls-key", h.pki["key"], "--provisioning", "--public-endpoint",
                      HOST_A + ":443"] + h.edge_hub_flags() + list(SHORT_TIMERS),
                     "phyhub-" + name)
        d.wait_port(port)
        T["ports"][name] = port
    h.proxy_port = phytest.free_port()
    p = h.daemon([binary("phyproxy"), "--listen", "127.0.0.1:%d" % h.proxy_port,
                  "--route", "%s=127.0.0.1:%d" % (HOST_A, T["ports"]["a"]),
                  "--route", "%s=127.0.0.1:%d" % (HOST_B, T["ports"]["b"]),
                  "--allow", "portal-*.phystack.com:443"] + h.edge_proxy_flags(), "phyproxy")
    p.wait_port(h.proxy_port)


def teardown():
    if "h" in T:
        T["h"].stop()  # also drops the database


def device_request(host, method, path, body, serial):
    """As a device: through phyproxy to host, identified as sn_<serial>."""
    conn = https_connection(T["h"].proxy_port, T["h"].tls_context(), tunnel_host=host,
                            ident="sn_" + serial)
    return https_request(conn, method, path, body)


def api(hub, method, path, body=None, token=None):
    """The console API of hub "a" or "b" (through phyproxy, its own hostname; a name of
    its own per call, since the proxy limits tunnels per name)."""
    host = HOST_A if hub == "a" else HOST_B
    ident = "sn_CONSOLE-%d" % next(CALLS)
    conn = https_connection(T["h"].proxy_port, T["h"].tls_context(), tunnel_host=host,
                            ident=ident)
    return https_request(conn, method, path, body, token=token or T["token"])


def register(serial):
    st, js, _, _ = device_request(HOST_A, "POST", "/v1/provisioning/register",
                                  {"serial": serial}, serial)
    assert st == 201, (serial, st, js)
    T["h"].secrets.add(js["poll_token"])
    return js["poll_token"]


def new_code(serial, token):
    def attempt():
        st, js, _, _ = device_request(HOST_A, "POST", "/v1/provisioning/code",
                                      {"serial": serial, "poll_token": token}, serial)
        if st == 429:
            time.sleep(0.3)
            return None
        assert st == 201, (serial, st, js)
        return js["code"]
    return wait_until(attempt, 15, "a code for " + serial)


def poll_until_done(serial, token, timeout=60):
    """Polls on hub A at the interval it asks for until 200 (or another final answer):
    (status, parsed body, raw body)."""
    deadline = time.monotonic() + timeout
    while True:
        st, js, raw, _ = device_request(HOST_A, "POST", "/v1/provisioning/poll",
                                        {"serial": serial, "poll_token": token}, serial)
        if st not in (202, 429):
            return st, js, raw
        assert time.monotonic() < deadline, "%s still pending" % serial
        time.sleep(min(js.get("interval", 1), 1))


def one_device(i):
    """Registers device i on hub A, has it claimed through hub B (by serial for even i,
    by code for odd i), polls its credentials on hub A twice. Returns a result dict."""
    serial = "TWO-%03d" % i
    token = register(serial)
    by_code = i % 2 == 1
    body = {"code": new_code(serial, token)} if by_code else {"serial": serial}
    # Polled once before the claim: hub A answers this registration's pending polls
    # from memory from here on, until hub B announces the claim to it.
    st, js, _, _ = device_request(HOST_A, "POST", "/v1/provisioning/poll",
                                  {"serial": serial, "poll_token": token}, serial)
    assert st == 202, (serial, st, js)
    st, dev, _, _ = api("b", "POST", "/api/v1/devices/claim", body)
    assert st == 201, (serial, st, dev)
    # Well within the 30 s that hub A would answer "pending" had it missed the claim.
    st, js, raw = poll_until_done(serial, token, timeout=10)
    assert st == 200, (serial, st, js)
    T["h"].secrets.add(js["device_secret"])
    # Within the grace window (3 s) the same poll gets the byte-identical answer.
    st2, _, raw2, _ = device_request(HOST_A, "POST", "/v1/provisioning/poll",
                                     {"serial": serial, "poll_token": token}, serial)
    return {"serial": serial, "claimed": dev["device_id"], "got": js["device_id"],
            "secret": js["device_secret"], "first": raw, "again": (st2, raw2)}


def test_claims_across_two_hubs():
    with cf.ThreadPoolExecutor(max_workers=16) as ex:
        results = list(ex.map(one_device, range(DEVICES)))
    ids = [r["got"] for r in results]
    assert len(set(ids)) == DEVICES, "a device ID was handed out twice"
    assert len({r["secret"] for r in results}) == DEVICES
    for r in results:
        assert r["claimed"] == r["got"], r["serial"]
        st2, raw2 = r["again"]
        # Delivered once more within grace, byte for byte; never a second secret.
        assert st2 == 200 and raw2 == r["first"], (r["serial"], st2)
    # No claim lost: every claimed device is in the store, as each hub sees it.
    for hub in ("a", "b"):
        seen, cursor = set(), None
        while True:
            path = "/api/v1/devices?limit=500" + ("&after=" + cursor if cursor else "")
            st, js, _, _ = api(hub, "GET", path)
            assert st == 200, (st, js)
            seen.update(d["device_id"] for d in js["devices"])
            cursor = js.get("next")
            if not cursor:
                break
        assert set(ids) <= seen, hub
    assert not T["h"].leaked_secrets(), T["h"].leaked_secrets()


def test_contested_serials_and_racing_claims():
    # Two registrations of one serial: a claim by serial cannot pick one (409).
    def contested(i):
        serial = "TWO-C%02d" % i
        register(serial)
        register(serial)
        return api("ab"[i % 2], "POST", "/api/v1/devices/claim", {"serial": serial})
    with cf.ThreadPoolExecutor(max_workers=8) as ex:
        for st, js, _, _ in ex.map(contested, range(CONTESTED)):
            assert st == 409 and js["error"] == "serial_in_use", (st, js)

    # The same serial claimed through both hubs at once by one user: exactly one
    # claim creates the device (201); the other is that user's retry and gets the
    # same device (200) -- never a second one.
    def race(i):
        serial = "TWO-R%02d" % i
        register(serial)
        with cf.ThreadPoolExecutor(max_workers=2) as ex2:
            fa = ex2.submit(api, "a", "POST", "/api/v1/devices/claim", {"serial": serial})
            fb = ex2.submit(api, "b", "POST", "/api/v1/devices/claim", {"serial": serial})
            ra, rb = fa.result(), fb.result()
        ids = {r[1]["device_id"] for r in (ra, rb) if r[0] in (200, 201)}
        return sorted((ra[0], rb[0])), len(ids)
    with cf.ThreadPoolExecutor(max_workers=4) as ex:
        for pair, devices in ex.map(race, range(10)):
            assert pair == [200, 201] and devices == 1, (pair, devices)


def test_wrong_codes_throttled_across_hubs():
    alphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"

    def guess(i):
        code = "ZZZZ" + alphabet[i // len(alphabet)] + alphabet[i % len(alphabet)]
        st, js, _, _ = api("ab"[i % 2], "POST", "/api/v1/devices/claim", {"code": code},
                           token=T["guess_token"])
        return st
    # Well-formed codes that name nothing; 15 through each hub, all at once.
    with cf.ThreadPoolExecutor(max_workers=30) as ex:
        codes = list(ex.map(guess, range(30)))
    assert codes.count(404) == 10 and codes.count(429) == 20, sorted(codes)


if __name__ == "__main__":
    phytest.main()
