/* phyproxy policy tables: route table, allow-list and per-identifier tunnel counts. */
#include "policy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "phy/err.h"

#define ADDR_TEXT_MAX 64

static void lower_copy(char *dst, const char *src, size_t cap)
{
    size_t i = 0;
    for (; src[i] != '\0' && i + 1 < cap; i++) {
        char c = src[i];
        dst[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    dst[i] = '\0';
}

static int ascii_ieq(const char *a, const char *b)
{
    for (; *a != '\0' && *b != '\0'; a++, b++) {
        char x = (*a >= 'A' && *a <= 'Z') ? (char)(*a - 'A' + 'a') : *a;
        char y = (*b >= 'A' && *b <= 'Z') ? (char)(*b - 'A' + 'a') : *b;
        if (x != y)
            return 0;
    }
    return *a == *b;
}

int proxy_addr_from(const char *addr, unsigned port, union proxy_addr *out)
{
    char buf[ADDR_TEXT_MAX];
    size_t len = strlen(addr);

    if (port == 0 || port > 65535)
        return PHY_EINVAL;
    if (len >= 2 && addr[0] == '[' && addr[len - 1] == ']') {
        addr++;
        len -= 2;
    }
    if (len == 0 || len >= sizeof(buf))
        return PHY_EINVAL;
    memcpy(buf, addr, len);
    buf[len] = '\0';
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, buf, &out->in4.sin_addr) == 1) {
        out->in4.sin_family = AF_INET;
        out->in4.sin_port = htons((uint16_t)port);
        return 0;
    }
    if (inet_pton(AF_INET6, buf, &out->in6.sin6_addr) == 1) {
        out->in6.sin6_family = AF_INET6;
        out->in6.sin6_port = htons((uint16_t)port);
        return 0;
    }
    return PHY_EINVAL;
}

int proxy_addr_parse_hostport(const char *spec, union proxy_addr *out)
{
    char addr[ADDR_TEXT_MAX];
    const char *colon = strrchr(spec, ':');
    size_t alen;
    char *end = NULL;
    long port;

    if (colon == NULL || colon == spec)
        return PHY_EINVAL;
    alen = (size_t)(colon - spec);
    if (alen >= sizeof(addr))
        return PHY_EINVAL;
    /* An unbracketed IPv6 literal would have more colons before the port. */
    if (spec[0] != '[' && memchr(spec, ':', alen) != NULL)
        return PHY_EINVAL;
    memcpy(addr, spec, alen);
    addr[alen] = '\0';
    if (colon[1] < '0' || colon[1] > '9')
        return PHY_EINVAL;
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || port < 1 || port > 65535)
        return PHY_EINVAL;
    return proxy_addr_from(addr, (unsigned)port, out);
}

char *proxy_addr_format(const union proxy_addr *a, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];

    if (cap == 0)
        return out;
    if (a->sa.sa_family == AF_INET &&
        inet_ntop(AF_INET, &a->in4.sin_addr, ip, sizeof(ip)) != NULL) {
        snprintf(out, cap, "%s:%u", ip, (unsigned)ntohs(a->in4.sin_port));
    } else if (a->sa.sa_family == AF_INET6 &&
               inet_ntop(AF_INET6, &a->in6.sin6_addr, ip, sizeof(ip)) != NULL) {
        snprintf(out, cap, "[%s]:%u", ip, (unsigned)ntohs(a->in6.sin6_port));
    } else {
        snprintf(out, cap, "-");
    }
    return out;
}

#define ROUTE_SYNTAX "HOST=ADDR:PORT[,ADDR:PORT…][,proxy-protocol=on|off]"
#define PP_OPTION "proxy-protocol="

static int same_addr(const union proxy_addr *a, const union proxy_addr *b)
{
    if (a->sa.sa_family != b->sa.sa_family)
        return 0;
    if (a->sa.sa_family == AF_INET)
        return a->in4.sin_port == b->in4.sin_port &&
               a->in4.sin_addr.s_addr == b->in4.sin_addr.s_addr;
    return a->in6.sin6_port == b->in6.sin6_port &&
           memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, sizeof(a->in6.sin6_addr)) == 0;
}

