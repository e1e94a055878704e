"""A small fleet of real phyagents through phyproxy: the hub is SIGKILLed right after
acknowledging twin changes, restarted, and every agent comes back online by itself
with every acknowledged change applied; SIGKILLing an agent marks it offline."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
from phytest import wait_until  # noqa: E402
from stack import Stack, read_json  # noqa: E402

T = {"agents": {}}
SERIALS = ["FLEET-1", "FLEET-2", "FLEET-3"]


def setup():
    T["st"] = Stack("fleet", hub_flags=["--ping-interval", "1", "--ping-timeout", "3"])


def teardown():
    if "st" in T:
        T["st"].stop()


def start_agent(serial):
    agent, state = T["st"].start_agent(serial, ["--reconnect-min", "1", "--reconnect-max", "2",
                                                "--status-interval", "5"])
    T["agents"][serial] = (agent, state)
    return agent, state


def devices():
    s, js, _, _ = T["st"].api("GET", "/api/v1/devices")
    assert s == 200, (s, js)
    return {d["serial"]: d for d in js["devices"]}


def config(serial):
    return read_json(os.path.join(T["agents"][serial][1], "config.json"))


def test_fleet_provisions_and_comes_online():
    for sn in SERIALS:
        start_agent(sn)
    for sn in SERIALS:
        wait_until(lambda: os.path.exists(os.path.join(T["agents"][sn][1], "registration.json")),
                   15, "registration of " + sn)
        s, js, _, _ = T["st"].api("POST", "/api/v1/devices/claim", {"serial": sn,
                                                                     "tags": {"fleet": "t"}})
        assert s == 201, (s, js)
    wait_until(lambda: all(d["presence"] == "online" for d in devices().values())
               and len(devices()) == 3, 20, "three agents online")


def test_hub_sigkill_loses_no_acknowledged_change():
    st = T["st"]
    ids = {sn: d["device_id"] for sn, d in devices().items()}
    acked = {}
    for seq in range(1, 6):
        for sn, dev in ids.items():
            s, js, _, _ = st.api("PATCH", "/api/v1/devices/%s/twin/desired" % dev,
                                 {"seq": seq, "who": sn})
            assert s == 200, (s, js)
            acked[sn] = js["version"]
    s, js, _, _ = st.api("PATCH", "/api/v1/twins/desired?tag=fleet:t", {"wave": "last"})
    assert s == 200 and js["matched"] == 3, js
    st.hub.kill()  # right after the acknowledgements
    st.start_hub()
    # Every agent reconnects by itself (decorrelated backoff, 1-2 s here) ...
    wait_until(lambda: all(d["presence"] == "online" for d in devices().values()), 30,
               "every agent back online")
    # ... and applies every change the console got a 200 for.
    for sn in SERIALS:
        wait_until(lambda: config(sn) == {"seq": 5, "who": sn, "wave": "last"}, 15,
                   "last acknowledged config at " + sn)
    for sn, dev in ids.items():
        s, js, _, _ = st.api("GET", "/api/v1/devices/" + dev)
        assert js["twin"]["desired_version"] == acked[sn] + 1
        wait_until(lambda: st.api("GET", "/api/v1/devices/" + dev)[1]["twin"]["reported"]
                   .get("config_status", {}).get("version") == acked[sn] + 1, 15,
                   "config_status reported by " + sn)


def test_agent_sigkill_goes_offline_within_timeout():
    agent, _ = T["agents"]["FLEET-1"]
    agent.kill()
    t0 = time.monotonic()
    wait_until(lambda: devices()["FLEET-1"]["presence"] == "offline", 10, "FLEET-1 offline")
    assert time.monotonic() - t0 < 4.5  # ping timeout 3 s (+ scheduling)
    assert all(devices()[sn]["presence"] == "online" for sn in SERIALS[1:])


def test_no_secret_in_logs():
    st = T["st"]
    for sn in SERIALS:
        try:
            with open(os.path.join(T["agents"][sn][1], "credentials.json")) as f:
                st.secrets.add(json.load(f)["device_secret"])
        except FileNotFoundError:
            pass
    assert len(st.secrets) >= 4
    assert not st.leaked_secrets()


if __name__ == "__main__":
    phytest.main()
