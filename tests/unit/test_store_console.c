/* Unit tests of the SQLite store's console operations: users for login, the login
 * throttle, sessions, the audit log and status history (docs/protocol.md section 4). */

/* struct fx's own fields here: tenant ids; acme's alice and bob, beta's eve. */
#define TEST_STORE_FX_EXTRA                                                                        \
    int64_t acme, beta;                                                                            \
    int64_t alice, bob, eve;
#include "teststore.h"

#define IDLE_MS (1800LL * 1000)
#define MAX_MS (43200LL * 1000)
#define WEEK_MS (7LL * 24 * 3600 * 1000)

/* ---- values ---- */

struct csrf {
    char s[STORE_CSRF_LEN + 1];
};

/* 43 base64url characters. */
static struct csrf CSRF(unsigned i) {
    struct csrf x;
    snprintf(x.s, sizeof x.s, "Cs_rf-%037u", i);
    return x;
}

/* ---- fixture ---- */

static int64_t
user_id_of(struct fx *f, const char *tenant, const char *user, int64_t *tenant_id)
{
    char pw[512], region[16];
    int64_t uid = -1;
    int out = -1;
    assert_int_equal(ops->user_get(f->s, tenant, user, tenant_id, &uid, pw, region, &out), 0);
    assert_int_equal(out, STORE_OK);
    return uid;
}

static void add_user(struct fx *f, const char *tenant, const char *user, const char *pw_hash)
{
    int out = -1;
    assert_int_equal(ops->user_add(f->s, tenant, user, pw_hash, &out), 0);
    assert_int_equal(out, STORE_OK);
}

