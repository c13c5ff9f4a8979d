//! TLS for the deployment tests: a throwaway CA and server certificates made with the `openssl`
//! command, bounded runs of `curl` and `openssl s_client` as TLS / HTTP/2 clients, and a TLS
//! upstream (Python's `http.server` behind `ssl`).
//!
//! The tests shell out rather than link a TLS stack: the clients are the ones operators use, they
//! speak HTTP/2, and the harness keeps its few dependencies.

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::command::{run_bounded, COMMAND_TIMEOUT};
use crate::http::{read_head, read_response_rest, Request, Response};
use crate::tempdir::TempDir;

/// Runs an `openssl` subcommand that must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let output = run_bounded(
        Command::new("openssl").current_dir(dir).args(args),
        COMMAND_TIMEOUT,
    );
    assert!(
        output.status.success(),
        "openssl {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `openssl req` making a new P-256 key, written to `key`, and `out`: a self-signed certificate
/// (`mode` `-x509`) or a certificate request (`-new`) for `subject`.
fn openssl_req(dir: &Path, mode: &str, key: &str, out: &str, subject: &str, more: &[&str]) {
    let mut args = vec![
        "req",
        mode,
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-out",
        out,
        "-subj",
        subject,
    ];
    args.extend_from_slice(more);
    openssl(dir, &args);
}

static SERIAL: AtomicU64 = AtomicU64::new(1);

/// A serial number unique within the test run.
fn next_serial() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "0x{:x}{:04x}",
        nanos & 0xffff_ffff_ffff,
        SERIAL.fetch_add(1, Ordering::Relaxed)
    )
}

