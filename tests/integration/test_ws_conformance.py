"""The hub's WebSocket endpoint against RFC 6455, frame by frame (the categories of the
Autobahn test suite that apply to a server): framing, reserved bits and opcodes,
lengths, masking, fragmentation with control frames in between, UTF-8 split across
fragments, close frames, limits and the frame rate. Each case states the behaviour
the RFC requires and checks the close code the hub answers with."""

import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phytest  # noqa: E402
import wsclient  # noqa: E402
from stack import Stack  # noqa: E402
from wsclient import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT  # noqa: E402

ST = None
DEV = None


def setup():
    global ST, DEV
    ST = Stack("ws_conformance", hub_flags=["--device-msg-rate", "20"], proxy=False)
    DEV = ST.provision("WS-CONF")


def teardown():
    if ST is not None:
        ST.stop()


def session():
    status, _, ws = ST.ws_connect(DEV, via_proxy=False)
    assert status == 101, status
    return ws


def header(b0, length, masked=True, form=None):
    """A frame header with an explicit length encoding (form 7, 16 or 64)."""
    form = form or (7 if length < 126 else 16 if length < 65536 else 64)
    m = 0x80 if masked else 0
    if form == 7:
        return bytes([b0, m | length])
    if form == 16:
        return bytes([b0, m | 126]) + struct.pack("!H", length)
    return bytes([b0, m | 127]) + struct.pack("!Q", length)


def masked(payload):
    mask = b"\x01\x02\x03\x04"
    return mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


def expect_close(ws, code, within=3.0):
    t0 = time.monotonic()
    got = ws.expect_close(within)
    assert got == code, (got, code)
    assert time.monotonic() - t0 < within
    ws.s.close()


def case(raw, code):
    ws = session()
    ws.s.sendall(raw)
    expect_close(ws, code)


def test_protocol_errors_are_answered_with_1002():
    # RFC 6455 5.5: control frames have payloads of at most 125 bytes ...
    case(header(0x80 | OP_PING, 126) + masked(b"x" * 126), 1002)
    # ... and must not be fragmented.
    case(header(OP_PING, 1) + masked(b"x"), 1002)
    # 5.2: the most significant bit of a 64-bit length must be 0; lengths use the
    # minimal number of bytes.
    case(header(0x80 | OP_TEXT, 1 << 63, form=64) + b"\0\0\0\0", 1002)
    case(header(0x80 | OP_TEXT, 5, form=16) + masked(b"hello"), 1002)
    case(header(0x80 | OP_TEXT, 5, form=64) + masked(b"hello"), 1002)
    # 5.2: RSV bits must be 0 without an extension; unknown opcodes fail.
    case(header(0x80 | 0x40 | OP_TEXT, 2) + masked(b"{}"), 1002)
    case(header(0x80 | 3, 0) + masked(b""), 1002)
    case(header(0x80 | 0xB, 0) + masked(b""), 1002)
    # 5.1: a client masks every frame.
    case(header(0x80 | OP_TEXT, 2, masked=False) + b"{}", 1002)
    # 5.4: a continuation needs an open message; a new message cannot start inside one.
    case(header(0x80 | OP_CONT, 2) + masked(b"{}"), 1002)
    case(header(OP_TEXT, 1) + masked(b"{") + header(0x80 | OP_TEXT, 2) + masked(b"{}"), 1002)
    # 5.5.1: a close body is empty or at least a 2-byte code.
    case(header(0x80 | OP_CLOSE, 1) + masked(b"\x03"), 1002)


def test_absurd_length_is_refused_at_the_header():
    """A declared length of 2^62 is refused with 1009 at once, not after waiting for a
    payload that would never fit."""
    case(header(0x80 | OP_TEXT, 1 << 62, form=64) + b"\1\2\3\4", 1009)


def test_fragmented_message_with_a_ping_between():
    """5.4: control frames may come between the fragments of a message; the ping is
    answered, the message is handled once whole."""
    ws = session()
    ws.auto_pong = False
    msg = b'{"type":"twin.get","id":"frag"}'
    ws.s.sendall(header(OP_TEXT, 10) + masked(msg[:10]) + header(0x80 | OP_PING, 4) +
                 masked(b"ping") + header(OP_CONT, 10) + masked(msg[10:20]) +
                 header(0x80 | OP_CONT, len(msg) - 20) + masked(msg[20:]))
    op, payload = ws.recv_frame()
    while op == OP_PING:  # the hub's own keepalive may come first
        op, payload = ws.recv_frame()
    assert (op, payload) == (OP_PONG, b"ping"), (op, payload)
    assert ws.recv_type("twin")["id"] == "frag"
    ws.close()


