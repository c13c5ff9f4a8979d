//! README "Pass-through" / issue 6: TLS on the listener (HTTP/1.1 and HTTP/2 by ALPN, certificate rotation
//! without a restart) and TLS to the upstream (SNI, verification against a CA file).
//!
//! Certificates come from a throwaway CA made with the `openssl` command; the clients are `curl`
//! and `openssl s_client`; the TLS upstream is Python's `http.server` behind `ssl`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eam_tests::tempdir::TempDir;
use eam_tests::tls::{
    assert_curl_has_http2, curl, mtime, replace_file, served_certificate, wait_for_certificate,
    CurlResponse, Issued, TestCa, TlsSession, TlsUpstream,
};
use eam_tests::upstream::{Reply, DEFAULT_BODY};
use eam_tests::{
    assert_entra_rewrite, closed_port, microsoft_claims, parse_form, sign_hint, EntraRequest,
    ProxyConfig, ProxyProcess, Request, Upstream, DEFAULT_HOST,
};
use serde_json::Value;

/// The watcher polls the files every 5 s: a change must show within two polls.
const ROTATION_DEADLINE: Duration = Duration::from_secs(12);
/// SIGHUP reloads at once; the margin is for a loaded machine.
const SIGHUP_DEADLINE: Duration = Duration::from_secs(4);

/// The proxy's live certificate files, which a test replaces as cert-manager would.
struct LiveFiles {
    cert: PathBuf,
    key: PathBuf,
    _dir: TempDir,
}

impl LiveFiles {
    fn new(identity: &Issued) -> LiveFiles {
        let dir = TempDir::new();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::copy(&identity.cert, &cert).unwrap();
        std::fs::copy(&identity.key, &key).unwrap();
        LiveFiles {
            cert,
            key,
            _dir: dir,
        }
    }

    /// Puts `cert_from`'s certificate and `key_from`'s key in place, key first; with
    /// `keep_mtimes` the new files carry the old files' modification times, so that only a
    /// SIGHUP can tell the proxy about them.
    fn replace(&self, cert_from: &Path, key_from: &Path, keep_mtimes: bool) {
        let (cert_mtime, key_mtime) = (mtime(&self.cert), mtime(&self.key));
        let keep = |t| keep_mtimes.then_some(t);
        replace_file(
            &self.key,
            &std::fs::read(key_from).unwrap(),
            keep(key_mtime),
        );
        replace_file(
            &self.cert,
            &std::fs::read(cert_from).unwrap(),
            keep(cert_mtime),
        );
    }
}

/// A proxy with a plain and a TLS listener in front of `upstream`.
struct TlsProxy {
    proxy: ProxyProcess,
    tls_addr: SocketAddr,
    ca: PathBuf,
}

impl TlsProxy {
    fn start(upstream: &Upstream, files: &LiveFiles, ca: &TestCa, initial: &Issued) -> TlsProxy {
        let tls_addr = closed_port();
        let config = ProxyConfig::new(upstream).with(|c| {
            c.server.tls_listen = vec![tls_addr.to_string()];
            c.server.tls_cert = Some(files.cert.clone());
            c.server.tls_key = Some(files.key.clone());
        });
        let proxy = ProxyProcess::start(config);
        let tls = TlsProxy {
            proxy,
            tls_addr,
            ca: ca.cert.clone(),
        };
        if let Err(e) = wait_for_certificate(tls_addr, &tls.ca, initial, Duration::from_secs(10)) {
            panic!(
                "TLS listener not serving: {e}\nstderr:\n{}",
                tls.proxy.log()
            );
        }
        tls
    }

    /// `curl` to `https://localhost:PORT{path}`, trusting only the test CA.
    fn curl(&self, path: &str, extra: &[&str]) -> CurlResponse {
        let port = self.tls_addr.port();
        let resolve = format!("localhost:{port}:127.0.0.1");
        let url = format!("https://localhost:{port}{path}");
        let ca = self.ca.display().to_string();
        let mut args = vec!["--resolve", &resolve, "--cacert", &ca];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    }

    fn assert_serves(&self, expected: &Issued, context: &str) {
        let served = served_certificate(self.tls_addr, "localhost", &self.ca)
            .unwrap_or_else(|e| panic!("{context}: {e}\nstderr:\n{}", self.proxy.log()));
        assert_eq!(
            served,
            expected.fingerprint(),
            "{context}: the listener must serve {}",
            expected.common_name
        );
    }

