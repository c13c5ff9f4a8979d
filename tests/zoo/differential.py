#!/usr/bin/env python3
"""The parser differential test (issue 16): hostile requests through the real eam-proxy binary to
real framework parsers, over HTTP/1.1 and HTTP/2.

Every framework of the zoo (tests/zoo/servers.py) gets its own eam-proxy in front of it, with a
plain HTTP/1.1 listener and a TLS listener speaking HTTP/2. Each case is sent to every one of
them; when the request reaches the framework, the echo answers with what the framework parsed,
and the judge asserts, for every framework:

- every reserved name (`entra_*`, any letter case) it reads on a route it would send to its
  authorize handler was written by the proxy, with the value of the validated hint;
- on such a request, every single-valued OAuth name it reads has exactly the one value the
  proxy validated (Entra's, never the attacker's), and the EAM app's client_id is never read
  without the validated identity beside it;
- nothing the proxy refused reached it (the echo's request counter moves exactly once per
  answer that came from it, and each answer belongs to its own request);
- the control cases (real Entra requests, a plain OpenID request) still work.

Cases: the fixed classes of issue 16 (`fixed_cases`) and a seeded random generator of names,
encodings, separators, charsets, framings and headers (`random_case`).

    tests/zoo/.build/venv/bin/python tests/zoo/differential.py [--cases N] [--seed S]
        [--only php,go] [--proxy-bin target/debug/eam-proxy]

It ends with `zoo: N passed, N failed` (one test per fixed case and framework, and one per
framework's random batch), the line tests/run.sh counts.
"""

import argparse
import base64
import gzip
import http.client
import json
import random
import re
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import jwt

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from loopback import EamProxy, make_certificate  # noqa: E402
from servers import FRAMEWORKS, Zoo  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

CLIENT_ID = "56c2b5e3-c41d-4c14-abcf-72d407f57650"
AUDIENCE = "600b719b-3766-4dc5-95a6-3c4a8dc31885"
TID = "14c2f153-90a7-4689-9db7-9543bf084dad"
OID = "951ddb04-b16d-45f3-bbf7-b0fa18fa7aee"
SUB = "mBfcvuhSHkDWVgV72x2ruIYdSsPSvcj2R0qfc6mGEAA"
UPN = "j\u00fcrgen@contoso.com"
REDIRECT = "https://login.microsoftonline.com/common/federation/externalauthprovider"
ISSUER = f"https://login.microsoftonline.com/{TID}/v2.0"
CLAIMS = '{"id_token":{"acr":{"essential":true,"values":["possessionorinherence"]}}}'
STATE = "AwABAAEAAAACAOz_BAD0_8h2Ejq7"
NONCE = "9f3e2c4a-1c2b-4d8e-9a7b-3c2d1e0f9a8b"
CRID = "1b5f7c9e-4a3d-4e2f-8b1a-0c9d8e7f6a5b"
FORM = "application/x-www-form-urlencoded"

# Parameters an Entra request carries once; their validated values.
SINGLE_VALUED = [
    "client_id", "redirect_uri", "response_type", "response_mode", "scope", "state", "nonce",
    "claims", "prompt", "client-request-id",
]
ENTRA_VALUES = {
    "scope": "openid",
    "response_type": "id_token",
    "response_mode": "form_post",
    "client_id": CLIENT_ID,
    "redirect_uri": REDIRECT,
    "claims": CLAIMS,
    "nonce": NONCE,
    "state": STATE,
    "client-request-id": CRID,
}
# What the proxy writes after validating a hint (and `prompt=login`).
VALIDATED_AFTER = {"prompt": "login"}
RESERVED_TARGETS = [
    "entra_sub", "entra_oid", "entra_tid", "entra_iss", "entra_preferred_username",
    "entra_id_token_hint",
]
OAUTH_TARGETS = ["client_id", "redirect_uri", "response_mode", "state", "nonce"]


def sign_hint():
    key = (ROOT / "tests/fixtures/keys/signer.pem").read_bytes()
    now = int(time.time())
    claims = {
        "ver": "2.0", "iss": ISSUER, "sub": SUB, "aud": AUDIENCE, "exp": now - 1, "iat": now,
        "nbf": now, "name": "Test User", "preferred_username": UPN, "oid": OID, "tid": TID,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "signer", "typ": "JWT"})


