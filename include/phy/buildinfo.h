/* The release and git description every binary prints for --version. */
#ifndef PHY_BUILDINFO_H
#define PHY_BUILDINFO_H

#include <stdio.h>

/* 1 when argv[first..argc) holds "--version" before any "--", else 0. Reads only. */
int phy_buildinfo_wanted(int argc, char **argv, int first);

/* Writes "PROG VERSION (git DESCRIBE)\n" to f, e.g. "phyhub 0.3.0 (git v0.3.0-4-g1a2b3c4)". */
void phy_buildinfo_print(const char *prog, FILE *f);

/* The release (PHY_VERSION) and the git description of the tree the build was
 * configured from (PHY_GIT_DESCRIBE, "unknown" outside git). Static strings. */
const char *phy_buildinfo_version(void);
const char *phy_buildinfo_describe(void);

#endif