    /// A GET over TLS must still reach the upstream.
    fn assert_still_proxies(&self, context: &str) {
        let response = self.curl("/still-there", &["--http1.1"]);
        response.assert_upstream_ok(context);
    }

    fn assert_alive(&mut self, context: &str) {
        assert!(
            self.proxy.wait_exit(Duration::ZERO).is_none(),
            "{context}: the proxy exited; stderr:\n{}",
            self.proxy.log()
        );
    }
}

/// A CA and two server certificates with different keys, subjects and serials.
fn pki() -> (TestCa, Issued, Issued) {
    let ca = TestCa::new("listener");
    let first = ca.issue("first", "eam-proxy test server 1");
    let second = ca.issue("second", "eam-proxy test server 2");
    (ca, first, second)
}

#[test]
fn tls_listener_speaks_http1_and_http2_by_alpn() {
    assert_curl_has_http2();
    let (ca, first, _) = pki();
    let files = LiveFiles::new(&first);
    let upstream = Upstream::start();
    let tls = TlsProxy::start(&upstream, &files, &ca, &first);

    let h1 = tls.curl("/page?x=1", &["--http1.1"]);
    h1.assert_upstream_ok("HTTP/1.1");
    assert_eq!(h1.http_version, "1.1", "{}", h1.describe());
    assert_eq!(h1.body, DEFAULT_BODY);

    let h2 = tls.curl("/page?x=2", &["--http2"]);
    h2.assert_upstream_ok("HTTP/2");
    assert_eq!(
        h2.http_version,
        "2",
        "ALPN must select h2 when the client offers it: {}",
        h2.describe()
    );
    assert_eq!(h2.body, DEFAULT_BODY);

    let requests = upstream.wait_for(2, Duration::from_secs(5));
    let port = tls.tls_addr.port();
    for (request, target) in requests.iter().zip(["/page?x=1", "/page?x=2"]) {
        assert_eq!(request.method, "GET");
        assert_eq!(request.target, target);
        assert_eq!(
            request.header("host"),
            Some(format!("localhost:{port}").as_str()),
            "the upstream needs the client's authority as Host: {:?}",
            request.headers
        );
        assert_eq!(request.header("x-forwarded-proto"), Some("https"));
        assert_eq!(request.header("x-forwarded-for"), Some("127.0.0.1"));
    }

    // The certificate is the test CA's: a client trusting only the system roots refuses it.
    let url = format!("https://localhost:{port}/");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let untrusted = curl(&["--resolve", &resolve, &url]);
    assert_eq!(untrusted.exit_code, Some(60), "{}", untrusted.describe());

    // The plain listener runs beside the TLS one.
    let plain = tls.proxy.send(&Request::get("/plain"));
    assert_eq!(plain.status, 200, "{}", plain.describe());
    assert_eq!(
        upstream.wait_for(3, Duration::from_secs(5))[2].header("x-forwarded-proto"),
        Some("http")
    );
}

#[test]
fn entra_post_over_tls_is_rewritten_with_http1_and_http2() {
    let (ca, first, _) = pki();
    let files = LiveFiles::new(&first);
    let upstream = Upstream::start();
    let tls = TlsProxy::start(&upstream, &files, &ca, &first);
    let scratch = TempDir::new();
    let port = tls.tls_addr.port();

    for (n, version) in [(1, "--http1.1"), (2, "--http2")] {
        let claims = microsoft_claims();
        let sent = EntraRequest::new(&sign_hint(&claims));
        let body = scratch.write(&format!("entra-{n}.form"), &sent.encoded());
        let body = format!("@{}", body.display());
        let response = tls.curl(
            "/authorize",
            &[
                version,
                "-H",
                "Content-Type: application/x-www-form-urlencoded",
                "--data-binary",
                &body,
            ],
        );
        response.assert_upstream_ok(version);
        assert_eq!(
            response.http_version,
            version.trim_start_matches("--http"),
            "{}",
            response.describe()
        );

        let received = upstream.wait_for(n, Duration::from_secs(5))[n - 1].clone();
        assert_eq!(received.method, "POST", "{version}");
        assert_eq!(received.target, "/authorize", "{version}");
        assert_eq!(
            received.header("content-length"),
            Some(received.body.len().to_string().as_str()),
            "{version}: the rewritten body goes with an exact Content-Length: {:?}",
            received.headers
        );
        assert_entra_rewrite(&parse_form(&received.body), &sent, &claims);
        assert_eq!(
            received.header("x-forwarded-proto"),
            Some("https"),
            "{version}"
        );
        assert_eq!(
            received.header("x-forwarded-host"),
            Some(format!("localhost:{port}").as_str()),
            "{version}"
        );
        let decision = tls.proxy.decision(sent.client_request_id());
        assert_eq!(decision["outcome"], "accepted", "{version}: {decision}");
    }
}

