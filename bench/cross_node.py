#!/usr/bin/env python3
"""A single-device change made on one hub node reaching a device on another (issue
12): two phyhub nodes on one PostgreSQL (the cluster the tests use, PHY_TEST_PG_URL),
one device session on node b, and N desired changes made one after the other through
node a's API. For each, the time from sending the PATCH to the desired.patch frame on
the device's socket; prints p50, p90, p99 and max per run, and the median of the runs.
Not part of `make test`.

  PHY_BUILD_DIR=build/release PHY_SOURCE_DIR=. PHY_TEST_STORE=postgresql \\
  PHY_TEST_PG_URL=postgresql://phy@127.0.0.1:PORT bench/cross_node.py [N] [RUNS]
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import phytest  # noqa: E402
import wsclient  # noqa: E402
from phytest import binary  # noqa: E402
from stack import HOST, SHORT_TIMERS, Stack, https_connection, https_request  # noqa: E402


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def run(n):
    st = Stack("bench-nodes", hub_flags=["--node-id", "a"], proxy=False)
    try:
        st.hub.wait_log(r"event=nodelink_ready ", 10)
        port_b = phytest.free_port()
        argv = [binary("phyhub"), "--region", "eu", "--listen", "127.0.0.1:%d" % port_b,
                "--db", st.db, "--tls-cert", st.pki["cert"], "--tls-key", st.pki["key"],
                "--provisioning", "--public-endpoint", HOST + ":443", "--node-id", "b"]
        argv += st.store_flags + st.edge_hub_flags() + list(SHORT_TIMERS)
        b = st.daemon(argv, "phyhub-b")
        b.wait_port(port_b)
        b.wait_log(r"event=nodelink_ready ", 10)
        creds = st.provision("BENCH-X")
        code, _, ws = wsclient.handshake("127.0.0.1", port_b, HOST, st.pki["ca"],
                                         creds["device_id"], creds["device_secret"])
        assert code == 101, code
        conn = https_connection(st.hub_port, st.tls_context())  # kept alive
        path = "/api/v1/devices/%s/twin/desired" % creds["device_id"]
        lat = []
        for i in range(n):
            t0 = time.monotonic()
            s, js, _, _ = https_request(conn, "PATCH", path, {"i": i}, token=st.token)
            assert s == 200, (s, js)
            m = ws.recv_type("desired.patch", 5)
            lat.append((time.monotonic() - t0) * 1000)
            assert m["version"] == js["version"], (m, js)
        ws.close()
        return lat
    finally:
        st.stop()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    p50s, p99s = [], []
    for r in range(runs):
        lat = run(n)
        p50s.append(pct(lat, 50))
        p99s.append(pct(lat, 99))
        print("run %d: %d changes  p50 %.1f ms  p90 %.1f ms  p99 %.1f ms  max %.1f ms"
              % (r + 1, n, pct(lat, 50), pct(lat, 90), pct(lat, 99), max(lat)))
    print("median of %d runs: p50 %.1f ms (%.1f-%.1f), p99 %.1f ms (%.1f-%.1f)"
          % (runs, statistics.median(p50s), min(p50s), max(p50s), statistics.median(p99s),
             min(p99s), max(p99s)))
    print("load average (1 min) at the end: %.2f" % os.getloadavg()[0])


if __name__ == "__main__":
    main()
