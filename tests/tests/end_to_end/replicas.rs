//! Two replicas of the proxy in front of one OP, no sticky sessions: Entra's POST goes through
//! one, the OP's final form_post page through the other. The response guard's sealed cookie
//! (README "Several replicas") carries the expectation from the first to the second.

use std::sync::{Arc, Mutex};

use base64::Engine;
use eam_proxy::config::GuardMode;
use eam_tests::tempdir::TempDir;
use eam_tests::{
    microsoft_claims, parse_form, parse_html_form, sign_hint, EntraRequest, ProxyConfig,
    ProxyProcess, Reply, Request, Response, Upstream, GLOBAL_REDIRECT,
};
use serde_json::json;

use crate::response_guard::{form_post_page, id_token_for};

const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
const PREFIX: &str = "__Host-eam-g-";

/// An OP whose authorize endpoint shows a login page, and whose `/resume` ends the login with a
/// form_post of an id_token for another `sub` than the hint's (the misbehaving answer).
struct Op {
    upstream: Upstream,
}

impl Op {
    fn start() -> Op {
        let request: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let upstream = Upstream::with_responder(move |r| {
            if r.path() == DISCOVERY_PATH {
                let doc = json!({"issuer": "https://op.example",
                    "authorization_endpoint": "https://op.example/authorize"});
                return Reply::typed("application/json", &doc.to_string());
            }
            if r.method == "POST" {
                *request.lock().unwrap() = parse_form(&r.body);
                return Reply::typed("text/html", "<html><body>Sign in</body></html>");
            }
            let params = request.lock().unwrap().clone();
            let wrong_sub = |c: &mut serde_json::Value| c["sub"] = json!("someone-else");
            let (id_token, state) = id_token_for(&params, &wrong_sub);
            let mut fields = vec![("id_token", id_token.as_str())];
            if !r.target.ends_with("stateless") {
                fields.push(("state", state.as_str()));
            }
            Reply::typed("text/html", &form_post_page(GLOBAL_REDIRECT, &fields))
        });
        Op { upstream }
    }

    fn replica(&self, key_file: Option<&std::path::Path>) -> ProxyProcess {
        let key_file = key_file.map(|p| p.to_path_buf());
        ProxyProcess::start(ProxyConfig::new(&self.upstream).with(|c| {
            c.authorize.response_guard = GuardMode::Enforce;
            c.authorize.discovery_path = DISCOVERY_PATH.into();
            c.authorize.response_guard_key_file = key_file;
        }))
    }