#[test]
fn certificate_rotation_by_file_change_needs_no_restart() {
    let (ca, first, second) = pki();
    let files = LiveFiles::new(&first);
    let upstream = Upstream::start();
    let mut tls = TlsProxy::start(&upstream, &files, &ca, &first);
    let pid = tls.proxy.pid();

    // A connection opened before the rotation must outlive it.
    let mut session = TlsSession::open(tls.tls_addr, &ca.cert);
    let before = session
        .send(&Request::get("/before"))
        .expect("request on the held connection");
    assert_eq!(before.status, 200, "{}", before.describe());

    files.replace(&second.cert, &second.key, false);
    let took = wait_for_certificate(tls.tls_addr, &ca.cert, &second, ROTATION_DEADLINE)
        .unwrap_or_else(|e| panic!("{e}\nstderr:\n{}", tls.proxy.log()));
    eprintln!("new certificate served {took:?} after the file change");

    tls.assert_alive("after the rotation");
    assert_eq!(tls.proxy.pid(), pid);
    tls.assert_still_proxies("after the rotation");
    assert!(session.is_open(), "the held connection was dropped");
    let after = session
        .send(&Request::get("/after"))
        .expect("the connection opened before the rotation still carries requests");
    after.assert_upstream_ok();
}

#[test]
fn certificate_rotation_on_sighup() {
    let (ca, first, second) = pki();
    let files = LiveFiles::new(&first);
    let upstream = Upstream::start();
    let mut tls = TlsProxy::start(&upstream, &files, &ca, &first);

    // Same modification times: the file poll sees no change, only SIGHUP can load the new pair.
    files.replace(&second.cert, &second.key, true);
    let sent = Instant::now();
    tls.proxy.signal("HUP");
    let took = wait_for_certificate(tls.tls_addr, &ca.cert, &second, SIGHUP_DEADLINE)
        .unwrap_or_else(|e| panic!("after SIGHUP: {e}\nstderr:\n{}", tls.proxy.log()));
    eprintln!(
        "new certificate served {took:?} ({:?} after SIGHUP)",
        sent.elapsed()
    );

    tls.assert_alive("after SIGHUP");
    tls.assert_still_proxies("after SIGHUP");
    // Still ready: SIGHUP reloads the certificate, it does not restart or drain anything.
    tls.proxy.wait_readyz(200, Duration::from_secs(5));

    // SIGHUP again with nothing changed: still served, still the same certificate.
    tls.proxy.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    tls.assert_alive("after a second SIGHUP");
    tls.assert_serves(&second, "after a second SIGHUP");
}

#[test]
fn broken_replacement_keeps_the_current_certificate() {
    let (ca, first, second) = pki();
    let third = ca.issue("third", "eam-proxy test server 3");
    let files = LiveFiles::new(&first);
    let upstream = Upstream::start();
    let mut tls = TlsProxy::start(&upstream, &files, &ca, &first);
    let failed = "certificate reload failed";

    // The second certificate with the third one's key: the pair does not match.
    files.replace(&second.cert, &third.key, false);
    tls.proxy.wait_for_log(failed, 1, ROTATION_DEADLINE);
    tls.assert_alive("after a mismatched pair");
    tls.assert_serves(&first, "after a mismatched pair (file change)");
    tls.assert_still_proxies("after a mismatched pair");

    // SIGHUP does not force a mismatched pair in either.
    tls.proxy.signal("HUP");
    tls.proxy.wait_for_log(failed, 2, SIGHUP_DEADLINE);
    tls.assert_alive("after SIGHUP with a mismatched pair");
    tls.assert_serves(&first, "after SIGHUP with a mismatched pair");
    tls.assert_still_proxies("after SIGHUP with a mismatched pair");

    // A half-written certificate file (cert-manager writing in place) is not loaded either.
    let pem = std::fs::read(&second.cert).unwrap();
    replace_file(&files.cert, &pem[..pem.len() / 2], None);
    replace_file(&files.key, &std::fs::read(&second.key).unwrap(), None);
    tls.proxy.signal("HUP");
    tls.proxy.wait_for_log(failed, 3, SIGHUP_DEADLINE);
    tls.assert_serves(&first, "after a truncated certificate");
    tls.assert_still_proxies("after a truncated certificate");

    // Once the pair is whole again, it is picked up.
    replace_file(&files.cert, &pem, None);
    let took = wait_for_certificate(tls.tls_addr, &ca.cert, &second, ROTATION_DEADLINE)
        .unwrap_or_else(|e| panic!("after the repair: {e}\nstderr:\n{}", tls.proxy.log()));
    eprintln!("repaired pair served after {took:?}");
    tls.assert_alive("after the repair");
    tls.assert_still_proxies("after the repair");
}

