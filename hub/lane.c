/* A lane of the hub's own threads (lane.h): a FIFO of items guarded by one mutex,
 * threads that take them in turn, and a uv_async_t that hands the finished ones
 * back to the loop. */
#include "lane.h"

#include <pthread.h>
#include <stdlib.h>

#include "phy/assert.h"

#define LANE_MAX_THREADS 64

struct item {
    struct item *next;
    uv_work_t *req;
    uv_work_cb work;
    uv_after_work_cb done;
};

struct lane {
    uv_async_t async; /* first: the close callback gets the lane from it */
    pthread_mutex_t mu;
    pthread_cond_t ready;
    struct item *head, *tail; /* queued */
    struct item *finished;    /* done, for the loop (any order: reversed below) */
    unsigned inflight;        /* queued + running + finished not yet delivered (loop) */
    int stop;
    int nthreads;
    pthread_t threads[LANE_MAX_THREADS];
};

static void *lane_main(void *arg)
{
    struct lane *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->head && !l->stop)
            pthread_cond_wait(&l->ready, &l->mu);
        if (!l->head)
            break; /* stopping and nothing left */
        struct item *it = l->head;
        l->head = it->next;
        if (!l->head)
            l->tail = NULL;
        pthread_mutex_unlock(&l->mu);
        it->work(it->req);
        pthread_mutex_lock(&l->mu);
        it->next = l->finished;
        l->finished = it;
        uv_async_send(&l->async);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* Loop: runs the done callbacks of the finished items, oldest first. */
static void on_async(uv_async_t *a)
{
    struct lane *l = (struct lane *)a;
    pthread_mutex_lock(&l->mu);
    struct item *it = l->finished, *rev = NULL;
    l->finished = NULL;
    pthread_mutex_unlock(&l->mu);
    while (it) {
        struct item *next = it->next;
        it->next = rev;
        rev = it;
        it = next;
    }
    while (rev) {
        struct item *next = rev->next;
        PHY_ASSERT(l->inflight > 0);
        if (--l->inflight == 0)
            uv_unref((uv_handle_t *)&l->async); /* an idle lane keeps no loop alive */
        rev->done(rev->req, 0);
        free(rev);
        rev = next;
    }
}

struct lane *lane_start(uv_loop_t *loop, int threads)
{
    struct lane *l = calloc(1, sizeof *l);
    if (!l || threads < 1 || threads > LANE_MAX_THREADS)
        goto fail_free;
    if (pthread_mutex_init(&l->mu, NULL) != 0)
        goto fail_free;
    if (pthread_cond_init(&l->ready, NULL) != 0)
        goto fail_mu;
    if (uv_async_init(loop, &l->async, on_async) != 0)
        goto fail_cond;
    uv_unref((uv_handle_t *)&l->async);
    for (; l->nthreads < threads; l->nthreads++) {
        if (pthread_create(&l->threads[l->nthreads], NULL, lane_main, l) != 0) {
            lane_close(l);
            return NULL;
        }
    }
    return l;
fail_cond:
    pthread_cond_destroy(&l->ready);
fail_mu:
    pthread_mutex_destroy(&l->mu);
fail_free:
    free(l);
    return NULL;
}

int lane_queue(struct lane *l, uv_work_t *req, uv_work_cb work, uv_after_work_cb done)
{
    struct item *it = malloc(sizeof *it);
    if (!it)
        return UV_ENOMEM;
    *it = (struct item){NULL, req, work, done};
    if (l->inflight++ == 0)
        uv_ref((uv_handle_t *)&l->async);
    pthread_mutex_lock(&l->mu);
    if (l->tail)
        l->tail->next = it;
    else
        l->head = it;
    l->tail = it;
    pthread_cond_signal(&l->ready);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    struct lane *l = (struct lane *)h;
    pthread_cond_destroy(&l->ready);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

void lane_close(struct lane *l)
{
    if (!l)
        return;
    PHY_ASSERT(l->inflight == 0);
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->ready);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < l->nthreads; i++)
        pthread_join(l->threads[i], NULL);
    uv_close((uv_handle_t *)&l->async, on_closed);
}
