"""The cases of the fidelity suite. Each case sends the same requests over each route it names
(direct = the recording upstream itself, nginx = the reference proxy, eam = eam-proxy; `-tls` for
a TLS listener, `-short` for the instances with short timeouts) and checks what the upstream
received and what the client received. Names starting with `differs-` pin a deliberate,
documented difference between eam-proxy and nginx."""

import datetime
import difflib
import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import httpx
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from stack import StartError
from upstream import (CHUNKED_PARTS, DOWNLOAD_BLOCK, GZIP_PAGE, MIB, NOLENGTH_BODY,
                      download_sha256)
from wire import Client, Closed, read_body, request, tokens, value

HERE = Path(__file__).resolve().parent
CASES = []


class Case:
    def __init__(self, name, fn, kind):
        self.name = name
        self.fn = fn
        self.kind = kind          # "fast", "slow" (run concurrently) or "last"
        self.doc = " ".join((fn.__doc__ or "").split())


def case(name, kind="fast"):
    """Registers a case. "slow" cases mostly wait and run in their own thread, concurrently;
    "last" ones run after all others (they read what the others left behind)."""
    def register(fn):
        CASES.append(Case(name, fn, kind))
        return fn
    return register


class Skip(Exception):
    pass


H1 = ("direct", "nginx", "eam")
PROXIES = ("nginx", "eam")

# ---------------------------------------------------------------------------------------------
# Normalised views and comparisons
# ---------------------------------------------------------------------------------------------

# What a proxy is expected to change in a request: the X-Forwarded-* it sets (checked by
# differs-forwarded-and-routing-headers), and the hop-by-hop Connection. Host keeps its name
# and place; only its port (the address the client connected to) differs. The body's framing
# headers are compared as the body's framing, not by place: nginx writes Content-Length right
# after Host.
PROXY_SET = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "connection"}
FRAMING = {"content-length", "transfer-encoding"}
# What may differ in an answer without a client noticing: the proxy's own Date and Server, and
# the hop-by-hop Connection and Keep-Alive (checked separately by hop-by-hop-response).
ANSWER_IGNORED = {"date", "server", "connection", "keep-alive"}


def upstream_view(req, body=True, ordered=True):
    """A received request as lines: request line, headers in order, body framing and digest.
    `ordered=False` (eam-proxy, a deliberate difference): the headers sorted by lower-case name,
    fields of one name kept in their order. Pingora's header map removes a field (`Connection`,
    on nearly every HTTP/1.1 request) by moving the last one into its place, and re-adds
    `Upgrade` in lower case; RFC 9110 §5.3 makes neither significant (the order of fields with
    different names, the case of names), and restoring the order costs every request a copy."""
    target = re.sub(r"fid=[^&]*", "fid=FID", req.target)
    lines = [f"{req.method} {target} {req.version}"]
    for name, val in req.headers:
        low = name.lower()
        if low in PROXY_SET or low in FRAMING:
            continue
        if low == "host":
            val = re.sub(r":\d+$", ":PORT", val)
        if low == "x-fid":
            val = "FID"
        if low == "sec-websocket-key":  # a fresh random key per connection
            val = "KEY"
        lines.append(f"{name}: {val}")
    if not ordered:
        head, fields = lines[:1], lines[1:]
        fields = [f"{f.split(':', 1)[0].lower()}:{f.split(':', 1)[1]}" for f in fields]
        lines = head + sorted(fields, key=lambda f: f.split(":", 1)[0])
    if body:
        lines.append(f"(body: {req.framing}, {req.body_length} bytes, sha256 "
                     f"{req.body_sha256[:16]})")
    return lines


def answer_view(resp, framing=True):
    """An answer as sorted lines: status and headers (a proxy may reorder them, as nginx
    does), without the ones in ANSWER_IGNORED; without Content-Length and Transfer-Encoding
    when `framing` is false (an echo's length names the route; a HEAD answer may omit them)."""
    lines = [f"status {resp.status}"]
    lines += sorted(f"{n.lower()}: {v}" for n, v in resp.headers
                    if n.lower() not in ANSWER_IGNORED
                    and (framing or n.lower() not in FRAMING))
    return lines


def diff(a, b, a_name, b_name):
    return "\n".join(difflib.unified_diff(a, b, a_name, b_name, lineterm="", n=1))


def compare_upstream(ctx, reference, other, what, route, ref_name="direct", body=True):
    ordered = route != "eam" and not route.startswith("eam-")
    a, b = upstream_view(reference, body, ordered), upstream_view(other, body, ordered)
    if not ctx.check(a == b, f"{route}: {what}: the upstream received another request than "
                             f"{ref_name}"):
        ctx.show(diff(a, b, f"{ref_name} (upstream view)", f"{route} (upstream view)"))


def host(address):
    return f"{address[0]}:{address[1]}"


def wait_upstream(ctx, fid, route, timeout=10):
    req = ctx.stack.upstream.wait(fid, timeout)
    ctx.check(req is not None, f"{route}: the request never reached the upstream")
    return req


def upstream_like_direct(ctx, what, send):
    """send(route, address, fid) over every H1 route, one after the other; then what the
    upstream received through each proxy is compared with what it received direct."""
    seen = {}

    def run(route, address):
        fid = ctx.fid(route)
        send(route, address, fid)
        seen[route] = wait_upstream(ctx, fid, route)

    ctx.each(H1, run)
    for route in PROXIES:
        if seen.get(route) and seen.get("direct"):
            compare_upstream(ctx, seen["direct"], seen[route], what, route)


def echo_of(resp):
    return json.loads(resp.body)


# ---------------------------------------------------------------------------------------------
# Client helpers
# ---------------------------------------------------------------------------------------------

