"""The recording upstream: an HTTP/1.1 server on raw sockets (one thread per connection) that
keeps the exact bytes of every request head it receives, per connection, and answers by path.

Each request is found again by its marker: the `X-Fid` header, or a `fid` query parameter when
the client cannot set headers. Bodies are never held whole: the upstream keeps their length, their
sha256 and their first 4 KiB, so a 50 MiB upload costs no memory here either.

Routes (the query string is ignored except where named):
  /echo, anything unknown   200 JSON: method, target, version, headers in order, body length/sha256
  /chunked                  a chunked answer (close-delimited to an HTTP/1.0 request)
  /nolength                 200 without Content-Length, closed after the body
  /download?mib=N           N MiB of a known pattern, with Content-Length
  /upload                   reads a body of any size, answers its length and sha256 (JSON)
  /sse?at=MS,MS,...         text/event-stream, one event at each offset (ms from the request)
  /ws                       WebSocket upgrade, then echoes every message (hand-written RFC 6455)
  /status/N                 N without a body for 204/304 (304 with an ETag)
  /early-hints              103 Early Hints, then 200
  /continue                 honours `Expect: 100-continue` by sending 100 Continue itself
  /hop                      an answer carrying hop-by-hop headers (Keep-Alive, Connection: X-Hop)
  /slow?ms=N                answers after N ms
  /gzip                     an HTML page, gzip-encoded when Accept-Encoding allows it
  /garbage                  bytes that are not HTTP, then close
HEAD is answered with the head GET would get.
"""

import gzip
import hashlib
import json
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from wire import Closed, Reader, parse_head, read_body, tokens, value, ws_accept, ws_frame, \
    ws_read_frame

RAW_CAP = 256 * 1024          # bytes of raw input kept per connection
BODY_PREFIX = 4096            # bytes of each body kept
MIB = 1 << 20
DOWNLOAD_BLOCK = bytes(range(256)) * 4096   # 1 MiB
CHUNKED_PARTS = [b"hello ", b"chunked ", b"world\n"]
NOLENGTH_BODY = b"no length, closed after the body\n" * 3
GZIP_PAGE = (b"<!doctype html><html><head><title>login</title></head><body>"
             + b"<p>The login page, compressible text.</p>" * 60 + b"</body></html>\n")
GZIP_BODY = gzip.compress(GZIP_PAGE, mtime=0)


def download_sha256(mib):
    digest = hashlib.sha256()
    for _ in range(mib):
        digest.update(DOWNLOAD_BLOCK)
    return digest.hexdigest()


@dataclass
class Recorded:
    """One request as the upstream received it."""
    connection: "Connection"
    index: int                 # position on its connection
    head: bytes                # exact bytes of the request line and headers
    method: str
    target: str
    version: str
    headers: list              # [(name, value)], exactly as sent
    fid: str
    at: float
    framing: str = "none"      # of the request body: length, chunked, none
    body_length: int = 0
    body_sha256: str = ""
    body_prefix: bytes = b""
    complete: bool = False     # the body was read to its end
    sent_100: bool = False     # this upstream answered 100 Continue

    def view(self):
        return {"method": self.method, "target": self.target, "version": self.version,
                "headers": self.headers, "body_length": self.body_length,
                "body_sha256": self.body_sha256, "framing": self.framing, "fid": self.fid,
                "connection": self.connection.id, "index": self.index}


@dataclass
class Connection:
    id: int
    peer: tuple
    raw: bytearray = field(default_factory=bytearray)
    requests: list = field(default_factory=list)

    def take(self, data):
        room = RAW_CAP - len(self.raw)
        if room > 0:
            self.raw += data[:room]


