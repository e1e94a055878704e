#!/usr/bin/env bash
# Hub benchmark: for 1k, 10k and 19k devices, a fresh phyhub (release build, loopback
# only) and phyload measure hub RSS per idle session, sessions accepted per second and
# the time for one fleet-wide desired change to reach the last device. Not part of
# `make test`. Results: a table on stdout, JSON lines in $PHY_BENCH_OUT (if set).
#
# Environment (all optional):
#   PHY_BENCH_BUILD   build directory (default build/bench-release; build/release is
#                     reused when it already holds phyhub and phyload)
#   PHY_BENCH_SIZES   device counts (default "1000 10000 19000"; at most ~19000 with
#                     the 20000 descriptor limit)
#   PHY_BENCH_IDLE    seconds of idle settle before the RSS is read (default 5)
#   PHY_BENCH_CONC    handshakes in flight (default 256)
#   PHY_BENCH_REPEAT  runs per size (default 1)
#   PHY_BENCH_OUT     file to append the JSON result lines to
#   PHY_BENCH_HUB_ENV extra environment for the hub, e.g. "MALLOC_ARENA_MAX=2"
#   PHY_BENCH_HUB_ARGS extra hub flags
#   PHY_BENCH_ENGINE  store engine: sqlite (default) or postgresql (a throwaway cluster
#                     of Debian's postgresql, synchronous_commit = on, one database per
#                     run; scripts/pgtest.sh)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
SIZES=${PHY_BENCH_SIZES:-"1000 10000 19000"}
IDLE=${PHY_BENCH_IDLE:-5}
CONC=${PHY_BENCH_CONC:-256}
REPEAT=${PHY_BENCH_REPEAT:-1}
ENGINE=${PHY_BENCH_ENGINE:-sqlite}
SNI=portal-eu.phystack.com
SOURCES=127.0.0.2-127.0.0.20

if [[ -n "${PHY_BENCH_BUILD:-}" ]]; then
    BUILD=$PHY_BENCH_BUILD
elif [[ -x "$ROOT/build/release/phyhub" && -x "$ROOT/build/release/phyload" ]]; then
    BUILD=$ROOT/build/release
else
    BUILD=$ROOT/build/bench-release
fi

log() { printf 'run.sh: %s\n' "$*" >&2; }

# Release build without sanitizers: measurements of an ASan build mean nothing.
if [[ "$BUILD" != "$ROOT/build/release" ]]; then
    log "building phyhub and phyload (Release) in $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPHY_SANITIZE=OFF >/dev/null
    cmake --build "$BUILD" -j "$(nproc)" --target phyhub phyload >/dev/null
fi
HUB=$BUILD/phyhub
LOAD=$BUILD/phyload

TMP=$(mktemp -d /tmp/phybench.XXXXXX)
HUB_PID=""

