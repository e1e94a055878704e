"""Serial squatting and attested serials (issue 10, item 1), end to end on loopback:
phyhub + phyproxy + real phyagents with --device-key (Ed25519 and ECDSA P-256 keys made
by openssl), the manufacturer's CSV imported with `phyhub admin serials-import`, an
attacker who registers serials before the real devices, and the registration cap that
no longer locks a device out."""

import base64
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
from phytest import wait_until  # noqa: E402
from stack import HOST, Stack, https_connection, https_request, read_json  # noqa: E402

ST = None
T = {}  # tokens, key paths


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=30)


def device_key(name, ec=False):
    """A device key pair in the stack's folder: (private key path, public key PEM)."""
    key = os.path.join(ST.dir, name + ".key")
    if ec:
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    else:
        openssl("genpkey", "-algorithm", "ed25519", "-out", key)
    os.chmod(key, 0o600)
    pub = subprocess.run(["openssl", "pkey", "-in", key, "-pubout"], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    return key, pub


def der_b64(pem):
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))


def setup():
    global ST
    ST = Stack("attestation", hub_flags=["--registration-idle", "30"], start=False)
    # "secure" keeps the hub's default: claims by serial of attested serials only.
    ST.add_tenant("secure", serial_claims="attested")
    T["secure"] = ST.add_user("secure", "sam")
    T["ed_key"], ed_pub = device_key("att-1")
    T["ed_pub"] = ed_pub
    T["ec_key"], ec_pub = device_key("att-2", ec=True)
    T["other_key"], _ = device_key("att-other")
    csv = os.path.join(ST.dir, "serials.csv")
    with open(csv, "w") as f:
        f.write("serial,public_key\n# a PEM block over several lines, in quotes\n")
        f.write('SN-ATT-1,"%s"\n' % ed_pub.strip())
        f.write("SN-ATT-2,%s\n" % der_b64(ec_pub))  # base64 of the DER
        f.write("SN-ATT-3,%s\n" % der_b64(ed_pub))
    out = ST.admin("serials-import", csv)
    assert "3 attested serials imported" in out, out
    # A manufacturer's importer key for the API (POST /internal/v1/serials).
    T["importer_key"] = os.path.join(ST.dir, "factory.key")
    subprocess.run([phytest.binary("phyhub"), "admin", "key-new", T["importer_key"]], check=True,
                   capture_output=True, timeout=30)
    with open(T["importer_key"]) as f:
        T["importer"] = f.read().strip()
    ST.secrets.add(T["importer"])
    ST.hub_flags += ["--importer", "factory=" + T["importer_key"]]
    ST.start()


def teardown():
    ST.stop()


def prove(serial, token, signature):
    return ST.request("POST", "/v1/provisioning/prove",
                      {"serial": serial, "poll_token": token, "signature": signature},
                      ident="sn_" + serial)


def register_raw(serial):
    st, js, _, _ = ST.request("POST", "/v1/provisioning/register", {"serial": serial},
                              ident="sn_" + serial)
    assert st == 201, (st, js)
    ST.secrets.add(js["poll_token"])
    return js


def test_import_refuses_bad_files_whole():
    bad = os.path.join(ST.dir, "bad.csv")
    ok = der_b64(T["ed_pub"])
    for text, why in (("SN-X,AAAA\n", "line 1: not a public key"),
                      ("SN-OK,%s\nbad serial,%s\n" % (ok, ok), "line 2: a serial is"),
                      ("SN-Y,\"-----BEGIN PUBLIC KEY-----\nMCow\n", "PEM block without its END"),
                      ("SN-Z\n", "line 1: expected serial,public_key")):
        with open(bad, "w") as f:
            f.write(text)
        res = subprocess.run([phytest.binary("phyhub"), "admin", "--db", ST.db,
                              "serials-import", bad], capture_output=True, text=True, timeout=60)
        assert res.returncode == 1 and why in res.stderr, (text, res.stderr)
    rows = ST.query("SELECT count(*) FROM attested_serials")
    assert rows[0][0] == 3, rows  # nothing of the bad files


