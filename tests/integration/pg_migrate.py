"""phyhub admin migrate-store: a SQLite store with live state (a delivered and a
pending issuance, a twin, audit records, an API token) is copied into an empty
PostgreSQL database; a hub on that database with the same key file goes on where the
SQLite hub stopped: redelivery is byte-identical, the pending issuance is delivered,
the token works. A non-empty target is refused and left unchanged."""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
from phytest import binary  # noqa: E402
from stack import Stack, psql  # noqa: E402

TIMERS = ("--poll-interval", "1", "--issuance-grace", "120", "--sweep-interval", "1")
T = {}


def setup():
    engine = os.environ.pop("PHY_TEST_STORE", None)
    try:
        T["st"] = Stack("migrate", timers=TIMERS)  # on a SQLite file
    finally:
        if engine:
            os.environ["PHY_TEST_STORE"] = engine


def teardown():
    if "st" in T:
        T["st"].stop()


def migrate(src, dst):
    return subprocess.run([binary("phyhub"), "admin", "migrate-store", "--from", src, "--to",
                           dst], capture_output=True, text=True, timeout=60)


def test_migrate_sqlite_to_postgresql():
    st = T["st"]
    sqlite_db = st.db
    # M1: claimed and delivered once; M2: claimed, not yet polled.
    t1 = st.register("MIG-1")
    st1, dev1, _, _ = st.claim(serial="MIG-1", name="first")
    assert st1 == 201, dev1
    s, js, raw1, _ = st.poll_until("MIG-1", t1)
    assert s == 200, (s, js)
    t2 = st.register("MIG-2")
    st2, dev2, _, _ = st.claim(serial="MIG-2")
    assert st2 == 201, dev2
    s, js, _, _ = st.api("PATCH", "/api/v1/devices/%s/twin/desired" % dev1["device_id"],
                         {"mode": "kiosk"})
    assert s == 200, (s, js)
    st.hub.kill()

    os.environ["PHY_TEST_STORE"] = "postgresql"  # new_store: a fresh database
    url, _ = st.new_store("pg")
    res = migrate(sqlite_db, url)
    assert res.returncode == 0, res.stderr
    assert "devices=2" in res.stdout and "issuances=2" in res.stdout, res.stdout
    # Twice: the target has rows now, so it is refused and unchanged.
    res = migrate(sqlite_db, url)
    assert res.returncode == 1 and "not empty" in res.stderr, (res.returncode, res.stderr)
    assert psql(url, "SELECT count(*) FROM devices").strip() == "2"

    # The hub on PostgreSQL, with the SQLite hub's key file.
    st.db, st.store_flags = url, ["--key-file", sqlite_db + ".key"]
    st.start_hub()
    s, js, raw1b, _ = st.poll("MIG-1", t1)
    assert s == 200 and raw1b == raw1, (s, js)  # the same sealed bytes, opened again
    s, js, _, _ = st.poll_until("MIG-2", t2)
    assert s == 200 and js["device_id"] == dev2["device_id"], (s, js)
    s, js, _, _ = st.api("GET", "/api/v1/devices/" + dev1["device_id"])
    assert s == 200, (s, js)
    assert js["name"] == "first" and js["twin"]["desired"] == {"mode": "kiosk"}, js
    s, js, _, _ = st.api("GET", "/api/v1/audit")
    assert s == 200 and len(js["entries"]) >= 3, js
    # New rows get IDs after the copied ones.
    st.add_tenant("after-migration")
    assert psql(url, "SELECT count(DISTINCT id) FROM tenants").strip() == "2"
    assert not st.leaked_secrets(), st.leaked_secrets()


if __name__ == "__main__":
    phytest.main()
