/* phyhub's shared state: configuration, store, keys and counters. */
#ifndef PHY_HUB_HUB_H
#define PHY_HUB_HUB_H

#include <stdint.h>

#include "phy/crypto.h"
#include "store.h"

struct hub_config {
    char *region;   /* "eu" */
    char *listen;   /* "0.0.0.0:443" */
    char *db;       /* SQLite file */
    char *key_file; /* AEAD key for pending issuances; default <db>.key */
    char *tls_cert, *tls_key;
    int provisioning;      /* serve the provisioning API (eu) */
    char *public_endpoint; /* "portal-eu.phystack.com:443", given to devices */
    long code_ttl_s;
    long poll_interval_s;
    long max_poll_interval_s;
    long issuance_grace_s;
    long registration_idle_s;
    long header_timeout_s; /* TLS handshake + request head + body */
    long keepalive_s;      /* idle between requests on one connection */
    long max_body;         /* request body bytes */
    long max_connections;
    long sweep_interval_s;
    long claim_user_limit, claim_tenant_limit, claim_window_s;
};

struct hub {
    struct hub_config cfg;
    const struct phy_store_ops *store_ops;
    struct store *store;
    unsigned char issuance_key[PHY_AEAD_KEY_LEN];
};

/* Milliseconds since the Unix epoch (wall clock). */
int64_t hub_now_ms(void);

/* Fills provisioning parameters from the configuration at now. */
void hub_prov_params(const struct hub *h, int64_t now_ms, struct store_prov_params *p);

#endif
