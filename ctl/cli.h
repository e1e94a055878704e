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

/* "renamed dev_x to N" from the device a rename answered, or "removed the name of
 * dev_x (listed by serial SN)" when it has none now. */
void ctl_format_renamed(const json_t *dev, char *out, size_t cap);

/* Prints devices (a JSON array of device objects) as an aligned table with the
 * header DEVICE ID, SERIAL, NAME, STATE, PRESENCE, LAST SEEN, CREATED. */
void ctl_print_devices(const json_t *devices, FILE *f);

/* 1 when s is a device ID: "dev_" + 26 characters of [a-z2-7]. */
int ctl_device_id_valid(const char *s);

/* Applies one `twin set` argument "key=value" to patch (a JSON object). The key is
 * split on '.' into nested objects (a.b.c; every part non-empty); the value is JSON
 * when it parses as JSON (numbers, true, false, null, objects, arrays, "quoted
 * strings"), else the plain string. null deletes the key (merge patch). A key given
 * twice, or below a key whose value is not an object, is an error. Returns 0, or
 * PHY_EINVAL with a one-line reason in err. */
int ctl_kv_apply(json_t *patch, const char *arg, char *err, size_t errcap);

/* Applies one `tags set` argument "key=value" to tags: the value is always a string;
 * the key is not split. 0 or PHY_EINVAL with a reason in err. */
int ctl_tag_apply(json_t *tags, const char *arg, char *err, size_t errcap);

/* Prints one device as aligned "key  value" lines (tags as k=v pairs, last_status as
 * compact JSON), then, when the object has a "twin", the desired and reported
 * sections as indented JSON with their versions. Control bytes become '?'. */
void ctl_print_device(const json_t *dev, FILE *f);

/* One console event as "<time> <type> <device_id> <summary>": time is the event's
 * "time" (or "at") member, else now_text; the summary is every other member but
 * type, time, at, device_id and tenant as compact JSON ("" when none). data is the
 * event's JSON text; a data that is not a JSON object is shown cleaned as the
 * summary with device "-". Control bytes become '?'. */
void ctl_format_event(const char *type, const char *data, const char *now_text, char *out,
                      size_t cap);

#endif
