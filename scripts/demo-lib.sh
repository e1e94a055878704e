# Shared by scripts/demo.sh and scripts/demo-cluster.sh (sourced): the demo's local CA
# and hub certificate, and waiting for a port. Everything stays on 127.0.0.1.

# demo_pki DIR: a local CA and one certificate for every hub name
# (portal-{eu,au,uae}.phystack.com, localhost, 127.0.0.1) in DIR/pki, made once.
demo_pki() {
  local dir=$1
  mkdir -p "$dir/pki"
  if ! openssl x509 -in "$dir/pki/hub.pem" -noout -ext subjectAltName 2>/dev/null |
       grep -q 'portal-uae.phystack.com'; then
    echo "creating a local CA and TLS certificate in $dir/pki"
    rm -f "$dir/pki/"*
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
      -keyout "$dir/pki/ca.key" -out "$dir/pki/ca.pem" -subj "/CN=PhyStack demo CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout "$dir/pki/hub.key" -out "$dir/pki/hub.csr" -subj "/CN=portal-eu.phystack.com" 2>/dev/null
    printf 'subjectAltName=%s\n' "DNS:portal-eu.phystack.com,DNS:portal-au.phystack.com,DNS:portal-uae.phystack.com,DNS:localhost,IP:127.0.0.1" \
      > "$dir/pki/ext.cnf"
    openssl x509 -req -in "$dir/pki/hub.csr" -CA "$dir/pki/ca.pem" -CAkey "$dir/pki/ca.key" \
      -CAcreateserial -days 825 -extfile "$dir/pki/ext.cnf" -out "$dir/pki/hub.pem" 2>/dev/null
    chmod 600 "$dir/pki/"*.key
  fi
}

# wait_port PORT [LOGDIR]: until 127.0.0.1:PORT accepts (10 s).
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port 127.0.0.1:$1 did not open; see ${2:-the logs}" >&2
  return 1
}