    /// Every `Cookie` field the OP received, joined.
    fn cookies_received(&self) -> String {
        self.upstream
            .requests()
            .iter()
            .flat_map(|r| {
                r.headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
                    .map(|(_, v)| v.clone())
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn key_file(dir: &TempDir, secrets: &[&[u8]]) -> std::path::PathBuf {
    let lines: Vec<String> = secrets
        .iter()
        .map(|s| base64::engine::general_purpose::STANDARD.encode(s))
        .collect();
    dir.write(
        "guard.key",
        &format!("# the response guard's key\n{}\n", lines.join("\n")),
    )
}

/// Entra's POST through `proxy`: the guard cookie it set, as `name=value`.
fn sign_in(proxy: &ProxyProcess) -> (EntraRequest, String) {
    let sent = EntraRequest::new(&sign_hint(&microsoft_claims()));
    let response = proxy.send(&sent.post().header("Cookie", "sid=op-session"));
    assert_eq!(response.status, 200, "{}", response.describe());
    let set: Vec<&str> = response
        .header_all("set-cookie")
        .into_iter()
        .filter(|c| c.starts_with(PREFIX))
        .collect();
    assert_eq!(set.len(), 1, "{}", response.describe());
    let cookie = set[0];
    for attribute in [
        "; Secure",
        "; HttpOnly",
        "; Path=/",
        "; SameSite=None",
        "; Max-Age=600",
    ] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_string();
    (sent, pair)
}

fn resume(proxy: &ProxyProcess, cookie: &str, path: &str) -> Response {
    proxy.send(
        &Request::get(path)
            .header("Accept", "text/html")
            .header("Cookie", &format!("sid=op-session; {cookie}; theme=dark")),
    )
}

fn unsealed(proxy: &ProxyProcess, result: &str) -> f64 {
    proxy
        .metric(&format!(
            "eam_response_guard_unsealed_total{{result=\"{result}\"}}"
        ))
        .unwrap_or_default()
}

fn guard(proxy: &ProxyProcess, result: &str, reason: &str) -> f64 {
    proxy
        .metric(&format!(
            "eam_response_guard_total{{reason=\"{reason}\",result=\"{result}\"}}"
        ))
        .unwrap_or_default()
}

fn assert_replaced(response: &Response, sent: &EntraRequest) {
    let form = parse_html_form(&response.text()).expect("a form_post page");
    assert_eq!(
        form.field("error"),
        Some("access_denied"),
        "{}",
        response.describe()
    );
    assert_eq!(form.field("state"), sent.get("state"));
    assert!(form.field("id_token").is_none());
}

#[test]
fn the_other_replica_opens_the_cookie_and_catches_a_wrong_sub() {
    let op = Op::start();
    let dir = TempDir::new();
    let keys = key_file(&dir, &[&[42; 32]]);
    let first = op.replica(Some(&keys));
    let mut second = op.replica(Some(&keys));
    let (sent, cookie) = sign_in(&first);
    assert_eq!(
        first
            .metric("eam_response_guard_sealed_total{result=\"sealed\"}")
            .unwrap(),
        1.0
    );

    let response = resume(&second, &cookie, "/resume");
    assert_replaced(&response, &sent);
    assert_eq!(unsealed(&second, "opened"), 1.0);
    assert_eq!(guard(&second, "violation", "sub_mismatch"), 1.0);
    assert_eq!(second.log_lines("\"expectation\":\"cookie\"").len(), 1);
    // The state lost: the cookie is found by the id_token's nonce.
    let response = resume(&second, &cookie, "/resume/stateless");
    let form = parse_html_form(&response.text()).unwrap();
    assert_eq!(form.field("error"), Some("access_denied"));
    assert_eq!(unsealed(&second, "opened"), 2.0);

    // A restarted replica has no memory, and needs none.
    second.signal("TERM");
    second.wait_exit(std::time::Duration::from_secs(10));
    let third = op.replica(Some(&keys));
    assert_replaced(&resume(&third, &cookie, "/resume"), &sent);
    assert_eq!(unsealed(&third, "opened"), 1.0);

    // The OP never sees the proxy's cookies; its own pass.
    let received = op.cookies_received();
    assert!(!received.contains(PREFIX), "{received}");
    assert!(received.contains("sid=op-session"), "{received}");
    assert!(received.contains("theme=dark"), "{received}");
}

#[test]
fn without_a_shared_key_or_with_an_altered_cookie_only_stateless_checks_run() {
    let op = Op::start();
    let dir = TempDir::new();
    let first = op.replica(Some(&key_file(&dir, &[&[1; 32]])));
    let (_sent, cookie) = sign_in(&first);

    // Another replica with its own random key: the cookie is unreadable to it.
    let alone = op.replica(None);
    assert!(!alone.log_lines("random key of this process").is_empty());
    let response = resume(&alone, &cookie, "/resume");
    assert!(
        parse_html_form(&response.text())
            .unwrap()
            .field("id_token")
            .is_some(),
        "a wrong sub is not caught statelessly"
    );
    assert_eq!(unsealed(&alone, "unreadable"), 1.0);
    assert_eq!(guard(&alone, "ok", "stateless"), 1.0);

    // An altered cookie under the right key is never trusted.
    let other_dir = TempDir::new();
    let same_key = op.replica(Some(&key_file(&other_dir, &[&[1; 32]])));
    let (name, value) = cookie.split_once('=').unwrap();
    let flipped = if value.ends_with('A') { 'B' } else { 'A' };
    let forged = format!("{name}={}{flipped}", &value[..value.len() - 1]);
    resume(&same_key, &forged, "/resume");
    assert_eq!(unsealed(&same_key, "unreadable"), 1.0);
    assert_eq!(unsealed(&same_key, "opened"), 0.0);
    // No cookie at all.
    let response = same_key.send(&Request::get("/resume").header("Accept", "text/html"));
    assert_eq!(response.status, 200, "{}", response.describe());
    assert_eq!(unsealed(&same_key, "missing"), 1.0);
}

#[test]
fn at_most_four_guard_cookies_live_in_one_browser() {
    let op = Op::start();
    let dir = TempDir::new();
    let proxy = op.replica(Some(&key_file(&dir, &[&[5; 32]])));
    let mut jar: Vec<String> = Vec::new();
    for _ in 0..6 {
        let sent = EntraRequest::new(&sign_hint(&microsoft_claims()));
        let mut request = sent.post();
        if !jar.is_empty() {
            request = request.header("Cookie", &jar.join("; "));
        }
        let response = proxy.send(&request);
        assert_eq!(response.status, 200, "{}", response.describe());
        for set in response.header_all("set-cookie") {
            let pair = set.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            jar.retain(|c| !c.starts_with(&format!("{name}=")));
            if !set.contains("Max-Age=0") {
                jar.push(format!("{name}={value}"));
            }
        }
        assert!(jar.len() <= 4, "{jar:?}");
    }
    assert_eq!(jar.len(), 4);
}