/* 0 when host is a valid route host (name or pattern): the route parser's own
 * check, given the host with a placeholder upstream. */
static int route_host_valid(const char *host)
{
    char one[PHY_CONNECT_MAX_HOST + 16];
    char h[PHY_CONNECT_MAX_HOST + 1], addr[ADDR_TEXT_MAX];
    unsigned port = 0;

    if (snprintf(one, sizeof(one), "%s=127.0.0.1:1", host) >= (int)sizeof(one))
        return PHY_EINVAL;
    return phy_connect_parse_route(one, h, sizeof(h), addr, sizeof(addr), &port);
}

/* One item of a route's list after "HOST=": an upstream ADDR:PORT into r, or the
 * proxy-protocol option. 0 or PHY_EINVAL with the message in err. */
static int route_item(struct proxy_route *r, const char *item, size_t len, int *pp_seen,
                      const char *spec, char *err, size_t errcap)
{
    char text[ADDR_TEXT_MAX + 8];
    size_t i;

    if (len > strlen(PP_OPTION) && strncmp(item, PP_OPTION, strlen(PP_OPTION)) == 0) {
        const char *v = item + strlen(PP_OPTION);
        size_t vlen = len - strlen(PP_OPTION);
        if (*pp_seen) {
            snprintf(err, errcap, "--route: proxy-protocol given twice in '%.80s'", spec);
            return PHY_EINVAL;
        }
        *pp_seen = 1;
        if (vlen == 2 && memcmp(v, "on", 2) == 0)
            r->proxy_protocol = 1;
        else if (vlen == 3 && memcmp(v, "off", 3) == 0)
            r->proxy_protocol = 0;
        else
            goto out_syntax;
        return 0;
    }
    if (len == 0)
        goto out_syntax;
    if (r->nup == PROXY_ROUTE_MAX_UPSTREAMS) {
        snprintf(err, errcap, "--route: at most %d upstreams per route, in '%.80s'",
                 PROXY_ROUTE_MAX_UPSTREAMS, spec);
        return PHY_EINVAL;
    }
    if (len >= sizeof(text))
        goto out_bad_upstream;
    memcpy(text, item, len);
    text[len] = '\0';
    if (proxy_addr_parse_hostport(text, &r->up[r->nup].addr) != 0)
        goto out_bad_upstream;
    for (i = 0; i < r->nup; i++) {
        if (same_addr(&r->up[i].addr, &r->up[r->nup].addr)) {
            snprintf(err, errcap, "--route: upstream '%.*s' given twice",
                     (int)(len < 64 ? len : 64), item);
            return PHY_EINVAL;
        }
    }
    r->nup++;
    return 0;

out_bad_upstream:
    snprintf(err, errcap, "--route: upstream '%.*s' is not ADDR:PORT with an IP address",
             (int)(len < 64 ? len : 64), item);
    return PHY_EINVAL;
out_syntax:
    snprintf(err, errcap, "--route: expected " ROUTE_SYNTAX " with IP addresses, got '%.80s'",
             spec);
    return PHY_EINVAL;
}

int proxy_policy_add_route(struct proxy_policy *p, const char *spec, char *err, size_t errcap)
{
    struct proxy_route r;
    const char *eq = strchr(spec, '=');
    const char *item;
    int pp_seen = 0, rc;
    struct proxy_route *grown;
    size_t i;

    memset(&r, 0, sizeof(r));
    r.proxy_protocol = 1;
    if (eq == NULL || eq == spec || (size_t)(eq - spec) >= sizeof(r.host)) {
        snprintf(err, errcap, "--route: expected " ROUTE_SYNTAX " with IP addresses, got '%.80s'",
                 spec);
        return PHY_EINVAL;
    }
    memcpy(r.host, spec, (size_t)(eq - spec));
    r.host[eq - spec] = '\0';
    if (route_host_valid(r.host) != 0) {
        snprintf(err, errcap, "--route: '%s' is not a host name or '*' pattern", r.host);
        return PHY_EINVAL;
    }
    for (item = eq + 1;;) {
        const char *comma = strchr(item, ',');
        size_t len = comma != NULL ? (size_t)(comma - item) : strlen(item);
        rc = route_item(&r, item, len, &pp_seen, spec, err, errcap);
        if (rc != 0)
            return rc;
        if (comma == NULL)
            break;
        item = comma + 1;
    }
    if (r.nup == 0) {
        snprintf(err, errcap, "--route: no upstream ADDR:PORT in '%.80s'", spec);
        return PHY_EINVAL;
    }
    lower_copy(r.host, r.host, sizeof(r.host));
    for (i = 0; i < p->nroutes; i++) {
        if (ascii_ieq(p->routes[i].host, r.host)) {
            p->routes[i] = r;
            return 0;
        }
    }
    grown = realloc(p->routes, (p->nroutes + 1) * sizeof(*grown));
    if (grown == NULL)
        return PHY_ENOMEM;
    p->routes = grown;
    grown[p->nroutes++] = r;
    return 0;
}