class Upstream:
    def __init__(self):
        self.lock = threading.Condition()
        self.connections = []
        self.by_fid = {}
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.address = self.listener.getsockname()
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    # -- recording ------------------------------------------------------------------------

    def wait(self, fid, timeout=10.0):
        """The request marked `fid`, or None when it has not arrived within `timeout`."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while fid not in self.by_fid:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.lock.wait(left)
            return self.by_fid[fid]

    def seen(self, fid):
        with self.lock:
            return self.by_fid.get(fid)

    def describe(self, fid):
        """The recorded bytes behind `fid`, for a failure report."""
        req = self.seen(fid)
        if req is None:
            return f"upstream: no request with fid {fid} arrived"
        conn = req.connection
        return (f"upstream: connection {conn.id} request {req.index}, body {req.framing} "
                f"{req.body_length} bytes:\n{req.head.decode('latin-1')}")

    # -- serving --------------------------------------------------------------------------

    def _accept(self):
        while not self.stopped:
            try:
                sock, peer = self.listener.accept()
            except OSError:
                return
            with self.lock:
                conn = Connection(len(self.connections) + 1, peer)
                self.connections.append(conn)
            threading.Thread(target=self._serve, args=(sock, conn), daemon=True).start()

    def stop(self):
        self.stopped = True
        self.listener.close()

    def _serve(self, sock, conn):
        reader = Reader(sock, record=conn.take)
        try:
            while True:
                try:
                    raw = reader.head()
                except (Closed, OSError, ValueError):
                    return
                start, headers = parse_head(raw)
                parts = start.split(" ")
                if len(parts) != 3:
                    return
                method, target, version = parts
                path, _, query = target.partition("?")
                params = dict(urllib.parse.parse_qsl(query))
                fid = value(headers, "x-fid") or params.get("fid", "")
                req = Recorded(conn, len(conn.requests), raw, method, target, version, headers,
                               fid, time.monotonic())
                with self.lock:
                    conn.requests.append(req)
                    if fid:
                        self.by_fid[fid] = req
                    self.lock.notify_all()
                route = ROUTES.get(path)
                if route is None and path.startswith("/status/"):
                    route = Upstream._status
                keep = (route or Upstream._echo)(self, sock, reader, req, params)
                connection = tokens(headers, "connection")
                if version == "HTTP/1.0" and "keep-alive" not in connection:
                    keep = False
                if not keep or "close" in connection:
                    return
        except (Closed, OSError):
            return
        finally:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    # -- helpers for routes ----------------------------------------------------------------

    @staticmethod
    def read_request_body(reader, req):
        digest = hashlib.sha256()
        prefix = bytearray()

        def sink(piece):
            digest.update(piece)
            req.body_length += len(piece)
            if len(prefix) < BODY_PREFIX:
                prefix.extend(piece[:BODY_PREFIX - len(prefix)])

        req.framing = read_body(reader, req.headers, sink, until_close_allowed=False)
        req.body_sha256 = digest.hexdigest()
        req.body_prefix = bytes(prefix)
        req.complete = True

    @staticmethod
    def answer(sock, req, status, headers, body=b"", reason=None):
        reasons = {200: "OK", 101: "Switching Protocols", 204: "No Content",
                   304: "Not Modified", 103: "Early Hints", 100: "Continue"}
        head = f"HTTP/1.1 {status} {reason or reasons.get(status, 'Status')}\r\n"
        head += "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
        sock.sendall(head.encode("latin-1") + (b"" if req.method == "HEAD" else body))

    def _echo(self, sock, reader, req, params):
        self.read_request_body(reader, req)
        body = json.dumps(req.view()).encode()
        self.answer(sock, req, 200, [("Content-Type", "application/json"),
                                     ("Content-Length", str(len(body)))], body)
        return True

    def _upload(self, sock, reader, req, params):
        self.read_request_body(reader, req)
        body = json.dumps({"length": req.body_length, "sha256": req.body_sha256,
                           "framing": req.framing}).encode()
        self.answer(sock, req, 200, [("Content-Type", "application/json"),
                                     ("Content-Length", str(len(body)))], body)
        return True

    def _continue(self, sock, reader, req, params):
        # What a server that implements Expect does: 100 before reading the body.
        if "100-continue" in tokens(req.headers, "expect"):
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            req.sent_100 = True
        return self._echo(sock, reader, req, params)

    def _chunked(self, sock, reader, req, params):
        self.read_request_body(reader, req)
        if req.version == "HTTP/1.0":
            # RFC 9112 6.1: never chunked to an HTTP/1.0 recipient; the close ends the body.
            self.answer(sock, req, 200, [("Content-Type", "text/plain"),
                                         ("Connection", "close")], b"".join(CHUNKED_PARTS))
            return False
        self.answer(sock, req, 200, [("Content-Type", "text/plain"),
                                     ("Transfer-Encoding", "chunked")])
        if req.method != "HEAD":
            for part in CHUNKED_PARTS:
                sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
                time.sleep(0.01)
            sock.sendall(b"0\r\n\r\n")
        return True

    def _nolength(self, sock, reader, req, params):
        self.read_request_body(reader, req)
        self.answer(sock, req, 200, [("Content-Type", "text/plain"), ("Connection", "close")],
                    NOLENGTH_BODY)
        return False

    def _download(self, sock, reader, req, params):
        self.read_request_body(reader, req)
        mib = int(params.get("mib", "1"))
        self.answer(sock, req, 200, [("Content-Type", "application/octet-stream"),
                                     ("Content-Length", str(mib * MIB))])
        if req.method != "HEAD":
            for _ in range(mib):
                sock.sendall(DOWNLOAD_BLOCK)
        return True

    def _sse(self, sock, reader, req, params):
        self.read_request_body(reader, req)
        offsets = [int(x) for x in params.get("at", "0").split(",")]
        chunked = req.version != "HTTP/1.0"
        headers = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
        headers.append(("Transfer-Encoding", "chunked") if chunked else ("Connection", "close"))
        self.answer(sock, req, 200, headers)
        if req.method == "HEAD":
            return True
        start = req.at
        for n, offset in enumerate(offsets):
            delay = start + offset / 1000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            event = f"id: {n}\ndata: event {n} at {offset} ms\n\n".encode()
            sock.sendall(b"%x\r\n%s\r\n" % (len(event), event) if chunked else event)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        return chunked

    def _ws(self, sock, reader, req, params):
        self.read_request_body(reader, req)
        key = value(req.headers, "sec-websocket-key")
        if "websocket" not in tokens(req.headers, "upgrade") or not key:
            self.answer(sock, req, 400, [("Content-Length", "0")], reason="Bad Request")
            return False
        self.answer(sock, req, 101, [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                     ("Sec-WebSocket-Accept", ws_accept(key))])
        message, message_opcode = bytearray(), 0
        while True:
            fin, opcode, payload = ws_read_frame(reader)
            if opcode == 8:            # close: answer it and end
                sock.sendall(ws_frame(8, payload[:2]))
                return False
            if opcode == 9:            # ping
                sock.sendall(ws_frame(10, payload))
                continue
            if opcode == 10:
                continue
            if opcode in (1, 2):
                message_opcode = opcode
            message += payload
            if fin:
                sock.sendall(ws_frame(message_opcode, bytes(message)))
                message.clear()

    def _status(self, sock, reader, req, params):
        self.read_request_body(reader, req)
        code = int(req.target.split("?")[0].rsplit("/", 1)[1])
        if code == 204:
            self.answer(sock, req, 204, [("X-Status", "204")])
        elif code == 304:
            self.answer(sock, req, 304, [("ETag", '"v1"'), ("X-Status", "304")])
        else:
            body = f"status {code}\n".encode()
            self.answer(sock, req, code, [("Content-Type", "text/plain"),
                                          ("Content-Length", str(len(body)))], body)
        return True

    def _early_hints(self, sock, reader, req, params):
        self.read_request_body(reader, req)
        sock.sendall(b"HTTP/1.1 103 Early Hints\r\n"
                     b"Link: </style.css>; rel=preload; as=style\r\n\r\n")
        time.sleep(0.05)
        body = b"hinted\n"
        self.answer(sock, req, 200, [("Content-Type", "text/plain"),
                                     ("Link", "</style.css>; rel=preload; as=style"),
                                     ("Content-Length", str(len(body)))], body)
        return True

    def _hop(self, sock, reader, req, params):
        self.read_request_body(reader, req)
        body = b"hop\n"
        self.answer(sock, req, 200, [
            ("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
            ("Keep-Alive", "timeout=5"), ("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"),
            ("Proxy-Connection", "keep-alive"), ("X-End", "1"),
        ], body)
        return True

    def _slow(self, sock, reader, req, params):
        self.read_request_body(reader, req)
        ms = int(params.get("ms", "0"))
        time.sleep(ms / 1000)
        body = f"answered after {ms} ms\n".encode()
        self.answer(sock, req, 200, [("Content-Type", "text/plain"),
                                     ("Content-Length", str(len(body)))], body)
        return True

    def _gzip(self, sock, reader, req, params):
        self.read_request_body(reader, req)
        accepts_gzip = "gzip" in [t.split(";")[0].strip()
                                  for t in tokens(req.headers, "accept-encoding")]
        headers = [("Content-Type", "text/html; charset=utf-8"), ("Vary", "Accept-Encoding")]
        if accepts_gzip:
            headers += [("Content-Encoding", "gzip"), ("Content-Length", str(len(GZIP_BODY)))]
            self.answer(sock, req, 200, headers, GZIP_BODY)
        else:
            headers += [("Content-Length", str(len(GZIP_PAGE)))]
            self.answer(sock, req, 200, headers, GZIP_PAGE)
        return True

    def _garbage(self, sock, reader, req, params):
        self.read_request_body(reader, req)
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        return False


ROUTES = {
    "/echo": Upstream._echo,
    "/upload": Upstream._upload,
    "/continue": Upstream._continue,
    "/chunked": Upstream._chunked,
    "/nolength": Upstream._nolength,
    "/download": Upstream._download,
    "/sse": Upstream._sse,
    "/ws": Upstream._ws,
    "/early-hints": Upstream._early_hints,
    "/hop": Upstream._hop,
    "/slow": Upstream._slow,
    "/gzip": Upstream._gzip,
    "/garbage": Upstream._garbage,
}
