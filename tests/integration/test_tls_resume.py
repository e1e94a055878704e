"""TLS session resumption (issue 13): session tickets under the region's key file
(--tls-ticket-keys, `phyhub admin ticket-key-rotate`) resume after a hub restart and
on another hub with the same file; a rotation keeps the previous key for the tickets
already out, the one after retires it; a hub without the file issues no tickets; a
key file others may read stops the hub; phyagent offers its last session when it
reconnects."""

import os
import socket
import ssl
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
from phytest import binary, wait_until  # noqa: E402
from stack import HOST, Stack  # noqa: E402

T = {}
# A heartbeat of 1 s: the hub looks at the key file again at most every second.
FLAGS = ["--node-heartbeat", "1", "--node-timeout", "3"]


def rotate(path):
    res = subprocess.run([binary("phyhub"), "admin", "ticket-key-rotate", path],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout


def setup():
    T["dir"] = phytest.tmpdir("tlsresume")
    T["keys"] = os.path.join(T["dir"], "tickets")
    rotate(T["keys"])
    assert os.stat(T["keys"]).st_mode & 0o777 == 0o600
    with open(T["keys"]) as f:
        assert len(f.read().splitlines()) == 1
    T["st"] = Stack("tlsresume", hub_flags=FLAGS + ["--tls-ticket-keys", T["keys"]])
    T["ctx"] = ssl.create_default_context(cafile=T["st"].pki["ca"])


def teardown():
    if "st" in T:
        T["st"].stop()


def hub_argv(name, port, flags=()):
    """Another hub with the stack's certificate and a SQLite store of its own."""
    st = T["st"]
    return [binary("phyhub"), "--region", "eu", "--provisioning", "--listen",
            "127.0.0.1:%d" % port, "--db", os.path.join(T["dir"], name + ".db"),
            "--tls-cert", st.pki["cert"], "--tls-key", st.pki["key"]] + FLAGS + list(flags)


def other_hub(name, flags=()):
    """Starts hub_argv(...) (stopped with the stack); returns its port."""
    port = phytest.free_port()
    T["st"].daemon(hub_argv(name, port, flags), name).wait_port(port)
    return port


def handshake(port, session=None):
    """One TLS connection to a hub and one request on it (so that the TLS 1.3
    tickets, sent after the handshake, are read): (its session, whether it resumed)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with T["ctx"].wrap_socket(raw, server_hostname=HOST, session=session) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: " + HOST.encode() +
                  b"\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:100]
        return s.session, s.session_reused


def reloads(st):
    return len(st.hub.log_lines(r"tls_ticket_keys_loaded"))


def wait_reload(st, before):
    """Connections until the hub has read the key file again (it looks at most every
    --node-heartbeat, as connections come)."""
    def done():
        handshake(st.hub_port)
        return reloads(st) > before
    wait_until(done, 15, "the hub to read the rotated key file", interval=0.2)


def test_resumes_after_restart_and_on_another_hub():
    st = T["st"]
    first, reused = handshake(st.hub_port)
    assert not reused and first.has_ticket
    again, reused = handshake(st.hub_port, first)
    assert reused
    st.hub.stop()
    st.start_hub()
    after, reused = handshake(st.hub_port, again)
    assert reused, "no resumption after a restart"
    # Another hub of the region: the same key file, a store of its own.
    port = other_hub("hub-b", ["--tls-ticket-keys", T["keys"]])
    _, reused = handshake(port, after)
    assert reused, "no resumption on another hub with the same key file"
    # A hub without the file sends no ticket and resumes nothing.
    port = other_hub("hub-c")
    none, reused = handshake(port, after)
    assert not reused and not none.has_ticket


def test_rotation_keeps_the_previous_key():
    st = T["st"]
    old, _ = handshake(st.hub_port)
    n = reloads(st)
    rotate(T["keys"])
    with open(T["keys"]) as f:
        assert len(f.read().splitlines()) == 2
    wait_reload(st, n)
    assert st.hub.log_lines(r"tls_ticket_keys_loaded keys=2")
    renewed, reused = handshake(st.hub_port, old)
    assert reused, "a ticket under the previous key no longer resumes"
    n = reloads(st)
    rotate(T["keys"])  # old's key retires
    wait_reload(st, n)
    _, reused = handshake(st.hub_port, old)
    assert not reused, "a retired key still resumes"
    _, reused = handshake(st.hub_port, renewed)
    assert reused, "the renewed ticket (previous key now) does not resume"


def test_key_file_readable_by_others_stops_the_hub():
    bad = os.path.join(T["dir"], "tickets-bad")
    with open(T["keys"]) as f, open(bad, "w") as g:
        g.write(f.read())
    os.chmod(bad, 0o644)
    res = subprocess.run(hub_argv("bad", phytest.free_port(), ["--tls-ticket-keys", bad]),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode != 0 and "chmod 600" in res.stderr, (res.returncode, res.stderr)
    assert "tickets-bad" in res.stderr
    os.chmod(bad, 0o600)
    with open(bad, "w") as g:
        g.write("00" * 80 + "\nnot hex\n")
    res = subprocess.run([binary("phyhub"), "admin", "ticket-key-rotate", bad],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode != 0 and "hex digits" in res.stderr, res.stderr


def test_agent_resumes_after_hub_restart():
    st = T["st"]
    [(agent, _, creds)] = st.bulk_agents(1, "resume:yes")
    dev = creds["device_id"]
    st.hub.wait_log(r"session_open device_id=%s .*tls=full" % dev, 20)
    st.hub.stop()
    st.start_hub()
    st.hub.wait_log(r"session_open device_id=%s .*tls=resumed" % dev, 30)
    agent.stop()


if __name__ == "__main__":
    phytest.main()
