#!/usr/bin/env bash
# The whole system on this machine: a local CA, three regional hubs (eu with
# provisioning, au, uae), phyproxy routing portal-{eu,au,uae}.phystack.com to them,
# one tenant per region and one phyagent per tenant, claimed in its tenant's region.
# Everything listens on 127.0.0.1; nothing contacts a real phystack.com host (the
# proxy has a route for each name and no DNS fallback). Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/demo-lib.sh

BIN=${PHY_BIN:-build/release}
DIR=${PHY_DEMO_DIR:-demo}
PROXY_PORT=${PHY_DEMO_PROXY_PORT:-4443}
DEADLINE=${PHY_DEMO_DEADLINE:-90} # seconds to wait for each agent's code, and for all to be online

REGIONS=(eu au uae)
declare -A PORT=([eu]=${PHY_DEMO_EU_PORT:-${PHY_DEMO_HUB_PORT:-5443}}
                 [au]=${PHY_DEMO_AU_PORT:-5444} [uae]=${PHY_DEMO_UAE_PORT:-5445})
declare -A TENANT=([eu]=acme [au]=koala [uae]=falcon)
declare -A SERIAL=([eu]=DEMO-EU-1 [au]=DEMO-AU-1 [uae]=DEMO-UAE-1)
# a second device per region that the demo leaves unclaimed: claim it in the console
declare -A SERIAL2=([eu]=DEMO-EU-2 [au]=DEMO-AU-2 [uae]=DEMO-UAE-2)
USER_NAME=admin

[ -x "$BIN/phyhub" ] || { echo "no $BIN/phyhub: run 'make demo' (or set PHY_BIN)" >&2; exit 1; }
for r in "${REGIONS[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$r]}") 2>/dev/null; then
    echo "port ${PORT[$r]} (hub $r) is in use; set PHY_DEMO_${r^^}_PORT" >&2; exit 1
  fi
