/* Unit tests for the agent's reports: agent/sysinfo.c (fake /proc text, status JSON)
 * and agent/hook.c (UTF-8-safe output, config_status, the hook child process). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "../../agent/hook.h"
#include "../../agent/sysinfo.h"
#include "phy/err.h"

#define MEMINFO                                                                                    \
    "MemTotal:       24684092 kB\n"                                                                \
    "MemFree:         1234567 kB\n"                                                                \
    "MemAvailable:   20000000 kB\n"                                                                \
    "Buffers:          100000 kB\n"                                                                \
    "Cached:          3000000 kB\n"                                                                \
    "SwapTotal:             0 kB\n"

static void test_meminfo(void **state)
{
    (void)state;
    long long total, avail;
    const char *old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 20 kB\nCached: 300 kB\n";
    const char *bad = "MemTotal: lots\nMemAvailable: 5 kB\n";

    assert_int_equal(agent_sysinfo_parse_meminfo(MEMINFO, strlen(MEMINFO), &total, &avail), 0);
    assert_int_equal(total, 24684092);
    assert_int_equal(avail, 20000000);
    /* Kernels before 3.14 have no MemAvailable. */
    assert_int_equal(agent_sysinfo_parse_meminfo(old, strlen(old), &total, &avail), 0);
    assert_int_equal(total, 1000);
    assert_int_equal(avail, 420);
    assert_int_equal(agent_sysinfo_parse_meminfo(bad, strlen(bad), &total, &avail), PHY_EINVAL);
    assert_int_equal(total, -1);
    assert_int_equal(avail, 5);
    assert_int_equal(agent_sysinfo_parse_meminfo("", 0, &total, &avail), PHY_EINVAL);
    /* Only the given length counts: the text need not be NUL-terminated. */
    assert_int_equal(agent_sysinfo_parse_meminfo(MEMINFO, 20, &total, &avail), 0);
    assert_int_equal(total, 2468);
    assert_int_equal(
        agent_sysinfo_parse_meminfo("MemTotal: 99999999999999999999 kB\n", 34, &total, &avail),
        PHY_EINVAL);
}

static void test_loadavg_uptime(void **state)
{
    (void)state;
    double load[3] = {-1, -1, -1}, up = -1;
    const char *la = "0.52 1.58 12.59 1/1234 5678\n";

    assert_int_equal(agent_sysinfo_parse_loadavg(la, strlen(la), load), 0);
    assert_true(load[0] == 0.52 && load[1] == 1.58 && load[2] == 12.59);
    assert_int_equal(agent_sysinfo_parse_loadavg("0.5 0.6\n", 8, load), PHY_EINVAL);
    assert_int_equal(agent_sysinfo_parse_loadavg("0.5 -0.6 1\n", 11, load), PHY_EINVAL);
    assert_int_equal(agent_sysinfo_parse_loadavg("0.5x 0.6 1\n", 11, load), PHY_EINVAL);
    assert_int_equal(agent_sysinfo_parse_loadavg("nan nan nan", 11, load), PHY_EINVAL);
    assert_true(load[0] == 0.52); /* untouched on failure */
    assert_int_equal(agent_sysinfo_parse_uptime("350735.47 234388.90\n", 20, &up), 0);
    assert_true(up > 350735.4 && up < 350735.5);
    assert_int_equal(agent_sysinfo_parse_uptime("", 0, &up), PHY_EINVAL);
    assert_int_equal(agent_sysinfo_parse_uptime("inf 1\n", 6, &up), PHY_EINVAL);
}