// ---------------------------------------------------------------------------------------------
// TLS to the upstream.

/// A TLS upstream and the CA of its certificate, which names `localhost`.
fn tls_upstream() -> (TestCa, TlsUpstream) {
    let ca = TestCa::new("upstream");
    let upstream = TlsUpstream::start(&ca.issue("upstream", "eam-proxy test upstream"));
    (ca, upstream)
}

/// A configuration in front of a TLS upstream, checked against `ca_file`.
fn upstream_tls_config(upstream: &TlsUpstream, ca_file: &Path, sni: &str) -> ProxyConfig {
    ProxyConfig::with_upstreams(&[upstream.addr()]).with(|c| {
        c.upstream.tls = true;
        c.upstream.sni = Some(sni.into());
        c.upstream.ca_file = Some(ca_file.to_path_buf());
        c.upstream.health_check_interval_ms = 500;
    })
}

/// The TLS upstream's description of the request it answered.
fn upstream_view(response: &eam_tests::Response) -> Value {
    assert_eq!(response.status, 200, "{}", response.describe());
    assert_eq!(
        response.header("x-upstream"),
        Some("tls"),
        "{}",
        response.describe()
    );
    response.json()
}

/// A 502 made by the proxy: nothing from the upstream got through.
fn assert_refused(response: &eam_tests::Response, context: &str) {
    assert_eq!(response.status, 502, "{context}: {}", response.describe());
    assert_eq!(
        response.header("x-upstream"),
        None,
        "{context}: {}",
        response.describe()
    );
}

#[test]
fn upstream_tls_is_verified_against_the_ca_file() {
    let (ca, upstream) = tls_upstream();
    // Readiness depends on the health check, which is tested on its own below.
    let proxy = ProxyProcess::start_unready(upstream_tls_config(&upstream, &ca.cert, "localhost"));

    let response = proxy.send(&Request::get("/userinfo?x=1"));
    let seen = upstream_view(&response);
    assert_eq!(seen["path"], "/userinfo?x=1", "{seen}");
    assert_eq!(
        seen["sni"], "localhost",
        "upstream.sni must be sent: {seen}"
    );
    assert_eq!(seen["host"], DEFAULT_HOST, "{seen}");
    assert_eq!(seen["x_forwarded_proto"], "http", "{seen}");

    // A full Entra POST over the TLS hop.
    let claims = microsoft_claims();
    let sent = EntraRequest::new(&sign_hint(&claims));
    let seen = upstream_view(&proxy.send(&sent.post()));
    assert_eq!(seen["method"], "POST", "{seen}");
    assert_eq!(seen["path"], "/authorize", "{seen}");
    assert_eq!(
        proxy.decision(sent.client_request_id())["outcome"],
        "accepted"
    );
}

#[test]
fn upstream_tls_with_a_wrong_ca_or_name_is_a_502() {
    let (right, upstream) = tls_upstream();
    let wrong = TestCa::new("someone else");

    // A certificate from a CA the proxy does not trust.
    let proxy =
        ProxyProcess::start_unready(upstream_tls_config(&upstream, &wrong.cert, "localhost"));
    for attempt in 0..3 {
        let response = proxy.send(&Request::get("/userinfo"));
        assert_refused(&response, &format!("wrong CA, attempt {attempt}"));
    }
    assert_eq!(
        proxy.admin_get("/readyz").status,
        503,
        "an upstream failing verification is not healthy"
    );
    drop(proxy);

    // The right CA but a name the certificate does not carry.
    let proxy = ProxyProcess::start_unready(upstream_tls_config(
        &upstream,
        &right.cert,
        "wrong-name.example.test",
    ));
    let response = proxy.send(&Request::get("/userinfo"));
    assert_refused(&response, "certificate not valid for upstream.sni");
    drop(proxy);

    // Only `verify = false` lets it through.
    let proxy = ProxyProcess::start_unready(
        upstream_tls_config(&upstream, &wrong.cert, "localhost")
            .with(|c| c.upstream.verify = false),
    );
    let seen = upstream_view(&proxy.send(&Request::get("/userinfo")));
    assert_eq!(seen["path"], "/userinfo", "{seen}");
}

