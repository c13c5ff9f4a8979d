"""Parser zoo: starts the echo servers of tests/zoo and talks raw HTTP/1.1 to them.

Python 3.11 standard library only. Build everything first with `bash tests/zoo/install.sh`.

    from servers import Zoo, echo, raw_request
    with Zoo() as zoo:                        # or Zoo(only=["php", "go"], log_dir="out/")
        doc = echo(zoo.addresses["php"], raw_request("GET", "/authorize?a=1"))

    python3 tests/zoo/servers.py --check      # start all, sanity requests, one line each

Every server answers any request with status 200 and the JSON described in tests/zoo/README.md
(framework, seq, method, route, script_name, query, form, params, headers, parse_error).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

FRAMEWORKS = ["tomcat", "jetty", "php", "rack", "express", "django", "werkzeug", "go"]
CONTRACT_KEYS = (
    "framework", "seq", "method", "route", "script_name",
    "query", "form", "params", "headers", "parse_error",
)
ZOO_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(ZOO_DIR.parent / "lib"))
from loopback import Process, free_port  # noqa: E402
ECHO_DIR = ZOO_DIR / "echo"
BUILD_DIR = ZOO_DIR / ".build"
START_TIMEOUT = 60.0


# ---------------------------------------------------------------------------------------------
# Raw HTTP/1.1


class EchoError(Exception):
    """An exchange that did not give the JSON contract; .response holds what came back."""

    def __init__(self, message: str, response: "Response | None" = None):
        super().__init__(message)
        self.response = response


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes = field(repr=False)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def raw_request(method: str, target: str, headers=(), body: bytes | str = b"",
                host: str = "127.0.0.1") -> bytes:
    """Builds request bytes: request line, Host, the given (name, value) headers, Content-Length
    when there is a body (unless given), Connection: close. No encoding or checking of anything."""
    if isinstance(body, str):
        body = body.encode()
    names = {k.lower() for k, _ in headers}
    lines = [f"{method} {target} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers]
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    if "connection" not in names:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Reader:
    def __init__(self, sock: socket.socket):
        self.sock, self.buf, self.raw, self.eof = sock, b"", b"", False

    def _more(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        self.raw += chunk
        return True

    def until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            if not self._more():
                raise EchoError(f"connection closed before {sep!r}")
        i = self.buf.index(sep)
        out, self.buf = self.buf[:i], self.buf[i + len(sep):]
        return out

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._more():
                raise EchoError(f"connection closed after {len(self.buf)} of {n} body bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def rest(self) -> bytes:
        while self._more():
            pass
        out, self.buf = self.buf, b""
        return out


def exchange(address: tuple[str, int], raw: bytes, timeout: float = 10.0) -> Response:
    """Sends raw bytes as they are and reads one response (1xx interim ones skipped), framed by
    Content-Length, chunked encoding or end of connection. Raises EchoError on time-out or a
    malformed answer, with whatever had arrived in the message."""
    head_request = raw[:5].upper() == b"HEAD "
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(raw)
        r = _Reader(sock)
        try:
            while True:
                head = r.until(b"\r\n\r\n").decode("latin-1")
                status_line, *header_lines = head.split("\r\n")
                parts = status_line.split(" ", 2)
                if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                    raise EchoError(f"bad status line {status_line!r}")
                status, reason = int(parts[1]), parts[2] if len(parts) > 2 else ""
                headers = [tuple(x.strip() for x in h.split(":", 1)) for h in header_lines if ":" in h]
                if 100 <= status < 200 and status != 101:
                    continue
                break
            resp = Response(status, reason, headers, b"", b"")
            te = (resp.header("transfer-encoding") or "").lower()
            cl = resp.header("content-length")
            if head_request or status in (101, 204, 304):
                body = b""
            elif "chunked" in te:
                body = b""
                while True:
                    size = int(r.until(b"\r\n").split(b";")[0].strip(), 16)
                    if size == 0:
                        while r.until(b"\r\n"):  # trailers
                            pass
                        break
                    body += r.exactly(size)
                    r.until(b"\r\n")
            elif cl is not None:
                body = r.exactly(int(cl))
            else:
                body = r.rest()
        except (socket.timeout, TimeoutError) as e:
            raise EchoError(f"timed out; received {r.raw[:2000]!r}") from e
        except EchoError as e:
            raise EchoError(f"{e}; received {r.raw[:2000]!r}") from None
        resp.body, resp.raw = body, r.raw
        return resp


def echo(address: tuple[str, int], raw: bytes, timeout: float = 10.0) -> dict:
    """Sends raw request bytes (they should carry `Connection: close`; raw_request() adds it)
    and returns the echo's JSON. Raises EchoError, with the raw response, when the answer is not
    a 200 with a JSON body."""
    resp = exchange(address, raw, timeout)
    if resp.status != 200:
        raise EchoError(f"status {resp.status}: {resp.raw[:2000]!r}", resp)
    try:
        doc = json.loads(resp.body)
    except ValueError:
        raise EchoError(f"not JSON: {resp.raw[:2000]!r}", resp) from None
    if not isinstance(doc, dict):
        raise EchoError(f"not a JSON object: {resp.raw[:2000]!r}", resp)
    return doc


def contract_problems(name: str, doc: dict) -> list[str]:
    """What in an echo's answer breaks the JSON contract (empty when nothing)."""
    problems = [f"missing {k}" for k in CONTRACT_KEYS if k not in doc]
    if doc.get("framework") != name:
        problems.append(f"framework is {doc.get('framework')!r}")
    if not isinstance(doc.get("seq"), int):
        problems.append("seq is not an integer")
    for k in ("method", "route", "script_name"):
        if k in doc and not isinstance(doc[k], (str, dict)):
            problems.append(f"{k} is not a string")
    for k in ("query", "form", "params"):
        if k in doc and doc[k] is not None and not isinstance(doc[k], dict):
            problems.append(f"{k} is neither an object nor null")
    if not isinstance(doc.get("headers"), dict) or not all(
        isinstance(v, list) for v in doc["headers"].values()
    ):
        problems.append("headers is not an object of lists")
    if doc.get("parse_error") is not None and not isinstance(doc["parse_error"], (str, dict)):
        problems.append("parse_error is neither a string nor null")
    return problems


