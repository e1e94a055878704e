/* The agent's status report: /proc text parsers and the status JSON (I/O-free), collection. */
#ifndef PHY_AGENT_SYSINFO_H
#define PHY_AGENT_SYSINFO_H

#include <stddef.h>

#include <jansson.h>

#include "phy/version.h"

#define AGENT_VERSION PHY_VERSION /* reported as agent_version; agent_build: git description */
#define AGENT_SYSINFO_MAX_ADDRS 16
#define AGENT_SYSINFO_ADDR_LEN 46 /* INET6_ADDRSTRLEN */

/* One status sample. Integer fields are -1 and doubles negative when unknown; unknown
 * values are left out of the JSON. */
struct agent_sysinfo {
    double uptime_s;          /* system uptime (/proc/uptime) */
    long long agent_uptime_s; /* since the agent started */
    double load[3];           /* 1, 5, 15 minutes; load[0] < 0 when unknown */
    long long mem_total_kb, mem_available_kb;
    long long disk_total_kb, disk_free_kb; /* file system of the state directory */
    char addrs[AGENT_SYSINFO_MAX_ADDRS][AGENT_SYSINFO_ADDR_LEN];
    size_t naddrs;
};

/* Marks every field unknown. */
void agent_sysinfo_init(struct agent_sysinfo *si);

/* Parses /proc/meminfo text ("MemTotal:  16318412 kB" lines) for MemTotal and
 * MemAvailable (MemFree + Buffers + Cached when MemAvailable is missing). 0 when at
 * least MemTotal was found, else PHY_EINVAL; unknown values stay -1. */
int agent_sysinfo_parse_meminfo(const char *text, size_t n, long long *total_kb,
                                long long *available_kb);

/* Parses /proc/loadavg text ("0.52 0.58 0.59 1/1234 5678") into load[3]. 0 or
 * PHY_EINVAL. */
int agent_sysinfo_parse_loadavg(const char *text, size_t n, double load[3]);

/* Parses /proc/uptime text ("350735.47 234388.90") into *uptime_s. 0 or PHY_EINVAL. */
int agent_sysinfo_parse_uptime(const char *text, size_t n, double *uptime_s);

/* The status object sent in a `status` message: {uptime_s, agent_uptime_s,
 * agent_version, load: [1, 5, 15], mem_total_kb, mem_available_kb, disk_total_kb,
 * disk_free_kb, addresses: [...]}; unknown values are omitted. New reference or NULL. */
json_t *agent_sysinfo_json(const struct agent_sysinfo *si);

/* Fills si from /proc, statvfs(state_dir) and getifaddrs (non-loopback IPv4 and
 * IPv6 addresses, IPv6 link-local excluded, at most AGENT_SYSINFO_MAX_ADDRS).
 * agent_start is the agent's start time (CLOCK_MONOTONIC seconds). Never fails:
 * what cannot be read stays unknown. */
void agent_sysinfo_collect(struct agent_sysinfo *si, const char *state_dir, long long agent_start,
                           long long now);

#endif