static void test_status_json(void **state)
{
    (void)state;
    struct agent_sysinfo si;
    json_t *o, *want;

    agent_sysinfo_init(&si);
    o = agent_sysinfo_json(&si);
    want = json_pack("{s:s, s:s, s:[]}", "agent_version", AGENT_VERSION, "agent_build",
                     PHY_GIT_DESCRIBE, "addresses");
    assert_true(json_equal(o, want)); /* unknown values are left out */
    json_decref(o);
    json_decref(want);

    si.uptime_s = 350735.47;
    si.agent_uptime_s = 61;
    si.load[0] = 0.5234;
    si.load[1] = 1.5;
    si.load[2] = 0;
    si.mem_total_kb = 24684092;
    si.mem_available_kb = 20000000;
    si.disk_total_kb = 1000;
    si.disk_free_kb = 0;
    snprintf(si.addrs[0], sizeof si.addrs[0], "192.0.2.7");
    snprintf(si.addrs[1], sizeof si.addrs[1], "2001:db8::7");
    si.naddrs = 2;
    o = agent_sysinfo_json(&si);
    want = json_pack("{s:I, s:I, s:s, s:s, s:[f,f,f], s:I, s:I, s:I, s:I, s:[s,s]}", "uptime_s",
                     (json_int_t)350735, "agent_uptime_s", (json_int_t)61, "agent_version",
                     AGENT_VERSION, "agent_build", PHY_GIT_DESCRIBE, "load", 0.52, 1.5, 0.0,
                     "mem_total_kb", (json_int_t)24684092, "mem_available_kb", (json_int_t)20000000,
                     "disk_total_kb", (json_int_t)1000, "disk_free_kb", (json_int_t)0, "addresses",
                     "192.0.2.7", "2001:db8::7");
    assert_true(json_equal(o, want));
    json_decref(o);
    json_decref(want);
}

static void test_collect(void **state)
{
    (void)state;
    struct agent_sysinfo si;

    agent_sysinfo_collect(&si, ".", 100, 160);
    assert_int_equal(si.agent_uptime_s, 60);
    assert_true(si.mem_total_kb > 0);
    assert_true(si.disk_total_kb > 0);
    assert_true(si.load[0] >= 0);
    for (size_t i = 0; i < si.naddrs; i++)
        assert_true(strcmp(si.addrs[i], "127.0.0.1") != 0 && strcmp(si.addrs[i], "::1") != 0);
}

static void test_utf8_clean(void **state)
{
    (void)state;
    char out[64];
    int trunc;
    size_t n;

    n = agent_utf8_clean((const unsigned char *)"h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80", 16,
                         out, sizeof out, &trunc);
    assert_int_equal(n, 16);
    assert_false(trunc);
    assert_memory_equal(out, "h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80", 16);
    /* Invalid: lone continuation, overlong, surrogate, > U+10FFFF, 0xFF, cut sequence. */
    n = agent_utf8_clean((const unsigned char *)"a\x80"
                                                "b\xC0\xAF"
                                                "c\xED\xA0\x80"
                                                "d\xF4\x90\x80\x80"
                                                "e\xFF"
                                                "f\xE2\x82",
                         19, out, sizeof out, &trunc);
    assert_false(trunc);
    json_t *s = json_stringn(out, n); /* jansson accepts only valid UTF-8 */
    assert_non_null(s);
    json_decref(s);
    assert_int_equal(out[0], 'a');
    assert_memory_equal(out + 1,
                        "\xEF\xBF\xBD"
                        "b",
                        4);
    assert_memory_equal(out + n - 7, "f\xEF\xBF\xBD\xEF\xBF\xBD", 7);
    /* Truncation never splits a character: 5 bytes of room, "€€" needs 6. */
    n = agent_utf8_clean((const unsigned char *)"\xE2\x82\xAC\xE2\x82\xAC", 6, out, 6, &trunc);
    assert_int_equal(n, 3);
    assert_true(trunc);
    assert_string_equal(out, "\xE2\x82\xAC");
    n = agent_utf8_clean((const unsigned char *)"abc", 3, out, 3, NULL);
    assert_int_equal(n, 2);
    assert_string_equal(out, "ab");
    /* NUL bytes are kept (the JSON string escapes them). */
    n = agent_utf8_clean((const unsigned char *)"a\0b", 3, out, sizeof out, &trunc);
    assert_int_equal(n, 3);
}