def upload(address, fid, mib, chunked, stall=None, path="/upload", timeout=60):
    """POSTs `mib` MiB of DOWNLOAD_BLOCK, streamed in 256 KiB pieces (each a chunk when
    chunked). `stall` = (after_bytes, seconds): pause the body there. Returns (answer or None,
    what happened when the body could not be finished)."""
    piece = 256 * 1024
    headers = [("Host", host(address)), ("X-Fid", fid),
               ("Content-Type", "application/octet-stream")]
    headers.append(("Transfer-Encoding", "chunked") if chunked
                   else ("Content-Length", str(mib * MIB)))
    c = Client(address, timeout=timeout)
    try:
        c.send(request("POST", path, headers))
        sent = 0
        for i in range(mib * MIB // piece):
            if stall and sent == stall[0]:
                time.sleep(stall[1])
                # A proxy that gave up on the body has answered by now: read that first, as a
                # browser would see it, instead of writing into a closed connection.
                try:
                    early = c.head_only(timeout=0.5)
                    return early, "answered during the stall"
                except (socket.timeout, TimeoutError):
                    pass
                except (Closed, OSError) as e:
                    return None, f"connection closed during the stall ({e})"
            block = DOWNLOAD_BLOCK[(i % 4) * piece:(i % 4 + 1) * piece]
            try:
                c.send(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
            except OSError as e:
                try:
                    return c.response("POST"), f"write failed after {sent} bytes ({e})"
                except (Closed, OSError):
                    return None, f"write failed after {sent} bytes ({e}), no answer"
            sent += len(block)
        if chunked:
            c.send(b"0\r\n\r\n")
        return c.response("POST"), "complete"
    finally:
        c.close()


class RssPeak:
    """The growth of eam-proxy's resident memory during a block: the kernel's peak (VmHWM,
    reset before) where it may be reset, otherwise sampled every 20 ms."""

    def __init__(self, proxy):
        self.proxy = proxy

    def __enter__(self):
        self.base = self.proxy.rss_kib()
        self.exact = self.proxy.reset_peak()
        self.peak = self.base
        self.running = not self.exact
        if self.running:
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.proxy.rss_kib())
            time.sleep(0.02)

    def __exit__(self, *exc):
        if self.exact:
            self.peak = self.proxy.rss_kib("VmHWM")
        else:
            self.running = False
            self.thread.join()
        self.growth_mib = (self.peak - self.base) / 1024


def sse_events(address, target, fid, timeout=60, tls=False):
    """GETs an event stream; returns (answer head, [(seconds since the request, event)],
    framing). Each event is stamped when its last byte arrived."""
    c = Client(address, timeout=timeout, tls=tls)
    try:
        start = time.monotonic()
        c.send(request("GET", target, [("Host", host(address)), ("X-Fid", fid),
                                       ("Accept", "text/event-stream"),
                                       ("Cache-Control", "no-cache")]))
        resp = c.head_only()
        events, buf = [], bytearray()

        def sink(piece):
            buf.extend(piece)
            while b"\n\n" in buf:
                end = buf.index(b"\n\n")
                events.append((time.monotonic() - start, bytes(buf[:end]).decode()))
                del buf[:end + 2]

        framing = read_body(c.reader, resp.headers, sink, until_close_allowed=True)
        return resp, events, framing
    finally:
        c.close()


def ws_url(address, tls=False):
    return f"{'wss' if tls else 'ws'}://{address[0]}:{address[1]}/ws"


def ws_open(address, fid):
    # No pings from the client: an idle test must really be idle.
    return ws_connect(ws_url(address), additional_headers=[("X-Fid", fid)], ping_interval=None,
                      compression=None, max_size=None, open_timeout=10, close_timeout=3)


def h2_exchange(address, headers, body=b"", timeout=20):
    """One HTTP/2 request with exactly these header fields (repeated names kept as separate
    fields, which httpx would merge). Returns (status, [(name, value)], body)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(address, timeout=timeout) as raw_sock:
        with context.wrap_socket(raw_sock, server_hostname="localhost") as sock:
            if sock.selected_alpn_protocol() != "h2":
                raise RuntimeError("the TLS listener did not select h2")
            conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
                client_side=True, header_encoding="utf-8", normalize_outbound_headers=False))
            conn.initiate_connection()
            stream = conn.get_next_available_stream_id()
            conn.send_headers(stream, headers, end_stream=not body)
            if body:
                conn.send_data(stream, body, end_stream=True)
            sock.sendall(conn.data_to_send())
            status, response_headers, data = None, [], bytearray()
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("connection closed before the answer ended")
                for event in conn.receive_data(chunk):
                    if isinstance(event, h2.events.ResponseReceived):
                        for n, v in event.headers:
                            if n == ":status":
                                status = int(v)
                            else:
                                response_headers.append((n, v))
                    elif isinstance(event, h2.events.DataReceived):
                        data += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, stream)
                    elif isinstance(event, h2.events.StreamEnded):
                        return status, response_headers, bytes(data)
                    elif isinstance(event, (h2.events.StreamReset,
                                            h2.events.ConnectionTerminated)):
                        raise RuntimeError(f"stream ended by {type(event).__name__}")
                sock.sendall(conn.data_to_send())


# ---------------------------------------------------------------------------------------------
# Already faithful (keep passing)
# ---------------------------------------------------------------------------------------------

METHOD_BODY = b'{"grant_type":"refresh_token","refresh_token":"r-1"}'


@case("methods")
def methods(ctx):
    """GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS to /echo with a repeated header and a
    cookie: each proxy forwards the request line, the headers (order, case, repeats) and the body
    as the client sent them, except the X-Forwarded-* it sets and Connection; the client gets
    the same status and headers (minus Date, Server, Connection, Keep-Alive)."""
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        seen = {}

        def send(route, address):
            fid = ctx.fid(route)
            headers = [("Host", host(address)), ("User-Agent", "fidelity/1.0"),
                       ("Accept", "application/json"), ("X-Fid", fid), ("X-Custom", "one"),
                       ("x-custom", "two"), ("Cookie", "a=1; b=2")]
            body = b""
            if method in ("POST", "PUT", "PATCH"):
                body = METHOD_BODY
                headers += [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))]
            with Client(address, timeout=10) as c:
                c.send(request(method, "/echo?x=1&y=%20", headers, body))
                resp = c.response(method)
            req = wait_upstream(ctx, fid, route)
            seen[route] = (req, resp)

        ctx.each(H1, send)
        if "direct" not in seen:
            continue
        ref_req, ref_resp = seen["direct"]
        for route in PROXIES:
            if route not in seen or seen[route][0] is None:
                continue
            req, resp = seen[route]
            compare_upstream(ctx, ref_req, req, method, route)
            # The echo's JSON names what each upstream saw, so its length differs by route.
            a, b = answer_view(ref_resp, False), answer_view(resp, False)
            if not ctx.check(a == b, f"{route}: {method}: the client got another answer than "
                                     f"direct"):
                ctx.show(diff(a, b, "direct (answer)", f"{route} (answer)"))


def _upload_case(ctx, chunked):
    expected = download_sha256(50)
    for route in H1:
        fid = ctx.fid(route)
        try:
            address = ctx.route(route)
            if route == "eam":
                with RssPeak(ctx.stack.eam()) as rss:
                    resp, what = upload(address, fid, 50, chunked)
                ctx.check(rss.growth_mib < 40, f"eam: resident memory grew by "
                                               f"{rss.growth_mib:.0f} MiB during the upload "
                                               f"(limit 40)")
            else:
                resp, what = upload(address, fid, 50, chunked)
        except Exception as e:
            ctx.check(False, f"{route}: {type(e).__name__}: {e}")
            continue
        if not ctx.check(resp is not None and resp.status == 200,
                         f"{route}: no 200 ({what}; {resp and resp.status})"):
            ctx.show_upstream(fid)
            continue
        got = echo_of(resp)
        ctx.check(got["length"] == 50 * MIB and got["sha256"] == expected,
                  f"{route}: the upstream received {got['length']} bytes, sha256 "
                  f"{got['sha256'][:16]}, not the 50 MiB sent")
        # Streamed as it came: the framing of the body is the client's.
        ctx.check(got["framing"] == ("chunked" if chunked else "length"),
                  f"{route}: the upstream received the body {got['framing']}-framed")


@case("upload-50mib-chunked")
def upload_chunked(ctx):
    """50 MiB POST in 256 KiB chunks: each route delivers every byte to the upstream, chunked,
    and eam-proxy's resident memory grows by less than 40 MiB (the body is streamed)."""
    _upload_case(ctx, chunked=True)


@case("upload-50mib-length")
def upload_length(ctx):
    """50 MiB POST with Content-Length, streamed: every byte arrives, framed by length, and
    eam-proxy's resident memory grows by less than 40 MiB."""
    _upload_case(ctx, chunked=False)


@case("download-100mib")
def download(ctx):
    """100 MiB GET with `requests` (streamed): the client receives every byte (length and
    sha256), with eam-proxy's resident memory growing by less than 40 MiB."""
    expected = download_sha256(100)

    def get(route, address):
        digest, length = hashlib.sha256(), 0
        with RssPeak(ctx.stack.eam()) if route == "eam" else _Nothing() as rss:
            with requests.get(f"http://{host(address)}/download?mib=100", stream=True,
                              headers={"X-Fid": ctx.fid(route)}, timeout=60) as r:
                for piece in r.iter_content(1 << 16):
                    digest.update(piece)
                    length += len(piece)
        ctx.check(r.status_code == 200 and length == 100 * MIB
                  and digest.hexdigest() == expected,
                  f"{route}: got {r.status_code}, {length} bytes, sha256 {digest.hexdigest()[:16]}")
        if route == "eam":
            ctx.check(rss.growth_mib < 40, f"eam: resident memory grew by "
                                           f"{rss.growth_mib:.0f} MiB during the download")

    ctx.each(H1, get)


class _Nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@case("sse-timing")
def sse_timing(ctx):
    """An event stream with events at 0, 200 and 400 ms, a pause, one at 2400 ms: each event
    reaches the client within 1 s of being sent (no buffering), the last one not before the
    pause ended."""
    offsets = [0, 200, 400, 2400]

    def run(route, address):
        fid = ctx.fid(route)
        resp, events, framing = sse_events(address, f"/sse?at={','.join(map(str, offsets))}",
                                           fid)
        if not ctx.check(resp.status == 200 and len(events) == len(offsets),
                         f"{route}: {resp.status}, {len(events)} events of {len(offsets)}"):
            return
        times = [round(t, 2) for t, _ in events]
        for (t, _), offset in zip(events[:3], offsets):
            ctx.check(t < offset / 1000 + 1.0,
                      f"{route}: event sent at {offset} ms arrived at {t * 1000:.0f} ms "
                      f"(held back; arrivals {times})")
        ctx.check(events[3][0] >= 2.3, f"{route}: last event too early: {times}")

    ctx.each(H1, run, parallel=True)


WS_MESSAGES = ["hello", b"\x00\x01binary\xff" * 7000, "", "h\u00e9llo \u2713"]


@case("websocket-frames")
def websocket_frames(ctx):
    """WebSocket over HTTP/1.1: text, a 70 KB binary message, an empty one and UTF-8 text echo
    back unchanged; a ping gets its pong; the upgrade request reaches the upstream like direct
    (minus Connection, which nginx spells `upgrade`)."""
    def run(route, address, fid):
        with ws_open(address, fid) as ws:
            for message in WS_MESSAGES:
                ws.send(message)
                echoed = ws.recv(timeout=10)
                ctx.check(echoed == message, f"{route}: {type(message).__name__} message of "
                                             f"{len(message)} came back changed")
            ctx.check(ws.ping().wait(5), f"{route}: no pong within 5 s")

    upstream_like_direct(ctx, "upgrade request", run)


@case("framing-204-304-head")
def framing(ctx):
    """On one kept-alive connection: 204, 304 (If-None-Match), HEAD of a JSON answer, of a 1 MiB
    download and of a chunked answer, then a GET: every answer is read with the right framing
    (no body where none is allowed, no Content-Length on 204), and HEAD answers carry the
    Content-Length the upstream sent."""
    steps = [("GET", "/status/204", []), ("GET", "/status/304", [("If-None-Match", '"v1"')]),
             ("HEAD", "/echo", []), ("HEAD", "/download?mib=1", []), ("HEAD", "/chunked", []),
             ("GET", "/echo", [])]
    seen = {}

    def run(route, address):
        answers = []
        with Client(address, timeout=10) as c:
            for method, target, extra in steps:
                c.send(request(method, target, [("Host", host(address)),
                                                ("X-Fid", ctx.fid(route))] + extra))
                answers.append(c.response(method))
        seen[route] = answers

    ctx.each(H1, run)
    for route, answers in seen.items():
        no204, no304, head_echo, head_download, head_chunked, last = answers
        ctx.check(no204.status == 204 and no304.status == 304 and last.status == 200,
                  f"{route}: statuses {[a.status for a in answers]}")
        ctx.check(no204.get("content-length") is None and no204.get("transfer-encoding") is None,
                  f"{route}: the 204 carries framing headers: {no204.headers}")
        ctx.check(head_download.get("content-length") == str(MIB),
                  f"{route}: HEAD of the download: Content-Length "
                  f"{head_download.get('content-length')}, the upstream sent {MIB}")
        ctx.check(echo_of(last)["method"] == "GET", f"{route}: the last answer is not the GET's")
        if route != "direct" and "direct" in seen:
            for mine, ref in zip(answers[:5], seen["direct"][:5]):
                # HEAD /echo: the JSON (and so its length) names the route; compare the rest.
                a, b = answer_view(ref, False), answer_view(mine, False)
                if not ctx.check(a == b, f"{route}: another answer than direct"):
                    ctx.show(diff(a, b, "direct", route))


@case("http2-basic")
def http2_basic(ctx):
    """httpx over HTTP/2 to each proxy's TLS listener: a GET and a 1 MiB POST arrive at the
    upstream as HTTP/1.1 with Host from :authority, and the answers come back intact."""
    body = DOWNLOAD_BLOCK

    def run(route, address):
        with httpx.Client(http2=True, verify=False, timeout=20) as client:
            base = f"https://{address[0]}:{address[1]}"
            fid = ctx.fid(route)
            r = client.get(f"{base}/echo", headers={"x-fid": fid})
            ctx.check(r.http_version == "HTTP/2" and r.status_code == 200,
                      f"{route}: {r.http_version} {r.status_code}")
            req = wait_upstream(ctx, fid, route)
            if req:
                ctx.check(req.version == "HTTP/1.1" and value(req.headers, "host") == host(address),
                          f"{route}: upstream got {req.version}, Host {value(req.headers, 'host')}")
            r = client.post(f"{base}/upload", content=body, headers={"x-fid": ctx.fid(route)})
            got = r.json()
            ctx.check(r.status_code == 200 and got["sha256"] == hashlib.sha256(body).hexdigest(),
                      f"{route}: upload {r.status_code} {got}")

    ctx.each(("nginx-tls", "eam-tls"), run)


# ---------------------------------------------------------------------------------------------
# Issue 17, deviation 1: cookies over HTTP/2
# ---------------------------------------------------------------------------------------------

@case("h2-cookies-joined")
def h2_cookies(ctx):
    """Issue 17 #1. An HTTP/2 client sends two `cookie` fields (as browsers do): the HTTP/1.1
    upstream receives one `Cookie: a=1; b=2` line (RFC 9113 8.2.3), as nginx sends it."""
    def run(route, address):
        fid = ctx.fid(route)
        status, _, _ = h2_exchange(address, [
            (":method", "GET"), (":scheme", "https"), (":authority", host(address)),
            (":path", "/echo"), ("x-fid", fid), ("cookie", "a=1"), ("cookie", "b=2")])
        ctx.check(status == 200, f"{route}: status {status}")
        req = wait_upstream(ctx, fid, route)
        if req:
            cookies = [f"{n}: {v}" for n, v in req.headers if n.lower() == "cookie"]
            if not ctx.check(len(cookies) == 1 and cookies[0].split(": ", 1)[1] == "a=1; b=2",
                             f"{route}: the upstream received {cookies}"):
                ctx.show_upstream(fid)

    ctx.each(("nginx-tls", "eam-tls"), run)


@case("chromium-h2-cookies")
def chromium_cookies(ctx):
    """Issue 17 #1 with a real browser: headless Chromium over HTTP/2 to the TLS listener, two
    cookies set for the origin, a werkzeug upstream (its own server): werkzeug reads both
    cookies with their exact values, through eam-proxy as through nginx."""
    chromium = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    node = shutil.which("node")
    modules = HERE.parent / "e2e/node_modules/playwright-core"
    ctx.check(Path(chromium).exists() and node and modules.exists(),
              f"needs {chromium}, node and {modules} (bash tests/fidelity/install.sh)")
    if ctx.problems:
        return
    ctx.stack.werkzeug()
    origins = {"nginx": f"https://{host(ctx.stack.nginx.werkzeug_tls)}"}
    try:
        origins["eam"] = f"https://{host(ctx.stack.eam_werkzeug().tls)}"
    except Exception as e:
        ctx.check(False, f"eam: {e}")
    cookies = [{"name": "session", "value": "s3ss10n.v4lue-A"},
               {"name": "csrftoken", "value": "Zx9-csrf-B"}]
    run = subprocess.run([node, str(HERE / "chromium_cookies.mjs"), json.dumps(cookies),
                          *origins.values()], capture_output=True, text=True, timeout=120)
    if not ctx.check(run.returncode == 0, f"the chromium script failed ({run.returncode})"):
        ctx.show(run.stderr[-3000:])
        return
    results = {json.loads(line)["origin"]: json.loads(line) for line in run.stdout.splitlines()
               if line.startswith("{")}
    expected = {c["name"]: [c["value"]] for c in cookies}
    for route, origin in origins.items():
        got = results.get(origin)
        if not ctx.check(got is not None, f"{route}: no result"):
            continue
        ctx.check(got["protocol"] == "h2", f"{route}: Chromium used {got['protocol']}, not h2")
        ctx.check(got["status"] == 200, f"{route}: status {got['status']}")
        try:
            seen = json.loads(got["text"])
        except ValueError:
            ctx.check(False, f"{route}: not the app's JSON: {got['text'][:200]}")
            continue
        ctx.check(seen["cookies"] == expected,
                  f"{route}: werkzeug read cookies {seen['cookies']} from Cookie "
                  f"{seen['http_cookie']!r}; Chromium sent {expected}")


# ---------------------------------------------------------------------------------------------
# Issue 17, deviation 2: timeouts (default settings: nothing shorter than nginx's 60 s)
# ---------------------------------------------------------------------------------------------

def _ws_idle(ctx, route, address, idle, expect_alive=True):
    fid = ctx.fid(route)
    with ws_open(address, fid) as ws:
        ws.send("before")
        ctx.check(ws.recv(timeout=10) == "before", f"{route}: no echo before the idle time")
        time.sleep(idle)
        try:
            ws.send("after")
            echoed = ws.recv(timeout=10)
            alive = echoed == "after"
        except (ConnectionClosed, TimeoutError, OSError):
            alive = False
    if expect_alive:
        ctx.check(alive, f"{route}: the WebSocket did not survive {idle} s idle")
    else:
        ctx.check(not alive, f"{route}: the WebSocket was still open after {idle} s idle")


@case("default-timeouts-websocket-idle-35s", kind="slow")
def ws_idle_35(ctx):
    """Issue 17 #2. A WebSocket idle for 35 s then echoes (nginx: proxy_read_timeout 60 s)."""
    ctx.each(PROXIES, lambda r, a: _ws_idle(ctx, r, a, 35), parallel=True)


@case("default-timeouts-sse-quiet-35s", kind="slow")
def sse_quiet_35(ctx):
    """Issue 17 #2. An event stream quiet for 35 s between two events goes on."""
    def run(route, address):
        resp, events, framing = sse_events(address, "/sse?at=0,35000", ctx.fid(route))
        ctx.check(resp.status == 200 and len(events) == 2,
                  f"{route}: {resp.status}, {len(events)} of 2 events ({framing})")
    ctx.each(PROXIES, run, parallel=True)


def _slow_upstream(ctx, routes, ms, expected, client_timeout):
    """A GET of /slow?ms=MS over each route at once, whose answer must have status `expected`."""
    def run(route, address):
        with Client(address, timeout=client_timeout) as c:
            c.send(request("GET", f"/slow?ms={ms}",
                           [("Host", host(address)), ("X-Fid", ctx.fid(route))]))
            resp = c.response()
        ctx.check(resp.status == expected,
                  f"{route}: {resp.status}, expected {expected}: {resp.body[:60]!r}")
    ctx.each(routes, run, parallel=True)


@case("default-timeouts-upstream-35s", kind="slow")
def upstream_35(ctx):
    """Issue 17 #2. An upstream that takes 35 s to answer gets through (not 504)."""
    _slow_upstream(ctx, PROXIES, 35000, 200, client_timeout=60)


@case("default-timeouts-upload-pause-35s", kind="slow")
def upload_pause_35(ctx):
    """Issue 17 #2. A client that pauses its upload for 35 s mid-body and then finishes gets
    its answer (not 504: a client's pause is not the upstream's fault)."""
    def run(route, address):
        resp, what = upload(address, ctx.fid(route), 2, False, stall=(MIB, 35))
        ok = resp is not None and resp.status == 200
        ctx.check(ok, f"{route}: {what}; {resp.status if resp else 'no answer'}")
        if ok:
            ctx.check(echo_of(resp)["sha256"] == download_sha256(2), f"{route}: body changed")
    ctx.each(PROXIES, run, parallel=True)


@case("late-first-request-15s", kind="slow")
def late_first_request(ctx):
    """Issue 17 #5. A connection whose first request comes 15 s after it opened is answered
    (browsers pre-open connections; nginx's client_header_timeout is 60 s)."""
    def run(route, address):
        with Client(address, timeout=20) as c:
            time.sleep(15)
            try:
                c.send(request("GET", "/echo", [("Host", host(address)),
                                                ("X-Fid", ctx.fid(route))]))
                resp = c.response()
            except (Closed, OSError) as e:
                ctx.check(False, f"{route}: closed without an answer ({type(e).__name__})")
                return
        ctx.check(resp.status == 200, f"{route}: {resp.status}")
    ctx.each(PROXIES, run, parallel=True)


# With short timeouts (eam-short: answer 2 s, client body 2 s, stream idle 6 s; nginx-short:
# proxy_read_timeout and client_body_timeout 2 s).

@case("short-timeouts-slow-upstream-504", kind="slow")
def short_504(ctx):
    """Issue 17 #2. read_timeout_ms = 2000: an upstream that needs 3 s gets 504 (nginx:
    proxy_read_timeout 2s, 504 too)."""
    _slow_upstream(ctx, ("nginx-short", "eam-short"), 3000, 504, client_timeout=20)


@case("short-timeouts-upload-stall-408", kind="slow")
def short_408(ctx):
    """Issue 17 #2. client_body_timeout_ms = 2000: a client that stalls its upload for 3 s gets
    408 (not 504), and eam-proxy logs it as the client's fault (a 408 line naming the client, no
    "upstream request failed"). nginx (client_body_timeout 2s) blames the client too, with 408 in
    its access log, but closes the connection without an answer; eam-proxy answers 408."""
    started = time.time()

    def run(route, address):
        resp, what = upload(address, ctx.fid(route), 1, False, stall=(256 * 1024, 3))
        status = resp.status if resp else None
        if route == "eam-short":
            ctx.check(status == 408, f"{route}: {what}; {status}, expected 408")
        else:
            ctx.check(status in (408, None), f"{route}: {what}; {status}, expected 408 or a close")
    ctx.each(("nginx-short", "eam-short"), run, parallel=True)
    ended = time.time() + 0.5
    try:
        proxy = ctx.stack.eam_short()
    except StartError:
        return  # reported by the route above
    time.sleep(0.5)
    # Other short-timeout cases share this instance: only the 408 lines logged while this
    # upload ran are its own.
    lines = [line for line in proxy.log_lines()
             if str(line.get("status")) == "408" and started <= log_time(line) <= ended]
    messages = [str(line.get("message", "")) for line in lines]
    if not ctx.check(any("client" in m.lower() for m in messages)
                     and not any("upstream request failed" in m for m in messages),
                     f"eam-short: the 408 is not logged as the client's fault: {messages}"):
        ctx.show(proxy.process.tail(15))
    access = (ctx.stack.nginx.dir / "access.log").read_text(errors="replace")
    ctx.check(re.search(r'"POST /upload HTTP/1.1" 408 ', access) is not None,
              "nginx-short: no 408 in its access log")


def log_time(line):
    """The Unix time of a JSON log line (RFC 3339, UTC)."""
    stamp = re.sub(r"(\.\d{6})\d*", r"\1", str(line.get("timestamp", "")))
    try:
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


@case("short-timeouts-websocket-idle-4s", kind="slow")
def short_ws_4(ctx):
    """Issue 17 #2. stream_idle_timeout_ms = 6000 with read_timeout_ms = 2000: a WebSocket
    idle for 4 s survives (the tunnel has its own idle limit). nginx differs: it applies
    proxy_read_timeout to tunnels, so not run against nginx-short."""
    ctx.each(("eam-short",), lambda r, a: _ws_idle(ctx, r, a, 4))


@case("short-timeouts-sse-idle-4s", kind="slow")
def short_sse_4(ctx):
    """Issue 17 #2. An `Accept: text/event-stream` answer quiet for 4 s goes on under
    stream_idle_timeout_ms = 6000 although read_timeout_ms is 2000."""
    def run(route, address):
        resp, events, framing = sse_events(address, "/sse?at=0,4000", ctx.fid(route))
        ctx.check(resp.status == 200 and len(events) == 2,
                  f"{route}: {resp.status}, {len(events)} of 2 events ({framing})")
    ctx.each(("eam-short",), run)


@case("short-timeouts-websocket-idle-8s-closed", kind="slow")
def short_ws_8(ctx):
    """Issue 17 #2. stream_idle_timeout_ms = 6000 is enforced: a WebSocket idle for 8 s is
    closed."""
    ctx.each(("eam-short",), lambda r, a: _ws_idle(ctx, r, a, 8, expect_alive=False))


# ---------------------------------------------------------------------------------------------
# Issue 17, deviations 3 to 8
# ---------------------------------------------------------------------------------------------

@case("pipelining")
def pipelining(ctx):
    """Issue 17 #3. Three requests written in one send on one connection get three answers,
    in order (nginx serves pipelined requests)."""
    def run(route, address):
        fids = [ctx.fid(route) for _ in range(3)]
        data = b"".join(request("GET", f"/echo?n={i}", [("Host", host(address)), ("X-Fid", f)])
                        for i, f in enumerate(fids))
        got = []
        with Client(address, timeout=5) as c:
            c.send(data)
            for _ in fids:
                try:
                    got.append(echo_of(c.response())["fid"])
                except (Closed, OSError, ValueError) as e:
                    got.append(f"<{type(e).__name__}>")
                    break
        ctx.check(got == fids, f"{route}: answers {got}, sent {fids}")
    ctx.each(H1, run)


def _expect(ctx, path):
    body = DOWNLOAD_BLOCK[:65536]

    def run(route, address):
        fid = ctx.fid(route)
        with Client(address, timeout=10) as c:
            c.send(request("POST", path, [("Host", host(address)), ("X-Fid", fid),
                                          ("Content-Type", "application/octet-stream"),
                                          ("Content-Length", str(len(body))),
                                          ("Expect", "100-continue")]))
            # Like curl: wait a while for 100 Continue, then send the body anyway.
            got_100 = False
            try:
                first = c.head_only(timeout=2)
                got_100 = first.status == 100
                ctx.check(got_100, f"{route}: answered {first.status} before the body")
                if not got_100:
                    return
            except (socket.timeout, TimeoutError):
                pass
            c.send(body)
            resp = c.response("POST")
            ctx.check(resp.status == 200 and echo_of(resp)["body_sha256"] ==
                      hashlib.sha256(body).hexdigest(), f"{route}: final answer {resp.status}")
            if route != "direct" or path == "/continue":
                ctx.check(got_100, f"{route}: no 100 Continue within 2 s")
            # The connection stays usable.
            try:
                c.send(request("GET", "/echo", [("Host", host(address)),
                                                ("X-Fid", ctx.fid(route))]))
                second = c.response()
                ctx.check(second.status == 200, f"{route}: second request {second.status}")
            except (Closed, OSError) as e:
                ctx.check(False, f"{route}: the connection was closed after the 100-continue "
                                 f"exchange ({type(e).__name__})")
        if route != "direct":
            req = ctx.stack.upstream.seen(fid)
            ctx.show(f"{route}: upstream received Expect: "
                     f"{value(req.headers, 'expect') if req else '?'}, sent 100 itself: "
                     f"{req.sent_100 if req else '?'}")
    ctx.each(H1, run)


@case("expect-100-continue-echo")
def expect_echo(ctx):
    """Issue 17 #4. POST with `Expect: 100-continue` to an upstream that ignores Expect: each
    proxy sends 100 Continue, then the final answer, and the connection stays open for a second
    request (direct: no 100, the client sends its body after waiting, as curl does)."""
    _expect(ctx, "/echo")


@case("expect-100-continue-upstream")
def expect_continue(ctx):
    """Issue 17 #4 and #8. Same with an upstream that answers 100 Continue itself: the client
    gets 100, then the final answer, on a connection that stays open."""
    _expect(ctx, "/continue")


@case("expect-curl-reuses-connection")
def expect_curl(ctx):
    """Issue 17 #4. curl uploading a 1.5 MiB file to two URLs in one invocation (curl adds
    `Expect: 100-continue` above 1 MiB) to an upstream that answers 100 itself reuses its
    connection."""
    curl = shutil.which("curl")
    if not ctx.check(curl is not None, "curl is not installed"):
        return
    path = ctx.stack.dir / "curl-upload.bin"
    if not path.exists():
        path.write_bytes(DOWNLOAD_BLOCK + DOWNLOAD_BLOCK[:MIB // 2])

    def run(route, address):
        urls = [f"http://{host(address)}/continue?fid={ctx.fid(route)}" for _ in range(2)]
        out = subprocess.run([curl, "-sS", "-v", "--data-binary", f"@{path}", "-o", "/dev/null",
                              "-o", "/dev/null", "-w", "%{http_code}\\n", *urls],
                             capture_output=True, text=True, timeout=30)
        codes = out.stdout.split()
        ctx.check("> Expect: 100-continue" in out.stderr, f"{route}: curl sent no Expect")
        ctx.check(codes == ["200", "200"], f"{route}: statuses {codes}")
        if not ctx.check("Re-using existing connection" in out.stderr,
                         f"{route}: curl opened a second connection"):
            ctx.show("\n".join(line for line in out.stderr.splitlines()
                               if line.startswith(("*", "< HTTP", "> POST")))[-1500:])
    ctx.each(H1, run)


BROWSER_NAVIGATION = [
    ("Connection", "keep-alive"),
    ("Upgrade-Insecure-Requests", "1"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                   "Chrome/120.0.0.0 Safari/537.36"),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
               "*/*;q=0.8"),
    ("Sec-Fetch-Site", "none"), ("Sec-Fetch-Mode", "navigate"), ("Sec-Fetch-User", "?1"),
    ("Sec-Fetch-Dest", "document"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Accept-Language", "en-US,en;q=0.9"),
]


@case("browser-navigation-headers")
def browser_headers(ctx):
    """A browser's page load over HTTP/1.1 (Chromium's header set, with `Connection:
    keep-alive` in second place) reaches the upstream with the same headers in the same order
    as direct, minus Connection and the X-Forwarded-* a proxy sets (nginx keeps the order)."""
    def run(route, address, fid):
        with Client(address, timeout=10) as c:
            c.send(request("GET", "/echo?page=1", [("Host", host(address))] +
                           BROWSER_NAVIGATION + [("Cookie", "sid=1"), ("X-Fid", fid)]))
            ctx.check(c.response().status == 200, f"{route}: no 200")

    upstream_like_direct(ctx, "page load", run)


@case("compression-navigation")
def compression(ctx):
    """Issue 17 #6. A browser page load (Sec-Fetch-Dest: document, Accept: text/html,
    Accept-Encoding: gzip, deflate, br) reaches the upstream with its Accept-Encoding; the
    upstream answers gzip, and the client gets that body intact."""
    def run(route, address):
        fid = ctx.fid(route)
        with Client(address, timeout=10) as c:
            c.send(request("GET", "/gzip", [("Host", host(address))] + BROWSER_NAVIGATION +
                           [("X-Fid", fid)]))
            resp = c.response()
        req = wait_upstream(ctx, fid, route)
        if req:
            ctx.check(value(req.headers, "accept-encoding") == "gzip, deflate, br",
                      f"{route}: the upstream received Accept-Encoding "
                      f"{value(req.headers, 'accept-encoding')!r}")
        ctx.check(resp.status == 200 and resp.get("content-encoding") == "gzip",
                  f"{route}: {resp.status}, Content-Encoding {resp.get('content-encoding')!r}")
        if resp.get("content-encoding") == "gzip":
            ctx.check(gzip.decompress(resp.body) == GZIP_PAGE, f"{route}: the gzip body changed")
        else:
            ctx.check(resp.body == GZIP_PAGE, f"{route}: the body changed")
    ctx.each(H1, run)


def _http10(ctx, path, expected):
    def run(route, address):
        fid = ctx.fid(route)
        with Client(address, timeout=10) as c:
            c.send(request("GET", path, [("Host", host(address)), ("X-Fid", fid)],
                           version="HTTP/1.0"))
            resp = c.response()
        if not ctx.check("chunked" not in tokens(resp.headers, "transfer-encoding"),
                         f"{route}: an HTTP/1.0 client got Transfer-Encoding: chunked"):
            ctx.show(f"{route}: {resp.head.decode('latin-1')}")
        ctx.check(resp.status == 200 and resp.body == expected,
                  f"{route}: {resp.status}, body {resp.body[:80]!r} ({resp.framing})")
        req = ctx.stack.upstream.seen(fid)
        if req and route != "direct":
            ctx.show(f"{route}: the upstream received {req.version}")
    ctx.each(H1, run)


@case("http10-chunked-upstream")
def http10_chunked(ctx):
    """Issue 17 #7. An HTTP/1.0 client; the upstream answers the proxy chunked: the client gets
    no Transfer-Encoding: chunked (RFC 9112 6.1), and the whole body, delimited by
    Content-Length or the close."""
    _http10(ctx, "/chunked", b"".join(CHUNKED_PARTS))


@case("http10-close-delimited-upstream")
def http10_nolength(ctx):
    """Issue 17 #7. An HTTP/1.0 client; the upstream answers without a length and closes: the
    client gets the whole body, not chunked."""
    _http10(ctx, "/nolength", NOLENGTH_BODY)


@case("hop-by-hop-response")
def hop_by_hop(ctx):
    """Issue 17 #7. The upstream answers with Keep-Alive: timeout=5, Connection: keep-alive,
    X-Hop, X-Hop: 1 and Proxy-Connection: keep-alive (direct shows it does). Through eam-proxy
    none of these reach an HTTP/1.1 client (RFC 9110 7.6.1: Keep-Alive and the fields the
    Connection header names are hop-by-hop; Proxy-Connection is its obsolete twin); the
    end-to-end X-End does. nginx 1.22 drops only Keep-Alive and passes X-Hop and
    Proxy-Connection on: eam-proxy is stricter here."""
    def run(route, address):
        with Client(address, timeout=10) as c:
            c.send(request("GET", "/hop", [("Host", host(address)), ("X-Fid", ctx.fid(route))]))
            resp = c.response()
        ctx.check(resp.status == 200 and resp.get("x-end") == "1", f"{route}: {resp.status}, "
                                                                   f"X-End {resp.get('x-end')}")
        hop = {n.lower(): v for n, v in resp.headers
               if n.lower() in ("proxy-connection", "x-hop")
               or (n.lower() == "keep-alive" and v == "timeout=5")}
        if route == "direct":
            ctx.check(len(hop) == 3, "direct: the upstream's hop-by-hop headers are missing")
        elif route == "nginx":
            ctx.check(set(hop) == {"proxy-connection", "x-hop"},
                      f"nginx: expected only Proxy-Connection and X-Hop passed on, got {hop}")
        else:
            ctx.check(not hop, f"{route}: the client got the upstream's hop-by-hop {hop}")
    ctx.each(H1, run)


@case("early-hints-103")
def early_hints(ctx):
    """Issue 17 #8. The upstream sends 103 Early Hints (with a Link), then 200: the HTTP/1.1
    client gets the 103 with its Link, then the 200 intact, through each proxy as direct. (nginx
    1.22 gets there by accident: it takes the 103 as the final answer and, unbuffered, relays
    the upstream's next bytes, the 200, after it.)"""
    def run(route, address):
        with Client(address, timeout=10) as c:
            c.send(request("GET", "/early-hints", [("Host", host(address)),
                                                   ("X-Fid", ctx.fid(route))]))
            resp = c.response()
        interim = [r.status for r in resp.interim]
        ctx.check(resp.status == 200 and resp.body == b"hinted\n",
                  f"{route}: {resp.status} {resp.body[:40]!r}")
        ctx.check(interim == [103], f"{route}: interim answers {interim}, expected [103]")
        if interim == [103]:
            ctx.check(resp.interim[0].get("link") == "</style.css>; rel=preload; as=style",
                      f"{route}: the 103 lost its Link: {resp.interim[0].headers}")
    ctx.each(H1, run)


# ---------------------------------------------------------------------------------------------
# Deliberate differences (documented in the README's Pass-through section)
# ---------------------------------------------------------------------------------------------

SPOOFED = [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https"),
           ("X-Forwarded-Host", "evil.example"), ("X-Forwarded-Prefix", "/evil"),
           ("X-Original-URL", "/admin"), ("X-Real-IP", "203.0.113.9"),
           ("Forwarded", "for=203.0.113.9"), ("X_Custom", "1"), ("X-Kept", "yes")]


@case("differs-forwarded-and-routing-headers")
def forwarded_headers(ctx):
    """Deliberate difference. A client (not a trusted proxy) sends X-Forwarded-*, routing headers
    (X-Forwarded-Prefix, X-Original-URL, X-Real-IP, Forwarded) and a header with `_`. eam-proxy:
    replaces X-Forwarded-For with the peer, sets -Proto to http and -Host to the Host, removes
    the routing headers and the `_` header, keeps the rest. nginx (configured like the bench):
    sets the X-Forwarded-* the same way but with -Host without port, passes the routing headers,
    drops the `_` header (underscores_in_headers off)."""
    def run(route, address):
        fid = ctx.fid(route)
        with Client(address, timeout=10) as c:
            c.send(request("GET", "/echo", [("Host", host(address)), ("X-Fid", fid)] + SPOOFED))
            resp = c.response()
        ctx.check(resp.status == 200, f"{route}: {resp.status}")
        req = wait_upstream(ctx, fid, route)
        if not req:
            return
        got = {n.lower(): v for n, v in req.headers}
        expected = {"x-forwarded-for": "127.0.0.1", "x-forwarded-proto": "http",
                    "x-forwarded-host": host(address) if route == "eam" else address[0],
                    "x-kept": "yes"}
        routing = ["x-forwarded-prefix", "x-original-url", "x-real-ip", "forwarded"]
        for name, want in expected.items():
            ctx.check(got.get(name) == want, f"{route}: {name}: {got.get(name)!r}, expected "
                                             f"{want!r}")
        ctx.check("x_custom" not in got, f"{route}: X_Custom reached the upstream")
        if route == "eam":
            ctx.check(not [n for n in routing if n in got],
                      f"eam: routing headers reached the upstream: "
                      f"{[n for n in routing if n in got]}")
        else:
            ctx.check(all(n in got for n in routing), "nginx: passes routing headers on (as "
                                                      "configured); some are missing")
    ctx.each(PROXIES, run)


@case("differs-garbage-upstream-answer")
def garbage(ctx):
    """Deliberate difference. The upstream answers bytes that are not HTTP and closes:
    eam-proxy refuses them with 502 (`upstream unavailable`, logged at warn) and closes; nginx
    1.22 relays them raw, as an HTTP/0.9 answer, even to an HTTP/1.1 client (and leaves the
    connection open, so the client cannot tell where that answer ends)."""
    def run(route, address):
        raw = bytearray()
        with Client(address, timeout=2) as c:
            c.send(request("GET", "/garbage", [("Host", host(address)),
                                               ("X-Fid", ctx.fid(route))]))
            try:
                c.reader.until_close(raw.extend)
            except (socket.timeout, TimeoutError):
                pass  # what arrived within 2 s
        if route == "eam":
            ctx.check(raw.startswith(b"HTTP/1.1 502 ") and raw.endswith(b"upstream unavailable\n"),
                      f"eam: {bytes(raw[:120])!r}, expected 502 upstream unavailable")
        else:
            ctx.check(bytes(raw) == b"THIS IS NOT HTTP\r\n\r\n",
                      f"nginx: {bytes(raw[:120])!r}, expected the upstream's bytes as HTTP/0.9")
    ctx.each(PROXIES, run)


# ---------------------------------------------------------------------------------------------
# After everything
# ---------------------------------------------------------------------------------------------

@case("eam-log-no-errors", kind="last")
def no_error_lines(ctx):
    """Issue 17 #7. After all the cases above, eam-proxy's log (default instance) has no ERROR
    line, except Pingora's "Fail to proxy" for the refused garbage answer: successful
    pass-through (a WebSocket, a long stream, a pooled upstream connection) is no operator's
    error."""
    try:
        proxy = ctx.stack.eam()
    except Exception as e:
        ctx.check(False, str(e))
        return
    errors = [line for line in proxy.log_lines()
              if str(line.get("level", "")).upper() == "ERROR"
              and "GET /garbage" not in str(line.get("message", ""))]
    if not ctx.check(not errors, f"eam: {len(errors)} ERROR lines"):
        for message in sorted({str(line.get("message", line))[:300] for line in errors}):
            ctx.show(message)
