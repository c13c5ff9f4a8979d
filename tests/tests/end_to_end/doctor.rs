//! `eam-proxy doctor` against a local stub OP: a conforming provider passes, and each of Entra's
//! discovery and key-set requirements, broken one at a time, fails its own check.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use eam_tests::command::{run_bounded, COMMAND_TIMEOUT};
use eam_tests::proxy::binary;
use eam_tests::tempdir::TempDir;
use eam_tests::{ProxyConfig, Reply, Upstream, SIGNER};
use serde_json::{json, Value};

type Mutation = fn(&mut Value);

/// A stub OP: discovery at the standard path (issuer = its own URL, then `mutate`d), the
/// `signer` key at `/jwks`, and `discovery_reply` to frame the discovery answer.
fn stub_op(mutate: Mutation, frame: fn(String) -> Reply) -> Upstream {
    let base: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let own = base.clone();
    let upstream = Upstream::with_responder(move |request| {
        let base = own.get().cloned().unwrap_or_default();
        match request.path() {
            "/.well-known/openid-configuration" => {
                let mut doc = json!({
                    "issuer": base,
                    "authorization_endpoint": format!("{base}/authorize"),
                    "jwks_uri": format!("{base}/jwks"),
                    "scopes_supported": ["openid"],
                    "response_types_supported": ["id_token", "code"],
                    "response_modes_supported": ["form_post", "query"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "claim_types_supported": ["normal"],
                    "subject_types_supported": ["public"],
                });
                mutate(&mut doc);
                frame(doc.to_string())
            }
            "/jwks" => json_reply(json!({"keys": [SIGNER.public_jwk(SIGNER.kid)]}).to_string()),
            _ => Reply::ok("not found").status(404),
        }
    });
    base.set(format!("http://{}", upstream.addr())).unwrap();
    upstream
}

fn json_reply(body: String) -> Reply {
    Reply::typed("application/json", &body)
}

fn chunked(body: String) -> Reply {
    let len = body.len();
    json_reply(body).chunked(len)
}

fn unchanged(_: &mut Value) {}

fn signer_certificate(dir: &TempDir) -> PathBuf {
    eam_tests::hints::signer_certificate(dir, "127.0.0.1").0
}

/// `eam-proxy doctor --config <config with x5c injection for /jwks> <args>`.
fn run_doctor(op: &Upstream, x5c: bool, args: &[&str]) -> std::process::Output {
    let dir = TempDir::new();
    let mut config = ProxyConfig::new(op);
    if x5c {
        config = config.add_x5c("/jwks", &[signer_certificate(&dir)]);
    }
    let (path, _) = config.write_to(&dir);
    run_bounded(
        Command::new(binary())
            .args(["doctor", "--config"])
            .arg(&path)
            .args(args)
            .env_remove("EAM_PROXY_CONFIG"),
        COMMAND_TIMEOUT,
    )
}

struct Report {
    code: Option<i32>,
    json: Value,
}

impl Report {
    fn status(&self, id: &str) -> Vec<String> {
        self.json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["id"] == id)
            .map(|c| c["status"].as_str().unwrap().to_string())
            .collect()
    }

    fn failed(&self) -> Vec<String> {
        self.json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] == "fail")
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Runs the doctor with `--issuer` = the stub's URL, on loopback http.
fn doctor(upstream: &Upstream, x5c: bool) -> Report {
    let issuer = format!("http://{}", upstream.addr());
    let output = run_doctor(
        upstream,
        x5c,
        &["--json", "--allow-http", "--issuer", &issuer],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    Report {
        code: output.status.code(),
        json,
    }
}

#[test]
fn a_conforming_provider_passes_with_x5c_injection_configured() {
    let op = stub_op(unchanged, json_reply);
    let report = doctor(&op, true);
    assert_eq!(report.failed(), Vec::<String>::new(), "{:#}", report.json);
    assert_eq!(report.code, Some(0));
    assert_eq!(report.status("jwks.injection"), ["pass"]);
    assert_eq!(report.status("jwks.x5c"), ["pass"]);
    assert_eq!(report.status("jwks.x5c_issuer"), ["pass"]);
    assert_eq!(report.status("config.microsoft_keys"), ["pass"]);
    // Loopback http is only tolerated, never passed.
    assert_eq!(report.status("discovery.issuer"), ["warn"]);
    assert_eq!(report.json["summary"]["failed"], 0);
}

#[test]
fn without_x5c_the_key_fails_and_the_fix_is_named() {
    let op = stub_op(unchanged, json_reply);
    let report = doctor(&op, false);
    assert_eq!(report.code, Some(1));
    assert_eq!(report.failed(), ["jwks.x5c"]);
    let check = report.json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "jwks.x5c")
        .unwrap();
    assert!(check["entra_error"]
        .as_str()
        .unwrap()
        .contains("AADSTS50012"));
    let fix = check["fix"].as_str().unwrap();
    assert!(
        fix.contains("eam-proxy cert") && fix.contains("[[upstream.x5c]]"),
        "{fix}"
    );
}