int proxy_policy_add_allow(struct proxy_policy *p, const char *spec, char *err, size_t errcap)
{
    char pattern[PHY_CONNECT_MAX_HOST + 1];
    unsigned port = 0;
    struct proxy_allow *grown;

    if (phy_connect_parse_allow(spec, pattern, sizeof(pattern), &port) != 0) {
        snprintf(err, errcap, "--allow: expected HOST_PATTERN:PORT, got '%.80s'", spec);
        return PHY_EINVAL;
    }
    grown = realloc(p->allows, (p->nallows + 1) * sizeof(*grown));
    if (grown == NULL)
        return PHY_ENOMEM;
    p->allows = grown;
    lower_copy(grown[p->nallows].pattern, pattern, sizeof(grown[p->nallows].pattern));
    grown[p->nallows].port = port;
    p->nallows++;
    return 0;
}

struct proxy_route *proxy_policy_route(struct proxy_policy *p, const char *host)
{
    size_t i;

    for (i = 0; i < p->nroutes; i++) {
        if (strchr(p->routes[i].host, '*') == NULL && ascii_ieq(p->routes[i].host, host))
            return &p->routes[i];
    }
    for (i = 0; i < p->nroutes; i++) {
        if (strchr(p->routes[i].host, '*') != NULL && phy_host_match(p->routes[i].host, host))
            return &p->routes[i];
    }
    return NULL;
}

int proxy_route_pick(struct proxy_route *r, unsigned tried)
{
    int best = -1;
    int pass;
    size_t k;

    /* First pass: upstreams that are up; second: the rest, tried anyway. */
    for (pass = 0; pass < 2 && best < 0; pass++) {
        for (k = 0; k < r->nup; k++) {
            size_t i = (r->next + k) % r->nup;
            if ((tried & (1u << i)) != 0 || (pass == 0 && r->up[i].failures > 0))
                continue;
            if (best < 0 || r->up[i].live < r->up[best].live)
                best = (int)i;
        }
    }
    if (best >= 0) {
        r->up[best].live++;
        r->next = ((size_t)best + 1) % r->nup;
    }
    return best;
}

void proxy_upstream_release(struct proxy_route *r, size_t index)
{
    if (index < r->nup && r->up[index].live > 0)
        r->up[index].live--;
}

int proxy_upstream_failed(const struct proxy_policy *p, struct proxy_route *r, size_t index,
                          uint64_t now_ms)
{
    struct proxy_upstream *u;
    uint64_t base = p->backoff_ms != 0 ? p->backoff_ms : PROXY_BACKOFF_DEFAULT_MS;
    uint64_t cap = p->backoff_max_ms != 0 ? p->backoff_max_ms : PROXY_BACKOFF_MAX_DEFAULT_MS;
    uint64_t wait = base;
    unsigned k;

    if (r->nup < 2 || index >= r->nup)
        return 0;
    u = &r->up[index];
    if (cap < base)
        cap = base;
    u->failures++;
    for (k = 1; k < u->failures && wait < cap; k++)
        wait *= 2;
    u->retry_ms = now_ms + (wait < cap ? wait : cap);
    if (u->failures > 1)
        return 0;
    u->down_since_ms = now_ms;
    return 1;
}

