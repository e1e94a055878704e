/* phyload: simulates many provisioned devices over WSS against phyhub from one process
 * (epoll, non-blocking OpenSSL), directly or through an HTTP CONNECT proxy, and measures
 * the connect rate, the hub's memory per idle session and the latency of one fleet-wide
 * desired push to the last device. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "../agent/backoff.h"
#include "phy/base64.h"
#include "phy/client.h"
#include "phy/err.h"
#include "phy/http.h"
#include "phy/protocol.h"
#include "phy/wsframe.h"

#define MAX_DEVICES 1000000
#define MAX_SOURCES 256
#define HEAD_MAX 4096             /* upgrade response head */
#define WS_MAX_PAYLOAD (1u << 20) /* largest hub message accepted */
#define READ_CHUNK 16384
#define EPOLL_BATCH 512
#define PUSH_TAG UINT32_MAX /* epoll data of the push thread's eventfd */
#define CRED_ID_MAX 72 /* a device ID, or sn_ and a serial (--polls) */
#define CRED_SECRET_MAX 128
#define PROXY_TOKEN_MAX 64 /* "kid." + 43 base64url characters, with room */
#define MAX_PIDS 16        /* --hub-pid PID,PID,… */
#define MAX_PROXIES 8      /* --proxy HOST:PORT,HOST:PORT,… */

enum mode { MODE_WS, MODE_TLS_ONLY, MODE_TCP_ONLY, MODE_POLL };

enum dev_state {
    DS_NEW,
    DS_CONNECTING,    /* TCP connect in progress */
    DS_PROXY_WRITE,   /* writing the CONNECT request (--proxy) */
    DS_PROXY_READ,    /* reading the proxy's answer head */
    DS_TLS,           /* TLS handshake */
    DS_UPGRADE_WRITE, /* writing the upgrade request */
    DS_UPGRADE_READ,  /* reading the 101 */
    DS_OPEN,          /* idle session (or idle TLS/TCP connection in those modes) */
    DS_WAIT,          /* --storm: lost, waiting for its reconnect time */
    DS_DONE,          /* failed or closed */
};

enum fail_kind { F_CONNECT, F_PROXY, F_TLS, F_HTTP, F_TIMEOUT, F_CLOSED, F_PROTO, F_COUNT };
static const char *const fail_names[F_COUNT] = {"connect", "proxy",  "tls",     "http",
                                                "timeout", "closed", "protocol"};

struct cred {
    char id[CRED_ID_MAX];
    char secret[CRED_SECRET_MAX];
    char proxy_token[PROXY_TOKEN_MAX]; /* "" when the credentials carry none */
};

/* One simulated device. Buffers exist only while bytes are pending. */
struct dev {
    SSL *ssl;
    uint8_t *rbuf; /* partial response head / partial frames */
    uint8_t *wbuf; /* bytes SSL_write (or write, before TLS) has not taken yet */
    uint8_t *msg;  /* fragmented text message being assembled */
    uint32_t rlen, rcap, wlen, woff, msg_len;
    uint32_t events; /* current epoll interest, 0 = not registered */
    int fd;
    uint8_t state;
    uint8_t read_wants_write, write_wants_read, got_push, in_msg;
    double t_start;  /* ms: connect started */
    double retry_at; /* DS_WAIT: when to connect again (ms) */
    uint32_t prev_backoff_ms;
    char accept[32]; /* expected Sec-WebSocket-Accept */
    SSL_SESSION *sess; /* --resume: the last ticket's session (a copy) */
};

static int on_new_session(SSL *ssl, SSL_SESSION *sess);

struct opts {
    const char *hub, *sni, *ca, *creds, *push_url, *token, *tag, *proxy;
    long devices, concurrency;
    long hub_pids[MAX_PIDS]; /* summed: the nodes of one region */
    size_t nhub_pids;
    long proxy_pids[MAX_PIDS]; /* reported apart from the hub, summed */
    size_t nproxy_pids;
    long db_pid; /* reported apart; counts its children too */
    double idle_s, push_timeout_s, connect_timeout_s, hold_s, storm_s;
    int json, twin_get, resume;
    enum mode mode;
    struct sockaddr_in sources[MAX_SOURCES];
    size_t nsources;
};

struct push_job {
    struct phy_client_opts co;
    char host[256];
    char path[512];
    char headers[512];
    char body[256];
    int efd;
    int rc;
    int status;
    char resp[256];
    char err[256];
    double t_done;
};

struct proc_sample {
    long rss_kib, anon_kib;
    double cpu_s;
    long slab_kib;
    double proxy_cpu_s, db_cpu_s; /* -1 without --proxy-pid / --db-pid */
    long proxy_rss_kib;
};

struct load {
    struct opts o;
    struct cred *creds;
    struct dev *devs;
    size_t ndevs;
    SSL_CTX *ctx;
    int ep;
    /* Where the TCP connects go: the hub, or the proxies (device i uses i mod n). */
    struct sockaddr_storage dst[MAX_PROXIES];
    socklen_t dstlen[MAX_PROXIES];
    size_t ndst;
    char host_header[300];
    char proxy_target[300]; /* CONNECT target, SNI:443 */
    int sni_is_ip;
    size_t next;     /* next device to start */
    size_t inflight; /* connects/handshakes in progress */
    size_t open;     /* devices in DS_OPEN */
    size_t settled;  /* open or failed during the connect phase */
    size_t src_rr;
    unsigned long fails[F_COUNT];
    char first_err[F_COUNT][160];
    unsigned long closed_by_hub, lost, twins, errors_rx, pings, other_patches;
    int last_close_code;
    double *hs_ms; /* handshake durations of opened devices */
    size_t nhs;
    /* push */
    int push_active;
    double push_t0;
    char nonce[40];
    size_t push_expected, push_received;
    double *push_ms;
    int push_done;
    int push_efd; /* eventfd the push thread signals when its PATCH is answered */
    double push_hub_cpu_s, push_client_cpu_s; /* CPU time spent during the push phase */
    double push_proxy_cpu_s, push_db_cpu_s;
    /* --storm */
    int storming;
    double storm_first_loss, storm_last_back;
    size_t storm_lost, storm_back;
    unsigned long storm_attempts, storm_failed;
    unsigned long resumed, full; /* completed handshakes, resumed or not */
    unsigned long polls, polls_other; /* --polls: answers read; those not 202/429 */
    double storm_cpu_s;          /* this process's CPU time during the storm */
};

/* ---------- small helpers ---------- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double cpu_self_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_secs(const char *s, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0) || v > max)
        return -1;
    *out = v;
    return 0;
}

static long read_kib_field(const char *path, const char *field)
{
    char line[256];
    long v = -1;
    size_t fl = strlen(field);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, field, fl) == 0) {
            char *end;
            v = strtol(line + fl, &end, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* From /proc/PID/stat: the parent's PID, CPU time (user + system, all threads) and the
 * CPU time of its children that it has waited for. -1 when the process is gone. */
static int proc_stat(long pid, long *ppid, double *cpu_s, double *child_cpu_s)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    /* After "comm)": state is field 3, ppid 4; utime, stime, cutime, cstime 14-17. */
    unsigned long long v[18] = {0};
    int field = 2;
    for (char *q = p + 1; *q && field < 17; q++) {
        if (*q == ' ') {
            field++;
            if (field >= 4)
                v[field] = strtoull(q + 1, NULL, 10);
        }
    }
    double tck = (double)sysconf(_SC_CLK_TCK);
    *ppid = (long)v[4];
    *cpu_s = (double)(v[14] + v[15]) / tck;
    *child_cpu_s = (double)(v[16] + v[17]) / tck;
    return 0;
}

/* CPU time of a process tree one level deep (PostgreSQL's postmaster and its backends):
 * the parent, the children it has reaped, and the children alive now. So a backend
 * that ends between two samples is still counted once. */
static double tree_cpu_s(long pid)
{
    long ppid;
    double cpu, reaped, total;
    if (proc_stat(pid, &ppid, &cpu, &reaped) < 0)
        return -1;
    total = cpu + reaped;
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long child;
        if (parse_long(e->d_name, 1, 1L << 30, &child) < 0)
            continue;
        double c, cr;
        if (proc_stat(child, &ppid, &c, &cr) == 0 && ppid == pid)
            total += c;
    }
    closedir(d);
    return total;
}

/* RSS, anonymous RSS and CPU time (user + system, all threads) of the hub processes
 * (summed), and the CPU time of the proxy and of the database server when given. */
static void proc_sample(const struct opts *o, struct proc_sample *s)
{
    char path[64];
    memset(s, 0, sizeof(*s));
    s->rss_kib = s->anon_kib = s->proxy_rss_kib = -1;
    s->cpu_s = s->proxy_cpu_s = s->db_cpu_s = -1;
    s->slab_kib = read_kib_field("/proc/meminfo", "Slab:");
    for (size_t i = 0; i < o->nhub_pids; i++) {
        long ppid, rss, anon;
        double cpu, reaped;
        snprintf(path, sizeof(path), "/proc/%ld/status", o->hub_pids[i]);
        rss = read_kib_field(path, "VmRSS:");
        anon = read_kib_field(path, "RssAnon:");
        if (rss < 0 || anon < 0 || proc_stat(o->hub_pids[i], &ppid, &cpu, &reaped) < 0) {
            s->rss_kib = s->anon_kib = -1; /* one node gone: no sum */
            s->cpu_s = -1;
            break;
        }
        s->rss_kib = (i ? s->rss_kib : 0) + rss;
        s->anon_kib = (i ? s->anon_kib : 0) + anon;
        s->cpu_s = (i ? s->cpu_s : 0) + cpu;
    }
    for (size_t i = 0; i < o->nproxy_pids; i++) {
        long ppid, rss;
        double cpu, reaped;
        snprintf(path, sizeof(path), "/proc/%ld/status", o->proxy_pids[i]);
        rss = read_kib_field(path, "VmRSS:");
        if (rss < 0 || proc_stat(o->proxy_pids[i], &ppid, &cpu, &reaped) < 0) {
            s->proxy_rss_kib = -1;
            s->proxy_cpu_s = -1;
            break;
        }
        s->proxy_rss_kib = (i ? s->proxy_rss_kib : 0) + rss;
        s->proxy_cpu_s = (i ? s->proxy_cpu_s : 0) + cpu;
    }
    if (o->db_pid > 0)
        s->db_cpu_s = tree_cpu_s(o->db_pid);
}

