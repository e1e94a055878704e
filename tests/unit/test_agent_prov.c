/* Unit tests for agent/prov.c (answer classification, state JSON) and agent/state.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

#include "../../agent/prov.h"
#include "../../agent/state.h"
#include "phy/err.h"

#define TOKEN "h4477iFbDR2VrEMc9s_VjpkuT-BVfHGmlO8EvpGsF28"
#define ISSUED                                                                                     \
    "{\"status\":\"provisioned\",\"device_id\":\"dev_efto45jw5z6eemwasft7hmb5la\","                \
    "\"device_secret\":\"K9jcWT16pj9fdIIRje9f-ADpOntW3ATOpsdVzUUh9VQ\",\"tenant\":\"acme\","       \
    "\"region\":\"au\",\"endpoint\":\"portal-au.phystack.com:443\"}"

static void reg(int status, const char *body, struct agent_prov_result *r)
{
    agent_prov_parse_register(status, body, body != NULL ? strlen(body) : 0, r);
}

static void code(int status, const char *body, struct agent_prov_result *r)
{
    agent_prov_parse_code(status, body, body != NULL ? strlen(body) : 0, r);
}

static void poll_(int status, const char *body, struct agent_prov_result *r)
{
    agent_prov_parse_poll(status, body, body != NULL ? strlen(body) : 0, "SN1", r);
}

static void test_register(void **state)
{
    struct agent_prov_result r;

    (void)state;
    reg(201, "{\"poll_token\":\"" TOKEN "\",\"interval\":5}", &r);
    assert_int_equal(r.outcome, AGENT_PROV_OK);
    assert_string_equal(r.poll_token, TOKEN);
    assert_int_equal(r.interval, 5);
    reg(201, "{\"poll_token\":\"bad token\"}", &r);
    assert_int_equal(r.outcome, AGENT_PROV_RETRY);
    reg(201, "{\"poll_token\":42}", &r);
    assert_int_equal(r.outcome, AGENT_PROV_RETRY);
    reg(201, "not json", &r);
    assert_int_equal(r.outcome, AGENT_PROV_RETRY);
    reg(201, NULL, &r);
    assert_int_equal(r.outcome, AGENT_PROV_RETRY);
    reg(410, "{\"error\":\"already_provisioned\",\"message\":\"x\"}", &r);
    assert_int_equal(r.outcome, AGENT_PROV_ALREADY_PROVISIONED);
    assert_string_equal(r.error, "already_provisioned");
    reg(429, "{\"error\":\"too_many_registrations\"}", &r);
    assert_int_equal(r.outcome, AGENT_PROV_RATE_LIMITED);
    reg(503, "<html>", &r);
    assert_int_equal(r.outcome, AGENT_PROV_RETRY);
    assert_string_equal(r.error, "");
    reg(401, "{\"error\":\"invalid_poll_token\"}", &r);
    assert_int_equal(r.outcome, AGENT_PROV_RETRY);
}

static void test_code(void **state)
{
    struct agent_prov_result r;

    (void)state;
    code(201, "{\"code\":\"K7M2QX\",\"expires_in\":300}", &r);
    assert_int_equal(r.outcome, AGENT_PROV_OK);
    assert_string_equal(r.code, "K7M2QX");
    assert_int_equal(r.expires_in, 300);
    code(201, "{\"code\":\"k7m2qx\"}", &r); /* normalized */
    assert_int_equal(r.outcome, AGENT_PROV_OK);
    assert_string_equal(r.code, "K7M2QX");
    assert_int_equal(r.expires_in, 0);
    code(201, "{\"code\":\"K7M2Q0\"}", &r); /* 0 is not in the alphabet */
    assert_int_equal(r.outcome, AGENT_PROV_RETRY);
    code(201, "{\"code\":\"K7M2QX\\n\"}", &r);
    assert_int_equal(r.outcome, AGENT_PROV_RETRY);
    code(401, "{\"error\":\"invalid_poll_token\"}", &r);
    assert_int_equal(r.outcome, AGENT_PROV_INVALID_TOKEN);
    code(404, "{\"error\":\"unknown_serial\"}", &r);
    assert_int_equal(r.outcome, AGENT_PROV_UNKNOWN_SERIAL);
    code(404, "{\"error\":\"not_found\"}", &r);
    assert_int_equal(r.outcome, AGENT_PROV_RETRY);
    code(410, "{\"error\":\"already_provisioned\"}", &r);
    assert_int_equal(r.outcome, AGENT_PROV_ALREADY_PROVISIONED);
}

