/* hub/lane.c: items run on the lane's threads, their completions on the loop; an idle
 * lane keeps no loop alive; a busy one does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <uv.h>

#include "lane.h"

enum { ITEMS = 200 };

static pthread_t loop_thread;
static atomic_int worked;
static int done_on_loop, done_elsewhere, statuses;

static void work(uv_work_t *req)
{
    (void)req;
    if (pthread_equal(pthread_self(), loop_thread))
        return; /* not counted: it must run off the loop */
    atomic_fetch_add(&worked, 1);
}

static void done(uv_work_t *req, int status)
{
    (void)req;
    statuses += status != 0;
    if (pthread_equal(pthread_self(), loop_thread))
        done_on_loop++;
    else
        done_elsewhere++;
}

static void test_items_run_off_the_loop_and_complete_on_it(void **state)
{
    (void)state;
    uv_loop_t loop;
    static uv_work_t reqs[ITEMS];
    assert_int_equal(uv_loop_init(&loop), 0);
    loop_thread = pthread_self();
    struct lane *l = lane_start(&loop, 3);
    assert_non_null(l);
    /* Idle: the loop has nothing to wait for. */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    for (int i = 0; i < ITEMS; i++)
        assert_int_equal(lane_queue(l, &reqs[i], work, done), 0);
    /* Busy: uv_run returns only once every completion has run. */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(atomic_load(&worked), ITEMS);
    assert_int_equal(done_on_loop, ITEMS);
    assert_int_equal(done_elsewhere, 0);
    assert_int_equal(statuses, 0);
    lane_close(l);
    uv_run(&loop, UV_RUN_DEFAULT); /* the close callback frees it */
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_bad_thread_counts(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_null(lane_start(&loop, 0));
    assert_null(lane_start(&loop, 65));
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_items_run_off_the_loop_and_complete_on_it),
        cmocka_unit_test(test_bad_thread_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
