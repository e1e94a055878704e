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
#   PHY_BENCH_NODES   cluster mode (issue 12): N phyhub nodes (1..4; 2 and more need
#                     PHY_BENCH_ENGINE=postgresql) on one store, one phyproxy with a
#                     route to all of them, and phyload going through the proxy. The hub
#                     CPU and RSS are the sum over the nodes; the proxy's and PostgreSQL's
#                     CPU are reported apart; the fleet PATCH is made on node 1. Unset:
#                     one hub, phyload connecting to it directly (the default above).
#                     A proxy needs 2 descriptors per device: when N devices do not fit
#                     one proxy under the descriptor limit, the script raises its hard
#                     limit (root with CAP_SYS_RESOURCE) or else starts as many proxies,
#                     all with the same route, as N needs (a region has several proxies
#                     anyway); device i goes through proxy i mod P.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
SIZES=${PHY_BENCH_SIZES:-"1000 10000 19000"}
IDLE=${PHY_BENCH_IDLE:-5}
CONC=${PHY_BENCH_CONC:-256}
REPEAT=${PHY_BENCH_REPEAT:-1}
ENGINE=${PHY_BENCH_ENGINE:-sqlite}
NODES=${PHY_BENCH_NODES:-}
SNI=portal-eu.phystack.com
SOURCES=127.0.0.2-127.0.0.20
if [[ -n "$NODES" ]]; then
    if ! [[ "$NODES" =~ ^[1-4]$ ]]; then
        echo "run.sh: PHY_BENCH_NODES must be 1..4" >&2
        exit 2
    fi
    if ((NODES > 1)) && [[ "$ENGINE" != postgresql ]]; then
        echo "run.sh: PHY_BENCH_NODES=$NODES needs PHY_BENCH_ENGINE=postgresql" >&2
        exit 2
    fi
fi

if [[ -n "${PHY_BENCH_BUILD:-}" ]]; then
    BUILD=$PHY_BENCH_BUILD
elif [[ -x "$ROOT/build/release/phyhub" && -x "$ROOT/build/release/phyload" &&
    (-z "$NODES" || -x "$ROOT/build/release/phyproxy") ]]; then
    BUILD=$ROOT/build/release
else
    BUILD=$ROOT/build/bench-release
fi

log() { printf 'run.sh: %s\n' "$*" >&2; }

# Release build without sanitizers: measurements of an ASan build mean nothing.
if [[ "$BUILD" != "$ROOT/build/release" ]]; then
    log "building phyhub and phyload (Release) in $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPHY_SANITIZE=OFF >/dev/null
    cmake --build "$BUILD" -j "$(nproc)" --target phyhub phyload ${NODES:+phyproxy} >/dev/null
fi
HUB=$BUILD/phyhub
LOAD=$BUILD/phyload
PROXY=$BUILD/phyproxy

TMP=$(mktemp -d /tmp/phybench.XXXXXX)
HUB_PID=""
NODE_PIDS=() # cluster mode: every node; HUB_PID is node 1
PROXY_PIDS=()

stop_pid() { # pid
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 300); do # up to 30 s for a clean stop
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
stop_hub() {
    [[ -n "$HUB_PID" ]] || return 0
    stop_pid "$HUB_PID"
    HUB_PID=""
}
stop_cluster() {
    local p
    for p in "${PROXY_PIDS[@]}" "${NODE_PIDS[@]}"; do
        stop_pid "$p"
    done
    NODE_PIDS=()
    PROXY_PIDS=()
    HUB_PID=""
}
cleanup() {
    stop_cluster
    stop_hub
    [[ -z "${PG_URL:-}" ]] || bench_pg_stop "$TMP"
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One session = one descriptor on each side; use the whole hard limit.
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
PER_PROXY=1000000 # devices one proxy may carry under the descriptor limit
if [[ -n "$NODES" && "$NOFILE" != unlimited ]]; then
    # A proxy holds two descriptors per tunnel (client and upstream) and wants
    # 2 x --max-connections + 64 (--max-connections: its devices + 32). Root with
    # CAP_SYS_RESOURCE may raise this shell's hard limit (for the processes of the
    # benchmark only); otherwise several proxies share the devices.
    need=0
    for n in $SIZES; do
        ((2 * (n + 32) + 64 > need)) && need=$((2 * (n + 32) + 64))
    done
    if ((need > NOFILE)); then
        if ulimit -Hn "$need" 2>/dev/null && ulimit -n "$need"; then
            log "descriptor limit raised from $NOFILE to $need for the proxy (2 per device)"
            NOFILE=$need
        else
            PER_PROXY=$(((NOFILE - 64) / 2 - 32))
            log "through a proxy each device costs 2 descriptors: the limit $NOFILE fits" \
                "$PER_PROXY devices per proxy; larger sizes use several proxies"
        fi
    fi
fi
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
    wait_healthz "$port" "$HUB_PID" "$dir/hub.log"
}