static void test_poll(void **state)
{
    struct agent_prov_result r;

    (void)state;
    poll_(202, "{\"status\":\"authorization_pending\",\"interval\":7}", &r);
    assert_int_equal(r.outcome, AGENT_PROV_PENDING);
    assert_int_equal(r.interval, 7);
    poll_(202, "{\"interval\":99999}", &r);
    assert_int_equal(r.interval, AGENT_INTERVAL_MAX);
    poll_(202, "{\"interval\":0}", &r);
    assert_int_equal(r.interval, 1);
    poll_(202, NULL, &r);
    assert_int_equal(r.outcome, AGENT_PROV_PENDING);
    assert_int_equal(r.interval, 0);
    poll_(429, "{\"error\":\"slow_down\",\"interval\":10}", &r);
    assert_int_equal(r.outcome, AGENT_PROV_SLOW_DOWN);
    assert_int_equal(r.interval, 10);
    poll_(429, "{\"error\":\"rate_limited\"}", &r);
    assert_int_equal(r.outcome, AGENT_PROV_RATE_LIMITED);
    poll_(401, "{\"error\":\"invalid_poll_token\"}", &r);
    assert_int_equal(r.outcome, AGENT_PROV_INVALID_TOKEN);
    poll_(410, "{\"error\":\"already_provisioned\"}", &r);
    assert_int_equal(r.outcome, AGENT_PROV_ALREADY_PROVISIONED);
    poll_(500, "{\"error\":\"internal\"}", &r);
    assert_int_equal(r.outcome, AGENT_PROV_RETRY);
    poll_(400, "{\"error\":\"bad_request\"}", &r);
    assert_int_equal(r.outcome, AGENT_PROV_RETRY);
}

static void test_poll_provisioned(void **state)
{
    struct agent_prov_result r;

    (void)state;
    poll_(200, ISSUED, &r);
    assert_int_equal(r.outcome, AGENT_PROV_PROVISIONED);
    assert_string_equal(r.creds.device_id, "dev_efto45jw5z6eemwasft7hmb5la");
    assert_string_equal(r.creds.device_secret, "K9jcWT16pj9fdIIRje9f-ADpOntW3ATOpsdVzUUh9VQ");
    assert_string_equal(r.creds.tenant, "acme");
    assert_string_equal(r.creds.region, "au");
    assert_string_equal(r.creds.endpoint, "portal-au.phystack.com:443");
    assert_string_equal(r.creds.serial, "SN1");
}

static void test_poll_provisioned_rejects_bad_fields(void **state)
{
    static const char *const bad[] = {
        "{\"device_id\":\"dev_a\",\"device_secret\":\"s\",\"tenant\":\"t\",\"region\":\"eu\"}",
        "{\"device_id\":\"xyz_a\",\"device_secret\":\"s\",\"tenant\":\"t\",\"region\":\"eu\","
        "\"endpoint\":\"h:443\"}",
        "{\"device_id\":\"dev_\",\"device_secret\":\"s\",\"tenant\":\"t\",\"region\":\"eu\","
        "\"endpoint\":\"h:443\"}",
        "{\"device_id\":\"dev_a b\",\"device_secret\":\"s\",\"tenant\":\"t\",\"region\":\"eu\","
        "\"endpoint\":\"h:443\"}",
        "{\"device_id\":\"dev_a\",\"device_secret\":7,\"tenant\":\"t\",\"region\":\"eu\","
        "\"endpoint\":\"h:443\"}",
        "{\"device_id\":\"dev_a\",\"device_secret\":\"\",\"tenant\":\"t\",\"region\":\"eu\","
        "\"endpoint\":\"h:443\"}",
        "{\"device_id\":\"dev_a\",\"device_secret\":\"s\",\"tenant\":\"t\",\"region\":\"e u\","
        "\"endpoint\":\"h:443\"}",
        "{\"device_id\":\"dev_a\",\"device_secret\":\"s\",\"tenant\":\"t\",\"region\":\"eu\","
        "\"endpoint\":\"h:99999\"}",
        "{\"device_id\":\"dev_a\",\"device_secret\":\"s\",\"tenant\":\"t\",\"region\":\"eu\","
        "\"endpoint\":\"h:443\",\"status\":\"authorization_pending\"}",
        "{\"device_id\":\"dev_a\",\"device_id\":\"dev_b\",\"device_secret\":\"s\","
        "\"tenant\":\"t\",\"region\":\"eu\",\"endpoint\":\"h:443\"}",
        "[]",
    };
    struct agent_prov_result r;

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        poll_(200, bad[i], &r);
        assert_int_equal(r.outcome, AGENT_PROV_RETRY);
        assert_string_equal(r.creds.device_secret, "");
    }
}