def test_utf8_split_across_fragments():
    """8.1: UTF-8 is checked on the whole message: a character split across fragments
    is fine, an invalid sequence is 1007."""
    ws = session()
    msg = '{"type":"twin.get","id":"\u00e9t\u00e9"}'.encode()
    cut = msg.index(b"\xc3") + 1  # inside the 2-byte sequence
    ws.s.sendall(header(OP_TEXT, cut) + masked(msg[:cut]) +
                 header(0x80 | OP_CONT, len(msg) - cut) + masked(msg[cut:]))
    assert ws.recv_type("twin")["id"] == "\u00e9t\u00e9"
    ws.s.sendall(header(OP_TEXT, 2) + masked(b'{"') + header(0x80 | OP_CONT, 3) +
                 masked(b"\xc3\x28}"))
    expect_close(ws, 1007)


def test_binary_and_close_codes():
    case(header(0x80 | OP_BINARY, 2) + masked(b"{}"), 1003)
    ws = session()
    ws.s.sendall(header(0x80 | OP_CLOSE, 2) + masked(struct.pack("!H", 1000)))
    expect_close(ws, 1000)


def test_close_codes_and_reasons():
    """7.4 and 5.5.1 (Autobahn category 7): a close with a code a peer may send is
    answered with that code; codes no peer may send (reserved, unassigned, out of
    range: 7.4.1, 7.4.2) fail the connection with 1002; a reason that is not UTF-8
    fails it with 1007 (8.1); data after a close is not handled."""
    for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999):
        ws = session()
        ws.s.sendall(header(0x80 | OP_CLOSE, 2) + masked(struct.pack("!H", code)))
        expect_close(ws, code)
    for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535):
        case(header(0x80 | OP_CLOSE, 2) + masked(struct.pack("!H", code)), 1002)
    reason = "\u00e9" * 61  # 122 bytes + 2 for the code: the largest control payload
    ws = session()
    body = struct.pack("!H", 1000) + reason.encode()
    ws.s.sendall(header(0x80 | OP_CLOSE, len(body)) + masked(body))
    expect_close(ws, 1000)
    body = struct.pack("!H", 1000) + b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"
    case(header(0x80 | OP_CLOSE, len(body)) + masked(body), 1007)
    ws = session()  # a message after the close is not answered
    ws.s.sendall(header(0x80 | OP_CLOSE, 2) + masked(struct.pack("!H", 1000)) +
                 header(0x80 | OP_TEXT, 31) + masked(b'{"type":"twin.get","id":"late"}'))
    op, payload = ws.recv_frame()
    while op == OP_PING:
        op, payload = ws.recv_frame()
    assert op == OP_CLOSE and payload[:2] == struct.pack("!H", 1000), (op, payload)
    ws.s.close()


def test_pings_and_pongs():
    """5.5.2, 5.5.3 (Autobahn category 2): a ping is answered with a pong carrying its
    payload (up to 125 bytes, binary included); an unsolicited pong is ignored."""
    ws = session()
    ws.auto_pong = False
    for payload in (b"", b"\x00\xff" * 62 + b"x", "h\u00e9".encode()):
        ws.s.sendall(header(0x80 | OP_PING, len(payload)) + masked(payload))
        op, got = ws.recv_frame()
        while op == OP_PING:
            op, got = ws.recv_frame()
        assert (op, got) == (OP_PONG, payload), (op, got)
    ws.s.sendall(header(0x80 | OP_PONG, 4) + masked(b"junk") +
                 header(0x80 | OP_TEXT, 31) + masked(b'{"type":"twin.get","id":"pong"}'))
    assert ws.recv_type("twin")["id"] == "pong"
    ws.close()


def test_frame_rate_limits_pings():
    """Control frames count against a frame rate (4x the message rate): a ping flood
    is cut with 1008, not answered 3 million times."""
    ws = session()
    ws.auto_pong = False
    frame = header(0x80 | OP_PING, 1) + masked(b"p")
    try:
        ws.s.sendall(frame * 1000)
    except OSError:
        pass  # the hub may close while we still write
    pongs, code = 0, None
    try:
        while True:
            op, payload = ws.recv_frame()
            if op == OP_PONG:
                pongs += 1
            elif op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0]
                break
    except (wsclient.Closed, OSError):
        pass
    assert code == 1008, code
    assert pongs <= 20 * 4 + 5, pongs  # the burst, not the flood
    ws.s.close()
    # The device can come back at once.
    ws = session()
    ws.send_json({"type": "twin.get", "id": "after"})
    assert ws.recv_type("twin")["id"] == "after"
    ws.close()


if __name__ == "__main__":
    phytest.main()
