"""Issue 10, item 9: the hub's deadlines do not move with the wall clock. phyhub runs
under an LD_PRELOAD shim (tests/shim/clockshift.c) that steps its wall clock by what
a file says; the system clock is never touched. A step of +/-2 h lapses no
registration or console session and stretches no lock-out; a hub restarted with its
clock 2 h behind the store's times clamps them, so no lock-out outlives its window."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
from phytest import wait_until  # noqa: E402
from stack import PASSWORD, Stack  # noqa: E402

ST = None
SHIFT = None


def step(seconds):
    with open(SHIFT, "w") as f:
        f.write("%d\n" % seconds)
    time.sleep(0.1)  # the shim re-reads the file every 50 ms (bounded, short)


def setup():
    global ST, SHIFT
    ST = Stack("clock", proxy=False, start=False,
               hub_flags=["--registration-idle", "30", "--login-user-limit", "2",
                          "--login-window", "3", "--session-idle", "60"])
    SHIFT = os.path.join(ST.dir, "clock-shift")
    step(0)
    asan = os.environ.get("ASAN_OPTIONS", "")
    ST.hub_env = {"LD_PRELOAD": phytest.binary("libclockshift.so"),
                  "PHY_CLOCK_SHIFT_FILE": SHIFT,
                  # the shim is loaded before the sanitizer's runtime
                  "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"}
    ST.add_user("acme", "bob")
    ST.add_user("acme", "carol")  # a lock-out test of her own: bob's failures may
    ST.start()                    # still be inside the window when it starts


def teardown():
    if ST is not None:
        ST.stop()


def login(user, password=PASSWORD.strip()):
    return ST.request("POST", "/api/v1/login",
                      {"tenant": "acme", "user": user, "password": password}, via_proxy=False)


def test_the_shim_steps_the_hubs_wall_clock():
    """Without this the other tests prove nothing: the hub's log times move."""
    step(7200)
    ST.request("GET", "/metrics", via_proxy=False)
    line = ST.hub.log_lines(r"event=http ")[-1]
    hub_hour = int(line.split("T", 1)[1][:2])
    assert hub_hour == (time.gmtime().tm_hour + 2) % 24, line
    step(0)


def test_steps_lapse_nothing():
    token = ST.register("CLOCK-1")
    s, js, _, hdrs = login("alice")
    assert s == 200, (s, js)
    cookie = hdrs["set-cookie"].split(";", 1)[0]
    ST.secrets.add(cookie.split("=", 1)[1])
    for shift in (7200, -7200):
        step(shift)
        s, js, _, _ = ST.poll("CLOCK-1", token)
        assert s in (202, 429), ("the registration lapsed at a clock step", shift, s, js)
        s, js, _, _ = ST.request("GET", "/api/v1/session", headers={"Cookie": cookie},
                                 via_proxy=False)
        assert s == 200, ("the console session ended at a clock step", shift, s, js)

        def code():  # a new code at most once a second (slow_down otherwise)
            s, js, _, _ = ST.request("POST", "/v1/provisioning/code",
                                     {"serial": "CLOCK-1", "poll_token": token}, via_proxy=False)
            assert s in (201, 429), ("the registration lapsed at a clock step", shift, s, js)
            return js if s == 201 else None
        assert wait_until(code, 5, "a code")["expires_in"] == 300
    ST.hub.wait_log(r"event=clock_step wall_minus_hub_ms=-7\d{6} ", 10)
    step(0)


def test_lock_out_ends_with_its_window_across_steps():
    for _ in range(2):
        assert login("bob", "wrong")[0] == 401
    assert login("bob")[0] == 429
    step(-7200)  # back: with wall time the failures would be 2 h in the future
    t0 = time.monotonic()
    wait_until(lambda: login("bob")[0] == 200, 15, "bob's lock-out to end")
    assert time.monotonic() - t0 < 10
    step(0)


def test_restart_behind_the_store_clamps_future_times():
    """Failures recorded at T, then the hub restarts with its clock at T - 2 h: the
    times 2 h in the future are clamped at start, so the lock-out lasts its window
    (3 s), not 2 h."""
    for _ in range(2):
        assert login("carol", "wrong")[0] == 401
    assert login("carol")[0] == 429
    ST.hub.stop()
    step(-7200)
    ST.start_hub()
    t0 = time.monotonic()
    wait_until(lambda: login("carol")[0] == 200, 20, "carol's lock-out to end after the restart")
    assert time.monotonic() - t0 < 15


if __name__ == "__main__":
    phytest.main()
