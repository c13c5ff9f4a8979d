"""Parser zoo: sends each probe of PROBES to every echo server and prints what each one read.

    tests/zoo/.build/venv/bin/python tests/zoo/observe.py [--only NAME...] [PROBE-ID...]

The observations in tests/zoo/README.md come from this script's output. Each probe is the exact
request bytes (built with servers.raw_request, which adds only Host, Content-Length when there is
a body, and Connection: close) and the fields of the answers worth looking at.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import FRAMEWORKS, EchoError, Zoo, echo, raw_request  # noqa: E402

FORM = ("Content-Type", "application/x-www-form-urlencoded")
PARAMS = ("query", "form", "params", "parse_error")


def multipart(fields: dict[str, str], boundary: str = "zoo") -> bytes:
    out = b""
    for k, v in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").encode()
    return out + f"--{boundary}--\r\n".encode()


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def chunked_request(method: str, target: str, headers, body: bytes) -> bytes:
    head = raw_request(method, target, list(headers) + [("Transfer-Encoding", "chunked")])
    return head + chunked(body)


def query(pid: str, what: str, text: str):
    """A GET of /p with this query, showing what each parser made of its parameters."""
    return (pid, what, raw_request("GET", "/p?" + text), PARAMS)


def form_post(pid: str, what: str, body: bytes | str):
    """A POST of this urlencoded form body to /p, showing what each parser made of it."""
    return (pid, what, raw_request("POST", "/p", [FORM], body), PARAMS)


MANY = "&".join(f"k{i}=v" for i in range(1001)) + "&last=1"

# (id, what it asks, request bytes, fields to show)
PROBES = [
    query("semicolon-query", "is ';' a separator in the query?", "a=1;b=2&c=3"),
    form_post("semicolon-body", "is ';' a separator in a form body?", "a=1;b=2&c=3"),
    query("dup", "repeated name: first, last or all?", "a=1&a=2"),
    ("query-and-body", "same name in query and body",
     raw_request("POST", "/p?a=q", [FORM], "a=b"), PARAMS),
    query("php-names", "names with '.', ' ', '[' and brackets",
          "a.b=1&%20c=2&d[=3&e%20f=4&g[h.i]=5&j[]=6&j[]=7&k[l]=8"),
    query("names-encoded", "the same names with '[' ']' percent-encoded",
          "a.b=1&%20c=2&d%5B=3&e%20f=4&g%5Bh.i%5D=5&j%5B%5D=6&j%5B%5D=7&k%5Bl%5D=8"),
    query("mixed-array", "a scalar and an array under one name", "a=1&a%5B%5D=2"),
    query("array-index", "explicit array index", "a%5B100%5D=x&b%5B0%5D=y"),
    query("deep", "nesting 7 levels", "a%5Bb%5D%5Bc%5D%5Bd%5D%5Be%5D%5Bf%5D%5Bg%5D=1"),
    query("proto", "names that are JS Object.prototype members",
          "__proto__%5Bx%5D=1&toString=2&hasOwnProperty=3"),
    query("plus", "'+' and %2B", "a=x+y&b=x%2By&c+d=1"),
    query("bad-pct", "bad percent-encoding", "a=%zz&b=%4&c=%"),
    query("non-utf8-query", "a %FF (not UTF-8) in the query", "a=%FF&b=ok"),
    query("non-utf8-key", "a %FE (not UTF-8) in a query name", "%FE=1&b=ok"),
    query("raw-bytes-query", "raw (not percent-encoded) UTF-8 and 0xFF bytes in the query",
          "a=\u00c3\u00a9&b=\u00ff"),
    form_post("raw-bytes-body", "raw (not percent-encoded) UTF-8 and 0xFF bytes in a form body",
              b"a=\xc3\xa9&b=\xff"),
    form_post("bad-pct-body", "bad percent-encoding in a form body", "a=%zz&b=ok"),
    form_post("non-utf8-body", "a %FF (not UTF-8) in a form body", "a=%FF&b=ok"),
    query("no-eq", "names without '=' and empty names", "a&=x&b="),
    ("get-charset-query", "GET, query %E9, Content-Type says latin-1",
     raw_request("GET", "/p?x=%E9&y=%C3%A9", [("Content-Type", "text/plain; charset=iso-8859-1")]),
     PARAMS),
    form_post("form-no-charset", "form body %E9 and %C3%A9, no charset", "x=%E9&y=%C3%A9"),
    ("form-latin1", "form body %E9 and %C3%A9, charset=iso-8859-1",
     raw_request("POST", "/p", [("Content-Type", "application/x-www-form-urlencoded; charset=iso-8859-1")],
                 "x=%E9&y=%C3%A9"), PARAMS),
    ("form-utf8", "form body %E9 and %C3%A9, charset=utf-8",
     raw_request("POST", "/p", [("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")],
                 "x=%E9&y=%C3%A9"), PARAMS),
    ("form-on-get", "GET with a form body",
     raw_request("GET", "/p?q=1", [FORM], "a=1"), PARAMS),
    ("form-on-put", "PUT with a form body",
     raw_request("PUT", "/p?q=1", [FORM], "a=1"), PARAMS),
    ("form-on-delete", "DELETE with a form body",
     raw_request("DELETE", "/p?q=1", [FORM], "a=1"), PARAMS),
    ("lowercase-method", "method 'post' in lower case with a form body",
     raw_request("post", "/p", [FORM], "a=1"), ("method",) + PARAMS),
    ("form-ct-case", "Content-Type in upper case",
     raw_request("POST", "/p", [("Content-Type", "APPLICATION/X-WWW-FORM-URLENCODED")], "a=1"), PARAMS),
    ("form-ct-suffix", "Content-Type with junk after the type",
     raw_request("POST", "/p", [("Content-Type", "application/x-www-form-urlencodedx")], "a=1"), PARAMS),
    ("form-no-ct", "POST body without Content-Type",
     raw_request("POST", "/p", [], "a=1"), PARAMS),
    ("multipart", "multipart/form-data body",
     raw_request("POST", "/p", [("Content-Type", "multipart/form-data; boundary=zoo")],
                 multipart({"a": "1"})), PARAMS),
    ("multipart-file", "multipart/form-data with a file part",
     raw_request("POST", "/p", [("Content-Type", "multipart/form-data; boundary=zoo")],
                 b"--zoo\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n"
                 b"Content-Type: text/plain\r\n\r\nhello\r\n--zoo--\r\n"), PARAMS),
    ("chunked-form", "form body with Transfer-Encoding: chunked",
     chunked_request("POST", "/p", [FORM], b"a=1"), PARAMS),
    ("deflate", "form body with Content-Encoding: deflate",
     raw_request("POST", "/p", [FORM, ("Content-Encoding", "deflate")], zlib.compress(b"a=1")), PARAMS),
    ("gzip", "form body with Content-Encoding: gzip",
     raw_request("POST", "/p", [FORM, ("Content-Encoding", "gzip")],
                 gzip.compress(b"a=1", mtime=0)), PARAMS),
    ("many-query", "1002 query parameters",
     raw_request("GET", "/p?" + MANY), ("parse_error", "count", "last")),
    ("many-query-short", "1001 x 'a' then 'last=1' in a 2 kB query",
     raw_request("GET", "/p?" + "a&" * 1001 + "last=1"), ("parse_error", "last")),
    ("many-body", "1002 form parameters",
     raw_request("POST", "/p", [FORM], MANY), ("parse_error", "count", "last")),
    ("script-name", "SCRIPT_NAME request header",
     raw_request("GET", "/x/authorize", [("SCRIPT_NAME", "/x")]), ("route", "script_name", "hdr")),
    ("script-name-mismatch", "SCRIPT_NAME header not a prefix of the path",
     raw_request("GET", "/authorize", [("SCRIPT_NAME", "/x")]), ("route", "script_name")),
    ("path-info-header", "PATH_INFO request header",
     raw_request("GET", "/authorize", [("PATH_INFO", "/evil")]), ("route", "script_name", "hdr")),
    ("underscore", "X_Foo and X-Foo headers",
     raw_request("GET", "/p", [("X_Foo", "under"), ("X-Foo", "dash")]), ("hdr",)),
    ("underscore-only", "X_Foo header alone",
     raw_request("GET", "/p", [("X_Foo", "under")]), ("hdr",)),
    ("underscore-last", "X-Foo then X_Foo",
     raw_request("GET", "/p", [("X-Foo", "dash"), ("X_Foo", "under")]), ("hdr",)),
    ("dup-host", "Host twice",
     raw_request("GET", "/p", [("Host", "a.example"), ("Host", "b.example")]), ("hdr",)),
    ("dup-header", "X-Foo twice",
     raw_request("GET", "/p", [("X-Foo", "a"), ("X-Foo", "b")]), ("hdr",)),
    ("path-semicolon", "path parameter ';x=1'",
     raw_request("GET", "/authorize;x=1?a=1"), ("route", "params", "query")),
    ("path-dotdot", "'..' and encoded '/' and '.' in the path",
     raw_request("GET", "/a/%2e%2e/authorize"), ("route",)),
    ("path-enc-slash", "%2F in the path",
     raw_request("GET", "/a%2Fb"), ("route",)),
    ("path-dotsemi", "'/..;/' in the path",
     raw_request("GET", "/x/..;/authorize"), ("route",)),
    ("path-double-slash", "'//' in the path",
     raw_request("GET", "//authorize"), ("route",)),
    ("path-enc-letter", "%61 (a) in the path",
     raw_request("GET", "/%61uthorize"), ("route",)),
    ("path-absolute-form", "absolute-form request target",
     raw_request("GET", "http://evil.example/authorize?a=1"), ("route", "query", "params", "hdr")),
]


def show(doc: dict, fields) -> dict:
    out = {}
    for f in fields:
        if f == "count":
            for view in ("query", "form", "params"):
                if isinstance(doc.get(view), dict):
                    out[f"{view}#"] = len(doc[view])
        elif f == "last":
            for view in ("query", "form", "params"):
                if isinstance(doc.get(view), dict) and "last" in doc[view]:
                    out[f"{view}.last"] = doc[view]["last"]
        elif f == "hdr":
            out["headers"] = {k: v for k, v in doc.get("headers", {}).items()
                              if k.lower().replace("-", "_") in
                              ("x_foo", "http_x_foo", "script_name", "http_script_name",
                                 "path_info", "http_path_info")
                              or k.lower() in ("host", "http_host")}
        elif f in ("query", "form", "params") and doc.get(f) is None and f not in doc:
            continue
        else:
            out[f] = doc.get(f)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="+", choices=FRAMEWORKS)
    ap.add_argument("probes", nargs="*")
    args = ap.parse_args()
    probes = [p for p in PROBES if not args.probes or p[0] in args.probes]
    with Zoo(only=args.only) as zoo:
        for pid, what, raw, fields in probes:
            print(f"### {pid}: {what}")
            shown = raw if len(raw) < 600 else raw[:300] + b"...(" + str(len(raw)).encode() + b" bytes)"
            print(f"    {shown!r}")
            for name in zoo.names:
                try:
                    doc = echo(zoo.addresses[name], raw)
                    line = json.dumps(show(doc, fields), ensure_ascii=False, separators=(",", ":"))
                except EchoError as e:
                    resp = e.response
                    if resp is None:
                        line = f"NO ANSWER: {e}"
                    else:
                        line = f"HTTP {resp.status} {resp.reason}: {resp.body[:160]!r}"
                except OSError as e:
                    line = f"NO ANSWER: {e}"
                print(f"  {name:<9} {line}")
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
