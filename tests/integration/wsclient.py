"""A deliberately small WebSocket client (RFC 6455) for hub tests that need exact
control over frames: oversized, binary, invalid UTF-8, floods, no pong. Normal
traffic is also tested with clients we did not write (phyagent, Node's ws)."""

import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class Closed(Exception):
    """The hub closed the WebSocket; .code and .reason say how (code None: no close
    frame, the TCP connection just ended)."""

    def __init__(self, code, reason):
        super().__init__("closed: %s %r" % (code, reason))
        self.code, self.reason = code, reason


def handshake(host, port, sni, cafile, device_id=None, secret=None, headers=None,
              timeout=10, proxy=None):
    """Opens TLS (directly, or through phyproxy when proxy=(host, port, ident)) and
    sends the upgrade request. Returns (status, headers dict, tls socket)."""
    raw = socket.create_connection((host, port), timeout=timeout)
    if proxy:
        ident = base64.b64encode((proxy[2] + ":" + (proxy[3] if len(proxy) > 3 else "")).encode()
                                 ).decode()
        raw.sendall(("CONNECT %s:443 HTTP/1.1\r\nHost: %s:443\r\n"
                     "Proxy-Authorization: Basic %s\r\n\r\n" % (sni, sni, ident)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = raw.recv(1)
            if not chunk:
                raise ConnectionError("proxy closed")
            head += chunk
        if b" 200 " not in head.split(b"\r\n")[0]:
            raise ConnectionError("proxy answered " + head.split(b"\r\n")[0].decode())
    ctx = ssl.create_default_context(cafile=cafile)
    s = ctx.wrap_socket(raw, server_hostname=sni)
    s.settimeout(timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    h = {"Host": sni, "Upgrade": "websocket", "Connection": "Upgrade",
         "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13",
         "Sec-WebSocket-Protocol": "phyhub.v1"}
    if device_id is not None:
        cred = base64.b64encode(("%s:%s" % (device_id, secret)).encode()).decode()
        h["Authorization"] = "Basic " + cred
    for k, v in (headers or {}).items():
        if v is None:
            h.pop(k, None)
        else:
            h[k] = v
    req = "GET /v1/hub HTTP/1.1\r\n" + "".join("%s: %s\r\n" % kv for kv in h.items()) + "\r\n"
    s.sendall(req.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1]) if lines and len(lines[0].split(" ")) > 1 else None
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if status == 101:
        expect = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        assert hdrs.get("sec-websocket-accept") == expect, hdrs
        assert hdrs.get("sec-websocket-protocol") == "phyhub.v1", hdrs
    return status, hdrs, WS(s, rest)


class WS:
    def __init__(self, sock, buffered=b""):
        self.s = sock
        self.buf = buffered
        self.auto_pong = True
        self.pings = 0

    @staticmethod
    def frame_bytes(opcode, payload, fin=True):
        """One masked client frame as bytes (to send whole or in pieces)."""
        header = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def send_frame(self, opcode, payload, fin=True):
        self.s.sendall(self.frame_bytes(opcode, payload, fin))

    def send_json(self, obj):
        self.send_frame(OP_TEXT, json.dumps(obj).encode())

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise Closed(None, "connection ended")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self):
        b0, b1 = self._read(2)
        opcode, n = b0 & 0x0F, b1 & 0x7F
        assert not (b1 & 0x80), "server frames must not be masked"
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        return opcode, self._read(n)

    def recv(self, timeout=5.0):
        """The next text message as parsed JSON; answers pings (unless auto_pong is
        off); raises Closed on a close frame or EOF."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message within %.1f s" % timeout)
            self.s.settimeout(left)
            opcode, payload = self.recv_frame()
            if opcode == OP_TEXT:
                return json.loads(payload)
            if opcode == OP_PING:
                self.pings += 1
                if self.auto_pong:
                    self.send_frame(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise Closed(code, payload[2:].decode(errors="replace"))

    def recv_type(self, type_, timeout=5.0):
        """Skips messages until one of the given type arrives."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.recv(max(0.01, deadline - time.monotonic()))
            if m.get("type") == type_:
                return m

    def expect_close(self, timeout=5.0):
        """Reads until the hub closes; returns the close code (None for EOF)."""
        try:
            while True:
                self.recv(timeout)
        except Closed as e:
            return e.code

    def close(self):
        try:
            self.send_frame(OP_CLOSE, struct.pack("!H", 1000))
        except OSError:
            pass
        self.s.close()
