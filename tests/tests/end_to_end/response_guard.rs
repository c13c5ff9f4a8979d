//! The response guard against the real binary: an upstream that answers Entra's authorize POST
//! with a form_post page to Entra's redirect_uri, its id_token right or wrong in one claim.
//! `monitor` lets every page through and counts; `enforce` replaces a wrong one with an
//! `access_denied` form_post carrying the state.

use std::sync::{Arc, Mutex};

use eam_proxy::config::GuardMode;
use eam_tests::{
    microsoft_claims, parse_form, parse_html_form, sign_hint, EntraRequest, ProxyConfig,
    ProxyProcess, Reply, Request, Response, Upstream, CLIENT_ID, FOREIGN, GLOBAL_REDIRECT,
};
use serde_json::{json, Value};

type Tweak = Arc<dyn Fn(&mut Value) + Send + Sync>;

/// The page an OP sends to end the login: oidc-provider's form_post, escaped as it escapes.
pub(crate) fn form_post_page(action: &str, fields: &[(&str, &str)]) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
    };
    let inputs: String = fields
        .iter()
        .map(|(n, v)| {
            format!(
                "<input type=\"hidden\" name=\"{n}\" value=\"{}\"/>\n",
                esc(v)
            )
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<title>Submitting Callback</title>\n\
         <script>document.addEventListener('DOMContentLoaded', function () {{ document.forms[0].submit() }});</script>\n\
         </head>\n<body>\n<form method=\"post\" action=\"{}\">\n{inputs}\
         <noscript><button autofocus type=\"submit\">Continue</button></noscript>\n</form>\n</body>\n</html>",
        esc(action)
    )
}

/// The id_token a well-behaved OP issues for the authorize request whose parameters it
/// received (the claims Entra checks), changed by `tweak`; and the request's state.
pub(crate) fn id_token_for(
    params: &[(String, String)],
    tweak: &dyn Fn(&mut Value),
) -> (String, String) {
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut claims = json!({
        "iss": "https://op.example",
        "aud": get("client_id"),
        "sub": get("entra_sub"),
        "nonce": get("nonce"),
        "acr": "possessionorinherence",
        "amr": ["fido"],
        "iat": eam_tests::now(),
        "exp": eam_tests::now() + 600,
    });
    tweak(&mut claims);
    (FOREIGN.sign("op", &claims), get("state"))
}

/// An OP that ends every authorize POST at once with a form_post of its id_token to Entra.
/// The last page it sent is kept, to compare with what the client received.
struct FormPostOp {
    upstream: Upstream,
    last_page: Arc<Mutex<Vec<u8>>>,
}

impl FormPostOp {
    fn start(tweak: impl Fn(&mut Value) + Send + Sync + 'static) -> FormPostOp {
        FormPostOp::with_headers(tweak, &[])
    }

    fn with_headers(
        tweak: impl Fn(&mut Value) + Send + Sync + 'static,
        headers: &[(&str, &str)],
    ) -> FormPostOp {
        FormPostOp::serving(tweak, headers, false)
    }

    /// The page gzip-compressed, as an OP behind a compressing server sends it.
    fn gzipped(tweak: impl Fn(&mut Value) + Send + Sync + 'static) -> FormPostOp {
        FormPostOp::serving(tweak, &[("Content-Encoding", "gzip")], true)
    }

    fn serving(
        tweak: impl Fn(&mut Value) + Send + Sync + 'static,
        headers: &[(&str, &str)],
        gzip: bool,
    ) -> FormPostOp {
        let tweak: Tweak = Arc::new(tweak);
        let last_page = Arc::new(Mutex::new(Vec::new()));
        let page_store = last_page.clone();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let upstream = Upstream::with_responder(move |request| {
            if request.path() == DISCOVERY_PATH {
                // The guard checks iss against the OP's discovery issuer.
                let doc = json!({
                    "issuer": "https://op.example",
                    "authorization_endpoint": "https://op.example/authorize",
                });
                return Reply::ok(&doc.to_string()).header("Content-Type", "application/json");
            }
            if request.method != "POST" {
                return Reply::ok("not a form_post");
            }
            let (id_token, state) = id_token_for(&parse_form(&request.body), &*tweak);
            let page = form_post_page(
                GLOBAL_REDIRECT,
                &[("id_token", &id_token), ("state", &state)],
            );
            *page_store.lock().unwrap() = page.clone().into_bytes();
            let mut reply = html(&page);
            for (n, v) in &headers {
                reply = reply.header(n, v);
            }
            if gzip {
                reply.body = gzip_bytes(&reply.body);
            }
            reply
        });
        FormPostOp {
            upstream,
            last_page,
        }
    }