done
if (exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null; then
  echo "port $PROXY_PORT (proxy) is in use; set PHY_DEMO_PROXY_PORT" >&2; exit 1
fi

mkdir -p "$DIR"
chmod 700 "$DIR"
mkdir -p "$DIR/pki" "$DIR/logs"

demo_pki "$DIR"
CA="$DIR/pki/ca.pem"

# --- a fresh state each run: one store per region, inter-region keys, tenants, agents
rm -rf "$DIR/hub-eu.db" "$DIR/hub-eu.db"-* "$DIR/hub-eu.db.key" "$DIR/api-token" \
  "$DIR/console-password" "$DIR/agent" # left by the one-region demo
rm -rf "$DIR/keys" "$DIR/tokens" "$DIR/agents" "$DIR/logs/"*
for r in "${REGIONS[@]}"; do rm -f "$DIR/$r.db" "$DIR/$r.db"-* "$DIR/$r.db.key"; done
mkdir -p "$DIR/keys" "$DIR/tokens" "$DIR/agents"
chmod 700 "$DIR/keys" "$DIR/tokens"

"$BIN/phyhub" admin key-new "$DIR/keys/au.key" >/dev/null
"$BIN/phyhub" admin key-new "$DIR/keys/uae.key" >/dev/null

for r in "${REGIONS[@]}"; do
  db="$DIR/$r.db" t=${TENANT[$r]}
  "$BIN/phyhub" admin --db "$db" tenant-add "$t" --region "$r" >/dev/null
  password=$(openssl rand -base64 12)
  echo "$password" | "$BIN/phyhub" admin --db "$db" user-add "$t" "$USER_NAME" >/dev/null
  (umask 077; echo "$password" > "$DIR/tokens/$r.password"
   "$BIN/phyhub" admin --db "$db" token-add "$t" "$USER_NAME" > "$DIR/tokens/$r")
done

hubs=() proxy=() agents=()
alive() { local p; for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
stop() { # pids...: SIGTERM, then wait for them
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  wait "$@" 2>/dev/null || true
}
cleanup() { # [INT|TERM]
  local rc=$?
  trap - INT TERM EXIT
  echo
  echo "stopping demo"
  if [ "${1:-}" = INT ]; then
    # Ctrl-C reached every process of the terminal's group: let them stop by
    # themselves (a second signal would cut a hub's shutdown short).
    for _ in $(seq 1 30); do alive "${agents[@]}" "${proxy[@]}" "${hubs[@]}" || break; sleep 0.1; done
  fi
  stop "${agents[@]}"
  stop "${proxy[@]}"
  stop "${hubs[@]}"
  [ -n "${1:-}" ] && rc=0
  exit "$rc"
}
trap 'cleanup INT' INT
trap 'cleanup TERM' TERM
trap cleanup EXIT


# Every hub believes the proxy's PROXY header (the device's address); eu, which issues
# credentials, signs each device's proxy token with the key the proxy checks.
hub_common=(--tls-cert "$DIR/pki/hub.pem" --tls-key "$DIR/pki/hub.key"
            --code-ttl 300 --poll-interval 5 --trusted-proxy 127.0.0.1)
"$BIN/phyhub" --region eu --listen "127.0.0.1:${PORT[eu]}" --db "$DIR/eu.db" "${hub_common[@]}" \
  --provisioning --public-endpoint portal-eu.phystack.com:443 \
  --peer "au=$DIR/keys/au.key" --peer "uae=$DIR/keys/uae.key" \
  --proxy-key "k1=$DIR/keys/proxy.key" \
  2> "$DIR/logs/phyhub-eu.log" &
hubs+=($!)
wait_port "${PORT[eu]}"
for r in au uae; do
  "$BIN/phyhub" --region "$r" --listen "127.0.0.1:${PORT[$r]}" --db "$DIR/$r.db" "${hub_common[@]}" \
    --public-endpoint "portal-$r.phystack.com:443" \
    --provisioning-url "https://127.0.0.1:${PORT[eu]}" --ca "$CA" \
    --inter-region-key-file "$DIR/keys/$r.key" \
    2> "$DIR/logs/phyhub-$r.log" &
  hubs+=($!)
done
for r in au uae; do wait_port "${PORT[$r]}"; done

"$BIN/phyproxy" --listen "127.0.0.1:$PROXY_PORT" \
  --route "portal-eu.phystack.com=127.0.0.1:${PORT[eu]}" \
  --route "portal-au.phystack.com=127.0.0.1:${PORT[au]}" \
  --route "portal-uae.phystack.com=127.0.0.1:${PORT[uae]}" \
  --allow 'portal-*.phystack.com:443' --proxy-key "k1=$DIR/keys/proxy.key" \
  2> "$DIR/logs/phyproxy.log" &
proxy+=($!)
wait_port "$PROXY_PORT"

# --- one agent per tenant; each provisions through the proxy at portal-eu
for r in "${REGIONS[@]}"; do
  state="$DIR/agents/$r"
  mkdir -p -m 700 "$state"
  "$BIN/phyagent" --serial "${SERIAL[$r]}" --state-dir "$state" --proxy "127.0.0.1:$PROXY_PORT" \
    --ca "$CA" --provisioning-endpoint portal-eu.phystack.com:443 \
    --on-config "cat > '$PWD/$state/hook-input.json'; echo applied by the $r demo hook" \
    --status-interval 15 \
    2> "$DIR/logs/phyagent-$r.log" &
  agents+=($!)
done

# --- a second agent per region, left for the user to claim in the console
for r in "${REGIONS[@]}"; do
  state="$DIR/agents/$r-2"
  mkdir -p -m 700 "$state"
  "$BIN/phyagent" --serial "${SERIAL2[$r]}" --state-dir "$state" --proxy "127.0.0.1:$PROXY_PORT" \
    --ca "$CA" --provisioning-endpoint portal-eu.phystack.com:443 --status-interval 15 \
    2> "$DIR/logs/phyagent-$r-2.log" &
  agents+=($!)
done

ctl() { # region args... (the region's hub URL, the CA and its tenant's token)
  local r=$1; shift
  PHY_TOKEN=$(cat "$DIR/tokens/$r") "$BIN/phyctl" --url "https://127.0.0.1:${PORT[$r]}" --ca "$CA" "$@"
}

# --- claim each agent by its code, on the hub of its tenant's region
declare -A DEVICE
for r in "${REGIONS[@]}"; do
  code_file="$DIR/agents/$r/provisioning-code"
  for _ in $(seq 1 $((DEADLINE * 10))); do
    [ -s "$code_file" ] && break
    sleep 0.1
  done
  if [ ! -s "$code_file" ]; then
    echo "phyagent ${SERIAL[$r]} showed no code within ${DEADLINE}s; see $DIR/logs/phyagent-$r.log" >&2
    exit 1
  fi
  code=$(cat "$code_file")
  echo "$r: ${SERIAL[$r]} shows code $code; claiming it for tenant ${TENANT[$r]} on the $r hub"
  echo "  \$ phyctl --url https://127.0.0.1:${PORT[$r]} claim --code $code --name \"${TENANT[$r]} screen\""
  out=$(ctl "$r" claim --code "$code" --name "${TENANT[$r]} screen")
  echo "  $out"
  DEVICE[$r]=$(sed -n 's/^claimed \(dev_[a-z2-7]*\) .*/\1/p' <<<"$out")
done

# --- wait until each device is online in its own region
end=$((SECONDS + DEADLINE))
for r in "${REGIONS[@]}"; do
  until ctl "$r" devices list --presence online 2>/dev/null | grep -q "^${DEVICE[$r]} "; do
    if [ $SECONDS -ge $end ]; then
      echo "${DEVICE[$r]} (${SERIAL[$r]}) not online in $r within ${DEADLINE}s; see $DIR/logs" >&2
      exit 1
    fi
    sleep 0.5
  done
done

cat <<EOF

PhyStack demo is running on this machine (logs in $DIR/logs):
  phyhub eu  (provisioning)  https://127.0.0.1:${PORT[eu]}  tenant ${TENANT[eu]}   store $DIR/eu.db
  phyhub au                  https://127.0.0.1:${PORT[au]}  tenant ${TENANT[au]}  store $DIR/au.db
  phyhub uae                 https://127.0.0.1:${PORT[uae]}  tenant ${TENANT[uae]} store $DIR/uae.db
  phyproxy                   127.0.0.1:$PROXY_PORT  routes portal-{eu,au,uae}.phystack.com
  proxy access log $DIR/logs/phyproxy.log: one line per tunnel when it closes (the
  agents' requests to portal-eu now; their sessions to portal-eu/au/uae at Ctrl-C)

All three devices are online, each in its own region:
EOF
for r in "${REGIONS[@]}"; do
  echo "  $r: $(grep -o 'event=provisioned .*' "$DIR/logs/phyagent-$r.log" | head -1)"
done
echo
echo "Try, per region (each hub knows only its own tenant; the token is that tenant's):"
for r in "${REGIONS[@]}"; do
  c="$BIN/phyctl --url https://127.0.0.1:${PORT[$r]} --ca $CA"
  cat <<EOF

  # $r: tenant ${TENANT[$r]}, device ${DEVICE[$r]} (${SERIAL[$r]})
  export PHY_TOKEN=\$(cat $DIR/tokens/$r)
  $c devices list
  $c twin set ${DEVICE[$r]} message=hello
  cat $DIR/agents/$r/config.json
  $c devices get ${DEVICE[$r]}
  $c events
EOF
done
cat <<EOF

Residency: for the au and uae devices eu keeps only the spent serial (no device ID,
no sealed credentials, no tenant):
  sqlite3 -readonly -header $DIR/eu.db 'select serial, region, device_id, sealed is not null as sealed from issuances'

The console of each region (the certificate is from the demo's own CA, $CA:
import it into the browser, or accept the warning once per hub):
EOF
for r in "${REGIONS[@]}"; do
  cat <<EOF
  $r: https://127.0.0.1:${PORT[$r]}/  tenant ${TENANT[$r]}  user $USER_NAME  password $(cat "$DIR/tokens/$r.password")
      "Add device" with the code that ${SERIAL2[$r]} shows: cat $DIR/agents/$r-2/provisioning-code
EOF
done
cat <<EOF

Press Ctrl-C to stop everything.
EOF
wait