wait_healthz() { # port pid log
    bench_wait_hub "$TMP/ca.pem" "$SNI" "$1" "$2" "$3" || exit 1
}

# Cluster mode: NODES hubs on one store (node1, node2, …, started one after the
# other so that the first runs the migrations and creates the key file), each
# believing the proxy's PROXY v2 header (--trusted-proxy 127.0.0.1: the route sends
# one, as in production, and the hub sees each device's own source address), and one
# phyproxy with a route to all of them (several when n devices do not fit one under
# the descriptor limit). Sets NODE_PIDS, HUB_PID (node 1), NODE_PORTS, PROXY_PIDS and
# PROXY_ADDRS.
start_cluster() { # dir n
    local dir=$1 n=$2 k port pid route="" nproxies each
    NODE_PORTS=()
    for k in $(seq 1 "$NODES"); do
        port=$(free_port)
        # shellcheck disable=SC2086
        env ${PHY_BENCH_HUB_ENV:-} "$HUB" --region eu --provisioning \
            --listen "127.0.0.1:$port" --node-id "node$k" --trusted-proxy 127.0.0.1 \
            --db "$(store_url "$dir")" --key-file "$dir/issuance.key" \
            --tls-cert "$TMP/hub.pem" --tls-key "$TMP/hub.key" \
            --max-connections 25000 --ping-interval 3600 --ping-timeout 7200 \
            ${PHY_BENCH_HUB_ARGS:-} 2>"$dir/hub$k.log" &
        pid=$!
        NODE_PIDS+=("$pid")
        NODE_PORTS+=("$port")
        wait_healthz "$port" "$pid" "$dir/hub$k.log"
        route+="${route:+,}127.0.0.1:$port"
    done
    HUB_PID=${NODE_PIDS[0]}
    if [[ -n "$PG_URL" ]]; then # every node listens for the others' announcements
        for k in $(seq 1 "$NODES"); do
            for _ in $(seq 1 100); do
                grep -q 'event=nodelink_ready' "$dir/hub$k.log" && break
                sleep 0.1
            done
        done
    fi
    nproxies=$(((n + PER_PROXY - 1) / PER_PROXY))
    each=$(((n + nproxies - 1) / nproxies))
    PROXY_ADDRS=""
    # No --proxy-key (bulk devices carry no proxy token), so every device is an
    # unauthenticated dev_ identity counted per source address: the per-source rate
    # and tunnel limits and the device share are lifted so that they cannot cap the
    # run (19 source addresses would otherwise allow 19 x 256 tunnels, 50/s each).
    for k in $(seq 1 "$nproxies"); do
        port=$(free_port)
        "$PROXY" --listen "127.0.0.1:$port" --route "$SNI=$route" \
            --max-connections "$((each + 32))" --new-tunnel-rate 0 \
            --max-tunnels-per-source "$((each + 32))" --device-share 0 \
            --idle-timeout 7200 --header-timeout 60 --log-level warn 2>"$dir/proxy$k.log" &
        pid=$!
        PROXY_PIDS+=("$pid")
        PROXY_ADDRS+="${PROXY_ADDRS:+,}127.0.0.1:$port"
        for _ in $(seq 1 101); do # up to 10 s
            python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),1)' \
                "$port" 2>/dev/null && break
            if ! kill -0 "$pid" 2>/dev/null; then
                log "phyproxy did not start; its log:"
                tail -20 "$dir/proxy$k.log" >&2
                exit 1
            fi
            sleep 0.1
        done
    done
}

# The PID of the throwaway cluster's postmaster (the backends are its children).
pg_postmaster_pid() {
    local home=$TMP/pg
    [[ ! -f "$TMP/pg/home" ]] || home=$(cat "$TMP/pg/home")
    head -1 "$home/data/postmaster.pid"
}