    fn page(&self) -> Vec<u8> {
        self.last_page.lock().unwrap().clone()
    }

    /// A proxy in `mode` in front of this OP, and Entra's POST sent through it as a browser
    /// sends it (a navigation that accepts compressed HTML): the request and the answer.
    fn login(&self, mode: GuardMode) -> (ProxyProcess, EntraRequest, Response) {
        let proxy = proxy(&self.upstream, mode);
        let sent = EntraRequest::new(&sign_hint(&microsoft_claims()));
        let request = sent
            .post()
            .header("Accept", "text/html,application/xhtml+xml")
            .header("Accept-Encoding", "gzip, br");
        let response = proxy.send(&request);
        (proxy, sent, response)
    }
}

fn gzip_bytes(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

fn proxy(op: &Upstream, mode: GuardMode) -> ProxyProcess {
    ProxyProcess::start(ProxyConfig::new(op).with(|c| {
        c.authorize.response_guard = mode;
        c.authorize.discovery_path = DISCOVERY_PATH.into();
    }))
}

/// `eam_response_guard_total{result,reason}` from the proxy's /metrics.
fn guard_count(proxy: &ProxyProcess, result: &str, reason: &str) -> Option<f64> {
    proxy.metric(&format!(
        "eam_response_guard_total{{reason=\"{reason}\",result=\"{result}\"}}"
    ))
}

fn assert_untouched(response: &Response, op: &FormPostOp) {
    response.assert_upstream_ok();
    assert_eq!(response.body, op.page(), "the page must pass byte for byte");
}

/// The guard's answer in `enforce`: Entra gets access_denied with its state, and no id_token.
fn assert_denied(response: &Response, sent: &EntraRequest, reason_text: &str) {
    assert_eq!(response.status, 200, "{}", response.describe());
    let form = parse_html_form(&response.text()).expect("a form_post page");
    assert_eq!(form.method.to_ascii_lowercase(), "post");
    assert_eq!(form.action, GLOBAL_REDIRECT);
    assert_eq!(form.field("error"), Some("access_denied"));
    assert_eq!(form.field("state"), sent.get("state"));
    assert_eq!(
        form.field("id_token"),
        None,
        "the bad id_token must not reach Entra"
    );
    let description = form.field("error_description").unwrap_or_default();
    assert!(description.contains(reason_text), "{description}");
    // Its length was unknown when the OP's header left: chunked, no stale Content-Length.
    assert_eq!(response.header("content-length"), None);
}

/// The (b)…(e) answers: each wrong in one claim Entra checks.
fn violations() -> Vec<(&'static str, &'static str, Tweak)> {
    vec![
        (
            "sub_mismatch",
            "sub",
            Arc::new(|c: &mut Value| c["sub"] = json!("someone-else")),
        ),
        (
            "amr_not_single",
            "amr",
            Arc::new(|c: &mut Value| c["amr"] = json!(["fido", "otp"])),
        ),
        (
            "acr_not_requested",
            "acr",
            Arc::new(|c: &mut Value| c["acr"] = json!("knowledge")),
        ),
        (
            "nonce_mismatch",
            "nonce",
            Arc::new(|c: &mut Value| c["nonce"] = json!("replayed")),
        ),
        (
            "iss_mismatch",
            "iss",
            Arc::new(|c: &mut Value| c["iss"] = json!("https://op.example/other")),
        ),
        (
            "time_invalid",
            "expired",
            Arc::new(|c: &mut Value| {
                c["iat"] = json!(eam_tests::now() - 7200);
                c["exp"] = json!(eam_tests::now() - 3600);
            }),
        ),
    ]
}

#[test]
fn a_correct_answer_passes_untouched_in_both_modes() {
    for mode in [GuardMode::Monitor, GuardMode::Enforce] {
        let op = FormPostOp::start(|_| {});
        let (proxy, sent, response) = op.login(mode);
        assert_untouched(&response, &op);
        assert_eq!(guard_count(&proxy, "ok", "full"), Some(1.0), "{mode:?}");
        let line = proxy.wait_for_log("response guard", 1, std::time::Duration::from_secs(5));
        let line: Value = serde_json::from_str(&line[0]).unwrap();
        assert_eq!(
            line["client_request_id"],
            sent.client_request_id(),
            "{line}"
        );
        assert_eq!(line["scope"], "full");
        assert_eq!(line["action"], "unchanged");
        // The browser's Accept-Encoding reaches the OP: pages keep their compression.
        assert_eq!(
            the_request(&op.upstream).header("accept-encoding"),
            Some("gzip, br")
        );
    }
}

#[test]
fn a_compressed_page_is_read_and_a_correct_one_passes_byte_for_byte() {
    let op = FormPostOp::gzipped(|_| {});
    let (proxy, _, response) = op.login(GuardMode::Enforce);
    assert_eq!(response.status, 200, "{}", response.describe());
    assert_eq!(response.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&response.body), op.page());
    assert_eq!(guard_count(&proxy, "ok", "full"), Some(1.0));
}

