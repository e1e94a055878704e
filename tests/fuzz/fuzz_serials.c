/* libFuzzer target: the CSV of attested serials (hub/serials.c) with the public key
 * parser behind it (lib/attest.c, phy_attest_pubkey_parse). Every accepted entry must
 * have a valid serial and a DER key of sane size. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "phy/attest.h"
#include "phy/crypto.h"
#include "serials.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1), err[256];
    struct store_serial_key *v = NULL;
    size_t n = 0;
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    if (serials_csv_parse(text, &v, &n, err, sizeof err) == 0) {
        for (size_t i = 0; i < n; i++) {
            if (!phy_serial_valid(v[i].serial, strlen(v[i].serial)) || v[i].public_key_len == 0 ||
                v[i].public_key_len > PHY_ATTEST_KEY_DER_MAX)
                abort();
        }
    } else if (err[0] == '\0') {
        abort(); /* every refusal says why */
    }
    serials_free(v, n);
    free(text);
    return 0;
}