/// A self-signed P-256 certificate authority in a directory of its own.
pub struct TestCa {
    pub cert: PathBuf,
    key: PathBuf,
    dir: TempDir,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate's subject common name.
    pub common_name: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let dir = TempDir::new();
        let subject = format!("/CN=eam-proxy test CA {name}");
        let extensions = [
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ];
        openssl_req(
            dir.path(),
            "-x509",
            "ca.key",
            "ca.crt",
            &subject,
            &extensions,
        );
        TestCa {
            cert: dir.path().join("ca.crt"),
            key: dir.path().join("ca.key"),
            dir,
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1` with a fresh key and serial, written
    /// as `<file_stem>.crt` and `<file_stem>.key` in the CA's directory.
    pub fn issue(&self, file_stem: &str, common_name: &str) -> Issued {
        let dir = self.dir.path();
        let (cert, key, csr, ext) = (
            format!("{file_stem}.crt"),
            format!("{file_stem}.key"),
            format!("{file_stem}.csr"),
            format!("{file_stem}.ext"),
        );
        self.dir.write(
            &ext,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
             basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n",
        );
        let subject = format!("/CN={common_name}");
        openssl_req(dir, "-new", &key, &csr, &subject, &[]);
        let serial = next_serial();
        let (ca_cert, ca_key) = (
            self.cert.display().to_string(),
            self.key.display().to_string(),
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_cert,
                "-CAkey",
                &ca_key,
                "-set_serial",
                &serial,
                "-days",
                "2",
                "-out",
                &cert,
                "-extfile",
                &ext,
            ],
        );
        Issued {
            cert: dir.join(cert),
            key: dir.join(key),
            common_name: common_name.to_string(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Issued {
    /// The certificate's DER bytes, base64, as in its PEM file: what [`served_certificate`]
    /// returns for it.
    pub fn fingerprint(&self) -> String {
        let pem = std::fs::read_to_string(&self.cert)
            .unwrap_or_else(|e| panic!("{}: {e}", self.cert.display()));
        first_pem_certificate(&pem)
            .unwrap_or_else(|| panic!("{} holds no certificate", self.cert.display()))
    }
}

/// The base64 body of the first `CERTIFICATE` PEM block in `text`, whitespace removed.
fn first_pem_certificate(text: &str) -> Option<String> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let start = text.find(begin)? + begin.len();
    let stop = start + text[start..].find(end)?;
    Some(
        text[start..stop]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect(),
    )
}

/// Replaces `path` with `contents` atomically (write beside, then rename), as a secret volume
/// update does; `mtime`, when given, is set on the new file before it takes the old one's place.
pub fn replace_file(path: &Path, contents: &[u8], mtime: Option<SystemTime>) {
    let staging = path.with_extension("staging");
    std::fs::write(&staging, contents)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", staging.display()));
    if let Some(mtime) = mtime {
        let file = std::fs::File::options()
            .write(true)
            .open(&staging)
            .expect("open the staged file");
        file.set_modified(mtime)
            .expect("set the staged file's mtime");
    }
    std::fs::rename(&staging, path)
        .unwrap_or_else(|e| panic!("cannot rename onto {}: {e}", path.display()));
}

/// The file's modification time.
pub fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The leaf certificate `addr` presents to a client asking for `server_name`, verified against
/// `ca` (see [`Issued::fingerprint`]). `Err` with `openssl s_client`'s output when the handshake
/// or the verification fails.
pub fn served_certificate(
    addr: SocketAddr,
    server_name: &str,
    ca: &Path,
) -> Result<String, String> {
    let output = run_bounded(
        Command::new("openssl")
            .arg("s_client")
            .arg("-connect")
            .arg(addr.to_string())
            .arg("-servername")
            .arg(server_name)
            .arg("-CAfile")
            .arg(ca)
            .arg("-verify_return_error"),
        COMMAND_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    match first_pem_certificate(&stdout) {
        Some(cert) if output.status.success() => Ok(cert),
        _ => Err(format!(
            "openssl s_client {addr} ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )),
    }
}

/// Polls [`served_certificate`] until it is `expected`; returns how long that took, or `Err`
/// with the last observation after `timeout`.
pub fn wait_for_certificate(
    addr: SocketAddr,
    ca: &Path,
    expected: &Issued,
    timeout: Duration,
) -> Result<Duration, String> {
    let want = expected.fingerprint();
    let started = Instant::now();
    loop {
        let last = served_certificate(addr, "localhost", ca);
        if last.as_deref() == Ok(want.as_str()) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "{addr} did not serve {} within {timeout:?}; last: {}",
                expected.common_name,
                match last {
                    Ok(_) => "another certificate".to_string(),
                    Err(e) => e,
                }
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What `curl` got.
#[derive(Debug, Clone)]
pub struct CurlResponse {
    /// `0` when no response was received.
    pub status: u16,
    /// `%{http_version}`: `1.1`, `2`…
    pub http_version: String,
    pub x_upstream: String,
    pub body: String,
    /// curl's exit code and error message.
    pub exit_code: Option<i32>,
    pub stderr: String,
}

impl CurlResponse {
    /// Asserts the upstream's own `200` (`X-Upstream: yes`, see
    /// [`Reply::ok`](crate::Reply::ok)); `context` says which request it answers.
    pub fn assert_upstream_ok(&self, context: &str) {
        assert_eq!(self.status, 200, "{context}: {}", self.describe());
        assert_eq!(self.x_upstream, "yes", "{context}: {}", self.describe());
    }

    pub fn describe(&self) -> String {
        format!(
            "status {} HTTP/{} x-upstream {:?} body {:?} curl exit {:?} {}",
            self.status,
            self.http_version,
            self.x_upstream,
            self.body,
            self.exit_code,
            self.stderr.trim()
        )
    }
}

/// Marks the start of curl's `-w` output after the body.
const WRITE_OUT_MARK: &str = "\n--eam-curl--";

/// Runs `curl -sS` with `args` (URL included), bounded by `--max-time`.
pub fn curl(args: &[&str]) -> CurlResponse {
    let write_out =
        format!("{WRITE_OUT_MARK}%{{http_code}} %{{http_version}} %header{{x-upstream}}");
    let output = run_bounded(
        Command::new("curl")
            .args(["-sS", "--max-time", "15", "--connect-timeout", "5"])
            .arg("-w")
            .arg(write_out)
            .args(args),
        COMMAND_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, meta) = stdout
        .rsplit_once(WRITE_OUT_MARK)
        .unwrap_or((stdout.as_str(), ""));
    let mut meta = meta.splitn(3, ' ');
    CurlResponse {
        status: meta.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        http_version: meta.next().unwrap_or("").to_string(),
        x_upstream: meta.next().unwrap_or("").trim().to_string(),
        body: body.to_string(),
        exit_code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Fails the test unless this curl speaks HTTP/2.
pub fn assert_curl_has_http2() {
    let output = run_bounded(Command::new("curl").arg("-V"), COMMAND_TIMEOUT);
    let version = String::from_utf8_lossy(&output.stdout);
    assert!(
        version
            .lines()
            .any(|l| l.starts_with("Features:") && l.split_whitespace().any(|f| f == "HTTP2")),
        "this curl has no HTTP2 feature:\n{version}"
    );
}

const TLS_UPSTREAM_PY: &str = r#"
import http.server, json, ssl, sys

context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])

def remember_sni(sock, name, _context):
    sock.eam_sni = name

context.sni_callback = remember_sni

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({
            "method": self.command,
            "path": self.path,
            "host": self.headers.get("Host"),
            "sni": getattr(self.connection, "eam_sni", None),
            "x_forwarded_proto": self.headers.get("X-Forwarded-Proto"),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Upstream", "tls")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = reply
    do_HEAD = reply
    do_POST = reply

    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def finish_request(self, request, client_address):
        request.settimeout(30)
        # The handshake runs here, in the connection's thread, not in the accept loop.
        request = context.wrap_socket(request, server_side=True)
        self.RequestHandlerClass(request, client_address, self)

    def handle_error(self, request, client_address):
        pass

server = Server(("127.0.0.1", int(sys.argv[3])), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// An HTTPS/1.1 upstream on loopback serving `identity`; every answer is `200`, header
/// `X-Upstream: tls`, and a JSON body describing the request (`method`, `path`, `host`, the `sni`
/// the client sent, `x_forwarded_proto`). Killed on drop.
pub struct TlsUpstream {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl TlsUpstream {
    pub fn start(identity: &Issued) -> TlsUpstream {
        let dir = TempDir::new();
        let script = dir.write("tls_upstream.py", TLS_UPSTREAM_PY);
        let stderr_path = dir.path().join("tls_upstream.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("create the upstream's stderr");
        // A port of the harness's, not one python picks: another test may be about to bind
        // whatever the OS hands out.
        let port = crate::ports::closed_port().port();
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(&identity.cert)
            .arg(&identity.key)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 for the TLS upstream: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let port = receiver
            .recv_timeout(Duration::from_secs(20))
            .ok()
            .and_then(|line| line.trim().parse::<u16>().ok());
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the TLS upstream (python3) did not report its port within 20 s: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        };
        TlsUpstream {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One TLS connection held open by `openssl s_client`, carrying HTTP/1.1 requests one after the
/// other: for checks that a connection survives something (a certificate rotation).
pub struct TlsSession {
    child: Child,
    stdin: Option<ChildStdin>,
    responses: mpsc::Receiver<io::Result<Response>>,
}

impl TlsSession {
    /// Connects to `addr` as `localhost`, verifying the certificate against `ca`.
    pub fn open(addr: SocketAddr, ca: &Path) -> TlsSession {
        let mut child = Command::new("openssl")
            .arg("s_client")
            .arg("-connect")
            .arg(addr.to_string())
            .arg("-servername")
            .arg("localhost")
            .arg("-CAfile")
            .arg(ca)
            .arg("-verify_return_error")
            // Nothing but the server's bytes on stdout; stays connected at end of stdin.
            .arg("-quiet")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run openssl s_client: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, responses) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let response = read_response(&mut reader);
                let failed = response.is_err();
                if sender.send(response).is_err() || failed {
                    return;
                }
            }
        });
        TlsSession {
            stdin: child.stdin.take(),
            child,
            responses,
        }
    }

    /// Sends `request` on the connection and reads its response (within 15 s).
    pub fn send(&mut self, request: &Request) -> io::Result<Response> {
        let stdin = self.stdin.as_mut().expect("session open");
        stdin.write_all(&request.to_bytes())?;
        stdin.flush()?;
        self.responses
            .recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }

    /// Whether `openssl s_client` is still connected.
    pub fn is_open(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

fn read_response<R: BufRead>(reader: &mut R) -> io::Result<Response> {
    let mut raw = Vec::new();
    let head = read_head(reader, &mut raw)?
        .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
    read_response_rest(reader, head, raw, false)
}

impl Drop for TlsSession {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
