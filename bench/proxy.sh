#!/usr/bin/env bash
# Proxy relay benchmark (issue 13): TCP throughput of 1 and 4 streams sent as fast as
# they go to a sink on loopback, directly, through phyproxy (a CONNECT tunnel per
# stream, routed to the sink) and through HAProxy in TCP mode (when installed:
# apt-get install haproxy), alternating, REPEAT runs each; prints the median and range
# per case and phyproxy against HAProxy. Not part of `make test`.
#
# Environment (all optional):
#   PHY_BENCH_SECONDS  seconds per run (default 5)
#   PHY_BENCH_REPEAT   runs per case (default 3)
#   PHY_BENCH_BUILD    build directory (default build/bench-release)
#   PHY_BENCH_PROXY    another phyproxy binary to measure beside this one (e.g. the
#                      build of an older commit): its column is "phyproxy (other)"
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
SECONDS_RUN=${PHY_BENCH_SECONDS:-5}
REPEAT=${PHY_BENCH_REPEAT:-3}
BUILD=${PHY_BENCH_BUILD:-$ROOT/build/bench-release}
OTHER=${PHY_BENCH_PROXY:-}
TARGET=portal-eu.phystack.com:443

log() { printf 'proxy.sh: %s\n' "$*" >&2; }

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPHY_SANITIZE=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target phyproxy tput >/dev/null
TPUT=$BUILD/tput

TMP=$(mktemp -d /tmp/phyproxybench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ ! -f "$TMP/haproxy.pid" ]] || kill "$(cat "$TMP/haproxy.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 1 100); do
        python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),1)' \
            "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    log "nothing listens on $1"
    exit 1
}

SINK=$(free_port)
"$TPUT" sink "$SINK" &
PIDS+=($!)
wait_port "$SINK"

declare -A PORT
start_phyproxy() { # name binary
    local port
    port=$(free_port)
    "$2" --listen "127.0.0.1:$port" --route "${TARGET%:*}=127.0.0.1:$SINK" \
        --idle-timeout 600 --log-level error 2>"$TMP/$1.log" &
    PIDS+=($!)
    wait_port "$port"
    PORT[$1]=$port
}
CASES=(direct phyproxy)
PORT[direct]=$SINK
start_phyproxy phyproxy "$BUILD/phyproxy"
if [[ -n "$OTHER" ]]; then
    start_phyproxy other "$OTHER"
    CASES+=(other)
fi
if command -v haproxy >/dev/null; then
    PORT[haproxy]=$(free_port)
    cat >"$TMP/haproxy.cfg" <<EOF
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend f
    bind 127.0.0.1:${PORT[haproxy]}
    default_backend b
backend b
    server s 127.0.0.1:$SINK
EOF
    haproxy -f "$TMP/haproxy.cfg" -D -p "$TMP/haproxy.pid"
    wait_port "${PORT[haproxy]}"
    CASES+=(haproxy)
else
    log "haproxy not installed (apt-get install haproxy): no HAProxy column"
fi

declare -A R
for r in $(seq 1 "$REPEAT"); do
    for streams in 1 4; do
        for c in "${CASES[@]}"; do
            if [[ "$c" == direct || "$c" == haproxy ]]; then
                out=$("$TPUT" send "127.0.0.1:${PORT[$c]}" "$SECONDS_RUN" "$streams")
            else
                out=$("$TPUT" send "127.0.0.1:${PORT[$c]}" "$SECONDS_RUN" "$streams" "$TARGET" \
                    sn_TPUT)
            fi
            g=$(sed -E 's/gbit_per_s=([0-9.]+).*/\1/' <<<"$out")
            R[$c,$streams]="${R[$c,$streams]:-} $g"
            log "run $r, $streams stream(s), $c: $g Gbit/s"
        done
    done
done

python3 - "$REPEAT" "${CASES[@]}" <<EOF
import statistics, sys
cases = sys.argv[2:]
r = {}
$(for c in "${CASES[@]}"; do for s in 1 4; do echo "r[('$c', $s)] = [float(x) for x in '${R[$c,$s]}'.split()]"; done; done)
names = {"direct": "direct", "phyproxy": "phyproxy", "other": "phyproxy (other)",
         "haproxy": "HAProxy (TCP mode)"}
print("| Gbit/s | " + " | ".join(names[c] for c in cases) +
      (" | phyproxy / HAProxy |" if "haproxy" in cases else " |"))
print("|---" * (len(cases) + 1 + ("haproxy" in cases)) + "|")
for s in (1, 4):
    cells = []
    for c in cases:
        v = r[(c, s)]
        cells.append("%.1f (%.1f-%.1f)" % (statistics.median(v), min(v), max(v)))
    line = "| %d stream%s | " % (s, "s" if s > 1 else "") + " | ".join(cells)
    if "haproxy" in cases:
        line += " | %.2f" % (statistics.median(r[("phyproxy", s)]) /
                             statistics.median(r[("haproxy", s)]))
    print(line + " |")
EOF