/* b − a of two CPU readings, -1 when either is missing. */
static double cpu_delta(double a, double b)
{
    return a >= 0 && b >= 0 ? b - a : -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static double pct(const double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t k = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return v[k - 1];
}

/* ---------- option parsing ---------- */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: phyload --hub HOST:PORT --creds FILE [options]\n"
            "Simulates many provisioned devices over WSS (GET /v1/hub) from one process.\n\n"
            "  --hub HOST:PORT        address to connect to (without --proxy)\n"
            "  --proxy HOST:PORT[,…]  connect through this HTTP CONNECT proxy instead (several:\n"
            "                         device i uses the (i mod n)th): each device asks for a\n"
            "                         tunnel to SNI:443 as its device ID (Basic password: the\n"
            "                         credentials' proxy_token, or empty), requires 200, then\n"
            "                         starts TLS as without it\n"
            "  --sni NAME             TLS server name, Host header and verified name\n"
            "                         (default portal-eu.phystack.com)\n"
            "  --ca FILE              PEM bundle to verify the hub against (default: system)\n"
            "  --creds FILE           JSON lines from `phyhub admin device-add-bulk`\n"
            "  --devices N            use the first N credentials (default: all)\n"
            "  --hub-only             connect already-provisioned devices (the only mode)\n"
            "  --source-ips A-B|A,B   bind each connection to these IPv4 source addresses\n"
            "                         round robin (e.g. 127.0.0.2-127.0.0.20)\n"
            "  --concurrency C        connects + handshakes in flight (default 256)\n"
            "  --connect-timeout S    per device, TCP + TLS + upgrade (default 30)\n"
            "  --twin-get             each device sends twin.get once its session is open\n"
            "  --resume               each device keeps its last TLS session ticket and offers\n"
            "                         it when it connects again (as phyagent does)\n"
            "  --hub-pid PID[,PID…]   read the hub's RSS and CPU time from /proc (several:\n"
            "                         the nodes of a region, summed)\n"
            "  --proxy-pid PID[,PID…] also report the proxies' CPU time and RSS (summed)\n"
            "  --db-pid PID           also report the CPU time of this database server\n"
            "                         (PostgreSQL's postmaster and its backends)\n"
            "  --idle S               settle time before the RSS is read (default 5)\n"
            "  --push-url URL         https://HOST:PORT of the console API: after the idle\n"
            "  --token T              time PATCH /api/v1/twins/desired?tag=K:V once and time\n"
            "  --tag K:V              its arrival at every device (token also from env\n"
            "                         PHYLOAD_TOKEN)\n"
            "  --push-timeout S       how long to wait for the last device (default 30)\n"
            "  --hold S               keep the connections open S more seconds at the end\n"
            "  --storm S              then wait up to S seconds for a reconnect storm: prints\n"
            "                         'phyload: storm ready' on stderr (kill and restart the\n"
            "                         hub now); each lost session reconnects as phyagent does\n"
            "                         (decorrelated jitter, 1 s to 300 s); reports the time\n"
            "                         from the first loss to the last device back\n"
            "  --tls-only             stop after the TLS handshake (no upgrade): memory\n"
            "                         breakdown; needs a long --header-timeout on the hub\n"
            "  --tcp-only             stop after the TCP connect (no TLS): memory breakdown\n"
            "  --polls                provisioning polls instead of sessions: --creds lines are\n"
            "                         {\"serial\":…,\"poll_token\":…}; each connection (through\n"
            "                         --proxy as sn_<serial>, as phyagent) polls again as soon\n"
            "                         as it has its answer, kept alive; --hold S measures\n"
            "                         polls/s and the hub's (and proxy's) CPU per poll\n"
            "  --json                 print one JSON line with the results\n");
}

static int parse_ipv4(const char *s, struct in_addr *a)
{
    return inet_pton(AF_INET, s, a) == 1 ? 0 : -1;
}

/* "A-B" (inclusive IPv4 range) or "A,B,C". */
static int parse_sources(const char *spec, struct opts *o)
{
    char buf[4096];
    size_t n = strlen(spec);
    if (n >= sizeof(buf))
        return -1;
    memcpy(buf, spec, n + 1);
    char *dash = strchr(buf, '-');
    if (dash) {
        struct in_addr a, b;
        *dash = '\0';
        if (parse_ipv4(buf, &a) < 0 || parse_ipv4(dash + 1, &b) < 0)
            return -1;
        uint32_t lo = ntohl(a.s_addr), hi = ntohl(b.s_addr);
        if (hi < lo || hi - lo + 1 > MAX_SOURCES)
            return -1;
        for (uint32_t ip = lo;; ip++) {
            struct sockaddr_in *sa = &o->sources[o->nsources++];
            memset(sa, 0, sizeof(*sa));
            sa->sin_family = AF_INET;
            sa->sin_addr.s_addr = htonl(ip);
            if (ip == hi)
                break;
        }
        return 0;
    }
    char *p = buf;
    while (*p) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (o->nsources >= MAX_SOURCES)
            return -1;
        struct sockaddr_in *sa = &o->sources[o->nsources];
        memset(sa, 0, sizeof(*sa));
        sa->sin_family = AF_INET;
        if (parse_ipv4(p, &sa->sin_addr) < 0)
            return -1;
        o->nsources++;
        if (!comma)
            break;
        p = comma + 1;
    }
    return o->nsources > 0 ? 0 : -1;
}

/* "PID" or "PID,PID,…" (at most MAX_PIDS) into pids[0..*n). */
static int parse_pids(const char *spec, long *pids, size_t *n)
{
    char buf[256];
    size_t len = strlen(spec);
    if (len >= sizeof(buf))
        return -1;
    memcpy(buf, spec, len + 1);
    *n = 0;
    for (char *p = buf;;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (*n >= MAX_PIDS || parse_long(p, 1, 1L << 30, &pids[*n]) < 0)
            return -1;
        (*n)++;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof(*o));
    o->sni = "portal-eu.phystack.com";
    o->concurrency = 256;
    o->idle_s = 5;
    o->push_timeout_s = 30;
    o->connect_timeout_s = 30;
    o->token = getenv("PHYLOAD_TOKEN");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int used = 1;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--hub-only") == 0) {
            used = 0;
        } else if (strcmp(a, "--json") == 0) {
            o->json = 1;
            used = 0;
        } else if (strcmp(a, "--twin-get") == 0) {
            o->twin_get = 1;
            used = 0;
        } else if (strcmp(a, "--resume") == 0) {
            o->resume = 1;
            used = 0;
        } else if (strcmp(a, "--tls-only") == 0) {
            o->mode = MODE_TLS_ONLY;
            used = 0;
        } else if (strcmp(a, "--tcp-only") == 0) {
            o->mode = MODE_TCP_ONLY;
            used = 0;
        } else if (strcmp(a, "--polls") == 0) {
            o->mode = MODE_POLL;
            used = 0;
        } else if (!v) {
            fprintf(stderr, "phyload: %s needs a value (or is unknown)\n", a);
            return -1;
        } else if (strcmp(a, "--hub") == 0) {
            o->hub = v;
        } else if (strcmp(a, "--sni") == 0) {
            o->sni = v;
        } else if (strcmp(a, "--ca") == 0) {
            o->ca = v;
        } else if (strcmp(a, "--creds") == 0) {
            o->creds = v;
        } else if (strcmp(a, "--push-url") == 0) {
            o->push_url = v;
        } else if (strcmp(a, "--token") == 0) {
            o->token = v;
        } else if (strcmp(a, "--tag") == 0) {
            o->tag = v;
        } else if (strcmp(a, "--devices") == 0) {
            if (parse_long(v, 1, MAX_DEVICES, &o->devices) < 0)
                goto bad;
        } else if (strcmp(a, "--concurrency") == 0) {
            if (parse_long(v, 1, 100000, &o->concurrency) < 0)
                goto bad;
        } else if (strcmp(a, "--proxy") == 0) {
            o->proxy = v;
        } else if (strcmp(a, "--hub-pid") == 0) {
            if (parse_pids(v, o->hub_pids, &o->nhub_pids) < 0)
                goto bad;
        } else if (strcmp(a, "--proxy-pid") == 0) {
            if (parse_pids(v, o->proxy_pids, &o->nproxy_pids) < 0)
                goto bad;
        } else if (strcmp(a, "--db-pid") == 0) {
            if (parse_long(v, 1, 1L << 30, &o->db_pid) < 0)
                goto bad;
        } else if (strcmp(a, "--idle") == 0) {
            if (parse_secs(v, 86400, &o->idle_s) < 0)
                goto bad;
        } else if (strcmp(a, "--push-timeout") == 0) {
            if (parse_secs(v, 3600, &o->push_timeout_s) < 0 || o->push_timeout_s < 0.1)
                goto bad;
        } else if (strcmp(a, "--connect-timeout") == 0) {
            if (parse_secs(v, 3600, &o->connect_timeout_s) < 0 || o->connect_timeout_s < 0.1)
                goto bad;
        } else if (strcmp(a, "--hold") == 0) {
            if (parse_secs(v, 86400, &o->hold_s) < 0)
                goto bad;
        } else if (strcmp(a, "--storm") == 0) {
            if (parse_secs(v, 86400, &o->storm_s) < 0)
                goto bad;
        } else if (strcmp(a, "--source-ips") == 0) {
            if (parse_sources(v, o) < 0)
                goto bad;
        } else {
            fprintf(stderr, "phyload: unknown option %s (see --help)\n", a);
            return -1;
        }
        i += used;
        continue;
    bad:
        fprintf(stderr, "phyload: bad value for %s: '%s'\n", a, v);
        return -1;
    }
    if ((!o->hub && !o->proxy) || !o->creds) {
        fprintf(stderr, "phyload: --hub (or --proxy) and --creds are required (see --help)\n");
        return -1;
    }
    if (o->push_url && (!o->token || !o->tag)) {
        fprintf(stderr, "phyload: --push-url needs --token (or PHYLOAD_TOKEN) and --tag\n");
        return -1;
    }
    if (o->push_url && o->mode != MODE_WS) {
        fprintf(stderr,
                "phyload: --push-url needs WebSocket sessions (not --tls-only/--tcp-only)\n");
        return -1;
    }
    return 0;
}

