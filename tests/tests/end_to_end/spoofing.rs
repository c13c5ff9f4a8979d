//! README "How a request is handled", steps 2 and 4: `entra_*` parameters are removed from every authorize request, so that the
//! upstream can trust the ones it receives; non-Entra requests are otherwise left byte for byte.

use std::time::Duration;

use eam_tests::{
    assert_sent_and_forwarded, microsoft_claims, sign_hint, upstream_and_proxy, EntraRequest,
    ProxyConfig, ProxyProcess, Recorded, Reply, Request, Upstream, Verdict,
};

/// A code-flow request from another client, with spoofed identity parameters, one of them
/// disguised by percent-encoding its name (`%65` is `e`).
const SPOOFED: &str = "response_type=code&client_id=other-client&entra_sub=evil\
    &redirect_uri=https%3A%2F%2Fapp.example%2Fcb&%65ntra_oid=x&scope=openid+profile&state=a%2Bb%7e";
/// The same request with exactly the spoofed pairs removed: every other byte kept.
const STRIPPED: &str = "response_type=code&client_id=other-client\
    &redirect_uri=https%3A%2F%2Fapp.example%2Fcb&scope=openid+profile&state=a%2Bb%7e";

#[test]
fn non_entra_post_loses_only_the_spoofed_parameters() {
    let (upstream, proxy) = upstream_and_proxy();

    let request = proxy.forward(&upstream, &Request::post("/authorize").form(SPOOFED));

    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/authorize");
    assert_eq!(request.body_text(), STRIPPED);
    assert_eq!(
        request.header("content-length"),
        Some(STRIPPED.len().to_string().as_str()),
        "{:?}",
        request.headers
    );
    assert_eq!(request.header("transfer-encoding"), None);
}

#[test]
fn non_entra_get_loses_only_the_spoofed_parameters() {
    let (upstream, proxy) = upstream_and_proxy();

    let request = proxy.forward(&upstream, &Request::get(&format!("/authorize?{SPOOFED}")));

    assert_eq!(request.method, "GET");
    assert_eq!(request.target, format!("/authorize?{STRIPPED}"));
}

#[test]
fn non_entra_request_without_spoofing_is_forwarded_byte_for_byte() {
    let (upstream, proxy) = upstream_and_proxy();
    // Encodings a re-encoder would normalise: %20 vs +, lowercase escapes, an unescaped URL,
    // an empty value, a valueless name.
    let params = "client_id=other-client&scope=openid%20profile&state=%7e%41&\
                  redirect_uri=https://app.example/cb&login_hint=&flag";

    proxy.send(&Request::post("/authorize").form(params));
    proxy.send(&Request::get(&format!("/authorize?{params}")));

    let requests = upstream.wait_for(2, Duration::from_secs(5));
    assert_eq!(requests[0].body_text(), params);
    assert_eq!(requests[1].target, format!("/authorize?{params}"));
}

#[test]
fn entra_request_cannot_smuggle_an_identity() {
    let (upstream, proxy) = upstream_and_proxy();
    let claims = microsoft_claims();
    let sent = EntraRequest::new(&sign_hint(&claims));
    let body = format!(
        "entra_sub=evil&{}&%65ntra_oid=x&entra_id_token_hint=forged",
        sent.encoded()
    );
    let request = Request::post("/authorize").form(&body);

    // Each entra_* must appear once, with the hint's value: the spoofed ones are gone.
    assert_sent_and_forwarded(&proxy, &upstream, &request, &sent, &claims);
}

/// Upstreams route these like `/authorize` (Tomcat drops `;jsessionid`, most decode `%61`,
/// some fold case or ignore `//` and a trailing `/`): each is an authorize request, so spoofed
/// parameters never ride a path variant past the proxy.
#[test]
fn authorize_path_variants_are_stripped_like_the_path_itself() {
    let (upstream, proxy) = upstream_and_proxy();
    let variants = [
        "/authorize/",
        "//authorize",
        "/authorize;jsessionid=0123",
        "/%61uthorize",
        "/Authorize",
        "/x/../authorize",
    ];
    for path in variants {
        let request = proxy.forward(&upstream, &Request::get(&format!("{path}?{SPOOFED}")));
        assert_eq!(
            request.target,
            format!("{path}?{STRIPPED}"),
            "{path}: the path is kept as sent, only the spoofed pairs go"
        );
    }
}