#[test]
fn a_wrong_compressed_page_is_replaced_in_the_same_coding() {
    let op = FormPostOp::gzipped(|c| c["sub"] = json!("someone-else"));
    let (proxy, sent, mut response) = op.login(GuardMode::Enforce);
    assert_eq!(response.header("content-encoding"), Some("gzip"));
    response.body = gunzip(&response.body);
    assert_denied(&response, &sent, "sub");
    assert_eq!(guard_count(&proxy, "violation", "sub_mismatch"), Some(1.0));
}

#[test]
fn monitor_lets_every_wrong_answer_through_and_counts_it() {
    for (reason, _, tweak) in violations() {
        let op = FormPostOp::start(move |c| tweak(c));
        let (proxy, sent, response) = op.login(GuardMode::Monitor);
        assert_untouched(&response, &op);
        assert_eq!(
            guard_count(&proxy, "violation", reason),
            Some(1.0),
            "{reason}"
        );
        assert_eq!(guard_count(&proxy, "ok", "full"), Some(0.0));
        let lines = proxy.wait_for_log(reason, 1, std::time::Duration::from_secs(5));
        let line: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["client_request_id"], sent.client_request_id());
        assert_eq!(line["reason"], reason);
        assert_eq!(line["action"], "unchanged");
        let log = proxy.log();
        let page = String::from_utf8(op.page()).unwrap();
        let id_token = parse_html_form(&page)
            .unwrap()
            .field("id_token")
            .unwrap()
            .to_string();
        assert!(
            !log.contains(&id_token),
            "the id_token must never be logged"
        );
        assert!(
            !log.contains(sent.get("state").unwrap()),
            "the state is logged hashed only"
        );
    }
}

#[test]
fn enforce_replaces_every_wrong_answer_with_access_denied() {
    for (reason, claim, tweak) in violations() {
        let op = FormPostOp::start(move |c| tweak(c));
        let (proxy, sent, response) = op.login(GuardMode::Enforce);
        assert_denied(&response, &sent, claim);
        assert_eq!(
            guard_count(&proxy, "violation", reason),
            Some(1.0),
            "{reason}"
        );
        let lines = proxy.wait_for_log(reason, 1, std::time::Duration::from_secs(5));
        assert!(lines[0].contains("\"action\":\"replaced\""), "{}", lines[0]);
    }
}

#[test]
fn enforce_lets_the_replacement_script_run_under_the_ops_csp() {
    let op = FormPostOp::with_headers(
        |c| c["sub"] = json!("someone-else"),
        &[(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'nonce-abc'",
        )],
    );
    let (_proxy, sent, response) = op.login(GuardMode::Enforce);
    assert_denied(&response, &sent, "sub");
    let csp = response
        .header("content-security-policy")
        .unwrap_or_default();
    assert!(
        csp.starts_with("default-src 'self'; script-src 'nonce-abc' 'sha256-"),
        "{csp}"
    );
}