# ---------------------------------------------------------------------------------------------
# Servers


def _classpath(name: str) -> str:
    path = BUILD_DIR / "java" / name / "classpath.txt"
    if not path.exists():
        raise RuntimeError(f"{name}: {path} missing; run bash tests/zoo/install.sh")
    return path.read_text().strip()


def _command(name: str, port: int, tmp: Path) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment for one server."""
    gunicorn = [str(BUILD_DIR / "venv" / "bin" / "gunicorn"), "--no-control-socket",
                "--chdir", str(ECHO_DIR), "-b", f"127.0.0.1:{port}"]
    if name == "tomcat":
        base = tmp / "tomcat"
        base.mkdir()
        return ["java", "-cp", _classpath("tomcat"), "TomcatEcho", str(port), str(base)], {}
    if name == "jetty":
        return ["java", "-cp", _classpath("jetty"), "JettyEcho", str(port)], {}
    if name == "php":
        docroot = tmp / "php-docroot"  # empty: no file matches, echo.php routes everything
        docroot.mkdir()
        return (["php", "-S", f"127.0.0.1:{port}", "-t", str(docroot), str(ECHO_DIR / "echo.php")],
                {"ZOO_SEQ_FILE": str(tmp / "php-seq")})
    if name == "rack":
        return ["ruby", str(ECHO_DIR / "echo_rack.rb"), str(port)], {}
    if name == "express":
        return ["node", str(ECHO_DIR / "echo_express.js"), str(port)], {}
    if name == "django":
        return gunicorn + ["echo_django:application"], {}
    if name == "werkzeug":
        return gunicorn + ["echo_werkzeug:application"], {}
    if name == "go":
        return [str(BUILD_DIR / "bin" / "go-echo"), str(port)], {}
    raise ValueError(f"unknown framework {name!r}")


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class Zoo:
    """Starts the echo servers (all, or `only`) on free loopback ports; stops them on exit.
    Logs go to log_dir/NAME.log when given, else to a temporary folder removed on exit."""

    def __init__(self, only=None, log_dir=None):
        names = list(only) if only else list(FRAMEWORKS)
        unknown = [n for n in names if n not in FRAMEWORKS]
        if unknown:
            raise ValueError(f"unknown frameworks {unknown}; known: {FRAMEWORKS}")
        self.names = names
        self.log_dir = Path(log_dir) if log_dir else None
        self.addresses: dict[str, tuple[str, int]] = {}
        self.logs: dict[str, Path] = {}
        self._procs: dict[str, Process] = {}
        self._tmp: Path | None = None

    def __enter__(self) -> "Zoo":
        self._tmp = Path(tempfile.mkdtemp(prefix="eam-zoo-"))
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        assert self._tmp is not None
        logs = self.log_dir or self._tmp / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        home = self._tmp / "home"
        home.mkdir()
        # A small fixed environment: nothing from the caller's (GUNICORN_CMD_ARGS,
        # FORWARDED_ALLOW_IPS, SCRIPT_NAME, WEB_CONCURRENCY, JAVA_TOOL_OPTIONS, NODE_OPTIONS,
        # RUBYOPT, PHP_INI_SCAN_DIR, GODEBUG, ...) can change a framework's defaults.
        base_env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(home),
            "TMPDIR": str(self._tmp),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ next to the echo sources
        }
        for name in self.names:
            port = free_port()
            argv, extra = _command(name, port, self._tmp)
            try:
                self._procs[name] = Process(name, argv, logs, env={**base_env, **extra},
                                            cwd=self._tmp)
            except OSError as e:
                raise RuntimeError(f"zoo server {name} could not start {argv[0]}: {e};"
                                   " run bash tests/zoo/install.sh") from e
            self.logs[name] = self._procs[name].log_path
            self.addresses[name] = ("127.0.0.1", port)

        deadline = time.monotonic() + START_TIMEOUT
        pending = set(self.names)
        last: dict[str, str] = {}
        while pending:
            for name in sorted(pending):
                proc = self._procs[name]
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"zoo server {name} exited with status {proc.poll()} while starting;"
                        f" log {self.logs[name]}:\n{_tail(self.logs[name])}")
                try:
                    doc = echo(self.addresses[name], raw_request("GET", "/zoo-ready?ready=1"), 5)
                    problems = contract_problems(name, doc)
                    if not problems:
                        pending.discard(name)
                        continue
                    last[name] = "; ".join(problems)
                except (OSError, EchoError) as e:
                    last[name] = str(e)
            if pending and time.monotonic() > deadline:
                name = sorted(pending)[0]
                raise RuntimeError(
                    f"zoo server {name} not answering the contract after {START_TIMEOUT:.0f} s"
                    f" (still waiting: {sorted(pending)}; last: {last.get(name)});"
                    f" log {self.logs[name]}:\n{_tail(self.logs[name])}")
            if pending:
                time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        for proc in self._procs.values():
            proc.terminate()
        for proc in self._procs.values():
            proc.stop(timeout=10)
        self._procs.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


# ---------------------------------------------------------------------------------------------
# --check


def _compact(v) -> str:
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def _check_one(name: str, address: tuple[str, int]) -> tuple[bool, str]:
    problems: list[str] = []
    seqs: list[int] = []
    parts: list[str] = []

    def ask(label, raw, method):
        try:
            doc = echo(address, raw)
        except (OSError, EchoError) as e:
            problems.append(f"{label}: {e}")
            return None
        problems.extend(f"{label}: {p}" for p in contract_problems(name, doc))
        if doc.get("method") != method:
            problems.append(f"{label}: method {doc.get('method')!r}")
        if isinstance(doc.get("seq"), int):
            seqs.append(doc["seq"])
        return doc

    doc = ask("GET", raw_request("GET", "/authorize?client_id=abc&scope=openid+email&x=1&x=2"), "GET")
    if doc is not None:
        seen = doc.get("query") or doc.get("params") or {}
        if "client_id" not in seen:
            problems.append("GET: client_id not read")
        parts.append(f"GET route={doc.get('route')} query={_compact(doc.get('query'))}"
                     f" params={_compact(doc.get('params'))}")
    body = "grant_type=authorization_code&code=a%2Bb&x=3"
    doc = ask("POST", raw_request("POST", "/token?x=q", [
        ("Content-Type", "application/x-www-form-urlencoded")], body), "POST")
    if doc is not None:
        seen = doc.get("form") or doc.get("params") or {}
        if "grant_type" not in seen:
            problems.append("POST: grant_type not read")
        parts.append(f"POST form={_compact(doc.get('form'))} params={_compact(doc.get('params'))}")
    if name in ("django", "werkzeug"):
        doc = ask("SCRIPT_NAME", raw_request("GET", "/x/authorize?y=1", [("SCRIPT_NAME", "/x")]), "GET")
        if doc is not None:
            parts.append(f"SCRIPT_NAME:/x -> route={doc.get('route')}"
                         f" script_name={doc.get('script_name')}")
    if seqs != sorted(seqs) or len(set(seqs)) != len(seqs):
        problems.append(f"seq not increasing: {seqs}")
    ok = not problems
    line = f"{name:<9} {'ok ' if ok else 'BAD'} seq={seqs} | " + " | ".join(parts)
    if problems:
        line += " | PROBLEMS: " + "; ".join(problems)
    return ok, line


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="start the zoo and send sanity requests")
    ap.add_argument("--only", nargs="+", choices=FRAMEWORKS, help="only these servers")
    ap.add_argument("--log-dir", help="keep the servers' logs here")
    ap.add_argument("--serve", action="store_true",
                    help="start the zoo, print the addresses as JSON, run until interrupted")
    args = ap.parse_args(argv)
    if not (args.check or args.serve):
        ap.print_help()
        return 2
    # SIGTERM ends the run like Ctrl-C does, through Zoo.__exit__ (no orphans).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    with Zoo(only=args.only, log_dir=args.log_dir) as zoo:
        print(f"zoo: {len(zoo.addresses)} servers up in {time.monotonic() - started:.1f} s",
              flush=True)
        if args.serve:
            print(json.dumps({k: list(v) for k, v in zoo.addresses.items()}), flush=True)
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                return 0
        results = [_check_one(name, zoo.addresses[name]) for name in zoo.names]
    for _, line in results:
        print(line)
    good = sum(ok for ok, _ in results)
    print(f"zoo: {good} passed, {len(results) - good} failed")
    return 0 if good == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
