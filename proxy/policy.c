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

int proxy_policy_add_route(struct proxy_policy *p, const char *spec, char *err, size_t errcap)
{
    char host[PHY_CONNECT_MAX_HOST + 1];
    char addr[ADDR_TEXT_MAX];
    char base[PHY_CONNECT_MAX_HOST + ADDR_TEXT_MAX + 16];
    const char *opt = strchr(spec, ',');
    size_t blen = opt != NULL ? (size_t)(opt - spec) : strlen(spec);
    unsigned port = 0;
    int pp = 1;
    union proxy_addr sa;
    struct proxy_route *grown;
    size_t i;

    if (opt != NULL) {
        if (strcmp(opt, ",proxy-protocol=off") == 0)
            pp = 0;
        else if (strcmp(opt, ",proxy-protocol=on") != 0)
            blen = sizeof(base); /* refused below */
    }
    if (blen >= sizeof(base)) {
        snprintf(err, errcap, "--route: expected HOST=ADDR:PORT[,proxy-protocol=on|off], got "
                              "'%.80s'", spec);
        return PHY_EINVAL;
    }
    memcpy(base, spec, blen);
    base[blen] = '\0';
    if (phy_connect_parse_route(base, host, sizeof(host), addr, sizeof(addr), &port) != 0 ||
        proxy_addr_from(addr, port, &sa) != 0) {
        snprintf(err, errcap, "--route: expected HOST=ADDR:PORT with an IP address, got '%.80s'",
                 spec);
        return PHY_EINVAL;
    }
    for (i = 0; i < p->nroutes; i++) {
        if (ascii_ieq(p->routes[i].host, host)) {
            p->routes[i].addr = sa;
            p->routes[i].proxy_protocol = pp;
            return 0;
        }
    }
    grown = realloc(p->routes, (p->nroutes + 1) * sizeof(*grown));
    if (grown == NULL)
        return PHY_ENOMEM;
    p->routes = grown;
    lower_copy(grown[p->nroutes].host, host, sizeof(grown[p->nroutes].host));
    grown[p->nroutes].addr = sa;
    grown[p->nroutes].proxy_protocol = pp;
    p->nroutes++;
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

const struct proxy_route *proxy_policy_route(const struct proxy_policy *p, const char *host)
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

struct proxy_ident *proxy_ident_acquire(struct proxy_policy *p, const char *ident, unsigned limit,
                                        int *err)
{
    size_t b = ident_bucket(ident);
    size_t len = strlen(ident);
    struct proxy_ident *e;

    for (e = p->buckets[b]; e != NULL; e = e->next) {
        if (strcmp(e->ident, ident) == 0)
            break;
    }
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