def q(text):
    """Form encoding as a browser writes it."""
    return urllib.parse.quote_plus(text, safe="")


def form(pairs):
    return "&".join(f"{q(n)}={q(v)}" for n, v in pairs)


def entra_pairs(hint, **overrides):
    pairs = [(n, overrides.get(n, v)) for n, v in ENTRA_VALUES.items()]
    pairs.insert(8, ("id_token_hint", overrides.get("id_token_hint", hint)))
    return pairs


@dataclass
class Case:
    name: str
    method: str = "POST"
    path: str = "/authorize"
    query: str = None
    body: bytes = None
    content_type: object = FORM  # str, None, or a list of field values
    headers: list = field(default_factory=list)
    # h1: "length" | "chunked" | "none"; h2: "length" | "open" (no content-length, DATA frames
    # then END_STREAM on the last) | "open-empty-end" (DATA frames, then an empty DATA frame
    # with END_STREAM: cloudflare/pingora#935) | "open-empty-middle" (a content-length, then half
    # the body, an empty DATA frame, the other half with END_STREAM) | "none"
    framing: str = "length"
    proto: str = "h1"
    # "accept": must reach every framework with the validated identity; "reach": must reach it;
    # "refuse": must not reach it; "any": judged by the invariants alone.
    expect: str = "any"
    # Headers of the request that must not reach the framework.
    dropped: tuple = ()
    # (name, value) pairs the framework must read, each as its one value.
    reads: tuple = ()


# ---------------------------------------------------------------------------------------------
# Proxies
# ---------------------------------------------------------------------------------------------

def start_proxy(binary, workdir, framework, upstream, cert, key, jwks):
    """One eam-proxy in front of one echo server."""
    return EamProxy(framework, binary, workdir, upstream, cert, key, app=(CLIENT_ID, AUDIENCE),
                    jwks_file=jwks, threads=2, upstream_extra="read_timeout_ms = 10000\n",
                    # The echo servers are not OPs: no id_token ever comes back.
                    authorize='response_guard = "off"\n', generator="tests/zoo/differential.py")


def signer_jwks(directory):
    keys = json.loads((ROOT / "tests/fixtures/keys/public.jwks.json").read_text())["keys"]
    path = directory / "jwks.json"
    path.write_text(json.dumps({"keys": [k for k in keys if k["kid"] == "signer"]}))
    return path


# ---------------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------------

@dataclass
class Answer:
    status: int
    headers: dict
    body: bytes

    def echo(self, framework):
        if not self.headers.get("content-type", "").startswith("application/json"):
            return None
        try:
            data = json.loads(self.body)
        except ValueError:
            return None
        if isinstance(data, dict) and data.get("framework") == framework:
            return data
        return None


def target(case):
    return case.path + ("?" + case.query if case.query is not None else "")


def content_type_fields(case):
    if case.content_type is None:
        return []
    if isinstance(case.content_type, list):
        return [("content-type", v) for v in case.content_type]
    return [("content-type", case.content_type)]


def send_h1(address, case, marker):
    body = case.body if case.body is not None else b""
    lines = [f"{case.method} {target(case)} HTTP/1.1", "host: idp.example.test",
             f"x-zoo-case: {marker}", "connection: close"]
    lines += [f"{n}: {v}" for n, v in content_type_fields(case) + case.headers]
    if case.framing == "length":
        lines.append(f"content-length: {len(body)}")
        payload = body
    elif case.framing == "chunked":
        lines.append("transfer-encoding: chunked")
        payload = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    else:
        payload = b""
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
    with socket.create_connection(address, timeout=20) as sock:
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock, method=case.method)
        response.begin()
        data = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)


TLS = ssl.create_default_context()
TLS.check_hostname = False
TLS.verify_mode = ssl.CERT_NONE
TLS.set_alpn_protocols(["h2"])


