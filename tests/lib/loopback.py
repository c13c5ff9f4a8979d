"""Processes on loopback for the script-driven suites (tests/zoo, tests/fidelity): free ports,
a throw-away TLS certificate, child processes that are stopped with everything they forked, and
eam-proxy itself with a generated configuration. Python 3.11 standard library only.

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
    from loopback import EamProxy, Process, free_port, make_certificate
"""

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

LOOPBACK = "127.0.0.1"


class StartError(Exception):
    """A process could not be started or did not become ready."""


_handed_out = set()
_ports_lock = threading.Lock()


def free_port():
    """A loopback port free now and not handed out before in this run: the kernel may offer a
    port again once its probe socket is closed, and two servers would then share it."""
    with _ports_lock:
        while True:
            with socket.socket() as s:
                s.bind((LOOPBACK, 0))
                port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def make_certificate(directory, common_name):
    """A self-signed P-256 certificate for 127.0.0.1 and localhost, valid two days:
    (cert.pem, key.pem) in directory."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", f"/CN={common_name}", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return cert, key


class Process:
    """A child process in its own process group, its output appended to DIR/NAME.log."""

    def __init__(self, name, argv, directory, env=None, cwd=None):
        self.name = name
        self.log_path = directory / f"{name}.log"
        self.log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            env=env, cwd=cwd)
        except OSError:
            self.log.close()
            raise
        self.pid = self.process.pid
        self._terminated = False

    def poll(self):
        return self.process.poll()

    def text(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def tail(self, lines=25):
        return "\n".join(self.text().splitlines()[-lines:])

    def terminate(self):
        """SIGTERM to the group, once; stop() waits for it. Several processes stop faster when
        all are told first."""
        if self._terminated:
            return
        self._terminated = True
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def stop(self, timeout=5):
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # The whole group, even once the leader is gone, so that nothing it forked (gunicorn's
        # worker, say) outlives it.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.log.close()


def wait_port(address, process, deadline, what):
    """Until something listens on address (a monotonic deadline); StartError when process
    exits first or the deadline passes."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StartError(f"{what} exited with status {process.poll()}")
        try:
            socket.create_connection(address, timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise StartError(f"{what} does not listen on {address[0]}:{address[1]}")


class EamProxy:
    """One eam-proxy, started with a generated configuration: an HTTP/1.1 listener (h1), a TLS
    listener (tls, HTTP/2 through ALPN) and the admin listener, each on a free loopback port,
    in front of `upstream` and accepting the one app (client_id, audience) whose keys are in
    jwks_file. `server`, `upstream_extra`, `authorize` and `log` are TOML lines added to those
    sections. Started by the constructor (after `eam-proxy --check` accepts the configuration);
    wait_ready() waits for /readyz."""

    def __init__(self, name, binary, directory, upstream, cert, key, *, app, jwks_file,
                 threads=1, server="", upstream_extra="", authorize="", log="",
                 generator="tests/lib/loopback.py"):
        self.name = name
        self.dir = directory / name
        self.dir.mkdir(parents=True)
        self.h1 = (LOOPBACK, free_port())
        self.tls = (LOOPBACK, free_port())
        self.admin = (LOOPBACK, free_port())
        q = json.dumps  # TOML basic strings are JSON strings for these values
        client_id, audience = app
        # discovery_path is empty: the suites' upstreams are not OPs, and a discovery read would
        # be one more request in what they count or record.
        config = f"""# generated by {generator} ({name})
[server]
listen = [{q(f"{self.h1[0]}:{self.h1[1]}")}]
tls_listen = [{q(f"{self.tls[0]}:{self.tls[1]}")}]
tls_cert = {q(str(cert))}
tls_key = {q(str(key))}
admin_listen = {q(f"{self.admin[0]}:{self.admin[1]}")}
threads = {threads}
grace_period_seconds = 0
pid_file = {q(str(self.dir / "eam-proxy.pid"))}
upgrade_sock = {q(str(self.dir / "upgrade.sock"))}
{server}
[upstream]
addresses = [{q(f"{upstream[0]}:{upstream[1]}")}]
{upstream_extra}
[authorize]
paths = ["/authorize"]
discovery_path = ""
{authorize}
[log]
format = "json"
{log}
[limits]
# The suites send many refused Entra requests from one loopback address.
enabled = false

[[apps]]
client_id = {q(client_id)}
audiences = [{q(audience)}]
cloud = "global"

[clouds.global]
jwks_file = {q(str(jwks_file))}
"""
        self.config_path = self.dir / "eam-proxy.toml"
        self.config_path.write_text(config)
        check = subprocess.run([binary, "--check", "--config", str(self.config_path)],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise StartError(f"eam-proxy --check refused the {name} configuration: "
                             f"{(check.stderr or check.stdout).strip()}")
        # The configuration's log level, not a stray RUST_LOG of the caller's.
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
        self.process = Process(f"eam-proxy-{name}", [binary, "--config", str(self.config_path)],
                               directory, env=env)
        self.pid = self.process.pid

    def wait_ready(self, deadline):
        """Until /readyz answers 200 (a monotonic deadline), else StartError with the last
        answer."""
        url = f"http://{self.admin[0]}:{self.admin[1]}/readyz"
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StartError(f"eam-proxy ({self.name}) exited: {self.process.tail(10)}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as e:
                last = f"{e.code} {e.read().decode(errors='replace').strip()}"
            except OSError as e:
                last = str(e)
            time.sleep(0.1)
        raise StartError(f"eam-proxy ({self.name}) /readyz: {last}")

    def stop(self):
        self.process.stop()
