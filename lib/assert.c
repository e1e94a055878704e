/* PHY_ASSERT's failure path: one log line naming the broken invariant, then abort. */
#include "phy/assert.h"

#include <stdlib.h>

#include "phy/log.h"

void phy_assert_fail(const char *expr, const char *file, int line, const char *func)
{
    char q[512];

    phy_log(PHY_LOG_ERROR, "assert_failed", "where=%s:%d func=%s expr=%s",
            file != NULL ? file : "?", line, func != NULL ? func : "?",
            phy_log_quote(expr, q, sizeof q));
    abort();
}
