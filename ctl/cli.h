/* phyctl helpers without network I/O: URL and argv handling, output formatting. */
#ifndef PHY_CTL_CLI_H
#define PHY_CTL_CLI_H

#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

#include "phy/config.h"

#define CTL_HOST_MAX 253

/* Parses "https://HOST[:PORT][/]" into host[CTL_HOST_MAX + 1] and *port (default 443).
 * 0 or PHY_EINVAL (other schemes, paths, query, userinfo). */
int ctl_parse_url(const char *url, char *host, unsigned *port);

/* Index of the first argument in argv[first..argc) that is neither an option of opts
 * nor an option's value ("--name VALUE" unless BOOL, "--name=VALUE", "--config FILE",
 * "--help", "-h"); an argument after "--" is the command. argc when there is none. */
int ctl_find_command(const struct phy_opt *opts, int argc, char **argv, int first);

/* Percent-encodes s (everything but RFC 3986 unreserved) into out[cap]. 0 or
 * PHY_ETOOBIG. */
int ctl_urlencode(const char *s, char *out, size_t cap);

/* Copies s into out[cap] with control bytes (C0, DEL) replaced by '?', so that server
 * text cannot drive the terminal; NULL or "" becomes "-". Truncates. Returns out. */
const char *ctl_clean(const char *s, char *out, size_t cap);

/* String member of o cleaned for the terminal ("-" when absent or not a string). */
const char *ctl_member(const json_t *o, const char *key, char *out, size_t cap);

/* "error: <code>: <message>" for an error answer; falls back on the status
 * ("error: http_502: Bad Gateway") when the body is not a JSON error. */
void ctl_format_error(int status, const char *body, size_t n, char *out, size_t cap);

/* "claimed dev_x (serial SN, name N, state S)" from a device object; the name part is
 * left out when the device has none. */
void ctl_format_claimed(const json_t *dev, char *out, size_t cap);

/* Prints devices (a JSON array of device objects) as an aligned table with the
 * header DEVICE ID, SERIAL, NAME, STATE, CREATED. */
void ctl_print_devices(const json_t *devices, FILE *f);

#endif