/* ---------- credentials ---------- */

static int load_creds(struct load *L)
{
    FILE *f = fopen(L->o.creds, "r");
    char line[1024];
    size_t cap = 0, n = 0, lineno = 0;
    int rc = -1;
    if (!f) {
        fprintf(stderr, "phyload: cannot open %s: %s\n", L->o.creds, strerror(errno));
        return -1;
    }
    while ((L->o.devices == 0 || n < (size_t)L->o.devices) && fgets(line, sizeof(line), f)) {
        lineno++;
        if (line[0] == '\n' || line[0] == '\0')
            continue;
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        int polls = L->o.mode == MODE_POLL;
        const char *id = j ? json_string_value(json_object_get(j, polls ? "serial" : "device_id"))
                           : NULL;
        const char *sec =
            j ? json_string_value(json_object_get(j, polls ? "poll_token" : "device_secret"))
              : NULL;
        const char *ptok = j ? json_string_value(json_object_get(j, "proxy_token")) : NULL;
        if (!id || !sec || strlen(id) + 3 >= CRED_ID_MAX || strlen(sec) >= CRED_SECRET_MAX ||
            strchr(id, ':') || (ptok && strlen(ptok) >= PROXY_TOKEN_MAX)) {
            fprintf(stderr, "phyload: %s:%zu: expected {\"device_id\":…,\"device_secret\":…}\n",
                    L->o.creds, lineno);
            json_decref(j);
            goto out;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 1024;
            struct cred *nc = realloc(L->creds, ncap * sizeof(*nc));
            if (!nc) {
                json_decref(j);
                goto out;
            }
            L->creds = nc;
            cap = ncap;
        }
        snprintf(L->creds[n].id, CRED_ID_MAX, "%s%s", polls ? "sn_" : "", id);
        snprintf(L->creds[n].secret, CRED_SECRET_MAX, "%s", sec);
        snprintf(L->creds[n].proxy_token, PROXY_TOKEN_MAX, "%s", ptok ? ptok : "");
        n++;
        json_decref(j);
    }
    if (L->o.devices > 0 && n < (size_t)L->o.devices) {
        fprintf(stderr, "phyload: %s holds only %zu credentials, --devices asks for %ld\n",
                L->o.creds, n, L->o.devices);
        goto out;
    }
    if (n == 0) {
        fprintf(stderr, "phyload: %s holds no credentials\n", L->o.creds);
        goto out;
    }
    L->ndevs = n;
    rc = 0;
out:
    OPENSSL_cleanse(line, sizeof(line));
    fclose(f);
    return rc;
}

/* ---------- TLS and addresses ---------- */

/* Resolves HOST:PORT into L->dst[L->ndst++]; its port in *port. */
static int add_dst(struct load *L, const char *addr, const char *flag, unsigned *port)
{
    char host[256], ports[8];
    if (L->ndst >= MAX_PROXIES ||
        phy_client_parse_hostport(addr, host, sizeof(host), port, 0) < 0) {
        fprintf(stderr, "phyload: %s: expected HOST:PORT (at most %d), got '%s'\n", flag,
                MAX_PROXIES, addr);
        return -1;
    }
    snprintf(ports, sizeof(ports), "%u", *port);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int g = getaddrinfo(host, ports, &hints, &res);
    if (g != 0 || !res) {
        fprintf(stderr, "phyload: cannot resolve %s: %s\n", host, gai_strerror(g));
        return -1;
    }
    memcpy(&L->dst[L->ndst], res->ai_addr, res->ai_addrlen);
    L->dstlen[L->ndst] = res->ai_addrlen;
    freeaddrinfo(res);
    if (L->o.nsources > 0 && L->dst[L->ndst].ss_family != AF_INET) {
        fprintf(stderr, "phyload: --source-ips are IPv4; %s must be IPv4 too\n", flag);
        return -1;
    }
    L->ndst++;
    return 0;
}