def send_h2(address, case, marker):
    body = case.body if case.body is not None else b""
    with socket.create_connection(address, timeout=20) as raw_sock:
        with TLS.wrap_socket(raw_sock, server_hostname="localhost") as sock:
            if sock.selected_alpn_protocol() != "h2":
                raise RuntimeError("the TLS listener did not select h2")
            config = h2.config.H2Configuration(
                client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
            conn = h2.connection.H2Connection(config=config)
            conn.initiate_connection()
            stream = conn.get_next_available_stream_id()
            headers = [(":method", case.method), (":scheme", "https"),
                       (":authority", "idp.example.test"), (":path", target(case)),
                       ("x-zoo-case", marker)]
            headers += [(n.lower(), v) for n, v in content_type_fields(case) + case.headers]
            if case.framing in ("length", "open-empty-middle"):
                headers.append(("content-length", str(len(body))))
            no_body = case.framing == "none" or (case.framing == "length" and not body)
            conn.send_headers(stream, headers, end_stream=no_body)
            if not no_body:
                if case.framing == "open-empty-end":
                    if body:
                        conn.send_data(stream, body)
                    conn.send_data(stream, b"", end_stream=True)
                elif case.framing == "open-empty-middle":
                    half = len(body) // 2
                    conn.send_data(stream, body[:half])
                    conn.send_data(stream, b"")
                    conn.send_data(stream, body[half:], end_stream=True)
                else:
                    conn.send_data(stream, body, end_stream=True)
            sock.sendall(conn.data_to_send())
            status, response_headers, data = None, {}, bytearray()
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("connection closed before the response ended")
                for event in conn.receive_data(chunk):
                    if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                        for n, v in event.headers:
                            n = n.decode() if isinstance(n, bytes) else n
                            v = v.decode() if isinstance(v, bytes) else v
                            if n == ":status":
                                status = int(v)
                            else:
                                response_headers[n] = v
                    elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream:
                        data += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, stream)
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                        return Answer(status, response_headers, bytes(data))
                    elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream:
                        return Answer(0, {}, f"stream reset {event.error_code}".encode())
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        return Answer(0, {}, f"goaway {event.error_code}".encode())
                sock.sendall(conn.data_to_send())


def send(proxy, case, marker):
    if case.proto == "h2":
        return send_h2(proxy.tls, case, marker)
    return send_h1(proxy.h1, case, marker)


# ---------------------------------------------------------------------------------------------
# The judge
# ---------------------------------------------------------------------------------------------

def routes_to_authorize(route):
    """Whether a framework that routes on `route` sends the request to an `/authorize` handler
    (with the leniency of the servers the proxy knows of: case, `//`, a trailing `/`, `;…`
    path parameters, a `.format` suffix)."""
    path = urllib.parse.unquote(route or "").lower()
    path = "/".join(segment.split(";")[0] for segment in path.split("/"))
    path = re.sub("/+", "/", path).rstrip("/")
    head, _, last = path.rpartition("/")
    return f"{head}/{last.split('.')[0]}" == "/authorize"


