/* tput: TCP throughput through a tunnel, for bench/proxy.sh (issue 13). Loopback only.
 *
 *   tput sink PORT
 *       accepts connections and discards what they send (a thread each); runs until
 *       killed.
 *   tput send ADDR:PORT SECONDS STREAMS [CONNECT_TARGET IDENT]
 *       STREAMS connections to ADDR:PORT (through a CONNECT proxy when CONNECT_TARGET,
 *       e.g. portal-eu.phystack.com:443, is given: "CONNECT target" with Basic IDENT-i:
 *       and a 200 awaited), each sending as fast as it can for SECONDS; prints
 *       "gbit_per_s=X bytes=N" (all streams together, counted from the first byte sent
 *       to the end of the time).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "phy/base64.h"

#define CHUNK (256 * 1024)
#define STREAMS_MAX 64

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *sink_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char *buf = malloc(CHUNK);
    while (buf && read(fd, buf, CHUNK) > 0) {
    }
    free(buf);
    close(fd);
    return NULL;
}

static int sink(int port)
{
    int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 128) != 0) {
        perror("tput sink");
        return 1;
    }
    for (;;) {
        int c = accept(fd, NULL, NULL);
        pthread_t th;
        if (c < 0)
            continue;
        if (pthread_create(&th, NULL, sink_conn, (void *)(intptr_t)c) == 0)
            pthread_detach(th);
        else
            close(c);
    }
}

struct stream {
    const char *host, *target, *ident;
    int port, index;
    double seconds;
    pthread_barrier_t *ready;
    double *start;
    uint64_t bytes;
    int failed;
};

static int dial(struct stream *s)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
    if (fd < 0 || inet_pton(AF_INET, s->host, &a.sin_addr) != 1 ||
        connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (!s->target)
        return fd;
    char user[128], b64[200], req[512], resp[1024];
    int n = snprintf(user, sizeof user, "%s-%d:", s->ident, s->index);
    if (phy_base64_encode((const unsigned char *)user, (size_t)n, b64, sizeof b64, 0) < 0)
        goto fail;
    n = snprintf(req, sizeof req,
                 "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n",
                 s->target, s->target, b64);
    if (write(fd, req, (size_t)n) != n)
        goto fail;
    size_t got = 0; /* the answer's head, byte by byte: nothing after it is read */
    while (got < sizeof resp - 1) {
        if (read(fd, resp + got, 1) != 1)
            goto fail;
        got++;
        if (got >= 4 && memcmp(resp + got - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    resp[got] = '\0';
    if (strncmp(resp, "HTTP/1.1 200", 12) != 0) {
        fprintf(stderr, "tput: CONNECT refused: %.60s\n", resp);
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return -1;
}

static void *send_stream(void *arg)
{
    struct stream *s = arg;
    char *buf = calloc(1, CHUNK);
    int fd = buf ? dial(s) : -1;
    if (fd < 0)
        s->failed = 1;
    pthread_barrier_wait(s->ready);
    if (fd < 0) {
        free(buf);
        return NULL;
    }
    double end = *s->start + s->seconds;
    while (now_s() < end) {
        ssize_t n = write(fd, buf, CHUNK);
        if (n <= 0) {
            s->failed = errno != EINTR;
            break;
        }
        s->bytes += (uint64_t)n;
    }
    close(fd);
    free(buf);
    return NULL;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && strcmp(argv[1], "sink") == 0)
        return sink(atoi(argv[2]));
    if ((argc != 5 && argc != 7) || strcmp(argv[1], "send") != 0) {
        fprintf(stderr, "usage: tput sink PORT | tput send ADDR:PORT SECONDS STREAMS "
                        "[CONNECT_TARGET IDENT]\n");
        return 2;
    }
    char host[64];
    const char *colon = strrchr(argv[2], ':');
    int nstreams = atoi(argv[4]);
    if (!colon || (size_t)(colon - argv[2]) >= sizeof host || nstreams < 1 ||
        nstreams > STREAMS_MAX) {
        fprintf(stderr, "tput: bad ADDR:PORT or STREAMS\n");
        return 2;
    }
    memcpy(host, argv[2], (size_t)(colon - argv[2]));
    host[colon - argv[2]] = '\0';
    struct stream st[STREAMS_MAX];
    pthread_t th[STREAMS_MAX];
    pthread_barrier_t ready;
    double start = 0;
    pthread_barrier_init(&ready, NULL, (unsigned)nstreams + 1);
    for (int i = 0; i < nstreams; i++) {
        st[i] = (struct stream){.host = host, .port = atoi(colon + 1), .index = i,
                                .seconds = atof(argv[3]), .ready = &ready, .start = &start,
                                .target = argc == 7 ? argv[5] : NULL,
                                .ident = argc == 7 ? argv[6] : NULL};
        pthread_create(&th[i], NULL, send_stream, &st[i]);
    }
    start = now_s(); /* before the barrier: every stream reads it after */
    pthread_barrier_wait(&ready);
    uint64_t total = 0;
    int failed = 0;
    for (int i = 0; i < nstreams; i++) {
        pthread_join(th[i], NULL);
        total += st[i].bytes;
        failed |= st[i].failed;
    }
    double took = now_s() - start;
    printf("gbit_per_s=%.2f bytes=%llu\n", (double)total * 8 / took / 1e9,
           (unsigned long long)total);
    return failed ? 1 : 0;
}
