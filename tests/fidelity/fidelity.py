"""Pass-through fidelity suite (issue 17): the same requests sent direct to a recording upstream,
through nginx (the reference proxy) and through eam-proxy, comparing what the upstream received
and what the client received.

    tests/fidelity/.build/venv/bin/python tests/fidelity/fidelity.py [--only NAME[,NAME]] [--keep]

Ends with one line `fidelity: N passed, N failed[, N skipped]`; exit status 1 when a case
failed. Cases that wait long (idle streams, slow answers, late requests) run concurrently in
threads, the others one after the other meanwhile. tests/fidelity/README.md lists the cases.
"""

import argparse
import itertools
import shutil
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cases import CASES, Skip
from stack import ROOT, Stack, StartError


class Ctx:
    """What a case gets: the stack, routes by name, and a place for its findings. A check that
    fails does not stop the case, so every route of a case is reported."""

    def __init__(self, name, stack):
        self.name = name
        self.stack = stack
        self.problems = []
        self.evidence = []
        self.lock = threading.Lock()
        self.checks = 0
        self.proxies = set()      # the eam-proxy instances used, for their log on failure
        self._counter = itertools.count(1)

    def fid(self, route):
        """A marker unique to one request, which the upstream indexes."""
        return f"{self.name}.{route}.{next(self._counter)}"

    def check(self, ok, message):
        with self.lock:
            self.checks += 1
        if not ok:
            with self.lock:
                self.problems.append(message)
        return ok

    def show(self, text):
        """Evidence printed when the case fails (recorded bytes, a log tail)."""
        with self.lock:
            self.evidence.append(text)

    def show_upstream(self, fid):
        self.show(self.stack.upstream.describe(fid))

    def skip(self, reason):
        raise Skip(reason)

    def route(self, name):
        """The address of a route: direct (the upstream itself), nginx, nginx-short (nginx with
        2-second timeouts), eam, eam-short (eam-proxy with short timeouts); with `-tls`, the
        TLS listener of a proxy."""
        s = self.stack
        tls = name.endswith("-tls")
        base = name[:-4] if tls else name
        if base == "direct":
            return s.upstream.address
        if base == "nginx":
            return s.nginx.tls if tls else s.nginx.h1
        if base == "nginx-short":
            return s.nginx.h1_short
        if base in ("eam", "eam-short"):
            proxy = s.eam() if base == "eam" else s.eam_short()
            with self.lock:
                self.proxies.add(proxy)
            return proxy.tls if tls else proxy.h1
        raise KeyError(name)

    def each(self, routes, fn, parallel=False):
        """fn(route, address) for each route; an exception fails that route only."""
        def one(route):
            try:
                fn(route, self.route(route))
            except StartError as e:
                self.check(False, f"{route}: {e}")
            except Exception as e:  # a broken exchange is a finding about that route
                self.check(False, f"{route}: {type(e).__name__}: {e}")
                self.show(f"{route}: " + "".join(traceback.format_exception(e)[-3:]))
        if parallel:
            with ThreadPoolExecutor(len(routes)) as pool:
                list(pool.map(one, routes))
        else:
            for route in routes:
                one(route)


class Runner:
    def __init__(self, stack):
        self.stack = stack
        self.lock = threading.Lock()
        self.passed = self.failed = self.skipped = 0

    def run(self, c):
        ctx = Ctx(c.name, self.stack)
        start = time.monotonic()
        skipped = None
        try:
            c.fn(ctx)
        except Skip as e:
            skipped = str(e)
        except StartError as e:
            ctx.check(False, str(e))
        except Exception as e:
            ctx.check(False, f"{type(e).__name__}: {e}")
            ctx.show(traceback.format_exc())
        if not skipped and not ctx.checks:
            ctx.check(False, "the case asserted nothing")
        took = time.monotonic() - start
        with self.lock:
            if skipped:
                self.skipped += 1
                print(f"skip  {c.name}: {skipped}", flush=True)
            elif ctx.problems:
                self.failed += 1
                print(f"FAIL  {c.name} ({took:.1f} s)", flush=True)
                for p in ctx.problems:
                    print(f"      - {p}", flush=True)
                for e in ctx.evidence:
                    print("      | " + e.rstrip().replace("\n", "\n      | "), flush=True)
                for proxy in sorted(ctx.proxies, key=lambda p: p.name):
                    # Its latest warnings, errors and failed requests (shared with the cases
                    # running at the same time).
                    lines = [line for line in proxy.log_lines()
                             if line.get("level") in ("WARN", "ERROR") or "status" in line][-6:]
                    if lines:
                        print(f"      | {proxy.name} log, last findings:", flush=True)
                    for line in lines:
                        text = f"{line.get('level')} {line.get('message')} {line.get('error', '')}"
                        print(f"      |   {text[:220]}", flush=True)
            else:
                self.passed += 1
                print(f"ok    {c.name} ({took:.1f} s)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proxy-bin", default=str(ROOT / "target/debug/eam-proxy"),
                        help="eam-proxy binary (copied before use; default target/debug)")
    parser.add_argument("--only", help="comma-separated case names (or name prefixes)")
    parser.add_argument("--keep", action="store_true", help="keep the logs and configs")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args()

    if args.list:
        for c in CASES:
            print(f"{c.name:42} {c.kind:5} {c.doc}")
        return 0
    selected = CASES
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        selected = [c for c in CASES if any(c.name == w or c.name.startswith(w) for w in wanted)]
        if not selected:
            print(f"fidelity: no case matches {args.only!r} (see --list)")
            return 2
    binary = Path(args.proxy_bin)
    if not binary.is_file():
        print(f"fidelity: {binary} not found (cargo build -p eam-proxy, or --proxy-bin)")
        print("fidelity: 0 passed, 1 failed")
        return 1

    work = Path(tempfile.mkdtemp(prefix="eam-fidelity-"))
    started = time.monotonic()
    stack = None
    runner = None
    try:
        stack = Stack(binary, work)
        runner = Runner(stack)
        print(f"fidelity: {len(selected)} cases; nginx {stack.nginx.h1[1]}, upstream "
              f"{stack.upstream.address[1]}, work dir {work}", flush=True)
        slow = [c for c in selected if c.kind == "slow"]
        threads = [threading.Thread(target=runner.run, args=(c,), daemon=True) for c in slow]
        for t in threads:
            t.start()
        for c in selected:
            if c.kind == "fast":
                runner.run(c)
        for t in threads:
            t.join(timeout=max(1.0, 300 - (time.monotonic() - started)))
            if t.is_alive():
                runner.failed += 1
                print("FAIL  a slow case did not finish within 300 s", flush=True)
        for c in selected:
            if c.kind == "last":
                runner.run(c)
    except Exception:
        traceback.print_exc()
        if runner is None:
            print("fidelity: the stack did not start")
        runner = runner or Runner(None)
        runner.failed += 1
    finally:
        if stack is not None:
            stack.stop()
    failed = runner.failed
    print(f"fidelity: wall time {time.monotonic() - started:.0f} s", flush=True)
    if args.keep or failed:
        print(f"fidelity: logs and configs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    line = f"fidelity: {runner.passed} passed, {failed} failed"
    if runner.skipped:
        line += f", {runner.skipped} skipped"
    print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
