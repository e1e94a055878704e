/* Names of the shared PHY_E* error codes. */
#include "phy/err.h"

/* Short static name of an error code; "EUNKNOWN" for anything unlisted. */
const char *phy_strerror(int err)
{
    switch (err) {
    case PHY_OK:
        return "OK";
    case PHY_EAGAIN:
        return "EAGAIN";
    case PHY_EINVAL:
        return "EINVAL";
    case PHY_ENOMEM:
        return "ENOMEM";
    case PHY_ETOOBIG:
        return "ETOOBIG";
    case PHY_EIO:
        return "EIO";
    case PHY_ENOTFOUND:
        return "ENOTFOUND";
    case PHY_EPROTO:
        return "EPROTO";
    case PHY_ETIMEDOUT:
        return "ETIMEDOUT";
    case PHY_EUNSUPP:
        return "EUNSUPP";
    case PHY_EEXIST:
        return "EEXIST";
    case PHY_ECRYPTO:
        return "ECRYPTO";
    case PHY_EUNAVAIL:
        return "EUNAVAIL";
    default:
        return "EUNKNOWN";
    }
}
