/* The manufacturer's list of attested serials for `phyhub admin serials-import`:
 * CSV, one "serial,public key" per line. The key is base64 (DER SubjectPublicKeyInfo,
 * raw Ed25519 or raw P-256, see phy/attest.h) or a PEM block, which may span lines
 * (optionally in double quotes). Blank lines, lines starting with '#' and a header
 * line "serial,public_key" are skipped. Pure: no I/O. */
#ifndef PHY_HUB_SERIALS_H
#define PHY_HUB_SERIALS_H

#include <stddef.h>

#include "store.h"

#define SERIALS_IMPORT_MAX 1000000 /* entries per file */

/* Parses text (NUL-terminated): *out (malloc'd, free with serials_free) gets one
 * store_serial_key per entry, its serial and DER key owned by it. 0, or PHY_EINVAL /
 * PHY_ETOOBIG / PHY_ENOMEM with "line N: why" in err. */
int serials_csv_parse(const char *text, struct store_serial_key **out, size_t *n, char *err,
                      size_t errcap);
void serials_free(struct store_serial_key *v, size_t n);

#endif