static void test_config_status(void **state)
{
    (void)state;
    struct agent_hook_result r;
    char ts[32];
    json_t *p, *want;

    assert_int_equal(agent_rfc3339(0, ts), 0);
    assert_string_equal(ts, "1970-01-01T00:00:00Z");
    assert_int_equal(agent_rfc3339(1795667315, ts), 0);
    assert_string_equal(ts, "2026-11-26T04:28:35Z");

    memset(&r, 0, sizeof r);
    r.exit_code = 3;
    memcpy(r.output, "done\n", 5);
    r.output_len = 5;
    p = agent_config_status_patch(7, &r, 1795667315);
    want = json_pack("{s:{s:I, s:i, s:s, s:s}}", "config_status", "version", (json_int_t)7,
                     "exit_code", 3, "output", "done\n", "applied_at", "2026-11-26T04:28:35Z");
    assert_true(json_equal(p, want));
    json_decref(p);
    json_decref(want);

    r.truncated = 1;
    r.timed_out = 1;
    r.exit_code = 137;
    p = agent_config_status_patch(8, &r, 0);
    assert_true(
        json_is_true(json_object_get(json_object_get(p, "config_status"), "output_truncated")));
    assert_true(json_is_true(json_object_get(json_object_get(p, "config_status"), "timed_out")));
    json_decref(p);

    agent_hook_result_error(&r, "cannot write config.json: No space left on device");
    assert_int_equal(r.exit_code, -1);
    assert_string_equal(r.output, "cannot write config.json: No space left on device");
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs cmd to completion the way the agent's loop does, with a 10 s safety net. */
static void run_hook(const char *cmd, const char *input, int timeout_ms,
                     struct agent_hook_result *r)
{
    struct agent_hook h;
    const char *env[] = {"PHY_CONFIG_VERSION=42", NULL};
    char err[128];
    int64_t give_up = now_ms() + 10000;

    memset(&h, 0, sizeof h);
    assert_int_equal(
        agent_hook_start(&h, cmd, input, strlen(input), env, timeout_ms, now_ms(), err, sizeof err),
        0);
    assert_true(agent_hook_running(&h));
    for (;;) {
        struct pollfd pfd[2];
        int n = agent_hook_pollfds(&h, pfd);

        poll(pfd, (nfds_t)n, agent_hook_timeout_ms(&h, now_ms()));
        if (agent_hook_step(&h, now_ms(), r))
            break;
        assert_true(now_ms() < give_up);
    }
    assert_false(agent_hook_running(&h));
}

static void test_hook_runs(void **state)
{
    (void)state;
    struct agent_hook_result r;

    run_hook("echo out; cat; echo \"v=$PHY_CONFIG_VERSION\" >&2; exit 3", "{\"a\":1}\n", 5000, &r);
    assert_int_equal(r.exit_code, 3);
    assert_false(r.timed_out);
    assert_false(r.truncated);
    assert_string_equal(r.output, "out\n{\"a\":1}\nv=42\n");

    /* A hook that ignores its input and exits at once. */
    run_hook("true", "x", 5000, &r);
    assert_int_equal(r.exit_code, 0);
    assert_int_equal(r.output_len, 0);

    /* Killed by a signal: 128 + signal, like a shell. */
    run_hook("kill -9 $$", "", 5000, &r);
    assert_int_equal(r.exit_code, 137);
    assert_false(r.timed_out);

    /* Output over the limit is cut at 4 KiB and the hook still runs to its end. */
    run_hook("head -c 100000 /dev/zero | tr '\\0' 'x'; echo; exit 0", "", 5000, &r);
    assert_int_equal(r.exit_code, 0);
    assert_true(r.truncated);
    assert_int_equal(r.output_len, AGENT_HOOK_OUTPUT_MAX);

    /* Invalid UTF-8 output becomes valid. */
    run_hook("printf 'ok\\377\\n'", "", 5000, &r);
    assert_string_equal(r.output, "ok\xEF\xBF\xBD\n");
}

static void test_hook_timeout(void **state)
{
    (void)state;
    struct agent_hook_result r;
    int64_t t0 = now_ms();

    /* The whole process group goes, background children included. */
    run_hook("echo started; sleep 30 & sleep 30; echo never", "", 300, &r);
    assert_true(now_ms() - t0 < 5000);
    assert_true(r.timed_out);
    assert_int_equal(r.exit_code, 137);
    assert_string_equal(r.output, "started\n");
}

static void test_hook_abort(void **state)
{
    (void)state;
    struct agent_hook h;
    char err[128];

    memset(&h, 0, sizeof h);
    assert_int_equal(
        agent_hook_start(&h, "sleep 30", "", 0, NULL, 60000, now_ms(), err, sizeof err), 0);
    assert_int_equal(agent_hook_start(&h, "true", "", 0, NULL, 1000, now_ms(), err, sizeof err),
                     PHY_EEXIST);
    agent_hook_abort(&h);
    assert_false(agent_hook_running(&h));
    agent_hook_abort(&h); /* idle: no-op */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_meminfo),     cmocka_unit_test(test_loadavg_uptime),
        cmocka_unit_test(test_status_json), cmocka_unit_test(test_collect),
        cmocka_unit_test(test_utf8_clean),  cmocka_unit_test(test_config_status),
        cmocka_unit_test(test_hook_runs),   cmocka_unit_test(test_hook_timeout),
        cmocka_unit_test(test_hook_abort),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
