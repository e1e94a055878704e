/* The agent's status report: /proc text parsers and the status JSON (I/O-free), collection. */
#include "sysinfo.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "phy/err.h"

#define PROC_READ_MAX 16384
#define KB_MAX (1LL << 50) /* sanity bound on any kB value */

void agent_sysinfo_init(struct agent_sysinfo *si)
{
    memset(si, 0, sizeof *si);
    si->uptime_s = -1;
    si->agent_uptime_s = -1;
    si->load[0] = si->load[1] = si->load[2] = -1;
    si->mem_total_kb = si->mem_available_kb = -1;
    si->disk_total_kb = si->disk_free_kb = -1;
}

/* Parses "   123 kB" (leading blanks, digits, optional unit) from p[0..n). */
static int parse_kb(const char *p, size_t n, long long *out)
{
    size_t i = 0;
    long long v = 0;
    int digits = 0;

    while (i < n && (p[i] == ' ' || p[i] == '\t'))
        i++;
    while (i < n && p[i] >= '0' && p[i] <= '9') {
        v = v * 10 + (p[i] - '0');
        if (v > KB_MAX)
            return PHY_EINVAL;
        i++;
        digits++;
    }
    if (digits == 0)
        return PHY_EINVAL;
    *out = v;
    return 0;
}

/* MemTotal and MemAvailable from /proc/meminfo text. */
int agent_sysinfo_parse_meminfo(const char *text, size_t n, long long *total_kb,
                                long long *available_kb)
{
    long long total = -1, avail = -1, mfree = -1, buffers = -1, cached = -1;
    size_t pos = 0;

    while (pos < n) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', n - pos);
        size_t len = nl != NULL ? (size_t)(nl - line) : n - pos;
        const char *colon = memchr(line, ':', len);

        pos += len + (nl != NULL ? 1 : 0);
        if (colon == NULL)
            continue;
        size_t klen = (size_t)(colon - line);
        const char *v = colon + 1;
        size_t vlen = len - klen - 1;
        long long *dst = NULL;

        if (klen == 8 && memcmp(line, "MemTotal", 8) == 0)
            dst = &total;
        else if (klen == 12 && memcmp(line, "MemAvailable", 12) == 0)
            dst = &avail;
        else if (klen == 7 && memcmp(line, "MemFree", 7) == 0)
            dst = &mfree;
        else if (klen == 7 && memcmp(line, "Buffers", 7) == 0)
            dst = &buffers;
        else if (klen == 6 && memcmp(line, "Cached", 6) == 0)
            dst = &cached;
        if (dst != NULL && parse_kb(v, vlen, dst) != 0)
            *dst = -1;
    }
    if (avail < 0 && mfree >= 0 && buffers >= 0 && cached >= 0)
        avail = mfree + buffers + cached;
    *total_kb = total;
    *available_kb = avail;
    return total >= 0 ? 0 : PHY_EINVAL;
}

/* Copies text[0..n) into a NUL-terminated buffer of cap bytes. 0 or PHY_ETOOBIG. */
static int copy_small(const char *text, size_t n, char *buf, size_t cap)
{
    if (n >= cap)
        return PHY_ETOOBIG;
    memcpy(buf, text, n);
    buf[n] = '\0';
    return 0;
}

/* Reads count non-negative finite doubles separated by blanks from s. */
static int parse_doubles(const char *s, double *out, int count)
{
    const char *p = s;

    for (int i = 0; i < count; i++) {
        char *end;
        double d;

        while (*p == ' ' || *p == '\t')
            p++;
        if (*p < '0' || *p > '9')
            return PHY_EINVAL;
        errno = 0;
        d = strtod(p, &end);
        if (end == p || errno != 0 || !(d >= 0 && d < 1e15))
            return PHY_EINVAL;
        if (*end != '\0' && *end != ' ' && *end != '\t' && *end != '\n')
            return PHY_EINVAL;
        out[i] = d;
        p = end;
    }
    return 0;
}

int agent_sysinfo_parse_loadavg(const char *text, size_t n, double load[3])
{
    char buf[256];
    double v[3];

    if (copy_small(text, n, buf, sizeof buf) != 0 || parse_doubles(buf, v, 3) != 0)
        return PHY_EINVAL;
    memcpy(load, v, sizeof v);
    return 0;
}

int agent_sysinfo_parse_uptime(const char *text, size_t n, double *uptime_s)
{
    char buf[256];
    double v;

    if (copy_small(text, n, buf, sizeof buf) != 0 || parse_doubles(buf, &v, 1) != 0)
        return PHY_EINVAL;
    *uptime_s = v;
    return 0;
}

/* Sets key to an integer when known (>= 0). 0 or PHY_ENOMEM. */
static int set_int(json_t *o, const char *key, long long v)
{
    if (v < 0)
        return 0;
    return json_object_set_new(o, key, json_integer(v)) == 0 ? 0 : PHY_ENOMEM;
}