#[test]
fn other_methods_on_an_authorize_path_are_refused_with_405() {
    let (upstream, proxy) = upstream_and_proxy();
    for method in ["HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let response = proxy.send(&Request::new(method, &format!("/authorize?{SPOOFED}")));
        assert_eq!(response.status, 405, "{method}: {}", response.describe());
        assert_eq!(response.header("allow"), Some("GET, POST"), "{method}");
        if method != "HEAD" {
            assert_eq!(response.json()["error"], "invalid_request", "{method}");
        }
    }
    // Elsewhere every method passes through.
    let request = proxy.forward(&upstream, &Request::new("PUT", "/token"));
    assert_eq!(request.method, "PUT");
}

#[test]
fn a_get_authorize_request_with_a_body_is_refused() {
    let (upstream, proxy) = upstream_and_proxy();
    let response = proxy.send(&Request::get("/authorize?client_id=other-client").form(SPOOFED));
    assert_eq!(response.status, 400, "{}", response.describe());
    assert_eq!(response.json()["error"], "invalid_request");
    assert!(upstream.requests().is_empty(), "nothing forwarded");
}

/// An OP whose discovery names `/auth` (oidc-provider's path) and a PAR endpoint, while the
/// proxy is configured for `/authorize` only; every other path answers as usual.
fn op_with_discovery(serves_discovery: bool) -> Upstream {
    Upstream::with_responder(move |request| {
        if request.path() == "/.well-known/openid-configuration" && serves_discovery {
            let doc = serde_json::json!({
                "issuer": "https://op.example",
                "authorization_endpoint": "https://op.example/auth",
                "pushed_authorization_request_endpoint": "https://op.example/request",
                "jwks_uri": "https://op.example/jwks",
            });
            return Reply::typed("application/json", &doc.to_string());
        }
        Reply::ok("ok")
    })
}

/// The proxy configured for `/authorize`, reading the discovery of `op_with_discovery`; ready
/// once its first read ended, `/readyz` then saying `readyz_says`.
fn reading_discovery(serves_discovery: bool, readyz_says: &str) -> (Upstream, ProxyProcess) {
    let upstream = op_with_discovery(serves_discovery);
    let proxy = ProxyProcess::start(
        ProxyConfig::new(&upstream)
            .with(|c| c.authorize.discovery_path = "/.well-known/openid-configuration".into()),
    );
    let ready = proxy.wait_readyz(200, Duration::from_secs(10));
    assert!(ready.text().contains(readyz_says), "{}", ready.text());
    (upstream, proxy)
}

/// What the upstream received from the test's clients: not the proxy's discovery reads, which
/// come at their own times.
fn sent_by_clients(upstream: &Upstream) -> Vec<Recorded> {
    let mut requests = upstream.requests();
    requests.retain(|r| r.path() != "/.well-known/openid-configuration");
    requests
}

#[test]
fn the_ops_discovered_authorize_and_par_paths_are_filtered_too() {
    let (upstream, proxy) = reading_discovery(
        true,
        "NOT in authorize.paths, filtered while discovery is read: /auth, /request",
    );
    assert_eq!(proxy.metric("eam_discovery_up"), Some(1.0));
    assert_eq!(proxy.metric("eam_authorize_paths_unlisted"), Some(2.0));
    assert!(!proxy
        .wait_for_log("authorize.paths does not list", 1, Duration::from_secs(5))
        .is_empty());

    // The proxy's own discovery reads reach the same upstream, at their own times: only the
    // answers tell which requests went through.
    let forwarded = |request: &Request, what: &str| {
        let response = proxy.send(request);
        assert_eq!(
            response.verdict(),
            Verdict::Forwarded,
            "{what}: {}",
            response.describe()
        );
    };
    for path in ["/auth", "/request"] {
        forwarded(&Request::post(path).form(SPOOFED), path);
        forwarded(&Request::get(&format!("{path}?{SPOOFED}")), path);
    }
    let received = sent_by_clients(&upstream);
    assert_eq!(received.len(), 4);
    for request in &received {
        let seen = format!("{} {}", request.target, request.body_text());
        assert!(
            !seen.contains("ntra_"),
            "spoofed entra_* reached the OP: {seen}"
        );
    }
    // The configured path stays filtered.
    forwarded(
        &Request::get(&format!("/authorize?{SPOOFED}")),
        "/authorize",
    );
    let last = sent_by_clients(&upstream).pop().unwrap();
    assert!(!last.target.contains("ntra_"), "{}", last.target);
}

#[test]
fn without_discovery_the_configured_paths_are_filtered_and_readyz_says_so() {
    let (upstream, proxy) = reading_discovery(
        false,
        "unavailable (not a JSON object); filtering the configured paths only",
    );
    assert_eq!(proxy.metric("eam_discovery_up"), Some(0.0));
    proxy.send(&Request::get(&format!("/authorize?{SPOOFED}")));
    let last = sent_by_clients(&upstream).pop().unwrap();
    assert_eq!(last.target, format!("/authorize?{STRIPPED}"));
}
