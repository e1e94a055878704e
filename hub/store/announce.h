/* What a store on several nodes announces to the other hub nodes (PostgreSQL NOTIFY
 * on STORE_ANNOUNCE_CHANNEL, sent in the transaction of the change, so only committed
 * changes are announced), and its parsing: one text line, "<origin node> <kind> ...",
 * at most STORE_ANNOUNCE_MAX bytes. A node ignores its own announcements (it applied
 * the change itself) and reads the rest from the store. I/O-free. */
#ifndef PHY_STORE_ANNOUNCE_H
#define PHY_STORE_ANNOUNCE_H

#include <stddef.h>
#include <stdint.h>

#include "phy/crypto.h"
#include "store.h"

#define STORE_ANNOUNCE_CHANNEL "phy_nodes"
#define STORE_ANNOUNCE_MAX 256

enum store_announce_kind {
    ANNOUNCE_DESIRED = 'd', /* tenant device version: a device's desired section changed */
    ANNOUNCE_FLEET = 'f',   /* tenant: a fleet patch changed some of its devices */
    ANNOUNCE_CLOSE = 'c',   /* tenant device code: revoked, reset (4001) or deleted (4002) */
    ANNOUNCE_DEVICE = 'v',  /* tenant device what: its "state", "tags" or "name" changed */
    ANNOUNCE_SESSION = 's', /* device gen: a session opened on the origin node */
    ANNOUNCE_LOGOUT = 'l',  /* session_hash: a console session ended */
    ANNOUNCE_REGISTRATION = 'r', /* serial ("*": any): its registrations or issuances
                                  * changed (a claim, a code, a re-arm; soft.h) */
};

struct store_announce {
    char node[STORE_NODE_ID_MAX + 1];
    enum store_announce_kind kind;
    int64_t tenant_id;
    char device_id[PHY_DEVICE_ID_LEN + 1];
    int64_t n; /* DESIRED: the version; CLOSE: the close code; SESSION: the generation */
    char what[8]; /* DEVICE: "state", "tags" or "name" */
    char session_hash[PHY_HASH_HEX_LEN + 1];
    char serial[PHY_SERIAL_MAX + 1]; /* REGISTRATION */
};

/* Writes a's line into out[STORE_ANNOUNCE_MAX]: its length, or PHY_EINVAL (a field
 * that is not valid for the kind). */
int store_announce_format(const struct store_announce *a, char out[STORE_ANNOUNCE_MAX]);

/* Parses one line (NUL-terminated): 0 with *a filled, PHY_EINVAL for anything else
 * (unknown kind, bad field, extra text). */
int store_announce_parse(const char *line, struct store_announce *a);

#endif
