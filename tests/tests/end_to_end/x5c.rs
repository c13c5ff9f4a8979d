//! x5c injection (`[[upstream.x5c]]`): the OP's key set passing through gets `x5c` and
//! `x5t#S256` on the keys whose certificate is configured, and nothing else changes.

use std::path::PathBuf;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use eam_tests::tempdir::TempDir;
use eam_tests::{
    check_config, ProxyConfig, ProxyProcess, Reply, Request, Upstream, FOREIGN, SIGNER,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The OP's key set: `signer` (whose certificate is configured) and `foreign` (none).
fn op_jwks() -> Value {
    json!({"keys": [SIGNER.public_jwk(SIGNER.kid), FOREIGN.public_jwk(FOREIGN.kid)]})
}

fn signer_certificate(dir: &TempDir) -> (PathBuf, Vec<u8>) {
    eam_tests::hints::signer_certificate(dir, "idp.example.test")
}

/// An upstream serving `/jwks` with `reply` and anything else as plain JSON.
fn op(reply: impl Fn() -> Reply + Send + Sync + 'static) -> Upstream {
    Upstream::with_responder(move |request| match request.path() {
        "/jwks" => reply(),
        _ => json_reply(&op_jwks().to_string()),
    })
}

fn json_reply(body: &str) -> Reply {
    Reply::typed("application/jwk-set+json", body).header("ETag", "\"v1\"")
}

/// `op(reply)` behind a proxy that injects the `signer` certificate into `/jwks`.
struct Injecting {
    upstream: Upstream,
    proxy: ProxyProcess,
    /// The certificate's DER.
    der: Vec<u8>,
    _dir: TempDir,
}

fn injecting(reply: impl Fn() -> Reply + Send + Sync + 'static) -> Injecting {
    let dir = TempDir::new();
    let (cert_file, der) = signer_certificate(&dir);
    let upstream = op(reply);
    let proxy = ProxyProcess::start(ProxyConfig::new(&upstream).add_x5c("/jwks", &[cert_file]));
    Injecting {
        upstream,
        proxy,
        der,
        _dir: dir,
    }
}

/// `eam_x5c_injections_total{result}`.
fn injections(proxy: &ProxyProcess, result: &str) -> Option<f64> {
    proxy.metric(&format!("eam_x5c_injections_total{{result=\"{result}\"}}"))
}

#[test]
fn matching_keys_get_x5c_and_others_are_unchanged() {
    let x5c = injecting(|| json_reply(&op_jwks().to_string()));
    let (upstream, proxy) = (&x5c.upstream, &x5c.proxy);

    let response = proxy.send(
        &Request::get("/jwks")
            .header("Accept-Encoding", "gzip, br")
            .header("If-None-Match", "\"v1\""),
    );

    assert_eq!(response.status, 200, "{}", response.describe());
    let doc = response.json();
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let signer = keys.iter().find(|k| k["kid"] == "signer").unwrap();
    assert_eq!(signer["x5c"], json!([STANDARD.encode(&x5c.der)]));
    assert_eq!(
        signer["x5t#S256"],
        json!(URL_SAFE_NO_PAD.encode(Sha256::digest(&x5c.der)))
    );
    let mut without_x5c = signer.clone();
    let members = without_x5c.as_object_mut().unwrap();
    members.remove("x5c");
    members.remove("x5t#S256");
    assert_eq!(
        without_x5c,
        SIGNER.public_jwk(SIGNER.kid),
        "other members unchanged"
    );
    let foreign = keys.iter().find(|k| k["kid"] == "foreign").unwrap();
    assert_eq!(
        foreign,
        &FOREIGN.public_jwk(FOREIGN.kid),
        "no certificate: unchanged"
    );
    // A new representation, sent whole: its length, and a validator of its own bytes (the
    // OP's names the other one), which the proxy answers itself.
    assert_eq!(
        response.header("content-length"),
        Some(response.body.len().to_string().as_str())
    );
    assert_eq!(response.header("transfer-encoding"), None);
    let etag = response.header("etag").expect("an ETag").to_string();
    assert_ne!(etag, "\"v1\"");
    assert_eq!(response.header("last-modified"), None);
    let again = proxy.send(&Request::get("/jwks").header("If-None-Match", &etag));
    assert_eq!(again.status, 304, "{}", again.describe());
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let weak = proxy.send(&Request::get("/jwks").header("If-None-Match", &format!("W/{etag}")));
    assert_eq!(weak.status, 304, "If-None-Match compares weakly");

    // The upstream was asked for an uncompressed, full answer each time.
    let received = upstream.wait_for(3, std::time::Duration::from_secs(5));
    for request in &received {
        assert_eq!(request.header("accept-encoding"), Some("identity"));
        assert_eq!(request.header("if-none-match"), None);
    }

    assert_eq!(injections(proxy, "injected"), Some(3.0));
    assert_eq!(injections(proxy, "no_match"), Some(3.0));
    let warned = proxy.wait_for_log(
        "published without x5c",
        1,
        std::time::Duration::from_secs(5),
    );
    assert!(warned[0].contains("\"kid\":\"foreign\""), "{}", warned[0]);
}

#[test]
fn other_paths_and_methods_pass_through_untouched() {
    let x5c = injecting(|| json_reply(&op_jwks().to_string()));
    let (upstream, proxy) = (&x5c.upstream, &x5c.proxy);

    let other = proxy.send(&Request::get("/keys").header("Accept-Encoding", "gzip"));
    assert_eq!(other.json(), op_jwks());
    assert!(other.header("content-length").is_some());
    let post = proxy.send(&Request::post("/jwks").body("x"));
    assert_eq!(post.json(), op_jwks());
    assert!(post.header("content-length").is_some());
    let requests = upstream.wait_for(2, std::time::Duration::from_secs(5));
    assert_eq!(requests[0].header("accept-encoding"), Some("gzip"));
    assert_eq!(injections(proxy, "injected"), Some(0.0));
}

#[test]
fn what_cannot_be_rewritten_passes_through_byte_for_byte() {
    let cases: [(&str, Reply, &str); 4] = [
        ("not JSON", json_reply("{\"keys\": [oops"), "invalid_body"),
        (
            "no keys array",
            json_reply("{\"jwks\": []}"),
            "invalid_body",
        ),
        (
            "compressed anyway",
            json_reply("\u{1f}compressed").header("Content-Encoding", "gzip"),
            "encoded",
        ),
        (
            "not a JSON content type",
            Reply::typed("text/html", &op_jwks().to_string()),
            "invalid_body",
        ),
    ];
    for (what, reply, result) in cases {
        let body = reply.body.clone();
        let x5c = injecting(move || reply.clone());
        let proxy = &x5c.proxy;
        let response = proxy.send(&Request::get("/jwks"));
        assert_eq!(response.status, 200, "{what}");
        assert_eq!(response.body, body, "{what}: body unchanged");
        assert_eq!(injections(proxy, result), Some(1.0), "{what}");
        assert_eq!(injections(proxy, "injected"), Some(0.0), "{what}");
    }
}

#[test]
fn an_unchanged_key_set_keeps_its_bytes() {
    // Pretty-printed, only `foreign`: nothing to inject, so the OP's exact bytes go out.
    let body =
        serde_json::to_string_pretty(&json!({"keys": [FOREIGN.public_jwk(FOREIGN.kid)]})).unwrap();
    let served = body.clone();
    let x5c = injecting(move || json_reply(&served));
    let proxy = &x5c.proxy;
    let response = proxy.send(&Request::get("/jwks"));
    assert_eq!(response.text(), body);
    assert_eq!(injections(proxy, "no_match"), Some(1.0));
    // The OP's bytes keep the OP's validator, and the proxy answers it.
    assert_eq!(response.header("etag"), Some("\"v1\""));
    assert_eq!(
        response.header("content-length"),
        Some(body.len().to_string().as_str())
    );
    let again = proxy.send(&Request::get("/jwks").header("If-None-Match", "\"v1\""));
    assert_eq!(again.status, 304);
}

#[test]
fn a_chunked_key_set_goes_out_with_its_length() {
    let x5c = injecting(|| json_reply(&op_jwks().to_string()).chunked(7));
    let proxy = &x5c.proxy;
    let response = proxy.send(&Request::get("/jwks"));
    assert_eq!(response.status, 200, "{}", response.describe());
    assert_eq!(response.header("transfer-encoding"), None);
    assert_eq!(
        response.header("content-length"),
        Some(response.body.len().to_string().as_str())
    );
    assert!(
        response.json()["keys"][0].get("x5c").is_some()
            || response.json()["keys"][1].get("x5c").is_some()
    );
    assert_eq!(injections(proxy, "injected"), Some(1.0));
}

#[test]
fn an_unreachable_upstream_is_a_502_on_the_key_set_path_too() {
    let x5c = injecting(|| json_reply(&op_jwks().to_string()));
    let proxy = &x5c.proxy;
    drop(x5c.upstream);
    let response = proxy.send(&Request::get("/jwks"));
    assert_eq!(response.status, 502, "{}", response.describe());
}

#[test]
fn check_reads_the_certificate_files() {
    let upstream = Upstream::start();
    let missing = PathBuf::from("/nonexistent/op-signing.pem");
    let outcome = check_config(ProxyConfig::new(&upstream).add_x5c("/jwks", &[missing]));
    assert_eq!(outcome.status.code(), Some(2), "{outcome:?}");
    assert!(
        outcome
            .stderr
            .contains("upstream.x5c[0].certificates[0]: cannot read /nonexistent/op-signing.pem"),
        "{}",
        outcome.stderr
    );
    let dir = TempDir::new();
    let (cert_file, _) = signer_certificate(&dir);
    check_config(ProxyConfig::new(&upstream).add_x5c("/jwks", &[cert_file])).assert_accepted();
}

#[test]
fn an_expired_certificate_is_reported_at_start_up() {
    let dir = TempDir::new();
    let key = rcgen::KeyPair::from_pem(SIGNER.pem).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = dir.write("expired.pem", &params.self_signed(&key).unwrap().pem());
    let upstream = op(|| json_reply(&op_jwks().to_string()));
    let proxy = ProxyProcess::start(ProxyConfig::new(&upstream).add_x5c("/jwks", &[expired]));
    let lines = proxy.wait_for_log(
        "x5c certificate has expired",
        1,
        std::time::Duration::from_secs(5),
    );
    assert!(lines[0].contains("\"path\":\"/jwks\""), "{}", lines[0]);
    // Still injected: whether Entra takes it is the doctor's verdict, not the proxy's.
    let doc = proxy.send(&Request::get("/jwks")).json();
    assert!(doc["keys"][0]["x5c"].is_array());
}
