#!/usr/bin/env bash
# The whole system on this machine: a local CA, phyhub (eu, provisioning on),
# phyproxy on loopback and one phyagent waiting to be claimed. Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${PHY_BIN:-build/release}
DIR=${PHY_DEMO_DIR:-demo}
HUB_PORT=${PHY_DEMO_HUB_PORT:-5443}
PROXY_PORT=${PHY_DEMO_PROXY_PORT:-4443}
SERIAL=${PHY_DEMO_SERIAL:-DEMO-0001}
TENANT=demo
USER_NAME=admin

mkdir -p "$DIR/pki" "$DIR/agent" "$DIR/logs"
chmod 700 "$DIR"

# --- local CA and the hub's certificate (portal-eu.phystack.com, localhost, 127.0.0.1)
if [ ! -f "$DIR/pki/hub.pem" ]; then
  echo "creating a local CA and TLS certificate in $DIR/pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -keyout "$DIR/pki/ca.key" -out "$DIR/pki/ca.pem" -subj "/CN=PhyStack demo CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$DIR/pki/hub.key" -out "$DIR/pki/hub.csr" -subj "/CN=portal-eu.phystack.com" 2>/dev/null
  printf 'subjectAltName=DNS:portal-eu.phystack.com,DNS:localhost,IP:127.0.0.1\n' > "$DIR/pki/ext.cnf"
  openssl x509 -req -in "$DIR/pki/hub.csr" -CA "$DIR/pki/ca.pem" -CAkey "$DIR/pki/ca.key" \
    -CAcreateserial -days 825 -extfile "$DIR/pki/ext.cnf" -out "$DIR/pki/hub.pem" 2>/dev/null
  chmod 600 "$DIR/pki/"*.key
fi

# --- a fresh store each run: demo tenant, user and API token (kept 0600)
DB="$DIR/hub-eu.db"
rm -rf "$DB" "$DB"-* "$DB.key" "$DIR/api-token" "$DIR/console-password" "$DIR/agent"
mkdir -p "$DIR/agent"
if [ ! -f "$DIR/api-token" ]; then
  "$BIN/phyhub" admin --db "$DB" tenant-add "$TENANT" --region eu >/dev/null
  PASSWORD=$(openssl rand -base64 12)
  echo "$PASSWORD" | "$BIN/phyhub" admin --db "$DB" user-add "$TENANT" "$USER_NAME" >/dev/null
  (umask 077; echo "$PASSWORD" > "$DIR/console-password")
  (umask 077; "$BIN/phyhub" admin --db "$DB" token-add "$TENANT" "$USER_NAME" > "$DIR/api-token")
fi

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "stopping demo"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  exit 0
}
trap cleanup INT TERM EXIT

wait_port() { # host port
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1:$2 did not open; see $DIR/logs" >&2
  return 1
}

"$BIN/phyhub" --region eu --listen "127.0.0.1:$HUB_PORT" --db "$DB" \
  --tls-cert "$DIR/pki/hub.pem" --tls-key "$DIR/pki/hub.key" --provisioning \
  --public-endpoint portal-eu.phystack.com:443 --code-ttl 300 --poll-interval 5 \
  2> "$DIR/logs/phyhub.log" &
pids+=($!)
wait_port 127.0.0.1 "$HUB_PORT"

"$BIN/phyproxy" --listen "127.0.0.1:$PROXY_PORT" \
  --route "portal-eu.phystack.com=127.0.0.1:$HUB_PORT" --allow 'portal-*.phystack.com:443' \
  2> "$DIR/logs/phyproxy.log" &
pids+=($!)
wait_port 127.0.0.1 "$PROXY_PORT"

"$BIN/phyagent" --serial "$SERIAL" --state-dir "$DIR/agent" --proxy "127.0.0.1:$PROXY_PORT" \
  --ca "$DIR/pki/ca.pem" --provisioning-endpoint portal-eu.phystack.com:443 \
  --on-config "cat > '$PWD/$DIR/agent/hook-input.json'; echo applied by the demo hook" \
  --status-interval 15 \
  2> "$DIR/logs/phyagent.log" &
agent=$!
pids+=($agent)

for _ in $(seq 1 100); do
  [ -s "$DIR/agent/provisioning-code" ] && break
  sleep 0.1
done
CODE=$(cat "$DIR/agent/provisioning-code" 2>/dev/null || echo "??????")

cat <<EOF

PhyStack demo is running on this machine:
  phyhub   (eu, provisioning)  https://127.0.0.1:$HUB_PORT   log $DIR/logs/phyhub.log
  phyproxy (CONNECT)           127.0.0.1:$PROXY_PORT         log $DIR/logs/phyproxy.log
  phyagent serial $SERIAL shows code $CODE                  log $DIR/logs/phyagent.log

Claim the device by its code (or use --serial $SERIAL):

  PHY_TOKEN=\$(cat $DIR/api-token) $BIN/phyctl --url https://127.0.0.1:$HUB_PORT --ca $DIR/pki/ca.pem claim --code $CODE --name "demo screen"

Then watch it come online and configure it (phyctl reads the token from PHY_TOKEN):

  export PHY_TOKEN=\$(cat $DIR/api-token)
  $BIN/phyctl --url https://127.0.0.1:$HUB_PORT --ca $DIR/pki/ca.pem devices list
  $BIN/phyctl --url https://127.0.0.1:$HUB_PORT --ca $DIR/pki/ca.pem events
  $BIN/phyctl --url https://127.0.0.1:$HUB_PORT --ca $DIR/pki/ca.pem twin set DEVICE_ID message=hello
  cat $DIR/agent/config.json        # written by the agent; the hook's result is in the reported twin

The code rotates every 5 minutes; the current one is always in $DIR/agent/provisioning-code.
Press Ctrl-C to stop everything.
EOF

# Tell when the agent got its credentials; it then stays connected to the hub.
while kill -0 "$agent" 2>/dev/null && [ ! -f "$DIR/agent/credentials.json" ]; do sleep 0.5; done
if [ -f "$DIR/agent/credentials.json" ]; then
  echo "phyagent received its credentials ($DIR/agent/credentials.json, mode $(stat -c %a "$DIR/agent/credentials.json")) and is connecting to the hub over WSS"
fi
wait