def strings(value):
    """The value as a list of strings, or None when the framework read a structure."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def header_values(echo, name):
    """A request header as the echo saw it (`x-zoo-case` or WSGI's `HTTP_X_ZOO_CASE`)."""
    found = []
    for key, values in (echo.get("headers") or {}).items():
        norm = key.lower()
        if norm.startswith("http_"):
            norm = norm[5:]
        if norm.replace("_", "-") == name:
            found += values if isinstance(values, list) else [values]
    return found


def judge(framework, case, answer, marker, expected):
    """The failures of one answer, as strings."""
    echo = answer.echo(framework)
    problems = []
    if case.expect == "refuse" and echo is not None:
        problems.append("reached the framework although it must be refused")
    if case.expect in ("accept", "reach") and echo is None:
        problems.append(f"did not reach the framework: {answer.status} {answer.body[:300]!r}")
    if echo is None:
        # No HTTP answer (a reset stream, a closed connection) is the proxy refusing a request
        # that is malformed at the HTTP level; the echo's counter shows it did not reach.
        return problems
    for name in case.dropped:
        if header_values(echo, name.lower().replace("_", "-")):
            problems.append(f"the client's {name} header reached the framework")
    if header_values(echo, "x-zoo-case") != [marker]:
        problems.append(
            f"the answer belongs to another request: x-zoo-case {header_values(echo, 'x-zoo-case')}"
        )
    if echo.get("parse_error") and case.expect == "accept":
        problems.append(f"parse error: {echo['parse_error']}")
    for name, value in case.reads:
        found = [strings(m.get(name)) for m in (echo.get("query"), echo.get("form"),
                                                echo.get("params")) if isinstance(m, dict)]
        if [value] not in found:
            problems.append(f"{name} not read as {value!r}: {found}")
    if not routes_to_authorize(echo.get("route")):
        if case.expect == "accept":
            problems.append(f"routed to {echo.get('route')!r}")
        return problems
    maps = {k: echo.get(k) for k in ("query", "form", "params") if isinstance(echo.get(k), dict)}
    identity_read = any(
        k.lower().startswith("entra_") for m in maps.values() for k in m
    )
    for where, params in maps.items():
        for name, value in params.items():
            got = strings(value)
            if name.lower().startswith("entra_"):
                if name not in expected:
                    problems.append(f"{where}: reads {name!r}, which the proxy never writes")
                elif got != [expected[name]]:
                    problems.append(f"{where}: reads {name}={value!r}, not the validated value")
            elif name in SINGLE_VALUED and identity_read:
                legit = VALIDATED_AFTER.get(name, ENTRA_VALUES.get(name))
                if got != [legit]:
                    problems.append(f"{where}: reads {name}={value!r} beside the validated identity")
            if name == "client_id" and got is not None and CLIENT_ID in got and not identity_read:
                problems.append(f"{where}: reads the EAM app's client_id without a validated identity")
            if name == "client_id" and got is None and not identity_read and CLIENT_ID in json.dumps(value):
                problems.append(f"{where}: reads a structured client_id holding the EAM app's id")
    if case.expect == "accept":
        for name, value in expected.items():
            if not any(strings(m.get(name)) == [value] for m in maps.values()):
                problems.append(f"{name} not read as the validated value")
        for name in SINGLE_VALUED:
            legit = VALIDATED_AFTER.get(name, ENTRA_VALUES.get(name))
            if not any(strings(m.get(name)) == [legit] for m in maps.values()):
                problems.append(f"{name} not read as {legit!r}")
    return problems


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------

def disguises(name):
    """Spellings of `name` that some framework reads as `name` (or as its array)."""
    under = name.replace("_", ".") if "_" in name else name
    out = [
        ("php-dot", under, False),
        ("php-dot-encoded", name.replace("_", "%2E"), True),
        ("php-space", name.replace("_", "+"), True),
        ("php-bracket", name.replace("_", "[", 1), False),
        ("php-leading-space", "+" + name, True),
        ("php-leading-spaces", "%20%20" + name, True),
        ("array", name + "[]", False),
        ("array-encoded", name + "%5B%5D", True),
        ("nested", "[" + name + "]", False),
        ("leading-bracket", "]" + name, False),
        ("indexed", name + "[0]", False),
        ("upper", name.upper(), True),
        ("title", name.title(), True),
        ("percent", "".join(f"%{b:02X}" for b in name.encode()), True),
        ("plain", name, True),
    ]
    return out


def charset_name(name, charset):
    return "".join(f"%{b:02X}" for b in name.encode(charset))


class Cases:
    def __init__(self, hint):
        self.hint = hint

    def entra_body(self, extra_pairs=(), at=None, **overrides):
        pairs = [f"{q(n)}={q(v)}" for n, v in entra_pairs(self.hint, **overrides)]
        for i, raw in enumerate(extra_pairs):
            pairs.insert(len(pairs) if at is None else min(at + i, len(pairs)), raw)
        return "&".join(pairs).encode()

    def forged(self, spell=lambda n: n, encoding="utf-8"):
        """A complete EAM request without a hint the proxy would accept: the EAM app's
        client_id, Entra's redirect_uri and an identity chosen by the attacker, each name as
        `spell` writes it."""
        pairs = [
            (spell("client_id"), CLIENT_ID), (spell("redirect_uri"), REDIRECT),
            (spell("response_mode"), "form_post"), (spell("scope"), "openid"),
            (spell("entra_id_token_hint"), "attacker.hint.x"), (spell("entra_iss"), "attacker-iss"),
            (spell("entra_tid"), "attacker-tid"), (spell("entra_oid"), "attacker-oid"),
            (spell("entra_sub"), "attacker-sub"),
        ]
        if encoding == "utf-8":
            return "&".join(f"{n}={q(v)}" for n, v in pairs).encode()
        return "&".join(
            f"{charset_name(urllib.parse.unquote_plus(n), encoding)}={charset_name(v, encoding)}"
            for n, v in pairs
        ).encode()

    def fixed(self):
        """Each class of issue 16 with exact bytes, and the controls."""
        cases = []
        valid = self.entra_body()
        # Controls.
        cases.append(Case("control: Entra POST", body=valid, expect="accept"))
        cases.append(Case("control: Entra GET", method="GET", query=valid.decode(), body=None,
                          content_type=None, framing="none", expect="accept"))
        cases.append(Case("control: Entra POST, charset=utf-8",
                          content_type=FORM + "; charset=UTF-8", body=valid, expect="accept"))
        cases.append(Case("control: Entra POST with raw brackets and ; in values",
                          body=valid.replace(b"&nonce=", b"&x=a;b[c]=d&nonce="), expect="accept"))
        cases.append(Case("control: plain OpenID request",
                          method="GET", framing="none", content_type=None, body=None,
                          query="client_id=app&response_type=code&scope=openid&state=s"
                                "&redirect_uri=https%3A%2F%2Fapp.example%2Fcb", expect="reach"))
        # 1. Charset.
        for charset, codec in [("utf-16", "utf-16-be"), ("utf-16le", "utf-16-le"),
                               ("utf-16be", "utf-16-be"), ("ibm037", "cp037"),
                               ("cp037", "cp037"), ("utf-7", "utf-7"), ("iso-8859-1", "latin-1")]:
            cases.append(Case(f"charset {charset}: forged EAM request",
                              content_type=f"{FORM}; charset={charset}",
                              body=self.forged(encoding=codec), expect="refuse"))
            cases.append(Case(f"charset {charset}: GET query",
                              method="GET", framing="none", body=None,
                              content_type=f"text/plain; charset={charset}",
                              query=self.forged(encoding=codec).decode(), expect="refuse"))
        cases.append(Case("charset quoted", content_type=f'{FORM}; charset="utf-16"',
                          body=self.forged(encoding="utf-16-be"), expect="refuse"))
        cases.append(Case("two charsets", content_type=f"{FORM}; charset=utf-8; charset=utf-16",
                          body=self.forged(encoding="utf-16-be"), expect="refuse"))
        # 2. Names frameworks rewrite: a forged EAM request spelled for each, and a second
        # client_id, redirect_uri, response_mode or entra_oid beside a valid one.
        for label, _, _ in disguises("client_id"):
            if label == "plain":
                continue
            spell = {n: d for n in ["client_id", "redirect_uri", "response_mode", "scope"]
                     + RESERVED_TARGETS for (l, d, _) in disguises(n) if l == label}
            cases.append(Case(f"names {label}: forged EAM request",
                              body=self.forged(lambda n, s=spell: s[n]), expect="refuse"))
            cases.append(Case(f"names {label}: forged EAM request in a GET",
                              method="GET", framing="none", body=None, content_type=None,
                              query=self.forged(lambda n, s=spell: s[n]).decode(),
                              expect="refuse"))
            for target_name in ["client_id", "redirect_uri", "response_mode", "entra_oid"]:
                disguised = dict((l, d) for l, d, _ in disguises(target_name))[label]
                cases.append(Case(
                    f"names {label}: second {target_name} on a valid Entra POST",
                    body=self.entra_body([f"{disguised}=attacker"])))
        cases.append(Case("rack: ; splits a GET's query",
                          method="GET", framing="none", body=None, content_type=None,
                          query="x=1;" + self.forged().decode().replace("&", ";")))
        cases.append(Case("rack: ; in a value of a valid Entra GET",
                          method="GET", framing="none", body=None, content_type=None,
                          query=self.entra_body(["x=1;client_id=attacker;entra_oid=attacker"])
                          .decode(), expect="accept"))
        cases.append(Case("qs: ]= inside a value",
                          body=self.entra_body(["x=[client_id]=attacker", "y=a]=b"]),
                          expect="accept"))
        cases.append(Case("101 parameters",
                          body=self.entra_body([f"p{i}=x" for i in range(91)]), expect="refuse"))
        # 3. A body the proxy does not see: an HTTP/2 GET with DATA frames.
        for framing in ["open", "open-empty-end"]:
            cases.append(Case(f"h2 GET with DATA ({framing})", method="GET", proto="h2",
                              framing=framing, query="client_id=app&response_type=code",
                              body=self.forged(), expect="refuse"))
        cases.append(Case("h1 GET with a chunked body", method="GET", framing="chunked",
                          query="client_id=app", body=self.forged(), expect="refuse"))
        cases.append(Case("h1 GET with a length", method="GET", framing="length",
                          query="client_id=app", body=self.forged(), expect="refuse"))
        for method in ["PUT", "PATCH", "DELETE", "OPTIONS"]:
            cases.append(Case(f"{method} with a forged form", method=method,
                              body=self.forged(), expect="refuse"))
        # 4. Routing headers from the client.
        forged = self.forged()
        for name, value, path in [
            ("SCRIPT_NAME", "/x", "/x/authorize"),
            ("script_name", "/x", "/x/authorize"),
            ("PATH_INFO", "/authorize", "/x"),
            ("X-Original-URL", "/authorize", "/x"),
            ("X-Rewrite-URL", "/authorize", "/x"),
            ("X-Forwarded-Prefix", "/x", "/x/authorize"),
            ("X-Script-Name", "/x", "/x/authorize"),
            ("X-HTTP-Method-Override", "GET", "/x/authorize"),
        ]:
            cases.append(Case(f"routing header {name}", path=path, body=forged,
                              headers=[(name, value)], dropped=(name,)))
        # 5. Framing: an HTTP/2 body ended by an empty DATA frame, on a pass-through path and
        # on the authorize path; the answers of the requests after it must be their own.
        for path in ["/token", "/authorize"]:
            for i in range(3):
                cases.append(Case(f"h2 empty END_STREAM DATA on {path} #{i}", path=path,
                                  proto="h2", framing="open-empty-end",
                                  body=b"grant_type=x" if path == "/token" else valid,
                                  expect="accept" if path == "/authorize" else "reach"))
                cases.append(Case(f"h1 after it on {path} #{i}", path="/token", method="GET",
                                  framing="none", body=None, content_type=None, expect="reach"))
        cases.append(Case("control: Entra POST over h2, DATA then empty END_STREAM",
                          proto="h2", framing="open-empty-end", body=valid, expect="accept"))
        # An empty DATA frame in the middle of a body is no end: the whole body arrives.
        for path in ["/token", "/authorize"]:
            cases.append(Case(f"h2 empty DATA frame mid-body on {path}", path=path, proto="h2",
                              framing="open-empty-middle", body=valid + b"&zoo_last=end",
                              expect="accept" if path == "/authorize" else "reach",
                              reads=(("zoo_last", "end"),)))
        cases.append(Case("control: Entra GET over h2, stream ended by an empty DATA frame",
                          method="GET", proto="h2", framing="open-empty-end", body=None,
                          content_type=None, query=valid.decode(), expect="accept"))
        # 6. Hardening.
        cases.append(Case("two Content-Type fields", content_type=[FORM, "text/plain"],
                          body=self.forged(), expect="refuse"))
        cases.append(Case("Content-Type with a boundary", content_type=FORM + "; boundary=x",
                          body=self.forged(), expect="refuse"))
        for coding, pack in [("deflate", zlib.compress), ("gzip", gzip.compress)]:
            cases.append(Case(f"Content-Encoding {coding}", body=pack(self.forged()),
                              headers=[("Content-Encoding", coding)], expect="refuse"))
            cases.append(Case(f"Content-Encoding {coding}, ASCII body",
                              body=self.forged(), headers=[("Content-Encoding", coding)],
                              expect="refuse"))
        for path in ["/authorize.json", "/authorize.html", "/Authorize", "/authorize/",
                     "//authorize", "/%61uthorize", "/authorize;jsessionid=1"]:
            cases.append(Case(f"path {path}: forged EAM request", path=path, body=forged,
                              expect="refuse"))
        # Every case over HTTP/1.1 and HTTP/2 where its framing exists in both.
        both = []
        for case in cases:
            both.append(case)
            if case.proto == "h1" and case.framing in ("length", "none"):
                both.append(replace(case, name=case.name + " [h2]", proto="h2"))
        return both

    def random(self, rng, index):
        """One hostile request from the generator's vocabulary."""
        base = rng.choice(["valid", "valid", "forged", "other", "eam-no-hint"])
        injected = []
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            target_name = rng.choice(RESERVED_TARGETS + OAUTH_TARGETS)
            value = rng.choice(["attacker", "attacker%20x", "attacker-" + target_name,
                                CLIENT_ID if target_name == "client_id" else "attacker"])
            if rng.random() < 0.5:
                # A spelling the proxy reads as another name than some framework does.
                _, spelled, _ = rng.choice(disguises(target_name))
                sep = rng.choice(["", "", "", ";", "&&", "; "])
                injected.append(f"{sep}{spelled}={value}")
            else:
                # Plain pairs whose value holds what some framework reads as structure.
                carrier = rng.choice(["x", "ui_locales", "login_hint", "state2"])
                trick = rng.choice([
                    f"a;{target_name}={value}", f"a]={value}", f"[{target_name}]={value}",
                    f"a;;{target_name}%3D{value}", f"{value}", f"a%3B{target_name}={value}",
                ])
                injected.append(f"{carrier}={trick}")
        if base == "valid":
            pairs = [f"{q(n)}={q(v)}" for n, v in entra_pairs(self.hint)]
        elif base == "forged":
            pairs = [f"{q(n)}={q(v)}" for n, v in entra_pairs("attacker.hint.sig")]
        elif base == "other":
            pairs = ["client_id=app", "response_type=code", "scope=openid", "state=s"]
        else:
            pairs = [f"{q(n)}={q(v)}" for n, v in entra_pairs(self.hint)
                     if n != "id_token_hint"]
        for raw in injected:
            pairs.insert(rng.randrange(len(pairs) + 1), raw)
        text = rng.choice(["&", "&", "&", ";"]).join(pairs) if base != "valid" else "&".join(pairs)
        method = rng.choice(["POST"] * 6 + ["GET"] * 3 + ["PUT"])
        proto = rng.choice(["h1", "h2"])
        case = Case(f"random #{index} ({base}, {method}, {proto})", method=method, proto=proto)
        charset = rng.choice([None] * 20 + ["utf-8", "UTF-8", '"utf-8"', "utf-16", "utf-16le",
                                            "ibm037", "utf-7", "iso-8859-1"])
        media = FORM if method != "GET" or rng.random() < 0.2 else None
        if rng.random() < 0.05:
            media = rng.choice(["text/plain", "multipart/form-data; boundary=x", FORM + ", x"])
        content_type = None if media is None else media + (f"; charset={charset}" if charset else "")
        if rng.random() < 0.05:
            content_type = [FORM, FORM + "; charset=utf-16"]
        if charset and charset.strip('"').lower() in ("utf-16", "utf-16le", "ibm037", "utf-7"):
            codec = {"utf-16": "utf-16-be", "utf-16le": "utf-16-le", "ibm037": "cp037",
                     "utf-7": "utf-7"}[charset.strip('"').lower()]
            text = "&".join(
                "=".join(charset_name(urllib.parse.unquote_plus(part), codec)
                         for part in pair.split("=", 1))
                for pair in text.split("&"))
        case.content_type = content_type
        if method == "GET":
            case.query = text
            case.body = None
            case.framing = "none"
            if rng.random() < 0.15:
                case.framing = "open" if proto == "h2" else rng.choice(["chunked", "length"])
                case.body = self.forged()
        else:
            case.body = text.encode("latin-1", errors="replace")
            if proto == "h2":
                case.framing = rng.choice(["length", "open", "open-empty-end"])
            else:
                case.framing = rng.choice(["length", "length", "chunked"])
            if injected and rng.random() < 0.2:
                case.query = rng.choice(injected).lstrip(";& ")
        if rng.random() < 0.05 and case.body:
            coding = rng.choice(["deflate", "gzip", "identity"])
            case.headers.append(("content-encoding", coding))
            if coding == "deflate":
                case.body = zlib.compress(case.body)
            elif coding == "gzip":
                case.body = gzip.compress(case.body)
        if rng.random() < 0.1:
            name, value, path = rng.choice([
                ("script_name", "/x", "/x/authorize"), ("x-original-url", "/authorize", "/x"),
                ("x-forwarded-prefix", "/x", "/x/authorize"), ("path_info", "/authorize", "/x")])
            case.headers.append((name, value))
            case.dropped = (name,)
            case.path = path
        elif rng.random() < 0.1:
            case.path = rng.choice(["/authorize.json", "/Authorize", "/authorize/",
                                    "/authorize;jsessionid=1", "//authorize"])
        return case


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------

def echo_seq(address):
    raw = (b"GET /__zoo_seq HTTP/1.1\r\nhost: zoo\r\nx-zoo-case: seq\r\nconnection: close\r\n\r\n")
    with socket.create_connection(address, timeout=20) as sock:
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock, method="GET")
        response.begin()
        return json.loads(response.read())["seq"]