def test_import_through_the_api():
    """The same CSV through eu's internal API with a manufacturer's key: all or
    nothing, text/csv only, the key of an importer and no other."""
    def post(body, key=None, ctype="text/csv"):
        h = {"Content-Type": ctype}
        if key:
            h["Authorization"] = "Bearer " + key
        return ST.request("POST", "/internal/v1/serials", raw=body.encode(), headers=h,
                          content_type=None, via_proxy=False)
    ok = der_b64(T["ed_pub"])
    csv = "serial,public_key\nSN-API-1,%s\nSN-API-2,%s\n" % (ok, ok)
    s, js, _, hdrs = post(csv)
    assert s == 401 and "bearer" in hdrs.get("www-authenticate", "").lower(), (s, js)
    s, js, _, _ = post(csv, key="x" * 43)
    assert s == 401, (s, js)
    s, js, _, _ = post(csv, key=T["importer"], ctype="application/json")
    assert s == 415, (s, js)
    s, js, _, _ = post("SN-API-3,%s\nbad serial,%s\n" % (ok, ok), key=T["importer"])
    assert s == 400 and "line 2" in js["message"], (s, js)
    s, js, _, _ = post(csv, key=T["importer"])
    assert s == 200 and js == {"imported": 2}, (s, js)
    rows = ST.query("SELECT serial FROM attested_serials WHERE serial LIKE 'SN-API-%' "
                    "ORDER BY serial")
    assert [r[0] for r in rows] == ["SN-API-1", "SN-API-2"], rows
    ST.hub.wait_log(r"event=serials_imported importer=factory count=2")


def test_tenant_settings_and_what_a_claim_would_unlock():
    """The tenant's policy through the API (GET/PATCH /api/v1/tenant, audited), and
    for a tenant that claims unattested serials by serial, what such a claim would
    hand the credentials to: when it registered, from where, with which agent."""
    s, js, _, _ = ST.api("GET", "/api/v1/tenant", token=T["secure"])
    assert s == 200 and js == {"name": "secure", "region": "eu", "serial_claims": "attested"}, js
    s, js, _, _ = ST.api("GET", "/api/v1/registrations?serial=SN-ATT-1", token=T["secure"])
    assert s == 403, (s, js)
    for bad in ({"serial_claims": "some"}, {"serial_claims": "any", "x": 1}, {}):
        s, js, _, _ = ST.api("PATCH", "/api/v1/tenant", bad, token=T["secure"])
        assert s == 400, (bad, s, js)
    # A device registers through the proxy from 127.0.0.61 with its agent's name.
    conn = https_connection(ST.proxy_port, ST.tls_context(), HOST, "sn_SN-PREVIEW",
                            source="127.0.0.61")
    s, js, _, _ = https_request(conn, "POST", "/v1/provisioning/register",
                                {"serial": "SN-PREVIEW"},
                                headers={"User-Agent": "phyagent/9.9 \u00e9vil"})
    assert s == 201, (s, js)
    s, js, _, _ = ST.api("GET", "/api/v1/registrations?serial=SN-PREVIEW")  # acme: "any"
    assert s == 200 and js["attested"] is False and js["claimed"] is False, js
    (r,) = js["registrations"]
    assert r["source"] == "127.0.0.61" and r["agent"].startswith("phyagent/9.9 "), r
    assert r["proven"] is False and r["first_seen"] and r["last_seen"], r
    s, js, _, _ = ST.api("GET", "/api/v1/registrations?serial=bad%20serial")
    assert s == 400, (s, js)
    # The secure tenant opens up, then closes again; both changes are audited.
    for policy in ("any", "attested"):
        s, js, _, _ = ST.api("PATCH", "/api/v1/tenant", {"serial_claims": policy},
                             token=T["secure"])
        assert s == 200 and js["serial_claims"] == policy, (s, js)
    s, js, _, _ = ST.api("GET", "/api/v1/audit?limit=2", token=T["secure"])
    assert [e["detail"]["serial_claims"] for e in js["entries"]] == ["attested", "any"], js