#[test]
fn an_unknown_state_gets_the_stateless_checks_only() {
    // As if another replica had accepted the request: the page answers a request this proxy
    // never saw, so sub, nonce and the requested acr cannot be judged.
    let page = |claims: Value| {
        let id_token = FOREIGN.sign("op", &claims);
        form_post_page(
            GLOBAL_REDIRECT,
            &[("id_token", &id_token), ("state", "from-another-replica")],
        )
    };
    let base = json!({"aud": CLIENT_ID, "sub": "not-the-hint-sub", "nonce": "n",
        "iss": "https://op.example", "iat": eam_tests::now(), "exp": eam_tests::now() + 600,
        "acr": "knowledge", "amr": ["otp"]});
    let mut wrong_aud = base.clone();
    wrong_aud["aud"] = json!("not-a-configured-client");
    let pages = [page(base), page(wrong_aud)];
    let served = pages.clone();
    let upstream = Upstream::with_responder(move |r| {
        let index = usize::from(r.target.ends_with("/2"));
        Reply::typed("text/html", &served[index])
    });
    let proxy = proxy(&upstream, GuardMode::Enforce);
    let resume = |n: u8| {
        proxy.send(&Request::get(&format!("/auth/resume/{n}")).header("Sec-Fetch-Dest", "document"))
    };

    let response = resume(1);
    assert_eq!(
        response.text(),
        pages[0],
        "stateless checks pass: unchanged"
    );
    assert_eq!(guard_count(&proxy, "ok", "stateless"), Some(1.0));

    let response = resume(2);
    let form = parse_html_form(&response.text()).unwrap();
    assert_eq!(form.field("error"), Some("access_denied"));
    assert_eq!(form.field("state"), Some("from-another-replica"));
    assert_eq!(guard_count(&proxy, "violation", "aud_mismatch"), Some(1.0));
}

#[test]
fn other_answers_pass_untouched() {
    let big_page = format!(
        "{}<!-- {} -->",
        form_post_page(GLOBAL_REDIRECT, &[("id_token", "a.b.c"), ("state", "s")]),
        "x".repeat(2000)
    );
    let replies: Vec<(&str, Reply)> = vec![
        // A 302 (a query/fragment response, or the login page's redirect).
        (
            "/redirect",
            Reply::ok("")
                .status(302)
                .header("Location", GLOBAL_REDIRECT),
        ),
        // A form_post to another client.
        (
            "/other-client",
            html(&form_post_page(
                "https://rp.example/cb",
                &[("id_token", "a.b.c")],
            )),
        ),
        // Larger than response_guard_max_body_bytes: not read, counted.
        ("/big", html(&big_page)),
        // Not valid in its coding, or in a coding the guard does not read: counted.
        (
            "/gzip",
            html("\u{1f}\u{8b}not really gzip").header("Content-Encoding", "gzip"),
        ),
        (
            "/compress",
            html("LZW bytes").header("Content-Encoding", "compress"),
        ),
        // Entra's error answer: nothing to check.
        (
            "/error",
            html(&form_post_page(
                GLOBAL_REDIRECT,
                &[("error", "access_denied"), ("state", "s")],
            )),
        ),
    ];
    let served = replies.clone();
    let upstream = Upstream::with_responder(move |r| {
        served
            .iter()
            .find(|(p, _)| *p == r.target)
            .map(|(_, reply)| reply.clone())
            .unwrap()
    });
    let proxy = ProxyProcess::start(ProxyConfig::new(&upstream).with(|c| {
        c.authorize.response_guard = GuardMode::Enforce;
        c.authorize.response_guard_max_body_bytes = 1024;
    }));
    for (path, reply) in &replies {
        let response = proxy.send(&Request::get(path).header("Sec-Fetch-Dest", "document"));
        assert_eq!(response.status, reply.status, "{path}");
        assert_eq!(response.body, reply.body, "{path} must pass unchanged");
    }
    assert_eq!(guard_count(&proxy, "skipped", "too_large"), Some(1.0));
    assert_eq!(guard_count(&proxy, "skipped", "undecodable"), Some(1.0));
    assert_eq!(
        guard_count(&proxy, "skipped", "unknown_encoding"),
        Some(1.0)
    );
    assert!(
        proxy.log_lines("response guard").is_empty(),
        "nothing was judged"
    );
}

