#!/usr/bin/env bash
# Provisioning poll benchmark: a fresh eu hub (release build, loopback only), N
# registered serials, and wrk polling them round-robin on kept-alive TLS connections
# for D seconds (the hub's per-source limits are raised: every wrk connection comes
# from 127.0.0.1, while real devices each have an address of their own). Every poll is a store write transaction (rule 5/6 records the poll
# time; most answers are 429 slow_down, which costs the same). Prints polls/s and the
# hub's CPU per poll (and the PostgreSQL server's, on that engine). Then the same
# registrations poll as phyagent does: each through phyproxy (a CONNECT tunnel as
# sn_<serial>, the hub trusting the proxy's PROXY v2 header) on its own kept-alive
# TLS connection, with phyload --polls: polls/s and the hub's and the proxy's CPU per
# poll ("via=proxy"). Not part of `make test`; wrk is Debian's package (apt-get
# install wrk).
#
# Environment (all optional):
#   PHY_BENCH_ENGINE   sqlite (default) or postgresql (throwaway cluster, scripts/pgtest.sh)
#   PHY_BENCH_SERIALS  registered serials (default 200)
#   PHY_BENCH_SECONDS  duration of one run (default 10)
#   PHY_BENCH_CONNS    wrk connections (default 32)
#   PHY_BENCH_REPEAT   runs (default 3)
#   PHY_BENCH_BUILD    build directory (default build/bench-release)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
ENGINE=${PHY_BENCH_ENGINE:-sqlite}
SERIALS=${PHY_BENCH_SERIALS:-200}
SECONDS_RUN=${PHY_BENCH_SECONDS:-10}
CONNS=${PHY_BENCH_CONNS:-32}
REPEAT=${PHY_BENCH_REPEAT:-3}
BUILD=${PHY_BENCH_BUILD:-$ROOT/build/bench-release}
SNI=portal-eu.phystack.com

log() { printf 'polls.sh: %s\n' "$*" >&2; }
command -v wrk >/dev/null || { log "needs wrk (apt-get install wrk)"; exit 2; }

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPHY_SANITIZE=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target phyhub phyproxy phyload >/dev/null
HUB=$BUILD/phyhub