int proxy_upstream_ok(struct proxy_route *r, size_t index)
{
    struct proxy_upstream *u;

    if (index >= r->nup || r->up[index].failures == 0)
        return 0;
    u = &r->up[index];
    u->failures = 0;
    u->retry_ms = 0;
    return 1;
}

int proxy_policy_routes_up(const struct proxy_policy *p)
{
    for (size_t i = 0; i < p->nroutes; i++) {
        const struct proxy_route *r = &p->routes[i];
        size_t up = 0;
        for (size_t j = 0; j < r->nup; j++)
            up += r->up[j].failures == 0;
        if (up == 0)
            return 0;
    }
    return 1;
}

int proxy_policy_probe_due(struct proxy_policy *p, uint64_t now_ms, struct proxy_route **route,
                           size_t *index, uint64_t *next_ms)
{
    size_t i, j;

    *next_ms = UINT64_MAX;
    for (i = 0; i < p->nroutes; i++) {
        struct proxy_route *r = &p->routes[i];
        for (j = 0; j < r->nup; j++) {
            const struct proxy_upstream *u = &r->up[j];
            if (u->failures == 0 || u->probing)
                continue;
            if (u->retry_ms <= now_ms) {
                *route = r;
                *index = j;
                return 1;
            }
            if (u->retry_ms < *next_ms)
                *next_ms = u->retry_ms;
        }
    }
    return 0;
}

int proxy_policy_allowed(const struct proxy_policy *p, const char *host, unsigned port)
{
    size_t i;

    for (i = 0; i < p->nallows; i++) {
        if ((p->allows[i].port == 0 || p->allows[i].port == port) &&
            phy_host_match(p->allows[i].pattern, host))
            return 1;
    }
    return 0;
}

/* FNV-1a: identifiers are short and not secret; the limit bounds a bucket's cost. */
static size_t ident_bucket(const char *ident)
{
    uint32_t h = 2166136261u;

    for (; *ident != '\0'; ident++) {
        h ^= (unsigned char)*ident;
        h *= 16777619u;
    }
    return h % PROXY_IDENT_BUCKETS;
}

struct proxy_ident *proxy_ident_find(struct proxy_policy *p, const char *ident)
{
    struct proxy_ident *e;
    for (e = p->buckets[ident_bucket(ident)]; e != NULL; e = e->next)
        if (strcmp(e->ident, ident) == 0)
            break;
    return e;
}

struct proxy_ident *proxy_ident_acquire(struct proxy_policy *p, const char *ident, unsigned limit,
                                        int *err)
{
    size_t b = ident_bucket(ident);
    size_t len = strlen(ident);
    struct proxy_ident *e = proxy_ident_find(p, ident);

    if (e != NULL) {
        if (e->count >= limit) {
            *err = PHY_ETOOBIG;
            return NULL;
        }
        e->count++;
        return e;
    }
    if (limit == 0) {
        *err = PHY_ETOOBIG;
        return NULL;
    }
    if (len >= sizeof(e->ident)) {
        *err = PHY_ETOOBIG;
        return NULL;
    }
    e = calloc(1, sizeof(*e));
    if (e == NULL) {
        *err = PHY_ENOMEM;
        return NULL;
    }
    memcpy(e->ident, ident, len + 1);
    e->count = 1;
    e->next = p->buckets[b];
    p->buckets[b] = e;
    p->nidents++;
    return e;
}

void proxy_ident_release(struct proxy_policy *p, struct proxy_ident *e)
{
    struct proxy_ident **pp;

    if (e == NULL)
        return;
    if (--e->count > 0)
        return;
    for (pp = &p->buckets[ident_bucket(e->ident)]; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            free(e);
            p->nidents--;
            return;
        }
    }
}

void proxy_policy_free(struct proxy_policy *p)
{
    size_t i;

    if (p == NULL)
        return;
    for (i = 0; i < PROXY_IDENT_BUCKETS; i++) {
        struct proxy_ident *e = p->buckets[i];
        while (e != NULL) {
            struct proxy_ident *next = e->next;
            free(e);
            e = next;
        }
        p->buckets[i] = NULL;
    }
    free(p->routes);
    free(p->allows);
    p->routes = NULL;
    p->allows = NULL;
    p->nroutes = p->nallows = p->nidents = 0;
}