static void test_creds_round_trip(void **state)
{
    struct agent_prov_result r;
    struct agent_creds c;
    char *json;

    (void)state;
    poll_(200, ISSUED, &r);
    json = agent_prov_creds_json(&r.creds);
    assert_non_null(json);
    assert_non_null(strstr(json, "\"serial\":\"SN1\""));
    assert_null(strstr(json, "status"));
    assert_int_equal(agent_prov_creds_parse(json, strlen(json), &c), 0);
    assert_memory_equal(&c, &r.creds, sizeof c);
    free(json);
    assert_int_equal(agent_prov_creds_parse("{}", 2, &c), PHY_EINVAL);
    assert_int_equal(agent_prov_creds_parse("{", 1, &c), PHY_EINVAL);
}

static void test_registration_json(void **state)
{
    char token[AGENT_POLL_TOKEN_MAX + 1];
    char *json = agent_prov_registration_json("SN1", TOKEN);

    (void)state;
    assert_non_null(json);
    assert_int_equal(agent_prov_registration_parse(json, strlen(json), "SN1", token), 0);
    assert_string_equal(token, TOKEN);
    assert_int_equal(agent_prov_registration_parse(json, strlen(json), "SN2", token), PHY_EINVAL);
    assert_string_equal(token, "");
    free(json);
    json = agent_prov_registration_json("SN1", "no spaces allowed");
    assert_int_equal(agent_prov_registration_parse(json, strlen(json), "SN1", token), PHY_EINVAL);
    free(json);
    assert_true(agent_prov_token_valid(TOKEN));
    assert_false(agent_prov_token_valid(""));
    assert_false(agent_prov_token_valid("a/b"));
}

static void test_bodies(void **state)
{
    char *b = agent_prov_register_body("SN\"1");
    (void)state;
    assert_string_equal(b, "{\"serial\":\"SN\\\"1\"}");
    free(b);
    b = agent_prov_token_body("SN1", TOKEN);
    assert_string_equal(b, "{\"serial\":\"SN1\",\"poll_token\":\"" TOKEN "\"}");
    free(b);
}

static void test_state_files(void **state)
{
    char dir[64];
    char err[256], *text = NULL;
    size_t n = 0;
    struct stat st;
    time_t mtime;
    int lock, lock2;

    (void)state;
    assert_non_null(test_tmp_template(dir, sizeof dir, "phy-test-agent-"));
    assert_non_null(mkdtemp(dir));
    assert_int_equal(chmod(dir, 0755), 0); /* an older agent's directory */
    lock = agent_state_open(dir, 0700, err, sizeof err);
    assert_true(lock >= 0);
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0711); /* narrowed: no listing, search stays */
    lock2 = agent_state_open(dir, 0700, err, sizeof err); /* a second agent is refused */
    assert_int_equal(lock2, PHY_EEXIST);

    assert_int_equal(agent_state_read(dir, "nope", 100, &text, &n), PHY_ENOTFOUND);
    assert_int_equal(agent_state_write(dir, "f.json", "hello", 5, 0600, err, sizeof err), 0);
    assert_int_equal(agent_state_read(dir, "f.json", 100, &text, &n), 0);
    assert_int_equal(n, 5);
    assert_string_equal(text, "hello");
    free(text);
    assert_int_equal(agent_state_read(dir, "f.json", 4, &text, &n), PHY_ETOOBIG);
    assert_int_equal(agent_state_mtime(dir, "f.json", &mtime), 0);

    /* mode is exact whatever the umask; the temp file is gone */
    assert_int_equal(agent_state_write(dir, "f.json", "bye", 3, 0600, err, sizeof err), 0);
    {
        char path[512];
        snprintf(path, sizeof path, "%s/f.json", dir);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        snprintf(path, sizeof path, "%s/.f.json.tmp", dir);
        assert_int_not_equal(stat(path, &st), 0);
    }
    assert_int_equal(agent_state_write(dir, "c", "X\n", 2, 0644, err, sizeof err), 0);
    assert_int_equal(agent_state_remove(dir, "f.json"), 0);
    assert_int_equal(agent_state_remove(dir, "f.json"), 0); /* absent is fine */
    assert_int_equal(agent_state_remove(dir, "c"), 0);
    close(lock);
    assert_int_equal(agent_state_remove(dir, AGENT_STATE_LOCK), 0);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register),
        cmocka_unit_test(test_code),
        cmocka_unit_test(test_poll),
        cmocka_unit_test(test_poll_provisioned),
        cmocka_unit_test(test_poll_provisioned_rejects_bad_fields),
        cmocka_unit_test(test_creds_round_trip),
        cmocka_unit_test(test_registration_json),
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_state_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
