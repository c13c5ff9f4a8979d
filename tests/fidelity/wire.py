"""HTTP/1.1 on raw sockets, for both sides of the fidelity suite.

The suite compares bytes, so neither side may use a library that normalises what it reads or
writes: header names keep their case and order, interim (1xx) answers are kept, and the framing of
every body (Content-Length, chunked, read until close, none) is reported, not hidden.
"""

import base64
import hashlib
import os
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field


class Closed(Exception):
    """The peer closed the connection (before what was being read was complete)."""


class Reader:
    """A buffered reader over a socket. `record`, when given, receives every byte read."""

    def __init__(self, sock, record=None):
        self.sock = sock
        self.buf = bytearray()
        self.record = record

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise Closed("connection closed by the peer")
        if self.record is not None:
            self.record(data)
        self.buf += data

    def line(self, limit=65536):
        """One line with its CRLF (or bare LF) removed."""
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[:end + 1])
                del self.buf[:end + 1]
                return line.rstrip(b"\r\n") if line.endswith(b"\n") else line
            if len(self.buf) > limit:
                raise ValueError("line too long")
            self._fill()

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def some(self, limit=65536):
        """Whatever is buffered, or the next bytes to arrive (at most `limit`)."""
        if not self.buf:
            self._fill()
        data = bytes(self.buf[:limit])
        del self.buf[:limit]
        return data

    def head(self):
        """The raw bytes of a message head, up to and including the empty line."""
        raw = bytearray()
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[:end + 1])
                del self.buf[:end + 1]
                raw += line
                if line in (b"\r\n", b"\n"):
                    return bytes(raw)
            else:
                if len(raw) + len(self.buf) > 1 << 20:
                    raise ValueError("head too long")
                self._fill()

    def until_close(self, sink):
        """Everything until the peer closes, given to sink piece by piece."""
        if self.buf:
            sink(bytes(self.buf))
            self.buf.clear()
        while True:
            data = self.sock.recv(65536)
            if not data:
                return
            if self.record is not None:
                self.record(data)
            sink(data)


def parse_head(raw):
    """(start line, [(name, value), ...]) with names and values exactly as sent (latin-1)."""
    lines = raw.decode("latin-1").split("\n")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    start = lines[0]
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name, value.strip(" \t")))
    return start, headers


def values(headers, name):
    name = name.lower()
    return [v for n, v in headers if n.lower() == name]


def value(headers, name):
    found = values(headers, name)
    return found[0] if found else None


def tokens(headers, name):
    """The comma-separated tokens of every `name` field, lower-cased."""
    return [t.strip().lower() for v in values(headers, name) for t in v.split(",") if t.strip()]


def read_body(reader, headers, sink, until_close_allowed):
    """Reads a body framed by `headers`; returns its framing: length, chunked, close or none.
    Chunk sizes are not reported: a proxy may re-chunk freely."""
    if "chunked" in tokens(headers, "transfer-encoding"):
        while True:
            size_line = reader.line()
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while reader.line():  # trailers
                    pass
                return "chunked"
            remaining = size
            while remaining:
                piece = reader.some(min(remaining, 65536))
                remaining -= len(piece)
                sink(piece)
            reader.exact(2)
    length = value(headers, "content-length")
    if length is not None:
        remaining = int(length)
        while remaining:
            piece = reader.some(min(remaining, 65536))
            remaining -= len(piece)
            sink(piece)
        return "length"
    if until_close_allowed:
        reader.until_close(sink)
        return "close"
    return "none"


# ---------------------------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------------------------

@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list
    head: bytes
    body: bytes = b""
    framing: str = "none"
    interim: list = field(default_factory=list)  # 1xx answers before this one
    sha256: str = ""
    length: int = 0

    def get(self, name):
        return value(self.headers, name)

    def all(self, name):
        return values(self.headers, name)


def request(method, target, headers, body=b"", version="HTTP/1.1"):
    """The bytes of a request, headers exactly as given (a list of (name, value))."""
    lines = [f"{method} {target} {version}"] + [f"{n}: {v}" for n, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Client:
    """One HTTP/1.1 client connection. Reads answers with their exact framing."""

    def __init__(self, address, timeout=30, tls=False, alpn=None):
        self.address = address
        self.sock = socket.create_connection(address, timeout=timeout)
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            if alpn:
                context.set_alpn_protocols(alpn)
            self.sock = context.wrap_socket(self.sock, server_hostname="localhost")
        self.reader = Reader(self.sock)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def head_only(self, timeout=None):
        """The next answer's head (interim ones included), without reading a body."""
        old = self.sock.gettimeout()
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            raw = self.reader.head()
        finally:
            self.sock.settimeout(old)
        start, headers = parse_head(raw)
        version, _, rest = start.partition(" ")
        status, _, reason = rest.partition(" ")
        return Response(version, int(status), reason, headers, raw)

    def response(self, method="GET", keep_body=True, interim=True):
        """The next final answer; 1xx answers before it are collected in `.interim` (101 is
        final). With keep_body False only the body's length and sha256 are kept."""
        collected = []
        while True:
            resp = self.head_only()
            if 100 <= resp.status < 200 and resp.status != 101 and interim:
                collected.append(resp)
                continue
            break
        resp.interim = collected
        digest = hashlib.sha256()
        parts = []

        def sink(piece):
            digest.update(piece)
            resp.length += len(piece)
            if keep_body:
                parts.append(piece)

        no_body = (method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200)
        if not no_body:
            resp.framing = read_body(self.reader, resp.headers, sink, until_close_allowed=True)
        resp.body = b"".join(parts)
        resp.sha256 = digest.hexdigest()
        return resp

    def closed_by_peer(self, wait=1.0):
        """True when the peer has closed (EOF or reset) within `wait` seconds, with nothing
        else sent in between."""
        if self.reader.buf:
            return False
        old = self.sock.gettimeout()
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(1)
            if data:
                self.reader.buf += data
                return False
            return True
        except socket.timeout:
            return False
        except OSError:
            return True
        finally:
            self.sock.settimeout(old)


def exchange(address, method, target, headers, body=b"", version="HTTP/1.1", timeout=30, **kw):
    with Client(address, timeout=timeout) as c:
        c.send(request(method, target, headers, body, version))
        return c.response(method, **kw)


# ---------------------------------------------------------------------------------------------
# WebSocket (RFC 6455) frames, for the upstream's echo server
# ---------------------------------------------------------------------------------------------

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept(key):
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def ws_mask(payload, key):
    """XOR with the 4-byte key repeated (as one big integer: fast enough for 100 KiB)."""
    n = len(payload)
    if n == 0:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def ws_read_frame(reader):
    """(fin, opcode, payload) of the next frame, unmasked."""
    b1, b2 = reader.exact(2)
    fin, opcode = b1 >> 7, b1 & 0x0F
    masked, length = b2 >> 7, b2 & 0x7F
    if length == 126:
        length = struct.unpack("!H", reader.exact(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", reader.exact(8))[0]
    mask = reader.exact(4) if masked else None
    payload = reader.exact(length)
    if mask:
        payload = ws_mask(payload, mask)
    return fin, opcode, payload


def ws_frame(opcode, payload, fin=True, mask=False):
    head = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head.append(mbit | n)
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        head += key
        payload = ws_mask(payload, key)
    return bytes(head) + payload


def now():
    return time.monotonic()