# Cluster mode, after phyload: sessions online per node and the database's size
# (and that of an empty one, template1), added to the run's JSON line.
cluster_facts() { # dir json
    local dir=$1 json=$2 db per_node="{}" size=0 template=0
    if [[ -n "$PG_URL" ]]; then
        db=$(store_url "$dir")
        per_node=$(psql -X -q -At "$db" -c "SELECT coalesce(json_object_agg(n, c), '{}')
            FROM (SELECT session_node AS n, count(*) AS c FROM devices WHERE online <> 0
                  GROUP BY 1) s")
        size=$(psql -X -q -At "$db" -c "SELECT pg_database_size(current_database())")
        template=$(psql -X -q -At "$db" -c "SELECT pg_database_size('template1')")
    fi
    python3 - "$json" "$NODES" "${#PROXY_PIDS[@]}" "$per_node" "$size" "$template" <<'PYEOF'
import json, sys
path, nodes, proxies, per_node, size, template = sys.argv[1:]
r = json.loads(open(path).read())
r["nodes"] = int(nodes)
r["proxies"] = int(proxies)
r["sessions_per_node"] = json.loads(per_node)
r["db_bytes"] = int(size)
r["db_template_bytes"] = int(template)
open(path, "w").write(json.dumps(r) + "\n")
PYEOF
}

RESULTS=$TMP/results.jsonl
: >"$RESULTS"
if [[ -n "$NODES" ]]; then
    for n in $SIZES; do
        for r in $(seq 1 "$REPEAT"); do
            dir=$TMP/run-$n-$r
            make_store "$n" "$dir"
            start_cluster "$dir" "$n"
            log "$n devices (run $r): $NODES node(s) ${NODE_PIDS[*]} on ports" \
                "${NODE_PORTS[*]}, proxies ${PROXY_PIDS[*]} on $PROXY_ADDRS;" \
                "load average $(cut -d' ' -f1-3 /proc/loadavg)"
            dbpid=()
            [[ -z "$PG_URL" ]] || dbpid=(--db-pid "$(pg_postmaster_pid)")
            rc=0
            # --hold: the sessions stay open while cluster_facts counts them per node.
            PHYLOAD_TOKEN=$(cat "$dir/token") "$LOAD" --proxy "$PROXY_ADDRS" \
                --sni "$SNI" --ca "$TMP/ca.pem" --creds "$dir/creds.jsonl" --devices "$n" \
                --hub-only --source-ips "$SOURCES" --concurrency "$CONC" \
                --hub-pid "$(IFS=,; echo "${NODE_PIDS[*]}")" \
                --proxy-pid "$(IFS=,; echo "${PROXY_PIDS[*]}")" \
                "${dbpid[@]}" --idle "$IDLE" --push-url "https://127.0.0.1:${NODE_PORTS[0]}" \
                --tag fleet:bench --hold 5 --json >"$dir/result.json" 2>"$dir/phyload.log" &
            load_pid=$!
            while kill -0 "$load_pid" 2>/dev/null && [[ ! -s "$dir/result.json" ]]; do
                sleep 0.2
            done
            facts=0
            if [[ -s "$dir/result.json" ]]; then
                sleep 0.5 # the line is written whole (one printf, then fflush)
                cp "$dir/result.json" "$dir/result.line"
                cluster_facts "$dir" "$dir/result.line" && facts=1
            fi
            wait "$load_pid" || rc=$?
            if ((facts == 0)); then
                log "phyload failed (exit $rc):"
                tail -20 "$dir/phyload.log" >&2
                exit 1
            fi
            mv "$dir/result.line" "$dir/result.json"
            ((rc == 0)) || log "phyload exit $rc: not every device connected or got the push"
            log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
            cat "$dir/result.json" >>"$RESULTS"
            stop_cluster
        done
    done
    if [[ -n "${PHY_BENCH_OUT:-}" ]]; then
        cat "$RESULTS" >>"$PHY_BENCH_OUT"
    fi
    python3 - "$RESULTS" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
hdr = ("nodes", "proxies", "devices", "connected", "failed", "sessions/node", "accepted/s",
       "hub us/sess", "proxy us/sess", "PostgreSQL us/sess", "hub RSS KiB/idle sess",
       "PATCH ms", "push p50 ms", "push p99 ms", "last device ms", "DB bytes/device")
print("| " + " | ".join(hdr) + " |")
print("|" + "|".join("---:" for _ in hdr) + "|")
for r in rows:
    p = r.get("push", {})
    split = "/".join(str(v) for _, v in sorted(r.get("sessions_per_node", {}).items()))
    dbper = (r["db_bytes"] - r["db_template_bytes"]) / r["devices"] if r.get("db_bytes") else 0
    print("| %d | %d | %d | %d | %d | %s | %.0f | %.0f | %.0f | %.0f | %.2f | %.1f | %.1f | %.1f |"
          " %.1f | %.0f |" % (
              r["nodes"], r.get("proxies", 1), r["devices"], r["connected"], r["failed"],
              split or "-",
              r["sessions_per_s"], r["hub_cpu_us_per_session"],
              r.get("proxy_cpu_us_per_session", -1), r.get("db_cpu_us_per_session", -1),
              r["hub_kib_per_session"], p.get("patch_ms", 0), p.get("p50_ms", 0),
              p.get("p99_ms", 0), p.get("last_ms", 0), dbper))
EOF
    exit 0
fi
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