static int setup(struct load *L)
{
    unsigned port;
    if (L->o.proxy) {
        char list[1024];
        size_t n = strlen(L->o.proxy);
        if (n >= sizeof(list))
            return -1;
        memcpy(list, L->o.proxy, n + 1);
        for (char *p = list;;) {
            char *comma = strchr(p, ',');
            if (comma)
                *comma = '\0';
            if (add_dst(L, p, "--proxy", &port) < 0)
                return -1;
            if (!comma)
                break;
            p = comma + 1;
        }
    } else if (add_dst(L, L->o.hub, "--hub", &port) < 0) {
        return -1;
    }
    struct in6_addr tmp6;
    struct in_addr tmp4;
    L->sni_is_ip =
        inet_pton(AF_INET, L->o.sni, &tmp4) == 1 || inet_pton(AF_INET6, L->o.sni, &tmp6) == 1;
    /* Through the proxy the device reaches SNI:443, as a real one does. */
    snprintf(L->proxy_target, sizeof(L->proxy_target),
             strchr(L->o.sni, ':') ? "[%s]:443" : "%s:443", L->o.sni);
    if (port == 443 || L->o.proxy)
        snprintf(L->host_header, sizeof(L->host_header), "%s", L->o.sni);
    else
        snprintf(L->host_header, sizeof(L->host_header), "%s:%u", L->o.sni, port);

    L->ctx = SSL_CTX_new(TLS_client_method());
    if (!L->ctx)
        return -1;
    SSL_CTX_set_min_proto_version(L->ctx, TLS1_3_VERSION);
    SSL_CTX_set_verify(L->ctx, SSL_VERIFY_PEER, NULL);
    /* The load client must not be the memory bottleneck: no idle record buffers. */
    SSL_CTX_set_mode(L->ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                                 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (L->o.resume) {
        SSL_CTX_set_session_cache_mode(L->ctx, SSL_SESS_CACHE_CLIENT |
                                                   SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(L->ctx, on_new_session);
    } else {
        SSL_CTX_set_session_cache_mode(L->ctx, SSL_SESS_CACHE_OFF);
    }
    if (L->o.ca) {
        if (SSL_CTX_load_verify_locations(L->ctx, L->o.ca, NULL) != 1) {
            fprintf(stderr, "phyload: cannot load --ca %s\n", L->o.ca);
            return -1;
        }
    } else if (SSL_CTX_set_default_verify_paths(L->ctx) != 1) {
        return -1;
    }
    ERR_clear_error();
    return 0;
}

/* ---------- failure and close accounting ---------- */

static void dev_release(struct dev *d)
{
    if (d->ssl)
        SSL_free(d->ssl);
    d->ssl = NULL;
    if (d->fd >= 0)
        close(d->fd); /* also removes it from the epoll set */
    d->fd = -1;
    free(d->rbuf);
    free(d->wbuf);
    free(d->msg);
    d->rbuf = d->wbuf = d->msg = NULL;
    d->rlen = d->rcap = d->wlen = d->woff = d->msg_len = 0;
    d->events = 0;
}

static int dev_in_handshake(const struct dev *d)
{
    return d->state >= DS_CONNECTING && d->state < DS_OPEN;
}

/* --storm: a lost session, or a failed attempt to bring it back, waits for its next
 * attempt as phyagent would (agent/backoff.c: decorrelated jitter, 1 s .. 300 s). */
static void storm_wait(struct load *L, struct dev *d, int was_open)
{
    uint64_t rnd;
    double t = now_ms();
    if (was_open) {
        L->open--;
        if (L->storm_lost++ == 0)
            L->storm_first_loss = t;
        d->prev_backoff_ms = 0;
    } else {
        L->inflight--;
        L->storm_failed++;
    }
    if (RAND_bytes((unsigned char *)&rnd, sizeof rnd) != 1)
        rnd = (uint64_t)random();
    uint64_t delay = agent_backoff_decorrelated_ms(1000, 300000, d->prev_backoff_ms, rnd);
    d->prev_backoff_ms = (uint32_t)delay;
    d->retry_at = t + (double)delay;
    d->state = DS_WAIT;
    dev_release(d);
}

static void dev_fail(struct load *L, struct dev *d, enum fail_kind k, const char *why)
{
    if (d->state == DS_DONE || d->state == DS_WAIT)
        return;
    if (L->storming && (d->state == DS_OPEN || dev_in_handshake(d))) {
        storm_wait(L, d, d->state == DS_OPEN);
        return;
    }
    if (dev_in_handshake(d)) {
        L->inflight--;
        L->settled++;
        L->fails[k]++;
        if (!L->first_err[k][0])
            snprintf(L->first_err[k], sizeof(L->first_err[k]), "%s", why);
    } else if (d->state == DS_OPEN) {
        L->open--;
        L->lost++;
    }
    d->state = DS_DONE;
    dev_release(d);
}

static void dev_interest(struct load *L, struct dev *d, uint32_t ev)
{
    if (d->events == ev || d->fd < 0)
        return;
    struct epoll_event e = {.events = ev, .data.u32 = (uint32_t)(d - L->devs)};
    epoll_ctl(L->ep, d->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, d->fd, &e);
    d->events = ev;
}

static void tls_error(struct dev *d, char *buf, size_t cap)
{
    long vr = d->ssl ? SSL_get_verify_result(d->ssl) : X509_V_OK;
    unsigned long e = ERR_peek_error();
    if (vr != X509_V_OK)
        snprintf(buf, cap, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
    else if (e)
        snprintf(buf, cap, "%s", ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "?");
    else
        snprintf(buf, cap, "connection closed during the handshake (%s)", strerror(errno));
    ERR_clear_error();
}

/* ---------- writing ---------- */

/* Writes pending bytes. 0 = all written, 1 = some pending (interest updated by the
 * caller), -1 = the connection failed. */
static int dev_flush(struct dev *d)
{
    d->write_wants_read = 0;
    while (d->woff < d->wlen) {
        ERR_clear_error();
        int n = SSL_write(d->ssl, d->wbuf + d->woff, (int)(d->wlen - d->woff));
        if (n > 0) {
            d->woff += (uint32_t)n;
            continue;
        }
        int e = SSL_get_error(d->ssl, n);
        if (e == SSL_ERROR_WANT_WRITE)
            return 1;
        if (e == SSL_ERROR_WANT_READ) {
            d->write_wants_read = 1;
            return 1;
        }
        ERR_clear_error();
        return -1;
    }
    free(d->wbuf);
    d->wbuf = NULL;
    d->wlen = d->woff = 0;
    return 0;
}

/* Queues bytes behind any pending ones and writes what the socket takes. */
static int dev_send(struct dev *d, const void *p, size_t n)
{
    size_t pending = d->wlen - d->woff;
    if (pending + n > (1u << 22))
        return -1;
    uint8_t *b = malloc(pending + n);
    if (!b)
        return -1;
    if (pending)
        memcpy(b, d->wbuf + d->woff, pending);
    memcpy(b + pending, p, n);
    free(d->wbuf);
    d->wbuf = b;
    d->woff = 0;
    d->wlen = (uint32_t)(pending + n);
    return dev_flush(d) < 0 ? -1 : 0;
}

static int ws_send_frame(struct dev *d, int opcode, const void *payload, size_t len)
{
    uint8_t frame[WSF_MAX_HEADER + 256], mask[4];
    if (len > 256 || RAND_bytes(mask, sizeof(mask)) != 1)
        return -1;
    int n = wsf_encode(opcode, payload, len, mask, frame, sizeof(frame));
    if (n < 0)
        return -1;
    return dev_send(d, frame, (size_t)n);
}

/* ---------- messages from the hub ---------- */

static void on_text(struct load *L, struct dev *d, const uint8_t *p, size_t n)
{
    if (memmem(p, n, "\"" PHY_MSG_DESIRED_PATCH "\"", sizeof(PHY_MSG_DESIRED_PATCH) + 1)) {
        if (L->push_active && !d->got_push && memmem(p, n, L->nonce, strlen(L->nonce))) {
            d->got_push = 1;
            L->push_ms[L->push_received++] = now_ms() - L->push_t0;
        } else {
            L->other_patches++;
        }
    } else if (memmem(p, n, "\"type\":\"" PHY_MSG_TWIN "\"", sizeof PHY_MSG_TWIN + 9)) {
        L->twins++;
    } else if (memmem(p, n, "\"type\":\"" PHY_MSG_ERROR "\"", sizeof PHY_MSG_ERROR + 9)) {
        if (L->errors_rx++ == 0)
            fprintf(stderr, "phyload: first error message from the hub: %.*s\n",
                    (int)(n > 300 ? 300 : n), (const char *)p);
    }
}

/* Handles the complete frames at buf[0..n); returns the bytes consumed or -1 when the
 * device is gone. */
static long ws_frames(struct load *L, struct dev *d, const uint8_t *buf, size_t n)
{
    size_t off = 0;
    while (off < n) {
        struct wsf_frame f;
        int r = wsf_parse(buf + off, n - off, WS_MAX_PAYLOAD, &f);
        if (r == PHY_EAGAIN)
            break;
        if (r < 0) {
            dev_fail(L, d, F_PROTO, "invalid WebSocket frame from the hub");
            return -1;
        }
        off += (size_t)r;
        switch (f.opcode) {
        case WSF_TEXT:
        case WSF_CONT:
            if (f.opcode == WSF_TEXT && f.fin && !d->in_msg) {
                on_text(L, d, f.payload, f.len);
                break;
            }
            if ((f.opcode == WSF_TEXT) == (d->in_msg != 0) || d->msg_len + f.len > WS_MAX_PAYLOAD) {
                dev_fail(L, d, F_PROTO, "bad WebSocket fragmentation");
                return -1;
            }
            if (f.len) {
                uint8_t *m = realloc(d->msg, d->msg_len + f.len);
                if (!m) {
                    dev_fail(L, d, F_PROTO, "out of memory");
                    return -1;
                }
                d->msg = m;
                memcpy(d->msg + d->msg_len, f.payload, f.len);
                d->msg_len += (uint32_t)f.len;
            }
            d->in_msg = 1;
            if (f.fin) {
                on_text(L, d, d->msg, d->msg_len);
                free(d->msg);
                d->msg = NULL;
                d->msg_len = 0;
                d->in_msg = 0;
            }
            break;
        case WSF_PING:
            L->pings++;
            if (ws_send_frame(d, WSF_PONG, f.payload, f.len) < 0) {
                dev_fail(L, d, F_CLOSED, "write failed");
                return -1;
            }
            break;
        case WSF_CLOSE: {
            uint8_t code[2] = {0x03, 0xe8}; /* 1000 */
            if (f.len >= 2) {
                code[0] = f.payload[0];
                code[1] = f.payload[1];
                L->last_close_code = (f.payload[0] << 8) | f.payload[1];
            }
            ws_send_frame(d, WSF_CLOSE, code, 2); /* best effort, then gone */
            L->closed_by_hub++;
            if (L->storming) {
                storm_wait(L, d, 1);
                return -1;
            }
            L->open--;
            d->state = DS_DONE;
            dev_release(d);
            return -1;
        }
        case WSF_BINARY:
            dev_fail(L, d, F_PROTO, "binary frame from the hub");
            return -1;
        default: /* pong */
            break;
        }
    }
    return (long)off;
}

/* Feeds received bytes to the frame parser, keeping an incomplete frame in rbuf. */
static int ws_input(struct load *L, struct dev *d, const uint8_t *p, size_t n)
{
    if (d->rlen == 0) {
        long used = ws_frames(L, d, p, n);
        if (used < 0)
            return -1;
        p += used;
        n -= (size_t)used;
        if (n == 0)
            return 0;
    }
    if (d->rlen + n > WS_MAX_PAYLOAD + WSF_MAX_HEADER) {
        dev_fail(L, d, F_PROTO, "frame over the limit");
        return -1;
    }
    if (d->rlen + n > d->rcap) {
        size_t cap = d->rlen + n;
        uint8_t *b = realloc(d->rbuf, cap);
        if (!b) {
            dev_fail(L, d, F_PROTO, "out of memory");
            return -1;
        }
        d->rbuf = b;
        d->rcap = (uint32_t)cap;
    }
    memcpy(d->rbuf + d->rlen, p, n);
    d->rlen += (uint32_t)n;
    if (n == d->rlen) /* only the new bytes: already parsed above when rlen was 0 */
        return 0;
    long used = ws_frames(L, d, d->rbuf, d->rlen);
    if (used < 0)
        return -1;
    memmove(d->rbuf, d->rbuf + used, d->rlen - (size_t)used);
    d->rlen -= (uint32_t)used;
    if (d->rlen == 0) {
        free(d->rbuf);
        d->rbuf = NULL;
        d->rcap = 0;
    }
    return 0;
}

/* ---------- connection life ---------- */

static void dev_opened(struct load *L, struct dev *d)
{
    d->state = DS_OPEN;
    L->inflight--;
    L->open++;
    if (L->storming) {
        L->storm_back++;
        L->storm_last_back = now_ms();
        return;
    }
    L->settled++;
    L->hs_ms[L->nhs++] = now_ms() - d->t_start;
}

static void dev_start(struct load *L, struct dev *d)
{
    size_t k = (size_t)(d - L->devs) % L->ndst;
    d->fd = socket(L->dst[k].ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    d->state = DS_CONNECTING;
    d->t_start = now_ms();
    L->inflight++;
    if (d->fd < 0) {
        dev_fail(L, d, F_CONNECT, strerror(errno));
        return;
    }
    int one = 1;
    if (L->o.nsources > 0) {
        struct sockaddr_in *src = &L->o.sources[L->src_rr++ % L->o.nsources];
        /* The port is chosen at connect() time per 4-tuple, so each source address
         * has its own ephemeral range. */
        setsockopt(d->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(d->fd, (struct sockaddr *)src, sizeof(*src)) != 0) {
            dev_fail(L, d, F_CONNECT, strerror(errno));
            return;
        }
    }
    setsockopt(d->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(d->fd, (struct sockaddr *)&L->dst[k], L->dstlen[k]) != 0 && errno != EINPROGRESS) {
        dev_fail(L, d, F_CONNECT, strerror(errno));
        return;
    }
    dev_interest(L, d, EPOLLOUT);
}

/* Writes pending bytes on the plain socket (the CONNECT request). 0 = all written,
 * 1 = some pending, -1 = failed. */
static int raw_flush(struct dev *d)
{
    while (d->woff < d->wlen) {
        ssize_t n = write(d->fd, d->wbuf + d->woff, d->wlen - d->woff);
        if (n > 0) {
            d->woff += (uint32_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 1;
        return -1;
    }
    free(d->wbuf);
    d->wbuf = NULL;
    d->wlen = d->woff = 0;
    return 0;
}

/* Queues the CONNECT request: the device ID as the Basic user, its proxy token (if
 * the credentials carry one) as the password, as phyagent sends them. */
static int build_proxy_connect(struct load *L, struct dev *d)
{
    const struct cred *c = &L->creds[d - L->devs];
    char userpass[CRED_ID_MAX + PROXY_TOKEN_MAX + 2];
    char basic[((CRED_ID_MAX + PROXY_TOKEN_MAX + 2) / 3 + 1) * 4 + 1];
    char req[1024];
    int rc = -1;
    int ul = snprintf(userpass, sizeof(userpass), "%s:%s", c->id, c->proxy_token);
    if (ul < 0 || (size_t)ul >= sizeof(userpass) ||
        phy_base64_encode((unsigned char *)userpass, (size_t)ul, basic, sizeof(basic), 0) < 0)
        goto out;
    int n = snprintf(req, sizeof(req),
                     "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n",
                     L->proxy_target, L->proxy_target, basic);
    if (n < 0 || (size_t)n >= sizeof(req))
        goto out;
    d->wbuf = malloc((size_t)n);
    if (!d->wbuf)
        goto out;
    memcpy(d->wbuf, req, (size_t)n);
    d->wlen = (uint32_t)n;
    d->woff = 0;
    rc = 0;
out:
    OPENSSL_cleanse(userpass, sizeof(userpass));
    OPENSSL_cleanse(basic, sizeof(basic));
    OPENSSL_cleanse(req, sizeof(req));
    return rc;
}

/* Reads the proxy's answer to the CONNECT; 1 when the tunnel is up (200 and nothing
 * behind the head: the hub speaks only after the ClientHello), 0 to wait, -1 when
 * failed. */
static int read_proxy_answer(struct load *L, struct dev *d)
{
    if (!d->rbuf) {
        d->rbuf = malloc(HEAD_MAX);
        if (!d->rbuf) {
            dev_fail(L, d, F_PROXY, "out of memory");
            return -1;
        }
        d->rcap = HEAD_MAX;
    }
    for (;;) {
        ssize_t n = read(d->fd, d->rbuf + d->rlen, d->rcap - d->rlen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n <= 0) {
            dev_fail(L, d, F_PROXY, n == 0 ? "proxy closed before answering" : strerror(errno));
            return -1;
        }
        d->rlen += (uint32_t)n;
        struct phy_http_response res;
        int r = phy_http_parse_response((char *)d->rbuf, d->rlen, HEAD_MAX, &res);
        if (r == PHY_EAGAIN) {
            if (d->rlen == d->rcap) {
                dev_fail(L, d, F_PROXY, "proxy answer head too long");
                return -1;
            }
            continue;
        }
        if (r < 0) {
            dev_fail(L, d, F_PROXY, "malformed proxy answer");
            return -1;
        }
        if (res.status != 200) {
            char why[160];
            size_t body = d->rlen - (size_t)r;
            snprintf(why, sizeof(why), "proxy HTTP %d: %.*s", res.status,
                     (int)(body > 100 ? 100 : body), (char *)d->rbuf + r);
            for (char *q = why; *q; q++)
                if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f)
                    *q = ' ';
            dev_fail(L, d, F_PROXY, why);
            return -1;
        }
        if ((size_t)r != d->rlen) {
            dev_fail(L, d, F_PROXY, "proxy sent bytes after its 200");
            return -1;
        }
        free(d->rbuf);
        d->rbuf = NULL;
        d->rlen = d->rcap = 0;
        return 1;
    }
}

/* --resume: a ticket arrived; the device keeps a copy (the connection's own session is
 * marked not resumable when the connection ends without close_notify). */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct dev *d = SSL_get_app_data(ssl);
    SSL_SESSION *copy = d ? SSL_SESSION_dup(sess) : NULL;
    if (copy) {
        SSL_SESSION_free(d->sess);
        d->sess = copy;
    }
    return 0;
}

/* The TCP connection (or the tunnel) is up: creates the client SSL. 0, or -1 when
 * the device failed. */
static int start_tls(struct load *L, struct dev *d)
{
    d->ssl = SSL_new(L->ctx);
    if (d->ssl && L->o.resume) {
        SSL_set_app_data(d->ssl, d);
        if (d->sess)
            SSL_set_session(d->ssl, d->sess);
    }
    if (!d->ssl || SSL_set_fd(d->ssl, d->fd) != 1 ||
        (!L->sni_is_ip && SSL_set_tlsext_host_name(d->ssl, L->o.sni) != 1) ||
        (L->sni_is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(d->ssl), L->o.sni) != 1
                      : SSL_set1_host(d->ssl, L->o.sni) != 1)) {
        dev_fail(L, d, F_TLS, "SSL setup failed");
        return -1;
    }
    d->state = DS_TLS;
    return 0;
}

static int build_upgrade(struct load *L, struct dev *d)
{
    const struct cred *c = &L->creds[d - L->devs];
    unsigned char key[16];
    char key64[32], userpass[CRED_ID_MAX + CRED_SECRET_MAX + 2];
    char basic[((CRED_ID_MAX + CRED_SECRET_MAX + 2) / 3 + 1) * 4 + 1];
    char req[1024];
    int rc = -1;
    if (RAND_bytes(key, sizeof(key)) != 1 ||
        phy_base64_encode(key, sizeof(key), key64, sizeof(key64), 0) != 24)
        goto out;
    if (wsf_accept(key64, WSF_KEY_LEN, d->accept) != 0)
        goto out;
    int ul = snprintf(userpass, sizeof(userpass), "%s:%s", c->id, c->secret);
    if (ul < 0 || (size_t)ul >= sizeof(userpass) ||
        phy_base64_encode((unsigned char *)userpass, (size_t)ul, basic, sizeof(basic), 0) < 0)
        goto out;
    int n =
        snprintf(req, sizeof(req),
                 "GET " PHY_HUB_PATH " HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                 "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: " PHY_WS_SUBPROTOCOL "\r\n"
                 "Authorization: Basic %s\r\n\r\n",
                 L->host_header, key64, basic);
    if (n < 0 || (size_t)n >= sizeof(req))
        goto out;
    rc = dev_send(d, req, (size_t)n);
out:
    OPENSSL_cleanse(userpass, sizeof(userpass));
    OPENSSL_cleanse(basic, sizeof(basic));
    OPENSSL_cleanse(req, sizeof(req));
    return rc;
}

/* Reads the upgrade answer; 1 when the session is open, 0 to wait, -1 when failed. */
static int read_upgrade(struct load *L, struct dev *d)
{
    if (!d->rbuf) {
        d->rbuf = malloc(HEAD_MAX);
        if (!d->rbuf) {
            dev_fail(L, d, F_PROTO, "out of memory");
            return -1;
        }
        d->rcap = HEAD_MAX;
    }
    for (;;) {
        ERR_clear_error();
        int n = SSL_read(d->ssl, d->rbuf + d->rlen, (int)(d->rcap - d->rlen));
        if (n <= 0) {
            int e = SSL_get_error(d->ssl, n);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                d->read_wants_write = e == SSL_ERROR_WANT_WRITE;
                return 0;
            }
            char why[160];
            tls_error(d, why, sizeof(why));
            dev_fail(L, d, F_CLOSED, why);
            return -1;
        }
        d->rlen += (uint32_t)n;
        struct phy_http_response res;
        int r = phy_http_parse_response((char *)d->rbuf, d->rlen, HEAD_MAX, &res);
        if (r == PHY_EAGAIN)
            continue;
        if (r < 0) {
            dev_fail(L, d, F_HTTP, "malformed upgrade answer");
            return -1;
        }
        if (res.status != 101) {
            char why[160];
            size_t body = d->rlen - (size_t)r;
            snprintf(why, sizeof(why), "HTTP %d: %.*s", res.status, (int)(body > 100 ? 100 : body),
                     (char *)d->rbuf + r);
            for (char *q = why; *q; q++)
                if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f)
                    *q = ' ';
            dev_fail(L, d, F_HTTP, why);
            return -1;
        }
        const struct phy_str *acc =
            phy_http_find_header(res.headers, res.num_headers, "Sec-WebSocket-Accept");
        const struct phy_str *proto =
            phy_http_find_header(res.headers, res.num_headers, "Sec-WebSocket-Protocol");
        if (!acc || !phy_str_eq(*acc, d->accept) || !proto ||
            !phy_str_eq(*proto, PHY_WS_SUBPROTOCOL)) {
            dev_fail(L, d, F_HTTP, "101 without the right Sec-WebSocket-Accept/Protocol");
            return -1;
        }
        size_t rest = d->rlen - (size_t)r;
        memmove(d->rbuf, d->rbuf + r, rest);
        d->rlen = (uint32_t)rest;
        if (rest == 0) {
            free(d->rbuf);
            d->rbuf = NULL;
            d->rcap = 0;
        }
        return 1;
    }
}

/* Reads everything available on an open session. 0 = wait, -1 = gone. */
static int read_open(struct load *L, struct dev *d)
{
    uint8_t buf[READ_CHUNK];
    if (d->rlen > 0) { /* bytes that came right behind the 101 */
        long used = ws_frames(L, d, d->rbuf, d->rlen);
        if (used < 0)
            return -1;
        memmove(d->rbuf, d->rbuf + used, d->rlen - (size_t)used);
        d->rlen -= (uint32_t)used;
        if (d->rlen == 0) {
            free(d->rbuf);
            d->rbuf = NULL;
            d->rcap = 0;
        }
    }
    d->read_wants_write = 0;
    for (;;) {
        ERR_clear_error();
        int n = SSL_read(d->ssl, buf, sizeof(buf));
        if (n > 0) {
            if (L->o.mode != MODE_WS)
                continue; /* --tls-only: nothing is expected */
            if (ws_input(L, d, buf, (size_t)n) < 0)
                return -1;
            continue;
        }
        int e = SSL_get_error(d->ssl, n);
        if (e == SSL_ERROR_WANT_READ)
            return 0;
        if (e == SSL_ERROR_WANT_WRITE) {
            d->read_wants_write = 1;
            return 0;
        }
        ERR_clear_error();
        dev_fail(L, d, F_CLOSED, "connection lost");
        return -1;
    }
}

static uint32_t ssl_interest(struct dev *d, int ssl_err)
{
    (void)d;
    return ssl_err == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN;
}

/* --polls: one provisioning poll on d's kept-alive connection. 0 or -1. */
static int poll_send(struct load *L, struct dev *d)
{
    const struct cred *c = &L->creds[d - L->devs];
    char body[256], req[768];
    int bl = snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"poll_token\":\"%s\"}",
                      c->id + 3, c->secret);
    if (bl < 0 || (size_t)bl >= sizeof(body))
        return -1;
    int n = snprintf(req, sizeof(req),
                     "POST /v1/provisioning/poll HTTP/1.1\r\nHost: %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                     L->host_header, bl, body);
    if (n < 0 || (size_t)n >= sizeof(req))
        return -1;
    return dev_send(d, req, (size_t)n);
}

/* --polls: reads answers (head and Content-Length body); each complete one is counted
 * and followed by the next poll at once. */
static void poll_io(struct load *L, struct dev *d)
{
    if (d->wlen > d->woff && dev_flush(d) < 0) {
        dev_fail(L, d, F_CLOSED, "write failed");
        return;
    }
    if (!d->rbuf) {
        if (!(d->rbuf = malloc(HEAD_MAX))) {
            dev_fail(L, d, F_PROTO, "out of memory");
            return;
        }
        d->rcap = HEAD_MAX;
    }
    d->read_wants_write = 0;
    for (;;) {
        ERR_clear_error();
        int n = SSL_read(d->ssl, d->rbuf + d->rlen, (int)(d->rcap - d->rlen));
        if (n <= 0) {
            int e = SSL_get_error(d->ssl, n);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                d->read_wants_write = e == SSL_ERROR_WANT_WRITE;
                break;
            }
            dev_fail(L, d, F_CLOSED, "connection lost");
            return;
        }
        d->rlen += (uint32_t)n;
        for (;;) {
            struct phy_http_response res;
            int h = phy_http_parse_response((char *)d->rbuf, d->rlen, HEAD_MAX, &res);
            if (h == PHY_EAGAIN)
                break;
            if (h < 0 || res.content_length < 0 ||
                (size_t)h + (size_t)res.content_length > d->rcap) {
                dev_fail(L, d, F_PROTO, "bad poll answer");
                return;
            }
            size_t used = (size_t)h + (size_t)res.content_length;
            if (d->rlen < used)
                break;
            L->polls++;
            if (res.status != 202 && res.status != 429)
                L->polls_other++;
            memmove(d->rbuf, d->rbuf + used, d->rlen - used);
            d->rlen -= (uint32_t)used;
            if (!res.keep_alive) {
                dev_fail(L, d, F_CLOSED, "the hub closed the kept-alive connection");
                return;
            }
            if (poll_send(L, d) < 0 || (d->wlen > d->woff && dev_flush(d) < 0)) {
                dev_fail(L, d, F_CLOSED, "cannot send a poll");
                return;
            }
        }
        if (d->rlen == d->rcap) {
            dev_fail(L, d, F_PROTO, "poll answer too long");
            return;
        }
    }
    uint32_t ev = EPOLLIN;
    if ((d->wlen > d->woff && !d->write_wants_read) || d->read_wants_write)
        ev |= EPOLLOUT;
    dev_interest(L, d, ev);
}

