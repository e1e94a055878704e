#!/usr/bin/env python3
"""Two attacks on a hub's edge (issue 10), measured on loopback against one or more
builds, each with its own fresh phyhub in a temporary directory (killed and removed at
the end, also on failure). Not part of `make test`; standard library only.

  events    One tenant, 40 API tokens, 300 event streams (GET /api/v1/events, ~8 per
            token) on TLS sockets with SO_RCVBUF 4096 that never read after the
            response head. Then 2000 ~3 KiB "tags" events (PUT /api/v1/devices/{id}/
            tags, 20 tags of 128-byte values), paced at 100/s over 20 s. Reports the
            streams answered 200/429, the events made, the hub's VmRSS and the host's
            TCP memory (/proc/net/sockstat "TCP: mem", pages) at rest, peak and 5 s
            after the last event, and the streams the hub dropped ("events_dropped"
            lines of its log).

  register  A registration flood from 127.0.0.1 for 10 s: several processes, each with
            several keep-alive HTTPS connections straight to the hub, POST
            /v1/provisioning/register with distinct serials as fast as they can.
            Reports 201s per second and other statuses, the live registrations in the
            store and its size (the .db file plus its -wal; SQLite's WAL alone grows
            to ~4 MiB before it is checkpointed) afterwards, and the .db once the hub
            stopped (its WAL checkpointed into it). At the same
            time a polite client from 127.0.0.2 registers 4 times a second (a new
            connection each time): its statuses and latencies show whether other
            sources still get through.

Hubs run with their own defaults (only --region/--listen/--db/--tls-*/--provisioning/
--public-endpoint are passed, which every revision knows), so a build with the edge
limits runs with them on and an older one without.

Each run also records what else ran: the 1-minute load average, Chromium processes
(another browser test) and the CPU seconds other processes used during the run.

usage: bench/edge_attacks.py [LABEL=]BUILD_DIR... [--runs 3] [--scenario all]
                             [--json FILE] [--keep] [--flood-procs 3] [--flood-conns 4]
e.g.   bench/edge_attacks.py before=/work/bench-before/build/release \
                             after=/work/bench-after-build --runs 3
Runs are interleaved (run 1 of every build, then run 2, ...). A table of medians and
[min-max] ranges goes to stdout at the end, one line per run before that."""

import argparse
import http.client
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import phytest  # noqa: E402  (make_ca, free_port, Daemon, wait_until)

HOST = "portal-eu.phystack.com"
PASSWORD = "correct horse battery\n"
PAGE = os.sysconf("SC_PAGE_SIZE")

# events
N_TOKENS = 40
N_STREAMS = 300
EVENT_SECONDS = 20.0
EVENT_CHANGES = 2000
EVENT_RATE = EVENT_CHANGES / EVENT_SECONDS  # changes per second (paced)
EVENT_THREADS = 4
SETTLE_SECONDS = 5.0
# register
FLOOD_SECONDS = 10.0
FLOOD_PROCS = 3
FLOOD_CONNS = 4  # per process
POLITE_INTERVAL = 0.25


# ---------------------------------------------------------------- measuring


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tcp_mem_pages():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                m = re.search(r"\bmem (\d+)", line)
                return int(m.group(1)) if m else 0
    return 0


def tcp_pressure_pages():
    with open("/proc/sys/net/ipv4/tcp_mem") as f:
        return int(f.read().split()[1])


def browser_procs():
    """How many Chromium/Chrome processes are running (someone else's browser test)."""
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/comm" % pid) as f:
                    n += bool(re.search(r"chrom|headless_shell", f.read(), re.I))
            except OSError:
                pass
    return n


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_snapshot():
    """{pid: (comm, CPU ticks so far)} of every process."""
    snap = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/stat" % pid) as f:
                    st = f.read()
            except OSError:
                continue
            comm = st[st.index("(") + 1:st.rindex(")")]
            fields = st[st.rindex(")") + 2:].split()
            snap[int(pid)] = (comm, int(fields[11]) + int(fields[12]))
    return snap