TMP=$(mktemp -d /tmp/phypolls.XXXXXX)
HUB_PID=""
PROXY_PID=""
PG_URL=""
cleanup() {
    [[ -z "$HUB_PID" ]] || { kill "$HUB_PID" 2>/dev/null; wait "$HUB_PID" 2>/dev/null || true; }
    [[ -z "$PROXY_PID" ]] || { kill "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null || true; }
    [[ -z "$PG_URL" ]] || bench_pg_stop "$TMP"
    rm -rf "$TMP"
}
trap cleanup EXIT

cpu_ticks() { # pid: utime + stime of all its threads
    awk '{print $14 + $15}' "/proc/$1/stat"
}
pg_ticks() { # the cluster's postmaster and its children (the backends)
    local pm t=0
    pm=$(head -1 "$TMP/pg/data/postmaster.pid")
    for p in "$pm" $(pgrep -P "$pm" || true); do
        [[ -r /proc/$p/stat ]] && t=$((t + $(cpu_ticks "$p")))
    done
    echo "$t"
}

bench_pki "$TMP" "$SNI"

if [[ "$ENGINE" == postgresql ]]; then
    PG_URL=$(bench_pg_start "$TMP")
fi

HZ=$(getconf CLK_TCK)
for r in $(seq 1 "$REPEAT"); do
    if [[ -n "$PG_URL" ]]; then
        db="$PG_URL/polls$r"
        psql -X -q "$PG_URL/postgres" -c "CREATE DATABASE polls$r"
    else
        db="$TMP/polls$r.db"
    fi
    port=$(free_port)
    "$HUB" --region eu --provisioning --listen "127.0.0.1:$port" --db "$db" \
        --key-file "$TMP/issuance$r.key" --tls-cert "$TMP/hub.pem" --tls-key "$TMP/hub.key" \
        --keepalive 120 --register-rate 0 --max-idle-per-source 10000 \
        --trusted-proxy 127.0.0.1 2>"$TMP/hub$r.log" &
    HUB_PID=$!
    bench_wait_hub "$TMP/ca.pem" "$SNI" "$port" "$HUB_PID" "$TMP/hub$r.log" || exit 1
    # N registrations (serial, poll token) as wrk's Lua table.
    python3 - "$port" "$TMP/ca.pem" "$SERIALS" "$r" "$TMP/regs.jsonl" >"$TMP/polls.lua" <<'EOF'
import http.client, json, ssl, sys
port, ca, n, run = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
bodies = []
for i in range(n):
    serial = "POLL-%s-%d" % (run, i)
    conn.request("POST", "/v1/provisioning/register", json.dumps({"serial": serial}),
                 {"Content-Type": "application/json", "Host": "portal-eu.phystack.com"})
    r = conn.getresponse()
    js = json.loads(r.read())
    assert r.status == 201, (r.status, js)
    bodies.append(json.dumps({"serial": serial, "poll_token": js["poll_token"]}))
with open(sys.argv[5], "w") as f:  # phyload --polls --creds
    f.write("\n".join(bodies) + "\n")
print("local bodies = {%s}" % ", ".join("[[%s]]" % b for b in bodies))
print("""
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", "/v1/provisioning/poll",
    {["Content-Type"] = "application/json", ["Host"] = "portal-eu.phystack.com"},
    bodies[(i % #bodies) + 1])
end
""")
EOF
    h0=$(cpu_ticks "$HUB_PID")
    p0=$([[ -n "$PG_URL" ]] && pg_ticks || echo 0)
    out=$(wrk -t 1 -c "$CONNS" -d "${SECONDS_RUN}s" -s "$TMP/polls.lua" \
        "https://127.0.0.1:$port" 2>"$TMP/wrk$r.err")
    h1=$(cpu_ticks "$HUB_PID")
    p1=$([[ -n "$PG_URL" ]] && pg_ticks || echo 0)
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    python3 -c "
import sys
rps, total, hz = float('$rps'), int('$total'), int('$HZ')
hub = ($h1 - $h0) / hz * 1e6 / max(total, 1)
pg = ($p1 - $p0) / hz * 1e6 / max(total, 1)
print('engine=$ENGINE run=$r polls_per_s=%.0f hub_us_per_poll=%.0f pg_us_per_poll=%.0f' % (rps, hub, pg))"
    # As phyagent polls: through phyproxy, a kept-alive tunnel and TLS connection each.
    pport=$(free_port)
    "$BUILD/phyproxy" --listen "127.0.0.1:$pport" --route "$SNI=127.0.0.1:$port" \
        --max-connections 5000 --max-tunnels-per-source 5000 --new-tunnel-rate 0 \
        --device-share 0 --idle-timeout 600 --log-level warn 2>"$TMP/proxy$r.log" &
    PROXY_PID=$!
    for _ in $(seq 1 100); do
        python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),1)' \
            "$pport" 2>/dev/null && break
        sleep 0.1
    done
    out=$("$BUILD/phyload" --polls --proxy "127.0.0.1:$pport" --hub "127.0.0.1:$port" \
        --sni "$SNI" --ca "$TMP/ca.pem" --creds "$TMP/regs.jsonl" --concurrency 64 --idle 0 \
        --hold "$SECONDS_RUN" --hub-pid "$HUB_PID" --proxy-pid "$PROXY_PID" 2>"$TMP/load$r.err" |
        grep '^polls' || true)
    if [[ -z "$out" ]]; then
        log "phyload --polls failed:"
        tail -5 "$TMP/load$r.err" >&2
    else
        python3 -c "
import re, sys
m = re.search(r'in ([0-9.]+) s: ([0-9]+)/s on ([0-9]+) connections, ([0-9]+) not.*hub ([0-9.-]+) us, proxy ([0-9.-]+) us', sys.argv[1])
secs, rate, conns, other, hub, px = m.groups()
print('engine=$ENGINE run=$r via=proxy polls_per_s=%s connections=%s hub_us_per_poll=%.0f proxy_us_per_poll=%.0f other=%s' % (rate, conns, float(hub), float(px), other))" "$out"
    fi
    kill "$PROXY_PID"
    wait "$PROXY_PID" 2>/dev/null || true
    PROXY_PID=""
    # Answers other than 202 pending / 429 slow_down (a 503 would mean the store failed).
    awk '{for (i = 1; i <= NF; i++) if ($i ~ /^status=/) print $i}' "$TMP/hub$r.log" |
        sort | uniq -c | grep -v -e 'status=202' -e 'status=429' -e 'status=201' >&2 || true
    kill "$HUB_PID"
    wait "$HUB_PID" 2>/dev/null || true
    HUB_PID=""
done
