/* phyhub helpers shared by the server and handlers: clock, parameters, and the
 * sweep of the seal ratchet. */
#include "hub.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <openssl/crypto.h>

#include "phy/err.h"
#include "phy/log.h"
#include "seal.h"

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t hub_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

static pthread_once_t steady_once = PTHREAD_ONCE_INIT;
static int64_t steady_wall, steady_mono;

static void steady_init(void)
{
    steady_mono = clock_ms(CLOCK_MONOTONIC);
    steady_wall = clock_ms(CLOCK_REALTIME);
}

/* The wall clock as it was at start, carried forward by the monotonic clock: NTP's
 * slewing reaches it (it slews CLOCK_MONOTONIC too), a step of the wall clock does
 * not (hub_clock_check logs one). */
int64_t hub_now_ms(void)
{
    pthread_once(&steady_once, steady_init);
    return steady_wall + (clock_ms(CLOCK_MONOTONIC) - steady_mono);
}

int64_t hub_clock_check(void)
{
    static _Atomic int64_t reported;
    int64_t step = clock_ms(CLOCK_REALTIME) - hub_now_ms();
    int64_t old = atomic_load(&reported);
    if ((step > HUB_CLOCK_STEP_MS || step < -HUB_CLOCK_STEP_MS) &&
        (step - old > HUB_CLOCK_STEP_MS || old - step > HUB_CLOCK_STEP_MS)) {
        atomic_store(&reported, step);
        phy_log(PHY_LOG_WARN, "clock_step",
                "wall_minus_hub_ms=%lld msg=\"the wall clock was stepped; the hub keeps its own "
                "time until it restarts\"",
                (long long)step);
    }
    return step;
}

void hub_prov_params(const struct hub *h, int64_t now_ms, struct store_prov_params *p)
{
    p->now_ms = now_ms;
    p->registration_idle_ms = (int64_t)h->cfg.registration_idle_s * 1000;
    p->code_ttl_ms = (int64_t)h->cfg.code_ttl_s * 1000;
    p->grace_ms = (int64_t)h->cfg.issuance_grace_s * 1000;
    p->remote_max_age_ms = (int64_t)h->cfg.remote_issuance_max_age_s * 1000;
    p->interval_s = (int)h->cfg.poll_interval_s;
    p->max_interval_s = (int)h->cfg.max_poll_interval_s;
    p->max_regs_per_serial = 4;
    p->deliver_check = NULL;
    p->deliver_ctx = NULL;
}

/* ---- the seal ratchet's sweep ---- */

#define RESEAL_PAGE 256

/* Re-seals one page of live bodies (one store transaction); *last gets the page's
 * last serial. */
static int reseal_page(struct hub *h, int64_t now_ms, char last[PHY_SERIAL_MAX + 1], size_t *got,
                       int *foreign)
{
    struct store_sealed *v = NULL;
    size_t n = 0, stale = 0, replaced = 0;
    int rc = h->store_ops->sealed_list(h->store, last, RESEAL_PAGE, &v, &n);
    *got = n;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!seal_is_stale(h->seal, now_ms, v[i].sealed, v[i].sealed_len)) {
            if (seal_is_foreign(h->seal, v[i].sealed, v[i].sealed_len))
                (*foreign)++;
            continue;
        }
        v[i].next = seal_reseal(h->seal, now_ms, v[i].device_id, v[i].sealed, v[i].sealed_len,
                                &v[i].next_len);
        if (!v[i].next) {
            /* It cannot be opened now: moving the ratchet on would lose it for good. */
            phy_log(PHY_LOG_ERROR, "reseal_failed", "device_id=%s reason=\"cannot open it\"",
                    v[i].device_id);
            rc = PHY_ECRYPTO;
        }
        stale++;
    }
    if (rc == 0 && stale)
        rc = h->store_ops->sealed_replace(h->store, v, n, &replaced);
    if (n > 0)
        snprintf(last, PHY_SERIAL_MAX + 1, "%s", v[n - 1].serial);
    store_sealed_free(v, n);
    return rc;
}

int hub_seal_sweep(struct hub *h, int64_t now_ms)
{
    char last[PHY_SERIAL_MAX + 1] = "", err[512];
    size_t got;
    int rc, foreign = 0;
    if (seal_epoch_of(h->seal, now_ms) - SEAL_KEEP_EPOCHS <= seal_base(h->seal))
        return 0; /* nothing to drop yet: no body can be stale for it */
    do
        rc = reseal_page(h, now_ms, last, &got, &foreign);
    while (rc == 0 && got == RESEAL_PAGE);
    if (foreign)
        phy_log(PHY_LOG_ERROR, "seal_foreign",
                "bodies=%d reason=\"sealed by another seal ratchet: every hub node on this store "
                "needs a copy of the same ratchet file\"",
                foreign);
    if (rc < 0) {
        phy_log(PHY_LOG_WARN, "seal_sweep_failed", "reason=\"%s\" action=\"the ratchet waits\"",
                phy_strerror(rc));
        return rc;
    }
    rc = seal_advance(h->seal, now_ms, err, sizeof err);
    if (rc < 0) {
        char q[600];
        phy_log(PHY_LOG_ERROR, "seal_advance_failed", "error=%s",
                phy_log_quote(err, q, sizeof q));
        return rc;
    }
    if (rc > 0)
        phy_log(PHY_LOG_INFO, "seal_advanced", "base_epoch=%lld", (long long)seal_base(h->seal));
    return 0;
}