def others_cpu(before, mine):
    """CPU seconds other processes (not pids in `mine`) used since snapshot `before`:
    (total, the top 3 as [comm, s])."""
    used = {}
    for pid, (comm, ticks) in cpu_snapshot().items():
        if pid in mine:
            continue
        d = ticks - before.get(pid, (comm, 0))[1]
        if d > 0:
            used[comm] = used.get(comm, 0) + d / CLK_TCK
    top = sorted(used.items(), key=lambda kv: -kv[1])[:3]
    return round(sum(used.values()), 1), [[c, round(v, 1)] for c, v in top]


def others():
    """What else is busy on the machine: load average and any browser processes."""
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    return {"load1": float(load), "browser_procs": browser_procs()}


class Sampler:
    """Samples the hub's VmRSS and the host's TCP memory every `period` seconds."""

    def __init__(self, pid, period=0.1):
        self.pid, self.period = pid, period
        self.samples = []  # (t, rss KiB, tcp pages)
        self.browsers = 0  # most browser processes seen at once (checked once a second)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        last = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            self.samples.append((now, rss_kib(self.pid), tcp_mem_pages()))
            if now - last >= 1.0:
                self.browsers = max(self.browsers, browser_procs())
                last = now
            self._stop.wait(self.period)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    def peak(self):
        return (max(s[1] for s in self.samples), max(s[2] for s in self.samples))


# ---------------------------------------------------------------- a hub


class Hub:
    """A fresh store and PKI in a temporary directory and (after start()) a phyhub on
    127.0.0.1 with its defaults; stop() kills it and removes the directory."""

    def __init__(self, build, name, keep=False):
        self.build, self.keep = build, keep
        self.dir = tempfile.mkdtemp(prefix="edge-%s-" % name)
        self.db = os.path.join(self.dir, "eu.db")
        self.port = phytest.free_port()
        self.daemon = None
        self.pki = phytest.make_ca(self.dir, [HOST, "localhost"])
        self.ctx = ssl.create_default_context(cafile=self.pki["ca"])

    def bin(self, name):
        return os.path.join(self.build, name)

    def admin(self, *args, stdin=None):
        res = subprocess.run([self.bin("phyhub"), "admin", "--db", self.db] + list(args),
                             input=stdin, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise RuntimeError("phyhub admin %s: %s" % (" ".join(args), res.stderr))
        return res.stdout.strip()

    def start(self):
        argv = [self.bin("phyhub"), "--region", "eu", "--listen", "127.0.0.1:%d" % self.port,
                "--db", self.db, "--tls-cert", self.pki["cert"], "--tls-key", self.pki["key"],
                "--provisioning", "--public-endpoint", HOST + ":443"]
        self.daemon = phytest.Daemon(argv, "phyhub", self.dir)
        self.daemon.wait_port(self.port, 20)

    def log_count(self, regex):
        return len(self.daemon.log_lines(regex)) if self.daemon else 0

    def conn(self, source=None, timeout=10):
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                           context=self.ctx,
                                           source_address=(source, 0) if source else None)

    def request(self, method, path, body=None, token=None, source=None):
        c = self.conn(source)
        try:
            return request_on(c, method, path, body, token)
        finally:
            c.close()

    def store_bytes(self, suffixes=("", "-wal")):
        return sum(os.path.getsize(self.db + sfx) for sfx in suffixes
                   if os.path.exists(self.db + sfx))

    def shutdown(self):
        """SIGTERM and wait (the store is closed, its WAL checkpointed); the exit code."""
        return self.daemon.stop(signal.SIGTERM, 30)

    def stop(self):
        if self.daemon:
            self.daemon.kill()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def request_on(c, method, path, body=None, token=None):
    """One request on an HTTPSConnection (kept open): (status, parsed JSON or None)."""
    h = {"Host": HOST}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    if token:
        h["Authorization"] = "Bearer " + token
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    payload = r.read()
    if (r.getheader("Connection") or "").lower() == "close":
        c.close()
    try:
        return r.status, json.loads(payload) if payload else None
    except ValueError:
        return r.status, None


# ---------------------------------------------------------------- scenario 1: events


