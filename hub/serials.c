/* The CSV of attested serials (serials.h). */
#include "serials.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "phy/attest.h"
#include "phy/crypto.h"
#include "phy/err.h"

#define PEM_END "-----END PUBLIC KEY-----"
#define FIELD_MAX 4096 /* a key field, PEM included */

void serials_free(struct store_serial_key *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++) {
        free((char *)v[i].serial);
        free((unsigned char *)v[i].public_key);
    }
    free(v);
}

/* The line starting at p: its length without the newline (and a CR before it). */
static size_t line_len(const char *p, const char **next)
{
    const char *e = strchr(p, '\n');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    *next = e ? e + 1 : p + n;
    if (n && p[n - 1] == '\r')
        n--;
    return n;
}

static int blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t')
            return 0;
    return 1;
}

int serials_csv_parse(const char *text, struct store_serial_key **out, size_t *n, char *err,
                      size_t errcap)
{
    struct store_serial_key *v = NULL;
    size_t count = 0, cap = 0, lineno = 0;
    char field[FIELD_MAX + 1];
    int rc = 0;
    *out = NULL;
    *n = 0;
    for (const char *p = text, *next; *p; p = next) {
        size_t len = line_len(p, &next);
        lineno++;
        if (blank(p, len) || p[0] == '#' || (lineno == 1 && len >= 7 && strncmp(p, "serial,", 7) == 0))
            continue;
        const char *comma = memchr(p, ',', len);
        if (!comma) {
            snprintf(err, errcap, "line %zu: expected serial,public_key", lineno);
            rc = PHY_EINVAL;
            goto fail;
        }
        size_t sl = (size_t)(comma - p);
        if (!phy_serial_valid(p, sl)) {
            snprintf(err, errcap, "line %zu: a serial is 1-64 characters of A-Z a-z 0-9 . _ -",
                     lineno);
            rc = PHY_EINVAL;
            goto fail;
        }
        /* The key field: the rest of the line, and for a PEM block the lines up to its
         * END line; surrounding double quotes are dropped. */
        size_t fl = 0, start_line = lineno;
        const char *k = comma + 1;
        size_t kl = len - sl - 1;
        int quoted = kl > 0 && k[0] == '"';
        if (quoted) {
            k++;
            kl--;
        }
        for (;;) {
            if (fl + kl + 1 > FIELD_MAX) {
                snprintf(err, errcap, "line %zu: public key field too long", start_line);
                rc = PHY_ETOOBIG;
                goto fail;
            }
            memcpy(field + fl, k, kl);
            fl += kl;
            field[fl] = '\0';
            int pem = strncmp(field, "-----BEGIN", 10) == 0;
            if (!pem || strstr(field, PEM_END))
                break;
            if (!*next) {
                snprintf(err, errcap, "line %zu: PEM block without its END line", start_line);
                rc = PHY_EINVAL;
                goto fail;
            }
            field[fl++] = '\n';
            k = next;
            kl = line_len(next, &next);
            lineno++;
        }
        if (quoted) {
            if (fl == 0 || field[fl - 1] != '"') {
                snprintf(err, errcap, "line %zu: unterminated quotes", start_line);
                rc = PHY_EINVAL;
                goto fail;
            }
            field[--fl] = '\0';
        }
        if (count == SERIALS_IMPORT_MAX) {
            snprintf(err, errcap, "line %zu: more than %d serials in one file", start_line,
                     SERIALS_IMPORT_MAX);
            rc = PHY_ETOOBIG;
            goto fail;
        }
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            struct store_serial_key *nv = realloc(v, ncap * sizeof *nv);
            if (!nv) {
                rc = PHY_ENOMEM;
                snprintf(err, errcap, "out of memory");
                goto fail;
            }
            v = nv;
            cap = ncap;
        }
        char why[160];
        unsigned char *der = NULL;
        size_t der_len = 0;
        if (phy_attest_pubkey_parse(field, &der, &der_len, why, sizeof why) != 0) {
            snprintf(err, errcap, "line %zu: %s", start_line, why);
            rc = PHY_EINVAL;
            goto fail;
        }
        char *serial = strndup(p, sl);
        if (!serial) {
            free(der);
            rc = PHY_ENOMEM;
            snprintf(err, errcap, "out of memory");
            goto fail;
        }
        v[count++] = (struct store_serial_key){serial, der, der_len};
    }
    *out = v;
    *n = count;
    return 0;
fail:
    serials_free(v, count);
    return rc;
}