def shorten(text, limit=800):
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


class Result:
    def __init__(self):
        self.lock = threading.Lock()
        self.passed = 0
        self.failed = 0
        self.lines = []

    def record(self, ok, line):
        with self.lock:
            if ok:
                self.passed += 1
            else:
                self.failed += 1
                self.lines.append(line)
                print(line, flush=True)


def run_framework(framework, proxy, echo_address, fixed, randoms, expected, result):
    before = echo_seq(echo_address)
    reached = 0
    random_reached = random_validated = 0
    random_failures = []
    for index, case in enumerate(fixed + randoms):
        marker = f"{framework}-{index}"
        try:
            answer = send(proxy, case, marker)
            problems = judge(framework, case, answer, marker, expected)
            echo = answer.echo(framework)
            reached += echo is not None
            if echo is not None and index >= len(fixed):
                random_reached += 1
                random_validated += "entra_sub" in json.dumps(echo.get("params") or echo)
        except Exception as error:
            # A broken exchange fails a case that must reach the framework. For the others it
            # is a refusal at the HTTP level: WEBrick, for one, answers a request-URI over 2 KiB
            # with a 414 and resets the connection before its body is out. The echo's counter
            # still shows whether the app saw the request.
            problems = ([f"exchange failed: {error!r}"]
                        if case.expect in ("accept", "reach") else [])
        line = f"FAIL {framework}: {case.name}: " + "; ".join(problems)
        if problems:
            line += f"\n    case: {shorten(repr(case))}"
        if index >= len(fixed):
            if problems:
                random_failures.append(line)
        else:
            result.record(not problems, line)
    if randoms:
        result.record(not random_failures, "\n".join(random_failures[:20]) +
                      f"\nFAIL {framework}: {len(random_failures)} of {len(randoms)} random cases")
    after = echo_seq(echo_address)
    # The second probe counts itself.
    result.record(after - before - 1 == reached,
                  f"FAIL {framework}: the framework handled {after - before - 1} requests, "
                  f"{reached} answers came from it: something refused reached it, or a stray "
                  f"request desynchronised the upstream connection")
    print(f"{framework}: {len(fixed)} fixed cases; {len(randoms)} random cases, of which "
          f"{random_reached} reached the framework, {random_validated} with a validated identity",
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=400, help="random cases per framework")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--only", default=None, help="comma-separated frameworks")
    parser.add_argument("--proxy-bin", default=str(ROOT / "target/debug/eam-proxy"))
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    frameworks = args.only.split(",") if args.only else list(FRAMEWORKS)
    print(f"zoo: seed {seed}, {args.cases} random cases per framework, frameworks {frameworks}",
          flush=True)
    work = Path(tempfile.mkdtemp(prefix="eam-zoo-"))
    result = Result()
    proxies = []
    try:
        cert, key = make_certificate(work, "localhost")
        jwks = signer_jwks(work)
        hint = sign_hint()
        expected = {"entra_iss": ISSUER, "entra_tid": TID, "entra_oid": OID,
                    "entra_preferred_username": UPN, "entra_sub": SUB, "entra_id_token_hint": hint}
        cases = Cases(hint)
        fixed = cases.fixed()
        rng = random.Random(seed)
        randoms = [cases.random(rng, i) for i in range(args.cases)]
        with Zoo(only=frameworks, log_dir=work / "zoo") as zoo:
            for framework in frameworks:
                proxies.append((framework, start_proxy(args.proxy_bin, work, framework,
                                                       zoo.addresses[framework], cert, key, jwks)))
            deadline = time.monotonic() + 60
            for _, proxy in proxies:
                proxy.wait_ready(deadline)
            threads = [
                threading.Thread(target=run_framework, args=(
                    framework, proxy, zoo.addresses[framework], fixed, randoms, expected, result))
                for framework, proxy in proxies
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    except Exception:
        traceback.print_exc()
        result.record(False, "FAIL zoo: the run did not complete")
    finally:
        for _, proxy in proxies:
            proxy.stop()
        if result.failed:
            print(f"zoo: logs kept in {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"zoo: seed {seed}")
    print(f"zoo: {result.passed} passed, {result.failed} failed")
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