def open_stream(hub, token):
    """A TLS socket with a 4 KiB receive buffer that sent GET /api/v1/events and read
    the response head; (status, socket) — the socket is None unless 200."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    try:
        s.connect(("127.0.0.1", hub.port))
        t = hub.ctx.wrap_socket(s, server_hostname=HOST)
        t.sendall(("GET /api/v1/events HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n"
                   "Authorization: Bearer %s\r\n\r\n" % (HOST, token)).encode())
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = t.recv(4096)
            if not chunk:
                break
            data += chunk
        status, _ = phytest.parse_status(data.split(b"\r\n\r\n", 1)[0]) if data else (None, 0)
    except OSError as e:
        s.close()
        return "err:" + type(e).__name__, None
    if status != 200:
        t.close()
        return status, None
    return status, t


def tags_body(i):
    # 20 tags, 16-byte keys, 128-byte values: ~3 KiB of JSON per event
    return {"k%02d-%s" % (j, "x" * 12): ("%06d-%02d-" % (i, j)) + "v" * 118 for j in range(20)}


def scenario_events(build, run, keep=False):
    hub = Hub(build, "events", keep)
    streams = []
    try:
        hub.admin("tenant-add", "acme", "--region", "eu")
        hub.admin("tenant-set", "acme", "--serial-claims", "any")
        hub.admin("user-add", "acme", "alice", stdin=PASSWORD)
        tokens = [hub.admin("token-add", "acme", "alice") for _ in range(N_TOKENS + 1)]
        gen_token = tokens.pop()
        hub.start()
        st, js = hub.request("POST", "/v1/provisioning/register", {"serial": "BENCH-EV-1"})
        assert st == 201, (st, js)
        st, js = hub.request("POST", "/api/v1/devices/claim", {"serial": "BENCH-EV-1"},
                             token=gen_token)
        assert st == 201, (st, js)
        dev = js["device_id"]
        st, js = hub.request("PUT", "/api/v1/devices/%s/tags" % dev, tags_body(0),
                             token=gen_token)
        assert st == 200, (st, js)
        time.sleep(0.5)
        pid = hub.daemon.pid
        out = {"rss0_kib": rss_kib(pid), "tcp0_pages": tcp_mem_pages(),
               "tcp_pressure_pages": tcp_pressure_pages()}
        out.update(others())

        snap0, w0 = cpu_snapshot(), time.monotonic()
        statuses = Counter()
        for i in range(N_STREAMS):
            status, sock = open_stream(hub, tokens[i % N_TOKENS])
            statuses[str(status)] += 1
            if sock is not None:
                streams.append(sock)
        out["streams"] = dict(statuses)
        time.sleep(0.5)
        out["rss_open_kib"] = rss_kib(pid)

        # events: EVENT_THREADS keep-alive connections share a counter of changes
        lock = threading.Lock()
        made = Counter()
        deadline = time.monotonic() + EVENT_SECONDS + 2
        seq = [1]

        def generate():
            c = hub.conn(timeout=30)
            try:
                while time.monotonic() < deadline:
                    with lock:
                        if seq[0] > EVENT_CHANGES:
                            return
                        i = seq[0]
                        seq[0] += 1
                    # paced: change i is due at t0 + i / EVENT_RATE
                    time.sleep(max(0.0, t0 + (i - 1) / EVENT_RATE - time.monotonic()))
                    try:
                        st, _ = request_on(c, "PUT", "/api/v1/devices/%s/tags" % dev,
                                           tags_body(i), token=gen_token)
                    except (OSError, http.client.HTTPException) as e:
                        st = "err:" + type(e).__name__
                        c.close()
                    with lock:
                        made[str(st)] += 1
            finally:
                c.close()

        t0 = time.monotonic()
        with Sampler(pid) as smp:
            threads = [threading.Thread(target=generate) for _ in range(EVENT_THREADS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            gen_s = time.monotonic() - t0
            time.sleep(SETTLE_SECONDS)
        out["gen_seconds"] = round(gen_s, 2)
        out["changes"] = dict(made)
        out["rss_peak_kib"], out["tcp_peak_pages"] = smp.peak()
        out["rss_end_kib"], out["tcp_end_pages"] = smp.samples[-1][1], smp.samples[-1][2]
        out["dropped"] = hub.log_count(r"events_dropped")
        out["others_cpu_s"], out["others_top"] = others_cpu(snap0, {os.getpid(), pid})
        out["wall_s"] = round(time.monotonic() - w0, 1)
        out["browser_procs_max"] = smp.browsers
        out["alive"] = hub.daemon.alive()
        out.update({k + "_end": v for k, v in others().items()})
        return out
    finally:
        for s in streams:
            try:
                s.close()
            except OSError:
                pass
        hub.stop()


# ---------------------------------------------------------------- scenario 2: register


def _flood_proc(port, ca, source, tag, start, seconds, nconn, q):
    """One flooding process: nconn threads, each a keep-alive connection, POST register
    with distinct serials from `start` for `seconds`; puts {second: Counter} on q."""
    ctx = ssl.create_default_context(cafile=ca)
    lock = threading.Lock()
    per_sec = {}

    def worker(k):
        n = 0
        c = None
        local = {}
        while True:
            now = time.time()
            if now >= start + seconds:
                break
            if c is None or c.sock is None:
                c = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx,
                                                source_address=(source, 0))
            if now < start:
                c.connect()
                time.sleep(max(0.0, start - time.time()))
                continue
            serial = "FL%s-%d-%07d" % (tag, k, n)
            n += 1
            try:
                st, _ = request_on(c, "POST", "/v1/provisioning/register", {"serial": serial})
                st = str(st)
            except (OSError, http.client.HTTPException) as e:
                st = "err:" + type(e).__name__
                c.close()
                c = None
            sec = int(time.time() - start)
            local.setdefault(sec, Counter())[st] += 1
        if c is not None:
            c.close()
        with lock:
            for sec, cnt in local.items():
                per_sec.setdefault(sec, Counter()).update(cnt)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(nconn)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    q.put({sec: dict(c) for sec, c in per_sec.items()})


def scenario_register(build, run, keep=False):
    hub = Hub(build, "register", keep)
    procs = []
    try:
        hub.start()
        pid = hub.daemon.pid
        time.sleep(0.5)
        out = {"rss0_kib": rss_kib(pid), "store0_bytes": hub.store_bytes()}
        out.update(others())
        snap0, w0 = cpu_snapshot(), time.monotonic()
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        start = time.time() + 1.0
        for p in range(FLOOD_PROCS):
            pr = ctx.Process(target=_flood_proc,
                             args=(hub.port, hub.pki["ca"], "127.0.0.1", "%d%d" % (run, p),
                                   start, FLOOD_SECONDS, FLOOD_CONNS, q))
            pr.start()
            procs.append(pr)

        polite = []  # (status, latency ms)

        def polite_client():
            time.sleep(max(0.0, start - time.time()))
            i = 0
            while time.time() < start + FLOOD_SECONDS:
                t = time.monotonic()
                try:
                    st, _ = hub.request("POST", "/v1/provisioning/register",
                                        {"serial": "POLITE-%d-%04d" % (run, i)},
                                        source="127.0.0.2")
                    st = str(st)
                except (OSError, http.client.HTTPException) as e:
                    st = "err:" + type(e).__name__
                polite.append((st, (time.monotonic() - t) * 1000))
                i += 1
                time.sleep(max(0.0, POLITE_INTERVAL - (time.monotonic() - t)))

        pt = threading.Thread(target=polite_client)
        with Sampler(pid, 0.25) as smp:
            pt.start()
            results = [q.get(timeout=FLOOD_SECONDS + 60) for _ in procs]
            pt.join()
            time.sleep(1.0)
        out["others_cpu_s"], out["others_top"] = others_cpu(
            snap0, {os.getpid(), pid} | {pr.pid for pr in procs})
        out["wall_s"] = round(time.monotonic() - w0, 1)
        for pr in procs:
            pr.join(10)
        per_sec = {}
        for r in results:
            for sec, cnt in r.items():
                per_sec.setdefault(sec, Counter()).update(cnt)
        total = Counter()
        for cnt in per_sec.values():
            total.update(cnt)
        secs = range(int(FLOOD_SECONDS))
        out["created_per_s"] = [per_sec.get(s, Counter()).get("201", 0) for s in secs]
        out["flood_statuses"] = dict(total)
        out["created_rate"] = round(total.get("201", 0) / FLOOD_SECONDS, 1)
        out["store_bytes"] = hub.store_bytes()
        out["store_db_bytes"] = hub.store_bytes(("",))
        out["store_wal_bytes"] = hub.store_bytes(("-wal",))
        db = sqlite3.connect("file:%s?mode=ro" % hub.db, uri=True, timeout=10)
        try:
            out["live_registrations"] = db.execute(
                "SELECT count(*) FROM registrations").fetchone()[0]
        finally:
            db.close()
        out["rss_peak_kib"] = smp.peak()[0]
        out["browser_procs_max"] = smp.browsers
        lat = sorted(ms for _, ms in polite)
        out["polite_statuses"] = dict(Counter(st for st, _ in polite))
        out["polite_p50_ms"] = round(statistics.median(lat), 1) if lat else None
        out["polite_max_ms"] = round(lat[-1], 1) if lat else None
        out["alive"] = hub.daemon.alive()
        out.update({k + "_end": v for k, v in others().items()})
        out["exit_code"] = hub.shutdown()
        out["store_stopped_bytes"] = hub.store_bytes()  # after the hub's own checkpoint
        return out
    finally:
        for pr in procs:
            if pr.is_alive():
                pr.kill()
                pr.join(5)
        hub.stop()


# ---------------------------------------------------------------- report


def med_range(values, fmt="%.0f"):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    m = statistics.median(values)
    if min(values) == max(values):
        return fmt % m
    return (fmt + " [" + fmt + "-" + fmt + "]") % (m, min(values), max(values))


def mib(kib):
    return kib / 1024.0


def summarize(label, scen, runs):
    rows = []
    if scen == "events":
        rows = [
            ("streams 200", [r["streams"].get("200", 0) for r in runs], "%.0f"),
            ("streams 429", [r["streams"].get("429", 0) for r in runs], "%.0f"),
            ("tag changes 200", [r["changes"].get("200", 0) for r in runs], "%.0f"),
            ("changes/s", [r["changes"].get("200", 0) / r["gen_seconds"] for r in runs], "%.0f"),
            ("hub RSS before MiB", [mib(r["rss0_kib"]) for r in runs], "%.1f"),
            ("hub RSS streams open MiB", [mib(r["rss_open_kib"]) for r in runs], "%.1f"),
            ("hub RSS peak MiB", [mib(r["rss_peak_kib"]) for r in runs], "%.1f"),
            ("hub RSS end MiB", [mib(r["rss_end_kib"]) for r in runs], "%.1f"),
            ("host TCP mem before MiB", [r["tcp0_pages"] * PAGE / 2**20 for r in runs], "%.1f"),
            ("host TCP mem peak MiB", [r["tcp_peak_pages"] * PAGE / 2**20 for r in runs], "%.1f"),
            ("host TCP mem end MiB", [r["tcp_end_pages"] * PAGE / 2**20 for r in runs], "%.1f"),
            ("streams dropped (log)", [r["dropped"] for r in runs], "%.0f"),
        ]
    else:
        rows = [
            ("201 per s (mean of 10 s)", [r["created_rate"] for r in runs], "%.1f"),
            ("201 total", [r["flood_statuses"].get("201", 0) for r in runs], "%.0f"),
            ("429 total", [r["flood_statuses"].get("429", 0) for r in runs], "%.0f"),
            ("503 total", [r["flood_statuses"].get("503", 0) for r in runs], "%.0f"),
            ("other/errors", [sum(v for k, v in r["flood_statuses"].items()
                                  if k not in ("201", "429", "503")) for r in runs], "%.0f"),
            ("live registrations", [r["live_registrations"] for r in runs], "%.0f"),
            ("store .db+-wal KiB", [r["store_bytes"] / 1024 for r in runs], "%.0f"),
            ("  of which -wal KiB", [r["store_wal_bytes"] / 1024 for r in runs], "%.0f"),
            ("store after hub stop KiB", [r["store_stopped_bytes"] / 1024 for r in runs],
             "%.0f"),
            ("  B per live registration", [(r["store_stopped_bytes"] - r["store0_bytes"]) /
                                           max(1, r["live_registrations"]) for r in runs],
             "%.0f"),
            ("hub RSS peak MiB", [mib(r["rss_peak_kib"]) for r in runs], "%.1f"),
            ("127.0.0.2: 201 of sent", [100.0 * r["polite_statuses"].get("201", 0) /
                                        max(1, sum(r["polite_statuses"].values()))
                                        for r in runs], "%.0f%%"),
            ("127.0.0.2: p50 ms", [r["polite_p50_ms"] for r in runs], "%.1f"),
            ("127.0.0.2: max ms", [r["polite_max_ms"] for r in runs], "%.1f"),
        ]
    out = [(name, med_range(vals, fmt)) for name, vals, fmt in rows]
    busy = sum(1 for r in runs if max(r["browser_procs_max"], r["browser_procs"],
                                      r["browser_procs_end"]) > 0)
    out.append(("runs with a browser running", "%d of %d" % (busy, len(runs))))
    out.append(("load average (1 min) at start", med_range([r["load1"] for r in runs], "%.2f")))
    out.append(("other processes' CPU s in run", med_range([r["others_cpu_s"] for r in runs],
                                                           "%.1f")))
    return out


def main():
    global FLOOD_PROCS, FLOOD_CONNS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("builds", nargs="+", metavar="[LABEL=]BUILD_DIR",
                    help="build directories holding phyhub")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scenario", choices=["all", "events", "register"], default="all")
    ap.add_argument("--json", help="write every run's raw results to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directories")
    ap.add_argument("--flood-procs", type=int, default=FLOOD_PROCS,
                    help="register: flooding processes (%(default)s)")
    ap.add_argument("--flood-conns", type=int, default=FLOOD_CONNS,
                    help="register: keep-alive connections per process (%(default)s)")
    a = ap.parse_args()
    FLOOD_PROCS, FLOOD_CONNS = a.flood_procs, a.flood_conns
    labels = {}
    for spec in a.builds:
        label, _, path = spec.rpartition("=")
        labels[os.path.abspath(path)] = label or path
    builds = list(labels)
    for b in builds:
        if not os.access(os.path.join(b, "phyhub"), os.X_OK):
            sys.exit("no phyhub in %s" % b)
    scens = ["events", "register"] if a.scenario == "all" else [a.scenario]
    fns = {"events": scenario_events, "register": scenario_register}
    results = {(b, s): [] for b in builds for s in scens}
    print("machine: %d CPUs, tcp_mem pressure mark %d pages (%.0f MiB)"
          % (os.cpu_count(), tcp_pressure_pages(), tcp_pressure_pages() * PAGE / 2**20))
    for s in scens:
        for run in range(1, a.runs + 1):
            for b in builds:
                r = fns[s](b, run, a.keep)
                results[(b, s)].append(r)
                print("%-8s run %d %s: %s" % (s, run, b, json.dumps(r, sort_keys=True)),
                      flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump([{"build": b, "scenario": s, "runs": rs}
                       for (b, s), rs in results.items()], f, indent=1)
    print()
    for s in scens:
        table = [summarize(b, s, results[(b, s)]) for b in builds]
        width = max(len(n) for n, _ in table[0])
        cols = [max(len(labels[b]), max(len(v) for _, v in t)) for b, t in zip(builds, table)]
        print("%s (median [min-max] of %d runs)" % (s, a.runs))
        print("  " + " " * width + "  " + "  ".join(
            labels[b].ljust(c) for b, c in zip(builds, cols)))
        for i, (name, _) in enumerate(table[0]):
            print("  " + name.ljust(width) + "  " + "  ".join(
                t[i][1].ljust(c) for t, c in zip(table, cols)))
        print()


if __name__ == "__main__":
    # Killed runs still kill their hubs: SIGTERM becomes an exception (finally: stop).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