static void dev_io(struct load *L, struct dev *d, uint32_t events)
{
    for (;;) {
        switch (d->state) {
        case DS_CONNECTING: {
            int err = 0;
            socklen_t len = sizeof(err);
            if (getsockopt(d->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
                err = errno;
            if (err) {
                dev_fail(L, d, F_CONNECT, strerror(err));
                return;
            }
            if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
                return;
            if (L->o.proxy) {
                if (build_proxy_connect(L, d) < 0) {
                    dev_fail(L, d, F_PROXY, "cannot build the CONNECT request");
                    return;
                }
                d->state = DS_PROXY_WRITE;
                continue;
            }
            if (L->o.mode == MODE_TCP_ONLY) {
                dev_opened(L, d);
                dev_interest(L, d, EPOLLIN | EPOLLRDHUP);
                return;
            }
            if (start_tls(L, d) < 0)
                return;
            continue;
        }
        case DS_PROXY_WRITE: {
            int r = raw_flush(d);
            if (r < 0) {
                dev_fail(L, d, F_PROXY, "write to the proxy failed");
                return;
            }
            if (r == 1) {
                dev_interest(L, d, EPOLLOUT);
                return;
            }
            d->state = DS_PROXY_READ;
            continue;
        }
        case DS_PROXY_READ: {
            int r = read_proxy_answer(L, d);
            if (r < 0)
                return;
            if (r == 0) {
                dev_interest(L, d, EPOLLIN);
                return;
            }
            if (L->o.mode == MODE_TCP_ONLY) { /* the hub holds a plain TCP connection */
                dev_opened(L, d);
                dev_interest(L, d, EPOLLIN | EPOLLRDHUP);
                return;
            }
            if (start_tls(L, d) < 0)
                return;
            continue;
        }
        case DS_TLS: {
            ERR_clear_error();
            int r = SSL_connect(d->ssl);
            if (r == 1) {
                if (SSL_session_reused(d->ssl))
                    L->resumed++;
                else
                    L->full++;
                if (L->o.mode == MODE_POLL) {
                    dev_opened(L, d);
                    if (poll_send(L, d) < 0) {
                        dev_fail(L, d, F_CLOSED, "cannot send a poll");
                        return;
                    }
                    continue;
                }
                if (L->o.mode == MODE_TLS_ONLY) {
                    dev_opened(L, d);
                    dev_interest(L, d, EPOLLIN);
                    return;
                }
                d->state = DS_UPGRADE_WRITE;
                if (build_upgrade(L, d) < 0) {
                    dev_fail(L, d, F_CLOSED, "cannot send the upgrade request");
                    return;
                }
                continue;
            }
            int e = SSL_get_error(d->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                dev_interest(L, d, ssl_interest(d, e));
                return;
            }
            char why[160];
            tls_error(d, why, sizeof(why));
            dev_fail(L, d, F_TLS, why);
            return;
        }
        case DS_UPGRADE_WRITE: {
            int r = dev_flush(d);
            if (r < 0) {
                dev_fail(L, d, F_CLOSED, "write failed");
                return;
            }
            if (r == 1) {
                dev_interest(L, d, d->write_wants_read ? EPOLLIN : EPOLLOUT);
                return;
            }
            d->state = DS_UPGRADE_READ;
            continue;
        }
        case DS_UPGRADE_READ: {
            int r = read_upgrade(L, d);
            if (r < 0)
                return;
            if (r == 0) {
                dev_interest(L, d, d->read_wants_write ? EPOLLOUT : EPOLLIN);
                return;
            }
            dev_opened(L, d);
            if (L->o.twin_get) {
                static const char tg[] = "{\"type\":\"" PHY_MSG_TWIN_GET "\",\"id\":\"phyload\"}";
                if (ws_send_frame(d, WSF_TEXT, tg, sizeof(tg) - 1) < 0) {
                    dev_fail(L, d, F_CLOSED, "write failed");
                    return;
                }
            }
            continue;
        }
        case DS_OPEN: {
            if (L->o.mode == MODE_POLL) {
                poll_io(L, d);
                return;
            }
            if (L->o.mode == MODE_TCP_ONLY) {
                char b[256];
                ssize_t n = read(d->fd, b, sizeof(b));
                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                    dev_fail(L, d, F_CLOSED, "connection lost");
                return;
            }
            if (d->wlen > d->woff && dev_flush(d) < 0) {
                dev_fail(L, d, F_CLOSED, "write failed");
                return;
            }
            if (read_open(L, d) < 0)
                return;
            if (d->wlen > d->woff && dev_flush(d) < 0) {
                dev_fail(L, d, F_CLOSED, "write failed");
                return;
            }
            uint32_t ev = EPOLLIN;
            if ((d->wlen > d->woff && !d->write_wants_read) || d->read_wants_write)
                ev |= EPOLLOUT;
            dev_interest(L, d, ev);
            return;
        }
        default:
            return;
        }
    }
}

/* ---------- the loop ---------- */

static void check_timeouts(struct load *L, double now)
{
    double limit = L->o.connect_timeout_s * 1000.0;
    for (size_t i = 0; i < L->next; i++) {
        struct dev *d = &L->devs[i];
        if (dev_in_handshake(d) && now - d->t_start > limit)
            dev_fail(L, d, F_TIMEOUT, "no session within --connect-timeout");
    }
}

static void loop_once(struct load *L, int timeout_ms)
{
    struct epoll_event evs[EPOLL_BATCH];
    int n = epoll_wait(L->ep, evs, EPOLL_BATCH, timeout_ms);
    for (int i = 0; i < n; i++) {
        if (evs[i].data.u32 == PUSH_TAG) {
            uint64_t v;
            if (read(L->push_efd, &v, sizeof(v)) == sizeof(v))
                L->push_done = 1;
            continue;
        }
        struct dev *d = &L->devs[evs[i].data.u32];
        if (d->state != DS_DONE)
            dev_io(L, d, evs[i].events);
    }
}

static void connect_phase(struct load *L, double *t_end)
{
    double t0 = now_ms(), last_report = t0, last_scan = t0;
    while (L->settled < L->ndevs) {
        while (L->next < L->ndevs && L->inflight < (size_t)L->o.concurrency)
            dev_start(L, &L->devs[L->next++]);
        loop_once(L, 50);
        double t = now_ms();
        if (t - last_scan > 500) {
            check_timeouts(L, t);
            last_scan = t;
        }
        if (t - last_report >= 2000) {
            unsigned long failed = 0;
            for (int k = 0; k < F_COUNT; k++)
                failed += L->fails[k];
            fprintf(stderr, "phyload: %zu/%zu open, %lu failed, %.0f/s\n", L->open, L->ndevs,
                    failed, (double)L->open * 1000.0 / (t - t0));
            last_report = t;
        }
    }
    *t_end = now_ms();
}

static void run_for(struct load *L, double seconds)
{
    double end = now_ms() + seconds * 1000.0;
    for (double t = now_ms(); t < end; t = now_ms()) {
        double left = end - t;
        loop_once(L, left > 200 ? 200 : (int)left + 1);
    }
}

/* --storm: waits for the hub to go (the caller kills it after "storm ready") and for
 * every lost device to be back, at most storm_s seconds. */
static void storm_phase(struct load *L)
{
    double t0 = now_ms(), end = t0 + L->o.storm_s * 1000.0, last_scan = t0, last_report = t0;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    L->full = L->resumed = 0; /* the storm's handshakes only */
    L->storming = 1;
    fprintf(stderr, "phyload: storm ready\n");
    fflush(stderr);
    for (double t = t0; t < end; t = now_ms()) {
        if (L->storm_lost > 0 && L->open == L->ndevs)
            break;
        for (size_t i = 0; i < L->ndevs; i++) {
            struct dev *d = &L->devs[i];
            if (d->state == DS_WAIT && d->retry_at <= t) {
                L->storm_attempts++;
                dev_start(L, d);
            }
        }
        loop_once(L, 20);
        if (t - last_scan > 500) {
            check_timeouts(L, t);
            last_scan = t;
        }
        if (L->storm_lost > 0 && t - last_report >= 1000) {
            fprintf(stderr, "phyload: storm %zu/%zu open, %lu attempts, %lu failed\n", L->open,
                    L->ndevs, L->storm_attempts, L->storm_failed);
            last_report = t;
        }
    }
    L->storming = 0;
    getrusage(RUSAGE_SELF, &ru1);
#define RU_S(r) ((double)(r).ru_utime.tv_sec + (r).ru_utime.tv_usec / 1e6 + (r).ru_stime.tv_sec + \
                 (r).ru_stime.tv_usec / 1e6)
    L->storm_cpu_s = RU_S(ru1) - RU_S(ru0);
#undef RU_S
}

/* ---------- fleet push ---------- */

static void *push_thread(void *arg)
{
    struct push_job *j = arg;
    struct phy_client_response res = {0};
    j->rc = phy_client_request(&j->co, "PATCH", j->path, j->headers, "application/merge-patch+json",
                               j->body, strlen(j->body), &res, j->err, sizeof(j->err));
    j->t_done = now_ms();
    if (j->rc == 0) {
        j->status = res.status;
        snprintf(j->resp, sizeof(j->resp), "%s", res.body ? res.body : "");
    }
    phy_client_response_free(&res);
    uint64_t one = 1;
    if (write(j->efd, &one, sizeof(one)) != sizeof(one))
        j->rc = j->rc ? j->rc : PHY_EIO;
    return NULL;
}

static int push_prepare(struct load *L, struct push_job *j)
{
    const char *u = L->o.push_url;
    memset(j, 0, sizeof(*j));
    if (strncmp(u, "https://", 8) != 0) {
        fprintf(stderr, "phyload: --push-url must be https://HOST:PORT\n");
        return -1;
    }
    u += 8;
    size_t hl = strcspn(u, "/");
    char hp[300];
    if (hl == 0 || hl >= sizeof(hp) || (u[hl] && strcmp(u + hl, "/") != 0)) {
        fprintf(stderr, "phyload: --push-url must be https://HOST:PORT (no path)\n");
        return -1;
    }
    memcpy(hp, u, hl);
    hp[hl] = '\0';
    if (phy_client_parse_hostport(hp, j->host, sizeof(j->host), &j->co.port, 443) < 0) {
        fprintf(stderr, "phyload: bad host in --push-url\n");
        return -1;
    }
    j->co.host = L->o.sni;
    j->co.connect_addr = j->host;
    j->co.ca_file = L->o.ca;
    j->co.timeout_ms = (int)(L->o.push_timeout_s * 1000);
    /* tag=K:V, percent-encoded except unreserved characters and ':' */
    size_t p = (size_t)snprintf(j->path, sizeof(j->path), "/api/v1/twins/desired?tag=");
    for (const unsigned char *t = (const unsigned char *)L->o.tag; *t; t++) {
        if (p + 4 >= sizeof(j->path))
            return -1;
        if ((*t >= 'A' && *t <= 'Z') || (*t >= 'a' && *t <= 'z') || (*t >= '0' && *t <= '9') ||
            strchr("-._~:", *t))
            j->path[p++] = (char)*t;
        else
            p += (size_t)snprintf(j->path + p, 4, "%%%02X", *t);
    }
    j->path[p] = '\0';
    int n = snprintf(j->headers, sizeof(j->headers), "Authorization: Bearer %s\r\n", L->o.token);
    if (n < 0 || (size_t)n >= sizeof(j->headers)) {
        fprintf(stderr, "phyload: --token too long\n");
        return -1;
    }
    unsigned char rnd[12];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        return -1;
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(L->nonce + 2 * i, 3, "%02x", rnd[i]);
    snprintf(j->body, sizeof(j->body), "{\"phyload\":{\"nonce\":\"%s\"}}", L->nonce);
    return 0;
}

/* Sends one fleet-wide PATCH from a second thread and waits, serving the sessions,
 * until every open device has the push or the timeout ends. */
static int push_phase(struct load *L, struct push_job *j)
{
    pthread_t th;
    j->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (j->efd < 0)
        return -1;
    L->push_efd = j->efd;
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = PUSH_TAG};
    epoll_ctl(L->ep, EPOLL_CTL_ADD, j->efd, &e);
    L->push_ms = calloc(L->open ? L->open : 1, sizeof(double));
    if (!L->push_ms)
        return -1;
    L->push_expected = L->open;
    L->push_received = 0;
    L->push_done = 0;
    L->push_active = 1;
    L->push_t0 = now_ms();
    if (pthread_create(&th, NULL, push_thread, j) != 0) {
        L->push_active = 0;
        return -1;
    }
    double deadline = L->push_t0 + L->o.push_timeout_s * 1000.0;
    for (;;) {
        double t = now_ms();
        if (t >= deadline)
            break;
        if (L->push_done && (j->rc != 0 || j->status != 200))
            break;
        if (L->push_done && L->push_received >= L->push_expected)
            break;
        if (L->push_received > L->push_expected) /* cannot happen; bound the array */
            break;
        double left = deadline - t;
        loop_once(L, left > 100 ? 100 : (int)left + 1);
    }
    pthread_join(th, NULL);
    L->push_done = 1;
    L->push_active = 0;
    epoll_ctl(L->ep, EPOLL_CTL_DEL, j->efd, NULL);
    close(j->efd);
    return 0;
}