/* Rounds a non-negative value to 2 decimals so that reports stay short (no libm). */
static double round2(double d)
{
    return (double)(long long)(d * 100.0 + 0.5) / 100.0;
}

json_t *agent_sysinfo_json(const struct agent_sysinfo *si)
{
    json_t *o = json_object();
    json_t *addrs = json_array();
    int rc = 0;

    if (o == NULL || addrs == NULL)
        goto fail;
    if (si->uptime_s >= 0)
        rc |= json_object_set_new(o, "uptime_s", json_integer((json_int_t)si->uptime_s));
    rc |= set_int(o, "agent_uptime_s", si->agent_uptime_s);
    rc |= json_object_set_new(o, "agent_version", json_string(AGENT_VERSION));
    rc |= json_object_set_new(o, "agent_build", json_string(PHY_GIT_DESCRIBE));
    if (si->load[0] >= 0) {
        json_t *load =
            json_pack("[fff]", round2(si->load[0]), round2(si->load[1]), round2(si->load[2]));
        rc |= json_object_set_new(o, "load", load);
    }
    rc |= set_int(o, "mem_total_kb", si->mem_total_kb);
    rc |= set_int(o, "mem_available_kb", si->mem_available_kb);
    rc |= set_int(o, "disk_total_kb", si->disk_total_kb);
    rc |= set_int(o, "disk_free_kb", si->disk_free_kb);
    for (size_t i = 0; i < si->naddrs && i < AGENT_SYSINFO_MAX_ADDRS; i++)
        rc |= json_array_append_new(addrs, json_string(si->addrs[i]));
    rc |= json_object_set(o, "addresses", addrs);
    if (rc != 0)
        goto fail;
    json_decref(addrs);
    return o;
fail:
    json_decref(addrs);
    json_decref(o);
    return NULL;
}

/* Reads a small /proc file into buf (NUL-terminated). Returns its length or -1. */
static long read_proc(const char *path, char *buf, size_t cap)
{
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -1;
    while (got + 1 < cap) {
        ssize_t r = read(fd, buf + got, cap - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    return (long)got;
}

static void collect_addrs(struct agent_sysinfo *si)
{
    struct ifaddrs *list = NULL;

    if (getifaddrs(&list) != 0)
        return;
    for (struct ifaddrs *i = list; i != NULL && si->naddrs < AGENT_SYSINFO_MAX_ADDRS;
         i = i->ifa_next) {
        const void *a;
        char *out = si->addrs[si->naddrs];

        if (i->ifa_addr == NULL || (i->ifa_flags & IFF_LOOPBACK) != 0)
            continue;
        if (i->ifa_addr->sa_family == AF_INET) {
            const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)i->ifa_addr;
            a = &s4->sin_addr;
        } else if (i->ifa_addr->sa_family == AF_INET6) {
            const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)i->ifa_addr;
            if (IN6_IS_ADDR_LINKLOCAL(&s6->sin6_addr) || IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr))
                continue;
            a = &s6->sin6_addr;
        } else {
            continue;
        }
        if (inet_ntop(i->ifa_addr->sa_family, a, out, AGENT_SYSINFO_ADDR_LEN) != NULL)
            si->naddrs++;
    }
    freeifaddrs(list);
}

void agent_sysinfo_collect(struct agent_sysinfo *si, const char *state_dir, long long agent_start,
                           long long now)
{
    char *buf = malloc(PROC_READ_MAX);
    struct statvfs vfs;
    long n;

    agent_sysinfo_init(si);
    si->agent_uptime_s = now >= agent_start ? now - agent_start : 0;
    if (buf != NULL) {
        n = read_proc("/proc/uptime", buf, PROC_READ_MAX);
        if (n > 0)
            agent_sysinfo_parse_uptime(buf, (size_t)n, &si->uptime_s);
        n = read_proc("/proc/loadavg", buf, PROC_READ_MAX);
        if (n > 0)
            agent_sysinfo_parse_loadavg(buf, (size_t)n, si->load);
        n = read_proc("/proc/meminfo", buf, PROC_READ_MAX);
        if (n > 0)
            agent_sysinfo_parse_meminfo(buf, (size_t)n, &si->mem_total_kb, &si->mem_available_kb);
        free(buf);
    }
    if (statvfs(state_dir, &vfs) == 0 && vfs.f_frsize > 0) {
        unsigned long long unit = vfs.f_frsize;
        si->disk_total_kb = (long long)((unsigned long long)vfs.f_blocks * unit / 1024);
        si->disk_free_kb = (long long)((unsigned long long)vfs.f_bavail * unit / 1024);
    }
    collect_addrs(si);
}