/* Tenants acme (eu: alice, bob) and beta (us-east: eve, and an alice of its own). */
static void populate(struct fx *f)
{
    int out = -1;
    assert_int_equal(ops->tenant_add(f->s, "acme", "eu", &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(ops->tenant_add(f->s, "beta", "us-east", &out), 0);
    assert_int_equal(out, STORE_OK);
    add_user(f, "acme", "alice", "$argon2id$v=19$m=65536,t=3,p=1$alice");
    add_user(f, "acme", "bob", "$argon2id$v=19$m=65536,t=3,p=1$bob");
    add_user(f, "beta", "eve", "$argon2id$v=19$m=65536,t=3,p=1$eve");
    add_user(f, "beta", "alice", "$argon2id$v=19$m=65536,t=3,p=1$beta-alice");
    f->alice = user_id_of(f, "acme", "alice", &f->acme);
    f->bob = user_id_of(f, "acme", "bob", NULL);
    f->eve = user_id_of(f, "beta", "eve", &f->beta);
}

static int setup_empty(void **state)
{
    fx_new(state, "phy_test_console_", NULL);
    return 0;
}

static int setup(void **state)
{
    setup_empty(state);
    fx_open(*state);
    populate(*state);
    return 0;
}

/* ---- wrappers ---- */

/* Provisioned devices ID(first) .. ID(first + n - 1) of a tenant. */
static void add_devices(struct fx *f, const char *tenant, unsigned first, unsigned n)
{
    struct store_new_device d[8];
    struct id ids[8];
    char serials[8][24];
    struct hash sh = H(0x5ec);
    int out = -1;
    assert_true(n <= 8);
    for (unsigned i = 0; i < n; i++) {
        ids[i] = ID(first + i);
        snprintf(serials[i], sizeof serials[i], "SN-%u", first + i);
        d[i] = (struct store_new_device){ids[i].s, serials[i], sh.h, "{}"};
    }
    assert_int_equal(ops->devices_add_bulk(f->s, tenant, d, n, T0, &out), 0);
    assert_int_equal(out, STORE_OK);
}

static int login_begin(struct fx *f, const char *tenant, const char *user, int64_t now,
                       int64_t since, int64_t *attempt)
{
    int allowed = -1;
    int64_t id = -1;
    assert_int_equal(ops->login_attempt_begin(f->s, tenant, user, now, since, 3, 5, &allowed, &id),
                     0);
    if (attempt)
        *attempt = id;
    if (allowed)
        assert_true(id > 0);
    return allowed;
}

/* console_session_auth with the default limits; *out (optional) gets the session. */
static int auth(struct fx *f, unsigned h, int64_t now, struct store_session *out)
{
    struct store_session sess;
    struct hash hh = H(h);
    int outcome = -1;
    assert_int_equal(ops->console_session_auth(f->s, hh.h, now, IDLE_MS, MAX_MS, 1, &sess, &outcome),
                     0);
    if (outcome != STORE_OK) {
        assert_int_equal(outcome, STORE_NOT_FOUND);
        assert_int_equal(sess.tenant_id, 0);
        assert_string_equal(sess.csrf, "");
    }
    if (out)
        *out = sess;
    return outcome;
}

static void create_session(struct fx *f, unsigned h, int64_t tenant, int64_t user, int64_t now)
{
    struct hash hh = H(h);
    struct csrf c = CSRF(h);
    assert_int_equal(ops->console_session_create(f->s, hh.h, tenant, user, c.s, now), 0);
}

/* last_used_ms of session h as stored. */
static int64_t stored_last_used(struct fx *f, unsigned h)
{
    char sql[160];
    struct hash hh = H(h);
    snprintf(sql, sizeof sql, "SELECT last_used_ms FROM console_sessions WHERE id_hash = '%s'",
             hh.h);
    return raw_int(f->path, sql);
}

static void audit(struct fx *f, int64_t tenant, int64_t user, int64_t at, const char *action,
                  const char *device_id, const char *detail)
{
    assert_int_equal(ops->audit_add(f->s, tenant, user, at, action, device_id, detail), 0);
}

/* Lists a tenant's audit as "id:actor:action:device:detail " (device "-" when none,
 * detail "-" when NULL) into buf; returns the number of records. */
static size_t audit_str(struct fx *f, int64_t tenant, int64_t before, int limit, char *buf,
                        size_t cap)
{
    struct store_audit *a = NULL;
    size_t n = 99, len = 0;
    assert_int_equal(ops->audit_list(f->s, tenant, before, limit, &a, &n), 0);
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        int w =
            snprintf(buf + len, cap - len, "%s%lld:%s:%s:%s:%s", i ? " " : "", (long long)a[i].id,
                     a[i].actor, a[i].action, a[i].device_id[0] ? a[i].device_id + 29 : "-",
                     a[i].detail_json ? a[i].detail_json : "-");
        assert_true(w > 0 && (size_t)w < cap - len);
        len += (size_t)w;
        if (i > 0)
            assert_true(a[i].id < a[i - 1].id);
    }
    store_audit_free(a, n);
    return n;
}

static void status(struct fx *f, unsigned dev, int64_t at, int n)
{
    char json[48];
    struct id id = ID(dev);
    snprintf(json, sizeof json, "{\"n\":%d}", n);
    assert_int_equal(ops->status_put(f->s, id.s, json, at), 0);
}

/* status_history as "at-offset:n ..." (at relative to T0, n from {"n":N}); returns
 * the outcome. */
static int history_str(struct fx *f, int64_t tenant, unsigned dev, int limit, char *buf, size_t cap)
{
    struct store_status_report *r = NULL;
    struct id id = ID(dev);
    size_t n = 99, len = 0;
    int outcome = -1;
    assert_int_equal(ops->status_history(f->s, tenant, id.s, limit, &r, &n, &outcome), 0);
    buf[0] = '\0';
    if (outcome != STORE_OK) {
        assert_null(r);
        assert_int_equal(n, 0);
        return outcome;
    }
    for (size_t i = 0; i < n; i++) {
        int v = -1;
        assert_int_equal(sscanf(r[i].status_json, "{\"n\":%d}", &v), 1);
        int w = snprintf(buf + len, cap - len, "%s%lld:%d", i ? " " : "",
                         (long long)(r[i].at_ms - T0), v);
        assert_true(w > 0 && (size_t)w < cap - len);
        len += (size_t)w;
    }
    store_status_reports_free(r, n);
    return outcome;
}

static int64_t history_rows(struct fx *f)
{
    return raw_int(f->path, "SELECT count(*) FROM status_history");
}

/* ---- users ---- */

static void test_user_get(void **state)
{
    struct fx *f = *state;
    char pw[512], region[16];
    int64_t tid = -1, uid = -1;
    int out = -1;

    assert_int_equal(ops->user_get(f->s, "beta", "alice", &tid, &uid, pw, region, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(tid, f->beta);
    assert_int_equal(uid, raw_int(f->path, "SELECT u.id FROM users u JOIN tenants t ON"
                                           " t.id = u.tenant_id WHERE t.name = 'beta' AND"
                                           " u.name = 'alice'"));
    assert_true(uid != f->alice);
    assert_string_equal(pw, "$argon2id$v=19$m=65536,t=3,p=1$beta-alice");
    assert_string_equal(region, "us-east");
    assert_true(f->acme != f->beta && f->alice != f->bob);

    assert_int_equal(ops->user_get(f->s, "acme", "bob", &tid, &uid, pw, region, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(tid, f->acme);
    assert_int_equal(uid, f->bob);
    assert_string_equal(pw, "$argon2id$v=19$m=65536,t=3,p=1$bob");
    assert_string_equal(region, "eu");

    /* Unknown tenant, unknown user, a user of another tenant. */
    out = -1;
    assert_int_equal(ops->user_get(f->s, "gamma", "alice", &tid, &uid, pw, region, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    out = -1;
    assert_int_equal(ops->user_get(f->s, "acme", "mallory", &tid, &uid, pw, region, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);
    out = -1;
    assert_int_equal(ops->user_get(f->s, "acme", "eve", &tid, &uid, pw, region, &out), 0);
    assert_int_equal(out, STORE_NOT_FOUND);

    /* The longest hash user_add takes comes back whole; a longer one is refused. */
    char big[513];
    memset(big, 'h', sizeof big - 1);
    big[512] = '\0';
    assert_int_equal(ops->user_add(f->s, "acme", "long", big, &out), PHY_EINVAL);
    big[511] = '\0';
    add_user(f, "acme", "long", big);
    assert_int_equal(ops->user_get(f->s, "acme", "long", NULL, NULL, pw, region, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_string_equal(pw, big);

    char name[STORE_NAME_MAX + 2];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    assert_int_equal(ops->user_get(f->s, name, "bob", &tid, &uid, pw, region, &out), PHY_EINVAL);
    assert_int_equal(ops->user_get(f->s, "acme", name, &tid, &uid, pw, region, &out), PHY_EINVAL);
    assert_int_equal(ops->user_get(f->s, "acme", "", &tid, &uid, pw, region, &out), PHY_EINVAL);
    assert_int_equal(ops->user_get(f->s, NULL, "bob", &tid, &uid, pw, region, &out), PHY_EINVAL);
    assert_int_equal(ops->user_get(f->s, "acme", "bob", &tid, &uid, NULL, region, &out),
                     PHY_EINVAL);
    assert_int_equal(ops->user_get(f->s, "acme", "bob", &tid, &uid, pw, region, NULL), PHY_EINVAL);
}

/* ---- login throttle ---- */

static void test_login_throttle_limits(void **state)
{
    struct fx *f = *state;
    int64_t t = T0;

    /* 3 per (tenant, user): alice's fourth is refused, even for the right password. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(login_begin(f, "acme", "alice", t++, T0, NULL), 1);
    assert_int_equal(login_begin(f, "acme", "alice", t++, T0, NULL), 0);
    /* A refusal records nothing. */
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM login_failures"), 3);
    /* 5 per tenant, counting failures at its users only: made-up names ("nobody")
     * lock no real user out, though each counts for its own name. */
    assert_int_equal(login_begin(f, "acme", "bob", t++, T0, NULL), 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(login_begin(f, "acme", "nobody", t++, T0, NULL), 1);
    assert_int_equal(login_begin(f, "acme", "nobody", t++, T0, NULL), 0);
    assert_int_equal(login_begin(f, "acme", "bob", t++, T0, NULL), 1); /* 5 of users */
    assert_int_equal(login_begin(f, "acme", "bob", t++, T0, NULL), 0);
    assert_int_equal(login_begin(f, "acme", "carol", t++, T0, NULL), 0);
    /* Other tenants (and names that exist nowhere) have their own counts. */
    assert_int_equal(login_begin(f, "beta", "alice", t++, T0, NULL), 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(login_begin(f, "ghost", "x", t++, T0, NULL), 1);
    assert_int_equal(login_begin(f, "ghost", "x", t++, T0, NULL), 0);
    assert_int_equal(login_begin(f, "ghost", "y", t++, T0, NULL), 1);
    /* Names compare exactly; a tenant without users has no tenant-wide count. */
    assert_int_equal(login_begin(f, "ghost", "X", t++, T0, NULL), 1);
    assert_int_equal(login_begin(f, "ghost", "Y", t++, T0, NULL), 1);
    /* The claim throttle is a different table. */
    int allowed = -1;
    int64_t id = -1;
    assert_int_equal(ops->claim_attempt_begin(f->s, f->acme, f->alice, t, T0, 1, 1, &allowed, &id),
                     0);
    assert_int_equal(allowed, 1);
    assert_int_equal(ops->claim_attempt_begin(f->s, f->acme, f->bob, t, T0, 1, 1, &allowed, &id),
                     0);
    assert_int_equal(allowed, 0);

    int64_t attempt = 0;
    char name[STORE_NAME_MAX + 2];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    allowed = -1;
    assert_int_equal(ops->login_attempt_begin(f->s, name, "a", t, T0, 3, 5, &allowed, &attempt),
                     PHY_EINVAL);
    assert_int_equal(allowed, 0);
    assert_int_equal(ops->login_attempt_begin(f->s, "acme", name, t, T0, 3, 5, &allowed, &attempt),
                     PHY_EINVAL);
    assert_int_equal(ops->login_attempt_begin(f->s, "", "a", t, T0, 3, 5, &allowed, &attempt),
                     PHY_EINVAL);
    assert_int_equal(ops->login_attempt_begin(f->s, "acme", NULL, t, T0, 3, 5, &allowed, &attempt),
                     PHY_EINVAL);
    assert_int_equal(ops->login_attempt_begin(f->s, "acme", "a", t, T0, 3, 5, NULL, &attempt),
                     PHY_EINVAL);
    assert_int_equal(ops->login_attempt_begin(f->s, "acme", "a", t, T0, 3, 5, &allowed, NULL),
                     PHY_EINVAL);
}

static void test_login_forgive_and_window(void **state)
{
    struct fx *f = *state;
    int64_t a1 = 0, a2 = 0, a3 = 0;

    /* A login that succeeded is forgiven: it does not count. */
    assert_int_equal(login_begin(f, "acme", "alice", T0, T0, &a1), 1);
    assert_int_equal(login_begin(f, "acme", "alice", T0 + 1, T0, &a2), 1);
    assert_int_equal(login_begin(f, "acme", "alice", T0 + 2, T0, &a3), 1);
    assert_true(a1 != a2 && a2 != a3);
    assert_int_equal(login_begin(f, "acme", "alice", T0 + 3, T0, NULL), 0);
    assert_int_equal(ops->login_attempt_forgive(f->s, a2), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM login_failures"), 2);
    int64_t a4 = 0;
    assert_int_equal(login_begin(f, "acme", "alice", T0 + 4, T0, &a4), 1);
    assert_int_equal(login_begin(f, "acme", "alice", T0 + 5, T0, NULL), 0);
    /* Forgiving twice or an unknown attempt is harmless; the others stay. */
    assert_int_equal(ops->login_attempt_forgive(f->s, a2), 0);
    assert_int_equal(ops->login_attempt_forgive(f->s, 999999), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM login_failures"), 3);
    /* Forgiving a claim attempt leaves login failures alone. */
    int allowed = 0;
    int64_t claim_id = 0, claim_kept = 0;
    assert_int_equal(
        ops->claim_attempt_begin(f->s, f->acme, f->alice, T0, T0, 10, 10, &allowed, &claim_id), 0);
    assert_int_equal(allowed, 1);
    assert_int_equal(ops->claim_attempt_begin(f->s, f->acme, f->alice, T0 + 1, T0, 10, 10, &allowed,
                                              &claim_kept),
                     0);
    assert_int_equal(allowed, 1);
    assert_int_equal(ops->claim_attempt_forgive(f->s, claim_id), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM login_failures"), 3);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM claim_failures"), 1);

    /* The window: failures before since_ms do not count. a1 is at T0, a3 at T0 + 2,
     * a4 at T0 + 4. */
    assert_int_equal(login_begin(f, "acme", "alice", T0 + 10, T0 + 3, NULL), 1);
    assert_int_equal(login_begin(f, "acme", "alice", T0 + 11, T0 + 3, NULL), 1);
    assert_int_equal(login_begin(f, "acme", "alice", T0 + 12, T0 + 3, NULL), 0);
    assert_int_equal(login_begin(f, "acme", "alice", T0 + 13, T0 + 5, NULL), 1);

    /* sweep drops failures older than keep_failures_ms, login and claim alike. */
    f->p.now_ms = T0 + 100;
    assert_int_equal(ops->sweep(f->s, &f->p, 100 - 4), 0); /* keeps at_ms >= T0 + 4 */
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM login_failures"), 4);
    assert_int_equal(raw_int(f->path, "SELECT min(at_ms) - "
                                      "1700000000000 FROM login_failures"),
                     4);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM claim_failures"), 0);
    assert_int_equal(ops->login_attempt_forgive(NULL, a4), PHY_EINVAL);
}

struct login_racer {
    struct fx *f;
    int allowed, rc;
};

static void *race_login(void *arg)
{
    struct login_racer *r = arg;
    int64_t id = 0;
    r->rc = ops->login_attempt_begin(r->f->s, "acme", "alice", T0, T0, 5, 50, &r->allowed, &id);
    return NULL;
}

/* Concurrent guesses cannot overshoot: each attempt counts from its start. */
static void test_login_throttle_race(void **state)
{
    struct fx *f = *state;
    struct login_racer r[12];
    pthread_t th[12];
    int allowed = 0;
    for (int i = 0; i < 12; i++) {
        r[i] = (struct login_racer){.f = f, .allowed = -1, .rc = -1};
        assert_int_equal(pthread_create(&th[i], NULL, race_login, &r[i]), 0);
    }
    for (int i = 0; i < 12; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(r[i].rc, 0);
        allowed += r[i].allowed;
    }
    assert_int_equal(allowed, 5);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM login_failures"), 5);
}

/* ---- sessions ---- */

static void test_session_create_auth(void **state)
{
    struct fx *f = *state;
    struct store_session s;
    struct hash h1 = H(1);
    struct csrf c1 = CSRF(1);

    create_session(f, 1, f->acme, f->alice, T0);
    create_session(f, 2, f->beta, f->eve, T0 + 7);
    assert_int_equal(auth(f, 1, T0 + 1000, &s), STORE_OK);
    assert_int_equal(s.tenant_id, f->acme);
    assert_int_equal(s.user_id, f->alice);
    assert_string_equal(s.tenant, "acme");
    assert_string_equal(s.user, "alice");
    assert_string_equal(s.region, "eu");
    assert_string_equal(s.csrf, c1.s);
    assert_int_equal(strlen(s.csrf), STORE_CSRF_LEN);
    assert_int_equal(s.created_ms, T0);
    assert_int_equal(s.last_used_ms, T0);

    assert_int_equal(auth(f, 2, T0 + 1000, &s), STORE_OK);
    assert_string_equal(s.tenant, "beta");
    assert_string_equal(s.user, "eve");
    assert_string_equal(s.region, "us-east");
    assert_string_equal(s.csrf, CSRF(2).s);
    assert_int_equal(s.created_ms, T0 + 7);

    /* Unknown, or a taken hash; a user must be of that tenant. */
    assert_int_equal(auth(f, 3, T0 + 1000, NULL), STORE_NOT_FOUND);
    assert_int_equal(ops->console_session_create(f->s, h1.h, f->acme, f->bob, c1.s, T0),
                     PHY_EEXIST);
    struct hash h3 = H(3);
    assert_int_equal(ops->console_session_create(f->s, h3.h, f->acme, f->eve, c1.s, T0),
                     PHY_ENOTFOUND);
    assert_int_equal(ops->console_session_create(f->s, h3.h, f->beta + 100, f->eve, c1.s, T0),
                     PHY_ENOTFOUND);
    assert_int_equal(auth(f, 3, T0 + 1000, NULL), STORE_NOT_FOUND);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM console_sessions"), 2);
    /* The cookie is never stored, only its hash. */
    char buf[128];
    assert_string_equal(
        raw_text(f->path, "SELECT min(id_hash) FROM console_sessions", buf, sizeof buf), h1.h);

    /* Validation: the hash is 64 lowercase hex, the CSRF token 43 base64url. */
    struct hash bad = H(4);
    bad.h[10] = 'A';
    assert_int_equal(ops->console_session_create(f->s, bad.h, f->acme, f->alice, c1.s, T0),
                     PHY_EINVAL);
    bad.h[10] = 'g';
    assert_int_equal(ops->console_session_create(f->s, bad.h, f->acme, f->alice, c1.s, T0),
                     PHY_EINVAL);
    bad = H(4);
    bad.h[63] = '\0';
    assert_int_equal(ops->console_session_create(f->s, bad.h, f->acme, f->alice, c1.s, T0),
                     PHY_EINVAL);
    char longer[PHY_HASH_HEX_LEN + 2];
    snprintf(longer, sizeof longer, "%s0", H(4).h);
    assert_int_equal(ops->console_session_create(f->s, longer, f->acme, f->alice, c1.s, T0),
                     PHY_EINVAL);
    struct hash h4 = H(4);
    struct csrf bc = CSRF(4);
    bc.s[5] = '+';
    assert_int_equal(ops->console_session_create(f->s, h4.h, f->acme, f->alice, bc.s, T0),
                     PHY_EINVAL);
    bc = CSRF(4);
    bc.s[42] = '\0';
    assert_int_equal(ops->console_session_create(f->s, h4.h, f->acme, f->alice, bc.s, T0),
                     PHY_EINVAL);
    char csrf44[STORE_CSRF_LEN + 2];
    snprintf(csrf44, sizeof csrf44, "%sA", CSRF(4).s);
    assert_int_equal(ops->console_session_create(f->s, h4.h, f->acme, f->alice, csrf44, T0),
                     PHY_EINVAL);
    assert_int_equal(ops->console_session_create(f->s, h4.h, f->acme, f->alice, NULL, T0),
                     PHY_EINVAL);
    assert_int_equal(ops->console_session_create(f->s, NULL, f->acme, f->alice, c1.s, T0),
                     PHY_EINVAL);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM console_sessions"), 2);

    int out = -1;
    assert_int_equal(ops->console_session_auth(f->s, bad.h, T0, IDLE_MS, MAX_MS, 1, &s, &out),
                     PHY_EINVAL);
    assert_int_equal(ops->console_session_auth(f->s, h1.h, T0, 0, MAX_MS, 1, &s, &out), PHY_EINVAL);
    assert_int_equal(ops->console_session_auth(f->s, h1.h, T0, IDLE_MS, 0, 1, &s, &out), PHY_EINVAL);
    assert_int_equal(ops->console_session_auth(f->s, h1.h, T0, IDLE_MS, MAX_MS, 1, NULL, &out),
                     PHY_EINVAL);
    assert_int_equal(ops->console_session_auth(f->s, h1.h, T0, IDLE_MS, MAX_MS, 1, &s, NULL),
                     PHY_EINVAL);
}

/* last_used_ms is written at most every 5 s, not on every request. */
static void test_session_touch_throttled(void **state)
{
    struct fx *f = *state;
    struct store_session s;
    create_session(f, 1, f->acme, f->alice, T0);
    assert_int_equal(auth(f, 1, T0 + 4999, &s), STORE_OK);
    assert_int_equal(s.last_used_ms, T0);
    assert_int_equal(stored_last_used(f, 1), T0);
    assert_int_equal(auth(f, 1, T0 + 5000, &s), STORE_OK);
    assert_int_equal(s.last_used_ms, T0 + 5000);
    assert_int_equal(stored_last_used(f, 1), T0 + 5000);
    assert_int_equal(auth(f, 1, T0 + 9000, &s), STORE_OK);
    assert_int_equal(stored_last_used(f, 1), T0 + 5000);
    assert_int_equal(auth(f, 1, T0 + 30000, &s), STORE_OK);
    assert_int_equal(stored_last_used(f, 1), T0 + 30000);
    /* A clock that went back neither expires nor rewinds the session. */
    assert_int_equal(auth(f, 1, T0 + 20000, &s), STORE_OK);
    assert_int_equal(stored_last_used(f, 1), T0 + 30000);
    assert_int_equal(s.created_ms, T0);
    /* Without touch (an event stream opening) the session is checked, not used. */
    struct hash hh = H(1);
    int out = -1;
    assert_int_equal(ops->console_session_auth(f->s, hh.h, T0 + 60000, IDLE_MS, MAX_MS, 0, &s,
                                               &out),
                     0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(stored_last_used(f, 1), T0 + 30000);
    assert_int_equal(ops->console_session_auth(f->s, hh.h, T0 + 30000 + IDLE_MS + 1, IDLE_MS,
                                               MAX_MS, 0, &s, &out),
                     0);
    assert_int_equal(out, STORE_NOT_FOUND);
}

static void test_session_idle_expiry(void **state)
{
    struct fx *f = *state;
    create_session(f, 1, f->acme, f->alice, T0);
    create_session(f, 2, f->acme, f->bob, T0);
    /* Exactly idle_ms after the last use is still in time (and is a use). */
    assert_int_equal(auth(f, 1, T0 + IDLE_MS, NULL), STORE_OK);
    assert_int_equal(stored_last_used(f, 1), T0 + IDLE_MS);
    /* One millisecond more is too late: the row goes. */
    assert_int_equal(auth(f, 2, T0 + IDLE_MS + 1, NULL), STORE_NOT_FOUND);
    assert_int_equal(stored_last_used(f, 2), -1);
    assert_int_equal(auth(f, 2, T0 + 1, NULL), STORE_NOT_FOUND);
    assert_int_equal(auth(f, 1, T0 + 2 * IDLE_MS + 1, NULL), STORE_NOT_FOUND);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM console_sessions"), 0);
}

static void test_session_max_age(void **state)
{
    struct fx *f = *state;
    int64_t t = T0;
    create_session(f, 1, f->acme, f->alice, T0);
    create_session(f, 2, f->acme, f->alice, T0 + 60000);
    /* Kept busy, the session still ends max_ms after login. */
    for (; t + IDLE_MS / 2 <= T0 + MAX_MS; t += IDLE_MS / 2)
        assert_int_equal(auth(f, 1, t + IDLE_MS / 2, NULL), STORE_OK);
    assert_int_equal(t, T0 + MAX_MS);
    assert_int_equal(auth(f, 1, T0 + MAX_MS + 1, NULL), STORE_NOT_FOUND);
    assert_int_equal(stored_last_used(f, 1), -1);
    /* The other one was never used again: it idled out long ago, and goes when seen. */
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM console_sessions"), 1);
    assert_int_equal(auth(f, 2, T0 + MAX_MS + 1, NULL), STORE_NOT_FOUND);
    create_session(f, 3, f->acme, f->alice, T0 + MAX_MS);
    assert_int_equal(auth(f, 3, T0 + MAX_MS + 1, NULL), STORE_OK);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM console_sessions"), 1);
}

static void test_session_delete_and_sweep(void **state)
{
    struct fx *f = *state;
    struct hash h1 = H(1), h9 = H(9);
    create_session(f, 1, f->acme, f->alice, T0);
    create_session(f, 2, f->acme, f->alice, T0);
    create_session(f, 3, f->beta, f->eve, T0 + WEEK_MS);
    assert_int_equal(ops->console_session_delete(f->s, h1.h), 0);
    assert_int_equal(auth(f, 1, T0 + 1, NULL), STORE_NOT_FOUND);
    assert_int_equal(auth(f, 2, T0 + 1, NULL), STORE_OK);
    assert_int_equal(ops->console_session_delete(f->s, h1.h), 0);
    assert_int_equal(ops->console_session_delete(f->s, h9.h), 0);
    assert_int_equal(ops->console_session_delete(f->s, "xyz"), PHY_EINVAL);
    assert_int_equal(ops->console_session_delete(f->s, NULL), PHY_EINVAL);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM console_sessions"), 2);

    /* console_sweep drops sessions past the configured idle or absolute limit that
     * auth never saw expire; the provisioning sweep leaves them alone. */
    f->p.now_ms = T0 + WEEK_MS; /* (the sweep clamps times from the future to now) */
    assert_int_equal(ops->sweep(f->s, &f->p, 0), 0);
    assert_int_equal(ops->console_sweep(f->s, T0 + WEEK_MS, WEEK_MS, 2 * WEEK_MS, 0), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM console_sessions"), 2);
    assert_int_equal(ops->console_sweep(f->s, T0 + WEEK_MS + 1, WEEK_MS, 2 * WEEK_MS, 0), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM console_sessions"), 1);
    assert_int_equal(stored_last_used(f, 3), T0 + WEEK_MS);
    /* absolute age: created T0 + WEEK_MS, max 1 day */
    assert_int_equal(ops->console_sweep(f->s, T0 + WEEK_MS + 86400000LL + 1, 10 * WEEK_MS,
                                        86400000LL, 0),
                     0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM console_sessions"), 0);
    assert_int_equal(ops->console_sweep(f->s, T0, 0, 1, 0), PHY_EINVAL);

    /* audit retention: records older than the keep time go; 0 keeps everything */
    audit(f, f->acme, f->alice, T0, "user.login", NULL, NULL);
    audit(f, f->acme, f->alice, T0 + 10, "user.logout", NULL, NULL);
    assert_int_equal(ops->console_sweep(f->s, T0 + 1000, WEEK_MS, WEEK_MS, 0), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM audit"), 2);
    assert_int_equal(ops->console_sweep(f->s, T0 + 1000, WEEK_MS, WEEK_MS, 995), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM audit"), 1);
}

/* ---- audit ---- */

static void test_audit_list(void **state)
{
    struct fx *f = *state;
    struct id d1 = ID(1);
    char buf[1024];

    audit(f, f->acme, f->alice, T0, "user.login", NULL, NULL);   /* 1 */
    audit(f, f->beta, f->eve, T0 + 1, "user.login", NULL, NULL); /* 2 */
    audit(f, f->acme, f->bob, T0 + 2, "device.claim", d1.s,
          "{\"serial\":\"SN-1\",\"by\":\"serial\"}");                                     /* 3 */
    audit(f, f->acme, f->alice, T0 + 3, "device.desired_patch", d1.s, "{\"version\":2}"); /* 4 */
    audit(f, f->acme, f->alice, T0 + 4, "user.logout", NULL, NULL);                       /* 5 */

    assert_int_equal(audit_str(f, f->acme, 0, 500, buf, sizeof buf), 4);
    assert_string_equal(buf, "5:alice:user.logout:-:- "
                             "4:alice:device.desired_patch:1:{\"version\":2} "
                             "3:bob:device.claim:1:{\"serial\":\"SN-1\",\"by\":\"serial\"} "
                             "1:alice:user.login:-:-");
    assert_int_equal(audit_str(f, f->beta, -1, 10, buf, sizeof buf), 1);
    assert_string_equal(buf, "2:eve:user.login:-:-");
    assert_int_equal(audit_str(f, f->beta + 100, 0, 10, buf, sizeof buf), 0);
    assert_string_equal(buf, "");

    /* Pages: limit, then the cursor. */
    assert_int_equal(audit_str(f, f->acme, 0, 2, buf, sizeof buf), 2);
    assert_string_equal(buf, "5:alice:user.logout:-:- "
                             "4:alice:device.desired_patch:1:{\"version\":2}");
    assert_int_equal(audit_str(f, f->acme, 4, 2, buf, sizeof buf), 2);
    assert_string_equal(buf, "3:bob:device.claim:1:{\"serial\":\"SN-1\",\"by\":\"serial\"} "
                             "1:alice:user.login:-:-");
    assert_int_equal(audit_str(f, f->acme, 1, 2, buf, sizeof buf), 0);
    assert_int_equal(audit_str(f, f->acme, 3, 500, buf, sizeof buf), 1);
    assert_string_equal(buf, "1:alice:user.login:-:-");
    /* Another tenant's cursor shows nothing of it. */
    assert_int_equal(audit_str(f, f->beta, 6, 500, buf, sizeof buf), 1);

    /* Times and the full record. */
    struct store_audit *a = NULL;
    size_t n = 0;
    assert_int_equal(ops->audit_list(f->s, f->acme, 5, 1, &a, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(a[0].id, 4);
    assert_int_equal(a[0].at_ms, T0 + 3);
    assert_string_equal(a[0].device_id, d1.s);
    assert_string_equal(a[0].action, "device.desired_patch");
    store_audit_free(a, n);

    /* A user who is gone shows as "(removed user)"; ids are not reused. */
    char sql[96];
    snprintf(sql, sizeof sql, "DELETE FROM users WHERE id = %lld", (long long)f->bob);
    raw_exec(f->path, sql);
    assert_int_equal(audit_str(f, f->acme, 4, 1, buf, sizeof buf), 1);
    assert_string_equal(buf, "3:(removed user):device.claim:1:{\"serial\":\"SN-1\",\"by\":\"serial\"}");
    raw_exec(f->path, "DELETE FROM audit WHERE id = 5");
    audit(f, f->acme, f->alice, T0 + 5, "device.delete", d1.s, NULL);
    assert_int_equal(audit_str(f, f->acme, 0, 1, buf, sizeof buf), 1);
    assert_string_equal(buf, "6:alice:device.delete:1:-");

    /* A user id of another tenant does not name an actor. */
    audit(f, f->acme, f->eve, T0 + 6, "device.revoke", d1.s, NULL);
    assert_int_equal(audit_str(f, f->acme, 0, 1, buf, sizeof buf), 1);
    assert_string_equal(buf, "7:(removed user):device.revoke:1:-");

    /* Limits 1..500. */
    a = (struct store_audit *)&n;
    n = 42;
    assert_int_equal(ops->audit_list(f->s, f->acme, 0, 0, &a, &n), PHY_EINVAL);
    assert_null(a);
    assert_int_equal(n, 0);
    assert_int_equal(ops->audit_list(f->s, f->acme, 0, 501, &a, &n), PHY_EINVAL);
    assert_int_equal(ops->audit_list(f->s, f->acme, 0, -1, &a, &n), PHY_EINVAL);
    assert_int_equal(ops->audit_list(f->s, f->acme, 0, 10, NULL, &n), PHY_EINVAL);
    assert_int_equal(ops->audit_list(f->s, f->acme, 0, 10, &a, NULL), PHY_EINVAL);
    store_audit_free(NULL, 3);
}

static void test_audit_many(void **state)
{
    struct fx *f = *state;
    char buf[1024];
    for (int i = 0; i < 520; i++)
        audit(f, f->acme, f->alice, T0 + i, "device.tags", NULL, NULL);
    struct store_audit *a = NULL;
    size_t n = 0;
    assert_int_equal(ops->audit_list(f->s, f->acme, 0, 500, &a, &n), 0);
    assert_int_equal(n, 500);
    assert_int_equal(a[0].id, 520);
    assert_int_equal(a[499].id, 21);
    assert_int_equal(a[499].at_ms, T0 + 20);
    store_audit_free(a, n);
    assert_int_equal(audit_str(f, f->acme, 21, 500, buf, sizeof buf), 20);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM audit"), 520);
}

static void test_audit_validation(void **state)
{
    struct fx *f = *state;
    struct id d1 = ID(1);
    char action[40], buf[256];

    /* Actions: 1..31 characters of [a-z._]. */
    memset(action, 'a', sizeof action);
    action[31] = '\0';
    audit(f, f->acme, f->alice, T0, action, NULL, NULL);
    action[31] = 'a';
    action[32] = '\0';
    assert_int_equal(ops->audit_add(f->s, f->acme, f->alice, T0, action, NULL, NULL), PHY_EINVAL);
    static const char *const bad_actions[] = {
        "", "Device.claim", "device-claim", "device claim", "device.claim2", "dévice"};
    for (size_t i = 0; i < sizeof bad_actions / sizeof bad_actions[0]; i++)
        assert_int_equal(ops->audit_add(f->s, f->acme, f->alice, T0, bad_actions[i], NULL, NULL),
                         PHY_EINVAL);
    assert_int_equal(ops->audit_add(f->s, f->acme, f->alice, T0, NULL, NULL, NULL), PHY_EINVAL);
    audit(f, f->acme, f->alice, T0, "fleet.desired_patch", NULL, "{}");

    /* device_id: NULL or a device ID. */
    char long_id[PHY_DEVICE_ID_LEN + 2];
    snprintf(long_id, sizeof long_id, "%sx", d1.s);
    assert_int_equal(ops->audit_add(f->s, f->acme, f->alice, T0, "device.claim", long_id, NULL),
                     PHY_EINVAL);
    assert_int_equal(ops->audit_add(f->s, f->acme, f->alice, T0, "device.claim", "", NULL),
                     PHY_EINVAL);

    /* detail_json: NULL or a JSON object of at most 64 KiB. */
    static const char *const bad_details[] = {"", "[]", "42", "{\"a\":", "{\"a\":1,\"a\":2}"};
    for (size_t i = 0; i < sizeof bad_details / sizeof bad_details[0]; i++)
        assert_int_equal(
            ops->audit_add(f->s, f->acme, f->alice, T0, "device.tags", d1.s, bad_details[i]),
            PHY_EINVAL);
    size_t max = 65536;
    char *big = malloc(max + 2);
    assert_non_null(big);
    memcpy(big, "{\"a\":\"", 6);
    memset(big + 6, 'x', max - 8);
    memcpy(big + max - 2, "\"}", 3);
    assert_int_equal(strlen(big), max);
    audit(f, f->acme, f->alice, T0 + 1, "device.tags", d1.s, big);
    memcpy(big + max - 2, "x\"}", 4);
    assert_int_equal(ops->audit_add(f->s, f->acme, f->alice, T0 + 2, "device.tags", d1.s, big),
                     PHY_ETOOBIG);
    free(big);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM audit"), 3);
    assert_int_equal(raw_int(f->path, "SELECT max(length(detail_json)) FROM audit"), 65536);
    assert_string_equal(raw_text(f->path, "SELECT action FROM audit WHERE id = 1", buf, sizeof buf),
                        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_int_equal(ops->audit_add(NULL, f->acme, f->alice, T0, "user.login", NULL, NULL),
                     PHY_EINVAL);
}

/* ---- status history ---- */

static void test_status_history_keeps_newest(void **state)
{
    struct fx *f = *state;
    char buf[512], want[512];
    size_t len = 0;
    add_devices(f, "acme", 1, 2);

    for (int i = 0; i < 25; i++)
        status(f, 1, T0 + 10 * i, i);
    for (int i = 24; i >= 5; i--)
        len += (size_t)snprintf(want + len, sizeof want - len, "%s%d:%d", i < 24 ? " " : "", 10 * i,
                                i);
    assert_int_equal(history_str(f, f->acme, 1, 100, buf, sizeof buf), STORE_OK);
    assert_string_equal(buf, want);
    assert_int_equal(history_rows(f), STORE_STATUS_HISTORY);
    /* The device row has the newest one as its last status. */
    struct store_device d;
    int out = -1;
    assert_int_equal(ops->device_get(f->s, f->acme, ID(1).s, &d, NULL, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_string_equal(d.last_status_json, "{\"n\":24}");
    assert_int_equal(d.last_status_ms, T0 + 240);
    store_device_clear(&d);

    /* Equal times: still exactly 20, the latest received first. */
    for (int i = 0; i < 23; i++)
        status(f, 2, T0 + 5, 100 + i);
    assert_int_equal(history_str(f, f->acme, 2, 3, buf, sizeof buf), STORE_OK);
    assert_string_equal(buf, "5:122 5:121 5:120");
    assert_int_equal(history_str(f, f->acme, 2, 20, buf, sizeof buf), STORE_OK);
    assert_non_null(strstr(buf, " 5:103"));
    assert_null(strstr(buf, "5:102"));
    assert_int_equal(history_rows(f), 2 * STORE_STATUS_HISTORY);
    /* One device's trimming leaves the other's rows alone. */
    status(f, 1, T0 + 1000, 99);
    assert_int_equal(history_str(f, f->acme, 1, 2, buf, sizeof buf), STORE_OK);
    assert_string_equal(buf, "1000:99 240:24");
    assert_int_equal(history_rows(f), 2 * STORE_STATUS_HISTORY);
    /* A report out of order (an older time) sorts by its time. */
    status(f, 1, T0 + 245, 98);
    assert_int_equal(history_str(f, f->acme, 1, 3, buf, sizeof buf), STORE_OK);
    assert_string_equal(buf, "1000:99 245:98 240:24");
    assert_int_equal(history_rows(f), 2 * STORE_STATUS_HISTORY);
    /* One older than all 20 kept is not among the newest: it is dropped at once. */
    status(f, 1, T0 + 1, 97);
    assert_int_equal(history_str(f, f->acme, 1, 20, buf, sizeof buf), STORE_OK);
    assert_null(strstr(buf, ":97"));
    assert_non_null(strstr(buf, " 70:7"));
    assert_int_equal(history_rows(f), 2 * STORE_STATUS_HISTORY);
}

static void test_status_history_access(void **state)
{
    struct fx *f = *state;
    struct store_status_report *r = NULL;
    size_t n = 0;
    char buf[256];
    int out = -1;
    add_devices(f, "acme", 1, 2);
    add_devices(f, "beta", 3, 1);
    status(f, 1, T0 + 1, 1);
    status(f, 1, T0 + 2, 2);
    status(f, 3, T0 + 3, 3);

    assert_int_equal(history_str(f, f->acme, 1, 1, buf, sizeof buf), STORE_OK);
    assert_string_equal(buf, "2:2");
    assert_int_equal(history_str(f, f->acme, 1, 500, buf, sizeof buf), STORE_OK);
    assert_string_equal(buf, "2:2 1:1");
    /* A device without reports: OK and empty. */
    assert_int_equal(history_str(f, f->acme, 2, 20, buf, sizeof buf), STORE_OK);
    assert_string_equal(buf, "");
    /* Tenant isolation; unknown device. */
    assert_int_equal(history_str(f, f->beta, 1, 20, buf, sizeof buf), STORE_NOT_FOUND);
    assert_int_equal(history_str(f, f->acme, 3, 20, buf, sizeof buf), STORE_NOT_FOUND);
    assert_int_equal(history_str(f, f->beta, 3, 20, buf, sizeof buf), STORE_OK);
    assert_string_equal(buf, "3:3");
    assert_int_equal(history_str(f, f->acme, 9, 20, buf, sizeof buf), STORE_NOT_FOUND);
    /* status_put on an unknown device writes nothing. */
    assert_int_equal(ops->status_put(f->s, ID(9).s, "{\"n\":9}", T0), PHY_ENOTFOUND);
    assert_int_equal(ops->status_put(f->s, ID(1).s, "[1]", T0), PHY_EINVAL);
    assert_int_equal(history_rows(f), 3);

    /* A device in the middle of a claim through eu is hidden, its reports too. */
    struct hash sh = H(0x5ec);
    struct store_claim_begin cb = {
        .tenant_id = f->acme,
        .secret_hash = sh.h,
        .tags_json = "{}",
        .serial = "SN-5",
        .now_ms = T0,
        .hold_ms = 30000,
    };
    struct id id5 = ID(5);
    cb.device_id = id5.s;
    assert_int_equal(ops->claim_begin(f->s, &cb, &out), 0);
    assert_int_equal(out, STORE_OK);
    status(f, 5, T0 + 4, 5);
    assert_int_equal(history_str(f, f->acme, 5, 20, buf, sizeof buf), STORE_NOT_FOUND);
    assert_int_equal(ops->claim_confirm(f->s, id5.s, "SN-5", NULL, &out), 0);
    assert_int_equal(history_str(f, f->acme, 5, 20, buf, sizeof buf), STORE_OK);
    assert_string_equal(buf, "4:5");

    /* A revoked device keeps its history; deleting a device removes it. */
    assert_int_equal(ops->device_revoke(f->s, f->acme, ID(1).s, T0 + 10, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(history_str(f, f->acme, 1, 20, buf, sizeof buf), STORE_OK);
    assert_string_equal(buf, "2:2 1:1");
    assert_int_equal(ops->device_delete(f->s, f->acme, ID(1).s, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(history_str(f, f->acme, 1, 20, buf, sizeof buf), STORE_NOT_FOUND);
    assert_int_equal(history_rows(f), 2);
    /* So does a claim that eu refused (claim_abort deletes the row). */
    struct id id6 = ID(6);
    cb.device_id = id6.s;
    cb.serial = "SN-6";
    assert_int_equal(ops->claim_begin(f->s, &cb, &out), 0);
    status(f, 6, T0 + 5, 6);
    assert_int_equal(history_rows(f), 3);
    assert_int_equal(ops->claim_abort(f->s, id6.s), 0);
    assert_int_equal(history_rows(f), 2);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM status_history WHERE device_id NOT IN"
                                      " (SELECT device_id FROM devices)"),
                     0);

    /* Arguments. */
    r = (struct store_status_report *)&n;
    n = 7;
    assert_int_equal(ops->status_history(f->s, f->acme, ID(2).s, 0, &r, &n, &out), PHY_EINVAL);
    assert_null(r);
    assert_int_equal(n, 0);
    assert_int_equal(ops->status_history(f->s, f->acme, "", 5, &r, &n, &out), PHY_EINVAL);
    assert_int_equal(ops->status_history(f->s, f->acme, ID(2).s, 5, NULL, &n, &out), PHY_EINVAL);
    assert_int_equal(ops->status_history(f->s, f->acme, ID(2).s, 5, &r, NULL, &out), PHY_EINVAL);
    assert_int_equal(ops->status_history(f->s, f->acme, ID(2).s, 5, &r, &n, NULL), PHY_EINVAL);
    store_status_reports_free(NULL, 2);
}

/* ---- device_rename ---- */

/* device_rename of ID(dev) by tenant; returns the outcome (asserts rc 0). */
static int rename_dev(struct fx *f, int64_t tenant, unsigned dev, const char *name)
{
    struct id id = ID(dev);
    int out = -1;
    assert_int_equal(ops->device_rename(f->s, tenant, id.s, name, &out), 0);
    return out;
}

/* ID(dev)'s name as stored ("<null>" when none, "<none>" without the row). */
static const char *stored_name(struct fx *f, unsigned dev, char *buf, size_t cap)
{
    char sql[128];
    struct id id = ID(dev);
    snprintf(sql, sizeof sql, "SELECT name FROM devices WHERE device_id = '%s'", id.s);
    return raw_text(f->path, sql, buf, cap);
}

static void test_device_rename(void **state)
{
    struct fx *f = *state;
    struct store_device d;
    struct store_device *list = NULL;
    size_t n = 0;
    char buf[256], name[128];
    int out = -1;
    add_devices(f, "acme", 1, 2);
    add_devices(f, "beta", 3, 1);
    assert_string_equal(stored_name(f, 1, buf, sizeof buf), "<null>");

    /* Found: set, shown by device_get and devices_list. */
    assert_int_equal(rename_dev(f, f->acme, 1, "Lobby display"), STORE_OK);
    assert_string_equal(stored_name(f, 1, buf, sizeof buf), "Lobby display");
    struct id id1 = ID(1);
    assert_int_equal(ops->device_get(f->s, f->acme, id1.s, &d, NULL, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_string_equal(d.name, "Lobby display");
    store_device_clear(&d);
    assert_int_equal(ops->devices_list(f->s, f->acme, NULL, NULL, 10, &list, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].name, "Lobby display");
    assert_string_equal(list[1].name, "");
    store_devices_free(list, n);
    /* The same name again is still OK (the device is there). */
    assert_int_equal(rename_dev(f, f->acme, 1, "Lobby display"), STORE_OK);

    /* Not found: unknown, another tenant's (left as it was). */
    assert_int_equal(rename_dev(f, f->acme, 9, "x"), STORE_NOT_FOUND);
    assert_int_equal(rename_dev(f, f->acme, 3, "mine now"), STORE_NOT_FOUND);
    assert_string_equal(stored_name(f, 3, buf, sizeof buf), "<null>");
    assert_int_equal(rename_dev(f, f->beta, 1, "mine now"), STORE_NOT_FOUND);
    assert_string_equal(stored_name(f, 1, buf, sizeof buf), "Lobby display");
    assert_int_equal(rename_dev(f, f->beta, 3, "Gate"), STORE_OK);
    assert_string_equal(stored_name(f, 3, buf, sizeof buf), "Gate");

    /* NULL and "" clear it (stored as NULL). */
    assert_int_equal(rename_dev(f, f->acme, 1, NULL), STORE_OK);
    assert_string_equal(stored_name(f, 1, buf, sizeof buf), "<null>");
    assert_int_equal(rename_dev(f, f->acme, 1, "again"), STORE_OK);
    assert_int_equal(rename_dev(f, f->acme, 1, ""), STORE_OK);
    assert_string_equal(stored_name(f, 1, buf, sizeof buf), "<null>");
    assert_int_equal(ops->device_get(f->s, f->acme, id1.s, &d, NULL, &out), 0);
    assert_string_equal(d.name, "");
    store_device_clear(&d);

    /* 64 bytes fit, multi-byte characters counted in bytes; 65 are PHY_EINVAL. */
    memset(name, 'n', 64);
    name[64] = '\0';
    assert_int_equal(rename_dev(f, f->acme, 2, name), STORE_OK);
    assert_string_equal(stored_name(f, 2, buf, sizeof buf), name);
    name[0] = '\0';
    for (int i = 0; i < 32; i++)
        strcat(name, "\xc3\xa4");
    assert_int_equal(rename_dev(f, f->acme, 2, name), STORE_OK);
    assert_string_equal(stored_name(f, 2, buf, sizeof buf), name);
    struct id id2 = ID(2);
    static const char *const bad[] = {
        "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn", /* 65 */
        "a\x01" "b", "tab\there", "new\nline", "del\x7f", "\x1f",
    };
    assert_int_equal(strlen(bad[0]), 65);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        out = -1;
        assert_int_equal(ops->device_rename(f->s, f->acme, id2.s, bad[i], &out), PHY_EINVAL);
        assert_int_equal(out, -1);
    }
    strcat(name, "n"); /* 65 bytes */
    assert_int_equal(ops->device_rename(f->s, f->acme, id2.s, name, &out), PHY_EINVAL);
    name[64] = '\0';
    assert_string_equal(stored_name(f, 2, buf, sizeof buf), name); /* unchanged */

    /* A device in the middle of a claim through eu is hidden until eu accepted it. */
    struct hash sh = H(0x5ec);
    struct id id5 = ID(5);
    struct store_claim_begin cb = {
        .tenant_id = f->acme,
        .device_id = id5.s,
        .secret_hash = sh.h,
        .name = "claimed as",
        .tags_json = "{}",
        .serial = "SN-5",
        .now_ms = T0,
        .hold_ms = 30000,
    };
    assert_int_equal(ops->claim_begin(f->s, &cb, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(rename_dev(f, f->acme, 5, "too early"), STORE_NOT_FOUND);
    assert_int_equal(rename_dev(f, f->acme, 5, NULL), STORE_NOT_FOUND);
    assert_string_equal(stored_name(f, 5, buf, sizeof buf), "claimed as");
    assert_int_equal(ops->claim_confirm(f->s, id5.s, "SN-5", NULL, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(rename_dev(f, f->acme, 5, "confirmed"), STORE_OK);
    assert_string_equal(stored_name(f, 5, buf, sizeof buf), "confirmed");

    /* A revoked device may be renamed (its row stays for history); a deleted one is
     * gone. */
    assert_int_equal(ops->device_revoke(f->s, f->acme, id1.s, T0 + 10, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(rename_dev(f, f->acme, 1, "old lobby"), STORE_OK);
    assert_string_equal(stored_name(f, 1, buf, sizeof buf), "old lobby");
    assert_int_equal(ops->device_delete(f->s, f->acme, id1.s, &out), 0);
    assert_int_equal(out, STORE_OK);
    assert_int_equal(rename_dev(f, f->acme, 1, "ghost"), STORE_NOT_FOUND);
    assert_string_equal(stored_name(f, 1, buf, sizeof buf), "<none>");

    /* Arguments. */
    assert_int_equal(ops->device_rename(NULL, f->acme, id2.s, "x", &out), PHY_EINVAL);
    assert_int_equal(ops->device_rename(f->s, f->acme, id2.s, "x", NULL), PHY_EINVAL);
    assert_int_equal(ops->device_rename(f->s, f->acme, NULL, "x", &out), PHY_EINVAL);
    assert_int_equal(ops->device_rename(f->s, f->acme, "", "x", &out), PHY_EINVAL);
    assert_int_equal(
        ops->device_rename(f->s, f->acme, "dev_0000000000000000000000000000000", "x", &out),
        PHY_EINVAL);
}

/* ---- poll: the tenant of a delivered device ---- */

static unsigned char *seal_serial(void *ctx, const char *serial, size_t *out_len)
{
    (void)ctx;
    *out_len = strlen(serial);
    unsigned char *b = malloc(*out_len);
    assert_non_null(b);
    memcpy(b, serial, *out_len);
    return b;
}

static int poll_tenant(struct fx *f, const char *serial, unsigned tok, int64_t *tenant)
{
    struct store_poll_result r;
    struct hash h = H(tok);
    int out = -1;
    assert_int_equal(ops->poll(f->s, &f->p, serial, NULL, h.h, &r, &out), 0);
    *tenant = r.tenant_id;
    free(r.sealed);
    return out;
}

static void test_poll_tenant_id(void **state)
{
    struct fx *f = *state;
    struct hash sh = H(0x5ec);
    struct id id1 = ID(1), id2 = ID(2);
    struct store_device dev;
    int64_t tenant = -1;
    int out = -1;

    assert_int_equal(reg(f, "SN-L", 101), STORE_OK);
    assert_int_equal(reg(f, "SN-R", 102), STORE_OK);
    assert_int_equal(poll_tenant(f, "SN-L", 101, &tenant), STORE_PENDING);
    assert_int_equal(tenant, 0);

    /* eu's own claim for beta: DELIVER names beta. */
    struct store_claim c = {
        .serial_claims = SERIAL_CLAIMS_ANY, /* the tests below predate attestation */
        .tenant_id = f->beta,
        .user_id = f->eve,
        .serial = "SN-L",
        .device_id = id1.s,
        .secret_hash = sh.h,
        .tags_json = "{}",
        .seal = seal_serial,
    };
    assert_int_equal(ops->claim(f->s, &f->p, &c, &dev, &out), 0);
    assert_int_equal(out, STORE_OK);
    store_device_clear(&dev);
    f->p.now_ms += 10000;
    assert_int_equal(poll_tenant(f, "SN-L", 101, &tenant), STORE_DELIVER);
    assert_int_equal(tenant, f->beta);
    f->p.now_ms += 1000;
    assert_int_equal(poll_tenant(f, "SN-L", 101, &tenant), STORE_DELIVER); /* redelivery */
    assert_int_equal(tenant, f->beta);

    /* Another region's issuance: the tenant is not eu's to name. */
    struct store_remote_issue ri = {
        .serial_claims = SERIAL_CLAIMS_ANY,
        .serial = "SN-R",
        .device_id = id2.s,
        .region = "us-east",
        .seal = seal_serial,
    };
    char serial[PHY_SERIAL_MAX + 1];
    assert_int_equal(ops->issue_remote(f->s, &f->p, &ri, serial, &out), 0);
    assert_int_equal(out, STORE_OK);
    tenant = -1;
    assert_int_equal(poll_tenant(f, "SN-R", 102, &tenant), STORE_DELIVER);
    assert_int_equal(tenant, 0);
}

/* ---- schema 3 -> 4 ---- */

static void test_migration_v3(void **state)
{
    SQLITE_ONLY();
    struct fx *f = *state;
    char a[4096], buf[256];

    /* A version-3 store: a fresh one without version 4's tables, with a device that
     * has a last status and one that has none. */
    fx_open(f);
    populate(f);
    add_devices(f, "acme", 1, 2);
    ops->close(f->s);
    f->s = NULL;
    raw_exec(f->path, UNDO_V5_SQL "DROP TABLE console_sessions;"
                      "DROP TABLE login_failures;"
                      "DROP TABLE audit;"
                      "DROP TABLE status_history;"
                      "UPDATE devices SET last_status_json = '{\"n\":7}', last_status_ms = "
                      "1700000000077 WHERE device_id = 'dev_00000000000000000000000001';"
                      "PRAGMA user_version = 3;");
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sqlite_master WHERE name IN"
                                      " ('audit', 'status_history', 'console_sessions',"
                                      " 'login_failures', 'audit_tenant')"),
                     0);

    fx_open(f);
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
    /* The last status became the history's first entry. */
    assert_int_equal(history_str(f, f->acme, 1, 20, buf, sizeof buf), STORE_OK);
    assert_string_equal(buf, "77:7");
    assert_int_equal(history_str(f, f->acme, 2, 20, buf, sizeof buf), STORE_OK);
    assert_string_equal(buf, "");
    status(f, 1, T0 + 80, 8);
    assert_int_equal(history_str(f, f->acme, 1, 20, buf, sizeof buf), STORE_OK);
    assert_string_equal(buf, "80:8 77:7");
    /* The new operations work on the migrated store. */
    create_session(f, 1, f->acme, f->alice, T0);
    assert_int_equal(auth(f, 1, T0 + 1, NULL), STORE_OK);
    assert_int_equal(login_begin(f, "acme", "alice", T0, T0, NULL), 1);
    audit(f, f->acme, f->alice, T0, "user.login", NULL, NULL);
    assert_int_equal(audit_str(f, f->acme, 0, 10, buf, sizeof buf), 1);
    assert_string_equal(buf, "1:alice:user.login:-:-");

    /* Reopening does not migrate again. */
    ops->close(f->s);
    fx_open(f);
    assert_int_equal(history_str(f, f->acme, 1, 20, buf, sizeof buf), STORE_OK);
    assert_string_equal(buf, "80:8 77:7");

    /* Same shape as a fresh store. */
    make_fresh(f);
    assert_int_equal(raw_int(f->fresh, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
    static const char *const shapes[] = {
        COLS_SQL("console_sessions"),  COLS_SQL("login_failures"),  COLS_SQL("audit"),
        COLS_SQL("status_history"),    FKEYS_SQL("status_history"), INDEXES_SQL,
        TABLE_SQL("console_sessions"), TABLE_SQL("login_failures"), TABLE_SQL("audit"),
        TABLE_SQL("status_history"),
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        expect_same_shape(f, shapes[i]);
    assert_string_equal(raw_text(f->path, FKEYS_SQL("status_history"), a, sizeof a),
                        "devices:device_id:device_id:CASCADE");
    raw_text(f->path, INDEXES_SQL, a, sizeof a);
    static const char *const indexes[] = {
        "audit_tenant:audit:tenant_id,id",
        "login_failures_tenant:login_failures:tenant,at_ms",
        "login_failures_user:login_failures:tenant,user,at_ms",
        "status_history_device:status_history:device_id,at_ms",
        "sqlite_autoindex_console_sessions_1:console_sessions:id_hash",
    };
    for (size_t i = 0; i < sizeof indexes / sizeof indexes[0]; i++)
        if (!strstr(a, indexes[i]))
            fail_msg("index %s missing in %s", indexes[i], a);

    /* A store from the future is refused. */
    expect_future_refused(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_user_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_throttle_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_forgive_and_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_throttle_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_create_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_touch_throttled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_idle_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_max_age, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_delete_and_sweep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_history_keeps_newest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_history_access, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_rename, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poll_tenant_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_v3, setup_empty, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