/* ---------- report ---------- */

static void report(struct load *L, double t_connect_ms, const struct proc_sample *before,
                   const struct proc_sample *connected, const struct proc_sample *after,
                   double client_cpu_s, const struct push_job *j, int pushed)
{
    unsigned long failed = 0;
    for (int k = 0; k < F_COUNT; k++)
        failed += L->fails[k];
    qsort(L->hs_ms, L->nhs, sizeof(double), cmp_double);
    double rate = t_connect_ms > 0 ? (double)L->nhs * 1000.0 / t_connect_ms : 0;
    double hub_cpu = cpu_delta(before->cpu_s, connected->cpu_s);
    double proxy_cpu = cpu_delta(before->proxy_cpu_s, connected->proxy_cpu_s);
    double db_cpu = cpu_delta(before->db_cpu_s, connected->db_cpu_s);
    double nhs = L->nhs ? (double)L->nhs : 1.0;
    long dprss = before->proxy_rss_kib >= 0 && after->proxy_rss_kib >= 0
                     ? after->proxy_rss_kib - before->proxy_rss_kib
                     : -1;
    double proxy_per = (dprss >= 0 && L->open > 0) ? (double)dprss / (double)L->open : -1;
    long drss = before->rss_kib >= 0 && after->rss_kib >= 0 ? after->rss_kib - before->rss_kib : -1;
    double per = (drss >= 0 && L->open > 0) ? (double)drss / (double)L->open : -1;
    double slab_per = (L->open > 0 && before->slab_kib >= 0 && after->slab_kib >= 0)
                          ? (double)(after->slab_kib - before->slab_kib) / (double)L->open
                          : -1;
    double pp50 = 0, pp99 = 0, pmax = 0;
    if (pushed && L->push_received > 0) {
        qsort(L->push_ms, L->push_received, sizeof(double), cmp_double);
        pp50 = pct(L->push_ms, L->push_received, 50);
        pp99 = pct(L->push_ms, L->push_received, 99);
        pmax = L->push_ms[L->push_received - 1];
    }
    static const char *const mode_names[] = {"ws", "tls-only", "tcp-only"};
    if (L->o.json) {
        json_t *o = json_pack(
            "{s:s, s:I, s:I, s:I, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I}, s:f, s:f, s:f, s:f, s:f, "
            "s:f, s:f, s:I, s:I, s:I, s:f, s:f, s:f, s:I, s:I}",
            "mode", mode_names[L->o.mode], "devices", (json_int_t)L->ndevs, "connected",
            (json_int_t)L->nhs, "failed", (json_int_t)failed, "failures", "connect",
            (json_int_t)L->fails[F_CONNECT], "proxy", (json_int_t)L->fails[F_PROXY], "tls",
            (json_int_t)L->fails[F_TLS], "http", (json_int_t)L->fails[F_HTTP], "timeout",
            (json_int_t)L->fails[F_TIMEOUT], "closed", (json_int_t)L->fails[F_CLOSED], "protocol",
            (json_int_t)L->fails[F_PROTO], "connect_s", t_connect_ms / 1000.0, "sessions_per_s",
            rate, "handshake_p50_ms", pct(L->hs_ms, L->nhs, 50), "handshake_p99_ms",
            pct(L->hs_ms, L->nhs, 99), "hub_cpu_s", hub_cpu, "hub_cpu_us_per_session",
            hub_cpu >= 0 && L->nhs ? hub_cpu * 1e6 / (double)L->nhs : -1.0, "client_cpu_s",
            client_cpu_s, "hub_rss_before_kib", (json_int_t)before->rss_kib,
            "hub_rss_connected_kib", (json_int_t)connected->rss_kib, "hub_rss_after_kib",
            (json_int_t)after->rss_kib, "hub_kib_per_session", per, "idle_s", L->o.idle_s,
            "sys_slab_kib_per_conn", slab_per, "open_after_idle", (json_int_t)L->open,
            "closed_by_hub", (json_int_t)L->closed_by_hub);
        if (o && L->o.nproxy_pids > 0) {
            json_object_set_new(o, "proxy_cpu_s", json_real(proxy_cpu));
            json_object_set_new(o, "proxy_cpu_us_per_session",
                                json_real(proxy_cpu >= 0 ? proxy_cpu * 1e6 / nhs : -1.0));
            json_object_set_new(o, "proxy_kib_per_session", json_real(proxy_per));
        }
        if (o && L->o.db_pid > 0) {
            json_object_set_new(o, "db_cpu_s", json_real(db_cpu));
            json_object_set_new(o, "db_cpu_us_per_session",
                                json_real(db_cpu >= 0 ? db_cpu * 1e6 / nhs : -1.0));
        }
        if (o && L->o.nhub_pids > 1)
            json_object_set_new(o, "hub_nodes", json_integer((json_int_t)L->o.nhub_pids));
        if (o && L->o.twin_get)
            json_object_set_new(o, "twins", json_integer((json_int_t)L->twins));
        if (o && pushed) {
            json_t *p = json_pack(
                "{s:i, s:s, s:f, s:I, s:I, s:f, s:f, s:f, s:f, s:f}", "status",
                j->rc == 0 ? j->status : -1, "answer", j->rc == 0 ? j->resp : j->err, "patch_ms",
                j->t_done - L->push_t0, "expected", (json_int_t)L->push_expected, "received",
                (json_int_t)L->push_received, "p50_ms", pp50, "p99_ms", pp99, "last_ms", pmax,
                "hub_cpu_s", L->push_hub_cpu_s, "client_cpu_s", L->push_client_cpu_s);
            if (p && L->o.nproxy_pids > 0)
                json_object_set_new(p, "proxy_cpu_s", json_real(L->push_proxy_cpu_s));
            if (p && L->o.db_pid > 0)
                json_object_set_new(p, "db_cpu_s", json_real(L->push_db_cpu_s));
            json_object_set_new(o, "push", p);
        }
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (s)
            printf("%s\n", s);
        free(s);
        json_decref(o);
        return;
    }
    printf("mode             %s, %zu devices, concurrency %ld, %zu source address(es)\n",
           mode_names[L->o.mode], L->ndevs, L->o.concurrency,
           L->o.nsources ? L->o.nsources : (size_t)1);
    printf("connected        %zu / %zu   failed %lu", L->nhs, L->ndevs, failed);
    for (int k = 0; k < F_COUNT; k++)
        if (L->fails[k])
            printf("  %s %lu (%s)", fail_names[k], L->fails[k], L->first_err[k]);
    printf("\n");
    printf("connect time     %.3f s   %.0f sessions accepted/s   handshake p50 %.1f ms p99 "
           "%.1f ms\n",
           t_connect_ms / 1000.0, rate, pct(L->hs_ms, L->nhs, 50), pct(L->hs_ms, L->nhs, 99));
    if (hub_cpu >= 0)
        printf("cpu              hub %.2f s (%.0f us per session)   phyload %.2f s\n", hub_cpu,
               L->nhs ? hub_cpu * 1e6 / (double)L->nhs : 0.0, client_cpu_s);
    if (proxy_cpu >= 0)
        printf("proxy            cpu %.2f s (%.0f us per session)   RSS %+.2f KiB per idle "
               "session\n",
               proxy_cpu, proxy_cpu * 1e6 / nhs, proxy_per);
    if (db_cpu >= 0)
        printf("database         cpu %.2f s (%.0f us per session)\n", db_cpu, db_cpu * 1e6 / nhs);
    if (per >= 0)
        printf("hub RSS          before %ld KiB, connected %ld KiB, after %.0f s idle %ld KiB:"
               " %.2f KiB per idle session\n",
               before->rss_kib, connected->rss_kib, L->o.idle_s, after->rss_kib, per);
    if (slab_per >= 0)
        printf("kernel slab      %+.2f KiB per connection (both ends, whole system)\n", slab_per);
    printf("after idle       %zu open, %lu closed by the hub (last code %d), %lu lost, %lu "
           "pings\n",
           L->open, L->closed_by_hub, L->last_close_code, L->lost, L->pings);
    if (L->o.twin_get)
        printf("twin.get         %lu twins received\n", L->twins);
    if (pushed) {
        if (j->rc != 0)
            printf("push             PATCH failed: %s\n", j->err);
        else
            printf("push             PATCH %d %s in %.1f ms\n", j->status, j->resp,
                   j->t_done - L->push_t0);
        printf("push received    %zu / %zu devices   p50 %.1f ms   p99 %.1f ms   last device "
               "%.1f ms\n",
               L->push_received, L->push_expected, pp50, pp99, pmax);
        printf("push cpu         hub %.3f s   phyload %.3f s", L->push_hub_cpu_s,
               L->push_client_cpu_s);
        if (L->o.nproxy_pids > 0)
            printf("   proxy %.3f s", L->push_proxy_cpu_s);
        if (L->o.db_pid > 0)
            printf("   database %.3f s", L->push_db_cpu_s);
        printf("\n");
    }
}

