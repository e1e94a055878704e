#!/usr/bin/env bash
# Reconnect-storm benchmark (issue 13): N provisioned devices (phyload) connected
# straight to a fresh hub (release build, loopback only); the hub is SIGKILLed and
# started again at once on the same store and port; every device reconnects as
# phyagent does (decorrelated jitter, 1 s to 300 s, agent/backoff.c). Prints, per run,
# the time from the first lost session to the last device back, the attempts, the
# failed ones (refused or timed out), and how long the new hub took to answer
# /healthz. Not part of `make test`.
#
# Environment (all optional):
#   PHY_BENCH_SIZES    device counts (default "10000 19000")
#   PHY_BENCH_REPEAT   runs per size (default 3)
#   PHY_BENCH_ENGINE   sqlite (default) or postgresql (throwaway cluster)
#   PHY_BENCH_BUILD    build directory (default build/bench-release)
#   PHY_BENCH_CONC     phyload's handshakes in flight before the storm (default 256;
#                      the storm itself is not bounded by phyload: each device
#                      reconnects when its own backoff says)
#   PHY_BENCH_HUB_ARGS extra hub flags
#   PHY_BENCH_RESUME   1: TLS resumption (the hub gets a --tls-ticket-keys file, phyload
#                      --resume offers each device's last ticket, as phyagent does)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
SIZES=${PHY_BENCH_SIZES:-"10000 19000"}
REPEAT=${PHY_BENCH_REPEAT:-3}
ENGINE=${PHY_BENCH_ENGINE:-sqlite}
BUILD=${PHY_BENCH_BUILD:-$ROOT/build/bench-release}
CONC=${PHY_BENCH_CONC:-256}
SNI=portal-eu.phystack.com

log() { printf 'storm.sh: %s\n' "$*" >&2; }

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPHY_SANITIZE=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target phyhub phyload >/dev/null
HUB=$BUILD/phyhub
LOAD=$BUILD/phyload

TMP=$(mktemp -d /tmp/phystorm.XXXXXX)
HUB_PID=""
LOAD_PID=""
PG_URL=""
cleanup() {
    for p in "$LOAD_PID" "$HUB_PID"; do
        [[ -z "$p" ]] || { kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; }
    done
    [[ -z "$PG_URL" ]] || bench_pg_stop "$TMP"
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)"

bench_pki "$TMP" "$SNI"
RESUME_HUB="" RESUME_LOAD=""
if [[ "${PHY_BENCH_RESUME:-0}" == 1 ]]; then
    "$HUB" admin ticket-key-rotate "$TMP/tickets" >/dev/null
    RESUME_HUB="--tls-ticket-keys $TMP/tickets" RESUME_LOAD="--resume"
fi
[[ "$ENGINE" != postgresql ]] || PG_URL=$(bench_pg_start "$TMP")

start_hub() { # db dir port
    # shellcheck disable=SC2086
    "$HUB" --region eu --provisioning --listen "127.0.0.1:$3" --db "$1" \
        --key-file "$2/issuance.key" --tls-cert "$TMP/hub.pem" --tls-key "$TMP/hub.key" \
        --max-connections 25000 --ping-interval 3600 --ping-timeout 7200 \
        $RESUME_HUB ${PHY_BENCH_HUB_ARGS:-} 2>>"$2/hub.log" &
    HUB_PID=$!
    bench_wait_hub "$TMP/ca.pem" "$SNI" "$3" "$HUB_PID" "$2/hub.log" || exit 1
}

HZ=$(getconf CLK_TCK)
printf '| devices | run | back after | attempts | failed | hub up after | new hub CPU | per device | resumed | client CPU per device |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for n in $SIZES; do
    for r in $(seq 1 "$REPEAT"); do
        dir=$TMP/run-$n-$r
        mkdir -p "$dir"
        if [[ -n "$PG_URL" ]]; then
            db="$PG_URL/storm_${n}_$r"
            psql -X -q "$PG_URL/postgres" -c "CREATE DATABASE storm_${n}_$r"
        else
            db=$dir/hub.db
        fi
        "$HUB" admin --db "$db" tenant-add bench --region eu >/dev/null
        "$HUB" admin --db "$db" device-add-bulk "$n" --tenant bench >"$dir/creds.jsonl"
        port=$(free_port)
        start_hub "$db" "$dir" "$port"
        "$LOAD" --hub "127.0.0.1:$port" --sni "$SNI" --ca "$TMP/ca.pem" \
            --creds "$dir/creds.jsonl" --hub-only --concurrency "$CONC" --idle 0 \
            --storm 300 $RESUME_LOAD >"$dir/load.out" 2>"$dir/load.err" &
        LOAD_PID=$!
        until grep -q "storm ready" "$dir/load.err" 2>/dev/null; do
            kill -0 "$LOAD_PID" 2>/dev/null || { log "phyload ended early:"; tail "$dir/load.err" >&2; exit 1; }
            sleep 0.1
        done
        kill -KILL "$HUB_PID"
        wait "$HUB_PID" 2>/dev/null || true
        t0=$(date +%s.%N)
        start_hub "$db" "$dir" "$port"
        t1=$(date +%s.%N)
        wait "$LOAD_PID" || log "phyload: not every device came back (run $n/$r)"
        LOAD_PID=""
        cpu=$(awk -v hz="$HZ" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$HUB_PID/stat")
        line=$(grep '^storm' "$dir/load.out")
        back=$(sed -E 's/.* ([0-9.]+) s from the first loss.*/\1/' <<<"$line")
        att=$(sed -E 's/.*; ([0-9]+) attempts.*/\1/' <<<"$line")
        failed=$(sed -E 's/.*attempts, ([0-9]+) failed.*/\1/' <<<"$line")
        resumed=$(sed -nE 's/^tls .* ([0-9]+) resumed;.*/\1/p' "$dir/load.out")
        ccpu=$(sed -nE 's/^tls .*client CPU ([0-9.]+) s$/\1/p' "$dir/load.out")
        printf '| %d | %d | %s s | %s | %s | %.2f s | %s s | %.0f µs | %s | %.0f µs |\n' "$n" "$r" \
            "$back" "$att" "$failed" "$(echo "$t1 - $t0" | bc)" "$cpu" \
            "$(echo "$cpu * 1000000 / $n" | bc -l)" "$resumed" "$(echo "$ccpu * 1000000 / $n" | bc -l)"
        kill -TERM "$HUB_PID" 2>/dev/null || true
        wait "$HUB_PID" 2>/dev/null || true
        HUB_PID=""
    done
done
