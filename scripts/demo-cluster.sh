#!/usr/bin/env bash
# Region eu as two phyhub nodes on one throwaway PostgreSQL (Debian's postgresql
# package, started by scripts/pgtest.sh in the demo folder), phyproxy with both nodes
# as upstreams of portal-eu.phystack.com, and three agents claimed by their codes.
# It prints how to kill one node and watch its agents come back on the other. All on
# 127.0.0.1; nothing contacts a real phystack.com host. Ctrl-C stops all (and the
# database). Build first: make build-release.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/demo-lib.sh

BIN=${PHY_BIN:-build/release}
DIR=${PHY_DEMO_DIR:-demo-cluster}
PROXY_PORT=${PHY_DEMO_PROXY_PORT:-4453}
PG_PORT=${PHY_DEMO_PG_PORT:-55460}
NODE_PORTS=(${PHY_DEMO_NODE_PORTS:-5453 5454})
DEADLINE=${PHY_DEMO_DEADLINE:-90}
AGENTS=3

[ -x "$BIN/phyhub" ] || { echo "no $BIN/phyhub: run 'make build-release' (or set PHY_BIN)" >&2; exit 1; }
command -v psql >/dev/null || { echo "PostgreSQL client missing: apt-get install postgresql" >&2; exit 1; }
for p in "${NODE_PORTS[@]}" "$PROXY_PORT" "$PG_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p is in use; see the PHY_DEMO_*_PORT settings at the top of $0" >&2; exit 1
  fi
done

mkdir -p "$DIR"
chmod 700 "$DIR"
rm -rf "$DIR/logs" "$DIR/agents" "$DIR/keys" "$DIR/tokens"
mkdir -p "$DIR/logs" "$DIR/agents" "$DIR/keys" "$DIR/tokens"
chmod 700 "$DIR/keys" "$DIR/tokens"
demo_pki "$DIR"
CA="$DIR/pki/ca.pem"

nodes=() proxy=() agents=()
cleanup() {
  local rc=$?
  trap - INT TERM EXIT
  echo
  echo "stopping the cluster demo"
  local pids=("${agents[@]}" "${proxy[@]}" "${nodes[@]}") p
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 50); do # at most 5 s, then the database goes anyway
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && break; p=; done
    [ -z "${p:-}" ] && break
    sleep 0.1
  done
  scripts/pgtest.sh stop "$PWD/$DIR/pg" >/dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup INT TERM EXIT

echo "starting PostgreSQL on 127.0.0.1:$PG_PORT (data in $DIR/pg)"
scripts/pgtest.sh start "$PWD/$DIR/pg" "$PG_PORT" >"$DIR/logs/postgresql.log"
DB="$(cat "$DIR/pg/url")/postgres"
KEY="$DIR/keys/issuance.key"
"$BIN/phyhub" admin --db "$DB" tenant-add acme --region eu >/dev/null
"$BIN/phyhub" admin --db "$DB" tenant-set acme --serial-claims any >/dev/null
(umask 077; "$BIN/phyhub" admin --db "$DB" user-add acme admin <<<"$(openssl rand -base64 12)" >/dev/null
 "$BIN/phyhub" admin --db "$DB" token-add acme admin >"$DIR/tokens/acme")

start_node() { # index
  local i=$1 port=${NODE_PORTS[$1]}
  "$BIN/phyhub" --region eu --listen "127.0.0.1:$port" --db "$DB" --key-file "$KEY" \
    --node-id "node-$((i + 1))" --node-heartbeat 1 --node-timeout 5 \
    --tls-cert "$DIR/pki/hub.pem" --tls-key "$DIR/pki/hub.key" --trusted-proxy 127.0.0.1 \
    --provisioning --public-endpoint portal-eu.phystack.com:443 --poll-interval 2 \
    --ping-interval 5 --ping-timeout 12 \
    2>>"$DIR/logs/phyhub-node-$((i + 1)).log" &
  nodes[$i]=$!
  wait_port "$port" "$DIR/logs"
}
start_node 0
start_node 1

"$BIN/phyproxy" --listen "127.0.0.1:$PROXY_PORT" \
  --route "portal-eu.phystack.com=127.0.0.1:${NODE_PORTS[0]},127.0.0.1:${NODE_PORTS[1]}" \
  --allow 'portal-*.phystack.com:443' --upstream-backoff-ms 500 \
  2>"$DIR/logs/phyproxy.log" &
proxy+=($!)
wait_port "$PROXY_PORT" "$DIR/logs"

for i in $(seq 1 $AGENTS); do
  state="$DIR/agents/$i"
  mkdir -p -m 700 "$state"
  "$BIN/phyagent" --serial "CLUSTER-$i" --state-dir "$state" --proxy "127.0.0.1:$PROXY_PORT" \
    --ca "$CA" --provisioning-endpoint portal-eu.phystack.com:443 --status-interval 10 \
    --reconnect-min 1 --reconnect-max 3 \
    2>"$DIR/logs/phyagent-$i.log" &
  agents+=($!)
done

ctl() { PHY_TOKEN=$(cat "$DIR/tokens/acme") "$BIN/phyctl" --url "https://127.0.0.1:${NODE_PORTS[0]}" --ca "$CA" "$@"; }

for i in $(seq 1 $AGENTS); do
  code_file="$DIR/agents/$i/provisioning-code"
  for _ in $(seq 1 $((DEADLINE * 10))); do [ -s "$code_file" ] && break; sleep 0.1; done
  [ -s "$code_file" ] || { echo "agent CLUSTER-$i showed no code; see $DIR/logs" >&2; exit 1; }
  echo "CLUSTER-$i: $(ctl claim --code "$(cat "$code_file")" --name "screen $i")"
done
end=$((SECONDS + DEADLINE))
until [ "$(ctl devices list --presence online 2>/dev/null | grep -c '^dev_')" -ge $AGENTS ]; do
  [ $SECONDS -lt $end ] || { echo "not all agents online within ${DEADLINE}s; see $DIR/logs" >&2; exit 1; }
  sleep 0.5
done

cat <<EOF

Region eu runs as two nodes on one PostgreSQL (logs in $DIR/logs):
  node-1  https://127.0.0.1:${NODE_PORTS[0]}  pid ${nodes[0]}
  node-2  https://127.0.0.1:${NODE_PORTS[1]}  pid ${nodes[1]}
  phyproxy 127.0.0.1:$PROXY_PORT: portal-eu.phystack.com -> both nodes (fewest tunnels first)
  PostgreSQL $DB

All $AGENTS agents are online; which node holds whose session:
  psql "$DB" -c 'select device_id, session_node, online from devices'

A change made on one node reaches devices on the other (LISTEN/NOTIFY):
  export PHY_TOKEN=\$(cat $DIR/tokens/acme)
  $BIN/phyctl --url https://127.0.0.1:${NODE_PORTS[1]} --ca $CA devices list
  $BIN/phyctl --url https://127.0.0.1:${NODE_PORTS[1]} --ca $CA twin set <device_id> message=hello

Kill one node and watch its agents come back on the other through the proxy:
  kill -9 ${nodes[0]}     # node-1
  watch -n1 "psql '$DB' -Atc 'select device_id, session_node, online from devices'"
  (agents whose session was on node-1 reconnect to node-2 within seconds; a device
  that does not come back is marked offline once node-1 has been silent for 5 s)

Press Ctrl-C to stop everything (the database too).
EOF
wait "${proxy[@]}"
