/* JSON text out of jansson values, as json_dumps writes it, except that reals are
 * written in the shortest form that reads back to the same double (0.05, not
 * 0.050000000000000003), as JavaScript and Python do. */
#ifndef PHY_JSON_H
#define PHY_JSON_H

#include <stddef.h>

#include <jansson.h>

/* json_dumps(v, flags) with shortest reals; flags JSON_COMPACT, JSON_INDENT(n),
 * JSON_SORT_KEYS and JSON_ENCODE_ANY are honoured as jansson does (others are not
 * used here). malloc'd text, NULL on failure or for a non-container without
 * JSON_ENCODE_ANY. */
char *phy_json_dumps(const json_t *v, size_t flags);

/* The shortest "%.*g" text of d that strtod reads back exactly, with jansson's
 * finishing (".0" for an integral value, no '+' or leading zeros in the exponent),
 * into out[cap] (cap >= 32). Returns its length, or -1 for NaN or infinity. */
int phy_json_real(double d, char *out, size_t cap);

#endif
