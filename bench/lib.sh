# Shared by the benchmark scripts (sourced): a free loopback port, the test PKI and a
# throwaway PostgreSQL. Expects ROOT (the source tree).

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# CA + hub certificate in DIR (ca.pem, hub.pem, hub.key): ECDSA P-256, SAN SNI and
# 127.0.0.1.
bench_pki() { # dir sni
    (
        cd "$1"
        openssl ecparam -name prime256v1 -genkey -noout -out ca.key
        openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=phystack bench CA" \
            -out ca.pem
        openssl ecparam -name prime256v1 -genkey -noout -out hub.key
        openssl req -new -key hub.key -subj "/CN=$2" -out hub.csr
        printf '%s\n' "subjectAltName=DNS:$2,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
            "keyUsage=digitalSignature" "extendedKeyUsage=serverAuth" >ext.cnf
        openssl x509 -req -in hub.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -sha256 -extfile ext.cnf -out hub.pem
    ) >/dev/null 2>&1
}

# Waits (up to 20 s) until the hub on 127.0.0.1:PORT answers /healthz over TLS
# (CA file, SNI name); returns 1, with the tail of its log on stderr, when it does not
# or its process PID ended first.
bench_wait_hub() { # ca sni port pid log
    for _ in $(seq 1 400); do
        curl -sf --max-time 1 --cacert "$1" --resolve "$2:$3:127.0.0.1" \
            "https://$2:$3/healthz" >/dev/null 2>&1 && return 0
        kill -0 "$4" 2>/dev/null || break
        sleep 0.05
    done
    printf 'phyhub did not start; its log:\n' >&2
    tail -20 "$5" >&2
    return 1
}

# A throwaway PostgreSQL cluster in DIR/pg (scripts/pgtest.sh; stop it with
# bench_pg_stop); prints its base URL.
bench_pg_start() { # dir
    chmod 755 "$1" # the server runs as the postgres user
    "$ROOT/scripts/pgtest.sh" start "$1/pg" "$(free_port)" >&2
    cat "$1/pg/url"
}

bench_pg_stop() { # dir
    "$ROOT/scripts/pgtest.sh" stop "$1/pg" || true
}