#[test]
fn off_inspects_nothing_and_keeps_accept_encoding() {
    let op = FormPostOp::start(|c| c["sub"] = json!("someone-else"));
    let (proxy, _, response) = op.login(GuardMode::Off);
    assert_untouched(&response, &op);
    assert_eq!(guard_count(&proxy, "violation", "sub_mismatch"), Some(0.0));
    assert_eq!(
        the_request(&op.upstream).header("accept-encoding"),
        Some("gzip, br")
    );
}

#[test]
fn assets_keep_their_compression() {
    let upstream = Upstream::start();
    let proxy = proxy(&upstream, GuardMode::Monitor);
    proxy.send(
        &Request::get("/static/app.js")
            .header("Sec-Fetch-Dest", "script")
            .header("Accept-Encoding", "gzip"),
    );
    assert_eq!(
        the_request(&upstream).header("accept-encoding"),
        Some("gzip")
    );
}

/// The one request the test sent, besides the proxy's own discovery reads.
fn the_request(upstream: &Upstream) -> eam_tests::Recorded {
    let mut sent: Vec<_> = upstream
        .requests()
        .into_iter()
        .filter(|r| r.path() != DISCOVERY_PATH)
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    sent.remove(0)
}

fn html(body: &str) -> Reply {
    Reply::typed("text/html; charset=utf-8", body).header("X-Upstream", "yes")
}

#[test]
fn enforce_reads_a_page_that_arrives_in_chunks() {
    // No Content-Length: the page is held chunk by chunk until its end, then judged.
    let stateless = |aud: &str| {
        let claims = json!({"aud": aud, "sub": "s", "acr": "possessionorinherence", "amr": ["fido"],
                "iss": "https://op.example", "iat": eam_tests::now(), "exp": eam_tests::now() + 600});
        let id_token = FOREIGN.sign("op", &claims);
        form_post_page(
            GLOBAL_REDIRECT,
            &[("id_token", &id_token), ("state", "elsewhere")],
        )
    };
    let good = stateless(CLIENT_ID);
    let bad = stateless("not-a-configured-client");
    // Over the 1536-byte limit only once it has arrived: the held bytes are released unread.
    let big = format!("{good}<!-- {} -->", "x".repeat(3000));
    let pages = [good.clone(), bad, big.clone()];
    let served = pages.clone();
    let upstream = Upstream::with_responder(move |r| {
        let index: usize = r.target.trim_start_matches("/resume/").parse().unwrap();
        html(&served[index]).chunked(100)
    });
    let proxy = ProxyProcess::start(ProxyConfig::new(&upstream).with(|c| {
        c.authorize.response_guard = GuardMode::Enforce;
        c.authorize.response_guard_max_body_bytes = 1536;
    }));
    let resume =
        |n: usize| proxy.send(&Request::get(&format!("/resume/{n}")).header("Accept", "text/html"));

    assert_eq!(resume(0).text(), good);
    assert_eq!(guard_count(&proxy, "ok", "stateless"), Some(1.0));

    let form = parse_html_form(&resume(1).text()).unwrap();
    assert_eq!(form.field("error"), Some("access_denied"));
    assert_eq!(form.field("state"), Some("elsewhere"));

    assert_eq!(resume(2).text(), big, "a page over the limit passes whole");
    assert_eq!(guard_count(&proxy, "skipped", "too_large"), Some(1.0));
}

#[test]
fn monitor_keeps_the_ops_framing_and_counts_an_amr_string() {
    let op = FormPostOp::start(|c| c["amr"] = json!("fido"));
    let (proxy, _, response) = op.login(GuardMode::Monitor);
    assert_untouched(&response, &op);
    assert_eq!(
        response.header("content-length"),
        Some(op.page().len().to_string().as_str()),
        "monitor keeps the OP's framing"
    );
    assert_eq!(
        guard_count(&proxy, "violation", "amr_not_single"),
        Some(1.0)
    );
}