/// Polls `/readyz` until 200; `None` when it came, else the last answer after `timeout`.
fn readyz_within(proxy: &ProxyProcess, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let response = proxy.admin_get("/readyz");
        if response.status == 200 {
            return None;
        }
        if Instant::now() > deadline {
            return Some(response.describe());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts a proxy on each `config()` and asserts it serves and becomes ready, whether its
/// health check only connects or also GETs a path.
fn assert_becomes_ready(config: impl Fn() -> ProxyConfig) {
    let mut unready = Vec::new();
    for health_check_path in ["", "/healthz"] {
        let config = config().with(|c| c.upstream.health_check_path = health_check_path.into());
        let proxy = ProxyProcess::start_unready(config);
        upstream_view(&proxy.send(&Request::get("/")));
        if let Some(last) = readyz_within(&proxy, Duration::from_secs(10)) {
            unready.push(format!("health_check_path {health_check_path:?}: {last}"));
        }
    }
    assert!(unready.is_empty(), "never ready: {unready:#?}");
}

#[test]
fn upstream_tls_with_the_ca_file_becomes_ready() {
    let (ca, upstream) = tls_upstream();
    assert_becomes_ready(|| upstream_tls_config(&upstream, &ca.cert, "localhost"));
}

#[test]
fn upstream_tls_without_verification_becomes_ready() {
    let wrong = TestCa::new("someone else");
    let (_ca, upstream) = tls_upstream();
    assert_becomes_ready(|| {
        upstream_tls_config(&upstream, &wrong.cert, "localhost").with(|c| c.upstream.verify = false)
    });
}

/// cloudflare/pingora#935 (issue 16): an HTTP/2 request body ended by an empty DATA frame with
/// END_STREAM (`curl -T -` ends every upload so) was written to the HTTP/1 upstream with the
/// chunked terminator twice. The stray `0\r\n\r\n` reads as the start of a second request:
/// the upstream answered it on the pooled connection, and that answer went to the next client.
/// The recording upstream is strict: it records anything after a body as a request.
#[test]
fn an_http2_body_ended_by_an_empty_data_frame_is_terminated_once() {
    let (ca, first, _) = pki();
    let files = LiveFiles::new(&first);
    let upstream = Upstream::with_responder(|r| Reply::ok(&format!("{} {}", r.method, r.target)));
    let tls = TlsProxy::start(&upstream, &files, &ca, &first);
    for round in 0..3 {
        // Stdin is empty: HEADERS without END_STREAM, then one empty DATA frame that ends it.
        let upload = tls.curl(
            &format!("/upload?{round}"),
            &["--http2", "-X", "POST", "-T", "-"],
        );
        assert_eq!(upload.status, 200, "{}", upload.describe());
        assert_eq!(upload.http_version, "2", "{}", upload.describe());
        assert_eq!(upload.body, format!("POST /upload?{round}"));
        // The next request rides the pooled upstream connection.
        let next = tls.proxy.send(&Request::get(&format!("/next?{round}")));
        assert_eq!(next.status, 200, "{}", next.describe());
        assert_eq!(
            next.text(),
            format!("GET /next?{round}"),
            "{}",
            next.describe()
        );
    }
    let requests = upstream.requests();
    let lines: Vec<String> = requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    assert_eq!(
        lines,
        [0, 1, 2]
            .iter()
            .flat_map(|i| [format!("POST /upload?{i}"), format!("GET /next?{i}")])
            .collect::<Vec<_>>(),
        "the upstream must see the six requests and nothing else"
    );
    for upload in requests.iter().filter(|r| r.method == "POST") {
        assert!(
            upload.raw.ends_with(b"\r\n\r\n0\r\n\r\n") && upload.body.is_empty(),
            "one chunked terminator: {:?}",
            String::from_utf8_lossy(&upload.raw)
        );
    }
}