#[test]
fn each_discovery_requirement_broken_alone_is_caught() {
    let cases: [(&str, Mutation); 13] = [
        ("discovery.issuer", |d| {
            d["issuer"] = json!(format!("{}/", d["issuer"].as_str().unwrap()))
        }),
        ("discovery.issuer", |d| {
            d["issuer"] = json!("https://idp.example.com")
        }),
        ("discovery.jwks_uri", |d| {
            d["jwks_uri"] = json!(format!("{}?v=1", d["jwks_uri"].as_str().unwrap()))
        }),
        ("discovery.jwks_uri", |d| {
            d["jwks_uri"] = json!(format!("{}#k", d["jwks_uri"].as_str().unwrap()))
        }),
        ("discovery.jwks_uri", |d| {
            d["jwks_uri"] = json!("http://idp.example.com/jwks")
        }),
        ("discovery.scopes_supported", |d| {
            d["scopes_supported"] = json!(["profile"])
        }),
        ("discovery.response_types_supported", |d| {
            d["response_types_supported"] = json!(["code"])
        }),
        ("discovery.response_modes_supported", |d| {
            d["response_modes_supported"] = json!(["query", "fragment"])
        }),
        ("discovery.id_token_signing_alg_values_supported", |d| {
            d["id_token_signing_alg_values_supported"] = json!(["ES256"])
        }),
        ("discovery.claim_types_supported", |d| {
            d["claim_types_supported"] = json!(["distributed"])
        }),
        ("discovery.issuer", |d| {
            drop(d.as_object_mut().unwrap().remove("issuer"))
        }),
        ("discovery.subject_types_supported", |d| {
            d["subject_types_supported"] = json!(["pairwise"])
        }),
        // oidc-provider's path while the proxy is configured for /authorize.
        ("discovery.authorization_endpoint", |d| {
            let auth = d["authorization_endpoint"]
                .as_str()
                .unwrap()
                .replace("/authorize", "/auth");
            d["authorization_endpoint"] = json!(auth)
        }),
    ];
    for (id, mutate) in cases {
        let op = stub_op(mutate, json_reply);
        let report = doctor(&op, true);
        assert_eq!(report.code, Some(1), "{id}");
        assert!(
            report.failed().contains(&id.to_string()),
            "{id}: {:#}",
            report.json
        );
        // Only the broken requirement (and what needs the jwks_uri) fails.
        for failed in report.failed() {
            assert!(
                failed == id || failed.starts_with("jwks."),
                "{id}: also {failed}"
            );
        }
    }
    let op = stub_op(unchanged, chunked);
    let report = doctor(&op, true);
    assert_eq!(report.failed(), ["discovery.content_length"]);
}

#[test]
fn the_discovery_url_itself_and_https_are_checked() {
    let op = stub_op(unchanged, json_reply);
    // Without --allow-http, plain http is a failure, as Entra sees it.
    let output = run_doctor(&op, true, &["--issuer", &format!("http://{}", op.addr())]);
    assert_eq!(output.status.code(), Some(1));
    let table = String::from_utf8_lossy(&output.stdout);
    for id in ["discovery.url", "discovery.issuer", "discovery.jwks_uri"] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("fail") && l.contains(id)),
            "{id}: {table}"
        );
    }
    assert!(
        table.contains("fix: publish the discovery URL as an https:// URL"),
        "{table}"
    );
    assert!(
        table.lines().last().unwrap().starts_with("doctor: "),
        "{table}"
    );
}

#[test]
fn through_the_upstream_the_public_url_comes_from_the_issuer() {
    let op = stub_op(unchanged, json_reply);
    let output = run_doctor(&op, true, &["--json", "--allow-http"]);
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{json:#}");
    let checks = json["checks"].as_array().unwrap();
    assert_eq!(checks[0]["id"], "doctor.mode");
    assert_eq!(checks[0]["status"], "warn");
    assert!(checks
        .iter()
        .any(|c| c["id"] == "jwks.x5c" && c["status"] == "pass"));
}
