"""Issue 13: a hub SIGKILLed in the middle of a reconnect storm. 200 real agents
(bulk-made, through the proxy) are connected; the hub is SIGKILLed and started again;
while the agents are coming back it is SIGKILLed once more (some sessions open, some
handshakes and store writes under way) and started again. Every device must end
online, active, with one live session, and nothing a device acknowledged before may
be lost: a desired change applied by every agent before the storm is still the
stored version, and every agent reports the next one."""
import os
import re
import signal

import phytest
from phytest import wait_until
from stack import Stack, read_json

N = 200
OPEN = re.compile(r"event=session_open device_id=(dev_\w+)")


def opened(hub):
    return {OPEN.search(l).group(1) for l in hub.log_lines(r"event=session_open ")}


def devices(st):
    """Every device of acme as the API lists it (all pages)."""
    out, after = [], None
    while True:
        path = "/api/v1/devices?limit=500" + ("&after=" + after if after else "")
        s, js, _, _ = st.api("GET", path, via_proxy=False)
        assert s == 200, (s, js)
        out += js["devices"]
        if not js.get("next"):
            return out
        after = js["next"]


def test_sigkill_during_a_reconnect_storm():
    st = Stack("storm-kill")
    try:
        made = st.bulk_agents(N, "fleet:storm", ["--reconnect-min", "1", "--reconnect-max", "2"])
        states = [state for _, state, _ in made]
        ids = {c["device_id"] for _, _, c in made}
        wait_until(lambda: opened(st.hub) >= ids, 60 + N / 5, "%d agents online" % N)

        # Acknowledged before the storm: every agent applied v=1.
        s, js, _, _ = st.api("PATCH", "/api/v1/twins/desired?tag=fleet:storm", {"v": 1},
                             via_proxy=False)
        assert s == 200 and js["matched"] == N, (s, js)
        applied = lambda v: all((read_json(os.path.join(d, "config.json")) or {}).get("v") == v
                                for d in states)
        wait_until(lambda: applied(1), 60, "v=1 applied by every agent")

        st.hub.proc.send_signal(signal.SIGKILL)
        st.hub.proc.wait()
        st.start_hub()
        # The second SIGKILL, mid-storm: once some (not all) are back.
        mid = st.hub
        wait_until(lambda: len(opened(mid)) >= N // 5, 60, "a fifth of the agents back")
        back_at_kill = len(opened(mid))
        mid.proc.send_signal(signal.SIGKILL)
        mid.proc.wait()
        st.start_hub()
        last = st.hub
        wait_until(lambda: opened(last) >= ids, 60 + N / 5, "every agent back after the storm")
        print("  second SIGKILL with %d of %d back; all %d back after the restart"
              % (back_at_kill, N, N))

        def settled():
            ds = [d for d in devices(st) if d["device_id"] in ids]
            return len(ds) == N and all(d["presence"] == "online" and d["state"] == "active"
                                        for d in ds)
        wait_until(settled, 30, "every device online and active")
        for dev in ids:  # the change every agent acknowledged is still the stored one
            s, d, _, _ = st.api("GET", "/api/v1/devices/" + dev, via_proxy=False)
            assert s == 200 and d["twin"]["desired"].get("v") == 1, (dev, d)
        # And the hub still delivers: v=2 reaches all.
        s, js, _, _ = st.api("PATCH", "/api/v1/twins/desired?tag=fleet:storm", {"v": 2},
                             via_proxy=False)
        assert s == 200 and js["matched"] == N, (s, js)
        wait_until(lambda: applied(2), 60, "v=2 applied by every agent")
        # One live session per device on the last hub: no device was opened twice
        # without the first being closed.
        opens = [OPEN.search(l).group(1) for l in last.log_lines(r"event=session_open ")]
        closes = [re.search(r"device_id=(dev_\w+)", l).group(1)
                  for l in last.log_lines(r"event=session_close ")]
        live = {}
        for dev in opens:
            live[dev] = live.get(dev, 0) + 1
        for dev in closes:
            live[dev] -= 1
        assert all(n == 1 for n in live.values()) and set(live) == ids, \
            [(k, n) for k, n in live.items() if n != 1][:5]
    finally:
        st.stop()


if __name__ == "__main__":
    phytest.main()
