"""phyhub admin backup: a consistent copy of a live SQLite store while the hub serves
writes; 0600; never overwrites; the copy stands alone (journal_mode delete) and a hub
started on it (with copies of the key file and ratchet) serves the same data. A
PostgreSQL store is refused with the pointer to pg_dump."""

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
from stack import Stack, hub_admin, is_postgresql  # noqa: E402

T = {}


def setup():
    T["st"] = Stack("backup")


def teardown():
    if "st" in T:
        T["st"].stop()


def test_backup_of_a_live_store():
    st = T["st"]
    out = os.path.join(st.dir, "copy.db")
    if is_postgresql(st.db):
        r = subprocess.run([phytest.binary("phyhub"), "admin", "--db", st.db, "backup", out],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "pg_dump" in r.stderr, r
        assert not os.path.exists(out)
        return
    hub_admin(st.db, "device-add-bulk", "3000", "--tenant", "acme")
    dev = st.provision("BACKUP-1")["device_id"]
    # Writes go on while the copy is made: each must be answered 200.
    stop, answers = threading.Event(), []

    def writer():
        i = 0
        while not stop.is_set():
            i += 1
            s = st.api("PATCH", "/api/v1/devices/%s/twin/desired" % dev, {"n": i})[0]
            answers.append(s)
    t = threading.Thread(target=writer)
    t.start()
    try:
        phytest.wait_until(lambda: len(answers) >= 3, 20, "writes before the backup")
        r = subprocess.run([phytest.binary("phyhub"), "admin", "--db", st.db, "backup", out],
                           capture_output=True, text=True, timeout=120)
        phytest.wait_until(lambda: len(answers) >= 6, 20, "writes after the backup")
    finally:
        stop.set()
        t.join(30)
    assert r.returncode == 0, r.stderr
    assert set(answers) == {200}, set(answers)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert not os.path.exists(out + ".tmp")
    db = sqlite3.connect("file:%s?mode=ro" % out, uri=True)
    try:
        assert db.execute("pragma journal_mode").fetchone()[0] == "delete"
        assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert db.execute("select count(*) from devices").fetchone()[0] == 3001
        desired_n = db.execute("select count(*) from devices where device_id = ?", (dev,)).fetchone()
        assert desired_n[0] == 1
    finally:
        db.close()
    # Never over an existing file.
    r = subprocess.run([phytest.binary("phyhub"), "admin", "--db", st.db, "backup", out],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "exists" in r.stderr, r
    # Restore: the copy with copies of the key file and its ratchet, a hub started on it.
    st.hub.stop()
    for suffix in (".key", ".key.ratchet"):
        shutil.copy2(st.db + suffix, out + suffix)
    st.db = out
    st.start_hub()
    s, js, _, _ = st.api("GET", "/api/v1/devices/" + dev)
    assert s == 200 and js["device_id"] == dev, (s, js)


if __name__ == "__main__":
    phytest.main()