stop_hub() {
    [[ -n "$HUB_PID" ]] || return 0
    kill -TERM "$HUB_PID" 2>/dev/null || true
    for _ in $(seq 1 300); do # up to 30 s for a clean stop
        kill -0 "$HUB_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$HUB_PID" 2>/dev/null || true
    wait "$HUB_PID" 2>/dev/null || true
    HUB_PID=""
}
cleanup() {
    stop_hub
    [[ -z "${PG_URL:-}" ]] || bench_pg_stop "$TMP"
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One session = one descriptor on each side; use the whole hard limit.
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
for n in $SIZES; do
    if [[ "$NOFILE" != unlimited ]] && ((n + 100 > NOFILE)); then
        log "$n devices need more than the descriptor limit $NOFILE allows"
        exit 2
    fi
done

bench_pki "$TMP" "$SNI"

PG_URL=""
if [[ "$ENGINE" == postgresql ]]; then
    PG_URL=$(bench_pg_start "$TMP")
elif [[ "$ENGINE" != sqlite ]]; then
    log "PHY_BENCH_ENGINE must be sqlite or postgresql"
    exit 2
fi

# The store of a run: a SQLite file in dir, or a new PostgreSQL database.
store_url() { # dir
    if [[ -n "$PG_URL" ]]; then
        echo "$PG_URL/$(basename "$1" | tr -c 'a-z0-9\n' '_')"
    else
        echo "$1/hub.db"
    fi
}

# A fresh store per run: tenant, user, API token and exactly N devices tagged
# fleet:bench, so the fleet-wide change matches the connected devices only.
make_store() { # n dir
    local n=$1 dir=$2 db
    mkdir -p "$dir"
    db=$(store_url "$dir")
    if [[ -n "$PG_URL" ]]; then
        psql -X -q "$PG_URL/postgres" -c "CREATE DATABASE \"${db##*/}\""
    fi
    "$HUB" admin --db "$db" tenant-add bench --region eu >/dev/null
    printf 'bench-password-1\n' | "$HUB" admin --db "$db" user-add bench ops >/dev/null
    "$HUB" admin --db "$db" token-add bench ops >"$dir/token"
    "$HUB" admin --db "$db" device-add-bulk "$n" --tenant bench --tag fleet:bench \
        >"$dir/creds.jsonl"
}

start_hub() { # dir port
    local dir=$1 port=$2
    # shellcheck disable=SC2086
    env ${PHY_BENCH_HUB_ENV:-} "$HUB" --region eu --provisioning --listen "127.0.0.1:$port" \
        --db "$(store_url "$dir")" --key-file "$dir/issuance.key" \
        --tls-cert "$TMP/hub.pem" --tls-key "$TMP/hub.key" \
        --max-connections 25000 --ping-interval 3600 --ping-timeout 7200 \
        ${PHY_BENCH_HUB_ARGS:-} 2>"$dir/hub.log" &
    HUB_PID=$!
    for _ in $(seq 1 100); do # up to 10 s
        if curl -sf --max-time 1 --cacert "$TMP/ca.pem" --resolve "$SNI:$port:127.0.0.1" \
            "https://$SNI:$port/healthz" >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$HUB_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "phyhub did not start; its log:"
    tail -20 "$dir/hub.log" >&2
    exit 1
}

RESULTS=$TMP/results.jsonl
: >"$RESULTS"
for n in $SIZES; do
    for r in $(seq 1 "$REPEAT"); do
        dir=$TMP/run-$n-$r
        make_store "$n" "$dir"
        port=$(free_port)
        start_hub "$dir" "$port"
        log "$n devices (run $r): hub pid $HUB_PID on 127.0.0.1:$port"
        rc=0
        PHYLOAD_TOKEN=$(cat "$dir/token") "$LOAD" --hub "127.0.0.1:$port" --sni "$SNI" \
            --ca "$TMP/ca.pem" --creds "$dir/creds.jsonl" --devices "$n" --hub-only \
            --source-ips "$SOURCES" --concurrency "$CONC" --hub-pid "$HUB_PID" \
            --idle "$IDLE" --push-url "https://127.0.0.1:$port" --tag fleet:bench \
            --json >"$dir/result.json" 2>"$dir/phyload.log" || rc=$?
        if [[ ! -s "$dir/result.json" ]]; then
            log "phyload failed (exit $rc):"
            tail -20 "$dir/phyload.log" >&2
            exit 1
        fi
        ((rc == 0)) || log "phyload exit $rc: not every device connected or got the push"
        cat "$dir/result.json" >>"$RESULTS"
        stop_hub
    done
done

if [[ -n "${PHY_BENCH_OUT:-}" ]]; then
    cat "$RESULTS" >>"$PHY_BENCH_OUT"
fi

python3 - "$RESULTS" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
hdr = ("devices", "connected", "failed", "accepted/s", "hub us/sess", "RSS KiB/idle sess",
       "PATCH ms", "push p50 ms", "push p99 ms", "last device ms")
print("| " + " | ".join(hdr) + " |")
print("|" + "|".join("---:" for _ in hdr) + "|")
for r in rows:
    p = r.get("push", {})
    print("| %d | %d | %d | %.0f | %.0f | %.2f | %.1f | %.1f | %.1f | %.1f |" % (
        r["devices"], r["connected"], r["failed"], r["sessions_per_s"],
        r["hub_cpu_us_per_session"], r["hub_kib_per_session"], p.get("patch_ms", 0),
        p.get("p50_ms", 0), p.get("p99_ms", 0), p.get("last_ms", 0)))
EOF
