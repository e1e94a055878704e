/* phyhub helpers shared by the server and handlers: clock and parameters. */
#include "hub.h"

#include <time.h>

int64_t hub_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
