/* --version for every binary, from the generated phy/version.h. */
#include "phy/buildinfo.h"

#include <string.h>

#include "phy/version.h"

int phy_buildinfo_wanted(int argc, char **argv, int first)
{
    for (int i = first; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return 0;
        if (strcmp(argv[i], "--version") == 0)
            return 1;
    }
    return 0;
}

void phy_buildinfo_print(const char *prog, FILE *f)
{
    fprintf(f, "%s %s (git %s)\n", prog, PHY_VERSION, PHY_GIT_DESCRIBE);
}

const char *phy_buildinfo_version(void)
{
    return PHY_VERSION;
}

const char *phy_buildinfo_describe(void)
{
    return PHY_GIT_DESCRIBE;
}
