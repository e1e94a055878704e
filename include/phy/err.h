/* Error codes shared by every libphy module: 0 is success, negatives are failures. */
#ifndef PHY_ERR_H
#define PHY_ERR_H

enum phy_err {
    PHY_OK = 0,
    PHY_EAGAIN = -1, /* need more bytes: not a failure */
    PHY_EINVAL = -2, /* malformed input */
    PHY_ENOMEM = -3,
    PHY_ETOOBIG = -4, /* input over a limit */
    PHY_EIO = -5,     /* system or library I/O failure */
    PHY_ENOTFOUND = -6,
    PHY_EPROTO = -7, /* protocol violation by the peer */
    PHY_ETIMEDOUT = -8,
    PHY_EUNSUPP = -9, /* valid but unsupported (e.g. chunked request body) */
    PHY_EEXIST = -10,
    PHY_ECRYPTO = -11,
    PHY_EUNAVAIL = -12, /* a service (the store's database) cannot be reached now */
};

/* Short static name of an error code ("EINVAL"); never NULL. */
const char *phy_strerror(int err);

#endif