def test_unattested_serial_needs_the_code():
    """The squatter registers a plain serial before the device: a claim by serial no
    longer hands it the credentials, the console is told to use the code."""
    squatter = ST.register("SN-PLAIN-1")
    st, js, _, _ = ST.claim(token=T["secure"], serial="SN-PLAIN-1")
    assert st == 409 and js["error"] == "code_required", (st, js)
    assert "code shown on the device" in js["message"], js
    st, js, _, _ = ST.poll("SN-PLAIN-1", squatter)
    assert st == 202, (st, js)
    # The code still works: it is shown on the real device's screen only.
    st, js, _, _ = ST.request("POST", "/v1/provisioning/code",
                              {"serial": "SN-PLAIN-1", "poll_token": squatter},
                              ident="sn_SN-PLAIN-1")
    assert st == 201, js
    st, dev, _, _ = ST.claim(token=T["secure"], code=js["code"])
    assert st == 201, dev


def test_squatter_of_an_attested_serial_gets_nothing():
    """The attacker registers SN-ATT-1 first and cannot prove it; the real phyagent
    with its key proves its registration; the claim by serial provisions the real
    device and the attacker's registration gets nothing."""
    js = register_raw("SN-ATT-1")
    squatter = js["poll_token"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", js["challenge"]), js
    st, js2, _, _ = ST.poll("SN-ATT-1", squatter)
    assert st == 403 and js2["error"] == "proof_required", (st, js2)
    st, js2, _, _ = ST.request("POST", "/v1/provisioning/code",
                               {"serial": "SN-ATT-1", "poll_token": squatter},
                               ident="sn_SN-ATT-1")
    assert st == 403 and js2["error"] == "proof_required", (st, js2)
    # a signature by another key, or garbage, does not prove anything
    sig = sign(T["other_key"], "SN-ATT-1", js["challenge"], squatter)
    st, js2, _, _ = prove("SN-ATT-1", squatter, sig)
    assert st == 401 and js2["error"] == "invalid_proof", (st, js2)
    st, js2, _, _ = prove("SN-ATT-1", squatter, "AAAA")
    assert st == 401, (st, js2)
    # nobody proven yet: nothing to claim
    st, js2, _, _ = ST.claim(token=T["secure"], serial="SN-ATT-1")
    assert st == 404 and js2["error"] == "unknown_serial", (st, js2)

    agent, state = ST.start_agent("SN-ATT-1", ["--device-key", T["ed_key"]])
    agent.wait_log(r"event=proven", 20)
    st, dev, _, _ = ST.claim(token=T["secure"], serial="SN-ATT-1", name="real")
    assert st == 201, (st, dev)
    wait_until(lambda: ST.credentials(state), 20, "the real device's credentials")
    assert ST.credentials(state)["device_id"] == dev["device_id"]
    st, js2, _, _ = ST.poll("SN-ATT-1", squatter)
    assert st == 410, (st, js2)
    agent.kill()


def sign(key, serial, challenge, token):
    """The proof as phyagent makes it (docs/protocol.md), made with openssl."""
    msg = os.path.join(ST.dir, "msg")
    with open(msg, "w") as f:
        f.write("phystack-register-v1\n%s\n%s\n%s\n" % (serial, challenge, token))
    out = subprocess.run(["openssl", "pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", msg],
                         check=True, capture_output=True, timeout=30).stdout
    return base64.urlsafe_b64encode(out).decode().rstrip("=")


def test_proof_made_by_openssl_is_accepted_once():
    """The signed message is what the protocol says: a proof made with openssl over
    it (Ed25519) is accepted, and a proof can't be used for another registration."""
    js = register_raw("SN-ATT-3")
    token, challenge = js["poll_token"], js["challenge"]
    other = register_raw("SN-ATT-3")
    sig = sign(T["ed_key"], "SN-ATT-3", challenge, token)
    st, js2, _, _ = prove("SN-ATT-3", other["poll_token"], sig)
    assert st == 401, (st, js2)  # bound to its own registration
    st, js2, _, _ = prove("SN-ATT-3", token, sig)
    assert st == 200 and js2["status"] == "proven", (st, js2)
    st, js2, _, _ = prove("SN-ATT-3", token, sig)
    assert st == 409 and js2["error"] == "nothing_to_prove", (st, js2)
    st, js2, _, _ = ST.poll("SN-ATT-3", token)
    assert st == 202, (st, js2)


def test_p256_device_and_agent_without_key():
    # Without --device-key the agent says what is missing and does not provision.
    agent, state = ST.start_agent("SN-ATT-2", name="phyagent-nokey")
    agent.wait_log(r"event=device_key_required", 20)
    agent.kill()
    agent, state = ST.start_agent("SN-ATT-2", ["--device-key", T["ec_key"]])
    agent.wait_log(r"event=proven", 20)
    st, dev, _, _ = ST.claim(token=T["secure"], serial="SN-ATT-2")
    assert st == 201, (st, dev)
    wait_until(lambda: ST.credentials(state), 20, "the P-256 device's credentials")
    agent.kill()


def metric(name):
    _, _, raw, _ = ST.request("GET", "/metrics", via_proxy=False)
    m = re.search(re.escape(name) + r" (\d+)", raw.decode())
    return int(m.group(1)) if m else None


def test_registration_cap_evicts_instead_of_locking_out():
    """Five registrations of one serial used to give 201 x4 then 429 for as long as the
    attacker kept them alive; now the least recently active one without a live code
    makes room, and the device's own registration (which shows a code) stays."""
    before = metric('phyhub_provisioning_total{outcome="registration_evicted"}')
    device = ST.register("SN-CAP")
    st, js, _, _ = ST.request("POST", "/v1/provisioning/code",
                              {"serial": "SN-CAP", "poll_token": device}, ident="sn_SN-CAP")
    assert st == 201, js
    attacker = [ST.register("SN-CAP") for _ in range(6)]
    assert metric('phyhub_provisioning_total{outcome="registration_evicted"}') == before + 3
    st, js, _, _ = ST.poll("SN-CAP", device)
    assert st == 202, (st, js)  # still there, still polling
    statuses = [ST.poll("SN-CAP", t)[0] for t in attacker]
    assert sorted(statuses) == [202, 202, 202, 401, 401, 401], statuses
    # the newest registration was never the one to go
    assert statuses[-1] == 202, statuses
    assert ST.hub.alive()


def s_client(*args):
    res = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % ST.hub_port,
                          "-servername", "portal-eu.phystack.com", "-CAfile", ST.pki["ca"]]
                         + list(args), input="", capture_output=True, text=True, timeout=30)
    return res.returncode, res.stdout + res.stderr


def test_hub_tls_offers_aead_suites_only():
    """Issue 10 item 13: TLS 1.2 CBC-SHA1 suites were still offered."""
    for cipher in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "AES128-SHA"):
        rc, out = s_client("-tls1_2", "-cipher", cipher)
        assert rc != 0 and "CONNECTED" in out, (cipher, out[-400:])  # reached, refused
    rc, out = s_client("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert rc == 0 and "ECDHE-ECDSA-AES128-GCM-SHA256" in out, out[-400:]
    rc, out = s_client()
    assert rc == 0 and "TLSv1.3" in out, out[-400:]


def test_no_secret_in_any_log():
    leaked = ST.leaked_secrets()
    assert not leaked, "secrets in logs: %s" % leaked


if __name__ == "__main__":
    phytest.main()