int main(int argc, char **argv)
{
    struct load L;
    struct push_job job;
    struct proc_sample before, connected, after;
    int rc = 1, pushed = 0;
    memset(&L, 0, sizeof(L));
    memset(&job, 0, sizeof(job));
    L.ep = -1;
    signal(SIGPIPE, SIG_IGN);
    if (parse_args(argc, argv, &L.o) < 0)
        return 2;
    if (load_creds(&L) < 0 || setup(&L) < 0)
        goto out;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur != RLIM_INFINITY && L.ndevs + 32 > rl.rlim_cur) {
            fprintf(stderr, "phyload: %zu devices need more descriptors than the limit %llu\n",
                    L.ndevs, (unsigned long long)rl.rlim_cur);
            goto out;
        }
    }
    L.devs = calloc(L.ndevs, sizeof(*L.devs));
    L.hs_ms = calloc(L.ndevs, sizeof(double));
    L.ep = epoll_create1(EPOLL_CLOEXEC);
    if (!L.devs || !L.hs_ms || L.ep < 0)
        goto out;
    for (size_t i = 0; i < L.ndevs; i++)
        L.devs[i].fd = -1;
    if (L.o.push_url && push_prepare(&L, &job) < 0)
        goto out;

    proc_sample(&L.o, &before);
    double cpu0 = cpu_self_s(), t_start = now_ms(), t_end = 0;
    connect_phase(&L, &t_end);
    double client_cpu = cpu_self_s() - cpu0;
    proc_sample(&L.o, &connected);
    run_for(&L, L.o.idle_s);
    proc_sample(&L.o, &after);
    if (L.o.push_url && L.open > 0) {
        struct proc_sample p0, p1;
        double c0 = cpu_self_s();
        proc_sample(&L.o, &p0);
        if (push_phase(&L, &job) < 0)
            goto out;
        proc_sample(&L.o, &p1);
        L.push_client_cpu_s = cpu_self_s() - c0;
        L.push_hub_cpu_s = cpu_delta(p0.cpu_s, p1.cpu_s);
        L.push_proxy_cpu_s = cpu_delta(p0.proxy_cpu_s, p1.proxy_cpu_s);
        L.push_db_cpu_s = cpu_delta(p0.db_cpu_s, p1.db_cpu_s);
        pushed = 1;
    }
    report(&L, t_end - t_start, &before, &connected, &after, client_cpu, &job, pushed);
    fflush(stdout);
    if (L.o.hold_s > 0 && L.o.mode == MODE_POLL) {
        struct proc_sample p0, p1;
        unsigned long n0 = L.polls, o0 = L.polls_other;
        double c0 = cpu_self_s(), t0 = now_ms();
        proc_sample(&L.o, &p0);
        run_for(&L, L.o.hold_s);
        proc_sample(&L.o, &p1);
        double secs = (now_ms() - t0) / 1000.0, n = (double)(L.polls - n0);
        double hub = cpu_delta(p0.cpu_s, p1.cpu_s), px = cpu_delta(p0.proxy_cpu_s, p1.proxy_cpu_s);
        printf("polls            %.0f in %.1f s: %.0f/s on %zu connections, %lu not 202/429; "
               "CPU per poll: hub %.1f us, proxy %.1f us, phyload %.1f us\n",
               n, secs, n / secs, L.open, L.polls_other - o0, hub >= 0 && n > 0 ? hub * 1e6 / n : -1,
               px >= 0 && n > 0 ? px * 1e6 / n : -1, n > 0 ? (cpu_self_s() - c0) * 1e6 / n : -1);
        fflush(stdout);
    } else if (L.o.hold_s > 0) {
        run_for(&L, L.o.hold_s);
    }
    int storm_ok = 1;
    if (L.o.storm_s > 0) {
        storm_phase(&L);
        storm_ok = L.storm_lost > 0 && L.open == L.ndevs;
        double took = L.storm_back ? (L.storm_last_back - L.storm_first_loss) / 1000.0 : -1;
        if (L.o.json)
            printf("{\"storm_lost\":%zu,\"storm_back\":%zu,\"storm_open\":%zu,"
                   "\"storm_s\":%.3f,\"storm_attempts\":%lu,\"storm_failed\":%lu}\n",
                   L.storm_lost, L.storm_back, L.open, took, L.storm_attempts, L.storm_failed);
        else
            printf("storm            %zu lost, %zu back (%zu / %zu open) %.2f s from the first "
                   "loss to the last back; %lu attempts, %lu failed\n",
                   L.storm_lost, L.storm_back, L.open, L.ndevs, took, L.storm_attempts,
                   L.storm_failed);
        printf("tls              %lu full handshakes, %lu resumed; client CPU %.2f s\n", L.full,
               L.resumed, L.storm_cpu_s);
        fflush(stdout);
    }
    rc = (L.nhs == L.ndevs && storm_ok && (!pushed || L.push_received == L.push_expected)) ? 0 : 1;
out:
    if (L.devs)
        for (size_t i = 0; i < L.ndevs; i++)
            dev_release(&L.devs[i]);
    free(L.devs);
    free(L.hs_ms);
    free(L.push_ms);
    if (L.creds)
        OPENSSL_cleanse(L.creds, L.ndevs * sizeof(*L.creds));
    free(L.creds);
    if (L.ep >= 0)
        close(L.ep);
    SSL_CTX_free(L.ctx);
    return rc;
}
